/*
 * estuary - a growable byte buffer for the admin subsystem (metrics text, access-log lines,
 * JSON bodies). Allocation failure aborts, as h2o_mem_alloc does.
 */
#ifndef EST_ADMIN_STRBUF_H
#define EST_ADMIN_STRBUF_H

#include <stddef.h>

typedef struct est_strbuf {
    char *base; /* malloc'd, NUL-terminated when non-NULL; owned by the buffer */
    size_t len, cap;
} est_strbuf_t;

void est_strbuf_reserve(est_strbuf_t *b, size_t extra);
void est_strbuf_append(est_strbuf_t *b, const char *s, size_t n);
void est_strbuf_appends(est_strbuf_t *b, const char *s);
void est_strbuf_appendf(est_strbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* appends `s` as a JSON string with its quotes; invalid UTF-8 bytes become U+FFFD */
void est_strbuf_append_json_string(est_strbuf_t *b, const char *s, size_t n);
void est_strbuf_dispose(est_strbuf_t *b);

#endif
