/*
 * picohttpparser is built into libh2o (the phr_* symbols are exported) but no installed
 * header declares them (shared/LIBH2O-2.2.5.md §0). This is the one place that does.
 */
#ifndef EST_COMMON_PHR_H
#define EST_COMMON_PHR_H

#include <stddef.h>
#include <sys/types.h>

struct phr_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* returns bytes consumed, -1 on error, -2 if incomplete */
int phr_parse_response(const char *buf, size_t len, int *minor_version, int *status, const char **msg, size_t *msg_len,
                       struct phr_header *headers, size_t *num_headers, size_t last_len);

struct phr_chunked_decoder {
    size_t bytes_left_in_chunk;
    char consume_trailer;
    char _hex_count;
    char _state;
};

/* decodes in place; returns bytes left after the end (>= 0) when done, -2 if incomplete, -1 on error */
ssize_t phr_decode_chunked(struct phr_chunked_decoder *decoder, char *buf, size_t *bufsz);
int phr_decode_chunked_is_in_data(struct phr_chunked_decoder *decoder);

#endif
