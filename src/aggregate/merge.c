/*
 * estuary - transform and merge backend replies as spans (see merge.h).
 *
 * A node is one of:
 * - RAW: a whole value of a reply (tape index); written as its text, compacted, except that
 *   objects holding a key twice are written member by member (last value, first position);
 * - OBJ: an object built by a transform or the merge: members (key, node), a key being either a
 *   string of a reply (written as its text) or a config string (escaped when written);
 * - ARR: an array of a reply whose container elements may be replaced (allow/deny/mapping on
 *   arrays): the text between replaced elements is copied as it is, so scalar elements are
 *   never looked at (jspan skips them: skip_array_scalars);
 * - CAT: the top-level "collection" made of several arrays, written one after the other.
 * Nodes live in the fan-out's arena; nothing is freed one by one.
 *
 * Cost: parse O(reply), transforms O(members touched x config paths), write O(output). Objects
 * get a hash index of their keys once they are large, so merging or deduplicating big objects
 * stays linear.
 */
#include <stdlib.h>
#include <string.h>
#include "aggregate/merge.h"

const char est_aggregate_err_target_missing[] = "target path missing";
const char est_aggregate_err_target_not_object[] = "target path through a non-object";
const char est_aggregate_err_scalar_without_group[] = "scalar reply without group";
const char est_aggregate_err_no_memory[] = "out of memory";

#define COLLECTION_KEY "collection"
/* objects with more members than this get a hash index */
#define INDEX_AFTER 16

/* ---- arena ---------------------------------------------------------------------------------- */

struct est_jchunk {
    struct est_jchunk *next;
    size_t used, cap;
    _Alignas(16) char data[];
};

void est_jarena_init(est_jarena_t *a)
{
    a->_chunks = NULL;
    a->bytes = 0;
}

void *est_jarena_alloc(est_jarena_t *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    struct est_jchunk *c = a->_chunks;
    if (c == NULL || c->cap - c->used < size) {
        size_t cap = c == NULL ? 4096 - sizeof(*c) : c->cap * 2;
        if (cap > 1024 * 1024)
            cap = 1024 * 1024;
        if (cap < size)
            cap = size;
        if (cap > SIZE_MAX - sizeof(*c) || (c = malloc(sizeof(*c) + cap)) == NULL)
            return NULL;
        c->next = a->_chunks;
        c->used = 0;
        c->cap = cap;
        a->_chunks = c;
        a->bytes += sizeof(*c) + cap;
    }
    void *p = c->data + c->used;
    c->used += size;
    return p;
}

void est_jarena_mark(const est_jarena_t *a, est_jarena_mark_t *m)
{
    m->_chunk = a->_chunks;
    m->_used = a->_chunks != NULL ? a->_chunks->used : 0;
    m->_bytes = a->bytes;
}

void est_jarena_rollback(est_jarena_t *a, const est_jarena_mark_t *m)
{
    while (a->_chunks != m->_chunk) {
        struct est_jchunk *c = a->_chunks;
        a->_chunks = c->next;
        free(c);
    }
    if (a->_chunks != NULL)
        a->_chunks->used = m->_used;
    a->bytes = m->_bytes;
}

void est_jarena_dispose(est_jarena_t *a)
{
    while (a->_chunks != NULL) {
        struct est_jchunk *c = a->_chunks;
        a->_chunks = c->next;
        free(c);
    }
    a->bytes = 0;
}

/* ---- nodes ---------------------------------------------------------------------------------- */

enum { VN_RAW, VN_OBJ, VN_ARR, VN_CAT };

typedef struct {
    const jspan_doc_t *doc; /* NULL: `str` is a config string (its value, unescaped) */
    size_t idx;
    const char *str;
    size_t len;
} vkey_t;

typedef struct {
    vkey_t key;
    est_vnode_t *val;
} vmember_t;

struct est_vnode {
    int kind;
    const est_reply_t *rep; /* RAW, ARR */
    size_t idx;             /* RAW, ARR: the value's tape index */
    size_t n, cap;
    vmember_t *m;        /* OBJ */
    size_t *hidx, hcap;  /* OBJ: open-addressing index of m (positions), NULL when absent */
    size_t *child;       /* ARR: tape indices of the container elements */
    est_vnode_t **repl;  /* ARR: replacement of each (NULL: as it is) */
    est_vnode_t **parts; /* CAT */
};

static est_vnode_t *node_new(est_jarena_t *a, int kind)
{
    est_vnode_t *v = est_jarena_alloc(a, sizeof(*v));
    if (v != NULL) {
        memset(v, 0, sizeof(*v));
        v->kind = kind;
    }
    return v;
}

static est_vnode_t *node_raw(est_jarena_t *a, const est_reply_t *rep, size_t idx)
{
    est_vnode_t *v = node_new(a, VN_RAW);
    if (v != NULL) {
        v->rep = rep;
        v->idx = idx;
    }
    return v;
}

