/*
 * estuary - the HTTP/2 frame guard: pure accounting over the bytes a client sends, before
 * libh2o's HTTP/2 server parses them (SPEC "HTTP/2 protections", docs/http2.md).
 *
 * The guard walks the frames of one connection in one pass, without allocating and without
 * copying: it counts control frames and client resets per window, bounds the request bodies
 * buffered for the connection, and holds every header block (HEADERS + CONTINUATION) until it
 * is complete, then measures it with a shadow HPACK decoder (RFC 7541) that tracks only the
 * lengths of the dynamic table's entries. A block over the limits is refused before libh2o
 * decodes a byte of it. The socket glue is attach.c; this file knows no sockets or clocks
 * (times are passed in, in milliseconds).
 *
 * Usage (attach.c):
 *     est_h2_guard_init(&g, &limits, now);
 *     on every read:  est_h2_guard_feed(&g, input, input_len, now, &release, &refusal)
 *                     -> hand input[0, release) to libh2o, keep the rest;
 *                     est_h2_guard_consumed(&g, n) once libh2o consumed n leading bytes
 *     on a timer:     est_h2_guard_tick(&g, now, open_requests, &refusal)
 * After a refusal (-1) the connection must be closed: the guard's state is then undefined.
 */
#ifndef EST_H2_GUARD_H
#define EST_H2_GUARD_H

#include <stddef.h>
#include <stdint.h>

/* RFC 9113 §7 error codes the guard answers with */
#define EST_H2_NO_ERROR 0x0
#define EST_H2_PROTOCOL_ERROR 0x1
#define EST_H2_FRAME_SIZE_ERROR 0x6
#define EST_H2_CANCEL 0x8
#define EST_H2_COMPRESSION_ERROR 0x9
#define EST_H2_ENHANCE_YOUR_CALM 0xb

#define EST_H2_PREFACE_LEN 24
/* SETTINGS_MAX_FRAME_SIZE: libh2o does not advertise one, so the default (RFC 9113 §6.5.2) */
#define EST_H2_MAX_FRAME 16384
/* the largest SETTINGS_HEADER_TABLE_SIZE the shadow table supports (libh2o decodes with 4096) */
#define EST_H2_HPACK_MAX_TABLE 4096
#define EST_H2_HPACK_MAX_ENTRIES (EST_H2_HPACK_MAX_TABLE / 32)
/* request bodies tracked at once: libh2o runs at most 100 streams (SETTINGS_MAX_CONCURRENT_STREAMS) */
#define EST_H2_MAX_BODY_STREAMS 128

typedef struct est_h2_limits {
    uint32_t window_ms;          /* the counting window of the next two (10 s) */
    uint32_t max_resets;         /* client RST_STREAM on its own streams per window (100) */
    uint32_t max_control;        /* PING/SETTINGS/small WINDOW_UPDATE/PRIORITY/GOAWAY/unknown/empty frames per window (1000) */
    uint32_t max_block_wire;     /* one header block on the wire, frame headers included (64 KiB) */
    uint32_t max_fields;         /* decoded fields of one header block (100) */
    uint32_t max_decoded;        /* decoded name + value bytes of one header block (64 KiB) */
    uint32_t header_table_size;  /* the SETTINGS_HEADER_TABLE_SIZE the server advertises (4096) */
    uint64_t max_body;           /* DATA bytes of the connection's unfinished requests, together */
    uint64_t max_stream_body;    /* libh2o refuses a stream whose body passes this (max_request_entity_size; 0: none) */
    uint64_t header_timeout_ms;  /* a header block started and not finished (0: none) */
    uint64_t idle_timeout_ms;    /* no request carried and none open (0: none) */
    uint64_t body_timeout_ms;    /* a request body with no DATA for this long (0: none) */
} est_h2_limits_t;

/* SPEC's values; max_body 0 and the timeouts 0 (set them from the config) */
void est_h2_limits_default(est_h2_limits_t *l);

/* Why the connection must go: the close reason (est_close_reason_t), the GOAWAY code and text */
typedef struct est_h2_refusal {
    int reason;
    uint32_t error_code;
    const char *debug; /* static */
} est_h2_refusal_t;

typedef struct est_h2_body_stream {
    uint32_t id;
    uint64_t bytes;
    uint64_t last_ms; /* its HEADERS or its last DATA */
} est_h2_body_stream_t;

