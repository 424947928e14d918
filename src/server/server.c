/*
 * estuary - worker threads, listeners, TLS contexts, signals and the graceful drain.
 *
 * Start-up (main thread): build the h2o global config and the router, open every
 * listening socket for every worker (so a bind error is reported before anything runs),
 * load TLS contexts, block the signals, start the workers. Then the main thread waits in
 * sigwait() and tells the workers to drain on SIGTERM/SIGINT (shared/LIBH2O-2.2.5.md §5).
 */
#include "server/server.h"
#include "server/worker.h"

#include <errno.h>
#include <semaphore.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <openssl/err.h>
#include <h2o/http2.h>

#include "common/h2o_compat.h"
#include "common/log.h"

static h2o_timeout_t *get_timeout(est_services_t *svc, uint64_t ms)
{
    est_worker_t *w = (est_worker_t *)((char *)svc - offsetof(est_worker_t, svc));
    for (size_t i = 0; i != w->num_timeouts; ++i)
        if (w->timeouts[i]->timeout == ms)
            return w->timeouts[i];
    h2o_timeout_t *t = h2o_mem_alloc(sizeof(*t));
    h2o_timeout_init(w->ctx.loop, t, ms);
    w->timeouts = h2o_mem_realloc(w->timeouts, sizeof(*w->timeouts) * (w->num_timeouts + 1));
    w->timeouts[w->num_timeouts++] = t;
    return t;
}

static int open_listener(const est_listen_conf_t *l)
{
    struct addrinfo hints = {0}, *res;
    char port[8];
    snprintf(port, sizeof(port), "%u", l->port);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    /* blocking resolution is fine here: this runs once at start, before any loop */
    int gai = getaddrinfo(l->host, port, &hints, &res);
    if (gai != 0) {
        est_log_error("listen %s:%u: %s", l->host, l->port, gai_strerror(gai));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int on = 1;
    if (fd == -1 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 ||
        listen(fd, SOMAXCONN) != 0) {
        est_log_error("listen %s:%u: %s", l->host, l->port, strerror(errno));
        if (fd != -1)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    freeaddrinfo(res);
    return fd;
}

static SSL_CTX *create_ssl_ctx(const est_listen_conf_t *l)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_use_certificate_chain_file(ctx, l->certificate_file) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, l->key_file, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        char buf[256];
        ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
        est_log_error("listen %s:%u: cannot load certificate %s / key %s: %s", l->host, l->port, l->certificate_file,
                      l->key_file, buf);
        SSL_CTX_free(ctx);
        return NULL;
    }
    h2o_ssl_register_alpn_protocols(ctx, h2o_alpn_protocols);
    return ctx;
}

static void on_conn_close(void *data)
{
    est_worker_t *w = data;
    --w->num_conns;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    if (err != NULL)
        return;
    h2o_accept_ctx_t *actx = listener->data;
    est_worker_t *w = (est_worker_t *)actx->ctx;
    h2o_socket_t *sock;
    /* bounded batch, so that one busy listener cannot starve the loop */
    for (int i = 0; i != 64 && (sock = h2o_evloop_socket_accept(listener)) != NULL; ++i) {
        ++w->num_conns;
        sock->on_close.cb = on_conn_close;
        sock->on_close.data = w;
        h2o_accept(actx, sock);
    }
}

static void on_wake(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    /* only used to interrupt h2o_evloop_run; the state is in server->shutdown */
    (void)receiver;
    (void)messages;
}

static void close_listeners(est_worker_t *w)
{
    for (size_t i = 0; i != w->server->conf->num_listen; ++i) {
        if (w->listeners[i] != NULL) {
            h2o_socket_read_stop(w->listeners[i]);
            h2o_socket_close(w->listeners[i]);
            w->listeners[i] = NULL;
        }
    }
}

/*
 * A finished worker tells main and then sleeps until the process exits, instead of ending
 * its thread: libh2o 2.2.5 caches freed buffers and pool chunks in thread-local recycle lists
 * that it never releases; while the thread lives they stay reachable, so LeakSanitizer at
 * exit reports only real leaks and needs no suppressions.
 */
static void park(est_worker_t *w)
{
    sem_post(&w->server->finished);
    for (;;)
        pause();
}

