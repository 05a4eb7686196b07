/*
 * The PostgreSQL control adapter: every SQL statement Switchyard itself runs on blue and green
 * for a cutover or a rollback, over blocking libpq connections (the "control connections",
 * logged in as control_user). Called from the control thread only, never from the event loop.
 *
 * Every function that can fail returns 0 on success or -1 and writes one sentence into err
 * (errlen bytes) that names the side ("blue" or "green", from the side argument) and what to fix.
 * No function logs, and no message ever holds a password.
 */
#ifndef SY_PGCTL_H
#define SY_PGCTL_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

typedef uint64_t sy_lsn; /* a WAL position; 0 means unknown */

/* Formats an LSN as PostgreSQL does ("0/16B3748") into out (at least 20 bytes). */
void sy_lsn_format(sy_lsn lsn, char *out, size_t cap);
/* Parses "X/Y". Returns 0, or -1 when s is not an LSN. */
int sy_lsn_parse(const char *s, sy_lsn *out);

/* Where and how to log in (all strings NUL-terminated; "" means libpq's default). */
struct sy_pgctl_target {
    const char *side;     /* "blue" or "green": used in error messages */
    const char *host;
    int port;
    const char *user;     /* control_user */
    const char *password; /* control_password ("" for none) */
    const char *dbname;   /* control_database: the database that holds the replication */
    const char *sslmode;  /* "disable", "prefer", "require", "verify-ca", "verify-full" */
    const char *sslrootcert;
    int connect_timeout_s;
};

/* Opens a control connection (PQconnectdbParams, application_name "switchyard-control").
 * Returns the connection, or NULL with err set. */
PGconn *sy_pgctl_connect(const struct sy_pgctl_target *t, char *err, size_t errlen);

/* Limits every statement the calling thread runs from now on to ms milliseconds from now in
 * all (0: no limit). A statement still unanswered then fails with "no answer in time" and its
 * connection is shut down (PQstatus turns bad: reconnect). */
void sy_pgctl_set_timeout(uint64_t ms);

/* What a health probe reads from one server. */
struct sy_pgctl_probe {
    int in_recovery;        /* 1: a standby (pg_is_in_recovery()) */
    int server_version_num; /* e.g. 150010 */
    sy_lsn lsn;             /* pg_current_wal_lsn() on a primary, pg_last_wal_replay_lsn() on a standby */
    int backend_pid;        /* the control connection's own pid */
};
int sy_pgctl_probe(PGconn *c, const char *side, struct sy_pgctl_probe *out, char *err, size_t errlen);

/* How the destination receives the source's changes. */
enum sy_repl_mode {
    SY_REPL_NONE = 0,     /* none found */
    SY_REPL_LOGICAL = 1,  /* a subscription on the destination, a logical slot on the source */
    SY_REPL_PHYSICAL = 2, /* the destination is a streaming standby of the source */
};

struct sy_pgctl_repl {
    enum sy_repl_mode mode;
    char subscription[64]; /* logical: the subscription's name on the destination */
    char slot[64];         /* logical: its slot on the source */
    int enabled;           /* logical: subenabled */
    int streaming;         /* a walsender for it is active on the source */
    sy_lsn source_lsn;     /* the source's WAL end, as sy_pgctl_current_lsn (without the flush) */
    sy_lsn applied_lsn;    /* how far the destination provably has the source's changes */
    int64_t lag_bytes;     /* source_lsn - applied_lsn (0 when caught up; -1 unknown) */
    double lag_seconds;    /* pg_stat_replication.replay_lag of its walsender; -1 unknown */
    char problem[256];     /* "" when usable; else why not (disabled, not streaming, several ...) */
};

/*
 * Reads the replication from src to dst (both control connections, in control_database).
 * Logical: the one subscription on dst whose slot exists on src; several candidates or none is
 * a problem, not an error. Physical: dst is in recovery and src has a streaming walsender for it.
 * applied_lsn is the largest of the proofs: (logical) the slot's confirmed_flush_lsn on src,
 * dst's pg_replication_origin_status.remote_lsn for origin 'pg_<subscription oid>' and dst's
 * pg_stat_subscription.latest_end_lsn of the apply worker (the last keepalive it processed: the
 * only one of the three that reaches the source's WAL end within milliseconds whatever WAL
 * follows the last commit; see pgctl.c), or (physical) dst's pg_last_wal_replay_lsn().
 * The control user must be a superuser (pg_replication_origin_status). Returns -1 only when a
 * query fails.
 */
