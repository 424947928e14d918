/*
 * estuary - HTTP/1.1 request bodies (see conn.h and docs/http1.md, docs/streaming.md): a
 * Content-Length or chunked body is either buffered whole before the handler runs, or, when
 * the worker's body_policy says so (proxy routes), streamed to the handler as it arrives,
 * one delivery at a time, the client not read while the consumer holds a delivery.
 */
#include "h1/conn_internal.h"

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

void h1_send_too_large(h1_conn_t *conn, uint64_t limit)
{
    char msg[96], *p = msg;
    p = PUT_LIT(p, "request body is over the limit of ");
    p = put_u64(p, limit);
    p = PUT_LIT(p, " bytes");
    *p = '\0';
    h1_send_error(conn, 413, "request_too_large", msg, EST_CLOSE_BODY_TOO_LARGE);
}

void h1_handle_body(h1_conn_t *conn)
{
    h2o_buffer_t *in = conn->sock->input;
    if (conn->body_kind == EST_H1_BODY_LENGTH) {
        size_t n = in->size < conn->body_left ? in->size : (size_t)conn->body_left;
        if (n != 0) {
            if (append_body(conn, in->bytes, n) != 0) {
                h1_send_too_large(conn, conn->c->max_request_body);
                return;
            }
            h2o_buffer_consume(&conn->sock->input, n);
            conn->body_left -= n;
            h1_set_timer(conn, conn->c->body_timeout, h1_on_body_timeout);
        }
        if (conn->body_left == 0)
            h1_process_request(conn);
        return;
    }
    /* chunked */
    if (in->size == 0)
        return;
    size_t orig = in->size, len = in->size;
    est_h1_error_t err;
    int64_t ret = est_h1_decode_chunked(&conn->chunked, in->bytes, &len, &err);
    if (ret == -1) {
        h1_send_error(conn, err.status, err.code, err.message, EST_CLOSE_BAD_REQUEST);
        return;
    }
    if (append_body(conn, in->bytes, len) != 0) {
        h1_send_too_large(conn, conn->c->max_request_body);
        return;
    }
    h1_set_timer(conn, conn->c->body_timeout, h1_on_body_timeout);
    if (ret == -2) {
        h2o_buffer_consume(&conn->sock->input, orig);
        return;
    }
    h2o_buffer_consume(&conn->sock->input, orig - (size_t)ret);
    h1_process_request(conn);
}

void h1_on_continue_written(h2o_socket_t *sock, const char *err)
{
    h1_conn_t *conn = sock->data;
    conn->writing = 0;
    if (err != NULL) {
        h1_close_conn(conn);
        return;
    }
    conn->state = ST_BODY;
    h1_set_timer(conn, conn->c->body_timeout, h1_on_body_timeout);
    h2o_socket_read_start(sock, h1_on_read);
    h1_handle_body(conn);
}

/* ---- streamed bodies ----------------------------------------------------------------------- */

static void on_stream_body_timeout(h2o_timeout_entry_t *entry)
{
    h1_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1_conn_t, body_timer, entry);
    h1_send_error(conn, 408, "request_timeout", "the request body was not received in time", EST_CLOSE_BODY_TIMEOUT);
}

static void arm_body_timer(h1_conn_t *conn)
{
    if (h2o_timeout_is_linked(&conn->body_timer))
        h2o_timeout_unlink(&conn->body_timer);
    conn->body_timer.cb = on_stream_body_timeout;
    h2o_timeout_link(conn->c->ctx->loop, conn->c->body_timeout, &conn->body_timer);
}

void h1_stream_reset(h1_conn_t *conn)
{
    if (h2o_timeout_is_linked(&conn->body_timer))
        h2o_timeout_unlink(&conn->body_timer);
    /* a delivery the consumer still held is no longer referenced (the request is gone) */
    if (conn->stream_consume != 0 && conn->sock != NULL)
        h2o_buffer_consume(&conn->sock->input, conn->stream_consume);
    conn->stream_consume = 0;
    conn->stream = conn->stream_started = conn->stream_continue = conn->stream_want = conn->stream_final = 0;
    conn->deferred_send = 0;
    conn->stream_cb = NULL;
    conn->stream_data = NULL;
}

static void on_stream_deferred(h2o_timeout_entry_t *entry)
{
    h1_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1_conn_t, body_timer, entry);
    arm_body_timer(conn);
    h1_stream_input(conn);
}

/* the consumer wants bytes: read the client (client_body_timeout between reads); bytes that
 * are already in are delivered from the loop, never from inside the consumer's call */
static void stream_want(h1_conn_t *conn)
{
    conn->stream_want = 1;
    if (!h2o_socket_is_reading(conn->sock))
        h2o_socket_read_start(conn->sock, h1_on_read);
    if (conn->sock->input->size == 0) {
        arm_body_timer(conn);
        return;
    }
    if (h2o_timeout_is_linked(&conn->body_timer))
        h2o_timeout_unlink(&conn->body_timer);
    conn->body_timer.cb = on_stream_deferred;
    h2o_timeout_link(conn->c->ctx->loop, &conn->c->ctx->zero_timeout, &conn->body_timer);
}

