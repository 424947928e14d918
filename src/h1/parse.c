/*
 * estuary - strict HTTP/1.1 request parsing (RFC 9112), see parse.h.
 *
 * The tokenizer is our own rather than picohttpparser: picohttpparser accepts obs-fold, bare LF,
 * whitespace before the colon and any target bytes, so every strict rule would have to be
 * re-checked on top of it in a second pass. Here one forward pass over the bytes both splits and
 * validates, and each error is found at its first offending byte, so a prefix of the input
 * yields either "incomplete" (-2) or the very error the whole input yields.
 *
 * Depends on libc only, so the fuzz driver can build it alone.
 */
#include "h1/parse.h"
#include "h1/parse_internal.h"
#include "common/fieldvalue.h"
#include "common/swar.h"

#include <string.h>

const unsigned char est_h1_ctype[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  2,  0,  0,  0,  0,  0,  0,  /* 0x00 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 0x10 */
    2,  7,  6,  3,  7,  7,  7,  7,  6,  6,  7,  7,  6,  15, 15, 6,  /* 0x20 */
    31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 6,  6,  6,  6,  6,  6,  /* 0x30 */
    6,  31, 31, 31, 31, 31, 31, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x40 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6,  6,  6,  7,  15, /* 0x50 */
    7,  31, 31, 31, 31, 31, 31, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x60 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6,  7,  6,  15, 0,  /* 0x70 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0x80 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0x90 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xa0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xb0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xc0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xd0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xe0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xf0 */
};

/* --- word-at-a-time scanning (common/swar.h; 8 bytes per step on the long runs: target and values) --- */

#define ONES EST_SWAR_ONES
#define HIGHS EST_SWAR_HIGHS

/* the same for a host: ALPHA, DIGIT, '-' and '.' (C_HOST's '_' and '~' go bytewise) */
static inline uint64_t host_stop(uint64_t x)
{
    uint64_t x7 = x & ~HIGHS, dot = ~((x7 ^ (ONES * '.')) + ~HIGHS);
    return (~(est_alnum_dash(x7) | dot) | x) & HIGHS;
}

/* bytes not allowed in a request target (and SP, which ends it): see C_TARGET */
static inline uint64_t target_stop(uint64_t x)
{
    return est_has_less(x, 0x21) | est_has_byte(x, 0x7f) | est_has_byte(x, '#') | (x & HIGHS);
}

/* --- helpers --- */

/* n[0..n_len) equals the lowercase literal lit, case-insensitively. lit holds only letters,
 * digits, '-', ':' and '/', for which "| 0x20" folds case and can alias nothing but a CTL, which
 * the bytes compared here (names, values, targets) never contain. */
static inline int lit_eq(const unsigned char *n, size_t n_len, const char *lit, size_t lit_len)
{
    size_t i = 0;
    if (n_len != lit_len)
        return 0;
    for (; i + 8 <= lit_len; i += 8)
        if ((est_load64(n + i) | (ONES * 0x20)) != est_load64((const unsigned char *)lit + i))
            return 0;
    for (; i < lit_len; ++i)
        if ((n[i] | 0x20) != (unsigned char)lit[i])
            return 0;
    return 1;
}

#define LIT_EQ(n, n_len, lit) lit_eq((n), (n_len), lit, sizeof(lit) - 1)

/* est_list_next (common/fieldvalue.h) over the parser's unsigned bytes */
static inline int list_next(const unsigned char **cur, const unsigned char *end, const unsigned char **el, size_t *el_len)
{
    const char *c = (const char *)*cur, *e;
    int r = est_list_next(&c, (const char *)end, &e, el_len);
    *cur = (const unsigned char *)c;
    *el = (const unsigned char *)e;
    return r;
}

/*
 * authority = host [ ":" port ] (RFC 3986 3.2), for the Host field and the absolute-form target.
 * Stricter than the grammar on purpose: no userinfo (RFC 9110 4.2.4), a reg-name only of
 * ALPHA DIGIT - . _ ~ (no percent-encoding or sub-delims, which no real host needs and which
 * hops may read differently), an IP-literal of hex digits, ':' and '.', a port of 1-5 digits
 * up to 65535.
 */
