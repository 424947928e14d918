/*
 * estuary - the JSON side of an aggregating route (shared/SPEC.md, "Aggregating routes",
 * docs/aggregation.md).
 *
 * Lossless and zero-copy: a backend reply is validated and indexed by jspan (jspan.h), the
 * transforms build a small tree of references ("nodes") into the reply's text, and the merged
 * document is written by copying spans of the replies into one buffer. Numbers come out byte
 * for byte, strings with their escapes as the backend wrote them. No I/O, no global state.
 *
 *     est_jarena_t a;       est_jarena_init(&a);              (nodes of every reply + merge)
 *     est_reply_t rep;      est_reply_parse(&rep, buf, len, 0)  -> -1: not JSON (backend failed)
 *     est_reply_transform(&rep, b, &a, &err)                    -> -1: backend failed (err)
 *     est_merge_t m;        est_merge_init(&m, &a);
 *     est_merge_add(&m, b, &rep, &err)  (config order)          -> -1: backend failed (err)
 *     est_merge_write(&m, &out)                                 -> the body, compact
 *     est_merge_dispose(&m); est_reply_dispose(&rep); est_jarena_dispose(&a);
 *
 * Lifetimes: a reply's nodes point into its text and tape, the merge's into the replies: the
 * reply bytes and every est_reply_t must stay alive and unchanged until est_merge_write is
 * done. Config strings (group, mapping "to") are referenced, not copied.
 *
 * Output is compact JSON (no whitespace outside strings) with the keys in the order below.
 */
#ifndef EST_AGGREGATE_MERGE_H
#define EST_AGGREGATE_MERGE_H

#include <stddef.h>
#include <stdint.h>
#include "aggregate/jspan.h"
#include "config/config.h"

/* Reasons set in `*err`; static strings, compare by pointer or print them. */
extern const char est_aggregate_err_target_missing[];       /* "target path missing" */
extern const char est_aggregate_err_target_not_object[];    /* "target path through a non-object" */
extern const char est_aggregate_err_scalar_without_group[]; /* "scalar reply without group" */
extern const char est_aggregate_err_no_memory[];            /* "out of memory" */

/* nesting accepted in a reply (SPEC: at least 512) */
#define EST_REPLY_MAX_DEPTH JSPAN_DEFAULT_MAX_DEPTH

/* An allocator of small objects released all at once (chunks of malloc'd memory). */
typedef struct est_jarena {
    struct est_jchunk *_chunks;
    size_t bytes; /* malloc'd so far */
} est_jarena_t;

void est_jarena_init(est_jarena_t *a);
void *est_jarena_alloc(est_jarena_t *a, size_t size); /* 16-byte aligned; NULL when out of memory */
void est_jarena_dispose(est_jarena_t *a);
/* a point to go back to: est_jarena_rollback frees everything allocated after the mark */
typedef struct est_jarena_mark {
    struct est_jchunk *_chunk;
    size_t _used, _bytes;
} est_jarena_mark_t;
void est_jarena_mark(const est_jarena_t *a, est_jarena_mark_t *m);
void est_jarena_rollback(est_jarena_t *a, const est_jarena_mark_t *m);

typedef struct est_vnode est_vnode_t;

/* One backend reply: its index (borrowing the text) and its transformed value. */
typedef struct est_reply {
    jspan_doc_t doc;
    size_t *dups; /* tape indices of the objects holding a key twice (jspan_find_dup_objects) */
    size_t num_dups;
    est_vnode_t *value; /* NULL: contributes nothing (empty body) */
    int parsed;
} est_reply_t;

#define EST_REPLY_INVALID (-1)
#define EST_REPLY_NOMEM (-2)
#define EST_REPLY_TOO_LARGE (-3)

/*
 * Parses a reply body (any JSON value, RFC 8259 strict, nesting up to EST_REPLY_MAX_DEPTH,
 * duplicate keys: the last one counts, at the position of the first). An empty or
 * whitespace-only body contributes nothing. max_tape_bytes bounds the index (0: none but the
 * inherent one). Returns 0, EST_REPLY_INVALID (not JSON; rep->doc.err_offset),
 * EST_REPLY_TOO_LARGE (the index would pass max_tape_bytes) or EST_REPLY_NOMEM; rep can be
 * disposed in every case.
 */
