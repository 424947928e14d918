/*
 * estuary - the policy sections of the config file (shared/SPEC.md, "Access control and
 * traffic policy"): "auth" (jwt, api_keys), "rate_limits" and "redis" at the top level, and a
 * route's "auth", "scopes", "rate_limit" and "cors".
 */
#include "config/validate.h"

#include <stdlib.h>

void est_cv_load_policy(vctx_t *c, json_t *root)
{
    (void)c;
    (void)root;
}

void est_cv_load_route_policy(vctx_t *c, json_t *route_obj, est_route_conf_t *r)
{
    (void)c;
    (void)route_obj;
    (void)r;
}

void est_cv_free_policy(est_config_t *conf)
{
    (void)conf;
}
