/*
 * estuary — a worker's socket I/O through io_uring, under libh2o's event loop (docs/io.md).
 *
 * On this project's machines a system call costs about 1.2 µs of entry and exit alone, and a
 * proxied request made six (epoll_wait, read, writev on each side). With io_uring a worker's
 * wait, its sends and its next reads are one io_uring_enter: the client's and the backend's
 * sockets ("tracked" below) get their reads armed in the kernel and their writes queued, and
 * libh2o's epoll_wait, read, writev, send, close and shutdown calls on them are answered here.
 * These functions are defined by the executable, so libh2o's calls (and ours) bind to them;
 * any other descriptor, and any thread that did not start a ring, goes straight to libc.
 *
 * Each worker owns its ring (IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN: completions run only
 * inside the worker's own io_uring_enter); nothing here is shared between threads.
 */
#ifndef ESTUARY_IO_RING_H
#define ESTUARY_IO_RING_H

#include <stddef.h>

/* Start the calling thread's ring. enable 0: stay on epoll. Returns 1 when the ring is on,
 * else 0 with the reason in why (e.g. the kernel or a seccomp profile refused io_uring). */
int est_io_thread_start(int enable, char *why, size_t why_len);
/* Send what is queued (waiting up to about one second for sends the peer is slow to take),
 * then close the ring; the thread's calls go to libc again. */
void est_io_thread_stop(void);
/* 1 when the calling thread's ring is on */
int est_io_thread_active(void);
/* Route a connected TCP socket's I/O through the calling thread's ring (no-op without one).
 * Call it right after accept or connect, before the socket's first epoll registration. */
void est_io_track(int fd);

#endif
