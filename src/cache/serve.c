/*
 * estuary - the response cache and coalescing on the request path (serve.h), one code path for
 * proxy and aggregating routes (SPEC "Caching, coalescing and hedging", docs/cache.md).
 */
#include "cache/serve.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cache/global.h"

/* the worker's coalescing table (created on first use, destroyed by est_cache_req_worker_exit) */
static _Thread_local est_coalesce_t *coalesce_table;

void est_cache_req_worker_exit(void)
{
    if (coalesce_table != NULL) {
        est_coalesce_destroy(coalesce_table);
        coalesce_table = NULL;
    }
}

int64_t est_cache_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void est_cache_req_count(est_request_t *r, est_cache_result_t result)
{
    est_worker_metrics_t *m = r->svc->metrics;
    size_t i = r->route->index;
    if (m != NULL && i < m->num_routes)
        ++m->routes[i].cache[result];
}

int est_cache_req_header(void *ctx, const char *name, size_t name_len, const char **value, size_t *value_len)
{
    const est_cache_hdr_src_t *src = ctx;
    const h2o_headers_t *hs = src->headers;
    ssize_t i = h2o_find_header_by_str(hs, name, name_len, -1);
    if (i < 0)
        return 0;
    ssize_t j = h2o_find_header_by_str(hs, name, name_len, i);
    if (j < 0) {
        *value = hs->entries[i].value.base;
        *value_len = hs->entries[i].value.len;
        return 1;
    }
    /* several field lines: joined with ", " (RFC 9110 5.3) into the pool */
    size_t total = 0;
    for (ssize_t k = i; k >= 0; k = h2o_find_header_by_str(hs, name, name_len, k))
        total += hs->entries[k].value.len + 2;
    char *buf = h2o_mem_alloc_pool(src->pool, total), *dst = buf;
    for (ssize_t k = i; k >= 0; k = h2o_find_header_by_str(hs, name, name_len, k)) {
        if (dst != buf) {
            *dst++ = ',';
            *dst++ = ' ';
        }
        memcpy(dst, hs->entries[k].value.base, hs->entries[k].value.len);
        dst += hs->entries[k].value.len;
    }
    *value = buf;
    *value_len = (size_t)(dst - buf);
    return 1;
}

void est_cache_req_add_status(h2o_req_t *req, const est_cache_status_t *cs)
{
    char *buf = h2o_mem_alloc_pool(&req->pool, EST_CACHE_STATUS_MAX);
    size_t n = est_cache_status_format(buf, EST_CACHE_STATUS_MAX, cs);
    if (n != 0)
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("cache-status"), 0, NULL, buf, n);
}

void est_cache_req_forwarded(est_cache_req_t *c, int status, int stored)
{
    if (c->store == NULL)
        return;
    c->cs.fwd_status = status;
    c->cs.stored = stored;
    est_cache_req_count(c->r, c->cs.fwd == EST_CACHE_FWD_BYPASS || c->cs.fwd == EST_CACHE_FWD_METHOD ? EST_CACHE_RESULT_BYPASS
                                                                                                     : EST_CACHE_RESULT_MISS);
    est_cache_req_add_status(c->r->req, &c->cs);
}

/* every response from an entry is sent with one h2o_send: no callbacks needed (as h2o_send_inline does) */
static h2o_generator_t entry_generator = {NULL, NULL};

void est_cache_req_serve(est_cache_req_t *c, est_cache_entry_t *e, const est_cache_status_t *cs, int with_age)
{
    h2o_req_t *req = c->r->req;
    c->served = e;
    req->res.status = e->status;
    req->res.reason = est_status_reason(e->status);
    for (size_t i = 0; i != e->num_headers; ++i) {
        const est_cache_field_t *f = e->headers + i;
        const h2o_token_t *t = h2o_lookup_token(f->name, f->name_len);
        if (t != NULL)
            h2o_add_header(&req->pool, &req->res.headers, t, NULL, f->value, f->value_len);
        else
            h2o_add_header_by_str(&req->pool, &req->res.headers, f->name, f->name_len, 0, NULL, f->value, f->value_len);
    }
    if (with_age) { /* RFC 9111 5.1 */
        char *age = h2o_mem_alloc_pool(&req->pool, 16);
        size_t n = est_cache_age_format(age, 16, est_cache_current_age(&e->age, est_cache_wall_ms()));
        if (n != 0)
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_AGE, NULL, age, n);
    }
    if (c->store != NULL || cs->collapsed)
        est_cache_req_add_status(req, cs);
    est_cache_req_count(c->r, cs->collapsed                                          ? EST_CACHE_RESULT_COLLAPSED
                              : cs->detail != NULL && cs->fwd == EST_CACHE_FWD_STALE ? EST_CACHE_RESULT_ERROR_STALE
                              : cs->fwd == EST_CACHE_FWD_STALE                       ? EST_CACHE_RESULT_STALE
                                                                                     : EST_CACHE_RESULT_HIT);
    req->res.content_length = e->body_len;
    h2o_start_response(req, &entry_generator);
    h2o_iovec_t body = h2o_iovec_init(e->body, e->body_len);
    h2o_send(req, &body, c->r->method == EST_METHOD_HEAD || e->body_len == 0 ? 0 : 1, H2O_SEND_STATE_FINAL);
}

