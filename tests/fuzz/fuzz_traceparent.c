/*
 * estuary - libFuzzer driver for W3C Trace Context handling (src/trace): traceparent
 * parsing and formatting, tracestate checks, a request's trace context and the headers an
 * upstream attempt writes from it.
 *
 * Input: "TRACEPARENT\nTRACESTATE" (no newline: all of it is the traceparent).
 * Checks: no crash or overflow; a parsed version-00 value formats back to itself; a parsed
 * value never has all-zero ids; the written headers fit est_trace_headers_bound and hold no
 * CR/LF/NUL except the line ends (nothing a client sends can split the upstream request head).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trace/span.h"

static est_trace_sink_t sink;
static int sink_ready;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    const char *nl = memchr(s, '\n', size);
    size_t tp_len = nl != NULL ? (size_t)(nl - s) : size;
    const char *ts = nl != NULL ? nl + 1 : NULL;
    size_t ts_len = nl != NULL ? size - tp_len - 1 : 0;

    est_traceparent_t tp;
    if (est_traceparent_parse(s, tp_len, &tp) == 0) {
        static const uint8_t zero[16];
        if (memcmp(tp.trace_id, zero, 16) == 0 || memcmp(tp.parent_id, zero, 8) == 0)
            abort();
        char out[EST_TRACEPARENT_LEN];
        est_traceparent_format(out, tp.trace_id, tp.parent_id, tp.flags);
        if (s[0] == '0' && s[1] == '0' && memcmp(out, s, EST_TRACEPARENT_LEN) != 0)
            abort();
        est_traceparent_t back;
        if (est_traceparent_parse(out, EST_TRACEPARENT_LEN, &back) != 0 || memcmp(&back, &tp, sizeof(tp)) != 0)
            abort();
    }
    est_tracestate_ok(s, size);

    if (!sink_ready) {
        if (est_trace_sink_init(&sink, 0.5, NULL, NULL) != 0)
            abort();
        sink_ready = 1;
    }
    est_trace_ctx_t t;
    est_trace_begin(&t, &sink, s, tp_len, ts, ts_len, 1);
    uint8_t span[8];
    est_trace_new_id(&sink, span);
    size_t bound = est_trace_headers_bound(&t);
    char *buf = malloc(bound);
    if (buf == NULL)
        abort();
    size_t n = est_trace_write_headers(buf, &t, span);
    if (n > bound)
        abort();
    for (size_t i = 0; i != n; ++i) {
        char c = buf[i];
        if (c == '\0' || ((c == '\r' || c == '\n') &&
                          !((c == '\r' && i + 1 < n && buf[i + 1] == '\n') || (c == '\n' && i > 0 && buf[i - 1] == '\r'))))
            abort();
    }
    if (n < 2 || buf[n - 2] != '\r' || buf[n - 1] != '\n')
        abort();
    free(buf);
    est_trace_record_server(&t, 2, "GET", 3, "/r", s, size < 200 ? size : 200, 200);
    if (sink.count > EST_TRACE_BATCH)
        est_trace_sink_pop(&sink, SIZE_MAX);
    return 0;
}
