/*
 * Integration tests: libpq clients through a real switchyard in front of real PostgreSQL servers
 * (started by the pg_servers_start fixture). Everything a client can send must work unchanged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/harness.h"

static struct h_env env;
static struct h_proxy proxy;

static PGconn *connect_proxy(void)
{
    char ci[512];
    h_conninfo(ci, sizeof(ci), proxy.port, env.pguser, NULL);
    PGconn *c = PQconnectdb(ci);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect through switchyard failed: %s", PQerrorMessage(c));
    return c;
}

static PGconn *connect_direct(void)
{
    char ci[512];
    h_conninfo(ci, sizeof(ci), env.blue_port, env.pguser, NULL);
    PGconn *c = PQconnectdb(ci);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("direct connect failed: %s", PQerrorMessage(c));
    return c;
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("'%s' failed: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

static char *query_value(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1)
        fail_msg("'%s' failed: %s", sql, PQerrorMessage(c));
    char *v = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static int setup(void **state)
{
    h_env_load(&env);
    if (h_proxy_start(&proxy, &env, env.blue_port, env.green_port, NULL) != 0)
        return -1;
    PGconn *c = connect_direct();
    exec_ok(c, "drop table if exists sy_t; create table sy_t (id int primary key, v text)");
    PQfinish(c);
    return 0;
}

static int teardown(void **state)
{
    int rc = h_proxy_stop(&proxy, 10000);
    assert_int_equal(rc, 0);
    return 0;
}

static void test_simple_query(void **state)
{
    PGconn *c = connect_proxy();
    char *v = query_value(c, "select 40 + 2");
    assert_string_equal(v, "42");
    free(v);
    /* Several statements in one Query message, one result each. */
    exec_ok(c, "delete from sy_t; insert into sy_t values (1, 'a'); insert into sy_t values (2, 'b')");
    v = query_value(c, "select string_agg(v, ',' order by id) from sy_t");
    assert_string_equal(v, "a,b");
    free(v);
    PQfinish(c);
}

static void test_extended_and_prepared(void **state)
{
    PGconn *c = connect_proxy();
    const char *params[2] = {"10", "ten"};
    PGresult *r = PQexecParams(c, "insert into sy_t values ($1::int, $2) on conflict (id) do update set v = excluded.v",
                               2, NULL, params, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    r = PQprepare(c, "get", "select v from sy_t where id = $1::int", 1, NULL);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    for (int i = 0; i < 3; i++) {
        const char *p1[1] = {"10"};
        r = PQexecPrepared(c, "get", 1, p1, NULL, NULL, 0);
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        assert_string_equal(PQgetvalue(r, 0, 0), "ten");
        PQclear(r);
    }
    /* Binary results pass through unchanged. */
    r = PQexecParams(c, "select 258::int4", 0, NULL, NULL, NULL, NULL, 1);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQgetlength(r, 0, 0), 4);
    const unsigned char *b = (const unsigned char *)PQgetvalue(r, 0, 0);
    assert_int_equal(b[2], 1);
    assert_int_equal(b[3], 2);
    PQclear(r);
    PQfinish(c);
}

static void test_pipeline_with_error(void **state)
{
    PGconn *c = connect_proxy();
    assert_int_equal(PQenterPipelineMode(c), 1);
    assert_int_equal(PQsendQueryParams(c, "select 1", 0, NULL, NULL, NULL, NULL, 0), 1);
    assert_int_equal(PQsendQueryParams(c, "select 1/0", 0, NULL, NULL, NULL, NULL, 0), 1);
    assert_int_equal(PQsendQueryParams(c, "select 3", 0, NULL, NULL, NULL, NULL, 0), 1);
    assert_int_equal(PQpipelineSync(c), 1);
    assert_int_equal(PQsendQueryParams(c, "select 4", 0, NULL, NULL, NULL, NULL, 0), 1);
    assert_int_equal(PQpipelineSync(c), 1);
    /* Expected: tuples, error, aborted, sync, tuples, sync. */
    ExecStatusType want[] = {PGRES_TUPLES_OK, PGRES_FATAL_ERROR, PGRES_PIPELINE_ABORTED,
                             PGRES_PIPELINE_SYNC, PGRES_TUPLES_OK, PGRES_PIPELINE_SYNC};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        PGresult *r = PQgetResult(c);
        assert_non_null(r);
        assert_int_equal(PQresultStatus(r), want[i]);
        if (want[i] == PGRES_FATAL_ERROR)
            assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "22012");
        if (i == 4)
            assert_string_equal(PQgetvalue(r, 0, 0), "4");
        PQclear(r);
        if (want[i] != PGRES_PIPELINE_SYNC)
            assert_null(PQgetResult(c)); /* end of this query's results */
    }
    assert_int_equal(PQexitPipelineMode(c), 1);
    char *v = query_value(c, "select 'after'");
    assert_string_equal(v, "after");
    free(v);
    PQfinish(c);
}

