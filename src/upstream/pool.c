/*
 * estuary - per-upstream connection pool (one per worker).
 *
 * Rules:
 * - Connections are asked for through a request handle (est_pool_req_t, embedded in its
 *   user: est_pool_connect / est_pool_cancel_connect / est_pool_release, as h2o's socketpool)
 *   that calls back on a granted slot and on a made connection; the pool never sees who
 *   asks. A "slot" is held by every request whose connection is connecting or in use, and by
 *   every drain (drain.c); at most pool.max_connections slots per upstream. Requests beyond
 *   wait FIFO in u->waiters (the wait is bounded by connect_timeout, enforced by the
 *   exchange). A released slot is handed directly to the first waiter, so a newcomer cannot
 *   overtake the queue.
 * - Idle keep-alive connections are keyed by target (which fixes TLS settings and SNI) and
 *   address; the most recently used one is reused first. At most pool.max_idle are kept
 *   (the oldest is closed beyond), each for at most idle_timeout, and a connection is closed
 *   after pool.max_requests requests.
 * - An idle connection keeps reading: any readable event (EOF, reset or unexpected bytes)
 *   closes it at once, so a connection the server closed is not handed out.
 * - TLS: one SSL_CTX per upstream with https targets; certificate and host name are checked
 *   by our own verify callback (h2o 2.2.5 skips its own check on TLS 1.3, see
 *   shared/LIBH2O-2.2.5.md §4), SNI = tls.server_name or the target's host.
 */
#include <arpa/inet.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include "common/log.h"
#include "io/ring.h"
#include "upstream/client_internal.h"

static void on_idle_read(h2o_socket_t *sock, const char *err);

/* SSL_CTX ex_data slot that leads from a handshake back to its upstream */
static int ssl_ex_index = -1;
static pthread_once_t ssl_ex_once = PTHREAD_ONCE_INIT;
static void init_ex_index(void)
{
    ssl_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}
static void ensure_ex_index(void)
{
    pthread_once(&ssl_ex_once, init_ex_index);
}
static int on_new_session(SSL *ssl, SSL_SESSION *session);
static void on_ssl_info(const SSL *ssl, int where, int ret);
static void on_idle_timeout(h2o_timeout_entry_t *entry);
static void on_connect(h2o_socket_t *sock, const char *err);
static void on_handshake(h2o_socket_t *sock, const char *err);
static int on_verify(int ok, X509_STORE_CTX *store);
static void pool_idle(est_conn_t *c);
static int in_answer(const est_upstream_t *u, size_t ti, const est_dns_result_t *res, const struct sockaddr_storage *sa);

static int on_verify(int ok, X509_STORE_CTX *store)
{
    if (!ok || X509_STORE_CTX_get_error_depth(store) != 0)
        return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    const char *name = ssl != NULL ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL;
    X509 *cert = X509_STORE_CTX_get_current_cert(store);
    if (name == NULL || cert == NULL) {
        X509_STORE_CTX_set_error(store, X509_V_ERR_HOSTNAME_MISMATCH);
        return 0;
    }
    int is_ip = est_sockaddr_is_ip(name, AF_UNSPEC);
    int match = is_ip ? X509_check_ip_asc(cert, name, 0) : X509_check_host(cert, name, strlen(name), 0, NULL);
    if (match != 1) {
        X509_STORE_CTX_set_error(store, is_ip ? X509_V_ERR_IP_ADDRESS_MISMATCH : X509_V_ERR_HOSTNAME_MISMATCH);
        return 0;
    }
    return 1;
}

