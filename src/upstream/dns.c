/*
 * estuary - per-worker DNS resolver (see dns.h): hosts file, cache, c-ares on the h2o evloop.
 *
 * c-ares is driven by our loop (shared/LIBH2O-2.2.5.md §3): its sockets are watched through
 * h2o sockets wrapping dup()ed descriptors (h2o_socket_close closes its descriptor, c-ares
 * closes its own), and a 100 ms tick, linked only while queries run, calls
 * ares_process_fd(BAD, BAD) for c-ares' retransmissions and timeouts. Nothing here blocks.
 *
 * A c-ares query cannot be cancelled, so its state lives in the cache entry (the query's
 * argument), never in a request: a lookup is an est_dns_query_t waiting on the entry, and
 * cancelling it only unlinks it. Every user callback runs from one 0 ms timer (`defer`), never
 * from inside est_dns_resolve nor from inside c-ares; c-ares callbacks only update the cache
 * and move waiters to the deferred list.
 *
 * c-ares 1.18 doubles the per-try timeout on each round (timeout, 2*timeout, ...), so on its
 * own a silent server fails after more than timeout*attempts. We give each lookup a deadline
 * of timeout*attempts from its start: past it, the waiters get EST_DNS_TIMEOUT (or a stale
 * answer) and the failure is cached; the c-ares query goes on, and its late answer still
 * updates the cache.
 */
#include <ares.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common/log.h"
#include "upstream/dns.h"
#include "upstream/dns_cache.h"

#define TICK_MS 100

typedef struct st_dns_watcher_t {
    h2o_linklist_t link; /* in est_dns_t.watchers */
    est_dns_t *dns;
    ares_socket_t fd; /* c-ares' descriptor; the h2o socket holds a dup */
    h2o_socket_t *sock;
    int reading, want_write, write_armed;
} dns_watcher_t;

struct est_dns {
    h2o_loop_t *loop;
    est_dns_conf_t conf; /* scalars only (servers are used at creation) */
    ares_channel channel;
    int has_channel, has_timeouts, destroying;
    est_dns_cache_t cache; /* names from DNS, and IP literals */
    est_dns_cache_t hosts; /* the hosts file, permanent */
    uint64_t next_generation;
    h2o_linklist_t watchers;
    h2o_linklist_t inflight; /* est_dns_entry_t with a running c-ares query */
    h2o_linklist_t deferred; /* est_dns_query_t whose callback is due */
    h2o_timeout_t tick_timeout;
    h2o_timeout_entry_t tick;
    h2o_timeout_t defer_timeout;
    h2o_timeout_entry_t defer;
    est_dns_stats_t stats;
};

struct est_dns_query {
    h2o_linklist_t link; /* in entry->waiters, then in dns->deferred */
    est_dns_entry_t *entry; /* while waiting */
    uint64_t deadline;
    est_dns_cb cb;
    void *data;
    est_dns_status_t status;  /* once deferred */
    est_dns_result_t *result; /* once deferred: one reference, or NULL */
};

static void on_tick(h2o_timeout_entry_t *entry);
static void on_defer(h2o_timeout_entry_t *entry);
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable);
static void on_readable(h2o_socket_t *sock, const char *err);
static void on_writable(h2o_socket_t *sock, const char *err);
static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *ai);
static void start_query(est_dns_t *dns, est_dns_entry_t *e, uint64_t now);
static void after_op(est_dns_t *dns);

int est_dns_global_init(void)
{
    int ret = ares_library_init(ARES_LIB_INIT_ALL);
    if (ret != ARES_SUCCESS) {
        est_log_error("dns: ares_library_init failed: %s", ares_strerror(ret));
        return -1;
    }
    return 0;
}

void est_dns_global_dispose(void)
{
    ares_library_cleanup();
}

const char *est_dns_strerror(est_dns_status_t st)
{
    switch (st) {
    case EST_DNS_OK:
        return "ok";
    case EST_DNS_NOT_FOUND:
        return "name not found";
    case EST_DNS_TIMEOUT:
        return "DNS timeout";
    case EST_DNS_FAILURE:
        return "DNS failure";
    }
    return "unknown DNS status";
}

const est_dns_stats_t *est_dns_get_stats(const est_dns_t *dns)
{
    return &dns->stats;
}

