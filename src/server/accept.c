/*
 * estuary - accepting client connections: the listeners' read callback, TLS handshakes and
 * ALPN, the choice between estuary's HTTP/1.1 layer (h1/conn.h) and libh2o's HTTP/2 server,
 * the per-connection tracking used by the drain, and the back-off when descriptors run out.
 *
 * Descriptor exhaustion (SPEC "Client limits"): an accept that fails with EMFILE/ENFILE
 * leaves the connection in the kernel's queue, so a level-triggered listener would wake the
 * loop again at once, forever (100% CPU). Instead the listener stops reading and retries
 * after a back-off (10 ms, doubling up to 1 s), logged at most once a second and counted in
 * accept_paused. Accepting also pauses a little before the limit (fd_high_water) so that
 * descriptors stay free for upstream connections, DNS and the admin listener, which keeps
 * answering /healthz meanwhile.
 */
#include "io/ring.h"
#include "server/accept.h"
#include "server/worker.h"
#include "server/handler.h"
#include "server/worker_gen.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <h2o/http2.h>

#include "common/log.h"
#include "h2/attach.h"
#include "proxy/proxy.h"

#define BACKOFF_MIN_MS 10
#define BACKOFF_MAX_MS 1000
#define LINGER_MS 2000

/* ---- tracking ------------------------------------------------------------------------------- */

static void on_conn_close(void *data)
{
    est_client_conn_t *cc = data;
    est_worker_t *w = cc->w;
    if (cc->inflight != 0) /* not expected (requests are disposed first); never leave a dangling pointer */
        for (h2o_linklist_t *n = w->requests.next; n != &w->requests; n = n->next) {
            est_inflight_t *r = H2O_STRUCT_FROM_MEMBER(est_inflight_t, link, n);
            if (r->conn == cc)
                r->conn = NULL;
        }
    h2o_linklist_unlink(&cc->link);
    free(cc);
    --w->num_conns;
}

static void track(est_worker_t *w, h2o_socket_t *sock)
{
    est_client_conn_t *cc = h2o_mem_alloc(sizeof(*cc));
    *cc = (est_client_conn_t){.w = w, .sock = sock};
    h2o_linklist_insert(&w->conns, &cc->link);
    ++w->num_conns;
    sock->on_close.cb = on_conn_close;
    sock->on_close.data = cc;
}

/* ---- protocols ------------------------------------------------------------------------------ */

/* The one place a client connection becomes HTTP/2 (prior knowledge or ALPN "h2"), with its
 * input intact. */
static void accept_h2(void *data, h2o_socket_t *sock, struct timeval connected_at)
{
    est_worker_t *w = data;
    est_client_conn_t *cc = sock->on_close.data;
    if (cc != NULL)
        cc->is_h2 = 1;
    h2o_accept_ctx_t actx = {.ctx = &w->ctx, .hosts = w->server->h2oconf.hosts};
    /* libh2o's HTTP/2 server behind the frame guard (SPEC "HTTP/2 protections", docs/http2.md) */
    est_h2_accept(&actx, sock, connected_at, &w->h2_limits, &w->metrics.conns, cc != NULL ? &cc->inflight : NULL);
}

typedef struct st_handshake_t {
    est_worker_t *w;
    h2o_socket_t *sock;
    h2o_timeout_entry_t timer; /* client_header_timeout bounds the handshake */
} handshake_t;

static void on_handshake_timeout(h2o_timeout_entry_t *entry)
{
    handshake_t *hs = H2O_STRUCT_FROM_MEMBER(handshake_t, timer, entry);
    ++hs->w->metrics.conns.closed[EST_CLOSE_HEADER_TIMEOUT];
    h2o_socket_t *sock = hs->sock;
    sock->data = NULL;
    free(hs);
    h2o_socket_close(sock);
}

static void on_handshake(h2o_socket_t *sock, const char *err)
{
    handshake_t *hs = sock->data;
    est_worker_t *w = hs->w;
    if (h2o_timeout_is_linked(&hs->timer))
        h2o_timeout_unlink(&hs->timer);
    free(hs);
    sock->data = NULL;
    if (err != NULL) {
        h2o_socket_close(sock);
        return;
    }
    struct timeval connected_at = *h2o_get_timestamp(&w->ctx, NULL, NULL);
    h2o_iovec_t proto = h2o_socket_ssl_get_selected_protocol(sock);
    if (h2o_memis(proto.base, proto.len, H2O_STRLIT("h2")))
        accept_h2(w, sock, connected_at);
    else
        est_h1_accept(&w->h1, sock, connected_at);
}

static void start_connection(est_listener_t *l, h2o_socket_t *sock)
{
    est_worker_t *w = l->w;
    est_io_track(h2o_socket_get_fd(sock)); /* before h1/TLS start reading: its I/O goes through the ring */
    track(w, sock);
    if (l->actx.ssl_ctx != NULL) {
        handshake_t *hs = h2o_mem_alloc(sizeof(*hs));
        *hs = (handshake_t){.w = w, .sock = sock, .timer = {.cb = on_handshake_timeout}};
        sock->data = hs;
        h2o_timeout_link(w->ctx.loop, w->h1.header_timeout, &hs->timer);
        h2o_socket_ssl_handshake(sock, l->actx.ssl_ctx, NULL, on_handshake);
        return;
    }
    est_h1_accept(&w->h1, sock, *h2o_get_timestamp(&w->ctx, NULL, NULL));
}

