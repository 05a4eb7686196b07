/*
 * SCRAM key derivation on libuv's threadpool (proxy/pg_derive.c), on a real loop: the keys are
 * the ones pg_crypto_scram_keys gives on the spot; the loop's timers keep firing while a long
 * derivation runs; a failure is reported with its code; a job cancelled before it ran is never
 * reported, and every job is accounted for.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "protocol/pg/pg_scram.h"
#include "proxy/pg_derive.h"

struct seen {
    int calls;
    uint64_t session_id, token;
    struct pg_derive_keys keys;
};

static void on_done(void *ctx, uint64_t session_id, uint64_t token,
                    const struct pg_derive_keys *keys)
{
    struct seen *s = ctx;
    s->calls++;
    s->session_id = session_id;
    s->token = token;
    s->keys = *keys;
}

static const uint8_t salt[16] = "0123456789abcdef";

static void test_keys_match_the_direct_call(void **state)
{
    uv_loop_t loop;
    struct seen s = {0};
    uint8_t ck[32], sk[32], svk[32];
    assert_int_equal(uv_loop_init(&loop), 0);
    uint64_t t = pg_derive_submit(&loop, "pencil", 6, salt, sizeof(salt), 4096, on_done, &s, 42);
    assert_true(t != 0);
    assert_int_equal(pg_derive_pending(), 1);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.session_id, 42);
    assert_int_equal(s.token, t);
    assert_int_equal(s.keys.rc, 0);
    assert_int_equal(pg_crypto_scram_keys("pencil", 6, salt, sizeof(salt), 4096, ck, sk, svk), 0);
    assert_memory_equal(s.keys.client_key, ck, 32);
    assert_memory_equal(s.keys.stored_key, sk, 32);
    assert_memory_equal(s.keys.server_key, svk, 32);
    assert_int_equal(pg_derive_pending(), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_failure_is_reported(void **state)
{
    uv_loop_t loop;
    struct seen s = {0};
    assert_int_equal(uv_loop_init(&loop), 0);
    /* Zero iterations: pg_crypto refuses, the job says so and carries no key. */
    assert_true(pg_derive_submit(&loop, "x", 1, salt, sizeof(salt), 0, on_done, &s, 7) != 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.keys.rc, PG_CRYPTO_E_ARG);
    static const uint8_t zero[32];
    assert_memory_equal(s.keys.client_key, zero, 32);
    /* A salt longer than any SCRAM salt is refused at once, never reported. */
    uint8_t big[PG_SCRAM_SALT_MAX + 1] = {0};
    assert_int_equal(pg_derive_submit(&loop, "x", 1, big, sizeof(big), 1, on_done, &s, 7), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(s.calls, 1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

struct ticker {
    int ticks;
    struct seen *s;
    int ticks_before_done;
};

static void on_tick(uv_timer_t *t)
{
    struct ticker *k = t->data;
    k->ticks++;
    if (k->s->calls == 0)
        k->ticks_before_done = k->ticks;
    else
        uv_close((uv_handle_t *)t, NULL);
}

/* The loop is free while a derivation runs: a 5 ms timer keeps firing. */
static void test_loop_runs_during_derivation(void **state)
{
    uv_loop_t loop;
    uv_timer_t timer;
    struct seen s = {0};
    struct ticker k = {.s = &s};
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &timer);
    timer.data = &k;
    uv_timer_start(&timer, on_tick, 5, 5);
    /* Long enough to span many ticks (about 0.3 s or more). */
    assert_true(pg_derive_submit(&loop, "pencil", 6, salt, sizeof(salt), 600000, on_done, &s,
                                 1) != 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.keys.rc, 0);
    if (k.ticks_before_done < 5)
        fail_msg("only %d timer ticks while the derivation ran: the loop was blocked",
                 k.ticks_before_done);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* More jobs than threads: the last ones wait in the queue, and one cancelled there is never
 * reported; the rest are, each once. */
static void test_cancel_queued_job(void **state)
{
    enum { N = 12 };
    uv_loop_t loop;
    struct seen s[N];
    uint64_t tok[N];
    memset(s, 0, sizeof(s));
    assert_int_equal(uv_loop_init(&loop), 0);
    for (int i = 0; i < N; i++) {
        tok[i] = pg_derive_submit(&loop, "pencil", 6, salt, sizeof(salt), 30000, on_done, &s[i],
                                  (uint64_t)i);
        assert_true(tok[i] != 0);
        for (int j = 0; j < i; j++)
            assert_true(tok[j] != tok[i]);
    }
    assert_int_equal(pg_derive_pending(), N);
    pg_derive_cancel(tok[N - 1]); /* the threadpool has at most a few threads: still queued */
    pg_derive_cancel(0);          /* ignored */
    pg_derive_cancel(tok[N - 1] + 1000); /* unknown: ignored */
    uv_run(&loop, UV_RUN_DEFAULT);
    for (int i = 0; i < N - 1; i++)
        assert_int_equal(s[i].calls, 1);
    assert_int_equal(s[N - 1].calls, 0);
    assert_int_equal(pg_derive_pending(), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_match_the_direct_call),
        cmocka_unit_test(test_failure_is_reported),
        cmocka_unit_test(test_loop_runs_during_derivation),
        cmocka_unit_test(test_cancel_queued_job),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
