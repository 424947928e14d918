/*
 * estuary - growable byte buffer (see strbuf.h).
 */
#include "admin/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void est_strbuf_reserve(est_strbuf_t *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap < 256 ? 256 : b->cap;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->base, cap);
    if (p == NULL)
        abort();
    b->base = p;
    b->cap = cap;
}

void est_strbuf_append(est_strbuf_t *b, const char *s, size_t n)
{
    est_strbuf_reserve(b, n);
    if (n != 0)
        memcpy(b->base + b->len, s, n);
    b->len += n;
    b->base[b->len] = '\0';
}

void est_strbuf_appends(est_strbuf_t *b, const char *s)
{
    est_strbuf_append(b, s, strlen(s));
}

void est_strbuf_appendf(est_strbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(small)) {
        est_strbuf_append(b, small, (size_t)n);
        return;
    }
    est_strbuf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->base + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* length of the valid UTF-8 sequence at s (RFC 3629), 0 when invalid */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, min = 0x10000;
    else
        return 0;
    if (n < len)
        return 0;
    unsigned cp = c & (0x7f >> len);
    for (size_t i = 1; i != len; ++i) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

void est_strbuf_append_json_string(est_strbuf_t *b, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    est_strbuf_reserve(b, n + 2);
    est_strbuf_append(b, "\"", 1);
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            est_strbuf_append(b, esc, 2);
            ++i;
        } else if (c < 0x20 || c == 0x7f) {
            const char *e = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
            if (e != NULL)
                est_strbuf_append(b, e, 2);
            else
                est_strbuf_appendf(b, "\\u%04x", c);
            ++i;
        } else if (c < 0x80) {
            size_t j = i + 1;
            while (j < n && s[j] >= 0x20 && s[j] < 0x7f && s[j] != '"' && s[j] != '\\')
                ++j;
            est_strbuf_append(b, str + i, j - i);
            i = j;
        } else {
            size_t len = utf8_seq_len(s + i, n - i);
            if (len == 0) {
                est_strbuf_append(b, "\\ufffd", 6);
                ++i;
            } else {
                est_strbuf_append(b, str + i, len);
                i += len;
            }
        }
    }
    est_strbuf_append(b, "\"", 1);
}

void est_strbuf_dispose(est_strbuf_t *b)
{
    free(b->base);
    b->base = NULL;
    b->len = b->cap = 0;
}
