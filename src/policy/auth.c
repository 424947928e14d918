/*
 * estuary - the auth stage: JWT and API key policies on routes with "auth" (SPEC "Access
 * control and traffic policy", docs/policy.md).
 *
 * Where the work happens:
 *   - est_auth_gen_create (main thread, once per configuration): every jwks_file,
 *     secret_file and keys_file is read and turned into keys here, never on a request path;
 *     a file that cannot be used refuses the configuration. Each JWT policy's verification
 *     settings (est_jwt_policy_t) and each route's forward_claims header names are computed
 *     once.
 *   - est_auth_view_create (worker loop): per JWT policy a verified-token cache (no locks:
 *     one per worker), and for jwks_url policies a subscription to the process's JWKS cache.
 *   - est_auth_stage (worker loop, per request): credentials, cache or verification, the
 *     reply on refusal, forward_claims on acceptance. An unknown kid on a jwks_url policy may
 *     wait for one refetch of the key set (EST_GATE_WAIT).
 *
 * Credentials (the token, the API key) are never logged, never echoed in a reply.
 */
#include "policy/gate.h"
#include "policy/auth_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "admin/metrics.h"
#include "common/file.h"
#include "common/log.h"
#include "policy/apikeys.h"
#include "policy/jwk.h"
#include "policy/jwks.h"
#include "policy/jwt.h"
#include "policy/tokencache.h"

/* Verified-token cache of one JWT policy on one worker. Entries are bounded in number and in
 * accounted bytes (cost_of below); an entry is kept until the token's exp (+ leeway, the same
 * instant est_jwt_verify stops accepting it) and at most CACHE_MAX_TTL seconds, so a token
 * is verified again at least that often. */
#define CACHE_MAX_ENTRIES 4096
#define CACHE_MAX_BYTES (8u << 20)
#define CACHE_MAX_TTL 300

/* a forward_claims value longer than this is not forwarded (the claim is treated as absent) */
#define CLAIM_VALUE_MAX 1024

typedef struct auth_jwt {
    const est_jwt_conf_t *conf;
    est_jwt_policy_t policy;
    est_jwks_t *keys; /* from jwks_file or secret_file; NULL with jwks_url (the view subscribes) */
} auth_jwt_t;

typedef struct auth_apikey {
    est_apikeys_t *keys;
    h2o_iovec_t header; /* lower-case name, the config's string */
} auth_apikey_t;

typedef struct auth_route {
    h2o_iovec_t *drop; /* the forward_claims header names of every JWT policy the route lists */
    size_t num_drop;
} auth_route_t;

struct est_auth_gen {
    auth_jwt_t *jwt; /* as est_config_t.jwt */
    size_t num_jwt;
    auth_apikey_t *apikeys; /* as est_config_t.api_keys */
    size_t num_apikeys;
    auth_route_t *routes; /* as est_config_t.routes */
    size_t num_routes;
};

typedef struct auth_jwt_view {
    est_tokencache_t *cache;
    est_jwks_sub_t *sub; /* jwks_url policies only */
    uint64_t version;    /* of the sub's key set the cache was filled under */
} auth_jwt_view_t;

struct est_auth_view {
    const est_auth_gen_t *ag;
    h2o_loop_t *loop;
    auth_jwt_view_t *jwt; /* as est_auth_gen_t.jwt */
    size_t num_jwt;
};

/* One request's auth state, in the request pool; disposed with the request. */
typedef struct auth_req {
    est_gate_t *g;
    est_jwks_wait_t *wait; /* the refetch being waited for, or NULL */
    json_t *claims;        /* the accepted token's claims (one reference), or NULL */
    unsigned char key[32]; /* the token's cache key, once computed */
    int has_key;
    unsigned char *refetched; /* per entry of the route's auth list: a refetch was asked for it */
    unsigned char *want;      /* per entry: this evaluation met an unknown kid / no key set */
} auth_req_t;

/* ---- pure helpers (auth_internal.h) --------------------------------------------------------- */

static int is_b64token_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
           c == '~' || c == '+' || c == '/';
}