void est_cache_req_finish_flight(est_cache_req_t *c, est_cache_entry_t *reply, const char *errstr)
{
    est_coalesce_flight_t *f = c->flight;
    if (f == NULL)
        return;
    c->flight = NULL;
    est_coalesce_done(f, reply, errstr);
}

void est_cache_req_stored(est_cache_req_t *c)
{
    est_cache_req_count(c->r, EST_CACHE_RESULT_STORED);
    if (c->stale != NULL) { /* refreshed: its flag goes with it */
        est_cache_entry_release(c->stale);
        c->stale = NULL;
    }
}

int est_cache_req_stale_if_error_ok(const est_cache_req_t *c)
{
    const est_cache_entry_t *e = c->stale;
    if (e == NULL || e->stale_if_error_ms <= 0)
        return 0;
    return est_cache_current_age(&e->age, est_cache_wall_ms()) < e->lifetime_ms + e->stale_if_error_ms;
}

void est_cache_req_serve_stale_on_error(est_cache_req_t *c, int fwd_status)
{
    est_cache_entry_t *e = c->stale;
    c->stale = NULL;
    if (c->refreshing)
        est_cache_entry_refresh_done(e);     /* nothing new was stored: a later stale hit may try again */
    est_cache_req_finish_flight(c, e, NULL); /* the waiters get the same stale reply */
    est_cache_status_t cs = {0};
    cs.hit = 1;
    cs.fwd = EST_CACHE_FWD_STALE;
    cs.fwd_status = fwd_status;
    cs.detail = "stale-if-error";
    cs.has_ttl = 1;
    cs.ttl_ms = e->lifetime_ms - est_cache_current_age(&e->age, est_cache_wall_ms());
    est_cache_req_serve(c, e, &cs, 1);
}

const char *est_cache_req_shared_error(est_cache_req_t *c, int status, const char *code, const char *msg)
{
    size_t cap = strlen(code) + strlen(msg) + 8;
    char *s = h2o_mem_alloc_pool(&c->r->req->pool, cap);
    snprintf(s, cap, "%03d %s %s", status, code, msg);
    return s;
}

/* a waiter answers with the error its leader shared (est_cache_req_shared_error), or 503 */
static void send_shared_error(est_cache_req_t *c, const char *errstr)
{
    est_request_t *r = c->r;
    int status = 503;
    const char *code = "upstream_unavailable", *msg = "the request this one waited for failed";
    char cbuf[48];
    if (errstr != est_coalesce_err_shutdown && strlen(errstr) > 4 && errstr[3] == ' ' && errstr[0] >= '1' && errstr[0] <= '5' &&
        errstr[1] >= '0' && errstr[1] <= '9' && errstr[2] >= '0' && errstr[2] <= '9') {
        status = (errstr[0] - '0') * 100 + (errstr[1] - '0') * 10 + (errstr[2] - '0');
        const char *sp = strchr(errstr + 4, ' ');
        size_t n = sp != NULL ? (size_t)(sp - (errstr + 4)) : 0;
        if (sp != NULL && n < sizeof(cbuf)) {
            memcpy(cbuf, errstr + 4, n);
            cbuf[n] = '\0';
            code = cbuf;
            msg = sp + 1;
        }
    }
    est_cache_status_t cs = {0};
    cs.fwd = c->cs.fwd;
    cs.collapsed = 1;
    est_cache_req_add_status(r->req, &cs);
    est_send_error(r->req, status, code, msg, r->request_id);
}

