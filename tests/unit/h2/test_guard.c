/*
 * Unit tests: the HTTP/2 frame guard (h2/guard.c). A small simulator plays libh2o's part: it
 * consumes the preface and whole frames of what the guard releases, as h2o's parse_input does,
 * so the guard's offsets are exercised the way attach.c drives them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/metrics.h"
#include "h2/guard.h"

#define PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

/* ---- the simulated connection ---- */

typedef struct sim {
    est_h2_guard_t g;
    uint8_t in[256 * 1024]; /* what libh2o has not consumed (sock->input) */
    size_t len;
    int preface_done;
    size_t last_release;
    uint64_t now;
    est_h2_refusal_t r;
    size_t frames_to_h2o; /* whole frames libh2o consumed */
} sim_t;

static sim_t *sim_new(const est_h2_limits_t *lim)
{
    sim_t *s = calloc(1, sizeof(*s));
    est_h2_limits_t def;
    est_h2_limits_default(&def);
    est_h2_guard_init(&s->g, lim != NULL ? lim : &def, 0);
    return s;
}

/* appends bytes as a read would; returns the guard's verdict (0 or -1) */
static int sim_read(sim_t *s, const void *data, size_t n)
{
    assert_true(s->len + n <= sizeof(s->in));
    memcpy(s->in + s->len, data, n);
    s->len += n;
    size_t rel;
    if (est_h2_guard_feed(&s->g, s->in, s->len, s->now, &rel, &s->r) != 0)
        return -1;
    assert_true(rel <= s->len);
    s->last_release = rel;
    size_t c = 0;
    if (!s->preface_done) {
        if (rel < 24)
            return 0;
        c = 24;
        s->preface_done = 1;
    }
    while (rel - c >= 9) {
        size_t flen = ((size_t)s->in[c] << 16) | ((size_t)s->in[c + 1] << 8) | s->in[c + 2];
        if (rel - c < 9 + flen)
            break;
        c += 9 + flen;
        ++s->frames_to_h2o;
    }
    memmove(s->in, s->in + c, s->len - c);
    s->len -= c;
    est_h2_guard_consumed(&s->g, c);
    return 0;
}

/* the same, one byte per read */
static int sim_read_slowly(sim_t *s, const uint8_t *data, size_t n)
{
    for (size_t i = 0; i != n; ++i)
        if (sim_read(s, data + i, 1) != 0)
            return -1;
    return 0;
}

static size_t frame(uint8_t *out, uint8_t type, uint8_t flags, uint32_t sid, const void *payload, size_t len)
{
    out[0] = (uint8_t)(len >> 16);
    out[1] = (uint8_t)(len >> 8);
    out[2] = (uint8_t)len;
    out[3] = type;
    out[4] = flags;
    out[5] = (uint8_t)(sid >> 24);
    out[6] = (uint8_t)(sid >> 16);
    out[7] = (uint8_t)(sid >> 8);
    out[8] = (uint8_t)sid;
    if (len != 0)
        memcpy(out + 9, payload, len);
    return 9 + len;
}

static int sim_frame(sim_t *s, uint8_t type, uint8_t flags, uint32_t sid, const void *payload, size_t len)
{
    uint8_t buf[9 + 20000];
    return sim_read(s, buf, frame(buf, type, flags, sid, payload, len));
}

/* a GET request block: :method GET, :scheme http, :path /, :authority "a" (not indexed) */
static const uint8_t GET_BLOCK[] = {0x82, 0x86, 0x84, 0x01, 0x01, 'a'};

static sim_t *sim_started(const est_h2_limits_t *lim)
{
    sim_t *s = sim_new(lim);
    assert_int_equal(sim_read(s, PREFACE, 24), 0);
    assert_int_equal(sim_frame(s, 0x4, 0, 0, NULL, 0), 0); /* SETTINGS */
    return s;
}

/* ---- tests ---- */

