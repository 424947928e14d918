/*
 * Unit tests for the cache store (src/cache/store.c, hash.c): keys, entries, hits by
 * reference, LRU eviction at max_size, max_entry refusal, replacement, purges, Vary matching,
 * reference lifetimes across eviction and destroy (run under ASan: an early free or a leak
 * fails), the single-refresh flag, and 4 threads inserting, looking up and purging at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <cmocka.h>

#include "cache/hash.h"
#include "cache/store.h"

#define S(lit) lit, sizeof(lit) - 1
#define SPAN(lit) ((est_cache_span_t){lit, sizeof(lit) - 1})

/* request headers for the callbacks: lower-case names, NULL-terminated */
typedef struct {
    const char *name, *value;
} hdr_t;

static int get_hdr(void *ctx, const char *name, size_t name_len, const char **value, size_t *value_len)
{
    for (const hdr_t *h = ctx; h != NULL && h->name != NULL; ++h) {
        if (strlen(h->name) == name_len && memcmp(h->name, name, name_len) == 0) {
            *value = h->value;
            *value_len = strlen(h->value);
            return 1;
        }
    }
    return 0;
}

static size_t key_of(char *buf, const char *route, const char *path, const char *method, const char *query, const hdr_t *req,
                     const est_cache_span_t *vary, size_t num_vary)
{
    est_cache_key_parts_t p = {.route = {route, strlen(route)},
                               .path = {path, strlen(path)},
                               .method = {method, strlen(method)},
                               .query = {query, query ? strlen(query) : 0},
                               .vary = vary,
                               .num_vary = num_vary};
    return est_cache_key_build(buf, EST_CACHE_MAX_KEY, &p, get_hdr, (void *)req);
}

/* an entry under `key` with `body`, Vary names `vary` recorded against request `req` */
static est_cache_entry_t *make(const char *key, size_t klen, const char *body, const est_cache_span_t *vary, size_t num_vary,
                               const hdr_t *req, size_t max_bytes)
{
    const est_cache_field_t hdrs[] = {
        {S("content-type"), S("text/plain")},
        {S("Age"), S("5")},
        {S("set-cookie"), S("a=b")},
        {S("etag"), S("\"x\"")},
    };
    est_cache_decision_t d = {.storable = 1, .lifetime_ms = 1000, .stale_while_revalidate_ms = 2, .stale_if_error_ms = 3};
    est_cache_entry_init_t init = {.key = key,
                                   .key_len = klen,
                                   .status = 200,
                                   .headers = hdrs,
                                   .num_headers = 4,
                                   .vary = vary,
                                   .num_vary = num_vary,
                                   .get_header = get_hdr,
                                   .ctx = (void *)req,
                                   .decision = &d,
                                   .body_reserve = body ? strlen(body) : 0,
                                   .max_bytes = max_bytes,
                                   .now_ms = 42};
    est_cache_entry_t *e = est_cache_entry_create(&init);
    if (e != NULL && body != NULL && est_cache_entry_append(e, body, strlen(body)) != 0) {
        est_cache_entry_release(e);
        return NULL;
    }
    return e;
}

static void test_siphash_vector(void **state)
{
    (void)state;
    /* the SipHash-2-4 paper's test vector: key 00..0f, message 00..0e */
    est_cache_hash_key_t k = {0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};
    unsigned char m[15];
    for (int i = 0; i < 15; ++i)
        m[i] = (unsigned char)i;
    assert_int_equal(est_cache_hash(&k, m, 15), 0xa129ca6149be45e5ull);
    est_cache_hash_key_t r1, r2;
    est_cache_hash_key_init(&r1);
    est_cache_hash_key_init(&r2);
    assert_true(r1.k0 != r2.k0 || r1.k1 != r2.k1);
}

