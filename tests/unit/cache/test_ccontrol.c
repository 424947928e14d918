/*
 * Unit tests for the caching rules (src/cache/ccontrol.c): Cache-Control parsing (tolerant and
 * hostile inputs), HTTP-date in its three forms, Age, the reply facts, the request action, the
 * storable / freshness decision table, current age, usability, Cache-Status and Age output.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cache/ccontrol.h"

#define S(lit) lit, sizeof(lit) - 1
#define DAY INT64_C(86400)

static est_cc_t cc_of(const char *v)
{
    est_cc_t cc;
    est_cc_init(&cc);
    est_cc_parse(&cc, v, strlen(v));
    return cc;
}

static void test_cc_numbers(void **state)
{
    (void)state;
    assert_int_equal(cc_of("max-age=60").max_age, 60);
    assert_int_equal(cc_of("MAX-AGE=60").max_age, 60);
    assert_int_equal(cc_of("  max-age = 60  ").max_age, 60);
    assert_int_equal(cc_of("\tmax-age=\t60\t").max_age, 60);
    assert_int_equal(cc_of("max-age=\"60\"").max_age, 60);
    assert_int_equal(cc_of("max-age=007").max_age, 7);
    assert_int_equal(cc_of("max-age=0").max_age, 0);
    /* invalid: missing, empty, signed, not digits, followed by garbage, escaped, unterminated */
    assert_int_equal(cc_of("max-age").max_age, EST_CC_INVALID);
    assert_int_equal(cc_of("max-age=").max_age, EST_CC_INVALID);
    assert_int_equal(cc_of("max-age=,public").max_age, EST_CC_INVALID);
    assert_int_equal(cc_of("max-age=-1").max_age, EST_CC_INVALID);
    assert_int_equal(cc_of("max-age=+1").max_age, EST_CC_INVALID);
    assert_int_equal(cc_of("max-age=1x").max_age, EST_CC_INVALID);
    assert_int_equal(cc_of("max-age=1.5").max_age, EST_CC_INVALID);
    assert_int_equal(cc_of("max-age=5 6").max_age, EST_CC_INVALID);
    assert_int_equal(cc_of("max-age=\"\"").max_age, EST_CC_INVALID);
    assert_int_equal(cc_of("max-age=\"6\\0\"").max_age, EST_CC_INVALID);
    assert_int_equal(cc_of("max-age=\" 6\"").max_age, EST_CC_INVALID);
    est_cc_t u = cc_of("max-age=\"5, public");
    assert_int_equal(u.max_age, EST_CC_INVALID);
    assert_false(u.flags & EST_CC_PUBLIC); /* swallowed by the open quote */
    /* clamped to 2^31 (RFC 9111 1.2.2) */
    assert_int_equal(cc_of("max-age=2147483647").max_age, 2147483647);
    assert_int_equal(cc_of("max-age=2147483648").max_age, EST_CC_DELTA_MAX);
    assert_int_equal(cc_of("max-age=2147483649").max_age, EST_CC_DELTA_MAX);
    assert_int_equal(cc_of("max-age=99999999999999999999999999999999999999999").max_age, EST_CC_DELTA_MAX);
    /* the others */
    est_cc_t c = cc_of("s-maxage=10, stale-while-revalidate=30, stale-if-error=300");
    assert_int_equal(c.s_maxage, 10);
    assert_int_equal(c.stale_while_revalidate, 30);
    assert_int_equal(c.stale_if_error, 300);
    assert_int_equal(c.max_age, EST_CC_ABSENT);
    assert_int_equal(c.flags, 0);
}

static void test_cc_duplicates(void **state)
{
    (void)state;
    /* most restrictive: the smallest lifetime, the largest min-fresh; invalid sticks */
    assert_int_equal(cc_of("max-age=60, max-age=30").max_age, 30);
    assert_int_equal(cc_of("max-age=30, max-age=60").max_age, 30);
    assert_int_equal(cc_of("max-age=30, max-age=30").max_age, 30);
    assert_int_equal(cc_of("max-age=30, max-age=x").max_age, EST_CC_INVALID);
    assert_int_equal(cc_of("max-age=x, max-age=30").max_age, EST_CC_INVALID);
    assert_int_equal(cc_of("min-fresh=5, min-fresh=10").min_fresh, 10);
    assert_int_equal(cc_of("stale-if-error=5, stale-if-error=1").stale_if_error, 1);
    /* across field lines */
    est_cc_t c;
    est_cc_init(&c);
    est_cc_parse(&c, S("max-age=60"));
    est_cc_parse(&c, S("public, max-age=20"));
    assert_int_equal(c.max_age, 20);
    assert_true(c.flags & EST_CC_PUBLIC);
}

