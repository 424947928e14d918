/*
 * estuary - the process-wide JWKS cache (see jwks.h, the rules in jwks_rules.h, the design in
 * docs/jwks.md).
 *
 * Threads and what each touches:
 *   - the fetcher thread (one per process, started by the first subscriber) owns its h2o loop,
 *     its resolver, each source's upstream set and running exchange, and the fetch schedule;
 *   - worker threads own their subscribers (est_jwks_sub_t), the set each one holds, and
 *     their waiters (est_jwks_wait_t), all touched only on that worker's loop;
 *   - `G.mutex` guards what both sides touch: the list of sources, each source's subscribers,
 *     its published set, its fetch state (busy, sequence numbers, times). It is never taken on
 *     the request path unless the set changed (est_jwks_sub_current) or a kid is unknown
 *     (est_jwks_sub_refetch); no I/O and no parsing runs under it.
 * Workers tell the fetcher through its queue (one coalesced "poke" message); the fetcher tells
 * a worker that a fetch ended through a message on the receiver its subscriber registered on
 * the worker's own queue.
 */
#include "policy/jwks.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>

#include "common/log.h"
#include "policy/jwks_rules.h"
#include "upstream/client.h"
#include "upstream/dns.h"

/* ------------------------------------------------------------------ pure rules */

uint64_t est_jwks_refresh_delay(uint64_t refresh_ms, uint32_t rnd)
{
    uint64_t d = refresh_ms / 10 * 9 + refresh_ms % 10 * 9 / 10; /* 90%, without overflow */
    uint64_t span = refresh_ms / 20;                             /* up to 5% earlier */
    if (span != 0)
        d -= rnd % (span + 1);
    return d < EST_JWKS_REFRESH_FLOOR_MS ? EST_JWKS_REFRESH_FLOOR_MS : d;
}

uint64_t est_jwks_retry_delay(uint64_t refresh_ms, unsigned failures, uint32_t rnd)
{
    uint64_t cap = refresh_ms < EST_JWKS_BACKOFF_MAX_MS ? refresh_ms : EST_JWKS_BACKOFF_MAX_MS;
    if (cap < EST_JWKS_BACKOFF_MIN_MS)
        cap = EST_JWKS_BACKOFF_MIN_MS;
    uint64_t d = EST_JWKS_BACKOFF_MIN_MS;
    for (unsigned i = 1; i < failures && d < cap; ++i)
        d *= 2;
    if (d > cap)
        d = cap;
    return d - rnd % (d / 10 + 1);
}

est_jwks_refetch_t est_jwks_refetch_decide(uint64_t now, int busy, int fetched, uint64_t last_start, int ended, uint64_t last_end)
{
    if (busy)
        return EST_JWKS_REFETCH_JOIN;
    if (!fetched)
        return EST_JWKS_REFETCH_START;
    uint64_t last = ended && last_end > last_start ? last_end : last_start;
    return now >= last && now - last >= EST_JWKS_REFETCH_GAP_MS ? EST_JWKS_REFETCH_START : EST_JWKS_REFETCH_REFUSE;
}

