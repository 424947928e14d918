/*
 * estuary - JSON serialization for response bodies (see jsonutil.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/jsonutil.h"

/* jansson's parser stops at 2048 levels; merging adds one. Refuse anything absurd instead of
 * recursing without bound on a value built by hand. */
#define MAX_DEPTH 4096

typedef struct st_jbuf_t {
    char *p;
    size_t len, cap;
} jbuf_t;

static int jbuf_grow(jbuf_t *b, size_t extra);
static int jbuf_add(jbuf_t *b, const char *s, size_t n);
static int dump_string(jbuf_t *b, const char *s, size_t n);
static int dump_real(jbuf_t *b, double d);
static int dump_value(jbuf_t *b, const json_t *v, unsigned depth);
static char *jbuf_finish(jbuf_t *b, int ok, size_t *len);

#define ADD_LIT(b, lit) jbuf_add((b), (lit), sizeof(lit) - 1)

/* inline: called for every token; the growth is out of line */
static inline int jbuf_reserve(jbuf_t *b, size_t extra)
{
    if (b->cap - b->len > extra) /* keep one byte for the final NUL */
        return 0;
    return jbuf_grow(b, extra);
}

__attribute__((noinline)) static int jbuf_grow(jbuf_t *b, size_t extra)
{
    size_t cap = b->cap != 0 ? b->cap : 256;
    while (cap - b->len <= extra) {
        if (cap > SIZE_MAX / 2)
            return -1;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (p == NULL)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int jbuf_add(jbuf_t *b, const char *s, size_t n)
{
    if (jbuf_reserve(b, n) != 0)
        return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

static char *jbuf_finish(jbuf_t *b, int ok, size_t *len)
{
    if (!ok || jbuf_reserve(b, 0) != 0) {
        free(b->p);
        return NULL;
    }
    b->p[b->len] = '\0';
    if (len != NULL)
        *len = b->len;
    return b->p;
}

/*
 * Escaping test, a word at a time: a word has a byte < 0x20 iff (x - 0x20*ONES) & ~x & HIGHS
 * is not 0 (a byte >= 0x80 never triggers it), and a byte equal to c iff x ^ c*ONES has a zero
 * byte, i.e. the same test with 0x01. Both are exact for the word as a whole.
 */
#define ONES64 0x0101010101010101ULL
#define HIGHS64 0x8080808080808080ULL
#define ONES32 0x01010101U
#define HIGHS32 0x80808080U

static inline uint64_t dirty64(uint64_t x)
{
    uint64_t q = x ^ (ONES64 * '"'), bs = x ^ (ONES64 * '\\');
    return (((x - ONES64 * 0x20) & ~x) | ((q - ONES64) & ~q) | ((bs - ONES64) & ~bs)) & HIGHS64;
}

static inline uint32_t dirty32(uint32_t x)
{
    uint32_t q = x ^ (ONES32 * '"'), bs = x ^ (ONES32 * '\\');
    return (((x - ONES32 * 0x20) & ~x) | ((q - ONES32) & ~q) | ((bs - ONES32) & ~bs)) & HIGHS32;
}

/*
 * Copies s[0..n) to `dst` (room for n bytes) when none of its bytes needs escaping and returns
 * 1; returns 0 otherwise, having written part of `dst`. Whole words are tested and copied; the
 * end of the string is done as one more word overlapping the previous one (n >= 8) or as two
 * overlapping halves (4 <= n < 8), so no byte is read outside s[0..n).
 */
static inline int copy_clean(char *dst, const char *s, size_t n)
{
    if (n >= 8) {
        uint64_t x;
        for (size_t i = 0; n - i > 8; i += 8) {
            memcpy(&x, s + i, 8);
            if (dirty64(x))
                return 0;
            memcpy(dst + i, &x, 8);
        }
        memcpy(&x, s + n - 8, 8);
        if (dirty64(x))
            return 0;
        memcpy(dst + n - 8, &x, 8);
        return 1;
    }
    if (n >= 4) {
        uint32_t x, y;
        memcpy(&x, s, 4);
        memcpy(&y, s + n - 4, 4);
        if (dirty32(x) | dirty32(y))
            return 0;
        memcpy(dst, &x, 4);
        memcpy(dst + n - 4, &y, 4);
        return 1;
    }
    for (size_t i = 0; i < n; ++i) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == '"' || c == '\\')
            return 0;
        dst[i] = (char)c;
    }
    return 1;
}

/* appends s[0..n) with '"', '\\' and C0 controls escaped (RFC 8259 section 7); runs of plain
 * bytes are copied at once */
static int escape_run(jbuf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF"; /* as jansson: \u001F */
    size_t run = 0;
    for (size_t i = 0; i < n; ++i) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (jbuf_add(b, s + run, i - run) != 0)
            return -1;
        run = i + 1;
        char esc[6] = {'\\', 0};
        size_t elen = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xf];
            elen = 6;
            break;
        }
        if (jbuf_add(b, esc, elen) != 0)
            return -1;
    }
    return jbuf_add(b, s + run, n - run);
}

