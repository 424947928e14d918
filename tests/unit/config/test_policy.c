/*
 * Unit tests: the policy keys of the config (config/schema_policy.c, SPEC "Access control and
 * traffic policy"): "auth" (jwt, api_keys), "rate_limits", "redis", and a route's "auth",
 * "scopes", "rate_limit" and "cors". Valid configs fill every field (defaults included); a table
 * of malformed ones gives the exact "FILE:LINE:COLUMN: message" lines. Under ASan the bad
 * configs also show that a partial config is freed whole.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "helpers.h"
#include "policy/jwt.h"

/* a config file name whose folder does not exist: relative paths resolve to "no-such-dir.est/..." */
#define F "no-such-dir.est/t.json"
/* a readable regular file, by absolute path (the loader only checks that it can be read) */
#define FILE_OK TEST_DATA_DIR "/spec_example.json"
/* a config "in" the data folder: relative paths resolve there */
#define DATA_F TEST_DATA_DIR "/policy.json"

/* realpath(TEST_DATA_DIR) + "/" + name, in buf */
static const char *data_path(char *buf, size_t size, const char *name)
{
    char dir[PATH_MAX];
    assert_non_null(realpath(TEST_DATA_DIR, dir));
    snprintf(buf, size, "%s/%s", dir, name);
    return buf;
}

/* ---- valid configs --------------------------------------------------------------------- */

static const char FULL[] =
    "{\"upstreams\": {\"u\": {\"targets\": [\"http://u\"]}},\n"
    " \"auth\": {\n"
    "  \"jwt\": {\n"
    "   \"idp\": {\"jwks_url\": \"https://idp.example:8443/.well-known/jwks.json?v=2\", \"jwks_refresh\": \"10m\",\n"
    "           \"jwks_tls\": {\"verify\": false, \"ca_file\": \"spec_example.json\", \"server_name\": \"idp.internal\"},\n"
    "           \"issuer\": \"https://idp.example/\", \"audience\": [\"orders\", \"billing\"],\n"
    "           \"algorithms\": [\"RS256\", \"ES256\", \"EdDSA\", \"PS512\"], \"leeway\": \"0s\",\n"
    "           \"forward_claims\": {\"sub\": \"X-User-Id\", \"tenant\": \"X-Tenant\"}},\n"
    "   \"plain\": {\"jwks_url\": \"http://[::1]\", \"algorithms\": [\"RS256\"]},\n"
    "   \"query\": {\"jwks_url\": \"http://127.0.0.1:8080?set=a\", \"algorithms\": [\"ES384\"], \"audience\": \"one\"},\n"
    "   \"file\": {\"jwks_file\": \"spec_example.json\", \"algorithms\": [\"RS384\", \"RS384\"]},\n"
    "   \"dev\": {\"secret_file\": \"" FILE_OK "\", \"algorithms\": [\"HS256\", \"HS384\", \"HS512\"]}},\n"
    "  \"api_keys\": {\n"
    "   \"partners\": {\"keys_file\": \"spec_example.json\"},\n"
    "   \"ops\": {\"header\": \"X-Ops-Key\", \"keys_file\": \"" FILE_OK "\"}}},\n"
    " \"rate_limits\": {\n"
    "  \"per_client\": {\"rate\": 100, \"per\": \"1s\"},\n"
    "  \"per_user\": {\"rate\": 1000, \"per\": \"1m\", \"burst\": 0, \"key\": \"claim:sub\", \"store\": \"redis\"},\n"
    "  \"per_key\": {\"rate\": 5, \"per\": \"1h\", \"burst\": 7, \"key\": \"header:X-Api-Key\", \"store\": \"local\"},\n"
    "  \"global\": {\"rate\": 1, \"per\": \"1s\", \"key\": \"route\"}},\n"
    " \"redis\": {\"address\": \"redis.internal\", \"timeout\": \"20ms\", \"on_failure\": \"deny\"},\n"
    " \"routes\": [\n"
    "  {\"path\": \"/a\", \"auth\": [\"partners\", \"idp\", \"dev\"], \"scopes\": [\"orders:read\", \"x\"], \"rate_limit\": "
    "\"per_user\",\n"
    "   \"cors\": {\"origins\": [\"https://app.example\", \"http://localhost:3000\", \"https://[::1]:8443\"],\n"
    "            \"methods\": [\"GET\", \"post\"], \"headers\": [\"Authorization\", \"X-Trace\"],\n"
    "            \"expose_headers\": [\"RateLimit\"], \"credentials\": true, \"max_age\": \"10m\"},\n"
    "   \"proxy\": {\"upstream\": \"u\"}},\n"
    "  {\"path\": \"/b\", \"cors\": {\"origins\": [\"*\"], \"max_age\": \"0s\"}, \"rate_limit\": \"global\", \"proxy\": "
    "{\"upstream\": \"u\"}},\n"
    "  {\"path\": \"/c\", \"auth\": [\"ops\"], \"proxy\": {\"upstream\": \"u\"}}]}";

