/*
 * The cutover and rollback state machine: which step runs, what each step's outcome leads to,
 * what an abort must undo, and how long every step took. Pure: no I/O, no clock of its own
 * (every call takes "now" in milliseconds), so tests script it with events and an injected clock.
 *
 * The driver (proxy/switch.c) asks for the next action, performs it (on the event loop or on the
 * control thread) and reports its outcome with sy_cutover_done(). sy_cutover_tick() turns an
 * overrun deadline into a failure of the current step.
 *
 * A switch moves every session from one side to the other:
 *   CHECK -> WARM -> DRAIN -> FENCE -> CATCHUP -> SEQUENCES -> MOVE -> SWITCH -> DONE
 * A failure at any step aborts: UNFENCE (only if the fence was applied) -> RESTORE -> ABORTED.
 * A dry run stops after WARM (its logins to the new side are real, then closed).
 */
#ifndef SY_CUTOVER_H
#define SY_CUTOVER_H

#include <stdint.h>

enum sy_co_step {
    SY_CO_IDLE = 0,      /* nothing under way */
    SY_CO_CHECK = 1,     /* guardrails: health, replication, lag, long transactions */
    SY_CO_WARM = 2,      /* a standby connection per session is opened and logged in */
    SY_CO_DRAIN = 3,     /* paused: waiting for every session to reach a transaction boundary */
    SY_CO_FENCE = 4,     /* the old side stops taking writes, at the database */
    SY_CO_CATCHUP = 5,   /* waiting until the new side has the old side's final position */
    SY_CO_SEQUENCES = 6, /* sequences copied (logical replication does not carry them) */
    SY_CO_MOVE = 7,      /* each session's state read on the old side and replayed on the new */
    SY_CO_SWITCH = 8,    /* reverse replication, then the sessions are swapped and resumed */
    SY_CO_DONE = 9,      /* the switch happened */
    SY_CO_UNFENCE = 10,  /* abort: lifting the fence */
    SY_CO_RESTORE = 11,  /* abort: closing standby connections, resuming on the old side */
    SY_CO_ABORTED = 12,  /* the abort is complete: nothing changed */
    SY_CO_NSTEPS = 13,
};

/* What the driver must do next. */
enum sy_co_action {
    SY_CO_ACT_NONE = 0,      /* wait for the running step's outcome */
    SY_CO_ACT_RUN_STEP = 1,  /* start sy_cutover::step */
    SY_CO_ACT_FORCE = 2,     /* drain timed out under --force: end the stragglers' transactions,
                                then report the drain step's outcome again */
    SY_CO_ACT_FINISHED = 3,  /* DONE or ABORTED (or a dry run's end): report and forget */
};

struct sy_co_options {
    int rollback;             /* a rollback (new -> old) rather than a cutover */
    int dry_run;              /* only the guardrails */
    int force;                /* at the drain timeout, end stragglers instead of aborting */
    uint64_t drain_timeout_ms;
    uint64_t catchup_timeout_ms;
    uint64_t step_timeout_ms; /* every other step */
    uint64_t pause_limit_ms;  /* cutover --timeout: the whole pause, the abort's included, ends
                                 within this (0: each step has only its own timeout) */
};

struct sy_cutover {
    enum sy_co_step step;
    struct sy_co_options opt;
    uint64_t started_ms;
    uint64_t step_started_ms;
    uint64_t deadline_ms;        /* of the running step */
    uint64_t step_ms[SY_CO_NSTEPS]; /* how long each step took */
    uint32_t entered;            /* bit (1 << step) for every step that started */
    uint64_t paused_at_ms;       /* when DRAIN began (0 if it never did) */
    uint64_t limit_from_ms;      /* pause_limit_ms counts from here (DRAIN, or --force's end) */
    uint64_t resumed_at_ms;
    uint64_t finished_ms;
    int fenced;                  /* the fence is in force: an abort must lift it */
    int forced;                  /* stragglers were ended once already */
    int done;                    /* the switch happened */
    enum sy_co_step failed_step; /* the step that failed (SY_CO_IDLE if none) */
    char reason[1100];           /* why it aborted */
    char unfence_error[256];     /* the fence could not be lifted: an operator must act */
};

/* Starts a switch at now. Returns the first action (RUN_STEP with step CHECK). */
enum sy_co_action sy_cutover_begin(struct sy_cutover *co, const struct sy_co_options *opt,
                                   uint64_t now);

/*
 * The running step ended: ok, or failed with reason (copied). Returns the next action. A call
 * for a step that is not running, or after the end, changes nothing and returns ACT_NONE.
 */
enum sy_co_action sy_cutover_done(struct sy_cutover *co, enum sy_co_step step, int ok,
                                  const char *reason, uint64_t now);

/* Checks the running step's deadline: past it, the step fails with "timed out" (or, for the
 * drain under --force, ACT_FORCE once). Returns the next action. */
enum sy_co_action sy_cutover_tick(struct sy_cutover *co, uint64_t now);

/* Milliseconds until the running step's deadline (0 if past or none). */
uint64_t sy_cutover_remaining(const struct sy_cutover *co, uint64_t now);

/* Whether clients are held now (from DRAIN until the sessions are released). */
int sy_cutover_holding(const struct sy_cutover *co);

/* "check", "warm", ... */
const char *sy_co_step_name(enum sy_co_step step);

#endif
