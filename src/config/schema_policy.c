/*
 * estuary - the policy sections of the config file (shared/SPEC.md, "Access control and
 * traffic policy"): "auth" (jwt, api_keys), "rate_limits" and "redis" at the top level, and a
 * route's "auth", "scopes", "rate_limit" and "cors".
 *
 * Only file paths are kept for secrets (secret_file, keys_file, jwks_file): the config text,
 * served as is by GET /config, never holds key material. The files themselves are read when a
 * generation is built (policy/auth.c), not here.
 */
#include "config/validate.h"
#include "policy/jwt.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* "did you mean" looks among at most this many policy names */
#define MAX_SUGGEST_CANDIDATES 256
/* rate limits: bounds that keep the GCRA arithmetic (microseconds, uint64, and the Redis
 * script's doubles) far from overflow */
#define MAX_RATE 1000000000
#define MAX_BURST 1000000000
#define MAX_RL_PERIOD_MS (365ull * 24 * 3600 * 1000)
#define DEFAULT_REDIS_PORT 6379

static void load_redis(vctx_t *c, json_t *root);
static void load_auth(vctx_t *c, json_t *root);
static void load_rate_limits(vctx_t *c, json_t *root);

/*
 * The names of the policies, for the routes' lookups (a hash: no scan of every policy per
 * route): c->policy_names is {"auth": {NAME: index * 2 + kind}, "rl": {NAME: index}}, built
 * here, freed with the validation state. Returns the object `which`, created on first use.
 */
static json_t *names_of(vctx_t *c, const char *which)
{
    json_t *o;
    if (c->policy_names == NULL && (c->policy_names = json_object()) == NULL)
        abort();
    if ((o = json_object_get(c->policy_names, which)) == NULL) {
        if ((o = json_object()) == NULL || json_object_set_new(c->policy_names, which, o) != 0)
            abort();
    }
    return o;
}

/* ---- small syntax checks --------------------------------------------------------------- */

/* RFC 9110 §5.6.2: token = 1*tchar */
static int is_token(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              strchr("!#$%&'*+-.^_`|~", ch) != NULL))
            return 0;
    }
    return 1;
}

static char *lower_dup(const char *s)
{
    char *d = est_cv_xstrdup(s);
    for (char *p = d; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return d;
}

/* headers a claim must not be copied into: connection-specific (RFC 9110 §7.6.1) or message
 * framing/routing ones (RFC 9112 §6), which estuary sets itself */
static int is_reserved_header(const char *lower)
{
    static const char *const names[] = {"host",
                                        "content-length",
                                        "transfer-encoding",
                                        "connection",
                                        "keep-alive",
                                        "proxy-connection",
                                        "proxy-authenticate",
                                        "proxy-authorization",
                                        "te",
                                        "trailer",
                                        "upgrade",
                                        "expect",
                                        NULL};
    for (size_t i = 0; names[i] != NULL; i++)
        if (strcmp(lower, names[i]) == 0)
            return 1;
    return 0;
}

/* reports `msg` at the key of member `key` of the current object */
static void err_at_key(vctx_t *c, const char *key, const char *msg)
{
    est_cv_push_key(c, key);
    est_cv_err_key(c, "%s", msg);
    est_cv_pop(c);
}

/*
 * Reads member `key` of `obj`, an array of non-empty strings (`what` names one in messages).
 * Each element is passed to check(c, s) when given (it reports and returns -1 to drop it);
 * kept elements are copied, lower-cased when `lower`. Returns the list (owned; NULL when the
 * key is absent, not an array or empty: reported), *num its length.
 */
static char **load_string_array(vctx_t *c, json_t *obj, const char *key, const char *what, int lower,
                                int (*check)(vctx_t *c, const char *s), size_t *num)
{
    json_t *arr = json_object_get(obj, key);
    char **list;
    if (arr == NULL)
        return NULL;
    est_cv_push_key(c, key);
    if (!json_is_array(arr)) {
        est_cv_err_val(c, "expected an array of strings, got %s", est_cv_type_name(arr));
        est_cv_pop(c);
        return NULL;
    }
    if (json_array_size(arr) == 0) {
        est_cv_err_val(c, "must list at least one %s", what);
        est_cv_pop(c);
        return NULL;
    }
    list = est_cv_xcalloc(json_array_size(arr), sizeof(char *));
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *v = json_array_get(arr, i);
        est_cv_push_index(c, i);
        if (!json_is_string(v))
            est_cv_err_val(c, "expected a string, got %s", est_cv_type_name(v));
        else if (json_string_length(v) == 0)
            est_cv_err_val(c, "must not be empty");
        else if (strlen(json_string_value(v)) != json_string_length(v))
            est_cv_err_val(c, "must not contain NUL characters");
        else if (check == NULL || check(c, json_string_value(v)) == 0)
            list[(*num)++] = lower ? lower_dup(json_string_value(v)) : est_cv_xstrdup(json_string_value(v));
        est_cv_pop(c);
    }
    est_cv_pop(c);
    return list;
}

static int check_header_name(vctx_t *c, const char *s)
{
    if (is_token(s))
        return 0;
    est_cv_err_val(c, "bad header name \"%s\" (letters, digits and !#$%%&'*+-.^_`|~ only)", est_cv_short(c, s));
    return -1;
}

/* RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ) */
static int check_scope(vctx_t *c, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x21 || *p == 0x22 || *p == 0x5c || *p > 0x7e) {
            est_cv_err_val(c, "bad scope \"%s\" (no spaces, quotes, backslashes or control characters)", est_cv_short(c, s));
            return -1;
        }
    }
    return 0;
}