est_bearer_parse_t est_auth_parse_bearer(const char *value, size_t len, h2o_iovec_t *token)
{
    static const char scheme[] = "bearer";
    const size_t slen = sizeof(scheme) - 1;
    size_t i = 0;
    /* the auth-scheme is the value's first token (RFC 9110 §11.4): up to a SP or the end */
    while (i < len && value[i] != ' ')
        ++i;
    if (i != slen || strncasecmp(value, scheme, slen) != 0)
        return EST_BEARER_OTHER;
    while (i < len && value[i] == ' ')
        ++i;
    size_t start = i;
    while (i < len && is_b64token_char((unsigned char)value[i]))
        ++i;
    if (i == start)
        return EST_BEARER_MALFORMED; /* "Bearer" with no token */
    while (i < len && value[i] == '=')
        ++i;
    if (i != len)
        return EST_BEARER_MALFORMED;
    *token = h2o_iovec_init(value + start, len - start);
    return EST_BEARER_OK;
}

unsigned est_auth_key_algorithms(const est_jwk_t *key)
{
    unsigned bits = 0;
    switch (key->type) {
    case EST_JWK_RSA:
        bits = EST_JWA_RS256 | EST_JWA_RS384 | EST_JWA_RS512 | EST_JWA_PS256 | EST_JWA_PS384 | EST_JWA_PS512;
        break;
    case EST_JWK_EC_P256:
        bits = EST_JWA_ES256;
        break;
    case EST_JWK_EC_P384:
        bits = EST_JWA_ES384;
        break;
    case EST_JWK_ED25519:
        bits = EST_JWA_EDDSA;
        break;
    case EST_JWK_OCT:
        /* RFC 7518 §3.2: a key of the same size as the hash output or larger */
        if (key->secret_len >= 32)
            bits |= EST_JWA_HS256;
        if (key->secret_len >= 48)
            bits |= EST_JWA_HS384;
        if (key->secret_len >= 64)
            bits |= EST_JWA_HS512;
        break;
    }
    if (key->alg != NULL)
        bits &= est_jwa_from_name(key->alg);
    return bits;
}

static int name_in(const h2o_iovec_t *name, const h2o_iovec_t *list, size_t num)
{
    for (size_t i = 0; i != num; ++i)
        if (h2o_lcstris(name->base, name->len, list[i].base, list[i].len))
            return 1;
    return 0;
}

void est_auth_edit_headers(h2o_mem_pool_t *pool, h2o_header_t **hdrs, size_t *num, const h2o_iovec_t *drop, size_t num_drop,
                           const h2o_header_t *add, size_t num_add)
{
    size_t n = *num, kept = 0;
    h2o_header_t *in = *hdrs;
    int any_drop = 0;
    for (size_t i = 0; i != n && !any_drop; ++i)
        any_drop = name_in(in[i].name, drop, num_drop);
    if (!any_drop && num_add == 0)
        return;
    h2o_header_t *out = h2o_mem_alloc_pool(pool, sizeof(*out) * (n + num_add));
    for (size_t i = 0; i != n; ++i)
        if (!name_in(in[i].name, drop, num_drop))
            out[kept++] = in[i];
    for (size_t i = 0; i != num_add; ++i)
        out[kept++] = add[i];
    *hdrs = out;
    *num = kept;
}

/* ---- generation: files read once, on the main thread ---------------------------------------- */

/* the key set of a jwks_file or secret_file policy; NULL (logged) when unusable */
static est_jwks_t *load_keys(const est_jwt_conf_t *jc, unsigned algorithms)
{
    char err[256] = "";
    char *buf = NULL;
    size_t len = 0, cap;
    est_jwks_t *set = NULL;
    const char *what = jc->jwks_file != NULL ? "jwks_file" : "secret_file",
               *path = jc->jwks_file != NULL ? jc->jwks_file : jc->secret_file;

    cap = jc->jwks_file != NULL ? EST_JWKS_MAX_BYTES : EST_JWK_MAX_OCT_BYTES + 1 /* one trailing newline */;
    if (est_read_file(path, cap, &buf, &len, err, sizeof(err)) != 0)
        goto Error;
    if (jc->jwks_file != NULL) {
        if ((set = est_jwks_parse(buf, len, err, sizeof(err))) == NULL)
            goto Error;
    } else {
        if (len != 0 && buf[len - 1] == '\n')
            --len; /* SPEC: one trailing newline is ignored */
        if (len == 0) {
            snprintf(err, sizeof(err), "empty secret");
            goto Error;
        }
        if ((set = est_jwks_from_secret((const unsigned char *)buf, len)) == NULL) {
            snprintf(err, sizeof(err), "a secret of at most %d bytes is expected", EST_JWK_MAX_OCT_BYTES);
            goto Error;
        }
    }
    unsigned usable = 0;
    for (size_t i = 0; i != set->count; ++i)
        usable |= est_auth_key_algorithms(set->keys + i);
    if ((usable & algorithms) == 0) {
        snprintf(err, sizeof(err), "%s",
                 set->count == 0 ? "no usable key"
                                 : "no key fits the policy's algorithms (an HMAC secret must be at least as long as the hash)");
        goto Error;
    }
    goto Exit;
Error:
    est_log_error("auth.jwt.%s: %s %s: %s", jc->name, what, path, err);
    est_jwks_free(set);
    set = NULL;
Exit:
    if (buf != NULL) {
        OPENSSL_cleanse(buf, len + 1); /* len may have lost the trailing newline: within the buffer still */
        free(buf);
    }
    return set;
}

