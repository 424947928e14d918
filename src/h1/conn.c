/*
 * estuary - the HTTP/1.1 server connection layer (see conn.h and docs/http1.md).
 *
 * States of a connection:
 *   HEAD      waiting for (the rest of) a request head; idle while nothing of it came
 *   CONTINUE  writing "100 Continue" before the body is read
 *   BODY      reading a request body (Content-Length or chunked) into `body`
 *   HANDLING  the h2o_req_t is with the handlers; the response is written by do_send; the
 *             socket is still read (bounded) to see the client leave
 *   UPGRADING writing the 101 of est_h1_upgrade
 *   CLOSING   writing an error reply of this layer, then lingering
 *   LINGER    write side shut down, input drained and dropped until EOF or linger_timeout
 *
 * The request head is copied into the request's pool once parsed and consumed from the
 * socket's input at once, so the socket may go on reading while the request is handled (the
 * request points into its pool, never into sock->input), and sock->input only ever holds
 * bytes that are not part of the current request.
 */
#include "h1/conn.h"

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "common/jsonutil.h"
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
    /* response */
    h2o_ostream_t ostr;
    char chunk_line[24];
    char *errbuf; /* this layer's own reply (malloc), while it is written */
    est_h1_upgrade_cb upgrade_cb;
    void *upgrade_data;
    /* large and with its own constructor: last (as h2o does) */
    h2o_req_t req;
} h1_conn_t;

static void on_read(h2o_socket_t *sock, const char *err);
static void handle_head(h1_conn_t *conn);
static void handle_body(h1_conn_t *conn);
static void do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt, h2o_send_state_t state);

/* ---- h2o_conn_t callbacks --------------------------------------------------------------------- */

static socklen_t get_sockname(h2o_conn_t *_conn, struct sockaddr *sa)
{
    h1_conn_t *conn = (h1_conn_t *)_conn;
    return conn->sock != NULL ? h2o_socket_getsockname(conn->sock, sa) : 0;
}

static socklen_t get_peername(h2o_conn_t *_conn, struct sockaddr *sa)
{
    h1_conn_t *conn = (h1_conn_t *)_conn;
    return conn->sock != NULL ? h2o_socket_getpeername(conn->sock, sa) : 0;
}

static h2o_socket_t *get_socket(h2o_conn_t *_conn)
{
    return ((h1_conn_t *)_conn)->sock;
}

static const h2o_conn_callbacks_t h1_callbacks = {
    .get_sockname = get_sockname,
    .get_peername = get_peername,
    .get_socket = get_socket,
};

int est_h1_is_h1_request(h2o_req_t *req)
{
    return req->conn != NULL && req->conn->callbacks == &h1_callbacks;
}

/* ---- helpers ------------------------------------------------------------------------------- */

static void set_timer(h1_conn_t *conn, h2o_timeout_t *timeout, h2o_timeout_cb cb)
{
    if (h2o_timeout_is_linked(&conn->timer))
        h2o_timeout_unlink(&conn->timer);
    if (timeout != NULL) {
        conn->timer.cb = cb;
        h2o_timeout_link(conn->c->ctx->loop, timeout, &conn->timer);
    }
}

static void count_close(h1_conn_t *conn, est_close_reason_t reason)
{
    if (conn->c->counters != NULL)
        ++conn->c->counters->closed[reason];
}

static char *put_str(char *dst, const char *s, size_t len)
{
    memcpy(dst, s, len);
    return dst + len;
}

#define PUT_LIT(dst, lit) put_str((dst), (lit), sizeof(lit) - 1)

static char *put_u64(char *dst, uint64_t v)
{
    char tmp[24];
    char *start = est_u64_digits(tmp + sizeof(tmp), v);
    size_t n = (size_t)(tmp + sizeof(tmp) - start);
    memcpy(dst, start, n);
    return dst + n;
}

static char *put_hex(char *dst, uint64_t v)
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
static char *put_status_line_start(char *dst, int status)
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
static char *put_date(char *dst, h2o_context_t *ctx)
{
    h2o_get_timestamp(ctx, NULL, NULL); /* refreshes the cache */
    dst = PUT_LIT(dst, "Date: ");
    dst = put_str(dst, ctx->_timestamp_cache.value->rfc1123, H2O_TIMESTR_RFC1123_LEN);
    return PUT_LIT(dst, "\r\n");
}

