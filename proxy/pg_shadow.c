/*
 * Shadow traffic for PostgreSQL sessions (docs/shadow.md).
 *
 * A shadowed session has a second server connection, to the standby side (green while blue is
 * active), logged in with the session's own user, database and startup parameters, and in
 * `reads` mode with default_transaction_read_only = on added to them. It is the standby
 * connection of pg_move.c, opened for a shadow instead of a move: once it is logged in, the
 * session's state is read on its own server connection at an idle point and replayed on the
 * shadow (settings, prepared statements, LISTEN), and from then on every byte the client sends
 * to blue is also written to green, in the same order, so transactions, prepared statements
 * and settings happen there as they do on blue.
 *
 * Each request that ends in a ReadyForQuery (a simple Query, an extended-protocol batch up to
 * Sync, a FunctionCall) is one statement: its fingerprint (pg_fingerprint of the query text,
 * literals replaced) and both servers' answers are summarized (switchover/shadow.c) as they pass,
 * blue's from the relay, green's from the shadow connection, and compared once both are whole.
 *
 * In `reads` mode default_transaction_read_only = on alone is no guard: a client may ask for a
 * read-write transaction (BEGIN READ WRITE, SET TRANSACTION READ WRITE, SET SESSION
 * CHARACTERISTICS ...), and green, replicating from blue, must never take a mirrored write. So
 * every request goes to green inside a READ ONLY transaction that already took a snapshot,
 * which PostgreSQL cannot turn read-write any more (25001): before each request the "guard"
 * (BEGIN READ ONLY; SELECT 1, a no-op inside a transaction) and, at each point where the session
 * is idle on blue, a COMMIT. Both are sent as extended-protocol messages on statements and
 * portals of their own, so the client's unnamed statement and portal are left alone, and their
 * answers are skipped by green's reader (inj_before, inj_tail). Requests the client pipelines
 * without an idle point between them share one transaction on green.
 *
 * The live path never waits for green: green's answers are read when they come, and when green
 * falls behind (more than shadow_queue bytes queued to it, SHADOW_MAX_STMTS statements without
 * an answer, or no answer within shadow_timeout) or its connection fails, shadowing for that
 * session is suspended: the shadow connection is closed, the statements in flight are counted as
 * suspended, and after shadow_resume the session is shadowed again from its next idle point,
 * with its state replayed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "admin_parse.h"
#include "log.h"
#include "pg_session.h"
#include "protocol/pg/pg_fingerprint.h"
#include "shadow_recheck.h"
#include "switch.h"
#include "switchover/shadow.h"

#define SHADOW_MAX_STMTS 256
#define FP_MAX 512
#define NAMED_MAX 32

enum sh_state {
    SH_OFF = 0,       /* not shadowed (yet) */
    SH_OPENING = 1,   /* the shadow connection is logging in */
    SH_WARM = 2,      /* logged in; the session's state is read at its next idle point */
    SH_READING = 3,   /* the state is being read on blue */
    SH_ON = 4,        /* mirroring */
    SH_SUSPENDED = 5, /* stopped for a while (green slow, frozen or gone) */
    SH_NEVER = 6,     /* sampled out */
};

struct sh_stmt {
    char fp[FP_MAX];
    uint64_t fp_hash;
    uint64_t text_hash; /* of the exact text (simple queries; 0 otherwise) */
    uint32_t text_len;  /* its length (simple queries) */
    char *text;         /* a copy of it, kept only for a fingerprint that wants a recheck */
    uint8_t volatile_stmt;
    uint8_t ext_ok;       /* an extended request whose text and parameters are kept (lag) */
    uint8_t *params;      /* its Bind's parameters (lag checks), or NULL */
    uint32_t params_len;
    uint8_t uncomparable; /* a message too large to summarize whole passed */
    uint8_t blue_done, green_done;
    uint8_t green_status; /* green's ReadyForQuery: 'I', 'T' or 'E' */
    uint8_t fresh_tx;     /* an injected COMMIT ended green's transaction just before it */
    uint8_t named_parse;  /* the request Parsed a named statement (it outlives the request) */
    uint16_t inj_before;  /* injected requests sent just before it whose answers are due */
    uint64_t sent_us, blue_us, green_us;
    struct sy_shadow_result blue, green;
};

/* Why a shadow restarts: green's schema changed under a prepared statement, or (reads mode)
 * green refused what sets the session's state in a transaction a refused write had aborted. */
enum { RESTART_SCHEMA = 1, RESTART_STATE = 2 };

struct named_stmt {
    char name[64];
    char text[FP_MAX];
};

struct pg_shadow {
    enum sh_state state;
    uint64_t resume_at_ms;
    struct sh_stmt *q[SHADOW_MAX_STMTS]; /* a ring, oldest at head */
    size_t head, n, nblue, ngreen;      /* nblue/ngreen: answered ones, from head */
    /* Extended protocol: statement texts by name, and the current batch. */
    struct named_stmt *named; /* NAMED_MAX slots, allocated when first needed */
    size_t nnamed, named_next;
    char unnamed[FP_MAX];
    char bound[64];
    char batch_text[FP_MAX];
    int batch_has_text, batch_uncomparable;
    uint8_t batch_open; /* the request's statement is queued (its last one, at the queue's end) */
    /* Lag checks: the request's Bind parameters, copied only once some extended-protocol
     * fingerprint wants them (lag_params_wanted), and whether the request can be run again. */
    uint8_t *bind_params;
    uint32_t bind_len, bind_cap;
    uint8_t batch_binds, batch_execs, batch_nolag;
    /* Green's reader. */
    uint32_t skip_left; /* bytes of an oversized message still to skip */
    uint8_t counted;    /* counted in the report's sessions */
    uint8_t tx_skipped; /* reads mode: green's transaction failed on a refused write */
    uint8_t tx_schema;  /* green's transaction failed on a statement its schema change broke */
    uint8_t restart_pending; /* the shadow restarts (state replayed) once the queue has settled:
                                RESTART_SCHEMA or RESTART_STATE */
    uint8_t created_refused; /* reads mode: green refused a CREATE of this session's (a
                                temporary table ...), which later statements may use */
    /* reads mode: the read-only guard (above). */
    uint8_t guard;      /* on for this shadow connection */
    uint8_t req_open;   /* a client request has started and not ended */
    uint8_t tx_dirty;   /* a guard was sent since the last COMMIT */
    uint8_t fresh_next; /* an injected COMMIT answered 'I' before any statement was pushed */
    const uint8_t *pre; /* injected bytes to go out with the next bytes mirrored */
    size_t pre_len;
    /* A COMMIT due (idle on blue): it goes with the next request's guard, or alone once the
     * session stayed idle COMMIT_DELAY_MS (the due list, the timer). */
    uint8_t commit_due;
    uint64_t due_at_ms;
    struct pg_shadow *due_prev, *due_next;
    struct sy_session *sess;
    uint16_t inj_tail;  /* injected requests sent after the last pushed statement */
    /* Shadowed from login: the bytes mirrored while the shadow connection still logs in wait
     * here (at most shadow_queue), and go out once it has. */
    uint8_t early_on;
    uint8_t *early;
    size_t early_len, early_cap;
    /* The session closed while green still owed answers: the shadow connection stays open
     * until they came (or shadow_timeout), on the linger list. */
    uint8_t lingering;
    uint64_t linger_until_ms;
    struct pg_shadow *linger_prev, *linger_next;
};

static uint64_t now_us(void) { return uv_hrtime() / 1000u; }

/* Shadows of closed sessions finishing their comparisons (see pg_shadow_linger), and the
 * timer that ends those green does not answer in time. */
static struct pg_shadow *linger_head;
static uv_timer_t linger_timer;
static int linger_timer_open;
#define LINGER_CHECK_MS 100

static void linger_unlink(struct pg_shadow *sh)
{
    if (!sh->lingering)
        return;
    if (sh->linger_prev)
        sh->linger_prev->linger_next = sh->linger_next;
    else
        linger_head = sh->linger_next;
    if (sh->linger_next)
        sh->linger_next->linger_prev = sh->linger_prev;
    sh->linger_prev = sh->linger_next = NULL;
    sh->lingering = 0;
}

/* The COMMITs due (the sessions idle on blue whose green transaction is open), oldest first. */
#define COMMIT_DELAY_MS 20
static struct pg_shadow *due_head, *due_tail;
static uv_timer_t due_timer;
static int due_timer_open;

static void due_unlink(struct pg_shadow *sh)
{
    if (!sh->commit_due)
        return;
    sh->commit_due = 0;
    if (sh->due_prev)
        sh->due_prev->due_next = sh->due_next;
    else
        due_head = sh->due_next;
    if (sh->due_next)
        sh->due_next->due_prev = sh->due_prev;
    else
        due_tail = sh->due_prev;
    sh->due_prev = sh->due_next = NULL;
}


/*
 * Blue differing from itself. For each fingerprint (a bounded table, keyed by its hash), the
 * last exact statement text seen, blue's answer to it and when. Each time blue answers the same
 * text again with no write acknowledged through Switchyard in between, that is a repeat, and a
 * flip when the answer changed. A fingerprint whose answers flip on at least half of at least
 * three repeats is non-deterministic (a volatile function in a view, a LIMIT without ORDER BY
 * ...) and its divergences are classed so from then on; a write made around Switchyard changes
 * an answer once, not on every repeat. Nothing extra is sent to blue.
 */
#define SELF_SLOTS 4096
#define PENDING_MAX 4
struct self_seen {
    uint64_t fp_hash, text_hash, answer, at_us;
    uint32_t repeats, flips;
    uint8_t nondeterministic;
    /* Rechecks (below). */
    uint8_t wants_text;   /* push() keeps the exact text of this fingerprint's statements */
    uint8_t wants_lag;    /* ... for its lag checks too (reads mode), and a Bind's parameters */
    uint8_t recheck_busy; /* a recheck of it is pending */
    uint8_t npending;
    uint8_t agreed;       /* rechecks in a row whose runs agreed (each doubles the interval) */
    uint64_t recheck_ms;  /* when the last one was submitted (loop ms; 0 never) */
    struct {
        uint64_t at_us;   /* the time the report was given for it */
        uint8_t cls;      /* REAL or ORDER_ONLY */
    } pending[PENDING_MAX]; /* divergences counted since the last verdict, awaiting one */
};
static struct self_seen self_table[SELF_SLOTS];
/* Bumped when the report and the table are reset: a recheck submitted before changes nothing. */
static uint64_t self_epoch;

static void self_forget(void)
{
    memset(self_table, 0, sizeof(self_table));
    self_epoch++;
}

