/*
 * estuary - config schema: the response cache, coalescing and hedging (SPEC "Caching,
 * coalescing and hedging"): top-level "cache", a route's "cache" and "coalesce", an
 * upstream's "hedge".
 */
#include <stdlib.h>
#include <string.h>

#include "config/validate.h"

#define DEFAULT_CACHE_MAX_SIZE (256u << 20)
#define DEFAULT_CACHE_MAX_ENTRY (8u << 20)
/* a route's "vary" names at most this many request headers (each is part of every key) */
#define MAX_VARY 16
/* "hedge.max": extra attempts per request at most (each holds a backend connection) */
#define MAX_HEDGES 4

/* RFC 9110 §5.6.2: token = 1*tchar */
static int is_token(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s != '\0'; ++s) {
        unsigned char ch = (unsigned char)*s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              strchr("!#$%&'*+-.^_`|~", ch) != NULL))
            return 0;
    }
    return 1;
}

/* "expected WHAT, got "value"" for a bad string, "got TYPE" for another type */
static void err_expected(vctx_t *c, json_t *v, const char *what)
{
    if (json_is_string(v))
        est_cv_err_val(c, "expected %s, got \"%s\"", what, est_cv_short(c, json_string_value(v)));
    else
        est_cv_err_val(c, "expected %s, got %s", what, est_cv_type_name(v));
}

void est_cv_load_cache(vctx_t *c, json_t *root)
{
    static const char *const keys[] = {"max_size", "max_entry", NULL};
    est_config_t *conf = c->conf;
    json_t *o = json_object_get(root, "cache");

    conf->cache_max_size = DEFAULT_CACHE_MAX_SIZE;
    conf->cache_max_entry = DEFAULT_CACHE_MAX_ENTRY;
    if (o == NULL)
        return;
    est_cv_push_key(c, "cache");
    if (!json_is_object(o)) {
        est_cv_err_val(c, "expected an object such as {\"max_size\": \"256MiB\", \"max_entry\": \"8MiB\"}, got %s",
                       est_cv_type_name(o));
        est_cv_pop(c);
        return;
    }
    est_cv_check_keys(c, o, keys);
    est_cv_get_size(c, o, "max_size", &conf->cache_max_size);
    est_cv_get_size(c, o, "max_entry", &conf->cache_max_entry);
    if (conf->cache_max_size == 0) {
        est_cv_push_key(c, "max_size");
        est_cv_err_val(c, "must be more than 0 (leave \"cache\" out of the routes to cache nothing)");
        est_cv_pop(c);
    } else if (conf->cache_max_entry > conf->cache_max_size) {
        est_cv_push_key(c, "max_entry");
        est_cv_err_val(c, "must not exceed max_size (%llu bytes)", (unsigned long long)conf->cache_max_size);
        est_cv_pop(c);
    }
    est_cv_pop(c);
}

static void load_vary(vctx_t *c, json_t *arr, est_route_cache_conf_t *rc)
{
    est_cv_push_key(c, "vary");
    if (!json_is_array(arr)) {
        est_cv_err_val(c, "expected an array of request header names such as [\"Accept-Language\"], got %s", est_cv_type_name(arr));
    } else if (json_array_size(arr) > MAX_VARY) {
        est_cv_err_val(c, "at most %d header names", MAX_VARY);
    } else {
        rc->vary = est_cv_xcalloc(json_array_size(arr) + 1, sizeof(char *));
        for (size_t i = 0; i != json_array_size(arr); ++i) {
            json_t *v = json_array_get(arr, i);
            est_cv_push_index(c, i);
            if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v) || !is_token(json_string_value(v))) {
                err_expected(c, v, "a header name such as \"Accept-Language\"");
            } else {
                char *name = est_cv_xstrdup(json_string_value(v));
                for (char *p = name; *p != '\0'; ++p)
                    if (*p >= 'A' && *p <= 'Z')
                        *p = (char)(*p - 'A' + 'a');
                int dup = 0;
                for (size_t k = 0; k != rc->num_vary; ++k)
                    dup |= strcmp(rc->vary[k], name) == 0;
                if (dup) {
                    est_cv_err_val(c, "\"%s\" is listed twice", est_cv_short(c, json_string_value(v)));
                    free(name);
                } else {
                    rc->vary[rc->num_vary++] = name;
                }
            }
            est_cv_pop(c);
        }
    }
    est_cv_pop(c);
}

