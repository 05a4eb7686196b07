/*
 * The cutover and rollback driver (see switch.h and docs/runbook.md).
 *
 * Two threads. The event loop owns sessions, the pause and the state machine; the control
 * thread owns the two control connections (blocking libpq, switchover/pgctl.h) and runs one job
 * at a time from a queue: a health probe, the guardrails, a fence, a catch-up poll, sequences,
 * reverse replication. A job's result comes back to the loop through a uv_async and is turned
 * into the state machine's next step.
 */
#include "switch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "admin_parse.h"
#include "log.h"
#include "switchover/cutover.h"
#include "switchover/pgctl.h"
#include "worker.h"

#define TICK_MS 2
#define PROGRESS_EVERY_MS 500
/* How long the warm step waits for a session to reach an idle point for its warm-up read. */
#define WARM_READ_WAIT_MS 250
#define REVERSE_NAME "switchyard_reverse"
#define MAX_WATCHERS 8

enum job_kind {
    J_PROBE = 1,     /* health of both sides and the replication between them */
    J_CHECK = 2,     /* the guardrails */
    J_FENCE = 3,     /* fence side `from` (or `to` to restore a fence) */
    J_UNFENCE = 4,   /* lift the fence recorded for side */
    J_CATCHUP = 5,   /* wait until `to` has `from`'s position after the fence */
    J_SEQUENCES = 6, /* copy sequences from -> to */
    J_SWITCH = 7,    /* reverse replication (cutover) or its teardown (rollback) */
    J_COMMIT = 8,    /* close the rollback window: drop the reverse replication */
    J_REVERSE_DROP = 9, /* an aborted cutover: drop the reverse replication it prepared */
    J_REVERSE_CLEANUP = 10, /* after a rollback's switch: drop the stopped reverse replication */
    J_SLOT_MARK = 11, /* end of warm: the slot the switch point advances, advanced now */
    J_LEFTOVER = 12, /* retry removing reverse replication an earlier removal could not */
    J_RECOVER = 13,  /* undo what an interrupted or aborted switch recorded (the "pending") */
    J_FENCE_PLAN = 14, /* warm: the roles the fence may change, recorded before it runs */
    J_VERIFY = 15,   /* at start: which side the databases say is live */
};


struct job {
    struct sy_work work; /* first: queued on the control worker */
    enum job_kind kind;
    int step_job; /* submitted for the running switch's step (submit_step_job) */
    enum sy_side from, to, side;
    int rollback, dry_run;
    enum sy_reverse_repl reverse;
    struct sy_ctl_target t[2];
    int *keep_pids;
    int nkeep;
    uint64_t deadline_hr_ms; /* uv_hrtime-based, for polling jobs */
    uint64_t timeout_ms;     /* every job's statements together end within this */
    double max_tx_age_s;
    uint64_t max_lag;
    struct sy_pgctl_fence *fence; /* J_FENCE out, J_UNFENCE in */
    /* results */
    int ok;
    char err[1100];
    int reachable[2];
    char side_err[2][256];
    struct sy_pgctl_probe probe[2];
    struct sy_pgctl_repl repl;    /* from -> to */
    struct sy_pgctl_repl reverse_repl; /* to -> from, when a window is open */
    struct sy_pgctl_repl forward;      /* the window's cutover's replication (for a rollback) */
    int have_reverse;
    int skip_forward;                  /* J_PROBE: advance the window's forward slot (auto) */
    char skip_err[256];                /* why that advance failed */
    char slot[64];                     /* J_SLOT_MARK: the slot */
    enum sy_side window_from;          /* the side the window's cutover came from */
    int reverse_prepared;              /* J_CHECK: the reverse subscription exists, disabled */
    sy_lsn target_lsn, applied_lsn;
    int nseq;
    uint64_t elapsed_ms;
    /* J_RECOVER: what to undo (from the pending record), and what it did */
    int to_unfenced, switch_repl, reverse_on, refenced;
    char fwd_sub[64];
    struct sy_pgctl_fence *refence;    /* out: the fence put back on `to` */
    /* J_VERIFY: the side the databases say is live (-1 unknown, -2 contradictory), and why */
    int live;
    char verdict[400];
    /* The checks before anything is paused or fenced, and the replication's health (J_CHECK,
     * J_PROBE; check_more, probe_health) */
    char kept_roles[256];              /* J_CHECK: roles the fence leaves LOGIN (replication) */
    struct sy_pgctl_subhealth health;  /* J_PROBE: the subscription of `repl` */
    char health_cause[700];            /* J_PROBE: a schema or role problem found for `repl` */
    /* J_PROBE: each side's fence as its database reports it (probe_fences), against the fence
     * the state file recorded when the probe was queued (rec, rec_fenced). */
    struct sy_pgctl_fence *rec;        /* [2]: the recorded fence's roles per side */
    int rec_fenced[2];
    int fence_known[2], fence_db[2];
    char fence_detail[2][240];
};

struct watcher {
    struct sy_admin_conn *a;
};

/* A session's part in a switch (sy_session.move_state). */
enum {
    MS_NONE = 0,         /* none */
    MS_WARMING = 1,      /* its connection to the target is logging in */
    MS_WARM = 2,         /* that connection is ready */
    MS_PREPARING = 3,    /* its state is being read and replayed there */
    MS_PREPARED = 4,     /* replayed: it moves at the switch point */
    MS_WARM_READING = 5, /* the warm-up state read (before the pause) */
};

struct sy_switch {
    struct sy_proxy *p;
    /* control thread: the jobs, one at a time */
    struct sy_worker ctl;
    uv_async_t async; /* the state writer's progress */
    PGconn *conn[2];
    struct sy_ctl_target conn_target[2];
    /* health, as last probed */
    uv_timer_t health_timer, tick;
    int probe_queued;
    int reachable[2];
    char side_err[2][256];
    struct sy_pgctl_probe probe[2];
    struct sy_pgctl_repl repl, reverse_repl;
    struct sy_pgctl_repl window_forward; /* the replication the window's cutover followed */
    int have_repl, have_reverse;
    uint64_t probed_ms;
    char skip_err_logged[256];        /* the forward slot's advance: last failure logged */
    /* Reverse replication whose removal failed (a side did not answer): its subscription on
     * leftover_sub, its publication and slot on the other side. Retried after each probe that
     * reaches both sides, and recorded in the state file until it is gone. */
    int leftover, leftover_queued;
    enum sy_side leftover_sub;
    char leftover_err[256];           /* the last failure logged */
    char unfence_err_logged[256];     /* lifting an interrupted switch's fence: last failure */
    /* a switch under way */
    int running;
    struct sy_cutover co;
    enum sy_side from, to;
    int job_out;              /* a job for the running step is queued */
    uint32_t warming, preparing, sessions_moved, sessions_closed, sessions_forced;
    uint32_t warm_reading;    /* warm-up state reads in flight */
    uint32_t warm_reads;      /* warm-up state reads done */
    int slot_marked;          /* the end of warm's J_SLOT_MARK ran */
    uint64_t warm_since_ms;   /* every standby was ready (0: not yet) */
    char session_error[400];  /* the first session-level failure */
    uint64_t last_progress_ms;
    struct watcher watchers[MAX_WATCHERS];
    struct sy_pgctl_repl run_repl; /* the replication the catch-up follows */
    sy_lsn fence_lsn, applied_lsn;
    int nseq;
    uint64_t check_lag;
    double check_lag_s;
    int to_unfenced;          /* the target side's old fence was lifted for this switch */
    struct sy_pgctl_repl pending_forward; /* becomes window_forward at the switch point */
    int reverse_prepared;     /* the check step created the reverse subscription (disabled) */
    enum sy_shadow_mode shadow_before; /* shadowing in force when the switch started */
    char unmovable_report[400];
    uint32_t held_at_report, max_pause, p99_pause;
    /* persistent state (the state file) */
    struct sy_pgctl_fence fence[2]; /* the fence in force on each side (nroles 0: none) */
    int fenced[2];
    int window_open;
    uint64_t window_until_unix_ms;
    enum sy_side window_from;       /* the side the window's cutover came from */
    char state_path[SY_PATH_MAX + 8];
    /* The state file's writer thread: a file sync takes milliseconds (tens on a busy disk),
     * which the loop must not spend. Each write is a whole snapshot, so only the newest one
     * waiting matters; seq numbers say which snapshot is durable. */
    uv_thread_t writer;
    uv_mutex_t wmu;
    uv_cond_t wcv;
    int writer_started, wstop;
    char *wtext;                    /* the next snapshot ("path\0text"), or NULL */
    uint64_t wseq, wseq_done, wseq_failed, wseq_reported;
    int werrno;
    uint64_t fence_after_seq;       /* the fence waits until this snapshot is durable */
    int fence_waiting;
    uint64_t switch_after_seq;      /* the switch point waits until this one is */
    /* Write-ahead record of a switch's database changes (the state file's "pending"): each
     * change is recorded, durably, before it is made, and the record goes at the switch point
     * or once J_RECOVER has undone it all (after an abort, or a restart). */
    int pend, pend_rollback;
    enum sy_side pend_from, pend_to;
    int pend_reverse;               /* the reverse subscription may exist on pend_from */
    int pend_to_unfenced;           /* pend_to's earlier fence may have been lifted */
    int pend_switch_repl;           /* the switch step's replication changes may be made */
    char pend_fwd_sub[64];          /* the forward subscription (on the cutover's target) */
    struct sy_pgctl_fence pend_plan; /* roles the fence on pend_from may change */
    int recover_queued;
    char recover_err[256];          /* the last failure logged */
    uint64_t switching_seq;         /* the snapshot with pend_switch_repl */
    /* A change waiting for its record to be durable (after_poll). */
    uint64_t after_seq;
    struct job *after_job;          /* submitted then (NULL: start_warm) */
    int after_waiting;
    /* The start's cross-check with the databases (J_VERIFY). */
    int verify_queued, verified, start_paused;
    /* Test builds: SWITCHYARD_TEST_STOP_AT=op:step[:before] freezes the driver there. */
    char hook[64];
    int hook_stopped;
    uv_timer_t hook_timer;
    /* The health of the replication running now (forward, or the window's reverse one): the
     * cause of its failure for status, the log and rollback's refusal (apply_health). */
    char health_sub[64];              /* the subscription the counts below are for */
    int64_t health_apply, health_sync; /* its error counts at the last probe */
    uint64_t health_err_ms;           /* when they last grew (0: never seen to) */
    uint64_t health_noworker_ms;      /* since when no apply worker runs (0: one does) */
    char repl_cause[800];             /* why it fails ("" when it works) */
    char repl_cause_logged[800];
    int health_window;                /* repl_cause is about the window's reverse replication */
    int dry_skipped;                  /* dry run: sessions whose login waits for the warm unfence */
    int dry_logins;                   /* dry run: sessions logged into the target and closed */
    /* The catch-up's positions, written by the control thread while it polls (progress). */
    _Atomic uint64_t cu_target, cu_applied;
    /* Replication as the last probe labelled it: `repl` runs repl_from -> the other side. */
    enum sy_side repl_from;
    /* Each side's fence as its database reported it at the last probe (probe_fences), and the
     * disagreement with the state file's record, as logged. */
    int fence_known[2], fence_db[2];
    char fence_detail[2][240];
    char fence_mismatch[2][400];
};

static struct sy_switch *sw_of(struct sy_proxy *p) { return p->sw; }

static uint64_t hr_ms(void) { return uv_hrtime() / 1000000u; }

static uint64_t unix_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

/* ---- the control thread ---- */

void sy_ctl_target_fill(struct sy_ctl_target *t, const struct sy_config *cfg, enum sy_side s)
{
    const struct sy_server_config *sc = &cfg->server[s];
    static const char *const modes[] = {"disable", "prefer", "require", "verify-ca", "verify-full"};
    memset(t, 0, sizeof(*t));
    snprintf(t->host, sizeof(t->host), "%s", sc->host);
    t->port = sc->port;
    snprintf(t->user, sizeof(t->user), "%s", sc->control_user);
    snprintf(t->password, sizeof(t->password), "%s", sc->control_password);
    snprintf(t->dbname, sizeof(t->dbname), "%s", sc->control_database);
    snprintf(t->sslmode, sizeof(t->sslmode), "%s", modes[sc->tls]);
    snprintf(t->ca, sizeof(t->ca), "%s", sc->tls_ca);
}

struct sy_pgctl_target sy_ctl_target_of(const struct sy_ctl_target *t, enum sy_side s,
                                        const char *dbname, int connect_timeout_s)
{
    struct sy_pgctl_target x = {
        .side = sy_side_name(s), .host = t->host, .port = t->port, .user = t->user,
        .password = t->password, .dbname = dbname ? dbname : t->dbname, .sslmode = t->sslmode,
        .sslrootcert = t->ca, .connect_timeout_s = connect_timeout_s,
    };
    return x;
}

/* The control connection to side s, (re)opened when missing, broken or reconfigured. */
static PGconn *ctl_conn(struct sy_switch *sw, const struct job *j, enum sy_side s, char *err,
                        size_t errlen)
{
    if (sw->conn[s] && (PQstatus(sw->conn[s]) != CONNECTION_OK ||
                        memcmp(&sw->conn_target[s], &j->t[s], sizeof(j->t[s])) != 0)) {
        PQfinish(sw->conn[s]);
        sw->conn[s] = NULL;
    }
    if (!sw->conn[s]) {
        /* Within the job's time (libpq's connect_timeout: whole seconds, at least 2). */
        int connect_s = j->timeout_ms >= 6000   ? 5
                        : j->timeout_ms >= 3000 ? (int)(j->timeout_ms / 1000)
                                                : 2;
        struct sy_pgctl_target t = sy_ctl_target_of(&j->t[s], s, NULL, connect_s);
        sw->conn[s] = sy_pgctl_connect(&t, err, errlen);
        if (sw->conn[s])
            sw->conn_target[s] = j->t[s];
    }
    return sw->conn[s];
}

/* A failed query may have broken the connection: drop it so the next job reconnects. */
static void ctl_check(struct sy_switch *sw, enum sy_side s)
{
    if (sw->conn[s] && PQstatus(sw->conn[s]) != CONNECTION_OK) {
        PQfinish(sw->conn[s]);
        sw->conn[s] = NULL;
    }
}

static void job_probe(struct sy_switch *sw, struct job *j)
{
    for (int s = 0; s < 2; s++) {
        /* A kept connection the server has since closed (a restart, a terminated backend)
         * still says CONNECTION_OK until a query fails on it: then one fresh try. */
        for (int attempt = 0; attempt < 2; attempt++) {
            int kept = sw->conn[s] != NULL;
            PGconn *c = ctl_conn(sw, j, (enum sy_side)s, j->side_err[s], sizeof(j->side_err[s]));
            j->reachable[s] = c && sy_pgctl_probe(c, sy_side_name((enum sy_side)s), &j->probe[s],
                                                  j->side_err[s], sizeof(j->side_err[s])) == 0;
            ctl_check(sw, (enum sy_side)s);
            if (j->reachable[s] || !kept || sw->conn[s])
                break;
        }
    }
    j->ok = 1;
    if (j->reachable[0] && j->reachable[1]) {
        if (sy_pgctl_repl_state(sw->conn[j->from], sw->conn[j->to], sy_side_name(j->from),
                                sy_side_name(j->to), &j->repl, j->err, sizeof(j->err)) != 0)
            j->ok = 0;
        if (j->have_reverse &&
            sy_pgctl_repl_state(sw->conn[j->to], sw->conn[j->from], sy_side_name(j->to),
                                sy_side_name(j->from), &j->reverse_repl, j->err,
                                sizeof(j->err)) != 0)
            j->have_reverse = 0;
    }
    /* An open window: the old side's forward slot keeps up with what the reverse replication
     * wrote there (a rollback skips all of it), so that neither its WAL nor a rollback's
     * switch point grows with the window's length. */
    if (j->skip_forward && j->reachable[j->window_from] && j->forward.mode == SY_REPL_LOGICAL &&
        sy_pgctl_slot_skip(sw->conn[j->window_from], j->forward.slot, 0, j->skip_err,
                           sizeof(j->skip_err)) != 0 && !j->skip_err[0])
        snprintf(j->skip_err, sizeof(j->skip_err), "failed");
}

/* One of check_more's checks: rc from a sy_pgctl_*_check (0 fine, 1 refused, -1 failed) turned
 * into the check step's refusal, prefixed with what was checked. Returns rc != 0. */
static int check_refused(struct job *j, int rc, const char *what, const char *why, const char *fix)
{
    if (rc == 0)
        return 0;
    snprintf(j->err, sizeof(j->err), "%s: %s%s", what, why, rc > 0 && fix ? fix : "");
    return 1;
}

/*
 * The checks that make a passing check step (and dry run) mean the cutover can fail only on what
 * happens after it: every role the fence will touch, the roles replication depends on, and, for
 * a logical replication, the schema and sequences in the direction the switch needs now and in
 * the direction replication runs after it (the rollback window's reverse replication; after a
 * rollback, the cutover's forward one again). Returns 0, or -1 with j->err set.
 */
static int check_more(struct sy_switch *sw, struct job *j)
{
    PGconn *from = sw->conn[j->from], *to = sw->conn[j->to];
    const char *fs = sy_side_name(j->from), *ts = sy_side_name(j->to);
    char e[sizeof(j->err) - 160], what[160];
    int rc = sy_pgctl_fence_check(from, fs, j->t[j->from].user, j->kept_roles,
                                  sizeof(j->kept_roles), e, sizeof(e));
    if (check_refused(j, rc, "fence", e, NULL))
        return -1;
    if (j->repl.mode != SY_REPL_LOGICAL)
        return 0;
    snprintf(what, sizeof(what), "schema (replication %s -> %s, subscription %s)", fs, ts,
             j->repl.subscription);
    rc = sy_pgctl_schema_check(from, to, fs, ts, j->repl.subscription, e, sizeof(e));
    if (check_refused(j, rc, what, e, NULL))
        return -1;
    rc = sy_pgctl_sub_roles_check(from, to, fs, ts, j->repl.subscription, e, sizeof(e));
    if (check_refused(j, rc, "roles", e, NULL))
        return -1;
    rc = sy_pgctl_sequences_check(from, to, fs, ts, e, sizeof(e));
    if (check_refused(j, rc, "sequences", e, NULL))
        return -1;
    if (j->rollback && j->forward.mode == SY_REPL_LOGICAL && j->reverse == SY_REVERSE_AUTO) {
        /* After the rollback the cutover's forward subscription (on `from`) resumes. */
        snprintf(what, sizeof(what), "schema (replication %s -> %s after the rollback, "
                 "subscription %s)", ts, fs, j->forward.subscription);
        rc = sy_pgctl_schema_check(to, from, ts, fs, j->forward.subscription, e, sizeof(e));
        if (check_refused(j, rc, what, e, NULL))
            return -1;
        rc = sy_pgctl_sub_roles_check(to, from, ts, fs, j->forward.subscription, e, sizeof(e));
        if (check_refused(j, rc, "roles (after the rollback)", e, NULL))
            return -1;
    } else if (!j->rollback && j->reverse == SY_REVERSE_AUTO) {
        /* The rollback window's reverse replication: FOR ALL TABLES from `to` back to `from`. */
        snprintf(what, sizeof(what), "schema (the rollback window's reverse replication %s -> "
                 "%s)", ts, fs);
        rc = sy_pgctl_schema_check(to, from, ts, fs, NULL, e, sizeof(e));
        if (check_refused(j, rc, what, e, "; or cut over without a rollback window "
                          "(reverse_replication = off)"))
            return -1;
        rc = sy_pgctl_sequences_check(to, from, ts, fs, e, sizeof(e));
        if (check_refused(j, rc, "sequences (for a rollback)", e, "; or cut over without a "
                          "rollback window (reverse_replication = off)"))
            return -1;
    }
    return 0;
}

