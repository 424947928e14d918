/*
 * estuary - the HPACK encoder of HTTP/2 response heads (see hpack_out.h, docs/http2.md).
 *
 * libh2o 2.2.5 encodes every response field "with incremental indexing" (RFC 7541 §6.2.1):
 * each response inserts its unique fields (X-Request-Id, Server-Timing, traceparent) into the
 * connection's dynamic table, which costs two allocations, an eviction with two frees and a
 * memcmp of the field name against every entry for every such field, and leaves the table
 * full of values that are never sent again. On S5 (h2c) that was a fifth of the instructions
 * per request.
 *
 * This encoder takes the place of libh2o's h2o_hpack_flatten_response: libh2o's HTTP/2
 * server calls it through the dynamic linker (its PLT), so the definition in our executable
 * is the one that runs (est_h2_hpack_out_check() verifies that at start). It writes into the
 * same h2o_hpack_header_table_t with the same ownership rules (entries allocated with
 * h2o_mem_alloc_shared, released by libh2o's h2o_hpack_dispose_header_table), so the table
 * stays libh2o's to free. The rules:
 *   - a field whose name is one of libh2o's tokens is looked up in the dynamic table by name
 *     pointer and value; a hit is one indexed byte (§6.1), a miss is sent with incremental
 *     indexing, except the tokens whose values are unique per response or sensitive;
 *   - Set-Cookie (and Authorization/Proxy-Authorization, should a handler send them) is sent
 *     "never indexed" (§6.2.3, §7.1.3): an intermediary must not index it either;
 *   - every other field (a name that is not a token: X-Request-Id, Server-Timing, a backend's
 *     own X-* fields) is sent "without indexing" (§6.2.2), its name as a literal;
 *   - Content-Length, Age, Location and Content-Range, whose values change from one response
 *     to the next, are sent without indexing, the name from the static table.
 * Strings go through libh2o's h2o_hpack_encode_string (Huffman when shorter, §5.2).
 */
#include <assert.h>
#include <dlfcn.h>
#include <string.h>
#include <h2o.h>
#include "common/log.h"
#include "h2/hpack_out.h"

#define FRAME_HEADER_SIZE 9 /* RFC 9113 §4.1 */
#define FRAME_HEADERS 0x1
#define FRAME_CONTINUATION 0x9
#define FLAG_END_HEADERS 0x4

#define HPACK_ENTRY_OVERHEAD 32 /* RFC 7541 §4.1 */
#define HPACK_STATIC_COUNT 61   /* RFC 7541 Appendix A: dynamic indices start at 62 */
/* at most this many dynamic entries: the lookup is a linear scan per field (libh2o used 32) */
#define HPACK_MAX_ENTRIES 32
#define MAX_INT_LEN 5 /* an HPACK integer of at most 2^28 (H2O_HTTP2_ENCODE_INT_MAX_LENGTH) */

/* RFC 7541 §5.1 */
static uint8_t *put_int(uint8_t *dst, uint8_t first, size_t value, unsigned prefix_bits)
{
    size_t max = ((size_t)1 << prefix_bits) - 1;
    if (value < max) {
        *dst++ = (uint8_t)(first | value);
        return dst;
    }
    *dst++ = (uint8_t)(first | max);
    value -= max;
    while (value >= 128) {
        *dst++ = (uint8_t)(0x80 | (value & 0x7f));
        value >>= 7;
    }
    *dst++ = (uint8_t)value;
    return dst;
}

static uint8_t *put_string(uint8_t *dst, const char *s, size_t len)
{
    return dst + h2o_hpack_encode_string(dst, s, len);
}

/* the dynamic table, as libh2o keeps it: a ring whose entry_start_index is the newest entry */
static h2o_hpack_header_table_entry_t *entry_at(h2o_hpack_header_table_t *t, size_t i)
{
    return t->entries + (t->entry_start_index + i) % t->entry_capacity;
}

static void evict_oldest(h2o_hpack_header_table_t *t)
{
    h2o_hpack_header_table_entry_t *e = entry_at(t, --t->num_entries);
    t->hpack_size -= e->name->len + e->value->len + HPACK_ENTRY_OVERHEAD;
    if (!h2o_iovec_is_token(e->name))
        h2o_mem_release_shared(e->name);
    h2o_mem_release_shared(e->value);
    memset(e, 0, sizeof(*e));
}

static h2o_iovec_t *shared_copy(const char *s, size_t len)
{
    h2o_iovec_t *v = h2o_mem_alloc_shared(NULL, sizeof(*v) + len + 1, NULL);
    v->base = (char *)(v + 1);
    v->len = len;
    memcpy(v->base, s, len);
    v->base[len] = '\0';
    return v;
}

/* RFC 7541 §4.4: evict until the new entry fits; one larger than the table empties it and is
 * not added (the peer's decoder does the same, so both tables stay in step) */