/* ---- descriptor exhaustion ------------------------------------------------------------------- */

static void on_listener_ready(h2o_socket_t *listener, const char *err);

/* the lowest free descriptor number, or -1 when there is none (EMFILE/ENFILE) */
static int lowest_free_fd(int near)
{
    int fd = fcntl(near, F_DUPFD_CLOEXEC, 0);
    if (fd == -1)
        return -1;
    close(fd);
    return fd;
}

static void on_retry(h2o_timeout_entry_t *entry)
{
    est_listener_t *l = H2O_STRUCT_FROM_MEMBER(est_listener_t, retry, entry);
    est_worker_t *w = l->w;
    int fd = lowest_free_fd(h2o_socket_get_fd(l->sock));
    if (fd == -1 || fd >= w->fd_high_water) { /* still short of descriptors: wait longer */
        l->backoff_ms = l->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->backoff_ms * 2;
        h2o_timeout_link(w->ctx.loop, est_worker_timeout(w, l->backoff_ms), &l->retry);
        return;
    }
    l->backoff_ms = 0;
    h2o_socket_read_start(l->sock, on_listener_ready);
}

static void pause_accepting(est_listener_t *l, const char *why)
{
    est_worker_t *w = l->w;
    h2o_socket_read_stop(l->sock);
    if (h2o_timeout_is_linked(&l->retry))
        return;
    l->backoff_ms = BACKOFF_MIN_MS;
    ++w->metrics.conns.accept_paused;
    uint64_t now = h2o_now(w->ctx.loop);
    if (w->accept_logged_at == 0 || now - w->accept_logged_at >= 1000) {
        w->accept_logged_at = now;
        est_log_warn("worker %zu: out of file descriptors (%s): accepting paused, retrying with back-off up to %d ms", w->id,
                     why, BACKOFF_MAX_MS);
    }
    l->retry.cb = on_retry;
    h2o_timeout_link(w->ctx.loop, est_worker_timeout(w, l->backoff_ms), &l->retry);
}

static void on_listener_ready(h2o_socket_t *listener, const char *err)
{
    if (err != NULL)
        return;
    est_listener_t *l = listener->data;
    /* bounded batch, so that one busy listener cannot starve the loop */
    for (int i = 0; i != 64; ++i) {
        errno = 0;
        h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
        if (sock == NULL) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                pause_accepting(l, strerror(errno));
            return;
        }
        int fd = h2o_socket_get_fd(sock);
        start_connection(l, sock);
        if (fd >= l->w->fd_high_water) {
            pause_accepting(l, "descriptor reserve reached");
            return;
        }
    }
}

/* ---- listeners and the worker's HTTP/1 context ------------------------------------------------ */

void est_accept_listener_start(est_worker_t *w, est_listener_t *l)
{
    l->w = w;
    l->sock->data = l;
    l->retry.cb = on_retry;
    h2o_socket_read_start(l->sock, on_listener_ready);
}

void est_accept_listener_stop(est_listener_t *l)
{
    if (h2o_timeout_is_linked(&l->retry))
        h2o_timeout_unlink(&l->retry);
    if (h2o_socket_is_reading(l->sock))
        h2o_socket_read_stop(l->sock);
}

void est_accept_configure(est_worker_t *w, const est_config_t *conf)
{
    w->h1.header_timeout = est_worker_timeout(w, conf->client_header_timeout_ms);
    w->h1.body_timeout = est_worker_timeout(w, conf->client_body_timeout_ms);
    w->h1.send_timeout = est_worker_timeout(w, conf->client_send_timeout_ms);
    w->h1.idle_timeout = est_worker_timeout(w, conf->client_idle_timeout_ms);
    w->h1.max_request_body = conf->max_request_body;
    est_h2_limits_from_config(&w->h2_limits, conf); /* once per config, not per connection */
}

/* est_h1_ctx_t.body_policy: proxy routes stream their request bodies (docs/streaming.md) */
static int h1_body_policy(void *data, h2o_req_t *req, uint64_t *max_body)
{
    est_worker_t *w = data;
    return est_proxy_body_policy(w->current->gen->router, req, max_body);
}

void est_accept_worker_init(est_worker_t *w, const est_config_t *conf)
{
    est_h1_ctx_init(&w->h1);
    w->h1.ctx = &w->ctx;
    w->h1.hosts = w->server->h2oconf.hosts;
    w->h1.linger_timeout = est_worker_timeout(w, LINGER_MS);
    w->h1.counters = &w->metrics.conns;
    w->h1.server_name = EST_SERVER_HEADER;
    w->h1.request_id = est_handler_error_request_id;
    w->h1.request_id_data = w;
    w->h1.accept_h2 = accept_h2;
    w->h1.accept_h2_data = w;
    w->h1.body_policy = h1_body_policy;
    w->h1.body_policy_data = w;
    est_accept_configure(w, conf);
    /* a reserve of descriptors accepting leaves free: 1/16 of the limit, 16 to 1024 */
    struct rlimit rl;
    rlim_t limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
    if (limit == RLIM_INFINITY || limit > INT32_MAX)
        limit = INT32_MAX;
    rlim_t reserve = limit / 16 < 16 ? 16 : limit / 16 > 1024 ? 1024 : limit / 16;
    w->fd_high_water = limit > reserve ? (int)(limit - reserve) : (int)limit;
}
