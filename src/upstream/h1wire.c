/*
 * estuary - upstream HTTP/1.1 wire code: request head, response head, body framing (see
 * h1wire.h).
 *
 * The response head is tokenized and checked in one pass of our own (parse_head): libh2o's
 * picohttpparser, used before, let obs-fold and bare LFs through, so every line had to be
 * walked a second time, and it left the meaning of Content-Length and Transfer-Encoding to its
 * caller. Its chunked decoder accepts "0x30" (as a last chunk followed by an extension),
 * spaces around the size and bare LFs, so chunked bodies are decoded by our own state machine
 * too.
 */
#include <string.h>
#include <strings.h>
#include "upstream/h1wire.h"
#include "common/fieldvalue.h"
#include "common/swar.h"

/* ---------------------------------------------------------------- characters */

/* tchar (RFC 9110 §5.6.2) */
static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-vchar / SP / HTAB / obs-text (RFC 9110 §5.5): everything but CTLs other than HTAB, and DEL */
static int is_field_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int header_is(const struct phr_header *h, const char *name, size_t len)
{
    return h->name_len == len && strncasecmp(h->name, name, len) == 0;
}

/* the non-empty elements of a comma-separated list (RFC 9110 §5.6.1: empty ones are ignored);
 * *cur starts at the value (est_list_next, common/fieldvalue.h) */
static int next_element(const char **cur, const char *end, const char **elem, size_t *elem_len)
{
    while (est_list_next(cur, end, elem, elem_len))
        if (*elem_len != 0)
            return 1;
    return 0;
}

/* ---------------------------------------------------------------- request head */

static int is_method(h2o_iovec_t m, const char *name)
{
    size_t n = strlen(name);
    return m.len == n && n != 0 && strncasecmp(m.base, name, n) == 0;
}

size_t est_h1_request_head_bound(const est_upstream_request_t *req, h2o_iovec_t host)
{
    size_t len = req->method.len + 1 + req->path.len + sizeof(" HTTP/1.1\r\nHost: \r\n") + host.len;
    for (size_t i = 0; i != req->num_headers; ++i)
        len += req->headers[i].name->len + 2 + req->headers[i].value.len + 2;
    return len + sizeof("Connection: upgrade\r\n") + sizeof("Content-Length: 18446744073709551615\r\n") + 2;
}

/* writes `v` in decimal at p (no NUL), returns the end */
static char *append_decimal(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n != 0)
        *p++ = tmp[--n];
    return p;
}

size_t est_h1_write_request_head(char *buf, const est_upstream_request_t *req, h2o_iovec_t host)
{
    /* RFC 9110 §8.6: a POST/PUT/PATCH without content still says Content-Length: 0 */
    int cl_zero = !req->has_body && !req->body_stream && (is_method(req->method, "POST") || is_method(req->method, "PUT") ||
                                     is_method(req->method, "PATCH"));
    char *p = buf;
#define APPEND(s, n) (memcpy(p, (s), (n)), p += (n))
#define APPEND_LIT(s) APPEND(s, sizeof(s) - 1)
    APPEND(req->method.base, req->method.len);
    APPEND_LIT(" ");
    APPEND(req->path.base, req->path.len);
    APPEND_LIT(" HTTP/1.1\r\nHost: ");
    APPEND(host.base, host.len);
    APPEND_LIT("\r\n");
    for (size_t i = 0; i != req->num_headers; ++i) {
        APPEND(req->headers[i].name->base, req->headers[i].name->len);
        APPEND_LIT(": ");
        APPEND(req->headers[i].value.base, req->headers[i].value.len);
        APPEND_LIT("\r\n");
    }
    if (req->want_upgrade)
        APPEND_LIT("Connection: upgrade\r\n");
    if (req->body_stream) {
        /* a streamed body: its length when the client gave one, else chunked (RFC 9112 7.1),
         * never both (RFC 9112 6.3) */
        if (req->body_length != UINT64_MAX) {
            APPEND_LIT("Content-Length: ");
            p = append_decimal(p, req->body_length);
            APPEND_LIT("\r\n");
        } else {
            APPEND_LIT("Transfer-Encoding: chunked\r\n");
        }
    } else if (req->has_body || cl_zero) {
        APPEND_LIT("Content-Length: ");
        p = append_decimal(p, req->has_body ? (uint64_t)req->body.len : 0);
        APPEND_LIT("\r\n");
    }
    APPEND_LIT("\r\n");
#undef APPEND
#undef APPEND_LIT
    return (size_t)(p - buf);
}

