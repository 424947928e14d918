/*
 * estuary - JSON response bodies: the merged document and estuary's own error bodies.
 *
 * Output format (one line, no trailing newline), the same as jansson's json_dumps(v, 0):
 * separators ", " and ": ", keys in object order (insertion order, see merge.h), strings as
 * UTF-8 with only '"', '\\' and control characters escaped ("\n", "\u001f", ...).
 *
 * Unlike jansson's dumper, reals are written in the shortest form that reads back as the same
 * double (9.95 stays 9.95, not 9.9499999999999993), with ".0" added to integral reals as
 * jansson does (1e5 -> 100000.0). One pass into one growing buffer, no intermediate copies.
 */
#ifndef EST_AGGREGATE_JSONUTIL_H
#define EST_AGGREGATE_JSONUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

/*
 * Serializes `v` (BORROWED; any JSON value). Returns a malloc'd NUL-terminated string (free
 * with free()) and its length without the NUL in *len, or NULL when out of memory.
 */
char *est_json_dumps_compact(const json_t *v, size_t *len);

/* writes the decimal digits of `v` so that they end at `end` (at most 20), returns where they
 * start: number formatting without printf (JSON dump, access log) */
char *est_u64_digits(char *end, uint64_t v);

/*
 * Builds {"error": {"status": 504, "code": "upstream_timeout", "message": "...",
 * "request_id": "..."}}. `code` must not be NULL; `message` and `request_id` may be NULL,
 * which leaves that member out. Strings are escaped, and need not be UTF-8 (a request path
 * quoted in a message): a byte that does not start a well-formed UTF-8 sequence is written as
 * "\ufffd", so the body is always valid JSON.
 * Returns a malloc'd NUL-terminated string (free with free()) and its length in *len, or NULL
 * when out of memory.
 */
char *est_error_body(int status, const char *code, const char *message, const char *request_id, size_t *len);

#endif