est_auth_gen_t *est_auth_gen_create(const est_config_t *conf, int *failed)
{
    if (conf->num_jwt == 0 && conf->num_api_keys == 0)
        return NULL;
    est_auth_gen_t *ag = calloc(1, sizeof(*ag));
    if (ag == NULL)
        goto NoMemory;
    if (conf->num_jwt != 0 && (ag->jwt = calloc(conf->num_jwt, sizeof(*ag->jwt))) == NULL)
        goto NoMemory;
    ag->num_jwt = conf->num_jwt;
    if (conf->num_api_keys != 0 && (ag->apikeys = calloc(conf->num_api_keys, sizeof(*ag->apikeys))) == NULL)
        goto NoMemory;
    ag->num_apikeys = conf->num_api_keys;
    if (conf->num_routes != 0 && (ag->routes = calloc(conf->num_routes, sizeof(*ag->routes))) == NULL)
        goto NoMemory;
    ag->num_routes = conf->num_routes;

    /* every policy is loaded, each failure logged, before the verdict */
    int bad = 0;
    for (size_t i = 0; i != conf->num_jwt; ++i) {
        const est_jwt_conf_t *jc = conf->jwt + i;
        auth_jwt_t *aj = ag->jwt + i;
        aj->conf = jc;
        aj->policy.algorithms = jc->algorithms;
        aj->policy.issuer = jc->issuer;
        aj->policy.audiences = (const char *const *)jc->audience;
        aj->policy.num_audiences = jc->num_audience;
        /* leeway in whole seconds, rounded up: a configured tolerance is never narrowed */
        aj->policy.leeway = (int64_t)((jc->leeway_ms + 999) / 1000);
        aj->policy.require_exp = 0; /* SPEC: exp is checked when present */
        if (jc->jwks_url == NULL && (aj->keys = load_keys(jc, jc->algorithms)) == NULL)
            bad = 1;
    }
    for (size_t i = 0; i != conf->num_api_keys; ++i) {
        const est_apikey_conf_t *kc = conf->api_keys + i;
        char err[256] = "";
        ag->apikeys[i].header = h2o_iovec_init(kc->header, strlen(kc->header));
        if ((ag->apikeys[i].keys = est_apikeys_load(kc->keys_file, err, sizeof(err))) == NULL) {
            /* the loader's reasons name a line number or a system error, never a key */
            size_t pl = strlen(kc->keys_file);
            const char *why = strncmp(err, kc->keys_file, pl) == 0 && err[pl] == ':' ? err + pl + 1 : err;
            est_log_error("auth.api_keys.%s: keys_file %s:%s%s", kc->name, kc->keys_file, *why == ' ' ? "" : " ", why);
            bad = 1;
        } else if (est_apikeys_count(ag->apikeys[i].keys) == 0) {
            est_log_warn("auth.api_keys.%s: keys_file %s holds no key: every key is refused", kc->name, kc->keys_file);
        }
    }
    for (size_t i = 0; i != conf->num_routes; ++i) {
        const est_route_conf_t *rc = conf->routes + i;
        size_t n = 0;
        for (size_t j = 0; j != rc->num_auth; ++j)
            if (rc->auth[j].kind == EST_AUTH_JWT && rc->auth[j].index < conf->num_jwt)
                n += conf->jwt[rc->auth[j].index].num_forward_claims;
        if (n == 0)
            continue;
        if ((ag->routes[i].drop = calloc(n, sizeof(h2o_iovec_t))) == NULL)
            goto NoMemory;
        for (size_t j = 0; j != rc->num_auth; ++j) {
            if (rc->auth[j].kind != EST_AUTH_JWT || rc->auth[j].index >= conf->num_jwt)
                continue;
            const est_jwt_conf_t *jc = conf->jwt + rc->auth[j].index;
            for (size_t k = 0; k != jc->num_forward_claims; ++k)
                ag->routes[i].drop[ag->routes[i].num_drop++] = h2o_iovec_init(jc->forward_claims[k].header,
                                                                              strlen(jc->forward_claims[k].header));
        }
    }
    if (bad) {
        est_auth_gen_free(ag);
        *failed = 1;
        return NULL;
    }
    return ag;
NoMemory:
    est_log_error("auth: out of memory");
    est_auth_gen_free(ag);
    *failed = 1;
    return NULL;
}

