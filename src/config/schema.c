/*
 * estuary - the schema of the config file (shared/SPEC.md, "Config file"), section by
 * section: listen, workers, admin, dns, upstreams, routes. Each section fills SPEC
 * defaults first, then reads what the file sets, reporting every problem it finds.
 */
#include "config/validate.h"
#include "router/template.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_WORKERS 256

/* "did you mean" looks among at most this many upstream names */
#define MAX_SUGGEST_CANDIDATES 256

static void load_listen(vctx_t *c, json_t *root);
static void load_admin(vctx_t *c, json_t *root);
static void load_dns(vctx_t *c, json_t *root);
static void load_upstreams(vctx_t *c, json_t *root);
static void load_routes(vctx_t *c, json_t *root);
static void load_workers(vctx_t *c, json_t *root);
static void load_access_log(vctx_t *c, json_t *root);

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

static void load_listen(vctx_t *c, json_t *root)
{
    static const char *const keys[] = {"host", "port", "tls", NULL};
    static const char *const tls_keys[] = {"certificate_file", "key_file", NULL};
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
                const char *f;
                l->tls = 1;
                est_cv_push_key(c, "tls");
                est_cv_check_keys(c, tls, tls_keys);
                for (int k = 0; k < 2; k++) {
                    const char *key = tls_keys[k];
                    if (est_cv_get_string(c, tls, key, &f) > 0) {
                        est_cv_push_key(c, key);
                        char *r = est_cv_check_file(c, f);
                        est_cv_pop(c);
                        *(k == 0 ? &l->certificate_file : &l->key_file) = r;
                    } else if (json_object_get(tls, key) == NULL) {
                        est_cv_err_val(c, "missing \"%s\"", key);
                    }
                }
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
    static const char *const keys[] = {"host", "port", NULL};
    json_t *o = est_cv_get_typed(c, root, "admin", JSON_OBJECT);
    if (o == NULL)
        return;
    est_admin_conf_t *a = c->conf->admin = est_cv_xcalloc(1, sizeof(*a));
    est_cv_push_key(c, "admin");
    est_cv_check_keys(c, o, keys);
    load_address(c, o, "127.0.0.1", &a->host, &a->port);
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

static void load_upstream(vctx_t *c, json_t *o, est_upstream_conf_t *u)
{
    static const char *const keys[] = {"targets", "balance", "connect_timeout", "response_timeout", "pool", "retry", "tls", NULL};
    static const char *const pool_keys[] = {"max_connections", "max_idle", "idle_timeout", "max_requests", NULL};
    static const char *const retry_keys[] = {"attempts", "backoff", "max_backoff", "on", NULL};
    static const char *const tls_keys[] = {"verify", "ca_file", "server_name", NULL};
    json_t *targets, *sub;
    const char *s;
    json_int_t n;

    u->balance = EST_BALANCE_ROUND_ROBIN;
    u->connect_timeout_ms = 1000;
    u->response_timeout_ms = 10000;
    u->pool.max_connections = 256;
    u->pool.max_idle = 32;
    u->pool.idle_timeout_ms = 30000;
    u->pool.max_requests = 10000;
    u->retry.attempts = 2;
    u->retry.backoff_ms = 25;
    u->retry.max_backoff_ms = 250;
    u->retry.on = EST_RETRY_ON_CONNECT_FAILURE | EST_RETRY_ON_RESET;
    u->tls.verify = 1;

    if (!json_is_object(o)) {
        est_cv_err_val(c, "expected an object such as {\"targets\": [\"http://host:8080\"]}, got %s", est_cv_type_name(o));
        return;
    }
    est_cv_check_keys(c, o, keys);

    if ((targets = json_object_get(o, "targets")) == NULL) {
        est_cv_err_val(c, "missing \"targets\"");
    } else {
        est_cv_push_key(c, "targets");
        if (!json_is_array(targets)) {
            est_cv_err_val(c, "expected an array of URLs, got %s", est_cv_type_name(targets));
        } else if (json_array_size(targets) == 0) {
            est_cv_err_val(c, "must list at least one URL");
        } else {
            u->targets = est_cv_xcalloc(json_array_size(targets), sizeof(*u->targets));
            for (size_t i = 0; i < json_array_size(targets); i++) {
                json_t *t = json_array_get(targets, i);
                const char *why;
                est_cv_push_index(c, i);
                if (!json_is_string(t))
                    est_cv_err_val(c, "expected a URL string such as \"http://host:8080\", got %s", est_cv_type_name(t));
                else if ((why = est_cv_parse_target(json_string_value(t), &u->targets[u->num_targets])) != NULL)
                    est_cv_err_val(c, "bad target \"%s\": %s", est_cv_short(c, json_string_value(t)), why);
                else
                    u->num_targets++;
                est_cv_pop(c);
            }
        }
        est_cv_pop(c);
    }
    if (est_cv_get_string(c, o, "balance", &s) > 0) {
        if (strcmp(s, "round_robin") == 0) {
            u->balance = EST_BALANCE_ROUND_ROBIN;
        } else if (strcmp(s, "least_request") == 0) {
            u->balance = EST_BALANCE_LEAST_REQUEST;
        } else {
            est_cv_push_key(c, "balance");
            est_cv_err_val(c, "unknown balance \"%s\" (use \"round_robin\" or \"least_request\")", s);
            est_cv_pop(c);
        }
    }
    est_cv_get_duration(c, o, "connect_timeout", 0, &u->connect_timeout_ms);
    est_cv_get_duration(c, o, "response_timeout", 0, &u->response_timeout_ms);

    if ((sub = est_cv_get_typed(c, o, "pool", JSON_OBJECT)) != NULL) {
        est_cv_push_key(c, "pool");
        est_cv_check_keys(c, sub, pool_keys);
        if (est_cv_get_int(c, sub, "max_connections", 1, 1000000, &n) > 0)
            u->pool.max_connections = (size_t)n;
        if (est_cv_get_int(c, sub, "max_idle", 0, 1000000, &n) > 0)
            u->pool.max_idle = (size_t)n;
        est_cv_get_duration(c, sub, "idle_timeout", 0, &u->pool.idle_timeout_ms);
        if (est_cv_get_int(c, sub, "max_requests", 1, JSON_INTEGER_MAX, &n) > 0)
            u->pool.max_requests = (size_t)n;
        est_cv_pop(c);
    }

    if ((sub = est_cv_get_typed(c, o, "retry", JSON_OBJECT)) != NULL) {
        json_t *on;
        est_cv_push_key(c, "retry");
        est_cv_check_keys(c, sub, retry_keys);
        if (est_cv_get_int(c, sub, "attempts", 1, 100, &n) > 0)
            u->retry.attempts = (unsigned)n;
        est_cv_get_duration(c, sub, "backoff", 1, &u->retry.backoff_ms);
        est_cv_get_duration(c, sub, "max_backoff", 1, &u->retry.max_backoff_ms);
        if ((on = est_cv_get_typed(c, sub, "on", JSON_ARRAY)) != NULL) {
            est_cv_push_key(c, "on");
            u->retry.on = 0;
            u->retry.statuses = est_cv_xcalloc(json_array_size(on), sizeof(int));
            for (size_t i = 0; i < json_array_size(on); i++) {
                json_t *v = json_array_get(on, i);
                const char *w;
                est_cv_push_index(c, i);
                if (!json_is_string(v)) {
                    est_cv_err_val(c, "expected a string (\"connect_failure\", \"reset\", \"timeout\" or a status such as \"503\"), got %s",
                            est_cv_type_name(v));
                } else if (strcmp(w = json_string_value(v), "connect_failure") == 0) {
                    u->retry.on |= EST_RETRY_ON_CONNECT_FAILURE;
                } else if (strcmp(w, "reset") == 0) {
                    u->retry.on |= EST_RETRY_ON_RESET;
                } else if (strcmp(w, "timeout") == 0) {
                    u->retry.on |= EST_RETRY_ON_TIMEOUT;
                } else if (strlen(w) == 3 && strspn(w, "0123456789") == 3 && atoi(w) >= 100 && atoi(w) <= 599) {
                    int st = atoi(w), dup = 0;
                    for (size_t k = 0; k < u->retry.num_statuses; k++)
                        dup |= u->retry.statuses[k] == st;
                    if (!dup)
                        u->retry.statuses[u->retry.num_statuses++] = st;
                } else {
                    est_cv_err_val(c, "unknown retry condition \"%s\" (use \"connect_failure\", \"reset\", \"timeout\" or a status from \"100\" to \"599\")", w);
                }
                est_cv_pop(c);
            }
            est_cv_pop(c);
        }
        est_cv_pop(c);
    }

    if ((sub = est_cv_get_typed(c, o, "tls", JSON_OBJECT)) != NULL) {
        est_cv_push_key(c, "tls");
        est_cv_check_keys(c, sub, tls_keys);
        est_cv_get_bool(c, sub, "verify", &u->tls.verify);
        if (est_cv_get_string(c, sub, "ca_file", &s) > 0) {
            est_cv_push_key(c, "ca_file");
            u->tls.ca_file = est_cv_check_file(c, s);
            est_cv_pop(c);
        }
        if (est_cv_get_string(c, sub, "server_name", &s) > 0) {
            if (!est_cv_is_host_name(s, strlen(s)) && !est_cv_is_ip_literal(s)) {
                est_cv_push_key(c, "server_name");
                est_cv_err_val(c, "bad server name \"%s\"", s);
                est_cv_pop(c);
            }
            u->tls.server_name = est_cv_xstrdup(s);
        }
        est_cv_pop(c);
    }
}

static void load_upstreams(vctx_t *c, json_t *root)
{
    est_config_t *conf = c->conf;
    json_t *o = est_cv_get_typed(c, root, "upstreams", JSON_OBJECT), *v;
    const char *name;
    if (o == NULL)
        return;
    est_cv_push_key(c, "upstreams");
    conf->upstreams = est_cv_xcalloc(json_object_size(o), sizeof(*conf->upstreams));
    json_object_foreach(o, name, v)
    {
        /* every named upstream is kept, even with errors, so that routes naming it do not
         * get a second, misleading "not defined" error */
        est_upstream_conf_t *u = &conf->upstreams[conf->num_upstreams];
        u->index = conf->num_upstreams++;
        u->name = est_cv_xstrdup(name);
        est_cv_push_key(c, name);
        if (strlen(name) == 0 || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != strlen(name))
            est_cv_err_key(c, "bad upstream name \"%s\" (use letters, digits, '_', '-' and '.')", est_cv_short(c, name));
        load_upstream(c, v, u);
        est_cv_pop(c);
    }
    est_cv_pop(c);
}

static int bad_dot_path_value(vctx_t *c, json_t *v)
{
    if (!json_is_string(v)) {
        est_cv_err_val(c, "expected a field path string such as \"data.user\", got %s", est_cv_type_name(v));
        return 1;
    }
    if (!est_cv_is_dot_path(json_string_value(v))) {
        est_cv_err_val(c, "bad field path \"%s\" (use names separated by single dots, e.g. \"data.user\")", json_string_value(v));
        return 1;
    }
    return 0;
}

static char **load_path_list(vctx_t *c, json_t *o, const char *key, size_t *num)
{
    json_t *arr = est_cv_get_typed(c, o, key, JSON_ARRAY);
    char **list;
    if (arr == NULL)
        return NULL;
    est_cv_push_key(c, key);
    list = est_cv_xcalloc(json_array_size(arr), sizeof(char *));
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *v = json_array_get(arr, i);
        est_cv_push_index(c, i);
        if (!bad_dot_path_value(c, v))
            list[(*num)++] = est_cv_xstrdup(json_string_value(v));
        est_cv_pop(c);
    }
    est_cv_pop(c);
    return list;
}


