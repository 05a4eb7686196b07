/*
 * The cutover and rollback state machine (see cutover.h).
 */
#include "cutover.h"

#include <stdio.h>
#include <string.h>

static const char *const step_names[SY_CO_NSTEPS] = {
    [SY_CO_IDLE] = "idle",         [SY_CO_CHECK] = "check",     [SY_CO_WARM] = "warm",
    [SY_CO_DRAIN] = "drain",       [SY_CO_FENCE] = "fence",     [SY_CO_CATCHUP] = "catchup",
    [SY_CO_SEQUENCES] = "sequences", [SY_CO_MOVE] = "move",     [SY_CO_SWITCH] = "switch",
    [SY_CO_DONE] = "done",         [SY_CO_UNFENCE] = "unfence", [SY_CO_RESTORE] = "restore",
    [SY_CO_ABORTED] = "aborted",
};

const char *sy_co_step_name(enum sy_co_step step)
{
    return (unsigned)step < SY_CO_NSTEPS ? step_names[step] : "unknown";
}

static uint64_t step_timeout(const struct sy_cutover *co, enum sy_co_step step)
{
    switch (step) {
    case SY_CO_DRAIN: return co->opt.drain_timeout_ms;
    case SY_CO_CATCHUP: return co->opt.catchup_timeout_ms;
    default: return co->opt.step_timeout_ms;
    }
}

/* The time an abort keeps for itself out of pause_limit_ms: lifting the fence (one round trip
 * to the old side) and resuming the clients. */
static uint64_t pause_reserve(const struct sy_cutover *co)
{
    uint64_t r = co->opt.pause_limit_ms / 4;
    return r > 400 ? 400 : r;
}

/* A step inside the pause ends early enough that an abort after it still resumes the clients
 * within pause_limit_ms; the abort's own UNFENCE ends at the limit itself (or very soon, when
 * the limit is already over). A server that freezes cannot stretch the pause. */
static uint64_t pause_deadline(const struct sy_cutover *co, enum sy_co_step step, uint64_t now,
                               uint64_t deadline)
{
    if (!co->opt.pause_limit_ms || !co->paused_at_ms || co->resumed_at_ms)
        return deadline;
    uint64_t end = co->limit_from_ms + co->opt.pause_limit_ms, lim;
    if (step >= SY_CO_DRAIN && step <= SY_CO_SWITCH)
        lim = end - pause_reserve(co);
    else if (step == SY_CO_UNFENCE)
        lim = end > now + 100 ? end : now + 100;
    else
        return deadline;
    if (lim < now)
        lim = now;
    return lim < deadline ? lim : deadline;
}

static enum sy_co_action enter(struct sy_cutover *co, enum sy_co_step step, uint64_t now)
{
    co->step = step;
    co->entered |= 1u << step;
    co->step_started_ms = now;
    if (step == SY_CO_DRAIN)
        co->paused_at_ms = co->limit_from_ms = now;
    co->deadline_ms = pause_deadline(co, step, now, now + step_timeout(co, step));
    if (step == SY_CO_FENCE)
        co->fenced = 1; /* from its start: a fence that times out may still land, so an abort
                           always tries to lift it (lifting nothing is harmless) */
    if (step == SY_CO_DONE || step == SY_CO_ABORTED) {
        co->finished_ms = now;
        co->deadline_ms = 0;
        return SY_CO_ACT_FINISHED;
    }
    return SY_CO_ACT_RUN_STEP;
}

enum sy_co_action sy_cutover_begin(struct sy_cutover *co, const struct sy_co_options *opt,
                                   uint64_t now)
{
    memset(co, 0, sizeof(*co));
    co->opt = *opt;
    co->started_ms = now;
    return enter(co, SY_CO_CHECK, now);
}

static int running(const struct sy_cutover *co)
{
    return co->step != SY_CO_IDLE && co->step != SY_CO_DONE && co->step != SY_CO_ABORTED;
}

