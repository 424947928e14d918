/*
 * estuary - path templates: "/gateway/{user_id}/{order_id}", "/api/{rest...}".
 *
 * A route template starts with '/', is made of literal segments, `{name}` parameters that are
 * a whole segment, and at most one final `{name...}` that takes the rest of the path
 * (possibly empty). A backend template ("/users/{user_id}?x=1") is literal text with
 * parameter references anywhere; each must be bound by the route's template. A backend
 * template (path, or header value: est_template_parse_value) may also name a value of an
 * earlier backend's reply, `{GROUP.dot.path}` (SPEC "Dependent backends"): a reference holding
 * a '.' that is not the `...` of a rest parameter. Route templates refuse it.
 */
#ifndef EST_ROUTER_TEMPLATE_H
#define EST_ROUTER_TEMPLATE_H

#include <stddef.h>

/* a route template binds at most this many parameters; a backend template holds at most
 * EST_TEMPLATE_MAX_REFS references (each is checked against the route's, and expanded per request) */
#define EST_TEMPLATE_MAX_PARAMS 32
#define EST_TEMPLATE_MAX_REFS 64

typedef enum { EST_TPL_LITERAL = 0, EST_TPL_PARAM, EST_TPL_REST, EST_TPL_GROUP } est_tpl_kind_t;

typedef struct est_tpl_piece {
    est_tpl_kind_t kind;
    /* literal text, the parameter's name without braces and dots, or (GROUP) "GROUP.dot.path"
     * without braces */
    const char *text;
    size_t len;
    size_t group_len; /* GROUP: length of the group name (text[group_len] is the first '.') */
    size_t backend;   /* GROUP: index of the backend whose group it names (set by the router) */
} est_tpl_piece_t;

typedef struct est_template {
    est_tpl_piece_t *pieces; /* route templates: one piece per segment, '/' separators implied */
    size_t num_pieces;
    size_t num_groups; /* GROUP pieces */
    int is_route;
    char *_buf; /* owns the texts */
} est_template_t;

/*
 * Parses `s`. is_route selects the route-template rules. Returns 0, or -1 with a message
 * in `err` and the 0-based offset in `s` of the offending character in *err_offset.
 */
int est_template_parse(est_template_t *t, const char *s, int is_route, char *err, size_t errsz, size_t *err_offset);
/*
 * Parses a header value template ("Bearer {session.token}"): literal text (HTAB, SP, visible
 * ASCII and bytes >= 0x80; '{' always opens a reference, a lone '}' is an error) with
 * {param} and {GROUP.dot.path} references anywhere. Same results as est_template_parse.
 */
int est_template_parse_value(est_template_t *t, const char *s, char *err, size_t errsz, size_t *err_offset);
void est_template_dispose(est_template_t *t);

/* the piece of `t` that binds parameter `name` (PARAM or REST; never a GROUP), or NULL */
const est_tpl_piece_t *est_template_find_param(const est_template_t *t, const char *name, size_t len);

/* 1 when two route templates are the same up to parameter names (a config clash if methods overlap) */
int est_template_same_shape(const est_template_t *a, const est_template_t *b);

#endif
