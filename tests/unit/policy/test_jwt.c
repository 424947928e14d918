#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "policy/jwt.h"

#include "helpers.h"

/* the clock of tests/unit/policy/data/make_tokens.py */
#define NOW 1700000000
#define ALL_ALGS 0xfffu

static const char *const audiences[] = {"orders-api", "inventory"};
static est_jwks_t *jwks;

static est_jwt_policy_t policy(unsigned algs)
{
    est_jwt_policy_t p = {.algorithms = algs, .issuer = "https://idp.test/", .audiences = audiences,
                          .num_audiences = 2, .leeway = 30, .require_exp = 1};
    return p;
}

static int setup(void **state)
{
    size_t len;
    char *doc = read_data("jwks.json", &len);
    jwks = est_jwks_parse(doc, len, NULL, 0);
    free(doc);
    return jwks == NULL;
}

static int teardown(void **state)
{
    est_jwks_free(jwks);
    return 0;
}

/* Verifies token_<name>.txt with `keys` and `p`; returns the result, frees everything. */
static est_jwt_result_t check_with(const char *name, const est_jwks_t *keys, const est_jwt_policy_t *p, int64_t now)
{
    char file[128];
    size_t len;
    snprintf(file, sizeof(file), "token_%s.txt", name);
    char *tok = read_data(file, &len);
    json_t *claims = (json_t *)0x1;
    int64_t exp = 0;
    est_jwt_result_t r = est_jwt_verify(tok, len, keys, p, now, &claims, &exp);
    if (r == EST_JWT_OK) {
        assert_non_null(claims);
        assert_string_equal(json_string_value(json_object_get(claims, "sub")), "user-42");
        assert_int_equal(exp, json_integer_value(json_object_get(claims, "exp")));
        json_decref(claims);
    } else {
        assert_null(claims);
    }
    free(tok);
    return r;
}

static est_jwt_result_t check(const char *name, unsigned algs)
{
    est_jwt_policy_t p = policy(algs);
    return check_with(name, jwks, &p, NOW);
}

static void test_every_alg(void **state)
{
    static const char *const names[] = {"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA",
                                        "HS256", "HS384", "HS512"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        unsigned bit = est_jwa_from_name(names[i]);
        assert_int_not_equal(bit, 0);
        assert_int_equal(check(names[i], bit), EST_JWT_OK);
        /* the same token under a policy listing every other algorithm */
        assert_int_equal(check(names[i], ALL_ALGS & ~bit), EST_JWT_ALG_NOT_ALLOWED);
    }
    assert_int_equal(check("aud_list", EST_JWA_RS256), EST_JWT_OK);
}

static void test_names(void **state)
{
    assert_int_equal(est_jwa_from_name("none"), 0);
    assert_int_equal(est_jwa_from_name("NONE"), 0);
    assert_int_equal(est_jwa_from_name("rs256"), 0);
    assert_int_equal(est_jwa_from_name("PS256"), EST_JWA_PS256);
    assert_string_equal(est_jwt_strerror(EST_JWT_EXPIRED), "expired");
    assert_string_equal(est_jwt_strerror(EST_JWT_BAD_SIGNATURE), "bad_signature");
    assert_string_equal(est_jwt_strerror(EST_JWT_UNKNOWN_KID), "unknown_kid");
}

static void test_hostile(void **state)
{
    assert_int_equal(check("alg_none", ALL_ALGS), EST_JWT_ALG_NOT_ALLOWED);
    assert_int_equal(check("alg_none", 0xffffffffu), EST_JWT_ALG_NOT_ALLOWED);
    assert_int_equal(check("alg_none_kid", 0xffffffffu), EST_JWT_ALG_NOT_ALLOWED);
    /* HS256 keyed with the RSA public key: the rsa1 key is not an oct key */
    assert_int_equal(check("confusion_hs256", ALL_ALGS), EST_JWT_KEY_MISMATCH);
    /* without a kid the only oct key (hs1) is chosen, and the MAC does not match */
    assert_int_equal(check("confusion_hs256_nokid", ALL_ALGS), EST_JWT_BAD_SIGNATURE);
    assert_int_equal(check("tampered_payload", ALL_ALGS), EST_JWT_BAD_SIGNATURE);
    assert_int_equal(check("tampered_signature", ALL_ALGS), EST_JWT_BAD_SIGNATURE);
    assert_int_equal(check("wrong_key", ALL_ALGS), EST_JWT_BAD_SIGNATURE);
    assert_int_equal(check("es256_der", ALL_ALGS), EST_JWT_BAD_SIGNATURE);
    assert_int_equal(check("unknown_kid", ALL_ALGS), EST_JWT_UNKNOWN_KID);
    assert_int_equal(check("crit", ALL_ALGS), EST_JWT_CRIT);
    assert_int_equal(check("big_64k", ALL_ALGS), EST_JWT_TOO_LARGE);
}

