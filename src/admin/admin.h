/*
 * estuary - the admin listener (shared/SPEC.md, "Admin listener"): GET /healthz, /readyz,
 * /metrics (Prometheus text 0.0.4), /config (the effective config, secrets redacted).
 *
 * It runs on its own thread with its own h2o context and loop, so it keeps answering while
 * the workers drain. /metrics asks every worker for a snapshot through the hooks and
 * answers once all replied, or after 1 s with the silent ones counted in
 * estuary_workers_missing. Admin responses close the connection (probes and scrapes are
 * rare), so stopping never waits for idle keep-alive clients.
 */
#ifndef EST_ADMIN_ADMIN_H
#define EST_ADMIN_ADMIN_H

#include <stddef.h>
#include <jansson.h>
#include "config/config.h"
#include "admin/metrics.h"

typedef struct est_admin est_admin_t;

typedef struct est_admin_hooks {
    void *data;
    size_t num_workers;
    /*
     * Sends `msg` to worker `worker` (from the admin thread). Returns 0 when sent (the
     * worker will send it back to msg->reply_to), -1 when the worker is gone (msg untouched).
     */
    int (*request_snapshot)(void *data, size_t worker, est_stats_msg_t *msg);
} est_admin_hooks_t;

/*
 * Opens the admin listener of `conf->admin` and starts its thread. `conf` (borrowed) must
 * outlive this call only (the admin keeps a copy of conf->json). Returns NULL (logged) when the socket cannot be opened.
 */
est_admin_t *est_admin_start(const est_config_t *conf, const est_admin_hooks_t *hooks);
/* /readyz: 200 once the listeners are up (ready), 503 after draining started. Any thread. */
void est_admin_set_ready(est_admin_t *a);
void est_admin_set_draining(est_admin_t *a);
/* For the reload code: counts a reload; a successful one bumps the config generation. */
void est_admin_count_reload(est_admin_t *a, int ok);
/* (reload) /config shows `conf` (borrowed; copied) from now on. Main thread. */
void est_admin_set_config(est_admin_t *a, const est_config_t *conf);
/* Stops the thread and frees everything. Call after every worker stopped. Returns 0, or -1
 * when admin connections could not be closed in time (the loop is then left as is). */
/*
 * (reload, main thread) Moves the admin listener to `c`'s address: the new socket is opened
 * here (a bind error returns -1 and changes nothing) and the admin thread swaps it in on its
 * loop; connections already accepted finish normally. `c` NULL closes the listener: the
 * admin thread stays, dormant, so that a later reload turning "admin" on again rebinds it
 * (one admin thread per process, never restarted: see park()).
 */
int est_admin_rebind(est_admin_t *a, const est_admin_conf_t *c);
/* (reload) sets the counters of an admin started after the process did (generation, reloads) */
void est_admin_set_counts(est_admin_t *a, uint64_t generation, uint64_t reloads_ok, uint64_t reloads_failed);
int est_admin_stop(est_admin_t *a);

/*
 * Returns a deep copy of `config` (borrowed) with secrets replaced by "<redacted>": the
 * value of every key named key_file, or whose name contains "secret", "password", "passwd",
 * "token", "credential", "private" or ends in "key"; and the user:password@ part of URLs.
 */
json_t *est_admin_redact_config(const json_t *config);

#endif
