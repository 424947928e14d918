/*
 * estuary - DNS cache: results, TTL rules, the name table (see dns_cache.h).
 */
#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "upstream/dns_cache.h"
#include "common/sockaddr.h"

/* -- results -- */

void est_dns_result_addref(est_dns_result_t *r)
{
    ++r->refcnt;
}

void est_dns_result_release(est_dns_result_t *r)
{
    if (r == NULL)
        return;
    assert(r->refcnt != 0);
    if (--r->refcnt == 0)
        free(r);
}

est_dns_result_t *est_dns_result_new(size_t n)
{
    est_dns_result_t *r = calloc(1, offsetof(est_dns_result_t, addrs) + n * sizeof(est_dns_addr_t));
    if (r != NULL)
        r->refcnt = 1;
    return r;
}

int est_dns_result_add(est_dns_result_t *r, const struct sockaddr *sa, socklen_t len)
{
    est_dns_addr_t a = {0};
    if (est_sockaddr_copy_addr(sa, len, &a.sa, &a.len) != 0)
        return 0;
    for (size_t i = 0; i != r->num_addrs; ++i)
        if (est_sockaddr_equal_addr(&r->addrs[i].sa, &a.sa))
            return 0;
    r->addrs[r->num_addrs++] = a;
    return 1;
}

void est_dns_result_sort(est_dns_result_t *r)
{
    /* insertion sort on the family only: stable, and answers are small */
    for (size_t i = 1; i < r->num_addrs; ++i) {
        if (r->addrs[i].sa.ss_family != AF_INET)
            continue;
        est_dns_addr_t v4 = r->addrs[i];
        size_t j = i;
        while (j > 0 && r->addrs[j - 1].sa.ss_family != AF_INET) {
            r->addrs[j] = r->addrs[j - 1];
            --j;
        }
        r->addrs[j] = v4;
    }
}

int est_dns_result_same_addrs(const est_dns_result_t *a, const est_dns_result_t *b)
{
    /* both sides are deduplicated (est_dns_result_add), so equal counts + inclusion = equality */
    if (a->num_addrs != b->num_addrs)
        return 0;
    for (size_t i = 0; i != a->num_addrs; ++i) {
        size_t j;
        for (j = 0; j != b->num_addrs; ++j)
            if (est_sockaddr_equal_addr(&a->addrs[i].sa, &b->addrs[j].sa))
                break;
        if (j == b->num_addrs)
            return 0;
    }
    return 1;
}

int est_dns_parse_literal(const char *name, est_dns_addr_t *out)
{
    memset(out, 0, sizeof(*out));
    return est_sockaddr_parse_ip(name, &out->sa, &out->len);
}

int est_dns_name_is_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > EST_DNS_NAME_MAX || (len == EST_DNS_NAME_MAX && name[len - 1] != '.'))
        return 0;
    for (size_t i = 0; i != len; ++i) {
        unsigned char c = (unsigned char)name[i];
        if (c <= 0x20 || c >= 0x7f)
            return 0;
    }
    return 1;
}

/* -- TTL rules -- */

uint64_t est_dns_clamp_ttl(const est_dns_conf_t *conf, int64_t ttl_s)
{
    uint64_t ms = ttl_s <= 0 ? 0 : (uint64_t)ttl_s * 1000;
    if (ms < conf->min_ttl_ms)
        ms = conf->min_ttl_ms;
    if (ms > conf->max_ttl_ms)
        ms = conf->max_ttl_ms;
    return ms;
}

uint64_t est_dns_refresh_window(uint64_t ttl_ms)
{
    uint64_t w = ttl_ms / 10, floor = ttl_ms / 2 < 1000 ? ttl_ms / 2 : 1000;
    return w > floor ? w : floor;
}

/* -- entries -- */