static void test_full(void **state)
{
    char path[PATH_MAX + 64];
    est_config_t *c = load_ok(DATA_F, FULL);

    assert_int_equal(c->num_jwt, 5);
    est_jwt_conf_t *j = &c->jwt[0];
    assert_string_equal(j->name, "idp");
    assert_int_equal(j->index, 0);
    assert_string_equal(j->jwks_url, "https://idp.example:8443/.well-known/jwks.json?v=2");
    assert_string_equal(j->jwks_path, "/.well-known/jwks.json?v=2");
    assert_null(j->jwks_file);
    assert_null(j->secret_file);
    assert_int_equal(j->jwks_refresh_ms, 600000);
    assert_string_equal(j->issuer, "https://idp.example/");
    assert_int_equal(j->num_audience, 2);
    assert_string_equal(j->audience[0], "orders");
    assert_string_equal(j->audience[1], "billing");
    assert_int_equal(j->algorithms, EST_JWA_RS256 | EST_JWA_ES256 | EST_JWA_EDDSA | EST_JWA_PS512);
    assert_int_equal(j->leeway_ms, 0);
    assert_int_equal(j->num_forward_claims, 2);
    assert_string_equal(j->forward_claims[0].claim, "sub");
    assert_string_equal(j->forward_claims[0].header, "x-user-id");
    assert_string_equal(j->forward_claims[1].claim, "tenant");
    assert_string_equal(j->forward_claims[1].header, "x-tenant");
    /* the JWKS origin as an upstream of its own */
    est_upstream_conf_t *u = j->jwks_upstream;
    assert_non_null(u);
    assert_string_equal(u->name, "jwks:idp");
    assert_int_equal(u->num_targets, 1);
    assert_int_equal(u->targets[0].is_tls, 1);
    assert_string_equal(u->targets[0].host, "idp.example");
    assert_int_equal(u->targets[0].port, 8443);
    assert_string_equal(u->targets[0].authority, "idp.example:8443");
    assert_int_equal(u->targets[0].is_ip_literal, 0);
    assert_int_equal(u->balance, EST_BALANCE_ROUND_ROBIN);
    assert_int_equal(u->connect_timeout_ms, 1000);
    assert_int_equal(u->response_timeout_ms, 5000);
    assert_int_equal(u->pool.max_connections, 256);
    assert_int_equal(u->pool.max_idle, 32);
    assert_int_equal(u->pool.idle_timeout_ms, 30000);
    assert_int_equal(u->pool.max_requests, 10000);
    assert_int_equal(u->retry.attempts, 2);
    assert_int_equal(u->retry.on, EST_RETRY_ON_CONNECT_FAILURE | EST_RETRY_ON_RESET);
    assert_int_equal(u->retry.num_statuses, 0);
    assert_int_equal(u->tls.verify, 0);
    assert_string_equal(u->tls.ca_file, data_path(path, sizeof(path), "spec_example.json"));
    assert_string_equal(u->tls.server_name, "idp.internal");

    j = &c->jwt[1]; /* defaults */
    assert_string_equal(j->name, "plain");
    assert_int_equal(j->index, 1);
    assert_string_equal(j->jwks_path, "/");
    assert_int_equal(j->jwks_refresh_ms, 300000);
    assert_int_equal(j->leeway_ms, 30000);
    assert_null(j->issuer);
    assert_null(j->audience);
    assert_int_equal(j->num_audience, 0);
    assert_int_equal(j->num_forward_claims, 0);
    assert_string_equal(j->jwks_upstream->targets[0].host, "::1");
    assert_string_equal(j->jwks_upstream->targets[0].authority, "[::1]");
    assert_int_equal(j->jwks_upstream->targets[0].port, 80);
    assert_int_equal(j->jwks_upstream->targets[0].is_tls, 0);
    assert_int_equal(j->jwks_upstream->tls.verify, 1);
    assert_null(j->jwks_upstream->tls.ca_file);

    j = &c->jwt[2];
    assert_string_equal(j->jwks_path, "/?set=a");
    assert_string_equal(j->jwks_upstream->targets[0].authority, "127.0.0.1:8080");
    assert_int_equal(j->num_audience, 1);
    assert_string_equal(j->audience[0], "one");
    assert_int_equal(j->algorithms, EST_JWA_ES384);

    j = &c->jwt[3];
    assert_null(j->jwks_url);
    assert_null(j->jwks_upstream);
    assert_null(j->jwks_path);
    assert_string_equal(j->jwks_file, data_path(path, sizeof(path), "spec_example.json"));
    assert_int_equal(j->algorithms, EST_JWA_RS384);

    j = &c->jwt[4];
    assert_string_equal(j->secret_file, FILE_OK);
    assert_int_equal(j->algorithms, EST_JWA_HS256 | EST_JWA_HS384 | EST_JWA_HS512);

    assert_int_equal(c->num_api_keys, 2);
    assert_string_equal(c->api_keys[0].name, "partners");
    assert_int_equal(c->api_keys[0].index, 0);
    assert_string_equal(c->api_keys[0].header, "x-api-key");
    assert_string_equal(c->api_keys[0].keys_file, data_path(path, sizeof(path), "spec_example.json"));
    assert_string_equal(c->api_keys[1].name, "ops");
    assert_int_equal(c->api_keys[1].index, 1);
    assert_string_equal(c->api_keys[1].header, "x-ops-key");
    assert_string_equal(c->api_keys[1].keys_file, FILE_OK);

    assert_int_equal(c->num_rate_limits, 4);
    est_rate_limit_conf_t *rl = &c->rate_limits[0];
    assert_string_equal(rl->name, "per_client");
    assert_int_equal(rl->index, 0);
    assert_int_equal(rl->rate, 100);
    assert_int_equal(rl->per_ms, 1000);
    assert_int_equal(rl->burst, 100); /* default: rate */
    assert_int_equal(rl->key_kind, EST_RL_KEY_CLIENT_IP);
    assert_null(rl->key_name);
    assert_int_equal(rl->store, EST_RL_STORE_LOCAL);
    rl = &c->rate_limits[1];
    assert_int_equal(rl->per_ms, 60000);
    assert_int_equal(rl->burst, 0);
    assert_int_equal(rl->key_kind, EST_RL_KEY_CLAIM);
    assert_string_equal(rl->key_name, "sub");
    assert_int_equal(rl->store, EST_RL_STORE_REDIS);
    rl = &c->rate_limits[2];
    assert_int_equal(rl->burst, 7);
    assert_int_equal(rl->key_kind, EST_RL_KEY_HEADER);
    assert_string_equal(rl->key_name, "x-api-key");
    assert_int_equal(rl->store, EST_RL_STORE_LOCAL);
    rl = &c->rate_limits[3];
    assert_int_equal(rl->key_kind, EST_RL_KEY_ROUTE);
    assert_null(rl->key_name);

    assert_non_null(c->redis);
    assert_string_equal(c->redis->host, "redis.internal");
    assert_int_equal(c->redis->port, 6379);
    assert_int_equal(c->redis->timeout_ms, 20);
    assert_int_equal(c->redis->on_failure_deny, 1);

    assert_int_equal(c->num_routes, 3);
    est_route_conf_t *r = &c->routes[0];
    assert_int_equal(r->num_auth, 3);
    assert_int_equal(r->auth[0].kind, EST_AUTH_API_KEY);
    assert_int_equal(r->auth[0].index, 0);
    assert_int_equal(r->auth[1].kind, EST_AUTH_JWT);
    assert_int_equal(r->auth[1].index, 0);
    assert_int_equal(r->auth[2].kind, EST_AUTH_JWT);
    assert_int_equal(r->auth[2].index, 4);
    assert_int_equal(r->num_scopes, 2);
    assert_string_equal(r->scopes[0], "orders:read");
    assert_string_equal(r->scopes[1], "x");
    assert_ptr_equal(r->rate_limit, &c->rate_limits[1]);
    est_cors_conf_t *cors = r->cors;
    assert_non_null(cors);
    assert_int_equal(cors->num_origins, 3);
    assert_string_equal(cors->origins[0], "https://app.example");
    assert_string_equal(cors->origins[1], "http://localhost:3000");
    assert_string_equal(cors->origins[2], "https://[::1]:8443");
    assert_int_equal(cors->any_origin, 0);
    assert_int_equal(cors->methods, EST_METHOD_GET | EST_METHOD_POST);
    assert_int_equal(cors->num_headers, 2);
    assert_string_equal(cors->headers[0], "authorization");
    assert_string_equal(cors->headers[1], "x-trace");
    assert_int_equal(cors->num_expose_headers, 1);
    assert_string_equal(cors->expose_headers[0], "RateLimit"); /* as written */
    assert_int_equal(cors->credentials, 1);
    assert_int_equal(cors->has_max_age, 1);
    assert_int_equal(cors->max_age_ms, 600000);

    r = &c->routes[1];
    assert_int_equal(r->num_auth, 0);
    assert_null(r->auth);
    assert_int_equal(r->num_scopes, 0);
    assert_ptr_equal(r->rate_limit, &c->rate_limits[3]);
    assert_non_null(r->cors);
    assert_int_equal(r->cors->any_origin, 1);
    assert_int_equal(r->cors->num_origins, 0);
    assert_int_equal(r->cors->methods, 0); /* the route's own */
    assert_int_equal(r->cors->num_headers, 0);
    assert_int_equal(r->cors->credentials, 0);
    assert_int_equal(r->cors->has_max_age, 1);
    assert_int_equal(r->cors->max_age_ms, 0);

    r = &c->routes[2];
    assert_int_equal(r->num_auth, 1);
    assert_int_equal(r->auth[0].kind, EST_AUTH_API_KEY);
    assert_int_equal(r->auth[0].index, 1);
    assert_null(r->rate_limit);
    assert_null(r->cors);
    est_config_free(c);
}

