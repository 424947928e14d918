/*
 * estuary - per-worker state. Everything here is owned by one thread and touched only from
 * its loop, except `server` (its fields used by workers are fixed while they run), the
 * receivers other threads send to (wake, reload_rx, stats_rx) and the generations, which are
 * shared read-only and refcounted (gen.h).
 */
#ifndef EST_SERVER_WORKER_H
#define EST_SERVER_WORKER_H

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <arpa/inet.h>
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
#include "server/gen.h"
#include "h1/conn.h"

typedef struct est_server est_server_t;
typedef struct est_worker est_worker_t;

/*
 * A worker's view of one generation: its upstream set (built on the worker's loop, with the
 * unchanged upstreams' pools handed over from the previous set) and the services handed to
 * handlers. Requests count themselves in `inflight` (handler.c); a view that is no longer
 * current is destroyed, and its generation reference dropped, when that count reaches 0.
 */
typedef struct est_worker_gen {
    est_worker_t *w;
    est_gen_t *gen; /* one reference */
    est_upstream_set_t *upstreams;
    est_services_t svc;
    size_t inflight;
    h2o_linklist_t link;             /* est_worker_t.old_gens, while not current */
    h2o_timeout_entry_t retire_timer; /* deferred destruction, on the worker's 0 ms timeout */
} est_worker_gen_t;

/* The client's address, formatted once per connection (X-Forwarded-For, access log) */
typedef struct est_conn_peer {
    char remote[INET6_ADDRSTRLEN + 8]; /* "ip:port" or "[ip]:port"; "" when unknown */
    unsigned char ip_off, ip_len;      /* the bare ip inside `remote` */
    unsigned char done;                /* formatted */
} est_conn_peer_t;

/* One accepted client connection (sock->on_close.data), for the drain */
typedef struct est_client_conn {
    est_worker_t *w;
    h2o_socket_t *sock;
    h2o_linklist_t link; /* est_worker_t.conns */
    size_t inflight;     /* requests handled and not yet disposed */
    int is_h2;           /* a request came over HTTP/2 (h2o sends GOAWAY; not ours to close) */
    est_conn_peer_t peer; /* see est_conn_peer() */
} est_client_conn_t;

/* the Server header of responses (added by the handler, not by h2o: see setup_h2o) */
#define EST_SERVER_HEADER "estuary/" ESTUARY_VERSION

/*
 * (observe.c) The client's address of `req`: cached in `cc` (formatted on its first request),
 * or formatted into a per-worker scratch slot when the connection is not tracked (cc NULL; the
 * result is then valid until the next call on this thread).
 */
const est_conn_peer_t *est_conn_peer(est_client_conn_t *cc, h2o_req_t *req);

/* One request in flight (in its pool; released by the pool's dispose callback) */
typedef struct est_inflight {
    est_worker_gen_t *wg;
    est_client_conn_t *conn; /* NULL when unknown */
    h2o_req_t *req;
    h2o_linklist_t link; /* est_worker_t.requests */
    est_disposer_t *disposers; /* the handlers' per-request objects (est_alloc_disposable) */
} est_inflight_t;

/* One listening socket of a worker; kept across reloads while its config is unchanged */
typedef struct est_listener {
    h2o_socket_t *sock; /* sock->data is the listener */
    h2o_accept_ctx_t actx; /* ssl_ctx: NULL for a plain listener */
    est_worker_t *w;
    h2o_timeout_entry_t retry; /* (accept.c) accepting paused: out of descriptors */
    uint64_t backoff_ms;
} est_listener_t;

