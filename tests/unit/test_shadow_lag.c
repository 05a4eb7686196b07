/*
 * Unit tests for the lag check's pure part (switchover/shadow_lag.c): the decision rule of one
 * round, which differences are checked at all, the class each verdict gives, and answers read
 * through libpq fed as backend messages and compared as the live comparison compares them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "switchover/shadow.h"
#include "switchover/shadow_lag.h"

#define NUMERIC_OID 1700
#define INT4_OID 23
#define TEXT_OID 25

/* A round where every run answered, with the three comparisons given. */
static struct sy_lag_round round_of(int g_b2, int g_b3, int b2_b3)
{
    return (struct sy_lag_round){.b2_ok = 1, .g2_ok = 1, .b3_ok = 1, .g2_eq_b2 = g_b2,
                                 .g2_eq_b3 = g_b3, .b2_eq_b3 = b2_b3};
}

static void expect_verdict(struct sy_lag_round r, enum sy_lag_verdict want, const char *what)
{
    enum sy_lag_verdict got = sy_lag_decide(&r);
    if (got != want)
        fail_msg("%s: got %s, want %s", what, sy_lag_verdict_name(got), sy_lag_verdict_name(want));
}

static void test_decide(void **state)
{
    (void)state;
    /* Green caught up gives blue's answer from before or after: it was lag. */
    expect_verdict(round_of(1, 1, 1), SY_LAG_LAG, "all equal");
    expect_verdict(round_of(1, 0, 0), SY_LAG_LAG, "green equals B2, blue moved");
    expect_verdict(round_of(0, 1, 0), SY_LAG_LAG, "green equals B3, blue moved");
    /* Blue stable from before L to after G2, green different: real. */
    expect_verdict(round_of(0, 0, 1), SY_LAG_REAL, "blue stable, green different");
    /* Blue moved, green matched neither end: another round. */
    expect_verdict(round_of(0, 0, 0), SY_LAG_RETRY, "blue moved, green neither");
    /* A run without an answer decides nothing, whatever the others say. */
    struct sy_lag_round r = round_of(0, 0, 1);
    r.g2_ok = 0;
    expect_verdict(r, SY_LAG_INCONCLUSIVE, "green gave no answer");
    r = round_of(1, 1, 1);
    r.b2_ok = 0;
    expect_verdict(r, SY_LAG_INCONCLUSIVE, "B2 gave no answer");
    r = round_of(0, 0, 1);
    r.b3_ok = 0;
    expect_verdict(r, SY_LAG_INCONCLUSIVE, "B3 gave no answer");
    /* A retried round ran B2 twice in its snapshot: two answers there mean non-determinism. */
    r = round_of(0, 0, 0);
    r.b2_twice = 1;
    r.b2_self_eq = 0;
    expect_verdict(r, SY_LAG_NONDETERMINISTIC, "B2 differs from itself");
    r.b2_self_eq = 1;
    expect_verdict(r, SY_LAG_RETRY, "B2 agrees with itself, blue moved");
    r = round_of(0, 0, 1);
    r.b2_twice = 1;
    r.b2_self_eq = 1;
    expect_verdict(r, SY_LAG_REAL, "retried round, blue stable");
}

static void test_candidate_and_class(void **state)
{
    (void)state;
    assert_true(sy_lag_candidate("row_data"));
    assert_true(sy_lag_candidate("row_count"));
    assert_true(sy_lag_candidate("rows_affected"));
    const char *not_lag[] = {"", "sqlstate", "command_tag", "columns", "row_order", "shadow",
                             "malformed"};
    for (size_t i = 0; i < sizeof(not_lag) / sizeof(not_lag[0]); i++)
        if (sy_lag_candidate(not_lag[i]))
            fail_msg("'%s' must not be a lag candidate", not_lag[i]);
    assert_int_equal(sy_lag_class(SY_LAG_LAG), SY_SHADOW_REPLICATION_LAG);
    assert_int_equal(sy_lag_class(SY_LAG_REAL), SY_SHADOW_REAL);
    assert_int_equal(sy_lag_class(SY_LAG_NONDETERMINISTIC), SY_SHADOW_NONDETERMINISTIC);
    assert_int_equal(sy_lag_class(SY_LAG_INCONCLUSIVE), SY_SHADOW_INCONCLUSIVE);
    assert_int_equal(sy_lag_class(SY_LAG_RETRY), SY_SHADOW_INCONCLUSIVE);
    assert_string_equal(sy_lag_verdict_name(SY_LAG_LAG), "replication_lag");
    assert_string_equal(sy_lag_verdict_name((enum sy_lag_verdict)99), "unknown");
}

/* Feeds a one-column-pair answer: (id int4, v TYPE(mod)) rows, then "SELECT n". */
static void answer(struct sy_shadow_result *r, uint32_t vtype, int32_t vmod, size_t nrows,
                   const char *const *ids, const char *const *vs)
{
    sy_shadow_result_reset(r);
    const char *names[] = {"id", "v"};
    uint32_t types[] = {INT4_OID, vtype};
    int32_t mods[] = {-1, vmod};
    assert_int_equal(sy_lag_feed_columns(r, 2, names, types, mods), 0);
    for (size_t i = 0; i < nrows; i++) {
        const char *vals[] = {ids[i], vs[i]};
        int lens[] = {(int)strlen(ids[i]), vs[i] ? (int)strlen(vs[i]) : 0};
        assert_int_equal(sy_lag_feed_row(r, 2, vals, lens), 0);
    }
    char tag[32];
    snprintf(tag, sizeof(tag), "SELECT %zu", nrows);
    assert_int_equal(sy_lag_feed_complete(r, tag), 0);
}

