/*
 * estuary - the auth stage's pure parts (auth.c), exposed for unit tests: the Authorization
 * header's Bearer credentials, which algorithms a key can serve, and the edit of the headers
 * sent upstream for forward_claims.
 */
#ifndef EST_POLICY_AUTH_INTERNAL_H
#define EST_POLICY_AUTH_INTERNAL_H

#include <stddef.h>
#include <h2o.h>

#include "policy/jwk.h"

typedef enum {
    EST_BEARER_OK = 0,    /* *token is the b64token */
    EST_BEARER_MALFORMED, /* the scheme is Bearer but the rest is not 1*SP b64token */
    EST_BEARER_OTHER,     /* another auth-scheme (Basic, ...): no Bearer credentials */
} est_bearer_parse_t;

/* Reads an Authorization value as RFC 6750 §2.1 credentials: "Bearer" (case-insensitive, RFC
 * 9110 §11.1) 1*SP b64token, b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" )
 * *"=", nothing after it. *token points into `value`. */
est_bearer_parse_t est_auth_parse_bearer(const char *value, size_t len, h2o_iovec_t *token);

/* The EST_JWA_* bits `key` may verify: by its type (HS* with an "oct" secret at least as long
 * as the hash, RFC 7518 §3.2; RS and PS with RSA; ES256/ES384 with P-256/P-384; EdDSA with
 * Ed25519), narrowed to its own "alg" when it has one. */
unsigned est_auth_key_algorithms(const est_jwk_t *key);

/* Rebuilds the header array `*hdrs` (`*num` entries) in `pool` without any header whose
 * (lower-case) name is one of `drop` (num_drop names), then appends the `num_add` headers of
 * `add`. Leaves the array as it is when there is nothing to drop or add. */
void est_auth_edit_headers(h2o_mem_pool_t *pool, h2o_header_t **hdrs, size_t *num, const h2o_iovec_t *drop, size_t num_drop,
                           const h2o_header_t *add, size_t num_add);

#endif
