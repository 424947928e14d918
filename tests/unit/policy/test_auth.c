/*
 * The auth stage's pure parts and its per-generation loading (src/policy/auth.c): Bearer
 * credentials, which algorithms a key serves, the forward_claims header edit, and
 * est_auth_gen_create against hand-built configs (files written to a temporary folder).
 * The request path is covered end to end by tests/e2e/test_auth.py.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "../../../src/policy/auth.c"

#include "helpers.h"

/* ---- Bearer credentials (RFC 6750 §2.1) ---- */

static est_bearer_parse_t parse(const char *v, h2o_iovec_t *tok)
{
    *tok = h2o_iovec_init(NULL, 0);
    return est_auth_parse_bearer(v, strlen(v), tok);
}

static void test_bearer(void **state)
{
    h2o_iovec_t t;
    assert_int_equal(parse("Bearer abc.def-_~+/==", &t), EST_BEARER_OK);
    assert_true(h2o_memis(t.base, t.len, H2O_STRLIT("abc.def-_~+/==")));
    /* the scheme is case-insensitive; several SP are allowed (1*SP) */
    assert_int_equal(parse("bEaReR   x", &t), EST_BEARER_OK);
    assert_true(h2o_memis(t.base, t.len, H2O_STRLIT("x")));
    /* malformed: no token, a second word, a character outside b64token, "=" inside */
    assert_int_equal(parse("Bearer", &t), EST_BEARER_MALFORMED);
    assert_int_equal(parse("Bearer ", &t), EST_BEARER_MALFORMED);
    assert_int_equal(parse("Bearer a b", &t), EST_BEARER_MALFORMED);
    assert_int_equal(parse("Bearer a,b", &t), EST_BEARER_MALFORMED);
    assert_int_equal(parse("Bearer a=b", &t), EST_BEARER_MALFORMED);
    assert_int_equal(parse("Bearer \"a\"", &t), EST_BEARER_MALFORMED);
    assert_int_equal(parse("Bearer\ta", &t), EST_BEARER_OTHER); /* the scheme is "Bearer\ta" */
    /* other schemes are not Bearer credentials */
    assert_int_equal(parse("Basic dXNlcjpwYXNz", &t), EST_BEARER_OTHER);
    assert_int_equal(parse("Bearerx abc", &t), EST_BEARER_OTHER);
    assert_int_equal(parse("", &t), EST_BEARER_OTHER);
    assert_null(t.base);
}

/* ---- algorithms a key serves ---- */

static void test_key_algorithms(void **state)
{
    est_jwk_t k = {0};
    k.type = EST_JWK_OCT;
    k.secret_len = 31;
    assert_int_equal(est_auth_key_algorithms(&k), 0);
    k.secret_len = 32;
    assert_int_equal(est_auth_key_algorithms(&k), EST_JWA_HS256);
    k.secret_len = 48;
    assert_int_equal(est_auth_key_algorithms(&k), EST_JWA_HS256 | EST_JWA_HS384);
    k.secret_len = 64;
    assert_int_equal(est_auth_key_algorithms(&k), EST_JWA_HS256 | EST_JWA_HS384 | EST_JWA_HS512);
    k.alg = "HS384";
    assert_int_equal(est_auth_key_algorithms(&k), EST_JWA_HS384);
    k.alg = "RS256"; /* an oct key claiming a signature alg serves nothing */
    assert_int_equal(est_auth_key_algorithms(&k), 0);

    k.type = EST_JWK_RSA;
    k.alg = NULL;
    assert_true(est_auth_key_algorithms(&k) & EST_JWA_PS256);
    assert_false(est_auth_key_algorithms(&k) & (EST_JWA_HS256 | EST_JWA_ES256));
    k.alg = "PS256";
    assert_int_equal(est_auth_key_algorithms(&k), EST_JWA_PS256);
    k.type = EST_JWK_EC_P256;
    k.alg = NULL;
    assert_int_equal(est_auth_key_algorithms(&k), EST_JWA_ES256);
    k.type = EST_JWK_EC_P384;
    assert_int_equal(est_auth_key_algorithms(&k), EST_JWA_ES384);
    k.type = EST_JWK_ED25519;
    assert_int_equal(est_auth_key_algorithms(&k), EST_JWA_EDDSA);
}

/* ---- forward_claims header edit ---- */

static h2o_header_t hdr(const char *name, const char *value)
{
    h2o_iovec_t *n = malloc(sizeof(*n));
    *n = h2o_iovec_init(name, strlen(name));
    return (h2o_header_t){n, NULL, h2o_iovec_init(value, strlen(value))};
}

