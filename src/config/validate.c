/*
 * estuary - config validation helpers: where we are, errors with positions, typed getters
 * (see validate.h).
 */
#include "config/validate.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int push_frame(vctx_t *c);
static void verr_at(vctx_t *c, unsigned line, unsigned col, const char *prefix, const char *fmt, va_list ap);
static size_t edit_distance(const char *a, const char *b);

/* ---- memory ---------------------------------------------------------------------------- */

void *est_cv_xmalloc(size_t sz)
{
    void *p = malloc(sz ? sz : 1);
    if (p == NULL) {
        fprintf(stderr, "estuary: out of memory while loading the config\n");
        abort();
    }
    return p;
}

void *est_cv_xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (p == NULL) {
        fprintf(stderr, "estuary: out of memory while loading the config\n");
        abort();
    }
    return p;
}

char *est_cv_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(est_cv_xmalloc(n), s, n);
}

void est_cv_buf_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t ncap = *cap ? *cap : 64;
        while (ncap < *len + n + 1)
            ncap *= 2;
        char *nb = realloc(*buf, ncap);
        if (nb == NULL)
            abort();
        *buf = nb;
        *cap = ncap;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
}

/* ---- where we are ---------------------------------------------------------------------- */

static int push_frame(vctx_t *c)
{
    if (c->depth == MAX_DEPTH) {
        c->overflow++;
        return -1;
    }
    c->stack[c->depth].ptr_len = c->ptr_len;
    c->stack[c->depth].disp_len = c->disp_len;
    c->depth++;
    return 0;
}