/*
 * Reads the "upstream" and "path" of a backend or proxy object into `b`; `route_tpl` is
 * the route's parsed template (NULL if it did not parse).
 */
static void load_backend_target(vctx_t *c, json_t *o, est_backend_conf_t *b, const est_template_t *route_tpl, const char *route_path,
                                int path_required)
{
    const char *s;
    if (est_cv_get_string(c, o, "upstream", &s) > 0) {
        b->upstream_name = est_cv_xstrdup(s);
        if ((b->upstream = est_cv_find_upstream(c, s)) == NULL) {
            char hint[128] = "";
            /* a suggestion only among a few names, and only for an error that is kept */
            if (!est_cv_errors_full(c) && c->conf->num_upstreams <= MAX_SUGGEST_CANDIDATES) {
                const char **names = est_cv_xcalloc(c->conf->num_upstreams, sizeof(char *));
                for (size_t i = 0; i < c->conf->num_upstreams; i++)
                    names[i] = c->conf->upstreams[i].name;
                const char *sug = est_cv_suggest(s, names, c->conf->num_upstreams);
                if (sug != NULL)
                    snprintf(hint, sizeof(hint), " (did you mean \"%s\"?)", sug);
                free(names);
            }
            est_cv_push_key(c, "upstream");
            est_cv_err_val(c, "upstream \"%s\" is not defined%s", est_cv_short(c, s), hint);
            est_cv_pop(c);
        }
    } else if (json_object_get(o, "upstream") == NULL) {
        est_cv_err_val(c, "missing \"upstream\"");
    }

    if (est_cv_get_string(c, o, "path", &s) > 0) {
        est_template_t tpl;
        char err[256];
        size_t off = 0;
        unsigned line, col;
        b->path = est_cv_xstrdup(s);
        est_cv_push_key(c, "path");
        if (est_template_parse(&tpl, s, 0, err, sizeof(err), &off) != 0) {
            est_cv_string_offset_pos(c, off, &line, &col);
            est_cv_err_at(c, line, col, "%s: bad path \"%s\": %s", est_cv_short(c, c->disp), est_cv_short(c, s), err);
        } else {
            for (size_t i = 0; route_tpl != NULL && i < tpl.num_pieces && !est_cv_errors_full(c); i++) {
                const est_tpl_piece_t *p = &tpl.pieces[i];
                if (p->kind == EST_TPL_LITERAL || est_template_find_param(route_tpl, p->text, p->len) != NULL)
                    continue;
                /* point at the "{name" in the source string */
                size_t at = 0;
                for (const char *q = s; (q = strchr(q, '{')) != NULL; q++) {
                    if (strncmp(q + 1, p->text, p->len) == 0 && (q[1 + p->len] == '}' || q[1 + p->len] == '.')) {
                        at = (size_t)(q - s);
                        break;
                    }
                }
                est_cv_string_offset_pos(c, at, &line, &col);
                est_cv_err_at(c, line, col, "%s: parameter {%.*s} is not bound by the route path \"%s\"", est_cv_short(c, c->disp),
                             (int)p->len, p->text, est_cv_short(c, route_path));
            }
            est_template_dispose(&tpl);
        }
        est_cv_pop(c);
    } else if (path_required && json_object_get(o, "path") == NULL) {
        est_cv_err_val(c, "missing \"path\"");
    }
}

