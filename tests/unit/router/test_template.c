/* estuary - unit tests for src/router/template.c */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "router/template.h"

/* expected shape, one char per piece: L literal, P param, R rest, G group; texts '|'-separated */
struct parse_ok_case {
    const char *src;
    int is_route;
    const char *kinds;
    const char *texts;
};

static const struct parse_ok_case parse_ok_cases[] = {
    {"/", 1, "L", ""},
    {"/a", 1, "L", "a"},
    {"/a/", 1, "LL", "a|"},
    {"/a//b", 1, "LLL", "a||b"},
    {"/gateway/{user_id}/{order_id}", 1, "LPP", "gateway|user_id|order_id"},
    {"/api/{rest...}", 1, "LR", "api|rest"},
    {"/{rest...}", 1, "R", "rest"},
    {"/{_x9}/v1", 1, "PL", "_x9|v1"},
    {"/a/{x}/", 1, "LPL", "a|x|"},
    {"/caf%C3%A9/x.json", 1, "LL", "caf%C3%A9|x.json"},
    {"/users/{user_id}", 0, "LP", "/users/|user_id"},
    {"/search?q={q}", 0, "LP", "/search?q=|q"},
    {"/users/{rest...}", 0, "LR", "/users/|rest"},
    {"/{a}{b}-{c...}x", 0, "LPPLRL", "/|a|b|-|c|x"},
    {"/{a}/{a}", 0, "LPLP", "/|a|/|a"},
    {"/plain", 0, "L", "/plain"},
    {"/orders/{user.last_order_id}", 0, "LG", "/orders/|user.last_order_id"},
    {"/o/{user.a.b}?x={id}&y={s-1.v_2}", 0, "LGLPLG", "/o/|user.a.b|?x=|id|&y=|s-1.v_2"},
    {"/{a.b}{rest...}", 0, "LGR", "/|a.b|rest"},
    {"/{my-group.x}", 0, "LG", "/|my-group.x"},
};

static void test_parse_ok(void **state)
{
    size_t i;
    for (i = 0; i != sizeof(parse_ok_cases) / sizeof(parse_ok_cases[0]); ++i) {
        const struct parse_ok_case *c = parse_ok_cases + i;
        est_template_t t;
        char err[128], buf[256];
        size_t off = 999, j;
        int rc = est_template_parse(&t, c->src, c->is_route, err, sizeof(err), &off);
        if (rc != 0)
            fail_msg("case %zu '%s': unexpected error '%s' at %zu", i, c->src, err, off);
        assert_int_equal(t.is_route, c->is_route);
        assert_int_equal(t.num_pieces, strlen(c->kinds));
        buf[0] = '\0';
        size_t groups = 0;
        for (j = 0; j != t.num_pieces; ++j) {
            char k = "LPRG"[t.pieces[j].kind];
            groups += t.pieces[j].kind == EST_TPL_GROUP;
            if (k != c->kinds[j])
                fail_msg("case %zu '%s': piece %zu is %c, expected %c", i, c->src, j, k, c->kinds[j]);
            snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%.*s", j ? "|" : "", (int)t.pieces[j].len,
                     t.pieces[j].text);
        }
        if (strcmp(buf, c->texts) != 0)
            fail_msg("case %zu '%s': texts '%s', expected '%s'", i, c->src, buf, c->texts);
        assert_int_equal(t.num_groups, groups);
        est_template_dispose(&t);
    }
}

/* a GROUP piece's group_len splits "GROUP.path" at its first dot */
static void test_group_pieces(void **state)
{
    est_template_t t;
    assert_int_equal(est_template_parse(&t, "/x/{sess-ion.a.b}", 0, NULL, 0, NULL), 0);
    assert_int_equal(t.num_pieces, 2);
    assert_int_equal(t.pieces[1].kind, EST_TPL_GROUP);
    assert_int_equal(t.pieces[1].group_len, 8);
    assert_memory_equal(t.pieces[1].text, "sess-ion.a.b", 12);
    assert_int_equal(t.pieces[1].len, 12);
    /* a group reference is never a parameter */
    assert_null(est_template_find_param(&t, "sess-ion.a.b", 12));
    assert_null(est_template_find_param(&t, "sess-ion", 8));
    est_template_dispose(&t);
}