int est_pool_init_upstream(est_upstream_t *u, char **err)
{
    h2o_loop_t *loop = u->set->loop;
    h2o_timeout_init(loop, &u->connect_timeout, u->conf->connect_timeout_ms);
    h2o_timeout_init(loop, &u->response_timeout, u->conf->response_timeout_ms);
    h2o_timeout_init(loop, &u->idle_timeout, u->conf->pool.idle_timeout_ms);
    h2o_linklist_init_anchor(&u->idle);
    h2o_linklist_init_anchor(&u->waiters);
    h2o_linklist_init_anchor(&u->draining);

    int need_tls = 0;
    for (size_t i = 0; i != u->conf->num_targets; ++i)
        need_tls |= u->conf->targets[i].is_tls;
    if (!need_tls)
        return 0;
    if ((u->ssl_ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
        *err = "SSL_CTX_new failed";
        return -1;
    }
    SSL_CTX_set_min_proto_version(u->ssl_ctx, TLS1_2_VERSION);
    if (u->conf->tls.verify) {
        int ok = u->conf->tls.ca_file != NULL ? SSL_CTX_load_verify_locations(u->ssl_ctx, u->conf->tls.ca_file, NULL)
                                              : SSL_CTX_set_default_verify_paths(u->ssl_ctx);
        if (!ok) {
            *err = "cannot load the CA file";
            return -1;
        }
        SSL_CTX_set_verify(u->ssl_ctx, SSL_VERIFY_PEER, on_verify);
    } else {
        SSL_CTX_set_verify(u->ssl_ctx, SSL_VERIFY_NONE, NULL);
    }
    /*
     * TLS session resumption on reconnect. h2o 2.2.5 creates the SSL object and starts the
     * client handshake in one call (and its own session cache asserts when destroyed), so the
     * session is offered from the info callback at handshake start, before the ClientHello is
     * built; new sessions (TLS 1.2 and 1.3 tickets) arrive through the new-session callback.
     */
    ensure_ex_index();
    SSL_CTX_set_ex_data(u->ssl_ctx, ssl_ex_index, u);
    SSL_CTX_set_session_cache_mode(u->ssl_ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(u->ssl_ctx, on_new_session);
    SSL_CTX_set_info_callback(u->ssl_ctx, on_ssl_info);
    return 0;
}

/* the slot for `name` (an empty one, or the oldest when all are taken when `create`), or NULL */
static size_t session_slot(est_upstream_t *u, const char *name, int create)
{
    size_t n = sizeof(u->tls_sessions) / sizeof(u->tls_sessions[0]);
    for (size_t i = 0; i != n; ++i)
        if (u->tls_sessions[i].name != NULL && strcmp(u->tls_sessions[i].name, name) == 0)
            return i;
    if (!create)
        return SIZE_MAX;
    for (size_t i = 0; i != n; ++i)
        if (u->tls_sessions[i].name == NULL)
            return i;
    return 0;
}

static int on_new_session(SSL *ssl, SSL_SESSION *session)
{
    est_upstream_t *u = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ssl_ex_index);
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (u == NULL || name == NULL || !SSL_SESSION_is_resumable(session))
        return 0;
    size_t i = session_slot(u, name, 1);
    if (u->tls_sessions[i].name == NULL || strcmp(u->tls_sessions[i].name, name) != 0) {
        free(u->tls_sessions[i].name);
        u->tls_sessions[i].name = h2o_strdup(NULL, name, SIZE_MAX).base;
    }
    if (u->tls_sessions[i].session != NULL)
        SSL_SESSION_free(u->tls_sessions[i].session);
    u->tls_sessions[i].session = session;
    return 1; /* we keep the reference */
}

static void on_ssl_info(const SSL *cssl, int where, int ret)
{
    if (!(where & SSL_CB_HANDSHAKE_START))
        return;
    SSL *ssl = (SSL *)cssl;
    if (SSL_is_server(ssl) || SSL_in_init(ssl) == 0 || SSL_get_session(ssl) != NULL)
        return;
    est_upstream_t *u = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ssl_ex_index);
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    size_t i = u != NULL && name != NULL ? session_slot(u, name, 0) : SIZE_MAX;
    if (i != SIZE_MAX && u->tls_sessions[i].session != NULL)
        SSL_set_session(ssl, u->tls_sessions[i].session);
}

