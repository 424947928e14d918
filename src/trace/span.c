/*
 * estuary - trace contexts, span records and the per-worker ring (see span.h).
 */
#include "trace/span.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>

int est_trace_sink_init(est_trace_sink_t *s, double sample_ratio, uint64_t *dropped, uint64_t *exported)
{
    memset(s, 0, sizeof(*s));
    if ((s->ring = calloc(EST_TRACE_RING_SIZE, sizeof(*s->ring))) == NULL)
        return -1;
    /* ids need to be unique, not secret: one getrandom seeds a fast generator per worker */
    if (getrandom(&s->rng, sizeof(s->rng), GRND_NONBLOCK) != sizeof(s->rng))
        s->rng = (uint64_t)(uintptr_t)s ^ (uint64_t)est_trace_now_ns();
    s->sample_ratio = sample_ratio;
    s->dropped = dropped != NULL ? dropped : &s->own_counters[0];
    s->exported = exported != NULL ? exported : &s->own_counters[1];
    return 0;
}

void est_trace_sink_dispose(est_trace_sink_t *s)
{
    free(s->ring);
    s->ring = NULL;
    s->count = s->head = 0;
}

/* splitmix64 (Steele, Lea, Flood 2014): one add and three multiply-xorshifts per number */
uint64_t est_trace_random(est_trace_sink_t *s)
{
    uint64_t z = (s->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void est_trace_new_id(est_trace_sink_t *s, uint8_t id[8])
{
    uint64_t v;
    do
        v = est_trace_random(s);
    while (v == 0); /* an all-zero id is invalid (W3C Trace Context §3.2.2.4) */
    memcpy(id, &v, 8);
}

uint64_t est_trace_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void est_trace_begin(est_trace_ctx_t *t, est_trace_sink_t *s, const char *traceparent, size_t traceparent_len,
                     const char *tracestate, size_t tracestate_len, uint64_t now_ns)
{
    est_traceparent_t tp;
    memset(t, 0, sizeof(*t));
    t->sink = s;
    t->start_ns = now_ns;
    if (traceparent != NULL && est_traceparent_parse(traceparent, traceparent_len, &tp) == 0) {
        /* continued: same trace, the client's span is our parent, its sampling decision holds;
         * flags other than sampled are not passed on (version 00 defines no other) */
        memcpy(t->trace_id, tp.trace_id, 16);
        memcpy(t->parent_id, tp.parent_id, 8);
        t->has_parent = 1;
        t->flags = tp.flags & EST_TRACE_FLAG_SAMPLED;
        if (est_tracestate_ok(tracestate, tracestate_len)) {
            t->tracestate = tracestate;
            t->tracestate_len = tracestate_len;
        }
    } else {
        /* a new trace (a tracestate without a valid traceparent is dropped: §3.3) */
        uint64_t a = est_trace_random(s), b = est_trace_random(s);
        if ((a | b) == 0)
            b = 1;
        memcpy(t->trace_id, &a, 8);
        memcpy(t->trace_id + 8, &b, 8);
        double r = s->sample_ratio;
        int sampled = r >= 1.0 || (r > 0.0 && (double)(est_trace_random(s) >> 11) * 0x1.0p-53 < r);
        t->flags = sampled ? EST_TRACE_FLAG_SAMPLED : 0;
    }
    est_trace_new_id(s, t->span_id);
}

size_t est_trace_write_headers(char *p, const est_trace_ctx_t *t, const uint8_t span_id[8])
{
    char *start = p;
    memcpy(p, "traceparent: ", 13);
    p += 13;
    est_traceparent_format(p, t->trace_id, span_id, t->flags);
    p += EST_TRACEPARENT_LEN;
    *p++ = '\r';
    *p++ = '\n';
    if (t->tracestate != NULL) {
        memcpy(p, "tracestate: ", 12);
        p += 12;
        memcpy(p, t->tracestate, t->tracestate_len);
        p += t->tracestate_len;
        *p++ = '\r';
        *p++ = '\n';
    }
    return (size_t)(p - start);
}

est_span_t *est_trace_sink_push(est_trace_sink_t *s)
{
    if (s->count == EST_TRACE_RING_SIZE) {
        /* full (the collector is slow or down): the oldest record makes room */
        s->head = (s->head + 1) % EST_TRACE_RING_SIZE;
        s->count--;
        ++*s->dropped;
    }
    est_span_t *sp = &s->ring[(s->head + s->count) % EST_TRACE_RING_SIZE];
    s->count++;
    return sp;
}

void est_trace_sink_pop(est_trace_sink_t *s, size_t n)
{
    if (n > s->count)
        n = s->count;
    s->head = (s->head + n) % EST_TRACE_RING_SIZE;
    s->count -= n;
}

void est_trace_copy(char *dst, size_t cap, const char *src, size_t len)
{
    if (src == NULL) {
        dst[0] = '\0';
        return;
    }
    if (len == SIZE_MAX)
        len = strnlen(src, cap - 1);
    if (len > cap - 1)
        len = cap - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* the record just pushed has reached the batch size: tell the exporter */
static void after_push(est_trace_sink_t *s)
{
    if (s->count == EST_TRACE_BATCH && s->on_batch_ready != NULL)
        s->on_batch_ready(s);
}

void est_trace_record_client(est_trace_ctx_t *t, const uint8_t span_id[8], uint64_t start_ns, uint64_t end_ns, const char *method,
                             size_t method_len, const char *upstream, const char *address, int status, unsigned attempt,
                             const char *error)
{
    if (!est_trace_sampled(t))
        return;
    est_span_t *sp = est_trace_sink_push(t->sink);
    memcpy(sp->trace_id, t->trace_id, 16);
    memcpy(sp->span_id, span_id, 8);
    memcpy(sp->parent_id, t->span_id, 8);
    sp->has_parent = 1;
    sp->kind = EST_SPAN_KIND_CLIENT;
    sp->status = status > 0 && status < 1000 ? (uint16_t)status : 0;
    sp->is_error = error != NULL || status >= 500;
    sp->attempt = attempt > UINT16_MAX ? UINT16_MAX : (uint16_t)attempt;
    sp->start_ns = start_ns;
    sp->end_ns = end_ns >= start_ns ? end_ns : start_ns;
    est_trace_copy(sp->method, sizeof(sp->method), method, method_len);
    est_trace_copy(sp->name, sizeof(sp->name), upstream, SIZE_MAX);
    sp->path[0] = '\0';
    est_trace_copy(sp->address, sizeof(sp->address), address, SIZE_MAX);
    est_trace_copy(sp->error_type, sizeof(sp->error_type), error, SIZE_MAX);
    after_push(t->sink);
}

void est_trace_record_server(est_trace_ctx_t *t, uint64_t end_ns, const char *method, size_t method_len, const char *route,
                             const char *path, size_t path_len, int status)
{
    if (!est_trace_sampled(t))
        return;
    est_span_t *sp = est_trace_sink_push(t->sink);
    memcpy(sp->trace_id, t->trace_id, 16);
    memcpy(sp->span_id, t->span_id, 8);
    memcpy(sp->parent_id, t->parent_id, 8);
    sp->has_parent = t->has_parent;
    sp->kind = EST_SPAN_KIND_SERVER;
    sp->status = status > 0 && status < 1000 ? (uint16_t)status : 0;
    sp->is_error = status >= 500 || status == 0; /* 0: no response was sent (the client left, or a failure) */
    sp->attempt = 0;
    sp->start_ns = t->start_ns;
    sp->end_ns = end_ns >= t->start_ns ? end_ns : t->start_ns;
    est_trace_copy(sp->method, sizeof(sp->method), method, method_len);
    est_trace_copy(sp->name, sizeof(sp->name), route, SIZE_MAX);
    est_trace_copy(sp->path, sizeof(sp->path), path, path_len);
    sp->address[0] = '\0';
    sp->error_type[0] = '\0';
    after_push(t->sink);
}