static void job_check(struct sy_switch *sw, struct job *j)
{
    job_probe(sw, j);
    j->ok = 0;
    for (int s = 0; s < 2; s++) {
        if (!j->reachable[s]) {
            snprintf(j->err, sizeof(j->err), "the %s server is not reachable: %s",
                     sy_side_name((enum sy_side)s), j->side_err[s]);
            return;
        }
    }
    if (j->repl.mode == SY_REPL_NONE || j->repl.problem[0]) {
        /* The last probe's cause, when it saw one, says more than "still copying" does. */
        snprintf(j->err, sizeof(j->err), "no usable replication from %s to %s: %s%s%s",
                 sy_side_name(j->from), sy_side_name(j->to),
                 j->repl.problem[0] ? j->repl.problem : "no subscription or standby found",
                 j->health_cause[0] ? "; cause: " : "", j->health_cause);
        if (!j->health_cause[0])
            snprintf(j->err + strlen(j->err), sizeof(j->err) - strlen(j->err), "%s",
                     j->rollback ? " (a rollback needs the reverse replication the cutover set up)"
                                 : " (set up a subscription on the target, see docs/runbook.md)");
        return;
    }
    if (j->repl.lag_bytes < 0 || (uint64_t)j->repl.lag_bytes > j->max_lag) {
        snprintf(j->err, sizeof(j->err), "%s lags %lld bytes behind %s (max_lag is %llu); wait "
                 "for it to catch up", sy_side_name(j->to), (long long)j->repl.lag_bytes,
                 sy_side_name(j->from), (unsigned long long)j->max_lag);
        return;
    }
    struct sy_pgctl_backend old[4];
    int n = sy_pgctl_long_transactions(sw->conn[j->from], sy_side_name(j->from), j->max_tx_age_s,
                                       old, 4, j->err, sizeof(j->err));
    if (n < 0) {
        ctl_check(sw, j->from);
        return;
    }
    if (n > 0) {
        snprintf(j->err, sizeof(j->err), "a transaction on %s is older than max_transaction_age: "
                 "pid %d (user %s, application '%s') has been open %.1f s; end it or wait",
                 sy_side_name(j->from), old[0].pid, old[0].user, old[0].application,
                 old[0].xact_age_s);
        return;
    }
    if (check_more(sw, j) != 0) {
        ctl_check(sw, j->from);
        ctl_check(sw, j->to);
        return;
    }
    if (j->health_cause[0]) { /* given by run_step: the last probe saw the replication fail */
        snprintf(j->err, sizeof(j->err), "the replication %s -> %s fails, so the catch-up "
                 "would: %s", sy_side_name(j->from), sy_side_name(j->to), j->health_cause);
        return;
    }
    if (j->reverse == SY_REVERSE_AUTO && !j->rollback && !j->dry_run &&
        j->repl.mode == SY_REPL_LOGICAL) {
        /* The slow half of the rollback window's reverse replication (its slot on the target
         * waits for running transactions there), done now so that the pause only enables it. */
        struct sy_pgctl_target t = sy_ctl_target_of(&j->t[j->to], j->to, NULL, 5);
        char e[sizeof(j->err) - 100];
        if (sy_pgctl_reverse_prepare(sw->conn[j->from], sw->conn[j->to], &t, REVERSE_NAME, e,
                                     sizeof(e)) != 0) {
            snprintf(j->err, sizeof(j->err), "could not prepare the reverse replication for "
                     "rollback_window: %s", e);
            return;
        }
        j->reverse_prepared = 1;
    }
    j->ok = 1;
}

/* The end of warm: the slot the switch point will advance on the target (the reverse slot of a
 * cutover, the forward slot of a rollback) gets a fresh restart point and is advanced now,
 * outside the pause, so that the switch point decodes only the WAL of the pause. Best effort:
 * without it that advance is only slower. */
static void job_slot_mark(struct sy_switch *sw, struct job *j)
{
    PGconn *c = ctl_conn(sw, j, j->to, j->err, sizeof(j->err));
    if (c && sy_pgctl_slot_skip(c, j->slot, 1, j->skip_err, sizeof(j->skip_err)) != 0 &&
        !j->skip_err[0])
        snprintf(j->skip_err, sizeof(j->skip_err), "failed");
    j->ok = 1;
}

static void job_catchup(struct sy_switch *sw, struct job *j)
{
    PGconn *from = ctl_conn(sw, j, j->from, j->err, sizeof(j->err));
    PGconn *to = from ? ctl_conn(sw, j, j->to, j->err, sizeof(j->err)) : NULL;
    if (!to || sy_pgctl_current_lsn(from, sy_side_name(j->from), &j->target_lsn, j->err,
                                    sizeof(j->err)) != 0)
        return;
    atomic_store(&sw->cu_target, j->target_lsn);
    for (;;) {
        if (sy_pgctl_applied_lsn(from, to, &j->repl, &j->applied_lsn, j->err, sizeof(j->err)) != 0)
            return;
        atomic_store(&sw->cu_applied, j->applied_lsn);
        if (j->applied_lsn >= j->target_lsn)
            break;
        if (hr_ms() >= j->deadline_hr_ms) {
            char a[24], b[24];
            sy_lsn_format(j->applied_lsn, a, sizeof(a));
            sy_lsn_format(j->target_lsn, b, sizeof(b));
            snprintf(j->err, sizeof(j->err), "%s reached %s, not %s's final position %s, within "
                     "catchup_timeout", sy_side_name(j->to), a, sy_side_name(j->from), b);
            return;
        }
        usleep(1000);
    }
    if (j->repl.mode == SY_REPL_PHYSICAL) {
        if (sy_pgctl_promote(to, sy_side_name(j->to), 60, j->err, sizeof(j->err)) != 0)
            return;
        /* Roles are cluster-wide and physically replicated: the fence came along. */
        if (j->fence && sy_pgctl_unfence(to, sy_side_name(j->to), j->fence, j->err,
                                         sizeof(j->err)) != 0)
            return;
    }
    j->ok = 1;
}

static void job_switch(struct sy_switch *sw, struct job *j)
{
    PGconn *from = ctl_conn(sw, j, j->from, j->err, sizeof(j->err));
    PGconn *to = from ? ctl_conn(sw, j, j->to, j->err, sizeof(j->err)) : NULL;
    if (!to)
        return;
    if (j->repl.mode != SY_REPL_LOGICAL) {
        j->ok = 1; /* a promoted standby has no way back by replication */
        return;
    }
    if (j->rollback && j->reverse != SY_REVERSE_AUTO) {
        j->ok = 1; /* the operator's own reverse replication is theirs to take down */
        return;
    }
    if (j->rollback) {
        /* Back to the original side: its reverse subscription stops, forward replication
         * resumes from here (everything the original side wrote since was green's). The drops
         * follow after the switch (J_REVERSE_CLEANUP). */
        j->ok = sy_pgctl_reverse_stop(to, from, REVERSE_NAME, &j->forward, j->err,
                                      sizeof(j->err)) == 0;
        return;
    }
    if (j->reverse == SY_REVERSE_AUTO) {
        /* Prepared by the check step: only the switch-point half remains. */
        j->ok = sy_pgctl_reverse_start(from, to, sy_side_name(j->to), REVERSE_NAME, &j->repl,
                                       j->err, sizeof(j->err)) == 0;
        return;
    }
    if (j->reverse == SY_REVERSE_MANUAL) {
        /* The operator's own way back must be there before anything is written on the new
         * side: a subscription on the old side whose slot is on the new one. */
        struct sy_pgctl_repl back;
        if (sy_pgctl_repl_state(to, from, sy_side_name(j->to), sy_side_name(j->from), &back,
                                j->err, sizeof(j->err)) != 0)
            return;
        if (back.mode != SY_REPL_LOGICAL) {
            snprintf(j->err, sizeof(j->err), "reverse_replication = manual, but %s has no "
                     "subscription to %s (%s); set it up, or use reverse_replication = auto",
                     sy_side_name(j->from), sy_side_name(j->to),
                     back.problem[0] ? back.problem : "none found");
            return;
        }
    }
    j->ok = 1;
}

/* Undoes what an interrupted switch may have changed, in the order that never leaves two
 * writable sides: the target's earlier fence back first, then replication as it was before the
 * switch step (a cutover: the reverse subscription dropped, then the forward one enabled; a
 * rollback: the forward one disabled, then the reverse one enabled), the old side's own fence
 * lifted last. Every part is idempotent: it runs again until it all succeeded. */
static void job_recover(struct sy_switch *sw, struct job *j)
{
    PGconn *f = ctl_conn(sw, j, j->from, j->err, sizeof(j->err));
    PGconn *t = f ? ctl_conn(sw, j, j->to, j->err, sizeof(j->err)) : NULL;
    const char *fs = sy_side_name(j->from), *ts = sy_side_name(j->to);
    if (!t)
        return;
    if (j->to_unfenced && j->refence && !j->refenced) {
        if (sy_pgctl_fence(t, ts, j->t[j->to].user, NULL, 0, 5000, j->refence, j->err,
                           sizeof(j->err)) != 0)
            return;
        j->refenced = 1;
    }
    if (j->switch_repl && j->rollback) {
        if ((j->fwd_sub[0] && sy_pgctl_sub_set_enabled(f, fs, j->fwd_sub, 0, j->err,
                                                       sizeof(j->err)) != 0) ||
            sy_pgctl_sub_set_enabled(t, ts, REVERSE_NAME, 1, j->err, sizeof(j->err)) != 0)
            return;
    } else if (j->switch_repl || j->reverse_on) {
        if (sy_pgctl_reverse_teardown(f, t, REVERSE_NAME, NULL, j->err, sizeof(j->err)) != 0)
            return;
        if (j->switch_repl && j->fwd_sub[0] &&
            sy_pgctl_sub_set_enabled(t, ts, j->fwd_sub, 1, j->err, sizeof(j->err)) != 0)
            return;
    }
    if (j->fence && j->fence->nroles > 0 &&
        sy_pgctl_unfence(f, fs, j->fence, j->err, sizeof(j->err)) != 0)
        return;
    j->ok = 1;
}

/* Warm: the roles that can log in on `from` now, a superset of what its fence will change. */
static void job_fence_plan(struct sy_switch *sw, struct job *j)
{
    PGconn *c = ctl_conn(sw, j, j->from, j->err, sizeof(j->err));
    j->ok = c && j->fence &&
            sy_pgctl_roles(c, sy_side_name(j->from), 1, j->t[j->from].user, j->fence, j->err,
                           sizeof(j->err)) == 0;
}

/* One side's vote: s looks passive (a standby, a replication target, or fenced). */
static void vote(struct job *j, enum sy_side live, int *votes, const char *why)
{
    votes[live]++;
    size_t n = strlen(j->verdict);
    if (n < sizeof(j->verdict) - 2)
        snprintf(j->verdict + n, sizeof(j->verdict) - n, "%s%s", n ? "; " : "", why);
}

/* Whether a role that can log in on one side exists on the other without LOGIN (a fence). */
static int fenced_against(const struct sy_pgctl_fence *login, const struct sy_pgctl_fence *nologin)
{
    for (int i = 0; i < login->nroles; i++)
        for (int k = 0; k < nologin->nroles; k++)
            if (strcmp(login->roles[i], nologin->roles[k]) == 0)
                return 1;
    return 0;
}

/* At start: which side the databases say is live, from three signals (a standby is not live;
 * the side replication runs from is; a fenced side is not). All signals must agree. */
static void job_verify(struct sy_switch *sw, struct job *j)
{
    struct sy_pgctl_fence *roles = calloc(4, sizeof(*roles)); /* login, nologin per side */
    int votes[2] = {0, 0};
    j->live = -1;
    job_probe(sw, j);
    if (!roles)
        return;
    for (int s = 0; s < 2; s++) {
        if (!j->reachable[s])
            continue;
        if (j->probe[s].in_recovery)
            vote(j, (enum sy_side)!s, votes, s ? "green is a standby" : "blue is a standby");
        if (sy_pgctl_roles(sw->conn[s], sy_side_name((enum sy_side)s), 1, j->t[s].user,
                           &roles[2 * s], j->err, sizeof(j->err)) != 0 ||
            sy_pgctl_roles(sw->conn[s], sy_side_name((enum sy_side)s), 0, j->t[s].user,
                           &roles[2 * s + 1], j->err, sizeof(j->err)) != 0)
            j->reachable[s] = 0;
    }
    if (j->reachable[0] && j->reachable[1]) {
        for (int s = 0; s < 2; s++) {
            enum sy_side src = (enum sy_side)s, dst = (enum sy_side)!s;
            struct sy_pgctl_repl r;
            char why[160];
            if (sy_pgctl_repl_state(sw->conn[src], sw->conn[dst], sy_side_name(src),
                                    sy_side_name(dst), &r, j->err, sizeof(j->err)) == 0 &&
                r.mode == SY_REPL_LOGICAL && r.enabled) {
                snprintf(why, sizeof(why), "replication runs from %s to %s (subscription %s)",
                         sy_side_name(src), sy_side_name(dst), r.subscription);
                vote(j, src, votes, why);
            }
            if (fenced_against(&roles[2 * src], &roles[2 * dst + 1])) {
                snprintf(why, sizeof(why), "%s is fenced (roles that log in to %s are NOLOGIN "
                         "there)", sy_side_name(dst), sy_side_name(src));
                vote(j, src, votes, why);
            }
        }
        j->live = votes[0] && votes[1] ? -2 : votes[0] ? SY_BLUE : votes[1] ? SY_GREEN : -1;
    } else if (votes[0] || votes[1]) {
        j->live = votes[0] && votes[1] ? -2 : votes[0] ? SY_BLUE : SY_GREEN;
    } else {
        /* One side alone: it may be live when it is a primary that lets roles log in. */
        for (int s = 0; s < 2; s++)
            if (j->reachable[s] && roles[2 * s].nroles > 0 && !j->reachable[!s])
                snprintf(j->verdict, sizeof(j->verdict), "only %s answers (%s)",
                         sy_side_name((enum sy_side)s), j->side_err[!s]);
    }
    free(roles);
    j->ok = 1;
}

/* J_PROBE's second half: the health of the logical replication running now (`repl`, from the
 * active side: forward before a cutover, the window's reverse one after it): its subscription's
 * worker, error counts and owner, and whether the schema and roles still let it apply
 * (health_cause), so that a failure is reported with its cause before anyone needs it. */
static void probe_health(struct sy_switch *sw, struct job *j)
{
    if (!j->reachable[0] || !j->reachable[1] || j->repl.mode != SY_REPL_LOGICAL ||
        !sw->conn[j->from] || !sw->conn[j->to])
        return;
    const char *fs = sy_side_name(j->from), *ts = sy_side_name(j->to);
    char e[sizeof(j->health_cause) - 40];
    if (sy_pgctl_sub_health(sw->conn[j->to], ts, j->repl.subscription, &j->health, e,
                            sizeof(e)) != 0)
        return;
    int rc = sy_pgctl_schema_check(sw->conn[j->from], sw->conn[j->to], fs, ts,
                                   j->repl.subscription, e, sizeof(e));
    if (rc == 0)
        rc = sy_pgctl_sub_roles_check(sw->conn[j->from], sw->conn[j->to], fs, ts,
                                      j->repl.subscription, e, sizeof(e));
    if (rc > 0)
        snprintf(j->health_cause, sizeof(j->health_cause), "%s", e);
    ctl_check(sw, j->from);
    ctl_check(sw, j->to);
}

/* Appends name to a ", "-separated list (what fits). */
static void list_add(char *list, size_t cap, const char *name)
{
    size_t n = strlen(list);
    if (n + 8 < cap)
        snprintf(list + n, cap - n, "%s%s", n ? ", " : "", name);
}

static int role_in(const struct sy_pgctl_fence *f, const char *role)
{
    for (int i = 0; i < f->nroles; i++)
        if (strcmp(f->roles[i], role) == 0)
            return 1;
    return 0;
}

/* One side's fence as its database reports it: with a recorded fence, whether every role it
 * recorded is still NOLOGIN there; without one, whether roles that log in to the other side are
 * NOLOGIN there (what a fence does; job_verify reads it the same way). roles: login and nologin
 * roles per side. */
static void fence_of(struct job *j, int s, const struct sy_pgctl_fence *roles, const int *got)
{
    const struct sy_pgctl_fence *rec = &j->rec[s], *login = &roles[2 * s],
                                *nologin = &roles[2 * s + 1];
    char names[160] = "";
    int n = 0, held = 0;
    const char *side = sy_side_name((enum sy_side)s), *other = sy_side_name((enum sy_side)!s);
    if (rec->nroles > 0) {
        for (int i = 0; i < rec->nroles; i++) {
            if (role_in(login, rec->roles[i])) {
                n++;
                list_add(names, sizeof(names), rec->roles[i]);
            }
            held += role_in(nologin, rec->roles[i]);
        }
        j->fence_known[s] = 1;
        j->fence_db[s] = n == 0 && held > 0;
        if (n)
            snprintf(j->fence_detail[s], sizeof(j->fence_detail[s]), "%d of the %d roles the "
                     "fence recorded can log in to %s (%s)", n, rec->nroles, side, names);
        else if (held)
            snprintf(j->fence_detail[s], sizeof(j->fence_detail[s]), "the %d roles the fence "
                     "recorded are NOLOGIN on %s", held, side);
        else
            snprintf(j->fence_detail[s], sizeof(j->fence_detail[s]), "none of the roles the "
                     "fence recorded exist on %s any more", side);
        return;
    }
    if (!got[!s])
        return;
    for (int i = 0; i < roles[2 * !s].nroles; i++)
        if (role_in(nologin, roles[2 * !s].roles[i])) {
            n++;
            list_add(names, sizeof(names), roles[2 * !s].roles[i]);
        }
    j->fence_known[s] = 1;
    j->fence_db[s] = n > 0;
    if (n)
        snprintf(j->fence_detail[s], sizeof(j->fence_detail[s]), "%d roles that log in to %s "
                 "are NOLOGIN on %s (%s)", n, other, side, names);
    else
        snprintf(j->fence_detail[s], sizeof(j->fence_detail[s]), "every role that logs in to "
                 "%s can log in to %s", other, side);
}

/* J_PROBE's third part: each side's fence as its database reports it (status shows it beside
 * the state file's record, and a disagreement is logged). */
static void probe_fences(struct sy_switch *sw, struct job *j)
{
    struct sy_pgctl_fence *roles = j->rec ? calloc(4, sizeof(*roles)) : NULL;
    int got[2] = {0, 0};
    char e[256];
    if (!roles)
        return;
    for (int s = 0; s < 2; s++)
        got[s] = j->reachable[s] && sw->conn[s] &&
                 sy_pgctl_roles(sw->conn[s], sy_side_name((enum sy_side)s), 1, j->t[s].user,
                                &roles[2 * s], e, sizeof(e)) == 0 &&
                 sy_pgctl_roles(sw->conn[s], sy_side_name((enum sy_side)s), 0, j->t[s].user,
                                &roles[2 * s + 1], e, sizeof(e)) == 0;
    for (int s = 0; s < 2; s++)
        if (got[s])
            fence_of(j, s, roles, got);
    free(roles);
    ctl_check(sw, SY_BLUE);
    ctl_check(sw, SY_GREEN);
}