int est_reply_parse(est_reply_t *rep, const char *buf, size_t len, size_t max_tape_bytes);

/*
 * Applies the backend's `target`, then `allow` (or `deny`; both configured: allow then deny),
 * then `mapping`, to the reply's value. Returns 0, or -1 with *err (est_aggregate_err_*).
 *
 * - target "a.b": the value at body.a.b; every segment must name a member of an object
 *   (no array indexing). A missing member fails with est_aggregate_err_target_missing, a
 *   segment applied to a non-object with est_aggregate_err_target_not_object.
 * - allow: keeps only the listed dot paths; "a.b" keeps {"a": {"b": ...}}. Kept fields stay in
 *   the backend's key order. A listed path that does not exist adds nothing: a parent whose
 *   listed children are all missing (or that is not an object) is dropped. When an
 *   intermediate value is an array, the rest of the path applies to each object element
 *   (the array keeps its length; non-object elements are kept as they are).
 * - deny: removes the listed dot paths, with the same array rule; missing paths are ignored.
 * - mapping: renames TOP-LEVEL keys only: a "from" containing '.' names a key with a dot in
 *   it, not a path. A missing "from" does nothing. All renames happen at once (so
 *   {"a": "b", "b": "a"} swaps), a renamed key moves to the end of the object (in mapping
 *   order), and it replaces the value of an existing key of the same name (which keeps its
 *   position).
 * - On an array, allow/deny/mapping apply to each object element; other elements (scalars,
 *   nested arrays) are left as they are. On a scalar they do nothing.
 */
int est_reply_transform(est_reply_t *rep, const est_backend_conf_t *b, est_jarena_t *a, const char **err);

/* The tape index (in rep->doc) of the string or number at dot path `path` of the transformed
 * value (an empty path: the value itself); JSPAN_NONE when missing, or an object, array,
 * true/false/null, or the reply contributes nothing. Segments are object keys only. */
size_t est_reply_lookup(const est_reply_t *rep, const char *path, size_t pathlen);

/* bytes of malloc'd index the reply holds (tape + duplicate list) */
size_t est_reply_bytes(const est_reply_t *rep);

/* Frees the index; the text is the caller's. Safe on a zeroed or failed reply, and twice. */
void est_reply_dispose(est_reply_t *rep);

/*
 * Builds the merged document. Embed it anywhere; fields are private. Lifecycle:
 * est_merge_init, est_merge_add... (config order), est_merge_write, est_merge_dispose.
 */
typedef struct est_merge {
    est_jarena_t *_a;
    est_vnode_t *_doc; /* the top-level object, NULL until something was added */
} est_merge_t;

void est_merge_init(est_merge_t *m, est_jarena_t *a);

/*
 * Adds one backend's transformed result (rep->value; NULL contributes nothing and returns 0).
 * Call in config order. Returns 0, or -1 with *err set (the backend failed; the document is
 * unchanged).
 *
 * - with `group`: the document gets key group = value (any JSON value). A second backend with
 *   the same group replaces the first's value, at the first's position.
 * - without group, an object: its members are merged into the top level; on a clash the later
 *   backend's value wins and the key keeps the position where it first appeared.
 * - without group, an array: its elements are appended to the top-level "collection" array,
 *   created at that point (position in config order) when absent.
 * - without group, a scalar (string, number, boolean, null): -1, est_aggregate_err_scalar_without_group.
 *
 * "collection" clashes: the top-level key "collection" is an ordinary key, written in config
 * order, the later writer winning, with one exception: an array without group is appended to
 * it when it currently holds an array (whoever put it there), and replaces it otherwise. So
 * [1] then {"collection": "x"} then [2] gives {"collection": [2]}, while {"collection": [1]}
 * then [2] gives {"collection": [1, 2]} and [1] then {"collection": [9]} gives
 * {"collection": [9]}.
 */
int est_merge_add(est_merge_t *m, const est_backend_conf_t *b, const est_reply_t *rep, const char **err);

/* Appends the merged document ({} when nothing was added) to out, compact. 0, or -1 when out
 * of memory or out->max would be passed. */
int est_merge_write(const est_merge_t *m, jspan_buf_t *out);

/* Forgets the document (its memory is the arena's). */
void est_merge_dispose(est_merge_t *m);

#endif
