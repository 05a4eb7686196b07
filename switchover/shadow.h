/*
 * Shadow traffic comparison: the pure core. The proxy mirrors each client statement to green
 * and feeds both servers' answers here; this module summarizes each answer in bounded memory,
 * compares the two summaries, classifies a difference, and aggregates a report per statement
 * fingerprint (protocol/pg/pg_fingerprint.h).
 *
 * Pure: no I/O, no clock (times are passed in, in microseconds), no globals, no logging. Memory
 * comes from malloc and is bounded per object (the bounds are stated below). Not thread-safe:
 * each object belongs to one thread at a time.
 *
 * Vocabulary: blue is the database clients use now, green the one being shadowed.
 */
#ifndef SY_SHADOW_H
#define SY_SHADOW_H

#include <stddef.h>
#include <stdint.h>

/* ---- One statement's answer, summarized ---- */

#define SY_SHADOW_COLS_MAX 64        /* columns whose name and type are kept (the count is exact) */
#define SY_SHADOW_NAME_MAX 64        /* bytes of a column name kept, NUL included (NAMEDATALEN) */
#define SY_SHADOW_MSG_MAX 256        /* bytes of an error message kept, NUL included */
#define SY_SHADOW_TAG_MAX 32         /* bytes of a command tag's verb kept, NUL included */
#define SY_SHADOW_ROW_HASHES 1024    /* leading rows whose own hash is kept (to locate a row) */
#define SY_SHADOW_SAMPLE_ROWS 16     /* leading rows whose values are sampled (for examples) */
#define SY_SHADOW_SAMPLE_BYTES 8192  /* bytes of sampled values kept, over all sampled rows */
#define SY_SHADOW_VALUE_KEEP 256     /* bytes of one sampled value kept at most */

/* One sampled value (a cell of a sampled row). */
struct sy_shadow_cell {
    int32_t len;     /* the value's full length; -1 for SQL NULL */
    uint32_t hash;   /* of the whole value, so a difference past the kept bytes is still seen */
    uint16_t off;    /* where its kept bytes start in the sample arena */
    uint16_t kept;   /* bytes kept (at most SY_SHADOW_VALUE_KEEP; fewer once the arena is full) */
    uint8_t binary;  /* the column was sent in binary format */
};

/* The heap a result may hold at most: row hashes, sampled cells and the sample arena. */
#define SY_SHADOW_RESULT_HEAP_MAX                                                                \
    (SY_SHADOW_ROW_HASHES * sizeof(uint64_t) +                                                   \
     SY_SHADOW_SAMPLE_ROWS * SY_SHADOW_COLS_MAX * sizeof(struct sy_shadow_cell) +                \
     SY_SHADOW_SAMPLE_BYTES)

enum sy_shadow_status {
    SY_SHADOW_ST_NONE = 0,  /* no CommandComplete, EmptyQueryResponse or ErrorResponse yet */
    SY_SHADOW_ST_OK = 1,    /* completed without an error */
    SY_SHADOW_ST_ERROR = 2, /* an ErrorResponse came (it stays the status: errors end statements) */
};

struct sy_shadow_column {
    char name[SY_SHADOW_NAME_MAX];
    uint32_t type_oid;
    int32_t type_mod; /* the type modifier: numeric(10,2), varchar(20); -1 when none */
    uint16_t format;  /* 0 text, 1 binary */
};