/* a coalescing waiter is called back (never from inside its own join) */
static void on_waiter(est_coalesce_waiter_t *w, est_cache_entry_t *reply, const char *errstr)
{
    est_cache_req_t *c = w->data;
    c->waiting = 0;
    if (reply != NULL) {
        est_cache_status_t cs = {0};
        cs.fwd = c->cs.fwd;
        cs.fwd_status = reply->status;
        cs.collapsed = 1;
        est_cache_req_serve(c, reply, &cs, 0);
    } else if (errstr == est_coalesce_err_promoted) {
        c->flight = w->promoted; /* the leader's client left: this request leads now */
        c->ops->forward(c);
    } else if (errstr == est_coalesce_err_unshareable) {
        c->ops->forward(c);
    } else {
        send_shared_error(c, errstr);
    }
}

int est_cache_req_begin(est_cache_req_t *c, est_request_t *r, const est_cache_req_ops_t *ops, void *data)
{
    h2o_req_t *req = r->req;
    const est_route_conf_t *route = r->route;
    c->r = r;
    c->ops = ops;
    c->data = data;
    if (route->cache == NULL && !route->coalesce)
        return 0;
    c->hs = (est_cache_hdr_src_t){&req->headers, &req->pool};
    est_cache_req_facts_init(&c->rq, req->method.base, req->method.len);
    for (size_t i = 0; i != req->headers.size; ++i)
        est_cache_req_facts_add(&c->rq, req->headers.entries[i].name->base, req->headers.entries[i].name->len,
                                req->headers.entries[i].value.base, req->headers.entries[i].value.len);
    c->pol.max_entry = r->conf->cache_max_entry < SIZE_MAX ? (size_t)r->conf->cache_max_entry : SIZE_MAX;
    if (route->cache != NULL && (c->store = est_cache_global()) != NULL) {
        c->pol.ttl_ms = (int64_t)route->cache->ttl_ms;
        c->pol.stale_while_revalidate_ms = (int64_t)route->cache->stale_while_revalidate_ms;
        c->pol.stale_if_error_ms = (int64_t)route->cache->stale_if_error_ms;
        c->pol.shared = route->cache->shared;
    }
    const char *detail = NULL;
    est_cache_fwd_t fwd = EST_CACHE_FWD_MISS;
    est_cache_req_action_t act = est_cache_request_action(&c->rq, &c->pol, &fwd, &detail);
    c->cs.fwd = fwd == EST_CACHE_FWD_NONE ? EST_CACHE_FWD_MISS : fwd;
    c->cs.detail = detail;
    if (act == EST_CACHE_REQ_BYPASS)
        return 0;

    /* the primary key; HEAD looks up the GET entry (it is answered without the body) */
    est_cache_span_t *vary = NULL;
    size_t nvary = route->cache != NULL ? route->cache->num_vary : 0;
    if (nvary != 0) {
        vary = h2o_mem_alloc_pool(&req->pool, sizeof(*vary) * nvary);
        for (size_t i = 0; i != nvary; ++i)
            vary[i] = (est_cache_span_t){route->cache->vary[i], strlen(route->cache->vary[i])};
    }
    est_cache_key_parts_t parts = {
        .route = {route->path, strlen(route->path)},
        .path = {r->path.base, r->path.len},
        .method = {"GET", 3},
        .query = {r->query.base, r->query.len},
        .vary = vary,
        .num_vary = nvary,
    };
    char kbuf[EST_CACHE_MAX_KEY];
    size_t klen = est_cache_key_build(kbuf, sizeof(kbuf), &parts, est_cache_req_header, &c->hs);
    if (klen == 0) { /* a key over EST_CACHE_MAX_KEY: not cached */
        c->cs.fwd = EST_CACHE_FWD_BYPASS;
        c->cs.detail = "key-too-large";
        return 0;
    }
    char *key = h2o_mem_alloc_pool(&req->pool, klen);
    memcpy(key, kbuf, klen);
    c->key = key;
    c->key_len = klen;
    c->may_store = c->store != NULL && c->rq.is_get;

    if (act == EST_CACHE_REQ_LOOKUP && c->store != NULL) {
        est_cache_miss_t miss = EST_CACHE_MISS_URI;
        est_cache_entry_t *e = est_cache_store_lookup(c->store, c->key, c->key_len, est_cache_req_header, &c->hs, &miss);
        if (e == NULL) {
            c->cs.fwd = miss == EST_CACHE_MISS_VARY ? EST_CACHE_FWD_VARY_MISS : EST_CACHE_FWD_URI_MISS;
        } else {
            int64_t age = est_cache_current_age(&e->age, est_cache_wall_ms());
            est_cache_status_t cs = {0};
            cs.hit = 1;
            cs.has_ttl = 1;
            cs.ttl_ms = e->lifetime_ms - age;
            switch (est_cache_usable(age, e->lifetime_ms, e->stale_while_revalidate_ms, e->stale_if_error_ms,
                                     c->rq.has_cc ? &c->rq.cc : NULL)) {
            case EST_CACHE_FRESH:
                est_cache_req_serve(c, e, &cs, 1);
                return 1;
            case EST_CACHE_STALE_REVALIDATE:
                cs.fwd = EST_CACHE_FWD_STALE;
                if (!est_cache_entry_try_refresh(e)) { /* the one refresh is under way already */
                    est_cache_req_serve(c, e, &cs, 1);
                    return 1;
                }
                if (ops->refresh != NULL && ops->refresh(c, e) == 0) { /* in the background: this client gets the stale reply now */
                    est_cache_req_serve(c, e, &cs, 1);
                    return 1;
                }
                /* no background refresh: this request carries the refresh itself (the others
                 * are served stale meanwhile); at dispose, a refresh that stored nothing
                 * releases the flag */
                c->stale = e;
                c->refreshing = 1;
                c->cs.fwd = EST_CACHE_FWD_STALE;
                break;
            case EST_CACHE_STALE_IF_ERROR:
                c->stale = e; /* answers if the backend fails */
                c->cs.fwd = EST_CACHE_FWD_STALE;
                break;
            default:
                c->cs.fwd = age < e->lifetime_ms ? EST_CACHE_FWD_REQUEST : EST_CACHE_FWD_STALE;
                est_cache_entry_release(e);
                break;
            }
        }
        if (c->stale == NULL && (c->rq.cc.flags & EST_CC_ONLY_IF_CACHED)) { /* RFC 9111 5.2.1.7 */
            est_cache_req_add_status(req, &c->cs);
            est_send_error(req, 504, "not_cached", "only-if-cached: no stored reply", r->request_id);
            return 1;
        }
    }
    if (route->coalesce && c->rq.is_get && !c->refreshing) {
        if (coalesce_table == NULL)
            coalesce_table = est_coalesce_create(0);
        if (coalesce_table != NULL) {
            c->waiter.cb = on_waiter;
            c->waiter.data = c;
            est_coalesce_flight_t *f = NULL;
            switch (est_coalesce_join(coalesce_table, c->key, c->key_len, &c->waiter, &f)) {
            case EST_COALESCE_LEADER:
                c->flight = f;
                break;
            case EST_COALESCE_WAITER:
                c->waiting = 1;
                return 1;
            default:
                break;
            }
        }
    }
    return 0;
}

