/*
 * estuary - the timing rules of the JWKS cache (policy/jwks.c), as pure functions of the
 * clock and the source's state, so they are tested without threads or sockets (as the DNS
 * cache's rules in upstream/dns_cache.h). Times are milliseconds on one monotonic clock.
 * docs/jwks.md explains the numbers.
 */
#ifndef EST_POLICY_JWKS_RULES_H
#define EST_POLICY_JWKS_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

/* an unknown kid starts at most one fetch per this gap, counted from the start and the end of
 * the last fetch of any kind (SPEC "Access control and traffic policy") */
#define EST_JWKS_REFETCH_GAP_MS 10000
/* the first retry after a failed fetch; it doubles per failure up to min(refresh, the max) */
#define EST_JWKS_BACKOFF_MIN_MS 1000
#define EST_JWKS_BACKOFF_MAX_MS 60000
/* a scheduled refresh never comes sooner than this after a fetch, whatever jwks_refresh says */
#define EST_JWKS_REFRESH_FLOOR_MS 1000
/* requests one subscriber (a worker's view of one source) lets wait for a refetch; beyond,
 * a request is answered at once */
#define EST_JWKS_MAX_WAITERS 10000

/* Delay from the end of a successful fetch to the next scheduled one: ahead of `refresh_ms`,
 * between 85% and 90% of it (the jitter, from `rnd`, keeps replicas started together from
 * fetching in step), never below EST_JWKS_REFRESH_FLOOR_MS. */
uint64_t est_jwks_refresh_delay(uint64_t refresh_ms, uint32_t rnd);

/* Delay from the end of the `failures`-th failed fetch in a row (>= 1) to the retry:
 * EST_JWKS_BACKOFF_MIN_MS doubled per failure, capped at min(refresh_ms, EST_JWKS_BACKOFF_MAX_MS)
 * (at least EST_JWKS_BACKOFF_MIN_MS), minus up to 10% of jitter from `rnd`. */
uint64_t est_jwks_retry_delay(uint64_t refresh_ms, unsigned failures, uint32_t rnd);

typedef enum {
    EST_JWKS_REFETCH_JOIN = 0, /* a fetch runs or is about to: wait for its end */
    EST_JWKS_REFETCH_START,    /* start a fetch and wait for its end */
    EST_JWKS_REFETCH_REFUSE,   /* a fetch started or ended within the gap: answer at once */
} est_jwks_refetch_t;

/* What an unknown kid may do at `now`. `busy`: a fetch runs, or one was asked for and has not
 * started yet. `fetched`: a fetch has ever started (then last_start, and last_end once one
 * ended, are valid; `ended` tells). Joining a running fetch costs the identity provider
 * nothing, so it is always allowed, also before the first key set arrived. */
est_jwks_refetch_t est_jwks_refetch_decide(uint64_t now, int busy, int fetched, uint64_t last_start, int ended, uint64_t last_end);

/* 1 when two jwks_url policies can share one source (and its key set): same URL and path,
 * same upstream settings (targets, timeouts, pool, retry, TLS); the upstream's name (it names
 * the policy) is not compared. */
int est_jwks_same_source(const est_jwt_conf_t *a, const est_jwt_conf_t *b);

#endif