/* ---- redis ----------------------------------------------------------------------------- */

/* "host:port", "host" (port 6379), "[IPv6]:port", "[IPv6]", or a bare IPv6 literal; the host
 * an IP literal or a DNS name. Returns NULL or what is wrong; fills *host (owned) and *port. */
static const char *parse_redis_address(const char *s, char **host, uint16_t *port)
{
    const char *h = s, *p = NULL;
    size_t hl;
    int port_num = DEFAULT_REDIS_PORT;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL)
            return "missing ']' after the IPv6 address";
        h = s + 1;
        hl = (size_t)(close - h);
        if (close[1] == ':')
            p = close + 2;
        else if (close[1] != '\0')
            return "unexpected characters after ']'";
    } else if (strchr(s, ':') != NULL && strchr(s, ':') != strrchr(s, ':')) {
        hl = strlen(s); /* two colons or more: a bare IPv6 literal, no port */
    } else {
        const char *colon = strchr(s, ':');
        hl = colon != NULL ? (size_t)(colon - s) : strlen(s);
        if (colon != NULL)
            p = colon + 1;
    }
    if (hl == 0)
        return "missing host";
    char *hs = est_cv_xmalloc(hl + 1);
    memcpy(hs, h, hl);
    hs[hl] = '\0';
    int ip = est_cv_is_ip_literal(hs);
    if (s[0] == '[' && (!ip || strchr(hs, ':') == NULL)) {
        free(hs);
        return "bad IPv6 address";
    }
    if (!ip && (strchr(hs, ':') != NULL || strspn(hs, "0123456789.") == hl || !est_cv_is_host_name(hs, hl))) {
        free(hs);
        return "bad host: not an IP address nor a DNS name";
    }
    if (p != NULL && (port_num = est_cv_parse_port(p, strlen(p))) < 0) {
        free(hs);
        return "bad port (use 1 to 65535)";
    }
    *host = hs;
    *port = (uint16_t)port_num;
    return NULL;
}

static void load_redis(vctx_t *c, json_t *root)
{
    static const char *const keys[] = {"address", "timeout", "on_failure", NULL};
    json_t *o = est_cv_get_typed(c, root, "redis", JSON_OBJECT);
    const char *s;
    if (o == NULL)
        return;
    est_redis_conf_t *r = c->conf->redis = est_cv_xcalloc(1, sizeof(*r));
    r->timeout_ms = 50;
    est_cv_push_key(c, "redis");
    est_cv_check_keys(c, o, keys);
    if (est_cv_get_string(c, o, "address", &s) > 0) {
        const char *why = parse_redis_address(s, &r->host, &r->port);
        if (why != NULL) {
            est_cv_push_key(c, "address");
            est_cv_err_val(c, "bad address \"%s\": %s; use e.g. \"127.0.0.1:6379\", \"[::1]:6379\" or \"redis.internal:6379\"",
                           est_cv_short(c, s), why);
            est_cv_pop(c);
        }
    } else if (json_object_get(o, "address") == NULL) {
        est_cv_err_val(c, "missing \"address\"");
    }
    est_cv_get_duration(c, o, "timeout", 0, &r->timeout_ms);
    if (est_cv_get_string(c, o, "on_failure", &s) > 0) {
        if (strcmp(s, "deny") == 0) {
            r->on_failure_deny = 1;
        } else if (strcmp(s, "allow") != 0) {
            est_cv_push_key(c, "on_failure");
            est_cv_err_val(c, "unknown on_failure \"%s\" (use \"allow\" or \"deny\")", est_cv_short(c, s));
            est_cv_pop(c);
        }
    }
    est_cv_pop(c);
}

/* ---- auth ------------------------------------------------------------------------------ */

/* a policy name (the current key): non-empty; letters, digits, '_', '-' and '.' */
static void check_policy_name(vctx_t *c, const char *name, const char *what)
{
    if (*name == '\0' || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != strlen(name))
        est_cv_err_key(c, "bad %s name \"%s\" (use letters, digits, '_', '-' and '.')", what, est_cv_short(c, name));
}

/*
 * An http:// or https:// URL whose origin becomes an upstream of its own, named `name`, with
 * SPEC upstream defaults; its path and query ("/" when empty) are kept for the requests. Used by
 * jwks_url and tracing.otlp_endpoint.
 */
const char *est_cv_url_upstream(const char *url, const char *name, est_upstream_conf_t **up, char **path_out)
{
    const char *p = strstr(url, "://"), *why = NULL;
    *up = NULL;
    *path_out = NULL;
    if (p == NULL)
        return "it must start with http:// or https://";
    const char *path = p + 3 + strcspn(p + 3, "/?#");
    if (strchr(path, '#') != NULL)
        return "a fragment (#) is not allowed";
    for (const unsigned char *q = (const unsigned char *)path; *q; q++)
        if (*q <= 0x20 || *q >= 0x7f)
            return "the path must not contain spaces, control or non-ASCII characters (percent-encode them)";
    size_t olen = (size_t)(path - url);
    char *origin = est_cv_xmalloc(olen + 1);
    memcpy(origin, url, olen);
    origin[olen] = '\0';
    est_upstream_conf_t *u = est_cv_xcalloc(1, sizeof(*u));
    u->targets = est_cv_xcalloc(1, sizeof(*u->targets));
    if ((why = est_cv_parse_target(origin, &u->targets[0])) == NULL) {
        u->num_targets = 1;
        u->name = est_cv_xstrdup(name);
        u->index = 0; /* the only upstream of its user's own set */
        est_upstream_conf_defaults(u);
        *up = u;
        if (*path == '\0') {
            *path_out = est_cv_xstrdup("/");
        } else if (*path == '?') {
            size_t m = strlen(path) + 2;
            *path_out = est_cv_xmalloc(m);
            snprintf(*path_out, m, "/%s", path);
        } else {
            *path_out = est_cv_xstrdup(path);
        }
    } else {
        free(u->targets);
        free(u);
    }
    free(origin);
    return why;
}