int sy_pgctl_repl_state(PGconn *src, PGconn *dst, const char *src_side, const char *dst_side,
                        struct sy_pgctl_repl *out, char *err, size_t errlen);

/* Reads applied_lsn alone, as sy_pgctl_repl_state would, for a catch-up poll loop. */
int sy_pgctl_applied_lsn(PGconn *src, PGconn *dst, const struct sy_pgctl_repl *r, sy_lsn *out,
                         char *err, size_t errlen);

/*
 * The position catch-up waits for: the end of the last WAL record the source has inserted
 * (pg_current_wal_insert_lsn(), less the page header when it sits right after a page boundary).
 * Not pg_current_wal_lsn(): that is the write position, which after an asynchronous commit lies
 * before the commit. Also flushes the source's WAL that far (wal_level logical: a transaction
 * with one logical message, committed with synchronous_commit = local), so that the walsender
 * sends it now rather than after the WAL writer's next round (wal_writer_delay).
 */
int sy_pgctl_current_lsn(PGconn *c, const char *side, sy_lsn *out, char *err, size_t errlen);

/*
 * The same position without the flush: one read-only SELECT, so it may run inside a read-only
 * transaction. Run as the first statement of a REPEATABLE READ transaction, it takes the
 * transaction's snapshot before it reads the position, so every commit that snapshot sees ends
 * at or before *out (the shadow's lag check waits for green to apply that far). Returns 0 or -1.
 */
int sy_pgctl_wal_end(PGconn *c, const char *side, sy_lsn *out, char *err, size_t errlen);

/* A client backend in a transaction (pg_stat_activity). */
struct sy_pgctl_backend {
    int pid;
    double xact_age_s; /* now() - xact_start; -1 when not in a transaction */
    char user[64];
    char application[64];
    char client_addr[64];
    char state[32];
};

/* Client backends (backend_type 'client backend', not this connection) whose transaction
 * started more than min_age_s ago, oldest first, at most max. Returns the count or -1. */
int sy_pgctl_long_transactions(PGconn *c, const char *side, double min_age_s,
                               struct sy_pgctl_backend *out, int max, char *err, size_t errlen);

#define SY_FENCE_MAX_ROLES 256
#define SY_FENCE_MAX_REPORT 64

/* What a fence changed, so that exactly that can be undone. */
struct sy_pgctl_fence {
    int nroles;
    char roles[SY_FENCE_MAX_ROLES][64]; /* roles switched from LOGIN to NOLOGIN */
    int nterminated;                    /* outside sessions terminated (all of them) */
    double roles_ms, terminate_ms;      /* how long each half took */
    struct sy_pgctl_backend terminated[SY_FENCE_MAX_REPORT]; /* the first of them, reported */
};

/*
 * Fences a server against writes at the database itself:
 * 1. in one transaction, ALTER ROLE ... NOLOGIN for every role that can log in except
 *    keep_role (the control user, which the reverse replication's apply worker also runs as)
 *    and the current user; the roles changed go into out->roles;
 * 2. terminates every other client backend (backend_type 'client backend') except this
 *    connection and the pids in keep_pids (the proxy's own, held sessions), waiting up to
 *    timeout_ms for each to be gone (pg_terminate_backend(pid, timeout)); walsenders and
 *    background workers are left alone.
 * On any failure it undoes what it did (sy_pgctl_unfence) before returning -1.
 */
int sy_pgctl_fence(PGconn *c, const char *side, const char *keep_role, const int *keep_pids,
                   int nkeep, int timeout_ms, struct sy_pgctl_fence *out, char *err, size_t errlen);

/* Gives LOGIN back to exactly the roles in f. Idempotent. */
int sy_pgctl_unfence(PGconn *c, const char *side, const struct sy_pgctl_fence *f, char *err,
                     size_t errlen);

