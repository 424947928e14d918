/*
 * estuary - a small Redis client (RESP2) on h2o sockets for "store": "redis" rate limits.
 * See redis.h and docs/redis.md.
 *
 * One connection per client; calls are pipelined on it and answered in order (Redis answers
 * the commands of one connection in the order it received them). Each call sits in `fifo`
 * from the moment its command is buffered until its reply is read or the connection is lost,
 * even after its deadline passed or its requester cancelled (cb == NULL): the slot is kept so
 * that the late reply is matched to it and dropped, never to the next call.
 *
 * Connection states: IDLE (no socket; the next call connects), RESOLVING, CONNECTING,
 * CONNECTED, BACKOFF (lost or refused: calls fail fast until the backoff ends, then IDLE).
 * Every failure goes through conn_fail(), which never calls a requester back itself: the calls
 * it ends are moved to `failq` and answered from a 0 ms timer, so no callback runs inside
 * est_redis_gcra() or under a socket callback that is still using the client.
 */
#include "policy/redis.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "admin/metrics.h"
#include "common/log.h"
#include "common/sockaddr.h"
#include "policy/gate.h"
#include "policy/redis_resp.h"
#include "upstream/dns.h"

#define MAX_CALLS 4096                   /* calls held by a client (sent, waiting or failing) */
#define MAX_OUTPUT (1u << 20)            /* bytes of commands buffered before they are written */
#define MAX_KEY_VERBATIM 1024            /* longer keys are sent as their SHA-256 */
#define TIMEOUTS_BEFORE_RECONNECT 3      /* deadlines missed in a row before the connection is dropped */
#define BACKOFF_TICK_MS 100              /* reconnect backoff: 100 ms, doubling ... */
#define BACKOFF_MAX_TICKS 20             /* ... up to 2 s */
#define LOG_INTERVAL_MS 10000            /* at most one warning per client per 10 s */
#define KEY_PREFIX "estuary:rl:"         /* + the key's bytes */
#define KEY_PREFIX_HASHED "estuary:rlh:" /* + hex SHA-256 of a key over MAX_KEY_VERBATIM bytes */

/*
 * The GCRA step of gcra.h, run atomically by Redis. KEYS[1]: the bucket; ARGV[1]: the
 * emission interval T (us); ARGV[2]: burst. The clock is the server's (TIME), so replicas
 * with skewed clocks share one timeline; Redis 7 replicates a script's effects, not the
 * script, so TIME is allowed before a write. The TAT is stored as integer microseconds
 * ('%.0f': Lua 5.1's tostring would round it to 14 digits) and expires once the bucket is
 * full again (PX), so idle keys vanish. Returns {allowed, remaining, retry_after_us,
 * reset_us}. Lua numbers are doubles: exact for microsecond timestamps (< 2^53).
 */
static const char gcra_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local T = tonumber(ARGV[1])\n"
    "local tau = tonumber(ARGV[2]) * T\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0\n"
    "if tat < now then tat = now end\n"
    "if tat - tau > now then\n"
    "  return {0, 0, tat - tau - now, tat - now}\n"
    "end\n"
    "tat = tat + T\n"
    "redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)\n"
    "return {1, math.floor((now + tau - tat) / T) + 1, 0, tat - now}\n";

typedef enum { ST_IDLE = 0, ST_RESOLVING, ST_CONNECTING, ST_CONNECTED, ST_BACKOFF, ST_DESTROYED } conn_state_t;

struct est_redis_call {
    est_redis_client_t *c;
    h2o_linklist_t link;       /* in c->fifo or c->failq */
    h2o_timeout_entry_t timer; /* the deadline; linked while the call is in fifo until it passes */
    est_redis_gcra_cb cb;      /* NULL once answered or cancelled */
    void *data;
    int retried; /* sent again as EVAL after a NOSCRIPT reply */
    est_gcra_params_t params;
    size_t key_len;
    char key[]; /* the Redis key, prefix included */
};

