/*
 * estuary - the exchange (see client.h): the API, its lifecycle (one exit: exchange_exit;
 * every user callback between user_call and user_return), the attempts (DNS, pick, pool,
 * request, response) and their retries. docs/upstream.md describes the structure, the
 * timers and the retry rules; the bytes on the wire are h1wire.c's, the retry policy
 * retry.c's, the exchange's resources exchange.c's.
 *
 * Re-entrancy: user callbacks run with x->in_cb raised; est_exchange_cancel inside one
 * cleans up at once but defers the free (x->dead) until the callback returns.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "common/log.h"
#include "common/sockaddr.h"
#include "upstream/exchange_internal.h"
#include "upstream/dns_cache.h"
#include "upstream/h1wire.h"
#include "upstream/retry.h"

/* recycled exchanges stay poisoned under ASan, so a use after "free" is still reported */
#include "common/asan.h"



static void on_wheel(est_wheel_entry_t *e);
static void arm_wheel(est_exchange_t *x);
static void on_deferred_start(h2o_timeout_entry_t *entry);
static void on_wake(h2o_timeout_entry_t *entry);
static void on_pool_slot(est_pool_req_t *req);
static void on_pool_connect(est_pool_req_t *req, const char *err, int tls_stage);
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
static void finish_error(est_exchange_t *x, est_uerr_t err, const char *msg);
static int may_retry(est_exchange_t *x, est_uerr_t err, uint64_t *wait);

est_exchange_t *est_exchange_start(est_upstream_t *u, const est_upstream_request_t *req, const est_exchange_cb_t *cb,
                                   void *data)
{
    est_exchange_t *x = est_exchange_alloc(u);
    if (x == NULL)
        return NULL;
    x->u = u;
    x->req = req;
    x->cb = *cb;
    x->data = data;
    x->state = EST_X_DEFERRED;
    x->info.start_at = h2o_now(u->set->loop);
    x->deadline = req->deadline;
    x->is_head_method = req->method.len == 4 && strncasecmp(req->method.base, "HEAD", 4) == 0;
    x->wheel.cb = on_wheel;
    x->preq.on_slot = on_pool_slot;
    x->preq.on_connect = on_pool_connect;
    u->active_requests++;
    est_exchange_defer(x, on_deferred_start);
    arm_wheel(x);
    return x;
}

void est_exchange_resume(est_exchange_t *x)
{
    if (!x->paused || x->state == EST_X_DONE || x->held != 0)
        return;
    x->paused = 0;
    if (x->state == EST_X_BODY && x->preq.conn != NULL) {
        /* bytes may already sit in the buffer; deliver them from the loop, not from here */
        est_exchange_defer(x, on_resume_deferred);
    }
}

static void after_hedges_failed(est_exchange_t *x, est_uerr_t err, const char *msg);

static void finish_error(est_exchange_t *x, est_uerr_t err, const char *msg)
{
    if (x->parent != NULL) {
        /* (hedging) a hedge never reaches the user: it fails alone */
        est_exchange_end_attempt(x, 0);
        est_exchange_t *p = est_hedge_child_failed(x);
        if (p != NULL)
            after_hedges_failed(p, err, msg);
        return;
    }
    x->state = EST_X_DONE; /* a cancel from inside on_error does nothing */
    x->info.error = err;
    est_exchange_user_call(x);
    x->cb.on_error(x, x->data, err, msg);
    if (!est_exchange_user_return(x))
        est_exchange_exit(x, 0);
}

/* ---------------------------------------------------------------- timers */

static int deadline_applies(est_exchange_t *x)
{
    if (x->deadline == 0)
        return 0;
    if (x->body_started && !x->body_done)
        return 0; /* a streamed body: client_body_timeout and response_timeout bound it */
    if (!x->req->deadline_covers_body && (x->state == EST_X_BODY || x->state == EST_X_UPGRADED))
        return 0;
    return 1;
}

/* (hedging) may x start a hedge now? Only its first attempt, before its head */
static int hedge_pending(const est_exchange_t *x)
{
    if (x->hedge_at == 0 || x->parent != NULL || x->hedge_wait || x->info.attempts != 1)
        return 0;
    switch (x->state) {
    case EST_X_DEFERRED:
    case EST_X_RESOLVING:
    case EST_X_QUEUED:
    case EST_X_CONNECTING:
    case EST_X_HEAD:
        return 1;
    default:
        return 0;
    }
}