/* JSPAN_OBJECT / JSPAN_ARRAY for the containers (any kind), the scalar's type otherwise */
static jspan_type_t node_type(const est_vnode_t *v)
{
    switch (v->kind) {
    case VN_OBJ:
        return JSPAN_OBJECT;
    case VN_ARR:
    case VN_CAT:
        return JSPAN_ARRAY;
    default:
        return jspan_type(&v->rep->doc, v->idx);
    }
}

static vkey_t key_doc(const jspan_doc_t *doc, size_t idx)
{
    return (vkey_t){doc, idx, NULL, 0};
}

static vkey_t key_str(const char *s, size_t len)
{
    return (vkey_t){NULL, 0, s, len};
}

static int key_eq(const vkey_t *a, const vkey_t *b)
{
    if (a->doc == NULL && b->doc == NULL)
        return a->len == b->len && memcmp(a->str, b->str, a->len) == 0;
    if (a->doc == NULL)
        return jspan_str_equals(b->doc, b->idx, a->str, a->len);
    if (b->doc == NULL)
        return jspan_str_equals(a->doc, a->idx, b->str, b->len);
    return jspan_str_same(a->doc, a->idx, b->doc, b->idx);
}

static uint64_t key_hash(const vkey_t *k)
{
    return k->doc != NULL ? jspan_str_hash(k->doc, k->idx) : jspan_hash_bytes(k->str, k->len);
}

/* (re)builds o's index when it is large enough to need one; -1 when out of memory */
static int obj_index(est_jarena_t *a, est_vnode_t *o)
{
    size_t cap = 32;
    while (cap < o->n * 2 + 2)
        cap *= 2;
    size_t *h = est_jarena_alloc(a, cap * sizeof(*h));
    if (h == NULL)
        return -1;
    for (size_t i = 0; i < cap; ++i)
        h[i] = SIZE_MAX;
    for (size_t i = 0; i < o->n; ++i) {
        size_t s = (size_t)key_hash(&o->m[i].key) & (cap - 1);
        while (h[s] != SIZE_MAX)
            s = (s + 1) & (cap - 1);
        h[s] = i;
    }
    o->hidx = h;
    o->hcap = cap;
    return 0;
}

/* position of key k in object o, SIZE_MAX when absent */
static size_t obj_find(est_jarena_t *a, est_vnode_t *o, const vkey_t *k)
{
    if (o->n > INDEX_AFTER && o->hidx == NULL)
        obj_index(a, o); /* out of memory: the linear walk below still answers */
    if (o->hidx == NULL) {
        for (size_t i = 0; i < o->n; ++i)
            if (key_eq(&o->m[i].key, k))
                return i;
        return SIZE_MAX;
    }
    for (size_t s = (size_t)key_hash(k) & (o->hcap - 1); o->hidx[s] != SIZE_MAX; s = (s + 1) & (o->hcap - 1))
        if (key_eq(&o->m[o->hidx[s]].key, k))
            return o->hidx[s];
    return SIZE_MAX;
}

/* sets key k to val: an existing key keeps its position, a new one goes last. -1: no memory */
static int obj_set(est_jarena_t *a, est_vnode_t *o, const vkey_t *k, est_vnode_t *val)
{
    size_t i = obj_find(a, o, k);
    if (i != SIZE_MAX) {
        o->m[i].val = val;
        return 0;
    }
    if (o->n == o->cap) {
        size_t cap = o->cap < 8 ? 8 : o->cap * 2;
        vmember_t *m = est_jarena_alloc(a, cap * sizeof(*m));
        if (m == NULL)
            return -1;
        if (o->n != 0)
            memcpy(m, o->m, o->n * sizeof(*m));
        o->m = m;
        o->cap = cap;
    }
    o->m[o->n].key = *k;
    o->m[o->n].val = val;
    ++o->n;
    if (o->hidx != NULL) {
        if (o->n * 2 + 2 > o->hcap) {
            if (obj_index(a, o) != 0)
                o->hidx = NULL; /* out of memory: lookups walk the members */
            return 0;
        }
        size_t s = (size_t)key_hash(k) & (o->hcap - 1);
        while (o->hidx[s] != SIZE_MAX)
            s = (s + 1) & (o->hcap - 1);
        o->hidx[s] = o->n - 1;
    }
    return 0;
}

static void obj_del(est_vnode_t *o, size_t i)
{
    memmove(o->m + i, o->m + i + 1, (o->n - i - 1) * sizeof(*o->m));
    --o->n;
    o->hidx = NULL; /* positions moved: rebuilt on the next lookup */
}

