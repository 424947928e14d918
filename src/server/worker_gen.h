/*
 * estuary - a worker's view of one configuration generation (worker_gen.c): its upstream set
 * and the services handed to handlers, pinned by every request that starts on it.
 *
 * Lifetime: created on the worker's loop at start and on each reload (est_worker_gen_create),
 * current until the next reload switches away from it; then it waits on est_worker_t.old_gens
 * until its last request unpins it, and is destroyed from the loop (never inside h2o's dispose
 * of a request pool), dropping its generation reference. Worker thread only.
 */
#ifndef EST_SERVER_WORKER_GEN_H
#define EST_SERVER_WORKER_GEN_H

#include <stddef.h>
#include <h2o.h>
#include "http/request.h"
#include "upstream/client.h"
#include "server/gen.h"
#include "policy/gate.h"
#include "server/worker.h"
#include "trace/export.h"

struct est_worker_gen {
    est_worker_t *w;
    est_gen_t *gen; /* one reference */
    est_upstream_set_t *upstreams;
    est_services_t svc;
    est_policy_view_t *policy;        /* the generation's policies as this worker runs them */
    est_tracer_t *tracer;             /* (SPEC "Tracing") this view's exporter; NULL when tracing is off */
    size_t inflight;                  /* requests pinning it (est_worker_gen_pin) */
    h2o_linklist_t link;              /* est_worker_t.old_gens, while not current */
    h2o_timeout_entry_t retire_timer; /* deferred destruction, on the worker's 0 ms timeout */
};

/* a new view of `gen` (the reference is taken over on success), or NULL: the upstream set could
 * not be built (the caller still holds `gen`) */
est_worker_gen_t *est_worker_gen_create(est_worker_t *w, est_gen_t *gen);
/* destroys `wg` now: no request may pin it any more (unlinks it from old_gens) */
void est_worker_gen_retire(est_worker_gen_t *wg);
/* makes `wg` current: the previous view moves to old_gens (retired at once when nothing pins it),
 * after every older view handed its unchanged upstreams' pools over to `wg` */
void est_worker_gen_switch(est_worker_t *w, est_worker_gen_t *wg);

/* a request starts: pins and returns the current view (for the request's lifetime) */
est_worker_gen_t *est_worker_gen_pin(est_worker_t *w);
/* the request's pool is being freed: drops its pin; a view no longer current and no longer
 * pinned is destroyed later, from the loop */
void est_worker_gen_unpin(est_worker_gen_t *wg);

#endif
