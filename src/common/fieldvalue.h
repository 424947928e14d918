/*
 * estuary - pure helpers over HTTP field values, shared by the request parser (h1/parse.c),
 * the upstream response parser (upstream/h1wire.c) and the forwarded-header rules
 * (http/request.c). libc only.
 */
#ifndef EST_COMMON_FIELDVALUE_H
#define EST_COMMON_FIELDVALUE_H

#include <stddef.h>
#include <stdint.h>

/*
 * One element of a comma-separated list (RFC 9110 5.6.1), OWS trimmed, possibly empty (the
 * caller decides whether empty elements are an error or skipped). *cur starts at the value and
 * becomes NULL after the last element; returns 0 once the list is done:
 *
 *     const char *cur = v, *el;
 *     size_t el_len;
 *     while (est_list_next(&cur, v + len, &el, &el_len)) ...
 */
int est_list_next(const char **cur, const char *end, const char **el, size_t *el_len);

/* 1 when the list `v` names `tok` (ASCII case-insensitive), e.g. "close" in Connection */
int est_list_has_token(const char *v, size_t len, const char *tok, size_t tok_len);

/* 1*DIGIT with no sign or whitespace, up to 2^64-1: 0 with *out set, or -1 */
int est_parse_decimal(const char *v, size_t len, uint64_t *out);

/*
 * Content-Length = 1*DIGIT, possibly sent as a list of identical values (RFC 9112 6.3 item 5).
 * Returns 0 with *out set, -1 when an element is empty or not digits (or over 2^64-1), -2
 * when the values differ.
 */
int est_parse_content_length(const char *v, size_t len, uint64_t *out);

/* the value of one hex digit (either case), or -1 */
static inline int est_hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

#endif
