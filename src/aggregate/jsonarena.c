/*
 * estuary - per-request arena behind jansson's allocator hook (see jsonarena.h).
 */
#include "aggregate/jsonarena.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <jansson.h>

#include "common/asan.h"

#define ALIGN 16            /* what malloc guarantees on x86_64 / aarch64 (max_align_t) */
#define FIRST_CHUNK 4096    /* fits the two replies of a typical aggregation (~3.3 KiB) */
#define MAX_SMALL 1024      /* bigger allocations are separate mallocs, freed when jansson frees them */
#define MAX_CACHED_CHUNKS 32 /* per thread: 128 KiB at most */
#define BIG_MAGIC ((uintptr_t)0x6573746a736f6e61u)

typedef struct st_est_json_arena_chunk_t {
    struct st_est_json_arena_chunk_t *next;
    char *end; /* the chunk is [this, end) */
} chunk_t;

typedef struct st_est_json_arena_big_t {
    struct st_est_json_arena_big_t *next, **pprev;
    est_json_arena_t *arena;
    uintptr_t magic;
} big_t;

_Static_assert(sizeof(chunk_t) % ALIGN == 0, "bump allocations must stay aligned");
_Static_assert(sizeof(big_t) % ALIGN == 0, "separate allocations must stay aligned");

static void *hook_malloc(size_t n);
static void hook_free(void *p);
/* out of line, so that the bump path of hook_malloc needs no stack frame */
__attribute__((noinline)) static void *alloc_slow(est_json_arena_t *a, size_t n);
static void *big_alloc(est_json_arena_t *a, size_t n);
__attribute__((noinline)) static void big_free(est_json_arena_t *a, void *p);

/*
 * The arena jansson allocates from on this thread, NULL outside an entered section.
 * Thread-local because the hook is process-global while each worker thread runs its own
 * loop (and its own requests, each with its own arena): a worker only ever sees the arena it
 * entered itself, the main and admin threads never enter one and get plain malloc/free.
 */
static _Thread_local est_json_arena_t *current;

#ifndef EST_ASAN
/* 4 KiB chunks given back by reset, reused by the next request on the same thread (thread-local
 * for the same reason; a chunk is plain malloc memory, so whichever thread resets takes it).
 * Freed when the thread exits, through a pthread key destructor. */
static _Thread_local chunk_t *cached_chunks;
static _Thread_local size_t num_cached_chunks;
static _Thread_local int cache_registered; /* the key's destructor will run for this thread */
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;
static int cache_key_ok;

static void cache_free(void *unused)
{
    while (cached_chunks != NULL) {
        chunk_t *c = cached_chunks;
        cached_chunks = c->next;
        free(c);
    }
    num_cached_chunks = 0;
}

static void cache_key_create(void)
{
    cache_key_ok = pthread_key_create(&cache_key, cache_free) == 0;
}

/* 1 when this thread may keep chunks (its cache will be freed at thread exit) */
static int cache_register(void)
{
    if (!cache_registered) {
        pthread_once(&cache_once, cache_key_create);
        if (!cache_key_ok || pthread_setspecific(cache_key, &cache_registered) != 0)
            return 0;
        cache_registered = 1;
    }
    return 1;
}
#endif

/* Installed before main(), while no other thread exists and before anything uses jansson: the
 * hook is a pair of global pointers inside libjansson, setting them later would race with the
 * admin thread. Outside an arena the hook is plain malloc/free. */
__attribute__((constructor)) static void install_hook(void)
{
    json_set_alloc_funcs(hook_malloc, hook_free);
}

static void *hook_malloc(size_t n)
{
    est_json_arena_t *a = current;
    if (a == NULL)
        return malloc(n);
    /* n - 1: a zero-sized request takes the slow path (which gives it 1 byte) */
    if (n - 1 < MAX_SMALL) {
        size_t need = (n + (ALIGN - 1)) & ~(size_t)(ALIGN - 1);
        if (need <= (size_t)(a->_end - a->_top)) {
            char *p = a->_top;
            a->_top += need;
            UNPOISON(p, n);
            return p;
        }
    }
    return alloc_slow(a, n);
}

static void hook_free(void *p)
{
    if (p == NULL)
        return;
    est_json_arena_t *a = current;
    if (a == NULL) {
        free(p);
        return;
    }
    /* a bump allocation stays until reset (newest chunk first: most frees are of fresh
     * temporaries, e.g. the key strings the parser inserts and drops) */
    for (const chunk_t *c = a->_chunks; c != NULL; c = c->next)
        if ((const char *)p > (const char *)c && (const char *)p < c->end) {
#ifdef EST_ASAN
            /* best effort: the size is unknown, but every bump allocation has ALIGN bytes */
            POISON(p, ALIGN);
#endif
            return;
        }
    big_free(a, p);
}

