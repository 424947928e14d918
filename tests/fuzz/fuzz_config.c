/*
 * estuary - libFuzzer driver for the config loader: bytes -> est_config_load_buffer (what
 * `estuary --check` and a reload run) -> est_config_free / est_errors_clear.
 *
 * The checks: no crash, no leak (LeakSanitizer), no hang; exactly one outcome (a config and
 * no message, or NULL and at least one message); every message is "FILE:LINE:COLUMN: ..."
 * with LINE and COLUMN >= 1; at most EST_CONFIG_MAX_ERRORS + 1 messages.
 *
 * The file name sits in a folder that does not exist, so relative paths in the input
 * (certificates, access log, CA files) resolve to nothing on the machine running it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

#define FILE_NAME "/nonexistent-estuary-fuzz/estuary.json"

static void check_message(const char *m)
{
    size_t fl = strlen(FILE_NAME);
    unsigned line = 0, col = 0;
    int n = 0;
    if (strncmp(m, FILE_NAME ":", fl + 1) != 0)
        abort();
    if (sscanf(m + fl + 1, "%u:%u:%n", &line, &col, &n) != 2 || n == 0 || line == 0 || col == 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    est_errors_t errs = {0};
    est_config_t *conf = est_config_load_buffer(FILE_NAME, (const char *)data, size, &errs);
    if (conf != NULL) {
        if (errs.count != 0)
            abort();
        est_config_free(conf);
    } else {
        if (errs.count == 0 || errs.count > EST_CONFIG_MAX_ERRORS + 1)
            abort();
        for (size_t i = 0; i < errs.count; i++)
            check_message(errs.items[i]);
    }
    est_errors_clear(&errs);
    return 0;
}
