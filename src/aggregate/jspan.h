/*
 * estuary - jspan: a validating, zero-copy JSON reader for backend replies (docs/json.md).
 *
 * jspan_parse() checks a complete buffer against RFC 8259 and builds a compact index (the
 * "tape") of its values. Nothing is copied or converted: a number stays the exact text the
 * backend wrote (12345678901234567890, 1e400, -0, 1.10 are kept byte for byte), a string is a
 * span of the input plus a flag telling whether it holds escapes. The input must stay alive
 * and unchanged while the document is used; the document only points into it.
 *
 *     jspan_doc_t doc;
 *     jspan_limits_t lim = {.max_depth = 512, .max_tape_bytes = 16 * len};
 *     if (jspan_parse(&doc, body, len, &lim) != JSPAN_OK)
 *         ... invalid JSON (doc.err_offset: where) ...
 *     size_t v = jspan_lookup_path(&doc, JSPAN_ROOT, "data.user", 9);
 *     if (v != JSPAN_NONE)
 *         jspan_write_value(&doc, v, &out);   // the exact input bytes of that value
 *     jspan_dispose(&doc);
 *
 * Values are named by their index in the tape (size_t); JSPAN_ROOT is the whole document,
 * JSPAN_NONE "no value". An object's children are its members' keys and values in turn
 * (key, value, key, value...): jspan_child() gives the first key, the value of a key k is
 * k + 1, jspan_next() skips a whole value (its subtree) in O(1).
 *
 * Strictness (RFC 8259 and at least jansson's, docs/json.md): UTF-8 validated (no overlong
 * forms, no UTF-8-encoded surrogates D800-DFFF, nothing above U+10FFFF), \u escapes checked
 * (a high surrogate must be followed by a low one, a lone low one is refused), no leading
 * zeros, no NaN/Infinity, no control characters in strings, no byte-order mark, nothing but
 * whitespace after the value. Duplicate keys are accepted; lookups return the LAST one.
 * Any value may be the top-level one (RFC 8259 section 2).
 *
 * Limits, both from the caller:
 * - max_depth: containers nested deeper are refused (JSPAN_ERR_DEPTH); the parser does not
 *   recurse, it keeps an explicit stack of 24 bytes per open container.
 * - max_tape_bytes: the tape is one array of entries (2 size_t = 16 bytes on 64-bit) grown by
 *   doubling, never beyond this bound (JSPAN_ERR_LIMIT) nor beyond one entry per input byte.
 *   A scalar takes one entry, a container two (open and close). Worst case tape bytes per
 *   input byte on 64-bit: 10.7 ("[[],[],[],..." : 2 entries per 3 bytes), 8 for scalars
 *   ("[0,0,0,..."), absolute bound 16 (never more entries than bytes); plus the doubling
 *   slack while growing (at most 2x, capped by the bound). Typical replies: 1-3 bytes.
 *
 * Not thread-safe per document; documents are independent.
 */
#ifndef EST_AGGREGATE_JSPAN_H
#define EST_AGGREGATE_JSPAN_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    JSPAN_NULL,
    JSPAN_FALSE,
    JSPAN_TRUE,
    JSPAN_NUMBER,
    JSPAN_STRING,
    JSPAN_ARRAY,
    JSPAN_OBJECT,
} jspan_type_t;

typedef enum {
    JSPAN_OK = 0,
    JSPAN_ERR_EOF,      /* input ended inside a value (or held no value at all) */
    JSPAN_ERR_SYNTAX,   /* unexpected byte */
    JSPAN_ERR_NUMBER,   /* malformed number: leading zero, missing digits, '+', '.5'... */
    JSPAN_ERR_STRING,   /* control character in a string */
    JSPAN_ERR_ESCAPE,   /* bad escape or \u escape (lone or reversed surrogate) */
    JSPAN_ERR_UTF8,     /* invalid UTF-8 */
    JSPAN_ERR_TRAILING, /* something else than whitespace after the value */
    JSPAN_ERR_DEPTH,    /* nesting deeper than max_depth */
    JSPAN_ERR_LIMIT,    /* the tape would exceed max_tape_bytes, or the input is too big */
    JSPAN_ERR_NOMEM,    /* malloc failed */
} jspan_status_t;

#define JSPAN_NONE SIZE_MAX
#define JSPAN_ROOT ((size_t)0)
/* a sensible depth for backend replies (SPEC: at least 512) */
#define JSPAN_DEFAULT_MAX_DEPTH 10000

typedef struct {
    size_t max_depth;      /* containers nested more than this are refused; 0: JSPAN_DEFAULT_MAX_DEPTH */
    size_t max_tape_bytes; /* bytes of tape at most; 0: no bound but the inherent 16 per input byte */
    /* 1: scalars that are elements of an array get no tape entry (still validated, still
     * counted by jspan_count). An array's jspan_child/jspan_next then visit only its container
     * elements; its scalars are only reachable through its raw text. A long array of numbers
     * then costs no tape (the merge copies arrays as text and only looks into objects). */
    int skip_array_scalars;
} jspan_limits_t;

/* one tape entry; private (see jspan.c) */
typedef struct {
    size_t _off, _aux;
} jspan_entry_t;

typedef struct {
    const char *input; /* borrowed, must outlive the document */
    size_t len;
    size_t err_offset; /* after a failed parse: byte offset of the error */
    int has_ws;        /* after a parse: whitespace outside strings somewhere (else compact = raw) */
    jspan_entry_t *_tape;
    size_t _n, _cap;
} jspan_doc_t;

