/*
 * estuary - loading the config file (see config.h and shared/SPEC.md).
 *
 * jansson parses the text; jsonpos.c then indexes where each value sits, so that every
 * problem can be reported as FILE:LINE:COLUMN. Validation (schema.c) never stops at the
 * first problem: it walks the whole document and collects every error with its position;
 * they are emitted sorted by position. Only a document without errors yields an
 * est_config_t.
 */
#include "config/validate.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- syntax errors --------------------------------------------------------------------- */

/*
 * jansson reports the line/column of the LAST character of the offending token (or 0 for
 * an empty text), and the byte position just after it. We point at the FIRST character
 * of the token instead (the "near '...'" text of the message), as for every other error;
 * at end of file, just after the last character.
 */
static void report_syntax(const char *file, const char *text, size_t len, const json_error_t *je, est_errors_t *errs)
{
    unsigned line = je->line > 0 ? (unsigned)je->line : 1, col = je->column > 0 ? (unsigned)je->column : 1;
    size_t pos = je->position > 0 ? (size_t)je->position : 0;
    const char *near = strstr(je->text, " near ");
    if (pos > len)
        pos = len;
    if (near != NULL && strcmp(near, " near end of file") == 0) {
        est_jsonpos_line_col(text, len, len, &line, &col);
    } else if (near != NULL && near[6] == '\'' && strlen(near) >= 8 && near[strlen(near) - 1] == '\'') {
        const char *tok = near + 7;
        size_t toklen = strlen(tok) - 1;
        if (toklen <= pos && memcmp(text + pos - toklen, tok, toklen) == 0)
            est_jsonpos_line_col(text, len, pos - toklen, &line, &col);
    } else if (pos > 0 && pos <= len) {
        /* e.g. "too big integer": back up over the number */
        size_t start = pos;
        while (start > 0 && strchr("0123456789+-.eE", text[start - 1]) != NULL)
            start--;
        if (start < pos)
            est_jsonpos_line_col(text, len, start, &line, &col);
    }
    est_errors_add(errs, "%s:%u:%u: invalid JSON: %s", file, line, col, je->text);
}

/* ---- bounds (config.h) ------------------------------------------------------------------ */

/*
 * Refuses a text that is too big, or that holds more than EST_CONFIG_MAX_VALUES values,
 * before jansson builds anything. The count is an upper bound taken in one pass: one for
 * the root, one per '[' or '{' (its first member) and one per ',' outside strings (each
 * further member). Returns 0, or -1 with one message in `errs`.
 */
static int check_bounds(const char *file, const char *text, size_t len, est_errors_t *errs)
{
    if (len > EST_CONFIG_MAX_FILE_SIZE) {
        est_errors_add(errs, "%s:1:1: the config file is larger than %u MiB; refusing to read it", file,
                       EST_CONFIG_MAX_FILE_SIZE >> 20);
        return -1;
    }
    size_t values = 1;
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = text[i];
        if (in_string) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_string = 0;
        } else if (ch == '"') {
            in_string = 1;
        } else if ((ch == ',' || ch == '[' || ch == '{') && ++values > EST_CONFIG_MAX_VALUES) {
            unsigned line, col;
            est_jsonpos_line_col(text, len, i, &line, &col);
            est_errors_add(errs, "%s:%u:%u: more than %u JSON values; refusing the file", file, line, col,
                           (unsigned)EST_CONFIG_MAX_VALUES);
            return -1;
        }
    }
    return 0;
}

/* ---- public ---------------------------------------------------------------------------- */