static const char *reason_of(int status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 417:
        return "Expectation Failed";
    case 431:
        return "Request Header Fields Too Large";
    case 501:
        return "Not Implemented";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Error";
    }
}

/* ---- connection lifetime ------------------------------------------------------------------- */

static void dispose_request(h1_conn_t *conn)
{
    if (conn->req_live) {
        conn->req_live = 0;
        h2o_dispose_request(&conn->req);
    }
    if (conn->body != NULL)
        h2o_buffer_dispose(&conn->body);
    conn->body = NULL;
}

/* the one exit: disposes the request (its generator is stopped, its pool freed), then closes
 * the socket (unless it was handed over) and frees the connection */
static void close_conn(h1_conn_t *conn)
{
    est_h1_upgrade_cb upgrade_cb = conn->upgrade_cb;
    void *upgrade_data = conn->upgrade_data;
    set_timer(conn, NULL, NULL);
    dispose_request(conn);
    if (conn->sock != NULL) {
        conn->sock->data = NULL;
        h2o_socket_close(conn->sock);
    }
    free(conn->errbuf);
    h2o_linklist_unlink(&conn->link);
    free(conn);
    if (upgrade_cb != NULL)
        upgrade_cb(upgrade_data, NULL, 0);
}

static void on_close_timeout(h2o_timeout_entry_t *entry)
{
    close_conn(H2O_STRUCT_FROM_MEMBER(h1_conn_t, timer, entry));
}

/*
 * Closes after a final reply without cutting it: a close() with unread input makes the
 * kernel send RST, which may destroy the reply before the client read it. So the write side
 * is shut down (the client sees the end of the reply), and what still comes in is read and
 * dropped, unparsed, until the client closes, LINGER_MAX bytes, or linger_timeout (the way
 * nginx's lingering_close does).
 */
static void linger_close(h1_conn_t *conn)
{
    int fd = h2o_socket_get_fd(conn->sock);
    if (fd < 0 || conn->c->linger_timeout == NULL || shutdown(fd, SHUT_WR) != 0) {
        close_conn(conn);
        return;
    }
    conn->state = ST_LINGER;
    conn->lingered = conn->sock->input->size;
    if (conn->sock->input->size != 0)
        h2o_buffer_consume(&conn->sock->input, conn->sock->input->size);
    set_timer(conn, conn->c->linger_timeout, on_close_timeout);
    h2o_socket_read_start(conn->sock, on_read);
}

static void on_error_written(h2o_socket_t *sock, const char *err)
{
    h1_conn_t *conn = sock->data;
    conn->writing = 0;
    free(conn->errbuf);
    conn->errbuf = NULL;
    if (err != NULL)
        close_conn(conn);
    else
        linger_close(conn);
}

static void on_send_timeout(h2o_timeout_entry_t *entry)
{
    h1_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1_conn_t, timer, entry);
    count_close(conn, EST_CLOSE_SEND_TIMEOUT);
    close_conn(conn);
}

/*
 * This layer's own reply to a request it refuses: estuary's JSON error with
 * `Connection: close`, written directly (no h2o_req_t, no handler); nothing more of the
 * connection is parsed, and it is closed once the reply is out. When a response was already
 * started (or a write is pending) the connection is only closed.
 */
