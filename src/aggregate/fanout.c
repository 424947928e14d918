/*
 * estuary - fan-out for aggregating routes.
 *
 * One fanout_t per request, in the request's pool; one branch per backend. Backends without
 * dependencies start at once; a backend naming earlier groups (SPEC "Dependent backends")
 * starts when all of them have finished, or fails with `dependency_failed` without being
 * called when one of them failed or contributed nothing. Replies are buffered whole, parsed and
 * transformed as they complete (merge.h: spans into the buffer, nothing converted), and merged
 * in config order once every branch has finished. The route timeout is one timer for the whole
 * fan-out, chains included: when it fires, the branches still running are cancelled and count
 * as timeouts, those not started yet too, and the reply is built from what has arrived. The
 * request's dispose callback (est_alloc_disposable) cancels whatever is still running (client
 * gone, HTTP/2 stream reset) and frees every buffer, so nothing outlives the request.
 *
 * Memory (SPEC "Client limits"): a reply is bounded by max_backend_reply; every byte a fan-out
 * holds (reply buffers, their indexes, the merged body) is reserved in one process-wide counter
 * bounded by aggregate_memory, as it grows; a reply that would pass the bound fails with
 * `reply_too_large`. The replies and their indexes are freed as soon as the body is written,
 * the body when the request ends (it is handed to h2o without a copy).
 *
 * Response cache and coalescing (cache/serve.h, docs/cache.md "Wiring: aggregating routes"):
 * the same lookup as proxy routes runs before any backend is prepared; a fan-out stores only a
 * complete reply (every branch merged), copied once into an entry living the route's ttl, and
 * hands its reply or its error to the identical requests that waited on it. Under
 * stale-while-revalidate the one refresh of an entry is a fan-out owned by the worker (refresh_t,
 * below), detached from the request that started it.
 */
#include "aggregate/fanout.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "aggregate/merge.h"
#include "cache/serve.h"
#include "common/trim.h"

/* Bytes held by every fan-out of the process (all workers): reply buffers, indexes, bodies.
 * One atomic counter shared by the worker threads because the bound (aggregate_memory) is
 * for the process, not per worker; relaxed order is enough, it orders nothing else. */
static _Atomic uint64_t held_bytes;

/* after a fan-out that held this much, free memory is handed back to the system */
#define TRIM_AFTER (32u << 20)

enum { BR_WAITING, BR_RUNNING, BR_DONE };

typedef struct st_branch_t {
    struct st_fanout_t *f;
    const est_backend_conf_t *b;
    size_t index;
    int state;
    est_exchange_t *x; /* while running */
    est_upstream_request_t ureq;
    char *body; /* the reply, malloc'd, `cap` bytes reserved in held_bytes */
    size_t len, cap;
    est_reply_t rep; /* its index and transformed value, spans into `body` */
    size_t rep_held; /* bytes of rep reserved in held_bytes */
    int status;
    est_uerr_t err;
    char desc[24]; /* Server-Timing desc: the status, or why it failed */
    int failed;
    int timed_out;
    est_trace_exchange_t *trace; /* its access-log entry, NULL if none */
    int64_t start_us, end_us;
} branch_t;

struct st_refresh_t;

typedef struct st_fanout_t {
    est_request_t *r;             /* the client's request; NULL for a background refresh */
    struct st_refresh_t *refresh; /* the background refresh this fan-out is, or NULL */
    est_services_t *svc;
    const est_config_t *conf;
    const est_route_conf_t *route;
    size_t num, pending;
    h2o_timeout_entry_t deadline;
    h2o_iovec_t method;
    int responded;
    int scheduling, reschedule;
    int64_t start_us;
    uint64_t peak; /* bytes this fan-out held when it wrote its body, for TRIM_AFTER */
    est_jarena_t arena;
    size_t arena_held; /* bytes of `arena` reserved */
    jspan_buf_t out;   /* the merged body, until the request ends */
    size_t out_held;   /* bytes of `out` reserved */
    h2o_generator_t generator;
    est_cache_req_t cache; /* response cache and coalescing (cache/serve.h); unused on other routes */
    branch_t branches[];
} fanout_t;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int reserve(fanout_t *f, size_t n)
{
    uint64_t limit = f->conf->aggregate_memory;
    uint64_t now = atomic_fetch_add_explicit(&held_bytes, n, memory_order_relaxed) + n;
    if (now > limit || now < n) {
        atomic_fetch_sub_explicit(&held_bytes, n, memory_order_relaxed);
        return -1;
    }
    return 0;
}

static void release(size_t n)
{
    if (n != 0)
        atomic_fetch_sub_explicit(&held_bytes, n, memory_order_relaxed);
}

static void respond(fanout_t *f);
static void schedule(fanout_t *f);