static void test_no_policy(void **state)
{
    est_config_t *c = load_ok(F, "{\"upstreams\": {\"u\": {\"targets\": [\"http://u\"]}},\n"
                                 " \"routes\": [{\"path\": \"/a\", \"proxy\": {\"upstream\": \"u\"}}]}");
    assert_int_equal(c->num_jwt, 0);
    assert_null(c->jwt);
    assert_int_equal(c->num_api_keys, 0);
    assert_int_equal(c->num_rate_limits, 0);
    assert_null(c->redis);
    assert_null(c->routes[0].auth);
    assert_int_equal(c->routes[0].num_auth, 0);
    assert_null(c->routes[0].scopes);
    assert_null(c->routes[0].rate_limit);
    assert_null(c->routes[0].cors);
    est_config_free(c);

    /* empty sections are fine; a redis section without a redis store too */
    c = load_ok(F, "{\"auth\": {\"jwt\": {}, \"api_keys\": {}}, \"rate_limits\": {}, \"redis\": {\"address\": \"127.0.0.1\"}}");
    assert_int_equal(c->num_jwt, 0);
    assert_int_equal(c->num_rate_limits, 0);
    assert_non_null(c->redis);
    assert_int_equal(c->redis->timeout_ms, 50);
    assert_int_equal(c->redis->on_failure_deny, 0);
    est_config_free(c);
}

static void test_redis_addresses(void **state)
{
    static const struct {
        const char *address, *host;
        uint16_t port;
    } cases[] = {
        {"127.0.0.1", "127.0.0.1", 6379},
        {"127.0.0.1:6380", "127.0.0.1", 6380},
        {"[::1]:7000", "::1", 7000},
        {"[::1]", "::1", 6379},
        {"::1", "::1", 6379},
        {"redis.internal:6390", "redis.internal", 6390},
        {"localhost", "localhost", 6379},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[256];
        snprintf(text, sizeof(text), "{\"redis\": {\"address\": \"%s\", \"on_failure\": \"allow\"}}", cases[i].address);
        est_config_t *c = load_ok(F, text);
        assert_string_equal(c->redis->host, cases[i].host);
        assert_int_equal(c->redis->port, cases[i].port);
        assert_int_equal(c->redis->on_failure_deny, 0);
        est_config_free(c);
    }
}

