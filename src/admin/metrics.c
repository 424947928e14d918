/*
 * estuary - metrics: per-worker counters, snapshots, Prometheus text (see metrics.h).
 */
#include "admin/metrics.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/global.h"

const double est_metrics_buckets[EST_METRICS_NUM_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                              0.1,   0.25,   0.5,   1,    2.5,   5};

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n == 0 ? 1 : n, sz);
    if (p == NULL)
        abort();
    return p;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (p == NULL)
        abort();
    return p;
}

void est_worker_metrics_init(est_worker_metrics_t *m, size_t num_routes)
{
    m->num_routes = num_routes;
    m->routes = xcalloc(num_routes + 1, sizeof(*m->routes));
}

void est_worker_metrics_dispose(est_worker_metrics_t *m)
{
    for (size_t i = 0; m->routes != NULL && i != m->num_routes + 1; ++i)
        free(m->routes[i].counts);
    free(m->routes);
    m->routes = NULL;
}

const char *est_metrics_method_label(unsigned idx)
{
    return idx < EST_METHOD__COUNT ? est_method_name(1u << idx) : "OTHER";
}

static unsigned method_index(const char *method, size_t len)
{
    unsigned bit = est_method_from_request(method, len);
    if (bit == 0)
        return EST_METRICS_METHOD_OTHER;
    unsigned idx = 0;
    while ((bit >>= 1) != 0)
        ++idx;
    return idx;
}

void est_worker_metrics_record(est_worker_metrics_t *m, size_t route_index, const char *method, size_t method_len, int status,
                               double seconds)
{
    est_route_metrics_t *r = m->routes + (route_index < m->num_routes ? route_index : m->num_routes);
    uint8_t mi = (uint8_t)method_index(method, method_len);
    uint16_t st = status < 0 || status > 999 ? 0 : (uint16_t)status;
    size_t i;
    for (i = 0; i != r->num_counts; ++i)
        if (r->counts[i].status == st && r->counts[i].method == mi)
            break;
    if (i == r->num_counts) {
        if (r->num_counts == r->cap_counts) {
            size_t cap = r->cap_counts == 0 ? 4 : r->cap_counts * 2;
            est_status_count_t *p = realloc(r->counts, cap * sizeof(*p));
            if (p == NULL)
                abort();
            r->counts = p;
            r->cap_counts = cap;
        }
        r->counts[i] = (est_status_count_t){st, mi, 0};
        ++r->num_counts;
    }
    ++r->counts[i].count;
    size_t b = 0;
    while (b != EST_METRICS_NUM_BUCKETS && seconds > est_metrics_buckets[b])
        ++b;
    ++r->buckets[b];
    ++r->duration_count;
    r->duration_sum += seconds;
}

static void copy_route(est_route_metrics_t *dst, const est_route_metrics_t *src)
{
    *dst = *src;
    dst->counts = xcalloc(src->num_counts, sizeof(*dst->counts));
    if (src->num_counts != 0)
        memcpy(dst->counts, src->counts, src->num_counts * sizeof(*dst->counts));
    dst->cap_counts = src->num_counts;
}

static void format_addr(char *buf, size_t size, const struct sockaddr_storage *sa, uint16_t port)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->ss_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ip, sizeof(ip));
        snprintf(buf, size, "%s:%u", ip, port);
    } else if (sa->ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, ip, sizeof(ip));
        snprintf(buf, size, "[%s]:%u", ip, port);
    } else {
        snprintf(buf, size, "?");
    }
}

typedef struct st_upstream_state_fill_t {
    est_metrics_upstream_state_t *st;
    uint64_t now;
} upstream_state_fill_t;

static void fill_upstream_addr(void *data, const est_upstream_addr_info_t *info)
{
    upstream_state_fill_t *f = data;
    est_metrics_upstream_state_t *st = f->st;
    if (st->num_addrs == EST_METRICS_MAX_ADDRS) {
        ++st->addrs_dropped;
        return;
    }
    est_metrics_addr_t *a = st->addrs + st->num_addrs++;
    format_addr(a->addr, sizeof(a->addr), info->sa, info->port);
    a->target = (uint32_t)info->target;
    a->fails = info->fails;
    a->ejected = info->ejected_until > f->now;
    a->half_open = info->ejected_until != 0 && info->ejected_until <= f->now;
    a->ejected_for_ms = a->ejected ? info->ejected_until - f->now : 0;
}

