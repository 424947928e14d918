/*
 * estuary - the local rate-limit store: lock-free GCRA slots. See rlstore.h.
 */
#include "policy/rlstore.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/rand.h>

#include "common/siphash.h"

/* a lock-based fallback would silently put a lock on the request path */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");

struct est_rlstore {
    size_t mask;           /* slots - 1 */
    uint64_t k0, k1;       /* SipHash secret */
    _Atomic uint64_t *tat; /* 0: never used (a full bucket) */
};

est_rlstore_t *est_rlstore_create(size_t slots)
{
    size_t n = 1;
    while (n < slots && n <= SIZE_MAX / 2 / sizeof(uint64_t))
        n <<= 1;
    est_rlstore_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    if ((s->tat = malloc(n * sizeof(*s->tat))) == NULL) {
        free(s);
        return NULL;
    }
    for (size_t i = 0; i != n; ++i)
        atomic_init(s->tat + i, 0);
    s->mask = n - 1;
    unsigned char seed[16];
    if (RAND_bytes(seed, sizeof(seed)) != 1) {
        /* no entropy: still a working store, only its slots become predictable */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        memset(seed, 0, sizeof(seed));
        memcpy(seed, &ts, sizeof(ts) < sizeof(seed) ? sizeof(ts) : sizeof(seed));
    }
    memcpy(&s->k0, seed, 8);
    memcpy(&s->k1, seed + 8, 8);
    return s;
}

void est_rlstore_destroy(est_rlstore_t *s)
{
    if (s == NULL)
        return;
    free(s->tat);
    free(s);
}

uint64_t est_rlstore_hash(const est_rlstore_t *s, const void *key, size_t len)
{
    return est_siphash24(s->k0, s->k1, key, len);
}

/* One GCRA step on one slot: load, decide on a copy, publish with a CAS; a CAS that fails
 * (another thread moved the TAT meanwhile) decides again on the value it saw. Lock-free: a
 * thread retries only because another one made progress. Each slot's updates are totally
 * ordered by its CAS and no other memory is published through it: relaxed ordering suffices. */
static void slot_decide(_Atomic uint64_t *slot, const est_gcra_params_t *p, uint64_t now_us, est_gcra_result_t *res)
{
    uint64_t cur = atomic_load_explicit(slot, memory_order_relaxed);
    for (;;) {
        uint64_t tat = cur;
        est_gcra_decide(p, now_us, &tat, res);
        if (!res->allowed)
            return;
        if (atomic_compare_exchange_weak_explicit(slot, &cur, tat, memory_order_relaxed, memory_order_relaxed))
            return;
    }
}

size_t est_rlstore_slot(const est_rlstore_t *s, uint64_t h)
{
    return (size_t)(h ^ (h >> 32)) & s->mask;
}

void est_rlstore_decide(est_rlstore_t *s, uint64_t h, const est_gcra_params_t *p, uint64_t now_us, est_gcra_result_t *res)
{
    slot_decide(s->tat + est_rlstore_slot(s, h), p, now_us, res);
}

uint64_t est_rlstore_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t us = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
    return us != 0 ? us : 1;
}
