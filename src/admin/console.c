/*
 * estuary - the admin console's /state document (see console.h).
 */
#include "admin/console.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cache/global.h"

#define NO_ROUTE_NAME "none"
#define RATE_WINDOW 5.0   /* seconds behind "requests per second" */
#define ERROR_WINDOW 60.0 /* seconds behind "error ratio over the last minute" and the minute's p50/p99 */
#define SAMPLE_EVERY 1.0  /* at most one history sample a second */

typedef struct {
    char *name;
    uint64_t requests, errors;
    uint64_t buckets[EST_METRICS_NUM_BUCKETS + 1]; /* duration histogram so far, per bucket */
} hist_route_t;

typedef struct {
    double mono;
    size_t num;
    hist_route_t *routes;
} sample_t;

struct est_console_history {
    sample_t ring[EST_CONSOLE_HISTORY];
    size_t head; /* the oldest sample */
    size_t count;
};

/* one route summed over the workers */
typedef struct {
    const char *name; /* borrowed from a snapshot */
    int unmatched;
    uint64_t requests, errors;
    uint64_t by_class[6]; /* [0]: no status sent, [1..5]: 1xx..5xx */
    uint64_t buckets[EST_METRICS_NUM_BUCKETS + 1];
    uint64_t auth_rejected[EST_AUTH_REASON__COUNT];
    uint64_t rate_limited;
} sum_route_t;

/* one address of an upstream over the workers (each worker keeps its own passive health) */
typedef struct {
    const est_metrics_addr_t *a; /* borrowed from the first snapshot listing it */
    uint32_t ejected_workers, half_open_workers, fails_max;
    uint64_t ejected_for_ms; /* the longest */
} sum_addr_t;

typedef struct {
    const char *name;
    est_upstream_stats_t s;
    uint64_t waiting;
    sum_addr_t *addrs;
    size_t num_addrs;
    size_t addrs_dropped;
} sum_upstream_t;

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n == 0 ? 1 : n);
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

est_console_history_t *est_console_history_create(void)
{
    est_console_history_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        abort();
    return h;
}

static void sample_clear(sample_t *s)
{
    for (size_t i = 0; i != s->num; ++i)
        free(s->routes[i].name);
    free(s->routes);
    memset(s, 0, sizeof(*s));
}

void est_console_history_destroy(est_console_history_t *h)
{
    if (h == NULL)
        return;
    for (size_t i = 0; i != EST_CONSOLE_HISTORY; ++i)
        sample_clear(h->ring + i);
    free(h);
}

static sample_t *sample_at(est_console_history_t *h, size_t i) /* 0: oldest */
{
    return h->ring + (h->head + i) % EST_CONSOLE_HISTORY;
}

/* the route named `name` in `s`, trying position `hint` first (the route order rarely changes) */
static const hist_route_t *sample_route(const sample_t *s, const char *name, size_t hint)
{
    if (hint < s->num && strcmp(s->routes[hint].name, name) == 0)
        return s->routes + hint;
    for (size_t i = 0; i != s->num; ++i)
        if (strcmp(s->routes[i].name, name) == 0)
            return s->routes + i;
    return NULL;
}

static void history_push(est_console_history_t *h, double mono, const sum_route_t *routes, size_t num)
{
    sample_t *s;
    if (h->count == EST_CONSOLE_HISTORY) {
        s = h->ring + h->head;
        sample_clear(s);
        h->head = (h->head + 1) % EST_CONSOLE_HISTORY;
    } else {
        s = sample_at(h, h->count++);
    }
    s->mono = mono;
    s->num = num;
    s->routes = xrealloc(NULL, num * sizeof(*s->routes));
    for (size_t i = 0; i != num; ++i) {
        s->routes[i] = (hist_route_t){xstrdup(routes[i].name), routes[i].requests, routes[i].errors, {0}};
        memcpy(s->routes[i].buckets, routes[i].buckets, sizeof(s->routes[i].buckets));
    }
}

/* the newest sample at least `age` seconds older than `mono`, else the oldest one at least
 * half a second older; NULL when there is none */
static const sample_t *sample_before(est_console_history_t *h, double mono, double age)
{
    const sample_t *best = NULL;
    for (size_t i = 0; i != h->count; ++i) {
        const sample_t *s = sample_at(h, i);
        if (mono - s->mono >= age)
            best = s;
    }
    if (best == NULL && h->count != 0 && mono - sample_at(h, 0)->mono >= 0.5)
        best = sample_at(h, 0);
    return best;
}

