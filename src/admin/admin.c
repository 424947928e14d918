/*
 * estuary - the admin listener thread (see admin.h).
 */
#include "admin/admin.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <h2o/http2.h>
#include <openssl/crypto.h>

#include "common/h2o_compat.h"
#include "common/log.h"
#include "common/net.h"
#include "admin/console.h"
#include "cache/global.h"

#define SCRAPE_TIMEOUT_MS 1000
#define STOP_TIMEOUT_MS 2000

/* est_admin_t.rebind_fd: close the listener (the admin stays, dormant, until a rebind) */
#define REBIND_CLOSE -2

/* posted by the admin thread when it is done (one admin per process); see park() */
static sem_t admin_finished;

typedef struct st_scrape_t scrape_t;

struct est_admin {
    const est_config_t *conf; /* only during est_admin_start */
    pthread_mutex_t json_mu;  /* (reload) guards json */
    json_t *json;             /* the effective config for /config (own copy; replaced on reload) */
    est_admin_hooks_t hooks;
    int listen_fd;
    atomic_int rebind_fd; /* (reload) a new listening socket for the admin thread to take, or -1 */
    pthread_t tid;
    pthread_barrier_t started;
    atomic_int stop;
    atomic_int ready, draining;
    atomic_uint_fast64_t generation, reloads_ok, reloads_failed;
    atomic_int last_reload;               /* 0 none, 1 ok, 2 failed */
    atomic_uint_fast64_t last_reload_ms;  /* unix milliseconds */
    atomic_int need_token;                /* bound beyond loopback: /, /state, /config need admin.token */
    atomic_int next_need_token;           /* (reload) need_token once the rebind_fd is taken */
    char *token;                          /* (json_mu) admin.token of the current config, or NULL */
    double start_time;
    int stop_failed;
    /* owned by the admin thread */
    h2o_globalconf_t h2oconf;
    h2o_context_t ctx;
    h2o_accept_ctx_t accept_ctx;
    h2o_socket_t *listener;
    h2o_multithread_receiver_t wake_rx, reply_rx;
    h2o_timeout_t scrape_timeout;
    size_t num_conns, num_scrapes;
    est_console_history_t *history;
};

typedef struct st_admin_handler_t {
    h2o_handler_t super;
    est_admin_t *admin;
} admin_handler_t;

/* lives in the request pool; cleared when the scrape answers first */
typedef struct st_scrape_ref_t {
    scrape_t *s;
} scrape_ref_t;

struct st_scrape_t {
    est_admin_t *a;
    int state;         /* answers /state instead of /metrics */
    h2o_req_t *req;    /* NULL once answered or the client left */
    scrape_ref_t *ref;
    size_t outstanding; /* messages not back yet */
    est_metrics_snapshot_t *snaps;
    h2o_timeout_entry_t timeout;
};

/* ---- responses ------------------------------------------------------------------------- */

static void send_body(h2o_req_t *req, int status, const char *reason, const char *type, const char *body, size_t len)
{
    req->res.status = status;
    req->res.reason = reason;
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, type, strlen(type));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_send_inline(req, body, len);
}

static void send_json(h2o_req_t *req, int status, const char *reason, const char *body)
{
    send_body(req, status, reason, "application/json", body, strlen(body));
}

static void send_error(h2o_req_t *req, int status, const char *reason, const char *code, const char *message)
{
    json_t *doc = json_pack("{s:{s:i,s:s,s:s}}", "error", "status", status, "code", code, "message", message);
    char *body = json_dumps(doc, JSON_COMPACT);
    send_json(req, status, reason, body);
    free(body);
    json_decref(doc);
}

/* ---- /metrics ---------------------------------------------------------------------------- */

static void scrape_maybe_free(scrape_t *s)
{
    if (s->req != NULL || s->outstanding != 0)
        return;
    for (size_t i = 0; i != s->a->hooks.num_workers; ++i)
        est_metrics_snapshot_dispose(s->snaps + i);
    free(s->snaps);
    --s->a->num_scrapes;
    free(s);
}

