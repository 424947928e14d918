/*
 * estuary - streaming reverse proxy.
 *
 * Body relay with a read-ahead buffer and backpressure (SPEC "Client limits", docs/streaming.md).
 *
 * proxy.buffer (route->proxy_buffer, B): the backend's reply is read without waiting for the
 * client while fewer than B bytes are buffered and not yet accepted by the client (the chunk
 * in flight in h2o plus `pending`). A reply up to B bytes is thus read whole: the exchange
 * ends and its connection goes back to the pool at once, however slowly the client reads.
 * Past B unaccepted bytes the exchange is paused (the upstream socket is no longer read, so
 * TCP pushes back on the backend) until h2o's proceed() shows the client took some.
 *
 * Copy path (replies up to B, and whenever h2o is still writing): the bytes are copied into
 * `pending`; proceed() swaps `pending` with `sending` and sends. Zero-copy path (a reply known
 * or found to be larger than B, h2o idle): the bytes are sent straight from the exchange's
 * input buffer and held there (est_exchange_hold: the upstream is not read meanwhile) until
 * proceed() releases them. Memory per request: B plus one socket read (bounded by the
 * upstream socket's fixed receive buffer, see limit_rcvbuf in upstream/pool.c).
 *
 * client_send_timeout (conf->client_send_timeout_ms): armed at every h2o_send, cleared by
 * proceed(); after the last send it runs until h2o disposes the request (the final bytes are
 * written). When it fires the exchange is released and the client's socket is shut down:
 * h2o then sees the error and disposes the request itself (HTTP/2: the whole connection, as
 * SPEC says). HTTP/1.1 asks TCP whether the client acknowledged any byte (TCP_INFO
 * bytes_acked) in the last period, so a client that reads slowly but steadily is not cut in
 * the middle of a large chunk; the first expiry of a send only samples it (no syscall on the
 * fast path), so a stalled HTTP/1.1 client is closed after two periods.
 *
 * The head goes out as soon as the upstream's head is parsed: h2o writes the headers with the
 * first h2o_send, so when no body byte came with the head, an empty send is made from a 0 ms
 * timer (the bytes that arrived with the head are delivered right after on_head, in the same
 * read callback, and then travel with the headers).
 *
 * h2o may dispose the request (and this object, in its pool) from inside an h2o_send that ends
 * the response (final or error): every h2o_send here is the last thing its caller does.
 */
#include "proxy/proxy.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <linux/tcp.h>

#include <time.h>

#include "admin/metrics.h"
#include "cache/serve.h"
#include "common/log.h"
#include "h1/conn.h"
#include <h2o/tunnel.h>

/*
 * Read-ahead bytes (`pending` + `sending`) held by the proxy on one worker thread, and their
 * bound: past it, replies get no read-ahead (as with proxy.buffer 0: each waits for the
 * client like a large reply does), so that many stalled clients (e.g. HTTP/2 streams with a
 * zero window, up to 100 per connection) cannot turn proxy.buffer into unbounded memory.
 */
#define READ_AHEAD_BUDGET (32 * 1024 * 1024)
static _Thread_local size_t read_ahead_total;

typedef struct st_proxy_t {
    h2o_generator_t gen; /* first: h2o hands it back to proceed/stop */
    est_request_t *r;
    est_exchange_t *x;
    est_upstream_request_t ureq;
    h2o_buffer_t *sending, *pending;
    size_t buffer;     /* proxy.buffer: unaccepted bytes read ahead of the client */
    size_t charged;    /* bytes of `pending` + `sending` counted in read_ahead_total */
    size_t length;     /* the reply's Content-Length, SIZE_MAX when not given */
    uint64_t received; /* body bytes delivered by the exchange so far */
    uint64_t acked;    /* HTTP/1.1: the client's TCP bytes_acked at the last send timeout */
    int acked_valid;   /* `acked` was sampled during the current send */
    int inflight;      /* h2o_send called, proceed not yet */
    int got_final;     /* the upstream body ended cleanly */
    int got_error;     /* the upstream failed after the head */
    int paused;        /* est_exchange_pause by us (read-ahead full) */
    int started;       /* h2o_start_response called */
    int finished;      /* the last h2o_send (final or error) was made */
    int sent_any;      /* h2o_send called at least once (the headers are out) */
    int held;          /* the inflight send points into the exchange's buffer (est_exchange_hold) */
    /* streamed request body (HTTP/1.1, docs/streaming.md) */
    int body_begun;     /* est_h1_body_start called */
    int exchange_begun; /* est_exchange_start called */
    int have_first;     /* `first` (the first delivery) waits for the exchange's first on_send_ready */
    int first_final;
    h2o_iovec_t first;
    /* one timer: 0 ms head timer until the first send, then client_send_timeout */
    h2o_timeout_entry_t timer;
    /* response cache and coalescing (cache/serve.h, docs/cache.md); c.store NULL: the route is not cached */
    est_cache_req_t c;
    est_cache_entry_t *fill; /* the reply being copied as it streams (for the store and/or waiters) */
    int fill_store;          /* `fill` is inserted at the end (storable); else only shared with waiters */
} proxy_t;

static void cancel_refreshes(void);

