/*
 * estuary - the response cache's storage: one store per process, shared by the worker threads,
 * bounded in bytes with least-recently-used eviction, holding immutable reference-counted
 * entries (status, selected header fields, body, freshness facts).
 *
 * Threads: every function may be called from any thread. The table is split into shards, each
 * with a mutex held only for a hash lookup, an LRU move and a reference count increment (or an
 * insert / removal); never while a body is copied, sent, or while anyone waits on the network.
 * A hit returns a reference: the caller sends entry->body straight from the entry (no copy, no
 * lock) and releases it when the last byte has left; an entry evicted or replaced meanwhile
 * stays valid until then.
 *
 * Keys (RFC 9111 4.1, two levels): the primary key is bytes built by est_cache_key_build from
 * the route, path, method, query and the values of the route's own `vary` headers. Each entry
 * also records the backend's Vary field names and the values those fields had in the request
 * that produced it; a lookup matches an entry only when the new request has the same values
 * (absent stays distinct from empty). Several variants of one primary key coexist (at most
 * EST_CACHE_MAX_VARIANTS, the oldest goes first); the most recently stored match wins.
 *
 * Usage (a miss that stores, then a hit):
 *
 *     char key[EST_CACHE_MAX_KEY];
 *     size_t klen = est_cache_key_build(key, sizeof(key), &parts, get_header, req);
 *     est_cache_miss_t miss;
 *     est_cache_entry_t *e = est_cache_store_lookup(store, key, klen, get_header, req, &miss);
 *     if (e == NULL) {
 *         ... forward; on the reply head, est_cache_decide(); when storable:
 *         e = est_cache_entry_create(&init);           // headers, vary values copied
 *         est_cache_entry_append(e, chunk, len) ...    // as the body arrives; -1: give up
 *         est_cache_store_insert(store, e);            // freezes it; the store takes its own ref
 *         est_cache_entry_release(e);
 *     } else {
 *         ... send e->status, e->headers, e->body; on completion: est_cache_entry_release(e);
 *     }
 */
#ifndef EST_CACHE_STORE_H
#define EST_CACHE_STORE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/ccontrol.h"

/* bounds on what one entry or key may hold (beyond them: not stored, the request goes on uncached) */
#define EST_CACHE_MAX_KEY 8192
#define EST_CACHE_MAX_HEADERS 64
#define EST_CACHE_MAX_VARIANTS 8

typedef struct {
    const char *name;
    size_t name_len;
    const char *value; /* NULL: absent (in an entry's vary record) */
    size_t value_len;
} est_cache_field_t;

/*
 * Reads one request header: returns 1 with *value (several field lines joined with ", " by the
 * callee), or 0 when the request has none. `name` is lower-case. Called with a shard lock held:
 * it must only read the request (no allocation that may block, no store call).
 */
typedef int (*est_cache_header_fn)(void *ctx, const char *name, size_t name_len, const char **value, size_t *value_len);

typedef struct est_cache_entry_t est_cache_entry_t;

/*
 * One stored reply. Public fields are read-only and never change once the entry is frozen
 * (inserted, or handed to coalescing waiters); `_` fields belong to store.c.
 */
struct est_cache_entry_t {
    int status;
    size_t num_headers;
    const est_cache_field_t *headers; /* as given to create, minus Age, Cache-Status, Set-Cookie */
    const char *body;
    size_t body_len;
    int64_t stored_at_ms;
    est_cache_age_facts_t age;
    int64_t lifetime_ms;
    int64_t stale_while_revalidate_ms;
    int64_t stale_if_error_ms;

    /* shared mutable state, atomics: several threads hold references to one entry */
    atomic_size_t _refcnt;
    atomic_int _refreshing; /* one background refresh under stale-while-revalidate */
    /* owned by the creating thread until frozen, then immutable */
    int _frozen;
    size_t _size, _max_bytes, _body_cap;
    char *_body;
    const char *_key;
    size_t _key_len;
    const est_cache_field_t *_vary;
    size_t _num_vary;
    uint64_t _hash;
    /* guarded by the owning shard's lock while _in_store */
    int _in_store;
    est_cache_entry_t *_hnext, *_lru_prev, *_lru_next;
};

typedef struct {
    const char *key; /* the primary key (est_cache_key_build); may be empty for a reply only shared by coalescing */
    size_t key_len;
    int status;
    const est_cache_field_t *headers;
    size_t num_headers;
    const est_cache_span_t *vary; /* the backend's Vary names (est_cache_resp_facts_t::vary) */
    size_t num_vary;
    est_cache_header_fn get_header; /* the request's headers, for the Vary values; may be NULL without vary */
    void *ctx;
    const est_cache_decision_t *decision; /* lifetime and stale allowances; NULL: all 0 */
    const est_cache_age_facts_t *age;     /* NULL: all 0 */
    size_t body_reserve;                  /* expected body size (Content-Length), or 0 */
    size_t max_bytes;                     /* the whole entry's limit (max_entry); 0: none */
    int64_t now_ms;
} est_cache_entry_init_t;