static int str_eq(const char *a, const char *b)
{
    return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

static int target_eq(const est_target_conf_t *a, const est_target_conf_t *b)
{
    return str_eq(a->url, b->url) && a->is_tls == b->is_tls && str_eq(a->host, b->host) && a->port == b->port &&
           str_eq(a->authority, b->authority) && a->is_ip_literal == b->is_ip_literal;
}

int est_jwks_same_source(const est_jwt_conf_t *a, const est_jwt_conf_t *b)
{
    const est_upstream_conf_t *x = a->jwks_upstream, *y = b->jwks_upstream;
    if (!str_eq(a->jwks_url, b->jwks_url) || !str_eq(a->jwks_path, b->jwks_path) || x == NULL || y == NULL)
        return 0;
    if (x->num_targets != y->num_targets || x->balance != y->balance || x->connect_timeout_ms != y->connect_timeout_ms ||
        x->response_timeout_ms != y->response_timeout_ms)
        return 0;
    for (size_t i = 0; i != x->num_targets; ++i)
        if (!target_eq(x->targets + i, y->targets + i))
            return 0;
    if (x->pool.max_connections != y->pool.max_connections || x->pool.max_idle != y->pool.max_idle ||
        x->pool.max_requests != y->pool.max_requests || x->pool.idle_timeout_ms != y->pool.idle_timeout_ms)
        return 0;
    if (x->retry.attempts != y->retry.attempts || x->retry.backoff_ms != y->retry.backoff_ms ||
        x->retry.max_backoff_ms != y->retry.max_backoff_ms || x->retry.on != y->retry.on ||
        x->retry.num_statuses != y->retry.num_statuses)
        return 0;
    for (size_t i = 0; i != x->retry.num_statuses; ++i)
        if (x->retry.statuses[i] != y->retry.statuses[i])
            return 0;
    return x->tls.verify == y->tls.verify && str_eq(x->tls.ca_file, y->tls.ca_file) &&
           str_eq(x->tls.server_name, y->tls.server_name);
}

/* ------------------------------------------------------------------ types */

/* A published key set: immutable, shared by the source and the subscribers holding it. */
typedef struct jwks_set {
    atomic_size_t refs;
    uint64_t version;
    est_jwks_t *jwks;
} jwks_set_t;

typedef struct jwks_source {
    h2o_linklist_t link;       /* in G.sources */
    h2o_linklist_t start_link; /* fetcher thread: in run_sources' list of fetches to start */
    /* the key: deep copies of the first subscriber's jwks_url, jwks_path and jwks_upstream;
     * immutable */
    est_jwt_conf_t key;
    est_config_t uconf; /* one-upstream config for est_upstream_set_create (upstreams = key.jwks_upstream) */

    /* G.mutex */
    h2o_linklist_t subs; /* est_jwks_sub_t.link */
    size_t num_subs;
    jwks_set_t *current;  /* last good set, NULL until a fetch succeeded */
    int busy;             /* a fetch runs (running) or was asked for (wanted) */
    int wanted, running;  /* an unknown kid or a new source asked for a fetch; one runs */
    uint64_t seq_started; /* fetches started so far */
    uint64_t seq_done;    /* the last fetch that ended (success or not) */
    int fetched, ended;   /* a fetch ever started / ended */
    uint64_t last_start, last_end;
    uint64_t refresh_ms;          /* the smallest jwks_refresh of the subscribers */
    atomic_uint_fast64_t version; /* current ? current->version : 0; read without the lock */

    /* fetcher thread only */
    est_upstream_set_t *uset;
    est_exchange_t *x;
    est_upstream_request_t req;
    h2o_header_t accept;
    int status;
    char *body;
    size_t body_len, body_cap;
    uint64_t next_at;       /* the next scheduled fetch (monotonic ms); 0: as soon as possible */
    unsigned failures;      /* failed fetches in a row */
    unsigned char hash[32]; /* SHA-256 of the body of the current set */
    int has_hash;
} jwks_source_t;

struct est_jwks_sub {
    h2o_linklist_t link; /* in src->subs (G.mutex) */
    jwks_source_t *src;
    uint64_t refresh_ms;
    h2o_loop_t *loop;
    h2o_multithread_receiver_t rx; /* on the worker's queue: "a fetch ended" */
    int want_notify;               /* G.mutex: a waiter waits; tell this sub when a fetch ends */
    /* worker loop only */
    jwks_set_t *held;
    uint64_t version;
    h2o_linklist_t waiters;
    h2o_linklist_t ready; /* waiters being called back (call_back_done) */
    size_t num_waiters;
    h2o_timeout_t wait_timeout; /* bounds each waiter, should the fetcher never answer */
    h2o_timeout_t now_timeout;  /* 0 ms: a waiter called back from the loop at once */
};

struct est_jwks_wait {
    h2o_linklist_t link; /* in sub->waiters, or sub->ready while being called back */
    est_jwks_sub_t *sub;
    uint64_t seq; /* called back once src->seq_done >= seq */
    h2o_timeout_entry_t timer;
    void (*cb)(void *data);
    void *data;
};

static struct {
    pthread_mutex_t mutex; /* see the top of the file */
    h2o_linklist_t sources;
    int started, start_failed;
    pthread_t tid;
    pthread_cond_t ready_cond;
    int ready;
    atomic_int stop;
    atomic_int poke_pending;
    uint64_t next_version;
    int has_dns_conf;
    est_dns_conf_t dns_conf; /* deep copy (servers), for the fetcher's resolver */
    /* fetcher thread only (the queue and receiver are used by workers to send, under the queue's own lock) */
    h2o_loop_t *loop;
    h2o_multithread_queue_t *queue;
    h2o_multithread_receiver_t rx;
    est_dns_t *dns;
    h2o_timeout_t zero_timeout;
    h2o_timeout_entry_t run_entry;
    unsigned rnd;
} G = {.mutex = PTHREAD_MUTEX_INITIALIZER, .ready_cond = PTHREAD_COND_INITIALIZER};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* how long one fetch may take (the exchange's deadline covers connect, head and body) */
static uint64_t fetch_bound_ms(const jwks_source_t *src)
{
    uint64_t t = src->key.jwks_upstream->response_timeout_ms;
    return t == 0 ? 5000 : t;
}

/* ------------------------------------------------------------------ key sets */

static void set_release(jwks_set_t *s)
{
    if (s != NULL && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) {
        est_jwks_free(s->jwks);
        free(s);
    }
}

/* ------------------------------------------------------------------ config copies */

static char *dup_or_null(const char *s)
{
    return s == NULL ? NULL : h2o_strdup(NULL, s, SIZE_MAX).base;
}

static void upstream_conf_free(est_upstream_conf_t *u)
{
    if (u == NULL)
        return;
    est_upstream_conf_clear(u);
    free(u);
}

static est_upstream_conf_t *upstream_conf_dup(const est_upstream_conf_t *in)
{
    est_upstream_conf_t *u = h2o_mem_alloc(sizeof(*u));
    *u = *in;
    u->index = 0;
    u->name = dup_or_null(in->name);
    u->targets = h2o_mem_alloc(sizeof(*u->targets) * (in->num_targets ? in->num_targets : 1));
    for (size_t i = 0; i != in->num_targets; ++i) {
        u->targets[i] = in->targets[i];
        u->targets[i].url = dup_or_null(in->targets[i].url);
        u->targets[i].host = dup_or_null(in->targets[i].host);
        u->targets[i].authority = dup_or_null(in->targets[i].authority);
    }
    u->retry.statuses = NULL;
    if (in->retry.num_statuses != 0) {
        u->retry.statuses = h2o_mem_alloc(sizeof(int) * in->retry.num_statuses);
        memcpy(u->retry.statuses, in->retry.statuses, sizeof(int) * in->retry.num_statuses);
    }
    u->tls.ca_file = dup_or_null(in->tls.ca_file);
    u->tls.server_name = dup_or_null(in->tls.server_name);
    return u;
}

static void source_free(jwks_source_t *src)
{
    set_release(src->current);
    free(src->key.jwks_url);
    free(src->key.jwks_path);
    upstream_conf_free(src->key.jwks_upstream);
    free(src->body);
    free(src);
}

/* ------------------------------------------------------------------ fetcher: scheduling */

static void poke_fetcher(void);

static void log_target(const jwks_source_t *src, char *buf, size_t len)
{
    /* the query string may carry a credential: logs name the policy and the origin only */
    const est_upstream_conf_t *u = src->key.jwks_upstream;
    snprintf(buf, len, "%s (%s)", u->name != NULL ? u->name : "jwks", u->num_targets ? u->targets[0].authority : "");
}

/* Ends the running fetch of `src`: publishes `set` (NULL: none, i.e. a failure when !ok, or the
 * same document again), schedules the next fetch, and tells every subscriber with waiters.
 * Fetcher thread. */
static void fetch_end(jwks_source_t *src, jwks_set_t *set, int ok)
{
    jwks_set_t *old = NULL;
    uint64_t now = mono_ms();

    pthread_mutex_lock(&G.mutex);
    src->running = 0;
    src->busy = src->wanted;
    src->ended = 1;
    src->last_end = now;
    src->seq_done = src->seq_started;
    /* the next scheduled fetch (refresh_ms may change with the subscribers: read under the lock) */
    uint32_t rnd = (uint32_t)rand_r(&G.rnd);
    src->next_at = now +
                   (ok ? est_jwks_refresh_delay(src->refresh_ms, rnd) : est_jwks_retry_delay(src->refresh_ms, src->failures, rnd));
    if (set != NULL) {
        old = src->current;
        src->current = set;
        atomic_store_explicit(&src->version, set->version, memory_order_release);
    }
    /* each message is sent under the lock: a subscriber unlinks itself under it before it
     * unregisters its receiver, so it never receives a message after that */
    for (h2o_linklist_t *n = src->subs.next; n != &src->subs; n = n->next) {
        est_jwks_sub_t *s = H2O_STRUCT_FROM_MEMBER(est_jwks_sub_t, link, n);
        if (s->want_notify) {
            s->want_notify = 0;
            h2o_multithread_message_t *m = h2o_mem_alloc(sizeof(*m));
            memset(m, 0, sizeof(*m));
            h2o_multithread_send_message(&s->rx, m);
        }
    }
    pthread_mutex_unlock(&G.mutex);
    set_release(old);
}

static void fetch_failed(jwks_source_t *src, const char *why)
{
    char who[300];
    log_target(src, who, sizeof(who));
    if (src->failures++ == 0) {
        /* once per failure streak: an identity provider that is down must not flood the log */
        if (src->current != NULL)
            est_log_warn("jwks %s: fetch failed (%s); the last good key set (%zu keys) keeps serving, retrying", who, why,
                         src->current->jwks->count);
        else
            est_log_warn("jwks %s: fetch failed (%s); no key set yet, retrying", who, why);
    }
    free(src->body);
    src->body = NULL;
    src->body_len = src->body_cap = 0;
    fetch_end(src, NULL, 0);
}

static void fetch_succeeded(jwks_source_t *src)
{
    char err[128] = "", who[300];
    unsigned char hash[32];
    unsigned hash_len = 0;
    jwks_set_t *set = NULL;

    EVP_Digest(src->body, src->body_len, hash, &hash_len, EVP_sha256(), NULL);
    if (!(src->has_hash && hash_len == 32 && memcmp(hash, src->hash, 32) == 0)) {
        /* a new document: parsed here, on the fetcher's thread, never on a worker's loop */
        est_jwks_t *jwks = est_jwks_parse(src->body, src->body_len, err, sizeof(err));
        if (jwks == NULL) {
            fetch_failed(src, err[0] ? err : "not a JWKS");
            return;
        }
        if (jwks->count == 0) {
            est_jwks_free(jwks);
            fetch_failed(src, "no usable key");
            return;
        }
        set = h2o_mem_alloc(sizeof(*set));
        atomic_init(&set->refs, 1);
        set->jwks = jwks;
        memcpy(src->hash, hash, 32);
        src->has_hash = 1;
        pthread_mutex_lock(&G.mutex);
        set->version = ++G.next_version;
        pthread_mutex_unlock(&G.mutex);
    }
    log_target(src, who, sizeof(who));
    if (src->failures != 0)
        est_log_info("jwks %s: fetched again after %u failed attempts", who, src->failures);
    if (set != NULL)
        est_log_info("jwks %s: %zu keys (%zu skipped)", who, set->jwks->count, set->jwks->skipped);
    src->failures = 0;
    free(src->body);
    src->body = NULL;
    src->body_len = src->body_cap = 0;
    fetch_end(src, set, 1);
}

static int on_head(est_exchange_t *x, void *data, int status, const struct phr_header *headers, size_t num_headers)
{
    jwks_source_t *src = data;
    char why[64];
    src->status = status;
    if (status != 200) {
        /* RFC 7517 §5: the set is the 200 reply's body; anything else is a failed fetch */
        src->x = NULL;
        snprintf(why, sizeof(why), "status %d", status);
        fetch_failed(src, why);
        return -1;
    }
    for (size_t i = 0; i != num_headers; ++i) {
        if (headers[i].name_len == 14 && strncasecmp(headers[i].name, "content-length", 14) == 0) {
            size_t len = 0, j = 0;
            for (;
                 j != headers[i].value_len && headers[i].value[j] >= '0' && headers[i].value[j] <= '9' && len <= EST_JWKS_MAX_BYTES;
                 ++j)
                len = len * 10 + (size_t)(headers[i].value[j] - '0');
            if (len > EST_JWKS_MAX_BYTES) {
                /* refused at once: no need to read a body that cannot be used */
                src->x = NULL;
                fetch_failed(src, "reply over 1 MiB");
                return -1;
            }
        }
    }
    return 0;
}

static int on_body(est_exchange_t *x, void *data, const char *bytes, size_t len, int is_final)
{
    jwks_source_t *src = data;
    if (len > EST_JWKS_MAX_BYTES - src->body_len) {
        /* bounded: at most EST_JWKS_MAX_BYTES are ever buffered */
        src->x = NULL;
        fetch_failed(src, "reply over 1 MiB");
        return -1;
    }
    if (len != 0) {
        if (src->body_len + len > src->body_cap) {
            size_t cap = src->body_cap ? src->body_cap : 16384;
            while (cap < src->body_len + len)
                cap *= 2;
            if (cap > EST_JWKS_MAX_BYTES)
                cap = EST_JWKS_MAX_BYTES;
            src->body = h2o_mem_realloc(src->body, cap);
            src->body_cap = cap;
        }
        memcpy(src->body + src->body_len, bytes, len);
        src->body_len += len;
    }
    if (is_final) {
        src->x = NULL;
        fetch_succeeded(src);
    }
    return 0;
}

static void on_error(est_exchange_t *x, void *data, est_uerr_t err, const char *message)
{
    jwks_source_t *src = data;
    src->x = NULL;
    fetch_failed(src, est_uerr_name(err));
}

static const est_exchange_cb_t exchange_cb = {on_head, on_body, on_error};

/* Starts a fetch of `src` (its `running` is set). Fetcher loop callback. */
static void fetch_start(jwks_source_t *src)
{
    if (src->uset == NULL) {
        if ((src->uset = est_upstream_set_create(G.loop, G.dns, &src->uconf)) == NULL) {
            fetch_failed(src, "cannot set up the upstream");
            return;
        }
    }
    memset(&src->req, 0, sizeof(src->req));
    src->accept.name = &H2O_TOKEN_ACCEPT->buf;
    src->accept.value = h2o_iovec_init(H2O_STRLIT("application/jwk-set+json, application/json"));
    src->req.method = h2o_iovec_init(H2O_STRLIT("GET"));
    src->req.path = h2o_iovec_init(src->key.jwks_path, strlen(src->key.jwks_path));
    src->req.headers = &src->accept;
    src->req.num_headers = 1;
    src->req.is_idempotent = 1;
    src->req.deadline = h2o_now(G.loop) + fetch_bound_ms(src);
    src->req.deadline_covers_body = 1;
    src->status = 0;
    src->body_len = 0;
    if ((src->x = est_exchange_start(est_upstream_set_get(src->uset, 0), &src->req, &exchange_cb, src)) == NULL)
        fetch_failed(src, "cannot start the request");
}

/* Drops the sources nobody subscribes to any more, starts the fetches that are due. Runs in
 * a loop callback of the fetcher: I/O started between h2o_evloop_run calls would wait for the
 * next wake-up (shared/LIBH2O-2.2.5.md §5). */
static void run_sources(void)
{
    h2o_linklist_t dropped, start;
    h2o_linklist_init_anchor(&dropped);
    h2o_linklist_init_anchor(&start);
    uint64_t now = mono_ms();

    pthread_mutex_lock(&G.mutex);
    for (h2o_linklist_t *n = G.sources.next, *next; n != &G.sources; n = next) {
        next = n->next;
        jwks_source_t *src = H2O_STRUCT_FROM_MEMBER(jwks_source_t, link, n);
        if (src->num_subs == 0) {
            /* unlinked under the lock: no subscriber can adopt it any more */
            h2o_linklist_unlink(&src->link);
            h2o_linklist_insert(&dropped, &src->link);
        } else if (!src->running && (src->wanted || now >= src->next_at)) {
            src->wanted = 0;
            src->running = 1;
            src->busy = 1;
            src->fetched = 1;
            src->last_start = now;
            ++src->seq_started;
            /* stays in G.sources (a subscriber may look it up); only this thread frees a source */
            h2o_linklist_insert(&start, &src->start_link);
        }
    }
    pthread_mutex_unlock(&G.mutex);

    /* started outside the lock: a fetch that fails at once ends (fetch_end) under it */
    while (!h2o_linklist_is_empty(&start)) {
        jwks_source_t *src = H2O_STRUCT_FROM_MEMBER(jwks_source_t, start_link, start.next);
        h2o_linklist_unlink(&src->start_link);
        fetch_start(src);
    }
    while (!h2o_linklist_is_empty(&dropped)) {
        jwks_source_t *src = H2O_STRUCT_FROM_MEMBER(jwks_source_t, link, dropped.next);
        h2o_linklist_unlink(&src->link);
        if (src->x != NULL)
            est_exchange_cancel(src->x);
        est_upstream_set_destroy(src->uset);
        source_free(src);
    }
}

/* ms until the next scheduled fetch (bounded: the loop also wakes up for pokes) */
static int32_t next_wait_ms(void)
{
    uint64_t now = mono_ms(), wait = 1000;
    pthread_mutex_lock(&G.mutex);
    for (h2o_linklist_t *n = G.sources.next; n != &G.sources; n = n->next) {
        jwks_source_t *src = H2O_STRUCT_FROM_MEMBER(jwks_source_t, link, n);
        if (src->num_subs == 0 || (!src->running && src->wanted)) {
            wait = 0;
        } else if (!src->running) {
            uint64_t w = src->next_at > now ? src->next_at - now : 0;
            if (w < wait)
                wait = w;
        }
    }
    pthread_mutex_unlock(&G.mutex);
    return (int32_t)wait;
}

static void on_run_timer(h2o_timeout_entry_t *entry)
{
    run_sources();
}

static void on_poke(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *m = H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&m->link);
        free(m);
    }
    atomic_store(&G.poke_pending, 0);
    run_sources();
}