static void load_backend(vctx_t *c, json_t *o, est_backend_conf_t *b, const est_template_t *route_tpl, const char *route_path)
{
    static const char *const keys[] = {"upstream", "path", "group", "target", "allow", "deny", "mapping", NULL};
    json_t *m;
    const char *s;

    if (!json_is_object(o)) {
        est_cv_err_val(c, "expected an object such as {\"upstream\": \"users\", \"path\": \"/users/{id}\"}, got %s", est_cv_type_name(o));
        return;
    }
    est_cv_check_keys(c, o, keys);
    load_backend_target(c, o, b, route_tpl, route_path, 1);
    if (est_cv_get_string(c, o, "group", &s) > 0)
        b->group = est_cv_xstrdup(s);
    if (json_object_get(o, "target") != NULL) {
        est_cv_push_key(c, "target");
        if (!bad_dot_path_value(c, json_object_get(o, "target")))
            b->target = est_cv_xstrdup(json_string_value(json_object_get(o, "target")));
        est_cv_pop(c);
    }
    b->allow = load_path_list(c, o, "allow", &b->num_allow);
    b->deny = load_path_list(c, o, "deny", &b->num_deny);
    if (json_object_get(o, "allow") != NULL && json_object_get(o, "deny") != NULL) {
        est_cv_push_key(c, "deny");
        const est_jsonpos_entry_t *e = est_cv_here(c);
        est_cv_pop(c);
        est_cv_err_at(c, e ? e->key_line : 1, e ? e->key_col : 1, "%s: use either \"allow\" or \"deny\", not both", c->disp);
    }
    if ((m = est_cv_get_typed(c, o, "mapping", JSON_OBJECT)) != NULL) {
        const char *from;
        json_t *to;
        est_cv_push_key(c, "mapping");
        b->mapping = est_cv_xcalloc(json_object_size(m), sizeof(*b->mapping));
        json_object_foreach(m, from, to)
        {
            est_cv_push_key(c, from);
            if (*from == '\0')
                est_cv_err_key(c, "a field name cannot be empty");
            else if (!json_is_string(to))
                est_cv_err_val(c, "expected the new field name as a string, got %s", est_cv_type_name(to));
            else if (json_string_length(to) == 0)
                est_cv_err_val(c, "the new field name cannot be empty");
            else {
                b->mapping[b->num_mapping].from = est_cv_xstrdup(from);
                b->mapping[b->num_mapping].to = est_cv_xstrdup(json_string_value(to));
                b->num_mapping++;
            }
            est_cv_pop(c);
        }
        est_cv_pop(c);
    }
}