static void test_cc_flags(void **state)
{
    (void)state;
    assert_int_equal(cc_of("no-store").flags, EST_CC_NO_STORE);
    assert_int_equal(cc_of("No-Cache").flags, EST_CC_NO_CACHE);
    assert_int_equal(cc_of("PRIVATE").flags, EST_CC_PRIVATE);
    /* a field list is the whole reply for us; the list's commas stay inside the quotes */
    est_cc_t c = cc_of("no-cache=\"max-age=5, x\", public");
    assert_int_equal(c.flags, EST_CC_NO_CACHE | EST_CC_PUBLIC);
    assert_int_equal(c.max_age, EST_CC_ABSENT);
    assert_int_equal(cc_of("private=\"Set-Cookie\"").flags, EST_CC_PRIVATE);
    assert_int_equal(cc_of("private=x").flags, EST_CC_PRIVATE);
    assert_int_equal(cc_of("no-cache=\"a\\\"b, c\", must-revalidate").flags, EST_CC_NO_CACHE | EST_CC_MUST_REVALIDATE);
    assert_int_equal(cc_of("proxy-revalidate, only-if-cached").flags, EST_CC_PROXY_REVALIDATE | EST_CC_ONLY_IF_CACHED);
    /* not a prefix match */
    assert_int_equal(cc_of("no-stores, xprivate, public-x").flags, 0);
    /* request max-stale with and without a value */
    assert_int_equal(cc_of("max-stale").flags, EST_CC_MAX_STALE_ANY);
    assert_int_equal(cc_of("max-stale=10").max_stale, 10);
    assert_int_equal(cc_of("max-stale=10").flags, 0);
}

static void test_cc_garbage(void **state)
{
    (void)state;
    est_cc_t c = cc_of(",,, ,max-age=1,");
    assert_int_equal(c.max_age, 1);
    assert_int_equal(cc_of("foo=bar, max-age=2, baz").max_age, 2);
    assert_int_equal(cc_of("\x01\xff=5, max-age=3").max_age, 3);
    assert_int_equal(cc_of("=5, max-age=4").max_age, 4);
    assert_int_equal(cc_of("\"quoted, x\", max-age=5").max_age, 5);
    assert_int_equal(cc_of("max-age=6;x=1, public").max_age, EST_CC_INVALID);
    assert_int_equal(cc_of("max-age=6;x=1, public").flags, EST_CC_PUBLIC);
    assert_int_equal(cc_of("").flags, 0);
    est_cc_t e = cc_of("");
    assert_int_equal(e.max_age, EST_CC_ABSENT);
    /* a NUL inside the value is just a byte */
    const char nul[] = "max-age=1\0, no-store";
    est_cc_init(&c);
    est_cc_parse(&c, nul, sizeof(nul) - 1);
    assert_int_equal(c.max_age, EST_CC_INVALID);
    assert_true(c.flags & EST_CC_NO_STORE);
}

static void test_cc_many_directives(void **state)
{
    (void)state;
    /* 10,000 unknown directives and then the one that counts; 10,000 max-ages: the smallest */
    size_t cap = 10000 * 16 + 64, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (int i = 0; i < 10000; ++i)
        len += (size_t)snprintf(buf + len, cap - len, "x%d=\"y\", ", i);
    len += (size_t)snprintf(buf + len, cap - len, "max-age=7");
    assert_int_equal(cc_of(buf).max_age, 7);
    len = 0;
    for (int i = 10000; i > 0; --i)
        len += (size_t)snprintf(buf + len, cap - len, "max-age=%d,", i + 99);
    assert_int_equal(cc_of(buf).max_age, 100);
    /* 100k commas */
    memset(buf, ',', cap - 1);
    buf[cap - 1] = '\0';
    assert_int_equal(cc_of(buf).flags, 0);
    free(buf);
}

static int64_t date_of(const char *v, int64_t now_s)
{
    int64_t t = -999;
    if (est_http_date_parse(v, strlen(v), now_s, &t) != 0)
        return -999;
    return t;
}

static void test_http_date(void **state)
{
    (void)state;
    const int64_t now = 1796601600; /* 2026-12-07 */
    assert_int_equal(date_of("Sun, 06 Nov 1994 08:49:37 GMT", now), 784111777);
    assert_int_equal(date_of("Sunday, 06-Nov-94 08:49:37 GMT", now), 784111777);
    assert_int_equal(date_of("Sun Nov  6 08:49:37 1994", now), 784111777);
    assert_int_equal(date_of("Sun Nov 06 08:49:37 1994", now), 784111777);
    assert_int_equal(date_of("  Sun, 06 Nov 1994 08:49:37 GMT\t", now), 784111777);
    assert_int_equal(date_of("sun, 06 nov 1994 08:49:37 gmt", now), 784111777);
    assert_int_equal(date_of("Thu, 01 Jan 1970 00:00:00 GMT", now), 0);
    assert_int_equal(date_of("Wed, 31 Dec 1969 23:59:59 GMT", now), -1);
    assert_int_equal(date_of("Fri, 31 Dec 9999 23:59:59 GMT", now), INT64_C(253402300799));
    assert_int_equal(date_of("Tue, 29 Feb 2000 00:00:00 GMT", now), 951782400);
    assert_int_equal(date_of("Mon, 07 Dec 2026 00:00:60 GMT", now), now + 60);
    /* rfc850 years: not more than 50 years ahead of now (2026) */
    assert_int_equal(date_of("Sunday, 01-Jan-76 00:00:00 GMT", now), date_of("Thu, 01 Jan 2076 00:00:00 GMT", now));
    assert_int_equal(date_of("Sunday, 01-Jan-77 00:00:00 GMT", now), date_of("Sat, 01 Jan 1977 00:00:00 GMT", now));
    assert_int_equal(date_of("Sunday, 01-Jan-30 00:00:00 GMT", now), date_of("Tue, 01 Jan 2030 00:00:00 GMT", now));
    assert_int_equal(date_of("Sunday, 01-Jan-00 00:00:00 GMT", 0), date_of("Sat, 01 Jan 2000 00:00:00 GMT", 0));
    assert_int_equal(date_of("Sunday, 01-Jan-20 00:00:00 GMT", 0), date_of("Wed, 01 Jan 2020 00:00:00 GMT", 0));
    assert_int_equal(date_of("Sunday, 01-Jan-21 00:00:00 GMT", 0), date_of("Fri, 01 Jan 1921 00:00:00 GMT", 0));
    /* refused */
    const char *bad[] = {
        "",
        "0",
        "-1",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Mon, 29 Feb 1900 00:00:00 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 06 Nov 1994 08:49:37 GMT x",
        "Sun, 06 Nov 94 08:49:37 GMT",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nox 1994 08:49:37 GMT",
        "Sun, 06 Nov 0000 08:49:37 GMT",
        "Sun, 06 Nov 1994 8:49:37 GMT",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 94",
        "Sun Nov  6 08:49:37",
        "Sun,",
        "S",
        "Sun, 06 Nov -994 08:49:37 GMT",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
        int64_t t;
        if (est_http_date_parse(bad[i], strlen(bad[i]), now, &t) == 0)
            fail_msg("accepted: %s", bad[i]);
    }
    int64_t t;
    assert_int_equal(est_http_date_parse(S("Sun, 06 Nov 1994 08:49:37 GMT\0"), now, &t), -1);
}