static void send_poke_locked(void)
{
    h2o_multithread_message_t *m = h2o_mem_alloc(sizeof(*m));
    memset(m, 0, sizeof(*m));
    h2o_multithread_send_message(&G.rx, m);
}

static void poke_fetcher(void)
{
    /* one message in flight at most: run_sources looks at every source anyway. Sent under
     * G.mutex, as the fetcher frees undelivered messages under it when it stops. */
    if (atomic_exchange(&G.poke_pending, 1) == 0) {
        pthread_mutex_lock(&G.mutex);
        if (G.started && G.ready && !G.start_failed && !atomic_load(&G.stop))
            send_poke_locked();
        pthread_mutex_unlock(&G.mutex);
    }
}

/*
 * libh2o 2.2.5 keeps freed socket buffers and memory-pool chunks (TLS output) in thread-local
 * recycle lists that it never releases. The workers park instead of ending (server/server.c);
 * this thread ends, so it empties them: socket buffers through their public allocator, pool
 * chunks (at most 16 cached, memory.c's mempool_allocator) by taking each into a pool and
 * freeing it directly instead of giving it back.
 */
static void release_thread_caches(void)
{
    h2o_mem_recycle_t *r = &h2o_socket_buffer_prototype.allocator;
    while (r->cnt != 0)
        free(h2o_mem_alloc_recycle(r, 1));
    for (int i = 0; i != 16; ++i) {
        h2o_mem_pool_t pool;
        h2o_mem_init_pool(&pool);
        h2o_mem_alloc_pool(&pool, 1);
        free(pool.chunks); /* the pool's only chunk: not back to the recycle list */
    }
}

