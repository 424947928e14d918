#include "policy/b64url.h"

#include <stdint.h>

/* 0..63 for the base64url alphabet, 0xff for anything else ('=' included: JOSE forbids padding). */
static int8_t b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return (int8_t)(c - 'A');
    if (c >= 'a' && c <= 'z')
        return (int8_t)(c - 'a' + 26);
    if (c >= '0' && c <= '9')
        return (int8_t)(c - '0' + 52);
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long est_b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    /* a single trailing character carries only 6 bits: never a valid encoding */
    if (len % 4 == 1)
        return -1;
    size_t outlen = len / 4 * 3 + (len % 4 == 0 ? 0 : len % 4 - 1);
    if (outlen > cap)
        return -1;

    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int8_t v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* the leftover bits (2 or 4) must be zero: RFC 4648 §3.5 canonical encoding */
    if (acc != 0)
        return -1;
    return (long)o;
}
