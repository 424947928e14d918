/*
 * estuary - reading a small file whole, with a bound.
 */
#include "common/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/crypto.h>

int est_read_file(const char *path, size_t max, char **out, size_t *len, char *err, size_t errlen)
{
    struct stat st;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "%s", strerror(errno));
        goto Error;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
        snprintf(err, errlen, "not a regular file of at most %zu bytes", max);
        goto Error;
    }
    /* room for what fstat saw, one byte more (to notice a file that grew past `max`) and the
     * NUL; grown by doubling, never past max + 2, should the file grow while it is read */
    cap = (size_t)st.st_size + 2;
    if ((buf = malloc(cap)) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto Error;
    }
    for (;;) {
        if (n + 1 == cap) {
            size_t ncap = cap > (max + 2) / 2 ? max + 2 : cap * 2;
            char *nbuf;
            if (ncap <= cap || (nbuf = malloc(ncap)) == NULL) {
                snprintf(err, errlen, "larger than %zu bytes", max);
                goto Error;
            }
            memcpy(nbuf, buf, n);
            OPENSSL_cleanse(buf, cap);
            free(buf);
            buf = nbuf;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "%s", strerror(errno));
            goto Error;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > max) {
            snprintf(err, errlen, "larger than %zu bytes", max);
            goto Error;
        }
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
Error:
    if (buf != NULL) {
        OPENSSL_cleanse(buf, cap);
        free(buf);
    }
    if (fd >= 0)
        close(fd);
    return -1;
}
