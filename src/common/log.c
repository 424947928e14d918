#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

est_log_level_t est_log_level = EST_LOG_INFO;

static const char *level_names[] = {"debug", "info", "warn", "error"};

void est_log_init_from_env(void)
{
    const char *s = getenv("ESTUARY_LOG_LEVEL");
    if (s == NULL)
        return;
    for (int i = 0; i < 4; ++i)
        if (strcasecmp(s, level_names[i]) == 0)
            est_log_level = (est_log_level_t)i;
}

void est_log(est_log_level_t level, const char *fmt, ...)
{
    if (level < est_log_level)
        return;
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int off = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    off += snprintf(line + off, sizeof(line) - off, ".%03dZ [%s] ", (int)(tv.tv_usec / 1000), level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line + off, sizeof(line) - off - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    off += n;
    if (off > (int)sizeof(line) - 2)
        off = (int)sizeof(line) - 2;
    line[off++] = '\n';
    ssize_t r = write(2, line, (size_t)off);
    (void)r;
}
