/*
 * estuary - the response cache's storage; see store.h.
 */
#include "cache/store.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache/hash.h"

#define SHARDS_MAX 16
#define BUCKETS_MIN 16
/* the most body bytes reserved up front from a reply's Content-Length (a claim, not bytes yet) */
#define RESERVE_MAX ((size_t)1 << 20)

/*
 * One shard: its part of the hash table and its LRU list. Shared mutable state of all the
 * workers, hence the mutex; held only for table and list operations (never during a copy of a
 * body, a free of an entry, or I/O).
 */
typedef struct {
    pthread_mutex_t lock;
    est_cache_entry_t **buckets;
    size_t nbuckets, count;
    size_t bytes, budget;
    est_cache_entry_t *lru_head, *lru_tail; /* head: most recently used */
} shard_t;

struct est_cache_store_t {
    est_cache_hash_key_t hkey;
    size_t max_size, max_entry;
    unsigned nshards;
    shard_t *shards;
    /* counters read by /metrics from any thread while the workers update them: atomics */
    atomic_uint_least64_t bytes, entries, hits, misses, evictions, inserts, refused, purged;
};

/* --- entries --------------------------------------------------------------------------- */

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static void trim(const char **v, size_t *len)
{
    while (*len > 0 && is_ows(**v)) {
        ++*v;
        --*len;
    }
    while (*len > 0 && is_ows((*v)[*len - 1]))
        --*len;
}

/* memcpy that accepts (NULL, 0) */
static void copy(char *dst, const char *src, size_t n)
{
    if (n != 0)
        memcpy(dst, src, n);
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

static int header_dropped(const est_cache_field_t *f)
{
    /* recomputed per reply (Age, Cache-Status), or never kept (Set-Cookie: see est_cache_decide) */
    static const char *const names[] = {"age", "cache-status", "set-cookie"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); ++i)
        if (f->name_len == strlen(names[i]) && strncasecmp(f->name, names[i], f->name_len) == 0)
            return 1;
    return 0;
}

/* a request header through the callback, OWS-trimmed; NULL value when absent */
static void get_value(est_cache_header_fn get, void *ctx, const char *name, size_t name_len, const char **v, size_t *len)
{
    *v = NULL;
    *len = 0;
    if (get != NULL && get(ctx, name, name_len, v, len)) {
        if (*v == NULL)
            *v = "";
        trim(v, len);
    } else {
        *v = NULL;
        *len = 0;
    }
}