void est_cv_free_upstream(est_upstream_conf_t *u)
{
    if (u == NULL)
        return;
    est_upstream_conf_clear(u);
    free(u);
}

/*
 * jwks_url: the origin becomes an upstream of its own (SPEC upstream defaults, a shorter
 * response timeout: a key set is small), the path and query are kept for the request.
 */
static void load_jwks_url(vctx_t *c, const char *url, est_jwt_conf_t *j)
{
    size_t n = strlen(j->name) + 6;
    char *name = est_cv_xmalloc(n);
    snprintf(name, n, "jwks:%s", j->name);
    j->jwks_url = est_cv_xstrdup(url);
    const char *why = est_cv_url_upstream(url, name, &j->jwks_upstream, &j->jwks_path);
    free(name);
    if (why == NULL) {
        j->jwks_upstream->response_timeout_ms = 5000; /* also the bound of one whole fetch (docs/jwks.md) */
    } else {
        est_cv_push_key(c, "jwks_url");
        est_cv_err_val(c, "bad URL \"%s\": %s", est_cv_short(c, url), why);
        est_cv_pop(c);
    }
}

static void load_jwks_tls(vctx_t *c, json_t *o, est_jwt_conf_t *j)
{
    static const char *const keys[] = {"verify", "ca_file", "server_name", NULL};
    json_t *t = est_cv_get_typed(c, o, "jwks_tls", JSON_OBJECT);
    const char *s;
    if (t == NULL)
        return;
    if (json_object_get(o, "jwks_url") == NULL) {
        err_at_key(c, "jwks_tls", "applies only with \"jwks_url\"");
        return;
    }
    if (j->jwks_upstream == NULL) /* jwks_url reported */
        return;
    est_upstream_conf_t *u = j->jwks_upstream;
    est_cv_push_key(c, "jwks_tls");
    if (!u->targets[0].is_tls)
        est_cv_err_key(c, "applies only to an https:// jwks_url");
    est_cv_check_keys(c, t, keys);
    est_cv_get_bool(c, t, "verify", &u->tls.verify);
    if (est_cv_get_string(c, t, "ca_file", &s) > 0) {
        est_cv_push_key(c, "ca_file");
        u->tls.ca_file = est_cv_check_file(c, s);
        est_cv_pop(c);
    }
    if (est_cv_get_string(c, t, "server_name", &s) > 0) {
        if (!est_cv_is_host_name(s, strlen(s)) && !est_cv_is_ip_literal(s)) {
            est_cv_push_key(c, "server_name");
            est_cv_err_val(c, "bad server name \"%s\"", est_cv_short(c, s));
            est_cv_pop(c);
        }
        u->tls.server_name = est_cv_xstrdup(s);
    }
    est_cv_pop(c);
}

static void load_algorithms(vctx_t *c, json_t *o, est_jwt_conf_t *j)
{
    json_t *arr = json_object_get(o, "algorithms");
    if (arr == NULL) {
        est_cv_err_val(c, "missing \"algorithms\" (the JWS algorithms accepted, e.g. [\"RS256\"])");
        return;
    }
    est_cv_push_key(c, "algorithms");
    if (!json_is_array(arr)) {
        est_cv_err_val(c, "expected an array such as [\"RS256\", \"ES256\"], got %s", est_cv_type_name(arr));
    } else if (json_array_size(arr) == 0) {
        est_cv_err_val(c, "must list at least one algorithm");
    } else {
        for (size_t i = 0; i < json_array_size(arr); i++) {
            json_t *v = json_array_get(arr, i);
            unsigned bit;
            est_cv_push_index(c, i);
            if (!json_is_string(v))
                est_cv_err_val(c, "expected an algorithm name such as \"RS256\", got %s", est_cv_type_name(v));
            else if (strcasecmp(json_string_value(v), "none") == 0)
                est_cv_err_val(c, "\"none\" is never accepted: a token must be signed (RFC 8725 §3.1)");
            else if ((bit = est_jwa_from_name(json_string_value(v))) == 0 || strlen(json_string_value(v)) != json_string_length(v))
                est_cv_err_val(c,
                               "unknown algorithm \"%s\" (use HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, "
                               "ES256, ES384 or EdDSA)",
                               est_cv_short(c, json_string_value(v)));
            else
                j->algorithms |= bit;
            est_cv_pop(c);
        }
    }
    est_cv_pop(c);
}

