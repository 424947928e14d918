/*
 * estuary - the rate-limit stage: GCRA per key, "store": "local" or "redis" (SPEC "Access
 * control and traffic policy"; docs/ratelimit.md).
 *
 * Keys. A request's key is one marker byte and a value: 'v' + the value itself, 'h' + the
 * hex SHA-256 of a value longer than MAX_KEY_VALUE bytes (keys stay bounded, in memory and in
 * Redis); 'j' / 'k' the same for a claim that is not a string (its compact JSON); or '-'
 * alone when the value is absent (no such header, no such claim, no JWT, an unknown client
 * address): every request without the value shares that one "absent" bucket, so omitting a
 * header never escapes the limit, it only lands in a crowded bucket. The markers keep an
 * absent value apart from any present one, even the empty string.
 *
 * Local store: one est_rlstore_t per policy (rlstore.h: lock-free, bounded), kept in a
 * process-wide registry so that a reload that leaves a policy unchanged (same name, rate, per,
 * burst and key) keeps its buckets, while a changed policy starts afresh.
 *
 * Replies (draft-ietf-httpapi-ratelimit-headers-08 as SPEC writes them):
 *   RateLimit-Policy: "NAME";q=BURST+1;w=PER      (PER in seconds, rounded up)
 *   RateLimit: "NAME";r=REMAINING;t=SECONDS
 * An allowed request gets both (added to req->res.headers, so the backend's reply carries
 * them): t is the time until the key's bucket is full again. A refused one gets 429
 * rate_limited with both and Retry-After (RFC 9110 10.2.3, delay-seconds); there t is the
 * time until the next request is allowed, equal to Retry-After. Seconds are rounded up, so a
 * client that waits that long is never refused for having come too early.
 */
#include "policy/gate.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/sha.h>

#include "common/log.h"
#include "policy/gcra.h"
#include "policy/redis.h"
#include "policy/rlstore.h"

/* values longer than this are replaced by their SHA-256 in hex */
#define MAX_KEY_VALUE 256
/* marker + value: the largest local key */
#define MAX_KEY (1 + MAX_KEY_VALUE)

/* A local store in the registry, shared by every generation whose policy matches it */
typedef struct rl_entry rl_entry_t;
struct rl_entry {
    rl_entry_t *next;
    char *name;
    uint64_t rate, per_ms, burst;
    est_rl_key_kind_t key_kind;
    char *key_name;
    atomic_size_t refs; /* generations holding it; 0: unused, freed by the next sweep */
    est_rlstore_t *store;
};

/* One policy of a generation */
typedef struct rl_policy {
    const est_rate_limit_conf_t *conf;
    est_gcra_params_t params;
    rl_entry_t *entry;     /* "store": "local" (and used by a route); NULL otherwise */
    h2o_iovec_t sf_name;   /* the name as a structured-field string, quotes included */
    h2o_iovec_t policy_hv; /* the RateLimit-Policy value */
} rl_policy_t;

struct est_rl_gen {
    rl_policy_t *policies; /* indexed like est_config_t.rate_limits */
    size_t num_policies;
    est_rl_gen_t *prev; /* `newest` when this one was created */
};

struct est_rl_view {
    est_redis_client_t *redis; /* NULL unless a route uses a "redis" policy */
};

/* One request waiting for Redis (in the request's pool) */
typedef struct rl_wait {
    est_gate_t *g;
    const rl_policy_t *pol;
    est_redis_call_t *call;
} rl_wait_t;

/*
 * The registry of local stores. Its mutex is taken only by est_rl_gen_create and
 * est_rl_shutdown, on the main thread when a configuration is loaded or at exit: never on the
 * request path (a request reaches its store through its generation, without the registry)
 * and never by est_rl_gen_free, which may run on a worker thread when it releases the last
 * reference to a generation: that only decrements the entry's atomic count, and the next
 * est_rl_gen_create (or est_rl_shutdown) frees entries left at 0. After est_rl_shutdown
 * (workers gone) an entry still referenced is unlinked, and its last est_rl_gen_free frees it.
 *
 * Which state a new generation keeps: that of the policies equal to the ones of the
 * generation it replaces, `newest` (the last one created that was not freed at once: a reload
 * refused after est_rl_gen_create, e.g. a listener that cannot be bound, frees its generation
 * and `newest` goes back to the one still serving). An older generation that some worker still
 * holds never lends its state: a policy changed and changed back starts afresh. `newest` is
 * always a generation the main thread holds (the serving one, or one being created), so the
 * main thread may read it; a worker freeing an older generation only fails its CAS on it.
 */
