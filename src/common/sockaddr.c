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
        return memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0 && x->sin6_scope_id == y->sin6_scope_id;
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

int est_sockaddr_is_ip(const char *s, int family)
{
    unsigned char buf[16];
    return ((family == AF_INET || family == AF_UNSPEC) && inet_pton(AF_INET, s, buf) == 1) ||
           ((family == AF_INET6 || family == AF_UNSPEC) && inet_pton(AF_INET6, s, buf) == 1);
}

int est_sockaddr_parse_ip(const char *s, struct sockaddr_storage *out, socklen_t *out_len)
{
    char buf[INET6_ADDRSTRLEN + 2];
    size_t len = strlen(s);

    memset(out, 0, sizeof(*out));
    struct sockaddr_in *sin = (struct sockaddr_in *)(void *)out;
    if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        *out_len = sizeof(*sin);
        return 0;
    }
    if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
        s += 1;
        len -= 2;
    }
    if (len >= sizeof(buf))
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)(void *)out;
    if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        *out_len = sizeof(*sin6);
        return 0;
    }
    memset(out, 0, sizeof(*out));
    return -1;
}

int est_sockaddr_copy_addr(const struct sockaddr *sa, socklen_t len, struct sockaddr_storage *out, socklen_t *out_len)
{
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        memcpy(out, sa, sizeof(struct sockaddr_in));
        ((struct sockaddr_in *)(void *)out)->sin_port = 0;
        *out_len = sizeof(struct sockaddr_in);
        return 0;
    }
    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        memcpy(out, sa, sizeof(struct sockaddr_in6));
        ((struct sockaddr_in6 *)(void *)out)->sin6_port = 0;
        ((struct sockaddr_in6 *)(void *)out)->sin6_flowinfo = 0;
        *out_len = sizeof(struct sockaddr_in6);
        return 0;
    }
    return -1;
}
