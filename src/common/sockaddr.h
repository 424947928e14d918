/*
 * estuary - socket address helpers (IPv4 and IPv6; any other family is never equal and
 * formats as nothing).
 */
#ifndef EST_COMMON_SOCKADDR_H
#define EST_COMMON_SOCKADDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* 1 when a and b are the same address and port (NULL is never equal) */
int est_sockaddr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b);
/* 1 when a and b are the same address (with the same IPv6 scope: a link-local address names a
 * different host on each interface, RFC 4007 §6), ports not compared */
int est_sockaddr_equal_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b);
/* the port in host order, 0 for another family */
uint16_t est_sockaddr_port(const struct sockaddr_storage *sa);
void est_sockaddr_set_port(struct sockaddr_storage *sa, uint16_t port);
/* Writes the bare address ("10.0.0.1", "::1") NUL-terminated; returns its length, 0 when it
 * cannot be formatted (other family, buffer too small: buf is then ""). */
size_t est_sockaddr_ntop(const struct sockaddr_storage *sa, char *buf, size_t bufsz);
/* Writes "ip:port" or "[ip]:port" NUL-terminated; returns its length, 0 as est_sockaddr_ntop. */
size_t est_sockaddr_format(const struct sockaddr_storage *sa, char *buf, size_t bufsz);

/* 1 when the NUL-terminated `s` is an IP literal of `family`: AF_INET ("10.0.0.1"), AF_INET6
 * ("::1", no brackets) or AF_UNSPEC (either) */
int est_sockaddr_is_ip(const char *s, int family);
/* Parses an IPv4 literal or an IPv6 one, bare or in brackets ("[::1]"), into *out with port 0
 * (the rest of *out zeroed) and its length into *out_len: 0, or -1 (*out zeroed). */
int est_sockaddr_parse_ip(const char *s, struct sockaddr_storage *out, socklen_t *out_len);
/* Copies the IPv4 or IPv6 address `sa` (`len` bytes) into *out with port and flow label 0:
 * 0, or -1 for another family or a short `len` (*out untouched). */
int est_sockaddr_copy_addr(const struct sockaddr *sa, socklen_t len, struct sockaddr_storage *out, socklen_t *out_len);

#endif
