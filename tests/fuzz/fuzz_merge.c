/*
 * estuary - libFuzzer driver for the span transforms and the merged-document writer
 * (src/aggregate/merge.c), run as src/aggregate/fanout.c runs them, checked against a reference
 * model built on jansson.
 *
 * Input: up to 3 backend sections, each a spec line then the backend's reply bytes:
 *
 *     @@g=NAME t=PATH a=P,P d=P,P m=FROM:TO,FROM:TO k=P,P l
 *     {"reply": ...}
 *     @@...
 *
 * A section's reply runs to the next "\n@@" or the end (valid JSON never holds "\n@" outside a
 * string, nor a raw newline in one). Spec tokens, separated by spaces, all optional: g group,
 * t target, a allow, d deny, m mapping, k paths read with est_reply_lookup (what a dependent
 * backend's {GROUP.path} reads), at most 8 entries each; l a small index bound (256 bytes of
 * tape). A token that is not UTF-8 is ignored (config strings always are). An input
 * not starting with "@@" is one backend without transforms, so any JSON text is a seed.
 *
 * Each reply goes through est_reply_parse + est_reply_transform (a failure is a failed backend,
 * the arena rolled back as fanout.c does), then est_merge_add in order and est_merge_write.
 * The checks: no crash, leak or UB (sanitizers), and
 * - the merged body is valid JSON (jspan, strict) and, whenever jansson reads every reply too,
 *   equal, keys in the same order, to the reference model's document; a backend
 *   fails (invalid JSON, target missing, scalar without group) exactly when the model's does,
 *   and a failed backend contributes nothing; est_reply_lookup finds what the model finds;
 * - each number of the body is byte for byte the text of a number of some reply, each string
 *   the text of a string of some reply or a config string (group, mapping "to", "collection");
 * - jspan's skip_array_scalars mode (which est_reply_parse uses) accepts exactly what the full
 *   mode accepts, and indexes the same containers with the same spans;
 * - memory stays bounded: the arena by a constant factor of the input, the body by the replies
 *   times (1 + mapping entries) plus the config strings, and est_merge_write honours out->max.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregate/merge.h"
#include "jspan_same.h"

#define CHECK(x)                                                                                                                   \
    do {                                                                                                                           \
        if (!(x)) {                                                                                                                \
            fprintf(stderr, "fuzz_merge: check failed at line %d: %s\n", __LINE__, #x);                                            \
            abort();                                                                                                               \
        }                                                                                                                          \
    } while (0)

#define MAX_BACKENDS 3
#define MAX_LIST 8
#define SMALL_TAPE 256
/* arena bytes allowed per input byte, plus a constant (chunks start at 4 KiB) */
#define ARENA_PER_BYTE 512
#define ARENA_BASE (64 * 1024)

typedef struct {
    est_backend_conf_t conf;
    char *allow[MAX_LIST], *deny[MAX_LIST], *lookup[MAX_LIST];
    size_t num_lookup;
    est_mapping_conf_t mapping[MAX_LIST];
    size_t tape_max;
    const char *body;
    size_t len;
} backend_t;

/* ---- input -------------------------------------------------------------------------------- */