static double now_unix(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void scrape_answer(scrape_t *s)
{
    est_admin_t *a = s->a;
    if (h2o_timeout_is_linked(&s->timeout))
        h2o_timeout_unlink(&s->timeout);
    h2o_req_t *req = s->req;
    if (req == NULL)
        return;
    s->req = NULL;
    s->ref->s = NULL;
    s->ref = NULL;

    est_process_metrics_t proc = {0};
    proc.workers = a->hooks.num_workers;
    for (size_t i = 0; i != a->hooks.num_workers; ++i)
        proc.workers_missing += !s->snaps[i].filled;
    proc.config_generation = atomic_load(&a->generation);
    proc.reloads_ok = atomic_load(&a->reloads_ok);
    proc.reloads_failed = atomic_load(&a->reloads_failed);
    proc.ready = atomic_load(&a->ready);
    proc.draining = atomic_load(&a->draining);
    proc.start_time = a->start_time;
    if (proc.workers_missing != 0)
        est_log_warn("admin: %s: %zu worker(s) did not answer within %dms", s->state ? "/state" : "/metrics", proc.workers_missing,
                     SCRAPE_TIMEOUT_MS);
    est_strbuf_t out = {0};
    if (s->state) {
        struct timespec mono;
        clock_gettime(CLOCK_MONOTONIC, &mono);
        est_console_info_t info = {.proc = &proc,
                                   .last_reload = atomic_load(&a->last_reload),
                                   .last_reload_time = (double)atomic_load(&a->last_reload_ms) / 1000,
                                   .now = now_unix(),
                                   .mono = (double)mono.tv_sec + mono.tv_nsec / 1e9};
        pthread_mutex_lock(&a->json_mu); /* the reload's main thread only: the workers never take it */
        info.config = a->json;
        est_console_render_state(&out, s->snaps, a->hooks.num_workers, &info, a->history);
        pthread_mutex_unlock(&a->json_mu);
        send_body(req, 200, "OK", "application/json", out.base, out.len);
    } else {
        est_metrics_render(&out, s->snaps, a->hooks.num_workers, &proc);
        send_body(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", out.base, out.len);
    }
    est_strbuf_dispose(&out);
}

static void on_scrape_timeout(h2o_timeout_entry_t *entry)
{
    scrape_t *s = H2O_STRUCT_FROM_MEMBER(scrape_t, timeout, entry);
    scrape_answer(s);
    scrape_maybe_free(s);
}

static void on_scrape_req_dispose(void *p)
{
    scrape_ref_t *ref = p;
    scrape_t *s = ref->s;
    if (s == NULL)
        return;
    /* the client left before the answer */
    if (h2o_timeout_is_linked(&s->timeout))
        h2o_timeout_unlink(&s->timeout);
    s->req = NULL;
    s->ref = NULL;
    scrape_maybe_free(s);
}

static void on_reply(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    while (!h2o_linklist_is_empty(messages)) {
        est_stats_msg_t *msg = H2O_STRUCT_FROM_MEMBER(est_stats_msg_t, super.link, messages->next);
        h2o_linklist_unlink(&msg->super.link);
        scrape_t *s = msg->scrape;
        if (s->req != NULL && msg->worker < s->a->hooks.num_workers && !s->snaps[msg->worker].filled)
            s->snaps[msg->worker] = msg->snap; /* moved */
        else
            est_metrics_snapshot_dispose(&msg->snap); /* too late: answered already */
        free(msg);
        if (--s->outstanding == 0)
            scrape_answer(s);
        scrape_maybe_free(s);
    }
}

static void start_scrape(est_admin_t *a, h2o_req_t *req, int state)
{
    scrape_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        abort();
    s->a = a;
    s->state = state;
    s->req = req;
    s->snaps = calloc(a->hooks.num_workers == 0 ? 1 : a->hooks.num_workers, sizeof(*s->snaps));
    if (s->snaps == NULL)
        abort();
    s->timeout.cb = on_scrape_timeout;
    s->ref = h2o_mem_alloc_shared(&req->pool, sizeof(*s->ref), on_scrape_req_dispose);
    s->ref->s = s;
    ++a->num_scrapes;
    for (size_t i = 0; i != a->hooks.num_workers; ++i) {
        est_stats_msg_t *msg = calloc(1, sizeof(*msg));
        if (msg == NULL)
            abort();
        msg->reply_to = &a->reply_rx;
        msg->scrape = s;
        msg->worker = i;
        if (a->hooks.request_snapshot(a->hooks.data, i, msg) == 0)
            ++s->outstanding;
        else
            free(msg); /* a stopped worker: reported as missing */
    }
    if (s->outstanding == 0)
        scrape_answer(s);
    else
        h2o_timeout_link(a->ctx.loop, &a->scrape_timeout, &s->timeout);
}

/* ---- /config ------------------------------------------------------------------------------ */

static int is_secret_key(const char *k)
{
    static const char *const words[] = {"secret", "password", "passwd", "token", "credential", "private", NULL};
    if (strcasecmp(k, "key_file") == 0)
        return 1;
    size_t n = strlen(k);
    if (n > 3 && strcasecmp(k + n - 3, "key") == 0) /* "api_key", "privatekey"; not a rate limit's "key" selector */
        return 1;
    for (size_t i = 0; words[i] != NULL; ++i)
        if (strcasestr(k, words[i]) != NULL)
            return 1;
    return 0;
}

/* "scheme://user:pass@host/..." -> "scheme://<redacted>@host/..."; NULL when nothing to hide */
static char *redact_url(const char *s)
{
    const char *p = strstr(s, "://");
    if (p == NULL)
        return NULL;
    const char *auth = p + 3, *end = auth + strcspn(auth, "/?#"), *at = NULL;
    for (const char *q = auth; q != end; ++q)
        if (*q == '@')
            at = q;
    if (at == NULL)
        return NULL;
    size_t n = (size_t)(auth - s) + strlen("<redacted>") + strlen(at) + 1;
    char *r = malloc(n);
    if (r == NULL)
        abort();
    snprintf(r, n, "%.*s<redacted>%s", (int)(auth - s), s, at);
    return r;
}

json_t *est_admin_redact_config(const json_t *v)
{
    if (json_is_object(v)) {
        json_t *o = json_object();
        const char *k;
        json_t *child;
        json_object_foreach((json_t *)v, k, child) {
            /* a boolean is a setting, never a secret ("credentials": true in a route's cors) */
            if (is_secret_key(k) && !json_is_object(child) && !json_is_array(child) && !json_is_null(child) &&
                !json_is_boolean(child))
                json_object_set_new(o, k, json_string("<redacted>"));
            else
                json_object_set_new(o, k, est_admin_redact_config(child));
        }
        return o;
    }
    if (json_is_array(v)) {
        json_t *a = json_array();
        for (size_t i = 0; i != json_array_size(v); ++i)
            json_array_append_new(a, est_admin_redact_config(json_array_get(v, i)));
        return a;
    }
    if (json_is_string(v)) {
        char *r = redact_url(json_string_value(v));
        if (r != NULL) {
            json_t *s = json_string(r);
            free(r);
            return s;
        }
    }
    return json_deep_copy(v);
}

static void send_config(est_admin_t *a, h2o_req_t *req)
{
    pthread_mutex_lock(&a->json_mu);
    json_t *doc = est_admin_redact_config(a->json);
    pthread_mutex_unlock(&a->json_mu);
    char *body = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (body == NULL) {
        send_error(req, 500, "Internal Server Error", "internal_error", "cannot serialize the configuration");
        return;
    }
    size_t len = strlen(body);
    body = realloc(body, len + 2);
    body[len++] = '\n';
    send_body(req, 200, "OK", "application/json", body, len);
    free(body);
}

/* ---- DELETE /cache -------------------------------------------------------------------------- */

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* the value of `name` in the query (percent-decoded into the pool), or {NULL,0} when absent;
 * base NULL with len 1 when it is not valid percent-encoding */
static h2o_iovec_t query_param(h2o_req_t *req, const char *name, size_t name_len)
{
    if (req->query_at == SIZE_MAX)
        return h2o_iovec_init(NULL, 0);
    const char *q = req->path.base + req->query_at + 1, *end = req->path.base + req->path.len;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q)), *stop = amp != NULL ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        if (eq != NULL && (size_t)(eq - q) == name_len && memcmp(q, name, name_len) == 0) {
            const char *v = eq + 1;
            char *out = h2o_mem_alloc_pool(&req->pool, (size_t)(stop - v) + 1), *dst = out;
            for (; v < stop; ++v) {
                if (*v == '%') {
                    int hi = stop - v > 2 ? hex_digit(v[1]) : -1, lo = stop - v > 2 ? hex_digit(v[2]) : -1;
                    if (hi < 0 || lo < 0)
                        return h2o_iovec_init(NULL, 1);
                    *dst++ = (char)(hi * 16 + lo);
                    v += 2;
                } else {
                    *dst++ = *v == '+' ? ' ' : *v;
                }
            }
            return h2o_iovec_init(out, (size_t)(dst - out));
        }
        q = stop + 1;
    }
    return h2o_iovec_init(NULL, 0);
}

