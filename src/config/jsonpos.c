/*
 * estuary - JSON value positions (see jsonpos.h).
 *
 * A small recursive scanner over a text jansson already accepted: it does not validate
 * beyond what it needs to stay in step, and gives up (-1) on anything unexpected. The
 * depth is bounded by jansson's own limit (2048), which accepted the text first.
 */
#include "config/jsonpos.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fieldvalue.h"

typedef struct scanner {
    const char *s;
    size_t len, off;
    unsigned line, col; /* position of s[off] */
    est_jsonpos_t *idx;
    size_t cap;
    char *path; /* current JSON pointer */
    size_t plen, pcap;
} scanner_t;

static int scan_value(scanner_t *sc, unsigned key_line, unsigned key_col);

/* advances one byte, keeping line/column (columns count characters, not bytes) */
static void adv(scanner_t *sc)
{
    unsigned char c = (unsigned char)sc->s[sc->off++];
    if (c == '\n') {
        sc->line++;
        sc->col = 1;
    } else if (sc->off < sc->len && ((unsigned char)sc->s[sc->off] & 0xC0) == 0x80) {
        /* inside a multi-byte character: the column moves when the character ends */
    } else {
        sc->col++;
    }
}

static void skip_ws(scanner_t *sc)
{
    while (sc->off < sc->len && (sc->s[sc->off] == ' ' || sc->s[sc->off] == '\t' || sc->s[sc->off] == '\n' || sc->s[sc->off] == '\r'))
        adv(sc);
}

static int path_reserve(char **buf, size_t *len, size_t *cap, size_t more)
{
    if (*len + more + 1 > *cap) {
        size_t ncap = *cap ? *cap * 2 : 128;
        while (ncap < *len + more + 1)
            ncap *= 2;
        char *n = realloc(*buf, ncap);
        if (n == NULL)
            return -1;
        *buf = n;
        *cap = ncap;
    }
    return 0;
}

int est_jsonpos_append_key(char **buf, size_t *len, size_t *cap, const char *key, size_t keylen)
{
    if (path_reserve(buf, len, cap, 1 + 2 * keylen) != 0)
        return -1;
    (*buf)[(*len)++] = '/';
    for (size_t i = 0; i < keylen; i++) {
        if (key[i] == '~') {
            (*buf)[(*len)++] = '~';
            (*buf)[(*len)++] = '0';
        } else if (key[i] == '/') {
            (*buf)[(*len)++] = '~';
            (*buf)[(*len)++] = '1';
        } else {
            (*buf)[(*len)++] = key[i];
        }
    }
    (*buf)[*len] = '\0';
    return 0;
}

static int add_entry(scanner_t *sc, unsigned kl, unsigned kc)
{
    if (sc->plen > EST_JSONPOS_MAX_PATH)
        return 0;
    if (sc->idx->num_entries == sc->cap) {
        size_t ncap = sc->cap ? sc->cap * 2 : 64;
        est_jsonpos_entry_t *n = realloc(sc->idx->entries, ncap * sizeof(*n));
        if (n == NULL)
            return -1;
        sc->idx->entries = n;
        sc->cap = ncap;
    }
    est_jsonpos_entry_t *e = &sc->idx->entries[sc->idx->num_entries];
    if ((e->path = strdup(sc->path ? sc->path : "")) == NULL)
        return -1;
    e->key_line = kl;
    e->key_col = kc;
    e->val_line = sc->line;
    e->val_col = sc->col;
    e->val_offset = sc->off;
    sc->idx->num_entries++;
    return 0;
}

static int read_hex4(scanner_t *sc, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        if (sc->off >= sc->len)
            return -1;
        int h = est_hex_digit((unsigned char)sc->s[sc->off]);
        if (h < 0)
            return -1;
        v = v * 16 + (unsigned)h;
        adv(sc);
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    } else if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    } else if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/*
 * Scans a string at s[off] == '"'. When `out` is not NULL, stores the decoded bytes
 * (malloc'ed, NUL-terminated, owned by the caller) and their length.
 */
static int scan_string(scanner_t *sc, char **out, size_t *outlen)
{
    char *buf = NULL;
    size_t n = 0;
    adv(sc); /* opening quote */
    if (out != NULL) {
        size_t start = sc->off, end = start;
        while (end < sc->len && sc->s[end] != '"') /* decoded text is never longer than raw */
            end += sc->s[end] == '\\' ? 2 : 1;
        if ((buf = malloc(end - start + 1)) == NULL)
            return -1;
    }
    for (;;) {
        if (sc->off >= sc->len)
            goto fail;
        char c = sc->s[sc->off];
        if (c == '"') {
            adv(sc);
            break;
        }
        if (c != '\\') {
            if (buf)
                buf[n++] = c;
            adv(sc);
            continue;
        }
        adv(sc);
        if (sc->off >= sc->len)
            goto fail;
        c = sc->s[sc->off];
        adv(sc);
        char d = 0;
        switch (c) {
        case '"': d = '"'; break;
        case '\\': d = '\\'; break;
        case '/': d = '/'; break;
        case 'b': d = '\b'; break;
        case 'f': d = '\f'; break;
        case 'n': d = '\n'; break;
        case 'r': d = '\r'; break;
        case 't': d = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (read_hex4(sc, &cp) != 0)
                goto fail;
            if (cp >= 0xD800 && cp <= 0xDBFF && sc->off + 1 < sc->len && sc->s[sc->off] == '\\' && sc->s[sc->off + 1] == 'u') {
                adv(sc);
                adv(sc);
                if (read_hex4(sc, &lo) != 0)
                    goto fail;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (buf)
                n += put_utf8(buf + n, cp);
            continue;
        }
        default:
            goto fail;
        }
        if (buf)
            buf[n++] = d;
    }
    if (out != NULL) {
        buf[n] = '\0';
        *out = buf;
        *outlen = n;
    }
    return 0;
fail:
    free(buf);
    return -1;
}

