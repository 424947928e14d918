/*
 * estuary - the Generic Cell Rate Algorithm (a token bucket kept as one timestamp), shared by
 * the local store (ratelimit.c) and the Redis store (redis.c's script computes the same).
 *
 * A policy of `rate` requests per `per` with `burst` extra: emission interval T = per / rate,
 * tolerance tau = burst * T. A key's state is its theoretical arrival time (TAT). A request at
 * `now` is allowed when TAT - tau <= now (TAT taken as max(TAT, now)); it then moves TAT by T.
 * A fresh key admits burst + 1 requests at once, then one every T (SPEC).
 */
#ifndef EST_POLICY_GCRA_H
#define EST_POLICY_GCRA_H

#include <stdint.h>

typedef struct est_gcra_params {
    uint64_t interval_us; /* T = per / rate, at least 1 */
    uint64_t burst;       /* extra requests: the bucket holds burst + 1 */
} est_gcra_params_t;

typedef struct est_gcra_result {
    int allowed;
    uint64_t remaining;      /* requests that would still be allowed right now, after this one */
    uint64_t retry_after_us; /* refused: time until one request is allowed; 0 when allowed */
    uint64_t reset_us;       /* time until the bucket is full again (RateLimit t=) */
} est_gcra_result_t;

/* params from a policy's rate, per (ms) and burst */
est_gcra_params_t est_gcra_params(uint64_t rate, uint64_t per_ms, uint64_t burst);

/* Decides one request at `now_us` on the key whose TAT is *tat (0: a fresh key); *tat is
 * updated when the request is allowed. Pure. */
void est_gcra_decide(const est_gcra_params_t *p, uint64_t now_us, uint64_t *tat, est_gcra_result_t *res);

#endif
