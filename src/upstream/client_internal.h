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

/*
 * --- timer wheel: variable absolute expiries on one fixed-tick h2o_timeout_t (per set) ---
 * A hashed wheel: an entry sits in the slot of its expiry tick (ceil(at / TICK) modulo
 * EST_WHEEL_SLOTS), and each tick looks only at the slots of the ticks that passed, firing the
 * entries that are due and leaving those of later revolutions. An entry is looked at about
 * once per revolution (EST_WHEEL_SLOTS x TICK = 2.56 s) instead of at every tick: with 5,000
 * requests waiting (S4) a tick used to walk all 5,000 deadlines, 200 times a second.
 */

#define EST_WHEEL_TICK_MS 5
#define EST_WHEEL_SLOTS 512 /* a power of 2 */

typedef struct est_wheel_entry est_wheel_entry_t;
typedef void (*est_wheel_cb)(est_wheel_entry_t *e);
struct est_wheel_entry {
    uint64_t at; /* absolute h2o_now() ms */
    est_wheel_cb cb;
    h2o_linklist_t _link;
    est_upstream_set_t *_set; /* while counted in _set->wheel_count (linked in a slot) */
};

void est_wheel_link(est_upstream_set_t *set, est_wheel_entry_t *e, uint64_t at);
void est_wheel_unlink(est_wheel_entry_t *e);

/* --- passive health and retry budget (figures documented in docs/configuration.md) --- */

/* An address is ejected after this many consecutive connect failures (refused, unreachable,
 * connect timeout; not TLS errors, which are configuration rather than liveness) ... */
#define EST_EJECT_AFTER_FAILURES 3
/* ... for EST_EJECT_BASE_MS, doubled at each further ejection, at most EST_EJECT_MAX_MS. When
 * the period is over the address is half-open: one trial attempt at a time; a connection that
 * succeeds re-admits it (the backoff starts over), a failure ejects it again. */
#define EST_EJECT_BASE_MS 1000
#define EST_EJECT_MAX_MS 30000
/* Retry budget (as Envoy's retry_budget): concurrent retries per upstream per worker are
 * capped at EST_RETRY_BUDGET_PERCENT of the live exchanges, but at least EST_RETRY_BUDGET_MIN. */
#define EST_RETRY_BUDGET_PERCENT 20
#define EST_RETRY_BUDGET_MIN 3

typedef struct est_addr_health {
    unsigned fails;         /* consecutive connect failures */
    unsigned ejections;     /* consecutive ejections (the backoff exponent) */
    uint64_t ejected_until; /* absolute h2o_now() ms; 0 = admitted; past = half-open */
    int trial;              /* half-open: the one trial attempt is in flight */
} est_addr_health_t;

/* --- targets --- */

typedef struct est_target {
    const est_target_conf_t *conf;
    est_dns_result_t *res;     /* last answer used (addref'd), NULL before the first */
    unsigned *inflight;        /* per address of `res`, attempts in flight (least_request) */
    est_addr_health_t *health; /* per address of `res`, passive health */
    size_t rr;                 /* round robin over this target's addresses */
    int is_literal;            /* (perf) host is an IP literal: `res` never changes once set */
} est_target_t;

/* --- connections --- */

/* request heads up to this size are built in the connection itself (no malloc) */
#define EST_HEAD_INLINE_SIZE 1024

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
    /*
     * (memory) The request head of the exchange using the connection, when it fits (else
     * est_exchange_t.head_buf is malloc'd). Kept here rather than in the exchange: an exchange
     * exists from the request's arrival and, under load, mostly waits in the pool's queue
     * (4,744 of 5,000 in S4) without a head, while connections are at most
     * pool.max_connections. The bytes stay valid while a write is pending: an exchange that
     * ends with its write pending closes the connection (not pooled) and h2o writes nothing
     * on a closed socket.
     */
    char head_inline[EST_HEAD_INLINE_SIZE];
} est_conn_t;

