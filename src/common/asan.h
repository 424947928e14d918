/*
 * estuary - AddressSanitizer hooks for code that recycles memory itself (free lists,
 * arenas): poisoned memory stays reported as a use after free under ESTUARY_SANITIZE.
 * EST_ASAN is 1 when building with ASan; POISON / UNPOISON are no-ops otherwise.
 */
#ifndef EST_COMMON_ASAN_H
#define EST_COMMON_ASAN_H

#if defined(__SANITIZE_ADDRESS__)
#define EST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EST_ASAN 1
#endif
#endif

#ifdef EST_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#endif