static void job_run(struct sy_switch *sw, struct job *j)
{
    uint64_t t0 = hr_ms();
    PGconn *c;
    j->ok = 0;
    /* No statement may hold the control thread past the job's time: a frozen server must not
     * keep an abort from lifting the fence on the other one. */
    sy_pgctl_set_timeout(j->timeout_ms ? j->timeout_ms : 10000);
    switch (j->kind) {
    case J_PROBE:
        job_probe(sw, j);
        probe_health(sw, j);
        probe_fences(sw, j);
        break;
    case J_CHECK: job_check(sw, j); break;
    case J_FENCE:
        c = ctl_conn(sw, j, j->side, j->err, sizeof(j->err));
        j->ok = c && sy_pgctl_fence(c, sy_side_name(j->side), j->t[j->side].user, j->keep_pids,
                                    j->nkeep, 5000, j->fence, j->err, sizeof(j->err)) == 0;
        break;
    case J_UNFENCE:
        c = ctl_conn(sw, j, j->side, j->err, sizeof(j->err));
        j->ok = c && sy_pgctl_unfence(c, sy_side_name(j->side), j->fence, j->err,
                                      sizeof(j->err)) == 0;
        break;
    case J_CATCHUP: job_catchup(sw, j); break;
    case J_SEQUENCES: {
        PGconn *a = ctl_conn(sw, j, j->from, j->err, sizeof(j->err));
        PGconn *b = a ? ctl_conn(sw, j, j->to, j->err, sizeof(j->err)) : NULL;
        j->ok = j->repl.mode != SY_REPL_LOGICAL ||
                (b && sy_pgctl_sync_sequences(a, b, sy_side_name(j->to), &j->nseq, j->err,
                                              sizeof(j->err)) == 0);
        break;
    }
    case J_SWITCH: job_switch(sw, j); break;
    case J_SLOT_MARK: job_slot_mark(sw, j); break;
    case J_RECOVER: job_recover(sw, j); break;
    case J_FENCE_PLAN: job_fence_plan(sw, j); break;
    case J_VERIFY: job_verify(sw, j); break;
    case J_COMMIT:
    case J_REVERSE_DROP:
    case J_REVERSE_CLEANUP:
    case J_LEFTOVER: {
        PGconn *a = ctl_conn(sw, j, j->from, j->err, sizeof(j->err));
        PGconn *b = a ? ctl_conn(sw, j, j->to, j->err, sizeof(j->err)) : NULL;
        j->ok = b && sy_pgctl_reverse_teardown(a, b, REVERSE_NAME, NULL, j->err,
                                               sizeof(j->err)) == 0;
        break;
    }
    }
    ctl_check(sw, SY_BLUE);
    ctl_check(sw, SY_GREEN);
    j->elapsed_ms = hr_ms() - t0;
}

static void ctl_run(struct sy_worker *w, struct sy_work *item)
{
    job_run(w->data, (struct job *)item);
}

/* The control thread ends: its connections go with it. */
static void ctl_exit(struct sy_worker *w)
{
    struct sy_switch *sw = w->data;
    for (int s = 0; s < 2; s++)
        if (sw->conn[s])
            PQfinish(sw->conn[s]);
    sw->conn[0] = sw->conn[1] = NULL;
}

static struct job *job_new(struct sy_switch *sw, enum job_kind kind)
{
    struct job *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->kind = kind;
    j->from = sw->running ? sw->from : sw->p->active;
    j->to = sw->running ? sw->to : (enum sy_side)!sw->p->active;
    sy_ctl_target_fill(&j->t[0], &sw->p->cfg, SY_BLUE);
    sy_ctl_target_fill(&j->t[1], &sw->p->cfg, SY_GREEN);
    j->repl = sw->run_repl;
    j->reverse_repl = sw->reverse_repl;
    j->forward = sw->window_forward;
    j->timeout_ms = sw->p->cfg.step_timeout_ms > 1000 ? sw->p->cfg.step_timeout_ms : 1000;
    return j;
}

static void job_submit(struct sy_switch *sw, struct job *j)
{
    sy_worker_submit(&sw->ctl, &j->work);
}

static void job_free(struct job *j)
{
    if (!j)
        return;
    free(j->keep_pids);
    memset(j->t, 0, sizeof(j->t)); /* passwords */
    free(j);
}

/* ---- the state file ---- */

static void fence_json(struct json_object *o, const char *key, const struct sy_pgctl_fence *f)
{
    struct json_object *arr = json_object_new_array();
    for (int i = 0; i < f->nroles; i++)
        json_object_array_add(arr, json_object_new_string(f->roles[i]));
    json_object_object_add(o, key, arr);
}

/* Puts text in path atomically (a new file, synced, renamed over the old). 0, or -1 with
 * errno set. */
static int state_file_put(const char *path, const char *text)
{
    char tmp[SY_PATH_MAX + 16];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int rc = -1, e = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    size_t n = strlen(text);
    if (write(fd, text, n) == (ssize_t)n && write(fd, "\n", 1) == 1 && fsync(fd) == 0)
        rc = 0;
    e = errno;
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -1;
        e = errno;
    }
    errno = e;
    return rc;
}

static void writer_thread(void *arg)
{
    struct sy_switch *sw = arg;
    uv_mutex_lock(&sw->wmu);
    for (;;) {
        while (!sw->wtext && !sw->wstop)
            uv_cond_wait(&sw->wcv, &sw->wmu);
        if (!sw->wtext)
            break; /* stopping, and everything is written */
        char *buf = sw->wtext;
        uint64_t seq = sw->wseq;
        sw->wtext = NULL;
        uv_mutex_unlock(&sw->wmu);
        int rc = state_file_put(buf, buf + strlen(buf) + 1);
        int e = errno;
        free(buf);
        uv_mutex_lock(&sw->wmu);
        if (rc == 0) {
            sw->wseq_done = seq;
        } else {
            sw->wseq_failed = seq;
            sw->werrno = e;
        }
        uv_cond_broadcast(&sw->wcv);
        uv_async_send(&sw->async);
    }
    uv_mutex_unlock(&sw->wmu);
}

/* 1 when snapshot seq (or a newer one) is on disk, 0 while it is being written, -1 when it
 * failed and nothing newer was written since. */
static int state_durable(struct sy_switch *sw, uint64_t seq)
{
    uv_mutex_lock(&sw->wmu);
    int r = sw->wseq_done >= seq ? 1 : sw->wseq_failed >= seq ? -1 : 0;
    uv_mutex_unlock(&sw->wmu);
    return r;
}

static struct json_object *pend_json(const struct sy_switch *sw);

/* Queues the state (phase: "idle", "fencing", "switching") for the writer thread and returns
 * its seq (0 when it could not even be built, which is logged). Without the thread (not
 * started yet, or stopped) it is written here. */
static uint64_t state_write(struct sy_switch *sw, const char *phase, enum sy_side active)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "active", json_object_new_string(sy_side_name(active)));
    json_object_object_add(o, "phase", json_object_new_string(phase));
    if (sw->running) {
        json_object_object_add(o, "from", json_object_new_string(sy_side_name(sw->from)));
        json_object_object_add(o, "to", json_object_new_string(sy_side_name(sw->to)));
    }
    json_object_object_add(o, "window_open", json_object_new_boolean(sw->window_open));
    json_object_object_add(o, "window_until_unix_ms",
                           json_object_new_int64((int64_t)sw->window_until_unix_ms));
    json_object_object_add(o, "window_from",
                           json_object_new_string(sy_side_name(sw->window_from)));
    json_object_object_add(o, "forward_subscription",
                           json_object_new_string(sw->window_forward.subscription));
    json_object_object_add(o, "forward_slot", json_object_new_string(sw->window_forward.slot));
    if (sw->leftover)
        json_object_object_add(o, "reverse_leftover_subscription_on",
                               json_object_new_string(sy_side_name(sw->leftover_sub)));
    fence_json(o, "fence_blue", &sw->fence[SY_BLUE]);
    fence_json(o, "fence_green", &sw->fence[SY_GREEN]);
    json_object_object_add(o, "fenced_blue", json_object_new_boolean(sw->fenced[SY_BLUE]));
    json_object_object_add(o, "fenced_green", json_object_new_boolean(sw->fenced[SY_GREEN]));
    if (sw->pend)
        json_object_object_add(o, "pending", pend_json(sw));
    const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY);
    size_t plen = strlen(sw->state_path), tlen = strlen(text);
    char *buf = malloc(plen + tlen + 2);
    uint64_t seq = 0;
    if (!buf) {
        sy_error("cannot write the state file %s: out of memory", sw->state_path);
    } else if (!sw->writer_started) {
        memcpy(buf, sw->state_path, plen + 1);
        if (state_file_put(buf, text) != 0)
            sy_error("cannot write the state file %s: %s", sw->state_path, strerror(errno));
        else
            seq = ++sw->wseq, sw->wseq_done = seq;
        free(buf);
    } else {
        memcpy(buf, sw->state_path, plen + 1);
        memcpy(buf + plen + 1, text, tlen + 1);
        uv_mutex_lock(&sw->wmu);
        free(sw->wtext); /* superseded */
        sw->wtext = buf;
        seq = ++sw->wseq;
        uv_cond_signal(&sw->wcv);
        uv_mutex_unlock(&sw->wmu);
    }
    json_object_put(o);
    return seq;
}

/* Logs a failed write once (on the loop). */
static void state_report_failure(struct sy_switch *sw)
{
    uv_mutex_lock(&sw->wmu);
    uint64_t failed = sw->wseq_failed, done = sw->wseq_done;
    int e = sw->werrno;
    uv_mutex_unlock(&sw->wmu);
    if (failed > done && failed > sw->wseq_reported) {
        sw->wseq_reported = failed;
        sy_error("cannot write the state file %s: %s", sw->state_path, strerror(e));
    }
}

static void fence_from_json(struct json_object *o, const char *key, struct sy_pgctl_fence *f)
{
    struct json_object *arr;
    memset(f, 0, sizeof(*f));
    if (!json_object_object_get_ex(o, key, &arr) || !json_object_is_type(arr, json_type_array))
        return;
    size_t n = json_object_array_length(arr);
    for (size_t i = 0; i < n && f->nroles < SY_FENCE_MAX_ROLES; i++)
        snprintf(f->roles[f->nroles++], sizeof(f->roles[0]), "%s",
                 json_object_get_string(json_object_array_get_idx(arr, i)));
}

/* The write-ahead record of a running (or interrupted) switch's database changes. */
static struct json_object *pend_json(const struct sy_switch *sw)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "operation",
                           json_object_new_string(sw->pend_rollback ? "rollback" : "cutover"));
    json_object_object_add(o, "from", json_object_new_string(sy_side_name(sw->pend_from)));
    json_object_object_add(o, "to", json_object_new_string(sy_side_name(sw->pend_to)));
    json_object_object_add(o, "reverse_prepared", json_object_new_boolean(sw->pend_reverse));
    json_object_object_add(o, "to_unfenced", json_object_new_boolean(sw->pend_to_unfenced));
    json_object_object_add(o, "switch_replication", json_object_new_boolean(sw->pend_switch_repl));
    json_object_object_add(o, "forward_subscription", json_object_new_string(sw->pend_fwd_sub));
    fence_json(o, "fence_plan", &sw->pend_plan);
    return o;
}

static int jbool(struct json_object *o, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(o, key, &v) && json_object_get_boolean(v);
}

static void pend_from_json(struct sy_switch *sw, struct json_object *o)
{
    struct json_object *v;
    sw->pend = 1;
    sw->pend_rollback = json_object_object_get_ex(o, "operation", &v) &&
                        strcmp(json_object_get_string(v), "rollback") == 0;
    sw->pend_from = json_object_object_get_ex(o, "from", &v) &&
                            strcmp(json_object_get_string(v), "green") == 0 ? SY_GREEN : SY_BLUE;
    sw->pend_to = (enum sy_side)!sw->pend_from;
    sw->pend_reverse = jbool(o, "reverse_prepared");
    sw->pend_to_unfenced = jbool(o, "to_unfenced");
    sw->pend_switch_repl = jbool(o, "switch_replication");
    if (json_object_object_get_ex(o, "forward_subscription", &v))
        snprintf(sw->pend_fwd_sub, sizeof(sw->pend_fwd_sub), "%s", json_object_get_string(v));
    fence_from_json(o, "fence_plan", &sw->pend_plan);
}