struct est_worker {
    h2o_context_t ctx; /* first: req->conn->ctx leads back to the worker */
    est_server_t *server;
    size_t id;
    pthread_t tid;
    est_listener_t **listeners; /* one per listen entry of the current generation */
    size_t num_listeners;
    est_dns_t *dns;                /* kept across reloads (its cache too) */
    est_worker_gen_t *current;     /* new requests use it */
    h2o_linklist_t old_gens;       /* est_worker_gen_t still used by in-flight requests */
    h2o_multithread_receiver_t reload_rx; /* est_reload_msg_t from main */
    h2o_linklist_t conns;          /* est_client_conn_t */
    h2o_linklist_t requests;       /* est_inflight_t */
    int draining;
    est_gen_t *start_gen;          /* one reference, given by main at start; taken by the worker */
    int *start_fds;                /* listening sockets at start, per listen entry (taken by the worker) */
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
    /* (accept.c) estuary's HTTP/1.1 layer for this worker's connections, and the descriptor
     * number above which accepting pauses */
    est_h1_ctx_t h1;
    int fd_high_water;
    uint64_t accept_logged_at;
};

/*
 * Main -> worker: switch to `gen`. Listener j of the new config is the worker's old listener
 * keep[j] (>= 0), or a new socket on fds[j] (keep[j] == -1). Old listeners not kept are closed.
 */
typedef struct est_reload_msg {
    h2o_multithread_message_t super;
    est_gen_t *gen; /* one reference, taken over by the worker */
    size_t num_listen;
    int *keep;
    int *fds;
} est_reload_msg_t;

struct est_server {
    est_gen_t *gen;       /* the current generation (main's reference); main thread only */
    est_gen_t *first_gen; /* the one the process started with (a reference): workers, admin, access log */
    const est_config_t *start_conf; /* first_gen->conf */
    atomic_size_t cut_requests;     /* requests in flight when shutdown_timeout cut the drain */
    h2o_globalconf_t h2oconf;
    int **listen_fds;       /* [worker][listener] at start, handed over to the workers */
    est_worker_t *workers;
    size_t num_workers;
    atomic_int shutdown;
    pthread_barrier_t ready; /* workers + main: every worker can be woken */
    sem_t finished;          /* posted by each worker when its loop is torn down (or cut) */
    est_admin_t *admin;         /* (observe.c) NULL when no admin listener is configured */
    est_accesslog_t *accesslog; /* (observe.c) NULL when "access_log": "off" */
};

/* (server.c) the worker's h2o_timeout_t of this duration (created on first use, disposed with the worker) */
h2o_timeout_t *est_worker_timeout(est_worker_t *w, uint64_t ms);

/*
 * (accept.c) Accepting connections. est_accept_worker_init once the worker's context exists
 * (before any listener starts), est_accept_configure on each new generation (timeouts, body
 * limit), est_accept_listener_start / _stop around a listener's life.
 */
void est_accept_worker_init(est_worker_t *w, const est_config_t *conf);
void est_accept_configure(est_worker_t *w, const est_config_t *conf);
void est_accept_listener_start(est_worker_t *w, est_listener_t *l);
void est_accept_listener_stop(est_listener_t *l);

/* the request handler (handler.c) */
int est_handler_on_req(h2o_handler_t *self, h2o_req_t *req);
/* (server.c) a request that started on `wg` was disposed (its pool is being freed) */
void est_worker_gen_request_done(est_worker_gen_t *wg);
/* (handler.c) the request id of the HTTP/1.1 layer's own error replies (est_h1_ctx_t.request_id; data: the worker) */
size_t est_handler_error_request_id(void *data, h2o_req_t *req, char *buf);
/* (handler.c) makes the 413 h2o sends itself (body over h2o's limit) SPEC's JSON error */
void est_handler_setup_fallback(h2o_hostconf_t *host);

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
est_reqlog_t *est_observe_request_start(est_worker_t *w, h2o_req_t *req, h2o_iovec_t request_id, const est_conn_peer_t *peer,
                                        est_disposer_t **disposers);
/* (reload) worker thread: the route counters move from `from`'s routes to `to`'s (by path) */
void est_observe_worker_switch(est_worker_t *w, const est_config_t *from, const est_config_t *to);
/* returns the trace handlers fill (est_request_t.trace) */
est_request_trace_t *est_observe_request_matched(est_reqlog_t *rl, const est_route_conf_t *route);

#endif