/* Strings are UTF-8 (jansson checks on load): only '"', '\\' and C0 controls need escaping. */
static int dump_string(jbuf_t *b, const char *s, size_t n)
{
    if (jbuf_reserve(b, n + 2) != 0)
        return -1;
    b->p[b->len++] = '"';
    if (copy_clean(b->p + b->len, s, n)) { /* nothing to escape (the common case), copied into the room reserved */
        b->len += n;
        b->p[b->len++] = '"';
        return 0;
    }
    if (escape_run(b, s, n) != 0)
        return -1;
    return ADD_LIT(b, "\"");
}

char *est_u64_digits(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return end;
}

static int dump_integer(jbuf_t *b, json_int_t i)
{
    char tmp[24], *end = tmp + sizeof(tmp);
    uint64_t u = i < 0 ? (uint64_t)0 - (uint64_t)i : (uint64_t)i;
    char *p = est_u64_digits(end, u);
    if (i < 0)
        *--p = '-';
    return jbuf_add(b, p, (size_t)(end - p));
}

/*
 * The common case of dump_real without printf: |d| in [1e-4, 1e15) with a decimal of at most
 * 15 significant digits, m / 10^k, that reads back as `d`. Then "%.15g" prints exactly those
 * digits (the 15-digit rounding of d is m / 10^k: d is within half an ulp of it, far below
 * half a unit of the 15th digit) in fixed notation, and the loop below would stop at 15.
 * (double)m / 10^k is what strtod gives for that decimal (m < 2^53 and 10^k are exact, the
 * division is correctly rounded), so the round-trip check is the same one. Returns 0 when it
 * wrote the number, 1 when the general path must.
 */
static int dump_real_fast(jbuf_t *b, double d)
{
    static const double p10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
                                 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19};
    double a = d < 0 ? -d : d;
    if (!(a >= 1e-4 && a < 1e15))
        return 1;
    for (size_t k = 0; k != sizeof(p10) / sizeof(p10[0]); ++k) {
        double s = a * p10[k];
        if (s >= 1e15)
            return 1; /* would need more than 15 significant digits */
        uint64_t m = (uint64_t)(s + 0.5);
        if (m == 0 || m >= 1000000000000000ULL || (double)m / p10[k] != a)
            continue;
        if (k != 0 && m % 10 == 0)
            return 1; /* a shorter k should have matched: leave the odd case to printf */
        char tmp[48], *end = tmp + sizeof(tmp), *p;
        if (k == 0) {
            memcpy(end - 2, ".0", 2); /* keep it a real when read back, as jansson does: 100000.0 */
            p = est_u64_digits(end - 2, m);
        } else {
            p = end;
            for (size_t j = 0; j != k; ++j) {
                *--p = (char)('0' + m % 10);
                m /= 10;
            }
            *--p = '.';
            p = est_u64_digits(p, m); /* "0" when m < 10^k */
        }
        if (d < 0)
            *--p = '-';
        return jbuf_add(b, p, (size_t)(end - p)) != 0 ? -1 : 0;
    }
    return 1;
}

/* Shortest "%.Ng" (N = 15..17) that reads back as `d`; 17 digits always do (IEEE 754 double).
 * jansson's json_real() refuses NaN and infinities, so `d` is finite. */
static int dump_real(jbuf_t *b, double d)
{
    int fast = dump_real_fast(b, d);
    if (fast <= 0)
        return fast;
    char tmp[40];
    int n = 0;
    for (int prec = 15; prec <= 17; ++prec) {
        n = snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
        if (n <= 0 || (size_t)n >= sizeof(tmp))
            return -1;
        if (prec == 17 || strtod(tmp, NULL) == d)
            break;
    }
    /* a locale with a decimal comma (snprintf and strtod agree on it): JSON wants '.' */
    int integral = 1;
    for (int i = 0; i < n; ++i) {
        char c = tmp[i];
        if (c == 'e' || c == 'E') {
            integral = 0;
        } else if (!(c >= '0' && c <= '9') && c != '-' && c != '+') {
            tmp[i] = '.';
            integral = 0;
        }
    }
    if (jbuf_add(b, tmp, (size_t)n) != 0)
        return -1;
    /* keep it a real when read back, as jansson does: 100000.0 */
    return integral ? ADD_LIT(b, ".0") : 0;
}