/* The failure of a forward step: undo what was done, from the fence down. */
static enum sy_co_action fail(struct sy_cutover *co, const char *reason, uint64_t now)
{
    co->failed_step = co->step;
    snprintf(co->reason, sizeof(co->reason), "%s: %s", sy_co_step_name(co->step),
             reason && reason[0] ? reason : "failed");
    return enter(co, co->fenced ? SY_CO_UNFENCE : SY_CO_RESTORE, now);
}

enum sy_co_action sy_cutover_done(struct sy_cutover *co, enum sy_co_step step, int ok,
                                  const char *reason, uint64_t now)
{
    if (!running(co) || step != co->step)
        return SY_CO_ACT_NONE;
    co->step_ms[step] += now - co->step_started_ms;
    switch (step) {
    case SY_CO_UNFENCE:
        /* Lifting the fence failed: still restore the sessions (they are on the old side,
         * which is unchanged), but say loudly that the fence is still there. */
        if (ok)
            co->fenced = 0;
        else
            snprintf(co->unfence_error, sizeof(co->unfence_error), "%s",
                     reason && reason[0] ? reason : "failed");
        return enter(co, SY_CO_RESTORE, now);
    case SY_CO_RESTORE:
        co->resumed_at_ms = now;
        return enter(co, SY_CO_ABORTED, now);
    default:
        break;
    }
    if (!ok)
        return fail(co, reason, now);
    switch (step) {
    case SY_CO_CHECK:
        return enter(co, SY_CO_WARM, now);
    case SY_CO_WARM: /* a dry run logs in to the target too, then stops */
        return enter(co, co->opt.dry_run ? SY_CO_DONE : SY_CO_DRAIN, now);
    case SY_CO_DRAIN: return enter(co, SY_CO_FENCE, now);
    case SY_CO_FENCE: return enter(co, SY_CO_CATCHUP, now);
    case SY_CO_CATCHUP: return enter(co, SY_CO_SEQUENCES, now);
    case SY_CO_SEQUENCES: return enter(co, SY_CO_MOVE, now);
    case SY_CO_MOVE: return enter(co, SY_CO_SWITCH, now);
    case SY_CO_SWITCH:
        co->done = 1;
        co->resumed_at_ms = now;
        return enter(co, SY_CO_DONE, now);
    default: return SY_CO_ACT_NONE;
    }
}

enum sy_co_action sy_cutover_tick(struct sy_cutover *co, uint64_t now)
{
    if (!running(co) || co->deadline_ms == 0 || now < co->deadline_ms)
        return SY_CO_ACT_NONE;
    if (co->step == SY_CO_DRAIN && co->opt.force && !co->forced) {
        co->forced = 1;
        /* --force: what was open at the limit is ended; the limit counts again from here. */
        co->limit_from_ms = now;
        co->deadline_ms = pause_deadline(co, SY_CO_DRAIN, now, now + co->opt.step_timeout_ms);
        return SY_CO_ACT_FORCE;
    }
    char why[96];
    snprintf(why, sizeof(why), "timed out after %llu ms",
             (unsigned long long)(now - co->step_started_ms));
    if (co->step == SY_CO_UNFENCE || co->step == SY_CO_RESTORE)
        return sy_cutover_done(co, co->step, 0, why, now);
    co->step_ms[co->step] += now - co->step_started_ms;
    return fail(co, why, now);
}

uint64_t sy_cutover_remaining(const struct sy_cutover *co, uint64_t now)
{
    return running(co) && co->deadline_ms > now ? co->deadline_ms - now : 0;
}

int sy_cutover_holding(const struct sy_cutover *co)
{
    return co->step >= SY_CO_DRAIN && co->step <= SY_CO_SWITCH ? 1
           : co->step == SY_CO_UNFENCE || co->step == SY_CO_RESTORE ? co->paused_at_ms != 0
                                                                       : 0;
}
