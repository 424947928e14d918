/*
 * estuary - the HTTP/1.1 server connection layer (see conn.h and docs/http1.md).
 *
 * States of a connection:
 *   HEAD      waiting for (the rest of) a request head; idle while nothing of it came
 *   CONTINUE  writing "100 Continue" before the body is read
 *   BODY      reading a request body (Content-Length or chunked) into `body`
 *   HANDLING  the h2o_req_t is with the handlers; the response is written by h1_do_send; the
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
#include "h1/conn_internal.h"

#include <stdlib.h>
#include <sys/socket.h>

/* input kept while a request is handled (pipelined bytes); reading pauses beyond it */
#define BUSY_INPUT_MAX (64 * 1024)
/* the client's socket receive buffer once its request body streams (see start_request) */
#define STREAM_RCVBUF (256 * 1024)
/* bytes dropped while lingering before the connection is closed anyway */
#define LINGER_MAX (256 * 1024)

/* RFC 9113 3.4: the client connection preface */
#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN (sizeof(H2_PREFACE) - 1)


static void handle_head(h1_conn_t *conn);

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

h1_conn_t *h1_conn_of(h2o_req_t *req)
{
    return est_h1_is_h1_request(req) ? H2O_STRUCT_FROM_MEMBER(h1_conn_t, req, req) : NULL;
}

/* ---- helpers ------------------------------------------------------------------------------- */

void h1_set_timer(h1_conn_t *conn, h2o_timeout_t *timeout, h2o_timeout_cb cb)
{
    if (h2o_timeout_is_linked(&conn->timer))
        h2o_timeout_unlink(&conn->timer);
    if (timeout != NULL) {
        conn->timer.cb = cb;
        h2o_timeout_link(conn->c->ctx->loop, timeout, &conn->timer);
    }
}

void h1_count_close(h1_conn_t *conn, est_close_reason_t reason)
{
    if (conn->c->counters != NULL)
        ++conn->c->counters->closed[reason];
}


/* ---- connection lifetime ------------------------------------------------------------------- */

void h1_dispose_request(h1_conn_t *conn)
{
    if (conn->req_live) {
        conn->req_live = 0;
        h2o_dispose_request(&conn->req);
    }
    h1_stream_reset(conn);
    if (conn->body != NULL)
        h2o_buffer_dispose(&conn->body);
    conn->body = NULL;
}

/* the one exit: disposes the request (its generator is stopped, its pool freed), then closes
 * the socket (unless it was handed over) and frees the connection */
void h1_close_conn(h1_conn_t *conn)
{
    est_h1_upgrade_cb upgrade_cb = conn->upgrade_cb;
    void *upgrade_data = conn->upgrade_data;
    h1_set_timer(conn, NULL, NULL);
    h1_dispose_request(conn);
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
    h1_close_conn(H2O_STRUCT_FROM_MEMBER(h1_conn_t, timer, entry));
}

/*
 * Closes after a final reply without cutting it: a close() with unread input makes the
 * kernel send RST, which may destroy the reply before the client read it. So the write side
 * is shut down (the client sees the end of the reply), and what still comes in is read and
 * dropped, unparsed, until the client closes, LINGER_MAX bytes, or linger_timeout (the way
 * nginx's lingering_close does).
 */
void h1_linger_close(h1_conn_t *conn)
{
    int fd = h2o_socket_get_fd(conn->sock);
    if (fd < 0 || conn->c->linger_timeout == NULL || shutdown(fd, SHUT_WR) != 0) {
        h1_close_conn(conn);
        return;
    }
    conn->state = ST_LINGER;
    conn->lingered = conn->sock->input->size;
    if (conn->sock->input->size != 0)
        h2o_buffer_consume(&conn->sock->input, conn->sock->input->size);
    h1_set_timer(conn, conn->c->linger_timeout, on_close_timeout);
    h2o_socket_read_start(conn->sock, h1_on_read);
}


/* ---- reading requests ---------------------------------------------------------------------- */

static void on_idle_timeout(h2o_timeout_entry_t *entry)
{
    h1_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1_conn_t, timer, entry);
    h1_count_close(conn, EST_CLOSE_IDLE_TIMEOUT);
    h1_close_conn(conn);
}

static void on_header_timeout(h2o_timeout_entry_t *entry)
{
    h1_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1_conn_t, timer, entry);
    if (!conn->head_started) { /* a new connection that never sent a byte: nothing to answer */
        h1_count_close(conn, EST_CLOSE_HEADER_TIMEOUT);
        h1_close_conn(conn);
        return;
    }
    h1_send_error(conn, 408, "request_timeout", "the request head was not received in time", EST_CLOSE_HEADER_TIMEOUT);
}

void h1_on_body_timeout(h2o_timeout_entry_t *entry)
{
    h1_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1_conn_t, timer, entry);
    h1_send_error(conn, 408, "request_timeout", "the request body was not received in time", EST_CLOSE_BODY_TIMEOUT);
}

/* the next request: idle until its first byte (client_idle_timeout), then client_header_timeout */
void h1_wait_next_request(h1_conn_t *conn)
{
    conn->state = ST_HEAD;
    conn->head_started = 0;
    conn->scanned = 0;
    conn->sent_headers = 0;
    conn->chunked_out = 0;
    conn->no_body = 0;
    conn->final_sent = 0;
    h1_set_timer(conn, conn->c->idle_timeout, on_idle_timeout);
    if (!h2o_socket_is_reading(conn->sock))
        h2o_socket_read_start(conn->sock, h1_on_read);
    if (conn->sock->input->size != 0)
        handle_head(conn);
}