/* descends into member `key` of the current object */
void est_cv_push_key(vctx_t *c, const char *key)
{
    if (push_frame(c) != 0)
        return;
    if (est_jsonpos_append_key(&c->ptr, &c->ptr_len, &c->ptr_cap, key, strlen(key)) != 0)
        abort();
    int plain = *key != '\0';
    for (const char *p = key; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
            plain = 0;
    if (plain) {
        if (c->disp_len != 0)
            est_cv_buf_append(&c->disp, &c->disp_len, &c->disp_cap, ".", 1);
        est_cv_buf_append(&c->disp, &c->disp_len, &c->disp_cap, key, strlen(key));
    } else {
        json_t *js = json_string(key);
        char *q = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL; /* quoted and escaped */
        json_decref(js);
        est_cv_buf_append(&c->disp, &c->disp_len, &c->disp_cap, "[", 1);
        if (q != NULL)
            est_cv_buf_append(&c->disp, &c->disp_len, &c->disp_cap, q, strlen(q));
        est_cv_buf_append(&c->disp, &c->disp_len, &c->disp_cap, "]", 1);
        free(q);
    }
}

/* descends into element `i` of the current array */
void est_cv_push_index(vctx_t *c, size_t i)
{
    char num[32];
    int n = snprintf(num, sizeof(num), "%zu", i);
    if (push_frame(c) != 0)
        return;
    if (est_jsonpos_append_key(&c->ptr, &c->ptr_len, &c->ptr_cap, num, (size_t)n) != 0)
        abort();
    n = snprintf(num, sizeof(num), "[%zu]", i);
    est_cv_buf_append(&c->disp, &c->disp_len, &c->disp_cap, num, (size_t)n);
}

void est_cv_pop(vctx_t *c)
{
    if (c->overflow != 0) {
        c->overflow--;
        return;
    }
    c->depth--;
    c->ptr_len = c->stack[c->depth].ptr_len;
    c->ptr[c->ptr_len] = '\0';
    c->disp_len = c->stack[c->depth].disp_len;
    c->disp[c->disp_len] = '\0';
}

/* the position entry of the current value, or of its nearest indexed ancestor */
const est_jsonpos_entry_t *est_cv_here(vctx_t *c)
{
    /* values under a pointer longer than the index keeps have no entry: start the search at
     * the longest ancestor that can have one (a huge key costs no copy per lookup) */
    size_t n = c->ptr_len;
    if (n > EST_JSONPOS_MAX_PATH) {
        n = EST_JSONPOS_MAX_PATH;
        while (n > 0 && c->ptr[n] != '/')
            n--;
    }
    char *p = est_cv_xmalloc(n + 1);
    memcpy(p, c->ptr, n);
    p[n] = '\0';
    const est_jsonpos_entry_t *e;
    while ((e = est_jsonpos_find(&c->pos, p)) == NULL && *p != '\0')
        *strrchr(p, '/') = '\0';
    free(p);
    return e;
}

/* ---- errors ---------------------------------------------------------------------------- */

int est_cv_errors_full(const vctx_t *c)
{
    return c->num_errors >= EST_CONFIG_MAX_ERRORS;
}

/* counts an error past the limit; returns 1 when the caller must drop it */
static int drop_error(vctx_t *c, unsigned line, unsigned col)
{
    if (!est_cv_errors_full(c))
        return 0;
    if (c->dropped_errors++ == 0) {
        c->dropped_line = line;
        c->dropped_col = col;
    }
    return 1;
}

/* length of `s` cut to at most `max` bytes, not inside a UTF-8 sequence */
static size_t utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

const char *est_cv_short(vctx_t *c, const char *s)
{
    size_t len = strnlen(s, 201);
    if (len <= 200)
        return s;
    char *buf = c->short_bufs[c->short_next++ % 4];
    size_t n = utf8_cut(s, len, 200);
    memcpy(buf, s, n);
    memcpy(buf + n, "...", 4);
    return buf;
}

/* longest path prefix shown in a message: a huge key must not make every message huge */
#define MAX_PREFIX 200

static void verr_at(vctx_t *c, unsigned line, unsigned col, const char *prefix, const char *fmt, va_list ap)
{
    char body[1024];
    if (drop_error(c, line, col))
        return;
    int bl = vsnprintf(body, sizeof(body), fmt, ap);
    if (bl >= (int)sizeof(body)) /* truncated: do not end inside a character */
        body[utf8_cut(body, sizeof(body) - 1, sizeof(body) - 4)] = '\0';
    if (c->num_errors == c->cap_errors) {
        c->cap_errors = c->cap_errors ? c->cap_errors * 2 : 16;
        pending_error_t *n = realloc(c->errors, c->cap_errors * sizeof(*n));
        if (n == NULL)
            abort();
        c->errors = n;
    }
    pending_error_t *e = &c->errors[c->num_errors];
    size_t plen = prefix ? strlen(prefix) : 0, pshow = utf8_cut(prefix ? prefix : "", plen, MAX_PREFIX);
    size_t sz = strlen(body) + pshow + 8 + 1;
    e->msg = est_cv_xmalloc(sz);
    if (prefix != NULL && *prefix != '\0')
        snprintf(e->msg, sz, "%.*s%s: %s", (int)pshow, prefix, pshow < plen ? "..." : "", body);
    else
        snprintf(e->msg, sz, "%s", body);
    e->line = line;
    e->col = col;
    e->seq = c->num_errors++;
}

void est_cv_err_at(vctx_t *c, unsigned line, unsigned col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verr_at(c, line, col, NULL, fmt, ap);
    va_end(ap);
}

/* an error about the current value, at the value, prefixed with its path ("listen[0].port: ") */
void est_cv_err_val(vctx_t *c, const char *fmt, ...)
{
    /* past the limit only the first dropped error's position is kept: skip the lookup */
    const est_jsonpos_entry_t *e = est_cv_errors_full(c) && c->dropped_errors != 0 ? NULL : est_cv_here(c);
    va_list ap;
    va_start(ap, fmt);
    verr_at(c, e ? e->val_line : 1, e ? e->val_col : 1, c->disp, fmt, ap);
    va_end(ap);
}

/* an error about the current value, at its key */
void est_cv_err_key(vctx_t *c, const char *fmt, ...)
{
    /* past the limit only the first dropped error's position is kept: skip the lookup */
    const est_jsonpos_entry_t *e = est_cv_errors_full(c) && c->dropped_errors != 0 ? NULL : est_cv_here(c);
    va_list ap;
    va_start(ap, fmt);
    verr_at(c, e ? e->key_line : 1, e ? e->key_col : 1, c->disp, fmt, ap);
    va_end(ap);
}

const char *est_cv_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strnlen(a, 64), lb = strnlen(b, 64), prev[64], cur[64];
    if (la >= 63 || lb >= 63)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]), del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (lb + 1) * sizeof(size_t));
    }
    return prev[lb];
}

/* the candidate closest to `word` (at most 2 edits), or NULL */
const char *est_cv_suggest(const char *word, const char *const *candidates, size_t n)
{
    const char *best = NULL;
    size_t best_d = 3;
    for (size_t i = 0; i < n; i++) {
        size_t d = edit_distance(word, candidates[i]);
        if (d < best_d) {
            best_d = d;
            best = candidates[i];
        }
    }
    return best;
}

/* ---- typed getters: 1 = set, 0 = absent, -1 = invalid (reported) ------------------------ */