double est_console_quantile(const uint64_t *buckets, double q)
{
    uint64_t total = 0;
    for (size_t b = 0; b != EST_METRICS_NUM_BUCKETS + 1; ++b)
        total += buckets[b];
    if (total == 0)
        return -1;
    double rank = q * (double)total, cum = 0;
    for (size_t b = 0; b != EST_METRICS_NUM_BUCKETS + 1; ++b) {
        if (buckets[b] == 0 || cum + (double)buckets[b] < rank) {
            cum += (double)buckets[b];
            continue;
        }
        if (b == EST_METRICS_NUM_BUCKETS)
            return est_metrics_buckets[EST_METRICS_NUM_BUCKETS - 1];
        double lo = b == 0 ? 0 : est_metrics_buckets[b - 1], hi = est_metrics_buckets[b];
        return lo + (hi - lo) * (rank - cum) / (double)buckets[b];
    }
    return est_metrics_buckets[EST_METRICS_NUM_BUCKETS - 1];
}

/* ---- summing ---------------------------------------------------------------------------- */

static sum_route_t *route_slot(sum_route_t **arr, size_t *n, const char *name, int unmatched)
{
    for (size_t i = 0; i != *n; ++i)
        if ((*arr)[i].unmatched == unmatched && strcmp((*arr)[i].name, name) == 0)
            return *arr + i;
    *arr = xrealloc(*arr, (*n + 1) * sizeof(**arr));
    sum_route_t *r = *arr + (*n)++;
    memset(r, 0, sizeof(*r));
    r->name = name;
    r->unmatched = unmatched;
    return r;
}

static void add_route(sum_route_t *d, const est_route_metrics_t *m)
{
    for (size_t i = 0; i != m->num_counts; ++i) {
        unsigned st = m->counts[i].status, cls = st >= 100 && st <= 599 ? st / 100 : 0;
        d->by_class[cls] += m->counts[i].count;
        d->requests += m->counts[i].count;
        if (cls == 5)
            d->errors += m->counts[i].count;
    }
    for (size_t b = 0; b != EST_METRICS_NUM_BUCKETS + 1; ++b)
        d->buckets[b] += m->buckets[b];
    for (size_t r = 0; r != EST_AUTH_REASON__COUNT; ++r)
        d->auth_rejected[r] += m->auth_rejected[r];
    d->rate_limited += m->rate_limited;
}

static void add_upstream_state(sum_upstream_t *d, const est_metrics_upstream_state_t *st)
{
    d->waiting += st->waiting;
    if (st->addrs_dropped > d->addrs_dropped)
        d->addrs_dropped = st->addrs_dropped;
    for (size_t i = 0; i != st->num_addrs; ++i) {
        const est_metrics_addr_t *a = st->addrs + i;
        size_t j;
        for (j = 0; j != d->num_addrs; ++j)
            if (d->addrs[j].a->target == a->target && strcmp(d->addrs[j].a->addr, a->addr) == 0)
                break;
        if (j == d->num_addrs) {
            d->addrs = xrealloc(d->addrs, (d->num_addrs + 1) * sizeof(*d->addrs));
            memset(d->addrs + j, 0, sizeof(*d->addrs));
            d->addrs[j].a = a;
            ++d->num_addrs;
        }
        sum_addr_t *x = d->addrs + j;
        x->ejected_workers += a->ejected;
        x->half_open_workers += a->half_open;
        if (a->fails > x->fails_max)
            x->fails_max = a->fails;
        if (a->ejected_for_ms > x->ejected_for_ms)
            x->ejected_for_ms = a->ejected_for_ms;
    }
}

/* ---- JSON ------------------------------------------------------------------------------- */

static json_t *u64(uint64_t v)
{
    return json_integer(v > (uint64_t)INT64_MAX ? INT64_MAX : (json_int_t)v);
}

