/*
 * estuary - the JSON side of an aggregating route (shared/SPEC.md, "Aggregating routes").
 *
 * Pure functions over jansson values, no I/O. The fan-out calls, for each backend reply:
 *
 *     json_t *v;
 *     if (est_body_parse(buf, len, &v) != 0)            -> backend failed (not JSON)
 *     if (v != NULL && (v = est_transform_apply(b, v, &err)) == NULL)   -> backend failed
 *     if (est_merge_add(&m, b, v, &err) != 0)           -> backend failed
 *
 * with est_merge_add() called in config order (buffer early replies), then
 * est_merge_finish() and est_json_dumps_compact() (jsonutil.h) for the response body.
 *
 * Ownership: values passed in are STOLEN and may be modified in place, so they must be trees
 * nobody else references (as est_body_parse() returns them). Nothing here keeps global state;
 * every function is safe to call from any worker thread on its own values.
 *
 * The fan-out runs all of this inside the request's JSON arena (jsonarena.h): every value is
 * then arena memory, released with the arena; nothing here may keep a value beyond the call,
 * nor put a value from outside (config, globals) into a tree, or it would outlive its memory
 * or leak. The config's transform settings are plain strings, copied into new keys.
 *
 * Key order is deterministic: jansson >= 2.8 keeps insertion order in objects (and ignores
 * JSON_PRESERVE_ORDER), est_json_dumps_compact() writes keys in that order.
 */
#ifndef EST_AGGREGATE_MERGE_H
#define EST_AGGREGATE_MERGE_H

#include <stddef.h>
#include <jansson.h>
#include "config/config.h"

/* Reasons set in `*err`; static strings, compare by pointer or print them. */
extern const char est_aggregate_err_target_missing[];     /* "target path missing" */
extern const char est_aggregate_err_target_not_object[];  /* "target path through a non-object" */
extern const char est_aggregate_err_scalar_without_group[]; /* "scalar reply without group" */
extern const char est_aggregate_err_no_memory[];          /* "out of memory" */

/*
 * Parses a reply body. Any JSON value is accepted (object, array, string, number, true,
 * false, null); "\u0000" inside strings is allowed. Trailing garbage is an error.
 * Returns 0 with *out = a new reference, 0 with *out = NULL when the body is empty or only
 * JSON whitespace (the backend contributes nothing), -1 with *out = NULL when the body is not
 * JSON (including integers beyond the int64 range and nesting deeper than 2048, which
 * jansson 2.14 refuses). `buf` needs no terminating NUL.
 */
int est_body_parse(const char *buf, size_t len, json_t **out);

/*
 * Applies the backend's `target`, then `allow` (or `deny`; both configured: allow then deny),
 * then `mapping`, to `body`.
 *
 * body: STOLEN, always (also on failure); must not be NULL; modified in place.
 * Returns a new reference, or NULL with *err set (est_aggregate_err_*).
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
 *   order), and it replaces an existing key of the same name.
 * - On an array, allow/deny/mapping apply to each object element; other elements (scalars,
 *   nested arrays) are left as they are. On a scalar they do nothing.
 */
json_t *est_transform_apply(const est_backend_conf_t *b, json_t *body, const char **err);

/*
 * Builds the merged document. Embed it anywhere (e.g. request pool memory); fields are
 * private. Lifecycle: est_merge_init, est_merge_add... (config order), est_merge_finish,
 * est_merge_dispose (always; also after finish or after an error).
 */
typedef struct est_merge {
    json_t *_doc; /* the document so far; NULL until something was added */
} est_merge_t;

void est_merge_init(est_merge_t *m);

/*
 * Adds one backend's transformed result. Call in config order.
 *
 * value: STOLEN, always (also on failure); NULL means "contributes nothing" (returns 0).
 * Returns 0, or -1 with *err set (the backend failed; the document is unchanged).
 *
 * - with `group`: the document gets key group = value (any JSON value). A second backend with
 *   the same group replaces the first's value, at the first's position.
 * - without group, an object: its members are merged into the top level; on a clash the later
 *   backend's value wins and the key keeps the position where it first appeared. The values
 *   are moved, not copied.
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
int est_merge_add(est_merge_t *m, const est_backend_conf_t *b, json_t *value, const char **err);

/*
 * Returns the merged document as a new reference (an empty object when nothing was added,
 * NULL only when out of memory) and leaves `m` empty, as after init.
 */
json_t *est_merge_finish(est_merge_t *m);

/* Releases what `m` still holds. Safe after finish and to call twice. */
void est_merge_dispose(est_merge_t *m);

#endif
