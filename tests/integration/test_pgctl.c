/*
 * The control adapter (switchover/pgctl.c) against real servers: its own blue, green (logical
 * replication, database shop) and a physical standby of blue, started in a temporary directory by
 * tests/support/pg_cluster.sh and pg_replicate.sh, so it never disturbs the shared fixture.
 *
 * Covers: logging in (and a clear error for a bad password), probes of a primary and a standby,
 * replication state (logical, disabled, physical), catch-up measured against the source's WAL
 * position with the data checked at the moment it is claimed, long transactions, the fence and
 * its undo, sequences, the reverse replication of the rollback window and its teardown, and
 * promotion of the standby. The order of the tests matters: they share the servers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h> /* after the four above, which it needs */

#include <libpq-fe.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "switchover/pgctl.h"

#define DB "shop"
#define REV "sy_rev"
#define WRONG_SECRET "Rev-wrong-secret-93"

static char dir[128];       /* the servers' directory */
static char env_text[4096]; /* its env file */
static int blue_port, green_port, standby_port;
static char blue_log[256], green_log[256];
static char app_user[64], app_password[64];
static struct sy_pgctl_target blue_t, green_t, standby_t;
static PGconn *blue, *green, *standby; /* control connections, as postgres */
static char err[512];

/* ---- assertions that print both sides ---- */

#define assert_contains(hay, needle)                                                               \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (!strstr(h_, n_))                                                                       \
            fail_msg("\"%s\" does not contain \"%s\"", h_, n_);                                    \
    } while (0)

#define assert_not_contains(hay, needle)                                                           \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (strstr(h_, n_))                                                                        \
            fail_msg("\"%s\" contains \"%s\"", h_, n_);                                            \
    } while (0)

#define assert_lsn_ge(a, b)                                                                        \
    do {                                                                                           \
        sy_lsn a_ = (a), b_ = (b);                                                                 \
        char as_[24], bs_[24];                                                                     \
        sy_lsn_format(a_, as_, sizeof(as_));                                                       \
        sy_lsn_format(b_, bs_, sizeof(bs_));                                                       \
        if (a_ < b_)                                                                               \
            fail_msg("%s = %s is before %s = %s", #a, as_, #b, bs_);                               \
    } while (0)

#define assert_ok(call)                                                                            \
    do {                                                                                           \
        err[0] = '\0';                                                                             \
        if ((call) != 0)                                                                           \
            fail_msg("%s failed: %s", #call, err);                                                 \
    } while (0)

/* ---- helpers ---- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms)
{
    nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL);
}

/* A value from the env file ("" when missing). */
static const char *env_get(const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    out[0] = '\0';
    for (const char *l = env_text; *l;) {
        const char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l) : strlen(l);
        if (n > kl && strncmp(l, key, kl) == 0 && l[kl] == '=')
            snprintf(out, cap, "%.*s", (int)(n - kl - 1), l + kl + 1);
        l += n + (e ? 1 : 0);
    }
    return out;
}

static void sql_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c));
        PQclear(r);
        fail_msg("'%s' failed: %s", sql, msg);
    }
    PQclear(r);
}

/* The first column of the first row as text ("" for NULL or no row). */
static const char *scalar(PGconn *c, const char *sql, char *out, size_t cap)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c));
        PQclear(r);
        fail_msg("'%s' failed: %s", sql, msg);
    }
    snprintf(out, cap, "%s", PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    return out;
}

static long long number(PGconn *c, const char *sql)
{
    char v[64];
    return atoll(scalar(c, sql, v, sizeof(v)));
}

/* How a login ended. */
struct login {
    PGconn *conn;     /* when it worked */
    char sqlstate[8]; /* from the server's FATAL */
    char message[512];
};

/* Logs in with verbose errors, so that a failure carries the server's SQLSTATE. */
static void login(int port, const char *user, const char *password, struct login *o)
{
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    const char *keys[] = {
        "host", "port", "user", "password", "dbname", "sslmode", "connect_timeout", NULL};
    const char *vals[] = {"127.0.0.1", portstr, user, password, DB, "disable", "10", NULL};
    memset(o, 0, sizeof(*o));
    PGconn *c = PQconnectStartParams(keys, vals, 0);
    assert_non_null(c);
    PQsetErrorVerbosity(c, PQERRORS_VERBOSE);
    PostgresPollingStatusType st =
        PQstatus(c) == CONNECTION_BAD ? PGRES_POLLING_FAILED : PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        struct pollfd p = {.fd = PQsocket(c),
                           .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        if (poll(&p, 1, 15000) <= 0)
            break;
        st = PQconnectPoll(c);
    }
    if (PQstatus(c) == CONNECTION_OK) {
        o->conn = c;
        return;
    }
    snprintf(o->message, sizeof(o->message), "%s", PQerrorMessage(c));
    const char *f = strstr(o->message, "FATAL:  ");
    if (f && strlen(f) > 13 && f[13] == ':')
        snprintf(o->sqlstate, sizeof(o->sqlstate), "%.5s", f + 8);
    PQfinish(c);
}