/* every algorithm of policy/jwt.h by its RFC 7518 / RFC 8037 name, to its bit */
static void test_algorithm_names(void **state)
{
    static const struct {
        const char *name;
        unsigned bit;
    } algs[] = {{"HS256", EST_JWA_HS256}, {"HS384", EST_JWA_HS384}, {"HS512", EST_JWA_HS512}, {"RS256", EST_JWA_RS256},
                {"RS384", EST_JWA_RS384}, {"RS512", EST_JWA_RS512}, {"PS256", EST_JWA_PS256}, {"PS384", EST_JWA_PS384},
                {"PS512", EST_JWA_PS512}, {"ES256", EST_JWA_ES256}, {"ES384", EST_JWA_ES384}, {"EdDSA", EST_JWA_EDDSA}};
    for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
        char text[512];
        snprintf(text, sizeof(text), "{\"auth\": {\"jwt\": {\"p\": {\"jwks_file\": \"%s\", \"algorithms\": [\"%s\"]}}}}", FILE_OK,
                 algs[i].name);
        est_config_t *c = load_ok(F, text);
        assert_int_equal(c->jwt[0].algorithms, algs[i].bit);
        est_config_free(c);
    }
}

/* ---- malformed configs ----------------------------------------------------------------- */

/* loaded as DATA_F: "spec_example.json" names a readable file, and the positions do not
 * depend on where the tree is */

