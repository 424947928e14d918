#include "policy/jwt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/hmac.h>
#include <openssl/rsa.h>

#include "policy/b64url.h"

#define JWT_MAX_ALG 16
#define JWT_MAX_KID 256

typedef enum { FAM_HS, FAM_RS, FAM_PS, FAM_ES, FAM_ED } alg_family_t;

/* what verification needs of each algorithm; names in est_jwa_from_name (jwt.h) */
struct alg_info {
    unsigned bit;
    alg_family_t family;
    const char *md; /* digest name; NULL for EdDSA (pure Ed25519 hashes internally) */
    est_jwk_type_t key_type;
    size_t coord_len; /* ES: bytes per coordinate of the raw r||s signature (RFC 7518 §3.4) */
};

static const struct alg_info algs[] = {
    {EST_JWA_HS256, FAM_HS, "SHA256", EST_JWK_OCT, 0},
    {EST_JWA_HS384, FAM_HS, "SHA384", EST_JWK_OCT, 0},
    {EST_JWA_HS512, FAM_HS, "SHA512", EST_JWK_OCT, 0},
    {EST_JWA_RS256, FAM_RS, "SHA256", EST_JWK_RSA, 0},
    {EST_JWA_RS384, FAM_RS, "SHA384", EST_JWK_RSA, 0},
    {EST_JWA_RS512, FAM_RS, "SHA512", EST_JWK_RSA, 0},
    {EST_JWA_PS256, FAM_PS, "SHA256", EST_JWK_RSA, 0},
    {EST_JWA_PS384, FAM_PS, "SHA384", EST_JWK_RSA, 0},
    {EST_JWA_PS512, FAM_PS, "SHA512", EST_JWK_RSA, 0},
    {EST_JWA_ES256, FAM_ES, "SHA256", EST_JWK_EC_P256, 32},
    {EST_JWA_ES384, FAM_ES, "SHA384", EST_JWK_EC_P384, 48},
    {EST_JWA_EDDSA, FAM_ED, NULL, EST_JWK_ED25519, 0},
};

static const struct alg_info *alg_lookup(const char *name)
{
    unsigned bit = est_jwa_from_name(name);
    for (size_t i = 0; bit != 0 && i < sizeof(algs) / sizeof(algs[0]); i++)
        if (algs[i].bit == bit)
            return &algs[i];
    return NULL;
}

const char *est_jwt_strerror(est_jwt_result_t r)
{
    switch (r) {
    case EST_JWT_OK:
        return "ok";
    case EST_JWT_MALFORMED:
        return "malformed";
    case EST_JWT_TOO_LARGE:
        return "too_large";
    case EST_JWT_ALG_NOT_ALLOWED:
        return "alg_not_allowed";
    case EST_JWT_CRIT:
        return "crit_unsupported";
    case EST_JWT_UNKNOWN_KID:
        return "unknown_kid";
    case EST_JWT_KEY_MISMATCH:
        return "key_mismatch";
    case EST_JWT_BAD_SIGNATURE:
        return "bad_signature";
    case EST_JWT_EXPIRED:
        return "expired";
    case EST_JWT_NOT_YET_VALID:
        return "not_yet_valid";
    case EST_JWT_BAD_ISSUER:
        return "bad_issuer";
    case EST_JWT_BAD_AUDIENCE:
        return "bad_audience";
    case EST_JWT_BAD_CLAIMS:
        return "bad_claims";
    case EST_JWT_INTERNAL:
        return "internal";
    }
    return "unknown";
}

/* Decodes a base64url segment and parses it as a JSON object (duplicate members refused:
 * two "alg" or two "exp" must not be read differently by two parsers). NULL on failure. */
static json_t *decode_json_segment(const char *seg, size_t len)
{
    unsigned char buf[EST_JWT_MAX_TOKEN];
    long n = est_b64url_decode(seg, len, buf, sizeof(buf));
    if (n <= 0)
        return NULL;
    json_error_t jerr;
    json_t *obj = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (obj != NULL && !json_is_object(obj)) {
        json_decref(obj);
        obj = NULL;
    }
    return obj;
}

/* A string member without embedded NUL and at most `max` bytes; NULL otherwise. */
static const char *bounded_string(const json_t *v, size_t max)
{
    if (!json_is_string(v) || json_string_length(v) > max || strlen(json_string_value(v)) != json_string_length(v))
        return NULL;
    return json_string_value(v);
}

static int key_fits(const est_jwk_t *k, const struct alg_info *a)
{
    return k->type == a->key_type;
}