est_cache_entry_t *est_cache_entry_create(const est_cache_entry_init_t *init)
{
    const char *vvals[EST_CACHE_MAX_VARY];
    size_t vlens[EST_CACHE_MAX_VARY];
    char lname[64];
    if (init->num_headers > EST_CACHE_MAX_HEADERS || init->num_vary > EST_CACHE_MAX_VARY || init->key_len > EST_CACHE_MAX_KEY)
        return NULL;

    /* one block: the entry, the header and vary records, then every string */
    size_t nh = 0, strings = init->key_len;
    for (size_t i = 0; i < init->num_headers; ++i) {
        if (header_dropped(&init->headers[i]))
            continue;
        ++nh;
        strings += init->headers[i].name_len + init->headers[i].value_len;
    }
    for (size_t i = 0; i < init->num_vary; ++i) {
        size_t n = init->vary[i].len;
        if (n == 0 || n > sizeof(lname))
            return NULL;
        for (size_t j = 0; j < n; ++j)
            lname[j] = lower(init->vary[i].base[j]);
        get_value(init->get_header, init->ctx, lname, n, &vvals[i], &vlens[i]);
        strings += n + vlens[i];
    }
    size_t fixed = sizeof(est_cache_entry_t) + (nh + init->num_vary) * sizeof(est_cache_field_t);
    size_t size = fixed + strings;
    if (init->max_bytes != 0 && size > init->max_bytes)
        return NULL;
    est_cache_entry_t *e = malloc(size);
    if (e == NULL)
        return NULL;
    memset(e, 0, sizeof(*e));
    est_cache_field_t *hdrs = (est_cache_field_t *)(e + 1), *vary = hdrs + nh;
    char *p = (char *)e + fixed;

    copy(p, init->key, init->key_len);
    e->_key = p;
    e->_key_len = init->key_len;
    p += init->key_len;
    size_t k = 0;
    for (size_t i = 0; i < init->num_headers; ++i) {
        const est_cache_field_t *f = &init->headers[i];
        if (header_dropped(f))
            continue;
        copy(p, f->name, f->name_len);
        hdrs[k].name = p;
        hdrs[k].name_len = f->name_len;
        p += f->name_len;
        copy(p, f->value, f->value_len);
        hdrs[k].value = p;
        hdrs[k].value_len = f->value_len;
        p += f->value_len;
        ++k;
    }
    for (size_t i = 0; i < init->num_vary; ++i) {
        for (size_t j = 0; j < init->vary[i].len; ++j)
            p[j] = lower(init->vary[i].base[j]);
        vary[i].name = p;
        vary[i].name_len = init->vary[i].len;
        vary[i].value = NULL;
        vary[i].value_len = 0;
        p += init->vary[i].len;
        if (vvals[i] != NULL) {
            copy(p, vvals[i], vlens[i]);
            vary[i].value = p;
            vary[i].value_len = vlens[i];
            p += vlens[i];
        }
    }

    e->status = init->status;
    e->headers = hdrs;
    e->num_headers = nh;
    e->_vary = vary;
    e->_num_vary = init->num_vary;
    e->stored_at_ms = init->now_ms;
    if (init->age != NULL)
        e->age = *init->age;
    if (init->decision != NULL) {
        e->lifetime_ms = init->decision->lifetime_ms;
        e->stale_while_revalidate_ms = init->decision->stale_while_revalidate_ms;
        e->stale_if_error_ms = init->decision->stale_if_error_ms;
    }
    e->_size = size;
    e->_max_bytes = init->max_bytes;
    e->body = "";
    atomic_init(&e->_refcnt, 1);
    atomic_init(&e->_refreshing, 0);
    if (init->body_reserve != 0) {
        size_t r = init->body_reserve < RESERVE_MAX ? init->body_reserve : RESERVE_MAX;
        if (init->max_bytes != 0 && r > init->max_bytes - size)
            r = init->max_bytes - size;
        if (r != 0 && (e->_body = malloc(r)) != NULL)
            e->_body_cap = r;
    }
    return e;
}

int est_cache_entry_append(est_cache_entry_t *e, const void *data, size_t len)
{
    if (e->_frozen)
        return -1;
    if (len == 0)
        return 0;
    if (e->_max_bytes != 0 && (len > e->_max_bytes || e->_size > e->_max_bytes - len))
        return -1;
    if (len > SIZE_MAX / 2 - e->body_len)
        return -1;
    if (e->body_len + len > e->_body_cap) {
        size_t cap = e->_body_cap ? e->_body_cap : 1024;
        while (cap < e->body_len + len)
            cap *= 2;
        if (e->_max_bytes != 0 && cap > e->_max_bytes)
            cap = e->body_len + len;
        char *nb = realloc(e->_body, cap);
        if (nb == NULL)
            return -1;
        e->_body = nb;
        e->_body_cap = cap;
    }
    memcpy(e->_body + e->body_len, data, len);
    e->body_len += len;
    e->_size += len;
    e->body = e->_body;
    return 0;
}

void est_cache_entry_freeze(est_cache_entry_t *e)
{
    if (e->_frozen)
        return;
    e->_frozen = 1;
    if (e->_body != NULL && e->_body_cap > e->body_len) {
        if (e->body_len == 0) {
            free(e->_body);
            e->_body = NULL;
            e->body = "";
            e->_body_cap = 0;
        } else {
            char *nb = realloc(e->_body, e->body_len);
            if (nb != NULL) {
                e->_body = nb;
                e->body = nb;
                e->_body_cap = e->body_len;
            }
        }
    }
}

size_t est_cache_entry_size(const est_cache_entry_t *e)
{
    return e->_size;
}

void est_cache_entry_addref(est_cache_entry_t *e)
{
    atomic_fetch_add_explicit(&e->_refcnt, 1, memory_order_relaxed);
}