/* The state of one connection; embed it (no allocation). Fields are private. */
typedef struct est_h2_guard {
    est_h2_limits_t lim;
    size_t pos;          /* next byte to inspect, as an offset in the unconsumed input */
    size_t skip;         /* payload bytes of the current frame still to pass over */
    uint32_t preface_left;
    /* the header block held back (HEADERS seen, END_HEADERS not yet) */
    int blk_open;
    int blk_started;     /* a HEADERS or CONTINUATION frame has begun arriving (timeout runs) */
    size_t blk_off;      /* its HEADERS frame's offset in the unconsumed input */
    uint32_t blk_stream;
    uint32_t blk_wire;
    uint64_t blk_started_ms;
    int blk_bodyless;    /* the block opens a request whose HEADERS carries END_STREAM */
    size_t blk_frag_rel, blk_frag_len, blk_first_end_rel, blk_total; /* the HEADERS fragment, relative to blk_off */
    uint32_t max_stream;      /* highest stream the client opened */
    uint32_t last_accepted;   /* highest stream whose header block was passed on */
    /* counting windows */
    uint64_t win_start_ms;
    uint32_t resets, control;
    uint64_t last_request_ms; /* a HEADERS opening a stream, or DATA */
    /* request bodies not complete yet */
    est_h2_body_stream_t bodies[EST_H2_MAX_BODY_STREAMS];
    uint32_t num_bodies;
    uint64_t body_total;
    /* the shadow HPACK dynamic table: entry lengths, newest at ring[(head + 0) % N] */
    struct {
        uint16_t name_len, value_len;
        uint8_t cl; /* 1: the name is content-length; 2: its value is not "0" */
    } ring[EST_H2_HPACK_MAX_ENTRIES];
    uint32_t ring_head, ring_count;
    uint32_t table_size, table_capacity;
} est_h2_guard_t;

void est_h2_guard_init(est_h2_guard_t *g, const est_h2_limits_t *lim, uint64_t now_ms);

/*
 * Inspects `buf[0, len)`: every byte libh2o has not consumed yet (the bytes before the guard's
 * position were inspected by earlier calls and are still at the front). Returns 0 and sets
 * *release: the leading bytes that may be handed to libh2o now (the rest is a header block
 * held until it is complete, or an incomplete frame, which libh2o would not consume anyway).
 * Returns -1 and fills *r when the connection must be refused.
 */
int est_h2_guard_feed(est_h2_guard_t *g, const uint8_t *buf, size_t len, uint64_t now_ms, size_t *release, est_h2_refusal_t *r);

/* libh2o consumed `n` leading bytes (n <= the last *release) */
void est_h2_guard_consumed(est_h2_guard_t *g, size_t n);

/*
 * Time-driven limits: a header block unfinished after header_timeout_ms, and a connection with
 * no open request that carried none for idle_timeout_ms (`open_requests` > 0 keeps it alive).
 * 0 or -1 with *r filled.
 */
int est_h2_guard_tick(est_h2_guard_t *g, uint64_t now_ms, size_t open_requests, est_h2_refusal_t *r);

/*
 * client_body_timeout (SPEC "Client limits"): the streams whose request body had no DATA for
 * body_timeout_ms, up to `cap` of them, are written to ids[] and forgotten (the caller resets
 * them); returns how many. Only streams whose header block was passed on are reported (a held
 * block is the header timeout's).
 */
size_t est_h2_guard_stalled(est_h2_guard_t *g, uint64_t now_ms, uint32_t *ids, size_t cap);

/* request bodies are in progress (the body timeout runs) */
int est_h2_guard_has_bodies(const est_h2_guard_t *g);

/* Writes a RST_STREAM frame (RFC 9113 §6.4) into out (13 bytes); returns its length (0 if cap is too small) */
size_t est_h2_encode_rst_stream(uint8_t *out, size_t cap, uint32_t stream_id, uint32_t error_code);

/* Writes a PING frame (RFC 9113 §6.7) with an all-zero payload (17 bytes); returns its length */
size_t est_h2_encode_ping(uint8_t *out, size_t cap);

/* a header block is being held or is arriving (the header timeout runs) */
int est_h2_guard_in_block(const est_h2_guard_t *g);

/* the GOAWAY's last stream id: the highest stream libh2o was given */
uint32_t est_h2_guard_last_stream(const est_h2_guard_t *g);

/* Writes a GOAWAY frame (RFC 9113 §6.8) into out; returns its length (0 if cap is too small) */
size_t est_h2_encode_goaway(uint8_t *out, size_t cap, uint32_t last_stream, uint32_t error_code, const char *debug);

/*
 * (exposed for tests) The decoded length of a Huffman-coded HPACK string (RFC 7541 §5.2,
 * Appendix B), or -1 when it is invalid (EOS inside, padding over 7 bits or not all ones).
 */
int64_t est_h2_huffman_decoded_len(const uint8_t *src, size_t len);

#endif
