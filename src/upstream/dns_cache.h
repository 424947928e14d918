/*
 * estuary - private parts of the DNS resolver (src/upstream/dns*.c, hosts.c and their unit
 * tests only; callers use upstream/dns.h).
 *
 * The cache is a hash table of entries keyed by lower-cased name, with an LRU list used to
 * bound its size. Each entry holds the last good answer (which may be expired), the last
 * failure (negative caching) and, in dns.c, the state of the running query. The rules that
 * decide what an entry can serve at a given time are pure functions of the entry and `now`
 * (milliseconds, h2o_now() in production), so they are tested without a loop.
 */
#ifndef EST_UPSTREAM_DNS_CACHE_H
#define EST_UPSTREAM_DNS_CACHE_H

#include <stddef.h>
#include <stdint.h>
#include <h2o.h>
#include "upstream/dns.h"

#define EST_DNS_CACHE_MAX 4096 /* names per est_dns_t; the oldest idle entry is evicted beyond */
#define EST_DNS_NAME_MAX 254   /* 253 octets, plus an optional trailing dot */

/* What an entry can do for a lookup at a given time */
typedef enum {
    EST_DNS_ENTRY_MISS,     /* nothing usable: query and wait */
    EST_DNS_ENTRY_FRESH,    /* answer within its TTL: serve it */
    EST_DNS_ENTRY_EXPIRED,  /* answer past its TTL, not refreshed yet: query and wait; on failure serve it stale */
    EST_DNS_ENTRY_STALE,    /* answer past its TTL whose refresh failed, within stale_ttl of expiry: serve it */
    EST_DNS_ENTRY_NEGATIVE, /* a failure is cached: report it */
} est_dns_entry_state_t;

typedef struct est_dns_entry est_dns_entry_t;
struct est_dns_entry {
    char *name; /* lower-case, NUL-terminated, owned */
    size_t hash;
    est_dns_entry_t *hnext;
    h2o_linklist_t lru; /* in est_dns_cache_t.lru, least recently used first */
    int permanent;      /* hosts-file name or IP literal: never expires */

    est_dns_result_t *result; /* last good answer (one reference) or NULL; may be expired */
    uint64_t ttl_ms;          /* of that answer, after clamping */
    uint64_t expires_at;      /* fresh until then */
    uint64_t stale_until;     /* expires_at + stale_ttl */
    uint64_t refresh_from;    /* answer time + min_ttl: no early refresh before (a TTL 0 answer
                               * raised to min_ttl is not asked again within min_ttl) */
    est_dns_status_t neg_status; /* EST_DNS_OK, or the last failure since the last answer */
    uint64_t neg_until;          /* that failure is cached until then */

    /* query state, managed by dns.c; an entry with a query or waiters is never evicted */
    est_dns_t *dns;       /* owner, for the c-ares callback (whose argument is the entry) */
    int querying;         /* a c-ares query runs with this entry as its argument */
    int timed_out;        /* the running query passed its deadline; waiters were answered */
    uint64_t query_deadline;
    h2o_linklist_t waiters;  /* est_dns_query_t waiting for the running query */
    h2o_linklist_t inflight; /* in est_dns_t's list of entries with a running query */
};

typedef struct est_dns_cache {
    est_dns_entry_t **buckets;
    size_t nbuckets; /* power of 2 */
    size_t count, max;
    h2o_linklist_t lru;
    /* results dropped from entries, released later (est_dns_cache_flush_graveyard): a result
     * borrowed from est_dns_lookup_cached stays valid until the caller returns to the loop */
    est_dns_result_t **graveyard;
    size_t graveyard_len, graveyard_cap;
} est_dns_cache_t;

/* -- results -- */

/* A result with room for `n` addresses (num_addrs = 0), refcnt 1, or NULL. */
est_dns_result_t *est_dns_result_new(size_t n);
/* Appends `sa` (port forced to 0) unless already present. Needs room. Returns 1 if added. */
int est_dns_result_add(est_dns_result_t *r, const struct sockaddr *sa, socklen_t len);
/* Stable sort: IPv4 first, then IPv6, each in their original order. */
void est_dns_result_sort(est_dns_result_t *r);
/* 1 when both hold the same set of addresses (order ignored) */
int est_dns_result_same_addrs(const est_dns_result_t *a, const est_dns_result_t *b);
/* Parses an IPv4 or IPv6 literal ("::1" or "[::1]") into `out` (port 0). Returns 0 or -1. */
int est_dns_parse_literal(const char *name, est_dns_addr_t *out);
/* 1 when `name` is acceptable as a DNS name (length, no blanks or control characters) */
int est_dns_name_is_valid(const char *name);

