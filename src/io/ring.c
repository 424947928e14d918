/*
 * estuary — a worker's socket I/O through io_uring, under libh2o's event loop (docs/io.md).
 *
 * libh2o 2.2.5 drives its sockets with epoll_wait, read and writev. For the sockets a worker
 * tracks (its clients' and its backends' connections) this file answers those calls itself:
 *
 *  - reads: while libh2o wants to read a socket, a one-shot IORING_OP_RECV is armed on it in
 *    the kernel, with a receive buffer picked from the worker's provided-buffer ring only when
 *    bytes arrive. Its completion is handed to libh2o as an EPOLLIN event, and libh2o's read()
 *    is served from that buffer. The socket's own EPOLLIN is taken out of the epoll set.
 *  - writes: writev/write/send copy into the socket's queue and report everything written; the
 *    queue is sent by the worker's next wait. A send the kernel cannot take at once is finished
 *    in the background (MSG_WAITALL); until then the socket answers EAGAIN and libh2o's EPOLLOUT
 *    is held back and given when the queue is empty, so libh2o's own backpressure still holds.
 *  - the wait: libh2o's epoll_wait becomes one io_uring_enter that submits the queued sends and
 *    the armed reads and waits for a completion. libh2o's epoll descriptor is watched by a
 *    multishot poll in the same ring, and read without blocking whenever it fired.
 *
 * So a proxied request costs two io_uring_enter calls instead of epoll_wait + read + writev
 * twice. Everything else (listeners, DNS, Redis, the admin thread, untracked descriptors) goes
 * to libc unchanged. Bounds: one receive buffer per armed socket at most (256 x 4 KiB per
 * worker); a socket's send queue is only appended to while nothing of it is in flight; a send
 * still in flight when its socket is closed is cancelled after ORPHAN_MS.
 */
#include "io/ring.h"

#include <dlfcn.h>
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define RING_ENTRIES 1024
#define RBUF_COUNT 256 /* provided receive buffers per worker (a power of two) */
#define RBUF_SIZE 4096
#define RBUF_GROUP 7
#define PASS_WRITE (64 * 1024) /* a write this large to an idle socket goes straight to writev */
#define ORPHAN_MS 30000        /* a closed socket's unsent bytes are given up after this */
#define SPARE_MAX 64
#define SMALL_CAP (4096 - sizeof(obuf_t))
#define EV_TAG (1ull << 63) /* epoll data of a tracked socket: EV_TAG | fd (user pointers are < 2^47) */

enum { UD_RECV = 1, UD_SEND, UD_EPOLL, UD_CANCEL };
#define UD(type, gen, fd) ((uint64_t)(type) << 56 | (uint64_t)((gen)&0xffffff) << 32 | (uint32_t)(fd))
#define UD_TYPE(u) ((int)((u) >> 56))
#define UD_GEN(u) ((uint32_t)((u) >> 32) & 0xffffff)
#define UD_FD(u) ((int)(uint32_t)(u))

typedef struct {
    size_t len, off, cap; /* off: bytes the kernel took */
    char data[];
} obuf_t;

typedef struct {
    void *ptr;         /* libh2o's epoll data for the socket */
    uint32_t lib_mask; /* the events libh2o asked for */
    uint32_t gen;      /* bumped at every track and close: completions of an earlier socket are told apart */
    uint8_t tracked, armed, staged, raw, syn_out, shut, in_ready, in_arm, in_dirty;
    uint8_t registered; /* in libh2o's epoll set (added, not deleted) */
    uint32_t real_mask; /* the events registered there for it */
    int err;            /* errno of a failed send, given to the next write */
    int32_t st_res;     /* staged receive: bytes, 0 (end of stream) or -errno */
    uint32_t st_off;    /* bytes of it already read */
    uint16_t st_bid;    /* its receive buffer */
    uint32_t ev_round, ev_idx;
    obuf_t *out;    /* queued, not submitted */
    obuf_t *flight; /* submitted, not completed */
} fdrec_t;

typedef struct {
    int *v;
    size_t n, cap;
} ivec_t;

typedef struct {
    uint64_t ud, deadline_ms;
    obuf_t *buf;
} orphan_t;

