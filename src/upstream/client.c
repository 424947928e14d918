/*
 * estuary - upstream HTTP/1.1 client: exchanges, retries, timers (see client.h).
 *
 * Built on h2o's socket layer rather than h2o_http1client (no body pause, one io_timeout
 * per ctx, no pool limits): h2o_socket_connect / write / read_start, phr_parse_response for
 * the head, phr_decode_chunked for chunked bodies.
 *
 * Timers. h2o_timeout_t has one fixed duration, so:
 * - per upstream: connect_timeout (queue wait, TCP connect + TLS handshake), response_timeout
 *   (head after the request was written; each body read), idle_timeout (pool.c);
 * - per set: a 0 ms timeout (deferred starts, wake-ups, resume) and a tick timeout of
 *   EST_WHEEL_TICK_MS driving a "wheel": a list of entries with absolute expiries (request
 *   deadline, backoff before a retry). The tick is linked only while the list is non-empty;
 *   each tick fires the expired entries, so these fire up to one tick late.
 * Each exchange has one phase timer (x->timer), one deferral entry and one wheel entry.
 * The request deadline bounds the attempts (up to on_head); with deadline_covers_body it
 * also bounds the body. Idle sockets closed by est_upstream_set_destroy are freed by the
 * loop's next iteration (h2o evloop), so run the loop once before h2o_evloop_destroy.
 *
 * Retries (SPEC "retry"): attempts count every attempt; a failed attempt is retried when its
 * reason is in retry.on (connect_failure also covers connect timeouts and TLS handshake
 * failures), attempts remain, the method allows it (non-idempotent: only when nothing was
 * sent) and the backoff wait ends before the deadline. A reply whose status is listed in
 * retry.statuses is discarded (connection closed) and retried under the same conditions;
 * when they fail, that reply is delivered. Nothing is retried after on_head. A pooled
 * connection that fails before any response byte is retried once more on a fresh connection
 * without counting an attempt (idempotent requests, or when nothing was sent).
 * A retry also needs the retry budget (EST_RETRY_BUDGET_*: concurrent retries at most 20% of
 * the upstream's live exchanges, at least 3), and goes to another target / address without
 * moving the round robin (balancer.c). Connect verdicts feed passive health (balancer.c).
 *
 * Re-entrancy: user callbacks run with x->in_cb raised; est_exchange_cancel inside one
 * cleans up at once but defers the free (x->dead) until the callback returns.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "common/log.h"
#include "upstream/client_internal.h"
#include "upstream/dns_cache.h"

/* recycled exchanges stay poisoned under ASan, so a use after "free" is still reported */
#include "common/asan.h"

#define MAX_HEAD_SIZE (64 * 1024)
#define MAX_HEADERS 128

static void on_tick(h2o_timeout_entry_t *entry);
static void on_wheel(est_wheel_entry_t *e);
static void arm_wheel(est_exchange_t *x);
static void defer(est_exchange_t *x, h2o_timeout_cb cb);
static void on_deferred_start(h2o_timeout_entry_t *entry);
static void on_wake(h2o_timeout_entry_t *entry);
static void on_resume_deferred(h2o_timeout_entry_t *entry);
static void on_queue_timeout(h2o_timeout_entry_t *entry);
static void on_connect_timeout(h2o_timeout_entry_t *entry);
static void on_response_timeout(h2o_timeout_entry_t *entry);
static void begin_attempt(est_exchange_t *x);
static void on_dns(void *data, est_dns_status_t status, est_dns_result_t *result);
static void on_resolved(est_exchange_t *x, size_t ti, est_dns_result_t *res);
static void schedule_retry(est_exchange_t *x, uint64_t wait);
static void acquire_conn(est_exchange_t *x);
static void send_request(est_exchange_t *x);
static void on_write_done(h2o_socket_t *sock, const char *err);
static void on_head_read(h2o_socket_t *sock, const char *err);
static void on_body_read(h2o_socket_t *sock, const char *err);
static int process_body(est_exchange_t *x, int eof);
static int deliver(est_exchange_t *x, const char *bytes, size_t len, int final, size_t consume, int reusable);
static void attempt_failed(est_exchange_t *x, est_uerr_t err, const char *msg);
static void fail_after_head(est_exchange_t *x, est_uerr_t err, const char *msg);
static void end_attempt(est_exchange_t *x, int reusable);
static void finish_error(est_exchange_t *x, est_uerr_t err, const char *msg);
static void abort_exchange(est_exchange_t *x);
static void free_exchange(est_exchange_t *x);
static int may_retry(est_exchange_t *x, est_uerr_t err, int status, uint64_t *wait);

static const char *const uerr_names[] = {"none",    "dns",     "connect_failure", "connect_timeout", "tls",
                                         "reset",   "timeout", "bad_reply",       "overloaded",      "deadline"};

const char *est_uerr_name(est_uerr_t e)
{
    return (unsigned)e < sizeof(uerr_names) / sizeof(uerr_names[0]) ? uerr_names[e] : "unknown";
}

int est_uerr_is_timeout(est_uerr_t e)
{
    return e == EST_UERR_CONNECT_TIMEOUT || e == EST_UERR_TIMEOUT || e == EST_UERR_DEADLINE;
}

/* ---------------------------------------------------------------- wheel */

void est_wheel_link(est_upstream_set_t *set, est_wheel_entry_t *e, uint64_t at)
{
    est_wheel_unlink(e);
    if (set->wheel_count == 0) /* idle wheel: ticks up to now count as looked at */
        set->wheel_tick = h2o_now(set->loop) / EST_WHEEL_TICK_MS;
    uint64_t tick = at / EST_WHEEL_TICK_MS + (at % EST_WHEEL_TICK_MS != 0); /* due when that tick is looked at */
    if (tick <= set->wheel_tick)
        tick = set->wheel_tick + 1; /* due already: at the next tick */
    e->at = at;
    e->_set = set;
    h2o_linklist_insert(&set->wheel[tick & (EST_WHEEL_SLOTS - 1)], &e->_link);
    ++set->wheel_count;
    if (!h2o_timeout_is_linked(&set->tick_entry))
        h2o_timeout_link(set->loop, &set->tick_timeout, &set->tick_entry);
}