static void test_huffman_lengths(void **state)
{
    /* RFC 7541 C.4.1 .. C.4.3 */
    static const uint8_t www[] = {0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff};
    static const uint8_t nocache[] = {0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf};
    static const uint8_t ckey[] = {0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f};
    static const uint8_t cval[] = {0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf};
    assert_int_equal(est_h2_huffman_decoded_len(www, sizeof(www)), 15);
    assert_int_equal(est_h2_huffman_decoded_len(nocache, sizeof(nocache)), 8);
    assert_int_equal(est_h2_huffman_decoded_len(ckey, sizeof(ckey)), 10);
    assert_int_equal(est_h2_huffman_decoded_len(cval, sizeof(cval)), 12);
    assert_int_equal(est_h2_huffman_decoded_len(NULL, 0), 0);
    /* '0' is 00000 (5 bits): 8 of them in 5 bytes */
    static const uint8_t zeros[5] = {0};
    assert_int_equal(est_h2_huffman_decoded_len(zeros, 5), 8);
    /* padding of 8 bits, padding not all ones, and EOS (30 ones) inside */
    static const uint8_t pad8[] = {0xff};
    static const uint8_t pad0[] = {0x00};
    static const uint8_t eos[] = {0xff, 0xff, 0xff, 0xfc};
    assert_int_equal(est_h2_huffman_decoded_len(pad8, 1), -1);
    assert_int_equal(est_h2_huffman_decoded_len(pad0, 1), -1); /* one '0' then 000 padding */
    assert_int_equal(est_h2_huffman_decoded_len(eos, 4), -1);
}

static void test_plain_request_passes(void **state)
{
    sim_t *s = sim_started(NULL);
    assert_int_equal(sim_frame(s, 0x1, 0x5, 1, GET_BLOCK, sizeof(GET_BLOCK)), 0);
    assert_int_equal(s->len, 0); /* everything went to "libh2o" */
    assert_int_equal(s->frames_to_h2o, 2);
    assert_int_equal(est_h2_guard_last_stream(&s->g), 1);
    free(s);
}

static void test_byte_by_byte(void **state)
{
    sim_t *s = sim_new(NULL);
    uint8_t buf[4096];
    size_t n = 0;
    memcpy(buf, PREFACE, 24);
    n = 24;
    n += frame(buf + n, 0x4, 0, 0, NULL, 0);
    /* HEADERS split by a CONTINUATION, then a body */
    n += frame(buf + n, 0x1, 0x0, 1, GET_BLOCK, 5); /* split inside the literal */
    n += frame(buf + n, 0x9, 0x4, 1, GET_BLOCK + 5, sizeof(GET_BLOCK) - 5);
    n += frame(buf + n, 0x0, 0x1, 1, "hello", 5);
    n += frame(buf + n, 0x6, 0, 0, "12345678", 8);
    assert_int_equal(sim_read_slowly(s, buf, n), 0);
    assert_int_equal(s->len, 0);
    assert_int_equal(s->frames_to_h2o, 5);
    assert_int_equal(s->g.num_bodies, 0);
    free(s);
}

static void test_block_is_held_until_complete(void **state)
{
    sim_t *s = sim_started(NULL);
    uint8_t buf[256];
    size_t n = frame(buf, 0x6, 0, 0, "12345678", 8); /* a PING before the block goes through */
    size_t hdr = n;
    n += frame(buf + n, 0x1, 0x1, 1, GET_BLOCK, 2);
    assert_int_equal(sim_read(s, buf, n), 0);
    assert_int_equal(s->len, n - hdr); /* the HEADERS frame is held */
    assert_int_equal(s->last_release, hdr);
    assert_true(est_h2_guard_in_block(&s->g));
    assert_int_equal(sim_frame(s, 0x9, 0x0, 1, GET_BLOCK + 2, 2), 0);
    assert_int_equal(s->last_release, 0);
    assert_int_equal(sim_frame(s, 0x9, 0x4, 1, GET_BLOCK + 4, 2), 0);
    assert_int_equal(s->len, 0); /* released whole */
    assert_false(est_h2_guard_in_block(&s->g));
    assert_int_equal(est_h2_guard_last_stream(&s->g), 1);
    free(s);
}

static void test_other_frame_inside_block(void **state)
{
    sim_t *s = sim_started(NULL);
    assert_int_equal(sim_frame(s, 0x1, 0x0, 1, GET_BLOCK, 2), 0);
    assert_int_equal(sim_frame(s, 0x6, 0, 0, "12345678", 8), -1);
    assert_int_equal(s->r.reason, EST_CLOSE_H2_PROTOCOL);
    assert_int_equal(s->r.error_code, EST_H2_PROTOCOL_ERROR);
    free(s);
    s = sim_started(NULL);
    assert_int_equal(sim_frame(s, 0x9, 0x4, 1, GET_BLOCK, 2), -1); /* CONTINUATION without HEADERS */
    assert_int_equal(s->r.reason, EST_CLOSE_H2_PROTOCOL);
    free(s);
}

/* a literal with incremental indexing of a new name "x" and a raw value of `vlen` bytes */
static size_t literal_indexed(uint8_t *out, size_t vlen)
{
    size_t n = 0;
    out[n++] = 0x40;
    out[n++] = 0x01;
    out[n++] = 'x';
    /* value length, 7-bit prefix integer (RFC 7541 §5.1) */
    if (vlen < 127) {
        out[n++] = (uint8_t)vlen;
    } else {
        out[n++] = 0x7f;
        size_t v = vlen - 127;
        while (v >= 128) {
            out[n++] = (uint8_t)(0x80 | (v & 0x7f));
            v >>= 7;
        }
        out[n++] = (uint8_t)v;
    }
    memset(out + n, 'v', vlen);
    return n + vlen;
}

