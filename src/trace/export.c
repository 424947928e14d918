/*
 * estuary - the per-worker OTLP/HTTP exporter (see export.h).
 */
#include "trace/export.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "upstream/client.h"

#define EXPORT_BOUND_MS 5000 /* one export, every attempt included */

struct est_tracer {
    est_trace_sink_t sink; /* first: the sink's callbacks lead back here */
    h2o_loop_t *loop;
    const est_tracing_conf_t *conf;
    est_config_t uconf; /* a one-upstream config for est_upstream_set_create (upstreams = conf->otlp_upstream) */
    est_upstream_set_t *uset;
    h2o_timeout_t *tick, *zero;
    h2o_timeout_entry_t tick_entry, kick_entry;
    /* the export in flight (x != NULL): `sent` records serialized into `body` */
    est_exchange_t *x;
    est_upstream_request_t req;
    h2o_header_t headers[1];
    est_trace_buf_t body;
    size_t sent;
    int status;
    uint64_t failures_logged_at;
};

static void send_batch(est_tracer_t *t);

static void export_ended(est_tracer_t *t, int ok, const char *why)
{
    t->x = NULL;
    if (ok) {
        *t->sink.exported += t->sent;
    } else {
        *t->sink.dropped += t->sent;
        uint64_t now = h2o_now(t->loop);
        if (t->failures_logged_at == 0 || now - t->failures_logged_at >= 10000) { /* at most one line per 10 s */
            t->failures_logged_at = now;
            est_log_warn("tracing: export of %zu spans to %s failed (%s); they are dropped", t->sent, t->conf->otlp_endpoint, why);
        }
    }
    t->sent = 0;
    /* a full batch waiting: send it from the loop at once rather than at the next tick */
    if (t->sink.count >= EST_TRACE_BATCH && !h2o_timeout_is_linked(&t->kick_entry))
        h2o_timeout_link(t->loop, t->zero, &t->kick_entry);
}

static int on_head(est_exchange_t *x, void *data, int status, const struct phr_header *headers, size_t num_headers)
{
    est_tracer_t *t = data;
    t->status = status;
    if (status < 200 || status > 299) {
        char why[32];
        snprintf(why, sizeof(why), "status %d", status);
        export_ended(t, 0, why);
        return -1; /* no callback follows */
    }
    return 0;
}

static int on_body(est_exchange_t *x, void *data, const char *bytes, size_t len, int is_final)
{
    /* the reply (an ExportTraceServiceResponse, maybe a partial success) is not kept */
    if (is_final)
        export_ended(data, 1, NULL);
    return 0;
}

static void on_error(est_exchange_t *x, void *data, est_uerr_t err, const char *message)
{
    export_ended(data, 0, est_uerr_name(err));
}

static const est_exchange_cb_t exchange_cb = {on_head, on_body, on_error, NULL};

/* serializes the oldest records and POSTs them; at most one export in flight */
static void send_batch(est_tracer_t *t)
{
    if (t->x != NULL || t->sink.count == 0)
        return;
    size_t n = t->sink.count < EST_TRACE_BATCH ? t->sink.count : EST_TRACE_BATCH;
    t->body.len = 0;
    t->body.failed = 0;
    int rc = est_trace_otlp_encode(&t->body, t->conf->service_name, &t->sink, n);
    est_trace_sink_pop(&t->sink, n);
    t->sent = n;
    if (rc != 0) {
        export_ended(t, 0, "out of memory");
        return;
    }
    memset(&t->req, 0, sizeof(t->req));
    t->headers[0].name = &H2O_TOKEN_CONTENT_TYPE->buf;
    t->headers[0].value = h2o_iovec_init(H2O_STRLIT("application/json"));
    t->req.method = h2o_iovec_init(H2O_STRLIT("POST"));
    t->req.path = h2o_iovec_init(t->conf->otlp_path, strlen(t->conf->otlp_path));
    t->req.headers = t->headers;
    t->req.num_headers = 1;
    t->req.body = h2o_iovec_init(t->body.base, t->body.len);
    t->req.has_body = 1;
    t->req.is_idempotent = 0; /* retried only when never sent: a collector may have stored it */
    t->req.deadline = h2o_now(t->loop) + EXPORT_BOUND_MS;
    t->req.deadline_covers_body = 1;
    t->status = 0;
    if ((t->x = est_exchange_start(est_upstream_set_get(t->uset, 0), &t->req, &exchange_cb, t)) == NULL)
        export_ended(t, 0, "cannot start the request");
}