size_t est_dns_list(const est_dns_t *dns, void (*cb)(void *data, const est_dns_entry_info_t *info), void *data, size_t max)
{
    uint64_t now = h2o_now(dns->loop);
    size_t n = 0;
    if (dns->cache.buckets == NULL)
        return 0;
    for (h2o_linklist_t *l = dns->cache.lru.prev; l != &dns->cache.lru && n != max; l = l->prev) {
        const est_dns_entry_t *e = H2O_STRUCT_FROM_MEMBER(est_dns_entry_t, lru, l);
        if (e->permanent)
            continue;
        est_dns_entry_state_t st = est_dns_entry_state(e, now);
        est_dns_entry_info_t info = {.name = e->name,
                                     .result = e->result,
                                     .ttl_left_ms = e->result != NULL && e->expires_at > now ? e->expires_at - now : 0,
                                     .stale = st == EST_DNS_ENTRY_STALE,
                                     .failure = st == EST_DNS_ENTRY_NEGATIVE ? e->neg_status : EST_DNS_OK};
        cb(data, &info);
        ++n;
    }
    return n;
}

static est_dns_status_t status_from_ares(int status)
{
    switch (status) {
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
    case ARES_ENONAME:
    case ARES_EBADNAME:
        return EST_DNS_NOT_FOUND;
    case ARES_ETIMEOUT:
        return EST_DNS_TIMEOUT;
    default:
        return EST_DNS_FAILURE;
    }
}

/* -- creation, destruction -- */

/* "a,b,c" from the configured servers, or NULL (ENOMEM) */
static char *servers_csv(const est_dns_conf_t *conf)
{
    size_t len = 1;
    for (size_t i = 0; i != conf->num_servers; ++i)
        len += strlen(conf->servers[i]) + 1;
    char *csv = malloc(len), *p = csv;
    if (csv == NULL)
        return NULL;
    for (size_t i = 0; i != conf->num_servers; ++i) {
        if (i != 0)
            *p++ = ',';
        size_t l = strlen(conf->servers[i]);
        memcpy(p, conf->servers[i], l);
        p += l;
    }
    *p = '\0';
    return csv;
}

est_dns_t *est_dns_create(h2o_loop_t *loop, const est_dns_conf_t *conf)
{
    est_dns_t *dns = calloc(1, sizeof(*dns));
    if (dns == NULL)
        return NULL;
    dns->loop = loop;
    dns->conf = *conf;
    dns->conf.servers = NULL;
    dns->conf.num_servers = 0;
    if (dns->conf.attempts == 0)
        dns->conf.attempts = 1;
    if (dns->conf.timeout_ms == 0)
        dns->conf.timeout_ms = 1;
    if (dns->conf.max_ttl_ms < dns->conf.min_ttl_ms)
        dns->conf.max_ttl_ms = dns->conf.min_ttl_ms;
    dns->next_generation = 1;
    h2o_linklist_init_anchor(&dns->watchers);
    h2o_linklist_init_anchor(&dns->inflight);
    h2o_linklist_init_anchor(&dns->deferred);
    h2o_timeout_init(loop, &dns->tick_timeout, TICK_MS);
    dns->tick.cb = on_tick;
    h2o_timeout_init(loop, &dns->defer_timeout, 0);
    dns->defer.cb = on_defer;
    dns->has_timeouts = 1;
    if (est_dns_cache_init(&dns->cache, EST_DNS_CACHE_MAX * 2, EST_DNS_CACHE_MAX) != 0 ||
        est_dns_cache_init(&dns->hosts, 64, SIZE_MAX) != 0)
        goto Error;

    /* Creation happens at start, off the request path: reading the file here is fine. The
     * environment variable lets tests supply their own file. */
    const char *hosts = getenv("ESTUARY_HOSTS_FILE");
    if (hosts == NULL || hosts[0] == '\0')
        hosts = "/etc/hosts";
    if (est_dns_hosts_load(&dns->hosts, hosts, &dns->next_generation) != 0)
        goto Error;

    struct ares_options opts = {0};
    opts.sock_state_cb = on_sock_state;
    opts.sock_state_cb_data = dns;
    opts.timeout = dns->conf.timeout_ms > INT32_MAX ? INT32_MAX : (int)dns->conf.timeout_ms;
    opts.tries = dns->conf.attempts > 100 ? 100 : (int)dns->conf.attempts;
    opts.lookups = (char *)"b"; /* DNS only: the hosts file is handled above */
    int ret = ares_init_options(&dns->channel, &opts,
                                ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_LOOKUPS);
    if (ret != ARES_SUCCESS) {
        est_log_error("dns: cannot create a c-ares channel: %s", ares_strerror(ret));
        goto Error;
    }
    dns->has_channel = 1;
    if (conf->num_servers != 0) {
        char *csv = servers_csv(conf);
        if (csv == NULL)
            goto Error;
        ret = ares_set_servers_ports_csv(dns->channel, csv);
        if (ret != ARES_SUCCESS) {
            est_log_error("dns: invalid servers \"%s\": %s", csv, ares_strerror(ret));
            free(csv);
            goto Error;
        }
        free(csv);
    }
    return dns;

Error:
    est_dns_destroy(dns);
    return NULL;
}