static void send_error(h1_conn_t *conn, int status, const char *code, const char *message, est_close_reason_t reason)
{
    count_close(conn, reason);
    h2o_socket_read_stop(conn->sock);
    if (conn->writing || conn->sent_headers) {
        close_conn(conn);
        return;
    }
    char rid[EST_H1_REQUEST_ID_MAX + 1];
    size_t rid_len = 0;
    if (conn->c->request_id != NULL)
        rid_len = conn->c->request_id(conn->c->request_id_data, conn->req_live ? &conn->req : NULL, rid);
    rid[rid_len] = '\0';
    size_t body_len = 0;
    char *body = est_error_body(status, code, message, rid_len != 0 ? rid : NULL, &body_len);
    if (body == NULL) {
        close_conn(conn);
        return;
    }
    const char *reason_phrase = reason_of(status);
    const char *server = conn->c->server_name;
    size_t server_len = server != NULL ? strlen(server) : 0;
    size_t cap = 256 + strlen(reason_phrase) + server_len + rid_len + body_len;
    char *buf = malloc(cap), *dst = buf;
    if (buf == NULL) {
        free(body);
        close_conn(conn);
        return;
    }
    dst = put_status_line_start(dst, status);
    dst = put_str(dst, reason_phrase, strlen(reason_phrase));
    dst = PUT_LIT(dst, "\r\n");
    dst = put_date(dst, conn->c->ctx);
    if (server_len != 0) {
        dst = PUT_LIT(dst, "Server: ");
        dst = put_str(dst, server, server_len);
        dst = PUT_LIT(dst, "\r\n");
    }
    if (rid_len != 0) {
        dst = PUT_LIT(dst, "x-request-id: ");
        dst = put_str(dst, rid, rid_len);
        dst = PUT_LIT(dst, "\r\n");
    }
    dst = PUT_LIT(dst, "Content-Type: application/json\r\nConnection: close\r\nContent-Length: ");
    dst = put_u64(dst, body_len);
    dst = PUT_LIT(dst, "\r\n\r\n");
    dst = put_str(dst, body, body_len);
    free(body);
    conn->errbuf = buf;
    conn->state = ST_CLOSING;
    conn->writing = 1;
    set_timer(conn, conn->c->send_timeout, on_send_timeout);
    h2o_iovec_t vec = h2o_iovec_init(buf, (size_t)(dst - buf));
    h2o_socket_write(conn->sock, &vec, 1, on_error_written);
}

/* ---- reading requests ---------------------------------------------------------------------- */

static void on_idle_timeout(h2o_timeout_entry_t *entry)
{
    h1_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1_conn_t, timer, entry);
    count_close(conn, EST_CLOSE_IDLE_TIMEOUT);
    close_conn(conn);
}

static void on_header_timeout(h2o_timeout_entry_t *entry)
{
    h1_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1_conn_t, timer, entry);
    if (!conn->head_started) { /* a new connection that never sent a byte: nothing to answer */
        count_close(conn, EST_CLOSE_HEADER_TIMEOUT);
        close_conn(conn);
        return;
    }
    send_error(conn, 408, "request_timeout", "the request head was not received in time", EST_CLOSE_HEADER_TIMEOUT);
}

static void on_body_timeout(h2o_timeout_entry_t *entry)
{
    h1_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1_conn_t, timer, entry);
    send_error(conn, 408, "request_timeout", "the request body was not received in time", EST_CLOSE_BODY_TIMEOUT);
}

/* the next request: idle until its first byte (client_idle_timeout), then client_header_timeout */
static void wait_next_request(h1_conn_t *conn)
{
    conn->state = ST_HEAD;
    conn->head_started = 0;
    conn->scanned = 0;
    conn->sent_headers = 0;
    conn->chunked_out = 0;
    conn->no_body = 0;
    conn->final_sent = 0;
    set_timer(conn, conn->c->idle_timeout, on_idle_timeout);
    if (!h2o_socket_is_reading(conn->sock))
        h2o_socket_read_start(conn->sock, on_read);
    if (conn->sock->input->size != 0)
        handle_head(conn);
}

static void process_request(h1_conn_t *conn)
{
    conn->state = ST_HANDLING;
    set_timer(conn, NULL, NULL);
    if (conn->body_kind != EST_H1_BODY_NONE)
        conn->req.entity = conn->body != NULL ? h2o_iovec_init(conn->body->bytes, conn->body->size) : h2o_iovec_init("", 0);
    /* keep reading: an end of stream means the client left (on_read); bounded */
    if (conn->sock->input->size >= BUSY_INPUT_MAX)
        h2o_socket_read_stop(conn->sock);
    else if (!h2o_socket_is_reading(conn->sock))
        h2o_socket_read_start(conn->sock, on_read);
    h2o_process_request(&conn->req);
}

static int append_body(h1_conn_t *conn, const char *bytes, size_t len)
{
    if (len == 0)
        return 0;
    if (conn->body == NULL)
        h2o_buffer_init(&conn->body, &h2o_socket_buffer_prototype);
    if ((uint64_t)conn->body->size + len > conn->c->max_request_body)
        return -1;
    h2o_iovec_t dst = h2o_buffer_reserve(&conn->body, len);
    if (dst.base == NULL)
        return -1;
    memcpy(dst.base, bytes, len);
    conn->body->size += len;
    return 0;
}

static void send_too_large(h1_conn_t *conn)
{
    char msg[96], *p = msg;
    p = PUT_LIT(p, "request body is over the limit of ");
    p = put_u64(p, conn->c->max_request_body);
    p = PUT_LIT(p, " bytes");
    *p = '\0';
    send_error(conn, 413, "request_too_large", msg, EST_CLOSE_BODY_TOO_LARGE);
}