/* reports every member of `obj` (borrowed) whose name is not in the NULL-terminated `allowed` */
void est_cv_check_keys(vctx_t *c, json_t *obj, const char *const *allowed)
{
    const char *key;
    json_t *v;
    size_t n = 0;
    while (allowed[n] != NULL)
        n++;
    json_object_foreach(obj, key, v)
    {
        size_t i;
        for (i = 0; i < n; i++)
            if (strcmp(key, allowed[i]) == 0)
                break;
        if (i < n)
            continue;
        if (est_cv_errors_full(c)) { /* only counted: no suggestion to compute */
            est_cv_push_key(c, key);
            est_cv_err_key(c, "unknown key");
            est_cv_pop(c);
            continue;
        }
        char where[512], hint[128] = "";
        if (c->disp_len == 0)
            snprintf(where, sizeof(where), "at the top level");
        else
            snprintf(where, sizeof(where), "in %s", c->disp);
        const char *s = est_cv_suggest(key, allowed, n);
        if (s != NULL)
            snprintf(hint, sizeof(hint), " (did you mean \"%s\"?)", s);
        est_cv_push_key(c, key);
        const est_jsonpos_entry_t *e = est_cv_here(c);
        est_cv_err_at(c, e ? e->key_line : 1, e ? e->key_col : 1, "unknown key \"%s\" %s%s", key, where, hint);
        est_cv_pop(c);
    }
}

json_t *est_cv_get_typed(vctx_t *c, json_t *obj, const char *key, json_type type)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return NULL;
    if (json_typeof(v) != type) {
        est_cv_push_key(c, key);
        est_cv_err_val(c, "expected %s, got %s", type == JSON_OBJECT ? "an object" : "an array", est_cv_type_name(v));
        est_cv_pop(c);
        return NULL;
    }
    return v;
}

int est_cv_get_string(vctx_t *c, json_t *obj, const char *key, const char **out)
{
    json_t *v = json_object_get(obj, key);
    int r = 1;
    if (v == NULL)
        return 0;
    est_cv_push_key(c, key);
    if (!json_is_string(v)) {
        est_cv_err_val(c, "expected a string, got %s", est_cv_type_name(v));
        r = -1;
    } else if (json_string_length(v) == 0) {
        est_cv_err_val(c, "must not be empty");
        r = -1;
    } else if (strlen(json_string_value(v)) != json_string_length(v)) {
        est_cv_err_val(c, "must not contain NUL characters");
        r = -1;
    } else {
        *out = json_string_value(v);
    }
    est_cv_pop(c);
    return r;
}

int est_cv_get_bool(vctx_t *c, json_t *obj, const char *key, int *out)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return 0;
    if (!json_is_boolean(v)) {
        est_cv_push_key(c, key);
        est_cv_err_val(c, "expected true or false, got %s", est_cv_type_name(v));
        est_cv_pop(c);
        return -1;
    }
    *out = json_is_true(v);
    return 1;
}

/* reports the current value (an integer or not) against [min, max] */
int est_cv_check_int(vctx_t *c, json_t *v, json_int_t min, json_int_t max, json_int_t *out)
{
    char range[96];
    if (max == JSON_INTEGER_MAX)
        snprintf(range, sizeof(range), "an integer >= %" JSON_INTEGER_FORMAT, min);
    else
        snprintf(range, sizeof(range), "an integer from %" JSON_INTEGER_FORMAT " to %" JSON_INTEGER_FORMAT, min, max);
    if (!json_is_integer(v)) {
        est_cv_err_val(c, "expected %s, got %s", range, est_cv_type_name(v));
        return -1;
    }
    json_int_t i = json_integer_value(v);
    if (i < min || i > max) {
        est_cv_err_val(c, "expected %s, got %" JSON_INTEGER_FORMAT, range, i);
        return -1;
    }
    *out = i;
    return 1;
}

int est_cv_get_int(vctx_t *c, json_t *obj, const char *key, json_int_t min, json_int_t max, json_int_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return 0;
    est_cv_push_key(c, key);
    int r = est_cv_check_int(c, v, min, max, out);
    est_cv_pop(c);
    return r;
}

int est_cv_get_duration(vctx_t *c, json_t *obj, const char *key, int allow_zero, uint64_t *out)
{
    json_t *v = json_object_get(obj, key);
    uint64_t ms;
    int r = -1;
    if (v == NULL)
        return 0;
    est_cv_push_key(c, key);
    if (!json_is_string(v))
        est_cv_err_val(c, "expected a duration string such as \"5s\", got %s", est_cv_type_name(v));
    else if (est_parse_duration(json_string_value(v), &ms) != 0 || strlen(json_string_value(v)) != json_string_length(v))
        est_cv_err_val(c, "bad duration \"%s\" (use e.g. \"250ms\", \"5s\", \"1m30s\")", json_string_value(v));
    else if (ms == 0 && !allow_zero)
        est_cv_err_val(c, "must be more than 0s");
    else {
        *out = ms;
        r = 1;
    }
    est_cv_pop(c);
    return r;
}

