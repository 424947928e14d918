/*
 * estuary - the admin console (shared/SPEC.md, "Admin console"): GET /state, the JSON behind
 * the live page, and GET /, the page itself (src/admin/console.html, embedded at build time).
 *
 * /state is built on the admin thread from the same per-worker snapshots as /metrics
 * (metrics.h), so the workers take no lock for it. Rates need history: the admin thread keeps
 * a ring of the last EST_CONSOLE_HISTORY per-route totals, one sample taken by a /state call
 * at most once per second (so while someone polls, one a second; nothing when nobody looks).
 * Rates and windowed ratios are differences between the newest sample and an older one.
 */
#ifndef EST_ADMIN_CONSOLE_H
#define EST_ADMIN_CONSOLE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "admin/metrics.h"
#include "admin/strbuf.h"

/* samples kept: 180 at one a second is the last three minutes */
#define EST_CONSOLE_HISTORY 180

typedef struct est_console_history est_console_history_t;

est_console_history_t *est_console_history_create(void);
void est_console_history_destroy(est_console_history_t *h);

/* What the admin thread knows besides the snapshots */
typedef struct est_console_info {
    const est_process_metrics_t *proc;
    int last_reload;         /* 0: none yet, 1: ok, 2: failed */
    double last_reload_time; /* unix seconds */
    const json_t *config;    /* the effective config (borrowed; read for upstream targets), may be NULL */
    double now;              /* unix seconds */
    double mono;             /* monotonic seconds (history timing) */
} est_console_info_t;

/*
 * Sums the `n` snapshots (missing ones skipped), records a history sample when the newest is
 * at least a second old, and appends the /state JSON document to `out`.
 */
void est_console_render_state(est_strbuf_t *out, const est_metrics_snapshot_t *snaps, size_t n, const est_console_info_t *info,
                              est_console_history_t *h);

/*
 * The quantile `q` (0..1) of a histogram with est_metrics_buckets bounds (per-bucket counts,
 * the last one +Inf), in seconds, interpolated linearly inside the bucket as Prometheus'
 * histogram_quantile does; the +Inf bucket answers the largest finite bound. -1 when empty.
 */
double est_console_quantile(const uint64_t *buckets, double q);

/* the page (console.html), generated at build time */
extern const unsigned char est_console_html[];
extern const size_t est_console_html_len;

#endif
