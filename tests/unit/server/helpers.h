/*
 * Shared by the server unit tests: a config from a listen list and an upstreams map, with one
 * proxy route to upstream "u" (fails the test when the config is refused).
 */
#ifndef EST_TEST_SERVER_HELPERS_H
#define EST_TEST_SERVER_HELPERS_H

#include <stdio.h>
#include <string.h>
#include "config/config.h"

#define F "no-such-dir.est/t.json"

static est_config_t *load(const char *upstreams, const char *listen)
{
    char text[4096];
    snprintf(text, sizeof(text),
             "{\"listen\": [%s], \"upstreams\": {%s},"
             " \"routes\": [{\"path\": \"/a\", \"proxy\": {\"upstream\": \"u\"}}]}",
             listen, upstreams);
    est_errors_t errs = {0};
    est_config_t *conf = est_config_load_buffer(F, text, strlen(text), &errs);
    for (size_t i = 0; i < errs.count; i++)
        print_error("unexpected: %s\n", errs.items[i]);
    est_errors_clear(&errs);
    if (conf == NULL)
        fail_msg("config rejected: %s", text);
    return conf;
}

#endif
