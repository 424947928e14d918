/*
 * estuary - CORS on routes with "cors" (SPEC "Access control and traffic policy"; the Fetch
 * standard's CORS protocol).
 */
#include "policy/gate.h"

est_gate_verdict_t est_cors_stage(est_gate_t *g)
{
    (void)g;
    return EST_GATE_PASS;
}