static PGconn *app_conn(int port)
{
    struct login l;
    login(port, app_user, app_password, &l);
    if (!l.conn)
        fail_msg("login as %s to port %d failed: %s", app_user, port, l.message);
    return l.conn;
}

static PGconn *ctl(const struct sy_pgctl_target *t)
{
    PGconn *c = sy_pgctl_connect(t, err, sizeof(err));
    if (!c)
        fail_msg("control login to %s failed: %s", t->side, err);
    return c;
}

/* Waits until dst provably has src's changes up to target; returns the milliseconds taken. */
static double wait_applied(PGconn *src, PGconn *dst, const struct sy_pgctl_repl *r, sy_lsn target,
                           double t0)
{
    sy_lsn applied = 0;
    while (now_ms() - t0 < 10000) {
        assert_ok(sy_pgctl_applied_lsn(src, dst, r, &applied, err, sizeof(err)));
        if (applied >= target)
            return now_ms() - t0;
        sleep_ms(1);
    }
    assert_lsn_ge(applied, target);
    return -1;
}

/* The state of the replication from src to dst, which must be usable. */
static void repl_usable(PGconn *src, PGconn *dst, const char *s, const char *d,
                        struct sy_pgctl_repl *r)
{
    for (int i = 0; i < 500; i++) {
        assert_ok(sy_pgctl_repl_state(src, dst, s, d, r, err, sizeof(err)));
        if (!r->problem[0])
            return;
        sleep_ms(20);
    }
    fail_msg("replication from %s to %s is not usable: %s", s, d, r->problem);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Runs a shell command; 0 when it exited 0. */
static int shell(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "test_pgctl: '%s' failed (%d)\n", cmd, rc);
    return rc;
}

/* Whether a file contains a string. */
static int file_contains(const char *path, const char *needle)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "grep -qF -- '%s' '%s'", needle, path);
    return system(cmd) == 0;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* ---- fixture ---- */

/* pg_cluster.sh stop DIR, ready before any crash: a test that aborts (a sanitizer, a failed
 * assertion outside cmocka's reach) or is killed by ctest's timeout must not leave servers. */
static char stop_script[600];
static char *stop_argv[] = {stop_script, "stop", dir, NULL};

