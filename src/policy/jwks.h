/*
 * estuary - the JWKS cache for jwt policies with "jwks_url" (SPEC "Access control and traffic
 * policy"), run like the DNS cache: one per process, refreshed ahead of `jwks_refresh`, an
 * unknown kid triggers at most one refetch per 10 s (counted from the last fetch of any kind,
 * concurrent requests share it), and the last good key set keeps serving while the identity
 * provider is down or answers with something that is not a usable JWKS.
 *
 * The fetcher (jwks.c) runs on a thread of its own with its own h2o loop, resolver and
 * upstream set, and fetches through estuary's upstream client. Key sets are immutable once
 * built and refcounted; a worker reads the current one with one atomic load on the request
 * path (est_jwks_sub_current) and is told of a finished fetch through its own queue.
 */
#ifndef EST_POLICY_JWKS_H
#define EST_POLICY_JWKS_H

#include <stdint.h>
#include <h2o.h>

#include "config/config.h"
#include "policy/jwk.h"

typedef struct est_jwks_sub est_jwks_sub_t;   /* a worker's handle on one jwks_url source */
typedef struct est_jwks_wait est_jwks_wait_t; /* a request waiting for a refetch */

/* A worker's handle on the key set of `jc` (jc->jwks_url != NULL), fed through `queue` (the
 * worker's). The first call for a URL starts fetching it; a reload whose policy has the same
 * URL (and jwks_upstream settings) keeps the source and its last good set. Worker thread. */
est_jwks_sub_t *est_jwks_subscribe(h2o_loop_t *loop, h2o_multithread_queue_t *queue, const est_jwt_conf_t *jc);
void est_jwks_sub_destroy(est_jwks_sub_t *s);

/* The current key set (borrowed: valid until the next call on this sub from the loop, or
 * its destruction), NULL until a first fetch succeeded. *version changes whenever the set
 * does (the caller clears its verified-token cache then). */
const est_jwks_t *est_jwks_sub_current(est_jwks_sub_t *s, uint64_t *version);

/* A request met an unknown kid: asks for a refetch and calls cb(data) on this worker's loop
 * once it ended (success or not; call est_jwks_sub_current again). Returns NULL when no
 * refetch may start now (one started or ended within the last 10 s): answer unknown_kid at
 * once. Concurrent callers (any worker) share one fetch, and a request may always join a
 * fetch that runs, the first one included (no key set yet). cb is also called when the fetch
 * takes longer than the JWKS upstream's response_timeout + 1 s. NULL too when this sub
 * already has EST_JWKS_MAX_WAITERS (policy/jwks_rules.h) waiting. When a set newer than the
 * one the last est_jwks_sub_current returned was published meanwhile, no fetch starts and cb
 * is called at once (from the loop): look again. cb is never called from
 * inside est_jwks_sub_refetch; once it ran, `w` is gone (do not cancel it). cb must not
 * destroy the sub. */
est_jwks_wait_t *est_jwks_sub_refetch(est_jwks_sub_t *s, void (*cb)(void *data), void *data);
/* the request went away: cb will not be called */
void est_jwks_wait_cancel(est_jwks_wait_t *w);

/* The DNS settings of the fetcher's resolver (conf->dns; copied), used when the fetcher thread
 * starts, i.e. at the first est_jwks_subscribe: call it from the main thread before the
 * workers start. Without it the resolver uses SPEC's DNS defaults and the system's servers. */
void est_jwks_set_dns(const est_dns_conf_t *conf);

/* stops the fetcher thread (main thread, at exit, after the workers); a later subscribe
 * starts it again */
void est_jwks_shutdown(void);

#endif
