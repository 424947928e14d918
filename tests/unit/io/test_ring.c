/*
 * io/ring.c: the calls libh2o makes on a tracked socket (epoll_ctl, epoll_wait, read, writev,
 * shutdown, close), driven here directly over a loopback TCP pair, the way libh2o's loop makes
 * them. Skipped where the kernel (or a seccomp profile) refuses io_uring.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "io/ring.h"

typedef struct {
    int ep, a, b; /* a: tracked (estuary's side), b: the peer, plain */
    int marker;
} pair_t;

static void nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static int setup(void **state)
{
    char why[160];
    if (!est_io_thread_start(1, why, sizeof(why))) {
        print_message("io_uring unavailable (%s): skipped\n", why);
        *state = NULL;
        return 0;
    }
    static pair_t p;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &len), 0);
    p.b = socket(AF_INET, SOCK_STREAM, 0);
    int small = 32 * 1024; /* bounded kernel buffers, so that test_backpressure fills them */
    setsockopt(p.b, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    assert_int_equal(connect(p.b, (struct sockaddr *)&sa, sizeof(sa)), 0);
    p.a = accept(l, NULL, NULL);
    assert_true(p.a >= 0);
    close(l);
    setsockopt(p.a, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    nonblock(p.a);
    nonblock(p.b);
    est_io_track(p.a);
    p.ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data = {.ptr = &p.marker}};
    assert_int_equal(epoll_ctl(p.ep, EPOLL_CTL_ADD, p.a, &ev), 0);
    *state = &p;
    return 0;
}

static int teardown(void **state)
{
    pair_t *p = *state;
    if (p == NULL)
        return 0;
    if (p->a >= 0)
        close(p->a);
    close(p->b);
    close(p->ep);
    est_io_thread_stop();
    return 0;
}

#define PAIR(state)                                                                                                                \
    pair_t *p = *(state);                                                                                                          \
    if (p == NULL)                                                                                                                 \
        skip();

/* one epoll_wait; returns the events libh2o would see for the tracked socket (0: none) */
static uint32_t wait_events(pair_t *p, int timeout_ms)
{
    struct epoll_event evs[8];
    int n = epoll_wait(p->ep, evs, 8, timeout_ms);
    uint32_t got = 0;
    for (int i = 0; i < n; ++i) {
        assert_ptr_equal(evs[i].data.ptr, &p->marker); /* libh2o's pointer, never our tag */
        got |= evs[i].events;
    }
    return got;
}

static size_t peer_read_all(pair_t *p, char *buf, size_t cap, int want_eof)
{
    size_t n = 0;
    for (int i = 0; i != 2000; ++i) {
        ssize_t r = recv(p->b, buf + n, cap - n, 0);
        if (r > 0) {
            n += (size_t)r;
            if (!want_eof && n == cap)
                break;
            continue;
        }
        if (r == 0)
            break;
        struct pollfd pf = {.fd = p->b, .events = POLLIN};
        wait_events(p, 0); /* the tracked side's queue is sent by its waits */
        poll(&pf, 1, 5);
    }
    return n;
}

static void test_read_through_ring(void **state)
{
    PAIR(state);
    assert_int_equal(send(p->b, "hello", 5, 0), 5);
    uint32_t ev = 0;
    for (int i = 0; i != 100 && (ev & EPOLLIN) == 0; ++i)
        ev |= wait_events(p, 100);
    assert_true(ev & EPOLLIN);
    char buf[64];
    assert_int_equal(read(p->a, buf, 2), 2); /* a short read leaves the rest staged */
    assert_memory_equal(buf, "he", 2);
    assert_int_equal(read(p->a, buf, sizeof(buf)), 3);
    assert_memory_equal(buf, "llo", 3);
    errno = 0;
    assert_int_equal(read(p->a, buf, sizeof(buf)), -1);
    assert_int_equal(errno, EAGAIN);
    /* the peer's end of stream comes the same way */
    shutdown(p->b, SHUT_WR);
    ev = 0;
    for (int i = 0; i != 100 && (ev & EPOLLIN) == 0; ++i)
        ev |= wait_events(p, 100);
    assert_int_equal(read(p->a, buf, sizeof(buf)), 0);
}

static void test_writes_go_at_the_wait(void **state)
{
    PAIR(state);
    struct iovec iov[2] = {{.iov_base = "wor", .iov_len = 3}, {.iov_base = "ld", .iov_len = 2}};
    assert_int_equal(writev(p->a, iov, 2), 5);
    assert_int_equal(write(p->a, "!", 1), 1);
    char buf[16];
    errno = 0;
    assert_int_equal(recv(p->b, buf, sizeof(buf), 0), -1); /* queued, not sent */
    assert_int_equal(errno, EAGAIN);
    wait_events(p, 0);
    assert_int_equal(peer_read_all(p, buf, 6, 0), 6);
    assert_memory_equal(buf, "world!", 6);
}

static void test_close_sends_the_queue(void **state)
{
    PAIR(state);
    assert_int_equal(write(p->a, "last words", 10), 10);
    assert_int_equal(close(p->a), 0);
    p->a = -1;
    char buf[32];
    assert_int_equal(peer_read_all(p, buf, sizeof(buf), 1), 10);
    assert_memory_equal(buf, "last words", 10);
}