static void test_claims(void **state)
{
    assert_int_equal(check("expired", ALL_ALGS), EST_JWT_EXPIRED);
    assert_int_equal(check("nbf_future", ALL_ALGS), EST_JWT_NOT_YET_VALID);
    assert_int_equal(check("wrong_aud", ALL_ALGS), EST_JWT_BAD_AUDIENCE);
    assert_int_equal(check("wrong_iss", ALL_ALGS), EST_JWT_BAD_ISSUER);

    /* leeway: exp = NOW - 3600 passes with 3601 s of leeway, not with 3600 */
    est_jwt_policy_t p = policy(ALL_ALGS);
    p.leeway = 3600;
    assert_int_equal(check_with("expired", jwks, &p, NOW), EST_JWT_EXPIRED);
    p.leeway = 3601;
    assert_int_equal(check_with("expired", jwks, &p, NOW), EST_JWT_OK);
    p.leeway = 3599;
    assert_int_equal(check_with("nbf_future", jwks, &p, NOW), EST_JWT_NOT_YET_VALID);
    p.leeway = 3600;
    assert_int_equal(check_with("nbf_future", jwks, &p, NOW), EST_JWT_OK);
    p.leeway = 0;
    assert_int_equal(check_with("nbf_future", jwks, &p, NOW + 3600), EST_JWT_OK);
    /* exp far in the future, so a clock past it expires every token */
    assert_int_equal(check_with("RS256", jwks, &p, 4102444800), EST_JWT_EXPIRED);
    assert_int_equal(check_with("RS256", jwks, &p, 4102444799), EST_JWT_OK);

    /* issuer and audiences unchecked when not configured */
    p = policy(ALL_ALGS);
    p.issuer = NULL;
    p.audiences = NULL;
    assert_int_equal(check_with("wrong_iss", jwks, &p, NOW), EST_JWT_OK);
    assert_int_equal(check_with("wrong_aud", jwks, &p, NOW), EST_JWT_OK);

    /* claim checks on hand-made claim sets */
    p = policy(ALL_ALGS);
    json_t *c = json_pack("{s:s, s:s, s:s}", "iss", "https://idp.test/", "aud", "orders-api", "exp", "soon");
    assert_int_equal(est_jwt_check_claims(c, &p, NOW, NULL), EST_JWT_BAD_CLAIMS);
    json_object_del(c, "exp");
    assert_int_equal(est_jwt_check_claims(c, &p, NOW, NULL), EST_JWT_BAD_CLAIMS);
    p.require_exp = 0;
    int64_t exp = 0;
    assert_int_equal(est_jwt_check_claims(c, &p, NOW, &exp), EST_JWT_OK);
    assert_int_equal(exp, INT64_MAX);
    json_object_set_new(c, "exp", json_real(1700000000.9)); /* NumericDate may be fractional */
    p.leeway = 0;
    assert_int_equal(est_jwt_check_claims(c, &p, NOW, &exp), EST_JWT_EXPIRED);
    p.leeway = 1;
    assert_int_equal(est_jwt_check_claims(c, &p, NOW, &exp), EST_JWT_OK);
    json_object_set_new(c, "exp", json_integer(INT64_MAX)); /* no overflow with leeway */
    p.leeway = INT64_MAX / 4;
    assert_int_equal(est_jwt_check_claims(c, &p, NOW, &exp), EST_JWT_OK);
    json_object_set_new(c, "iss", json_string("https://idp.test/x"));
    assert_int_equal(est_jwt_check_claims(c, &p, NOW, &exp), EST_JWT_BAD_ISSUER);
    json_object_set_new(c, "iss", json_string("https://idp.test/"));
    json_object_set_new(c, "aud", json_pack("[i, s]", 1, "inventory"));
    assert_int_equal(est_jwt_check_claims(c, &p, NOW, &exp), EST_JWT_OK);
    json_object_del(c, "aud");
    assert_int_equal(est_jwt_check_claims(c, &p, NOW, &exp), EST_JWT_BAD_AUDIENCE);
    json_decref(c);
}