/* ---------------------------------------------------------------- response head */

/* Returns the first byte at or after p that is not a field-vchar, SP or obs-text (RFC 9110
 * §5.5), HTAB allowed too: the CR that ends a value or reason phrase, an offending byte, or
 * end. 8 bytes per step (common/swar.h); the bytes that stop the fast run are checked singly. */
static const char *scan_field_chars(const char *s, const char *end)
{
    const unsigned char *p = (const unsigned char *)s, *e = (const unsigned char *)end;
    while (p != e) {
        if (e - p >= 8) {
            uint64_t m = est_value_stop(est_load64(p));
            if (m == 0) {
                p += 8;
                continue;
            }
            p += est_first_hit(m);
        }
        if (!is_field_char(*p))
            break;
        ++p;
    }
    return (const char *)p;
}

/* Returns the first byte at or after p that is not a tchar (RFC 9110 §5.6.2), or end; ALPHA,
 * DIGIT and '-' 8 bytes per step. */
static const char *scan_tchars(const char *s, const char *end)
{
    const unsigned char *p = (const unsigned char *)s, *e = (const unsigned char *)end;
    while (p != e) {
        if (e - p >= 8) {
            uint64_t m = est_name_stop(est_load64(p));
            if (m == 0) {
                p += 8;
                continue;
            }
            p += est_first_hit(m);
        }
        if (!is_tchar(*p))
            break;
        ++p;
    }
    return (const char *)p;
}

#define HEAD_INCOMPLETE (-2)
#define HEAD_BAD (-1)

/* A line ends at p (the byte that stopped a scan): CRLF there, or the head is incomplete, or
 * the byte is refused with the message for its kind. */
static int line_end(const char *p, const char *end, const char *bad_byte, const char **err)
{
    if (p == end)
        return HEAD_INCOMPLETE;
    if (*p == '\r') {
        if (p + 1 == end)
            return HEAD_INCOMPLETE;
        if (p[1] == '\n')
            return 0;
        *err = "CR without LF in the response head";
        return HEAD_BAD;
    }
    /* RFC 9112 §2.2: a line ends with CRLF; a bare LF is not taken as a line end here */
    *err = *p == '\n' ? "bare LF in the response head" : bad_byte;
    return HEAD_BAD;
}

/*
 * The response head in one pass (RFC 9112 §4, §5): "HTTP/1.D SP 3DIGIT SP [reason] CRLF",
 * then field lines "name:OWS value OWS CRLF", then CRLF. Stricter than picohttpparser, which
 * this replaces: no obs-fold (§5.2), no whitespace before the colon (§5.1), no bare LF or CR,
 * no control byte in a value or the reason. Returns the head's length, HEAD_INCOMPLETE or
 * HEAD_BAD (*err set). Every byte is looked at once.
 */