static void test_hpack_bomb(void **state)
{
    sim_t *s = sim_started(NULL);
    uint8_t block[8192];
    size_t n = 0;
    memcpy(block, GET_BLOCK, sizeof(GET_BLOCK));
    n = sizeof(GET_BLOCK);
    n += literal_indexed(block + n, 4000); /* a 4 KB entry: index 62 */
    assert_int_equal(sim_frame(s, 0x1, 0x5, 1, block, n), 0);
    /* a 30-byte block referencing it 24 times: 96 KB decoded */
    memcpy(block, GET_BLOCK, sizeof(GET_BLOCK));
    n = sizeof(GET_BLOCK);
    memset(block + n, 0xbe, 24);
    n += 24;
    size_t before = s->frames_to_h2o;
    assert_int_equal(sim_frame(s, 0x1, 0x5, 3, block, n), -1);
    assert_int_equal(s->r.reason, EST_CLOSE_H2_HEADER_BLOCK);
    assert_int_equal(s->r.error_code, EST_H2_ENHANCE_YOUR_CALM);
    assert_int_equal(s->frames_to_h2o, before); /* nothing of it reached libh2o */
    free(s);
}

static void test_too_many_fields(void **state)
{
    sim_t *s = sim_started(NULL);
    uint8_t block[200];
    memset(block, 0x82, 101); /* 100 fields pass, 101 do not */
    assert_int_equal(sim_frame(s, 0x1, 0x5, 1, block, 100), 0);
    assert_int_equal(sim_frame(s, 0x1, 0x5, 3, block, 101), -1);
    assert_int_equal(s->r.reason, EST_CLOSE_H2_HEADER_BLOCK);
    free(s);
}

static void test_table_size_update(void **state)
{
    sim_t *s = sim_started(NULL);
    static const uint8_t up_ok[] = {0x3f, 0xe1, 0x1f, 0x82}; /* size 4096, then a field */
    assert_int_equal(sim_frame(s, 0x1, 0x5, 1, up_ok, sizeof(up_ok)), 0);
    static const uint8_t up_big[] = {0x3f, 0xe2, 0x1f, 0x82}; /* 4097 */
    assert_int_equal(sim_frame(s, 0x1, 0x5, 3, up_big, sizeof(up_big)), -1);
    assert_int_equal(s->r.reason, EST_CLOSE_H2_COMPRESSION);
    assert_int_equal(s->r.error_code, EST_H2_COMPRESSION_ERROR);
    free(s);

    s = sim_started(NULL);
    static const uint8_t up_late[] = {0x82, 0x20}; /* an update after a field (RFC 7541 §4.2) */
    assert_int_equal(sim_frame(s, 0x1, 0x5, 1, up_late, sizeof(up_late)), -1);
    assert_int_equal(s->r.error_code, EST_H2_COMPRESSION_ERROR);
    free(s);
}

static void test_table_eviction_in_step(void **state)
{
    sim_t *s = sim_started(NULL);
    uint8_t block[8192];
    size_t n = literal_indexed(block, 2000); /* 2033 bytes */
    n += literal_indexed(block + n, 2000);   /* 4066: both fit */
    n += literal_indexed(block + n, 100);    /* evicts the oldest */
    assert_int_equal(sim_frame(s, 0x1, 0x5, 1, block, n), 0);
    assert_int_equal(s->g.ring_count, 2);
    static const uint8_t ref63[] = {0xbf}; /* index 63: the remaining 2000-byte entry */
    assert_int_equal(sim_frame(s, 0x1, 0x5, 3, ref63, 1), 0);
    static const uint8_t ref64[] = {0xc0}; /* index 64: evicted */
    assert_int_equal(sim_frame(s, 0x1, 0x5, 5, ref64, 1), -1);
    assert_int_equal(s->r.reason, EST_CLOSE_H2_COMPRESSION);
    free(s);

    /* an update to 0 empties the table; an entry larger than the table is not added */
    s = sim_started(NULL);
    n = literal_indexed(block, 10);
    assert_int_equal(sim_frame(s, 0x1, 0x5, 1, block, n), 0);
    static const uint8_t empty_then_ref[] = {0x20, 0xbe};
    assert_int_equal(sim_frame(s, 0x1, 0x5, 3, empty_then_ref, 2), -1);
    free(s);
    s = sim_started(NULL);
    n = literal_indexed(block, 5000);
    assert_int_equal(sim_frame(s, 0x1, 0x5, 1, block, n), 0);
    assert_int_equal(s->g.ring_count, 0);
    free(s);
}