static pthread_mutex_t registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static rl_entry_t *registry;
static atomic_int registry_shut;
static _Atomic(est_rl_gen_t *) newest;

static int str_eq(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

static void entry_free(rl_entry_t *e)
{
    est_rlstore_destroy(e->store);
    free(e->name);
    free(e->key_name);
    free(e);
}

/* frees every entry no generation holds; registry_mutex held */
static void sweep_locked(void)
{
    rl_entry_t **p = &registry;
    while (*p != NULL) {
        rl_entry_t *e = *p;
        if (atomic_load_explicit(&e->refs, memory_order_acquire) == 0) {
            *p = e->next;
            entry_free(e);
        } else {
            p = &e->next;
        }
    }
}

static int same_policy(const rl_entry_t *e, const est_rate_limit_conf_t *rc)
{
    return str_eq(e->name, rc->name) && e->rate == rc->rate && e->per_ms == rc->per_ms && e->burst == rc->burst &&
           e->key_kind == rc->key_kind && str_eq(e->key_name, rc->key_name);
}

/* The entry for `rc` with a reference taken: the one of the generation being replaced (`cur`)
 * when it has the same policy, else a new one; registry_mutex held */
static rl_entry_t *acquire_locked(const est_rl_gen_t *cur, const est_rate_limit_conf_t *rc)
{
    for (size_t i = 0; cur != NULL && i != cur->num_policies; ++i) {
        rl_entry_t *e = cur->policies[i].entry;
        if (e != NULL && same_policy(e, rc)) {
            atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
            return e;
        }
    }
    rl_entry_t *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->name = strdup(rc->name != NULL ? rc->name : "");
    e->key_name = rc->key_name != NULL ? strdup(rc->key_name) : NULL;
    e->store = est_rlstore_create(EST_RLSTORE_DEFAULT_SLOTS);
    if (e->name == NULL || (rc->key_name != NULL && e->key_name == NULL) || e->store == NULL) {
        entry_free(e);
        return NULL;
    }
    e->rate = rc->rate;
    e->per_ms = rc->per_ms;
    e->burst = rc->burst;
    e->key_kind = rc->key_kind;
    atomic_init(&e->refs, 1);
    e->next = registry;
    registry = e;
    return e;
}

static void entry_release(rl_entry_t *e)
{
    if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1 && atomic_load(&registry_shut))
        entry_free(e); /* unlinked by est_rl_shutdown: this was the last holder */
}

static uint64_t ceil_seconds(uint64_t us)
{
    return us / 1000000 + (us % 1000000 != 0);
}

/* `"NAME"` as an RFC 8941 sf-string: '"' and '\' escaped, bytes outside 0x20-0x7e as '_' */
static char *sf_string(const char *name, size_t *len)
{
    size_t n = strlen(name);
    char *s = malloc(2 * n + 3), *p = s;
    if (s == NULL)
        return NULL;
    *p++ = '"';
    for (size_t i = 0; i != n; ++i) {
        unsigned char c = (unsigned char)name[i];
        if (c == '"' || c == '\\')
            *p++ = '\\';
        *p++ = c >= 0x20 && c <= 0x7e ? (char)c : '_';
    }
    *p++ = '"';
    *p = '\0';
    *len = (size_t)(p - s);
    return s;
}

static int policy_init(rl_policy_t *pol, const est_rate_limit_conf_t *rc)
{
    pol->conf = rc;
    pol->params = est_gcra_params(rc->rate, rc->per_ms, rc->burst);
    if ((pol->sf_name.base = sf_string(rc->name != NULL ? rc->name : "", &pol->sf_name.len)) == NULL)
        return -1;
    uint64_t q = rc->burst == UINT64_MAX ? UINT64_MAX : rc->burst + 1;
    uint64_t w = ceil_seconds(rc->per_ms > UINT64_MAX / 1000 ? UINT64_MAX : rc->per_ms * 1000);
    size_t cap = pol->sf_name.len + 64;
    if ((pol->policy_hv.base = malloc(cap)) == NULL)
        return -1;
    int n = snprintf(pol->policy_hv.base, cap, "%s;q=%" PRIu64 ";w=%" PRIu64, pol->sf_name.base, q, w != 0 ? w : 1);
    pol->policy_hv.len = n > 0 && (size_t)n < cap ? (size_t)n : 0;
    return 0;
}