static void test_keys(void **state)
{
    (void)state;
    char a[EST_CACHE_MAX_KEY], b[EST_CACHE_MAX_KEY], p[EST_CACHE_MAX_KEY];
    const est_cache_span_t lang[] = {SPAN("Accept-Language")};
    const hdr_t en[] = {{"accept-language", " en "}, {NULL, NULL}}, en2[] = {{"accept-language", "en"}, {NULL, NULL}},
                fr[] = {{"accept-language", "fr"}, {NULL, NULL}}, empty[] = {{"accept-language", ""}, {NULL, NULL}};
    size_t la = key_of(a, "/r/{id}", "/r/1", "GET", "x=1", en, lang, 1);
    size_t lb = key_of(b, "/r/{id}", "/r/1", "GET", "x=1", en2, lang, 1);
    assert_true(la > 0);
    assert_int_equal(la, lb); /* OWS trimmed */
    assert_memory_equal(a, b, la);
    lb = key_of(b, "/r/{id}", "/r/1", "GET", "x=1", fr, lang, 1);
    assert_true(la != lb || memcmp(a, b, la) != 0);
    /* absent and empty differ, for headers and for the query */
    la = key_of(a, "/r/{id}", "/r/1", "GET", NULL, NULL, lang, 1);
    lb = key_of(b, "/r/{id}", "/r/1", "GET", "", empty, lang, 1);
    assert_true(la != lb || memcmp(a, b, la) != 0);
    lb = key_of(b, "/r/{id}", "/r/1", "GET", NULL, empty, lang, 1);
    assert_true(la != lb || memcmp(a, b, la) != 0);
    /* field boundaries cannot be shifted: ("/r/1", "GET") vs ("/r/1G", "ET") */
    la = key_of(a, "/r", "/r/1", "GET", NULL, NULL, NULL, 0);
    lb = key_of(b, "/r", "/r/1G", "ET", NULL, NULL, NULL, 0);
    assert_true(la != lb || memcmp(a, b, la) != 0);
    /* every key of (route, path) starts with its prefix; a longer path does not */
    size_t lp = est_cache_key_prefix(p, sizeof(p), S("/r"), S("/r/1"));
    assert_true(lp > 0 && lp < la);
    assert_memory_equal(a, p, lp);
    lb = key_of(b, "/r", "/r/10", "GET", NULL, NULL, NULL, 0);
    assert_true(memcmp(b, p, lp) != 0);
    /* too long: 0 */
    char *huge = malloc(EST_CACHE_MAX_KEY + 1);
    assert_non_null(huge);
    memset(huge, 'a', EST_CACHE_MAX_KEY);
    huge[EST_CACHE_MAX_KEY] = '\0';
    assert_int_equal(key_of(a, "/r", huge, "GET", NULL, NULL, NULL, 0), 0);
    assert_int_equal(est_cache_key_prefix(p, 8, S("/r"), S("/r/1")), 0);
    free(huge);
}

static void test_entry_and_hit_by_reference(void **state)
{
    (void)state;
    est_cache_store_t *s = est_cache_store_create(1 << 20, 1 << 16, 0);
    assert_non_null(s);
    char k[EST_CACHE_MAX_KEY];
    size_t kl = key_of(k, "/r", "/r/1", "GET", NULL, NULL, NULL, 0);
    est_cache_entry_t *e = make(k, kl, "hello", NULL, 0, NULL, 0);
    assert_non_null(e);
    assert_int_equal(e->status, 200);
    assert_int_equal(e->num_headers, 2); /* Age and Set-Cookie are not kept */
    assert_memory_equal(e->headers[0].name, "content-type", 12);
    assert_memory_equal(e->headers[1].value, "\"x\"", 3);
    assert_int_equal(e->lifetime_ms, 1000);
    assert_int_equal(e->stale_if_error_ms, 3);
    assert_int_equal(e->stored_at_ms, 42);
    assert_int_equal(est_cache_store_insert(s, e), 0);
    assert_int_equal(est_cache_entry_append(e, "x", 1), -1); /* frozen */
    assert_int_equal(est_cache_store_insert(s, e), -1);      /* already in */
    est_cache_miss_t miss;
    est_cache_entry_t *h1 = est_cache_store_lookup(s, k, kl, NULL, NULL, &miss);
    est_cache_entry_t *h2 = est_cache_store_lookup(s, k, kl, NULL, NULL, &miss);
    assert_ptr_equal(h1, e);
    assert_ptr_equal(h2, e);
    assert_ptr_equal(h1->body, h2->body); /* by reference: one body */
    assert_int_equal(h1->body_len, 5);
    assert_memory_equal(h1->body, "hello", 5);
    assert_int_equal(atomic_load(&e->_refcnt), 4); /* creator, store, two hits */
    est_cache_entry_release(h1);
    est_cache_entry_release(h2);
    est_cache_entry_release(e);
    assert_null(est_cache_store_lookup(s, k, kl - 1, NULL, NULL, &miss));
    assert_int_equal(miss, EST_CACHE_MISS_URI);
    est_cache_stats_t st;
    est_cache_store_stats(s, &st);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.inserts, 1);
    assert_int_equal(st.refused, 1);
    assert_int_equal(st.bytes, est_cache_entry_size(e));
    /* an empty body, and a bodiless entry: body is "" never NULL */
    est_cache_entry_t *z = make(k, kl, NULL, NULL, 0, NULL, 0);
    est_cache_entry_freeze(z);
    assert_non_null(z->body);
    assert_int_equal(z->body_len, 0);
    est_cache_entry_release(z);
    est_cache_store_destroy(s);
}