/* the addresses of `u`'s targets (each target's last DNS answer) with their passive health */
static void fill_upstream_state(est_metrics_upstream_state_t *st, const est_upstream_t *u)
{
    st->addrs = xcalloc(EST_METRICS_MAX_ADDRS, sizeof(*st->addrs));
    /* the clock is read by est_upstream_describe before any callback runs */
    upstream_state_fill_t f = {st, 0};
    st->waiting = est_upstream_describe(u, fill_upstream_addr, &f, &f.now);
}

static void fill_dns_entry(void *data, const est_dns_entry_info_t *info)
{
    est_metrics_snapshot_t *snap = data;
    est_metrics_dns_entry_t *d = snap->dns_entries + snap->num_dns_entries++;
    snprintf(d->name, sizeof(d->name), "%s", info->name);
    d->ttl_left_ms = info->ttl_left_ms;
    d->has_answer = info->result != NULL;
    d->stale = (uint8_t)info->stale;
    d->failure = (uint8_t)info->failure;
    size_t len = 0;
    for (size_t i = 0; info->result != NULL && i != info->result->num_addrs; ++i) {
        char a[80];
        format_addr(a, sizeof(a), &info->result->addrs[i].sa, 0);
        size_t n = strlen(a) - 2; /* without the ":0" port */
        if (a[0] == '[') {        /* "[v6]:0" -> "v6" */
            memmove(a, a + 1, n - 2);
            n -= 2;
        }
        a[n] = '\0';
        if (len + n + 5 >= sizeof(d->addrs)) {
            snprintf(d->addrs + len, sizeof(d->addrs) - len, "%s...", len != 0 ? " " : "");
            break;
        }
        len += (size_t)snprintf(d->addrs + len, sizeof(d->addrs) - len, "%s%s", len != 0 ? " " : "", a);
    }
}

void est_metrics_snapshot_fill(est_metrics_snapshot_t *snap, const est_worker_metrics_t *m, const est_config_t *conf,
                               est_upstream_set_t *upstreams, est_dns_t *dns, uint64_t open_connections)
{
    memset(snap, 0, sizeof(*snap));
    snap->filled = 1;
    snap->num_routes = m->num_routes;
    snap->route_names = xcalloc(m->num_routes, sizeof(char *));
    snap->routes = xcalloc(m->num_routes + 1, sizeof(*snap->routes));
    for (size_t i = 0; i != m->num_routes + 1; ++i) {
        if (i != m->num_routes)
            snap->route_names[i] = xstrdup(i < conf->num_routes ? conf->routes[i].path : "?");
        copy_route(snap->routes + i, m->routes + i);
    }
    snap->num_upstreams = upstreams != NULL ? conf->num_upstreams : 0;
    snap->upstream_names = xcalloc(snap->num_upstreams, sizeof(char *));
    snap->upstreams = xcalloc(snap->num_upstreams, sizeof(*snap->upstreams));
    snap->upstream_states = xcalloc(snap->num_upstreams, sizeof(*snap->upstream_states));
    for (size_t i = 0; i != snap->num_upstreams; ++i) {
        snap->upstream_names[i] = xstrdup(conf->upstreams[i].name);
        est_upstream_t *u = est_upstream_set_get(upstreams, i);
        if (u != NULL) {
            snap->upstreams[i] = *est_upstream_get_stats(u);
            fill_upstream_state(snap->upstream_states + i, u);
        }
    }
    if (dns != NULL) {
        snap->dns = *est_dns_get_stats(dns);
        snap->dns_entries = xcalloc(EST_METRICS_MAX_DNS, sizeof(*snap->dns_entries));
        est_dns_list(dns, fill_dns_entry, snap, EST_METRICS_MAX_DNS);
    }
    snap->open_connections = open_connections;
    snap->conns = m->conns;
}

