/*
 * estuary - the HTTP/2 frame guard (see guard.h and docs/http2.md).
 */
#include <string.h>
#include "admin/metrics.h"
#include "h2/guard.h"

#define FRAME_HEADER 9
/* a WINDOW_UPDATE moving the window by this much or more acknowledges data: not a control frame */
#define WINDOW_UPDATE_MIN 4096

enum {
    T_DATA = 0x0,
    T_HEADERS = 0x1,
    T_PRIORITY = 0x2,
    T_RST_STREAM = 0x3,
    T_SETTINGS = 0x4,
    T_PUSH_PROMISE = 0x5,
    T_PING = 0x6,
    T_GOAWAY = 0x7,
    T_WINDOW_UPDATE = 0x8,
    T_CONTINUATION = 0x9,
};

enum {
    F_END_STREAM = 0x1,
    F_END_HEADERS = 0x4,
    F_PADDED = 0x8,
    F_PRIORITY = 0x20,
};

static const char PREFACE[EST_H2_PREFACE_LEN] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* RFC 7541 Appendix A: name and value lengths of the static table, index 1..61 */
#define S(n, v) {sizeof(n) - 1, sizeof(v) - 1}
static const struct {
    uint8_t name_len, value_len;
} STATIC_TABLE[61] = {
    S(":authority", ""), S(":method", "GET"), S(":method", "POST"), S(":path", "/"), S(":path", "/index.html"),
    S(":scheme", "http"), S(":scheme", "https"), S(":status", "200"), S(":status", "204"), S(":status", "206"),
    S(":status", "304"), S(":status", "400"), S(":status", "404"), S(":status", "500"), S("accept-charset", ""),
    S("accept-encoding", "gzip, deflate"), S("accept-language", ""), S("accept-ranges", ""), S("accept", ""),
    S("access-control-allow-origin", ""), S("age", ""), S("allow", ""), S("authorization", ""), S("cache-control", ""),
    S("content-disposition", ""), S("content-encoding", ""), S("content-language", ""), S("content-length", ""),
    S("content-location", ""), S("content-range", ""), S("content-type", ""), S("cookie", ""), S("date", ""), S("etag", ""),
    S("expect", ""), S("expires", ""), S("from", ""), S("host", ""), S("if-match", ""), S("if-modified-since", ""),
    S("if-none-match", ""), S("if-range", ""), S("if-unmodified-since", ""), S("last-modified", ""), S("link", ""),
    S("location", ""), S("max-forwards", ""), S("proxy-authenticate", ""), S("proxy-authorization", ""), S("range", ""),
    S("referer", ""), S("refresh", ""), S("retry-after", ""), S("server", ""), S("set-cookie", ""),
    S("strict-transport-security", ""), S("transfer-encoding", ""), S("user-agent", ""), S("vary", ""), S("via", ""),
    S("www-authenticate", ""),
};
#undef S

/*
 * RFC 7541 Appendix B is a canonical Huffman code (codes of one length are consecutive
 * integers, lengths ascending with the code values), so a code of `n` bits is valid iff
 * HUFF_FIRST[n] <= code < HUFF_FIRST[n] + HUFF_COUNT[n]; the all-ones 30-bit code is EOS.
 * That is enough to count the symbols of a string exactly without producing them.
 */
static const uint32_t HUFF_FIRST[31] = {0,      0,       0,       0,       0,        0,        20,       92,
                                        248,    0,       1016,    2042,    4090,     8184,     16380,    32764,
                                        0,      0,       0,       524272,  1048550,  2097116,  4194258,  8388568,
                                        16777194, 33554412, 67108832, 134217694, 268435426, 0, 1073741820};
static const uint32_t HUFF_COUNT[31] = {0, 0, 0, 0, 0, 10, 26, 32, 6, 0, 5, 3, 2, 6, 2, 3,
                                        0, 0, 0, 3, 8, 13, 26, 29, 12, 4, 15, 19, 29, 0, 4};
#define HUFF_EOS 0x3fffffffu

/* the length of the code of 5 to 8 bits that the next 8 bits start with, 0 for a longer one
 * (derived from the two tables above: the prefixes below (HUFF_FIRST[n] + HUFF_COUNT[n]) << (8 - n)) */
static const uint8_t HUFF_LEN8[256] = {
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 8, 8, 8, 8, 8, 0, 0,
};

typedef struct huff_count {
    uint64_t acc; /* the last `n` bits read, not yet decoded, in the low bits */
    uint32_t n;
    uint64_t symbols;
    int bad;
} huff_count_t;