void est_wheel_unlink(est_wheel_entry_t *e)
{
    if (h2o_linklist_is_linked(&e->_link))
        h2o_linklist_unlink(&e->_link);
    if (e->_set != NULL) {
        --e->_set->wheel_count;
        e->_set = NULL;
    }
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    est_upstream_set_t *set = H2O_STRUCT_FROM_MEMBER(est_upstream_set_t, tick_entry, entry);
    uint64_t now = h2o_now(set->loop), now_tick = now / EST_WHEEL_TICK_MS;
    h2o_linklist_t expired;
    h2o_linklist_init_anchor(&expired);
    if (now_tick > set->wheel_tick) {
        /* the slots of the ticks that passed (each slot once when a revolution or more passed) */
        uint64_t from = now_tick - set->wheel_tick >= EST_WHEEL_SLOTS ? now_tick - EST_WHEEL_SLOTS + 1 : set->wheel_tick + 1;
        for (uint64_t t = from; t <= now_tick; ++t) {
            h2o_linklist_t *slot = &set->wheel[t & (EST_WHEEL_SLOTS - 1)];
            for (h2o_linklist_t *l = slot->next; l != slot;) {
                est_wheel_entry_t *e = H2O_STRUCT_FROM_MEMBER(est_wheel_entry_t, _link, l);
                l = l->next;
                if (e->at <= now) { /* else: a later revolution's */
                    est_wheel_unlink(e);
                    h2o_linklist_insert(&expired, &e->_link);
                }
            }
        }
        set->wheel_tick = now_tick;
    }
    /* callbacks may unlink (or free) other expired entries: always pop the first */
    while (!h2o_linklist_is_empty(&expired)) {
        est_wheel_entry_t *e = H2O_STRUCT_FROM_MEMBER(est_wheel_entry_t, _link, expired.next);
        h2o_linklist_unlink(&e->_link);
        e->cb(e);
    }
    if (set->wheel_count != 0 && !h2o_timeout_is_linked(&set->tick_entry))
        h2o_timeout_link(set->loop, &set->tick_timeout, &set->tick_entry);
}

/* ---------------------------------------------------------------- set */

est_upstream_set_t *est_upstream_set_create(h2o_loop_t *loop, est_dns_t *dns, const est_config_t *conf)
{
    est_upstream_set_t *set = calloc(1, sizeof(*set));
    if (set == NULL)
        return NULL;
    set->loop = loop;
    set->dns = dns;
    set->conf = conf;
    set->seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)set;
    h2o_timeout_init(loop, &set->zero_timeout, 0);
    h2o_timeout_init(loop, &set->tick_timeout, EST_WHEEL_TICK_MS);
    set->tick_entry.cb = on_tick;
    for (size_t i = 0; i != EST_WHEEL_SLOTS; ++i)
        h2o_linklist_init_anchor(&set->wheel[i]);
    if ((set->upstreams = calloc(conf->num_upstreams ? conf->num_upstreams : 1, sizeof(*set->upstreams))) == NULL)
        goto Error;
    for (size_t i = 0; i != conf->num_upstreams; ++i) {
        est_upstream_t *u = &set->upstreams[i];
        char *err = NULL;
        u->set = set;
        u->conf = &conf->upstreams[i];
        if ((u->targets = calloc(u->conf->num_targets ? u->conf->num_targets : 1, sizeof(*u->targets))) == NULL)
            goto Error;
        for (size_t t = 0; t != u->conf->num_targets; ++t) {
            est_dns_addr_t lit;
            u->targets[t].conf = &u->conf->targets[t];
            u->targets[t].is_literal = u->conf->targets[t].host != NULL && est_dns_parse_literal(u->conf->targets[t].host, &lit) == 0;
        }
        set->num_upstreams = i + 1;
        if (est_pool_init_upstream(u, &err) != 0) {
            est_log_error("upstream '%s': %s", u->conf->name, err);
            goto Error;
        }
    }
    return set;
Error:
    est_upstream_set_destroy(set);
    return NULL;
}

void est_upstream_set_destroy(est_upstream_set_t *set)
{
    if (set == NULL)
        return;
    for (size_t i = 0; i != set->num_upstreams; ++i) {
        est_upstream_t *u = &set->upstreams[i];
        est_pool_dispose_upstream(u);
        while (u->free_exchanges != NULL) {
            est_exchange_t *x = u->free_exchanges;
            UNPOISON(x, sizeof(*x));
            u->free_exchanges = x->free_next;
            free(x);
        }
        for (size_t t = 0; u->targets != NULL && t != u->conf->num_targets; ++t) {
            if (u->targets[t].res != NULL)
                est_dns_result_release(u->targets[t].res);
            free(u->targets[t].inflight);
            free(u->targets[t].health);
        }
        free(u->targets);
    }
    free(set->upstreams);
    if (h2o_timeout_is_linked(&set->tick_entry))
        h2o_timeout_unlink(&set->tick_entry);
    h2o_timeout_dispose(set->loop, &set->zero_timeout);
    h2o_timeout_dispose(set->loop, &set->tick_timeout);
    free(set);
}

est_upstream_t *est_upstream_set_get(est_upstream_set_t *set, size_t upstream_index)
{
    return upstream_index < set->num_upstreams ? &set->upstreams[upstream_index] : NULL;
}

const est_upstream_stats_t *est_upstream_get_stats(const est_upstream_t *u)
{
    return &u->stats;
}

/* ---------------------------------------------------------------- exchange lifecycle */

/* (perf) a zeroed exchange, recycled from u's free list when it has one */
static est_exchange_t *exchange_alloc(est_upstream_t *u)
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

static void release_head_buf(est_exchange_t *x)
{
    if (x->head_is_heap)
        free(x->head_buf);
    x->head_buf = NULL;
    x->head_is_heap = 0;
}

