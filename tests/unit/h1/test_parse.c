/* estuary - unit tests for the strict HTTP/1.1 request parser and chunked decoder (src/h1/parse.c) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "h1/parse.h"

/* a string literal with its length (literals may hold NUL) */
#define S(lit) lit, sizeof(lit) - 1

static est_h1_request_t req;
static est_h1_error_t err;

/* parses a copy of exactly len bytes on the heap, so ASan catches a read past len */
static int parse(const char *s, size_t len)
{
    char *copy = malloc(len ? len : 1);
    int r;
    memcpy(copy, s, len);
    memset(&err, 0, sizeof(err));
    r = est_h1_parse_request(copy, len, &req, &err);
    /* pointers into the copy are only compared, never dereferenced, after this */
    if (r > 0) {
        /* re-parse the original so the tests can read the fields */
        r = est_h1_parse_request(s, len, &req, &err);
    }
    free(copy);
    return r;
}

static int field_eq(const est_h1_field_t *f, const char *name, const char *value)
{
    return f->name_len == strlen(name) && memcmp(f->name, name, f->name_len) == 0 &&
           f->value_len == strlen(value) && memcmp(f->value, value, f->value_len) == 0;
}

static void assert_span(const char *p, size_t len, const char *expected)
{
    assert_non_null(p);
    assert_int_equal(len, strlen(expected));
    assert_memory_equal(p, expected, len);
}

/* --- error cases --- */

struct err_case {
    const char *in;
    size_t len;
    int status;
    const char *code;
};

#define E400(lit) {S(lit), 400, "bad_request"}
#define E(lit, st, cd) {S(lit), st, cd}