void est_cache_entry_release(est_cache_entry_t *e)
{
    if (e == NULL)
        return;
    /* acq_rel: the thread that frees sees every other holder's reads done */
    if (atomic_fetch_sub_explicit(&e->_refcnt, 1, memory_order_acq_rel) != 1)
        return;
    free(e->_body);
    free(e);
}

int est_cache_entry_try_refresh(est_cache_entry_t *e)
{
    return atomic_exchange_explicit(&e->_refreshing, 1, memory_order_acq_rel) == 0;
}

void est_cache_entry_refresh_done(est_cache_entry_t *e)
{
    atomic_store_explicit(&e->_refreshing, 0, memory_order_release);
}

/* --- keys ------------------------------------------------------------------------------ */

typedef struct {
    char *buf;
    size_t len, cap;
    int overflow;
} kbuf_t;

/* a field: 4-byte big-endian length (0xffffffff: absent) then the bytes, lower-cased if asked */
static void kput(kbuf_t *k, const char *s, size_t n, int absent, int lowercase)
{
    if (k->overflow || n > EST_CACHE_MAX_KEY || k->cap - k->len < 4 + (absent ? 0 : n)) {
        k->overflow = 1;
        return;
    }
    uint32_t l = absent ? 0xffffffffu : (uint32_t)n;
    for (int i = 0; i < 4; ++i)
        k->buf[k->len++] = (char)(l >> (24 - 8 * i));
    if (absent)
        return;
    for (size_t i = 0; i < n; ++i)
        k->buf[k->len++] = lowercase ? lower(s[i]) : s[i];
}

size_t est_cache_key_prefix(char *buf, size_t cap, const char *route, size_t route_len, const char *path, size_t path_len)
{
    kbuf_t k = {buf, 0, cap, 0};
    kput(&k, route, route_len, 0, 0);
    kput(&k, path, path_len, 0, 0);
    return k.overflow ? 0 : k.len;
}

size_t est_cache_key_route_prefix(char *buf, size_t cap, const char *route, size_t route_len)
{
    kbuf_t k = {buf, 0, cap, 0};
    kput(&k, route, route_len, 0, 0);
    return k.overflow ? 0 : k.len;
}

size_t est_cache_key_build(char *buf, size_t cap, const est_cache_key_parts_t *parts, est_cache_header_fn get_header, void *ctx)
{
    char lname[64];
    size_t len = est_cache_key_prefix(buf, cap, parts->route.base, parts->route.len, parts->path.base, parts->path.len);
    if (len == 0)
        return 0;
    kbuf_t k = {buf, len, cap, 0};
    kput(&k, parts->method.base, parts->method.len, 0, 0);
    kput(&k, parts->query.base, parts->query.len, parts->query.base == NULL, 0);
    for (size_t i = 0; i < parts->num_vary; ++i) {
        size_t n = parts->vary[i].len;
        const char *v;
        size_t vl;
        if (n == 0 || n > sizeof(lname))
            return 0;
        for (size_t j = 0; j < n; ++j)
            lname[j] = lower(parts->vary[i].base[j]);
        kput(&k, lname, n, 0, 0);
        get_value(get_header, ctx, lname, n, &v, &vl);
        kput(&k, v, vl, v == NULL, 0);
    }
    return k.overflow || k.len > EST_CACHE_MAX_KEY ? 0 : k.len;
}

/* --- the store ------------------------------------------------------------------------- */

est_cache_store_t *est_cache_store_create(size_t max_size, size_t max_entry, unsigned nshards)
{
    if (max_entry == 0 || max_entry > max_size)
        max_entry = max_size;
    if (nshards == 0) {
        nshards = SHARDS_MAX;
        while (nshards > 1 && max_size / nshards < max_entry)
            nshards /= 2;
    }
    if (nshards > SHARDS_MAX)
        nshards = SHARDS_MAX;
    est_cache_store_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->shards = calloc(nshards, sizeof(*s->shards));
    if (s->shards == NULL) {
        free(s);
        return NULL;
    }
    est_cache_hash_key_init(&s->hkey);
    s->max_size = max_size;
    s->max_entry = max_entry;
    s->nshards = nshards;
    for (unsigned i = 0; i < nshards; ++i) {
        shard_t *sh = &s->shards[i];
        pthread_mutex_init(&sh->lock, NULL);
        sh->budget = max_size / nshards;
        sh->nbuckets = BUCKETS_MIN;
        sh->buckets = calloc(BUCKETS_MIN, sizeof(*sh->buckets));
        if (sh->buckets == NULL) {
            s->nshards = i + 1;
            est_cache_store_destroy(s);
            return NULL;
        }
    }
    return s;
}