void est_cache_req_dispose(est_cache_req_t *c)
{
    if (c->waiting) { /* the client left while waiting: the leader goes on */
        c->waiting = 0;
        est_coalesce_leave(&c->waiter);
    }
    if (c->flight != NULL) {
        est_coalesce_flight_t *f = c->flight;
        c->flight = NULL;
        est_coalesce_abandon(f); /* the oldest waiter leads now */
    }
    if (c->stale != NULL) {
        if (c->refreshing)
            est_cache_entry_refresh_done(c->stale); /* the refresh stored nothing */
        est_cache_entry_release(c->stale);
        c->stale = NULL;
    }
    if (c->served != NULL) {
        est_cache_entry_release(c->served);
        c->served = NULL;
    }
}

est_cache_entry_t *est_cache_req_entry_new(const char *key, size_t key_len, int status, const est_cache_field_t *headers,
                                           size_t num_headers, const est_cache_resp_facts_t *rs, est_cache_hdr_src_t *hs,
                                           const est_cache_decision_t *d, size_t max_entry, int64_t content_length,
                                           int64_t request_time_ms, int64_t now_ms)
{
    est_cache_age_facts_t af;
    est_cache_age_facts_set(&af, rs, request_time_ms, now_ms);
    est_cache_entry_init_t in;
    memset(&in, 0, sizeof(in));
    in.key = key;
    in.key_len = key_len;
    in.status = status;
    in.headers = headers;
    in.num_headers = num_headers;
    in.vary = rs->vary;
    in.num_vary = rs->num_vary;
    in.get_header = est_cache_req_header;
    in.ctx = hs;
    in.decision = d;
    in.age = &af;
    in.max_bytes = max_entry;
    in.body_reserve = content_length >= 0 && (uint64_t)content_length <= in.max_bytes ? (size_t)content_length : 0;
    in.now_ms = now_ms;
    return est_cache_entry_create(&in);
}