static void *fetcher_main(void *arg)
{
    static const est_dns_conf_t default_dns = {.min_ttl_ms = 1000,
                                               .max_ttl_ms = 300000,
                                               .negative_ttl_ms = 5000,
                                               .stale_ttl_ms = 60000,
                                               .timeout_ms = 1000,
                                               .attempts = 2};
    G.loop = h2o_evloop_create();
    G.queue = h2o_multithread_create_queue(G.loop);
    h2o_multithread_register_receiver(G.queue, &G.rx, on_poke);
    h2o_timeout_init(G.loop, &G.zero_timeout, 0);
    G.run_entry = (h2o_timeout_entry_t){.cb = on_run_timer};
    G.rnd = (unsigned)mono_ms() ^ (unsigned)(uintptr_t)&G;
    pthread_mutex_lock(&G.mutex);
    G.dns = est_dns_create(G.loop, G.has_dns_conf ? &G.dns_conf : &default_dns);
    G.start_failed = G.dns == NULL;
    G.ready = 1;
    pthread_cond_broadcast(&G.ready_cond);
    pthread_mutex_unlock(&G.mutex);

    while (G.dns != NULL && !atomic_load(&G.stop)) {
        int32_t wait = next_wait_ms();
        if (wait == 0 && !h2o_timeout_is_linked(&G.run_entry))
            h2o_timeout_link(G.loop, &G.zero_timeout, &G.run_entry);
        h2o_evloop_run(G.loop, wait == 0 ? 1 : wait);
    }

    /* stop: every exchange ends (no callback), every upstream set goes; sources nobody holds
     * any more are freed (normally all: the workers stopped first) */
    if (h2o_timeout_is_linked(&G.run_entry))
        h2o_timeout_unlink(&G.run_entry);
    pthread_mutex_lock(&G.mutex);
    for (h2o_linklist_t *n = G.sources.next, *next; n != &G.sources; n = next) {
        next = n->next;
        jwks_source_t *src = H2O_STRUCT_FROM_MEMBER(jwks_source_t, link, n);
        if (src->x != NULL) {
            est_exchange_cancel(src->x);
            src->x = NULL;
        }
        est_upstream_set_destroy(src->uset);
        src->uset = NULL;
        if (src->num_subs == 0) {
            h2o_linklist_unlink(&src->link);
            source_free(src);
        }
    }
    pthread_mutex_unlock(&G.mutex);
    h2o_evloop_run(G.loop, 0); /* closed connections are freed here */
    if (G.dns != NULL)
        est_dns_destroy(G.dns);
    G.dns = NULL;
    h2o_evloop_run(G.loop, 0);
    h2o_timeout_dispose(G.loop, &G.zero_timeout);
    /* G.stop is set: no message is sent any more (pokes check it under the lock) */
    pthread_mutex_lock(&G.mutex);
    while (!h2o_linklist_is_empty(&G.rx._messages)) {
        h2o_linklist_t *n = G.rx._messages.next;
        h2o_linklist_unlink(n);
        free(H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, n));
    }
    pthread_mutex_unlock(&G.mutex);
    h2o_multithread_unregister_receiver(G.queue, &G.rx);
    h2o_multithread_destroy_queue(G.queue);
    h2o_evloop_run(G.loop, 0);
    free(G.queue); /* libh2o 2.2.5 closes the queue's socket but never frees it (common/h2o_compat.h) */
    G.queue = NULL;
    h2o_evloop_destroy(G.loop);
    G.loop = NULL;
    release_thread_caches();
    return NULL;
}

