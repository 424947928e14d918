/*
 * estuary - a small Redis client (RESP2) on h2o sockets, for "store": "redis" rate limits:
 * one connection per worker (per generation view), requests pipelined on it, each answered in
 * order; never a blocking call. The GCRA step runs in Redis as one script (EVALSHA, EVAL on
 * NOSCRIPT), so every replica sharing the server sees one bucket per key: one atomic round
 * trip per request, using the Redis server's clock (TIME), not each replica's.
 */
#ifndef EST_POLICY_REDIS_H
#define EST_POLICY_REDIS_H

#include <stddef.h>
#include <h2o.h>

#include "config/config.h"
#include "policy/gcra.h"

typedef struct est_redis_client est_redis_client_t;
typedef struct est_redis_call est_redis_call_t;
struct est_dns;
struct est_policy_view;

/* A client for `conf` on the worker's loop; connects lazily, reconnects with backoff. `conf`
 * is borrowed and must outlive the client. */
est_redis_client_t *est_redis_client_create(struct est_policy_view *pv, const est_redis_conf_t *conf);
/* Pending calls are answered as failures first (their cbs run inside this call); not from
 * inside an est_redis_gcra_cb. The socket it closes is freed by the loop's next run. */
void est_redis_client_destroy(est_redis_client_t *c);

/* cb's ok: 1 = Redis answered (*res filled), 0 = no answer within conf->timeout_ms, not
 * connected, or an error reply (on_failure decides). Counts estuary_redis_requests_total. */
typedef void (*est_redis_gcra_cb)(void *data, int ok, const est_gcra_result_t *res);

/* One GCRA step on `key` (any bytes; the client prefixes it). cb runs later, on the loop,
 * never from inside this call. NULL when the call cannot even be queued (too many pending):
 * treat as a failure now. */
est_redis_call_t *est_redis_gcra(est_redis_client_t *c, const char *key, size_t key_len, const est_gcra_params_t *p,
                                 est_redis_gcra_cb cb, void *data);
/* the request went away: cb will not be called. Only before cb has run (the handle is dead
 * once cb is called); NULL is ignored. */
void est_redis_call_cancel(est_redis_call_t *call);

#endif
