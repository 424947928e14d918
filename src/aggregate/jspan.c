/*
 * estuary - jspan: a validating, zero-copy JSON reader (see jspan.h and docs/json.md).
 *
 * Tape entries (two size_t each), in document order:
 * - a scalar: _off = offset of its first byte, _aux = its length in bytes, plus TAG_ESC for a
 *   string holding a backslash escape;
 * - a container: an open entry (_off = offset of '[' or '{', _aux = index of its close entry)
 *   and, after its children, a close entry (_off = offset just after ']' or '}',
 *   _aux = TAG_CLOSE | number of elements or members).
 * The type of a value is the first byte of its text, so it takes no room. Every entry stands
 * for at least one byte of input of its own (a scalar's first byte, a bracket), hence never
 * more entries than input bytes.
 *
 * The grammar is RFC 8259 section 2-8; the UTF-8 check is Unicode 15 table 3-7 (RFC 3629
 * section 4), which refuses overlong forms, encoded surrogates and code points above U+10FFFF.
 */
#include "aggregate/jspan.h"

#include <stdlib.h>
#include <string.h>

#define TAG_CLOSE (~(SIZE_MAX >> 1))
#define TAG_ESC (TAG_CLOSE >> 1)
#define AUX_MASK (SIZE_MAX >> 2)
/* lengths and counts share _aux with two tag bits */
#define MAX_INPUT AUX_MASK

struct frame {
    size_t open;  /* tape index of the container's open entry */
    size_t count; /* elements or members so far */
    int is_object;
};

struct parser {
    const unsigned char *in;
    size_t len;
    size_t p;
    jspan_entry_t *tape;
    size_t n, cap, max_entries;
    struct frame *stack;
    size_t depth, stack_cap, max_depth;
    int skip_array_scalars;
    int saw_ws; /* whitespace skipped somewhere */
    struct frame inline_stack[32];
};

static int tape_grow(struct parser *ps);
static jspan_status_t scan_string(struct parser *ps, size_t *aux);
static jspan_status_t scan_number(struct parser *ps);
static int utf8_seq(const unsigned char *s, size_t avail);
static int hex4(const unsigned char *s, unsigned *out);

/* byte classes for the string fast path: 0 plain ASCII, 1 needs a look ('"', '\\', control,
 * non-ASCII) */
static const unsigned char str_special[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x00 */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x20 '"' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, /* 0x40 '\\' */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x60 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x80 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xa0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xc0 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0xe0 */
};

