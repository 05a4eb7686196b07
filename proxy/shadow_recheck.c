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
#include "switchover/shadow_lag.h"

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

/* The connections one thread keeps. */
struct rc_pool {
    struct rc_conn conns[CONNS_MAX];
};

static struct {
    struct sy_worker w;
    struct sy_proxy *p;
    sy_recheck_done_fn done_fn;
    unsigned pending;                       /* submitted, not yet reported (loop only) */
    struct rc_pool pool;                    /* the thread's */
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

/* The worker whose thread this is (rechecks or lag checks): its stop flag ends long waits. */
static _Thread_local struct sy_worker *cur_w;

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

/* A connection of pool to side and database dbname as side's control user (settings t): a kept
 * one when its settings are t, else a new one (in the slot of the least recently used). NULL,
 * with err set, when it cannot log in. */
static PGconn *conn_get(struct rc_pool *pool, enum sy_side side, const char *dbname,
                        const struct sy_ctl_target *t, char *err, size_t errlen)
{
    struct rc_conn *slot = &pool->conns[0];
    for (int i = 0; i < CONNS_MAX; i++) {
        struct rc_conn *k = &pool->conns[i];
        if (k->c && k->side == side && strcmp(k->dbname, dbname) == 0) {
            if (PQstatus(k->c) == CONNECTION_OK && memcmp(&k->t, t, sizeof(*t)) == 0) {
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
    struct sy_pgctl_target pt = sy_ctl_target_of(t, side, dbname, CONNECT_TIMEOUT_S);
    PGconn *c = sy_pgctl_connect(&pt, err, errlen);
    if (!c)
        return NULL;
    slot->c = c;
    slot->side = side;
    snprintf(slot->dbname, sizeof(slot->dbname), "%s", dbname);
    slot->t = *t;
    slot->used_ms = mono_ms();
    return c;
}

static void conn_forget(struct rc_pool *pool, PGconn *c)
{
    for (int i = 0; i < CONNS_MAX; i++)
        if (pool->conns[i].c == c)
            conn_close(&pool->conns[i]);
}

/* Keeps c in pool for the next job only when it is open and outside a transaction. */
static void conn_keep_if_clean(struct rc_pool *pool, PGconn *c)
{
    if (PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE)
        conn_forget(pool, c);
}

static void conns_close_idle(struct rc_pool *pool, int all)
{
    uint64_t now = mono_ms();
    for (int i = 0; i < CONNS_MAX; i++)
        if (pool->conns[i].c && (all || now - pool->conns[i].used_ms >= CONN_IDLE_MS))
            conn_close(&pool->conns[i]);
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

/* Waits until libpq has a whole result to give. Returns 0, or -1 at the deadline, at a stop of
 * worker w, or when the connection failed. */
static int wait_result(struct sy_worker *w, PGconn *c, uint64_t deadline)
{
    while (PQisBusy(c)) {
        uint64_t now = mono_ms();
        if (now >= deadline || sy_worker_stopping(w))
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
        if (wait_result(cur_w, c, deadline) != 0) {
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
    struct rc_job *j = (struct rc_job *)item;
    cur_w = w;
    char err[300];
    PGconn *c = conn_get(&rc.pool, j->side, j->dbname, &j->t, err, sizeof(err));
    if (!c) {
        j->verdict = SY_RECHECK_INCONCLUSIVE;
        snprintf(j->detail, sizeof(j->detail), "%s", err);
        return;
    }
    j->verdict = recheck(c, j);
    conn_keep_if_clean(&rc.pool, c);
}

/* Both threads (rechecks, lag checks): w->data is the thread's pool. Connections nobody used
 * for a while are closed when the thread has nothing to do, and all of them as it ends. */
static void pool_idle(struct sy_worker *w) { conns_close_idle(w->data, 0); }
static void pool_exit(struct sy_worker *w) { conns_close_idle(w->data, 1); }

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
    rc.w.idle = pool_idle;
    rc.w.idle_ms = CONN_IDLE_MS / 4;
    rc.w.exit = pool_exit;
    rc.w.data = &rc.pool;
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

static void lag_stop(void);

void sy_recheck_stop(void)
{
    sy_worker_stop(&rc.w);
    rc.pending = 0;
    lag_stop();
}

/* ==== Lag checks (shadow_recheck.h; the rule: switchover/shadow_lag.h) ==== */

#define LAG_RUNS 8            /* runs of divergences one waiting check keeps */
#define LAG_POLL_MS 5         /* how often green's position is read while waiting for it */
#define LAG_REPL_TTL_MS 30000 /* how long the replication's description read is kept */
#define FNV_OFFSET 14695981039346656037ull

struct lag_item {
    struct lag_item *next; /* the loop's queue */
    /* The key: divergences with the same are decided by one check. */
    enum sy_side side;
    uint64_t fp_hash, exec_hash, blue_digest, green_digest, epoch;
    /* What to run (the thread reads it while the item is submitted). */
    char database[64], role[64];
    int live_error;
    struct sy_shadow_accept *accepts; /* in the same block */
    size_t naccepts;
    char *sql;                        /* in the same block, NUL-terminated */
    uint8_t *params;                  /* in the same block; NULL: none (a simple Query) */
    size_t params_len;
    /* For the verdict. */
    char fp[SY_SHADOW_FP_TEXT];
    struct sy_shadow_example ex;
    struct sy_lag_run runs[LAG_RUNS];
    size_t nruns;
    size_t bytes;                     /* the block's size */
    /* The thread's. */
    enum sy_lag_verdict verdict;
    int decided;
    int retried;                      /* a round ended RETRY: B2 runs twice from now on */
    char detail[200];
};

struct lag_job {
    struct sy_work work; /* first */
    enum sy_side side;   /* the live side: B2 and B3 run there, G2 on the other */
    char dbname[64];
    struct sy_ctl_target t[2]; /* by side */
    uint64_t timeout_ms;
    size_t n;
    struct lag_item *items[SY_LAG_BATCH];
    /* What the batch cost (for the log at debug): rounds, and milliseconds spent in blue's
     * first transactions, waiting for green, green's and blue's second. */
    unsigned rounds;
    uint64_t ms_b2, ms_wait, ms_g2, ms_b3;
};

static struct {
    struct sy_worker w;
    struct sy_proxy *p;
    sy_lag_done_fn done_fn;
    struct lag_item *head, *tail; /* waiting for a check (loop) */
    size_t count, bytes;          /* waiting; bytes of waiting and running (loop) */
    int busy;                     /* a batch is on the thread (loop) */
    struct rc_pool pool;          /* the thread's */
    char repl_db[64];             /* the thread's: the replication, as last read */
    enum sy_side repl_side;
    struct sy_pgctl_repl repl;
    uint64_t repl_ms;
} lg;

/* ---- the thread: one batch ---- */

/* The result slots of an item in one round. */
enum { R_B2 = 0, R_B2B = 1, R_G2 = 2, R_B3 = 3, R_N = 4 };
struct lag_slot {
    struct sy_shadow_result r[R_N];
    int ok[R_N];
    char why[160]; /* why a run gave no answer to compare (the first such) */
};

/* A Bind's parameters, for PQexecParams: every value copied (text ones NUL-terminated). */
struct lag_params {
    int n;
    const char **values;
    int *lengths, *formats;
    char *buf;
};

static void params_free(struct lag_params *pp)
{
    free(pp->values);
    free(pp->lengths);
    free(pp->formats);
    free(pp->buf);
    memset(pp, 0, sizeof(*pp));
}

static int get_u16(const uint8_t *b, size_t len, size_t *o, uint16_t *v)
{
    if (len - *o < 2 || *o > len)
        return -1;
    *v = (uint16_t)(b[*o] << 8 | b[*o + 1]);
    *o += 2;
    return 0;
}

/* Reads the parameter part of a Bind (the client's bytes: checked, never trusted). Returns 0,
 * or -1 when it is malformed or memory ran out. */
static int params_parse(const uint8_t *b, size_t len, struct lag_params *pp)
{
    memset(pp, 0, sizeof(*pp));
    if (!b)
        return 0;
    size_t o = 0;
    uint16_t nfmt, np;
    if (get_u16(b, len, &o, &nfmt) != 0 || len - o < 2u * nfmt)
        return -1;
    size_t fmt_at = o;
    o += 2u * nfmt;
    if (get_u16(b, len, &o, &np) != 0 || (nfmt > 1 && nfmt != np))
        return -1;
    pp->n = np;
    pp->values = calloc(np ? np : 1, sizeof(*pp->values));
    pp->lengths = calloc(np ? np : 1, sizeof(*pp->lengths));
    pp->formats = calloc(np ? np : 1, sizeof(*pp->formats));
    pp->buf = malloc(len + np + 1);
    if (!pp->values || !pp->lengths || !pp->formats || !pp->buf) {
        params_free(pp);
        return -1;
    }
    size_t bo = 0;
    for (int i = 0; i < np; i++) {
        if (len - o < 4 || o > len) {
            params_free(pp);
            return -1;
        }
        int32_t l = (int32_t)((uint32_t)b[o] << 24 | (uint32_t)b[o + 1] << 16 |
                              (uint32_t)b[o + 2] << 8 | b[o + 3]);
        o += 4;
        size_t fi = nfmt == 0 ? SIZE_MAX : fmt_at + 2u * (nfmt == 1 ? 0 : (size_t)i);
        pp->formats[i] = fi == SIZE_MAX ? 0 : (b[fi] << 8 | b[fi + 1]) != 0;
        if (l < 0)
            continue; /* NULL */
        if ((size_t)l > len - o) {
            params_free(pp);
            return -1;
        }
        memcpy(pp->buf + bo, b + o, (size_t)l);
        pp->buf[bo + (size_t)l] = 0;
        pp->values[i] = pp->buf + bo;
        pp->lengths[i] = l;
        bo += (size_t)l + 1;
        o += (size_t)l;
    }
    return 0;
}

static void feed_columns(struct sy_shadow_result *res, const PGresult *r)
{
    int n = PQnfields(r);
    const char **names = calloc(n ? n : 1, sizeof(*names));
    uint32_t *types = calloc(n ? n : 1, sizeof(*types));
    int32_t *mods = calloc(n ? n : 1, sizeof(*mods));
    if (names && types && mods) {
        for (int i = 0; i < n; i++) {
            names[i] = PQfname(r, i);
            types[i] = PQftype(r, i);
            mods[i] = PQfmod(r, i);
        }
        sy_lag_feed_columns(res, n, names, types, mods);
    } else {
        res->malformed = 1; /* compares as different from anything: no verdict from it */
    }
    free(names);
    free(types);
    free(mods);
}

static void feed_row(struct sy_shadow_result *res, const PGresult *r)
{
    int n = PQnfields(r);
    const char **vals = calloc(n ? n : 1, sizeof(*vals));
    int *lens = calloc(n ? n : 1, sizeof(*lens));
    if (vals && lens) {
        for (int i = 0; i < n; i++) {
            vals[i] = PQgetisnull(r, 0, i) ? NULL : PQgetvalue(r, 0, i);
            lens[i] = PQgetlength(r, 0, i);
        }
        sy_lag_feed_row(res, n, vals, lens);
    } else {
        res->malformed = 1;
    }
    free(vals);
    free(lens);
}

/* Runs the item's statement on c (the extended protocol, its parameters, text results, one row
 * at a time) and feeds the answer into res. Returns 0 when the server answered (rows, or an
 * error: *error set, its SQLSTATE in sqlstate), or -1 when the connection failed, the deadline
 * passed or the thread is stopping (c is then unusable). */
static int lag_exec(PGconn *c, const struct lag_item *it, const struct lag_params *pp,
                    uint64_t deadline, struct sy_shadow_result *res, int *error,
                    char sqlstate[6])
{
    *error = 0;
    sqlstate[0] = 0;
    if (!PQsendQueryParams(c, it->sql, pp->n, NULL, pp->values, pp->lengths, pp->formats, 0))
        return -1;
    PQsetSingleRowMode(c);
    int in_set = 0, broken = 0;
    for (;;) {
        if (wait_result(cur_w, c, deadline) != 0) {
            shutdown(PQsocket(c), SHUT_RDWR);
            return -1;
        }
        PGresult *r = PQgetResult(c);
        if (!r)
            break;
        switch (PQresultStatus(r)) {
        case PGRES_SINGLE_TUPLE:
            if (!in_set)
                feed_columns(res, r);
            in_set = 1;
            feed_row(res, r);
            break;
        case PGRES_TUPLES_OK:
            if (!in_set)
                feed_columns(res, r);
            in_set = 0;
            sy_lag_feed_complete(res, PQcmdStatus(r));
            break;
        case PGRES_COMMAND_OK:
            sy_lag_feed_complete(res, PQcmdStatus(r));
            break;
        case PGRES_EMPTY_QUERY:
            sy_shadow_result_feed(res, 'I', (const uint8_t *)"", 0);
            break;
        case PGRES_FATAL_ERROR: {
            const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
            if (!*error)
                snprintf(sqlstate, 6, "%s", st ? st : "");
            *error = 1;
            sy_lag_feed_error(res, st ? st : "", msg ? msg : "");
            break;
        }
        default: /* COPY, or anything else a rerun cannot follow */
            broken = 1;
            break;
        }
        PQclear(r);
        if (broken) {
            shutdown(PQsocket(c), SHUT_RDWR);
            return -1;
        }
    }
    return PQstatus(c) == CONNECTION_OK || *error ? 0 : -1;
}

/* One run of the item as its role into slot k. The role is taken once per run of items with the
 * same role (SET LOCAL ROLE, then SAVEPOINT sy_lag, so that rolling back to it after a failed
 * statement keeps the role); *cur_role is the role in force ("" for none). Returns 0, or -1
 * when c is unusable (why in the slot). */
static int lag_run_one(PGconn *c, const char *side, const struct lag_item *it,
                       const struct lag_params *pp, struct lag_slot *sl, int k,
                       uint64_t deadline, char *cur_role, size_t role_cap)
{
    char sql[200], err[200];
    sl->ok[k] = 0;
    if (strcmp(cur_role, it->role) != 0) {
        char *role = PQescapeIdentifier(c, it->role, strlen(it->role));
        if (!role || strlen(role) > sizeof(sql) - 20) {
            PQfreemem(role);
            snprintf(sl->why, sizeof(sl->why), "on %s: the session's role name could not be "
                     "quoted", side);
            return 0;
        }
        snprintf(sql, sizeof(sql), "SET LOCAL ROLE %s", role);
        PQfreemem(role);
        if (step(c, sql, "SET LOCAL ROLE (the control user must be able to take the "
                 "session's role)", deadline, err, sizeof(err)) != 0) {
            if (!sl->why[0])
                snprintf(sl->why, sizeof(sl->why), "on %s: %.140s", side, err);
            cur_role[0] = 0;
            /* Back to the control user, the transaction usable again. */
            return step(c, "ROLLBACK TO SAVEPOINT sy_lag_top", "ROLLBACK TO SAVEPOINT", deadline,
                        err, sizeof(err));
        }
        if (step(c, "SAVEPOINT sy_lag", "SAVEPOINT", deadline, err, sizeof(err)) != 0)
            goto failed;
        snprintf(cur_role, role_cap, "%s", it->role);
    }
    int error = 0;
    char sqlstate[6] = "";
    if (lag_exec(c, it, pp, deadline, &sl->r[k], &error, sqlstate) != 0) {
        snprintf(err, sizeof(err), "no answer in time, or the connection failed");
        goto failed;
    }
    if (error && (circumstantial(sqlstate) || !it->live_error)) {
        if (!sl->why[0])
            snprintf(sl->why, sizeof(sl->why), "on %s: it failed with SQLSTATE %s%s", side,
                     sqlstate, it->live_error ? "" : " where blue's live answer did not");
    } else {
        sl->ok[k] = 1;
    }
    if (error && step(c, "ROLLBACK TO SAVEPOINT sy_lag", "ROLLBACK TO SAVEPOINT", deadline, err,
                      sizeof(err)) != 0)
        goto failed;
    return 0;
failed:
    if (!sl->why[0])
        snprintf(sl->why, sizeof(sl->why), "on %s: %.140s", side, err);
    sl->ok[k] = 0;
    return -1;
}

/* Milliseconds left before deadline (at least 1). */
static uint64_t left_ms(uint64_t deadline)
{
    uint64_t now = mono_ms();
    return deadline > now + 1 ? deadline - now : 1;
}

/*
 * One transaction of a round on c: BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; with L not
 * NULL (blue's first), blue's WAL end read by the first statement, which takes the snapshot; the
 * statement_timeout; then each undecided item of the batch as its role into slot k (B2 twice,
 * into R_B2B too, for an item that needed another round); ROLLBACK (and on blue the session's
 * advisory locks released). Returns 0, or -1 when the transaction could not be run (why in err;
 * the items' slots are then not ok).
 */
static int lag_phase(PGconn *c, const char *side, int on_blue, struct lag_job *j,
                     struct lag_slot *sl, int k, sy_lsn *L, uint64_t deadline, char *err,
                     size_t errlen)
{
    char sql[96];
    int rc_phase = -1;
    if (step(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "BEGIN", deadline, err,
             errlen) != 0)
        goto out;
    if (L) {
        sy_pgctl_set_timeout(left_ms(deadline));
        int r = sy_pgctl_wal_end(c, side, L, err, errlen);
        sy_pgctl_set_timeout(0);
        if (r != 0)
            goto out;
    }
    snprintf(sql, sizeof(sql), "SET LOCAL statement_timeout = %llu",
             (unsigned long long)left_ms(deadline));
    if (step(c, sql, "SET LOCAL statement_timeout", deadline, err, errlen) != 0 ||
        step(c, "SAVEPOINT sy_lag_top", "SAVEPOINT", deadline, err, errlen) != 0)
        goto out;
    char cur_role[64] = "";
    for (size_t i = 0; i < j->n; i++) {
        struct lag_item *it = j->items[i];
        if (it->decided)
            continue;
        struct lag_params pp;
        if (params_parse(it->params, it->params_len, &pp) != 0) {
            it->decided = 1;
            it->verdict = SY_LAG_INCONCLUSIVE;
            snprintf(it->detail, sizeof(it->detail), "its parameters could not be read");
            continue;
        }
        int r = lag_run_one(c, side, it, &pp, &sl[i], k, deadline, cur_role, sizeof(cur_role));
        if (r == 0 && k == R_B2 && it->retried)
            r = lag_run_one(c, side, it, &pp, &sl[i], R_B2B, deadline, cur_role,
                            sizeof(cur_role));
        params_free(&pp);
        if (r != 0) {
            snprintf(err, errlen, "%s", sl[i].why);
            goto out;
        }
    }
    rc_phase = 0;
out:
    if (PQstatus(c) == CONNECTION_OK) {
        char ignored[64];
        uint64_t end = mono_ms() + SLACK_MS;
        if (step(c, "ROLLBACK", "ROLLBACK", end, ignored, sizeof(ignored)) != 0 ||
            (on_blue && step(c, "SELECT pg_advisory_unlock_all()", "unlock", end, ignored,
                             sizeof(ignored)) != 0))
            shutdown(PQsocket(c), SHUT_RDWR);
    }
    return rc_phase;
}

#define LAG_NUDGE_MS 200 /* waiting this long, blue's WAL is flushed as far as L */

/* Waits until green has applied blue's WAL up to L. L may lie past what blue has flushed (a
 * record no commit flushed, with nothing written since): the walsender sends only flushed WAL,
 * so after LAG_NUDGE_MS blue's WAL is flushed once, as the cutover's catch-up does
 * (sy_pgctl_current_lsn: an empty transaction with one logical message). Returns 0, or -1 (why
 * in err). */
static int lag_wait_applied(PGconn *b, PGconn *g, const char *blue, const char *green, sy_lsn L,
                            uint64_t deadline, char *err, size_t errlen)
{
    uint64_t nudge_at = mono_ms() + LAG_NUDGE_MS;
    for (;;) {
        if (nudge_at && mono_ms() >= nudge_at) {
            sy_lsn ignored;
            nudge_at = 0;
            sy_pgctl_set_timeout(left_ms(deadline));
            int r = sy_pgctl_current_lsn(b, blue, &ignored, err, errlen);
            sy_pgctl_set_timeout(0);
            if (r != 0)
                return -1;
        }
        sy_lsn a = 0;
        sy_pgctl_set_timeout(left_ms(deadline));
        int r = sy_pgctl_applied_lsn(b, g, &lg.repl, &a, err, errlen);
        sy_pgctl_set_timeout(0);
        if (r != 0)
            return -1;
        if (a >= L)
            return 0;
        if (mono_ms() + LAG_POLL_MS >= deadline || sy_worker_stopping(cur_w)) {
            char ls[32], as[32];
            sy_lsn_format(L, ls, sizeof(ls));
            sy_lsn_format(a, as, sizeof(as));
            snprintf(err, errlen, "%s had applied %s's changes up to %s, not %s, at the end of "
                     "shadow_lag_check_timeout", green, blue, as, ls);
            return -1;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = LAG_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* The replication from the live side to the other, read again when it is another database's,
 * older than LAG_REPL_TTL_MS or was not usable. Returns 0, or -1 (why in err). */
static int lag_repl(PGconn *b, PGconn *g, const struct lag_job *j, const char *blue,
                    const char *green, char *err, size_t errlen)
{
    uint64_t now = mono_ms();
    if (lg.repl_ms && strcmp(lg.repl_db, j->dbname) == 0 && lg.repl_side == j->side &&
        now - lg.repl_ms < LAG_REPL_TTL_MS && lg.repl.mode != SY_REPL_NONE)
        return 0;
    lg.repl_ms = 0;
    sy_pgctl_set_timeout(CONNECT_TIMEOUT_S * 1000u);
    int r = sy_pgctl_repl_state(b, g, blue, green, &lg.repl, err, errlen);
    sy_pgctl_set_timeout(0);
    if (r != 0)
        return -1;
    snprintf(lg.repl_db, sizeof(lg.repl_db), "%s", j->dbname);
    lg.repl_side = j->side;
    lg.repl_ms = now ? now : 1;
    return 0;
}

static void lag_decide_all(struct lag_job *j, enum sy_lag_verdict v, const char *why)
{
    for (size_t i = 0; i < j->n; i++)
        if (!j->items[i]->decided) {
            j->items[i]->decided = 1;
            j->items[i]->verdict = v;
            snprintf(j->items[i]->detail, sizeof(j->items[i]->detail), "%s", why);
        }
}

/* One round's verdict for each undecided item. */
static void lag_round_decide(struct lag_job *j, struct lag_slot *sl)
{
    for (size_t i = 0; i < j->n; i++) {
        struct lag_item *it = j->items[i];
        if (it->decided)
            continue;
        struct lag_slot *s = &sl[i];
        struct sy_shadow_hints h = {.accepts = it->accepts, .naccepts = it->naccepts};
        struct sy_lag_round r = {
            .b2_ok = s->ok[R_B2], .g2_ok = s->ok[R_G2], .b3_ok = s->ok[R_B3],
            .b2_twice = it->retried, .b2_self_eq = !it->retried || !s->ok[R_B2B] ||
                                                   sy_lag_same(&s->r[R_B2], &s->r[R_B2B], NULL),
        };
        if (r.b2_ok && r.g2_ok && r.b3_ok) {
            r.g2_eq_b2 = sy_lag_same(&s->r[R_B2], &s->r[R_G2], &h);
            r.g2_eq_b3 = sy_lag_same(&s->r[R_B3], &s->r[R_G2], &h);
            r.b2_eq_b3 = sy_lag_same(&s->r[R_B2], &s->r[R_B3], NULL);
        }
        enum sy_lag_verdict v = sy_lag_decide(&r);
        if (v == SY_LAG_RETRY) {
            it->retried = 1;
            continue;
        }
        it->decided = 1;
        it->verdict = v;
        if (v == SY_LAG_INCONCLUSIVE)
            snprintf(it->detail, sizeof(it->detail), "a rerun gave no answer to compare: %s",
                     s->why[0] ? s->why : "?");
        else
            snprintf(it->detail, sizeof(it->detail),
                     "%llu rows on blue before, %llu on green caught up, %llu on blue after%s",
                     (unsigned long long)s->r[R_B2].nrows, (unsigned long long)s->r[R_G2].nrows,
                     (unsigned long long)s->r[R_B3].nrows,
                     v == SY_LAG_NONDETERMINISTIC ? "; blue differed within one snapshot" : "");
    }
}

static void slots_reset(struct lag_slot *sl, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < R_N; k++) {
            sy_shadow_result_reset(&sl[i].r[k]);
            sl[i].ok[k] = 0;
        }
        sl[i].why[0] = 0;
    }
}

static void lag_check(struct lag_job *j, PGconn *b, PGconn *g, struct lag_slot *sl)
{
    uint64_t deadline = mono_ms() + j->timeout_ms;
    const char *blue = sy_side_name(j->side), *green = sy_side_name((enum sy_side)!j->side);
    char err[300];
    if (lag_repl(b, g, j, blue, green, err, sizeof(err)) != 0) {
        lag_decide_all(j, SY_LAG_INCONCLUSIVE, err);
        return;
    }
    if (lg.repl.mode == SY_REPL_NONE) {
        /* sy_pgctl_repl_state found no subscription at all (several are another problem): no
         * replication feeds green, so nothing green lacks can be lag. */
        if (strncmp(lg.repl.problem, "no subscription", 15) == 0) {
            snprintf(err, sizeof(err), "no replication from %s to %s: it cannot be lag", blue,
                     green);
            lag_decide_all(j, SY_LAG_REAL, err);
        } else {
            lag_decide_all(j, SY_LAG_INCONCLUSIVE, lg.repl.problem);
        }
        return;
    }
    for (int round = 0; round < SY_LAG_ROUNDS; round++) {
        size_t undecided = 0;
        for (size_t i = 0; i < j->n; i++)
            undecided += !j->items[i]->decided;
        if (undecided == 0 || mono_ms() >= deadline || sy_worker_stopping(cur_w))
            break;
        slots_reset(sl, j->n);
        sy_lsn L = 0;
        uint64_t t0 = mono_ms(), t1 = 0, t2 = 0, t3 = 0;
        j->rounds++;
        int failed =
            lag_phase(b, blue, 1, j, sl, R_B2, &L, deadline, err, sizeof(err)) != 0 ||
            (t1 = mono_ms(), lag_wait_applied(b, g, blue, green, L, deadline, err,
                                              sizeof(err)) != 0) ||
            (t2 = mono_ms(), lag_phase(g, green, 0, j, sl, R_G2, NULL, deadline, err,
                                       sizeof(err)) != 0) ||
            (t3 = mono_ms(), lag_phase(b, blue, 1, j, sl, R_B3, NULL, deadline, err,
                                       sizeof(err)) != 0);
        uint64_t t4 = mono_ms();
        j->ms_b2 += (t1 ? t1 : t4) - t0;
        j->ms_wait += t1 ? (t2 ? t2 : t4) - t1 : 0;
        j->ms_g2 += t2 ? (t3 ? t3 : t4) - t2 : 0;
        j->ms_b3 += t3 ? t4 - t3 : 0;
        if (failed) {
            lg.repl_ms = 0; /* read the replication again next time */
            lag_decide_all(j, SY_LAG_INCONCLUSIVE, err);
            return;
        }
        lag_round_decide(j, sl);
    }
    lag_decide_all(j, SY_LAG_INCONCLUSIVE, "blue's answer changed in every round and green's "
                   "matched neither end (or shadow_lag_check_timeout ran out)");
}

static void lag_job_run(struct sy_worker *w, struct sy_work *work)
{
    struct lag_job *j = (struct lag_job *)work;
    cur_w = w;
    char err[300];
    enum sy_side green = (enum sy_side)!j->side;
    PGconn *b = conn_get(&lg.pool, j->side, j->dbname, &j->t[j->side], err, sizeof(err));
    PGconn *g = b ? conn_get(&lg.pool, green, j->dbname, &j->t[green], err, sizeof(err)) : NULL;
    if (!b || !g) {
        lag_decide_all(j, SY_LAG_INCONCLUSIVE, err);
        return;
    }
    struct lag_slot *sl = calloc(j->n, sizeof(*sl));
    if (!sl) {
        lag_decide_all(j, SY_LAG_INCONCLUSIVE, "out of memory");
        return;
    }
    for (size_t i = 0; i < j->n; i++)
        for (int k = 0; k < R_N; k++)
            sy_shadow_result_init(&sl[i].r[k]);
    lag_check(j, b, g, sl);
    for (size_t i = 0; i < j->n; i++)
        for (int k = 0; k < R_N; k++)
            sy_shadow_result_free(&sl[i].r[k]);
    free(sl);
    conn_keep_if_clean(&lg.pool, b);
    conn_keep_if_clean(&lg.pool, g);
}

static void lag_item_free(struct lag_item *it)
{
    if (it)
        lg.bytes -= it->bytes <= lg.bytes ? it->bytes : lg.bytes;
    free(it);
}

static void lag_job_drop(struct sy_work *work)
{
    struct lag_job *j = (struct lag_job *)work;
    for (size_t i = 0; i < j->n; i++)
        free(j->items[i]);
    OPENSSL_cleanse(j->t, sizeof(j->t));
    free(j);
}

/* ---- the loop's side: the queue ---- */

/* Starts the next batch when none runs: the first waiting check and the others of its side and
 * database, oldest first. */
static void lag_schedule(struct sy_proxy *p)
{
    if (lg.busy || !lg.head || !lg.w.started)
        return;
    struct lag_job *j = calloc(1, sizeof(*j));
    if (!j)
        return;
    j->side = lg.head->side;
    snprintf(j->dbname, sizeof(j->dbname), "%s", lg.head->database);
    sy_ctl_target_fill(&j->t[SY_BLUE], &p->cfg, SY_BLUE);
    sy_ctl_target_fill(&j->t[SY_GREEN], &p->cfg, SY_GREEN);
    j->timeout_ms = p->cfg.shadow_lag_check_timeout_ms ? p->cfg.shadow_lag_check_timeout_ms : 5000;
    struct lag_item **pp = &lg.head, *prev = NULL;
    while (*pp && j->n < SY_LAG_BATCH) {
        struct lag_item *it = *pp;
        if (it->side == j->side && strcmp(it->database, j->dbname) == 0) {
            *pp = it->next;
            it->next = NULL;
            j->items[j->n++] = it;
            lg.count--;
        } else {
            prev = it;
            pp = &it->next;
        }
    }
    /* The tail is the last item left: after the last one skipped, or anywhere when none was. */
    lg.tail = prev ? prev : lg.head;
    while (lg.tail && lg.tail->next)
        lg.tail = lg.tail->next;
    lg.busy = 1;
    sy_worker_submit(&lg.w, &j->work);
}

static void lag_job_done(struct sy_worker *w, struct sy_work *work)
{
    (void)w;
    struct lag_job *j = (struct lag_job *)work;
    sy_debug("shadow lag check: a batch of %zu in %u rounds: blue %llu ms, waiting for green "
             "%llu ms, green %llu ms, blue again %llu ms; %zu waiting", j->n, j->rounds,
             (unsigned long long)j->ms_b2, (unsigned long long)j->ms_wait,
             (unsigned long long)j->ms_g2, (unsigned long long)j->ms_b3, lg.count);
    for (size_t i = 0; i < j->n; i++) {
        struct lag_item *it = j->items[i];
        struct sy_lag_out o = {
            .fp_hash = it->fp_hash, .epoch = it->epoch, .fp = it->fp,
            .verdict = it->decided ? it->verdict : SY_LAG_INCONCLUSIVE, .detail = it->detail,
            .ex = &it->ex, .runs = it->runs, .nruns = it->nruns,
        };
        lg.done_fn(lg.p, &o);
        lag_item_free(it);
    }
    OPENSSL_cleanse(j->t, sizeof(j->t));
    free(j);
    lg.busy = 0;
    lag_schedule(lg.p);
}

static uint64_t str_hash(uint64_t h, const char *s) { return fnv(h, s, strlen(s) + 1); }

enum sy_lag_queued sy_lag_submit(struct sy_proxy *p, const struct sy_lag_in *in)
{
    if (!lg.w.started)
        return SY_LAG_FULL;
    uint64_t eh = str_hash(str_hash(FNV_OFFSET, in->database), in->role);
    eh = fnv(eh, in->sql, in->sql_len);
    eh = fnv(eh, &in->params_len, sizeof(in->params_len));
    if (in->params)
        eh = fnv(eh, in->params, in->params_len);
    uint64_t width = sy_shadow_report_bucket_us(p->shadow_report);
    if (width == 0)
        width = 1;
    for (struct lag_item *it = lg.head; it; it = it->next) {
        if (it->side != in->side || it->fp_hash != in->fp_hash || it->exec_hash != eh ||
            it->blue_digest != in->blue_digest || it->green_digest != in->green_digest ||
            it->epoch != in->epoch)
            continue;
        struct sy_lag_run *last = &it->runs[it->nruns - 1];
        if (last->at_us / width == in->at_us / width && last->n < UINT32_MAX) {
            last->n++;
            return SY_LAG_JOINED;
        }
        if (it->nruns < LAG_RUNS) {
            it->runs[it->nruns++] = (struct sy_lag_run){.at_us = in->at_us, .n = 1};
            return SY_LAG_JOINED;
        }
    }
    size_t need = sizeof(struct lag_item) + in->naccepts * sizeof(struct sy_shadow_accept) +
                  in->params_len + in->sql_len + 1;
    if (lg.count >= SY_LAG_QUEUE_MAX || lg.bytes + need > SY_LAG_QUEUE_BYTES)
        return SY_LAG_FULL;
    struct lag_item *it = calloc(1, need);
    if (!it)
        return SY_LAG_FULL;
    uint8_t *tail = (uint8_t *)(it + 1);
    it->accepts = (struct sy_shadow_accept *)tail;
    if (in->naccepts)
        memcpy(it->accepts, in->accepts, in->naccepts * sizeof(*in->accepts));
    it->naccepts = in->naccepts;
    tail += in->naccepts * sizeof(struct sy_shadow_accept);
    if (in->params) {
        it->params = tail;
        memcpy(it->params, in->params, in->params_len);
        it->params_len = in->params_len;
        tail += in->params_len;
    }
    it->sql = (char *)tail;
    memcpy(it->sql, in->sql, in->sql_len);
    it->sql[in->sql_len] = 0;
    it->side = in->side;
    it->fp_hash = in->fp_hash;
    it->exec_hash = eh;
    it->blue_digest = in->blue_digest;
    it->green_digest = in->green_digest;
    it->epoch = in->epoch;
    snprintf(it->database, sizeof(it->database), "%s", in->database);
    snprintf(it->role, sizeof(it->role), "%s", in->role);
    it->live_error = in->live_error;
    snprintf(it->fp, sizeof(it->fp), "%s", in->fp ? in->fp : "");
    if (in->ex)
        it->ex = *in->ex;
    it->runs[0] = (struct sy_lag_run){.at_us = in->at_us, .n = 1};
    it->nruns = 1;
    it->bytes = need;
    if (lg.tail)
        lg.tail->next = it;
    else
        lg.head = it;
    lg.tail = it;
    lg.count++;
    lg.bytes += need;
    lag_schedule(p);
    return SY_LAG_QUEUED;
}

int sy_lag_start(struct sy_proxy *p, sy_lag_done_fn done)
{
    lg.p = p;
    lg.done_fn = done;
    lg.w.run = lag_job_run;
    lg.w.done = lag_job_done;
    lg.w.drop = lag_job_drop;
    lg.w.idle = pool_idle;
    lg.w.idle_ms = CONN_IDLE_MS / 4;
    lg.w.exit = pool_exit;
    lg.w.data = &lg.pool;
    return sy_worker_start(&lg.w, p->loop, "shadow lag check");
}

static void lag_stop(void)
{
    sy_worker_stop(&lg.w);
    while (lg.head) {
        struct lag_item *it = lg.head;
        lg.head = it->next;
        free(it);
    }
    lg.tail = NULL;
    lg.count = lg.bytes = 0;
    lg.busy = 0;
}