/* the position of the first entry of rep->dups (sorted) that is >= v */
static size_t dups_lower_bound(const est_reply_t *rep, size_t v)
{
    size_t lo = 0, hi = rep->num_dups;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (rep->dups[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int is_dup_object(const est_reply_t *rep, size_t obj)
{
    size_t i = dups_lower_bound(rep, obj);
    return i < rep->num_dups && rep->dups[i] == obj;
}

/* whether an object holding a key twice is v or nested in v */
static int has_dups_within(const est_reply_t *rep, size_t v)
{
    if (rep->num_dups == 0)
        return 0;
    size_t i = dups_lower_bound(rep, v);
    return i < rep->num_dups && rep->dups[i] <= jspan_end(&rep->doc, v);
}

/* An OBJ with the members of RAW object `obj` (each key once: last value, first position),
 * room for `extra` more */
static est_vnode_t *obj_expand(est_jarena_t *a, const est_reply_t *rep, size_t obj, size_t extra)
{
    const jspan_doc_t *doc = &rep->doc;
    est_vnode_t *o = node_new(a, VN_OBJ);
    if (o == NULL)
        return NULL;
    o->cap = jspan_count(doc, obj) + extra;
    if (o->cap != 0 && (o->m = est_jarena_alloc(a, o->cap * sizeof(*o->m))) == NULL)
        return NULL;
    int dup = is_dup_object(rep, obj);
    for (size_t k = jspan_child(doc, obj); k != JSPAN_NONE; k = jspan_next(doc, k + 1)) {
        est_vnode_t *val = node_raw(a, rep, k + 1);
        if (val == NULL)
            return NULL;
        if (dup) {
            vkey_t key = key_doc(doc, k);
            if (obj_set(a, o, &key, val) != 0)
                return NULL;
        } else {
            o->m[o->n].key = key_doc(doc, k);
            o->m[o->n].val = val;
            ++o->n;
        }
    }
    return o;
}

/* An ARR over RAW array `arr`: its container elements, none replaced yet */
static est_vnode_t *arr_expand(est_jarena_t *a, const est_reply_t *rep, size_t arr)
{
    const jspan_doc_t *doc = &rep->doc;
    est_vnode_t *v = node_new(a, VN_ARR);
    if (v == NULL)
        return NULL;
    v->rep = rep;
    v->idx = arr;
    size_t n = 0;
    for (size_t c = jspan_child(doc, arr); c != JSPAN_NONE; c = jspan_next(doc, c))
        ++n;
    if (n != 0) {
        if ((v->child = est_jarena_alloc(a, n * sizeof(*v->child))) == NULL ||
            (v->repl = est_jarena_alloc(a, n * sizeof(*v->repl))) == NULL)
            return NULL;
        for (size_t c = jspan_child(doc, arr); c != JSPAN_NONE; c = jspan_next(doc, c)) {
            v->child[v->n] = c;
            v->repl[v->n++] = NULL;
        }
    }
    return v;
}

/* ---- parse ---------------------------------------------------------------------------------- */

int est_reply_parse(est_reply_t *rep, const char *buf, size_t len, size_t max_tape_bytes)
{
    memset(rep, 0, sizeof(*rep));
    size_t i = 0;
    while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r'))
        ++i;
    if (i == len)
        return 0; /* contributes nothing */
    jspan_limits_t lim = {.max_depth = EST_REPLY_MAX_DEPTH, .max_tape_bytes = max_tape_bytes, .skip_array_scalars = 1};
    jspan_status_t st = jspan_parse(&rep->doc, buf, len, &lim);
    if (st != JSPAN_OK)
        return st == JSPAN_ERR_NOMEM                          ? EST_REPLY_NOMEM
               : st == JSPAN_ERR_LIMIT && max_tape_bytes != 0 ? EST_REPLY_TOO_LARGE
                                                              : EST_REPLY_INVALID;
    rep->parsed = 1;
    if (jspan_find_dup_objects(&rep->doc, &rep->dups, &rep->num_dups) != 0)
        return EST_REPLY_NOMEM;
    return 0;
}

size_t est_reply_bytes(const est_reply_t *rep)
{
    return (rep->parsed ? jspan_tape_bytes(&rep->doc) : 0) + rep->num_dups * sizeof(size_t);
}

void est_reply_dispose(est_reply_t *rep)
{
    if (rep->parsed)
        jspan_dispose(&rep->doc);
    rep->parsed = 0;
    free(rep->dups);
    rep->dups = NULL;
    rep->num_dups = 0;
    rep->value = NULL;
}

/* ---- transforms ----------------------------------------------------------------------------- */

/* A dot path split as "first segment" + "the rest" */
typedef struct st_path_t {
    const char *seg;
    size_t seg_len;
    const char *rest; /* NULL when `seg` is the last segment */
    size_t rest_len;
} path_t;

static void path_split(path_t *p, const char *s, size_t len)
{
    const char *dot = memchr(s, '.', len);
    p->seg = s;
    if (dot == NULL) {
        p->seg_len = len;
        p->rest = NULL;
        p->rest_len = 0;
    } else {
        p->seg_len = (size_t)(dot - s);
        p->rest = dot + 1;
        p->rest_len = len - p->seg_len - 1;
    }
}

typedef struct st_tctx_t {
    est_jarena_t *a;
    const est_reply_t *rep;
    path_t *scratch; /* allow: (depth + 1) slices of `width` entries; level n uses slice n */
    size_t width;
} tctx_t;

static int apply_target(const est_reply_t *rep, const char *target, size_t *out, const char **err)
{
    path_t p;
    size_t cur = JSPAN_ROOT;
    const char *s = target;
    size_t len = strlen(target);
    for (;;) {
        path_split(&p, s, len);
        if (jspan_type(&rep->doc, cur) != JSPAN_OBJECT) {
            *err = est_aggregate_err_target_not_object;
            return -1;
        }
        if ((cur = jspan_object_get(&rep->doc, cur, p.seg, p.seg_len)) == JSPAN_NONE) {
            *err = est_aggregate_err_target_missing;
            return -1;
        }
        if (p.rest == NULL)
            break;
        s = p.rest;
        len = p.rest_len;
    }
    *out = cur;
    return 0;
}

static est_vnode_t *allow_array(tctx_t *ctx, size_t arr, const path_t *cur, size_t nc, size_t level);

/*
 * allow on RAW object `obj`: `cur` holds the paths still to match at this level (each split
 * into first segment and rest). Members are visited in the object's own order: a path ending
 * at one keeps it whole; paths going through it are matched one level down. Returns a new OBJ
 * (possibly empty), NULL when out of memory.
 */
static est_vnode_t *allow_object(tctx_t *ctx, size_t obj, const path_t *cur, size_t nc, size_t level)
{
    const jspan_doc_t *doc = &ctx->rep->doc;
    path_t *next = ctx->scratch + (level + 1) * ctx->width;
    est_vnode_t *all = obj_expand(ctx->a, ctx->rep, obj, 0), *out = node_new(ctx->a, VN_OBJ);
    if (all == NULL || out == NULL)
        return NULL;
    out->m = all->m; /* filtered in place: kept members only move down */
    out->cap = all->cap;
    for (size_t i = 0; i < all->n; ++i) {
        const vkey_t *key = &all->m[i].key;
        size_t klen;
        const char *kraw = jspan_str_raw(doc, key->idx, &klen);
        int esc = jspan_str_has_escapes(doc, key->idx);
        int whole = 0;
        size_t nn = 0;
        for (size_t j = 0; j < nc; ++j) {
            if (esc ? !jspan_str_equals(doc, key->idx, cur[j].seg, cur[j].seg_len)
                    : cur[j].seg_len != klen || memcmp(cur[j].seg, kraw, klen) != 0)
                continue;
            if (cur[j].rest == NULL) {
                whole = 1;
                break;
            }
            path_split(next + nn++, cur[j].rest, cur[j].rest_len);
        }
        est_vnode_t *kept = NULL, *val = all->m[i].val;
        if (whole) {
            kept = val;
        } else if (nn != 0) {
            jspan_type_t t = jspan_type(doc, val->idx);
            if (t == JSPAN_OBJECT) {
                if ((kept = allow_object(ctx, val->idx, next, nn, level + 1)) == NULL)
                    return NULL;
                if (kept->n == 0) /* nothing listed exists below: drop the parent */
                    kept = NULL;
            } else if (t == JSPAN_ARRAY) {
                if ((kept = allow_array(ctx, val->idx, next, nn, level + 1)) == NULL)
                    return NULL;
            }
        }
        if (kept != NULL) {
            out->m[out->n].key = *key;
            out->m[out->n].val = kept;
            ++out->n;
        }
    }
    return out;
}

/* allow on RAW array `arr`: each object element replaced by its filtered copy (even when empty,
 * so positions hold); other elements stay. NULL when out of memory. */
static est_vnode_t *allow_array(tctx_t *ctx, size_t arr, const path_t *cur, size_t nc, size_t level)
{
    est_vnode_t *v = arr_expand(ctx->a, ctx->rep, arr);
    if (v == NULL)
        return NULL;
    for (size_t i = 0; i < v->n; ++i)
        if (jspan_type(&ctx->rep->doc, v->child[i]) == JSPAN_OBJECT &&
            (v->repl[i] = allow_object(ctx, v->child[i], cur, nc, level)) == NULL)
            return NULL;
    return v;
}

static int apply_allow(tctx_t *ctx, est_vnode_t **body, char *const *allow, size_t num_allow)
{
    path_t small[32];
    size_t depth = 1;
    int ret = -1;
    est_vnode_t *v = *body; /* RAW: allow is the first transform after target */
    jspan_type_t t = jspan_type(&ctx->rep->doc, v->idx);

    if (t != JSPAN_OBJECT && t != JSPAN_ARRAY)
        return 0;
    /* one slice per path level: the deepest path has `depth` segments */
    for (size_t i = 0; i < num_allow; ++i) {
        size_t segs = 1;
        for (const char *s = allow[i]; *s != '\0'; ++s)
            segs += *s == '.';
        if (segs > depth)
            depth = segs;
    }
    ctx->width = num_allow;
    ctx->scratch = small;
    if ((depth + 1) > SIZE_MAX / sizeof(path_t) / num_allow)
        return -1;
    if ((depth + 1) * num_allow > sizeof(small) / sizeof(small[0]) &&
        (ctx->scratch = malloc((depth + 1) * num_allow * sizeof(path_t))) == NULL)
        return -1;
    for (size_t i = 0; i < num_allow; ++i)
        path_split(ctx->scratch + i, allow[i], strlen(allow[i]));
    est_vnode_t *out = t == JSPAN_OBJECT ? allow_object(ctx, v->idx, ctx->scratch, num_allow, 0)
                                         : allow_array(ctx, v->idx, ctx->scratch, num_allow, 0);
    if (out != NULL) {
        *body = out;
        ret = 0;
    }
    if (ctx->scratch != small)
        free(ctx->scratch);
    ctx->scratch = NULL;
    return ret;
}

static int deny_in_object(tctx_t *ctx, est_vnode_t **slot, const char *path, size_t len);

/* deny on any node: on an object removes `path`; on an array, from each object element */
static int deny_in(tctx_t *ctx, est_vnode_t **slot, const char *path, size_t len)
{
    est_vnode_t *v = *slot;
    jspan_type_t t = node_type(v);
    if (t == JSPAN_OBJECT)
        return deny_in_object(ctx, slot, path, len);
    if (t != JSPAN_ARRAY || v->kind == VN_CAT)
        return 0;
    if (v->kind == VN_RAW) {
        if (jspan_child(&v->rep->doc, v->idx) == JSPAN_NONE) /* no container element */
            return 0;
        if ((v = *slot = arr_expand(ctx->a, v->rep, v->idx)) == NULL)
            return -1;
    }
    for (size_t i = 0; i < v->n; ++i) {
        est_vnode_t tmp = {.kind = VN_RAW, .rep = v->rep, .idx = v->child[i]}, *el = v->repl[i] != NULL ? v->repl[i] : &tmp;
        if (node_type(el) != JSPAN_OBJECT)
            continue;
        if (deny_in_object(ctx, &el, path, len) != 0)
            return -1;
        if (el != &tmp)
            v->repl[i] = el;
    }
    return 0;
}

static int deny_in_object(tctx_t *ctx, est_vnode_t **slot, const char *path, size_t len)
{
    path_t p;
    est_vnode_t *o = *slot;
    path_split(&p, path, len);
    if (o->kind == VN_RAW) {
        if (jspan_object_get(&o->rep->doc, o->idx, p.seg, p.seg_len) == JSPAN_NONE)
            return 0; /* nothing to remove: no copy */
        if ((o = *slot = obj_expand(ctx->a, o->rep, o->idx, 0)) == NULL)
            return -1;
    }
    vkey_t k = key_str(p.seg, p.seg_len);
    size_t i = obj_find(ctx->a, o, &k);
    if (i == SIZE_MAX)
        return 0;
    if (p.rest == NULL) {
        obj_del(o, i);
        return 0;
    }
    return deny_in(ctx, &o->m[i].val, p.rest, p.rest_len);
}

/* Renames top-level keys of the object in *slot all at once; `tmp` has room for num_map nodes */
static int map_object(tctx_t *ctx, est_vnode_t **slot, const est_mapping_conf_t *map, size_t num_map, est_vnode_t **tmp)
{
    est_vnode_t *o = *slot;
    size_t i;
    if (o->kind == VN_RAW) {
        for (i = 0; i < num_map; ++i)
            if (jspan_object_get(&o->rep->doc, o->idx, map[i].from, strlen(map[i].from)) != JSPAN_NONE)
                break;
        if (i == num_map)
            return 0; /* nothing to rename: no copy */
        if ((o = *slot = obj_expand(ctx->a, o->rep, o->idx, num_map)) == NULL)
            return -1;
    }
    for (i = 0; i < num_map; ++i) {
        vkey_t k = key_str(map[i].from, strlen(map[i].from));
        size_t at = obj_find(ctx->a, o, &k);
        tmp[i] = at != SIZE_MAX ? o->m[at].val : NULL;
    }
    for (i = 0; i < num_map; ++i) {
        if (tmp[i] == NULL)
            continue;
        vkey_t k = key_str(map[i].from, strlen(map[i].from));
        size_t at = obj_find(ctx->a, o, &k);
        if (at != SIZE_MAX)
            obj_del(o, at);
    }
    for (i = 0; i < num_map; ++i) {
        vkey_t k = key_str(map[i].to, strlen(map[i].to));
        if (tmp[i] != NULL && obj_set(ctx->a, o, &k, tmp[i]) != 0)
            return -1;
    }
    return 0;
}

static int apply_mapping(tctx_t *ctx, est_vnode_t **body, const est_mapping_conf_t *map, size_t num_map)
{
    est_vnode_t *small[32], **tmp = small, *v = *body;
    int ret = 0;
    jspan_type_t t = node_type(v);

    if (t != JSPAN_OBJECT && t != JSPAN_ARRAY)
        return 0;
    if (num_map > sizeof(small) / sizeof(small[0]) && (tmp = malloc(num_map * sizeof(*tmp))) == NULL)
        return -1;
    if (t == JSPAN_OBJECT) {
        ret = map_object(ctx, body, map, num_map, tmp);
    } else if (v->kind != VN_RAW || jspan_child(&v->rep->doc, v->idx) != JSPAN_NONE) {
        if (v->kind == VN_RAW && (v = *body = arr_expand(ctx->a, v->rep, v->idx)) == NULL)
            ret = -1;
        for (size_t i = 0; ret == 0 && i < v->n; ++i) {
            est_vnode_t tmpn = {.kind = VN_RAW, .rep = v->rep, .idx = v->child[i]}, *el = v->repl[i] != NULL ? v->repl[i] : &tmpn;
            if (node_type(el) != JSPAN_OBJECT)
                continue;
            ret = map_object(ctx, &el, map, num_map, tmp);
            if (el != &tmpn)
                v->repl[i] = el;
        }
    }
    if (tmp != small)
        free(tmp);
    return ret;
}

int est_reply_transform(est_reply_t *rep, const est_backend_conf_t *b, est_jarena_t *a, const char **err)
{
    tctx_t ctx = {a, rep, NULL, 0};
    size_t root = JSPAN_ROOT;
    rep->value = NULL;
    if (!rep->parsed)
        return 0; /* an empty body contributes nothing */
    if (b->target != NULL && apply_target(rep, b->target, &root, err) != 0)
        return -1;
    est_vnode_t *v = node_raw(a, rep, root);
    if (v == NULL)
        goto NoMem;
    if (b->num_allow != 0 && apply_allow(&ctx, &v, b->allow, b->num_allow) != 0)
        goto NoMem;
    for (size_t i = 0; i < b->num_deny; ++i)
        if (deny_in(&ctx, &v, b->deny[i], strlen(b->deny[i])) != 0)
            goto NoMem;
    if (b->num_mapping != 0 && apply_mapping(&ctx, &v, b->mapping, b->num_mapping) != 0)
        goto NoMem;
    rep->value = v;
    return 0;
NoMem:
    *err = est_aggregate_err_no_memory;
    return -1;
}

size_t est_reply_lookup(const est_reply_t *rep, const char *path, size_t pathlen)
{
    const est_vnode_t *v = rep->value;
    size_t raw = JSPAN_NONE; /* set once the walk is inside a RAW value */
    if (v == NULL)
        return JSPAN_NONE;
    if (v->kind == VN_RAW)
        raw = v->idx;
    while (pathlen != 0) {
        const char *dot = memchr(path, '.', pathlen);
        size_t seg = dot != NULL ? (size_t)(dot - path) : pathlen;
        if (raw != JSPAN_NONE) {
            if ((raw = jspan_object_get(&rep->doc, raw, path, seg)) == JSPAN_NONE)
                return JSPAN_NONE;
        } else {
            if (v->kind != VN_OBJ)
                return JSPAN_NONE;
            vkey_t k = key_str(path, seg);
            size_t i;
            for (i = 0; i < v->n; ++i)
                if (key_eq(&v->m[i].key, &k))
                    break;
            if (i == v->n)
                return JSPAN_NONE;
            v = v->m[i].val;
            if (v->kind == VN_RAW)
                raw = v->idx;
        }
        if (dot == NULL)
            break;
        path += seg + 1;
        pathlen -= seg + 1;
    }
    if (raw == JSPAN_NONE)
        return JSPAN_NONE;
    jspan_type_t t = jspan_type(&rep->doc, raw);
    return t == JSPAN_STRING || t == JSPAN_NUMBER ? raw : JSPAN_NONE;
}

/* ---- merge ---------------------------------------------------------------------------------- */

void est_merge_init(est_merge_t *m, est_jarena_t *a)
{
    m->_a = a;
    m->_doc = NULL;
}

void est_merge_dispose(est_merge_t *m)
{
    m->_doc = NULL;
}

int est_merge_add(est_merge_t *m, const est_backend_conf_t *b, const est_reply_t *rep, const char **err)
{
    est_vnode_t *v = rep->value;
    if (v == NULL)
        return 0;
    jspan_type_t t = node_type(v);
    if (b->group == NULL && t != JSPAN_OBJECT && t != JSPAN_ARRAY) {
        *err = est_aggregate_err_scalar_without_group;
        return -1;
    }
    if (m->_doc == NULL && (m->_doc = node_new(m->_a, VN_OBJ)) == NULL)
        goto NoMem;
    est_vnode_t *doc = m->_doc;
    if (b->group != NULL) {
        vkey_t k = key_str(b->group, strlen(b->group));
        if (obj_set(m->_a, doc, &k, v) != 0)
            goto NoMem;
    } else if (t == JSPAN_OBJECT) {
        if (v->kind == VN_RAW && (v = obj_expand(m->_a, v->rep, v->idx, 0)) == NULL)
            goto NoMem;
        if (doc->n == 0 && doc->cap == 0) {
            *doc = *v; /* the first object becomes the document: nothing to move */
        } else {
            for (size_t i = 0; i < v->n; ++i)
                if (obj_set(m->_a, doc, &v->m[i].key, v->m[i].val) != 0)
                    goto NoMem;
        }
    } else {
        vkey_t k = key_str(COLLECTION_KEY, strlen(COLLECTION_KEY));
        size_t i = obj_find(m->_a, doc, &k);
        est_vnode_t *coll = i != SIZE_MAX ? doc->m[i].val : NULL;
        if (coll != NULL && node_type(coll) == JSPAN_ARRAY) {
            if (coll->kind != VN_CAT) {
                est_vnode_t *cat = node_new(m->_a, VN_CAT);
                if (cat == NULL)
                    goto NoMem;
                cat->cap = 4;
                if ((cat->parts = est_jarena_alloc(m->_a, cat->cap * sizeof(*cat->parts))) == NULL)
                    goto NoMem;
                cat->parts[cat->n++] = coll;
                doc->m[i].val = coll = cat;
            }
            if (coll->n == coll->cap) {
                est_vnode_t **p = est_jarena_alloc(m->_a, coll->cap * 2 * sizeof(*p));
                if (p == NULL)
                    goto NoMem;
                memcpy(p, coll->parts, coll->n * sizeof(*p));
                coll->parts = p;
                coll->cap *= 2;
            }
            coll->parts[coll->n++] = v;
        } else if (obj_set(m->_a, doc, &k, v) != 0) {
            goto NoMem;
        }
    }
    return 0;
NoMem:
    *err = est_aggregate_err_no_memory;
    return -1;
}

/* ---- write ---------------------------------------------------------------------------------- */

#define PUT(out, s, n)                                                                                                             \
    do {                                                                                                                           \
        if (jspan_buf_append((out), (s), (n)) != 0)                                                                                \
            return -1;                                                                                                             \
    } while (0)

static int write_node(const est_vnode_t *v, jspan_buf_t *out);

/* a config string as a JSON string (RFC 8259 section 7) */
static int write_str(const char *s, size_t len, jspan_buf_t *out)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;
    PUT(out, "\"", 1);
    for (size_t i = 0; i < len; ++i) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        PUT(out, s + run, i - run);
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
            PUT(out, esc, 2);
        } else {
            PUT(out, esc, 6);
        }
        run = i + 1;
    }
    PUT(out, s + run, len - run);
    PUT(out, "\"", 1);
    return 0;
}