void est_auth_gen_free(est_auth_gen_t *ag)
{
    if (ag == NULL)
        return;
    for (size_t i = 0; i != ag->num_jwt; ++i)
        est_jwks_free(ag->jwt[i].keys);
    free(ag->jwt);
    for (size_t i = 0; i != ag->num_apikeys; ++i)
        if (ag->apikeys[i].keys != NULL)
            est_apikeys_free(ag->apikeys[i].keys);
    free(ag->apikeys);
    for (size_t i = 0; i != ag->num_routes; ++i)
        free(ag->routes[i].drop);
    free(ag->routes);
    free(ag);
}

/* ---- per-worker view ------------------------------------------------------------------------ */

est_auth_view_t *est_auth_view_create(est_policy_view_t *pv, int *failed)
{
    const est_auth_gen_t *ag = pv->gen->auth;
    if (ag == NULL)
        return NULL;
    est_auth_view_t *av = calloc(1, sizeof(*av));
    if (av == NULL)
        goto Error;
    av->ag = ag;
    av->loop = pv->loop;
    if (ag->num_jwt != 0 && (av->jwt = calloc(ag->num_jwt, sizeof(*av->jwt))) == NULL)
        goto Error;
    av->num_jwt = ag->num_jwt;
    for (size_t i = 0; i != ag->num_jwt; ++i) {
        auth_jwt_view_t *jv = av->jwt + i;
        if ((jv->cache = est_tokencache_create(CACHE_MAX_ENTRIES, CACHE_MAX_BYTES, CACHE_MAX_TTL)) == NULL)
            goto Error;
        if (ag->jwt[i].conf->jwks_url != NULL) {
            if ((jv->sub = est_jwks_subscribe(pv->loop, pv->queue, ag->jwt[i].conf)) == NULL) {
                est_log_error("auth.jwt.%s: worker %zu cannot subscribe to %s", ag->jwt[i].conf->name, pv->worker_id,
                              ag->jwt[i].conf->jwks_url);
                goto Error;
            }
            est_jwks_sub_current(jv->sub, &jv->version);
        }
    }
    return av;
Error:
    if (av == NULL)
        est_log_error("auth: out of memory");
    est_auth_view_destroy(av);
    *failed = 1;
    return NULL;
}

void est_auth_view_destroy(est_auth_view_t *av)
{
    if (av == NULL)
        return;
    for (size_t i = 0; i != av->num_jwt; ++i) {
        if (av->jwt[i].sub != NULL)
            est_jwks_sub_destroy(av->jwt[i].sub);
        if (av->jwt[i].cache != NULL)
            est_tokencache_destroy(av->jwt[i].cache);
    }
    free(av->jwt);
    free(av);
}

void est_auth_shutdown(void)
{
    est_jwks_shutdown();
}

/* ---- the stage ------------------------------------------------------------------------------ */

/* est_jwt_result_t's refusals and the metrics' reasons correspond one to one, in order */
_Static_assert(EST_AUTH_REASON_BAD_CLAIMS - EST_AUTH_REASON_MALFORMED == EST_JWT_BAD_CLAIMS - EST_JWT_MALFORMED &&
                   EST_AUTH_REASON_UNKNOWN_KID - EST_AUTH_REASON_MALFORMED == EST_JWT_UNKNOWN_KID - EST_JWT_MALFORMED,
               "est_auth_reason_t follows est_jwt_result_t");

/* How far a refusal got, to report the most telling reason when several policies refused
 * (e.g. "expired" from the policy whose key verified the token over "unknown_kid" from
 * another's): the est_jwt_result_t order is the order of the checks. */
