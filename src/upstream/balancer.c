/*
 * estuary - target x address selection for an upstream, and passive health.
 *
 * round_robin: the upstream cycles over its targets, each target cycles over the addresses
 * of its current DNS answer (so N targets x M addresses are all visited). least_request:
 * the target/address with the fewest attempts in flight (unresolved targets count as 0),
 * ties broken by the round robin order. Only first attempts advance the round robin
 * counters: a retry takes the next target (or address) after the one that failed, so
 * retries do not skew the share of first attempts.
 *
 * Passive health (outlier detection, like Envoy's consecutive_connect_failure / nginx
 * max_fails): per address of a target's answer, EST_EJECT_AFTER_FAILURES consecutive connect
 * failures eject it for EST_EJECT_BASE_MS doubled per consecutive ejection up to
 * EST_EJECT_MAX_MS. After that it is half-open: one trial attempt at a time; a successful
 * connection re-admits it, a failure ejects it again for longer. Ejected addresses (and
 * targets with no admitted address) are skipped; when nothing is admitted, everything is a
 * candidate again ("panic", as Envoy): the upstream is never failed only for being ejected.
 * Health lives beside the answer: a new DNS answer (other addresses) starts it over.
 *
 * Candidates are taken in passes: admitted and not the one to avoid, then admitted, then any
 * but the one to avoid, then any.
 */
#include <stdlib.h>
#include <string.h>
#include "common/log.h"
#include "upstream/client_internal.h"

static int target_usable(const est_target_t *t, uint64_t now);
static unsigned target_min_inflight(const est_target_t *t, uint64_t now);

/* ---------------------------------------------------------------- health */

uint64_t est_eject_duration_ms(unsigned n)
{
    uint64_t d = EST_EJECT_BASE_MS;
    for (unsigned i = 1; i < n && d < EST_EJECT_MAX_MS; ++i)
        d *= 2;
    return d < EST_EJECT_MAX_MS ? d : EST_EJECT_MAX_MS;
}

int est_health_usable(const est_addr_health_t *h, uint64_t now)
{
    if (h->ejected_until == 0)
        return 1;
    return now >= h->ejected_until && !h->trial;
}

int est_health_update(est_addr_health_t *h, int ok, uint64_t now)
{
    if (ok) {
        h->fails = 0;
        h->ejections = 0;
        h->ejected_until = 0;
        return 0;
    }
    h->fails++;
    if (h->ejected_until == 0) {
        if (h->fails < EST_EJECT_AFTER_FAILURES)
            return 0;
    } else if (now < h->ejected_until) {
        return 0; /* already ejected (an attempt made while everything was ejected) */
    }
    /* a new ejection, or a failed half-open trial: eject (again) for longer */
    h->ejections++;
    h->ejected_until = now + est_eject_duration_ms(h->ejections);
    if (h->ejected_until == 0)
        h->ejected_until = 1;
    return 1;
}

void est_balance_report(est_upstream_t *u, est_pick_t *p, int ok, uint64_t now)
{
    if (!p->counted_inflight)
        return;
    est_target_t *t = &u->targets[p->target_index];
    if (t->res == NULL || t->health == NULL || t->res->generation != p->addr_generation || p->addr_index >= t->res->num_addrs)
        return;
    est_addr_health_t *h = &t->health[p->addr_index];
    if (p->health_trial) {
        h->trial = 0;
        p->health_trial = 0;
    }
    if (est_health_update(h, ok, now)) {
        u->stats.ejections++;
        char addr[64];
        est_sockaddr_format(&p->sa, addr, sizeof(addr));
        est_log_info("upstream '%s': %s ejected for %llu ms after %u consecutive connect failures", u->conf->name, addr,
                     (unsigned long long)(h->ejected_until - now), h->fails);
    }
}

/* ---------------------------------------------------------------- answers */

void est_target_set_result(est_upstream_t *u, size_t ti, est_dns_result_t *res)
{
    est_target_t *t = &u->targets[ti];
    if (t->res == res)
        return;
    if (t->res != NULL && res != NULL && t->res->generation == res->generation && t->res->num_addrs == res->num_addrs) {
        /* same answer, new object: keep the counters and the health */
        est_dns_result_addref(res);
        est_dns_result_release(t->res);
        t->res = res;
        return;
    }
    size_t n = res->num_addrs ? res->num_addrs : 1;
    unsigned *inflight = calloc(n, sizeof(*inflight));
    est_addr_health_t *health = calloc(n, sizeof(*health));
    if (inflight == NULL || health == NULL) {
        free(inflight);
        free(health);
        return; /* keep the old answer */
    }
    est_dns_result_addref(res);
    if (t->res != NULL)
        est_dns_result_release(t->res);
    free(t->inflight);
    free(t->health);
    t->res = res;
    t->inflight = inflight;
    t->health = health;
    /* connections to an address that left the answer are not reused (SPEC) */
    est_pool_purge_target(u, ti, res);
}

/* ---------------------------------------------------------------- targets */

static int target_usable(const est_target_t *t, uint64_t now)
{
    if (t->res == NULL || t->res->num_addrs == 0 || t->health == NULL)
        return 1; /* not resolved yet: nothing known against it */
    for (size_t i = 0; i != t->res->num_addrs; ++i)
        if (est_health_usable(&t->health[i], now))
            return 1;
    return 0;
}

