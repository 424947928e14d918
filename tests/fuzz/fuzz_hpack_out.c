/*
 * estuary - libFuzzer driver for the HPACK encoder of HTTP/2 response heads
 * (src/h2/hpack_out.c), checked against libh2o's own HPACK decoder.
 *
 * Input: a sequence of response heads on one connection. Per head: a control byte (status,
 * Server on/off, Content-Length on/off, a new Date or the same, the frame size), a field count,
 * then per field a selector (one of libh2o's tokens a response may carry, or a name of our
 * own from the input) and a value of printable bytes from the input (lengths up to ~5 KB, so
 * entries larger than the 4,096-byte table happen).
 *
 * Checks, per head: the frames are one HEADERS then CONTINUATIONs, each within the frame size,
 * END_HEADERS on the last only, on the right stream; the block starts with the :status and the
 * rest decodes with libh2o's decoder (h2o_hpack_parse_headers) into exactly the fields given,
 * in order (Server and Date first, Content-Length separately); after every head the encoder's
 * dynamic table is the newest part of the decoder's (a table out of step would corrupt every
 * later head on the connection). Both tables are freed with libh2o's dispose, which
 * checks that our entries are owned the way libh2o frees them (ASan).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "h2/hpack_out.h"

#define CHECK(x)                                                                                                                   \
    do {                                                                                                                           \
        if (!(x))                                                                                                                  \
            abort();                                                                                                               \
    } while (0)

#define MAX_FIELDS 24

typedef struct {
    const uint8_t *p, *end;
} input_t;

static unsigned take(input_t *in)
{
    return in->p != in->end ? *in->p++ : 0;
}

/* tokens a response may carry (not the connection-specific ones libh2o's decoder refuses, not
 * Content-Length, which the encoder takes apart, not Host, which the decoder drops) */
static const h2o_token_t *token_at(unsigned i)
{
    const h2o_token_t *t[] = {H2O_TOKEN_CONTENT_TYPE,  H2O_TOKEN_CACHE_CONTROL, H2O_TOKEN_ETAG,          H2O_TOKEN_LAST_MODIFIED,
                              H2O_TOKEN_SET_COOKIE,    H2O_TOKEN_VARY,          H2O_TOKEN_LOCATION,      H2O_TOKEN_AGE,
                              H2O_TOKEN_CONTENT_RANGE, H2O_TOKEN_ACCEPT_RANGES, H2O_TOKEN_EXPIRES,       H2O_TOKEN_LINK,
                              H2O_TOKEN_VIA,           H2O_TOKEN_ALLOW,         H2O_TOKEN_AUTHORIZATION, H2O_TOKEN_RETRY_AFTER};
    return t[i % (sizeof(t) / sizeof(t[0]))];
}

typedef struct {
    h2o_iovec_t name; /* a token's buf or name_buf */
    const h2o_iovec_t *name_ref;
    char name_buf[24];
    char *value;
    size_t value_len;
} field_t;

static void free_fields(field_t *f, size_t n)
{
    for (size_t i = 0; i != n; ++i)
        free(f[i].value);
}

/* the frames of one head: returns the joined block (malloc'd), or aborts on bad framing */
static uint8_t *join_frames(const uint8_t *p, size_t len, uint32_t sid, size_t mfs, size_t *block_len)
{
    uint8_t *block = malloc(len ? len : 1);
    CHECK(block != NULL);
    size_t n = 0, off = 0;
    int first = 1, ended = 0;
    while (off != len) {
        CHECK(!ended && len - off >= 9);
        size_t flen = (size_t)p[off] << 16 | (size_t)p[off + 1] << 8 | p[off + 2];
        uint8_t type = p[off + 3], flags = p[off + 4];
        uint32_t id = (uint32_t)(p[off + 5] & 0x7f) << 24 | (uint32_t)p[off + 6] << 16 | (uint32_t)p[off + 7] << 8 | p[off + 8];
        CHECK(type == (first ? 0x1 : 0x9) && id == sid && flen <= mfs && len - off - 9 >= flen);
        CHECK((flags & ~0x4) == 0);
        ended = (flags & 0x4) != 0;
        memcpy(block + n, p + off + 9, flen);
        n += flen;
        off += 9 + flen;
        first = 0;
    }
    CHECK(ended);
    *block_len = n;
    return block;
}

static int decode_status(const uint8_t *b, size_t len, size_t *used)
{
    static const int indexed[] = {200, 204, 206, 304, 400, 404, 500};
    CHECK(len >= 1);
    if (b[0] >= 0x88 && b[0] <= 0x8e) {
        *used = 1;
        return indexed[b[0] - 0x88];
    }
    CHECK(len >= 5 && b[0] == 0x08 && b[1] == 3);
    *used = 5;
    return (b[2] - '0') * 100 + (b[3] - '0') * 10 + (b[4] - '0');
}

