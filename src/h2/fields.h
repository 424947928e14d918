/*
 * estuary - HTTP/2 requests held to the field rules of RFC 9113 §8.2-§8.3 (SPEC "Request
 * framing": "HTTP/2 requests are held to the same field rules"), checked on the h2o_req_t
 * libh2o built, before the request goes anywhere (docs/http2.md, "Field rules").
 *
 * libh2o 2.2.5 already refuses most malformed header blocks itself (invalid name or value
 * characters: its own 400; connection-specific tokens, pseudo-headers after regular fields,
 * unknown or repeated pseudo-headers: GOAWAY PROTOCOL_ERROR; a missing pseudo-header or a
 * content-length that DATA does not match: RST_STREAM PROTOCOL_ERROR). What reaches our handler
 * is checked again here, with what libh2o lets through: Keep-Alive and Proxy-Connection,
 * leading or trailing whitespace in a value (§8.2.1), a method that is not a token, a :path
 * that is empty or not origin-form ("*" only for OPTIONS, §8.3.1). Pure functions, no
 * allocation; the caller answers a refusal with 400 bad_request.
 */
#ifndef EST_H2_FIELDS_H
#define EST_H2_FIELDS_H

#include <stddef.h>

struct st_h2o_req_t;

/*
 * One regular field (not a pseudo-header) of an HTTP/2 request: NULL when it is allowed, else
 * a static message naming the rule broken (RFC 9113 §8.2.1 characters and whitespace, §8.2.2
 * connection-specific fields, TE other than "trailers").
 */
const char *est_h2_field_check(const char *name, size_t name_len, const char *value, size_t value_len);

/* :method is a token (RFC 9110 §9.1, §5.6.2); NULL when it is, else a static message */
const char *est_h2_method_check(const char *method, size_t len);

/* :path is non-empty origin-form without CTL or space, or "*" for OPTIONS (RFC 9113 §8.3.1) */
const char *est_h2_path_check(const char *method, size_t method_len, const char *path, size_t path_len);

/*
 * The whole request as libh2o built it (req->input.method, req->input.path, req->headers):
 * NULL when it may go on, else a static message for a 400 bad_request. A request that is not
 * HTTP/2 (req->version < 0x200) is not checked (NULL): src/h1 holds HTTP/1.1 to RFC 9112.
 */
const char *est_h2_fields_check(const struct st_h2o_req_t *req);

#endif