static void load_forward_claims(vctx_t *c, json_t *o, est_jwt_conf_t *j)
{
    json_t *m = est_cv_get_typed(c, o, "forward_claims", JSON_OBJECT), *v;
    const char *claim;
    if (m == NULL)
        return;
    json_t *seen = json_object(); /* header -> the claim copied into it: one claim per header */
    if (seen == NULL)
        abort();
    est_cv_push_key(c, "forward_claims");
    j->forward_claims = est_cv_xcalloc(json_object_size(m), sizeof(*j->forward_claims));
    json_object_foreach(m, claim, v) {
        est_cv_push_key(c, claim);
        if (*claim == '\0') {
            est_cv_err_key(c, "a claim name cannot be empty");
        } else if (!json_is_string(v)) {
            est_cv_err_val(c, "expected a header name such as \"x-user-id\", got %s", est_cv_type_name(v));
        } else if (strlen(json_string_value(v)) != json_string_length(v) || !is_token(json_string_value(v))) {
            est_cv_err_val(c, "bad header name \"%s\" (letters, digits and !#$%%&'*+-.^_`|~ only)",
                           est_cv_short(c, json_string_value(v)));
        } else {
            char *h = lower_dup(json_string_value(v));
            json_t *prev = json_object_get(seen, h);
            if (is_reserved_header(h)) {
                est_cv_err_val(c, "\"%s\" is a connection or framing header: a claim cannot be copied into it", h);
                free(h);
            } else if (prev != NULL) {
                est_cv_err_val(c, "header \"%s\" is already filled from claim \"%s\"", h, est_cv_short(c, json_string_value(prev)));
                free(h);
            } else {
                json_object_set_new(seen, h, json_string(claim));
                j->forward_claims[j->num_forward_claims].claim = est_cv_xstrdup(claim);
                j->forward_claims[j->num_forward_claims].header = h;
                j->num_forward_claims++;
            }
        }
        est_cv_pop(c);
    }
    est_cv_pop(c);
    json_decref(seen);
}

static void load_jwt(vctx_t *c, json_t *o, est_jwt_conf_t *j)
{
    static const char *const keys[] = {"jwks_url", "jwks_file",  "secret_file", "jwks_refresh",   "jwks_tls", "issuer",
                                       "audience", "algorithms", "leeway",      "forward_claims", NULL};
    static const char *const sources[] = {"jwks_url", "jwks_file", "secret_file"};
    const char *s, *first = NULL;
    json_t *aud;

    j->jwks_refresh_ms = 5 * 60 * 1000;
    j->leeway_ms = 30000;
    if (!json_is_object(o)) {
        est_cv_err_val(c, "expected an object such as {\"jwks_file\": \"keys/jwks.json\", \"algorithms\": [\"RS256\"]}, got %s",
                       est_cv_type_name(o));
        return;
    }
    est_cv_check_keys(c, o, keys);

    for (size_t k = 0; k < 3; k++) {
        if (json_object_get(o, sources[k]) == NULL)
            continue;
        if (first != NULL) {
            char msg[160];
            snprintf(msg, sizeof(msg), "use only one of \"jwks_url\", \"jwks_file\" and \"secret_file\" (\"%s\" is set)", first);
            err_at_key(c, sources[k], msg);
            continue;
        }
        first = sources[k];
        if (est_cv_get_string(c, o, sources[k], &s) <= 0)
            continue;
        if (k == 0) {
            load_jwks_url(c, s, j);
        } else {
            est_cv_push_key(c, sources[k]);
            *(k == 1 ? &j->jwks_file : &j->secret_file) = est_cv_check_file(c, s);
            est_cv_pop(c);
        }
    }
    if (first == NULL)
        est_cv_err_val(c, "missing the keys: one of \"jwks_url\", \"jwks_file\" or \"secret_file\"");

    if (est_cv_get_duration(c, o, "jwks_refresh", 0, &j->jwks_refresh_ms) != 0 && json_object_get(o, "jwks_url") == NULL)
        err_at_key(c, "jwks_refresh", "applies only with \"jwks_url\"");
    load_jwks_tls(c, o, j);

    if (est_cv_get_string(c, o, "issuer", &s) > 0)
        j->issuer = est_cv_xstrdup(s);
    if ((aud = json_object_get(o, "audience")) != NULL) {
        if (json_is_string(aud)) {
            if (est_cv_get_string(c, o, "audience", &s) > 0) {
                j->audience = est_cv_xcalloc(1, sizeof(char *));
                j->audience[j->num_audience++] = est_cv_xstrdup(s);
            }
        } else if (json_is_array(aud)) {
            j->audience = load_string_array(c, o, "audience", "audience", 0, NULL, &j->num_audience);
        } else {
            est_cv_push_key(c, "audience");
            est_cv_err_val(c, "expected a string or an array of strings, got %s", est_cv_type_name(aud));
            est_cv_pop(c);
        }
    }
    load_algorithms(c, o, j);
    est_cv_get_duration(c, o, "leeway", 1, &j->leeway_ms);
    load_forward_claims(c, o, j);
}

static void load_api_key(vctx_t *c, json_t *o, est_apikey_conf_t *a)
{
    static const char *const keys[] = {"header", "keys_file", NULL};
    const char *s;
    if (!json_is_object(o)) {
        est_cv_err_val(c, "expected an object such as {\"keys_file\": \"keys/partners.txt\"}, got %s", est_cv_type_name(o));
        a->header = est_cv_xstrdup("x-api-key");
        return;
    }
    est_cv_check_keys(c, o, keys);
    if (est_cv_get_string(c, o, "header", &s) > 0) {
        est_cv_push_key(c, "header");
        if (check_header_name(c, s) == 0) {
            char *h = lower_dup(s);
            if (is_reserved_header(h))
                est_cv_err_val(c, "\"%s\" is a connection or framing header, not one for a key", h);
            a->header = h;
        }
        est_cv_pop(c);
    }
    if (a->header == NULL)
        a->header = est_cv_xstrdup("x-api-key");
    if (est_cv_get_string(c, o, "keys_file", &s) > 0) {
        est_cv_push_key(c, "keys_file");
        a->keys_file = est_cv_check_file(c, s);
        est_cv_pop(c);
    } else if (json_object_get(o, "keys_file") == NULL) {
        est_cv_err_val(c, "missing \"keys_file\"");
    }
}

