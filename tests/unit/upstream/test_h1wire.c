/*
 * Unit tests for the upstream HTTP/1.1 wire code (src/upstream/h1wire.c), on raw bytes: every
 * reply is also fed split at every byte boundary and one byte at a time, as socket reads
 * would deliver it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "upstream/h1wire.h"

/* ------------------------------------------------------------------ a reader as client.c drives it */

typedef struct run {
    int status;      /* of the final head */
    int interims;    /* 1xx heads skipped */
    int keepalive;
    est_h1_body_mode_t mode;
    char body[8192];
    size_t body_len;
    int done;        /* the reply ended cleanly */
    size_t extra;    /* bytes after the reply */
    const char *err; /* the reply was refused */
} run_t;

/*
 * Feeds raw[0..len) in pieces ending at cuts[0..ncuts) (then the rest), then an EOF when
 * `eof`. Follows client.c: parse the head (skip interim heads), check the body bytes that came
 * with the head, then decode the body in place in the input buffer.
 */
static void run_reply(const char *raw, size_t len, const size_t *cuts, size_t ncuts, int is_head, int eof, run_t *rr)
{
    static char in[128 * 1024];
    size_t in_len = 0, fed = 0;
    int in_body = 0;
    est_h1_body_t body;
    memset(rr, 0, sizeof(*rr));
    for (size_t piece = 0; piece <= ncuts; ++piece) {
        size_t end = piece < ncuts ? cuts[piece] : len;
        if (end < fed)
            continue;
        memcpy(in + in_len, raw + fed, end - fed);
        in_len += end - fed;
        fed = end;
        while (!in_body) {
            struct phr_header headers[EST_H1_MAX_HEADERS];
            est_h1_response_t resp;
            int r = est_h1_parse_response(in, in_len, is_head, headers, EST_H1_MAX_HEADERS, &resp, &rr->err);
            if (r == -1)
                return;
            if (r == -2)
                break;
            memmove(in, in + r, in_len - r);
            in_len -= r;
            if (resp.interim) {
                rr->interims++;
                continue;
            }
            rr->status = resp.status;
            rr->keepalive = resp.keepalive;
            rr->mode = resp.body_mode;
            est_h1_body_init(&body, &resp);
            in_body = 1;
            size_t d, u;
            if (in_len != 0 && est_h1_body_read(&body, in, in_len, 1, &d, &u, &rr->err) == EST_H1_BODY_ERROR)
                return;
        }
        if (in_body) {
            size_t decoded, used;
            est_h1_body_status_t st = est_h1_body_read(&body, in, in_len, 0, &decoded, &used, &rr->err);
            if (st == EST_H1_BODY_ERROR)
                return;
            assert_true(used <= in_len);
            assert_true(decoded <= used);
            assert_true(rr->body_len + decoded <= sizeof(rr->body));
            memcpy(rr->body + rr->body_len, in, decoded);
            rr->body_len += decoded;
            if (st == EST_H1_BODY_DONE) {
                rr->done = 1;
                rr->extra = in_len - used + (len - fed);
                return;
            }
            assert_int_equal(used, in_len);
            in_len = 0;
        }
    }
    if (eof && in_body && est_h1_body_eof_ok(&body))
        rr->done = 1;
}

static void run_whole(const char *raw, int is_head, int eof, run_t *rr)
{
    run_reply(raw, strlen(raw), NULL, 0, is_head, eof, rr);
}

/* The reply read whole, split in two at every byte boundary and one byte at a time must give
 * the same result. */
static void check_every_split(const char *raw, int is_head, int eof, const run_t *want)
{
    size_t len = strlen(raw);
    run_t rr;
    for (size_t k = 0; k <= len; ++k) {
        run_reply(raw, len, &k, 1, is_head, eof, &rr);
        if ((rr.err == NULL) != (want->err == NULL))
            fail_msg("split at %zu: err %s, want %s", k, rr.err ? rr.err : "-", want->err ? want->err : "-");
        assert_int_equal(rr.done, want->done);
        assert_int_equal(rr.status, want->status);
        assert_int_equal(rr.body_len, want->body_len);
        assert_memory_equal(rr.body, want->body, rr.body_len);
        assert_int_equal(rr.extra, want->extra);
    }
    size_t *cuts = malloc(len * sizeof(*cuts));
    for (size_t k = 0; k != len; ++k)
        cuts[k] = k;
    run_reply(raw, len, cuts, len, is_head, eof, &rr);
    free(cuts);
    assert_true((rr.err == NULL) == (want->err == NULL));
    assert_int_equal(rr.done, want->done);
    assert_int_equal(rr.body_len, want->body_len);
    assert_memory_equal(rr.body, want->body, rr.body_len);
}