void est_proxy_worker_exit(void)
{
    cancel_refreshes();
    est_cache_req_worker_exit();
}

static void cancel_timer(proxy_t *p)
{
    if (h2o_timeout_is_linked(&p->timer))
        h2o_timeout_unlink(&p->timer);
}

/* the client's TCP bytes_acked (RFC 4898 tcpEStatsAppHCThruOctetsAcked); -1 when unknown */
static int tcp_bytes_acked(int fd, uint64_t *out)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 || len < offsetof(struct tcp_info, tcpi_bytes_acked) + 8)
        return -1;
    *out = ti.tcpi_bytes_acked;
    return 0;
}

static int client_fd(h2o_req_t *req)
{
    if (req->conn == NULL || req->conn->callbacks->get_socket == NULL)
        return -1;
    h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
    return sock != NULL ? h2o_socket_get_fd(sock) : -1;
}

static void on_send_timeout(h2o_timeout_entry_t *entry);

static void arm_send_timer(proxy_t *p)
{
    cancel_timer(p);
    uint64_t ms = p->r->conf->client_send_timeout_ms;
    if (ms == 0)
        return;
    p->timer.cb = on_send_timeout;
    h2o_timeout_link(p->r->svc->loop, p->r->svc->get_timeout(p->r->svc, ms), &p->timer);
}

/* the client is gone or cut: the exchange goes (closed, not pooled), no entry is filled, and the
 * coalesced waiters are not failed (the oldest one goes to the backend) */
static void release_upstream(proxy_t *p)
{
    p->finished = 1;
    if (p->x != NULL) {
        est_exchange_cancel(p->x);
        p->x = NULL;
    }
    if (p->fill != NULL)
        p->fill = (est_cache_entry_release(p->fill), NULL);
    if (p->c.flight != NULL) { /* the waiters are not failed: the oldest one goes to the backend */
        est_coalesce_flight_t *f = p->c.flight;
        p->c.flight = NULL;
        est_coalesce_abandon(f);
    }
}

/*
 * The client accepted no response byte for client_send_timeout (SPEC "Client limits"): the
 * upstream exchange is released now and the client's socket shut down; h2o sees the error on
 * its next read or write and disposes the request (our on_dispose). The fd stays h2o's. With
 * SO_LINGER 0 its close resets the connection, so the unread bytes do not linger in the kernel.
 */
static void on_send_timeout(h2o_timeout_entry_t *entry)
{
    proxy_t *p = H2O_STRUCT_FROM_MEMBER(proxy_t, timer, entry);
    est_request_t *r = p->r;
    int fd = client_fd(r->req);
    uint64_t acked;
    if (fd >= 0 && r->req->version < 0x200 && tcp_bytes_acked(fd, &acked) == 0 && (!p->acked_valid || acked != p->acked)) {
        /* not sampled yet during this send, or the client acknowledged bytes since: it is
         * reading, only slower than one chunk per period; look again one period later */
        p->acked = acked;
        p->acked_valid = 1;
        arm_send_timer(p);
        return;
    }
    est_log_debug("proxy: client accepted no response bytes for %llu ms: closing its connection",
                  (unsigned long long)r->conf->client_send_timeout_ms);
    release_upstream(p);
    if (fd < 0)
        return; /* no socket to shut (not expected): the upstream is released at least */
    if (r->svc->conns != NULL)
        r->svc->conns->closed[EST_CLOSE_SEND_TIMEOUT]++;
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    shutdown(fd, SHUT_RDWR);
}

/* bytes read from the upstream that the client has not accepted yet (the held ones excepted:
 * the exchange itself is paused while it holds them) */
static size_t unaccepted(const proxy_t *p)
{
    return p->pending->size + (p->inflight && !p->held ? p->sending->size : 0);
}

/* keeps read_ahead_total in step with this request's buffers */
static void charge(proxy_t *p, size_t now)
{
    read_ahead_total = read_ahead_total - p->charged + now;
    p->charged = now;
}

/* the read-ahead this request may have now: proxy.buffer, or 0 past the worker's budget */
static size_t read_ahead(const proxy_t *p)
{
    return read_ahead_total <= READ_AHEAD_BUDGET ? p->buffer : 0;
}

/* pauses the exchange when the read-ahead is full, resumes it when there is room again */
static void update_flow(proxy_t *p)
{
    charge(p, p->pending->size + p->sending->size);
    if (p->x == NULL || p->finished)
        return;
    size_t u = unaccepted(p), limit = read_ahead(p);
    if (!p->paused && p->inflight && u != 0 && u >= limit) {
        p->paused = 1;
        est_exchange_pause(p->x);
    } else if (p->paused && (!p->inflight || u < limit)) {
        p->paused = 0;
        est_exchange_resume(p->x);
    }
}

/* h2o_send with the send timer armed; the caller must not touch `p` afterwards */
static void send_chunk(proxy_t *p, h2o_iovec_t *buf, size_t bufcnt, h2o_send_state_t state)
{
    p->sent_any = 1;
    arm_send_timer(p); /* replaces the head timer */
    h2o_send(p->r->req, buf, bufcnt, state);
}