static void arm_wheel(est_exchange_t *x)
{
    uint64_t at = UINT64_MAX;
    if (deadline_applies(x))
        at = x->deadline;
    if (hedge_pending(x) && x->hedge_at < at)
        at = x->hedge_at;
    if (x->state == EST_X_BACKOFF && x->backoff_at < at)
        at = x->backoff_at;
    if (at == UINT64_MAX)
        est_wheel_unlink(&x->wheel);
    else
        est_wheel_link(&x->u->set->wheel, &x->wheel, at, h2o_now(x->u->set->loop));
}

static void on_wheel(est_wheel_entry_t *e)
{
    est_exchange_t *x = H2O_STRUCT_FROM_MEMBER(est_exchange_t, wheel, e);
    uint64_t now = h2o_now(x->u->set->loop);
    if (deadline_applies(x) && now >= x->deadline) {
        est_uerr_t err = EST_UERR_DEADLINE;
        est_log_debug("upstream '%s': deadline passed (attempt %u, %s)", x->u->conf->name, x->info.attempts,
                      est_exchange_address(x)[0] ? x->info.address : "no address");
        if (x->state == EST_X_BODY || x->state == EST_X_UPGRADED) {
            fail_after_head(x, err, "request deadline passed");
        } else {
            if (x->state != EST_X_BACKOFF && x->state != EST_X_DEFERRED)
                x->u->stats.attempts_failed[err]++; /* an attempt was cut */
            x->span_err = (unsigned char)(err + 1);
            est_exchange_end_attempt(x, 0);
            finish_error(x, err, "request deadline passed");
        }
        return;
    }
    if (hedge_pending(x) && now >= x->hedge_at)
        est_hedge_launch(x, now, on_deferred_start);
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

/* the pool: a queued exchange got a slot */
static void on_pool_slot(est_pool_req_t *req)
{
    est_exchange_t *x = H2O_STRUCT_FROM_MEMBER(est_exchange_t, preq, req);
    if (h2o_timeout_is_linked(&x->timer))
        h2o_timeout_unlink(&x->timer); /* the queue wait is over */
    x->state = EST_X_DEFERRED;
    est_exchange_defer(x, on_wake);
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
        h2o_socket_read_start(x->preq.conn->sock, on_body_read);
        est_exchange_link_timer(x, &x->u->response_timeout, on_response_timeout);
    }
}

static void on_queue_timeout(h2o_timeout_entry_t *entry)
{
    attempt_failed(H2O_STRUCT_FROM_MEMBER(est_exchange_t, timer, entry), EST_UERR_OVERLOADED,
                   "no pooled connection free within connect_timeout");
}

static void on_connect_timeout(h2o_timeout_entry_t *entry)
{
    est_exchange_t *x = H2O_STRUCT_FROM_MEMBER(est_exchange_t, timer, entry);
    est_balance_report(x->u, &x->pick, 0, h2o_now(x->u->set->loop));
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
    if (x->deadline != 0 && now >= x->deadline) {
        est_exchange_end_attempt(x, 0);
        finish_error(x, EST_UERR_DEADLINE, "request deadline passed");
        return;
    }
    int transparent = x->transparent;
    if (x->transparent)
        x->transparent = 0;
    else
        x->info.attempts++;
    x->state = EST_X_DEFERRED;
    if (x->info.attempts == 1 && !transparent)
        est_hedge_first_attempt(x, now);
    arm_wheel(x); /* backoff over: only the deadline (and a hedge delay) remains */
    x->sent = 0;
    x->got_bytes = 0;
    x->info.status = 0;
    x->info.connect_ms = 0;
    x->info.reused = 0;
    if (x->req->trace != NULL && x->req->trace->sink != NULL) {
        /* (tracing) every attempt is a client span of its own, with its own traceparent */
        est_trace_new_id(x->req->trace->sink, x->span_id);
        x->span_start_ns = est_trace_now_ns();
        x->span_open = 1;
        x->span_addr = 0;
        x->span_err = 0;
    }

    if (u->conf->num_targets == 0) {
        finish_error(x, EST_UERR_DNS, "upstream has no targets");
        return;
    }
    /* a retry prefers another target / address and leaves the round robin alone; a transparent
     * retry (stale pooled connection) goes back to the same address on a fresh connection;
     * x->pick.sa is the previous attempt's address until est_balance_pick_address replaces it */
    if (x->pick.salen == 0)
        x->pick_mode = EST_PICK_FIRST;
    else if (transparent)
        x->pick_mode = EST_PICK_SAME;
    else
        x->pick_mode = x->info.attempts > 1 || x->parent != NULL ? EST_PICK_RETRY : EST_PICK_FIRST; /* a hedge: as a retry */
    size_t ti = est_balance_pick_target(u, x->pick_mode, x->pick.target_index, now);
    const char *host = u->conf->targets[ti].host;
    /* (perf) an IP literal's answer is permanent: the target keeps it after the first lookup */
    est_dns_result_t *res = u->targets[ti].is_literal && u->targets[ti].res != NULL ? u->targets[ti].res
                                                                                     : est_dns_lookup_cached(u->set->dns, host);
    if (res != NULL) {
        on_resolved(x, ti, res);
        return;
    }
    x->state = EST_X_RESOLVING;
    x->pick.target_index = ti;
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
    on_resolved(x, x->pick.target_index, result);
}

