/*
 * estuary - path template parser (see template.h).
 *
 * Route template:   "/" segment ("/" segment)*, where a segment is literal text (no braces,
 *                   possibly empty: a trailing slash is significant), "{name}", or - last
 *                   only - "{name...}".
 * Backend template: "/" followed by literal text with "{name}" / "{name...}" anywhere.
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
    size_t len, max_pieces, i, nrefs = 0;

    memset(t, 0, sizeof(*t));
    t->is_route = is_route != 0;
    if (err != NULL && errsz != 0)
        err[0] = '\0';
    if (s == NULL || s[0] != '/')
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
                size_t name_end, close;
                int is_rest;
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
                if (is_bad_char(s[i])) {
                    fail(err, errsz, err_offset, i, "invalid character 0x%02x in a backend path", (unsigned char)s[i]);
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
            size_t name_end, close;
            int is_rest;
            if (parse_ref(s, len, i, &name_end, &close, &is_rest, err, errsz, err_offset) != 0)
                goto Error;
            if (++nrefs > EST_TEMPLATE_MAX_REFS) {
                fail(err, errsz, err_offset, i, "more than %d parameter references", EST_TEMPLATE_MAX_REFS);
                goto Error;
            }
            est_tpl_piece_t *p = t->pieces + t->num_pieces++;
            p->kind = is_rest ? EST_TPL_REST : EST_TPL_PARAM;
            p->text = s + i + 1;
            p->len = name_end - (i + 1);
            i = close;
            lit = close + 1;
        }
    }
    return 0;

Error:
    est_template_dispose(t);
    t->is_route = is_route != 0;
    return -1;
}

void est_template_dispose(est_template_t *t)
{
    free(t->pieces);
    free(t->_buf);
    t->pieces = NULL;
    t->num_pieces = 0;
    t->_buf = NULL;
}

const est_tpl_piece_t *est_template_find_param(const est_template_t *t, const char *name, size_t len)
{
    size_t i;
    for (i = 0; i != t->num_pieces; ++i) {
        const est_tpl_piece_t *p = t->pieces + i;
        if (p->kind != EST_TPL_LITERAL && p->len == len && memcmp(p->text, name, len) == 0)
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