void est_cache_store_destroy(est_cache_store_t *s)
{
    if (s == NULL)
        return;
    for (unsigned i = 0; i < s->nshards; ++i) {
        shard_t *sh = &s->shards[i];
        est_cache_entry_t *e = sh->lru_head;
        while (e != NULL) {
            est_cache_entry_t *next = e->_lru_next;
            e->_in_store = 0;
            est_cache_entry_release(e);
            e = next;
        }
        free(sh->buckets);
        pthread_mutex_destroy(&sh->lock);
    }
    free(s->shards);
    free(s);
}

static shard_t *shard_of(est_cache_store_t *s, uint64_t h)
{
    /* the top bits pick the shard, the low bits the bucket */
    return &s->shards[(h >> 56) % s->nshards];
}

static int same_key(const est_cache_entry_t *e, uint64_t h, const char *key, size_t len)
{
    return e->_hash == h && e->_key_len == len && memcmp(e->_key, key, len) == 0;
}

static int same_vary(const est_cache_entry_t *a, const est_cache_entry_t *b)
{
    if (a->_num_vary != b->_num_vary)
        return 0;
    for (size_t i = 0; i < a->_num_vary; ++i) {
        const est_cache_field_t *x = &a->_vary[i], *y = &b->_vary[i];
        if (x->name_len != y->name_len || memcmp(x->name, y->name, x->name_len) != 0)
            return 0;
        if ((x->value == NULL) != (y->value == NULL) || x->value_len != y->value_len ||
            (x->value_len != 0 && memcmp(x->value, y->value, x->value_len) != 0))
            return 0;
    }
    return 1;
}

static int vary_matches(const est_cache_entry_t *e, est_cache_header_fn get, void *ctx)
{
    for (size_t i = 0; i < e->_num_vary; ++i) {
        const est_cache_field_t *f = &e->_vary[i];
        const char *v;
        size_t vl;
        get_value(get, ctx, f->name, f->name_len, &v, &vl);
        if ((v == NULL) != (f->value == NULL) || vl != f->value_len || (vl != 0 && memcmp(v, f->value, vl) != 0))
            return 0;
    }
    return 1;
}

static void lru_unlink_locked(shard_t *sh, est_cache_entry_t *e)
{
    if (e->_lru_prev != NULL)
        e->_lru_prev->_lru_next = e->_lru_next;
    else
        sh->lru_head = e->_lru_next;
    if (e->_lru_next != NULL)
        e->_lru_next->_lru_prev = e->_lru_prev;
    else
        sh->lru_tail = e->_lru_prev;
    e->_lru_prev = e->_lru_next = NULL;
}

static void lru_push_locked(shard_t *sh, est_cache_entry_t *e)
{
    e->_lru_prev = NULL;
    e->_lru_next = sh->lru_head;
    if (sh->lru_head != NULL)
        sh->lru_head->_lru_prev = e;
    else
        sh->lru_tail = e;
    sh->lru_head = e;
}

/*
 * Takes `e` out of the shard (table, list, byte count) and chains it on *dead through _hnext,
 * for a release after the lock is dropped (freeing a large body under the lock would stall
 * every other thread on this shard).
 */
