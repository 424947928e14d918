/*
 * Unit tests: HTTP/2 field rules (h2/fields.c), RFC 9113 §8.2-§8.3.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <h2o.h>

#include "h2/fields.h"

#define FIELD(n, v) est_h2_field_check(n, sizeof(n) - 1, v, sizeof(v) - 1)
#define METHOD(m) est_h2_method_check(m, sizeof(m) - 1)
#define PATH(m, p) est_h2_path_check(m, sizeof(m) - 1, p, sizeof(p) - 1)

static void test_field_names(void **state)
{
    (void)state;
    assert_null(FIELD("x-ok", "1"));
    assert_null(FIELD("accept", "*/*"));
    assert_null(FIELD("x!#$%&'*+-.^_`|~09", "v"));
    assert_non_null(FIELD("X-Upper", "1"));
    assert_non_null(FIELD("x bad", "1"));
    assert_non_null(FIELD("x:bad", "1"));
    assert_non_null(FIELD(":path", "/"));
    assert_non_null(FIELD("x\"q", "1"));
    assert_non_null(FIELD("x\x7f", "1"));
    assert_non_null(FIELD("x\xc3\xa9", "1"));
    assert_non_null(est_h2_field_check("", 0, "v", 1));
    assert_non_null(est_h2_field_check("a\0b", 3, "v", 1));
}

static void test_field_values(void **state)
{
    (void)state;
    assert_null(FIELD("x", ""));
    assert_null(FIELD("x", "a b\tc"));
    assert_null(FIELD("x", "caf\xc3\xa9"));
    assert_null(FIELD("x", "\x80\xff"));
    assert_non_null(est_h2_field_check("x", 1, "a\0b", 3));
    assert_non_null(FIELD("x", "a\rb"));
    assert_non_null(FIELD("x", "a\nb"));
    assert_non_null(FIELD("x", "a\x01"));
    assert_non_null(FIELD("x", "a\x7f"));
    assert_non_null(FIELD("x", " a"));
    assert_non_null(FIELD("x", "a "));
    assert_non_null(FIELD("x", "\ta"));
    assert_non_null(FIELD("x", "a\t"));
    assert_non_null(FIELD("x", " "));
}

static void test_connection_specific(void **state)
{
    (void)state;
    assert_non_null(FIELD("connection", "close"));
    assert_non_null(FIELD("keep-alive", "5"));
    assert_non_null(FIELD("proxy-connection", "x"));
    assert_non_null(FIELD("transfer-encoding", "chunked"));
    assert_non_null(FIELD("upgrade", "websocket"));
    assert_non_null(FIELD("te", "gzip"));
    assert_non_null(FIELD("te", "trailers, gzip"));
    assert_non_null(FIELD("te", ""));
    assert_null(FIELD("te", "trailers"));
    assert_null(FIELD("te", "Trailers"));
    assert_null(FIELD("connection-x", "1"));
    assert_null(FIELD("upgrade-insecure-requests", "1"));
}

static void test_method(void **state)
{
    (void)state;
    assert_null(METHOD("GET"));
    assert_null(METHOD("PATCH"));
    assert_null(METHOD("M-SEARCH"));
    assert_non_null(METHOD(""));
    assert_non_null(METHOD("G T"));
    assert_non_null(METHOD("GET\r"));
    assert_non_null(METHOD("G(ET"));
}

static void test_path(void **state)
{
    (void)state;
    assert_null(PATH("GET", "/"));
    assert_null(PATH("GET", "/a/b?c=d&e=%20"));
    assert_null(PATH("OPTIONS", "*"));
    assert_null(PATH("OPTIONS", "/x"));
    assert_non_null(PATH("GET", ""));
    assert_non_null(PATH("GET", "*"));
    assert_non_null(PATH("options", "*"));
    assert_non_null(PATH("GET", "x"));
    assert_non_null(PATH("GET", "http://h/x"));
    assert_non_null(PATH("GET", "/x y"));
    assert_non_null(PATH("GET", "/x\x01"));
    assert_non_null(PATH("GET", "/x\x7f"));
    assert_non_null(PATH("OPTIONS", "**"));
}

/* the request as libh2o builds it */
static void test_request(void **state)
{
    (void)state;
    h2o_req_t req;
    memset(&req, 0, sizeof(req));
    h2o_mem_init_pool(&req.pool);
    req.version = 0x200;
    req.input.method = h2o_iovec_init(H2O_STRLIT("GET"));
    req.input.path = h2o_iovec_init(H2O_STRLIT("/x"));
    h2o_add_header(&req.pool, &req.headers, H2O_TOKEN_ACCEPT, NULL, H2O_STRLIT("*/*"));
    h2o_add_header_by_str(&req.pool, &req.headers, H2O_STRLIT("x-a"), 0, NULL, H2O_STRLIT("1"));
    assert_null(est_h2_fields_check(&req));
    h2o_add_header(&req.pool, &req.headers, H2O_TOKEN_KEEP_ALIVE, NULL, H2O_STRLIT("5"));
    assert_non_null(est_h2_fields_check(&req));
    req.version = 0x101; /* HTTP/1.1 is src/h1's */
    assert_null(est_h2_fields_check(&req));
    req.version = 0x200;
    req.headers.size = 2;
    req.input.path = h2o_iovec_init(H2O_STRLIT(""));
    assert_non_null(est_h2_fields_check(&req));
    req.input.path = h2o_iovec_init(H2O_STRLIT("/x"));
    req.input.method = h2o_iovec_init(H2O_STRLIT("G T"));
    assert_non_null(est_h2_fields_check(&req));
    req.input.method = h2o_iovec_init(H2O_STRLIT("GET"));
    h2o_add_header_by_str(&req.pool, &req.headers, H2O_STRLIT("x-b"), 0, NULL, H2O_STRLIT(" v"));
    assert_non_null(est_h2_fields_check(&req));
    h2o_mem_clear_pool(&req.pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_field_names), cmocka_unit_test(test_field_values), cmocka_unit_test(test_connection_specific),
        cmocka_unit_test(test_method),      cmocka_unit_test(test_path),         cmocka_unit_test(test_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