static void load_auth(vctx_t *c, json_t *root)
{
    static const char *const keys[] = {"jwt", "api_keys", NULL};
    est_config_t *conf = c->conf;
    json_t *o = est_cv_get_typed(c, root, "auth", JSON_OBJECT), *jwt, *ak, *v;
    const char *name;
    if (o == NULL)
        return;
    est_cv_push_key(c, "auth");
    est_cv_check_keys(c, o, keys);
    if ((jwt = est_cv_get_typed(c, o, "jwt", JSON_OBJECT)) != NULL) {
        est_cv_push_key(c, "jwt");
        conf->jwt = est_cv_xcalloc(json_object_size(jwt), sizeof(*conf->jwt));
        json_object_foreach(jwt, name, v) {
            /* kept even with errors: routes naming it get no second, misleading error */
            est_jwt_conf_t *j = &conf->jwt[conf->num_jwt];
            j->index = conf->num_jwt++;
            j->name = est_cv_xstrdup(name);
            est_cv_push_key(c, name);
            check_policy_name(c, name, "policy");
            load_jwt(c, v, j);
            json_object_set_new(names_of(c, "auth"), name, json_integer((json_int_t)j->index * 2 + EST_AUTH_JWT));
            est_cv_pop(c);
        }
        est_cv_pop(c);
    }
    if ((ak = est_cv_get_typed(c, o, "api_keys", JSON_OBJECT)) != NULL) {
        est_cv_push_key(c, "api_keys");
        conf->api_keys = est_cv_xcalloc(json_object_size(ak), sizeof(*conf->api_keys));
        json_object_foreach(ak, name, v) {
            est_apikey_conf_t *a = &conf->api_keys[conf->num_api_keys];
            a->index = conf->num_api_keys++;
            a->name = est_cv_xstrdup(name);
            est_cv_push_key(c, name);
            check_policy_name(c, name, "policy");
            if (jwt != NULL && json_object_get(jwt, name) != NULL) {
                /* a route's "auth" names either kind: one name, one policy */
                est_cv_err_key(c, "policy name \"%s\" is already used by auth.jwt", est_cv_short(c, name));
            } else {
                json_object_set_new(names_of(c, "auth"), name, json_integer((json_int_t)a->index * 2 + EST_AUTH_API_KEY));
            }
            load_api_key(c, v, a);
            est_cv_pop(c);
        }
        est_cv_pop(c);
    }
    est_cv_pop(c);
}

/* ---- rate limits ----------------------------------------------------------------------- */

static void load_rl_key(vctx_t *c, const char *s, est_rate_limit_conf_t *rl)
{
    est_cv_push_key(c, "key");
    if (strcmp(s, "client_ip") == 0) {
        rl->key_kind = EST_RL_KEY_CLIENT_IP;
    } else if (strcmp(s, "route") == 0) {
        rl->key_kind = EST_RL_KEY_ROUTE;
    } else if (strncmp(s, "header:", 7) == 0) {
        rl->key_kind = EST_RL_KEY_HEADER;
        if (!is_token(s + 7))
            est_cv_err_val(c, "bad header name \"%s\" in \"header:NAME\"", est_cv_short(c, s + 7));
        else
            rl->key_name = lower_dup(s + 7);
    } else if (strncmp(s, "claim:", 6) == 0) {
        rl->key_kind = EST_RL_KEY_CLAIM;
        if (s[6] == '\0')
            est_cv_err_val(c, "missing the claim name in \"claim:NAME\"");
        else
            rl->key_name = est_cv_xstrdup(s + 6);
    } else {
        est_cv_err_val(c, "unknown key \"%s\" (use \"client_ip\", \"route\", \"header:NAME\" or \"claim:NAME\")",
                       est_cv_short(c, s));
    }
    est_cv_pop(c);
}

static void load_rate_limit(vctx_t *c, json_t *root, json_t *o, est_rate_limit_conf_t *rl)
{
    static const char *const keys[] = {"rate", "per", "burst", "key", "store", NULL};
    json_int_t n;
    const char *s;
    int has_rate, has_per, has_burst;

    rl->key_kind = EST_RL_KEY_CLIENT_IP;
    rl->store = EST_RL_STORE_LOCAL;
    if (!json_is_object(o)) {
        est_cv_err_val(c, "expected an object such as {\"rate\": 100, \"per\": \"1s\"}, got %s", est_cv_type_name(o));
        return;
    }
    est_cv_check_keys(c, o, keys);
    if ((has_rate = est_cv_get_int(c, o, "rate", 1, MAX_RATE, &n)) > 0)
        rl->rate = (uint64_t)n;
    else if (has_rate == 0)
        est_cv_err_val(c, "missing \"rate\"");
    if ((has_per = est_cv_get_duration(c, o, "per", 0, &rl->per_ms)) > 0 && rl->per_ms > MAX_RL_PERIOD_MS) {
        est_cv_push_key(c, "per");
        est_cv_err_val(c, "must be at most 8760h (a year)");
        est_cv_pop(c);
        has_per = -1;
    } else if (has_per == 0) {
        est_cv_err_val(c, "missing \"per\"");
    }
    rl->burst = rl->rate;
    if ((has_burst = est_cv_get_int(c, o, "burst", 0, MAX_BURST, &n)) > 0)
        rl->burst = (uint64_t)n;
    /* tolerance = burst * per / rate: the time a full bucket takes to refill */
    if (has_rate > 0 && has_per > 0 && has_burst >= 0 &&
        (unsigned __int128)rl->burst * rl->per_ms / rl->rate > (unsigned __int128)MAX_RL_PERIOD_MS) {
        char per[32];
        est_format_duration(rl->per_ms, per, sizeof(per));
        est_cv_push_key(c, has_burst > 0 ? "burst" : "rate");
        est_cv_err_val(c, "a burst of %llu at %llu per %s takes more than a year to refill", (unsigned long long)rl->burst,
                       (unsigned long long)rl->rate, per);
        est_cv_pop(c);
    }
    if (est_cv_get_string(c, o, "key", &s) > 0)
        load_rl_key(c, s, rl);
    if (est_cv_get_string(c, o, "store", &s) > 0) {
        est_cv_push_key(c, "store");
        if (strcmp(s, "local") == 0) {
            rl->store = EST_RL_STORE_LOCAL;
        } else if (strcmp(s, "redis") == 0) {
            rl->store = EST_RL_STORE_REDIS;
            if (json_object_get(root, "redis") == NULL)
                est_cv_err_val(c, "\"redis\" needs a top-level \"redis\" section with its \"address\"");
        } else {
            est_cv_err_val(c, "unknown store \"%s\" (use \"local\" or \"redis\")", est_cv_short(c, s));
        }
        est_cv_pop(c);
    }
}

