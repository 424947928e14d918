/*
 * estuary - metrics: per-worker counters, snapshots, Prometheus text rendering.
 *
 * Each worker owns an est_worker_metrics_t and bumps plain uint64 fields on its own loop
 * (no locks, no atomics). The upstream and DNS counters live in the worker's upstream set
 * and resolver (est_upstream_get_stats, est_dns_get_stats). To read them, the admin thread
 * sends each worker an est_stats_msg_t (h2o_multithread); the worker copies everything into
 * the message's snapshot on its own loop (est_metrics_snapshot_fill) and sends it back, so
 * the only cross-thread hand-off is the message queue's mutex. The admin thread then sums
 * the snapshots (est_metrics_render).
 */
#ifndef EST_ADMIN_METRICS_H
#define EST_ADMIN_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <h2o.h>
#include "config/config.h"
#include "upstream/client.h"
#include "upstream/dns.h"
#include "admin/strbuf.h"

/* estuary_request_duration_seconds upper bounds (the +Inf bucket is implicit) */
#define EST_METRICS_NUM_BUCKETS 12
extern const double est_metrics_buckets[EST_METRICS_NUM_BUCKETS];

/* method label index: est_method_from_name's bit position, or EST_METRICS_METHOD_OTHER */
#define EST_METRICS_METHOD_OTHER EST_METHOD__COUNT
#define EST_METRICS_NUM_METHODS (EST_METHOD__COUNT + 1)

typedef struct est_status_count {
    uint16_t status;
    uint8_t method; /* label index */
    uint64_t count;
} est_status_count_t;

/*
 * Why a route's policy refused a request (estuary_auth_rejected_total{route,reason}): the
 * JWT reasons are est_jwt_strerror()'s tokens (policy/jwt.h), in the same order.
 */
typedef enum est_auth_reason {
    EST_AUTH_REASON_MISSING = 0,      /* no credentials at all (401 realm="estuary") */
    EST_AUTH_REASON_MALFORMED,        /* EST_JWT_MALFORMED ... */
    EST_AUTH_REASON_TOO_LARGE,
    EST_AUTH_REASON_ALG_NOT_ALLOWED,
    EST_AUTH_REASON_CRIT_UNSUPPORTED,
    EST_AUTH_REASON_UNKNOWN_KID,
    EST_AUTH_REASON_KEY_MISMATCH,
    EST_AUTH_REASON_BAD_SIGNATURE,
    EST_AUTH_REASON_EXPIRED,
    EST_AUTH_REASON_NOT_YET_VALID,
    EST_AUTH_REASON_BAD_ISSUER,
    EST_AUTH_REASON_BAD_AUDIENCE,
    EST_AUTH_REASON_BAD_CLAIMS,       /* ... EST_JWT_BAD_CLAIMS */
    EST_AUTH_REASON_INVALID_API_KEY,  /* an API key not in the policy's file */
    EST_AUTH_REASON_INSUFFICIENT_SCOPE, /* 403: valid token without a required scope */
    EST_AUTH_REASON_NO_KEYS,          /* the policy has no usable key set (JWKS never fetched) */
    EST_AUTH_REASON_INTERNAL,
    EST_AUTH_REASON__COUNT
} est_auth_reason_t;
const char *est_auth_reason_label(est_auth_reason_t r);

/* estuary_redis_requests_total{result} */
typedef enum est_redis_result {
    EST_REDIS_RESULT_OK = 0,    /* answered */
    EST_REDIS_RESULT_ERROR,     /* connection refused/lost, or an error reply */
    EST_REDIS_RESULT_TIMEOUT,   /* no answer within redis.timeout */
    EST_REDIS_RESULT__COUNT
} est_redis_result_t;
const char *est_redis_result_label(est_redis_result_t r);

/* estuary_cache_requests_total{route,result}: what the response cache did for a request (docs/cache.md) */
typedef enum est_cache_result {
    EST_CACHE_RESULT_HIT = 0,    /* answered from a fresh entry */
    EST_CACHE_RESULT_STALE,      /* answered from a stale entry (stale-while-revalidate) */
    EST_CACHE_RESULT_ERROR_STALE, /* the backend failed: answered from a stale entry (stale-if-error) */
    EST_CACHE_RESULT_COLLAPSED,  /* answered with an identical in-flight request's reply (coalescing) */
    EST_CACHE_RESULT_MISS,       /* forwarded: nothing usable stored */
    EST_CACHE_RESULT_BYPASS,     /* forwarded without using the cache (method, Authorization, no-store, ...) */
    EST_CACHE_RESULT_STORED,     /* a forwarded reply went into the store (also counted as miss) */
    EST_CACHE_RESULT__COUNT
} est_cache_result_t;
const char *est_cache_result_label(est_cache_result_t r);