/*
 * The summary of one statement's answer: every backend message from the statement's first to
 * its last (a simple Query holding several statements is one unit: every result set is folded
 * in). Memory: sizeof(struct sy_shadow_result) (5.3 KB on LP64) plus at most
 * SY_SHADOW_RESULT_HEAP_MAX (32 KB) of heap, whatever the answer's size; a statement that
 * returns no rows allocates nothing.
 *
 * Folding several result sets: status is ERROR if any ErrorResponse came (sqlstate and message
 * are the first error's); tag and rows_affected are the last CommandComplete's while tags_hash and
 * counts_hash cover all of them in order; cols are the first RowDescription's while cols_hash
 * covers all of them; rows of all sets count, hash and sample as one sequence.
 *
 * Row hashes: each row gets a 64-bit hash of its column count and every value (length, with -1
 * for NULL, then bytes), so NULL and '' differ and so do ('ab','c') and ('a','bc'). hash_ordered
 * chains the row hashes in order. The multiset hash is two sums modulo 2^64, of the row hashes
 * and of a second bijective mix of them: a sum (not an xor) so that duplicates count (an xor
 * cancels a pair of equal rows, making {a, a, b} equal {b}); two sums so that one accidental
 * linear coincidence is not enough. Row hashes are seeded per process, not stable across hosts.
 */
struct sy_shadow_result {
    enum sy_shadow_status status;
    int malformed;     /* a message could not be decoded, or an error came without a SQLSTATE */
    int empty_query;   /* an EmptyQueryResponse came */
    char sqlstate[6];  /* the first error's SQLSTATE, "" when none (or none given) */
    char message[SY_SHADOW_MSG_MAX]; /* the first error's message, truncated */
    char tag[SY_SHADOW_TAG_MAX];     /* the last CommandComplete's verb: "UPDATE", "CREATE TABLE" */
    int has_rows_affected;           /* the last CommandComplete carried a count */
    uint64_t rows_affected;          /* that count ("UPDATE 3": 3; "INSERT 0 5": 5) */
    uint32_t ncompletes;             /* CommandCompletes and EmptyQueryResponses */
    uint64_t tags_hash;              /* every completion's verb, in order */
    uint64_t counts_hash;            /* every completion's count, in order */
    uint32_t nsets;                  /* RowDescriptions */
    uint32_t ncols;                  /* columns of the first RowDescription (exact) */
    struct sy_shadow_column cols[SY_SHADOW_COLS_MAX]; /* its first columns */
    uint64_t cols_hash;              /* every RowDescription's names, formats and built-in types */
    uint64_t nrows;                  /* DataRows (and COPY OUT CopyData rows) */
    uint64_t hash_ordered;
    uint64_t hash_sum;               /* sum of row hashes */
    uint64_t hash_sum_mixed;         /* sum of mixed row hashes */
    /* The same three over rows whose values are read by meaning (sy_shadow_compare with an
     * accepted column): a value of an integer type in binary format as its number, a numeric
     * with a type modifier in text format without the trailing zeros of its fraction, any other
     * value as its bytes. Equal to the three above until a row holds such a value (canon_used). */
    int canon_used;
    uint64_t canon_ordered, canon_sum, canon_sum_mixed;

    /* Bounded detail, on the heap (grown as rows come). */
    uint64_t *row_hash;              /* hashes of the first min(nrows, SY_SHADOW_ROW_HASHES) rows */
    uint32_t row_hash_len, row_hash_cap;
    uint32_t sample_rows;            /* rows sampled so far */
    uint32_t sample_ncols[SY_SHADOW_SAMPLE_ROWS];  /* each sampled row's exact column count */
    uint32_t sample_set[SY_SHADOW_SAMPLE_ROWS];    /* which result set (0 = the first) */
    uint16_t sample_cell0[SY_SHADOW_SAMPLE_ROWS];  /* its first cell in cells */
    uint16_t sample_ncells[SY_SHADOW_SAMPLE_ROWS]; /* its cells kept (the first SY_SHADOW_COLS_MAX) */
    struct sy_shadow_cell *cells;
    uint32_t ncells, cells_cap;
    uint8_t *arena;
    uint32_t arena_used, arena_cap;
    int detail_lost;                 /* an allocation failed: sums exact, detail partial */
    uint32_t cur_ncols;              /* columns of the current result set */
    uint8_t cur_binary[SY_SHADOW_COLS_MAX]; /* their formats */
    uint8_t cur_canon[SY_SHADOW_COLS_MAX];  /* how each is read by meaning (0: as bytes) */
    int cur_any_canon;                      /* some column of the current set is */
};