est_rl_gen_t *est_rl_gen_create(const est_config_t *conf, int *failed)
{
    if (conf->num_rate_limits == 0) {
        atomic_store(&newest, NULL); /* the next generation replaces one without local state */
        return NULL;
    }
    est_rl_gen_t *rg = calloc(1, sizeof(*rg));
    if (rg == NULL || (rg->policies = calloc(conf->num_rate_limits, sizeof(*rg->policies))) == NULL) {
        free(rg);
        est_log_error("rate limits: out of memory");
        *failed = 1;
        return NULL;
    }
    rg->num_policies = conf->num_rate_limits;
    /* a store only for a policy some route uses: each costs EST_RLSTORE_DEFAULT_SLOTS * 8 bytes */
    unsigned char *used = calloc(conf->num_rate_limits, 1);
    int needs_redis = 0;
    for (size_t i = 0; used != NULL && i != conf->num_routes; ++i) {
        const est_rate_limit_conf_t *rc = conf->routes[i].rate_limit;
        if (rc != NULL && rc->index < conf->num_rate_limits) {
            used[rc->index] = 1;
            needs_redis |= rc->store == EST_RL_STORE_REDIS;
        }
    }
    if (used == NULL)
        goto Error;
    if (needs_redis && conf->redis == NULL) { /* the config check refuses it; never run without a store */
        est_log_error("rate limits: a \"store\": \"redis\" policy is used but \"redis\" is not configured");
        goto Error;
    }
    for (size_t i = 0; i != conf->num_rate_limits; ++i)
        if (policy_init(rg->policies + i, conf->rate_limits + i) != 0)
            goto Error;

    pthread_mutex_lock(&registry_mutex);
    sweep_locked();
    est_rl_gen_t *cur = atomic_load(&newest);
    int oom = 0;
    for (size_t i = 0; i != conf->num_rate_limits; ++i) {
        const est_rate_limit_conf_t *rc = conf->rate_limits + i;
        if (used[i] && rc->store == EST_RL_STORE_LOCAL && (rg->policies[i].entry = acquire_locked(cur, rc)) == NULL) {
            oom = 1;
            break;
        }
    }
    if (!oom) {
        rg->prev = cur;
        atomic_store(&newest, rg);
    }
    pthread_mutex_unlock(&registry_mutex);
    if (oom) {
        est_log_error("rate limits: out of memory for the local stores");
        goto Error;
    }
    free(used);
    return rg;
Error:
    free(used);
    est_rl_gen_free(rg);
    *failed = 1;
    return NULL;
}

void est_rl_gen_free(est_rl_gen_t *rg)
{
    if (rg == NULL)
        return;
    /* a generation freed while it is the newest was refused (or it is the exit): the one it
     * would have replaced is the newest again (see the registry's comment) */
    est_rl_gen_t *self = rg;
    atomic_compare_exchange_strong(&newest, &self, atomic_load(&registry_shut) ? NULL : rg->prev);
    for (size_t i = 0; i != rg->num_policies; ++i) {
        rl_policy_t *pol = rg->policies + i;
        if (pol->entry != NULL)
            entry_release(pol->entry);
        free(pol->sf_name.base);
        free(pol->policy_hv.base);
    }
    free(rg->policies);
    free(rg);
}

est_rl_view_t *est_rl_view_create(est_policy_view_t *pv, int *failed)
{
    const est_config_t *conf = pv->conf;
    int needs_redis = 0;
    for (size_t i = 0; i != conf->num_routes; ++i)
        needs_redis |= conf->routes[i].rate_limit != NULL && conf->routes[i].rate_limit->store == EST_RL_STORE_REDIS;
    if (!needs_redis || conf->redis == NULL)
        return NULL; /* nothing per worker: the local stores live in the generation */
    est_rl_view_t *rv = calloc(1, sizeof(*rv));
    if (rv == NULL || (rv->redis = est_redis_client_create(pv, conf->redis)) == NULL) {
        free(rv);
        est_log_error("worker %zu: cannot create the redis client for rate limits", pv->worker_id);
        *failed = 1;
        return NULL;
    }
    return rv;
}

