/*
 * estuary - the schema of the config file (shared/SPEC.md, "Config file"), section by
 * section: the top level, listen, workers, admin, access_log and dns here; upstreams in
 * schema_upstreams.c, routes in schema_routes.c, auth/rate_limits/redis and the routes' policy
 * keys in schema_policy.c. Each section fills SPEC defaults first, then
 * reads what the file sets, reporting every problem it finds.
 */
#include "config/validate.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define MAX_WORKERS 256

static void load_listen(vctx_t *c, json_t *root);
static void load_admin(vctx_t *c, json_t *root);
static void load_dns(vctx_t *c, json_t *root);
static void load_workers(vctx_t *c, json_t *root);
static void load_access_log(vctx_t *c, json_t *root);
static void load_tracing(vctx_t *c, json_t *root);

/* ---- sections -------------------------------------------------------------------------- */

/* host ("0.0.0.0" / "127.0.0.1" by default) and port of a listener or the admin listener */
static void load_address(vctx_t *c, json_t *obj, const char *default_host, char **host, uint16_t *port)
{
    const char *h = default_host;
    json_int_t p;
    if (est_cv_get_string(c, obj, "host", &h) > 0) {
        size_t n = strlen(h);
        char *tmp = est_cv_xstrdup(h);
        if (n > 2 && h[0] == '[' && h[n - 1] == ']') { /* accept "[::]" too */
            memmove(tmp, h + 1, n - 2);
            tmp[n - 2] = '\0';
        }
        if (!est_cv_is_ip_literal(tmp)) {
            est_cv_push_key(c, "host");
            est_cv_err_val(c, "expected an IP address such as \"0.0.0.0\" or \"::\", got \"%s\"", h);
            est_cv_pop(c);
        }
        *host = tmp;
    } else {
        *host = est_cv_xstrdup(default_host);
    }
    if (est_cv_get_int(c, obj, "port", 1, 65535, &p) > 0)
        *port = (uint16_t)p;
    else if (json_object_get(obj, "port") == NULL)
        est_cv_err_val(c, "missing \"port\"");
}


/* by port, host, then position: equal addresses end up adjacent, the first one first */
static int cmp_listen_index(const void *a, const void *b, void *arg)
{
    const est_listen_conf_t *base = arg;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    const est_listen_conf_t *x = &base[i], *y = &base[j];
    if (x->port != y->port)
        return x->port < y->port ? -1 : 1;
    int r = strcmp(x->host ? x->host : "", y->host ? y->host : "");
    if (r != 0)
        return r;
    return i < j ? -1 : i > j;
}

/* reports each listener whose address an earlier one already uses (sorted: no pairwise scan) */
static void check_listen_clashes(vctx_t *c, const unsigned *lines)
{
    est_config_t *conf = c->conf;
    size_t n = conf->num_listen, *order = est_cv_xcalloc(n, sizeof(*order));
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    qsort_r(order, n, sizeof(*order), cmp_listen_index, conf->listen);
    size_t first = n != 0 ? order[0] : 0; /* the first listener of the current address */
    for (size_t k = 1; k < n; k++) {
        const est_listen_conf_t *l = &conf->listen[order[k]], *f = &conf->listen[first];
        if (l->port == 0 || l->host == NULL || f->host == NULL || f->port != l->port || strcmp(f->host, l->host) != 0) {
            first = order[k];
            continue;
        }
        est_cv_push_index(c, order[k]); /* under "listen" */
        est_cv_err_val(c, "%s:%u is already used by listen[%zu] (line %u)", l->host, l->port, first, lines[first]);
        est_cv_pop(c);
    }
    free(order);
}

/*
 * 1 when `list` is a cipher string OpenSSL accepts for TLS 1.2 and it keeps at least one
 * forward-secret AEAD suite (ECDHE key exchange, GCM/CCM/ChaCha20-Poly1305): tried on a scratch
 * SSL_CTX, as the listener's SSL_CTX will use it. Otherwise 0 with the reason in `why`.
 * OpenSSL skips unknown words of a list, so a list is only refused when nothing usable is left.
 */