/* Sets every sequence on dst to src's last_value (pg_sequences; never-used sequences are
 * skipped). *count gets how many were set. Logical replication does not carry sequences. */
int sy_pgctl_sync_sequences(PGconn *src, PGconn *dst, const char *dst_side, int *count, char *err,
                            size_t errlen);

/* Promotes a physical standby (pg_promote(wait => true, timeout_s)). */
int sy_pgctl_promote(PGconn *c, const char *side, int timeout_s, char *err, size_t errlen);

/*
 * Reverse replication for the rollback window, from new_active back to old_active (logical), in
 * two halves so that the slow part (creating a replication slot waits for running transactions
 * on new_active) happens before any client is held.
 *
 * sy_pgctl_reverse_prepare (before the pause): CREATE PUBLICATION <name> FOR ALL TABLES on
 * new_active (if missing) and CREATE SUBSCRIPTION <name> ... WITH (copy_data = false, enabled =
 * false) on old_active, which creates its slot on new_active; a leftover subscription of that
 * name is dropped first. Undo with sy_pgctl_reverse_teardown(..., NULL, ...).
 *
 * sy_pgctl_reverse_start (at the switch point, every session held, old_active fenced and
 * new_active caught up):
 *   - ALTER SUBSCRIPTION <forward->subscription> DISABLE on new_active and wait for its worker
 *     to stop (PostgreSQL 15 does not filter origins: left enabled, the changes applied on
 *     old_active would come back to new_active);
 *   - pg_replication_slot_advance(<name>) on new_active to its flushed end of WAL: what lies
 *     before came from old_active and must not travel back;
 *   - ALTER SUBSCRIPTION <name> ENABLE on old_active: it replicates from the switch point.
 * On failure the forward subscription is enabled again (the prepared half stays for the caller
 * to tear down). Both return 0 or -1 with err set.
 *
 * sy_pgctl_reverse_setup does both at once (tear-down on failure).
 */
int sy_pgctl_reverse_prepare(PGconn *old_active, PGconn *new_active,
                             const struct sy_pgctl_target *new_active_target, const char *name,
                             char *err, size_t errlen);
int sy_pgctl_reverse_start(PGconn *old_active, PGconn *new_active, const char *new_side,
                           const char *name, const struct sy_pgctl_repl *forward, char *err,
                           size_t errlen);
int sy_pgctl_reverse_setup(PGconn *old_active, PGconn *new_active,
                           const struct sy_pgctl_target *new_active_target, const char *name,
                           const struct sy_pgctl_repl *forward, char *err, size_t errlen);

/*
 * Undoes sy_pgctl_reverse_setup after a rollback: DROP SUBSCRIPTION <name> on old_active (which
 * drops its slot on new_active), DROP PUBLICATION <name> on new_active, then advances the forward
 * slot on old_active to its pg_current_wal_lsn() (everything old_active wrote since the fence came
 * from new_active) and ENABLE the forward subscription on new_active again.
 * With forward == NULL (commit): only the two drops.
 */
int sy_pgctl_reverse_teardown(PGconn *old_active, PGconn *new_active, const char *name,
                              const struct sy_pgctl_repl *forward, char *err, size_t errlen);

/*
 * The quick half of a rollback's teardown, for the switch point: ALTER SUBSCRIPTION <name>
 * DISABLE on old_active and its apply worker ended (old_active has caught up), then, with a
 * forward replication, its slot advanced and its subscription enabled as in
 * sy_pgctl_reverse_teardown. The drops (which wait on a connection to new_active to remove the
 * slot there) follow outside the pause with sy_pgctl_reverse_teardown(..., NULL, ...).
 */
int sy_pgctl_reverse_stop(PGconn *old_active, PGconn *new_active, const char *name,
                          const struct sy_pgctl_repl *forward, char *err, size_t errlen);

/*
 * Moves the inactive logical slot `slot` on c to c's flushed end of WAL ahead of a switch point
 * that will do the same: everything c wrote until now is to be skipped by it anyway (the
 * reverse slot before a cutover: green's WAL holds only what blue sent; the forward slot during
 * a rollback window: blue's holds only what green sent). Keeps c's WAL from piling up, and keeps
 * the switch point's advance short: an advance decodes from the slot's restart point. With mark,
 * a running-transactions record is logged first (creating and dropping a temporary logical slot
 * does that), so that the restart point moves here too, rather than to the last record the
 * background writer logged (every 15 s). A missing slot is not an error. Returns 0 or -1.
 */
