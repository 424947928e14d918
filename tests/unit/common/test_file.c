/*
 * Unit tests for est_read_file (src/common/file.c): whole files up to the bound, NUL
 * termination, refusals (over the bound by one byte, a directory, a device, a missing file).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "common/file.h"

static char dir[] = "/tmp/est-test-file-XXXXXX";

static const char *write_file(const char *name, size_t size)
{
    static char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < size; ++i)
        fputc('a' + (int)(i % 26), f);
    fclose(f);
    return path;
}

static void test_reads_whole_file(void **state)
{
    (void)state;
    char *buf = NULL, err[128] = "";
    size_t len = 0;
    const char *path = write_file("exact", 5000);
    assert_int_equal(est_read_file(path, 5000, &buf, &len, err, sizeof(err)), 0);
    assert_int_equal(len, 5000);
    assert_int_equal(buf[len], '\0');
    assert_int_equal(buf[0], 'a');
    assert_int_equal(buf[4999], 'a' + 4999 % 26);
    free(buf);

    path = write_file("empty", 0);
    assert_int_equal(est_read_file(path, 10, &buf, &len, err, sizeof(err)), 0);
    assert_int_equal(len, 0);
    assert_string_equal(buf, "");
    free(buf);
}

static void test_refuses_over_bound(void **state)
{
    (void)state;
    char *buf = NULL, err[128] = "";
    size_t len = 0;
    const char *path = write_file("over", 5001);
    assert_int_equal(est_read_file(path, 5000, &buf, &len, err, sizeof(err)), -1);
    assert_null(buf);
    assert_non_null(strstr(err, "at most 5000 bytes"));
}

static void test_refuses_non_regular(void **state)
{
    (void)state;
    char *buf = NULL, err[128] = "";
    size_t len = 0;
    assert_int_equal(est_read_file(dir, 5000, &buf, &len, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "regular file"));
    assert_int_equal(est_read_file("/dev/zero", 5000, &buf, &len, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "regular file"));
    char missing[300];
    snprintf(missing, sizeof(missing), "%s/missing", dir);
    assert_int_equal(est_read_file(missing, 5000, &buf, &len, err, sizeof(err)), -1);
    assert_string_equal(err, "No such file or directory");
    assert_null(buf);
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_whole_file),
        cmocka_unit_test(test_refuses_over_bound),
        cmocka_unit_test(test_refuses_non_regular),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