/* RFC 8259 section 2: whitespace is space, horizontal tab, line feed, carriage return */
static const unsigned char ws_char[256] = {[' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1};
/* the bytes a number may hold */
static const unsigned char num_char[256] = {['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
                                            ['8'] = 1, ['9'] = 1, ['.'] = 1, ['e'] = 1, ['E'] = 1, ['+'] = 1, ['-'] = 1};

static inline int is_ws(unsigned char c)
{
    return ws_char[c];
}

static inline void skip_ws(struct parser *ps)
{
    if (ps->p < ps->len && is_ws(ps->in[ps->p])) {
        ps->saw_ws = 1;
        do
            ++ps->p;
        while (ps->p < ps->len && is_ws(ps->in[ps->p]));
    }
}

static inline int tape_push(struct parser *ps, size_t off, size_t aux)
{
    if (ps->n == ps->cap && tape_grow(ps) != 0)
        return -1;
    ps->tape[ps->n]._off = off;
    ps->tape[ps->n]._aux = aux;
    ++ps->n;
    return 0;
}

static int tape_grow(struct parser *ps)
{
    if (ps->cap >= ps->max_entries)
        return -1;
    size_t cap = ps->cap < 16 ? 16 : ps->cap * 2;
    if (cap > ps->max_entries || cap < ps->cap)
        cap = ps->max_entries;
    jspan_entry_t *t = realloc(ps->tape, cap * sizeof(*t));
    if (t == NULL)
        return -2;
    ps->tape = t;
    ps->cap = cap;
    return 0;
}

static int stack_push(struct parser *ps, size_t open, int is_object)
{
    if (ps->depth == ps->stack_cap) {
        size_t cap = ps->stack_cap * 2;
        if (cap > ps->max_depth)
            cap = ps->max_depth;
        struct frame *s;
        if (ps->stack == ps->inline_stack) {
            if ((s = malloc(cap * sizeof(*s))) != NULL)
                memcpy(s, ps->inline_stack, ps->depth * sizeof(*s));
        } else {
            s = realloc(ps->stack, cap * sizeof(*s));
        }
        if (s == NULL)
            return -1;
        ps->stack = s;
        ps->stack_cap = cap;
    }
    ps->stack[ps->depth].open = open;
    ps->stack[ps->depth].count = 0;
    ps->stack[ps->depth].is_object = is_object;
    ++ps->depth;
    return 0;
}

/* Length of the valid UTF-8 sequence starting at s (a byte >= 0x80), 0 when invalid
 * (Unicode table 3-7). */
static int utf8_seq(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    unsigned char lo = 0x80, hi = 0xbf;
    int n;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong below U+0800 */
        else if (c == 0xed)
            hi = 0x9f; /* U+D800..U+DFFF are surrogates, not characters */
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong below U+10000 */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0; /* continuation byte, overlong lead C0/C1, or F5..FF */
    }
    if (avail < (size_t)n)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (int i = 2; i < n; ++i)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return n;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* 4 hex digits at s (the caller checked there are 4 bytes) */
static int hex4(const unsigned char *s, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
        int h = hexval(s[i]);
        if (h < 0)
            return -1;
        v = v << 4 | (unsigned)h;
    }
    *out = v;
    return 0;
}

/* At the opening quote; on success ps->p is after the closing quote and *aux the entry's aux
 * (length, TAG_ESC). RFC 8259 section 7. */
static jspan_status_t scan_string(struct parser *ps, size_t *aux)
{
    const unsigned char *in = ps->in;
    size_t len = ps->len, start = ps->p, p = ps->p + 1;
    size_t esc = 0;
    for (;;) {
        while (p < len && !str_special[in[p]])
            ++p;
        if (p >= len) {
            ps->p = p;
            return JSPAN_ERR_EOF;
        }
        unsigned char c = in[p];
        if (c == '"') {
            ++p;
            break;
        }
        if (c < 0x20) {
            ps->p = p;
            return JSPAN_ERR_STRING;
        }
        if (c >= 0x80) {
            int n = utf8_seq(in + p, len - p);
            if (n == 0) {
                ps->p = p;
                return JSPAN_ERR_UTF8;
            }
            p += (size_t)n;
            continue;
        }
        /* backslash */
        esc = TAG_ESC;
        if (len - p < 2) {
            ps->p = len;
            return JSPAN_ERR_EOF;
        }
        switch (in[p + 1]) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            p += 2;
            continue;
        case 'u':
            break;
        default:
            ps->p = p;
            return JSPAN_ERR_ESCAPE;
        }
        unsigned u, u2;
        if (len - p < 6) {
            ps->p = len;
            return JSPAN_ERR_EOF;
        }
        if (hex4(in + p + 2, &u) != 0) {
            ps->p = p;
            return JSPAN_ERR_ESCAPE;
        }
        if (u >= 0xdc00 && u <= 0xdfff) {
            ps->p = p; /* a low surrogate first: lone or reversed pair */
            return JSPAN_ERR_ESCAPE;
        }
        if (u >= 0xd800 && u <= 0xdbff) {
            /* RFC 8259 section 7: a character outside the BMP is a surrogate pair; the high
             * half must be followed by an escaped low half */
            if (len - p < 12) {
                ps->p = p;
                return p + 6 < len && in[p + 6] != '\\' ? JSPAN_ERR_ESCAPE : JSPAN_ERR_EOF;
            }
            if (in[p + 6] != '\\' || in[p + 7] != 'u' || hex4(in + p + 8, &u2) != 0 || u2 < 0xdc00 || u2 > 0xdfff) {
                ps->p = p;
                return JSPAN_ERR_ESCAPE;
            }
            p += 12;
        } else {
            p += 6;
        }
    }
    ps->p = p;
    *aux = (p - start) | esc;
    return JSPAN_OK;
}

/* RFC 8259 section 6: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
static jspan_status_t scan_number(struct parser *ps)
{
    const unsigned char *in = ps->in;
    size_t len = ps->len, p = ps->p;
    if (in[p] == '-')
        ++p;
    if (p >= len)
        goto Eof;
    if (in[p] == '0') {
        ++p;
    } else if (in[p] >= '1' && in[p] <= '9') {
        while (p < len && in[p] >= '0' && in[p] <= '9')
            ++p;
    } else {
        goto Bad;
    }
    if (p < len && in[p] == '.') {
        ++p;
        if (p >= len)
            goto Eof;
        if (!(in[p] >= '0' && in[p] <= '9'))
            goto Bad;
        while (p < len && in[p] >= '0' && in[p] <= '9')
            ++p;
    }
    if (p < len && (in[p] == 'e' || in[p] == 'E')) {
        ++p;
        if (p < len && (in[p] == '+' || in[p] == '-'))
            ++p;
        if (p >= len)
            goto Eof;
        if (!(in[p] >= '0' && in[p] <= '9'))
            goto Bad;
        while (p < len && in[p] >= '0' && in[p] <= '9')
            ++p;
    }
    /* "01", "1.5.2", "-0x1": the grammar stops here and the caller sees a byte that cannot
     * follow a value; report the more useful "bad number" when it is a number character */
    if (p < len && num_char[in[p]])
        goto Bad;
    ps->p = p;
    return JSPAN_OK;
Eof:
    ps->p = p;
    return JSPAN_ERR_EOF;
Bad:
    ps->p = p;
    return JSPAN_ERR_NUMBER;
}

