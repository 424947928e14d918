/*
 * estuary - HTTP caching rules; see ccontrol.h.
 */
#include "cache/ccontrol.h"
#include "common/fieldvalue.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* tchar (RFC 9110 5.6.2) */
static int is_tchar(unsigned char c)
{
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
        return 1;
    if (c >= '0' && c <= '9')
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int name_is(const char *s, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len == n && strncasecmp(s, lit, n) == 0;
}

/* 1*DIGIT clamped to EST_CC_DELTA_MAX (RFC 9111 1.2.2), or EST_CC_INVALID */
static int64_t parse_delta(const char *s, size_t len)
{
    int64_t v = 0;
    if (len == 0)
        return EST_CC_INVALID;
    for (size_t i = 0; i < len; ++i) {
        if (s[i] < '0' || s[i] > '9')
            return EST_CC_INVALID;
        if (v < EST_CC_DELTA_MAX)
            v = v * 10 + (s[i] - '0');
    }
    return v > EST_CC_DELTA_MAX ? EST_CC_DELTA_MAX : v;
}

/* merges a repeated numeric directive: invalid sticks, else the smaller (or larger) value */
static void merge(int64_t *slot, int64_t v, int keep_larger)
{
    if (*slot == EST_CC_INVALID)
        return;
    if (v == EST_CC_INVALID || *slot == EST_CC_ABSENT)
        *slot = v;
    else if (keep_larger ? v > *slot : v < *slot)
        *slot = v;
}

void est_cc_init(est_cc_t *cc)
{
    cc->flags = 0;
    cc->max_age = cc->s_maxage = EST_CC_ABSENT;
    cc->stale_while_revalidate = cc->stale_if_error = EST_CC_ABSENT;
    cc->max_stale = cc->min_fresh = EST_CC_ABSENT;
}

/* skips a quoted-string starting at the '"' at *p; returns 0 when it is unterminated */
static int skip_quoted(const char **p, const char *end)
{
    const char *q = *p + 1;
    while (q < end) {
        if (*q == '\\') {
            if (end - q < 2)
                break;
            q += 2;
            continue;
        }
        if (*q == '"') {
            *p = q + 1;
            return 1;
        }
        ++q;
    }
    *p = end;
    return 0;
}

static void apply(est_cc_t *cc, const char *name, size_t nlen, int has_arg, const char *arg, size_t alen, int arg_ok)
{
    static const struct {
        const char *name;
        unsigned flag;
    } flags[] = {
        {"no-store", EST_CC_NO_STORE},
        {"no-cache", EST_CC_NO_CACHE},
        {"private", EST_CC_PRIVATE},
        {"public", EST_CC_PUBLIC},
        {"must-revalidate", EST_CC_MUST_REVALIDATE},
        {"proxy-revalidate", EST_CC_PROXY_REVALIDATE},
        {"only-if-cached", EST_CC_ONLY_IF_CACHED},
    };
    /* a flag directive with an argument it does not take still counts: the stricter reading */
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); ++i) {
        if (name_is(name, nlen, flags[i].name)) {
            cc->flags |= flags[i].flag;
            return;
        }
    }
    int64_t v = has_arg && arg_ok ? parse_delta(arg, alen) : EST_CC_INVALID;
    if (name_is(name, nlen, "max-age"))
        merge(&cc->max_age, v, 0);
    else if (name_is(name, nlen, "s-maxage"))
        merge(&cc->s_maxage, v, 0);
    else if (name_is(name, nlen, "stale-while-revalidate"))
        merge(&cc->stale_while_revalidate, v, 0);
    else if (name_is(name, nlen, "stale-if-error"))
        merge(&cc->stale_if_error, v, 0);
    else if (name_is(name, nlen, "min-fresh"))
        merge(&cc->min_fresh, v, 1);
    else if (name_is(name, nlen, "max-stale")) {
        if (!has_arg)
            cc->flags |= EST_CC_MAX_STALE_ANY;
        else
            merge(&cc->max_stale, v, 0);
    }
}