static uint64_t answer_digest(const struct sy_shadow_result *r)
{
    uint64_t h = r->hash_ordered ^ (r->nrows * 0x9e3779b97f4a7c15ull) ^ (r->tags_hash << 1) ^
                 (r->counts_hash << 2) ^ (uint64_t)r->status;
    for (const char *s = r->sqlstate; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* Records blue's answer; returns 1 when the fingerprint is known to be non-deterministic. */
static int self_check(struct sy_proxy *p, const struct sh_stmt *st)
{
    struct self_seen *e = &self_table[st->fp_hash % SELF_SLOTS];
    if (e->fp_hash != st->fp_hash)
        memset(e, 0, sizeof(*e));
    uint64_t d = answer_digest(&st->blue);
    if (st->text_hash && e->text_hash == st->text_hash && p->shadow_last_write_us < e->at_us &&
        e->repeats < UINT32_MAX / 2) {
        e->repeats++;
        e->flips += e->answer != d;
        if (e->flips >= 3 && e->flips * 2 >= e->repeats)
            e->nondeterministic = 1;
    }
    if (st->text_hash) {
        e->fp_hash = st->fp_hash;
        e->text_hash = st->text_hash;
        e->answer = d;
        e->at_us = st->blue_us;
    }
    return e->nondeterministic;
}
static uint64_t loop_ms(struct sy_session *s) { return uv_now(s->proxy->loop); }

/* ---- the proxy-wide part: mode, sample, report ---- */

static void recheck_done(struct sy_proxy *p, void *data, enum sy_recheck_verdict v,
                         const char *detail);
static void lag_done(struct sy_proxy *p, const struct sy_lag_out *o);

int sy_shadow_init(struct sy_proxy *p)
{
    p->shadow_mode = p->cfg.shadow;
    p->shadow_sample_ppm = p->cfg.shadow_sample_ppm;
    p->shadow_report = sy_shadow_report_new(0);
    if (!p->shadow_report)
        return -1;
    if (uv_timer_init(p->loop, &due_timer) != 0)
        return -1;
    uv_unref((uv_handle_t *)&due_timer);
    due_timer_open = 1;
    if (uv_timer_init(p->loop, &linger_timer) != 0)
        return -1;
    uv_unref((uv_handle_t *)&linger_timer);
    linger_timer_open = 1;
    if (p->cfg.shadow_lag_window_ms)
        sy_warn("config: shadow_lag_window has no effect any more: a divergence is "
                "replication_lag only when a lag check proves it (shadow_lag_check_timeout); "
                "remove the line");
    if (sy_lag_start(p, lag_done) != 0)
        return -1;
    return sy_recheck_start(p, recheck_done);
}

void sy_shadow_close(struct sy_proxy *p)
{
    (void)p;
    while (due_head)
        due_unlink(due_head);
    if (due_timer_open) {
        due_timer_open = 0;
        uv_close((uv_handle_t *)&due_timer, NULL);
    }
    if (linger_timer_open) {
        linger_timer_open = 0;
        uv_close((uv_handle_t *)&linger_timer, NULL);
    }
}

static void stmt_cache_free(void);

void sy_shadow_free_all(struct sy_proxy *p)
{
    stmt_cache_free();
    sy_shadow_report_destroy(p->shadow_report);
    p->shadow_report = NULL;
    free(p->shadow_accepts);
    p->shadow_accepts = NULL;
    p->shadow_naccepts = 0;
}

/* ---- statements ---- */

static struct sh_stmt *at(struct pg_shadow *sh, size_t i)
{
    return sh->q[(sh->head + i) % SHADOW_MAX_STMTS];
}

/* Statements freed are kept for reuse with their results' heap blocks (a few rows' worth), so a
 * shadowed statement costs no allocation in the steady state. */
#define STMT_CACHE_MAX 256
#define STMT_CACHE_HEAP 8192 /* results holding more heap than this are not kept */
static struct sh_stmt *stmt_cache[STMT_CACHE_MAX];
static size_t nstmt_cache;

static struct sh_stmt *stmt_new(void)
{
    if (nstmt_cache == 0) {
        struct sh_stmt *st = calloc(1, sizeof(*st));
        if (st) {
            sy_shadow_result_init(&st->blue);
            sy_shadow_result_init(&st->green);
        }
        return st;
    }
    struct sh_stmt *st = stmt_cache[--nstmt_cache];
    memset(st, 0, offsetof(struct sh_stmt, blue)); /* what precedes the two results */
    sy_shadow_result_reset(&st->blue);
    sy_shadow_result_reset(&st->green);
    return st;
}

static void stmt_free(struct sh_stmt *st)
{
    if (!st)
        return;
    free(st->text);
    st->text = NULL;
    free(st->params);
    st->params = NULL;
    if (nstmt_cache < STMT_CACHE_MAX &&
        sy_shadow_result_heap_bytes(&st->blue) + sy_shadow_result_heap_bytes(&st->green) <=
            STMT_CACHE_HEAP) {
        stmt_cache[nstmt_cache++] = st;
        return;
    }
    sy_shadow_result_free(&st->blue);
    sy_shadow_result_free(&st->green);
    free(st);
}

static void stmt_cache_free(void)
{
    while (nstmt_cache > 0) {
        struct sh_stmt *st = stmt_cache[--nstmt_cache];
        sy_shadow_result_free(&st->blue);
        sy_shadow_result_free(&st->green);
        free(st);
    }
}

static void queue_clear(struct pg_shadow *sh)
{
    for (size_t i = 0; i < sh->n; i++) {
        stmt_free(at(sh, i));
        sh->q[(sh->head + i) % SHADOW_MAX_STMTS] = NULL;
    }
    sh->head = sh->n = sh->nblue = sh->ngreen = 0;
}

/* The read-only guard's state, for a shadow connection that starts or ends. */
static void guard_reset(struct pg_shadow *sh)
{
    due_unlink(sh);
    sh->req_open = sh->tx_dirty = sh->fresh_next = 0;
    sh->pre = NULL;
    sh->pre_len = 0;
    sh->inj_tail = 0;
}

static void early_free(struct pg_shadow *sh)
{
    free(sh->early);
    sh->early = NULL;
    sh->early_len = sh->early_cap = 0;
    sh->early_on = 0;
}

static void batch_reset(struct pg_shadow *sh)
{
    sh->bind_len = 0;
    sh->batch_binds = sh->batch_execs = sh->batch_nolag = 0;
    sh->batch_has_text = sh->batch_uncomparable = 0;
    sh->batch_open = 0;
    sh->batch_text[0] = 0;
}

/* Stops shadowing the session for shadow_resume (or for good when resume is 0). */
static void suspend_for(struct sy_session *sess, struct pg_shadow *sh, const char *why,
                        uint64_t resume_ms)
{
    struct sy_proxy *p = sess->proxy;
    if (sh->n > 0)
        sy_shadow_report_bump(p->shadow_report, SY_SHADOW_CTR_SUSPENDED, sh->n);
    if (resume_ms)
        sy_session_log(sess, SY_LOG_INFO, "shadow suspended for %llu ms: %s",
                       (unsigned long long)resume_ms, why);
    else
        sy_session_log(sess, SY_LOG_DEBUG, "shadow restarts at the next idle point: %s", why);
    queue_clear(sh);
    batch_reset(sh);
    sh->skip_left = 0;
    sh->nnamed = sh->named_next = 0; /* green's statements go with the connection */
    sh->unnamed[0] = 0;
    guard_reset(sh);
    early_free(sh);
    linger_unlink(sh);
    sh->restart_pending = 0;
    sh->tx_schema = 0; /* created_refused stays: the objects are still missing on green */
    sh->state = SH_SUSPENDED;
    sh->resume_at_ms = loop_ms(sess) + resume_ms;
    pg_move_drop(sess); /* closes the shadow connection, reports nothing */
}

static void suspend(struct sy_session *sess, struct pg_shadow *sh, const char *why)
{
    suspend_for(sess, sh, why, sess->proxy->cfg.shadow_resume_ms);
}

/* ---- rechecks on blue (shadow_recheck.h) ----
 *
 * A data divergence (real or order_only) of a simple-Query read may be blue differing from
 * itself. The first one of a fingerprint only asks for its text: from then on push() keeps a copy
 * of the exact text of that fingerprint's statements (the others pay a table lookup), and the
 * next divergence is rechecked: run twice more on blue in one snapshot. Sampled: one recheck
 * pending per fingerprint, one per fingerprint per RECHECK_EVERY_MS (doubled after each recheck
 * that agreed, up to 64 times: a real divergence on a busy statement does not cost blue two
 * extra runs every 10 s for ever), SY_RECHECK_MAX_PENDING in all (beyond that, dropped and
 * counted). When the two runs differ, the fingerprint is marked non-deterministic (as the
 * passive rule does) and its divergences counted since the last verdict (PENDING_MAX at most,
 * the rechecked one among them) move to nondeterministic.
 */
#define RECHECK_TEXT_MAX 8192
#define RECHECK_EVERY_MS 10000
#define RECHECK_BACKOFF_MAX 6 /* the interval doubles at most this many times */

/* What comes back with a recheck's verdict. */
struct recheck_note {
    uint64_t fp_hash;
    uint64_t epoch;
    uint64_t at_us;   /* the rechecked divergence: its time and class in the report */
    uint8_t cls;
    char fp[FP_MAX];  /* for the log */
    struct sy_shadow_example ex;
};

static void keep_text(struct sy_proxy *p, struct sh_stmt *st, const char *text, size_t len)
{
    if (len > RECHECK_TEXT_MAX)
        return;
    const struct self_seen *e = &self_table[st->fp_hash % SELF_SLOTS];
    if (e->fp_hash == st->fp_hash && e->nondeterministic)
        return;
    /* reads mode: every read's text is kept (a malloc and a copy), so that even the first data
     * difference of a fingerprint can have its lag check. */
    int read = p->shadow_mode == SY_SHADOW_READS &&
               (strncmp(st->fp, "select ", 7) == 0 || strncmp(st->fp, "with ", 5) == 0 ||
                strncmp(st->fp, "values ", 7) == 0 || strncmp(st->fp, "table ", 6) == 0);
    if (!read && !(p->cfg.shadow_recheck && e->fp_hash == st->fp_hash && e->wants_text))
        return;
    st->text = malloc(len + 1);
    if (st->text) {
        memcpy(st->text, text, len);
        st->text[len] = 0;
    }
}

/* A read whose answer can be asked for again: a simple Query (its exact text known, small
 * enough) whose fingerprint starts with SELECT, WITH, VALUES or TABLE, and whose live answer on
 * blue was rows (tag SELECT) or an error. */
static int recheckable(const struct sh_stmt *st)
{
    static const char *const verbs[] = {"select ", "with ", "values ", "table "};
    if (!st->text_hash || st->text_len > RECHECK_TEXT_MAX)
        return 0;
    int read = 0;
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]) && !read; i++)
        read = strncmp(st->fp, verbs[i], strlen(verbs[i])) == 0;
    return read && (st->blue.status == SY_SHADOW_ST_ERROR ||
                    (st->blue.status == SY_SHADOW_ST_OK && strcmp(st->blue.tag, "SELECT") == 0));
}

/* After a divergence of class cls was counted at at_us: note it, and recheck when due. */
static void recheck_consider(struct sy_session *sess, const struct sh_stmt *st,
                             enum sy_shadow_class cls, const struct sy_shadow_example *ex,
                             uint64_t at_us)
{
    struct sy_proxy *p = sess->proxy;
    if (!p->cfg.shadow_recheck || (cls != SY_SHADOW_REAL && cls != SY_SHADOW_ORDER_ONLY) ||
        !recheckable(st))
        return;
    struct self_seen *e = &self_table[st->fp_hash % SELF_SLOTS];
    if (e->fp_hash != st->fp_hash || e->nondeterministic)
        return; /* self_check() keeps the entry of every simple query */
    if (e->npending < PENDING_MAX) {
        e->pending[e->npending].at_us = at_us;
        e->pending[e->npending++].cls = (uint8_t)cls;
    }
    e->wants_text = 1;
    uint64_t now = loop_ms(sess);
    uint64_t every = (uint64_t)RECHECK_EVERY_MS
                     << (e->agreed < RECHECK_BACKOFF_MAX ? e->agreed : RECHECK_BACKOFF_MAX);
    if (!st->text || e->recheck_busy || (e->recheck_ms && now - e->recheck_ms < every))
        return;
    struct recheck_note *n = malloc(sizeof(*n));
    if (!n)
        return;
    n->fp_hash = st->fp_hash;
    n->epoch = self_epoch;
    n->at_us = at_us;
    n->cls = (uint8_t)cls;
    snprintf(n->fp, sizeof(n->fp), "%s", st->fp);
    n->ex = *ex;
    struct sy_recheck_req req = {
        .side = sess->side, .database = sess->database, .role = sess->user, .sql = st->text,
        .sql_len = strlen(st->text), .live_error = st->blue.status == SY_SHADOW_ST_ERROR,
        .data = n,
    };
    if (sy_recheck_submit(p, &req) != 0) {
        free(n);
        sy_shadow_report_bump(p->shadow_report, SY_SHADOW_CTR_RECHECK_DROPPED, 1);
        return;
    }
    e->recheck_busy = 1;
    e->recheck_ms = now ? now : 1;
}

