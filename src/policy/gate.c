/*
 * estuary - the policy gate: stage sequencing, the request's lifetime around a waiting
 * stage, and the lifecycle of the per-generation and per-worker policy state. See gate.h.
 */
#include "policy/gate.h"

#include <stdlib.h>
#include <string.h>

#include "admin/metrics.h"
#include "common/log.h"
#include "policy/jwks.h"

typedef est_gate_verdict_t (*stage_fn)(est_gate_t *g);
static const stage_fn stages[] = {est_cors_stage, est_auth_stage, est_ratelimit_stage};
#define NUM_STAGES (sizeof(stages) / sizeof(stages[0]))

est_policy_gen_t *est_policy_gen_create(const est_config_t *conf)
{
    est_policy_gen_t *pg = calloc(1, sizeof(*pg));
    int failed = 0;
    if (pg == NULL)
        return NULL;
    pg->conf = conf;
    est_jwks_set_dns(&conf->dns); /* the JWKS fetcher resolves as the workers do (used when it starts) */
    pg->auth = est_auth_gen_create(conf, &failed);
    if (!failed)
        pg->rl = est_rl_gen_create(conf, &failed);
    if (failed) {
        est_policy_gen_free(pg);
        return NULL;
    }
    return pg;
}

void est_policy_gen_free(est_policy_gen_t *pg)
{
    if (pg == NULL)
        return;
    if (pg->rl != NULL)
        est_rl_gen_free(pg->rl);
    if (pg->auth != NULL)
        est_auth_gen_free(pg->auth);
    free(pg);
}

est_policy_view_t *est_policy_view_create(h2o_loop_t *loop, h2o_multithread_queue_t *queue, struct est_dns *dns,
                                          const est_policy_gen_t *pg, est_services_t *svc, size_t worker_id)
{
    est_policy_view_t *pv = calloc(1, sizeof(*pv));
    int failed = 0;
    if (pv == NULL)
        return NULL;
    pv->loop = loop;
    pv->conf = pg->conf;
    pv->gen = pg;
    pv->svc = svc;
    pv->worker_id = worker_id;
    pv->queue = queue;
    pv->dns = dns;
    pv->auth = est_auth_view_create(pv, &failed);
    if (!failed)
        pv->rl = est_rl_view_create(pv, &failed);
    if (failed) {
        est_policy_view_destroy(pv);
        return NULL;
    }
    return pv;
}

void est_policy_view_destroy(est_policy_view_t *pv)
{
    if (pv == NULL)
        return;
    if (pv->rl != NULL)
        est_rl_view_destroy(pv->rl);
    if (pv->auth != NULL)
        est_auth_view_destroy(pv->auth);
    free(pv);
}

void est_policy_shutdown(void)
{
    est_auth_shutdown();
    est_rl_shutdown();
}

/* runs stages from g->stage until one replies or waits, or all pass */
static void run_from(est_gate_t *g)
{
    while (g->stage < NUM_STAGES) {
        est_gate_verdict_t v = stages[g->stage](g);
        if (v == EST_GATE_WAIT)
            return; /* the stage resumes us (or is cancelled with the request) */
        if (v == EST_GATE_DONE) {
            g->stage = NUM_STAGES + 1;
            return;
        }
        ++g->stage;
    }
    g->stage = NUM_STAGES + 1;
    g->dispatch(g->r);
}

static void on_gate_dispose(void *obj)
{
    est_gate_t *g = obj;
    g->disposed = 1;
    if (g->cancel != NULL) {
        void (*cancel)(est_gate_t *) = g->cancel;
        g->cancel = NULL;
        cancel(g);
    }
}

void est_gate_run(est_request_t *r, est_policy_view_t *view, void (*dispatch)(est_request_t *r))
{
    est_gate_t *g = est_alloc_disposable(&r->req->pool, r->disposers, sizeof(*g), on_gate_dispose);
    memset(g, 0, sizeof(*g));
    g->r = r;
    g->view = view;
    g->dispatch = dispatch;
    run_from(g);
}

void est_gate_resume(est_gate_t *g, est_gate_verdict_t v)
{
    g->cancel = NULL;
    g->pending = NULL;
    if (g->disposed || g->stage >= NUM_STAGES)
        return; /* cannot happen when stages keep their contract; never dispatch twice */
    if (v == EST_GATE_DONE) {
        g->stage = NUM_STAGES + 1;
        return;
    }
    ++g->stage;
    run_from(g);
}

void est_gate_count_auth_rejected(est_gate_t *g, int reason)
{
    est_worker_metrics_t *m = g->view->svc->metrics;
    size_t i = g->r->route->index;
    if (m != NULL && i < m->num_routes && (unsigned)reason < EST_AUTH_REASON__COUNT)
        ++m->routes[i].auth_rejected[reason];
}

void est_gate_count_rate_limited(est_gate_t *g)
{
    est_worker_metrics_t *m = g->view->svc->metrics;
    size_t i = g->r->route->index;
    if (m != NULL && i < m->num_routes)
        ++m->routes[i].rate_limited;
}

void est_gate_count_redis(est_policy_view_t *view, int result)
{
    est_worker_metrics_t *m = view->svc->metrics;
    if (m != NULL && (unsigned)result < EST_REDIS_RESULT__COUNT)
        ++m->conns.redis[result];
}
