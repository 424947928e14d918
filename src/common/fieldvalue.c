/*
 * estuary - pure helpers over HTTP field values; see fieldvalue.h.
 */
#include "common/fieldvalue.h"

#include <strings.h>

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

int est_list_next(const char **cur, const char *end, const char **el, size_t *el_len)
{
    const char *p = *cur, *s, *e;
    if (p == NULL)
        return 0;
    while (p < end && is_ows(*p))
        ++p;
    s = p;
    while (p < end && *p != ',')
        ++p;
    e = p;
    while (e > s && is_ows(e[-1]))
        --e;
    *cur = p < end ? p + 1 : NULL;
    *el = s;
    *el_len = (size_t)(e - s);
    return 1;
}

int est_list_has_token(const char *v, size_t len, const char *tok, size_t tok_len)
{
    const char *cur = v, *el;
    size_t el_len;
    if (tok_len == 0)
        return 0;
    while (est_list_next(&cur, v + len, &el, &el_len))
        if (el_len == tok_len && strncasecmp(el, tok, tok_len) == 0)
            return 1;
    return 0;
}

int est_parse_decimal(const char *v, size_t len, uint64_t *out)
{
    uint64_t x = 0;
    if (len == 0)
        return -1;
    for (size_t i = 0; i < len; ++i) {
        unsigned d = (unsigned)(unsigned char)v[i] - '0';
        if (d > 9 || x > (UINT64_MAX - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    *out = x;
    return 0;
}

int est_parse_content_length(const char *v, size_t len, uint64_t *out)
{
    const char *cur = v, *el;
    size_t el_len;
    int seen = 0;
    while (est_list_next(&cur, v + len, &el, &el_len)) {
        uint64_t x;
        if (est_parse_decimal(el, el_len, &x) != 0)
            return -1;
        if (seen && x != *out)
            return -2;
        *out = x;
        seen = 1;
    }
    return 0;
}