static int huff_is_code(uint32_t code, uint32_t len)
{
    return code - HUFF_FIRST[len] < HUFF_COUNT[len];
}

/* the length of the code (over 8 bits) at the top of the bits, 0 when more bits are needed or it is invalid */
static uint32_t huff_long_len(huff_count_t *h)
{
    for (uint32_t len = 9; len <= 30; ++len) {
        if (h->n < len)
            return 0;
        uint32_t code = (uint32_t)(h->acc >> (h->n - len)) & ((1u << len) - 1);
        if (huff_is_code(code, len)) {
            if (code == HUFF_EOS) /* RFC 7541 §5.2: EOS in a string is a decoding error */
                break;
            return len;
        }
    }
    h->bad = 1;
    return 0;
}

/* codes of 5 to 8 bits are told apart by the next 8 bits alone (HUFF_LEN8), longer ones by huff_long_len */
static inline void huff_feed(huff_count_t *h, uint8_t byte)
{
    if (h->bad)
        return; /* and `n` stays below 38: a code is waited for only while n < 30 */
    h->acc = (h->acc << 8) | byte;
    h->n += 8;
    while (h->n >= 8) {
        uint32_t len = HUFF_LEN8[(h->acc >> (h->n - 8)) & 0xff];
        if (len == 0)
            len = huff_long_len(h);
        if (len == 0)
            break;
        h->n -= len;
        ++h->symbols;
    }
    h->acc &= (1ull << h->n) - 1;
}

/* the last short codes, then RFC 7541 §5.2: padding is at most 7 bits, all ones (EOS's prefix) */
static int huff_finish(huff_count_t *h)
{
    while (!h->bad && h->n >= 5 && h->n < 8) {
        uint32_t len;
        for (len = 5; len <= h->n; ++len)
            if (huff_is_code((uint32_t)(h->acc >> (h->n - len)) & ((1u << len) - 1), len))
                break;
        if (len > h->n)
            break;
        h->n -= len;
        ++h->symbols;
    }
    uint64_t ones = (1ull << h->n) - 1;
    return !h->bad && h->n <= 7 && (h->acc & ones) == ones;
}

int64_t est_h2_huffman_decoded_len(const uint8_t *src, size_t len)
{
    huff_count_t h = {0};
    for (size_t i = 0; i != len && !h.bad; ++i)
        huff_feed(&h, src[i]);
    return huff_finish(&h) ? (int64_t)h.symbols : -1;
}

void est_h2_limits_default(est_h2_limits_t *l)
{
    *l = (est_h2_limits_t){
        .window_ms = 10000,
        .max_resets = 100,
        .max_control = 1000,
        .max_block_wire = 64 * 1024,
        .max_fields = 100,
        .max_decoded = 64 * 1024,
        .header_table_size = 4096,
    };
}

void est_h2_guard_init(est_h2_guard_t *g, const est_h2_limits_t *lim, uint64_t now_ms)
{
    memset(g, 0, sizeof(*g));
    g->lim = *lim;
    if (g->lim.header_table_size > EST_H2_HPACK_MAX_TABLE)
        g->lim.header_table_size = EST_H2_HPACK_MAX_TABLE;
    g->preface_left = EST_H2_PREFACE_LEN;
    g->win_start_ms = now_ms;
    g->last_request_ms = now_ms;
    g->table_capacity = g->lim.header_table_size;
}

int est_h2_guard_in_block(const est_h2_guard_t *g)
{
    return g->blk_open || g->blk_started;
}

uint32_t est_h2_guard_last_stream(const est_h2_guard_t *g)
{
    return g->last_accepted;
}

static int refuse(est_h2_refusal_t *r, int reason, uint32_t code, const char *debug)
{
    r->reason = reason;
    r->error_code = code;
    r->debug = debug;
    return -1;
}

/* fixed windows of window_ms: at most twice the allowance fits in any window_ms span */
static void roll_window(est_h2_guard_t *g, uint64_t now_ms)
{
    if (now_ms - g->win_start_ms >= g->lim.window_ms) {
        g->win_start_ms = now_ms;
        g->resets = 0;
        g->control = 0;
    }
}

static int count_control(est_h2_guard_t *g, uint64_t now_ms, est_h2_refusal_t *r)
{
    roll_window(g, now_ms);
    if (++g->control > g->lim.max_control)
        return refuse(r, EST_CLOSE_H2_FLOOD, EST_H2_ENHANCE_YOUR_CALM, "too many control or empty frames");
    return 0;
}