static void test_key_selection(void **state)
{
    /* a token without kid: the only RSA key of the set */
    assert_int_equal(check("RS256_nokid", ALL_ALGS), EST_JWT_OK);
    assert_int_equal(check("HS256_nokid", ALL_ALGS), EST_JWT_OK);

    /* a secret_file key set: tokens with or without kid */
    size_t len;
    char *secret = read_data("hs.key", &len);
    est_jwks_t *set = est_jwks_from_secret((unsigned char *)secret, len);
    est_jwt_policy_t p = policy(EST_JWA_HS256 | EST_JWA_RS256);
    assert_int_equal(check_with("HS256", set, &p, NOW), EST_JWT_OK);
    assert_int_equal(check_with("HS256_nokid", set, &p, NOW), EST_JWT_OK);
    assert_int_equal(check_with("RS256", set, &p, NOW), EST_JWT_UNKNOWN_KID);
    est_jwks_free(set);
    /* an HMAC key shorter than the hash output is refused (RFC 7518 §3.2) */
    set = est_jwks_from_secret((unsigned char *)secret, 31);
    assert_int_equal(check_with("HS256", set, &p, NOW), EST_JWT_KEY_MISMATCH);
    est_jwks_free(set);
    /* a secret_file holding the RSA public key PEM: the confusion token is then simply an HMAC
     * token of that secret (a misconfiguration, not an attack on a JWKS) */
    char *pem = read_data("rsa_pub.pem", &len);
    set = est_jwks_from_secret((unsigned char *)pem, len);
    assert_int_equal(check_with("confusion_hs256", set, &p, NOW), EST_JWT_OK);
    est_jwks_free(set);
    free(pem);
    free(secret);

    /* no key set at all (JWKS not fetched yet) */
    assert_int_equal(check_with("HS256", NULL, &p, NOW), EST_JWT_UNKNOWN_KID);

    /* a key pinned to another alg */
    const char *doc = "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"hs1\",\"alg\":\"HS512\",\"k\":"
                      "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}]}";
    set = est_jwks_parse(doc, strlen(doc), NULL, 0);
    assert_non_null(set);
    assert_int_equal(check_with("HS256", set, &p, NOW), EST_JWT_KEY_MISMATCH);
    est_jwks_free(set);

    /* two kid-less keys of one type: no guessing */
    doc = "{\"keys\":[{\"kty\":\"oct\",\"k\":\"Zm9v\"},{\"kty\":\"oct\",\"k\":\"YmFy\"}]}";
    set = est_jwks_parse(doc, strlen(doc), NULL, 0);
    assert_int_equal(check_with("HS256_nokid", set, &p, NOW), EST_JWT_UNKNOWN_KID);
    est_jwks_free(set);
}

