/*
 * Unit tests: est_error_body (src/common/jsonutil.c) always produces valid JSON (RFC 8259:
 * UTF-8, controls escaped), whatever bytes the message carries: a request path with invalid
 * UTF-8, control characters, quotes. Each body is read back with jansson, which rejects
 * invalid UTF-8, and compared with the expected text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "common/jsonutil.h"

/* builds a 404 body for `msg` and returns its "message" member as read back (owned) */
static char *round_trip(const char *msg, char **raw)
{
    size_t len;
    char *body = est_error_body(404, "route_not_found", msg, "rid-1", &len);
    assert_non_null(body);
    assert_int_equal(strlen(body), len);
    json_error_t je;
    json_t *v = json_loadb(body, len, 0, &je);
    if (v == NULL)
        fail_msg("not valid JSON (%s): %s", je.text, body);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "error"), "status")), 404);
    assert_string_equal(json_string_value(json_object_get(json_object_get(v, "error"), "request_id")), "rid-1");
    char *m = strdup(json_string_value(json_object_get(json_object_get(v, "error"), "message")));
    json_decref(v);
    if (raw != NULL)
        *raw = body;
    else
        free(body);
    return m;
}

static void test_valid_utf8_kept(void **state)
{
    char *raw, *m = round_trip("no route for GET /caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80", &raw);
    assert_string_equal(m, "no route for GET /caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80");
    assert_non_null(strstr(raw, "/caf\xc3\xa9/")); /* written as is, not escaped */
    free(m);
    free(raw);
}

static void test_invalid_bytes_replaced(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"/\xff\xfe", "/\xef\xbf\xbd\xef\xbf\xbd"},               /* never UTF-8 */
        {"/a\x80z", "/a\xef\xbf\xbdz"},                           /* lone continuation */
        {"/\xc3", "/\xef\xbf\xbd"},                               /* truncated at the end */
        {"/\xc3(", "/\xef\xbf\xbd("},                             /* truncated in the middle */
        {"/\xc0\xaf", "/\xef\xbf\xbd\xef\xbf\xbd"},               /* overlong '/' */
        {"/\xe0\x80\xaf", "/\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* overlong, 3 bytes */
        {"/\xed\xa0\x80", "/\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* UTF-16 surrogate D800 */
        {"/\xf4\x90\x80\x80", "/\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* above U+10FFFF */
        {"/\xf5\x80", "/\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xe2\x82", "\xef\xbf\xbd\xef\xbf\xbd"}, /* a 3-byte sequence cut short */
        {"/x\xe2\x82\xac\xff\"\\", "/x\xe2\x82\xac\xef\xbf\xbd\"\\"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *raw, *m = round_trip(cases[i].in, &raw);
        if (strcmp(m, cases[i].out) != 0)
            fail_msg("case %zu: got %s", i, raw);
        assert_non_null(strstr(raw, "\\ufffd"));
        free(m);
        free(raw);
    }
}

static void test_controls_escaped(void **state)
{
    char *raw, *m = round_trip("a\x01\tb\nc\x1f\x7f\"q\"\\", &raw);
    assert_string_equal(m, "a\x01\tb\nc\x1f\x7f\"q\"\\");
    for (const char *p = raw; *p; p++)
        assert_true((unsigned char)*p >= 0x20); /* no raw control byte in the body */
    assert_non_null(strstr(raw, "a\\u0001\\tb\\nc\\u001F\x7f\\\"q\\\"\\\\"));
    free(m);
    free(raw);
}

static void test_every_byte(void **state)
{
    /* every byte value 1..255 alone and after a lead byte: always valid JSON */
    for (unsigned a = 1; a < 256; a++) {
        for (unsigned b = 0; b < 256; b += (a >= 0xC0 ? 1 : 255)) {
            char msg[4] = {(char)a, (char)b, 'z', 0};
            if (b == 0)
                msg[1] = 'y';
            char *m = round_trip(msg, NULL);
            free(m);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_utf8_kept),
        cmocka_unit_test(test_invalid_bytes_replaced),
        cmocka_unit_test(test_controls_escaped),
        cmocka_unit_test(test_every_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