static void test_lru_eviction_at_max_size(void **state)
{
    (void)state;
    char k[4][EST_CACHE_MAX_KEY];
    size_t kl[4];
    const char *paths[] = {"/a", "/b", "/c", "/d"};
    for (int i = 0; i < 4; ++i)
        kl[i] = key_of(k[i], "/r", paths[i], "GET", NULL, NULL, NULL, 0);
    est_cache_entry_t *probe = make(k[0], kl[0], "0123456789", NULL, 0, NULL, 0);
    est_cache_entry_freeze(probe);
    size_t one = est_cache_entry_size(probe);
    est_cache_entry_release(probe);

    /* room for three entries, one shard: an exact LRU */
    est_cache_store_t *s = est_cache_store_create(3 * one + one / 2, one, 1);
    est_cache_entry_t *e;
    for (int i = 0; i < 3; ++i) {
        assert_non_null(e = make(k[i], kl[i], "0123456789", NULL, 0, NULL, 0));
        assert_int_equal(est_cache_store_insert(s, e), 0);
        est_cache_entry_release(e);
    }
    /* /a used: /b is now least recent and goes when /d arrives */
    assert_non_null(e = est_cache_store_lookup(s, k[0], kl[0], NULL, NULL, NULL));
    est_cache_entry_release(e);
    assert_non_null(e = make(k[3], kl[3], "0123456789", NULL, 0, NULL, 0));
    assert_int_equal(est_cache_store_insert(s, e), 0);
    est_cache_entry_release(e);
    est_cache_stats_t st;
    est_cache_store_stats(s, &st);
    assert_int_equal(st.entries, 3);
    assert_int_equal(st.evictions, 1);
    assert_true(st.bytes <= 3 * one + one / 2);
    est_cache_miss_t miss;
    assert_null(est_cache_store_lookup(s, k[1], kl[1], NULL, NULL, &miss));
    for (int i = 0; i < 4; ++i) {
        if (i == 1)
            continue;
        assert_non_null(e = est_cache_store_lookup(s, k[i], kl[i], NULL, NULL, NULL));
        est_cache_entry_release(e);
    }
    /* one bigger entry pushes out as many as it needs, oldest first */
    est_cache_store_destroy(s);
    s = est_cache_store_create(3 * one + one / 2, 3 * one, 1);
    for (int i = 0; i < 3; ++i) {
        assert_non_null(e = make(k[i], kl[i], "0123456789", NULL, 0, NULL, 0));
        assert_int_equal(est_cache_store_insert(s, e), 0);
        est_cache_entry_release(e);
    }
    char *big = malloc(one + 1); /* an entry of almost two: pushes out two */
    assert_non_null(big);
    memset(big, 'x', one);
    big[one] = '\0';
    assert_non_null(e = make(k[3], kl[3], big, NULL, 0, NULL, 0));
    free(big);
    size_t bigsz = est_cache_entry_size(e);
    assert_true(bigsz > one + one / 2 && bigsz < 2 * one);
    assert_int_equal(est_cache_store_insert(s, e), 0);
    est_cache_entry_release(e);
    est_cache_store_stats(s, &st);
    assert_int_equal(st.entries, 2);
    assert_null(est_cache_store_lookup(s, k[0], kl[0], NULL, NULL, NULL));
    assert_non_null(e = est_cache_store_lookup(s, k[2], kl[2], NULL, NULL, NULL));
    est_cache_entry_release(e);
    assert_true(st.bytes <= 3 * one + one / 2);
    est_cache_store_destroy(s);
}