static void on_resolved(est_exchange_t *x, size_t ti, est_dns_result_t *res)
{
    if (res->num_addrs == 0) {
        attempt_failed(x, EST_UERR_DNS, "no address");
        return;
    }
    const struct sockaddr_storage *prev = x->pick_mode != EST_PICK_FIRST ? &x->pick.sa : NULL;
    if (est_balance_pick_address(x->u, &x->pick, ti, res, x->pick_mode, prev, h2o_now(x->u->set->loop)) != 0) {
        attempt_failed(x, EST_UERR_DNS, "out of memory");
        return;
    }
    x->address_stale = 1; /* formatted when read (est_exchange_address) */
    x->span_addr = 1;
    acquire_conn(x);
}

static void acquire_conn(est_exchange_t *x)
{
    x->preq.target_index = x->pick.target_index;
    x->preq.sa = &x->pick.sa;
    x->preq.salen = x->pick.salen;
    switch (est_pool_connect(x->u, &x->preq)) {
    case 1:
        x->state = EST_X_QUEUED;
        est_exchange_link_timer(x, &x->u->connect_timeout, on_queue_timeout);
        return;
    case -1:
        est_balance_report(x->u, &x->pick, 0, h2o_now(x->u->set->loop));
        attempt_failed(x, EST_UERR_CONNECT, "cannot connect");
        return;
    default:
        break;
    }
    x->info.reused = x->preq.reused;
    if (x->preq.conn->state == EST_CONN_CONNECTING) {
        x->state = EST_X_CONNECTING;
        x->connect_start = h2o_now(x->u->set->loop);
        est_exchange_link_timer(x, &x->u->connect_timeout, on_connect_timeout);
    } else {
        send_request(x);
    }
}

/* the pool: the attempt's new connection is made, or failed */
static void on_pool_connect(est_pool_req_t *req, const char *err, int tls_stage)
{
    est_exchange_t *x = H2O_STRUCT_FROM_MEMBER(est_exchange_t, preq, req);
    x->info.connect_ms = h2o_now(x->u->set->loop) - x->connect_start;
    if (err == NULL || !tls_stage)
        est_balance_report(x->u, &x->pick, err == NULL, h2o_now(x->u->set->loop)); /* TLS errors: no verdict */
    if (err != NULL) {
        attempt_failed(x, tls_stage ? EST_UERR_TLS : EST_UERR_CONNECT, err);
        return;
    }
    send_request(x);
}