/* a config string: NUL-terminated copy, NULL when not UTF-8 (jansson checks it) */
static char *cfg_str(const char *p, size_t n)
{
    json_t *s = json_stringn(p, n);
    if (s == NULL)
        return NULL;
    json_decref(s);
    char *d = malloc(n + 1);
    CHECK(d != NULL);
    memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

/* splits v[0..n) at `sep` into list (up to MAX_LIST), returns the count */
static size_t cfg_list(const char *v, size_t n, char **list)
{
    size_t num = 0;
    while (num < MAX_LIST) {
        const char *c = memchr(v, ',', n);
        size_t l = c != NULL ? (size_t)(c - v) : n;
        if ((list[num] = cfg_str(v, l)) != NULL)
            ++num;
        if (c == NULL)
            break;
        v += l + 1;
        n -= l + 1;
    }
    return num;
}

static void parse_spec(backend_t *b, const char *s, size_t n)
{
    while (n != 0) {
        const char *sp = memchr(s, ' ', n);
        size_t tl = sp != NULL ? (size_t)(sp - s) : n;
        if (tl == 1 && s[0] == 'l') {
            b->tape_max = SMALL_TAPE;
        } else if (tl >= 2 && s[1] == '=') {
            const char *v = s + 2;
            size_t vl = tl - 2;
            switch (s[0]) {
            case 'g':
                if (b->conf.group == NULL)
                    b->conf.group = cfg_str(v, vl);
                break;
            case 't':
                if (b->conf.target == NULL)
                    b->conf.target = cfg_str(v, vl);
                break;
            case 'a':
                if (b->conf.num_allow == 0)
                    b->conf.num_allow = cfg_list(v, vl, b->allow);
                break;
            case 'd':
                if (b->conf.num_deny == 0)
                    b->conf.num_deny = cfg_list(v, vl, b->deny);
                break;
            case 'k':
                if (b->num_lookup == 0)
                    b->num_lookup = cfg_list(v, vl, b->lookup);
                break;
            case 'm':
                if (b->conf.num_mapping == 0) {
                    char *pairs[MAX_LIST];
                    size_t np = cfg_list(v, vl, pairs);
                    for (size_t i = 0; i < np; ++i) {
                        char *colon = strchr(pairs[i], ':');
                        if (colon != NULL) {
                            est_mapping_conf_t *m = &b->mapping[b->conf.num_mapping++];
                            *colon = '\0';
                            m->from = pairs[i];
                            CHECK((m->to = strdup(colon + 1)) != NULL);
                        } else {
                            free(pairs[i]);
                        }
                    }
                }
                break;
            }
        }
        if (sp == NULL)
            break;
        s += tl + 1;
        n -= tl + 1;
    }
}

static size_t parse_input(const char *in, size_t size, backend_t *bs)
{
    size_t num = 0;
    if (size < 2 || memcmp(in, "@@", 2) != 0) {
        memset(&bs[0], 0, sizeof(bs[0]));
        bs[0].body = in;
        bs[0].len = size;
        return 1;
    }
    size_t pos = 0;
    while (pos < size && num < MAX_BACKENDS) {
        backend_t *b = &bs[num++];
        memset(b, 0, sizeof(*b));
        b->conf.allow = b->allow;
        b->conf.deny = b->deny;
        b->conf.mapping = b->mapping;
        pos += 2; /* "@@" */
        const char *nl = memchr(in + pos, '\n', size - pos);
        size_t sl = nl != NULL ? (size_t)(nl - (in + pos)) : size - pos;
        parse_spec(b, in + pos, sl);
        pos += sl + (nl != NULL);
        size_t end = pos;
        while (end < size && !(in[end] == '\n' && end + 2 < size && in[end + 1] == '@' && in[end + 2] == '@'))
            ++end;
        b->body = in + pos;
        b->len = end - pos;
        pos = end + 1; /* past the '\n' before the next "@@" */
    }
    return num;
}

static void free_backend(backend_t *b)
{
    free(b->conf.group);
    free(b->conf.target);
    for (size_t i = 0; i < b->conf.num_allow; ++i)
        free(b->allow[i]);
    for (size_t i = 0; i < b->conf.num_deny; ++i)
        free(b->deny[i]);
    for (size_t i = 0; i < b->num_lookup; ++i)
        free(b->lookup[i]);
    for (size_t i = 0; i < b->conf.num_mapping; ++i) {
        free(b->mapping[i].from);
        free(b->mapping[i].to);
    }
}

/* ---- the texts of numbers and strings ------------------------------------------------------- */

typedef struct {
    const char *p;
    size_t n;
} span_t;

typedef struct {
    span_t *v;
    size_t n, cap;
} spans_t;

static void spans_add(spans_t *s, const char *p, size_t n)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        CHECK((s->v = realloc(s->v, s->cap * sizeof(*s->v))) != NULL);
    }
    s->v[s->n++] = (span_t){p, n};
}

static int span_cmp(const void *a, const void *b)
{
    const span_t *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->p, y->p, n);
    return c != 0 ? c : x->n < y->n ? -1 : x->n > y->n;
}

/* calls fn on every number and string (keys included) of a document, without recursion */
static void each_scalar(const jspan_doc_t *doc, void (*fn)(const jspan_doc_t *, size_t, void *), void *arg)
{
    spans_t st = {0}; /* a stack of tape indices, in span_t.n */
    spans_add(&st, NULL, JSPAN_ROOT);
    while (st.n != 0) {
        size_t v = st.v[--st.n].n;
        jspan_type_t t = jspan_type(doc, v);
        if (t == JSPAN_NUMBER || t == JSPAN_STRING)
            fn(doc, v, arg);
        for (size_t c = jspan_child(doc, v); c != JSPAN_NONE; c = jspan_next(doc, c))
            spans_add(&st, NULL, c);
    }
    free(st.v);
}

