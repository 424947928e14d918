/*
 * estuary - libFuzzer driver for JWT verification and JWKS parsing (src/policy).
 *
 * Input: the first byte picks the mode (its value modulo 3), the rest is the data.
 *   0: a compact JWS, verified against a fixed key set (the RSA, P-256, P-384, Ed25519 and
 *      HMAC keys of tests/unit/policy/data/jwks.json, so the seed tokens verify and reach the
 *      claim checks) under a policy allowing every algorithm, at that data's clock;
 *      on success the scope and claim-text helpers run on the claims.
 *   1: a JWKS document, parsed into a key set; every key found is then looked up by kid.
 *   2: a JSON claim set, run through the claim checks, the scope check and claim text.
 * The checks: no crash, no leak, and the documented invariants (claims returned only on
 * success, claim text NUL-terminated within its buffer, key counts within the bounds).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/jwt.h"

#define NOW 1700000000

static const char fixed_jwks[] =
    "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"rsa1\",\"use\":\"sig\",\"n\":\"t9fNkxsWeGLbmsoSQDH8Btbxq14LPlaxbjCQ9E5jzmg_WTDZ"
    "FLHDpXR811K5-9x9cLoLoXiSkJ5lOGB-0yzVrLpAPf1UiT19smismZ9WLU236_St7Pw4DVd8yraQ0I_Feo-wiAzqgsoTBABHWG9q"
    "pFt21PHJ4bhCZk7NAOhAxSzGIGdG3pNWL6s3iZ2WCffSn0P06-Rk1SiyiKnBwTX0peH-z9WmObqfGAhyc7Mgd06wntETY6YREQle"
    "pifmw18zkvJgmi3vBCgAsmOpNEdpGoR45TPtZjlQXXwbn8AD0nHfpbTW4OjPAmAcgFPeGpQmFOXSK7TPTi5KsvTSgabcpw\",\"e\":"
    "\"AQAB\"},{\"kty\":\"EC\",\"kid\":\"ec256\",\"crv\":\"P-256\",\"x\":\"qNmbGj1fOrvCqZ4L2UuZCkaiqn_pHGNSKzPzTJ9GXA8\",\"y"
    "\":\"lbAYytOQ0YfpqCTHGXU_BB7-8Y3PquzB28j4i8Ownzc\"},{\"kty\":\"EC\",\"kid\":\"ec384\",\"crv\":\"P-384\",\"x\":\"Rgzm6u"
    "L8r5FZf7I21hLcjq9Hfb53v-9-igezbm5R0QD2tbEPuVSHauGYXz97eDp_\",\"y\":\"Scc-GvnzKyfBHFyVZvT9AvcX7s8zJS9ORWm"
    "ts1FQohjAZEQSHKMOJdKv8rChi_NW\"},{\"kty\":\"OKP\",\"kid\":\"ed1\",\"crv\":\"Ed25519\",\"x\":\"vIuv66Cma1PFKvceK7YQwl"
    "hitBNRU85pZkxXfY-oBrI\"},{\"kty\":\"oct\",\"kid\":\"hs1\",\"k\":\"IIfp5j5V6mG3pNVtyKpRWLbGLDDi0x8aNxXMFVeEaImvPO"
    "vmI2qmw8yiLVdrev-kmJ8cOeyX0H0z8yMVCS10cg\"}]}";

static const char *const audiences[] = {"orders-api"};
static const char *const scopes[] = {"orders:read", "admin"};

static void use_claims(const json_t *claims)
{
    char buf[64];
    est_jwt_has_scopes(claims, scopes, 2);
    static const char *const names[] = {"sub", "tenant", "scope", "exp", "aud"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        long n = est_jwt_claim_text(claims, names[i], buf, sizeof(buf));
        if (n >= 0 && ((size_t)n >= sizeof(buf) || buf[n] != '\0'))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static est_jwks_t *keys;
    if (keys == NULL && (keys = est_jwks_parse(fixed_jwks, sizeof(fixed_jwks) - 1, NULL, 0)) == NULL)
        abort();
    if (size == 0)
        return 0;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    est_jwt_policy_t policy = {.algorithms = 0xffffffffu, .issuer = "https://idp.test/", .audiences = audiences,
                               .num_audiences = 1, .leeway = 30, .require_exp = data[0] & 0x80};

    switch (data[0] % 3) {
    case 0: {
        json_t *claims = NULL;
        int64_t exp = 0;
        est_jwt_result_t r = est_jwt_verify(in, len, keys, &policy, NOW, &claims, &exp);
        if ((r == EST_JWT_OK) != (claims != NULL) || est_jwt_strerror(r) == NULL)
            abort();
        if (claims != NULL) {
            use_claims(claims);
            json_decref(claims);
        }
        break;
    }
    case 1: {
        char err[128];
        est_jwks_t *set = est_jwks_parse(in, len, err, sizeof(err));
        if (set != NULL) {
            if (set->count > EST_JWKS_MAX_KEYS)
                abort();
            for (size_t i = 0; i < set->count; i++)
                if (set->keys[i].kid != NULL && est_jwks_find_kid(set, set->keys[i].kid) == NULL)
                    abort();
            est_jwks_free(set);
        }
        break;
    }
    default: {
        json_t *claims = json_loadb(in, len, 0, NULL);
        if (json_is_object(claims)) {
            int64_t exp;
            est_jwt_check_claims(claims, &policy, NOW, &exp);
            use_claims(claims);
        }
        json_decref(claims);
        break;
    }
    }
    return 0;
}