/* the process's response cache (cache/global.h): off until a configuration caches a route */
static json_t *cache_json(void)
{
    est_cache_store_t *store = est_cache_global();
    if (store == NULL)
        return json_pack("{s:b}", "enabled", 0);
    est_cache_stats_t st;
    est_cache_store_stats(store, &st);
    uint64_t lookups = st.hits + st.misses;
    return json_pack("{s:b,s:o,s:o,s:o,s:o,s:o,s:o,s:f}", "enabled", 1, "bytes", u64(st.bytes), "entries", u64(st.entries), "hits",
                     u64(st.hits), "misses", u64(st.misses), "evictions", u64(st.evictions), "purged", u64(st.purged), "hit_ratio",
                     lookups != 0 ? (double)st.hits / (double)lookups : 0.0);
}

static json_t *num_or_null(double v, int valid)
{
    if (!valid || !isfinite(v) || v < 0 || v > 1e15)
        return json_null();
    return json_real((double)(int64_t)(v * 1000 + 0.5) / 1000); /* 3 decimals are plenty for a page */
}

/* one DNS name over the workers (each worker has its own cache) */
typedef struct {
    const est_metrics_dns_entry_t *e; /* borrowed: the first worker's entry with an answer, else the first one */
    uint64_t ttl_left_ms;             /* the longest */
    uint32_t workers, stale_workers;
} sum_dns_t;

#define MAX_DNS_SHOWN 64

static void add_dns(sum_dns_t *arr, size_t *n, const est_metrics_dns_entry_t *e)
{
    size_t j;
    for (j = 0; j != *n; ++j)
        if (strcmp(arr[j].e->name, e->name) == 0)
            break;
    if (j == *n) {
        if (*n == MAX_DNS_SHOWN)
            return;
        memset(arr + j, 0, sizeof(*arr));
        arr[j].e = e;
        ++*n;
    } else if (!arr[j].e->has_answer && e->has_answer) {
        arr[j].e = e;
    }
    ++arr[j].workers;
    arr[j].stale_workers += e->stale;
    if (e->ttl_left_ms > arr[j].ttl_left_ms)
        arr[j].ttl_left_ms = e->ttl_left_ms;
}

static json_t *dns_entry_json(const sum_dns_t *d)
{
    json_t *addrs = json_array();
    const char *p = d->e->addrs;
    while (*p != '\0') {
        size_t n = strcspn(p, " ");
        json_t *a = json_stringn(p, n);
        if (a != NULL)
            json_array_append_new(addrs, a);
        p += n;
        p += *p == ' ';
    }
    int failed = d->e->failure != EST_DNS_OK && !d->e->has_answer;
    return json_pack("{s:s,s:o,s:o,s:b,s:o,s:o}", "name", d->e->name, "addresses", addrs, "ttl_left_ms", u64(d->ttl_left_ms),
                     "stale", d->stale_workers != 0, "failure",
                     failed ? json_string(est_dns_strerror((est_dns_status_t)d->e->failure)) : json_null(), "workers",
                     u64(d->workers));
}

/* now - then, per bucket; 0 when a bucket went backwards (a route of the same name that is
 * not the same series, e.g. after a reload reset it) */
static int buckets_delta(const uint64_t *now, const uint64_t *then, uint64_t *out)
{
    for (size_t b = 0; b != EST_METRICS_NUM_BUCKETS + 1; ++b) {
        if (now[b] < then[b])
            return 0;
        out[b] = now[b] - then[b];
    }
    return 1;
}