/* Moves the divergences a verdict covers to nondeterministic. */
static void recheck_reclass(struct sy_proxy *p, struct self_seen *e, const struct recheck_note *n)
{
    const struct sy_shadow_example *ex = &n->ex;
    uint32_t moved = 0;
    if (e->fp_hash != n->fp_hash) { /* the entry went to another fingerprint meanwhile */
        memset(e, 0, sizeof(*e));
        e->fp_hash = n->fp_hash;
        e->npending = 1;
        e->pending[0].at_us = n->at_us;
        e->pending[0].cls = n->cls;
    }
    for (uint8_t i = 0; i < e->npending; i++) {
        /* The rechecked divergence's example goes with it (the one that differs): the first
         * reclassed keeps it when the report has no nondeterministic example yet. */
        if (sy_shadow_report_reclass(p->shadow_report, n->fp_hash,
                                     (enum sy_shadow_class)e->pending[i].cls,
                                     SY_SHADOW_NONDETERMINISTIC, e->pending[i].at_us, ex) == 0) {
            moved++;
            ex = NULL;
        }
    }
    e->nondeterministic = 1;
    e->npending = 0;
    sy_info("shadow recheck: blue answered '%s' differently twice within one snapshot: "
            "non-deterministic (%u divergences moved to nondeterministic)", n->fp, moved);
}

static void recheck_done(struct sy_proxy *p, void *data, enum sy_recheck_verdict v,
                         const char *detail)
{
    struct recheck_note *n = data;
    if (n->epoch != self_epoch) { /* the report was reset since */
        free(n);
        return;
    }
    struct self_seen *e = &self_table[n->fp_hash % SELF_SLOTS];
    if (e->fp_hash == n->fp_hash)
        e->recheck_busy = 0;
    sy_shadow_report_bump(p->shadow_report, SY_SHADOW_CTR_RECHECKS, 1);
    if (v == SY_RECHECK_DIFFERS) {
        sy_shadow_report_bump(p->shadow_report, SY_SHADOW_CTR_RECHECK_NONDET, 1);
        recheck_reclass(p, e, n);
    } else {
        if (v == SY_RECHECK_INCONCLUSIVE)
            sy_shadow_report_bump(p->shadow_report, SY_SHADOW_CTR_RECHECK_INCONCLUSIVE, 1);
        if (e->fp_hash == n->fp_hash) {
            e->npending = 0;
            if (v == SY_RECHECK_SAME && e->agreed < UINT8_MAX)
                e->agreed++;
        }
        sy_debug("shadow recheck of '%s': %s: %s", n->fp, sy_recheck_verdict_name(v), detail);
    }
    free(n);
}

/* ---- lag checks (shadow_recheck.h; the rule: switchover/shadow_lag.h) ----
 *
 * reads mode: a data difference (rows affected, row count, row data) is counted inconclusive and
 * handed to the lag check, which reruns the statement on blue, on green once green has applied
 * blue's position as of that rerun, and on blue again, and proves it replication_lag or real (or
 * nondeterministic), or leaves it inconclusive. It needs the exact text (and a Bind's
 * parameters): as for rechecks, the first such divergence of a fingerprint only marks it
 * (wants_lag), and from then on its statements keep their text (and parameters) until compared.
 */

/* Some extended-protocol fingerprint wants its Binds' parameters kept: until then no Bind is
 * copied at all. */
static int lag_params_wanted;

/* A read that can be run again: its exact text is kept (a simple Query's, or an extended
 * request's single Bind and Execute with every row, its parameters kept), its fingerprint starts
 * with SELECT, WITH, VALUES or TABLE, and blue answered it with rows. */
static int lag_checkable(const struct sh_stmt *st)
{
    static const char *const verbs[] = {"select ", "with ", "values ", "table "};
    if (!st->text || (!st->text_hash && !st->ext_ok))
        return 0;
    int read = 0;
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]) && !read; i++)
        read = strncmp(st->fp, verbs[i], strlen(verbs[i])) == 0;
    return read && st->blue.status == SY_SHADOW_ST_OK && strcmp(st->blue.tag, "SELECT") == 0;
}

/* A data difference counted inconclusive at at_us: queue its lag check (or count why not). */
static void lag_consider(struct sy_session *sess, const struct sh_stmt *st,
                         const struct sy_shadow_example *ex, uint64_t at_us,
                         const struct sy_shadow_accept *acc, size_t nacc)
{
    struct sy_proxy *p = sess->proxy;
    struct self_seen *e = &self_table[st->fp_hash % SELF_SLOTS];
    if (e->fp_hash != st->fp_hash) {
        memset(e, 0, sizeof(*e));
        e->fp_hash = st->fp_hash;
    }
    e->wants_lag = 1;
    if (!st->text_hash)
        lag_params_wanted = 1;
    if (!lag_checkable(st)) {
        sy_shadow_report_bump(p->shadow_report, SY_SHADOW_CTR_LAG_UNCHECKABLE, 1);
        return;
    }
    struct sy_shadow_accept cols[4]; /* the column accepts: a whole-statement one decided */
    size_t ncols = 0;
    for (size_t i = 0; i < nacc && ncols < 4; i++)
        if (acc[i].column[0])
            cols[ncols++] = acc[i];
    struct sy_lag_in in = {
        .side = sess->side, .database = sess->database, .role = sess->user,
        .fp_hash = st->fp_hash, .fp = st->fp, .sql = st->text, .sql_len = strlen(st->text),
        .params = st->params, .params_len = st->params_len,
        .blue_digest = answer_digest(&st->blue), .green_digest = answer_digest(&st->green),
        .live_error = st->blue.status == SY_SHADOW_ST_ERROR, .accepts = cols, .naccepts = ncols,
        .ex = ex, .at_us = at_us, .epoch = self_epoch,
    };
    if (sy_lag_submit(p, &in) == SY_LAG_FULL)
        sy_shadow_report_bump(p->shadow_report, SY_SHADOW_CTR_LAG_DROPPED, 1);
}

/* A check's verdict: the divergences it covers move from inconclusive to its class. */
static void lag_done(struct sy_proxy *p, const struct sy_lag_out *o)
{
    if (o->epoch != self_epoch) /* the report was reset since */
        return;
    sy_shadow_report_bump(p->shadow_report, SY_SHADOW_CTR_LAG_CHECKS, 1);
    enum sy_shadow_class to = sy_lag_class(o->verdict);
    if (to == SY_SHADOW_INCONCLUSIVE) {
        sy_shadow_report_bump(p->shadow_report, SY_SHADOW_CTR_LAG_INCONCLUSIVE, 1);
        sy_debug("shadow lag check of '%s': inconclusive: %s", o->fp, o->detail);
        return;
    }
    const struct sy_shadow_example *ex = o->ex;
    uint64_t moved = 0;
    for (size_t i = 0; i < o->nruns; i++)
        for (uint32_t k = 0; k < o->runs[i].n; k++)
            if (sy_shadow_report_reclass(p->shadow_report, o->fp_hash, SY_SHADOW_INCONCLUSIVE,
                                         to, o->runs[i].at_us, ex) == 0) {
                moved++;
                ex = NULL;
            }
    struct self_seen *e = &self_table[o->fp_hash % SELF_SLOTS];
    if (to == SY_SHADOW_NONDETERMINISTIC && e->fp_hash == o->fp_hash)
        e->nondeterministic = 1;
    sy_debug("shadow lag check of '%s': %s (%llu divergences): %s", o->fp,
             sy_shadow_class_name(to), (unsigned long long)moved, o->detail);
}

/* Names a statement: its fingerprint from text (NULL: a function call), its exact text kept
 * when exact (a simple Query). */
static void stmt_name(struct sy_session *sess, struct sh_stmt *st, const char *text, size_t len,
                      int exact)
{
    if (text) {
        pg_fingerprint_full(text, len, st->fp, sizeof(st->fp), &st->fp_hash);
        st->volatile_stmt = (uint8_t)pg_sql_is_volatile(text, len);
        if (exact) {
            st->text_hash = pg_fingerprint_hash(text, len) | 1;
            st->text_len = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;
            keep_text(sess->proxy, st, text, len);
        }
    } else {
        snprintf(st->fp, sizeof(st->fp), "(function call)");
        st->fp_hash = pg_fingerprint_hash(st->fp, strlen(st->fp));
    }
}

/* Queues a new statement, not yet named. Every answer of both servers from now until their
 * ReadyForQuery is folded into it: an extended-protocol request is opened at its first message,
 * so the rows a client reads before its Sync (Execute with a row limit, then Flush, as cursors
 * and fetch sizes do) count on both sides. Returns it, or NULL after suspending. */
static struct sh_stmt *push_open(struct sy_session *sess, struct pg_shadow *sh)
{
    if (sh->n == SHADOW_MAX_STMTS) {
        suspend(sess, sh, "green is more than 256 statements behind");
        return NULL;
    }
    struct sh_stmt *st = stmt_new();
    if (!st) {
        suspend(sess, sh, "out of memory");
        return NULL;
    }
    st->inj_before = sh->inj_tail;
    st->fresh_tx = sh->fresh_next;
    sh->inj_tail = 0;
    sh->fresh_next = 0;
    st->sent_us = now_us();
    sh->q[(sh->head + sh->n) % SHADOW_MAX_STMTS] = st;
    sh->n++;
    sy_shadow_report_bump(sess->proxy->shadow_report, SY_SHADOW_CTR_MIRRORED, 1);
    return st;
}

static int push(struct sy_session *sess, struct pg_shadow *sh, const char *text, size_t len,
                int uncomparable, int exact)
{
    struct sh_stmt *st = push_open(sess, sh);
    if (!st)
        return -1;
    stmt_name(sess, st, text, len, exact);
    st->uncomparable = (uint8_t)uncomparable;
    return 0;
}

/* At most LOG_PER_SECOND divergence lines a second go to the log (the report counts them all);
 * the first line after a quiet spell says how many were left out. */
#define LOG_PER_SECOND 10
static int log_allowed(struct sy_session *sess)
{
    static uint64_t second;
    static uint32_t logged, dropped;
    uint64_t s = uv_now(sess->proxy->loop) / 1000u;
    if (s != second) {
        if (dropped)
            sy_info("shadow: %u more divergences in the last seconds were not logged (see "
                    "switchyardctl shadow report)", dropped);
        second = s;
        logged = dropped = 0;
    }
    if (logged < LOG_PER_SECOND) {
        logged++;
        return 1;
    }
    dropped++;
    return 0;
}