/*
 * After an object member or array element, with the path restored: consumes `close` (returns
 * 0: the container ends) or ',' (returns 1: another member follows); -1 on anything else.
 */
static int after_member(scanner_t *sc, char close)
{
    skip_ws(sc);
    if (sc->off >= sc->len)
        return -1;
    char ch = sc->s[sc->off];
    if (ch != close && ch != ',')
        return -1;
    adv(sc);
    return ch == ',';
}

static int scan_object(scanner_t *sc)
{
    adv(sc); /* '{' */
    skip_ws(sc);
    if (sc->off < sc->len && sc->s[sc->off] == '}') {
        adv(sc);
        return 0;
    }
    for (;;) {
        skip_ws(sc);
        if (sc->off >= sc->len || sc->s[sc->off] != '"')
            return -1;
        unsigned kl = sc->line, kc = sc->col;
        char *key;
        size_t keylen;
        if (scan_string(sc, &key, &keylen) != 0)
            return -1;
        size_t saved = sc->plen;
        int r = est_jsonpos_append_key(&sc->path, &sc->plen, &sc->pcap, key, keylen);
        free(key);
        if (r != 0)
            return -1;
        skip_ws(sc);
        if (sc->off >= sc->len || sc->s[sc->off] != ':')
            return -1;
        adv(sc);
        skip_ws(sc);
        if (scan_value(sc, kl, kc) != 0)
            return -1;
        sc->plen = saved;
        sc->path[saved] = '\0';
        int end = after_member(sc, '}');
        if (end <= 0)
            return end;
    }
}

static int scan_array(scanner_t *sc)
{
    adv(sc); /* '[' */
    skip_ws(sc);
    if (sc->off < sc->len && sc->s[sc->off] == ']') {
        adv(sc);
        return 0;
    }
    for (size_t i = 0;; i++) {
        char num[32];
        int nl = snprintf(num, sizeof(num), "%zu", i);
        size_t saved = sc->plen;
        if (est_jsonpos_append_key(&sc->path, &sc->plen, &sc->pcap, num, (size_t)nl) != 0)
            return -1;
        skip_ws(sc);
        if (scan_value(sc, sc->line, sc->col) != 0)
            return -1;
        sc->plen = saved;
        sc->path[saved] = '\0';
        int end = after_member(sc, ']');
        if (end <= 0)
            return end;
    }
}

static int scan_value(scanner_t *sc, unsigned key_line, unsigned key_col)
{
    if (sc->off >= sc->len)
        return -1;
    if (add_entry(sc, key_line, key_col) != 0)
        return -1;
    switch (sc->s[sc->off]) {
    case '{':
        return scan_object(sc);
    case '[':
        return scan_array(sc);
    case '"':
        return scan_string(sc, NULL, NULL);
    default:
        /* number, true, false, null: up to the next delimiter */
        while (sc->off < sc->len && strchr(",]} \t\r\n", sc->s[sc->off]) == NULL)
            adv(sc);
        return 0;
    }
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const est_jsonpos_entry_t *)a)->path, ((const est_jsonpos_entry_t *)b)->path);
}

int est_jsonpos_build(est_jsonpos_t *idx, const char *text, size_t len)
{
    scanner_t sc = {.s = text, .len = len, .line = 1, .col = 1, .idx = idx};
    idx->entries = NULL;
    idx->num_entries = 0;
    if (path_reserve(&sc.path, &sc.plen, &sc.pcap, 0) != 0)
        return -1;
    sc.path[0] = '\0';
    skip_ws(&sc);
    int r = scan_value(&sc, sc.line, sc.col);
    free(sc.path);
    if (r != 0) {
        est_jsonpos_dispose(idx);
        return -1;
    }
    qsort(idx->entries, idx->num_entries, sizeof(*idx->entries), cmp_entry);
    return 0;
}

void est_jsonpos_dispose(est_jsonpos_t *idx)
{
    for (size_t i = 0; i < idx->num_entries; i++)
        free(idx->entries[i].path);
    free(idx->entries);
    idx->entries = NULL;
    idx->num_entries = 0;
}

const est_jsonpos_entry_t *est_jsonpos_find(const est_jsonpos_t *idx, const char *path)
{
    est_jsonpos_entry_t key = {.path = (char *)path};
    if (idx->num_entries == 0)
        return NULL;
    return bsearch(&key, idx->entries, idx->num_entries, sizeof(key), cmp_entry);
}

void est_jsonpos_line_col(const char *text, size_t len, size_t offset, unsigned *line, unsigned *col)
{
    unsigned l = 1, c = 1;
    if (offset > len)
        offset = len;
    for (size_t i = 0; i < offset; i++) {
        unsigned char ch = (unsigned char)text[i];
        if (ch == '\n') {
            l++;
            c = 1;
        } else if ((ch & 0xC0) != 0x80) {
            c++;
        }
    }
    /* if offset sits inside a multi-byte character, c already counts it: fine for messages */
    *line = l;
    *col = c;
}