static void table_add(h2o_hpack_header_table_t *t, const h2o_iovec_t *token_name, const h2o_iovec_t *value)
{
    size_t size = token_name->len + value->len + HPACK_ENTRY_OVERHEAD;
    while (t->num_entries != 0 && (t->hpack_size + size > t->hpack_capacity || t->num_entries >= HPACK_MAX_ENTRIES))
        evict_oldest(t);
    if (size > t->hpack_capacity)
        return;
    if (t->num_entries == t->entry_capacity) {
        size_t cap = t->entry_capacity < 8 ? 8 : t->entry_capacity * 2;
        h2o_hpack_header_table_entry_t *grown = h2o_mem_alloc(cap * sizeof(*grown));
        for (size_t i = 0; i != t->num_entries; ++i)
            grown[i] = *entry_at(t, i);
        memset(grown + t->num_entries, 0, (cap - t->num_entries) * sizeof(*grown));
        free(t->entries);
        t->entries = grown;
        t->entry_capacity = cap;
        t->entry_start_index = 0;
    }
    t->entry_start_index = (t->entry_start_index + t->entry_capacity - 1) % t->entry_capacity;
    ++t->num_entries;
    t->hpack_size += size;
    h2o_hpack_header_table_entry_t *e = t->entries + t->entry_start_index;
    e->name = (h2o_iovec_t *)token_name;
    e->value = shared_copy(value->base, value->len);
    e->err_desc = NULL;
}

typedef enum { INDEX_YES, INDEX_NO, INDEX_NEVER } index_rule_t;

static index_rule_t token_rule(const h2o_token_t *t)
{
    if (t == H2O_TOKEN_SET_COOKIE || t == H2O_TOKEN_AUTHORIZATION || t == H2O_TOKEN_PROXY_AUTHORIZATION)
        return INDEX_NEVER;
    /* values that differ from one response to the next would only churn the table */
    if (t == H2O_TOKEN_CONTENT_LENGTH || t == H2O_TOKEN_AGE || t == H2O_TOKEN_LOCATION || t == H2O_TOKEN_CONTENT_RANGE)
        return INDEX_NO;
    return INDEX_YES;
}

static uint8_t *encode_token_field(h2o_hpack_header_table_t *t, uint8_t *dst, const h2o_token_t *token, const h2o_iovec_t *value)
{
    index_rule_t rule = token_rule(token);
    if (rule == INDEX_YES) {
        for (size_t i = 0; i != t->num_entries; ++i) {
            const h2o_hpack_header_table_entry_t *e = entry_at(t, i);
            if (e->name == &token->buf && e->value->len == value->len && memcmp(e->value->base, value->base, value->len) == 0)
                return put_int(dst, 0x80, HPACK_STATIC_COUNT + 1 + i, 7); /* §6.1 indexed field */
        }
    }
    size_t name_index = (size_t)(unsigned char)token->http2_static_table_name_index;
    uint8_t first = rule == INDEX_YES ? 0x40 : rule == INDEX_NEVER ? 0x10 : 0x00;
    unsigned prefix = rule == INDEX_YES ? 6 : 4;
    if (name_index != 0) {
        dst = put_int(dst, first, name_index, prefix);
    } else {
        *dst++ = first;
        dst = put_string(dst, token->buf.base, token->buf.len);
    }
    dst = put_string(dst, value->base, value->len);
    if (rule == INDEX_YES)
        table_add(t, &token->buf, value);
    return dst;
}

static uint8_t *encode_field(h2o_hpack_header_table_t *t, uint8_t *dst, const h2o_iovec_t *name, const h2o_iovec_t *value)
{
    if (h2o_iovec_is_token(name))
        return encode_token_field(t, dst, H2O_STRUCT_FROM_MEMBER(h2o_token_t, buf, name), value);
    *dst++ = 0x00; /* §6.2.2 literal without indexing, new name */
    dst = put_string(dst, name->base, name->len);
    return put_string(dst, value->base, value->len);
}

static uint8_t *encode_status(uint8_t *dst, int status)
{
    /* RFC 7541 Appendix A: :status 200 (8), 204, 206, 304, 400, 404, 500 (14) */
    static const int indexed[] = {200, 204, 206, 304, 400, 404, 500};
    for (size_t i = 0; i != sizeof(indexed) / sizeof(indexed[0]); ++i)
        if (status == indexed[i])
            return put_int(dst, 0x80, 8 + i, 7);
    assert(100 <= status && status <= 999);
    *dst++ = 0x08; /* without indexing, name :status (index 8) */
    *dst++ = 3;
    *dst++ = (uint8_t)('0' + status / 100);
    *dst++ = (uint8_t)('0' + status / 10 % 10);
    *dst++ = (uint8_t)('0' + status % 10);
    return dst;
}

static uint8_t *encode_content_length(uint8_t *dst, size_t value)
{
    char digits[24];
    size_t n = sizeof(digits);
    do {
        digits[--n] = (char)('0' + value % 10);
    } while ((value /= 10) != 0);
    dst = put_int(dst, 0x00, 28, 4); /* without indexing, name content-length (index 28) */
    *dst++ = (uint8_t)(sizeof(digits) - n);
    memcpy(dst, digits + n, sizeof(digits) - n);
    return dst + (sizeof(digits) - n);
}

