/* Shadow rechecks: the thread, its queue and its connections. See shadow_recheck.h. */
#include "shadow_recheck.h"

#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "log.h"
#include "worker.h"
#include "switch.h"
#include "switchover/pgctl.h"

#define CONNS_MAX 4            /* connections kept, one per (side, database) */
#define CONN_IDLE_MS 60000     /* a kept connection unused this long is closed */
#define CONNECT_TIMEOUT_S 2    /* also what a stop may wait for */
#define SLACK_MS 2000          /* beyond statement_timeout, for the round trips around it */
#define POLL_SLICE_MS 100      /* how often a wait looks at the stop flag */


struct rc_job {
    struct sy_work work; /* first */
    enum sy_side side;
    struct sy_ctl_target t;
    char dbname[64], role[64];
    uint64_t timeout_ms;
    int live_error;
    void *data;
    /* results */
    enum sy_recheck_verdict verdict;
    char detail[300];
    size_t sql_len;
    char sql[]; /* NUL-terminated */
};

struct rc_conn {
    PGconn *c;
    enum sy_side side;
    char dbname[64];
    struct sy_ctl_target t;
    uint64_t used_ms;
};

static struct {
    struct sy_worker w;
    struct sy_proxy *p;
    sy_recheck_done_fn done_fn;
    unsigned pending;                       /* submitted, not yet reported (loop only) */
    struct rc_conn conns[CONNS_MAX];        /* the thread's */
} rc;

const char *sy_recheck_verdict_name(enum sy_recheck_verdict v)
{
    switch (v) {
    case SY_RECHECK_SAME: return "same";
    case SY_RECHECK_DIFFERS: return "differs";
    case SY_RECHECK_INCONCLUSIVE: return "inconclusive";
    default: return "unknown";
    }
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void job_free(struct rc_job *j)
{
    if (!j)
        return;
    free(j->data);
    OPENSSL_cleanse(&j->t, sizeof(j->t));
    free(j);
}

/* ---- the thread's connections ---- */

static void conn_close(struct rc_conn *k)
{
    PQfinish(k->c);
    OPENSSL_cleanse(&k->t, sizeof(k->t));
    memset(k, 0, sizeof(*k));
}

/* A connection to the job's side and database as its control user: a kept one when its
 * settings are the job's, else a new one (in the slot of the least recently used). NULL, with
 * err set, when it cannot log in. */
static PGconn *conn_get(const struct rc_job *j, char *err, size_t errlen)
{
    struct rc_conn *slot = &rc.conns[0];
    for (int i = 0; i < CONNS_MAX; i++) {
        struct rc_conn *k = &rc.conns[i];
        if (k->c && k->side == j->side && strcmp(k->dbname, j->dbname) == 0) {
            if (PQstatus(k->c) == CONNECTION_OK && memcmp(&k->t, &j->t, sizeof(j->t)) == 0) {
                k->used_ms = mono_ms();
                return k->c;
            }
            conn_close(k); /* broken, or the config changed */
        }
        if (!k->c || (slot->c && k->used_ms < slot->used_ms))
            slot = k;
    }
    if (slot->c)
        conn_close(slot);
    struct sy_pgctl_target t = sy_ctl_target_of(&j->t, j->side, j->dbname, CONNECT_TIMEOUT_S);
    PGconn *c = sy_pgctl_connect(&t, err, errlen);
    if (!c)
        return NULL;
    slot->c = c;
    slot->side = j->side;
    snprintf(slot->dbname, sizeof(slot->dbname), "%s", j->dbname);
    slot->t = j->t;
    slot->used_ms = mono_ms();
    return c;
}

static void conn_forget(PGconn *c)
{
    for (int i = 0; i < CONNS_MAX; i++)
        if (rc.conns[i].c == c)
            conn_close(&rc.conns[i]);
}

static void conns_close_idle(int all)
{
    uint64_t now = mono_ms();
    for (int i = 0; i < CONNS_MAX; i++)
        if (rc.conns[i].c && (all || now - rc.conns[i].used_ms >= CONN_IDLE_MS))
            conn_close(&rc.conns[i]);
}

/* ---- one statement, with a deadline ---- */

/* An answer, summarised: enough to tell whether two runs of a statement answered alike. */
struct rc_answer {
    int error;          /* an ErrorResponse came */
    char sqlstate[6];   /* the first error's */
    char tag[64];       /* the last command tag */
    uint64_t nrows;
    uint64_t hash;      /* of every cell of every row, in order */
};

#define FNV_PRIME 1099511628211ull

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * FNV_PRIME;
    return h;
}