est_exchange_t *est_exchange_start(est_upstream_t *u, const est_upstream_request_t *req, const est_exchange_cb_t *cb,
                                   void *data)
{
    est_exchange_t *x = exchange_alloc(u);
    if (x == NULL)
        return NULL;
    x->u = u;
    x->req = req;
    x->cb = *cb;
    x->data = data;
    x->state = EST_X_DEFERRED;
    x->info.start_at = h2o_now(u->set->loop);
    x->is_head_method = req->method.len == 4 && strncasecmp(req->method.base, "HEAD", 4) == 0;
    x->wheel.cb = on_wheel;
    u->active_requests++;
    defer(x, on_deferred_start);
    arm_wheel(x);
    return x;
}

static void format_address(const struct sockaddr_storage *sa, char *out, size_t outsz)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const void *)sa;
        inet_ntop(AF_INET, &s->sin_addr, ip, sizeof(ip));
        snprintf(out, outsz, "%s:%u", ip, (unsigned)ntohs(s->sin_port));
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const void *)sa;
        inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof(ip));
        snprintf(out, outsz, "[%s]:%u", ip, (unsigned)ntohs(s->sin6_port));
    }
}

/* (perf) info.address is formatted only when someone reads it (access log, debug log, an
 * error), and through a one-entry cache per upstream: most attempts go to the same address */
static const char *exchange_address(est_exchange_t *x)
{
    if (x->address_stale) {
        est_upstream_t *u = x->u;
        _Static_assert(sizeof(u->addr_cache) == sizeof(x->info.address), "same size");
        if (u->addr_cache[0] == '\0' || !est_sockaddr_equal(&u->addr_cache_sa, &x->sa)) {
            u->addr_cache[0] = '\0';
            format_address(&x->sa, u->addr_cache, sizeof(u->addr_cache));
            u->addr_cache_sa = x->sa;
        }
        memcpy(x->info.address, u->addr_cache, sizeof(x->info.address));
        x->address_stale = 0;
    }
    return x->info.address;
}

const est_exchange_info_t *est_exchange_info(const est_exchange_t *x)
{
    exchange_address((est_exchange_t *)x); /* x is never a const object: exchanges are allocated */
    return &x->info;
}

/* the user ends the exchange (cancel, socket stolen): freed now, or when its callback returns */
static void finish_by_user(est_exchange_t *x)
{
    end_attempt(x, 0);
    x->state = EST_X_DONE;
    if (x->in_cb)
        x->dead = 1;
    else
        free_exchange(x);
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
    if (x->state == EST_X_BODY && x->conn != NULL) {
        h2o_socket_read_stop(x->conn->sock);
        if (h2o_timeout_is_linked(&x->timer))
            h2o_timeout_unlink(&x->timer);
        if (h2o_timeout_is_linked(&x->defer_timer))
            h2o_timeout_unlink(&x->defer_timer);
    }
}

void est_exchange_resume(est_exchange_t *x)
{
    if (!x->paused || x->state == EST_X_DONE || x->held != 0)
        return;
    x->paused = 0;
    if (x->state == EST_X_BODY && x->conn != NULL) {
        /* bytes may already sit in the buffer; deliver them from the loop, not from here */
        defer(x, on_resume_deferred);
    }
}

void est_exchange_hold(est_exchange_t *x)
{
    if (x->in_cb == 0 || x->state != EST_X_BODY || x->conn == NULL)
        return;
    x->hold_requested = 1;
    est_exchange_pause(x);
}

/*
 * (perf, streaming) Consumes n bytes of a socket's input in the middle of a body. When that
 * empties the buffer it is rewound, not freed (h2o_buffer_consume frees an emptied buffer):
 * otherwise every read of a streamed body allocated a fresh buffer and re-grew it by doubling
 * (copying at each step) up to the size of one socket read, and the allocator gave the memory
 * back to the kernel in between (one madvise per MiB, page faults on every refill). The
 * buffer is bounded by one socket read (see pool.c) and is freed at the end of the body.
 */
static void consume_input(h2o_buffer_t **buf, size_t n)
{
    h2o_buffer_t *b = *buf;
    if (n != 0 && n == b->size && b->bytes != NULL && b->_fd == -1) {
        b->size = 0;
        b->bytes = b->_buf;
        return;
    }
    h2o_buffer_consume(buf, n);
}

void est_exchange_release(est_exchange_t *x)
{
    if (x->held == 0 || x->state != EST_X_BODY || x->conn == NULL)
        return;
    consume_input(&x->conn->sock->input, x->held);
    x->held = 0;
    est_exchange_resume(x);
}

h2o_socket_t *est_exchange_steal_socket(est_exchange_t *x)
{
    if (x->state != EST_X_UPGRADED || x->conn == NULL || x->dead)
        return NULL;
    est_conn_t *c = x->conn;
    h2o_socket_t *sock = c->sock;
    h2o_socket_read_stop(sock);
    sock->data = NULL;
    c->sock = NULL;
    x->u->stats.conns_open--;
    x->conn = NULL;
    est_pool_close_conn(c); /* frees the struct only */
    finish_by_user(x);
    return sock;
}