static void load_rate_limits(vctx_t *c, json_t *root)
{
    est_config_t *conf = c->conf;
    json_t *o = est_cv_get_typed(c, root, "rate_limits", JSON_OBJECT), *v;
    const char *name;
    if (o == NULL)
        return;
    est_cv_push_key(c, "rate_limits");
    conf->rate_limits = est_cv_xcalloc(json_object_size(o), sizeof(*conf->rate_limits));
    json_object_foreach(o, name, v) {
        est_rate_limit_conf_t *rl = &conf->rate_limits[conf->num_rate_limits];
        rl->index = conf->num_rate_limits++;
        rl->name = est_cv_xstrdup(name);
        json_object_set_new(names_of(c, "rl"), name, json_integer((json_int_t)rl->index));
        est_cv_push_key(c, name);
        check_policy_name(c, name, "rate limit");
        load_rate_limit(c, root, v, rl);
        est_cv_pop(c);
    }
    est_cv_pop(c);
}

void est_cv_load_policy(vctx_t *c, json_t *root)
{
    if (!json_is_object(root))
        return;
    load_redis(c, root); /* before the rate limits, whose "store": "redis" needs it */
    load_auth(c, root);
    load_rate_limits(c, root);
}

/* ---- a route's policy keys ------------------------------------------------------------- */

/* a suggestion only among a few names, and only for an error that is kept */
static int may_suggest(const vctx_t *c, size_t num_names)
{
    return !est_cv_errors_full(c) && num_names <= MAX_SUGGEST_CANDIDATES;
}

/* fills `hint` with " (did you mean \"x\"?)" for `word` among `names`, or leaves it */
static void suggest(vctx_t *c, const char *word, const char *const *names, size_t n, char *hint, size_t hint_size)
{
    const char *s = est_cv_suggest(word, names, n);
    if (s != NULL)
        snprintf(hint, hint_size, " (did you mean \"%s\"?)", est_cv_short(c, s));
}

static void load_route_auth(vctx_t *c, json_t *arr, est_route_conf_t *r)
{
    est_config_t *conf = c->conf;
    est_cv_push_key(c, "auth");
    if (!json_is_array(arr)) {
        est_cv_err_val(c, "expected an array of policy names such as [\"idp\"], got %s", est_cv_type_name(arr));
    } else if (json_array_size(arr) == 0) {
        est_cv_err_val(c, "must name at least one policy (or leave \"auth\" out for an open route)");
    } else {
        r->auth = est_cv_xcalloc(json_array_size(arr), sizeof(*r->auth));
        for (size_t i = 0; i < json_array_size(arr); i++) {
            json_t *v = json_array_get(arr, i), *ix;
            est_cv_push_index(c, i);
            if (!json_is_string(v)) {
                est_cv_err_val(c, "expected a policy name, got %s", est_cv_type_name(v));
            } else if ((ix = json_object_get(names_of(c, "auth"), json_string_value(v))) != NULL &&
                       strlen(json_string_value(v)) == json_string_length(v)) {
                json_int_t x = json_integer_value(ix);
                r->auth[r->num_auth].kind = (est_auth_kind_t)(x % 2);
                r->auth[r->num_auth].index = (size_t)(x / 2);
                r->num_auth++;
            } else {
                char hint[160] = "";
                size_t n = conf->num_jwt + conf->num_api_keys;
                if (may_suggest(c, n)) {
                    const char **names = est_cv_xcalloc(n, sizeof(char *));
                    for (size_t k = 0; k < conf->num_jwt; k++)
                        names[k] = conf->jwt[k].name;
                    for (size_t k = 0; k < conf->num_api_keys; k++)
                        names[conf->num_jwt + k] = conf->api_keys[k].name;
                    suggest(c, json_string_value(v), names, n, hint, sizeof(hint));
                    free(names);
                }
                est_cv_err_val(c, "auth policy \"%s\" is not defined in auth.jwt or auth.api_keys%s",
                               est_cv_short(c, json_string_value(v)), hint);
            }
            est_cv_pop(c);
        }
    }
    est_cv_pop(c);
}

static int route_has_jwt(const est_route_conf_t *r)
{
    for (size_t i = 0; i < r->num_auth; i++)
        if (r->auth[i].kind == EST_AUTH_JWT)
            return 1;
    return 0;
}

