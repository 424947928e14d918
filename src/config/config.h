/*
 * estuary - the configuration, as one immutable, validated structure.
 *
 * est_config_load() parses the JSON file (jansson) and validates the whole schema of
 * shared/SPEC.md. The result is never modified after load: workers read it without locks,
 * and a reload (SIGHUP) builds a new one and swaps it. Every string and array below is
 * owned by the est_config_t and freed by est_config_free().
 *
 * Durations are in milliseconds, sizes in bytes. Defaults from SPEC.md are filled in, so
 * consumers never see "unset".
 */
#ifndef EST_CONFIG_CONFIG_H
#define EST_CONFIG_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "common/method.h"

/* HTTP methods, as a bit set (common/method.h: EST_METHOD_*, est_method_name, est_method_from_request) */
/* bit for a method name in the config (case-insensitive), 0 if unknown */
unsigned est_method_from_name(const char *name, size_t len);

/* retry.on conditions (the statuses are kept separately) */
enum {
    EST_RETRY_ON_CONNECT_FAILURE = 1 << 0,
    EST_RETRY_ON_RESET = 1 << 1,
    EST_RETRY_ON_TIMEOUT = 1 << 2,
};

typedef enum { EST_BALANCE_ROUND_ROBIN = 0, EST_BALANCE_LEAST_REQUEST } est_balance_t;

typedef struct est_listen_conf {
    char *host;
    uint16_t port;
    int tls;                /* 1 when "tls" is present */
    char *certificate_file; /* resolved against the config file's folder; NULL without tls */
    char *key_file;
    /* SPEC "Access control and traffic policy", TLS listeners (server/gen.c builds the SSL_CTX) */
    int tls_min_version; /* "tls.min_version": TLS1_2_VERSION or TLS1_3_VERSION; 0 (absent) means TLS 1.2 */
    char *tls_ciphers;   /* "tls.ciphers" (OpenSSL list for TLS 1.2), NULL: forward-secret AEAD only */
    char *ocsp_file;     /* "tls.ocsp_file" (DER OCSP response, stapled), resolved; NULL when absent */
} est_listen_conf_t;

typedef struct est_dns_conf {
    char **servers; /* "IP" or "IP:PORT" or "[IPv6]:PORT"; num_servers == 0 -> system resolv.conf */
    size_t num_servers;
    uint64_t min_ttl_ms, max_ttl_ms, negative_ttl_ms, stale_ttl_ms, timeout_ms;
    unsigned attempts;
} est_dns_conf_t;

typedef struct est_target_conf {
    char *url;       /* as written */
    int is_tls;      /* https:// */
    char *host;      /* name or IP literal, without brackets */
    uint16_t port;   /* explicit or scheme default */
    char *authority; /* value for the Host header: host[:port], port omitted when default, IPv6 bracketed */
    int is_ip_literal;
} est_target_conf_t;

/* SPEC "Caching, coalescing and hedging": an upstream's "hedge" */
typedef struct est_hedge_conf {
    int delay_auto;        /* "delay": "auto": the upstream's recent p95 time to first byte (>= 1 ms) */
    uint64_t delay_ms;     /* a fixed "delay" (delay_auto 0) */
    unsigned max;          /* extra attempts at most; default 1 */
    unsigned budget_permille; /* hedges at most this share of first attempts over 10 s ("10%" -> 100) */
} est_hedge_conf_t;

typedef struct est_upstream_conf {
    char *name;
    size_t index; /* position in est_config_t.upstreams */
    est_target_conf_t *targets;
    size_t num_targets;
    est_balance_t balance;
    uint64_t connect_timeout_ms, response_timeout_ms;
    struct {
        size_t max_connections, max_idle, max_requests;
        uint64_t idle_timeout_ms;
    } pool;
    struct {
        unsigned attempts; /* every attempt, the first included; 1 = no retry */
        uint64_t backoff_ms, max_backoff_ms;
        unsigned on;        /* EST_RETRY_ON_* bits */
        int *statuses;      /* HTTP statuses that are retried ("502", ...) */
        size_t num_statuses;
    } retry;
    struct {
        int verify;        /* default 1 */
        char *ca_file;     /* resolved path, or NULL for the system store */
        char *server_name; /* SNI and name checked; NULL -> the target's host */
    } tls;
    est_hedge_conf_t *hedge; /* owned; NULL: no hedging */
} est_upstream_conf_t;