/* Prepares an empty result. Cannot fail; allocates nothing yet. */
void sy_shadow_result_init(struct sy_shadow_result *r);
/* Empties a result for the next statement, keeping its heap blocks for reuse. */
void sy_shadow_result_reset(struct sy_shadow_result *r);
/* Frees a result's heap; the result is then empty and may be fed again. */
void sy_shadow_result_free(struct sy_shadow_result *r);
/* The heap a result holds now, in bytes (at most SY_SHADOW_RESULT_HEAP_MAX). */
size_t sy_shadow_result_heap_bytes(const struct sy_shadow_result *r);

/*
 * Folds one backend message of the statement's answer into r: its type byte and its payload
 * (the body, without the 4-byte length). Reads RowDescription ('T'), DataRow ('D'),
 * CommandComplete ('C'), ErrorResponse ('E'), EmptyQueryResponse ('I') and COPY OUT's CopyData
 * ('d', one row of one text value per message); ignores every other type. Returns 0, or a
 * negative enum pg_error (PG_E_MALFORMED, PG_E_TOO_LARGE) when the message cannot be decoded,
 * in which case r->malformed is set and the message counts for nothing except: an ErrorResponse
 * without a 'C' field (or with one that is not 5 bytes) still makes the status ERROR, with what
 * SQLSTATE bytes there are (up to 5), and returns PG_E_MALFORMED. Never reads past payload + len.
 */
int sy_shadow_result_feed(struct sy_shadow_result *r, uint8_t type, const uint8_t *payload,
                          size_t len);

/* ---- Comparing blue's answer with green's ---- */

enum sy_shadow_class {
    SY_SHADOW_MATCH = 0,            /* the answers agree */
    SY_SHADOW_REAL = 1,             /* they differ and nothing explains it */
    SY_SHADOW_ORDER_ONLY = 2,       /* the same rows in another order */
    SY_SHADOW_NONDETERMINISTIC = 3, /* they differ, and the statement is volatile */
    SY_SHADOW_REPLICATION_LAG = 4,  /* rows differ while green was known to be behind */
    SY_SHADOW_SKIPPED_WRITE = 5,    /* green refused a write (read-only shadow, SQLSTATE 25006) */
    SY_SHADOW_SHADOW_ERROR = 6,     /* green's answer is unusable (connection failed, timed out,
                                       or a message could not be decoded) */
    SY_SHADOW_ACCEPTED = 7,         /* a difference the migration intends (shadow accept) */
    SY_SHADOW_INCONCLUSIVE = 8,     /* a data difference whose lag check could not settle */
    SY_SHADOW_SCHEMA_CHANGE = 9,    /* green's answer reflects DDL run on green during the
                                       shadow (a cached plan invalidated), not the statement */
    SY_SHADOW_NCLASSES = 10,
};

/* "match", "real", "order_only", "nondeterministic", "replication_lag", "skipped_write",
   "shadow_error", "accepted", "inconclusive", "schema_change"; "unknown" for a value outside
   the enum. */
const char *sy_shadow_class_name(enum sy_shadow_class cls);

/*
 * A divergence the migration intends (switchyardctl shadow accept, shadow_accept in the config):
 * comparisons of the fingerprint it names that differ only in what it accepts are classed
 * ACCEPTED, which the cutover gate does not count.
 *
 * Without a column, every comparison of the fingerprint classed cls is accepted (the migration
 * changes this statement's answers on purpose). With a column (cls is then REAL), what the
 * column's description may change is accepted: its name (a renamed column, named by its old or
 * new name), its type and type modifier (int4 to int8, numeric(10,2) to numeric(10,4)); its
 * values are still compared, by meaning: integers as numbers, numerics with a type modifier
 * without the trailing zeros of their fraction, other values as their bytes. Any other
 * difference (another column, the row count, a value that changed) stays REAL.
 */
