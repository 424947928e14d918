/*
 * estuary - hot reload across generations (reload.c).
 *
 * The diff of two configs (pure): which listeners of the new config are the old ones (equal
 * host, port and TLS files: their sockets, and queued connections, are kept) and which
 * upstreams keep their pools (every setting that shapes connections equal, gen.h).
 * The main thread's SIGHUP handler (est_server_reload) builds the new generation, opens the
 * new listeners' sockets and sends each worker an est_reload_msg_t; the worker applies it on
 * its own loop (server.c).
 */
#ifndef EST_SERVER_RELOAD_H
#define EST_SERVER_RELOAD_H

#include <stddef.h>
#include <h2o.h>
#include "config/config.h"
#include "server/gen.h"
#include "server/worker.h"

/*
 * Main -> worker: switch to `gen`. Listener j of the new config is the worker's old listener
 * keep[j] (>= 0), or a new socket on fds[j] (keep[j] == -1). Old listeners not kept are closed.
 */
typedef struct est_reload_msg {
    h2o_multithread_message_t super;
    est_gen_t *gen; /* one reference, taken over by the worker */
    size_t num_listen;
    int *keep;
    int *fds;
} est_reload_msg_t;

/*
 * Pairs the listeners of `nc` with those of `oc`: keep[j] (nc->num_listen entries) is the index
 * of the equal old listener or -1; used[i] (oc->num_listen entries) is 1 for an old listener
 * kept. Each old listener is kept at most once. Returns the number kept.
 */
size_t est_reload_match_listeners(const est_config_t *oc, const est_config_t *nc, int *keep, char *used);
/* the upstream of `nc` that takes over the pool of `ou` (same name, equal settings), or NULL */
const est_upstream_conf_t *est_reload_kept_upstream(const est_config_t *nc, const est_upstream_conf_t *ou);

/* a listening socket for `l` (SO_REUSEPORT, TCP_NODELAY), or -1 (logged). Blocking name
 * resolution: main thread only, at start or on SIGHUP, off every loop. */
int est_reload_open_listener(const est_listen_conf_t *l);
/* SIGHUP (main thread): load the file again and switch every worker to it, or keep the
 * current generation (logged, counted by the admin listener) */
void est_server_reload(est_server_t *s);

#endif