static const bad_case_t bad_cases[] = {
    {"auth: wrong types",
     "{\"auth\": {\"jwt\": [], \"api_keys\": {\"k\": 1}, \"oidc\": {}}}",
     {DATA_F ":1:18: auth.jwt: expected an object, got an array",
      DATA_F ":1:40: auth.api_keys.k: expected an object such as {\"keys_file\": \"keys/partners.txt\"}, got an integer",
      DATA_F ":1:44: unknown key \"oidc\" in auth"}},
    {"auth: not an object", "{\"auth\": []}", {DATA_F ":1:10: auth: expected an object, got an array"}},
    {"jwt: no key source",
     "{\"auth\": {\"jwt\": {\"a\": {\"algorithms\": [\"RS256\"]},\n"
     "  \"b\": 3}}}",
     {DATA_F ":1:24: auth.jwt.a: missing the keys: one of \"jwks_url\", \"jwks_file\" or \"secret_file\"",
      DATA_F ":2:8: auth.jwt.b: expected an object such as {\"jwks_file\": \"keys/jwks.json\", \"algorithms\": [\"RS256\"]}, got "
             "an integer"}},
    {"jwt: two key sources",
     "{\"auth\": {\"jwt\": {\"a\": {\"secret_file\": \"spec_example.json\",\n"
     "  \"jwks_file\": \"spec_example.json\", \"jwks_url\": \"http://idp/jwks\", \"algorithms\": [\"HS256\"]}}}}",
     {DATA_F ":1:25: auth.jwt.a.secret_file: use only one of \"jwks_url\", \"jwks_file\" and \"secret_file\" (\"jwks_url\" is set)",
      DATA_F ":2:3: auth.jwt.a.jwks_file: use only one of \"jwks_url\", \"jwks_file\" and \"secret_file\" (\"jwks_url\" is set)"}},
    {"jwt: algorithms",
     "{\"auth\": {\"jwt\": {\n"
     "  \"a\": {\"secret_file\": \"spec_example.json\"},\n"
     "  \"b\": {\"secret_file\": \"spec_example.json\", \"algorithms\": []},\n"
     "  \"c\": {\"secret_file\": \"spec_example.json\", \"algorithms\": \"HS256\"},\n"
     "  \"d\": {\"secret_file\": \"spec_example.json\", \"algorithms\": [\"none\", \"NONE\", \"rs256\", 5, \"HS256\"]}}}}",
     {DATA_F ":2:8: auth.jwt.a: missing \"algorithms\" (the JWS algorithms accepted, e.g. [\"RS256\"])",
      DATA_F ":3:59: auth.jwt.b.algorithms: must list at least one algorithm",
      DATA_F ":4:59: auth.jwt.c.algorithms: expected an array such as [\"RS256\", \"ES256\"], got a string",
      DATA_F ":5:60: auth.jwt.d.algorithms[0]: \"none\" is never accepted: a token must be signed (RFC 8725 §3.1)",
      DATA_F ":5:68: auth.jwt.d.algorithms[1]: \"none\" is never accepted: a token must be signed (RFC 8725 §3.1)",
      DATA_F ":5:76: auth.jwt.d.algorithms[2]: unknown algorithm \"rs256\" (use HS256, HS384, HS512, RS256, RS384, RS512, PS256, "
             "PS384, PS512, ES256, ES384 or EdDSA)",
      DATA_F ":5:85: auth.jwt.d.algorithms[3]: expected an algorithm name such as \"RS256\", got an integer"}},
    {"jwt: jwks_url",
     "{\"auth\": {\"jwt\": {\n"
     "  \"a\": {\"jwks_url\": \"idp/jwks\", \"algorithms\": [\"RS256\"]},\n"
     "  \"b\": {\"jwks_url\": \"https://idp/jwks#frag\", \"algorithms\": [\"RS256\"]},\n"
     "  \"c\": {\"jwks_url\": \"https://user@idp/jwks\", \"algorithms\": [\"RS256\"]},\n"
     "  \"d\": {\"jwks_url\": \"https://idp:99999/jwks\", \"algorithms\": [\"RS256\"]},\n"
     "  \"e\": {\"jwks_url\": \"https://idp/a b\", \"algorithms\": [\"RS256\"]},\n"
     "  \"f\": {\"jwks_url\": \"\", \"algorithms\": [\"RS256\"]}}}}",
     {DATA_F ":2:21: auth.jwt.a.jwks_url: bad URL \"idp/jwks\": it must start with http:// or https://",
      DATA_F ":3:21: auth.jwt.b.jwks_url: bad URL \"https://idp/jwks#frag\": a fragment (#) is not allowed",
      DATA_F ":4:21: auth.jwt.c.jwks_url: bad URL \"https://user@idp/jwks\": user info (user@) is not allowed",
      DATA_F ":5:21: auth.jwt.d.jwks_url: bad URL \"https://idp:99999/jwks\": bad port (use 1 to 65535)",
      DATA_F ":6:21: auth.jwt.e.jwks_url: bad URL \"https://idp/a b\": the path must not contain spaces, control or non-ASCII "
             "characters (percent-encode them)",
      DATA_F ":7:21: auth.jwt.f.jwks_url: must not be empty"}},
    {"jwt: settings only for jwks_url",
     "{\"auth\": {\"jwt\": {\n"
     "  \"a\": {\"jwks_file\": \"spec_example.json\", \"algorithms\": [\"RS256\"], \"jwks_refresh\": \"1m\", \"jwks_tls\": "
     "{\"verify\": false}},\n"
     "  \"b\": {\"jwks_url\": \"http://idp/k\", \"algorithms\": [\"RS256\"], \"jwks_refresh\": \"0s\", \"jwks_tls\": {\"verify\": "
     "1}},\n"
     "  \"c\": {\"jwks_url\": \"https://idp/k\", \"algorithms\": [\"RS256\"], \"jwks_tls\": {\"ca_file\": "
     "\"/nonexistent/nope.pem\", \"sni\": "
     "\"x\"}}}}}",
     {DATA_F ":2:68: auth.jwt.a.jwks_refresh: applies only with \"jwks_url\"",
      DATA_F ":2:90: auth.jwt.a.jwks_tls: applies only with \"jwks_url\"",
      DATA_F ":3:78: auth.jwt.b.jwks_refresh: must be more than 0s",
      DATA_F ":3:84: auth.jwt.b.jwks_tls: applies only to an https:// jwks_url",
      DATA_F ":3:107: auth.jwt.b.jwks_tls.verify: expected true or false, got an integer",
      DATA_F ":4:87: auth.jwt.c.jwks_tls.ca_file: cannot read \"/nonexistent/nope.pem\": No such file or directory",
      DATA_F ":4:112: unknown key \"sni\" in auth.jwt.c.jwks_tls"}},
    {"jwt: claims, audience, issuer, leeway",
     "{\"auth\": {\"jwt\": {\"a\": {\"secret_file\": \"spec_example.json\", \"algorithms\": [\"HS256\"],\n"
     "  \"issuer\": \"\", \"audience\": [], \"leeway\": \"-1s\",\n"
     "  \"forward_claims\": {\"sub\": \"X-User\", \"uid\": \"x-user\", \"\": \"x-a\", \"n\": 1, \"h\": \"Content-Length\", \"s\": "
     "\"a b\"}},\n"
     "  \"b\": {\"secret_file\": \"spec_example.json\", \"algorithms\": [\"HS256\"], \"audience\": [\"x\", 2, \"\"], "
     "\"forward_claims\": []},\n"
     "  \"c\": {\"secret_file\": \"spec_example.json\", \"algorithms\": [\"HS256\"], \"audience\": 7, \"algorithm\": 1}}}}",
     {DATA_F ":2:13: auth.jwt.a.issuer: must not be empty", DATA_F ":2:29: auth.jwt.a.audience: must list at least one audience",
      DATA_F ":2:43: auth.jwt.a.leeway: bad duration \"-1s\" (use e.g. \"250ms\", \"5s\", \"1m30s\")",
      DATA_F ":3:46: auth.jwt.a.forward_claims.uid: header \"x-user\" is already filled from claim \"sub\"",
      DATA_F ":3:56: auth.jwt.a.forward_claims[\"\"]: a claim name cannot be empty",
      DATA_F ":3:72: auth.jwt.a.forward_claims.n: expected a header name such as \"x-user-id\", got an integer",
      DATA_F
      ":3:80: auth.jwt.a.forward_claims.h: \"content-length\" is a connection or framing header: a claim cannot be copied into it",
      DATA_F ":3:103: auth.jwt.a.forward_claims.s: bad header name \"a b\" (letters, digits and !#$%&'*+-.^_`|~ only)",
      DATA_F ":4:88: auth.jwt.b.audience[1]: expected a string, got an integer",
      DATA_F ":4:91: auth.jwt.b.audience[2]: must not be empty",
      DATA_F ":4:114: auth.jwt.b.forward_claims: expected an object, got an array",
      DATA_F ":5:82: auth.jwt.c.audience: expected a string or an array of strings, got an integer",
      DATA_F ":5:85: unknown key \"algorithm\" in auth.jwt.c (did you mean \"algorithms\"?)"}},
    {"jwt: missing files are reported at the value",
     "{\"auth\": {\"jwt\": {\"a\": {\"secret_file\": \"/nonexistent/none.key\", \"algorithms\": [\"HS256\"]},\n"
     "  \"b\": {\"jwks_file\": \"/nonexistent/none.json\", \"algorithms\": [\"RS256\"]}},\n"
     "  \"api_keys\": {\"k\": {\"keys_file\": \"/nonexistent/none.txt\"}}}}",
     {DATA_F ":1:40: auth.jwt.a.secret_file: cannot read \"/nonexistent/none.key\": No such file or directory",
      DATA_F ":2:22: auth.jwt.b.jwks_file: cannot read \"/nonexistent/none.json\": No such file or directory",
      DATA_F ":3:35: auth.api_keys.k.keys_file: cannot read \"/nonexistent/none.txt\": No such file or directory"}},
    {"api keys",
     "{\"auth\": {\"jwt\": {\"dup\": {\"secret_file\": \"spec_example.json\", \"algorithms\": [\"HS256\"]}},\n"
     "  \"api_keys\": {\"dup\": {\"keys_file\": \"spec_example.json\"}, \"a\": {}, \"b\": {\"header\": \"x key\", \"keys_file\": "
     "\"spec_example.json\"},\n"
     "  \"c\": {\"header\": \"Connection\", \"keys_file\": \"spec_example.json\", \"file\": 1}, \"bad name\": {\"keys_file\": "
     "\"spec_example.json\"}, \"d\": []}}}",
     {DATA_F ":2:16: auth.api_keys.dup: policy name \"dup\" is already used by auth.jwt",
      DATA_F ":2:64: auth.api_keys.a: missing \"keys_file\"",
      DATA_F ":2:84: auth.api_keys.b.header: bad header name \"x key\" (letters, digits and !#$%&'*+-.^_`|~ only)",
      DATA_F ":3:19: auth.api_keys.c.header: \"connection\" is a connection or framing header, not one for a key",
      DATA_F ":3:67: unknown key \"file\" in auth.api_keys.c",
      DATA_F ":3:79: auth.api_keys[\"bad name\"]: bad policy name \"bad name\" (use letters, digits, '_', '-' and '.')",
      DATA_F ":3:132: auth.api_keys.d: expected an object such as {\"keys_file\": \"keys/partners.txt\"}, got an array"}},
    {"rate limits",
     "{\"rate_limits\": {\n"
     "  \"a\": {},\n"
     "  \"b\": {\"rate\": 0, \"per\": \"0s\", \"burst\": -1},\n"
     "  \"c\": {\"rate\": 1, \"per\": \"8761h\"},\n"
     "  \"d\": {\"rate\": 1, \"per\": \"1h\", \"burst\": 9000},\n"
     "  \"e\": {\"rate\": 1, \"per\": \"1s\", \"key\": \"ip\", \"store\": \"memcached\"},\n"
     "  \"f\": {\"rate\": 1, \"per\": \"1s\", \"key\": \"header:a b\"},\n"
     "  \"g\": {\"rate\": 1, \"per\": \"1s\", \"key\": \"claim:\"},\n"
     "  \"h\": {\"rate\": 1, \"per\": \"1s\", \"store\": \"redis\", \"rate_\": 2},\n"
     "  \"i\": 5}}",
     {DATA_F ":2:8: rate_limits.a: missing \"rate\"", DATA_F ":2:8: rate_limits.a: missing \"per\"",
      DATA_F ":3:17: rate_limits.b.rate: expected an integer from 1 to 1000000000, got 0",
      DATA_F ":3:27: rate_limits.b.per: must be more than 0s",
      DATA_F ":3:42: rate_limits.b.burst: expected an integer from 0 to 1000000000, got -1",
      DATA_F ":4:27: rate_limits.c.per: must be at most 8760h (a year)",
      DATA_F ":5:42: rate_limits.d.burst: a burst of 9000 at 1 per 1h takes more than a year to refill",
      DATA_F ":6:40: rate_limits.e.key: unknown key \"ip\" (use \"client_ip\", \"route\", \"header:NAME\" or \"claim:NAME\")",
      DATA_F ":6:55: rate_limits.e.store: unknown store \"memcached\" (use \"local\" or \"redis\")",
      DATA_F ":7:40: rate_limits.f.key: bad header name \"a b\" in \"header:NAME\"",
      DATA_F ":8:40: rate_limits.g.key: missing the claim name in \"claim:NAME\"",
      DATA_F ":9:42: rate_limits.h.store: \"redis\" needs a top-level \"redis\" section with its \"address\"",
      DATA_F ":9:51: unknown key \"rate_\" in rate_limits.h (did you mean \"rate\"?)",
      DATA_F ":10:8: rate_limits.i: expected an object such as {\"rate\": 100, \"per\": \"1s\"}, got an integer"}},
    {"redis",
     "{\"redis\": {\"address\": \"127.0.0.1:0\", \"timeout\": \"0s\", \"on_failure\": \"ignore\", \"db\": 1},\n"
     " \"rate_limits\": {\"r\": {\"rate\": 1, \"per\": \"1s\", \"store\": \"redis\"}}}",
     {DATA_F ":1:23: redis.address: bad address \"127.0.0.1:0\": bad port (use 1 to 65535); use e.g. \"127.0.0.1:6379\", "
             "\"[::1]:6379\" or \"redis.internal:6379\"",
      DATA_F ":1:49: redis.timeout: must be more than 0s",
      DATA_F ":1:69: redis.on_failure: unknown on_failure \"ignore\" (use \"allow\" or \"deny\")",
      DATA_F ":1:79: unknown key \"db\" in redis"}},
    {"redis: addresses",
     "{\"redis\": {\"address\": \"[::1\"}}",
     {DATA_F ":1:23: redis.address: bad address \"[::1\": missing ']' after the IPv6 address; use e.g. \"127.0.0.1:6379\", "
             "\"[::1]:6379\" or \"redis.internal:6379\""}},
    {"redis: missing address", "{\"redis\": {}}", {DATA_F ":1:11: redis: missing \"address\""}},
    {"redis: bad host",
     "{\"redis\": {\"address\": \"bad host:6379\"}}",
     {DATA_F ":1:23: redis.address: bad address \"bad host:6379\": bad host: not an IP address nor a DNS name; use e.g. "
             "\"127.0.0.1:6379\", \"[::1]:6379\" or \"redis.internal:6379\""}},
    {"redis: bad IPv4",
     "{\"redis\": {\"address\": \"300.1.1.1\"}}",
     {DATA_F ":1:23: redis.address: bad address \"300.1.1.1\": bad host: not an IP address nor a DNS name; use e.g. "
             "\"127.0.0.1:6379\", \"[::1]:6379\" or \"redis.internal:6379\""}},
    {"redis: not an object", "{\"redis\": \"127.0.0.1\"}", {DATA_F ":1:11: redis: expected an object, got a string"}},
    {"route auth",
     "{\"upstreams\": {\"u\": {\"targets\": [\"http://u\"]}},\n"
     " \"auth\": {\"jwt\": {\"idp\": {\"secret_file\": \"spec_example.json\", \"algorithms\": [\"HS256\"]}},\n"
     "          \"api_keys\": {\"partners\": {\"keys_file\": \"spec_example.json\"}}},\n"
     " \"routes\": [\n"
     "  {\"path\": \"/a\", \"auth\": [\"ipd\", \"partner\", \"zzzzzz\", 3], \"proxy\": {\"upstream\": \"u\"}},\n"
     "  {\"path\": \"/b\", \"auth\": [], \"proxy\": {\"upstream\": \"u\"}},\n"
     "  {\"path\": \"/c\", \"auth\": \"idp\", \"proxy\": {\"upstream\": \"u\"}}]}",
     {DATA_F ":5:27: routes[0].auth[0]: auth policy \"ipd\" is not defined in auth.jwt or auth.api_keys (did you mean \"idp\"?)",
      DATA_F
      ":5:34: routes[0].auth[1]: auth policy \"partner\" is not defined in auth.jwt or auth.api_keys (did you mean \"partners\"?)",
      DATA_F ":5:45: routes[0].auth[2]: auth policy \"zzzzzz\" is not defined in auth.jwt or auth.api_keys",
      DATA_F ":5:55: routes[0].auth[3]: expected a policy name, got an integer",
      DATA_F ":6:26: routes[1].auth: must name at least one policy (or leave \"auth\" out for an open route)",
      DATA_F ":7:26: routes[2].auth: expected an array of policy names such as [\"idp\"], got a string"}},
    {"route scopes",
     "{\"upstreams\": {\"u\": {\"targets\": [\"http://u\"]}},\n"
     " \"auth\": {\"jwt\": {\"idp\": {\"secret_file\": \"spec_example.json\", \"algorithms\": [\"HS256\"]}},\n"
     "          \"api_keys\": {\"partners\": {\"keys_file\": \"spec_example.json\"}}},\n"
     " \"routes\": [\n"
     "  {\"path\": \"/a\", \"scopes\": [\"read\"], \"proxy\": {\"upstream\": \"u\"}},\n"
     "  {\"path\": \"/b\", \"auth\": [\"partners\"], \"scopes\": [\"read\"], \"proxy\": {\"upstream\": \"u\"}},\n"
     "  {\"path\": \"/c\", \"auth\": [\"idp\"], \"scopes\": [\"a b\", \"\", 1, \"q\\\"\"], \"proxy\": {\"upstream\": \"u\"}},\n"
     "  {\"path\": \"/d\", \"auth\": [\"idp\"], \"scopes\": [], \"proxy\": {\"upstream\": \"u\"}}]}",
     {DATA_F ":5:18: routes[0].scopes: scopes are checked in a JWT: the route needs an \"auth\" naming a jwt policy",
      DATA_F ":6:40: routes[1].scopes: scopes are checked in a JWT: the route's \"auth\" must name a jwt policy",
      DATA_F ":7:46: routes[2].scopes[0]: bad scope \"a b\" (no spaces, quotes, backslashes or control characters)",
      DATA_F ":7:53: routes[2].scopes[1]: must not be empty",
      DATA_F ":7:57: routes[2].scopes[2]: expected a string, got an integer",
      DATA_F ":7:60: routes[2].scopes[3]: bad scope \"q\"\" (no spaces, quotes, backslashes or control characters)",
      DATA_F ":8:45: routes[3].scopes: must list at least one scope"}},
    {"route rate_limit",
     "{\"upstreams\": {\"u\": {\"targets\": [\"http://u\"]}},\n"
     " \"auth\": {\"jwt\": {\"idp\": {\"secret_file\": \"spec_example.json\", \"algorithms\": [\"HS256\"]}},\n"
     "          \"api_keys\": {\"partners\": {\"keys_file\": \"spec_example.json\"}}},\n"
     " \"rate_limits\": {\"per_user\": {\"rate\": 1, \"per\": \"1s\", \"key\": \"claim:sub\"}},\n"
     " \"routes\": [\n"
     "  {\"path\": \"/a\", \"rate_limit\": \"per_usr\", \"proxy\": {\"upstream\": \"u\"}},\n"
     "  {\"path\": \"/b\", \"rate_limit\": \"per_user\", \"proxy\": {\"upstream\": \"u\"}},\n"
     "  {\"path\": \"/c\", \"auth\": [\"partners\"], \"rate_limit\": \"per_user\", \"proxy\": {\"upstream\": \"u\"}},\n"
     "  {\"path\": \"/d\", \"rate_limit\": 1, \"proxy\": {\"upstream\": \"u\"}}]}",
     {DATA_F ":6:32: routes[0].rate_limit: rate limit \"per_usr\" is not defined in rate_limits (did you mean \"per_user\"?)",
      DATA_F ":7:32: routes[1].rate_limit: rate limit \"per_user\" is keyed by a claim (\"claim:sub\"): the route's \"auth\" must "
             "name a jwt policy",
      DATA_F ":8:54: routes[2].rate_limit: rate limit \"per_user\" is keyed by a claim (\"claim:sub\"): the route's \"auth\" must "
             "name a jwt policy",
      DATA_F ":9:32: routes[3].rate_limit: expected a string, got an integer"}},
    {"route cors",
     "{\"upstreams\": {\"u\": {\"targets\": [\"http://u\"]}},\n"
     " \"routes\": [\n"
     "  {\"path\": \"/a\", \"cors\": {\"origins\": [\"*\"], \"credentials\": true}, \"proxy\": {\"upstream\": \"u\"}},\n"
     "  {\"path\": \"/b\", \"cors\": {\"methods\": [\"GET\"]}, \"proxy\": {\"upstream\": \"u\"}},\n"
     "  {\"path\": \"/c\", \"cors\": {\"origins\": []}, \"proxy\": {\"upstream\": \"u\"}},\n"
     "  {\"path\": \"/d\", \"cors\": {\"origins\": [\"https://a.example/\", \"ftp://a\", \"https://A.example\", \"http://a:80\",\n"
     "    \"http://a:0080\", \"https://a:x\", \"null\", \"\", 1, \"https://[::1]:8443\", \"*\"]}, \"proxy\": {\"upstream\": "
     "\"u\"}},\n"
     "  {\"path\": \"/e\", \"cors\": {\"origins\": [\"https://a\"], \"methods\": [\"FETCH\"], \"headers\": [\"a b\"],\n"
     "    \"expose_headers\": \"x\", \"credentials\": \"yes\", \"max_age\": \"1x\", \"max-age\": 1}, \"proxy\": {\"upstream\": "
     "\"u\"}},\n"
     "  {\"path\": \"/f\", \"cors\": [], \"proxy\": {\"upstream\": \"u\"}}]}",
     {DATA_F ":3:60: routes[0].cors.credentials: \"origins\": [\"*\"] cannot be used with credentials (list the origins instead)",
      DATA_F ":4:26: routes[1].cors: missing \"origins\" (the allowed origins, e.g. [\"https://app.example\"], or [\"*\"])",
      DATA_F ":5:38: routes[2].cors.origins: must list at least one origin (or [\"*\"])",
      DATA_F ":6:39: routes[3].cors.origins[0]: bad origin \"https://a.example/\": an origin has no path, query or fragment (no "
             "trailing '/')",
      DATA_F ":6:61: routes[3].cors.origins[1]: bad origin \"ftp://a\": the scheme must be http or https, in lower case",
      DATA_F ":6:72: routes[3].cors.origins[2]: bad origin \"https://A.example\": an origin is compared as the browser sends it: "
             "write it in lower case",
      DATA_F ":6:93: routes[3].cors.origins[3]: bad origin \"http://a:80\": write the port as the browser does: without the "
             "scheme's default port or leading zeros",
      DATA_F ":7:5: routes[3].cors.origins[4]: bad origin \"http://a:0080\": write the port as the browser does: without the "
             "scheme's default port or leading zeros",
      DATA_F ":7:22: routes[3].cors.origins[5]: bad origin \"https://a:x\": bad port (use 1 to 65535)",
      DATA_F ":7:37: routes[3].cors.origins[6]: bad origin \"null\": expected \"*\" or an origin such as \"https://app.example\"",
      DATA_F ":7:45: routes[3].cors.origins[7]: expected an origin such as \"https://app.example\", got an empty string",
      DATA_F ":7:49: routes[3].cors.origins[8]: expected an origin such as \"https://app.example\", got an integer",
      DATA_F ":7:74: routes[3].cors.origins[10]: \"*\" allows every origin: list it alone",
      DATA_F ":8:65: routes[4].cors.methods[0]: unknown method \"FETCH\" (use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS)",
      DATA_F ":8:87: routes[4].cors.headers[0]: bad header name \"a b\" (letters, digits and !#$%&'*+-.^_`|~ only)",
      DATA_F ":9:23: routes[4].cors.expose_headers: expected an array of strings, got a string",
      DATA_F ":9:43: routes[4].cors.credentials: expected true or false, got a string",
      DATA_F ":9:61: routes[4].cors.max_age: bad duration \"1x\" (use e.g. \"250ms\", \"5s\", \"1m30s\")",
      DATA_F ":9:67: unknown key \"max-age\" in routes[4].cors (did you mean \"max_age\"?)",
      DATA_F ":10:26: routes[5].cors: expected an object such as {\"origins\": [\"https://app.example\"]}, got an array"}},
};