static void test_copy_in_and_out(void **state)
{
    PGconn *c = connect_proxy();
    exec_ok(c, "drop table if exists sy_copy; create table sy_copy (a int, b text)");
    PGresult *r = PQexec(c, "copy sy_copy from stdin");
    assert_int_equal(PQresultStatus(r), PGRES_COPY_IN);
    PQclear(r);
    char line[64];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(line, sizeof(line), "%d\trow %d\n", i, i);
        assert_int_equal(PQputCopyData(c, line, n), 1);
    }
    assert_int_equal(PQputCopyEnd(c, NULL), 1);
    r = PQgetResult(c);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    assert_string_equal(PQcmdTuples(r), "5000");
    PQclear(r);
    while ((r = PQgetResult(c)))
        PQclear(r);
    r = PQexec(c, "copy (select a, b from sy_copy order by a) to stdout");
    assert_int_equal(PQresultStatus(r), PGRES_COPY_OUT);
    PQclear(r);
    int rows = 0;
    char *buf;
    while (PQgetCopyData(c, &buf, 0) > 0) {
        if (rows == 4999)
            assert_string_equal(buf, "4999\trow 4999\n");
        rows++;
        PQfreemem(buf);
    }
    assert_int_equal(rows, 5000);
    r = PQgetResult(c);
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    /* A COPY the client aborts. */
    r = PQexec(c, "copy sy_copy from stdin");
    assert_int_equal(PQresultStatus(r), PGRES_COPY_IN);
    PQclear(r);
    PQputCopyData(c, "1\tx\n", 4);
    PQputCopyEnd(c, "client gave up");
    r = PQgetResult(c);
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
    while ((r = PQgetResult(c)))
        PQclear(r);
    char *v = query_value(c, "select count(*) from sy_copy");
    assert_string_equal(v, "5000");
    free(v);
    PQfinish(c);
}

static void test_large_rows(void **state)
{
    PGconn *c = connect_proxy();
    /* 30 MiB out. */
    PGresult *r = PQexec(c, "select repeat('x', 30*1024*1024) as big, 7 as after");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQgetlength(r, 0, 0), 30 * 1024 * 1024);
    assert_string_equal(PQgetvalue(r, 0, 1), "7");
    PQclear(r);
    /* 20 MiB in, as a parameter. */
    size_t n = 20u * 1024 * 1024;
    char *big = malloc(n + 1);
    memset(big, 'y', n);
    big[n] = 0;
    const char *params[1] = {big};
    r = PQexecParams(c, "select length($1::text)", 1, NULL, params, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "20971520");
    PQclear(r);
    free(big);
    PQfinish(c);
}

static void on_notice(void *arg, const PGresult *res)
{
    int *count = arg;
    if (strstr(PQresultErrorMessage(res), "hello from plpgsql"))
        (*count)++;
}

static void test_notice_listen_notify(void **state)
{
    PGconn *listener = connect_proxy();
    PGconn *talker = connect_proxy();
    int notices = 0;
    PQsetNoticeReceiver(talker, on_notice, &notices);
    exec_ok(talker, "do $$ begin raise notice 'hello from plpgsql'; end $$");
    assert_int_equal(notices, 1);
    exec_ok(listener, "listen sy_chan");
    exec_ok(talker, "notify sy_chan, 'payload-1'");
    PGnotify *n = NULL;
    for (int i = 0; i < 50 && !n; i++) {
        struct pollfd pfd = {.fd = PQsocket(listener), .events = POLLIN};
        poll(&pfd, 1, 100);
        PQconsumeInput(listener);
        n = PQnotifies(listener);
    }
    assert_non_null(n);
    assert_string_equal(n->relname, "sy_chan");
    assert_string_equal(n->extra, "payload-1");
    PQfreemem(n);
    PQfinish(listener);
    PQfinish(talker);
}