static int parse_head(const char *buf, size_t len, int *minor, int *status, struct phr_header *headers,
                      size_t *num_headers, const char **err)
{
    const char *p = buf, *end = buf + len;
    size_t max_headers = *num_headers, n = 0;
    static const char version[] = "HTTP/1.";
    size_t vlen = sizeof(version) - 1;

    /* status line */
    if (len == 0) /* buf may be NULL then: not even memcmp may look at it */
        return HEAD_INCOMPLETE;
    if (memcmp(p, version, len < vlen ? len : vlen) != 0) {
        *err = "unparseable response head";
        return HEAD_BAD;
    }
    if (len < vlen + 5) /* "D SP DDD" */
        return HEAD_INCOMPLETE;
    p += vlen;
    if (p[0] < '0' || p[0] > '9' || p[1] != ' ' || p[2] < '0' || p[2] > '9' || p[3] < '0' || p[3] > '9' || p[4] < '0' ||
        p[4] > '9') {
        *err = "unparseable response head";
        return HEAD_BAD;
    }
    *minor = p[0] - '0';
    *status = (p[2] - '0') * 100 + (p[3] - '0') * 10 + (p[4] - '0');
    p += 5;
    if (p == end)
        return HEAD_INCOMPLETE;
    if (*p != ' ') { /* the SP before the (possibly empty) reason is not optional */
        *err = "unparseable response head";
        return HEAD_BAD;
    }
    p = scan_field_chars(p + 1, end);
    int r = line_end(p, end, "invalid byte in the reason phrase", err);
    if (r != 0)
        return r;
    p += 2;

    /* field lines */
    for (;;) {
        if (p == end)
            return HEAD_INCOMPLETE;
        if (*p == '\r' || *p == '\n') {
            if ((r = line_end(p, end, NULL, err)) != 0)
                return r;
            *num_headers = n;
            return (int)(p + 2 - buf);
        }
        if (*p == ' ' || *p == '\t') { /* RFC 9112 §5.2: obs-fold is refused, not unfolded */
            *err = "obs-fold in the response head";
            return HEAD_BAD;
        }
        const char *name = p;
        p = scan_tchars(p, end);
        if (p == end)
            return HEAD_INCOMPLETE;
        if (*p != ':' || p == name) { /* RFC 9112 §5.1: no whitespace before the colon */
            *err = p == name ? "empty field name" : "invalid field name";
            return HEAD_BAD;
        }
        if (n == max_headers) {
            *err = "too many fields in the response head";
            return HEAD_BAD;
        }
        headers[n].name = name;
        headers[n].name_len = (size_t)(p - name);
        ++p;
        while (p != end && (*p == ' ' || *p == '\t')) /* OWS (RFC 9110 §5.6.3) */
            ++p;
        const char *value = p;
        p = scan_field_chars(p, end);
        if ((r = line_end(p, end, "invalid byte in a field value", err)) != 0)
            return r;
        const char *vend = p;
        while (vend != value && (vend[-1] == ' ' || vend[-1] == '\t'))
            --vend;
        headers[n].value = value;
        headers[n].value_len = (size_t)(vend - value);
        ++n;
        p += 2;
    }
}

int est_h1_parse_response(const char *buf, size_t len, int is_head_request, struct phr_header *headers, size_t max_headers,
                          est_h1_response_t *out, const char **err)
{
    int minor = 0, status = 0;
    size_t num_headers = max_headers;
    memset(out, 0, sizeof(*out));
    int r = parse_head(buf, len < EST_H1_MAX_HEAD_SIZE ? len : EST_H1_MAX_HEAD_SIZE, &minor, &status, headers, &num_headers,
                       err);
    if (r == HEAD_INCOMPLETE) {
        if (len >= EST_H1_MAX_HEAD_SIZE) {
            *err = "response head too large";
            return -1;
        }
        return -2;
    }
    if (r < 0)
        return -1;
    if (status < 100) {
        *err = "invalid status code";
        return -1;
    }
    out->minor_version = minor;
    out->status = status;
    out->num_headers = num_headers;
    if (status < 200 && status != 101) { /* RFC 9110 §15.2: interim, skipped by the client */
        out->interim = 1;
        out->body_mode = EST_H1_BODY_NONE;
        return r;
    }

    /* persistence (RFC 9112 §9.3) and framing (§6.1, §6.3) */
    int keepalive = minor >= 1, has_te = 0, has_cl = 0;
    size_t codings = 0, chunked_at = SIZE_MAX;
    uint64_t cl = 0;
    for (size_t i = 0; i != num_headers; ++i) {
        const struct phr_header *h = &headers[i];
        const char *e, *cur = h->value;
        size_t el;
        if (header_is(h, "connection", 10)) {
            if (est_list_has_token(h->value, h->value_len, "close", 5))
                keepalive = 0;
            else if (minor == 0 && est_list_has_token(h->value, h->value_len, "keep-alive", 10))
                keepalive = 1;
        } else if (header_is(h, "transfer-encoding", 17)) {
            has_te = 1;
            while (next_element(&cur, h->value + h->value_len, &e, &el)) {
                if (el == 7 && strncasecmp(e, "chunked", 7) == 0)
                    chunked_at = codings;
                ++codings;
            }
        } else if (header_is(h, "content-length", 14)) {
            int any = 0;
            while (next_element(&cur, h->value + h->value_len, &e, &el)) {
                uint64_t v;
                if (el > 19 || est_parse_decimal(e, el, &v) != 0 /* at most 19 digits */ || (has_cl && v != cl)) {
                    *err = "invalid Content-Length";
                    return -1;
                }
                has_cl = any = 1;
                cl = v;
            }
            if (!any) {
                *err = "invalid Content-Length";
                return -1;
            }
        }
    }
    if (has_te) {
        /* §6.1: Transfer-Encoding in an HTTP/1.0 message is faulty framing; §6.3: with a
         * Content-Length it is a smuggling attempt; a coding other than chunked could only be
         * read to the close and passed on still encoded: the one accepted list is "chunked" */
        if (minor == 0) {
            *err = "Transfer-Encoding in an HTTP/1.0 reply";
            return -1;
        }
        if (has_cl) {
            *err = "both Transfer-Encoding and Content-Length";
            return -1;
        }
        if (codings != 1 || chunked_at != 0) {
            *err = "unsupported Transfer-Encoding";
            return -1;
        }
    }
    if (status == 101) {
        out->body_mode = EST_H1_BODY_NONE;
        keepalive = 0;
    } else if (is_head_request || status == 204 || status == 304) {
        out->body_mode = EST_H1_BODY_NONE;
    } else if (has_te) {
        out->body_mode = EST_H1_BODY_CHUNKED;
    } else if (has_cl) {
        out->body_mode = EST_H1_BODY_LENGTH;
        out->content_length = cl;
    } else {
        out->body_mode = EST_H1_BODY_CLOSE;
        keepalive = 0;
    }
    out->keepalive = keepalive;
    return r;
}

