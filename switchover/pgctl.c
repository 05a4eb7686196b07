/*
 * The PostgreSQL control adapter (see pgctl.h): blocking libpq on the control thread.
 *
 * Every value reaches the server as a query parameter; the few statements that cannot take
 * parameters (ALTER ROLE, ALTER/CREATE/DROP SUBSCRIPTION, CREATE/DROP PUBLICATION) get their names
 * through PQescapeIdentifier and the one literal (the reverse subscription's conninfo) through
 * PQescapeLiteral. Error texts come from the server's primary message, never from SQL text, so
 * the password in that conninfo cannot reach err.
 *
 * How "green has every change blue made before the fence" is measured (PostgreSQL 15, numbers
 * from tests/integration/test_pgctl.c on this project's test servers):
 *   - The target is the end of the last WAL record blue has *inserted*, not pg_current_wal_lsn():
 *     that is the write position, and after an asynchronous commit (synchronous_commit = off on
 *     blue) it lies before that commit's record (measured 184 bytes short), so reaching it proves
 *     nothing. pg_current_wal_insert_lsn() is that end, except right after a page boundary, where
 *     it points past the page header (measured: 24 bytes that no position ever reaches).
 *   - The walsender only sends flushed WAL, and blue's WAL writer flushes asynchronous commits
 *     every wal_writer_delay (200 ms by default), so the control connection flushes blue's WAL
 *     itself: a transaction that writes one logical message and commits with synchronous_commit
 *     = local. pgoutput skips that empty transaction; it is never applied on green.
 *   - Three positions prove the destination applied everything up to them:
 *       the slot's confirmed_flush_lsn on blue: green applied and flushed that far. Green applies
 *         with synchronous_commit = off, so it lags by green's WAL writer: ~205 ms measured.
 *       green's pg_replication_origin_status.remote_lsn: the end of the last commit green applied;
 *         3-5 ms measured, but it never passes WAL that is not a replicated commit (a running-
 *         xacts record, a hint-bit page image, the flush above), so it often never reaches the
 *         target at all.
 *       green's pg_stat_subscription.latest_end_lsn (the apply worker's row): the position of the
 *         last keepalive the apply worker processed. The walsender sends one as soon as it has
 *         decoded all flushed WAL, after the data of every commit before it on the same stream,
 *         and the apply worker applies (commits) each message before it reads the next: so once
 *         it reads >= target, every commit before the target is applied. 3-9 ms measured.
 *     applied_lsn is the largest of the three.
 */
#include "pgctl.h"
#include "schema.h"

#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define SHORT_PAGE_HEADER 24 /* SizeOfXLogShortPHD */
#define LONG_PAGE_HEADER 40  /* SizeOfXLogLongPHD: the first page of a segment */

/* ---- LSN ---- */

void sy_lsn_format(sy_lsn lsn, char *out, size_t cap)
{
    snprintf(out, cap, "%X/%X", (unsigned)(lsn >> 32), (unsigned)(lsn & 0xffffffffu));
}

int sy_lsn_parse(const char *s, sy_lsn *out)
{
    static const char hex[] = "0123456789abcdefABCDEF";
    size_t hi = s ? strspn(s, hex) : 0, lo = hi && s[hi] == '/' ? strspn(s + hi + 1, hex) : 0;
    if (hi < 1 || hi > 8 || lo < 1 || lo > 8 || s[hi + 1 + lo] != '\0')
        return -1;
    *out = (sy_lsn)strtoull(s, NULL, 16) << 32 | strtoull(s + hi + 1, NULL, 16);
    return 0;
}

/* ---- errors and queries ---- */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Copies a server or libpq message into out as one line, without a trailing period. */
static void one_line(const char *msg, char *out, size_t cap)
{
    size_t n = 0;
    for (msg = msg ? msg : "no message"; *msg && n + 1 < cap; msg++)
        if (!strchr("\n\r\t", *msg))
            out[n++] = *msg;
        else if (n > 0 && out[n - 1] != ' ')
            out[n++] = ' ';
    while (n > 0 && (out[n - 1] == '.' || out[n - 1] == ' '))
        n--;
    out[n] = '\0';
}

/* ---- statements with a time limit ----
 *
 * A server that stops answering (frozen, or a network that swallows packets) keeps its TCP
 * connection open: a blocking libpq call would wait forever and hold the control thread, and
 * with it the abort that must lift a fence. So every statement waits for its answer only until
 * the calling thread's deadline (sy_pgctl_set_timeout); then the connection is shut down, the
 * statement fails with a message that says so, and the caller reconnects next time.
 */
static _Thread_local uint64_t deadline_ms; /* CLOCK_MONOTONIC, 0: none */
static _Thread_local uint64_t limit_ms;    /* what sy_pgctl_set_timeout was given */
static _Thread_local int timed_out;        /* the last statement ran out of time */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void sy_pgctl_set_timeout(uint64_t ms)
{
    deadline_ms = ms ? mono_ms() + ms : 0;
    limit_ms = ms;
}

/* Waits until c's socket is readable or the deadline passes. Returns 1, or 0 at the deadline. */
static int wait_readable(PGconn *c)
{
    for (;;) {
        uint64_t now = mono_ms();
        if (now >= deadline_ms)
            return 0;
        struct pollfd p = {.fd = PQsocket(c), .events = POLLIN};
        int rc = poll(&p, 1, (int)(deadline_ms - now > 1000000 ? 1000000 : deadline_ms - now));
        if (rc != 0)
            return 1; /* readable, or an error libpq will report */
    }
}

/* PQexecParams (or PQexec when simple: several statements in one string) with the deadline. The
 * result is what PQexec would return (the last, or the first error), or NULL. */
static PGresult *exec_timed(PGconn *c, const char *sql, int n, const char *const *vals, int simple)
{
    timed_out = 0;
    if (!deadline_ms)
        return simple ? PQexec(c, sql) : PQexecParams(c, sql, n, NULL, vals, NULL, NULL, 0);
    int sent = simple ? PQsendQuery(c, sql) : PQsendQueryParams(c, sql, n, NULL, vals, NULL, NULL, 0);
    if (!sent)
        return NULL;
    PGresult *keep = NULL, *r;
    for (;;) {
        while (PQisBusy(c)) {
            if (!wait_readable(c)) {
                /* Out of time: end the connection (libpq sees end of file and marks it bad). */
                timed_out = 1;
                shutdown(PQsocket(c), SHUT_RDWR);
                PQconsumeInput(c);
                while ((r = PQgetResult(c)))
                    PQclear(r);
                PQclear(keep);
                return NULL;
            }
            if (!PQconsumeInput(c))
                break;
        }
        r = PQgetResult(c);
        if (!r)
            break;
        ExecStatusType st = PQresultStatus(r);
        if (keep && PQresultStatus(keep) == PGRES_FATAL_ERROR) {
            PQclear(r); /* the first error is the one that says why */
            continue;
        }
        PQclear(keep);
        keep = r;
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH)
            break;
    }
    return keep;
}

/*
 * A `what` may end in a hint in parentheses ("terminate sessions (the control user must be a
 * superuser)"). The hint is for one cause only, so it is kept only when the server answered with
 * that cause's SQLSTATE: a server that did not answer, or a lost connection, is never blamed on
 * privileges or on the schema. Returns the length of what without the hint that does not fit.
 */
static int what_len(const char *what, const char *sqlstate)
{
    static const struct {
        const char *word, *states;
    } fits[] = {
        {"superuser", "42501"},                   /* insufficient_privilege */
        {"able to take", "42501"},
        {"schema", "42P01 3F000 42704 42883"},    /* undefined table, schema, object, function */
    };
    const char *open = strrchr(what, '(');
    size_t n = strlen(what);
    if (!open || open == what || open[-1] != ' ' || what[n - 1] != ')')
        return (int)n;
    for (size_t i = 0; i < sizeof(fits) / sizeof(fits[0]); i++)
        if (strstr(open, fits[i].word))
            return sqlstate && sqlstate[0] && strstr(fits[i].states, sqlstate)
                       ? (int)n
                       : (int)(open - 1 - what);
    return (int)n;
}

/* The error of a failed query: the server's primary message, else libpq's; a statement that
 * got no answer in time or lost its connection says so instead of guessing at a cause. */
static void query_error(PGconn *c, PGresult *r, const char *side, const char *what, char *err,
                        size_t errlen)
{
    char msg[300];
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    int wl = what_len(what, state);
    if (timed_out) {
        seterr(err, errlen, "%s: could not %.*s: the server did not answer in time (the "
               "statements' limit was %llu ms): is it running and reachable, frozen, or "
               "overloaded? The connection was closed", side, wl, what,
               (unsigned long long)limit_ms);
        return;
    }
    const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    one_line(primary ? primary : PQerrorMessage(c), msg, sizeof(msg));
    if (!state && PQstatus(c) != CONNECTION_OK)
        seterr(err, errlen, "%s: could not %.*s: %s (the connection to the server was lost: it "
               "restarted, ended this session, or the network failed)", side, wl, what, msg);
    else
        seterr(err, errlen, "%s: could not %.*s: %s", side, wl, what, msg);
}

/*
 * Runs sql with n text parameters. Returns the result (caller clears it) when the statement
 * succeeded, else NULL with err saying "<side>: could not <what>: <server message>".
 */