static void free_exchange(est_exchange_t *x)
{
    if (h2o_timeout_is_linked(&x->timer))
        h2o_timeout_unlink(&x->timer);
    if (h2o_timeout_is_linked(&x->defer_timer))
        h2o_timeout_unlink(&x->defer_timer);
    est_wheel_unlink(&x->wheel);
    est_pool_dequeue(x);
    release_head_buf(x);
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

/* Ends the current attempt: timers, DNS query, queue place, connection (pooled when
 * `reusable`), slot. Calls nobody back. */
static void end_attempt(est_exchange_t *x, int reusable)
{
    if (h2o_timeout_is_linked(&x->timer))
        h2o_timeout_unlink(&x->timer);
    if (h2o_timeout_is_linked(&x->defer_timer))
        h2o_timeout_unlink(&x->defer_timer);
    if (x->dnsq != NULL) {
        est_dns_cancel(x->dnsq);
        x->dnsq = NULL;
    }
    est_pool_dequeue(x);
    est_balance_done(x);
    est_pool_release(x, reusable);
    release_head_buf(x);
}

static void finish_error(est_exchange_t *x, est_uerr_t err, const char *msg)
{
    x->state = EST_X_DONE;
    x->info.error = err;
    est_wheel_unlink(&x->wheel);
    x->in_cb++;
    x->cb.on_error(x, x->data, err, msg);
    x->in_cb--;
    free_exchange(x);
}

static void abort_exchange(est_exchange_t *x)
{
    end_attempt(x, 0);
    x->state = EST_X_DONE;
    free_exchange(x);
}

/* ---------------------------------------------------------------- timers */

static void defer(est_exchange_t *x, h2o_timeout_cb cb)
{
    if (h2o_timeout_is_linked(&x->defer_timer))
        h2o_timeout_unlink(&x->defer_timer);
    x->defer_timer.cb = cb;
    h2o_timeout_link(x->u->set->loop, &x->u->set->zero_timeout, &x->defer_timer);
}

static void link_timer(est_exchange_t *x, h2o_timeout_t *t, h2o_timeout_cb cb)
{
    if (h2o_timeout_is_linked(&x->timer))
        h2o_timeout_unlink(&x->timer);
    x->timer.cb = cb;
    h2o_timeout_link(x->u->set->loop, t, &x->timer);
}

static int deadline_applies(est_exchange_t *x)
{
    if (x->req->deadline == 0)
        return 0;
    if (!x->req->deadline_covers_body && (x->state == EST_X_BODY || x->state == EST_X_UPGRADED))
        return 0;
    return 1;
}

static void arm_wheel(est_exchange_t *x)
{
    uint64_t at = UINT64_MAX;
    if (deadline_applies(x))
        at = x->req->deadline;
    if (x->state == EST_X_BACKOFF && x->backoff_at < at)
        at = x->backoff_at;
    if (at == UINT64_MAX)
        est_wheel_unlink(&x->wheel);
    else
        est_wheel_link(x->u->set, &x->wheel, at);
}

static void on_wheel(est_wheel_entry_t *e)
{
    est_exchange_t *x = H2O_STRUCT_FROM_MEMBER(est_exchange_t, wheel, e);
    uint64_t now = h2o_now(x->u->set->loop);
    if (deadline_applies(x) && now >= x->req->deadline) {
        est_uerr_t err = EST_UERR_DEADLINE;
        est_log_debug("upstream '%s': deadline passed (attempt %u, %s)", x->u->conf->name, x->info.attempts,
                      exchange_address(x)[0] ? x->info.address : "no address");
        if (x->state == EST_X_BODY || x->state == EST_X_UPGRADED) {
            fail_after_head(x, err, "request deadline passed");
        } else {
            if (x->state != EST_X_BACKOFF && x->state != EST_X_DEFERRED)
                x->u->stats.attempts_failed[err]++; /* an attempt was cut */
            end_attempt(x, 0);
            finish_error(x, err, "request deadline passed");
        }
        return;
    }
    if (x->state == EST_X_BACKOFF && now >= x->backoff_at) {
        begin_attempt(x);
        return;
    }
    arm_wheel(x);
}

static void on_deferred_start(h2o_timeout_entry_t *entry)
{
    begin_attempt(H2O_STRUCT_FROM_MEMBER(est_exchange_t, defer_timer, entry));
}

void est_exchange_wake(est_exchange_t *x)
{
    if (h2o_timeout_is_linked(&x->timer))
        h2o_timeout_unlink(&x->timer); /* the queue wait is over */
    x->state = EST_X_DEFERRED;
    defer(x, on_wake);
}

static void on_wake(h2o_timeout_entry_t *entry)
{
    acquire_conn(H2O_STRUCT_FROM_MEMBER(est_exchange_t, defer_timer, entry));
}

static void on_resume_deferred(h2o_timeout_entry_t *entry)
{
    est_exchange_t *x = H2O_STRUCT_FROM_MEMBER(est_exchange_t, defer_timer, entry);
    if (x->paused || x->state != EST_X_BODY)
        return;
    if (process_body(x, 0) != 0)
        return;
    if (!x->paused && x->state == EST_X_BODY) {
        h2o_socket_read_start(x->conn->sock, on_body_read);
        link_timer(x, &x->u->response_timeout, on_response_timeout);
    }
}

void est_exchange_queue_timeout(est_exchange_t *x)
{
    attempt_failed(x, EST_UERR_OVERLOADED, "no pooled connection free within connect_timeout");
}

static void on_queue_timeout(h2o_timeout_entry_t *entry)
{
    est_exchange_queue_timeout(H2O_STRUCT_FROM_MEMBER(est_exchange_t, timer, entry));
}

static void on_connect_timeout(h2o_timeout_entry_t *entry)
{
    est_exchange_t *x = H2O_STRUCT_FROM_MEMBER(est_exchange_t, timer, entry);
    est_balance_report(x, 0, h2o_now(x->u->set->loop));
    attempt_failed(x, EST_UERR_CONNECT_TIMEOUT, "connect timeout");
}

static void on_response_timeout(h2o_timeout_entry_t *entry)
{
    est_exchange_t *x = H2O_STRUCT_FROM_MEMBER(est_exchange_t, timer, entry);
    if (x->state == EST_X_BODY)
        fail_after_head(x, EST_UERR_TIMEOUT, "body read timed out");
    else
        attempt_failed(x, EST_UERR_TIMEOUT, "no response head within response_timeout");
}

/* ---------------------------------------------------------------- attempts */

static void begin_attempt(est_exchange_t *x)
{
    est_upstream_t *u = x->u;
    uint64_t now = h2o_now(u->set->loop);
    if (x->req->deadline != 0 && now >= x->req->deadline) {
        end_attempt(x, 0);
        finish_error(x, EST_UERR_DEADLINE, "request deadline passed");
        return;
    }
    int transparent = x->transparent;
    if (x->transparent)
        x->transparent = 0;
    else
        x->info.attempts++;
    x->state = EST_X_DEFERRED;
    arm_wheel(x); /* backoff over: only the deadline remains */
    x->sent = 0;
    x->got_bytes = 0;
    x->info.status = 0;
    x->info.connect_ms = 0;
    x->info.reused = 0;

    if (u->conf->num_targets == 0) {
        finish_error(x, EST_UERR_DNS, "upstream has no targets");
        return;
    }
    /* a retry prefers another target / address and leaves the round robin alone; a transparent
     * retry (stale pooled connection) goes back to the same address on a fresh connection;
     * x->sa is the previous attempt's address until est_balance_pick_address replaces it */
    if (x->salen == 0)
        x->pick_mode = EST_PICK_FIRST;
    else if (transparent)
        x->pick_mode = EST_PICK_SAME;
    else
        x->pick_mode = x->info.attempts > 1 ? EST_PICK_RETRY : EST_PICK_FIRST;
    size_t ti = est_balance_pick_target(u, x->pick_mode, x->target_index, now);
    const char *host = u->conf->targets[ti].host;
    /* (perf) an IP literal's answer is permanent: the target keeps it after the first lookup */
    est_dns_result_t *res = u->targets[ti].is_literal && u->targets[ti].res != NULL ? u->targets[ti].res
                                                                                     : est_dns_lookup_cached(u->set->dns, host);
    if (res != NULL) {
        on_resolved(x, ti, res);
        return;
    }
    x->state = EST_X_RESOLVING;
    x->target_index = ti;
    if ((x->dnsq = est_dns_resolve(u->set->dns, host, on_dns, x)) == NULL)
        attempt_failed(x, EST_UERR_DNS, "cannot start a DNS query");
}

static void on_dns(void *data, est_dns_status_t status, est_dns_result_t *result)
{
    est_exchange_t *x = data;
    x->dnsq = NULL;
    if (status != EST_DNS_OK || result == NULL) {
        attempt_failed(x, EST_UERR_DNS, est_dns_strerror(status));
        return;
    }
    on_resolved(x, x->target_index, result);
}

static void on_resolved(est_exchange_t *x, size_t ti, est_dns_result_t *res)
{
    if (res->num_addrs == 0) {
        attempt_failed(x, EST_UERR_DNS, "no address");
        return;
    }
    const struct sockaddr_storage *prev = x->pick_mode != EST_PICK_FIRST ? &x->sa : NULL;
    if (est_balance_pick_address(x, ti, res, x->pick_mode, prev, h2o_now(x->u->set->loop)) != 0) {
        attempt_failed(x, EST_UERR_DNS, "out of memory");
        return;
    }
    x->address_stale = 1; /* formatted when read (exchange_address) */
    acquire_conn(x);
}

static void acquire_conn(est_exchange_t *x)
{
    switch (est_pool_acquire(x)) {
    case 1:
        x->state = EST_X_QUEUED;
        link_timer(x, &x->u->connect_timeout, on_queue_timeout);
        return;
    case -1:
        est_balance_report(x, 0, h2o_now(x->u->set->loop));
        attempt_failed(x, EST_UERR_CONNECT, "cannot connect");
        return;
    default:
        break;
    }
    if (x->conn->state == EST_CONN_CONNECTING) {
        x->state = EST_X_CONNECTING;
        x->connect_start = h2o_now(x->u->set->loop);
        link_timer(x, &x->u->connect_timeout, on_connect_timeout);
    } else {
        send_request(x);
    }
}

void est_conn_on_connected(est_conn_t *c, const char *err, int tls_stage)
{
    est_exchange_t *x = c->x;
    if (x == NULL) {
        est_pool_close_conn(c);
        return;
    }
    x->info.connect_ms = h2o_now(x->u->set->loop) - x->connect_start;
    if (err == NULL || !tls_stage)
        est_balance_report(x, err == NULL, h2o_now(x->u->set->loop)); /* TLS errors: no verdict */
    if (err != NULL) {
        attempt_failed(x, tls_stage ? EST_UERR_TLS : EST_UERR_CONNECT, err);
        return;
    }
    c->state = EST_CONN_ACTIVE;
    send_request(x);
}

static int is_method(h2o_iovec_t m, const char *name)
{
    /* names are upper-case letters: the first one (case-folded) settles most mismatches */
    return m.len == strlen(name) && m.len != 0 && (m.base[0] | 0x20) == (name[0] | 0x20) &&
           strncasecmp(m.base, name, m.len) == 0;
}

/* writes `v` in decimal at p (no NUL), returns the end */
static char *append_decimal(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n != 0)
        *p++ = tmp[--n];
    return p;
}