typedef struct {
    int fd;
    char buf[16];
    size_t n;
    double eof_at;
} eof_reader_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *read_to_eof(void *arg)
{
    eof_reader_t *e = arg;
    struct pollfd pf = {.fd = e->fd, .events = POLLIN};
    while (poll(&pf, 1, 3000) == 1) {
        ssize_t r = recv(e->fd, e->buf + e->n, sizeof(e->buf) - e->n, 0);
        if (r > 0) {
            e->n += (size_t)r;
        } else if (r == 0) {
            e->eof_at = now_s();
            break;
        } else if (errno != EAGAIN) {
            break;
        }
    }
    return NULL;
}

/* shutdown(SHUT_WR) behind queued bytes: the bytes, then the end, sent by the next wait before
 * it blocks (not after its next event: a lingering close waits for the client's end) */
static void test_shutdown_after_the_queue(void **state)
{
    PAIR(state);
    eof_reader_t e = {.fd = p->b};
    pthread_t th;
    assert_int_equal(write(p->a, "bye", 3), 3);
    assert_int_equal(shutdown(p->a, SHUT_WR), 0);
    assert_int_equal(pthread_create(&th, NULL, read_to_eof, &e), 0);
    double t0 = now_s();
    wait_events(p, 1500); /* nothing comes from the peer: blocks until the timeout */
    pthread_join(th, NULL);
    assert_int_equal(e.n, 3);
    assert_memory_equal(e.buf, "bye", 3);
    assert_true(e.eof_at > 0 && e.eof_at - t0 < 0.5);
}

/* a peer that does not read: writes are refused (EAGAIN) while a send is in flight, EPOLLOUT is
 * given only once the queue is out, and every byte reported written arrives, in order */
static void test_backpressure(void **state)
{
    PAIR(state);
    static char chunk[8192], got[8 << 20];
    size_t written = 0;
    int refused = 0;
    for (int i = 0; i != 4000 && !refused; ++i) {
        for (size_t k = 0; k != sizeof(chunk); ++k)
            chunk[k] = (char)((written + k) * 7 % 251);
        ssize_t r = write(p->a, chunk, sizeof(chunk));
        if (r < 0) {
            assert_int_equal(errno, EAGAIN);
            refused = 1;
        } else {
            assert_int_equal(r, sizeof(chunk));
            written += (size_t)r;
        }
        wait_events(p, 0);
    }
    assert_true(refused);
    assert_true(written < sizeof(got));
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data = {.ptr = &p->marker}};
    assert_int_equal(epoll_ctl(p->ep, EPOLL_CTL_MOD, p->a, &ev), 0);
    assert_false(wait_events(p, 0) & EPOLLOUT); /* held back: the queue is not out */
    size_t n = 0;
    uint32_t seen = 0;
    for (int i = 0; i != 5000 && (n < written || !(seen & EPOLLOUT)); ++i) {
        ssize_t r = recv(p->b, got + n, sizeof(got) - n, MSG_DONTWAIT);
        if (r > 0)
            n += (size_t)r;
        seen |= wait_events(p, 1);
    }
    assert_int_equal(n, written);
    assert_true(seen & EPOLLOUT);
    for (size_t k = 0; k != n; ++k)
        if (got[k] != (char)(k * 7 % 251))
            fail_msg("byte %zu out of order", k);
    assert_int_equal(write(p->a, "x", 1), 1); /* writable again */
}

static size_t drain_peer(pair_t *p)
{
    static char sink[1 << 16];
    size_t n = 0;
    ssize_t r;
    while ((r = recv(p->b, sink, sizeof(sink), MSG_DONTWAIT)) > 0)
        n += (size_t)r;
    return n;
}

/* libh2o registers EPOLLOUT only when its mask changes. Held back while a send was in flight,
 * it must be back in the epoll set once that send completes: libh2o may keep polling for it
 * without another epoll_ctl (here: a big write that goes straight to writev, partly written) */
static void test_epollout_back_after_the_send(void **state)
{
    PAIR(state);
    static char big[4 << 20];
    memset(big, 'b', sizeof(big));
    ssize_t r;
    while ((r = write(p->a, big, sizeof(big))) > 0) /* fill the kernel's buffers (straight to writev) */
        ;
    assert_int_equal(errno, EAGAIN);
    assert_int_equal(write(p->a, "small", 5), 5); /* queued */
    wait_events(p, 0);                            /* sent: the kernel takes none of it now */
    errno = 0;
    assert_int_equal(write(p->a, "x", 1), -1);
    assert_int_equal(errno, EAGAIN);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data = {.ptr = &p->marker}};
    assert_int_equal(epoll_ctl(p->ep, EPOLL_CTL_MOD, p->a, &ev), 0);
    uint32_t seen = 0;
    for (int i = 0; i != 2000 && !(seen & EPOLLOUT); ++i) {
        drain_peer(p);
        seen |= wait_events(p, 1);
    }
    assert_true(seen & EPOLLOUT);
    r = write(p->a, big, sizeof(big)); /* straight to writev: partly written */
    assert_true(r > 0 && r < (ssize_t)sizeof(big));
    seen = 0;
    for (int i = 0; i != 2000 && !(seen & EPOLLOUT); ++i) {
        drain_peer(p);
        seen |= wait_events(p, 1);
    }
    assert_true(seen & EPOLLOUT);
}

static void test_untracked_pass_through(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], "abc", 3), 3); /* straight to the pipe: no wait needed */
    char buf[8];
    assert_int_equal(read(fds[0], buf, sizeof(buf)), 3);
    assert_memory_equal(buf, "abc", 3);
    close(fds[0]);
    close(fds[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_read_through_ring, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writes_go_at_the_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_sends_the_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_after_the_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_epollout_back_after_the_send, setup, teardown),
        cmocka_unit_test_setup_teardown(test_untracked_pass_through, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