static void *worker_main(void *arg)
{
    est_worker_t *w = arg;
    est_server_t *s = w->server;
    const est_config_t *conf = s->conf;

    /* h2o's evloop keeps thread-local state: the context is made on the worker's own thread,
     * and the main thread is told (barrier) once it can be woken */
    h2o_context_init(&w->ctx, h2o_evloop_create(), &s->h2oconf);
    h2o_multithread_register_receiver(w->ctx.queue, &w->wake, on_wake);
    est_observe_worker_init(w); /* (admin) metrics, snapshot receiver: answers before /readyz says ready */
    pthread_barrier_wait(&s->ready);
    w->dns = est_dns_create(w->ctx.loop, &conf->dns);
    w->upstreams = est_upstream_set_create(w->ctx.loop, w->dns, conf);
    w->svc.loop = w->ctx.loop;
    w->svc.upstreams = w->upstreams;
    w->svc.get_timeout = get_timeout;

    w->listeners = calloc(conf->num_listen, sizeof(*w->listeners));
    w->accept_ctxs = calloc(conf->num_listen, sizeof(*w->accept_ctxs));
    for (size_t i = 0; i != conf->num_listen; ++i) {
        w->accept_ctxs[i].ctx = &w->ctx;
        w->accept_ctxs[i].hosts = s->h2oconf.hosts;
        w->accept_ctxs[i].ssl_ctx = s->listener_ssl[i];
        w->listeners[i] = h2o_evloop_socket_create(w->ctx.loop, s->listen_fds[w->id][i], H2O_SOCKET_FLAG_DONT_READ);
        w->listeners[i]->data = &w->accept_ctxs[i];
        h2o_socket_read_start(w->listeners[i], on_accept);
    }

    while (!atomic_load(&s->shutdown))
        h2o_evloop_run(w->ctx.loop, INT32_MAX);

    /* drain: stop accepting, let in-flight requests finish (h2 gets GOAWAY) */
    close_listeners(w);
    h2o_context_request_shutdown(&w->ctx);
    uint64_t deadline = h2o_now(w->ctx.loop) + conf->shutdown_timeout_ms;
    while (w->num_conns != 0 || h2o_timeout_is_linked(&w->ctx.http2._graceful_shutdown_timeout)) {
        if (h2o_now(w->ctx.loop) >= deadline) {
            est_log_warn("worker %zu: shutdown_timeout reached, cutting %zu connection(s)", w->id, w->num_conns);
            w->drain_cut = 1;
            park(w); /* the process exits without tearing this loop down */
            return NULL;
        }
        h2o_evloop_run(w->ctx.loop, 100);
    }

    est_observe_worker_close(w); /* (admin) before the queue goes away */
    est_upstream_set_destroy(w->upstreams);
    est_dns_destroy(w->dns);
    for (size_t i = 0; i != w->num_timeouts; ++i) {
        h2o_timeout_dispose(w->ctx.loop, w->timeouts[i]);
        free(w->timeouts[i]);
    }
    free(w->timeouts);
    h2o_multithread_unregister_receiver(w->ctx.queue, &w->wake);
    h2o_evloop_t *loop = w->ctx.loop;
    h2o_multithread_queue_t *queue = w->ctx.queue;
    h2o_context_dispose(&w->ctx);
    h2o_evloop_run(loop, 0);
    est_h2o_free_disposed_queue(queue);
    h2o_evloop_destroy(loop);
    est_observe_worker_dispose(w); /* (admin) */
    free(w->listeners);
    free(w->accept_ctxs);
    park(w);
    return NULL;
}