static void send_request(est_exchange_t *x)
{
    const est_upstream_request_t *req = x->req;
    const char *authority = x->u->conf->targets[x->pick.target_index].authority;
    h2o_iovec_t host = req->host.base != NULL ? req->host : h2o_iovec_init(authority, strlen(authority));
    est_trace_ctx_t *tc = req->trace != NULL && req->trace->sink != NULL ? req->trace : NULL;
    size_t len = est_h1_request_head_bound(req, host) + (tc != NULL ? est_trace_headers_bound(tc) : 0);

    est_exchange_release_head(x);
    if (len <= sizeof(x->preq.conn->head_inline)) {
        x->head_buf = x->preq.conn->head_inline; /* (perf) the common case: no allocation */
    } else if ((x->head_buf = malloc(len)) == NULL) {
        attempt_failed(x, EST_UERR_CONNECT, "out of memory");
        return;
    } else {
        x->head_is_heap = 1;
    }
    size_t head_len = est_h1_write_request_head(x->head_buf, req, host);
    if (tc != NULL) {
        /* (tracing) this attempt's traceparent goes before the blank line that ends the head */
        head_len -= 2;
        head_len += est_trace_write_headers(x->head_buf + head_len, tc, x->span_id);
        memcpy(x->head_buf + head_len, "\r\n", 2);
        head_len += 2;
    }

    size_t n = 0;
    x->bufs[n++] = h2o_iovec_init(x->head_buf, head_len);
    if (req->has_body && req->body.len != 0)
        x->bufs[n++] = req->body;
    x->sent = 1;
    x->write_pending = 1;
    x->state = EST_X_HEAD;
    h2o_socket_t *sock = x->preq.conn->sock;
    h2o_socket_write(sock, x->bufs, n, on_write_done);
    h2o_socket_read_start(sock, on_head_read);
    est_exchange_link_timer(x, &x->u->response_timeout, on_response_timeout);
}

static void on_write_done(h2o_socket_t *sock, const char *err)
{
    est_conn_t *c = sock->data;
    est_exchange_t *x = est_conn_exchange(c);
    if (x == NULL)
        return;
    x->write_pending = 0;
    if (err != NULL) {
        if (x->state == EST_X_HEAD)
            attempt_failed(x, EST_UERR_RESET, err);
        return;
    }
    if (x->req->body_stream && !x->body_done) {
        /* a streamed body: ask for the next bytes; meanwhile the client is waited for, under
         * client_body_timeout (the head wait starts once the body is written) */
        if (x->state == EST_X_HEAD && h2o_timeout_is_linked(&x->timer))
            h2o_timeout_unlink(&x->timer);
        if ((x->state != EST_X_HEAD && x->state != EST_X_BODY) || x->cb.on_send_ready == NULL)
            return;
        x->body_ready = 1;
        if (!x->body_started) {
            x->body_started = 1;
            arm_wheel(x); /* the deadline pauses while the body streams */
        }
        est_exchange_user_call(x);
        x->cb.on_send_ready(x, x->data);
        est_exchange_user_return(x);
        return;
    }
    if (x->req->body_stream && x->req->deadline != 0 && x->deadline == x->req->deadline) {
        /* the body is written: the route's timeout for the head counts from now */
        x->deadline = h2o_now(x->u->set->loop) + (x->req->deadline - x->info.start_at);
        arm_wheel(x);
    }
    if (x->req->body_stream && x->cb.on_send_ready != NULL && x->state != EST_X_DONE) {
        est_exchange_user_call(x); /* the final bytes are written: the caller may let them go */
        x->cb.on_send_ready(x, x->data);
        if (est_exchange_user_return(x))
            return;
    }
    /* response_timeout counts from the moment the request was written */
    if (x->state == EST_X_HEAD)
        est_exchange_link_timer(x, &x->u->response_timeout, on_response_timeout);
}

int est_exchange_write_body(est_exchange_t *x, const char *bytes, size_t len, int is_final)
{
    const est_upstream_request_t *req = x->req;
    if (!req->body_stream || !x->body_ready || x->body_done || x->dead || x->preq.conn == NULL ||
        (x->state != EST_X_HEAD && x->state != EST_X_BODY))
        return -1;
    if (req->body_length != UINT64_MAX &&
        (len > req->body_length - x->body_written || (is_final && x->body_written + len != req->body_length)))
        return -1; /* never more or less than the Content-Length sent */
    x->body_ready = 0;
    x->body_written += len;
    size_t n = 0;
    if (req->body_length == UINT64_MAX) {
        /* RFC 9112 7.1: chunk-size CRLF data CRLF ... last-chunk CRLF (no trailers) */
        if (len != 0) {
            static const char hex[] = "0123456789abcdef";
            char tmp[16];
            int k = 0;
            uint64_t v = len;
            do {
                tmp[k++] = hex[v & 0xf];
                v >>= 4;
            } while (v != 0);
            char *p = x->chunk_line;
            while (k != 0)
                *p++ = tmp[--k];
            *p++ = '\r';
            *p++ = '\n';
            x->bufs[n++] = h2o_iovec_init(x->chunk_line, (size_t)(p - x->chunk_line));
            x->bufs[n++] = h2o_iovec_init(bytes, len);
            x->bufs[n++] = h2o_iovec_init(H2O_STRLIT("\r\n"));
        }
        if (is_final)
            x->bufs[n++] = h2o_iovec_init(H2O_STRLIT("0\r\n\r\n"));
    } else if (len != 0) {
        x->bufs[n++] = h2o_iovec_init(bytes, len);
    }
    if (is_final)
        x->body_done = 1;
    x->write_pending = 1;
    /* the backend must take the bytes within response_timeout (while the head is awaited; a
     * reply already being read keeps its own read timer) */
    if (x->state == EST_X_HEAD)
        est_exchange_link_timer(x, &x->u->response_timeout, on_response_timeout);
    if (n == 0)
        x->bufs[n++] = h2o_iovec_init("", 0);
    h2o_socket_write(x->preq.conn->sock, x->bufs, n, on_write_done);
    return 0;
}

