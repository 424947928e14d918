/*
 * estuary - libFuzzer driver for the HTTP/1.1 request head parser and the chunked decoder
 * (src/h1/parse.c).
 *
 * The input is a byte stream as a client would send it: heads are parsed one after the other
 * (pipelining), each followed by its Content-Length or chunked body. Invariants checked (abort
 * on failure, so they hold in release builds too):
 * - nothing is read past len (every call gets a heap copy of exactly its size, for ASan);
 * - a head: head_len <= len, every pointer inside the head, fields are tokens and values carry no
 *   CR/LF/NUL; an error has a known status with a fixed message;
 * - a prefix of the input gives -2 or the very same result (the head is found the same way
 *   however the bytes arrive);
 * - a chunked body decoded in one call, in pieces of sizes drawn from a PRNG seeded by the data,
 *   and one byte at a time gives the same result, the same body bytes and the same end, and
 *   never produces more bytes than it was given.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h1/parse.h"

#define CHECK(c)                                                                                                 \
    do {                                                                                                         \
        if (!(c)) {                                                                                              \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #c);                             \
            abort();                                                                                             \
        }                                                                                                        \
    } while (0)

#define MAX_REQUESTS 8

static uint64_t rng;

static uint64_t next_rand(void)
{
    /* xorshift64* */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1DULL;
}

static char *dup_exact(const char *p, size_t n)
{
    char *c = malloc(n ? n : 1);
    CHECK(c != NULL);
    memcpy(c, p, n);
    return c;
}

static int inside(const void *p, size_t n, const char *buf, size_t len)
{
    const char *c = p;
    return c >= buf && n <= len && (size_t)(c - buf) <= len - n;
}

static void check_error(const est_h1_error_t *err)
{
    CHECK(err->code != NULL && err->message != NULL);
    switch (err->status) {
    case 400:
        CHECK(strcmp(err->code, "bad_request") == 0);
        break;
    case 414:
        CHECK(strcmp(err->code, "uri_too_long") == 0);
        break;
    case 417:
        CHECK(strcmp(err->code, "expectation_failed") == 0);
        break;
    case 431:
        CHECK(strcmp(err->code, "headers_too_large") == 0);
        break;
    case 501:
        CHECK(strcmp(err->code, "not_implemented") == 0);
        break;
    case 505:
        CHECK(strcmp(err->code, "http_version_not_supported") == 0);
        break;
    default:
        CHECK(0);
    }
    for (const char *m = err->message; *m; ++m)
        CHECK(*m >= 0x20 && *m < 0x7f);
}

static void check_request(const est_h1_request_t *req, const char *buf, size_t len, int r)
{
    CHECK((size_t)r == req->head_len && req->head_len <= len && req->head_len <= EST_H1_MAX_HEAD);
    CHECK(req->method_len > 0 && inside(req->method, req->method_len, buf, req->head_len));
    CHECK(req->target_len > 0 && req->target_len <= EST_H1_MAX_TARGET);
    CHECK(inside(req->target, req->target_len, buf, req->head_len));
    CHECK(req->path_len > 0);
    CHECK(inside(req->path, req->path_len, buf, req->head_len) || (req->path_len == 1 && req->path[0] == '/'));
    CHECK(req->form != EST_H1_FORM_ASTERISK || (req->path_len == 1 && req->path[0] == '*'));
    CHECK(req->form != EST_H1_FORM_ORIGIN || req->path[0] == '/');
    CHECK(req->minor_version == 0 || req->minor_version == 1);
    if (req->authority != NULL)
        CHECK(req->authority_len > 0 && inside(req->authority, req->authority_len, buf, req->head_len));
    else
        CHECK(req->minor_version == 0);
    CHECK(req->num_fields <= EST_H1_MAX_FIELDS);
    for (size_t i = 0; i < req->num_fields; ++i) {
        const est_h1_field_t *f = &req->fields[i];
        CHECK(f->name_len > 0 && inside(f->name, f->name_len, buf, req->head_len));
        CHECK(inside(f->value, f->value_len, buf, req->head_len));
        for (size_t j = 0; j < f->name_len; ++j)
            CHECK(f->name[j] > 0x20 && f->name[j] < 0x7f && f->name[j] != ':');
        for (size_t j = 0; j < f->value_len; ++j)
            CHECK(f->value[j] != '\r' && f->value[j] != '\n' && f->value[j] != '\0');
        if (f->value_len > 0)
            CHECK(f->value[0] != ' ' && f->value[f->value_len - 1] != ' ');
    }
    CHECK(req->body != EST_H1_BODY_CHUNKED || req->minor_version == 1);
    CHECK(!req->upgrade || req->minor_version == 1);
}