/* Chooses the key for this token: the key with the token's kid that fits the alg; without a
 * kid in the token, the only key of the set that fits the alg. A token with a kid the set does
 * not know is still served by a set whose only fitting key has no kid (a secret_file); the
 * signature decides. Never tries several keys: one verification per token at most. */
static est_jwt_result_t pick_key(const est_jwks_t *keys, const struct alg_info *a, const char *kid,
                                 const est_jwk_t **out)
{
    const est_jwk_t *only = NULL;
    size_t fitting = 0;
    int kid_seen = 0;
    for (size_t i = 0; i < keys->count; i++) {
        const est_jwk_t *k = &keys->keys[i];
        if (kid != NULL && k->kid != NULL && strcmp(k->kid, kid) == 0) {
            kid_seen = 1;
            if (key_fits(k, a)) {
                *out = k;
                goto Found;
            }
        }
        if (key_fits(k, a)) {
            only = k;
            fitting++;
        }
    }
    if (kid_seen)
        return EST_JWT_KEY_MISMATCH;
    if (fitting != 1 || (kid != NULL && only->kid != NULL))
        return EST_JWT_UNKNOWN_KID;
    *out = only;
Found:
    /* RFC 7517 §4.4: a key restricted to one alg serves no other */
    if ((*out)->alg != NULL && est_jwa_from_name((*out)->alg) != a->bit)
        return EST_JWT_KEY_MISMATCH;
    return EST_JWT_OK;
}

static est_jwt_result_t verify_hmac(const struct alg_info *a, const est_jwk_t *k, const char *data, size_t len,
                                    const unsigned char *sig, size_t siglen)
{
    const EVP_MD *md = EVP_get_digestbyname(a->md);
    if (md == NULL)
        return EST_JWT_INTERNAL;
    size_t mdlen = (size_t)EVP_MD_get_size(md);
    /* RFC 7518 §3.2: the key must be at least as long as the hash output */
    if (k->secret_len < mdlen)
        return EST_JWT_KEY_MISMATCH;
    if (siglen != mdlen)
        return EST_JWT_BAD_SIGNATURE;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (HMAC(md, k->secret, (int)k->secret_len, (const unsigned char *)data, len, mac, &maclen) == NULL ||
        maclen != mdlen)
        return EST_JWT_INTERNAL;
    int eq = CRYPTO_memcmp(mac, sig, mdlen) == 0;
    OPENSSL_cleanse(mac, sizeof(mac));
    return eq ? EST_JWT_OK : EST_JWT_BAD_SIGNATURE;
}

/* JOSE carries ECDSA signatures as raw r||s (RFC 7518 §3.4); OpenSSL wants a DER ECDSA-Sig-Value.
 * Returns the DER length (the buffer is OPENSSL_malloc'ed into *der), 0 on a wrong length. */
static int ecdsa_raw_to_der(const unsigned char *sig, size_t siglen, size_t clen, unsigned char **der)
{
    if (siglen != 2 * clen)
        return 0;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)clen, NULL), *s = BN_bin2bn(sig + clen, (int)clen, NULL);
    int derlen = 0;
    if (es == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(es, r, s)) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        return -1;
    }
    *der = NULL;
    derlen = i2d_ECDSA_SIG(es, der);
    ECDSA_SIG_free(es);
    return derlen > 0 ? derlen : -1;
}

static est_jwt_result_t verify_asym(const struct alg_info *a, const est_jwk_t *k, const char *data, size_t len,
                                    const unsigned char *sig, size_t siglen)
{
    unsigned char *der = NULL;
    if (a->family == FAM_ES) {
        int derlen = ecdsa_raw_to_der(sig, siglen, a->coord_len, &der);
        if (derlen == 0)
            return EST_JWT_BAD_SIGNATURE;
        if (derlen < 0)
            return EST_JWT_INTERNAL;
        sig = der;
        siglen = (size_t)derlen;
    } else if (a->family == FAM_RS || a->family == FAM_PS) {
        if ((int)siglen != EVP_PKEY_get_size(k->pkey))
            return EST_JWT_BAD_SIGNATURE;
    } else if (siglen != 64) { /* Ed25519, RFC 8032 §5.1.6 */
        return EST_JWT_BAD_SIGNATURE;
    }

    est_jwt_result_t res = EST_JWT_INTERNAL;
    EVP_PKEY_CTX *pctx = NULL;
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();
    if (mctx == NULL || EVP_DigestVerifyInit_ex(mctx, &pctx, a->md, NULL, NULL, k->pkey, NULL) != 1)
        goto Exit;
    if (a->family == FAM_PS) {
        /* RFC 7518 §3.5: MGF1 with the same hash, salt as long as the hash output */
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
            EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, a->md, NULL) <= 0 ||
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) <= 0)
            goto Exit;
    } else if (a->family == FAM_RS) {
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) <= 0)
            goto Exit;
    }
    int rv = EVP_DigestVerify(mctx, sig, siglen, (const unsigned char *)data, len);
    res = rv == 1 ? EST_JWT_OK : EST_JWT_BAD_SIGNATURE;
