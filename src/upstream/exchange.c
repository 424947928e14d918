/*
 * estuary - the exchange object and its resources (see exchange_internal.h): allocation and
 * recycling, the request head buffer, the address name, its timers, and how an attempt gives
 * its resources back (timers, DNS query, queue place, connection and slot, or the
 * connection to a drain). Nothing here calls the user or decides a retry: that is client.c.
 */
#include <stdlib.h>
#include <string.h>
#include "common/sockaddr.h"
#include "upstream/exchange_internal.h"

/* recycled exchanges stay poisoned under ASan, so a use after "free" is still reported */
#include "common/asan.h"

/* the exchange using connection c, or NULL */
est_exchange_t *est_conn_exchange(est_conn_t *c)
{
    return c != NULL && c->req != NULL ? H2O_STRUCT_FROM_MEMBER(est_exchange_t, preq, c->req) : NULL;
}

/* ---------------------------------------------------------------- exchange lifecycle */

void est_exchange_free_recycled(est_upstream_t *u)
{
    while (u->free_exchanges != NULL) {
        est_exchange_t *x = u->free_exchanges;
        UNPOISON(x, sizeof(*x));
        u->free_exchanges = x->free_next;
        u->num_free_exchanges--;
        free(x);
    }
}

/* (perf) a zeroed exchange, recycled from u's free list when it has one */
est_exchange_t *est_exchange_alloc(est_upstream_t *u)
{
    est_exchange_t *x = u->free_exchanges;
    if (x == NULL)
        return calloc(1, sizeof(*x));
    UNPOISON(x, sizeof(*x));
    u->free_exchanges = x->free_next;
    u->num_free_exchanges--;
    memset(x, 0, sizeof(*x));
    return x;
}

void est_exchange_release_head(est_exchange_t *x)
{
    if (x->head_is_heap)
        free(x->head_buf);
    x->head_buf = NULL;
    x->head_is_heap = 0;
}

/* (perf) info.address is formatted only when someone reads it (access log, debug log, an
 * error), and through a one-entry cache per upstream: most attempts go to the same address */
const char *est_exchange_address(est_exchange_t *x)
{
    if (x->address_stale) {
        est_upstream_t *u = x->u;
        _Static_assert(sizeof(u->addr_cache) == sizeof(x->info.address), "same size");
        if (u->addr_cache[0] == '\0' || !est_sockaddr_equal(&u->addr_cache_sa, &x->pick.sa)) {
            u->addr_cache[0] = '\0';
            est_sockaddr_format(&x->pick.sa, u->addr_cache, sizeof(u->addr_cache));
            u->addr_cache_sa = x->pick.sa;
        }
        memcpy(x->info.address, u->addr_cache, sizeof(x->info.address));
        x->address_stale = 0;
    }
    return x->info.address;
}

const est_exchange_info_t *est_exchange_info(const est_exchange_t *x)
{
    est_exchange_address((est_exchange_t *)x); /* x is never a const object: exchanges are allocated */
    return &x->info;
}

/*
 * Can the connection of a cancelled exchange be kept? When the request was written whole and
 * the reply so far allows another request after it (keep-alive, a known and small enough
 * remaining length), the rest of the reply is drained in the background (drain.c).
 */
int est_exchange_may_drain(const est_exchange_t *x)
{
    const est_conn_t *c = x->preq.conn;
    /* inside on_head the head is still in the input buffer (the fields point into it) */
    if (c == NULL || c->state != EST_CONN_ACTIVE || !x->preq._has_slot || !x->sent || x->write_pending || x->in_head_cb)
        return 0;
    if (x->req->body_stream && !x->body_done) /* the request is not whole: the connection is out of sync */
        return 0;
    /* a connection the pool would not keep anyway is not worth reading for */
    const est_upstream_conf_t *conf = c->u->conf;
    if (conf->pool.max_idle == 0 || c->requests + 1 >= conf->pool.max_requests)
        return 0;
    if (x->state == EST_X_HEAD)
        return 1;
    if (x->state != EST_X_BODY || !x->keepalive)
        return 0;
    return x->body.mode == EST_H1_BODY_CHUNKED || x->body.mode == EST_H1_BODY_NONE ||
           (x->body.mode == EST_H1_BODY_LENGTH && x->body.left <= EST_DRAIN_MAX_BODY);
}