static void handle_body(h1_conn_t *conn)
{
    h2o_buffer_t *in = conn->sock->input;
    if (conn->body_kind == EST_H1_BODY_LENGTH) {
        size_t n = in->size < conn->body_left ? in->size : (size_t)conn->body_left;
        if (n != 0) {
            if (append_body(conn, in->bytes, n) != 0) {
                send_too_large(conn);
                return;
            }
            h2o_buffer_consume(&conn->sock->input, n);
            conn->body_left -= n;
            set_timer(conn, conn->c->body_timeout, on_body_timeout);
        }
        if (conn->body_left == 0)
            process_request(conn);
        return;
    }
    /* chunked */
    if (in->size == 0)
        return;
    size_t orig = in->size, len = in->size;
    est_h1_error_t err;
    int64_t ret = est_h1_decode_chunked(&conn->chunked, in->bytes, &len, &err);
    if (ret == -1) {
        send_error(conn, err.status, err.code, err.message, EST_CLOSE_BAD_REQUEST);
        return;
    }
    if (append_body(conn, in->bytes, len) != 0) {
        send_too_large(conn);
        return;
    }
    set_timer(conn, conn->c->body_timeout, on_body_timeout);
    if (ret == -2) {
        h2o_buffer_consume(&conn->sock->input, orig);
        return;
    }
    h2o_buffer_consume(&conn->sock->input, orig - (size_t)ret);
    process_request(conn);
}

static void on_continue_written(h2o_socket_t *sock, const char *err)
{
    h1_conn_t *conn = sock->data;
    conn->writing = 0;
    if (err != NULL) {
        close_conn(conn);
        return;
    }
    conn->state = ST_BODY;
    set_timer(conn, conn->c->body_timeout, on_body_timeout);
    h2o_socket_read_start(sock, on_read);
    handle_body(conn);
}

static h2o_iovec_t rebase(const char *copy, const char *orig, const char *p, size_t len)
{
    return h2o_iovec_init(p != NULL ? copy + (p - orig) : NULL, len);
}