static const char *timing_base(const est_backend_conf_t *b)
{
    return b->group ? b->group : b->upstream_name ? b->upstream_name : "";
}

/* by timing base name, then position */
static int cmp_backend_index(const void *a, const void *b, void *arg)
{
    const est_backend_conf_t *base = arg;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    int r = strcmp(timing_base(&base[i]), timing_base(&base[j]));
    return r != 0 ? r : (i < j ? -1 : i > j);
}

/* Server-Timing names: group, else upstream; "#2", "#3" on a clash (in backend order) */
static void set_timing_names(est_route_conf_t *r)
{
    size_t n = r->num_backends, *order = est_cv_xcalloc(n, sizeof(*order)), seen = 0;
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    qsort_r(order, n, sizeof(*order), cmp_backend_index, r->backends);
    for (size_t k = 0; k < n; k++) {
        est_backend_conf_t *b = &r->backends[order[k]];
        const char *base = timing_base(b);
        seen = k != 0 && strcmp(timing_base(&r->backends[order[k - 1]]), base) == 0 ? seen + 1 : 1;
        size_t len = strlen(base) + 24;
        b->timing_name = est_cv_xmalloc(len);
        if (seen == 1)
            snprintf(b->timing_name, len, "%s", base);
        else
            snprintf(b->timing_name, len, "%s#%zu", base, seen);
    }
    free(order);
}

