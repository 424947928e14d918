/*
 * estuary - the "routes" section of the config file (shared/SPEC.md, "Config file"): each
 * route's path template, backends (proxy or aggregate) and their targets, and the checks
 * across routes (clashing shapes). Runs after the upstreams section: backends name upstreams.
 */
#include "config/validate.h"
#include "router/template.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "did you mean" looks among at most this many upstream names */
#define MAX_SUGGEST_CANDIDATES 256
/* a backend's own request headers: at most this many, each value template at most this long */
#define MAX_BACKEND_HEADERS 32
#define MAX_HEADER_VALUE 8192

/*
 * What a backend's templates may refer to (SPEC "Dependent backends"): the `group` of every
 * backend of its route, as written (NULL where absent), and its own position. For a proxy,
 * groups is NULL: there is nothing to refer to.
 */
typedef struct group_scope {
    const char *const *groups;
    size_t num, self;
} group_scope_t;

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


/* adds backend `j` to b->deps (sorted, unique; room for `self` entries, all below it) */
static void add_dep(est_backend_conf_t *b, size_t self, size_t j)
{
    size_t k = 0;
    if (b->deps == NULL)
        b->deps = est_cv_xcalloc(self, sizeof(*b->deps));
    while (k < b->num_deps && b->deps[k] < j)
        k++;
    if (k < b->num_deps && b->deps[k] == j)
        return;
    memmove(b->deps + k + 1, b->deps + k, (b->num_deps - k) * sizeof(*b->deps));
    b->deps[k] = j;
    b->num_deps++;
}

/*
 * Resolves the {GROUP.path} reference `p` of template `tpl` (parsed from the current string
 * value) of backend b = groups->self: GROUP must be the group of a backend listed before it
 * (the last such one is used); records it in b->deps or reports the problem at the '{'.
 */
static void check_group_ref(vctx_t *c, const est_template_t *tpl, const est_tpl_piece_t *p, const group_scope_t *gs,
                            est_backend_conf_t *b)
{
    unsigned line, col;
    size_t j, found = SIZE_MAX, later = SIZE_MAX;
    int shown = p->len > 200 ? 200 : (int)p->len, gshown = p->group_len > 200 ? 200 : (int)p->group_len; /* in messages */
    est_cv_string_offset_pos(c, (size_t)(p->text - tpl->_buf) - 1, &line, &col);
    if (gs->groups == NULL) {
        est_cv_err_at(c, line, col,
                      "%s: {%.*s}: a proxy has no groups to refer to; only the backends of an aggregating route can "
                      "use an earlier backend's reply",
                      est_cv_short(c, c->disp), shown, p->text);
        return;
    }
    for (j = 0; j < gs->num; j++) {
        const char *g = gs->groups[j];
        if (g == NULL || strlen(g) != p->group_len || memcmp(g, p->text, p->group_len) != 0)
            continue;
        if (j < gs->self)
            found = j; /* the last earlier one */
        else if (later == SIZE_MAX)
            later = j;
    }
    if (found != SIZE_MAX) {
        add_dep(b, gs->self, found);
        return;
    }
    if (later == gs->self) {
        est_cv_err_at(c, line, col,
                      "%s: {%.*s} names this backend's own group \"%.*s\": a backend can only use the reply of a "
                      "backend listed before it",
                      est_cv_short(c, c->disp), shown, p->text, gshown, p->text);
    } else if (later != SIZE_MAX) {
        est_cv_err_at(c, line, col,
                      "%s: {%.*s}: group \"%.*s\" belongs to a later backend (backends[%zu]); list that backend "
                      "before this one (dependencies cannot form a cycle)",
                      est_cv_short(c, c->disp), shown, p->text, gshown, p->text, later);
    } else {
        char hint[128] = "", name[128];
        if (!est_cv_errors_full(c) && gs->self <= MAX_SUGGEST_CANDIDATES && p->group_len < sizeof(name)) {
            const char **names = est_cv_xcalloc(gs->self + 1, sizeof(char *));
            size_t n = 0;
            for (j = 0; j < gs->self; j++)
                if (gs->groups[j] != NULL)
                    names[n++] = gs->groups[j];
            memcpy(name, p->text, p->group_len);
            name[p->group_len] = '\0';
            const char *sug = est_cv_suggest(name, names, n);
            if (sug != NULL)
                snprintf(hint, sizeof(hint), " (did you mean \"%s\"?)", est_cv_short(c, sug));
            free(names);
        }
        est_cv_err_at(c, line, col, "%s: {%.*s}: no backend listed before this one has group \"%.*s\"%s", est_cv_short(c, c->disp),
                      shown, p->text, gshown, p->text, hint);
    }
}

/*
 * Checks the references of template `tpl`, parsed from the current string value `s`:
 * parameters bound by the route's template `route_tpl` (NULL: not checked), groups resolved
 * into b->deps.
 */
