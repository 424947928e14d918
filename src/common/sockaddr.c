/*
 * estuary - socket address helpers (see sockaddr.h).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include "common/sockaddr.h"

int est_sockaddr_equal_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a == NULL || b == NULL || a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return 0;
}

int est_sockaddr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    return est_sockaddr_equal_addr(a, b) && est_sockaddr_port(a) == est_sockaddr_port(b);
}

uint16_t est_sockaddr_port(const struct sockaddr_storage *sa)
{
    if (sa->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
    if (sa->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
    return 0;
}

void est_sockaddr_set_port(struct sockaddr_storage *sa, uint16_t port)
{
    if (sa->ss_family == AF_INET)
        ((struct sockaddr_in *)(void *)sa)->sin_port = htons(port);
    else if (sa->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)(void *)sa)->sin6_port = htons(port);
}

size_t est_sockaddr_ntop(const struct sockaddr_storage *sa, char *buf, size_t bufsz)
{
    const void *addr;
    if (sa->ss_family == AF_INET)
        addr = &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
    else if (sa->ss_family == AF_INET6)
        addr = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
    else
        addr = NULL;
    if (addr == NULL || bufsz == 0 || inet_ntop(sa->ss_family, addr, buf, (socklen_t)bufsz) == NULL) {
        if (bufsz != 0)
            buf[0] = '\0';
        return 0;
    }
    return strlen(buf);
}

size_t est_sockaddr_format(const struct sockaddr_storage *sa, char *buf, size_t bufsz)
{
    char ip[INET6_ADDRSTRLEN];
    if (est_sockaddr_ntop(sa, ip, sizeof(ip)) == 0) {
        if (bufsz != 0)
            buf[0] = '\0';
        return 0;
    }
    int v6 = sa->ss_family == AF_INET6;
    int n = snprintf(buf, bufsz, v6 ? "[%s]:%u" : "%s:%u", ip, (unsigned)est_sockaddr_port(sa));
    if (n < 0 || (size_t)n >= bufsz) {
        if (bufsz != 0)
            buf[0] = '\0';
        return 0;
    }
    return (size_t)n;
}