/* a parsed head: builds the h2o_req_t from a copy of it in the request's pool */
static void start_request(h1_conn_t *conn, const est_h1_request_t *pr)
{
    h2o_req_t *req = &conn->req;
    const char *orig = conn->sock->input->bytes;
    h2o_init_request(req, &conn->super, NULL);
    conn->req_live = 1;
    conn->served_any = 1;
    req->_ostr_top = &conn->ostr;
    conn->ostr.do_send = do_send;
    req->timestamps.request_begin_at = *h2o_get_timestamp(conn->c->ctx, NULL, NULL);

    char *copy = h2o_mem_alloc_pool(&req->pool, pr->head_len);
    memcpy(copy, orig, pr->head_len);
    req->input.method = rebase(copy, orig, pr->method, pr->method_len);
    req->input.path = rebase(copy, orig, pr->path, pr->path_len);
    if (pr->authority != NULL)
        req->input.authority = rebase(copy, orig, pr->authority, pr->authority_len);
    req->input.scheme = conn->sock->ssl != NULL ? &H2O_URL_SCHEME_HTTPS : &H2O_URL_SCHEME_HTTP;
    req->version = 0x100 | (pr->minor_version != 0);

    /* fields: as libh2o does, Host (-> authority), Content-Length and Transfer-Encoding (the
     * framing is ours), Expect and Upgrade (-> req->upgrade) are not in req->headers;
     * Connection is, so that the forwarding code can drop the fields it names */
    h2o_iovec_t upgrade = {NULL, 0};
    if (pr->num_fields != 0)
        h2o_vector_reserve(&req->pool, &req->headers, pr->num_fields);
    for (size_t i = 0; i != pr->num_fields; ++i) {
        const est_h1_field_t *f = pr->fields + i;
        h2o_iovec_t name = rebase(copy, orig, f->name, f->name_len);
        h2o_iovec_t value = rebase(copy, orig, f->value, f->value_len);
        h2o_strtolower(name.base, name.len);
        const h2o_token_t *t = h2o_lookup_token(name.base, name.len);
        if (t != NULL) {
            if (t == H2O_TOKEN_HOST || t == H2O_TOKEN_CONTENT_LENGTH || t == H2O_TOKEN_TRANSFER_ENCODING || t == H2O_TOKEN_EXPECT)
                continue;
            if (t == H2O_TOKEN_UPGRADE) {
                upgrade = value;
                continue;
            }
            h2o_add_header(&req->pool, &req->headers, t, NULL, value.base, value.len);
        } else {
            h2o_add_header_by_str(&req->pool, &req->headers, name.base, name.len, 0, NULL, value.base, value.len);
        }
    }
    /* Upgrade (RFC 9110 7.8) only with "upgrade" among the Connection options; h2c (RFC 7540
     * 3.2, removed by RFC 9113) is ignored: the request is answered in HTTP/1.1 */
    if (pr->upgrade && upgrade.base != NULL && !h2o_lcstris(upgrade.base, upgrade.len, H2O_STRLIT("h2c")))
        req->upgrade = upgrade;
    req->http1_is_persistent = pr->keep_alive && !conn->c->_shutdown && !conn->c->ctx->shutdown_requested;

    h2o_buffer_consume(&conn->sock->input, pr->head_len);
    conn->scanned = 0;
    conn->body_kind = pr->body;
    conn->body = NULL;

    switch (pr->body) {
    case EST_H1_BODY_NONE:
        process_request(conn);
        return;
    case EST_H1_BODY_LENGTH:
        if (pr->content_length > conn->c->max_request_body) {
            send_too_large(conn);
            return;
        }
        conn->body_left = pr->content_length;
        if (conn->body_left == 0) {
            process_request(conn);
            return;
        }
        break;
    case EST_H1_BODY_CHUNKED:
        est_h1_chunked_init(&conn->chunked);
        break;
    }
    req->timestamps.request_body_begin_at = *h2o_get_timestamp(conn->c->ctx, NULL, NULL);
    /* RFC 9110 10.1.1: 100 (Continue) before the body is read, never to an HTTP/1.0 client */
    if (pr->expect_continue && pr->minor_version == 1 && conn->sock->input->size == 0) {
        static const h2o_iovec_t cont = {H2O_STRLIT("HTTP/1.1 100 Continue\r\n\r\n")};
        conn->state = ST_CONTINUE;
        conn->writing = 1;
        h2o_socket_read_stop(conn->sock);
        set_timer(conn, conn->c->send_timeout, on_send_timeout);
        h2o_socket_write(conn->sock, (h2o_iovec_t *)&cont, 1, on_continue_written);
        return;
    }
    conn->state = ST_BODY;
    set_timer(conn, conn->c->body_timeout, on_body_timeout);
    handle_body(conn);
}

static void hand_over_h2(h1_conn_t *conn)
{
    est_h1_ctx_t *c = conn->c;
    h2o_socket_t *sock = conn->sock;
    struct timeval connected_at = conn->super.connected_at;
    h2o_socket_read_stop(sock);
    conn->sock = NULL; /* not closed: it goes on as HTTP/2 */
    close_conn(conn);
    c->accept_h2(c->accept_h2_data, sock, connected_at);
}

/* whether the head in `in` is worth parsing again: a line ended since the last look, or a
 * size limit may have been crossed (the parser answers 414/431 then); bounds the re-parsing
 * of a head that trickles in */
static int head_worth_parsing(h1_conn_t *conn, h2o_buffer_t *in)
{
    size_t from = conn->scanned;
    conn->scanned = in->size;
    if (memchr(in->bytes + from, '\n', in->size - from) != NULL)
        return 1;
    if (in->size > EST_H1_MAX_HEAD)
        return 1;
    return in->size > EST_H1_MAX_TARGET && in->size / 4096 != from / 4096;
}

