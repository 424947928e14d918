/*
 * estuary - unit tests for jspan (src/aggregate/jspan.c), the validating zero-copy JSON reader.
 *
 * The case files in tests/unit/aggregate/json/ (written for estuary, JSONTestSuite-style names):
 * y_*.json must parse, and jspan_write_value of the root must give the file back minus its
 * leading and trailing whitespace (jspan_write_compact: the same minus whitespace outside
 * strings, which must parse again to the same compact text); n_*.json must be refused;
 * i_*.json are the documented choices in i_cases below. Every file is also given to jansson
 * (json_loadb, JSON_DECODE_ANY | JSON_ALLOW_NUL): it must agree except where docs/json.md says
 * it does not (numbers jansson cannot hold, a NUL in a key, nesting beyond 2048).
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "aggregate/jspan.h"

/* TEST_DATA_DIR is tests/unit/aggregate/data (CMake, one per test folder); the cases sit beside it */
static char case_dir[4096];

static const char *get_case_dir(void)
{
    const char *slash = strrchr(TEST_DATA_DIR, '/');
    assert_non_null(slash);
    snprintf(case_dir, sizeof(case_dir), "%.*s/json", (int)(slash - TEST_DATA_DIR), TEST_DATA_DIR);
    return case_dir;
}

struct i_case {
    const char *name;
    int accepted;
};

/* the implementation-defined cases: what jspan does, and why (docs/json.md) */
static const struct i_case i_cases[] = {
    {"i_bom.json", 0},                   /* RFC 8259 section 8.1: MAY ignore a BOM; we refuse, as jansson */
    {"i_number_underflow.json", 1},      /* kept as text: nothing is converted */
    {"i_number_huge_exponent.json", 1},  /* the same */
    {"i_key_nul.json", 1},               /* a key may hold U+0000; jansson refuses */
    {"i_string_u_noncharacter.json", 1}, /* noncharacters are characters (RFC 8259 section 8.2) */
    {"i_nesting_10000.json", 1},         /* JSPAN_DEFAULT_MAX_DEPTH */
};

