/*
 * Unit tests for est_siphash24 (src/common/siphash.h) against the reference values of the
 * SipHash paper (Aumasson, Bernstein 2012): key 00..0f, messages 00.. of several lengths.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "common/siphash.h"

static void test_reference_vectors(void **state)
{
    (void)state;
    unsigned char key[16], msg[64];
    for (int i = 0; i != 16; ++i)
        key[i] = (unsigned char)i;
    for (int i = 0; i != 64; ++i)
        msg[i] = (unsigned char)i;
    uint64_t k0 = est_siphash_le64(key), k1 = est_siphash_le64(key + 8);
    /* the paper's appendix A: a 15-byte message */
    assert_int_equal(est_siphash24(k0, k1, msg, 15), 0xa129ca6149be45e5ULL);
    /* the reference implementation's vectors: the empty message and one byte */
    assert_int_equal(est_siphash24(k0, k1, msg, 0), 0x726fdb47dd0e0e31ULL);
    assert_int_equal(est_siphash24(k0, k1, msg, 1), 0x74f839c593dc67fdULL);
    /* the key matters */
    assert_true(est_siphash24(k0 ^ 1, k1, msg, 15) != 0xa129ca6149be45e5ULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_vectors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