#define SY_SHADOW_ACCEPT_MAX 64 /* accepts a proxy keeps, from the config and the admin socket */
#define SY_SHADOW_FP_TEXT 512   /* bytes of fingerprint text kept, NUL included */
struct sy_shadow_accept {
    uint64_t fp_hash;                    /* the fingerprint's hash (pg_fingerprint_full's) */
    char fingerprint[SY_SHADOW_FP_TEXT]; /* its text as given; "" when given as a hash */
    char column[SY_SHADOW_NAME_MAX];     /* "" for the whole statement */
    enum sy_shadow_class cls;            /* the class accepted: REAL, ORDER_ONLY, INCONCLUSIVE */
    int from_config;                     /* set by the caller: where it came from */
};

/* Whether accept a names the statement with fingerprint text fp (may be NULL) and hash
   fp_hash: the hashes are equal, or a's text is not "" and equal to fp. Returns 1 or 0. */
int sy_shadow_accept_matches(const struct sy_shadow_accept *a, const char *fp, uint64_t fp_hash);

/* ACCEPTED when a[0, n) holds a whole-statement accept (no column) of class cls (not MATCH),
   else cls. sy_shadow_compare applies it to REAL and ORDER_ONLY; whoever classes a statement
   INCONCLUSIVE applies it there. */
enum sy_shadow_class sy_shadow_accept_class(const struct sy_shadow_accept *a, size_t n,
                                            enum sy_shadow_class cls);

/* What the caller knows beyond the two answers. All zero means nothing is known. */
struct sy_shadow_hints {
    int volatile_stmt;    /* pg_sql_is_volatile(), or blue differed from itself when re-run */
    int read_only_shadow; /* green runs in a read-only transaction: writes fail with 25006 */
    int shadow_failed;    /* the shadow connection broke or timed out: green's answer is partial */
    int lag_suspected;    /* green was behind blue when it ran the statement */
    int redact_values;    /* examples carry no row values nor error messages */
    const struct sy_shadow_accept *accepts; /* the accepts naming this statement's fingerprint */
    size_t naccepts;                        /* (the caller filters with sy_shadow_accept_matches) */
};

#define SY_SHADOW_WHAT_MAX 16
#define SY_SHADOW_TEXT_MAX 192

/*
 * The first difference found, as text for a report. what is one of "sqlstate", "command_tag",
 * "rows_affected", "columns", "row_count", "row_data", "row_order", "shadow" (the shadow
 * failed), "malformed" (a message could not be decoded), or "" for a match. column and row
 * locate a value when the difference could be narrowed to one (else "" and -1); blue and green
 * then hold the two values ('text' quoted, NULL bare, binary as \x hex, "..." when truncated,
 * "<redacted>" under redact_values), otherwise a description of each side.
 */
struct sy_shadow_example {
    char what[SY_SHADOW_WHAT_MAX];
    char column[SY_SHADOW_NAME_MAX];
    int64_t row; /* 0-based, over all of the statement's rows; -1 when unknown */
    char blue[SY_SHADOW_TEXT_MAX];
    char green[SY_SHADOW_TEXT_MAX];
};