static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    long sz = ftell(fp);
    assert_true(sz >= 0);
    rewind(fp);
    /* exactly the file's size, so that an over-read is caught under ASan */
    char *buf = malloc(sz > 0 ? (size_t)sz : 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)sz, fp), (size_t)sz);
    fclose(fp);
    *len = (size_t)sz;
    return buf;
}

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* jansson's verdict; a refusal that docs/json.md lists as a difference counts as "differs" */
enum { JANSSON_REFUSES, JANSSON_ACCEPTS, JANSSON_DIFFERS };
static int jansson_verdict(const char *buf, size_t len)
{
    json_error_t err;
    json_t *j = json_loadb(buf, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (j != NULL) {
        json_decref(j);
        return JANSSON_ACCEPTS;
    }
    enum json_error_code code = json_error_code(&err);
    if (code == json_error_numeric_overflow || code == json_error_null_byte_in_key || code == json_error_stack_overflow)
        return JANSSON_DIFFERS;
    return JANSSON_REFUSES;
}

static void check_round_trip(const char *name, const char *buf, size_t len, const jspan_doc_t *doc)
{
    size_t a = 0, b = len;
    while (a < b && is_ws(buf[a]))
        ++a;
    while (b > a && is_ws(buf[b - 1]))
        --b;
    jspan_buf_t out = {0};
    assert_int_equal(jspan_write_value(doc, JSPAN_ROOT, &out), 0);
    if (out.len != b - a || memcmp(out.data, buf + a, out.len) != 0)
        fail_msg("%s: written back differs from the input", name);

    /* compact: parses again, and compacting that changes nothing */
    jspan_buf_t c1 = {0}, c2 = {0};
    jspan_doc_t d2;
    assert_int_equal(jspan_write_compact(doc, JSPAN_ROOT, &c1), 0);
    assert_int_equal(jspan_parse(&d2, c1.data, c1.len, NULL), JSPAN_OK);
    assert_int_equal(jspan_num_values(&d2), jspan_num_values(doc));
    assert_int_equal(jspan_write_compact(&d2, JSPAN_ROOT, &c2), 0);
    assert_int_equal(c1.len, c2.len);
    assert_memory_equal(c1.data, c2.data, c1.len);
    for (size_t i = 0; i < c1.len; ++i)
        assert_true(c1.data[i] != '\n' && c1.data[i] != '\r' && c1.data[i] != '\t');
    jspan_dispose(&d2);
    jspan_buf_dispose(&c1);
    jspan_buf_dispose(&c2);
    jspan_buf_dispose(&out);
}

static void test_case_files(void **state)
{
    const char *cdir = get_case_dir();
    DIR *dir = opendir(cdir);
    assert_non_null(dir);
    struct dirent *de;
    size_t ny = 0, nn = 0, ni = 0;
    while ((de = readdir(dir)) != NULL) {
        const char *name = de->d_name;
        size_t nl = strlen(name);
        if (nl < 7 || strcmp(name + nl - 5, ".json") != 0 || name[1] != '_')
            continue;
        char path[sizeof(case_dir) + 300];
        snprintf(path, sizeof(path), "%s/%s", cdir, name);
        size_t len;
        char *buf = read_file(path, &len);
        jspan_doc_t doc;
        jspan_status_t st = jspan_parse(&doc, buf, len, NULL);
        int jv = jansson_verdict(buf, len);
        switch (name[0]) {
        case 'y':
            ++ny;
            if (st != JSPAN_OK)
                fail_msg("%s: refused (%s at %zu)", name, jspan_strerror(st), doc.err_offset);
            check_round_trip(name, buf, len, &doc);
            if (jv == JANSSON_REFUSES)
                fail_msg("%s: jansson refuses it", name);
            break;
        case 'n':
            ++nn;
            if (st == JSPAN_OK)
                fail_msg("%s: accepted", name);
            assert_true(doc.err_offset <= len);
            if (jv == JANSSON_ACCEPTS)
                fail_msg("%s: jansson accepts it", name);
            break;
        case 'i': {
            ++ni;
            const struct i_case *ic = NULL;
            for (size_t k = 0; k < sizeof(i_cases) / sizeof(i_cases[0]); ++k)
                if (strcmp(i_cases[k].name, name) == 0)
                    ic = &i_cases[k];
            if (ic == NULL)
                fail_msg("%s: not listed in i_cases", name);
            if ((st == JSPAN_OK) != ic->accepted)
                fail_msg("%s: %s, documented the other way", name, jspan_strerror(st));
            if (st == JSPAN_OK)
                check_round_trip(name, buf, len, &doc);
            break;
        }
        default:
            fail_msg("%s: unknown prefix", name);
        }
        jspan_dispose(&doc);
        free(buf);
    }
    closedir(dir);
    /* the folder is there and complete */
    assert_true(ny >= 30);
    assert_true(nn >= 60);
    assert_int_equal(ni, sizeof(i_cases) / sizeof(i_cases[0]));
}

static void parse_ok(jspan_doc_t *doc, const char *s)
{
    jspan_status_t st = jspan_parse(doc, s, strlen(s), NULL);
    if (st != JSPAN_OK)
        fail_msg("%s: %s at %zu", s, jspan_strerror(st), doc->err_offset);
}

static void assert_raw(const jspan_doc_t *doc, size_t v, const char *expect)
{
    assert_true(v != JSPAN_NONE);
    size_t len;
    const char *raw = jspan_raw(doc, v, &len);
    if (len != strlen(expect) || memcmp(raw, expect, len) != 0)
        fail_msg("value is %.*s, expected %s", (int)len, raw, expect);
}

/* SPEC "Fidelity": every value comes out byte for byte */
static void test_fidelity_values(void **state)
{
    static const char *const values[] = {
        "12345678901234567890",
        "1e400",
        "-0",
        "1.10",
        "0.1",
        "19.99",
        "3.141592653589793238462643383279",
        "\"\\u0000\"",
        "\"caf\xc3\xa9 \xe4\xb8\xad \xf0\x9f\x98\x80\"",
        "\"\\ud83d\\ude00\"",
        "-1.5E-07",
    };
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); ++i) {
        char text[256];
        snprintf(text, sizeof(text), "{\"data\": {\"user\": {\"v\": %s}}}", values[i]);
        jspan_doc_t doc;
        parse_ok(&doc, text);
        size_t v = jspan_lookup_path(&doc, JSPAN_ROOT, "data.user.v", 11);
        assert_raw(&doc, v, values[i]);
        jspan_buf_t out = {0};
        assert_int_equal(jspan_write_compact(&doc, jspan_lookup_path(&doc, JSPAN_ROOT, "data", 4), &out), 0);
        char expect[256];
        snprintf(expect, sizeof(expect), "{\"user\":{\"v\":%s}}", values[i]);
        assert_int_equal(out.len, strlen(expect));
        assert_memory_equal(out.data, expect, out.len);
        jspan_buf_dispose(&out);
        jspan_dispose(&doc);
    }
}

