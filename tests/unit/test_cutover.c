/*
 * The cutover state machine alone: scripted step outcomes and an injected clock. Every forward
 * step's failure and timeout, the fence-lifting paths, --force at the drain, dry runs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "switchover/cutover.h"

static const struct sy_co_options OPT = {
    .drain_timeout_ms = 1000, .catchup_timeout_ms = 2000, .step_timeout_ms = 500,
};

static const enum sy_co_step FORWARD[] = {SY_CO_CHECK, SY_CO_WARM, SY_CO_DRAIN, SY_CO_FENCE,
                                          SY_CO_CATCHUP, SY_CO_SEQUENCES, SY_CO_MOVE,
                                          SY_CO_SWITCH};
#define NFORWARD (sizeof(FORWARD) / sizeof(FORWARD[0]))

/* Runs the forward steps up to (not including) index stop, each taking 10 ms. */
static uint64_t advance(struct sy_cutover *co, size_t stop, uint64_t now)
{
    for (size_t i = 0; i < stop; i++) {
        assert_int_equal(co->step, FORWARD[i]);
        now += 10;
        enum sy_co_action a = sy_cutover_done(co, FORWARD[i], 1, NULL, now);
        assert_int_equal(a, i + 1 < NFORWARD ? SY_CO_ACT_RUN_STEP : SY_CO_ACT_FINISHED);
    }
    return now;
}

static void test_happy_path(void **state)
{
    struct sy_cutover co;
    assert_int_equal(sy_cutover_begin(&co, &OPT, 1000), SY_CO_ACT_RUN_STEP);
    assert_int_equal(co.step, SY_CO_CHECK);
    assert_false(sy_cutover_holding(&co));
    uint64_t now = advance(&co, 2, 1000);
    assert_int_equal(co.step, SY_CO_DRAIN);
    assert_true(sy_cutover_holding(&co));
    assert_int_equal(co.paused_at_ms, now);
    now = advance(&co, 0, now);
    for (size_t i = 2; i < NFORWARD; i++) {
        now += 10;
        sy_cutover_done(&co, FORWARD[i], 1, NULL, now);
    }
    assert_int_equal(co.step, SY_CO_DONE);
    assert_true(co.done);
    assert_int_equal(co.failed_step, SY_CO_IDLE);
    for (size_t i = 0; i < NFORWARD; i++) {
        assert_int_equal(co.step_ms[FORWARD[i]], 10);
        assert_true(co.entered & (1u << FORWARD[i]));
    }
    assert_false(co.entered & (1u << SY_CO_UNFENCE));
    assert_int_equal(co.finished_ms - co.started_ms, 80);
    assert_int_equal(co.resumed_at_ms - co.paused_at_ms, 60);
    assert_false(sy_cutover_holding(&co));
    /* Nothing moves after the end. */
    assert_int_equal(sy_cutover_done(&co, SY_CO_SWITCH, 0, "late", now + 1), SY_CO_ACT_NONE);
    assert_int_equal(sy_cutover_tick(&co, now + 100000), SY_CO_ACT_NONE);
    assert_int_equal(co.step, SY_CO_DONE);
}

/* A failure at each forward step: before the fence, straight to RESTORE; from the fence on,
 * UNFENCE first. */
static void test_every_failure(void **state)
{
    for (size_t k = 0; k < NFORWARD; k++) {
        struct sy_cutover co;
        sy_cutover_begin(&co, &OPT, 0);
        uint64_t now = advance(&co, k, 0);
        enum sy_co_action a = sy_cutover_done(&co, FORWARD[k], 0, "boom", now + 5);
        assert_int_equal(a, SY_CO_ACT_RUN_STEP);
        int fenced = FORWARD[k] >= SY_CO_FENCE;
        assert_int_equal(co.step, fenced ? SY_CO_UNFENCE : SY_CO_RESTORE);
        assert_int_equal(co.failed_step, FORWARD[k]);
        assert_non_null(strstr(co.reason, "boom"));
        assert_non_null(strstr(co.reason, sy_co_step_name(FORWARD[k])));
        if (fenced) {
            assert_int_equal(sy_cutover_done(&co, SY_CO_UNFENCE, 1, NULL, now + 6), SY_CO_ACT_RUN_STEP);
            assert_false(co.fenced);
        }
        assert_int_equal(co.step, SY_CO_RESTORE);
        assert_int_equal(sy_cutover_done(&co, SY_CO_RESTORE, 1, NULL, now + 7), SY_CO_ACT_FINISHED);
        assert_int_equal(co.step, SY_CO_ABORTED);
        assert_false(co.done);
        assert_string_equal(co.unfence_error, "");
    }
}