static jspan_status_t scan_literal(struct parser *ps, const char *word, size_t wlen)
{
    size_t avail = ps->len - ps->p;
    size_t n = avail < wlen ? avail : wlen;
    if (memcmp(ps->in + ps->p, word, n) != 0)
        return JSPAN_ERR_SYNTAX; /* "nan", "Infinity", "nul!" */
    if (n < wlen) {
        ps->p = ps->len;
        return JSPAN_ERR_EOF;
    }
    ps->p += wlen;
    return JSPAN_OK;
}

static jspan_status_t close_container(struct parser *ps)
{
    struct frame *f = &ps->stack[ps->depth - 1];
    ++ps->p; /* the bracket */
    if (tape_push(ps, ps->p, TAG_CLOSE | f->count) != 0)
        return ps->cap >= ps->max_entries ? JSPAN_ERR_LIMIT : JSPAN_ERR_NOMEM;
    ps->tape[f->open]._aux = ps->n - 1;
    --ps->depth;
    return JSPAN_OK;
}

jspan_status_t jspan_parse(jspan_doc_t *doc, const char *input, size_t len, const jspan_limits_t *limits)
{
    struct parser ps;
    jspan_status_t st = JSPAN_OK;
    memset(doc, 0, sizeof(*doc));
    doc->input = input;
    doc->len = len;
    if (len > MAX_INPUT) {
        doc->err_offset = 0;
        return JSPAN_ERR_LIMIT;
    }
    ps.in = (const unsigned char *)input;
    ps.len = len;
    ps.p = 0;
    ps.tape = NULL;
    ps.n = ps.cap = 0;
    ps.max_entries = len; /* see the file comment: an entry per input byte at most */
    if (limits != NULL && limits->max_tape_bytes != 0 && limits->max_tape_bytes / sizeof(jspan_entry_t) < ps.max_entries)
        ps.max_entries = limits->max_tape_bytes / sizeof(jspan_entry_t);
    ps.max_depth = limits != NULL && limits->max_depth != 0 ? limits->max_depth : JSPAN_DEFAULT_MAX_DEPTH;
    ps.skip_array_scalars = limits != NULL && limits->skip_array_scalars;
    ps.saw_ws = 0;
    /* neither can exceed the input's length (an entry or a level per byte at least), which keeps
     * the allocation sizes below from overflowing */
    if (ps.max_entries > SIZE_MAX / sizeof(jspan_entry_t))
        ps.max_entries = SIZE_MAX / sizeof(jspan_entry_t);
    if (ps.max_depth > len)
        ps.max_depth = len;
    ps.stack = ps.inline_stack;
    ps.stack_cap = sizeof(ps.inline_stack) / sizeof(ps.inline_stack[0]);
    if (ps.stack_cap > ps.max_depth)
        ps.stack_cap = ps.max_depth;
    ps.depth = 0;
    /* a first guess of the tape size for typical JSON (a value per ~8 bytes) */
    if (len / 8 + 16 < ps.max_entries) {
        ps.cap = len / 8 + 16;
        if ((ps.tape = malloc(ps.cap * sizeof(*ps.tape))) == NULL) {
            st = JSPAN_ERR_NOMEM;
            goto Fail;
        }
    }

/* a scalar value: no entry when it is an array element and the caller asked so */
#define PUSH_SCALAR(off, aux)                                                                                                      \
    do {                                                                                                                           \
        if (!ps.skip_array_scalars || ps.depth == 0 || ps.stack[ps.depth - 1].is_object)                                           \
            PUSH(off, aux);                                                                                                        \
    } while (0)
#define PUSH(off, aux)                                                                                                             \
    do {                                                                                                                           \
        if (tape_push(&ps, (off), (aux)) != 0) {                                                                                   \
            st = ps.cap >= ps.max_entries ? JSPAN_ERR_LIMIT : JSPAN_ERR_NOMEM;                                                     \
            goto Fail;                                                                                                             \
        }                                                                                                                          \
    } while (0)

    for (;;) {
        /* a value is expected at ps.p */
        skip_ws(&ps);
        if (ps.p >= len) {
            st = JSPAN_ERR_EOF;
            goto Fail;
        }
        size_t start = ps.p, aux;
        switch (ps.in[ps.p]) {
        case '{':
        case '[':
            if (ps.depth >= ps.max_depth) {
                st = JSPAN_ERR_DEPTH;
                goto Fail;
            }
            PUSH(start, 0);
            if (stack_push(&ps, ps.n - 1, ps.in[start] == '{') != 0) {
                st = JSPAN_ERR_NOMEM;
                goto Fail;
            }
            ++ps.p;
            skip_ws(&ps);
            if (ps.p < len && ps.in[ps.p] == (ps.in[start] == '{' ? '}' : ']')) {
                if ((st = close_container(&ps)) != JSPAN_OK)
                    goto Fail;
                goto AfterValue;
            }
            if (ps.in[start] == '{')
                goto Key;
            continue; /* the first element */
        case '"':
            if ((st = scan_string(&ps, &aux)) != JSPAN_OK)
                goto Fail;
            PUSH_SCALAR(start, aux);
            goto AfterValue;
        case '-':
        case '0':
        case '1':
        case '2':
        case '3':
        case '4':
        case '5':
        case '6':
        case '7':
        case '8':
        case '9':
            if ((st = scan_number(&ps)) != JSPAN_OK)
                goto Fail;
            PUSH_SCALAR(start, ps.p - start);
            goto AfterValue;
        case 't':
            if ((st = scan_literal(&ps, "true", 4)) != JSPAN_OK)
                goto Fail;
            PUSH_SCALAR(start, 4);
            goto AfterValue;
        case 'f':
            if ((st = scan_literal(&ps, "false", 5)) != JSPAN_OK)
                goto Fail;
            PUSH_SCALAR(start, 5);
            goto AfterValue;
        case 'n':
            if ((st = scan_literal(&ps, "null", 4)) != JSPAN_OK)
                goto Fail;
            PUSH_SCALAR(start, 4);
            goto AfterValue;
        default:
            st = JSPAN_ERR_SYNTAX;
            goto Fail;
        }

    AfterValue:
        /* a value just ended: its container wants ',' or its closing bracket */
        if (ps.depth == 0) {
            skip_ws(&ps);
            if (ps.p != len) {
                st = JSPAN_ERR_TRAILING;
                goto Fail;
            }
            break;
        }
        ++ps.stack[ps.depth - 1].count;
        skip_ws(&ps);
        if (ps.p >= len) {
            st = JSPAN_ERR_EOF;
            goto Fail;
        }
        {
            int is_object = ps.stack[ps.depth - 1].is_object;
            unsigned char c = ps.in[ps.p];
            if (c == ',') {
                ++ps.p;
                if (is_object)
                    goto Key;
                continue;
            }
            if (c != (is_object ? '}' : ']')) {
                st = JSPAN_ERR_SYNTAX;
                goto Fail;
            }
            if ((st = close_container(&ps)) != JSPAN_OK)
                goto Fail;
            goto AfterValue;
        }

    Key:
        /* a member name, then ':' (RFC 8259 section 4) */
        skip_ws(&ps);
        if (ps.p >= len) {
            st = JSPAN_ERR_EOF;
            goto Fail;
        }
        if (ps.in[ps.p] != '"') {
            st = JSPAN_ERR_SYNTAX;
            goto Fail;
        }
        start = ps.p;
        if ((st = scan_string(&ps, &aux)) != JSPAN_OK)
            goto Fail;
        PUSH(start, aux);
        skip_ws(&ps);
        if (ps.p >= len) {
            st = JSPAN_ERR_EOF;
            goto Fail;
        }
        if (ps.in[ps.p] != ':') {
            st = JSPAN_ERR_SYNTAX;
            goto Fail;
        }
        ++ps.p;
    }
#undef PUSH
#undef PUSH_SCALAR

    if (ps.stack != ps.inline_stack)
        free(ps.stack);
    /* give back the doubling slack when it is worth it (over 4 KiB and 1/8 of the tape): the
     * document may live as long as the request */
    if ((ps.cap - ps.n) * sizeof(*ps.tape) > 4096 && ps.cap - ps.n > ps.n / 8) {
        jspan_entry_t *t = realloc(ps.tape, ps.n * sizeof(*t));
        if (t != NULL) {
            ps.tape = t;
            ps.cap = ps.n;
        }
    }
    doc->_tape = ps.tape;
    doc->has_ws = ps.saw_ws;
    doc->_n = ps.n;
    doc->_cap = ps.cap;
    return JSPAN_OK;

Fail:
    if (ps.stack != ps.inline_stack)
        free(ps.stack);
    free(ps.tape);
    doc->err_offset = ps.p;
    return st;
}

