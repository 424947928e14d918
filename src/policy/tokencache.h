#ifndef ESTUARY_POLICY_TOKENCACHE_H
#define ESTUARY_POLICY_TOKENCACHE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* The verified-token cache: a token that passed est_jwt_verify is remembered by the SHA-256 of
 * its bytes, with its claims, so that presenting it again costs a hash and a lookup instead of
 * a signature verification.
 *
 * One cache per worker thread and per JWT policy (a token verified under one policy's keys,
 * issuer and audiences says nothing about another's): NOT thread-safe, no locks, by design.
 *
 * Bounded twice: at most `max_entries` entries and `max_bytes` of accounted size (the caller's
 * `cost` of each entry, e.g. token length + serialized claims). An entry lives until the token's
 * exp, and never longer than `max_ttl` seconds after insertion; expired entries are dropped when
 * met. Eviction is CLOCK (second chance): a hit sets the entry's reference bit; the hand clears
 * bits until it finds an unreferenced entry. All operations are O(1) amortized.
 *
 * The cache does not re-check nbf/iss/aud (they held at insertion and do not change) but does
 * honour exp; clear it when the policy's key set changes so that a removed key stops
 * authorizing cached tokens at once. */

typedef struct st_est_tokencache_t est_tokencache_t;

est_tokencache_t *est_tokencache_create(size_t max_entries, size_t max_bytes, int64_t max_ttl);
void est_tokencache_destroy(est_tokencache_t *cache);

/* The SHA-256 key of a token. */
void est_tokencache_key(const char *token, size_t len, unsigned char key[32]);

/* The claims cached under `key` when still valid at `now`, else NULL (an expired entry is
 * removed). BORROWED: valid until the next insert/clear/destroy on this cache; json_incref to
 * keep. */
const json_t *est_tokencache_get(est_tokencache_t *cache, const unsigned char key[32], int64_t now);

/* Caches `claims` (the reference is STOLEN, also on failure) under `key` until min(exp,
 * now + max_ttl). Returns 0, or -1 when not cached (already expired, cost over max_bytes, no
 * memory). Replaces an entry of the same key. */
int est_tokencache_put(est_tokencache_t *cache, const unsigned char key[32], json_t *claims, int64_t exp, int64_t now, size_t cost);

/* Drops every entry (key set rotated, policy reloaded). */
void est_tokencache_clear(est_tokencache_t *cache);

size_t est_tokencache_count(const est_tokencache_t *cache);
size_t est_tokencache_bytes(const est_tokencache_t *cache);

#endif
