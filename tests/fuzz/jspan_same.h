/*
 * estuary - a check shared by the jspan and merge fuzz drivers: the index that jspan builds
 * with skip_array_scalars (src/aggregate/jspan.h) describes the same document as the full one.
 */
#ifndef EST_FUZZ_JSPAN_SAME_H
#define EST_FUZZ_JSPAN_SAME_H

#include <stdlib.h>
#include "aggregate/jspan.h"

/* full-mode value fv and skip_array_scalars-mode value sv are the same value: same bytes,
 * type and count; in the skip document an array's children are only its container elements,
 * an object's children are all its members. Aborts otherwise. */
static void jspan_same_index(const jspan_doc_t *full, size_t fv, const jspan_doc_t *skip, size_t sv)
{
    size_t fl, sl;
    const char *fr = jspan_raw(full, fv, &fl), *sr = jspan_raw(skip, sv, &sl);
    jspan_type_t t = jspan_type(full, fv);
    if (fr != sr || fl != sl || t != jspan_type(skip, sv) || jspan_count(full, fv) != jspan_count(skip, sv))
        abort();
    size_t sc = jspan_child(skip, sv);
    for (size_t fc = jspan_child(full, fv); fc != JSPAN_NONE; fc = jspan_next(full, fc)) {
        jspan_type_t ct = jspan_type(full, fc);
        if (t == JSPAN_ARRAY && ct != JSPAN_ARRAY && ct != JSPAN_OBJECT)
            continue;
        if (sc == JSPAN_NONE)
            abort();
        jspan_same_index(full, fc, skip, sc);
        sc = jspan_next(skip, sc);
    }
    if (sc != JSPAN_NONE)
        abort();
}

#endif