static void on_tick(h2o_timeout_entry_t *e)
{
    est_tracer_t *t = H2O_STRUCT_FROM_MEMBER(est_tracer_t, tick_entry, e);
    h2o_timeout_link(t->loop, t->tick, &t->tick_entry);
    send_batch(t);
}

static void on_kick(h2o_timeout_entry_t *e)
{
    send_batch(H2O_STRUCT_FROM_MEMBER(est_tracer_t, kick_entry, e));
}

/* (request path) a full batch is queued: send it from the loop, not from inside the request */
static void on_batch_ready(est_trace_sink_t *s)
{
    est_tracer_t *t = (est_tracer_t *)s;
    if (t->x == NULL && !h2o_timeout_is_linked(&t->kick_entry))
        h2o_timeout_link(t->loop, t->zero, &t->kick_entry);
}

est_tracer_t *est_tracer_create(h2o_loop_t *loop, est_dns_t *dns, const est_tracing_conf_t *conf, h2o_timeout_t *tick,
                                h2o_timeout_t *zero, uint64_t *dropped, uint64_t *exported)
{
    if (conf == NULL || conf->otlp_upstream == NULL || conf->otlp_path == NULL)
        return NULL;
    est_tracer_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    if (est_trace_sink_init(&t->sink, conf->sample_ratio, dropped, exported) != 0) {
        free(t);
        return NULL;
    }
    t->sink.on_batch_ready = on_batch_ready;
    t->loop = loop;
    t->conf = conf;
    t->uconf.upstreams = conf->otlp_upstream;
    t->uconf.num_upstreams = 1;
    if ((t->uset = est_upstream_set_create(loop, dns, &t->uconf)) == NULL) {
        est_trace_sink_dispose(&t->sink);
        free(t);
        return NULL;
    }
    t->tick = tick;
    t->zero = zero;
    t->tick_entry.cb = on_tick;
    t->kick_entry.cb = on_kick;
    h2o_timeout_link(loop, tick, &t->tick_entry);
    return t;
}

est_trace_sink_t *est_tracer_sink(est_tracer_t *t)
{
    return &t->sink;
}

int est_tracer_flush(est_tracer_t *t)
{
    if (t == NULL)
        return 0;
    send_batch(t); /* nothing while one is in flight: a later call sends the next batch */
    return t->x != NULL || t->sink.count != 0;
}

void est_tracer_destroy(est_tracer_t *t, est_tracer_t *heir)
{
    if (t == NULL)
        return;
    if (h2o_timeout_is_linked(&t->tick_entry))
        h2o_timeout_unlink(&t->tick_entry);
    if (h2o_timeout_is_linked(&t->kick_entry))
        h2o_timeout_unlink(&t->kick_entry);
    if (t->x != NULL) {
        est_exchange_cancel(t->x);
        t->x = NULL;
        *t->sink.dropped += t->sent;
    }
    if (heir != NULL && heir != t) {
        for (size_t i = 0; i != t->sink.count; ++i)
            *est_trace_sink_push(&heir->sink) = *est_trace_sink_at(&t->sink, i);
        if (heir->sink.count >= EST_TRACE_BATCH)
            on_batch_ready(&heir->sink);
    } else {
        *t->sink.dropped += t->sink.count;
    }
    est_upstream_set_destroy(t->uset);
    est_trace_sink_dispose(&t->sink);
    est_trace_buf_dispose(&t->body);
    free(t);
}