static void check_refs(vctx_t *c, const est_template_t *tpl, const char *s, const est_template_t *route_tpl, const char *route_path,
                       const group_scope_t *gs, est_backend_conf_t *b)
{
    unsigned line, col;
    for (size_t i = 0; i < tpl->num_pieces && !est_cv_errors_full(c); i++) {
        const est_tpl_piece_t *p = &tpl->pieces[i];
        if (p->kind == EST_TPL_GROUP) {
            check_group_ref(c, tpl, p, gs, b);
            continue;
        }
        if (p->kind == EST_TPL_LITERAL || route_tpl == NULL || est_template_find_param(route_tpl, p->text, p->len) != NULL)
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
}

/*
 * Reads the "upstream" and "path" of a backend or proxy object into `b`; `route_tpl` is
 * the route's parsed template (NULL if it did not parse).
 */
static void load_backend_target(vctx_t *c, json_t *o, est_backend_conf_t *b, const est_template_t *route_tpl,
                                const char *route_path, int path_required, const group_scope_t *gs)
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
            check_refs(c, &tpl, s, route_tpl, route_path, gs, b);
            est_template_dispose(&tpl);
        }
        est_cv_pop(c);
    } else if (path_required && json_object_get(o, "path") == NULL) {
        est_cv_err_val(c, "missing \"path\"");
    }
}

/* RFC 9110 5.6.2 tchar */
static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* header names a backend cannot set: framing and connection management belong to estuary's
 * upstream client (RFC 9110 7.6.1 hop-by-hop fields, RFC 9112 6 framing, Host 7.2) */
static const char *reserved_header_reason(const char *lower)
{
    static const char *const hop[] = {"connection", "keep-alive",     "te", "trailer", "transfer-encoding",
                                      "upgrade",    "http2-settings", NULL};
    for (size_t i = 0; hop[i] != NULL; i++)
        if (strcmp(lower, hop[i]) == 0)
            return "is a hop-by-hop header";
    if (strncmp(lower, "proxy-", 6) == 0)
        return "is a hop-by-hop header";
    if (strcmp(lower, "host") == 0)
        return "is set by estuary (the target's authority, or the client's with \"preserve_host\")";
    if (strcmp(lower, "content-length") == 0 || strcmp(lower, "expect") == 0)
        return "is set by estuary with the request body";
    return NULL;
}

/* the backend's "headers": {"Name": "value template"} */
static void load_backend_headers(vctx_t *c, json_t *o, est_backend_conf_t *b, const est_template_t *route_tpl,
                                 const char *route_path, const group_scope_t *gs)
{
    json_t *hs = est_cv_get_typed(c, o, "headers", JSON_OBJECT), *v;
    const char *name;
    if (hs == NULL)
        return;
    est_cv_push_key(c, "headers");
    if (json_object_size(hs) > MAX_BACKEND_HEADERS) {
        est_cv_err_val(c, "at most %d headers per backend, got %zu", MAX_BACKEND_HEADERS, json_object_size(hs));
        est_cv_pop(c);
        return;
    }
    b->headers = est_cv_xcalloc(json_object_size(hs) + 1, sizeof(*b->headers));
    json_object_foreach(hs, name, v) {
        size_t nlen = strlen(name), i;
        int bad = nlen == 0;
        const char *why;
        est_cv_push_key(c, name);
        for (i = 0; i < nlen && !bad; i++)
            bad = !is_tchar((unsigned char)name[i]);
        char *lower = est_cv_xstrdup(name);
        for (i = 0; i < nlen; i++)
            if (lower[i] >= 'A' && lower[i] <= 'Z')
                lower[i] = (char)(lower[i] - 'A' + 'a');
        for (i = 0; !bad && i < b->num_headers && strcmp(b->headers[i].name, lower) != 0; i++)
            ;
        if (bad) {
            est_cv_err_key(c, "\"%s\" is not a valid header name (RFC 9110 5.1: letters, digits and !#$%%&'*+-.^_`|~)",
                           est_cv_short(c, name));
        } else if (i < b->num_headers) {
            est_cv_err_key(c, "header \"%s\" is set twice (names are case-insensitive)", est_cv_short(c, name));
        } else if ((why = reserved_header_reason(lower)) != NULL) {
            est_cv_err_key(c, "header \"%s\" %s; a backend cannot set it", est_cv_short(c, name), why);
        } else if (!json_is_string(v)) {
            est_cv_err_val(c, "expected the header value as a string such as \"Bearer {session.token}\", got %s",
                           est_cv_type_name(v));
        } else if (json_string_length(v) > MAX_HEADER_VALUE) {
            est_cv_err_val(c, "a header value is at most %d bytes, got %zu", MAX_HEADER_VALUE, json_string_length(v));
        } else if (strlen(json_string_value(v)) != json_string_length(v)) {
            est_cv_err_val(c, "a header value cannot hold NUL (\\u0000)");
        } else {
            est_template_t tpl;
            char err[256];
            size_t off = 0;
            unsigned line, col;
            const char *s = json_string_value(v);
            if (est_template_parse_value(&tpl, s, err, sizeof(err), &off) != 0) {
                est_cv_string_offset_pos(c, off, &line, &col);
                est_cv_err_at(c, line, col, "%s: bad header value \"%s\": %s", est_cv_short(c, c->disp), est_cv_short(c, s), err);
            } else {
                check_refs(c, &tpl, s, route_tpl, route_path, gs, b);
                est_template_dispose(&tpl);
                b->headers[b->num_headers].name = lower;
                b->headers[b->num_headers].value = est_cv_xstrdup(s);
                b->num_headers++;
                lower = NULL;
            }
        }
        free(lower);
        est_cv_pop(c);
    }
    est_cv_pop(c);
}