static void test_wire_limit_and_continuation_hold(void **state)
{
    est_h2_limits_t lim;
    est_h2_limits_default(&lim);
    sim_t *s = sim_started(&lim);
    uint8_t chunk[16000];
    memset(chunk, 0x82, sizeof(chunk));
    assert_int_equal(sim_frame(s, 0x1, 0x0, 1, chunk, sizeof(chunk)), 0);
    assert_int_equal(sim_frame(s, 0x9, 0x0, 1, chunk, sizeof(chunk)), 0);
    assert_int_equal(sim_frame(s, 0x9, 0x0, 1, chunk, sizeof(chunk)), 0);
    assert_int_equal(sim_frame(s, 0x9, 0x0, 1, chunk, sizeof(chunk)), 0);
    assert_int_equal(sim_frame(s, 0x9, 0x0, 1, chunk, sizeof(chunk)), -1); /* 80 KB */
    assert_int_equal(s->r.reason, EST_CLOSE_H2_HEADER_BLOCK);
    assert_int_equal(s->frames_to_h2o, 1); /* the SETTINGS only */
    free(s);

    lim.max_control = 50;
    s = sim_started(&lim);
    assert_int_equal(sim_frame(s, 0x1, 0x0, 1, GET_BLOCK, 2), 0);
    int i, ret = 0;
    for (i = 0; i != 100 && (ret = sim_frame(s, 0x9, 0x0, 1, NULL, 0)) == 0; ++i)
        ;
    assert_int_equal(ret, -1);
    assert_int_equal(i, 49); /* the 50th empty CONTINUATION, the SETTINGS being the first control frame */
    assert_int_equal(s->r.reason, EST_CLOSE_H2_FLOOD);
    free(s);
}

static void test_header_timeout(void **state)
{
    est_h2_limits_t lim;
    est_h2_limits_default(&lim);
    lim.header_timeout_ms = 10000;
    sim_t *s = sim_started(&lim);
    s->now = 1000;
    assert_int_equal(sim_frame(s, 0x1, 0x0, 1, GET_BLOCK, 2), 0);
    assert_int_equal(est_h2_guard_tick(&s->g, 10999, 0, &s->r), 0);
    s->now = 6000;
    assert_int_equal(sim_frame(s, 0x9, 0x0, 1, NULL, 0), 0); /* frames do not extend it */
    assert_int_equal(est_h2_guard_tick(&s->g, 11000, 0, &s->r), -1);
    assert_int_equal(s->r.reason, EST_CLOSE_HEADER_TIMEOUT);
    free(s);

    /* a HEADERS frame arriving a byte at a time starts it too */
    s = sim_started(&lim);
    uint8_t buf[64];
    size_t n = frame(buf, 0x1, 0x5, 1, GET_BLOCK, sizeof(GET_BLOCK));
    assert_int_equal(sim_read(s, buf, 12), 0);
    assert_true(est_h2_guard_in_block(&s->g));
    assert_int_equal(est_h2_guard_tick(&s->g, 10000, 0, &s->r), -1);
    free(s);
    s = sim_started(&lim);
    assert_int_equal(sim_read(s, buf, n), 0);
    assert_int_equal(est_h2_guard_tick(&s->g, 100000, 1, &s->r), 0); /* complete: no timeout */
    free(s);
}

static void test_idle_timeout(void **state)
{
    est_h2_limits_t lim;
    est_h2_limits_default(&lim);
    lim.idle_timeout_ms = 60000;
    sim_t *s = sim_started(&lim);
    s->now = 30000;
    assert_int_equal(sim_frame(s, 0x1, 0x5, 1, GET_BLOCK, sizeof(GET_BLOCK)), 0);
    assert_int_equal(est_h2_guard_tick(&s->g, 80000, 1, &s->r), 0); /* a request open */
    s->now = 100000;
    assert_int_equal(sim_frame(s, 0x6, 0, 0, "12345678", 8), 0); /* a PING carries no request */
    assert_int_equal(est_h2_guard_tick(&s->g, 139999, 0, &s->r), 0);
    assert_int_equal(est_h2_guard_tick(&s->g, 140000, 0, &s->r), -1);
    assert_int_equal(s->r.reason, EST_CLOSE_IDLE_TIMEOUT);
    assert_int_equal(s->r.error_code, EST_H2_NO_ERROR);
    free(s);
}