void jspan_dispose(jspan_doc_t *doc)
{
    free(doc->_tape);
    doc->_tape = NULL;
    doc->_n = doc->_cap = 0;
}

const char *jspan_strerror(jspan_status_t status)
{
    switch (status) {
    case JSPAN_OK:
        return "ok";
    case JSPAN_ERR_EOF:
        return "unexpected end of input";
    case JSPAN_ERR_SYNTAX:
        return "unexpected character";
    case JSPAN_ERR_NUMBER:
        return "invalid number";
    case JSPAN_ERR_STRING:
        return "control character in string";
    case JSPAN_ERR_ESCAPE:
        return "invalid escape";
    case JSPAN_ERR_UTF8:
        return "invalid UTF-8";
    case JSPAN_ERR_TRAILING:
        return "garbage after the value";
    case JSPAN_ERR_DEPTH:
        return "nesting too deep";
    case JSPAN_ERR_LIMIT:
        return "document too big";
    case JSPAN_ERR_NOMEM:
        return "out of memory";
    }
    return "unknown error";
}

size_t jspan_num_values(const jspan_doc_t *doc)
{
    size_t n = 0;
    for (size_t i = 0; i < doc->_n; ++i)
        n += (doc->_tape[i]._aux & TAG_CLOSE) == 0;
    return n;
}

