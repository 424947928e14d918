/*
 * estuary - libFuzzer driver for the upstream HTTP/1.1 wire code (src/upstream/h1wire.c):
 * response heads (interim heads skipped), then the body framing, as a backend's bytes.
 *
 * Input: one control byte, then the bytes of the reply. Control bit 0: the request was HEAD;
 * bits 1-7: the reply is read in pieces of (bits 1-7) * 7 + 1 bytes, as socket reads. The
 * reply is read as client.c does: parse the head (skipping 1xx), check the body bytes that
 * came with it, decode the body in place, then an EOF.
 *
 * Checks: no crash, no over-read (each piece is copied into a buffer of exactly the bytes
 * read so far), and the invariants: a head length within the input and within
 * EST_H1_MAX_HEAD_SIZE, decoded <= used <= input, a check-only read that agrees with the
 * real one on errors, EST_H1_BODY_NONE when the request was HEAD. Differential: a head our
 * parser accepts is accepted by picohttpparser (libh2o's, which is laxer) with the same
 * length, status and fields (values compared without trailing whitespace, which both trim).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "upstream/h1wire.h"

/* picohttpparser must see the head we accepted the same way */
static void check_same_as_phr(const char *buf, size_t len, int r, const est_h1_response_t *resp,
                              const struct phr_header *ours)
{
    struct phr_header theirs[EST_H1_MAX_HEADERS];
    size_t n = EST_H1_MAX_HEADERS;
    int minor = 0, status = 0;
    const char *msg = NULL;
    size_t msg_len = 0;
    if (phr_parse_response(buf, len, &minor, &status, &msg, &msg_len, theirs, &n, 0) != r)
        abort();
    if (status != resp->status || minor != resp->minor_version || n != resp->num_headers)
        abort();
    for (size_t i = 0; i != n; ++i) {
        size_t vl = theirs[i].value_len;
        while (vl != 0 && (theirs[i].value[vl - 1] == ' ' || theirs[i].value[vl - 1] == '\t'))
            --vl;
        if (theirs[i].name_len != ours[i].name_len || memcmp(theirs[i].name, ours[i].name, ours[i].name_len) != 0 ||
            vl != ours[i].value_len || memcmp(theirs[i].value, ours[i].value, vl) != 0)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int is_head = data[0] & 1;
    size_t step = (size_t)(data[0] >> 1) * 7 + 1;
    const char *raw = (const char *)data + 1;
    size_t len = size - 1, fed = 0, in_len = 0;
    char *in = malloc(len ? len : 1);
    if (in == NULL)
        return 0;
    int in_body = 0;
    est_h1_body_t body;
    struct phr_header headers[EST_H1_MAX_HEADERS];
    while (fed < len) {
        size_t n = len - fed < step ? len - fed : step;
        memcpy(in + in_len, raw + fed, n);
        in_len += n;
        fed += n;
        /* an exact-size copy, so that reading past the bytes read so far is caught */
        char *view = malloc(in_len ? in_len : 1);
        if (view == NULL)
            break;
        memcpy(view, in, in_len);
        const char *err = NULL;
        int stop = 0;
        while (!in_body) {
            est_h1_response_t resp;
            int r = est_h1_parse_response(view, in_len, is_head, headers, EST_H1_MAX_HEADERS, &resp, &err);
            if (r == -1) {
                if (err == NULL)
                    abort();
                stop = 1;
                break;
            }
            if (r == -2)
                break;
            if (r <= 0 || (size_t)r > in_len || r > EST_H1_MAX_HEAD_SIZE || resp.num_headers > EST_H1_MAX_HEADERS)
                abort();
            if (is_head && !resp.interim && resp.body_mode != EST_H1_BODY_NONE)
                abort();
            check_same_as_phr(view, in_len, r, &resp, headers);
            memmove(view, view + r, in_len - r);
            memmove(in, in + r, in_len - r);
            in_len -= (size_t)r;
            if (resp.interim)
                continue;
            est_h1_body_init(&body, &resp);
            in_body = 1;
        }
        if (!stop && in_body) {
            size_t d1 = 0, u1 = 0, d2 = 0, u2 = 0;
            est_h1_body_status_t s1 = est_h1_body_read(&body, view, in_len, 1, &d1, &u1, &err);
            est_h1_body_status_t s2 = est_h1_body_read(&body, view, in_len, 0, &d2, &u2, &err);
            if (s1 != s2 || (s2 != EST_H1_BODY_ERROR && (d1 != d2 || u1 != u2)))
                abort();
            if (s2 == EST_H1_BODY_ERROR) {
                if (err == NULL)
                    abort();
                stop = 1;
            } else {
                if (u2 > in_len || d2 > u2)
                    abort();
                if (s2 == EST_H1_BODY_DONE) {
                    stop = 1;
                } else {
                    if (u2 != in_len)
                        abort();
                    in_len = 0;
                }
            }
        }
        free(view);
        if (stop)
            break;
    }
    if (in_body)
        (void)est_h1_body_eof_ok(&body);
    free(in);
    return 0;
}