/* Sends `pending` when h2o is idle. Returns 1 when it called h2o_send (then `p` may be gone). */
static int flush(proxy_t *p)
{
    if (p->inflight || p->finished)
        return 0;
    h2o_buffer_t *t = p->sending;
    p->sending = p->pending;
    p->pending = t;
    if (p->pending->size != 0)
        h2o_buffer_consume(&p->pending, p->pending->size);
    h2o_send_state_t state = H2O_SEND_STATE_IN_PROGRESS;
    if (p->got_error)
        state = H2O_SEND_STATE_ERROR;
    else if (p->got_final)
        state = H2O_SEND_STATE_FINAL;
    if (state != H2O_SEND_STATE_IN_PROGRESS)
        p->finished = 1;
    else if (p->sending->size == 0)
        return 0; /* nothing to say yet */
    h2o_iovec_t buf = h2o_iovec_init(p->sending->bytes, p->sending->size);
    p->inflight = state == H2O_SEND_STATE_IN_PROGRESS;
    update_flow(p);
    send_chunk(p, &buf, buf.len != 0 ? 1 : 0, state);
    return 1;
}

static void on_head_timer(h2o_timeout_entry_t *entry)
{
    proxy_t *p = H2O_STRUCT_FROM_MEMBER(proxy_t, timer, entry);
    if (p->sent_any || p->inflight || p->finished)
        return;
    p->inflight = 1;
    send_chunk(p, NULL, 0, H2O_SEND_STATE_IN_PROGRESS);
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
    proxy_t *p = (proxy_t *)gen;
    p->inflight = 0;
    p->acked_valid = 0;
    cancel_timer(p);
    if (p->held) {
        /* the held bytes are written: let the exchange consume them and read on */
        p->held = 0;
        if (p->x != NULL)
            est_exchange_release(p->x);
    }
    if (p->sending->size != 0)
        h2o_buffer_consume(&p->sending, p->sending->size);
    if (flush(p))
        return;
    update_flow(p);
}

static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
    /* the client went away mid-body: release the upstream (closed, not pooled) */
    proxy_t *p = (proxy_t *)gen;
    cancel_timer(p);
    release_upstream(p);
}

static void on_dispose(void *data)
{
    proxy_t *p = data;
    charge(p, 0);
    cancel_timer(p);
    if (p->x != NULL)
        est_exchange_cancel(p->x);
    h2o_buffer_dispose(&p->sending);
    h2o_buffer_dispose(&p->pending);
    if (p->fill != NULL)
        est_cache_entry_release(p->fill);
    est_cache_req_dispose(&p->c); /* a waiter leaves, a flight goes to the oldest waiter, references go */
}

static int header_is(const struct phr_header *h, const char *name, size_t len)
{
    return h->name_len == len && strncasecmp(h->name, name, len) == 0;
}

/* outlives the request: h2o disposes the request before the upgrade completes */
typedef struct st_ws_upgrade_t {
    h2o_context_t *ctx;
    h2o_timeout_t *idle_timeout;
    h2o_socket_t *upstream;
} ws_upgrade_t;

static void on_upgrade_complete(void *data, h2o_socket_t *client_sock, size_t reqsize)
{
    ws_upgrade_t *ws = data;
    if (client_sock != NULL) {
        h2o_buffer_consume(&client_sock->input, reqsize);
        h2o_tunnel_establish(ws->ctx, client_sock, ws->upstream, ws->idle_timeout);
    } else {
        h2o_socket_close(ws->upstream);
    }
    free(ws);
}

/*
 * Response cache and request coalescing (SPEC "Caching, coalescing and hedging",
 * docs/cache.md). A cached route looks its key up before going to the backend; a fresh hit is
 * sent from the stored entry by reference. A forwarded GET copies the reply into an entry while
 * it streams to the client (nothing waits for the copy; past max_entry the copy is dropped and
 * the stream goes on), inserted at the end when storable, and handed to the requests that
 * waited on this one (coalescing) whether storable or not (a 503 is shared too).
 */
/* the copy of the reply is given up (over max_entry, out of memory, or the exchange failed) */
static void drop_fill(proxy_t *p)
{
    if (p->fill != NULL) {
        est_cache_entry_release(p->fill);
        p->fill = NULL;
    }
    est_cache_req_finish_flight(&p->c, NULL, est_coalesce_err_unshareable); /* the waiters go to the backend themselves */
}

/* the reply ended cleanly: store it when storable, hand it to the waiters */
static void complete_fill(proxy_t *p)
{
    est_cache_entry_t *e = p->fill;
    if (e == NULL) {
        est_cache_req_finish_flight(&p->c, NULL, est_coalesce_err_unshareable);
        return;
    }
    p->fill = NULL;
    est_cache_entry_freeze(e);
    if (p->fill_store && est_cache_store_insert(p->c.store, e) == 0)
        est_cache_req_stored(&p->c);
    est_cache_req_finish_flight(&p->c, e, NULL);
    est_cache_entry_release(e);
}

/* answers with the stale entry instead of the backend's failure; the caller must not touch `p` afterwards */
static void serve_stale_on_error(proxy_t *p, int fwd_status)
{
    if (p->fill != NULL)
        p->fill = (est_cache_entry_release(p->fill), NULL);
    p->started = 1;
    p->finished = 1;
    est_cache_req_serve_stale_on_error(&p->c, fwd_status);
}