static void on_head_read(h2o_socket_t *sock, const char *err)
{
    est_conn_t *c = sock->data;
    est_exchange_t *x = est_conn_exchange(c);
    if (x == NULL)
        return;
    if (err != NULL) {
        attempt_failed(x, EST_UERR_RESET, x->got_bytes || sock->input->size ? "connection closed in the response head"
                                                                             : "connection closed before the response");
        return;
    }
    if (sock->input->size != 0)
        x->got_bytes = 1;

    int r;
    const char *perr = NULL;
    est_h1_response_t resp;
    struct phr_header headers[EST_H1_MAX_HEADERS];
    for (;;) {
        r = est_h1_parse_response(sock->input->bytes, sock->input->size, x->is_head_method, headers, EST_H1_MAX_HEADERS, &resp,
                                  &perr);
        if (r == -1) {
            attempt_failed(x, EST_UERR_BAD_REPLY, perr);
            return;
        }
        if (r == -2)
            return;
        if (!resp.interim)
            break;
        h2o_buffer_consume(&sock->input, r); /* interim reply (RFC 9110 §15.2) */
        if (sock->input->size == 0)
            return;
    }
    /* (hedging) the first head wins: a hedge's becomes the exchange's (its connection and
     * attempt move into the parent), the primary's ends the hedges (connections closed) */
    if (x->parent != NULL)
        x = est_hedge_promote(x);
    else if (x->hedges != NULL)
        est_hedge_cancel_all(x);
    if (x->info.attempts == 1 && x->u->hedge != NULL)
        est_hedge_record_ttfb(x->u, h2o_now(x->u->set->loop) - x->info.start_at);
    int status = resp.status;
    size_t num_headers = resp.num_headers;
    est_h1_body_init(&x->body, &resp);
    x->keepalive = resp.keepalive;
    if (x->body.mode == EST_H1_BODY_CHUNKED && sock->input->size > (size_t)r) {
        /* the chunk framing that came with the head is checked before the head is delivered:
         * a reply with a bad first chunk is a failed attempt, not a broken stream */
        size_t decoded, used;
        if (est_h1_body_read(&x->body, sock->input->bytes + r, sock->input->size - r, 1, &decoded, &used, &perr) ==
            EST_H1_BODY_ERROR) {
            attempt_failed(x, EST_UERR_BAD_REPLY, perr);
            return;
        }
    }

    est_upstream_t *u = x->u;
    u->stats.attempts_ok++;
    x->info.status = status;
    uint64_t wait;
    if (!x->body_started && est_retry_status_listed(u->conf, status) && may_retry(x, EST_UERR_NONE, &wait)) {
        est_log_debug("upstream '%s': attempt %u to %s answered %d, retrying", u->conf->name, x->info.attempts,
                      est_exchange_address(x), status);
        est_exchange_end_attempt(x, 0); /* discard the reply: the connection is not reused */
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
        est_h1_parse_response(copy, r, x->is_head_method, headers, EST_H1_MAX_HEADERS, &resp, &perr);
        h2o_buffer_consume(&sock->input, r);
        h2o_socket_read_stop(sock);
        x->state = EST_X_UPGRADED;
        arm_wheel(x);
        est_exchange_user_call(x);
        int rv = x->cb.on_head(x, x->data, status, headers, num_headers);
        free(copy);
        if (!est_exchange_user_return(x) && rv != 0)
            est_exchange_exit(x, 0);
        return;
    }

    x->state = EST_X_BODY;
    arm_wheel(x);
    est_exchange_user_call(x);
    x->in_head_cb = 1;
    int rv = x->cb.on_head(x, x->data, status, headers, num_headers);
    x->in_head_cb = 0;
    if (est_exchange_user_return(x))
        return;
    if (rv != 0) {
        est_exchange_exit(x, 0);
        return;
    }
    h2o_buffer_consume(&sock->input, r);
    if (x->paused) {
        h2o_socket_read_stop(sock);
        return;
    }
    if (process_body(x, 0) != 0)
        return;
    if (!x->paused) {
        h2o_socket_read_start(sock, on_body_read);
        est_exchange_link_timer(x, &u->response_timeout, on_response_timeout);
    } else {
        h2o_socket_read_stop(sock);
    }
}