/* (admin) the access log of the client's request; a background refresh has none */
static void trace_exchange(fanout_t *f, const branch_t *br, const est_exchange_t *x, int status, est_uerr_t err)
{
    if (f->r != NULL)
        est_request_trace_exchange(f->r, br->b->upstream->name, x, status, err);
}

/* "%lld" without printf; `dst` has room for 21 bytes. Returns the length (no NUL written). */
static size_t format_ll(char *dst, long long v)
{
    char tmp[24], *end = tmp + sizeof(tmp), *p = end;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        *--p = '-';
    size_t n = (size_t)(end - p);
    memcpy(dst, p, n);
    return n;
}

/* frees what a branch holds of its reply (buffer, index) */
static void branch_free(branch_t *br)
{
    est_reply_dispose(&br->rep);
    release(br->rep_held);
    br->rep_held = 0;
    free(br->body);
    br->body = NULL;
    release(br->cap);
    br->len = br->cap = 0;
}

static void branch_fail(branch_t *br, const char *desc, est_uerr_t err)
{
    br->failed = 1;
    br->err = err;
    br->timed_out = est_uerr_is_timeout(err);
    if (desc != br->desc)
        snprintf(br->desc, sizeof(br->desc), "%s", desc);
    /* the access log names the reason when the exchange itself went well */
    if (br->trace != NULL && err == EST_UERR_BAD_REPLY)
        br->trace->reason = desc == br->desc ? NULL : desc;
    br->rep.value = NULL;
}

/* an access-log entry for a backend that was never called */
static void trace_not_called(fanout_t *f, branch_t *br, const char *reason)
{
    est_request_trace_t *t = f->r != NULL ? f->r->trace : NULL;
    if (t == NULL)
        return;
    if (t->num_exchanges == EST_TRACE_MAX_EXCHANGES) {
        ++t->num_dropped;
        return;
    }
    est_trace_exchange_t *e = t->exchanges + t->num_exchanges++;
    memset(e, 0, sizeof(*e));
    e->upstream = br->b->upstream->name;
    e->reason = reason;
}

static void branch_done(branch_t *br)
{
    fanout_t *f = br->f;
    br->x = NULL;
    br->state = BR_DONE;
    br->end_us = now_us();
    --f->pending;
    if (!f->responded)
        schedule(f);
}

/* parse + transform a complete 2xx body */
static void branch_accept_body(branch_t *br)
{
    fanout_t *f = br->f;
    const char *err;
    /* the index may take what the process bound leaves (array scalars take none) */
    uint64_t held = atomic_load_explicit(&held_bytes, memory_order_relaxed), limit = f->conf->aggregate_memory;
    int r = est_reply_parse(&br->rep, br->body, br->len, held < limit ? (size_t)(limit - held) : 1);
    if (r == EST_REPLY_INVALID) {
        branch_fail(br, "invalid_json", EST_UERR_BAD_REPLY);
    } else if (r != 0 || reserve(f, est_reply_bytes(&br->rep)) != 0) {
        branch_fail(br, "reply_too_large", EST_UERR_BAD_REPLY);
    } else {
        br->rep_held = est_reply_bytes(&br->rep);
        est_jarena_mark_t mark;
        est_jarena_mark(&f->arena, &mark);
        if (est_reply_transform(&br->rep, br->b, &f->arena, &err) != 0) {
            est_jarena_rollback(&f->arena, &mark);
            branch_fail(br, "transform_failed", EST_UERR_BAD_REPLY);
            branch_free(br);
        } else if (f->arena.bytes > f->arena_held) {
            /* the transforms' nodes count too (allow/deny/mapping on a large array of objects
             * make a few per element); over the bound they are given back at once */
            size_t grow = f->arena.bytes - f->arena_held;
            if (reserve(f, grow) == 0) {
                f->arena_held += grow;
            } else {
                est_jarena_rollback(&f->arena, &mark);
                branch_fail(br, "reply_too_large", EST_UERR_BAD_REPLY);
                branch_free(br);
            }
        }
        return;
    }
    branch_free(br);
}

/* makes room for `more` bytes of reply; -1: over max_backend_reply or aggregate_memory */
static int body_reserve(branch_t *br, size_t more)
{
    fanout_t *f = br->f;
    uint64_t max = f->conf->max_backend_reply;
    if (more > max || br->len > max - more)
        return -1;
    if (br->cap - br->len >= more)
        return 0;
    /* doubling while the size is unknown; a known size (Content-Length) is taken exactly */
    size_t need = br->len + more, cap = br->cap > max / 2 ? (size_t)max : br->cap * 2;
    if (cap < need)
        cap = need;
    if (reserve(f, cap - br->cap) != 0)
        return -1;
    char *p = realloc(br->body, cap);
    if (p == NULL) {
        release(cap - br->cap);
        return -1;
    }
    br->body = p;
    br->cap = cap;
    return 0;
}