static void test_session_set_and_parameter_status(void **state)
{
    PGconn *c = connect_proxy();
    exec_ok(c, "set work_mem = '7MB'");
    char *v = query_value(c, "show work_mem");
    assert_string_equal(v, "7MB");
    free(v);
    exec_ok(c, "set application_name = 'sy-test-app'");
    assert_string_equal(PQparameterStatus(c, "application_name"), "sy-test-app");
    exec_ok(c, "set timezone = 'Asia/Tokyo'");
    assert_string_equal(PQparameterStatus(c, "TimeZone"), "Asia/Tokyo");
    PQfinish(c);
}

static void test_transaction_state_in_admin(void **state)
{
    PGconn *c = connect_proxy();
    exec_ok(c, "begin");
    exec_ok(c, "select 1");
    char *j = h_ctl(&proxy, "status");
    assert_non_null(j);
    assert_true(h_json_int(j, "idle_in_transaction") >= 1);
    free(j);
    PGresult *r = PQexec(c, "select 1/0");
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
    assert_int_equal(PQtransactionStatus(c), PQTRANS_INERROR);
    j = h_ctl(&proxy, "status");
    assert_true(h_json_int(j, "failed_transaction") >= 1);
    free(j);
    exec_ok(c, "rollback");
    j = h_ctl(&proxy, "clients");
    assert_non_null(strstr(j, "\"state\":\"idle\""));
    free(j);
    PQfinish(c);
}

static void test_backend_key_is_proxys_own(void **state)
{
    PGconn *c = connect_proxy();
    char *real = query_value(c, "select pg_backend_pid()");
    /* The client holds the key the proxy issued, not the server's. */
    assert_int_not_equal(PQbackendPID(c), atoi(real));
    free(real);
    PQfinish(c);
}

static void test_cancel(void **state)
{
    PGconn *c = connect_proxy();
    assert_int_equal(PQsendQuery(c, "select pg_sleep(20)"), 1);
    usleep(300000);
    PGcancel *cn = PQgetCancel(c);
    char err[256];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(PQcancel(cn, err, sizeof(err)), 1);
    PQfreeCancel(cn);
    PGresult *r = PQgetResult(c);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "57014");
    PQclear(r);
    while ((r = PQgetResult(c)))
        PQclear(r);
    assert_true(t1.tv_sec - t0.tv_sec < 5);
    /* The session is still usable. */
    char *v = query_value(c, "select 'still here'");
    assert_string_equal(v, "still here");
    free(v);
    PQfinish(c);
}

static void test_cancel_with_wrong_key_is_ignored(void **state)
{
    PGconn *c = connect_proxy();
    assert_int_equal(PQsendQuery(c, "select pg_sleep(1.5), 'done'"), 1);
    int fd = h_tcp_connect(proxy.port);
    uint8_t pkt[16] = {0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e};
    uint32_t pid = (uint32_t)PQbackendPID(c);
    pkt[8] = (uint8_t)(pid >> 24); pkt[9] = (uint8_t)(pid >> 16); pkt[10] = (uint8_t)(pid >> 8); pkt[11] = (uint8_t)pid;
    pkt[12] = 1; pkt[13] = 2; pkt[14] = 3; pkt[15] = 4; /* not the key */
    assert_int_equal(h_send_all(fd, pkt, sizeof(pkt)), 0);
    close(fd);
    PGresult *r = PQgetResult(c);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 1), "done");
    PQclear(r);
    while ((r = PQgetResult(c)))
        PQclear(r);
    PQfinish(c);
}

/* Polls a query on a direct connection until it returns want (up to ~5 s). */
static int direct_wait_value(PGconn *d, const char *sql, const char *want)
{
    for (int i = 0; i < 500; i++) {
        char *v = query_value(d, sql);
        int same = strcmp(v, want) == 0;
        free(v);
        if (same)
            return 1;
        usleep(10000);
    }
    return 0;
}

/*
 * A client that leaves cleanly hands its server connection to the next client with the same
 * startup parameters, reset with DISCARD ALL: the next client sees none of the first one's
 * state, gets its own cancel key, and can cancel. A different startup parameter gets a different
 * connection; a kept connection whose backend died is replaced without the client noticing.
 */
