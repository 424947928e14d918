/*
 * estuary - SipHash-2-4 (Aumasson, Bernstein: "SipHash: a fast short-input PRF", 2012), the
 * keyed hash of the tables whose keys an attacker chooses (rate-limit keys, cache keys): with
 * a secret key, nobody can aim many keys at one bucket. Header-only, libc only.
 */
#ifndef EST_COMMON_SIPHASH_H
#define EST_COMMON_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

static inline uint64_t est_siphash_rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static inline uint64_t est_siphash_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i)
        v = (v << 8) | p[i];
    return v;
}

#define EST_SIPROUND(v0, v1, v2, v3)                                                                                               \
    do {                                                                                                                           \
        v0 += v1;                                                                                                                  \
        v1 = est_siphash_rotl(v1, 13);                                                                                             \
        v1 ^= v0;                                                                                                                  \
        v0 = est_siphash_rotl(v0, 32);                                                                                             \
        v2 += v3;                                                                                                                  \
        v3 = est_siphash_rotl(v3, 16);                                                                                             \
        v3 ^= v2;                                                                                                                  \
        v0 += v3;                                                                                                                  \
        v3 = est_siphash_rotl(v3, 21);                                                                                             \
        v3 ^= v0;                                                                                                                  \
        v2 += v1;                                                                                                                  \
        v1 = est_siphash_rotl(v1, 17);                                                                                             \
        v1 ^= v2;                                                                                                                  \
        v2 = est_siphash_rotl(v2, 32);                                                                                             \
    } while (0)

/* SipHash-2-4 of data[0..len) under the 128-bit key (k0, k1) */
static inline uint64_t est_siphash24(uint64_t k0, uint64_t k1, const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    size_t full = len & ~(size_t)7;
    for (size_t i = 0; i != full; i += 8) {
        uint64_t m = est_siphash_le64(p + i);
        v3 ^= m;
        EST_SIPROUND(v0, v1, v2, v3);
        EST_SIPROUND(v0, v1, v2, v3);
        v0 ^= m;
    }
    /* the last block: the remaining bytes, the length's low byte on top */
    uint64_t b = (uint64_t)len << 56;
    for (size_t i = 0; i != (len & 7); ++i)
        b |= (uint64_t)p[full + i] << (8 * i);
    v3 ^= b;
    EST_SIPROUND(v0, v1, v2, v3);
    EST_SIPROUND(v0, v1, v2, v3);
    v0 ^= b;
    v2 ^= 0xff;
    for (int r = 0; r != 4; ++r)
        EST_SIPROUND(v0, v1, v2, v3);
    return v0 ^ v1 ^ v2 ^ v3;
}

#undef EST_SIPROUND

#endif
