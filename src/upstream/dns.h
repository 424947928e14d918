/*
 * estuary - per-worker DNS resolver: c-ares driven by the worker's h2o evloop, with a cache.
 *
 * One est_dns_t per worker (never shared between threads). Names are looked up in the
 * hosts file (read once when the resolver is created, never on the request path), then
 * in DNS (A and AAAA). Answers are cached for their TTL clamped to [min_ttl, max_ttl];
 * failures for negative_ttl; an expired answer may still serve for stale_ttl while a
 * refresh fails. Concurrent lookups of one name share one query. IP literals resolve at
 * once without DNS.
 */
#ifndef EST_UPSTREAM_DNS_H
#define EST_UPSTREAM_DNS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <h2o.h>
#include "config/config.h"

typedef struct est_dns est_dns_t;
typedef struct est_dns_query est_dns_query_t;

typedef struct est_dns_addr {
    struct sockaddr_storage sa; /* port is 0; the caller sets the target's port */
    socklen_t len;
} est_dns_addr_t;

/* An immutable, reference-counted answer. IPv4 addresses come first, in answer order. */
typedef struct est_dns_result {
    size_t refcnt;
    uint64_t generation; /* changes whenever the cached answer for the name changes */
    size_t num_addrs;
    est_dns_addr_t addrs[];
} est_dns_result_t;

void est_dns_result_addref(est_dns_result_t *r);
void est_dns_result_release(est_dns_result_t *r);

typedef enum {
    EST_DNS_OK = 0,
    EST_DNS_NOT_FOUND,  /* NXDOMAIN or no address */
    EST_DNS_TIMEOUT,    /* the servers did not answer */
    EST_DNS_FAILURE,    /* SERVFAIL, refused, anything else */
} est_dns_status_t;

const char *est_dns_strerror(est_dns_status_t st);

typedef struct est_dns_stats {
    uint64_t queries_ok, queries_failed; /* DNS queries sent, by outcome */
    uint64_t cache_hits, cache_misses, stale_served;
} est_dns_stats_t;

/*
 * Called once, always from the loop (never from inside est_dns_resolve). `result` is
 * borrowed: addref it to keep it. NULL unless status is EST_DNS_OK.
 */
typedef void (*est_dns_cb)(void *data, est_dns_status_t status, est_dns_result_t *result);

/*
 * Process-wide c-ares setup (ares_library_init): call once from main before any worker
 * starts, and est_dns_global_dispose once after they all stopped. Returns 0 or -1.
 */
int est_dns_global_init(void);
void est_dns_global_dispose(void);

/*
 * Creates the resolver of the worker running `loop`, or returns NULL (logged). Reads the
 * hosts file (/etc/hosts, or the file named by the environment variable ESTUARY_HOSTS_FILE,
 * meant for tests) once, here. `conf` is copied.
 */
est_dns_t *est_dns_create(h2o_loop_t *loop, const est_dns_conf_t *conf);
/*
 * Cancels every pending query (their callbacks are not called) and frees everything. Not
 * from inside an est_dns_cb. The sockets it closes are freed by the loop's next
 * h2o_evloop_run, so run the loop once more before h2o_evloop_destroy.
 */
void est_dns_destroy(est_dns_t *dns);

/*
 * Fast path: a fresh (or stale-but-servable) cached answer for `name`, borrowed, or NULL.
 * Counts a cache hit when it returns non-NULL. Also returns IP literals and hosts-file names.
 * The result stays valid until control returns to the loop (addref it to keep it longer).
 * A used answer in the last ~10% of its TTL (at least min(1 s, TTL/2)) is refreshed in the
 * background. An expired answer is returned only once its refresh failed (stale); before
 * that this returns NULL and est_dns_resolve waits for the refresh.
 */
est_dns_result_t *est_dns_lookup_cached(est_dns_t *dns, const char *name);

/*
 * Resolves `name`; `cb` is called later from the loop. Returns a handle that may be passed
 * to est_dns_cancel until the callback has run; NULL only when out of memory (no callback
 * then). Lookups wait at most dns.timeout x dns.attempts, then get EST_DNS_TIMEOUT (or a
 * stale answer). Cached failures and cached answers are also delivered from the loop.
 */
est_dns_query_t *est_dns_resolve(est_dns_t *dns, const char *name, est_dns_cb cb, void *data);
void est_dns_cancel(est_dns_query_t *q);

const est_dns_stats_t *est_dns_get_stats(const est_dns_t *dns);

/* One cached name as the admin console shows it (est_dns_list) */
typedef struct est_dns_entry_info {
    const char *name;               /* lower-case */
    const est_dns_result_t *result; /* the last good answer (possibly expired), or NULL */
    uint64_t ttl_left_ms;           /* until that answer expires; 0 once expired */
    int stale;                      /* expired, and served because its refresh failed */
    est_dns_status_t failure;       /* EST_DNS_OK, or the failure cached now */
} est_dns_entry_info_t;

/*
 * Calls `cb` for at most `max` names cached from DNS (hosts-file names and IP literals left
 * out), most recently used first; returns how many. From the loop; `info` is borrowed for
 * the call.
 */
size_t est_dns_list(const est_dns_t *dns, void (*cb)(void *data, const est_dns_entry_info_t *info), void *data, size_t max);

#endif