static void test_server_connection_reuse(void **state)
{
    PGconn *d = connect_direct();
    char *default_work_mem = query_value(d, "select current_setting('work_mem')");
    PGconn *a = connect_proxy();
    char *pid_a = query_value(a, "select pg_backend_pid()");
    exec_ok(a, "create temp table sy_scratch(x int)");
    exec_ok(a, "set work_mem = '7MB'");
    exec_ok(a, "prepare sy_p as select 1");
    exec_ok(a, "listen sy_chan");
    exec_ok(a, "select pg_advisory_lock(4242)");
    PQfinish(a); /* Terminate: the connection is reset and kept */

    /* The advisory lock is released by the reset before anyone else can get the connection. */
    assert_true(direct_wait_value(d, "select count(*) from pg_locks where locktype = 'advisory'",
                                  "0"));
    PGconn *b = connect_proxy();
    char *pid_b = query_value(b, "select pg_backend_pid()");
    assert_string_equal(pid_b, pid_a); /* the same backend, reused */
    char *v = query_value(b, "select (select count(*) from pg_class where relname = 'sy_scratch')"
                             " || ',' || current_setting('work_mem')"
                             " || ',' || (select count(*) from pg_prepared_statements)"
                             " || ',' || (select count(*) from pg_listening_channels())");
    char want[128];
    snprintf(want, sizeof(want), "0,%s,0,0", default_work_mem);
    assert_string_equal(v, want);
    free(v);
    assert_non_null(PQparameterStatus(b, "server_version"));
    assert_string_equal(PQparameterStatus(b, "client_encoding"), "UTF8");
    assert_int_not_equal(PQbackendPID(b), atoi(pid_b)); /* the proxy's key, as always */
    assert_int_equal(PQsendQuery(b, "select pg_sleep(20)"), 1);
    usleep(200000);
    PGcancel *cn = PQgetCancel(b);
    char err[256];
    assert_int_equal(PQcancel(cn, err, sizeof(err)), 1);
    PQfreeCancel(cn);
    PGresult *r = PQgetResult(b);
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "57014");
    PQclear(r);
    while ((r = PQgetResult(b)))
        PQclear(r);
    PQfinish(b);

    /* Other startup parameters: not that connection. */
    char ci[512];
    h_conninfo(ci, sizeof(ci), proxy.port, env.pguser, "application_name=sy_other");
    PGconn *c = PQconnectdb(ci);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    char *pid_c = query_value(c, "select pg_backend_pid()");
    assert_string_not_equal(pid_c, pid_a);
    PQfinish(c);

    /* The kept backend dies while idle: the next client still logs in, on a new backend. */
    char sql[128];
    snprintf(sql, sizeof(sql), "select pg_terminate_backend(%s, 5000)", pid_a);
    free(query_value(d, sql));
    PGconn *e = connect_proxy();
    char *pid_e = query_value(e, "select pg_backend_pid()");
    assert_string_not_equal(pid_e, pid_a);
    assert_true(h_log_contains(&proxy, "could not be reused"));
    v = query_value(e, "select 'fine'");
    assert_string_equal(v, "fine");
    free(v);
    char *st = h_ctl(&proxy, "status");
    assert_non_null(st);
    assert_true(h_json_int(st, "server_connections_reused") >= 1);
    free(st);
    PQfinish(e);
    PQfinish(d);
    free(pid_a);
    free(pid_b);
    free(pid_c);
    free(pid_e);
    free(default_work_mem);
}

static void test_200_concurrent_sessions(void **state)
{
    enum { N = 200 };
    PGconn **conns = calloc(N, sizeof(*conns));
    char ci[512];
    h_conninfo(ci, sizeof(ci), proxy.port, env.pguser, NULL);
    /* Start all logins at once, then drive them to completion together. */
    for (int i = 0; i < N; i++) {
        conns[i] = PQconnectStart(ci);
        assert_non_null(conns[i]);
    }
    int pending = N;
    for (int round = 0; round < 3000 && pending > 0; round++) {
        pending = 0;
        for (int i = 0; i < N; i++) {
            PostgresPollingStatusType st = PQconnectPoll(conns[i]);
            if (st == PGRES_POLLING_FAILED)
                fail_msg("session %d failed to log in: %s", i, PQerrorMessage(conns[i]));
            if (st != PGRES_POLLING_OK)
                pending++;
        }
        if (pending)
            usleep(2000);
    }
    assert_int_equal(pending, 0);
    for (int i = 0; i < N; i++)
        assert_int_equal(PQsendQuery(conns[i], "select pg_backend_pid(), 1"), 1);
    for (int i = 0; i < N; i++) {
        PGresult *r = PQgetResult(conns[i]);
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        assert_string_equal(PQgetvalue(r, 0, 1), "1");
        PQclear(r);
        while ((r = PQgetResult(conns[i])))
            PQclear(r);
    }
    char *j = h_ctl(&proxy, "status");
    assert_true(h_json_int(j, "sessions") >= N);
    free(j);
    for (int i = 0; i < N; i++)
        PQfinish(conns[i]);
    free(conns);
}