static int on_head(est_exchange_t *x, void *data, int status, const struct phr_header *headers, size_t num_headers)
{
    branch_t *br = data;
    est_request_trace_t *t = br->f->r != NULL ? br->f->r->trace : NULL;
    br->status = status;
    size_t n = format_ll(br->desc, status); /* "%d": at most 11 bytes */
    const est_exchange_info_t *info = est_exchange_info(x);
    if (info->hedged) { /* SPEC: a hedged exchange is marked in Server-Timing (at most 10 more bytes) */
        const char *mark = info->hedge_won ? " hedge_won" : " hedged";
        memcpy(br->desc + n, mark, strlen(mark));
        n += strlen(mark);
    }
    br->desc[n] = '\0';
    size_t before = t != NULL ? t->num_exchanges : 0;
    trace_exchange(br->f, br, x, status, EST_UERR_NONE); /* (admin) access log */
    if (t != NULL && t->num_exchanges != before)
        br->trace = t->exchanges + t->num_exchanges - 1;
    if (status < 200 || status > 299)
        return 0;
    /* a known length is reserved at once: one allocation of the right size */
    for (size_t i = 0; i != num_headers; ++i) {
        if (headers[i].name_len != 14 || (headers[i].name[0] | 0x20) != 'c' ||
            strncasecmp(headers[i].name, "content-length", 14) != 0)
            continue;
        uint64_t n = 0;
        size_t j;
        for (j = 0; j != headers[i].value_len && headers[i].value[j] >= '0' && headers[i].value[j] <= '9' && n < (1ull << 60); ++j)
            n = n * 10 + (uint64_t)(headers[i].value[j] - '0');
        if (j == headers[i].value_len && n != 0) {
            if (n > br->f->conf->max_backend_reply || body_reserve(br, (size_t)n) != 0) {
                branch_fail(br, "reply_too_large", EST_UERR_BAD_REPLY);
                branch_done(br);
                return -1;
            }
        }
        break;
    }
    return 0;
}

static int on_body(est_exchange_t *x, void *data, const char *bytes, size_t len, int is_final)
{
    branch_t *br = data;
    int ok = br->status >= 200 && br->status <= 299;
    if (ok && len != 0) {
        if (body_reserve(br, len) != 0) {
            branch_free(br);
            branch_fail(br, "reply_too_large", EST_UERR_BAD_REPLY);
            branch_done(br);
            return -1;
        }
        memcpy(br->body + br->len, bytes, len);
        br->len += len;
    }
    if (is_final) {
        if (ok)
            branch_accept_body(br);
        else
            branch_fail(br, br->desc, EST_UERR_NONE);
        branch_done(br);
    }
    return 0;
}

static void on_error(est_exchange_t *x, void *data, est_uerr_t err, const char *message)
{
    branch_t *br = data;
    if (br->status == 0) /* (admin) access log; after a head the exchange is already recorded */
        trace_exchange(br->f, br, x, 0, err);
    branch_free(br);
    /* Server-Timing says "timeout" for every kind of timeout, as in SPEC's example */
    branch_fail(br, est_uerr_is_timeout(err) ? "timeout" : est_uerr_name(err), err);
    branch_done(br);
}

static const est_exchange_cb_t exchange_cb = {on_head, on_body, on_error};

/* est_group_value_cb: the value at `path` of backend `index`'s transformed reply */
static int group_value(void *data, size_t index, const char *path, size_t pathlen, h2o_iovec_t *text)
{
    fanout_t *f = data;
    if (index >= f->num)
        return -1;
    branch_t *dep = f->branches + index;
    if (dep->state != BR_DONE || dep->failed || dep->rep.value == NULL)
        return -1;
    size_t v = est_reply_lookup(&dep->rep, path, pathlen);
    if (v == JSPAN_NONE)
        return -1;
    h2o_mem_pool_t *pool = &f->r->req->pool;
    size_t len;
    if (jspan_type(&dep->rep.doc, v) == JSPAN_STRING) {
        jspan_str_raw(&dep->rep.doc, v, &len);
        char *buf = h2o_mem_alloc_pool(pool, len + 1);
        text->len = jspan_str_decode(&dep->rep.doc, v, buf);
        text->base = buf;
    } else {
        /* a number as written; copied, the reply buffer goes before the request ends */
        const char *raw = jspan_raw(&dep->rep.doc, v, &len);
        *text = h2o_strdup(pool, raw, len);
    }
    return 0;
}

static void start_branch(fanout_t *f, branch_t *br)
{
    br->state = BR_RUNNING;
    br->start_us = now_us();
    if (br->b->num_deps != 0) {
        int r = est_request_prepare_backend(f->r, br->index, f->method, &br->ureq, group_value, f);
        if (r != 0) {
            trace_not_called(f, br, "dependency_failed");
            branch_fail(br, "dependency_failed", EST_UERR_NONE);
            br->timed_out = 0;
            branch_done(br);
            return;
        }
    }
    est_upstream_t *u = est_upstream_set_get(f->svc->upstreams, br->b->upstream->index);
    br->x = est_exchange_start(u, &br->ureq, &exchange_cb, br);
}