/* Starts the fetcher thread once; G.mutex held. Returns 0 or -1. */
static int start_fetcher_locked(void)
{
    if (G.started) {
        /* another worker started it: its queue exists once it is ready */
        while (!G.ready)
            pthread_cond_wait(&G.ready_cond, &G.mutex);
        return G.start_failed ? -1 : 0;
    }
    if (G.sources.next == NULL)
        h2o_linklist_init_anchor(&G.sources);
    atomic_store(&G.stop, 0);
    atomic_store(&G.poke_pending, 0);
    G.ready = 0;
    G.start_failed = 0;
    if (pthread_create(&G.tid, NULL, fetcher_main, NULL) != 0) {
        est_log_error("jwks: cannot start the fetcher thread");
        return -1;
    }
    G.started = 1;
    while (!G.ready)
        pthread_cond_wait(&G.ready_cond, &G.mutex);
    if (G.start_failed) {
        est_log_error("jwks: cannot create the fetcher's resolver");
        return -1;
    }
    return 0;
}

void est_jwks_set_dns(const est_dns_conf_t *conf)
{
    pthread_mutex_lock(&G.mutex);
    for (size_t i = 0; i != G.dns_conf.num_servers; ++i)
        free(G.dns_conf.servers[i]);
    free(G.dns_conf.servers);
    G.dns_conf = *conf;
    G.dns_conf.servers = NULL;
    if (conf->num_servers != 0) {
        G.dns_conf.servers = h2o_mem_alloc(sizeof(char *) * conf->num_servers);
        for (size_t i = 0; i != conf->num_servers; ++i)
            G.dns_conf.servers[i] = dup_or_null(conf->servers[i]);
    }
    G.has_dns_conf = 1;
    pthread_mutex_unlock(&G.mutex);
}

