/*
 * estuary - giving freed heap memory back to the system off the event loops.
 */
#ifndef EST_COMMON_TRIM_H
#define EST_COMMON_TRIM_H

/* Asks for one malloc_trim(0), run by a process-wide background thread (started on first use).
 * malloc_trim walks every arena under its lock, which a worker's loop must not wait on; asks
 * while a trim is pending or running are folded into the next one. Never blocks. */
void est_trim_request(void);

#endif