Exit:
    EVP_MD_CTX_free(mctx);
    OPENSSL_free(der);
    return res;
}

est_jwt_result_t est_jwt_verify(const char *token, size_t len, const est_jwks_t *keys,
                                const est_jwt_policy_t *policy, int64_t now, json_t **claims, int64_t *exp)
{
    if (claims != NULL)
        *claims = NULL;
    if (len > EST_JWT_MAX_TOKEN)
        return EST_JWT_TOO_LARGE;

    /* shape: header '.' payload '.' signature, nothing else (RFC 7515 §7.1) */
    const char *dot1 = memchr(token, '.', len);
    if (dot1 == NULL)
        return EST_JWT_MALFORMED;
    const char *dot2 = memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token));
    if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL)
        return EST_JWT_MALFORMED;
    const char *hseg = token, *pseg = dot1 + 1, *sseg = dot2 + 1;
    size_t hlen = (size_t)(dot1 - token), plen = (size_t)(dot2 - pseg), slen = len - (size_t)(sseg - token);
    if (hlen == 0 || plen == 0)
        return EST_JWT_MALFORMED;

    est_jwt_result_t res;
    json_t *header = decode_json_segment(hseg, hlen), *payload = NULL;
    if (header == NULL)
        return EST_JWT_MALFORMED;

    const char *algname = bounded_string(json_object_get(header, "alg"), JWT_MAX_ALG);
    const struct alg_info *a = algname != NULL ? alg_lookup(algname) : NULL;
    if (algname == NULL) {
        res = EST_JWT_MALFORMED;
        goto Exit;
    }
    /* "none" and unknown names are not in the table, so no policy can allow them */
    if (a == NULL || (policy->algorithms & a->bit) == 0) {
        res = EST_JWT_ALG_NOT_ALLOWED;
        goto Exit;
    }
    if (json_object_get(header, "crit") != NULL) {
        res = EST_JWT_CRIT;
        goto Exit;
    }
    const json_t *jkid = json_object_get(header, "kid"), *jtyp = json_object_get(header, "typ");
    const char *kid = NULL;
    if ((jkid != NULL && (kid = bounded_string(jkid, JWT_MAX_KID)) == NULL) || (jtyp != NULL && !json_is_string(jtyp))) {
        res = EST_JWT_MALFORMED;
        goto Exit;
    }

    const est_jwk_t *key = NULL;
    if (keys == NULL) { /* no key set yet (first JWKS fetch pending or failed) */
        res = EST_JWT_UNKNOWN_KID;
        goto Exit;
    }
    if ((res = pick_key(keys, a, kid, &key)) != EST_JWT_OK)
        goto Exit;

    unsigned char sig[EST_JWT_MAX_TOKEN];
    long siglen = est_b64url_decode(sseg, slen, sig, sizeof(sig));
    if (siglen <= 0) {
        res = siglen == 0 ? EST_JWT_BAD_SIGNATURE : EST_JWT_MALFORMED;
        goto Exit;
    }
    /* the signing input is the ASCII of the first two segments and the dot between them */
    size_t signed_len = (size_t)(dot2 - token);
    res = a->family == FAM_HS ? verify_hmac(a, key, token, signed_len, sig, (size_t)siglen)
                              : verify_asym(a, key, token, signed_len, sig, (size_t)siglen);
    if (res != EST_JWT_OK)
        goto Exit;

    if ((payload = decode_json_segment(pseg, plen)) == NULL) {
        res = EST_JWT_MALFORMED;
        goto Exit;
    }
    int64_t e;
    if ((res = est_jwt_check_claims(payload, policy, now, &e)) != EST_JWT_OK)
        goto Exit;
    if (exp != NULL)
        *exp = e;
    if (claims != NULL) {
        *claims = payload;
        payload = NULL;
    }
Exit:
    json_decref(payload);
    json_decref(header);
    return res;
}

/* A NumericDate (RFC 7519 §2) as whole seconds, saturated. -1 when not a number. */
static int numeric_date(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        double d = floor(json_real_value(v));
        *out = d >= 9.2e18 ? INT64_MAX : d <= -9.2e18 ? INT64_MIN : (int64_t)d;
        return 0;
    }
    return -1;
}

