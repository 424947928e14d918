#include "policy/apikeys.h"
#include "common/file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "common/fieldvalue.h"

struct st_est_apikeys_t {
    unsigned char (*digests)[32];
    size_t count;
};

/* 1 and the digest in out when s is exactly 64 hex digits. */
static int parse_hex_digest(const char *s, size_t len, unsigned char out[32])
{
    if (len != 64)
        return 0;
    for (size_t i = 0; i < 32; i++) {
        int hi = est_hex_digit((unsigned char)s[2 * i]), lo = est_hex_digit((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return 0;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 1;
}

static int is_trim(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

est_apikeys_t *est_apikeys_parse(const char *text, size_t len, char *err, size_t errlen)
{
    if (errlen != 0)
        err[0] = '\0';
    if (len > EST_APIKEYS_MAX_FILE) {
        snprintf(err, errlen, "keys file too large");
        return NULL;
    }
    est_apikeys_t *keys = calloc(1, sizeof(*keys));
    size_t cap = 0, lineno = 0;
    if (keys == NULL)
        goto NoMem;
    for (size_t pos = 0; pos < len;) {
        const char *line = text + pos, *nl = memchr(line, '\n', len - pos);
        size_t linelen = nl != NULL ? (size_t)(nl - line) : len - pos;
        pos += linelen + (nl != NULL);
        lineno++;
        if (linelen > EST_APIKEYS_MAX_LINE) {
            snprintf(err, errlen, "%zu: line too long", lineno);
            goto Error;
        }
        while (linelen != 0 && is_trim(line[0]))
            line++, linelen--;
        while (linelen != 0 && is_trim(line[linelen - 1]))
            linelen--;
        if (linelen == 0 || line[0] == '#')
            continue;
        if (memchr(line, '\0', linelen) != NULL) {
            snprintf(err, errlen, "%zu: NUL byte in key", lineno);
            goto Error;
        }
        if (keys->count == EST_APIKEYS_MAX_KEYS) {
            snprintf(err, errlen, "%zu: more than %d keys", lineno, EST_APIKEYS_MAX_KEYS);
            goto Error;
        }
        if (keys->count == cap) {
            size_t ncap = cap == 0 ? 16 : cap * 2;
            void *n = realloc(keys->digests, ncap * sizeof(*keys->digests));
            if (n == NULL)
                goto NoMem;
            keys->digests = n;
            cap = ncap;
        }
        if (!parse_hex_digest(line, linelen, keys->digests[keys->count]))
            SHA256((const unsigned char *)line, linelen, keys->digests[keys->count]);
        keys->count++;
    }
    return keys;
NoMem:
    snprintf(err, errlen, "out of memory");
Error:
    est_apikeys_free(keys);
    return NULL;
}

est_apikeys_t *est_apikeys_load(const char *path, char *err, size_t errlen)
{
    char *buf = NULL, why[128];
    size_t len = 0;
    if (est_read_file(path, EST_APIKEYS_MAX_FILE, &buf, &len, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s: %s", path, why);
        return NULL;
    }
    est_apikeys_t *keys = est_apikeys_parse(buf, len, err, errlen);
    OPENSSL_cleanse(buf, len);
    free(buf);
    return keys;
}

void est_apikeys_free(est_apikeys_t *keys)
{
    if (keys == NULL)
        return;
    free(keys->digests);
    free(keys);
}

size_t est_apikeys_count(const est_apikeys_t *keys)
{
    return keys->count;
}

int est_apikeys_check(const est_apikeys_t *keys, const char *key, size_t len)
{
    if (len == 0 || len > EST_APIKEYS_MAX_LINE)
        return 0;
    unsigned char d[32];
    SHA256((const unsigned char *)key, len, d);
    /* every digest is compared, the results OR-ed without a branch on them */
    unsigned match = 0;
    for (size_t i = 0; i < keys->count; i++)
        match |= (unsigned)(CRYPTO_memcmp(d, keys->digests[i], 32) == 0);
    OPENSSL_cleanse(d, sizeof(d));
    return match != 0;
}
