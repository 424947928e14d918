/*
 * estuary - hot reload (main thread side) and the diff of two configs it rests on; see
 * reload.h. The worker side (switching listeners and the current view on its own loop) is in
 * server.c and worker_gen.c.
 */
#include "server/reload.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "admin/admin.h"
#include "server/observe.h"
#include "common/log.h"
#include "common/net.h"
#include "upstream/dns.h"

/* ---- the diff (pure) ------------------------------------------------------------------------ */

size_t est_reload_match_listeners(const est_config_t *oc, const est_config_t *nc, int *keep, char *used)
{
    size_t kept = 0;
    for (size_t i = 0; i != oc->num_listen; ++i)
        used[i] = 0;
    for (size_t j = 0; j != nc->num_listen; ++j) {
        keep[j] = -1;
        for (size_t i = 0; i != oc->num_listen; ++i)
            if (!used[i] && est_listen_conf_equal(oc->listen + i, nc->listen + j)) {
                keep[j] = (int)i;
                used[i] = 1;
                ++kept;
                break;
            }
    }
    return kept;
}

const est_upstream_conf_t *est_reload_kept_upstream(const est_config_t *nc, const est_upstream_conf_t *ou)
{
    const est_upstream_conf_t *nu = est_config_find_upstream(nc, ou->name);
    return nu != NULL && est_upstream_conf_equal(ou, nu) ? nu : NULL;
}

/* ---- main thread ---------------------------------------------------------------------------- */

int est_reload_open_listener(const est_listen_conf_t *l)
{
    return est_listen_tcp("listen", l->host, l->port, EST_LISTEN_REUSEPORT | EST_LISTEN_NODELAY, SOMAXCONN);
}

static void warn_restart_only(est_server_t *s, const est_config_t *oc, const est_config_t *nc)
{
    const est_config_t *sc = s->start_conf;
    if (nc->workers != sc->workers)
        est_log_warn("reload: \"workers\" changed (%u -> %u); takes effect at the next start", sc->workers, nc->workers);
    if (nc->io_uring != sc->io_uring)
        est_log_warn("reload: \"io_uring\" changed; takes effect at the next start");
    if (!est_dns_conf_equal(&oc->dns, &nc->dns))
        est_log_warn("reload: \"dns\" settings changed; they take effect at the next start (the resolver and its cache are kept)");
    if (oc->access_log_off != nc->access_log_off || (oc->access_log == NULL) != (nc->access_log == NULL) ||
        (oc->access_log != NULL && strcmp(oc->access_log, nc->access_log) != 0))
        est_log_warn("reload: \"access_log\" changed; takes effect at the next start");
    uint64_t nb = nc->max_request_body;
    if (nb >= s->h2oconf.max_request_entity_size)
        est_log_warn("reload: \"max_request_body\" raised above h2o's HTTP/2 buffer limit set at start (%zu bytes); larger "
                     "HTTP/2 bodies are refused until the next start",
                     s->h2oconf.max_request_entity_size);
}

/*
 * SPEC "Reload and shutdown": the admin listener starts, moves or closes as the new config
 * says. Compared with where it is actually bound (s->admin_at), not with the old config, so
 * that a bind error, which keeps the old state, is tried again by the next reload.
 */
static void apply_admin(est_server_t *s, const est_config_t *nc)
{
    est_admin_conf_t *at = s->admin_at.host != NULL ? &s->admin_at : NULL;
    if (est_admin_conf_equal(at, nc->admin))
        return;
    int ok;
    if (nc->admin == NULL)
        ok = est_admin_rebind(s->admin, NULL) == 0; /* the admin thread stays, dormant */
    else if (s->admin == NULL)
        ok = est_observe_admin_start(s, nc) == 0; /* turned on for the first time */
    else
        ok = est_admin_rebind(s->admin, nc->admin) == 0;
    if (!ok) {
        if (at != NULL)
            est_log_warn("reload: the admin listener keeps its address %s:%u", at->host, at->port);
        else
            est_log_warn("reload: the admin listener stays off (its address could not be bound)");
        return;
    }
    free(s->admin_at.host);
    s->admin_at.host = nc->admin != NULL ? strdup(nc->admin->host) : NULL;
    s->admin_at.port = nc->admin != NULL ? nc->admin->port : 0;
}