typedef struct {
    struct io_uring ring;
    struct io_uring_buf_ring *br;
    char *rbufs;
    int ep; /* libh2o's epoll descriptor (-1 until a tracked socket is registered) */
    int ep_armed, ep_hot;
    fdrec_t *fds;
    size_t cap;
    ivec_t ready, arm, dirty;
    orphan_t *orphans;
    size_t norphans, orphans_cap;
    obuf_t *spare[SPARE_MAX];
    size_t nspare;
    unsigned inline_expected; /* sends submitted with MSG_DONTWAIT: each completes inside the submit */
    uint32_t round;
} io_t;

static __thread io_t *T;

static struct {
    ssize_t (*read)(int, void *, size_t);
    ssize_t (*recv)(int, void *, size_t, int);
    ssize_t (*write)(int, const void *, size_t);
    ssize_t (*writev)(int, const struct iovec *, int);
    ssize_t (*send)(int, const void *, size_t, int);
    int (*close)(int);
    int (*shutdown)(int, int);
    int (*epoll_ctl)(int, int, int, struct epoll_event *);
    int (*epoll_wait)(int, struct epoll_event *, int, int);
} real;

static void resolve(void)
{
    /* the next definitions after the executable's: libc's (or a sanitizer's interceptors) */
    *(void **)&real.read = dlsym(RTLD_NEXT, "read");
    *(void **)&real.recv = dlsym(RTLD_NEXT, "recv");
    *(void **)&real.write = dlsym(RTLD_NEXT, "write");
    *(void **)&real.writev = dlsym(RTLD_NEXT, "writev");
    *(void **)&real.send = dlsym(RTLD_NEXT, "send");
    *(void **)&real.close = dlsym(RTLD_NEXT, "close");
    *(void **)&real.shutdown = dlsym(RTLD_NEXT, "shutdown");
    *(void **)&real.epoll_ctl = dlsym(RTLD_NEXT, "epoll_ctl");
    *(void **)&real.epoll_wait = dlsym(RTLD_NEXT, "epoll_wait");
    if (real.read == NULL || real.recv == NULL || real.write == NULL || real.writev == NULL || real.send == NULL ||
        real.close == NULL || real.shutdown == NULL || real.epoll_ctl == NULL || real.epoll_wait == NULL)
        abort();
}

__attribute__((constructor(101))) static void resolve_at_start(void)
{
    resolve();
}

#define REAL(name) (__builtin_expect(real.name == NULL, 0) ? resolve() : (void)0, real.name)

/* ---- small helpers ------------------------------------------------------------------------ */

/* room for one more element in the array *arr of *cap (doubled when full; first: the first size) */
static void grow(void **arr, size_t n, size_t *cap, size_t elem, size_t first)
{
    if (n != *cap)
        return;
    size_t c = *cap ? *cap * 2 : first;
    void *p = realloc(*arr, c * elem);
    if (p == NULL)
        abort(); /* a few bytes per socket: as for libh2o's own allocations, no way on */
    *arr = p;
    *cap = c;
}

static void ivec_push(ivec_t *v, int fd)
{
    grow((void **)&v->v, v->n, &v->cap, sizeof(*v->v), 64);
    v->v[v->n++] = fd;
}

static fdrec_t *rec_of(io_t *t, int fd)
{
    if (t == NULL || fd < 0 || (size_t)fd >= t->cap || !t->fds[fd].tracked)
        return NULL;
    return t->fds + fd;
}

static void push_ready(io_t *t, fdrec_t *r, int fd)
{
    if (!r->in_ready) {
        r->in_ready = 1;
        ivec_push(&t->ready, fd);
    }
}

static void push_arm(io_t *t, fdrec_t *r, int fd)
{
    if (!r->in_arm && (r->lib_mask & EPOLLIN) != 0) {
        r->in_arm = 1;
        ivec_push(&t->arm, fd);
    }
}

static void push_dirty(io_t *t, fdrec_t *r, int fd)
{
    if (!r->in_dirty) {
        r->in_dirty = 1;
        ivec_push(&t->dirty, fd);
    }
}

static void obuf_free(io_t *t, obuf_t *b)
{
    if (b == NULL)
        return;
    if (b->cap == SMALL_CAP && t->nspare < SPARE_MAX)
        t->spare[t->nspare++] = b;
    else
        free(b);
}