/*
 * On the backend's head (not 101): the Cache-Status of a cached route, and the entry the body
 * is copied into when the reply is storable or waiters share it. `kept` are the header fields
 * the proxy forwards (lower-case names), the ones an entry keeps.
 */
static void cache_on_head(proxy_t *p, int status, const struct phr_header *headers, size_t num_headers,
                          const est_cache_field_t *kept, size_t num_kept)
{
    est_cache_req_t *c = &p->c;
    h2o_req_t *req = p->r->req;
    int64_t now = est_cache_wall_ms();
    est_cache_resp_facts_t rs;
    est_cache_resp_facts_init(&rs);
    for (size_t i = 0; i != num_headers; ++i)
        est_cache_resp_facts_add(&rs, headers[i].name, headers[i].name_len, headers[i].value, headers[i].value_len, now / 1000);
    int64_t cl = req->res.content_length != SIZE_MAX && req->res.content_length <= INT64_MAX ? (int64_t)req->res.content_length
                                                                                             : -1;
    est_cache_decision_t d;
    memset(&d, 0, sizeof(d));
    int storable = 0;
    if (c->store != NULL && c->may_store && c->key != NULL) {
        est_cache_decide(&c->rq, status, &rs, &c->pol, cl, now, &d);
        storable = d.storable;
        if (!storable)
            c->cs.detail = d.detail;
    }
    est_cache_req_forwarded(c, status, storable); /* "stored" when the reply is storable and fits so far */
    if (!storable && c->flight == NULL)
        return;
    p->fill = est_cache_req_entry_new(storable ? c->key : "", storable ? c->key_len : 0, status, kept, num_kept, &rs, &c->hs,
                                      storable ? &d : NULL, c->pol.max_entry, cl, c->request_time_ms, now);
    p->fill_store = storable && p->fill != NULL;
    if (p->fill == NULL)
        est_cache_req_finish_flight(c, NULL, est_coalesce_err_unshareable);
}

static void start_exchange(proxy_t *p);
static int start_refresh(est_cache_req_t *c, est_cache_entry_t *stale);

/* a coalescing waiter goes to the backend (promoted to leader, or the leader's reply was not shareable) */
static void cache_forward(est_cache_req_t *c)
{
    start_exchange(c->data);
}

static const est_cache_req_ops_t cache_ops = {cache_forward, start_refresh};

/*
 * Before the backend: the cache lookup and coalescing of a GET/HEAD on a cached or coalescing
 * route (cache/serve.h). Returns 1 when the request is answered or waits on another one, 0 to
 * forward it.
 */
static int cache_begin(proxy_t *p)
{
    if (p->ureq.want_upgrade)
        return 0;
    return est_cache_req_begin(&p->c, p->r, &cache_ops, p);
}

/*
 * What on_head does with one upstream response header. Names h2o interns as tokens are
 * classified by address (h2o_lookup_token on the lower-cased name, then pointer compares),
 * unless the reply has a Connection header (a name it lists is hop-by-hop): then, and for
 * names that are not tokens, the string checks run as for request headers.
 */
enum { RES_KEEP, RES_DROP, RES_CONTENT_LENGTH };

static int classify_response_header(const h2o_token_t *t, const h2o_iovec_t *name, const h2o_iovec_t *connection, int is_upgrade)
{
    if (t == H2O_TOKEN_CONTENT_LENGTH)
        return RES_CONTENT_LENGTH;
    if (is_upgrade && (t == H2O_TOKEN_UPGRADE || t == H2O_TOKEN_CONNECTION)) /* h2o_http1_upgrade writes its own Connection */
        return t == H2O_TOKEN_UPGRADE ? RES_KEEP : RES_DROP;
    /* h2o writes its own Date and Server; the request id is ours */
    if (t == H2O_TOKEN_DATE || t == H2O_TOKEN_SERVER)
        return RES_DROP;
    if (t != NULL && connection->len == 0)
        return t == H2O_TOKEN_CONNECTION || t == H2O_TOKEN_KEEP_ALIVE || t == H2O_TOKEN_TE || t == H2O_TOKEN_TRANSFER_ENCODING ||
                       t == H2O_TOKEN_UPGRADE || t == H2O_TOKEN_HTTP2_SETTINGS || t == H2O_TOKEN_PROXY_AUTHENTICATE ||
                       t == H2O_TOKEN_PROXY_AUTHORIZATION
                   ? RES_DROP
                   : RES_KEEP;
    if (est_is_hop_by_hop(name->base, name->len, connection))
        return RES_DROP;
    if (name->len == 12 && memcmp(name->base, "x-request-id", 12) == 0)
        return RES_DROP;
    return RES_KEEP;
}

/*
 * The background refresh of a stale entry (stale-while-revalidate, RFC 5861 3): exactly one per
 * entry across the process (the entry's refresh flag), started by the request that found the
 * entry stale, which is answered with the stale reply at once; the refresh is a detached
 * exchange owned by the worker (a heap object with its own copy of the request), so it neither
 * delays nor depends on that client. It pins the worker's view of the configuration (the
 * upstream set it runs on) until it ends, and is cancelled if the worker exits first. A
 * storable reply replaces the entry; anything else releases the refresh flag, so a later stale
 * hit may try again.
 */