static void same_tables(h2o_hpack_header_table_t *enc, h2o_hpack_header_table_t *dec)
{
    /* the encoder keeps at most 32 entries (the decoder has no such cap): its table must be the
     * newest entries of the decoder's, at the same indices (RFC 7541 §2.3.3); eviction by size
     * keeps it so, since its size never exceeds the decoder's */
    CHECK(enc->num_entries <= dec->num_entries && enc->hpack_size <= dec->hpack_size);
    CHECK(enc->num_entries == dec->num_entries || enc->num_entries == 32);
    for (size_t i = 0; i != enc->num_entries; ++i) {
        h2o_hpack_header_table_entry_t *e = enc->entries + (enc->entry_start_index + i) % enc->entry_capacity;
        h2o_hpack_header_table_entry_t *d = dec->entries + (dec->entry_start_index + i) % dec->entry_capacity;
        CHECK(h2o_memis(e->name->base, e->name->len, d->name->base, d->name->len));
        CHECK(h2o_memis(e->value->base, e->value->len, d->value->base, d->value->len));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input_t in = {data, data + size};
    h2o_hpack_header_table_t enc = {0}, dec = {0};
    enc.hpack_capacity = enc.hpack_max_capacity = 4096;
    dec.hpack_capacity = dec.hpack_max_capacity = 4096;
    h2o_timestamp_string_t date = {{0}};
    memcpy(date.rfc1123, "Mon, 07 Dec 2026 05:00:00 GMT", H2O_TIMESTR_RFC1123_LEN);
    h2o_timestamp_t ts = {{0, 0}, &date};
    static const int statuses[] = {200, 204, 206, 304, 400, 404, 500, 201, 418, 503, 101, 999};
    h2o_iovec_t server = h2o_iovec_init(H2O_STRLIT("estuary"));

    for (uint32_t sid = 1; in.p != in.end && sid < 2 * 64; sid += 2) {
        unsigned ctl = take(&in);
        int status = statuses[(ctl & 0xf) % (sizeof(statuses) / sizeof(statuses[0]))];
        int with_server = (ctl & 0x10) != 0;
        size_t content_length = (ctl & 0x20) ? (size_t)take(&in) * 1000003u : SIZE_MAX;
        if (ctl & 0x40)
            date.rfc1123[24] = (char)('0' + take(&in) % 10); /* another second */
        size_t mfs = (ctl & 0x80) ? 16 + take(&in) : 16384;

        field_t fields[MAX_FIELDS];
        h2o_header_t headers[MAX_FIELDS];
        size_t n = take(&in) % (MAX_FIELDS + 1);
        for (size_t i = 0; i != n; ++i) {
            field_t *f = &fields[i];
            unsigned sel = take(&in);
            if (sel < 0xc0) {
                f->name_ref = &token_at(sel)->buf;
            } else { /* a name of our own: "x-" and lower-case letters */
                size_t nl = 1 + take(&in) % 20;
                memcpy(f->name_buf, "x-", 2);
                for (size_t k = 0; k != nl; ++k)
                    f->name_buf[2 + k] = (char)('a' + take(&in) % 26);
                f->name = h2o_iovec_init(f->name_buf, nl + 2);
                f->name_ref = &f->name;
            }
            unsigned l0 = take(&in);
            size_t vl = l0 < 0xf0 ? l0 % 64 : (size_t)(l0 - 0xf0) * 512 + take(&in);
            f->value = malloc(vl ? vl : 1);
            CHECK(f->value != NULL);
            for (size_t k = 0; k != vl; ++k) /* printable, no leading/trailing space: decoders keep them */
                f->value[k] = (char)(0x21 + take(&in) % 0x5e);
            f->value_len = vl;
            headers[i] = (h2o_header_t){(h2o_iovec_t *)f->name_ref, NULL, h2o_iovec_init(f->value, vl)};
        }
        h2o_res_t res = {0};
        res.status = status;
        res.headers.entries = headers;
        res.headers.size = n;
        res.headers.capacity = n;

        h2o_buffer_t *buf;
        h2o_buffer_init(&buf, &h2o_socket_buffer_prototype);
        h2o_iovec_t none = {NULL, 0};
        h2o_hpack_flatten_response(&buf, &enc, sid, mfs, &res, &ts, with_server ? &server : &none, content_length);
        size_t block_len;
        uint8_t *block = join_frames((const uint8_t *)buf->bytes, buf->size, sid, mfs, &block_len);
        h2o_buffer_dispose(&buf);

        size_t used;
        CHECK(decode_status(block, block_len, &used) == status);
        h2o_req_t req;
        memset(&req, 0, sizeof(req));
        h2o_mem_init_pool(&req.pool);
        size_t got_cl = SIZE_MAX;
        const char *err = NULL;
        int r = h2o_hpack_parse_headers(&req, &dec, block + used, block_len - used, NULL, &got_cl, NULL, &err);
        CHECK(r == 0 && err == NULL && got_cl == content_length);
        size_t k = 0;
        if (with_server) {
            CHECK(k < req.headers.size && req.headers.entries[k].name == &H2O_TOKEN_SERVER->buf);
            CHECK(h2o_memis(req.headers.entries[k].value.base, req.headers.entries[k].value.len, H2O_STRLIT("estuary")));
            ++k;
        }
        CHECK(k < req.headers.size && req.headers.entries[k].name == &H2O_TOKEN_DATE->buf);
        CHECK(
            h2o_memis(req.headers.entries[k].value.base, req.headers.entries[k].value.len, date.rfc1123, H2O_TIMESTR_RFC1123_LEN));
        ++k;
        CHECK(req.headers.size == k + n);
        for (size_t i = 0; i != n; ++i, ++k) {
            const h2o_header_t *h = &req.headers.entries[k];
            CHECK(h2o_memis(h->name->base, h->name->len, fields[i].name_ref->base, fields[i].name_ref->len));
            CHECK(h2o_memis(h->value.base, h->value.len, fields[i].value, fields[i].value_len));
        }
        h2o_mem_clear_pool(&req.pool);
        free(block);
        free_fields(fields, n);
        same_tables(&enc, &dec);
    }
    h2o_hpack_dispose_header_table(&enc);
    h2o_hpack_dispose_header_table(&dec);
    return 0;
}
