/*
 * estuary - libFuzzer driver for jspan (src/aggregate/jspan.c), the JSON reader of backend
 * replies: a differential fuzzer against jansson.
 *
 * Input: any bytes, parsed whole. The checks: no crash, no over-read, and
 * - jspan and jansson (json_loadb, JSON_DECODE_ANY | JSON_ALLOW_NUL: RFC 8259 with any
 *   top-level value and U+0000 in strings) agree on validity, except the differences listed in
 *   docs/json.md: jansson refuses numbers it cannot hold (json_error_numeric_overflow) and a
 *   U+0000 in a key (json_error_null_byte_in_key), which jspan accepts. The depth limit is set
 *   to jansson's (JSON_PARSER_MAX_DEPTH) so that nesting agrees too;
 * - when both accept, they read the same document: same types, same array elements, the same
 *   decoded strings, numbers equal once converted, and for every key of a jansson object
 *   (jansson keeps the last of duplicate keys) jspan_object_get finds an equal value;
 * - the tape is well formed: walking it with jspan_child/jspan_next visits every value once,
 *   counts match, raw spans lie inside the input, jspan_write_value of the root is the input
 *   minus its surrounding whitespace, jspan_write_compact parses again to the same values;
 * - the skip_array_scalars mode (what the merge uses) accepts exactly the same inputs, at the
 *   same error offset, indexes the same containers with the same spans and counts, in no more
 *   tape, and writes the same compact text.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aggregate/jspan.h"
#include "jspan_same.h"

#define CHECK(x)                                                                                                                   \
    do {                                                                                                                           \
        if (!(x))                                                                                                                  \
            abort();                                                                                                               \
    } while (0)

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* visits the subtree at v; returns the number of values in it */
static size_t walk(const jspan_doc_t *doc, size_t v, size_t depth)
{
    CHECK(depth <= JSON_PARSER_MAX_DEPTH);
    size_t len;
    const char *raw = jspan_raw(doc, v, &len);
    CHECK(len > 0 && raw >= doc->input && (size_t)(raw - doc->input) <= doc->len && len <= doc->len - (size_t)(raw - doc->input));
    jspan_type_t t = jspan_type(doc, v);
    if (t != JSPAN_ARRAY && t != JSPAN_OBJECT) {
        CHECK(jspan_child(doc, v) == JSPAN_NONE && jspan_count(doc, v) == 0);
        if (t == JSPAN_STRING) {
            size_t rl;
            const char *s = jspan_str_raw(doc, v, &rl);
            CHECK(s == raw + 1 && rl == len - 2);
            CHECK(jspan_str_has_escapes(doc, v) == (memchr(s, '\\', rl) != NULL));
        }
        return 1;
    }
    CHECK(raw[len - 1] == (t == JSPAN_ARRAY ? ']' : '}'));
    size_t n = 1, children = 0;
    for (size_t c = jspan_child(doc, v); c != JSPAN_NONE; c = jspan_next(doc, c)) {
        CHECK(c > v);
        if (t == JSPAN_OBJECT && children % 2 == 0)
            CHECK(jspan_type(doc, c) == JSPAN_STRING && jspan_next(doc, c) == c + 1);
        n += walk(doc, c, depth + 1);
        ++children;
    }
    CHECK(children == (t == JSPAN_OBJECT ? 2 : 1) * jspan_count(doc, v));
    return n;
}

/* whether jspan's value v and jansson's j are the same value */
static void same(const jspan_doc_t *doc, size_t v, const json_t *j)
{
    size_t len;
    const char *raw = jspan_raw(doc, v, &len);
    switch (jspan_type(doc, v)) {
    case JSPAN_NULL:
        CHECK(json_is_null(j));
        break;
    case JSPAN_TRUE:
        CHECK(json_is_true(j));
        break;
    case JSPAN_FALSE:
        CHECK(json_is_false(j));
        break;
    case JSPAN_NUMBER: {
        char text[128];
        if (len >= sizeof(text))
            break; /* jansson accepted it: a long number of digits that fits; not compared */
        memcpy(text, raw, len);
        text[len] = '\0';
        if (json_is_integer(j)) {
            CHECK(strpbrk(text, ".eE") == NULL);
            CHECK(strtoll(text, NULL, 10) == json_integer_value(j));
        } else {
            CHECK(json_is_real(j) && strpbrk(text, ".eE") != NULL);
            CHECK(strtod(text, NULL) == json_real_value(j));
        }
        break;
    }
    case JSPAN_STRING: {
        CHECK(json_is_string(j));
        size_t rl;
        jspan_str_raw(doc, v, &rl);
        char *buf = malloc(rl + 1);
        CHECK(buf != NULL);
        size_t dl = jspan_str_decode(doc, v, buf);
        CHECK(dl <= rl);
        CHECK(dl == json_string_length(j) && memcmp(buf, json_string_value(j), dl) == 0);
        CHECK(jspan_str_equals(doc, v, json_string_value(j), json_string_length(j)));
        free(buf);
        break;
    }
    case JSPAN_ARRAY: {
        CHECK(json_is_array(j) && json_array_size(j) == jspan_count(doc, v));
        size_t i = 0;
        for (size_t c = jspan_child(doc, v); c != JSPAN_NONE; c = jspan_next(doc, c), ++i)
            same(doc, c, json_array_get(j, i));
        break;
    }
    case JSPAN_OBJECT: {
        CHECK(json_is_object(j) && json_object_size(j) <= jspan_count(doc, v));
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)j, key, val) {
            size_t m = jspan_object_get(doc, v, key, strlen(key));
            CHECK(m != JSPAN_NONE);
            /* the last member with that key */
            for (size_t k = jspan_next(doc, m); k != JSPAN_NONE; k = jspan_next(doc, k + 1))
                CHECK(!jspan_str_equals(doc, k, key, strlen(key)));
            same(doc, m, val);
        }
        break;
    }
    }
}

