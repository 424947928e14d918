/*
 * estuary - a request's trace context and the span records it produces (SPEC "Tracing").
 *
 * Share-nothing: each worker's generation view owns one est_trace_sink_t (export.h builds it),
 * a fixed ring of span records that the request path fills by copying (no allocation, no
 * serialization: that is the exporter's job, on its timer) and a PRNG for ids. When the ring
 * is full the OLDEST record is overwritten and counted as dropped.
 *
 * Request path: the front end fills an est_trace_ctx_t per request (est_trace_begin) from the
 * client's traceparent/tracestate; the upstream client stamps each attempt with a new span id
 * (est_trace_new_id) and writes its headers (est_trace_write_headers), then reports the
 * attempt (est_trace_record_client); the front end reports the server span when the request
 * ends (est_trace_record_server). Only sampled contexts record anything.
 * Strings in records are copies (truncated to their field), so a record outlives the request
 * and the configuration it names.
 */
#ifndef EST_TRACE_SPAN_H
#define EST_TRACE_SPAN_H

#include <stddef.h>
#include <stdint.h>
#include "trace/traceparent.h"

#define EST_SPAN_KIND_SERVER 2 /* OTLP SpanKind */
#define EST_SPAN_KIND_CLIENT 3
#define EST_TRACE_RING_SIZE 4096 /* span records per sink */
#define EST_TRACE_BATCH 512      /* records per export */

typedef struct est_span {
    uint8_t trace_id[16], span_id[8], parent_id[8];
    uint8_t kind;              /* EST_SPAN_KIND_* */
    uint8_t has_parent;        /* parent_id is set */
    uint8_t is_error;          /* OTLP status ERROR: a 5xx, or a failed attempt */
    uint16_t status;           /* HTTP status, 0 when none */
    uint16_t attempt;          /* client: 1 for the first attempt */
    uint64_t start_ns, end_ns; /* unix time */
    char method[16];
    char name[96];       /* server: the route template ("" when no route matched); client: the upstream */
    char path[128];      /* server: url.path (without the query) */
    char address[64];    /* client: "ip:port" of the attempt, "" when none was picked */
    char error_type[24]; /* client: why the attempt failed ("connect_failure", "cancelled", ...), "" */
} est_span_t;

typedef struct est_trace_sink {
    est_span_t *ring;   /* EST_TRACE_RING_SIZE records */
    size_t head, count; /* oldest record, records held */
    uint64_t rng;       /* splitmix64 state, seeded from getrandom */
    double sample_ratio;
    uint64_t *dropped, *exported; /* the worker's counters (admin/metrics.h), never NULL */
    uint64_t own_counters[2];     /* where they point when the caller gives none */
    /* called (request path) when count reaches EST_TRACE_BATCH: the exporter schedules a send
     * from its loop; may be NULL */
    void (*on_batch_ready)(struct est_trace_sink *sink);
} est_trace_sink_t;

/* A request's trace context (in the request's memory); sink NULL: tracing is off */
typedef struct est_trace_ctx {
    est_trace_sink_t *sink;
    uint8_t trace_id[16];
    uint8_t span_id[8];   /* the server span: parent of every attempt's client span */
    uint8_t parent_id[8]; /* the client's span, when has_parent */
    uint8_t has_parent;
    uint8_t flags;          /* trace-flags passed on (EST_TRACE_FLAG_SAMPLED) */
    const char *tracestate; /* passed on as it came (est_tracestate_ok), NULL: none; borrowed from the request */
    size_t tracestate_len;
    uint64_t start_ns;
} est_trace_ctx_t;

/* 0, or -1 when out of memory. `dropped`/`exported` may be NULL (counted inside the sink). */
int est_trace_sink_init(est_trace_sink_t *s, double sample_ratio, uint64_t *dropped, uint64_t *exported);
void est_trace_sink_dispose(est_trace_sink_t *s);
/* the next pseudo-random number (not for secrets) */
uint64_t est_trace_random(est_trace_sink_t *s);
/* a new, non-zero span id */
void est_trace_new_id(est_trace_sink_t *s, uint8_t id[8]);

/*
 * Fills `t` for a request: a valid `traceparent` (NULL/0 when absent or given more than once)
 * is continued with its sampled flag; otherwise a trace starts, sampled at the sink's ratio.
 * `tracestate` is kept when est_tracestate_ok and a traceparent was continued. `now_ns`: unix ns.
 */
void est_trace_begin(est_trace_ctx_t *t, est_trace_sink_t *s, const char *traceparent, size_t traceparent_len,
                     const char *tracestate, size_t tracestate_len, uint64_t now_ns);

static inline int est_trace_sampled(const est_trace_ctx_t *t)
{
    return t != NULL && t->sink != NULL && (t->flags & EST_TRACE_FLAG_SAMPLED) != 0;
}

/* bytes est_trace_write_headers may write for `t` */
static inline size_t est_trace_headers_bound(const est_trace_ctx_t *t)
{
    return sizeof("traceparent: \r\n") + EST_TRACEPARENT_LEN + sizeof("tracestate: \r\n") + t->tracestate_len;
}

/* "traceparent: 00-<trace>-<span_id>-<flags>\r\n" and "tracestate: ...\r\n" when there is one; returns the length */
size_t est_trace_write_headers(char *p, const est_trace_ctx_t *t, const uint8_t span_id[8]);

/* unix time in ns (CLOCK_REALTIME) */
uint64_t est_trace_now_ns(void);

/* A slot for one more record (the oldest is overwritten and counted as dropped when full) */
est_span_t *est_trace_sink_push(est_trace_sink_t *s);
/* the i-th oldest record (i < count) */
static inline const est_span_t *est_trace_sink_at(const est_trace_sink_t *s, size_t i)
{
    return &s->ring[(s->head + i) % EST_TRACE_RING_SIZE];
}
/* forgets the n oldest records */
void est_trace_sink_pop(est_trace_sink_t *s, size_t n);

/* copies `src` (len bytes, or up to NUL when len is SIZE_MAX) into dst[cap], truncated, NUL-terminated */
void est_trace_copy(char *dst, size_t cap, const char *src, size_t len);

/*
 * Records the client span of one upstream attempt when `t` is sampled: `span_id` is the
 * parent-id the attempt sent; strings are copied; `status` 0 when no head came; `error` NULL
 * when the attempt did not fail.
 */
void est_trace_record_client(est_trace_ctx_t *t, const uint8_t span_id[8], uint64_t start_ns, uint64_t end_ns, const char *method,
                             size_t method_len, const char *upstream, const char *address, int status, unsigned attempt,
                             const char *error);
/* Records the server span of the request when `t` is sampled (route NULL: no route matched) */
void est_trace_record_server(est_trace_ctx_t *t, uint64_t end_ns, const char *method, size_t method_len, const char *route,
                             const char *path, size_t path_len, int status);

/* ---- OTLP/HTTP JSON (otlp.c) ---------------------------------------------------------------- */

typedef struct est_trace_buf {
    char *base;
    size_t len, cap;
    int failed; /* out of memory: the content is incomplete */
} est_trace_buf_t;

void est_trace_buf_dispose(est_trace_buf_t *b);
/*
 * Appends an ExportTraceServiceRequest in OTLP/HTTP JSON encoding (ids as lower-case hex,
 * times as decimal strings, enums as numbers) holding the `n` oldest records of `s` under one
 * resource with service.name `service`. Returns 0, or -1 when out of memory.
 */
int est_trace_otlp_encode(est_trace_buf_t *b, const char *service, const est_trace_sink_t *s, size_t n);

#endif