void est_pool_dispose_upstream(est_upstream_t *u)
{
    while (!h2o_linklist_is_empty(&u->idle))
        est_pool_close_conn(H2O_STRUCT_FROM_MEMBER(est_conn_t, idle_link, u->idle.next));
    while (!h2o_linklist_is_empty(&u->draining))
        est_pool_close_conn(H2O_STRUCT_FROM_MEMBER(est_conn_t, drain_link, u->draining.next));
    h2o_loop_t *loop = u->set->loop;
    h2o_timeout_dispose(loop, &u->connect_timeout);
    h2o_timeout_dispose(loop, &u->response_timeout);
    h2o_timeout_dispose(loop, &u->idle_timeout);
    if (u->ssl_ctx != NULL)
        SSL_CTX_free(u->ssl_ctx);
    for (size_t i = 0; i != sizeof(u->tls_sessions) / sizeof(u->tls_sessions[0]); ++i) {
        free(u->tls_sessions[i].name);
        if (u->tls_sessions[i].session != NULL)
            SSL_SESSION_free(u->tls_sessions[i].session);
    }
}

void est_pool_close_conn(est_conn_t *c)
{
    est_upstream_t *u = c->u;
    if (h2o_linklist_is_linked(&c->idle_link)) {
        h2o_linklist_unlink(&c->idle_link);
        u->num_idle--;
        u->stats.conns_idle--;
    }
    if (h2o_timeout_is_linked(&c->idle_timer))
        h2o_timeout_unlink(&c->idle_timer);
    est_drain_dispose(c);
    if (c->sock != NULL) {
        c->sock->data = NULL;
        h2o_socket_close(c->sock);
        u->stats.conns_open--;
    }
    free(c);
}

static void on_idle_read(h2o_socket_t *sock, const char *err)
{
    /* EOF, reset or bytes nobody asked for: the connection is not reusable */
    est_conn_t *c = sock->data;
    est_log_debug("upstream '%s': closing an idle connection (%s)", c->u->conf->name,
                  err != NULL ? err : "unexpected bytes");
    est_pool_close_conn(c);
}

static void on_idle_timeout(h2o_timeout_entry_t *entry)
{
    est_conn_t *c = H2O_STRUCT_FROM_MEMBER(est_conn_t, idle_timer, entry);
    est_pool_close_conn(c);
}

static void pool_idle(est_conn_t *c)
{
    est_upstream_t *u = c->u;
    c->state = EST_CONN_IDLE;
    c->req = NULL;
    h2o_linklist_insert(&u->idle, &c->idle_link);
    u->num_idle++;
    u->stats.conns_idle++;
    h2o_timeout_link(u->set->loop, &u->idle_timeout, &c->idle_timer);
    h2o_socket_read_start(c->sock, on_idle_read);
    while (u->num_idle > u->conf->pool.max_idle)
        est_pool_close_conn(H2O_STRUCT_FROM_MEMBER(est_conn_t, idle_link, u->idle.next));
}

/*
 * (streaming, issue 4) h2o 2.2.5 reads a socket until read() comes back short, doubling
 * sock->input as it fills: with a fast upstream one read callback pulled in tens of MiB
 * (41 MiB seen with a loopback origin; 1 GiB took 5 s at 180 MiB RSS), so a proxied
 * download's memory followed the upstream's speed instead of the client's. A fixed receive
 * buffer (which turns off the kernel's autotuning for this socket) caps the kernel queue and
 * thus each read at about twice its size (256 KiB: 1 GiB in ~1 s at ~10 MiB RSS; see
 * docs/streaming.md). Set right after connect, before any reply byte is queued.
 */
#define UPSTREAM_RCVBUF (256 * 1024)
static void limit_rcvbuf(h2o_socket_t *sock)
{
    int fd = h2o_socket_get_fd(sock), sz = UPSTREAM_RCVBUF;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
}

/* a new connection is made (or failed): its requester is told, or it is closed */
static void conn_connected(est_conn_t *c, const char *err, int tls_stage)
{
    if (c->req == NULL) {
        est_pool_close_conn(c);
        return;
    }
    if (err == NULL)
        c->state = EST_CONN_ACTIVE;
    c->req->on_connect(c->req, err, tls_stage);
}