int sy_pgctl_slot_skip(PGconn *c, const char *slot, int mark, char *err, size_t errlen);

/*
 * ALTER SUBSCRIPTION <name> ENABLE (enable 1) or DISABLE (enable 0, then its apply worker is
 * ended and waited for) on c, when the subscription exists in c's database and is not already
 * so. A missing subscription is not an error. Returns 0 or -1 with err set.
 */
int sy_pgctl_sub_set_enabled(PGconn *c, const char *side, const char *name, int enable,
                             char *err, size_t errlen);

/*
 * The roles (pg_* roles, keep_role and the current user left out) that can log in (login 1) or
 * cannot (login 0), by name, into out->roles (at most SY_FENCE_MAX_ROLES). With login 1 this is
 * a superset of what a fence would change now: a restart gives LOGIN back to such a list when a
 * crash hit the fence before the roles it changed were recorded. Returns 0 or -1.
 */
int sy_pgctl_roles(PGconn *c, const char *side, int login, const char *keep_role,
                   struct sy_pgctl_fence *out, char *err, size_t errlen);

/* ---- checks before anything is paused or fenced, and replication health ----
 * The sy_pgctl_*_check functions return 0 when all is well, 1 with err holding the refusal (what
 * is wrong, where, and the fix), or -1 when a query failed (err says why). */

/*
 * Schema compatibility of the replication from snd to rcv (switchover/schema.h): every table and
 * column snd sends exists on rcv with a type that accepts it, and rcv has no NOT NULL column
 * without a default that snd does not send. What snd sends: the publications of `subscription`
 * (on rcv; a missing subscription is not checked), or with subscription NULL every table a FOR
 * ALL TABLES publication on snd would publish (Switchyard's reverse publication), whose tables
 * must also have a replica identity (else UPDATE and DELETE fail on snd once published).
 */
int sy_pgctl_schema_check(PGconn *snd, PGconn *rcv, const char *snd_side, const char *rcv_side,
                          const char *subscription, char *err, size_t errlen);

/* Every sequence on src exists on dst with a type that holds src's value and src's value within
 * dst's MINVALUE..MAXVALUE (the sequences step sets them all inside the pause). */
int sy_pgctl_sequences_check(PGconn *src, PGconn *dst, const char *src_side,
                             const char *dst_side, char *err, size_t errlen);

/* The roles `subscription` (on sub) needs: its owner can log in on sub (its apply worker runs as
 * it), and the user its connection string names exists on pub, can log in and has REPLICATION
 * (or SUPERUSER). */
int sy_pgctl_sub_roles_check(PGconn *pub, PGconn *sub, const char *pub_side, const char *sub_side,
                             const char *subscription, char *err, size_t errlen);

/*
 * What a fence of c would do, checked before it: at most SY_FENCE_MAX_ROLES roles to change, and
 * no client session logged in as a role replication depends on (subscription owners, walsender
 * roles), which the fence leaves able to log in. kept gets those roles' names (", " between).
 */
int sy_pgctl_fence_check(PGconn *c, const char *side, const char *keep_role, char *kept,
                         size_t keptcap, char *err, size_t errlen);

/* A subscription's health on the side that holds it. */
struct sy_pgctl_subhealth {
    int found;            /* the subscription exists in this database */
    int enabled;          /* subenabled */
    int worker;           /* its apply worker runs now */
    int owner_login;      /* its owner can log in (else the apply worker cannot start) */
    char owner[64];
    int64_t apply_errors; /* pg_stat_subscription_stats (PostgreSQL 15 and later; else 0) */
    int64_t sync_errors;
    char not_ready[256];  /* tables still being copied (", " between) */
};
int sy_pgctl_sub_health(PGconn *c, const char *side, const char *subscription,
                        struct sy_pgctl_subhealth *out, char *err, size_t errlen);

#endif