/* reads mode: green's transaction failed because it refused a write; what follows in it fails
 * there too (25P02) and its COMMIT ends in ROLLBACK. Those differences come from the skipped
 * write, not from the migration. */
static int after_skipped_write(const struct pg_shadow *sh, const struct sh_stmt *st)
{
    if (!sh->tx_skipped || st->fresh_tx)
        return 0;
    if (st->green.status == SY_SHADOW_ST_ERROR && strcmp(st->green.sqlstate, "25P02") == 0)
        return 1;
    return strcmp(st->green.tag, "ROLLBACK") == 0 && strcmp(st->blue.tag, "COMMIT") == 0;
}

static size_t accepts_for(struct sy_proxy *p, const struct sh_stmt *st,
                          struct sy_shadow_accept *out, size_t cap);

/* The report names the two sides as the user does: blue and green, whichever is live. The
 * comparison itself is live against shadow, so after a switch (green live, blue shadowed) the
 * example's values and the two latencies are swapped into their sides' places. */
static void name_sides(struct sy_shadow_example *ex, struct sh_stmt *st)
{
    char t[sizeof(ex->blue)];
    memcpy(t, ex->blue, sizeof(t));
    memcpy(ex->blue, ex->green, sizeof(t));
    memcpy(ex->green, t, sizeof(t));
    uint64_t u = st->blue_us;
    st->blue_us = st->green_us;
    st->green_us = u;
}

/* Whether the statement failed on green only because green's schema changed under a prepared
 * statement: a cached plan whose result type changed (SQLSTATE 0A000, "cached plan must not
 * change result type") on an extended-protocol execution that blue ran without that error. */
static int schema_changed(const struct sh_stmt *st)
{
    return !st->text_hash && st->green.status == SY_SHADOW_ST_ERROR &&
           strcmp(st->green.sqlstate, "0A000") == 0 && strcmp(st->blue.sqlstate, "0A000") != 0;
}

/* SQLSTATEs of a name that does not exist: what a statement gets on green when the object an
 * earlier, refused CREATE of the session would have made is missing there. */
static int undefined_object(const char *sqlstate)
{
    static const char *const codes[] = {"42P01", "42704", "42883", "42P02", "26000", "34000",
                                        "3F000", "42703"};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (strcmp(sqlstate, codes[i]) == 0)
            return 1;
    return 0;
}

static void log_schema_change(struct sy_session *sess)
{
    static uint64_t last_ms;
    uint64_t now = uv_now(sess->proxy->loop);
    if (last_ms && now - last_ms < 10000)
        return;
    last_ms = now;
    sy_info("shadow: green's schema changed under prepared statements (cached plan must not "
            "change result type); each shadow session concerned restarts and prepares them "
            "again, counted as schema_change (session %llu first)", (unsigned long long)sess->id);
}

/* Differences that come from green's state in this session rather than from the statement. A
 * schema change on green under a prepared statement is SCHEMA_CHANGE, and so is what fails after
 * it in green's transaction (25P02, a COMMIT answered ROLLBACK); the session's shadow then
 * restarts (its state replayed: the statements are prepared again against the new schema), so
 * the change shows once per session, not at every execution. In reads mode, after green refused
 * a CREATE of the session's (a temporary table, say), an error on green only that names a
 * missing object is SKIPPED_WRITE: it depends on the refused write. */
static enum sy_shadow_class session_class(struct sy_session *sess, struct pg_shadow *sh,
                                          const struct sh_stmt *st, enum sy_shadow_class cls)
{
    if (st->fresh_tx)
        sh->tx_schema = 0;
    if (cls == SY_SHADOW_MATCH) {
        if (st->green_status == 'I')
            sh->tx_schema = 0;
        return cls;
    }
    if (schema_changed(st)) {
        sh->tx_schema = st->green_status == 'E';
        sh->restart_pending = RESTART_SCHEMA;
        log_schema_change(sess);
        return SY_SHADOW_SCHEMA_CHANGE;
    }
    if (sh->tx_schema) {
        int aborted = st->green.status == SY_SHADOW_ST_ERROR &&
                      strcmp(st->green.sqlstate, "25P02") == 0;
        int rolled_back = strcmp(st->green.tag, "ROLLBACK") == 0 &&
                          strcmp(st->blue.tag, "ROLLBACK") != 0;
        if (st->green_status == 'I')
            sh->tx_schema = 0;
        if (aborted || rolled_back)
            return SY_SHADOW_SCHEMA_CHANGE;
    }
    if (cls == SY_SHADOW_SKIPPED_WRITE && strncmp(st->blue.tag, "CREATE", 6) == 0)
        sh->created_refused = 1;
    if (sh->created_refused && cls != SY_SHADOW_SKIPPED_WRITE &&
        st->green.status == SY_SHADOW_ST_ERROR && st->blue.status != SY_SHADOW_ST_ERROR &&
        undefined_object(st->green.sqlstate))
        return SY_SHADOW_SKIPPED_WRITE;
    return cls;
}

/* reads mode: a statement that changes the session's prepared statements (a Parse of a named
 * statement, as drivers and pgbench -M prepared send on first use, PREPARE, DEALLOCATE) that
 * blue did and green refused, because a refused write had aborted green's transaction. Green's
 * session then differs from blue's (every later execution of that statement would fail there
 * with 26000), so the shadow restarts at the next idle point with blue's state replayed. */
static int sets_session_state(const struct sh_stmt *st)
{
    static const char *const tags[] = {"PREPARE", "DEALLOCATE", "DEALLOCATE ALL"};
    if (st->green.status != SY_SHADOW_ST_ERROR || st->blue.status == SY_SHADOW_ST_ERROR)
        return 0;
    if (st->named_parse)
        return 1;
    for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++)
        if (strcmp(st->blue.tag, tags[i]) == 0)
            return 1;
    return 0;
}

static void compare_one(struct sy_session *sess, struct pg_shadow *sh, struct sh_stmt *st)
{
    struct sy_proxy *p = sess->proxy;
    if (st->uncomparable) {
        sy_shadow_report_bump(p->shadow_report, SY_SHADOW_CTR_SKIPPED, 1);
        sy_shadow_report_bump(p->shadow_report, SY_SHADOW_CTR_TOO_LARGE, 1);
        return;
    }
    int self_differs = self_check(p, st);
    struct sy_shadow_accept acc[4]; /* those naming this fingerprint: usually none */
    struct sy_shadow_hints h = {
        .volatile_stmt = st->volatile_stmt || self_differs,
        .read_only_shadow = p->shadow_mode == SY_SHADOW_READS,
        .redact_values = p->cfg.shadow_redact,
        .accepts = acc,
        .naccepts = accepts_for(p, st, acc, sizeof(acc) / sizeof(acc[0])),
    };
    struct sy_shadow_example ex;
    memset(&ex, 0, sizeof(ex));
    enum sy_shadow_class cls = sy_shadow_compare(&st->blue, &st->green, &h, &ex);
    if (cls != SY_SHADOW_MATCH && h.read_only_shadow && after_skipped_write(sh, st))
        cls = SY_SHADOW_SKIPPED_WRITE;
    cls = session_class(sess, sh, st, cls);
    if (cls == SY_SHADOW_SKIPPED_WRITE && !sh->restart_pending && sets_session_state(st))
        sh->restart_pending = RESTART_STATE;
    /* reads mode: a data difference may be replication lag. It counts as inconclusive until a
     * lag check proves it lag or real (lag_consider). */
    int lag_check = 0;
    if (h.read_only_shadow && cls == SY_SHADOW_REAL && sy_lag_candidate(ex.what)) {
        cls = sy_shadow_accept_class(acc, h.naccepts, SY_SHADOW_INCONCLUSIVE);
        lag_check = cls == SY_SHADOW_INCONCLUSIVE;
    }
    if (h.read_only_shadow) {
        if (st->fresh_tx)
            sh->tx_skipped = 0;
        if (cls == SY_SHADOW_SKIPPED_WRITE && st->green_status == 'E')
            sh->tx_skipped = 1;
        else if (st->green_status == 'I')
            sh->tx_skipped = 0;
    }
    if (sess->side == SY_GREEN)
        name_sides(&ex, st);
    uint64_t at_us = now_us();
    sy_shadow_report_add(p->shadow_report, st->fp, st->fp_hash, cls,
                         (int64_t)(st->blue_us - st->sent_us),
                         (int64_t)(st->green_us - st->sent_us),
                         cls == SY_SHADOW_MATCH ? NULL : &ex, at_us);
    recheck_consider(sess, st, cls, &ex, at_us);
    if (lag_check)
        lag_consider(sess, st, &ex, at_us, acc, h.naccepts);
    if (cls != SY_SHADOW_MATCH && cls != SY_SHADOW_SKIPPED_WRITE && log_allowed(sess))
        /* No values in the log: they are in the report (unless redacted). */
        sy_session_log(sess, SY_LOG_INFO, "shadow divergence (%s): %s; differs in %s%s%s",
                       sy_shadow_class_name(cls), st->fp, ex.what[0] ? ex.what : "?",
                       ex.column[0] ? ", column " : "", ex.column);
}

static void linger_done(struct sy_session *sess, struct pg_shadow *sh);

/* Compares and drops the statements both sides have answered. */
static void settle(struct sy_session *sess, struct pg_shadow *sh)
{
    while (sh->n > 0 && sh->nblue > 0 && sh->ngreen > 0) {
        struct sh_stmt *st = at(sh, 0);
        compare_one(sess, sh, st);
        stmt_free(st);
        sh->q[sh->head] = NULL;
        sh->head = (sh->head + 1) % SHADOW_MAX_STMTS;
        sh->n--;
        sh->nblue--;
        sh->ngreen--;
    }
    if (sh->restart_pending && sh->state == SH_ON && !sh->lingering)
        suspend_for(sess, sh,
                    sh->restart_pending == RESTART_STATE
                        ? "green refused a prepared statement (its transaction was aborted by "
                          "a refused write)"
                        : "green's schema changed under a prepared statement",
                    0);
    else if (sh->lingering && sh->n == 0)
        linger_done(sess, sh);
}

/* Green has not answered the oldest statement blue answered long ago: suspend. */
static int check_late(struct sy_session *sess, struct pg_shadow *sh)
{
    if (sh->state != SH_ON || sh->n == 0 || sh->ngreen >= sh->nblue)
        return 0;
    struct sh_stmt *st = at(sh, sh->ngreen);
    uint64_t t = sess->proxy->cfg.shadow_timeout_ms * 1000u;
    if (t == 0 || now_us() - st->sent_us < t)
        return 0;
    suspend(sess, sh, "green did not answer within shadow_timeout");
    return -1;
}

/* ---- the client's requests ---- */

/* The statement text named in a Bind ("" for the unnamed statement). */
static const char *stmt_text(struct pg_shadow *sh, const char *name)
{
    if (!name[0])
        return sh->unnamed;
    for (size_t i = 0; i < sh->nnamed; i++)
        if (strcmp(sh->named[i].name, name) == 0)
            return sh->named[i].text;
    return NULL;
}

