/*
 * estuary - SipHash-2-4; see hash.h.
 */
#include "cache/hash.h"
#include "common/siphash.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>

void est_cache_hash_key_init(est_cache_hash_key_t *key)
{
    unsigned char b[16];
    if (getrandom(b, sizeof(b), GRND_NONBLOCK) != (ssize_t)sizeof(b)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)(uintptr_t)key;
        memcpy(b, &x, 8);
        x = x * 0x9e3779b97f4a7c15ull + (uint64_t)(uintptr_t)&ts;
        memcpy(b + 8, &x, 8);
    }
    key->k0 = est_siphash_le64(b);
    key->k1 = est_siphash_le64(b + 8);
}

uint64_t est_cache_hash(const est_cache_hash_key_t *key, const void *data, size_t len)
{
    return est_siphash24(key->k0, key->k1, data, len);
}