static int write_key(const vkey_t *k, jspan_buf_t *out)
{
    if (k->doc == NULL)
        return write_str(k->str, k->len, out);
    size_t len;
    const char *raw = jspan_raw(k->doc, k->idx, &len);
    PUT(out, raw, len);
    return 0;
}

static int write_members(const vmember_t *m, size_t n, jspan_buf_t *out)
{
    PUT(out, "{", 1);
    for (size_t i = 0; i < n; ++i) {
        if (i != 0)
            PUT(out, ",", 1);
        if (write_key(&m[i].key, out) != 0)
            return -1;
        PUT(out, ":", 1);
        if (write_node(m[i].val, out) != 0)
            return -1;
    }
    PUT(out, "}", 1);
    return 0;
}

static int write_raw(const est_reply_t *rep, size_t v, jspan_buf_t *out);

/* a run of rep's text, compacted (a plain copy when the reply has no whitespace to drop) */
static int copy_compact(const est_reply_t *rep, const char *p, size_t len, jspan_buf_t *out)
{
    return rep->doc.has_ws ? jspan_write_compact_bytes(p, len, out) : jspan_buf_append(out, p, len);
}

/* array `arr` of rep with the container elements child[i] written by repl[i] (NULL: by
 * write_raw); the text around them is copied as it is. inner: without the brackets (the
 * elements only, as a part of the "collection") */
