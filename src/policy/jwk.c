#include "policy/jwk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>

#include "policy/b64url.h"

#define JWK_MAX_KID 256
#define JWK_MAX_ALG 16
#define RSA_MIN_BITS 2048
#define RSA_MAX_BITS 8192

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (errlen != 0)
        snprintf(err, errlen, "%s", msg);
}

/* Decodes the base64url string member `name` of `obj` into `out`; -1 when absent or malformed. */
static long member_b64(const json_t *obj, const char *name, unsigned char *out, size_t cap)
{
    const json_t *v = json_object_get(obj, name);
    if (!json_is_string(v))
        return -1;
    return est_b64url_decode(json_string_value(v), json_string_length(v), out, cap);
}

/* The optional string member `name`: 0 and *out NULL when absent, -1 when not a bounded string. */
static int member_str(const json_t *obj, const char *name, size_t max, const char **out)
{
    const json_t *v = json_object_get(obj, name);
    *out = NULL;
    if (v == NULL)
        return 0;
    if (!json_is_string(v) || json_string_length(v) > max || strlen(json_string_value(v)) != json_string_length(v))
        return -1;
    *out = json_string_value(v);
    return 0;
}

/* Builds a public key of `type_name` from the parameters in `bld`. NULL on failure. */
static EVP_PKEY *pkey_from_params(const char *type_name, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type_name, NULL);
    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static EVP_PKEY *rsa_from_jwk(const json_t *jwk)
{
    unsigned char n[RSA_MAX_BITS / 8 + 1], e[8];
    long nlen = member_b64(jwk, "n", n, sizeof(n)), elen = member_b64(jwk, "e", e, sizeof(e));
    if (nlen <= 0 || elen <= 0)
        return NULL;

    EVP_PKEY *pkey = NULL;
    BIGNUM *bn_n = BN_bin2bn(n, (int)nlen, NULL), *bn_e = BN_bin2bn(e, (int)elen, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    if (bn_n == NULL || bn_e == NULL || bld == NULL)
        goto Exit;
    /* RFC 7518 §3.3: 2048 bits or more; the upper bound keeps one verify cheap */
    if (BN_num_bits(bn_n) < RSA_MIN_BITS || BN_num_bits(bn_n) > RSA_MAX_BITS)
        goto Exit;
    if (!BN_is_odd(bn_e) || BN_is_one(bn_e))
        goto Exit;
    if (!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e))
        goto Exit;
    pkey = pkey_from_params("RSA", bld);
Exit:
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    return pkey;
}

static EVP_PKEY *ec_from_jwk(const json_t *jwk, const char *group, size_t clen)
{
    /* the uncompressed SEC1 point: 0x04 || x || y, each coordinate exactly clen bytes
     * (RFC 7518 §6.2.1.2: "MUST be the full size") */
    unsigned char point[1 + 2 * 66];
    point[0] = 0x04;
    if (member_b64(jwk, "x", point + 1, clen) != (long)clen ||
        member_b64(jwk, "y", point + 1 + clen, clen) != (long)clen)
        return NULL;

    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    if (bld != NULL && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * clen))
        pkey = pkey_from_params("EC", bld);
    OSSL_PARAM_BLD_free(bld);
    if (pkey != NULL) {
        /* reject points off the curve or at infinity explicitly (invalid-curve attacks) */
        EVP_PKEY_CTX *chk = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
        if (chk == NULL || EVP_PKEY_public_check(chk) != 1) {
            EVP_PKEY_free(pkey);
            pkey = NULL;
        }
        EVP_PKEY_CTX_free(chk);
    }
    return pkey;
}

static EVP_PKEY *ed25519_from_jwk(const json_t *jwk)
{
    unsigned char x[32];
    if (member_b64(jwk, "x", x, sizeof(x)) != (long)sizeof(x))
        return NULL;
    return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, sizeof(x));
}

static void jwk_dispose(est_jwk_t *k)
{
    free(k->kid);
    free(k->alg);
    EVP_PKEY_free(k->pkey);
    if (k->secret != NULL) {
        OPENSSL_cleanse(k->secret, k->secret_len);
        free(k->secret);
    }
    memset(k, 0, sizeof(*k));
}

