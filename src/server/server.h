/*
 * estuary - the front end: worker threads, each with its own h2o evloop, listeners
 * (SO_REUSEPORT), DNS channel and upstream pools; signals; graceful drain.
 */
#ifndef EST_SERVER_SERVER_H
#define EST_SERVER_SERVER_H

#include "config/config.h"

/*
 * Runs the gateway on `conf` (taken: freed by the call, since a reload replaces it) until
 * SIGTERM/SIGINT and the drain that follows; SIGHUP reloads conf->file. Returns the process exit status: 0 after a clean stop, 1 when the
 * listeners or TLS contexts cannot be set up (the reason is logged).
 */
int est_server_run(est_config_t *conf);

#endif
