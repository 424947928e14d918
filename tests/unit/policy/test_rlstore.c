#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "policy/rlstore.h"

#define SEC 1000000ULL
#define NTHREADS 8

typedef struct hammer {
    est_rlstore_t *store;
    est_gcra_params_t params;
    uint64_t fixed_now; /* 0: the real clock */
    int attempts;
    int nkeys; /* attempts cycle over keys[0..nkeys-1] */
    char (*keys)[16];
    atomic_int *allowed_per_key;
    pthread_barrier_t *start;
} hammer_t;

static void *hammer_main(void *arg)
{
    hammer_t *h = arg;
    uint64_t hashes[64];
    for (int k = 0; k != h->nkeys; ++k)
        hashes[k] = est_rlstore_hash(h->store, h->keys[k], strlen(h->keys[k]));
    pthread_barrier_wait(h->start);
    for (int i = 0; i != h->attempts; ++i) {
        int k = i % h->nkeys;
        est_gcra_result_t r;
        est_rlstore_decide(h->store, hashes[k], &h->params, h->fixed_now ? h->fixed_now : est_rlstore_now_us(), &r);
        if (r.allowed)
            atomic_fetch_add(&h->allowed_per_key[k], 1);
    }
    return NULL;
}

/* `n` key names into keys[]; distinct: each in a slot of its own */
static void pick_keys(est_rlstore_t *s, char (*keys)[16], int n, int distinct)
{
    size_t used[64];
    int got = 0;
    for (int i = 0; got != n; ++i) {
        snprintf(keys[got], 16, "k%d", i);
        size_t slot = est_rlstore_slot(s, est_rlstore_hash(s, keys[got], strlen(keys[got])));
        int clash = 0;
        for (int j = 0; distinct && j != got; ++j)
            clash |= used[j] == slot;
        if (!clash)
            used[got++] = slot;
    }
}