struct est_redis_client {
    est_policy_view_t *pv;
    h2o_loop_t *loop;
    const est_redis_conf_t *conf; /* borrowed from the generation's config, which outlives the view */
    conn_state_t state;
    h2o_socket_t *sock;
    est_dns_query_t *dnsq;
    h2o_linklist_t fifo;  /* calls whose command is on (or buffered for) the connection, in order */
    h2o_linklist_t failq; /* calls to answer ok=0 from the loop */
    size_t num_calls;     /* in fifo + failq */
    /* commands: `out` collects them while `wbuf` (wbuf_len bytes) is being written */
    char *out, *wbuf;
    size_t out_len, out_cap, wbuf_cap;
    int writing;
    h2o_timeout_t call_timeout; /* conf->timeout_ms */
    h2o_timeout_t zero_timeout; /* 0 ms: answers failq */
    h2o_timeout_entry_t failq_entry;
    h2o_timeout_t tick_timeout; /* BACKOFF_TICK_MS: counts the backoff down */
    h2o_timeout_entry_t backoff_entry;
    unsigned backoff_ticks, backoff_left;
    unsigned timeouts_in_row;
    int answered; /* the current connection has given a valid reply: the backoff starts over */
    uint64_t last_log_at;
    int logged;
    char sha[41]; /* hex SHA-1 of gcra_script */
};

static void start_connect(est_redis_client_t *c);
static void conn_fail(est_redis_client_t *c, const char *why);
static void flush(est_redis_client_t *c);
static void on_dns(void *data, est_dns_status_t status, est_dns_result_t *result);
static void on_connect(h2o_socket_t *sock, const char *err);
static void on_read(h2o_socket_t *sock, const char *err);
static void on_write(h2o_socket_t *sock, const char *err);
static void on_call_timeout(h2o_timeout_entry_t *entry);
static void on_failq(h2o_timeout_entry_t *entry);
static void on_backoff_tick(h2o_timeout_entry_t *entry);

/* a warning, at most one per LOG_INTERVAL_MS per client (an outage must not flood the log) */
static void log_problem(est_redis_client_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_problem(est_redis_client_t *c, const char *fmt, ...)
{
    uint64_t now = h2o_now(c->loop);
    if (c->logged && now - c->last_log_at < LOG_INTERVAL_MS)
        return;
    c->logged = 1;
    c->last_log_at = now;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    est_log_warn("redis %s:%u: %s", c->conf->host, (unsigned)c->conf->port, msg);
}

static void hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i != n; ++i) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

est_redis_client_t *est_redis_client_create(struct est_policy_view *pv, const est_redis_conf_t *conf)
{
    est_redis_client_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->pv = pv;
    c->loop = pv->loop;
    c->conf = conf;
    h2o_linklist_init_anchor(&c->fifo);
    h2o_linklist_init_anchor(&c->failq);
    h2o_timeout_init(c->loop, &c->call_timeout, conf->timeout_ms != 0 ? conf->timeout_ms : 1);
    h2o_timeout_init(c->loop, &c->zero_timeout, 0);
    h2o_timeout_init(c->loop, &c->tick_timeout, BACKOFF_TICK_MS);
    c->failq_entry.cb = on_failq;
    c->backoff_entry.cb = on_backoff_tick;
    unsigned char md[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)gcra_script, sizeof(gcra_script) - 1, md);
    hex(md, sizeof(md), c->sha);
    return c;
}

static void free_call(est_redis_call_t *call)
{
    if (h2o_timeout_is_linked(&call->timer))
        h2o_timeout_unlink(&call->timer);
    h2o_linklist_unlink(&call->link);
    --call->c->num_calls;
    free(call);
}

/* Pops the head of `list`, frees it and answers it ok=0 when it still has a requester. */
static void fail_head(est_redis_client_t *c, h2o_linklist_t *list)
{
    est_redis_call_t *call = H2O_STRUCT_FROM_MEMBER(est_redis_call_t, link, list->next);
    est_redis_gcra_cb cb = call->cb;
    void *data = call->data;
    free_call(call);
    if (cb != NULL) {
        est_gate_count_redis(c->pv, EST_REDIS_RESULT_ERROR);
        cb(data, 0, NULL);
    }
}

