/*
 * estuary - worker threads, listeners, signals, hot reload and the graceful drain.
 *
 * Start-up (main thread): build the first generation (config, router, TLS contexts; gen.h),
 * open every listening socket for every worker (so a bind error is reported before anything
 * runs), block the signals, start the workers. Then the main thread waits in sigwait().
 *
 * SIGHUP (main thread): load and validate the file; on success build a new generation, open
 * the sockets of the listeners that are new (one per worker, SO_REUSEPORT) and send each
 * worker an est_reload_msg_t. The worker switches on its own loop: it builds a new upstream
 * set, hands the pools of unchanged upstreams over to it, swaps its listeners and makes the
 * new view current (worker_gen.c). Requests keep the view they pin as they start; an old view is
 * destroyed, and its generation reference dropped, once its last request is disposed.
 *
 * SIGTERM/SIGINT: /readyz turns 503, the workers close their listeners, ask h2o to shut
 * down (HTTP/2 GOAWAY), close idle HTTP/1 keep-alive connections, mark in-flight HTTP/1
 * requests Connection: close, and wait for their connections to end, at most
 * shutdown_timeout (shared/LIBH2O-2.2.5.md §5).
 */
#include "aggregate/fanout.h"
#include "cache/global.h"
#include "h2/hpack_out.h"
#include "policy/gate.h"
#include "proxy/proxy.h"
#include "io/ring.h"
#include "server/server.h"
#include "server/worker.h"
#include "server/accept.h"
#include "server/handler.h"
#include "server/observe.h"
#include "server/reload.h"
#include "server/worker_gen.h"

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
#include <sys/random.h>
#include <sys/socket.h>
#include <h2o/http2.h>

#include "common/h2o_compat.h"
#include "common/log.h"
#include "common/net.h"

h2o_timeout_t *est_worker_timeout(est_worker_t *w, uint64_t ms)
{
    for (size_t i = 0; i != w->num_timeouts; ++i)
        if (w->timeouts[i]->timeout == ms)
            return w->timeouts[i];
    h2o_timeout_t *t = h2o_mem_alloc(sizeof(*t));
    h2o_timeout_init(w->ctx.loop, t, ms);
    w->timeouts = h2o_mem_realloc(w->timeouts, sizeof(*w->timeouts) * (w->num_timeouts + 1));
    w->timeouts[w->num_timeouts++] = t;
    return t;
}

/* ---- wake-ups ---------------------------------------------------------------------------------- */

static void on_wake(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    /* only used to interrupt h2o_evloop_run; the state is in server->shutdown */
    (void)receiver;
    (void)messages;
}

/* ---- listeners -------------------------------------------------------------------------------- */

