/*
 * estuary - target x address selection for an upstream.
 *
 * round_robin: the upstream cycles over its targets, each target cycles over the addresses
 * of its current DNS answer (so N targets x M addresses are all visited). least_request:
 * the target/address with the fewest attempts in flight (unresolved targets count as 0),
 * ties broken by the round robin order. A retry passes the previous address as `avoid`
 * so it lands on another address when there is one.
 */
#include <stdlib.h>
#include <string.h>
#include "upstream/client_internal.h"

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b);
static unsigned target_min_inflight(const est_target_t *t);

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a == NULL || b == NULL || a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return 0;
}

static unsigned target_min_inflight(const est_target_t *t)
{
    if (t->res == NULL || t->res->num_addrs == 0)
        return 0;
    unsigned m = UINT32_MAX;
    for (size_t i = 0; i != t->res->num_addrs; ++i)
        if (t->inflight[i] < m)
            m = t->inflight[i];
    return m;
}

void est_target_set_result(est_upstream_t *u, size_t ti, est_dns_result_t *res)
{
    est_target_t *t = &u->targets[ti];
    if (t->res == res)
        return;
    if (t->res != NULL && res != NULL && t->res->generation == res->generation && t->res->num_addrs == res->num_addrs) {
        /* same answer, new object: keep the counters */
        est_dns_result_addref(res);
        est_dns_result_release(t->res);
        t->res = res;
        return;
    }
    unsigned *inflight = calloc(res->num_addrs ? res->num_addrs : 1, sizeof(*inflight));
    if (inflight == NULL)
        return; /* keep the old answer */
    est_dns_result_addref(res);
    if (t->res != NULL)
        est_dns_result_release(t->res);
    free(t->inflight);
    t->res = res;
    t->inflight = inflight;
    /* connections to an address that left the answer are not reused (SPEC) */
    est_pool_purge_target(u, ti, res);
}

size_t est_balance_pick_target(est_upstream_t *u, const struct sockaddr_storage *avoid)
{
    size_t n = u->conf->num_targets;
    if (n == 1)
        return 0;
    size_t start = u->rr++;
    if (u->conf->balance == EST_BALANCE_LEAST_REQUEST) {
        size_t best = start % n;
        unsigned best_load = UINT32_MAX;
        for (size_t k = 0; k != n; ++k) {
            size_t ti = (start + k) % n;
            unsigned load = target_min_inflight(&u->targets[ti]);
            if (load < best_load) {
                best = ti;
                best_load = load;
            }
        }
        return best;
    }
    (void)avoid; /* round robin moves to the next target by itself */
    return start % n;
}

int est_balance_pick_address(est_exchange_t *x, size_t ti, est_dns_result_t *res, const struct sockaddr_storage *avoid,
                             socklen_t avoidlen)
{
    est_upstream_t *u = x->u;
    est_target_t *t = &u->targets[ti];
    est_target_set_result(u, ti, res);
    res = t->res; /* may have kept the old one on OOM */
    if (res == NULL || res->num_addrs == 0)
        return -1;
    size_t n = res->num_addrs, idx;
    (void)avoidlen;

    if (u->conf->balance == EST_BALANCE_LEAST_REQUEST) {
        size_t start = t->rr++;
        idx = start % n;
        for (size_t k = 0; k != n; ++k) {
            size_t i = (start + k) % n;
            if (t->inflight[i] < t->inflight[idx])
                idx = i;
        }
    } else {
        idx = t->rr++ % n;
    }
    x->sa = res->addrs[idx].sa;
    x->salen = res->addrs[idx].len;
    if (x->sa.ss_family == AF_INET)
        ((struct sockaddr_in *)&x->sa)->sin_port = htons(t->conf->port);
    else if (x->sa.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&x->sa)->sin6_port = htons(t->conf->port);
    if (n > 1 && same_addr(&x->sa, avoid)) {
        idx = (idx + 1) % n;
        x->sa = res->addrs[idx].sa;
        x->salen = res->addrs[idx].len;
        if (x->sa.ss_family == AF_INET)
            ((struct sockaddr_in *)&x->sa)->sin_port = htons(t->conf->port);
        else if (x->sa.ss_family == AF_INET6)
            ((struct sockaddr_in6 *)&x->sa)->sin6_port = htons(t->conf->port);
    }
    x->target_index = ti;
    x->addr_index = idx;
    x->addr_generation = res->generation;
    t->inflight[idx]++;
    x->counted_inflight = 1;
    return 0;
}

void est_balance_done(est_exchange_t *x)
{
    if (!x->counted_inflight)
        return;
    x->counted_inflight = 0;
    est_target_t *t = &x->u->targets[x->target_index];
    if (t->res != NULL && t->res->generation == x->addr_generation && x->addr_index < t->res->num_addrs &&
        t->inflight[x->addr_index] > 0)
        t->inflight[x->addr_index]--;
}
