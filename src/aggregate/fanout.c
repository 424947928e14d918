/*
 * estuary - fan-out for aggregating routes.
 *
 * One fanout_t per request, in the request's pool; one branch per backend. Every branch
 * runs an upstream exchange; replies are buffered (they are merged in config order, not
 * arrival order). The route timeout is one timer for the whole fan-out: when it fires,
 * the branches still running are cancelled and count as timeouts, and the reply is built
 * from what has arrived. The request's dispose callback (est_alloc_disposable) cancels whatever is still
 * running (client gone, HTTP/2 stream reset), so nothing outlives the request.
 *
 * JSON: every jansson value of the request lives in the fan-out's arena (jsonarena.h). The
 * arena is entered only around the synchronous JSON work (parse + transform of one reply in
 * branch_accept_body, merge + serialise in respond) and reset as a whole once the body is
 * serialised, or in on_dispose when the request ends before that: no json_decref walks.
 */
#include "aggregate/fanout.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/jsonutil.h"
#include "aggregate/jsonarena.h"
#include "aggregate/merge.h"

/* A backend reply larger than this is refused (the whole document is held in memory) */
#define MAX_BACKEND_REPLY (64 * 1024 * 1024)

typedef struct st_branch_t {
    struct st_fanout_t *f;
    const est_backend_conf_t *b;
    est_exchange_t *x; /* NULL once finished */
    est_upstream_request_t ureq;
    h2o_buffer_t *body;
    int status;
    est_uerr_t err;
    char desc[24];  /* Server-Timing desc: the status, or why it failed */
    int failed;
    int timed_out;
    int64_t end_us;
    json_t *value; /* transformed result waiting for its turn in the merge (in f->arena) */
} branch_t;

typedef struct st_fanout_t {
    est_request_t *r;
    size_t num, pending;
    h2o_timeout_entry_t deadline;
    int responded;
    int64_t start_us;
    est_json_arena_t arena; /* every json_t of this request */
    branch_t branches[];
} fanout_t;

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void respond(fanout_t *f);

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

static void branch_fail(branch_t *br, const char *desc, est_uerr_t err)
{
    br->failed = 1;
    br->err = err;
    br->timed_out = est_uerr_is_timeout(err);
    if (desc != br->desc)
        snprintf(br->desc, sizeof(br->desc), "%s", desc);
}

static void branch_done(branch_t *br)
{
    fanout_t *f = br->f;
    br->x = NULL;
    br->end_us = now_us();
    if (--f->pending == 0 && !f->responded)
        respond(f);
}

/* parse + transform a complete 2xx body, into the request's arena */
static void branch_accept_body(branch_t *br, const char *bytes, size_t len)
{
    json_t *v;
    const char *err;
    est_json_arena_t *prev = est_json_arena_enter(&br->f->arena);
    if (est_body_parse(bytes, len, &v) != 0) {
        branch_fail(br, "invalid_json", EST_UERR_BAD_REPLY);
    } else if (v != NULL && (v = est_transform_apply(br->b, v, &err)) == NULL) {
        branch_fail(br, "transform_failed", EST_UERR_BAD_REPLY);
    } else {
        br->value = v;
    }
    est_json_arena_leave(prev);
}

static int on_head(est_exchange_t *x, void *data, int status, const struct phr_header *headers, size_t num_headers)
{
    branch_t *br = data;
    br->status = status;
    br->desc[format_ll(br->desc, status)] = '\0'; /* "%d": at most 11 bytes */
    est_request_trace_exchange(br->f->r, br->b->upstream->name, x, status, EST_UERR_NONE); /* (admin) access log */
    return 0;
}

static int on_body(est_exchange_t *x, void *data, const char *bytes, size_t len, int is_final)
{
    branch_t *br = data;
    int ok = br->status >= 200 && br->status <= 299;
    if (ok) {
        if (is_final && br->body == NULL) {
            /* the whole reply in one piece: no copy */
            branch_accept_body(br, bytes, len);
        } else if (len != 0 || is_final) {
            if (br->body == NULL)
                h2o_buffer_init(&br->body, &h2o_socket_buffer_prototype);
            if (br->body->size + len > MAX_BACKEND_REPLY) {
                branch_fail(br, "reply_too_large", EST_UERR_BAD_REPLY);
                branch_done(br);
                return -1;
            }
            if (len != 0) {
                h2o_iovec_t dst = h2o_buffer_reserve(&br->body, len);
                memcpy(dst.base, bytes, len);
                br->body->size += len;
            }
            if (is_final)
                branch_accept_body(br, br->body->bytes, br->body->size);
        }
    }
    if (is_final) {
        if (!ok)
            branch_fail(br, br->desc, EST_UERR_NONE);
        branch_done(br);
    }
    return 0;
}

static void on_error(est_exchange_t *x, void *data, est_uerr_t err, const char *message)
{
    branch_t *br = data;
    if (br->status == 0) /* (admin) access log; after a head the exchange is already recorded */
        est_request_trace_exchange(br->f->r, br->b->upstream->name, x, 0, err);
    /* Server-Timing says "timeout" for every kind of timeout, as in SPEC's example */
    branch_fail(br, est_uerr_is_timeout(err) ? "timeout" : est_uerr_name(err), err);
    branch_done(br);
}