static void test_max_entry_refused(void **state)
{
    (void)state;
    char k[EST_CACHE_MAX_KEY];
    size_t kl = key_of(k, "/r", "/big", "GET", NULL, NULL, NULL, 0);
    est_cache_store_t *s = est_cache_store_create(1 << 20, 1000, 0);
    char body[2000];
    memset(body, 'b', sizeof(body) - 1);
    body[sizeof(body) - 1] = '\0';
    /* the builder stops at max_bytes */
    est_cache_entry_t *e = make(k, kl, NULL, NULL, 0, NULL, 1000);
    assert_non_null(e);
    assert_int_equal(est_cache_entry_append(e, body, 1999), -1);
    size_t room = 1000 - est_cache_entry_size(e);
    assert_int_equal(est_cache_entry_append(e, body, room), 0);
    assert_int_equal(est_cache_entry_size(e), 1000);
    assert_int_equal(est_cache_entry_append(e, body, 1), -1);
    assert_int_equal(est_cache_store_insert(s, e), 0); /* exactly max_entry: kept */
    est_cache_entry_release(e);
    /* built without a limit, refused by the store */
    assert_non_null(e = make(k, kl, body, NULL, 0, NULL, 0));
    assert_int_equal(est_cache_store_insert(s, e), -1);
    est_cache_entry_release(e);
    /* a header block over the limit: not even created; too many headers; too long a key */
    assert_null(make(k, kl, NULL, NULL, 0, NULL, 100));
    est_cache_field_t many[EST_CACHE_MAX_HEADERS + 1];
    for (size_t i = 0; i < EST_CACHE_MAX_HEADERS + 1; ++i)
        many[i] = (est_cache_field_t){S("x"), S("y")};
    est_cache_entry_init_t init = {
        .key = k, .key_len = kl, .status = 200, .headers = many, .num_headers = EST_CACHE_MAX_HEADERS + 1};
    assert_null(est_cache_entry_create(&init));
    init.num_headers = EST_CACHE_MAX_HEADERS;
    assert_non_null(e = est_cache_entry_create(&init));
    est_cache_entry_release(e);
    /* a Content-Length claim is not memory: the reservation is capped */
    init.body_reserve = SIZE_MAX / 2;
    assert_non_null(e = est_cache_entry_create(&init));
    assert_true(e->_body_cap <= (1u << 20));
    assert_int_equal(est_cache_entry_append(e, "abc", 3), 0);
    est_cache_entry_release(e);
    init.body_reserve = 0;
    init.key_len = EST_CACHE_MAX_KEY + 1;
    assert_null(est_cache_entry_create(&init));
    /* an empty key is only for coalescing replies */
    init.key_len = 0;
    assert_non_null(e = est_cache_entry_create(&init));
    assert_int_equal(est_cache_store_insert(s, e), -1);
    est_cache_entry_release(e);
    est_cache_stats_t st;
    est_cache_store_stats(s, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.refused, 2);
    est_cache_store_destroy(s);
}

static void test_refcount_outlives_eviction_and_destroy(void **state)
{
    (void)state;
    char k1[EST_CACHE_MAX_KEY], k2[EST_CACHE_MAX_KEY];
    size_t l1 = key_of(k1, "/r", "/1", "GET", NULL, NULL, NULL, 0), l2 = key_of(k2, "/r", "/2", "GET", NULL, NULL, NULL, 0);
    char body[600];
    memset(body, 'q', sizeof(body) - 1);
    body[sizeof(body) - 1] = '\0';
    est_cache_entry_t *e = make(k1, l1, body, NULL, 0, NULL, 0);
    est_cache_entry_freeze(e);
    est_cache_store_t *s = est_cache_store_create(est_cache_entry_size(e) + 100, 0, 1);
    assert_int_equal(est_cache_store_insert(s, e), 0);
    est_cache_entry_release(e);
    est_cache_entry_t *hit = est_cache_store_lookup(s, k1, l1, NULL, NULL, NULL);
    assert_non_null(hit);
    /* a second entry evicts the first while a client still sends it */
    est_cache_entry_t *e2 = make(k2, l2, body, NULL, 0, NULL, 0);
    assert_int_equal(est_cache_store_insert(s, e2), 0);
    assert_null(est_cache_store_lookup(s, k1, l1, NULL, NULL, NULL));
    assert_int_equal(hit->body_len, 599);
    assert_int_equal(hit->body[598], 'q'); /* still readable: ASan would report a freed body */
    est_cache_entry_release(hit);
    /* replaced while referenced, then the store destroyed while referenced */
    est_cache_entry_t *hit2 = est_cache_store_lookup(s, k2, l2, NULL, NULL, NULL);
    est_cache_entry_t *e3 = make(k2, l2, "new", NULL, 0, NULL, 0);
    assert_int_equal(est_cache_store_insert(s, e3), 0);
    est_cache_entry_t *now = est_cache_store_lookup(s, k2, l2, NULL, NULL, NULL);
    assert_ptr_equal(now, e3);
    est_cache_entry_release(now);
    est_cache_store_destroy(s);
    assert_memory_equal(hit2->body, body, 599);
    assert_memory_equal(e3->body, "new", 3);
    est_cache_entry_release(hit2);
    est_cache_entry_release(e2);
    est_cache_entry_release(e3); /* the last references: LeakSanitizer checks nothing is left */
}