void est_cc_parse(est_cc_t *cc, const char *v, size_t len)
{
    const char *p = v, *end = v + len;
    while (p < end) {
        while (p < end && (is_ows(*p) || *p == ','))
            ++p;
        if (p == end)
            break;
        const char *name = p;
        while (p < end && is_tchar((unsigned char)*p))
            ++p;
        size_t nlen = (size_t)(p - name);
        while (p < end && is_ows(*p))
            ++p;
        int has_arg = 0, arg_ok = 1;
        const char *arg = p;
        size_t alen = 0;
        if (p < end && *p == '=') {
            has_arg = 1;
            ++p;
            while (p < end && is_ows(*p))
                ++p;
            if (p < end && *p == '"') {
                arg = p + 1;
                if (skip_quoted(&p, end)) {
                    alen = (size_t)(p - 1 - arg);
                    /* an escape in a number is not a number */
                    if (memchr(arg, '\\', alen) != NULL)
                        arg_ok = 0;
                } else {
                    arg_ok = 0;
                }
            } else {
                arg = p;
                while (p < end && is_tchar((unsigned char)*p))
                    ++p;
                alen = (size_t)(p - arg);
            }
            while (p < end && is_ows(*p))
                ++p;
        }
        /* anything else before the next comma makes this element malformed: skip it, quotes included */
        if (p < end && *p != ',') {
            arg_ok = 0;
            while (p < end && *p != ',') {
                if (*p == '"')
                    skip_quoted(&p, end);
                else
                    ++p;
            }
        }
        if (nlen != 0)
            apply(cc, name, nlen, has_arg, arg, alen, arg_ok);
    }
}

/* --- HTTP-date ------------------------------------------------------------------------- */

typedef struct {
    const char *p, *end;
} cursor_t;

static int cur_digits(cursor_t *c, size_t n, int *out)
{
    int v = 0;
    if ((size_t)(c->end - c->p) < n)
        return -1;
    for (size_t i = 0; i < n; ++i) {
        if (c->p[i] < '0' || c->p[i] > '9')
            return -1;
        v = v * 10 + (c->p[i] - '0');
    }
    c->p += n;
    *out = v;
    return 0;
}

static int cur_char(cursor_t *c, char ch)
{
    if (c->p == c->end || *c->p != ch)
        return -1;
    ++c->p;
    return 0;
}

/* one or more spaces (the grammar has exactly one; more is tolerated) */
static int cur_spaces(cursor_t *c)
{
    if (c->p == c->end || *c->p != ' ')
        return -1;
    while (c->p < c->end && *c->p == ' ')
        ++c->p;
    return 0;
}

static size_t cur_alpha(cursor_t *c, const char **s)
{
    *s = c->p;
    while (c->p < c->end && (*c->p | 0x20) >= 'a' && (*c->p | 0x20) <= 'z')
        ++c->p;
    return (size_t)(c->p - *s);
}

