/*
 * estuary - per-worker state. Everything here is owned by one thread and touched only from
 * its loop, except `server` (its fields used by workers are fixed while they run), the
 * receivers other threads send to (wake, reload_rx, stats_rx) and the generations, which are
 * shared read-only and refcounted (gen.h).
 *
 * Only the types every server file needs; each file's API is in its own header: accept.h,
 * handler.h, observe.h, worker_gen.h (a worker's view of a generation), reload.h.
 */
#ifndef EST_SERVER_WORKER_H
#define EST_SERVER_WORKER_H

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <h2o.h>
#include "admin/metrics.h" /* est_worker_metrics_t, est_strbuf_t */
#include "h1/conn.h"       /* est_h1_ctx_t */
#include "h2/guard.h"      /* est_h2_limits_t */

typedef struct est_server est_server_t;
typedef struct est_worker est_worker_t;
typedef struct est_worker_gen est_worker_gen_t; /* worker_gen.h */
typedef struct est_gen est_gen_t;               /* gen.h */
typedef struct est_dns est_dns_t;               /* upstream/dns.h */
typedef struct est_admin est_admin_t;           /* admin/admin.h */
typedef struct est_accesslog est_accesslog_t;   /* admin/accesslog.h */
typedef struct est_disposer est_disposer_t;     /* http/request.h */

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
    h2o_multithread_receiver_t reload_rx; /* est_reload_msg_t from main (reload.h) */
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
    est_h2_limits_t h2_limits; /* HTTP/2 guard limits of the current config (est_accept_configure) */
    int fd_high_water;
    uint64_t accept_logged_at;
};

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
    est_admin_t *admin;         /* (observe.c) NULL until an admin listener is configured (at start or by a reload) */
    est_admin_conf_t admin_at;  /* (main thread) where the admin listener is bound; host NULL: not listening */
    uint64_t reloads_ok, reloads_failed; /* (main thread) for an admin started by a reload */
    est_accesslog_t *accesslog; /* (observe.c) NULL when "access_log": "off" */
};

/* (server.c) the worker's h2o_timeout_t of this duration (created on first use, disposed with the worker) */
h2o_timeout_t *est_worker_timeout(est_worker_t *w, uint64_t ms);

#endif