/*
 * DELETE /cache?route=TEMPLATE[&path=PATH]: removes the stored replies of one route's path
 * (every method, query and Vary variant), or of the whole route without `path`. 204 (also when
 * nothing was stored), 400 without `route`.
 */
static void purge_cache(h2o_req_t *req)
{
    h2o_iovec_t route = query_param(req, H2O_STRLIT("route")), path = query_param(req, H2O_STRLIT("path"));
    if (route.base == NULL || (path.base == NULL && path.len != 0)) {
        send_error(req, 400, "Bad Request", "bad_request",
                   "use DELETE /cache?route=TEMPLATE&path=PATH (percent-encoded; without path: the whole route)");
        return;
    }
    est_cache_store_t *store = est_cache_global();
    char prefix[EST_CACHE_MAX_KEY];
    size_t plen = path.base != NULL ? est_cache_key_prefix(prefix, sizeof(prefix), route.base, route.len, path.base, path.len)
                                    : est_cache_key_route_prefix(prefix, sizeof(prefix), route.base, route.len);
    if (plen == 0) {
        send_error(req, 400, "Bad Request", "bad_request", "route and path are too long");
        return;
    }
    if (store != NULL)
        est_cache_store_purge_prefix(store, prefix, plen);
    req->res.status = 204;
    req->res.reason = "No Content";
    h2o_send_inline(req, "", 0);
}

