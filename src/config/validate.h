/*
 * estuary - internals of the config loader, shared by the files of src/config only.
 *
 * vctx_t carries the validation state: the text and its position index (jsonpos.h), the
 * path of the value being checked (as a JSON pointer to find its position, and as
 * "routes[0].backends[1]" for messages), and the errors found so far with their
 * positions. Nothing here is part of the config API (config.h).
 *
 * Memory: est_cv_x* abort on allocation failure (as h2o_mem_alloc does): the config is
 * read at start and on reload, where there is nothing sensible to fall back to.
 */
#ifndef EST_CONFIG_VALIDATE_H
#define EST_CONFIG_VALIDATE_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "config/config.h"
#include "config/jsonpos.h"

#define MAX_DEPTH 16
#define JSON_INTEGER_MAX LLONG_MAX /* json_int_t is long long (JSON_INTEGER_IS_LONG_LONG) */

typedef struct pending_error {
    unsigned line, col;
    size_t seq;
    char *msg;
} pending_error_t;

/* validation state: the document, where we are in it, and the errors found so far */
typedef struct vctx {
    const char *file;
    const char *text;
    size_t len;
    est_jsonpos_t pos;
    char *ptr; /* JSON pointer of the current value */
    size_t ptr_len, ptr_cap;
    char *disp; /* the same, for humans: routes[0].backends[1] */
    size_t disp_len, disp_cap;
    struct {
        size_t ptr_len, disp_len;
    } stack[MAX_DEPTH];
    size_t depth, overflow;
    pending_error_t *errors;
    size_t num_errors, cap_errors;
    size_t dropped_errors; /* found past EST_CONFIG_MAX_ERRORS: counted, not kept */
    unsigned dropped_line, dropped_col; /* where the first of them is */
    est_upstream_conf_t **ups_by_name; /* conf->upstreams sorted by name, built on first lookup */
    json_t *policy_names;              /* schema_policy.c: policy names -> indexes, for the routes */
    char short_bufs[4][224];           /* est_cv_short's results */
    unsigned short_next;
    est_config_t *conf;
} vctx_t;

/* allocation that aborts on failure; results owned by the caller */
void *est_cv_xmalloc(size_t sz);
void *est_cv_xcalloc(size_t n, size_t sz);
char *est_cv_xstrdup(const char *s);
/* appends `n` bytes of `s` to the growing NUL-terminated buffer *buf (len/cap updated) */
void est_cv_buf_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n);

/* descend into member `key` / element `i` of the current value; est_cv_pop goes back up */
void est_cv_push_key(vctx_t *c, const char *key);
void est_cv_push_index(vctx_t *c, size_t i);
void est_cv_pop(vctx_t *c);
/* position of the current value (or of its nearest indexed ancestor); borrowed, may be NULL */
const est_jsonpos_entry_t *est_cv_here(vctx_t *c);
/* line of the current value */
unsigned est_cv_line_of(vctx_t *c);
/* line/column of byte `offset` inside the current string value (at its quote if escapes intervene) */
void est_cv_string_offset_pos(vctx_t *c, size_t offset, unsigned *line, unsigned *col);

/* 1 once EST_CONFIG_MAX_ERRORS errors are kept: further ones are only counted, so callers
 * may skip the work of building them (suggestions, positions) */
int est_cv_errors_full(const vctx_t *c);
/* the upstream named `name`, or NULL (binary search: no scan per backend) */
est_upstream_conf_t *est_cv_find_upstream(vctx_t *c, const char *name);

/* `s` for quoting in a message: itself when short, else its first 200 bytes (whole characters)
 * and "..."; the result is borrowed and valid until the fourth next call */
const char *est_cv_short(vctx_t *c, const char *s);

