/*
 * estuary - glue between the front end and the admin subsystem: per-request accounting
 * (metrics + access log when the request's pool is freed), the worker side of the metrics
 * snapshot protocol, and the admin thread / access log writer lifecycle. See observe.h.
 */
#include "server/observe.h"
#include "server/worker.h"
#include "server/worker_gen.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "common/log.h"
#include "common/sockaddr.h"
#include "admin/accesslog.h"
#include "admin/admin.h"

/*
 * (memory) What the access log needs of a request (timestamps, copies of its id and path, the
 * client address and the trace of its upstream exchanges: ~950 bytes, mostly the trace) is
 * allocated only when the access log is on. With the log off the record is what the metrics
 * need (~80 bytes): with 5,000 requests in flight that is ~4.5 MiB less (RESULTS.md, S4).
 */
typedef struct est_reqlog_access {
    struct timespec start_wall;
    h2o_iovec_t request_id, path;      /* copies in the request pool */
    char remote[INET6_ADDRSTRLEN + 8]; /* "" when unknown */
    est_request_trace_t trace;
} est_reqlog_access_t;

struct est_reqlog {
    est_worker_t *w;
    h2o_req_t *req;
    const est_config_t *conf; /* of the generation the request started on */
    struct timespec start_mono;
    h2o_iovec_t method;  /* copy in the request pool */
    size_t route_index;  /* SIZE_MAX: no route */
    const char *route;
    est_accesslog_t *log; /* NULL: the access log is off and `access` is not allocated */
    est_trace_ctx_t *tctx; /* (tracing) NULL when off; lives in the request record, freed after us */
    h2o_iovec_t trace_path; /* (tracing, sampled) url.path: a copy in the request pool */
    est_reqlog_access_t access[];
};

/* ---- request path ------------------------------------------------------------------------ */

static void format_peer(est_conn_peer_t *p, h2o_req_t *req)
{
    struct sockaddr_storage ss;
    char ip[INET6_ADDRSTRLEN] = "";
    p->remote[0] = '\0';
    p->ip_off = p->ip_len = 0;
    p->done = 1;
    socklen_t len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);
    if (len == 0 || len > sizeof(ss))
        return;
    size_t ip_len = est_sockaddr_ntop(&ss, ip, sizeof(ip));
    if (ip_len == 0 || est_sockaddr_format(&ss, p->remote, sizeof(p->remote)) == 0)
        return;
    p->ip_off = ss.ss_family == AF_INET6; /* "[ip]:port" */
    p->ip_len = (unsigned char)ip_len;
}

const est_conn_peer_t *est_conn_peer(est_client_conn_t *cc, h2o_req_t *req)
{
    static _Thread_local est_conn_peer_t scratch;
    est_conn_peer_t *p = cc != NULL ? &cc->peer : &scratch;
    if (cc == NULL || !p->done)
        format_peer(p, req);
    return p;
}

/* the request's pool is being freed: its response is finished (or the client left) */
static void on_request_done(void *p)
{
    est_reqlog_t *rl = p;
    est_worker_t *w = rl->w;
    h2o_req_t *req = rl->req;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double ms = (double)(now.tv_sec - rl->start_mono.tv_sec) * 1e3 + (double)(now.tv_nsec - rl->start_mono.tv_nsec) / 1e6;
    size_t route_index = rl->route_index;
    const est_config_t *cur = w->current != NULL ? w->current->gen->conf : NULL;
    if (rl->conf != cur && route_index != SIZE_MAX) {
        /* (reload) started on an older generation: count it under the current route of the
         * same path, if any (rl->route is still valid: the generation is released after us) */
        route_index = SIZE_MAX - 1;
        for (size_t i = 0; cur != NULL && i != cur->num_routes; ++i)
            if (strcmp(cur->routes[i].path, rl->route) == 0) {
                route_index = i;
                break;
            }
    }
    if (route_index != SIZE_MAX - 1)
        est_worker_metrics_record(&w->metrics, route_index, rl->method.base, rl->method.len, req->res.status, ms / 1e3);
    if (est_trace_sampled(rl->tctx)) /* (tracing) the server span: a copy into the worker's ring */
        est_trace_record_server(rl->tctx, est_trace_now_ns(), rl->method.base, rl->method.len, rl->route, rl->trace_path.base,
                                rl->trace_path.len, req->res.status);

    est_accesslog_t *log = rl->log;
    if (log == NULL)
        return;
    est_reqlog_access_t *a = rl->access;
    est_access_entry_t e = {.time = a->start_wall,
                            .request_id = a->request_id,
                            .remote = a->remote[0] != '\0' ? a->remote : NULL,
                            .method = rl->method,
                            .path = a->path,
                            .route = rl->route,
                            .status = req->res.status,
                            .bytes_sent = req->bytes_sent,
                            .duration_ms = ms,
                            .trace = &a->trace,
                            .trace_id = rl->tctx != NULL ? rl->tctx->trace_id : NULL};
    w->logline.len = 0;
    est_accesslog_build(&w->logline, &e);
    est_accesslog_append(log, w->id, w->logline.base, w->logline.len);
}