typedef struct {
    spans_t nums, strs;
} texts_t;

static void collect_one(const jspan_doc_t *doc, size_t v, void *arg)
{
    texts_t *t = arg;
    size_t l;
    const char *r = jspan_raw(doc, v, &l);
    spans_add(jspan_type(doc, v) == JSPAN_NUMBER ? &t->nums : &t->strs, r, l);
}

/* ---- the reference model (jansson) ---------------------------------------------------------- */

static size_t seg_len(const char *p)
{
    const char *d = strchr(p, '.');
    return d != NULL ? (size_t)(d - p) : strlen(p);
}

/* key equals path segment p[0..n) (jansson keys hold no NUL here: such replies have no model) */
static int key_is(const char *key, const char *p, size_t n)
{
    return strlen(key) == n && memcmp(key, p, n) == 0;
}

static json_t *ref_get(json_t *o, const char *p, size_t n)
{
    const char *key;
    json_t *val;
    json_object_foreach(o, key, val) {
        if (key_is(key, p, n))
            return val;
    }
    return NULL;
}

static json_t *ref_allow_array(json_t *arr, const char **paths, size_t np);

static json_t *ref_allow_object(json_t *obj, const char **paths, size_t np)
{
    json_t *out = json_object();
    const char *key;
    json_t *val;
    CHECK(out != NULL);
    json_object_foreach(obj, key, val) {
        const char *next[MAX_LIST];
        size_t nn = 0;
        int whole = 0;
        for (size_t j = 0; j < np; ++j) {
            size_t sl = seg_len(paths[j]);
            if (!key_is(key, paths[j], sl))
                continue;
            if (paths[j][sl] == '\0') {
                whole = 1;
                break;
            }
            next[nn++] = paths[j] + sl + 1;
        }
        json_t *kept = NULL;
        if (whole) {
            kept = json_incref(val);
        } else if (nn != 0 && json_is_object(val)) {
            kept = ref_allow_object(val, next, nn);
            if (json_object_size(kept) == 0) {
                json_decref(kept);
                kept = NULL;
            }
        } else if (nn != 0 && json_is_array(val)) {
            kept = ref_allow_array(val, next, nn);
        }
        if (kept != NULL)
            CHECK(json_object_set_new(out, key, kept) == 0);
    }
    return out;
}

static json_t *ref_allow_array(json_t *arr, const char **paths, size_t np)
{
    json_t *out = json_array();
    CHECK(out != NULL);
    for (size_t i = 0; i < json_array_size(arr); ++i) {
        json_t *el = json_array_get(arr, i);
        CHECK(json_array_append_new(out, json_is_object(el) ? ref_allow_object(el, paths, np) : json_incref(el)) == 0);
    }
    return out;
}

/* deep copies on the way down: values may be shared with the reply's other parts */
static json_t *ref_deny(json_t *v, const char *path);

static json_t *ref_deny_object(json_t *o, const char *path)
{
    size_t sl = seg_len(path);
    json_t *val = ref_get(o, path, sl);
    if (val == NULL)
        return json_incref(o);
    json_t *out = json_copy(o);
    char *key = strndup(path, sl);
    CHECK(out != NULL && key != NULL);
    if (path[sl] == '\0')
        CHECK(json_object_del(out, key) == 0);
    else
        CHECK(json_object_set_new(out, key, ref_deny(val, path + sl + 1)) == 0);
    free(key);
    return out;
}

static json_t *ref_deny(json_t *v, const char *path)
{
    if (json_is_object(v))
        return ref_deny_object(v, path);
    if (!json_is_array(v))
        return json_incref(v);
    json_t *out = json_array();
    CHECK(out != NULL);
    for (size_t i = 0; i < json_array_size(v); ++i) {
        json_t *el = json_array_get(v, i);
        CHECK(json_array_append_new(out, json_is_object(el) ? ref_deny_object(el, path) : json_incref(el)) == 0);
    }
    return out;
}

static json_t *ref_map_object(json_t *o, const est_mapping_conf_t *map, size_t nm)
{
    json_t *out = json_copy(o), *vals[MAX_LIST];
    CHECK(out != NULL);
    for (size_t i = 0; i < nm; ++i)
        vals[i] = json_object_get(o, map[i].from);
    for (size_t i = 0; i < nm; ++i)
        if (vals[i] != NULL)
            json_object_del(out, map[i].from);
    for (size_t i = 0; i < nm; ++i)
        if (vals[i] != NULL)
            CHECK(json_object_set(out, map[i].to, vals[i]) == 0);
    return out;
}