static json_t *route_json(const sum_route_t *r, size_t idx, est_console_history_t *h, double mono)
{
    json_t *o = json_object();
    json_object_set_new(o, "path", json_string(r->name));
    json_object_set_new(o, "unmatched", json_boolean(r->unmatched));
    json_object_set_new(o, "requests", u64(r->requests));
    json_t *cls = json_object();
    static const char *const names[6] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
    for (size_t c = 0; c != 6; ++c)
        json_object_set_new(cls, names[c], u64(r->by_class[c]));
    json_object_set_new(o, "by_class", cls);
    json_object_set_new(o, "errors", u64(r->errors));
    json_object_set_new(o, "error_ratio", num_or_null((double)r->errors / (double)r->requests, r->requests != 0));

    /* windowed values against older samples (null until there is one) */
    const sample_t *s = sample_before(h, mono, RATE_WINDOW);
    const hist_route_t *hr = s != NULL ? sample_route(s, r->name, idx) : NULL;
    double rps = 0;
    if (hr != NULL && hr->requests <= r->requests)
        rps = (double)(r->requests - hr->requests) / (mono - s->mono);
    json_object_set_new(o, "rps", num_or_null(rps, hr != NULL));
    s = sample_before(h, mono, ERROR_WINDOW);
    hr = s != NULL ? sample_route(s, r->name, idx) : NULL;
    uint64_t dreq = hr != NULL && hr->requests <= r->requests ? r->requests - hr->requests : 0;
    uint64_t derr = hr != NULL && hr->errors <= r->errors ? r->errors - hr->errors : 0;
    json_object_set_new(o, "error_ratio_1m", num_or_null((double)derr / (double)dreq, dreq != 0));

    double p50 = est_console_quantile(r->buckets, 0.5), p99 = est_console_quantile(r->buckets, 0.99);
    json_object_set_new(o, "p50_ms", num_or_null(p50 * 1000, p50 >= 0));
    json_object_set_new(o, "p99_ms", num_or_null(p99 * 1000, p99 >= 0));
    /* the same over the last minute: the histogram now minus the one a minute ago (null until
     * there is an older sample, or when the minute saw no request) */
    uint64_t delta[EST_METRICS_NUM_BUCKETS + 1];
    int have = hr != NULL && buckets_delta(r->buckets, hr->buckets, delta);
    p50 = have ? est_console_quantile(delta, 0.5) : -1;
    p99 = have ? est_console_quantile(delta, 0.99) : -1;
    json_object_set_new(o, "p50_ms_1m", num_or_null(p50 * 1000, p50 >= 0));
    json_object_set_new(o, "p99_ms_1m", num_or_null(p99 * 1000, p99 >= 0));

    uint64_t auth = 0;
    json_t *reasons = json_object();
    for (size_t k = 0; k != EST_AUTH_REASON__COUNT; ++k)
        if (r->auth_rejected[k] != 0) {
            auth += r->auth_rejected[k];
            json_object_set_new(reasons, est_auth_reason_label((est_auth_reason_t)k), u64(r->auth_rejected[k]));
        }
    json_object_set_new(o, "auth_rejected", u64(auth));
    json_object_set_new(o, "auth_rejected_by_reason", reasons);
    json_object_set_new(o, "rate_limited", u64(r->rate_limited));

    /* requests per second and p99 (ms; null without requests) between consecutive samples,
     * oldest first (the page's charts) */
    json_t *hist = json_array(), *p99_hist = json_array();
    const hist_route_t *prev = NULL;
    double prev_t = 0;
    for (size_t i = 0; i != h->count; ++i) {
        const sample_t *cur = sample_at(h, i);
        const hist_route_t *c = sample_route(cur, r->name, idx);
        if (prev != NULL && c != NULL && cur->mono > prev_t) {
            double v = c->requests >= prev->requests ? (double)(c->requests - prev->requests) / (cur->mono - prev_t) : 0;
            json_array_append_new(hist, num_or_null(v, 1));
            double q = buckets_delta(c->buckets, prev->buckets, delta) ? est_console_quantile(delta, 0.99) : -1;
            json_array_append_new(p99_hist, num_or_null(q * 1000, q >= 0));
        }
        prev = c;
        prev_t = cur->mono;
    }
    json_object_set_new(o, "rps_history", hist);
    json_object_set_new(o, "p99_history", p99_hist);
    return o;
}

/* the upstream's configured targets, from the effective config ("upstreams": {name: {"targets": [...]}}) */
static json_t *targets_of(const json_t *config, const char *name)
{
    json_t *out = json_array();
    json_t *u = json_object_get(json_object_get(config, "upstreams"), name), *t = json_object_get(u, "targets");
    for (size_t i = 0; i != json_array_size(t) && i != 64; ++i) {
        json_t *v = json_array_get(t, i);
        if (json_is_string(v))
            json_array_append_new(out, json_string(json_string_value(v)));
        else if (json_is_string(json_object_get(v, "url")))
            json_array_append_new(out, json_string(json_string_value(json_object_get(v, "url"))));
    }
    return out;
}