static void named_set(struct pg_shadow *sh, const char *name, const char *text, size_t tl)
{
    if (!sh->named && !(sh->named = calloc(NAMED_MAX, sizeof(*sh->named))))
        return;
    struct named_stmt *slot = NULL;
    for (size_t i = 0; i < sh->nnamed && !slot; i++)
        if (strcmp(sh->named[i].name, name) == 0)
            slot = &sh->named[i];
    if (!slot) {
        if (sh->nnamed < NAMED_MAX)
            slot = &sh->named[sh->nnamed++];
        else
            slot = &sh->named[sh->named_next++ % NAMED_MAX];
    }
    snprintf(slot->name, sizeof(slot->name), "%s", name);
    snprintf(slot->text, sizeof(slot->text), "%.*s", (int)(tl < FP_MAX - 1 ? tl : FP_MAX - 1),
             text);
}

void pg_shadow_statement(struct sy_session *sess, const char *name, const char *text)
{
    struct pg_shadow *sh = pg_sess_of(sess)->shadow;
    if (sh && name[0])
        named_set(sh, name, text, strlen(text));
}

static void on_parse(struct pg_shadow *sh, const uint8_t *m, size_t len)
{
    const char *name = (const char *)m + 5, *end = (const char *)m + len;
    const char *nz = memchr(name, 0, (size_t)(end - name));
    if (!nz)
        return;
    const char *query = nz + 1;
    const char *qz = query < end ? memchr(query, 0, (size_t)(end - query)) : NULL;
    if (!qz)
        return;
    size_t ql = (size_t)(qz - query);
    if (!name[0]) {
        snprintf(sh->unnamed, sizeof(sh->unnamed), "%.*s", (int)(ql < FP_MAX - 1 ? ql : FP_MAX - 1),
                 query);
        return;
    }
    named_set(sh, name, query, ql);
}

/* Lag checks (reads mode, once wanted): a Bind's parameters from its format codes on [b, end),
 * copied into the session's buffer (reused: no allocation in the steady state). A request with
 * more than one Bind, or parameters over SY_LAG_PARAMS_MAX, cannot be run again. */
static void lag_keep_bind(struct pg_shadow *sh, const uint8_t *b, const uint8_t *end)
{
    if (!lag_params_wanted || !sh->guard || sh->batch_nolag)
        return;
    size_t n = (size_t)(end - b);
    if (++sh->batch_binds > 1 || n > SY_LAG_PARAMS_MAX) {
        sh->batch_nolag = 1;
        return;
    }
    if (n > sh->bind_cap) {
        uint8_t *nb = realloc(sh->bind_params, SY_LAG_PARAMS_MAX);
        if (!nb) {
            sh->batch_nolag = 1;
            return;
        }
        sh->bind_params = nb;
        sh->bind_cap = SY_LAG_PARAMS_MAX;
    }
    memcpy(sh->bind_params, b, n);
    sh->bind_len = (uint32_t)n;
}

/* An Execute: the request can be run again only with one Execute that fetched every row. */
static void lag_note_execute(struct pg_shadow *sh, const uint8_t *m, size_t len)
{
    if (!lag_params_wanted || !sh->guard)
        return;
    const uint8_t *end = m + len, *pz = memchr(m + 5, 0, len > 5 ? len - 5 : 0);
    if (++sh->batch_execs > 1 || !pz || end - pz < 5 || pg_get_u32(pz + 1) != 0)
        sh->batch_nolag = 1;
}

/* At the request's Sync: a statement whose fingerprint wants lag checks keeps its text and
 * parameters, when the request can be run again and its text was kept whole. */
static void lag_keep_ext(struct sh_stmt *st, const struct pg_shadow *sh, const char *text)
{
    if (!lag_params_wanted || !sh->guard || sh->batch_nolag || sh->batch_binds != 1 ||
        sh->batch_execs != 1 || strlen(text) >= FP_MAX - 1 || st->text)
        return;
    const struct self_seen *e = &self_table[st->fp_hash % SELF_SLOTS];
    if (e->fp_hash != st->fp_hash || !e->wants_lag || e->nondeterministic)
        return;
    st->text = strdup(text);
    st->params = malloc(sh->bind_len ? sh->bind_len : 1);
    if (!st->text || !st->params) {
        free(st->text);
        free(st->params);
        st->text = NULL;
        st->params = NULL;
        return;
    }
    memcpy(st->params, sh->bind_params, sh->bind_len);
    st->params_len = sh->bind_len;
    st->ext_ok = 1;
}

static void on_bind(struct pg_shadow *sh, const uint8_t *m, size_t len)
{
    const char *portal = (const char *)m + 5, *end = (const char *)m + len;
    const char *pz = memchr(portal, 0, (size_t)(end - portal));
    const char *stmt = pz ? pz + 1 : NULL;
    const char *sz = stmt && stmt < end ? memchr(stmt, 0, (size_t)(end - stmt)) : NULL;
    if (sz)
        snprintf(sh->bound, sizeof(sh->bound), "%s", stmt);
    if (sz)
        lag_keep_bind(sh, (const uint8_t *)sz + 1, (const uint8_t *)end);
}

/* ---- the read-only guard (reads mode) ---- */

#define GUARD_NAME "__switchyard_shadow_guard"

static size_t put_msg(uint8_t *b, uint8_t type, const char *a, const char *bstr, size_t tail)
{
    /* type, length, then a and b as C strings (b may be NULL), then tail zero bytes */
    size_t al = strlen(a) + 1, bl = bstr ? strlen(bstr) + 1 : 0;
    size_t len = 4 + al + bl + tail;
    b[0] = type;
    pg_put_u32(b + 1, (uint32_t)len);
    memcpy(b + 5, a, al);
    if (bstr)
        memcpy(b + 5 + al, bstr, bl);
    memset(b + 5 + al + bl, 0, tail);
    return 1 + len;
}

static size_t put_sync(uint8_t *b)
{
    b[0] = PG_FE_SYNC;
    pg_put_u32(b + 1, 4);
    return 5;
}

/* Runs sql on a statement and portal of the guard's own, closed again: Close, Parse, Bind,
 * Execute, Close. The statement is parsed again each time, so that the client's DEALLOCATE ALL
 * cannot leave the guard without it. */
static size_t put_run(uint8_t *b, const char *sql)
{
    size_t n = 0;
    n += put_msg(b + n, PG_FE_CLOSE, "S" GUARD_NAME, NULL, 0);
    n += put_msg(b + n, PG_FE_PARSE, GUARD_NAME, sql, 2);           /* no parameter types */
    n += put_msg(b + n, PG_FE_BIND, GUARD_NAME, GUARD_NAME, 6);      /* no formats or values */
    n += put_msg(b + n, PG_FE_EXECUTE, GUARD_NAME, NULL, 4);        /* every row */
    n += put_msg(b + n, PG_FE_CLOSE, "P" GUARD_NAME, NULL, 0);
    return n;
}

static uint8_t guard[512], end_guard[768];
static size_t guard_len, end_len, end_guard_len; /* end_guard: COMMIT, then the guard */

/* Before a simple Query, which drops the unnamed statement and portal itself, the guard goes as
 * one simple Query too: one message and one ReadyForQuery for green, also with the COMMIT due. */
#define QGUARD_SQL "BEGIN READ ONLY;SELECT 1"
#define QEND_GUARD_SQL "COMMIT;" QGUARD_SQL
static uint8_t qguard[64], qend_guard[64];
static size_t qguard_len, qend_guard_len;

static size_t put_query(uint8_t *b, const char *sql)
{
    size_t n = strlen(sql) + 1;
    b[0] = PG_FE_QUERY;
    pg_put_u32(b + 1, (uint32_t)(4 + n));
    memcpy(b + 5, sql, n);
    return 5 + n;
}

static void guard_bytes(void)
{
    if (guard_len)
        return;
    qguard_len = put_query(qguard, QGUARD_SQL);
    qend_guard_len = put_query(qend_guard, QEND_GUARD_SQL);
    guard_len = put_run(guard, "BEGIN READ ONLY");
    guard_len += put_run(guard + guard_len, "SELECT 1"); /* the snapshot: read-only for good */
    guard_len += put_sync(guard + guard_len);
    end_len = put_run(end_guard, "COMMIT");
    end_len += put_sync(end_guard + end_len);
    memcpy(end_guard + end_len, guard, guard_len);
    end_guard_len = end_len + guard_len;
}

static int early_add(struct sy_session *sess, struct pg_shadow *sh, const uint8_t *b, size_t n);

/* A session stayed idle: its COMMIT goes alone. */
static void on_due(uv_timer_t *t)
{
    uint64_t now = uv_now(t->loop);
    while (due_head && due_head->due_at_ms <= now) {
        struct pg_shadow *sh = due_head;
        due_unlink(sh);
        struct sy_conn *g = sh->sess->standby;
        if (sh->state == SH_ON && g && g->open) {
            sh->inj_tail++;
            sh->tx_dirty = 0;
            if (sh->early_on)
                early_add(sh->sess, sh, end_guard, end_len);
            else
                sy_conn_send(g, end_guard, end_len); /* a failure suspends (pg_shadow_failed) */
        }
    }
    if (due_head)
        uv_timer_start(&due_timer, on_due, due_head->due_at_ms - now, 0);
}

/* Blue said idle: green's transaction is to end too. */
static void commit_later(struct sy_session *sess, struct pg_shadow *sh)
{
    if (sh->commit_due || !due_timer_open)
        return;
    sh->sess = sess;
    sh->commit_due = 1;
    sh->due_at_ms = uv_now(sess->proxy->loop) + COMMIT_DELAY_MS;
    sh->due_prev = due_tail;
    sh->due_next = NULL;
    if (due_tail)
        due_tail->due_next = sh;
    else
        due_head = sh;
    due_tail = sh;
    if (!uv_is_active((uv_handle_t *)&due_timer))
        uv_timer_start(&due_timer, on_due, COMMIT_DELAY_MS, 0);
}

/* Before a request: the guard (after the COMMIT due, if any), to go out with its first bytes. */
static void guard_next(struct pg_shadow *sh, uint8_t type)
{
    guard_bytes();
    int q = type == PG_FE_QUERY;
    if (sh->commit_due) {
        due_unlink(sh);
        if (!q)
            sh->inj_tail++; /* the extended COMMIT has its own Sync */
        sh->pre = q ? qend_guard : end_guard;
        sh->pre_len = q ? qend_guard_len : end_guard_len;
    } else {
        sh->pre = q ? qguard : guard;
        sh->pre_len = q ? qguard_len : guard_len;
    }
    sh->inj_tail++;
    sh->tx_dirty = 1;
}

/* A client message starts: in reads mode, the guard goes before each request. Bytes of the
 * client's scanned so far are mirrored first (ps->shadow_from, see the relay). */
static void guard_before(struct sy_session *sess, struct pg_shadow *sh, uint8_t type,
                         const uint8_t *m)
{
    struct pg_sess *ps = pg_sess_of(sess);
    if (type == PG_FE_COPY_DATA || type == PG_FE_COPY_DONE || type == PG_FE_COPY_FAIL ||
        type == PG_FE_TERMINATE)
        return;
    if (!sh->req_open) {
        const uint8_t *from = sess->client.buf + ps->shadow_from;
        if (m > from)
            pg_shadow_mirror(sess, from, (size_t)(m - from));
        ps->shadow_from = (size_t)(m - sess->client.buf);
        if (sh->state != SH_ON)
            return; /* the mirror suspended it */
        guard_next(sh, type);
        sh->req_open = 1;
    }
    if (type == PG_FE_QUERY || type == PG_FE_SYNC || type == PG_FE_FUNCTION_CALL)
        sh->req_open = 0;
}

