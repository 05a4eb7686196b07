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
 * callback is not called again. Safe to call when not started. */
void sy_recheck_stop(void);

#endif