static int check_tls_ciphers(const char *list, char *why, size_t why_size)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    int ok = 0;
    if (ctx == NULL) {
        snprintf(why, why_size, "cannot create an SSL_CTX to try it");
    } else if (SSL_CTX_set_cipher_list(ctx, list) != 1) {
        snprintf(why, why_size, "OpenSSL matches no TLS 1.2 cipher suite with it");
    } else {
        STACK_OF(SSL_CIPHER) *sk = SSL_CTX_get_ciphers(ctx); /* TLS 1.2 list, then the TLS 1.3 suites */
        for (int i = 0; !ok && i < sk_SSL_CIPHER_num(sk); i++) {
            const SSL_CIPHER *ci = sk_SSL_CIPHER_value(sk, i);
            ok = SSL_CIPHER_get_kx_nid(ci) == NID_kx_ecdhe && SSL_CIPHER_is_aead(ci);
        }
        if (!ok)
            snprintf(why, why_size, "it leaves no forward-secret AEAD suite (ECDHE with AES-GCM or ChaCha20-Poly1305)");
    }
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return ok;
}

/* the "tls" object of a listener (the path is at "tls") */
static void load_listen_tls(vctx_t *c, json_t *tls, est_listen_conf_t *l)
{
    static const char *const keys[] = {"certificate_file", "key_file", "min_version", "ciphers", "ocsp_file", NULL};
    const char *s;

    est_cv_check_keys(c, tls, keys);
    for (int k = 0; k < 2; k++) {
        const char *key = keys[k];
        if (est_cv_get_string(c, tls, key, &s) > 0) {
            est_cv_push_key(c, key);
            char *r = est_cv_check_file(c, s);
            est_cv_pop(c);
            *(k == 0 ? &l->certificate_file : &l->key_file) = r;
        } else if (json_object_get(tls, key) == NULL) {
            est_cv_err_val(c, "missing \"%s\"", key);
        }
    }
    l->tls_min_version = TLS1_2_VERSION;
    if (est_cv_get_string(c, tls, "min_version", &s) > 0) {
        if (strcmp(s, "1.3") == 0) {
            l->tls_min_version = TLS1_3_VERSION;
        } else if (strcmp(s, "1.2") != 0) {
            est_cv_push_key(c, "min_version");
            est_cv_err_val(c, "expected \"1.2\" or \"1.3\", got \"%s\"", est_cv_short(c, s));
            est_cv_pop(c);
        }
    }
    if (est_cv_get_string(c, tls, "ciphers", &s) > 0) {
        char why[160];
        est_cv_push_key(c, "ciphers");
        if (check_tls_ciphers(s, why, sizeof(why)))
            l->tls_ciphers = est_cv_xstrdup(s);
        else
            est_cv_err_val(c, "\"%s\" is not a usable OpenSSL cipher list: %s", est_cv_short(c, s), why);
        est_cv_pop(c);
    }
    if (est_cv_get_string(c, tls, "ocsp_file", &s) > 0) {
        est_cv_push_key(c, "ocsp_file");
        l->ocsp_file = est_cv_check_file(c, s);
        est_cv_pop(c);
    }
}

static void load_listen(vctx_t *c, json_t *root)
{
    static const char *const keys[] = {"host", "port", "tls", NULL};
    est_config_t *conf = c->conf;
    json_t *arr = json_object_get(root, "listen");

    if (arr == NULL) {
        /* default: one plain listener on 0.0.0.0:8080 */
        conf->listen = est_cv_xcalloc(1, sizeof(*conf->listen));
        conf->num_listen = 1;
        conf->listen[0].host = est_cv_xstrdup("0.0.0.0");
        conf->listen[0].port = 8080;
        return;
    }
    est_cv_push_key(c, "listen");
    if (!json_is_array(arr)) {
        est_cv_err_val(c, "expected an array of listeners, got %s", est_cv_type_name(arr));
    } else if (json_array_size(arr) == 0) {
        est_cv_err_val(c, "must hold at least one listener (or leave \"listen\" out for 0.0.0.0:8080)");
    } else {
        unsigned *lines = est_cv_xcalloc(json_array_size(arr), sizeof(*lines));
        conf->num_listen = json_array_size(arr);
        conf->listen = est_cv_xcalloc(conf->num_listen, sizeof(*conf->listen));
        for (size_t i = 0; i < conf->num_listen; i++) {
            est_listen_conf_t *l = &conf->listen[i];
            json_t *o = json_array_get(arr, i), *tls;
            est_cv_push_index(c, i);
            lines[i] = est_cv_line_of(c);
            if (!json_is_object(o)) {
                est_cv_err_val(c, "expected an object such as {\"host\": \"0.0.0.0\", \"port\": 8080}, got %s", est_cv_type_name(o));
                est_cv_pop(c);
                continue;
            }
            est_cv_check_keys(c, o, keys);
            load_address(c, o, "0.0.0.0", &l->host, &l->port);
            if ((tls = est_cv_get_typed(c, o, "tls", JSON_OBJECT)) != NULL) {
                l->tls = 1;
                est_cv_push_key(c, "tls");
                load_listen_tls(c, tls, l);
                est_cv_pop(c);
            }
            est_cv_pop(c);
        }
        check_listen_clashes(c, lines);
        free(lines);
    }
    est_cv_pop(c);
}

