/*
 * estuary - configuration generations (hot reload, SIGHUP).
 *
 * A generation is everything derived from one loaded config file that workers share
 * read-only: the config, the compiled router and the TLS contexts of the listeners. It is
 * immutable once built and refcounted: the main thread holds one reference on the current
 * generation, and each worker one per generation it still uses (its current one, plus older
 * ones while requests that started on them are in flight). The last release frees it, on
 * whichever thread that happens.
 *
 * The comparison helpers decide what a reload may keep: an upstream whose configuration is
 * equal keeps its pool, a listener that is equal keeps its sockets.
 */
#ifndef EST_SERVER_GEN_H
#define EST_SERVER_GEN_H

#include <stdatomic.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include "config/config.h"
#include "router/router.h"

typedef struct est_gen {
    atomic_size_t _refs;
    uint64_t id;           /* 1 for the config the process started with, +1 per successful reload */
    est_config_t *conf;    /* owned */
    est_router_t *router;  /* owned, built from conf->routes */
    SSL_CTX **listener_ssl; /* per conf->listen entry, NULL for plain ones (owned, one reference each) */
    struct est_policy_gen *policy; /* policy/gate.h: the policies, their files loaded */
} est_gen_t;

/*
 * Builds a generation from `conf` (stolen: freed on failure too) with one reference held by
 * the caller. Returns NULL on failure, with every reason logged (router, certificates).
 */
est_gen_t *est_gen_create(est_config_t *conf, uint64_t id);
void est_gen_addref(est_gen_t *gen);
/* drops one reference; the last one frees the generation */
void est_gen_release(est_gen_t *gen);

/* 1 when a reload can keep the runtime state (pool, DNS results) of upstream `a` for `b`:
 * same name, targets, balancing, timeouts, pool, retry and TLS settings. Index may differ. */
int est_upstream_conf_equal(const est_upstream_conf_t *a, const est_upstream_conf_t *b);
/* 1 when a listener can be kept across a reload: same host, port and TLS files. */
int est_listen_conf_equal(const est_listen_conf_t *a, const est_listen_conf_t *b);
/* 1 when the DNS settings are the same */
int est_dns_conf_equal(const est_dns_conf_t *a, const est_dns_conf_t *b);
/* 1 when the admin listener settings are the same (both off counts as equal) */
int est_admin_conf_equal(const est_admin_conf_t *a, const est_admin_conf_t *b);

#endif
