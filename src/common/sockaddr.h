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
/* 1 when a and b are the same address, ports not compared */
int est_sockaddr_equal_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b);
/* the port in host order, 0 for another family */
uint16_t est_sockaddr_port(const struct sockaddr_storage *sa);
void est_sockaddr_set_port(struct sockaddr_storage *sa, uint16_t port);
/* Writes the bare address ("10.0.0.1", "::1") NUL-terminated; returns its length, 0 when it
 * cannot be formatted (other family, buffer too small: buf is then ""). */
size_t est_sockaddr_ntop(const struct sockaddr_storage *sa, char *buf, size_t bufsz);
/* Writes "ip:port" or "[ip]:port" NUL-terminated; returns its length, 0 as est_sockaddr_ntop. */
size_t est_sockaddr_format(const struct sockaddr_storage *sa, char *buf, size_t bufsz);

#endif
