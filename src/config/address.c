/*
 * estuary - syntax of addresses in the config: IP literals, host names, ports, upstream
 * target URLs, DNS servers (see validate.h).
 */
#include "config/validate.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "common/sockaddr.h"

int est_cv_is_ip_literal(const char *s)
{
    return est_sockaddr_is_ip(s, AF_UNSPEC);
}

/* a DNS name: labels of [A-Za-z0-9_-] separated by dots, optionally a final dot */
int est_cv_is_host_name(const char *s, size_t len)
{
    size_t label = 0;
    if (len == 0 || len > 253 + 1)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (ch == '.') {
            if (label == 0)
                return 0;
            label = 0;
        } else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_') {
            if (++label > 63)
                return 0;
        } else {
            return 0;
        }
    }
    return 1;
}

/* parses "65535" (len bytes) into 1..65535; -1 when malformed */
int est_cv_parse_port(const char *s, size_t len)
{
    int port = 0;
    if (len == 0 || len > 5)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        port = port * 10 + (s[i] - '0');
    }
    return port >= 1 && port <= 65535 ? port : -1;
}

/*
 * Parses an upstream target URL into `t` (strings owned by `t`). Returns NULL, or a
 * static message saying what is wrong.
 */
const char *est_cv_parse_target(const char *url, est_target_conf_t *t)
{
    const char *p, *host, *host_end, *end;
    char *h;
    int default_port;

    if (strncasecmp(url, "http://", 7) == 0) {
        t->is_tls = 0;
        default_port = 80;
        p = url + 7;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        t->is_tls = 1;
        default_port = 443;
        p = url + 8;
    } else {
        return "it must start with http:// or https://";
    }
    end = p + strcspn(p, "/?#");
    if (memchr(p, '@', (size_t)(end - p)) != NULL)
        return "user info (user@) is not allowed";
    if (*end == '?' || *end == '#' || (*end == '/' && end[1] != '\0'))
        return "a target has no path, query or fragment (set the path on the route)";
    if (p[0] == '[') {
        const char *close = memchr(p, ']', (size_t)(end - p));
        if (close == NULL)
            return "missing ']' after the IPv6 address";
        host = p + 1;
        host_end = close;
        h = est_cv_xmalloc((size_t)(host_end - host) + 1);
        memcpy(h, host, (size_t)(host_end - host));
        h[host_end - host] = '\0';
        if (!est_sockaddr_is_ip(h, AF_INET6)) {
            free(h);
            return "bad IPv6 address";
        }
        t->is_ip_literal = 1;
        p = close + 1;
    } else {
        host = p;
        host_end = p + strcspn(p, ":/?#");
        if (host_end == host)
            return "missing host";
        h = est_cv_xmalloc((size_t)(host_end - host) + 1);
        memcpy(h, host, (size_t)(host_end - host));
        h[host_end - host] = '\0';
        if (strspn(h, "0123456789.") == strlen(h)) {
            if (!est_sockaddr_is_ip(h, AF_INET)) {
                free(h);
                return "bad IPv4 address";
            }
            t->is_ip_literal = 1;
        } else if (!est_cv_is_host_name(h, strlen(h))) {
            free(h);
            return "bad host name";
        }
        p = host_end;
    }
    int port = default_port;
    if (*p == ':') {
        if ((port = est_cv_parse_port(p + 1, (size_t)(end - p - 1))) < 0) {
            free(h);
            return "bad port (use 1 to 65535)";
        }
    } else if (p != end) {
        free(h);
        return "unexpected characters after the host";
    }
    t->url = est_cv_xstrdup(url);
    t->host = h;
    t->port = (uint16_t)port;
    size_t n = strlen(h) + 16;
    t->authority = est_cv_xmalloc(n);
    int v6 = strchr(h, ':') != NULL;
    if (port == default_port)
        snprintf(t->authority, n, v6 ? "[%s]" : "%s", h);
    else
        snprintf(t->authority, n, v6 ? "[%s]:%d" : "%s:%d", h, port);
    return NULL;
}

/* "IP", "IP:PORT", "[IPv6]" or "[IPv6]:PORT"; returns 0 or -1 */
int est_cv_parse_dns_server(const char *s)
{
    char host[64];
    const char *port = NULL;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || (size_t)(close - s - 1) >= sizeof(host))
            return -1;
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = '\0';
        if (!est_sockaddr_is_ip(host, AF_INET6))
            return -1;
        if (close[1] == '\0')
            return 0;
        if (close[1] != ':')
            return -1;
        port = close + 2;
    } else if (strchr(s, ':') != NULL && strchr(s, ':') != strrchr(s, ':')) {
        return est_sockaddr_is_ip(s, AF_INET6) ? 0 : -1; /* bare IPv6, no port */
    } else {
        const char *colon = strchr(s, ':');
        size_t hl = colon ? (size_t)(colon - s) : strlen(s);
        if (hl >= sizeof(host))
            return -1;
        memcpy(host, s, hl);
        host[hl] = '\0';
        if (!est_sockaddr_is_ip(host, AF_INET))
            return -1;
        if (colon == NULL)
            return 0;
        port = colon + 1;
    }
    return est_cv_parse_port(port, strlen(port)) > 0 ? 0 : -1;
}