static json_t *upstream_json(const sum_upstream_t *u, const json_t *config)
{
    const est_upstream_stats_t *s = &u->s;
    json_t *o = json_object(), *fail = json_object();
    uint64_t failed = 0;
    for (int e = EST_UERR_NONE + 1; e <= EST_UERR_DEADLINE; ++e) {
        failed += s->attempts_failed[e];
        json_object_set_new(fail, est_uerr_name((est_uerr_t)e), u64(s->attempts_failed[e]));
    }
    json_t *targets = targets_of(config, u->name), *addrs = json_array();
    for (size_t i = 0; i != u->num_addrs; ++i) {
        const sum_addr_t *x = u->addrs + i;
        json_t *t = json_array_get(targets, x->a->target);
        const char *health = x->ejected_workers != 0 ? "ejected" : x->half_open_workers != 0 ? "half_open" : "ok";
        json_array_append_new(addrs,
                              json_pack("{s:s,s:O,s:s,s:o,s:o,s:o}", "address", x->a->addr, "target", t != NULL ? t : json_null(),
                                        "health", health, "ejected_workers", u64(x->ejected_workers), "ejected_for_ms",
                                        u64(x->ejected_for_ms), "consecutive_failures", u64(x->fails_max)));
    }
    json_object_set_new(o, "name", json_string(u->name));
    json_object_set_new(o, "targets", targets);
    json_object_set_new(o, "addresses", addrs);
    json_object_set_new(o, "addresses_not_shown", u64(u->addrs_dropped));
    json_object_set_new(o, "attempts", u64(s->attempts_ok + failed));
    json_object_set_new(o, "attempts_ok", u64(s->attempts_ok));
    json_object_set_new(o, "attempts_failed", u64(failed));
    json_object_set_new(o, "failures", fail);
    json_object_set_new(o, "retries", u64(s->retries));
    json_object_set_new(o, "retries_budget_exceeded", u64(s->retries_budget_exceeded));
    json_object_set_new(o, "ejections", u64(s->ejections));
    /* hedging (docs/upstream.md): hedge attempts sent, and how they ended */
    json_object_set_new(o, "hedges", u64(s->hedges_won + s->hedges_lost + s->hedges_failed));
    json_object_set_new(o, "hedges_won", u64(s->hedges_won));
    json_object_set_new(o, "hedges_refused", u64(s->hedges_refused));
    json_object_set_new(o, "connections",
                        json_pack("{s:o,s:o,s:o,s:o,s:o}", "open", u64(s->conns_open), "idle", u64(s->conns_idle), "waiting",
                                  u64(u->waiting), "created", u64(s->conns_created), "reused", u64(s->conns_reused)));
    json_object_set_new(o, "queue_waits", u64(s->queue_waits));
    json_object_set_new(o, "tls_resumed", u64(s->tls_resumed));
    return o;
}

