#ifndef ESTUARY_POLICY_JWT_H
#define ESTUARY_POLICY_JWT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "policy/jwk.h"

/* Verification of a compact JWS (RFC 7515 §7.1) carrying JWT claims (RFC 7519), against a key
 * set and a policy. Pure: no I/O, no global state, the clock is passed in.
 *
 * Order of work, cheapest refusals first: size and shape (exactly three base64url segments,
 * at most EST_JWT_MAX_TOKEN bytes) before any decoding; header (alg, kid, typ; any "crit" is
 * refused, RFC 7515 §4.1.11, which also refuses unencoded payloads, RFC 7797); the alg must be
 * in the policy's list, and "none" never is; the key is chosen by kid (or, without a kid, the
 * only key of the set that fits the alg); the key must fit the alg (HMAC only with "oct" keys,
 * signatures only with asymmetric keys of the right type and curve: no algorithm confusion) and
 * its own "alg", when present, must equal the token's; then the signature; only then the
 * payload is parsed and the claims checked. Header parameters naming other keys (jwk, jku,
 * x5u, x5c) are ignored: keys come from the configured set only. */

#define EST_JWT_MAX_TOKEN 8192

/* JWS algorithms (RFC 7518 §3.1, RFC 8037 §3.1), as bits of a policy's allowed set. */
enum {
    EST_JWA_HS256 = 1u << 0,
    EST_JWA_HS384 = 1u << 1,
    EST_JWA_HS512 = 1u << 2,
    EST_JWA_RS256 = 1u << 3,
    EST_JWA_RS384 = 1u << 4,
    EST_JWA_RS512 = 1u << 5,
    EST_JWA_PS256 = 1u << 6,
    EST_JWA_PS384 = 1u << 7,
    EST_JWA_PS512 = 1u << 8,
    EST_JWA_ES256 = 1u << 9,
    EST_JWA_ES384 = 1u << 10,
    EST_JWA_EDDSA = 1u << 11,
};

/* The bit of the algorithm named `name` (case-sensitive, RFC 7518 names), 0 when unknown.
 * "none" is unknown: it can never be allowed. The one table of algorithm names, inline so that
 * the config library (which does not link this one) reads "algorithms" with it too. */
static inline unsigned est_jwa_from_name(const char *name)
{
    static const struct {
        char name[6];
        unsigned bit;
    } names[] = {{"HS256", EST_JWA_HS256}, {"HS384", EST_JWA_HS384}, {"HS512", EST_JWA_HS512}, {"RS256", EST_JWA_RS256},
                 {"RS384", EST_JWA_RS384}, {"RS512", EST_JWA_RS512}, {"PS256", EST_JWA_PS256}, {"PS384", EST_JWA_PS384},
                 {"PS512", EST_JWA_PS512}, {"ES256", EST_JWA_ES256}, {"ES384", EST_JWA_ES384}, {"EdDSA", EST_JWA_EDDSA}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(name, names[i].name) == 0)
            return names[i].bit;
    return 0;
}

typedef enum {
    EST_JWT_OK = 0,
    EST_JWT_MALFORMED,       /* not a compact JWS, bad base64url, header or payload not a JSON object */
    EST_JWT_TOO_LARGE,       /* over EST_JWT_MAX_TOKEN */
    EST_JWT_ALG_NOT_ALLOWED, /* alg unknown, "none", or not in the policy's list */
    EST_JWT_CRIT,            /* a "crit" header parameter */
    EST_JWT_UNKNOWN_KID,     /* no key with that kid, or no kid and not exactly one fitting key */
    EST_JWT_KEY_MISMATCH,    /* the key does not fit the alg (type, curve, or its own "alg") */
    EST_JWT_BAD_SIGNATURE,
    EST_JWT_EXPIRED,
    EST_JWT_NOT_YET_VALID,
    EST_JWT_BAD_ISSUER,
    EST_JWT_BAD_AUDIENCE,
    EST_JWT_BAD_CLAIMS, /* exp/nbf not a number, exp required but missing */
    EST_JWT_INTERNAL,   /* out of memory, OpenSSL failure */
} est_jwt_result_t;

/* A short stable token for 401 bodies and the `reason` label of metrics ("expired",
 * "bad_signature", "unknown_kid", ...). Never NULL. */
const char *est_jwt_strerror(est_jwt_result_t r);

typedef struct st_est_jwt_policy_t {
    unsigned algorithms;          /* EST_JWA_* bits; 0 accepts nothing */
    const char *issuer;           /* NULL: "iss" not checked; else must equal exactly */
    const char *const *audiences; /* NULL or num_audiences == 0: "aud" not checked */
    size_t num_audiences;
    int64_t leeway;  /* seconds of clock skew tolerated on exp and nbf */
    int require_exp; /* a token without "exp" is refused (EST_JWT_BAD_CLAIMS) */
} est_jwt_policy_t;

/* Verifies `token` (`len` bytes, not NUL-terminated) against `keys` (borrowed; NULL, no key set
 * yet, gives EST_JWT_UNKNOWN_KID) and `policy` at time `now` (seconds since the epoch). On EST_JWT_OK, *claims (when claims is not NULL) receives the
 * payload object, owned by the caller (json_decref), and *exp its "exp" (INT64_MAX when
 * absent). On failure *claims is left NULL. */
est_jwt_result_t est_jwt_verify(const char *token, size_t len, const est_jwks_t *keys, const est_jwt_policy_t *policy, int64_t now,
                                json_t **claims, int64_t *exp);

/* The claim checks alone (exp, nbf with leeway; iss; aud), on a borrowed payload object. */
est_jwt_result_t est_jwt_check_claims(const json_t *claims, const est_jwt_policy_t *policy, int64_t now, int64_t *exp);

/* 1 when every one of `required` (num) scopes is granted by the claims: the "scope" claim (a
 * space-separated string, RFC 8693 §4.2) or the "scp" claim (an array of strings, or a
 * space-separated string). Scopes match as exact tokens. 0 otherwise. `claims` is borrowed. */
int est_jwt_has_scopes(const json_t *claims, const char *const *required, size_t num);

/* Writes the claim `name` as text into buf (capacity cap, NUL-terminated): a string as is, an
 * integer in decimal, a real with %.17g, true/false. Returns the length, or -1 when the claim
 * is absent, of another type (object, array, null), contains a NUL or control character (it
 * may become a header value), or does not fit. `claims` is borrowed. */
long est_jwt_claim_text(const json_t *claims, const char *name, char *buf, size_t cap);

#endif