static void load_admin(vctx_t *c, json_t *root)
{
    static const char *const keys[] = {"host", "port", "token", NULL};
    json_t *o = est_cv_get_typed(c, root, "admin", JSON_OBJECT);
    if (o == NULL)
        return;
    est_admin_conf_t *a = c->conf->admin = est_cv_xcalloc(1, sizeof(*a));
    est_cv_push_key(c, "admin");
    est_cv_check_keys(c, o, keys);
    load_address(c, o, "127.0.0.1", &a->host, &a->port);
    /* admin.token: required on /, /state and /config when bound beyond loopback (SPEC "Admin console") */
    const char *token;
    if (est_cv_get_string(c, o, "token", &token) > 0) {
        if (strlen(token) < 16) {
            est_cv_push_key(c, "token");
            est_cv_err_val(c, "must be at least 16 characters long");
            est_cv_pop(c);
        } else {
            a->token = est_cv_xstrdup(token);
        }
    }
    for (size_t j = 0; j < c->conf->num_listen; j++) {
        est_listen_conf_t *l = &c->conf->listen[j];
        if (a->port != 0 && a->port == l->port && l->host != NULL && strcmp(a->host, l->host) == 0) {
            est_cv_err_val(c, "%s:%u is already used by listen[%zu]", a->host, a->port, j);
            break;
        }
    }
    est_cv_pop(c);
}

static void load_dns(vctx_t *c, json_t *root)
{
    static const char *const keys[] = {"servers", "min_ttl", "max_ttl", "negative_ttl", "stale_ttl", "timeout", "attempts", NULL};
    est_dns_conf_t *d = &c->conf->dns;
    json_t *o, *servers;
    json_int_t n;

    d->min_ttl_ms = 1000;
    d->max_ttl_ms = 300000;
    d->negative_ttl_ms = 5000;
    d->stale_ttl_ms = 60000;
    d->timeout_ms = 1000;
    d->attempts = 2;
    if ((o = est_cv_get_typed(c, root, "dns", JSON_OBJECT)) == NULL)
        return;
    est_cv_push_key(c, "dns");
    est_cv_check_keys(c, o, keys);
    if ((servers = est_cv_get_typed(c, o, "servers", JSON_ARRAY)) != NULL) {
        est_cv_push_key(c, "servers");
        d->servers = est_cv_xcalloc(json_array_size(servers), sizeof(char *));
        for (size_t i = 0; i < json_array_size(servers); i++) {
            json_t *s = json_array_get(servers, i);
            est_cv_push_index(c, i);
            if (!json_is_string(s))
                est_cv_err_val(c, "expected a string such as \"127.0.0.1:53\", got %s", est_cv_type_name(s));
            else if (est_cv_parse_dns_server(json_string_value(s)) != 0)
                est_cv_err_val(c, "bad DNS server \"%s\" (use \"IP\", \"IP:PORT\" or \"[IPv6]:PORT\")", json_string_value(s));
            else
                d->servers[d->num_servers++] = est_cv_xstrdup(json_string_value(s));
            est_cv_pop(c);
        }
        est_cv_pop(c);
    }
    int has_min = est_cv_get_duration(c, o, "min_ttl", 1, &d->min_ttl_ms);
    int has_max = est_cv_get_duration(c, o, "max_ttl", 0, &d->max_ttl_ms);
    est_cv_get_duration(c, o, "negative_ttl", 1, &d->negative_ttl_ms);
    est_cv_get_duration(c, o, "stale_ttl", 1, &d->stale_ttl_ms);
    est_cv_get_duration(c, o, "timeout", 0, &d->timeout_ms);
    if (est_cv_get_int(c, o, "attempts", 1, 10, &n) > 0)
        d->attempts = (unsigned)n;
    if (has_min >= 0 && has_max >= 0 && d->min_ttl_ms > d->max_ttl_ms) {
        char a[32], b[32];
        est_format_duration(d->min_ttl_ms, a, sizeof(a));
        est_format_duration(d->max_ttl_ms, b, sizeof(b));
        est_cv_push_key(c, has_min > 0 ? "min_ttl" : "max_ttl");
        est_cv_err_val(c, "min_ttl (%s) is more than max_ttl (%s)", a, b);
        est_cv_pop(c);
    }
    est_cv_pop(c);
}