static void load_route_rate_limit(vctx_t *c, json_t *route_obj, est_route_conf_t *r)
{
    est_config_t *conf = c->conf;
    const char *s;
    json_t *ix;
    if (est_cv_get_string(c, route_obj, "rate_limit", &s) <= 0)
        return;
    est_cv_push_key(c, "rate_limit");
    est_rate_limit_conf_t *found = NULL;
    if ((ix = json_object_get(names_of(c, "rl"), s)) != NULL)
        found = &conf->rate_limits[json_integer_value(ix)];
    if (found == NULL) {
        char hint[160] = "";
        if (may_suggest(c, conf->num_rate_limits)) {
            const char **names = est_cv_xcalloc(conf->num_rate_limits, sizeof(char *));
            for (size_t k = 0; k < conf->num_rate_limits; k++)
                names[k] = conf->rate_limits[k].name;
            suggest(c, s, names, conf->num_rate_limits, hint, sizeof(hint));
            free(names);
        }
        est_cv_err_val(c, "rate limit \"%s\" is not defined in rate_limits%s", est_cv_short(c, s), hint);
    } else {
        r->rate_limit = found;
        if (found->key_kind == EST_RL_KEY_CLAIM && !route_has_jwt(r))
            est_cv_err_val(c, "rate limit \"%s\" is keyed by a claim (\"claim:%s\"): the route's \"auth\" must name a jwt policy",
                           est_cv_short(c, s), est_cv_short(c, found->key_name ? found->key_name : ""));
    }
    est_cv_pop(c);
}

/*
 * A serialized origin (RFC 6454 §6.2): scheme "://" host [":" port], lower-case, no path, no
 * default port: what a browser sends in Origin, so that an exact comparison works.
 */
static const char *check_origin(const char *s)
{
    const char *p = strstr(s, "://"), *host, *end;
    int default_port;
    if (p == NULL)
        return "expected \"*\" or an origin such as \"https://app.example\"";
    size_t sl = (size_t)(p - s);
    if (sl == 4 && strncmp(s, "http", 4) == 0)
        default_port = 80;
    else if (sl == 5 && strncmp(s, "https", 5) == 0)
        default_port = 443;
    else
        return "the scheme must be http or https, in lower case";
    host = p + 3;
    if (*host == '[') {
        const char *close = strchr(host, ']');
        char buf[64];
        if (close == NULL || (size_t)(close - host - 1) >= sizeof(buf))
            return "bad IPv6 address";
        memcpy(buf, host + 1, (size_t)(close - host - 1));
        buf[close - host - 1] = '\0';
        if (!est_cv_is_ip_literal(buf) || strchr(buf, ':') == NULL)
            return "bad IPv6 address";
        for (const char *q = buf; *q; q++)
            if (*q >= 'A' && *q <= 'F')
                return "an origin is compared as the browser sends it: write it in lower case";
        end = close + 1;
    } else {
        end = host + strcspn(host, ":/?#");
        if (end == host)
            return "missing host";
        if (!est_cv_is_host_name(host, (size_t)(end - host)))
            return "bad host name";
        for (const char *q = host; q < end; q++)
            if (*q >= 'A' && *q <= 'Z')
                return "an origin is compared as the browser sends it: write it in lower case";
    }
    if (*end == ':') {
        int port = est_cv_parse_port(end + 1, strlen(end + 1));
        if (port < 0)
            return strcspn(end + 1, "/?#") != strlen(end + 1) ? "an origin has no path, query or fragment (no trailing '/')"
                                                              : "bad port (use 1 to 65535)";
        if (port == default_port || end[1] == '0')
            return "write the port as the browser does: without the scheme's default port or leading zeros";
    } else if (*end != '\0') {
        return "an origin has no path, query or fragment (no trailing '/')";
    }
    return NULL;
}