static void load_route(vctx_t *c, json_t *o, est_route_conf_t *r, est_template_t *tpl, int *tpl_ok)
{
    static const char *const keys[] = {"path", "methods", "timeout", "on_error", "websocket", "preserve_host", "max_request_body",
                                       "backends", "proxy", NULL};
    static const char *const proxy_keys[] = {"upstream", "path", "buffer", NULL};
    json_t *v, *backends, *proxy;
    const char *s;

    r->methods = EST_METHOD_GET | EST_METHOD_HEAD;
    r->timeout_ms = 5000;
    r->on_error = EST_ON_ERROR_PARTIAL;
    r->max_request_body = c->conf->max_request_body; /* the top level is loaded first */
    r->proxy_buffer = 256 * 1024;
    if (!json_is_object(o)) {
        est_cv_err_val(c, "expected a route object, got %s", est_cv_type_name(o));
        return;
    }
    est_cv_check_keys(c, o, keys);

    if (est_cv_get_string(c, o, "path", &s) > 0) {
        char err[256];
        size_t off = 0;
        r->path = est_cv_xstrdup(s);
        if (est_template_parse(tpl, s, 1, err, sizeof(err), &off) == 0) {
            *tpl_ok = 1;
        } else {
            unsigned line, col;
            est_cv_push_key(c, "path");
            est_cv_string_offset_pos(c, off, &line, &col);
            est_cv_err_at(c, line, col, "%s: bad path template \"%s\": %s", est_cv_short(c, c->disp), est_cv_short(c, s), err);
            est_cv_pop(c);
        }
    } else if (json_object_get(o, "path") == NULL) {
        est_cv_err_val(c, "missing \"path\"");
    }

    if ((v = json_object_get(o, "methods")) != NULL) {
        est_cv_push_key(c, "methods");
        if (!json_is_array(v)) {
            est_cv_err_val(c, "expected an array such as [\"GET\", \"POST\"], got %s", est_cv_type_name(v));
        } else if (json_array_size(v) == 0) {
            est_cv_err_val(c, "must list at least one method");
        } else {
            r->methods = 0;
            for (size_t i = 0; i < json_array_size(v); i++) {
                json_t *m = json_array_get(v, i);
                unsigned bit;
                est_cv_push_index(c, i);
                if (!json_is_string(m))
                    est_cv_err_val(c, "expected a method name such as \"GET\", got %s", est_cv_type_name(m));
                else if ((bit = est_method_from_name(json_string_value(m), json_string_length(m))) == 0)
                    est_cv_err_val(c, "unknown method \"%s\" (use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS)", json_string_value(m));
                else
                    r->methods |= bit;
                est_cv_pop(c);
            }
            if (r->methods & EST_METHOD_GET)
                r->methods |= EST_METHOD_HEAD;
            if (r->methods == 0)
                r->methods = EST_METHOD_GET | EST_METHOD_HEAD; /* errors reported; keeps clash checks quiet */
        }
        est_cv_pop(c);
    }
    est_cv_get_duration(c, o, "timeout", 0, &r->timeout_ms);
    est_cv_get_bool(c, o, "websocket", &r->websocket);
    est_cv_get_bool(c, o, "preserve_host", &r->preserve_host);
    est_cv_get_size(c, o, "max_request_body", &r->max_request_body);

    backends = json_object_get(o, "backends");
    proxy = json_object_get(o, "proxy");
    if (est_cv_get_string(c, o, "on_error", &s) > 0) {
        est_cv_push_key(c, "on_error");
        if (strcmp(s, "partial") == 0)
            r->on_error = EST_ON_ERROR_PARTIAL;
        else if (strcmp(s, "fail") == 0)
            r->on_error = EST_ON_ERROR_FAIL;
        else
            est_cv_err_val(c, "unknown on_error \"%s\" (use \"partial\" or \"fail\")", s);
        if (backends == NULL && proxy != NULL)
            est_cv_err_key(c, "applies only to routes with \"backends\"");
        est_cv_pop(c);
    }
    if (r->websocket && backends != NULL && proxy == NULL) {
        est_cv_push_key(c, "websocket");
        est_cv_err_val(c, "WebSockets need a \"proxy\" route");
        est_cv_pop(c);
    }

    if (backends != NULL && proxy != NULL) {
        est_cv_push_key(c, "proxy");
        const est_jsonpos_entry_t *e = est_cv_here(c);
        est_cv_pop(c);
        est_cv_err_at(c, e ? e->key_line : 1, e ? e->key_col : 1, "%s: use either \"backends\" or \"proxy\", not both", c->disp);
    } else if (backends == NULL && proxy == NULL) {
        est_cv_err_val(c, "missing \"backends\" or \"proxy\"");
    } else if (backends != NULL) {
        est_cv_push_key(c, "backends");
        if (!json_is_array(backends)) {
            est_cv_err_val(c, "expected an array of backends, got %s", est_cv_type_name(backends));
        } else if (json_array_size(backends) == 0) {
            est_cv_err_val(c, "must list at least one backend");
        } else {
            r->num_backends = json_array_size(backends);
            r->backends = est_cv_xcalloc(r->num_backends, sizeof(*r->backends));
            for (size_t i = 0; i < r->num_backends; i++) {
                est_cv_push_index(c, i);
                load_backend(c, json_array_get(backends, i), &r->backends[i], *tpl_ok ? tpl : NULL, r->path);
                est_cv_pop(c);
            }
            set_timing_names(r);
        }
        est_cv_pop(c);
    } else {
        est_cv_push_key(c, "proxy");
        if (!json_is_object(proxy)) {
            est_cv_err_val(c, "expected an object such as {\"upstream\": \"users\"}, got %s", est_cv_type_name(proxy));
        } else {
            r->proxy = est_cv_xcalloc(1, sizeof(*r->proxy));
            est_cv_check_keys(c, proxy, proxy_keys);
            est_cv_get_size(c, proxy, "buffer", &r->proxy_buffer);
            load_backend_target(c, proxy, r->proxy, *tpl_ok ? tpl : NULL, r->path, 0);
            r->proxy->timing_name = est_cv_xstrdup(r->proxy->upstream_name ? r->proxy->upstream_name : "");
        }
        est_cv_pop(c);
    }
}

