/*
 * estuary - HTTP methods as a bit set: what a route allows (config), what a request asks
 * (handlers, metrics). Pure, libc only.
 */
#ifndef EST_COMMON_METHOD_H
#define EST_COMMON_METHOD_H

#include <stddef.h>

enum {
    EST_METHOD_GET = 1 << 0,
    EST_METHOD_HEAD = 1 << 1,
    EST_METHOD_POST = 1 << 2,
    EST_METHOD_PUT = 1 << 3,
    EST_METHOD_PATCH = 1 << 4,
    EST_METHOD_DELETE = 1 << 5,
    EST_METHOD_OPTIONS = 1 << 6,
};
#define EST_METHOD__COUNT 7

/* bit for a request's method (case-sensitive, RFC 9110 9.1: "get" is not GET), 0 if unknown */
unsigned est_method_from_request(const char *name, size_t len);
/* canonical upper-case name of a single bit, NULL for anything else */
const char *est_method_name(unsigned bit);

#endif