static void test_types_and_walk(void **state)
{
    jspan_doc_t doc;
    parse_ok(&doc, " {\"a\": [1, \"x\", true, false, null, {}, []], \"b\": {\"c\": -2}} ");
    assert_int_equal(jspan_type(&doc, JSPAN_ROOT), JSPAN_OBJECT);
    assert_int_equal(jspan_count(&doc, JSPAN_ROOT), 2);
    size_t k = jspan_child(&doc, JSPAN_ROOT);
    assert_int_equal(jspan_type(&doc, k), JSPAN_STRING);
    assert_true(jspan_str_equals(&doc, k, "a", 1));
    size_t arr = jspan_next(&doc, k);
    assert_int_equal(arr, k + 1);
    assert_int_equal(jspan_type(&doc, arr), JSPAN_ARRAY);
    assert_int_equal(jspan_count(&doc, arr), 7);
    static const jspan_type_t types[] = {JSPAN_NUMBER, JSPAN_STRING, JSPAN_TRUE, JSPAN_FALSE,
                                         JSPAN_NULL,   JSPAN_OBJECT, JSPAN_ARRAY};
    size_t e = jspan_child(&doc, arr), n = 0;
    for (; e != JSPAN_NONE; e = jspan_next(&doc, e), ++n) {
        assert_int_equal(jspan_type(&doc, e), types[n]);
        assert_int_equal(jspan_count(&doc, e), 0);
        assert_int_equal(jspan_child(&doc, e), JSPAN_NONE);
    }
    assert_int_equal(n, 7);
    size_t kb = jspan_next(&doc, arr);
    assert_true(jspan_str_equals(&doc, kb, "b", 1));
    assert_raw(&doc, jspan_next(&doc, kb), "{\"c\": -2}");
    assert_int_equal(jspan_next(&doc, jspan_next(&doc, kb)), JSPAN_NONE);
    assert_int_equal(jspan_next(&doc, JSPAN_ROOT), JSPAN_NONE);
    assert_raw(&doc, JSPAN_ROOT, "{\"a\": [1, \"x\", true, false, null, {}, []], \"b\": {\"c\": -2}}");
    /* 2 keys, the array and its 7 elements, the inner object, its key and value, the root */
    assert_int_equal(jspan_num_values(&doc), 14);
    jspan_dispose(&doc);
}

