/*
 * estuary - upstream HTTP/1.1 wire code: request head, response head, body framing (see
 * h1wire.h).
 *
 * picohttpparser tokenizes the response head; what it lets through is checked here on top:
 * it reports an obs-folded line as a field without a name, ends lines at a bare LF, and leaves
 * the meaning of Content-Length and Transfer-Encoding to its caller. Its chunked decoder
 * accepts "0x30" (as a last chunk followed by an extension), spaces around the size and bare
 * LFs, so chunked bodies are decoded by our own state machine.
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

/* 1 when every byte of s[0..len) is a field-vchar, SP, HTAB or obs-text; 8 bytes per step
 * (common/swar.h), the bytes that stop the fast run (HTAB, or a real offender) checked singly */
static int all_field_chars(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p != end) {
        if (end - p >= 8) {
            uint64_t m = est_value_stop(est_load64(p));
            if (m == 0) {
                p += 8;
                continue;
            }
            p += est_first_hit(m);
        }
        if (!is_field_char(*p))
            return 0;
        ++p;
    }
    return 1;
}

/* 1 when s[0..len) is all tchars (RFC 9110 §5.6.2): ALPHA, DIGIT and '-' 8 bytes per step */
static int all_tchars(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p != end) {
        if (end - p >= 8) {
            uint64_t m = est_name_stop(est_load64(p));
            if (m == 0) {
                p += 8;
                continue;
            }
            p += est_first_hit(m);
        }
        if (!is_tchar(*p))
            return 0;
        ++p;
    }
    return 1;
}

/* the field lines and the status line: what picohttpparser lets through */
static int check_fields(const char *buf, size_t head_len, const char *reason, size_t reason_len,
                        const struct phr_header *headers, size_t num_headers, const char **err)
{
    /* RFC 9112 §2.2: a line ends with CRLF; a bare LF is not taken as a line end here */
    for (const char *lf = buf, *end = buf + head_len; (lf = memchr(lf, '\n', (size_t)(end - lf))) != NULL; ++lf) {
        if (lf == buf || lf[-1] != '\r') {
            *err = "bare LF in the response head";
            return -1;
        }
    }
    if (!all_field_chars(reason, reason_len)) {
        *err = "invalid byte in the reason phrase";
        return -1;
    }
    for (size_t i = 0; i != num_headers; ++i) {
        const struct phr_header *h = &headers[i];
        if (h->name == NULL) { /* RFC 9112 §5.2: obs-fold is refused, not unfolded */
            *err = "obs-fold in the response head";
            return -1;
        }
        if (h->name_len == 0) {
            *err = "empty field name";
            return -1;
        }
        if (!all_tchars(h->name, h->name_len)) { /* RFC 9112 §5.1: no whitespace before the colon */
            *err = "invalid field name";
            return -1;
        }
        if (!all_field_chars(h->value, h->value_len)) {
            *err = "invalid byte in a field value";
            return -1;
        }
    }
    return 0;
}

int est_h1_parse_response(const char *buf, size_t len, int is_head_request, struct phr_header *headers, size_t max_headers,
                          est_h1_response_t *out, const char **err)
{
    int minor = 0, status = 0;
    const char *reason = NULL;
    size_t reason_len = 0, num_headers = max_headers;
    memset(out, 0, sizeof(*out));
    int r = phr_parse_response(buf, len, &minor, &status, &reason, &reason_len, headers, &num_headers, 0);
    if (r == -2) {
        if (len > EST_H1_MAX_HEAD_SIZE) {
            *err = "response head too large";
            return -1;
        }
        return -2;
    }
    if (r < 0) {
        *err = "unparseable response head";
        return -1;
    }
    if (r > EST_H1_MAX_HEAD_SIZE) {
        *err = "response head too large";
        return -1;
    }
    if (status < 100 || status > 999) {
        *err = "invalid status code";
        return -1;
    }
    if (check_fields(buf, (size_t)r, reason, reason_len, headers, num_headers, err) != 0)
        return -1;
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
