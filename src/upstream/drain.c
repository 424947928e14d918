/*
 * estuary - draining the reply of a cancelled exchange (see est_drain_start).
 *
 * A client that resets its HTTP/2 stream or leaves cancels its exchange. Closing the upstream
 * connection then would make every cancelled request cost a new backend connection (a Rapid
 * Reset flood opens one per request). When the request was written whole, the reply is read
 * and discarded instead, within bounds (EST_DRAIN_MAX_BODY body bytes, response_timeout for
 * the whole drain), and the connection goes back to the pool. The drain keeps the exchange's
 * pool slot until it ends, so draining connections count against pool.max_connections.
 */
#include "common/log.h"
#include "upstream/client_internal.h"

static void on_drain_read(h2o_socket_t *sock, const char *err);
static void on_drain_timeout(h2o_timeout_entry_t *entry);
static void on_drain_deferred(h2o_timeout_entry_t *entry);
static void drain_step(est_conn_t *c);
static void drain_end(est_conn_t *c, int reusable);

void est_drain_start(est_conn_t *c, const est_h1_body_t *body, int is_head_method, size_t skip)
{
    est_upstream_t *u = c->u;
    c->req = NULL;
    c->drain_head = body == NULL;
    c->drain_is_head = is_head_method != 0;
    c->drain_bytes = 0;
    c->drain_skip = skip;
    if (body != NULL)
        c->drain_body = *body;
    h2o_linklist_insert(&u->draining, &c->drain_link);
    c->drain_timer.cb = on_drain_timeout;
    h2o_timeout_link(u->set->loop, &u->response_timeout, &c->drain_timer);
    h2o_socket_read_start(c->sock, on_drain_read);
    /* bytes already read are looked at from the loop: the canceller may still read some */
    c->drain_defer.cb = on_drain_deferred;
    h2o_timeout_link(u->set->loop, &u->set->zero_timeout, &c->drain_defer);
}

void est_drain_dispose(est_conn_t *c)
{
    if (!h2o_linklist_is_linked(&c->drain_link))
        return;
    h2o_linklist_unlink(&c->drain_link);
    if (h2o_timeout_is_linked(&c->drain_timer))
        h2o_timeout_unlink(&c->drain_timer);
    if (h2o_timeout_is_linked(&c->drain_defer))
        h2o_timeout_unlink(&c->drain_defer);
}

static void drain_end(est_conn_t *c, int reusable)
{
    est_upstream_t *u = c->u; /* the slot was taken here (before any hand-over moves c) */
    est_drain_dispose(c);
    h2o_socket_read_stop(c->sock);
    est_log_debug("upstream '%s': drained a cancelled reply (%llu body bytes), %s", u->conf->name,
                  (unsigned long long)c->drain_bytes, reusable ? "connection reused" : "connection closed");
    est_pool_put_conn(c, reusable);
    est_pool_slot_put(u);
}

static void on_drain_deferred(h2o_timeout_entry_t *entry)
{
    drain_step(H2O_STRUCT_FROM_MEMBER(est_conn_t, drain_defer, entry));
}

static void on_drain_timeout(h2o_timeout_entry_t *entry)
{
    drain_end(H2O_STRUCT_FROM_MEMBER(est_conn_t, drain_timer, entry), 0);
}

static void on_drain_read(h2o_socket_t *sock, const char *err)
{
    est_conn_t *c = sock->data;
    if (err != NULL) {
        drain_end(c, 0);
        return;
    }
    drain_step(c);
}

static void drain_step(est_conn_t *c)
{
    h2o_buffer_t **in = &c->sock->input;
    const char *err = NULL;
    if (c->drain_skip != 0) {
        h2o_buffer_consume(in, c->drain_skip <= (*in)->size ? c->drain_skip : (*in)->size);
        c->drain_skip = 0;
    }
    while (c->drain_head) {
        struct phr_header headers[EST_H1_MAX_HEADERS];
        est_h1_response_t resp;
        int r = est_h1_parse_response((*in)->bytes, (*in)->size, c->drain_is_head, headers, EST_H1_MAX_HEADERS, &resp, &err);
        if (r == -2)
            return;
        if (r == -1 || resp.status == 101 || (!resp.interim && !resp.keepalive) ||
            (resp.body_mode == EST_H1_BODY_LENGTH && resp.content_length > EST_DRAIN_MAX_BODY)) {
            drain_end(c, 0);
            return;
        }
        h2o_buffer_consume(in, (size_t)r);
        if (resp.interim)
            continue;
        est_h1_body_init(&c->drain_body, &resp);
        c->drain_head = 0;
    }
    if ((*in)->size == 0 && c->drain_body.mode != EST_H1_BODY_NONE)
        return;
    size_t decoded = 0, used = 0;
    est_h1_body_status_t st =
        est_h1_body_read(&c->drain_body, (*in)->bytes != NULL ? (*in)->bytes : (char *)"", (*in)->size, 0, &decoded, &used, &err);
    c->drain_bytes += decoded;
    if (st == EST_H1_BODY_ERROR || c->drain_body.mode == EST_H1_BODY_CLOSE || c->drain_bytes > EST_DRAIN_MAX_BODY) {
        drain_end(c, 0);
        return;
    }
    h2o_buffer_consume(in, used);
    if (st == EST_H1_BODY_DONE)
        drain_end(c, (*in)->size == 0);
}
