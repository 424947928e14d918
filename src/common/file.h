/*
 * estuary - reading a small file whole, with a bound (key files, JWKS, OCSP responses).
 *
 * Used at start and on reload only (never on the request path: the read blocks).
 */
#ifndef EST_COMMON_FILE_H
#define EST_COMMON_FILE_H

#include <stddef.h>

/*
 * Reads the regular file `path` whole when it holds at most `max` bytes. Returns 0 with *out
 * (malloc'd, NUL-terminated; free it, after OPENSSL_cleanse(*out, *len) when it held a secret)
 * and *len, or -1 with a reason in `err` (without the path): it cannot be opened, is not a
 * regular file, holds more than `max` bytes (a file that grows while it is read too), or a
 * read fails. On failure nothing read stays in memory uncleansed.
 */
int est_read_file(const char *path, size_t max, char **out, size_t *len, char *err, size_t errlen);

#endif