static void handle_head(h1_conn_t *conn)
{
    h2o_buffer_t *in = conn->sock->input;
    if (!conn->head_started) {
        /* RFC 9112 2.2: empty lines before a request line are ignored; they do not start a
         * request (an idle connection stays idle) */
        size_t skip = 0;
        while (skip < in->size && (in->bytes[skip] == '\n' || (in->bytes[skip] == '\r' && skip + 1 < in->size && in->bytes[skip + 1] == '\n')))
            skip += in->bytes[skip] == '\n' ? 1 : 2;
        if (skip != 0)
            h2o_buffer_consume(&conn->sock->input, skip);
        in = conn->sock->input;
        if (in->size == 0 || (in->size == 1 && in->bytes[0] == '\r'))
            return;
    }
    if (in->size == 0)
        return;
    if (!conn->head_started) {
        conn->head_started = 1;
        set_timer(conn, conn->c->header_timeout, on_header_timeout);
    }
    /* prior-knowledge HTTP/2 on a plain connection (RFC 9113 3.3): only as its first bytes */
    if (!conn->served_any && conn->sock->ssl == NULL && conn->c->accept_h2 != NULL) {
        size_t n = in->size < H2_PREFACE_LEN ? in->size : H2_PREFACE_LEN;
        if (memcmp(in->bytes, H2_PREFACE, n) == 0) {
            if (n == H2_PREFACE_LEN)
                hand_over_h2(conn);
            return;
        }
    }
    if (!head_worth_parsing(conn, in))
        return;
    est_h1_request_t pr;
    est_h1_error_t err;
    int ret = est_h1_parse_request(in->bytes, in->size, &pr, &err);
    if (ret == -2) {
        if (in->size > EST_H1_MAX_HEAD) /* the parser says 431 before this; never buffer more */
            send_error(conn, 431, "headers_too_large", "the request head is over 64 KiB", EST_CLOSE_HEADERS_TOO_LARGE);
        return;
    }
    if (ret < 0) {
        send_error(conn, err.status, err.code, err.message,
                   err.status == 414 || err.status == 431 ? EST_CLOSE_HEADERS_TOO_LARGE : EST_CLOSE_BAD_REQUEST);
        return;
    }
    start_request(conn, &pr);
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    h1_conn_t *conn = sock->data;
    if (err != NULL) {
        /* the client closed or failed: while a request is handled this is the client leaving,
         * and closing disposes the request, which cancels its upstream work */
        close_conn(conn);
        return;
    }
    switch (conn->state) {
    case ST_HEAD:
        handle_head(conn);
        break;
    case ST_BODY:
        handle_body(conn);
        break;
    case ST_LINGER:
        conn->lingered += sock->input->size;
        h2o_buffer_consume(&sock->input, sock->input->size);
        if (conn->lingered > LINGER_MAX)
            close_conn(conn);
        break;
    default: /* HANDLING, UPGRADING, CONTINUE, CLOSING: bytes wait, bounded */
        if (sock->input->size >= BUSY_INPUT_MAX)
            h2o_socket_read_stop(sock);
        break;
    }
}

/* ---- writing responses --------------------------------------------------------------------- */

/* unread input, in the socket's buffer or still in the kernel's */
static int has_unread_input(h1_conn_t *conn)
{
    int n = 0, fd = h2o_socket_get_fd(conn->sock);
    return conn->sock->input->size != 0 || (fd >= 0 && ioctl(fd, FIONREAD, &n) == 0 && n > 0);
}

static void finish_response(h1_conn_t *conn)
{
    conn->req.timestamps.response_end_at = *h2o_get_timestamp(conn->c->ctx, NULL, NULL);
    if (!conn->req.http1_is_persistent || conn->c->_shutdown) {
        dispose_request(conn);
        if (has_unread_input(conn))
            linger_close(conn);
        else
            close_conn(conn);
        return;
    }
    dispose_request(conn);
    wait_next_request(conn);
}

static void on_write_done(h2o_socket_t *sock, const char *err)
{
    h1_conn_t *conn = sock->data;
    conn->writing = 0;
    set_timer(conn, NULL, NULL);
    if (err != NULL) {
        close_conn(conn);
        return;
    }
    if (conn->final_sent)
        finish_response(conn);
    else
        h2o_proceed_response(&conn->req);
}

static void on_deferred_done(h2o_timeout_entry_t *entry)
{
    h1_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1_conn_t, timer, entry);
    on_write_done(conn->sock, NULL);
}

static int status_has_no_body(int status)
{
    return status < 200 || status == 204 || status == 304;
}