static void test_bad_configs(void **state)
{
    run_bad_cases(DATA_F, bad_cases, sizeof(bad_cases) / sizeof(bad_cases[0]));
}

/* many policies and many routes naming them: lookups by hash, suggestions only among a few */
static void test_many_policies(void **state)
{
    size_t n = 2000, cap = n * (strlen(FILE_OK) + 300) + 1024, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    len += (size_t)snprintf(text + len, cap - len,
                            "{\"upstreams\": {\"u\": {\"targets\": [\"http://u\"]}},\n \"auth\": {\"api_keys\": {");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(text + len, cap - len, "%s\"k%zu\": {\"keys_file\": \"" FILE_OK "\"}", i ? ", " : "", i);
    len += (size_t)snprintf(text + len, cap - len, "}},\n \"rate_limits\": {");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(text + len, cap - len, "%s\"r%zu\": {\"rate\": 1, \"per\": \"1s\"}", i ? ", " : "", i);
    len += (size_t)snprintf(text + len, cap - len, "},\n \"routes\": [");
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(
            text + len, cap - len,
            "%s{\"path\": \"/p%zu\", \"auth\": [\"k%zu\", \"k%zu\"], \"rate_limit\": \"r%zu\", \"proxy\": {\"upstream\": \"u\"}}",
            i ? ", " : "", i, i, n - 1 - i, i);
    len += (size_t)snprintf(text + len, cap - len, "]}");
    assert_true(len < cap);
    est_config_t *c = load_ok(F, text);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(c->routes[i].num_auth, 2);
        assert_int_equal(c->routes[i].auth[0].index, i);
        assert_int_equal(c->routes[i].auth[1].index, n - 1 - i);
        assert_ptr_equal(c->routes[i].rate_limit, &c->rate_limits[i]);
    }
    est_config_free(c);

    /* an unknown name among more than 256 policies: reported, without a suggestion */
    char *p = strstr(text, "\"auth\": [\"k0\"");
    assert_non_null(p);
    memcpy(p + 10, "q", 1);
    est_errors_t errs = {0};
    assert_null(est_config_load_buffer(F, text, strlen(text), &errs));
    assert_int_equal(errs.count, 1);
    assert_non_null(strstr(errs.items[0], "auth policy \"q0\" is not defined in auth.jwt or auth.api_keys"));
    assert_null(strstr(errs.items[0], "did you mean"));
    est_errors_clear(&errs);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_no_policy),
        cmocka_unit_test(test_redis_addresses),
        cmocka_unit_test(test_algorithm_names),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_many_policies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