est_reqlog_t *est_observe_request_start(est_worker_t *w, h2o_req_t *req, h2o_iovec_t request_id, const est_conn_peer_t *peer,
                                        est_disposer_t **disposers)
{
    est_accesslog_t *log = w->server->accesslog;
    est_reqlog_t *rl = est_alloc_disposable(&req->pool, disposers, sizeof(*rl) + (log != NULL ? sizeof(est_reqlog_access_t) : 0),
                                            on_request_done);
    rl->w = w;
    rl->req = req;
    rl->conf = w->current->gen->conf;
    rl->log = log;
    clock_gettime(CLOCK_MONOTONIC, &rl->start_mono);
    /* copied: h1 header and path bytes live in the connection's input buffer */
    rl->method = h2o_strdup(&req->pool, req->method.base, req->method.len);
    rl->route_index = SIZE_MAX;
    rl->route = NULL;
    rl->tctx = NULL;
    rl->trace_path = h2o_iovec_init(NULL, 0);
    if (log != NULL) {
        est_reqlog_access_t *a = rl->access;
        clock_gettime(CLOCK_REALTIME, &a->start_wall);
        a->request_id = h2o_strdup(&req->pool, request_id.base, request_id.len);
        a->path = h2o_strdup(&req->pool, req->path.base, req->path.len);
        memcpy(a->remote, peer->remote, sizeof(a->remote));
        memset(&a->trace, 0, sizeof(a->trace));
    }
    return rl;
}

void est_observe_request_trace(est_reqlog_t *rl, est_trace_ctx_t *tctx)
{
    rl->tctx = tctx;
    if (est_trace_sampled(tctx)) { /* url.path: without the query, which may carry secrets */
        h2o_req_t *req = rl->req;
        size_t n = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
        rl->trace_path = h2o_strdup(&req->pool, req->path.base, n < 128 ? n : 128);
    }
}

est_request_trace_t *est_observe_request_matched(est_reqlog_t *rl, const est_route_conf_t *route)
{
    rl->route_index = route->index;
    rl->route = route->path;
    return rl->log != NULL ? &rl->access->trace : NULL; /* no log, no trace: handlers skip it */
}

/* ---- worker side of the snapshot protocol ---------------------------------------------------- */

static void fill_snapshot(void *data, est_metrics_snapshot_t *snap)
{
    est_worker_t *w = data;
    if (w->current == NULL)
        return; /* not set up yet: counted as missing */
    est_metrics_snapshot_fill(snap, &w->metrics, w->current->gen->conf, w->current->upstreams, w->dns, w->num_conns);
}

static void on_stats_request(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    est_worker_t *w = H2O_STRUCT_FROM_MEMBER(est_worker_t, stats_rx, rx);
    est_metrics_answer_messages(messages, fill_snapshot, w);
}

void est_observe_worker_init(est_worker_t *w)
{
    est_worker_metrics_init(&w->metrics, w->start_gen->conf->num_routes);
    h2o_multithread_register_receiver(w->ctx.queue, &w->stats_rx, on_stats_request);
    pthread_mutex_lock(&w->stats_mu);
    w->stats_open = 1;
    pthread_mutex_unlock(&w->stats_mu);
}

