/*
 * estuary - a keyed hash for the cache's tables (SipHash-2-4, Aumasson and Bernstein, 2012).
 *
 * Why keyed: cache and coalescing keys are made of request bytes (path, query, header values)
 * an attacker chooses; with an unkeyed hash they could aim every key at one bucket and turn each
 * lookup into a walk over all of them. Each table draws its own random key. libc only.
 */
#ifndef EST_CACHE_HASH_H
#define EST_CACHE_HASH_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t k0, k1;
} est_cache_hash_key_t;

/* a random key (getrandom; falls back to time and address bits if that fails) */
void est_cache_hash_key_init(est_cache_hash_key_t *key);

/* SipHash-2-4 of `len` bytes at `data` */
uint64_t est_cache_hash(const est_cache_hash_key_t *key, const void *data, size_t len);

#endif