est_dns_entry_state_t est_dns_entry_state(const est_dns_entry_t *e, uint64_t now)
{
    if (e->result != NULL) {
        if (e->permanent || now < e->expires_at)
            return EST_DNS_ENTRY_FRESH;
        if (now < e->stale_until)
            return e->neg_status != EST_DNS_OK ? EST_DNS_ENTRY_STALE : EST_DNS_ENTRY_EXPIRED;
    }
    if (e->neg_status != EST_DNS_OK && now < e->neg_until)
        return EST_DNS_ENTRY_NEGATIVE;
    return EST_DNS_ENTRY_MISS;
}

int est_dns_entry_refresh_due(const est_dns_entry_t *e, uint64_t now)
{
    if (e->querying || e->permanent)
        return 0;
    switch (est_dns_entry_state(e, now)) {
    case EST_DNS_ENTRY_FRESH:
        /* after a failed early refresh, wait negative_ttl before trying again; never ask
         * sooner than min_ttl after the answer */
        return now + est_dns_refresh_window(e->ttl_ms) >= e->expires_at && now >= e->neg_until && now >= e->refresh_from;
    case EST_DNS_ENTRY_STALE:
        return now >= e->neg_until;
    default:
        return 0;
    }
}

void est_dns_entry_store_answer(est_dns_cache_t *cache, est_dns_entry_t *e, est_dns_result_t *r, uint64_t ttl_ms,
                                uint64_t now, const est_dns_conf_t *conf, uint64_t *next_generation)
{
    if (e->result != NULL && est_dns_result_same_addrs(e->result, r)) {
        r->generation = e->result->generation;
    } else {
        r->generation = (*next_generation)++;
    }
    if (e->result != NULL)
        est_dns_cache_bury(cache, e->result);
    e->result = r;
    e->ttl_ms = ttl_ms;
    e->expires_at = now + ttl_ms;
    e->stale_until = e->expires_at + conf->stale_ttl_ms;
    e->refresh_from = now + conf->min_ttl_ms;
    e->neg_status = EST_DNS_OK;
    e->neg_until = 0;
}

void est_dns_entry_store_failure(est_dns_cache_t *cache, est_dns_entry_t *e, est_dns_status_t st, uint64_t now,
                                 const est_dns_conf_t *conf)
{
    assert(st != EST_DNS_OK);
    e->neg_status = st;
    e->neg_until = now + conf->negative_ttl_ms;
    if (e->result != NULL && !e->permanent && now >= e->stale_until) {
        est_dns_cache_bury(cache, e->result);
        e->result = NULL;
    }
}

est_dns_status_t est_dns_entry_serve(const est_dns_entry_t *e, uint64_t now, est_dns_result_t **result, int *is_stale)
{
    *result = NULL;
    *is_stale = 0;
    switch (est_dns_entry_state(e, now)) {
    case EST_DNS_ENTRY_FRESH:
        *result = e->result;
        return EST_DNS_OK;
    case EST_DNS_ENTRY_EXPIRED:
    case EST_DNS_ENTRY_STALE:
        *result = e->result;
        *is_stale = 1;
        return EST_DNS_OK;
    case EST_DNS_ENTRY_NEGATIVE:
        return e->neg_status;
    default:
        return e->neg_status != EST_DNS_OK ? e->neg_status : EST_DNS_FAILURE;
    }
}

/* -- the table -- */

static size_t hash_name(const char *name)
{
    /* FNV-1a over the lower-cased name */
    uint64_t h = 14695981039346656037ull;
    for (; *name != '\0'; ++name) {
        h ^= (unsigned char)h2o_tolower(*name);
        h *= 1099511628211ull;
    }
    return (size_t)h;
}

int est_dns_cache_init(est_dns_cache_t *cache, size_t nbuckets, size_t max)
{
    memset(cache, 0, sizeof(*cache));
    size_t n = 16;
    while (n < nbuckets)
        n *= 2;
    if ((cache->buckets = calloc(n, sizeof(cache->buckets[0]))) == NULL)
        return -1;
    cache->nbuckets = n;
    cache->max = max;
    h2o_linklist_init_anchor(&cache->lru);
    return 0;
}

static void unlink_from_bucket(est_dns_cache_t *cache, est_dns_entry_t *e)
{
    est_dns_entry_t **slot = &cache->buckets[e->hash & (cache->nbuckets - 1)];
    while (*slot != e)
        slot = &(*slot)->hnext;
    *slot = e->hnext;
}