/* record an error at line:col, verbatim */
void est_cv_err_at(vctx_t *c, unsigned line, unsigned col, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* record an error at the current value / its key, prefixed with the value's path ("listen[0].port: ") */
void est_cv_err_val(vctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void est_cv_err_key(vctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "an object", "a string", ... for messages (static string) */
const char *est_cv_type_name(const json_t *v);
/* the candidate closest to `word` (at most 2 edits), or NULL; borrowed from `candidates` */
const char *est_cv_suggest(const char *word, const char *const *candidates, size_t n);

/*
 * Typed getters for member `key` of `obj` (borrowed; the current value). They report
 * problems themselves and return 1 = set (*out filled; strings are borrowed from the
 * json_t), 0 = absent (*out untouched), -1 = invalid.
 */
void est_cv_check_keys(vctx_t *c, json_t *obj, const char *const *allowed);
json_t *est_cv_get_typed(vctx_t *c, json_t *obj, const char *key, json_type type); /* NULL if absent or reported */
int est_cv_get_string(vctx_t *c, json_t *obj, const char *key, const char **out);  /* non-empty, no NUL */
int est_cv_get_bool(vctx_t *c, json_t *obj, const char *key, int *out);
int est_cv_check_int(vctx_t *c, json_t *v, json_int_t min, json_int_t max, json_int_t *out); /* v is the current value */
int est_cv_get_int(vctx_t *c, json_t *obj, const char *key, json_int_t min, json_int_t max, json_int_t *out);
int est_cv_get_duration(vctx_t *c, json_t *obj, const char *key, int allow_zero, uint64_t *out);
int est_cv_get_size(vctx_t *c, json_t *obj, const char *key, uint64_t *out);
/* resolves the file named by the current value; returns the resolved path (owned) or NULL (reported) */
char *est_cv_check_file(vctx_t *c, const char *path);
/* "a", "a.b.c": non-empty names separated by single dots */
int est_cv_is_dot_path(const char *s);

/* address.c: pure syntax checks, no reporting */
int est_cv_is_ip_literal(const char *s);
int est_cv_is_host_name(const char *s, size_t len);
int est_cv_parse_port(const char *s, size_t len); /* 1..65535, or -1 */
/* fills `t` (strings owned by t) from an upstream URL; NULL, or a static message saying what is wrong */
const char *est_cv_parse_target(const char *url, est_target_conf_t *t);
int est_cv_parse_dns_server(const char *s); /* "IP", "IP:PORT", "[IPv6]", "[IPv6]:PORT": 0 or -1 */

/* schema.c: validates the whole document `root` (borrowed) into c->conf, with SPEC defaults */
void est_cv_load_root(vctx_t *c, json_t *root);
/* schema_upstreams.c, schema_routes.c: one section of `root` (an object), for est_cv_load_root;
 * the routes come after the upstreams they name */
void est_cv_load_upstreams(vctx_t *c, json_t *root);
void est_cv_load_routes(vctx_t *c, json_t *root);
/* schema_policy.c: "auth", "rate_limits", "redis" (before the routes); a route's "auth",
 * "scopes", "rate_limit" and "cors" (from load_route, after its methods are known); and
 * freeing what both allocated (from est_config_free) */
void est_cv_load_policy(vctx_t *c, json_t *root);
void est_cv_load_route_policy(vctx_t *c, json_t *route_obj, est_route_conf_t *r);
void est_cv_free_policy(est_config_t *conf);
/*
 * schema_policy.c: an http:// or https:// URL (jwks_url, tracing.otlp_endpoint) as an upstream
 * of its own named `name` (SPEC upstream defaults) in *up, and its path and query ("/" at
 * least) in *path (both owned by the caller; free *up with est_cv_free_upstream). Returns NULL,
 * or a static message saying what is wrong (then *up and *path are NULL).
 */
const char *est_cv_url_upstream(const char *url, const char *name, est_upstream_conf_t **up, char **path);
void est_cv_free_upstream(est_upstream_conf_t *u);
/* schema.c: "tracing" (SPEC "Tracing") */
void est_cv_free_tracing(est_config_t *conf);

/* schema_cache.c: top-level "cache", a route's "cache" and "coalesce", an upstream's "hedge"
 * (SPEC "Caching, coalescing and hedging") */
void est_cv_load_cache(vctx_t *c, json_t *root);
void est_cv_load_route_cache(vctx_t *c, json_t *route_obj, est_route_conf_t *r);
void est_cv_load_hedge(vctx_t *c, json_t *upstream_obj, est_upstream_conf_t *u);
void est_cv_free_route_cache(est_route_conf_t *r);

#endif
