/*
 * estuary - the OTLP/HTTP exporter of one worker's configuration generation (SPEC "Tracing").
 *
 * Share-nothing: each worker's generation view (server/worker_gen.c) with "tracing" owns one
 * est_tracer_t on its loop: a span ring (span.h), a private upstream set for the endpoint
 * (the configured otlp_upstream: estuary's own client with its pool, DNS, TLS and retries),
 * a 1 s tick, and at most one export in flight. Every tick, or as soon as EST_TRACE_BATCH
 * records are queued, the oldest records (at most EST_TRACE_BATCH) are serialized as OTLP
 * JSON and POSTed; while an export runs, records wait in the ring, which drops its oldest
 * when full. Records of a failed export (no 2xx, error, timeout) are counted as dropped, a
 * 2xx counts them as exported. Nothing here runs on the request path: requests only copy a
 * record into the ring (span.h). Worker thread only.
 */
#ifndef EST_TRACE_EXPORT_H
#define EST_TRACE_EXPORT_H

#include <stdint.h>
#include <h2o.h>
#include "config/config.h"
#include "trace/span.h"
#include "upstream/dns.h"

typedef struct est_tracer est_tracer_t;

/*
 * A tracer for `conf` (borrowed: it must outlive the tracer, as the generation does) on
 * `loop`: `tick` is a 1000 ms and `zero` a 0 ms timeout of that loop (owned by the caller,
 * disposed after the tracer); `dropped`/`exported` the worker's counters. NULL when out of
 * memory or when the endpoint's upstream cannot be set up (logged).
 */
est_tracer_t *est_tracer_create(h2o_loop_t *loop, est_dns_t *dns, const est_tracing_conf_t *conf, h2o_timeout_t *tick,
                                h2o_timeout_t *zero, uint64_t *dropped, uint64_t *exported);
/* the ring requests record into (lives as long as the tracer) */
est_trace_sink_t *est_tracer_sink(est_tracer_t *t);
/*
 * (graceful shutdown, after the drain: no request records any more) starts exporting what is
 * queued now rather than at the next tick, one batch at a time as before. Returns 1 while an
 * export runs or records wait, 0 once none is left (NULL: 0). The caller keeps running the
 * loop between calls and bounds the wait (server.c: TRACE_FLUSH_MS); est_tracer_destroy then
 * counts what is left as dropped.
 */
int est_tracer_flush(est_tracer_t *t);
/*
 * Destroys `t` (NULL is fine): an export in flight is cancelled and its records counted as
 * dropped; the records still queued move to `heir` (the worker's next tracer) when there is
 * one, else they are counted as dropped. No request may still record into `t`.
 */
void est_tracer_destroy(est_tracer_t *t, est_tracer_t *heir);

#endif