static json_t *ref_map(json_t *v, const est_mapping_conf_t *map, size_t nm)
{
    if (json_is_object(v))
        return ref_map_object(v, map, nm);
    if (!json_is_array(v))
        return json_incref(v);
    json_t *out = json_array();
    CHECK(out != NULL);
    for (size_t i = 0; i < json_array_size(v); ++i) {
        json_t *el = json_array_get(v, i);
        CHECK(json_array_append_new(out, json_is_object(el) ? ref_map_object(el, map, nm) : json_incref(el)) == 0);
    }
    return out;
}

/* the transformed value of reply j (a new reference), NULL when the target is missing or
 * crosses a non-object */
static json_t *ref_transform(json_t *j, const est_backend_conf_t *c)
{
    json_t *v = j;
    if (c->target != NULL) {
        const char *p = c->target;
        for (;;) {
            size_t sl = seg_len(p);
            if (!json_is_object(v) || (v = ref_get(v, p, sl)) == NULL)
                return NULL;
            if (p[sl] == '\0')
                break;
            p += sl + 1;
        }
    }
    v = json_incref(v);
    if (c->num_allow != 0 && (json_is_object(v) || json_is_array(v))) {
        json_t *n = json_is_object(v) ? ref_allow_object(v, (const char **)c->allow, c->num_allow)
                                      : ref_allow_array(v, (const char **)c->allow, c->num_allow);
        json_decref(v);
        v = n;
    }
    for (size_t i = 0; i < c->num_deny; ++i) {
        json_t *n = ref_deny(v, c->deny[i]);
        json_decref(v);
        v = n;
    }
    if (c->num_mapping != 0) {
        json_t *n = ref_map(v, c->mapping, c->num_mapping);
        json_decref(v);
        v = n;
    }
    return v;
}

/* the model's est_reply_lookup: the string or number at dot path `path` of v, or NULL (as
 * there, a path ending in '.' is read without its last, empty, segment: config paths never
 * hold an empty segment) */
static json_t *ref_lookup(json_t *v, const char *path)
{
    while (*path != '\0') {
        size_t sl = seg_len(path);
        if (!json_is_object(v) || (v = ref_get(v, path, sl)) == NULL)
            return NULL;
        path += sl + (path[sl] == '.');
    }
    return json_is_string(v) || json_is_number(v) ? v : NULL;
}

/* adds v to the model's document; 0, or -1: scalar without group (the backend failed) */
static int ref_add(json_t *doc, const est_backend_conf_t *c, json_t *v)
{
    if (c->group != NULL)
        CHECK(json_object_set(doc, c->group, v) == 0);
    else if (json_is_object(v))
        CHECK(json_object_update(doc, v) == 0);
    else if (!json_is_array(v))
        return -1;
    else {
        json_t *coll = json_object_get(doc, "collection");
        if (json_is_array(coll)) {
            json_t *cat = json_array();
            CHECK(cat != NULL && json_array_extend(cat, coll) == 0 && json_array_extend(cat, v) == 0);
            CHECK(json_object_set_new(doc, "collection", cat) == 0);
        } else {
            CHECK(json_object_set(doc, "collection", v) == 0);
        }
    }
    return 0;
}

typedef struct {
    const texts_t *texts;
    const backend_t *bs;
    size_t nb;
} out_check_t;

/* a number of the body is the text of a number of a reply; a string the text of a string of a
 * reply, or a config string (written by the merge, so compared by value) */
static void check_one(const jspan_doc_t *od, size_t v, void *arg)
{
    const out_check_t *oc = arg;
    int num = jspan_type(od, v) == JSPAN_NUMBER;
    const spans_t *set = num ? &oc->texts->nums : &oc->texts->strs;
    span_t s;
    s.p = jspan_raw(od, v, &s.n);
    if (set->n != 0 && bsearch(&s, set->v, set->n, sizeof(span_t), span_cmp) != NULL)
        return;
    CHECK(!num);
    int cfg = jspan_str_equals(od, v, "collection", 10);
    for (size_t i = 0; i < oc->nb && !cfg; ++i) {
        const est_backend_conf_t *c = &oc->bs[i].conf;
        cfg = c->group != NULL && jspan_str_equals(od, v, c->group, strlen(c->group));
        for (size_t k = 0; k < c->num_mapping && !cfg; ++k)
            cfg = jspan_str_equals(od, v, c->mapping[k].to, strlen(c->mapping[k].to));
    }
    CHECK(cfg);
}

