/*
 * estuary - W3C Trace Context headers (https://www.w3.org/TR/trace-context/): pure functions
 * over bytes, no allocation, fuzzed (tests/fuzz/fuzz_traceparent.c).
 */
#ifndef EST_TRACE_TRACEPARENT_H
#define EST_TRACE_TRACEPARENT_H

#include <stddef.h>
#include <stdint.h>

#define EST_TRACEPARENT_LEN 55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define EST_TRACESTATE_MAX 512 /* longer tracestate values are dropped, not passed on */
#define EST_TRACE_FLAG_SAMPLED 0x01

typedef struct est_traceparent {
    uint8_t trace_id[16];
    uint8_t parent_id[8];
    uint8_t flags;
} est_traceparent_t;

/*
 * Parses a traceparent value (§3.2): version 00 is exactly 55 characters of lower-case hex
 * fields "00-TRACEID-PARENTID-FLAGS"; a higher version (not ff) is read for its first four
 * fields when they are well formed and followed by nothing or by '-' (§4.3: future versions
 * may append fields). All-zero trace or parent ids and version ff are invalid. Returns 0 and
 * fills `out`, or -1 (out untouched).
 */
int est_traceparent_parse(const char *s, size_t len, est_traceparent_t *out);

/* Writes "00-<trace_id>-<span_id>-<flags>" (EST_TRACEPARENT_LEN bytes, no NUL) at `out` */
void est_traceparent_format(char *out, const uint8_t trace_id[16], const uint8_t span_id[8], uint8_t flags);

/*
 * 1 when a tracestate value may be passed on as it came: 1..EST_TRACESTATE_MAX bytes of
 * printable ASCII (and tabs), no CR, LF or NUL (§3.3: a value we cannot vouch for is dropped,
 * never repaired).
 */
int est_tracestate_ok(const char *s, size_t len);

/* `n` bytes as 2n lower-case hex digits (no NUL) */
void est_hex_lower(char *out, const uint8_t *bytes, size_t n);

#endif