const char *est_close_reason_label(est_close_reason_t r)
{
    static const char *const labels[EST_CLOSE__COUNT] = {
        [EST_CLOSE_BAD_REQUEST] = "bad_request",         [EST_CLOSE_HEADERS_TOO_LARGE] = "headers_too_large",
        [EST_CLOSE_HEADER_TIMEOUT] = "header_timeout",   [EST_CLOSE_BODY_TIMEOUT] = "body_timeout",
        [EST_CLOSE_SEND_TIMEOUT] = "send_timeout",       [EST_CLOSE_IDLE_TIMEOUT] = "idle_timeout",
        [EST_CLOSE_BODY_TOO_LARGE] = "body_too_large",   [EST_CLOSE_H2_RAPID_RESET] = "h2_rapid_reset",
        [EST_CLOSE_H2_FLOOD] = "h2_flood",               [EST_CLOSE_H2_HEADER_BLOCK] = "h2_header_block",
        [EST_CLOSE_H2_COMPRESSION] = "h2_compression",   [EST_CLOSE_H2_PROTOCOL] = "h2_protocol",
        [EST_CLOSE_H2_STREAMS] = "h2_streams",
    };
    return (unsigned)r < EST_CLOSE__COUNT ? labels[r] : "other";
}

void est_metrics_snapshot_dispose(est_metrics_snapshot_t *snap)
{
    if (!snap->filled)
        return;
    for (size_t i = 0; i != snap->num_routes; ++i)
        free(snap->route_names[i]);
    for (size_t i = 0; i != snap->num_routes + 1; ++i)
        free(snap->routes[i].counts);
    for (size_t i = 0; i != snap->num_upstreams; ++i) {
        free(snap->upstream_names[i]);
        if (snap->upstream_states != NULL)
            free(snap->upstream_states[i].addrs);
    }
    free(snap->upstream_states);
    free(snap->dns_entries);
    free(snap->route_names);
    free(snap->routes);
    free(snap->upstream_names);
    free(snap->upstreams);
    memset(snap, 0, sizeof(*snap));
}

void est_metrics_answer_messages(h2o_linklist_t *messages, void (*fill)(void *data, est_metrics_snapshot_t *snap), void *data)
{
    while (!h2o_linklist_is_empty(messages)) {
        est_stats_msg_t *msg = H2O_STRUCT_FROM_MEMBER(est_stats_msg_t, super.link, messages->next);
        h2o_linklist_unlink(&msg->super.link);
        fill(data, &msg->snap);
        h2o_multithread_send_message(msg->reply_to, &msg->super);
    }
}

/* ---- rendering ----------------------------------------------------------------------- */

void est_metrics_append_label_value(est_strbuf_t *out, const char *s)
{
    est_strbuf_append(out, "\"", 1);
    for (const char *p = s; *p != '\0'; ++p) {
        if (*p == '\\')
            est_strbuf_append(out, "\\\\", 2);
        else if (*p == '"')
            est_strbuf_append(out, "\\\"", 2);
        else if (*p == '\n')
            est_strbuf_append(out, "\\n", 2);
        else
            est_strbuf_append(out, p, 1);
    }
    est_strbuf_append(out, "\"", 1);
}

