/*
 * estuary - span records as OTLP/HTTP JSON (ExportTraceServiceRequest; opentelemetry-proto
 * "JSON Protobuf Encoding": trace and span ids as hex, 64-bit integers as decimal strings,
 * enums as numbers). Attribute names follow the OpenTelemetry HTTP semantic conventions.
 */
#include "trace/span.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void est_trace_buf_dispose(est_trace_buf_t *b)
{
    free(b->base);
    memset(b, 0, sizeof(*b));
}

static int reserve(est_trace_buf_t *b, size_t n)
{
    if (b->failed)
        return -1;
    if (b->len + n + 1 <= b->cap)
        return 0;
    size_t cap = b->cap != 0 ? b->cap : 4096;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *p = realloc(b->base, cap);
    if (p == NULL) {
        b->failed = 1;
        return -1;
    }
    b->base = p;
    b->cap = cap;
    return 0;
}

static void put(est_trace_buf_t *b, const char *s, size_t n)
{
    if (reserve(b, n) != 0)
        return;
    memcpy(b->base + b->len, s, n);
    b->len += n;
    b->base[b->len] = '\0';
}

#define PUT_LIT(b, s) put(b, s, sizeof(s) - 1)

/* a JSON string: quotes, backslashes, control characters and bytes >= 0x80 escaped as \u00XX,
 * so the document is valid UTF-8 whatever a path held */
static void put_str(est_trace_buf_t *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(s);
    if (reserve(b, 6 * n + 2) != 0)
        return;
    char *p = b->base + b->len;
    *p++ = '"';
    for (size_t i = 0; i != n; ++i) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            memcpy(p, "\\u00", 4);
            p[4] = hex[c >> 4];
            p[5] = hex[c & 0xf];
            p += 6;
        } else {
            *p++ = (char)c;
        }
    }
    *p++ = '"';
    b->len = (size_t)(p - b->base);
    b->base[b->len] = '\0';
}

static void put_hex(est_trace_buf_t *b, const uint8_t *id, size_t n)
{
    char tmp[34];
    tmp[0] = '"';
    est_hex_lower(tmp + 1, id, n);
    tmp[2 * n + 1] = '"';
    put(b, tmp, 2 * n + 2);
}

static void put_u64_str(est_trace_buf_t *b, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "\"%llu\"", (unsigned long long)v);
    put(b, tmp, (size_t)n);
}

/* one attribute: `first` says whether a comma goes before it */
static void attr_str(est_trace_buf_t *b, int *first, const char *key, const char *v)
{
    if (!*first)
        PUT_LIT(b, ",");
    *first = 0;
    PUT_LIT(b, "{\"key\":");
    put_str(b, key);
    PUT_LIT(b, ",\"value\":{\"stringValue\":");
    put_str(b, v);
    PUT_LIT(b, "}}");
}

static void attr_int(est_trace_buf_t *b, int *first, const char *key, uint64_t v)
{
    if (!*first)
        PUT_LIT(b, ",");
    *first = 0;
    PUT_LIT(b, "{\"key\":");
    put_str(b, key);
    PUT_LIT(b, ",\"value\":{\"intValue\":");
    put_u64_str(b, v);
    PUT_LIT(b, "}}");
}

/* "ip:port" / "[ip6]:port" -> network.peer.address and network.peer.port */
static void attr_peer(est_trace_buf_t *b, int *first, const char *address)
{
    const char *colon = strrchr(address, ':');
    if (colon == NULL || colon == address)
        return;
    char ip[64];
    const char *from = address;
    size_t n = (size_t)(colon - address);
    if (address[0] == '[' && n >= 2 && address[n - 1] == ']') {
        from++;
        n -= 2;
    }
    est_trace_copy(ip, sizeof(ip), from, n);
    attr_str(b, first, "network.peer.address", ip);
    attr_int(b, first, "network.peer.port", strtoull(colon + 1, NULL, 10));
}

static void put_span(est_trace_buf_t *b, const est_span_t *sp)
{
    char name[sizeof(sp->method) + sizeof(sp->name) + 2];
    PUT_LIT(b, "{\"traceId\":");
    put_hex(b, sp->trace_id, 16);
    PUT_LIT(b, ",\"spanId\":");
    put_hex(b, sp->span_id, 8);
    if (sp->has_parent) {
        PUT_LIT(b, ",\"parentSpanId\":");
        put_hex(b, sp->parent_id, 8);
    }
    /* server: "GET /users/{id}" (the route template, low cardinality); client: "GET users" */
    if (sp->name[0] != '\0')
        snprintf(name, sizeof(name), "%s %s", sp->method, sp->name);
    else
        snprintf(name, sizeof(name), "%s", sp->method);
    PUT_LIT(b, ",\"name\":");
    put_str(b, name);
    if (sp->kind == EST_SPAN_KIND_SERVER)
        PUT_LIT(b, ",\"kind\":2");
    else
        PUT_LIT(b, ",\"kind\":3");
    PUT_LIT(b, ",\"startTimeUnixNano\":");
    put_u64_str(b, sp->start_ns);
    PUT_LIT(b, ",\"endTimeUnixNano\":");
    put_u64_str(b, sp->end_ns);
    PUT_LIT(b, ",\"attributes\":[");
    int first = 1;
    attr_str(b, &first, "http.request.method", sp->method);
    if (sp->kind == EST_SPAN_KIND_SERVER) {
        attr_str(b, &first, "url.path", sp->path);
        if (sp->name[0] != '\0')
            attr_str(b, &first, "http.route", sp->name);
    } else {
        attr_str(b, &first, "estuary.upstream", sp->name);
        if (sp->address[0] != '\0')
            attr_peer(b, &first, sp->address);
        attr_int(b, &first, "estuary.attempt", sp->attempt);
        if (sp->attempt > 1)
            attr_int(b, &first, "http.request.resend_count", sp->attempt - 1u);
        if (sp->error_type[0] != '\0')
            attr_str(b, &first, "error.type", sp->error_type);
    }
    if (sp->status != 0)
        attr_int(b, &first, "http.response.status_code", sp->status);
    PUT_LIT(b, "]");
    if (sp->is_error) {
        /* STATUS_CODE_ERROR = 2 */
        PUT_LIT(b, ",\"status\":{\"code\":2");
        if (sp->error_type[0] != '\0') {
            PUT_LIT(b, ",\"message\":");
            put_str(b, sp->error_type);
        }
        PUT_LIT(b, "}}");
    } else {
        PUT_LIT(b, ",\"status\":{}}");
    }
}

int est_trace_otlp_encode(est_trace_buf_t *b, const char *service, const est_trace_sink_t *s, size_t n)
{
    if (n > s->count)
        n = s->count;
    PUT_LIT(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":");
    put_str(b, service);
    PUT_LIT(b, "}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"estuary\",\"version\":\"" ESTUARY_VERSION "\"},\"spans\":[");
    for (size_t i = 0; i != n; ++i) {
        if (i != 0)
            PUT_LIT(b, ",");
        put_span(b, est_trace_sink_at(s, i));
    }
    PUT_LIT(b, "]}]}]}");
    return b->failed ? -1 : 0;
}
