/*
 * Unit tests: the session ticket key ring (server/tls.c). The current key encrypts; a
 * rotation per interval elapsed; retired keys still decrypt (asking for a renewal) for
 * keep_old rotations, then are unknown; a long idle period drops every old key at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "server/tls.h"

#define T0 1000000u
#define IV 3600u

static est_ticket_key_t current(est_ticket_ring_t *r, uint64_t now)
{
    est_ticket_key_t k;
    assert_int_equal(est_ticket_ring_encrypt_key(r, now, &k), 0);
    return k;
}

static int lookup(est_ticket_ring_t *r, uint64_t now, const est_ticket_key_t *k)
{
    est_ticket_key_t out;
    memset(&out, 0, sizeof(out));
    int ret = est_ticket_ring_decrypt_key(r, now, k->name, &out);
    if (ret != 0)
        assert_memory_equal(&out, k, sizeof(out)); /* the whole key, not only its name */
    return ret;
}

static void test_current_key_is_stable_within_an_interval(void **state)
{
    (void)state;
    est_ticket_ring_t r;
    assert_int_equal(est_ticket_ring_init(&r, IV, 2, T0), 0);
    est_ticket_key_t a = current(&r, T0), b = current(&r, T0 + IV - 1);
    assert_memory_equal(&a, &b, sizeof(a));
    assert_int_equal(lookup(&r, T0 + 5, &a), 1);
    est_ticket_ring_dispose(&r);
}

static void test_rotation_keeps_old_keys_for_keep_old_rotations(void **state)
{
    (void)state;
    est_ticket_ring_t r;
    assert_int_equal(est_ticket_ring_init(&r, IV, 2, T0), 0);
    est_ticket_key_t k0 = current(&r, T0);
    est_ticket_key_t k1 = current(&r, T0 + IV); /* rotation 1 */
    assert_memory_not_equal(k0.name, k1.name, sizeof(k0.name));
    assert_memory_not_equal(k0.aes_key, k1.aes_key, sizeof(k0.aes_key));
    assert_int_equal(lookup(&r, T0 + IV, &k0), 2); /* retired: decrypts, renew */
    assert_int_equal(lookup(&r, T0 + IV, &k1), 1);
    est_ticket_key_t k2 = current(&r, T0 + 2 * IV); /* rotation 2 */
    assert_int_equal(lookup(&r, T0 + 2 * IV, &k0), 2);
    assert_int_equal(lookup(&r, T0 + 2 * IV, &k1), 2);
    assert_int_equal(lookup(&r, T0 + 3 * IV, &k0), 0); /* rotation 3 (by the lookup itself): k0 gone */
    assert_int_equal(lookup(&r, T0 + 3 * IV, &k1), 2);
    assert_int_equal(lookup(&r, T0 + 3 * IV, &k2), 2);
    assert_int_equal(r.num_keys, 3);
    est_ticket_ring_dispose(&r);
}

static void test_idle_period_drops_every_old_key(void **state)
{
    (void)state;
    est_ticket_ring_t r;
    assert_int_equal(est_ticket_ring_init(&r, IV, 2, T0), 0);
    est_ticket_key_t k0 = current(&r, T0);
    est_ticket_key_t k1 = current(&r, T0 + IV);
    /* two intervals later k1 is two rotations old: still there; k0 (three) is not */
    assert_int_equal(lookup(&r, T0 + 3 * IV, &k1), 2);
    assert_int_equal(lookup(&r, T0 + 3 * IV, &k0), 0);
    /* a day of silence: nothing from before decrypts, a fresh key encrypts */
    assert_int_equal(lookup(&r, T0 + 27 * IV + 1, &k1), 0);
    est_ticket_key_t k = current(&r, T0 + 27 * IV + 1);
    assert_memory_not_equal(k.name, k1.name, sizeof(k.name));
    assert_int_equal(lookup(&r, T0 + 28 * IV - 1, &k), 1); /* the schedule stays on the interval grid */
    assert_int_equal(lookup(&r, T0 + 28 * IV, &k), 2);
    est_ticket_ring_dispose(&r);
}

