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
 * by wrapping the write callback (evloop reads sock->_cb.write when it notifies). On TLS the
 * GOAWAY goes through the socket's record layer with h2o_socket_write, in libh2o's write gap
 * (kick()); so do the RST_STREAMs of client_body_timeout on any connection. A connection
 * libh2o has not closed FORCE_CLOSE_MS after the refusal (a client that does not read, so
 * libh2o's write never completes) is shut down, which fails that write.
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
    /* frames for the client written in libh2o's write gap (see kick()): RST_STREAMs of
     * stalled bodies, and the GOAWAY on TLS; room for one per tracked body and a GOAWAY */
    uint8_t out[EST_H2_MAX_BODY_STREAMS * 13 + 9 + 8 + 64];
    size_t out_len;
    uint8_t out_flight[EST_H2_MAX_BODY_STREAMS * 13 + 9 + 8 + 64];
    h2o_socket_cb gap_cb; /* libh2o's write callback, run once our gap write is done */
    uint64_t h2o_consumed; /* bytes libh2o consumed: the preface is its first 24 */
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
    l->body_timeout_ms = conf->client_body_timeout_ms;
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

/*
 * Frames into libh2o: `frames` (whole frames) are handed to libh2o's parser as if the client had
 * sent them, in a buffer of their own (the client's unconsumed bytes wait aside). Used for
 * RST_STREAM (a stalled body: libh2o disposes the stream) and PING (libh2o answers, so it
 * writes, see kick()). -1: `c` is gone.
 */
static int inject(est_h2_conn_t *c, const uint8_t *frames, size_t len)
{
    h2o_socket_t *sock = c->sock;
    h2o_buffer_t *saved = sock->input;
    h2o_buffer_init(&sock->input, &h2o_socket_buffer_prototype);
    h2o_iovec_t room = h2o_buffer_reserve(&sock->input, len);
    memcpy(room.base, frames, len);
    sock->input->size = len;
    if (call_h2o(c, NULL) != 0) {
        h2o_buffer_dispose(&saved);
        return -1;
    }
    h2o_buffer_dispose(&sock->input); /* what libh2o did not take (it stopped reading) is dropped */
    sock->input = saved;
    return 0;
}

static void on_gap_written(h2o_socket_t *sock, const char *err);

/*
 * Wraps libh2o's write callback: its write is complete, so frames of ours cannot split one of
 * its frames. The plaintext GOAWAY goes with send(); the queued frames (c->out) with
 * h2o_socket_write (the TLS record layer is the socket's), and libh2o's callback runs when
 * that write is done: until then libh2o still sees its own write in flight and writes nothing.
 */
static void on_h2o_write_done(h2o_socket_t *sock, const char *err)
{
    est_h2_conn_t *c = conn_of(sock);
    h2o_socket_cb cb = c->h2o_on_write;
    c->h2o_on_write = NULL;
    if (err == NULL && c->goaway_len != 0)
        send_goaway(c);
    if (err == NULL && c->out_len != 0) {
        memcpy(c->out_flight, c->out, c->out_len);
        h2o_iovec_t buf = h2o_iovec_init(c->out_flight, c->out_len);
        c->out_len = 0;
        c->gap_cb = cb;
        h2o_socket_write(sock, &buf, 1, on_gap_written);
        return;
    }
    cb(sock, err);
}

static void kick(est_h2_conn_t *c);

static void on_gap_written(h2o_socket_t *sock, const char *err)
{
    est_h2_conn_t *c = conn_of(sock);
    h2o_socket_cb cb = c->gap_cb;
    c->gap_cb = NULL;
    if (err == NULL && c->goaway_len != 0)
        send_goaway(c);
    c->in_call = 1;
    cb(sock, err); /* libh2o's: it may write again, or close */
    c->in_call = 0;
    if (c->dead) {
        conn_free(c);
        return;
    }
    if (c->out_len != 0 && c->sock != NULL)
        kick(c);
}

/* takes libh2o's write in flight, if there is one, to write our frames after it */
static int wrap_write(est_h2_conn_t *c)
{
    h2o_socket_t *sock = c->sock;
    if (sock->_cb.write == on_h2o_write_done || c->gap_cb != NULL)
        return 1; /* already waiting, or our own write is in flight (on_gap_written goes on) */
    if (!h2o_socket_is_writing(sock))
        return 0;
    c->h2o_on_write = sock->_cb.write;
    sock->_cb.write = on_h2o_write_done;
    return 1;
}

/*
 * Sends c->out after libh2o's write in flight. When libh2o is not writing, a PING is injected:
 * libh2o answers it (a PING ACK the client ignores) and, since its on_read writes what it has
 * at once, its write is in flight when the call returns, and ours follows it.
 */
static void kick(est_h2_conn_t *c)
{
    if (c->out_len == 0 || c->sock == NULL || wrap_write(c))
        return;
    if (c->torn_down || c->guard.preface_left != 0)
        return; /* libh2o cannot answer: the 1 s tick tries again while the connection lingers */
    /* a refusal in the first read: libh2o has not had the (valid) preface yet, so it gets it
     * first and answers with its SETTINGS too */
    static const char PREFACE[EST_H2_PREFACE_LEN] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    uint8_t frames[EST_H2_PREFACE_LEN + 9 + 8];
    size_t len = 0;
    if (c->h2o_consumed < EST_H2_PREFACE_LEN) {
        memcpy(frames, PREFACE, EST_H2_PREFACE_LEN);
        len = EST_H2_PREFACE_LEN;
    }
    len += est_h2_encode_ping(frames + len, sizeof(frames) - len);
    if (inject(c, frames, len) != 0)
        return;
    if (c->h2o_consumed < EST_H2_PREFACE_LEN)
        c->h2o_consumed = EST_H2_PREFACE_LEN;
    wrap_write(c);
}

static void queue_out(est_h2_conn_t *c, const uint8_t *frames, size_t len)
{
    if (len <= sizeof(c->out) - c->out_len) { /* it always fits: one RST per tracked body, one GOAWAY */
        memcpy(c->out + c->out_len, frames, len);
        c->out_len += len;
    }
}

/* the timed limits that apply now: the idle timeout, or a header block's */
static int needs_tick(est_h2_conn_t *c)
{
    return c->guard.lim.idle_timeout_ms != 0 || (c->guard.lim.header_timeout_ms != 0 && est_h2_guard_in_block(&c->guard)) ||
           (c->guard.lim.body_timeout_ms != 0 && est_h2_guard_has_bodies(&c->guard)) || c->out_len != 0;
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
    uint8_t goaway[sizeof(c->goaway)];
    size_t goaway_len = est_h2_encode_goaway(goaway, sizeof(goaway), est_h2_guard_last_stream(&c->guard), r->error_code, r->debug);
    link_tick(c);
    if (sock->ssl != NULL) {
        /* TLS: the GOAWAY goes through the socket's record layer, in libh2o's write gap */
        queue_out(c, goaway, goaway_len);
        kick(c); /* `c` may be gone now; nothing follows */
        return 0;
    }
    memcpy(c->goaway, goaway, goaway_len);
    c->goaway_len = goaway_len;
    if (!h2o_socket_is_writing(sock) && c->gap_cb == NULL)
        send_goaway(c);
    else
        wrap_write(c); /* or our own gap write is in flight: on_gap_written sends it */
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
        } else if (now - c->refused_at >= FORCE_CLOSE_MS && c->sock != NULL) {
            /* the peer does not read: the write libh2o waits for fails now, and it closes */
            int fd = h2o_socket_get_fd(c->sock);
            if (fd >= 0)
                shutdown(fd, SHUT_RDWR);
        }
        link_tick(c);
        if (!c->torn_down && c->out_len != 0)
            kick(c); /* TLS: the GOAWAY still waits for libh2o's write; `c` may be gone now */
        return;
    }
    est_h2_refusal_t r;
    size_t open = c->open_requests != NULL ? *c->open_requests : 0;
    if (est_h2_guard_tick(&c->guard, now, open, &r) != 0) {
        refuse(c, &r);
        return;
    }
    /* client_body_timeout: each stalled stream is reset, in libh2o (a client RST_STREAM
     * disposes the stream and its request) and towards the client (RST_STREAM CANCEL) */
    uint32_t ids[EST_H2_MAX_BODY_STREAMS];
    size_t n = est_h2_guard_stalled(&c->guard, now, ids, EST_H2_MAX_BODY_STREAMS);
    if (n != 0) {
        uint8_t rst[EST_H2_MAX_BODY_STREAMS * 13];
        size_t len = 0;
        for (size_t i = 0; i != n; ++i)
            len += est_h2_encode_rst_stream(rst + len, sizeof(rst) - len, ids[i], EST_H2_CANCEL);
        c->counters->closed[EST_CLOSE_BODY_TIMEOUT] += n;
        queue_out(c, rst, len);
        if (inject(c, rst, len) != 0)
            return;
    }
    if (needs_tick(c))
        link_tick(c); /* before kick(), after which `c` may be gone */
    kick(c);
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
        if (call_h2o(c, NULL) == 0) {
            est_h2_guard_consumed(&c->guard, len - sock->input->size);
            c->h2o_consumed += len - sock->input->size;
        }
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
    c->h2o_consumed += release - sock->input->size;
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
    /* libh2o refuses (REFUSED_STREAM) a stream whose buffered body passes this: the guard
     * forgets it then, instead of keeping it in its body table */
    if (lim.max_stream_body == 0 && actx->ctx->globalconf->max_request_entity_size != SIZE_MAX)
        lim.max_stream_body = actx->ctx->globalconf->max_request_entity_size;
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
