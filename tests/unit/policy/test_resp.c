/*
 * estuary - tests for the RESP2 reply parser (src/policy/redis_resp.c): every type, partial
 * input at every split, pipelined replies, the limits, and malformed input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "policy/redis_resp.h"

static est_resp_status_t parse_s(const char *s, est_resp_reply_t *r, size_t *used)
{
    return est_resp_parse(s, strlen(s), r, used);
}

/* a whole reply parses to OK consuming all of it; every shorter prefix is PARTIAL */
static void assert_whole(const char *s, est_resp_reply_t *r)
{
    size_t n = strlen(s), used = 0;
    for (size_t i = 0; i < n; ++i) {
        est_resp_reply_t tmp;
        size_t u;
        if (est_resp_parse(s, i, &tmp, &u) != EST_RESP_PARTIAL) {
            fprintf(stderr, "prefix %zu of %s is not partial\n", i, s);
            fail();
        }
    }
    assert_int_equal(est_resp_parse(s, n, r, &used), EST_RESP_OK);
    assert_int_equal(used, n);
}

static void test_scalars(void **state)
{
    est_resp_reply_t r;
    assert_whole("+OK\r\n", &r);
    assert_int_equal(r.num_nodes, 1);
    assert_int_equal(r.nodes[0].type, EST_RESP_SIMPLE);
    assert_int_equal(r.nodes[0].len, 2);
    assert_memory_equal(r.nodes[0].str, "OK", 2);

    assert_whole("+\r\n", &r);
    assert_int_equal(r.nodes[0].len, 0);

    assert_whole("-NOSCRIPT No matching script. Please use EVAL.\r\n", &r);
    assert_int_equal(r.nodes[0].type, EST_RESP_ERROR);
    assert_true(est_resp_error_is(&r.nodes[0], "NOSCRIPT"));
    assert_false(est_resp_error_is(&r.nodes[0], "NOSCRIP"));
    assert_false(est_resp_error_is(&r.nodes[0], "ERR"));
    assert_whole("-NOSCRIPT\r\n", &r);
    assert_true(est_resp_error_is(&r.nodes[0], "NOSCRIPT"));
    assert_whole("+NOSCRIPT\r\n", &r);
    assert_false(est_resp_error_is(&r.nodes[0], "NOSCRIPT")); /* not an error */

    assert_whole(":0\r\n", &r);
    assert_int_equal(r.nodes[0].type, EST_RESP_INTEGER);
    assert_int_equal(r.nodes[0].integer, 0);
    assert_whole(":-42\r\n", &r);
    assert_int_equal(r.nodes[0].integer, -42);
    assert_whole(":9223372036854775807\r\n", &r);
    assert_true(r.nodes[0].integer == INT64_MAX);
    assert_whole(":-9223372036854775808\r\n", &r);
    assert_true(r.nodes[0].integer == INT64_MIN);

    assert_whole("$5\r\nhello\r\n", &r);
    assert_int_equal(r.nodes[0].type, EST_RESP_BULK);
    assert_int_equal(r.nodes[0].len, 5);
    assert_memory_equal(r.nodes[0].str, "hello", 5);
    assert_whole("$0\r\n\r\n", &r);
    assert_int_equal(r.nodes[0].type, EST_RESP_BULK);
    assert_int_equal(r.nodes[0].len, 0);
    assert_whole("$-1\r\n", &r);
    assert_int_equal(r.nodes[0].type, EST_RESP_NIL);
}

static void test_bulk_binary(void **state)
{
    /* a bulk string carries any bytes, CR, LF and NUL included */
    static const char s[] = "$6\r\na\r\n\0b\n\r\n";
    est_resp_reply_t r;
    size_t used;
    assert_int_equal(est_resp_parse(s, sizeof(s) - 1, &r, &used), EST_RESP_OK);
    assert_int_equal(used, sizeof(s) - 1);
    assert_int_equal(r.nodes[0].len, 6);
    assert_memory_equal(r.nodes[0].str, "a\r\n\0b\n", 6);
    for (size_t i = 0; i < sizeof(s) - 1; ++i)
        assert_int_equal(est_resp_parse(s, i, &r, &used), EST_RESP_PARTIAL);
}

