/*
 * Unit tests for the process's store (src/cache/global.c): created with the first cached
 * route, kept across reconfigurations; the entries of a route that keeps its template and
 * settings stay, those of a route that went away or changed its settings are purged; destroyed
 * at shutdown (run under ASan: a leak fails).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "cache/global.h"

/* stores an entry of route `route`, path "/p" */
static void put(const char *route)
{
    char key[EST_CACHE_MAX_KEY];
    est_cache_key_parts_t parts = {.route = {route, strlen(route)}, .path = {"/p", 2}, .method = {"GET", 3}};
    size_t klen = est_cache_key_build(key, sizeof(key), &parts, NULL, NULL);
    assert_true(klen != 0);
    est_cache_decision_t d = {.storable = 1, .lifetime_ms = 60000};
    est_cache_entry_init_t in = {.key = key, .key_len = klen, .status = 200, .decision = &d};
    est_cache_entry_t *e = est_cache_entry_create(&in);
    assert_non_null(e);
    assert_int_equal(est_cache_entry_append(e, "body", 4), 0);
    assert_int_equal(est_cache_store_insert(est_cache_global(), e), 0);
    est_cache_entry_release(e);
}

static int has(const char *route)
{
    char key[EST_CACHE_MAX_KEY];
    est_cache_key_parts_t parts = {.route = {route, strlen(route)}, .path = {"/p", 2}, .method = {"GET", 3}};
    size_t klen = est_cache_key_build(key, sizeof(key), &parts, NULL, NULL);
    est_cache_entry_t *e = est_cache_store_lookup(est_cache_global(), key, klen, NULL, NULL, NULL);
    if (e == NULL)
        return 0;
    est_cache_entry_release(e);
    return 1;
}

static void test_lifecycle(void **state)
{
    (void)state;
    /* no cached route: no store */
    assert_int_equal(est_cache_global_configure(1 << 20, 1 << 16, NULL, NULL, 0), 0);
    assert_null(est_cache_global());

    const char *r1[] = {"/a", "/b", "/c"}, *s1[] = {"30000/0/0/0/0", "1000/0/0/0/0", "5/0/0/1/0"};
    assert_int_equal(est_cache_global_configure(1 << 20, 1 << 16, r1, s1, 3), 0);
    est_cache_store_t *store = est_cache_global();
    assert_non_null(store);
    put("/a");
    put("/b");
    put("/c");

    /* /a unchanged, /b changed settings, /c removed, /d new: the same store */
    const char *r2[] = {"/d", "/a", "/b"}, *s2[] = {"1/0/0/0/0", "30000/0/0/0/0", "2000/0/0/0/0"};
    assert_int_equal(est_cache_global_configure(1 << 10, 1 << 8, r2, s2, 3), 0);
    assert_ptr_equal(est_cache_global(), store); /* kept, with its first limits */
    assert_true(has("/a"));
    assert_false(has("/b"));
    assert_false(has("/c"));
    put("/d");

    /* no cached route any more: everything of the last configuration goes, the store stays */
    assert_int_equal(est_cache_global_configure(1 << 20, 1 << 16, NULL, NULL, 0), 0);
    assert_ptr_equal(est_cache_global(), store);
    assert_false(has("/a"));
    assert_false(has("/d"));
    est_cache_stats_t st;
    est_cache_store_stats(store, &st);
    assert_int_equal(st.entries, 0);

    est_cache_global_shutdown();
    assert_null(est_cache_global());
    est_cache_global_shutdown(); /* idempotent */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