/* status line, Date, the framing fields, the response's own fields, CRLF; into the pool */
static h2o_iovec_t flatten_head(h1_conn_t *conn)
{
    h2o_req_t *req = &conn->req;
    int status = req->res.status;
    const char *reason = req->res.reason != NULL ? req->res.reason : "";
    size_t reason_len = strlen(reason);
    int is_head = req->input.method.len == 4 && memcmp(req->input.method.base, "HEAD", 4) == 0;

    conn->no_body = is_head || status_has_no_body(status);
    int has_length = req->res.content_length != SIZE_MAX && status >= 200 && status != 204;
    if (!has_length && !status_has_no_body(status)) {
        if (req->version >= 0x101)
            conn->chunked_out = !is_head; /* RFC 9112 7.1 */
        else if (!is_head)
            req->http1_is_persistent = 0; /* HTTP/1.0: the body ends with the connection */
    }
    if (conn->c->_shutdown)
        req->http1_is_persistent = 0;

    size_t cap = sizeof("HTTP/1.1 000 \r\n") + reason_len + sizeof("Date: \r\n") + H2O_TIMESTR_RFC1123_LEN +
                 sizeof("Connection: keep-alive\r\n") + sizeof("Content-Length: \r\n") + 20 +
                 sizeof("Transfer-Encoding: chunked\r\n") + 2;
    for (size_t i = 0; i != req->res.headers.size; ++i)
        cap += req->res.headers.entries[i].name->len + req->res.headers.entries[i].value.len + 4;
    char *buf = h2o_mem_alloc_pool(&req->pool, cap), *dst = buf;

    dst = put_status_line_start(dst, status);
    dst = put_str(dst, reason, reason_len);
    dst = PUT_LIT(dst, "\r\n");
    dst = put_date(dst, conn->c->ctx);
    if (!req->http1_is_persistent)
        dst = PUT_LIT(dst, "Connection: close\r\n");
    else if (req->version < 0x101)
        dst = PUT_LIT(dst, "Connection: keep-alive\r\n"); /* RFC 9112 9.3: HTTP/1.0 persistence is opt-in */
    if (has_length) {
        dst = PUT_LIT(dst, "Content-Length: ");
        dst = put_u64(dst, req->res.content_length);
        dst = PUT_LIT(dst, "\r\n");
    } else if (conn->chunked_out) {
        dst = PUT_LIT(dst, "Transfer-Encoding: chunked\r\n");
    }
    for (size_t i = 0; i != req->res.headers.size; ++i) {
        const h2o_header_t *h = req->res.headers.entries + i;
        dst = put_str(dst, h->name->base, h->name->len);
        *dst++ = ':';
        *dst++ = ' ';
        dst = put_str(dst, h->value.base, h->value.len);
        *dst++ = '\r';
        *dst++ = '\n';
    }
    *dst++ = '\r';
    *dst++ = '\n';
    return h2o_iovec_init(buf, (size_t)(dst - buf));
}

/* the final ostream: one writev per h2o_send, h2o_proceed_response once it is written */
static void do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *inbufs, size_t inbufcnt, h2o_send_state_t state)
{
    h1_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1_conn_t, ostr, self);
    h2o_iovec_t smallvec[8], *vec = smallvec;
    size_t n = 0;
    if (inbufcnt + 3 > sizeof(smallvec) / sizeof(smallvec[0]))
        vec = h2o_mem_alloc_pool(&req->pool, sizeof(*vec) * (inbufcnt + 3));

    if (!conn->sent_headers) {
        req->timestamps.response_start_at = *h2o_get_timestamp(conn->c->ctx, NULL, NULL);
        vec[n++] = flatten_head(conn);
        conn->sent_headers = 1;
    }
    int is_final = !h2o_send_state_is_in_progress(state);
    if (state == H2O_SEND_STATE_ERROR)
        req->http1_is_persistent = 0; /* the client must see a broken response, not a short one */
    if (!conn->no_body) {
        size_t len = 0;
        for (size_t i = 0; i != inbufcnt; ++i)
            len += inbufs[i].len;
        if (conn->chunked_out && len != 0) {
            char *p = put_hex(conn->chunk_line, len);
            p = PUT_LIT(p, "\r\n");
            vec[n++] = h2o_iovec_init(conn->chunk_line, (size_t)(p - conn->chunk_line));
        }
        for (size_t i = 0; i != inbufcnt; ++i)
            if (inbufs[i].len != 0)
                vec[n++] = inbufs[i];
        req->bytes_sent += len;
        if (conn->chunked_out) {
            if (state == H2O_SEND_STATE_FINAL)
                vec[n++] = len != 0 ? h2o_iovec_init(H2O_STRLIT("\r\n0\r\n\r\n")) : h2o_iovec_init(H2O_STRLIT("0\r\n\r\n"));
            else if (len != 0)
                vec[n++] = h2o_iovec_init(H2O_STRLIT("\r\n"));
        }
    }
    conn->final_sent = is_final;
    conn->writing = 1;
    if (n == 0) { /* nothing to write: complete on the next loop iteration, never re-entrantly */
        set_timer(conn, &conn->c->ctx->zero_timeout, on_deferred_done);
        return;
    }
    set_timer(conn, conn->c->send_timeout, on_send_timeout);
    h2o_socket_write(conn->sock, vec, n, on_write_done);
}