void est_rl_view_destroy(est_rl_view_t *rv)
{
    if (rv == NULL)
        return;
    est_redis_client_destroy(rv->redis);
    free(rv);
}

void est_rl_shutdown(void)
{
    pthread_mutex_lock(&registry_mutex);
    atomic_store(&registry_shut, 1);
    atomic_store(&newest, NULL);
    sweep_locked();
    /* what generations still hold (the server releases its last ones after this) is theirs now */
    while (registry != NULL) {
        rl_entry_t *e = registry;
        registry = e->next;
        e->next = NULL;
    }
    pthread_mutex_unlock(&registry_mutex);
}

/* The key for `value` (any bytes) into `buf` (MAX_KEY bytes): `marker` and the value, or
 * `hmarker` and the value's SHA-256 in hex when it is long; returns the length */
static size_t key_from_marked(char *buf, char marker, char hmarker, const char *value, size_t len)
{
    if (len <= MAX_KEY_VALUE) {
        buf[0] = marker;
        if (len != 0)
            memcpy(buf + 1, value, len);
        return 1 + len;
    }
    unsigned char md[SHA256_DIGEST_LENGTH];
    static const char hex[] = "0123456789abcdef";
    SHA256((const unsigned char *)value, len, md);
    buf[0] = hmarker;
    for (size_t i = 0; i != sizeof(md); ++i) {
        buf[1 + 2 * i] = hex[md[i] >> 4];
        buf[2 + 2 * i] = hex[md[i] & 15];
    }
    return 1 + 2 * sizeof(md);
}

static size_t key_from_value(char *buf, const char *value, size_t len)
{
    return key_from_marked(buf, 'v', 'h', value, len);
}

/* the claim's value: a string as it is, anything else as compact JSON under its own markers
 * (the number 7 and the string "7" are different keys) */
static size_t key_from_claim(char *buf, const json_t *v)
{
    if (json_is_string(v))
        return key_from_value(buf, json_string_value(v), json_string_length(v));
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
    if (s == NULL) {
        buf[0] = '-';
        return 1;
    }
    size_t n = key_from_marked(buf, 'j', 'k', s, strlen(s));
    free(s);
    return n;
}

/* The request's key for policy `rc` into `buf` (MAX_KEY bytes); returns its length */
static size_t build_key(est_gate_t *g, const est_rate_limit_conf_t *rc, char *buf)
{
    est_request_t *r = g->r;
    switch (rc->key_kind) {
    case EST_RL_KEY_CLIENT_IP:
        if (r->client_ip.len != 0)
            return key_from_value(buf, r->client_ip.base, r->client_ip.len);
        break;
    case EST_RL_KEY_ROUTE:
        /* the route's template: stable across reloads that reorder routes */
        if (r->route->path != NULL)
            return key_from_value(buf, r->route->path, strlen(r->route->path));
        break;
    case EST_RL_KEY_HEADER:
        if (rc->key_name != NULL) {
            /* the first field of that name (names are lower-case on both sides) */
            ssize_t i = h2o_find_header_by_str(&r->req->headers, rc->key_name, strlen(rc->key_name), -1);
            if (i != -1)
                return key_from_value(buf, r->req->headers.entries[i].value.base, r->req->headers.entries[i].value.len);
        }
        break;
    case EST_RL_KEY_CLAIM:
        if (rc->key_name != NULL && g->claims != NULL && json_is_object(g->claims)) {
            const json_t *v = json_object_get(g->claims, rc->key_name);
            if (v != NULL)
                return key_from_claim(buf, v);
        }
        break;
    }
    buf[0] = '-'; /* absent: the policy's shared bucket */
    return 1;
}

static void add_header(h2o_req_t *req, const char *name, size_t name_len, h2o_iovec_t value)
{
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, name_len, 0, NULL, value.base, value.len);
}

static void add_ratelimit_header(h2o_req_t *req, const rl_policy_t *pol, uint64_t remaining, uint64_t t)
{
    size_t cap = pol->sf_name.len + 64;
    char *buf = h2o_mem_alloc_pool(&req->pool, cap);
    int n = snprintf(buf, cap, "%s;r=%" PRIu64 ";t=%" PRIu64, pol->sf_name.base, remaining, t);
    if (n > 0 && (size_t)n < cap)
        add_header(req, H2O_STRLIT("ratelimit"), h2o_iovec_init(buf, (size_t)n));
}

