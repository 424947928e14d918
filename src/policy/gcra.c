/*
 * estuary - GCRA (see gcra.h), on unsigned microseconds.
 *
 * Overflow: the parameters are capped so that every TAT stays far below 2^64 for any clock
 * value below 2^63 (est_rlstore_now_us counts from boot: 2^63us is 292,000 years): T at
 * 2^52us (142 years; a longer interval is "never again" in practice) and the tolerance
 * burst * T at 2^62us (a larger bucket admits everything in practice). A TAT is then at most
 * now + tau + T < 2^63 + 2^62 + 2^52. Even so, the decision compares differences (no sum
 * that could wrap) and refuses when a new TAT would not fit, so an out-of-range clock or TAT
 * gives a strict answer, never one that wraps around to admit.
 */
#include "policy/gcra.h"

#define MAX_INTERVAL_US ((uint64_t)1 << 52)
#define MAX_TAU_US ((uint64_t)1 << 62)

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    if (a != 0 && b > UINT64_MAX / a)
        return UINT64_MAX;
    return a * b;
}

est_gcra_params_t est_gcra_params(uint64_t rate, uint64_t per_ms, uint64_t burst)
{
    est_gcra_params_t p;
    if (rate == 0) /* the config refuses it; never divide by zero */
        rate = 1;
    /* T = per / rate in microseconds; per_ms * 1000 may not fit in 64 bits (gcc's 128-bit type) */
    __extension__ unsigned __int128 t128 = (unsigned __int128)per_ms * 1000 / rate;
    uint64_t t = t128 > MAX_INTERVAL_US ? MAX_INTERVAL_US : (uint64_t)t128;
    p.interval_us = t != 0 ? t : 1;
    p.burst = burst <= MAX_TAU_US / p.interval_us ? burst : MAX_TAU_US / p.interval_us;
    return p;
}

void est_gcra_decide(const est_gcra_params_t *p, uint64_t now_us, uint64_t *tat, est_gcra_result_t *res)
{
    uint64_t T = p->interval_us != 0 ? p->interval_us : 1;
    uint64_t tau = sat_mul(p->burst, T);
    uint64_t t = *tat > now_us ? *tat : now_us; /* a TAT in the past is a full bucket */
    uint64_t ahead = t - now_us;                /* how far the key is ahead of its schedule */

    /* allowed when t - tau <= now (compared as a difference: no sum to overflow), and when
     * the new TAT can be represented: a TAT that would pass 2^64 refuses (strict), it never
     * wraps to a small value that would admit */
    if (ahead > tau || t > UINT64_MAX - T) {
        res->allowed = 0;
        res->remaining = 0;
        res->retry_after_us = ahead > tau ? ahead - tau : T;
        res->reset_us = ahead;
        return;
    }
    uint64_t nt = t + T;
    *tat = nt;
    res->allowed = 1;
    res->retry_after_us = 0;
    res->reset_us = nt - now_us;
    /* further requests allowed now: those j >= 0 with (nt - now) + j*T <= tau */
    res->remaining = res->reset_us <= tau ? (tau - res->reset_us) / T + 1 : 0;
    if (res->remaining > p->burst) /* tau saturated: never claim more than the bucket holds */
        res->remaining = p->burst;
}
