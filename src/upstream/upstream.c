/*
 * estuary - the worker's upstream set (see client.h): one est_upstream_t per configured
 * upstream, with its targets, pool and counters; the set's timers (zero timeout, wheel).
 */
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include "common/log.h"
#include "upstream/dns_cache.h"
#include "upstream/exchange_internal.h"

static const char *const uerr_names[] = {"none",    "dns",     "connect_failure", "connect_timeout", "tls",
                                         "reset",   "timeout", "bad_reply",       "overloaded",      "deadline"};

const char *est_uerr_name(est_uerr_t e)
{
    return (unsigned)e < sizeof(uerr_names) / sizeof(uerr_names[0]) ? uerr_names[e] : "unknown";
}

int est_uerr_is_timeout(est_uerr_t e)
{
    return e == EST_UERR_CONNECT_TIMEOUT || e == EST_UERR_TIMEOUT || e == EST_UERR_DEADLINE;
}

/* ---------------------------------------------------------------- set */

est_upstream_set_t *est_upstream_set_create(h2o_loop_t *loop, est_dns_t *dns, const est_config_t *conf)
{
    est_upstream_set_t *set = calloc(1, sizeof(*set));
    if (set == NULL)
        return NULL;
    set->loop = loop;
    set->dns = dns;
    set->conf = conf;
    set->seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)set;
    h2o_timeout_init(loop, &set->zero_timeout, 0);
    est_wheel_init(&set->wheel, loop);
    if ((set->upstreams = calloc(conf->num_upstreams ? conf->num_upstreams : 1, sizeof(*set->upstreams))) == NULL)
        goto Error;
    for (size_t i = 0; i != conf->num_upstreams; ++i) {
        est_upstream_t *u = &set->upstreams[i];
        char *err = NULL;
        u->set = set;
        u->conf = &conf->upstreams[i];
        if ((u->targets = calloc(u->conf->num_targets ? u->conf->num_targets : 1, sizeof(*u->targets))) == NULL)
            goto Error;
        for (size_t t = 0; t != u->conf->num_targets; ++t) {
            est_dns_addr_t lit;
            u->targets[t].conf = &u->conf->targets[t];
            u->targets[t].is_literal = u->conf->targets[t].host != NULL && est_dns_parse_literal(u->conf->targets[t].host, &lit) == 0;
        }
        set->num_upstreams = i + 1;
        if (u->conf->hedge != NULL && (u->hedge = calloc(1, sizeof(*u->hedge))) == NULL)
            goto Error;
        if (est_pool_init_upstream(u, &err) != 0) {
            est_log_error("upstream '%s': %s", u->conf->name, err);
            goto Error;
        }
    }
    return set;
Error:
    est_upstream_set_destroy(set);
    return NULL;
}

void est_upstream_set_destroy(est_upstream_set_t *set)
{
    if (set == NULL)
        return;
    for (size_t i = 0; i != set->num_upstreams; ++i) {
        est_upstream_t *u = &set->upstreams[i];
        est_pool_dispose_upstream(u);
        est_exchange_free_recycled(u);
        for (size_t t = 0; u->targets != NULL && t != u->conf->num_targets; ++t) {
            if (u->targets[t].res != NULL)
                est_dns_result_release(u->targets[t].res);
            free(u->targets[t].inflight);
            free(u->targets[t].health);
        }
        free(u->targets);
        free(u->hedge);
    }
    free(set->upstreams);
    est_wheel_dispose(&set->wheel);
    h2o_timeout_dispose(set->loop, &set->zero_timeout);
    free(set);
}

est_upstream_t *est_upstream_set_get(est_upstream_set_t *set, size_t upstream_index)
{
    return upstream_index < set->num_upstreams ? &set->upstreams[upstream_index] : NULL;
}

size_t est_upstream_describe(const est_upstream_t *u, void (*cb)(void *data, const est_upstream_addr_info_t *a), void *data,
                             uint64_t *now)
{
    *now = h2o_now(u->set->loop);
    for (size_t t = 0; t != u->conf->num_targets; ++t) {
        const est_target_t *tg = u->targets + t;
        for (size_t i = 0; tg->res != NULL && i != tg->res->num_addrs; ++i) {
            est_upstream_addr_info_t a = {.target = t, .sa = &tg->res->addrs[i].sa, .port = tg->conf->port};
            if (tg->health != NULL) {
                a.fails = tg->health[i].fails;
                a.ejected_until = tg->health[i].ejected_until;
            }
            cb(data, &a);
        }
    }
    size_t waiting = 0;
    for (h2o_linklist_t *l = u->waiters.next; l != &u->waiters && waiting != 1000000; l = l->next)
        ++waiting;
    return waiting;
}

const est_upstream_stats_t *est_upstream_get_stats(const est_upstream_t *u)
{
    return &u->stats;
}

