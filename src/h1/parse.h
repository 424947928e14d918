/*
 * estuary - strict HTTP/1.1 request parsing (RFC 9112), as pure functions over bytes.
 *
 * SPEC "Request framing (HTTP/1.1)": a gateway that reads a request one way while the hop
 * before or after it reads it another is a request-smuggling hole, so everything ambiguous is
 * an error here, never a guess. Nothing is allocated: the parsed request points into the
 * caller's buffer, and the chunked decoder works in place. Fuzzed (tests/fuzz/fuzz_h1_request.c).
 */
#ifndef EST_H1_PARSE_H
#define EST_H1_PARSE_H

#include <stddef.h>
#include <stdint.h>

#define EST_H1_MAX_HEAD (64 * 1024) /* request line + fields + final CRLF: over it, 431 */
#define EST_H1_MAX_FIELDS 100       /* over it, 431 */
#define EST_H1_MAX_TARGET (8 * 1024) /* request target: over it, 414 */

/* A parse failure: the status to answer with (400, 414, 417, 431, 501, 505), SPEC's error code
 * ("bad_request", "uri_too_long", ...) and a message for the JSON body. Both strings are static. */
typedef struct est_h1_error {
    int status;
    const char *code;
    const char *message;
} est_h1_error_t;

typedef struct est_h1_field {
    const char *name; /* as sent (case kept); a token (RFC 9110 5.1) */
    size_t name_len;
    const char *value; /* leading and trailing whitespace removed; no CR, LF or NUL */
    size_t value_len;
} est_h1_field_t;

typedef enum {
    EST_H1_FORM_ORIGIN = 0, /* "/path?query" */
    EST_H1_FORM_ABSOLUTE,   /* "http://host:port/path?query": routed by its path, Host from it */
    EST_H1_FORM_ASTERISK,   /* "*" (OPTIONS only) */
} est_h1_form_t;

typedef enum {
    EST_H1_BODY_NONE = 0,
    EST_H1_BODY_LENGTH, /* content_length bytes (possibly 0) */
    EST_H1_BODY_CHUNKED,
} est_h1_body_t;

typedef struct est_h1_request {
    const char *method; /* a token, case-sensitive */
    size_t method_len;
    const char *target; /* as sent on the request line */
    size_t target_len;
    est_h1_form_t form;
    const char *path; /* origin-form part: "/..." with the query; "/" for an absolute-form
                       * target without a path; "*" for the asterisk form */
    size_t path_len;
    int is_https;          /* absolute-form with "https://" */
    const char *authority; /* absolute-form: from the target; else the Host field; NULL for an
                            * HTTP/1.0 request without Host */
    size_t authority_len;
    int minor_version; /* 0 or 1 */
    est_h1_field_t fields[EST_H1_MAX_FIELDS]; /* every field as sent, in order, Host,
                                               * Content-Length and Transfer-Encoding included */
    size_t num_fields;
    est_h1_body_t body;
    uint64_t content_length; /* EST_H1_BODY_LENGTH */
    int keep_alive;      /* the connection may stay open after this exchange (version + Connection) */
    int expect_continue; /* "Expect: 100-continue" */
    int upgrade;         /* an Upgrade field and "upgrade" among the Connection options */
    size_t head_len;     /* bytes of the head, final CRLF included */
} est_h1_request_t;

/*
 * Parses the request head at buf[0..len).
 * Returns the head length (> 0) with *req filled; -2 when the head is not complete yet (the
 * caller reads more; when len is already EST_H1_MAX_HEAD or more, or the target seen so far is
 * over EST_H1_MAX_TARGET, this returns -1 with 431 / 414 instead, so the caller never buffers
 * more than the limits); -1 on a malformed or refused request, *err filled.
 * Empty lines before the request line (RFC 9112 2.2) are skipped and counted in head_len.
 * Each error is found at its first offending byte, so a prefix of the input returns either -2
 * or the same error as the whole input. Beyond SPEC's list: a target may not hold '#' (a
 * fragment is no part of a request target); a Host (or absolute-form authority) is a host of
 * ALPHA DIGIT - . _ ~ or an IP-literal, with an optional port of 1-5 digits <= 65535, and no
 * userinfo; CONNECT is 501. Expect and Upgrade are ignored in HTTP/1.0 (RFC 9110 10.1.1, 7.8).
 * Costs about 1.9k instructions for a 200-byte GET with 8 fields (x86-64, gcc -O2).
 */
int est_h1_parse_request(const char *buf, size_t len, est_h1_request_t *req, est_h1_error_t *err);

/*
 * Chunked transfer coding (RFC 9112 7.1), decoded in place, strictly: chunk sizes are 1 to 16
 * hex digits with no sign, prefix or whitespace, no overflow; chunk extensions are accepted and
 * skipped (bounded); every line ends in CRLF (a bare LF is an error); trailer fields are
 * validated like header fields and dropped, at most EST_H1_MAX_HEAD bytes in all.
 */
typedef struct est_h1_chunked {
    int _state;
    uint64_t _remaining; /* bytes left in the current chunk (data state) */
    size_t _line_len;    /* bytes of the current size/extension/trailer line seen */
    size_t _trailer_len; /* bytes of trailer seen */
    uint64_t decoded;    /* body bytes produced so far, all calls together */
} est_h1_chunked_t;

/* a decoder at the start of a body */
void est_h1_chunked_init(est_h1_chunked_t *d);

/*
 * Decodes buf[0..*len): the body bytes found are moved to the front of buf and *len is set to
 * their count. Returns -2 when the body is not finished (call again with the next bytes; none
 * of this call's input is kept, a partial line is remembered in *d), -1 on malformed input
 * (*err filled: 400 bad_request), or, when the last chunk and the trailers are complete, the
 * number of bytes of buf that follow the body (the next pipelined request, starting at
 * buf + (original len - return value)).
 */
int64_t est_h1_decode_chunked(est_h1_chunked_t *d, char *buf, size_t *len, est_h1_error_t *err);

#endif