typedef struct st_refresh_t {
    est_cache_refresh_t base;    /* the copies (also ureq and the reply's kept fields), the stale entry, the worker's list */
    est_upstream_request_t ureq; /* the exchange reads it until its callback has returned */
    const est_route_conf_t *route;
    est_cache_entry_t *fill;
    est_exchange_t *x;
    int64_t request_time_ms;
} refresh_t;

static _Thread_local est_cache_refresh_t *refreshes;

static void refresh_free_fn(est_cache_refresh_t *base)
{
    free(base);
}

/* the refresh is over (stored, or not: the flag goes back); its memory goes once the exchange has let go of it */
static void refresh_end(refresh_t *rf, int stored)
{
    rf->x = NULL;
    if (rf->fill != NULL)
        est_cache_entry_release(rf->fill);
    rf->fill = NULL;
    est_cache_refresh_end(&rf->base, stored);
}

static int refresh_on_head(est_exchange_t *x, void *data, int status, const struct phr_header *headers, size_t num_headers)
{
    refresh_t *rf = data;
    int64_t now = est_cache_wall_ms();
    est_cache_resp_facts_t rs;
    est_cache_resp_facts_init(&rs);
    h2o_iovec_t connection = {NULL, 0};
    int64_t cl = -1;
    for (size_t i = 0; i != num_headers; ++i) {
        est_cache_resp_facts_add(&rs, headers[i].name, headers[i].name_len, headers[i].value, headers[i].value_len, now / 1000);
        if (headers[i].name_len == 10 && strncasecmp(headers[i].name, "connection", 10) == 0)
            connection = h2o_iovec_init(headers[i].value, headers[i].value_len);
        if (headers[i].name_len == 14 && strncasecmp(headers[i].name, "content-length", 14) == 0) {
            size_t v = h2o_strtosize(headers[i].value, headers[i].value_len);
            cl = v != SIZE_MAX && v <= INT64_MAX ? (int64_t)v : -1;
        }
    }
    est_cache_decision_t d;
    memset(&d, 0, sizeof(d));
    est_cache_decide(&rf->base.rq, status, &rs, &rf->base.pol, cl, now, &d);
    if (!d.storable) {
        refresh_end(rf, 0);
        return -1;
    }
    /* the fields the proxy forwards, as an entry keeps them (names lower-case) */
    est_cache_field_t *kept = h2o_mem_alloc_pool(&rf->base.pool, sizeof(*kept) * (num_headers ? num_headers : 1));
    size_t nk = 0;
    for (size_t i = 0; i != num_headers; ++i) {
        const struct phr_header *h = headers + i;
        char *lname = h2o_mem_alloc_pool(&rf->base.pool, h->name_len ? h->name_len : 1);
        est_lower_copy(lname, h->name, h->name_len);
        h2o_iovec_t name = h2o_iovec_init(lname, h->name_len);
        const h2o_token_t *t = h2o_lookup_token(name.base, name.len);
        if (classify_response_header(t, &name, &connection, 0) != RES_KEEP)
            continue;
        if (rf->route->cors != NULL && name.len > 15 && memcmp(name.base, "access-control-", 15) == 0)
            continue;
        kept[nk++] = (est_cache_field_t){name.base, name.len, h->value, h->value_len}; /* copied by create */
    }
    rf->fill = est_cache_req_entry_new(rf->base.key, rf->base.key_len, status, kept, nk, &rs, &rf->base.hs, &d,
                                       rf->base.pol.max_entry, cl, rf->request_time_ms, now);
    if (rf->fill == NULL) {
        refresh_end(rf, 0);
        return -1;
    }
    return 0;
}

static int refresh_on_body(est_exchange_t *x, void *data, const char *bytes, size_t len, int is_final)
{
    refresh_t *rf = data;
    if (len != 0 && est_cache_entry_append(rf->fill, bytes, len) != 0) {
        refresh_end(rf, 0); /* over max_entry */
        return -1;
    }
    if (!is_final)
        return 0;
    rf->x = NULL;
    int stored = est_cache_store_insert(rf->base.store, rf->fill) == 0;
    if (stored) {
        est_worker_metrics_t *m = rf->base.svc->metrics;
        if (m != NULL && rf->route->index < m->num_routes)
            ++m->routes[rf->route->index].cache[EST_CACHE_RESULT_STORED];
    }
    refresh_end(rf, stored);
    return 0;
}

static void refresh_on_error(est_exchange_t *x, void *data, est_uerr_t err, const char *message)
{
    refresh_t *rf = data;
    rf->x = NULL;
    refresh_end(rf, 0);
}

static const est_exchange_cb_t refresh_cb = {refresh_on_head, refresh_on_body, refresh_on_error};


/* the worker exits: its refreshes stop (before its views and their upstream sets go) */
static void cancel_refreshes(void)
{
    while (refreshes != NULL) {
        refresh_t *rf = (refresh_t *)refreshes;
        if (!rf->base.ended) {
            if (rf->x != NULL)
                est_exchange_cancel(rf->x);
            refresh_end(rf, 0);
        }
        est_cache_refresh_free(&rf->base);
    }
}