/* Applies a GCRA decision: PASS with the headers added, or DONE after the 429 */
static est_gate_verdict_t apply(est_gate_t *g, const rl_policy_t *pol, const est_gcra_result_t *res)
{
    h2o_req_t *req = g->r->req;
    if (pol->policy_hv.len != 0)
        add_header(req, H2O_STRLIT("ratelimit-policy"), pol->policy_hv);
    if (res->allowed) {
        uint64_t t = ceil_seconds(res->reset_us);
        add_ratelimit_header(req, pol, res->remaining, t != 0 ? t : 1);
        return EST_GATE_PASS;
    }
    uint64_t retry = ceil_seconds(res->retry_after_us);
    if (retry == 0)
        retry = 1;
    char *ra = h2o_mem_alloc_pool(&req->pool, 24);
    int n = snprintf(ra, 24, "%" PRIu64, retry);
    add_header(req, H2O_STRLIT("retry-after"), h2o_iovec_init(ra, (size_t)n));
    add_ratelimit_header(req, pol, 0, retry);
    est_gate_count_rate_limited(g);
    est_send_error(req, 429, "rate_limited", "rate limit exceeded", g->r->request_id);
    return EST_GATE_DONE;
}

/* Redis did not answer (down, slow, error reply, queue full): on_failure decides */
static est_gate_verdict_t store_failed(est_gate_t *g)
{
    const est_redis_conf_t *rc = g->view->conf->redis;
    if (rc != NULL && rc->on_failure_deny) {
        est_send_error(g->r->req, 503, "upstream_unavailable", "rate limit store unavailable", g->r->request_id);
        return EST_GATE_DONE;
    }
    return EST_GATE_PASS; /* allow: no RateLimit header, nothing was counted */
}

static void on_redis_cancel(est_gate_t *g)
{
    rl_wait_t *w = g->pending;
    if (w != NULL && w->call != NULL)
        est_redis_call_cancel(w->call);
}

static void on_redis_reply(void *data, int ok, const est_gcra_result_t *res)
{
    rl_wait_t *w = data;
    est_gate_t *g = w->g;
    w->call = NULL;
    est_gate_resume(g, ok ? apply(g, w->pol, res) : store_failed(g));
}

est_gate_verdict_t est_ratelimit_stage(est_gate_t *g)
{
    const est_rate_limit_conf_t *rc = g->r->route->rate_limit;
    const est_rl_gen_t *rg = g->view->gen->rl;
    if (rc == NULL || rg == NULL || rc->index >= rg->num_policies)
        return EST_GATE_PASS;
    const rl_policy_t *pol = rg->policies + rc->index;
    char key[MAX_KEY];
    size_t key_len = build_key(g, rc, key);

    if (rc->store == EST_RL_STORE_LOCAL) {
        if (pol->entry == NULL)
            return EST_GATE_PASS; /* cannot happen: every used local policy has its store */
        est_rlstore_t *s = pol->entry->store;
        est_gcra_result_t res;
        est_rlstore_decide(s, est_rlstore_hash(s, key, key_len), &pol->params, est_rlstore_now_us(), &res);
        return apply(g, pol, &res);
    }

    est_rl_view_t *rv = g->view->rl;
    if (rv == NULL || rv->redis == NULL)
        return store_failed(g);
    /* the Redis key names the policy: "<name length>:<name>:<key>", unambiguous for any name */
    size_t name_len = strlen(rc->name != NULL ? rc->name : "");
    size_t cap = name_len + key_len + 32;
    char *rkey = h2o_mem_alloc_pool(&g->r->req->pool, cap);
    int n = snprintf(rkey, cap, "%zu:%s:", name_len, rc->name != NULL ? rc->name : "");
    if (n <= 0 || (size_t)n + key_len > cap)
        return store_failed(g);
    memcpy(rkey + n, key, key_len);
    rl_wait_t *w = h2o_mem_alloc_pool(&g->r->req->pool, sizeof(*w));
    w->g = g;
    w->pol = pol;
    if ((w->call = est_redis_gcra(rv->redis, rkey, (size_t)n + key_len, &pol->params, on_redis_reply, w)) == NULL)
        return store_failed(g); /* not even queued: a failure now */
    g->pending = w;
    g->cancel = on_redis_cancel;
    return EST_GATE_WAIT;
}