/* ---- request bodies ---- */

static est_h2_body_stream_t *body_find(est_h2_guard_t *g, uint32_t id)
{
    for (uint32_t i = 0; i != g->num_bodies; ++i)
        if (g->bodies[i].id == id)
            return g->bodies + i;
    return NULL;
}

static void body_remove(est_h2_guard_t *g, uint32_t id)
{
    est_h2_body_stream_t *b = body_find(g, id);
    if (b == NULL)
        return;
    g->body_total -= b->bytes;
    *b = g->bodies[--g->num_bodies];
}

/* ---- the shadow HPACK decoder (RFC 7541), over a held header block ---- */

/* Reads the block's fragments in place: the HEADERS fragment, then each CONTINUATION's payload */
typedef struct block_reader {
    const uint8_t *buf;
    size_t next_frame;    /* offset in buf of the next CONTINUATION's header */
    const uint8_t *p, *e; /* the current fragment */
    size_t rest;          /* bytes of the fragments after the current one */
} block_reader_t;

static size_t rd_left(const block_reader_t *rd)
{
    return (size_t)(rd->e - rd->p) + rd->rest;
}

/* moves to the next non-empty CONTINUATION payload; -1 at the end of the block */
static int rd_refill(block_reader_t *rd)
{
    while (rd->p == rd->e) {
        if (rd->rest == 0)
            return -1;
        const uint8_t *h = rd->buf + rd->next_frame;
        size_t flen = ((size_t)h[0] << 16) | ((size_t)h[1] << 8) | h[2];
        rd->p = h + FRAME_HEADER;
        rd->e = rd->p + flen;
        rd->rest -= flen;
        rd->next_frame += FRAME_HEADER + flen;
    }
    return 0;
}

static inline int rd_byte(block_reader_t *rd, uint8_t *out)
{
    if (rd->p == rd->e && rd_refill(rd) != 0)
        return -1;
    *out = *rd->p++;
    return 0;
}

