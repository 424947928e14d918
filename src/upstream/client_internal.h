/*
 * estuary - private structures of the upstream client below the exchange: the set and its
 * upstreams (upstream.c), targets and picks (balancer.c), connections and pool requests
 * (pool.c), drains (drain.c). The exchange itself is in exchange_internal.h, which pool.c,
 * balancer.c and drain.c do not include: they hand out connections and indices, and call
 * back only through est_pool_req_t.
 *
 * Nothing here is part of the API; only the upstream sources and their unit tests include it.
 */
#ifndef EST_UPSTREAM_CLIENT_INTERNAL_H
#define EST_UPSTREAM_CLIENT_INTERNAL_H

#include <openssl/ssl.h>
#include "common/sockaddr.h"
#include "common/wheel.h"
#include "upstream/client.h"
#include "upstream/h1wire.h"
#include "upstream/retry.h"

/* --- passive health (figures documented in docs/configuration.md; the retry budget is in retry.h) --- */

/* An address is ejected after this many consecutive connect failures (refused, unreachable,
 * connect timeout; not TLS errors, which are configuration rather than liveness) ... */
#define EST_EJECT_AFTER_FAILURES 3
/* ... for EST_EJECT_BASE_MS, doubled at each further ejection, at most EST_EJECT_MAX_MS. When
 * the period is over the address is half-open: one trial attempt at a time; a connection that
 * succeeds re-admits it (the backoff starts over), a failure ejects it again. */
#define EST_EJECT_BASE_MS 1000
#define EST_EJECT_MAX_MS 30000

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

/* --- one attempt's target x address (balancer.c) --- */

typedef struct est_pick {
    size_t target_index;
    size_t addr_index;        /* in the target's answer of generation addr_generation */
    uint64_t addr_generation;
    struct sockaddr_storage sa; /* the address with the target's port */
    socklen_t salen;
    unsigned char counted_inflight; /* counted in the target's inflight[addr_index] */
    unsigned char health_trial;     /* the half-open trial of its address */
} est_pick_t;

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
    struct est_pool_req *req; /* its user while CONNECTING / ACTIVE */
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
    /* (drain.c) reading the rest of a cancelled exchange's reply, to pool the connection */
    h2o_linklist_t drain_link;    /* in u->draining */
    h2o_timeout_entry_t drain_timer; /* response_timeout for the whole drain */
    h2o_timeout_entry_t drain_defer; /* zero timeout: the first look at the bytes already read */
    est_h1_body_t drain_body;
    uint64_t drain_bytes;         /* body bytes discarded so far */
    size_t drain_skip;            /* input bytes to consume before reading on */
    unsigned char drain_head;     /* the head is still to be read */
    unsigned char drain_is_head;  /* the request was HEAD */
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
    h2o_linklist_t waiters; /* est_pool_req_t._wait_link, FIFO */
    h2o_linklist_t draining; /* est_conn_t.drain_link: connections reading a cancelled reply (drain.c) */
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
    struct est_hedge_state *hedge; /* (hedging) allocated when conf->hedge is set */
};

#define EST_EXCHANGE_FREELIST_MAX 64

/* --- hedging (hedge.c; docs/upstream.md "Hedging") --- */

/* the budget's window: EST_HEDGE_WINDOW_BUCKETS buckets of EST_HEDGE_BUCKET_MS (10 s) */
#define EST_HEDGE_WINDOW_BUCKETS 10
#define EST_HEDGE_BUCKET_MS 1000
/* "delay": "auto": the p95 of the last EST_HEDGE_SAMPLES times to first byte of first
 * attempts; no hedge before EST_HEDGE_MIN_SAMPLES of them were seen */
#define EST_HEDGE_SAMPLES 64
#define EST_HEDGE_MIN_SAMPLES 20

typedef struct est_hedge_state {
    uint32_t first[EST_HEDGE_WINDOW_BUCKETS];  /* first attempts per bucket */
    uint32_t hedges[EST_HEDGE_WINDOW_BUCKETS]; /* hedges sent per bucket */
    uint64_t bucket;                           /* index (now / EST_HEDGE_BUCKET_MS) of the newest bucket */
    uint32_t ttfb[EST_HEDGE_SAMPLES];          /* ms, a ring */
    size_t num_ttfb, ttfb_pos, since_p95;
    uint64_t p95;                              /* cached, recomputed every few samples */
} est_hedge_state_t;

struct est_upstream_set {
    h2o_loop_t *loop;
    est_dns_t *dns;
    const est_config_t *conf;
    est_upstream_t *upstreams;
    size_t num_upstreams;
    h2o_timeout_t zero_timeout;
    est_wheel_t wheel; /* request deadlines and retry backoffs */
    unsigned seed;        /* backoff jitter (rand_r) */
};

/* pool.c */
int est_pool_init_upstream(est_upstream_t *u, char **err);
void est_pool_dispose_upstream(est_upstream_t *u);