static void setup_h2o(est_server_t *s)
{
    h2o_config_init(&s->h2oconf);
    s->h2oconf.server_name = h2o_iovec_init(H2O_STRLIT("estuary/" ESTUARY_VERSION));
    /* h2o answers bodies over its own limit with a plain-text 413 (and HTTP/2 with a refused
     * stream). Give it headroom so that bodies just over max_request_body reach our handler,
     * which answers with SPEC's JSON 413; see docs/configuration.md. */
    uint64_t limit = s->conf->max_request_body;
    s->h2oconf.max_request_entity_size = limit > SIZE_MAX / 2 ? SIZE_MAX : (size_t)(limit * 2 + 65536);
    h2o_hostconf_t *host = h2o_config_register_host(&s->h2oconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    h2o_handler_t *handler = h2o_create_handler(path, sizeof(*handler));
    handler->on_req = est_handler_on_req;
}

int est_server_run(est_config_t *conf)
{
    est_server_t s = {0};
    int ret = 1;
    s.conf = conf;
    atomic_init(&s.shutdown, 0);
    char err[256];
    s.router = est_router_create(conf->routes, conf->num_routes, err, sizeof(err));
    if (s.router == NULL) {
        est_log_error("%s", err);
        return 1;
    }
    setup_h2o(&s);

    s.num_workers = conf->workers;
    s.listener_ssl = calloc(conf->num_listen, sizeof(*s.listener_ssl));
    s.listen_fds = calloc(s.num_workers, sizeof(*s.listen_fds));
    for (size_t i = 0; i != conf->num_listen; ++i)
        if (conf->listen[i].tls && (s.listener_ssl[i] = create_ssl_ctx(conf->listen + i)) == NULL)
            goto Exit;
    for (size_t w = 0; w != s.num_workers; ++w) {
        s.listen_fds[w] = malloc(sizeof(int) * conf->num_listen);
        for (size_t i = 0; i != conf->num_listen; ++i)
            s.listen_fds[w][i] = -1;
        for (size_t i = 0; i != conf->num_listen; ++i)
            if ((s.listen_fds[w][i] = open_listener(conf->listen + i)) == -1)
                goto Exit;
    }

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    s.workers = calloc(s.num_workers, sizeof(*s.workers));
    pthread_barrier_init(&s.ready, NULL, (unsigned)s.num_workers + 1);
    sem_init(&s.finished, 0, 0);
    if (est_observe_server_start(&s) != 0) /* (admin) admin listener, access log writer */
        goto Exit;
    for (size_t w = 0; w != s.num_workers; ++w) {
        s.workers[w].server = &s;
        s.workers[w].id = w;
        pthread_create(&s.workers[w].tid, NULL, worker_main, s.workers + w);
    }
    pthread_barrier_wait(&s.ready);
    est_observe_server_ready(&s); /* (admin) /readyz */
    for (size_t i = 0; i != conf->num_listen; ++i)
        est_log_info("listening on %s://%s:%u", conf->listen[i].tls ? "https" : "http", conf->listen[i].host,
                     conf->listen[i].port);
    est_log_info("estuary %s started: %zu worker(s), %zu route(s), %zu upstream(s)", ESTUARY_VERSION, s.num_workers,
                 conf->num_routes, conf->num_upstreams);

    for (;;) {
        int sig;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGUSR1) { /* (admin) access log rotation */
            est_observe_server_reopen_log(&s);
            continue;
        }
        if (sig == SIGINT || sig == SIGTERM) {
            est_log_info("received %s, draining (shutdown_timeout %llums)", sig == SIGINT ? "SIGINT" : "SIGTERM",
                         (unsigned long long)conf->shutdown_timeout_ms);
            break;
        } else if (sig == SIGHUP) {
            est_log_warn("SIGHUP: configuration reload is not supported yet; keeping the running configuration");
        }
    }
    est_observe_server_draining(&s); /* (admin) /readyz answers 503 from now on */
    atomic_store(&s.shutdown, 1);
    for (size_t w = 0; w != s.num_workers; ++w)
        h2o_multithread_send_message(&s.workers[w].wake, NULL);
    int cut = 0;
    for (size_t w = 0; w != s.num_workers; ++w)
        while (sem_wait(&s.finished) != 0)
            ;
    for (size_t w = 0; w != s.num_workers; ++w)
        cut |= s.workers[w].drain_cut;
    if (est_observe_server_stop(&s) != 0) { /* (admin) flushes the access log; -1: admin loop stuck */
        est_log_info("stopped");
        fflush(NULL);
        _exit(0);
    }
    if (cut) {
        est_log_info("stopped (drain cut by shutdown_timeout)");
        fflush(NULL);
        _exit(0); /* loops with live connections cannot be torn down cleanly */
    }
    est_log_info("stopped");
    ret = 0;

Exit:
    est_observe_server_stop(&s); /* (admin) no-op once stopped */
    for (size_t w = 0; w != s.num_workers && s.listen_fds != NULL; ++w) {
        if (s.listen_fds[w] == NULL)
            continue;
        if (ret != 0)
            for (size_t i = 0; i != conf->num_listen; ++i)
                if (s.listen_fds[w][i] != -1)
                    close(s.listen_fds[w][i]);
        free(s.listen_fds[w]);
    }
    free(s.listen_fds);
    for (size_t i = 0; i != conf->num_listen; ++i)
        if (s.listener_ssl[i] != NULL)
            SSL_CTX_free(s.listener_ssl[i]);
    free(s.listener_ssl);
    if (s.workers != NULL)
        pthread_barrier_destroy(&s.ready);
    free(s.workers);
    h2o_config_dispose(&s.h2oconf);
    est_router_destroy(s.router);
    return ret;
}
