#ifndef ESTUARY_POLICY_JWK_H
#define ESTUARY_POLICY_JWK_H

#include <stddef.h>

#include <openssl/evp.h>

/* A JSON Web Key Set (RFC 7517) turned into OpenSSL EVP keys, ready for JWS verification.
 *
 * Supported members (RFC 7518 §6): "RSA" (n, e; modulus 2048..8192 bits), "EC" (crv P-256 or
 * P-384, x, y; the point is checked to be on the curve), "OKP" (RFC 8037: crv Ed25519, x), and
 * "oct" (k: an HMAC secret). "kid", "alg" and "use" are kept. Keys of another kty or crv, and keys
 * whose "use" is present and not "sig", are skipped (counted in `skipped`), not an error: an
 * identity provider may publish encryption keys or newer key types beside ours. A key whose
 * members are present but malformed (bad base64url, point off the curve, short modulus) is
 * skipped too. Embedded certificates (x5c) are ignored: keys come from their raw members only.
 *
 * Bounds (a JWKS reply comes from the network): a document over EST_JWKS_MAX_BYTES is refused
 * before parsing; more than EST_JWKS_MAX_KEYS usable keys refuses the whole set (a hostile or
 * broken provider; the caller keeps serving its last good set), and more than
 * EST_JWKS_MAX_ENTRIES entries in "keys" is refused before any key is built. Parsing is linear
 * in the document; key lookup is linear over at most EST_JWKS_MAX_KEYS keys.
 *
 * A set is immutable once built and may be shared read-only between threads. */

#define EST_JWKS_MAX_BYTES (1024 * 1024)
#define EST_JWKS_MAX_KEYS 100
#define EST_JWKS_MAX_ENTRIES 10000
#define EST_JWK_MAX_OCT_BYTES 1024

typedef enum {
    EST_JWK_RSA = 1,
    EST_JWK_EC_P256,
    EST_JWK_EC_P384,
    EST_JWK_ED25519,
    EST_JWK_OCT,
} est_jwk_type_t;

typedef struct st_est_jwk_t {
    est_jwk_type_t type;
    char *kid;             /* NULL when absent */
    char *alg;             /* NULL when absent; when present, a token must use exactly this alg */
    EVP_PKEY *pkey;        /* asymmetric keys; NULL for EST_JWK_OCT */
    unsigned char *secret; /* EST_JWK_OCT only */
    size_t secret_len;
} est_jwk_t;

typedef struct st_est_jwks_t {
    est_jwk_t *keys;
    size_t count;
    size_t skipped; /* entries ignored (unknown kty/crv, use != "sig", malformed members) */
} est_jwks_t;

/* Parses a JWKS document ({"keys": [...]}) of `len` bytes. Returns a new set (free it with
 * est_jwks_free), or NULL with a short reason in `err` (capacity `errlen`, may be 0). A set
 * with zero usable keys is returned (count 0), not an error: the caller decides. */
est_jwks_t *est_jwks_parse(const char *json, size_t len, char *err, size_t errlen);

/* A set of one "oct" key holding `len` raw secret bytes (the `secret_file` of a policy; the
 * caller strips the one trailing newline). NULL when len is 0 or over EST_JWK_MAX_OCT_BYTES. */
est_jwks_t *est_jwks_from_secret(const unsigned char *secret, size_t len);

void est_jwks_free(est_jwks_t *set);

/* The key with this kid (exact bytes), or NULL. Borrowed from the set. */
const est_jwk_t *est_jwks_find_kid(const est_jwks_t *set, const char *kid);

#endif