static int valid_authority(const unsigned char *a, size_t n)
{
    size_t i = 0;
    if (n == 0)
        return 0;
    if (a[0] == '[') {
        for (i = 1; i < n && a[i] != ']'; ++i)
            if (!((est_h1_ctype[a[i]] & C_HEX) || a[i] == ':' || a[i] == '.'))
                return 0;
        if (i == n || i < 3) /* no ']', or fewer than 2 characters inside */
            return 0;
        ++i;
    } else {
        while (i + 8 <= n) {
            uint64_t m = host_stop(est_load64(a + i));
            if (m != 0) {
                i += est_first_hit(m);
                break;
            }
            i += 8;
        }
        while (i < n && (est_h1_ctype[a[i]] & C_HOST))
            ++i;
        if (i == 0)
            return 0;
    }
    if (i == n)
        return 1;
    if (a[i] != ':')
        return 0;
    ++i;
    if (i == n || n - i > 5)
        return 0;
    unsigned port = 0;
    for (; i < n; ++i) {
        if (a[i] < '0' || a[i] > '9')
            return 0;
        port = port * 10 + (unsigned)(a[i] - '0');
    }
    return port <= 65535;
}

struct head_state {
    unsigned host_count;
    int cl_seen;
    int te_seen;
    int te_chunked;      /* "chunked" named (at most once) */
    int te_last_chunked; /* the last coding named so far is "chunked" */
    int te_unknown;      /* a coding other than chunked */
    int conn_close, conn_keep_alive, conn_upgrade;
    int has_upgrade;
    int expect_continue, expect_other;
    const unsigned char *host;
    size_t host_len;
};

/* Transfer-Encoding: every field adds to one list of codings (RFC 9110 5.3, RFC 9112 6.1) */
static int on_transfer_encoding(struct head_state *st, const unsigned char *v, size_t n, est_h1_error_t *err)
{
    const unsigned char *cur = v, *el;
    size_t el_len;
    st->te_seen = 1;
    while (list_next(&cur, v + n, &el, &el_len)) {
        size_t i = 0;
        if (el_len == 0)
            continue; /* empty list elements are ignored (RFC 9110 5.6.1) */
        while (i < el_len && (est_h1_ctype[el[i]] & C_TCHAR))
            ++i;
        if (i == 0)
            return est_h1_bad(err, "invalid Transfer-Encoding");
        if (LIT_EQ(el, i, "chunked")) {
            if (i != el_len)
                return est_h1_bad(err, "invalid Transfer-Encoding"); /* chunked takes no parameters */
            if (st->te_chunked)
                return est_h1_bad(err, "chunked transfer coding applied twice");
            st->te_chunked = 1;
            st->te_last_chunked = 1;
        } else {
            /* transfer-coding = token *( OWS ";" OWS transfer-parameter ) */
            while (i < el_len && est_h1_is_ows(el[i]))
                ++i;
            if (i != el_len && el[i] != ';')
                return est_h1_bad(err, "invalid Transfer-Encoding");
            st->te_unknown = 1;
            st->te_last_chunked = 0;
        }
    }
    return 0;
}

static void on_connection(struct head_state *st, const unsigned char *v, size_t n)
{
    const unsigned char *cur = v, *el;
    size_t el_len;
    /* the common single-option values first, without the list walk */
    if (LIT_EQ(v, n, "keep-alive")) {
        st->conn_keep_alive = 1;
        return;
    }
    if (LIT_EQ(v, n, "close")) {
        st->conn_close = 1;
        return;
    }
    while (list_next(&cur, v + n, &el, &el_len)) {
        if (LIT_EQ(el, el_len, "close"))
            st->conn_close = 1;
        else if (LIT_EQ(el, el_len, "keep-alive"))
            st->conn_keep_alive = 1;
        else if (LIT_EQ(el, el_len, "upgrade"))
            st->conn_upgrade = 1;
    }
}

static void on_expect(struct head_state *st, const unsigned char *v, size_t n)
{
    const unsigned char *cur = v, *el;
    size_t el_len;
    while (list_next(&cur, v + n, &el, &el_len)) {
        if (el_len == 0)
            continue;
        if (LIT_EQ(el, el_len, "100-continue"))
            st->expect_continue = 1;
        else
            st->expect_other = 1;
    }
}

