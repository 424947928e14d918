/*
 * libFuzzer driver: the HTTP/2 frame guard (src/h2/guard.c).
 *
 * Input: byte 0 chooses the read sizes (a small PRNG seed) and whether the connection
 * preface is prepended; byte 1 sets tight limits or SPEC's; the rest is what a client sends.
 * The driver plays libh2o as attach.c drives it: it keeps the unconsumed input, gives the
 * guard each read, then consumes the preface and the whole frames inside what was released.
 * Checked: release never passes the input, the guard's position stays inside it, a held
 * block is never handed over, and the dynamic table's accounting stays within its bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "h2/guard.h"

#define MAX_INPUT (1 << 20)

static void check(int cond)
{
    if (!cond)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if (size < 2 || size > MAX_INPUT)
        return 0;
    uint32_t rng = data[0] | 1u;
    int with_preface = data[0] & 1;
    est_h2_limits_t lim;
    est_h2_limits_default(&lim);
    if (data[1] & 1) {
        lim.max_resets = 3;
        lim.max_control = 5;
        lim.max_block_wire = 200;
        lim.max_fields = 4;
        lim.max_decoded = 300;
        lim.header_table_size = 256;
        lim.max_body = 100;
    } else {
        lim.max_body = 1 << 20;
    }
    lim.header_timeout_ms = 50;
    lim.idle_timeout_ms = 100;
    data += 2;
    size -= 2;

    size_t total = size + (with_preface ? 24 : 0);
    uint8_t *src = malloc(total ? total : 1), *in = malloc(total ? total : 1);
    if (with_preface)
        memcpy(src, PREFACE, 24);
    memcpy(src + (with_preface ? 24 : 0), data, size);

    est_h2_guard_t *g = malloc(sizeof(*g));
    est_h2_guard_init(g, &lim, 0);
    size_t off = 0, len = 0;
    int preface_done = 0;
    uint64_t now = 0;
    est_h2_refusal_t r;
    while (off < total) {
        rng = rng * 1103515245u + 12345u;
        size_t n = 1 + ((rng >> 16) % 64);
        if (n > total - off)
            n = total - off;
        memcpy(in + len, src + off, n);
        len += n;
        off += n;
        now += (rng >> 8) & 7;
        size_t rel = SIZE_MAX;
        if (est_h2_guard_feed(g, in, len, now, &rel, &r) != 0) {
            check(r.debug != NULL);
            break;
        }
        check(rel <= len);
        check(g->pos <= len);
        check(!g->blk_open || g->blk_off <= rel);
        check(g->ring_count <= EST_H2_HPACK_MAX_ENTRIES && g->table_size <= g->table_capacity);
        check(g->num_bodies <= EST_H2_MAX_BODY_STREAMS);
        /* libh2o consumes the preface and whole frames only */
        size_t c = 0;
        if (!preface_done && rel >= 24) {
            c = 24;
            preface_done = 1;
        }
        while (preface_done && rel - c >= 9) {
            size_t flen = ((size_t)in[c] << 16) | ((size_t)in[c + 1] << 8) | in[c + 2];
            if (rel - c < 9 + flen)
                break;
            c += 9 + flen;
        }
        memmove(in, in + c, len - c);
        len -= c;
        est_h2_guard_consumed(g, c);
        if ((rng & 0xf0) == 0 && est_h2_guard_tick(g, now, rng & 1, &r) != 0)
            break;
    }
    free(g);
    free(in);
    free(src);
    return 0;
}