/* RFC 7541 §5.1, at most 4 continuation octets (libh2o's bound too) */
static int rd_int(block_reader_t *rd, uint8_t first, unsigned prefix_bits, uint32_t *out)
{
    uint32_t max = (1u << prefix_bits) - 1, v = first & max;
    if (v < max) {
        *out = v;
        return 0;
    }
    for (unsigned i = 0; i != 4; ++i) {
        uint8_t b;
        if (rd_byte(rd, &b) != 0)
            return -1;
        v += (uint32_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* the first bytes of a string literal as sent (Huffman-coded or not), for content-length */
typedef struct str_peek {
    uint8_t raw[16];
    size_t len;       /* bytes in raw */
    uint32_t wire_len;
    int huffman;
} str_peek_t;

/* RFC 7541 §5.2: the decoded length of a string literal, which is skipped (its first bytes
 * kept in *pk when pk is not NULL) */
static int rd_string(block_reader_t *rd, uint64_t *decoded_len, str_peek_t *pk)
{
    uint8_t b;
    uint32_t len;
    if (rd_byte(rd, &b) != 0 || rd_int(rd, b, 7, &len) != 0 || len > rd_left(rd))
        return -1;
    int huffman = (b & 0x80) != 0;
    huff_count_t h = {0};
    *decoded_len = len;
    if (pk != NULL) {
        pk->len = 0;
        pk->wire_len = len;
        pk->huffman = huffman;
    }
    while (len != 0) {
        if (rd->p == rd->e)
            rd_refill(rd); /* cannot fail: len <= what is left */
        size_t n = (size_t)(rd->e - rd->p) < len ? (size_t)(rd->e - rd->p) : len;
        if (pk != NULL && pk->len < sizeof(pk->raw)) {
            size_t k = n < sizeof(pk->raw) - pk->len ? n : sizeof(pk->raw) - pk->len;
            memcpy(pk->raw + pk->len, rd->p, k);
            pk->len += k;
        }
        if (huffman) {
            for (const uint8_t *q = rd->p, *end = rd->p + n; q != end; ++q)
                huff_feed(&h, *q);
            if (h.bad)
                return -1;
        }
        rd->p += n;
        len -= (uint32_t)n;
    }
    if (huffman) {
        if (!huff_finish(&h))
            return -1;
        *decoded_len = h.symbols;
    }
    return 0;
}

static void table_evict_one(est_h2_guard_t *g)
{
    uint32_t oldest = (g->ring_head + g->ring_count - 1) % EST_H2_HPACK_MAX_ENTRIES;
    g->table_size -= (uint32_t)g->ring[oldest].name_len + g->ring[oldest].value_len + 32;
    --g->ring_count;
}

/* RFC 7541 §4.4: evict from the end until the entry fits; an entry larger than the table empties it */
static void table_insert(est_h2_guard_t *g, uint64_t name_len, uint64_t value_len, uint8_t cl)
{
    uint64_t size = name_len + value_len + 32;
    while (g->ring_count != 0 && g->table_size + size > g->table_capacity)
        table_evict_one(g);
    if (size > g->table_capacity)
        return;
    g->ring_head = (g->ring_head + EST_H2_HPACK_MAX_ENTRIES - 1) % EST_H2_HPACK_MAX_ENTRIES;
    g->ring[g->ring_head].name_len = (uint16_t)name_len;
    g->ring[g->ring_head].value_len = (uint16_t)value_len;
    g->ring[g->ring_head].cl = cl;
    ++g->ring_count;
    g->table_size += (uint32_t)size;
}

/* RFC 7541 §2.3.3: index 1..61 static, then the dynamic table newest first; *cl: the
 * entry's content-length flags (static index 28 is content-length with an empty value) */
static int table_lookup(const est_h2_guard_t *g, uint32_t index, uint64_t *name_len, uint64_t *value_len, uint8_t *cl)
{
    if (index == 0)
        return -1;
    if (index <= 61) {
        *name_len = STATIC_TABLE[index - 1].name_len;
        *value_len = STATIC_TABLE[index - 1].value_len;
        *cl = index == 28 ? 1 : 0;
        return 0;
    }
    index -= 62;
    if (index >= g->ring_count)
        return -1;
    uint32_t slot = (g->ring_head + index) % EST_H2_HPACK_MAX_ENTRIES;
    *name_len = g->ring[slot].name_len;
    *value_len = g->ring[slot].value_len;
    *cl = g->ring[slot].cl;
    return 0;
}

/* a literal name "content-length", as sent or Huffman-coded. RFC 7541 §5.2: padding is the
 * most significant bits of EOS (all ones) and shorter than 8 bits, and rd_string refuses any
 * other, so a string has exactly one Huffman coding: these 10 bytes (Appendix B). Upper-case
 * names are malformed in HTTP/2 (RFC 9113 §8.2.1) and refused by libh2o. */
static int peek_is_content_length(const str_peek_t *pk)
{
    static const uint8_t huffman_content_length[10] = {0x21, 0xea, 0x49, 0x6a, 0x4a, 0xd4, 0x16, 0xa9, 0x93, 0x3f};
    if (pk->huffman)
        return pk->wire_len == sizeof(huffman_content_length) &&
               memcmp(pk->raw, huffman_content_length, sizeof(huffman_content_length)) == 0;
    return pk->wire_len == 14 && memcmp(pk->raw, "content-length", 14) == 0;
}

/* a value that is "0", "00", ... (Huffman: codes of '0' are 5 zero bits, then at most 7 one bits
 * of padding); anything else, or longer than the peek, is taken as not zero */
static int peek_is_zero(const str_peek_t *pk)
{
    if (pk->wire_len == 0 || pk->wire_len > sizeof(pk->raw))
        return 0;
    if (!pk->huffman) {
        for (size_t i = 0; i != pk->wire_len; ++i)
            if (pk->raw[i] != '0')
                return 0;
        return 1;
    }
    size_t bits = (size_t)pk->wire_len * 8, zeros = 0;
    while (zeros < bits && (pk->raw[zeros / 8] & (0x80 >> (zeros % 8))) == 0)
        ++zeros;
    if (zeros == 0 || zeros % 5 != 0 || bits - zeros > 7)
        return 0;
    for (size_t i = zeros; i != bits; ++i)
        if ((pk->raw[i / 8] & (0x80 >> (i % 8))) == 0)
            return 0;
    return 1;
}

/*
 * Decodes the lengths of a complete header block and applies its table changes, exactly as
 * libh2o will when it decodes the same bytes, so that the shadow table stays in step.
 * Stops at the first limit passed: the connection is refused then and nothing is in step any more.
 */
static int measure_block(est_h2_guard_t *g, block_reader_t *rd, int bodyless, est_h2_refusal_t *r)
{
    uint32_t fields = 0;
    uint64_t decoded = 0;
    int content_length = 0; /* a content-length other than 0 (RFC 9113 §8.1.1) */
    while (rd->p != rd->e || rd->rest != 0) {
        uint8_t b;
        uint32_t index;
        uint64_t name_len, value_len;
        if (rd_byte(rd, &b) != 0)
            goto Bad;
        if (b & 0x80) { /* §6.1 indexed field */
            uint8_t cl;
            if (rd_int(rd, b, 7, &index) != 0 || table_lookup(g, index, &name_len, &value_len, &cl) != 0)
                goto Bad;
            if (cl == 3)
                content_length = 1;
        } else if ((b & 0xe0) == 0x20) { /* §6.3 dynamic table size update: only before the first field (§4.2) */
            uint32_t size;
            if (fields != 0 || rd_int(rd, b, 5, &size) != 0)
                goto Bad;
            if (size > g->lim.header_table_size)
                return refuse(r, EST_CLOSE_H2_COMPRESSION, EST_H2_COMPRESSION_ERROR, "table size update above the advertised size");
            g->table_capacity = size;
            while (g->ring_count != 0 && g->table_size > g->table_capacity)
                table_evict_one(g);
            continue;
        } else { /* §6.2 literal: with incremental indexing (01), without (0000) or never indexed (0001) */
            int do_index = (b & 0xc0) == 0x40;
            if (rd_int(rd, b, do_index ? 6 : 4, &index) != 0)
                goto Bad;
            uint8_t cl = 0;
            str_peek_t pk;
            if (index != 0) {
                uint64_t unused;
                if (table_lookup(g, index, &name_len, &unused, &cl) != 0)
                    goto Bad;
                cl &= 1;
            } else if (rd_string(rd, &name_len, &pk) != 0) {
                goto Bad;
            } else if (peek_is_content_length(&pk)) {
                cl = 1;
            }
            if (rd_string(rd, &value_len, cl != 0 ? &pk : NULL) != 0)
                goto Bad;
            if (cl != 0 && !peek_is_zero(&pk)) {
                cl |= 2;
                content_length = 1;
            }
            if (do_index)
                table_insert(g, name_len, value_len, cl);
        }
        decoded += name_len + value_len;
        if (++fields > g->lim.max_fields || decoded > g->lim.max_decoded)
            return refuse(r, EST_CLOSE_H2_HEADER_BLOCK, EST_H2_ENHANCE_YOUR_CALM, "header block too large when decoded");
    }
    /* RFC 9113 §8.1.1: a content-length that the DATA frames (none here) do not match makes
     * the request malformed; libh2o compares it only when a body follows. A stream error,
     * taken as a connection error (§5.4): the guard cannot reset one stream. */
    if (bodyless && content_length)
        return refuse(r, EST_CLOSE_H2_PROTOCOL, EST_H2_PROTOCOL_ERROR, "content-length on a request without a body");
    return 0;
Bad:
    return refuse(r, EST_CLOSE_H2_COMPRESSION, EST_H2_COMPRESSION_ERROR, "invalid header block");
}

/* ---- frames ---- */

/* the block: its first fragment (offset, length) in buf, the offset of the CONTINUATION after
 * it, and its fragments' total length */
static int on_block_complete(est_h2_guard_t *g, const uint8_t *buf, size_t first_frag, size_t first_frag_len,
                             size_t next_frame, size_t total, uint32_t stream_id, int bodyless, est_h2_refusal_t *r)
{
    block_reader_t rd = {buf, next_frame, buf + first_frag, buf + first_frag + first_frag_len, total - first_frag_len};
    if (measure_block(g, &rd, bodyless, r) != 0)
        return -1;
    if (stream_id > g->last_accepted)
        g->last_accepted = stream_id;
    g->blk_open = 0;
    g->blk_started = 0;
    return 0;
}

static int on_headers(est_h2_guard_t *g, const uint8_t *buf, size_t pos, uint32_t flen, uint8_t flags, uint32_t sid,
                      uint64_t now_ms, est_h2_refusal_t *r)
{
    const uint8_t *p = buf + pos + FRAME_HEADER;
    size_t off = 0, pad = 0;
    if (flags & F_PADDED) {
        if (flen < 1)
            return refuse(r, EST_CLOSE_H2_PROTOCOL, EST_H2_PROTOCOL_ERROR, "invalid HEADERS padding");
        pad = p[0];
        off = 1;
    }
    if (flags & F_PRIORITY)
        off += 5;
    if (off + pad > flen) /* RFC 9113 §6.2 */
        return refuse(r, EST_CLOSE_H2_PROTOCOL, EST_H2_PROTOCOL_ERROR, "invalid HEADERS padding");
    if (sid == 0 || (sid & 1) == 0) /* RFC 9113 §5.1.1: clients open odd streams */
        return refuse(r, EST_CLOSE_H2_PROTOCOL, EST_H2_PROTOCOL_ERROR, "invalid stream id in HEADERS");
    size_t frag_len = flen - off - pad;
    if (frag_len == 0 && count_control(g, now_ms, r) != 0)
        return -1;
    int bodyless = 0;
    if (sid > g->max_stream) { /* a new request */
        bodyless = (flags & F_END_STREAM) != 0;
        g->max_stream = sid;
        g->last_request_ms = now_ms;
        if ((flags & F_END_STREAM) == 0) {
            if (g->num_bodies == EST_H2_MAX_BODY_STREAMS)
                return refuse(r, EST_CLOSE_H2_STREAMS, EST_H2_ENHANCE_YOUR_CALM, "too many concurrent streams");
            g->bodies[g->num_bodies++] = (est_h2_body_stream_t){sid, 0, now_ms};
        }
    } else if (flags & F_END_STREAM) { /* trailers end the request body */
        body_remove(g, sid);
    }
    uint32_t wire = FRAME_HEADER + flen;
    if (wire > g->lim.max_block_wire)
        return refuse(r, EST_CLOSE_H2_HEADER_BLOCK, EST_H2_ENHANCE_YOUR_CALM, "header block too large");
    if (flags & F_END_HEADERS)
        return on_block_complete(g, buf, pos + FRAME_HEADER + off, frag_len, pos + FRAME_HEADER + flen, frag_len, sid, bodyless, r);
    g->blk_open = 1;
    g->blk_off = pos;
    g->blk_stream = sid;
    g->blk_bodyless = bodyless;
    g->blk_wire = wire;
    if (!g->blk_started) {
        g->blk_started = 1;
        g->blk_started_ms = now_ms;
    }
    g->blk_frag_rel = FRAME_HEADER + off;
    g->blk_frag_len = frag_len;
    g->blk_first_end_rel = FRAME_HEADER + flen;
    g->blk_total = frag_len;
    return 0;
}

static int on_continuation(est_h2_guard_t *g, const uint8_t *buf, size_t pos, uint32_t flen, uint8_t flags, uint64_t now_ms,
                           est_h2_refusal_t *r)
{
    if (!g->blk_open) /* RFC 9113 §6.10 */
        return refuse(r, EST_CLOSE_H2_PROTOCOL, EST_H2_PROTOCOL_ERROR, "CONTINUATION without HEADERS");
    if (flen == 0 && count_control(g, now_ms, r) != 0)
        return -1;
    g->blk_wire += FRAME_HEADER + flen;
    if (g->blk_wire > g->lim.max_block_wire)
        return refuse(r, EST_CLOSE_H2_HEADER_BLOCK, EST_H2_ENHANCE_YOUR_CALM, "header block too large");
    g->blk_total += flen;
    if ((flags & F_END_HEADERS) == 0)
        return 0;
    return on_block_complete(g, buf, g->blk_off + g->blk_frag_rel, g->blk_frag_len, g->blk_off + g->blk_first_end_rel,
                             g->blk_total, g->blk_stream, g->blk_bodyless, r);
}

static int on_frame_header(est_h2_guard_t *g, uint8_t type, uint32_t flen, uint8_t flags, uint32_t sid, uint64_t now_ms,
                           est_h2_refusal_t *r)
{
    switch (type) {
    case T_DATA: {
        g->last_request_ms = now_ms;
        if (flen == 0 && (flags & F_END_STREAM) == 0 && count_control(g, now_ms, r) != 0)
            return -1;
        est_h2_body_stream_t *b = body_find(g, sid);
        if (b == NULL)
            return 0; /* not a request body in progress: libh2o answers STREAM_CLOSED or PROTOCOL_ERROR */
        b->bytes += flen;
        b->last_ms = now_ms;
        g->body_total += flen;
        if ((g->lim.max_body != 0 && b->bytes > g->lim.max_body) ||
            (g->lim.max_stream_body != 0 && b->bytes > g->lim.max_stream_body)) {
            /* one request over the limit is libh2o's and the handler's to refuse (413 or
             * RST_STREAM: libh2o refuses a stream whose body passes max_request_entity_size);
             * it is not buffered further, so it leaves the connection's budget and the table */
            body_remove(g, sid);
            return 0;
        }
        if (g->lim.max_body != 0 && g->body_total > g->lim.max_body)
            return refuse(r, EST_CLOSE_BODY_TOO_LARGE, EST_H2_ENHANCE_YOUR_CALM, "request bodies over max_request_body");
        if (flags & F_END_STREAM)
            body_remove(g, sid);
        return 0;
    }
    case T_RST_STREAM:
        body_remove(g, sid);
        if (sid != 0 && (sid & 1) != 0 && sid <= g->max_stream) {
            roll_window(g, now_ms);
            if (++g->resets > g->lim.max_resets)
                return refuse(r, EST_CLOSE_H2_RAPID_RESET, EST_H2_ENHANCE_YOUR_CALM, "too many streams reset");
        }
        return 0;
    default: /* PRIORITY, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, unknown types (§5.5) */
        return count_control(g, now_ms, r);
    }
}

int est_h2_guard_feed(est_h2_guard_t *g, const uint8_t *buf, size_t len, uint64_t now_ms, size_t *release, est_h2_refusal_t *r)
{
    while (g->pos < len) {
        if (g->preface_left != 0) { /* RFC 9113 §3.4 */
            size_t done = EST_H2_PREFACE_LEN - g->preface_left, n = len - g->pos;
            if (n > g->preface_left)
                n = g->preface_left;
            if (memcmp(buf + g->pos, PREFACE + done, n) != 0)
                return refuse(r, EST_CLOSE_H2_PROTOCOL, EST_H2_PROTOCOL_ERROR, "invalid connection preface");
            g->pos += n;
            g->preface_left -= (uint32_t)n;
            continue;
        }
        if (g->skip != 0) {
            size_t n = len - g->pos < g->skip ? len - g->pos : g->skip;
            g->pos += n;
            g->skip -= n;
            continue;
        }
        if (len - g->pos < FRAME_HEADER)
            break;
        const uint8_t *h = buf + g->pos;
        uint32_t flen = ((uint32_t)h[0] << 16) | ((uint32_t)h[1] << 8) | h[2];
        uint8_t type = h[3], flags = h[4];
        uint32_t sid = (((uint32_t)h[5] << 24) | ((uint32_t)h[6] << 16) | ((uint32_t)h[7] << 8) | h[8]) & 0x7fffffffu;
        if (flen > EST_H2_MAX_FRAME) /* RFC 9113 §4.2 */
            return refuse(r, EST_CLOSE_H2_PROTOCOL, EST_H2_FRAME_SIZE_ERROR, "frame too large");
        if (g->blk_open && (type != T_CONTINUATION || sid != g->blk_stream)) /* RFC 9113 §6.2 */
            return refuse(r, EST_CLOSE_H2_PROTOCOL, EST_H2_PROTOCOL_ERROR, "expected CONTINUATION");
        if (type == T_HEADERS || type == T_CONTINUATION) {
            if (len - g->pos < FRAME_HEADER + (size_t)flen) {
                if (!g->blk_started) { /* the header timeout runs from the first byte of a block */
                    g->blk_started = 1;
                    g->blk_started_ms = now_ms;
                }
                break;
            }
            int ret = type == T_HEADERS ? on_headers(g, buf, g->pos, flen, flags, sid, now_ms, r)
                                        : on_continuation(g, buf, g->pos, flen, flags, now_ms, r);
            if (ret != 0)
                return -1;
            g->pos += FRAME_HEADER + flen;
            continue;
        }
        if (type == T_WINDOW_UPDATE && flen == 4) {
            if (len - g->pos < FRAME_HEADER + 4)
                break;
            /* RFC 9113 §6.9: a client reading a large response acknowledges it with
             * WINDOW_UPDATEs, so they are counted only when they move the window by less than
             * WINDOW_UPDATE_MIN (the flood of CVE-2019-9517 variants); libh2o ends window
             * overflows itself (FLOW_CONTROL_ERROR) */
            uint32_t inc = (((uint32_t)h[9] << 24) | ((uint32_t)h[10] << 16) | ((uint32_t)h[11] << 8) | h[12]) & 0x7fffffffu;
            if (inc < WINDOW_UPDATE_MIN && count_control(g, now_ms, r) != 0)
                return -1;
            g->pos += FRAME_HEADER + 4;
            continue;
        }
        if (on_frame_header(g, type, flen, flags, sid, now_ms, r) != 0)
            return -1;
        g->pos += FRAME_HEADER;
        g->skip = flen;
    }
    *release = g->blk_open ? g->blk_off : len;
    return 0;
}

void est_h2_guard_consumed(est_h2_guard_t *g, size_t n)
{
    g->pos -= n;
    if (g->blk_open)
        g->blk_off -= n;
}

int est_h2_guard_tick(est_h2_guard_t *g, uint64_t now_ms, size_t open_requests, est_h2_refusal_t *r)
{
    if (g->blk_started && g->lim.header_timeout_ms != 0 && now_ms - g->blk_started_ms >= g->lim.header_timeout_ms)
        return refuse(r, EST_CLOSE_HEADER_TIMEOUT, EST_H2_ENHANCE_YOUR_CALM, "header block timeout");
    if (open_requests != 0 || g->num_bodies != 0 || g->blk_started)
        g->last_request_ms = now_ms;
    else if (g->lim.idle_timeout_ms != 0 && now_ms - g->last_request_ms >= g->lim.idle_timeout_ms)
        return refuse(r, EST_CLOSE_IDLE_TIMEOUT, EST_H2_NO_ERROR, "idle timeout");
    return 0;
}

size_t est_h2_guard_stalled(est_h2_guard_t *g, uint64_t now_ms, uint32_t *ids, size_t cap)
{
    size_t n = 0;
    if (g->lim.body_timeout_ms == 0)
        return 0;
    for (uint32_t i = 0; i < g->num_bodies && n < cap;) {
        est_h2_body_stream_t *b = g->bodies + i;
        if (b->id <= g->last_accepted && now_ms - b->last_ms >= g->lim.body_timeout_ms) {
            ids[n++] = b->id;
            g->body_total -= b->bytes;
            *b = g->bodies[--g->num_bodies];
        } else {
            ++i;
        }
    }
    return n;
}

int est_h2_guard_has_bodies(const est_h2_guard_t *g)
{
    return g->num_bodies != 0;
}

static uint8_t *put_frame_header(uint8_t *p, size_t len, uint8_t type, uint8_t flags, uint32_t sid)
{
    *p++ = (uint8_t)(len >> 16);
    *p++ = (uint8_t)(len >> 8);
    *p++ = (uint8_t)len;
    *p++ = type;
    *p++ = flags;
    sid &= 0x7fffffffu;
    *p++ = (uint8_t)(sid >> 24);
    *p++ = (uint8_t)(sid >> 16);
    *p++ = (uint8_t)(sid >> 8);
    *p++ = (uint8_t)sid;
    return p;
}

size_t est_h2_encode_rst_stream(uint8_t *out, size_t cap, uint32_t stream_id, uint32_t error_code)
{
    if (cap < FRAME_HEADER + 4)
        return 0;
    uint8_t *p = put_frame_header(out, 4, T_RST_STREAM, 0, stream_id);
    *p++ = (uint8_t)(error_code >> 24);
    *p++ = (uint8_t)(error_code >> 16);
    *p++ = (uint8_t)(error_code >> 8);
    *p++ = (uint8_t)error_code;
    return FRAME_HEADER + 4;
}

size_t est_h2_encode_ping(uint8_t *out, size_t cap)
{
    if (cap < FRAME_HEADER + 8)
        return 0;
    memset(put_frame_header(out, 8, T_PING, 0, 0), 0, 8);
    return FRAME_HEADER + 8;
}

size_t est_h2_encode_goaway(uint8_t *out, size_t cap, uint32_t last_stream, uint32_t error_code, const char *debug)
{
    size_t dlen = debug != NULL ? strlen(debug) : 0, plen = 8 + dlen;
    if (cap < FRAME_HEADER + plen || plen > EST_H2_MAX_FRAME)
        return 0;
    uint8_t *p = out;
    *p++ = (uint8_t)(plen >> 16);
    *p++ = (uint8_t)(plen >> 8);
    *p++ = (uint8_t)plen;
    *p++ = T_GOAWAY;
    *p++ = 0;
    memset(p, 0, 4); /* stream 0 */
    p += 4;
    last_stream &= 0x7fffffffu;
    *p++ = (uint8_t)(last_stream >> 24);
    *p++ = (uint8_t)(last_stream >> 16);
    *p++ = (uint8_t)(last_stream >> 8);
    *p++ = (uint8_t)last_stream;
    *p++ = (uint8_t)(error_code >> 24);
    *p++ = (uint8_t)(error_code >> 16);
    *p++ = (uint8_t)(error_code >> 8);
    *p++ = (uint8_t)error_code;
    if (dlen != 0)
        memcpy(p, debug, dlen);
    return FRAME_HEADER + plen;
}