/* ------------------------------------------------------------------ workers */

static void call_back_done(est_jwks_sub_t *s, uint64_t done);

static void on_fetch_ended(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    est_jwks_sub_t *s = H2O_STRUCT_FROM_MEMBER(est_jwks_sub_t, rx, receiver);
    while (!h2o_linklist_is_empty(messages)) {
        h2o_multithread_message_t *m = H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
        h2o_linklist_unlink(&m->link);
        free(m);
    }
    pthread_mutex_lock(&G.mutex);
    uint64_t done = s->src->seq_done;
    pthread_mutex_unlock(&G.mutex);
    call_back_done(s, done);
}

static void wait_free(est_jwks_wait_t *w)
{
    if (h2o_linklist_is_linked(&w->link))
        h2o_linklist_unlink(&w->link);
    if (h2o_timeout_is_linked(&w->timer))
        h2o_timeout_unlink(&w->timer);
    --w->sub->num_waiters;
    free(w);
}

/* Calls back, one at a time, the waiters moved to `ready`. A callback may cancel another
 * waiter of the list (it is unlinked and freed) or ask for a refetch (a new waiter goes to
 * s->waiters, not here). */
static void call_back_list(h2o_linklist_t *ready)
{
    while (!h2o_linklist_is_empty(ready)) {
        est_jwks_wait_t *w = H2O_STRUCT_FROM_MEMBER(est_jwks_wait_t, link, ready->next);
        void (*cb)(void *) = w->cb;
        void *data = w->data;
        wait_free(w);
        cb(data);
    }
}

