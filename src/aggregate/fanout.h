/*
 * estuary - the aggregating route handler: calls every backend of the route at once,
 * transforms and merges their JSON replies (merge.h) and answers with one document.
 */
#ifndef EST_AGGREGATE_FANOUT_H
#define EST_AGGREGATE_FANOUT_H

#include "http/request.h"

/* Takes over the request; the response is sent later from the loop. */
void est_aggregate_handle(est_request_t *r);
/* the worker exits: its background cache refreshes are cancelled (they pin its views); call
 * before the views are retired */
void est_aggregate_worker_exit(void);

#endif