static void answer_row(struct rc_answer *a, const PGresult *r)
{
    int32_t ncols = PQnfields(r);
    a->hash = fnv(a->hash, &ncols, sizeof(ncols));
    for (int i = 0; i < ncols; i++) {
        int32_t len = PQgetisnull(r, 0, i) ? -1 : PQgetlength(r, 0, i);
        a->hash = fnv(a->hash, &len, sizeof(len));
        if (len > 0)
            a->hash = fnv(a->hash, PQgetvalue(r, 0, i), (size_t)len);
    }
    a->nrows++;
}

static int answers_differ(const struct rc_answer *a, const struct rc_answer *b)
{
    return a->error != b->error || strcmp(a->sqlstate, b->sqlstate) != 0 ||
           strcmp(a->tag, b->tag) != 0 || a->nrows != b->nrows || a->hash != b->hash;
}

/* Waits until libpq has a whole result to give. Returns 0, or -1 at the deadline, at a stop, or
 * when the connection failed. */
static int wait_result(PGconn *c, uint64_t deadline)
{
    while (PQisBusy(c)) {
        uint64_t now = mono_ms();
        if (now >= deadline || sy_worker_stopping(&rc.w))
            return -1;
        uint64_t left = deadline - now;
        struct pollfd pfd = {.fd = PQsocket(c), .events = POLLIN};
        if (poll(&pfd, 1, (int)(left < POLL_SLICE_MS ? left : POLL_SLICE_MS)) < 0)
            return -1;
        if (!PQconsumeInput(c))
            return -1;
    }
    return 0;
}

/*
 * Runs sql (the extended protocol, no parameters) and summarises its answer into a, reading
 * rows one at a time so that a large answer takes no memory. Returns 0 when the server answered
 * (success or error), or -1 when the connection failed, the deadline passed or the thread is
 * stopping (the connection is then unusable: the caller drops it).
 */
static int run(PGconn *c, const char *sql, uint64_t deadline, struct rc_answer *a)
{
    memset(a, 0, sizeof(*a));
    a->hash = 14695981039346656037ull;
    if (!PQsendQueryParams(c, sql, 0, NULL, NULL, NULL, NULL, 0))
        return -1;
    PQsetSingleRowMode(c);
    int broken = 0;
    for (;;) {
        if (wait_result(c, deadline) != 0) {
            shutdown(PQsocket(c), SHUT_RDWR); /* libpq sees the end and marks it bad */
            return -1;
        }
        PGresult *r = PQgetResult(c);
        if (!r)
            break;
        switch (PQresultStatus(r)) {
        case PGRES_SINGLE_TUPLE: answer_row(a, r); break;
        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
        case PGRES_EMPTY_QUERY:
            snprintf(a->tag, sizeof(a->tag), "%s", PQcmdStatus(r));
            break;
        case PGRES_FATAL_ERROR:
            if (!a->error) {
                const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
                snprintf(a->sqlstate, sizeof(a->sqlstate), "%s", st ? st : "");
            }
            a->error = 1;
            break;
        default: /* COPY, or anything else a recheck cannot follow */
            broken = 1;
            break;
        }
        PQclear(r);
        if (broken) {
            shutdown(PQsocket(c), SHUT_RDWR);
            return -1;
        }
    }
    return PQstatus(c) == CONNECTION_OK || a->error ? 0 : -1;
}