static void test_age_parse(void **state)
{
    (void)state;
    int64_t a = -7;
    assert_int_equal(est_cache_age_parse(S("60"), &a), 0);
    assert_int_equal(a, 60);
    assert_int_equal(est_cache_age_parse(S(" 5 , 70"), &a), 0);
    assert_int_equal(a, 5);
    assert_int_equal(est_cache_age_parse(S("123456789012345678901234567890"), &a), 0);
    assert_int_equal(a, EST_CC_DELTA_MAX);
    a = -7;
    assert_int_equal(est_cache_age_parse(S("-5"), &a), -1);
    assert_int_equal(est_cache_age_parse(S(""), &a), -1);
    assert_int_equal(est_cache_age_parse(S(",5"), &a), -1);
    assert_int_equal(est_cache_age_parse(S("abc"), &a), -1);
    assert_int_equal(est_cache_age_parse(S("5 5"), &a), -1);
    assert_int_equal(a, -7);
}

typedef struct {
    const char *name, *value;
} hdr_t;

static void resp_facts(est_cache_resp_facts_t *f, const hdr_t *h, int64_t now_s)
{
    est_cache_resp_facts_init(f);
    for (; h != NULL && h->name != NULL; ++h)
        est_cache_resp_facts_add(f, h->name, strlen(h->name), h->value, strlen(h->value), now_s);
}

static void req_facts(est_cache_req_facts_t *f, const char *method, const hdr_t *h)
{
    est_cache_req_facts_init(f, method, strlen(method));
    for (; h != NULL && h->name != NULL; ++h)
        est_cache_req_facts_add(f, h->name, strlen(h->name), h->value, strlen(h->value));
}

static void test_resp_facts(void **state)
{
    (void)state;
    est_cache_resp_facts_t f;
    const hdr_t h1[] = {{"Expires", "Sun, 06 Nov 1994 08:49:37 GMT"},
                        {"expires", "Sun, 06 Nov 1994 08:49:37 GMT"},
                        {"Date", "Sun, 06 Nov 1994 08:00:00 GMT"},
                        {"Date", "Sun, 06 Nov 1994 09:00:00 GMT"},
                        {"Age", "x"},
                        {"Age", "50"},
                        {"Vary", "Accept-Encoding, accept-encoding"},
                        {"VARY", " User-Agent ,"},
                        {"Set-Cookie", "a=b"},
                        {"Content-Type", "text/plain"},
                        {NULL, NULL}};
    resp_facts(&f, h1, 0);
    assert_int_equal(f.expires_state, -1); /* twice: stale */
    assert_true(f.has_date);
    assert_int_equal(f.date_s, 784108800); /* the first */
    assert_false(f.has_age);               /* the first line counts, and it is invalid */
    assert_int_equal(f.num_vary, 2);
    assert_memory_equal(f.vary[0].base, "Accept-Encoding", f.vary[0].len);
    assert_memory_equal(f.vary[1].base, "User-Agent", f.vary[1].len);
    assert_false(f.vary_star);
    assert_false(f.vary_overflow);
    assert_true(f.set_cookie);
    assert_false(f.has_cc);

    const hdr_t h2[] = {{"Expires", "0"}, {"Vary", "*"}, {"Age", "3, 4"}, {"Date", "nope"}, {NULL, NULL}};
    resp_facts(&f, h2, 0);
    assert_int_equal(f.expires_state, -1);
    assert_true(f.vary_star);
    assert_true(f.has_age);
    assert_int_equal(f.age_s, 3);
    assert_false(f.has_date);

    /* 17 distinct names, or a name that is not a token: not storable */
    char many[512];
    size_t n = 0;
    for (int i = 0; i < EST_CACHE_MAX_VARY + 1; ++i)
        n += (size_t)snprintf(many + n, sizeof(many) - n, "h%d,", i);
    const hdr_t h3[] = {{"Vary", many}, {NULL, NULL}};
    resp_facts(&f, h3, 0);
    assert_true(f.vary_overflow);
    assert_int_equal(f.num_vary, EST_CACHE_MAX_VARY);
    const hdr_t h4[] = {{"Vary", "a b"}, {NULL, NULL}};
    resp_facts(&f, h4, 0);
    assert_true(f.vary_overflow);
}

