/*
 * estuary - HTTP methods as a bit set; see method.h.
 */
#include "common/method.h"

#include <string.h>

static const char *const method_names[EST_METHOD__COUNT] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};

unsigned est_method_from_request(const char *name, size_t len)
{
    for (unsigned i = 0; i < EST_METHOD__COUNT; i++)
        if (method_names[i][0] == (len != 0 ? name[0] : '\0') && strlen(method_names[i]) == len &&
            memcmp(method_names[i], name, len) == 0)
            return 1u << i;
    return 0;
}

const char *est_method_name(unsigned bit)
{
    for (unsigned i = 0; i < EST_METHOD__COUNT; i++)
        if (bit == 1u << i)
            return method_names[i];
    return NULL;
}
