#ifndef ESTUARY_POLICY_B64URL_H
#define ESTUARY_POLICY_B64URL_H

#include <stddef.h>

/* Strict base64url decoding for JOSE (RFC 7515 §2 and Appendix C): the URL-safe alphabet of
 * RFC 4648 §5, no padding, no whitespace, and the unused low bits of the last character must be
 * zero so that every byte string has exactly one accepted encoding (no malleable signatures).
 *
 * Decodes `len` characters of `in` into `out` (capacity `cap`). Returns the decoded length, or
 * -1 when the input is not canonical base64url or would not fit in `cap`. Pure, no allocation. */
long est_b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap);

/* Upper bound of the decoded length of `len` characters. */
static inline size_t est_b64url_decoded_max(size_t len)
{
    return len / 4 * 3 + 3;
}

#endif