struct est_upstream {
    est_upstream_set_t *set;
    const est_upstream_conf_t *conf;
    est_target_t *targets;
    size_t rr; /* round robin over targets */
    h2o_timeout_t connect_timeout, response_timeout, idle_timeout;
    SSL_CTX *ssl_ctx; /* NULL without https targets */
    /* the last TLS session per server name, offered on the next handshake (pool.c) */
    struct {
        char *name;
        SSL_SESSION *session;
    } tls_sessions[4];
    h2o_linklist_t idle;    /* est_conn_t.idle_link, oldest first */
    size_t num_idle;
    size_t num_slots;       /* exchanges holding a slot (connection in use or connecting) */
    h2o_linklist_t waiters; /* est_exchange_t._wait_link, FIFO */
    size_t active_requests; /* live exchanges (the retry budget's base) */
    size_t active_retries;  /* live exchanges past their first attempt */
    est_upstream_stats_t stats;
    est_upstream_t *handover; /* (reload) pools released connections there instead; see est_upstream_handover */
    /* (perf) recycled exchanges (est_exchange_t.free_next), at most EST_EXCHANGE_FREELIST_MAX */
    est_exchange_t *free_exchanges;
    size_t num_free_exchanges;
    /* (perf) the last "ip:port" formatted for est_exchange_info, keyed by its address */
    struct sockaddr_storage addr_cache_sa;
    char addr_cache[64];
};

#define EST_EXCHANGE_FREELIST_MAX 64

struct est_upstream_set {
    h2o_loop_t *loop;
    est_dns_t *dns;
    const est_config_t *conf;
    est_upstream_t *upstreams;
    size_t num_upstreams;
    h2o_timeout_t zero_timeout;
    h2o_timeout_t tick_timeout;
    h2o_timeout_entry_t tick_entry;
    h2o_linklist_t wheel[EST_WHEEL_SLOTS]; /* est_wheel_entry_t, by expiry tick */
    uint64_t wheel_tick;                   /* the last tick whose slot was looked at */
    size_t wheel_count;                    /* entries in the slots */
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

/*
 * (memory) An exchange exists from the request's arrival to its end, and under load most of
 * them wait in the pool's queue (S4: ~4,700 of 5,000), so it is kept small (~560 bytes): the
 * request head lives in the connection (est_conn_t.head_inline), the previous attempt's
 * address is x->sa itself until the next pick overwrites it, and the 0/1 flags are bytes.
 */
struct est_exchange {
    est_upstream_t *u;
    const est_upstream_request_t *req;
    est_exchange_cb_t cb;
    void *data;
    est_x_state_t state;
    est_body_mode_t body_mode; /* reply framing */
    est_exchange_info_t info;

    est_conn_t *conn;
    uint64_t backoff_at;  /* absolute, while EST_X_BACKOFF */
    uint64_t connect_start;

    /* target / address of the current attempt; between attempts (and until the next pick)
     * sa is the previous attempt's address, which EST_PICK_RETRY / SAME avoid / reuse */
    size_t target_index;
    size_t addr_index;
    uint64_t addr_generation;
    struct sockaddr_storage sa;
    socklen_t salen;
    unsigned in_cb; /* re-entrancy: inside a user callback */
    est_dns_query_t *dnsq;

    /* request head: head_buf is conn->head_inline, or a malloc'd buffer for a larger head
     * (head_is_heap); it is written once per attempt, when the connection is ready */
    char *head_buf;
    h2o_iovec_t bufs[2];

    /* reply */
    uint64_t body_left;
    struct phr_chunked_decoder chunked;
    size_t held; /* (est_exchange_hold) input bytes delivered, consumed at est_exchange_release */