static void test_purge(void **state)
{
    (void)state;
    est_cache_store_t *s = est_cache_store_create(1 << 20, 0, 0);
    const est_cache_span_t ae[] = {SPAN("Accept-Encoding")};
    const hdr_t gz[] = {{"accept-encoding", "gzip"}, {NULL, NULL}}, br[] = {{"accept-encoding", "br"}, {NULL, NULL}};
    struct {
        const char *route, *path, *method, *query;
        const hdr_t *req;
    } items[] = {
        {"/r/{id}", "/r/1", "GET", NULL, gz},  {"/r/{id}", "/r/1", "GET", NULL, br},  {"/r/{id}", "/r/1", "GET", "a=1", gz},
        {"/r/{id}", "/r/1", "HEAD", NULL, gz}, {"/r/{id}", "/r/10", "GET", NULL, gz}, {"/r/{x}", "/r/1", "GET", NULL, gz},
    };
    char k[EST_CACHE_MAX_KEY];
    for (size_t i = 0; i < 6; ++i) {
        size_t kl = key_of(k, items[i].route, items[i].path, items[i].method, items[i].query, NULL, NULL, 0);
        est_cache_entry_t *e = make(k, kl, "b", ae, 1, items[i].req, 0);
        assert_int_equal(est_cache_store_insert(s, e), 0);
        est_cache_entry_release(e);
    }
    est_cache_stats_t st;
    est_cache_store_stats(s, &st);
    assert_int_equal(st.entries, 6);
    /* by exact key: both Vary variants of GET /r/1 */
    size_t kl = key_of(k, "/r/{id}", "/r/1", "GET", NULL, NULL, NULL, 0);
    assert_int_equal(est_cache_store_remove(s, k, kl), 2);
    assert_int_equal(est_cache_store_remove(s, k, kl), 0);
    /* by route + path: the query and HEAD variants, not /r/10, not the other route */
    char p[EST_CACHE_MAX_KEY];
    size_t pl = est_cache_key_prefix(p, sizeof(p), S("/r/{id}"), S("/r/1"));
    assert_int_equal(est_cache_store_purge_prefix(s, p, pl), 2);
    est_cache_store_stats(s, &st);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.purged, 4);
    kl = key_of(k, "/r/{id}", "/r/10", "GET", NULL, NULL, NULL, 0);
    est_cache_entry_t *e = est_cache_store_lookup(s, k, kl, get_hdr, (void *)gz, NULL);
    assert_non_null(e);
    est_cache_entry_release(e);
    kl = key_of(k, "/r/{x}", "/r/1", "GET", NULL, NULL, NULL, 0);
    assert_non_null(e = est_cache_store_lookup(s, k, kl, get_hdr, (void *)gz, NULL));
    est_cache_entry_release(e);
    /* the whole route */
    assert_int_equal(est_cache_key_route_prefix(p, 4, S("/r/{id}")), 0);
    pl = est_cache_key_route_prefix(p, sizeof(p), S("/r/{id}"));
    assert_int_equal(est_cache_store_purge_prefix(s, p, pl), 1);
    est_cache_store_stats(s, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.bytes, est_cache_entry_size(e));
    est_cache_store_destroy(s);
}

