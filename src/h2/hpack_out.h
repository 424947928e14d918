/*
 * estuary - the HPACK encoder of HTTP/2 response heads.
 *
 * hpack_out.c defines h2o_hpack_flatten_response, which libh2o's HTTP/2 server calls through
 * the dynamic linker: ours indexes only the fields that repeat (docs/http2.md "Response
 * heads").
 */
#ifndef EST_H2_HPACK_OUT_H
#define EST_H2_HPACK_OUT_H

#include <stdint.h>
#include <h2o.h>
#include <h2o/cache_digests.h>
#include <h2o/version.h>

/* What hpack_out.c (and its fuzz driver) needs of libh2o's h2o/http2_internal.h, which cannot be included: it pulls in
 * khash.h, which Debian's libh2o-evloop-dev does not ship. The layouts below are those of
 * libh2o 2.2.5 (the only version this builds against, checked here); the structs are the ones
 * libh2o's HTTP/2 connection keeps and h2o_hpack_dispose_header_table frees. */
#if H2O_VERSION_MAJOR != 2 || H2O_VERSION_MINOR != 2 || H2O_VERSION_PATCH != 5
#error "src/h2/hpack_out.h mirrors libh2o 2.2.5's HPACK table; check the layouts against this version"
#endif
typedef struct st_h2o_hpack_header_table_t {
    struct st_h2o_hpack_header_table_entry_t *entries;
    size_t num_entries, entry_capacity, entry_start_index; /* a ring; entry_start_index is the newest */
    size_t hpack_size, hpack_capacity, hpack_max_capacity; /* RFC 7541 §4.1 sizes */
} h2o_hpack_header_table_t;
typedef struct st_h2o_hpack_header_table_entry_t {
    h2o_iovec_t *name;  /* a token's buf, or an h2o_mem_alloc_shared copy */
    h2o_iovec_t *value; /* an h2o_mem_alloc_shared copy (or a static-table value: never ours) */
    const char *err_desc;
} h2o_hpack_header_table_entry_t;
size_t h2o_hpack_encode_string(uint8_t *dst, const char *s, size_t len);
void h2o_hpack_flatten_response(h2o_buffer_t **buf, h2o_hpack_header_table_t *header_table, uint32_t stream_id,
                                size_t max_frame_size, h2o_res_t *res, h2o_timestamp_t *ts, const h2o_iovec_t *server_name,
                                size_t content_length);

/* libh2o's decoder (the fuzz driver checks our heads against it) */
int h2o_hpack_parse_headers(h2o_req_t *req, h2o_hpack_header_table_t *header_table, const uint8_t *src, size_t len,
                            int *pseudo_header_exists_map, size_t *content_length, h2o_cache_digests_t **digests,
                            const char **err_desc);
void h2o_hpack_dispose_header_table(h2o_hpack_header_table_t *header_table);


/* 0 when libh2o's calls reach estuary's encoder; -1 (and an error logged) otherwise. Called
 * once at start; also what links hpack_out.o into the executable. */
int est_h2_hpack_out_check(void);

#endif