static void test_same(void **state)
{
    (void)state;
    struct sy_shadow_result a, b;
    sy_shadow_result_init(&a);
    sy_shadow_result_init(&b);
    const char *ids[] = {"1", "2"}, *ids_rev[] = {"2", "1"};
    const char *v[] = {"43.29", "1.50"}, *v_rev[] = {"1.50", "43.29"};
    const char *v4[] = {"43.2900", "1.5000"}, *v_changed[] = {"43.30", "1.50"};
    const char *v_null[] = {"43.29", NULL};

    answer(&a, TEXT_OID, -1, 2, ids, v);
    answer(&b, TEXT_OID, -1, 2, ids, v);
    assert_true(sy_lag_same(&a, &b, NULL));
    assert_int_equal(a.nrows, 2);
    assert_string_equal(a.tag, "SELECT");
    /* Another order (no ORDER BY): the same data. */
    answer(&b, TEXT_OID, -1, 2, ids_rev, v_rev);
    assert_true(sy_lag_same(&a, &b, NULL));
    /* A changed value, a NULL, a missing row: not the same. */
    answer(&b, TEXT_OID, -1, 2, ids, v_changed);
    assert_false(sy_lag_same(&a, &b, NULL));
    answer(&b, TEXT_OID, -1, 2, ids, v_null);
    assert_false(sy_lag_same(&a, &b, NULL));
    answer(&b, TEXT_OID, -1, 1, ids, v);
    assert_false(sy_lag_same(&a, &b, NULL));
    /* An error is not the same as rows. */
    sy_shadow_result_reset(&b);
    assert_int_equal(sy_lag_feed_error(&b, "42P01", "relation \"x\" does not exist"), 0);
    assert_int_equal(b.status, SY_SHADOW_ST_ERROR);
    assert_string_equal(b.sqlstate, "42P01");
    assert_false(sy_lag_same(&a, &b, NULL));

    /* numeric(10,2) on blue, numeric(10,4) on green: different bytes, so different without an
     * accept; with the column accepted, equal by meaning, and a changed value still differs. */
    int32_t mod2 = (10 << 16 | 2) + 4, mod4 = (10 << 16 | 4) + 4;
    answer(&a, NUMERIC_OID, mod2, 2, ids, v);
    answer(&b, NUMERIC_OID, mod4, 2, ids, v4);
    assert_false(sy_lag_same(&a, &b, NULL));
    struct sy_shadow_accept acc;
    memset(&acc, 0, sizeof(acc));
    acc.fp_hash = 1;
    snprintf(acc.column, sizeof(acc.column), "v");
    acc.cls = SY_SHADOW_REAL;
    struct sy_shadow_hints h = {.accepts = &acc, .naccepts = 1};
    assert_true(sy_lag_same(&a, &b, &h));
    const char *v4_changed[] = {"43.3000", "1.5000"};
    answer(&b, NUMERIC_OID, mod4, 2, ids, v4_changed);
    assert_false(sy_lag_same(&a, &b, &h));

    sy_shadow_result_free(&a);
    sy_shadow_result_free(&b);
}

/* Many columns, long values: the encoder goes past its stack buffer. */
static void test_feed_large(void **state)
{
    (void)state;
    enum { N = 300 };
    static char big[5000];
    memset(big, 'x', sizeof(big) - 1);
    const char *names[N], *vals[N];
    uint32_t types[N];
    int32_t mods[N];
    int lens[N];
    char name_buf[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(name_buf[i], sizeof(name_buf[i]), "column_%d", i);
        names[i] = name_buf[i];
        types[i] = TEXT_OID;
        mods[i] = -1;
        vals[i] = i == 7 ? big : "v";
        lens[i] = (int)strlen(vals[i]);
    }
    struct sy_shadow_result a, b;
    sy_shadow_result_init(&a);
    sy_shadow_result_init(&b);
    assert_int_equal(sy_lag_feed_columns(&a, N, names, types, mods), 0);
    assert_int_equal(sy_lag_feed_row(&a, N, vals, lens), 0);
    assert_int_equal(sy_lag_feed_complete(&a, "SELECT 1"), 0);
    assert_int_equal(a.ncols, N);
    assert_int_equal(a.nrows, 1);
    assert_int_equal(sy_lag_feed_columns(&b, N, names, types, mods), 0);
    lens[7] = 10; /* a shorter value in one cell */
    assert_int_equal(sy_lag_feed_row(&b, N, vals, lens), 0);
    assert_int_equal(sy_lag_feed_complete(&b, "SELECT 1"), 0);
    assert_false(sy_lag_same(&a, &b, NULL));
    sy_shadow_result_free(&a);
    sy_shadow_result_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decide),
        cmocka_unit_test(test_candidate_and_class),
        cmocka_unit_test(test_same),
        cmocka_unit_test(test_feed_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
