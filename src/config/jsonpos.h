/*
 * estuary - where each value of a JSON text sits (line and column), for config messages.
 *
 * jansson keeps no positions for values, so after jansson accepted a text, the indexer
 * scans it once and records, for every value, its path as a JSON pointer (RFC 6901:
 * "" for the root, "/routes/0/backends/1/upstream", with '~' written "~0" and '/' "~1")
 * and the 1-based line and column of its key and of its value. Columns count Unicode
 * characters, as jansson's do. Array elements have no key: their key position is the
 * value's.
 */
#ifndef EST_CONFIG_JSONPOS_H
#define EST_CONFIG_JSONPOS_H

#include <stddef.h>

/*
 * Values whose JSON pointer is longer than this are not indexed (their messages point at the
 * nearest indexed ancestor): the index then costs at most this much per value, whatever the
 * length of the keys.
 */
#define EST_JSONPOS_MAX_PATH 256

typedef struct est_jsonpos_entry {
    char *path; /* JSON pointer */
    unsigned key_line, key_col;
    unsigned val_line, val_col;
    size_t val_offset; /* byte offset of the value's first character */
} est_jsonpos_entry_t;

typedef struct est_jsonpos {
    est_jsonpos_entry_t *entries; /* sorted by path */
    size_t num_entries;
} est_jsonpos_t;

/*
 * Indexes `text` (`len` bytes, a JSON text jansson has accepted; it need not be
 * NUL-terminated and is not kept). Returns 0, or -1 on allocation failure or when the
 * text is not valid JSON after all (then `idx` is empty but may still be disposed).
 */
int est_jsonpos_build(est_jsonpos_t *idx, const char *text, size_t len);
/* frees what est_jsonpos_build allocated */
void est_jsonpos_dispose(est_jsonpos_t *idx);
/* the entry for the JSON pointer `path` (NUL-terminated), or NULL; the entry is borrowed */
const est_jsonpos_entry_t *est_jsonpos_find(const est_jsonpos_t *idx, const char *path);
/* appends the RFC 6901 escape of `key` (`len` bytes) to `*buf` after a '/'; returns 0 or -1 */
int est_jsonpos_append_key(char **buf, size_t *len, size_t *cap, const char *key, size_t keylen);
/* line/column (1-based) of byte `offset` of `text` */
void est_jsonpos_line_col(const char *text, size_t len, size_t offset, unsigned *line, unsigned *col);

#endif