static void test_unknown_name_and_bad_setup(void **state)
{
    (void)state;
    est_ticket_ring_t r;
    unsigned char name[EST_TICKET_NAME_LEN] = {0};
    est_ticket_key_t out;
    assert_int_equal(est_ticket_ring_init(&r, IV, 2, T0), 0);
    assert_int_equal(est_ticket_ring_decrypt_key(&r, T0, name, &out), 0);
    est_ticket_ring_dispose(&r);
    assert_int_equal(est_ticket_ring_init(&r, 0, 2, T0), -1);
    assert_int_equal(est_ticket_ring_init(&r, IV, EST_TICKET_KEYS_MAX, T0), -1);
}

static void test_clock_going_back_does_not_rotate(void **state)
{
    (void)state;
    est_ticket_ring_t r;
    assert_int_equal(est_ticket_ring_init(&r, IV, 2, T0), 0);
    est_ticket_key_t a = current(&r, T0), b = current(&r, T0 - 10 * IV);
    assert_memory_equal(&a, &b, sizeof(a));
    est_ticket_ring_dispose(&r);
}

/* Workers share the ring; the clock is a shared counter that moves on every operation, so
 * rotations (every 8 ticks) happen all the time while other threads encrypt and decrypt. A
 * key handed out for encryption must come back whole (no torn copy) and must still decrypt
 * unless more than keep_old rotations could have happened in between (the key was current
 * at t1 - interval or later; fewer than interval ticks from t1 to t3 means at most one
 * rotation). Without the lock this fails within a few runs' worth of operations. */
#define STRESS_THREADS 4
#define STRESS_OPS 100000
#define STRESS_IV 8u
static est_ticket_ring_t stress_ring;
static atomic_uint_fast64_t stress_clock;
static atomic_int stress_lost;

static void *stress_worker(void *arg)
{
    (void)arg;
    for (int i = 0; i != STRESS_OPS; ++i) {
        est_ticket_key_t k, d;
        uint64_t t1 = atomic_fetch_add(&stress_clock, 1) + 1;
        if (est_ticket_ring_encrypt_key(&stress_ring, t1, &k) != 0) {
            atomic_fetch_add(&stress_lost, 1);
            continue;
        }
        uint64_t t2 = atomic_fetch_add(&stress_clock, 1) + 1;
        int r = est_ticket_ring_decrypt_key(&stress_ring, t2, k.name, &d);
        uint64_t t3 = atomic_load(&stress_clock);
        if ((r == 0 && t3 - t1 < STRESS_IV) || (r != 0 && memcmp(&k, &d, sizeof(k)) != 0))
            atomic_fetch_add(&stress_lost, 1);
    }
    return NULL;
}

static void test_concurrent_rotation(void **state)
{
    (void)state;
    pthread_t th[STRESS_THREADS];
    atomic_init(&stress_clock, T0);
    atomic_init(&stress_lost, 0);
    assert_int_equal(est_ticket_ring_init(&stress_ring, STRESS_IV, 2, T0), 0);
    for (int i = 0; i != STRESS_THREADS; ++i)
        assert_int_equal(pthread_create(&th[i], NULL, stress_worker, NULL), 0);
    for (int i = 0; i != STRESS_THREADS; ++i)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&stress_lost), 0);
    assert_true(stress_ring.current_since > T0 + 100 * STRESS_IV); /* it did rotate, many times */
    assert_int_equal(stress_ring.num_keys, 3);
    est_ticket_ring_dispose(&stress_ring);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_current_key_is_stable_within_an_interval),
        cmocka_unit_test(test_rotation_keeps_old_keys_for_keep_old_rotations),
        cmocka_unit_test(test_idle_period_drops_every_old_key),
        cmocka_unit_test(test_unknown_name_and_bad_setup),
        cmocka_unit_test(test_clock_going_back_does_not_rotate),
        cmocka_unit_test(test_concurrent_rotation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