static void on_connect(h2o_socket_t *sock, const char *err)
{
    est_conn_t *c = sock->data;
    est_upstream_t *u = c->u;
    const est_target_conf_t *t = &u->conf->targets[c->target_index];
    if (err == NULL)
        limit_rcvbuf(sock);
    if (err == NULL && t->is_tls) {
        const char *name = u->conf->tls.server_name != NULL ? u->conf->tls.server_name : t->host;
        h2o_socket_ssl_handshake(sock, u->ssl_ctx, name, on_handshake);
        return;
    }
    conn_connected(c, err, 0);
}

static void on_handshake(h2o_socket_t *sock, const char *err)
{
    est_conn_t *c = sock->data;
    /* h2o's own name check is unreliable (skipped on TLS 1.3, no IP SANs); on_verify is the
     * authority when verification is on, and with verify off a mismatch is accepted */
    if (err == h2o_socket_error_ssl_cert_name_mismatch || (err == h2o_socket_error_ssl_no_cert && !c->u->conf->tls.verify))
        err = NULL;
    if (err == NULL && h2o_socket_get_ssl_session_reused(sock) == 1) {
        c->u->stats.tls_resumed++;
        est_log_debug("upstream '%s': TLS session resumed", c->u->conf->name);
    }
    conn_connected(c, err, 1);
}

int est_pool_connect(est_upstream_t *u, est_pool_req_t *req)
{
    if (!req->_has_slot) {
        size_t max = u->conf->pool.max_connections ? u->conf->pool.max_connections : 1;
        if (u->num_slots >= max || !h2o_linklist_is_empty(&u->waiters)) {
            h2o_linklist_insert(&u->waiters, &req->_wait_link);
            u->stats.queue_waits++;
            return 1;
        }
        u->num_slots++;
        req->_has_slot = 1;
    }

    /* the most recently pooled matching connection */
    if (!req->force_new) {
        for (h2o_linklist_t *l = u->idle.prev; l != &u->idle; l = l->prev) {
            est_conn_t *c = H2O_STRUCT_FROM_MEMBER(est_conn_t, idle_link, l);
            if (c->target_index == req->target_index && est_sockaddr_equal(&c->sa, req->sa)) {
                h2o_linklist_unlink(&c->idle_link);
                u->num_idle--;
                u->stats.conns_idle--;
                h2o_timeout_unlink(&c->idle_timer);
                h2o_socket_read_stop(c->sock);
                c->state = EST_CONN_ACTIVE;
                c->req = req;
                req->conn = c;
                req->reused = 1;
                u->stats.conns_reused++;
                return 0;
            }
        }
    }
    req->force_new = 0;

    est_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -1;
    c->u = u;
    c->state = EST_CONN_CONNECTING;
    c->target_index = req->target_index;
    c->sa = *req->sa;
    c->salen = req->salen;
    c->idle_timer.cb = on_idle_timeout;
    if (u->conf->targets[req->target_index].is_tls && u->ssl_ctx == NULL) {
        free(c);
        return -1;
    }
    if ((c->sock = h2o_socket_connect(u->set->loop, (struct sockaddr *)&c->sa, c->salen, on_connect)) == NULL) {
        free(c);
        return -1;
    }
    est_io_track(h2o_socket_get_fd(c->sock)); /* the worker's ring, if it has one (io/ring.h) */
    c->sock->data = c;
    c->req = req;
    req->conn = c;
    req->reused = 0;
    u->stats.conns_created++;
    u->stats.conns_open++;
    return 0;
}

/* (reload) rebinds an active or idle connection to upstream `to` (same config, same loop) */
static void move_conn(est_conn_t *c, est_upstream_t *to)
{
    est_upstream_t *from = c->u;
    if (h2o_linklist_is_linked(&c->idle_link)) {
        h2o_linklist_unlink(&c->idle_link);
        from->num_idle--;
        from->stats.conns_idle--;
    }
    if (h2o_timeout_is_linked(&c->idle_timer))
        h2o_timeout_unlink(&c->idle_timer);
    from->stats.conns_open--;
    c->u = to;
    to->stats.conns_open++;
}