/* Makes dir and its missing parents (mode 0700). 0, or -1 with errno set. */
static int mkdir_p(char *dir)
{
    for (char *q = dir + 1; *q; q++) {
        if (*q != '/')
            continue;
        *q = 0;
        int rc = mkdir(dir, 0700);
        *q = '/';
        if (rc != 0 && errno != EEXIST)
            return -1;
    }
    return mkdir(dir, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

int sy_switch_default_state_path(const char *admin_socket, char *out, size_t cap)
{
    char dir[SY_PATH_MAX], name[SY_PATH_MAX];
    const char *sd = getenv("STATE_DIRECTORY"), *xdg = getenv("XDG_STATE_HOME");
    const char *home = getenv("HOME");
    /* systemd's StateDirectory= (its first entry), else /var/lib/switchyard for root or when
     * writable, else the user's XDG state directory: never /tmp, which a reboot empties. */
    if (sd && sd[0]) {
        snprintf(dir, sizeof(dir), "%.*s", (int)strcspn(sd, ":"), sd);
    } else if (geteuid() == 0 || access("/var/lib/switchyard", W_OK) == 0) {
        snprintf(dir, sizeof(dir), "/var/lib/switchyard");
    } else if (xdg && xdg[0] == '/') {
        snprintf(dir, sizeof(dir), "%s/switchyard", xdg);
    } else if (home && home[0] == '/') {
        snprintf(dir, sizeof(dir), "%s/.local/state/switchyard", home);
    } else {
        return -1;
    }
    /* One file per admin_socket (each daemon has its own): its path, '/' as '-'. */
    size_t n = 0;
    for (const char *c = admin_socket; *c && n + 1 < sizeof(name); c++)
        if (!(n == 0 && *c == '/'))
            name[n++] = *c == '/' ? '-' : *c;
    name[n] = 0;
    if (mkdir_p(dir) != 0)
        return -1;
    return snprintf(out, cap, "%s/%s.state", dir, name) < (int)cap ? 0 : -1;
}

static void state_path_init(struct sy_switch *sw, const struct sy_config *cfg)
{
    if (cfg->state_file[0])
        snprintf(sw->state_path, sizeof(sw->state_path), "%s", cfg->state_file);
    else if (sy_switch_default_state_path(cfg->admin_socket, sw->state_path,
                                          sizeof(sw->state_path)) != 0)
        snprintf(sw->state_path, sizeof(sw->state_path), "%s.state", cfg->admin_socket);
}

static struct sy_switch *sw_alloc(struct sy_proxy *p)
{
    if (!p->sw) {
        p->sw = calloc(1, sizeof(struct sy_switch));
        if (p->sw)
            p->sw->p = p;
    }
    return p->sw;
}

int sy_switch_load_state(struct sy_proxy *p)
{
    struct sy_switch *sw = sw_alloc(p);
    if (!sw)
        return -1;
    state_path_init(sw, &p->cfg);
    struct json_object *o = json_object_from_file(sw->state_path);
    if (!o) {
        if (access(sw->state_path, F_OK) == 0) {
            sy_error("the state file %s cannot be read as JSON; it says which side is active. "
                     "Fix or remove it (removing it routes to active = %s from the config)",
                     sw->state_path, sy_side_name(p->cfg.active));
            return -1;
        }
        /* No record: the databases are asked which side is live before anyone is routed
         * (sy_switch_start, J_VERIFY). */
        sw->start_paused = 1;
        sy_info("state file %s does not exist: checking with both databases which side is "
                "live before routing (config: active = %s)", sw->state_path,
                sy_side_name(p->cfg.active));
        return 0;
    }
    struct json_object *v;
    const char *active = json_object_object_get_ex(o, "active", &v) ? json_object_get_string(v) : "";
    const char *phase = json_object_object_get_ex(o, "phase", &v) ? json_object_get_string(v) : "";
    if (strcmp(active, "blue") != 0 && strcmp(active, "green") != 0) {
        sy_error("the state file %s names no active side; fix or remove it", sw->state_path);
        json_object_put(o);
        return -1;
    }
    p->active = strcmp(active, "green") == 0 ? SY_GREEN : SY_BLUE;
    if (json_object_object_get_ex(o, "forward_subscription", &v))
        snprintf(sw->window_forward.subscription, sizeof(sw->window_forward.subscription), "%s",
                 json_object_get_string(v));
    if (json_object_object_get_ex(o, "forward_slot", &v))
        snprintf(sw->window_forward.slot, sizeof(sw->window_forward.slot), "%s",
                 json_object_get_string(v));
    sw->window_forward.mode = sw->window_forward.subscription[0] ? SY_REPL_LOGICAL : SY_REPL_NONE;
    fence_from_json(o, "fence_blue", &sw->fence[SY_BLUE]);
    fence_from_json(o, "fence_green", &sw->fence[SY_GREEN]);
    sw->fenced[SY_BLUE] = json_object_object_get_ex(o, "fenced_blue", &v) && json_object_get_boolean(v);
    sw->fenced[SY_GREEN] = json_object_object_get_ex(o, "fenced_green", &v) && json_object_get_boolean(v);
    sw->window_open = json_object_object_get_ex(o, "window_open", &v) && json_object_get_boolean(v);
    sw->window_until_unix_ms = json_object_object_get_ex(o, "window_until_unix_ms", &v)
                                   ? (uint64_t)json_object_get_int64(v) : 0;
    sw->window_from = json_object_object_get_ex(o, "window_from", &v) &&
                              strcmp(json_object_get_string(v), "green") == 0 ? SY_GREEN : SY_BLUE;
    if (json_object_object_get_ex(o, "pending", &v) && json_object_is_type(v, json_type_object)) {
        pend_from_json(sw, v);
        sy_warn("the state file records a %s from %s to %s whose database changes may have to "
                "be undone (%s%s%s): done as soon as both sides answer", sw->pend_rollback ?
                "rollback" : "cutover", sy_side_name(sw->pend_from), sy_side_name(sw->pend_to),
                sw->pend_to_unfenced ? "the fence on the target lifted; " : "",
                sw->pend_switch_repl ? "replication switched; " : "",
                sw->pend_reverse ? "reverse replication prepared" : "fence");
    }
    if (json_object_object_get_ex(o, "reverse_leftover_subscription_on", &v)) {
        sw->leftover = 1;
        sw->leftover_sub = strcmp(json_object_get_string(v), "green") == 0 ? SY_GREEN : SY_BLUE;
        sy_warn("the state file says the reverse replication %s is still to be removed "
                "(subscription on %s): retried once both sides answer", REVERSE_NAME,
                sy_side_name(sw->leftover_sub));
    }
    if (strcmp(phase, "idle") != 0) {
        /* A switch was interrupted before its switch point (the active side is written only
         * there): the sessions were on the recorded side, which stays active; its fence, if one
         * was applied, is lifted once the control connection is up. */
        enum sy_side was = p->active;
        sy_warn("the state file says a switch was interrupted (%s) by a restart: staying on %s%s",
                phase, sy_side_name(was),
                sw->fenced[was] ? "; its fence is lifted as soon as the control connection is up"
                                : "");
        if (strcmp(phase, "fencing") == 0 && sw->fence[was].nroles == 0)
            sy_warn("the fence on %s may have been partly applied before the roles it changed "
                    "were recorded: check pg_roles for roles that lost LOGIN", sy_side_name(was));
    }
    sy_info("state file %s: active side is %s", sw->state_path, sy_side_name(p->active));
    json_object_put(o);
    return 0;
}

/* ---- progress and the report ---- */

static void watchers_send(struct sy_switch *sw, struct json_object *o)
{
    for (int i = 0; i < MAX_WATCHERS; i++)
        if (sw->watchers[i].a)
            sy_admin_send(sw->watchers[i].a, json_object_get(o));
    json_object_put(o);
}

void sy_switch_forget_admin(struct sy_proxy *p, struct sy_admin_conn *a)
{
    struct sy_switch *sw = sw_of(p);
    for (int i = 0; sw && i < MAX_WATCHERS; i++)
        if (sw->watchers[i].a == a)
            sw->watchers[i].a = NULL;
}

static const char *op_name(const struct sy_switch *sw)
{
    return sw->co.opt.rollback ? "rollback" : "cutover";
}

static uint32_t sessions_busy(struct sy_proxy *p)
{
    uint32_t n = 0;
    for (struct sy_session *s = p->sessions; s; s = s->next)
        if (s->phase == SY_PHASE_READY && !s->held && s->tx != SY_TX_IDLE)
            n++;
    return n;
}

/* "1.2 MB", "830 kB", "312 bytes". */
static void fmt_bytes(uint64_t n, char *out, size_t cap)
{
    if (n >= 1000000)
        snprintf(out, cap, "%.1f MB", (double)n / 1e6);
    else if (n >= 1000)
        snprintf(out, cap, "%.1f kB", (double)n / 1e3);
    else
        snprintf(out, cap, "%llu bytes", (unsigned long long)n);
}

/* "830 ms", "1.9 s". */
static void fmt_ms(uint64_t ms, char *out, size_t cap)
{
    if (ms >= 1000)
        snprintf(out, cap, "%.1f s", (double)ms / 1000.0);
    else
        snprintf(out, cap, "%llu ms", (unsigned long long)ms);
}

/* The drain's progress: how many of the old side's sessions are at a transaction boundary, how
 * many are in a transaction (or a request) and the oldest of those. */
static void drain_detail(struct sy_switch *sw, struct json_object *o, char *buf, size_t cap)
{
    uint64_t now = uv_now(sw->p->loop), oldest = 0;
    int total = 0, ready = 0, in_tx = 0, login = 0;
    for (struct sy_session *s = sw->p->sessions; s; s = s->next) {
        if (s->phase != SY_PHASE_READY) {
            login += s->server && !s->wait_server; /* logging into the old side right now */
            continue;
        }
        if (s->side != sw->from)
            continue;
        total++;
        if (s->tx == SY_TX_IDLE && s->server && !s->server->inflight && !s->server->len) {
            ready++;
            continue;
        }
        in_tx++;
        if (s->tx_started_ms && now - s->tx_started_ms > oldest)
            oldest = now - s->tx_started_ms;
    }
    char age[32];
    fmt_ms(oldest, age, sizeof(age));
    int n = snprintf(buf, cap, "%d of %d sessions at a transaction boundary", ready, total);
    if (n > 0 && (size_t)n < cap && in_tx)
        n += snprintf(buf + n, cap - (size_t)n, " (%d in a transaction, oldest %s)", in_tx, age);
    if (n > 0 && (size_t)n < cap && login)
        n += snprintf(buf + n, cap - (size_t)n, "; %d logging in", login);
    if (n > 0 && (size_t)n < cap && sw->unmovable_report[0])
        snprintf(buf + n, cap - (size_t)n, "; %s", sw->unmovable_report);
    json_object_object_add(o, "sessions", json_object_new_int(total));
    json_object_object_add(o, "at_boundary", json_object_new_int(ready));
    json_object_object_add(o, "in_transaction", json_object_new_int(in_tx));
    json_object_object_add(o, "oldest_transaction_ms", json_object_new_int64((int64_t)oldest));
}

/* The catch-up's progress, from the positions the control thread publishes as it polls. */
static void catchup_detail(struct sy_switch *sw, struct json_object *o, char *buf, size_t cap)
{
    uint64_t target = atomic_load(&sw->cu_target), applied = atomic_load(&sw->cu_applied);
    const char *f = sy_side_name(sw->from), *t = sy_side_name(sw->to);
    char lsn[24], left[32];
    if (!target) {
        snprintf(buf, cap, "reading %s's position after the fence", f);
        return;
    }
    sy_lsn_format(target, lsn, sizeof(lsn));
    json_object_object_add(o, "fence_lsn", json_object_new_string(lsn));
    if (!applied) {
        snprintf(buf, cap, "waiting for %s to report how far it applied (%s's fence position %s)",
                 t, f, lsn);
        return;
    }
    uint64_t behind = applied >= target ? 0 : target - applied;
    json_object_object_add(o, "behind_bytes", json_object_new_int64((int64_t)behind));
    fmt_bytes(behind, left, sizeof(left));
    if (behind)
        snprintf(buf, cap, "%s %s behind %s's fence position %s", t, left, f, lsn);
    else
        snprintf(buf, cap, "%s has %s's fence position %s", t, f, lsn);
}

/* Counts sessions by move state. */
static uint32_t count_moving(const struct sy_switch *sw, uint8_t st)
{
    uint32_t n = 0;
    for (struct sy_session *s = sw->p->sessions; s; s = s->next)
        n += s->move_state == st;
    return n;
}

/* What the running step is doing now, in a few words (the progress line's detail). */
static void step_detail(struct sy_switch *sw, struct json_object *o, char *buf, size_t cap)
{
    const char *f = sy_side_name(sw->from), *t = sy_side_name(sw->to);
    uint32_t warm = count_moving(sw, MS_WARM) + count_moving(sw, MS_WARM_READING);
    uint32_t prepared = count_moving(sw, MS_PREPARED);
    buf[0] = 0;
    switch (sw->co.step) {
    case SY_CO_CHECK:
        snprintf(buf, cap, "checking %s and %s: replication and lag, long transactions, the "
                 "roles the fence changes, schema and sequences both ways", f, t);
        break;
    case SY_CO_WARM:
        if (!warm && !sw->warming)
            snprintf(buf, cap, "%s", sw->co.opt.dry_run ? "logging every session into the "
                     "target" : "recording the roles the fence may change");
        else
            snprintf(buf, cap, "%u of %u sessions logged into %s; %u had their state read "
                     "ahead", warm, warm + sw->warming, t, sw->warm_reads);
        json_object_object_add(o, "warming", json_object_new_int64(sw->warming));
        break;
    case SY_CO_DRAIN:
        drain_detail(sw, o, buf, cap);
        json_object_object_add(o, "busy_sessions", json_object_new_int64(sessions_busy(sw->p)));
        break;
    case SY_CO_FENCE:
        snprintf(buf, cap, "taking LOGIN from %s's roles and ending its outside sessions; %u of "
                 "%u sessions' state replayed on %s", f, prepared, prepared + sw->preparing, t);
        break;
    case SY_CO_CATCHUP: catchup_detail(sw, o, buf, cap); break;
    case SY_CO_SEQUENCES: snprintf(buf, cap, "copying sequences from %s to %s", f, t); break;
    case SY_CO_MOVE:
        snprintf(buf, cap, "%u of %u sessions' state replayed on %s", prepared,
                 prepared + sw->preparing, t);
        break;
    case SY_CO_SWITCH:
        snprintf(buf, cap, "switching replication, then moving %u sessions to %s", prepared, t);
        break;
    case SY_CO_UNFENCE:
        snprintf(buf, cap, "aborting (%.400s): giving %s's roles LOGIN back", sw->co.reason, f);
        break;
    case SY_CO_RESTORE:
        snprintf(buf, cap, "aborting (%.400s): resuming clients on %s", sw->co.reason, f);
        break;
    default: break;
    }
}

/* A progress line for the watchers and the log: the step, and what it is doing (what, or the
 * step's own detail). */
static void progress(struct sy_switch *sw, const char *what)
{
    struct sy_proxy *p = sw->p;
    uint64_t now = uv_now(p->loop);
    struct json_object *o = json_object_new_object();
    char detail[700];
    json_object_object_add(o, "progress", json_object_new_string(sy_co_step_name(sw->co.step)));
    json_object_object_add(o, "elapsed_ms", json_object_new_int64((int64_t)(now - sw->co.started_ms)));
    step_detail(sw, o, detail, sizeof(detail));
    if (what && what[0])
        snprintf(detail, sizeof(detail), "%s", what);
    if (detail[0])
        json_object_object_add(o, "detail", json_object_new_string(detail));
    sy_info("%s: %s: %s", op_name(sw), sy_co_step_name(sw->co.step), detail);
    sw->last_progress_ms = now;
    watchers_send(sw, o);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* max and p99 of the pauses the last resume released. */
static void pause_stats(struct sy_switch *sw)
{
    struct sy_proxy *p = sw->p;
    sw->held_at_report = p->npause;
    sw->max_pause = sw->p99_pause = 0;
    if (p->npause == 0)
        return;
    qsort(p->pause_ms, p->npause, sizeof(uint32_t), cmp_u32);
    sw->max_pause = p->pause_ms[p->npause - 1];
    size_t i = (size_t)((p->npause * 99 + 99) / 100);
    sw->p99_pause = p->pause_ms[i > 0 ? i - 1 : 0];
}

/* The report's part about the checks before the pause: a dry run's real logins, and whether the
 * rollback window's reverse replication was found able to apply. */
static void report_checks(struct sy_switch *sw, struct json_object *o)
{
    const struct sy_cutover *co = &sw->co;
    if (co->opt.dry_run && (co->entered & (1u << SY_CO_WARM))) {
        json_object_object_add(o, "sessions_logged_in", json_object_new_int(sw->dry_logins));
        if (sw->dry_skipped)
            json_object_object_add(o, "sessions_login_after_unfence",
                                   json_object_new_int(sw->dry_skipped));
    }
    if (co->done && !co->opt.rollback && sw->window_open)
        json_object_object_add(o, "rollback_check", json_object_new_string(
            "the reverse replication's schema, roles and sequences were checked before the "
            "pause; status says at once if it fails later (rollback_not_possible)"));
}

/* A wall-clock time in UTC: ISO 8601 ("2026-12-04T22:31:05Z", iso 1) or for people
 * ("2026-12-04 22:31:05 UTC"). */
static void fmt_utc(uint64_t unix_ms_at, int iso, char *out, size_t cap)
{
    time_t t = (time_t)(unix_ms_at / 1000u);
    struct tm tm;
    if (!gmtime_r(&t, &tm) ||
        strftime(out, cap, iso ? "%Y-%m-%dT%H:%M:%SZ" : "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(out, cap, "?");
}

/* The step names of the summary line. */
static const char *step_words(enum sy_co_step step)
{
    switch (step) {
    case SY_CO_WARM: return "warm-up";
    case SY_CO_CATCHUP: return "catch-up";
    default: return sy_co_step_name(step);
    }
}

/* The report's last line for people: what happened, how long clients waited, and what holds
 * now (the rollback window's end; after an abort, which side is live and writable). */
static void report_summary(struct sy_switch *sw, char *buf, size_t cap)
{
    const struct sy_cutover *co = &sw->co;
    const char *op = op_name(sw), *f = sy_side_name(sw->from), *t = sy_side_name(sw->to);
    uint64_t paused = co->paused_at_ms && co->resumed_at_ms ? co->resumed_at_ms - co->paused_at_ms
                                                             : 0;
    char took[32], pause[32], until[40];
    snprintf(took, sizeof(took), "%.2f s", (double)(co->finished_ms - co->started_ms) / 1000.0);
    fmt_ms(paused, pause, sizeof(pause));
    const char *cause = strstr(co->reason, ": ");
    cause = cause ? cause + 2 : co->reason;
    int n;
    if (co->done) {
        n = snprintf(buf, cap, "%s to %s done in %s; clients paused at most %u ms", op, t, took,
                     sw->max_pause);
        if (n > 0 && (size_t)n < cap && sw->sessions_closed + sw->sessions_forced)
            n += snprintf(buf + n, cap - (size_t)n, " (%u sessions closed, %u ended by --force)",
                          sw->sessions_closed, sw->sessions_forced);
        if (n <= 0 || (size_t)n >= cap)
            return;
        if (!co->opt.rollback && sw->window_open) {
            fmt_utc(sw->window_until_unix_ms, 0, until, sizeof(until));
            snprintf(buf + n, cap - (size_t)n, "; rollback window open until %s (switchyardctl "
                     "rollback)", until);
        } else if (!co->opt.rollback) {
            snprintf(buf + n, cap - (size_t)n, "; no rollback window: %s stays fenced", f);
        } else {
            snprintf(buf + n, cap - (size_t)n, "; %s is fenced, the rollback window is closed", f);
        }
    } else if (co->opt.dry_run && !co->failed_step) {
        snprintf(buf, cap, "%s dry run passed in %s: every check passed and %d sessions logged "
                 "into %s; nothing was changed", op, took, sw->dry_logins, t);
    } else if (co->opt.dry_run) {
        snprintf(buf, cap, "%s dry run refused at %s: %s; nothing was changed", op,
                 step_words(co->failed_step), cause);
    } else if (co->unfence_error[0]) {
        snprintf(buf, cap, "%s aborted at %s: %.900s; still on %s, BUT %s IS STILL FENCED (%s): give "
                 "its roles LOGIN back now; clients paused %s", op, step_words(co->failed_step),
                 cause, f, f, co->unfence_error, pause);
    } else {
        snprintf(buf, cap, "%s aborted at %s: %s; still on %s, %s writable, %s", op,
                 step_words(co->failed_step), cause, f, f,
                 paused ? "clients paused " : "clients were not paused");
        if (paused && strlen(buf) + strlen(pause) < cap)
            strcat(buf, pause);
    }
}

static struct json_object *report(struct sy_switch *sw)
{
    const struct sy_cutover *co = &sw->co;
    struct json_object *o = json_object_new_object();
    char a[24], b[24];
    const char *result = co->done ? "done" : co->opt.dry_run && !co->failed_step ? "ok" : "aborted";
    json_object_object_add(o, "operation", json_object_new_string(op_name(sw)));
    json_object_object_add(o, "from", json_object_new_string(sy_side_name(sw->from)));
    json_object_object_add(o, "to", json_object_new_string(sy_side_name(sw->to)));
    json_object_object_add(o, "dry_run", json_object_new_boolean(co->opt.dry_run));
    if (co->failed_step)
        json_object_object_add(o, "reason", json_object_new_string(co->reason));
    if (co->unfence_error[0])
        json_object_object_add(o, "unfence_error", json_object_new_string(co->unfence_error));
    struct json_object *steps = json_object_new_array();
    for (int s = SY_CO_CHECK; s < SY_CO_NSTEPS; s++) {
        if (s == SY_CO_DONE || s == SY_CO_ABORTED || !(co->entered & (1u << s)))
            continue;
        struct json_object *st = json_object_new_object();
        json_object_object_add(st, "step", json_object_new_string(sy_co_step_name((enum sy_co_step)s)));
        json_object_object_add(st, "ms", json_object_new_int64((int64_t)co->step_ms[s]));
        json_object_array_add(steps, st);
    }
    json_object_object_add(o, "steps", steps);
    json_object_object_add(o, "total_ms", json_object_new_int64((int64_t)(co->finished_ms - co->started_ms)));
    json_object_object_add(o, "paused_ms", json_object_new_int64(
        co->paused_at_ms && co->resumed_at_ms ? (int64_t)(co->resumed_at_ms - co->paused_at_ms) : 0));
    json_object_object_add(o, "sessions_held", json_object_new_int64(sw->held_at_report));
    json_object_object_add(o, "sessions_moved", json_object_new_int64(sw->sessions_moved));
    json_object_object_add(o, "sessions_closed", json_object_new_int64(sw->sessions_closed));
    json_object_object_add(o, "sessions_forced", json_object_new_int64(sw->sessions_forced));
    json_object_object_add(o, "sessions_warm_read", json_object_new_int64(sw->warm_reads));
    report_checks(sw, o);
    if (sw->unmovable_report[0])
        json_object_object_add(o, "unmovable", json_object_new_string(sw->unmovable_report));
    if (sw->fence_lsn) {
        sy_lsn_format(sw->fence_lsn, a, sizeof(a));
        sy_lsn_format(sw->applied_lsn, b, sizeof(b));
        json_object_object_add(o, "fence_lsn", json_object_new_string(a));
        json_object_object_add(o, "applied_lsn", json_object_new_string(b));
    }
    const struct sy_pgctl_fence *f = &sw->fence[sw->from];
    json_object_object_add(o, "fenced_roles", json_object_new_int64(co->done ? f->nroles : 0));
    if (co->done) {
        /* Where the fence's time went: NOLOGIN (one transaction, a WAL flush), then ending the
         * outside sessions and waiting for them to be gone. */
        json_object_object_add(o, "fence_roles_ms", json_object_new_int64((int64_t)f->roles_ms));
        json_object_object_add(o, "fence_terminate_ms",
                               json_object_new_int64((int64_t)f->terminate_ms));
    }
    if (co->done && f->nterminated > 0) {
        struct json_object *out = json_object_new_array();
        for (int i = 0; i < f->nterminated && i < SY_FENCE_MAX_REPORT; i++) {
            struct json_object *x = json_object_new_object();
            json_object_object_add(x, "pid", json_object_new_int(f->terminated[i].pid));
            json_object_object_add(x, "user", json_object_new_string(f->terminated[i].user));
            json_object_object_add(x, "application", json_object_new_string(f->terminated[i].application));
            json_object_object_add(x, "client_addr", json_object_new_string(f->terminated[i].client_addr));
            json_object_array_add(out, x);
        }
        json_object_object_add(o, "outside_sessions_terminated", out);
    }
    json_object_object_add(o, "sequences", json_object_new_int(sw->nseq));
    json_object_object_add(o, "lag_bytes_at_check", json_object_new_int64((int64_t)sw->check_lag));
    if (co->opt.dry_run) {
        /* A rough forecast: the replication lag in time plus what the steps cost when there is
         * nothing to wait for. */
        double lag_ms = sw->check_lag_s > 0 ? sw->check_lag_s * 1000.0 : 0;
        json_object_object_add(o, "predicted_pause_ms", json_object_new_int64((int64_t)(lag_ms + 50)));
    }
    if (sw->window_open && co->done && !co->opt.rollback) {
        char until[40];
        uint64_t now = unix_ms();
        fmt_utc(sw->window_until_unix_ms, 1, until, sizeof(until));
        json_object_object_add(o, "rollback_window_until_unix_ms",
                               json_object_new_int64((int64_t)sw->window_until_unix_ms));
        json_object_object_add(o, "rollback_window_until", json_object_new_string(until));
        json_object_object_add(o, "rollback_window_left_s", json_object_new_int64(
            sw->window_until_unix_ms > now ? (int64_t)((sw->window_until_unix_ms - now) / 1000) : 0));
    }
    json_object_object_add(o, "max_pause_ms", json_object_new_int64(sw->max_pause));
    json_object_object_add(o, "p99_pause_ms", json_object_new_int64(sw->p99_pause));
    json_object_object_add(o, "result", json_object_new_string(result));
    char summary[1600];
    report_summary(sw, summary, sizeof(summary));
    json_object_object_add(o, "summary", json_object_new_string(summary));
    return o;
}

/* ---- the steps ---- */

static void run_action(struct sy_switch *sw, enum sy_co_action act);

static void step_done(struct sy_switch *sw, enum sy_co_step step, int ok, const char *why)
{
    enum sy_co_action act = sy_cutover_done(&sw->co, step, ok, why, uv_now(sw->p->loop));
    run_action(sw, act);
}

static void submit_step_job(struct sy_switch *sw, struct job *j)
{
    if (!j) {
        step_done(sw, sw->co.step, 0, "out of memory");
        return;
    }
    /* The job ends (its statements cut short if need be) before the step's own deadline, so
     * that its outcome, and the fence it records, is in before any abort acts on it. */
    uint64_t rem = sy_cutover_remaining(&sw->co, uv_now(sw->p->loop));
    if (rem)
        j->timeout_ms = rem > 600 ? rem - 300 : rem / 2 + 1;
    sw->job_out = 1;
    j->step_job = 1;
    job_submit(sw, j);
}

static int session_movable(struct sy_session *s)
{
    return s->phase == SY_PHASE_READY && s->server && s->server->open;
}

/* The warm step ends when every standby is ready and every session had its warm-up read, or
 * did not reach an idle point for WARM_READ_WAIT_MS (its read inside the pause is slower). */
static void dry_warm_end(struct sy_switch *sw);

static void warm_check(struct sy_switch *sw)
{
    if (!sw->running || sw->co.step != SY_CO_WARM || sw->warming > 0 || sw->session_error[0] ||
        sw->job_out || sw->after_waiting)
        return;
    uint64_t now = uv_now(sw->p->loop);
    if (!sw->warm_since_ms)
        sw->warm_since_ms = now;
    if (sw->warm_reading > 0)
        return;
    int waiting = 0;
    for (struct sy_session *s = sw->p->sessions; s; s = s->next)
        waiting += s->move_state == MS_WARM && s->warm_read == 1;
    if (waiting && now - sw->warm_since_ms < WARM_READ_WAIT_MS)
        return;
    if (sw->co.opt.dry_run) {
        dry_warm_end(sw);
        return;
    }
    if (!sw->slot_marked) {
        /* The slot the switch point will advance on the target, advanced now. */
        sw->slot_marked = 1;
        struct sy_proxy *p = sw->p;
        const char *slot = !sw->co.opt.rollback && sw->reverse_prepared ? REVERSE_NAME
                           : sw->co.opt.rollback && p->cfg.reverse_replication == SY_REVERSE_AUTO &&
                                   sw->window_forward.mode == SY_REPL_LOGICAL
                               ? sw->window_forward.slot
                               : NULL;
        struct job *j = slot && slot[0] ? job_new(sw, J_SLOT_MARK) : NULL;
        if (j) {
            snprintf(j->slot, sizeof(j->slot), "%s", slot);
            submit_step_job(sw, j);
            return;
        }
    }
    for (struct sy_session *s = sw->p->sessions; s; s = s->next)
        s->warm_read = 0;
    step_done(sw, SY_CO_WARM, 1, NULL);
}

/* The warm-up read, when the session is idle now. */
static void warm_read(struct sy_switch *sw, struct sy_session *s)
{
    if (s->warm_read != 1 || s->move_state != MS_WARM || sw->co.step != SY_CO_WARM ||
        sw->p->paused || s->tx != SY_TX_IDLE || !s->server || !s->server->open ||
        s->server->inflight || s->server->len)
        return;
    if (sw->p->ops->move_warm_read && sw->p->ops->move_warm_read(s) == 0) {
        s->move_state = MS_WARM_READING;
        sw->warm_reading++;
    }
}

/* A dry run's warm step logs every session into the target for real, except the sessions whose
 * role the target's recorded fence (an earlier switch's) holds: the real warm step gives those
 * LOGIN back first, which a dry run does not do. Returns 1 for such a session (counted). */
static int dry_skip(struct sy_switch *sw, const struct sy_session *s)
{
    if (!sw->co.opt.dry_run || !sw->fenced[sw->to])
        return 0;
    for (int i = 0; i < sw->fence[sw->to].nroles; i++)
        if (strcmp(sw->fence[sw->to].roles[i], s->user) == 0) {
            sw->dry_skipped++;
            return 1;
        }
    return 0;
}

/* The end of a dry run's warm step: every login worked; the connections are closed again. */
static void dry_warm_end(struct sy_switch *sw)
{
    sw->dry_logins = 0;
    for (struct sy_session *s = sw->p->sessions; s; s = s->next) {
        if (s->move_state == MS_NONE)
            continue;
        sw->dry_logins += s->move_state == MS_WARM;
        sw->p->ops->standby_drop(s);
        s->move_state = MS_NONE;
        s->warm_read = 0;
    }
    step_done(sw, SY_CO_WARM, 1, NULL);
}

static void open_standby(struct sy_switch *sw, struct sy_session *s)
{
    if (s->move_state == MS_NONE && session_movable(s) && s->side == sw->from && dry_skip(sw, s))
        return;
    if (s->move_state != MS_NONE || !session_movable(s) || s->side != sw->from)
        return;
    if (sw->p->ops->standby_open(s, sw->to) != 0) {
        if (!sw->session_error[0])
            snprintf(sw->session_error, sizeof(sw->session_error), "session %llu (user %s): "
                     "could not open a connection to %s", (unsigned long long)s->id, s->user,
                     sy_side_name(sw->to));
        return;
    }
    s->move_state = MS_WARMING;
    sw->warming++;
}

static void start_warm(struct sy_switch *sw)
{
    for (struct sy_session *s = sw->p->sessions; s; s = s->next)
        open_standby(sw, s);
    if (sw->session_error[0])
        step_done(sw, SY_CO_WARM, 0, sw->session_error);
    else if (sw->warming == 0)
        warm_check(sw);
    else
        progress(sw, NULL);
}

/* A dry run's warm step: the logins alone (no fence plan, no state file, no unfence, no warm-up
 * read), so that a dry run that passes has logged every session into the target. */
static void dry_warm(struct sy_switch *sw)
{
    sw->dry_skipped = sw->dry_logins = 0;
    start_warm(sw);
}

/* ---- write-ahead: a change waits for its record; recovery; the start's check ---- */

static void job_drop(struct sy_work *item);

/* Submits j (NULL: start_warm) for the running step once the snapshot seq is on disk; a
 * snapshot that cannot be written fails the step. */
static void after_poll(struct sy_switch *sw)
{
    if (!sw->after_waiting)
        return;
    int d = sw->after_seq ? state_durable(sw, sw->after_seq) : -1;
    if (d == 0)
        return;
    struct job *j = sw->after_job;
    sw->after_waiting = 0;
    sw->after_job = NULL;
    if (!sw->running || d < 0) {
        if (j)
            job_drop(&j->work);
        if (sw->running) {
            state_report_failure(sw);
            step_done(sw, sw->co.step, 0, "the state file could not be written (see the log)");
        }
        return;
    }
    if (j)
        submit_step_job(sw, j);
    else
        start_warm(sw);
}

static void after_durable(struct sy_switch *sw, uint64_t seq, struct job *j)
{
    sw->after_seq = seq;
    sw->after_job = j;
    sw->after_waiting = 1;
    after_poll(sw);
}

static void fence_merge(struct sy_pgctl_fence *into, const struct sy_pgctl_fence *f)
{
    for (int i = 0; i < f->nroles && into->nroles < SY_FENCE_MAX_ROLES; i++) {
        int have = 0;
        for (int k = 0; k < into->nroles && !have; k++)
            have = strcmp(into->roles[k], f->roles[i]) == 0;
        if (!have)
            snprintf(into->roles[into->nroles++], sizeof(into->roles[0]), "%s", f->roles[i]);
    }
}

/* Queues J_RECOVER for the pending record (in the background: nothing waits for it). during:
 * the abort of the running switch, which has resumed its clients already. */
static void recover_submit(struct sy_switch *sw, int during)
{
    if (!sw->pend || sw->recover_queued || (sw->running && !during))
        return;
    struct job *j = job_new(sw, J_RECOVER);
    if (!j)
        return;
    j->from = sw->pend_from;
    j->to = sw->pend_to;
    j->rollback = sw->pend_rollback;
    j->to_unfenced = sw->pend_to_unfenced;
    j->switch_repl = sw->pend_switch_repl;
    j->reverse_on = sw->pend_reverse;
    snprintf(j->fwd_sub, sizeof(j->fwd_sub), "%s", sw->pend_fwd_sub);
    j->fence = calloc(1, sizeof(*j->fence));
    j->refence = j->to_unfenced ? calloc(1, sizeof(*j->refence)) : NULL;
    if (!j->fence || (j->to_unfenced && !j->refence)) {
        job_drop(&j->work);
        return;
    }
    fence_merge(j->fence, &sw->fence[j->from]);
    fence_merge(j->fence, &sw->pend_plan);
    sw->recover_queued = 1;
    job_submit(sw, j);
}

static void recover_done(struct sy_switch *sw, const struct job *j)
{
    struct sy_proxy *p = sw->p;
    sw->recover_queued = 0;
    if (j->refenced && j->refence) {
        /* Recorded at once: a retry must not fence it again (it would record nothing). */
        sw->fence[j->to] = *j->refence;
        sw->fenced[j->to] = 1;
        sw->pend_to_unfenced = 0;
    }
    if (!j->ok) {
        if (strcmp(sw->recover_err, j->err) != 0)
            sy_error("the database changes of the interrupted %s from %s to %s are not undone "
                     "yet (retried every health_interval; a cutover waits for it): %s",
                     j->rollback ? "rollback" : "cutover", sy_side_name(j->from),
                     sy_side_name(j->to), j->err);
        snprintf(sw->recover_err, sizeof(sw->recover_err), "%.250s", j->err);
        if (j->refenced)
            state_write(sw, "idle", p->active);
        return;
    }
    sw->pend = 0;
    sw->pend_reverse = sw->pend_switch_repl = 0;
    sw->recover_err[0] = 0;
    if (j->from == p->active) {
        sw->fenced[j->from] = 0;
        memset(&sw->fence[j->from], 0, sizeof(sw->fence[j->from]));
    }
    sy_info("the database changes of the interrupted %s are undone: %s is live and unfenced%s%s",
            j->rollback ? "rollback" : "cutover", sy_side_name(j->from),
            j->refenced ? ", the fence on the other side is back" : "",
            j->switch_repl ? ", replication runs from it again" : "");
    state_write(sw, "idle", p->active);
}

static void verify_submit(struct sy_switch *sw)
{
    if (sw->verify_queued || sw->verified)
        return;
    struct job *j = job_new(sw, J_VERIFY);
    if (!j)
        return;
    j->timeout_ms = 3000;
    sw->verify_queued = 1;
    job_submit(sw, j);
}

/* The start's check: route only to a side the databases do not contradict. Without a state
 * file that is the config's active; with one, the side it names. Otherwise logins are refused
 * with what the databases say and what to do, and the check repeats every health_interval. */
static void verify_done(struct sy_switch *sw, const struct job *j)
{
    struct sy_proxy *p = sw->p;
    char msg[sizeof(p->route_hold)];
    sw->verify_queued = 0;
    int nofile = sw->start_paused || (p->route_hold[0] && access(sw->state_path, F_OK) != 0);
    enum sy_side want = nofile ? p->cfg.active : p->active;
    const char *src = nofile ? "the config's active (there is no state file)" : "the state file";
    msg[0] = 0;
    if (sw->pend) {
        /* An interrupted switch: its recovery decides, from the record. */
    } else if (j->live == -2) {
        snprintf(msg, sizeof(msg), "switchyard does not route: the databases contradict each "
                 "other about which side is live (%.100s); %s names %s. Check both sides, then set "
                 "active in the config, remove %.100s and reload (SIGHUP)", j->verdict, src,
                 sy_side_name(want), sw->state_path);
    } else if (j->live >= 0 && (enum sy_side)j->live != want) {
        snprintf(msg, sizeof(msg), "switchyard does not route: %s names %s, but the databases "
                 "say %s is live (%.100s). If %s is right, set active = %s in the config, remove "
                 "%.150s and reload (SIGHUP)", src, sy_side_name(want), sy_side_name(j->live),
                 j->verdict, sy_side_name(j->live), sy_side_name(j->live), sw->state_path);
    }
    if (msg[0]) {
        if (strcmp(msg, p->route_hold) != 0)
            sy_error("%s", msg);
        snprintf(p->route_hold, sizeof(p->route_hold), "%s", msg);
    } else {
        if (nofile) {
            p->active = want;
            state_write(sw, "idle", p->active);
        }
        if (j->live < 0 && !(j->reachable[0] && j->reachable[1]))
            sy_warn("start: routing to %s without a full check against the databases (blue: "
                    "%s; green: %s)", sy_side_name(p->active),
                    j->reachable[0] ? "answers" : j->side_err[0],
                    j->reachable[1] ? "answers" : j->side_err[1]);
        sy_info("start: routing to %s (%s%s)", sy_side_name(p->active),
                j->live >= 0 ? "the databases agree: " : "no sign of another live side",
                j->live >= 0 ? j->verdict : "");
        p->route_hold[0] = 0;
        sw->verified = 1;
    }
    if (sw->start_paused) {
        sw->start_paused = 0;
        sy_proxy_resume(p, "the start's check is done");
    }
}

/* Test builds only (SWITCHYARD_TEST_STOP_AT=op:step, op:step:before, see docs/testing.md): the
 * driver stops for good at that point, so that a test can kill the process there. */
static void run_step(struct sy_switch *sw);
static void on_tick(uv_timer_t *t);

static void hook_go(uv_timer_t *t)
{
    struct sy_switch *sw = t->data;
    const char *go = getenv("SWITCHYARD_TEST_GO_FILE");
    if (!go || access(go, F_OK) != 0)
        return;
    unlink(go);
    uv_timer_stop(t);
    if (!sw->running)
        return;
    sy_warn("test hook: the switch goes on");
    uv_timer_start(&sw->tick, on_tick, TICK_MS, TICK_MS);
    run_step(sw);
}

static int hook_at(struct sy_switch *sw, const char *when)
{
#ifdef SY_TEST_HOOKS
    char want[64];
    if (!sw->hook[0] || sw->hook_stopped)
        return 0;
    snprintf(want, sizeof(want), "%s:%s%s%s", op_name(sw), sy_co_step_name(sw->co.step),
             when[0] ? ":" : "", when);
    if (strcmp(want, sw->hook) != 0)
        return 0;
    sw->hook_stopped = 1;
    uv_timer_stop(&sw->tick);
    sy_warn("test hook: the switch stopped at %s (SWITCHYARD_TEST_STOP_AT)", want);
    /* With SWITCHYARD_TEST_GO_FILE (":before" only): goes on once that file exists. */
    if (strcmp(when, "before") == 0 && getenv("SWITCHYARD_TEST_GO_FILE"))
        uv_timer_start(&sw->hook_timer, hook_go, 10, 10);
    return 1;
#else
    (void)sw;
    (void)when;
    return 0;
#endif
}

/*
 * unmovable_sessions = wait: the drain reads each idle session's state itself (the fence step
 * does it otherwise) and counts a session drained only once its state was read and can move. A
 * session holding state that cannot move is let run on through the pause, and read again after
 * it ran another query; the drain's timeout bounds the wait.
 */
static int drained_wait(struct sy_switch *sw, struct sy_session *s)
{
    if (s->move_state == MS_PREPARED)
        return 1;
    if (s->move_state != MS_WARM)
        return 0;
    if (s->unmovable_at_queries && s->queries == s->unmovable_at_queries)
        return 0; /* it has not run anything since */
    if (sw->p->ops->move_prepare(s) != 0) {
        if (!sw->session_error[0])
            snprintf(sw->session_error, sizeof(sw->session_error),
                     "session %llu (user %s): its state could not be read",
                     (unsigned long long)s->id, s->user);
        return 0;
    }
    s->move_state = MS_PREPARING;
    sw->preparing++;
    return 0;
}

/* Whether every session is at a point where it can move (or needs no move). */
static int drained(struct sy_switch *sw)
{
    int all = 1;
    for (struct sy_session *s = sw->p->sessions; s; s = s->next) {
        if (s->wait_server || (s->phase == SY_PHASE_LOGIN && !s->server))
            continue; /* logs in after the switch, to the new side */
        if (s->phase != SY_PHASE_READY) {
            all = 0; /* logging into the old side right now */
            continue;
        }
        if (s->side != sw->from)
            continue;
        if (s->tx != SY_TX_IDLE || !s->server || s->server->inflight || s->server->len) {
            all = 0;
            continue;
        }
        if (s->move_state == MS_NONE)
            open_standby(sw, s); /* logged in after WARM */
        if (sw->p->cfg.unmovable_sessions == SY_UNMOVABLE_WAIT) {
            if (!drained_wait(sw, s))
                all = 0;
            continue;
        }
        if (s->move_state != MS_WARM)
            all = 0;
    }
    return all;
}

static void force_stragglers(struct sy_switch *sw)
{
    for (struct sy_session *s = sw->p->sessions, *next; s; s = next) {
        next = s->next;
        if (s->phase == SY_PHASE_READY && s->side == sw->from && s->tx != SY_TX_IDLE) {
            sw->sessions_forced++;
            sy_session_fail(s, "57P01", "switchyard ended this session: its transaction was "
                            "still open when the cutover's drain timed out (--force)");
        } else if (s->phase == SY_PHASE_READY && s->side == sw->from && s->unmovable_at_queries &&
                   s->move_state == MS_WARM) {
            sw->sessions_forced++;
            sy_session_fail(s, "57P01", "switchyard ended this session: it still held state that "
                            "cannot move (temporary tables, advisory locks or WITH HOLD cursors) "
                            "when the cutover's drain timed out (--force)");
        }
    }
}

static void start_move(struct sy_switch *sw)
{
    for (struct sy_session *s = sw->p->sessions; s; s = s->next) {
        if (s->move_state != MS_WARM)
            continue;
        if (sw->p->ops->move_prepare(s) != 0) {
            step_done(sw, sw->co.step, 0, "a session's state could not be read");
            return;
        }
        s->move_state = MS_PREPARING;
        sw->preparing++;
    }
}

/* MOVE ends when every session's state is on its standby; unmovable state decides. */
static void move_check(struct sy_switch *sw)
{
    if (sw->co.step != SY_CO_MOVE || sw->preparing > 0)
        return;
    if (sw->session_error[0]) {
        step_done(sw, SY_CO_MOVE, 0, sw->session_error);
        return;
    }
    if (sw->unmovable_report[0] && sw->p->cfg.unmovable_sessions == SY_UNMOVABLE_ABORT) {
        char why[512];
        snprintf(why, sizeof(why), "%s (unmovable_sessions = abort; set it to close to close "
                 "only those sessions, or end that state first)", sw->unmovable_report);
        step_done(sw, SY_CO_MOVE, 0, why);
        return;
    }
    step_done(sw, SY_CO_MOVE, 1, NULL);
}

static void switch_commit(struct sy_switch *sw);
static int rollback_drops_reverse(const struct sy_switch *sw);

/* Goes on with the switch point once its state is durable (called again by on_async). */
static void switch_wait(struct sy_switch *sw)
{
    int d = state_durable(sw, sw->switch_after_seq);
    if (d == 0)
        return;
    sw->switch_after_seq = 0;
    if (d > 0) {
        switch_commit(sw);
        return;
    }
    state_report_failure(sw);
    sw->pend = 1; /* still the old side: the switch's changes are to be undone */
    if (rollback_drops_reverse(sw))
        sw->leftover = 0;
    step_done(sw, SY_CO_SWITCH, 0, "the state file could not be written (see the log)");
}

/* A rollback whose switch stopped the reverse replication Switchyard set up: it is dropped
 * after the switch point. */
static int rollback_drops_reverse(const struct sy_switch *sw)
{
    return sw->co.opt.rollback && sw->p->cfg.reverse_replication == SY_REVERSE_AUTO &&
           sw->p->cfg.rollback_window_ms > 0 && sw->run_repl.mode == SY_REPL_LOGICAL;
}

/* The switch point: the new side becomes active and every session moves. */
static void switch_sessions(struct sy_switch *sw)
{
    struct sy_proxy *p = sw->p;
    if (!sw->co.opt.rollback && p->cfg.rollback_window_ms > 0 &&
        sw->run_repl.mode == SY_REPL_LOGICAL && p->cfg.reverse_replication != SY_REVERSE_OFF) {
        sw->window_open = 1;
        sw->window_from = sw->from;
        sw->window_forward = sw->pending_forward;
        sw->window_until_unix_ms = unix_ms() + p->cfg.rollback_window_ms;
    } else if (sw->co.opt.rollback) {
        sw->window_open = 0;
    }
    sw->fenced[sw->from] = 1;
    sw->fenced[sw->to] = 0;
    memset(&sw->fence[sw->to], 0, sizeof(sw->fence[sw->to]));
    /* Nothing is to be undone past the switch point; a rollback's reverse replication, stopped,
     * is to be dropped (J_REVERSE_CLEANUP after the switch point), recorded as a leftover. */
    sw->pend = 0;
    if (rollback_drops_reverse(sw)) {
        sw->leftover = 1;
        sw->leftover_sub = sw->to;
    }
    /* The new side is active once that is on disk: the sessions move when it is. */
    sw->switch_after_seq = state_write(sw, "idle", sw->to);
    if (!sw->switch_after_seq) {
        step_done(sw, SY_CO_SWITCH, 0, "the state file could not be written");
        return;
    }
    switch_wait(sw);
}

/* The switch point, once the state file names the new side. */
static void switch_commit(struct sy_switch *sw)
{
    struct sy_proxy *p = sw->p;
    p->active = sw->to;
    if (rollback_drops_reverse(sw)) {
        struct job *c = job_new(sw, J_REVERSE_CLEANUP);
        if (c) {
            c->from = sw->to; /* the side holding the reverse subscription */
            c->to = sw->from;
            job_submit(sw, c);
        }
    }
    for (struct sy_session *s = p->sessions, *next; s; s = next) {
        next = s->next;
        s->pause_exempt = 0;
        s->unmovable_at_queries = 0;
        if (s->move_state != MS_PREPARED)
            continue;
        s->move_state = MS_NONE;
        if (s->unmovable) {
            p->ops->standby_drop(s);
            sw->sessions_closed++;
            sy_session_fail(s, "57P01", "switchyard moved to the other database and this "
                            "session held state that cannot move (temporary tables, advisory "
                            "locks or WITH HOLD cursors): reconnect");
            continue;
        }
        if (p->ops->move_commit(s) == 0)
            sw->sessions_moved++;
    }
    sy_proxy_resume(p, op_name(sw));
    pause_stats(sw);
    sy_info("%s: %s is active now; %u sessions moved, max pause %u ms", op_name(sw),
            sy_side_name(sw->to), sw->sessions_moved, sw->max_pause);
    step_done(sw, SY_CO_SWITCH, 1, NULL);
}

static void restore_control(struct sy_switch *sw);

static void restore(struct sy_switch *sw)
{
    struct sy_proxy *p = sw->p;
    for (struct sy_session *s = p->sessions; s; s = s->next) {
        if (s->move_state != MS_NONE)
            p->ops->standby_drop(s);
        s->move_state = MS_NONE;
        s->warm_read = 0;
        s->unmovable = 0;
        s->pause_exempt = 0;
        s->unmovable_at_queries = 0;
    }
    sw->warming = sw->preparing = 0;
    sw->fence_waiting = 0;
    sw->switch_after_seq = 0;
    if (sw->after_waiting) {
        sw->after_waiting = 0;
        if (sw->after_job)
            job_drop(&sw->after_job->work);
        sw->after_job = NULL;
    }
    if (sw->to_unfenced)
        sw->pend_to_unfenced = 1;
    if (p->paused) {
        sy_proxy_resume(p, "the switch aborted");
        pause_stats(sw);
    }
    state_write(sw, "idle", p->active);
    restore_control(sw);
}

/* The database half of an abort (the reverse replication the check step prepared, the
 * target's old fence if this switch lifted it, replication as it was) is what the pending
 * record lists: J_RECOVER undoes it in the background, retried until done, so that a frozen
 * side keeps neither the clients nor the command waiting. */
static void restore_control(struct sy_switch *sw)
{
    sw->reverse_prepared = 0;
    recover_submit(sw, 1);
    step_done(sw, SY_CO_RESTORE, 1, NULL);
}

static void fence_submit(struct sy_switch *sw);

static int *our_pids(struct sy_switch *sw, int *n)
{
    int *pids = calloc(sw->p->nsessions + 1, sizeof(int));
    *n = 0;
    for (struct sy_session *s = sw->p->sessions; pids && s; s = s->next)
        if (s->side == sw->from && s->server_pid)
            pids[(*n)++] = (int)s->server_pid;
    return pids;
}

static void run_step(struct sy_switch *sw)
{
    struct sy_proxy *p = sw->p;
    struct job *j;
    progress(sw, NULL);
    if (hook_at(sw, "before"))
        return;
    switch (sw->co.step) {
    case SY_CO_CHECK:
        j = job_new(sw, J_CHECK);
        if (j) {
            j->rollback = sw->co.opt.rollback;
            j->dry_run = sw->co.opt.dry_run;
            j->reverse = p->cfg.rollback_window_ms > 0 ? p->cfg.reverse_replication : SY_REVERSE_OFF;
            j->max_tx_age_s = (double)p->cfg.max_transaction_age_ms / 1000.0;
            j->max_lag = p->cfg.max_lag_bytes;
            if (!j->rollback && !sw->health_window)
                snprintf(j->health_cause, sizeof(j->health_cause), "%.699s", sw->repl_cause);
        }
        if (j && j->reverse == SY_REVERSE_AUTO && !j->rollback && !j->dry_run) {
            /* The check may create the reverse replication: recorded first. */
            sw->pend = sw->pend_reverse = 1;
            after_durable(sw, state_write(sw, "checking", p->active), j);
            break;
        }
        submit_step_job(sw, j);
        break;
    case SY_CO_WARM:
        if (sw->co.opt.dry_run) {
            dry_warm(sw); /* real logins to the target, nothing recorded or changed */
            break;
        }
        /* First the roles the fence may change; then "fencing" (with them, and with the
         * target's fence about to be lifted) on disk before anything is changed. */
        j = job_new(sw, J_FENCE_PLAN);
        if (j && !(j->fence = calloc(1, sizeof(*j->fence)))) {
            job_drop(&j->work);
            j = NULL;
        }
        submit_step_job(sw, j);
        break;
    case SY_CO_DRAIN:
        sy_proxy_pause(p, 0);
        p->npause = 0;
        hook_at(sw, "");
        break; /* the tick checks */
    case SY_CO_FENCE:
        /* Every session is held and idle: read and replay their state now, while the control
         * thread fences and waits; MOVE then only collects the outcome. */
        start_move(sw);
        if (!sw->running || sw->co.step != SY_CO_FENCE)
            break;
        fence_submit(sw);
        break;
    case SY_CO_CATCHUP:
        atomic_store(&sw->cu_target, 0); /* until the control thread has read them */
        atomic_store(&sw->cu_applied, 0);
        j = job_new(sw, J_CATCHUP);
        if (j) {
            /* Ends before the job's statement limit (submit_step_job), so that a green that
             * is only behind is reported as behind. */
            uint64_t rem = sy_cutover_remaining(&sw->co, uv_now(p->loop));
            j->deadline_hr_ms = hr_ms() + (rem > 800 ? rem - 400 : rem / 2);
            j->fence = calloc(1, sizeof(*j->fence));
            if (j->fence)
                *j->fence = sw->fence[sw->from];
        }
        submit_step_job(sw, j);
        break;
    case SY_CO_SEQUENCES:
        submit_step_job(sw, job_new(sw, J_SEQUENCES));
        break;
    case SY_CO_MOVE:
        move_check(sw);
        break;
    case SY_CO_SWITCH:
        j = job_new(sw, J_SWITCH);
        if (j) {
            j->rollback = sw->co.opt.rollback;
            j->reverse = p->cfg.rollback_window_ms > 0 ? p->cfg.reverse_replication : SY_REVERSE_OFF;
            /* Its replication changes were recorded with the fence ("switching"). */
            after_durable(sw, sw->switching_seq, j);
            break;
        }
        submit_step_job(sw, j);
        break;
    case SY_CO_UNFENCE:
        j = job_new(sw, J_UNFENCE);
        if (j) {
            j->side = sw->from;
            j->fence = calloc(1, sizeof(*j->fence));
            if (j->fence)
                *j->fence = sw->fence[sw->from];
        }
        submit_step_job(sw, j);
        break;
    case SY_CO_RESTORE:
        restore(sw);
        break;
    default:
        break;
    }
}

/* The fence, once the "fencing" state is on disk (called again by on_async). */
static void fence_submit(struct sy_switch *sw)
{
    int d = state_durable(sw, sw->fence_after_seq);
    if (d == 0 && sw->fence_after_seq) {
        sw->fence_waiting = 1;
        return;
    }
    if (d < 0 || !sw->fence_after_seq) {
        state_report_failure(sw);
        step_done(sw, SY_CO_FENCE, 0, "the state file could not be written (see the log)");
        return;
    }
    struct job *j = job_new(sw, J_FENCE);
    if (j) {
        j->side = sw->from;
        j->keep_pids = our_pids(sw, &j->nkeep);
        j->fence = calloc(1, sizeof(*j->fence));
    }
    submit_step_job(sw, j);
}

static void finish(struct sy_switch *sw)
{
    struct sy_proxy *p = sw->p;
    uv_timer_stop(&sw->tick);
    if (!sw->co.done && sw->shadow_before != SY_SHADOW_OFF) {
        /* Still on the same side: shadowing goes on as before (sessions start again). */
        p->shadow_mode = sw->shadow_before;
        sy_info("shadow: on again (the switch aborted)");
    }
    sw->shadow_before = SY_SHADOW_OFF;
    for (struct sy_session *s = p->sessions; s; s = s->next) {
        s->move_state = MS_NONE;
        s->warm_read = 0;
    }
    struct json_object *r = report(sw), *sum;
    sy_info("%s %s: %s", op_name(sw), sw->co.done ? "done" : sw->co.opt.dry_run && !sw->co.failed_step ? "checked" : "aborted",
            json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN));
    if (json_object_object_get_ex(r, "summary", &sum))
        sy_info("%s", json_object_get_string(sum));
    if (sw->co.unfence_error[0])
        sy_error("%s: THE FENCE ON %s COULD NOT BE LIFTED: %s. Roles listed in %s lost LOGIN; "
                 "give it back with ALTER ROLE ... LOGIN", op_name(sw), sy_side_name(sw->from),
                 sw->co.unfence_error, sw->state_path);
    sw->running = 0;
    if (sw->leftover)
        state_write(sw, "idle", p->active); /* recorded while it ran: now in the file */
    watchers_send(sw, r);
    memset(sw->watchers, 0, sizeof(sw->watchers));
}

static void run_action(struct sy_switch *sw, enum sy_co_action act)
{
    switch (act) {
    case SY_CO_ACT_RUN_STEP: run_step(sw); break;
    case SY_CO_ACT_FORCE:
        progress(sw, "drain timed out: ending the transactions still open (--force)");
        force_stragglers(sw);
        break;
    case SY_CO_ACT_FINISHED: finish(sw); break;
    default: break;
    }
}

/* A drain that timed out says which sessions kept it waiting: the first few still in a
 * transaction (or a request) on the old side, with what identifies them and for how long (the
 * backend pid names the row of pg_stat_activity that shows what they run: no query text here). */
static void name_drain_blockers(struct sy_switch *sw, uint64_t now)
{
    char *r = sw->co.reason;
    size_t cap = sizeof(sw->co.reason), len = strlen(r);
    int n = 0, more = 0;
    for (struct sy_session *s = sw->p->sessions; s; s = s->next) {
        if (s->phase != SY_PHASE_READY || s->side != sw->from || s->tx == SY_TX_IDLE)
            continue;
        if (n == 5) {
            more++;
            continue;
        }
        int w = snprintf(r + len, cap - len,
                         "%s session %llu (user %s, application '%s', backend pid %u, %s for "
                         "%llu ms)",
                         n ? "," : "; still open:", (unsigned long long)s->id, s->user,
                         s->application, s->server_pid, sy_session_state_name(s),
                         (unsigned long long)(s->tx_started_ms ? now - s->tx_started_ms : 0));
        if (w < 0 || (size_t)w >= cap - len) {
            r[len] = 0;
            return;
        }
        len += (size_t)w;
        n++;
    }
    if (n && len < cap)
        snprintf(r + len, cap - len, "%s; pg_stat_activity shows what they run",
                 more ? " and more" : "");
}

static void on_tick(uv_timer_t *t)
{
    struct sy_switch *sw = t->data;
    struct sy_proxy *p = sw->p;
    if (!sw->running)
        return;
    uint64_t now = uv_now(p->loop);
    if (sw->co.step == SY_CO_DRAIN && drained(sw)) {
        sw->unmovable_report[0] = 0; /* whatever it waited for was let go */
        step_done(sw, SY_CO_DRAIN, 1, NULL);
        return;
    }
    if (sw->co.step == SY_CO_DRAIN && sw->unmovable_report[0] && !sw->co.opt.force &&
        sy_cutover_remaining(&sw->co, now) == 0) {
        char why[520];
        snprintf(why, sizeof(why), "timed out %s (unmovable_sessions = wait); end that state, "
                 "or use --force to close those sessions", sw->unmovable_report);
        step_done(sw, SY_CO_DRAIN, 0, why);
        return;
    }
    if (sw->co.step == SY_CO_WARM && sw->session_error[0] && !sw->job_out) {
        step_done(sw, SY_CO_WARM, 0, sw->session_error);
        return;
    }
    if (sw->co.step == SY_CO_WARM) {
        warm_check(sw);
        if (sw->co.step != SY_CO_WARM || !sw->running)
            return;
    }
    if (sw->co.step == SY_CO_MOVE && sw->session_error[0]) {
        step_done(sw, SY_CO_MOVE, 0, sw->session_error);
        return;
    }
    if (now - sw->last_progress_ms >= PROGRESS_EVERY_MS)
        progress(sw, NULL);
    int draining = sw->co.step == SY_CO_DRAIN;
    enum sy_co_action act = sy_cutover_tick(&sw->co, now);
    if (draining && sw->co.failed_step == SY_CO_DRAIN)
        name_drain_blockers(sw, now);
    run_action(sw, act);
}

/* ---- job results on the loop ---- */

/* Removing the reverse replication failed (its subscription on j->from, its publication and
 * slot on j->to): the slot keeps WAL on j->to meanwhile, so it is retried (leftover_retry). Said
 * once per new reason. */
static void leftover_failed(struct sy_switch *sw, const struct job *j, const char *what)
{
    int was = sw->leftover;
    sw->leftover = 1;
    sw->leftover_sub = j->from;
    if (!was || strncmp(sw->leftover_err, j->err, sizeof(sw->leftover_err) - 6) != 0)
        sy_warn("%s: the reverse replication %s could not be removed now: %s. Its slot keeps "
                "WAL on %s until it is; switchyard retries whenever both sides answer (by "
                "hand: DROP SUBSCRIPTION %s on %s, DROP PUBLICATION %s on %s)", what,
                REVERSE_NAME, j->err, sy_side_name(j->to), REVERSE_NAME, sy_side_name(j->from),
                REVERSE_NAME, sy_side_name(j->to));
    snprintf(sw->leftover_err, sizeof(sw->leftover_err), "%.250s", j->err);
    if (!was && !sw->running)
        state_write(sw, "idle", sw->p->active);
}

/* After a probe: a leftover's removal is tried again once both sides answer (never while a
 * switch runs: its check step absorbs a leftover of the same name). */
static void leftover_retry(struct sy_switch *sw)
{
    if (!sw->leftover || sw->leftover_queued || sw->running || !sw->reachable[0] ||
        !sw->reachable[1])
        return;
    struct job *j = job_new(sw, J_LEFTOVER);
    if (!j)
        return;
    j->from = sw->leftover_sub;
    j->to = (enum sy_side)!sw->leftover_sub;
    sw->leftover_queued = 1;
    job_submit(sw, j);
}

/* After a probe: the cause of the running replication's failure, from its subscription's health
 * (probe_health), kept for status and for refusing a switch, and logged when it changes: with a
 * rollback window open, as "rollback not possible: <cause>". */
static void apply_health(struct sy_switch *sw, const struct job *j)
{
    const struct sy_pgctl_subhealth *h = &j->health;
    uint64_t now = uv_now(sw->p->loop);
    char cause[sizeof(sw->repl_cause)] = "";
    const char *sub = sw->repl.subscription, *side = sy_side_name(j->to);
    if (!sw->have_repl) {
        if (sw->window_open)
            snprintf(cause, sizeof(cause), "a control connection fails (%s)",
                     j->side_err[0][0] ? j->side_err[0] : j->side_err[1]);
    } else if (sw->window_open && (sw->repl.mode != SY_REPL_LOGICAL || !h->found)) {
        snprintf(cause, sizeof(cause), "the reverse replication from %s to %s is gone (%s); "
                 "it is set up by a cutover only", sy_side_name(j->from), side,
                 sw->repl.problem[0] ? sw->repl.problem : "no subscription found");
    } else if (sw->repl.mode == SY_REPL_LOGICAL && h->found) {
        if (strcmp(sw->health_sub, sub) != 0) { /* another subscription: its own counts */
            snprintf(sw->health_sub, sizeof(sw->health_sub), "%s", sub);
            sw->health_apply = h->apply_errors;
            sw->health_sync = h->sync_errors;
            sw->health_err_ms = sw->health_noworker_ms = 0;
        }
        if (h->apply_errors > sw->health_apply || h->sync_errors > sw->health_sync)
            sw->health_err_ms = now;
        sw->health_apply = h->apply_errors;
        sw->health_sync = h->sync_errors;
        sw->health_noworker_ms = h->worker ? 0 : sw->health_noworker_ms ? sw->health_noworker_ms : now;
        if (!h->enabled)
            snprintf(cause, sizeof(cause), "subscription %s on %s is disabled; ALTER "
                     "SUBSCRIPTION %s ENABLE on %s", sub, side, sub, side);
        else if (!h->owner_login)
            snprintf(cause, sizeof(cause), "role %s owns subscription %s on %s but cannot log "
                     "in, so its apply worker cannot start; ALTER ROLE %s LOGIN on %s",
                     h->owner, sub, side, h->owner, side);
        else if (j->health_cause[0])
            snprintf(cause, sizeof(cause), "%s", j->health_cause);
        else if (sw->health_err_ms && now - sw->health_err_ms < 15000)
            snprintf(cause, sizeof(cause), "the apply worker of subscription %s on %s keeps "
                     "failing (%lld apply errors, %lld table copy errors in "
                     "pg_stat_subscription_stats)%s%s; %s's server log says why (often a unique "
                     "or foreign key violation from a row written on both sides, or a "
                     "permission); it retries by itself once that is fixed", sub, side,
                     (long long)h->apply_errors, (long long)h->sync_errors,
                     h->not_ready[0] ? "; tables not copied yet: " : "", h->not_ready, side);
        else if (sw->health_noworker_ms && now - sw->health_noworker_ms >= 10000)
            snprintf(cause, sizeof(cause), "no apply worker has run for subscription %s on %s "
                     "for %llu s; check %s's server log and max_logical_replication_workers",
                     sub, side, (unsigned long long)((now - sw->health_noworker_ms) / 1000), side);
    }
    sw->health_window = sw->window_open;
    snprintf(sw->repl_cause, sizeof(sw->repl_cause), "%s", cause);
    if (cause[0] && sw->have_repl)
        snprintf(sw->repl.problem, sizeof(sw->repl.problem), "%.255s", cause);
    if (strcmp(cause, sw->repl_cause_logged) == 0)
        return;
    if (cause[0] && sw->window_open)
        sy_error("rollback not possible: %s", cause);
    else if (cause[0])
        sy_warn("replication %s -> %s fails: %s", sy_side_name(j->from), side, cause);
    else if (sw->window_open)
        sy_info("rollback possible again: the reverse replication %s -> %s works",
                sy_side_name(j->from), side);
    else
        sy_info("replication %s -> %s works again", sy_side_name(j->from), side);
    snprintf(sw->repl_cause_logged, sizeof(sw->repl_cause_logged), "%s", cause);
}

/* A switch refused before it starts because the replication it needs fails now (apply_health's
 * cause, from the same direction: the window's reverse replication for a rollback). */
static const char *health_refusal(struct sy_switch *sw, int rollback, char *buf, size_t cap)
{
    if (!sw->repl_cause[0] || sw->health_window != rollback)
        return NULL;
    snprintf(buf, cap, "%s%s", rollback ? "rollback not possible: " : "the replication to the "
             "other side fails, so a cutover would fail at its catch-up: ", sw->repl_cause);
    return buf;
}

static void apply_probe(struct sy_switch *sw, const struct job *j)
{
    struct sy_proxy *p = sw->p;
    for (int s = 0; s < 2; s++) {
        sw->reachable[s] = j->reachable[s];
        memcpy(sw->side_err[s], j->side_err[s], sizeof(sw->side_err[s]));
        sw->probe[s] = j->probe[s];
        if (!j->reachable[s]) {
            p->side[s].healthy = 0;
            snprintf(p->side[s].last_error, sizeof(p->side[s].last_error), "control: %.100s",
                     j->side_err[s]);
        } else if (p->side[s].healthy <= 0) {
            p->side[s].healthy = 1;
            p->side[s].last_error[0] = 0;
        }
    }
    sw->have_repl = j->reachable[0] && j->reachable[1];
    if (sw->have_repl) {
        sw->repl = j->repl;
        sw->repl_from = j->from; /* labelled as probed, whatever is active by now */
    }
    sw->have_reverse = j->have_reverse;
    if (j->have_reverse)
        sw->reverse_repl = j->reverse_repl;
    /* Said once per new reason: the old side keeps WAL for the forward slot meanwhile. */
    if (j->skip_err[0] && strcmp(j->skip_err, sw->skip_err_logged) != 0)
        sy_warn("the forward slot %s on %s could not be advanced over the rollback window: %s",
                j->forward.slot, sy_side_name(j->window_from), j->skip_err);
    snprintf(sw->skip_err_logged, sizeof(sw->skip_err_logged), "%s", j->skip_err);
    sw->probed_ms = uv_now(p->loop);
}

/* After a probe: each side's fence as its database reports it, compared with the state file's
 * record; a disagreement is logged once (and once more when it is gone). Not compared while a
 * switch runs, nor when the record changed after the probe was queued: either may be mid-change. */
static void apply_fences(struct sy_switch *sw, const struct job *j)
{
    for (int s = 0; s < 2; s++) {
        const char *side = sy_side_name((enum sy_side)s);
        sw->fence_known[s] = j->fence_known[s];
        sw->fence_db[s] = j->fence_db[s];
        snprintf(sw->fence_detail[s], sizeof(sw->fence_detail[s]), "%s", j->fence_detail[s]);
        if (!j->fence_known[s] || sw->running || !j->rec || sw->fenced[s] != j->rec_fenced[s])
            continue;
        char why[sizeof(sw->fence_mismatch[s])] = "";
        if (sw->fenced[s] && !j->fence_db[s])
            snprintf(why, sizeof(why), "the state file records a fence on %s, but its database "
                     "says it is not fenced: %s; whoever logs in to %s directly can write to it",
                     side, j->fence_detail[s], side);
        else if (!sw->fenced[s] && j->fence_db[s])
            snprintf(why, sizeof(why), "the database says %s is fenced (%s), but the state file "
                     "records no fence on it%s", side, j->fence_detail[s],
                     (enum sy_side)s == sw->p->active ? ": clients routed there cannot log in"
                                                      : "");
        if (strcmp(why, sw->fence_mismatch[s]) == 0)
            continue;
        if (why[0])
            sy_warn("fence: %s", why);
        else
            sy_info("fence: %s is %s, as the state file records (%s)", side,
                    sw->fenced[s] ? "fenced" : "not fenced", j->fence_detail[s]);
        snprintf(sw->fence_mismatch[s], sizeof(sw->fence_mismatch[s]), "%s", why);
    }
}

/* The abort put back the fence the target side had before this switch (its warm step lifted
 * it), or could not: then that side stays open to direct logins, which nothing routes to it. */
static void restore_fence_done(struct sy_switch *sw, const struct job *j)
{
    if (j->fence && j->ok) {
        sw->fence[j->side] = *j->fence;
        sw->fenced[j->side] = 1;
    } else {
        sy_warn("%s: the fence %s had before this switch (lifted by its warm step) could not be "
                "put back: %s. Its login roles can log in to it directly; nothing routes there, "
                "but what is written to it directly is not on %s", op_name(sw),
                sy_side_name(j->side), j->ok ? "out of memory" : j->err, sy_side_name(j->from));
    }
    if (!sw->running || sw->co.step == SY_CO_RESTORE)
        state_write(sw, "idle", sw->p->active);
}

static void step_job_done(struct sy_switch *sw, struct job *j)
{
    enum sy_co_step step = sw->co.step;
    sw->job_out = 0;
    switch (j->kind) {
    case J_CHECK:
        apply_probe(sw, j);
        sw->run_repl = j->repl;
        sw->check_lag = j->repl.lag_bytes > 0 ? (uint64_t)j->repl.lag_bytes : 0;
        sw->check_lag_s = j->repl.lag_seconds;
        if (sw->co.opt.rollback && j->ok)
            sw->reverse_repl = j->repl;
        else if (j->ok)
            sw->pending_forward = j->repl;
        sw->reverse_prepared = j->reverse_prepared;
        if (j->reverse_prepared && sw->leftover && sw->leftover_sub == sw->from) {
            /* The prepare dropped the leftover subscription of that name and reuses its
             * publication: nothing is left over, and a retry would remove the new one. */
            sw->leftover = 0;
            sw->leftover_err[0] = 0;
        }
        step_done(sw, SY_CO_CHECK, j->ok, j->err);
        return;
    case J_FENCE_PLAN: {
        if (!j->ok || !j->fence) {
            step_done(sw, SY_CO_WARM, 0, j->err[0] ? j->err : "out of memory");
            return;
        }
        sw->pend = 1;
        sw->pend_plan = *j->fence;
        struct job *u = NULL;
        if (sw->fenced[sw->to] && sw->fence[sw->to].nroles > 0) {
            /* The target was fenced by an earlier switch: its users must be able to log in.
             * Recorded first: a restart that stays on the old side fences it again. */
            sw->pend_to_unfenced = 1;
            u = job_new(sw, J_UNFENCE);
            if (!u || !(u->fence = calloc(1, sizeof(*u->fence)))) {
                if (u)
                    job_drop(&u->work);
                step_done(sw, SY_CO_WARM, 0, "out of memory");
                return;
            }
            u->side = sw->to;
            *u->fence = sw->fence[sw->to];
        }
        /* On disk before the fence may be applied too (the fence step waits for it). */
        sw->fence_after_seq = state_write(sw, "fencing", sw->p->active);
        after_durable(sw, sw->fence_after_seq, u);
        return;
    }
    case J_UNFENCE:
        if (step == SY_CO_WARM) {
            if (!j->ok) {
                step_done(sw, SY_CO_WARM, 0, j->err);
                return;
            }
            sw->to_unfenced = 1;
            start_warm(sw);
            return;
        }
        if (j->ok)
            sw->fenced[j->side] = 0;
        state_write(sw, "idle", sw->p->active);
        step_done(sw, SY_CO_UNFENCE, j->ok, j->err);
        return;
    case J_FENCE:
        if (step == SY_CO_RESTORE) {
            restore_fence_done(sw, j);
            step_done(sw, SY_CO_RESTORE, 1, NULL);
            return;
        }
        if (j->fence)
            sw->fence[sw->from] = *j->fence;
        sw->fenced[sw->from] = 1;
        if (j->ok) {
            /* From here on the switch step may change replication: recorded with the fence's
             * roles, and the switch step waits until this snapshot is durable. */
            sw->pend_switch_repl = 1;
            snprintf(sw->pend_fwd_sub, sizeof(sw->pend_fwd_sub), "%s",
                     sw->co.opt.rollback ? sw->window_forward.subscription
                                         : sw->run_repl.mode == SY_REPL_LOGICAL
                                               ? sw->run_repl.subscription : "");
        }
        step_done(sw, SY_CO_FENCE, j->ok, j->err);
        /* The roles the fence changed are made durable while the control thread runs the next
         * step (they must be before the switch point, which is steps away). */
        if (sw->running)
            sw->switching_seq = state_write(sw, "switching", sw->p->active);
        return;
    case J_CATCHUP:
        sw->fence_lsn = j->target_lsn;
        sw->applied_lsn = j->applied_lsn;
        step_done(sw, SY_CO_CATCHUP, j->ok, j->err);
        return;
    case J_SEQUENCES:
        sw->nseq = j->nseq;
        step_done(sw, SY_CO_SEQUENCES, j->ok, j->err);
        return;
    case J_SLOT_MARK:
        if (j->skip_err[0])
            sy_warn("%s: the slot %s on %s could not be advanced before the pause (the switch "
                    "point advances it, more slowly): %s", op_name(sw), j->slot,
                    sy_side_name(j->to), j->skip_err);
        warm_check(sw);
        return;
    case J_SWITCH:
        if (!j->ok) {
            step_done(sw, SY_CO_SWITCH, 0, j->err);
            return;
        }
        sw->reverse_prepared = 0; /* it is the rollback window's reverse replication now */
        if (hook_at(sw, ""))
            return;
        switch_sessions(sw);
        return;
    case J_REVERSE_DROP:
        if (!j->ok)
            leftover_failed(sw, j, "the abort");
        restore_control(sw);
        return;
    default:
        return;
    }
}

static void job_drop(struct sy_work *item)
{
    struct job *j = (struct job *)item;
    free(j->fence);
    free(j->refence);
    free(j->rec);
    job_free(j);
}

/* A step's job that outlived its switch (the step timed out and the switch ended; a new
 * switch waits for it, see job_out): what it changed still counts. */
static void late_job_done(struct sy_switch *sw, const struct job *j)
{
    if (j->kind == J_FENCE) {
        /* On the active side it was the fence step's own job, after the abort lifted nothing:
         * recorded, the next health tick lifts it. On the other, it was the abort putting the
         * target's fence back. */
        if (j->side == sw->p->active && j->fence && j->fence->nroles > 0) {
            sw->fence[j->side] = *j->fence;
            sw->fenced[j->side] = 1;
            state_write(sw, "idle", sw->p->active);
            sy_warn("%s: the fence on %s ended after its step's deadline; lifting it",
                    op_name(sw), sy_side_name(j->side));
        } else if (j->side != sw->p->active) {
            restore_fence_done(sw, j);
        }
    } else if (j->kind == J_REVERSE_DROP && !j->ok) {
        /* the abort's drop (a connection to a frozen server waits for connect_timeout) */
        leftover_failed(sw, j, "the abort");
    } else if (j->kind == J_SWITCH && j->ok && j->repl.mode == SY_REPL_LOGICAL &&
               j->reverse == SY_REVERSE_AUTO) {
        /* Cannot happen while every statement is cut short before the step's deadline; said
         * loudly should it ever. */
        sy_error("%s: the switch point's replication changes ended after the switch aborted: "
                 "%s stays active, but %s. Check pg_subscription on both sides", op_name(sw),
                 sy_side_name(sw->p->active),
                 j->rollback ? "the reverse subscription " REVERSE_NAME " may be disabled"
                             : "the forward subscription may be disabled and " REVERSE_NAME
                               " enabled");
    } else if (j->kind == J_CHECK && j->reverse_prepared) {
        /* the abort had nothing to drop yet: removed like a leftover, after the next probe */
        sy_warn("%s: the check step prepared the reverse replication %s after its deadline; "
                "removing it", op_name(sw), REVERSE_NAME);
        sw->leftover = 1;
        sw->leftover_sub = j->from;
        state_write(sw, "idle", sw->p->active);
    }
}

/* The health tick lifting a fence an interrupted switch left: on failure it is recorded again
 * and retried at the next tick. */
static void health_unfence_done(struct sy_switch *sw, const struct job *j)
{
    if (!j->ok && j->fence) {
        sw->fence[j->side] = *j->fence;
        sw->fenced[j->side] = 1;
        if (!sw->running)
            state_write(sw, "idle", sw->p->active);
        if (strcmp(sw->unfence_err_logged, j->err) != 0)
            sy_error("the fence on %s could not be lifted (retried every health_interval): %s",
                     sy_side_name(j->side), j->err);
        snprintf(sw->unfence_err_logged, sizeof(sw->unfence_err_logged), "%.250s", j->err);
    } else if (j->ok) {
        sw->unfence_err_logged[0] = 0;
        sy_info("the fence on %s is lifted", sy_side_name(j->side));
    }
}

static void leftover_done(struct sy_switch *sw, const struct job *j)
{
    sw->leftover_queued = 0;
    if (j->ok && sw->leftover) {
        sy_info("the reverse replication %s left behind earlier (subscription on %s, publication "
                "and slot on %s) is removed now", REVERSE_NAME, sy_side_name(j->from),
                sy_side_name(j->to));
        sw->leftover = 0;
        sw->leftover_err[0] = 0;
        if (!sw->running)
            state_write(sw, "idle", sw->p->active);
    } else if (!j->ok) {
        leftover_failed(sw, j, "retry");
    }
}

/* A job is over (on the loop, in the order they ran). */
static void ctl_done(struct sy_worker *w, struct sy_work *item)
{
    struct sy_switch *sw = w->data;
    struct job *j = (struct job *)item;
    if (j->kind == J_PROBE) {
        sw->probe_queued = 0;
        apply_probe(sw, j);
        apply_health(sw, j);
        apply_fences(sw, j);
        leftover_retry(sw);
    } else if (j->kind == J_COMMIT || j->kind == J_REVERSE_CLEANUP) {
        /* after the fact: nothing streams it */
        if (!j->ok) {
            leftover_failed(sw, j, j->kind == J_COMMIT ? "commit" : "rollback");
        } else if (sw->leftover && sw->leftover_sub == j->from && !sw->leftover_queued) {
            sw->leftover = 0; /* recorded before it ran: now done */
            state_write(sw, "idle", sw->p->active);
        }
    } else if (j->kind == J_RECOVER) {
        recover_done(sw, j);
    } else if (j->kind == J_VERIFY) {
        verify_done(sw, j);
    } else if (j->step_job && sw->running && hook_at(sw, "")) {
        sw->job_out = 0; /* stopped for good: a test kills the process now */
    } else if (j->kind == J_LEFTOVER) {
        leftover_done(sw, j);
    } else if (!j->step_job) {
        if (j->kind == J_UNFENCE)
            health_unfence_done(sw, j);
    } else if (!sw->running) {
        sw->job_out = 0;
        late_job_done(sw, j);
    } else {
        step_job_done(sw, j);
    }
    job_drop(item);
}

/* The state writer's progress. */
static void on_async(uv_async_t *h)
{
    struct sy_switch *sw = h->data;
    state_report_failure(sw);
    if (sw->fence_waiting) {
        sw->fence_waiting = 0;
        if (sw->running && sw->co.step == SY_CO_FENCE)
            fence_submit(sw);
    }
    if (sw->running && sw->co.step == SY_CO_SWITCH && sw->switch_after_seq)
        switch_wait(sw);
    if (sw->running)
        after_poll(sw);
}

/* ---- reports from sessions ---- */

static struct sy_switch *running_sw(struct sy_session *sess)
{
    struct sy_switch *sw = sw_of(sess->proxy);
    return sw && sw->running ? sw : NULL;
}

void sy_switch_standby_ready(struct sy_session *sess)
{
    struct sy_switch *sw = running_sw(sess);
    if (!sw || sess->move_state != MS_WARMING) {
        sess->proxy->ops->standby_drop(sess);
        return;
    }
    sess->move_state = MS_WARM;
    sw->warming--;
    if (sw->co.step == SY_CO_WARM && !sw->co.opt.dry_run) {
        sess->warm_read = 1;
        warm_read(sw, sess); /* at once when it is idle, else at its next idle point */
    }
    warm_check(sw);
}

void sy_switch_idle_point(struct sy_session *sess)
{
    struct sy_switch *sw = running_sw(sess);
    if (sw)
        warm_read(sw, sess);
}

void sy_switch_warm_read_done(struct sy_session *sess)
{
    struct sy_switch *sw = running_sw(sess);
    if (!sw || sess->move_state != MS_WARM_READING)
        return;
    sess->move_state = MS_WARM;
    sess->warm_read = 2;
    sw->warm_reading--;
    sw->warm_reads++;
    warm_check(sw);
}

void sy_switch_standby_failed(struct sy_session *sess, const char *reason)
{
    struct sy_switch *sw = running_sw(sess);
    uint8_t was = sess->move_state;
    sess->move_state = MS_NONE;
    if (!sw)
        return;
    if (was == MS_WARMING)
        sw->warming--;
    if (was == MS_PREPARING)
        sw->preparing--;
    if (was == MS_WARM_READING)
        sw->warm_reading--;
    if (!sw->session_error[0])
        snprintf(sw->session_error, sizeof(sw->session_error), "session %llu (user %s): %s",
                 (unsigned long long)sess->id, sess->user, reason);
    /* A standby lost after the warm step cannot be replaced inside the pause: abort. */
    if (sw->co.step == SY_CO_WARM && sw->warming == 0 && sw->warm_reading == 0)
        step_done(sw, SY_CO_WARM, 0, sw->session_error);
    else if (sw->co.step >= SY_CO_DRAIN && sw->co.step <= SY_CO_SWITCH)
        step_done(sw, sw->co.step, 0, sw->session_error);
}

void sy_switch_move_prepared(struct sy_session *sess, const char *unmovable)
{
    struct sy_switch *sw = running_sw(sess);
    if (!sw || sess->move_state != MS_PREPARING)
        return;
    sw->preparing--;
    if (unmovable && sw->co.step == SY_CO_DRAIN &&
        sw->p->cfg.unmovable_sessions == SY_UNMOVABLE_WAIT) {
        /* Nothing was replayed: the standby is still warm. Let the session run on until it
         * lets go (it is read again after its next query). */
        sess->move_state = MS_WARM;
        sess->unmovable_at_queries = sess->queries ? sess->queries : 1;
        snprintf(sw->unmovable_report, sizeof(sw->unmovable_report),
                 "waiting for session %llu (user %s), which holds %s", (unsigned long long)sess->id,
                 sess->user, unmovable);
        sy_session_release(sess);
        return;
    }
    sess->move_state = MS_PREPARED;
    sess->pause_exempt = 0;
    if (unmovable) {
        sess->unmovable = 1;
        size_t n = strlen(sw->unmovable_report);
        if (n < sizeof(sw->unmovable_report) - 80)
            snprintf(sw->unmovable_report + n, sizeof(sw->unmovable_report) - n,
                     "%ssession %llu (user %s) holds %s", n ? "; " : "",
                     (unsigned long long)sess->id, sess->user, unmovable);
    }
    move_check(sw);
}

void sy_switch_session_closed(struct sy_session *sess)
{
    struct sy_switch *sw = running_sw(sess);
    if (!sw)
        return;
    if (sess->move_state == MS_WARMING && sw->warming > 0)
        sw->warming--;
    if (sess->move_state == MS_PREPARING && sw->preparing > 0)
        sw->preparing--;
    if (sess->move_state == MS_WARM_READING && sw->warm_reading > 0)
        sw->warm_reading--;
    sess->move_state = MS_NONE;
    if (sw->co.step == SY_CO_WARM && sw->warming == 0 && !sw->job_out && sw->session_error[0])
        step_done(sw, SY_CO_WARM, 0, sw->session_error);
    else if (sw->co.step == SY_CO_WARM)
        warm_check(sw);
    else
        move_check(sw);
}

/* ---- admin commands ---- */

static struct json_object *err_obj(const char *msg)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "error", json_object_new_string(msg));
    return o;
}

struct json_object *sy_switch_cmd_cutover(struct sy_proxy *p, struct sy_admin_conn *a, int argc,
                                          char **argv, int rollback)
{
    struct sy_switch *sw = sw_of(p);
    struct sy_co_options opt = {
        .rollback = rollback, .drain_timeout_ms = p->cfg.drain_timeout_ms,
        .catchup_timeout_ms = p->cfg.catchup_timeout_ms, .step_timeout_ms = p->cfg.step_timeout_ms,
    };
    /* The admin socket checked these words already (proxy/admin_parse.c); this is the same
     * parser, so a bad word can only come from another caller. */
    struct sy_admin_switch_args args;
    char why_args[256];
    if (sy_admin_switch_args(argc, argv, &args, why_args, sizeof(why_args)) != 0)
        return err_obj(why_args);
    if (args.has_timeout) {
        opt.drain_timeout_ms = args.timeout_ms;
        opt.pause_limit_ms = args.timeout_ms; /* the whole pause, whatever a server does */
    }
    opt.dry_run = args.dry_run;
    opt.force = args.force;
    if (!sw || !sw->ctl.started)
        return err_obj("the control thread is not running");
    if (sw->running)
        return err_obj("a switch is already under way; watch it with 'status'");
    if (sw->job_out)
        return err_obj("the last switch's final control statement has not ended yet (a server "
                       "is slow to answer); retry in a few seconds");
    if (p->shutting_down)
        return err_obj("switchyard is shutting down");
    if (p->route_hold[0])
        return err_obj(p->route_hold);
    if (sw->pend) {
        char why[400];
        snprintf(why, sizeof(why), "the database changes of an interrupted %s are not undone "
                 "yet%s%s; retry once both sides answer", sw->pend_rollback ? "rollback" :
                 "cutover", sw->recover_err[0] ? ": " : "", sw->recover_err);
        return err_obj(why);
    }
    if (p->paused)
        return err_obj("switchyard is paused by hand; 'resume' first");
    if (rollback && !sw->window_open)
        return err_obj("no rollback window is open: rollback is possible only after a cutover, "
                       "within rollback_window, with reverse replication");
    if (!rollback && sw->window_open)
        return err_obj("a rollback window is open: 'commit' it (or 'rollback') before another "
                       "cutover");
    if (!rollback) { /* the dry run too: it says whether the cutover would pass */
        char why[2048]; /* the gate names up to 5 fingerprints with an example each */
        if (sy_shadow_gate(p, why, sizeof(why)) != 0)
            return err_obj(why);
    }
    {
        char why[sizeof(sw->repl_cause) + 100];
        if (rollback && health_refusal(sw, rollback, why, sizeof(why)))
            return err_obj(why);
    }
    memset(&sw->co, 0, sizeof(sw->co));
    sw->from = p->active;
    sw->to = (enum sy_side)!p->active;
    sw->warming = sw->preparing = sw->sessions_moved = sw->sessions_closed = 0;
    sw->warm_reading = sw->warm_reads = 0;
    sw->slot_marked = 0;
    sw->warm_since_ms = 0;
    sw->sessions_forced = 0;
    sw->session_error[0] = sw->unmovable_report[0] = 0;
    sw->fence_lsn = sw->applied_lsn = 0;
    sw->nseq = 0;
    sw->to_unfenced = sw->reverse_prepared = 0;
    sw->held_at_report = sw->max_pause = sw->p99_pause = 0;
    /* The write-ahead record of this switch (in force from its first change). */
    sw->pend = 0;
    sw->pend_rollback = rollback;
    sw->pend_from = p->active;
    sw->pend_to = (enum sy_side)!p->active;
    sw->pend_reverse = sw->pend_to_unfenced = sw->pend_switch_repl = 0;
    sw->pend_fwd_sub[0] = 0;
    memset(&sw->pend_plan, 0, sizeof(sw->pend_plan));
    sw->switching_seq = 0;
    sw->after_waiting = 0;
    sw->hook_stopped = 0;
    sw->check_lag = 0;
    sw->check_lag_s = -1;
    memset(&sw->run_repl, 0, sizeof(sw->run_repl));
    memset(sw->watchers, 0, sizeof(sw->watchers));
    sw->watchers[0].a = a;
    sw->running = 1;
    for (struct sy_session *s = p->sessions; s; s = s->next) {
        s->move_state = MS_NONE;
        s->unmovable = 0;
    }
    /* Kept server connections would meet the fence (or the new side's old fence): close them.
     * Shadow connections go to the target side, whose connections the switch is about to
     * open itself: they stop (shadowing is for before a switch). */
    if (!opt.dry_run) {
        sy_pool_flush(p, -1, "a switch started");
        sy_shadow_stop_all(p, "a switch started");
        sw->shadow_before = p->shadow_mode;
        if (p->shadow_mode != SY_SHADOW_OFF) {
            p->shadow_mode = SY_SHADOW_OFF;
            sy_info("shadow: off for the switch (on again by itself if it aborts; after a "
                    "switch, switchyardctl shadow on)");
        }
    }
    sy_info("%s%s from %s to %s started", rollback ? "rollback" : "cutover",
            opt.dry_run ? " (dry run)" : "", sy_side_name(sw->from), sy_side_name(sw->to));
    uv_timer_start(&sw->tick, on_tick, TICK_MS, TICK_MS);
    run_action(sw, sy_cutover_begin(&sw->co, &opt, uv_now(p->loop)));
    return NULL;
}

struct json_object *sy_switch_cmd_commit(struct sy_proxy *p, int argc, char **argv)
{
    struct sy_switch *sw = sw_of(p);
    if (!sw || sw->running)
        return err_obj("a switch is under way; wait for it to end");
    if (!sw->window_open)
        return err_obj("no rollback window is open; nothing to commit");
    struct job *j = job_new(sw, J_COMMIT);
    if (!j)
        return err_obj("out of memory");
    j->from = sw->window_from;
    j->to = p->active;
    sw->window_open = 0;
    /* The drop is recorded as a leftover until it is done. */
    sw->leftover = 1;
    sw->leftover_sub = sw->window_from;
    state_write(sw, "idle", p->active);
    job_submit(sw, j);
    sy_info("commit: the rollback window is closed; the reverse replication is being removed");
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "result", json_object_new_string("committed"));
    json_object_object_add(o, "active", json_object_new_string(sy_side_name(p->active)));
    return o;
}

static struct json_object *repl_json(const struct sy_pgctl_repl *r, const char *from, const char *to)
{
    static const char *const modes[] = {"none", "logical", "physical"};
    struct json_object *o = json_object_new_object();
    char a[24];
    json_object_object_add(o, "from", json_object_new_string(from));
    json_object_object_add(o, "to", json_object_new_string(to));
    json_object_object_add(o, "mode", json_object_new_string(modes[r->mode % 3]));
    if (r->subscription[0])
        json_object_object_add(o, "subscription", json_object_new_string(r->subscription));
    json_object_object_add(o, "streaming", json_object_new_boolean(r->streaming));
    json_object_object_add(o, "lag_bytes", json_object_new_int64(r->lag_bytes));
    json_object_object_add(o, "lag_seconds", json_object_new_double(r->lag_seconds));
    sy_lsn_format(r->source_lsn, a, sizeof(a));
    json_object_object_add(o, "source_lsn", json_object_new_string(a));
    sy_lsn_format(r->applied_lsn, a, sizeof(a));
    json_object_object_add(o, "applied_lsn", json_object_new_string(a));
    if (r->problem[0])
        json_object_object_add(o, "problem", json_object_new_string(r->problem));
    return o;
}

int sy_switch_running(struct sy_proxy *p)
{
    struct sy_switch *sw = sw_of(p);
    return sw && sw->running;
}

/* Whether a rollback can work now, as the last health probe saw the reverse replication. */
static void rollback_status(struct sy_switch *sw, struct json_object *o)
{
    int known = sw->probed_ms && sw->health_window;
    json_object_object_add(o, "rollback_possible",
                           known ? json_object_new_boolean(!sw->repl_cause[0]) : NULL);
    if (known && sw->repl_cause[0]) {
        char why[sizeof(sw->repl_cause) + 32];
        snprintf(why, sizeof(why), "rollback not possible: %s", sw->repl_cause);
        json_object_object_add(o, "rollback_not_possible", json_object_new_string(why));
    }
}

void sy_switch_status(struct sy_proxy *p, struct json_object *status)
{
    struct sy_switch *sw = sw_of(p);
    struct json_object *sides;
    if (!sw)
        return;
    if (json_object_object_get_ex(status, "sides", &sides)) {
        for (int s = 0; s < 2; s++) {
            struct json_object *o;
            if (!json_object_object_get_ex(sides, sy_side_name((enum sy_side)s), &o))
                continue;
            json_object_object_add(o, "reachable", json_object_new_boolean(sw->reachable[s]));
            json_object_object_add(o, "server_role", json_object_new_string(
                !sw->probed_ms ? "unknown" : sw->probe[s].in_recovery ? "standby" : "primary"));
            /* As the database reports it (null: not known, the side did not answer); the state
             * file's record beside it. */
            json_object_object_add(o, "fenced", sw->fence_known[s]
                                                    ? json_object_new_boolean(sw->fence_db[s])
                                                    : NULL);
            json_object_object_add(o, "fence_recorded", json_object_new_boolean(sw->fenced[s]));
            if (sw->fence_known[s] && sw->fence_detail[s][0])
                json_object_object_add(o, "fence_detail",
                                       json_object_new_string(sw->fence_detail[s]));
            if (sw->fence_mismatch[s][0])
                json_object_object_add(o, "fence_mismatch",
                                       json_object_new_string(sw->fence_mismatch[s]));
            if (sw->reachable[s]) {
                char a[24];
                sy_lsn_format(sw->probe[s].lsn, a, sizeof(a));
                json_object_object_add(o, "lsn", json_object_new_string(a));
                json_object_object_add(o, "server_version",
                                       json_object_new_int(sw->probe[s].server_version_num));
            } else if (sw->side_err[s][0]) {
                json_object_object_add(o, "control_error", json_object_new_string(sw->side_err[s]));
            }
        }
    }
    if (sw->have_repl) {
        /* From the active side: during a rollback window, the reverse replication. */
        struct json_object *r = repl_json(&sw->repl, sy_side_name(sw->repl_from),
                                          sy_side_name((enum sy_side)!sw->repl_from));
        if (sw->repl_cause[0])
            json_object_object_add(r, "error", json_object_new_string(sw->repl_cause));
        json_object_object_add(status, "replication", r);
    }
    if (sw->have_reverse) /* towards the active side (the window's disabled forward one) */
        json_object_object_add(status, "reverse_replication",
                               repl_json(&sw->reverse_repl,
                                         sy_side_name((enum sy_side)!sw->repl_from),
                                         sy_side_name(sw->repl_from)));
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "state", json_object_new_string(
        sw->running ? sy_co_step_name(sw->co.step) : "idle"));
    if (sw->running)
        json_object_object_add(o, "operation", json_object_new_string(op_name(sw)));
    json_object_object_add(o, "rollback_window_open", json_object_new_boolean(sw->window_open));
    if (sw->window_open) {
        uint64_t now = unix_ms();
        char until[40];
        fmt_utc(sw->window_until_unix_ms, 1, until, sizeof(until));
        json_object_object_add(o, "rollback_window_left_s", json_object_new_int64(
            sw->window_until_unix_ms > now ? (int64_t)((sw->window_until_unix_ms - now) / 1000) : 0));
        json_object_object_add(o, "rollback_window_until", json_object_new_string(until));
        rollback_status(sw, o);
    }
    if (sw->leftover) {
        char what[200];
        snprintf(what, sizeof(what), "%s (subscription on %s, publication and slot on %s)",
                 REVERSE_NAME, sy_side_name(sw->leftover_sub),
                 sy_side_name((enum sy_side)!sw->leftover_sub));
        json_object_object_add(o, "reverse_leftover", json_object_new_string(what));
        if (sw->leftover_err[0])
            json_object_object_add(o, "reverse_leftover_error",
                                   json_object_new_string(sw->leftover_err));
    }
    json_object_object_add(o, "state_file", json_object_new_string(sw->state_path));
    json_object_object_add(status, "switch", o);
}