static void load_backend(vctx_t *c, json_t *o, est_backend_conf_t *b, const est_template_t *route_tpl, const char *route_path,
                         const group_scope_t *gs)
{
    static const char *const keys[] = {"upstream", "path", "group", "target", "allow", "deny", "mapping", "headers", NULL};
    json_t *m;
    const char *s;

    if (!json_is_object(o)) {
        est_cv_err_val(c, "expected an object such as {\"upstream\": \"users\", \"path\": \"/users/{id}\"}, got %s",
                       est_cv_type_name(o));
        return;
    }
    est_cv_check_keys(c, o, keys);
    load_backend_target(c, o, b, route_tpl, route_path, 1, gs);
    load_backend_headers(c, o, b, route_tpl, route_path, gs);
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
        json_object_foreach(m, from, to) {
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
    static const char *const keys[] = {
        "path",  "methods", "timeout", "on_error",   "websocket", "preserve_host", "max_request_body", "backends",
        "proxy", "auth",    "scopes",  "rate_limit", "cors",      "cache",         "coalesce",         NULL};
    static const char *const proxy_keys[] = {"upstream", "path", "buffer", "headers", NULL};
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
                    est_cv_err_val(c, "unknown method \"%s\" (use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS)",
                                   json_string_value(m));
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
            /* every backend's group first: a reference to a later one is told apart from a typo */
            const char **groups = est_cv_xcalloc(r->num_backends, sizeof(*groups));
            for (size_t i = 0; i < r->num_backends; i++) {
                json_t *g = json_is_object(json_array_get(backends, i)) ? json_object_get(json_array_get(backends, i), "group")
                                                                        : NULL;
                groups[i] = json_is_string(g) ? json_string_value(g) : NULL;
            }
            for (size_t i = 0; i < r->num_backends; i++) {
                group_scope_t gs = {groups, r->num_backends, i};
                est_cv_push_index(c, i);
                load_backend(c, json_array_get(backends, i), &r->backends[i], *tpl_ok ? tpl : NULL, r->path, &gs);
                est_cv_pop(c);
            }
            free(groups);
            set_timing_names(r);
        }
        est_cv_pop(c);
    } else {
        est_cv_push_key(c, "proxy");
        if (!json_is_object(proxy)) {
            est_cv_err_val(c, "expected an object such as {\"upstream\": \"users\"}, got %s", est_cv_type_name(proxy));
        } else {
            group_scope_t gs = {NULL, 0, 0};
            r->proxy = est_cv_xcalloc(1, sizeof(*r->proxy));
            est_cv_check_keys(c, proxy, proxy_keys);
            est_cv_get_size(c, proxy, "buffer", &r->proxy_buffer);
            if (json_object_get(proxy, "headers") != NULL) {
                est_cv_push_key(c, "headers");
                est_cv_err_key(c, "\"headers\" applies to the backends of an aggregating route, not to a proxy (which forwards "
                                  "the client's headers)");
                est_cv_pop(c);
            }
            load_backend_target(c, proxy, r->proxy, *tpl_ok ? tpl : NULL, r->path, 0, &gs);
            r->proxy->timing_name = est_cv_xstrdup(r->proxy->upstream_name ? r->proxy->upstream_name : "");
        }
        est_cv_pop(c);
    }
    est_cv_load_route_policy(c, o, r); /* auth, scopes, rate_limit, cors (schema_policy.c) */
    est_cv_load_route_cache(c, o, r);  /* cache, coalesce (schema_cache.c) */
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
        size_t j = SIZE_MAX;              /* the earliest route of this shape sharing a method with r */
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
                       est_cv_short(c, conf->routes[j].path), lines[j], est_method_name(common & (~common + 1)));
        est_cv_pop(c);
        est_cv_pop(c);
    }
    free(order);
}

void est_cv_load_routes(vctx_t *c, json_t *root)
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
