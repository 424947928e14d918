/*
 * estuary - the access log (see accesslog.h).
 */
#include "admin/accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static void key(est_strbuf_t *out, const char *k, int first)
{
    if (!first)
        est_strbuf_append(out, ",", 1);
    est_strbuf_append(out, "\"", 1);
    est_strbuf_appends(out, k);
    est_strbuf_append(out, "\":", 2);
}

static void str_or_null(est_strbuf_t *out, const char *s, size_t len)
{
    if (s == NULL)
        est_strbuf_append(out, "null", 4);
    else
        est_strbuf_append_json_string(out, s, len);
}

void est_accesslog_build(est_strbuf_t *out, const est_access_entry_t *e)
{
    struct tm tm;
    time_t sec = e->time.tv_sec;
    gmtime_r(&sec, &tm);
    char ts[80];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)((e->time.tv_nsec / 1000000) % 1000));
    est_strbuf_append(out, "{", 1);
    key(out, "time", 1);
    est_strbuf_append_json_string(out, ts, strlen(ts));
    key(out, "request_id", 0);
    str_or_null(out, e->request_id.base, e->request_id.len);
    key(out, "remote", 0);
    str_or_null(out, e->remote, e->remote != NULL ? strlen(e->remote) : 0);
    key(out, "method", 0);
    str_or_null(out, e->method.base, e->method.len);
    key(out, "path", 0);
    str_or_null(out, e->path.base, e->path.len);
    key(out, "route", 0);
    str_or_null(out, e->route, e->route != NULL ? strlen(e->route) : 0);
    key(out, "status", 0);
    est_strbuf_appendf(out, "%d", e->status);
    key(out, "bytes_sent", 0);
    est_strbuf_appendf(out, "%llu", (unsigned long long)e->bytes_sent);
    key(out, "duration_ms", 0);
    est_strbuf_appendf(out, "%.3f", e->duration_ms < 0 ? 0 : e->duration_ms);
    key(out, "upstreams", 0);
    est_strbuf_append(out, "[", 1);
    unsigned retries = 0;
    if (e->trace != NULL) {
        retries = e->trace->retries;
        for (size_t i = 0; i != e->trace->num_exchanges; ++i) {
            const est_trace_exchange_t *x = e->trace->exchanges + i;
            if (i != 0)
                est_strbuf_append(out, ",", 1);
            est_strbuf_append(out, "{", 1);
            key(out, "upstream", 1);
            str_or_null(out, x->upstream, x->upstream != NULL ? strlen(x->upstream) : 0);
            key(out, "address", 0);
            if (x->address[0] != '\0')
                est_strbuf_append_json_string(out, x->address, strlen(x->address));
            else
                est_strbuf_append(out, "null", 4);
            key(out, "status", 0);
            est_strbuf_appendf(out, "%d", x->status);
            if (x->error != EST_UERR_NONE) {
                key(out, "error", 0);
                const char *en = est_uerr_name(x->error);
                est_strbuf_append_json_string(out, en, strlen(en));
            }
            key(out, "connect_ms", 0);
            est_strbuf_appendf(out, "%llu", (unsigned long long)x->connect_ms);
            key(out, "duration_ms", 0);
            est_strbuf_appendf(out, "%llu", (unsigned long long)x->duration_ms);
            key(out, "attempt", 0);
            est_strbuf_appendf(out, "%u", x->attempt);
            est_strbuf_append(out, "}", 1);
        }
    }
    est_strbuf_append(out, "]", 1);
    key(out, "retries", 0);
    est_strbuf_appendf(out, "%u", retries);
    est_strbuf_append(out, "}\n", 2);
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