static void load_cors(vctx_t *c, json_t *o, est_route_conf_t *r)
{
    static const char *const keys[] = {"origins", "methods", "headers", "expose_headers", "credentials", "max_age", NULL};
    json_t *arr, *m;
    est_cors_conf_t *cors;

    est_cv_push_key(c, "cors");
    if (!json_is_object(o)) {
        est_cv_err_val(c, "expected an object such as {\"origins\": [\"https://app.example\"]}, got %s", est_cv_type_name(o));
        est_cv_pop(c);
        return;
    }
    cors = r->cors = est_cv_xcalloc(1, sizeof(*cors));
    est_cv_check_keys(c, o, keys);

    if ((arr = json_object_get(o, "origins")) == NULL) {
        est_cv_err_val(c, "missing \"origins\" (the allowed origins, e.g. [\"https://app.example\"], or [\"*\"])");
    } else {
        est_cv_push_key(c, "origins");
        if (!json_is_array(arr)) {
            est_cv_err_val(c, "expected an array of origins such as [\"https://app.example\"], got %s", est_cv_type_name(arr));
        } else if (json_array_size(arr) == 0) {
            est_cv_err_val(c, "must list at least one origin (or [\"*\"])");
        } else {
            cors->origins = est_cv_xcalloc(json_array_size(arr), sizeof(char *));
            for (size_t i = 0; i < json_array_size(arr); i++) {
                json_t *v = json_array_get(arr, i);
                const char *why;
                est_cv_push_index(c, i);
                if (!json_is_string(v) || json_string_length(v) == 0) {
                    est_cv_err_val(c, "expected an origin such as \"https://app.example\", got %s",
                                   json_is_string(v) ? "an empty string" : est_cv_type_name(v));
                } else if (strcmp(json_string_value(v), "*") == 0) {
                    if (json_array_size(arr) != 1)
                        est_cv_err_val(c, "\"*\" allows every origin: list it alone");
                    cors->any_origin = 1;
                } else if (strlen(json_string_value(v)) != json_string_length(v)) {
                    est_cv_err_val(c, "must not contain NUL characters");
                } else if ((why = check_origin(json_string_value(v))) != NULL) {
                    est_cv_err_val(c, "bad origin \"%s\": %s", est_cv_short(c, json_string_value(v)), why);
                } else {
                    cors->origins[cors->num_origins++] = est_cv_xstrdup(json_string_value(v));
                }
                est_cv_pop(c);
            }
        }
        est_cv_pop(c);
    }

    if ((m = json_object_get(o, "methods")) != NULL) {
        est_cv_push_key(c, "methods");
        if (!json_is_array(m)) {
            est_cv_err_val(c, "expected an array such as [\"GET\", \"POST\"], got %s", est_cv_type_name(m));
        } else if (json_array_size(m) == 0) {
            est_cv_err_val(c, "must list at least one method (or leave \"methods\" out for the route's own)");
        } else {
            for (size_t i = 0; i < json_array_size(m); i++) {
                json_t *v = json_array_get(m, i);
                unsigned bit;
                est_cv_push_index(c, i);
                if (!json_is_string(v))
                    est_cv_err_val(c, "expected a method name such as \"GET\", got %s", est_cv_type_name(v));
                else if ((bit = est_method_from_name(json_string_value(v), json_string_length(v))) == 0)
                    est_cv_err_val(c, "unknown method \"%s\" (use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS)",
                                   est_cv_short(c, json_string_value(v)));
                else
                    cors->methods |= bit;
                est_cv_pop(c);
            }
        }
        est_cv_pop(c);
    }
    cors->headers = load_string_array(c, o, "headers", "header name", 1, check_header_name, &cors->num_headers);
    cors->expose_headers = load_string_array(c, o, "expose_headers", "header name", 0, check_header_name,
                                             &cors->num_expose_headers);
    est_cv_get_bool(c, o, "credentials", &cors->credentials);
    if (est_cv_get_duration(c, o, "max_age", 1, &cors->max_age_ms) > 0)
        cors->has_max_age = 1;
    if (cors->any_origin && cors->credentials) {
        /* the Fetch standard refuses "Access-Control-Allow-Origin: *" on a credentialed request */
        est_cv_push_key(c, "credentials");
        est_cv_err_val(c, "\"origins\": [\"*\"] cannot be used with credentials (list the origins instead)");
        est_cv_pop(c);
    }
    est_cv_pop(c);
}

void est_cv_load_route_policy(vctx_t *c, json_t *route_obj, est_route_conf_t *r)
{
    json_t *v;
    if ((v = json_object_get(route_obj, "auth")) != NULL)
        load_route_auth(c, v, r);
    r->scopes = load_string_array(c, route_obj, "scopes", "scope", 0, check_scope, &r->num_scopes);
    if (json_object_get(route_obj, "scopes") != NULL && json_object_get(route_obj, "auth") != NULL && r->num_auth != 0 &&
        !route_has_jwt(r))
        err_at_key(c, "scopes", "scopes are checked in a JWT: the route's \"auth\" must name a jwt policy");
    else if (json_object_get(route_obj, "scopes") != NULL && json_object_get(route_obj, "auth") == NULL)
        err_at_key(c, "scopes", "scopes are checked in a JWT: the route needs an \"auth\" naming a jwt policy");
    load_route_rate_limit(c, route_obj, r);
    if ((v = json_object_get(route_obj, "cors")) != NULL)
        load_cors(c, v, r);
}

/* ---- freeing --------------------------------------------------------------------------- */

static void free_list(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

void est_cv_free_policy(est_config_t *conf)
{
    for (size_t i = 0; i < conf->num_jwt; i++) {
        est_jwt_conf_t *j = &conf->jwt[i];
        free(j->name);
        free(j->jwks_url);
        est_cv_free_upstream(j->jwks_upstream);
        free(j->jwks_path);
        free(j->jwks_file);
        free(j->secret_file);
        free(j->issuer);
        free_list(j->audience, j->num_audience);
        for (size_t k = 0; k < j->num_forward_claims; k++) {
            free(j->forward_claims[k].claim);
            free(j->forward_claims[k].header);
        }
        free(j->forward_claims);
    }
    free(conf->jwt);
    for (size_t i = 0; i < conf->num_api_keys; i++) {
        free(conf->api_keys[i].name);
        free(conf->api_keys[i].header);
        free(conf->api_keys[i].keys_file);
    }
    free(conf->api_keys);
    for (size_t i = 0; i < conf->num_rate_limits; i++) {
        free(conf->rate_limits[i].name);
        free(conf->rate_limits[i].key_name);
    }
    free(conf->rate_limits);
    if (conf->redis != NULL)
        free(conf->redis->host);
    free(conf->redis);
    for (size_t i = 0; i < conf->num_routes; i++) {
        est_route_conf_t *r = &conf->routes[i];
        free(r->auth);
        free_list(r->scopes, r->num_scopes);
        if (r->cors != NULL) {
            free_list(r->cors->origins, r->cors->num_origins);
            free_list(r->cors->headers, r->cors->num_headers);
            free_list(r->cors->expose_headers, r->cors->num_expose_headers);
        }
        free(r->cors); /* r->rate_limit is borrowed */
    }
}