/* "access_log": "stderr" | "off" | a file path (relative to the config file's folder) */
static void load_access_log(vctx_t *c, json_t *root)
{
    const char *v;
    if (est_cv_get_string(c, root, "access_log", &v) <= 0)
        return;
    if (strcmp(v, "stderr") == 0)
        return;
    if (strcmp(v, "off") == 0) {
        c->conf->access_log_off = 1;
        return;
    }
    if (v[0] == '/') {
        c->conf->access_log = est_cv_xstrdup(v);
    } else {
        size_t n = strlen(c->conf->base_dir) + strlen(v) + 2;
        c->conf->access_log = est_cv_xmalloc(n);
        snprintf(c->conf->access_log, n, "%s/%s", c->conf->base_dir, v);
    }
}

/*
 * "tracing" (SPEC "Tracing"): otlp_endpoint (required) becomes an upstream of its own like a
 * jwks_url (SPEC upstream defaults, a 5 s response timeout: one export never waits longer);
 * service_name defaults to "estuary", sample_ratio (a number from 0 to 1) to 1.
 */
static void load_tracing(vctx_t *c, json_t *root)
{
    static const char *const keys[] = {"otlp_endpoint", "service_name", "sample_ratio", NULL};
    json_t *o = est_cv_get_typed(c, root, "tracing", JSON_OBJECT), *v;
    const char *s;
    if (o == NULL)
        return;
    est_tracing_conf_t *t = c->conf->tracing = est_cv_xcalloc(1, sizeof(*t));
    t->sample_ratio = 1.0;
    est_cv_push_key(c, "tracing");
    est_cv_check_keys(c, o, keys);
    if (est_cv_get_string(c, o, "otlp_endpoint", &s) > 0) {
        t->otlp_endpoint = est_cv_xstrdup(s);
        const char *why = est_cv_url_upstream(s, "tracing", &t->otlp_upstream, &t->otlp_path);
        if (why == NULL) {
            t->otlp_upstream->response_timeout_ms = 5000;
        } else {
            est_cv_push_key(c, "otlp_endpoint");
            est_cv_err_val(c, "bad URL \"%s\": %s", est_cv_short(c, s), why);
            est_cv_pop(c);
        }
    } else if (json_object_get(o, "otlp_endpoint") == NULL) {
        est_cv_err_val(c, "missing \"otlp_endpoint\" (such as \"http://127.0.0.1:4318/v1/traces\")");
    }
    if (est_cv_get_string(c, o, "service_name", &s) > 0) {
        if (strlen(s) > 128) {
            est_cv_push_key(c, "service_name");
            est_cv_err_val(c, "must be at most 128 characters long");
            est_cv_pop(c);
        } else {
            t->service_name = est_cv_xstrdup(s);
        }
    }
    if (t->service_name == NULL)
        t->service_name = est_cv_xstrdup("estuary");
    if ((v = json_object_get(o, "sample_ratio")) != NULL) {
        est_cv_push_key(c, "sample_ratio");
        if (!json_is_number(v))
            est_cv_err_val(c, "expected a number from 0 to 1, got %s", est_cv_type_name(v));
        else if (!(json_number_value(v) >= 0.0 && json_number_value(v) <= 1.0))
            est_cv_err_val(c, "expected a number from 0 to 1, got %g", json_number_value(v));
        else
            t->sample_ratio = json_number_value(v);
        est_cv_pop(c);
    }
    est_cv_pop(c);
}

void est_cv_free_tracing(est_config_t *conf)
{
    est_tracing_conf_t *t = conf->tracing;
    if (t == NULL)
        return;
    free(t->otlp_endpoint);
    est_cv_free_upstream(t->otlp_upstream);
    free(t->otlp_path);
    free(t->service_name);
    free(t);
    conf->tracing = NULL;
}

