/*
 * estuary - the socket glue between libh2o 2.2.5's HTTP/2 server and the frame guard.
 *
 * libh2o's connection arms its read callback once (h2o_http2_accept; h2o_socket_read_stop only
 * on a read error) and parses all of sock->input on each call, consuming whole frames only.
 * We take that callback over: each read first goes through est_h2_guard_feed, then the bytes
 * it releases are handed to libh2o. A held header block (and what follows it) is moved out of
 * sock->input for the duration of libh2o's call and put back after (each block at most once,
 * since the block is at the front of the input afterwards).
 *
 * Refusing: libh2o's connection is not ours to free, so we write the GOAWAY ourselves, stop
 * feeding libh2o (the client's further bytes are read and dropped), and once the client has
 * closed, or after LINGER_MS, call libh2o's read callback with an error, which is how libh2o
 * learns of a dead socket: it stops reading, disposes every stream (cancelling their upstream
 * exchanges) and closes the socket once its own write in flight is done. The GOAWAY is written
 * with send() on the fd when libh2o has no write in flight (libh2o's later frames follow it: a
 * GOAWAY need not be the last frame, RFC 9113 §6.8); otherwise just after that write completes,
 * by wrapping the write callback (evloop reads sock->_cb.write when it notifies). TLS
 * connections get no GOAWAY (the record layer is libh2o's): they are closed at once. A
 * connection libh2o has not closed FORCE_CLOSE_MS after the refusal (a client that does not
 * read, so libh2o's write never completes) is shut down, which fails that write.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "h2/attach.h"
#include <h2o/http2.h>

#define LINGER_MS 1000
#define FORCE_CLOSE_MS 3000

typedef struct est_h2_conn {
    est_h2_guard_t guard;
    h2o_socket_t *sock;
    h2o_loop_t *loop;
    h2o_timeout_t *tick_timeout; /* the context's one_sec_timeout */
    h2o_timeout_entry_t tick;
    h2o_socket_cb h2o_on_read;  /* libh2o's read callback */
    h2o_socket_cb h2o_on_write; /* libh2o's write callback, while we wait for it to send the GOAWAY */
    void (*prev_close)(void *data); /* the caller's sock->on_close.cb */
    void *key;                      /* sock->on_close.data when the caller set one (the map key), else NULL */
    est_conn_counters_t *counters;
    const size_t *open_requests;
    uint64_t refused_at;
    uint8_t goaway[9 + 8 + 64];
    size_t goaway_len;
    unsigned in_call : 1; /* inside a libh2o callback: a close only marks `dead` */
    unsigned dead : 1;    /* the socket closed: free once the call returns */
    unsigned refused : 1;
    unsigned torn_down : 1; /* libh2o was told to close */
} est_h2_conn_t;

static const char ERR_REFUSED[] = "refused by the HTTP/2 guard";

static void on_read(h2o_socket_t *sock, const char *err);

/*
 * The socket's on_close.data belongs to the caller (server code finds its connection record
 * there), and libh2o owns sock->data: our state is found through a per-thread table keyed by
 * the on_close.data pointer, which both the read callback (sock->on_close.data) and the close
 * callback (its argument) see. Open addressing, linear probing, freed when empty.
 */
static __thread struct {
    void **keys;
    est_h2_conn_t **vals;
    size_t cap, n;
} conns;

static size_t slot_of(const void *key, size_t cap)
{
    uint64_t h = (uint64_t)(uintptr_t)key * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 32) & (cap - 1);
}

static void map_put(void *key, est_h2_conn_t *c)
{
    if ((conns.n + 1) * 2 > conns.cap) {
        size_t ocap = conns.cap, ncap = ocap ? ocap * 2 : 64;
        void **ok = conns.keys;
        est_h2_conn_t **ov = conns.vals;
        conns.keys = h2o_mem_alloc(ncap * sizeof(*conns.keys));
        conns.vals = h2o_mem_alloc(ncap * sizeof(*conns.vals));
        memset(conns.keys, 0, ncap * sizeof(*conns.keys));
        conns.cap = ncap;
        for (size_t i = 0; i != ocap; ++i)
            if (ok[i] != NULL) {
                size_t j = slot_of(ok[i], ncap);
                while (conns.keys[j] != NULL)
                    j = (j + 1) & (ncap - 1);
                conns.keys[j] = ok[i];
                conns.vals[j] = ov[i];
            }
        free(ok);
        free(ov);
    }
    size_t j = slot_of(key, conns.cap);
    while (conns.keys[j] != NULL)
        j = (j + 1) & (conns.cap - 1);
    conns.keys[j] = key;
    conns.vals[j] = c;
    ++conns.n;
}

static est_h2_conn_t *map_get(const void *key)
{
    if (conns.cap == 0)
        return NULL;
    for (size_t j = slot_of(key, conns.cap); conns.keys[j] != NULL; j = (j + 1) & (conns.cap - 1))
        if (conns.keys[j] == key)
            return conns.vals[j];
    return NULL;
}