/* Runs a statement of the recheck's own that must succeed. Returns 0 or -1 (why in err). */
static int step(PGconn *c, const char *sql, const char *what, uint64_t deadline, char *err,
                size_t errlen)
{
    struct rc_answer a;
    if (run(c, sql, deadline, &a) != 0) {
        snprintf(err, errlen, "%s: no answer in time or the connection failed", what);
        return -1;
    }
    if (a.error) {
        snprintf(err, errlen, "%s failed (SQLSTATE %s)", what, a.sqlstate);
        return -1;
    }
    return 0;
}

/* Errors that say something about the recheck's circumstances rather than the statement's
 * answer: the read-only transaction, a timeout or cancel, resources, locks, the server. */
static int circumstantial(const char *sqlstate)
{
    static const char *const classes[] = {"08", "25", "40", "53", "55", "57", "58", "XX", "0A"};
    for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
        if (strncmp(sqlstate, classes[i], 2) == 0)
            return 1;
    return sqlstate[0] == 0;
}

/* Runs the statement once more; 0 when a is an answer to compare, -1 (why in err) if not. */
static int run_statement(PGconn *c, const struct rc_job *j, int n, uint64_t deadline,
                         struct rc_answer *a, char *err, size_t errlen)
{
    if (run(c, j->sql, deadline, a) != 0) {
        snprintf(err, errlen, "run %d: no answer in time (statement_timeout %llu ms) or the "
                 "connection failed", n, (unsigned long long)j->timeout_ms);
        return -1;
    }
    if (a->error && circumstantial(a->sqlstate)) {
        snprintf(err, errlen, "run %d failed with SQLSTATE %s%s", n, a->sqlstate,
                 strcmp(a->sqlstate, "57014") == 0 ? " (shadow_recheck_timeout, or a cancel)" : "");
        return -1;
    }
    if (a->error && !j->live_error) {
        snprintf(err, errlen, "run %d failed with SQLSTATE %s where blue's live answer did not "
                 "(several statements in one string, or the session's settings matter)", n,
                 a->sqlstate);
        return -1;
    }
    return 0;
}

/* The recheck's transaction on c. Returns the verdict; detail says why. */
static enum sy_recheck_verdict recheck(PGconn *c, struct rc_job *j)
{
    uint64_t deadline = mono_ms() + 2 * j->timeout_ms + SLACK_MS;
    char sql[256], *err = j->detail;
    size_t errlen = sizeof(j->detail);
    if (step(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "BEGIN", deadline, err,
             errlen) != 0)
        return SY_RECHECK_INCONCLUSIVE;
    char *role = PQescapeIdentifier(c, j->role, strlen(j->role));
    int rc_role = -1;
    if (role && strlen(role) < sizeof(sql) - 20) {
        snprintf(sql, sizeof(sql), "SET LOCAL ROLE %s", role);
        rc_role = step(c, sql, "SET LOCAL ROLE (the control user must be able to take the "
                       "session's role)", deadline, err, errlen);
    } else {
        snprintf(err, errlen, "the session's role name could not be quoted");
    }
    PQfreemem(role);
    enum sy_recheck_verdict v = SY_RECHECK_INCONCLUSIVE;
    struct rc_answer a, b;
    snprintf(sql, sizeof(sql), "SET LOCAL statement_timeout = %llu",
             (unsigned long long)j->timeout_ms);
    if (rc_role == 0 && step(c, sql, "SET LOCAL statement_timeout", deadline, err, errlen) == 0 &&
        step(c, "SAVEPOINT sy_recheck", "SAVEPOINT", deadline, err, errlen) == 0 &&
        run_statement(c, j, 1, deadline, &a, err, errlen) == 0 &&
        (!a.error ||
         step(c, "ROLLBACK TO SAVEPOINT sy_recheck", "ROLLBACK TO SAVEPOINT", deadline, err,
              errlen) == 0) &&
        run_statement(c, j, 2, deadline, &b, err, errlen) == 0) {
        v = answers_differ(&a, &b) ? SY_RECHECK_DIFFERS : SY_RECHECK_SAME;
        snprintf(err, errlen, "%llu and %llu rows, %s%s and %s%s", (unsigned long long)a.nrows, (unsigned long long)b.nrows,
                 a.error ? "error " : "", a.error ? a.sqlstate : "ok",
                 b.error ? "error " : "", b.error ? b.sqlstate : "ok");
    }
    /* Whatever happened, nothing of it stays: the transaction, and advisory locks a statement
     * took at session level. */
    if (PQstatus(c) == CONNECTION_OK) {
        char ignored[64];
        uint64_t end = mono_ms() + SLACK_MS;
        if (step(c, "ROLLBACK", "ROLLBACK", end, ignored, sizeof(ignored)) != 0 ||
            step(c, "SELECT pg_advisory_unlock_all()", "unlock", end, ignored,
                 sizeof(ignored)) != 0)
            shutdown(PQsocket(c), SHUT_RDWR);
    }
    return v;
}