static void test_vary(void **state)
{
    (void)state;
    est_cache_store_t *s = est_cache_store_create(1 << 20, 0, 0);
    char k[EST_CACHE_MAX_KEY];
    size_t kl = key_of(k, "/r", "/v", "GET", NULL, NULL, NULL, 0);
    const est_cache_span_t ae[] = {SPAN("Accept-Encoding")};
    const hdr_t gz[] = {{"accept-encoding", "gzip"}, {NULL, NULL}}, gz_ows[] = {{"accept-encoding", "\tgzip "}, {NULL, NULL}},
                br[] = {{"accept-encoding", "br"}, {NULL, NULL}}, empty[] = {{"accept-encoding", ""}, {NULL, NULL}};
    est_cache_entry_t *e = make(k, kl, "gzip-body", ae, 1, gz, 0), *h;
    assert_int_equal(est_cache_store_insert(s, e), 0);
    est_cache_entry_release(e);
    est_cache_miss_t miss;
    assert_non_null(h = est_cache_store_lookup(s, k, kl, get_hdr, (void *)gz_ows, &miss));
    assert_memory_equal(h->body, "gzip-body", 9);
    est_cache_entry_release(h);
    assert_null(est_cache_store_lookup(s, k, kl, get_hdr, (void *)br, &miss));
    assert_int_equal(miss, EST_CACHE_MISS_VARY);
    assert_null(est_cache_store_lookup(s, k, kl, get_hdr, NULL, &miss));
    assert_int_equal(miss, EST_CACHE_MISS_VARY);
    /* absent and empty are different variants */
    e = make(k, kl, "plain", ae, 1, NULL, 0);
    assert_int_equal(est_cache_store_insert(s, e), 0);
    est_cache_entry_release(e);
    assert_non_null(h = est_cache_store_lookup(s, k, kl, get_hdr, NULL, &miss));
    assert_memory_equal(h->body, "plain", 5);
    est_cache_entry_release(h);
    assert_null(est_cache_store_lookup(s, k, kl, get_hdr, (void *)empty, &miss));
    /* the same variant again replaces; a reply without Vary matches everyone, the most recent first */
    e = make(k, kl, "gzip-2", ae, 1, gz, 0);
    assert_int_equal(est_cache_store_insert(s, e), 0);
    est_cache_entry_release(e);
    est_cache_stats_t st;
    est_cache_store_stats(s, &st);
    assert_int_equal(st.entries, 2);
    assert_non_null(h = est_cache_store_lookup(s, k, kl, get_hdr, (void *)gz, &miss));
    assert_memory_equal(h->body, "gzip-2", 6);
    est_cache_entry_release(h);
    e = make(k, kl, "novary", NULL, 0, NULL, 0);
    assert_int_equal(est_cache_store_insert(s, e), 0);
    est_cache_entry_release(e);
    assert_non_null(h = est_cache_store_lookup(s, k, kl, get_hdr, (void *)gz, &miss));
    assert_memory_equal(h->body, "novary", 6);
    est_cache_entry_release(h);
    /* at most EST_CACHE_MAX_VARIANTS per key: the oldest goes */
    est_cache_store_remove(s, k, kl);
    char val[16];
    hdr_t req[] = {{"accept-encoding", val}, {NULL, NULL}};
    for (int i = 0; i < EST_CACHE_MAX_VARIANTS + 3; ++i) {
        snprintf(val, sizeof(val), "v%d", i);
        e = make(k, kl, val, ae, 1, req, 0);
        assert_int_equal(est_cache_store_insert(s, e), 0);
        est_cache_entry_release(e);
    }
    est_cache_store_stats(s, &st);
    assert_int_equal(st.entries, EST_CACHE_MAX_VARIANTS);
    snprintf(val, sizeof(val), "v%d", 2);
    assert_null(est_cache_store_lookup(s, k, kl, get_hdr, req, &miss));
    snprintf(val, sizeof(val), "v%d", 3);
    assert_non_null(h = est_cache_store_lookup(s, k, kl, get_hdr, req, &miss));
    est_cache_entry_release(h);
    est_cache_store_destroy(s);
}

/* --- threads --------------------------------------------------------------------------- */

#define NTHREADS 4
#define NKEYS 64
#define ITERS 20000

typedef struct {
    est_cache_store_t *s;
    est_cache_entry_t *shared;
    unsigned seed;
    long hits, won;
    pthread_barrier_t *barrier;
} worker_t;

