/*
 * estuary - word-at-a-time byte scanning (8 bytes per step) for the HTTP/1.1 parsers: the
 * client's request head (h1/parse.c) and the backend's response head (upstream/h1wire.c).
 *
 * Each *_stop function returns a mask with the high bit set in (at least) every byte of the
 * word that ends a fast run; the lowest flagged byte is exact (a borrow only flags bytes
 * above a true hit), so the byte loop that follows a hit is the authority. Header-only and
 * libc-only, so the fuzz drivers can build the parsers alone.
 */
#ifndef EST_COMMON_SWAR_H
#define EST_COMMON_SWAR_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define EST_SWAR_ONES 0x0101010101010101ULL
#define EST_SWAR_HIGHS 0x8080808080808080ULL

static inline uint64_t est_load64(const unsigned char *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

/* non-zero iff some byte of x is < n (n <= 128) */
static inline uint64_t est_has_less(uint64_t x, uint64_t n)
{
    return (x - EST_SWAR_ONES * n) & ~x & EST_SWAR_HIGHS;
}

/* non-zero iff some byte of x equals n */
static inline uint64_t est_has_byte(uint64_t x, uint64_t n)
{
    uint64_t y = x ^ (EST_SWAR_ONES * n);
    return (y - EST_SWAR_ONES) & ~y & EST_SWAR_HIGHS;
}

/* On a little-endian load the first hit of a mask above is at ctz / 8; elsewhere, at the
 * word start (the byte loop that follows is the authority either way). */
static inline size_t est_first_hit(uint64_t mask)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return (size_t)__builtin_ctzll(mask) / 8;
#else
    (void)mask;
    return 0;
#endif
}

/* bytes that end the fast path in a field value: CTLs (HTAB included, checked bytewise) and DEL */
static inline uint64_t est_value_stop(uint64_t x)
{
    return est_has_less(x, 0x20) | est_has_byte(x, 0x7f);
}

/* ALPHA, DIGIT and '-' of the 7-bit word x7 (high bits clear), flagged in the high bit of
 * their byte. Exact per byte: each sum below stays within its byte. */
static inline uint64_t est_alnum_dash(uint64_t x7)
{
    const uint64_t ONES = EST_SWAR_ONES, HIGHS = EST_SWAR_HIGHS;
    uint64_t y = x7 | (ONES * 0x20);
    uint64_t alpha = (y + ONES * (0x80 - 'a')) & ~(y + ONES * (0x7f - 'z'));
    uint64_t digit = (x7 + ONES * (0x80 - '0')) & ~(x7 + ONES * (0x7f - '9'));
    uint64_t dash = ~((x7 ^ (ONES * '-')) + ~HIGHS);
    return alpha | digit | dash;
}

/* bytes that end the fast path in a field name: all but ALPHA, DIGIT and '-' (the other tchars
 * are checked bytewise) */
static inline uint64_t est_name_stop(uint64_t x)
{
    return (~est_alnum_dash(x & ~EST_SWAR_HIGHS) | x) & EST_SWAR_HIGHS;
}

#endif