/* Fills `out` from one JWKS entry. 1: usable key, 0: skipped (unknown or malformed), -1: no memory. */
static int jwk_build(const json_t *jwk, est_jwk_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(jwk))
        return 0;
    const char *kty, *crv, *use, *kid, *alg;
    if (member_str(jwk, "kty", 8, &kty) != 0 || kty == NULL || member_str(jwk, "crv", 16, &crv) != 0 ||
        member_str(jwk, "use", 16, &use) != 0 || member_str(jwk, "kid", JWK_MAX_KID, &kid) != 0 ||
        member_str(jwk, "alg", JWK_MAX_ALG, &alg) != 0)
        return 0;
    /* RFC 7517 §4.2: a key for "enc" must not verify signatures */
    if (use != NULL && strcmp(use, "sig") != 0)
        return 0;

    if (strcmp(kty, "RSA") == 0) {
        out->type = EST_JWK_RSA;
        out->pkey = rsa_from_jwk(jwk);
    } else if (strcmp(kty, "EC") == 0 && crv != NULL && strcmp(crv, "P-256") == 0) {
        out->type = EST_JWK_EC_P256;
        out->pkey = ec_from_jwk(jwk, "P-256", 32);
    } else if (strcmp(kty, "EC") == 0 && crv != NULL && strcmp(crv, "P-384") == 0) {
        out->type = EST_JWK_EC_P384;
        out->pkey = ec_from_jwk(jwk, "P-384", 48);
    } else if (strcmp(kty, "OKP") == 0 && crv != NULL && strcmp(crv, "Ed25519") == 0) {
        out->type = EST_JWK_ED25519;
        out->pkey = ed25519_from_jwk(jwk);
    } else if (strcmp(kty, "oct") == 0) {
        unsigned char k[EST_JWK_MAX_OCT_BYTES];
        long klen = member_b64(jwk, "k", k, sizeof(k));
        if (klen <= 0)
            return 0;
        out->type = EST_JWK_OCT;
        if ((out->secret = malloc((size_t)klen)) == NULL)
            return -1;
        memcpy(out->secret, k, (size_t)klen);
        out->secret_len = (size_t)klen;
        OPENSSL_cleanse(k, sizeof(k));
    } else {
        return 0;
    }
    if (out->type != EST_JWK_OCT && out->pkey == NULL)
        return 0;

    if ((kid != NULL && (out->kid = strdup(kid)) == NULL) || (alg != NULL && (out->alg = strdup(alg)) == NULL)) {
        jwk_dispose(out);
        return -1;
    }
    return 1;
}

est_jwks_t *est_jwks_parse(const char *json, size_t len, char *err, size_t errlen)
{
    set_err(err, errlen, "");
    if (len > EST_JWKS_MAX_BYTES) {
        set_err(err, errlen, "JWKS too large");
        return NULL;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL) {
        set_err(err, errlen, "JWKS is not valid JSON");
        return NULL;
    }
    est_jwks_t *set = NULL;
    json_t *keys = json_object_get(doc, "keys");
    if (!json_is_array(keys)) {
        set_err(err, errlen, "JWKS has no \"keys\" array");
        goto Error;
    }
    size_t n = json_array_size(keys);
    if (n > EST_JWKS_MAX_ENTRIES) {
        set_err(err, errlen, "JWKS has too many entries");
        goto Error;
    }
    if ((set = calloc(1, sizeof(*set))) == NULL ||
        (set->keys = calloc(EST_JWKS_MAX_KEYS, sizeof(*set->keys))) == NULL) {
        set_err(err, errlen, "out of memory");
        goto Error;
    }
    for (size_t i = 0; i < n; i++) {
        est_jwk_t k;
        int r = jwk_build(json_array_get(keys, i), &k);
        if (r < 0) {
            set_err(err, errlen, "out of memory");
            goto Error;
        }
        if (r == 0) {
            set->skipped++;
            continue;
        }
        if (set->count == EST_JWKS_MAX_KEYS) {
            jwk_dispose(&k);
            set_err(err, errlen, "JWKS has too many usable keys");
            goto Error;
        }
        set->keys[set->count++] = k;
    }
    json_decref(doc);
    return set;
Error:
    est_jwks_free(set);
    json_decref(doc);
    return NULL;
}

est_jwks_t *est_jwks_from_secret(const unsigned char *secret, size_t len)
{
    if (len == 0 || len > EST_JWK_MAX_OCT_BYTES)
        return NULL;
    est_jwks_t *set = calloc(1, sizeof(*set));
    if (set == NULL || (set->keys = calloc(1, sizeof(*set->keys))) == NULL ||
        (set->keys[0].secret = malloc(len)) == NULL) {
        est_jwks_free(set);
        return NULL;
    }
    set->count = 1;
    set->keys[0].type = EST_JWK_OCT;
    memcpy(set->keys[0].secret, secret, len);
    set->keys[0].secret_len = len;
    return set;
}

void est_jwks_free(est_jwks_t *set)
{
    if (set == NULL)
        return;
    if (set->keys != NULL) {
        for (size_t i = 0; i < set->count; i++)
            jwk_dispose(&set->keys[i]);
        free(set->keys);
    }
    free(set);
}

const est_jwk_t *est_jwks_find_kid(const est_jwks_t *set, const char *kid)
{
    for (size_t i = 0; i < set->count; i++)
        if (set->keys[i].kid != NULL && strcmp(set->keys[i].kid, kid) == 0)
            return &set->keys[i];
    return NULL;
}