static void test_rapid_reset(void **state)
{
    sim_t *s = sim_started(NULL);
    static const uint8_t cancel[4] = {0, 0, 0, 8};
    int ret = 0;
    uint32_t sid;
    for (sid = 1; sid < 1000; sid += 2) {
        if ((ret = sim_frame(s, 0x1, 0x5, sid, GET_BLOCK, sizeof(GET_BLOCK))) != 0)
            break;
        if ((ret = sim_frame(s, 0x3, 0, sid, cancel, 4)) != 0)
            break;
    }
    assert_int_equal(ret, -1);
    assert_int_equal(sid, 201); /* the 101st reset */
    assert_int_equal(s->r.reason, EST_CLOSE_H2_RAPID_RESET);
    assert_int_equal(s->r.error_code, EST_H2_ENHANCE_YOUR_CALM);
    free(s);

    /* 100 per window, window after window, is allowed; resets of never-opened streams are libh2o's */
    s = sim_started(NULL);
    sid = 1;
    for (int w = 0; w != 3; ++w) {
        s->now = (uint64_t)w * 10000;
        for (int i = 0; i != 100; ++i, sid += 2) {
            assert_int_equal(sim_frame(s, 0x1, 0x5, sid, GET_BLOCK, sizeof(GET_BLOCK)), 0);
            assert_int_equal(sim_frame(s, 0x3, 0, sid, cancel, 4), 0);
        }
    }
    for (int i = 0; i != 200; ++i)
        assert_int_equal(sim_frame(s, 0x3, 0, 100001, cancel, 4), 0);
    free(s);
}

static void test_control_flood(void **state)
{
    sim_t *s = sim_started(NULL);
    int i, ret = 0;
    for (i = 0; i != 2000 && (ret = sim_frame(s, 0x6, 0, 0, "12345678", 8)) == 0; ++i)
        ;
    assert_int_equal(ret, -1);
    assert_int_equal(i, 999); /* the SETTINGS counted too: the 1001st control frame */
    assert_int_equal(s->r.reason, EST_CLOSE_H2_FLOOD);
    free(s);

    /* WINDOW_UPDATEs count when they move the window by less than 4 KiB */
    s = sim_started(NULL);
    static const uint8_t small_inc[4] = {0, 0, 0x0f, 0xff}, big_inc[4] = {0, 0, 0x10, 0x00};
    for (i = 0; i != 5000; ++i)
        assert_int_equal(sim_frame(s, 0x8, 0, 0, big_inc, 4), 0);
    for (i = 0; i != 2000 && (ret = sim_frame(s, 0x8, 0, 0, small_inc, 4)) == 0; ++i)
        ;
    assert_int_equal(ret, -1);
    assert_int_equal(i, 999);
    free(s);

    /* empty DATA without END_STREAM counts; with END_STREAM it does not */
    est_h2_limits_t lim;
    est_h2_limits_default(&lim);
    lim.max_control = 10;
    s = sim_started(&lim);
    assert_int_equal(sim_frame(s, 0x1, 0x4, 1, GET_BLOCK, sizeof(GET_BLOCK)), 0);
    for (i = 0; i != 9; ++i)
        assert_int_equal(sim_frame(s, 0x0, 0x0, 1, NULL, 0), 0);
    assert_int_equal(sim_frame(s, 0x0, 0x1, 1, NULL, 0), 0);
    assert_int_equal(sim_frame(s, 0x0, 0x0, 1, NULL, 0), -1);
    free(s);
}