struct value_case {
    const char *src;
    int ok;
    const char *kinds;    /* ok: as parse_ok_case */
    size_t offset;        /* error */
    const char *msg_part; /* error */
};

static const struct value_case value_cases[] = {
    {"Bearer {session.token}", 1, "LG", 0, NULL},
    {"", 1, "", 0, NULL},
    {"plain value, with spaces\tand tab", 1, "L", 0, NULL},
    {"{id}-{a.x}", 1, "PLG", 0, NULL},
    {"caf\xc3\xa9 {a.b}", 1, "LG", 0, NULL},
    {"a\rb", 0, NULL, 1, "invalid character 0x0d in a header value"},
    {"a\nb", 0, NULL, 1, "invalid character 0x0a"},
    {"a\x7f", 0, NULL, 1, "invalid character 0x7f"},
    {"x}", 0, NULL, 1, "unmatched '}'"},
    {"{a.}", 0, NULL, 3, "empty field name"},
    {"{.b}", 0, NULL, 1, "empty group name"},
    {"{a b.c}", 0, NULL, 2, "invalid character ' '"},
    {"{unclosed.x", 0, NULL, 9, "invalid character '.'"},
};

static void test_parse_value(void **state)
{
    for (size_t i = 0; i != sizeof(value_cases) / sizeof(value_cases[0]); ++i) {
        const struct value_case *c = value_cases + i;
        est_template_t t;
        char err[160] = "";
        size_t off = 999;
        int rc = est_template_parse_value(&t, c->src, err, sizeof(err), &off);
        if (c->ok) {
            if (rc != 0)
                fail_msg("case %zu '%s': unexpected error '%s' at %zu", i, c->src, err, off);
            assert_int_equal(t.is_route, 0);
            assert_int_equal(t.num_pieces, strlen(c->kinds));
            for (size_t j = 0; j != t.num_pieces; ++j)
                if ("LPRG"[t.pieces[j].kind] != c->kinds[j])
                    fail_msg("case %zu '%s': piece %zu is %c", i, c->src, j, "LPRG"[t.pieces[j].kind]);
            est_template_dispose(&t);
        } else {
            if (rc != -1)
                fail_msg("case %zu '%s': parsed, expected an error", i, c->src);
            if (off != c->offset || strstr(err, c->msg_part) == NULL)
                fail_msg("case %zu '%s': '%s' at %zu, expected '%s' at %zu", i, c->src, err, off, c->msg_part, c->offset);
            assert_null(t.pieces);
        }
    }
}

struct parse_err_case {
    const char *src;
    int is_route;
    size_t offset;
    const char *msg_part;
};

static const struct parse_err_case parse_err_cases[] = {
    {"", 1, 0, "start with '/'"},
    {"a/b", 1, 0, "start with '/'"},
    {"users/{x}", 0, 0, "start with '/'"},
    {"/a/{x", 1, 3, "unclosed"},
    {"/a/{x/b}", 1, 3, "unclosed"},
    {"/a/{}", 1, 4, "empty parameter"},
    {"/a/{1x}", 1, 4, "invalid parameter name"},
    {"/a/{x-y}", 1, 5, "invalid character '-'"},
    {"/a/{x}b", 1, 6, "whole segment"},
    {"/a/b{x}", 1, 4, "'{' inside a literal"},
    {"/a/b}", 1, 4, "'}' inside a literal"},
    {"/a/x{", 1, 4, "'{' inside a literal"},
    {"/{x}/{y}/{x}", 1, 9, "duplicate parameter 'x'"},
    {"/{x}/{x...}", 1, 5, "duplicate parameter 'x'"},
    {"/{rest...}/a", 1, 1, "must be the last segment"},
    {"/{rest...}/", 1, 1, "must be the last segment"},
    {"/a/{x....}", 1, 8, "invalid character '.'"},
    {"/a?b=1", 1, 2, "'?' is not allowed"},
    {"/a/./b", 1, 3, "dot segment"},
    {"/a/..", 1, 3, "dot segment"},
    {"/a b", 1, 2, "invalid character 0x20"},
    {"/users/{id", 0, 7, "unclosed"},
    {"/users/}", 0, 7, "unmatched '}'"},
    {"/users/{a-b}", 0, 9, "invalid character '-'"},
    {"/u/{}", 0, 4, "empty parameter"},
    {"/u/{9}", 0, 4, "invalid parameter name"},
    {"/u\t", 0, 2, "invalid character 0x09"},
    {"/a/{user.id}", 1, 3, "names a group"},
    {"/{a.b...}", 1, 3, "invalid character '.'"},
    {"/o/{a.}", 0, 6, "empty field name"},
    {"/o/{a..b}", 0, 6, "empty field name"},
    {"/o/{.b}", 0, 4, "empty group name"},
    {"/o/{x....}", 0, 6, "empty field name"},
    {"/o/{a.b c}", 0, 5, "invalid character '.'"},
    {"Bearer {a.b}", 0, 0, "start with '/'"},
};

