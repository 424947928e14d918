/*
 * estuary - the response cache and coalescing on the request path, shared by the proxy and the
 * aggregating handlers (docs/cache.md "Request path"): the lookup before the backend (fresh hit
 * by reference with Age and Cache-Status, stale-while-revalidate, stale-if-error, bypass),
 * joining an identical in-flight request, answering from an entry, sharing a reply or an error
 * with the waiters, and the estuary_cache_requests_total counts.
 *
 * A handler embeds one est_cache_req_t in its per-request object and calls
 * est_cache_req_begin before going to the backend; what a reply does to the cache (storing,
 * handing it to the waiters) is the handler's, with the helpers below. Every function runs on
 * the request's worker loop. Functions that answer the client (serve, serve_stale_on_error,
 * send_shared_error, and begin when it returns 1) may dispose the request from inside h2o_send:
 * the caller must not touch its request afterwards.
 */
#ifndef EST_CACHE_SERVE_H
#define EST_CACHE_SERVE_H

#include "admin/metrics.h"
#include "cache/coalesce.h"
#include "cache/store.h"
#include "http/request.h"

/* a request's header fields, for est_cache_req_header (pool: where joined values go) */
typedef struct {
    const h2o_headers_t *headers;
    h2o_mem_pool_t *pool;
} est_cache_hdr_src_t;

/* est_cache_header_fn over an est_cache_hdr_src_t (h2o keeps names lower-case); repeated lines joined with ", " */
int est_cache_req_header(void *ctx, const char *name, size_t name_len, const char **value, size_t *value_len);

/* the wall clock in ms since the epoch (the cache's time base) */
int64_t est_cache_wall_ms(void);

typedef struct est_cache_req_t est_cache_req_t;

typedef struct {
    /* go to the backend: a waiter whose leader's reply cannot be shared, or that was promoted
     * (then c->flight is set and this request leads). Required. */
    void (*forward)(est_cache_req_t *c);
    /* starts the one background refresh of `stale` (whose refresh flag the caller won; the
     * callee takes its own reference): 0, or -1 and this request carries the refresh to the
     * backend itself (the others are served stale meanwhile). NULL: always -1. */
    int (*refresh)(est_cache_req_t *c, est_cache_entry_t *stale);
} est_cache_req_ops_t;

/* One request's cache state, zeroed with the handler's object. */
struct est_cache_req_t {
    est_request_t *r;
    const est_cache_req_ops_t *ops;
    void *data;               /* the handler's object */
    est_cache_store_t *store; /* NULL: the route is not cached (coalescing only, or no store) */
    est_cache_route_policy_t pol;
    est_cache_req_facts_t rq;
    est_cache_hdr_src_t hs;
    const char *key; /* the primary key (request pool); NULL: none (bypass, or over EST_CACHE_MAX_KEY) */
    size_t key_len;
    int may_store;                 /* a GET that was looked up or forwarded: its reply may be stored */
    est_cache_status_t cs;         /* Cache-Status of a forwarded reply */
    est_cache_entry_t *stale;      /* a stale entry kept for stale-if-error, or whose refresh this request carries */
    est_cache_entry_t *served;     /* the entry a hit sends by reference (released at dispose) */
    int64_t request_time_ms;       /* when the request went to the backend (set by the handler) */
    est_coalesce_flight_t *flight; /* this request leads a coalescing flight */
    est_coalesce_waiter_t waiter;
    int waiting;    /* linked as a waiter */
    int refreshing; /* carries `stale`'s one refresh (stale-while-revalidate) */
};

/*
 * Before the backend, for a GET/HEAD on a route with `cache` or `coalesce` (the caller checks
 * neither: any request may come): request facts, bypass rules, the key (HEAD looks up the GET
 * entry), the lookup and coalescing. Returns 1 when the request is answered (hit, stale,
 * only-if-cached) or waits on an identical one; 0 to forward it (c->flight set when it leads).
 */
int est_cache_req_begin(est_cache_req_t *c, est_request_t *r, const est_cache_req_ops_t *ops, void *data);
/* the request is disposed: a waiter leaves, a flight is abandoned (the oldest waiter leads), references go */
void est_cache_req_dispose(est_cache_req_t *c);
/* the worker exits: its coalescing table goes (waiters get est_coalesce_err_shutdown) */
void est_cache_req_worker_exit(void);

/* estuary_cache_requests_total{route,result} */
void est_cache_req_count(est_request_t *r, est_cache_result_t result);
/* adds a Cache-Status field to the response */
void est_cache_req_add_status(h2o_req_t *req, const est_cache_status_t *cs);
/* a forwarded reply's head (cached routes only): counts miss / bypass and adds Cache-Status
 * (fwd_status `status`, "stored" when `stored`, else c->cs.detail when set) */