void est_observe_worker_switch(est_worker_t *w, const est_config_t *from, const est_config_t *to)
{
    /* counters are labelled by route path: a route that keeps its path keeps its counters */
    est_worker_metrics_t m;
    est_worker_metrics_init(&m, to->num_routes);
    char *moved = calloc(from->num_routes + 1, 1);
    for (size_t j = 0; j != to->num_routes; ++j)
        for (size_t i = 0; i != from->num_routes; ++i)
            if (!moved[i] && strcmp(from->routes[i].path, to->routes[j].path) == 0) {
                m.routes[j] = w->metrics.routes[i];
                memset(&w->metrics.routes[i], 0, sizeof(w->metrics.routes[i]));
                moved[i] = 1;
                break;
            }
    m.routes[to->num_routes] = w->metrics.routes[from->num_routes]; /* "no route" */
    memset(&w->metrics.routes[from->num_routes], 0, sizeof(w->metrics.routes[0]));
    free(moved);
    m.conns = w->metrics.conns; /* per worker, not per route: they carry over as they are */
    est_worker_metrics_dispose(&w->metrics);
    w->metrics = m;
}

void est_observe_worker_close(est_worker_t *w)
{
    pthread_mutex_lock(&w->stats_mu);
    w->stats_open = 0;
    pthread_mutex_unlock(&w->stats_mu);
    /* No sender can add a message now (they send while holding stats_mu); answer the ones
     * already queued, since a receiver must be empty when unregistered. */
    for (int i = 0; i != 100 && !h2o_linklist_is_empty(&w->stats_rx._messages); ++i)
        h2o_evloop_run(w->ctx.loop, 10);
    h2o_multithread_unregister_receiver(w->ctx.queue, &w->stats_rx);
}

void est_observe_worker_dispose(est_worker_t *w)
{
    est_worker_metrics_dispose(&w->metrics);
    est_strbuf_dispose(&w->logline);
}

/* ---- main thread ------------------------------------------------------------------------- */

static int request_snapshot(void *data, size_t worker, est_stats_msg_t *msg)
{
    est_server_t *s = data;
    est_worker_t *w = s->workers + worker;
    int ret = -1;
    pthread_mutex_lock(&w->stats_mu);
    if (w->stats_open) {
        h2o_multithread_send_message(&w->stats_rx, &msg->super);
        ret = 0;
    }
    pthread_mutex_unlock(&w->stats_mu);
    return ret;
}

int est_observe_server_start(est_server_t *s)
{
    const est_config_t *conf = s->start_conf;
    for (size_t i = 0; i != s->num_workers; ++i)
        pthread_mutex_init(&s->workers[i].stats_mu, NULL);
    if (!conf->access_log_off) {
        char err[512];
        if ((s->accesslog = est_accesslog_create(conf->access_log, s->num_workers, err, sizeof(err))) == NULL) {
            est_log_error("%s", err);
            return -1;
        }
    }
    if (conf->admin != NULL && est_observe_admin_start(s, conf) != 0)
        return -1;
    return 0;
}

int est_observe_admin_start(est_server_t *s, const est_config_t *conf)
{
    est_admin_hooks_t hooks = {.data = s, .num_workers = s->num_workers, .request_snapshot = request_snapshot};
    if ((s->admin = est_admin_start(conf, &hooks)) == NULL)
        return -1;
    s->admin_at.host = strdup(conf->admin->host);
    s->admin_at.port = conf->admin->port;
    if (s->reloads_ok != 0 || s->reloads_failed != 0) { /* started by a reload: the server is ready */
        est_admin_set_counts(s->admin, 1 + s->reloads_ok, s->reloads_ok, s->reloads_failed);
        est_admin_set_ready(s->admin);
    }
    return 0;
}

void est_observe_server_ready(est_server_t *s)
{
    est_admin_set_ready(s->admin);
}

void est_observe_server_draining(est_server_t *s)
{
    est_admin_set_draining(s->admin);
}

void est_observe_server_reopen_log(est_server_t *s)
{
    if (s->accesslog != NULL && s->start_conf->access_log != NULL) {
        est_log_info("SIGUSR1: reopening the access log %s", s->start_conf->access_log);
        est_accesslog_reopen(s->accesslog);
    }
}

int est_observe_server_stop(est_server_t *s)
{
    int ret = 0;
    if (s->workers != NULL) /* workers that were cut keep their queue but never answer */
        for (size_t i = 0; i != s->num_workers; ++i) {
            pthread_mutex_lock(&s->workers[i].stats_mu);
            s->workers[i].stats_open = 0;
            pthread_mutex_unlock(&s->workers[i].stats_mu);
        }
    if (s->admin != NULL) {
        ret = est_admin_stop(s->admin);
        s->admin = NULL;
    }
    free(s->admin_at.host);
    s->admin_at.host = NULL;
    est_accesslog_destroy(s->accesslog);
    s->accesslog = NULL;
    return ret;
}
