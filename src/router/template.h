/*
 * estuary - path templates: "/gateway/{user_id}/{order_id}", "/api/{rest...}".
 *
 * A route template starts with '/', is made of literal segments, `{name}` parameters that are
 * a whole segment, and at most one final `{name...}` that takes the rest of the path
 * (possibly empty). A backend template ("/users/{user_id}?x=1") is literal text with
 * parameter references anywhere; each must be bound by the route's template.
 */
#ifndef EST_ROUTER_TEMPLATE_H
#define EST_ROUTER_TEMPLATE_H

#include <stddef.h>

/* a route template binds at most this many parameters; a backend template holds at most
 * EST_TEMPLATE_MAX_REFS references (each is checked against the route's, and expanded per request) */
#define EST_TEMPLATE_MAX_PARAMS 32
#define EST_TEMPLATE_MAX_REFS 64

typedef enum { EST_TPL_LITERAL = 0, EST_TPL_PARAM, EST_TPL_REST } est_tpl_kind_t;

typedef struct est_tpl_piece {
    est_tpl_kind_t kind;
    const char *text; /* literal text, or the parameter's name without braces and dots */
    size_t len;
} est_tpl_piece_t;

typedef struct est_template {
    est_tpl_piece_t *pieces; /* route templates: one piece per segment, '/' separators implied */
    size_t num_pieces;
    int is_route;
    char *_buf; /* owns the texts */
} est_template_t;

/*
 * Parses `s`. is_route selects the route-template rules. Returns 0, or -1 with a message
 * in `err` and the 0-based offset in `s` of the offending character in *err_offset.
 */
int est_template_parse(est_template_t *t, const char *s, int is_route, char *err, size_t errsz, size_t *err_offset);
void est_template_dispose(est_template_t *t);

/* the piece of `t` that binds parameter `name` (PARAM or REST), or NULL */
const est_tpl_piece_t *est_template_find_param(const est_template_t *t, const char *name, size_t len);

/* 1 when two route templates are the same up to parameter names (a config clash if methods overlap) */
int est_template_same_shape(const est_template_t *a, const est_template_t *b);

#endif