/*
 * A new entry with one reference (the caller's), its headers, key and vary values copied.
 * NULL when over max_bytes already, over EST_CACHE_MAX_HEADERS / EST_CACHE_MAX_KEY, a Vary name
 * over 64 bytes, or out of memory.
 */
est_cache_entry_t *est_cache_entry_create(const est_cache_entry_init_t *init);
/* appends body bytes before the entry is frozen: 0, or -1 when over max_bytes, frozen or out of memory */
int est_cache_entry_append(est_cache_entry_t *e, const void *data, size_t len);
/* makes the entry immutable (its body buffer trimmed); idempotent; before sharing it in any way */
void est_cache_entry_freeze(est_cache_entry_t *e);
/* the bytes it accounts for (struct, key, headers, vary, body) */
size_t est_cache_entry_size(const est_cache_entry_t *e);
void est_cache_entry_addref(est_cache_entry_t *e);
/* drops one reference; the last frees the entry */
void est_cache_entry_release(est_cache_entry_t *e);
/*
 * Claims the entry's single background refresh: 1 for exactly one caller until
 * est_cache_entry_refresh_done, 0 for everyone else (they serve the stale entry and go on).
 * The winner calls refresh_done when the refresh failed; on success the new entry has
 * replaced this one and the flag may stay set.
 */
int est_cache_entry_try_refresh(est_cache_entry_t *e);
void est_cache_entry_refresh_done(est_cache_entry_t *e);

typedef struct {
    est_cache_span_t route;       /* the route's path template: purges name it */
    est_cache_span_t path;        /* the request path, without the query */
    est_cache_span_t method;      /* GET or HEAD */
    est_cache_span_t query;       /* without '?'; base NULL when the target has no '?' */
    const est_cache_span_t *vary; /* the route's `vary` header names */
    size_t num_vary;
} est_cache_key_parts_t;

/*
 * Writes the primary key into buf (length-prefixed fields: route, path, method, query, then each
 * route vary name (lower-cased) and the request's value, OWS-trimmed, absent distinct from
 * empty); returns its length, or 0 when it does not fit in `cap` (then do not cache).
 */
size_t est_cache_key_build(char *buf, size_t cap, const est_cache_key_parts_t *parts, est_cache_header_fn get_header, void *ctx);
/* the leading bytes every key of (route, path) starts with, for est_cache_store_purge_prefix; 0 if over cap */
size_t est_cache_key_prefix(char *buf, size_t cap, const char *route, size_t route_len, const char *path, size_t path_len);
/* the leading bytes every key of `route` starts with (a whole route: reload, admin purge without a path); 0 if over cap */
size_t est_cache_key_route_prefix(char *buf, size_t cap, const char *route, size_t route_len);

typedef struct est_cache_store_t est_cache_store_t;

typedef enum {
    EST_CACHE_MISS_URI,  /* nothing under this primary key */
    EST_CACHE_MISS_VARY, /* entries under this key, none for these Vary values */
} est_cache_miss_t;

typedef struct {
    uint64_t bytes, entries, hits, misses, evictions, inserts, refused, purged;
} est_cache_stats_t;

/*
 * A store of at most max_size bytes, entries of at most max_entry (0: max_size). The LRU is per
 * shard, each shard holding max_size / nshards; nshards 0 picks up to 16 so that one shard still
 * holds a max_entry entry (1 shard: an exact LRU over the whole store). NULL when out of memory.
 */
est_cache_store_t *est_cache_store_create(size_t max_size, size_t max_entry, unsigned nshards);
/* drops the store's references; entries still referenced elsewhere live until released */
void est_cache_store_destroy(est_cache_store_t *s);

/*
 * Inserts a complete entry (freezing it), replacing any entry with the same key and the same
 * Vary values, then evicting least recently used entries of its shard while over budget. The
 * store takes its own reference; the caller keeps and releases its own. 0, or -1 when refused
 * (over max_entry, empty key, already inserted).
 */
int est_cache_store_insert(est_cache_store_t *s, est_cache_entry_t *e);
/* A new reference to the most recent entry matching key and Vary values, or NULL (*miss says which miss; may be NULL) */
est_cache_entry_t *est_cache_store_lookup(est_cache_store_t *s, const char *key, size_t key_len, est_cache_header_fn get_header,
                                          void *ctx, est_cache_miss_t *miss);
/* removes every variant stored under exactly `key`; returns how many */
size_t est_cache_store_remove(est_cache_store_t *s, const char *key, size_t key_len);
/* removes every entry whose key starts with `prefix` (est_cache_key_prefix: all methods, queries, variants); returns how many */
size_t est_cache_store_purge_prefix(est_cache_store_t *s, const char *prefix, size_t prefix_len);
void est_cache_store_stats(est_cache_store_t *s, est_cache_stats_t *out);

#endif