/*
 * Compares blue's answer with green's, in this order: whether exactly one side had a message
 * that could not be decoded, status and SQLSTATE, command tags, rows affected (for statements
 * that return no rows), column names, formats and types (type OIDs only when both are built-in,
 * below 16384: user types get other OIDs on another cluster), row count, rows as a multiset,
 * rows in order, and last the counts of row-returning statements.
 * Then classifies: shadow_failed gives SHADOW_ERROR; no difference gives MATCH; green's 25006
 * under read_only_shadow while blue succeeded gives SKIPPED_WRITE; a malformed side gives
 * SHADOW_ERROR; volatile_stmt gives NONDETERMINISTIC; lag_suspected with a difference in rows
 * affected, row count or row data gives REPLICATION_LAG; a difference only in order gives
 * ORDER_ONLY; anything else REAL. hints may be NULL (nothing known). When ex is not NULL it
 * receives the first difference (what = "" for a match). Returns the class.
 *
 * Accepts (hints->accepts): unless shadow_failed or a side is malformed, the column accepts are
 * applied first: the columns are compared again with the accepted columns' names, types and type
 * modifiers left out (this needs one result set of at most SY_SHADOW_COLS_MAX columns on each
 * side when the descriptions differ), and the rows by meaning (the canon_* sums) when every
 * column not accepted has the same type, modifier and format on both sides (else as bytes:
 * a modifier changed and not accepted shows in its values). When nothing is left, the class is ACCEPTED and ex describes what was accepted;
 * otherwise what is left is classified as above and ex describes it (a value that changed in
 * the accepted column, not the accepted type change). Then a whole-statement accept of the
 * resulting class (REAL, ORDER_ONLY, INCONCLUSIVE never comes from here) makes it ACCEPTED,
 * ex unchanged.
 */
enum sy_shadow_class sy_shadow_compare(const struct sy_shadow_result *blue,
                                       const struct sy_shadow_result *green,
                                       const struct sy_shadow_hints *hints,
                                       struct sy_shadow_example *ex);

/* ---- The report: per fingerprint, over many comparisons ---- */

#define SY_SHADOW_FP_DEFAULT 4096 /* fingerprints kept by default; more go to "(other)" */

/*
 * The cutover gate's counts: per fingerprint, the divergences of the classes it may count (REAL
 * and INCONCLUSIVE) in time buckets of 1/SY_SHADOW_GATE_BUCKETS of the gate's window (at least
 * 1 s; sy_shadow_report_set_window), so a count over the window is exact up to one bucket at
 * its start. Buckets older than the window are dropped when a comparison is added: at most 602
 * per fingerprint (16 bytes each; at most 16 KB allocated, as the array doubles).
 */
#define SY_SHADOW_GATE_REAL 0         /* index in sy_shadow_gate_bucket.n */
#define SY_SHADOW_GATE_INCONCLUSIVE 1
#define SY_SHADOW_GATE_NCLASSES 2
#define SY_SHADOW_GATE_BUCKETS 600    /* buckets per window */
#define SY_SHADOW_GATE_WINDOW_DEFAULT_US (600ull * 1000000u) /* 10 minutes */
struct sy_shadow_gate_bucket {
    uint64_t start_us;                    /* a multiple of the bucket width */
    uint32_t n[SY_SHADOW_GATE_NCLASSES];  /* divergences added in [start, start + width) */
};

/*
 * Latency histogram in microseconds: exact below 32 us, then 16 buckets per power of two up to
 * 2^40 us (larger values land in the last bucket; min and max stay exact). A bucket is at most
 * 1/16 of its lower bound wide, so a quantile read at its midpoint is within 3.2%. Counts are
 * 32-bit: when one would overflow, every bucket is halved, keeping the proportions.
 */
#define SY_SHADOW_HIST_BUCKETS (32 + 35 * 16)
struct sy_shadow_hist {
    uint64_t count;
    uint64_t min, max;
    uint32_t bucket[SY_SHADOW_HIST_BUCKETS];
};

/* The q-quantile (0 <= q <= 1) of h in microseconds, within 3.2% (exact for the smallest and
   the largest value); 0 when h is empty. */
uint64_t sy_shadow_hist_quantile(const struct sy_shadow_hist *h, double q);

