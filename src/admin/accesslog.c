/*
 * estuary - the access log (see accesslog.h).
 */
#include "admin/accesslog.h"
#include "trace/traceparent.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/jsonutil.h"
#include "common/log.h"

#define FLUSH_INTERVAL_MS 100
#define KICK_AT (64 * 1024)
#define MAX_PENDING (16 * 1024 * 1024)

typedef struct st_worker_buf_t {
    pthread_mutex_t mu;
    est_strbuf_t buf;  /* lines waiting for the writer */
    uint64_t dropped;  /* lines dropped since the writer last looked */
} worker_buf_t;

struct est_accesslog {
    char *path; /* NULL: stderr */
    int fd;
    size_t num_workers;
    worker_buf_t *workers;
    pthread_t tid;
    pthread_mutex_t mu; /* guards the flags below and the condition */
    pthread_cond_t cond;
    int stop, reopen, kicked;
};

/* ---- line builder ---------------------------------------------------------------------- */

/*
 * Built without printf (it was ~7 k instructions of the ~17 k a line cost): fixed text is
 * copied as literals, integers are formatted by hand, strings are copied as they are unless
 * they need escaping. The output is byte for byte what the printf version wrote.
 */

/* est_strbuf_append without the call and the NUL (est_accesslog_build writes it at the end) */
static inline void put(est_strbuf_t *out, const char *s, size_t n)
{
    if (out->cap - out->len <= n)
        est_strbuf_reserve(out, n);
    memcpy(out->base + out->len, s, n);
    out->len += n;
}

#define LIT(out, s) put((out), (s), sizeof(s) - 1)

static void append_u64(est_strbuf_t *out, uint64_t v)
{
    char buf[24], *end = buf + sizeof(buf);
    char *p = est_u64_digits(end, v);
    put(out, p, (size_t)(end - p));
}

static void append_int(est_strbuf_t *out, int v)
{
    if (v < 0) {
        LIT(out, "-");
        append_u64(out, (uint64_t)(-(int64_t)v));
    } else {
        append_u64(out, (uint64_t)v);
    }
}

/* "%.3f" of a non-negative double; hands the rare case printf's exact rounding could differ
 * from ours (a value too large, or one within a hair of a rounding tie) to snprintf */
static void append_ms(est_strbuf_t *out, double ms)
{
    if (ms < 0)
        ms = 0;
    if (ms < 1e9) { /* 11 days: the product keeps ~1e-4 of precision below the ms */
        double scaled = ms * 1000.0;
        uint64_t whole = (uint64_t)scaled;
        double frac = scaled - (double)whole;
        if (frac < 0.4999 || frac > 0.5001) {
            uint64_t v = whole + (frac > 0.5);
            char buf[32], *end = buf + sizeof(buf);
            char *p = end;
            for (int i = 0; i != 3; ++i) {
                *--p = (char)('0' + v % 10);
                v /= 10;
            }
            *--p = '.';
            p = est_u64_digits(p, v);
            put(out, p, (size_t)(end - p));
            return;
        }
    }
    est_strbuf_appendf(out, "%.3f", ms);
}

/* a JSON string: copied at once when no byte needs escaping (the common case) */
static void append_string(est_strbuf_t *out, const char *s, size_t len)
{
    for (size_t i = 0; i != len; ++i) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
            est_strbuf_append_json_string(out, s, len);
            return;
        }
    }
    if (out->cap - out->len <= len + 2)
        est_strbuf_reserve(out, len + 2);
    out->base[out->len++] = '"';
    memcpy(out->base + out->len, s, len);
    out->len += len;
    out->base[out->len++] = '"';
}

static void str_or_null(est_strbuf_t *out, const char *s, size_t len)
{
    if (s == NULL)
        LIT(out, "null");
    else
        append_string(out, s, len);
}

static void put2(char *p, int v)
{
    p[0] = (char)('0' + v / 10 % 10);
    p[1] = (char)('0' + v % 10);
}