static void on_body_read(h2o_socket_t *sock, const char *err)
{
    est_conn_t *c = sock->data;
    est_exchange_t *x = est_conn_exchange(c);
    if (x == NULL || x->state != EST_X_BODY)
        return;
    if (h2o_timeout_is_linked(&x->timer))
        h2o_timeout_unlink(&x->timer);
    if (process_body(x, err != NULL) != 0)
        return;
    if (!x->paused && x->state == EST_X_BODY)
        est_exchange_link_timer(x, &x->u->response_timeout, on_response_timeout);
}

/* Delivers what the buffer holds. Returns 1 when the exchange is gone, 0 otherwise. */
static int process_body(est_exchange_t *x, int eof)
{
    if (x->paused)
        return 0;
    h2o_buffer_t *in = x->preq.conn->sock->input;
    size_t total = in->size, decoded = 0, used = 0;
    const char *err = NULL;
    /* an empty h2o_buffer_t may have no storage yet: never hand NULL on (callers may memcpy) */
    char *bytes = in->bytes != NULL ? in->bytes : (char *)"";
    est_h1_body_status_t st = est_h1_body_read(&x->body, bytes, total, 0, &decoded, &used, &err);
    if (st == EST_H1_BODY_ERROR) {
        fail_after_head(x, EST_UERR_BAD_REPLY, err);
        return 1;
    }
    if (st == EST_H1_BODY_MORE && eof) {
        if (!est_h1_body_eof_ok(&x->body)) {
            fail_after_head(x, EST_UERR_RESET, "connection closed before the end of the body");
            return 1;
        }
        st = EST_H1_BODY_DONE; /* close-delimited */
    }
    /* bytes after the reply: the connection is out of sync, it is not reused */
    return deliver(x, bytes, decoded, st == EST_H1_BODY_DONE, used, used == total && x->body.mode != EST_H1_BODY_CLOSE);
}

/* Calls on_body, then consumes `consume` bytes of input; on `final` gives the connection back
 * (pooled when `reusable` and keep-alive) and frees the exchange. Returns 1 when x is gone. */
static int deliver(est_exchange_t *x, const char *bytes, size_t len, int final, size_t consume, int reusable)
{
    if (len == 0 && !final) {
        est_input_consume(&x->preq.conn->sock->input, consume);
        return 0;
    }
    if (bytes == NULL)
        bytes = ""; /* an empty h2o_buffer_t may have no storage yet */
    if (final && h2o_timeout_is_linked(&x->timer))
        h2o_timeout_unlink(&x->timer);
    x->hold_requested = 0;
    est_exchange_user_call(x);
    x->delivering = consume;
    int rv = x->cb.on_body(x, x->data, bytes, len, final);
    x->delivering = 0;
    if (est_exchange_user_return(x))
        return 1;
    if (x->hold_requested && !final && rv == 0) {
        /* est_exchange_hold: the caller keeps `bytes`; consumed at est_exchange_release */
        x->hold_requested = 0;
        x->held = consume;
        return 0;
    }
    x->hold_requested = 0;
    if (final)
        h2o_buffer_consume(&x->preq.conn->sock->input, consume); /* frees an emptied buffer: the connection may idle */
    else
        est_input_consume(&x->preq.conn->sock->input, consume);
    if (final) {
        /* a write still pending (the server answered early) means the connection is not reusable,
         * and x->head_buf must not be freed under it */
        est_exchange_exit(x, reusable && x->keepalive && rv == 0 && !x->write_pending && (!x->req->body_stream || x->body_done));
        return 1;
    }
    if (rv != 0) {
        est_exchange_exit(x, 0);
        return 1;
    }
    return 0;
}