/* One fingerprint's line of the report. Read-only for callers. */
struct sy_shadow_fp {
    uint64_t hash;                      /* the caller's fingerprint hash; 0 for "(other)" */
    char text[SY_SHADOW_FP_TEXT];       /* the fingerprint text, truncated */
    uint64_t count;                     /* comparisons */
    uint64_t by_class[SY_SHADOW_NCLASSES]; /* by_class[SY_SHADOW_MATCH] is the matches */
    struct sy_shadow_hist blue, green;  /* latencies; green only when known (>= 0) */
    uint64_t last_real_us;              /* the latest REAL divergence's time, 0 if none (after
                                           a reclass took the latest out: the start of the
                                           newest gate bucket holding one) */
    struct sy_shadow_gate_bucket *gate; /* the gate's buckets, oldest first (see above) */
    uint32_t gate_len, gate_cap;
    struct sy_shadow_example *examples[SY_SHADOW_NCLASSES]; /* the first of each class, or NULL */
};

/* Counters the proxy bumps. */
enum sy_shadow_counter {
    SY_SHADOW_CTR_SESSIONS = 0,  /* sessions shadowed */
    SY_SHADOW_CTR_MIRRORED = 1,  /* statements mirrored to green */
    SY_SHADOW_CTR_SUSPENDED = 2, /* statements not mirrored: the shadow queue overflowed */
    SY_SHADOW_CTR_SKIPPED = 3,   /* statements not mirrored: sampled out */
    SY_SHADOW_CTR_RECHECKS = 4,  /* rechecks run on blue (a divergent statement run twice) */
    SY_SHADOW_CTR_RECHECK_NONDET = 5,       /* ... whose two answers differed */
    SY_SHADOW_CTR_RECHECK_INCONCLUSIVE = 6, /* ... that could not run (error, timeout, down) */
    SY_SHADOW_CTR_RECHECK_DROPPED = 7,      /* rechecks not run: too many already waiting */
    /* Coverage: every statement of every session while shadowing is on lands in exactly one
     * of MIRRORED, NOT_SAMPLED and NOT_RUNNING; a mirrored one is then compared, counted in
     * SUSPENDED (its session's shadow stopped before green answered) or in TOO_LARGE. */
    SY_SHADOW_CTR_SEEN = 8,         /* statements answered by the live side, shadowing on */
    SY_SHADOW_CTR_NOT_SAMPLED = 9,  /* ... of sessions shadow_sample left out */
    SY_SHADOW_CTR_NOT_RUNNING = 10, /* ... of sampled sessions whose shadow was not running
                                       (suspended, opening, or started only later) */
    SY_SHADOW_CTR_TOO_LARGE = 11,   /* mirrored, not compared: a message too large to summarize */
    /* Lag checks (reads mode: a data difference proved lag or real by rerunning the statement on
     * blue and, once caught up, on green). Each check decides every divergence it covers. */
    SY_SHADOW_CTR_LAG_CHECKS = 12,       /* checks done, whatever came of them */
    SY_SHADOW_CTR_LAG_INCONCLUSIVE = 13, /* ... that could not settle within the deadline */
    SY_SHADOW_CTR_LAG_DROPPED = 14,      /* divergences not checked: the queue was full */
    SY_SHADOW_CTR_LAG_UNCHECKABLE = 15,  /* divergences that cannot be rerun (not a read, its
                                            text or parameters not kept, too large ...) */
    SY_SHADOW_NCOUNTERS = 16,
};

struct sy_shadow_totals {
    uint64_t counters[SY_SHADOW_NCOUNTERS];
    uint64_t compared;                     /* sy_shadow_report_add calls */
    uint64_t by_class[SY_SHADOW_NCLASSES];
    uint64_t overflow;                     /* comparisons counted under "(other)" */
};