static const est_exchange_cb_t exchange_cb = {on_head, on_body, on_error};

static void cancel_running(fanout_t *f)
{
    for (size_t i = 0; i != f->num; ++i) {
        branch_t *br = f->branches + i;
        if (br->x != NULL) {
            if (br->status == 0) /* (admin) access log */
                est_request_trace_exchange(f->r, br->b->upstream->name, br->x, 0, EST_UERR_DEADLINE);
            est_exchange_cancel(br->x);
            br->x = NULL;
            br->end_us = now_us();
            branch_fail(br, "timeout", EST_UERR_DEADLINE);
        }
    }
}

static void on_deadline(h2o_timeout_entry_t *entry)
{
    fanout_t *f = (fanout_t *)((char *)entry - offsetof(fanout_t, deadline));
    cancel_running(f);
    f->pending = 0;
    respond(f);
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
        if (br->body != NULL)
            h2o_buffer_dispose(&br->body);
        br->value = NULL; /* freed with the arena */
    }
    est_json_arena_reset(&f->arena);
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
        int64_t dur = br->end_us - f->start_us;
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
    } else if (br->err == EST_UERR_NONE) {
        snprintf(msg, msgsz, "upstream '%s' answered %d", up, br->status);
    } else if (br->err == EST_UERR_BAD_REPLY && br->status != 0) {
        snprintf(msg, msgsz, "upstream '%s' sent a reply that cannot be used (%s)", up, br->desc);
    } else {
        snprintf(msg, msgsz, "upstream '%s' is unavailable (%s)", up, br->desc);
    }
}

static void respond(fanout_t *f)
{
    est_request_t *r = f->r;
    h2o_req_t *req = r->req;
    f->responded = 1;
    if (h2o_timeout_is_linked(&f->deadline))
        h2o_timeout_unlink(&f->deadline);

    est_merge_t m;
    est_merge_init(&m);
    est_json_arena_t *prev = est_json_arena_enter(&f->arena);
    size_t num_failed = 0, num_timeouts = 0;
    const branch_t *first_failed = NULL;
    for (size_t i = 0; i != f->num; ++i) {
        branch_t *br = f->branches + i;
        if (!br->failed) {
            const char *err;
            json_t *v = br->value;
            br->value = NULL;
            if (est_merge_add(&m, br->b, v, &err) != 0)
                branch_fail(br, "scalar_without_group", EST_UERR_BAD_REPLY);
        }
        if (br->failed) {
            ++num_failed;
            num_timeouts += br->timed_out;
            if (first_failed == NULL)
                first_failed = br;
        }
    }
    int fail = num_failed == f->num || (num_failed != 0 && r->route->on_error == EST_ON_ERROR_FAIL);
    char *body = NULL;
    size_t len = 0;
    if (!fail) {
        json_t *doc = est_merge_finish(&m);
        body = doc != NULL ? est_json_dumps_compact(doc, &len) : NULL;
    }
    /* the document (or what `m` holds) goes with the arena, no json_decref walk; done before
     * anything is sent, as sending may end the request */
    est_json_arena_leave(prev);
    est_json_arena_reset(&f->arena);

    add_server_timing(f);
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
        est_send_error(req, all_timeouts ? 504 : 502, all_timeouts ? "upstream_timeout" : "upstream_unavailable", msg,
                       r->request_id);
        return;
    }

    if (body == NULL) {
        est_send_error(req, 500, "internal_error", "out of memory", r->request_id);
        return;
    }
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    est_send_body(req, body, len);
    free(body);
}

void est_aggregate_handle(est_request_t *r)
{
    h2o_req_t *req = r->req;
    const est_route_conf_t *route = r->route;
    size_t size = offsetof(fanout_t, branches) + sizeof(branch_t) * route->num_backends;
    fanout_t *f = est_alloc_disposable(&req->pool, r->disposers, size, on_dispose);
    memset(f, 0, size);
    est_json_arena_init(&f->arena);
    f->r = r;
    f->num = route->num_backends;
    f->start_us = now_us();
    f->deadline.cb = on_deadline;

    /* HEAD is served as GET to the backends; the merged body is dropped by h2o */
    h2o_iovec_t method = r->method == EST_METHOD_HEAD ? h2o_iovec_init(H2O_STRLIT("GET")) : req->method;
    for (size_t i = 0; i != f->num; ++i) {
        branch_t *br = f->branches + i;
        br->f = f;
        br->b = route->backends + i;
        if (est_request_prepare_upstream(r, i, method, &br->ureq) != 0) {
            /* the validator guarantees every {param} is bound; this is a bug, not bad input */
            est_send_error(req, 500, "internal_error", "cannot build a backend path", r->request_id);
            return;
        }
    }

    f->pending = f->num;
    h2o_timeout_link(r->svc->loop, r->svc->get_timeout(r->svc, route->timeout_ms), &f->deadline);
    for (size_t i = 0; i != f->num; ++i) {
        branch_t *br = f->branches + i;
        est_upstream_t *u = est_upstream_set_get(r->svc->upstreams, br->b->upstream->index);
        br->x = est_exchange_start(u, &br->ureq, &exchange_cb, br);
    }
}
