/*
 * estuary - listening sockets, shared by the workers' listeners and the admin listener.
 */
#ifndef EST_COMMON_NET_H
#define EST_COMMON_NET_H

#include <stdint.h>

enum {
    EST_LISTEN_REUSEPORT = 1, /* SO_REUSEPORT: every worker listens on the same port */
    EST_LISTEN_NODELAY = 2,   /* TCP_NODELAY, inherited by the accepted sockets */
    EST_LISTEN_NUMERIC = 4,   /* `host` must be an IP literal (no resolution) */
};

/*
 * A bound, listening TCP socket (close-on-exec) on host:port, or -1 after logging why,
 * prefixed with `what` ("listen", "admin listener"). getaddrinfo blocks: call it on the main
 * thread at start or reload, never from an event loop.
 */
int est_listen_tcp(const char *what, const char *host, uint16_t port, int flags, int backlog);

#endif
