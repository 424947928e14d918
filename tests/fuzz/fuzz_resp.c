/*
 * estuary - libFuzzer driver for the RESP2 reply parser (src/policy/redis_resp.c), which reads
 * whatever a Redis server (or anything listening at its address) sends.
 *
 * Input: a byte stream, parsed as pipelined replies (as the client does) until it ends, is
 * refused, or stops at a partial reply. The checks: no crash, no over-read, and the documented
 * invariants: a parsed reply is 1..EST_RESP_MAX_REPLY bytes, within the input; its nodes are
 * a well-formed pre-order tree within the node and depth limits; every string lies inside the
 * reply; every shorter prefix of a parsed reply is PARTIAL (the client waits, never refuses a
 * valid reply read in pieces); PARTIAL only below the size limit.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "policy/redis_resp.h"

#define CHECK(x)                                                                                                                   \
    do {                                                                                                                           \
        if (!(x))                                                                                                                  \
            abort();                                                                                                               \
    } while (0)

/* the subtree at nodes[i] (depth: arrays above it); returns the index after it */
static size_t walk(const est_resp_reply_t *r, size_t i, size_t depth)
{
    CHECK(i < r->num_nodes);
    const est_resp_node_t *n = &r->nodes[i];
    if (n->type != EST_RESP_ARRAY)
        return i + 1;
    CHECK(n->integer >= 0);
    if (n->integer > 0)
        CHECK(depth < EST_RESP_MAX_DEPTH);
    size_t j = i + 1;
    for (int64_t k = 0; k < n->integer; ++k)
        j = walk(r, j, depth + 1);
    return j;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    size_t off = 0;
    for (unsigned replies = 0; off < size && replies < 1000; ++replies) {
        est_resp_reply_t r;
        size_t used = 0, left = size - off;
        est_resp_status_t st = est_resp_parse(buf + off, left, &r, &used);
        if (st == EST_RESP_INVALID)
            break;
        if (st == EST_RESP_PARTIAL) {
            CHECK(left < EST_RESP_MAX_REPLY);
            break;
        }
        CHECK(st == EST_RESP_OK);
        CHECK(used >= 3 && used <= left && used <= EST_RESP_MAX_REPLY);
        CHECK(r.num_nodes >= 1 && r.num_nodes <= EST_RESP_MAX_NODES);
        CHECK(walk(&r, 0, 0) == r.num_nodes);
        for (size_t i = 0; i < r.num_nodes; ++i) {
            const est_resp_node_t *n = &r.nodes[i];
            CHECK(n->type <= EST_RESP_NIL_ARRAY);
            if (n->type == EST_RESP_SIMPLE || n->type == EST_RESP_ERROR || n->type == EST_RESP_BULK) {
                CHECK(n->str >= buf + off && n->str + n->len <= buf + off + used);
                if (n->type != EST_RESP_BULK)
                    CHECK(memchr(n->str, '\r', n->len) == NULL && memchr(n->str, '\n', n->len) == NULL);
            }
            (void)est_resp_error_is(n, "NOSCRIPT");
        }
        /* the same reply read in pieces: every shorter prefix asks for more */
        est_resp_reply_t tmp;
        size_t u;
        CHECK(est_resp_parse(buf + off, used - 1, &tmp, &u) == EST_RESP_PARTIAL);
        CHECK(est_resp_parse(buf + off, used / 2, &tmp, &u) == EST_RESP_PARTIAL);
        off += used;
    }
    return 0;
}
