/*
 * estuary - what the HTTP/1.1 request parser (parse.c) and the chunked decoder (chunked.c)
 * share: the byte classes and the error helpers. Internal to src/h1/; libc only, like them.
 */
#ifndef EST_H1_PARSE_INTERNAL_H
#define EST_H1_PARSE_INTERNAL_H

#include "h1/parse.h"

/* byte classes */
enum {
    C_TCHAR = 1,  /* token character (RFC 9110 5.6.2) */
    C_VALUE = 2,  /* allowed in a field value: HTAB, SP, VCHAR, obs-text (RFC 9110 5.5) */
    C_TARGET = 4, /* allowed in a request target: 0x21-0x7e but '#': a fragment is no part of a
                   * request target (RFC 9112 3.2), and a hop that cut the target there would
                   * route a path other than ours */
    C_HOST = 8,   /* allowed in a reg-name host: ALPHA DIGIT - . _ ~ */
    C_HEX = 16,   /* HEXDIG */
};

/* the class bits of each byte (parse.c) */
extern const unsigned char est_h1_ctype[256];

static inline int est_h1_is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* --- errors: fixed text only, never request bytes --- */

static inline int est_h1_fail(est_h1_error_t *err, int status, const char *code, const char *message)
{
    err->status = status;
    err->code = code;
    err->message = message;
    return -1;
}

static inline int est_h1_bad(est_h1_error_t *err, const char *message)
{
    return est_h1_fail(err, 400, "bad_request", message);
}

#endif
