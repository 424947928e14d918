/*
 * estuary - the access log: one JSON object per line per request (shared/SPEC.md,
 * "Access log").
 *
 * Workers build each line on their loop (est_accesslog_build) and append it to their own
 * buffer (est_accesslog_append: a memcpy under that worker's mutex, which only the writer
 * thread also takes, to swap buffers). A dedicated writer thread drains the buffers every
 * 100 ms (sooner when one passes 64 KiB) with write(2) to stderr or a file; workers never
 * wait for I/O. A buffer over 16 MiB (the disk or pipe is stuck) drops lines and counts
 * them rather than grow or block. est_accesslog_reopen (SIGUSR1) makes the writer flush,
 * close and reopen the file, for log rotation.
 */
#ifndef EST_ADMIN_ACCESSLOG_H
#define EST_ADMIN_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include "http/request.h"
#include "admin/strbuf.h"

typedef struct est_accesslog est_accesslog_t;

/* Everything one line shows; strings are borrowed, not NUL-terminated */
typedef struct est_access_entry {
    struct timespec time;     /* wall clock at the request's start */
    h2o_iovec_t request_id;
    const char *remote;       /* "ip:port", NUL-terminated; NULL -> null */
    h2o_iovec_t method;
    h2o_iovec_t path;         /* as the client sent it, query included */
    const char *route;        /* the matched route's path template; NULL -> null */
    int status;               /* 0 when no response was sent */
    uint64_t bytes_sent;
    double duration_ms;
    const est_request_trace_t *trace; /* NULL -> no upstreams */
    const uint8_t *trace_id;  /* (SPEC "Tracing") 16 bytes, shown as "trace_id"; NULL: tracing off, no key */
} est_access_entry_t;

/* Appends one JSON line (with its '\n') for `e` to `out` */
void est_accesslog_build(est_strbuf_t *out, const est_access_entry_t *e);

/*
 * Starts the writer thread. `path` NULL writes to stderr; otherwise the file is opened for
 * appending (created 0644). Returns NULL (and fills err) when the file cannot be opened.
 */
est_accesslog_t *est_accesslog_create(const char *path, size_t num_workers, char *err, size_t errsz);
/* Worker `worker` hands one complete line over; never blocks on I/O. */
void est_accesslog_append(est_accesslog_t *log, size_t worker, const char *line, size_t len);
/* Asks the writer to reopen the file (no-op for stderr). Any thread, not a signal handler. */
void est_accesslog_reopen(est_accesslog_t *log);
/* Writes what is buffered, stops the writer, frees everything. After every worker stopped. */
void est_accesslog_destroy(est_accesslog_t *log);

#endif
