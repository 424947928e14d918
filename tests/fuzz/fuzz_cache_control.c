/*
 * estuary - libFuzzer driver for the caching rules (src/cache/ccontrol.c), which read header
 * values a backend or a client chooses: Cache-Control, Expires / Date, Age, Vary, and the
 * decisions and Cache-Status built from them.
 *
 * Input: header lines "Name: value\n"; every line is given to the reply facts and the request
 * facts, and each value alone to the Cache-Control, date and Age parsers. The checks: no crash,
 * no over-read; every number stays in its documented range (delta-seconds 0..2^31, ABSENT or
 * INVALID; dates within years 1..9999; lifetimes and allowances 0..2^31 s); Vary names are
 * tokens inside the input; parsing "A,B" equals parsing A then B when A has no quote; the
 * Cache-Status value is bounded and printable.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/ccontrol.h"

#define CHECK(x)                                                                                                                   \
    do {                                                                                                                           \
        if (!(x))                                                                                                                  \
            abort();                                                                                                               \
    } while (0)

#define MAX_MS (EST_CC_DELTA_MAX * 1000)

static void check_delta(int64_t v)
{
    CHECK(v == EST_CC_ABSENT || v == EST_CC_INVALID || (v >= 0 && v <= EST_CC_DELTA_MAX));
}

static void check_cc(const est_cc_t *cc)
{
    CHECK((cc->flags & ~0xffu) == 0);
    check_delta(cc->max_age);
    check_delta(cc->s_maxage);
    check_delta(cc->stale_while_revalidate);
    check_delta(cc->stale_if_error);
    check_delta(cc->max_stale);
    check_delta(cc->min_fresh);
}

static void one_value(const char *v, size_t len)
{
    est_cc_t a, b;
    est_cc_init(&a);
    est_cc_parse(&a, v, len);
    check_cc(&a);
    /* split at the first comma: the same result when the head has no quoted-string */
    const char *comma = memchr(v, ',', len);
    if (comma != NULL && memchr(v, '"', (size_t)(comma - v)) == NULL) {
        est_cc_init(&b);
        est_cc_parse(&b, v, (size_t)(comma - v));
        est_cc_parse(&b, comma + 1, len - (size_t)(comma - v) - 1);
        CHECK(a.flags == b.flags && a.max_age == b.max_age && a.s_maxage == b.s_maxage &&
              a.stale_while_revalidate == b.stale_while_revalidate && a.stale_if_error == b.stale_if_error &&
              a.max_stale == b.max_stale && a.min_fresh == b.min_fresh);
    }
    int64_t t;
    if (est_http_date_parse(v, len, 1796601600, &t) == 0)
        CHECK(t >= INT64_C(-62135596800) && t <= INT64_C(253402300800)); /* 0001-01-01 .. 9999-12-31 23:59:60 */
    if (est_cache_age_parse(v, len, &t) == 0)
        CHECK(t >= 0 && t <= EST_CC_DELTA_MAX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    est_cache_resp_facts_t rs;
    est_cache_req_facts_t rq;
    est_cache_resp_facts_init(&rs);
    est_cache_req_facts_init(&rq, "GET", 3);
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl != NULL ? nl : end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon != NULL) {
            const char *v = colon + 1;
            size_t vl = (size_t)(le - v);
            est_cache_resp_facts_add(&rs, p, (size_t)(colon - p), v, vl, 1796601600);
            est_cache_req_facts_add(&rq, p, (size_t)(colon - p), v, vl);
            one_value(v, vl);
        } else {
            one_value(p, (size_t)(le - p));
        }
        p = nl != NULL ? nl + 1 : end;
    }
    check_cc(&rs.cc);
    check_cc(&rq.cc);
    CHECK(rs.num_vary <= EST_CACHE_MAX_VARY);
    for (size_t i = 0; i < rs.num_vary; ++i) {
        CHECK(rs.vary[i].len > 0);
        CHECK(rs.vary[i].base >= (const char *)data && rs.vary[i].base + rs.vary[i].len <= end);
    }

    const est_cache_route_policy_t policies[] = {
        {.ttl_ms = 30000, .stale_while_revalidate_ms = 10000, .stale_if_error_ms = 60000, .max_entry = 1 << 20},
        {.ttl_ms = 0, .shared = 1},
    };
    for (size_t i = 0; i < 2; ++i) {
        est_cache_fwd_t fwd;
        const char *detail;
        est_cache_req_action_t act = est_cache_request_action(&rq, &policies[i], &fwd, &detail);
        CHECK(act <= EST_CACHE_REQ_BYPASS);
        est_cache_decision_t d;
        est_cache_decide(&rq, 200, &rs, &policies[i], (int64_t)size, INT64_C(1796601600000), &d);
        CHECK(d.storable ? d.detail == NULL : d.detail != NULL);
        CHECK(d.lifetime_ms >= 0 && d.lifetime_ms <= MAX_MS);
        CHECK(d.stale_while_revalidate_ms >= 0 && d.stale_while_revalidate_ms <= MAX_MS);
        CHECK(d.stale_if_error_ms >= 0 && d.stale_if_error_ms <= MAX_MS);
        if (d.storable)
            CHECK(d.lifetime_ms > 0 || d.stale_while_revalidate_ms > 0 || d.stale_if_error_ms > 0);
        est_cache_age_facts_t a;
        est_cache_age_facts_set(&a, &rs, INT64_C(1796601600000), INT64_C(1796601600500));
        int64_t age = est_cache_current_age(&a, INT64_C(1796601601000));
        CHECK(age >= 0);
        est_cache_use_t use = est_cache_usable(age, d.lifetime_ms, d.stale_while_revalidate_ms, d.stale_if_error_ms, &rq.cc);
        CHECK(use <= EST_CACHE_UNUSABLE);
        est_cache_status_t st = {.hit = use == EST_CACHE_FRESH,
                                 .fwd = fwd,
                                 .fwd_status = 200,
                                 .stored = d.storable,
                                 .has_ttl = 1,
                                 .ttl_ms = d.lifetime_ms - age,
                                 .detail = detail != NULL ? detail : d.detail};
        char buf[EST_CACHE_STATUS_MAX];
        size_t n = est_cache_status_format(buf, sizeof(buf), &st);
        CHECK(n >= 7 && n <= sizeof(buf) && memcmp(buf, "estuary", 7) == 0);
        for (size_t j = 0; j < n; ++j)
            CHECK(buf[j] >= 0x20 && buf[j] <= 0x7e);
        CHECK(est_cache_age_format(buf, sizeof(buf), age) > 0);
    }
    return 0;
}