static PGresult *run(PGconn *c, const char *side, const char *what, const char *sql, int n,
                     const char *const *vals, char *err, size_t errlen)
{
    PGresult *r = exec_timed(c, sql, n, vals, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return r;
    query_error(c, r, side, what, err, errlen);
    PQclear(r);
    return NULL;
}

/* run() for statements whose result is not needed. Returns 0 or -1. */
static int exec(PGconn *c, const char *side, const char *what, const char *sql, int n,
                const char *const *vals, char *err, size_t errlen)
{
    PGresult *r = run(c, side, what, sql, n, vals, err, errlen);
    PQclear(r);
    return r ? 0 : -1;
}

/* Ends a transaction that failed; the connection stays usable. */
static void rollback(PGconn *c) { PQclear(exec_timed(c, "ROLLBACK", 0, NULL, 1)); }

/* Runs "<prefix><quoted name><suffix>" (DDL that takes no parameters). Returns 0 or -1. */
static int exec_ident(PGconn *c, const char *side, const char *what, const char *prefix,
                      const char *name, const char *suffix, char *err, size_t errlen)
{
    char *id = PQescapeIdentifier(c, name, strlen(name));
    if (!id) {
        query_error(c, NULL, side, what, err, errlen);
        return -1;
    }
    char sql[512];
    snprintf(sql, sizeof(sql), "%s%s%s", prefix, id, suffix);
    PQfreemem(id);
    return exec(c, side, what, sql, 0, NULL, err, errlen);
}

static sy_lsn get_lsn(const PGresult *r, int row, int col)
{
    sy_lsn v = 0;
    if (PQgetisnull(r, row, col) || sy_lsn_parse(PQgetvalue(r, row, col), &v) != 0)
        return 0;
    return v;
}

static int get_bool(const PGresult *r, int row, int col)
{
    return !PQgetisnull(r, row, col) && PQgetvalue(r, row, col)[0] == 't';
}

static void get_str(const PGresult *r, int row, int col, char *out, size_t cap)
{
    snprintf(out, cap, "%s", PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col));
}

static double get_double(const PGresult *r, int row, int col, double if_null)
{
    return PQgetisnull(r, row, col) ? if_null : strtod(PQgetvalue(r, row, col), NULL);
}

static sy_lsn lsn_max(sy_lsn a, sy_lsn b) { return a > b ? a : b; }

static const char *str(const char *s) { return s ? s : ""; }

/* For the functions that are given no side name: "<role> (host:port)". */
static const char *conn_side(PGconn *c, const char *role, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s (%s:%s)", role, str(PQhost(c)), str(PQport(c)));
    return buf;
}

/* The other of "blue" and "green"; else "<role> (host:port)". */
static const char *other_side(const char *side, PGconn *c, const char *role, char *buf, size_t cap)
{
    if (strcmp(side, "blue") == 0)
        return "green";
    if (strcmp(side, "green") == 0)
        return "blue";
    return conn_side(c, role, buf, cap);
}

/* ---- connections ---- */

/* Notices (pg_terminate_backend's warnings, CREATE SUBSCRIPTION's) are not logged: no function
 * of this adapter logs. */
static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Adds a connection option when value is set. */
static void opt_add(const char **keys, const char **vals, int *n, const char *key,
                    const char *value)
{
    if (value && value[0]) {
        keys[*n] = key;
        vals[(*n)++] = value;
    }
}

/* Whether msg holds any of the words (case-sensitive, as libpq and the server spell them). */
static int has_any(const char *msg, const char *const *words)
{
    for (; *words; words++)
        if (strstr(msg, *words))
            return 1;
    return 0;
}

/* What to do about a failed login, from libpq's message (one line): only the cause that message
 * names, so that a server that did not answer is never blamed on a password. */
static void connect_hint(const char *msg, const struct sy_pgctl_target *t, char *out, size_t cap)
{
    static const char *const timeout[] = {"timeout expired", NULL};
    static const char *const refused[] = {"Connection refused", NULL};
    static const char *const unreachable[] = {"No route to host", "Network is unreachable",
                                              "could not translate host name",
                                              "Name or service not known", NULL};
    static const char *const auth[] = {"password authentication failed", "no pg_hba.conf entry",
                                       "authentication failed", "no password supplied",
                                       "pg_hba.conf rejects", NULL};
    static const char *const nologin[] = {"is not permitted to log in", NULL};
    static const char *const norole[] = {"role \"", NULL};
    static const char *const nodb[] = {"database \"", NULL};
    static const char *const full[] = {"too many clients", "too many connections",
                                       "connection slots are reserved", NULL};
    static const char *const starting[] = {"the database system is starting up",
                                           "the database system is shutting down",
                                           "the database system is in recovery mode",
                                           "the database system is not yet accepting", NULL};
    static const char *const tls[] = {"SSL", "TLS", "certificate", "sslmode", NULL};
    const char *host = t->host && t->host[0] ? t->host : "localhost";
    if (has_any(msg, timeout))
        snprintf(out, cap, "the server did not answer within connect_timeout (%d s): is it "
                 "running and reachable, frozen, or overloaded?", t->connect_timeout_s);
    else if (has_any(msg, refused))
        snprintf(out, cap, "nothing listens at %s:%d: is the server running, and are host and "
                 "port in the config right (listen_addresses, port)?", host, t->port);
    else if (has_any(msg, unreachable))
        snprintf(out, cap, "%s cannot be reached from here: check host in the config, DNS and "
                 "the network", host);
    else if (has_any(msg, auth))
        snprintf(out, cap, "check control_user, control_password and the server's pg_hba.conf");
    else if (has_any(msg, nologin))
        snprintf(out, cap, "control_user cannot log in (NOLOGIN, a fence?): give it LOGIN "
                 "(ALTER ROLE ... LOGIN), or use another control_user");
    else if (has_any(msg, nodb) && strstr(msg, "does not exist"))
        snprintf(out, cap, "create the database on that server, or set control_database to one "
                 "that exists");
    else if (has_any(msg, norole) && strstr(msg, "does not exist"))
        snprintf(out, cap, "create control_user on that server (a superuser), or fix "
                 "control_user in the config");
    else if (has_any(msg, full))
        snprintf(out, cap, "the server has no connection slot left: raise max_connections (or "
                 "the role's CONNECTION LIMIT), or end idle sessions");
    else if (has_any(msg, starting))
        snprintf(out, cap, "the server is starting, stopping or recovering: retried at the next "
                 "probe");
    else if (has_any(msg, tls))
        snprintf(out, cap, "a TLS problem: check server_tls and server_tls_ca in the config "
                 "against the server's ssl settings and certificate");
    else
        snprintf(out, cap, "check that the server runs and that control_user, control_password "
                 "and its pg_hba.conf let this host in");
}

PGconn *sy_pgctl_connect(const struct sy_pgctl_target *t, char *err, size_t errlen)
{
    const char *keys[10], *vals[10];
    char port[16], timeout[16];
    int n = 0;
    snprintf(port, sizeof(port), "%d", t->port);
    snprintf(timeout, sizeof(timeout), "%d", t->connect_timeout_s);
    opt_add(keys, vals, &n, "host", t->host);
    opt_add(keys, vals, &n, "port", t->port > 0 ? port : "");
    opt_add(keys, vals, &n, "user", t->user);
    opt_add(keys, vals, &n, "password", t->password);
    opt_add(keys, vals, &n, "dbname", t->dbname);
    opt_add(keys, vals, &n, "sslmode", t->sslmode);
    opt_add(keys, vals, &n, "sslrootcert", t->sslrootcert);
    opt_add(keys, vals, &n, "connect_timeout", t->connect_timeout_s > 0 ? timeout : "");
    opt_add(keys, vals, &n, "application_name", "switchyard-control");
    keys[n] = vals[n] = NULL;
    PGconn *c = PQconnectdbParams(keys, vals, 0);
    if (c && PQstatus(c) == CONNECTION_OK) {
        PQsetNoticeProcessor(c, ignore_notice, NULL);
        return c;
    }
    char msg[300], hint[300];
    one_line(c ? PQerrorMessage(c) : "out of memory", msg, sizeof(msg));
    connect_hint(msg, t, hint, sizeof(hint));
    seterr(err, errlen, "%s: cannot log in to %s:%d as %s (database %s): %s; %s", str(t->side),
           t->host && t->host[0] ? t->host : "localhost", t->port,
           t->user && t->user[0] ? t->user : "(default user)",
           t->dbname && t->dbname[0] ? t->dbname : "(default)", msg, hint);
    PQfinish(c);
    return NULL;
}

/* ---- probe and WAL positions ---- */

int sy_pgctl_probe(PGconn *c, const char *side, struct sy_pgctl_probe *out, char *err,
                   size_t errlen)
{
    memset(out, 0, sizeof(*out));
    PGresult *r = run(c, side, "probe the server",
                      "SELECT pg_is_in_recovery(), current_setting('server_version_num')::int, "
                      "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
                      "ELSE pg_current_wal_lsn() END, pg_backend_pid()",
                      0, NULL, err, errlen);
    if (!r)
        return -1;
    out->in_recovery = get_bool(r, 0, 0);
    out->server_version_num = atoi(PQgetvalue(r, 0, 1));
    out->lsn = get_lsn(r, 0, 2);
    out->backend_pid = atoi(PQgetvalue(r, 0, 3));
    PQclear(r);
    return 0;
}

/* The end of the last WAL record c has inserted; with flush, c also flushes its WAL that far
 * (wal_level logical only; without it, asynchronous commits wait for the WAL writer). See the top
 * of this file. */
