/*
 * estuary - a worker's view of one configuration generation, from creation to retirement;
 * see worker_gen.h.
 */
#include "server/worker_gen.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "server/observe.h"
#include "server/reload.h"

static h2o_timeout_t *get_timeout(est_services_t *svc, uint64_t ms)
{
    est_worker_gen_t *wg = H2O_STRUCT_FROM_MEMBER(est_worker_gen_t, svc, svc);
    return est_worker_timeout(wg->w, ms);
}

static void svc_pin(est_services_t *svc)
{
    ++H2O_STRUCT_FROM_MEMBER(est_worker_gen_t, svc, svc)->inflight;
}

static void svc_unpin(est_services_t *svc)
{
    est_worker_gen_unpin(H2O_STRUCT_FROM_MEMBER(est_worker_gen_t, svc, svc));
}

est_worker_gen_t *est_worker_gen_create(est_worker_t *w, est_gen_t *gen)
{
    est_upstream_set_t *set = est_upstream_set_create(w->ctx.loop, w->dns, gen->conf);
    if (set == NULL)
        return NULL;
    est_worker_gen_t *wg = h2o_mem_alloc(sizeof(*wg));
    memset(wg, 0, sizeof(*wg));
    wg->w = w;
    wg->gen = gen;
    wg->upstreams = set;
    wg->svc.loop = w->ctx.loop;
    wg->svc.upstreams = set;
    wg->svc.get_timeout = get_timeout;
    wg->svc.pin = svc_pin;
    wg->svc.unpin = svc_unpin;
    wg->svc.conns = &w->metrics.conns;
    wg->svc.metrics = &w->metrics;
    if ((wg->policy = est_policy_view_create(w->ctx.loop, w->ctx.queue, w->dns, gen->policy, &wg->svc, w->id)) == NULL) {
        est_upstream_set_destroy(set);
        free(wg);
        return NULL;
    }
    /* tracing: an exporter per view, so a reload that adds, drops or changes "tracing" takes
     * effect for new requests at once; a failure leaves this view without tracing (logged) */
    if (gen->conf->tracing != NULL &&
        (wg->tracer = est_tracer_create(w->ctx.loop, w->dns, gen->conf->tracing, est_worker_timeout(w, 1000),
                                        est_worker_timeout(w, 0), &w->metrics.conns.spans_dropped,
                                        &w->metrics.conns.spans_exported)) == NULL)
        est_log_error("worker %zu: tracing: cannot set up the exporter for %s; requests are not traced", w->id,
                      gen->conf->tracing->otlp_endpoint);
    return wg;
}

void est_worker_gen_retire(est_worker_gen_t *wg)
{
    if (h2o_linklist_is_linked(&wg->link))
        h2o_linklist_unlink(&wg->link);
    if (h2o_timeout_is_linked(&wg->retire_timer))
        h2o_timeout_unlink(&wg->retire_timer);
    est_log_debug("worker %zu: configuration generation %llu released", wg->w->id, (unsigned long long)wg->gen->id);
    est_policy_view_destroy(wg->policy); /* no request runs its gate any more */
    /* its queued spans go to the current view's exporter (same worker), else are counted as dropped */
    est_worker_gen_t *cur = wg->w->current;
    est_tracer_destroy(wg->tracer, cur != NULL && cur != wg ? cur->tracer : NULL);
    est_upstream_set_destroy(wg->upstreams); /* no exchange runs: every request on it is gone */
    est_gen_release(wg->gen);
    free(wg);
}

static void on_retire_timer(h2o_timeout_entry_t *entry)
{
    est_worker_gen_t *wg = H2O_STRUCT_FROM_MEMBER(est_worker_gen_t, retire_timer, entry);
    if (wg->inflight == 0 && wg != wg->w->current)
        est_worker_gen_retire(wg);
}

est_worker_gen_t *est_worker_gen_pin(est_worker_t *w)
{
    est_worker_gen_t *wg = w->current;
    ++wg->inflight;
    return wg;
}

void est_worker_gen_unpin(est_worker_gen_t *wg)
{
    /* called from a request pool's dispose: destroy later, from the loop, not inside h2o */
    if (--wg->inflight == 0 && wg != wg->w->current && !h2o_timeout_is_linked(&wg->retire_timer)) {
        wg->retire_timer.cb = on_retire_timer;
        h2o_timeout_link(wg->w->ctx.loop, est_worker_timeout(wg->w, 0), &wg->retire_timer);
    }
}

/* points every upstream of `old` at the upstream of the same, unchanged config in `cur` (or at none) */
static void hand_over_upstreams(est_worker_gen_t *old, est_worker_gen_t *cur)
{
    const est_config_t *oc = old->gen->conf, *nc = cur->gen->conf;
    for (size_t i = 0; i != oc->num_upstreams; ++i) {
        const est_upstream_conf_t *nu = est_reload_kept_upstream(nc, oc->upstreams + i);
        est_upstream_t *to = nu != NULL ? est_upstream_set_get(cur->upstreams, nu->index) : NULL;
        est_upstream_handover(est_upstream_set_get(old->upstreams, i), to);
    }
}

void est_worker_gen_switch(est_worker_t *w, est_worker_gen_t *wg)
{
    /* upstream pools: the current view and every older one still in use hand over to the new one */
    est_worker_gen_t *old = w->current;
    hand_over_upstreams(old, wg);
    for (h2o_linklist_t *n = w->old_gens.next; n != &w->old_gens; n = n->next)
        hand_over_upstreams(H2O_STRUCT_FROM_MEMBER(est_worker_gen_t, link, n), wg);
    est_observe_worker_switch(w, old->gen->conf, wg->gen->conf);
    w->current = wg;
    h2o_linklist_insert(&w->old_gens, &old->link);
    est_log_debug("worker %zu: switched to configuration generation %llu", w->id, (unsigned long long)wg->gen->id);
    if (old->inflight == 0)
        est_worker_gen_retire(old);
}
