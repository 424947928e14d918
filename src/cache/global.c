/*
 * estuary - the process's response cache store and the cached routes it was last configured
 * with (see global.h).
 */
#include "cache/global.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* written by the main thread (release), read by the workers (acquire) */
static _Atomic(est_cache_store_t *) the_store;
/* the cached routes of the last configuration: main thread only */
static char **last_routes, **last_sigs;
static size_t last_n;

static void free_last(void)
{
    for (size_t i = 0; i != last_n; ++i) {
        free(last_routes[i]);
        free(last_sigs[i]);
    }
    free(last_routes);
    free(last_sigs);
    last_routes = last_sigs = NULL;
    last_n = 0;
}

int est_cache_global_configure(size_t max_size, size_t max_entry, const char *const *routes, const char *const *sigs, size_t n)
{
    est_cache_store_t *s = atomic_load_explicit(&the_store, memory_order_acquire);
    if (s == NULL && n != 0) {
        if ((s = est_cache_store_create(max_size, max_entry, 0)) == NULL)
            return -1;
        atomic_store_explicit(&the_store, s, memory_order_release);
    }
    if (s != NULL) {
        for (size_t i = 0; i != last_n; ++i) {
            int keep = 0;
            for (size_t j = 0; j != n && !keep; ++j)
                keep = strcmp(last_routes[i], routes[j]) == 0 && strcmp(last_sigs[i], sigs[j]) == 0;
            if (keep)
                continue;
            char prefix[EST_CACHE_MAX_KEY];
            size_t plen = est_cache_key_route_prefix(prefix, sizeof(prefix), last_routes[i], strlen(last_routes[i]));
            if (plen != 0)
                est_cache_store_purge_prefix(s, prefix, plen);
        }
    }
    free_last();
    if (n == 0)
        return 0;
    if ((last_routes = calloc(n, sizeof(*last_routes))) == NULL || (last_sigs = calloc(n, sizeof(*last_sigs))) == NULL)
        goto NoMem;
    for (size_t i = 0; i != n; ++i, ++last_n) {
        if ((last_routes[i] = strdup(routes[i])) == NULL || (last_sigs[i] = strdup(sigs[i])) == NULL) {
            free(last_routes[i]);
            goto NoMem;
        }
    }
    return 0;
NoMem:
    /* without the list a later reload cannot tell what changed: drop everything now */
    free_last();
    if (s != NULL)
        est_cache_store_purge_prefix(s, "", 0);
    return -1;
}

est_cache_store_t *est_cache_global(void)
{
    return atomic_load_explicit(&the_store, memory_order_acquire);
}

void est_cache_global_shutdown(void)
{
    est_cache_store_t *s = atomic_exchange_explicit(&the_store, NULL, memory_order_acq_rel);
    if (s != NULL)
        est_cache_store_destroy(s);
    free_last();
}
