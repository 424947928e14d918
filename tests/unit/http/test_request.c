/*
 * Unit tests: request-side helpers (http/request.c) — the 8-bytes-at-a-time ASCII
 * lower-casing used on upstream header names, and the hop-by-hop rule it feeds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "http/request.h"

static char ref_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + 0x20) : c;
}

static void check(const char *src, size_t len)
{
    char got[300], want[300];
    memset(got, 0x55, sizeof(got));
    for (size_t i = 0; i != len; ++i)
        want[i] = ref_lower(src[i]);
    est_lower_copy(got, src, len);
    assert_memory_equal(got, want, len);
    assert_int_equal((unsigned char)got[len], 0x55); /* nothing written past len */
}

static void test_lower_copy_every_byte(void **state)
{
    (void)state;
    char all[256];
    for (int i = 0; i != 256; ++i)
        all[i] = (char)i;
    for (size_t off = 0; off != 8; ++off) /* every alignment, every length */
        for (size_t len = 0; len + off <= 256; len += 1)
            check(all + off, len);
}

static void test_lower_copy_boundaries_random(void **state)
{
    (void)state;
    /* the bytes around 'A'..'Z' and the high half, where a carry or sign slip would show */
    static const unsigned char edge[] = {'@', 'A', 'B', 'Y', 'Z', '[', '`', 'a', 'z', '{', 0x7f, 0x80, 0xc0, 0xc1, 0xda, 0xdb, 0xff, 0};
    char buf[200];
    srand(7);
    for (int round = 0; round != 20000; ++round) {
        size_t len = (size_t)(rand() % 40);
        for (size_t i = 0; i != len; ++i)
            buf[i] = (char)(rand() % 3 == 0 ? rand() % 256 : edge[rand() % sizeof(edge)]);
        check(buf, len);
    }
    char name[] = "Content-Type X-REQUEST-ID Proxy-Connection";
    char out[sizeof(name)];
    est_lower_copy(out, name, sizeof(name));
    assert_string_equal(out, "content-type x-request-id proxy-connection");
}

static void test_hop_by_hop(void **state)
{
    (void)state;
    h2o_iovec_t none = {NULL, 0}, conn = {(char *)"close, X-Private", 16};
    assert_true(est_is_hop_by_hop("Transfer-Encoding", 17, &none));
    assert_true(est_is_hop_by_hop("keep-alive", 10, &none));
    assert_true(est_is_hop_by_hop("Proxy-Whatever", 14, &none));
    assert_true(est_is_hop_by_hop("x-private", 9, &conn));
    assert_false(est_is_hop_by_hop("x-private", 9, &none));
    assert_false(est_is_hop_by_hop("content-type", 12, &conn));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lower_copy_every_byte),
        cmocka_unit_test(test_lower_copy_boundaries_random),
        cmocka_unit_test(test_hop_by_hop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
