/*
 * estuary - request coalescing: identical requests (same cache key) that arrive while one of
 * them is on its way to the backend wait for it and share its reply, errors included.
 *
 * One table per worker thread, used only from that thread's loop: no locks. Independent of
 * h2o's request model: a waiter is a record the caller embeds (in its request state) with a
 * callback; the shared reply is a frozen est_cache_entry_t (store.h), reference-counted, so a
 * waiter sends the leader's body without copying it (an error reply estuary builds itself is an
 * entry too, created with an empty key and never inserted).
 *
 *     est_coalesce_flight_t *flight;
 *     switch (est_coalesce_join(c, key, klen, &req->waiter, &flight)) {
 *     case EST_COALESCE_LEADER: ... go to the backend; when the reply is complete (or failed):
 *                               est_coalesce_done(flight, entry, NULL);   // or (NULL, errstr)
 *     case EST_COALESCE_WAITER: ... wait for req->waiter.cb; if the client leaves first:
 *                               est_coalesce_leave(&req->waiter);
 *     case EST_COALESCE_ALONE:  ... go to the backend without coalescing
 *     }
 *
 * The contract a handler follows:
 * - The leader role belongs to whoever owns the backend exchange, not to the leader's client.
 *   Every flight ends in exactly one est_coalesce_done or est_coalesce_abandon, or its waiters
 *   wait until their own timeouts.
 * - The leader's client leaving does not fail the waiters: either the handler keeps the
 *   exchange running, owned by an object outside the client's request pool that calls done
 *   (preferred: the reply may be stored too), or it cancels the exchange and calls
 *   est_coalesce_abandon, which hands the flight to the oldest waiter (called back with
 *   est_coalesce_err_promoted and w->promoted set: it goes to the backend and later calls done
 *   or abandon itself).
 * - A waiter whose client leaves calls est_coalesce_leave; nothing else changes.
 * - When the leader's reply cannot be shared (a body over max_entry, streamed through), done
 *   is called with (NULL, est_coalesce_err_unshareable): each waiter then goes to the backend
 *   itself.
 * - Callbacks run from done / abandon / destroy; a callback may join, leave (any waiter) or
 *   finish its request, and must not free another waiter still linked.
 */
#ifndef EST_CACHE_COALESCE_H
#define EST_CACHE_COALESCE_H

#include <stddef.h>

#include "cache/store.h"

/* errstr values (compare the pointers) */
extern const char est_coalesce_err_unshareable[]; /* go to the backend yourself */
extern const char est_coalesce_err_promoted[];    /* you lead the flight w->promoted now */
extern const char est_coalesce_err_shutdown[];    /* the table is going away */

/* the default bound on waiters per key (beyond it, requests go to the backend themselves) */
#define EST_COALESCE_MAX_WAITERS 10000

typedef struct est_coalesce_t est_coalesce_t;
typedef struct est_coalesce_flight_t est_coalesce_flight_t;
typedef struct est_coalesce_waiter_t est_coalesce_waiter_t;

/*
 * Called once per waiter (never synchronously from join). With a reply: `reply` is a new
 * reference the waiter owns (est_cache_entry_release it when sent), errstr NULL. Else reply
 * NULL and errstr one of the constants above, or the leader's own errstr.
 */
typedef void (*est_coalesce_cb)(est_coalesce_waiter_t *w, est_cache_entry_t *reply, const char *errstr);

struct est_coalesce_waiter_t {
    est_coalesce_cb cb;
    void *data;
    est_coalesce_flight_t *promoted; /* set with est_coalesce_err_promoted */
    est_coalesce_flight_t *_flight;  /* NULL once called back or left */
    est_coalesce_waiter_t *_prev, *_next;
};

typedef enum {
    EST_COALESCE_LEADER,
    EST_COALESCE_WAITER,
    EST_COALESCE_ALONE, /* over the waiter bound, key over EST_CACHE_MAX_KEY, or out of memory */
} est_coalesce_role_t;

/* max_waiters: per key, 0 for EST_COALESCE_MAX_WAITERS. NULL when out of memory. */
est_coalesce_t *est_coalesce_create(size_t max_waiters);
/* calls every waiter back with est_coalesce_err_shutdown and frees every flight (no leader may use one after) */
void est_coalesce_destroy(est_coalesce_t *c);

/*
 * LEADER: no flight for `key` was open; *flight is the new one (w unused). WAITER: `w` (cb and
 * data set by the caller) waits on the open flight. ALONE: neither.
 */
est_coalesce_role_t est_coalesce_join(est_coalesce_t *c, const char *key, size_t key_len, est_coalesce_waiter_t *w,
                                      est_coalesce_flight_t **flight);
/* a waiter leaves (its client went away); a no-op once it was called back */
void est_coalesce_leave(est_coalesce_waiter_t *w);
/*
 * The leader's reply: `reply` (BORROWED; frozen here, each waiter gets its own reference) or
 * NULL with an errstr. The flight leaves the table first, so requests arriving during the
 * callbacks start a new one; then the waiters are called in arrival order and the flight freed.
 */
void est_coalesce_done(est_coalesce_flight_t *f, est_cache_entry_t *reply, const char *errstr);
/* the leader gives up without a reply: the oldest waiter leads now (see the contract above), or the flight ends */
void est_coalesce_abandon(est_coalesce_flight_t *f);
/* waiters on the flight (for tests and metrics) */
size_t est_coalesce_waiters(const est_coalesce_flight_t *f);
/* open flights */
size_t est_coalesce_size(const est_coalesce_t *c);

#endif