/*
 * (perf, streaming) Consumes n bytes of a socket's input in the middle of a body. When that
 * empties the buffer it is rewound, not freed (h2o_buffer_consume frees an emptied buffer):
 * otherwise every read of a streamed body allocated a fresh buffer and re-grew it by doubling
 * (copying at each step) up to the size of one socket read, and the allocator gave the memory
 * back to the kernel in between (one madvise per MiB, page faults on every refill). The
 * buffer is bounded by one socket read (see pool.c) and is freed at the end of the body.
 */
void est_input_consume(h2o_buffer_t **buf, size_t n)
{
    h2o_buffer_t *b = *buf;
    if (n != 0 && n == b->size && b->bytes != NULL && b->_fd == -1) {
        b->size = 0;
        b->bytes = b->_buf;
        return;
    }
    h2o_buffer_consume(buf, n);
}

void est_exchange_free(est_exchange_t *x)
{
    if (h2o_timeout_is_linked(&x->timer))
        h2o_timeout_unlink(&x->timer);
    if (h2o_timeout_is_linked(&x->defer_timer))
        h2o_timeout_unlink(&x->defer_timer);
    est_wheel_unlink(&x->wheel);
    est_pool_cancel_connect(x->u, &x->preq);
    est_exchange_release_head(x);
    est_upstream_t *u = x->u;
    u->active_requests--;
    if (x->counted_retry)
        u->active_retries--;
    if (u->num_free_exchanges < EST_EXCHANGE_FREELIST_MAX) {
        x->free_next = u->free_exchanges;
        u->free_exchanges = x;
        u->num_free_exchanges++;
        POISON(x, sizeof(*x));
    } else {
        free(x);
    }
}

/*
 * (tracing) Reports the attempt's client span: the status of its head if one came, why it
 * failed (span_err), else "cancelled" (the caller ended it before a head).
 */
void est_exchange_end_span(est_exchange_t *x)
{
    x->span_open = 0;
    est_trace_ctx_t *t = x->req->trace;
    if (!est_trace_sampled(t))
        return;
    const char *err = x->span_err != 0 ? est_uerr_name((est_uerr_t)(x->span_err - 1)) : x->info.status == 0 ? "cancelled" : NULL;
    est_trace_record_client(t, x->span_id, x->span_start_ns, est_trace_now_ns(), x->req->method.base, x->req->method.len,
                            x->u->conf->name, x->span_addr ? est_exchange_address(x) : "", x->info.status, x->info.attempts, err);
}

/* Ends the current attempt: timers, DNS query, queue place, connection (pooled when
 * `reusable`), slot. Calls nobody back. */
void est_exchange_end_attempt(est_exchange_t *x, int reusable)
{
    if (x->span_open)
        est_exchange_end_span(x);
    if (h2o_timeout_is_linked(&x->timer))
        h2o_timeout_unlink(&x->timer);
    if (h2o_timeout_is_linked(&x->defer_timer))
        h2o_timeout_unlink(&x->defer_timer);
    if (x->dnsq != NULL) {
        est_dns_cancel(x->dnsq);
        x->dnsq = NULL;
    }
    est_balance_done(x->u, &x->pick);
    est_pool_release(x->u, &x->preq, reusable);
    est_exchange_release_head(x);
}

void est_exchange_defer(est_exchange_t *x, h2o_timeout_cb cb)
{
    if (h2o_timeout_is_linked(&x->defer_timer))
        h2o_timeout_unlink(&x->defer_timer);
    x->defer_timer.cb = cb;
    h2o_timeout_link(x->u->set->loop, &x->u->set->zero_timeout, &x->defer_timer);
}

void est_exchange_link_timer(est_exchange_t *x, h2o_timeout_t *t, h2o_timeout_cb cb)
{
    if (h2o_timeout_is_linked(&x->timer))
        h2o_timeout_unlink(&x->timer);
    x->timer.cb = cb;
    h2o_timeout_link(x->u->set->loop, t, &x->timer);
}

/*
 * The one exit of an exchange: ends its attempt (the connection pooled when `reusable`) and
 * frees it, now or, when a user callback is running, as that callback returns (est_exchange_user_return).
 */
void est_exchange_exit(est_exchange_t *x, int reusable)
{
    if (x->hedges != NULL)
        est_hedge_cancel_all(x); /* (hedging) the exchange ends: so do its hedges */
    est_exchange_end_attempt(x, reusable);
    est_wheel_unlink(&x->wheel);
    x->state = EST_X_DONE;
    if (x->in_cb)
        x->dead = 1;
    else
        est_exchange_free(x);
}