/* "YYYY-MM-DDTHH:MM:SS" of the last second seen by this thread (gmtime_r once a second) */
static size_t format_second(time_t sec, char *dst)
{
    static _Thread_local time_t cached_sec = (time_t)-1;
    static _Thread_local char cached[32];
    static _Thread_local size_t cached_len;
    if (sec != cached_sec) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        int year = tm.tm_year + 1900;
        if (year >= 0 && year <= 9999) {
            char *p = cached;
            put2(p, year / 100);
            put2(p + 2, year % 100);
            p[4] = '-';
            put2(p + 5, tm.tm_mon + 1);
            p[7] = '-';
            put2(p + 8, tm.tm_mday);
            p[10] = 'T';
            put2(p + 11, tm.tm_hour);
            p[13] = ':';
            put2(p + 14, tm.tm_min);
            p[16] = ':';
            put2(p + 17, tm.tm_sec);
            cached_len = 19;
        } else {
            int n = snprintf(cached, sizeof(cached), "%04d-%02d-%02dT%02d:%02d:%02d", year, tm.tm_mon + 1, tm.tm_mday,
                             tm.tm_hour, tm.tm_min, tm.tm_sec);
            cached_len = n > 0 && (size_t)n < sizeof(cached) ? (size_t)n : 0;
        }
        cached_sec = sec;
    }
    memcpy(dst, cached, cached_len);
    return cached_len;
}

void est_accesslog_build(est_strbuf_t *out, const est_access_entry_t *e)
{
    char ts[48];
    size_t tl = format_second(e->time.tv_sec, ts);
    int msec = (int)((e->time.tv_nsec / 1000000) % 1000);
    if (msec < 0) { /* as "%03d" would print it */
        tl += (size_t)snprintf(ts + tl, sizeof(ts) - tl, ".%03dZ", msec);
    } else {
        ts[tl++] = '.';
        ts[tl++] = (char)('0' + msec / 100);
        ts[tl++] = (char)('0' + msec / 10 % 10);
        ts[tl++] = (char)('0' + msec % 10);
        ts[tl++] = 'Z';
    }
    est_strbuf_reserve(out, 256);
    LIT(out, "{\"time\":");
    append_string(out, ts, tl);
    LIT(out, ",\"request_id\":");
    str_or_null(out, e->request_id.base, e->request_id.len);
    LIT(out, ",\"remote\":");
    str_or_null(out, e->remote, e->remote != NULL ? strlen(e->remote) : 0);
    LIT(out, ",\"method\":");
    str_or_null(out, e->method.base, e->method.len);
    LIT(out, ",\"path\":");
    str_or_null(out, e->path.base, e->path.len);
    LIT(out, ",\"route\":");
    str_or_null(out, e->route, e->route != NULL ? strlen(e->route) : 0);
    LIT(out, ",\"status\":");
    append_int(out, e->status);
    LIT(out, ",\"bytes_sent\":");
    append_u64(out, e->bytes_sent);
    LIT(out, ",\"duration_ms\":");
    append_ms(out, e->duration_ms);
    LIT(out, ",\"upstreams\":[");
    unsigned retries = 0;
    if (e->trace != NULL) {
        retries = e->trace->retries;
        for (size_t i = 0; i != e->trace->num_exchanges; ++i) {
            const est_trace_exchange_t *x = e->trace->exchanges + i;
            if (i != 0)
                LIT(out, ",");
            LIT(out, "{\"upstream\":");
            str_or_null(out, x->upstream, x->upstream != NULL ? strlen(x->upstream) : 0);
            LIT(out, ",\"address\":");
            if (x->address[0] != '\0')
                append_string(out, x->address, strlen(x->address));
            else
                LIT(out, "null");
            LIT(out, ",\"status\":");
            append_int(out, x->status);
            if (x->error != EST_UERR_NONE || x->reason != NULL) {
                LIT(out, ",\"error\":");
                const char *en = x->reason != NULL ? x->reason : est_uerr_name(x->error);
                append_string(out, en, strlen(en));
            }
            LIT(out, ",\"connect_ms\":");
            append_u64(out, x->connect_ms);
            LIT(out, ",\"duration_ms\":");
            append_u64(out, x->duration_ms);
            LIT(out, ",\"attempt\":");
            append_u64(out, x->attempt);
            if (x->hedged) { /* (hedging) only when a hedge was sent: "hedge_won" says whose reply it is */
                LIT(out, ",\"hedge\":true,\"hedge_won\":");
                if (x->hedge_won)
                    LIT(out, "true");
                else
                    LIT(out, "false");
            }
            LIT(out, "}");
        }
    }
    LIT(out, "],\"retries\":");
    append_u64(out, retries);
    if (e->trace_id != NULL) {
        char hex[32];
        est_hex_lower(hex, e->trace_id, 16);
        LIT(out, ",\"trace_id\":");
        append_string(out, hex, sizeof(hex));
    }
    LIT(out, "}\n");
    out->base[out->len] = '\0'; /* put() leaves room for it */
}

/* ---- writer ------------------------------------------------------------------------------ */

static int open_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n != 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* the log is best effort: a full disk must not stop the gateway */
        }
        p += w;
        n -= (size_t)w;
    }
}