/* ---- upgrade ------------------------------------------------------------------------------- */

static void on_upgrade_written(h2o_socket_t *sock, const char *err)
{
    h1_conn_t *conn = sock->data;
    conn->writing = 0;
    if (err != NULL) {
        close_conn(conn); /* calls the upgrade callback with NULL */
        return;
    }
    est_h1_upgrade_cb cb = conn->upgrade_cb;
    void *data = conn->upgrade_data;
    conn->upgrade_cb = NULL;
    h2o_socket_read_stop(sock);
    conn->sock = NULL;
    sock->data = NULL;
    close_conn(conn);
    cb(data, sock, 0);
}

int est_h1_upgrade(h2o_req_t *req, est_h1_upgrade_cb cb, void *data)
{
    if (!est_h1_is_h1_request(req))
        return -1;
    h1_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1_conn_t, req, req);
    conn->upgrade_cb = cb;
    conn->upgrade_data = data;
    conn->state = ST_UPGRADING;
    size_t cap = sizeof("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n") + sizeof("Date: \r\n") +
                 H2O_TIMESTR_RFC1123_LEN;
    for (size_t i = 0; i != req->res.headers.size; ++i)
        cap += req->res.headers.entries[i].name->len + req->res.headers.entries[i].value.len + 4;
    char *buf = h2o_mem_alloc_pool(&req->pool, cap), *dst = buf;
    dst = PUT_LIT(dst, "HTTP/1.1 101 Switching Protocols\r\n");
    dst = put_date(dst, conn->c->ctx);
    dst = PUT_LIT(dst, "Connection: upgrade\r\n");
    for (size_t i = 0; i != req->res.headers.size; ++i) {
        const h2o_header_t *h = req->res.headers.entries + i;
        dst = put_str(dst, h->name->base, h->name->len);
        *dst++ = ':';
        *dst++ = ' ';
        dst = put_str(dst, h->value.base, h->value.len);
        *dst++ = '\r';
        *dst++ = '\n';
    }
    *dst++ = '\r';
    *dst++ = '\n';
    conn->sent_headers = 1;
    conn->writing = 1;
    set_timer(conn, conn->c->send_timeout, on_send_timeout);
    h2o_iovec_t vec = h2o_iovec_init(buf, (size_t)(dst - buf));
    h2o_socket_write(conn->sock, &vec, 1, on_upgrade_written);
    return 0;
}

/* ---- context ------------------------------------------------------------------------------- */

void est_h1_ctx_init(est_h1_ctx_t *c)
{
    h2o_linklist_init_anchor(&c->_conns);
    c->_shutdown = 0;
}

void est_h1_accept(est_h1_ctx_t *c, h2o_socket_t *sock, struct timeval connected_at)
{
    h1_conn_t *conn = (h1_conn_t *)h2o_create_connection(sizeof(*conn), c->ctx, c->hosts, connected_at, &h1_callbacks);
    memset((char *)conn + sizeof(conn->super), 0, offsetof(h1_conn_t, req) - sizeof(conn->super));
    conn->sock = sock;
    conn->c = c;
    sock->data = conn;
    h2o_linklist_insert(&c->_conns, &conn->link);
    conn->state = ST_HEAD;
    /* a new connection gets client_header_timeout for its first byte (an idle keep-alive
     * connection gets client_idle_timeout) */
    set_timer(conn, c->header_timeout, on_header_timeout);
    h2o_socket_read_start(sock, on_read);
    if (sock->input->size != 0)
        handle_head(conn);
}

void est_h1_shutdown(est_h1_ctx_t *c)
{
    c->_shutdown = 1;
    h2o_linklist_t *n = c->_conns.next;
    while (n != &c->_conns) {
        h1_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1_conn_t, link, n);
        n = n->next;
        if (conn->state == ST_HEAD && !conn->head_started)
            close_conn(conn); /* idle */
        else if (conn->req_live)
            conn->req.http1_is_persistent = 0;
    }
}