/* starts the refresh of `stale` (whose refresh flag the caller won); 0, or -1 (the caller releases the flag) */
static int start_refresh(est_cache_req_t *c, est_cache_entry_t *stale)
{
    proxy_t *p = c->data;
    est_request_t *r = p->r;
    h2o_req_t *req = r->req;
    if (r->svc->pin == NULL || r->svc->unpin == NULL)
        return -1;
    refresh_t *rf = calloc(1, sizeof(*rf));
    if (rf == NULL)
        return -1;
    est_cache_refresh_init(&rf->base, c, &req->headers, refresh_free_fn);
    rf->route = r->route;
    rf->ureq = p->ureq;
    rf->ureq.method = h2o_iovec_init(H2O_STRLIT("GET"));
    rf->ureq.path = h2o_strdup(&rf->base.pool, p->ureq.path.base, p->ureq.path.len);
    if (p->ureq.host.base != NULL)
        rf->ureq.host = h2o_strdup(&rf->base.pool, p->ureq.host.base, p->ureq.host.len);
    rf->ureq.headers = est_cache_copy_headers(&rf->base.pool, p->ureq.headers, p->ureq.num_headers);
    rf->ureq.has_body = 0;
    rf->ureq.body = h2o_iovec_init(NULL, 0);
    rf->ureq.body_stream = 0;
    rf->ureq.want_upgrade = 0;
    rf->ureq.is_idempotent = 1;
    rf->ureq.trace = NULL; /* not part of the client's trace: that request is answered already */
    rf->ureq.deadline = h2o_now(r->svc->loop) + r->route->timeout_ms;
    rf->request_time_ms = est_cache_wall_ms();
    est_cache_refresh_start(&rf->base, &refreshes, stale);
    rf->x = est_exchange_start(est_upstream_set_get(r->svc->upstreams, r->route->proxy->upstream->index), &rf->ureq, &refresh_cb,
                               rf);
    if (rf->x == NULL) {
        est_cache_entry_release(rf->base.stale); /* its own reference; the flag is left to the caller */
        rf->base.stale = NULL;
        est_cache_refresh_free(&rf->base);
        return -1;
    }
    return 0;
}

static int on_head(est_exchange_t *x, void *data, int status, const struct phr_header *headers, size_t num_headers)
{
    proxy_t *p = data;
    h2o_req_t *req = p->r->req;
    h2o_iovec_t connection = {NULL, 0};
    for (size_t i = 0; i != num_headers; ++i)
        if (headers[i].name_len == 10 && header_is(headers + i, H2O_STRLIT("connection")))
            connection = h2o_iovec_init(headers[i].value, headers[i].value_len);

    est_request_trace_exchange(p->r, p->r->route->proxy->upstream->name, x, status, EST_UERR_NONE); /* (admin) access log */
    if (status >= 500 && est_cache_req_stale_if_error_ok(&p->c)) {
        p->x = NULL; /* aborted by the -1 */
        serve_stale_on_error(p, status);
        return -1;
    }
    req->res.status = status;
    req->res.reason = est_status_reason(status);
    int is_upgrade = status == 101 && p->ureq.want_upgrade;
    size_t own_headers = req->res.headers.size; /* ours (CORS, rate limit, request id): kept on an error */
    int want_fill = (p->c.store != NULL || p->c.flight != NULL) && !is_upgrade;
    est_cache_field_t *kept = want_fill ? h2o_mem_alloc_pool(&req->pool, sizeof(*kept) * (num_headers ? num_headers : 1)) : NULL;
    size_t num_kept = 0;
    for (size_t i = 0; i != num_headers; ++i) {
        const struct phr_header *h = headers + i;
        /* lower-cased on the stack for the token lookup; the reply's bytes die when on_head
         * returns, so what is kept is copied (a token's name is h2o's own) */
        char lname[64];
        char *nbuf = h->name_len <= sizeof(lname) ? lname : h2o_mem_alloc_pool(&req->pool, h->name_len);
        est_lower_copy(nbuf, h->name, h->name_len);
        h2o_iovec_t name = h2o_iovec_init(nbuf, h->name_len);
        const h2o_token_t *t = h2o_lookup_token(name.base, name.len);
        switch (classify_response_header(t, &name, &connection, is_upgrade)) {
        case RES_CONTENT_LENGTH: {
            size_t cl = h2o_strtosize(h->value, h->value_len);
            if (cl != SIZE_MAX)
                req->res.content_length = cl;
            continue;
        }
        case RES_DROP:
            continue;
        default:
            break;
        }
        /* on a route with "cors" estuary answers CORS (policy/cors.c): a backend's own
         * Access-Control-* would make two Allow-Origin values, which browsers refuse */
        if (p->r->route->cors != NULL && name.len > 15 && memcmp(name.base, "access-control-", 15) == 0)
            continue;
        h2o_iovec_t value = h2o_strdup(&req->pool, h->value, h->value_len);
        if (t != NULL) {
            h2o_add_header(&req->pool, &req->res.headers, t, NULL, value.base, value.len);
            name = t->buf;
        } else {
            if (nbuf == lname)
                name = h2o_strdup(&req->pool, lname, h->name_len);
            h2o_add_header_by_str(&req->pool, &req->res.headers, name.base, name.len, 0, NULL, value.base, value.len);
        }
        if (kept != NULL)
            kept[num_kept++] = (est_cache_field_t){name.base, name.len, value.base, value.len};
    }
    if (want_fill)
        cache_on_head(p, status, headers, num_headers, kept, num_kept);
    if (is_upgrade) {
        h2o_socket_t *upstream = est_exchange_steal_socket(x);
        if (upstream == NULL) { /* cannot happen on a fresh 101; never hand h2o a NULL socket */
            p->x = NULL;
            req->res.headers.size = own_headers; /* the upstream's headers go, ours stay */
            est_send_error(req, 502, "upstream_unavailable", "the upstream's upgraded connection is gone", p->r->request_id);
            return -1;
        }
        ws_upgrade_t *ws = h2o_mem_alloc(sizeof(*ws));
        ws->ctx = req->conn->ctx;
        /* idle = the upstream's response_timeout, the same rule as a proxied body ("no read
         * waits longer than response_timeout"); traffic either way re-arms it (docs/streaming.md) */
        ws->idle_timeout = p->r->svc->get_timeout(p->r->svc, p->r->route->proxy->upstream->response_timeout_ms);
        ws->upstream = upstream;
        p->x = NULL;
        p->finished = 1;
        est_h1_upgrade(req, on_upgrade_complete, ws);
        return -1;
    }
    p->started = 1;
    p->length = req->res.content_length;
    h2o_start_response(req, &p->gen);
    p->timer.cb = on_head_timer;
    h2o_timeout_link(p->r->svc->loop, p->r->svc->get_timeout(p->r->svc, 0), &p->timer);
    return 0;
}