static void send_request(est_exchange_t *x)
{
    const est_upstream_request_t *req = x->req;
    h2o_iovec_t host = req->host.base != NULL ? req->host : h2o_iovec_init(x->u->conf->targets[x->target_index].authority,
                                                                            strlen(x->u->conf->targets[x->target_index].authority));
    int cl_zero = !req->has_body && (is_method(req->method, "POST") || is_method(req->method, "PUT") || is_method(req->method, "PATCH"));
    size_t len = req->method.len + 1 + req->path.len + sizeof(" HTTP/1.1\r\nHost: \r\n") + host.len;
    for (size_t i = 0; i != req->num_headers; ++i)
        len += req->headers[i].name->len + 2 + req->headers[i].value.len + 2;
    len += sizeof("Connection: upgrade\r\n") + sizeof("Content-Length: 18446744073709551615\r\n") + 2;

    release_head_buf(x);
    if (len <= sizeof(x->conn->head_inline)) {
        x->head_buf = x->conn->head_inline; /* (perf) the common case: no allocation */
    } else if ((x->head_buf = malloc(len)) == NULL) {
        attempt_failed(x, EST_UERR_CONNECT, "out of memory");
        return;
    } else {
        x->head_is_heap = 1;
    }
    char *p = x->head_buf;
#define APPEND(s, n) (memcpy(p, (s), (n)), p += (n))
#define APPEND_LIT(s) APPEND(s, sizeof(s) - 1)
    APPEND(req->method.base, req->method.len);
    APPEND_LIT(" ");
    APPEND(req->path.base, req->path.len);
    APPEND_LIT(" HTTP/1.1\r\nHost: ");
    APPEND(host.base, host.len);
    APPEND_LIT("\r\n");
    for (size_t i = 0; i != req->num_headers; ++i) {
        APPEND(req->headers[i].name->base, req->headers[i].name->len);
        APPEND_LIT(": ");
        APPEND(req->headers[i].value.base, req->headers[i].value.len);
        APPEND_LIT("\r\n");
    }
    if (req->want_upgrade)
        APPEND_LIT("Connection: upgrade\r\n");
    if (req->has_body || cl_zero) {
        APPEND_LIT("Content-Length: ");
        p = append_decimal(p, req->has_body ? (uint64_t)req->body.len : 0);
        APPEND_LIT("\r\n");
    }
    APPEND_LIT("\r\n");
#undef APPEND
#undef APPEND_LIT

    size_t n = 0;
    x->bufs[n++] = h2o_iovec_init(x->head_buf, p - x->head_buf);
    if (req->has_body && req->body.len != 0)
        x->bufs[n++] = req->body;
    x->sent = 1;
    x->write_pending = 1;
    x->state = EST_X_HEAD;
    h2o_socket_t *sock = x->conn->sock;
    h2o_socket_write(sock, x->bufs, n, on_write_done);
    h2o_socket_read_start(sock, on_head_read);
    link_timer(x, &x->u->response_timeout, on_response_timeout);
}