void pg_shadow_client_message(struct sy_session *sess, uint8_t type, const uint8_t *m, size_t len,
                              int whole)
{
    struct pg_shadow *sh = pg_sess_of(sess)->shadow;
    if (!sh || sh->state != SH_ON)
        return;
    if (sh->guard) {
        guard_before(sess, sh, type, m);
        if (sh->state != SH_ON)
            return;
    }
    switch (type) {
    case PG_FE_QUERY:
        push(sess, sh, whole ? (const char *)m + 5 : "(a query too large to compare)",
             whole ? strnlen((const char *)m + 5, len - 5) : 31, !whole, whole);
        return;
    case PG_FE_FUNCTION_CALL:
        push(sess, sh, NULL, 0, 0, 0);
        return;
    case PG_FE_COPY_DATA:
    case PG_FE_COPY_DONE:
    case PG_FE_COPY_FAIL:
    case PG_FE_TERMINATE:
        return;
    default:
        break;
    }
    /* The extended protocol: the request's statement is queued at its first message. */
    if (!sh->batch_open) {
        if (!push_open(sess, sh))
            return;
        sh->batch_open = 1;
    }
    switch (type) {
    case PG_FE_PARSE:
        if (whole && len > 5 && m[5])
            at(sh, sh->n - 1)->named_parse = 1;
        if (whole)
            on_parse(sh, m, len);
        else
            sh->batch_uncomparable = 1;
        return;
    case PG_FE_BIND:
        if (whole)
            on_bind(sh, m, len);
        else
            sh->batch_uncomparable = 1;
        return;
    case PG_FE_EXECUTE:
        lag_note_execute(sh, m, len);
        if (!sh->batch_has_text) {
            const char *t = stmt_text(sh, sh->bound);
            snprintf(sh->batch_text, sizeof(sh->batch_text), "%s", t ? t : "(unknown statement)");
            sh->batch_has_text = 1;
        }
        return;
    case PG_FE_SYNC: {
        const char *t = sh->batch_has_text ? sh->batch_text : "(extended protocol, no Execute)";
        struct sh_stmt *st = at(sh, sh->n - 1);
        stmt_name(sess, st, t, strlen(t), 0);
        st->uncomparable = (uint8_t)sh->batch_uncomparable;
        if (sh->batch_has_text)
            lag_keep_ext(st, sh, t);
        batch_reset(sh);
        return;
    }
    default:
        return;
    }
}

/* Keeps bytes for a shadow connection still logging in. Returns 0, or -1 after suspending. */
static int early_add(struct sy_session *sess, struct pg_shadow *sh, const uint8_t *b, size_t n)
{
    if (sh->early_len + n > sess->proxy->cfg.shadow_queue) {
        suspend(sess, sh, "more than shadow_queue bytes were sent while green logged in");
        return -1;
    }
    if (sh->early_len + n > sh->early_cap) {
        size_t cap = sh->early_cap ? sh->early_cap : 4096;
        while (cap < sh->early_len + n)
            cap *= 2;
        uint8_t *e = realloc(sh->early, cap);
        if (!e) {
            suspend(sess, sh, "out of memory");
            return -1;
        }
        sh->early = e;
        sh->early_cap = cap;
    }
    memcpy(sh->early + sh->early_len, b, n);
    sh->early_len += n;
    return 0;
}

void pg_shadow_mirror(struct sy_session *sess, const uint8_t *bytes, size_t n)
{
    struct pg_shadow *sh = pg_sess_of(sess)->shadow;
    struct sy_conn *g = sess->standby;
    if (!sh || sh->state != SH_ON || !g || !g->open)
        return;
    if (sh->early_on) {
        if (sh->pre) {
            const uint8_t *pre = sh->pre;
            sh->pre = NULL;
            if (early_add(sess, sh, pre, sh->pre_len) != 0)
                return;
        }
        early_add(sess, sh, bytes, n);
        return;
    }
    if (uv_stream_get_write_queue_size((uv_stream_t *)&g->tcp) > sess->proxy->cfg.shadow_queue) {
        suspend(sess, sh, "more than shadow_queue bytes wait to be written to green");
        return;
    }
    /* A failure closes the shadow connection and reports through pg_shadow_failed. */
    if (sh->pre) {
        const uint8_t *pre = sh->pre;
        size_t pre_len = sh->pre_len;
        sh->pre = NULL;
        uint8_t both[2048];
        if (pre_len + n <= sizeof(both)) {
            memcpy(both, pre, pre_len);
            memcpy(both + pre_len, bytes, n);
            sy_conn_send(g, both, pre_len + n);
            return;
        }
        if (sy_conn_send(g, pre, pre_len) != 0)
            return;
    }
    sy_conn_send(g, bytes, n);
}

/* ---- blue's answers (from the relay) ---- */

static void note_write(struct sy_session *sess, const uint8_t *m, size_t len)
{
    static const char *const verbs[] = {"INSERT ", "UPDATE ", "DELETE ", "MERGE ", "COPY ",
                                        "COMMIT"};
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        size_t vl = strlen(verbs[i]);
        if (len >= 5 + vl && memcmp(m + 5, verbs[i], vl) == 0) {
            sess->proxy->shadow_last_write_us = now_us();
            return;
        }
    }
}

void pg_shadow_server_message(struct sy_session *sess, uint8_t type, const uint8_t *m, size_t len,
                              int whole)
{
    struct sy_proxy *p = sess->proxy;
    if (p->shadow_mode == SY_SHADOW_OFF)
        return;
    if (type == PG_BE_COMMAND_COMPLETE && whole)
        note_write(sess, m, len);
    struct pg_shadow *sh = pg_sess_of(sess)->shadow;
    if (!sh || sh->state != SH_ON || sh->nblue >= sh->n || type == PG_BE_READY_FOR_QUERY)
        return;
    struct sh_stmt *st = at(sh, sh->nblue);
    if (!whole)
        st->uncomparable = 1;
    else
        sy_shadow_result_feed(&st->blue, type, m + 5, len - 5);
}

static void maybe_start(struct sy_session *sess, struct pg_shadow *sh);

void pg_shadow_blue_ready(struct sy_session *sess, int idle, int answers_client)
{
    struct pg_sess *ps = pg_sess_of(sess);
    struct pg_shadow *sh = ps->shadow;
    if (answers_client && sess->proxy->shadow_mode != SY_SHADOW_OFF) {
        struct sy_shadow_report *rep = sess->proxy->shadow_report;
        sy_shadow_report_bump(rep, SY_SHADOW_CTR_SEEN, 1);
        if (sh && sh->state == SH_NEVER) {
            sy_shadow_report_bump(rep, SY_SHADOW_CTR_NOT_SAMPLED, 1);
            sy_shadow_report_bump(rep, SY_SHADOW_CTR_SKIPPED, 1);
        } else if (!sh || sh->state != SH_ON || sh->nblue >= sh->n) {
            sy_shadow_report_bump(rep, SY_SHADOW_CTR_NOT_RUNNING, 1);
        }
    }
    if (sh && sh->state == SH_ON && sh->nblue < sh->n) {
        at(sh, sh->nblue)->blue_us = now_us();
        at(sh, sh->nblue)->blue_done = 1;
        sh->nblue++;
        settle(sess, sh);
        if (check_late(sess, sh) != 0)
            return;
    }
    /* Idle on blue with nothing of the client's half-sent: green's transaction ends too. */
    if (sh && sh->state == SH_ON && sh->guard && idle && sh->tx_dirty && !sh->req_open &&
        ps->fe.body_left == 0)
        commit_later(sess, sh);
    /* Starting needs the server connection quiet: after the relay forwarded this answer. */
    if (idle && sess->proxy->shadow_mode != SY_SHADOW_OFF)
        ps->shadow_idle = 1;
}

void pg_shadow_idle(struct sy_session *sess)
{
    struct pg_sess *ps = pg_sess_of(sess);
    ps->shadow_idle = 0;
    if (sess->phase == SY_PHASE_READY && sess->tx == SY_TX_IDLE &&
        sess->proxy->shadow_mode != SY_SHADOW_OFF)
        maybe_start(sess, ps->shadow);
}

/* ---- green's answers (the shadow connection) ---- */

/* An error answering a guard: only "current transaction is aborted" is expected (the guard met
 * a failed transaction of the client's, which nothing can write in until it ends). Anything
 * else may have left the next request outside a read-only transaction. */
static int guard_failed(const uint8_t *body, size_t len)
{
    struct pg_error_fields f;
    return pg_be_body_error(body, len, &f) < 0 || !f.sqlstate || strcmp(f.sqlstate, "25P02") != 0;
}

/* The message at buf[0, avail): its length when whole, 0 (need more), -1 (oversized: its
 * bytes are being skipped; *skip bytes of buf are skipped now), -2 (an invalid length). */
static long green_message(struct pg_shadow *sh, const uint8_t *buf, size_t avail, size_t cap,
                          size_t *skip)
{
    *skip = 0;
    if (sh->skip_left > 0) {
        size_t n = avail < sh->skip_left ? avail : sh->skip_left;
        *skip = n;
        sh->skip_left -= (uint32_t)n;
        return sh->skip_left > 0 ? 0 : -1;
    }
    if (avail < 5)
        return 0;
    uint32_t l = pg_get_u32(buf + 1);
    if (l < 4)
        return -2;
    size_t total = (size_t)l + 1;
    if (total > cap) {
        /* Too large to hold whole: skip it, and the statement is not compared. */
        *skip = avail;
        sh->skip_left = (uint32_t)(total - avail);
        return -1;
    }
    return avail >= total ? (long)total : 0;
}

/* Green's answers: each whole message is read in place and the buffer is compacted once at the
 * end (a memmove per message cost more than the reading itself on small answers). */
int pg_shadow_green_data(struct sy_session *sess)
{
    struct pg_shadow *sh = pg_sess_of(sess)->shadow;
    struct sy_conn *g = sess->standby;
    if (!sh || !g)
        return 0;
    size_t off = 0;
    while (off < g->len && sh->state == SH_ON) {
        struct sh_stmt *st = sh->ngreen < sh->n ? at(sh, sh->ngreen) : NULL;
        const uint8_t *m = g->buf + off;
        uint8_t type = m[0];
        size_t skip;
        long total = green_message(sh, m, g->len - off, g->cap, &skip);
        off += skip;
        if (total == 0)
            break;
        if (total == -2) {
            suspend(sess, sh, "green sent an invalid message");
            break;
        }
        if (total < 0) {
            if (st)
                st->uncomparable = 1;
            continue;
        }
        off += (size_t)total;
        uint16_t *inj = st ? &st->inj_before : &sh->inj_tail;
        if (*inj > 0) {
            /* The answer to a guard or a COMMIT of ours. */
            if (type == PG_BE_READY_FOR_QUERY) {
                if (total >= 6 && m[5] == 'I') {
                    if (st)
                        st->fresh_tx = 1;
                    else
                        sh->fresh_next = 1;
                }
                (*inj)--;
            } else if (type == PG_BE_ERROR && guard_failed(m + 5, (size_t)total - 5)) {
                suspend(sess, sh, "green refused the read-only transaction shadowing runs in");
                break;
            }
            continue;
        }
        if (type == PG_BE_READY_FOR_QUERY) {
            uint8_t status = total >= 6 ? m[5] : 0;
            if (!st) {
                suspend(sess, sh, "green answered a request it was not sent");
                break;
            }
            st->green_us = now_us();
            st->green_status = status;
            st->green_done = 1;
            sh->ngreen++;
            settle(sess, sh);
            continue;
        }
        if (type == PG_BE_ERROR && !st) {
            suspend(sess, sh, "green ended the shadow connection");
            break;
        }
        if (st && type != PG_BE_NOTICE && type != PG_BE_NOTIFICATION &&
            type != PG_BE_PARAMETER_STATUS)
            sy_shadow_result_feed(&st->green, type, m + 5, (size_t)total - 5);
    }
    sy_conn_consume(g, off);
    return 0;
}

