/*
 * Unit tests: address syntaxes of the config (src/config/address.c): upstream target
 * URLs, DNS servers, host names.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "config/validate.h"

static void free_target(est_target_conf_t *t)
{
    free(t->url);
    free(t->host);
    free(t->authority);
}

static void test_targets_valid(void **state)
{
    static const struct {
        const char *url, *host, *authority;
        unsigned port;
        int tls, ip;
    } cases[] = {
        {"http://a", "a", "a", 80, 0, 0},
        {"http://a/", "a", "a", 80, 0, 0},
        {"https://users.internal:8443", "users.internal", "users.internal:8443", 8443, 1, 0},
        {"https://h:443", "h", "h", 443, 1, 0},
        {"http://h:443", "h", "h:443", 443, 0, 0},
        {"HTTP://Host-1.example.:8080", "Host-1.example.", "Host-1.example.:8080", 8080, 0, 0},
        {"http://10.0.0.1:65535", "10.0.0.1", "10.0.0.1:65535", 65535, 0, 1},
        {"http://[::1]", "::1", "[::1]", 80, 0, 1},
        {"https://[2001:db8::1]:8443/", "2001:db8::1", "[2001:db8::1]:8443", 8443, 1, 1},
        {"http://svc_1", "svc_1", "svc_1", 80, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        est_target_conf_t t = {0};
        const char *why = est_cv_parse_target(cases[i].url, &t);
        if (why != NULL)
            fail_msg("\"%s\" rejected: %s", cases[i].url, why);
        assert_string_equal(t.url, cases[i].url);
        assert_string_equal(t.host, cases[i].host);
        assert_string_equal(t.authority, cases[i].authority);
        assert_int_equal(t.port, cases[i].port);
        assert_int_equal(t.is_tls, cases[i].tls);
        assert_int_equal(t.is_ip_literal, cases[i].ip);
        free_target(&t);
    }
}

static void test_targets_malformed(void **state)
{
    static const struct {
        const char *url, *why;
    } cases[] = {
        {"ftp://a", "it must start with http:// or https://"},
        {"a:80", "it must start with http:// or https://"},
        {"http:/a", "it must start with http:// or https://"},
        {"http://user:pw@a", "user info (user@) is not allowed"},
        {"http://a/x", "a target has no path, query or fragment (set the path on the route)"},
        {"http://a?x=1", "a target has no path, query or fragment (set the path on the route)"},
        {"http://a#f", "a target has no path, query or fragment (set the path on the route)"},
        {"http://a//", "a target has no path, query or fragment (set the path on the route)"},
        {"http://", "missing host"},
        {"http://:80", "missing host"},
        {"http://a:", "bad port (use 1 to 65535)"},
        {"http://a:0", "bad port (use 1 to 65535)"},
        {"http://a:65536", "bad port (use 1 to 65535)"},
        {"http://a:8x", "bad port (use 1 to 65535)"},
        {"http://a:-1", "bad port (use 1 to 65535)"},
        {"http://[::1", "missing ']' after the IPv6 address"},
        {"http://[::g]", "bad IPv6 address"},
        {"http://[fe80::1%eth0]", "bad IPv6 address"},
        {"http://[::1]x", "unexpected characters after the host"},
        {"http://1.2.3", "bad IPv4 address"},
        {"http://256.1.1.1", "bad IPv4 address"},
        {"http://a..b", "bad host name"},
        {"http://.a", "bad host name"},
        {"http://a b", "bad host name"},
        {"http://a%20b", "bad host name"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        est_target_conf_t t = {0};
        const char *why = est_cv_parse_target(cases[i].url, &t);
        if (why == NULL)
            fail_msg("\"%s\" accepted", cases[i].url);
        if (strcmp(why, cases[i].why) != 0)
            fail_msg("\"%s\": \"%s\", want \"%s\"", cases[i].url, why, cases[i].why);
        assert_null(t.url);
        assert_null(t.host);
    }
}

static void test_dns_servers(void **state)
{
    static const char *const good[] = {"127.0.0.1", "127.0.0.1:5353", "::1", "2001:db8::53", "[::1]", "[::1]:53", "[2001:db8::1]:65535"};
    static const char *const bad[] = {"",         "dns.google", "1.2.3.4:", "1.2.3.4:0",  "1.2.3.4:65536", "1.2.3",   "[::1]53",
                                      "[::1]:0",  "[::1",       "::1:53:x", "1.2.3.4:53x", "[1.2.3.4]:53", ":53",     "1.2.3.4 "};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (est_cv_parse_dns_server(good[i]) != 0)
            fail_msg("\"%s\" rejected", good[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (est_cv_parse_dns_server(bad[i]) == 0)
            fail_msg("\"%s\" accepted", bad[i]);
}

static void test_host_names(void **state)
{
    assert_true(est_cv_is_host_name("a", 1));
    assert_true(est_cv_is_host_name("a.b-c_d.", 8));
    assert_false(est_cv_is_host_name("", 0));
    assert_false(est_cv_is_host_name("a..b", 4));
    assert_false(est_cv_is_host_name("a:b", 3));
    char label[70];
    memset(label, 'x', 64);
    assert_false(est_cv_is_host_name(label, 64)); /* a label is at most 63 characters */
    assert_true(est_cv_is_host_name(label, 63));
    assert_true(est_cv_is_ip_literal("0.0.0.0"));
    assert_true(est_cv_is_ip_literal("::"));
    assert_false(est_cv_is_ip_literal("[::]"));
    assert_false(est_cv_is_ip_literal("localhost"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_targets_valid),
        cmocka_unit_test(test_targets_malformed),
        cmocka_unit_test(test_dns_servers),
        cmocka_unit_test(test_host_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