h2o_header_t *est_cache_copy_headers(h2o_mem_pool_t *pool, const h2o_header_t *src, size_t n)
{
    h2o_header_t *dst = h2o_mem_alloc_pool(pool, sizeof(*dst) * (n ? n : 1));
    for (size_t i = 0; i != n; ++i) {
        dst[i] = src[i];
        dst[i].orig_name = NULL;
        if (!h2o_iovec_is_token(src[i].name)) {
            h2o_iovec_t *name = h2o_mem_alloc_pool(pool, sizeof(*name));
            *name = h2o_strdup(pool, src[i].name->base, src[i].name->len);
            dst[i].name = name;
        }
        dst[i].value = h2o_strdup(pool, src[i].value.base, src[i].value.len);
    }
    return dst;
}

void est_cache_refresh_init(est_cache_refresh_t *rf, const est_cache_req_t *c, const h2o_headers_t *req_headers,
                            void (*free_fn)(est_cache_refresh_t *))
{
    h2o_mem_init_pool(&rf->pool);
    rf->svc = c->r->svc;
    rf->store = c->store;
    rf->pol = c->pol;
    rf->rq = c->rq;
    rf->rq.is_get = 1;
    rf->rq.is_head = 0;
    rf->key = h2o_mem_alloc_pool(&rf->pool, c->key_len ? c->key_len : 1);
    if (c->key_len != 0)
        memcpy(rf->key, c->key, c->key_len);
    rf->key_len = c->key_len;
    rf->headers.entries = est_cache_copy_headers(&rf->pool, req_headers->entries, req_headers->size);
    rf->headers.size = rf->headers.capacity = req_headers->size;
    rf->hs = (est_cache_hdr_src_t){&rf->headers, &rf->pool};
    rf->free_fn = free_fn;
}

void est_cache_refresh_start(est_cache_refresh_t *rf, est_cache_refresh_t **list, est_cache_entry_t *stale)
{
    rf->stale = stale;
    est_cache_entry_addref(stale);
    rf->svc->pin(rf->svc);
    rf->list = list;
    rf->prev = NULL;
    if ((rf->next = *list) != NULL)
        (*list)->prev = rf;
    *list = rf;
}

static void on_refresh_free_timer(h2o_timeout_entry_t *entry)
{
    est_cache_refresh_free(H2O_STRUCT_FROM_MEMBER(est_cache_refresh_t, free_timer, entry));
}

void est_cache_refresh_end(est_cache_refresh_t *rf, int stored)
{
    rf->ended = 1;
    if (rf->stale != NULL) {
        if (!stored)
            est_cache_entry_refresh_done(rf->stale);
        est_cache_entry_release(rf->stale);
        rf->stale = NULL;
    }
    rf->free_timer.cb = on_refresh_free_timer;
    h2o_timeout_link(rf->svc->loop, rf->svc->get_timeout(rf->svc, 0), &rf->free_timer);
}

void est_cache_refresh_free(est_cache_refresh_t *rf)
{
    if (h2o_timeout_is_linked(&rf->free_timer))
        h2o_timeout_unlink(&rf->free_timer);
    est_services_t *pinned = NULL;
    if (rf->list != NULL) {
        if (rf->prev != NULL)
            rf->prev->next = rf->next;
        else
            *rf->list = rf->next;
        if (rf->next != NULL)
            rf->next->prev = rf->prev;
        pinned = rf->svc;
    }
    h2o_mem_clear_pool(&rf->pool);
    rf->free_fn(rf);
    if (pinned != NULL)
        pinned->unpin(pinned); /* last: it may retire the view (later, from the loop) */
}