/* ---- admin.token ---------------------------------------------------------------------------- */

/* 127.0.0.1 and ::1 (in any spelling) need no token; every other bind address does */
static int is_loopback_host(const char *host)
{
    unsigned char a[16];
    if (inet_pton(AF_INET, host, a) == 1)
        return a[0] == 127 && a[1] == 0 && a[2] == 0 && a[3] == 1;
    if (inet_pton(AF_INET6, host, a) == 1)
        return memcmp(a, in6addr_loopback.s6_addr, 16) == 0;
    return 0;
}

/* `Authorization: Bearer <admin.token>` (RFC 6750 section 2.1; the scheme is case-insensitive,
 * RFC 7235 section 2.1), compared in constant time; no configured token matches nothing */
static int authorized(est_admin_t *a, h2o_req_t *req)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, -1);
    if (i == -1)
        return 0;
    h2o_iovec_t v = req->headers.entries[i].value;
    if (v.len < 7 || strncasecmp(v.base, "Bearer ", 7) != 0)
        return 0;
    const char *cred = v.base + 7;
    size_t len = v.len - 7;
    while (len != 0 && *cred == ' ')
        ++cred, --len;
    while (len != 0 && cred[len - 1] == ' ')
        --len;
    int ok = 0;
    pthread_mutex_lock(&a->json_mu);
    if (a->token != NULL) {
        size_t tlen = strlen(a->token);
        /* the length is not secret (admin.token's minimum is public); the bytes are */
        ok = tlen == len && CRYPTO_memcmp(a->token, cred, len) == 0;
    }
    pthread_mutex_unlock(&a->json_mu);
    return ok;
}

static void set_token(est_admin_t *a, const est_admin_conf_t *c)
{
    char *t = c != NULL && c->token != NULL ? strdup(c->token) : NULL;
    if (c != NULL && c->token != NULL && t == NULL)
        abort();
    pthread_mutex_lock(&a->json_mu);
    char *old = a->token;
    a->token = t;
    pthread_mutex_unlock(&a->json_mu);
    if (old != NULL) {
        OPENSSL_cleanse(old, strlen(old));
        free(old);
    }
}