static void call_back_done(est_jwks_sub_t *s, uint64_t done)
{
    for (h2o_linklist_t *n = s->waiters.next, *next; n != &s->waiters; n = next) {
        next = n->next;
        est_jwks_wait_t *w = H2O_STRUCT_FROM_MEMBER(est_jwks_wait_t, link, n);
        if (w->seq <= done) {
            h2o_linklist_unlink(&w->link);
            h2o_linklist_insert(&s->ready, &w->link);
        }
    }
    call_back_list(&s->ready);
}

static void on_wait_timeout(h2o_timeout_entry_t *entry)
{
    est_jwks_wait_t *w = H2O_STRUCT_FROM_MEMBER(est_jwks_wait_t, timer, entry);
    void (*cb)(void *) = w->cb;
    void *data = w->data;
    wait_free(w);
    cb(data);
}

est_jwks_sub_t *est_jwks_subscribe(h2o_loop_t *loop, h2o_multithread_queue_t *queue, const est_jwt_conf_t *jc)
{
    if (jc->jwks_url == NULL || jc->jwks_upstream == NULL || jc->jwks_path == NULL)
        return NULL;
    est_jwks_sub_t *s = h2o_mem_alloc(sizeof(*s));
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->refresh_ms = jc->jwks_refresh_ms;
    h2o_linklist_init_anchor(&s->waiters);
    h2o_linklist_init_anchor(&s->ready);

    pthread_mutex_lock(&G.mutex);
    if (start_fetcher_locked() != 0) {
        pthread_mutex_unlock(&G.mutex);
        free(s);
        return NULL;
    }
    jwks_source_t *src = NULL;
    for (h2o_linklist_t *n = G.sources.next; n != &G.sources; n = n->next) {
        jwks_source_t *c = H2O_STRUCT_FROM_MEMBER(jwks_source_t, link, n);
        if (est_jwks_same_source(&c->key, jc)) {
            src = c;
            break;
        }
    }
    if (src == NULL) {
        src = h2o_mem_alloc(sizeof(*src));
        memset(src, 0, sizeof(*src));
        src->key.jwks_url = dup_or_null(jc->jwks_url);
        src->key.jwks_path = dup_or_null(jc->jwks_path);
        src->key.jwks_upstream = upstream_conf_dup(jc->jwks_upstream);
        src->uconf.upstreams = src->key.jwks_upstream;
        src->uconf.num_upstreams = 1;
        h2o_linklist_init_anchor(&src->subs);
        atomic_init(&src->version, 0);
        src->refresh_ms = jc->jwks_refresh_ms;
        /* the first subscriber starts the first fetch; requests arriving meanwhile join it */
        src->wanted = 1;
        src->busy = 1;
        h2o_linklist_insert(&G.sources, &src->link);
    }
    s->src = src;
    h2o_linklist_insert(&src->subs, &s->link);
    if (src->num_subs++ == 0 || s->refresh_ms < src->refresh_ms)
        src->refresh_ms = s->refresh_ms;
    pthread_mutex_unlock(&G.mutex);

    h2o_multithread_register_receiver(queue, &s->rx, on_fetch_ended);
    h2o_timeout_init(loop, &s->wait_timeout, fetch_bound_ms(src) + 1000);
    h2o_timeout_init(loop, &s->now_timeout, 0);
    poke_fetcher();
    return s;
}