static void expect_ok(const char *raw, int is_head, int eof, int status, const char *body, size_t extra)
{
    run_t rr;
    run_whole(raw, is_head, eof, &rr);
    if (rr.err != NULL)
        fail_msg("refused (%s): %s", rr.err, raw);
    assert_int_equal(rr.status, status);
    assert_true(rr.done);
    assert_int_equal(rr.body_len, strlen(body));
    assert_memory_equal(rr.body, body, rr.body_len);
    assert_int_equal(rr.extra, extra);
    check_every_split(raw, is_head, eof, &rr);
}

static void expect_refused(const char *raw, size_t len)
{
    run_t rr;
    run_reply(raw, len, NULL, 0, 0, 1, &rr);
    if (rr.err == NULL)
        fail_msg("accepted: %.*s", (int)len, raw);
    size_t *cuts = malloc((len + 1) * sizeof(*cuts));
    for (size_t k = 0; k != len; ++k)
        cuts[k] = k;
    run_reply(raw, len, cuts, len, 0, 1, &rr);
    free(cuts);
    if (rr.err == NULL)
        fail_msg("accepted byte by byte: %.*s", (int)len, raw);
}

#define REFUSED(lit) expect_refused(lit, sizeof(lit) - 1)

/* ------------------------------------------------------------------ request head */

static void test_request_head(void **state)
{
    h2o_iovec_t n1 = {"Accept", 6}, n2 = {"X-Id", 4};
    h2o_header_t headers[2] = {{.name = &n1, .value = {"*/*", 3}}, {.name = &n2, .value = {"7", 1}}};
    est_upstream_request_t req = {.method = {"POST", 4}, .path = {"/a?b=1", 6}, .headers = headers, .num_headers = 2,
                                  .body = {"hello", 5}, .has_body = 1};
    h2o_iovec_t host = {"api:8080", 8};
    char buf[512];
    size_t bound = est_h1_request_head_bound(&req, host);
    assert_true(bound <= sizeof(buf));
    size_t n = est_h1_write_request_head(buf, &req, host);
    assert_true(n <= bound);
    const char *want = "POST /a?b=1 HTTP/1.1\r\nHost: api:8080\r\nAccept: */*\r\nX-Id: 7\r\nContent-Length: 5\r\n\r\n";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(buf, want, n);

    /* a POST without a body says Content-Length: 0; a GET says nothing; upgrade asks for it */
    req.has_body = 0;
    n = est_h1_write_request_head(buf, &req, host);
    assert_non_null(memmem(buf, n, "Content-Length: 0\r\n", 19));
    req.method = (h2o_iovec_t){"GET", 3};
    req.num_headers = 0;
    req.want_upgrade = 1;
    n = est_h1_write_request_head(buf, &req, host);
    want = "GET /a?b=1 HTTP/1.1\r\nHost: api:8080\r\nConnection: upgrade\r\n\r\n";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(buf, want, n);
}

/* a streamed body (est_upstream_request_t.body_stream): its length when known, else chunked,
 * never both, and never the Content-Length: 0 of a body-less POST */