/* A fingerprint the cutover gate counts (sy_shadow_report_gate). Valid until reset or destroy. */
struct sy_shadow_gate_fp {
    uint64_t fp_hash;
    const char *fingerprint;                 /* the entry's text */
    uint64_t count;                          /* counted divergences in the window */
    uint64_t by_class[SY_SHADOW_GATE_NCLASSES]; /* of which REAL, INCONCLUSIVE */
    uint64_t last_real_us;                   /* the latest REAL divergence (any time), 0 if none */
    enum sy_shadow_class example_class;      /* REAL when it has an example, else INCONCLUSIVE */
    const struct sy_shadow_example *example; /* the fingerprint's first example of that class
                                                (since the last reset), or NULL */
};

struct sy_shadow_report;

/*
 * Creates an empty report keeping up to max_fingerprints fingerprints (0 means
 * SY_SHADOW_FP_DEFAULT, at most 2^24); further fingerprints are counted together under
 * "(other)". Memory: at most (max_fingerprints + 1) * (sizeof(struct sy_shadow_fp) + 6 *
 * sizeof(struct sy_shadow_example)) plus an index of at most 24 bytes per fingerprint: 5.5 KB
 * per fingerprint seen, 8.4 KB for one with an example of every divergence class, so at most
 * about 35 MB for 4096 fingerprints (malloc overhead aside), plus the gate's buckets: at most
 * 16 KB more for a fingerprint with REAL or INCONCLUSIVE divergences in every second of the
 * window. Returns NULL when memory runs out.
 */
struct sy_shadow_report *sy_shadow_report_new(size_t max_fingerprints);
/* Frees a report and everything in it. NULL is accepted. */
void sy_shadow_report_destroy(struct sy_shadow_report *rep);
/* Forgets every fingerprint and zeroes every counter. */
void sy_shadow_report_reset(struct sy_shadow_report *rep);

/*
 * Counts one comparison of the statement with fingerprint fp_text (NULL is "") and hash fp_hash
 * (pg_fingerprint_full's; entries are keyed by the hash alone) in class cls, with blue's and
 * green's latencies in microseconds (a negative latency is unknown and not recorded), at now_us
 * (the caller's clock, for the gate's buckets). ex, when not NULL and the first of its
 * class for the fingerprint, is copied. Returns 0 when counted under the fingerprint, 1 when
 * counted under "(other)" (the table is full, or memory ran out), -1 for a class outside the
 * enum (nothing counted).
 */
int sy_shadow_report_add(struct sy_shadow_report *rep, const char *fp_text, uint64_t fp_hash,
                         enum sy_shadow_class cls, int64_t blue_us, int64_t green_us,
                         const struct sy_shadow_example *ex, uint64_t now_us);

/*
 * Moves one comparison of fingerprint fp_hash from class from to class to: a recheck showed
 * that a divergence counted as REAL (or ORDER_ONLY) is blue differing from itself. The entry's
 * and the totals' counts move; one of a class the gate counts (REAL, INCONCLUSIVE) also leaves
 * the gate bucket it was added in (at_us: the time given as now_us to sy_shadow_report_add;
 * when that bucket has aged out or holds none of from, only the counts move), and one moved to
 * such a class enters the bucket of at_us. ex,
 * when not NULL and to has no example yet, becomes to's example; from's example is dropped when
 * no comparison of that class is left. Returns 0, or -1 when nothing was moved: no entry for
 * fp_hash (never seen, counted under "(other)", or reset since), no comparison of class from,
 * from equal to to, or either class MATCH or outside the enum.
 */
int sy_shadow_report_reclass(struct sy_shadow_report *rep, uint64_t fp_hash,
                             enum sy_shadow_class from, enum sy_shadow_class to, uint64_t at_us,
                             const struct sy_shadow_example *ex);

/* Adds n to a counter (one outside the enum is ignored). */
void sy_shadow_report_bump(struct sy_shadow_report *rep, enum sy_shadow_counter c, uint64_t n);

/* The report's counters. The pointer stays valid until destroy. */
const struct sy_shadow_totals *sy_shadow_report_totals(const struct sy_shadow_report *rep);

