/*
 * estuary - the "upstreams" section of the config file (shared/SPEC.md, "Config file"):
 * targets, balancing, timeouts, pool, retry and TLS of each named upstream.
 */
#include "config/validate.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void load_upstream(vctx_t *c, json_t *o, est_upstream_conf_t *u)
{
    static const char *const keys[] = {"targets", "balance", "connect_timeout", "response_timeout", "pool", "retry", "tls",
                                       "hedge",   NULL};
    static const char *const pool_keys[] = {"max_connections", "max_idle", "idle_timeout", "max_requests", NULL};
    static const char *const retry_keys[] = {"attempts", "backoff", "max_backoff", "on", NULL};
    static const char *const tls_keys[] = {"verify", "ca_file", "server_name", NULL};
    json_t *targets, *sub;
    const char *s;
    json_int_t n;

    est_upstream_conf_defaults(u);

    if (!json_is_object(o)) {
        est_cv_err_val(c, "expected an object such as {\"targets\": [\"http://host:8080\"]}, got %s", est_cv_type_name(o));
        return;
    }
    est_cv_check_keys(c, o, keys);
    est_cv_load_hedge(c, o, u);

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
                    est_cv_err_val(
                        c, "expected a string (\"connect_failure\", \"reset\", \"timeout\" or a status such as \"503\"), got %s",
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
                    est_cv_err_val(c,
                                   "unknown retry condition \"%s\" (use \"connect_failure\", \"reset\", \"timeout\" or a status "
                                   "from \"100\" to \"599\")",
                                   w);
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

void est_cv_load_upstreams(vctx_t *c, json_t *root)
{
    est_config_t *conf = c->conf;
    json_t *o = est_cv_get_typed(c, root, "upstreams", JSON_OBJECT), *v;
    const char *name;
    if (o == NULL)
        return;
    est_cv_push_key(c, "upstreams");
    conf->upstreams = est_cv_xcalloc(json_object_size(o), sizeof(*conf->upstreams));
    json_object_foreach(o, name, v) {
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