/* append iov to *bp (allocated or grown as needed) */
static int obuf_append(io_t *t, obuf_t **bp, const struct iovec *iov, int cnt, size_t tot)
{
    obuf_t *b = *bp;
    if (b == NULL) {
        if (tot <= SMALL_CAP && t->nspare != 0) {
            b = t->spare[--t->nspare];
        } else {
            size_t cap = tot <= SMALL_CAP ? SMALL_CAP : tot;
            if ((b = malloc(sizeof(*b) + cap)) == NULL)
                return -1;
            b->cap = cap;
        }
        b->len = b->off = 0;
    } else if (b->len + tot > b->cap) {
        size_t cap = b->cap * 2 > b->len + tot ? b->cap * 2 : b->len + tot;
        obuf_t *n = realloc(b, sizeof(*b) + cap);
        if (n == NULL)
            return -1;
        b = n;
        b->cap = cap;
    }
    for (int i = 0; i != cnt; ++i) {
        if (iov[i].iov_len != 0)
            memcpy(b->data + b->len, iov[i].iov_base, iov[i].iov_len);
        b->len += iov[i].iov_len;
    }
    *bp = b;
    return 0;
}

static void rbuf_put(io_t *t, unsigned bid)
{
    io_uring_buf_ring_add(t->br, t->rbufs + (size_t)bid * RBUF_SIZE, RBUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(RBUF_COUNT), 0);
    io_uring_buf_ring_advance(t->br, 1);
}

static struct io_uring_sqe *get_sqe(io_t *t)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&t->ring);
    if (sqe == NULL) {
        io_uring_submit(&t->ring); /* the queue is full: hand it over now (sends complete inline) */
        if ((sqe = io_uring_get_sqe(&t->ring)) == NULL)
            abort();
    }
    return sqe;
}

/* submit r->flight's unsent part; async: let the kernel wait for room (MSG_WAITALL) */
static void prep_send(io_t *t, fdrec_t *r, int fd, int async)
{
    obuf_t *b = r->flight;
    struct io_uring_sqe *sqe = get_sqe(t);
    io_uring_prep_send(sqe, fd, b->data + b->off, b->len - b->off, MSG_NOSIGNAL | (async ? MSG_WAITALL : MSG_DONTWAIT));
    io_uring_sqe_set_data64(sqe, UD(UD_SEND, r->gen, fd));
    if (!async)
        t->inline_expected++;
}