static unsigned target_min_inflight(const est_target_t *t, uint64_t now)
{
    if (t->res == NULL || t->res->num_addrs == 0)
        return 0;
    unsigned m = UINT32_MAX, any = UINT32_MAX;
    for (size_t i = 0; i != t->res->num_addrs; ++i) {
        if (t->inflight[i] < any)
            any = t->inflight[i];
        if (t->inflight[i] < m && (t->health == NULL || est_health_usable(&t->health[i], now)))
            m = t->inflight[i];
    }
    return m != UINT32_MAX ? m : any;
}

size_t est_balance_pick_target(est_upstream_t *u, int mode, size_t prev_ti, uint64_t now)
{
    size_t n = u->conf->num_targets;
    if (n <= 1)
        return 0;
    if (mode == EST_PICK_SAME && prev_ti < n)
        return prev_ti;
    int retry = mode == EST_PICK_RETRY && prev_ti < n;
    /* a retry starts after the failed target; a first attempt at the round robin position */
    size_t start = retry ? prev_ti + 1 : u->rr++;
    int least = u->conf->balance == EST_BALANCE_LEAST_REQUEST;
    for (int pass = 0; pass != 4; ++pass) {
        int need_usable = pass < 2, skip_prev = retry && (pass == 0 || pass == 2);
        size_t best = SIZE_MAX;
        unsigned best_load = UINT32_MAX;
        for (size_t k = 0; k != n; ++k) {
            size_t ti = (start + k) % n;
            if (skip_prev && ti == prev_ti)
                continue;
            if (need_usable && !target_usable(&u->targets[ti], now))
                continue;
            if (!least)
                return ti;
            unsigned load = target_min_inflight(&u->targets[ti], now);
            if (best == SIZE_MAX || load < best_load) {
                best = ti;
                best_load = load;
            }
        }
        if (best != SIZE_MAX)
            return best;
    }
    return start % n;
}

/* ---------------------------------------------------------------- addresses */

int est_balance_pick_address(est_upstream_t *u, est_pick_t *p, size_t ti, est_dns_result_t *res, int mode,
                             const struct sockaddr_storage *avoid, uint64_t now)
{
    est_target_t *t = &u->targets[ti];
    est_target_set_result(u, ti, res);
    res = t->res; /* may have kept the old one on OOM */
    if (res == NULL || res->num_addrs == 0 || t->health == NULL)
        return -1;
    size_t n = res->num_addrs, idx = SIZE_MAX;

    /* where the previous attempt went, when it was an address of this answer */
    size_t prev = SIZE_MAX;
    if (avoid != NULL && mode != EST_PICK_FIRST) {
        for (size_t i = 0; i != n && prev == SIZE_MAX; ++i) {
            struct sockaddr_storage sa = res->addrs[i].sa;
            est_sockaddr_set_port(&sa, t->conf->port);
            if (est_sockaddr_equal(&sa, avoid))
                prev = i;
        }
    }
    if (mode == EST_PICK_SAME && prev != SIZE_MAX) {
        idx = prev;
    } else {
        /* only attempts that are not retries within this target advance its round robin */
        size_t start = prev != SIZE_MAX ? prev + 1 : t->rr++;
        int least = u->conf->balance == EST_BALANCE_LEAST_REQUEST;
        for (int pass = 0; pass != 4 && idx == SIZE_MAX; ++pass) {
            int need_usable = pass < 2, skip_prev = prev != SIZE_MAX && (pass == 0 || pass == 2);
            for (size_t k = 0; k != n; ++k) {
                size_t i = (start + k) % n;
                if ((skip_prev && i == prev) || (need_usable && !est_health_usable(&t->health[i], now)))
                    continue;
                if (idx == SIZE_MAX || (least && t->inflight[i] < t->inflight[idx]))
                    idx = i;
                if (!least)
                    break;
            }
        }
        if (idx == SIZE_MAX)
            idx = start % n;
    }

    p->sa = res->addrs[idx].sa;
    p->salen = res->addrs[idx].len;
    est_sockaddr_set_port(&p->sa, t->conf->port);
    p->target_index = ti;
    p->addr_index = idx;
    p->addr_generation = res->generation;
    t->inflight[idx]++;
    p->counted_inflight = 1;
    est_addr_health_t *h = &t->health[idx];
    if (h->ejected_until != 0 && now >= h->ejected_until && !h->trial) {
        h->trial = 1; /* half-open: the other attempts skip it until this one's verdict */
        p->health_trial = 1;
    }
    return 0;
}

void est_balance_done(est_upstream_t *u, est_pick_t *p)
{
    if (!p->counted_inflight)
        return;
    p->counted_inflight = 0;
    est_target_t *t = &u->targets[p->target_index];
    int same = t->res != NULL && t->res->generation == p->addr_generation && p->addr_index < t->res->num_addrs;
    if (same && t->inflight[p->addr_index] > 0)
        t->inflight[p->addr_index]--;
    if (p->health_trial) {
        /* the trial ended without a connect verdict (pooled connection, TLS error, cancel) */
        p->health_trial = 0;
        if (same && t->health != NULL)
            t->health[p->addr_index].trial = 0;
    }
}