/* orders route templates by shape (est_template_same_shape), then position */
static int cmp_route_shape(const void *a, const void *b, void *arg)
{
    const est_template_t *tpls = arg;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    const est_template_t *x = &tpls[i], *y = &tpls[j];
    size_t n = x->num_pieces < y->num_pieces ? x->num_pieces : y->num_pieces;
    for (size_t k = 0; k < n; k++) {
        const est_tpl_piece_t *p = &x->pieces[k], *q = &y->pieces[k];
        if (p->kind != q->kind)
            return p->kind < q->kind ? -1 : 1;
        if (p->kind == EST_TPL_LITERAL) {
            int r = memcmp(p->text, q->text, p->len < q->len ? p->len : q->len);
            if (r != 0)
                return r;
            if (p->len != q->len)
                return p->len < q->len ? -1 : 1;
        }
    }
    if (x->num_pieces != y->num_pieces)
        return x->num_pieces < y->num_pieces ? -1 : 1;
    return i < j ? -1 : i > j;
}

/*
 * Reports each route whose template has the same shape as an earlier route's with a method in
 * common, naming the first such route. Sorted by shape, so that no route is compared with every
 * other: within a group of one shape, the earliest route holding each method is kept.
 */
static void check_route_clashes(vctx_t *c, const est_template_t *tpls, const int *ok, const unsigned *lines)
{
    est_config_t *conf = c->conf;
    size_t n = conf->num_routes, m = 0, *order = est_cv_xcalloc(n, sizeof(*order));
    size_t first_with[EST_METHOD__COUNT];
    for (size_t i = 0; i < n; i++)
        if (ok[i])
            order[m++] = i;
    qsort_r(order, m, sizeof(*order), cmp_route_shape, (void *)tpls);
    for (size_t k = 0; k < m; k++) {
        size_t i = order[k];
        const est_route_conf_t *r = &conf->routes[i];
        if (k == 0 || !est_template_same_shape(&tpls[order[k - 1]], &tpls[i]))
            for (size_t b = 0; b < EST_METHOD__COUNT; b++)
                first_with[b] = SIZE_MAX; /* a new shape */
        size_t j = SIZE_MAX; /* the earliest route of this shape sharing a method with r */
        for (size_t b = 0; b < EST_METHOD__COUNT; b++)
            if ((r->methods & (1u << b)) && first_with[b] < j)
                j = first_with[b];
        for (size_t b = 0; b < EST_METHOD__COUNT; b++)
            if ((r->methods & (1u << b)) && first_with[b] == SIZE_MAX)
                first_with[b] = i;
        if (j == SIZE_MAX)
            continue;
        unsigned common = r->methods & conf->routes[j].methods;
        est_cv_push_index(c, i); /* under "routes" */
        est_cv_push_key(c, "path");
        est_cv_err_val(c, "route \"%s\" clashes with route \"%s\" (line %u) for method %s", est_cv_short(c, r->path),
                       est_cv_short(c, conf->routes[j].path), lines[j],
                       est_method_name(common & (~common + 1)));
        est_cv_pop(c);
        est_cv_pop(c);
    }
    free(order);
}