static void prep_cancel(io_t *t, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(t);
    io_uring_prep_cancel64(sqe, ud, 0);
    io_uring_sqe_set_data64(sqe, UD(UD_CANCEL, 0, 0));
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void orphan_add(io_t *t, uint64_t ud, obuf_t *b)
{
    grow((void **)&t->orphans, t->norphans, &t->orphans_cap, sizeof(*t->orphans), 16);
    t->orphans[t->norphans++] = (orphan_t){.ud = ud, .deadline_ms = now_ms() + ORPHAN_MS, .buf = b};
}

/* the send of a closed socket completed (or was cancelled): its buffer goes */
static void orphan_done(io_t *t, uint64_t ud)
{
    for (size_t i = 0; i != t->norphans; ++i) {
        if (t->orphans[i].ud == ud) {
            obuf_free(t, t->orphans[i].buf);
            t->orphans[i] = t->orphans[--t->norphans];
            return;
        }
    }
}

/* cancel the orphans past their deadline; returns the ms until the next one (-1: none) */
static int64_t orphans_expire(io_t *t)
{
    if (t->norphans == 0)
        return -1;
    uint64_t now = now_ms();
    int64_t next = -1;
    for (size_t i = 0; i != t->norphans; ++i) {
        orphan_t *o = t->orphans + i;
        if (o->deadline_ms == 0)
            continue; /* cancel already sent */
        if (o->deadline_ms <= now) {
            prep_cancel(t, o->ud);
            o->deadline_ms = 0;
        } else if (next < 0 || (int64_t)(o->deadline_ms - now) < next) {
            next = (int64_t)(o->deadline_ms - now);
        }
    }
    return next;
}

/* ---- the worker's ring -------------------------------------------------------------------- */

int est_io_thread_start(int enable, char *why, size_t why_len)
{
    if (real.read == NULL)
        resolve();
    if (T != NULL)
        return 1;
    if (!enable) {
        snprintf(why, why_len, "off in the config");
        return 0;
    }
    io_t *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        snprintf(why, why_len, "out of memory");
        return 0;
    }
    t->ep = -1;
    struct io_uring_params p = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN};
    int ret = io_uring_queue_init_params(RING_ENTRIES, &t->ring, &p);
    if (ret < 0) {
        snprintf(why, why_len, "io_uring_setup: %s", strerror(-ret));
        free(t);
        return 0;
    }
    if ((p.features & (IORING_FEAT_EXT_ARG | IORING_FEAT_NODROP)) != (IORING_FEAT_EXT_ARG | IORING_FEAT_NODROP)) {
        snprintf(why, why_len, "the kernel's io_uring lacks timeouts on wait or overflow-safe completions");
        goto Fail;
    }
    size_t br_size = RBUF_COUNT * sizeof(struct io_uring_buf);
    if (posix_memalign((void **)&t->br, 4096, br_size) != 0 ||
        posix_memalign((void **)&t->rbufs, 4096, (size_t)RBUF_COUNT * RBUF_SIZE) != 0) {
        snprintf(why, why_len, "out of memory");
        goto Fail;
    }
    memset(t->br, 0, br_size);
    io_uring_buf_ring_init(t->br);
    struct io_uring_buf_reg reg = {.ring_addr = (uint64_t)(uintptr_t)t->br, .ring_entries = RBUF_COUNT, .bgid = RBUF_GROUP};
    if ((ret = io_uring_register_buf_ring(&t->ring, &reg, 0)) != 0) {
        snprintf(why, why_len, "provided-buffer ring: %s", strerror(-ret));
        goto Fail;
    }
    for (unsigned i = 0; i != RBUF_COUNT; ++i)
        io_uring_buf_ring_add(t->br, t->rbufs + (size_t)i * RBUF_SIZE, RBUF_SIZE, (unsigned short)i,
                              io_uring_buf_ring_mask(RBUF_COUNT), (int)i);
    io_uring_buf_ring_advance(t->br, RBUF_COUNT);
    io_uring_register_ring_fd(&t->ring); /* optional: saves a descriptor lookup per enter */
    T = t;
    return 1;
Fail:
    io_uring_queue_exit(&t->ring);
    free(t->br);
    free(t->rbufs);
    free(t);
    return 0;
}

int est_io_thread_active(void)
{
    return T != NULL;
}

void est_io_track(int fd)
{
    io_t *t = T;
    if (t == NULL || fd < 0)
        return;
    if ((size_t)fd >= t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap <= (size_t)fd)
            cap *= 2;
        fdrec_t *p = realloc(t->fds, cap * sizeof(*p));
        if (p == NULL)
            return; /* stays on epoll */
        memset(p + t->cap, 0, (cap - t->cap) * sizeof(*p));
        t->fds = p;
        t->cap = cap;
    }
    fdrec_t *r = t->fds + fd;
    uint32_t gen = r->gen + 1;
    memset(r, 0, sizeof(*r));
    r->gen = gen;
    r->tracked = 1;
}

static void reap(io_t *t);

void est_io_thread_stop(void)
{
    io_t *t = T;
    if (t == NULL)
        return;
    /* queued sends go now; then up to ~1 s for those the peers are slow to take */
    for (size_t i = 0; i != t->dirty.n; ++i) {
        int fd = t->dirty.v[i];
        fdrec_t *r = rec_of(t, fd);
        if (r != NULL && r->flight == NULL && r->out != NULL) {
            r->flight = r->out;
            r->out = NULL;
            prep_send(t, r, fd, 1);
        }
    }
    t->dirty.n = 0;
    for (int i = 0; i != 10; ++i) {
        int busy = t->norphans != 0;
        for (size_t fd = 0; !busy && fd != t->cap; ++fd)
            busy = t->fds[fd].tracked && t->fds[fd].flight != NULL;
        if (!busy)
            break;
        struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 100 * 1000000L};
        struct io_uring_cqe *cqe;
        io_uring_submit_and_wait_timeout(&t->ring, &cqe, 1, &ts, NULL);
        reap(t);
    }
    T = NULL;
    io_uring_queue_exit(&t->ring); /* cancels what is left */
    for (size_t fd = 0; fd != t->cap; ++fd) {
        free(t->fds[fd].out);
        free(t->fds[fd].flight);
    }
    for (size_t i = 0; i != t->norphans; ++i)
        free(t->orphans[i].buf);
    for (size_t i = 0; i != t->nspare; ++i)
        free(t->spare[i]);
    free(t->orphans);
    free(t->fds);
    free(t->ready.v);
    free(t->arm.v);
    free(t->dirty.v);
    free(t->br);
    free(t->rbufs);
    free(t);
}