static void map_del(const void *key)
{
    size_t mask = conns.cap - 1, j = slot_of(key, conns.cap);
    while (conns.keys[j] != key) {
        if (conns.keys[j] == NULL)
            return;
        j = (j + 1) & mask;
    }
    /* backward-shift deletion keeps every probe sequence unbroken */
    for (size_t k = (j + 1) & mask; conns.keys[k] != NULL; k = (k + 1) & mask) {
        size_t home = slot_of(conns.keys[k], conns.cap);
        if (((k - home) & mask) >= ((k - j) & mask)) {
            conns.keys[j] = conns.keys[k];
            conns.vals[j] = conns.vals[k];
            j = k;
        }
    }
    conns.keys[j] = NULL;
    if (--conns.n == 0) {
        free(conns.keys);
        free(conns.vals);
        conns.keys = NULL;
        conns.vals = NULL;
        conns.cap = 0;
    }
}

/* our state for `sock` (the key is its on_close.data, or the state itself when we own on_close) */
static est_h2_conn_t *conn_of(h2o_socket_t *sock)
{
    est_h2_conn_t *c = map_get(sock->on_close.data);
    return c != NULL ? c : sock->on_close.data;
}

void est_h2_limits_from_config(est_h2_limits_t *l, const est_config_t *conf)
{
    est_h2_limits_default(l);
    uint64_t body = conf->max_request_body;
    for (size_t i = 0; i != conf->num_routes; ++i)
        if (conf->routes[i].max_request_body > body)
            body = conf->routes[i].max_request_body;
    l->max_body = body;
    l->header_timeout_ms = conf->client_header_timeout_ms;
    l->idle_timeout_ms = conf->client_idle_timeout_ms;
}

static void conn_free(est_h2_conn_t *c)
{
    if (h2o_timeout_is_linked(&c->tick))
        h2o_timeout_unlink(&c->tick);
    free(c);
}

/* sock->on_close: libh2o closed the socket (after its connection was torn down) */
static void on_close(void *data)
{
    est_h2_conn_t *c = map_get(data);
    if (c != NULL)
        map_del(data);
    else
        c = data;
    if (c->prev_close != NULL)
        c->prev_close(c->key);
    c->sock = NULL;
    if (h2o_timeout_is_linked(&c->tick))
        h2o_timeout_unlink(&c->tick);
    if (c->in_call)
        c->dead = 1;
    else
        conn_free(c);
}

/* Calls libh2o's read callback; returns -1 when the connection is gone (and `c` freed) */
static int call_h2o(est_h2_conn_t *c, const char *err)
{
    h2o_socket_t *sock = c->sock;
    c->in_call = 1;
    c->h2o_on_read(sock, err);
    c->in_call = 0;
    if (c->dead) {
        conn_free(c);
        return -1;
    }
    /* libh2o 2.2.5 re-arms reading only in h2o_http2_accept and its Upgrade path; should a
     * later version do it elsewhere, take the callback back rather than lose the guard */
    if (sock->_cb.read != NULL && sock->_cb.read != on_read) {
        c->h2o_on_read = sock->_cb.read;
        sock->_cb.read = on_read;
    }
    return 0;
}

static void send_goaway(est_h2_conn_t *c)
{
    int fd = h2o_socket_get_fd(c->sock);
    if (fd < 0 || c->goaway_len == 0)
        return;
    /* best effort: a client whose receive window is full loses it, and is closed anyway */
    ssize_t r;
    while ((r = send(fd, c->goaway, c->goaway_len, MSG_NOSIGNAL | MSG_DONTWAIT)) == -1 && errno == EINTR)
        ;
    c->goaway_len = 0;
}

/* wraps libh2o's write callback: its write is complete, so the GOAWAY cannot split a frame */
static void on_write_then_goaway(h2o_socket_t *sock, const char *err)
{
    est_h2_conn_t *c = conn_of(sock);
    h2o_socket_cb cb = c->h2o_on_write;
    c->h2o_on_write = NULL;
    if (err == NULL)
        send_goaway(c);
    cb(sock, err);
}

/* the timed limits that apply now: the idle timeout, or a header block's */
static int needs_tick(est_h2_conn_t *c)
{
    return c->guard.lim.idle_timeout_ms != 0 || (c->guard.lim.header_timeout_ms != 0 && est_h2_guard_in_block(&c->guard));
}

static void link_tick(est_h2_conn_t *c)
{
    if (!h2o_timeout_is_linked(&c->tick))
        h2o_timeout_link(c->loop, c->tick_timeout, &c->tick);
}

/* libh2o's own teardown of its connection, through its read-error path. -1: `c` is gone. */
static int teardown(est_h2_conn_t *c, const char *err)
{
    c->torn_down = 1;
    if (call_h2o(c, err != NULL ? err : ERR_REFUSED) != 0)
        return -1;
    link_tick(c); /* libh2o waits for its write in flight: see on_tick */
    return 0;
}

/*
 * Refuses the connection: counted, then the GOAWAY; libh2o gets no more input, and tears the
 * connection down once the client closed (it has read the GOAWAY) or after LINGER_MS. Closing
 * at once, with the client's frames still arriving, would answer them with a TCP RST that can
 * destroy the GOAWAY in the client's receive queue before it is read. -1: `c` is gone.
 */