void est_console_render_state(est_strbuf_t *out, const est_metrics_snapshot_t *snaps, size_t n, const est_console_info_t *info,
                              est_console_history_t *h)
{
    sum_route_t *routes = NULL;
    size_t num_routes = 0;
    sum_upstream_t *ups = NULL;
    size_t num_ups = 0;
    est_dns_stats_t dns = {0};
    sum_dns_t dns_entries[MAX_DNS_SHOWN];
    size_t num_dns = 0;
    uint64_t client_conns = 0, redis[EST_REDIS_RESULT__COUNT] = {0};

    for (size_t w = 0; w != n; ++w) {
        const est_metrics_snapshot_t *s = snaps + w;
        if (!s->filled)
            continue;
        for (size_t i = 0; i != s->num_routes + 1; ++i) {
            int none = i == s->num_routes;
            add_route(route_slot(&routes, &num_routes, none ? NO_ROUTE_NAME : s->route_names[i], none), s->routes + i);
        }
        for (size_t i = 0; i != s->num_upstreams; ++i) {
            size_t j;
            for (j = 0; j != num_ups; ++j)
                if (strcmp(ups[j].name, s->upstream_names[i]) == 0)
                    break;
            if (j == num_ups) {
                ups = xrealloc(ups, (num_ups + 1) * sizeof(*ups));
                memset(ups + j, 0, sizeof(*ups));
                ups[j].name = s->upstream_names[i];
                ++num_ups;
            }
            est_upstream_stats_add(&ups[j].s, s->upstreams + i);
            if (s->upstream_states != NULL)
                add_upstream_state(ups + j, s->upstream_states + i);
        }
        for (size_t i = 0; i != s->num_dns_entries; ++i)
            add_dns(dns_entries, &num_dns, s->dns_entries + i);
        dns.queries_ok += s->dns.queries_ok;
        dns.queries_failed += s->dns.queries_failed;
        dns.cache_hits += s->dns.cache_hits;
        dns.cache_misses += s->dns.cache_misses;
        dns.stale_served += s->dns.stale_served;
        client_conns += s->open_connections;
        for (size_t r = 0; r != EST_REDIS_RESULT__COUNT; ++r)
            redis[r] += s->conns.redis[r];
    }

    json_t *doc = json_object(), *jr = json_array(), *ju = json_array();
    for (size_t i = 0; i != num_routes; ++i)
        json_array_append_new(jr, route_json(routes + i, i, h, info->mono));
    for (size_t i = 0; i != num_ups; ++i)
        json_array_append_new(ju, upstream_json(ups + i, info->config));
    json_object_set_new(doc, "time", json_real(info->now));
    json_object_set_new(doc, "routes", jr);
    json_object_set_new(doc, "upstreams", ju);
    json_t *jdns = json_pack("{s:o,s:o,s:o,s:o,s:o}", "queries_ok", u64(dns.queries_ok), "queries_failed", u64(dns.queries_failed),
                             "cache_hits", u64(dns.cache_hits), "cache_misses", u64(dns.cache_misses), "stale_served",
                             u64(dns.stale_served)),
           *jentries = json_array();
    for (size_t i = 0; i != num_dns; ++i) {
        json_t *e = dns_entry_json(dns_entries + i);
        if (e != NULL)
            json_array_append_new(jentries, e);
    }
    json_object_set_new(jdns, "entries", jentries);
    json_object_set_new(doc, "dns", jdns);
    json_object_set_new(doc, "cache", cache_json());

    uint64_t auth_total = 0, rate_total = 0, by_reason[EST_AUTH_REASON__COUNT] = {0};
    for (size_t i = 0; i != num_routes; ++i) {
        for (size_t k = 0; k != EST_AUTH_REASON__COUNT; ++k) {
            by_reason[k] += routes[i].auth_rejected[k];
            auth_total += routes[i].auth_rejected[k];
        }
        rate_total += routes[i].rate_limited;
    }
    json_t *reasons = json_object(), *jredis = json_object();
    for (size_t k = 0; k != EST_AUTH_REASON__COUNT; ++k)
        if (by_reason[k] != 0)
            json_object_set_new(reasons, est_auth_reason_label((est_auth_reason_t)k), u64(by_reason[k]));
    for (size_t r = 0; r != EST_REDIS_RESULT__COUNT; ++r)
        json_object_set_new(jredis, est_redis_result_label((est_redis_result_t)r), u64(redis[r]));
    json_object_set_new(doc, "policy",
                        json_pack("{s:o,s:o,s:o,s:o}", "auth_rejected", u64(auth_total), "auth_rejected_by_reason", reasons,
                                  "rate_limited", u64(rate_total), "redis", jredis));

    const est_process_metrics_t *p = info->proc;
    static const char *const results[3] = {NULL, "ok", "error"};
    json_t *last = json_object();
    int lr = info->last_reload >= 0 && info->last_reload <= 2 ? info->last_reload : 0;
    json_object_set_new(last, "result", lr != 0 ? json_string(results[lr]) : json_null());
    json_object_set_new(last, "time", lr != 0 ? json_real(info->last_reload_time) : json_null());
    json_object_set_new(doc, "config",
                        json_pack("{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:b,s:b,s:o}", "generation", u64(p->config_generation),
                                  "reloads_ok", u64(p->reloads_ok), "reloads_failed", u64(p->reloads_failed), "last_reload", last,
                                  "start_time", json_real(p->start_time), "workers", u64(p->workers), "workers_missing",
                                  u64(p->workers_missing), "ready", p->ready && !p->draining, "draining", p->draining != 0,
                                  "client_connections", u64(client_conns)));

    /* a sample at most once a second; only complete scrapes, so a missing worker's requests do not look like a drop */
    if (p->workers_missing == 0 && (h->count == 0 || info->mono - sample_at(h, h->count - 1)->mono >= SAMPLE_EVERY))
        history_push(h, info->mono, routes, num_routes);

    char *body = json_dumps(doc, JSON_COMPACT);
    if (body != NULL) {
        est_strbuf_appends(out, body);
        est_strbuf_append(out, "\n", 1);
        free(body);
    }
    json_decref(doc);
    free(routes);
    for (size_t i = 0; i != num_ups; ++i)
        free(ups[i].addrs);
    free(ups);
}