static const char *const month_names[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* 1..12, or -1 */
static int cur_month(cursor_t *c)
{
    const char *s;
    if (cur_alpha(c, &s) != 3)
        return -1;
    for (int i = 0; i < 12; ++i)
        if (strncasecmp(s, month_names[i], 3) == 0)
            return i + 1;
    return -1;
}

static int is_day_name(const char *s, size_t len)
{
    static const char *const shortn[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    static const char *const longn[] = {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"};
    for (int i = 0; i < 7; ++i)
        if (name_is(s, len, shortn[i]) || name_is(s, len, longn[i]))
            return 1;
    return 0;
}

static int cur_time(cursor_t *c, int *h, int *m, int *s)
{
    if (cur_digits(c, 2, h) || cur_char(c, ':') || cur_digits(c, 2, m) || cur_char(c, ':') || cur_digits(c, 2, s))
        return -1;
    return *h <= 23 && *m <= 59 && *s <= 60 ? 0 : -1;
}

static int cur_gmt(cursor_t *c)
{
    if (c->end - c->p < 3 || strncasecmp(c->p, "GMT", 3) != 0)
        return -1;
    c->p += 3;
    return 0;
}

static int is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* days since 1970-01-01 of a proleptic Gregorian date (era arithmetic, valid for any year) */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* the Gregorian year that day `days` (since 1970-01-01) falls in */
static int64_t year_of_days(int64_t days)
{
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    return yoe + era * 400 + (mp >= 10);
}

int est_http_date_parse(const char *v, size_t len, int64_t now_s, int64_t *out_s)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    cursor_t c = {v, v + len};
    int day, month, year, h, mi, s;
    const char *dn;
    while (c.p < c.end && is_ows(*c.p))
        ++c.p;
    size_t dnlen = cur_alpha(&c, &dn);
    if (!is_day_name(dn, dnlen))
        return -1;
    if (c.p < c.end && *c.p == ',') {
        /* IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT" or rfc850 "Sunday, 06-Nov-94 08:49:37 GMT" */
        ++c.p;
        if (cur_spaces(&c) || cur_digits(&c, 2, &day))
            return -1;
        if (c.p < c.end && *c.p == '-') {
            int yy;
            ++c.p;
            if ((month = cur_month(&c)) < 0 || cur_char(&c, '-') || cur_digits(&c, 2, &yy))
                return -1;
            /* RFC 9110 5.6.7: a year more than 50 years ahead is the one a century earlier */
            int64_t now_year = year_of_days(now_s >= 0 ? now_s / 86400 : -((-now_s + 86399) / 86400));
            int64_t y = now_year - now_year % 100 + yy;
            if (y > now_year + 50)
                y -= 100;
            else if (y + 100 <= now_year + 50)
                y += 100;
            if (y < 1 || y > 9999)
                return -1;
            year = (int)y;
        } else {
            if (cur_spaces(&c) || (month = cur_month(&c)) < 0 || cur_spaces(&c) || cur_digits(&c, 4, &year))
                return -1;
        }
        if (cur_spaces(&c) || cur_time(&c, &h, &mi, &s) || cur_spaces(&c) || cur_gmt(&c))
            return -1;
    } else {
        /* asctime "Sun Nov  6 08:49:37 1994": the day is 2DIGIT or SP DIGIT */
        if (cur_spaces(&c) || (month = cur_month(&c)) < 0 || cur_spaces(&c))
            return -1;
        if (cur_digits(&c, 2, &day) != 0 && cur_digits(&c, 1, &day) != 0)
            return -1;
        if (cur_spaces(&c) || cur_time(&c, &h, &mi, &s) || cur_spaces(&c) || cur_digits(&c, 4, &year))
            return -1;
    }
    while (c.p < c.end && is_ows(*c.p))
        ++c.p;
    if (c.p != c.end || year < 1)
        return -1;
    int dim = mdays[month - 1] + (month == 2 && is_leap(year));
    if (day < 1 || day > dim)
        return -1;
    *out_s = days_from_civil(year, month, day) * 86400 + h * 3600 + mi * 60 + s;
    return 0;
}

int est_cache_age_parse(const char *v, size_t len, int64_t *out_s)
{
    const char *p = v, *end = v + len;
    while (p < end && is_ows(*p))
        ++p;
    const char *s = p;
    while (p < end && *p != ',')
        ++p;
    const char *e = p;
    while (e > s && is_ows(e[-1]))
        --e;
    int64_t x = parse_delta(s, (size_t)(e - s));
    if (x < 0)
        return -1;
    *out_s = x;
    return 0;
}

/* --- facts ----------------------------------------------------------------------------- */

void est_cache_resp_facts_init(est_cache_resp_facts_t *f)
{
    memset(f, 0, sizeof(*f));
    est_cc_init(&f->cc);
}

static void add_vary(est_cache_resp_facts_t *f, const char *v, size_t len)
{
    const char *cur = v, *s;
    size_t n;
    while (est_list_next(&cur, v + len, &s, &n)) {
        if (n == 0)
            continue;
        if (n == 1 && *s == '*') {
            f->vary_star = 1;
            continue;
        }
        for (size_t i = 0; i < n; ++i)
            if (!is_tchar((unsigned char)s[i])) {
                f->vary_overflow = 1;
                return;
            }
        size_t i;
        for (i = 0; i < f->num_vary; ++i)
            if (f->vary[i].len == n && strncasecmp(f->vary[i].base, s, n) == 0)
                break;
        if (i < f->num_vary)
            continue;
        if (f->num_vary == EST_CACHE_MAX_VARY) {
            f->vary_overflow = 1;
            return;
        }
        f->vary[f->num_vary].base = s;
        f->vary[f->num_vary].len = n;
        ++f->num_vary;
    }
}

void est_cache_resp_facts_add(est_cache_resp_facts_t *f, const char *name, size_t name_len, const char *value, size_t value_len,
                              int64_t now_s)
{
    int64_t t;
    if (name_is(name, name_len, "cache-control")) {
        f->has_cc = 1;
        est_cc_parse(&f->cc, value, value_len);
    } else if (name_is(name, name_len, "expires")) {
        /* RFC 9111 5.3: an invalid Expires is a time in the past; two of them: the reply is stale (4.2.1) */
        if (f->expires_state == 0 && est_http_date_parse(value, value_len, now_s, &t) == 0) {
            f->expires_state = 1;
            f->expires_s = t;
        } else {
            f->expires_state = -1;
        }
    } else if (name_is(name, name_len, "date")) {
        if (!f->has_date && est_http_date_parse(value, value_len, now_s, &t) == 0) {
            f->has_date = 1;
            f->date_s = t;
        }
    } else if (name_is(name, name_len, "age")) {
        /* RFC 9111 5.1: the first member; an invalid value is ignored */
        if (!f->_age_seen && est_cache_age_parse(value, value_len, &t) == 0) {
            f->has_age = 1;
            f->age_s = t;
        }
        f->_age_seen = 1;
    } else if (name_is(name, name_len, "set-cookie")) {
        f->set_cookie = 1;
    } else if (name_is(name, name_len, "vary")) {
        add_vary(f, value, value_len);
    }
}

void est_cache_req_facts_init(est_cache_req_facts_t *f, const char *method, size_t method_len)
{
    memset(f, 0, sizeof(*f));
    est_cc_init(&f->cc);
    /* method names are case-sensitive (RFC 9110 9.1) */
    f->is_get = method_len == 3 && memcmp(method, "GET", 3) == 0;
    f->is_head = method_len == 4 && memcmp(method, "HEAD", 4) == 0;
}

void est_cache_req_facts_add(est_cache_req_facts_t *f, const char *name, size_t name_len, const char *value, size_t value_len)
{
    if (name_is(name, name_len, "cache-control")) {
        f->has_cc = 1;
        est_cc_parse(&f->cc, value, value_len);
    } else if (name_is(name, name_len, "authorization")) {
        f->authorization = 1;
    } else if (name_is(name, name_len, "cookie")) {
        f->cookie = 1;
    } else if (name_is(name, name_len, "range")) {
        f->range = 1;
    } else if (name_is(name, name_len, "pragma")) {
        if (est_list_has_token(value, value_len, "no-cache", 8))
            f->pragma_no_cache = 1;
    }
}

/* --- decisions ------------------------------------------------------------------------- */

est_cache_req_action_t est_cache_request_action(const est_cache_req_facts_t *rq, const est_cache_route_policy_t *rp,
                                                est_cache_fwd_t *fwd, const char **detail)
{
    *detail = NULL;
    if (!rq->is_get && !rq->is_head) {
        *fwd = EST_CACHE_FWD_METHOD;
        return EST_CACHE_REQ_BYPASS;
    }
    *fwd = EST_CACHE_FWD_BYPASS;
    if (rq->cc.flags & EST_CC_NO_STORE) {
        *detail = "no-store";
        return EST_CACHE_REQ_BYPASS;
    }
    if (rq->authorization && !rp->shared) {
        *detail = "authorization";
        return EST_CACHE_REQ_BYPASS;
    }
    if (rq->cookie && !rp->shared) {
        *detail = "cookie";
        return EST_CACHE_REQ_BYPASS;
    }
    if (rq->range) {
        *detail = "range";
        return EST_CACHE_REQ_BYPASS;
    }
    if ((rq->cc.flags & EST_CC_NO_CACHE) || (!rq->has_cc && rq->pragma_no_cache)) {
        *fwd = EST_CACHE_FWD_REQUEST;
        *detail = "no-cache";
        return EST_CACHE_REQ_FORWARD;
    }
    *fwd = EST_CACHE_FWD_NONE;
    return EST_CACHE_REQ_LOOKUP;
}

static int status_storable(int status)
{
    /* SPEC: 2xx and 301, 404 (heuristically cacheable, RFC 9110 15.1); not 206, as ranges are not cached */
    return (status >= 200 && status <= 299 && status != 206) || status == 301 || status == 404;
}

static int64_t secs_to_ms(int64_t s)
{
    return s < 0 ? 0 : s * 1000;
}

/* a stale allowance: the backend's directive, else (when allowed) the route's */
static int64_t stale_allowance(int64_t directive, int route_allowed, int64_t route_ms)
{
    if (directive == EST_CC_INVALID)
        return 0;
    if (directive != EST_CC_ABSENT)
        return secs_to_ms(directive);
    return route_allowed && route_ms > 0 ? route_ms : 0;
}

void est_cache_decide(const est_cache_req_facts_t *rq, int status, const est_cache_resp_facts_t *rs,
                      const est_cache_route_policy_t *rp, int64_t content_length, int64_t response_time_ms,
                      est_cache_decision_t *out)
{
    const est_cc_t *cc = &rs->cc;
    memset(out, 0, sizeof(*out));
    if (!rq->is_get && !rq->is_head) {
        out->detail = "method";
        return;
    }
    if (!status_storable(status)) {
        out->detail = "status";
        return;
    }
    if (cc->flags & EST_CC_NO_STORE) {
        out->detail = "no-store";
        return;
    }
    if (cc->flags & EST_CC_PRIVATE) {
        out->detail = "private";
        return;
    }
    if (cc->flags & EST_CC_NO_CACHE) {
        out->detail = "no-cache";
        return;
    }
    if (rq->cc.flags & EST_CC_NO_STORE) {
        out->detail = "no-store";
        return;
    }
    if (rq->cookie && !rp->shared) {
        out->detail = "cookie";
        return;
    }
    /* RFC 9111 3.5 */
    if (rq->authorization && !rp->shared &&
        !((cc->flags & (EST_CC_PUBLIC | EST_CC_MUST_REVALIDATE)) || cc->s_maxage != EST_CC_ABSENT)) {
        out->detail = "authorization";
        return;
    }
    if (rs->set_cookie) {
        out->detail = "set-cookie";
        return;
    }
    if (rs->vary_star || rs->vary_overflow) {
        out->detail = "vary";
        return;
    }
    if (rp->max_entry != 0 && content_length >= 0 && (uint64_t)content_length > rp->max_entry) {
        out->detail = "too-large";
        return;
    }

    /* freshness lifetime, RFC 9111 4.2.1: s-maxage, max-age, Expires - Date; then the route's ttl */
    int64_t lifetime;
    if (cc->s_maxage != EST_CC_ABSENT)
        lifetime = secs_to_ms(cc->s_maxage);
    else if (cc->max_age != EST_CC_ABSENT)
        lifetime = secs_to_ms(cc->max_age);
    else if (rs->expires_state < 0)
        lifetime = 0;
    else if (rs->expires_state > 0) {
        int64_t date_ms = rs->has_date ? rs->date_s * 1000 : response_time_ms;
        lifetime = rs->expires_s * 1000 - date_ms;
        if (lifetime < 0)
            lifetime = 0;
        if (lifetime > EST_CC_DELTA_MAX * 1000)
            lifetime = EST_CC_DELTA_MAX * 1000;
    } else
        lifetime = rp->ttl_ms > 0 ? rp->ttl_ms : 0;

    /* stale allowances, RFC 9111 4.2.4 and 5.2.2.10, RFC 5861 */
    int64_t swr = 0, sie = 0;
    if (!(cc->flags & (EST_CC_MUST_REVALIDATE | EST_CC_PROXY_REVALIDATE))) {
        int route_allowed = cc->s_maxage == EST_CC_ABSENT;
        swr = stale_allowance(cc->stale_while_revalidate, route_allowed, rp->stale_while_revalidate_ms);
        sie = stale_allowance(cc->stale_if_error, route_allowed, rp->stale_if_error_ms);
    }
    if (lifetime == 0 && swr == 0 && sie == 0) {
        out->detail = "no-freshness";
        return;
    }
    out->storable = 1;
    out->lifetime_ms = lifetime;
    out->stale_while_revalidate_ms = swr;
    out->stale_if_error_ms = sie;
}

void est_cache_age_facts_set(est_cache_age_facts_t *a, const est_cache_resp_facts_t *rs, int64_t request_time_ms,
                             int64_t response_time_ms)
{
    a->date_ms = rs->has_date ? rs->date_s * 1000 : response_time_ms;
    a->age_ms = rs->has_age ? rs->age_s * 1000 : 0;
    a->request_time_ms = request_time_ms <= response_time_ms ? request_time_ms : response_time_ms;
    a->response_time_ms = response_time_ms;
}

static int64_t floor_s_ms(int64_t ms)
{
    int64_t s = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    return s * 1000;
}

int64_t est_cache_current_age(const est_cache_age_facts_t *a, int64_t now_ms)
{
    /* RFC 9111 4.2.3 */
    int64_t apparent_age = floor_s_ms(a->response_time_ms) - a->date_ms;
    if (apparent_age < 0)
        apparent_age = 0;
    int64_t response_delay = a->response_time_ms - a->request_time_ms;
    int64_t corrected_age_value = a->age_ms + (response_delay > 0 ? response_delay : 0);
    int64_t corrected_initial_age = apparent_age > corrected_age_value ? apparent_age : corrected_age_value;
    int64_t resident_time = now_ms - a->response_time_ms;
    if (resident_time < 0)
        resident_time = 0;
    return corrected_initial_age + resident_time;
}

est_cache_use_t est_cache_usable(int64_t age_ms, int64_t lifetime_ms, int64_t swr_ms, int64_t sie_ms, const est_cc_t *req)
{
    int64_t min_fresh = 0;
    if (req != NULL) {
        if (req->max_age != EST_CC_ABSENT) {
            int64_t lim = req->max_age == EST_CC_INVALID ? 0 : req->max_age * 1000;
            if (age_ms > lim)
                return EST_CACHE_UNUSABLE;
        }
        if (req->min_fresh > 0)
            min_fresh = req->min_fresh * 1000;
    }
    if (lifetime_ms > age_ms) /* fresh; or not fresh enough for this client, who wants a newer one */
        return lifetime_ms - age_ms > min_fresh ? EST_CACHE_FRESH : EST_CACHE_UNUSABLE;
    if (age_ms < lifetime_ms + swr_ms)
        return EST_CACHE_STALE_REVALIDATE;
    if (age_ms < lifetime_ms + sie_ms)
        return EST_CACHE_STALE_IF_ERROR;
    return EST_CACHE_UNUSABLE;
}

/* --- Cache-Status and Age -------------------------------------------------------------- */

typedef struct {
    char *buf;
    size_t len, cap;
    int overflow;
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (o->overflow || o->cap - o->len < n) {
        o->overflow = 1;
        return;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

static void puts_(out_t *o, const char *s)
{
    put(o, s, strlen(s));
}

static int is_sf_token(const char *s, size_t n)
{
    /* RFC 8941 3.3.4: ( ALPHA / "*" ) *( tchar / ":" / "/" ) */
    if (n == 0 || !(((s[0] | 0x20) >= 'a' && (s[0] | 0x20) <= 'z') || s[0] == '*'))
        return 0;
    for (size_t i = 1; i < n; ++i)
        if (!is_tchar((unsigned char)s[i]) && s[i] != ':' && s[i] != '/')
            return 0;
    return 1;
}

size_t est_cache_status_format(char *buf, size_t cap, const est_cache_status_t *s)
{
    static const char *const fwd_names[] = {
        [EST_CACHE_FWD_BYPASS] = "bypass",       [EST_CACHE_FWD_METHOD] = "method", [EST_CACHE_FWD_URI_MISS] = "uri-miss",
        [EST_CACHE_FWD_VARY_MISS] = "vary-miss", [EST_CACHE_FWD_MISS] = "miss",     [EST_CACHE_FWD_REQUEST] = "request",
        [EST_CACHE_FWD_STALE] = "stale",
    };
    out_t o = {buf, 0, cap, 0};
    char num[32];
    puts_(&o, "estuary");
    if (s->hit)
        puts_(&o, "; hit");
    if (s->fwd > EST_CACHE_FWD_NONE && s->fwd <= EST_CACHE_FWD_STALE) {
        puts_(&o, "; fwd=");
        puts_(&o, fwd_names[s->fwd]);
        if (s->fwd_status >= 100 && s->fwd_status <= 999) {
            snprintf(num, sizeof(num), "; fwd-status=%d", s->fwd_status);
            puts_(&o, num);
        }
    }
    if (s->stored)
        puts_(&o, "; stored");
    if (s->collapsed)
        puts_(&o, "; collapsed");
    if (s->has_ttl) {
        /* whole seconds, toward zero; bounded like every delta here */
        int64_t t = s->ttl_ms / 1000;
        if (t > EST_CC_DELTA_MAX)
            t = EST_CC_DELTA_MAX;
        if (t < -EST_CC_DELTA_MAX)
            t = -EST_CC_DELTA_MAX;
        snprintf(num, sizeof(num), "; ttl=%lld", (long long)t);
        puts_(&o, num);
    }
    if (s->detail != NULL) {
        size_t n = strlen(s->detail);
        if (n > 64)
            n = 64;
        puts_(&o, "; detail=");
        if (is_sf_token(s->detail, n)) {
            put(&o, s->detail, n);
        } else {
            /* sf-string: printable ASCII, '"' and '\' escaped, anything else left out */
            put(&o, "\"", 1);
            for (size_t i = 0; i < n; ++i) {
                char c = s->detail[i];
                if (c == '"' || c == '\\')
                    put(&o, "\\", 1);
                if (c >= 0x20 && c <= 0x7e)
                    put(&o, &c, 1);
            }
            put(&o, "\"", 1);
        }
    }
    return o.overflow ? 0 : o.len;
}

size_t est_cache_age_format(char *buf, size_t cap, int64_t age_ms)
{
    char tmp[24];
    int64_t s = age_ms > 0 ? age_ms / 1000 : 0;
    if (s > EST_CC_DELTA_MAX)
        s = EST_CC_DELTA_MAX;
    int n = snprintf(tmp, sizeof(tmp), "%lld", (long long)s);
    if (cap < 11 || n <= 0)
        return 0;
    memcpy(buf, tmp, (size_t)n);
    return (size_t)n;
}