static int wal_end(PGconn *c, const char *side, int flush, sy_lsn *out, char *err, size_t errlen)
{
    PGresult *r = run(c, side, "read the WAL position",
                      "SELECT pg_current_wal_insert_lsn(), pg_current_wal_flush_lsn(), "
                      "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_block_size'), "
                      "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), "
                      "current_setting('wal_level')",
                      0, NULL, err, errlen);
    if (!r)
        return -1;
    sy_lsn insert = get_lsn(r, 0, 0), flushed = get_lsn(r, 0, 1);
    uint64_t block = strtoull(PQgetvalue(r, 0, 2), NULL, 10);
    uint64_t segment = strtoull(PQgetvalue(r, 0, 3), NULL, 10);
    int logical = strcmp(PQgetvalue(r, 0, 4), "logical") == 0;
    PQclear(r);
    sy_lsn end = insert;
    if (segment && insert % segment == LONG_PAGE_HEADER)
        end = insert - LONG_PAGE_HEADER;
    else if (block && insert % block == SHORT_PAGE_HEADER)
        end = insert - SHORT_PAGE_HEADER;
    if (flush && logical && flushed < end) {
        /* One round trip; on any error the transaction is rolled back and the flush skipped. */
        PQclear(exec_timed(c, "BEGIN READ WRITE; SET LOCAL synchronous_commit = local; "
                          "SELECT pg_logical_emit_message(true, 'switchyard', 'flush'); COMMIT",
                           0, NULL, 1));
        if (PQtransactionStatus(c) != PQTRANS_IDLE)
            rollback(c);
    }
    *out = end;
    return 0;
}

int sy_pgctl_current_lsn(PGconn *c, const char *side, sy_lsn *out, char *err, size_t errlen)
{
    return wal_end(c, side, 1, out, err, errlen);
}

int sy_pgctl_wal_end(PGconn *c, const char *side, sy_lsn *out, char *err, size_t errlen)
{
    return wal_end(c, side, 0, out, err, errlen);
}

/* ---- replication state ---- */

/* The largest position that proves dst applied src's changes (logical; see the file's top). */
static int logical_applied(PGconn *src, PGconn *dst, const char *src_side, const char *dst_side,
                           const char *subscription, const char *slot, sy_lsn *out, char *err,
                           size_t errlen)
{
    const char *p_slot[] = {slot};
    PGresult *r = run(src, src_side, "read the replication slot",
                      "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1",
                      1, p_slot, err, errlen);
    if (!r)
        return -1;
    sy_lsn best = PQntuples(r) == 1 ? get_lsn(r, 0, 0) : 0;
    PQclear(r);
    const char *p_sub[] = {subscription};
    r = run(dst, dst_side,
            "read the subscription's progress (the control user must be a superuser)",
            "SELECT (SELECT o.remote_lsn FROM pg_replication_origin_status o "
            "        WHERE o.external_id = 'pg_' || s.oid), "
            "       (SELECT w.latest_end_lsn FROM pg_stat_subscription w "
            "        WHERE w.subid = s.oid AND w.relid IS NULL) "
            "FROM pg_subscription s WHERE s.subname = $1 "
            "AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            1, p_sub, err, errlen);
    if (!r)
        return -1;
    if (PQntuples(r) == 1)
        best = lsn_max(best, lsn_max(get_lsn(r, 0, 0), get_lsn(r, 0, 1)));
    PQclear(r);
    *out = best;
    return 0;
}

static int physical_applied(PGconn *dst, const char *dst_side, sy_lsn *out, char *err,
                            size_t errlen)
{
    PGresult *r = run(dst, dst_side, "read the standby's replay position",
                      "SELECT pg_last_wal_replay_lsn()", 0, NULL, err, errlen);
    if (!r)
        return -1;
    *out = get_lsn(r, 0, 0);
    PQclear(r);
    return 0;
}

int sy_pgctl_applied_lsn(PGconn *src, PGconn *dst, const struct sy_pgctl_repl *rp, sy_lsn *out,
                         char *err, size_t errlen)
{
    char src_side[128], dst_side[128];
    conn_side(src, "the source", src_side, sizeof(src_side));
    conn_side(dst, "the destination", dst_side, sizeof(dst_side));
    *out = 0;
    if (rp->mode == SY_REPL_LOGICAL)
        return logical_applied(src, dst, src_side, dst_side, rp->subscription, rp->slot, out, err,
                               errlen);
    if (rp->mode == SY_REPL_PHYSICAL)
        return physical_applied(dst, dst_side, out, err, errlen);
    seterr(err, errlen, "%s: no replication to measure; read it with sy_pgctl_repl_state first",
           dst_side);
    return -1;
}

static void problem(struct sy_pgctl_repl *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->problem, sizeof(out->problem), fmt, ap);
    va_end(ap);
}

/* Fills lag_bytes and lag_seconds from the positions (replay_lag is NULL once a walsender is
 * idle and caught up: that is 0). */
static void fill_lag(struct sy_pgctl_repl *out, const PGresult *r, int row, int col)
{
    if (out->applied_lsn == 0 || out->source_lsn == 0)
        out->lag_bytes = -1;
    else
        out->lag_bytes =
            out->applied_lsn >= out->source_lsn ? 0 : (int64_t)(out->source_lsn - out->applied_lsn);
    out->lag_seconds = r && row >= 0 ? get_double(r, row, col, -1) : -1;
    if (out->lag_seconds < 0 && out->lag_bytes == 0 && out->streaming)
        out->lag_seconds = 0;
}

/* Picks the one subscription on dst (in its database) whose slot exists on src. */
static int logical_pick(PGconn *src, PGconn *dst, const char *src_side, const char *dst_side,
                        struct sy_pgctl_repl *out, int *copying, char *err, size_t errlen)
{
    PGresult *slots = run(src, src_side, "list the replication slots",
                          "SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'logical' "
                          "AND database = current_database()",
                          0, NULL, err, errlen);
    PGresult *subs = slots ? run(dst, dst_side, "list the subscriptions",
                                 "SELECT s.subname, s.subslotname, s.subenabled, "
                                 "(SELECT count(*) FROM pg_subscription_rel r "
                                 " WHERE r.srsubid = s.oid AND r.srsubstate <> 'r') "
                                 "FROM pg_subscription s WHERE s.subslotname IS NOT NULL AND "
                                 "s.subdbid = (SELECT oid FROM pg_database "
                                 "             WHERE datname = current_database()) "
                                 "ORDER BY s.subname",
                                 0, NULL, err, errlen)
                           : NULL;
    int found = 0;
    for (int i = 0; subs && i < PQntuples(subs); i++)
        for (int j = 0; j < PQntuples(slots); j++)
            if (strcmp(PQgetvalue(subs, i, 1), PQgetvalue(slots, j, 0)) == 0 && found++ == 0) {
                get_str(subs, i, 0, out->subscription, sizeof(out->subscription));
                get_str(subs, i, 1, out->slot, sizeof(out->slot));
                out->enabled = get_bool(subs, i, 2);
                *copying = atoi(PQgetvalue(subs, i, 3));
            }
    int ok = subs != NULL;
    PQclear(slots);
    PQclear(subs);
    if (found == 1)
        out->mode = SY_REPL_LOGICAL;
    else if (found == 0)
        problem(out, "no subscription on %s has its slot on %s (in this database)", dst_side,
                src_side);
    else
        problem(out, "%d subscriptions on %s have their slots on %s; keep exactly one", found,
                dst_side, src_side);
    return ok ? 0 : -1;
}

static int repl_logical(PGconn *src, PGconn *dst, const char *src_side, const char *dst_side,
                        struct sy_pgctl_repl *out, char *err, size_t errlen)
{
    int copying = 0;
    if (logical_pick(src, dst, src_side, dst_side, out, &copying, err, errlen) != 0)
        return -1;
    if (out->mode != SY_REPL_LOGICAL)
        return 0;
    const char *p[] = {out->slot};
    PGresult *r = run(src, src_side, "read the walsender",
                      "SELECT r.pid IS NOT NULL, EXTRACT(epoch FROM r.replay_lag)::float8 "
                      "FROM pg_replication_slots s "
                      "LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid "
                      "WHERE s.slot_name = $1",
                      1, p, err, errlen);
    if (!r)
        return -1;
    int row = PQntuples(r) == 1 ? 0 : -1;
    out->streaming = row == 0 && get_bool(r, 0, 0);
    if (logical_applied(src, dst, src_side, dst_side, out->subscription, out->slot,
                        &out->applied_lsn, err, errlen) != 0) {
        PQclear(r);
        return -1;
    }
    fill_lag(out, r, row, 1);
    PQclear(r);
    if (!out->enabled)
        problem(out, "subscription %s on %s is disabled", out->subscription, dst_side);
    else if (copying > 0)
        problem(out, "subscription %s on %s is still copying %d tables", out->subscription,
                dst_side, copying);
    else if (!out->streaming)
        problem(out, "no walsender on %s is streaming slot %s to %s", src_side, out->slot,
                dst_side);
    return 0;
}

/* Which of src's physical walsenders (rows of w) serves the standby dst: the one on dst's slot,
 * else the only one. Returns the row or -1. */
static int physical_pick(const PGresult *w, const char *slot)
{
    for (int i = 0; i < PQntuples(w); i++)
        if (slot[0] ? strcmp(PQgetvalue(w, i, 0), slot) == 0 : PQntuples(w) == 1)
            return i;
    return -1;
}