/* Each step's deadline: drain and catch-up have their own, the rest step_timeout. */
static void test_every_timeout(void **state)
{
    for (size_t k = 0; k < NFORWARD; k++) {
        struct sy_cutover co;
        sy_cutover_begin(&co, &OPT, 0);
        uint64_t now = advance(&co, k, 0);
        uint64_t limit = FORWARD[k] == SY_CO_DRAIN     ? OPT.drain_timeout_ms
                         : FORWARD[k] == SY_CO_CATCHUP ? OPT.catchup_timeout_ms
                                                       : OPT.step_timeout_ms;
        assert_int_equal(sy_cutover_remaining(&co, now), limit);
        assert_int_equal(sy_cutover_tick(&co, now + limit - 1), SY_CO_ACT_NONE);
        assert_int_equal(co.step, FORWARD[k]);
        assert_int_equal(sy_cutover_tick(&co, now + limit), SY_CO_ACT_RUN_STEP);
        assert_int_equal(co.failed_step, FORWARD[k]);
        assert_non_null(strstr(co.reason, "timed out"));
        /* The late outcome of the timed-out step is ignored. */
        enum sy_co_step abort_step = co.step;
        assert_int_equal(sy_cutover_done(&co, FORWARD[k], 1, NULL, now + limit + 1), SY_CO_ACT_NONE);
        assert_int_equal(co.step, abort_step);
        assert_int_equal(abort_step, FORWARD[k] >= SY_CO_FENCE ? SY_CO_UNFENCE : SY_CO_RESTORE);
    }
}

/* A fence that times out may still land: the abort lifts it anyway. */
static void test_fence_timeout_unfences(void **state)
{
    struct sy_cutover co;
    sy_cutover_begin(&co, &OPT, 0);
    uint64_t now = advance(&co, 3, 0);
    assert_int_equal(co.step, SY_CO_FENCE);
    assert_true(co.fenced);
    sy_cutover_tick(&co, now + OPT.step_timeout_ms);
    assert_int_equal(co.step, SY_CO_UNFENCE);
}

/* Lifting the fence fails: sessions are still restored, and the report says so. */
static void test_unfence_failure(void **state)
{
    struct sy_cutover co;
    sy_cutover_begin(&co, &OPT, 0);
    uint64_t now = advance(&co, 4, 0);
    sy_cutover_done(&co, SY_CO_CATCHUP, 0, "green stopped", now);
    assert_int_equal(co.step, SY_CO_UNFENCE);
    assert_int_equal(sy_cutover_done(&co, SY_CO_UNFENCE, 0, "blue unreachable", now + 1),
                     SY_CO_ACT_RUN_STEP);
    assert_int_equal(co.step, SY_CO_RESTORE);
    assert_true(co.fenced);
    assert_string_equal(co.unfence_error, "blue unreachable");
    assert_non_null(strstr(co.reason, "green stopped"));
    sy_cutover_done(&co, SY_CO_RESTORE, 1, NULL, now + 2);
    assert_int_equal(co.step, SY_CO_ABORTED);
    /* The unfence step times out too. */
    sy_cutover_begin(&co, &OPT, 0);
    now = advance(&co, 5, 0);
    sy_cutover_done(&co, SY_CO_SEQUENCES, 0, "x", now);
    assert_int_equal(sy_cutover_tick(&co, now + OPT.step_timeout_ms), SY_CO_ACT_RUN_STEP);
    assert_int_equal(co.step, SY_CO_RESTORE);
    assert_non_null(strstr(co.unfence_error, "timed out"));
}