static void test_lookup(void **state)
{
    jspan_doc_t doc;
    parse_ok(&doc, "{\"data\": {\"user\": 1, \"user\": {\"id\": 2}, \"list\": [{\"user\": 3}]}, \"d\\u0061ta\": 0, "
                   "\"\": {\"\": 4}, \"x\": \"str\", \"a.b\": 5}");
    /* duplicate keys: the last one (SPEC) */
    assert_raw(&doc, jspan_lookup_path(&doc, JSPAN_ROOT, "data", 4), "0");
    jspan_dispose(&doc);
    parse_ok(&doc, "{\"data\": {\"user\": 1, \"user\": {\"id\": 2}, \"list\": [{\"user\": 3}]}, "
                   "\"\": {\"\": 4}, \"x\": \"str\", \"a.b\": 5}");
    assert_raw(&doc, jspan_lookup_path(&doc, JSPAN_ROOT, "data.user", 9), "{\"id\": 2}");
    assert_raw(&doc, jspan_lookup_path(&doc, JSPAN_ROOT, "data.user.id", 12), "2");
    assert_int_equal(jspan_lookup_path(&doc, JSPAN_ROOT, "data.list.user", 14), JSPAN_NONE); /* no array index */
    assert_int_equal(jspan_lookup_path(&doc, JSPAN_ROOT, "data.nope", 9), JSPAN_NONE);
    assert_int_equal(jspan_lookup_path(&doc, JSPAN_ROOT, "x.y", 3), JSPAN_NONE); /* through a string */
    assert_raw(&doc, jspan_lookup_path(&doc, JSPAN_ROOT, ".", 1), "4");          /* empty segments */
    assert_int_equal(jspan_lookup_path(&doc, JSPAN_ROOT, "a.b", 3), JSPAN_NONE); /* a dot always splits */
    assert_raw(&doc, jspan_object_get(&doc, JSPAN_ROOT, "a.b", 3), "5");
    assert_int_equal(jspan_object_get(&doc, jspan_lookup_path(&doc, JSPAN_ROOT, "x", 1), "x", 1), JSPAN_NONE);
    /* only the given length of the key counts */
    assert_raw(&doc, jspan_lookup_path(&doc, JSPAN_ROOT, "data.userXX", 9), "{\"id\": 2}");
    jspan_dispose(&doc);
}