static void test_request_action(void **state)
{
    (void)state;
    est_cache_route_policy_t rp = {.ttl_ms = 1000}, shared = {.ttl_ms = 1000, .shared = 1};
    est_cache_req_facts_t rq;
    est_cache_fwd_t fwd;
    const char *detail;
    const struct {
        const char *method;
        hdr_t h[3];
        int shared;
        est_cache_req_action_t want;
        est_cache_fwd_t fwd;
        const char *detail;
    } cases[] = {
        {"GET", {{NULL, NULL}}, 0, EST_CACHE_REQ_LOOKUP, EST_CACHE_FWD_NONE, NULL},
        {"HEAD", {{NULL, NULL}}, 0, EST_CACHE_REQ_LOOKUP, EST_CACHE_FWD_NONE, NULL},
        {"POST", {{NULL, NULL}}, 0, EST_CACHE_REQ_BYPASS, EST_CACHE_FWD_METHOD, NULL},
        {"get", {{NULL, NULL}}, 0, EST_CACHE_REQ_BYPASS, EST_CACHE_FWD_METHOD, NULL},
        {"GET", {{"Authorization", "Bearer x"}, {NULL, NULL}}, 0, EST_CACHE_REQ_BYPASS, EST_CACHE_FWD_BYPASS, "authorization"},
        {"GET", {{"Authorization", "Bearer x"}, {NULL, NULL}}, 1, EST_CACHE_REQ_LOOKUP, EST_CACHE_FWD_NONE, NULL},
        {"GET", {{"cookie", "a=b"}, {NULL, NULL}}, 0, EST_CACHE_REQ_BYPASS, EST_CACHE_FWD_BYPASS, "cookie"},
        {"GET", {{"cookie", "a=b"}, {NULL, NULL}}, 1, EST_CACHE_REQ_LOOKUP, EST_CACHE_FWD_NONE, NULL},
        {"GET", {{"Range", "bytes=0-1"}, {NULL, NULL}}, 1, EST_CACHE_REQ_BYPASS, EST_CACHE_FWD_BYPASS, "range"},
        {"GET", {{"Cache-Control", "no-store"}, {NULL, NULL}}, 0, EST_CACHE_REQ_BYPASS, EST_CACHE_FWD_BYPASS, "no-store"},
        {"GET", {{"Cache-Control", "no-cache"}, {NULL, NULL}}, 0, EST_CACHE_REQ_FORWARD, EST_CACHE_FWD_REQUEST, "no-cache"},
        {"GET", {{"Pragma", "no-cache"}, {NULL, NULL}}, 0, EST_CACHE_REQ_FORWARD, EST_CACHE_FWD_REQUEST, "no-cache"},
        {"GET",
         {{"Pragma", "no-cache"}, {"Cache-Control", "max-age=5"}, {NULL, NULL}},
         0,
         EST_CACHE_REQ_LOOKUP,
         EST_CACHE_FWD_NONE,
         NULL},
        {"GET", {{"Cache-Control", "max-age=0"}, {NULL, NULL}}, 0, EST_CACHE_REQ_LOOKUP, EST_CACHE_FWD_NONE, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        req_facts(&rq, cases[i].method, cases[i].h);
        est_cache_req_action_t a = est_cache_request_action(&rq, cases[i].shared ? &shared : &rp, &fwd, &detail);
        if (a != cases[i].want || fwd != cases[i].fwd || (detail == NULL) != (cases[i].detail == NULL) ||
            (detail != NULL && strcmp(detail, cases[i].detail) != 0))
            fail_msg("case %zu: action %d fwd %d detail %s", i, (int)a, (int)fwd, detail ? detail : "-");
    }
}

#define T0 INT64_C(1796601600) /* the response time, in seconds */
#define DATE_T0 "Mon, 07 Dec 2026 00:00:00 GMT"
#define DATE_T0_100 "Mon, 07 Dec 2026 00:01:40 GMT"
#define DATE_T0_M100 "Sun, 06 Dec 2026 23:58:20 GMT"

typedef struct {
    const char *method;
    int status;
    hdr_t req[3];
    hdr_t resp[5];
    est_cache_route_policy_t rp;
    int64_t content_length;
    int storable;
    const char *detail;
    int64_t lifetime, swr, sie;
} decide_case_t;

static void test_decide_table(void **state)
{
    (void)state;
    const est_cache_route_policy_t R = {.ttl_ms = 30000, .max_entry = 1000};
    const est_cache_route_policy_t RS = {.ttl_ms = 30000, .stale_while_revalidate_ms = 10000, .stale_if_error_ms = 60000};
    const est_cache_route_policy_t R0 = {.ttl_ms = 0};
    const est_cache_route_policy_t R0S = {.ttl_ms = 0, .stale_while_revalidate_ms = 10000};
    const est_cache_route_policy_t SH = {.ttl_ms = 30000, .shared = 1};
#define NOH                                                                                                                        \
    {                                                                                                                              \
        {                                                                                                                          \
            NULL, NULL                                                                                                             \
        }                                                                                                                          \
    }
    const decide_case_t cases[] = {
        /* the route's ttl when the backend says nothing; none: not stored (no heuristic freshness) */
        {"GET", 200, NOH, NOH, R, -1, 1, NULL, 30000, 0, 0},
        {"HEAD", 200, NOH, NOH, R, -1, 1, NULL, 30000, 0, 0},
        {"GET", 200, NOH, NOH, R0, -1, 0, "no-freshness", 0, 0, 0},
        {"POST", 200, NOH, NOH, R, -1, 0, "method", 0, 0, 0},
        /* statuses */
        {"GET", 204, NOH, NOH, R, -1, 1, NULL, 30000, 0, 0},
        {"GET", 206, NOH, NOH, R, -1, 0, "status", 0, 0, 0},
        {"GET", 301, NOH, NOH, R, -1, 1, NULL, 30000, 0, 0},
        {"GET", 302, NOH, NOH, R, -1, 0, "status", 0, 0, 0},
        {"GET", 304, NOH, NOH, R, -1, 0, "status", 0, 0, 0},
        {"GET", 404, NOH, NOH, R, -1, 1, NULL, 30000, 0, 0},
        {"GET", 410, NOH, NOH, R, -1, 0, "status", 0, 0, 0},
        {"GET", 500, NOH, NOH, R, -1, 0, "status", 0, 0, 0},
        {"GET", 503, {{NULL, NULL}}, {{"Cache-Control", "max-age=60"}, {NULL, NULL}}, R, -1, 0, "status", 0, 0, 0},
        /* no-store, private, no-cache (with or without a field list) */
        {"GET", 200, NOH, {{"Cache-Control", "no-store, max-age=60"}, {NULL, NULL}}, R, -1, 0, "no-store", 0, 0, 0},
        {"GET",
         200,
         NOH,
         {{"Cache-Control", "max-age=60"}, {"Cache-Control", "private"}, {NULL, NULL}},
         R,
         -1,
         0,
         "private",
         0,
         0,
         0},
        {"GET", 200, NOH, {{"Cache-Control", "private=\"x\""}, {NULL, NULL}}, R, -1, 0, "private", 0, 0, 0},
        {"GET", 200, NOH, {{"Cache-Control", "no-cache"}, {NULL, NULL}}, R, -1, 0, "no-cache", 0, 0, 0},
        {"GET", 200, NOH, {{"Cache-Control", "no-cache=\"Set-Cookie\""}, {NULL, NULL}}, R, -1, 0, "no-cache", 0, 0, 0},
        {"GET", 200, {{"Cache-Control", "no-store"}, {NULL, NULL}}, NOH, R, -1, 0, "no-store", 0, 0, 0},
        /* backend freshness wins over the route's ttl: s-maxage > max-age > Expires - Date */
        {"GET", 200, NOH, {{"Cache-Control", "max-age=60"}, {NULL, NULL}}, R, -1, 1, NULL, 60000, 0, 0},
        {"GET", 200, NOH, {{"Cache-Control", "max-age=5"}, {NULL, NULL}}, R, -1, 1, NULL, 5000, 0, 0},
        {"GET", 200, NOH, {{"Cache-Control", "max-age=60, s-maxage=10"}, {NULL, NULL}}, R, -1, 1, NULL, 10000, 0, 0},
        {"GET",
         200,
         NOH,
         {{"Cache-Control", "max-age=60"}, {"Date", DATE_T0}, {"Expires", DATE_T0_100}, {NULL, NULL}},
         R,
         -1,
         1,
         NULL,
         60000,
         0,
         0},
        {"GET", 200, NOH, {{"Date", DATE_T0}, {"Expires", DATE_T0_100}, {NULL, NULL}}, R, -1, 1, NULL, 100000, 0, 0},
        {"GET", 200, NOH, {{"Expires", DATE_T0_100}, {NULL, NULL}}, R, -1, 1, NULL, 99700, 0, 0}, /* no Date: receive time */
        {"GET", 200, NOH, {{"Date", DATE_T0}, {"Expires", DATE_T0_M100}, {NULL, NULL}}, R, -1, 0, "no-freshness", 0, 0, 0},
        {"GET", 200, NOH, {{"Expires", "0"}, {NULL, NULL}}, R, -1, 0, "no-freshness", 0, 0, 0},
        {"GET", 200, NOH, {{"Expires", "0"}, {"Cache-Control", "max-age=60"}, {NULL, NULL}}, R, -1, 1, NULL, 60000, 0, 0},
        {"GET", 200, NOH, {{"Expires", "0"}, {NULL, NULL}}, RS, -1, 1, NULL, 0, 10000, 60000},
        /* max-age=0 or invalid: stale at once, still useful under stale allowances */
        {"GET", 200, NOH, {{"Cache-Control", "max-age=0"}, {NULL, NULL}}, R, -1, 0, "no-freshness", 0, 0, 0},
        {"GET", 200, NOH, {{"Cache-Control", "max-age=0"}, {NULL, NULL}}, R0S, -1, 1, NULL, 0, 10000, 0},
        {"GET", 200, NOH, {{"Cache-Control", "max-age=abc"}, {NULL, NULL}}, R, -1, 0, "no-freshness", 0, 0, 0},
        {"GET",
         200,
         NOH,
         {{"Cache-Control", "max-age=99999999999999"}, {NULL, NULL}},
         R,
         -1,
         1,
         NULL,
         EST_CC_DELTA_MAX * 1000,
         0,
         0},
        /* stale allowances: the backend's, else the route's; none with must-/proxy-revalidate; only the backend's with s-maxage */
        {"GET", 200, NOH, NOH, RS, -1, 1, NULL, 30000, 10000, 60000},
        {"GET", 200, NOH, {{"Cache-Control", "stale-while-revalidate=5"}, {NULL, NULL}}, RS, -1, 1, NULL, 30000, 5000, 60000},
        {"GET", 200, NOH, {{"Cache-Control", "stale-if-error=1, max-age=2"}, {NULL, NULL}}, R, -1, 1, NULL, 2000, 0, 1000},
        {"GET", 200, NOH, {{"Cache-Control", "stale-if-error=x"}, {NULL, NULL}}, RS, -1, 1, NULL, 30000, 10000, 0},
        {"GET", 200, NOH, {{"Cache-Control", "must-revalidate"}, {NULL, NULL}}, RS, -1, 1, NULL, 30000, 0, 0},
        {"GET", 200, NOH, {{"Cache-Control", "proxy-revalidate, stale-if-error=9"}, {NULL, NULL}}, RS, -1, 1, NULL, 30000, 0, 0},
        {"GET", 200, NOH, {{"Cache-Control", "s-maxage=10"}, {NULL, NULL}}, RS, -1, 1, NULL, 10000, 0, 0},
        {"GET",
         200,
         NOH,
         {{"Cache-Control", "s-maxage=10, stale-while-revalidate=5"}, {NULL, NULL}},
         RS,
         -1,
         1,
         NULL,
         10000,
         5000,
         0},
        /* Authorization (RFC 9111 3.5) and Cookie (SPEC) */
        {"GET", 200, {{"Authorization", "x"}, {NULL, NULL}}, NOH, R, -1, 0, "authorization", 0, 0, 0},
        {"GET",
         200,
         {{"Authorization", "x"}, {NULL, NULL}},
         {{"Cache-Control", "public"}, {NULL, NULL}},
         R,
         -1,
         1,
         NULL,
         30000,
         0,
         0},
        {"GET",
         200,
         {{"Authorization", "x"}, {NULL, NULL}},
         {{"Cache-Control", "s-maxage=5"}, {NULL, NULL}},
         R,
         -1,
         1,
         NULL,
         5000,
         0,
         0},
        {"GET",
         200,
         {{"Authorization", "x"}, {NULL, NULL}},
         {{"Cache-Control", "must-revalidate"}, {NULL, NULL}},
         R,
         -1,
         1,
         NULL,
         30000,
         0,
         0},
        {"GET", 200, {{"Authorization", "x"}, {NULL, NULL}}, NOH, SH, -1, 1, NULL, 30000, 0, 0},
        {"GET", 200, {{"Cookie", "a=b"}, {NULL, NULL}}, {{"Cache-Control", "public"}, {NULL, NULL}}, R, -1, 0, "cookie", 0, 0, 0},
        {"GET", 200, {{"Cookie", "a=b"}, {NULL, NULL}}, NOH, SH, -1, 1, NULL, 30000, 0, 0},
        /* Set-Cookie, Vary */
        {"GET",
         200,
         NOH,
         {{"Set-Cookie", "s=1"}, {"Cache-Control", "public, max-age=9"}, {NULL, NULL}},
         SH,
         -1,
         0,
         "set-cookie",
         0,
         0,
         0},
        {"GET", 200, NOH, {{"Vary", "*"}, {NULL, NULL}}, R, -1, 0, "vary", 0, 0, 0},
        {"GET", 200, NOH, {{"Vary", "Accept-Encoding"}, {NULL, NULL}}, R, -1, 1, NULL, 30000, 0, 0},
        /* size: max_entry 1000 */
        {"GET", 200, NOH, NOH, R, 1001, 0, "too-large", 0, 0, 0},
        {"GET", 200, NOH, NOH, R, 1000, 1, NULL, 30000, 0, 0},
        {"GET", 200, NOH, NOH, R0S, INT64_MAX, 1, NULL, 0, 10000, 0}, /* max_entry 0: no limit here */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        const decide_case_t *c = &cases[i];
        est_cache_req_facts_t rq;
        est_cache_resp_facts_t rs;
        est_cache_decision_t d;
        req_facts(&rq, c->method, c->req);
        resp_facts(&rs, c->resp, T0);
        est_cache_decide(&rq, c->status, &rs, &c->rp, c->content_length, T0 * 1000 + 300, &d);
        int detail_ok = (d.detail == NULL) == (c->detail == NULL) && (d.detail == NULL || strcmp(d.detail, c->detail) == 0);
        if (d.storable != c->storable || !detail_ok || d.lifetime_ms != (c->storable ? c->lifetime : 0) ||
            d.stale_while_revalidate_ms != c->swr || d.stale_if_error_ms != c->sie)
            fail_msg("case %zu: storable %d detail %s lifetime %lld swr %lld sie %lld", i, d.storable, d.detail ? d.detail : "-",
                     (long long)d.lifetime_ms, (long long)d.stale_while_revalidate_ms, (long long)d.stale_if_error_ms);
    }
}

static void test_current_age(void **state)
{
    (void)state;
    const int64_t rt = T0 * 1000 + 700; /* received 700 ms into the second Date names */
    est_cache_resp_facts_t rs;
    est_cache_age_facts_t a;
    const hdr_t same_second[] = {{"Date", DATE_T0}, {NULL, NULL}};
    resp_facts(&rs, same_second, T0);
    est_cache_age_facts_set(&a, &rs, rt, rt);
    assert_int_equal(est_cache_current_age(&a, rt), 0);
    assert_int_equal(est_cache_current_age(&a, rt + 1500), 1500);
    assert_int_equal(est_cache_current_age(&a, rt - 5000), 0); /* a clock step back: never negative */

    /* Date 100 s before the receive time: apparent age */
    const hdr_t old[] = {{"Date", DATE_T0_M100}, {NULL, NULL}};
    resp_facts(&rs, old, T0);
    est_cache_age_facts_set(&a, &rs, rt, rt);
    assert_int_equal(est_cache_current_age(&a, rt), 100000);

    /* Age 5 plus a 2 s response delay beats an apparent age of 0 */
    const hdr_t aged[] = {{"Date", DATE_T0}, {"Age", "5"}, {NULL, NULL}};
    resp_facts(&rs, aged, T0);
    est_cache_age_facts_set(&a, &rs, rt - 2000, rt);
    assert_int_equal(est_cache_current_age(&a, rt + 1000), 8000);

    /* a Date in the future (skew): apparent age 0; no Date: receive time */
    const hdr_t future[] = {{"Date", DATE_T0_100}, {NULL, NULL}};
    resp_facts(&rs, future, T0);
    est_cache_age_facts_set(&a, &rs, rt, rt);
    assert_int_equal(est_cache_current_age(&a, rt + 10), 10);
    resp_facts(&rs, NULL, T0);
    est_cache_age_facts_set(&a, &rs, rt, rt);
    assert_int_equal(a.date_ms, rt);
    assert_int_equal(est_cache_current_age(&a, rt + 10), 10);

    /* huge Age stays far from overflow */
    const hdr_t huge[] = {{"Age", "99999999999999999999"}, {NULL, NULL}};
    resp_facts(&rs, huge, T0);
    est_cache_age_facts_set(&a, &rs, rt, rt);
    assert_int_equal(est_cache_current_age(&a, rt), EST_CC_DELTA_MAX * 1000);
}

static void test_usable(void **state)
{
    (void)state;
    assert_int_equal(est_cache_usable(0, 1000, 0, 0, NULL), EST_CACHE_FRESH);
    assert_int_equal(est_cache_usable(999, 1000, 0, 0, NULL), EST_CACHE_FRESH);
    assert_int_equal(est_cache_usable(1000, 1000, 0, 0, NULL), EST_CACHE_UNUSABLE); /* fresh only while lifetime > age */
    assert_int_equal(est_cache_usable(1000, 1000, 500, 2000, NULL), EST_CACHE_STALE_REVALIDATE);
    assert_int_equal(est_cache_usable(1499, 1000, 500, 2000, NULL), EST_CACHE_STALE_REVALIDATE);
    assert_int_equal(est_cache_usable(1500, 1000, 500, 2000, NULL), EST_CACHE_STALE_IF_ERROR);
    assert_int_equal(est_cache_usable(2999, 1000, 500, 2000, NULL), EST_CACHE_STALE_IF_ERROR);
    assert_int_equal(est_cache_usable(3000, 1000, 500, 2000, NULL), EST_CACHE_UNUSABLE);
    assert_int_equal(est_cache_usable(0, 0, 0, 0, NULL), EST_CACHE_UNUSABLE);
    /* request max-age / min-fresh */
    est_cc_t rq = cc_of("max-age=0");
    assert_int_equal(est_cache_usable(0, 1000, 0, 0, &rq), EST_CACHE_FRESH);
    assert_int_equal(est_cache_usable(1, 1000, 500, 500, &rq), EST_CACHE_UNUSABLE);
    rq = cc_of("max-age=x");
    assert_int_equal(est_cache_usable(1, 1000, 0, 0, &rq), EST_CACHE_UNUSABLE);
    rq = cc_of("max-age=5");
    assert_int_equal(est_cache_usable(5000, 10000, 0, 0, &rq), EST_CACHE_FRESH);
    assert_int_equal(est_cache_usable(5001, 10000, 0, 0, &rq), EST_CACHE_UNUSABLE);
    rq = cc_of("min-fresh=5");
    assert_int_equal(est_cache_usable(4999, 10000, 0, 0, &rq), EST_CACHE_FRESH);
    assert_int_equal(est_cache_usable(5000, 10000, 0, 0, &rq), EST_CACHE_UNUSABLE);
    assert_int_equal(est_cache_usable(5000, 10000, 1000, 1000, &rq), EST_CACHE_UNUSABLE); /* fresh, not fresh enough */
    assert_int_equal(est_cache_usable(10000, 10000, 1000, 0, &rq), EST_CACHE_STALE_REVALIDATE);
    /* extremes do not overflow */
    int64_t big = EST_CC_DELTA_MAX * 1000;
    assert_int_equal(est_cache_usable(big, big, big, big, NULL), EST_CACHE_STALE_REVALIDATE);
}

static const char *status_str(const est_cache_status_t *s)
{
    static char buf[EST_CACHE_STATUS_MAX + 1];
    size_t n = est_cache_status_format(buf, EST_CACHE_STATUS_MAX, s);
    buf[n] = '\0';
    return buf;
}

static void test_cache_status(void **state)
{
    (void)state;
    est_cache_status_t s = {.hit = 1};
    assert_string_equal(status_str(&s), "estuary; hit");
    s = (est_cache_status_t){.fwd = EST_CACHE_FWD_MISS, .stored = 1};
    assert_string_equal(status_str(&s), "estuary; fwd=miss; stored");
    s = (est_cache_status_t){.hit = 1, .fwd = EST_CACHE_FWD_STALE};
    assert_string_equal(status_str(&s), "estuary; hit; fwd=stale");
    s = (est_cache_status_t){.fwd = EST_CACHE_FWD_BYPASS, .detail = "authorization"};
    assert_string_equal(status_str(&s), "estuary; fwd=bypass; detail=authorization");
    s = (est_cache_status_t){.fwd = EST_CACHE_FWD_URI_MISS, .fwd_status = 503, .detail = "status"};
    assert_string_equal(status_str(&s), "estuary; fwd=uri-miss; fwd-status=503; detail=status");
    s = (est_cache_status_t){.fwd = EST_CACHE_FWD_VARY_MISS, .collapsed = 1, .has_ttl = 1, .ttl_ms = 29999};
    assert_string_equal(status_str(&s), "estuary; fwd=vary-miss; collapsed; ttl=29");
    s = (est_cache_status_t){.hit = 1, .has_ttl = 1, .ttl_ms = -5000};
    assert_string_equal(status_str(&s), "estuary; hit; ttl=-5");
    s = (est_cache_status_t){.fwd = EST_CACHE_FWD_METHOD};
    assert_string_equal(status_str(&s), "estuary; fwd=method");
    s = (est_cache_status_t){.fwd = EST_CACHE_FWD_REQUEST, .detail = "no-cache"};
    assert_string_equal(status_str(&s), "estuary; fwd=request; detail=no-cache");
    /* not an sf-token: an sf-string, escaped, control bytes left out */
    s = (est_cache_status_t){.fwd = EST_CACHE_FWD_MISS, .detail = "a b\"c\\\x01"};
    assert_string_equal(status_str(&s), "estuary; fwd=miss; detail=\"a b\\\"c\\\\\"");
    s.detail = "1abc";
    assert_string_equal(status_str(&s), "estuary; fwd=miss; detail=\"1abc\"");
    /* the longest value fits EST_CACHE_STATUS_MAX; a small buffer gets nothing */
    char longd[200];
    memset(longd, '"', sizeof(longd) - 1);
    longd[sizeof(longd) - 1] = '\0';
    s = (est_cache_status_t){.hit = 1,
                             .fwd = EST_CACHE_FWD_VARY_MISS,
                             .fwd_status = 999,
                             .stored = 1,
                             .collapsed = 1,
                             .has_ttl = 1,
                             .ttl_ms = INT64_MIN,
                             .detail = longd};
    char buf[EST_CACHE_STATUS_MAX];
    size_t n = est_cache_status_format(buf, sizeof(buf), &s);
    assert_true(n > 0 && n <= EST_CACHE_STATUS_MAX);
    assert_non_null(memmem(buf, n, "ttl=-2147483648;", 16));
    s = (est_cache_status_t){.fwd = EST_CACHE_FWD_MISS, .stored = 1};
    assert_int_equal(est_cache_status_format(buf, 10, &s), 0);
    assert_int_equal(est_cache_status_format(buf, 25, &s), 25);
    assert_int_equal(est_cache_status_format(buf, 24, &s), 0);
}

static void test_age_format(void **state)
{
    (void)state;
    char buf[16];
    size_t n = est_cache_age_format(buf, sizeof(buf), 0);
    assert_int_equal(n, 1);
    assert_memory_equal(buf, "0", 1);
    n = est_cache_age_format(buf, sizeof(buf), 1999);
    assert_memory_equal(buf, "1", n);
    n = est_cache_age_format(buf, sizeof(buf), -5);
    assert_memory_equal(buf, "0", n);
    n = est_cache_age_format(buf, sizeof(buf), INT64_MAX);
    assert_int_equal(n, 10);
    assert_memory_equal(buf, "2147483648", 10);
    assert_int_equal(est_cache_age_format(buf, 10, 5000), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cc_numbers),   cmocka_unit_test(test_cc_duplicates),      cmocka_unit_test(test_cc_flags),
        cmocka_unit_test(test_cc_garbage),   cmocka_unit_test(test_cc_many_directives), cmocka_unit_test(test_http_date),
        cmocka_unit_test(test_age_parse),    cmocka_unit_test(test_resp_facts),         cmocka_unit_test(test_request_action),
        cmocka_unit_test(test_decide_table), cmocka_unit_test(test_current_age),        cmocka_unit_test(test_usable),
        cmocka_unit_test(test_cache_status), cmocka_unit_test(test_age_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