static void *hammer(void *arg)
{
    worker_t *w = arg;
    char k[EST_CACHE_MAX_KEY], path[32], body[64];
    pthread_barrier_wait(w->barrier);
    for (int i = 0; i < ITERS; ++i) {
        int n = (int)(rand_r(&w->seed) % NKEYS);
        snprintf(path, sizeof(path), "/k/%d", n);
        size_t kl = key_of(k, "/k/{n}", path, "GET", NULL, NULL, NULL, 0);
        int op = (int)(rand_r(&w->seed) % 100);
        if (op < 70) {
            est_cache_entry_t *e = est_cache_store_lookup(w->s, k, kl, NULL, NULL, NULL);
            if (e != NULL) {
                /* the body names its key: a torn or recycled entry shows */
                snprintf(body, sizeof(body), "body of %s", path);
                if (e->body_len != strlen(body) || memcmp(e->body, body, e->body_len) != 0)
                    abort();
                ++w->hits;
                est_cache_entry_release(e);
            }
        } else if (op < 97) {
            snprintf(body, sizeof(body), "body of %s", path);
            est_cache_entry_t *e = make(k, kl, body, NULL, 0, NULL, 0);
            if (e == NULL)
                abort();
            est_cache_store_insert(w->s, e);
            est_cache_entry_release(e);
        } else if (op < 99) {
            est_cache_store_remove(w->s, k, kl);
        } else {
            char p[EST_CACHE_MAX_KEY];
            size_t pl = est_cache_key_prefix(p, sizeof(p), S("/k/{n}"), path, strlen(path));
            est_cache_store_purge_prefix(w->s, p, pl);
        }
        if (est_cache_entry_try_refresh(w->shared))
            ++w->won; /* never released: exactly one winner overall */
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    /* small enough that evictions run all the time, 4 shards */
    est_cache_entry_t *probe = make(S("0123456789abcdef0123456789abcdef"), "body of /k/00", NULL, 0, NULL, 0);
    est_cache_entry_freeze(probe);
    est_cache_store_t *s = est_cache_store_create(est_cache_entry_size(probe) * 24, est_cache_entry_size(probe) * 2, 4);
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, NTHREADS);
    worker_t w[NTHREADS];
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; ++i) {
        w[i] = (worker_t){.s = s, .shared = probe, .seed = (unsigned)(i * 7919 + 1), .barrier = &barrier};
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &w[i]), 0);
    }
    long hits = 0, won = 0;
    for (int i = 0; i < NTHREADS; ++i) {
        pthread_join(t[i], NULL);
        hits += w[i].hits;
        won += w[i].won;
    }
    pthread_barrier_destroy(&barrier);
    assert_int_equal(won, 1);
    assert_true(hits > 0);
    est_cache_stats_t st;
    est_cache_store_stats(s, &st);
    assert_int_equal(st.hits, (uint64_t)hits);
    assert_true(st.evictions > 0);
    assert_true(st.bytes <= est_cache_entry_size(probe) * 24);
    /* the counters agree with what is left */
    size_t left = 0;
    char k[EST_CACHE_MAX_KEY], path[32];
    for (int n = 0; n < NKEYS; ++n) {
        snprintf(path, sizeof(path), "/k/%d", n);
        size_t kl = key_of(k, "/k/{n}", path, "GET", NULL, NULL, NULL, 0);
        left += est_cache_store_remove(s, k, kl);
    }
    assert_int_equal(left, st.entries);
    est_cache_store_stats(s, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
    est_cache_store_destroy(s);
    est_cache_entry_release(probe);
}

static void test_single_refresh(void **state)
{
    (void)state;
    est_cache_entry_t *e = make(S("k"), "b", NULL, 0, NULL, 0);
    assert_true(est_cache_entry_try_refresh(e));
    assert_false(est_cache_entry_try_refresh(e));
    assert_false(est_cache_entry_try_refresh(e));
    est_cache_entry_refresh_done(e); /* the refresh failed: the next stale hit may try again */
    assert_true(est_cache_entry_try_refresh(e));
    est_cache_entry_release(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash_vector),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_entry_and_hit_by_reference),
        cmocka_unit_test(test_lru_eviction_at_max_size),
        cmocka_unit_test(test_max_entry_refused),
        cmocka_unit_test(test_refcount_outlives_eviction_and_destroy),
        cmocka_unit_test(test_purge),
        cmocka_unit_test(test_vary),
        cmocka_unit_test(test_single_refresh),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