static void close_watcher(dns_watcher_t *w)
{
    if (w->reading)
        h2o_socket_read_stop(w->sock);
    h2o_socket_close(w->sock); /* closes the dup, not c-ares' descriptor */
    h2o_linklist_unlink(&w->link);
    free(w);
}

void est_dns_destroy(est_dns_t *dns)
{
    if (dns == NULL)
        return;
    dns->destroying = 1;
    /* calls on_addrinfo with ARES_EDESTRUCTION for every running query, and closes sockets */
    if (dns->has_channel)
        ares_destroy(dns->channel);
    while (!h2o_linklist_is_empty(&dns->watchers))
        close_watcher(H2O_STRUCT_FROM_MEMBER(dns_watcher_t, link, dns->watchers.next));
    while (!h2o_linklist_is_empty(&dns->inflight)) {
        est_dns_entry_t *e = H2O_STRUCT_FROM_MEMBER(est_dns_entry_t, inflight, dns->inflight.next);
        h2o_linklist_unlink(&e->inflight);
        e->querying = 0;
    }
    /* waiters and due callbacks are dropped without being called */
    if (dns->cache.buckets != NULL) {
        for (h2o_linklist_t *n = dns->cache.lru.next; n != &dns->cache.lru; n = n->next) {
            est_dns_entry_t *e = H2O_STRUCT_FROM_MEMBER(est_dns_entry_t, lru, n);
            while (!h2o_linklist_is_empty(&e->waiters))
                est_dns_cancel(H2O_STRUCT_FROM_MEMBER(est_dns_query_t, link, e->waiters.next));
        }
    }
    while (!h2o_linklist_is_empty(&dns->deferred))
        est_dns_cancel(H2O_STRUCT_FROM_MEMBER(est_dns_query_t, link, dns->deferred.next));
    if (dns->has_timeouts) {
        if (h2o_timeout_is_linked(&dns->tick))
            h2o_timeout_unlink(&dns->tick);
        if (h2o_timeout_is_linked(&dns->defer))
            h2o_timeout_unlink(&dns->defer);
        h2o_timeout_dispose(dns->loop, &dns->tick_timeout);
        h2o_timeout_dispose(dns->loop, &dns->defer_timeout);
    }
    if (dns->cache.buckets != NULL)
        est_dns_cache_dispose(&dns->cache);
    if (dns->hosts.buckets != NULL)
        est_dns_cache_dispose(&dns->hosts);
    free(dns);
}

/* -- c-ares sockets on the loop -- */

static dns_watcher_t *find_watcher(est_dns_t *dns, ares_socket_t fd)
{
    for (h2o_linklist_t *n = dns->watchers.next; n != &dns->watchers; n = n->next) {
        dns_watcher_t *w = H2O_STRUCT_FROM_MEMBER(dns_watcher_t, link, n);
        if (w->fd == fd)
            return w;
    }
    return NULL;
}

static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    est_dns_t *dns = data;
    dns_watcher_t *w = find_watcher(dns, fd);

    if (!readable && !writable) {
        if (w != NULL)
            close_watcher(w);
        return;
    }
    if (w == NULL) {
        if (dns->destroying)
            return;
        int dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (dupfd == -1) {
            /* the query then times out (tick) rather than hanging */
            est_log_error("dns: cannot watch c-ares socket %d: %s", (int)fd, strerror(errno));
            return;
        }
        if ((w = calloc(1, sizeof(*w))) == NULL) {
            close(dupfd);
            return;
        }
        w->dns = dns;
        w->fd = fd;
        w->sock = h2o_evloop_socket_create(dns->loop, dupfd, H2O_SOCKET_FLAG_DONT_READ);
        w->sock->data = w;
        h2o_linklist_insert(&dns->watchers, &w->link);
    }
    if (readable && !w->reading) {
        h2o_socket_read_start(w->sock, on_readable);
        w->reading = 1;
    } else if (!readable && w->reading) {
        h2o_socket_read_stop(w->sock);
        w->reading = 0;
    }
    w->want_write = writable;
    if (writable && !w->write_armed) {
        /* one-shot: re-armed in on_writable while c-ares still wants to write */
        h2o_socket_notify_write(w->sock, on_writable);
        w->write_armed = 1;
    }
}