void est_upstream_handover(est_upstream_t *from, est_upstream_t *to)
{
    from->handover = to;
    if (to == NULL || to == from)
        return;
    /* counters follow the upstream (all fields are uint64_t); the gauges follow the connections */
    uint64_t open = from->stats.conns_open, idle = from->stats.conns_idle;
    uint64_t *dst = (uint64_t *)&to->stats, *src = (uint64_t *)&from->stats;
    _Static_assert(sizeof(est_upstream_stats_t) % sizeof(uint64_t) == 0, "stats are uint64_t fields");
    for (size_t i = 0; i != sizeof(est_upstream_stats_t) / sizeof(uint64_t); ++i) {
        if (&src[i] == &from->stats.conns_open || &src[i] == &from->stats.conns_idle)
            continue;
        dst[i] += src[i];
        src[i] = 0;
    }
    from->stats.conns_open = open;
    from->stats.conns_idle = idle;
    while (!h2o_linklist_is_empty(&from->idle)) {
        est_conn_t *c = H2O_STRUCT_FROM_MEMBER(est_conn_t, idle_link, from->idle.next);
        move_conn(c, to);
        pool_idle(c);
    }
}

void est_pool_put_conn(est_conn_t *c, int reusable)
{
    c->req = NULL;
    c->requests++;
    est_upstream_t *u = c->u;
    const est_dns_result_t *res = u->targets[c->target_index].res;
    /* an address that left the DNS answer while the request ran is not pooled either */
    if (reusable && c->state == EST_CONN_ACTIVE && c->requests < u->conf->pool.max_requests && u->conf->pool.max_idle > 0 &&
        c->sock->input->size == 0 && (res == NULL || in_answer(u, c->target_index, res, &c->sa))) {
        if (u->handover != NULL) /* (reload) the current set's upstream of the same config takes it */
            move_conn(c, u->handover);
        pool_idle(c);
    } else {
        est_pool_close_conn(c);
    }
}

void est_pool_release(est_upstream_t *u, est_pool_req_t *req, int reusable)
{
    est_pool_cancel_connect(u, req);
    est_conn_t *c = req->conn;
    if (c != NULL) {
        req->conn = NULL;
        est_pool_put_conn(c, reusable);
    }
    if (req->_has_slot) {
        req->_has_slot = 0;
        est_pool_slot_put(u);
    }
}

void est_pool_slot_put(est_upstream_t *u)
{
    if (!h2o_linklist_is_empty(&u->waiters)) {
        est_pool_req_t *w = H2O_STRUCT_FROM_MEMBER(est_pool_req_t, _wait_link, u->waiters.next);
        h2o_linklist_unlink(&w->_wait_link);
        w->_has_slot = 1; /* handed over: num_slots unchanged */
        w->on_slot(w);
    } else {
        u->num_slots--;
    }
}

void est_pool_cancel_connect(est_upstream_t *u, est_pool_req_t *req)
{
    if (h2o_linklist_is_linked(&req->_wait_link))
        h2o_linklist_unlink(&req->_wait_link);
}

void est_pool_purge_target(est_upstream_t *u, size_t ti, const est_dns_result_t *res)
{
    h2o_linklist_t *l = u->idle.next;
    while (l != &u->idle) {
        est_conn_t *c = H2O_STRUCT_FROM_MEMBER(est_conn_t, idle_link, l);
        l = l->next;
        if (c->target_index == ti && !in_answer(u, ti, res, &c->sa))
            est_pool_close_conn(c);
    }
}

static int in_answer(const est_upstream_t *u, size_t ti, const est_dns_result_t *res, const struct sockaddr_storage *sa)
{
    /* the answer's addresses carry no port: the target's port is compared apart */
    if (est_sockaddr_port(sa) != u->conf->targets[ti].port)
        return 0;
    for (size_t i = 0; i != res->num_addrs; ++i)
        if (est_sockaddr_equal_addr(&res->addrs[i].sa, sa))
            return 1;
    return 0;
}
