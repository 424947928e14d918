/*
 * estuary - giving freed heap memory back to the system off the event loops (see trim.h).
 *
 * One thread per process, started on the first request (pthread_once) and detached: it sleeps
 * on a semaphore, and each wake-up runs one malloc_trim(0). The flag folds the asks made while
 * one is pending, so a burst of large fan-outs costs one trim, not one each. If the thread
 * cannot be started, the ask is dropped: trimming only returns memory early, the heap reuses
 * it either way.
 */
#include <malloc.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include "common/log.h"
#include "common/trim.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static sem_t wake;
static int started;
static atomic_int pending; /* 1 from an ask until the trim that serves it starts */

static void *trim_main(void *arg)
{
    (void)arg;
    for (;;) {
        while (sem_wait(&wake) != 0)
            ; /* EINTR */
        atomic_store(&pending, 0);
        malloc_trim(0);
    }
    return NULL;
}

static void start(void)
{
    pthread_t t;
    pthread_attr_t attr;
    if (sem_init(&wake, 0, 0) != 0)
        return;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, trim_main, NULL) == 0)
        started = 1;
    else
        est_log_warn("memory trim thread not started: freed memory is returned to the system later");
    pthread_attr_destroy(&attr);
}

void est_trim_request(void)
{
    pthread_once(&once, start);
    if (!started)
        return;
    if (atomic_exchange(&pending, 1) == 0)
        sem_post(&wake);
}