static void on_write_done(h2o_socket_t *sock, const char *err)
{
    est_conn_t *c = sock->data;
    est_exchange_t *x = c != NULL ? c->x : NULL;
    if (x == NULL)
        return;
    x->write_pending = 0;
    if (err != NULL) {
        if (x->state == EST_X_HEAD)
            attempt_failed(x, EST_UERR_RESET, err);
        return;
    }
    /* response_timeout counts from the moment the request was written */
    if (x->state == EST_X_HEAD)
        link_timer(x, &x->u->response_timeout, on_response_timeout);
}

static int header_is(const struct phr_header *h, const char *name)
{
    return h->name_len == strlen(name) && strncasecmp(h->name, name, h->name_len) == 0;
}

/* does the comma-separated list `v` contain token `tok` (case-insensitive)? */
static int has_token(const char *v, size_t len, const char *tok)
{
    size_t tl = strlen(tok);
    const char *end = v + len;
    while (v < end) {
        while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
            ++v;
        const char *s = v;
        while (v < end && *v != ',')
            ++v;
        const char *e = v;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            --e;
        if ((size_t)(e - s) == tl && strncasecmp(s, tok, tl) == 0)
            return 1;
    }
    return 0;
}

/* is the last transfer-coding "chunked"? */
static int te_is_chunked(const char *v, size_t len)
{
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        --len;
    size_t s = len;
    while (s > 0 && v[s - 1] != ',')
        --s;
    while (s < len && (v[s] == ' ' || v[s] == '\t'))
        ++s;
    return len - s == 7 && strncasecmp(v + s, "chunked", 7) == 0;
}

static int parse_length(const char *v, size_t len, uint64_t *out)
{
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        --len;
    while (len > 0 && (*v == ' ' || *v == '\t'))
        ++v, --len;
    if (len == 0 || len > 19)
        return -1;
    uint64_t n = 0;
    for (size_t i = 0; i != len; ++i) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    *out = n;
    return 0;
}

static int status_is_retried(const est_upstream_conf_t *conf, int status)
{
    for (size_t i = 0; i != conf->retry.num_statuses; ++i)
        if (conf->retry.statuses[i] == status)
            return 1;
    return 0;
}