static void fail_after_head(est_exchange_t *x, est_uerr_t err, const char *msg)
{
    x->u->stats.attempts_failed[err]++;
    x->span_err = (unsigned char)(err + 1);
    est_log_debug("upstream '%s': exchange with %s failed after the head: %s (%s)", x->u->conf->name, est_exchange_address(x),
                  est_uerr_name(err), msg);
    est_exchange_end_attempt(x, 0);
    finish_error(x, err, msg);
}

/* ---------------------------------------------------------------- retries */

static int may_retry(est_exchange_t *x, est_uerr_t err, uint64_t *wait)
{
    est_upstream_t *u = x->u;
    /* the retry budget: this exchange's own earlier retry does not count against it */
    est_retry_ask_t ask = {.attempts = x->info.attempts,
                           .err = err,
                           .is_idempotent = x->req->is_idempotent,
                           .sent = x->sent,
                           .now = h2o_now(u->set->loop),
                           .deadline = x->deadline,
                           .active_requests = u->active_requests,
                           .active_retries = u->active_retries - (x->counted_retry ? 1 : 0)};
    switch (est_retry_decide(u->conf, &ask, &u->set->seed, wait)) {
    case EST_RETRY_YES:
        return 1;
    case EST_RETRY_NO_BUDGET:
        u->stats.retries_budget_exceeded++;
        est_log_debug("upstream '%s': retry budget exhausted (%zu retries among %zu requests), not retrying", u->conf->name,
                      u->active_retries, u->active_requests);
        return 0;
    default:
        return 0;
    }
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
        est_exchange_defer(x, on_deferred_start);
    else
        arm_wheel(x);
}

static void attempt_failed(est_exchange_t *x, est_uerr_t err, const char *msg)
{
    est_upstream_t *u = x->u;
    u->stats.attempts_failed[err]++;
    est_log_debug("upstream '%s': attempt %u to %s failed: %s (%s)", u->conf->name, x->info.attempts,
                  est_exchange_address(x)[0] ? x->info.address : "no address", est_uerr_name(err), msg);
    int was_reused = x->info.reused, got = x->got_bytes, sent = x->sent;
    x->span_err = (unsigned char)(err + 1);
    est_exchange_end_attempt(x, 0);
    x->info.error = err;
    if (x->parent != NULL) {
        /* (hedging) a hedge is never retried; the last failure of a waiting parent decides */
        est_exchange_t *p = est_hedge_child_failed(x);
        if (p != NULL)
            after_hedges_failed(p, err, msg);
        return;
    }
    if (x->hedges != NULL) {
        /* (hedging) no retry while a hedge still runs: wait for it (the deadline still applies) */
        x->hedge_wait = 1;
        x->hedge_at = 0;
        x->state = EST_X_BACKOFF;
        x->backoff_at = UINT64_MAX;
        arm_wheel(x);
        return;
    }
    if (x->body_started) { /* a streamed body was consumed: it cannot be sent again */
        finish_error(x, err, msg);
        return;
    }

    /* a pooled connection the server closed as we sent: once more on a fresh one, uncounted */
    if (err == EST_UERR_RESET && was_reused && !got && (x->req->is_idempotent || !sent)) {
        x->transparent = 1;
        x->preq.force_new = 1;
        x->state = EST_X_DEFERRED;
        est_exchange_defer(x, on_deferred_start);
        return;
    }
    uint64_t wait;
    if (may_retry(x, err, &wait)) {
        schedule_retry(x, wait);
        return;
    }
    finish_error(x, err, msg);
}

/* (hedging) every attempt of x failed, its own first: retried as any failed attempt, or failed */
static void after_hedges_failed(est_exchange_t *x, est_uerr_t err, const char *msg)
{
    uint64_t wait;
    x->info.error = err;
    if (may_retry(x, err, &wait)) {
        schedule_retry(x, wait);
        return;
    }
    finish_error(x, err, msg);
}
