/*
 * estuary - a RESP2 reply parser (the Redis serialization protocol, version 2,
 * https://redis.io/docs/reference/protocol-spec/), pure: bytes in, a bounded tree out.
 *
 * Everything it reads comes from the network and is treated as hostile. It accepts the five
 * RESP2 types: simple string (+), error (-), integer (:), bulk string ($, $-1 = nil) and array
 * (*, *-1 = nil array), arrays nested up to EST_RESP_MAX_DEPTH, every line ended by CRLF. The
 * replies estuary expects are short (an array of four integers, an error line), so a reply is
 * refused as soon as it is known to exceed the limits below, even before it is complete: a
 * server cannot make the reader buffer more than EST_RESP_MAX_REPLY bytes for one reply.
 * RESP3 types (and inline replies) are refused: the client never sends HELLO 3.
 */
#ifndef EST_POLICY_REDIS_RESP_H
#define EST_POLICY_REDIS_RESP_H

#include <stddef.h>
#include <stdint.h>

#define EST_RESP_MAX_REPLY 4096 /* bytes of one reply, all of it */
#define EST_RESP_MAX_NODES 32   /* values in one reply, the arrays themselves included */
#define EST_RESP_MAX_DEPTH 4    /* arrays within arrays */

typedef enum est_resp_type {
    EST_RESP_SIMPLE = 0, /* +OK */
    EST_RESP_ERROR,      /* -ERR ... */
    EST_RESP_INTEGER,    /* :42 */
    EST_RESP_BULK,       /* $3 foo */
    EST_RESP_NIL,        /* $-1 */
    EST_RESP_ARRAY,      /* *2 ... */
    EST_RESP_NIL_ARRAY,  /* *-1 */
} est_resp_type_t;

/* one value; a reply is its values in pre-order (an array is followed by its elements) */
typedef struct est_resp_node {
    est_resp_type_t type;
    int64_t integer; /* EST_RESP_INTEGER: the value; EST_RESP_ARRAY: the number of elements */
    const char *str; /* SIMPLE/ERROR/BULK: borrowed from the parsed buffer (not NUL-terminated) */
    size_t len;
} est_resp_node_t;

typedef struct est_resp_reply {
    est_resp_node_t nodes[EST_RESP_MAX_NODES];
    size_t num_nodes; /* >= 1 after a successful parse */
} est_resp_reply_t;

typedef enum est_resp_status {
    EST_RESP_OK = 0,  /* one whole reply parsed: *consumed bytes */
    EST_RESP_PARTIAL, /* the bytes so far are a valid beginning: read more */
    EST_RESP_INVALID, /* not RESP2, or over a limit: close the connection */
} est_resp_status_t;

/*
 * Parses the reply at the start of buf[0..len). On EST_RESP_OK, *out holds it (its strings
 * point into buf) and *consumed is its size; the bytes after it (pipelined replies) are not
 * looked at. *out and *consumed are unspecified otherwise. Never reads past buf + len.
 */
est_resp_status_t est_resp_parse(const char *buf, size_t len, est_resp_reply_t *out, size_t *consumed);

/* 1 when the node is an error whose first word (the error code) is `code` ("NOSCRIPT") */
int est_resp_error_is(const est_resp_node_t *n, const char *code);

#endif