/* starts every waiting branch whose dependencies have all finished (or fails it when one of
 * them failed or contributed nothing), until nothing changes */
static void schedule(fanout_t *f)
{
    if (f->scheduling) {
        f->reschedule = 1;
        return;
    }
    f->scheduling = 1;
    do {
        f->reschedule = 0;
        for (size_t i = 0; i != f->num && !f->responded; ++i) {
            branch_t *br = f->branches + i;
            if (br->state != BR_WAITING)
                continue;
            int ready = 1, dep_failed = 0;
            for (size_t d = 0; d != br->b->num_deps; ++d) {
                const branch_t *dep = br->b->deps[d] < f->num ? f->branches + br->b->deps[d] : NULL;
                if (dep == NULL || (dep->state == BR_DONE && (dep->failed || dep->rep.value == NULL)))
                    dep_failed = 1;
                else if (dep->state != BR_DONE)
                    ready = 0;
            }
            if (dep_failed) {
                br->state = BR_RUNNING;
                br->start_us = now_us();
                trace_not_called(f, br, "dependency_failed");
                branch_fail(br, "dependency_failed", EST_UERR_NONE);
                branch_done(br);
            } else if (ready) {
                start_branch(f, br);
            }
        }
    } while (f->reschedule && !f->responded);
    f->scheduling = 0;
    if (f->pending == 0 && !f->responded)
        respond(f);
}

static void cancel_running(fanout_t *f)
{
    for (size_t i = 0; i != f->num; ++i) {
        branch_t *br = f->branches + i;
        if (br->state == BR_RUNNING && br->x != NULL) {
            if (br->status == 0) /* (admin) access log */
                trace_exchange(f, br, br->x, 0, EST_UERR_DEADLINE);
            est_exchange_cancel(br->x);
            br->x = NULL;
            branch_free(br);
            branch_fail(br, "timeout", EST_UERR_DEADLINE);
        } else if (br->state == BR_WAITING) {
            /* the chain it waits for did not finish in time */
            br->start_us = now_us();
            trace_not_called(f, br, "timeout");
            branch_fail(br, "timeout", EST_UERR_DEADLINE);
        } else {
            continue;
        }
        br->state = BR_DONE;
        br->end_us = now_us();
    }
}

static void on_deadline(h2o_timeout_entry_t *entry)
{
    fanout_t *f = (fanout_t *)((char *)entry - offsetof(fanout_t, deadline));
    cancel_running(f);
    f->pending = 0;
    respond(f);
}

static void free_replies(fanout_t *f)
{
    for (size_t i = 0; i != f->num; ++i)
        branch_free(f->branches + i);
    est_jarena_dispose(&f->arena);
    release(f->arena_held);
    f->arena_held = 0;
}

static void on_dispose(void *p)
{
    fanout_t *f = p;
    if (h2o_timeout_is_linked(&f->deadline))
        h2o_timeout_unlink(&f->deadline);
    for (size_t i = 0; i != f->num; ++i) {
        branch_t *br = f->branches + i;
        if (br->x != NULL)
            est_exchange_cancel(br->x);
        br->x = NULL;
    }
    free_replies(f);
    jspan_buf_dispose(&f->out);
    release(f->out_held);
    f->out_held = 0;
    est_cache_req_dispose(&f->cache); /* a waiter leaves; a flight still open goes to the oldest waiter */
    /* big replies are mmap'd and already returned; this gives back what the heap kept, from
     * a thread of its own (malloc_trim takes every arena's lock: not on the loop) */
    if (f->peak >= TRIM_AFTER)
        est_trim_request();
}

static void add_server_timing(fanout_t *f)
{
    h2o_req_t *req = f->r->req;
    /* name;dur=<ms>.<tenth>;desc="<desc>", built without printf: per branch at most the name,
     * 2 + 5 + 20 + 1 + 20 + 7 + 23 + 1 bytes */
    size_t cap = 1;
    for (size_t i = 0; i != f->num; ++i)
        cap += strlen(f->branches[i].b->timing_name) + 80;
    char *buf = h2o_mem_alloc_pool(&req->pool, cap);
    size_t off = 0;
    for (size_t i = 0; i != f->num; ++i) {
        branch_t *br = f->branches + i;
        /* each backend's own duration, from its own start (a dependent one starts later) */
        int64_t dur = br->end_us - (br->start_us != 0 ? br->start_us : f->start_us);
        if (dur < 0)
            dur = 0;
        if (i != 0) {
            memcpy(buf + off, ", ", 2);
            off += 2;
        }
        size_t nl = strlen(br->b->timing_name);
        memcpy(buf + off, br->b->timing_name, nl);
        off += nl;
        memcpy(buf + off, ";dur=", 5);
        off += 5;
        off += format_ll(buf + off, (long long)(dur / 1000));
        buf[off++] = '.';
        off += format_ll(buf + off, (long long)(dur % 1000 / 100));
        memcpy(buf + off, ";desc=\"", 7);
        off += 7;
        size_t dl = strnlen(br->desc, sizeof(br->desc));
        memcpy(buf + off, br->desc, dl);
        off += dl;
        buf[off++] = '"';
    }
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("server-timing"), 0, NULL, buf, off);
}

