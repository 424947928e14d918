/*
 * estuary - RESP2 reply parser. See redis_resp.h.
 */
#include "policy/redis_resp.h"

#include <string.h>

/* Parses a RESP integer line body: an optional '-' then 1..19 digits, within int64_t. */
static int parse_int(const char *s, size_t len, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    uint64_t v = 0, max;
    if (len != 0 && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i == len)
        return -1;
    max = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i != len; ++i) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9)
            return -1;
        if (v > (max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (neg)
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    else
        *out = (int64_t)v;
    return 0;
}

est_resp_status_t est_resp_parse(const char *buf, size_t len, est_resp_reply_t *out, size_t *consumed)
{
    /* only the first EST_RESP_MAX_REPLY bytes may belong to the reply: needing a byte past
     * them is a refusal, needing one past `len` (when len is below the limit) asks for more */
    const size_t avail = len < EST_RESP_MAX_REPLY ? len : EST_RESP_MAX_REPLY;
    const est_resp_status_t short_input = len < EST_RESP_MAX_REPLY ? EST_RESP_PARTIAL : EST_RESP_INVALID;
    int64_t left[EST_RESP_MAX_DEPTH]; /* elements still to come in each open array */
    size_t depth = 0, pos = 0;

    out->num_nodes = 0;
    for (;;) {
        if (out->num_nodes == EST_RESP_MAX_NODES)
            return EST_RESP_INVALID;
        if (pos == avail)
            return short_input;

        /* the line: type byte, body, CRLF (a CR or LF inside a line is refused) */
        char type = buf[pos];
        size_t body = pos + 1, eol = body;
        while (1) {
            if (eol == avail)
                return short_input;
            if (buf[eol] == '\n')
                return EST_RESP_INVALID;
            if (buf[eol] == '\r')
                break;
            ++eol;
        }
        if (eol + 1 == avail)
            return short_input;
        if (buf[eol + 1] != '\n')
            return EST_RESP_INVALID;
        size_t next = eol + 2;

        est_resp_node_t *n = &out->nodes[out->num_nodes];
        n->integer = 0;
        n->str = NULL;
        n->len = 0;
        int64_t v;
        switch (type) {
        case '+':
        case '-':
            n->type = type == '+' ? EST_RESP_SIMPLE : EST_RESP_ERROR;
            n->str = buf + body;
            n->len = eol - body;
            break;
        case ':':
            if (parse_int(buf + body, eol - body, &v) != 0)
                return EST_RESP_INVALID;
            n->type = EST_RESP_INTEGER;
            n->integer = v;
            break;
        case '$':
            if (parse_int(buf + body, eol - body, &v) != 0 || v < -1)
                return EST_RESP_INVALID;
            if (v == -1) {
                n->type = EST_RESP_NIL;
                break;
            }
            /* known to be too long before its bytes arrive */
            if ((uint64_t)v > EST_RESP_MAX_REPLY || next + (size_t)v + 2 > EST_RESP_MAX_REPLY)
                return EST_RESP_INVALID;
            if (next + (size_t)v + 2 > avail)
                return short_input;
            if (buf[next + (size_t)v] != '\r' || buf[next + (size_t)v + 1] != '\n')
                return EST_RESP_INVALID;
            n->type = EST_RESP_BULK;
            n->str = buf + next;
            n->len = (size_t)v;
            next += (size_t)v + 2;
            break;
        case '*':
            if (parse_int(buf + body, eol - body, &v) != 0 || v < -1)
                return EST_RESP_INVALID;
            if (v == -1) {
                n->type = EST_RESP_NIL_ARRAY;
                break;
            }
            n->type = EST_RESP_ARRAY;
            n->integer = v;
            if (v == 0)
                break;
            /* each element is at least one more node */
            if (depth == EST_RESP_MAX_DEPTH || (uint64_t)v > EST_RESP_MAX_NODES - out->num_nodes - 1)
                return EST_RESP_INVALID;
            left[depth++] = v;
            ++out->num_nodes;
            pos = next;
            continue; /* its elements follow */
        default:
            return EST_RESP_INVALID; /* RESP3, inline or garbage */
        }
        ++out->num_nodes;
        pos = next;

        /* a value is complete: so is every array whose last element it was */
        while (depth != 0 && --left[depth - 1] == 0)
            --depth;
        if (depth == 0) {
            *consumed = pos;
            return EST_RESP_OK;
        }
    }
}

int est_resp_error_is(const est_resp_node_t *n, const char *code)
{
    size_t clen = strlen(code);
    return n->type == EST_RESP_ERROR && n->len >= clen && memcmp(n->str, code, clen) == 0 &&
           (n->len == clen || n->str[clen] == ' ');
}
