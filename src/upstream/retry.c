/*
 * estuary - upstream retry policy (see retry.h).
 */
#include <stdlib.h>
#include "upstream/retry.h"

est_retry_verdict_t est_retry_decide(const est_upstream_conf_t *conf, const est_retry_ask_t *a, unsigned *seed,
                                     uint64_t *wait)
{
    if (a->attempts >= conf->retry.attempts)
        return EST_RETRY_NO;
    switch (a->err) {
    case EST_UERR_NONE: /* a status listed in retry.statuses: the request was processed */
        if (!a->is_idempotent)
            return EST_RETRY_NO;
        break;
    case EST_UERR_CONNECT:
    case EST_UERR_CONNECT_TIMEOUT:
    case EST_UERR_TLS:
        if (!(conf->retry.on & EST_RETRY_ON_CONNECT_FAILURE))
            return EST_RETRY_NO;
        break;
    case EST_UERR_RESET:
        if (!(conf->retry.on & EST_RETRY_ON_RESET) || (!a->is_idempotent && a->sent))
            return EST_RETRY_NO;
        break;
    case EST_UERR_TIMEOUT:
        if (!(conf->retry.on & EST_RETRY_ON_TIMEOUT) || (!a->is_idempotent && a->sent))
            return EST_RETRY_NO;
        break;
    default: /* dns, bad_reply, overloaded, deadline: not retried */
        return EST_RETRY_NO;
    }
    uint64_t w = est_retry_backoff_ms(conf->retry.backoff_ms, conf->retry.max_backoff_ms, a->attempts, seed);
    if (a->deadline != 0 && a->now + w >= a->deadline)
        return EST_RETRY_NO;
    if (!est_retry_budget_allows(a->active_requests, a->active_retries))
        return EST_RETRY_NO_BUDGET;
    *wait = w;
    return EST_RETRY_YES;
}

int est_retry_status_listed(const est_upstream_conf_t *conf, int status)
{
    for (size_t i = 0; i != conf->retry.num_statuses; ++i)
        if (conf->retry.statuses[i] == status)
            return 1;
    return 0;
}

uint64_t est_retry_backoff_ms(uint64_t base_ms, uint64_t max_ms, unsigned n, unsigned *seed)
{
    /* [d/2, d], d = min(max_backoff, backoff * 2^(n-1)) */
    uint64_t d = base_ms;
    for (unsigned i = 1; i < n && d < max_ms; ++i)
        d *= 2;
    if (d > max_ms)
        d = max_ms;
    return d / 2 + (d - d / 2 != 0 ? (uint64_t)rand_r(seed) % (d - d / 2 + 1) : 0);
}

int est_retry_budget_allows(size_t active_requests, size_t active_retries)
{
    size_t limit = active_requests * EST_RETRY_BUDGET_PERCENT / 100;
    if (limit < EST_RETRY_BUDGET_MIN)
        limit = EST_RETRY_BUDGET_MIN;
    return active_retries < limit;
}