static void test_server_down_gives_clear_error(void **state)
{
    struct h_proxy p2;
    int dead = h_free_port();
    assert_int_equal(h_proxy_start(&p2, &env, dead, env.green_port, NULL), 0);
    char ci[512];
    h_conninfo(ci, sizeof(ci), p2.port, env.pguser, NULL);
    PGconn *c = PQconnectdb(ci);
    assert_int_equal(PQstatus(c), CONNECTION_BAD);
    assert_non_null(strstr(PQerrorMessage(c), "could not connect to the blue server"));
    PQfinish(c);
    assert_int_equal(h_proxy_stop(&p2, 10000), 0);
}

static void test_sighup_reload_and_sigterm_grace(void **state)
{
    struct h_proxy p2;
    assert_int_equal(h_proxy_start(&p2, &env, env.blue_port, env.green_port, "shutdown_grace = 10s"), 0);
    char ci[512];
    h_conninfo(ci, sizeof(ci), p2.port, env.pguser, NULL);
    PGconn *c = PQconnectdb(ci);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    /* A bad config on reload is refused and the old one kept. */
    FILE *f = fopen(p2.config, "a");
    fprintf(f, "bogus_key = 1\n");
    fclose(f);
    kill(p2.pid, SIGHUP);
    usleep(300000);
    assert_true(h_log_contains(&p2, "reload failed"));
    char *v = query_value(c, "select 'alive'");
    assert_string_equal(v, "alive");
    free(v);
    /* SIGTERM lets the open session finish its work; new clients are refused. */
    assert_int_equal(PQsendQuery(c, "select pg_sleep(0.5), 'finished'"), 1);
    kill(p2.pid, SIGTERM);
    usleep(100000);
    PGconn *late = PQconnectdb(ci);
    assert_int_equal(PQstatus(late), CONNECTION_BAD);
    PQfinish(late);
    PGresult *r = PQgetResult(c);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 1), "finished");
    PQclear(r);
    while ((r = PQgetResult(c)))
        PQclear(r);
    PQfinish(c);
    /* With the last session gone the process exits by itself, cleanly. */
    for (int i = 0; i < 100 && h_proxy_alive(&p2); i++)
        usleep(50000);
    assert_int_equal(p2.exited, 1);
    assert_int_equal(p2.exit_status, 0);
    assert_true(h_log_contains(&p2, "stopped"));
}

/* Whether a result is ready on c within ms milliseconds. */
static int result_within(PGconn *c, int ms)
{
    for (int waited = 0; waited <= ms; waited += 20) {
        PQconsumeInput(c);
        if (!PQisBusy(c))
            return 1;
        struct pollfd pfd = {.fd = PQsocket(c), .events = POLLIN};
        poll(&pfd, 1, 20);
    }
    return 0;
}

static void finish_result(PGconn *c, const char *want)
{
    PGresult *r = PQgetResult(c);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), want);
    PQclear(r);
    while ((r = PQgetResult(c)))
        PQclear(r);
}

