#include "policy/tokencache.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#define NIL UINT32_MAX

struct entry {
    unsigned char key[32];
    json_t *claims; /* NULL: slot free */
    int64_t expires;
    size_t cost;
    uint32_t next; /* bucket chain */
    unsigned char referenced;
};

struct st_est_tokencache_t {
    struct entry *slots;
    uint32_t *buckets;
    size_t nslots, nbuckets; /* nbuckets: a power of two >= nslots */
    size_t count, bytes, max_bytes;
    size_t hand;
    uint32_t free_head; /* free slots chained through `next` */
    int64_t max_ttl;
};

est_tokencache_t *est_tokencache_create(size_t max_entries, size_t max_bytes, int64_t max_ttl)
{
    if (max_entries == 0 || max_entries > (1u << 24))
        return NULL;
    est_tokencache_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->nslots = max_entries;
    c->nbuckets = 1;
    while (c->nbuckets < max_entries)
        c->nbuckets <<= 1;
    c->slots = calloc(c->nslots, sizeof(*c->slots));
    c->buckets = malloc(c->nbuckets * sizeof(*c->buckets));
    if (c->slots == NULL || c->buckets == NULL) {
        est_tokencache_destroy(c);
        return NULL;
    }
    c->max_bytes = max_bytes;
    c->max_ttl = max_ttl;
    est_tokencache_clear(c);
    return c;
}

void est_tokencache_clear(est_tokencache_t *c)
{
    for (size_t i = 0; i < c->nbuckets; i++)
        c->buckets[i] = NIL;
    for (size_t i = 0; i < c->nslots; i++) {
        json_decref(c->slots[i].claims);
        c->slots[i].claims = NULL;
        c->slots[i].next = i + 1 < c->nslots ? (uint32_t)(i + 1) : NIL;
    }
    c->free_head = 0;
    c->count = c->bytes = c->hand = 0;
}

void est_tokencache_destroy(est_tokencache_t *c)
{
    if (c == NULL)
        return;
    if (c->slots != NULL && c->buckets != NULL)
        est_tokencache_clear(c);
    free(c->slots);
    free(c->buckets);
    free(c);
}

void est_tokencache_key(const char *token, size_t len, unsigned char key[32])
{
    SHA256((const unsigned char *)token, len, key);
}

/* The key is a SHA-256 output: its first bytes are already uniformly spread. */
static size_t bucket_of(const est_tokencache_t *c, const unsigned char key[32])
{
    uint64_t h;
    memcpy(&h, key, sizeof(h));
    return (size_t)(h & (c->nbuckets - 1));
}

/* Unlinks slot `idx` from its bucket and frees it. */
static void remove_slot(est_tokencache_t *c, uint32_t idx)
{
    struct entry *e = &c->slots[idx];
    uint32_t *link = &c->buckets[bucket_of(c, e->key)];
    while (*link != idx)
        link = &c->slots[*link].next;
    *link = e->next;
    json_decref(e->claims);
    e->claims = NULL;
    c->count--;
    c->bytes -= e->cost;
    e->next = c->free_head;
    c->free_head = idx;
}

static uint32_t find(const est_tokencache_t *c, const unsigned char key[32])
{
    for (uint32_t i = c->buckets[bucket_of(c, key)]; i != NIL; i = c->slots[i].next)
        if (memcmp(c->slots[i].key, key, 32) == 0)
            return i;
    return NIL;
}

const json_t *est_tokencache_get(est_tokencache_t *c, const unsigned char key[32], int64_t now)
{
    uint32_t i = find(c, key);
    if (i == NIL)
        return NULL;
    if (now >= c->slots[i].expires) {
        remove_slot(c, i);
        return NULL;
    }
    c->slots[i].referenced = 1;
    return c->slots[i].claims;
}

/* CLOCK: advance the hand over occupied slots, giving referenced ones a second chance. The
 * loop ends within two turns since the first turn clears every bit. */
static void evict_one(est_tokencache_t *c)
{
    for (;;) {
        struct entry *e = &c->slots[c->hand];
        uint32_t idx = (uint32_t)c->hand;
        c->hand = (c->hand + 1) % c->nslots;
        if (e->claims == NULL)
            continue;
        if (e->referenced) {
            e->referenced = 0;
            continue;
        }
        remove_slot(c, idx);
        return;
    }
}

int est_tokencache_put(est_tokencache_t *c, const unsigned char key[32], json_t *claims, int64_t exp, int64_t now,
                       size_t cost)
{
    int64_t expires = exp;
    if (c->max_ttl >= 0 && now <= INT64_MAX - c->max_ttl && now + c->max_ttl < expires)
        expires = now + c->max_ttl;
    if (claims == NULL || expires <= now || cost > c->max_bytes) {
        json_decref(claims);
        return -1;
    }
    uint32_t old = find(c, key);
    if (old != NIL)
        remove_slot(c, old);
    while (c->count != 0 && (c->count == c->nslots || c->bytes + cost > c->max_bytes))
        evict_one(c);

    uint32_t idx = c->free_head;
    struct entry *e = &c->slots[idx];
    c->free_head = e->next;
    memcpy(e->key, key, 32);
    e->claims = claims;
    e->expires = expires;
    e->cost = cost;
    e->referenced = 0;
    size_t b = bucket_of(c, key);
    e->next = c->buckets[b];
    c->buckets[b] = idx;
    c->count++;
    c->bytes += cost;
    return 0;
}

size_t est_tokencache_count(const est_tokencache_t *c)
{
    return c->count;
}

size_t est_tokencache_bytes(const est_tokencache_t *c)
{
    return c->bytes;
}