/*
 * A request for a connection (as h2o's socketpool: est_pool_connect / est_pool_cancel_connect),
 * embedded in its user. It holds one of the upstream's pool.max_connections slots from the
 * moment it gets one until est_pool_release.
 */
typedef struct est_pool_req est_pool_req_t;
struct est_pool_req {
    /* set by the user before est_pool_connect */
    size_t target_index;
    const struct sockaddr_storage *sa; /* the address (with port) to reach; read during the call */
    socklen_t salen;
    unsigned char force_new;          /* a fresh connection, not a pooled one (reset once used) */
    void (*on_slot)(est_pool_req_t *req); /* a queued request got a slot: call est_pool_connect again */
    /* a new connection is made (conn ACTIVE) or failed (err; tls_stage: in the TLS handshake) */
    void (*on_connect)(est_pool_req_t *req, const char *err, int tls_stage);
    /* set by the pool */
    est_conn_t *conn;
    unsigned char reused; /* conn came from the idle pool */
    unsigned char _has_slot;
    h2o_linklist_t _wait_link;
};

/*
 * Gets a connection for req->sa: a matching idle one (returns 0, req->conn ACTIVE), a new one
 * (returns 0, req->conn CONNECTING, on_connect follows), or queues the request when every slot
 * is taken (returns 1, on_slot follows). -1: cannot connect now (req->conn NULL, slot kept).
 */
int est_pool_connect(est_upstream_t *u, est_pool_req_t *req);
/* Leaves the wait queue (no on_slot follows); the slot, if held, is kept. */
void est_pool_cancel_connect(est_upstream_t *u, est_pool_req_t *req);
/* Ends the request: its connection back (pooled if `reusable` and the pool's rules allow, else
 * closed; a CONNECTING one is closed), its slot back (to the first waiter), out of the queue. */
void est_pool_release(est_upstream_t *u, est_pool_req_t *req, int reusable);
/* Gives one slot of `u` back: to the first waiter, or to the pool. */
void est_pool_slot_put(est_upstream_t *u);
/* Gives an ACTIVE connection back after a reply: pooled if `reusable` (and the pool's rules
 * allow), else closed. No slot is touched. */
void est_pool_put_conn(est_conn_t *c, int reusable);
void est_pool_close_conn(est_conn_t *c);
/* Closes idle connections of target `ti` whose address is not in `res` */
void est_pool_purge_target(est_upstream_t *u, size_t ti, const est_dns_result_t *res);

/* drain.c */
/* Bound of a drain: at most this many body bytes are read and discarded, within response_timeout */
#define EST_DRAIN_MAX_BODY (64 * 1024)
/*
 * Takes an ACTIVE connection whose request was written whole and whose exchange is gone
 * (cancelled), together with one slot of its upstream: reads the rest of the reply in the
 * background and discards it, then pools the connection and gives the slot back; closes it
 * when the reply is invalid, not keep-alive, longer than EST_DRAIN_MAX_BODY or slower than
 * response_timeout. `body`: the reply's body decoder when the head was read, NULL to read the
 * head first (`is_head_method`: the request was HEAD). The first `skip` input bytes were
 * decoded already (they are consumed from the loop: the caller may still be reading them).
 */
void est_drain_start(est_conn_t *c, const est_h1_body_t *body, int is_head_method, size_t skip);
/* Stops a drain (est_pool_close_conn calls it); the slot is not given back. */
void est_drain_dispose(est_conn_t *c);

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
 * the previous attempt's address for RETRY / SAME, else NULL; it may be &p->sa, which is read
 * before it is replaced); fills `p` (indices and address), counts it in flight and takes the
 * half-open trial of the address when it is one. Returns 0, or -1 when no address can be used
 * (out of memory). */
int est_balance_pick_address(est_upstream_t *u, est_pick_t *p, size_t ti, est_dns_result_t *res, int mode,
                             const struct sockaddr_storage *avoid, uint64_t now);
/* The connect verdict of the attempt on p's address: ok = TCP (and TLS) connection made. */
void est_balance_report(est_upstream_t *u, est_pick_t *p, int ok, uint64_t now);
/* The attempt on p is over: no longer in flight, its half-open trial (if any) given back. */
void est_balance_done(est_upstream_t *u, est_pick_t *p);
void est_target_set_result(est_upstream_t *u, size_t ti, est_dns_result_t *res);
/* Is an address admitted (1) or ejected (0) at `now`? (a half-open one is admitted for one trial) */
int est_health_usable(const est_addr_health_t *h, uint64_t now);
/* Applies one connect verdict to `h`; returns 1 when this ejected the address. */
int est_health_update(est_addr_health_t *h, int ok, uint64_t now);
/* Ejection period after the n-th consecutive ejection (n >= 1). */
uint64_t est_eject_duration_ms(unsigned n);


#endif
