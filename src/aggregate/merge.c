/*
 * estuary - parse, transform and merge backend replies (see merge.h).
 *
 * Cost model: every step moves values (json_incref into the new parent, then the old parent is
 * released) instead of deep-copying them, and deny/mapping/array work happen in place, which
 * is why inputs are stolen and must not be shared. Work is linear in the size of the document
 * times the (config-sized) number of allow/deny/mapping entries.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "aggregate/merge.h"

const char est_aggregate_err_target_missing[] = "target path missing";
const char est_aggregate_err_target_not_object[] = "target path through a non-object";
const char est_aggregate_err_scalar_without_group[] = "scalar reply without group";
const char est_aggregate_err_no_memory[] = "out of memory";

#define COLLECTION_KEY "collection"
/* scratch kept on the stack up to this many entries, malloc'd beyond */
#define SMALL_SCRATCH 32

/* A dot path split as "first segment" + "the rest" */
typedef struct st_path_t {
    const char *seg;
    size_t seg_len;
    const char *rest; /* NULL when `seg` is the last segment */
    size_t rest_len;
} path_t;

typedef struct st_allow_ctx_t {
    path_t *scratch; /* (depth + 1) slices of `width` entries; level n uses slice n */
    size_t width;
} allow_ctx_t;

static void path_split(path_t *p, const char *s, size_t len);
static json_t *apply_target(json_t *body, const char *target, const char **err);
static int apply_allow(json_t **body, char *const *allow, size_t num_allow);
static json_t *allow_object(allow_ctx_t *ctx, json_t *obj, const path_t *cur, size_t nc, size_t level);
static int allow_array(allow_ctx_t *ctx, json_t *arr, const path_t *cur, size_t nc, size_t level);
static void deny_in(json_t *v, const char *path, size_t len);
static void deny_in_object(json_t *obj, const char *path, size_t len);
static int apply_mapping(json_t *body, const est_mapping_conf_t *map, size_t num_map);
static int map_object(json_t *obj, const est_mapping_conf_t *map, size_t num_map, json_t **tmp);

static int is_json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int est_body_parse(const char *buf, size_t len, json_t **out)
{
    size_t i = 0;
    *out = NULL;
    while (i < len && is_json_space(buf[i]))
        ++i;
    if (i == len)
        return 0;
    json_error_t error;
    /* JSON_ALLOW_NUL: "\u0000" is valid JSON (RFC 8259 section 7); the serializer writes it back */
    *out = json_loadb(buf, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &error);
    return *out != NULL ? 0 : -1;
}

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

static json_t *apply_target(json_t *body, const char *target, const char **err)
{
    path_t p;
    json_t *cur = body;
    const char *s = target;
    size_t len = strlen(target);
    for (;;) {
        path_split(&p, s, len);
        if (!json_is_object(cur)) {
            *err = est_aggregate_err_target_not_object;
            goto Fail;
        }
        if ((cur = json_object_getn(cur, p.seg, p.seg_len)) == NULL) {
            *err = est_aggregate_err_target_missing;
            goto Fail;
        }
        if (p.rest == NULL)
            break;
        s = p.rest;
        len = p.rest_len;
    }
    /* keep the target alive, release the rest of the body */
    json_incref(cur);
    json_decref(body);
    return cur;
Fail:
    json_decref(body);
    return NULL;
}

/*
 * allow: `cur` holds the paths still to match at this level (each split into first segment and
 * rest). For each member of `obj`, in the object's own order: a path ending at it keeps it
 * whole; paths going through it are matched one level down. Returns a new object (possibly
 * empty), NULL when out of memory.
 */