/* NTHREADS threads hammer the store at once; returns the admitted count per key */
static void run_hammer(est_rlstore_t *s, est_gcra_params_t p, uint64_t fixed_now, int attempts, int nkeys, atomic_int *allowed,
                       int distinct)
{
    static char keys[64][16];
    pick_keys(s, keys, nkeys, distinct);
    pthread_t th[NTHREADS];
    hammer_t h[NTHREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, NTHREADS);
    for (int k = 0; k != nkeys; ++k)
        atomic_init(&allowed[k], 0);
    for (int i = 0; i != NTHREADS; ++i) {
        h[i] = (hammer_t){s, p, fixed_now, attempts, nkeys, keys, allowed, &start};
        assert_int_equal(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
    }
    for (int i = 0; i != NTHREADS; ++i)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
}

/* The proof of "no lock needed": 8 threads, 1,600,000 attempts on one key at one instant,
 * exactly burst + 1 = 1,000,000 admitted (a lost update would admit more, a spurious failure
 * fewer); the bucket is large so that the threads contend while admitting, not only after. */
static void test_one_key_exact_under_contention(void **state)
{
    est_rlstore_t *s = est_rlstore_create(EST_RLSTORE_DEFAULT_SLOTS);
    assert_non_null(s);
    atomic_int allowed[1];
    run_hammer(s, est_gcra_params(1, 3600000, 999999), 1000 * SEC, 200000, 1, allowed, 1);
    assert_int_equal(atomic_load(&allowed[0]), 1000000);
    est_rlstore_destroy(s);
}

/* the same on the real clock (one an hour: no refill during the test) */
static void test_one_key_exact_real_clock(void **state)
{
    est_rlstore_t *s = est_rlstore_create(EST_RLSTORE_DEFAULT_SLOTS);
    atomic_int allowed[1];
    run_hammer(s, est_gcra_params(1, 3600000, 999999), 0, 200000, 1, allowed, 1);
    assert_int_equal(atomic_load(&allowed[0]), 1000000);
    est_rlstore_destroy(s);
}

/* several keys (in distinct slots) hammered together: each its own bucket */
static void test_keys_independent(void **state)
{
    est_rlstore_t *s = est_rlstore_create(EST_RLSTORE_DEFAULT_SLOTS);
    atomic_int allowed[16];
    run_hammer(s, est_gcra_params(10, 60000, 1499), 1000 * SEC, 4000, 16, allowed, 1);
    for (int k = 0; k != 16; ++k)
        assert_int_equal(atomic_load(&allowed[k]), 1500);
    est_rlstore_destroy(s);
}

/* a store too small for its keys: keys share slots, which only ever makes them stricter:
 * with 1 slot every key shares it, so all of them together get exactly one bucket */
static void test_collisions_only_stricter(void **state)
{
    est_rlstore_t *s = est_rlstore_create(1);
    atomic_int allowed[40];
    run_hammer(s, est_gcra_params(1, 1000, 9999), 1000 * SEC, 4000, 40, allowed, 0);
    int total = 0;
    for (int k = 0; k != 40; ++k) {
        assert_true(atomic_load(&allowed[k]) <= 10000);
        total += atomic_load(&allowed[k]);
    }
    assert_int_equal(total, 10000);
    est_rlstore_destroy(s);
}

/* refill over time, results (remaining, reset, retry) as GCRA computes them */
static void test_refill_and_results(void **state)
{
    est_rlstore_t *s = est_rlstore_create(1024);
    est_gcra_params_t p = est_gcra_params(2, 1000, 2); /* T = 500ms, bucket 3 */
    uint64_t h = est_rlstore_hash(s, "client", 6), now = 5000 * SEC;
    est_gcra_result_t r;
    for (int i = 0; i != 3; ++i) {
        est_rlstore_decide(s, h, &p, now, &r);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, 2 - i);
        assert_int_equal(r.reset_us, (uint64_t)(i + 1) * 500000);
    }
    est_rlstore_decide(s, h, &p, now, &r);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_us, 500000);
    est_rlstore_decide(s, h, &p, now + 500000, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    /* another key (in another slot) is untouched */
    char other[1][16];
    size_t mine = est_rlstore_slot(s, h);
    for (int i = 0;; ++i) {
        snprintf(other[0], sizeof(other[0]), "other%d", i);
        if (est_rlstore_slot(s, est_rlstore_hash(s, other[0], strlen(other[0]))) != mine)
            break;
    }
    est_rlstore_decide(s, est_rlstore_hash(s, other[0], strlen(other[0])), &p, now, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 2);
    est_rlstore_destroy(s);
}

static void test_hash(void **state)
{
    est_rlstore_t *a = est_rlstore_create(16), *b = est_rlstore_create(16);
    char long_key[5000];
    memset(long_key, 'x', sizeof(long_key));
    assert_true(est_rlstore_hash(a, "k", 1) == est_rlstore_hash(a, "k", 1));
    assert_true(est_rlstore_hash(a, "k", 1) != est_rlstore_hash(a, "K", 1));
    assert_true(est_rlstore_hash(a, "", 0) != est_rlstore_hash(a, "\0", 1));
    assert_true(est_rlstore_hash(a, long_key, sizeof(long_key)) != est_rlstore_hash(a, long_key, sizeof(long_key) - 1));
    /* per-store secret: another store hashes differently (2^-64 to fail) */
    assert_true(est_rlstore_hash(a, "k", 1) != est_rlstore_hash(b, "k", 1));
    est_rlstore_destroy(a);
    est_rlstore_destroy(b);
    assert_true(est_rlstore_now_us() > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_key_exact_under_contention),
        cmocka_unit_test(test_one_key_exact_real_clock),
        cmocka_unit_test(test_keys_independent),
        cmocka_unit_test(test_collisions_only_stricter),
        cmocka_unit_test(test_refill_and_results),
        cmocka_unit_test(test_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
