/*
 * estuary - path template parser (see template.h).
 *
 * Route template:   "/" segment ("/" segment)*, where a segment is literal text (no braces,
 *                   possibly empty: a trailing slash is significant), "{name}", or - last
 *                   only - "{name...}".
 * Backend template: "/" followed by literal text with "{name}" / "{name...}" anywhere.
 * Value template:   literal header-value text with the same references anywhere.
 * Both of the latter also take "{GROUP.field.field}" (a group reference).
 *
 * The template keeps one copy of the source in _buf; every piece's text points into it.
 */
#include "router/template.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, size_t errsz, size_t *err_offset, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int is_name_start(char c);
static int is_name_char(char c);
static int is_bad_char(char c);
static int is_bad_value_char(char c);
static int parse_group_ref(const char *s, size_t len, size_t open, size_t *close, size_t *group_len, char *err, size_t errsz,
                           size_t *err_offset);
static int parse(est_template_t *t, const char *s, int mode, char *err, size_t errsz, size_t *err_offset);
static int parse_ref(const char *s, size_t len, size_t open, size_t *name_end, size_t *close, int *is_rest, char *err,
                     size_t errsz, size_t *err_offset);
static int check_duplicate(const est_template_t *t, const est_tpl_piece_t *p);

static int fail(char *err, size_t errsz, size_t *err_offset, size_t off, const char *fmt, ...)
{
    if (err != NULL && errsz != 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errsz, fmt, ap);
        va_end(ap);
    }
    if (err_offset != NULL)
        *err_offset = off;
    return -1;
}