void est_cache_req_forwarded(est_cache_req_t *c, int status, int stored);

/* answers from a frozen entry, which becomes the request's (released at dispose); HEAD gets the head only */
void est_cache_req_serve(est_cache_req_t *c, est_cache_entry_t *e, const est_cache_status_t *cs, int with_age);

/* ends this request's coalescing flight, if it leads one (reply BORROWED, or NULL with errstr) */
void est_cache_req_finish_flight(est_cache_req_t *c, est_cache_entry_t *reply, const char *errstr);
/* "STATUS CODE MESSAGE" in the request pool: how an error estuary built travels to the waiters */
const char *est_cache_req_shared_error(est_cache_req_t *c, int status, const char *code, const char *msg);
/* a new entry was inserted for this request: counted, and a stale entry it refreshed is let go */
void est_cache_req_stored(est_cache_req_t *c);

/* the stale entry may stand in for a failed backend (RFC 5861 4: stale-if-error, counted from expiry) */
int est_cache_req_stale_if_error_ok(const est_cache_req_t *c);
/* answers with the stale entry instead of the backend's failure (`fwd_status`: its status, 0 for
 * none); the waiters get the same entry */
void est_cache_req_serve_stale_on_error(est_cache_req_t *c, int fwd_status);

/*
 * A new entry (one reference, not frozen) for a reply: `key` empty for one only shared with
 * waiters; `rs` the reply's header facts (Vary, Date, Age); `d` the storing decision (NULL when
 * only shared); `content_length` -1 when unknown. NULL when over max_entry, too many header
 * fields, or out of memory.
 */
est_cache_entry_t *est_cache_req_entry_new(const char *key, size_t key_len, int status, const est_cache_field_t *headers,
                                           size_t num_headers, const est_cache_resp_facts_t *rs, est_cache_hdr_src_t *hs,
                                           const est_cache_decision_t *d, size_t max_entry, int64_t content_length,
                                           int64_t request_time_ms, int64_t now_ms);

/* a deep copy of n header fields into pool (names that are not tokens, values): what a
 * detached refresh keeps of the client's request, which it outlives */
h2o_header_t *est_cache_copy_headers(h2o_mem_pool_t *pool, const h2o_header_t *src, size_t n);

/*
 * A background refresh (stale-while-revalidate), detached from the client's request: what both
 * handlers keep of that request (copies in `pool`), the stale entry whose refresh flag it holds,
 * the pinned view, and its place in the worker's list of refreshes (`list`, the handler's
 * thread-local head). The handler's refresh object starts with it.
 */
typedef struct est_cache_refresh_t est_cache_refresh_t;
struct est_cache_refresh_t {
    h2o_mem_pool_t pool; /* the copies: key, header fields, the handler's requests */
    est_services_t *svc; /* pinned from est_cache_refresh_start to est_cache_refresh_free */
    est_cache_store_t *store;
    est_cache_route_policy_t pol;
    est_cache_req_facts_t rq; /* the GET's (a HEAD that found the entry stale refreshes the GET entry) */
    h2o_headers_t headers;    /* the client's request header fields (Vary values) */
    est_cache_hdr_src_t hs;
    char *key;
    size_t key_len;
    est_cache_entry_t *stale;                 /* one reference; its refresh flag is ours */
    int ended;                                /* est_cache_refresh_end ran: only the memory is left */
    h2o_timeout_entry_t free_timer;           /* 0 ms: an exchange reads its request until its callback has returned */
    void (*free_fn)(est_cache_refresh_t *rf); /* frees the handler's object (its own parts, then rf) */
    est_cache_refresh_t **list, *prev, *next;
};

/* rf (zeroed) copies c's key, policy and facts and the client's request header fields */
void est_cache_refresh_init(est_cache_refresh_t *rf, const est_cache_req_t *c, const h2o_headers_t *req_headers,
                            void (*free_fn)(est_cache_refresh_t *));
/* the refresh is under way: a reference to stale, the view pinned, rf at the head of *list */
void est_cache_refresh_start(est_cache_refresh_t *rf, est_cache_refresh_t **list, est_cache_entry_t *stale);
/* it is over: the flag goes back unless stored, the reference goes; the memory goes from a 0 ms timer */
void est_cache_refresh_end(est_cache_refresh_t *rf, int stored);
/* the memory goes now (also before est_cache_refresh_start: then nothing is unlinked or unpinned) */
void est_cache_refresh_free(est_cache_refresh_t *rf);

#endif