void h1_stream_input(h1_conn_t *conn)
{
    h2o_buffer_t *in = conn->sock->input;
    if (!conn->stream_want || in->size == 0)
        return;
    size_t n, consume;
    int final;
    if (conn->body_kind == EST_H1_BODY_LENGTH) {
        n = in->size < conn->body_left ? in->size : (size_t)conn->body_left;
        consume = n;
        final = n == conn->body_left;
    } else {
        size_t len = in->size;
        est_h1_error_t err;
        int64_t ret = est_h1_decode_chunked(&conn->chunked, in->bytes, &len, &err);
        if (ret == -1) {
            h1_send_error(conn, err.status, err.code, err.message, EST_CLOSE_BAD_REQUEST);
            return;
        }
        n = len;
        final = ret >= 0;
        consume = final ? in->size - (size_t)ret : in->size;
    }
    if (conn->streamed + n > conn->stream_limit) {
        h1_send_too_large(conn, conn->stream_limit);
        return;
    }
    conn->streamed += n;
    if (conn->body_kind == EST_H1_BODY_LENGTH)
        conn->body_left -= n;
    if (n == 0 && !final) { /* only chunk framing: nothing to hand on */
        h2o_buffer_consume(&conn->sock->input, consume);
        arm_body_timer(conn);
        return;
    }
    /* the consumer holds in->bytes[0..n) until est_h1_body_proceed: the client is not read
     * meanwhile, so the buffer does not move (and TCP pushes back on the client) */
    conn->stream_want = 0;
    conn->stream_final = final;
    conn->stream_consume = consume;
    if (h2o_timeout_is_linked(&conn->body_timer))
        h2o_timeout_unlink(&conn->body_timer);
    h2o_socket_read_stop(conn->sock);
    conn->stream_cb(conn->stream_data, in->bytes, n, final);
}

static void on_stream_continue_written(h2o_socket_t *sock, const char *err)
{
    h1_conn_t *conn = sock->data;
    conn->writing = 0;
    conn->continue_writing = 0;
    h1_set_timer(conn, NULL, NULL);
    if (err != NULL) {
        h1_close_conn(conn);
        return;
    }
    stream_want(conn);
    if (conn->deferred_send) { /* the response began while the 100 was written */
        conn->deferred_send = 0;
        h1_do_send(&conn->ostr, &conn->req, conn->deferred_bufs, conn->deferred_cnt, conn->deferred_state);
    }
}

int est_h1_body_is_streamed(h2o_req_t *req, uint64_t *length, int *expect_continue)
{
    h1_conn_t *conn = h1_conn_of(req);
    if (conn == NULL || !conn->stream || !conn->req_live)
        return 0;
    *expect_continue = conn->stream_continue;
    *length = conn->body_kind == EST_H1_BODY_LENGTH ? conn->body_left + conn->streamed : UINT64_MAX;
    return 1;
}

void est_h1_body_start(h2o_req_t *req, est_h1_body_cb cb, void *data)
{
    h1_conn_t *conn = h1_conn_of(req);
    if (conn == NULL || !conn->stream || conn->stream_started)
        return;
    conn->stream_started = 1;
    conn->stream_cb = cb;
    conn->stream_data = data;
    /* RFC 9110 10.1.1: 100 (Continue) once the body has somewhere to go (SPEC: once a backend
     * connection is ready); not when a response is already under way */
    if (conn->stream_continue && !conn->writing && !conn->sent_headers) {
        static const h2o_iovec_t cont = {H2O_STRLIT("HTTP/1.1 100 Continue\r\n\r\n")};
        conn->stream_continue = 0;
        conn->writing = 1;
        conn->continue_writing = 1;
        h1_set_timer(conn, conn->c->send_timeout, h1_on_send_timeout);
        h2o_socket_write(conn->sock, (h2o_iovec_t *)&cont, 1, on_stream_continue_written);
        return;
    }
    conn->stream_continue = 0;
    stream_want(conn);
}

void est_h1_body_proceed(h2o_req_t *req)
{
    h1_conn_t *conn = h1_conn_of(req);
    if (conn == NULL || !conn->stream || !conn->stream_started || conn->stream_want)
        return;
    if (conn->stream_consume != 0) {
        h2o_buffer_consume(&conn->sock->input, conn->stream_consume);
        conn->stream_consume = 0;
    }
    if (conn->stream_final) {
        /* the body is complete: back to watching the connection for the client leaving */
        if (!h2o_socket_is_reading(conn->sock))
            h2o_socket_read_start(conn->sock, h1_on_read);
        return;
    }
    stream_want(conn);
}