size_t jspan_tape_bytes(const jspan_doc_t *doc)
{
    return doc->_cap * sizeof(jspan_entry_t);
}

static inline unsigned char first_byte(const jspan_doc_t *doc, size_t v)
{
    return (unsigned char)doc->input[doc->_tape[v]._off];
}

static inline int is_container_byte(unsigned char c)
{
    return c == '[' || c == '{';
}

jspan_type_t jspan_type(const jspan_doc_t *doc, size_t v)
{
    switch (first_byte(doc, v)) {
    case '{':
        return JSPAN_OBJECT;
    case '[':
        return JSPAN_ARRAY;
    case '"':
        return JSPAN_STRING;
    case 't':
        return JSPAN_TRUE;
    case 'f':
        return JSPAN_FALSE;
    case 'n':
        return JSPAN_NULL;
    default:
        return JSPAN_NUMBER;
    }
}

const char *jspan_raw(const jspan_doc_t *doc, size_t v, size_t *len)
{
    const jspan_entry_t *e = &doc->_tape[v];
    if (is_container_byte(first_byte(doc, v)))
        *len = doc->_tape[e->_aux]._off - e->_off;
    else
        *len = e->_aux & AUX_MASK;
    return doc->input + e->_off;
}

size_t jspan_count(const jspan_doc_t *doc, size_t v)
{
    if (!is_container_byte(first_byte(doc, v)))
        return 0;
    return doc->_tape[doc->_tape[v]._aux]._aux & AUX_MASK;
}