static int repl_physical(PGconn *src, PGconn *dst, const char *src_side, const char *dst_side,
                         struct sy_pgctl_repl *out, char *err, size_t errlen)
{
    const char *id_sql = "SELECT system_identifier::text, "
                         "COALESCE((SELECT slot_name FROM pg_stat_wal_receiver), '') "
                         "FROM pg_control_system()";
    PGresult *d = run(dst, dst_side, "read the standby's identity", id_sql, 0, NULL, err, errlen);
    PGresult *s =
        d ? run(src, src_side, "read the system identifier", id_sql, 0, NULL, err, errlen) : NULL;
    PGresult *w = s ? run(src, src_side, "list the walsenders",
                          "SELECT COALESCE(s.slot_name, ''), r.state, "
                          "EXTRACT(epoch FROM r.replay_lag)::float8 "
                          "FROM pg_stat_replication r JOIN pg_stat_activity a ON a.pid = r.pid "
                          "LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid "
                          "WHERE a.datid IS NULL ORDER BY r.pid",
                          0, NULL, err, errlen)
                    : NULL;
    int ok = w && physical_applied(dst, dst_side, &out->applied_lsn, err, errlen) == 0;
    if (ok && strcmp(PQgetvalue(d, 0, 0), PQgetvalue(s, 0, 0)) != 0) {
        problem(out, "%s is a standby of another cluster, not of %s", dst_side, src_side);
        out->applied_lsn = 0;
    } else if (ok) {
        out->mode = SY_REPL_PHYSICAL;
        out->enabled = 1;
        get_str(d, 0, 1, out->slot, sizeof(out->slot));
        int row = physical_pick(w, out->slot);
        out->streaming = row >= 0 && strcmp(PQgetvalue(w, row, 1), "streaming") == 0;
        fill_lag(out, w, row, 2);
        if (row < 0 && !out->slot[0] && PQntuples(w) > 1)
            problem(out,
                    "%d standbys stream from %s and %s uses no replication slot to tell "
                    "which is it",
                    PQntuples(w), src_side, dst_side);
        else if (!out->streaming)
            problem(out, "no walsender on %s is streaming to %s", src_side, dst_side);
    }
    PQclear(d);
    PQclear(s);
    PQclear(w);
    return ok ? 0 : -1;
}

int sy_pgctl_repl_state(PGconn *src, PGconn *dst, const char *src_side, const char *dst_side,
                        struct sy_pgctl_repl *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->lag_bytes = -1;
    out->lag_seconds = -1;
    PGresult *r = run(dst, dst_side, "read the recovery state", "SELECT pg_is_in_recovery()", 0,
                      NULL, err, errlen);
    if (!r)
        return -1;
    int standby = get_bool(r, 0, 0);
    PQclear(r);
    if (wal_end(src, src_side, 0, &out->source_lsn, err, errlen) != 0)
        return -1;
    if (standby)
        return repl_physical(src, dst, src_side, dst_side, out, err, errlen);
    return repl_logical(src, dst, src_side, dst_side, out, err, errlen);
}

/* ---- sessions ---- */

static void get_backend(const PGresult *r, int row, struct sy_pgctl_backend *b)
{
    b->pid = atoi(PQgetvalue(r, row, 0));
    b->xact_age_s = get_double(r, row, 1, -1);
    get_str(r, row, 2, b->user, sizeof(b->user));
    get_str(r, row, 3, b->application, sizeof(b->application));
    get_str(r, row, 4, b->client_addr, sizeof(b->client_addr));
    get_str(r, row, 5, b->state, sizeof(b->state));
}

/* The columns get_backend reads, from pg_stat_activity a. */
#define BACKEND_COLUMNS                                                                            \
    "a.pid, EXTRACT(epoch FROM clock_timestamp() - a.xact_start)::float8, "                        \
    "COALESCE(a.usename, ''), COALESCE(a.application_name, ''), "                                  \
    "COALESCE(host(a.client_addr), ''), COALESCE(a.state, '') "

int sy_pgctl_long_transactions(PGconn *c, const char *side, double min_age_s,
                               struct sy_pgctl_backend *out, int max, char *err, size_t errlen)
{
    char age[32], limit[16];
    snprintf(age, sizeof(age), "%.6f", min_age_s);
    snprintf(limit, sizeof(limit), "%d", max > 0 ? max : 0);
    const char *p[] = {age, limit};
    PGresult *r = run(c, side, "list long transactions",
                      "SELECT " BACKEND_COLUMNS "FROM pg_stat_activity a "
                      "WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid() "
                      "AND a.xact_start IS NOT NULL "
                      "AND clock_timestamp() - a.xact_start > make_interval(secs => $1::float8) "
                      "ORDER BY a.xact_start LIMIT $2::int",
                      2, p, err, errlen);
    if (!r)
        return -1;
    int n = PQntuples(r);
    for (int i = 0; i < n; i++)
        get_backend(r, i, &out[i]);
    PQclear(r);
    return n;
}

/* ---- fence ---- */

/* A role replication depends on, as a condition on a pg_roles row r: a subscription's owner
 * (its apply worker runs as it, and cannot start once the role is NOLOGIN) or the role a
 * walsender is connected as (a subscription elsewhere, or a standby, logs in as it). The fence
 * leaves these able to log in and ends only their client sessions (docs/runbook.md). */
#define FENCE_REPLICATION_ROLE_OF(r)                                                               \
    "(" r ".oid IN (SELECT subowner FROM pg_catalog.pg_subscription) OR " r ".rolname IN "     \
    "(SELECT usename FROM pg_catalog.pg_stat_activity WHERE backend_type = 'walsender' "          \
    "AND usename IS NOT NULL))"
#define FENCE_REPLICATION_ROLE FENCE_REPLICATION_ROLE_OF("pg_catalog.pg_roles")

/* Switches every role that can log in, but keep_role, the current user and the roles
 * replication depends on (FENCE_REPLICATION_ROLE), to NOLOGIN in one
 * transaction and one round trip (it runs inside the pause); records them in out->roles. The
 * listing and the changes see one snapshot (repeatable read), so what is recorded is exactly
 * what was changed. */
static int fence_roles(PGconn *c, const char *side, const char *keep_role,
                       struct sy_pgctl_fence *out, char *err, size_t errlen)
{
    char *keep = PQescapeLiteral(c, str(keep_role), strlen(str(keep_role)));
    if (!keep) {
        query_error(c, NULL, side, "fence the roles", err, errlen);
        return -1;
    }
    char sql[1900];
    snprintf(sql, sizeof(sql),
             "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; "
             "SET LOCAL switchyard.fence_keep = %s; "
             "DO $sy$DECLARE r text; names text[]; BEGIN "
             "SELECT pg_catalog.array_agg(rolname ORDER BY rolname) INTO names "
             "FROM pg_catalog.pg_roles WHERE rolcanlogin "
             "AND rolname <> pg_catalog.current_setting('switchyard.fence_keep') "
             "AND rolname <> current_user AND NOT " FENCE_REPLICATION_ROLE "; "
             "IF coalesce(pg_catalog.array_length(names, 1), 0) > %d THEN RAISE EXCEPTION "
             "'%% roles can log in, more than the %d a fence can record; make the roles that "
             "need no login NOLOGIN', pg_catalog.array_length(names, 1); END IF; "
             "FOREACH r IN ARRAY coalesce(names, '{}') LOOP "
             "EXECUTE pg_catalog.format('ALTER ROLE %%I NOLOGIN', r); END LOOP; "
             "PERFORM pg_catalog.set_config('switchyard.fenced', coalesce(names, '{}')::text, "
             "true); END$sy$; "
             "SELECT pg_catalog.unnest(pg_catalog.current_setting('switchyard.fenced')::text[])",
             keep, SY_FENCE_MAX_ROLES, SY_FENCE_MAX_ROLES);
    PQfreemem(keep);
    /* One implicit transaction: an error anywhere, the commit's included, undoes it all. */
    PGresult *r = exec_timed(c, sql, 0, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        query_error(c, r, side, "fence the roles", err, errlen);
        PQclear(r);
        return -1;
    }
    int n = PQntuples(r);
    for (int i = 0; i < n && i < SY_FENCE_MAX_ROLES; i++)
        get_str(r, i, 0, out->roles[i], sizeof(out->roles[i]));
    out->nroles = n < SY_FENCE_MAX_ROLES ? n : SY_FENCE_MAX_ROLES;
    PQclear(r);
    return 0;
}

/* "{1,2,3}" for an int[] parameter; malloc'd. */
static char *int_array(const int *v, int n)
{
    size_t cap = 3 + (size_t)(n > 0 ? n : 0) * 12, len = 1;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    strcpy(s, "{");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(s + len, cap - len, "%s%d", i ? "," : "", v[i]);
    snprintf(s + len, cap - len, "}");
    return s;
}

/* Waits until none of pids ("{1,2}") is in pg_stat_activity any more, polling every
 * millisecond (pg_terminate_backend's own wait polls in 100 ms steps, all of it inside the
 * pause). A backend told to end may still be finishing a commit, so the fence only counts once
 * it is gone. Returns 0, or -1 after timeout_ms. */
static int wait_gone(PGconn *c, const char *side, const char *pids, int timeout_ms, char *err,
                     size_t errlen)
{
    const char *p[] = {pids};
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        PGresult *r =
            run(c, side, "check the terminated sessions",
                "SELECT pid FROM pg_stat_activity WHERE pid = ANY ($1::int[])", 1, p, err, errlen);
        if (!r)
            return -1;
        int n = PQntuples(r);
        clock_gettime(CLOCK_MONOTONIC, &t);
        long ms = (t.tv_sec - t0.tv_sec) * 1000L + (t.tv_nsec - t0.tv_nsec) / 1000000L;
        if (n > 0 && ms >= timeout_ms)
            seterr(err, errlen,
                   "%s: %d sessions (pid %s first) did not end within %d ms of "
                   "pg_terminate_backend; end them or raise the timeout",
                   side, n, PQgetvalue(r, 0, 0), timeout_ms);
        PQclear(r);
        if (n == 0)
            return 0;
        if (ms >= timeout_ms)
            return -1;
        nanosleep(&(struct timespec){.tv_nsec = 1000 * 1000}, NULL);
    }
}

/* One pass: terminates every other client backend and waits up to timeout_ms for them to be
 * gone. Returns how many it found, or -1. */