static int string_equals(const json_t *v, const char *s)
{
    size_t n = strlen(s);
    return json_is_string(v) && json_string_length(v) == n && memcmp(json_string_value(v), s, n) == 0;
}

static int audience_matches(const json_t *aud, const est_jwt_policy_t *policy)
{
    for (size_t i = 0; i < policy->num_audiences; i++) {
        if (json_is_array(aud)) {
            size_t j;
            const json_t *v;
            json_array_foreach(aud, j, v)
            {
                if (string_equals(v, policy->audiences[i]))
                    return 1;
            }
        } else if (string_equals(aud, policy->audiences[i])) {
            return 1;
        }
    }
    return 0;
}

est_jwt_result_t est_jwt_check_claims(const json_t *claims, const est_jwt_policy_t *policy, int64_t now,
                                      int64_t *exp)
{
    int64_t e = INT64_MAX, nbf;
    const json_t *jexp = json_object_get(claims, "exp"), *jnbf = json_object_get(claims, "nbf");
    int64_t leeway = policy->leeway < 0 ? 0 : policy->leeway;

    if (jexp != NULL) {
        if (numeric_date(jexp, &e) != 0)
            return EST_JWT_BAD_CLAIMS;
        /* RFC 7519 §4.1.4: valid only before exp; compare without overflowing e + leeway */
        if (now - leeway >= e)
            return EST_JWT_EXPIRED;
    } else if (policy->require_exp) {
        return EST_JWT_BAD_CLAIMS;
    }
    if (jnbf != NULL) {
        if (numeric_date(jnbf, &nbf) != 0)
            return EST_JWT_BAD_CLAIMS;
        /* RFC 7519 §4.1.5: not valid before nbf */
        if (now + leeway < nbf)
            return EST_JWT_NOT_YET_VALID;
    }
    if (policy->issuer != NULL && !string_equals(json_object_get(claims, "iss"), policy->issuer))
        return EST_JWT_BAD_ISSUER;
    if (policy->audiences != NULL && policy->num_audiences != 0 &&
        !audience_matches(json_object_get(claims, "aud"), policy))
        return EST_JWT_BAD_AUDIENCE;
    if (exp != NULL)
        *exp = e;
    return EST_JWT_OK;
}

/* 1 when `scope` (n bytes) is one of the space-separated tokens of the string s. */
static int scope_in_string(const char *s, size_t slen, const char *scope, size_t n)
{
    size_t i = 0;
    while (i < slen) {
        while (i < slen && s[i] == ' ')
            i++;
        size_t start = i;
        while (i < slen && s[i] != ' ')
            i++;
        if (i - start == n && n != 0 && memcmp(s + start, scope, n) == 0)
            return 1;
    }
    return 0;
}

static int scope_granted(const json_t *claim, const char *scope)
{
    size_t n = strlen(scope);
    if (json_is_string(claim))
        return scope_in_string(json_string_value(claim), json_string_length(claim), scope, n);
    if (json_is_array(claim)) {
        size_t i;
        const json_t *v;
        json_array_foreach(claim, i, v)
        {
            if (string_equals(v, scope))
                return 1;
        }
    }
    return 0;
}

int est_jwt_has_scopes(const json_t *claims, const char *const *required, size_t num)
{
    const json_t *scope = json_object_get(claims, "scope"), *scp = json_object_get(claims, "scp");
    for (size_t i = 0; i < num; i++) {
        /* "scope" is a string only (RFC 8693 §4.2); "scp" is a list or a string */
        int ok = (json_is_string(scope) && scope_granted(scope, required[i])) || scope_granted(scp, required[i]);
        if (!ok)
            return 0;
    }
    return 1;
}

long est_jwt_claim_text(const json_t *claims, const char *name, char *buf, size_t cap)
{
    const json_t *v = json_object_get(claims, name);
    int n;
    if (cap == 0 || v == NULL)
        return -1;
    if (json_is_string(v)) {
        size_t len = json_string_length(v);
        const char *s = json_string_value(v);
        if (len >= cap)
            return -1;
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
                return -1;
        memcpy(buf, s, len);
        buf[len] = '\0';
        return (long)len;
    }
    if (json_is_integer(v))
        n = snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v))
        n = snprintf(buf, cap, "%.17g", json_real_value(v));
    else if (json_is_boolean(v))
        n = snprintf(buf, cap, "%s", json_is_true(v) ? "true" : "false");
    else
        return -1;
    if (n < 0 || (size_t)n >= cap)
        return -1;
    return n;
}