/* the fields whose meaning the parser needs; names compared only when the length matches */
static int on_field(struct head_state *st, est_h1_request_t *req, const unsigned char *name, size_t name_len,
                    const unsigned char *v, size_t n, est_h1_error_t *err)
{
    switch (name_len) {
    case 4:
        if (LIT_EQ(name, name_len, "host")) {
            if (++st->host_count > 1)
                return est_h1_bad(err, "multiple Host fields");
            if (!valid_authority(v, n))
                return est_h1_bad(err, "invalid Host field");
            st->host = v;
            st->host_len = n;
        }
        break;
    case 6:
        if (LIT_EQ(name, name_len, "expect"))
            on_expect(st, v, n);
        break;
    case 7:
        if (LIT_EQ(name, name_len, "upgrade") && n != 0)
            st->has_upgrade = 1;
        break;
    case 10:
        if (LIT_EQ(name, name_len, "connection"))
            on_connection(st, v, n);
        break;
    case 14:
        if (LIT_EQ(name, name_len, "content-length")) {
            uint64_t cl = 0;
            int r = est_parse_content_length((const char *)v, n, &cl);
            if (r == -1)
                return est_h1_bad(err, "invalid Content-Length");
            if (r == -2 || (st->cl_seen && cl != req->content_length))
                return est_h1_bad(err, "conflicting Content-Length values");
            st->cl_seen = 1;
            req->content_length = cl;
        }
        break;
    case 17:
        if (LIT_EQ(name, name_len, "transfer-encoding"))
            return on_transfer_encoding(st, v, n, err);
        break;
    }
    return 0;
}

/* request-target forms (RFC 9112 3.2); the line itself has been checked byte by byte */
static int classify_target(est_h1_request_t *req, est_h1_error_t *err)
{
    const unsigned char *t = (const unsigned char *)req->target;
    size_t n = req->target_len;

    if (t[0] == '/') {
        req->form = EST_H1_FORM_ORIGIN;
        req->path = req->target;
        req->path_len = n;
        return 0;
    }
    if (n == 1 && t[0] == '*') {
        if (!(req->method_len == 7 && memcmp(req->method, "OPTIONS", 7) == 0))
            return est_h1_bad(err, "asterisk-form target is only allowed for OPTIONS");
        req->form = EST_H1_FORM_ASTERISK;
        req->path = req->target;
        req->path_len = 1;
        return 0;
    }
    /* absolute-form: the scheme is case-insensitive (RFC 3986 3.1) */
    size_t skip;
    if (n >= 7 && LIT_EQ(t, 7, "http://")) {
        skip = 7;
        req->is_https = 0;
    } else if (n >= 8 && LIT_EQ(t, 8, "https://")) {
        skip = 8;
        req->is_https = 1;
    } else {
        return est_h1_bad(err, "invalid request target");
    }
    const unsigned char *a = t + skip, *end = t + n, *slash;
    if ((slash = memchr(a, '/', (size_t)(end - a))) == NULL)
        slash = end;
    if (!valid_authority(a, (size_t)(slash - a)))
        return est_h1_bad(err, "invalid authority in request target");
    req->form = EST_H1_FORM_ABSOLUTE;
    req->authority = (const char *)a;
    req->authority_len = (size_t)(slash - a);
    if (slash == end) {
        req->path = "/";
        req->path_len = 1;
    } else {
        req->path = (const char *)slash;
        req->path_len = (size_t)(end - slash);
    }
    return 0;
}