static void test_arrays(void **state)
{
    est_resp_reply_t r;
    /* the rate-limit script's reply */
    assert_whole("*4\r\n:1\r\n:9\r\n:0\r\n:100000\r\n", &r);
    assert_int_equal(r.num_nodes, 5);
    assert_int_equal(r.nodes[0].type, EST_RESP_ARRAY);
    assert_int_equal(r.nodes[0].integer, 4);
    assert_int_equal(r.nodes[4].type, EST_RESP_INTEGER);
    assert_int_equal(r.nodes[4].integer, 100000);

    assert_whole("*0\r\n", &r);
    assert_int_equal(r.num_nodes, 1);
    assert_int_equal(r.nodes[0].integer, 0);
    assert_whole("*-1\r\n", &r);
    assert_int_equal(r.nodes[0].type, EST_RESP_NIL_ARRAY);

    /* nested, mixed, with empty and nil members: pre-order */
    assert_whole("*3\r\n*2\r\n+a\r\n$-1\r\n*0\r\n-ERR x\r\n", &r);
    assert_int_equal(r.num_nodes, 6);
    assert_int_equal(r.nodes[1].type, EST_RESP_ARRAY);
    assert_int_equal(r.nodes[2].type, EST_RESP_SIMPLE);
    assert_int_equal(r.nodes[3].type, EST_RESP_NIL);
    assert_int_equal(r.nodes[4].type, EST_RESP_ARRAY);
    assert_int_equal(r.nodes[5].type, EST_RESP_ERROR);

    /* depth: EST_RESP_MAX_DEPTH arrays within arrays pass, one more does not */
    assert_whole("*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", &r);
    assert_int_equal(parse_s("*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", &r, &(size_t){0}), EST_RESP_INVALID);
    /* an empty array at the innermost level needs no push */
    assert_whole("*1\r\n*1\r\n*1\r\n*1\r\n*0\r\n", &r);
}

static void test_pipelined(void **state)
{
    static const char s[] = ":1\r\n*2\r\n:2\r\n:3\r\n+OK\r\n$3\r\nab";
    size_t off = 0, used;
    est_resp_reply_t r;
    assert_int_equal(est_resp_parse(s + off, sizeof(s) - 1 - off, &r, &used), EST_RESP_OK);
    assert_int_equal(used, 4);
    off += used;
    assert_int_equal(est_resp_parse(s + off, sizeof(s) - 1 - off, &r, &used), EST_RESP_OK);
    assert_int_equal(r.num_nodes, 3);
    assert_int_equal(r.nodes[2].integer, 3);
    off += used;
    assert_int_equal(est_resp_parse(s + off, sizeof(s) - 1 - off, &r, &used), EST_RESP_OK);
    assert_int_equal(r.nodes[0].type, EST_RESP_SIMPLE);
    off += used;
    assert_int_equal(est_resp_parse(s + off, sizeof(s) - 1 - off, &r, &used), EST_RESP_PARTIAL);
}

static void test_malformed(void **state)
{
    static const char *const bad[] = {
        "OK\r\n",             /* inline */
        "_\r\n",              /* RESP3 null */
        ",1.5\r\n",           /* RESP3 double */
        "%1\r\n+a\r\n+b\r\n", /* RESP3 map */
        "+OK\n",              /* bare LF */
        "+O\rK\r\n",          /* CR inside a line */
        "+OK\r\r\n",          /* CR not followed by LF */
        ":\r\n",              /* empty integer */
        ":-\r\n",
        ":+1\r\n",
        ": 1\r\n",
        ":1 \r\n",
        ":12a\r\n",
        ":9223372036854775808\r\n",  /* overflow */
        ":-9223372036854775809\r\n", /* underflow */
        ":99999999999999999999999\r\n",
        "$-2\r\n",
        "$abc\r\n",
        "$\r\n",
        "$3\r\nabcd\r\n",   /* longer than said */
        "$3\r\nab\r\n\r\n", /* shorter than said: its CRLF is not where expected */
        "$3\r\nabcXY",
        "*-2\r\n",
        "*x\r\n",
        "*1\r\n\r\n", /* an empty line is not a value */
        "\r\n",
    };
    est_resp_reply_t r;
    size_t used;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
        if (parse_s(bad[i], &r, &used) != EST_RESP_INVALID) {
            fprintf(stderr, "accepted: %s\n", bad[i]);
            fail();
        }
    }
    /* a NUL where a type byte or digit should be */
    assert_int_equal(est_resp_parse("\0\r\n", 3, &r, &used), EST_RESP_INVALID);
    assert_int_equal(est_resp_parse(":1\0\r\n", 5, &r, &used), EST_RESP_INVALID);
    /* nothing at all: read more */
    assert_int_equal(est_resp_parse("", 0, &r, &used), EST_RESP_PARTIAL);
}

