/*
 * estuary - accepting connections (accept.c): plain and TLS listeners, ALPN to estuary's
 * HTTP/1.1 layer (h1/conn.h) or libh2o's HTTP/2 server, and the pause when out of descriptors.
 *
 * est_accept_worker_init once the worker's context exists (before any listener starts),
 * est_accept_configure on each new generation (timeouts, body limit), est_accept_listener_start
 * / _stop around a listener's life. Worker thread only.
 */
#ifndef EST_SERVER_ACCEPT_H
#define EST_SERVER_ACCEPT_H

#include "config/config.h"
#include "server/worker.h"

void est_accept_worker_init(est_worker_t *w, const est_config_t *conf);
void est_accept_configure(est_worker_t *w, const est_config_t *conf);
void est_accept_listener_start(est_worker_t *w, est_listener_t *l);
void est_accept_listener_stop(est_listener_t *l);

#endif