/* ---- starting, and the standby machinery's reports ---- */

static int sampled(struct sy_proxy *p)
{
    uint32_t ppm = p->shadow_sample_ppm;
    if (ppm >= 1000000)
        return 1;
    uint32_t r;
    uv_random(NULL, NULL, &r, sizeof(r), 0, NULL);
    return r % 1000000u < ppm;
}

/* Opens the session's shadow connection to the side that is not live. Returns 0, or -1 when it
 * could not start (the session's shadow is then suspended for shadow_resume). */
static int shadow_open(struct sy_session *sess, struct pg_shadow *sh)
{
    struct sy_proxy *p = sess->proxy;
    enum sy_side to = (enum sy_side)!p->active;
    if (pg_move_shadow_open(sess, to, p->shadow_mode == SY_SHADOW_READS) == 0)
        return 0;
    sh->state = SH_SUSPENDED;
    sh->resume_at_ms = loop_ms(sess) + p->cfg.shadow_resume_ms;
    return -1;
}

/* At an idle point: open the shadow, or read the state for it, when it is time. */
static void maybe_start(struct sy_session *sess, struct pg_shadow *sh)
{
    struct sy_proxy *p = sess->proxy;
    struct pg_sess *ps = pg_sess_of(sess);
    if (p->paused || sy_switch_running(p) || sess->side != p->active || ps->ext_open ||
        ps->pending_ready || ps->in_copy || !sess->server || sess->server->len > 0)
        return;
    if (!sh) {
        sh = ps->shadow = calloc(1, sizeof(*sh));
        if (!sh)
            return;
        if (!sampled(p)) {
            sh->state = SH_NEVER; /* its statements count as not sampled */
            return;
        }
    }
    if (sh->state == SH_WARM) {
        if (pg_move_prepare(sess) == 0)
            sh->state = SH_READING;
        else
            suspend(sess, sh, "the session's state could not be read");
        return;
    }
    if ((sh->state != SH_OFF && sh->state != SH_SUSPENDED) || ps->move || sess->standby ||
        loop_ms(sess) < sh->resume_at_ms)
        return;
    if (shadow_open(sess, sh) == 0)
        sh->state = SH_OPENING;
}

/* Mirroring starts: what is sent to the session's server from now on goes to green too. */
static void mirroring_on(struct sy_session *sess, struct pg_shadow *sh)
{
    sh->state = SH_ON;
    sh->skip_left = 0;
    sh->guard = sess->proxy->shadow_mode == SY_SHADOW_READS;
    guard_reset(sh);
    batch_reset(sh);
    if (!sh->counted)
        sy_shadow_report_bump(sess->proxy->shadow_report, SY_SHADOW_CTR_SESSIONS, 1);
    sh->counted = 1;
}

void pg_shadow_login(struct sy_session *sess)
{
    struct sy_proxy *p = sess->proxy;
    struct pg_sess *ps = pg_sess_of(sess);
    if (p->shadow_mode == SY_SHADOW_OFF || ps->shadow || p->paused || sy_switch_running(p) ||
        sess->side != p->active || ps->move || sess->standby)
        return;
    struct pg_shadow *sh = ps->shadow = calloc(1, sizeof(*sh));
    if (!sh)
        return;
    if (!sampled(p)) {
        sh->state = SH_NEVER;
        return;
    }
    if (shadow_open(sess, sh) != 0)
        return;
    mirroring_on(sess, sh);
    sh->early_on = 1;
    sy_session_log(sess, SY_LOG_DEBUG, "shadowing on %s from login",
                   sy_side_name((enum sy_side)!p->active));
}

void pg_shadow_ready(struct sy_session *sess)
{
    struct pg_sess *ps = pg_sess_of(sess);
    struct pg_shadow *sh = ps->shadow;
    if (sh && sh->state == SH_ON && sh->early_on) {
        /* Green logged in: what the session sent meanwhile goes out, in order. */
        pg_move_shadow_live(sess);
        sh->early_on = 0;
        int rc = sh->early_len ? sy_conn_send(sess->standby, sh->early, sh->early_len) : 0;
        (void)rc; /* a failure suspended the shadow through pg_shadow_failed */
        free(sh->early);
        sh->early = NULL;
        sh->early_len = sh->early_cap = 0;
        return;
    }
    if (!sh || sh->state != SH_OPENING) {
        pg_move_drop(sess);
        return;
    }
    sh->state = SH_WARM;
    if (sess->phase == SY_PHASE_READY && sess->tx == SY_TX_IDLE)
        maybe_start(sess, sh);
}

void pg_shadow_mirroring(struct sy_session *sess)
{
    struct pg_shadow *sh = pg_sess_of(sess)->shadow;
    if (!sh || sh->state != SH_READING)
        return;
    mirroring_on(sess, sh);
    sy_session_log(sess, SY_LOG_DEBUG, "shadowing on %s",
                   sy_side_name((enum sy_side)!sess->proxy->active));
}

/* ---- a closed session's shadow finishing (pg_shadow_linger) ---- */

/* Every answer green owed came and was compared: green's session ends (Terminate), and so does
 * the shadow connection; the session is freed once it has closed. */
static void linger_done(struct sy_session *sess, struct pg_shadow *sh)
{
    static const uint8_t terminate[5] = {PG_FE_TERMINATE, 0, 0, 0, 4};
    linger_unlink(sh);
    sh->state = SH_OFF;
    if (sess->standby && sess->standby->open)
        sy_conn_send(sess->standby, terminate, sizeof(terminate));
    pg_move_drop(sess);
}

static void on_linger_timer(uv_timer_t *t)
{
    uint64_t now = uv_now(t->loop);
    for (struct pg_shadow *sh = linger_head, *next; sh; sh = next) {
        next = sh->linger_next;
        if (now >= sh->linger_until_ms)
            suspend(sh->sess, sh, "green did not answer within shadow_timeout after the "
                                  "session ended");
    }
    if (!linger_head)
        uv_timer_stop(t);
}

int pg_shadow_linger(struct sy_session *sess)
{
    struct pg_sess *ps = pg_sess_of(sess);
    struct pg_shadow *sh = ps->shadow;
    struct sy_proxy *p = sess->proxy;
    if (!sh || sh->state != SH_ON || !linger_timer_open || !sess->standby)
        return 0;
    /* Statements blue never answered (the client left mid-request) cannot be compared. */
    while (sh->n > sh->nblue) {
        size_t last = (sh->head + sh->n - 1) % SHADOW_MAX_STMTS;
        stmt_free(sh->q[last]);
        sh->q[last] = NULL;
        sh->n--;
        sy_shadow_report_bump(p->shadow_report, SY_SHADOW_CTR_SUSPENDED, 1);
    }
    if (sh->n == 0 || sh->ngreen >= sh->n)
        return 0;
    sh->sess = sess;
    sh->lingering = 1;
    sh->linger_until_ms = uv_now(p->loop) + p->cfg.shadow_timeout_ms;
    sh->linger_prev = NULL;
    sh->linger_next = linger_head;
    if (linger_head)
        linger_head->linger_prev = sh;
    linger_head = sh;
    if (!uv_is_active((uv_handle_t *)&linger_timer))
        uv_timer_start(&linger_timer, on_linger_timer, LINGER_CHECK_MS, LINGER_CHECK_MS);
    return 1;
}

void pg_shadow_failed(struct sy_session *sess, const char *reason)
{
    struct pg_shadow *sh = pg_sess_of(sess)->shadow;
    if (sh && sh->state != SH_SUSPENDED && sh->state != SH_NEVER)
        suspend(sess, sh, reason);
}

void pg_shadow_free(struct pg_sess *ps)
{
    if (!ps->shadow)
        return;
    queue_clear(ps->shadow);
    due_unlink(ps->shadow);
    early_free(ps->shadow);
    linger_unlink(ps->shadow);
    free(ps->shadow->bind_params);
    free(ps->shadow->named);
    free(ps->shadow);
    ps->shadow = NULL;
}

void sy_shadow_stop_all(struct sy_proxy *p, const char *why)
{
    for (struct sy_session *s = p->sessions; s; s = s->next) {
        struct pg_sess *ps = pg_sess_of(s);
        struct pg_shadow *sh = ps ? ps->shadow : NULL;
        if (!sh || sh->state == SH_OFF || sh->state == SH_NEVER)
            continue;
        if (sh->state != SH_SUSPENDED)
            suspend(s, sh, why);
        sh->state = SH_OFF;
        sh->resume_at_ms = 0;
    }
}

/* ---- accepted divergences (shadow accept, shadow_accept) ---- */

/* An accept from its parsed words; a fingerprint given as text is hashed as the report's are
 * (pg_fingerprint_full of the text, which leaves a fingerprint as it is), and its text is kept
 * too, so that it matches the report's text even where normalizing it again would not. */
static void accept_from_spec(struct sy_shadow_accept *a, const struct sy_shadow_accept_spec *sp,
                             int from_config)
{
    memset(a, 0, sizeof(*a));
    if (sp->has_hash) {
        a->fp_hash = sp->hash;
    } else {
        char norm[FP_MAX];
        pg_fingerprint_full(sp->fingerprint, strlen(sp->fingerprint), norm, sizeof(norm),
                            &a->fp_hash);
        snprintf(a->fingerprint, sizeof(a->fingerprint), "%s", sp->fingerprint);
    }
    snprintf(a->column, sizeof(a->column), "%s", sp->column);
    a->cls = SY_SHADOW_REAL;
    for (int c = SY_SHADOW_REAL; c < SY_SHADOW_NCLASSES; c++)
        if (strcmp(sp->cls, sy_shadow_class_name((enum sy_shadow_class)c)) == 0)
            a->cls = (enum sy_shadow_class)c;
    a->from_config = from_config;
}

/* Whether two accepts accept the same thing: the same fingerprint, column and class. */
static int accept_same(const struct sy_shadow_accept *x, const struct sy_shadow_accept *y)
{
    return (x->fp_hash == y->fp_hash ||
            (x->fingerprint[0] && strcmp(x->fingerprint, y->fingerprint) == 0)) &&
           strcmp(x->column, y->column) == 0 && x->cls == y->cls;
}

/* Puts the config's accepts first, then those added at run time (kept across a reload). */
static void accepts_take_config(struct sy_proxy *p)
{
    struct sy_shadow_accept *a = p->shadow_accepts;
    size_t keep = 0;
    for (size_t i = 0; i < p->shadow_naccepts; i++)
        if (!a[i].from_config)
            a[keep++] = a[i];
    size_t ncfg = p->cfg.nshadow_accept;
    if (ncfg + keep > SY_SHADOW_ACCEPT_MAX)
        keep = SY_SHADOW_ACCEPT_MAX - ncfg; /* ncfg <= SY_SHADOW_ACCEPT_CFG_MAX < MAX */
    memmove(a + ncfg, a, keep * sizeof(*a));
    for (size_t i = 0; i < ncfg; i++)
        accept_from_spec(&a[i], &p->cfg.shadow_accept[i], 1);
    p->shadow_naccepts = ncfg + keep;
}