void h1_process_request(h1_conn_t *conn)
{
    conn->state = ST_HANDLING;
    h1_set_timer(conn, NULL, NULL);
    if (conn->body_kind != EST_H1_BODY_NONE && !conn->stream)
        conn->req.entity = conn->body != NULL ? h2o_iovec_init(conn->body->bytes, conn->body->size) : h2o_iovec_init("", 0);
    /* keep reading: an end of stream means the client left (h1_on_read); bounded */
    if (conn->sock->input->size >= BUSY_INPUT_MAX)
        h2o_socket_read_stop(conn->sock);
    else if (!h2o_socket_is_reading(conn->sock))
        h2o_socket_read_start(conn->sock, h1_on_read);
    h2o_process_request(&conn->req);
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
    conn->ostr.do_send = h1_do_send;
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

    if (pr->body == EST_H1_BODY_NONE || (pr->body == EST_H1_BODY_LENGTH && pr->content_length == 0)) {
        h1_process_request(conn);
        return;
    }
    uint64_t limit = conn->c->max_request_body;
    if (req->upgrade.base == NULL && conn->c->body_policy != NULL &&
        conn->c->body_policy(conn->c->body_policy_data, req, &limit)) {
        /* streamed (docs/streaming.md): the handler runs now and pulls the body; 100 Continue
         * waits for its est_h1_body_start */
        if (pr->body == EST_H1_BODY_LENGTH && pr->content_length > limit) {
            h1_send_too_large(conn, limit);
            return;
        }
        conn->stream = 1;
        conn->stream_limit = limit;
        /* h2o reads all the kernel holds in one go: a small receive buffer (which turns off
         * autotuning for this socket) caps each read, so memory stays flat (docs/streaming.md) */
        int fd = h2o_socket_get_fd(conn->sock), sz = STREAM_RCVBUF;
        if (fd >= 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
        conn->streamed = 0;
        conn->body_left = pr->content_length;
        if (pr->body == EST_H1_BODY_CHUNKED)
            est_h1_chunked_init(&conn->chunked);
        conn->stream_continue = pr->expect_continue && pr->minor_version == 1 && conn->sock->input->size == 0;
        req->timestamps.request_body_begin_at = *h2o_get_timestamp(conn->c->ctx, NULL, NULL);
        h1_process_request(conn);
        return;
    }
    switch (pr->body) {
    case EST_H1_BODY_NONE:
        break;
    case EST_H1_BODY_LENGTH:
        if (pr->content_length > conn->c->max_request_body) {
            h1_send_too_large(conn, conn->c->max_request_body);
            return;
        }
        conn->body_left = pr->content_length;
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
        h1_set_timer(conn, conn->c->send_timeout, h1_on_send_timeout);
        h2o_socket_write(conn->sock, (h2o_iovec_t *)&cont, 1, h1_on_continue_written);
        return;
    }
    conn->state = ST_BODY;
    h1_set_timer(conn, conn->c->body_timeout, h1_on_body_timeout);
    h1_handle_body(conn);
}

static void hand_over_h2(h1_conn_t *conn)
{
    est_h1_ctx_t *c = conn->c;
    h2o_socket_t *sock = conn->sock;
    struct timeval connected_at = conn->super.connected_at;
    h2o_socket_read_stop(sock);
    conn->sock = NULL; /* not closed: it goes on as HTTP/2 */
    h1_close_conn(conn);
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
        h1_set_timer(conn, conn->c->header_timeout, on_header_timeout);
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
            h1_send_error(conn, 431, "headers_too_large", "the request head is over 64 KiB", EST_CLOSE_HEADERS_TOO_LARGE);
        return;
    }
    if (ret < 0) {
        h1_send_error(conn, err.status, err.code, err.message,
                   err.status == 414 || err.status == 431 ? EST_CLOSE_HEADERS_TOO_LARGE : EST_CLOSE_BAD_REQUEST);
        return;
    }
    start_request(conn, &pr);
}

void h1_on_read(h2o_socket_t *sock, const char *err)
{
    h1_conn_t *conn = sock->data;
    if (err != NULL) {
        /* the client closed or failed: while a request is handled this is the client leaving,
         * and closing disposes the request, which cancels its upstream work */
        h1_close_conn(conn);
        return;
    }
    switch (conn->state) {
    case ST_HEAD:
        handle_head(conn);
        break;
    case ST_BODY:
        h1_handle_body(conn);
        break;
    case ST_HANDLING:
        if (conn->stream_want) {
            h1_stream_input(conn);
            break;
        }
        if (sock->input->size >= BUSY_INPUT_MAX)
            h2o_socket_read_stop(sock);
        break;
    case ST_LINGER:
        conn->lingered += sock->input->size;
        h2o_buffer_consume(&sock->input, sock->input->size);
        if (conn->lingered > LINGER_MAX)
            h1_close_conn(conn);
        break;
    default: /* HANDLING, UPGRADING, CONTINUE, CLOSING: bytes wait, bounded */
        if (sock->input->size >= BUSY_INPUT_MAX)
            h2o_socket_read_stop(sock);
        break;
    }
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
    h1_set_timer(conn, c->header_timeout, on_header_timeout);
    h2o_socket_read_start(sock, h1_on_read);
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
            h1_close_conn(conn); /* idle */
        else if (conn->req_live)
            conn->req.http1_is_persistent = 0;
    }
}