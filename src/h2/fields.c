/*
 * estuary - HTTP/2 field rules (see fields.h, docs/http2.md).
 */
#include <string.h>
#include <h2o.h>
#include "h2/fields.h"

/* RFC 9110 §5.6.2 tchar; HTTP/2 field names are additionally lower-case (RFC 9113 section 8.2.1) */
static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-vchar, SP and HTAB (RFC 9110 §5.5): no other control byte, no DEL */
static int is_value_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int name_is(const char *name, size_t len, const char *lit)
{
    return strlen(lit) == len && memcmp(name, lit, len) == 0;
}

static int ascii_lc_eq(const char *s, size_t len, const char *lit)
{
    if (strlen(lit) != len)
        return 0;
    for (size_t i = 0; i != len; ++i) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        if (c != (unsigned char)lit[i])
            return 0;
    }
    return 1;
}

const char *est_h2_field_check(const char *name, size_t name_len, const char *value, size_t value_len)
{
    if (name_len == 0)
        return "empty field name";
    for (size_t i = 0; i != name_len; ++i) {
        unsigned char c = (unsigned char)name[i];
        if (c >= 'A' && c <= 'Z')
            return "upper-case letter in a field name (RFC 9113 section 8.2.1)";
        if (!is_tchar(c))
            return "invalid character in a field name (RFC 9113 section 8.2.1)";
    }
    for (size_t i = 0; i != value_len; ++i)
        if (!is_value_char((unsigned char)value[i]))
            return "invalid character in a field value (RFC 9113 section 8.2.1)";
    if (value_len != 0 && (value[0] == ' ' || value[0] == '\t' || value[value_len - 1] == ' ' || value[value_len - 1] == '\t'))
        return "whitespace around a field value (RFC 9113 section 8.2.1)";
    /* RFC 9113 §8.2.2: connection-specific fields */
    if (name_is(name, name_len, "connection") || name_is(name, name_len, "keep-alive") ||
        name_is(name, name_len, "proxy-connection") || name_is(name, name_len, "transfer-encoding") ||
        name_is(name, name_len, "upgrade"))
        return "connection-specific field in an HTTP/2 request (RFC 9113 section 8.2.2)";
    if (name_is(name, name_len, "te") && !ascii_lc_eq(value, value_len, "trailers"))
        return "TE other than \"trailers\" in an HTTP/2 request (RFC 9113 section 8.2.2)";
    return NULL;
}

const char *est_h2_method_check(const char *method, size_t len)
{
    if (len == 0)
        return "empty :method";
    for (size_t i = 0; i != len; ++i)
        if (!is_tchar((unsigned char)method[i]))
            return "invalid :method";
    return NULL;
}

const char *est_h2_path_check(const char *method, size_t method_len, const char *path, size_t path_len)
{
    if (path_len == 0)
        return "empty :path (RFC 9113 section 8.3.1)";
    if (path_len == 1 && path[0] == '*') {
        if (name_is(method, method_len, "OPTIONS"))
            return NULL;
        return "\"*\" as :path is for OPTIONS only (RFC 9113 section 8.3.1)";
    }
    if (path[0] != '/')
        return ":path is not origin-form (RFC 9113 section 8.3.1)";
    for (size_t i = 0; i != path_len; ++i) {
        unsigned char c = (unsigned char)path[i];
        if (c <= 0x20 || c == 0x7f)
            return "invalid character in :path";
    }
    return NULL;
}

const char *est_h2_fields_check(const struct st_h2o_req_t *req)
{
    if (req->version < 0x200)
        return NULL;
    const char *err;
    if ((err = est_h2_method_check(req->input.method.base, req->input.method.len)) != NULL ||
        (err = est_h2_path_check(req->input.method.base, req->input.method.len, req->input.path.base, req->input.path.len)) != NULL)
        return err;
    for (size_t i = 0; i != req->headers.size; ++i) {
        const h2o_header_t *h = req->headers.entries + i;
        if ((err = est_h2_field_check(h->name->base, h->name->len, h->value.base, h->value.len)) != NULL)
            return err;
    }
    return NULL;
}