/* ---- completions ---------------------------------------------------------------------------- */

static void send_done(io_t *t, fdrec_t *r, int fd, int res)
{
    obuf_t *b = r->flight;
    if (res >= 0) {
        b->off += (size_t)res;
        if (b->off < b->len) {
            prep_send(t, r, fd, 1); /* the rest when the peer makes room */
            return;
        }
    } else if (res == -EAGAIN) {
        prep_send(t, r, fd, 1);
        return;
    } else {
        r->err = -res;
        obuf_free(t, r->out);
        r->out = NULL;
    }
    obuf_free(t, b);
    r->flight = NULL;
    if (r->out != NULL)
        push_dirty(t, r, fd);
    if ((r->lib_mask & EPOLLOUT) != 0) {
        /* libh2o waits to write (it was told EAGAIN, or polls since before the send): it is
         * told now, and its own EPOLLOUT goes back into the epoll set, because libh2o does not
         * register it again when its mask did not change */
        r->syn_out = 1;
        push_ready(t, r, fd);
        if (r->registered && (r->real_mask & EPOLLOUT) == 0) {
            r->real_mask |= EPOLLOUT;
            struct epoll_event e = {.events = r->real_mask, .data = {.u64 = EV_TAG | (uint32_t)fd}};
            REAL(epoll_ctl)(t->ep, EPOLL_CTL_MOD, fd, &e);
        }
    }
    if (r->shut && r->out == NULL) {
        REAL(shutdown)(fd, r->shut - 1);
        r->shut = 0;
    }
}

static void recv_done(io_t *t, fdrec_t *r, int fd, int res, unsigned flags)
{
    r->armed = 0;
    if (res == -ENOBUFS) {
        r->raw = 1; /* no receive buffer free: libh2o's read() goes to the socket itself */
        push_ready(t, r, fd);
    } else if (res == -ECANCELED || res == -EAGAIN || res == -EINTR) {
        push_arm(t, r, fd);
    } else {
        r->staged = 1;
        r->st_res = res;
        r->st_off = 0;
        if (res > 0)
            r->st_bid = (uint16_t)(flags >> IORING_CQE_BUFFER_SHIFT);
        push_ready(t, r, fd);
    }
}

static void reap(io_t *t)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&t->ring, head, cqe)
    {
        ++n;
        uint64_t ud = cqe->user_data;
        int fd = UD_FD(ud);
        fdrec_t *r = rec_of(t, fd);
        if (r != NULL && (r->gen & 0xffffff) != UD_GEN(ud))
            r = NULL; /* a completion for an earlier socket with this number */
        switch (UD_TYPE(ud)) {
        case UD_SEND:
            if (r != NULL && r->flight != NULL)
                send_done(t, r, fd, cqe->res);
            else
                orphan_done(t, ud);
            break;
        case UD_RECV:
            if (r != NULL && r->armed)
                recv_done(t, r, fd, cqe->res, cqe->flags);
            else if ((cqe->flags & IORING_CQE_F_BUFFER) != 0)
                rbuf_put(t, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
            break;
        case UD_EPOLL:
            t->ep_hot = 1;
            if ((cqe->flags & IORING_CQE_F_MORE) == 0)
                t->ep_armed = 0;
            break;
        default:
            break;
        }
    }
    io_uring_cq_advance(&t->ring, n);
}

/* r has an event libh2o waits for: bytes while it reads, or the end of a send while it writes */
static int has_event(const fdrec_t *r)
{
    return ((r->staged || r->raw) && (r->lib_mask & EPOLLIN) != 0) || (r->syn_out && (r->lib_mask & EPOLLOUT) != 0);
}

/* drop the sockets of the ready list that have no event now (read since, closed, or paused by
 * libh2o: epoll_ctl puts a paused one back when libh2o reads again) */
