/*
 * estuary - the policy gate: what runs between the route match and the route's handler on a
 * route that names any policy (SPEC "Access control and traffic policy").
 *
 * Stages, in order, each in its own file:
 *   1. CORS (cors.c): a preflight is answered here (204, or 403 for a disallowed origin); an
 *      allowed Origin gets its Access-Control-* headers added to req->res.headers now, so
 *      every later reply carries them, errors included.
 *   2. auth (auth.c): JWT / API keys; 401/403 with WWW-Authenticate; forward_claims. May wait
 *      (an unknown kid waits for the JWKS refetch).
 *   3. rate limit (ratelimit.c): GCRA, local or Redis; 429 with Retry-After, RateLimit-Policy,
 *      RateLimit; an allowed request gets its RateLimit header added. May wait (Redis).
 * Then the route's handler (`dispatch`) runs. A stage that replies (DONE) ends the request;
 * no backend is called.
 *
 * Lifetimes (each level owned by one place, none shared mutable across workers without a
 * reason written where it is):
 *   - est_policy_gen_t: one per configuration generation (server/gen.c), built on the main
 *     thread when a config is loaded: every file a policy names is read there (jwks_file,
 *     secret_file, keys_file), never on the request path. Read-only afterwards, shared by
 *     every worker.
 *   - est_policy_view_t: one per worker per generation (server/worker_gen.c), touched only
 *     from that worker's loop: token caches, the JWKS sets the worker holds, Redis client.
 *   - process-wide state (the JWKS fetcher, local rate-limit buckets kept across reloads)
 *     belongs to the stage modules; est_policy_shutdown() ends it at exit.
 */
#ifndef EST_POLICY_GATE_H
#define EST_POLICY_GATE_H

#include <stddef.h>
#include <h2o.h>
#include <jansson.h>

#include "config/config.h"
#include "http/request.h"

typedef struct est_auth_gen est_auth_gen_t;   /* auth.c */
typedef struct est_auth_view est_auth_view_t; /* auth.c */
typedef struct est_rl_gen est_rl_gen_t;       /* ratelimit.c */
typedef struct est_rl_view est_rl_view_t;     /* ratelimit.c */

typedef struct est_policy_gen {
    const est_config_t *conf; /* borrowed: the generation's config */
    est_auth_gen_t *auth;     /* NULL when the config has no auth policy */
    est_rl_gen_t *rl;         /* NULL when the config has no rate limit */
} est_policy_gen_t;

typedef struct est_policy_view {
    h2o_loop_t *loop;
    const est_config_t *conf;
    const est_policy_gen_t *gen;
    est_services_t *svc;            /* the worker's services for this generation (timeouts, metrics) */
    size_t worker_id;               /* 0-based */
    h2o_multithread_queue_t *queue; /* the worker's queue, for receivers fed by other threads (JWKS fetcher) */
    struct est_dns *dns;            /* the worker's resolver (upstream/dns.h), e.g. for the Redis address */
    est_auth_view_t *auth;
    est_rl_view_t *rl;
} est_policy_view_t;

/* Builds the generation's policy state; NULL on failure with every reason logged (a file that
 * cannot be read, a key file that does not parse). Main thread. */
est_policy_gen_t *est_policy_gen_create(const est_config_t *conf);
void est_policy_gen_free(est_policy_gen_t *pg);

/* The worker's view of `pg` (worker thread); NULL on failure (logged). `svc` outlives it. */
est_policy_view_t *est_policy_view_create(h2o_loop_t *loop, h2o_multithread_queue_t *queue, struct est_dns *dns,
                                          const est_policy_gen_t *pg, est_services_t *svc, size_t worker_id);
void est_policy_view_destroy(est_policy_view_t *pv);

/* Ends process-wide policy state (the JWKS fetcher thread). Main thread, at exit, after the workers. */
void est_policy_shutdown(void);

/* 1 when the route names any policy: the gate must run */
static inline int est_gate_needed(const est_route_conf_t *route)
{
    return route->num_auth != 0 || route->rate_limit != NULL || route->cors != NULL;
}

typedef enum {
    EST_GATE_PASS = 0, /* go on with the next stage */
    EST_GATE_DONE,     /* the stage has replied: the request ends here */
    EST_GATE_WAIT,     /* the stage will call est_gate_resume() later (or be cancelled) */
} est_gate_verdict_t;

typedef struct est_gate est_gate_t;
struct est_gate {
    est_request_t *r;
    est_policy_view_t *view;
    unsigned stage;                     /* the stage running or next to run */
    void (*dispatch)(est_request_t *r); /* the route's handler */
    /* set by the auth stage when a JWT was accepted (borrowed; valid until the request is
     * disposed), for a rate limit keyed by claim:NAME */
    const json_t *claims;
    /* a stage that returns WAIT sets these: cancel(g) runs when the request is disposed
     * before the stage resumed (the client left), and must make sure resume is never called */
    void (*cancel)(est_gate_t *g);
    void *pending;
    int disposed; /* the request's pool is being freed */
};

/* Runs the gate for `r` (est_gate_needed(r->route)); `dispatch(r)` when every stage passes. */
void est_gate_run(est_request_t *r, est_policy_view_t *view, void (*dispatch)(est_request_t *r));

/* A stage that returned WAIT reports its verdict, once, on the worker's loop: PASS goes on,
 * DONE means it has replied. */
void est_gate_resume(est_gate_t *g, est_gate_verdict_t v);

/* The stages (each in its own file) */
est_gate_verdict_t est_cors_stage(est_gate_t *g);
est_gate_verdict_t est_auth_stage(est_gate_t *g);
est_gate_verdict_t est_ratelimit_stage(est_gate_t *g);

/* metrics: per route (estuary_auth_rejected_total, estuary_rate_limited_total) and per worker
 * (estuary_redis_requests_total); reason/result values are admin/metrics.h's enums */
void est_gate_count_auth_rejected(est_gate_t *g, int reason);
void est_gate_count_rate_limited(est_gate_t *g);
void est_gate_count_redis(est_policy_view_t *view, int result);

/* Stage modules' lifecycle, called by est_policy_gen_create / est_policy_view_create. A
 * module with nothing configured returns NULL from its create without failing: *failed
 * tells a failure apart. */
est_auth_gen_t *est_auth_gen_create(const est_config_t *conf, int *failed);
void est_auth_gen_free(est_auth_gen_t *ag);
est_auth_view_t *est_auth_view_create(est_policy_view_t *pv, int *failed);
void est_auth_view_destroy(est_auth_view_t *av);
est_rl_gen_t *est_rl_gen_create(const est_config_t *conf, int *failed);
void est_rl_gen_free(est_rl_gen_t *rg);
est_rl_view_t *est_rl_view_create(est_policy_view_t *pv, int *failed);
void est_rl_view_destroy(est_rl_view_t *rv);
void est_auth_shutdown(void); /* process-wide JWKS fetcher (est_jwks_shutdown) */
void est_rl_shutdown(void);   /* process-wide local buckets */

#endif