/* a reply known (Content-Length) or found (bytes so far) to be larger than the read-ahead
 * buffer: it streams with backpressure, so its chunks may be sent without a copy */
static int is_large(const proxy_t *p, size_t len)
{
    size_t limit = read_ahead(p);
    if (p->length != SIZE_MAX)
        return p->length > limit;
    return p->received + len > limit;
}

static int on_body(est_exchange_t *x, void *data, const char *bytes, size_t len, int is_final)
{
    proxy_t *p = data;
    if (p->fill != NULL) { /* the copy for the cache / the waiters, next to the stream */
        if (len != 0 && est_cache_entry_append(p->fill, bytes, len) != 0)
            drop_fill(p); /* over max_entry: the reply streams on, uncopied */
        else if (is_final)
            complete_fill(p);
    } else if (is_final && p->c.flight != NULL) {
        est_cache_req_finish_flight(&p->c, NULL, est_coalesce_err_unshareable);
    }
    if (p->finished)
        return -1;
    if (!is_final && len != 0 && !p->inflight && p->pending->size == 0 && is_large(p, len)) {
        /* zero-copy: send from the exchange's buffer, held until proceed */
        p->received += len;
        h2o_iovec_t buf = h2o_iovec_init(bytes, len);
        est_exchange_hold(x);
        p->held = 1;
        p->inflight = 1;
        send_chunk(p, &buf, 1, H2O_SEND_STATE_IN_PROGRESS);
        return 0;
    }
    p->received += len;
    if (len != 0) {
        h2o_iovec_t dst = h2o_buffer_reserve(&p->pending, len);
        memcpy(dst.base, bytes, len);
        p->pending->size += len;
    }
    if (is_final) {
        p->x = NULL;
        p->got_final = 1;
    }
    if (flush(p))
        return 0;
    update_flow(p);
    return 0;
}

static void on_error(est_exchange_t *x, void *data, est_uerr_t err, const char *message)
{
    proxy_t *p = data;
    p->x = NULL;
    est_request_t *r = p->r;
    if (!p->started)
        est_request_trace_exchange(r, r->route->proxy->upstream->name, x, 0, err); /* (admin) access log */
    if (!p->started && est_cache_req_stale_if_error_ok(&p->c)) {
        serve_stale_on_error(p, 0);
        return;
    }
    if (p->started && (p->fill != NULL || p->c.flight != NULL))
        drop_fill(p); /* a broken reply is neither stored nor shared */
    if (!p->started) {
        char msg[256];
        const est_upstream_conf_t *u = r->route->proxy->upstream;
        int is_timeout = est_uerr_is_timeout(err);
        if (is_timeout) {
            char dur[32];
            est_format_duration(err == EST_UERR_DEADLINE ? r->route->timeout_ms : u->response_timeout_ms, dur, sizeof(dur));
            snprintf(msg, sizeof(msg), "upstream '%s' did not answer within %s", u->name, dur);
        } else {
            snprintf(msg, sizeof(msg), "upstream '%s' is unavailable (%s%s%s)", u->name, est_uerr_name(err),
                     message != NULL ? ": " : "", message != NULL ? message : "");
        }
        int st = err == EST_UERR_OVERLOADED ? 503 : is_timeout ? 504 : 502;
        const char *code = err == EST_UERR_OVERLOADED ? "upstream_overloaded"
                           : is_timeout               ? "upstream_timeout"
                                                      : "upstream_unavailable";
        if (p->c.flight != NULL) /* the waiters get the same error */
            est_cache_req_finish_flight(&p->c, NULL, est_cache_req_shared_error(&p->c, st, code, msg));
        if (p->c.store != NULL) {
            p->c.cs.fwd_status = 0;
            est_cache_req_add_status(r->req, &p->c.cs);
        }
        p->started = 1;
        est_send_error(r->req, st, code, msg, r->request_id);
        return;
    }
    /* after the head: the client must see a broken response, never a clean short one */
    est_log_debug("proxy: upstream '%s' failed mid-body: %s", r->route->proxy->upstream->name, est_uerr_name(err));
    p->got_error = 1;
    flush(p);
}

