/*
 * The shadow's lag check, its pure part (docs/shadow.md, "Replication lag, proved"): which
 * divergences it looks at, and what one round of reruns proves.
 *
 * In reads mode green is fed by replication, so a data difference (rows affected, row count, row
 * data) may only mean that green had not yet applied what blue's answer saw. The proxy then
 * counts it as INCONCLUSIVE and a worker thread reruns the statement (proxy/shadow_recheck.c):
 *   B2  on blue, in a REPEATABLE READ READ ONLY transaction whose first statement read blue's
 *       WAL end L (so every commit B2 sees ends at or before L);
 *   G2  on green, read-only, once green has applied blue's WAL at least up to L;
 *   B3  on blue again, in a fresh snapshot, after G2.
 * Green's state at G2 is blue's as of some position A >= L that blue had reached before B3
 * started, so G2 lies between B2 and B3 in blue's history. This module turns the three answers
 * into a verdict. Pure: no I/O, no clock, no globals.
 */
#ifndef SY_SHADOW_LAG_H
#define SY_SHADOW_LAG_H

#include "switchover/shadow.h"

enum sy_lag_verdict {
    SY_LAG_RETRY = 0,            /* blue moved and green matched neither end: run another round */
    SY_LAG_LAG = 1,              /* green, caught up, gave one of blue's answers: it was lag */
    SY_LAG_REAL = 2,             /* blue stable over the round, green caught up and different */
    SY_LAG_NONDETERMINISTIC = 3, /* blue answered differently twice within one snapshot */
    SY_LAG_INCONCLUSIVE = 4,     /* a run gave no answer to compare (error, timeout, down) */
};

/* "retry", "replication_lag", "real", "nondeterministic", "inconclusive"; "unknown". */
const char *sy_lag_verdict_name(enum sy_lag_verdict v);

/* What one round established. Each *_ok says the run gave an answer to compare (success, or an
 * error that is an answer: not a timeout, a failed connection or a refused read-only step). */
struct sy_lag_round {
    int b2_ok, g2_ok, b3_ok;
    int g2_eq_b2;      /* green's answer equals B2 (as sy_shadow_compare sees data: MATCH,
                          ORDER_ONLY or ACCEPTED) */
    int g2_eq_b3;      /* ... equals B3 */
    int b2_eq_b3;      /* blue's two answers agree */
    int b2_twice;      /* B2 was run twice in its snapshot (a retry round) ... */
    int b2_self_eq;    /* ... and both runs agreed */
};

/*
 * The verdict of one round: INCONCLUSIVE when a run gave no answer; NONDETERMINISTIC when B2 was
 * run twice in one snapshot with two answers; LAG when G2 equals B2 or B3; REAL when B2 equals B3
 * (blue's answer held from before L until after G2) and G2 differs; else RETRY.
 */
enum sy_lag_verdict sy_lag_decide(const struct sy_lag_round *r);

/* Whether a divergence may be replication lag, from the first difference sy_shadow_compare
 * found (its example's what): "rows_affected", "row_count" or "row_data". Not an error on one
 * side, another SQLSTATE, command tag or columns: lag does not change those (below). */
int sy_lag_candidate(const char *what);

/* The class a verdict gives a divergence counted INCONCLUSIVE: REPLICATION_LAG, REAL,
 * NONDETERMINISTIC; INCONCLUSIVE for RETRY and INCONCLUSIVE. */
enum sy_shadow_class sy_lag_class(enum sy_lag_verdict v);

/* Whether two answers agree as the lag check sees them: sy_shadow_compare(a, b, h) gives MATCH,
 * ORDER_ONLY (no ORDER BY: green may return the same rows in another order) or ACCEPTED (what an
 * accept covers: a numeric's scale, a widened type, with values equal by meaning). */
int sy_lag_same(const struct sy_shadow_result *a, const struct sy_shadow_result *b,
                const struct sy_shadow_hints *h);

/*
 * Feeding an answer read through libpq (the check's reruns) into a result, as the proxy feeds
 * the messages it relays: each call encodes the backend message and calls
 * sy_shadow_result_feed. Returns its result (0, or a negative pg_error), or PG_E_TOO_LARGE
 * when a message would not fit in memory.
 */
/* A RowDescription: ncols columns with their names, type OIDs and modifiers, text format. */
int sy_lag_feed_columns(struct sy_shadow_result *r, int ncols, const char *const *names,
                        const uint32_t *types, const int32_t *mods);
/* A DataRow: ncols values (vals[i] NULL for SQL NULL, else lens[i] bytes). */
int sy_lag_feed_row(struct sy_shadow_result *r, int ncols, const char *const *vals,
                    const int *lens);
/* A CommandComplete with tag ("SELECT 3"). */
int sy_lag_feed_complete(struct sy_shadow_result *r, const char *tag);
/* An ErrorResponse with sqlstate (5 characters) and message. */
int sy_lag_feed_error(struct sy_shadow_result *r, const char *sqlstate, const char *message);

#endif