static json_t *allow_object(allow_ctx_t *ctx, json_t *obj, const path_t *cur, size_t nc, size_t level)
{
    path_t *next = ctx->scratch + (level + 1) * ctx->width;
    json_t *out = json_object();
    const char *key;
    size_t key_len;
    json_t *val;

    if (out == NULL)
        return NULL;
    json_object_keylen_foreach(obj, key, key_len, val) {
        int whole = 0;
        size_t nn = 0;
        for (size_t i = 0; i < nc; ++i) {
            if (cur[i].seg_len != key_len || memcmp(cur[i].seg, key, key_len) != 0)
                continue;
            if (cur[i].rest == NULL) {
                whole = 1;
                break;
            }
            path_split(next + nn++, cur[i].rest, cur[i].rest_len);
        }
        json_t *kept = NULL;
        if (whole) {
            kept = json_incref(val);
        } else if (nn != 0) {
            if (json_is_object(val)) {
                if ((kept = allow_object(ctx, val, next, nn, level + 1)) == NULL)
                    goto NoMem;
                if (json_object_size(kept) == 0) { /* nothing listed exists below: drop the parent */
                    json_decref(kept);
                    kept = NULL;
                }
            } else if (json_is_array(val)) {
                if (allow_array(ctx, val, next, nn, level + 1) != 0)
                    goto NoMem;
                kept = json_incref(val);
            }
        }
        if (kept != NULL && json_object_setn_new_nocheck(out, key, key_len, kept) != 0)
            goto NoMem;
    }
    return out;
NoMem:
    json_decref(out);
    return NULL;
}

/* allow on an array, in place: each object element is replaced by its filtered copy (even when
 * empty, so positions hold); other elements stay. Returns 0, -1 when out of memory. */
static int allow_array(allow_ctx_t *ctx, json_t *arr, const path_t *cur, size_t nc, size_t level)
{
    size_t n = json_array_size(arr);
    for (size_t i = 0; i < n; ++i) {
        json_t *el = json_array_get(arr, i), *kept;
        if (!json_is_object(el))
            continue;
        if ((kept = allow_object(ctx, el, cur, nc, level)) == NULL || json_array_set_new(arr, i, kept) != 0)
            return -1;
    }
    return 0;
}

static int apply_allow(json_t **body, char *const *allow, size_t num_allow)
{
    path_t small[SMALL_SCRATCH];
    allow_ctx_t ctx = {small, num_allow};
    size_t depth = 1;
    int ret = -1;

    if (!json_is_object(*body) && !json_is_array(*body))
        return 0;
    /* one slice per path level: the deepest path has `depth` segments */
    for (size_t i = 0; i < num_allow; ++i) {
        size_t segs = 1;
        for (const char *s = allow[i]; *s != '\0'; ++s)
            segs += *s == '.';
        if (segs > depth)
            depth = segs;
    }
    if ((depth + 1) > SIZE_MAX / sizeof(path_t) / (num_allow != 0 ? num_allow : 1))
        return -1;
    if ((depth + 1) * num_allow > SMALL_SCRATCH && (ctx.scratch = malloc((depth + 1) * num_allow * sizeof(path_t))) == NULL)
        return -1;
    for (size_t i = 0; i < num_allow; ++i)
        path_split(ctx.scratch + i, allow[i], strlen(allow[i]));

    if (json_is_object(*body)) {
        json_t *out = allow_object(&ctx, *body, ctx.scratch, num_allow, 0);
        if (out != NULL) {
            json_decref(*body);
            *body = out;
            ret = 0;
        }
    } else {
        ret = allow_array(&ctx, *body, ctx.scratch, num_allow, 0);
    }
    if (ctx.scratch != small)
        free(ctx.scratch);
    return ret;
}

/* deny, in place: on an object removes `path`; on an array, from each object element */
static void deny_in(json_t *v, const char *path, size_t len)
{
    if (json_is_object(v)) {
        deny_in_object(v, path, len);
    } else if (json_is_array(v)) {
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n; ++i) {
            json_t *el = json_array_get(v, i);
            if (json_is_object(el))
                deny_in_object(el, path, len);
        }
    }
}

static void deny_in_object(json_t *obj, const char *path, size_t len)
{
    path_t p;
    path_split(&p, path, len);
    if (p.rest == NULL) {
        json_object_deln(obj, p.seg, p.seg_len); /* -1 when absent: nothing to do */
    } else {
        json_t *child = json_object_getn(obj, p.seg, p.seg_len);
        if (child != NULL)
            deny_in(child, p.rest, p.rest_len);
    }
}

