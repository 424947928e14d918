/*
 * estuary - W3C Trace Context: traceparent parsing and formatting, tracestate checks (see
 * traceparent.h).
 */
#include "trace/traceparent.h"

#include <string.h>

/* a lower-case hex digit's value, or -1 (§3.2.2: upper-case hex is invalid) */
static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* 2n lower-case hex digits into n bytes; -1 on any other character */
static int unhex(const char *s, uint8_t *out, size_t n)
{
    for (size_t i = 0; i != n; ++i) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static int all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i != n; ++i)
        if (b[i] != 0)
            return 0;
    return 1;
}

int est_traceparent_parse(const char *s, size_t len, est_traceparent_t *out)
{
    uint8_t version;
    est_traceparent_t tp;
    if (s == NULL || len < EST_TRACEPARENT_LEN)
        return -1;
    if (unhex(s, &version, 1) != 0 || version == 0xff || s[2] != '-')
        return -1;
    /* version 00: exactly this length; a later version may append "-..." (§4.3) */
    if (version == 0 ? len != EST_TRACEPARENT_LEN : (len > EST_TRACEPARENT_LEN && s[EST_TRACEPARENT_LEN] != '-'))
        return -1;
    if (unhex(s + 3, tp.trace_id, 16) != 0 || s[35] != '-' || unhex(s + 36, tp.parent_id, 8) != 0 || s[52] != '-' ||
        unhex(s + 53, &tp.flags, 1) != 0)
        return -1;
    if (all_zero(tp.trace_id, 16) || all_zero(tp.parent_id, 8))
        return -1; /* §3.2.2.3, §3.2.2.4: all-zero ids are invalid */
    *out = tp;
    return 0;
}

void est_hex_lower(char *out, const uint8_t *bytes, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i != n; ++i) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0xf];
    }
}

void est_traceparent_format(char *out, const uint8_t trace_id[16], const uint8_t span_id[8], uint8_t flags)
{
    memcpy(out, "00-", 3);
    est_hex_lower(out + 3, trace_id, 16);
    out[35] = '-';
    est_hex_lower(out + 36, span_id, 8);
    out[52] = '-';
    est_hex_lower(out + 53, &flags, 1);
}

int est_tracestate_ok(const char *s, size_t len)
{
    if (s == NULL || len == 0 || len > EST_TRACESTATE_MAX)
        return 0;
    for (size_t i = 0; i != len; ++i) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c > 0x7e)
            return 0;
    }
    return 1;
}
