#ifndef ESTUARY_TESTS_POLICY_HELPERS_H
#define ESTUARY_TESTS_POLICY_HELPERS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The whole of TEST_DATA_DIR/name, NUL-terminated, length in *len. Fails the test when absent. */
static char *read_data(const char *name, size_t *len)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", TEST_DATA_DIR, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        abort();
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n)
        abort();
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

#endif
