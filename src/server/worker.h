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
};

/* the request handler (handler.c) */
int est_handler_on_req(h2o_handler_t *self, h2o_req_t *req);

#endif