static void ready_prune(io_t *t)
{
    size_t keep = 0;
    for (size_t i = 0; i != t->ready.n; ++i) {
        int fd = t->ready.v[i];
        fdrec_t *r = rec_of(t, fd);
        if (r != NULL && has_event(r))
            t->ready.v[keep++] = fd;
        else if (r != NULL)
            r->in_ready = 0;
    }
    t->ready.n = keep;
}

/* the events the ring produced, as libh2o's epoll events (at most max) */
static int collect(io_t *t, struct epoll_event *evs, int max)
{
    int n = 0;
    size_t keep = 0;
    for (size_t i = 0; i != t->ready.n; ++i) {
        int fd = t->ready.v[i];
        fdrec_t *r = rec_of(t, fd);
        if (r == NULL || r->ev_round == t->round)
            continue; /* closed, or listed twice (a new socket with the number of a closed one) */
        uint32_t ev = 0;
        if (r->syn_out && (r->lib_mask & EPOLLOUT) == 0)
            r->syn_out = 0; /* libh2o no longer waits to write */
        if ((r->staged || r->raw) && (r->lib_mask & EPOLLIN) != 0)
            ev |= EPOLLIN;
        if (r->syn_out && (r->lib_mask & EPOLLOUT) != 0)
            ev |= EPOLLOUT;
        if (ev != 0 && n < max) {
            r->syn_out = 0;
            evs[n] = (struct epoll_event){.events = ev, .data = {.ptr = r->ptr}};
            r->ev_round = t->round;
            r->ev_idx = (uint32_t)n++;
        }
        if (has_event(r))
            t->ready.v[keep++] = fd; /* given now (ready_prune drops it once read) or no room this time */
        else
            r->in_ready = 0;
    }
    t->ready.n = keep;
    return n;
}

/* libh2o's epoll events, read without waiting; a tracked socket's are given libh2o's pointer
 * back, merged with its ring event when it has one (libh2o must not see one socket twice) */
static int read_epoll(io_t *t, int ep, struct epoll_event *evs, int n, int max)
{
    if (n >= max)
        return n;
    int m = REAL(epoll_wait)(ep, evs + n, max - n, 0);
    if (m <= 0) {
        /* nothing ready: the next readiness wakes the epoll descriptor's waiters, i.e. the
         * ring's poll. Until then it stays hot, because epoll keeps a level-triggered socket
         * ready (a writable one libh2o still polls) without waking anyone again. */
        t->ep_hot = 0;
        return n;
    }
    int out = n;
    for (int i = n; i != n + m; ++i) {
        struct epoll_event e = evs[i];
        if ((e.data.u64 & EV_TAG) != 0) {
            int fd = (int)(uint32_t)e.data.u64;
            fdrec_t *r = rec_of(t, fd);
            if (r == NULL)
                continue;
            if (r->ev_round == t->round && r->ev_idx < (uint32_t)n) {
                evs[r->ev_idx].events |= e.events;
                continue;
            }
            e.data.ptr = r->ptr;
        }
        evs[out++] = e;
    }
    return out;
}

/* ---- the calls libh2o (and estuary) make -------------------------------------------------- */

