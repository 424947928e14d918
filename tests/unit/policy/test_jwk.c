#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "policy/b64url.h"
#include "policy/jwk.h"

#include "helpers.h"

static long dec(const char *s, unsigned char *out, size_t cap)
{
    return est_b64url_decode(s, strlen(s), out, cap);
}

static void test_b64url(void **state)
{
    unsigned char out[16];
    assert_int_equal(dec("", out, sizeof(out)), 0);
    assert_int_equal(dec("Zm9v", out, sizeof(out)), 3);
    assert_memory_equal(out, "foo", 3);
    assert_int_equal(dec("Zm8", out, sizeof(out)), 2);
    assert_memory_equal(out, "fo", 2);
    assert_int_equal(dec("Zg", out, sizeof(out)), 1);
    assert_int_equal(out[0], 'f');
    assert_int_equal(dec("-_8", out, sizeof(out)), 2); /* 0xfb 0xff: the URL-safe alphabet */
    assert_int_equal(out[0], 0xfb);
    assert_int_equal(out[1], 0xff);
    /* padding, the standard alphabet, whitespace: refused */
    assert_int_equal(dec("Zg==", out, sizeof(out)), -1);
    assert_int_equal(dec("Zm8=", out, sizeof(out)), -1);
    assert_int_equal(dec("+/8", out, sizeof(out)), -1);
    assert_int_equal(dec("Zm 9v", out, sizeof(out)), -1);
    /* a lone trailing character, non-zero unused bits (a second encoding of "f") */
    assert_int_equal(dec("Zm9vZ", out, sizeof(out)), -1);
    assert_int_equal(dec("Zh", out, sizeof(out)), -1);
    /* capacity respected */
    assert_int_equal(dec("Zm9v", out, 2), -1);
    assert_int_equal(dec("Zm9v", out, 3), 3);
}

static void test_parse_jwks(void **state)
{
    size_t len;
    char *doc = read_data("jwks.json", &len);
    char err[128];
    est_jwks_t *set = est_jwks_parse(doc, len, err, sizeof(err));
    assert_non_null(set);
    assert_int_equal(set->count, 5);
    assert_int_equal(set->skipped, 2); /* use "enc", crv X448 */
    const est_jwk_t *k = est_jwks_find_kid(set, "rsa1");
    assert_non_null(k);
    assert_int_equal(k->type, EST_JWK_RSA);
    assert_int_equal(EVP_PKEY_get_bits(k->pkey), 2048);
    assert_int_equal(est_jwks_find_kid(set, "ec256")->type, EST_JWK_EC_P256);
    assert_int_equal(est_jwks_find_kid(set, "ec384")->type, EST_JWK_EC_P384);
    assert_int_equal(est_jwks_find_kid(set, "ed1")->type, EST_JWK_ED25519);
    k = est_jwks_find_kid(set, "hs1");
    assert_int_equal(k->type, EST_JWK_OCT);
    assert_int_equal(k->secret_len, 64);
    assert_null(est_jwks_find_kid(set, "rsa-enc"));
    assert_null(est_jwks_find_kid(set, "nope"));
    est_jwks_free(set);
    free(doc);
}

static void test_refusals(void **state)
{
    size_t len;
    char err[128];
    char *doc = read_data("jwks_not_json.txt", &len);
    assert_null(est_jwks_parse(doc, len, err, sizeof(err)));
    assert_string_equal(err, "JWKS is not valid JSON");
    free(doc);

    /* 1,000 usable keys: the set is refused (and quickly: at most 101 keys are built) */
    doc = read_data("jwks_1000.json", &len);
    assert_null(est_jwks_parse(doc, len, err, sizeof(err)));
    assert_string_equal(err, "JWKS has too many usable keys");
    free(doc);

    assert_null(est_jwks_parse("{\"keys\":{}}", 11, err, sizeof(err)));
    assert_string_equal(err, "JWKS has no \"keys\" array");
    assert_null(est_jwks_parse("[]", 2, err, sizeof(err)));
    /* duplicate members are refused, not resolved one way or the other */
    const char *dup = "{\"keys\":[],\"keys\":[]}";
    assert_null(est_jwks_parse(dup, strlen(dup), err, sizeof(err)));

    /* over 1 MiB: refused before parsing */
    size_t big = EST_JWKS_MAX_BYTES + 1;
    char *huge = malloc(big);
    memset(huge, ' ', big);
    memcpy(huge, "{\"keys\":[]}", 11);
    assert_null(est_jwks_parse(huge, big, err, sizeof(err)));
    assert_string_equal(err, "JWKS too large");
    /* the same document at the limit is accepted */
    est_jwks_t *set = est_jwks_parse(huge, EST_JWKS_MAX_BYTES, err, sizeof(err));
    assert_non_null(set);
    assert_int_equal(set->count, 0);
    est_jwks_free(set);
    free(huge);
}