void est_redis_client_destroy(est_redis_client_t *c)
{
    if (c == NULL)
        return;
    c->state = ST_DESTROYED; /* a callback below cannot queue a new call */
    if (c->dnsq != NULL)
        est_dns_cancel(c->dnsq);
    c->dnsq = NULL;
    if (c->sock != NULL) {
        c->sock->data = NULL;
        h2o_socket_close(c->sock);
        c->sock = NULL;
    }
    while (!h2o_linklist_is_empty(&c->fifo))
        fail_head(c, &c->fifo);
    while (!h2o_linklist_is_empty(&c->failq))
        fail_head(c, &c->failq);
    if (h2o_timeout_is_linked(&c->failq_entry))
        h2o_timeout_unlink(&c->failq_entry);
    if (h2o_timeout_is_linked(&c->backoff_entry))
        h2o_timeout_unlink(&c->backoff_entry);
    h2o_timeout_dispose(c->loop, &c->call_timeout);
    h2o_timeout_dispose(c->loop, &c->zero_timeout);
    h2o_timeout_dispose(c->loop, &c->tick_timeout);
    free(c->out);
    free(c->wbuf);
    free(c);
}

/* --- commands ------------------------------------------------------------------------- */

static size_t bulk_size(size_t n)
{
    char tmp[32];
    return (size_t)snprintf(tmp, sizeof(tmp), "$%zu\r\n", n) + n + 2;
}

