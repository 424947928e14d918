#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "policy/tokencache.h"

static void key_of(int i, unsigned char key[32])
{
    char tok[32];
    int n = snprintf(tok, sizeof(tok), "token-%d", i);
    est_tokencache_key(tok, (size_t)n, key);
}

static json_t *claims_of(int i)
{
    return json_pack("{s:i}", "n", i);
}

static int cached_n(est_tokencache_t *c, int i, int64_t now)
{
    unsigned char k[32];
    key_of(i, k);
    const json_t *v = est_tokencache_get(c, k, now);
    return v == NULL ? -1 : (int)json_integer_value(json_object_get(v, "n"));
}

static int put(est_tokencache_t *c, int i, int64_t exp, int64_t now, size_t cost)
{
    unsigned char k[32];
    key_of(i, k);
    return est_tokencache_put(c, k, claims_of(i), exp, now, cost);
}

static void test_hit_and_expiry(void **state)
{
    est_tokencache_t *c = est_tokencache_create(8, 1 << 20, 300);
    assert_int_equal(cached_n(c, 1, 1000), -1);
    assert_int_equal(put(c, 1, 1100, 1000, 10), 0);
    assert_int_equal(cached_n(c, 1, 1000), 1);
    assert_int_equal(cached_n(c, 1, 1099), 1);
    assert_int_equal(cached_n(c, 1, 1100), -1); /* at exp: gone, and removed */
    assert_int_equal(est_tokencache_count(c), 0);
    assert_int_equal(est_tokencache_bytes(c), 0);

    /* max_ttl caps a far exp */
    assert_int_equal(put(c, 2, INT64_MAX, 1000, 10), 0);
    assert_int_equal(cached_n(c, 2, 1299), 2);
    assert_int_equal(cached_n(c, 2, 1300), -1);

    /* already expired, or too costly: not cached */
    assert_int_equal(put(c, 3, 1000, 1000, 10), -1);
    assert_int_equal(put(c, 3, 2000, 1000, (1 << 20) + 1), -1);
    assert_int_equal(est_tokencache_count(c), 0);

    /* replacing a key keeps one entry */
    assert_int_equal(put(c, 4, 2000, 1000, 10), 0);
    assert_int_equal(put(c, 4, 2000, 1000, 20), 0);
    assert_int_equal(est_tokencache_count(c), 1);
    assert_int_equal(est_tokencache_bytes(c), 20);
    est_tokencache_clear(c);
    assert_int_equal(est_tokencache_count(c), 0);
    assert_int_equal(cached_n(c, 4, 1000), -1);
    est_tokencache_destroy(c);
}

static void test_bounds_and_clock(void **state)
{
    est_tokencache_t *c = est_tokencache_create(4, 1000, 3600);
    for (int i = 0; i < 4; i++)
        assert_int_equal(put(c, i, 5000, 1000, 10), 0);
    /* touch 0, 1 and 3: entry 2 is the one without a second chance */
    assert_int_equal(cached_n(c, 0, 1000), 0);
    assert_int_equal(cached_n(c, 1, 1000), 1);
    assert_int_equal(cached_n(c, 3, 1000), 3);
    assert_int_equal(put(c, 10, 5000, 1000, 10), 0);
    assert_int_equal(est_tokencache_count(c), 4);
    assert_int_equal(cached_n(c, 2, 1000), -1);
    assert_int_equal(cached_n(c, 0, 1000), 0);
    assert_int_equal(cached_n(c, 10, 1000), 10);

    /* the byte bound evicts as many as needed */
    assert_int_equal(put(c, 11, 5000, 1000, 995), 0);
    assert_true(est_tokencache_bytes(c) <= 1000);
    assert_int_equal(cached_n(c, 11, 1000), 11);
    assert_int_equal(est_tokencache_count(c), 1);
    est_tokencache_destroy(c);

    /* many more inserts than entries: the bound holds, the newest is there */
    c = est_tokencache_create(64, 1 << 20, 3600);
    for (int i = 0; i < 10000; i++) {
        assert_int_equal(put(c, i, 5000, 1000, 100), 0);
        if (i % 3 == 0)
            assert_int_equal(cached_n(c, i, 1000), i);
    }
    assert_int_equal(est_tokencache_count(c), 64);
    assert_int_equal(est_tokencache_bytes(c), 6400);
    assert_int_equal(cached_n(c, 9999, 1000), 9999);
    est_tokencache_destroy(c);

    assert_null(est_tokencache_create(0, 100, 10));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_and_expiry),
        cmocka_unit_test(test_bounds_and_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