static void describe_failure(fanout_t *f, const branch_t *br, char *msg, size_t msgsz)
{
    const char *up = br->b->upstream->name;
    char dur[32];
    if (br->err == EST_UERR_DEADLINE) {
        est_format_duration(f->r->route->timeout_ms, dur, sizeof(dur));
        snprintf(msg, msgsz, "upstream '%s' did not answer within %s", up, dur);
    } else if (br->timed_out) {
        est_format_duration(br->b->upstream->response_timeout_ms, dur, sizeof(dur));
        snprintf(msg, msgsz, "upstream '%s' did not answer within %s", up, dur);
    } else if (br->err == EST_UERR_NONE && br->status == 0) {
        snprintf(msg, msgsz, "upstream '%s' was not called (%s)", up, br->desc);
    } else if (br->err == EST_UERR_NONE) {
        snprintf(msg, msgsz, "upstream '%s' answered %d", up, br->status);
    } else if (br->err == EST_UERR_BAD_REPLY && br->status != 0) {
        snprintf(msg, msgsz, "upstream '%s' sent a reply that cannot be used (%s)", up, br->desc);
    } else {
        snprintf(msg, msgsz, "upstream '%s' is unavailable (%s)", up, br->desc);
    }
}

/*
 * The merged reply and the cache (docs/cache.md "Aggregating routes"): stored only when complete
 * (every branch answered and merged: X-Estuary-Completed: true), with the route's ttl as its
 * lifetime (the backends' Cache-Control does not describe the merged document), the body copied
 * once into the entry; shared with the coalescing waiters, complete or partial. estuary is the
 * origin of the merged document, so its age starts when it is built (the backends' response
 * delay is not added, RFC 9111 4.2.3). Adds the leader's Cache-Status.
 */
static void cache_reply(fanout_t *f, int complete)
{
    est_cache_req_t *c = &f->cache;
    int stored = 0;
    if (c->store == NULL && c->flight == NULL)
        return;
    int64_t now = est_cache_wall_ms();
    est_cache_resp_facts_t rs; /* none: the entry's Date is now, it has no Age and no Vary */
    est_cache_resp_facts_init(&rs);
    est_cache_decision_t d;
    memset(&d, 0, sizeof(d));
    int storable = 0;
    if (c->store != NULL && c->may_store && c->key != NULL) {
        if (!complete) {
            c->cs.detail = "incomplete";
        } else {
            est_cache_decide(&c->rq, 200, &rs, &c->pol, (int64_t)f->out.len, now, &d);
            storable = d.storable;
            if (!storable)
                c->cs.detail = d.detail;
        }
    }
    if (storable || c->flight != NULL) {
        const est_cache_field_t fields[] = {
            {"content-type", 12, "application/json", 16},
            {"x-estuary-completed", 19, complete ? "true" : "false", complete ? 4 : 5},
        };
        est_cache_entry_t *e = est_cache_req_entry_new(storable ? c->key : "", storable ? c->key_len : 0, 200, fields, 2, &rs,
                                                       &c->hs, storable ? &d : NULL, c->pol.max_entry, (int64_t)f->out.len, now,
                                                       now);
        if (e != NULL && f->out.len != 0 && est_cache_entry_append(e, f->out.data, f->out.len) != 0) {
            est_cache_entry_release(e);
            e = NULL;
        }
        if (e == NULL) { /* out of memory (the size was checked by decide): the waiters fan out themselves */
            est_cache_req_finish_flight(c, NULL, est_coalesce_err_unshareable);
        } else {
            est_cache_entry_freeze(e);
            if (storable && est_cache_store_insert(c->store, e) == 0) {
                stored = 1;
                est_cache_req_stored(c);
            }
            est_cache_req_finish_flight(c, e, NULL);
            est_cache_entry_release(e);
        }
    }
    est_cache_req_forwarded(c, 200, stored);
}

/* what the branches came to, once merged */
typedef struct {
    size_t num_failed, num_timeouts;
    const branch_t *first_failed;
    int fail;    /* no reply (every backend failed, one with on_error "fail", or not complete when required) */
    int written; /* the merged body is in f->out */
} outcome_t;

/* ends the fan-out: merges what every branch contributed into f->out (unless `o->fail`), then
 * frees the replies and their indexes (only the body is held from here). `complete_only`: any
 * failed branch fails the whole (a background refresh stores only a complete document). */