/* counts a reload for /metrics (kept here too: an admin started later takes the counts) */
static void count_reload(est_server_t *s, int ok)
{
    ++*(ok ? &s->reloads_ok : &s->reloads_failed);
    est_admin_count_reload(s->admin, ok);
}

void est_server_reload(est_server_t *s)
{
    const char *file = s->gen->conf->file;
    est_log_info("SIGHUP: reloading %s", file);
    est_errors_t errs = {0};
    est_config_t *conf = est_config_load(file, &errs);
    if (conf == NULL) {
        for (size_t i = 0; i != errs.count; ++i)
            est_log_error("%s", errs.items[i]);
        est_errors_clear(&errs);
        est_log_error("reload failed: keeping configuration generation %llu", (unsigned long long)s->gen->id);
        count_reload(s, 0);
        return;
    }
    est_gen_t *gen = est_gen_create(conf, s->gen->id + 1);
    if (gen == NULL) {
        est_log_error("reload failed: keeping configuration generation %llu", (unsigned long long)s->gen->id);
        count_reload(s, 0);
        return;
    }
    const est_config_t *oc = s->gen->conf, *nc = gen->conf;

    /* which listeners are kept (by equal config), which are opened */
    size_t n = nc->num_listen, added = 0, kept = 0;
    int *keep = malloc(sizeof(int) * (n ? n : 1));
    char *used = calloc(oc->num_listen ? oc->num_listen : 1, 1);
    int **fds = calloc(s->num_workers, sizeof(*fds));
    kept = est_reload_match_listeners(oc, nc, keep, used);
    added = n - kept;
    int ok = 1;
    for (size_t w = 0; w != s->num_workers; ++w) {
        fds[w] = malloc(sizeof(int) * (n ? n : 1));
        for (size_t j = 0; j != n; ++j)
            fds[w][j] = -1;
        for (size_t j = 0; ok && j != n; ++j)
            if (keep[j] < 0 && (fds[w][j] = est_reload_open_listener(nc->listen + j)) == -1)
                ok = 0;
    }
    if (!ok) {
        for (size_t w = 0; w != s->num_workers; ++w) {
            for (size_t j = 0; j != n; ++j)
                if (fds[w][j] != -1)
                    close(fds[w][j]);
            free(fds[w]);
        }
        free(fds);
        free(keep);
        free(used);
        est_gen_release(gen);
        est_log_error("reload failed: keeping configuration generation %llu", (unsigned long long)s->gen->id);
        count_reload(s, 0);
        return;
    }
    warn_restart_only(s, oc, nc);
    for (size_t j = 0; j != n; ++j)
        if (keep[j] < 0)
            est_log_info("listening on %s://%s:%u", nc->listen[j].tls ? "https" : "http", nc->listen[j].host, nc->listen[j].port);
    for (size_t i = 0; i != oc->num_listen; ++i)
        if (!used[i])
            est_log_info("no longer listening on %s:%u", oc->listen[i].host, oc->listen[i].port);
    size_t removed = oc->num_listen - kept;

    for (size_t w = 0; w != s->num_workers; ++w) {
        est_reload_msg_t *msg = calloc(1, sizeof(*msg));
        est_gen_addref(gen);
        msg->gen = gen;
        msg->num_listen = n;
        msg->keep = malloc(sizeof(int) * (n ? n : 1));
        memcpy(msg->keep, keep, sizeof(int) * n);
        msg->fds = fds[w];
        h2o_multithread_send_message(&s->workers[w].reload_rx, &msg->super);
    }
    free(fds);
    free(keep);
    free(used);
    est_admin_set_config(s->admin, nc);
    count_reload(s, 1);
    apply_admin(s, nc); /* after the count: an admin started now shows this generation */
    est_log_info("reloaded %s: configuration generation %llu, %zu route(s), %zu upstream(s), listeners: %zu kept, %zu added, "
                 "%zu removed",
                 file, (unsigned long long)gen->id, nc->num_routes, nc->num_upstreams, kept, added, removed);
    est_gen_release(s->gen); /* the workers hold the old one until its last request ends */
    s->gen = gen;
}
