/*
 * estuary - hedging (SPEC "Caching, coalescing and hedging"; docs/upstream.md "Hedging").
 *
 * An eligible exchange whose first attempt has no response head after the upstream's hedge
 * delay starts a hedge: a child exchange (same request, no user callbacks, no deadline of its
 * own) that picks another target / address as a retry does. The first head wins: a child's
 * head moves its connection and attempt into the parent (est_hedge_promote) before the user
 * sees on_head, so callers only ever see the winner; every other attempt is ended with its
 * connection closed (never pooled: its reply is unknown). The budget and the "auto" delay
 * are per worker (est_upstream_t.hedge).
 */
#include <stdlib.h>
#include <string.h>
#include "upstream/exchange_internal.h"

/* RFC 9110 9.2.2: idempotent methods; TRACE is left out (a gateway has no use hedging it) */
static int method_hedgeable(h2o_iovec_t m)
{
    static const char *const ok[] = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"};
    for (size_t i = 0; i != sizeof(ok) / sizeof(ok[0]); ++i)
        if (m.len == strlen(ok[i]) && memcmp(m.base, ok[i], m.len) == 0) /* methods are case-sensitive (RFC 9110 9.1) */
            return 1;
    return 0;
}

static size_t window_advance(est_hedge_state_t *s, uint64_t now)
{
    uint64_t b = now / EST_HEDGE_BUCKET_MS;
    if (b > s->bucket) {
        uint64_t n = b - s->bucket;
        if (n > EST_HEDGE_WINDOW_BUCKETS)
            n = EST_HEDGE_WINDOW_BUCKETS;
        for (uint64_t i = 1; i <= n; ++i) {
            size_t k = (size_t)((s->bucket + i) % EST_HEDGE_WINDOW_BUCKETS);
            s->first[k] = 0;
            s->hedges[k] = 0;
        }
        s->bucket = b;
    }
    return (size_t)(s->bucket % EST_HEDGE_WINDOW_BUCKETS);
}