static void test_edit_headers(void **state)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    h2o_header_t in[4] = {hdr("accept", "*/*"), hdr("x-user-id", "forged"), hdr("x-tenant", "t"), hdr("x-user-id", "forged2")};
    h2o_header_t *hs = in;
    size_t n = 4;
    h2o_iovec_t drop[] = {{H2O_STRLIT("x-user-id")}, {H2O_STRLIT("x-other")}};

    /* nothing to drop or add: the array is kept */
    h2o_iovec_t none[] = {{H2O_STRLIT("x-absent")}};
    est_auth_edit_headers(&pool, &hs, &n, none, 1, NULL, 0);
    assert_ptr_equal(hs, in);
    assert_int_equal(n, 4);

    /* every value of a dropped name goes, the added header is last */
    h2o_header_t add[] = {hdr("x-user-id", "user-42")};
    est_auth_edit_headers(&pool, &hs, &n, drop, 2, add, 1);
    assert_ptr_not_equal(hs, in);
    assert_int_equal(n, 3);
    assert_true(h2o_memis(hs[0].name->base, hs[0].name->len, H2O_STRLIT("accept")));
    assert_true(h2o_memis(hs[1].name->base, hs[1].name->len, H2O_STRLIT("x-tenant")));
    assert_true(h2o_memis(hs[2].value.base, hs[2].value.len, H2O_STRLIT("user-42")));

    /* dropping without adding (an API key accepted the request) */
    hs = in;
    n = 4;
    est_auth_edit_headers(&pool, &hs, &n, drop, 2, NULL, 0);
    assert_int_equal(n, 2);
    for (size_t i = 0; i != n; ++i)
        assert_false(h2o_memis(hs[i].name->base, hs[i].name->len, H2O_STRLIT("x-user-id")));

    h2o_mem_clear_pool(&pool);
    for (size_t i = 0; i != 4; ++i)
        free(in[i].name);
    free(add[0].name);
}

/* ---- est_auth_gen_create ---- */

static char tmpdir[256];