static void test_malformed(void **state)
{
    est_jwt_policy_t p = policy(ALL_ALGS);
    static const char *const bad[] = {
        "", ".", "..", "a.b", "a.b.c.d", "eyJhbGciOiJIUzI1NiJ9..", "eyJhbGciOiJIUzI1NiJ9.e30.!!!!",
        "e30.e30.AAAA",                          /* no alg */
        "WyJIUzI1NiJd.e30.AAAA",                 /* header is an array */
        "eyJhbGciOiJIUzI1NiJ9=.e30.AAAA",        /* padding */
        "eyJhbGciOjV9.e30.AAAA",                 /* alg is a number */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *claims = NULL;
        assert_int_equal(est_jwt_verify(bad[i], strlen(bad[i]), jwks, &p, NOW, &claims, NULL), EST_JWT_MALFORMED);
        assert_null(claims);
    }
    /* exactly at the size limit: shape checked; one byte more: refused before any work */
    char *big = malloc(EST_JWT_MAX_TOKEN + 1);
    memset(big, 'A', EST_JWT_MAX_TOKEN + 1);
    assert_int_equal(est_jwt_verify(big, EST_JWT_MAX_TOKEN, jwks, &p, NOW, NULL, NULL), EST_JWT_MALFORMED);
    assert_int_equal(est_jwt_verify(big, EST_JWT_MAX_TOKEN + 1, jwks, &p, NOW, NULL, NULL), EST_JWT_TOO_LARGE);
    free(big);
}

static void test_scopes_and_claim_text(void **state)
{
    json_t *c = json_pack("{s:s, s:s, s:i, s:f, s:b, s:o, s:s}", "scope", " orders:read  orders:write ", "sub",
                          "user-42", "tenant", 7, "ratio", 0.5, "admin", 0, "groups", json_pack("[s]", "a"), "crlf",
                          "a\r\nX-Evil: 1");
    const char *const want1[] = {"orders:read"};
    const char *const want2[] = {"orders:write", "orders:read"};
    const char *const want3[] = {"orders:read", "orders:delete"};
    const char *const want4[] = {"orders"};
    assert_true(est_jwt_has_scopes(c, want1, 1));
    assert_true(est_jwt_has_scopes(c, want2, 2));
    assert_false(est_jwt_has_scopes(c, want3, 2));
    assert_false(est_jwt_has_scopes(c, want4, 1)); /* prefixes do not match */
    assert_true(est_jwt_has_scopes(c, NULL, 0));

    char buf[32];
    assert_int_equal(est_jwt_claim_text(c, "sub", buf, sizeof(buf)), 7);
    assert_string_equal(buf, "user-42");
    assert_int_equal(est_jwt_claim_text(c, "tenant", buf, sizeof(buf)), 1);
    assert_string_equal(buf, "7");
    assert_true(est_jwt_claim_text(c, "ratio", buf, sizeof(buf)) > 0);
    assert_string_equal(buf, "0.5");
    assert_int_equal(est_jwt_claim_text(c, "admin", buf, sizeof(buf)), 5);
    assert_int_equal(est_jwt_claim_text(c, "groups", buf, sizeof(buf)), -1);
    assert_int_equal(est_jwt_claim_text(c, "missing", buf, sizeof(buf)), -1);
    assert_int_equal(est_jwt_claim_text(c, "crlf", buf, sizeof(buf)), -1);
    assert_int_equal(est_jwt_claim_text(c, "sub", buf, 7), -1); /* no room for the NUL */
    json_decref(c);

    /* scp as a list or a string; "scope" as a list is not a scope claim */
    c = json_pack("{s:[s, s]}", "scp", "orders:read", "admin");
    assert_true(est_jwt_has_scopes(c, want1, 1));
    assert_false(est_jwt_has_scopes(c, want2, 2));
    json_decref(c);
    c = json_pack("{s:s}", "scp", "orders:write orders:read");
    assert_true(est_jwt_has_scopes(c, want2, 2));
    json_decref(c);
    c = json_pack("{s:[s]}", "scope", "orders:read");
    assert_false(est_jwt_has_scopes(c, want1, 1));
    json_decref(c);

    /* from a real token */
    size_t len;
    char *tok = read_data("token_scp_list.txt", &len);
    est_jwt_policy_t p = policy(ALL_ALGS);
    json_t *claims = NULL;
    assert_int_equal(est_jwt_verify(tok, len, jwks, &p, NOW, &claims, NULL), EST_JWT_OK);
    assert_true(est_jwt_has_scopes(claims, want1, 1));
    assert_false(est_jwt_has_scopes(claims, want2, 2));
    json_decref(claims);
    free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_alg),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_claims),
        cmocka_unit_test(test_key_selection),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_scopes_and_claim_text),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