static void merge_replies(fanout_t *f, int complete_only, outcome_t *o)
{
    f->responded = 1;
    if (h2o_timeout_is_linked(&f->deadline))
        h2o_timeout_unlink(&f->deadline);
    memset(o, 0, sizeof(*o));
    est_merge_t m;
    est_merge_init(&m, &f->arena);
    for (size_t i = 0; i != f->num; ++i) {
        branch_t *br = f->branches + i;
        if (!br->failed) {
            const char *err;
            if (est_merge_add(&m, br->b, &br->rep, &err) != 0)
                branch_fail(br, err == est_aggregate_err_no_memory ? "out_of_memory" : "scalar_without_group", EST_UERR_BAD_REPLY);
        }
        if (br->failed) {
            ++o->num_failed;
            o->num_timeouts += br->timed_out;
            if (o->first_failed == NULL)
                o->first_failed = br;
        }
    }
    o->fail = o->num_failed == f->num || (o->num_failed != 0 && (complete_only || f->route->on_error == EST_ON_ERROR_FAIL));
    if (!o->fail) {
        f->out.max = (size_t)f->conf->aggregate_memory;
        /* one allocation in the common case: the body is about the replies' size */
        size_t guess = 64;
        for (size_t i = 0; i != f->num; ++i)
            guess += f->branches[i].len + strlen(f->branches[i].b->timing_name) + 8;
        if (guess <= f->out.max && (f->out.data = malloc(guess)) != NULL)
            f->out.cap = guess;
        o->written = est_merge_write(&m, &f->out) == 0;
        /* counted once written: the body is about the size of the replies it replaces below */
        f->out_held = f->out.cap;
        atomic_fetch_add_explicit(&held_bytes, f->out_held, memory_order_relaxed);
    }
    est_merge_dispose(&m);
    for (size_t i = 0; i != f->num; ++i)
        f->peak += f->branches[i].cap + f->branches[i].rep_held;
    f->peak += f->out_held;
    free_replies(f);
}

static void refresh_respond(fanout_t *f);

static void respond(fanout_t *f)
{
    if (f->refresh != NULL) {
        refresh_respond(f);
        return;
    }
    est_request_t *r = f->r;
    h2o_req_t *req = r->req;
    outcome_t o;
    merge_replies(f, 0, &o);
    size_t num_failed = o.num_failed, num_timeouts = o.num_timeouts;
    const branch_t *first_failed = o.first_failed;
    int fail = o.fail, written = o.written;

    add_server_timing(f);
    if (fail && est_cache_req_stale_if_error_ok(&f->cache)) {
        /* RFC 5861 4: the stored complete reply stands in for the failed fan-out (the waiters get it too) */
        est_cache_req_serve_stale_on_error(&f->cache, first_failed->status);
        return;
    }
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-estuary-completed"), 0, NULL,
                          num_failed == 0 ? "true" : "false", num_failed == 0 ? 4 : 5);

    if (fail) {
        int all_timeouts = num_failed == f->num ? num_timeouts == num_failed : first_failed->timed_out;
        char msg[256];
        describe_failure(f, first_failed, msg, sizeof(msg));
        if (num_failed == f->num && f->num > 1) {
            size_t len = strlen(msg);
            snprintf(msg + len, sizeof(msg) - len, "; every backend failed");
        }
        int status = all_timeouts ? 504 : 502;
        const char *code = all_timeouts ? "upstream_timeout" : "upstream_unavailable";
        if (f->cache.flight != NULL) /* the waiters get the same error; nothing is stored */
            est_cache_req_finish_flight(&f->cache, NULL, est_cache_req_shared_error(&f->cache, status, code, msg));
        est_cache_req_forwarded(&f->cache, 0, 0);
        est_send_error(req, status, code, msg, r->request_id);
        return;
    }

    if (!written) {
        if (f->cache.flight != NULL)
            est_cache_req_finish_flight(&f->cache, NULL,
                                        est_cache_req_shared_error(&f->cache, 500, "internal_error", "out of memory"));
        est_cache_req_forwarded(&f->cache, 0, 0);
        est_send_error(req, 500, "internal_error", "out of memory", r->request_id);
        return;
    }
    cache_reply(f, num_failed == 0);
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = f->out.len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    /* the body stays in f->out until the request is disposed (on_dispose): no copy. A
     * generator without callbacks, as h2o_send_inline uses: everything is sent at once */
    h2o_start_response(req, &f->generator);
    if (r->method == EST_METHOD_HEAD) {
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
    } else {
        h2o_iovec_t body = h2o_iovec_init(f->out.data, f->out.len);
        h2o_send(req, &body, 1, H2O_SEND_STATE_FINAL);
    }
}