static void on_readable(h2o_socket_t *sock, const char *err)
{
    dns_watcher_t *w = sock->data;
    est_dns_t *dns = w->dns;
    /* may close `w` (on_sock_state with 0, 0) */
    ares_process_fd(dns->channel, w->fd, ARES_SOCKET_BAD);
    after_op(dns);
}

static void on_writable(h2o_socket_t *sock, const char *err)
{
    dns_watcher_t *w = sock->data;
    est_dns_t *dns = w->dns;
    ares_socket_t fd = w->fd;

    w->write_armed = 0;
    ares_process_fd(dns->channel, ARES_SOCKET_BAD, fd);
    if ((w = find_watcher(dns, fd)) != NULL && w->want_write && !w->write_armed) {
        h2o_socket_notify_write(w->sock, on_writable);
        w->write_armed = 1;
    }
    after_op(dns);
}

/* -- timers -- */

/* Links or unlinks the tick and the deferred-callback timer to match the state. */
static void after_op(est_dns_t *dns)
{
    if (dns->destroying)
        return;
    if (!h2o_linklist_is_empty(&dns->inflight)) {
        if (!h2o_timeout_is_linked(&dns->tick))
            h2o_timeout_link(dns->loop, &dns->tick_timeout, &dns->tick);
    } else if (h2o_timeout_is_linked(&dns->tick)) {
        h2o_timeout_unlink(&dns->tick);
    }
    if ((!h2o_linklist_is_empty(&dns->deferred) || dns->cache.graveyard_len != 0) && !h2o_timeout_is_linked(&dns->defer))
        h2o_timeout_link(dns->loop, &dns->defer_timeout, &dns->defer);
}

/* Moves `q` to the deferred list with its outcome (`r` is borrowed). */
static void defer_query(est_dns_t *dns, est_dns_query_t *q, est_dns_status_t st, est_dns_result_t *r)
{
    if (h2o_linklist_is_linked(&q->link))
        h2o_linklist_unlink(&q->link);
    q->entry = NULL;
    q->status = st;
    if ((q->result = r) != NULL)
        est_dns_result_addref(r);
    h2o_linklist_insert(&dns->deferred, &q->link);
}

/* Answers a waiter from what its entry holds now. */
static void complete_waiter(est_dns_t *dns, est_dns_query_t *q, uint64_t now)
{
    est_dns_result_t *r;
    int is_stale;
    est_dns_status_t st = est_dns_entry_serve(q->entry, now, &r, &is_stale);
    if (st == EST_DNS_OK && is_stale)
        ++dns->stats.stale_served;
    defer_query(dns, q, st, r);
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    est_dns_t *dns = H2O_STRUCT_FROM_MEMBER(est_dns_t, tick, entry);

    ares_process_fd(dns->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);

    /* our deadlines (timeout * attempts), see the top of the file */
    uint64_t now = h2o_now(dns->loop);
    for (h2o_linklist_t *n = dns->inflight.next; n != &dns->inflight; n = n->next) {
        est_dns_entry_t *e = H2O_STRUCT_FROM_MEMBER(est_dns_entry_t, inflight, n);
        if (!e->timed_out && now >= e->query_deadline) {
            e->timed_out = 1;
            est_dns_entry_store_failure(&dns->cache, e, EST_DNS_TIMEOUT, now, &dns->conf);
        }
        h2o_linklist_t *wn = e->waiters.next;
        while (wn != &e->waiters) {
            est_dns_query_t *q = H2O_STRUCT_FROM_MEMBER(est_dns_query_t, link, wn);
            wn = wn->next;
            if (now >= q->deadline)
                complete_waiter(dns, q, now);
        }
    }
    after_op(dns);
}