static int terminate_pass(PGconn *c, const char *side, const char *keep, int timeout_ms,
                          struct sy_pgctl_fence *out, char *err, size_t errlen)
{
    const char *p[] = {keep};
    PGresult *r = run(c, side, "terminate sessions (the control user must be a superuser)",
                      "SELECT " BACKEND_COLUMNS ", pg_terminate_backend(a.pid) "
                      "FROM pg_stat_activity a WHERE a.backend_type = 'client backend' "
                      "AND a.pid <> pg_backend_pid() AND a.pid <> ALL ($1::int[])",
                      1, p, err, errlen);
    if (!r)
        return -1;
    int n = PQntuples(r);
    int *told = calloc((size_t)n + 1, sizeof(int));
    char *pids = NULL;
    if (told) {
        for (int i = 0; i < n; i++) {
            if (out->nterminated < SY_FENCE_MAX_REPORT)
                get_backend(r, i, &out->terminated[out->nterminated]);
            out->nterminated++;
            told[i] = atoi(PQgetvalue(r, i, 0));
        }
        pids = int_array(told, n);
        free(told);
    }
    PQclear(r);
    if (!pids)
        seterr(err, errlen, "%s: out of memory while terminating sessions", side);
    int rc = pids && (n == 0 || timeout_ms <= 0 ||
                      wait_gone(c, side, pids, timeout_ms, err, errlen) == 0);
    free(pids);
    return rc ? n : -1;
}

/* Terminates the outside sessions; a second and third pass catch logins that were already past
 * the role check when the NOLOGIN committed (not without a timeout: a session that was told to
 * end but has not yet would be counted again). */
static int fence_terminate(PGconn *c, const char *side, const int *keep_pids, int nkeep,
                           int timeout_ms, struct sy_pgctl_fence *out, char *err, size_t errlen)
{
    char *keep = int_array(keep_pids, keep_pids ? nkeep : 0);
    if (!keep) {
        seterr(err, errlen, "%s: out of memory while fencing", side);
        return -1;
    }
    int n = 1;
    for (int pass = 0; pass < (timeout_ms > 0 ? 3 : 1) && n > 0; pass++)
        n = terminate_pass(c, side, keep, timeout_ms, out, err, errlen);
    free(keep);
    return n < 0 ? -1 : 0;
}

int sy_pgctl_fence(PGconn *c, const char *side, const char *keep_role, const int *keep_pids,
                   int nkeep, int timeout_ms, struct sy_pgctl_fence *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    struct timespec t0, t1, t2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (fence_roles(c, side, keep_role, out, err, errlen) != 0)
        return -1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int rc = fence_terminate(c, side, keep_pids, nkeep, timeout_ms, out, err, errlen);
    clock_gettime(CLOCK_MONOTONIC, &t2);
    out->roles_ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    out->terminate_ms = (t2.tv_sec - t1.tv_sec) * 1e3 + (t2.tv_nsec - t1.tv_nsec) / 1e6;
    if (rc == 0)
        return 0;
    char undo[256];
    if (sy_pgctl_unfence(c, side, out, undo, sizeof(undo)) != 0 && err && errlen > 0) {
        size_t len = strlen(err);
        if (len + 1 < errlen)
            snprintf(err + len, errlen - len, "; undoing the fence failed too (%s)", undo);
    }
    return -1;
}

int sy_pgctl_unfence(PGconn *c, const char *side, const struct sy_pgctl_fence *f, char *err,
                     size_t errlen)
{
    int rc = 0;
    for (int i = 0; i < f->nroles; i++) {
        char one[256];
        const char *p[] = {f->roles[i]};
        PGresult *r = run(c, side, "look up a fenced role",
                          "SELECT 1 FROM pg_roles WHERE rolname = $1", 1, p, one, sizeof(one));
        int exists = r && PQntuples(r) == 1;
        PQclear(r);
        /* A role dropped since the fence has nothing to give back. */
        if (r && !exists)
            continue;
        if (!r || exec_ident(c, side, "give a fenced role LOGIN back", "ALTER ROLE ", f->roles[i],
                             " LOGIN", one, sizeof(one)) != 0) {
            if (rc == 0)
                seterr(err, errlen,
                       "%s; run ALTER ROLE ... LOGIN by hand for the roles in the "
                       "fence",
                       one);
            rc = -1;
        }
    }
    return rc;
}

/* ---- sequences and promotion ---- */

int sy_pgctl_sync_sequences(PGconn *src, PGconn *dst, const char *dst_side, int *count, char *err,
                            size_t errlen)
{
    char src_side[128];
    conn_side(src, "the source", src_side, sizeof(src_side));
    *count = 0;
    PGresult *r = run(src, src_side, "read the sequences",
                      "SELECT schemaname, sequencename, last_value::text FROM pg_sequences "
                      "WHERE last_value IS NOT NULL ORDER BY 1, 2",
                      0, NULL, err, errlen);
    if (!r)
        return -1;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *p[] = {PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2)};
        char what[200];
        snprintf(what, sizeof(what), "set sequence %.64s.%.64s (does the schema match?)", p[0],
                 p[1]);
        if (exec(dst, dst_side, what,
                 "SELECT setval(format('%I.%I', $1::text, $2::text)::regclass, $3::bigint, true)",
                 3, p, err, errlen) != 0) {
            PQclear(r);
            return -1;
        }
        (*count)++;
    }
    PQclear(r);
    return 0;
}

int sy_pgctl_promote(PGconn *c, const char *side, int timeout_s, char *err, size_t errlen)
{
    char t[16];
    snprintf(t, sizeof(t), "%d", timeout_s);
    const char *p[] = {t};
    PGresult *r =
        run(c, side, "promote the standby", "SELECT pg_promote(true, $1::int)", 1, p, err, errlen);
    if (!r)
        return -1;
    int done = get_bool(r, 0, 0);
    PQclear(r);
    if (!done)
        seterr(err, errlen, "%s: promotion did not finish within %d s; check the server's log",
               side, timeout_s);
    return done ? 0 : -1;
}

/* ---- reverse replication ---- */

/* Appends key='value' (conninfo quoting) to buf when value is set. */
static void conninfo_add(char *buf, size_t cap, const char *key, const char *value)
{
    size_t len = strlen(buf);
    if (!value || !value[0] || len + 1 >= cap)
        return;
    len += (size_t)snprintf(buf + len, cap - len, "%s%s='", len ? " " : "", key);
    for (; *value && len + 3 < cap; value++) {
        if (*value == '\'' || *value == '\\')
            buf[len++] = '\\';
        buf[len++] = *value;
    }
    snprintf(buf + len, cap - len, "'");
}

/* Waits until dst has no apply worker for the subscription (disabling one is asynchronous). */
static int wait_worker_gone(PGconn *c, const char *side, const char *subscription, char *err,
                            size_t errlen)
{
    const char *p[] = {subscription};
    /* An idle apply worker notices DISABLE only when it next wakes (up to a second); it has
     * nothing left to apply (the caller checked), and the launcher does not restart the worker
     * of a disabled subscription, so end it now. */
    if (exec(c, side, "stop the subscription's workers",
             "SELECT pg_terminate_backend(pid) FROM pg_stat_subscription WHERE subname = $1 "
             "AND pid IS NOT NULL",
             1, p, err, errlen) != 0)
        return -1;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (t = t0; t.tv_sec - t0.tv_sec < 10; clock_gettime(CLOCK_MONOTONIC, &t)) {
        PGresult *r = run(c, side, "check the subscription's workers",
                          "SELECT 1 FROM pg_stat_subscription WHERE subname = $1 "
                          "AND pid IS NOT NULL",
                          1, p, err, errlen);
        if (!r)
            return -1;
        int running = PQntuples(r) > 0;
        PQclear(r);
        if (!running)
            return 0;
        nanosleep(&(struct timespec){.tv_nsec = 1000 * 1000}, NULL);
    }
    seterr(err, errlen,
           "%s: the apply worker of subscription %s did not stop within 10 s of "
           "DISABLE; check the server's log",
           side, subscription);
    return -1;
}

/* CREATE SUBSCRIPTION on old_active, connecting to new_active. The statement holds a password:
 * the session keeps it out of the server log, the buffers are wiped, and an error that would
 * name it is replaced. */
static int create_reverse_subscription(PGconn *old_active, const char *side,
                                       const struct sy_pgctl_target *t, const char *name, char *err,
                                       size_t errlen)
{
    char ci[1024] = "", sql[2600], port[16], timeout[16];
    snprintf(port, sizeof(port), "%d", t->port);
    snprintf(timeout, sizeof(timeout), "%d", t->connect_timeout_s);
    conninfo_add(ci, sizeof(ci), "host", t->host);
    conninfo_add(ci, sizeof(ci), "port", t->port > 0 ? port : "");
    conninfo_add(ci, sizeof(ci), "user", t->user);
    conninfo_add(ci, sizeof(ci), "password", t->password);
    conninfo_add(ci, sizeof(ci), "dbname", t->dbname);
    conninfo_add(ci, sizeof(ci), "sslmode", t->sslmode);
    conninfo_add(ci, sizeof(ci), "sslrootcert", t->sslrootcert);
    conninfo_add(ci, sizeof(ci), "connect_timeout", t->connect_timeout_s > 0 ? timeout : "");
    char *lit = PQescapeLiteral(old_active, ci, strlen(ci));
    char *id = PQescapeIdentifier(old_active, name, strlen(name));
    snprintf(sql, sizeof(sql),
             "CREATE SUBSCRIPTION %s CONNECTION %s PUBLICATION %s "
             "WITH (copy_data = false, enabled = false)",
             str(id), str(lit), str(id));
    int rc = -1;
    if (!lit || !id) {
        query_error(old_active, NULL, side, "create the reverse subscription", err, errlen);
    } else {
        /* Superuser settings (best effort): without them a failing statement is logged. */
        PQclear(exec_timed(old_active, "SET log_statement = 'none'", 0, NULL, 1));
        PQclear(exec_timed(old_active, "SET log_min_error_statement = 'panic'", 0, NULL, 1));
        rc = exec(old_active, side, "create the reverse subscription", sql, 0, NULL, err, errlen);
        PQclear(exec_timed(old_active, "RESET log_statement; RESET log_min_error_statement", 0,
                           NULL, 1));
    }
    explicit_bzero(ci, sizeof(ci));
    explicit_bzero(sql, sizeof(sql));
    if (lit)
        explicit_bzero(lit, strlen(lit));
    PQfreemem(lit);
    PQfreemem(id);
    if (rc != 0 && t->password && t->password[0] && err && strstr(err, t->password))
        seterr(err, errlen, "%s: could not create the reverse subscription; see its log", side);
    return rc;
}