static void test_body_budget(void **state)
{
    est_h2_limits_t lim;
    est_h2_limits_default(&lim);
    lim.max_body = 1000;
    sim_t *s = sim_started(&lim);
    uint8_t body[600];
    memset(body, 'b', sizeof(body));
    assert_int_equal(sim_frame(s, 0x1, 0x4, 1, GET_BLOCK, sizeof(GET_BLOCK)), 0);
    assert_int_equal(sim_frame(s, 0x1, 0x4, 3, GET_BLOCK, sizeof(GET_BLOCK)), 0);
    assert_int_equal(sim_frame(s, 0x0, 0x0, 1, body, 600), 0);
    assert_int_equal(sim_frame(s, 0x0, 0x1, 1, body, 300), 0); /* 900, then stream 1 is complete */
    assert_int_equal(s->g.body_total, 0);
    assert_int_equal(sim_frame(s, 0x0, 0x0, 3, body, 600), 0);
    static const uint8_t cancel[4] = {0, 0, 0, 8};
    assert_int_equal(sim_frame(s, 0x3, 0, 3, cancel, 4), 0); /* a reset frees its share */
    assert_int_equal(sim_frame(s, 0x1, 0x4, 5, GET_BLOCK, sizeof(GET_BLOCK)), 0);
    assert_int_equal(sim_frame(s, 0x1, 0x4, 7, GET_BLOCK, sizeof(GET_BLOCK)), 0);
    assert_int_equal(sim_frame(s, 0x0, 0x0, 5, body, 600), 0);
    assert_int_equal(sim_frame(s, 0x0, 0x0, 7, body, 600), -1);
    assert_int_equal(s->r.reason, EST_CLOSE_BODY_TOO_LARGE);
    free(s);

    /* one request over the limit alone is refused by libh2o and the handler, not here */
    s = sim_started(&lim);
    assert_int_equal(sim_frame(s, 0x1, 0x4, 1, GET_BLOCK, sizeof(GET_BLOCK)), 0);
    assert_int_equal(sim_frame(s, 0x0, 0x0, 1, body, 600), 0);
    assert_int_equal(sim_frame(s, 0x0, 0x0, 1, body, 600), 0);
    assert_int_equal(s->g.body_total, 0);
    free(s);

    /* a stream libh2o refuses (its body passes max_request_entity_size, below the budget)
     * leaves the table at once: it neither lingers nor eats the connection's budget */
    lim.max_stream_body = 500;
    s = sim_started(&lim);
    assert_int_equal(sim_frame(s, 0x1, 0x4, 1, GET_BLOCK, sizeof(GET_BLOCK)), 0);
    assert_int_equal(sim_frame(s, 0x0, 0x0, 1, body, 500), 0);
    assert_int_equal(s->g.body_total, 500);
    assert_int_equal(sim_frame(s, 0x0, 0x0, 1, body, 1), 0);
    assert_int_equal(s->g.body_total, 0);
    assert_false(est_h2_guard_has_bodies(&s->g));
    free(s);
}