static void header(est_strbuf_t *out, const char *name, const char *type, const char *help)
{
    est_strbuf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{label="value"...} — labels given as NULL-terminated key, value pairs */
static void sample_u64(est_strbuf_t *out, const char *name, const char *const *labels, uint64_t v)
{
    est_strbuf_appends(out, name);
    if (labels != NULL && labels[0] != NULL) {
        est_strbuf_append(out, "{", 1);
        for (size_t i = 0; labels[i] != NULL; i += 2) {
            if (i != 0)
                est_strbuf_append(out, ",", 1);
            est_strbuf_appends(out, labels[i]);
            est_strbuf_append(out, "=", 1);
            est_metrics_append_label_value(out, labels[i + 1]);
        }
        est_strbuf_append(out, "}", 1);
    }
    est_strbuf_appendf(out, " %llu\n", (unsigned long long)v);
}

#define NO_ROUTE_LABEL "none"

/* merged view of one route over every worker */
typedef struct {
    const char *name;
    est_route_metrics_t m; /* counts owned */
} merged_route_t;

typedef struct {
    const char *name;
    est_upstream_stats_t s;
} merged_upstream_t;

static merged_route_t *find_or_add_route(merged_route_t **arr, size_t *n, const char *name)
{
    for (size_t i = 0; i != *n; ++i)
        if (strcmp((*arr)[i].name, name) == 0)
            return *arr + i;
    merged_route_t *p = realloc(*arr, (*n + 1) * sizeof(**arr));
    if (p == NULL)
        abort();
    *arr = p;
    memset(p + *n, 0, sizeof(*p));
    p[*n].name = name;
    return p + (*n)++;
}

static void merge_route(est_route_metrics_t *dst, const est_route_metrics_t *src)
{
    for (size_t i = 0; i != src->num_counts; ++i) {
        size_t j;
        for (j = 0; j != dst->num_counts; ++j)
            if (dst->counts[j].status == src->counts[i].status && dst->counts[j].method == src->counts[i].method)
                break;
        if (j == dst->num_counts) {
            est_status_count_t *p = realloc(dst->counts, (dst->num_counts + 1) * sizeof(*p));
            if (p == NULL)
                abort();
            dst->counts = p;
            dst->counts[j] = src->counts[i];
            dst->counts[j].count = 0;
            ++dst->num_counts;
        }
        dst->counts[j].count += src->counts[i].count;
    }
    for (size_t b = 0; b != EST_METRICS_NUM_BUCKETS + 1; ++b)
        dst->buckets[b] += src->buckets[b];
    dst->duration_count += src->duration_count;
    dst->duration_sum += src->duration_sum;
    for (size_t r = 0; r != EST_AUTH_REASON__COUNT; ++r)
        dst->auth_rejected[r] += src->auth_rejected[r];
    dst->rate_limited += src->rate_limited;
    for (size_t r = 0; r != EST_CACHE_RESULT__COUNT; ++r)
        dst->cache[r] += src->cache[r];
}

void est_upstream_stats_add(est_upstream_stats_t *d, const est_upstream_stats_t *s)
{
    d->attempts_ok += s->attempts_ok;
    for (size_t e = 0; e != sizeof(d->attempts_failed) / sizeof(d->attempts_failed[0]); ++e)
        d->attempts_failed[e] += s->attempts_failed[e];
    d->retries += s->retries;
    d->conns_created += s->conns_created;
    d->conns_reused += s->conns_reused;
    d->conns_open += s->conns_open;
    d->conns_idle += s->conns_idle;
    d->queue_waits += s->queue_waits;
    d->ejections += s->ejections;
    d->retries_budget_exceeded += s->retries_budget_exceeded;
    d->tls_resumed += s->tls_resumed;
    d->hedges_won += s->hedges_won;
    d->hedges_lost += s->hedges_lost;
    d->hedges_failed += s->hedges_failed;
    d->hedges_refused += s->hedges_refused;
}

static void render_requests(est_strbuf_t *out, merged_route_t *routes, size_t num_routes)
{
    header(out, "estuary_requests_total", "counter", "Requests answered, by route path template, method and status.");
    for (size_t i = 0; i != num_routes; ++i) {
        for (size_t j = 0; j != routes[i].m.num_counts; ++j) {
            const est_status_count_t *c = routes[i].m.counts + j;
            char status[8];
            snprintf(status, sizeof(status), "%u", c->status);
            const char *labels[] = {"route", routes[i].name, "method", est_metrics_method_label(c->method), "status", status, NULL};
            sample_u64(out, "estuary_requests_total", labels, c->count);
        }
    }
    header(out, "estuary_request_duration_seconds", "histogram",
           "Time from the request reaching the gateway to its response being sent, by route.");
    for (size_t i = 0; i != num_routes; ++i) {
        const est_route_metrics_t *m = &routes[i].m;
        uint64_t cum = 0;
        for (size_t b = 0; b != EST_METRICS_NUM_BUCKETS + 1; ++b) {
            cum += m->buckets[b];
            char le[32];
            if (b == EST_METRICS_NUM_BUCKETS)
                snprintf(le, sizeof(le), "+Inf");
            else
                snprintf(le, sizeof(le), "%g", est_metrics_buckets[b]);
            const char *labels[] = {"route", routes[i].name, "le", le, NULL};
            sample_u64(out, "estuary_request_duration_seconds_bucket", labels, cum);
        }
        est_strbuf_appends(out, "estuary_request_duration_seconds_sum{route=");
        est_metrics_append_label_value(out, routes[i].name);
        est_strbuf_appendf(out, "} %.9g\n", m->duration_sum);
        const char *labels[] = {"route", routes[i].name, NULL};
        sample_u64(out, "estuary_request_duration_seconds_count", labels, m->duration_count);
    }
    /* policy refusals: only the (route, reason) pairs that happened, so a config with no
     * policy adds no series */
    header(out, "estuary_auth_rejected_total", "counter",
           "Requests refused by a route's auth policy (401, or 403 for a missing scope), by route and reason.");
    for (size_t i = 0; i != num_routes; ++i)
        for (size_t r = 0; r != EST_AUTH_REASON__COUNT; ++r)
            if (routes[i].m.auth_rejected[r] != 0) {
                const char *labels[] = {"route", routes[i].name, "reason", est_auth_reason_label((est_auth_reason_t)r), NULL};
                sample_u64(out, "estuary_auth_rejected_total", labels, routes[i].m.auth_rejected[r]);
            }
    header(out, "estuary_rate_limited_total", "counter", "Requests refused with 429 by a route's rate limit, by route.");
    for (size_t i = 0; i != num_routes; ++i)
        if (routes[i].m.rate_limited != 0) {
            const char *labels[] = {"route", routes[i].name, NULL};
            sample_u64(out, "estuary_rate_limited_total", labels, routes[i].m.rate_limited);
        }
    header(out, "estuary_cache_requests_total", "counter",
           "Requests on cached and coalescing routes by what the response cache did, by route and result.");
    for (size_t i = 0; i != num_routes; ++i)
        for (size_t r = 0; r != EST_CACHE_RESULT__COUNT; ++r)
            if (routes[i].m.cache[r] != 0) {
                const char *labels[] = {"route", routes[i].name, "result", est_cache_result_label((est_cache_result_t)r), NULL};
                sample_u64(out, "estuary_cache_requests_total", labels, routes[i].m.cache[r]);
            }
    /* the process's one store (cache/global.h): read directly, it is shared by the workers */
    est_cache_stats_t cst = {0};
    if (est_cache_global() != NULL)
        est_cache_store_stats(est_cache_global(), &cst);
    header(out, "estuary_cache_bytes", "gauge", "Bytes held by the response cache's stored entries.");
    sample_u64(out, "estuary_cache_bytes", NULL, cst.bytes);
    header(out, "estuary_cache_entries", "gauge", "Entries in the response cache.");
    sample_u64(out, "estuary_cache_entries", NULL, cst.entries);
    header(out, "estuary_cache_evictions_total", "counter", "Entries the response cache evicted to stay within max_size.");
    sample_u64(out, "estuary_cache_evictions_total", NULL, cst.evictions);
}

const char *est_cache_result_label(est_cache_result_t r)
{
    static const char *const labels[EST_CACHE_RESULT__COUNT] = {"hit", "stale", "error_stale", "collapsed", "miss", "bypass", "stored"};
    return (unsigned)r < EST_CACHE_RESULT__COUNT ? labels[r] : "miss";
}

const char *est_auth_reason_label(est_auth_reason_t r)
{
    static const char *const labels[EST_AUTH_REASON__COUNT] = {
        "missing",       "malformed",     "too_large",     "alg_not_allowed", "crit_unsupported", "unknown_kid",
        "key_mismatch",  "bad_signature", "expired",       "not_yet_valid",   "bad_issuer",       "bad_audience",
        "bad_claims",    "invalid_api_key", "insufficient_scope", "no_keys",  "internal"};
    return (unsigned)r < EST_AUTH_REASON__COUNT ? labels[r] : "internal";
}

const char *est_redis_result_label(est_redis_result_t r)
{
    static const char *const labels[EST_REDIS_RESULT__COUNT] = {"ok", "error", "timeout"};
    return (unsigned)r < EST_REDIS_RESULT__COUNT ? labels[r] : "error";
}

static void render_upstreams(est_strbuf_t *out, merged_upstream_t *ups, size_t n)
{
    header(out, "estuary_upstream_attempts_total", "counter",
           "Upstream attempts (retries included), by result: ok or the failure kind.");
    for (size_t i = 0; i != n; ++i) {
        const char *labels[] = {"upstream", ups[i].name, "result", "ok", NULL};
        sample_u64(out, "estuary_upstream_attempts_total", labels, ups[i].s.attempts_ok);
        for (int e = EST_UERR_NONE + 1; e <= EST_UERR_DEADLINE; ++e) {
            const char *l2[] = {"upstream", ups[i].name, "result", est_uerr_name((est_uerr_t)e), NULL};
            sample_u64(out, "estuary_upstream_attempts_total", l2, ups[i].s.attempts_failed[e]);
        }
    }
#define PER_UPSTREAM(metric, type, help, field)                                                                              \
    header(out, metric, type, help);                                                                                         \
    for (size_t i = 0; i != n; ++i) {                                                                                        \
        const char *labels[] = {"upstream", ups[i].name, NULL};                                                              \
        sample_u64(out, metric, labels, ups[i].s.field);                                                                     \
    }
    PER_UPSTREAM("estuary_upstream_retries_total", "counter", "Retries made (attempts after the first).", retries)
    header(out, "estuary_upstream_connections", "gauge", "Upstream connections by state: open (in use or idle), idle.");
    for (size_t i = 0; i != n; ++i) {
        const char *lo[] = {"upstream", ups[i].name, "state", "open", NULL};
        sample_u64(out, "estuary_upstream_connections", lo, ups[i].s.conns_open);
        const char *li[] = {"upstream", ups[i].name, "state", "idle", NULL};
        sample_u64(out, "estuary_upstream_connections", li, ups[i].s.conns_idle);
    }
    PER_UPSTREAM("estuary_upstream_connections_created_total", "counter", "Upstream connections opened.", conns_created)
    PER_UPSTREAM("estuary_upstream_connections_reused_total", "counter", "Requests sent on a pooled keep-alive connection.",
                 conns_reused)
    PER_UPSTREAM("estuary_upstream_queue_waits_total", "counter",
                 "Requests that waited for a free connection slot (pool.max_connections reached).", queue_waits)
    PER_UPSTREAM("estuary_upstream_ejections_total", "counter",
                 "Addresses ejected by passive health checking (repeated connect failures).", ejections)
    PER_UPSTREAM("estuary_upstream_retries_budget_exceeded_total", "counter",
                 "Retries that retry.* allowed but the retry budget refused.", retries_budget_exceeded)
    PER_UPSTREAM("estuary_upstream_tls_resumptions_total", "counter", "TLS handshakes to the upstream that resumed a session.",
                 tls_resumed)
#undef PER_UPSTREAM
    header(out, "estuary_upstream_hedges_total", "counter",
           "Hedge attempts by result: won (its head came first), lost (another attempt's did, or the exchange ended), "
           "failed; refused: a hedge was due but over the hedge budget.");
    for (size_t i = 0; i != n; ++i) {
        const char *results[] = {"won", "lost", "failed", "refused"};
        const uint64_t values[] = {ups[i].s.hedges_won, ups[i].s.hedges_lost, ups[i].s.hedges_failed, ups[i].s.hedges_refused};
        for (size_t k = 0; k != 4; ++k) {
            const char *labels[] = {"upstream", ups[i].name, "result", results[k], NULL};
            sample_u64(out, "estuary_upstream_hedges_total", labels, values[k]);
        }
    }
}

void est_metrics_render(est_strbuf_t *out, const est_metrics_snapshot_t *snaps, size_t n, const est_process_metrics_t *proc)
{
    merged_route_t *routes = NULL;
    size_t num_routes = 0;
    merged_upstream_t *ups = NULL;
    size_t num_ups = 0;
    est_dns_stats_t dns = {0};
    uint64_t conns = 0;
    est_conn_counters_t closed = {{0}};

    for (size_t w = 0; w != n; ++w) {
        const est_metrics_snapshot_t *s = snaps + w;
        if (!s->filled)
            continue;
        for (size_t i = 0; i != s->num_routes + 1; ++i) {
            const char *name = i == s->num_routes ? NO_ROUTE_LABEL : s->route_names[i];
            merge_route(&find_or_add_route(&routes, &num_routes, name)->m, s->routes + i);
        }
        for (size_t i = 0; i != s->num_upstreams; ++i) {
            size_t j;
            for (j = 0; j != num_ups; ++j)
                if (strcmp(ups[j].name, s->upstream_names[i]) == 0)
                    break;
            if (j == num_ups) {
                merged_upstream_t *p = realloc(ups, (num_ups + 1) * sizeof(*p));
                if (p == NULL)
                    abort();
                ups = p;
                memset(ups + j, 0, sizeof(*ups));
                ups[j].name = s->upstream_names[i];
                ++num_ups;
            }
            est_upstream_stats_add(&ups[j].s, s->upstreams + i);
        }
        dns.queries_ok += s->dns.queries_ok;
        dns.queries_failed += s->dns.queries_failed;
        dns.cache_hits += s->dns.cache_hits;
        dns.cache_misses += s->dns.cache_misses;
        dns.stale_served += s->dns.stale_served;
        conns += s->open_connections;
        for (size_t r = 0; r != EST_CLOSE__COUNT; ++r)
            closed.closed[r] += s->conns.closed[r];
        closed.accept_paused += s->conns.accept_paused;
        for (size_t r = 0; r != EST_REDIS_RESULT__COUNT; ++r)
            closed.redis[r] += s->conns.redis[r];
        closed.spans_dropped += s->conns.spans_dropped;
        closed.spans_exported += s->conns.spans_exported;
    }

    render_requests(out, routes, num_routes);
    render_upstreams(out, ups, num_ups);

    header(out, "estuary_dns_queries_total", "counter", "DNS queries sent, by result.");
    const char *lok[] = {"result", "ok", NULL}, *lfail[] = {"result", "failed", NULL};
    sample_u64(out, "estuary_dns_queries_total", lok, dns.queries_ok);
    sample_u64(out, "estuary_dns_queries_total", lfail, dns.queries_failed);
    header(out, "estuary_dns_cache_hits_total", "counter", "Lookups answered from the cache.");
    sample_u64(out, "estuary_dns_cache_hits_total", NULL, dns.cache_hits);
    header(out, "estuary_dns_cache_misses_total", "counter", "Lookups that needed a DNS query.");
    sample_u64(out, "estuary_dns_cache_misses_total", NULL, dns.cache_misses);
    header(out, "estuary_dns_stale_answers_total", "counter", "Expired answers served because their refresh failed.");
    sample_u64(out, "estuary_dns_stale_answers_total", NULL, dns.stale_served);

    header(out, "estuary_client_connections", "gauge", "Open client connections.");
    sample_u64(out, "estuary_client_connections", NULL, conns);
    header(out, "estuary_client_connections_closed_total", "counter",
           "Client connections estuary closed because of a limit or a protocol violation, by reason.");
    for (size_t r = 0; r != EST_CLOSE__COUNT; ++r) {
        const char *l[] = {"reason", est_close_reason_label((est_close_reason_t)r), NULL};
        sample_u64(out, "estuary_client_connections_closed_total", l, closed.closed[r]);
    }
    header(out, "estuary_accept_paused_total", "counter", "Times accepting paused because file descriptors ran out.");
    sample_u64(out, "estuary_accept_paused_total", NULL, closed.accept_paused);
    header(out, "estuary_redis_requests_total", "counter", "Rate-limit round trips to Redis, by result.");
    for (size_t r = 0; r != EST_REDIS_RESULT__COUNT; ++r) {
        const char *l[] = {"result", est_redis_result_label((est_redis_result_t)r), NULL};
        sample_u64(out, "estuary_redis_requests_total", l, closed.redis[r]);
    }
    header(out, "estuary_tracing_spans_dropped_total", "counter",
           "Spans not delivered to the OTLP collector: dropped from a full queue or by a failed export.");
    sample_u64(out, "estuary_tracing_spans_dropped_total", NULL, closed.spans_dropped);
    header(out, "estuary_tracing_spans_exported_total", "counter", "Spans the OTLP collector accepted (2xx).");
    sample_u64(out, "estuary_tracing_spans_exported_total", NULL, closed.spans_exported);
    header(out, "estuary_workers", "gauge", "Worker threads.");
    sample_u64(out, "estuary_workers", NULL, proc->workers);
    header(out, "estuary_workers_missing", "gauge", "Workers that did not answer this scrape within 1s (not counted above).");
    sample_u64(out, "estuary_workers_missing", NULL, proc->workers_missing);
    header(out, "estuary_config_generation", "gauge", "Configuration generation: 1 at start, +1 per applied reload.");
    sample_u64(out, "estuary_config_generation", NULL, proc->config_generation);
    header(out, "estuary_config_reloads_total", "counter", "Configuration reloads, by result.");
    const char *lrok[] = {"result", "ok", NULL}, *lrerr[] = {"result", "error", NULL};
    sample_u64(out, "estuary_config_reloads_total", lrok, proc->reloads_ok);
    sample_u64(out, "estuary_config_reloads_total", lrerr, proc->reloads_failed);
    header(out, "estuary_ready", "gauge", "1 while /readyz answers 200.");
    sample_u64(out, "estuary_ready", NULL, proc->ready && !proc->draining);
    header(out, "estuary_draining", "gauge", "1 once a graceful drain started.");
    sample_u64(out, "estuary_draining", NULL, proc->draining != 0);
    header(out, "estuary_start_time_seconds", "gauge", "Start time of the process since the Unix epoch.");
    est_strbuf_appendf(out, "estuary_start_time_seconds %.3f\n", proc->start_time);

    for (size_t i = 0; i != num_routes; ++i)
        free(routes[i].m.counts);
    free(routes);
    free(ups);
}
