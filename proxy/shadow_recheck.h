/*
 * Shadow rechecks (docs/shadow.md, "Rechecking on blue"): a statement whose answers diverged is
 * run twice more on the session's own side (blue), in one read-only repeatable-read
 * transaction, as the session's user, by a thread of its own over blocking libpq, so the event
 * loop never waits for it. Both runs see the same snapshot, so writes made meanwhile cannot
 * make them differ: two different answers prove that the statement's answer differs from
 * itself (a volatile function behind a view, an unordered LIMIT ...).
 *
 * What runs on blue, on a connection as that side's control_user to the session's database
 * (a few are kept, by database): BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL
 * ROLE <user>; SET LOCAL statement_timeout = <shadow_recheck_timeout>; SAVEPOINT; the statement
 * twice with PQexecParams (the extended protocol: a string holding several statements is
 * refused, so it is not rechecked), rolling back to the savepoint after a run that failed;
 * ROLLBACK; SELECT pg_advisory_unlock_all().
 *
 * Bounded: at most SY_RECHECK_MAX_PENDING rechecks are queued, running or waiting to be
 * reported at once; a submission beyond that is refused (the caller counts it as dropped), so a
 * blue that is down or slow cannot grow memory. One thread, started and stopped by the loop.
 */
#ifndef SY_SHADOW_RECHECK_H
#define SY_SHADOW_RECHECK_H

#include <stddef.h>

#include "proxy.h"
#include "switchover/shadow.h"
#include "switchover/shadow_lag.h"

#define SY_RECHECK_MAX_PENDING 4

enum sy_recheck_verdict {
    SY_RECHECK_SAME = 1,         /* both runs gave the same answer */
    SY_RECHECK_DIFFERS = 2,      /* the two answers differ: the statement is non-deterministic */
    SY_RECHECK_INCONCLUSIVE = 3, /* it could not run as the live statement did: no connection,
                                    a failed step, a timeout, an error blue's live answer did
                                    not have, shutdown */
};

/* "same", "differs", "inconclusive". */
const char *sy_recheck_verdict_name(enum sy_recheck_verdict v);

/* One recheck to run. Everything is copied at submission. */
struct sy_recheck_req {
    enum sy_side side;    /* where to run it: the session's side (blue while blue is active) */
    const char *database; /* the session's database */
    const char *role;     /* the session's user (SET LOCAL ROLE) */
    const char *sql;      /* the exact statement text the client sent */
    size_t sql_len;
    int live_error;       /* blue's live answer was an error (so an error on recheck is an
                             answer to compare, not a sign that the recheck differs from it) */
    void *data;           /* the caller's (one malloc block): handed back to the callback, or
                             freed with free() when the recheck never reports (at stop) */
};

/* Called on the loop with a submitted request's data (the callback owns it from then on), its
 * verdict, and one sentence saying why (for logs: never row values or query text). */
typedef void (*sy_recheck_done_fn)(struct sy_proxy *p, void *data, enum sy_recheck_verdict v,
                                   const char *detail);

/* Starts the recheck thread. Returns 0, or -1 after logging why. */
int sy_recheck_start(struct sy_proxy *p, sy_recheck_done_fn done);

/* Queues a recheck with the connection settings of req->side's section in p->cfg. Returns 0,
 * or -1 when it was not taken (SY_RECHECK_MAX_PENDING are pending, the thread is not running,
 * or memory ran out): the caller keeps req->data. Never blocks on I/O. */
int sy_recheck_submit(struct sy_proxy *p, const struct sy_recheck_req *req);

/* Stops the thread (a recheck in progress is abandoned within about 100 ms, or once a
 * connection attempt's 2 s timeout ends) and joins it; frees what never reported. The
 * callback is not called again. Stops the lag check's thread too (below). Safe to call when
 * not started. */
void sy_recheck_stop(void);

/*
 * Lag checks (docs/shadow.md, "Replication lag, proved"; the rule: switchover/shadow_lag.h). In
 * reads mode a data difference is counted INCONCLUSIVE and handed here; a thread of its own
 * reruns the statement on blue (B2, in a REPEATABLE READ READ ONLY snapshot whose first statement
 * read blue's WAL end L), waits until green has applied L (the replication's positions, as the
 * cutover's catch-up reads them: switchover/pgctl.h), reruns it on green (G2) and on blue again
 * (B3), each as the session's role, and decides. Up to SY_LAG_BATCH divergences of one database
 * share a round: one blue transaction, one L, one wait, one green transaction, one blue
 * transaction. Up to SY_LAG_ROUNDS rounds within shadow_lag_check_timeout.
 *
 * The queue (the loop's): divergences with the same key (side, fingerprint, exact text and
 * parameters, database, role, blue's and green's answer digests, report epoch) that wait for a
 * check are decided by one; at most SY_LAG_QUEUE_MAX checks (SY_LAG_QUEUE_BYTES) wait, one batch
 * runs at a time.
 */
#define SY_LAG_BATCH 128
#define SY_LAG_ROUNDS 3
#define SY_LAG_QUEUE_MAX 4096
#define SY_LAG_QUEUE_BYTES (16u << 20)
#define SY_LAG_PARAMS_MAX 8192 /* bytes of a Bind's parameters kept for a rerun */

/* A divergence to check. Everything is copied at submission. */
struct sy_lag_in {
    enum sy_side side;             /* the session's (live) side: blue while blue is active */
    const char *database, *role;   /* the session's */
    uint64_t fp_hash;
    const char *fp;                /* the fingerprint text (for the log) */
    const char *sql;               /* the exact statement text */
    size_t sql_len;
    const uint8_t *params;         /* a Bind's parameters from its format codes on (int16
                                      count, codes, int16 count, values), or NULL */
    size_t params_len;
    uint64_t blue_digest, green_digest; /* the two live answers' digests (deduplication) */
    int live_error;                /* blue's live answer was an error */
    const struct sy_shadow_accept *accepts; /* the column accepts naming the fingerprint */
    size_t naccepts;
    const struct sy_shadow_example *ex;     /* the divergence's example */
    uint64_t at_us;                /* the time it was counted at (sy_shadow_report_add) */
    uint64_t epoch;                /* the caller's report epoch */
};

enum sy_lag_queued {
    SY_LAG_QUEUED = 0, /* a new check */
    SY_LAG_JOINED = 1, /* the same check was waiting: it decides this divergence too */
    SY_LAG_FULL = -1,  /* not taken: the queue is full, or the thread is not running */
};

/* A decided check: every divergence it covers, as runs of n divergences counted at at_us
 * (merged when they fall in one gate bucket of the report). */
struct sy_lag_run {
    uint64_t at_us;
    uint32_t n;
};
struct sy_lag_out {
    uint64_t fp_hash, epoch;
    const char *fp;
    enum sy_lag_verdict verdict;
    const char *detail;                  /* one sentence for the log: never values or SQL */
    const struct sy_shadow_example *ex;
    const struct sy_lag_run *runs;
    size_t nruns;
};

/* Called on the loop once per decided check. */
typedef void (*sy_lag_done_fn)(struct sy_proxy *p, const struct sy_lag_out *o);

/* Starts the lag check's thread. Returns 0, or -1 after logging why. */
int sy_lag_start(struct sy_proxy *p, sy_lag_done_fn done);

/* Queues a divergence (see enum sy_lag_queued). Never blocks on I/O. */
enum sy_lag_queued sy_lag_submit(struct sy_proxy *p, const struct sy_lag_in *in);

#endif
