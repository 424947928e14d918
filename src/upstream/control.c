/*
 * estuary - what the user may do to a running exchange (client.h): cancel it, pause its body
 * or hold delivered bytes, release them, steal the socket of an upgraded exchange. Ending by
 * the user goes through finish_by_user: the connection goes to a drain when the rest of the
 * reply can be read cheaply (drain.c), else it is closed; then the one exit,
 * est_exchange_exit (exchange.c). Resuming lives in client.c, beside the body reader it
 * restarts.
 */
#include "upstream/exchange_internal.h"

/* the user ends the exchange (cancel, socket stolen): freed now, or when its callback returns */
static void finish_by_user(est_exchange_t *x)
{
    if (est_exchange_may_drain(x)) {
        /* the connection and the exchange's pool slot go to the drain */
        est_conn_t *c = x->preq.conn;
        /* input bytes the decoder has passed but the user may still read (held, or being
         * delivered: cancel from inside on_body) are consumed by the drain, from the loop */
        size_t skip = x->held + x->delivering;
        x->held = 0;
        x->preq.conn = NULL;
        x->preq._has_slot = 0;
        est_drain_start(c, x->state == EST_X_BODY ? &x->body : NULL, x->is_head_method, skip);
    }
    est_exchange_exit(x, 0);
}

void est_exchange_cancel(est_exchange_t *x)
{
    if (x->dead || x->state == EST_X_DONE)
        return; /* already ending (e.g. cancel from inside on_error) */
    finish_by_user(x);
}

void est_exchange_pause(est_exchange_t *x)
{
    if (x->paused || x->state == EST_X_DONE)
        return;
    x->paused = 1;
    if (x->state == EST_X_BODY && x->preq.conn != NULL) {
        h2o_socket_read_stop(x->preq.conn->sock);
        if (h2o_timeout_is_linked(&x->timer))
            h2o_timeout_unlink(&x->timer);
        if (h2o_timeout_is_linked(&x->defer_timer))
            h2o_timeout_unlink(&x->defer_timer);
    }
}

void est_exchange_hold(est_exchange_t *x)
{
    if (x->in_cb == 0 || x->state != EST_X_BODY || x->preq.conn == NULL)
        return;
    x->hold_requested = 1;
    est_exchange_pause(x);
}

void est_exchange_release(est_exchange_t *x)
{
    if (x->held == 0 || x->state != EST_X_BODY || x->preq.conn == NULL)
        return;
    est_input_consume(&x->preq.conn->sock->input, x->held);
    x->held = 0;
    est_exchange_resume(x);
}

h2o_socket_t *est_exchange_steal_socket(est_exchange_t *x)
{
    if (x->state != EST_X_UPGRADED || x->preq.conn == NULL || x->dead)
        return NULL;
    est_conn_t *c = x->preq.conn;
    h2o_socket_t *sock = c->sock;
    h2o_socket_read_stop(sock);
    sock->data = NULL;
    c->sock = NULL;
    x->u->stats.conns_open--;
    x->preq.conn = NULL;
    est_pool_close_conn(c); /* frees the struct only */
    finish_by_user(x);
    return sock;
}