static void free_entry(est_dns_entry_t *e)
{
    est_dns_result_release(e->result);
    free(e->name);
    free(e);
}

void est_dns_cache_dispose(est_dns_cache_t *cache)
{
    while (!h2o_linklist_is_empty(&cache->lru)) {
        est_dns_entry_t *e = H2O_STRUCT_FROM_MEMBER(est_dns_entry_t, lru, cache->lru.next);
        h2o_linklist_unlink(&e->lru);
        free_entry(e);
    }
    est_dns_cache_flush_graveyard(cache);
    free(cache->graveyard);
    free(cache->buckets);
    memset(cache, 0, sizeof(*cache));
}

est_dns_entry_t *est_dns_cache_find(est_dns_cache_t *cache, const char *name)
{
    size_t h = hash_name(name);
    for (est_dns_entry_t *e = cache->buckets[h & (cache->nbuckets - 1)]; e != NULL; e = e->hnext)
        if (e->hash == h && strcasecmp(e->name, name) == 0)
            return e;
    return NULL;
}

static int entry_is_busy(est_dns_entry_t *e)
{
    return e->querying || !h2o_linklist_is_empty(&e->waiters);
}

static void evict_one(est_dns_cache_t *cache)
{
    for (h2o_linklist_t *n = cache->lru.next; n != &cache->lru; n = n->next) {
        est_dns_entry_t *e = H2O_STRUCT_FROM_MEMBER(est_dns_entry_t, lru, n);
        if (entry_is_busy(e))
            continue;
        unlink_from_bucket(cache, e);
        h2o_linklist_unlink(&e->lru);
        --cache->count;
        if (e->result != NULL) {
            est_dns_cache_bury(cache, e->result);
            e->result = NULL;
        }
        free_entry(e);
        return;
    }
}

est_dns_entry_t *est_dns_cache_insert(est_dns_cache_t *cache, const char *name)
{
    est_dns_entry_t *e;

    while (cache->count >= cache->max) {
        size_t before = cache->count;
        evict_one(cache);
        if (cache->count == before)
            break; /* all busy */
    }
    if ((e = calloc(1, sizeof(*e))) == NULL)
        return NULL;
    size_t len = strlen(name);
    if ((e->name = malloc(len + 1)) == NULL) {
        free(e);
        return NULL;
    }
    for (size_t i = 0; i != len; ++i)
        e->name[i] = h2o_tolower(name[i]);
    e->name[len] = '\0';
    e->hash = hash_name(e->name);
    h2o_linklist_init_anchor(&e->waiters);
    size_t b = e->hash & (cache->nbuckets - 1);
    e->hnext = cache->buckets[b];
    cache->buckets[b] = e;
    h2o_linklist_insert(&cache->lru, &e->lru);
    ++cache->count;
    return e;
}

void est_dns_cache_touch(est_dns_cache_t *cache, est_dns_entry_t *e)
{
    h2o_linklist_unlink(&e->lru);
    h2o_linklist_insert(&cache->lru, &e->lru);
}

void est_dns_cache_bury(est_dns_cache_t *cache, est_dns_result_t *r)
{
    if (cache->graveyard_len == cache->graveyard_cap) {
        size_t cap = cache->graveyard_cap == 0 ? 8 : cache->graveyard_cap * 2;
        est_dns_result_t **g = realloc(cache->graveyard, cap * sizeof(*g));
        if (g == NULL) {
            /* cannot defer: release now (only a borrower in the current callback could notice) */
            est_dns_result_release(r);
            return;
        }
        cache->graveyard = g;
        cache->graveyard_cap = cap;
    }
    cache->graveyard[cache->graveyard_len++] = r;
}

void est_dns_cache_flush_graveyard(est_dns_cache_t *cache)
{
    for (size_t i = 0; i != cache->graveyard_len; ++i)
        est_dns_result_release(cache->graveyard[i]);
    cache->graveyard_len = 0;
}