static void on_head_read(h2o_socket_t *sock, const char *err)
{
    est_conn_t *c = sock->data;
    est_exchange_t *x = c != NULL ? c->x : NULL;
    if (x == NULL)
        return;
    if (err != NULL) {
        attempt_failed(x, EST_UERR_RESET, x->got_bytes || sock->input->size ? "connection closed in the response head"
                                                                             : "connection closed before the response");
        return;
    }
    if (sock->input->size != 0)
        x->got_bytes = 1;

    int minor, status, r;
    const char *msg;
    size_t msg_len, num_headers;
    struct phr_header headers[MAX_HEADERS];
    for (;;) {
        num_headers = MAX_HEADERS;
        r = phr_parse_response(sock->input->bytes, sock->input->size, &minor, &status, &msg, &msg_len, headers, &num_headers, 0);
        if (r == -1 || r > MAX_HEAD_SIZE) {
            attempt_failed(x, EST_UERR_BAD_REPLY, r == -1 ? "unparseable response head" : "response head too large");
            return;
        }
        if (r == -2) {
            if (sock->input->size > MAX_HEAD_SIZE)
                attempt_failed(x, EST_UERR_BAD_REPLY, "response head too large");
            return;
        }
        if (status >= 100 && status < 200 && status != 101) {
            h2o_buffer_consume(&sock->input, r); /* interim reply (RFC 7231 6.2) */
            if (sock->input->size == 0)
                return;
            continue;
        }
        break;
    }

    /* framing (RFC 7230 3.3.3) and persistence (6.3) */
    int keepalive = minor >= 1, chunked = 0, has_te = 0, has_cl = 0;
    uint64_t cl = 0;
    for (size_t i = 0; i != num_headers; ++i) {
        const struct phr_header *h = &headers[i];
        if (h->name == NULL)
            continue;
        if (header_is(h, "connection")) {
            if (has_token(h->value, h->value_len, "close"))
                keepalive = 0;
            else if (minor == 0 && has_token(h->value, h->value_len, "keep-alive"))
                keepalive = 1;
        } else if (header_is(h, "transfer-encoding")) {
            has_te = 1;
            chunked = te_is_chunked(h->value, h->value_len);
        } else if (header_is(h, "content-length")) {
            uint64_t v;
            if (parse_length(h->value, h->value_len, &v) != 0 || (has_cl && v != cl)) {
                attempt_failed(x, EST_UERR_BAD_REPLY, "invalid Content-Length");
                return;
            }
            has_cl = 1;
            cl = v;
        }
    }
    if (status == 101) {
        x->body_mode = EST_BODY_NONE;
        keepalive = 0;
    } else if (x->is_head_method || status == 204 || status == 304) {
        x->body_mode = EST_BODY_NONE;
    } else if (has_te) {
        if (chunked) {
            x->body_mode = EST_BODY_CHUNKED;
        } else {
            x->body_mode = EST_BODY_CLOSE;
            keepalive = 0;
        }
    } else if (has_cl) {
        x->body_mode = EST_BODY_LENGTH;
        x->body_left = cl;
    } else {
        x->body_mode = EST_BODY_CLOSE;
        keepalive = 0;
    }
    x->keepalive = keepalive;

    est_upstream_t *u = x->u;
    u->stats.attempts_ok++;
    x->info.status = status;
    uint64_t wait;
    if (status_is_retried(u->conf, status) && may_retry(x, EST_UERR_NONE, status, &wait)) {
        est_log_debug("upstream '%s': attempt %u to %s answered %d, retrying", u->conf->name, x->info.attempts,
                      exchange_address(x), status);
        end_attempt(x, 0); /* discard the reply: the connection is not reused */
        schedule_retry(x, wait);
        return;
    }
    x->info.error = EST_UERR_NONE;
    if (h2o_timeout_is_linked(&x->timer))
        h2o_timeout_unlink(&x->timer);

    if (status == 101) {
        /* the caller may steal the socket inside on_head: hand it a copy of the head and
         * leave only the bytes after it in sock->input */
        char *copy = malloc(r);
        if (copy == NULL) {
            fail_after_head(x, EST_UERR_BAD_REPLY, "out of memory");
            return;
        }
        memcpy(copy, sock->input->bytes, r);
        num_headers = MAX_HEADERS;
        phr_parse_response(copy, r, &minor, &status, &msg, &msg_len, headers, &num_headers, 0);
        h2o_buffer_consume(&sock->input, r);
        h2o_socket_read_stop(sock);
        x->state = EST_X_UPGRADED;
        arm_wheel(x);
        x->in_cb++;
        int rv = x->cb.on_head(x, x->data, status, headers, num_headers);
        x->in_cb--;
        free(copy);
        if (x->dead) {
            free_exchange(x);
            return;
        }
        if (rv != 0)
            abort_exchange(x);
        return;
    }

    x->state = EST_X_BODY;
    arm_wheel(x);
    x->in_cb++;
    int rv = x->cb.on_head(x, x->data, status, headers, num_headers);
    x->in_cb--;
    if (x->dead) {
        free_exchange(x);
        return;
    }
    if (rv != 0) {
        abort_exchange(x);
        return;
    }
    h2o_buffer_consume(&sock->input, r);
    memset(&x->chunked, 0, sizeof(x->chunked));
    x->chunked.consume_trailer = 1;
    if (x->paused) {
        h2o_socket_read_stop(sock);
        return;
    }
    if (process_body(x, 0) != 0)
        return;
    if (!x->paused) {
        h2o_socket_read_start(sock, on_body_read);
        link_timer(x, &u->response_timeout, on_response_timeout);
    } else {
        h2o_socket_read_stop(sock);
    }
}

static void on_body_read(h2o_socket_t *sock, const char *err)
{
    est_conn_t *c = sock->data;
    est_exchange_t *x = c != NULL ? c->x : NULL;
    if (x == NULL || x->state != EST_X_BODY)
        return;
    if (h2o_timeout_is_linked(&x->timer))
        h2o_timeout_unlink(&x->timer);
    if (process_body(x, err != NULL) != 0)
        return;
    if (!x->paused && x->state == EST_X_BODY)
        link_timer(x, &x->u->response_timeout, on_response_timeout);
}

/* Delivers what the buffer holds. Returns 1 when the exchange is gone, 0 otherwise. */
static int process_body(est_exchange_t *x, int eof)
{
    if (x->paused)
        return 0;
    h2o_buffer_t *in = x->conn->sock->input;
    switch (x->body_mode) {
    case EST_BODY_NONE:
        return deliver(x, "", 0, 1, 0, in->size == 0); /* never NULL: callers may memcpy */
    case EST_BODY_LENGTH: {
        size_t n = in->size < x->body_left ? in->size : (size_t)x->body_left;
        x->body_left -= n;
        int final = x->body_left == 0;
        if (!final && eof) {
            fail_after_head(x, EST_UERR_RESET, "connection closed before the end of the body");
            return 1;
        }
        /* bytes beyond Content-Length: the connection is out of sync, do not reuse it */
        return deliver(x, in->bytes, n, final, n, in->size == n);
    }
    case EST_BODY_CHUNKED: {
        if (in->size == 0) {
            if (eof) {
                fail_after_head(x, EST_UERR_RESET, "connection closed before the end of the body");
                return 1;
            }
            return 0;
        }
        size_t total = in->size, sz = total;
        ssize_t ret = phr_decode_chunked(&x->chunked, in->bytes, &sz);
        if (ret == -1) {
            fail_after_head(x, EST_UERR_BAD_REPLY, "invalid chunked encoding");
            return 1;
        }
        if (ret == -2 && eof) {
            fail_after_head(x, EST_UERR_RESET, "connection closed before the end of the body");
            return 1;
        }
        return deliver(x, in->bytes, sz, ret >= 0, total, ret == 0);
    }
    case EST_BODY_CLOSE:
        return deliver(x, in->bytes, in->size, eof, in->size, 0);
    }
    return 0;
}

/* Calls on_body, then consumes `consume` bytes of input; on `final` gives the connection back
 * (pooled when `reusable` and keep-alive) and frees the exchange. Returns 1 when x is gone. */
