/*
 * estuary - the upstream retry policy as pure functions (SPEC "retry"): whether a failed
 * attempt may be retried, the backoff before the next one, and the retry budget. No loop, no
 * exchange: client.c asks with the facts of the attempt and acts on the verdict.
 */
#ifndef EST_UPSTREAM_RETRY_H
#define EST_UPSTREAM_RETRY_H

#include <stddef.h>
#include <stdint.h>
#include "config/config.h"
#include "upstream/client.h"

/* Retry budget (as Envoy's retry_budget): concurrent retries per upstream per worker are
 * capped at EST_RETRY_BUDGET_PERCENT of the live exchanges, but at least EST_RETRY_BUDGET_MIN. */
#define EST_RETRY_BUDGET_PERCENT 20
#define EST_RETRY_BUDGET_MIN 3

/* The facts of a failed attempt (or of a reply whose status is listed in retry.statuses) */
typedef struct est_retry_ask {
    unsigned attempts;      /* attempts made so far, the failed one included */
    est_uerr_t err;         /* EST_UERR_NONE: a reply with a listed status */
    int is_idempotent;      /* the request may be sent twice */
    int sent;               /* request bytes were handed to a socket in the failed attempt */
    uint64_t now, deadline; /* h2o_now() ms; deadline 0 = none */
    size_t active_requests; /* live exchanges of the upstream (the budget's base) */
    size_t active_retries;  /* live exchanges past their first attempt, the asker not counted */
} est_retry_ask_t;

typedef enum {
    EST_RETRY_NO,        /* by retry.*, the method, or the deadline */
    EST_RETRY_YES,       /* after *wait ms */
    EST_RETRY_NO_BUDGET, /* allowed by retry.* but refused by the retry budget */
} est_retry_verdict_t;

/*
 * May the attempt described by `a` be retried under `conf`'s retry policy? A retry needs
 * attempts left, a reason in retry.on (connect_failure covers connect timeouts and TLS
 * handshake failures; a listed status needs an idempotent request), a non-idempotent request
 * only when nothing was sent, a backoff that ends before the deadline, and the budget.
 * `seed` feeds the jitter (rand_r). On EST_RETRY_YES, *wait is the backoff.
 */
est_retry_verdict_t est_retry_decide(const est_upstream_conf_t *conf, const est_retry_ask_t *a, unsigned *seed,
                                     uint64_t *wait);
/* Is `status` listed in retry.statuses? */
int est_retry_status_listed(const est_upstream_conf_t *conf, int status);
/* The wait before attempt n+1 (n >= 1): random in [d/2, d], d = min(max_ms, base_ms * 2^(n-1)). */
uint64_t est_retry_backoff_ms(uint64_t base_ms, uint64_t max_ms, unsigned n, unsigned *seed);
/* May one more retry start, with `active_retries` retries (not counting the asker) among
 * `active_requests` live exchanges? */
int est_retry_budget_allows(size_t active_requests, size_t active_retries);

#endif