/* Parses input[0..len) (no NUL needed; NUL bytes are just bytes) into doc. limits may be NULL
 * (defaults: JSPAN_DEFAULT_MAX_DEPTH, no tape bound). On error the doc holds nothing to
 * dispose (disposing it anyway is harmless) and doc->err_offset tells where. */
jspan_status_t jspan_parse(jspan_doc_t *doc, const char *input, size_t len, const jspan_limits_t *limits);
/* Frees the tape; the input is the caller's. */
void jspan_dispose(jspan_doc_t *doc);
const char *jspan_strerror(jspan_status_t status);

/* number of values in the document (keys included) */
size_t jspan_num_values(const jspan_doc_t *doc);
/* bytes of tape held */
size_t jspan_tape_bytes(const jspan_doc_t *doc);

jspan_type_t jspan_type(const jspan_doc_t *doc, size_t v);
/* The exact input bytes of a value: for a string with its quotes and escapes as written, for
 * a container from its bracket to its closing bracket (inner whitespace kept). */
const char *jspan_raw(const jspan_doc_t *doc, size_t v, size_t *len);
/* elements of an array, members (key/value pairs) of an object, 0 otherwise */
size_t jspan_count(const jspan_doc_t *doc, size_t v);
/* first child of a container (for an object: its first key), JSPAN_NONE when empty or scalar */
size_t jspan_child(const jspan_doc_t *doc, size_t v);
/* the value after v (and its whole subtree) in the same container, JSPAN_NONE after the last;
 * in an object the next of a key is its value, the next of a value the next key */
size_t jspan_next(const jspan_doc_t *doc, size_t v);

/* the tape index of the last entry of v's subtree (v itself for a scalar); the values nested
 * in v are the indices in (v, jspan_end(v)] */
size_t jspan_end(const jspan_doc_t *doc, size_t v);

/* Strings (keys too). The content between the quotes, raw (escapes as written): */
const char *jspan_str_raw(const jspan_doc_t *doc, size_t v, size_t *len);
/* whether the string holds any backslash escape (if not, raw content == value) */
int jspan_str_has_escapes(const jspan_doc_t *doc, size_t v);
/* whether the string's value (escapes decoded) equals key[0..keylen) */
int jspan_str_equals(const jspan_doc_t *doc, size_t v, const char *key, size_t keylen);
/* Decodes the string's value (UTF-8, may hold NUL bytes) into out, which needs room for the raw
 * content's length (decoding never grows it); returns the decoded length. */
size_t jspan_str_decode(const jspan_doc_t *doc, size_t v, char *out);

/* whether two strings (of two documents, or the same) have the same value, escapes decoded */
int jspan_str_same(const jspan_doc_t *a, size_t va, const jspan_doc_t *b, size_t vb);
/* FNV-1a of bytes; jspan_str_hash(v) == jspan_hash_bytes(value of v) */
uint64_t jspan_hash_bytes(const char *s, size_t len);
/* a hash of the string's value (escapes decoded), equal for equal values */
uint64_t jspan_str_hash(const jspan_doc_t *doc, size_t v);

/* The tape indices of the objects that hold a key more than once, in ascending order, in a
 * malloc'd array (*out; NULL when there is none). O(members) with a hash table for large
 * objects. Returns 0, -1 when out of memory. */
int jspan_find_dup_objects(const jspan_doc_t *doc, size_t **out, size_t *num);

/* The value of member key[0..keylen) of object obj (the last one if the key repeats),
 * JSPAN_NONE when absent or obj is no object. O(members of obj). */
size_t jspan_object_get(const jspan_doc_t *doc, size_t obj, const char *key, size_t keylen);
/* The value at a dot path ("data.user": member "user" of member "data"), as SPEC `target`:
 * every segment is an object key (no array index, an empty segment is the key ""); JSPAN_NONE
 * when a segment is missing or crosses a non-object. */
size_t jspan_lookup_path(const jspan_doc_t *doc, size_t v, const char *path, size_t pathlen);

/* A growing output buffer with a bound. Zero-initialise, set max (0: SIZE_MAX), free data. */
typedef struct {
    char *data;
    size_t len, cap, max;
} jspan_buf_t;

/* Appends bytes; -1 (buffer unchanged) when max would be exceeded or malloc fails. */
int jspan_buf_append(jspan_buf_t *b, const void *p, size_t n);
void jspan_buf_dispose(jspan_buf_t *b);
/* Appends the exact input bytes of value v (jspan_raw): numbers and strings byte for byte,
 * whitespace inside containers kept as the backend sent it. 0 or -1 as jspan_buf_append. */
int jspan_write_value(const jspan_doc_t *doc, size_t v, jspan_buf_t *out);
/* Same value with the whitespace outside strings dropped (scalars still byte for byte); a plain
 * copy when the document holds no such whitespace (has_ws). */
int jspan_write_compact(const jspan_doc_t *doc, size_t v, jspan_buf_t *out);
/* Appends raw[0..len) with the whitespace outside strings dropped; raw must be a run of valid
 * JSON text that starts and ends outside strings (a value, or a run of array elements). */
int jspan_write_compact_bytes(const char *raw, size_t len, jspan_buf_t *out);

#endif