/* ---------------------------------------------------------------- body */

enum {
    CH_SIZE,          /* chunk-size digits */
    CH_SIZE_WS,       /* BWS after the size: only before ";" */
    CH_EXT,           /* chunk-ext, up to CR */
    CH_SIZE_LF,       /* LF of the size line */
    CH_DATA,          /* chunk-data */
    CH_DATA_CR,       /* CRLF after the data */
    CH_DATA_LF,
    CH_TRAILER_START, /* start of a trailer line, or the final CRLF */
    CH_TRAILER,       /* a trailer field line, up to CR */
    CH_TRAILER_LF,
    CH_END_LF,        /* LF of the final CRLF */
    CH_DONE,
};

#define MAX_SIZE_DIGITS 32 /* leading zeros included */

void est_h1_body_init(est_h1_body_t *b, const est_h1_response_t *r)
{
    memset(b, 0, sizeof(*b));
    b->mode = r->body_mode;
    b->left = r->body_mode == EST_H1_BODY_LENGTH ? r->content_length : 0;
    b->_state = CH_SIZE;
}

static est_h1_body_status_t chunked_fail(const char **err, const char *msg)
{
    *err = msg;
    return EST_H1_BODY_ERROR;
}

static est_h1_body_status_t read_chunked(est_h1_body_t *b, char *buf, size_t len, int scan_only, size_t *decoded,
                                         size_t *used, const char **err)
{
    size_t src = 0, dst = 0;
    est_h1_body_status_t ret = EST_H1_BODY_MORE;
    while (src < len && ret == EST_H1_BODY_MORE) {
        unsigned char c = (unsigned char)buf[src];
        switch (b->_state) {
        case CH_SIZE: {
            int v = est_hex_digit(c);
            if (v >= 0) {
                if (b->left > (UINT64_MAX >> 4) || ++b->_digits > MAX_SIZE_DIGITS)
                    return chunked_fail(err, "chunk size too large");
                b->left = (b->left << 4) | (uint64_t)v;
                ++src;
                break;
            }
            if (b->_digits == 0)
                return chunked_fail(err, "invalid chunk size");
            if (c == '\r')
                b->_state = CH_SIZE_LF;
            else if (c == ';')
                b->_state = CH_EXT;
            else if (c == ' ' || c == '\t')
                b->_state = CH_SIZE_WS;
            else
                return chunked_fail(err, "invalid chunk size");
            ++src;
            break;
        }
        case CH_SIZE_WS:
            if (c == ';')
                b->_state = CH_EXT;
            else if (c != ' ' && c != '\t')
                return chunked_fail(err, "invalid chunk size line");
            ++src;
            break;
        case CH_EXT:
            if (c == '\r')
                b->_state = CH_SIZE_LF;
            else if (!is_field_char(c) || ++b->_line > EST_H1_MAX_CHUNK_EXT)
                return chunked_fail(err, "invalid chunk extension");
            ++src;
            break;
        case CH_SIZE_LF:
            if (c != '\n')
                return chunked_fail(err, "invalid chunk size line end");
            ++src;
            b->_line = 0;
            b->_digits = 0;
            b->_state = b->left == 0 ? CH_TRAILER_START : CH_DATA;
            break;
        case CH_DATA: {
            size_t n = len - src;
            if (n > b->left)
                n = (size_t)b->left;
            if (!scan_only && dst != src)
                memmove(buf + dst, buf + src, n);
            dst += n;
            src += n;
            b->left -= n;
            if (b->left == 0)
                b->_state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
            if (c != '\r')
                return chunked_fail(err, "chunk data not followed by CRLF");
            ++src;
            b->_state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (c != '\n')
                return chunked_fail(err, "chunk data not followed by CRLF");
            ++src;
            b->_state = CH_SIZE;
            break;
        case CH_TRAILER_START:
            if (c == '\r') {
                b->_state = CH_END_LF;
            } else if (c == ' ' || c == '\t') {
                return chunked_fail(err, "obs-fold in the trailers");
            } else {
                b->_colon = 0;
                b->_state = CH_TRAILER;
                break; /* the byte is read as part of the line */
            }
            ++src;
            break;
        case CH_TRAILER:
            if (++b->_trailer > EST_H1_MAX_TRAILERS)
                return chunked_fail(err, "trailers too large");
            if (c == '\r') {
                if (!b->_colon)
                    return chunked_fail(err, "invalid trailer field");
                b->_state = CH_TRAILER_LF;
            } else if (!b->_colon) {
                if (c == ':')
                    b->_colon = 1;
                else if (!is_tchar(c))
                    return chunked_fail(err, "invalid trailer field");
            } else if (!is_field_char(c)) {
                return chunked_fail(err, "invalid trailer field");
            }
            ++src;
            break;
        case CH_TRAILER_LF:
            if (c != '\n')
                return chunked_fail(err, "invalid trailer line end");
            ++src;
            b->_state = CH_TRAILER_START;
            break;
        case CH_END_LF:
            if (c != '\n')
                return chunked_fail(err, "invalid end of the chunked body");
            ++src;
            b->_state = CH_DONE;
            ret = EST_H1_BODY_DONE;
            break;
        default: /* CH_DONE */
            ret = EST_H1_BODY_DONE;
            break;
        }
    }
    if (b->_state == CH_DONE)
        ret = EST_H1_BODY_DONE;
    *decoded = dst;
    *used = src;
    return ret;
}

est_h1_body_status_t est_h1_body_read(est_h1_body_t *b, char *buf, size_t len, int scan_only, size_t *decoded,
                                      size_t *used, const char **err)
{
    est_h1_body_t copy;
    if (scan_only) { /* checking does not advance the decoder */
        copy = *b;
        b = &copy;
    }
    switch (b->mode) {
    case EST_H1_BODY_NONE:
        *decoded = *used = 0;
        return EST_H1_BODY_DONE;
    case EST_H1_BODY_LENGTH: {
        size_t n = len < b->left ? len : (size_t)b->left;
        b->left -= n;
        *decoded = *used = n;
        return b->left == 0 ? EST_H1_BODY_DONE : EST_H1_BODY_MORE;
    }
    case EST_H1_BODY_CHUNKED:
        return read_chunked(b, buf, len, scan_only, decoded, used, err);
    case EST_H1_BODY_CLOSE:
        *decoded = *used = len;
        return EST_H1_BODY_MORE;
    }
    *err = "invalid body mode";
    return EST_H1_BODY_ERROR;
}

int est_h1_body_eof_ok(const est_h1_body_t *b)
{
    switch (b->mode) {
    case EST_H1_BODY_NONE:
    case EST_H1_BODY_CLOSE:
        return 1;
    case EST_H1_BODY_LENGTH:
        return b->left == 0;
    case EST_H1_BODY_CHUNKED:
        return b->_state == CH_DONE;
    }
    return 0;
}