/* -- TTL rules -- */

/* TTL in seconds from an answer -> cache lifetime in ms, clamped to [min_ttl, max_ttl] */
uint64_t est_dns_clamp_ttl(const est_dns_conf_t *conf, int64_t ttl_s);
/* How long before expiry a used answer is refreshed in the background: 10% of the TTL,
 * but at least min(1 s, TTL/2) */
uint64_t est_dns_refresh_window(uint64_t ttl_ms);

/* -- entries -- */

est_dns_entry_state_t est_dns_entry_state(const est_dns_entry_t *e, uint64_t now);
/* 1 when a use at `now` should start a background refresh (fresh answer near its expiry but
 * at least min_ttl old, or a stale answer whose last failure is no longer cached); 0 while a
 * query runs. */
int est_dns_entry_refresh_due(const est_dns_entry_t *e, uint64_t now);
/*
 * Records a new answer (`r` is stolen) valid `ttl_ms` from `now`. It keeps the previous
 * generation when the address set is unchanged, else takes (*next_generation)++.
 */
void est_dns_entry_store_answer(est_dns_cache_t *cache, est_dns_entry_t *e, est_dns_result_t *r, uint64_t ttl_ms,
                                uint64_t now, const est_dns_conf_t *conf, uint64_t *next_generation);
/* Records a failure at `now`: cached for negative_ttl; drops an answer past its stale window. */
void est_dns_entry_store_failure(est_dns_cache_t *cache, est_dns_entry_t *e, est_dns_status_t st, uint64_t now,
                                 const est_dns_conf_t *conf);
/*
 * What a lookup gets at `now`: EST_DNS_OK with *result (borrowed) and *is_stale, or the
 * cached failure (EST_DNS_FAILURE when nothing is known).
 */
est_dns_status_t est_dns_entry_serve(const est_dns_entry_t *e, uint64_t now, est_dns_result_t **result, int *is_stale);

/* -- the table -- */

/* `nbuckets` is rounded up to a power of 2; at most `max` entries (SIZE_MAX = unbounded). */
int est_dns_cache_init(est_dns_cache_t *cache, size_t nbuckets, size_t max);
/* Frees every entry and result; the caller has dealt with queries and waiters. */
void est_dns_cache_dispose(est_dns_cache_t *cache);
/* Case-insensitive; NULL if absent. */
est_dns_entry_t *est_dns_cache_find(est_dns_cache_t *cache, const char *name);
/* Adds an empty entry for `name` (must be absent), evicting the least recently used idle
 * entries beyond `max` (when every entry is busy the table grows past it). NULL on ENOMEM. */
est_dns_entry_t *est_dns_cache_insert(est_dns_cache_t *cache, const char *name);
/* Marks `e` as just used (moves it to the end of the LRU list). */
void est_dns_cache_touch(est_dns_cache_t *cache, est_dns_entry_t *e);
/* Gives a reference to the graveyard (released by the next flush). */
void est_dns_cache_bury(est_dns_cache_t *cache, est_dns_result_t *r);
void est_dns_cache_flush_graveyard(est_dns_cache_t *cache);

/* -- hosts file (hosts.c) -- */

/*
 * Parses hosts-file text ("ADDRESS NAME [ALIASES...]", '#' comments) into `table`: one
 * permanent entry per name (lower-cased) with every address listed for it, deduplicated,
 * IPv4 first. Malformed lines are skipped. Then makes sure "localhost" resolves to 127.0.0.1.
 * Returns 0, or -1 on ENOMEM.
 */
int est_dns_hosts_parse(est_dns_cache_t *table, const char *text, size_t len, uint64_t *next_generation);
/* Reads `path` (at most 16 MiB) and parses it; an unreadable file counts as empty (plus
 * localhost) and is logged. Returns 0, or -1 on ENOMEM. */
int est_dns_hosts_load(est_dns_cache_t *table, const char *path, uint64_t *next_generation);

#endif
