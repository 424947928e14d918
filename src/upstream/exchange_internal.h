/*
 * estuary - the exchange's private structure, shared by client.c (the exchange: API,
 * lifecycle, attempts) and its unit tests. pool.c, balancer.c and drain.c never see it:
 * they work on connections, pool requests (est_pool_req_t) and picks (est_pick_t).
 */
#ifndef EST_UPSTREAM_EXCHANGE_INTERNAL_H
#define EST_UPSTREAM_EXCHANGE_INTERNAL_H

#include "upstream/client_internal.h"

typedef enum {
    EST_X_DEFERRED,   /* waiting for the start / a wake-up on the zero timer */
    EST_X_RESOLVING,  /* DNS query running */
    EST_X_QUEUED,     /* waiting for a pool slot */
    EST_X_CONNECTING, /* TCP connect or TLS handshake */
    EST_X_HEAD,       /* request written (or being written), waiting for the head */
    EST_X_BODY,       /* head delivered, reading the body */
    EST_X_UPGRADED,   /* 101 delivered, waiting for est_exchange_steal_socket */
    EST_X_BACKOFF,    /* waiting before the next attempt */
    EST_X_DONE,
} est_x_state_t;

/*
 * (memory) An exchange exists from the request's arrival to its end, and under load most of
 * them wait in the pool's queue (S4: ~4,700 of 5,000), so it is kept small (~740 bytes): the
 * request head lives in the connection (est_conn_t.head_inline), the previous attempt's
 * address is x->pick.sa itself until the next pick overwrites it, and the 0/1 flags are bytes.
 */
struct est_exchange {
    est_upstream_t *u;
    const est_upstream_request_t *req;
    est_exchange_cb_t cb;
    void *data;
    est_x_state_t state;
    est_exchange_info_t info;

    est_pool_req_t preq; /* the connection (preq.conn) and the pool slot of the attempt */
    uint64_t backoff_at;  /* absolute, while EST_X_BACKOFF */
    uint64_t connect_start;

    /* target / address of the current attempt; between attempts (and until the next pick)
     * pick.sa is the previous attempt's address, which EST_PICK_RETRY / SAME avoid / reuse */
    est_pick_t pick;
    unsigned in_cb; /* re-entrancy: inside a user callback */
    est_dns_query_t *dnsq;

    /* request head: head_buf is conn->head_inline, or a malloc'd buffer for a larger head
     * (head_is_heap); it is written once per attempt, when the connection is ready */
    char *head_buf;
    h2o_iovec_t bufs[4];
    /* streamed request body (req->body_stream) */
    uint64_t deadline;     /* req->deadline, moved to after the body once it is written */
    uint64_t body_written; /* bytes given to est_exchange_write_body */
    char chunk_line[20];   /* chunk-size line of the write in flight */

    /* reply */
    est_h1_body_t body; /* framing and decoder state */
    size_t held; /* (est_exchange_hold) input bytes delivered, consumed at est_exchange_release */
    size_t delivering; /* input bytes of the on_body call running, consumed when it returns */

    /* flags, 0 or 1 (pick_mode: EST_PICK_*) */
    unsigned char sent;             /* request bytes handed to a socket in this attempt */
    unsigned char write_pending;    /* h2o_socket_write not completed yet */
    unsigned char got_bytes;        /* response bytes seen in this attempt */
    unsigned char transparent;      /* next attempt is a transparent retry (not counted) */
    unsigned char counted_retry;    /* counted in u->active_retries */
    unsigned char pick_mode;        /* EST_PICK_* for the current attempt */
    unsigned char head_is_heap;
    unsigned char address_stale;    /* (perf) info.address not formatted yet for sa (done in est_exchange_info) */
    unsigned char is_head_method;
    unsigned char keepalive;
    unsigned char paused;
    unsigned char hold_requested;   /* (est_exchange_hold) asked during the current on_body */
    unsigned char in_head_cb;       /* inside on_head (not 101): the head is still in the input */
    unsigned char dead;             /* cancelled / finished while inside a callback; freed when it returns */
    unsigned char body_started;     /* on_send_ready was called: the body is consumed, no retry */
    unsigned char body_done;        /* the final body bytes were written */
    unsigned char body_ready;       /* on_send_ready called, est_exchange_write_body not yet */
    /* (tracing, req->trace) the attempt's client span: its id (the traceparent's parent-id
     * sent), start, whether it is open, whether an address was picked, why it failed
     * (est_uerr_t + 1, 0: no failure seen) */
    unsigned char span_open, span_addr, span_err;
    uint8_t span_id[8];
    uint64_t span_start_ns;

