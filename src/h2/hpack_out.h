/*
 * estuary - the HPACK encoder of HTTP/2 response heads.
 *
 * hpack_out.c defines h2o_hpack_flatten_response, which libh2o's HTTP/2 server calls through
 * the dynamic linker: ours indexes only the fields that repeat (docs/http2.md "Response
 * heads").
 */
#ifndef EST_H2_HPACK_OUT_H
#define EST_H2_HPACK_OUT_H

/* 0 when libh2o's calls reach estuary's encoder; -1 (and an error logged) otherwise. Called
 * once at start; also what links hpack_out.o into the executable. */
int est_h2_hpack_out_check(void);

#endif
