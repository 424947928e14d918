#ifndef ESTUARY_POLICY_APIKEYS_H
#define ESTUARY_POLICY_APIKEYS_H

#include <stddef.h>

/* API keys of a `keys_file`: one key per line, or the SHA-256 of a key as exactly 64 hex
 * digits (either case; such a line is always read as a digest, so a plain key of 64 hex digits
 * must be written as its SHA-256). Leading/trailing spaces, tabs and CR are trimmed; blank lines
 * and lines starting with '#' are skipped. Only digests are kept in memory.
 *
 * Bounds: the file at most EST_APIKEYS_MAX_FILE bytes, at most EST_APIKEYS_MAX_KEYS keys, a
 * line at most EST_APIKEYS_MAX_LINE bytes; over any of them the load fails (a truncated list
 * would silently lock clients out).
 *
 * Loading reads a file: do it at configuration time, never on a request path. A loaded set is
 * immutable and may be shared read-only between threads. */

#define EST_APIKEYS_MAX_FILE (4 * 1024 * 1024)
#define EST_APIKEYS_MAX_KEYS 100000
#define EST_APIKEYS_MAX_LINE 4096

typedef struct st_est_apikeys_t est_apikeys_t;

/* Loads `path`. NULL on failure with "LINE: reason" or a system error in err (capacity errlen). */
est_apikeys_t *est_apikeys_load(const char *path, char *err, size_t errlen);

/* Parses the contents of a keys file held in memory (the same rules). */
est_apikeys_t *est_apikeys_parse(const char *text, size_t len, char *err, size_t errlen);

void est_apikeys_free(est_apikeys_t *keys);

size_t est_apikeys_count(const est_apikeys_t *keys);

/* 1 when the presented key (len bytes) is in the set, else 0. The presented key is hashed and
 * its digest compared with every stored digest by CRYPTO_memcmp, all of them, whatever matches
 * first: the time depends on the number of keys only, not on which key matched or how much of
 * it. A key over EST_APIKEYS_MAX_LINE bytes or empty is refused at once. */
int est_apikeys_check(const est_apikeys_t *keys, const char *key, size_t len);

#endif