void est_jwks_sub_destroy(est_jwks_sub_t *s)
{
    if (s == NULL)
        return;
    jwks_source_t *src = s->src;
    pthread_mutex_lock(&G.mutex);
    h2o_linklist_unlink(&s->link);
    if (--src->num_subs != 0) {
        uint64_t r = UINT64_MAX;
        for (h2o_linklist_t *n = src->subs.next; n != &src->subs; n = n->next) {
            est_jwks_sub_t *o = H2O_STRUCT_FROM_MEMBER(est_jwks_sub_t, link, n);
            if (o->refresh_ms < r)
                r = o->refresh_ms;
        }
        src->refresh_ms = r;
    }
    pthread_mutex_unlock(&G.mutex);
    /* no message can arrive any more (they are sent under the lock, to linked subscribers
     * only): free the ones not yet delivered, then leave the queue */
    while (!h2o_linklist_is_empty(&s->rx._messages)) {
        h2o_linklist_t *n = s->rx._messages.next;
        h2o_linklist_unlink(n);
        free(H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, n));
    }
    h2o_multithread_unregister_receiver(s->rx.queue, &s->rx);
    /* waiters left are dropped without a call (their requests are gone before the view) */
    while (!h2o_linklist_is_empty(&s->waiters))
        wait_free(H2O_STRUCT_FROM_MEMBER(est_jwks_wait_t, link, s->waiters.next));
    h2o_timeout_dispose(s->loop, &s->wait_timeout);
    h2o_timeout_dispose(s->loop, &s->now_timeout);
    set_release(s->held);
    free(s);
    poke_fetcher(); /* the source may have no subscriber left: the fetcher drops it */
}

const est_jwks_t *est_jwks_sub_current(est_jwks_sub_t *s, uint64_t *version)
{
    uint64_t v = atomic_load_explicit(&s->src->version, memory_order_acquire);
    if (v != s->version) {
        /* the set changed (rare): the lock makes reading the pointer and taking a reference
         * one step, so the fetcher cannot release the set in between */
        pthread_mutex_lock(&G.mutex);
        jwks_set_t *n = s->src->current;
        if (n != NULL)
            atomic_fetch_add_explicit(&n->refs, 1, memory_order_relaxed);
        pthread_mutex_unlock(&G.mutex);
        set_release(s->held);
        s->held = n;
        s->version = n != NULL ? n->version : 0;
    }
    if (version != NULL)
        *version = s->version;
    return s->held != NULL ? s->held->jwks : NULL;
}

est_jwks_wait_t *est_jwks_sub_refetch(est_jwks_sub_t *s, void (*cb)(void *data), void *data)
{
    jwks_source_t *src = s->src;
    int full = s->num_waiters >= EST_JWKS_MAX_WAITERS, poke = 0, now = 0;
    uint64_t seq = 0;

    pthread_mutex_lock(&G.mutex);
    if (atomic_load_explicit(&src->version, memory_order_relaxed) != s->version) {
        /* a set newer than the one the caller checked was published meanwhile (a fetch ended
         * between its est_jwks_sub_current and this call): no fetch, it looks again at once */
        now = 1;
    } else {
        switch (est_jwks_refetch_decide(mono_ms(), src->busy, src->fetched, src->last_start, src->ended, src->last_end)) {
        case EST_JWKS_REFETCH_START:
            src->wanted = 1;
            src->busy = 1;
            poke = 1;
            /* fall through */
        case EST_JWKS_REFETCH_JOIN:
            /* the fetch this request waits for: the running one, or the next to start */
            seq = src->running && !src->wanted ? src->seq_started : src->seq_started + 1;
            if (!full)
                s->want_notify = 1;
            break;
        case EST_JWKS_REFETCH_REFUSE:
            full = 1;
            break;
        }
    }
    pthread_mutex_unlock(&G.mutex);
    if (poke)
        poke_fetcher();
    if (full)
        return NULL;

    est_jwks_wait_t *w = h2o_mem_alloc(sizeof(*w));
    memset(w, 0, sizeof(*w));
    w->sub = s;
    w->seq = seq;
    w->cb = cb;
    w->data = data;
    w->timer.cb = on_wait_timeout;
    h2o_linklist_insert(&s->waiters, &w->link);
    h2o_timeout_link(s->loop, now ? &s->now_timeout : &s->wait_timeout, &w->timer);
    ++s->num_waiters;
    return w;
}

void est_jwks_wait_cancel(est_jwks_wait_t *w)
{
    if (w != NULL)
        wait_free(w);
}

void est_jwks_shutdown(void)
{
    pthread_mutex_lock(&G.mutex);
    int started = G.started;
    while (started && !G.ready)
        pthread_cond_wait(&G.ready_cond, &G.mutex);
    if (started && !G.start_failed)
        send_poke_locked(); /* wakes the loop, which then sees G.stop */
    atomic_store(&G.stop, 1);
    pthread_mutex_unlock(&G.mutex);
    if (started)
        pthread_join(G.tid, NULL);
    pthread_mutex_lock(&G.mutex);
    G.started = 0;
    for (size_t i = 0; i != G.dns_conf.num_servers; ++i)
        free(G.dns_conf.servers[i]);
    free(G.dns_conf.servers);
    memset(&G.dns_conf, 0, sizeof(G.dns_conf));
    G.has_dns_conf = 0;
    pthread_mutex_unlock(&G.mutex);
}