size_t jspan_child(const jspan_doc_t *doc, size_t v)
{
    if (!is_container_byte(first_byte(doc, v)) || doc->_tape[v]._aux == v + 1)
        return JSPAN_NONE;
    return v + 1;
}

size_t jspan_next(const jspan_doc_t *doc, size_t v)
{
    size_t k = is_container_byte(first_byte(doc, v)) ? doc->_tape[v]._aux + 1 : v + 1;
    if (k >= doc->_n || (doc->_tape[k]._aux & TAG_CLOSE) != 0)
        return JSPAN_NONE;
    return k;
}

const char *jspan_str_raw(const jspan_doc_t *doc, size_t v, size_t *len)
{
    const jspan_entry_t *e = &doc->_tape[v];
    *len = (e->_aux & AUX_MASK) - 2;
    return doc->input + e->_off + 1;
}

int jspan_str_has_escapes(const jspan_doc_t *doc, size_t v)
{
    return (doc->_tape[v]._aux & TAG_ESC) != 0;
}

/* Decodes the character at s[*i] (inside a validated string, not at its end) into out (1-4
 * bytes); returns the number of bytes written and advances *i. */
static size_t decode_one(const unsigned char *s, size_t *i, unsigned char *out)
{
    size_t p = *i;
    if (s[p] != '\\') {
        out[0] = s[p];
        *i = p + 1;
        return 1;
    }
    unsigned char e = s[p + 1];
    /* the string was validated by the parse, so hex4 always succeeds here; the initial values
     * only keep gcc -O3 from seeing a path where they are unset */
    unsigned cp = 0, lo = 0xdc00;
    switch (e) {
    case 'b':
        out[0] = '\b';
        break;
    case 'f':
        out[0] = '\f';
        break;
    case 'n':
        out[0] = '\n';
        break;
    case 'r':
        out[0] = '\r';
        break;
    case 't':
        out[0] = '\t';
        break;
    case 'u':
        hex4(s + p + 2, &cp);
        if (cp >= 0xd800 && cp <= 0xdbff) {
            hex4(s + p + 8, &lo);
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            *i = p + 12;
        } else {
            *i = p + 6;
        }
        if (cp < 0x80) {
            out[0] = (unsigned char)cp;
            return 1;
        }
        if (cp < 0x800) {
            out[0] = (unsigned char)(0xc0 | cp >> 6);
            out[1] = (unsigned char)(0x80 | (cp & 0x3f));
            return 2;
        }
        if (cp < 0x10000) {
            out[0] = (unsigned char)(0xe0 | cp >> 12);
            out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
            out[2] = (unsigned char)(0x80 | (cp & 0x3f));
            return 3;
        }
        out[0] = (unsigned char)(0xf0 | cp >> 18);
        out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
        out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
        out[3] = (unsigned char)(0x80 | (cp & 0x3f));
        return 4;
    default: /* '"', '\\', '/' */
        out[0] = e;
        break;
    }
    *i = p + 2;
    return 1;
}

int jspan_str_equals(const jspan_doc_t *doc, size_t v, const char *key, size_t keylen)
{
    size_t len;
    const unsigned char *s = (const unsigned char *)jspan_str_raw(doc, v, &len);
    if (!jspan_str_has_escapes(doc, v))
        return len == keylen && memcmp(s, key, len) == 0;
    /* decoding never grows a string: a longer key cannot match */
    if (keylen > len)
        return 0;
    size_t i = 0, k = 0;
    unsigned char buf[4];
    while (i < len) {
        size_t n = decode_one(s, &i, buf);
        if (keylen - k < n || memcmp(key + k, buf, n) != 0)
            return 0;
        k += n;
    }
    return k == keylen;
}

size_t jspan_str_decode(const jspan_doc_t *doc, size_t v, char *out)
{
    size_t len;
    const unsigned char *s = (const unsigned char *)jspan_str_raw(doc, v, &len);
    if (!jspan_str_has_escapes(doc, v)) {
        memcpy(out, s, len);
        return len;
    }
    size_t i = 0, k = 0;
    while (i < len)
        k += decode_one(s, &i, (unsigned char *)out + k);
    return k;
}