static void unlink_locked(est_cache_store_t *s, shard_t *sh, est_cache_entry_t *e, est_cache_entry_t **dead)
{
    est_cache_entry_t **pp = &sh->buckets[e->_hash & (sh->nbuckets - 1)];
    while (*pp != e)
        pp = &(*pp)->_hnext;
    *pp = e->_hnext;
    lru_unlink_locked(sh, e);
    sh->bytes -= e->_size;
    --sh->count;
    e->_in_store = 0;
    atomic_fetch_sub_explicit(&s->bytes, e->_size, memory_order_relaxed);
    atomic_fetch_sub_explicit(&s->entries, 1, memory_order_relaxed);
    e->_hnext = *dead;
    *dead = e;
}

static void release_all(est_cache_entry_t *dead)
{
    while (dead != NULL) {
        est_cache_entry_t *next = dead->_hnext;
        est_cache_entry_release(dead);
        dead = next;
    }
}

static void grow_locked(shard_t *sh)
{
    size_t n = sh->nbuckets * 2;
    est_cache_entry_t **nb = calloc(n, sizeof(*nb));
    if (nb == NULL)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < sh->nbuckets; ++i) {
        est_cache_entry_t *e = sh->buckets[i];
        while (e != NULL) {
            est_cache_entry_t *next = e->_hnext;
            e->_hnext = nb[e->_hash & (n - 1)];
            nb[e->_hash & (n - 1)] = e;
            e = next;
        }
    }
    free(sh->buckets);
    sh->buckets = nb;
    sh->nbuckets = n;
}

int est_cache_store_insert(est_cache_store_t *s, est_cache_entry_t *e)
{
    est_cache_entry_freeze(e);
    uint64_t h = est_cache_hash(&s->hkey, e->_key, e->_key_len);
    shard_t *sh = shard_of(s, h);
    if (e->_key_len == 0 || e->_size > s->max_entry || e->_size > sh->budget) {
        atomic_fetch_add_explicit(&s->refused, 1, memory_order_relaxed);
        return -1;
    }
    est_cache_entry_t *dead = NULL;
    pthread_mutex_lock(&sh->lock);
    if (e->_in_store) {
        pthread_mutex_unlock(&sh->lock);
        atomic_fetch_add_explicit(&s->refused, 1, memory_order_relaxed);
        return -1;
    }
    e->_hash = h;
    /* replace the same variant; keep at most EST_CACHE_MAX_VARIANTS - 1 others (the oldest is last in the chain) */
    size_t variants = 0;
    est_cache_entry_t *oldest = NULL;
    est_cache_entry_t *x = sh->buckets[h & (sh->nbuckets - 1)];
    while (x != NULL) {
        est_cache_entry_t *next = x->_hnext;
        if (same_key(x, h, e->_key, e->_key_len)) {
            if (same_vary(x, e)) {
                unlink_locked(s, sh, x, &dead);
            } else {
                ++variants;
                oldest = x;
            }
        }
        x = next;
    }
    if (variants >= EST_CACHE_MAX_VARIANTS && oldest != NULL) {
        unlink_locked(s, sh, oldest, &dead);
        atomic_fetch_add_explicit(&s->evictions, 1, memory_order_relaxed);
    }
    /* least recently used out until the new entry fits (it fits an empty shard: checked above) */
    while (sh->bytes + e->_size > sh->budget && sh->lru_tail != NULL) {
        unlink_locked(s, sh, sh->lru_tail, &dead);
        atomic_fetch_add_explicit(&s->evictions, 1, memory_order_relaxed);
    }
    est_cache_entry_addref(e);
    e->_in_store = 1;
    est_cache_entry_t **b = &sh->buckets[h & (sh->nbuckets - 1)];
    e->_hnext = *b;
    *b = e;
    lru_push_locked(sh, e);
    sh->bytes += e->_size;
    ++sh->count;
    /* under the lock, so that a concurrent eviction's decrement never comes first */
    atomic_fetch_add_explicit(&s->bytes, e->_size, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->entries, 1, memory_order_relaxed);
    if (sh->count > sh->nbuckets)
        grow_locked(sh);
    pthread_mutex_unlock(&sh->lock);
    atomic_fetch_add_explicit(&s->inserts, 1, memory_order_relaxed);
    release_all(dead);
    return 0;
}