static int is_name_start(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int is_name_char(char c)
{
    return is_name_start(c) || (c >= '0' && c <= '9');
}

/* bytes that can never appear in a request target (RFC 9112 3.2: no whitespace, no CTLs) */
static int is_bad_char(char c)
{
    unsigned char u = (unsigned char)c;
    return u <= 0x20 || u == 0x7f;
}

/* bytes a header value template cannot hold: CTLs but HTAB, and DEL (RFC 9110 5.5) */
static int is_bad_value_char(char c)
{
    unsigned char u = (unsigned char)c;
    return (u < 0x20 && u != '\t') || u == 0x7f;
}

/* what est_template_parse's `is_route` selects, plus header values */
enum { MODE_PATH = 0, MODE_ROUTE = 1, MODE_VALUE = 2 };

/*
 * Recognises "{GROUP.field...}" whose '{' is at s[open]: the text up to the next '}' holds no
 * '{', '/', whitespace or CTL, holds a '.', and is not "name..." (a rest parameter). Returns 1
 * with *close (offset of '}') and *group_len set, 0 when it is no group reference (the
 * parameter rules then apply), -1 with a message when it is one with an empty name.
 */
static int parse_group_ref(const char *s, size_t len, size_t open, size_t *close, size_t *group_len, char *err, size_t errsz,
                           size_t *err_offset)
{
    size_t i, start = open + 1, dot = 0;
    for (i = start; i < len && s[i] != '}'; ++i) {
        if (s[i] == '{' || s[i] == '/' || is_bad_char(s[i]))
            return 0;
        if (s[i] == '.' && dot == 0)
            dot = i;
    }
    if (i >= len || dot == 0)
        return 0;
    /* "{name...}" is a rest parameter */
    if (i - start > 3 && memcmp(s + i - 3, "...", 3) == 0 && dot == i - 3 && is_name_start(s[start])) {
        size_t k = start + 1;
        while (k < dot && is_name_char(s[k]))
            ++k;
        if (k == dot)
            return 0;
    }
    if (dot == start)
        return fail(err, errsz, err_offset, start, "empty group name in a {GROUP.field} reference");
    for (size_t k = dot; k < i; ++k)
        if (s[k] == '.' && (k + 1 == i || s[k + 1] == '.'))
            return fail(err, errsz, err_offset, k + 1, "empty field name in the group reference {%.*s}", (int)(i - start),
                        s + start);
    *close = i;
    *group_len = dot - start;
    return 1;
}

/*
 * Parses "{name}" or "{name...}" whose '{' is at s[open]. On success *name_end is the offset
 * just past the name, *close the offset of '}'.
 */
static int parse_ref(const char *s, size_t len, size_t open, size_t *name_end, size_t *close, int *is_rest, char *err,
                     size_t errsz, size_t *err_offset)
{
    size_t i = open + 1;

    if (i >= len || !is_name_start(s[i])) {
        if (i < len && s[i] == '}')
            return fail(err, errsz, err_offset, i, "empty parameter name");
        if (i >= len)
            return fail(err, errsz, err_offset, open, "unclosed '{'");
        return fail(err, errsz, err_offset, i, "invalid parameter name: must match [A-Za-z_][A-Za-z0-9_]*");
    }
    while (i < len && is_name_char(s[i]))
        ++i;
    *name_end = i;
    *is_rest = 0;
    if (i + 3 <= len && memcmp(s + i, "...", 3) == 0) {
        *is_rest = 1;
        i += 3;
    }
    if (i >= len)
        return fail(err, errsz, err_offset, open, "unclosed '{'");
    if (s[i] != '}') {
        if (s[i] == '/')
            return fail(err, errsz, err_offset, open, "unclosed '{'");
        return fail(err, errsz, err_offset, i, "invalid character '%c' in parameter name", s[i]);
    }
    *close = i;
    return 0;
}

static int check_duplicate(const est_template_t *t, const est_tpl_piece_t *p)
{
    return est_template_find_param(t, p->text, p->len) != NULL;
}

int est_template_parse(est_template_t *t, const char *s, int is_route, char *err, size_t errsz, size_t *err_offset)
{
    return parse(t, s, is_route ? MODE_ROUTE : MODE_PATH, err, errsz, err_offset);
}

int est_template_parse_value(est_template_t *t, const char *s, char *err, size_t errsz, size_t *err_offset)
{
    return parse(t, s, MODE_VALUE, err, errsz, err_offset);
}

static int parse(est_template_t *t, const char *s, int mode, char *err, size_t errsz, size_t *err_offset)
{
    size_t len, max_pieces, i, nrefs = 0;
    int is_route = mode == MODE_ROUTE;

    memset(t, 0, sizeof(*t));
    t->is_route = is_route;
    if (err != NULL && errsz != 0)
        err[0] = '\0';
    if (s == NULL)
        return fail(err, errsz, err_offset, 0, "missing template");
    if (mode != MODE_VALUE && s[0] != '/')
        return fail(err, errsz, err_offset, 0, "%s template must start with '/'", is_route ? "a route" : "a backend path");
    len = strlen(s);

    /* upper bound of pieces: route -> one per '/', backend -> 2 per '{' + 1 */
    max_pieces = 1;
    for (i = 0; i < len; ++i) {
        if (is_route ? s[i] == '/' : s[i] == '{')
            max_pieces += is_route ? 1 : 2;
    }
    if ((t->_buf = malloc(len + 1)) == NULL || (t->pieces = calloc(max_pieces, sizeof(*t->pieces))) == NULL) {
        est_template_dispose(t);
        return fail(err, errsz, err_offset, 0, "out of memory");
    }
    memcpy(t->_buf, s, len + 1);
    s = t->_buf;

    if (is_route) {
        size_t seg = 1; /* start of the current segment (after its '/') */
        while (1) {
            size_t end = seg;
            while (end < len && s[end] != '/')
                ++end;
            est_tpl_piece_t *p = t->pieces + t->num_pieces;
            if (seg < end && s[seg] == '{') {
                size_t name_end, close, group_len;
                int is_rest;
                if (parse_group_ref(s, end, seg, &close, &group_len, NULL, 0, NULL) == 1) {
                    fail(err, errsz, err_offset, seg,
                         "{%.*s} names a group: only a backend's path and headers can use an earlier backend's reply",
                         (int)(close - seg - 1), s + seg + 1);
                    goto Error;
                }
                if (parse_ref(s, end, seg, &name_end, &close, &is_rest, err, errsz, err_offset) != 0)
                    goto Error;
                if (close + 1 != end) {
                    fail(err, errsz, err_offset, close + 1, "a parameter must be a whole segment");
                    goto Error;
                }
                p->kind = is_rest ? EST_TPL_REST : EST_TPL_PARAM;
                p->text = s + seg + 1;
                p->len = name_end - (seg + 1);
                /* bounded first: the duplicate check below scans the earlier parameters */
                if (++nrefs > EST_TEMPLATE_MAX_PARAMS) {
                    fail(err, errsz, err_offset, seg, "more than %d parameters", EST_TEMPLATE_MAX_PARAMS);
                    goto Error;
                }
                if (check_duplicate(t, p)) {
                    fail(err, errsz, err_offset, seg, "duplicate parameter '%.*s'", (int)p->len, p->text);
                    goto Error;
                }
                if (is_rest && end != len) {
                    fail(err, errsz, err_offset, seg, "'{%.*s...}' must be the last segment", (int)p->len, p->text);
                    goto Error;
                }
            } else {
                for (i = seg; i < end; ++i) {
                    if (s[i] == '{' || s[i] == '}') {
                        fail(err, errsz, err_offset, i, "'%c' inside a literal segment (a parameter must be a whole segment)",
                             s[i]);
                        goto Error;
                    }
                    if (s[i] == '?' || s[i] == '#') {
                        fail(err, errsz, err_offset, i, "'%c' is not allowed in a route template", s[i]);
                        goto Error;
                    }
                    if (is_bad_char(s[i])) {
                        fail(err, errsz, err_offset, i, "invalid character 0x%02x in a route template", (unsigned char)s[i]);
                        goto Error;
                    }
                }
                /* request paths are matched with dot segments resolved, so these could never match */
                if ((end - seg == 1 && s[seg] == '.') || (end - seg == 2 && s[seg] == '.' && s[seg + 1] == '.')) {
                    fail(err, errsz, err_offset, seg, "dot segment '%.*s' in a route template", (int)(end - seg), s + seg);
                    goto Error;
                }
                p->kind = EST_TPL_LITERAL;
                p->text = s + seg;
                p->len = end - seg;
            }
            ++t->num_pieces;
            if (end == len)
                break;
            seg = end + 1;
        }
    } else {
        size_t lit = 0; /* start of the pending literal */
        for (i = 0; i <= len; ++i) {
            if (i < len && s[i] != '{') {
                if (s[i] == '}') {
                    fail(err, errsz, err_offset, i, "unmatched '}'");
                    goto Error;
                }
                if (mode == MODE_VALUE ? is_bad_value_char(s[i]) : is_bad_char(s[i])) {
                    fail(err, errsz, err_offset, i, "invalid character 0x%02x in a %s", (unsigned char)s[i],
                         mode == MODE_VALUE ? "header value" : "backend path");
                    goto Error;
                }
                continue;
            }
            if (lit < i) {
                est_tpl_piece_t *p = t->pieces + t->num_pieces++;
                p->kind = EST_TPL_LITERAL;
                p->text = s + lit;
                p->len = i - lit;
            }
            if (i == len)
                break;
            size_t name_end, close, group_len = 0;
            int is_rest = 0, is_group;
            if ((is_group = parse_group_ref(s, len, i, &close, &group_len, err, errsz, err_offset)) < 0)
                goto Error;
            if (!is_group && parse_ref(s, len, i, &name_end, &close, &is_rest, err, errsz, err_offset) != 0)
                goto Error;
            if (++nrefs > EST_TEMPLATE_MAX_REFS) {
                fail(err, errsz, err_offset, i, "more than %d parameter references", EST_TEMPLATE_MAX_REFS);
                goto Error;
            }
            est_tpl_piece_t *p = t->pieces + t->num_pieces++;
            p->text = s + i + 1;
            if (is_group) {
                p->kind = EST_TPL_GROUP;
                p->len = close - (i + 1);
                p->group_len = group_len;
                ++t->num_groups;
            } else {
                p->kind = is_rest ? EST_TPL_REST : EST_TPL_PARAM;
                p->len = name_end - (i + 1);
            }
            i = close;
            lit = close + 1;
        }
    }
    return 0;

Error:
    est_template_dispose(t);
    t->is_route = is_route;
    return -1;
}

void est_template_dispose(est_template_t *t)
{
    free(t->pieces);
    free(t->_buf);
    t->pieces = NULL;
    t->num_pieces = 0;
    t->num_groups = 0;
    t->_buf = NULL;
}

const est_tpl_piece_t *est_template_find_param(const est_template_t *t, const char *name, size_t len)
{
    size_t i;
    for (i = 0; i != t->num_pieces; ++i) {
        const est_tpl_piece_t *p = t->pieces + i;
        if ((p->kind == EST_TPL_PARAM || p->kind == EST_TPL_REST) && p->len == len && memcmp(p->text, name, len) == 0)
            return p;
    }
    return NULL;
}

int est_template_same_shape(const est_template_t *a, const est_template_t *b)
{
    size_t i;
    if (a->num_pieces != b->num_pieces)
        return 0;
    for (i = 0; i != a->num_pieces; ++i) {
        const est_tpl_piece_t *pa = a->pieces + i, *pb = b->pieces + i;
        if (pa->kind != pb->kind)
            return 0;
        if (pa->kind == EST_TPL_LITERAL && (pa->len != pb->len || memcmp(pa->text, pb->text, pa->len) != 0))
            return 0;
    }
    return 1;
}