static const est_exchange_cb_t exchange_cb = {on_head, on_body, on_error};

/*
 * Streamed request body (HTTP/1.1 on a proxy route, docs/streaming.md): one delivery at a
 * time travels from the client's connection to the backend's. The client is read only when
 * the exchange has written the previous bytes (on_send_ready), and the exchange writes only
 * what the client sent, so both sides push back and memory stays at one socket read.
 *
 * Order: the body's first bytes are read (and their framing checked) before the exchange
 * starts, so that a body malformed from its start never reaches a backend (SPEC "Request
 * framing"); they are written once the exchange's connection is ready. A client that sent
 * `Expect: 100-continue` sends nothing before its 100, which is sent only once a backend
 * connection is ready (SPEC "Proxy routes"): for it the exchange starts first, and its first
 * on_send_ready starts the body.
 */
static void start_exchange(proxy_t *p);

static void on_client_body(void *data, const char *bytes, size_t len, int is_final)
{
    proxy_t *p = data;
    if (!p->exchange_begun) {
        p->first = h2o_iovec_init(bytes, len);
        p->first_final = is_final;
        p->have_first = 1;
        start_exchange(p);
        return;
    }
    if (p->x == NULL)
        return; /* the exchange is over (answered, failed): the rest of the body is not read */
    est_exchange_write_body(p->x, bytes, len, is_final); /* on failure on_error follows */
}

static void on_send_ready(est_exchange_t *x, void *data)
{
    proxy_t *p = data;
    h2o_req_t *req = p->r->req;
    if (!p->body_begun) {
        p->body_begun = 1;
        est_h1_body_start(req, on_client_body, p);
        return;
    }
    if (p->have_first) {
        p->have_first = 0;
        est_exchange_write_body(x, p->first.base, p->first.len, p->first_final);
        return;
    }
    est_h1_body_proceed(req); /* the last bytes are written: release them, read on */
}

static const est_exchange_cb_t exchange_stream_cb = {on_head, on_body, on_error, on_send_ready};

void est_proxy_handle(est_request_t *r)
{
    h2o_req_t *req = r->req;
    proxy_t *p = est_alloc_disposable(&req->pool, r->disposers, sizeof(*p), on_dispose);
    memset(p, 0, sizeof(*p));
    p->gen.proceed = on_proceed;
    p->gen.stop = on_stop;
    p->timer.cb = on_head_timer;
    p->r = r;
    p->buffer = r->route->proxy_buffer < SIZE_MAX ? (size_t)r->route->proxy_buffer : SIZE_MAX;
    p->length = SIZE_MAX;
    h2o_buffer_init(&p->sending, &h2o_socket_buffer_prototype);
    h2o_buffer_init(&p->pending, &h2o_socket_buffer_prototype);

    est_upstream_request_t *u = &p->ureq;
    if (est_request_prepare_upstream(r, 0, req->method, u) != 0) {
        est_send_error(req, 500, "internal_error", "cannot build the upstream path", r->request_id);
        return;
    }
    u->want_upgrade = req->upgrade.base != NULL && req->version < 0x200 && r->route->websocket;
    uint64_t length;
    int expect_continue;
    int streamed = est_h1_body_is_streamed(req, &length, &expect_continue);
    if (!streamed && cache_begin(p))
        return; /* answered from the cache, or waiting on an identical request */
    if (streamed) {
        u->body_stream = 1;
        u->body_length = length;
        if (!expect_continue) {
            p->body_begun = 1; /* the first bytes first (see on_client_body) */
            est_h1_body_start(req, on_client_body, p);
            return;
        }
    }
    start_exchange(p);
}

static void start_exchange(proxy_t *p)
{
    est_request_t *r = p->r;
    p->exchange_begun = 1;
    p->c.request_time_ms = est_cache_wall_ms();
    p->x = est_exchange_start(est_upstream_set_get(r->svc->upstreams, r->route->proxy->upstream->index), &p->ureq,
                              p->ureq.body_stream ? &exchange_stream_cb : &exchange_cb, p);
    if (p->x == NULL) { /* out of memory: never leave the client waiting */
        if (p->c.flight != NULL)
            est_cache_req_finish_flight(
                &p->c, NULL, est_cache_req_shared_error(&p->c, 502, "upstream_unavailable", "cannot start the upstream request"));
        p->started = 1;
        est_send_error(r->req, 502, "upstream_unavailable", "cannot start the upstream request", r->request_id);
    }
}
