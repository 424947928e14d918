/*
 * Unit tests for the socket address helpers (src/common/sockaddr.c).
 */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "common/sockaddr.h"

static struct sockaddr_storage v4(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *s = (void *)&ss;
    s->sin_family = AF_INET;
    s->sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &s->sin_addr), 1);
    return ss;
}

static struct sockaddr_storage v6(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in6 *s = (void *)&ss;
    s->sin6_family = AF_INET6;
    s->sin6_port = htons(port);
    assert_int_equal(inet_pton(AF_INET6, ip, &s->sin6_addr), 1);
    return ss;
}

static void test_equal(void **state)
{
    struct sockaddr_storage a = v4("10.0.0.1", 80), b = v4("10.0.0.1", 80), c = v4("10.0.0.1", 81), d = v4("10.0.0.2", 80);
    struct sockaddr_storage e = v6("::1", 80), f = v6("::1", 80), g = v6("::2", 80), u;
    memset(&u, 0, sizeof(u));
    u.ss_family = AF_UNIX;
    assert_true(est_sockaddr_equal(&a, &b));
    assert_false(est_sockaddr_equal(&a, &c));
    assert_true(est_sockaddr_equal_addr(&a, &c));
    assert_false(est_sockaddr_equal(&a, &d));
    assert_true(est_sockaddr_equal(&e, &f));
    assert_false(est_sockaddr_equal(&e, &g));
    assert_false(est_sockaddr_equal(&a, &e));
    assert_false(est_sockaddr_equal(&a, NULL));
    assert_false(est_sockaddr_equal(NULL, NULL));
    assert_false(est_sockaddr_equal(&u, &u));
}

static void test_port_and_format(void **state)
{
    struct sockaddr_storage a = v4("127.0.0.1", 0), b = v6("2001:db8::1", 0), u;
    memset(&u, 0, sizeof(u));
    u.ss_family = AF_UNIX;
    est_sockaddr_set_port(&a, 8080);
    est_sockaddr_set_port(&b, 443);
    est_sockaddr_set_port(&u, 1);
    assert_int_equal(est_sockaddr_port(&a), 8080);
    assert_int_equal(est_sockaddr_port(&b), 443);
    assert_int_equal(est_sockaddr_port(&u), 0);
    char buf[64];
    assert_int_equal(est_sockaddr_format(&a, buf, sizeof(buf)), strlen("127.0.0.1:8080"));
    assert_string_equal(buf, "127.0.0.1:8080");
    assert_int_equal(est_sockaddr_format(&b, buf, sizeof(buf)), strlen("[2001:db8::1]:443"));
    assert_string_equal(buf, "[2001:db8::1]:443");
    assert_int_equal(est_sockaddr_ntop(&b, buf, sizeof(buf)), strlen("2001:db8::1"));
    assert_string_equal(buf, "2001:db8::1");
    /* too small, other family: "" and 0 */
    assert_int_equal(est_sockaddr_format(&a, buf, 10), 0);
    assert_string_equal(buf, "");
    assert_int_equal(est_sockaddr_format(&u, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");
    assert_int_equal(est_sockaddr_ntop(&a, buf, 4), 0);
}

static void test_is_ip(void **state)
{
    (void)state;
    assert_true(est_sockaddr_is_ip("10.0.0.1", AF_INET));
    assert_true(est_sockaddr_is_ip("10.0.0.1", AF_UNSPEC));
    assert_false(est_sockaddr_is_ip("10.0.0.1", AF_INET6));
    assert_true(est_sockaddr_is_ip("::1", AF_INET6));
    assert_true(est_sockaddr_is_ip("::1", AF_UNSPEC));
    assert_false(est_sockaddr_is_ip("::1", AF_INET));
    assert_false(est_sockaddr_is_ip("[::1]", AF_UNSPEC)); /* brackets are no part of the address */
    assert_false(est_sockaddr_is_ip("10.0.0.256", AF_UNSPEC));
    assert_false(est_sockaddr_is_ip("example.com", AF_UNSPEC));
    assert_false(est_sockaddr_is_ip("", AF_UNSPEC));
}

static void test_parse_ip(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len = 0;
    char buf[64];
    assert_int_equal(est_sockaddr_parse_ip("192.0.2.7", &ss, &len), 0);
    assert_int_equal(len, sizeof(struct sockaddr_in));
    assert_int_equal(est_sockaddr_port(&ss), 0);
    assert_true(est_sockaddr_ntop(&ss, buf, sizeof(buf)) > 0);
    assert_string_equal(buf, "192.0.2.7");
    assert_int_equal(est_sockaddr_parse_ip("[2001:db8::1]", &ss, &len), 0);
    assert_int_equal(len, sizeof(struct sockaddr_in6));
    assert_true(est_sockaddr_ntop(&ss, buf, sizeof(buf)) > 0);
    assert_string_equal(buf, "2001:db8::1");
    assert_int_equal(est_sockaddr_parse_ip("2001:db8::1", &ss, &len), 0);
    assert_int_equal(est_sockaddr_parse_ip("[192.0.2.7]", &ss, &len), -1);
    assert_int_equal(est_sockaddr_parse_ip("[2001:db8::1", &ss, &len), -1);
    assert_int_equal(est_sockaddr_parse_ip("host", &ss, &len), -1);
    assert_int_equal(ss.ss_family, 0); /* zeroed on failure */
    /* longer than any address: refused before copying */
    assert_int_equal(est_sockaddr_parse_ip("[0000:0000:0000:0000:0000:0000:0000:0000:0000:0000:0000]", &ss, &len), -1);
}

static void test_copy_addr_and_scope(void **state)
{
    (void)state;
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(443), .sin6_flowinfo = 7, .sin6_scope_id = 2};
    inet_pton(AF_INET6, "fe80::1", &a6.sin6_addr);
    struct sockaddr_storage out, other;
    socklen_t len = 0;
    assert_int_equal(est_sockaddr_copy_addr((struct sockaddr *)&a6, sizeof(a6), &out, &len), 0);
    assert_int_equal(len, sizeof(a6));
    assert_int_equal(est_sockaddr_port(&out), 0);
    assert_int_equal(((struct sockaddr_in6 *)&out)->sin6_flowinfo, 0);
    assert_int_equal(((struct sockaddr_in6 *)&out)->sin6_scope_id, 2);
    assert_int_equal(est_sockaddr_copy_addr((struct sockaddr *)&a6, sizeof(a6) - 1, &out, &len), -1);
    struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons(80)};
    a4.sin_addr.s_addr = htonl(0x7f000001);
    assert_int_equal(est_sockaddr_copy_addr((struct sockaddr *)&a4, sizeof(a4), &other, &len), 0);
    assert_int_equal(len, sizeof(a4));
    assert_int_equal(est_sockaddr_port(&other), 0);
    struct sockaddr un = {.sa_family = AF_UNIX};
    assert_int_equal(est_sockaddr_copy_addr(&un, sizeof(un), &other, &len), -1);

    /* a link-local address on another interface is another host */
    memcpy(&other, &out, sizeof(out));
    assert_true(est_sockaddr_equal_addr(&out, &other));
    ((struct sockaddr_in6 *)&other)->sin6_scope_id = 3;
    assert_false(est_sockaddr_equal_addr(&out, &other));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal),
        cmocka_unit_test(test_port_and_format),
        cmocka_unit_test(test_is_ip),
        cmocka_unit_test(test_parse_ip),
        cmocka_unit_test(test_copy_addr_and_scope),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