static char *put_bulk(char *p, const char *s, size_t n)
{
    p += sprintf(p, "$%zu\r\n", n);
    memcpy(p, s, n);
    p += n;
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

/* Appends the call's command (EVALSHA, or EVAL with the script) to `out`: 0, or -1 when the
 * output is full (nothing appended). RESP bulk strings carry the key's bytes as they are. */
static int encode_call(est_redis_client_t *c, const est_redis_call_t *call, int eval)
{
    char interval[24], burst[24];
    int ni = snprintf(interval, sizeof(interval), "%llu", (unsigned long long)call->params.interval_us);
    int nb = snprintf(burst, sizeof(burst), "%llu", (unsigned long long)call->params.burst);
    const char *cmd = eval ? "EVAL" : "EVALSHA";
    const char *body = eval ? gcra_script : c->sha;
    size_t body_len = eval ? sizeof(gcra_script) - 1 : 40;
    size_t need = 4 + bulk_size(strlen(cmd)) + bulk_size(body_len) + bulk_size(1) + bulk_size(call->key_len) +
                  bulk_size((size_t)ni) + bulk_size((size_t)nb) + 1 /* sprintf's NUL */;
    if (c->out_len + need > MAX_OUTPUT)
        return -1;
    if (c->out_len + need > c->out_cap) {
        size_t cap = c->out_cap != 0 ? c->out_cap : 4096;
        while (cap < c->out_len + need)
            cap *= 2;
        char *p = realloc(c->out, cap);
        if (p == NULL)
            return -1;
        c->out = p;
        c->out_cap = cap;
    }
    char *p = c->out + c->out_len;
    memcpy(p, "*6\r\n", 4);
    p += 4;
    p = put_bulk(p, cmd, strlen(cmd));
    p = put_bulk(p, body, body_len);
    p = put_bulk(p, "1", 1);
    p = put_bulk(p, call->key, call->key_len);
    p = put_bulk(p, interval, (size_t)ni);
    p = put_bulk(p, burst, (size_t)nb);
    c->out_len = (size_t)(p - c->out);
    return 0;
}

/* Starts writing `out` unless a write is in flight (on_write comes back for the rest). */
static void flush(est_redis_client_t *c)
{
    if (c->state != ST_CONNECTED || c->writing || c->out_len == 0)
        return;
    char *tmp = c->wbuf;
    size_t tmp_cap = c->wbuf_cap;
    c->wbuf = c->out;
    c->wbuf_cap = c->out_cap;
    c->out = tmp;
    c->out_cap = tmp_cap;
    h2o_iovec_t buf = h2o_iovec_init(c->wbuf, c->out_len);
    c->out_len = 0;
    c->writing = 1;
    h2o_socket_write(c->sock, &buf, 1, on_write);
}

static void on_write(h2o_socket_t *sock, const char *err)
{
    est_redis_client_t *c = sock->data;
    if (c == NULL)
        return;
    c->writing = 0;
    if (err != NULL) {
        conn_fail(c, err);
        return;
    }
    flush(c);
}

/* --- connection ----------------------------------------------------------------------- */

static void do_connect(est_redis_client_t *c, const struct sockaddr_storage *addr, socklen_t len)
{
    struct sockaddr_storage sa = *addr;
    est_sockaddr_set_port(&sa, c->conf->port);
    c->state = ST_CONNECTING;
    if ((c->sock = h2o_socket_connect(c->loop, (struct sockaddr *)&sa, len, on_connect)) == NULL) {
        conn_fail(c, "connect failed");
        return;
    }
    c->sock->data = c;
}

static void start_connect(est_redis_client_t *c)
{
    struct sockaddr_storage sa;
    socklen_t len;
    c->answered = 0;
    if (est_sockaddr_parse_ip(c->conf->host, &sa, &len) == 0) {
        do_connect(c, &sa, len);
        return;
    }
    if (c->pv->dns == NULL) {
        c->state = ST_RESOLVING;
        conn_fail(c, "no resolver for the name");
        return;
    }
    est_dns_result_t *res = est_dns_lookup_cached(c->pv->dns, c->conf->host);
    if (res != NULL && res->num_addrs != 0) {
        do_connect(c, &res->addrs[0].sa, res->addrs[0].len);
        return;
    }
    c->state = ST_RESOLVING;
    if ((c->dnsq = est_dns_resolve(c->pv->dns, c->conf->host, on_dns, c)) == NULL)
        conn_fail(c, "cannot resolve (out of memory)");
}

static void on_dns(void *data, est_dns_status_t status, est_dns_result_t *result)
{
    est_redis_client_t *c = data;
    c->dnsq = NULL;
    if (status != EST_DNS_OK || result == NULL || result->num_addrs == 0) {
        conn_fail(c, est_dns_strerror(status));
        return;
    }
    do_connect(c, &result->addrs[0].sa, result->addrs[0].len);
}

static void on_connect(h2o_socket_t *sock, const char *err)
{
    est_redis_client_t *c = sock->data;
    if (c == NULL)
        return;
    if (err != NULL) {
        conn_fail(c, err);
        return;
    }
    /* small pipelined commands: do not let Nagle hold one back waiting for an ACK */
    int fd = h2o_socket_get_fd(sock), one = 1;
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->state = ST_CONNECTED;
    h2o_socket_read_start(sock, on_read);
    flush(c);
}

/* Drops the connection (if any): every call on it is failed from the loop, the client backs
 * off before the next attempt. Calls no requester callback itself. */
static void conn_fail(est_redis_client_t *c, const char *why)
{
    if (c->state == ST_DESTROYED || c->state == ST_BACKOFF || c->state == ST_IDLE)
        return;
    log_problem(c, "%s (backing off)", why);
    if (c->dnsq != NULL) {
        est_dns_cancel(c->dnsq);
        c->dnsq = NULL;
    }
    if (c->sock != NULL) {
        c->sock->data = NULL;
        h2o_socket_close(c->sock);
        c->sock = NULL;
    }
    c->out_len = 0;
    c->writing = 0;
    c->timeouts_in_row = 0;
    /* a connection that answered at least once starts the backoff over */
    if (c->answered || c->backoff_ticks == 0)
        c->backoff_ticks = 1;
    else if ((c->backoff_ticks *= 2) > BACKOFF_MAX_TICKS)
        c->backoff_ticks = BACKOFF_MAX_TICKS;
    c->answered = 0;
    c->backoff_left = c->backoff_ticks;
    c->state = ST_BACKOFF;
    h2o_timeout_link(c->loop, &c->tick_timeout, &c->backoff_entry);
    /* the calls in flight: their slots go with the connection */
    while (!h2o_linklist_is_empty(&c->fifo)) {
        est_redis_call_t *call = H2O_STRUCT_FROM_MEMBER(est_redis_call_t, link, c->fifo.next);
        h2o_linklist_unlink(&call->link);
        h2o_linklist_insert(&c->failq, &call->link);
        if (h2o_timeout_is_linked(&call->timer))
            h2o_timeout_unlink(&call->timer);
    }
    if (!h2o_linklist_is_empty(&c->failq) && !h2o_timeout_is_linked(&c->failq_entry))
        h2o_timeout_link(c->loop, &c->zero_timeout, &c->failq_entry);
}

static void on_backoff_tick(h2o_timeout_entry_t *entry)
{
    est_redis_client_t *c = H2O_STRUCT_FROM_MEMBER(est_redis_client_t, backoff_entry, entry);
    if (--c->backoff_left != 0) {
        h2o_timeout_link(c->loop, &c->tick_timeout, &c->backoff_entry);
        return;
    }
    c->state = ST_IDLE; /* the next call connects */
}

static void on_failq(h2o_timeout_entry_t *entry)
{
    est_redis_client_t *c = H2O_STRUCT_FROM_MEMBER(est_redis_client_t, failq_entry, entry);
    /* only the calls there now: a callback that queues a new failing call (at the tail) gets
     * the next run */
    size_t n = 0;
    for (h2o_linklist_t *l = c->failq.next; l != &c->failq; l = l->next)
        ++n;
    while (n-- != 0 && !h2o_linklist_is_empty(&c->failq))
        fail_head(c, &c->failq);
}

static void on_call_timeout(h2o_timeout_entry_t *entry)
{
    est_redis_call_t *call = H2O_STRUCT_FROM_MEMBER(est_redis_call_t, timer, entry);
    est_redis_client_t *c = call->c;
    est_redis_gcra_cb cb = call->cb;
    void *data = call->data;
    call->cb = NULL; /* the slot stays in fifo until its reply (dropped) or the connection goes */
    /* a cancelled call's deadline counts too: a connection that stopped answering is found
     * even when every requester has left */
    if (++c->timeouts_in_row >= TIMEOUTS_BEFORE_RECONNECT)
        conn_fail(c, "calls time out");
    else
        log_problem(c, "no reply within %llu ms", (unsigned long long)c->conf->timeout_ms);
    if (cb != NULL) {
        est_gate_count_redis(c->pv, EST_REDIS_RESULT_TIMEOUT);
        cb(data, 0, NULL);
    }
}

/* --- replies -------------------------------------------------------------------------- */

/* The script's reply {allowed, remaining, retry_after_us, reset_us}: 0, or -1 when it is not that. */
static int read_result(const est_resp_reply_t *r, est_gcra_result_t *res)
{
    const est_resp_node_t *n = r->nodes;
    if (r->num_nodes != 5 || n[0].type != EST_RESP_ARRAY || n[0].integer != 4)
        return -1;
    for (size_t i = 1; i != 5; ++i)
        if (n[i].type != EST_RESP_INTEGER || n[i].integer < 0)
            return -1;
    if (n[1].integer > 1)
        return -1;
    res->allowed = (int)n[1].integer;
    res->remaining = (uint64_t)n[2].integer;
    res->retry_after_us = (uint64_t)n[3].integer;
    res->reset_us = (uint64_t)n[4].integer;
    return 0;
}

/* Handles one reply, matched to the oldest call. 0, or -1 when the connection must go. */
static int on_reply(est_redis_client_t *c, const est_resp_reply_t *r)
{
    if (h2o_linklist_is_empty(&c->fifo)) {
        conn_fail(c, "a reply nobody asked for");
        return -1;
    }
    est_redis_call_t *call = H2O_STRUCT_FROM_MEMBER(est_redis_call_t, link, c->fifo.next);
    c->timeouts_in_row = 0;
    c->answered = 1;
    if (call->cb == NULL) { /* timed out or cancelled: its late reply is dropped */
        free_call(call);
        return 0;
    }
    /* the server lost the cached script (restart, SCRIPT FLUSH): EVAL caches it again. The
     * call moves to the back of the pipeline with its deadline unchanged. */
    if (est_resp_error_is(&r->nodes[0], "NOSCRIPT") && !call->retried) {
        call->retried = 1;
        if (encode_call(c, call, 1) == 0) {
            h2o_linklist_unlink(&call->link);
            h2o_linklist_insert(&c->fifo, &call->link);
            flush(c);
            return 0;
        }
        /* output full: answered below as an error */
    }
    est_gcra_result_t res;
    int ok = read_result(r, &res) == 0;
    if (!ok) {
        if (r->nodes[0].type == EST_RESP_ERROR)
            log_problem(c, "error reply: %.*s", (int)(r->nodes[0].len < 200 ? r->nodes[0].len : 200), r->nodes[0].str);
        else
            log_problem(c, "unexpected reply to the rate-limit script");
    }
    est_redis_gcra_cb cb = call->cb;
    void *data = call->data;
    free_call(call);
    est_gate_count_redis(c->pv, ok ? EST_REDIS_RESULT_OK : EST_REDIS_RESULT_ERROR);
    cb(data, ok, ok ? &res : NULL);
    return 0;
}

static void on_read(h2o_socket_t *sock, const char *err)
{
    est_redis_client_t *c = sock->data;
    if (c == NULL)
        return;
    if (err != NULL) {
        conn_fail(c, err);
        return;
    }
    while (c->sock == sock && sock->input->size != 0) {
        est_resp_reply_t r;
        size_t used;
        est_resp_status_t st = est_resp_parse(sock->input->bytes, sock->input->size, &r, &used);
        if (st == EST_RESP_PARTIAL)
            return;
        if (st == EST_RESP_INVALID) {
            conn_fail(c, "malformed or oversized reply");
            return;
        }
        /* the reply's strings point into the input: consume it only once it is handled,
         * and on_reply's callback may not read from this socket (it only queues writes) */
        int rc = on_reply(c, &r);
        if (rc != 0 || c->sock != sock)
            return;
        h2o_buffer_consume(&sock->input, used);
    }
}

/* --- calls ---------------------------------------------------------------------------- */

est_redis_call_t *est_redis_gcra(est_redis_client_t *c, const char *key, size_t key_len, const est_gcra_params_t *p,
                                 est_redis_gcra_cb cb, void *data)
{
    if (c->state == ST_DESTROYED || c->num_calls >= MAX_CALLS) {
        est_gate_count_redis(c->pv, EST_REDIS_RESULT_ERROR);
        return NULL;
    }
    char hashed[sizeof(KEY_PREFIX_HASHED) + 2 * SHA256_DIGEST_LENGTH];
    const char *prefix = KEY_PREFIX, *body = key;
    size_t body_len = key_len;
    if (key_len > MAX_KEY_VERBATIM) {
        unsigned char md[SHA256_DIGEST_LENGTH];
        SHA256((const unsigned char *)key, key_len, md);
        hex(md, sizeof(md), hashed);
        prefix = KEY_PREFIX_HASHED;
        body = hashed;
        body_len = 2 * SHA256_DIGEST_LENGTH;
    }
    size_t plen = strlen(prefix);
    est_redis_call_t *call = malloc(sizeof(*call) + plen + body_len);
    if (call == NULL) {
        est_gate_count_redis(c->pv, EST_REDIS_RESULT_ERROR);
        return NULL;
    }
    memset(call, 0, sizeof(*call));
    call->c = c;
    call->cb = cb;
    call->data = data;
    call->params = *p;
    if (call->params.interval_us == 0)
        call->params.interval_us = 1;
    memcpy(call->key, prefix, plen);
    memcpy(call->key + plen, body, body_len);
    call->key_len = plen + body_len;
    call->timer.cb = on_call_timeout;

    if (c->state == ST_IDLE)
        start_connect(c); /* may end in BACKOFF at once (connect refused synchronously) */
    if (c->state == ST_BACKOFF) {
        /* fail fast while disconnected, from the loop */
        h2o_linklist_insert(&c->failq, &call->link);
        ++c->num_calls;
        if (!h2o_timeout_is_linked(&c->failq_entry))
            h2o_timeout_link(c->loop, &c->zero_timeout, &c->failq_entry);
        return call;
    }
    if (encode_call(c, call, 0) != 0) {
        free(call);
        est_gate_count_redis(c->pv, EST_REDIS_RESULT_ERROR);
        return NULL;
    }
    h2o_linklist_insert(&c->fifo, &call->link);
    ++c->num_calls;
    h2o_timeout_link(c->loop, &c->call_timeout, &call->timer);
    flush(c);
    return call;
}

void est_redis_call_cancel(est_redis_call_t *call)
{
    if (call == NULL)
        return;
    /* the call stays where it is (its FIFO slot, or failq) and is freed from there; its
     * deadline stays too (see on_call_timeout) */
    call->cb = NULL;
}