typedef struct est_mapping_conf {
    char *from, *to;
} est_mapping_conf_t;

typedef struct est_header_tpl_conf {
    char *name;  /* lower-case */
    char *value; /* template text, as written */
} est_header_tpl_conf_t;

typedef struct est_backend_conf {
    char *upstream_name;
    est_upstream_conf_t *upstream; /* resolved, never NULL after a successful load */
    char *path;                    /* template: literal text with {param} / {rest...}; NULL on a proxy
                                    * route without "path": forward the client's path as it came */
    char *group;                   /* NULL when absent */
    char *target;                  /* dot path, NULL when absent */
    char **allow;                  /* dot paths; NULL/0 when absent */
    size_t num_allow;
    char **deny;
    size_t num_deny;
    est_mapping_conf_t *mapping; /* in file order */
    size_t num_mapping;
    char *timing_name; /* Server-Timing name: group, else upstream; "#2", "#3" appended on a clash */
    /* (dependent backends, SPEC "Dependent backends") extra request headers of this backend:
     * name lower-case, value a template that may hold {param} and {GROUP.dot.path} */
    est_header_tpl_conf_t *headers;
    size_t num_headers;
    /* indexes (in the route's backends, all lower than this backend's) of the backends whose
     * group this backend's path or headers name; sorted, unique; 0: starts at once */
    size_t *deps;
    size_t num_deps;
} est_backend_conf_t;

typedef enum { EST_ON_ERROR_PARTIAL = 0, EST_ON_ERROR_FAIL } est_on_error_t;

/* ---- SPEC "Access control and traffic policy" (config/schema_policy.c) ------------------- */

typedef struct est_claim_header {
    char *claim;  /* claim name */
    char *header; /* request header it is copied into, lower-case */
} est_claim_header_t;

/* auth.jwt.NAME: exactly one of jwks_url, jwks_file, secret_file */
typedef struct est_jwt_conf {
    char *name;
    size_t index;             /* position in est_config_t.jwt */
    char *jwks_url;           /* as written, NULL unless the key set is fetched */
    est_upstream_conf_t *jwks_upstream; /* jwks_url's origin as an upstream (SPEC upstream defaults), owned;
                                         * NULL without jwks_url */
    char *jwks_path;          /* jwks_url's path and query ("/.well-known/jwks.json"), owned */
    char *jwks_file;          /* resolved path, or NULL */
    char *secret_file;        /* resolved path, or NULL (raw key bytes, one trailing newline ignored) */
    uint64_t jwks_refresh_ms; /* default 5m */
    char *issuer;             /* NULL: "iss" not checked */
    char **audience;          /* NULL/0: "aud" not checked */
    size_t num_audience;
    unsigned algorithms;      /* EST_JWA_* bits (policy/jwt.h); required, never empty */
    uint64_t leeway_ms;       /* default 30s */
    est_claim_header_t *forward_claims;
    size_t num_forward_claims;
} est_jwt_conf_t;

/* auth.api_keys.NAME */
typedef struct est_apikey_conf {
    char *name;
    size_t index;    /* position in est_config_t.api_keys */
    char *header;    /* lower-case; default "x-api-key" */
    char *keys_file; /* resolved path */
} est_apikey_conf_t;

typedef enum { EST_AUTH_JWT = 0, EST_AUTH_API_KEY } est_auth_kind_t;

/* one entry of a route's "auth" list: a policy of either kind, by index */
typedef struct est_auth_ref {
    est_auth_kind_t kind;
    size_t index; /* into est_config_t.jwt or est_config_t.api_keys */
} est_auth_ref_t;

typedef enum { EST_RL_KEY_CLIENT_IP = 0, EST_RL_KEY_HEADER, EST_RL_KEY_CLAIM, EST_RL_KEY_ROUTE } est_rl_key_kind_t;
typedef enum { EST_RL_STORE_LOCAL = 0, EST_RL_STORE_REDIS } est_rl_store_t;