static int forward_logical(const struct sy_pgctl_repl *forward)
{
    return forward && forward->mode == SY_REPL_LOGICAL && forward->subscription[0];
}

int sy_pgctl_reverse_prepare(PGconn *old_active, PGconn *new_active,
                             const struct sy_pgctl_target *new_active_target, const char *name,
                             char *err, size_t errlen)
{
    char buf[128];
    const char *new_side = str(new_active_target->side);
    const char *old_side =
        other_side(new_side, old_active, "the old active server", buf, sizeof(buf));
    /* A leftover from an earlier attempt that died half way would hold a slot at an unknown
     * position: start from scratch. */
    if (exec_ident(old_active, old_side, "drop a leftover reverse subscription",
                   "DROP SUBSCRIPTION IF EXISTS ", name, "", err, errlen) != 0)
        return -1;
    const char *p[] = {name};
    PGresult *r = run(new_active, new_side, "look up the reverse publication",
                      "SELECT 1 FROM pg_publication WHERE pubname = $1", 1, p, err, errlen);
    if (!r)
        return -1;
    int created = PQntuples(r) == 0;
    PQclear(r);
    if (created && exec_ident(new_active, new_side, "create the reverse publication",
                              "CREATE PUBLICATION ", name, " FOR ALL TABLES", err, errlen) != 0)
        return -1;
    if (create_reverse_subscription(old_active, old_side, new_active_target, name, err, errlen) ==
        0)
        return 0;
    if (created)
        exec_ident(new_active, new_side, "drop", "DROP PUBLICATION IF EXISTS ", name, "", NULL, 0);
    return -1;
}

/* Moves the inactive logical slot `slot` on c to c's flushed end of WAL (a slot already there
 * stays), and checks that it got there. The advance stops at the flush, so the position read
 * includes asynchronous commits and is flushed first. A missing slot is an error when required,
 * else nothing to do. */
static int slot_to_wal_end(PGconn *c, const char *side, const char *slot, const char *what,
                           int required, char *err, size_t errlen)
{
    sy_lsn to;
    char lsn[32];
    if (wal_end(c, side, 1, &to, err, errlen) != 0)
        return -1;
    sy_lsn_format(to, lsn, sizeof(lsn));
    const char *p[] = {slot, lsn};
    PGresult *r = run(c, side, what,
                      "SELECT CASE WHEN confirmed_flush_lsn >= $2::pg_lsn THEN true ELSE "
                      "(SELECT end_lsn FROM pg_replication_slot_advance(slot_name, $2::pg_lsn)) "
                      ">= $2::pg_lsn END FROM pg_replication_slots WHERE slot_name = $1 "
                      "AND NOT active",
                      2, p, err, errlen);
    if (!r)
        return -1;
    int ok = PQntuples(r) == 1 ? strcmp(PQgetvalue(r, 0, 0), "t") == 0 : !required;
    PQclear(r);
    if (!ok)
        seterr(err, errlen, "%s: the replication slot %s is missing, in use, or could not be "
               "moved to %s", side, slot, lsn);
    return ok ? 0 : -1;
}

int sy_pgctl_reverse_start(PGconn *old_active, PGconn *new_active, const char *new_side,
                           const char *name, const struct sy_pgctl_repl *forward, char *err,
                           size_t errlen)
{
    char buf[128];
    const char *old_side =
        other_side(new_side, old_active, "the old active server", buf, sizeof(buf));
    int fwd = forward_logical(forward);
    if (fwd &&
        (exec_ident(new_active, new_side, "disable the forward subscription", "ALTER SUBSCRIPTION ",
                    forward->subscription, " DISABLE", err, errlen) != 0 ||
         wait_worker_gone(new_active, new_side, forward->subscription, err, errlen) != 0))
        goto undo_forward;
    /* What lies before the switch point came from old_active and must not travel back. */
    if (slot_to_wal_end(new_active, new_side, name, "move the reverse slot to the switch point", 1,
                        err, errlen) == 0 &&
        exec_ident(old_active, old_side, "enable the reverse subscription", "ALTER SUBSCRIPTION ",
                   name, " ENABLE", err, errlen) == 0)
        return 0;
undo_forward:
    if (fwd && forward->enabled)
        exec_ident(new_active, new_side, "enable", "ALTER SUBSCRIPTION ", forward->subscription,
                   " ENABLE", NULL, 0);
    return -1;
}

int sy_pgctl_reverse_setup(PGconn *old_active, PGconn *new_active,
                           const struct sy_pgctl_target *new_active_target, const char *name,
                           const struct sy_pgctl_repl *forward, char *err, size_t errlen)
{
    if (sy_pgctl_reverse_prepare(old_active, new_active, new_active_target, name, err, errlen) !=
        0)
        return -1;
    if (sy_pgctl_reverse_start(old_active, new_active, str(new_active_target->side), name,
                               forward, err, errlen) == 0)
        return 0;
    sy_pgctl_reverse_teardown(old_active, new_active, name, NULL, NULL, 0);
    return -1;
}

/* Everything old_active wrote since the fence came from new_active: the forward slot on
 * old_active skips it, then the forward subscription on new_active is enabled again. */
static int forward_resume(PGconn *old_active, PGconn *new_active, const char *old_side,
                          const char *new_side, const struct sy_pgctl_repl *forward, char *err,
                          size_t errlen)
{
    if (slot_to_wal_end(old_active, old_side, forward->slot,
                        "advance the forward slot past the rollback window", 0, err, errlen) != 0)
        return -1;
    return exec_ident(new_active, new_side, "enable the forward subscription",
                      "ALTER SUBSCRIPTION ", forward->subscription, " ENABLE", err, errlen);
}

int sy_pgctl_slot_skip(PGconn *c, const char *slot, int mark, char *err, size_t errlen)
{
    if (!slot || !slot[0])
        return 0;
    char side[128];
    conn_side(c, "the server", side, sizeof(side));
    if (mark) /* best effort: without it the advance is only slower */
        PQclear(exec_timed(c, "SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM "
                              "pg_catalog.pg_create_logical_replication_slot('switchyard_mark_' "
                              "|| pg_catalog.pg_backend_pid(), 'pgoutput', true)",
                           0, NULL, 1));
    return slot_to_wal_end(c, side, slot, "advance a slot ahead of the switch point", 0, err,
                           errlen);
}

int sy_pgctl_reverse_stop(PGconn *old_active, PGconn *new_active, const char *name,
                          const struct sy_pgctl_repl *forward, char *err, size_t errlen)
{
    char old_side[128], new_side[128];
    conn_side(old_active, "the old active server", old_side, sizeof(old_side));
    conn_side(new_active, "the new active server", new_side, sizeof(new_side));
    if (exec_ident(old_active, old_side, "disable the reverse subscription", "ALTER SUBSCRIPTION ",
                   name, " DISABLE", err, errlen) != 0 ||
        wait_worker_gone(old_active, old_side, name, err, errlen) != 0)
        return -1;
    return forward_logical(forward)
               ? forward_resume(old_active, new_active, old_side, new_side, forward, err, errlen)
               : 0;
}

int sy_pgctl_reverse_teardown(PGconn *old_active, PGconn *new_active, const char *name,
                              const struct sy_pgctl_repl *forward, char *err, size_t errlen)
{
    char old_side[128], new_side[128];
    conn_side(old_active, "the old active server", old_side, sizeof(old_side));
    conn_side(new_active, "the new active server", new_side, sizeof(new_side));
    if (exec_ident(old_active, old_side, "drop the reverse subscription",
                   "DROP SUBSCRIPTION IF EXISTS ", name, "", err, errlen) != 0 ||
        exec_ident(new_active, new_side, "drop the reverse publication",
                   "DROP PUBLICATION IF EXISTS ", name, "", err, errlen) != 0)
        return -1;
    return forward_logical(forward)
               ? forward_resume(old_active, new_active, old_side, new_side, forward, err, errlen)
               : 0;
}

/* ---- recovery of an interrupted switch, and the liveness check at start ---- */

int sy_pgctl_sub_set_enabled(PGconn *c, const char *side, const char *name, int enable,
                             char *err, size_t errlen)
{
    const char *p[] = {name};
    PGresult *r = run(c, side, "look up a subscription",
                      "SELECT subenabled FROM pg_subscription WHERE subname = $1 AND subdbid = "
                      "(SELECT oid FROM pg_database WHERE datname = current_database())",
                      1, p, err, errlen);
    if (!r)
        return -1;
    int exists = PQntuples(r) == 1, enabled = exists && get_bool(r, 0, 0);
    PQclear(r);
    if (!exists)
        return 0;
    if (enable)
        return enabled ? 0
                       : exec_ident(c, side, "enable a subscription", "ALTER SUBSCRIPTION ",
                                    name, " ENABLE", err, errlen);
    if (enabled && exec_ident(c, side, "disable a subscription", "ALTER SUBSCRIPTION ", name,
                              " DISABLE", err, errlen) != 0)
        return -1;
    return wait_worker_gone(c, side, name, err, errlen);
}