/* the largest encoding of one field: a representation byte with its integer, then two
 * strings each with a length integer (Huffman output is never longer than the input,
 * h2o_hpack_encode_string falls back to the raw bytes) */
static size_t field_bound(size_t name_len, size_t value_len)
{
    return 1 + 3 * MAX_INT_LEN + name_len + value_len;
}

/* RFC 9113 §4.1: length (24 bits), type, flags, stream id (31 bits) */
static void frame_header(uint8_t *dst, size_t length, uint8_t type, uint8_t flags, int32_t stream_id)
{
    dst[0] = (uint8_t)(length >> 16);
    dst[1] = (uint8_t)(length >> 8);
    dst[2] = (uint8_t)length;
    dst[3] = type;
    dst[4] = flags;
    dst[5] = (uint8_t)(((uint32_t)stream_id >> 24) & 0x7f);
    dst[6] = (uint8_t)((uint32_t)stream_id >> 16);
    dst[7] = (uint8_t)((uint32_t)stream_id >> 8);
    dst[8] = (uint8_t)stream_id;
}

/* RFC 9113 §6.2, §6.10: the block goes out in HEADERS, then CONTINUATION frames of at most
 * max_frame_size bytes each; END_HEADERS on the last. The first frame header was reserved. */
static void frame_block(h2o_buffer_t **buf, size_t start, uint32_t stream_id, size_t max_frame_size)
{
    size_t block = (*buf)->size - start - FRAME_HEADER_SIZE;
    if (block <= max_frame_size) {
        frame_header((uint8_t *)(*buf)->bytes + start, block, FRAME_HEADERS, FLAG_END_HEADERS, (int32_t)stream_id);
        return;
    }
    size_t extra = (block - 1) / max_frame_size * FRAME_HEADER_SIZE; /* CONTINUATION headers */
    h2o_buffer_reserve(buf, extra);
    char *base = (*buf)->bytes + start;
    /* move the fragments back to front, each to its place after the frame headers before it */
    size_t nframes = (block + max_frame_size - 1) / max_frame_size;
    for (size_t k = nframes; k-- > 1;) {
        size_t off = k * max_frame_size, len = block - off < max_frame_size ? block - off : max_frame_size;
        char *from = base + FRAME_HEADER_SIZE + off;
        char *to = from + k * FRAME_HEADER_SIZE;
        memmove(to, from, len);
        frame_header((uint8_t *)to - FRAME_HEADER_SIZE, len, FRAME_CONTINUATION, k == nframes - 1 ? FLAG_END_HEADERS : 0,
                     (int32_t)stream_id);
    }
    frame_header((uint8_t *)base, max_frame_size, FRAME_HEADERS, 0, (int32_t)stream_id);
    (*buf)->size += extra;
}

/* Same signature and contract as libh2o 2.2.5's (http2_internal.h): appends the HEADERS (and
 * CONTINUATION) frames of the response head to *buf. */
void h2o_hpack_flatten_response(h2o_buffer_t **buf, h2o_hpack_header_table_t *header_table, uint32_t stream_id,
                                size_t max_frame_size, h2o_res_t *res, h2o_timestamp_t *ts, const h2o_iovec_t *server_name,
                                size_t content_length)
{
    size_t bound = FRAME_HEADER_SIZE + 5 /* :status */ + field_bound(4, H2O_TIMESTR_RFC1123_LEN);
    if (server_name->len != 0)
        bound += field_bound(6, server_name->len);
    if (content_length != SIZE_MAX)
        bound += 3 + 20;
    for (size_t i = 0; i != res->headers.size; ++i)
        bound += field_bound(res->headers.entries[i].name->len, res->headers.entries[i].value.len);

    size_t start = (*buf)->size;
    uint8_t *dst = (uint8_t *)h2o_buffer_reserve(buf, bound).base + FRAME_HEADER_SIZE;
    dst = encode_status(dst, res->status);
    if (server_name->len != 0)
        dst = encode_token_field(header_table, dst, H2O_TOKEN_SERVER, server_name);
    h2o_iovec_t date = {ts->str->rfc1123, H2O_TIMESTR_RFC1123_LEN};
    dst = encode_token_field(header_table, dst, H2O_TOKEN_DATE, &date);
    for (size_t i = 0; i != res->headers.size; ++i)
        dst = encode_field(header_table, dst, res->headers.entries[i].name, &res->headers.entries[i].value);
    if (content_length != SIZE_MAX)
        dst = encode_content_length(dst, content_length);
    (*buf)->size = (size_t)((char *)dst - (*buf)->bytes);
    frame_block(buf, start, stream_id, max_frame_size);
}

int est_h2_hpack_out_check(void)
{
    void *bound = dlsym(RTLD_DEFAULT, "h2o_hpack_flatten_response");
    if (bound == (void *)h2o_hpack_flatten_response)
        return 0;
    est_log_error("http2: libh2o's own HPACK response encoder is in use (symbol not bound to estuary's); "
                  "response heads are still correct but index every field (docs/http2.md)");
    return -1;
}