static void job_run(struct sy_worker *w, struct sy_work *item)
{
    (void)w;
    struct rc_job *j = (struct rc_job *)item;
    char err[300];
    PGconn *c = conn_get(j, err, sizeof(err));
    if (!c) {
        j->verdict = SY_RECHECK_INCONCLUSIVE;
        snprintf(j->detail, sizeof(j->detail), "%s", err);
        return;
    }
    j->verdict = recheck(c, j);
    if (PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE)
        conn_forget(c);
}

/* Connections nobody used for a while are closed when the thread has nothing to do. */
static void thread_idle(struct sy_worker *w)
{
    (void)w;
    conns_close_idle(0);
}

static void thread_exit(struct sy_worker *w)
{
    (void)w;
    conns_close_idle(1);
}

static void job_drop(struct sy_work *item) { job_free((struct rc_job *)item); }

/* ---- the loop's side ---- */

static void job_done(struct sy_worker *w, struct sy_work *item)
{
    (void)w;
    struct rc_job *j = (struct rc_job *)item;
    rc.pending--;
    void *data = j->data;
    j->data = NULL;
    rc.done_fn(rc.p, data, j->verdict, j->detail);
    job_free(j);
}

int sy_recheck_start(struct sy_proxy *p, sy_recheck_done_fn done)
{
    rc.p = p;
    rc.done_fn = done;
    rc.w.run = job_run;
    rc.w.done = job_done;
    rc.w.drop = job_drop;
    rc.w.idle = thread_idle;
    rc.w.idle_ms = CONN_IDLE_MS / 4;
    rc.w.exit = thread_exit;
    return sy_worker_start(&rc.w, p->loop, "shadow recheck");
}

int sy_recheck_submit(struct sy_proxy *p, const struct sy_recheck_req *req)
{
    if (!rc.w.started || rc.pending >= SY_RECHECK_MAX_PENDING)
        return -1;
    struct rc_job *j = calloc(1, sizeof(*j) + req->sql_len + 1);
    if (!j)
        return -1;
    j->side = req->side;
    sy_ctl_target_fill(&j->t, &p->cfg, req->side); /* its dbname is the session's, below */
    snprintf(j->dbname, sizeof(j->dbname), "%s", req->database);
    snprintf(j->role, sizeof(j->role), "%s", req->role);
    j->timeout_ms = p->cfg.shadow_recheck_timeout_ms;
    j->live_error = req->live_error;
    memcpy(j->sql, req->sql, req->sql_len);
    j->sql_len = req->sql_len;
    j->data = req->data;
    rc.pending++;
    sy_worker_submit(&rc.w, &j->work);
    return 0;
}

void sy_recheck_stop(void)
{
    sy_worker_stop(&rc.w);
    rc.pending = 0;
}
