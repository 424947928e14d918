/*
 * estuary - listening sockets (see net.h).
 */
#include "common/net.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "common/log.h"

int est_listen_tcp(const char *what, const char *host, uint16_t port, int flags, int backlog)
{
    struct addrinfo hints = {0}, *res;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", port);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV | ((flags & EST_LISTEN_NUMERIC) != 0 ? AI_NUMERICHOST : 0);
    int gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai != 0) {
        est_log_error("%s %s:%u: %s", what, host, port, gai_strerror(gai));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1;
    if (fd == -1 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
        ((flags & EST_LISTEN_REUSEPORT) != 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0) ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, backlog) != 0) {
        est_log_error("%s %s:%u: %s", what, host, port, strerror(errno));
        if (fd != -1)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    if ((flags & EST_LISTEN_NODELAY) != 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    freeaddrinfo(res);
    return fd;
}