static void test_pause_holds_new_transactions(void **state)
{
    PGconn *in_tx = connect_proxy();
    PGconn *idle = connect_proxy();
    exec_ok(in_tx, "begin");
    exec_ok(in_tx, "select 1");
    char *j = h_ctl(&proxy, "pause --timeout 20000");
    assert_non_null(strstr(j, "\"result\":\"paused\""));
    assert_int_equal(h_json_int(j, "in_transaction"), 1);
    free(j);
    /* An idle session's next transaction waits at the proxy. */
    assert_int_equal(PQsendQuery(idle, "select 'idle-done'"), 1);
    assert_int_equal(result_within(idle, 400), 0);
    /* A new login waits too. */
    char ci[512];
    h_conninfo(ci, sizeof(ci), proxy.port, env.pguser, NULL);
    PGconn *late = PQconnectStart(ci);
    usleep(300000);
    assert_int_not_equal(PQconnectPoll(late), PGRES_POLLING_OK);
    /* A session inside a transaction carries on to its end... */
    char *v = query_value(in_tx, "select 'inside'");
    assert_string_equal(v, "inside");
    free(v);
    exec_ok(in_tx, "commit");
    /* ...and then its next transaction waits as well. */
    assert_int_equal(PQsendQuery(in_tx, "select 'tx-done'"), 1);
    assert_int_equal(result_within(in_tx, 300), 0);
    j = h_ctl(&proxy, "status");
    assert_non_null(strstr(j, "\"paused\":true"));
    assert_true(h_json_int(j, "held") >= 2);
    free(j);
    j = h_ctl(&proxy, "resume");
    assert_non_null(strstr(j, "\"result\":\"resumed\""));
    free(j);
    assert_int_equal(result_within(idle, 5000), 1);
    finish_result(idle, "idle-done");
    assert_int_equal(result_within(in_tx, 5000), 1);
    finish_result(in_tx, "tx-done");
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    for (int i = 0; i < 500 && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED; i++) {
        st = PQconnectPoll(late);
        usleep(10000);
    }
    assert_int_equal(st, PGRES_POLLING_OK);
    PQfinish(late);
    PQfinish(in_tx);
    PQfinish(idle);
}

/* A cancel request is answered during a pause (a new connection is read up to its startup
 * packet; only a login waits): a switch's drain can see a query its client cancels end. */
static void test_cancel_answered_during_pause(void **state)
{
    PGconn *c = connect_proxy();
    assert_int_equal(PQsendQuery(c, "select pg_sleep(30)"), 1);
    usleep(200000);
    char *j = h_ctl(&proxy, "pause --timeout 20000");
    assert_non_null(strstr(j, "\"result\":\"paused\""));
    free(j);
    PGcancel *cn = PQgetCancel(c);
    char err[256];
    assert_int_equal(PQcancel(cn, err, sizeof(err)), 1);
    PQfreeCancel(cn);
    assert_int_equal(result_within(c, 3000), 1);
    PGresult *r = PQgetResult(c);
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "57014");
    PQclear(r);
    while ((r = PQgetResult(c)))
        PQclear(r);
    j = h_ctl(&proxy, "status");
    assert_non_null(strstr(j, "\"paused\":true"));
    free(j);
    free(h_ctl(&proxy, "resume"));
    char *v = query_value(c, "select 'after the cancel'");
    assert_string_equal(v, "after the cancel");
    free(v);
    PQfinish(c);
}

static void test_pause_resumes_by_itself(void **state)
{
    PGconn *c = connect_proxy();
    char *j = h_ctl(&proxy, "pause --timeout 600");
    free(j);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char *v = query_value(c, "select 'after the pause'");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_string_equal(v, "after the pause");
    free(v);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(ms >= 400);
    j = h_ctl(&proxy, "status");
    assert_non_null(strstr(j, "\"paused\":false"));
    free(j);
    PQfinish(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_query),
        cmocka_unit_test(test_extended_and_prepared),
        cmocka_unit_test(test_pipeline_with_error),
        cmocka_unit_test(test_copy_in_and_out),
        cmocka_unit_test(test_large_rows),
        cmocka_unit_test(test_notice_listen_notify),
        cmocka_unit_test(test_session_set_and_parameter_status),
        cmocka_unit_test(test_transaction_state_in_admin),
        cmocka_unit_test(test_backend_key_is_proxys_own),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_cancel_with_wrong_key_is_ignored),
        cmocka_unit_test(test_server_connection_reuse),
        cmocka_unit_test(test_200_concurrent_sessions),
        cmocka_unit_test(test_pause_holds_new_transactions),
        cmocka_unit_test(test_cancel_answered_during_pause),
        cmocka_unit_test(test_pause_resumes_by_itself),
        cmocka_unit_test(test_server_down_gives_clear_error),
        cmocka_unit_test(test_sighup_reload_and_sigterm_grace),
    };
    return cmocka_run_group_tests_name("proxy", tests, setup, teardown);
}