static void test_parse_errors(void **state)
{
    size_t i;
    for (i = 0; i != sizeof(parse_err_cases) / sizeof(parse_err_cases[0]); ++i) {
        const struct parse_err_case *c = parse_err_cases + i;
        est_template_t t;
        char err[128] = "";
        size_t off = 999;
        int rc = est_template_parse(&t, c->src, c->is_route, err, sizeof(err), &off);
        if (rc != -1)
            fail_msg("case %zu '%s': parsed, expected an error", i, c->src);
        if (off != c->offset)
            fail_msg("case %zu '%s': offset %zu, expected %zu (%s)", i, c->src, off, c->offset, err);
        if (strstr(err, c->msg_part) == NULL)
            fail_msg("case %zu '%s': message '%s' lacks '%s'", i, c->src, err, c->msg_part);
        assert_null(t.pieces);
        assert_null(t._buf);
        est_template_dispose(&t); /* harmless after a failure */
    }
    /* NULL err / offset are allowed */
    est_template_t t;
    assert_int_equal(est_template_parse(&t, "x", 1, NULL, 0, NULL), -1);
    assert_int_equal(est_template_parse(&t, NULL, 1, NULL, 0, NULL), -1);
}

static void test_find_param(void **state)
{
    est_template_t t;
    assert_int_equal(est_template_parse(&t, "/a/{id}/b/{rest...}", 1, NULL, 0, NULL), 0);
    const est_tpl_piece_t *p = est_template_find_param(&t, "id", 2);
    assert_non_null(p);
    assert_int_equal(p->kind, EST_TPL_PARAM);
    p = est_template_find_param(&t, "rest", 4);
    assert_non_null(p);
    assert_int_equal(p->kind, EST_TPL_REST);
    assert_null(est_template_find_param(&t, "a", 1));
    assert_null(est_template_find_param(&t, "i", 1));
    assert_null(est_template_find_param(&t, "rest...", 7));
    est_template_dispose(&t);
}

struct shape_case {
    const char *a, *b;
    int same;
};

static const struct shape_case shape_cases[] = {
    {"/users/{id}", "/users/{user_id}", 1},
    {"/users/{id}", "/users/{id}", 1},
    {"/a/{x}/{r...}", "/a/{y}/{s...}", 1},
    {"/users/{id}", "/users/{id...}", 0},
    {"/users/{id}", "/users/me", 0},
    {"/users/{id}", "/users/{id}/", 0},
    {"/users", "/users/", 0},
    {"/a/b", "/a/c", 0},
    {"/a/b", "/a/bb", 0},
    {"/{a}/b", "/{c}/b", 1},
    {"/", "/", 1},
    {"/", "/{r...}", 0},
};

static void test_same_shape(void **state)
{
    size_t i;
    for (i = 0; i != sizeof(shape_cases) / sizeof(shape_cases[0]); ++i) {
        est_template_t a, b;
        assert_int_equal(est_template_parse(&a, shape_cases[i].a, 1, NULL, 0, NULL), 0);
        assert_int_equal(est_template_parse(&b, shape_cases[i].b, 1, NULL, 0, NULL), 0);
        if (est_template_same_shape(&a, &b) != shape_cases[i].same || est_template_same_shape(&b, &a) != shape_cases[i].same)
            fail_msg("case %zu: '%s' vs '%s' expected same=%d", i, shape_cases[i].a, shape_cases[i].b, shape_cases[i].same);
        est_template_dispose(&a);
        est_template_dispose(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ok),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_find_param),
        cmocka_unit_test(test_group_pieces),
        cmocka_unit_test(test_parse_value),
        cmocka_unit_test(test_same_shape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