/* ---- dispatch ------------------------------------------------------------------------------ */

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    est_admin_t *a = ((admin_handler_t *)self)->admin;
    req->http1_is_persistent = 0; /* see admin.h: close after each answer */
    size_t len = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    h2o_iovec_t path = h2o_iovec_init(req->path.base, len);
    int is_page = h2o_memis(path.base, path.len, H2O_STRLIT("/")), is_state = h2o_memis(path.base, path.len, H2O_STRLIT("/state")),
        is_config = h2o_memis(path.base, path.len, H2O_STRLIT("/config")), is_cache = h2o_memis(path.base, path.len, H2O_STRLIT("/cache"));
    int known = h2o_memis(path.base, path.len, H2O_STRLIT("/healthz")) || h2o_memis(path.base, path.len, H2O_STRLIT("/readyz")) ||
                h2o_memis(path.base, path.len, H2O_STRLIT("/metrics")) || is_config || is_page || is_state || is_cache;
    if (!known) {
        send_error(req, 404, "Not Found", "not_found", "admin endpoints: /, /state, /healthz, /readyz, /metrics, /config, /cache");
        return 0;
    }
    if (is_cache && !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("DELETE"))) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("DELETE"));
        send_error(req, 405, "Method Not Allowed", "method_not_allowed", "/cache accepts DELETE");
        return 0;
    }
    if (!is_cache && !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) &&
        !h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("GET, HEAD"));
        send_error(req, 405, "Method Not Allowed", "method_not_allowed", "admin endpoints accept GET and HEAD");
        return 0;
    }
    if ((is_page || is_state || is_config || is_cache) && atomic_load(&a->need_token) && !authorized(a, req)) {
        static const char challenge[] = "Bearer realm=\"estuary-admin\"";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, challenge, sizeof(challenge) - 1);
        send_error(req, 401, "Unauthorized", "unauthorized",
                   "the admin listener is bound beyond loopback: send Authorization: Bearer <admin.token>");
        return 0;
    }
    if (is_page) {
        /* the page loads nothing else: forbid any outside fetch, framing and sniffing */
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("content-security-policy"), 0, NULL,
                       H2O_STRLIT("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                  "connect-src 'self'; img-src data:; frame-ancestors 'none'"));
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0, NULL, H2O_STRLIT("nosniff"));
        send_body(req, 200, "OK", "text/html; charset=utf-8", (const char *)est_console_html, est_console_html_len);
    } else if (is_state) {
        start_scrape(a, req, 1);
    } else if (is_cache) {
        purge_cache(req);
    } else if (h2o_memis(path.base, path.len, H2O_STRLIT("/healthz"))) {
        send_json(req, 200, "OK", "{\"status\":\"ok\"}\n");
    } else if (h2o_memis(path.base, path.len, H2O_STRLIT("/readyz"))) {
        if (atomic_load(&a->draining))
            send_json(req, 503, "Service Unavailable", "{\"status\":\"draining\"}\n");
        else if (!atomic_load(&a->ready))
            send_json(req, 503, "Service Unavailable", "{\"status\":\"starting\"}\n");
        else
            send_json(req, 200, "OK", "{\"status\":\"ready\"}\n");
    } else if (h2o_memis(path.base, path.len, H2O_STRLIT("/metrics"))) {
        start_scrape(a, req, 0);
    } else {
        send_config(a, req);
    }
    return 0;
}

/* ---- thread ------------------------------------------------------------------------------- */

static void on_conn_close(void *data)
{
    --((est_admin_t *)data)->num_conns;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    est_admin_t *a = listener->data;
    h2o_socket_t *sock;
    if (err != NULL)
        return;
    for (int i = 0; i != 16 && (sock = h2o_evloop_socket_accept(listener)) != NULL; ++i) {
        ++a->num_conns;
        sock->on_close.cb = on_conn_close;
        sock->on_close.data = a;
        h2o_accept(&a->accept_ctx, sock);
    }
}

static void on_wake(h2o_multithread_receiver_t *rx, h2o_linklist_t *messages)
{
    (void)rx;
    (void)messages; /* only interrupts the loop; the state is in a->stop */
}

/*
 * As the workers do (server.c): the finished thread parks instead of ending, because libh2o
 * 2.2.5 keeps freed buffers in thread-local recycle lists that LeakSanitizer would report.
 */