/* swaps every worker buffer with `spare` and writes it; returns the lines dropped */
static uint64_t drain(est_accesslog_t *log, est_strbuf_t *spare)
{
    uint64_t dropped = 0;
    for (size_t i = 0; i != log->num_workers; ++i) {
        worker_buf_t *wb = log->workers + i;
        pthread_mutex_lock(&wb->mu);
        est_strbuf_t t = wb->buf;
        wb->buf = *spare;
        *spare = t;
        dropped += wb->dropped;
        wb->dropped = 0;
        pthread_mutex_unlock(&wb->mu);
        if (spare->len != 0)
            write_all(log->fd, spare->base, spare->len);
        spare->len = 0;
        if (spare->cap > 4 * KICK_AT) /* do not keep a burst's memory around */
            est_strbuf_dispose(spare);
    }
    return dropped;
}

static void *writer_main(void *arg)
{
    est_accesslog_t *log = arg;
    est_strbuf_t spare = {0};
    for (;;) {
        pthread_mutex_lock(&log->mu);
        if (!log->stop && !log->reopen && !log->kicked) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += FLUSH_INTERVAL_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec += 1;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&log->cond, &log->mu, &until);
        }
        int stop = log->stop, reopen = log->reopen;
        log->reopen = 0;
        log->kicked = 0;
        pthread_mutex_unlock(&log->mu);

        uint64_t dropped = drain(log, &spare);
        if (dropped != 0)
            est_log_warn("access log: %llu line(s) dropped (the log could not keep up)", (unsigned long long)dropped);
        if (reopen && log->path != NULL) {
            int fd = open_file(log->path);
            if (fd == -1) {
                est_log_error("access log: cannot reopen %s: %s (still writing to the old file)", log->path, strerror(errno));
            } else {
                close(log->fd);
                log->fd = fd;
                est_log_info("access log: reopened %s", log->path);
            }
        }
        if (stop)
            break;
    }
    est_strbuf_dispose(&spare);
    return NULL;
}

est_accesslog_t *est_accesslog_create(const char *path, size_t num_workers, char *err, size_t errsz)
{
    int fd = 2;
    if (path != NULL && (fd = open_file(path)) == -1) {
        snprintf(err, errsz, "access log: cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    est_accesslog_t *log = calloc(1, sizeof(*log));
    if (log == NULL)
        abort();
    log->path = path != NULL ? strdup(path) : NULL;
    log->fd = fd;
    log->num_workers = num_workers;
    log->workers = calloc(num_workers == 0 ? 1 : num_workers, sizeof(*log->workers));
    if (log->workers == NULL)
        abort();
    for (size_t i = 0; i != num_workers; ++i)
        pthread_mutex_init(&log->workers[i].mu, NULL);
    pthread_mutex_init(&log->mu, NULL);
    pthread_cond_init(&log->cond, NULL);
    if (pthread_create(&log->tid, NULL, writer_main, log) != 0)
        abort();
    return log;
}

static void signal_writer(est_accesslog_t *log, int *flag)
{
    pthread_mutex_lock(&log->mu);
    *flag = 1;
    pthread_cond_signal(&log->cond);
    pthread_mutex_unlock(&log->mu);
}

void est_accesslog_append(est_accesslog_t *log, size_t worker, const char *line, size_t len)
{
    worker_buf_t *wb = log->workers + worker;
    int kick = 0;
    pthread_mutex_lock(&wb->mu);
    if (wb->buf.len + len > MAX_PENDING) {
        ++wb->dropped;
    } else {
        size_t before = wb->buf.len;
        est_strbuf_append(&wb->buf, line, len);
        kick = before < KICK_AT && wb->buf.len >= KICK_AT;
    }
    pthread_mutex_unlock(&wb->mu);
    if (kick) /* rare: once per 64 KiB; wakes the writer before its 100 ms tick */
        signal_writer(log, &log->kicked);
}

void est_accesslog_reopen(est_accesslog_t *log)
{
    if (log != NULL)
        signal_writer(log, &log->reopen);
}

void est_accesslog_destroy(est_accesslog_t *log)
{
    if (log == NULL)
        return;
    signal_writer(log, &log->stop);
    pthread_join(log->tid, NULL);
    for (size_t i = 0; i != log->num_workers; ++i) {
        pthread_mutex_destroy(&log->workers[i].mu);
        est_strbuf_dispose(&log->workers[i].buf);
    }
    pthread_mutex_destroy(&log->mu);
    pthread_cond_destroy(&log->cond);
    if (log->fd != 2)
        close(log->fd);
    free(log->workers);
    free(log->path);
    free(log);
}
