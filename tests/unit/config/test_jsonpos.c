/*
 * Unit tests: the JSON position indexer (src/config/jsonpos.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "config/jsonpos.h"

typedef struct pos_case {
    const char *path;
    unsigned key_line, key_col, val_line, val_col;
} pos_case_t;

static void check(const char *text, const pos_case_t *cases, size_t n, size_t num_entries)
{
    est_jsonpos_t idx;
    assert_int_equal(est_jsonpos_build(&idx, text, strlen(text)), 0);
    for (size_t i = 0; i < n; i++) {
        const est_jsonpos_entry_t *e = est_jsonpos_find(&idx, cases[i].path);
        if (e == NULL)
            fail_msg("no entry for \"%s\"", cases[i].path);
        if (e->key_line != cases[i].key_line || e->key_col != cases[i].key_col || e->val_line != cases[i].val_line ||
            e->val_col != cases[i].val_col)
            fail_msg("\"%s\": key %u:%u value %u:%u, want key %u:%u value %u:%u", cases[i].path, e->key_line, e->key_col, e->val_line,
                     e->val_col, cases[i].key_line, cases[i].key_col, cases[i].val_line, cases[i].val_col);
    }
    assert_int_equal(idx.num_entries, num_entries);
    est_jsonpos_dispose(&idx);
}

static void test_nested(void **state)
{
    const char *text = "{\n"
                       "  \"routes\": [\n"
                       "    {\"path\": \"/a\", \"backends\": [{\"upstream\": \"u\"}, {\"x\": [1, true, null, -2.5e3, {}]}]}\n"
                       "  ],\n"
                       "  \"e\": {}, \"f\": []\n"
                       "}";
    static const pos_case_t cases[] = {
        {"", 1, 1, 1, 1},
        {"/routes", 2, 3, 2, 13},
        {"/routes/0", 3, 5, 3, 5},
        {"/routes/0/path", 3, 6, 3, 14},
        {"/routes/0/backends", 3, 20, 3, 32},
        {"/routes/0/backends/0", 3, 33, 3, 33},
        {"/routes/0/backends/0/upstream", 3, 34, 3, 46},
        {"/routes/0/backends/1", 3, 52, 3, 52},
        {"/routes/0/backends/1/x", 3, 53, 3, 58},
        {"/routes/0/backends/1/x/0", 3, 59, 3, 59},
        {"/routes/0/backends/1/x/1", 3, 62, 3, 62},
        {"/routes/0/backends/1/x/2", 3, 68, 3, 68},
        {"/routes/0/backends/1/x/3", 3, 74, 3, 74},
        {"/routes/0/backends/1/x/4", 3, 82, 3, 82},
        {"/e", 5, 3, 5, 8},
        {"/f", 5, 12, 5, 17},
    };
    check(text, cases, sizeof(cases) / sizeof(cases[0]), 16);
}

static void test_escapes_and_utf8(void **state)
{
    /* keys are decoded (escapes, surrogate pairs) and escaped as JSON pointers (~0, ~1);
     * columns count characters, not bytes; CR counts as a column, as in jansson */
    const char *text = "{\"a/b\": 1, \"c~d\": 2, \"\\u00e9\\\"\": 3, \"é\": \"ü\\n\", \"\\ud83d\\ude00\": [\"x\"],\r\n"
                       "\t\"z\": \"\\\\\"}";
    static const pos_case_t cases[] = {
        {"/a~1b", 1, 2, 1, 9},
        {"/c~0d", 1, 12, 1, 19},
        {"/\xc3\xa9\"", 1, 22, 1, 34},
        {"/\xc3\xa9", 1, 37, 1, 42},
        {"/\xf0\x9f\x98\x80", 1, 49, 1, 65},
        {"/\xf0\x9f\x98\x80/0", 1, 66, 1, 66},
        {"/z", 2, 2, 2, 7},
    };
    check(text, cases, sizeof(cases) / sizeof(cases[0]), 8);

    est_jsonpos_t idx;
    assert_int_equal(est_jsonpos_build(&idx, text, strlen(text)), 0);
    assert_null(est_jsonpos_find(&idx, "/a/b"));
    assert_null(est_jsonpos_find(&idx, "/nope"));
    est_jsonpos_dispose(&idx);
}

static void test_line_col_and_append(void **state)
{
    const char *text = "ab\ncé\nx";
    unsigned l, c;
    est_jsonpos_line_col(text, strlen(text), 0, &l, &c);
    assert_true(l == 1 && c == 1);
    est_jsonpos_line_col(text, strlen(text), 3, &l, &c);
    assert_true(l == 2 && c == 1);
    est_jsonpos_line_col(text, strlen(text), 6, &l, &c); /* the '\n' after "cé" (é is 2 bytes) */
    assert_true(l == 2 && c == 3);
    est_jsonpos_line_col(text, strlen(text), 100, &l, &c); /* clamped to the end */
    assert_true(l == 3 && c == 2);

    char *buf = NULL;
    size_t len = 0, cap = 0;
    assert_int_equal(est_jsonpos_append_key(&buf, &len, &cap, "a/~b", 4), 0);
    assert_int_equal(est_jsonpos_append_key(&buf, &len, &cap, "0", 1), 0);
    assert_string_equal(buf, "/a~1~0b/0");
    assert_int_equal(len, 9);
    free(buf);
}

static void test_invalid(void **state)
{
    static const char *const texts[] = {"", "{", "{\"a\" 1}", "[1,", "\"abc", "{\"a\": [1, 2}"};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        est_jsonpos_t idx;
        assert_int_equal(est_jsonpos_build(&idx, texts[i], strlen(texts[i])), -1);
        assert_int_equal(idx.num_entries, 0);
        est_jsonpos_dispose(&idx);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nested),
        cmocka_unit_test(test_escapes_and_utf8),
        cmocka_unit_test(test_line_col_and_append),
        cmocka_unit_test(test_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