    h2o_timeout_entry_t timer;       /* phase: queue wait, connect, response */
    h2o_timeout_entry_t defer_timer; /* zero timeout: start, wake-up, resume */
    est_wheel_entry_t wheel;         /* deadline, backoff and the hedge delay */
    /* (hedging, hedge.c) a parent exchange runs its hedges as child exchanges (`hedges`,
     * linked by hedge_next) until one head arrives; a child has `parent` set, no user
     * callbacks and no deadline of its own (the parent's ends it) */
    est_exchange_t *parent, *hedges, *hedge_next;
    uint64_t hedge_at;              /* absolute: when the next hedge is due, 0 = none */
    unsigned char hedge_wait;       /* the parent's own attempt failed: it waits for its hedges */
    est_exchange_t *free_next; /* (perf) u->free_exchanges */
};

/* --- hedge.c --- */

/* Is x eligible for hedging at its first attempt (configured, idempotent method, no streamed
 * body, no upgrade)? Sets x->hedge_at when it is and counts the first attempt in the budget. */
void est_hedge_first_attempt(est_exchange_t *x, uint64_t now);
/* x's hedge is due: starts one child exchange (within max, budget and deadline) */
void est_hedge_launch(est_exchange_t *x, uint64_t now, h2o_timeout_cb on_start);
/* Cancels every hedge of x, closing their connections, counted as `lost` */
void est_hedge_cancel_all(est_exchange_t *x);
/* Child h's head came first: ends the parent's own attempt (its connection closed), moves h's
 * connection and attempt into the parent and frees h. Returns the parent. */
est_exchange_t *est_hedge_promote(est_exchange_t *h);
/* Child h's attempt failed (its attempt ended already): unlinks and frees it. Returns its
 * parent when that was waiting (hedge_wait) and has no hedge left, else NULL. */
est_exchange_t *est_hedge_child_failed(est_exchange_t *h);
/* A time to first byte of a first attempt, for "delay": "auto" */
void est_hedge_record_ttfb(est_upstream_t *u, uint64_t ms);

/* --- exchange.c: the object and its resources --- */

/* A zeroed exchange of `u`, recycled from u's free list when it has one; NULL when out of memory */
est_exchange_t *est_exchange_alloc(est_upstream_t *u);
/* Releases its timers, wheel entry, queue place, head buffer and counts; recycles or frees it */
void est_exchange_free(est_exchange_t *x);
/* Frees u's recycled exchanges (est_upstream_set_destroy) */
void est_exchange_free_recycled(est_upstream_t *u);
/* Ends the current attempt: timers, DNS query, queue place, in-flight count, connection
 * (pooled when `reusable`) and slot, head buffer. Calls nobody back. */
void est_exchange_end_attempt(est_exchange_t *x, int reusable);
/* (tracing) reports the open client span of the attempt (est_exchange_end_attempt does) */
void est_exchange_end_span(est_exchange_t *x);
/* Frees a malloc'd request head (an inline one lives in the connection) */
void est_exchange_release_head(est_exchange_t *x);
/* "ip:port" of the current (or last) attempt's address, formatted when first read */
const char *est_exchange_address(est_exchange_t *x);
/* May the connection of an exchange being cancelled go to a drain (drain.c)? See exchange.c. */
int est_exchange_may_drain(const est_exchange_t *x);
/* Runs `cb` (on x->defer_timer) from the loop, at once */
void est_exchange_defer(est_exchange_t *x, h2o_timeout_cb cb);
/* (Re)links the phase timer x->timer on `t` with `cb` */
void est_exchange_link_timer(est_exchange_t *x, h2o_timeout_t *t, h2o_timeout_cb cb);
/* The exchange using connection c (through its pool request), or NULL */
est_exchange_t *est_conn_exchange(est_conn_t *c);
/* Consumes n input bytes in the middle of a body, keeping the buffer's memory (see exchange.c) */
void est_input_consume(h2o_buffer_t **buf, size_t n);

/*
 * The one exit of an exchange: ends its attempt (the connection pooled when `reusable`) and
 * frees it, now or, when a user callback is running, as that callback returns.
 */
void est_exchange_exit(est_exchange_t *x, int reusable);

/* Every user callback runs between est_exchange_user_call and est_exchange_user_return; the
 * latter is 1 when the exchange ended meanwhile (cancelled, socket stolen): it is freed then,
 * and gone. */
static inline void est_exchange_user_call(est_exchange_t *x)
{
    x->in_cb++;
}

static inline int est_exchange_user_return(est_exchange_t *x)
{
    x->in_cb--;
    if (!x->dead)
        return 0;
    est_exchange_free(x);
    return 1;
}

#endif