    /* flags, 0 or 1 (pick_mode: EST_PICK_*) */
    unsigned char has_slot;
    unsigned char force_new_conn;   /* next connection must be a fresh one (after a stale pooled one) */
    unsigned char sent;             /* request bytes handed to a socket in this attempt */
    unsigned char write_pending;    /* h2o_socket_write not completed yet */
    unsigned char got_bytes;        /* response bytes seen in this attempt */
    unsigned char transparent;      /* next attempt is a transparent retry (not counted) */
    unsigned char counted_inflight;
    unsigned char health_trial;     /* this attempt is the half-open trial of its address */
    unsigned char counted_retry;    /* counted in u->active_retries */
    unsigned char pick_mode;        /* EST_PICK_* for the current attempt */
    unsigned char head_is_heap;
    unsigned char address_stale;    /* (perf) info.address not formatted yet for sa (done in est_exchange_info) */
    unsigned char is_head_method;
    unsigned char keepalive;
    unsigned char paused;
    unsigned char hold_requested;   /* (est_exchange_hold) asked during the current on_body */
    unsigned char dead;             /* cancelled / finished while inside a callback; freed when it returns */

    h2o_timeout_entry_t timer;       /* phase: queue wait, connect, response */
    h2o_timeout_entry_t defer_timer; /* zero timeout: start, wake-up, resume */
    est_wheel_entry_t wheel;         /* deadline and backoff */
    h2o_linklist_t _wait_link;
    est_exchange_t *free_next; /* (perf) u->free_exchanges */
};

/* balancer.c: 1 when a and b are the same address and port (NULL is never equal) */
int est_sockaddr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b);

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
enum {
    EST_PICK_FIRST, /* a first attempt: advances the round robin counters */
    EST_PICK_RETRY, /* a retry: prefers another target / address, leaves the counters alone */
    EST_PICK_SAME,  /* a transparent retry after a stale pooled connection: same address */
};
/*
 * Picks the target for the next attempt. FIRST: round robin (u->rr) or least request over the
 * targets that have an admitted address (or are not resolved yet). RETRY: the next such target
 * after `prev_ti` (least request: the least loaded one other than prev_ti) without touching u->rr,
 * so retries do not skew the round robin. SAME: prev_ti. When every target is ejected, all
 * are candidates again (an upstream is never failed only because all of it is ejected).
 */
size_t est_balance_pick_target(est_upstream_t *u, int mode, size_t prev_ti, uint64_t now);
/* Picks an address of target `ti` from its (fresh) answer `res` by the same rules (`avoid`:
 * the previous attempt's address for RETRY / SAME, else NULL; it may be &x->sa, which is read
 * before it is replaced); fills x->sa / x->addr_index and
 * takes the half-open trial of the address when it is one. Returns 0, or -1 when no address
 * can be used (out of memory). */
int est_balance_pick_address(est_exchange_t *x, size_t ti, est_dns_result_t *res, int mode,
                             const struct sockaddr_storage *avoid, uint64_t now);
/* The connect verdict of x's attempt on its address: ok = TCP (and TLS) connection made. */
void est_balance_report(est_exchange_t *x, int ok, uint64_t now);
void est_balance_done(est_exchange_t *x);
void est_target_set_result(est_upstream_t *u, size_t ti, est_dns_result_t *res);
/* Is an address admitted (1) or ejected (0) at `now`? (a half-open one is admitted for one trial) */
int est_health_usable(const est_addr_health_t *h, uint64_t now);
/* Applies one connect verdict to `h`; returns 1 when this ejected the address. */
int est_health_update(est_addr_health_t *h, int ok, uint64_t now);
/* Ejection period after the n-th consecutive ejection (n >= 1). */
uint64_t est_eject_duration_ms(unsigned n);

/* client.c */
/* The wait before attempt n+1 (n >= 1): random in [d/2, d], d = min(max_ms, base_ms * 2^(n-1)). */
uint64_t est_retry_backoff_ms(uint64_t base_ms, uint64_t max_ms, unsigned n, unsigned *seed);
/* May one more retry start, with `active_retries` retries (not counting the asker) among
 * `active_requests` live exchanges? */
int est_retry_budget_allows(size_t active_requests, size_t active_retries);

#endif