static int reason_rank(int reason)
{
    switch (reason) {
    case EST_AUTH_REASON_INTERNAL:
        return 0;
    case EST_AUTH_REASON_NO_KEYS:
        return EST_AUTH_REASON_UNKNOWN_KID;
    case EST_AUTH_REASON_INVALID_API_KEY:
        return EST_AUTH_REASON_BAD_SIGNATURE;
    default:
        return reason;
    }
}

/* the reason's label (the metrics' own, admin/metrics.c), for messages and the debug log */
static const char *reason_text(int reason)
{
    switch (reason) {
    case EST_AUTH_REASON_MISSING:
        return "missing";
    case EST_AUTH_REASON_INVALID_API_KEY:
        return "invalid_api_key";
    case EST_AUTH_REASON_INSUFFICIENT_SCOPE:
        return "insufficient_scope";
    case EST_AUTH_REASON_NO_KEYS:
        return "no_keys";
    case EST_AUTH_REASON_INTERNAL:
        return "internal";
    default: /* EST_AUTH_REASON_MALFORMED .. BAD_CLAIMS are est_jwt_result_t's, 1:1 */
        return est_jwt_strerror((est_jwt_result_t)(reason - EST_AUTH_REASON_MALFORMED + EST_JWT_MALFORMED));
    }
}

static void note_reason(int *best, int reason)
{
    if (*best < 0 || reason_rank(reason) > reason_rank(*best))
        *best = reason;
}

/* cost of a cache entry: the token, its decoded claims (at most the token's size as JSON text,
 * a few times that as jansson values) and the entry */
static size_t cost_of(size_t token_len)
{
    return 4 * token_len + 256;
}

/* Checks `token` under JWT policy `idx`: EST_JWT_OK with *claims (a new reference), or why
 * not. *no_keys is set when the policy has no key set yet (jwks_url never fetched). */
static est_jwt_result_t check_jwt(auth_req_t *ar, est_auth_view_t *av, size_t idx, h2o_iovec_t token, int64_t now, json_t **claims,
                                  int *no_keys)
{
    const auth_jwt_t *aj = av->ag->jwt + idx;
    auth_jwt_view_t *jv = av->jwt + idx;
    const est_jwks_t *keys = aj->keys;
    *claims = NULL;
    *no_keys = 0;
    if (jv->sub != NULL) {
        uint64_t version = 0;
        keys = est_jwks_sub_current(jv->sub, &version);
        if (version != jv->version) {
            /* the key set changed: a removed key must stop authorizing cached tokens at once */
            est_tokencache_clear(jv->cache);
            jv->version = version;
        }
        if (keys == NULL)
            *no_keys = 1;
    }
    if (token.len > EST_JWT_MAX_TOKEN)
        return EST_JWT_TOO_LARGE; /* before hashing it */
    if (!ar->has_key) {
        est_tokencache_key(token.base, token.len, ar->key);
        ar->has_key = 1;
    }
    const json_t *cached = est_tokencache_get(jv->cache, ar->key, now);
    if (cached != NULL) {
        est_log_debug("auth.jwt.%s: token accepted from the verified-token cache", aj->conf->name);
        *claims = json_incref((json_t *)cached);
        return EST_JWT_OK;
    }
    json_t *verified = NULL;
    int64_t exp = INT64_MAX;
    est_jwt_result_t res = est_jwt_verify(token.base, token.len, keys, &aj->policy, now, &verified, &exp);
    if (res != EST_JWT_OK)
        return res;
    est_log_debug("auth.jwt.%s: token verified", aj->conf->name);
    /* cached until est_jwt_verify would refuse it: now - leeway < exp */
    int64_t until = exp <= INT64_MAX - aj->policy.leeway ? exp + aj->policy.leeway : INT64_MAX;
    *claims = json_incref(verified);
    est_tokencache_put(jv->cache, ar->key, verified, until, now, cost_of(token.len)); /* steals `verified` */
    return EST_JWT_OK;
}

static void reply(est_gate_t *g, int status, int reason, const char *challenge, const char *code, const char *message)
{
    h2o_req_t *req = g->r->req;
    est_gate_count_auth_rejected(g, reason);
    est_log_debug("auth: route %s: %d %s", g->r->route->path, status, reason_text(reason));
    if (challenge != NULL)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, challenge, strlen(challenge));
    est_send_error(req, status, code, message, g->r->request_id);
}