int sy_pgctl_roles(PGconn *c, const char *side, int login, const char *keep_role,
                   struct sy_pgctl_fence *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    const char *p[] = {login ? "t" : "f", str(keep_role)};
    PGresult *r = run(c, side, "list the roles",
                      "SELECT rolname FROM pg_catalog.pg_roles WHERE rolcanlogin = $1::bool "
                      "AND rolname <> $2 AND rolname <> current_user AND rolname !~ '^pg_' "
                      "ORDER BY rolname",
                      2, p, err, errlen);
    if (!r)
        return -1;
    int n = PQntuples(r);
    for (int i = 0; i < n && i < SY_FENCE_MAX_ROLES; i++)
        get_str(r, i, 0, out->roles[i], sizeof(out->roles[i]));
    out->nroles = n < SY_FENCE_MAX_ROLES ? n : SY_FENCE_MAX_ROLES;
    PQclear(r);
    return 0;
}

/* ---- checks before anything is paused or fenced (issue 13) ---- */

/* The columns schema_cols reads: schema, table, column, format_type, attnotnull, and whether an
 * insert may leave the column out (a default, an identity or a generated column). */
#define SCHEMA_COLUMNS                                                                             \
    "n.nspname, c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), "          \
    "a.attnotnull, a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '' "
#define SCHEMA_JOIN                                                                                \
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "         \
    "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "                      \
    "AND NOT a.attisdropped "
#define SCHEMA_USER_TABLES                                                                         \
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)' "

/* Runs sql (n parameters) and turns its rows (SCHEMA_COLUMNS) into a malloc'd array. */
static int schema_cols(PGconn *c, const char *side, const char *sql, int n,
                       const char *const *vals, struct sy_schema_col **out, size_t *count,
                       char *err, size_t errlen)
{
    *out = NULL;
    *count = 0;
    PGresult *r = run(c, side, "read the replicated tables' columns", sql, n, vals, err, errlen);
    if (!r)
        return -1;
    size_t rows = (size_t)PQntuples(r);
    struct sy_schema_col *v = calloc(rows + 1, sizeof(*v));
    if (!v) {
        PQclear(r);
        seterr(err, errlen, "%s: out of memory while reading the schema", side);
        return -1;
    }
    for (size_t i = 0; i < rows; i++) {
        get_str(r, (int)i, 0, v[i].schema, sizeof(v[i].schema));
        get_str(r, (int)i, 1, v[i].table, sizeof(v[i].table));
        get_str(r, (int)i, 2, v[i].column, sizeof(v[i].column));
        get_str(r, (int)i, 3, v[i].type, sizeof(v[i].type));
        v[i].not_null = get_bool(r, (int)i, 4);
        v[i].has_default = get_bool(r, (int)i, 5);
    }
    PQclear(r);
    *out = v;
    *count = rows;
    return 0;
}

/* What the sender publishes: the publications `subscription` on rcv subscribes to (their
 * column lists on PostgreSQL 15 and later), or every table a FOR ALL TABLES publication would
 * send (subscription NULL). Generated columns are not sent. *found 0: no such subscription. */
static int schema_sent(PGconn *snd, PGconn *rcv, const char *snd_side, const char *rcv_side,
                       const char *subscription, struct sy_schema_col **out, size_t *count,
                       int *found, char *err, size_t errlen)
{
    *found = 1;
    if (!subscription)
        return schema_cols(snd, snd_side,
                           "SELECT " SCHEMA_COLUMNS SCHEMA_JOIN
                           "WHERE c.relkind = 'r' AND c.relpersistence = 'p' "
                           "AND c.oid >= 16384 AND a.attgenerated = '' AND " SCHEMA_USER_TABLES,
                           0, NULL, out, count, err, errlen);
    const char *p[] = {subscription};
    PGresult *r = run(rcv, rcv_side, "read the subscription's publications",
                      "SELECT subpublications::text FROM pg_catalog.pg_subscription "
                      "WHERE subname = $1 AND subdbid = (SELECT oid FROM pg_catalog.pg_database "
                      "WHERE datname = current_database())",
                      1, p, err, errlen);
    if (!r)
        return -1;
    char pubs[1024] = "";
    *found = PQntuples(r) == 1;
    if (*found)
        get_str(r, 0, 0, pubs, sizeof(pubs));
    PQclear(r);
    if (!*found) {
        *out = NULL;
        *count = 0;
        return 0;
    }
    const char *q[] = {pubs};
    return schema_cols(snd, snd_side,
                       PQserverVersion(snd) >= 150000
                           ? "SELECT DISTINCT " SCHEMA_COLUMNS SCHEMA_JOIN
                             "JOIN pg_catalog.pg_publication_tables p ON p.schemaname = n.nspname "
                             "AND p.tablename = c.relname AND a.attname = ANY (p.attnames) "
                             "WHERE p.pubname = ANY ($1::text[]) AND a.attgenerated = ''"
                           : "SELECT DISTINCT " SCHEMA_COLUMNS SCHEMA_JOIN
                             "JOIN pg_catalog.pg_publication_tables p ON p.schemaname = n.nspname "
                             "AND p.tablename = c.relname "
                             "WHERE p.pubname = ANY ($1::text[]) AND a.attgenerated = ''",
                       1, q, out, count, err, errlen);
}

/* Tables a FOR ALL TABLES publication on c would publish that have no replica identity: once
 * published, every UPDATE and DELETE on them fails on c (the application's and the apply
 * worker's alike). Appends one problem per table (up to three) to out; returns how many. */
static int identity_problems(PGconn *c, const char *side, char *out, size_t cap, char *err,
                             size_t errlen)
{
    PGresult *r = run(c, side, "read the tables' replica identities",
                      "SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c "
                      "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                      "WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND c.oid >= 16384 AND "
                      "n.nspname NOT IN ('pg_catalog', 'information_schema') "
                      "AND n.nspname !~ '^pg_(toast|temp)' AND (c.relreplident = 'n' OR "
                      "(c.relreplident = 'd' AND NOT EXISTS (SELECT FROM pg_catalog.pg_index i "
                      "WHERE i.indrelid = c.oid AND i.indisprimary)) OR "
                      "(c.relreplident = 'i' AND NOT EXISTS (SELECT FROM pg_catalog.pg_index i "
                      "WHERE i.indrelid = c.oid AND i.indisreplident))) ORDER BY 1",
                      0, NULL, err, errlen);
    if (!r)
        return -1;
    int n = PQntuples(r);
    for (int i = 0; i < n && i < 3; i++) {
        size_t len = strlen(out);
        snprintf(out + len, cap - len,
                 "%stable %s on %s has no replica identity (no primary key): published by the "
                 "reverse replication (FOR ALL TABLES), every UPDATE and DELETE on it would fail "
                 "on %s; add a primary key or ALTER TABLE %s REPLICA IDENTITY FULL",
                 len ? "; " : "", PQgetvalue(r, i, 0), side, side, PQgetvalue(r, i, 0));
    }
    PQclear(r);
    return n;
}

int sy_pgctl_schema_check(PGconn *snd, PGconn *rcv, const char *snd_side, const char *rcv_side,
                          const char *subscription, char *err, size_t errlen)
{
    struct sy_schema_col *s = NULL, *r = NULL;
    size_t ns = 0, nr = 0;
    int found = 0;
    if (schema_sent(snd, rcv, snd_side, rcv_side, subscription, &s, &ns, &found, err, errlen) != 0)
        return -1;
    if (!found)
        return 0;
    if (schema_cols(rcv, rcv_side,
                    "SELECT " SCHEMA_COLUMNS SCHEMA_JOIN
                    "WHERE c.relkind IN ('r', 'p') AND " SCHEMA_USER_TABLES,
                    0, NULL, &r, &nr, err, errlen) != 0) {
        free(s);
        return -1;
    }
    char problems[1600];
    int n = sy_schema_compare(s, ns, r, nr, snd_side, rcv_side, problems, sizeof(problems));
    free(s);
    free(r);
    if (!subscription) {
        int k = identity_problems(snd, snd_side, problems, sizeof(problems), err, errlen);
        if (k < 0)
            return -1;
        n += k;
    }
    if (n == 0)
        return 0;
    seterr(err, errlen, "%d schema problem%s for replication from %s to %s: %s", n,
           n == 1 ? "" : "s", snd_side, rcv_side, problems);
    return 1;
}