/* ---- health timer, start and stop ---- */

static void on_health(uv_timer_t *t)
{
    struct sy_switch *sw = t->data;
    struct sy_proxy *p = sw->p;
    if (sw->window_open && !sw->running && unix_ms() >= sw->window_until_unix_ms &&
        p->cfg.window_expiry == SY_EXPIRY_COMMIT) {
        sy_info("the rollback window expired (rollback_window_expiry = commit): committing");
        json_object_put(sy_switch_cmd_commit(p, 0, NULL));
    }
    if (!sw->verified)
        verify_submit(sw);
    recover_submit(sw, 0);
    /* An interrupted switch left a fence on the active side: lift it (J_RECOVER does, with
     * the rest, when the state file holds its record). */
    if (!sw->running && !sw->pend && sw->fenced[p->active] && sw->fence[p->active].nroles > 0) {
        struct job *j = job_new(sw, J_UNFENCE);
        if (j) {
            j->side = p->active;
            j->fence = calloc(1, sizeof(*j->fence));
            if (j->fence)
                *j->fence = sw->fence[p->active];
            sw->fenced[p->active] = 0;
            memset(&sw->fence[p->active], 0, sizeof(sw->fence[p->active]));
            state_write(sw, "idle", p->active);
            sy_warn("lifting the fence an interrupted switch left on %s", sy_side_name(p->active));
            job_submit(sw, j);
        }
    }
    if (sw->running || sw->probe_queued)
        return;
    struct job *j = job_new(sw, J_PROBE);
    if (!j)
        return;
    j->have_reverse = sw->window_open;
    j->skip_forward = sw->window_open && p->cfg.reverse_replication == SY_REVERSE_AUTO;
    j->window_from = sw->window_from;
    j->rec = calloc(2, sizeof(*j->rec)); /* without it, no fence is read from the databases */
    for (int s = 0; j->rec && s < 2; s++) {
        j->rec[s] = sw->fence[s];
        j->rec_fenced[s] = sw->fenced[s];
    }
    sw->probe_queued = 1;
    job_submit(sw, j);
}