static int dump_value(jbuf_t *b, const json_t *v, unsigned depth)
{
    if (depth > MAX_DEPTH)
        return -1;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        /* one iterator walk (json_object_keylen_foreach looks the iterator up again from the
         * key three times per member, to allow deletion while iterating; we only read) */
        json_t *obj = (json_t *)v;
        int first = 1;
        if (ADD_LIT(b, "{") != 0)
            return -1;
        for (void *it = json_object_iter(obj); it != NULL; it = json_object_iter_next(obj, it)) {
            if (!first && ADD_LIT(b, ", ") != 0)
                return -1;
            first = 0;
            if (dump_string(b, json_object_iter_key(it), json_object_iter_key_len(it)) != 0 || ADD_LIT(b, ": ") != 0 ||
                dump_value(b, json_object_iter_value(it), depth + 1) != 0)
                return -1;
        }
        return ADD_LIT(b, "}");
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (ADD_LIT(b, "[") != 0)
            return -1;
        for (size_t i = 0; i < n; ++i) {
            if (i != 0 && ADD_LIT(b, ", ") != 0)
                return -1;
            if (dump_value(b, json_array_get(v, i), depth + 1) != 0)
                return -1;
        }
        return ADD_LIT(b, "]");
    }
    case JSON_STRING:
        return dump_string(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return dump_integer(b, json_integer_value(v));
    case JSON_REAL:
        return dump_real(b, json_real_value(v));
    case JSON_TRUE:
        return ADD_LIT(b, "true");
    case JSON_FALSE:
        return ADD_LIT(b, "false");
    case JSON_NULL:
        return ADD_LIT(b, "null");
    }
    return -1;
}

char *est_json_dumps_compact(const json_t *v, size_t *len)
{
    jbuf_t b = {NULL, 0, 0};
    int ok = v != NULL && dump_value(&b, v, 0) == 0;
    return jbuf_finish(&b, ok, len);
}

/* length of the well-formed UTF-8 sequence at s[0..n) (RFC 3629 section 4), or 0 */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* no overlong form */
        else if (c == 0xED)
            hi = 0x9F; /* no UTF-16 surrogate */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F; /* nothing above U+10FFFF */
    } else {
        return 0; /* a continuation byte, C0/C1 (overlong) or F5..FF */
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

/*
 * As dump_string, for text that may not be UTF-8 (a request path in a message, a header
 * value): each byte that does not start a well-formed sequence is written as "\ufffd"
 * (U+FFFD REPLACEMENT CHARACTER, Unicode 15 section 3.9), so the body is always valid JSON
 * (RFC 8259 section 8.1: JSON text is UTF-8).
 */
static int dump_text(jbuf_t *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    if (ADD_LIT(b, "\"") != 0)
        return -1;
    while (i < n) {
        size_t l = u[i] < 0x80 ? 1 : utf8_seq_len(u + i, n - i);
        if (l != 0) {
            i += l;
            continue;
        }
        if (escape_run(b, s + run, i - run) != 0 || ADD_LIT(b, "\\ufffd") != 0)
            return -1;
        run = ++i;
    }
    if (escape_run(b, s + run, n - run) != 0)
        return -1;
    return ADD_LIT(b, "\"");
}

char *est_error_body(int status, const char *code, const char *message, const char *request_id, size_t *len)
{
    jbuf_t b = {NULL, 0, 0};
    char num[16];
    int n = snprintf(num, sizeof(num), "%d", status);
    if (code == NULL)
        code = "";
    int ok = n > 0 && (size_t)n < sizeof(num) && ADD_LIT(&b, "{\"error\": {\"status\": ") == 0 && jbuf_add(&b, num, (size_t)n) == 0 &&
             ADD_LIT(&b, ", \"code\": ") == 0 && dump_text(&b, code, strlen(code)) == 0;
    if (ok && message != NULL)
        ok = ADD_LIT(&b, ", \"message\": ") == 0 && dump_text(&b, message, strlen(message)) == 0;
    if (ok && request_id != NULL)
        ok = ADD_LIT(&b, ", \"request_id\": ") == 0 && dump_text(&b, request_id, strlen(request_id)) == 0;
    ok = ok && ADD_LIT(&b, "}}") == 0;
    return jbuf_finish(&b, ok, len);
}