typedef struct est_route_metrics {
    est_status_count_t *counts; /* by (method, status), in first-seen order */
    size_t num_counts, cap_counts;
    uint64_t buckets[EST_METRICS_NUM_BUCKETS + 1]; /* per bucket (not cumulative); last = +Inf */
    uint64_t duration_count;
    double duration_sum; /* seconds */
    uint64_t auth_rejected[EST_AUTH_REASON__COUNT]; /* policy refusals (401/403) by reason */
    uint64_t rate_limited;                          /* 429s */
    uint64_t cache[EST_CACHE_RESULT__COUNT];        /* response cache results */
} est_route_metrics_t;

/*
 * Why estuary closed a client connection (estuary_client_connections_closed_total{reason}):
 * SPEC "Request framing", "HTTP/2 protections" and "Client limits". Closes by the client, or
 * after a normal end (Connection: close, HTTP/1.0), are not counted.
 */
typedef enum est_close_reason {
    EST_CLOSE_BAD_REQUEST = 0,   /* HTTP/1.1 framing error: 400/501/505 then close */
    EST_CLOSE_HEADERS_TOO_LARGE, /* 414 / 431 then close */
    EST_CLOSE_HEADER_TIMEOUT,    /* client_header_timeout (HTTP/1.1 head, HTTP/2 header block) */
    EST_CLOSE_BODY_TIMEOUT,      /* client_body_timeout */
    EST_CLOSE_SEND_TIMEOUT,      /* client_send_timeout */
    EST_CLOSE_IDLE_TIMEOUT,      /* client_idle_timeout */
    EST_CLOSE_BODY_TOO_LARGE,    /* 413 (HTTP/1.1) or the HTTP/2 connection's body budget */
    EST_CLOSE_H2_RAPID_RESET,    /* streams reset by the client beyond the allowance */
    EST_CLOSE_H2_FLOOD,          /* PING/SETTINGS/WINDOW_UPDATE/empty frames beyond the allowance */
    EST_CLOSE_H2_HEADER_BLOCK,   /* header block over 64 KiB on the wire or decoded (HPACK bomb) */
    EST_CLOSE_H2_COMPRESSION,    /* HPACK error, table size update above the advertised size */
    EST_CLOSE_H2_PROTOCOL,       /* other HTTP/2 protocol errors the guard detects */
    EST_CLOSE_H2_STREAMS,        /* streams beyond SETTINGS_MAX_CONCURRENT_STREAMS */
    EST_CLOSE__COUNT
} est_close_reason_t;

/* the reason label ("bad_request", "header_timeout", ...) */
const char *est_close_reason_label(est_close_reason_t r);

typedef struct est_conn_counters {
    uint64_t closed[EST_CLOSE__COUNT];
    uint64_t accept_paused; /* accept backed off because descriptors ran out (EMFILE/ENFILE) */
    uint64_t redis[EST_REDIS_RESULT__COUNT]; /* rate-limit round trips to Redis, by result */
    /* (SPEC "Tracing") spans the worker's exporter dropped (queue full, failed export) / delivered */
    uint64_t spans_dropped, spans_exported;
} est_conn_counters_t;

/* Owned by one worker, touched only from its loop */
typedef struct est_worker_metrics {
    est_route_metrics_t *routes; /* num_routes + 1: the last counts requests that matched no route */
    size_t num_routes;
    est_conn_counters_t conns;
} est_worker_metrics_t;

void est_worker_metrics_init(est_worker_metrics_t *m, size_t num_routes);
void est_worker_metrics_dispose(est_worker_metrics_t *m);
/*
 * Counts one finished request: `route_index` (SIZE_MAX for none), the client's method as
 * sent, the status sent (0 when none was), the duration in seconds.
 */
void est_worker_metrics_record(est_worker_metrics_t *m, size_t route_index, const char *method, size_t method_len, int status,
                               double seconds);
/* the method label for a label index ("GET", ..., "OTHER") */
const char *est_metrics_method_label(unsigned idx);

