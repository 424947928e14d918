/*
 * estuary - the HTTP/1.1 connection layer's private structure and the functions its three
 * files share: conn.c (lifetime, reading heads), body.c (request bodies, buffered or
 * streamed), writer.c (responses, this layer's own error replies, upgrade).
 */
#ifndef EST_H1_CONN_INTERNAL_H
#define EST_H1_CONN_INTERNAL_H

#include <string.h>
#include "common/jsonutil.h"
#include "h1/conn.h"
#include "h1/parse.h"

/* input kept while a request is handled (pipelined bytes); reading pauses beyond it */
#define BUSY_INPUT_MAX (64 * 1024)
/* bytes dropped while lingering before the connection is closed anyway */
#define LINGER_MAX (256 * 1024)

/* RFC 9113 3.4: the client connection preface */
#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN (sizeof(H2_PREFACE) - 1)

enum { ST_HEAD, ST_CONTINUE, ST_BODY, ST_HANDLING, ST_UPGRADING, ST_CLOSING, ST_LINGER };

typedef struct st_h1_conn_t {
    h2o_conn_t super;
    h2o_socket_t *sock;
    est_h1_ctx_t *c;
    h2o_linklist_t link; /* est_h1_ctx_t._conns */
    h2o_timeout_entry_t timer;
    int state;
    unsigned head_started : 1; /* a byte of the current request head arrived */
    unsigned req_live : 1;     /* `req` is initialized (h2o_init_request) and not disposed */
    unsigned writing : 1;      /* an h2o_socket_write is pending */
    unsigned final_sent : 1;   /* the pending write ends the response */
    unsigned served_any : 1;   /* a request was parsed on this connection */
    unsigned sent_headers : 1;
    unsigned chunked_out : 1; /* the response body is chunked */
    unsigned no_body : 1;     /* HEAD, 1xx, 204, 304: the body given is dropped */
    size_t scanned;           /* bytes of the head already looked at for a line end */
    size_t lingered;
    /* request body */
    est_h1_body_t body_kind;
    uint64_t body_left; /* EST_H1_BODY_LENGTH */
    est_h1_chunked_t chunked;
    h2o_buffer_t *body;
    /* streamed request body (est_h1_body_start, body.c): the handler runs at head time */
    unsigned stream : 1;          /* this request's body is streamed, not buffered */
    unsigned stream_started : 1;  /* est_h1_body_start was called */
    unsigned stream_continue : 1; /* 100 Continue is owed before the first read */
    unsigned stream_want : 1;     /* the consumer waits for bytes: the socket is read */
    unsigned stream_final : 1;    /* the last bytes were delivered */
    uint64_t stream_limit;        /* the route's max_request_body */
    uint64_t streamed;            /* body bytes delivered so far */
    size_t stream_consume;        /* input bytes the consumer holds, consumed at proceed */
    est_h1_body_cb stream_cb;
    void *stream_data;
    h2o_timeout_entry_t body_timer; /* client_body_timeout while stream_want */
    unsigned continue_writing : 1;  /* the 100 of a streamed body is being written */
    unsigned deferred_send : 1;     /* an h2o_send came meanwhile: made once the 100 is out */
    h2o_send_state_t deferred_state;
    h2o_iovec_t *deferred_bufs;
    size_t deferred_cnt;
    /* response */
    h2o_ostream_t ostr;
    char chunk_line[24];
    char *errbuf; /* this layer's own reply (malloc), while it is written */
    est_h1_upgrade_cb upgrade_cb;
    void *upgrade_data;
    /* large and with its own constructor: last (as h2o does) */
    h2o_req_t req;
} h1_conn_t;

/* conn.c */
void h1_set_timer(h1_conn_t *conn, h2o_timeout_t *timeout, h2o_timeout_cb cb);
void h1_count_close(h1_conn_t *conn, est_close_reason_t reason);
void h1_dispose_request(h1_conn_t *conn);
void h1_close_conn(h1_conn_t *conn);
void h1_linger_close(h1_conn_t *conn);
void h1_wait_next_request(h1_conn_t *conn);
void h1_process_request(h1_conn_t *conn);
void h1_on_read(h2o_socket_t *sock, const char *err);
void h1_on_body_timeout(h2o_timeout_entry_t *entry);
h1_conn_t *h1_conn_of(h2o_req_t *req); /* NULL when `req` is not an est_h1 request */

/* body.c */
void h1_handle_body(h1_conn_t *conn);
void h1_send_too_large(h1_conn_t *conn, uint64_t limit);
void h1_on_continue_written(h2o_socket_t *sock, const char *err);
void h1_stream_input(h1_conn_t *conn); /* input arrived while the consumer wants bytes */
void h1_stream_reset(h1_conn_t *conn); /* the request is disposed: forget the stream */

/* writer.c */
void h1_send_error(h1_conn_t *conn, int status, const char *code, const char *message, est_close_reason_t reason);
void h1_on_send_timeout(h2o_timeout_entry_t *entry);
void h1_do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt, h2o_send_state_t state);

/* formatting into a buffer sized by the caller */
static inline char *put_str(char *dst, const char *s, size_t len)
{
    memcpy(dst, s, len);
    return dst + len;
}

#define PUT_LIT(dst, lit) put_str((dst), (lit), sizeof(lit) - 1)

static inline char *put_u64(char *dst, uint64_t v)
{
    char tmp[24];
    char *start = est_u64_digits(tmp + sizeof(tmp), v);
    size_t n = (size_t)(tmp + sizeof(tmp) - start);
    memcpy(dst, start, n);
    return dst + n;
}

static inline char *put_hex(char *dst, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[16];
    int n = 0;
    do {
        tmp[n++] = digits[v & 0xf];
        v >>= 4;
    } while (v != 0);
    while (n != 0)
        *dst++ = tmp[--n];
    return dst;
}

/* "HTTP/1.1 SSS " */
static inline char *put_status_line_start(char *dst, int status)
{
    dst = PUT_LIT(dst, "HTTP/1.1 ");
    if (status < 100 || status > 999)
        status = 500;
    *dst++ = (char)('0' + status / 100);
    *dst++ = (char)('0' + status / 10 % 10);
    *dst++ = (char)('0' + status % 10);
    *dst++ = ' ';
    return dst;
}

/* "Date: <IMF-fixdate>\r\n" (RFC 9110 6.6.1), from h2o's per-loop-iteration cache */
static inline char *put_date(char *dst, h2o_context_t *ctx)
{
    h2o_get_timestamp(ctx, NULL, NULL); /* refreshes the cache */
    dst = PUT_LIT(dst, "Date: ");
    dst = put_str(dst, ctx->_timestamp_cache.value->rfc1123, H2O_TIMESTR_RFC1123_LEN);
    return PUT_LIT(dst, "\r\n");
}
#endif