static void test_bad_frames(void **state)
{
    sim_t *s = sim_new(NULL);
    assert_int_equal(sim_read(s, "GET / HTTP/1.1\r\n", 16), -1);
    assert_int_equal(s->r.reason, EST_CLOSE_H2_PROTOCOL);
    free(s);
    s = sim_started(NULL);
    uint8_t big[9] = {0x00, 0x40, 0x01, 0x0, 0, 0, 0, 0, 1}; /* 16385 bytes */
    assert_int_equal(sim_read(s, big, 9), -1);
    assert_int_equal(s->r.error_code, EST_H2_FRAME_SIZE_ERROR);
    free(s);
    s = sim_started(NULL);
    assert_int_equal(sim_frame(s, 0x1, 0x5, 2, GET_BLOCK, sizeof(GET_BLOCK)), -1); /* even stream */
    free(s);
    s = sim_started(NULL);
    static const uint8_t padded[] = {10, 0x82}; /* pad length over the payload */
    assert_int_equal(sim_frame(s, 0x1, 0xd, 1, padded, sizeof(padded)), -1);
    free(s);
    s = sim_started(NULL);
    static const uint8_t bad_index[] = {0x80}; /* index 0 */
    assert_int_equal(sim_frame(s, 0x1, 0x5, 1, bad_index, 1), -1);
    assert_int_equal(s->r.reason, EST_CLOSE_H2_COMPRESSION);
    free(s);
    s = sim_started(NULL);
    static const uint8_t trunc[] = {0x40, 0x05, 'a'}; /* name longer than the block */
    assert_int_equal(sim_frame(s, 0x1, 0x5, 1, trunc, sizeof(trunc)), -1);
    free(s);
    s = sim_started(NULL);
    /* a Huffman value with EOS inside, then more bytes of it (the counter must stop, not shift on) */
    static const uint8_t eos_then_more[] = {0x82, 0x01, 0x90, 0xff, 0xff, 0xff, 0xfc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(sim_frame(s, 0x1, 0x5, 1, eos_then_more, sizeof(eos_then_more)), -1);
    assert_int_equal(s->r.reason, EST_CLOSE_H2_COMPRESSION);
    free(s);
    s = sim_started(NULL);
    static const uint8_t longint[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0x01}; /* 5 continuation octets */
    assert_int_equal(sim_frame(s, 0x1, 0x5, 1, longint, sizeof(longint)), -1);
    free(s);
}

/* a Huffman value split across HEADERS and CONTINUATION is counted decoded: 10 + 15 bytes */
static void test_huffman_across_fragments(void **state)
{
    static const uint8_t block[] = {0x01, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff};
    est_h2_limits_t lim;
    est_h2_limits_default(&lim);
    for (uint32_t max = 24; max != 26; ++max) {
        lim.max_decoded = max;
        sim_t *s = sim_started(&lim);
        assert_int_equal(sim_frame(s, 0x1, 0x1, 1, block, 7), 0);
        assert_int_equal(sim_frame(s, 0x9, 0x4, 1, block + 7, sizeof(block) - 7), max == 24 ? -1 : 0);
        free(s);
    }
}

static void test_goaway_encoding(void **state)
{
    uint8_t out[64];
    size_t n = est_h2_encode_goaway(out, sizeof(out), 7, EST_H2_ENHANCE_YOUR_CALM, "x");
    static const uint8_t want[] = {0, 0, 9, 7, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0x0b, 'x'};
    assert_int_equal(n, sizeof(want));
    assert_memory_equal(out, want, n);
    assert_int_equal(est_h2_encode_goaway(out, 10, 7, 0, "x"), 0);
}

/* client_body_timeout: a body with no DATA for the timeout is reported once and forgotten */
static void test_body_timeout(void **state)
{
    (void)state;
    est_h2_limits_t lim;
    est_h2_limits_default(&lim);
    lim.max_body = 100000;
    lim.body_timeout_ms = 1000;
    sim_t *s = sim_started(&lim);
    uint8_t body[10] = {0};
    uint32_t ids[EST_H2_MAX_BODY_STREAMS];
    s->now = 100;
    assert_int_equal(sim_frame(s, 0x1, 0x4, 1, GET_BLOCK, sizeof(GET_BLOCK)), 0); /* body follows */
    assert_int_equal(sim_frame(s, 0x1, 0x4, 3, GET_BLOCK, sizeof(GET_BLOCK)), 0);
    assert_int_equal(sim_frame(s, 0x1, 0x5, 5, GET_BLOCK, sizeof(GET_BLOCK)), 0); /* no body */
    assert_true(est_h2_guard_has_bodies(&s->g));
    s->now = 900;
    assert_int_equal(sim_frame(s, 0x0, 0x0, 3, body, 10), 0); /* stream 3 moves, stream 1 does not */
    assert_int_equal(est_h2_guard_stalled(&s->g, 1099, ids, EST_H2_MAX_BODY_STREAMS), 0);
    assert_int_equal(est_h2_guard_stalled(&s->g, 1100, ids, EST_H2_MAX_BODY_STREAMS), 1);
    assert_int_equal(ids[0], 1);
    assert_int_equal(est_h2_guard_stalled(&s->g, 1100, ids, EST_H2_MAX_BODY_STREAMS), 0); /* once */
    assert_int_equal(s->g.body_total, 10);
    assert_int_equal(est_h2_guard_stalled(&s->g, 1900, ids, EST_H2_MAX_BODY_STREAMS), 1);
    assert_int_equal(ids[0], 3);
    assert_int_equal(s->g.body_total, 0);
    assert_false(est_h2_guard_has_bodies(&s->g));
    /* a stream whose header block is still held is the header timeout's, not this one's */
    assert_int_equal(sim_frame(s, 0x1, 0x0, 7, GET_BLOCK, sizeof(GET_BLOCK)), 0);
    assert_int_equal(est_h2_guard_stalled(&s->g, 99999, ids, EST_H2_MAX_BODY_STREAMS), 0);
    /* cap: at most `cap` reported per call, the rest on the next */
    free(s);
    s = sim_started(&lim);
    for (uint32_t sid = 1; sid <= 9; sid += 2)
        assert_int_equal(sim_frame(s, 0x1, 0x4, sid, GET_BLOCK, sizeof(GET_BLOCK)), 0);
    assert_int_equal(est_h2_guard_stalled(&s->g, 5000, ids, 2), 2);
    assert_int_equal(est_h2_guard_stalled(&s->g, 5000, ids, EST_H2_MAX_BODY_STREAMS), 3);
    /* 0: no body timeout */
    free(s);
    lim.body_timeout_ms = 0;
    s = sim_started(&lim);
    assert_int_equal(sim_frame(s, 0x1, 0x4, 1, GET_BLOCK, sizeof(GET_BLOCK)), 0);
    assert_int_equal(est_h2_guard_stalled(&s->g, 1u << 30, ids, EST_H2_MAX_BODY_STREAMS), 0);
    free(s);
}

static void test_rst_and_ping_encoding(void **state)
{
    (void)state;
    uint8_t out[32];
    static const uint8_t rst[] = {0, 0, 4, 3, 0, 0, 0, 0, 5, 0, 0, 0, 8};
    assert_int_equal(est_h2_encode_rst_stream(out, sizeof(out), 5, EST_H2_CANCEL), sizeof(rst));
    assert_memory_equal(out, rst, sizeof(rst));
    assert_int_equal(est_h2_encode_rst_stream(out, 12, 5, 8), 0);
    static const uint8_t ping[] = {0, 0, 8, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(est_h2_encode_ping(out, sizeof(out)), sizeof(ping));
    assert_memory_equal(out, ping, sizeof(ping));
    assert_int_equal(est_h2_encode_ping(out, 16), 0);
}

/* RFC 9113 §8.1.1: content-length other than 0 on a request whose HEADERS ends the stream */
static int cl_request(const uint8_t *fields, size_t n, uint8_t flags, uint32_t sid, sim_t *s)
{
    uint8_t block[64];
    memcpy(block, GET_BLOCK, sizeof(GET_BLOCK));
    memcpy(block + sizeof(GET_BLOCK), fields, n);
    return sim_frame(s, 0x1, flags, sid, block, sizeof(GET_BLOCK) + n);
}

static void test_content_length_without_body(void **state)
{
    (void)state;
    static const uint8_t raw3[] = {0x0f, 0x0d, 0x01, '3'};        /* name index 28, "3" */
    static const uint8_t raw0[] = {0x0f, 0x0d, 0x02, '0', '0'};   /* "00" */
    static const uint8_t huff0[] = {0x0f, 0x0d, 0x81, 0x07};      /* Huffman "0" */
    static const uint8_t huff1[] = {0x0f, 0x0d, 0x81, 0x0f};      /* Huffman "1" (00001 + 111) */
    static const uint8_t named[] = {0x00, 0x0e, 'c', 'o', 'n', 't', 'e', 'n', 't', '-', 'l', 'e', 'n', 'g', 't', 'h', 0x01, '7'};
    /* the name Huffman-coded (RFC 7541 Appendix B), value "7" */
    static const uint8_t huffname[] = {0x00, 0x8a, 0x21, 0xea, 0x49, 0x6a, 0x4a, 0xd4, 0x16, 0xa9, 0x93, 0x3f, 0x01, '7'};
    /* the same name Huffman-coded with value "0": allowed */
    static const uint8_t huffname0[] = {0x00, 0x8a, 0x21, 0xea, 0x49, 0x6a, 0x4a, 0xd4, 0x16, 0xa9, 0x93, 0x3f, 0x01, '0'};
    static const uint8_t indexed[] = {0x5c, 0x01, '5'};           /* incremental indexing: entry 62 */
    static const uint8_t ref62[] = {0xbe};
    const struct {
        const uint8_t *f;
        size_t n;
        int refused;
    } cases[] = {{raw3, sizeof(raw3), 1}, {raw0, sizeof(raw0), 0}, {huff0, sizeof(huff0), 0},
                 {huff1, sizeof(huff1), 1}, {named, sizeof(named), 1}, {huffname, sizeof(huffname), 1},
                 {huffname0, sizeof(huffname0), 0}};
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        sim_t *s = sim_started(NULL);
        assert_int_equal(cl_request(cases[i].f, cases[i].n, 0x5, 1, s), cases[i].refused ? -1 : 0);
        if (cases[i].refused) {
            assert_int_equal(s->r.reason, EST_CLOSE_H2_PROTOCOL);
            assert_int_equal(s->r.error_code, EST_H2_PROTOCOL_ERROR);
        }
        free(s);
        s = sim_started(NULL); /* with a body to follow, libh2o compares the length itself */
        assert_int_equal(cl_request(cases[i].f, cases[i].n, 0x4, 1, s), 0);
        free(s);
    }
    /* through the dynamic table: indexed with a body, then referenced by a bodyless request */
    sim_t *s = sim_started(NULL);
    assert_int_equal(cl_request(indexed, sizeof(indexed), 0x4, 1, s), 0);
    assert_int_equal(cl_request(ref62, sizeof(ref62), 0x5, 3, s), -1);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_huffman_lengths),
        cmocka_unit_test(test_plain_request_passes),
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_block_is_held_until_complete),
        cmocka_unit_test(test_other_frame_inside_block),
        cmocka_unit_test(test_hpack_bomb),
        cmocka_unit_test(test_too_many_fields),
        cmocka_unit_test(test_table_size_update),
        cmocka_unit_test(test_table_eviction_in_step),
        cmocka_unit_test(test_wire_limit_and_continuation_hold),
        cmocka_unit_test(test_header_timeout),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_rapid_reset),
        cmocka_unit_test(test_control_flood),
        cmocka_unit_test(test_body_budget),
        cmocka_unit_test(test_bad_frames),
        cmocka_unit_test(test_huffman_across_fragments),
        cmocka_unit_test(test_goaway_encoding),
        cmocka_unit_test(test_body_timeout),
        cmocka_unit_test(test_rst_and_ping_encoding),
        cmocka_unit_test(test_content_length_without_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