static void test_force(void **state)
{
    struct sy_co_options o = OPT;
    o.force = 1;
    struct sy_cutover co;
    sy_cutover_begin(&co, &o, 0);
    uint64_t now = advance(&co, 2, 0);
    assert_int_equal(co.step, SY_CO_DRAIN);
    assert_int_equal(sy_cutover_tick(&co, now + o.drain_timeout_ms), SY_CO_ACT_FORCE);
    assert_int_equal(co.step, SY_CO_DRAIN);
    assert_true(co.forced);
    /* After forcing, the drain gets step_timeout more; then it fails for good. */
    assert_int_equal(sy_cutover_tick(&co, now + o.drain_timeout_ms + o.step_timeout_ms - 1),
                     SY_CO_ACT_NONE);
    assert_int_equal(sy_cutover_tick(&co, now + o.drain_timeout_ms + o.step_timeout_ms),
                     SY_CO_ACT_RUN_STEP);
    assert_int_equal(co.step, SY_CO_RESTORE);
    /* Forced, then drained: the cutover goes on. */
    sy_cutover_begin(&co, &o, 0);
    now = advance(&co, 2, 0);
    sy_cutover_tick(&co, now + o.drain_timeout_ms);
    assert_int_equal(sy_cutover_done(&co, SY_CO_DRAIN, 1, NULL, now + o.drain_timeout_ms + 3),
                     SY_CO_ACT_RUN_STEP);
    assert_int_equal(co.step, SY_CO_FENCE);
}

static void test_dry_run(void **state)
{
    struct sy_co_options o = OPT;
    o.dry_run = 1;
    struct sy_cutover co;
    sy_cutover_begin(&co, &o, 0);
    /* The dry run logs every session into the target too (warm), then stops before the pause. */
    assert_int_equal(sy_cutover_done(&co, SY_CO_CHECK, 1, NULL, 7), SY_CO_ACT_RUN_STEP);
    assert_int_equal(co.step, SY_CO_WARM);
    assert_int_equal(sy_cutover_done(&co, SY_CO_WARM, 1, NULL, 9), SY_CO_ACT_FINISHED);
    assert_int_equal(co.step, SY_CO_DONE);
    assert_false(co.done); /* nothing switched */
    assert_int_equal(co.paused_at_ms, 0);
    /* A login that fails in the dry run's warm step: the dry run fails, nothing was held. */
    sy_cutover_begin(&co, &o, 0);
    sy_cutover_done(&co, SY_CO_CHECK, 1, NULL, 7);
    sy_cutover_done(&co, SY_CO_WARM, 0, "session 3 (user app): password authentication failed", 8);
    assert_int_equal(co.step, SY_CO_RESTORE);
    assert_false(sy_cutover_holding(&co));
    sy_cutover_begin(&co, &o, 0);
    sy_cutover_done(&co, SY_CO_CHECK, 0, "green lags", 7);
    assert_int_equal(co.step, SY_CO_RESTORE);
    assert_false(sy_cutover_holding(&co)); /* never paused: nothing held */
}

static void test_wrong_step_ignored(void **state)
{
    struct sy_cutover co;
    sy_cutover_begin(&co, &OPT, 0);
    assert_int_equal(sy_cutover_done(&co, SY_CO_FENCE, 1, NULL, 1), SY_CO_ACT_NONE);
    assert_int_equal(co.step, SY_CO_CHECK);
    assert_string_equal(sy_co_step_name(SY_CO_CATCHUP), "catchup");
    assert_string_equal(sy_co_step_name((enum sy_co_step)99), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_happy_path),       cmocka_unit_test(test_every_failure),
        cmocka_unit_test(test_every_timeout),    cmocka_unit_test(test_fence_timeout_unfences),
        cmocka_unit_test(test_unfence_failure),  cmocka_unit_test(test_force),
        cmocka_unit_test(test_dry_run),          cmocka_unit_test(test_wrong_step_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