/* ---- the driver ----------------------------------------------------------------------------- */

static int is_ws_only(const char *p, size_t n)
{
    for (size_t i = 0; i < n; ++i)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\n' && p[i] != '\r')
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    backend_t bs[MAX_BACKENDS];
    est_reply_t reps[MAX_BACKENDS];
    jspan_doc_t full[MAX_BACKENDS];
    int full_ok[MAX_BACKENDS], failed[MAX_BACKENDS];
    json_t *refv[MAX_BACKENDS];
    size_t nb = parse_input((const char *)data, size, bs);
    int model = 1; /* jansson reads every reply: the model's document is compared */
    size_t cfg_bytes = 0, max_map = 0, in_bytes = 0;
    texts_t texts = {{0}, {0}};
    est_jarena_t arena;
    est_jarena_init(&arena);

    for (size_t i = 0; i < nb; ++i) {
        backend_t *b = &bs[i];
        est_reply_t *rep = &reps[i];
        const char *err = NULL;
        in_bytes += b->len;
        refv[i] = NULL;
        failed[i] = 0;

        /* the full index and the skip_array_scalars one agree */
        jspan_limits_t lim = {.max_depth = EST_REPLY_MAX_DEPTH};
        jspan_status_t fst = jspan_parse(&full[i], b->body, b->len, &lim);
        full_ok[i] = fst == JSPAN_OK;
        int r = est_reply_parse(rep, b->body, b->len, b->tape_max);
        if (is_ws_only(b->body, b->len)) {
            CHECK(r == 0 && !rep->parsed);
        } else if (!full_ok[i]) {
            /* a small index bound may be hit before the error is reached: failed either way */
            CHECK((r == EST_REPLY_INVALID || (r == EST_REPLY_TOO_LARGE && b->tape_max != 0)) && !rep->parsed);
            CHECK(fst != JSPAN_ERR_LIMIT && fst != JSPAN_ERR_NOMEM);
            if (r == EST_REPLY_INVALID)
                CHECK(rep->doc.err_offset == full[i].err_offset);
        } else {
            CHECK(r == 0 || (r == EST_REPLY_TOO_LARGE && b->tape_max != 0));
            if (r == 0) {
                CHECK(rep->parsed);
                jspan_same_index(&full[i], JSPAN_ROOT, &rep->doc, JSPAN_ROOT);
                CHECK(jspan_tape_bytes(&rep->doc) <= jspan_tape_bytes(&full[i]));
                CHECK(b->tape_max == 0 || jspan_tape_bytes(&rep->doc) <= b->tape_max);
            }
            each_scalar(&full[i], collect_one, &texts);
        }

        /* jansson's reading of the reply, for the model */
        json_error_t jerr;
        json_t *j = NULL;
        if (r == 0 && rep->parsed && (j = json_loadb(b->body, b->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr)) == NULL)
            model = 0; /* a number jansson cannot hold, or U+0000 in a key */

        if (r != 0) {
            failed[i] = 1; /* invalid_json / reply_too_large */
        } else {
            est_jarena_mark_t mark;
            est_jarena_mark(&arena, &mark);
            if (est_reply_transform(rep, &b->conf, &arena, &err) != 0) {
                CHECK(err == est_aggregate_err_target_missing || err == est_aggregate_err_target_not_object);
                est_jarena_rollback(&arena, &mark);
                failed[i] = 1;
                if (j != NULL)
                    CHECK(ref_transform(j, &b->conf) == NULL);
            } else if (j != NULL) {
                CHECK((refv[i] = ref_transform(j, &b->conf)) != NULL);
            }
            /* what a dependent backend reads ({GROUP.path}), before the merge as in fanout.c */
            for (size_t k = 0; k < b->num_lookup && !failed[i]; ++k) {
                size_t v = est_reply_lookup(rep, b->lookup[k], strlen(b->lookup[k]));
                if (v != JSPAN_NONE) {
                    jspan_type_t t = jspan_type(&rep->doc, v);
                    CHECK(t == JSPAN_STRING || t == JSPAN_NUMBER);
                }
                if (refv[i] == NULL)
                    continue;
                json_t *want = ref_lookup(refv[i], b->lookup[k]);
                CHECK((v == JSPAN_NONE) == (want == NULL));
                if (want != NULL) {
                    size_t l;
                    const char *raw = jspan_raw(&rep->doc, v, &l);
                    json_error_t jerr;
                    json_t *got = json_loadb(raw, l, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
                    CHECK(got != NULL && json_equal(got, want));
                    json_decref(got);
                }
            }
        }
        json_decref(j);

        cfg_bytes += 6 * (b->conf.group ? strlen(b->conf.group) : 0) + 16; /* \u00XX escapes */
        for (size_t k = 0; k < b->conf.num_mapping; ++k)
            cfg_bytes += 6 * strlen(b->mapping[k].to) + 16;
        if (b->conf.num_mapping > max_map)
            max_map = b->conf.num_mapping;
    }

    /* merge in config order, as fanout.c respond() */
    est_merge_t m;
    json_t *ref = json_object();
    CHECK(ref != NULL);
    est_merge_init(&m, &arena);
    for (size_t i = 0; i < nb; ++i) {
        const char *err = NULL;
        if (failed[i])
            continue;
        int r = est_merge_add(&m, &bs[i].conf, &reps[i], &err);
        if (r != 0)
            CHECK(err == est_aggregate_err_scalar_without_group);
        if (reps[i].value == NULL) {
            CHECK(r == 0); /* an empty body contributes nothing */
        } else if (model) {
            CHECK(refv[i] != NULL);
            CHECK(ref_add(ref, &bs[i].conf, refv[i]) == r);
        }
    }
    CHECK(arena.bytes <= ARENA_BASE + ARENA_PER_BYTE * in_bytes);

    jspan_buf_t out = {.max = 1 << 20};
    CHECK(est_merge_write(&m, &out) == 0);
    CHECK(out.len <= 2 + (1 + max_map) * in_bytes + cfg_bytes + 32);

    /* the body is strict JSON, its numbers and strings texts of the replies or the config */
    jspan_doc_t od;
    jspan_limits_t lim = {.max_depth = EST_REPLY_MAX_DEPTH};
    CHECK(jspan_parse(&od, out.data, out.len, &lim) == JSPAN_OK);
    CHECK(!od.has_ws);
    CHECK(jspan_type(&od, JSPAN_ROOT) == JSPAN_OBJECT);
    if (texts.nums.n != 0)
        qsort(texts.nums.v, texts.nums.n, sizeof(span_t), span_cmp);
    if (texts.strs.n != 0)
        qsort(texts.strs.v, texts.strs.n, sizeof(span_t), span_cmp);
    out_check_t oc = {&texts, bs, nb};
    each_scalar(&od, check_one, &oc);
    jspan_dispose(&od);

    if (model) {
        json_error_t jerr;
        json_t *got = json_loadb(out.data, out.len, JSON_ALLOW_NUL, &jerr);
        CHECK(got != NULL && json_equal(got, ref));
        /* and the keys in the same order (jansson keeps insertion order, and a set of an
         * existing key keeps its position, as SPEC's merge rules do) */
        char *gt = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY), *rt = json_dumps(ref, JSON_COMPACT | JSON_ENCODE_ANY);
        CHECK(gt != NULL && rt != NULL && strcmp(gt, rt) == 0);
        free(gt);
        free(rt);
        json_decref(got);
    }

    /* the bound of the body: one byte short fails, cleanly */
    if (out.len > 0) {
        jspan_buf_t small = {.max = out.len - 1};
        CHECK(est_merge_write(&m, &small) == -1);
        CHECK(small.len <= small.max);
        jspan_buf_dispose(&small);
        jspan_buf_t exact = {.max = out.len};
        CHECK(est_merge_write(&m, &exact) == 0 && exact.len == out.len && memcmp(exact.data, out.data, out.len) == 0);
        jspan_buf_dispose(&exact);
    }

    jspan_buf_dispose(&out);
    est_merge_dispose(&m);
    json_decref(ref);
    for (size_t i = 0; i < nb; ++i) {
        json_decref(refv[i]);
        est_reply_dispose(&reps[i]);
        if (full_ok[i])
            jspan_dispose(&full[i]);
        free_backend(&bs[i]);
    }
    free(texts.nums.v);
    free(texts.strs.v);
    est_jarena_dispose(&arena);
    return 0;
}