est_cache_entry_t *est_cache_store_lookup(est_cache_store_t *s, const char *key, size_t key_len, est_cache_header_fn get_header,
                                          void *ctx, est_cache_miss_t *miss)
{
    uint64_t h = est_cache_hash(&s->hkey, key, key_len);
    shard_t *sh = shard_of(s, h);
    est_cache_entry_t *found = NULL;
    int saw_key = 0;
    pthread_mutex_lock(&sh->lock);
    for (est_cache_entry_t *x = sh->buckets[h & (sh->nbuckets - 1)]; x != NULL; x = x->_hnext) {
        if (!same_key(x, h, key, key_len))
            continue;
        saw_key = 1;
        if (vary_matches(x, get_header, ctx)) {
            found = x;
            break;
        }
    }
    if (found != NULL) {
        lru_unlink_locked(sh, found);
        lru_push_locked(sh, found);
        est_cache_entry_addref(found);
    }
    pthread_mutex_unlock(&sh->lock);
    if (found != NULL) {
        atomic_fetch_add_explicit(&s->hits, 1, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&s->misses, 1, memory_order_relaxed);
        if (miss != NULL)
            *miss = saw_key ? EST_CACHE_MISS_VARY : EST_CACHE_MISS_URI;
    }
    return found;
}

/* what a purge removes: the entries of one key (hash `hash`), or every key starting `prefix` */
typedef struct purge_match {
    const char *key;
    size_t len;
    uint64_t hash;
    int prefix;
} purge_match_t;

static int purge_hit(const est_cache_entry_t *x, const purge_match_t *m)
{
    if (m->prefix)
        return x->_key_len >= m->len && memcmp(x->_key, m->key, m->len) == 0;
    return same_key(x, m->hash, m->key, m->len);
}

/*
 * Unlinks every entry of sh that m matches, walking the key's bucket chain for one key and the
 * whole LRU list for a prefix; the entries are released after the lock is dropped. Returns how
 * many were removed.
 */
static size_t purge_shard(est_cache_store_t *s, shard_t *sh, const purge_match_t *m)
{
    est_cache_entry_t *dead = NULL;
    size_t n = 0;
    pthread_mutex_lock(&sh->lock);
    est_cache_entry_t *x = m->prefix ? sh->lru_head : sh->buckets[m->hash & (sh->nbuckets - 1)];
    while (x != NULL) {
        est_cache_entry_t *next = m->prefix ? x->_lru_next : x->_hnext;
        if (purge_hit(x, m)) {
            unlink_locked(s, sh, x, &dead);
            ++n;
        }
        x = next;
    }
    pthread_mutex_unlock(&sh->lock);
    release_all(dead);
    return n;
}

size_t est_cache_store_remove(est_cache_store_t *s, const char *key, size_t key_len)
{
    purge_match_t m = {key, key_len, est_cache_hash(&s->hkey, key, key_len), 0};
    size_t n = purge_shard(s, shard_of(s, m.hash), &m);
    atomic_fetch_add_explicit(&s->purged, n, memory_order_relaxed);
    return n;
}

size_t est_cache_store_purge_prefix(est_cache_store_t *s, const char *prefix, size_t prefix_len)
{
    purge_match_t m = {prefix, prefix_len, 0, 1};
    size_t n = 0;
    for (unsigned i = 0; i < s->nshards; ++i)
        n += purge_shard(s, &s->shards[i], &m);
    atomic_fetch_add_explicit(&s->purged, n, memory_order_relaxed);
    return n;
}

void est_cache_store_stats(est_cache_store_t *s, est_cache_stats_t *out)
{
    out->bytes = atomic_load_explicit(&s->bytes, memory_order_relaxed);
    out->entries = atomic_load_explicit(&s->entries, memory_order_relaxed);
    out->hits = atomic_load_explicit(&s->hits, memory_order_relaxed);
    out->misses = atomic_load_explicit(&s->misses, memory_order_relaxed);
    out->evictions = atomic_load_explicit(&s->evictions, memory_order_relaxed);
    out->inserts = atomic_load_explicit(&s->inserts, memory_order_relaxed);
    out->refused = atomic_load_explicit(&s->refused, memory_order_relaxed);
    out->purged = atomic_load_explicit(&s->purged, memory_order_relaxed);
}
