/*
 * estuary - the process's one response cache store (SPEC "Caching, coalescing and hedging":
 * "one per process shared by its workers").
 *
 * Lifetime: configured from the main thread each time a configuration generation is built
 * (start and every reload), created the first time a configuration has a cached route, kept
 * across reloads (its max_size / max_entry are those of the config that created it, until the
 * process restarts), destroyed at exit once no worker runs. Workers read it with
 * est_cache_global(), a lock-free load.
 *
 * Reload rule: the key starts with the route's path template, so a route that keeps its
 * template and its cache settings keeps its entries; a cached route that went away or whose
 * settings (the caller's signature string) changed is purged.
 */
#ifndef EST_CACHE_GLOBAL_H
#define EST_CACHE_GLOBAL_H

#include <stddef.h>

#include "cache/store.h"

/*
 * Main thread only. `routes[i]` is a cached route's path template and `sigs[i]` a string that
 * changes whenever its cache settings do. Creates the store when n > 0 and none exists yet,
 * then purges the previously configured routes that are missing from the list or whose
 * signature changed. 0, or -1 when out of memory (the cache then stays off; requests go on).
 */
int est_cache_global_configure(size_t max_size, size_t max_entry, const char *const *routes, const char *const *sigs, size_t n);
/* the store, or NULL when no configuration so far had a cached route */
est_cache_store_t *est_cache_global(void);
/* at exit, once no thread uses the store */
void est_cache_global_shutdown(void);

#endif