/* jansson 2.14 skips a NUL byte right after a number or a literal (its lexer reads one byte
 * too far, then "ungets" it into a buffer where NUL means "empty"), so it takes "[1\0]" for
 * "[1]". Whether jspan accepts the input without those bytes. */
static int jansson_nul_quirk(const char *in, size_t size, const jspan_limits_t *lim)
{
    char *buf = malloc(size ? size : 1);
    CHECK(buf != NULL);
    size_t n = 0, dropped = 0;
    for (size_t i = 0; i < size; ++i) {
        char p = i > 0 ? in[i - 1] : '\0';
        if (in[i] == '\0' && ((p >= '0' && p <= '9') || (p >= 'a' && p <= 'z') || (p >= 'A' && p <= 'Z'))) {
            ++dropped;
            continue;
        }
        buf[n++] = in[i];
    }
    jspan_doc_t doc;
    int ok = dropped != 0 && jspan_parse(&doc, buf, n, lim) == JSPAN_OK;
    if (ok)
        jspan_dispose(&doc);
    free(buf);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    jspan_doc_t doc;
    jspan_limits_t lim = {.max_depth = JSON_PARSER_MAX_DEPTH};
    jspan_status_t st = jspan_parse(&doc, in, size, &lim);
    json_error_t err;
    json_t *j = json_loadb(in, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);

    jspan_doc_t sdoc;
    jspan_limits_t slim = {.max_depth = JSON_PARSER_MAX_DEPTH, .skip_array_scalars = 1};
    jspan_status_t sst = jspan_parse(&sdoc, in, size, &slim);
    CHECK(sst == st);
    if (st != JSPAN_OK)
        CHECK(sdoc.err_offset == doc.err_offset);

    if (st != JSPAN_OK) {
        CHECK(st != JSPAN_ERR_LIMIT && st != JSPAN_ERR_NOMEM);
        CHECK(doc.err_offset <= size);
        if (j != NULL) {
            /* jansson accepts what jspan refuses: a validator bug on one side, or jansson's known
             * one (docs/json.md) */
            CHECK(jansson_nul_quirk(in, size, &lim));
            json_decref(j);
        }
        return 0;
    }
    if (j == NULL) {
        enum json_error_code code = json_error_code(&err);
        CHECK(code == json_error_numeric_overflow || code == json_error_null_byte_in_key);
    }

    size_t nvalues = walk(&doc, JSPAN_ROOT, 0);
    CHECK(nvalues == jspan_num_values(&doc));
    CHECK(jspan_tape_bytes(&doc) <= size * sizeof(jspan_entry_t));
    CHECK(jspan_next(&doc, JSPAN_ROOT) == JSPAN_NONE);
    if (j != NULL)
        same(&doc, JSPAN_ROOT, j);

    size_t a = 0, b = size;
    while (a < b && is_ws(in[a]))
        ++a;
    while (b > a && is_ws(in[b - 1]))
        --b;
    jspan_buf_t out = {0};
    CHECK(jspan_write_value(&doc, JSPAN_ROOT, &out) == 0);
    CHECK(out.len == b - a && memcmp(out.data, in + a, out.len) == 0);
    jspan_buf_dispose(&out);

    CHECK(jspan_write_compact(&doc, JSPAN_ROOT, &out) == 0);
    jspan_doc_t d2;
    CHECK(jspan_parse(&d2, out.data, out.len, &lim) == JSPAN_OK);
    CHECK(jspan_num_values(&d2) == nvalues);
    if (j != NULL)
        same(&d2, JSPAN_ROOT, j);
    jspan_dispose(&d2);

    jspan_same_index(&doc, JSPAN_ROOT, &sdoc, JSPAN_ROOT);
    CHECK(jspan_tape_bytes(&sdoc) <= jspan_tape_bytes(&doc));
    jspan_buf_t sout = {0};
    CHECK(jspan_write_compact(&sdoc, JSPAN_ROOT, &sout) == 0);
    CHECK(sout.len == out.len && memcmp(sout.data, out.data, out.len) == 0);
    jspan_buf_dispose(&sout);
    jspan_dispose(&sdoc);
    jspan_buf_dispose(&out);

    jspan_dispose(&doc);
    json_decref(j);
    return 0;
}