static int write_spliced(const est_reply_t *rep, size_t arr, const size_t *child, est_vnode_t *const *repl, size_t n, int inner,
                         jspan_buf_t *out)
{
    size_t len;
    const char *start = jspan_raw(&rep->doc, arr, &len), *pos = start, *end = start + len;
    if (inner) {
        ++pos;
        --end;
    }
    for (size_t i = 0; i < n; ++i) {
        if (repl[i] == NULL && !has_dups_within(rep, child[i]))
            continue;
        size_t cl;
        const char *c = jspan_raw(&rep->doc, child[i], &cl);
        if (copy_compact(rep, pos, (size_t)(c - pos), out) != 0)
            return -1;
        if ((repl[i] != NULL ? write_node(repl[i], out) : write_raw(rep, child[i], out)) != 0)
            return -1;
        pos = c + cl;
    }
    return copy_compact(rep, pos, (size_t)(end - pos), out);
}

/* RAW array v, holding duplicate keys somewhere: a splice without replacements writes each
 * element holding duplicates through write_raw and copies the rest as text */
static int write_raw_array(const est_reply_t *rep, size_t v, int inner, jspan_buf_t *out)
{
    const jspan_doc_t *doc = &rep->doc;
    size_t cnt = 0;
    for (size_t c = jspan_child(doc, v); c != JSPAN_NONE; c = jspan_next(doc, c))
        ++cnt;
    if (cnt == 0)
        return write_spliced(rep, v, NULL, NULL, 0, inner, out);
    size_t *child = malloc(cnt * (sizeof(size_t) + sizeof(est_vnode_t *)));
    if (child == NULL)
        return -1;
    est_vnode_t **repl = (est_vnode_t **)(child + cnt);
    cnt = 0;
    for (size_t c = jspan_child(doc, v); c != JSPAN_NONE; c = jspan_next(doc, c)) {
        child[cnt] = c;
        repl[cnt++] = NULL;
    }
    int r = write_spliced(rep, v, child, repl, cnt, inner, out);
    free(child);
    return r;
}