size_t jspan_object_get(const jspan_doc_t *doc, size_t obj, const char *key, size_t keylen)
{
    if (first_byte(doc, obj) != '{')
        return JSPAN_NONE;
    size_t found = JSPAN_NONE;
    for (size_t k = jspan_child(doc, obj); k != JSPAN_NONE; k = jspan_next(doc, k + 1)) {
        /* SPEC: duplicate keys keep the last one, so the walk goes on after a match */
        if (jspan_str_equals(doc, k, key, keylen))
            found = k + 1;
    }
    return found;
}

size_t jspan_lookup_path(const jspan_doc_t *doc, size_t v, const char *path, size_t pathlen)
{
    for (;;) {
        const char *dot = memchr(path, '.', pathlen);
        size_t seg = dot != NULL ? (size_t)(dot - path) : pathlen;
        if ((v = jspan_object_get(doc, v, path, seg)) == JSPAN_NONE || dot == NULL)
            return v;
        path += seg + 1;
        pathlen -= seg + 1;
    }
}

int jspan_buf_append(jspan_buf_t *b, const void *p, size_t n)
{
    size_t max = b->max != 0 ? b->max : SIZE_MAX;
    if (n > max - b->len)
        return -1;
    if (n > b->cap - b->len) {
        size_t cap = b->cap < 256 ? 256 : b->cap;
        while (cap - b->len < n)
            cap = cap > max / 2 ? max : cap * 2;
        char *d = realloc(b->data, cap);
        if (d == NULL)
            return -1;
        b->data = d;
        b->cap = cap;
    }
    if (n != 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void jspan_buf_dispose(jspan_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int jspan_write_value(const jspan_doc_t *doc, size_t v, jspan_buf_t *out)
{
    size_t len;
    const char *raw = jspan_raw(doc, v, &len);
    return jspan_buf_append(out, raw, len);
}

int jspan_write_compact(const jspan_doc_t *doc, size_t v, jspan_buf_t *out)
{
    size_t len;
    const char *raw = jspan_raw(doc, v, &len);
    if (!is_container_byte((unsigned char)raw[0]) || !doc->has_ws)
        return jspan_buf_append(out, raw, len);
    return jspan_write_compact_bytes(raw, len, out);
}

int jspan_write_compact_bytes(const char *raw, size_t len, jspan_buf_t *out)
{
    /* the text is valid JSON: copy runs of bytes, dropping whitespace outside strings */
    size_t i = 0, run = 0;
    while (i < len) {
        unsigned char c = (unsigned char)raw[i];
        if (c == '"') {
            for (++i; raw[i] != '"'; ++i)
                if (raw[i] == '\\')
                    ++i;
            ++i;
        } else if (is_ws(c)) {
            if (jspan_buf_append(out, raw + run, i - run) != 0)
                return -1;
            while (i < len && is_ws((unsigned char)raw[i]))
                ++i;
            run = i;
        } else {
            ++i;
        }
    }
    return jspan_buf_append(out, raw + run, i - run);
}

size_t jspan_end(const jspan_doc_t *doc, size_t v)
{
    return is_container_byte(first_byte(doc, v)) ? doc->_tape[v]._aux : v;
}

/* decodes a string into a malloc'd buffer (*out, freed by the caller unless it is `small`) */
static const char *str_value(const jspan_doc_t *doc, size_t v, char *small, size_t smallsz, size_t *len, char **heap)
{
    size_t rl;
    const char *raw = jspan_str_raw(doc, v, &rl);
    *heap = NULL;
    if (!jspan_str_has_escapes(doc, v)) {
        *len = rl;
        return raw;
    }
    char *buf = small;
    if (rl > smallsz && (buf = *heap = malloc(rl)) == NULL)
        return NULL;
    *len = jspan_str_decode(doc, v, buf);
    return buf;
}

int jspan_str_same(const jspan_doc_t *a, size_t va, const jspan_doc_t *b, size_t vb)
{
    size_t la, lb;
    const char *ra = jspan_str_raw(a, va, &la), *rb = jspan_str_raw(b, vb, &lb);
    if (!jspan_str_has_escapes(a, va) && !jspan_str_has_escapes(b, vb))
        return la == lb && memcmp(ra, rb, la) == 0;
    char small[256], *heap;
    size_t len;
    const char *val = str_value(a, va, small, sizeof(small), &len, &heap);
    /* out of memory: compare raw texts, which only misses escaped spellings of one key */
    int same = val != NULL ? jspan_str_equals(b, vb, val, len) : la == lb && memcmp(ra, rb, la) == 0;
    free(heap);
    return same;
}

uint64_t jspan_hash_bytes(const char *s, size_t len)
{
    /* FNV-1a, 64 bit */
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; ++i)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
    return h;
}

uint64_t jspan_str_hash(const jspan_doc_t *doc, size_t v)
{
    char small[256], *heap;
    size_t len;
    const char *val = str_value(doc, v, small, sizeof(small), &len, &heap);
    if (val == NULL) /* out of memory: a constant keeps the hash consistent, only slower */
        return 0;
    uint64_t h = jspan_hash_bytes(val, len);
    free(heap);
    return h;
}

/* whether object `obj` (with `m` >= 2 members) holds a key twice; `tbl` is scratch for a hash
 * table of *tblcap slots, grown here. -1 when out of memory. */
static int object_has_dup(const jspan_doc_t *doc, size_t obj, size_t m, size_t **tbl, size_t *tblcap)
{
    if (m <= 8) {
        /* pairwise; keys without escapes compare as raw bytes (most keys) */
        const char *raw[8];
        size_t len[8], idx[8], n = 0;
        unsigned char esc[8];
        /* the tape walked directly: key k, its value k + 1, the next key after the value's
         * subtree; members' values are always on the tape */
        for (size_t k = obj + 1; (doc->_tape[k]._aux & TAG_CLOSE) == 0;) {
            const jspan_entry_t *e = &doc->_tape[k];
            raw[n] = doc->input + e->_off;
            len[n] = e->_aux & AUX_MASK;
            esc[n] = (e->_aux & TAG_ESC) != 0;
            idx[n] = k;
            for (size_t j = 0; j < n; ++j) {
                if (esc[j] | esc[n]) {
                    if (jspan_str_same(doc, idx[j], doc, k))
                        return 1;
                } else if (len[j] == len[n] && raw[j][1] == raw[n][1] && memcmp(raw[j], raw[n], len[n]) == 0) {
                    return 1;
                }
            }
            size_t v = k + 1;
            k = is_container_byte((unsigned char)doc->input[doc->_tape[v]._off]) ? doc->_tape[v]._aux + 1 : v + 1;
            ++n;
        }
        return 0;
    }
    size_t cap = 16;
    while (cap < m * 2)
        cap *= 2;
    if (cap > *tblcap) {
        size_t *t = realloc(*tbl, cap * sizeof(*t));
        if (t == NULL)
            return -1;
        *tbl = t;
        *tblcap = cap;
    }
    size_t *t = *tbl;
    for (size_t i = 0; i < cap; ++i)
        t[i] = JSPAN_NONE;
    for (size_t k = jspan_child(doc, obj); k != JSPAN_NONE; k = jspan_next(doc, k + 1)) {
        size_t slot = (size_t)jspan_str_hash(doc, k) & (cap - 1);
        while (t[slot] != JSPAN_NONE) {
            if (jspan_str_same(doc, t[slot], doc, k))
                return 1;
            slot = (slot + 1) & (cap - 1);
        }
        t[slot] = k;
    }
    return 0;
}

int jspan_find_dup_objects(const jspan_doc_t *doc, size_t **out, size_t *num)
{
    size_t *list = NULL, n = 0, cap = 0, *tbl = NULL, tblcap = 0;
    *out = NULL;
    *num = 0;
    for (size_t i = 0; i < doc->_n; ++i) {
        const jspan_entry_t *e = &doc->_tape[i];
        if ((e->_aux & TAG_CLOSE) != 0 || doc->input[e->_off] != '{')
            continue;
        size_t m = doc->_tape[e->_aux]._aux & AUX_MASK; /* members, from the close entry */
        if (m < 2)
            continue;
        int r = object_has_dup(doc, i, m, &tbl, &tblcap);
        if (r < 0)
            goto NoMem;
        if (r == 0)
            continue;
        if (n == cap) {
            size_t nc = cap == 0 ? 8 : cap * 2;
            size_t *l = realloc(list, nc * sizeof(*l));
            if (l == NULL)
                goto NoMem;
            list = l;
            cap = nc;
        }
        list[n++] = i;
    }
    free(tbl);
    *out = list;
    *num = n;
    return 0;
NoMem:
    free(tbl);
    free(list);
    return -1;
}