/* rate_limits.NAME: GCRA, `rate` requests per `per`, `burst` extra (default: rate) */
typedef struct est_rate_limit_conf {
    char *name;
    size_t index; /* position in est_config_t.rate_limits */
    uint64_t rate;
    uint64_t per_ms;
    uint64_t burst;
    est_rl_key_kind_t key_kind;
    char *key_name; /* EST_RL_KEY_HEADER: the header, lower-case; EST_RL_KEY_CLAIM: the claim; else NULL */
    est_rl_store_t store;
} est_rate_limit_conf_t;

/* "redis": the server that "store": "redis" rate limits share */
typedef struct est_redis_conf {
    char *host; /* IP literal or name */
    uint16_t port;
    uint64_t timeout_ms;  /* default 50ms */
    int on_failure_deny;  /* "on_failure": "deny" (503) or "allow" (default) */
} est_redis_conf_t;

/* a route's "cors" */
typedef struct est_cors_conf {
    char **origins; /* exact origins ("https://app.example"), as written */
    size_t num_origins;
    int any_origin;   /* "origins": ["*"] (never together with credentials) */
    unsigned methods; /* EST_METHOD_* bits allowed in a preflight; 0: the route's methods */
    char **headers;   /* request headers allowed in a preflight, lower-case */
    size_t num_headers;
    char **expose_headers; /* Access-Control-Expose-Headers, as written */
    size_t num_expose_headers;
    int credentials;
    uint64_t max_age_ms;
    int has_max_age;
} est_cors_conf_t;

/* SPEC "Caching, coalescing and hedging": a route's "cache" */
typedef struct est_route_cache_conf {
    uint64_t ttl_ms;                    /* when the backend says nothing (default 0: not stored then) */
    uint64_t stale_while_revalidate_ms; /* default 0 */
    uint64_t stale_if_error_ms;         /* default 0, counted from expiry (RFC 5861) */
    char **vary;                        /* request header names in the key, lower-case */
    size_t num_vary;
    int shared; /* requests with Authorization or Cookie are served from the cache too */
} est_route_cache_conf_t;

typedef struct est_route_conf {
    size_t index;
    char *path;       /* template */
    unsigned methods; /* EST_METHOD_* bits; GET implies HEAD */
    uint64_t timeout_ms;
    est_on_error_t on_error;
    int websocket;
    int preserve_host;
    uint64_t max_request_body; /* the route's own "max_request_body", else the top-level one */
    uint64_t proxy_buffer;     /* proxy route: "proxy.buffer" (default 256KiB): a reply up to this
                                * size is read whole so its backend connection is freed at once */
    est_backend_conf_t *backends; /* aggregating route: num_backends >= 1, proxy == NULL */
    size_t num_backends;
    est_backend_conf_t *proxy; /* proxy route: the one backend (no group/target/allow/...) */
    /* policy (SPEC "Access control and traffic policy"); none set: the route is open */
    est_auth_ref_t *auth; /* a request passes when any one accepts it */
    size_t num_auth;
    char **scopes; /* all required in the token's scope/scp (403 otherwise) */
    size_t num_scopes;
    est_rate_limit_conf_t *rate_limit; /* borrowed from est_config_t.rate_limits; NULL: none */
    est_cors_conf_t *cors;             /* owned; NULL: none */
    struct est_route_cache_conf *cache; /* owned; NULL: the route's replies are not cached */
    int coalesce;                       /* "coalesce": true, or implied by "cache" */
} est_route_conf_t;

typedef struct est_admin_conf {
    char *host;
    uint16_t port;
    char *token; /* admin.token (NULL when absent): Bearer token for /, /state, /config beyond loopback */
} est_admin_conf_t;

/* SPEC "Tracing" (NULL in est_config_t when absent) */
typedef struct est_tracing_conf {
    char *otlp_endpoint;                 /* as written: "http://collector:4318/v1/traces" */
    est_upstream_conf_t *otlp_upstream;  /* the endpoint's origin as an upstream (SPEC defaults), owned */
    char *otlp_path;                     /* the endpoint's path and query, owned */
    char *service_name;                  /* default "estuary" */
    double sample_ratio;                 /* 0..1, default 1 */
} est_tracing_conf_t;

