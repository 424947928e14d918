/*
 * estuary - the HTTP/1.1 response writer (see conn.h and docs/http1.md): the handlers'
 * responses (status line, Date, framing and fields formatted by hand, one writev per
 * h2o_send), this layer's own JSON error replies, and the 101 of an upgrade.
 */
#include "h1/conn_internal.h"

#include <stdlib.h>
#include <sys/ioctl.h>

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

static void on_error_written(h2o_socket_t *sock, const char *err)
{
    h1_conn_t *conn = sock->data;
    conn->writing = 0;
    free(conn->errbuf);
    conn->errbuf = NULL;
    if (err != NULL)
        h1_close_conn(conn);
    else
        h1_linger_close(conn);
}

void h1_on_send_timeout(h2o_timeout_entry_t *entry)
{
    h1_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1_conn_t, timer, entry);
    h1_count_close(conn, EST_CLOSE_SEND_TIMEOUT);
    h1_close_conn(conn);
}

/*
 * This layer's own reply to a request it refuses: estuary's JSON error with
 * `Connection: close`, written directly (no h2o_req_t, no handler); nothing more of the
 * connection is parsed, and it is closed once the reply is out. When a response was already
 * started (or a write is pending) the connection is only closed.
 */
void h1_send_error(h1_conn_t *conn, int status, const char *code, const char *message, est_close_reason_t reason)
{
    h1_count_close(conn, reason);
    h2o_socket_read_stop(conn->sock);
    if (conn->writing || conn->sent_headers) {
        h1_close_conn(conn);
        return;
    }
    char rid[EST_H1_REQUEST_ID_MAX + 1];
    size_t rid_len = 0;
    if (conn->c->request_id != NULL)
        rid_len = conn->c->request_id(conn->c->request_id_data, conn->req_live ? &conn->req : NULL, rid);
    rid[rid_len] = '\0';
    if (conn->state == ST_HANDLING) /* a streamed body failed: the handler lets go first */
        h1_dispose_request(conn);
    size_t body_len = 0;
    char *body = est_error_body(status, code, message, rid_len != 0 ? rid : NULL, &body_len);
    if (body == NULL) {
        h1_close_conn(conn);
        return;
    }
    const char *reason_phrase = reason_of(status);
    const char *server = conn->c->server_name;
    size_t server_len = server != NULL ? strlen(server) : 0;
    size_t cap = 256 + strlen(reason_phrase) + server_len + rid_len + body_len;
    char *buf = malloc(cap), *dst = buf;
    if (buf == NULL) {
        free(body);
        h1_close_conn(conn);
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
    h1_set_timer(conn, conn->c->send_timeout, h1_on_send_timeout);
    h2o_iovec_t vec = h2o_iovec_init(buf, (size_t)(dst - buf));
    h2o_socket_write(conn->sock, &vec, 1, on_error_written);
}


/* unread input, in the socket's buffer or still in the kernel's */
static int has_unread_input(h1_conn_t *conn)
{
    int n = 0, fd = h2o_socket_get_fd(conn->sock);
    return conn->sock->input->size != 0 || (fd >= 0 && ioctl(fd, FIONREAD, &n) == 0 && n > 0);
}

static void finish_response(h1_conn_t *conn)
{
    if (conn->stream && !conn->stream_final)
        conn->req.http1_is_persistent = 0; /* the rest of the body was never read */
    conn->req.timestamps.response_end_at = *h2o_get_timestamp(conn->c->ctx, NULL, NULL);
    if (!conn->req.http1_is_persistent || conn->c->_shutdown) {
        h1_dispose_request(conn);
        if (has_unread_input(conn))
            h1_linger_close(conn);
        else
            h1_close_conn(conn);
        return;
    }
    h1_dispose_request(conn);
    h1_wait_next_request(conn);
}

static void on_write_done(h2o_socket_t *sock, const char *err)
{
    h1_conn_t *conn = sock->data;
    conn->writing = 0;
    h1_set_timer(conn, NULL, NULL);
    if (err != NULL) {
        h1_close_conn(conn);
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
void h1_do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *inbufs, size_t inbufcnt, h2o_send_state_t state)
{
    h1_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1_conn_t, ostr, self);
    if (conn->continue_writing) {
        /* the 100 of a streamed body is being written: this send follows it (body.c); h2o
         * keeps the buffers valid until proceed */
        h2o_iovec_t *copy = h2o_mem_alloc_pool(&req->pool, sizeof(*copy) * (inbufcnt + 1));
        memcpy(copy, inbufs, sizeof(*copy) * inbufcnt);
        conn->deferred_bufs = copy;
        conn->deferred_cnt = inbufcnt;
        conn->deferred_state = state;
        conn->deferred_send = 1;
        return;
    }
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
        h1_set_timer(conn, &conn->c->ctx->zero_timeout, on_deferred_done);
        return;
    }
    h1_set_timer(conn, conn->c->send_timeout, h1_on_send_timeout);
    h2o_socket_write(conn->sock, vec, n, on_write_done);
}

/* ---- upgrade ------------------------------------------------------------------------------- */

static void on_upgrade_written(h2o_socket_t *sock, const char *err)
{
    h1_conn_t *conn = sock->data;
    conn->writing = 0;
    if (err != NULL) {
        h1_close_conn(conn); /* calls the upgrade callback with NULL */
        return;
    }
    est_h1_upgrade_cb cb = conn->upgrade_cb;
    void *data = conn->upgrade_data;
    conn->upgrade_cb = NULL;
    h2o_socket_read_stop(sock);
    conn->sock = NULL;
    sock->data = NULL;
    h1_close_conn(conn);
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
    h1_set_timer(conn, conn->c->send_timeout, h1_on_send_timeout);
    h2o_iovec_t vec = h2o_iovec_init(buf, (size_t)(dst - buf));
    h2o_socket_write(conn->sock, &vec, 1, on_upgrade_written);
    return 0;
}