/* How many entries sy_shadow_report_entry can return: the fingerprints, plus "(other)" once
   something was counted there. */
size_t sy_shadow_report_size(const struct sy_shadow_report *rep);
/* Entry i (< sy_shadow_report_size) in the order fingerprints were first seen, "(other)" last;
   NULL when i is out of range. Valid until reset or destroy. */
const struct sy_shadow_fp *sy_shadow_report_entry(const struct sy_shadow_report *rep, size_t i);

/*
 * Sets the gate's window (shadow_gate_window; 0 means SY_SHADOW_GATE_WINDOW_DEFAULT_US): the
 * bucket width becomes window / SY_SHADOW_GATE_BUCKETS rounded up to a whole second (at least
 * 1 s). Buckets already kept are merged when the width grows; when it shrinks, the old width
 * stays until no bucket is kept (after a reset), as a wide bucket cannot be split. The window
 * also bounds what is kept: buckets ending before an added comparison's time minus the window
 * are dropped. Cheap when nothing changes: the proxy calls it before each add. Returns 0.
 */
int sy_shadow_report_set_window(struct sy_shadow_report *rep, uint64_t window_us);
/* The bucket width in microseconds. */
uint64_t sy_shadow_report_bucket_us(const struct sy_shadow_report *rep);

/*
 * For the cutover gate: the divergences of the classes in class_mask (bit 1 << SY_SHADOW_REAL,
 * bit 1 << SY_SHADOW_INCONCLUSIVE; others ignored) added in buckets that end after since_us
 * (so a bucket the window's start cuts is counted whole). Fills out[0, min(result, cap)) with
 * the fingerprints that have any, the most first (ties: the higher REAL count, then text), sets
 * *total (when not NULL) to the sum over every fingerprint, and returns how many fingerprints
 * have any (which may exceed cap; out may be NULL when cap is 0).
 */
size_t sy_shadow_report_gate(const struct sy_shadow_report *rep, uint64_t since_us,
                             unsigned class_mask, struct sy_shadow_gate_fp *out, size_t cap,
                             uint64_t *total);

/* ---- Renderings (switchover/shadow_json.c) ---- */

struct json_object;

/*
 * The report as JSON: {"fingerprints": [...], "totals": {...}}. Each fingerprint is
 * {"fingerprint", "hash" (16 hex digits), "count", "matches", "divergences": {one count per
 * class but match}, "latency_us": {"blue": {"count", "p50", "p99", "max"}, "green": {...}},
 * "last_real_us", "examples": {class: {"what", "column", "row", "blue", "green"}}}, sorted by
 * REAL divergences, then all divergences, then count (descending), then text. Strings are made
 * valid UTF-8 (an invalid byte becomes '?'). Returns a new object (json_object_put it), or NULL
 * when memory runs out.
 */
struct json_object *sy_shadow_report_json(const struct sy_shadow_report *rep);

/*
 * The report as a fixed-width text table, in the JSON's order: a header, one line per
 * fingerprint (divergence counts per class, count, matches, blue and green p50 and p99, the
 * fingerprint), an indented line per example, then the totals. Returns a malloc'd
 * NUL-terminated string (free it), or NULL when memory runs out.
 */
char *sy_shadow_report_table(const struct sy_shadow_report *rep);

/*
 * The accept list as JSON: an array of {"fingerprint" (the text given, or null), "hash" (16 hex
 * digits), "column" (or null), "class", "source" ("config" or "admin")}. Returns a new object,
 * or NULL when memory runs out.
 */
struct json_object *sy_shadow_accepts_json(const struct sy_shadow_accept *a, size_t n);

/* The accept list as text, one line each ("accepted: HASH class real column \"id\" (admin):
   FINGERPRINT"), or "accepted: none\n". Returns a malloc'd string (free it), or NULL. */
char *sy_shadow_accepts_table(const struct sy_shadow_accept *a, size_t n);

#endif