static void load_routes(vctx_t *c, json_t *root)
{
    est_config_t *conf = c->conf;
    json_t *arr = json_object_get(root, "routes");
    if (arr == NULL)
        return;
    est_cv_push_key(c, "routes");
    if (!json_is_array(arr)) {
        est_cv_err_val(c, "expected an array of routes, got %s", est_cv_type_name(arr));
        est_cv_pop(c);
        return;
    }
    size_t n = json_array_size(arr);
    est_template_t *tpls = est_cv_xcalloc(n, sizeof(*tpls));
    int *ok = est_cv_xcalloc(n, sizeof(int));
    unsigned *lines = est_cv_xcalloc(n, sizeof(unsigned));
    conf->routes = est_cv_xcalloc(n, sizeof(*conf->routes));
    conf->num_routes = n;
    for (size_t i = 0; i < n; i++) {
        est_route_conf_t *r = &conf->routes[i];
        r->index = i;
        est_cv_push_index(c, i);
        load_route(c, json_array_get(arr, i), r, &tpls[i], &ok[i]);
        if (ok[i]) {
            est_cv_push_key(c, "path");
            lines[i] = est_cv_line_of(c);
            est_cv_pop(c);
        }
        est_cv_pop(c);
    }
    check_route_clashes(c, tpls, ok, lines);
    for (size_t i = 0; i < n; i++)
        if (ok[i])
            est_template_dispose(&tpls[i]);
    free(tpls);
    free(ok);
    free(lines);
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

void est_cv_load_root(vctx_t *c, json_t *root)
{
    static const char *const keys[] = {"listen", "workers", "shutdown_timeout", "max_request_body", "admin", "dns", "upstreams", "routes",
                                       "access_log", "client_header_timeout", "client_body_timeout", "client_send_timeout",
                                       "client_idle_timeout", NULL};
    est_config_t *conf = c->conf;

    conf->shutdown_timeout_ms = 10000;
    conf->max_request_body = 8 * 1024 * 1024;
    conf->client_header_timeout_ms = 10000;
    conf->client_body_timeout_ms = 10000;
    conf->client_send_timeout_ms = 30000;
    conf->client_idle_timeout_ms = 60000;
    if (!json_is_object(root)) {
        est_cv_err_val(c, "the config must be a JSON object, not %s", est_cv_type_name(root));
        load_dns(c, root); /* defaults only */
        return;
    }
    est_cv_check_keys(c, root, keys);
    load_listen(c, root);
    load_workers(c, root);
    est_cv_get_duration(c, root, "shutdown_timeout", 1, &conf->shutdown_timeout_ms);
    est_cv_get_size(c, root, "max_request_body", &conf->max_request_body);
    est_cv_get_duration(c, root, "client_header_timeout", 0, &conf->client_header_timeout_ms);
    est_cv_get_duration(c, root, "client_body_timeout", 0, &conf->client_body_timeout_ms);
    est_cv_get_duration(c, root, "client_send_timeout", 0, &conf->client_send_timeout_ms);
    est_cv_get_duration(c, root, "client_idle_timeout", 0, &conf->client_idle_timeout_ms);
    load_admin(c, root);
    load_access_log(c, root);
    load_dns(c, root);
    load_upstreams(c, root);
    load_routes(c, root);
}
