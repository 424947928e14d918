/*
 * estuary - a per-request arena for the jansson values of an aggregating route.
 *
 * jansson mallocs every value, key, string and hash table separately (~70 malloc + ~70 free
 * for the two small replies of a typical aggregation) and frees a document by walking it. An
 * arena makes each of those allocations a pointer bump, each free a no-op, and drops the whole
 * document at once at the end of the request, without a walk.
 *
 * jansson's allocator hook (json_set_alloc_funcs) is process-global, so it is installed once,
 * before main() (no thread exists yet), and routes an allocation to an arena only while that
 * arena is *entered* on the calling thread:
 *
 *     est_json_arena_t *prev = est_json_arena_enter(&f->arena);
 *     ... jansson calls on this request's values only ...
 *     est_json_arena_leave(prev);
 *
 * Outside an entered section (config loading on the main thread, the admin thread, any code
 * not between enter and leave) jansson gets plain malloc/free. The "entered" pointer is
 * thread-local: each worker thread runs its own loop and interleaves many requests, each with
 * its own arena; a section is synchronous (no loop callback runs inside it), so it can
 * never see another request's arena, nor another thread's.
 *
 * Rules, which is what makes dropping the arena wholesale safe:
 * - Every jansson value built inside a section belongs to the arena. It must not escape the
 *   request (no pointer to it kept anywhere est_json_arena_reset cannot see), and it is only
 *   touched (read, modified, released) inside a section of the same arena.
 * - Inside a section, only values of this arena (or jansson's static true/false/null) are
 *   released: a value made outside (plain malloc) must not be decref'd to zero or put in an
 *   arena tree (it would be leaked at reset, never freed twice). Aggregating routes build
 *   every value from the backend replies; the config holds no json_t they use (mapping keys
 *   are plain strings, copied into new keys).
 * - est_json_arena_reset() frees everything at once; values need not be json_decref'd first
 *   (doing it anyway is harmless while entered).
 *
 * Memory: small allocations are bumped from chunks (4 KiB, then doubling; the 4 KiB ones are
 * recycled per thread), at most EST_JSON_ARENA_MAX_BUMP bytes of chunks per arena; bigger
 * allocations, and every allocation once that bound is reached, are separate mallocs kept in
 * a list and freed as soon as jansson frees them. So a huge reply costs what plain malloc
 * would, plus at most EST_JSON_ARENA_MAX_BUMP.
 *
 * Under AddressSanitizer (ESTUARY_SANITIZE) every allocation is a separate malloc with a
 * poisoned header, freed when jansson frees it or at reset: overflows, use after free and use
 * after reset are reported as without the arena.
 */
#ifndef EST_AGGREGATE_JSONARENA_H
#define EST_AGGREGATE_JSONARENA_H

#include <stddef.h>

/* bytes of bump chunks one arena may take before it falls back to separate mallocs */
#define EST_JSON_ARENA_MAX_BUMP (1024 * 1024)

/* Embed it anywhere (request pool memory); fields are private. Zeroed memory is NOT a valid
 * arena: call est_json_arena_init. */
typedef struct est_json_arena {
    char *_top, *_end;                       /* free room of the newest chunk */
    struct st_est_json_arena_chunk_t *_chunks; /* newest first */
    struct st_est_json_arena_big_t *_big;      /* separate mallocs still live (doubly linked) */
    size_t _bump_bytes;                      /* bytes of chunks taken */
    size_t _max_bump;                        /* EST_JSON_ARENA_MAX_BUMP; 0 under ASan */
    size_t _next_chunk;                      /* size of the next chunk */
} est_json_arena_t;

void est_json_arena_init(est_json_arena_t *a);

/*
 * Makes `a` the arena of jansson's allocations on this thread until est_json_arena_leave.
 * Returns the arena entered before (usually NULL), to give to est_json_arena_leave.
 */
est_json_arena_t *est_json_arena_enter(est_json_arena_t *a);
void est_json_arena_leave(est_json_arena_t *prev);

/*
 * Frees every allocation of `a` at once: the values built in it are gone (no json_decref
 * needed). `a` must not be entered. `a` stays usable (as after init); safe to call twice.
 */
void est_json_arena_reset(est_json_arena_t *a);

#endif