static int refuse(est_h2_conn_t *c, const est_h2_refusal_t *r)
{
    h2o_socket_t *sock = c->sock;
    if (r->reason >= 0 && r->reason < EST_CLOSE__COUNT)
        ++c->counters->closed[r->reason];
    c->refused = 1;
    c->refused_at = h2o_now(c->loop);
    h2o_buffer_consume(&sock->input, sock->input->size);
    if (sock->ssl != NULL)
        return teardown(c, NULL);
    c->goaway_len = est_h2_encode_goaway(c->goaway, sizeof(c->goaway), est_h2_guard_last_stream(&c->guard), r->error_code, r->debug);
    if (!h2o_socket_is_writing(sock)) {
        send_goaway(c);
    } else {
        c->h2o_on_write = sock->_cb.write;
        sock->_cb.write = on_write_then_goaway;
    }
    link_tick(c);
    return 0;
}

static void on_tick(h2o_timeout_entry_t *entry)
{
    est_h2_conn_t *c = H2O_STRUCT_FROM_MEMBER(est_h2_conn_t, tick, entry);
    uint64_t now = h2o_now(c->loop);
    if (c->refused) {
        if (!c->torn_down) {
            if (now - c->refused_at >= LINGER_MS && teardown(c, NULL) != 0)
                return;
        } else if (now - c->refused_at >= FORCE_CLOSE_MS) {
            /* the peer does not read: the write libh2o waits for fails now, and it closes */
            int fd = h2o_socket_get_fd(c->sock);
            if (fd >= 0)
                shutdown(fd, SHUT_RDWR);
        }
        link_tick(c);
        return;
    }
    est_h2_refusal_t r;
    size_t open = c->open_requests != NULL ? *c->open_requests : 0;
    if (est_h2_guard_tick(&c->guard, now, open, &r) != 0) {
        refuse(c, &r);
        return;
    }
    if (needs_tick(c))
        link_tick(c);
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    est_h2_conn_t *c = conn_of(sock);
    if (c->refused) {
        if (err != NULL) /* the client closed after the GOAWAY: libh2o may close now */
            teardown(c, err);
        else
            h2o_buffer_consume(&sock->input, sock->input->size);
        return;
    }
    if (err != NULL) {
        call_h2o(c, err);
        return;
    }
    size_t len = sock->input->size, release;
    est_h2_refusal_t r;
    if (est_h2_guard_feed(&c->guard, (const uint8_t *)sock->input->bytes, len, h2o_now(c->loop), &release, &r) != 0) {
        refuse(c, &r);
        return;
    }
    if (needs_tick(c))
        link_tick(c);
    if (release == 0)
        return; /* a header block is held at the front: nothing for libh2o yet */
    if (release == len) {
        if (call_h2o(c, NULL) == 0)
            est_h2_guard_consumed(&c->guard, len - sock->input->size);
        return;
    }
    /* hand libh2o the released bytes only: the held block waits outside sock->input */
    size_t held_len = len - release;
    char *held = h2o_mem_alloc(held_len);
    memcpy(held, sock->input->bytes + release, held_len);
    sock->input->size = release;
    if (call_h2o(c, NULL) != 0) {
        free(held);
        return;
    }
    est_h2_guard_consumed(&c->guard, release - sock->input->size);
    h2o_iovec_t room = h2o_buffer_reserve(&sock->input, held_len);
    memcpy(room.base, held, held_len);
    sock->input->size += held_len;
    free(held);
}

void est_h2_accept(h2o_accept_ctx_t *actx, h2o_socket_t *sock, struct timeval connected_at, const est_h2_limits_t *limits,
                   est_conn_counters_t *counters, const size_t *open_requests)
{
    est_h2_conn_t *c = h2o_mem_alloc(sizeof(*c));
    memset(c, 0, sizeof(*c));
    c->sock = sock;
    c->loop = actx->ctx->loop;
    c->tick_timeout = &actx->ctx->one_sec_timeout;
    c->tick.cb = on_tick;
    c->counters = counters;
    c->open_requests = open_requests;
    est_h2_limits_t lim = *limits;
    if (open_requests == NULL)
        lim.idle_timeout_ms = 0;
    est_h2_guard_init(&c->guard, &lim, h2o_now(c->loop));

    /* h2o_http2_accept parses sock->input at once: keep it aside until the guard is in place */
    h2o_buffer_t *pending = sock->input;
    h2o_buffer_init(&sock->input, &h2o_socket_buffer_prototype);
    h2o_http2_accept(actx, sock, connected_at);
    c->h2o_on_read = sock->_cb.read;
    sock->_cb.read = on_read;
    c->prev_close = sock->on_close.cb;
    if (sock->on_close.data != NULL) {
        c->key = sock->on_close.data;
        map_put(c->key, c);
    } else {
        sock->on_close.data = c;
    }
    sock->on_close.cb = on_close;
    h2o_buffer_dispose(&sock->input);
    sock->input = pending;

    if (needs_tick(c))
        link_tick(c);
    if (sock->input->size != 0)
        on_read(sock, NULL);
}