/* parses buf[0..len) from an exact-size copy; pointers in *req are rebased onto buf */
static int parse_copy(const char *buf, size_t len, est_h1_request_t *req, est_h1_error_t *err)
{
    char *c = dup_exact(buf, len);
    int r = est_h1_parse_request(c, len, req, err);
    free(c);
    if (r > 0) /* again on the original, so the pointers can be checked and used */
        r = est_h1_parse_request(buf, len, req, err);
    return r;
}

struct decode_result {
    int64_t r;  /* -1, -2, or >= 0 */
    size_t end; /* offset of the first byte after the body (r >= 0) */
    size_t out_len;
};

/* decodes body[0..len) in pieces: piece == 0 means random sizes, else that size */
static struct decode_result decode(const char *body, size_t len, size_t piece, char *out)
{
    est_h1_chunked_t d;
    est_h1_error_t err;
    struct decode_result res = {-2, 0, 0};
    size_t off = 0;
    est_h1_chunked_init(&d);
    while (off < len || (len == 0 && off == 0)) {
        size_t n = piece ? piece : 1 + (size_t)(next_rand() % (len - off ? len - off : 1));
        if (n > len - off)
            n = len - off;
        char *b = dup_exact(body + off, n);
        size_t got = n;
        int64_t r = est_h1_decode_chunked(&d, b, &got, &err);
        CHECK(got <= n);
        memcpy(out + res.out_len, b, got);
        res.out_len += got;
        free(b);
        off += n;
        if (r == -1) {
            check_error(&err);
            CHECK(err.status == 400);
            res.r = -1;
            return res;
        }
        if (r >= 0) {
            CHECK((size_t)r <= n);
            CHECK(d.decoded == res.out_len);
            res.r = r;
            res.end = off - (size_t)r;
            return res;
        }
        if (len == 0)
            break;
    }
    CHECK(res.out_len <= len);
    return res;
}

/* returns the offset after the body, or 0 when the stream stops there */
static size_t check_chunked(const char *body, size_t len)
{
    char *out1 = malloc(len + 1), *out2 = malloc(len + 1), *out3 = malloc(len + 1);
    struct decode_result whole, pieces, bytes;
    size_t ret = 0;

    whole = decode(body, len, len ? len : 1, out1);
    pieces = decode(body, len, 0, out2);
    CHECK(whole.out_len <= len && pieces.out_len <= len);
    CHECK(whole.r == pieces.r || (whole.r >= 0 && pieces.r >= 0));
    if (len <= 4096) {
        bytes = decode(body, len, 1, out3);
        CHECK(whole.r == bytes.r || (whole.r >= 0 && bytes.r >= 0));
        if (whole.r >= 0) {
            CHECK(bytes.r == 0 && bytes.end == whole.end);
            CHECK(bytes.out_len == whole.out_len && memcmp(out1, out3, whole.out_len) == 0);
        }
    }
    if (whole.r >= 0) {
        CHECK(pieces.end == whole.end);
        CHECK(pieces.out_len == whole.out_len && memcmp(out1, out2, whole.out_len) == 0);
        CHECK(whole.out_len <= whole.end);
        ret = whole.end;
    } else if (whole.r == -2) {
        CHECK(pieces.out_len == whole.out_len && memcmp(out1, out2, whole.out_len) == 0);
    }
    free(out1);
    free(out2);
    free(out3);
    return ret;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static est_h1_request_t req, req2;
    est_h1_error_t err, err2;
    const char *p = (const char *)data;
    size_t left = size;

    /* the split points are drawn from the data itself (FNV-1a), so a run is reproducible */
    rng = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < size; ++i)
        rng = (rng ^ data[i]) * 0x100000001b3ULL;
    rng |= 1;

    for (int n = 0; n < MAX_REQUESTS && left > 0; ++n) {
        int r = parse_copy(p, left, &req, &err);
        CHECK(r == -1 || r == -2 || r > 0);
        if (r == -1)
            check_error(&err);
        else if (r > 0)
            check_request(&req, p, left, r);

        /* a prefix: incomplete, or the same outcome */
        size_t k = (size_t)(next_rand() % left);
        int rk = parse_copy(p, k, &req2, &err2);
        if (r > 0 && k >= (size_t)r)
            CHECK(rk == r);
        else if (rk != -2)
            CHECK(rk == -1 && r == -1 && err2.status == err.status && strcmp(err2.message, err.message) == 0);

        if (r <= 0)
            break;
        p += r;
        left -= (size_t)r;
        if (req.body == EST_H1_BODY_LENGTH) {
            if (req.content_length > left)
                break;
            p += req.content_length;
            left -= (size_t)req.content_length;
        } else if (req.body == EST_H1_BODY_CHUNKED) {
            size_t end = check_chunked(p, left);
            if (end == 0)
                break;
            p += end;
            left -= end;
        }
        if (!req.keep_alive)
            break;
    }
    return 0;
}
