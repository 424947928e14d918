/*
 * estuary - timer wheel (see wheel.h).
 */
#include <string.h>
#include "common/wheel.h"

static void on_tick(h2o_timeout_entry_t *entry);

void est_wheel_init(est_wheel_t *w, h2o_loop_t *loop)
{
    memset(w, 0, sizeof(*w));
    w->loop = loop;
    if (loop != NULL)
        h2o_timeout_init(loop, &w->_tick_timeout, EST_WHEEL_TICK_MS);
    w->_tick_entry.cb = on_tick;
    for (size_t i = 0; i != EST_WHEEL_SLOTS; ++i)
        h2o_linklist_init_anchor(&w->_slots[i]);
}

void est_wheel_dispose(est_wheel_t *w)
{
    if (w->loop == NULL)
        return;
    if (h2o_timeout_is_linked(&w->_tick_entry))
        h2o_timeout_unlink(&w->_tick_entry);
    h2o_timeout_dispose(w->loop, &w->_tick_timeout);
}

static void arm_tick(est_wheel_t *w)
{
    if (w->loop != NULL && w->count != 0 && !h2o_timeout_is_linked(&w->_tick_entry))
        h2o_timeout_link(w->loop, &w->_tick_timeout, &w->_tick_entry);
}

void est_wheel_link(est_wheel_t *w, est_wheel_entry_t *e, uint64_t at, uint64_t now)
{
    est_wheel_unlink(e);
    if (w->count == 0) /* idle wheel: ticks up to now count as looked at */
        w->_tick = now / EST_WHEEL_TICK_MS;
    uint64_t tick = at / EST_WHEEL_TICK_MS + (at % EST_WHEEL_TICK_MS != 0); /* due when that tick is looked at */
    if (tick <= w->_tick)
        tick = w->_tick + 1; /* due already: at the next tick */
    e->at = at;
    e->_wheel = w;
    h2o_linklist_insert(&w->_slots[tick & (EST_WHEEL_SLOTS - 1)], &e->_link);
    ++w->count;
    arm_tick(w);
}

void est_wheel_unlink(est_wheel_entry_t *e)
{
    if (h2o_linklist_is_linked(&e->_link))
        h2o_linklist_unlink(&e->_link);
    if (e->_wheel != NULL) {
        --e->_wheel->count;
        e->_wheel = NULL;
    }
}

void est_wheel_run(est_wheel_t *w, uint64_t now)
{
    uint64_t now_tick = now / EST_WHEEL_TICK_MS;
    h2o_linklist_t expired;
    h2o_linklist_init_anchor(&expired);
    if (now_tick > w->_tick) {
        /* the slots of the ticks that passed (each slot once when a revolution or more passed) */
        uint64_t from = now_tick - w->_tick >= EST_WHEEL_SLOTS ? now_tick - EST_WHEEL_SLOTS + 1 : w->_tick + 1;
        for (uint64_t t = from; t <= now_tick; ++t) {
            h2o_linklist_t *slot = &w->_slots[t & (EST_WHEEL_SLOTS - 1)];
            for (h2o_linklist_t *l = slot->next; l != slot;) {
                est_wheel_entry_t *e = H2O_STRUCT_FROM_MEMBER(est_wheel_entry_t, _link, l);
                l = l->next;
                if (e->at <= now) { /* else: a later revolution's */
                    est_wheel_unlink(e);
                    h2o_linklist_insert(&expired, &e->_link);
                }
            }
        }
        w->_tick = now_tick;
    }
    /* callbacks may unlink (or free) other expired entries: always pop the first */
    while (!h2o_linklist_is_empty(&expired)) {
        est_wheel_entry_t *e = H2O_STRUCT_FROM_MEMBER(est_wheel_entry_t, _link, expired.next);
        h2o_linklist_unlink(&e->_link);
        e->cb(e);
    }
    arm_tick(w);
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    est_wheel_t *w = H2O_STRUCT_FROM_MEMBER(est_wheel_t, _tick_entry, entry);
    est_wheel_run(w, h2o_now(w->loop));
}