/* the fan-out itself: every backend without dependencies starts now, the others as their groups answer */
static void start_fanout(fanout_t *f)
{
    est_request_t *r = f->r;
    h2o_req_t *req = r->req;
    f->start_us = now_us();
    for (size_t i = 0; i != f->num; ++i) {
        branch_t *br = f->branches + i;
        /* a backend with dependencies is prepared when they have answered */
        if (br->b->num_deps == 0 && est_request_prepare_backend(r, i, f->method, &br->ureq, NULL, NULL) != 0) {
            /* the validator guarantees every {param} is bound; this is a bug, not bad input */
            f->responded = 1;
            if (f->cache.flight != NULL)
                est_cache_req_finish_flight(
                    &f->cache, NULL, est_cache_req_shared_error(&f->cache, 500, "internal_error", "cannot build a backend path"));
            est_send_error(req, 500, "internal_error", "cannot build a backend path", r->request_id);
            return;
        }
    }
    f->pending = f->num;
    h2o_timeout_link(r->svc->loop, r->svc->get_timeout(r->svc, r->route->timeout_ms), &f->deadline);
    schedule(f);
}

/* a coalescing waiter fans out itself (promoted to leader, or the leader's reply was not shareable) */
static void cache_forward(est_cache_req_t *c)
{
    start_fanout(c->data);
}

/*
 * The background refresh of a stale entry (stale-while-revalidate, RFC 5861 3; docs/cache.md
 * "Wiring: aggregating routes"): one per entry across the process (the entry's refresh flag),
 * started by the request that found the entry stale, which is answered with the stale reply at
 * once like every other one. The refresh is a fan-out owned by the worker: a heap object with
 * its own copies of what the branches send (method, expanded path, Host, header fields, the
 * cache key and the client's header fields), nothing of the client's request, so it neither
 * delays nor depends on that client. It pins the worker's view of the configuration (route,
 * limits, upstream set) until it ends and is cancelled if the worker exits first. The bounds of
 * a foreground fan-out apply (max_backend_reply, aggregate_memory, the route timeout). A
 * complete document (every branch merged) replaces the entry; anything else releases the
 * refresh flag, so a later stale hit may try again. A route with dependent backends is not
 * refreshed in the background (their values come from the client's request while it runs):
 * there the request that wins the flag fans out itself.
 */
typedef struct st_refresh_t {
    est_cache_refresh_t base; /* the copies (also the branches' requests), the stale entry, the worker's list */
    fanout_t *f;              /* the fan-out, malloc'd (its branches read their ureq until the end) */
} refresh_t;

static _Thread_local est_cache_refresh_t *refreshes;

static void refresh_free_fn(est_cache_refresh_t *base)
{
    refresh_t *rf = (refresh_t *)base;
    free(rf->f);
    free(rf);
}

/* the refresh is over (stored, or not: the flag goes back); the fan-out's buffers go now, its
 * memory once the exchanges have let go of it */
static void refresh_end(refresh_t *rf, int stored)
{
    fanout_t *f = rf->f;
    f->responded = 1;
    if (h2o_timeout_is_linked(&f->deadline))
        h2o_timeout_unlink(&f->deadline);
    for (size_t i = 0; i != f->num; ++i) {
        if (f->branches[i].x != NULL)
            est_exchange_cancel(f->branches[i].x);
        f->branches[i].x = NULL;
    }
    free_replies(f);
    jspan_buf_dispose(&f->out);
    release(f->out_held);
    f->out_held = 0;
    if (f->peak >= TRIM_AFTER)
        est_trim_request();
    est_cache_refresh_end(&rf->base, stored);
}

/* every branch has finished (or the deadline passed): a complete document replaces the entry */
static void refresh_respond(fanout_t *f)
{
    refresh_t *rf = f->refresh;
    outcome_t o;
    merge_replies(f, 1, &o);
    int stored = 0;
    if (!o.fail && o.written) {
        int64_t now = est_cache_wall_ms();
        est_cache_resp_facts_t rs; /* none, as in cache_reply */
        est_cache_resp_facts_init(&rs);
        est_cache_decision_t d;
        memset(&d, 0, sizeof(d));
        est_cache_decide(&rf->base.rq, 200, &rs, &rf->base.pol, (int64_t)f->out.len, now, &d);
        if (d.storable) {
            const est_cache_field_t fields[] = {
                {"content-type", 12, "application/json", 16},
                {"x-estuary-completed", 19, "true", 4},
            };
            est_cache_entry_t *e = est_cache_req_entry_new(rf->base.key, rf->base.key_len, 200, fields, 2, &rs, &rf->base.hs, &d,
                                                           rf->base.pol.max_entry, (int64_t)f->out.len, now, now);
            if (e != NULL && f->out.len != 0 && est_cache_entry_append(e, f->out.data, f->out.len) != 0) {
                est_cache_entry_release(e);
                e = NULL;
            }
            if (e != NULL) {
                est_cache_entry_freeze(e);
                stored = est_cache_store_insert(rf->base.store, e) == 0;
                est_cache_entry_release(e);
            }
        }
    }
    if (stored) {
        est_worker_metrics_t *m = rf->base.svc->metrics;
        if (m != NULL && f->route->index < m->num_routes)
            ++m->routes[f->route->index].cache[EST_CACHE_RESULT_STORED];
    }
    refresh_end(rf, stored);
}


