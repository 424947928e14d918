/*
 * estuary - logging to stderr, one line per event.
 *
 * Lines look like `2026-11-26T14:00:00.123Z [warn] worker 1: message`. The level is chosen
 * once at start (ESTUARY_LOG_LEVEL=debug|info|warn|error, default info) and read without
 * locks afterwards. Each line is written with a single write(2) so that lines of different
 * workers never interleave.
 */
#ifndef EST_COMMON_LOG_H
#define EST_COMMON_LOG_H

typedef enum { EST_LOG_DEBUG = 0, EST_LOG_INFO, EST_LOG_WARN, EST_LOG_ERROR } est_log_level_t;

extern est_log_level_t est_log_level;

void est_log_init_from_env(void);
void est_log(est_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define est_log_debug(...) (est_log_level <= EST_LOG_DEBUG ? est_log(EST_LOG_DEBUG, __VA_ARGS__) : (void)0)
#define est_log_info(...) est_log(EST_LOG_INFO, __VA_ARGS__)
#define est_log_warn(...) est_log(EST_LOG_WARN, __VA_ARGS__)
#define est_log_error(...) est_log(EST_LOG_ERROR, __VA_ARGS__)

#endif