static int setup_dir(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/est-test-auth-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int teardown_dir(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* writes `len` bytes to tmpdir/name; returns the path (static buffer rotation of 4) */
static char *put_file(const char *name, const void *data, size_t len)
{
    static char paths[4][512];
    static int next;
    char *p = paths[next++ % 4];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
    return p;
}

/* a config of one JWT policy (its key source given) and no route */
static void jwt_config(est_config_t *conf, est_jwt_conf_t *jc, char *jwks_file, char *secret_file, unsigned algorithms)
{
    memset(conf, 0, sizeof(*conf));
    memset(jc, 0, sizeof(*jc));
    jc->name = "p";
    jc->jwks_file = jwks_file;
    jc->secret_file = secret_file;
    jc->algorithms = algorithms;
    jc->leeway_ms = 30000;
    conf->jwt = jc;
    conf->num_jwt = 1;
}

static void test_gen_nothing_configured(void **state)
{
    est_config_t conf = {0};
    int failed = 0;
    assert_null(est_auth_gen_create(&conf, &failed));
    assert_int_equal(failed, 0);
}

static void test_gen_secret_file(void **state)
{
    static const char secret[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"; /* 64 */
    est_config_t conf;
    est_jwt_conf_t jc;
    int failed = 0;

    /* one trailing newline is stripped */
    char *path = put_file("s1", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n", 65);
    jwt_config(&conf, &jc, NULL, path, EST_JWA_HS512);
    jc.leeway_ms = 1500;
    est_auth_gen_t *ag = est_auth_gen_create(&conf, &failed);
    assert_non_null(ag);
    assert_int_equal(failed, 0);
    assert_int_equal(ag->jwt[0].keys->count, 1);
    assert_int_equal(ag->jwt[0].keys->keys[0].secret_len, 64);
    assert_memory_equal(ag->jwt[0].keys->keys[0].secret, secret, 64);
    assert_int_equal(ag->jwt[0].policy.leeway, 2); /* rounded up, never narrowed */
    assert_int_equal(ag->jwt[0].policy.algorithms, EST_JWA_HS512);
    est_auth_gen_free(ag);

    /* only one: a second newline is part of the key (and makes it 65 bytes) */
    path = put_file("s2", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\n", 66);
    jwt_config(&conf, &jc, NULL, path, EST_JWA_HS512);
    ag = est_auth_gen_create(&conf, &failed);
    assert_non_null(ag);
    assert_int_equal(ag->jwt[0].keys->keys[0].secret_len, 65);
    est_auth_gen_free(ag);

    /* too short for the only algorithm listed (HS512 needs 64 bytes): refused at load */
    path = put_file("s3", "0123456789abcdef0123456789abcdef\n", 33);
    jwt_config(&conf, &jc, NULL, path, EST_JWA_HS512);
    assert_null(est_auth_gen_create(&conf, &failed));
    assert_int_equal(failed, 1);

    /* empty */
    failed = 0;
    path = put_file("s4", "\n", 1);
    jwt_config(&conf, &jc, NULL, path, EST_JWA_HS256);
    assert_null(est_auth_gen_create(&conf, &failed));
    assert_int_equal(failed, 1);

    /* missing */
    failed = 0;
    jwt_config(&conf, &jc, NULL, "/nonexistent/estuary/secret", EST_JWA_HS256);
    assert_null(est_auth_gen_create(&conf, &failed));
    assert_int_equal(failed, 1);
}

static void test_gen_jwks_file(void **state)
{
    size_t len;
    char *doc = read_data("jwks.json", &len);
    est_config_t conf;
    est_jwt_conf_t jc;
    int failed = 0;

    char *path = put_file("jwks.json", doc, len);
    jwt_config(&conf, &jc, path, NULL, EST_JWA_RS256 | EST_JWA_ES256);
    est_auth_gen_t *ag = est_auth_gen_create(&conf, &failed);
    assert_non_null(ag);
    assert_true(ag->jwt[0].keys->count >= 2);
    est_auth_gen_free(ag);
    free(doc);

    /* not a JWKS */
    doc = read_data("jwks_not_json.txt", &len);
    path = put_file("bad.json", doc, len);
    free(doc);
    jwt_config(&conf, &jc, path, NULL, EST_JWA_RS256);
    assert_null(est_auth_gen_create(&conf, &failed));
    assert_int_equal(failed, 1);

    /* a JWKS with no usable key */
    failed = 0;
    path = put_file("empty.json", "{\"keys\":[]}", 11);
    jwt_config(&conf, &jc, path, NULL, EST_JWA_RS256);
    assert_null(est_auth_gen_create(&conf, &failed));
    assert_int_equal(failed, 1);
}

static void test_gen_api_keys_and_routes(void **state)
{
    est_config_t conf;
    est_jwt_conf_t jc;
    est_apikey_conf_t kc = {.name = "partners", .header = "x-api-key"};
    est_claim_header_t fc[] = {{"sub", "x-user-id"}, {"tenant", "x-tenant"}};
    est_auth_ref_t refs[] = {{EST_AUTH_API_KEY, 0}, {EST_AUTH_JWT, 0}};
    est_route_conf_t routes[2];
    int failed = 0;

    char *secret = put_file("s", "0123456789abcdef0123456789abcdef", 32);
    jwt_config(&conf, &jc, NULL, secret, EST_JWA_HS256);
    jc.forward_claims = fc;
    jc.num_forward_claims = 2;
    kc.keys_file = put_file("keys.txt", "# partners\nplain-key\n", strlen("# partners\nplain-key\n"));
    conf.api_keys = &kc;
    conf.num_api_keys = 1;
    memset(routes, 0, sizeof(routes));
    routes[0].auth = refs;
    routes[0].num_auth = 2;
    routes[1].index = 1; /* open */
    conf.routes = routes;
    conf.num_routes = 2;

    est_auth_gen_t *ag = est_auth_gen_create(&conf, &failed);
    assert_non_null(ag);
    assert_true(est_apikeys_check(ag->apikeys[0].keys, "plain-key", 9));
    assert_false(est_apikeys_check(ag->apikeys[0].keys, "other", 5));
    assert_true(h2o_memis(ag->apikeys[0].header.base, ag->apikeys[0].header.len, H2O_STRLIT("x-api-key")));
    assert_int_equal(ag->routes[0].num_drop, 2);
    assert_true(h2o_memis(ag->routes[0].drop[0].base, ag->routes[0].drop[0].len, H2O_STRLIT("x-user-id")));
    assert_int_equal(ag->routes[1].num_drop, 0);
    est_auth_gen_free(ag);

    /* an unreadable keys file refuses the generation */
    kc.keys_file = "/nonexistent/estuary/keys";
    assert_null(est_auth_gen_create(&conf, &failed));
    assert_int_equal(failed, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bearer),
        cmocka_unit_test(test_key_algorithms),
        cmocka_unit_test(test_edit_headers),
        cmocka_unit_test(test_gen_nothing_configured),
        cmocka_unit_test(test_gen_secret_file),
        cmocka_unit_test(test_gen_jwks_file),
        cmocka_unit_test(test_gen_api_keys_and_routes),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