int epoll_wait(int ep, struct epoll_event *evs, int max, int timeout)
{
    io_t *t = T;
    if (t == NULL || ep != t->ep || max <= 0)
        return REAL(epoll_wait)(ep, evs, max, timeout);
    ++t->round;
    /* queued sends */
    int reap_first = 0;
    for (size_t i = 0; i != t->dirty.n; ++i) {
        int fd = t->dirty.v[i];
        fdrec_t *r = rec_of(t, fd);
        if (r == NULL)
            continue;
        r->in_dirty = 0;
        if (r->flight == NULL && r->out != NULL) {
            r->flight = r->out;
            r->out = NULL;
            prep_send(t, r, fd, 0);
            reap_first |= r->shut != 0;
        }
    }
    t->dirty.n = 0;
    if (reap_first) {
        /* a shutdown waits for this send: do it now, not after the next event */
        io_uring_submit_and_get_events(&t->ring);
        t->inline_expected = 0;
        reap(t);
    }
    /* reads for the sockets libh2o wants to read and has nothing staged for */
    for (size_t i = 0; i != t->arm.n; ++i) {
        int fd = t->arm.v[i];
        fdrec_t *r = rec_of(t, fd);
        if (r == NULL)
            continue;
        r->in_arm = 0;
        if ((r->lib_mask & EPOLLIN) != 0 && !r->armed && !r->staged && !r->raw) {
            struct io_uring_sqe *sqe = get_sqe(t);
            io_uring_prep_recv(sqe, fd, NULL, RBUF_SIZE, 0);
            sqe->flags |= IOSQE_BUFFER_SELECT;
            sqe->buf_group = RBUF_GROUP;
            io_uring_sqe_set_data64(sqe, UD(UD_RECV, r->gen, fd));
            r->armed = 1;
        }
    }
    t->arm.n = 0;
    if (!t->ep_armed) {
        struct io_uring_sqe *sqe = get_sqe(t);
        io_uring_prep_poll_multishot(sqe, ep, POLLIN);
        io_uring_sqe_set_data64(sqe, UD(UD_EPOLL, 0, 0));
        t->ep_armed = 1;
        t->ep_hot = 1; /* what was ready before the poll was armed */
    }
    int64_t orphan_wait = orphans_expire(t);
    if (orphan_wait >= 0 && (timeout < 0 || orphan_wait < timeout))
        timeout = (int)orphan_wait;
    ready_prune(t);
    if (t->ready.n != 0 || t->ep_hot)
        timeout = 0;

    if (timeout == 0) {
        io_uring_submit_and_get_events(&t->ring);
    } else {
        struct __kernel_timespec ts = {.tv_sec = timeout / 1000, .tv_nsec = (long)(timeout % 1000) * 1000000L};
        struct io_uring_cqe *cqe;
        /* the DONTWAIT sends complete inside the submit: wait for one completion beyond them */
        io_uring_submit_and_wait_timeout(&t->ring, &cqe, t->inline_expected + 1, timeout < 0 ? NULL : &ts, NULL);
    }
    t->inline_expected = 0;
    reap(t);
    int n = collect(t, evs, max);
    if (t->ep_hot)
        n = read_epoll(t, ep, evs, n, max);
    return n;
}

int epoll_ctl(int ep, int op, int fd, struct epoll_event *ev)
{
    io_t *t = T;
    fdrec_t *r = rec_of(t, fd);
    if (r == NULL || (op != EPOLL_CTL_DEL && ev == NULL))
        return REAL(epoll_ctl)(ep, op, fd, ev);
    t->ep = ep;
    if (op == EPOLL_CTL_DEL) {
        r->lib_mask = r->real_mask = 0;
        r->registered = 0;
        return REAL(epoll_ctl)(ep, op, fd, ev);
    }
    r->ptr = ev->data.ptr;
    r->lib_mask = ev->events;
    uint32_t mask = ev->events & ~(uint32_t)EPOLLIN; /* the ring reads */
    if (r->flight != NULL)
        mask &= ~(uint32_t)EPOLLOUT; /* given when the send in flight completes (send_done) */
    if ((ev->events & EPOLLIN) != 0) {
        if (r->staged || r->raw)
            push_ready(t, r, fd);
        else if (!r->armed)
            push_arm(t, r, fd);
    }
    r->real_mask = mask;
    r->registered = 1;
    struct epoll_event e = {.events = mask, .data = {.u64 = EV_TAG | (uint32_t)fd}};
    return REAL(epoll_ctl)(ep, op, fd, &e);
}

/* read from what the ring received for r; peek leaves it there */
static ssize_t take(io_t *t, fdrec_t *r, int fd, void *buf, size_t len, int peek)
{
    if (r->staged) {
        if (r->st_res <= 0) {
            int res = r->st_res;
            if (!peek) {
                r->staged = 0;
                push_arm(t, r, fd);
            }
            if (res < 0) {
                errno = -res;
                return -1;
            }
            return 0;
        }
        size_t avail = (size_t)r->st_res - r->st_off, n = len < avail ? len : avail;
        memcpy(buf, t->rbufs + (size_t)r->st_bid * RBUF_SIZE + r->st_off, n);
        if (peek)
            return (ssize_t)n;
        r->st_off += (uint32_t)n;
        if (r->st_off == (uint32_t)r->st_res) {
            int full = r->st_res == RBUF_SIZE;
            r->staged = 0;
            rbuf_put(t, r->st_bid);
            push_arm(t, r, fd);
            if (full && len > n) { /* more may be waiting: take it in the same call */
                ssize_t more = REAL(read)(fd, (char *)buf + n, len - n);
                if (more > 0)
                    n += (size_t)more;
            }
        }
        return (ssize_t)n;
    }
    if (r->armed) {
        errno = EAGAIN; /* the armed receive has the socket's next bytes: they come in order */
        return -1;
    }
    if (r->raw && !peek)
        r->raw = 0;
    push_arm(t, r, fd);
    return peek ? REAL(recv)(fd, buf, len, MSG_PEEK) : REAL(read)(fd, buf, len);
}