static void on_defer(h2o_timeout_entry_t *entry)
{
    est_dns_t *dns = H2O_STRUCT_FROM_MEMBER(est_dns_t, defer, entry);

    est_dns_cache_flush_graveyard(&dns->cache);
    /* callbacks may resolve (appending here) or cancel (unlinking from here) */
    while (!h2o_linklist_is_empty(&dns->deferred)) {
        est_dns_query_t *q = H2O_STRUCT_FROM_MEMBER(est_dns_query_t, link, dns->deferred.next);
        h2o_linklist_unlink(&q->link);
        est_dns_cb cb = q->cb;
        void *data = q->data;
        est_dns_status_t st = q->status;
        est_dns_result_t *r = q->result;
        free(q);
        cb(data, st, r);
        est_dns_result_release(r);
    }
    after_op(dns);
}

/* -- queries -- */

static void start_query(est_dns_t *dns, est_dns_entry_t *e, uint64_t now)
{
    struct ares_addrinfo_hints hints = {.ai_flags = ARES_AI_NOSORT, .ai_family = AF_UNSPEC};

    e->dns = dns;
    e->querying = 1;
    e->timed_out = 0;
    e->query_deadline = now + dns->conf.timeout_ms * dns->conf.attempts;
    h2o_linklist_insert(&dns->inflight, &e->inflight);
    /* may call on_addrinfo before returning */
    ares_getaddrinfo(dns->channel, e->name, NULL, &hints, on_addrinfo, e);
}

/* Copies the addresses of `ai` (IPv4 first) and its TTL (minimum over the chain, seconds). */
static est_dns_result_t *result_from_addrinfo(const struct ares_addrinfo *ai, int64_t *ttl_s)
{
    size_t n = 0;
    int64_t ttl = INT64_MAX;

    for (const struct ares_addrinfo_node *node = ai->nodes; node != NULL; node = node->ai_next) {
        ++n;
        if (node->ai_ttl < ttl)
            ttl = node->ai_ttl;
    }
    for (const struct ares_addrinfo_cname *c = ai->cnames; c != NULL; c = c->next)
        if (c->ttl < ttl)
            ttl = c->ttl;
    est_dns_result_t *r = est_dns_result_new(n);
    if (r == NULL)
        return NULL;
    for (const struct ares_addrinfo_node *node = ai->nodes; node != NULL; node = node->ai_next)
        if (node->ai_addr != NULL)
            est_dns_result_add(r, node->ai_addr, node->ai_addrlen);
    est_dns_result_sort(r);
    *ttl_s = ttl == INT64_MAX ? 0 : ttl;
    return r;
}

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    est_dns_entry_t *e = arg;
    est_dns_t *dns = e->dns;

    e->querying = 0;
    h2o_linklist_unlink(&e->inflight);
    if (status == ARES_EDESTRUCTION || dns->destroying) {
        if (ai != NULL)
            ares_freeaddrinfo(ai);
        return; /* est_dns_destroy drops the waiters */
    }

    uint64_t now = h2o_now(dns->loop);
    est_dns_result_t *r = NULL;
    int64_t ttl_s = 0;
    if (status == ARES_SUCCESS && ai != NULL && (r = result_from_addrinfo(ai, &ttl_s)) != NULL && r->num_addrs == 0) {
        est_dns_result_release(r);
        r = NULL;
        status = ARES_ENODATA;
    }
    if (r != NULL) {
        ++dns->stats.queries_ok;
        est_dns_entry_store_answer(&dns->cache, e, r, est_dns_clamp_ttl(&dns->conf, ttl_s), now, &dns->conf,
                                   &dns->next_generation);
    } else {
        ++dns->stats.queries_failed;
        est_dns_status_t st = status == ARES_SUCCESS ? EST_DNS_FAILURE /* ENOMEM */ : status_from_ares(status);
        est_log_debug("dns: %s: %s", e->name, ares_strerror(status));
        est_dns_entry_store_failure(&dns->cache, e, st, now, &dns->conf);
    }
    if (ai != NULL)
        ares_freeaddrinfo(ai);
    while (!h2o_linklist_is_empty(&e->waiters))
        complete_waiter(dns, H2O_STRUCT_FROM_MEMBER(est_dns_query_t, link, e->waiters.next), now);
    /* the caller (a loop callback, or start_query's caller) calls after_op */
}

/* Starts a background refresh of `e` when one is due. */
static void maybe_refresh(est_dns_t *dns, est_dns_entry_t *e, uint64_t now)
{
    if (est_dns_entry_refresh_due(e, now))
        start_query(dns, e, now);
}

