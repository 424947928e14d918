/*
 * estuary - configuration generations and the equality rules of a reload. See gen.h.
 */
#include "server/gen.h"

#include <stdlib.h>
#include <string.h>
#include <h2o.h>

#include <stdio.h>

#include "cache/global.h"
#include "common/log.h"
#include "policy/gate.h"
#include "server/tls.h"

static int str_eq(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

static void gen_free(est_gen_t *gen)
{
    for (size_t i = 0; gen->listener_ssl != NULL && i != gen->conf->num_listen; ++i)
        if (gen->listener_ssl[i] != NULL)
            SSL_CTX_free(gen->listener_ssl[i]); /* live TLS connections hold their own reference */
    free(gen->listener_ssl);
    est_policy_gen_free(gen->policy);
    if (gen->router != NULL)
        est_router_destroy(gen->router);
    est_config_free(gen->conf);
    free(gen);
}

/*
 * The process's response cache for this configuration (cache/global.h): created with the first
 * configuration that caches a route, kept across reloads; routes whose cache settings changed
 * or that went away are purged. A failure only leaves the cache off (logged).
 */
static void configure_cache(const est_config_t *conf)
{
    size_t n = 0;
    for (size_t i = 0; i != conf->num_routes; ++i)
        n += conf->routes[i].cache != NULL;
    const char **names = calloc(n ? n : 1, sizeof(*names));
    char **sigs = calloc(n ? n : 1, sizeof(*sigs));
    int ok = names != NULL && sigs != NULL;
    size_t k = 0;
    for (size_t i = 0; ok && i != conf->num_routes; ++i) {
        const est_route_cache_conf_t *rc = conf->routes[i].cache;
        if (rc == NULL)
            continue;
        size_t cap = 96 + 2 + (size_t)128 * rc->num_vary; /* vary names are tokens, bounded by the JSON */
        for (size_t v = 0; v != rc->num_vary; ++v)
            cap += strlen(rc->vary[v]);
        if ((sigs[k] = malloc(cap)) == NULL) {
            ok = 0;
            break;
        }
        int len = snprintf(sigs[k], cap, "%llu/%llu/%llu/%d/%zu", (unsigned long long)rc->ttl_ms,
                           (unsigned long long)rc->stale_while_revalidate_ms, (unsigned long long)rc->stale_if_error_ms,
                           rc->shared, rc->num_vary);
        for (size_t v = 0; len > 0 && v != rc->num_vary; ++v)
            len += snprintf(sigs[k] + len, cap - (size_t)len, ",%s", rc->vary[v]);
        names[k++] = conf->routes[i].path;
    }
    if (!ok || est_cache_global_configure(conf->cache_max_size, conf->cache_max_entry, names, (const char *const *)sigs, k) != 0)
        est_log_error("response cache: out of memory, caching stays off");
    for (size_t i = 0; sigs != NULL && i != k; ++i)
        free(sigs[i]);
    free(sigs);
    free(names);
}

est_gen_t *est_gen_create(est_config_t *conf, uint64_t id)
{
    est_gen_t *gen = calloc(1, sizeof(*gen));
    if (gen == NULL) {
        est_config_free(conf);
        return NULL;
    }
    atomic_init(&gen->_refs, 1);
    gen->id = id;
    gen->conf = conf;
    char err[256];
    if ((gen->router = est_router_create(conf->routes, conf->num_routes, err, sizeof(err))) == NULL) {
        est_log_error("%s", err);
        goto Error;
    }
    if ((gen->listener_ssl = calloc(conf->num_listen ? conf->num_listen : 1, sizeof(*gen->listener_ssl))) == NULL)
        goto Error;
    for (size_t i = 0; i != conf->num_listen; ++i)
        if (conf->listen[i].tls && (gen->listener_ssl[i] = est_tls_server_ctx_create(conf->listen + i)) == NULL)
            goto Error;
    if ((gen->policy = est_policy_gen_create(conf)) == NULL) /* a policy file unreadable: the config is refused */
        goto Error;
    configure_cache(conf);
    return gen;
Error:
    gen_free(gen);
    return NULL;
}

void est_gen_addref(est_gen_t *gen)
{
    atomic_fetch_add_explicit(&gen->_refs, 1, memory_order_relaxed);
}

void est_gen_release(est_gen_t *gen)
{
    if (gen != NULL && atomic_fetch_sub_explicit(&gen->_refs, 1, memory_order_acq_rel) == 1)
        gen_free(gen);
}

static int target_equal(const est_target_conf_t *a, const est_target_conf_t *b)
{
    return str_eq(a->url, b->url) && a->is_tls == b->is_tls && str_eq(a->host, b->host) && a->port == b->port &&
           str_eq(a->authority, b->authority) && a->is_ip_literal == b->is_ip_literal;
}

int est_upstream_conf_equal(const est_upstream_conf_t *a, const est_upstream_conf_t *b)
{
    if (!str_eq(a->name, b->name) || a->num_targets != b->num_targets || a->balance != b->balance ||
        a->connect_timeout_ms != b->connect_timeout_ms || a->response_timeout_ms != b->response_timeout_ms)
        return 0;
    for (size_t i = 0; i != a->num_targets; ++i)
        if (!target_equal(a->targets + i, b->targets + i))
            return 0;
    if (a->pool.max_connections != b->pool.max_connections || a->pool.max_idle != b->pool.max_idle ||
        a->pool.max_requests != b->pool.max_requests || a->pool.idle_timeout_ms != b->pool.idle_timeout_ms)
        return 0;
    if (a->retry.attempts != b->retry.attempts || a->retry.backoff_ms != b->retry.backoff_ms ||
        a->retry.max_backoff_ms != b->retry.max_backoff_ms || a->retry.on != b->retry.on ||
        a->retry.num_statuses != b->retry.num_statuses)
        return 0;
    for (size_t i = 0; i != a->retry.num_statuses; ++i)
        if (a->retry.statuses[i] != b->retry.statuses[i])
            return 0;
    /* (hedging) the upstream's runtime keeps the hedge budget and delay samples: compared too */
    if ((a->hedge == NULL) != (b->hedge == NULL) ||
        (a->hedge != NULL && (a->hedge->delay_auto != b->hedge->delay_auto || a->hedge->delay_ms != b->hedge->delay_ms ||
                              a->hedge->max != b->hedge->max || a->hedge->budget_permille != b->hedge->budget_permille)))
        return 0;
    return a->tls.verify == b->tls.verify && str_eq(a->tls.ca_file, b->tls.ca_file) &&
           str_eq(a->tls.server_name, b->tls.server_name);
}

/* The TLS policy (tls_min_version, tls_ciphers, ocsp_file) is not compared on purpose: a kept
 * listener takes the new generation's SSL_CTX anyway (server.c, apply_reload), so a reload
 * applies a policy change, or a renewed OCSP response, without closing the socket and dropping
 * the connections queued on it. */
int est_listen_conf_equal(const est_listen_conf_t *a, const est_listen_conf_t *b)
{
    return str_eq(a->host, b->host) && a->port == b->port && a->tls == b->tls &&
           str_eq(a->certificate_file, b->certificate_file) && str_eq(a->key_file, b->key_file);
}

int est_dns_conf_equal(const est_dns_conf_t *a, const est_dns_conf_t *b)
{
    if (a->num_servers != b->num_servers || a->min_ttl_ms != b->min_ttl_ms || a->max_ttl_ms != b->max_ttl_ms ||
        a->negative_ttl_ms != b->negative_ttl_ms || a->stale_ttl_ms != b->stale_ttl_ms || a->timeout_ms != b->timeout_ms ||
        a->attempts != b->attempts)
        return 0;
    for (size_t i = 0; i != a->num_servers; ++i)
        if (!str_eq(a->servers[i], b->servers[i]))
            return 0;
    return 1;
}

int est_admin_conf_equal(const est_admin_conf_t *a, const est_admin_conf_t *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return str_eq(a->host, b->host) && a->port == b->port;
}