/* the accepted request goes upstream with the client's forward_claims headers removed and
 * the accepting JWT policy's claims (if any) added */
static void accept_request(auth_req_t *ar, const est_jwt_conf_t *jc, json_t *claims)
{
    est_gate_t *g = ar->g;
    est_request_t *r = g->r;
    const est_auth_gen_t *ag = g->view->auth->ag;
    const auth_route_t *ar_route = r->route->index < ag->num_routes ? ag->routes + r->route->index : NULL;
    h2o_header_t *add = NULL;
    size_t num_add = 0;

    ar->claims = claims;
    g->claims = claims;
    if (jc != NULL && jc->num_forward_claims != 0) {
        add = h2o_mem_alloc_pool(&r->req->pool, sizeof(*add) * jc->num_forward_claims);
        for (size_t i = 0; i != jc->num_forward_claims; ++i) {
            char buf[CLAIM_VALUE_MAX + 1];
            long n = est_jwt_claim_text(claims, jc->forward_claims[i].claim, buf, sizeof(buf));
            if (n < 0)
                continue; /* absent, not a scalar, or unfit for a header: nothing is forwarded */
            h2o_iovec_t *name = h2o_mem_alloc_pool(&r->req->pool, sizeof(*name));
            *name = h2o_iovec_init(jc->forward_claims[i].header, strlen(jc->forward_claims[i].header));
            add[num_add++] = (h2o_header_t){name, NULL, h2o_strdup(&r->req->pool, buf, (size_t)n)};
        }
    }
    if (ar_route != NULL)
        est_auth_edit_headers(&r->req->pool, &r->fwd_headers, &r->num_fwd_headers, ar_route->drop, ar_route->num_drop, add,
                              num_add);
}

static void on_refetched(void *data);

static void cancel_wait(est_gate_t *g)
{
    auth_req_t *ar = g->pending;
    if (ar != NULL && ar->wait != NULL) {
        est_jwks_wait_cancel(ar->wait);
        ar->wait = NULL;
    }
}

/* Runs every policy of the route against the request's credentials: PASS, DONE (replied), or
 * WAIT (a JWKS refetch was asked for; on_refetched runs this again). */
