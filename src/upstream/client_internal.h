/*
 * estuary - private structures shared by client.c (exchanges, HTTP/1.1), pool.c (connections,
 * idle list, wait queue, TLS) and balancer.c (target x address selection).
 *
 * Nothing here is part of the API; only the upstream sources and their unit tests include it.
 */
#ifndef EST_UPSTREAM_CLIENT_INTERNAL_H
#define EST_UPSTREAM_CLIENT_INTERNAL_H

#include <openssl/ssl.h>
#include "upstream/client.h"

/* --- timer wheel: variable absolute expiries on one fixed-tick h2o_timeout_t (per set) --- */

#define EST_WHEEL_TICK_MS 5

typedef struct est_wheel_entry est_wheel_entry_t;
typedef void (*est_wheel_cb)(est_wheel_entry_t *e);
struct est_wheel_entry {
    uint64_t at; /* absolute h2o_now() ms */
    est_wheel_cb cb;
    h2o_linklist_t _link;
};

void est_wheel_link(est_upstream_set_t *set, est_wheel_entry_t *e, uint64_t at);
void est_wheel_unlink(est_wheel_entry_t *e);

/* --- targets --- */

typedef struct est_target {
    const est_target_conf_t *conf;
    est_dns_result_t *res; /* last answer used (addref'd), NULL before the first */
    unsigned *inflight;    /* per address of `res`, attempts in flight (least_request) */
    size_t rr;             /* round robin over this target's addresses */
} est_target_t;

/* --- connections --- */

typedef enum { EST_CONN_CONNECTING, EST_CONN_ACTIVE, EST_CONN_IDLE } est_conn_state_t;

typedef struct est_conn {
    est_upstream_t *u;
    h2o_socket_t *sock;
    est_conn_state_t state;
    size_t target_index;
    struct sockaddr_storage sa;
    socklen_t salen;
    unsigned requests; /* requests completed on it */
    est_exchange_t *x; /* while CONNECTING / ACTIVE */
    h2o_linklist_t idle_link;
    h2o_timeout_entry_t idle_timer;
} est_conn_t;

struct est_upstream {
    est_upstream_set_t *set;
    const est_upstream_conf_t *conf;
    est_target_t *targets;
    size_t rr; /* round robin over targets */
    h2o_timeout_t connect_timeout, response_timeout, idle_timeout;
    SSL_CTX *ssl_ctx; /* NULL without https targets */
    h2o_linklist_t idle;    /* est_conn_t.idle_link, oldest first */
    size_t num_idle;
    size_t num_slots;       /* exchanges holding a slot (connection in use or connecting) */
    h2o_linklist_t waiters; /* est_exchange_t._wait_link, FIFO */
    est_upstream_stats_t stats;
};

struct est_upstream_set {
    h2o_loop_t *loop;
    est_dns_t *dns;
    const est_config_t *conf;
    est_upstream_t *upstreams;
    size_t num_upstreams;
    h2o_timeout_t zero_timeout;
    h2o_timeout_t tick_timeout;
    h2o_timeout_entry_t tick_entry;
    h2o_linklist_t wheel; /* est_wheel_entry_t */
    unsigned seed;        /* backoff jitter (rand_r) */
};

/* --- exchanges --- */

typedef enum {
    EST_X_DEFERRED,   /* waiting for the start / a wake-up on the zero timer */
    EST_X_RESOLVING,  /* DNS query running */
    EST_X_QUEUED,     /* waiting for a pool slot */
    EST_X_CONNECTING, /* TCP connect or TLS handshake */
    EST_X_HEAD,       /* request written (or being written), waiting for the head */
    EST_X_BODY,       /* head delivered, reading the body */
    EST_X_UPGRADED,   /* 101 delivered, waiting for est_exchange_steal_socket */
    EST_X_BACKOFF,    /* waiting before the next attempt */
    EST_X_DONE,
} est_x_state_t;

typedef enum { EST_BODY_NONE, EST_BODY_LENGTH, EST_BODY_CHUNKED, EST_BODY_CLOSE } est_body_mode_t;

struct est_exchange {
    est_upstream_t *u;
    const est_upstream_request_t *req;
    est_exchange_cb_t cb;
    void *data;
    est_x_state_t state;
    est_exchange_info_t info;

    est_conn_t *conn;
    int has_slot;
    int force_new_conn;   /* next connection must be a fresh one (after a stale pooled one) */
    int sent;             /* request bytes handed to a socket in this attempt */
    int write_pending;    /* h2o_socket_write not completed yet */
    int got_bytes;        /* response bytes seen in this attempt */
    int transparent;      /* next attempt is a transparent retry (not counted) */
    uint64_t backoff_at;  /* absolute, while EST_X_BACKOFF */
    uint64_t connect_start;

    /* target / address of the current attempt */
    size_t target_index;
    size_t addr_index;
    uint64_t addr_generation;
    int counted_inflight;
    struct sockaddr_storage sa;
    socklen_t salen;
    est_dns_query_t *dnsq;

    /* request head */
    char *head_buf;
    h2o_iovec_t bufs[2];

    /* reply */
    int is_head_method;
    est_body_mode_t body_mode;
    uint64_t body_left;
    struct phr_chunked_decoder chunked;
    int keepalive;
    int paused;

    /* re-entrancy */
    unsigned in_cb;
    int dead; /* cancelled / finished while inside a callback; freed when it returns */

    h2o_timeout_entry_t timer;       /* phase: queue wait, connect, response */
    h2o_timeout_entry_t defer_timer; /* zero timeout: start, wake-up, resume */
    est_wheel_entry_t wheel;         /* deadline and backoff */
    h2o_linklist_t _wait_link;
};

/* pool.c */
int est_pool_init_upstream(est_upstream_t *u, char **err);
void est_pool_dispose_upstream(est_upstream_t *u);
/* Gets a connection for x->sa: a matching idle one, or a new one (connect started), or queues x.
 * Returns 0 when x has a connection (x->conn set, state CONNECTING or ACTIVE), 1 when queued,
 * -1 on an immediate connect failure (x->conn NULL, slot kept). */
int est_pool_acquire(est_exchange_t *x);
/* Gives the connection back after a complete reply: pooled if `reusable`, else closed. */
void est_pool_release(est_exchange_t *x, int reusable);
/* Drops the exchange's pool slot (and wakes the first waiter). */
void est_pool_release_slot(est_exchange_t *x);
void est_pool_dequeue(est_exchange_t *x);
void est_pool_close_conn(est_conn_t *c);
/* Closes idle connections of target `ti` whose address is not in `res` */
void est_pool_purge_target(est_upstream_t *u, size_t ti, const est_dns_result_t *res);
void est_conn_on_connected(est_conn_t *c, const char *err, int tls_stage); /* client.c */
void est_exchange_wake(est_exchange_t *x);                 /* client.c: a waiter got a slot */
void est_exchange_queue_timeout(est_exchange_t *x);        /* client.c */

/* balancer.c */
/* Picks the target for the next attempt (round robin or least request). */
size_t est_balance_pick_target(est_upstream_t *u, const struct sockaddr_storage *avoid);
/* Picks an address of target `ti` from its (fresh) answer `res`; fills x->sa / x->addr_index.
 * Returns 0, or -1 when no address can be used (out of memory). */
int est_balance_pick_address(est_exchange_t *x, size_t ti, est_dns_result_t *res, const struct sockaddr_storage *avoid,
                             socklen_t avoidlen);
void est_balance_done(est_exchange_t *x);
void est_target_set_result(est_upstream_t *u, size_t ti, est_dns_result_t *res);

#endif