static void park(void)
{
    sem_post(&admin_finished);
    for (;;)
        pause();
}

/* (reload) swaps the listening socket, or closes it (fd REBIND_CLOSE: the admin goes dormant);
 * connections accepted on the old one finish normally */
static void take_listener(est_admin_t *a, int fd)
{
    if (a->listener != NULL) {
        h2o_socket_read_stop(a->listener);
        h2o_socket_close(a->listener);
        a->listener = NULL;
    }
    if (fd < 0)
        return;
    a->listener = h2o_evloop_socket_create(a->ctx.loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    a->listener->data = a;
    h2o_socket_read_start(a->listener, on_accept);
}

static void *admin_main(void *arg)
{
    est_admin_t *a = arg;
    h2o_context_init(&a->ctx, h2o_evloop_create(), &a->h2oconf);
    h2o_multithread_register_receiver(a->ctx.queue, &a->wake_rx, on_wake);
    h2o_multithread_register_receiver(a->ctx.queue, &a->reply_rx, on_reply);
    h2o_timeout_init(a->ctx.loop, &a->scrape_timeout, SCRAPE_TIMEOUT_MS);
    a->accept_ctx.ctx = &a->ctx;
    a->accept_ctx.hosts = a->h2oconf.hosts;
    a->listener = h2o_evloop_socket_create(a->ctx.loop, a->listen_fd, H2O_SOCKET_FLAG_DONT_READ);
    a->listener->data = a;
    h2o_socket_read_start(a->listener, on_accept);
    pthread_barrier_wait(&a->started);

    while (!atomic_load(&a->stop)) {
        h2o_evloop_run(a->ctx.loop, INT32_MAX);
        int fd = atomic_exchange(&a->rebind_fd, -1);
        if (fd != -1) {
            take_listener(a, fd);
            atomic_store(&a->need_token, atomic_load(&a->next_need_token));
        }
    }

    take_listener(a, REBIND_CLOSE);
    /* no h2o_context_request_shutdown: admin h1 connections close after each answer, and the
     * HTTP/2 graceful-shutdown timer it arms would add a second to every stop */
    uint64_t deadline = h2o_now(a->ctx.loop) + STOP_TIMEOUT_MS;
    while (a->num_conns != 0 || a->num_scrapes != 0 || h2o_timeout_is_linked(&a->ctx.http2._graceful_shutdown_timeout)) {
        if (h2o_now(a->ctx.loop) >= deadline) {
            est_log_warn("admin: %zu connection(s) still open at exit", a->num_conns);
            a->stop_failed = 1;
            park();
            return NULL;
        }
        h2o_evloop_run(a->ctx.loop, 50);
    }
    h2o_timeout_dispose(a->ctx.loop, &a->scrape_timeout);
    h2o_multithread_unregister_receiver(a->ctx.queue, &a->wake_rx);
    h2o_multithread_unregister_receiver(a->ctx.queue, &a->reply_rx);
    est_h2o_context_teardown(&a->ctx);
    park();
    return NULL;
}

static int open_listener(const est_admin_conf_t *c)
{
    return est_listen_tcp("admin listener", c->host, c->port, EST_LISTEN_NUMERIC, 64);
}

est_admin_t *est_admin_start(const est_config_t *conf, const est_admin_hooks_t *hooks)
{
    int fd = open_listener(conf->admin);
    if (fd == -1)
        return NULL;
    est_admin_t *a = calloc(1, sizeof(*a));
    if (a == NULL)
        abort();
    a->conf = conf;
    pthread_mutex_init(&a->json_mu, NULL);
    a->json = json_deep_copy(conf->json);
    set_token(a, conf->admin);
    atomic_init(&a->need_token, !is_loopback_host(conf->admin->host));
    atomic_init(&a->next_need_token, 0);
    atomic_init(&a->last_reload, 0);
    atomic_init(&a->last_reload_ms, 0);
    a->history = est_console_history_create();
    a->hooks = *hooks;
    a->listen_fd = fd;
    atomic_init(&a->rebind_fd, -1);
    atomic_init(&a->stop, 0);
    atomic_init(&a->ready, 0);
    atomic_init(&a->draining, 0);
    atomic_init(&a->generation, 1);
    atomic_init(&a->reloads_ok, 0);
    atomic_init(&a->reloads_failed, 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    a->start_time = (double)ts.tv_sec + ts.tv_nsec / 1e9;

    h2o_config_init(&a->h2oconf);
    a->h2oconf.server_name = h2o_iovec_init(H2O_STRLIT("estuary/" ESTUARY_VERSION));
    a->h2oconf.max_request_entity_size = 64 * 1024;
    h2o_hostconf_t *host = h2o_config_register_host(&a->h2oconf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    admin_handler_t *h = (admin_handler_t *)h2o_create_handler(path, sizeof(*h));
    h->super.on_req = on_req;
    h->admin = a;

    pthread_barrier_init(&a->started, NULL, 2);
    sem_init(&admin_finished, 0, 0);
    if (pthread_create(&a->tid, NULL, admin_main, a) != 0)
        abort();
    pthread_detach(a->tid);
    pthread_barrier_wait(&a->started);
    est_log_info("admin listening on http://%s:%u", conf->admin->host, conf->admin->port);
    a->conf = NULL; /* a reload may free it */
    return a;
}

void est_admin_set_ready(est_admin_t *a)
{
    if (a != NULL)
        atomic_store(&a->ready, 1);
}

void est_admin_set_draining(est_admin_t *a)
{
    if (a != NULL)
        atomic_store(&a->draining, 1);
}

void est_admin_count_reload(est_admin_t *a, int ok)
{
    if (a == NULL)
        return;
    if (ok) {
        atomic_fetch_add(&a->reloads_ok, 1);
        atomic_fetch_add(&a->generation, 1);
    } else {
        atomic_fetch_add(&a->reloads_failed, 1);
    }
    atomic_store(&a->last_reload_ms, (uint_fast64_t)(now_unix() * 1000));
    atomic_store(&a->last_reload, ok ? 1 : 2);
}

void est_admin_set_config(est_admin_t *a, const est_config_t *conf)
{
    if (a == NULL)
        return;
    json_t *copy = json_deep_copy(conf->json), *old;
    pthread_mutex_lock(&a->json_mu);
    old = a->json;
    a->json = copy;
    pthread_mutex_unlock(&a->json_mu);
    json_decref(old);
    set_token(a, conf->admin);
}

int est_admin_rebind(est_admin_t *a, const est_admin_conf_t *c)
{
    int fd = REBIND_CLOSE;
    if (c != NULL && (fd = open_listener(c)) == -1)
        return -1;
    /* stricter at once; a looser rule only once the admin thread swapped the socket */
    int need = c != NULL && !is_loopback_host(c->host);
    atomic_store(&a->next_need_token, need);
    if (need)
        atomic_store(&a->need_token, 1);
    int old = atomic_exchange(&a->rebind_fd, fd);
    if (old >= 0)
        close(old); /* an earlier rebind the admin thread had not taken yet */
    h2o_multithread_send_message(&a->wake_rx, NULL);
    if (c != NULL)
        est_log_info("admin listening on http://%s:%u", c->host, c->port);
    else
        est_log_info("admin listener closed");
    return 0;
}

void est_admin_set_counts(est_admin_t *a, uint64_t generation, uint64_t reloads_ok, uint64_t reloads_failed)
{
    if (a == NULL)
        return;
    atomic_store(&a->generation, generation);
    atomic_store(&a->reloads_ok, reloads_ok);
    atomic_store(&a->reloads_failed, reloads_failed);
}

int est_admin_stop(est_admin_t *a)
{
    if (a == NULL)
        return 0;
    atomic_store(&a->stop, 1);
    h2o_multithread_send_message(&a->wake_rx, NULL);
    while (sem_wait(&admin_finished) != 0)
        ;
    if (a->stop_failed)
        return -1; /* the loop still holds connections: leave it, the process exits */
    int fd = atomic_exchange(&a->rebind_fd, -1);
    if (fd >= 0)
        close(fd);
    pthread_barrier_destroy(&a->started);
    h2o_config_dispose(&a->h2oconf);
    json_decref(a->json);
    set_token(a, NULL);
    est_console_history_destroy(a->history);
    pthread_mutex_destroy(&a->json_mu);
    free(a);
    return 0;
}