/* The permanent entry for an IP literal or a hosts-file name, or NULL. */
static est_dns_entry_t *find_permanent(est_dns_t *dns, const char *name)
{
    est_dns_entry_t *e;
    est_dns_addr_t addr;

    if ((e = est_dns_cache_find(&dns->hosts, name)) != NULL)
        return e;
    if (est_dns_parse_literal(name, &addr) != 0)
        return NULL;
    if ((e = est_dns_cache_find(&dns->cache, name)) != NULL)
        return e;
    est_dns_result_t *r = est_dns_result_new(1);
    if (r == NULL || (e = est_dns_cache_insert(&dns->cache, name)) == NULL) {
        est_dns_result_release(r);
        return NULL;
    }
    est_dns_result_add(r, (struct sockaddr *)&addr.sa, addr.len);
    r->generation = dns->next_generation++;
    e->permanent = 1;
    e->result = r;
    e->expires_at = UINT64_MAX;
    e->stale_until = UINT64_MAX;
    return e;
}

est_dns_result_t *est_dns_lookup_cached(est_dns_t *dns, const char *name)
{
    est_dns_entry_t *e;
    est_dns_result_t *r = NULL;

    if (!est_dns_name_is_valid(name))
        return NULL;
    if ((e = find_permanent(dns, name)) != NULL) {
        ++dns->stats.cache_hits;
        return e->result;
    }
    if ((e = est_dns_cache_find(&dns->cache, name)) == NULL)
        return NULL;
    uint64_t now = h2o_now(dns->loop);
    switch (est_dns_entry_state(e, now)) {
    case EST_DNS_ENTRY_FRESH:
        r = e->result;
        break;
    case EST_DNS_ENTRY_STALE:
        r = e->result;
        ++dns->stats.stale_served;
        break;
    default:
        return NULL;
    }
    ++dns->stats.cache_hits;
    est_dns_cache_touch(&dns->cache, e);
    maybe_refresh(dns, e, now); /* `r` stays valid: replaced results go to the graveyard */
    after_op(dns);
    return r;
}

est_dns_query_t *est_dns_resolve(est_dns_t *dns, const char *name, est_dns_cb cb, void *data)
{
    est_dns_query_t *q = calloc(1, sizeof(*q));
    est_dns_entry_t *e;

    if (q == NULL)
        return NULL;
    q->cb = cb;
    q->data = data;
    uint64_t now = h2o_now(dns->loop);

    if (!est_dns_name_is_valid(name)) {
        defer_query(dns, q, EST_DNS_NOT_FOUND, NULL);
        goto Done;
    }
    if ((e = find_permanent(dns, name)) != NULL) {
        ++dns->stats.cache_hits;
        defer_query(dns, q, EST_DNS_OK, e->result);
        goto Done;
    }
    if ((e = est_dns_cache_find(&dns->cache, name)) == NULL && (e = est_dns_cache_insert(&dns->cache, name)) == NULL) {
        free(q);
        after_op(dns);
        return NULL;
    }
    est_dns_cache_touch(&dns->cache, e);

    switch (est_dns_entry_state(e, now)) {
    case EST_DNS_ENTRY_FRESH:
        ++dns->stats.cache_hits;
        defer_query(dns, q, EST_DNS_OK, e->result);
        maybe_refresh(dns, e, now);
        break;
    case EST_DNS_ENTRY_STALE:
        ++dns->stats.cache_hits;
        ++dns->stats.stale_served;
        defer_query(dns, q, EST_DNS_OK, e->result);
        maybe_refresh(dns, e, now);
        break;
    case EST_DNS_ENTRY_NEGATIVE:
        ++dns->stats.cache_hits;
        defer_query(dns, q, e->neg_status, NULL);
        break;
    case EST_DNS_ENTRY_EXPIRED:
    case EST_DNS_ENTRY_MISS:
        /* wait for the running query, or start one; on failure an expired answer is served stale */
        ++dns->stats.cache_misses;
        q->entry = e;
        q->deadline = now + dns->conf.timeout_ms * dns->conf.attempts;
        h2o_linklist_insert(&e->waiters, &q->link);
        if (!e->querying)
            start_query(dns, e, now);
        break;
    }

Done:
    after_op(dns);
    return q;
}

void est_dns_cancel(est_dns_query_t *q)
{
    if (q == NULL)
        return;
    if (h2o_linklist_is_linked(&q->link))
        h2o_linklist_unlink(&q->link);
    est_dns_result_release(q->result);
    free(q);
}