typedef struct est_config {
    char *file;     /* path as given */
    char *base_dir; /* folder of the file, for relative paths */
    est_listen_conf_t *listen;
    size_t num_listen;
    unsigned workers; /* resolved: "auto" -> number of CPUs */
    int workers_auto;
    int io_uring; /* "io_uring": 1 auto (used where the kernel allows it), 0 off (epoll); read at start */
    uint64_t shutdown_timeout_ms;
    uint64_t max_request_body;
    /* SPEC "Client limits" (defaults 10s, 10s, 30s, 60s) */
    uint64_t client_header_timeout_ms, client_body_timeout_ms, client_send_timeout_ms, client_idle_timeout_ms;
    est_admin_conf_t *admin; /* NULL when off */
    /* (admin) "access_log": "stderr" (default) -> access_log NULL, access_log_off 0; "off" ->
     * access_log_off 1; otherwise the file, resolved against base_dir */
    char *access_log;
    int access_log_off;
    est_dns_conf_t dns;
    est_upstream_conf_t *upstreams; /* in file order */
    size_t num_upstreams;
    est_route_conf_t *routes; /* in file order */
    size_t num_routes;
    est_jwt_conf_t *jwt; /* auth.jwt, in file order */
    size_t num_jwt;
    est_apikey_conf_t *api_keys; /* auth.api_keys, in file order */
    size_t num_api_keys;
    est_rate_limit_conf_t *rate_limits; /* in file order */
    size_t num_rate_limits;
    est_redis_conf_t *redis; /* NULL when absent */
    /* SPEC "Client limits": a fan-out's buffered reply per backend (default 64MiB) and all
     * fan-outs' buffered replies of the process together (default 512MiB) */
    uint64_t max_backend_reply, aggregate_memory;
    est_tracing_conf_t *tracing; /* NULL when absent */
    /* "cache": the process's response cache (defaults 256MiB, 8MiB; used when any route has
     * "cache", whether or not the top-level key is there) */
    uint64_t cache_max_size, cache_max_entry;
    json_t *json; /* the parsed document, for GET /config (owned) */
} est_config_t;

/*
 * Bounds on what the loader reads, so that a hostile or mistaken file (a reload included) is
 * refused quickly and in little memory instead of exhausting the process:
 * - a file larger than EST_CONFIG_MAX_FILE_SIZE is not read past that size (one FILE:1:1 error);
 * - a text with more than EST_CONFIG_MAX_VALUES JSON values (counted before parsing) is
 *   refused at the value past the limit;
 * - at most EST_CONFIG_MAX_ERRORS problems are reported, then one "too many errors" line.
 * The validation itself does no quadratic work in the number of routes, listeners,
 * backends or upstreams.
 */
#define EST_CONFIG_MAX_FILE_SIZE (16u << 20)
#define EST_CONFIG_MAX_VALUES 100000
#define EST_CONFIG_MAX_ERRORS 100

/* A list of "FILE:LINE:COLUMN: message" lines */
typedef struct est_errors {
    char **items;
    size_t count;
} est_errors_t;

void est_errors_add(est_errors_t *errs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void est_errors_clear(est_errors_t *errs);

/*
 * Loads and validates `file`. On success returns a new config (free with est_config_free);
 * on failure returns NULL and appends every problem found to `errs`. No partial result.
 */
est_config_t *est_config_load(const char *file, est_errors_t *errs);
/* Same, from a buffer; `file` is used in messages and to resolve relative paths. */
est_config_t *est_config_load_buffer(const char *file, const char *text, size_t len, est_errors_t *errs);
void est_config_free(est_config_t *conf);

est_upstream_conf_t *est_config_find_upstream(const est_config_t *conf, const char *name);

/* An upstream's SPEC defaults (balance, timeouts, pool, retry, TLS verify); names, targets and
 * files untouched. For the loader and for the upstreams it makes itself (a jwks_url's). */
void est_upstream_conf_defaults(est_upstream_conf_t *u);
/* Frees what `u` owns (name, targets, retry statuses, TLS files), not `u` itself */
void est_upstream_conf_clear(est_upstream_conf_t *u);

/* "1m30s" -> 90000; returns 0 on success, -1 on a malformed string */
int est_parse_duration(const char *s, uint64_t *ms);
/* "8MiB" or integer -> bytes; returns 0 on success, -1 on a malformed value */
int est_parse_size_string(const char *s, uint64_t *bytes);
/* "1m30s" for 90000, "250ms", "5s" (for messages) */
void est_format_duration(uint64_t ms, char *buf, size_t bufsz);

#endif
