/*
 * estuary - value syntaxes of the config file: method names, durations, sizes; the error list.
 */
#include "config/config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

unsigned est_method_from_name(const char *name, size_t len)
{
    for (unsigned i = 0; i < EST_METHOD__COUNT; i++) {
        const char *n = est_method_name(1u << i);
        if (strlen(n) == len && strncasecmp(n, name, len) == 0)
            return 1u << i;
    }
    return 0;
}

/*
 * Durations: one or more <digits><unit> with units h, m, s, ms, each at most once and in
 * that order ("1h30m", "1m30s", "1s500ms"); no sign, no spaces, no fractions.
 */
int est_parse_duration(const char *s, uint64_t *ms)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
    uint64_t total = 0;
    size_t next_unit = 0; /* units must come in decreasing order */
    const char *p = s;

    if (s == NULL || *s == '\0')
        return -1;
    while (*p != '\0') {
        uint64_t n = 0;
        if (!(*p >= '0' && *p <= '9'))
            return -1;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (n > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
                return -1;
            n = n * 10 + (uint64_t)(*p - '0');
        }
        size_t u;
        if (p[0] == 'm' && p[1] == 's')
            u = 3;
        else if (p[0] == 'h')
            u = 0;
        else if (p[0] == 'm')
            u = 1;
        else if (p[0] == 's')
            u = 2;
        else
            return -1;
        if (u < next_unit)
            return -1;
        next_unit = u + 1;
        p += strlen(units[u].unit);
        if (n > UINT64_MAX / units[u].ms || total > UINT64_MAX - n * units[u].ms)
            return -1;
        total += n * units[u].ms;
    }
    *ms = total;
    return 0;
}

void est_format_duration(uint64_t ms, char *buf, size_t bufsz)
{
    uint64_t h = ms / 3600000, m = ms / 60000 % 60, s = ms / 1000 % 60, r = ms % 1000;
    size_t off = 0;
    if (bufsz == 0)
        return;
    buf[0] = '\0';
    if (ms == 0) {
        snprintf(buf, bufsz, "0s");
        return;
    }
#define APPEND(v, u)                                                                                                               \
    if ((v) != 0 && off < bufsz) {                                                                                                 \
        int n_ = snprintf(buf + off, bufsz - off, "%llu%s", (unsigned long long)(v), u);                                           \
        off += n_ > 0 ? (size_t)n_ : 0;                                                                                            \
    }
    APPEND(h, "h");
    APPEND(m, "m");
    APPEND(s, "s");
    APPEND(r, "ms");
#undef APPEND
}

/*
 * Sizes as strings: digits, optionally followed by exactly "KiB", "MiB" or "GiB"
 * ("1048576", "512KiB", "8MiB"). Units are case-sensitive so that "MB" (10^6) and "mb"
 * are not silently taken for MiB.
 */
int est_parse_size_string(const char *s, uint64_t *bytes)
{
    uint64_t n = 0, mult = 1;
    const char *p = s;
    if (s == NULL || !(*p >= '0' && *p <= '9'))
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
            return -1;
        n = n * 10 + (uint64_t)(*p - '0');
    }
    if (strcmp(p, "") == 0)
        mult = 1;
    else if (strcmp(p, "KiB") == 0)
        mult = 1024;
    else if (strcmp(p, "MiB") == 0)
        mult = 1024 * 1024;
    else if (strcmp(p, "GiB") == 0)
        mult = 1024 * 1024 * 1024;
    else
        return -1;
    if (n > UINT64_MAX / mult)
        return -1;
    *bytes = n * mult;
    return 0;
}

void est_errors_add(est_errors_t *errs, const char *fmt, ...)
{
    va_list ap;
    char *msg = NULL;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || (msg = malloc((size_t)n + 1)) == NULL)
        return; /* out of memory: the message is lost, the load still fails */
    va_start(ap, fmt);
    vsnprintf(msg, (size_t)n + 1, fmt, ap);
    va_end(ap);
    char **items = realloc(errs->items, (errs->count + 1) * sizeof(*items));
    if (items == NULL) {
        free(msg);
        return;
    }
    errs->items = items;
    errs->items[errs->count++] = msg;
}

void est_errors_clear(est_errors_t *errs)
{
    for (size_t i = 0; i < errs->count; i++)
        free(errs->items[i]);
    free(errs->items);
    errs->items = NULL;
    errs->count = 0;
}