static void test_bad_members_skipped(void **state)
{
    /* EC point not on the curve; short RSA modulus; Ed25519 of 31 bytes; oct with padding;
     * EC coordinate one byte short; a non-string kid: each skipped, never fatal */
    const char *doc =
        "{\"keys\":["
        "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
        "\"y\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"},"
        "{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"},"
        "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"},"
        "{\"kty\":\"oct\",\"k\":\"Zg==\"},"
        "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
        "\"y\":\"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"},"
        "{\"kty\":\"oct\",\"k\":\"Zm9v\",\"kid\":5},"
        "{\"kty\":\"oct\",\"k\":\"Zm9v\",\"kid\":\"good\"},"
        "42]}";
    char err[128];
    est_jwks_t *set = est_jwks_parse(doc, strlen(doc), err, sizeof(err));
    assert_non_null(set);
    assert_int_equal(set->count, 1);
    assert_int_equal(set->skipped, 7);
    assert_non_null(est_jwks_find_kid(set, "good"));
    est_jwks_free(set);
}

/* {"keys":[ENTRY0,ENTRY1,...]} with n entries made by fmt (one %zu: the index) */
static char *make_jwks(size_t n, const char *fmt, size_t *len)
{
    size_t cap = 32 + n * (strlen(fmt) + 24);
    char *doc = malloc(cap), *p = doc;
    p += sprintf(p, "{\"keys\":[");
    for (size_t i = 0; i < n; i++) {
        if (i != 0)
            *p++ = ',';
        p += sprintf(p, fmt, i);
    }
    p += sprintf(p, "]}");
    *len = (size_t)(p - doc);
    return doc;
}

static void test_key_count_bounds(void **state)
{
    char err[128];
    size_t len;
    /* exactly EST_JWKS_MAX_KEYS usable keys: accepted; one more: refused */
    char *doc = make_jwks(EST_JWKS_MAX_KEYS, "{\"kty\":\"oct\",\"kid\":\"k%zu\",\"k\":\"Zm9v\"}", &len);
    est_jwks_t *set = est_jwks_parse(doc, len, err, sizeof(err));
    assert_non_null(set);
    assert_int_equal(set->count, EST_JWKS_MAX_KEYS);
    assert_non_null(est_jwks_find_kid(set, "k99"));
    est_jwks_free(set);
    free(doc);
    doc = make_jwks(EST_JWKS_MAX_KEYS + 1, "{\"kty\":\"oct\",\"kid\":\"k%zu\",\"k\":\"Zm9v\"}", &len);
    assert_null(est_jwks_parse(doc, len, err, sizeof(err)));
    free(doc);

    /* entries that are all skipped (encryption keys) count against EST_JWKS_MAX_ENTRIES only */
    doc = make_jwks(EST_JWKS_MAX_ENTRIES, "{\"kty\":\"oct\",\"use\":\"enc\",\"kid\":\"%zu\",\"k\":\"Zm9v\"}", &len);
    set = est_jwks_parse(doc, len, err, sizeof(err));
    assert_non_null(set);
    assert_int_equal(set->count, 0);
    assert_int_equal(set->skipped, EST_JWKS_MAX_ENTRIES);
    est_jwks_free(set);
    free(doc);
    doc = make_jwks(EST_JWKS_MAX_ENTRIES + 1, "%zu", &len);
    assert_null(est_jwks_parse(doc, len, err, sizeof(err)));
    assert_string_equal(err, "JWKS has too many entries");
    free(doc);
}

static void test_from_secret(void **state)
{
    est_jwks_t *set = est_jwks_from_secret((const unsigned char *)"0123456789", 10);
    assert_non_null(set);
    assert_int_equal(set->count, 1);
    assert_int_equal(set->keys[0].type, EST_JWK_OCT);
    assert_null(set->keys[0].kid);
    est_jwks_free(set);
    assert_null(est_jwks_from_secret((const unsigned char *)"", 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64url),
        cmocka_unit_test(test_parse_jwks),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_bad_members_skipped),
        cmocka_unit_test(test_key_count_bounds),
        cmocka_unit_test(test_from_secret),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