int sy_switch_start(struct sy_proxy *p)
{
    struct sy_switch *sw = sw_alloc(p);
    if (!sw)
        return -1;
    state_path_init(sw, &p->cfg);
    if (uv_async_init(p->loop, &sw->async, on_async) != 0) {
        sy_error("cannot start the control thread");
        return -1;
    }
    sw->async.data = sw;
    uv_timer_init(p->loop, &sw->health_timer);
    uv_timer_init(p->loop, &sw->tick);
    uv_timer_init(p->loop, &sw->hook_timer);
    sw->health_timer.data = sw->tick.data = sw->hook_timer.data = sw;
    sw->ctl.run = ctl_run;
    sw->ctl.done = ctl_done;
    sw->ctl.drop = job_drop;
    sw->ctl.exit = ctl_exit;
    sw->ctl.data = sw;
    if (sy_worker_start(&sw->ctl, p->loop, "control") != 0)
        return -1;
    if (uv_mutex_init(&sw->wmu) != 0 || uv_cond_init(&sw->wcv) != 0 ||
        uv_thread_create(&sw->writer, writer_thread, sw) != 0) {
        sy_error("cannot start the state file's writer thread");
        return -1;
    }
    sw->writer_started = 1;
#ifdef SY_TEST_HOOKS
    const char *hook = getenv("SWITCHYARD_TEST_STOP_AT");
    if (hook && hook[0]) {
        snprintf(sw->hook, sizeof(sw->hook), "%s", hook);
        sy_warn("test hook: a switch stops at %s (SWITCHYARD_TEST_STOP_AT)", sw->hook);
    }
#endif
    sy_info("state file: %s", sw->state_path);
    if (sw->start_paused) {
        /* No state file: logins wait until the databases confirm the config's side. */
        snprintf(p->route_hold, sizeof(p->route_hold), "switchyard is checking with both "
                 "databases which side is live (it has no state file); retry in a moment");
        sy_proxy_pause(p, 0);
    }
    verify_submit(sw);
    recover_submit(sw, 0);
    /* health_interval = 0: no probes (the control connections open only for a switch). */
    if (p->cfg.health_interval_ms > 0)
        uv_timer_start(&sw->health_timer, on_health, 10, p->cfg.health_interval_ms);
    return 0;
}

void sy_switch_stop(struct sy_proxy *p)
{
    struct sy_switch *sw = sw_of(p);
    if (!sw || !sw->ctl.started)
        return;
    sy_worker_stop(&sw->ctl); /* the job running finishes; the queued ones are dropped */
    if (sw->writer_started) {
        /* What is queued is written first. */
        uv_mutex_lock(&sw->wmu);
        sw->wstop = 1;
        uv_cond_signal(&sw->wcv);
        uv_mutex_unlock(&sw->wmu);
        uv_thread_join(&sw->writer);
        sw->writer_started = 0;
        state_report_failure(sw);
    }
    uv_close((uv_handle_t *)&sw->async, NULL);
    uv_close((uv_handle_t *)&sw->health_timer, NULL);
    uv_close((uv_handle_t *)&sw->tick, NULL);
    uv_close((uv_handle_t *)&sw->hook_timer, NULL);
}