/* One upstream address as a worker sees it (the console's health column; passive health is per worker) */
#define EST_METRICS_MAX_ADDRS 64 /* per upstream and worker; more are counted in addrs_dropped */
typedef struct est_metrics_addr {
    char addr[64];           /* "192.0.2.1:8080", "[2001:db8::1]:443" */
    uint32_t target;         /* index in the upstream's targets */
    uint32_t fails;          /* consecutive connect failures */
    uint8_t ejected;         /* ejected now */
    uint8_t half_open;       /* ejection over: admitted for one trial attempt */
    uint64_t ejected_for_ms; /* while ejected: time left */
} est_metrics_addr_t;

typedef struct est_metrics_upstream_state {
    est_metrics_addr_t *addrs; /* malloc'd */
    size_t num_addrs, addrs_dropped;
    uint64_t waiting; /* requests queued for a connection slot now */
} est_metrics_upstream_state_t;

/* One name in a worker's DNS cache (the console only) */
#define EST_METRICS_MAX_DNS 32 /* names per worker, most recently used first */
typedef struct est_metrics_dns_entry {
    char name[256];
    char addrs[200];      /* numeric addresses, space-separated ("..." when more did not fit) */
    uint64_t ttl_left_ms; /* 0 once expired */
    uint8_t has_answer, stale;
    uint8_t failure;      /* est_dns_status_t cached now (EST_DNS_OK: none) */
} est_metrics_dns_entry_t;

/* A self-contained copy of one worker's counters (names copied, so it outlives a reload) */
typedef struct est_metrics_snapshot {
    int filled;          /* 0: the worker did not answer (missing) */
    size_t num_routes;   /* routes[num_routes] is the "no route" entry */
    char **route_names;  /* num_routes, malloc'd */
    est_route_metrics_t *routes;
    size_t num_upstreams;
    char **upstream_names;
    est_upstream_stats_t *upstreams;
    est_metrics_upstream_state_t *upstream_states; /* num_upstreams: addresses and queue (the console only) */
    est_dns_stats_t dns;
    est_metrics_dns_entry_t *dns_entries; /* malloc'd, num_dns_entries (the console only) */
    size_t num_dns_entries;
    uint64_t open_connections;
    est_conn_counters_t conns;
} est_metrics_snapshot_t;

/* Worker side: copies the worker's counters into `snap` (on its own loop); upstreams/dns may be NULL early on. */
void est_metrics_snapshot_fill(est_metrics_snapshot_t *snap, const est_worker_metrics_t *m, const est_config_t *conf,
                               est_upstream_set_t *upstreams, est_dns_t *dns, uint64_t open_connections);
void est_metrics_snapshot_dispose(est_metrics_snapshot_t *snap);

/* Process-wide values, read by the admin thread */
typedef struct est_process_metrics {
    size_t workers;          /* configured worker threads */
    size_t workers_missing;  /* did not answer this scrape */
    uint64_t config_generation;
    uint64_t reloads_ok, reloads_failed;
    int ready, draining;
    double start_time;       /* unix seconds */
} est_process_metrics_t;

/* d += s, counter by counter (merging the workers' snapshots: /metrics and the console) */
void est_upstream_stats_add(est_upstream_stats_t *d, const est_upstream_stats_t *s);
/* Sums `n` snapshots (missing ones skipped) and appends Prometheus text (format 0.0.4). */
void est_metrics_render(est_strbuf_t *out, const est_metrics_snapshot_t *snaps, size_t n, const est_process_metrics_t *proc);

/* Appends `s` as a Prometheus label value: \ " and newline escaped */
void est_metrics_append_label_value(est_strbuf_t *out, const char *s);

/* The snapshot request/reply travelling between the admin thread and a worker */
typedef struct est_stats_msg {
    h2o_multithread_message_t super;
    h2o_multithread_receiver_t *reply_to; /* the admin thread's receiver */
    void *scrape;                         /* admin-side state, opaque to the worker */
    size_t worker;
    est_metrics_snapshot_t snap;          /* filled by the worker */
} est_stats_msg_t;

/*
 * Worker side of the snapshot protocol: the multithread receiver callback. For each
 * message, `fill(data, &msg->snap)` is called and the message is sent back to reply_to.
 */
void est_metrics_answer_messages(h2o_linklist_t *messages, void (*fill)(void *data, est_metrics_snapshot_t *snap), void *data);

#endif