static int deliver(est_exchange_t *x, const char *bytes, size_t len, int final, size_t consume, int reusable)
{
    if (len == 0 && !final) {
        consume_input(&x->conn->sock->input, consume);
        return 0;
    }
    if (bytes == NULL)
        bytes = ""; /* an empty h2o_buffer_t may have no storage yet */
    if (final && h2o_timeout_is_linked(&x->timer))
        h2o_timeout_unlink(&x->timer);
    x->hold_requested = 0;
    x->in_cb++;
    int rv = x->cb.on_body(x, x->data, bytes, len, final);
    x->in_cb--;
    if (x->dead) {
        free_exchange(x);
        return 1;
    }
    if (x->hold_requested && !final && rv == 0) {
        /* est_exchange_hold: the caller keeps `bytes`; consumed at est_exchange_release */
        x->hold_requested = 0;
        x->held = consume;
        return 0;
    }
    x->hold_requested = 0;
    if (final)
        h2o_buffer_consume(&x->conn->sock->input, consume); /* frees an emptied buffer: the connection may idle */
    else
        consume_input(&x->conn->sock->input, consume);
    if (final) {
        /* a write still pending (the server answered early) means the connection is not reusable,
         * and x->head_buf must not be freed under it */
        end_attempt(x, reusable && x->keepalive && rv == 0 && !x->write_pending);
        x->state = EST_X_DONE;
        free_exchange(x);
        return 1;
    }
    if (rv != 0) {
        abort_exchange(x);
        return 1;
    }
    return 0;
}

static void fail_after_head(est_exchange_t *x, est_uerr_t err, const char *msg)
{
    x->u->stats.attempts_failed[err]++;
    est_log_debug("upstream '%s': exchange with %s failed after the head: %s (%s)", x->u->conf->name, exchange_address(x),
                  est_uerr_name(err), msg);
    end_attempt(x, 0);
    finish_error(x, err, msg);
}

/* ---------------------------------------------------------------- retries */

static int may_retry(est_exchange_t *x, est_uerr_t err, int status, uint64_t *wait)
{
    const est_upstream_conf_t *conf = x->u->conf;
    if (x->info.attempts >= conf->retry.attempts)
        return 0;
    switch (err) {
    case EST_UERR_NONE: /* a status listed in retry.statuses: the request was processed */
        if (!x->req->is_idempotent)
            return 0;
        break;
    case EST_UERR_CONNECT:
    case EST_UERR_CONNECT_TIMEOUT:
    case EST_UERR_TLS:
        if (!(conf->retry.on & EST_RETRY_ON_CONNECT_FAILURE))
            return 0;
        break;
    case EST_UERR_RESET:
        if (!(conf->retry.on & EST_RETRY_ON_RESET) || (!x->req->is_idempotent && x->sent))
            return 0;
        break;
    case EST_UERR_TIMEOUT:
        if (!(conf->retry.on & EST_RETRY_ON_TIMEOUT) || (!x->req->is_idempotent && x->sent))
            return 0;
        break;
    default:
        return 0;
    }
    uint64_t w = est_retry_backoff_ms(conf->retry.backoff_ms, conf->retry.max_backoff_ms, x->info.attempts, &x->u->set->seed);
    if (x->req->deadline != 0 && h2o_now(x->u->set->loop) + w >= x->req->deadline)
        return 0;
    /* the retry budget: this exchange's own earlier retry does not count against it */
    est_upstream_t *u = x->u;
    if (!est_retry_budget_allows(u->active_requests, u->active_retries - (x->counted_retry ? 1 : 0))) {
        u->stats.retries_budget_exceeded++;
        est_log_debug("upstream '%s': retry budget exhausted (%zu retries among %zu requests), not retrying", conf->name,
                      u->active_retries, u->active_requests);
        return 0;
    }
    *wait = w;
    (void)status;
    return 1;
}

uint64_t est_retry_backoff_ms(uint64_t base_ms, uint64_t max_ms, unsigned n, unsigned *seed)
{
    /* [d/2, d], d = min(max_backoff, backoff * 2^(n-1)) */
    uint64_t d = base_ms;
    for (unsigned i = 1; i < n && d < max_ms; ++i)
        d *= 2;
    if (d > max_ms)
        d = max_ms;
    return d / 2 + (d - d / 2 != 0 ? (uint64_t)rand_r(seed) % (d - d / 2 + 1) : 0);
}

int est_retry_budget_allows(size_t active_requests, size_t active_retries)
{
    size_t limit = active_requests * EST_RETRY_BUDGET_PERCENT / 100;
    if (limit < EST_RETRY_BUDGET_MIN)
        limit = EST_RETRY_BUDGET_MIN;
    return active_retries < limit;
}

static void schedule_retry(est_exchange_t *x, uint64_t wait)
{
    est_upstream_t *u = x->u;
    u->stats.retries++;
    if (!x->counted_retry) {
        x->counted_retry = 1;
        u->active_retries++;
    }
    x->state = EST_X_BACKOFF;
    x->backoff_at = h2o_now(u->set->loop) + wait;
    if (wait == 0)
        defer(x, on_deferred_start);
    else
        arm_wheel(x);
}

static void attempt_failed(est_exchange_t *x, est_uerr_t err, const char *msg)
{
    est_upstream_t *u = x->u;
    u->stats.attempts_failed[err]++;
    est_log_debug("upstream '%s': attempt %u to %s failed: %s (%s)", u->conf->name, x->info.attempts,
                  exchange_address(x)[0] ? x->info.address : "no address", est_uerr_name(err), msg);
    int was_reused = x->info.reused, got = x->got_bytes, sent = x->sent;
    end_attempt(x, 0);
    x->info.error = err;

    /* a pooled connection the server closed as we sent: once more on a fresh one, uncounted */
    if (err == EST_UERR_RESET && was_reused && !got && (x->req->is_idempotent || !sent)) {
        x->transparent = 1;
        x->force_new_conn = 1;
        x->state = EST_X_DEFERRED;
        defer(x, on_deferred_start);
        return;
    }
    uint64_t wait;
    if (may_retry(x, err, 0, &wait)) {
        schedule_retry(x, wait);
        return;
    }
    finish_error(x, err, msg);
}