/* Makes the accept list (the config's) and sets the gate's window at first use. Returns 0, or
   -1 when memory ran out (nothing is accepted then). */
static int accepts_ready(struct sy_proxy *p)
{
    if (p->shadow_accepts)
        return 0;
    sy_shadow_report_set_window(p->shadow_report, p->cfg.shadow_gate_window_ms * 1000u);
    p->shadow_accepts = calloc(SY_SHADOW_ACCEPT_MAX, sizeof(*p->shadow_accepts));
    if (!p->shadow_accepts)
        return -1;
    p->shadow_naccepts = 0;
    accepts_take_config(p);
    return 0;
}

void sy_shadow_config_changed(struct sy_proxy *p)
{
    sy_shadow_report_set_window(p->shadow_report, p->cfg.shadow_gate_window_ms * 1000u);
    if (p->shadow_accepts)
        accepts_take_config(p);
    else
        accepts_ready(p);
}

/* The accepts naming the statement's fingerprint, copied into out[0, cap). Returns how many. */
static size_t accepts_for(struct sy_proxy *p, const struct sh_stmt *st,
                          struct sy_shadow_accept *out, size_t cap)
{
    size_t n = 0;
    if (accepts_ready(p) != 0)
        return 0;
    for (size_t i = 0; i < p->shadow_naccepts && n < cap; i++)
        if (sy_shadow_accept_matches(&p->shadow_accepts[i], st->fp, st->fp_hash))
            out[n++] = p->shadow_accepts[i];
    return n;
}

static struct json_object *accepts_reply(struct sy_proxy *p)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "accepts", sy_shadow_accepts_json(p->shadow_accepts,
                                                                 p->shadow_naccepts));
    char *t = sy_shadow_accepts_table(p->shadow_accepts, p->shadow_naccepts);
    if (t) {
        json_object_object_add(o, "table", json_object_new_string(t));
        free(t);
    }
    return o;
}

static struct json_object *err(const char *msg);

/* shadow accept | unaccept: adds or removes one accept; replies with the list. */
static struct json_object *accept_cmd(struct sy_proxy *p, const struct sy_admin_shadow_args *a)
{
    struct sy_shadow_accept x;
    if (accepts_ready(p) != 0)
        return err("out of memory");
    accept_from_spec(&x, &a->accept, 0);
    struct sy_shadow_accept *list = p->shadow_accepts;
    size_t i = 0;
    while (i < p->shadow_naccepts && !accept_same(&list[i], &x))
        i++;
    char hex[17];
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)x.fp_hash);
    if (a->op == SY_ADMIN_SHADOW_ACCEPT) {
        if (i < p->shadow_naccepts)
            return accepts_reply(p); /* already accepted: nothing to do */
        if (p->shadow_naccepts == SY_SHADOW_ACCEPT_MAX)
            return err("the accept list is full (64); remove one with shadow unaccept");
        list[p->shadow_naccepts++] = x;
        sy_info("shadow: accepted %s divergences of %s%s%s%s", sy_shadow_class_name(x.cls), hex,
                x.column[0] ? " in column " : "", x.column, x.fingerprint[0] ? "" : " (by hash)");
        return accepts_reply(p);
    }
    if (i == p->shadow_naccepts)
        return err("no such accept (the same fingerprint, --column and --class); "
                   "switchyardctl shadow accepts lists them");
    if (list[i].from_config)
        return err("that accept comes from the config (shadow_accept); remove it there and "
                   "reload");
    memmove(list + i, list + i + 1, (p->shadow_naccepts - i - 1) * sizeof(*list));
    p->shadow_naccepts--;
    sy_info("shadow: no longer accepting %s divergences of %s%s%s", sy_shadow_class_name(x.cls),
            hex, x.column[0] ? " in column " : "", x.column);
    return accepts_reply(p);
}

/* ---- admin: shadow on|off|sample X|report|reset ---- */

static struct json_object *err(const char *msg)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "error", json_object_new_string(msg));
    return o;
}

static struct json_object *state_json(struct sy_proxy *p)
{
    static const char *const modes[] = {"off", "reads", "all"};
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "shadow", json_object_new_string(modes[p->shadow_mode]));
    json_object_object_add(o, "sample", json_object_new_double(p->shadow_sample_ppm / 1e6));
    json_object_object_add(o, "target",
                           json_object_new_string(sy_side_name((enum sy_side)!p->active)));
    int64_t on = 0, suspended = 0;
    for (struct sy_session *s = p->sessions; s; s = s->next) {
        struct pg_sess *ps = pg_sess_of(s);
        if (ps && ps->shadow && ps->shadow->state == SH_ON)
            on++;
        if (ps && ps->shadow && ps->shadow->state == SH_SUSPENDED)
            suspended++;
    }
    json_object_object_add(o, "sessions_shadowed_now", json_object_new_int64(on));
    json_object_object_add(o, "sessions_suspended_now", json_object_new_int64(suspended));
    return o;
}

struct json_object *sy_shadow_cmd(struct sy_proxy *p, int argc, char **argv)
{
    /* The admin socket checked these words already with the same parser (admin_parse.c). */
    struct sy_admin_shadow_args a;
    char why[256];
    if (sy_admin_shadow_args(argc, argv, &a, why, sizeof(why)) != 0)
        return err(why);
    if (a.op == SY_ADMIN_SHADOW_ON) {
        int all = a.mode == 2 || (a.mode == 0 && p->cfg.shadow == SY_SHADOW_ALL);
        const char *m = all ? "all" : "reads";
        if (sy_switch_running(p))
            return err("a switch is under way; turn shadowing on after it");
        p->shadow_mode = all ? SY_SHADOW_ALL : SY_SHADOW_READS;
        /* Sessions already shadowed in the other mode start again in this one. */
        sy_shadow_stop_all(p, "shadow mode changed");
        sy_info("shadow: on (%s), sample %.3f; sessions start at their next idle point", m,
                p->shadow_sample_ppm / 1e6);
    } else if (a.op == SY_ADMIN_SHADOW_OFF) {
        p->shadow_mode = SY_SHADOW_OFF;
        sy_shadow_stop_all(p, "shadow turned off");
        sy_info("shadow: off");
    } else if (a.op == SY_ADMIN_SHADOW_SAMPLE) {
        p->shadow_sample_ppm = a.sample_ppm;
        sy_info("shadow: sample %.3f (for sessions not yet decided)", a.sample_ppm / 1e6);
    } else if (a.op == SY_ADMIN_SHADOW_RESET) {
        sy_shadow_report_reset(p->shadow_report);
        self_forget(); /* what was learnt about blue, too */
        sy_info("shadow: report counters reset");
    } else if (a.op == SY_ADMIN_SHADOW_ACCEPT || a.op == SY_ADMIN_SHADOW_UNACCEPT) {
        return accept_cmd(p, &a);
    } else if (a.op == SY_ADMIN_SHADOW_ACCEPTS) {
        if (accepts_ready(p) != 0)
            return err("out of memory");
        return accepts_reply(p);
    } else if (a.op == SY_ADMIN_SHADOW_REPORT) {
        struct json_object *o = sy_shadow_report_json(p->shadow_report);
        if (!o)
            return err("out of memory");
        accepts_ready(p);
        json_object_object_add(o, "state", state_json(p));
        json_object_object_add(o, "accepts", sy_shadow_accepts_json(p->shadow_accepts,
                                                                     p->shadow_naccepts));
        char *t = sy_shadow_report_table(p->shadow_report);
        char *at = sy_shadow_accepts_table(p->shadow_accepts, p->shadow_naccepts);
        if (t) {
            size_t tl = strlen(t), al = at ? strlen(at) : 0;
            char *both = realloc(t, tl + al + 1);
            if (both) {
                t = both;
                if (at)
                    memcpy(t + tl, at, al + 1);
            }
            json_object_object_add(o, "table", json_object_new_string(t));
            free(t);
        }
        free(at);
        if (a.reset) {
            sy_shadow_report_reset(p->shadow_report);
            self_forget();
        }
        return o;
    }
    return state_json(p);
}

/* Appends to why[0, cap) at *len, never past cap. */
__attribute__((format(printf, 4, 5)))
static void why_add(char *why, size_t cap, size_t *len, const char *fmt, ...)
{
    if (*len + 1 >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(why + *len, cap - *len, fmt, ap);
    va_end(ap);
    if (k > 0)
        *len = *len + (size_t)k < cap ? *len + (size_t)k : cap - 1;
}

#define GATE_NAMED 5 /* fingerprints a refusal names, the most first */

int sy_shadow_gate(struct sy_proxy *p, char *why, size_t cap)
{
    if (!p->cfg.cutover_requires_clean_shadow)
        return 0;
    accepts_ready(p); /* sets the gate's window */
    uint64_t now = now_us(), win = p->cfg.shadow_gate_window_ms * 1000u;
    uint64_t since = now > win ? now - win : 0;
    int inconclusive = p->cfg.shadow_gate_inconclusive_blocks;
    unsigned mask = 1u << SY_SHADOW_REAL | (inconclusive ? 1u << SY_SHADOW_INCONCLUSIVE : 0u);
    struct sy_shadow_gate_fp top[GATE_NAMED];
    uint64_t total = 0, real = 0;
    size_t n = sy_shadow_report_gate(p->shadow_report, since, mask, top, GATE_NAMED, &total);
    if (total <= p->cfg.shadow_gate_max)
        return 0;
    sy_shadow_report_gate(p->shadow_report, since, 1u << SY_SHADOW_REAL, NULL, 0, &real);
    size_t len = 0;
    why[0] = 0;
    why_add(why, cap, &len, "shadow traffic found %llu divergences in the last %llu s (real %llu",
            (unsigned long long)total, (unsigned long long)(p->cfg.shadow_gate_window_ms / 1000),
            (unsigned long long)real);
    if (inconclusive)
        why_add(why, cap, &len, ", inconclusive %llu", (unsigned long long)(total - real));
    why_add(why, cap, &len, "; shadow_gate_max is %u) in %zu fingerprint%s, the most first:",
            p->cfg.shadow_gate_max, n, n == 1 ? "" : "s");
    for (size_t i = 0; i < n && i < GATE_NAMED; i++) {
        const struct sy_shadow_gate_fp *g = &top[i];
        why_add(why, cap, &len, "%s [%.160s] %llu", i ? ";" : "", g->fingerprint,
                (unsigned long long)g->count);
        if (inconclusive && g->by_class[SY_SHADOW_GATE_INCONCLUSIVE])
            why_add(why, cap, &len, " (real %llu, inconclusive %llu)",
                    (unsigned long long)g->by_class[SY_SHADOW_GATE_REAL],
                    (unsigned long long)g->by_class[SY_SHADOW_GATE_INCONCLUSIVE]);
        const struct sy_shadow_example *ex = g->example;
        if (ex)
            why_add(why, cap, &len, ", e.g. %s %s%s%s%s: blue %.60s | green %.60s",
                    sy_shadow_class_name(g->example_class), ex->what,
                    ex->column[0] ? " column \"" : "", ex->column, ex->column[0] ? "\"" : "",
                    ex->blue, ex->green);
    }
    if (n > GATE_NAMED)
        why_add(why, cap, &len, "; and %zu more", n - GATE_NAMED);
    why_add(why, cap, &len, "; see switchyardctl shadow report; accept an intended change with "
            "switchyardctl shadow accept");
    return -1;
}