/* the worker exits: its refreshes stop (before its views and their upstream sets go) */
void est_aggregate_worker_exit(void)
{
    while (refreshes != NULL) {
        refresh_t *rf = (refresh_t *)refreshes;
        if (!rf->base.ended)
            refresh_end(rf, 0);
        est_cache_refresh_free(&rf->base);
    }
}

/* a zeroed fan-out of the route of r, its branches set up: for the client's request, and for a
 * background refresh (which copies what it needs of r and does not keep it) */
static void fanout_init(fanout_t *f, est_request_t *r, h2o_iovec_t method)
{
    est_jarena_init(&f->arena);
    f->svc = r->svc;
    f->conf = r->conf;
    f->route = r->route;
    f->num = r->route->num_backends;
    f->deadline.cb = on_deadline;
    f->method = method;
    for (size_t i = 0; i != f->num; ++i) {
        branch_t *br = f->branches + i;
        br->f = f;
        br->b = r->route->backends + i;
        br->index = i;
    }
}

/* est_cache_req_ops_t.refresh: starts the background fan-out refreshing `stale` (whose refresh
 * flag the caller won); 0, or -1 and the request carries the refresh itself */
static int start_refresh(est_cache_req_t *c, est_cache_entry_t *stale)
{
    fanout_t *cf = c->data;
    est_request_t *r = cf->r;
    const est_route_conf_t *route = r->route;
    if (r->svc->pin == NULL || r->svc->unpin == NULL || c->key == NULL || c->store == NULL)
        return -1;
    for (size_t i = 0; i != route->num_backends; ++i)
        if (route->backends[i].num_deps != 0)
            return -1; /* dependent backends: the foreground refresh */
    size_t size = offsetof(fanout_t, branches) + sizeof(branch_t) * route->num_backends;
    refresh_t *rf = calloc(1, sizeof(*rf));
    fanout_t *f = calloc(1, size);
    if (rf == NULL || f == NULL) {
        free(rf);
        free(f);
        return -1;
    }
    rf->f = f;
    est_cache_refresh_init(&rf->base, c, &r->req->headers, refresh_free_fn);

    fanout_init(f, r, h2o_iovec_init(H2O_STRLIT("GET")));
    f->refresh = rf;
    uint64_t deadline = h2o_now(r->svc->loop) + route->timeout_ms;
    for (size_t i = 0; i != f->num; ++i) {
        branch_t *br = f->branches + i;
        /* prepared in the client's request (its pool), then copied: the refresh owns its copy */
        est_upstream_request_t u;
        if (est_request_prepare_backend(r, i, f->method, &u, NULL, NULL) != 0) {
            est_jarena_dispose(&f->arena);
            est_cache_refresh_free(&rf->base); /* not started: frees f and rf */
            return -1;
        }
        br->ureq.method = f->method;
        br->ureq.path = h2o_strdup(&rf->base.pool, u.path.base, u.path.len);
        if (u.host.base != NULL)
            br->ureq.host = h2o_strdup(&rf->base.pool, u.host.base, u.host.len);
        br->ureq.headers = est_cache_copy_headers(&rf->base.pool, u.headers, u.num_headers);
        br->ureq.num_headers = u.num_headers;
        br->ureq.deadline = deadline;
        br->ureq.is_idempotent = 1;
        br->ureq.trace = NULL; /* not part of the client's trace: that request is answered already */
    }
    est_cache_refresh_start(&rf->base, &refreshes, stale);
    f->start_us = now_us();
    f->pending = f->num;
    h2o_timeout_link(f->svc->loop, f->svc->get_timeout(f->svc, route->timeout_ms), &f->deadline);
    schedule(f); /* no exchange calls back from its start: the refresh is under way */
    return 0;
}

static const est_cache_req_ops_t cache_ops = {cache_forward, start_refresh};

void est_aggregate_handle(est_request_t *r)
{
    h2o_req_t *req = r->req;
    const est_route_conf_t *route = r->route;
    size_t size = offsetof(fanout_t, branches) + sizeof(branch_t) * route->num_backends;
    fanout_t *f = est_alloc_disposable(&req->pool, r->disposers, size, on_dispose);
    memset(f, 0, size);
    /* HEAD is served as GET to the backends; the merged body is dropped */
    fanout_init(f, r, r->method == EST_METHOD_HEAD ? h2o_iovec_init(H2O_STRLIT("GET")) : req->method);
    f->r = r;
    /* the response cache and coalescing (GET/HEAD on a route with cache or coalesce) */
    if (est_cache_req_begin(&f->cache, r, &cache_ops, f))
        return; /* answered from the cache, or waiting on an identical request */
    start_fanout(f);
}