void est_cv_load_route_cache(vctx_t *c, json_t *route_obj, est_route_conf_t *r)
{
    static const char *const keys[] = {"ttl", "stale_while_revalidate", "stale_if_error", "vary", "shared", NULL};
    json_t *o = json_object_get(route_obj, "cache");

    /* proxy and aggregating routes alike (an aggregating route stores only complete replies) */
    est_cv_get_bool(c, route_obj, "coalesce", &r->coalesce);
    if (o == NULL)
        return;
    est_cv_push_key(c, "cache");
    if (!json_is_object(o)) {
        est_cv_err_val(c, "expected an object such as {\"ttl\": \"30s\"}, got %s", est_cv_type_name(o));
        est_cv_pop(c);
        return;
    }
    est_route_cache_conf_t *rc = r->cache = est_cv_xcalloc(1, sizeof(*rc));
    est_cv_check_keys(c, o, keys);
    est_cv_get_duration(c, o, "ttl", 1, &rc->ttl_ms);
    est_cv_get_duration(c, o, "stale_while_revalidate", 1, &rc->stale_while_revalidate_ms);
    est_cv_get_duration(c, o, "stale_if_error", 1, &rc->stale_if_error_ms);
    est_cv_get_bool(c, o, "shared", &rc->shared);
    json_t *vary = json_object_get(o, "vary");
    if (vary != NULL)
        load_vary(c, vary, rc);
    if (r->websocket) {
        est_cv_err_val(c, "a route with \"websocket\": true cannot be cached");
    }
    r->coalesce = 1; /* SPEC: a cached route coalesces identical requests */
    est_cv_pop(c);
}

/* "10%" -> 100 (per mille); 0 < share <= 100% */
static int parse_percent(const char *s, unsigned *permille)
{
    unsigned v = 0, frac = 0, digits = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; ++p, ++digits)
        if ((v = v * 10 + (unsigned)(*p - '0')) > 100)
            return -1;
    if (digits == 0)
        return -1;
    if (*p == '.') {
        ++p;
        if (!(*p >= '0' && *p <= '9'))
            return -1;
        frac = (unsigned)(*p++ - '0'); /* one decimal: per mille */
    }
    if (strcmp(p, "%") != 0)
        return -1;
    *permille = v * 10 + frac;
    return *permille == 0 || *permille > 1000 ? -1 : 0;
}

void est_cv_load_hedge(vctx_t *c, json_t *upstream_obj, est_upstream_conf_t *u)
{
    static const char *const keys[] = {"delay", "max", "budget", NULL};
    json_t *o = json_object_get(upstream_obj, "hedge"), *v;

    if (o == NULL)
        return;
    est_cv_push_key(c, "hedge");
    if (!json_is_object(o)) {
        est_cv_err_val(c, "expected an object such as {\"delay\": \"auto\", \"max\": 1, \"budget\": \"10%%\"}, got %s",
                       est_cv_type_name(o));
        est_cv_pop(c);
        return;
    }
    est_hedge_conf_t *h = u->hedge = est_cv_xcalloc(1, sizeof(*h));
    h->max = 1;
    h->budget_permille = 100;
    est_cv_check_keys(c, o, keys);
    if ((v = json_object_get(o, "delay")) == NULL) {
        est_cv_err_val(c, "missing \"delay\" (a duration such as \"50ms\", or \"auto\")");
    } else if (json_is_string(v) && strcmp(json_string_value(v), "auto") == 0) {
        h->delay_auto = 1;
    } else if (json_is_string(v)) {
        est_cv_get_duration(c, o, "delay", 0, &h->delay_ms);
    } else {
        est_cv_push_key(c, "delay");
        err_expected(c, v, "a duration such as \"50ms\", or \"auto\"");
        est_cv_pop(c);
    }
    json_int_t max;
    if (est_cv_get_int(c, o, "max", 1, MAX_HEDGES, &max) > 0)
        h->max = (unsigned)max;
    if ((v = json_object_get(o, "budget")) != NULL) {
        est_cv_push_key(c, "budget");
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v) ||
            parse_percent(json_string_value(v), &h->budget_permille) != 0)
            err_expected(c, v, "a share of the first attempts such as \"10%\" (more than 0%, at most 100%)");
        est_cv_pop(c);
    }
    est_cv_pop(c);
}

void est_cv_free_route_cache(est_route_conf_t *r)
{
    if (r->cache == NULL)
        return;
    for (size_t i = 0; i != r->cache->num_vary; ++i)
        free(r->cache->vary[i]);
    free(r->cache->vary);
    free(r->cache);
    r->cache = NULL;
}
