/*
 * estuary - per-worker state. Everything here is owned by one thread and touched only from
 * its loop, except `server` (immutable while workers run) and the wake-up receiver.
 */
#ifndef EST_SERVER_WORKER_H
#define EST_SERVER_WORKER_H

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <openssl/ssl.h>
#include <h2o.h>
#include "config/config.h"
#include "router/router.h"
#include "http/request.h"
#include "upstream/dns.h"
#include "upstream/client.h"
#include "admin/accesslog.h"
#include "admin/admin.h"
#include "admin/metrics.h"

typedef struct est_server est_server_t;

typedef struct est_worker {
    h2o_context_t ctx; /* first: req->conn->ctx leads back to the worker */
    est_server_t *server;
    size_t id;
    pthread_t tid;
    h2o_socket_t **listeners; /* one per conf->listen entry */
    h2o_accept_ctx_t *accept_ctxs;
    est_dns_t *dns;
    est_upstream_set_t *upstreams;
    est_services_t svc;
    h2o_timeout_t **timeouts; /* created on demand, one per distinct duration */
    size_t num_timeouts;
    size_t num_conns;
    h2o_multithread_receiver_t wake;
    uint64_t rid_state[2]; /* request-id generator */
    int drain_cut;         /* the drain hit shutdown_timeout */
    /* (admin, observe.c) counters, the snapshot receiver and the access-log line buffer */
    est_worker_metrics_t metrics;
    h2o_multithread_receiver_t stats_rx;
    pthread_mutex_t stats_mu; /* guards stats_open: the admin thread sends to stats_rx only while it is 1 */
    int stats_open;
    est_strbuf_t logline;
} est_worker_t;

struct est_server {
    est_config_t *conf;
    est_router_t *router;
    h2o_globalconf_t h2oconf;
    SSL_CTX **listener_ssl; /* per listener, NULL for plain ones */
    int **listen_fds;       /* [worker][listener] */
    est_worker_t *workers;
    size_t num_workers;
    atomic_int shutdown;
    pthread_barrier_t ready; /* workers + main: every worker can be woken */
    sem_t finished;          /* posted by each worker when its loop is torn down (or cut) */
    est_admin_t *admin;         /* (observe.c) NULL when no admin listener is configured */
    est_accesslog_t *accesslog; /* (observe.c) NULL when "access_log": "off" */
};

/* the request handler (handler.c) */
int est_handler_on_req(h2o_handler_t *self, h2o_req_t *req);

/*
 * (observe.c) admin listener, metrics and access log glue.
 *
 * Main thread: est_observe_server_start before the workers start (opens the admin listener
 * and the access log; 0 or -1, logged), est_observe_server_ready once every listener is up,
 * est_observe_server_draining when the drain starts, est_observe_server_reopen_log on
 * SIGUSR1, est_observe_server_stop after the workers stopped (-1: the admin loop could not be
 * torn down; exit without further cleanup).
 * Worker thread: est_observe_worker_init once its upstreams exist, est_observe_worker_close
 * after the drain (before the context is disposed), est_observe_worker_dispose at the end.
 * Request path: est_observe_request_start as the handler starts (counts and logs the
 * request when its pool is freed), est_observe_request_matched once the route is known.
 */
typedef struct est_reqlog est_reqlog_t;
int est_observe_server_start(est_server_t *s);
void est_observe_server_ready(est_server_t *s);
void est_observe_server_draining(est_server_t *s);
void est_observe_server_reopen_log(est_server_t *s);
int est_observe_server_stop(est_server_t *s);
void est_observe_worker_init(est_worker_t *w);
void est_observe_worker_close(est_worker_t *w);
void est_observe_worker_dispose(est_worker_t *w);
est_reqlog_t *est_observe_request_start(est_worker_t *w, h2o_req_t *req, h2o_iovec_t request_id);
/* returns the trace handlers fill (est_request_t.trace) */
est_request_trace_t *est_observe_request_matched(est_reqlog_t *rl, const est_route_conf_t *route);

#endif