static int cmp_errors(const void *a, const void *b)
{
    const pending_error_t *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* the folder of `file`, made absolute when it exists (so a later chdir does not matter) */
static char *base_dir_of(const char *file)
{
    const char *slash = strrchr(file, '/');
    char *dir;
    if (slash == NULL) {
        dir = est_cv_xstrdup(".");
    } else if (slash == file) {
        dir = est_cv_xstrdup("/");
    } else {
        dir = est_cv_xmalloc((size_t)(slash - file) + 1);
        memcpy(dir, file, (size_t)(slash - file));
        dir[slash - file] = '\0';
    }
    char *abs = realpath(dir, NULL);
    if (abs != NULL) {
        free(dir);
        return abs;
    }
    return dir;
}

est_config_t *est_config_load_buffer(const char *file, const char *text, size_t len, est_errors_t *errs)
{
    json_error_t je;
    if (check_bounds(file, text, len, errs) != 0)
        return NULL;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (root == NULL) {
        report_syntax(file, text, len, &je, errs);
        return NULL;
    }

    vctx_t c = {.file = file, .text = text, .len = len};
    c.conf = est_cv_xcalloc(1, sizeof(*c.conf));
    c.conf->file = est_cv_xstrdup(file);
    c.conf->base_dir = base_dir_of(file);
    c.conf->json = root;
    est_jsonpos_build(&c.pos, text, len); /* on failure, messages fall back to 1:1 */
    est_cv_buf_append(&c.ptr, &c.ptr_len, &c.ptr_cap, "", 0);
    est_cv_buf_append(&c.disp, &c.disp_len, &c.disp_cap, "", 0);

    est_cv_load_root(&c, root);

    est_config_t *conf = c.conf;
    if (c.num_errors != 0) {
        qsort(c.errors, c.num_errors, sizeof(*c.errors), cmp_errors);
        for (size_t i = 0; i < c.num_errors; i++)
            est_errors_add(errs, "%s:%u:%u: %s", file, c.errors[i].line, c.errors[i].col, c.errors[i].msg);
        if (c.dropped_errors != 0)
            est_errors_add(errs, "%s:%u:%u: too many errors: only the first %u are shown", file, c.dropped_line, c.dropped_col,
                           (unsigned)EST_CONFIG_MAX_ERRORS);
        est_config_free(conf);
        conf = NULL;
    }
    for (size_t i = 0; i < c.num_errors; i++)
        free(c.errors[i].msg);
    free(c.errors);
    free(c.ups_by_name);
    json_decref(c.policy_names);
    free(c.ptr);
    free(c.disp);
    est_jsonpos_dispose(&c.pos);
    return conf;
}

est_config_t *est_config_load(const char *file, est_errors_t *errs)
{
    FILE *fp = fopen(file, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (fp == NULL) {
        est_errors_add(errs, "%s:1:1: cannot read the config file: %s", file, strerror(errno));
        return NULL;
    }
    /* read at most one byte past the limit: enough to know the file is too big, whatever it is
     * (a FIFO, /dev/zero, a file still growing) */
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 16384;
            if (cap > (size_t)EST_CONFIG_MAX_FILE_SIZE + 1)
                cap = (size_t)EST_CONFIG_MAX_FILE_SIZE + 1;
            char *nb = realloc(buf, cap);
            if (nb == NULL) {
                est_errors_add(errs, "%s:1:1: cannot read the config file: out of memory", file);
                fclose(fp);
                free(buf);
                return NULL;
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, fp);
        len += n;
        if (n == 0 || len > EST_CONFIG_MAX_FILE_SIZE)
            break;
    }
    if (ferror(fp)) {
        est_errors_add(errs, "%s:1:1: cannot read the config file: %s", file, strerror(errno ? errno : EIO));
        fclose(fp);
        free(buf);
        return NULL;
    }
    fclose(fp);
    est_config_t *conf = est_config_load_buffer(file, buf, len, errs);
    free(buf);
    return conf;
}

static void free_backend(est_backend_conf_t *b)
{
    free(b->upstream_name);
    free(b->path);
    free(b->group);
    free(b->target);
    for (size_t i = 0; i < b->num_allow; i++)
        free(b->allow[i]);
    free(b->allow);
    for (size_t i = 0; i < b->num_deny; i++)
        free(b->deny[i]);
    free(b->deny);
    for (size_t i = 0; i < b->num_mapping; i++) {
        free(b->mapping[i].from);
        free(b->mapping[i].to);
    }
    free(b->mapping);
    free(b->timing_name);
    for (size_t i = 0; i < b->num_headers; i++) {
        free(b->headers[i].name);
        free(b->headers[i].value);
    }
    free(b->headers);
    free(b->deps);
}

void est_config_free(est_config_t *conf)
{
    if (conf == NULL)
        return;
    for (size_t i = 0; i < conf->num_listen; i++) {
        free(conf->listen[i].host);
        free(conf->listen[i].certificate_file);
        free(conf->listen[i].key_file);
        free(conf->listen[i].tls_ciphers);
        free(conf->listen[i].ocsp_file);
    }
    free(conf->listen);
    if (conf->admin != NULL) {
        free(conf->admin->host);
        free(conf->admin->token);
    }
    free(conf->admin);
    free(conf->access_log);
    for (size_t i = 0; i < conf->dns.num_servers; i++)
        free(conf->dns.servers[i]);
    free(conf->dns.servers);
    for (size_t i = 0; i < conf->num_upstreams; i++)
        est_upstream_conf_clear(&conf->upstreams[i]);
    free(conf->upstreams);
    for (size_t i = 0; i < conf->num_routes; i++) {
        est_route_conf_t *r = &conf->routes[i];
        free(r->path);
        for (size_t j = 0; j < r->num_backends; j++)
            free_backend(&r->backends[j]);
        free(r->backends);
        if (r->proxy != NULL)
            free_backend(r->proxy);
        free(r->proxy);
        est_cv_free_route_cache(r);
    }
    est_cv_free_tracing(conf);
    est_cv_free_policy(conf); /* the routes' policy keys too */
    free(conf->routes);
    json_decref(conf->json);
    free(conf->file);
    free(conf->base_dir);
    free(conf);
}

void est_upstream_conf_defaults(est_upstream_conf_t *u)
{
    u->balance = EST_BALANCE_ROUND_ROBIN;
    u->connect_timeout_ms = 1000;
    u->response_timeout_ms = 10000;
    u->pool.max_connections = 256;
    u->pool.max_idle = 32;
    u->pool.idle_timeout_ms = 30000;
    u->pool.max_requests = 10000;
    u->retry.attempts = 2;
    u->retry.backoff_ms = 25;
    u->retry.max_backoff_ms = 250;
    u->retry.on = EST_RETRY_ON_CONNECT_FAILURE | EST_RETRY_ON_RESET;
    u->tls.verify = 1;
}

void est_upstream_conf_clear(est_upstream_conf_t *u)
{
    free(u->name);
    for (size_t j = 0; j < u->num_targets; j++) {
        free(u->targets[j].url);
        free(u->targets[j].host);
        free(u->targets[j].authority);
    }
    free(u->targets);
    free(u->retry.statuses);
    free(u->tls.ca_file);
    free(u->tls.server_name);
    free(u->hedge);
}

est_upstream_conf_t *est_config_find_upstream(const est_config_t *conf, const char *name)
{
    for (size_t i = 0; i < conf->num_upstreams; i++)
        if (strcmp(conf->upstreams[i].name, name) == 0)
            return &conf->upstreams[i];
    return NULL;
}