static chunk_t *chunk_new(size_t size)
{
#ifndef EST_ASAN
    if (size == FIRST_CHUNK && cached_chunks != NULL) {
        chunk_t *c = cached_chunks;
        cached_chunks = c->next;
        --num_cached_chunks;
        return c;
    }
#endif
    chunk_t *c = malloc(size);
    if (c != NULL)
        c->end = (char *)c + size;
    return c;
}

static void chunk_release(chunk_t *c)
{
    size_t size = (size_t)(c->end - (char *)c);
    UNPOISON(c, size);
#ifndef EST_ASAN
    if (size == FIRST_CHUNK && num_cached_chunks < MAX_CACHED_CHUNKS && cache_register()) {
        c->next = cached_chunks;
        cached_chunks = c;
        ++num_cached_chunks;
        return;
    }
#endif
    free(c);
}

static void *alloc_slow(est_json_arena_t *a, size_t n)
{
    if (n == 0)
        n = 1;
    size_t size = a->_next_chunk;
    if (n <= MAX_SMALL && size <= a->_max_bump - a->_bump_bytes) {
        chunk_t *c = chunk_new(size);
        if (c != NULL) {
            /* the rest of the previous chunk (< MAX_SMALL + ALIGN bytes) is left unused */
            c->next = a->_chunks;
            a->_chunks = c;
            a->_bump_bytes += size;
            a->_next_chunk = size * 2;
            a->_top = (char *)(c + 1);
            a->_end = c->end;
            POISON(a->_top, (size_t)(a->_end - a->_top));
            char *p = a->_top;
            a->_top += (n + (ALIGN - 1)) & ~(size_t)(ALIGN - 1);
            UNPOISON(p, n);
            return p;
        }
    }
    return big_alloc(a, n);
}

/* Headers are poisoned under ASan (an underflow into one is reported): open them to link. */
static void big_set_pprev(big_t *b, big_t **pprev)
{
    UNPOISON(b, sizeof(*b));
    b->pprev = pprev;
    POISON(b, sizeof(*b));
}

static void *big_alloc(est_json_arena_t *a, size_t n)
{
    if (n > SIZE_MAX - sizeof(big_t))
        return NULL;
    big_t *b = malloc(sizeof(*b) + n);
    if (b == NULL)
        return NULL;
    b->arena = a;
    b->magic = BIG_MAGIC;
    b->next = a->_big;
    b->pprev = &a->_big;
    if (b->next != NULL)
        big_set_pprev(b->next, &b->next);
    a->_big = b;
    POISON(b, sizeof(*b));
    return b + 1;
}

static void big_free(est_json_arena_t *a, void *p)
{
    big_t *b = (big_t *)p - 1;
    UNPOISON(b, sizeof(*b));
    if (b->magic != BIG_MAGIC || b->arena != a) {
        /* a value that is not this arena's was released inside a section: see the rules in
         * jsonarena.h. Freeing it could corrupt the heap; stop here, loudly. */
        fprintf(stderr, "estuary: jansson value %p freed in the wrong arena\n", p);
        abort();
    }
    if (b->next != NULL)
        big_set_pprev(b->next, b->pprev);
    if (b->pprev == &a->_big) {
        a->_big = b->next;
    } else {
        /* pprev points at the `next` field of the previous (poisoned) header */
        big_t *prev = (big_t *)((char *)b->pprev - offsetof(big_t, next));
        UNPOISON(prev, sizeof(*prev));
        prev->next = b->next;
        POISON(prev, sizeof(*prev));
    }
    free(b);
}

void est_json_arena_init(est_json_arena_t *a)
{
    a->_top = a->_end = NULL;
    a->_chunks = NULL;
    a->_big = NULL;
    a->_bump_bytes = 0;
#ifdef EST_ASAN
    a->_max_bump = 0; /* every allocation a separate malloc: ASan sees each one */
#else
    a->_max_bump = EST_JSON_ARENA_MAX_BUMP;
#endif
    a->_next_chunk = FIRST_CHUNK;
}

est_json_arena_t *est_json_arena_enter(est_json_arena_t *a)
{
    est_json_arena_t *prev = current;
    current = a;
    return prev;
}

void est_json_arena_leave(est_json_arena_t *prev)
{
    current = prev;
}

void est_json_arena_reset(est_json_arena_t *a)
{
    if (current == a) {
        fprintf(stderr, "estuary: JSON arena reset while entered\n");
        abort();
    }
    big_t *b = a->_big;
    while (b != NULL) {
        UNPOISON(b, sizeof(*b));
        big_t *next = b->next;
        free(b);
        b = next;
    }
    chunk_t *c = a->_chunks;
    while (c != NULL) {
        chunk_t *next = c->next;
        chunk_release(c);
        c = next;
    }
    size_t max_bump = a->_max_bump;
    est_json_arena_init(a);
    a->_max_bump = max_bump; /* keep a limit a test has set */
}