/* hedges + 1 <= budget x first attempts, over the window */
static int budget_allows(const est_hedge_state_t *s, unsigned permille)
{
    uint64_t first = 0, hedges = 0;
    for (size_t i = 0; i != EST_HEDGE_WINDOW_BUCKETS; ++i) {
        first += s->first[i];
        hedges += s->hedges[i];
    }
    return (hedges + 1) * 1000 <= first * permille;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

void est_hedge_record_ttfb(est_upstream_t *u, uint64_t ms)
{
    est_hedge_state_t *s = u->hedge;
    if (s == NULL || u->conf->hedge == NULL || !u->conf->hedge->delay_auto)
        return;
    s->ttfb[s->ttfb_pos] = ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
    s->ttfb_pos = (s->ttfb_pos + 1) % EST_HEDGE_SAMPLES;
    if (s->num_ttfb < EST_HEDGE_SAMPLES)
        s->num_ttfb++;
    /* (perf) the p95 is recomputed every 8 samples, and as soon as there are enough */
    if (++s->since_p95 < 8 && s->num_ttfb != EST_HEDGE_MIN_SAMPLES)
        return;
    s->since_p95 = 0;
    uint32_t tmp[EST_HEDGE_SAMPLES];
    memcpy(tmp, s->ttfb, s->num_ttfb * sizeof(tmp[0]));
    qsort(tmp, s->num_ttfb, sizeof(tmp[0]), cmp_u32);
    size_t idx = (s->num_ttfb * 95 + 99) / 100; /* nearest rank */
    s->p95 = tmp[idx - 1];
}

/* the delay before the next hedge, 0 when there is none yet ("auto" without enough samples) */
static uint64_t hedge_delay(const est_upstream_t *u)
{
    const est_hedge_conf_t *hc = u->conf->hedge;
    if (!hc->delay_auto)
        return hc->delay_ms == 0 ? 1 : hc->delay_ms;
    if (u->hedge->num_ttfb < EST_HEDGE_MIN_SAMPLES)
        return 0;
    return u->hedge->p95 < 1 ? 1 : u->hedge->p95;
}

void est_hedge_first_attempt(est_exchange_t *x, uint64_t now)
{
    est_upstream_t *u = x->u;
    const est_upstream_request_t *req = x->req;
    if (u->conf->hedge == NULL || u->hedge == NULL || x->parent != NULL)
        return;
    u->hedge->first[window_advance(u->hedge, now)]++;
    if (!req->is_idempotent || !method_hedgeable(req->method) || req->body_stream || req->want_upgrade)
        return;
    uint64_t delay = hedge_delay(u);
    x->hedge_at = delay != 0 ? now + delay : 0;
}

void est_hedge_launch(est_exchange_t *x, uint64_t now, h2o_timeout_cb on_start)
{
    est_upstream_t *u = x->u;
    const est_hedge_conf_t *hc = u->conf->hedge;
    x->hedge_at = 0;
    if (hc == NULL || u->hedge == NULL || x->info.hedged >= hc->max || x->hedge_wait || x->parent != NULL)
        return;
    if (x->deadline != 0 && now >= x->deadline)
        return;
    size_t b = window_advance(u->hedge, now);
    if (!budget_allows(u->hedge, hc->budget_permille)) {
        u->stats.hedges_refused++;
        return; /* no further hedge for this exchange */
    }
    est_exchange_t *h = est_exchange_alloc(u);
    if (h == NULL)
        return;
    h->u = u;
    h->req = x->req;
    h->state = EST_X_DEFERRED;
    h->info.start_at = now;
    h->deadline = 0; /* the parent's deadline ends its hedges */
    h->is_head_method = x->is_head_method;
    h->wheel.cb = x->wheel.cb;
    h->preq.on_slot = x->preq.on_slot;
    h->preq.on_connect = x->preq.on_connect;
    /* the parent's address (when it has one) is what the hedge's pick avoids */
    if (x->pick.salen != 0) {
        h->pick.target_index = x->pick.target_index;
        h->pick.sa = x->pick.sa;
        h->pick.salen = x->pick.salen;
    }
    h->parent = x;
    h->hedge_next = x->hedges;
    x->hedges = h;
    u->active_requests++;
    u->hedge->hedges[b]++;
    x->info.hedged++;
    est_exchange_defer(h, on_start);
    if (x->info.hedged < hc->max) {
        uint64_t delay = hedge_delay(u);
        x->hedge_at = delay != 0 ? now + delay : 0;
    }
}

static void unlink_child(est_exchange_t *h)
{
    est_exchange_t **p = &h->parent->hedges;
    while (*p != NULL && *p != h)
        p = &(*p)->hedge_next;
    if (*p == h)
        *p = h->hedge_next;
    h->hedge_next = NULL;
}

void est_hedge_cancel_all(est_exchange_t *x)
{
    est_exchange_t *h;
    while ((h = x->hedges) != NULL) {
        x->hedges = h->hedge_next;
        x->u->stats.hedges_lost++;
        est_exchange_end_attempt(h, 0); /* the connection is closed */
        est_exchange_free(h);
    }
}

est_exchange_t *est_hedge_promote(est_exchange_t *h)
{
    est_exchange_t *x = h->parent;
    unlink_child(h);
    x->u->stats.hedges_won++;
    est_hedge_cancel_all(x);
    est_exchange_end_attempt(x, 0); /* the parent's own attempt: its connection is closed */
    x->hedge_wait = 0;
    x->hedge_at = 0;
    x->preq.force_new = 0;

    /* the connection, its pool slot, the address and its in-flight count */
    x->preq.conn = h->preq.conn;
    x->preq.reused = h->preq.reused;
    x->preq._has_slot = h->preq._has_slot;
    if (x->preq.conn != NULL)
        x->preq.conn->req = &x->preq;
    h->preq.conn = NULL;
    h->preq._has_slot = 0;
    x->pick = h->pick;
    x->preq.target_index = x->pick.target_index;
    memset(&h->pick, 0, sizeof(h->pick));
    /* the request head (maybe still being written) */
    x->head_buf = h->head_buf;
    x->head_is_heap = h->head_is_heap;
    h->head_buf = NULL;
    h->head_is_heap = 0;
    memcpy(x->bufs, h->bufs, sizeof(x->bufs));
    x->sent = h->sent;
    x->write_pending = h->write_pending;
    x->got_bytes = h->got_bytes;
    x->pick_mode = h->pick_mode;
    x->info.connect_ms = h->info.connect_ms;
    x->info.reused = h->info.reused;
    x->info.status = 0;
    x->info.hedge_won = 1;
    x->address_stale = 1;
    /* (tracing) the hedge's client span goes on as the exchange's */
    x->span_open = h->span_open;
    x->span_addr = h->span_addr;
    x->span_err = h->span_err;
    memcpy(x->span_id, h->span_id, sizeof(x->span_id));
    x->span_start_ns = h->span_start_ns;
    h->span_open = 0;
    x->state = h->state;
    h->parent = NULL;
    est_exchange_free(h); /* its timers are unlinked; the caller relinks the parent's */
    return x;
}

est_exchange_t *est_hedge_child_failed(est_exchange_t *h)
{
    est_exchange_t *x = h->parent;
    unlink_child(h);
    x->u->stats.hedges_failed++;
    h->parent = NULL;
    est_exchange_free(h);
    if (x->hedge_wait && x->hedges == NULL) {
        x->hedge_wait = 0;
        return x;
    }
    return NULL;
}
