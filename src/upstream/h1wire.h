/*
 * estuary - the upstream HTTP/1.1 wire code as pure functions on bytes: no socket, no loop,
 * no allocation. client.c drives them from socket reads; the unit tests and the fuzz driver
 * drive them from byte strings.
 *
 * The response side is strict (RFC 9112 §6.3 and SPEC "Request framing", applied to what a
 * backend sends): a reply whose framing could be read two ways, or that carries an invalid
 * field line, is refused as a whole, so that nothing of it can reach the client and no byte
 * of it can be taken for the start of the next reply.
 */
#ifndef EST_UPSTREAM_H1WIRE_H
#define EST_UPSTREAM_H1WIRE_H

#include <stddef.h>
#include <stdint.h>
#include "common/phr.h"
#include "upstream/client.h"

#define EST_H1_MAX_HEAD_SIZE (64 * 1024) /* one response head, interim heads not counted */
#define EST_H1_MAX_HEADERS 128
#define EST_H1_MAX_CHUNK_EXT 4096      /* bytes of chunk extensions on one chunk-size line */
#define EST_H1_MAX_TRAILERS (64 * 1024) /* bytes of the trailer section (discarded) */

/* ---------------------------------------------------------------- request head */

/*
 * An upper bound of the size of the head that est_h1_write_request_head writes for `req`
 * with Host `host`.
 */
size_t est_h1_request_head_bound(const est_upstream_request_t *req, h2o_iovec_t host);
/*
 * Writes the request head (request line, Host, req->headers, Connection: upgrade when
 * want_upgrade, Content-Length when there is a body or the method is POST/PUT/PATCH, for a
 * streamed body (body_stream) Content-Length: body_length or, when that is UINT64_MAX,
 * Transfer-Encoding: chunked; the empty line) at `buf`, which holds est_h1_request_head_bound() bytes. Returns its length.
 */
size_t est_h1_write_request_head(char *buf, const est_upstream_request_t *req, h2o_iovec_t host);

/* ---------------------------------------------------------------- response head */

typedef enum { EST_H1_BODY_NONE, EST_H1_BODY_LENGTH, EST_H1_BODY_CHUNKED, EST_H1_BODY_CLOSE } est_h1_body_mode_t;

typedef struct est_h1_response {
    int minor_version;
    int status;
    size_t num_headers; /* in the caller's array; they point into the parsed bytes */
    int interim;        /* a 1xx other than 101: skip head_len bytes and parse the next head */
    int keepalive;      /* the connection may carry another request after this reply */
    est_h1_body_mode_t body_mode;
    uint64_t content_length; /* EST_H1_BODY_LENGTH */
} est_h1_response_t;

/*
 * Parses one response head at the start of buf[0..len) into `out` and headers[0..max_headers)
 * (the field lines point into `buf`). `is_head_request`: the request was HEAD (no body
 * follows, RFC 9112 §6.3 item 1). Returns the length of the head (> 0), -2 when more bytes
 * are needed, or -1 for a reply that must not be used, with *err set to a static reason: an
 * unparseable or too large head, obs-fold, an invalid field line (a bare LF, a CTL or NUL in
 * a value, a name that is not a token, e.g. whitespace before the colon), Transfer-Encoding
 * together with Content-Length, a Transfer-Encoding other than exactly "chunked",
 * Transfer-Encoding in an HTTP/1.0 reply, a Content-Length that is not a number or differs
 * between fields. Framing facts are not checked on an interim head.
 */
int est_h1_parse_response(const char *buf, size_t len, int is_head_request, struct phr_header *headers, size_t max_headers,
                          est_h1_response_t *out, const char **err);

/* ---------------------------------------------------------------- body */

typedef struct est_h1_body {
    est_h1_body_mode_t mode;
    uint64_t left; /* LENGTH: bytes to come; CHUNKED: of the current chunk */
    /* chunked decoder */
    unsigned char _state;
    unsigned char _digits;
    size_t _line;    /* bytes of chunk extensions on the current size line */
    size_t _trailer; /* bytes of the trailer section so far */
    int _colon;      /* a colon was seen on the current trailer line */
} est_h1_body_t;

typedef enum {
    EST_H1_BODY_ERROR = -1, /* invalid framing: *err is set */
    EST_H1_BODY_MORE = 0,   /* the body goes on */
    EST_H1_BODY_DONE = 1,   /* the body ended within the bytes given */
} est_h1_body_status_t;

/* Starts reading the body of the reply `r` */
void est_h1_body_init(est_h1_body_t *b, const est_h1_response_t *r);
/*
 * Reads buf[0..len), the next bytes of the body. The body bytes found there are moved to
 * buf[0..*decoded) (chunk framing removed in place; nothing is moved when `scan_only`, which
 * only checks). *used: input bytes that belong to the body (the rest, on DONE, are bytes
 * after the reply). Chunked framing is strict (RFC 9112 §7.1): 1*HEXDIG chunk sizes without
 * sign, prefix or overflow, optional whitespace only before a ";" extension, CRLF line ends,
 * the data followed by CRLF, field-line trailers without obs-fold (discarded), all bounded.
 */
est_h1_body_status_t est_h1_body_read(est_h1_body_t *b, char *buf, size_t len, int scan_only, size_t *decoded,
                                      size_t *used, const char **err);
/* The connection closed after the bytes read so far: 1 when that ends the body cleanly
 * (close-delimited, or already complete), 0 when the body was cut short. */
int est_h1_body_eof_ok(const est_h1_body_t *b);

#endif