static const struct err_case err_cases[] = {
    /* Content-Length */
    E400("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 43\r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
    /* Transfer-Encoding */
    E400("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chun ked\r\n\r\n"),
    E400("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n"),
    E400("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
    E("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "not_implemented"),
    E("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", 501,
      "not_implemented"),
    E("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n", 501, "not_implemented"),
    /* Host */
    E400("GET / HTTP/1.1\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: \r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a,b\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a:\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: [zz]\r\n\r\n"),
    E400("GET / HTTP/1.0\r\nHost: a b\r\n\r\n"),
    /* field syntax */
    E400("GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a\r\nX-A\t: b\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a\r\nX\x80: b\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n"),
    E400("GET / HTTP/1.1\r\n Host: a\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x7f\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a\r\nX-A: 0123456789abcdef\x1f""0123456789\r\n\r\n"),
    /* bare LF anywhere */
    E400("GET / HTTP/1.1\nHost: a\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a\r\n\n"),
    E400("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("\r\rGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a\r\r\n\r\n"),
    E400("GET / HTTP/1.1\r\nHost: a\r\n\rX"),
    /* request line */
    E400("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET /  HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"),
    E400(" GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET /\r\nHost: a\r\n\r\n"),
    E400("GET / \r\nHost: a\r\n\r\n"),
    E400("GET\r\n\r\n"),
    E400("G(T / HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GÉT / HTTP/1.1\r\nHost: a\r\n\r\n"),
    /* target */
    E400("GET a/b HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET ** HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET http:/a/b HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET http:// HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET http:///b HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET http://u@a/b HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET http://a?q HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET http://a:99999/ HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET /a\x80 HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET /a\xff HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET /admin#/../public HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET /0123456789abcdef# HTTP/1.1\r\nHost: a\r\n\r\n"),
    E400("GET /0123456789abcdef\x80 HTTP/1.1\r\nHost: a\r\n\r\n"),
    E("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501, "not_implemented"),
    /* version */
    E("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, "http_version_not_supported"),
    E("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "http_version_not_supported"),
    E("GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505, "http_version_not_supported"),
    E400("GET / HTTP/1\r\nHost: a\r\n\r\n"),
    E400("GET / HTTP/1.10\r\nHost: a\r\n\r\n"),
    E400("GET / HTTP/11.1\r\nHost: a\r\n\r\n"),
    E400("GET / http/1.1\r\nHost: a\r\n\r\n"),
    E400("GET / HTTP/1.x\r\nHost: a\r\n\r\n"),
    E400("GET / HTTPS/1.1\r\nHost: a\r\n\r\n"),
    /* Expect */
    E("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, foo\r\n\r\n", 417, "expectation_failed"),
    E("POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417, "expectation_failed"),
};

static void test_errors(void **state)
{
    for (size_t i = 0; i < sizeof(err_cases) / sizeof(err_cases[0]); ++i) {
        const struct err_case *c = &err_cases[i];
        int r = parse(c->in, c->len);
        if (r != -1 || err.status != c->status || strcmp(err.code, c->code) != 0)
            fail_msg("case %zu (%.*s): r=%d status=%d code=%s (want %d %s)", i, (int)c->len, c->in, r, err.status,
                     err.code ? err.code : "-", c->status, c->code);
        assert_non_null(err.message);
        /* fixed text: never the request's bytes, so never a CR/LF or a byte >= 0x80 */
        for (const char *m = err.message; *m; ++m)
            assert_true(*m >= 0x20 && *m < 0x7f);
        /* every strict prefix: incomplete or the same error (found at the same byte) */
        for (size_t k = 0; k < c->len; ++k) {
            int rk = parse(c->in, k);
            if (rk != -2 && !(rk == -1 && err.status == c->status))
                fail_msg("case %zu prefix %zu: r=%d status=%d", i, k, rk, err.status);
        }
    }
}

static void test_too_many_fields(void **state)
{
    char buf[8192];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < EST_H1_MAX_FIELDS - 1; ++i)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "X-%d: v\r\n", i);
    memcpy(buf + n, "\r\n", 2);
    /* exactly EST_H1_MAX_FIELDS: accepted */
    assert_int_equal(parse(buf, n + 2), (int)(n + 2));
    assert_int_equal(req.num_fields, EST_H1_MAX_FIELDS);
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, "X-last: v\r\n\r\n");
    assert_int_equal(parse(buf, n), -1);
    assert_int_equal(err.status, 431);
    assert_string_equal(err.code, "headers_too_large");
}

static void test_head_too_large(void **state)
{
    size_t n = EST_H1_MAX_HEAD + 100;
    char *buf = malloc(n);
    size_t h = (size_t)sprintf(buf, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
    memset(buf + h, 'a', n - h);
    /* incomplete, not yet over the limit: more is needed */
    assert_int_equal(parse(buf, EST_H1_MAX_HEAD - 1), -2);
    /* incomplete at the limit: 431 at once, the caller need not buffer more */
    assert_int_equal(parse(buf, EST_H1_MAX_HEAD), -1);
    assert_int_equal(err.status, 431);
    assert_int_equal(parse(buf, n), -1);
    assert_int_equal(err.status, 431);
    /* complete but one byte over */
    memcpy(buf + EST_H1_MAX_HEAD - 3, "\r\n\r\n", 4);
    assert_int_equal(parse(buf, EST_H1_MAX_HEAD + 1), -1);
    assert_int_equal(err.status, 431);
    /* complete, exactly at the limit */
    memcpy(buf + EST_H1_MAX_HEAD - 4, "\r\n\r\n", 4);
    assert_int_equal(parse(buf, EST_H1_MAX_HEAD + 1), EST_H1_MAX_HEAD);
    free(buf);
}

static void test_target_too_long(void **state)
{
    size_t n = EST_H1_MAX_TARGET + 64;
    char *buf = malloc(n);
    memcpy(buf, "GET /", 5);
    memset(buf + 5, 'a', n - 5);
    /* the target alone over the limit, without its end yet: 414 */
    assert_int_equal(parse(buf, 4 + EST_H1_MAX_TARGET), -2);
    assert_int_equal(parse(buf, 4 + EST_H1_MAX_TARGET + 1), -1);
    assert_int_equal(err.status, 414);
    assert_string_equal(err.code, "uri_too_long");
    /* complete lines: a target of exactly the limit passes, one more byte is 414 */
    size_t t = 4 + EST_H1_MAX_TARGET;
    memcpy(buf + t, " HTTP/1.1\r\nHost: a\r\n\r\n", 22);
    assert_true(parse(buf, t + 22) > 0);
    assert_int_equal(req.target_len, EST_H1_MAX_TARGET);
    buf[t] = 'b';
    memcpy(buf + t + 1, " HTTP/1.1\r\nHost: a\r\n\r\n", 22);
    assert_int_equal(parse(buf, t + 23), -1);
    assert_int_equal(err.status, 414);
    free(buf);
}

/* --- valid requests --- */

static void test_simple_get(void **state)
{
    static const char r[] = "GET /a/b?c=d HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: x  y \r\n"
                            "Accept:*/*\r\nX-Empty:\r\nX-Tab:\t v\t\r\n\r\n";
    assert_int_equal(parse(S(r)), (int)sizeof(r) - 1);
    assert_span(req.method, req.method_len, "GET");
    assert_span(req.target, req.target_len, "/a/b?c=d");
    assert_span(req.path, req.path_len, "/a/b?c=d");
    assert_int_equal(req.form, EST_H1_FORM_ORIGIN);
    assert_span(req.authority, req.authority_len, "example.com:8080");
    assert_int_equal(req.minor_version, 1);
    assert_int_equal(req.num_fields, 5);
    assert_true(field_eq(&req.fields[0], "Host", "example.com:8080"));
    assert_true(field_eq(&req.fields[1], "User-Agent", "x  y"));
    assert_true(field_eq(&req.fields[2], "Accept", "*/*"));
    assert_true(field_eq(&req.fields[3], "X-Empty", ""));
    assert_true(field_eq(&req.fields[4], "X-Tab", "v"));
    assert_int_equal(req.body, EST_H1_BODY_NONE);
    assert_int_equal(req.keep_alive, 1);
    assert_int_equal(req.expect_continue, 0);
    assert_int_equal(req.upgrade, 0);
    assert_int_equal(req.head_len, sizeof(r) - 1);
}

static void test_obs_text_and_long_values(void **state)
{
    static const char r[] = "GET /%C3%A9 HTTP/1.1\r\nHost: [::1]:80\r\nX-Utf8: caf\xc3\xa9 latin\xe9\r\n"
                            "X-Long: 0123456789012345678901234567890123456789\t0123456789\r\n\r\n";
    assert_int_equal(parse(S(r)), (int)sizeof(r) - 1);
    assert_span(req.authority, req.authority_len, "[::1]:80");
    assert_true(field_eq(&req.fields[1], "X-Utf8", "caf\xc3\xa9 latin\xe9"));
    assert_true(field_eq(&req.fields[2], "X-Long", "0123456789012345678901234567890123456789\t0123456789"));
}

static void test_absolute_form(void **state)
{
    static const char r1[] = "GET http://api.example:81/v1/x?y HTTP/1.1\r\nHost: other\r\n\r\n";
    assert_int_equal(parse(S(r1)), (int)sizeof(r1) - 1);
    assert_int_equal(req.form, EST_H1_FORM_ABSOLUTE);
    assert_int_equal(req.is_https, 0);
    assert_span(req.authority, req.authority_len, "api.example:81"); /* RFC 9112 3.2.2 */
    assert_span(req.path, req.path_len, "/v1/x?y");
    static const char r2[] = "GET HTTPS://api.example HTTP/1.1\r\nHost: api.example\r\n\r\n";
    assert_int_equal(parse(S(r2)), (int)sizeof(r2) - 1);
    assert_int_equal(req.is_https, 1);
    assert_span(req.authority, req.authority_len, "api.example");
    assert_span(req.path, req.path_len, "/");
}

static void test_asterisk(void **state)
{
    static const char r[] = "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_int_equal(parse(S(r)), (int)sizeof(r) - 1);
    assert_int_equal(req.form, EST_H1_FORM_ASTERISK);
    assert_span(req.path, req.path_len, "*");
}

static void test_http10(void **state)
{
    static const char r1[] = "GET / HTTP/1.0\r\n\r\n";
    assert_int_equal(parse(S(r1)), (int)sizeof(r1) - 1);
    assert_int_equal(req.minor_version, 0);
    assert_null(req.authority);
    assert_int_equal(req.keep_alive, 0);
    static const char r2[] = "GET / HTTP/1.0\r\nHost: h\r\nConnection: Keep-Alive\r\nExpect: whatever\r\n"
                             "Upgrade: websocket\r\nConnection: upgrade\r\n\r\n";
    assert_int_equal(parse(S(r2)), (int)sizeof(r2) - 1);
    assert_span(req.authority, req.authority_len, "h");
    assert_int_equal(req.keep_alive, 1);
    assert_int_equal(req.expect_continue, 0); /* ignored in HTTP/1.0 (RFC 9110 10.1.1) */
    assert_int_equal(req.upgrade, 0);         /* ignored in HTTP/1.0 (RFC 9110 7.8) */
    static const char r3[] = "POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\n";
    assert_int_equal(parse(S(r3)), (int)sizeof(r3) - 1);
    assert_int_equal(req.body, EST_H1_BODY_LENGTH);
    assert_int_equal(req.content_length, 3);
}

static void test_flags(void **state)
{
    static const char r1[] = "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, CLOSE\r\n\r\n";
    assert_true(parse(S(r1)) > 0);
    assert_int_equal(req.keep_alive, 0);
    static const char r2[] = "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 10\r\n\r\n";
    assert_true(parse(S(r2)) > 0);
    assert_int_equal(req.expect_continue, 1);
    assert_int_equal(req.body, EST_H1_BODY_LENGTH);
    assert_int_equal(req.content_length, 10);
    static const char r3[] = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
    assert_true(parse(S(r3)) > 0);
    assert_int_equal(req.upgrade, 1);
    assert_int_equal(req.keep_alive, 1);
    static const char r4[] = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n";
    assert_true(parse(S(r4)) > 0);
    assert_int_equal(req.upgrade, 0);
    static const char r5[] = "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n";
    assert_true(parse(S(r5)) > 0);
    assert_int_equal(req.upgrade, 0);
    static const char r6[] = "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: \r\n\r\n";
    assert_true(parse(S(r6)) > 0);
    assert_int_equal(req.upgrade, 0);
}

static void test_framing_ok(void **state)
{
    static const char r1[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\n";
    assert_true(parse(S(r1)) > 0);
    assert_int_equal(req.body, EST_H1_BODY_LENGTH);
    assert_int_equal(req.content_length, 5);
    static const char r2[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n";
    assert_true(parse(S(r2)) > 0);
    assert_int_equal(req.body, EST_H1_BODY_CHUNKED);
    static const char r3[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n";
    assert_true(parse(S(r3)) > 0);
    assert_true(req.content_length == UINT64_MAX);
    static const char r4[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    assert_true(parse(S(r4)) > 0);
    assert_int_equal(req.body, EST_H1_BODY_LENGTH);
    assert_int_equal(req.content_length, 0);
}

static void test_pipelined(void **state)
{
    static const char r[] = "\r\n\r\nGET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
                            "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                            "GET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /4";
    const char *p = r, *end = r + sizeof(r) - 1;
    int n = parse(p, (size_t)(end - p));
    assert_int_equal(n, 4 + 28);
    assert_span(req.path, req.path_len, "/1");
    p += n;
    n = parse(p, (size_t)(end - p));
    assert_true(n > 0);
    assert_span(req.path, req.path_len, "/2");
    assert_int_equal(req.head_len, (size_t)n);
    p += n + req.content_length;
    n = parse(p, (size_t)(end - p));
    assert_true(n > 0);
    assert_span(req.path, req.path_len, "/3");
    assert_int_equal(req.keep_alive, 0);
    p += n;
    assert_int_equal(parse(p, (size_t)(end - p)), -2);
}

static void test_incomplete_every_split(void **state)
{
    static const char *const reqs[] = {
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ("\r\nPOST http://h:1/p?q HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX-Long-Header-Name: "
         "some long value with\ttabs and more than eight bytes\r\nExpect: 100-continue\r\n\r\n"),
        "OPTIONS * HTTP/1.0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); ++i) {
        size_t len = strlen(reqs[i]);
        assert_int_equal(parse(reqs[i], len), (int)len);
        for (size_t k = 0; k < len; ++k)
            if (parse(reqs[i], k) != -2)
                fail_msg("request %zu: prefix %zu not incomplete", i, k);
    }
}

/* --- chunked decoding --- */

/* decodes `in` whole: returns the decoder's result; out gets the body */
static int64_t decode_whole(const char *in, size_t len, char *out, size_t *out_len)
{
    est_h1_chunked_t d;
    char *buf = malloc(len ? len : 1);
    memcpy(buf, in, len);
    est_h1_chunked_init(&d);
    size_t n = len;
    int64_t r = est_h1_decode_chunked(&d, buf, &n, &err);
    assert_true(n <= len);
    memcpy(out, buf, n);
    *out_len = n;
    if (r >= 0)
        assert_int_equal(d.decoded, n);
    free(buf);
    return r;
}

/* the same, one byte per call; the result is the last call's (bytes after the body are counted
 * from that call's input, so a finished body returns 0) */
static int64_t decode_bytewise(const char *in, size_t len, char *out, size_t *out_len, size_t *consumed)
{
    est_h1_chunked_t d;
    int64_t r = -2;
    size_t i;
    est_h1_chunked_init(&d);
    *out_len = 0;
    for (i = 0; i < len && r == -2; ++i) {
        char *b = malloc(1);
        size_t n = 1;
        b[0] = in[i];
        r = est_h1_decode_chunked(&d, b, &n, &err);
        assert_true(n <= 1);
        memcpy(out + *out_len, b, n);
        *out_len += n;
        free(b);
    }
    *consumed = i;
    return r;
}

struct chunk_case {
    const char *in;
    size_t len;
    const char *body; /* NULL: an error expected */
    size_t body_len;
    size_t rest; /* bytes after the body */
};

static const struct chunk_case chunk_cases[] = {
    {S("0\r\n\r\n"), S(""), 0},
    {S("5\r\nhello\r\n0\r\n\r\n"), S("hello"), 0},
    {S("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\n"), S("hello world"), 16},
    {S("A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n"), S("0123456789abcdefghij"), 0},
    {S("0000000000000005\r\nhello\r\n0\r\n\r\n"), S("hello"), 0},
    {S("5;name=value;other\r\nhello\r\n0;last\r\n\r\n"), S("hello"), 0},
    {S("5;q=\"a b\"\r\nhello\r\n0\r\n\r\n"), S("hello"), 0},
    {S("3\r\n\r\n\0\r\n0\r\nX-Trailer: v\r\nOther:\r\n\r\nrest"), S("\r\n\0"), 4},
    /* malformed */
    {S("0x5\r\nhello\r\n0\r\n\r\n"), NULL, 0, 0},
    {S("+5\r\nhello\r\n0\r\n\r\n"), NULL, 0, 0},
    {S("-5\r\nhello\r\n0\r\n\r\n"), NULL, 0, 0},
    {S(" 5\r\nhello\r\n0\r\n\r\n"), NULL, 0, 0},
    {S("5 \r\nhello\r\n0\r\n\r\n"), NULL, 0, 0},
    {S("5 ;a\r\nhello\r\n0\r\n\r\n"), NULL, 0, 0},
    {S("\r\n5\r\nhello\r\n0\r\n\r\n"), NULL, 0, 0},
    {S("g\r\n"), NULL, 0, 0},
    {S("10000000000000000\r\n"), NULL, 0, 0}, /* 17 hex digits */
    {S("00000000000000005\r\nhello\r\n0\r\n\r\n"), NULL, 0, 0},
    {S("5\nhello\r\n0\r\n\r\n"), NULL, 0, 0},
    {S("5\r\nhello\n0\r\n\r\n"), NULL, 0, 0},
    {S("5\r\nhelloX\r\n0\r\n\r\n"), NULL, 0, 0},
    {S("5\r\nhelloX\n0\r\n\r\n"), NULL, 0, 0},
    {S("5\r\nhello\r\r0\r\n\r\n"), NULL, 0, 0},
    {S("5\r\nhello\n\n0\r\n\r\n"), NULL, 0, 0},
    {S("5\r\r\nhello\r\n0\r\n\r\n"), NULL, 0, 0},
    {S("5\r\nhello0\r\n\r\n"), NULL, 0, 0},
    {S("5\r\nhello\r\n0\n\r\n"), NULL, 0, 0},
    {S("5\r\nhello\r\n0\r\n\n"), NULL, 0, 0},
    {S("5\r\nhello\r\n0\r\nX: v\n\r\n"), NULL, 0, 0},
    {S("5\r\nhello\r\n0\r\nX : v\r\n\r\n"), NULL, 0, 0},
    {S("5\r\nhello\r\n0\r\n: v\r\n\r\n"), NULL, 0, 0},
    {S("5\r\nhello\r\n0\r\nnocolon\r\n\r\n"), NULL, 0, 0},
    {S("5\r\nhello\r\n0\r\nX: a\r\n b\r\n\r\n"), NULL, 0, 0},
    {S("5\r\nhello\r\n0\r\nX: a\0b\r\n\r\n"), NULL, 0, 0},
    {S("5;a\nb\r\nhello\r\n0\r\n\r\n"), NULL, 0, 0},
    {S("5;a\0\r\nhello\r\n0\r\n\r\n"), NULL, 0, 0},
};

static void test_chunked(void **state)
{
    char out[256];
    for (size_t i = 0; i < sizeof(chunk_cases) / sizeof(chunk_cases[0]); ++i) {
        const struct chunk_case *c = &chunk_cases[i];
        size_t out_len, consumed;
        int64_t r = decode_whole(c->in, c->len, out, &out_len);
        if (c->body == NULL) {
            if (r != -1 || err.status != 400)
                fail_msg("case %zu: whole r=%lld", i, (long long)r);
            r = decode_bytewise(c->in, c->len, out, &out_len, &consumed);
            if (r != -1 || err.status != 400)
                fail_msg("case %zu: bytewise r=%lld", i, (long long)r);
            continue;
        }
        size_t blen = c->len - c->rest, want_len = c->body_len;
        if (r != (int64_t)c->rest)
            fail_msg("case %zu: whole r=%lld", i, (long long)r);
        assert_int_equal(out_len, want_len);
        assert_memory_equal(out, c->body, want_len);
        r = decode_bytewise(c->in, c->len, out, &out_len, &consumed);
        if (r != 0)
            fail_msg("case %zu: bytewise r=%lld", i, (long long)r);
        assert_int_equal(consumed, blen);
        assert_int_equal(out_len, want_len);
        assert_memory_equal(out, c->body, want_len);
        /* every prefix of the body alone is incomplete */
        for (size_t k = 0; k < blen; ++k) {
            assert_int_equal(decode_whole(c->in, k, out, &out_len), -2);
        }
    }
}

static void test_chunked_limits(void **state)
{
    char out[16];
    size_t out_len;
    /* extensions: bounded per line */
    size_t n = 5000;
    char *buf = malloc(n + 64);
    buf[0] = '1';
    buf[1] = ';';
    memset(buf + 2, 'a', 4000);
    memcpy(buf + 4002, "\r\nx\r\n0\r\n\r\n", 10);
    assert_int_equal(decode_whole(buf, 4012, out, &out_len), 0);
    memset(buf + 2, 'a', 4100);
    memcpy(buf + 4102, "\r\nx\r\n0\r\n\r\n", 10);
    assert_int_equal(decode_whole(buf, 4112, out, &out_len), -1);
    free(buf);

    /* trailers: bounded in all */
    n = EST_H1_MAX_HEAD + 200;
    buf = malloc(n);
    memcpy(buf, "0\r\n", 3);
    size_t p = 3;
    while (p + 20 < n) {
        memcpy(buf + p, "X-T: aaaaaaaaaaaaa\r\n", 20);
        p += 20;
    }
    memcpy(buf + p, "\r\n", 2);
    assert_int_equal(decode_whole(buf, p + 2, out, &out_len), -1);
    assert_int_equal(err.status, 400);
    /* a decoder in error stays in error */
    est_h1_chunked_t d;
    est_h1_chunked_init(&d);
    char b2[] = "zz";
    size_t l2 = 2;
    assert_int_equal(est_h1_decode_chunked(&d, b2, &l2, &err), -1);
    l2 = 2;
    memcpy(b2, "0\r", 2);
    assert_int_equal(est_h1_decode_chunked(&d, b2, &l2, &err), -1);
    free(buf);

    /* a large chunk size is accepted (the caller bounds the body), then data flows */
    est_h1_chunked_init(&d);
    char b3[] = "ffffffffffffffff\r\nabc";
    size_t l3 = sizeof(b3) - 1;
    assert_int_equal(est_h1_decode_chunked(&d, b3, &l3, &err), -2);
    assert_int_equal(l3, 3);
    assert_memory_equal(b3, "abc", 3);
    assert_int_equal(d.decoded, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_too_many_fields),
        cmocka_unit_test(test_head_too_large),
        cmocka_unit_test(test_target_too_long),
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_obs_text_and_long_values),
        cmocka_unit_test(test_absolute_form),
        cmocka_unit_test(test_asterisk),
        cmocka_unit_test(test_http10),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_framing_ok),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_incomplete_every_split),
        cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_chunked_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