int est_cv_get_size(vctx_t *c, json_t *obj, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(obj, key);
    int r = -1;
    if (v == NULL)
        return 0;
    est_cv_push_key(c, key);
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0) {
            est_cv_err_val(c, "a size cannot be negative");
        } else {
            *out = (uint64_t)json_integer_value(v);
            r = 1;
        }
    } else if (json_is_string(v)) {
        if (est_parse_size_string(json_string_value(v), out) != 0 || strlen(json_string_value(v)) != json_string_length(v))
            est_cv_err_val(c, "bad size \"%s\" (use bytes, or e.g. \"512KiB\", \"8MiB\", \"1GiB\")", json_string_value(v));
        else
            r = 1;
    } else {
        est_cv_err_val(c, "expected a size (bytes, or a string such as \"8MiB\"), got %s", est_cv_type_name(v));
    }
    est_cv_pop(c);
    return r;
}

/* ---- value checks ---------------------------------------------------------------------- */

/*
 * Resolves `path` (a file named in the config, at the current position) against the config
 * file's folder and checks that it is a readable regular file. Returns the resolved path
 * (owned by the caller), or NULL after reporting the problem.
 */
char *est_cv_check_file(vctx_t *c, const char *path)
{
    char *resolved;
    if (path[0] == '/') {
        resolved = est_cv_xstrdup(path);
    } else {
        size_t n = strlen(c->conf->base_dir) + strlen(path) + 2;
        resolved = est_cv_xmalloc(n);
        snprintf(resolved, n, "%s/%s", c->conf->base_dir, path);
    }
    char shown[PATH_MAX + 8] = "";
    if (strcmp(resolved, path) != 0)
        snprintf(shown, sizeof(shown), " (%s)", resolved);
    struct stat st;
    int fd = open(resolved, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* O_NONBLOCK: a FIFO must not hang the load */
    if (fd < 0) {
        est_cv_err_val(c, "cannot read \"%s\"%s: %s", path, shown, strerror(errno));
    } else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        est_cv_err_val(c, "cannot read \"%s\"%s: not a regular file", path, shown);
    } else {
        close(fd);
        return resolved;
    }
    if (fd >= 0)
        close(fd);
    free(resolved);
    return NULL;
}

/* "a", "a.b.c": non-empty names separated by single dots */
int est_cv_is_dot_path(const char *s)
{
    if (*s == '\0' || *s == '.')
        return 0;
    for (; *s; s++)
        if (*s == '.' && (s[1] == '.' || s[1] == '\0'))
            return 0;
    return 1;
}

unsigned est_cv_line_of(vctx_t *c)
{
    const est_jsonpos_entry_t *e = est_cv_here(c);
    return e ? e->val_line : 1;
}

/* col of byte `offset` of the string value at the current position, if it has no escapes */
void est_cv_string_offset_pos(vctx_t *c, size_t offset, unsigned *line, unsigned *col)
{
    const est_jsonpos_entry_t *e = est_cv_here(c);
    *line = e ? e->val_line : 1;
    *col = e ? e->val_col : 1;
    if (e == NULL || e->val_offset >= c->len || c->text[e->val_offset] != '"')
        return;
    const char *raw = c->text + e->val_offset + 1;
    size_t avail = c->len - e->val_offset - 1, chars = 0;
    for (size_t i = 0; i < offset; i++) {
        if (i >= avail || raw[i] == '\\' || raw[i] == '"')
            return; /* escapes: the decoded offset does not map simply; stay at the quote */
        if (((unsigned char)raw[i] & 0xC0) != 0x80)
            chars++;
    }
    *col += 1 + (unsigned)chars;
}

static int cmp_upstream_name(const void *a, const void *b)
{
    return strcmp((*(est_upstream_conf_t *const *)a)->name, (*(est_upstream_conf_t *const *)b)->name);
}

est_upstream_conf_t *est_cv_find_upstream(vctx_t *c, const char *name)
{
    size_t n = c->conf->num_upstreams;
    if (n == 0)
        return NULL;
    if (c->ups_by_name == NULL) {
        c->ups_by_name = est_cv_xcalloc(n, sizeof(*c->ups_by_name));
        for (size_t i = 0; i < n; i++)
            c->ups_by_name[i] = &c->conf->upstreams[i];
        qsort(c->ups_by_name, n, sizeof(*c->ups_by_name), cmp_upstream_name);
    }
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(name, c->ups_by_name[mid]->name);
        if (r == 0)
            return c->ups_by_name[mid];
        if (r < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}