int sy_pgctl_sequences_check(PGconn *src, PGconn *dst, const char *src_side,
                             const char *dst_side, char *err, size_t errlen)
{
    PGresult *s = run(src, src_side, "read the sequences",
                      "SELECT schemaname || '.' || sequencename, data_type::text, "
                      "last_value::text FROM pg_catalog.pg_sequences ORDER BY 1",
                      0, NULL, err, errlen);
    if (!s)
        return -1;
    PGresult *d = run(dst, dst_side, "read the sequences",
                      "SELECT schemaname || '.' || sequencename, data_type::text, "
                      "min_value::text, max_value::text FROM pg_catalog.pg_sequences ORDER BY 1",
                      0, NULL, err, errlen);
    if (!d) {
        PQclear(s);
        return -1;
    }
    char problems[1200] = "";
    int n = 0;
    for (int i = 0, j = 0; i < PQntuples(s); i++) {
        const char *name = PQgetvalue(s, i, 0);
        while (j < PQntuples(d) && strcmp(PQgetvalue(d, j, 0), name) < 0)
            j++;
        char one[400] = "";
        if (j >= PQntuples(d) || strcmp(PQgetvalue(d, j, 0), name) != 0) {
            snprintf(one, sizeof(one), "sequence %s is on %s but not on %s: the sequences step "
                     "(inside the pause, after the fence) could not set it; create it on %s "
                     "(CREATE SEQUENCE %s AS %s)", name, src_side, dst_side, dst_side, name,
                     PQgetvalue(s, i, 1));
        } else if (!sy_schema_type_accepts(PQgetvalue(s, i, 1), PQgetvalue(d, j, 1))) {
            snprintf(one, sizeof(one), "sequence %s is %s on %s but %s on %s; make it %s on %s "
                     "(ALTER SEQUENCE %s AS %s)", name, PQgetvalue(s, i, 1), src_side,
                     PQgetvalue(d, j, 1), dst_side, PQgetvalue(s, i, 1), dst_side, name,
                     PQgetvalue(s, i, 1));
        } else if (!PQgetisnull(s, i, 2) &&
                   (strtoll(PQgetvalue(s, i, 2), NULL, 10) > strtoll(PQgetvalue(d, j, 3), NULL, 10) ||
                    strtoll(PQgetvalue(s, i, 2), NULL, 10) < strtoll(PQgetvalue(d, j, 2), NULL, 10))) {
            snprintf(one, sizeof(one), "sequence %s is at %s on %s, outside %s..%s on %s; widen "
                     "its MINVALUE/MAXVALUE on %s", name, PQgetvalue(s, i, 2), src_side,
                     PQgetvalue(d, j, 2), PQgetvalue(d, j, 3), dst_side, dst_side);
        }
        if (!one[0])
            continue;
        size_t len = strlen(problems);
        if (n++ < 3)
            snprintf(problems + len, sizeof(problems) - len, "%s%s", len ? "; " : "", one);
    }
    PQclear(s);
    PQclear(d);
    if (n == 0)
        return 0;
    seterr(err, errlen, "%d sequence problem%s from %s to %s: %s", n, n == 1 ? "" : "s", src_side,
           dst_side, problems);
    return 1;
}

/* The user a conninfo string logs in as ("" when it names none). */
static void conninfo_user(const char *conninfo, char *out, size_t cap)
{
    out[0] = '\0';
    PQconninfoOption *o = PQconninfoParse(conninfo, NULL);
    for (PQconninfoOption *x = o; x && x->keyword; x++)
        if (strcmp(x->keyword, "user") == 0 && x->val)
            snprintf(out, cap, "%s", x->val);
    PQconninfoFree(o);
}

int sy_pgctl_sub_roles_check(PGconn *pub, PGconn *sub, const char *pub_side, const char *sub_side,
                             const char *subscription, char *err, size_t errlen)
{
    const char *p[] = {subscription};
    PGresult *r = run(sub, sub_side, "read the subscription's roles",
                      "SELECT o.rolname, o.rolcanlogin, s.subconninfo "
                      "FROM pg_catalog.pg_subscription s "
                      "JOIN pg_catalog.pg_roles o ON o.oid = s.subowner WHERE s.subname = $1 "
                      "AND s.subdbid = (SELECT oid FROM pg_catalog.pg_database "
                      "WHERE datname = current_database())",
                      1, p, err, errlen);
    if (!r)
        return -1;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return 0; /* no such subscription: the replication check says so */
    }
    char owner[64], user[64];
    get_str(r, 0, 0, owner, sizeof(owner));
    int owner_login = get_bool(r, 0, 1);
    conninfo_user(PQgetvalue(r, 0, 2), user, sizeof(user));
    PQclear(r);
    if (!owner_login) {
        seterr(err, errlen, "role %s owns subscription %s on %s but cannot log in (NOLOGIN), so "
               "its apply worker cannot start; ALTER ROLE %s LOGIN on %s (a fence never takes "
               "LOGIN from a subscription's owner now)", owner, subscription, sub_side, owner,
               sub_side);
        return 1;
    }
    if (!user[0])
        return 0; /* libpq's default user: nothing to look up by name */
    const char *q[] = {user};
    r = run(pub, pub_side, "read the replication role",
            "SELECT rolcanlogin, rolreplication OR rolsuper FROM pg_catalog.pg_roles "
            "WHERE rolname = $1",
            1, q, err, errlen);
    if (!r)
        return -1;
    int exists = PQntuples(r) == 1, login = exists && get_bool(r, 0, 0),
        repl = exists && get_bool(r, 0, 1);
    PQclear(r);
    if (exists && login && repl)
        return 0;
    seterr(err, errlen, "subscription %s on %s connects to %s as role %s, which %s on %s; %s",
           subscription, sub_side, pub_side, user,
           !exists ? "does not exist" : !login ? "cannot log in (NOLOGIN)" : "has neither "
           "REPLICATION nor SUPERUSER", pub_side,
           !exists ? "create it there" : !login ? "ALTER ROLE ... LOGIN there" : "ALTER ROLE ... "
           "REPLICATION there");
    return 1;
}

int sy_pgctl_fence_check(PGconn *c, const char *side, const char *keep_role, char *kept,
                         size_t keptcap, char *err, size_t errlen)
{
    const char *p[] = {str(keep_role)};
    PGresult *r = run(c, side, "read the roles a fence would change",
                      "SELECT count(*) FILTER (WHERE NOT " FENCE_REPLICATION_ROLE "), "
                      "string_agg(rolname, ', ' ORDER BY rolname) FILTER (WHERE "
                      FENCE_REPLICATION_ROLE "), "
                      "(SELECT string_agg(DISTINCT a.usename || ' (pid ' || a.pid || ')', ', ') "
                      " FROM pg_catalog.pg_stat_activity a JOIN pg_catalog.pg_roles k "
                      " ON k.rolname = a.usename WHERE a.backend_type = 'client backend' "
                      " AND a.pid <> pg_catalog.pg_backend_pid() AND k.rolname <> $1 "
                      " AND k.rolname <> current_user AND " FENCE_REPLICATION_ROLE_OF("k") ") "
                      "FROM pg_catalog.pg_roles WHERE rolcanlogin AND rolname <> $1 "
                      "AND rolname <> current_user",
                      1, p, err, errlen);
    if (!r)
        return -1;
    long n = atol(PQgetvalue(r, 0, 0));
    get_str(r, 0, 1, kept, keptcap);
    char clients[300];
    get_str(r, 0, 2, clients, sizeof(clients));
    PQclear(r);
    if (n > SY_FENCE_MAX_ROLES) {
        seterr(err, errlen, "%s: %ld roles can log in, more than the %d a fence can record; make "
               "the roles that need no login NOLOGIN", side, n, SY_FENCE_MAX_ROLES);
        return 1;
    }
    if (clients[0]) {
        seterr(err, errlen, "%s: client sessions are logged in as roles that replication depends "
               "on (%s), which the fence leaves able to log in so that replication keeps "
               "running: after the fence they could still write to %s; give replication roles "
               "of their own (used by nothing else), or end those sessions", side, clients,
               side);
        return 1;
    }
    return 0;
}

int sy_pgctl_sub_health(PGconn *c, const char *side, const char *subscription,
                        struct sy_pgctl_subhealth *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    const char *p[] = {subscription};
    int stats = PQserverVersion(c) >= 150000;
    PGresult *r = run(c, side, "read the subscription's health",
                      stats ? "SELECT s.subenabled, o.rolname, o.rolcanlogin, "
                              "(SELECT count(*) FROM pg_catalog.pg_stat_subscription w "
                              " WHERE w.subid = s.oid AND w.relid IS NULL AND w.pid IS NOT NULL), "
                              "COALESCE(t.apply_error_count, 0), COALESCE(t.sync_error_count, 0), "
                              "(SELECT string_agg(r.srrelid::regclass::text, ', ') "
                              " FROM pg_catalog.pg_subscription_rel r WHERE r.srsubid = s.oid "
                              " AND r.srsubstate <> 'r') "
                              "FROM pg_catalog.pg_subscription s "
                              "JOIN pg_catalog.pg_roles o ON o.oid = s.subowner "
                              "LEFT JOIN pg_catalog.pg_stat_subscription_stats t ON t.subid = s.oid "
                              "WHERE s.subname = $1 AND s.subdbid = (SELECT oid FROM "
                              "pg_catalog.pg_database WHERE datname = current_database())"
                            : "SELECT s.subenabled, o.rolname, o.rolcanlogin, "
                              "(SELECT count(*) FROM pg_catalog.pg_stat_subscription w "
                              " WHERE w.subid = s.oid AND w.relid IS NULL AND w.pid IS NOT NULL), "
                              "0, 0, (SELECT string_agg(r.srrelid::regclass::text, ', ') "
                              " FROM pg_catalog.pg_subscription_rel r WHERE r.srsubid = s.oid "
                              " AND r.srsubstate <> 'r') "
                              "FROM pg_catalog.pg_subscription s "
                              "JOIN pg_catalog.pg_roles o ON o.oid = s.subowner "
                              "WHERE s.subname = $1 AND s.subdbid = (SELECT oid FROM "
                              "pg_catalog.pg_database WHERE datname = current_database())",
                      1, p, err, errlen);
    if (!r)
        return -1;
    if (PQntuples(r) == 1) {
        out->found = 1;
        out->enabled = get_bool(r, 0, 0);
        get_str(r, 0, 1, out->owner, sizeof(out->owner));
        out->owner_login = get_bool(r, 0, 2);
        out->worker = atoi(PQgetvalue(r, 0, 3)) > 0;
        out->apply_errors = strtoll(PQgetvalue(r, 0, 4), NULL, 10);
        out->sync_errors = strtoll(PQgetvalue(r, 0, 5), NULL, 10);
        get_str(r, 0, 6, out->not_ready, sizeof(out->not_ready));
    }
    PQclear(r);
    return 0;
}
