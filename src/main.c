/*
 * estuary - HTTP API gateway: command line.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ares.h>
#include <openssl/ssl.h>

#include "common/log.h"
#include "config/config.h"
#include "server/server.h"
#include "upstream/dns.h"

#define DEFAULT_CONFIG "conf/estuary.json"

static void usage(FILE *fp)
{
    fprintf(fp, "Usage: estuary [-c FILE]\n"
                "       estuary --check [-c FILE]\n"
                "       estuary --version | --help\n"
                "\n"
                "estuary is an HTTP API gateway: it routes each request by the JSON config FILE and\n"
                "either streams one backend's reply through (proxy routes) or calls several backends at\n"
                "once and merges their JSON replies into one document (aggregating routes).\n"
                "\n"
                "Options:\n"
                "  -c, --config FILE  configuration file (default: " DEFAULT_CONFIG ")\n"
                "  -t, --check        validate the configuration and exit: prints \"FILE: ok\" and exits 0,\n"
                "                     or prints every problem as FILE:LINE:COLUMN: message and exits 1\n"
                "  -v, --version      print the version and exit\n"
                "  -h, --help         print this help and exit\n"
                "\n"
                "Signals: SIGTERM/SIGINT stop accepting, close idle keep-alive connections, let in-flight\n"
                "         requests finish (up to shutdown_timeout; the cut ones are logged) and exit 0.\n"
                "         SIGHUP reloads FILE: if valid, new requests use it (routes, upstreams, listeners;\n"
                "         unchanged upstreams keep their connection pools) while in-flight ones finish on the\n"
                "         old one; if not, every problem is logged as FILE:LINE:COLUMN and nothing changes.\n"
                "         SIGUSR1 reopens the access log file.\n"
                "Environment: ESTUARY_LOG_LEVEL=debug|info|warn|error (default info); logs go to stderr.\n"
                "The configuration schema is described in docs/configuration.md.\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                             {"check", no_argument, NULL, 't'},
                                             {"version", no_argument, NULL, 'v'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *file = DEFAULT_CONFIG;
    int check = 0, opt;
    while ((opt = getopt_long(argc, argv, "c:tvh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            file = optarg;
            break;
        case 't':
            check = 1;
            break;
        case 'v':
            printf("estuary %s\n", ESTUARY_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "estuary: unexpected argument: %s\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    est_log_init_from_env();
    est_errors_t errs = {0};
    est_config_t *conf = est_config_load(file, &errs);
    if (conf == NULL) {
        for (size_t i = 0; i != errs.count; ++i)
            fprintf(stderr, "%s\n", errs.items[i]);
        est_errors_clear(&errs);
        return 1;
    }
    if (check) {
        printf("%s: ok\n", file);
        est_config_free(conf);
        return 0;
    }

    /* a client or upstream that goes away mid-write must not kill the process */
    signal(SIGPIPE, SIG_IGN);
    if (est_dns_global_init() != 0) {
        est_log_error("cannot initialise c-ares");
        est_config_free(conf);
        return 1;
    }
    for (size_t i = 0; i != conf->num_upstreams; ++i)
        if (!conf->upstreams[i].tls.verify)
            est_log_warn("upstream '%s': TLS certificate verification is off (\"verify\": false)", conf->upstreams[i].name);

    int ret = est_server_run(conf); /* takes conf */
    ares_library_cleanup();
    return ret;
}