int est_h1_parse_request(const char *buf, size_t len, est_h1_request_t *req, est_h1_error_t *err)
{
    const unsigned char *start = (const unsigned char *)buf, *p = start, *end, *tok;
    struct head_state st;
    size_t nf = 0;
    unsigned major, minor;
    /* a head may not pass EST_H1_MAX_HEAD: running out of bytes there means 431, not "more" */
    const int at_limit = len >= EST_H1_MAX_HEAD;
    end = start + (at_limit ? EST_H1_MAX_HEAD : len);

    /* empty lines before the request line (RFC 9112 2.2) */
    for (;;) {
        if (p == end)
            goto Incomplete;
        if (*p == '\r') {
            if (p + 1 == end)
                goto Incomplete;
            if (p[1] != '\n')
                return est_h1_bad(err, "invalid line ending");
            p += 2;
        } else if (*p == '\n') {
            return est_h1_bad(err, "bare LF line ending");
        } else {
            break;
        }
    }

    /* request-line = method SP request-target SP HTTP-version CRLF (RFC 9112 3) */
    tok = p;
    while (p < end && (est_h1_ctype[*p] & C_TCHAR))
        ++p;
    if (p == end)
        goto Incomplete;
    if (*p != ' ' || p == tok)
        return est_h1_bad(err, p == tok || *p < 0x21 ? "malformed request line" : "invalid method");
    req->method = (const char *)tok;
    req->method_len = (size_t)(p - tok);

    tok = ++p;
    {
        /* only EST_H1_MAX_TARGET + 1 bytes are needed to tell 414 */
        const unsigned char *tend = (size_t)(end - p) > EST_H1_MAX_TARGET ? p + EST_H1_MAX_TARGET + 1 : end;
        while (tend - p >= 8) {
            uint64_t m = target_stop(est_load64(p));
            if (m != 0) {
                p += est_first_hit(m);
                break;
            }
            p += 8;
        }
        while (p < tend && (est_h1_ctype[*p] & C_TARGET))
            ++p;
        if ((size_t)(p - tok) > EST_H1_MAX_TARGET)
            return est_h1_fail(err, 414, "uri_too_long", "request target too long");
        if (p == end)
            goto Incomplete;
    }
    if (*p != ' ' || p == tok)
        return est_h1_bad(err, p == tok || *p == '\r' || *p == '\n' ? "malformed request line" : "invalid byte in request target");
    req->target = (const char *)tok;
    req->target_len = (size_t)(p - tok);
    ++p;

    /* HTTP-version = "HTTP/" DIGIT "." DIGIT (RFC 9112 2.3), case-sensitive */
    if (end - p >= 10 && memcmp(p, "HTTP/1.1\r\n", 10) == 0) {
        major = 1;
        minor = 1;
        p += 10;
    } else {
        static const char tmpl[] = "HTTP/0.0\r\n";
        for (size_t i = 0; i < sizeof(tmpl) - 1; ++i) {
            if (p + i == end)
                goto Incomplete;
            int ok = tmpl[i] == '0' ? (p[i] >= '0' && p[i] <= '9') : p[i] == (unsigned char)tmpl[i];
            if (!ok)
                return est_h1_bad(err, i >= 8 ? "malformed request line" : "malformed HTTP version");
        }
        major = p[5] - '0';
        minor = p[7] - '0';
        p += sizeof(tmpl) - 1;
    }
    if (major != 1 || minor > 1)
        return est_h1_fail(err, 505, "http_version_not_supported", "HTTP version not supported");
    req->minor_version = (int)minor;
    /* authority-form is for CONNECT only (RFC 9112 3.2.3), which a gateway does not tunnel */
    if (req->method_len == 7 && memcmp(req->method, "CONNECT", 7) == 0)
        return est_h1_fail(err, 501, "not_implemented", "CONNECT is not supported");
    req->authority = NULL;
    req->authority_len = 0;
    req->is_https = 0;
    if (classify_target(req, err) != 0)
        return -1;

    /* field lines (RFC 9112 5) */
    memset(&st, 0, sizeof(st));
    req->content_length = 0;
    for (;;) {
        const unsigned char *name, *value, *vend;
        size_t name_len;
        if (p == end)
            goto Incomplete;
        if (*p == '\r') {
            if (p + 1 == end)
                goto Incomplete;
            if (p[1] != '\n')
                return est_h1_bad(err, "invalid line ending");
            p += 2;
            break;
        }
        if (*p == '\n')
            return est_h1_bad(err, "bare LF line ending");
        if (est_h1_is_ows(*p))
            return est_h1_bad(err, "obsolete line folding"); /* RFC 9112 5.2, 2.2 */
        if (nf == EST_H1_MAX_FIELDS)
            return est_h1_fail(err, 431, "headers_too_large", "too many header fields");

        name = p;
        for (;;) {
            while (end - p >= 8) {
                uint64_t m = est_name_stop(est_load64(p));
                if (m != 0) {
                    p += est_first_hit(m);
                    break;
                }
                p += 8;
            }
            if (p == end)
                goto Incomplete;
            if (!(est_h1_ctype[*p] & C_TCHAR))
                break;
            ++p; /* a tchar other than ALPHA DIGIT '-', or a byte of the short tail */
        }
        if (*p != ':') {
            if (est_h1_is_ows(*p))
                return est_h1_bad(err, "whitespace between field name and colon"); /* RFC 9112 5.1 */
            if (*p == '\r' || *p == '\n')
                return est_h1_bad(err, "field line without a colon");
            return est_h1_bad(err, "invalid field name");
        }
        if (p == name)
            return est_h1_bad(err, "empty field name");
        name_len = (size_t)(p - name);
        ++p;
        while (p < end && est_h1_is_ows(*p))
            ++p;
        value = p;
        for (;;) {
            while (end - p >= 8) {
                uint64_t m = est_value_stop(est_load64(p));
                if (m != 0) {
                    p += est_first_hit(m);
                    break;
                }
                p += 8;
            }
            if (p == end)
                goto Incomplete;
            if (!(est_h1_ctype[*p] & C_VALUE))
                break;
            ++p; /* HTAB, or a byte of the short tail */
        }
        if (*p != '\r') {
            if (*p == '\n')
                return est_h1_bad(err, "bare LF line ending");
            return est_h1_bad(err, "invalid character in field value");
        }
        if (p + 1 == end)
            goto Incomplete;
        if (p[1] != '\n')
            return est_h1_bad(err, "invalid line ending");
        vend = p;
        while (vend > value && est_h1_is_ows(vend[-1]))
            --vend;
        p += 2;

        req->fields[nf].name = (const char *)name;
        req->fields[nf].name_len = name_len;
        req->fields[nf].value = (const char *)value;
        req->fields[nf].value_len = (size_t)(vend - value);
        ++nf;
        if (on_field(&st, req, name, name_len, value, (size_t)(vend - value), err) != 0)
            return -1;
    }
    req->num_fields = nf;

    /* the head is complete: checks that need all of it */
    if (minor == 1 && st.host_count == 0)
        return est_h1_bad(err, "missing Host field"); /* RFC 9112 3.2 */
    if (req->form != EST_H1_FORM_ABSOLUTE && st.host_count != 0) {
        req->authority = (const char *)st.host;
        req->authority_len = st.host_len;
    }
    if (st.te_seen) {
        /* RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 is faulty framing; with Content-Length
         * it is the classic smuggling vector; chunked must be final (RFC 9112 6.3 item 4) */
        if (minor == 0)
            return est_h1_bad(err, "Transfer-Encoding in an HTTP/1.0 request");
        if (st.cl_seen)
            return est_h1_bad(err, "both Transfer-Encoding and Content-Length");
        if (!st.te_last_chunked)
            return est_h1_bad(err, "final transfer coding is not chunked");
        if (st.te_unknown)
            return est_h1_fail(err, 501, "not_implemented", "transfer coding not supported");
        req->body = EST_H1_BODY_CHUNKED;
    } else {
        req->body = st.cl_seen ? EST_H1_BODY_LENGTH : EST_H1_BODY_NONE;
    }
    /* Expect and Upgrade are ignored in HTTP/1.0 requests (RFC 9110 10.1.1, 7.8) */
    if (minor == 1 && st.expect_other)
        return est_h1_fail(err, 417, "expectation_failed", "unsupported expectation");
    req->expect_continue = minor == 1 && st.expect_continue;
    req->upgrade = minor == 1 && st.has_upgrade && st.conn_upgrade;
    /* RFC 9112 9.3 */
    req->keep_alive = !st.conn_close && (minor == 1 || st.conn_keep_alive);
    req->head_len = (size_t)(p - start);
    return (int)req->head_len;

Incomplete:
    if (at_limit)
        return est_h1_fail(err, 431, "headers_too_large", "request head too large");
    return -2;
}