static int write_raw(const est_reply_t *rep, size_t v, jspan_buf_t *out)
{
    const jspan_doc_t *doc = &rep->doc;
    if (!has_dups_within(rep, v))
        return jspan_write_compact(doc, v, out);
    if (jspan_type(doc, v) == JSPAN_OBJECT) {
        if (!is_dup_object(rep, v)) {
            /* only something below holds duplicates */
            PUT(out, "{", 1);
            for (size_t k = jspan_child(doc, v); k != JSPAN_NONE; k = jspan_next(doc, k + 1)) {
                size_t len;
                const char *raw = jspan_raw(doc, k, &len);
                if (k != v + 1)
                    PUT(out, ",", 1);
                PUT(out, raw, len);
                PUT(out, ":", 1);
                if (write_raw(rep, k + 1, out) != 0)
                    return -1;
            }
            PUT(out, "}", 1);
            return 0;
        }
        /* last value at the first position: an index of the keys, in scratch memory */
        est_jarena_t a;
        est_jarena_init(&a);
        est_vnode_t *o = obj_expand(&a, rep, v, 0);
        int r = o != NULL ? write_members(o->m, o->n, out) : -1;
        est_jarena_dispose(&a);
        return r;
    }
    return write_raw_array(rep, v, 0, out);
}