static est_listener_t *listener_open(est_worker_t *w, int fd, SSL_CTX *ssl)
{
    est_listener_t *l = h2o_mem_alloc(sizeof(*l));
    memset(l, 0, sizeof(*l));
    l->actx.ctx = &w->ctx;
    l->actx.hosts = w->server->h2oconf.hosts;
    l->actx.ssl_ctx = ssl;
    l->sock = h2o_evloop_socket_create(w->ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    est_accept_listener_start(w, l);
    return l;
}

static void listener_close(est_listener_t *l)
{
    est_accept_listener_stop(l);
    h2o_socket_close(l->sock);
    free(l);
}

static void close_listeners(est_worker_t *w)
{
    for (size_t i = 0; i != w->num_listeners; ++i)
        if (w->listeners[i] != NULL)
            listener_close(w->listeners[i]);
    free(w->listeners);
    w->listeners = NULL;
    w->num_listeners = 0;
}

/* ---- reload (worker side; the main thread's is in reload.c) --------------------------------- */

static void apply_reload(est_worker_t *w, est_reload_msg_t *msg)
{
    est_gen_t *gen = msg->gen;
    est_worker_gen_t *wg = w->draining ? NULL : est_worker_gen_create(w, gen);
    if (wg == NULL) {
        if (!w->draining)
            est_log_error("worker %zu: cannot build the upstreams of configuration generation %llu; keeping generation %llu",
                          w->id, (unsigned long long)gen->id, (unsigned long long)w->current->gen->id);
        for (size_t j = 0; j != msg->num_listen; ++j)
            if (msg->keep[j] < 0 && msg->fds[j] != -1)
                close(msg->fds[j]);
        est_gen_release(gen);
        return;
    }

    /* listeners: kept ones move (their queued connections too), new ones start, the rest close */
    est_listener_t **nl = h2o_mem_alloc(sizeof(*nl) * (msg->num_listen ? msg->num_listen : 1));
    for (size_t j = 0; j != msg->num_listen; ++j) {
        nl[j] = NULL;
        if (msg->keep[j] >= 0) {
            if ((size_t)msg->keep[j] < w->num_listeners && (nl[j] = w->listeners[msg->keep[j]]) != NULL) {
                w->listeners[msg->keep[j]] = NULL;
                nl[j]->actx.ssl_ctx = gen->listener_ssl[j]; /* certificates re-read by the reload */
            }
        } else if (msg->fds[j] != -1) {
            nl[j] = listener_open(w, msg->fds[j], gen->listener_ssl[j]);
        }
    }
    for (size_t i = 0; i != w->num_listeners; ++i)
        if (w->listeners[i] != NULL)
            listener_close(w->listeners[i]);
    free(w->listeners);
    w->listeners = nl;
    w->num_listeners = msg->num_listen;

    est_accept_configure(w, gen->conf); /* client timeouts and body limit of the new generation */
    est_worker_gen_switch(w, wg);
}

static void on_reload(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    est_worker_t *w = H2O_STRUCT_FROM_MEMBER(est_worker_t, reload_rx, receiver);
    while (!h2o_linklist_is_empty(messages)) {
        est_reload_msg_t *msg = H2O_STRUCT_FROM_MEMBER(est_reload_msg_t, super.link, messages->next);
        h2o_linklist_unlink(&msg->super.link);
        apply_reload(w, msg);
        free(msg->keep);
        free(msg->fds);
        free(msg);
    }
}

/* ---- drain ------------------------------------------------------------------------------------ */

/*
 * HTTP/1.1 connections are estuary's own (h1/conn.h): idle keep-alive ones are closed at once,
 * requests in flight get `Connection: close` and their connection closes once the response is
 * written. HTTP/2 connections got GOAWAY from h2o_context_request_shutdown and are left alone.
 */
static void close_idle_connections(est_worker_t *w)
{
    size_t before = w->num_conns;
    est_h1_shutdown(&w->h1);
    if (before != w->num_conns)
        est_log_debug("worker %zu: drain: closed %zu idle connection(s)", w->id, before - w->num_conns);
}

static void log_cut_requests(est_worker_t *w)
{
    size_t n = 0;
    for (h2o_linklist_t *l = w->requests.next; l != &w->requests; l = l->next)
        ++n;
    est_log_warn("worker %zu: shutdown_timeout reached, cutting %zu connection(s) with %zu request(s) in flight", w->id,
                 w->num_conns, n);
    size_t shown = 0;
    for (h2o_linklist_t *l = w->requests.next; l != &w->requests && shown != 20; l = l->next, ++shown) {
        est_inflight_t *r = H2O_STRUCT_FROM_MEMBER(est_inflight_t, link, l);
        est_log_warn("worker %zu: cut request: %.*s %.*s", w->id, (int)(r->req->method.len < 16 ? r->req->method.len : 16),
                     r->req->method.base, (int)(r->req->path.len < 200 ? r->req->path.len : 200), r->req->path.base);
    }
    if (shown < n)
        est_log_warn("worker %zu: ... and %zu more cut request(s)", w->id, n - shown);
    atomic_fetch_add(&w->server->cut_requests, n);
}

#define TRACE_FLUSH_MS 1000 /* the last export of queued spans at shutdown, at most */

/*
 * (SPEC "Tracing") after a drain that was not cut: one last export of the spans each view's
 * exporter still queues, for at most TRACE_FLUSH_MS while the loop keeps running (the exports
 * are asynchronous, as any other); whatever is still queued or in flight after that is counted
 * as dropped when the views retire. No delay without tracing or with nothing queued.
 */
static void flush_traces(est_worker_t *w)
{
    uint64_t deadline = h2o_now(w->ctx.loop) + TRACE_FLUSH_MS;
    for (;;) {
        int busy = est_tracer_flush(w->current->tracer);
        for (h2o_linklist_t *n = w->old_gens.next; n != &w->old_gens; n = n->next)
            busy |= est_tracer_flush(H2O_STRUCT_FROM_MEMBER(est_worker_gen_t, link, n)->tracer);
        uint64_t now = h2o_now(w->ctx.loop);
        if (!busy || now >= deadline)
            return;
        h2o_evloop_run(w->ctx.loop, (int32_t)(deadline - now < 100 ? deadline - now : 100));
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

/*
 * (memory) Every h2o socket of this thread takes its input buffer from the thread-local
 * h2o_socket_buffer_prototype, whose initial capacity is 8 KiB in h2o 2.2.5. A buffer lives
 * as long as its bytes are unconsumed: for an HTTP/1 client that is from the first byte of a
 * request to the end of its response (the request's header and path pointers point into it),
 * so with 5,000 clients whose requests wait in the upstream pool's queue, 5,000 of them are
 * held, almost empty (a request head is a few hundred bytes). h2o's socket read asks for
 * 4 KiB of room at a time (h2o_buffer_reserve(input, 4096) in evloop's on_read_core), so
 * 4 KiB is the smallest capacity that is still served from the prototype's recycle list;
 * larger inputs grow by doubling as before. Upstream sockets keep their buffer across reads
 * (upstream/client.c), so a streamed body (S3) reaches the same size after a few reads.
 * Measured in tests/bench/RESULTS.md ("S4 memory"): ~4 KiB less per waiting client.
 * Must run on the worker's thread before it creates any socket (the recycle list caches
 * chunks of exactly the initial capacity).
 */
#define EST_SOCKET_BUFFER_INITIAL 4096
#define EST_SOCKET_BUFFERS_KEPT 256
static void set_socket_buffer_size(void)
{
    if (h2o_socket_buffer_prototype.allocator.cnt == 0)
        h2o_socket_buffer_prototype._initial_buf.capacity = EST_SOCKET_BUFFER_INITIAL;
    /* (perf) h2o keeps at most 16 freed buffers for reuse; with tens of connections ready in
     * one loop iteration most allocations missed that list and went to malloc (~2 malloc +
     * free of 4-8 KiB per proxied request). 256 kept buffers: at most 1 MiB per worker, idle.
     * callgrind S1: -5 % instructions/request (tests/bench/RESULTS.md). */
    h2o_socket_buffer_prototype.allocator.max = EST_SOCKET_BUFFERS_KEPT;
}

/*
 * (memory) Seeds the worker's request-id generator (handler.c) from the kernel. Left unseeded,
 * handler.c seeds it with OpenSSL's RAND_bytes on the first request, and that first call
 * initialises OpenSSL's DRBG and default provider: ~2 MiB more RSS (libcrypto pages mapped
 * in), in a process that otherwise needs no OpenSSL without TLS. The state is the same
 * (rid_state[0] random, rid_state[1] = 1: seeded); if getrandom fails, handler.c's RAND_bytes
 * path still runs.
 */
static void seed_request_ids(est_worker_t *w)
{
    uint64_t seed;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) == (ssize_t)sizeof(seed)) {
        w->rid_state[0] = seed;
        w->rid_state[1] = 1;
    }
}

static void *worker_main(void *arg)
{
    est_worker_t *w = arg;
    est_server_t *s = w->server;
    est_gen_t *gen = w->start_gen;
    const est_config_t *conf = gen->conf;

    set_socket_buffer_size();
    seed_request_ids(w);
    /* the ring goes first: every client and backend socket of this worker is tracked on it */
    char why[160];
    if (est_io_thread_start(conf->io_uring, why, sizeof(why)))
        est_log_info("worker %zu: socket I/O on io_uring", w->id);
    else
        est_log_info("worker %zu: socket I/O on epoll (io_uring: %s)", w->id, why);
    /* h2o's evloop keeps thread-local state: the context is made on the worker's own thread,
     * and the main thread is told (barrier) once it can be woken */
    h2o_context_init(&w->ctx, h2o_evloop_create(), &s->h2oconf);
    h2o_linklist_init_anchor(&w->old_gens);
    h2o_linklist_init_anchor(&w->conns);
    h2o_linklist_init_anchor(&w->requests);
    h2o_multithread_register_receiver(w->ctx.queue, &w->wake, on_wake);
    h2o_multithread_register_receiver(w->ctx.queue, &w->reload_rx, on_reload);
    est_observe_worker_init(w); /* (admin) metrics, snapshot receiver: answers before /readyz says ready */
    pthread_barrier_wait(&s->ready);
    w->dns = est_dns_create(w->ctx.loop, &conf->dns);
    if ((w->current = est_worker_gen_create(w, gen)) == NULL) {
        est_log_error("worker %zu: cannot build the upstreams", w->id);
        abort();
    }
    w->start_gen = NULL;
    est_accept_worker_init(w, conf);

    w->num_listeners = conf->num_listen;
    w->listeners = h2o_mem_alloc(sizeof(*w->listeners) * (conf->num_listen ? conf->num_listen : 1));
    for (size_t i = 0; i != conf->num_listen; ++i)
        w->listeners[i] = listener_open(w, w->start_fds[i], gen->listener_ssl[i]);
    free(w->start_fds);
    w->start_fds = NULL;

    while (!atomic_load(&s->shutdown))
        h2o_evloop_run(w->ctx.loop, INT32_MAX);

    /* drain: stop accepting, let in-flight requests finish (h2 gets GOAWAY), close idle h1 */
    w->draining = 1;
    uint64_t timeout_ms = w->current->gen->conf->shutdown_timeout_ms;
    close_listeners(w);
    h2o_context_request_shutdown(&w->ctx);
    close_idle_connections(w);
    uint64_t deadline = h2o_now(w->ctx.loop) + timeout_ms;
    while (w->num_conns != 0) {
        uint64_t now = h2o_now(w->ctx.loop);
        if (now >= deadline) {
            log_cut_requests(w);
            w->drain_cut = 1;
            park(w); /* the process exits without tearing this loop down */
            return NULL;
        }
        h2o_evloop_run(w->ctx.loop, (int32_t)(deadline - now < 100 ? deadline - now : 100));
    }
    /* h2o arms a 1 s timer to resend GOAWAY to HTTP/2 connections; none is left, so it has
     * nothing to do and waiting for it would only delay the exit (h2o_context_dispose
     * requires it unlinked) */
    if (h2o_timeout_is_linked(&w->ctx.http2._graceful_shutdown_timeout))
        h2o_timeout_unlink(&w->ctx.http2._graceful_shutdown_timeout);
    /* a reload sent just before the drain may still be queued: apply (i.e. drop) it */
    for (int i = 0; i != 100 && !h2o_linklist_is_empty(&w->reload_rx._messages); ++i)
        h2o_evloop_run(w->ctx.loop, 10);
    flush_traces(w);

    est_observe_worker_close(w); /* (admin) before the queue goes away */
    est_aggregate_worker_exit(); /* aggregate cache refreshes cancelled (they pin views) */
    est_proxy_worker_exit(); /* cache refreshes cancelled (they pin views), coalescing table freed */
    while (!h2o_linklist_is_empty(&w->old_gens))
        est_worker_gen_retire(H2O_STRUCT_FROM_MEMBER(est_worker_gen_t, link, w->old_gens.next));
    est_worker_gen_t *cur = w->current;
    w->current = NULL;
    est_worker_gen_retire(cur);
    est_dns_destroy(w->dns);
    for (size_t i = 0; i != w->num_timeouts; ++i) {
        h2o_timeout_dispose(w->ctx.loop, w->timeouts[i]);
        free(w->timeouts[i]);
    }
    free(w->timeouts);
    h2o_multithread_unregister_receiver(w->ctx.queue, &w->reload_rx);
    h2o_multithread_unregister_receiver(w->ctx.queue, &w->wake);
    est_h2o_context_teardown(&w->ctx);
    est_io_thread_stop(); /* after the loop's last run: its sockets are closed */
    est_observe_worker_dispose(w); /* (admin) */
    park(w);
    return NULL;
}

static void pass_filter(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    h2o_setup_next_ostream(req, slot);
}

static void setup_h2o(est_server_t *s, const est_config_t *conf)
{
    h2o_config_init(&s->h2oconf);
    /* no server_name: the handler adds the Server header (EST_SERVER_HEADER) as a plain
     * header, the same for HTTP/1.1 (h1/conn.c) and HTTP/2 */
    s->h2oconf.server_name = h2o_iovec_init(H2O_STRLIT(""));
    /* HTTP/2: h2o buffers each request body whole before the handler runs, refusing a stream
     * whose body is over this limit, so no more than max_request_body is ever buffered for
     * one request (HTTP/1.1 is estuary's own, h1/conn.c, with the same limit). Fixed at start:
     * a reload that raises max_request_body above it is logged (takes full effect at the next
     * start); a lowered one is enforced by the handler. The + 1 keeps a body of exactly
     * max_request_body accepted (h2o refuses a chunked-up body when its size reaches the
     * limit). See docs/streaming.md. */
    uint64_t limit = conf->max_request_body;
    s->h2oconf.max_request_entity_size = limit >= SIZE_MAX ? SIZE_MAX : (size_t)limit + 1;
    h2o_hostconf_t *host = h2o_config_register_host(&s->h2oconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    est_handler_setup_fallback(host);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    /* h2o registers its chunked encoder on every path; it only acts on HTTP/1.1, whose
     * framing is estuary's own (h1/conn.c chunks without sprintf): it is made a no-op, and
     * kept in the list so that h2o_config_dispose frees it as usual */
    for (size_t i = 0; i != path->filters.size; ++i)
        path->filters.entries[i]->on_setup_ostream = pass_filter;
    h2o_handler_t *handler = h2o_create_handler(path, sizeof(*handler));
    handler->on_req = est_handler_on_req;
}

/* ---- main ------------------------------------------------------------------------------------ */

int est_server_run(est_config_t *conf)
{
    est_server_t s = {0};
    int ret = 1;
    atomic_init(&s.shutdown, 0);
    atomic_init(&s.cut_requests, 0);
    s.start_conf = conf;
    if ((s.gen = est_gen_create(conf, 1)) == NULL)
        return 1;
    est_gen_addref(s.gen);
    s.first_gen = s.gen;
    setup_h2o(&s, conf);
    est_h2_hpack_out_check();

    s.num_workers = conf->workers;
    s.listen_fds = calloc(s.num_workers, sizeof(*s.listen_fds));
    for (size_t w = 0; w != s.num_workers; ++w) {
        s.listen_fds[w] = malloc(sizeof(int) * (conf->num_listen ? conf->num_listen : 1));
        for (size_t i = 0; i != conf->num_listen; ++i)
            s.listen_fds[w][i] = -1;
        for (size_t i = 0; i != conf->num_listen; ++i)
            if ((s.listen_fds[w][i] = est_reload_open_listener(conf->listen + i)) == -1)
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
        est_gen_addref(s.gen);
        s.workers[w].start_gen = s.gen;
        s.workers[w].start_fds = s.listen_fds[w]; /* from here on the worker owns them */
        s.listen_fds[w] = NULL;
        pthread_create(&s.workers[w].tid, NULL, worker_main, s.workers + w);
    }
    pthread_barrier_wait(&s.ready);
    est_observe_server_ready(&s); /* (admin) /readyz */
    for (size_t i = 0; i != conf->num_listen; ++i)
        est_log_info("listening on %s://%s:%u", conf->listen[i].tls ? "https" : "http", conf->listen[i].host,
                     conf->listen[i].port);
    est_log_info("estuary %s started: %zu worker(s), %zu route(s), %zu upstream(s)", ESTUARY_VERSION, s.num_workers,
                 conf->num_routes, conf->num_upstreams);
    free(s.listen_fds);
    s.listen_fds = NULL;

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
                         (unsigned long long)s.gen->conf->shutdown_timeout_ms);
            break;
        } else if (sig == SIGHUP) {
            est_server_reload(&s);
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
    if (cut)
        est_log_warn("drain cut by shutdown_timeout: %zu request(s) did not finish", (size_t)atomic_load(&s.cut_requests));
    est_policy_shutdown(); /* the JWKS fetcher: no worker asks it any more */
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
        for (size_t i = 0; i != conf->num_listen; ++i)
            if (s.listen_fds[w][i] != -1)
                close(s.listen_fds[w][i]);
        free(s.listen_fds[w]);
    }
    free(s.listen_fds);
    if (s.workers != NULL)
        pthread_barrier_destroy(&s.ready);
    free(s.workers);
    h2o_config_dispose(&s.h2oconf);
    est_gen_release(s.gen); /* the workers released theirs */
    est_gen_release(s.first_gen); /* frees the config the process started with */
    est_cache_global_shutdown(); /* no worker runs any more */
    return ret;
}
