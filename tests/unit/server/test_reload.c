/*
 * Unit tests: the diff a reload rests on (server/reload.c). Listeners of the new config are
 * paired with equal old ones (each old one at most once, in order); an upstream keeps its pool
 * only under the same name with equal settings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/reload.h"
#include "helpers.h"


#define U "\"u\": {\"targets\": [\"http://127.0.0.1:8001\"]}"
#define LA "{\"host\": \"127.0.0.1\", \"port\": 8080}"
#define LB "{\"host\": \"127.0.0.1\", \"port\": 8081}"
#define LC "{\"host\": \"127.0.0.1\", \"port\": 8082}"

static void test_listeners_kept_moved_added_removed(void **state)
{
    (void)state;
    est_config_t *oc = load(U, LA ", " LB), *nc = load(U, LC ", " LB ", " LA);
    int keep[3];
    char used[2];
    memset(used, 7, sizeof(used)); /* filled by the call, whatever it held */
    assert_int_equal(est_reload_match_listeners(oc, nc, keep, used), 2);
    assert_int_equal(keep[0], -1); /* new: 8082 */
    assert_int_equal(keep[1], 1);  /* 8081 moved from index 1 */
    assert_int_equal(keep[2], 0);  /* 8080 moved from index 0 */
    assert_int_equal(used[0], 1);
    assert_int_equal(used[1], 1);

    /* the other way round: 8082 was removed */
    int keep2[2];
    char used2[3];
    assert_int_equal(est_reload_match_listeners(nc, oc, keep2, used2), 2);
    assert_int_equal(keep2[0], 2);
    assert_int_equal(keep2[1], 1);
    assert_int_equal(used2[0], 0);
    assert_int_equal(used2[1], 1);
    assert_int_equal(used2[2], 1);
    est_config_free(oc);
    est_config_free(nc);
}

static void test_listener_changed_is_not_kept(void **state)
{
    (void)state;
    est_config_t *oc = load(U, LA), *nc = load(U, "{\"host\": \"127.0.0.2\", \"port\": 8080}");
    int keep[1];
    char used[1];
    assert_int_equal(est_reload_match_listeners(oc, nc, keep, used), 0);
    assert_int_equal(keep[0], -1);
    assert_int_equal(used[0], 0);
    est_config_free(oc);
    est_config_free(nc);
}

static void test_upstream_kept_only_when_equal(void **state)
{
    (void)state;
    est_config_t *oc = load(U ", \"v\": {\"targets\": [\"http://127.0.0.1:8002\"]}", LA);
    est_config_t *nc = load("\"v\": {\"targets\": [\"http://127.0.0.1:8002\"]}, "
                            "\"u\": {\"targets\": [\"http://127.0.0.1:8001\"], \"connect_timeout\": \"3s\"}",
                            LA);
    const est_upstream_conf_t *ou = est_config_find_upstream(oc, "u"), *ov = est_config_find_upstream(oc, "v");
    assert_null(est_reload_kept_upstream(nc, ou)); /* u changed */
    const est_upstream_conf_t *nv = est_reload_kept_upstream(nc, ov);
    assert_non_null(nv);
    assert_ptr_equal(nv, est_config_find_upstream(nc, "v"));
    est_config_t *gone = load(U, LA); /* no "v" at all */
    assert_null(est_reload_kept_upstream(gone, ov));
    assert_ptr_equal(est_reload_kept_upstream(gone, ou), est_config_find_upstream(gone, "u"));
    est_config_free(gone);
    est_config_free(oc);
    est_config_free(nc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listeners_kept_moved_added_removed),
        cmocka_unit_test(test_listener_changed_is_not_kept),
        cmocka_unit_test(test_upstream_kept_only_when_equal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