/* Renames top-level keys of `obj` all at once; `tmp` has room for num_map values. */
static int map_object(json_t *obj, const est_mapping_conf_t *map, size_t num_map, json_t **tmp)
{
    size_t i;
    for (i = 0; i < num_map; ++i)
        tmp[i] = json_incref(json_object_get(obj, map[i].from));
    for (i = 0; i < num_map; ++i)
        if (tmp[i] != NULL)
            json_object_del(obj, map[i].from);
    for (i = 0; i < num_map; ++i) {
        /* set_new consumes tmp[i] even when it fails */
        if (tmp[i] != NULL && json_object_set_new(obj, map[i].to, tmp[i]) != 0)
            goto NoMem;
    }
    return 0;
NoMem:
    while (++i < num_map)
        json_decref(tmp[i]);
    return -1;
}

static int apply_mapping(json_t *body, const est_mapping_conf_t *map, size_t num_map)
{
    json_t *small[SMALL_SCRATCH], **tmp = small;
    int ret = 0;

    if (num_map > SMALL_SCRATCH && (tmp = malloc(num_map * sizeof(*tmp))) == NULL)
        return -1;
    if (json_is_object(body)) {
        ret = map_object(body, map, num_map, tmp);
    } else if (json_is_array(body)) {
        size_t n = json_array_size(body);
        for (size_t i = 0; i < n && ret == 0; ++i) {
            json_t *el = json_array_get(body, i);
            if (json_is_object(el))
                ret = map_object(el, map, num_map, tmp);
        }
    }
    if (tmp != small)
        free(tmp);
    return ret;
}

json_t *est_transform_apply(const est_backend_conf_t *b, json_t *body, const char **err)
{
    if (body == NULL) {
        *err = "no body"; /* misuse: callers skip empty bodies (est_body_parse gave NULL) */
        return NULL;
    }
    if (b->target != NULL && (body = apply_target(body, b->target, err)) == NULL)
        return NULL;
    if (b->num_allow != 0 && apply_allow(&body, b->allow, b->num_allow) != 0)
        goto NoMem;
    for (size_t i = 0; i < b->num_deny; ++i)
        deny_in(body, b->deny[i], strlen(b->deny[i]));
    if (b->num_mapping != 0 && apply_mapping(body, b->mapping, b->num_mapping) != 0)
        goto NoMem;
    return body;
NoMem:
    json_decref(body);
    *err = est_aggregate_err_no_memory;
    return NULL;
}

void est_merge_init(est_merge_t *m)
{
    m->_doc = NULL;
}

int est_merge_add(est_merge_t *m, const est_backend_conf_t *b, json_t *value, const char **err)
{
    if (value == NULL)
        return 0;
    if (b->group == NULL && !json_is_object(value) && !json_is_array(value)) {
        json_decref(value);
        *err = est_aggregate_err_scalar_without_group;
        return -1;
    }
    if (m->_doc == NULL) {
        if (b->group == NULL && json_is_object(value)) {
            m->_doc = value; /* the first object becomes the document: nothing to move */
            return 0;
        }
        if ((m->_doc = json_object()) == NULL)
            goto NoMem;
    }

    if (b->group != NULL) {
        if (json_object_set_new(m->_doc, b->group, value) != 0)
            goto NoMemConsumed;
    } else if (json_is_object(value)) {
        /* moves the members (incref), a clash keeps the key's first position */
        int r = json_object_update(m->_doc, value);
        json_decref(value);
        if (r != 0)
            goto NoMemConsumed;
    } else {
        json_t *coll = json_object_get(m->_doc, COLLECTION_KEY);
        if (json_is_array(coll)) {
            /* amortized O(n): the array grows geometrically; elements are moved (incref) */
            int r = json_array_extend(coll, value);
            json_decref(value);
            if (r != 0)
                goto NoMemConsumed;
        } else if (json_object_set_new(m->_doc, COLLECTION_KEY, value) != 0) {
            goto NoMemConsumed;
        }
    }
    return 0;
NoMem:
    json_decref(value);
NoMemConsumed:
    *err = est_aggregate_err_no_memory;
    return -1;
}

json_t *est_merge_finish(est_merge_t *m)
{
    json_t *doc = m->_doc;
    m->_doc = NULL;
    return doc != NULL ? doc : json_object();
}

void est_merge_dispose(est_merge_t *m)
{
    json_decref(m->_doc);
    m->_doc = NULL;
}