static void stop_servers_on_signal(int sig)
{
    pid_t pid = fork();
    if (pid == 0) {
        execv(stop_script, stop_argv);
        _exit(127);
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void stop_servers_on_crash(void)
{
    const int sigs[] = {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTERM, SIGINT};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        signal(sigs[i], stop_servers_on_signal);
}

static void target(struct sy_pgctl_target *t, const char *side, int port)
{
    *t = (struct sy_pgctl_target){.side = side,
                                  .host = "127.0.0.1",
                                  .port = port,
                                  .user = "postgres",
                                  .password = "",
                                  .dbname = DB,
                                  .sslmode = "disable",
                                  .sslrootcert = "",
                                  .connect_timeout_s = 10};
}

static int setup(void **state)
{
    const char *src = getenv("SY_SOURCE_DIR");
    if (!src) {
        fprintf(stderr, "test_pgctl: SY_SOURCE_DIR must be set (run through ctest)\n");
        return -1;
    }
    snprintf(dir, sizeof(dir), "/tmp/sy-pgctl-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(stop_script, sizeof(stop_script), "%s/tests/support/pg_cluster.sh", src);
    stop_servers_on_crash();
    if (shell("'%s/tests/support/pg_cluster.sh' start %s", src, dir) != 0 ||
        shell("'%s/tests/support/pg_replicate.sh' logical %s " DB, src, dir) != 0 ||
        shell("'%s/tests/support/pg_replicate.sh' physical %s", src, dir) != 0) {
        shell("'%s/tests/support/pg_cluster.sh' stop %s", src, dir);
        return -1;
    }
    char path[200], v[256];
    snprintf(path, sizeof(path), "%s/env", dir);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(env_text, 1, sizeof(env_text) - 1, f) : 0;
    if (f)
        fclose(f);
    env_text[n] = '\0';
    blue_port = atoi(env_get("BLUE_PORT", v, sizeof(v)));
    green_port = atoi(env_get("GREEN_PORT", v, sizeof(v)));
    standby_port = atoi(env_get("STANDBY_PORT", v, sizeof(v)));
    env_get("BLUE_LOG", blue_log, sizeof(blue_log));
    env_get("GREEN_LOG", green_log, sizeof(green_log));
    env_get("APP_USER", app_user, sizeof(app_user));
    env_get("APP_PASSWORD", app_password, sizeof(app_password));
    target(&blue_t, "blue", blue_port);
    target(&green_t, "green", green_port);
    target(&standby_t, "green", standby_port); /* the standby plays green in physical mode */
    blue = sy_pgctl_connect(&blue_t, err, sizeof(err));
    green = sy_pgctl_connect(&green_t, err, sizeof(err));
    standby = sy_pgctl_connect(&standby_t, err, sizeof(err));
    if (!blue || !green || !standby || !app_user[0]) {
        fprintf(stderr, "test_pgctl: cannot connect to the servers in %s: %s\n", dir, err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    PQfinish(blue);
    PQfinish(green);
    PQfinish(standby);
    return shell("'%s/tests/support/pg_cluster.sh' stop %s", getenv("SY_SOURCE_DIR"), dir) ? -1 : 0;
}

/* ---- tests ---- */

static void test_lsn_text(void **state)
{
    sy_lsn v = 0;
    char s[24];
    assert_int_equal(sy_lsn_parse("16/B374D848", &v), 0);
    assert_int_equal(v, 0x16B374D848ull);
    sy_lsn_format(v, s, sizeof(s));
    assert_string_equal(s, "16/B374D848");
    sy_lsn_format(0x16B3748, s, sizeof(s));
    assert_string_equal(s, "0/16B3748");
    const char *bad[] = {"", "0", "/1", "1/", "1/2/3", "x/1", "123456789/0", "0/ 1", "0/1 "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (sy_lsn_parse(bad[i], &v) != -1)
            fail_msg("sy_lsn_parse accepted \"%s\"", bad[i]);
}

static void test_connect(void **state)
{
    struct sy_pgctl_target t = blue_t;
    t.user = app_user;
    t.password = app_password;
    PGconn *c = ctl(&t);
    char v[64];
    assert_string_equal(scalar(c, "SELECT current_setting('application_name')", v, sizeof(v)),
                        "switchyard-control");
    PQfinish(c);

    t.password = WRONG_SECRET;
    err[0] = '\0';
    assert_null(sy_pgctl_connect(&t, err, sizeof(err)));
    assert_contains(err, "blue: ");
    assert_contains(err, "password authentication failed");
    assert_contains(err, "control_password");
    assert_not_contains(err, WRONG_SECRET);
    assert_not_contains(err, "\n");
}

/* A loopback port with a listening socket that never accepts: the kernel completes the TCP
 * handshake, the login then waits for an answer that never comes (a frozen server). Returns the
 * socket (the port in *port), or -1. */
static int silent_listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, 4) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* Each way a login fails gets the hint for that cause, not the password hint for all. */
static void test_connect_hints(void **state)
{
    struct sy_pgctl_target t = blue_t;
    t.connect_timeout_s = 2;

    int port = 0, fd = silent_listener(&port);
    assert_true(fd >= 0);
    t.port = port;
    err[0] = '\0';
    assert_null(sy_pgctl_connect(&t, err, sizeof(err)));
    assert_contains(err, "blue: ");
    assert_contains(err, "did not answer within connect_timeout (2 s)");
    assert_contains(err, "frozen");
    assert_not_contains(err, "control_password");
    assert_not_contains(err, "pg_hba");

    close(fd); /* now nothing listens there */
    err[0] = '\0';
    assert_null(sy_pgctl_connect(&t, err, sizeof(err)));
    assert_contains(err, "Connection refused");
    assert_contains(err, "nothing listens at 127.0.0.1:");
    assert_not_contains(err, "control_password");

    t = blue_t;
    t.dbname = "no_such_db";
    err[0] = '\0';
    assert_null(sy_pgctl_connect(&t, err, sizeof(err)));
    assert_contains(err, "does not exist");
    assert_contains(err, "control_database");
    assert_not_contains(err, "control_password");
}

/* A statement on a frozen server: it says the server did not answer, and leaves out the
 * privilege hint its description carries for a server that refuses (42501). */
static void test_statement_timeout_hint(void **state)
{
    PGconn *c = sy_pgctl_connect(&green_t, err, sizeof(err));
    assert_non_null(c);
    int pid = PQbackendPID(c);
    if (shell("kill -STOP %d", pid) != 0)
        fail_msg("cannot stop backend %d", pid);
    struct sy_pgctl_repl rp = {.mode = SY_REPL_LOGICAL};
    snprintf(rp.subscription, sizeof(rp.subscription), "sy_sub");
    snprintf(rp.slot, sizeof(rp.slot), "sy_sub");
    sy_lsn at = 0;
    err[0] = '\0';
    sy_pgctl_set_timeout(300);
    int rc = sy_pgctl_applied_lsn(blue, c, &rp, &at, err, sizeof(err));
    sy_pgctl_set_timeout(0);
    shell("kill -CONT %d", pid);
    PQfinish(c);
    assert_int_equal(rc, -1);
    assert_contains(err, "could not read the subscription's progress: the server did not answer "
                         "in time (the statements' limit was 300 ms)");
    assert_not_contains(err, "superuser");
}

static void test_probe(void **state)
{
    struct sy_pgctl_probe p;
    assert_ok(sy_pgctl_probe(blue, "blue", &p, err, sizeof(err)));
    assert_int_equal(p.in_recovery, 0);
    assert_in_range(p.server_version_num, 150000, 159999);
    assert_int_equal(p.backend_pid, PQbackendPID(blue));
    assert_true(p.lsn > 0);
    assert_ok(sy_pgctl_probe(standby, "green", &p, err, sizeof(err)));
    assert_int_equal(p.in_recovery, 1);
    assert_true(p.lsn > 0);
}

static void test_repl_logical(void **state)
{
    struct sy_pgctl_repl r;
    repl_usable(blue, green, "blue", "green", &r);
    assert_int_equal(r.mode, SY_REPL_LOGICAL);
    assert_string_equal(r.subscription, "sy_sub");
    assert_string_equal(r.slot, "sy_sub");
    assert_int_equal(r.enabled, 1);
    assert_int_equal(r.streaming, 1);
    sql_ok(blue, "INSERT INTO acks (id) VALUES (100)");
    sy_lsn target;
    assert_ok(sy_pgctl_current_lsn(blue, "blue", &target, err, sizeof(err)));
    wait_applied(blue, green, &r, target, now_ms());
    assert_int_equal(number(green, "SELECT count(*) FROM acks WHERE id = 100"), 1);
    /* Caught up: nothing written since, so no lag. */
    for (int i = 0; i < 200; i++) {
        assert_ok(sy_pgctl_repl_state(blue, green, "blue", "green", &r, err, sizeof(err)));
        if (r.lag_bytes == 0)
            break;
        sleep_ms(10);
    }
    assert_int_equal(r.lag_bytes, 0);
    assert_lsn_ge(r.applied_lsn, r.source_lsn);
    assert_true(r.lag_seconds >= 0);

    /* Disabled: a problem, and lag once blue writes. */
    sql_ok(green, "ALTER SUBSCRIPTION sy_sub DISABLE");
    for (int i = 0; i < 500; i++) {
        char v[8];
        if (!scalar(green, "SELECT pid FROM pg_stat_subscription WHERE subname = 'sy_sub'", v,
                    sizeof(v))[0])
            break;
        sleep_ms(10);
    }
    sql_ok(blue, "INSERT INTO acks (id) SELECT g FROM generate_series(101, 200) g");
    assert_ok(sy_pgctl_current_lsn(blue, "blue", &target, err, sizeof(err)));
    for (int i = 0; i < 500; i++) { /* blue's walsender ends just after green's worker */
        assert_ok(sy_pgctl_repl_state(blue, green, "blue", "green", &r, err, sizeof(err)));
        if (!r.streaming)
            break;
        sleep_ms(10);
    }
    assert_int_equal(r.mode, SY_REPL_LOGICAL);
    assert_int_equal(r.enabled, 0);
    assert_int_equal(r.streaming, 0);
    assert_contains(r.problem, "disabled");
    assert_contains(r.problem, "green");
    assert_true(r.lag_bytes > 0);
    assert_true(r.applied_lsn < target);
    print_message("disabled subscription: problem \"%s\", lag %lld bytes\n", r.problem,
                  (long long)r.lag_bytes);

    sql_ok(green, "ALTER SUBSCRIPTION sy_sub ENABLE");
    repl_usable(blue, green, "blue", "green", &r);
    double ms = wait_applied(blue, green, &r, target, now_ms());
    print_message("caught up after ENABLE in %.1f ms\n", ms);
    assert_int_equal(number(green, "SELECT count(*) FROM acks WHERE id BETWEEN 101 AND 200"), 100);
}

static void test_repl_physical(void **state)
{
    struct sy_pgctl_repl r;
    repl_usable(blue, standby, "blue", "green", &r);
    assert_int_equal(r.mode, SY_REPL_PHYSICAL);
    assert_string_equal(r.slot, "sy_standby");
    assert_int_equal(r.streaming, 1);
    assert_string_equal(r.problem, "");
    sql_ok(blue, "INSERT INTO acks (id) VALUES (300)");
    sy_lsn target;
    assert_ok(sy_pgctl_current_lsn(blue, "blue", &target, err, sizeof(err)));
    wait_applied(blue, standby, &r, target, now_ms());
    assert_int_equal(number(standby, "SELECT count(*) FROM acks WHERE id = 300"), 1);
    assert_ok(sy_pgctl_repl_state(blue, standby, "blue", "green", &r, err, sizeof(err)));
    assert_true(r.lag_bytes >= 0);
}

/*
 * Catch-up as a cutover needs it: an application commits on blue (asynchronously: the test
 * servers run synchronous_commit = off), the control connection reads blue's position, and the
 * destination must provably have it within tens of milliseconds. The row must be there the
 * moment applied_lsn says so.
 */
static void catch_up_trials(PGconn *dst, const char *what)
{
    struct sy_pgctl_repl r;
    repl_usable(blue, dst, "blue", "green", &r);
    PGconn *app = app_conn(blue_port);
    enum { TRIALS = 15 };
    double ms[TRIALS];
    for (int i = 0; i < TRIALS; i++) {
        sleep_ms(20 + (i * 97) % 400); /* land at different moments of the WAL writer's cycle */
        char sql[128], check[128];
        int id = 1000 + i + (dst == standby ? 100 : 0);
        snprintf(sql, sizeof(sql), "INSERT INTO acks (id) VALUES (%d)", id);
        sql_ok(app, sql);
        double t0 = now_ms();
        sy_lsn target;
        assert_ok(sy_pgctl_current_lsn(blue, "blue", &target, err, sizeof(err)));
        ms[i] = wait_applied(blue, dst, &r, target, t0);
        snprintf(check, sizeof(check), "SELECT count(*) FROM acks WHERE id = %d", id);
        assert_int_equal(number(dst, check), 1);
    }
    PQfinish(app);
    qsort(ms, TRIALS, sizeof(ms[0]), cmp_double);
    print_message("%s catch-up after an asynchronous commit, %d trials: min %.1f ms, median %.1f "
                  "ms, max %.1f ms\n",
                  what, TRIALS, ms[0], ms[TRIALS / 2], ms[TRIALS - 1]);
    assert_true(ms[TRIALS / 2] < 100);
    assert_true(ms[TRIALS - 1] < 2000);
}

static void test_catch_up_logical(void **state) { catch_up_trials(green, "logical"); }
static void test_catch_up_physical(void **state) { catch_up_trials(standby, "physical"); }

static void test_long_transactions(void **state)
{
    PGconn *app = app_conn(blue_port);
    sql_ok(app, "BEGIN");
    sql_ok(app, "SELECT count(*) FROM pgbench_branches");
    sleep_ms(300);
    struct sy_pgctl_backend b[8];
    int n = sy_pgctl_long_transactions(blue, "blue", 0.2, b, 8, err, sizeof(err));
    if (n < 0)
        fail_msg("sy_pgctl_long_transactions: %s", err);
    int found = -1;
    for (int i = 0; i < n; i++) {
        assert_int_not_equal(b[i].pid, PQbackendPID(blue));
        if (b[i].pid == PQbackendPID(app))
            found = i;
    }
    if (found < 0)
        fail_msg("the open transaction (pid %d) is not among the %d listed", PQbackendPID(app), n);
    assert_true(b[found].xact_age_s >= 0.2 && b[found].xact_age_s < 60);
    assert_string_equal(b[found].user, app_user);
    assert_string_equal(b[found].state, "idle in transaction");
    assert_string_equal(b[found].client_addr, "127.0.0.1");
    print_message("long transaction: pid %d, %.3f s, %s\n", b[found].pid, b[found].xact_age_s,
                  b[found].state);
    assert_int_equal(sy_pgctl_long_transactions(blue, "blue", 3600, b, 8, err, sizeof(err)), 0);
    sql_ok(app, "ROLLBACK");
    assert_int_equal(sy_pgctl_long_transactions(blue, "blue", 0, b, 8, err, sizeof(err)), 0);
    PQfinish(app);
}

static int fenced_role(const struct sy_pgctl_fence *f, const char *role)
{
    for (int i = 0; i < f->nroles; i++)
        if (strcmp(f->roles[i], role) == 0)
            return 1;
    return 0;
}

static void test_fence(void **state)
{
    sql_ok(blue, "CREATE ROLE fence_login LOGIN PASSWORD 'Fence-pass-1'");
    sql_ok(blue, "CREATE ROLE fence_nologin NOLOGIN");
    sql_ok(blue, "CREATE ROLE \"fence o'dd\" LOGIN");
    PGconn *outside = app_conn(blue_port), *held = app_conn(blue_port);
    int outside_pid = PQbackendPID(outside), held_pid = PQbackendPID(held);
    struct sy_pgctl_repl fwd;
    repl_usable(blue, green, "blue", "green", &fwd);

    struct sy_pgctl_fence f;
    int keep[] = {held_pid};
    assert_ok(sy_pgctl_fence(blue, "blue", "postgres", keep, 1, 5000, &f, err, sizeof(err)));
    assert_int_equal(f.nroles, 3);
    assert_true(fenced_role(&f, app_user));
    assert_true(fenced_role(&f, "fence_login"));
    assert_true(fenced_role(&f, "fence o'dd"));
    assert_int_equal(number(blue, "SELECT count(*) FROM pg_roles WHERE rolcanlogin"), 1);
    assert_int_equal(f.nterminated, 1);
    assert_int_equal(f.terminated[0].pid, outside_pid);
    assert_string_equal(f.terminated[0].user, app_user);

    /* The outside session is gone, the held one works, new logins of fenced roles fail. */
    PGresult *r = PQexec(outside, "SELECT 1");
    assert_int_not_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    sql_ok(held, "SELECT 1");
    struct login l;
    login(blue_port, app_user, app_password, &l);
    assert_null(l.conn);
    assert_string_equal(l.sqlstate, "28000");
    assert_contains(l.message, "not permitted to log in");
    PGconn *c = ctl(&blue_t);
    PQfinish(c);

    /* The walsender survived: what the control user writes still reaches green. */
    struct sy_pgctl_repl r2;
    assert_ok(sy_pgctl_repl_state(blue, green, "blue", "green", &r2, err, sizeof(err)));
    assert_string_equal(r2.problem, "");
    sql_ok(blue, "INSERT INTO acks (id) VALUES (2000)");
    sy_lsn target;
    assert_ok(sy_pgctl_current_lsn(blue, "blue", &target, err, sizeof(err)));
    print_message("after the fence, green had the control user's write in %.1f ms\n",
                  wait_applied(blue, green, &r2, target, now_ms()));
    assert_int_equal(number(green, "SELECT count(*) FROM acks WHERE id = 2000"), 1);

    /* Undo: exactly the fenced roles get LOGIN back; twice is harmless. */
    assert_ok(sy_pgctl_unfence(blue, "blue", &f, err, sizeof(err)));
    assert_ok(sy_pgctl_unfence(blue, "blue", &f, err, sizeof(err)));
    char v[256];
    assert_string_equal(scalar(blue,
                               "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM "
                               "pg_roles WHERE rolcanlogin",
                               v, sizeof(v)),
                        "fence o'dd,fence_login,postgres,sy_app");
    assert_string_equal(scalar(blue,
                               "SELECT rolcanlogin FROM pg_roles WHERE rolname = "
                               "'fence_nologin'",
                               v, sizeof(v)),
                        "f");
    PQfinish(app_conn(blue_port));
    PQfinish(outside);
    PQfinish(held);
    sql_ok(blue, "DROP ROLE fence_login");
    sql_ok(blue, "DROP ROLE fence_nologin");
    sql_ok(blue, "DROP ROLE \"fence o'dd\"");
}

/* A slot advanced ahead of a switch point: to the flushed end of WAL, with its restart point
 * moved to the running-transactions record the mark logged. A missing slot is no error. */
static void test_slot_skip(void **state)
{
    char v[64], restart0[32], end[32];
    sql_ok(blue, "SELECT pg_create_logical_replication_slot('skip_test', 'pgoutput')");
    scalar(blue, "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'skip_test'",
           restart0, sizeof(restart0));
    /* WAL past the slot's start that touches no replicated table (a row written here could
     * still be on its way to green when test_reverse stops the forward replication). */
    sql_ok(blue, "SELECT pg_logical_emit_message(false, 'slot_skip', repeat('x', 20000))");
    scalar(blue, "SELECT pg_current_wal_insert_lsn()", end, sizeof(end));
    assert_ok(sy_pgctl_slot_skip(blue, "skip_test", 1, err, sizeof(err)));
    char sql[200];
    snprintf(sql, sizeof(sql),
             "SELECT confirmed_flush_lsn >= '%s' AND restart_lsn > '%s' FROM "
             "pg_replication_slots WHERE slot_name = 'skip_test'",
             end, restart0);
    assert_string_equal(scalar(blue, sql, v, sizeof(v)), "t");
    assert_ok(sy_pgctl_slot_skip(blue, "no_such_slot", 0, err, sizeof(err)));
    sql_ok(blue, "SELECT pg_drop_replication_slot('skip_test')");
}

/* More roles than a fence can record: it refuses and changes none of them. */
static void test_fence_too_many_roles(void **state)
{
    char sql[200];
    snprintf(sql, sizeof(sql),
             "DO $$BEGIN FOR i IN 1..%d LOOP EXECUTE format('CREATE ROLE fence_many_%%s LOGIN', "
             "i); END LOOP; END$$",
             SY_FENCE_MAX_ROLES);
    sql_ok(blue, sql);
    long long before = number(blue, "SELECT count(*) FROM pg_roles WHERE rolcanlogin");
    struct sy_pgctl_fence f;
    assert_int_equal(sy_pgctl_fence(blue, "blue", "postgres", NULL, 0, 5000, &f, err, sizeof(err)),
                     -1);
    assert_contains(err, "roles can log in, more than the");
    assert_contains(err, "make the roles that need no login NOLOGIN");
    assert_int_equal(f.nroles, 0);
    assert_int_equal(number(blue, "SELECT count(*) FROM pg_roles WHERE rolcanlogin"), before);
    snprintf(sql, sizeof(sql),
             "DO $$BEGIN FOR i IN 1..%d LOOP EXECUTE format('DROP ROLE fence_many_%%s', i); "
             "END LOOP; END$$",
             SY_FENCE_MAX_ROLES);
    sql_ok(blue, sql);
}

/* A session that outlives pg_terminate_backend's timeout fails the fence, which is undone. */
static void test_fence_timeout_undoes(void **state)
{
    /* SIGSTOP keeps a backend from acting on the termination. */
    PGconn *stuck = app_conn(blue_port);
    int pid = PQbackendPID(stuck);
    if (shell("kill -STOP %d", pid) != 0)
        fail_msg("cannot stop backend %d", pid);
    struct sy_pgctl_fence f;
    err[0] = '\0';
    int rc = sy_pgctl_fence(blue, "blue", "postgres", NULL, 0, 200, &f, err, sizeof(err));
    shell("kill -CONT %d", pid);
    assert_int_equal(rc, -1);
    assert_contains(err, "blue: ");
    assert_contains(err, "did not end within 200 ms");
    char v[64];
    assert_string_equal(
        scalar(blue, "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'sy_app'", v, sizeof(v)),
        "t");
    PQfinish(stuck);
}

static void test_sync_sequences(void **state)
{
    sql_ok(blue, "SELECT nextval('ack_seq') FROM generate_series(1, 7)");
    long long on_blue =
        number(blue, "SELECT last_value FROM pg_sequences WHERE sequencename = 'ack_seq'");
    int count = 0;
    assert_ok(sy_pgctl_sync_sequences(blue, green, "green", &count, err, sizeof(err)));
    assert_int_equal(count, 1);
    assert_int_equal(
        number(green, "SELECT last_value FROM pg_sequences WHERE sequencename = 'ack_seq'"),
        on_blue);
    assert_int_equal(number(green, "SELECT nextval('ack_seq')"), on_blue + 1);
}

static void test_reverse(void **state)
{
    struct sy_pgctl_repl fwd, rev;
    repl_usable(blue, green, "blue", "green", &fwd);

    /* A failing setup (wrong password) names the side, keeps the password out of the error
     * and of the log, and undoes itself. */
    struct sy_pgctl_target bad = green_t;
    bad.user = app_user;
    bad.password = WRONG_SECRET;
    err[0] = '\0';
    assert_int_equal(sy_pgctl_reverse_setup(blue, green, &bad, REV, &fwd, err, sizeof(err)), -1);
    assert_contains(err, "blue: could not create the reverse subscription");
    assert_not_contains(err, WRONG_SECRET);
    print_message("failed reverse setup: %s\n", err);
    assert_false(file_contains(blue_log, WRONG_SECRET));
    assert_false(file_contains(green_log, WRONG_SECRET));
    char v[64];
    assert_string_equal(scalar(green,
                               "SELECT subenabled FROM pg_subscription WHERE subname = 'sy_sub'", v,
                               sizeof(v)),
                        "t");
    assert_int_equal(number(green, "SELECT count(*) FROM pg_publication WHERE pubname = '" REV "'"),
                     0);

    long green_log_start = file_size(green_log); /* the failed login above is logged */
    assert_ok(sy_pgctl_reverse_setup(blue, green, &green_t, REV, &fwd, err, sizeof(err)));
    assert_string_equal(scalar(green,
                               "SELECT subenabled FROM pg_subscription WHERE subname = 'sy_sub'", v,
                               sizeof(v)),
                        "f");
    struct sy_pgctl_repl now;
    assert_ok(sy_pgctl_repl_state(blue, green, "blue", "green", &now, err, sizeof(err)));
    assert_contains(now.problem, "disabled");

    /* Writes on green reach blue. */
    repl_usable(green, blue, "green", "blue", &rev);
    assert_int_equal(rev.mode, SY_REPL_LOGICAL);
    assert_string_equal(rev.subscription, REV);
    sql_ok(green, "INSERT INTO acks (id) VALUES (3001)");
    sy_lsn target;
    assert_ok(sy_pgctl_current_lsn(green, "green", &target, err, sizeof(err)));
    print_message("reverse: blue had green's write in %.1f ms\n",
                  wait_applied(green, blue, &rev, target, now_ms()));
    assert_int_equal(number(blue, "SELECT count(*) FROM acks WHERE id = 3001"), 1);

    /* Teardown: forward replication again, without green's own rows coming back. */
    assert_ok(sy_pgctl_reverse_teardown(blue, green, REV, &fwd, err, sizeof(err)));
    assert_int_equal(number(blue, "SELECT count(*) FROM pg_subscription WHERE subname = '" REV "'"),
                     0);
    assert_int_equal(number(green, "SELECT count(*) FROM pg_publication WHERE pubname = '" REV "'"),
                     0);
    assert_int_equal(
        number(green, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '" REV "'"), 0);
    assert_string_equal(scalar(green,
                               "SELECT subenabled FROM pg_subscription WHERE subname = 'sy_sub'", v,
                               sizeof(v)),
                        "t");
    repl_usable(blue, green, "blue", "green", &fwd);
    sql_ok(blue, "INSERT INTO acks (id) VALUES (3002)");
    assert_ok(sy_pgctl_current_lsn(blue, "blue", &target, err, sizeof(err)));
    wait_applied(blue, green, &fwd, target, now_ms());
    assert_int_equal(number(green, "SELECT count(*) FROM acks WHERE id IN (3001, 3002)"), 2);
    assert_int_equal(number(green, "SELECT count(*) FROM acks"),
                     number(blue, "SELECT count(*) FROM acks"));
    /* Let green's apply worker run a moment longer: a duplicate would fail it now. */
    sleep_ms(500);
    assert_ok(sy_pgctl_repl_state(blue, green, "blue", "green", &fwd, err, sizeof(err)));
    assert_string_equal(fwd.problem, "");
    char cmd[600];
    /* The forward apply worker is stopped on purpose at the switch point (its one FATAL line);
     * anything else is a failure. */
    snprintf(cmd, sizeof(cmd),
             "tail -c +%ld '%s' | grep -v 'terminating logical replication worker due to "
             "administrator command' | grep -E 'ERROR|FATAL|duplicate'",
             green_log_start + 1, green_log);
    if (system(cmd) == 0)
        fail_msg("green's log has errors since the reverse replication started (lines above)");
}

static void test_promote(void **state)
{
    assert_ok(sy_pgctl_promote(standby, "green", 30, err, sizeof(err)));
    struct sy_pgctl_probe p;
    assert_ok(sy_pgctl_probe(standby, "green", &p, err, sizeof(err)));
    assert_int_equal(p.in_recovery, 0);
    sql_ok(standby, "INSERT INTO acks (id) VALUES (4001)");
    err[0] = '\0';
    assert_int_equal(sy_pgctl_promote(standby, "green", 5, err, sizeof(err)), -1);
    assert_contains(err, "green: could not promote the standby");
    assert_contains(err, "recovery is not in progress");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lsn_text),
        cmocka_unit_test(test_connect),
        cmocka_unit_test(test_connect_hints),
        cmocka_unit_test(test_statement_timeout_hint),
        cmocka_unit_test(test_probe),
        cmocka_unit_test(test_repl_logical),
        cmocka_unit_test(test_repl_physical),
        cmocka_unit_test(test_catch_up_logical),
        cmocka_unit_test(test_catch_up_physical),
        cmocka_unit_test(test_long_transactions),
        cmocka_unit_test(test_fence),
        cmocka_unit_test(test_fence_too_many_roles),
        cmocka_unit_test(test_slot_skip),
        cmocka_unit_test(test_fence_timeout_undoes),
        cmocka_unit_test(test_sync_sequences),
        cmocka_unit_test(test_reverse),
        cmocka_unit_test(test_promote),
    };
    return cmocka_run_group_tests_name("pgctl", tests, setup, teardown);
}