/* the elements of an array node (RAW or ARR, never CAT), without its brackets; written as they
 * are, never through a longer text, so that a body of exactly out->max bytes fits */
static int write_elements(const est_vnode_t *v, jspan_buf_t *out)
{
    if (v->kind == VN_ARR)
        return write_spliced(v->rep, v->idx, v->child, v->repl, v->n, 1, out);
    if (has_dups_within(v->rep, v->idx))
        return write_raw_array(v->rep, v->idx, 1, out);
    size_t len;
    const char *raw = jspan_raw(&v->rep->doc, v->idx, &len);
    return copy_compact(v->rep, raw + 1, len - 2, out);
}

static int write_node(const est_vnode_t *v, jspan_buf_t *out)
{
    switch (v->kind) {
    case VN_RAW:
        return write_raw(v->rep, v->idx, out);
    case VN_OBJ:
        return write_members(v->m, v->n, out);
    case VN_ARR:
        return write_spliced(v->rep, v->idx, v->child, v->repl, v->n, 0, out);
    default: { /* VN_CAT */
        int any = 0;
        PUT(out, "[", 1);
        for (size_t i = 0; i < v->n; ++i) {
            const est_vnode_t *p = v->parts[i];
            if (jspan_count(&p->rep->doc, p->idx) == 0)
                continue; /* an empty array: no comma either */
            if (any)
                PUT(out, ",", 1);
            if (write_elements(p, out) != 0)
                return -1;
            any = 1;
        }
        PUT(out, "]", 1);
        return 0;
    }
    }
}

int est_merge_write(const est_merge_t *m, jspan_buf_t *out)
{
    if (m->_doc == NULL) {
        PUT(out, "{}", 2);
        return 0;
    }
    return write_members(m->_doc->m, m->_doc->n, out);
}