static void test_request_head_streamed(void **state)
{
    est_upstream_request_t req = {.method = {"PUT", 3}, .path = {"/up", 3}, .body_stream = 1, .body_length = 1234567};
    h2o_iovec_t host = {"api", 3};
    char buf[512];
    assert_true(est_h1_request_head_bound(&req, host) <= sizeof(buf));
    size_t n = est_h1_write_request_head(buf, &req, host);
    const char *want = "PUT /up HTTP/1.1\r\nHost: api\r\nContent-Length: 1234567\r\n\r\n";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(buf, want, n);

    req.body_length = UINT64_MAX;
    n = est_h1_write_request_head(buf, &req, host);
    assert_true(n <= est_h1_request_head_bound(&req, host));
    want = "PUT /up HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_int_equal(n, strlen(want));
    assert_memory_equal(buf, want, n);

    /* the largest length still fits the bound */
    req.body_length = UINT64_MAX - 1;
    n = est_h1_write_request_head(buf, &req, host);
    assert_true(n <= est_h1_request_head_bound(&req, host));
    assert_non_null(memmem(buf, n, "Content-Length: 18446744073709551614\r\n", 38));
}

/* ------------------------------------------------------------------ replies accepted */

static void test_content_length(void **state)
{
    expect_ok("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 0, 0, 200, "hello", 0);
    expect_ok("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, 0, 200, "", 0);
    /* bytes after the body are not part of it */
    expect_ok("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\n", 0, 0, 200, "hi", 17);
    /* identical values, as a list or as two fields, are one length (RFC 9110 §8.6) */
    expect_ok("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc", 0, 0, 200, "abc", 0);
    expect_ok("HTTP/1.1 200 OK\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc", 0, 0, 200, "abc", 0);
    run_t rr;
    run_whole("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", 0, 1, &rr);
    assert_null(rr.err);
    assert_false(rr.done); /* cut short */
}

static void test_chunked(void **state)
{
    expect_ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 0, 0, 200,
              "hello world", 0);
    /* case, hex digits, leading zeros, extensions (with BWS before ";"), trailers */
    expect_ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"
              "A;name=value\r\n0123456789\r\n"
              "00b ;a=\"q;x\";b\r\nabcdefghijk\r\n"
              "1\t;x\r\n!\r\n"
              "000;last=1\r\nX-Trailer: t\r\nExpires: 0\r\n\r\n",
              0, 0, 200, "0123456789abcdefghijk!", 0);
    /* a pipelined byte after the end is left over (the connection is then not reused) */
    expect_ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nX", 0, 0, 200, "hi", 1);
    run_t rr;
    run_whole("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", 0, 1, &rr);
    assert_null(rr.err);
    assert_false(rr.done); /* EOF before the last chunk: cut short */
}

static void test_close_delimited(void **state)
{
    expect_ok("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", 0, 1, 200, "until the end", 0);
    expect_ok("HTTP/1.0 200 OK\r\n\r\nold", 0, 1, 200, "old", 0);
    run_t rr;
    run_whole("HTTP/1.1 200 OK\r\n\r\nx", 0, 1, &rr);
    assert_int_equal(rr.mode, EST_H1_BODY_CLOSE);
    assert_false(rr.keepalive);
}

static void test_no_body(void **state)
{
    /* HEAD, 204 and 304 have no body whatever their framing fields say (RFC 9112 §6.3) */
    expect_ok("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", 1, 0, 200, "", 0);
    expect_ok("HTTP/1.1 204 No Content\r\n\r\n", 0, 0, 204, "", 0);
    expect_ok("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", 0, 0, 304, "", 0);
    run_t rr;
    run_whole("HTTP/1.1 204 No Content\r\n\r\n", 0, 0, &rr);
    assert_true(rr.keepalive);
}

