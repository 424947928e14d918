/*
 * estuary - the chunked transfer coding of request bodies (RFC 9112 7.1), decoded in place,
 * see parse.h. Depends on libc only, so the fuzz driver can build it alone.
 */
#include "h1/parse.h"
#include "h1/parse_internal.h"

#include <string.h>

#define CHUNK_LINE_MAX 4096 /* bytes of extensions on one chunk-size line */

enum {
    CH_SIZE = 0, /* chunk-size hex digits; _line_len counts them */
    CH_EXT,      /* after ';' up to CR; _line_len counts the extension bytes */
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TR_START, /* at the start of a trailer line or the final CRLF */
    CH_TR_NAME,  /* _line_len counts the name */
    CH_TR_VALUE,
    CH_TR_LF,
    CH_FINAL_LF,
    CH_DONE,
    CH_ERROR,
};

void est_h1_chunked_init(est_h1_chunked_t *d)
{
    memset(d, 0, sizeof(*d));
    d->_state = CH_SIZE;
}

int64_t est_h1_decode_chunked(est_h1_chunked_t *d, char *buf, size_t *len, est_h1_error_t *err)
{
    unsigned char *const out0 = (unsigned char *)buf, *out = out0, *p = out0, *const end = out0 + *len;
    const char *msg;

    if (d->_state == CH_DONE) {
        *len = 0;
        return (int64_t)(end - p);
    }
    if (d->_state == CH_ERROR) {
        *len = 0;
        return est_h1_bad(err, "malformed chunked body");
    }

    while (p < end) {
        unsigned char c;
        if (d->_state == CH_DATA) {
            size_t n = (size_t)(end - p);
            if (d->_remaining < n)
                n = (size_t)d->_remaining;
            if (out != p)
                memmove(out, p, n);
            out += n;
            p += n;
            d->_remaining -= n;
            d->decoded += n;
            if (d->_remaining == 0)
                d->_state = CH_DATA_CR;
            continue;
        }
        c = *p++;
        switch (d->_state) {
        case CH_SIZE:
            if (est_h1_ctype[c] & C_HEX) {
                if (d->_line_len == 16) {
                    msg = "chunk size too large";
                    goto Error;
                }
                d->_remaining = (d->_remaining << 4) | (uint64_t)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
                ++d->_line_len;
            } else if (d->_line_len == 0) {
                msg = "invalid chunk size";
                goto Error;
            } else if (c == ';') {
                d->_line_len = 0;
                d->_state = CH_EXT;
            } else if (c == '\r') {
                d->_state = CH_SIZE_LF;
            } else {
                msg = "invalid chunk size";
                goto Error;
            }
            break;
        case CH_EXT:
            /* chunk-ext = *( ";" name [ "=" value ] ): skipped, bounded, no CTL but HTAB */
            if (c == '\r') {
                d->_state = CH_SIZE_LF;
            } else if (!(est_h1_ctype[c] & C_VALUE)) {
                msg = "invalid chunk extension";
                goto Error;
            } else if (++d->_line_len > CHUNK_LINE_MAX) {
                msg = "chunk extension too long";
                goto Error;
            }
            break;
        case CH_SIZE_LF:
            if (c != '\n') {
                msg = "invalid chunk line ending";
                goto Error;
            }
            d->_line_len = 0;
            d->_state = d->_remaining != 0 ? CH_DATA : CH_TR_START;
            break;
        case CH_DATA_CR:
            if (c != '\r') {
                msg = "missing CRLF after chunk data";
                goto Error;
            }
            d->_state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (c != '\n') {
                msg = "missing CRLF after chunk data";
                goto Error;
            }
            d->_state = CH_SIZE;
            d->_remaining = 0;
            d->_line_len = 0;
            break;
        default:
            /* trailer section (RFC 9112 7.1.2): field lines like the head's, bounded in all */
            if (++d->_trailer_len > EST_H1_MAX_HEAD) {
                msg = "trailer section too large";
                goto Error;
            }
            switch (d->_state) {
            case CH_TR_START:
                if (c == '\r') {
                    d->_state = CH_FINAL_LF;
                } else if (est_h1_ctype[c] & C_TCHAR) {
                    d->_line_len = 1;
                    d->_state = CH_TR_NAME;
                } else {
                    msg = est_h1_is_ows(c) ? "obsolete line folding in trailer" : "invalid trailer field";
                    goto Error;
                }
                break;
            case CH_TR_NAME:
                if (est_h1_ctype[c] & C_TCHAR) {
                    ++d->_line_len;
                } else if (c == ':') {
                    d->_state = CH_TR_VALUE;
                } else {
                    msg = "invalid trailer field";
                    goto Error;
                }
                break;
            case CH_TR_VALUE:
                if (c == '\r') {
                    d->_state = CH_TR_LF;
                } else if (!(est_h1_ctype[c] & C_VALUE)) {
                    msg = "invalid trailer field";
                    goto Error;
                }
                break;
            case CH_TR_LF:
                if (c != '\n') {
                    msg = "invalid line ending in trailer";
                    goto Error;
                }
                d->_state = CH_TR_START;
                break;
            case CH_FINAL_LF:
                if (c != '\n') {
                    msg = "invalid line ending in trailer";
                    goto Error;
                }
                d->_state = CH_DONE;
                *len = (size_t)(out - out0);
                return (int64_t)(end - p);
            default:
                msg = "malformed chunked body";
                goto Error;
            }
            break;
        }
    }
    *len = (size_t)(out - out0);
    return -2;

Error:
    d->_state = CH_ERROR;
    *len = (size_t)(out - out0);
    return est_h1_bad(err, msg);
}
