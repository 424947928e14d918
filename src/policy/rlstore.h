/*
 * estuary - the local rate-limit store ("store": "local"): one per rate-limit policy, shared
 * by every worker thread of the process, updated without a lock (C11 atomics, one
 * compare-and-swap per slot touched).
 *
 * Layout: a fixed table of 64-bit GCRA theoretical arrival times (TAT, gcra.h), so memory is
 * bounded whatever the number of keys (8 bytes a slot). A key is hashed (SipHash-2-4 with a
 * random per-store secret, so a client cannot aim its keys at another client's slot) to one
 * slot, and a decision is one compare-and-swap on it.
 *
 * Collisions: a slot keeps no key or tag, because none is needed: a TAT in the past is a full
 * bucket for ANY key, so a slot never has to be "evicted" to serve a new key, and a slot that
 * two keys active at the same time happen to share simply carries both keys' traffic. That
 * can only make the limit STRICTER for the colliding keys, never looser: a key always maps to
 * the same slot, every update moves the slot's TAT forward (max(TAT, now) + T), so the slot's
 * TAT is never behind the key's own GCRA TAT. (A tag could only tell a collision apart, and
 * the only other answers to one, a second slot or forgetting the older key, either lose a
 * key's state while it is active, which is looser, or cannot be made atomic across two slots
 * without a lock.) A key shares its slot with probability about n / slots for n keys active
 * at once.
 *
 * Thread safety: est_rlstore_decide may run concurrently from any thread on the same store.
 * Create and destroy are not concurrent with anything (ratelimit.c's registry).
 */
#ifndef EST_POLICY_RLSTORE_H
#define EST_POLICY_RLSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "policy/gcra.h"

/* slots per local policy: 512 KiB of TATs */
#define EST_RLSTORE_DEFAULT_SLOTS ((size_t)1 << 16)

typedef struct est_rlstore est_rlstore_t;

/* A store of `slots` slots (rounded up to a power of two); NULL on allocation failure */
est_rlstore_t *est_rlstore_create(size_t slots);
void est_rlstore_destroy(est_rlstore_t *s);

/* The key's 64-bit hash under the store's secret (any bytes, any length) */
uint64_t est_rlstore_hash(const est_rlstore_t *s, const void *key, size_t len);

/* The slot of hash `h` (for tests) */
size_t est_rlstore_slot(const est_rlstore_t *s, uint64_t h);

/* One GCRA step for the key of hash `h` at `now_us` (est_rlstore_now_us()); lock-free. */
void est_rlstore_decide(est_rlstore_t *s, uint64_t h, const est_gcra_params_t *p, uint64_t now_us, est_gcra_result_t *res);

/* CLOCK_MONOTONIC in microseconds: one clock for every worker (never 0) */
uint64_t est_rlstore_now_us(void);

#endif