static void test_strings(void **state)
{
    jspan_doc_t doc;
    const char *text = "[\"plain\", \"a\\u0000b\", \"\\u00e9\\ud83d\\ude00\\n\\/\\\"\", \"\xc3\xa9\"]";
    parse_ok(&doc, text);
    size_t s = jspan_child(&doc, JSPAN_ROOT);
    assert_false(jspan_str_has_escapes(&doc, s));
    assert_true(jspan_str_equals(&doc, s, "plain", 5));
    assert_false(jspan_str_equals(&doc, s, "plai", 4));
    assert_false(jspan_str_equals(&doc, s, "plainx", 6));
    size_t len;
    const char *raw = jspan_str_raw(&doc, s, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(raw, "plain", 5);

    char out[64];
    s = jspan_next(&doc, s);
    assert_true(jspan_str_has_escapes(&doc, s));
    assert_int_equal(jspan_str_decode(&doc, s, out), 3);
    assert_memory_equal(out, "a\0b", 3);
    assert_true(jspan_str_equals(&doc, s, "a\0b", 3));
    assert_false(jspan_str_equals(&doc, s, "a", 1));
    assert_false(jspan_str_equals(&doc, s, "a\0c", 3));

    s = jspan_next(&doc, s);
    static const char expect[] = "\xc3\xa9\xf0\x9f\x98\x80\n/\"";
    assert_int_equal(jspan_str_decode(&doc, s, out), sizeof(expect) - 1);
    assert_memory_equal(out, expect, sizeof(expect) - 1);
    assert_true(jspan_str_equals(&doc, s, expect, sizeof(expect) - 1));
    assert_false(jspan_str_equals(&doc, s, expect, sizeof(expect) - 2));

    /* an escaped key and a raw one with the same value are the same key */
    s = jspan_next(&doc, s);
    assert_true(jspan_str_equals(&doc, s, "\xc3\xa9", 2));
    jspan_dispose(&doc);
    parse_ok(&doc, "{\"\\u00e9\": 1, \"\xc3\xa9\": 2}");
    assert_raw(&doc, jspan_object_get(&doc, JSPAN_ROOT, "\xc3\xa9", 2), "2");
    jspan_dispose(&doc);
}

static void test_errors(void **state)
{
    static const struct {
        const char *text;
        jspan_status_t st;
        size_t offset;
    } cases[] = {
        {"", JSPAN_ERR_EOF, 0},
        {"[1,", JSPAN_ERR_EOF, 3},
        {"[1}", JSPAN_ERR_SYNTAX, 2},
        {"01", JSPAN_ERR_NUMBER, 1},
        {"\"a\x01\"", JSPAN_ERR_STRING, 2},
        {"[\"\\ud800\"]", JSPAN_ERR_ESCAPE, 2},
        {"[\"\xed\xa0\x80\"]", JSPAN_ERR_UTF8, 2},
        {"{} x", JSPAN_ERR_TRAILING, 3},
        {"NaN", JSPAN_ERR_SYNTAX, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        jspan_doc_t doc;
        jspan_status_t st = jspan_parse(&doc, cases[i].text, strlen(cases[i].text), NULL);
        if (st != cases[i].st || doc.err_offset != cases[i].offset)
            fail_msg("%s: %s at %zu", cases[i].text, jspan_strerror(st), doc.err_offset);
        jspan_dispose(&doc); /* harmless after a failure */
        assert_non_null(jspan_strerror(st));
    }
}

static char *repeat(const char *unit, size_t n, const char *head, const char *tail)
{
    size_t ul = strlen(unit), hl = strlen(head), tl = strlen(tail);
    char *s = malloc(hl + ul * n + tl + 1);
    assert_non_null(s);
    memcpy(s, head, hl);
    for (size_t i = 0; i < n; ++i)
        memcpy(s + hl + i * ul, unit, ul);
    memcpy(s + hl + ul * n, tail, tl + 1);
    return s;
}

static void test_limits(void **state)
{
    jspan_doc_t doc;
    /* depth: exactly max_depth containers nest, one more is refused */
    char *deep = malloc(2 * 600 + 1);
    assert_non_null(deep);
    for (size_t d = 510; d <= 514; ++d) {
        memset(deep, '[', d);
        memset(deep + d, ']', d);
        jspan_limits_t lim = {.max_depth = 512};
        jspan_status_t st = jspan_parse(&doc, deep, 2 * d, &lim);
        assert_int_equal(st, d <= 512 ? JSPAN_OK : JSPAN_ERR_DEPTH);
        if (st == JSPAN_OK) {
            assert_int_equal(jspan_num_values(&doc), d);
            assert_int_equal(jspan_count(&doc, JSPAN_ROOT), 1);
        } else {
            assert_int_equal(doc.err_offset, 512);
        }
        jspan_dispose(&doc);
    }
    free(deep);

    /* the tape: 2001 scalars and the two entries of the array; a bound below that is refused */
    char *arr = repeat("0,", 2000, "[", "0]");
    size_t len = strlen(arr);
    jspan_limits_t lim = {.max_tape_bytes = 2003 * sizeof(jspan_entry_t)};
    assert_int_equal(jspan_parse(&doc, arr, len, &lim), JSPAN_OK);
    assert_int_equal(jspan_count(&doc, JSPAN_ROOT), 2001);
    assert_true(jspan_tape_bytes(&doc) <= lim.max_tape_bytes);
    /* the documented worst case for scalars: 8 tape bytes per input byte (plus the slack) */
    assert_true(jspan_tape_bytes(&doc) <= 16 * len);
    jspan_dispose(&doc);
    lim.max_tape_bytes = 2002 * sizeof(jspan_entry_t);
    assert_int_equal(jspan_parse(&doc, arr, len, &lim), JSPAN_ERR_LIMIT);
    lim.max_tape_bytes = 1;
    assert_int_equal(jspan_parse(&doc, arr, len, &lim), JSPAN_ERR_LIMIT);
    free(arr);

    /* without a bound the tape never exceeds an entry per input byte */
    char *empties = repeat("[],", 3000, "[", "[]]");
    len = strlen(empties);
    assert_int_equal(jspan_parse(&doc, empties, len, NULL), JSPAN_OK);
    assert_int_equal(jspan_num_values(&doc), 3002);
    assert_true(jspan_tape_bytes(&doc) <= len * sizeof(jspan_entry_t));
    jspan_dispose(&doc);
    free(empties);
}

static void test_buf(void **state)
{
    jspan_doc_t doc;
    parse_ok(&doc, "{ \"a\" : [ 1 , \"x y\\\" \" ] }");
    jspan_buf_t out = {.max = 10};
    assert_int_equal(jspan_write_value(&doc, JSPAN_ROOT, &out), -1); /* 27 bytes > max */
    assert_int_equal(out.len, 0);
    out.max = 0;
    assert_int_equal(jspan_write_compact(&doc, JSPAN_ROOT, &out), 0);
    assert_int_equal(out.len, strlen("{\"a\":[1,\"x y\\\" \"]}"));
    assert_memory_equal(out.data, "{\"a\":[1,\"x y\\\" \"]}", out.len);
    jspan_buf_dispose(&out);
    jspan_dispose(&doc);
}

/* skip_array_scalars: array scalars get no tape entry but are still validated and counted;
 * containers in arrays and everything in objects keep theirs */
static void test_skip_array_scalars(void **state)
{
    const char *in = "[1, \"two\", {\"k\": [3, 4], \"s\": \"v\"}, [5, true], null]";
    jspan_limits_t lim = {.skip_array_scalars = 1};
    jspan_doc_t doc;
    assert_int_equal(jspan_parse(&doc, in, strlen(in), &lim), JSPAN_OK);
    assert_int_equal(jspan_count(&doc, JSPAN_ROOT), 5);
    size_t c = jspan_child(&doc, JSPAN_ROOT); /* the object: the scalars before it are skipped */
    assert_int_equal(jspan_type(&doc, c), JSPAN_OBJECT);
    size_t k = jspan_object_get(&doc, c, "k", 1);
    assert_int_equal(jspan_count(&doc, k), 2);
    assert_int_equal(jspan_child(&doc, k), JSPAN_NONE);
    size_t sv = jspan_object_get(&doc, c, "s", 1);
    assert_true(jspan_str_equals(&doc, sv, "v", 1));
    size_t a = jspan_next(&doc, c);
    assert_int_equal(jspan_type(&doc, a), JSPAN_ARRAY);
    assert_int_equal(jspan_count(&doc, a), 2);
    assert_int_equal(jspan_next(&doc, a), JSPAN_NONE);
    /* entries: [ { "k" [ ] "s" "v" } [ ] ]: the root closes at 10 */
    assert_int_equal(jspan_end(&doc, JSPAN_ROOT), 10);
    assert_int_equal(jspan_num_values(&doc), 7);
    jspan_buf_t out = {0};
    assert_int_equal(jspan_write_compact(&doc, JSPAN_ROOT, &out), 0);
    assert_int_equal(out.len, strlen("[1,\"two\",{\"k\":[3,4],\"s\":\"v\"},[5,true],null]"));
    assert_memory_equal(out.data, "[1,\"two\",{\"k\":[3,4],\"s\":\"v\"},[5,true],null]", out.len);
    jspan_buf_dispose(&out);
    jspan_dispose(&doc);
    /* a long array of numbers costs (almost) no tape */
    size_t n = 0, cap = 200000 * 8;
    char *big = malloc(cap);
    assert_non_null(big);
    big[n++] = '[';
    for (int i = 0; i < 200000; ++i)
        n += (size_t)snprintf(big + n, cap - n, "%s%d", i ? "," : "", i);
    big[n++] = ']';
    assert_int_equal(jspan_parse(&doc, big, n, &lim), JSPAN_OK);
    assert_true(jspan_tape_bytes(&doc) <= 64);
    jspan_dispose(&doc);
    /* still a validator */
    big[n / 2] = 'x';
    assert_int_not_equal(jspan_parse(&doc, big, n, &lim), JSPAN_OK);
    free(big);
    const char *bad[] = {"[1, 01]", "[\"\\ud800\"]", "[1, 2", "[NaN]", "[\"\xc3\x28\"]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i)
        assert_int_not_equal(jspan_parse(&doc, bad[i], strlen(bad[i]), &lim), JSPAN_OK);
}

/* has_ws tells whether compacting can be a plain copy */
static void test_has_ws(void **state)
{
    jspan_doc_t doc;
    assert_int_equal(jspan_parse(&doc, "{\"a\":[1,\" \"]}", 13, NULL), JSPAN_OK);
    assert_int_equal(doc.has_ws, 0); /* the space is inside a string */
    jspan_dispose(&doc);
    assert_int_equal(jspan_parse(&doc, "{\"a\": 1}", 8, NULL), JSPAN_OK);
    assert_int_equal(doc.has_ws, 1);
    jspan_dispose(&doc);
    assert_int_equal(jspan_parse(&doc, "1\n", 2, NULL), JSPAN_OK);
    assert_int_equal(doc.has_ws, 1);
    jspan_dispose(&doc);
}

/* the objects holding a key twice, escapes decoded, small and large objects */
static void test_dup_objects(void **state)
{
    char big[4096];
    size_t n = 0;
    n += (size_t)snprintf(big + n, sizeof(big) - n, "[{\"a\":1,\"b\":2},{\"a\":1,\"\\u0061\":2},{");
    for (int i = 0; i < 100; ++i)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "%s\"k%d\":%d", i ? "," : "", i, i);
    n += (size_t)snprintf(big + n, sizeof(big) - n, "},{");
    for (int i = 0; i < 100; ++i)
        n += (size_t)snprintf(big + n, sizeof(big) - n, "%s\"k%d\":%d", i ? "," : "", i == 99 ? 3 : i, i);
    n += (size_t)snprintf(big + n, sizeof(big) - n, "},{\"x\":{\"y\":1,\"y\":2},\"xy\":0}]");
    jspan_limits_t lim = {.skip_array_scalars = 1};
    jspan_doc_t doc;
    assert_int_equal(jspan_parse(&doc, big, n, &lim), JSPAN_OK);
    size_t *dups, num;
    assert_int_equal(jspan_find_dup_objects(&doc, &dups, &num), 0);
    assert_int_equal(num, 3);
    size_t o[5], i = 0;
    for (size_t c = jspan_child(&doc, JSPAN_ROOT); c != JSPAN_NONE; c = jspan_next(&doc, c))
        o[i++] = c;
    assert_int_equal(i, 5);
    assert_int_equal(dups[0], o[1]);
    assert_int_equal(dups[1], o[3]);
    assert_int_equal(dups[2], jspan_object_get(&doc, o[4], "x", 1));
    free(dups);
    /* keys equal by value hash alike */
    size_t k1 = jspan_child(&doc, o[1]), k2 = jspan_next(&doc, k1 + 1);
    assert_true(jspan_str_same(&doc, k1, &doc, k2));
    assert_true(jspan_str_hash(&doc, k1) == jspan_str_hash(&doc, k2));
    assert_true(jspan_str_hash(&doc, k1) == jspan_hash_bytes("a", 1));
    jspan_dispose(&doc);
    assert_int_equal(jspan_parse(&doc, "{\"a\":{\"b\":[{\"c\":1}]}}", 21, &lim), JSPAN_OK);
    assert_int_equal(jspan_find_dup_objects(&doc, &dups, &num), 0);
    assert_int_equal(num, 0);
    assert_null(dups);
    jspan_dispose(&doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_case_files),
        cmocka_unit_test(test_fidelity_values),
        cmocka_unit_test(test_types_and_walk),
        cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_skip_array_scalars),
        cmocka_unit_test(test_has_ws),
        cmocka_unit_test(test_dup_objects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