ssize_t read(int fd, void *buf, size_t len)
{
    io_t *t = T;
    fdrec_t *r = rec_of(t, fd);
    if (r == NULL)
        return REAL(read)(fd, buf, len);
    return take(t, r, fd, buf, len, 0);
}

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    io_t *t = T;
    fdrec_t *r = rec_of(t, fd);
    if (r == NULL || (flags & ~(MSG_PEEK | MSG_DONTWAIT | MSG_NOSIGNAL)) != 0)
        return REAL(recv)(fd, buf, len, flags);
    return take(t, r, fd, buf, len, (flags & MSG_PEEK) != 0);
}

/* queue for the next wait; everything is reported written, or EAGAIN while a send is in flight */
static ssize_t put(io_t *t, fdrec_t *r, int fd, const struct iovec *iov, int cnt)
{
    if (r->err != 0) {
        errno = r->err;
        return -1;
    }
    if (r->flight != NULL) {
        errno = EAGAIN;
        return -1;
    }
    size_t tot = 0;
    for (int i = 0; i != cnt; ++i)
        tot += iov[i].iov_len;
    if (tot == 0)
        return 0;
    if (r->out == NULL && tot >= PASS_WRITE)
        return REAL(writev)(fd, iov, cnt); /* bulk to an idle socket: no copy, the kernel's backpressure */
    if (obuf_append(t, &r->out, iov, cnt, tot) != 0) {
        errno = ENOMEM;
        return -1;
    }
    push_dirty(t, r, fd);
    return (ssize_t)tot;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    io_t *t = T;
    fdrec_t *r = rec_of(t, fd);
    if (r == NULL || cnt < 0)
        return REAL(writev)(fd, iov, cnt);
    return put(t, r, fd, iov, cnt);
}

ssize_t write(int fd, const void *buf, size_t len)
{
    io_t *t = T;
    fdrec_t *r = rec_of(t, fd);
    if (r == NULL)
        return REAL(write)(fd, buf, len);
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    return put(t, r, fd, &iov, 1);
}

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    io_t *t = T;
    fdrec_t *r = rec_of(t, fd);
    if (r == NULL || (flags & ~(MSG_DONTWAIT | MSG_NOSIGNAL)) != 0)
        return REAL(send)(fd, buf, len, flags);
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    return put(t, r, fd, &iov, 1);
}

int shutdown(int fd, int how)
{
    io_t *t = T;
    fdrec_t *r = rec_of(t, fd);
    if (r == NULL || how == SHUT_RD)
        return REAL(shutdown)(fd, how);
    if (how == SHUT_WR && (r->out != NULL || r->flight != NULL)) {
        r->shut = (uint8_t)(how + 1); /* after the queued bytes */
        return 0;
    }
    obuf_free(t, r->out); /* SHUT_RDWR: an abort */
    r->out = NULL;
    return REAL(shutdown)(fd, how);
}

int close(int fd)
{
    io_t *t = T;
    fdrec_t *r = rec_of(t, fd);
    if (r == NULL)
        return REAL(close)(fd);
    if (r->out != NULL && r->flight == NULL) {
        /* the last bytes (e.g. a reply with Connection: close): handed to the kernel before the
         * descriptor goes, finished in the background */
        r->flight = r->out;
        r->out = NULL;
        prep_send(t, r, fd, 1);
        io_uring_submit(&t->ring);
    }
    if (r->flight != NULL)
        orphan_add(t, UD(UD_SEND, r->gen, fd), r->flight);
    obuf_free(t, r->out);
    if (r->armed)
        prep_cancel(t, UD(UD_RECV, r->gen, fd));
    if (r->staged && r->st_res > 0)
        rbuf_put(t, r->st_bid);
    uint32_t gen = r->gen + 1;
    memset(r, 0, sizeof(*r));
    r->gen = gen;
    return REAL(close)(fd);
}