static void load_workers(vctx_t *c, json_t *root)
{
    json_t *v = json_object_get(root, "workers");
    json_int_t n;
    if (v == NULL || (json_is_string(v) && strcmp(json_string_value(v), "auto") == 0)) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        c->conf->workers = cpus < 1 ? 1 : cpus > MAX_WORKERS ? MAX_WORKERS : (unsigned)cpus;
        c->conf->workers_auto = 1;
        return;
    }
    est_cv_push_key(c, "workers");
    if (json_is_integer(v)) {
        if (est_cv_check_int(c, v, 1, MAX_WORKERS, &n) > 0)
            c->conf->workers = (unsigned)n;
    } else if (json_is_string(v)) {
        est_cv_err_val(c, "expected \"auto\" or an integer from 1 to %d, got \"%s\"", MAX_WORKERS, json_string_value(v));
    } else {
        est_cv_err_val(c, "expected \"auto\" or an integer from 1 to %d, got %s", MAX_WORKERS, est_cv_type_name(v));
    }
    est_cv_pop(c);
}

static void load_io_uring(vctx_t *c, json_t *root)
{
    json_t *v = json_object_get(root, "io_uring");
    c->conf->io_uring = 1;
    if (v == NULL)
        return;
    est_cv_push_key(c, "io_uring");
    if (json_is_string(v) && strcmp(json_string_value(v), "auto") == 0)
        c->conf->io_uring = 1;
    else if (json_is_string(v) && strcmp(json_string_value(v), "off") == 0)
        c->conf->io_uring = 0;
    else if (json_is_string(v))
        est_cv_err_val(c, "expected \"auto\" or \"off\", got \"%s\"", json_string_value(v));
    else
        est_cv_err_val(c, "expected \"auto\" or \"off\", got %s", est_cv_type_name(v));
    est_cv_pop(c);
}

void est_cv_load_root(vctx_t *c, json_t *root)
{
    static const char *const keys[] = {"listen", "workers", "shutdown_timeout", "max_request_body", "admin", "dns", "upstreams", "routes",
                                       "access_log", "client_header_timeout", "client_body_timeout", "client_send_timeout",
                                       "client_idle_timeout", "auth", "rate_limits", "redis", "max_backend_reply",
                                       "aggregate_memory", "tracing", "cache", "io_uring", NULL};
    est_config_t *conf = c->conf;

    conf->shutdown_timeout_ms = 10000;
    conf->max_request_body = 8 * 1024 * 1024;
    conf->client_header_timeout_ms = 10000;
    conf->client_body_timeout_ms = 10000;
    conf->client_send_timeout_ms = 30000;
    conf->client_idle_timeout_ms = 60000;
    conf->max_backend_reply = 64u << 20;
    conf->aggregate_memory = 512u << 20;
    if (!json_is_object(root)) {
        est_cv_err_val(c, "the config must be a JSON object, not %s", est_cv_type_name(root));
        load_dns(c, root); /* defaults only */
        return;
    }
    est_cv_check_keys(c, root, keys);
    load_listen(c, root);
    load_workers(c, root);
    load_io_uring(c, root);
    est_cv_get_duration(c, root, "shutdown_timeout", 1, &conf->shutdown_timeout_ms);
    est_cv_get_size(c, root, "max_request_body", &conf->max_request_body);
    est_cv_get_duration(c, root, "client_header_timeout", 0, &conf->client_header_timeout_ms);
    est_cv_get_duration(c, root, "client_body_timeout", 0, &conf->client_body_timeout_ms);
    est_cv_get_duration(c, root, "client_send_timeout", 0, &conf->client_send_timeout_ms);
    est_cv_get_duration(c, root, "client_idle_timeout", 0, &conf->client_idle_timeout_ms);
    est_cv_get_size(c, root, "max_backend_reply", &conf->max_backend_reply);
    est_cv_get_size(c, root, "aggregate_memory", &conf->aggregate_memory);
    load_admin(c, root);
    load_access_log(c, root);
    load_dns(c, root);
    est_cv_load_upstreams(c, root);
    est_cv_load_policy(c, root); /* before the routes, which name its policies */
    est_cv_load_cache(c, root); /* top-level "cache" (schema_cache.c) */
    est_cv_load_routes(c, root);
    load_tracing(c, root);
}