static void test_interim(void **state)
{
    expect_ok("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
              "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
              0, 0, 200, "ok", 0);
    run_t rr;
    run_whole("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, 0, &rr);
    assert_int_equal(rr.interims, 1);
    /* 101 is not interim: it is the final head of an upgrade, with no body */
    run_whole("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nabc", 0, 0, &rr);
    assert_null(rr.err);
    assert_int_equal(rr.status, 101);
    assert_int_equal(rr.interims, 0);
    assert_false(rr.keepalive);
    assert_int_equal(rr.extra, 3);
}

static void test_keepalive(void **state)
{
    run_t rr;
    run_whole("HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n", 0, 0, &rr);
    assert_false(rr.keepalive);
    run_whole("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", 0, 0, &rr);
    assert_true(rr.keepalive);
    run_whole("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 0, 0, &rr);
    assert_false(rr.keepalive);
}

/* ------------------------------------------------------------------ replies refused */

static void test_hostile_framing(void **state)
{
    /* two framings: the reply could be read two ways (RFC 9112 §6.3 item 3) */
    REFUSED("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello");
    /* a coding we cannot remove, chunked not last, chunked twice, split over fields */
    REFUSED("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello");
    REFUSED("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n");
    /* Transfer-Encoding in HTTP/1.0 is faulty framing (RFC 9112 §6.1) */
    REFUSED("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    /* Content-Length: differing, a list of different values, not a number */
    REFUSED("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!");
    REFUSED("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!");
    REFUSED("HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello");
    REFUSED("HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello");
    REFUSED("HTTP/1.1 200 OK\r\nContent-Length: 5 5\r\n\r\nhello");
    REFUSED("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n");
}

static void test_hostile_fields(void **state)
{
    /* obs-fold (RFC 9112 §5.2): refused, whatever field it continues */
    REFUSED("HTTP/1.1 200 OK\r\nX-A: 1\r\n  Set-Cookie: a=b\r\nContent-Length: 0\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\nX-A: 1\r\n\tmore\r\nContent-Length: 0\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\n Content-Length: 0\r\n\r\n");
    /* whitespace before the colon (RFC 9112 §5.1), an empty name, a name that is not a token */
    REFUSED("HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\nX-A\t: 1\r\nContent-Length: 0\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\n: x\r\nContent-Length: 0\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\nX(A): 1\r\nContent-Length: 0\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\nNoColon\r\nContent-Length: 0\r\n\r\n");
    /* CTL, NUL, DEL, CR in a value */
    REFUSED("HTTP/1.1 200 OK\r\nX-A: a\x01" "b\r\nContent-Length: 0\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\nX-A: a\x7f" "b\r\nContent-Length: 0\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n");
    REFUSED("HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n");
    /* bare LF anywhere in the head */
    REFUSED("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n");
    REFUSED("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n");
    REFUSED("HTTP/1.1 200 OK\n\n");
    /* an interim head is checked too */
    REFUSED("HTTP/1.1 100 Continue\r\n folded\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    /* not HTTP, bad status */
    REFUSED("HTTP/2.0 200 OK\r\n\r\n");
    REFUSED("HTTP/1.1 20 OK\r\n\r\n");
    REFUSED("HTTP/1.1 099 OK\r\n\r\n");
    REFUSED("SSH-2.0-OpenSSH_9.2\r\n\r\n");
}

static void test_hostile_chunks(void **state)
{
#define TE "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    /* chunk sizes: prefix, sign, whitespace, no digits, overflow, too many digits */
    REFUSED(TE "0x30\r\n0\r\n\r\n");
    REFUSED(TE "+5\r\nhello\r\n0\r\n\r\n");
    REFUSED(TE "-5\r\nhello\r\n0\r\n\r\n");
    REFUSED(TE " 5\r\nhello\r\n0\r\n\r\n");
    REFUSED(TE "5 \r\nhello\r\n0\r\n\r\n");
    REFUSED(TE "5 5\r\nhello\r\n0\r\n\r\n");
    REFUSED(TE "\r\nhello\r\n0\r\n\r\n");
    REFUSED(TE ";x\r\n0\r\n\r\n");
    REFUSED(TE "g\r\n0\r\n\r\n");
    REFUSED(TE "10000000000000000\r\n");
    REFUSED(TE "ffffffffffffffffff\r\n");
    REFUSED(TE "000000000000000000000000000000005\r\nhello\r\n0\r\n\r\n");
    /* line endings: bare LF, bare CR, missing CRLF after the data */
    REFUSED(TE "5\nhello\r\n0\r\n\r\n");
    REFUSED(TE "5\rhello\r\n0\r\n\r\n");
    REFUSED(TE "5\r\nhello\n0\r\n\r\n");
    REFUSED(TE "5\r\nhelloXX0\r\n\r\n");
    REFUSED(TE "5\r\nhello\r\n0\n\n");
    REFUSED(TE "5\r\nhello\r\n0\r\n\n");
    REFUSED(TE "5\r\nhello\r\n0\r\n\rX");
    /* extensions: CTL, NUL, too long */
    REFUSED(TE "5;a\x01\r\nhello\r\n0\r\n\r\n");
    REFUSED(TE "5;a\0b\r\nhello\r\n0\r\n\r\n");
    /* trailers: obs-fold, no colon, whitespace before the colon, bare LF, CTL */
    REFUSED(TE "0\r\nX-T: 1\r\n folded\r\n\r\n");
    REFUSED(TE "0\r\nNoColon\r\n\r\n");
    REFUSED(TE "0\r\nX-T : 1\r\n\r\n");
    REFUSED(TE "0\r\nX-T: 1\n\r\n");
    REFUSED(TE "0\r\nX-T: \x01\r\n\r\n");

    char *big = malloc(EST_H1_MAX_CHUNK_EXT + 256);
    int n = snprintf(big, 256, TE "5;");
    memset(big + n, 'a', EST_H1_MAX_CHUNK_EXT + 1);
    memcpy(big + n + EST_H1_MAX_CHUNK_EXT + 1, "\r\nhello\r\n0\r\n\r\n", 15);
    expect_refused(big, n + EST_H1_MAX_CHUNK_EXT + 1 + 15);
    free(big);
#undef TE
}

static void test_head_limits(void **state)
{
    /* a head that does not end within EST_H1_MAX_HEAD_SIZE is refused, not waited for */
    size_t len = EST_H1_MAX_HEAD_SIZE + 100;
    char *big = malloc(len);
    memcpy(big, "HTTP/1.1 200 OK\r\nX-Big: ", 24);
    memset(big + 24, 'a', len - 24);
    struct phr_header headers[EST_H1_MAX_HEADERS];
    est_h1_response_t resp;
    const char *err = NULL;
    assert_int_equal(est_h1_parse_response(big, len, 0, headers, EST_H1_MAX_HEADERS, &resp, &err), -1);
    assert_non_null(err);
    assert_int_equal(est_h1_parse_response(big, 1000, 0, headers, EST_H1_MAX_HEADERS, &resp, &err), -2);
    free(big);

    /* more fields than the array holds */
    char many[8192];
    size_t p = (size_t)snprintf(many, sizeof(many), "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i != EST_H1_MAX_HEADERS + 1; ++i)
        p += (size_t)snprintf(many + p, sizeof(many) - p, "X-%d: v\r\n", i);
    p += (size_t)snprintf(many + p, sizeof(many) - p, "\r\n");
    assert_int_equal(est_h1_parse_response(many, p, 0, headers, EST_H1_MAX_HEADERS, &resp, &err), -1);
}

static void test_scan_only(void **state)
{
    /* a check does not advance the decoder, and moves nothing */
    est_h1_response_t resp = {.status = 200, .body_mode = EST_H1_BODY_CHUNKED};
    est_h1_body_t b;
    est_h1_body_init(&b, &resp);
    char buf[] = "3\r\nabc\r\n0\r\n\r\n";
    size_t len = sizeof(buf) - 1, decoded, used;
    const char *err = NULL;
    assert_int_equal(est_h1_body_read(&b, buf, len, 1, &decoded, &used, &err), EST_H1_BODY_DONE);
    assert_memory_equal(buf, "3\r\nabc", 6);
    assert_int_equal(est_h1_body_read(&b, buf, len, 0, &decoded, &used, &err), EST_H1_BODY_DONE);
    assert_int_equal(decoded, 3);
    assert_int_equal(used, len);
    assert_memory_equal(buf, "abc", 3);
    assert_true(est_h1_body_eof_ok(&b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_head), cmocka_unit_test(test_request_head_streamed),    cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_chunked),         cmocka_unit_test(test_close_delimited),
        cmocka_unit_test(test_no_body),         cmocka_unit_test(test_interim),
        cmocka_unit_test(test_keepalive),       cmocka_unit_test(test_hostile_framing),
        cmocka_unit_test(test_hostile_fields),  cmocka_unit_test(test_hostile_chunks),
        cmocka_unit_test(test_head_limits),     cmocka_unit_test(test_scan_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
