/*
 * estuary - a timer wheel: many entries with variable absolute expiries on one fixed-tick
 * h2o_timeout_t (h2o 2.2.5 timeouts have one fixed duration each).
 *
 * A hashed wheel: an entry sits in the slot of its expiry tick (ceil(at / TICK) modulo
 * EST_WHEEL_SLOTS), and each tick looks only at the slots of the ticks that passed, firing the
 * entries that are due and leaving those of later revolutions. An entry is looked at about
 * once per revolution (EST_WHEEL_SLOTS x TICK = 2.56 s) instead of at every tick: with 5,000
 * requests waiting (S4) a tick used to walk all 5,000 deadlines, 200 times a second. The tick
 * timer is linked only while the wheel holds entries; entries fire up to one tick late.
 */
#ifndef EST_COMMON_WHEEL_H
#define EST_COMMON_WHEEL_H

#include <stddef.h>
#include <stdint.h>
#include <h2o.h>

#define EST_WHEEL_TICK_MS 5
#define EST_WHEEL_SLOTS 512 /* a power of 2 */

typedef struct est_wheel est_wheel_t;
typedef struct est_wheel_entry est_wheel_entry_t;
typedef void (*est_wheel_cb)(est_wheel_entry_t *e);

/* zero-initialised, then `cb` set; the callback may link, unlink or free any entry */
struct est_wheel_entry {
    uint64_t at; /* absolute h2o_now() ms */
    est_wheel_cb cb;
    h2o_linklist_t _link;
    est_wheel_t *_wheel; /* while linked in a slot */
};

struct est_wheel {
    h2o_loop_t *loop; /* NULL: no tick timer (est_wheel_run is called by hand, as in the tests) */
    h2o_timeout_t _tick_timeout;
    h2o_timeout_entry_t _tick_entry;
    h2o_linklist_t _slots[EST_WHEEL_SLOTS];
    uint64_t _tick; /* the last tick whose slot was looked at */
    size_t count;   /* linked entries */
};

void est_wheel_init(est_wheel_t *w, h2o_loop_t *loop);
/* No entry may be linked any more (they are not called). */
void est_wheel_dispose(est_wheel_t *w);
/* (Re)links `e` to fire at `at` (absolute ms); `now` is the loop's h2o_now(). */
void est_wheel_link(est_wheel_t *w, est_wheel_entry_t *e, uint64_t at, uint64_t now);
/* Unlinks `e` if linked. */
void est_wheel_unlink(est_wheel_entry_t *e);
/* Fires the entries due at `now` (the tick timer calls it with h2o_now()). */
void est_wheel_run(est_wheel_t *w, uint64_t now);

#endif
