/*
 * libFuzzer driver: the HTTP/2 field rules (src/h2/fields.c).
 *
 * Input: byte 0 chooses the check (field, method, path); the rest is split at the first NUL
 * into the name (or method) and the value (or path). Checked: no crash, no read outside the
 * given bytes (ASan), and the verdicts agree with a few properties the rules imply.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "h2/fields.h"

static void check(int cond)
{
    if (!cond)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 16)
        return 0;
    const char *rest = (const char *)data + 1;
    size_t len = size - 1;
    const char *nul = memchr(rest, '\0', len);
    size_t a_len = nul != NULL ? (size_t)(nul - rest) : len;
    const char *b = nul != NULL ? nul + 1 : rest + len;
    size_t b_len = nul != NULL ? len - a_len - 1 : 0;
    /* exact-size copies so that ASan sees any read past the end */
    char *a_copy = malloc(a_len + 1), *b_copy = malloc(b_len + 1);
    memcpy(a_copy, rest, a_len);
    memcpy(b_copy, b, b_len);
    const char *verdict;
    switch (data[0] % 3) {
    case 0:
        verdict = est_h2_field_check(a_copy, a_len, b_copy, b_len);
        if (verdict == NULL) {
            check(a_len != 0);
            check(b_len == 0 || (b_copy[0] != ' ' && b_copy[b_len - 1] != ' '));
            check(memchr(b_copy, '\r', b_len) == NULL && memchr(b_copy, '\n', b_len) == NULL);
            for (size_t i = 0; i != a_len; ++i)
                check(!(a_copy[i] >= 'A' && a_copy[i] <= 'Z') && a_copy[i] != ':');
        }
        break;
    case 1:
        verdict = est_h2_method_check(a_copy, a_len);
        if (verdict == NULL)
            check(a_len != 0 && memchr(a_copy, ' ', a_len) == NULL);
        break;
    default:
        verdict = est_h2_path_check(a_copy, a_len, b_copy, b_len);
        if (verdict == NULL)
            check(b_len != 0 && (b_copy[0] == '/' || (b_len == 1 && b_copy[0] == '*')) && memchr(b_copy, ' ', b_len) == NULL);
        break;
    }
    free(a_copy);
    free(b_copy);
    return 0;
}