static est_gate_verdict_t evaluate(auth_req_t *ar)
{
    est_gate_t *g = ar->g;
    est_request_t *r = g->r;
    h2o_req_t *req = r->req;
    const est_route_conf_t *route = r->route;
    est_auth_view_t *av = g->view->auth;
    if (av == NULL) { /* the route names policies the generation did not build: cannot happen */
        reply(g, 500, EST_AUTH_REASON_INTERNAL, NULL, "internal_error", "authentication is not available");
        return EST_GATE_DONE;
    }
    const est_auth_gen_t *ag = av->ag;
    int64_t now = (int64_t)(h2o_now(av->loop) / 1000);

    /* the Bearer credentials: exactly one Authorization header (two are refused, not chosen
     * from: proxies and backends might read the other one) */
    enum { NONE, BEARER, MALFORMED } bearer = NONE;
    h2o_iovec_t token = {NULL, 0};
    ssize_t at = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (at != -1) {
        if (h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, at) != -1) {
            bearer = MALFORMED;
        } else {
            const h2o_iovec_t *v = &req->headers.entries[at].value;
            switch (est_auth_parse_bearer(v->base, v->len, &token)) {
            case EST_BEARER_OK:
                bearer = BEARER;
                break;
            case EST_BEARER_MALFORMED:
                bearer = MALFORMED;
                break;
            case EST_BEARER_OTHER: /* RFC 6750 §3: an unsupported method counts as no credentials */
                break;
            }
        }
    }

    int presented = 0, scope_refused = 0, best = -1;
    for (size_t i = 0; i != route->num_auth; ++i) {
        const est_auth_ref_t *ref = route->auth + i;
        ar->want[i] = 0;
        if (ref->kind == EST_AUTH_JWT) {
            if (bearer == NONE || ref->index >= ag->num_jwt)
                continue;
            presented = 1;
            if (bearer == MALFORMED) {
                note_reason(&best, EST_AUTH_REASON_MALFORMED);
                continue;
            }
            json_t *claims = NULL;
            int no_keys = 0;
            est_jwt_result_t res = check_jwt(ar, av, ref->index, token, now, &claims, &no_keys);
            if (res == EST_JWT_OK) {
                if (est_jwt_has_scopes(claims, (const char *const *)route->scopes, route->num_scopes)) {
                    accept_request(ar, ag->jwt[ref->index].conf, claims);
                    return EST_GATE_PASS;
                }
                json_decref(claims);
                scope_refused = 1;
                continue;
            }
            if (res == EST_JWT_UNKNOWN_KID && av->jwt[ref->index].sub != NULL)
                ar->want[i] = 1;
            if (res == EST_JWT_UNKNOWN_KID && no_keys)
                note_reason(&best, EST_AUTH_REASON_NO_KEYS);
            else if (res == EST_JWT_INTERNAL)
                note_reason(&best, EST_AUTH_REASON_INTERNAL);
            else /* 1:1 in order (admin/metrics.h) */
                note_reason(&best, EST_AUTH_REASON_MALFORMED + ((int)res - EST_JWT_MALFORMED));
        } else {
            if (ref->index >= ag->num_apikeys)
                continue;
            const auth_apikey_t *ak = ag->apikeys + ref->index;
            ssize_t k = h2o_find_header_by_str(&req->headers, ak->header.base, ak->header.len, -1);
            if (k == -1)
                continue;
            presented = 1;
            const h2o_iovec_t *v = &req->headers.entries[k].value;
            /* one value only, as for Authorization */
            if (h2o_find_header_by_str(&req->headers, ak->header.base, ak->header.len, k) == -1 &&
                est_apikeys_check(ak->keys, v->base, v->len)) {
                accept_request(ar, NULL, NULL);
                return EST_GATE_PASS;
            }
            note_reason(&best, EST_AUTH_REASON_INVALID_API_KEY);
        }
    }

    /* an unknown kid on a jwks_url policy: the key set may have rotated; one refetch per
     * policy per request, and the JWKS cache allows one per 10 s whoever asks */
    for (size_t i = 0; i != route->num_auth; ++i) {
        if (!ar->want[i] || ar->refetched[i])
            continue;
        ar->refetched[i] = 1;
        est_jwks_wait_t *w = est_jwks_sub_refetch(av->jwt[route->auth[i].index].sub, on_refetched, ar);
        if (w != NULL) {
            ar->wait = w;
            g->pending = ar;
            g->cancel = cancel_wait;
            return EST_GATE_WAIT;
        }
    }

    if (!presented) {
        reply(g, 401, EST_AUTH_REASON_MISSING, "Bearer realm=\"estuary\"", "unauthorized", "credentials are required");
    } else if (scope_refused) {
        reply(g, 403, EST_AUTH_REASON_INSUFFICIENT_SCOPE, "Bearer error=\"insufficient_scope\"", "forbidden",
              "the token lacks a scope this route requires");
    } else if (best == EST_AUTH_REASON_INTERNAL) {
        reply(g, 500, best, NULL, "internal_error", "the credentials could not be checked");
    } else {
        char msg[96];
        snprintf(msg, sizeof(msg), "the credentials were refused: %s", reason_text(best));
        reply(g, 401, best, "Bearer error=\"invalid_token\"", "unauthorized", msg);
    }
    return EST_GATE_DONE;
}

static void on_refetched(void *data)
{
    auth_req_t *ar = data;
    est_gate_t *g = ar->g;
    ar->wait = NULL;
    g->cancel = NULL;
    g->pending = NULL;
    est_gate_verdict_t v = evaluate(ar);
    if (v != EST_GATE_WAIT)
        est_gate_resume(g, v);
}

static void on_auth_dispose(void *obj)
{
    auth_req_t *ar = obj;
    /* g->claims pointed here: the gate is disposed with the request, nothing reads it later */
    if (ar->claims != NULL)
        json_decref(ar->claims);
    ar->claims = NULL;
}

est_gate_verdict_t est_auth_stage(est_gate_t *g)
{
    est_request_t *r = g->r;
    size_t n = r->route->num_auth;
    if (n == 0)
        return EST_GATE_PASS;
    auth_req_t *ar = est_alloc_disposable(&r->req->pool, r->disposers, sizeof(*ar), on_auth_dispose);
    memset(ar, 0, sizeof(*ar));
    ar->g = g;
    ar->refetched = h2o_mem_alloc_pool(&r->req->pool, 2 * n);
    memset(ar->refetched, 0, 2 * n);
    ar->want = ar->refetched + n;
    return evaluate(ar);
}