static void test_limits(void **state)
{
    est_resp_reply_t r;
    size_t used;
    char *buf = malloc(2 * EST_RESP_MAX_REPLY);
    assert_non_null(buf);

    /* a bulk string whose declared size cannot fit is refused before its bytes arrive */
    assert_int_equal(parse_s("$4096\r\n", &r, &used), EST_RESP_INVALID);
    assert_int_equal(parse_s("$9223372036854775807\r\n", &r, &used), EST_RESP_INVALID);
    /* the largest bulk string that fits (reply exactly EST_RESP_MAX_REPLY bytes) passes */
    size_t hdr = (size_t)sprintf(buf, "$%d\r\n", EST_RESP_MAX_REPLY - 9);
    assert_int_equal(hdr, 7);
    memset(buf + hdr, 'x', EST_RESP_MAX_REPLY - 9);
    memcpy(buf + hdr + EST_RESP_MAX_REPLY - 9, "\r\n", 2);
    assert_int_equal(est_resp_parse(buf, EST_RESP_MAX_REPLY, &r, &used), EST_RESP_OK);
    assert_int_equal(used, EST_RESP_MAX_REPLY);
    /* one byte more is refused */
    hdr = (size_t)sprintf(buf, "$%d\r\n", EST_RESP_MAX_REPLY - 8);
    assert_int_equal(est_resp_parse(buf, hdr, &r, &used), EST_RESP_INVALID);

    /* a line without end: partial below the limit, refused at it */
    buf[0] = '+';
    memset(buf + 1, 'a', 2 * EST_RESP_MAX_REPLY - 1);
    assert_int_equal(est_resp_parse(buf, EST_RESP_MAX_REPLY - 1, &r, &used), EST_RESP_PARTIAL);
    assert_int_equal(est_resp_parse(buf, EST_RESP_MAX_REPLY, &r, &used), EST_RESP_INVALID);
    assert_int_equal(est_resp_parse(buf, 2 * EST_RESP_MAX_REPLY, &r, &used), EST_RESP_INVALID);

    /* node budget: an array of MAX_NODES - 1 elements fits, one more is refused at its header */
    size_t n = (size_t)sprintf(buf, "*%d\r\n", EST_RESP_MAX_NODES - 1);
    for (int i = 0; i < EST_RESP_MAX_NODES - 1; ++i)
        n += (size_t)sprintf(buf + n, ":%d\r\n", i);
    assert_int_equal(est_resp_parse(buf, n, &r, &used), EST_RESP_OK);
    assert_int_equal(r.num_nodes, EST_RESP_MAX_NODES);
    assert_int_equal(r.nodes[EST_RESP_MAX_NODES - 1].integer, EST_RESP_MAX_NODES - 2);
    n = (size_t)sprintf(buf, "*%d\r\n", EST_RESP_MAX_NODES);
    assert_int_equal(est_resp_parse(buf, n, &r, &used), EST_RESP_INVALID);
    assert_int_equal(parse_s("*9223372036854775807\r\n", &r, &used), EST_RESP_INVALID);
    /* nested arrays each within budget but together over it */
    n = (size_t)sprintf(buf, "*2\r\n*20\r\n");
    for (int i = 0; i < 20; ++i)
        n += (size_t)sprintf(buf + n, ":%d\r\n", i);
    n += (size_t)sprintf(buf + n, "*20\r\n");
    assert_int_equal(est_resp_parse(buf, n, &r, &used), EST_RESP_INVALID);

    /* a reply that fits, followed by more bytes than the limit: only the reply is read */
    memcpy(buf, ":7\r\n", 4);
    memset(buf + 4, 'z', 2 * EST_RESP_MAX_REPLY - 4);
    assert_int_equal(est_resp_parse(buf, 2 * EST_RESP_MAX_REPLY, &r, &used), EST_RESP_OK);
    assert_int_equal(used, 4);
    assert_int_equal(r.nodes[0].integer, 7);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars),   cmocka_unit_test(test_bulk_binary), cmocka_unit_test(test_arrays),
        cmocka_unit_test(test_pipelined), cmocka_unit_test(test_malformed),   cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
