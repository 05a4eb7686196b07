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
    uint16_t format; /* 0 text, 1 binary */
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

/* What the caller knows beyond the two answers. All zero means nothing is known. */
struct sy_shadow_hints {
    int volatile_stmt;    /* pg_sql_is_volatile(), or blue differed from itself when re-run */
    int read_only_shadow; /* green runs in a read-only transaction: writes fail with 25006 */
    int shadow_failed;    /* the shadow connection broke or timed out: green's answer is partial */
    int lag_suspected;    /* green was behind blue when it ran the statement */
    int redact_values;    /* examples carry no row values nor error messages */
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
 */
enum sy_shadow_class sy_shadow_compare(const struct sy_shadow_result *blue,
                                       const struct sy_shadow_result *green,
                                       const struct sy_shadow_hints *hints,
                                       struct sy_shadow_example *ex);

/* ---- The report: per fingerprint, over many comparisons ---- */

#define SY_SHADOW_FP_DEFAULT 4096 /* fingerprints kept by default; more go to "(other)" */
#define SY_SHADOW_FP_TEXT 512     /* bytes of fingerprint text kept, NUL included */
#define SY_SHADOW_REAL_RING 8     /* times of the last REAL divergences kept per fingerprint */

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
    uint64_t last_real_us;              /* the latest REAL divergence's time, 0 if none */
    uint64_t real_at[SY_SHADOW_REAL_RING]; /* the last REAL divergences' times (a ring) */
    uint32_t real_next;                 /* the ring's next slot */
    uint32_t real_kept;                 /* times held in the ring, the newest before real_next */
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
    SY_SHADOW_NCOUNTERS = 12,
};

struct sy_shadow_totals {
    uint64_t counters[SY_SHADOW_NCOUNTERS];
    uint64_t compared;                     /* sy_shadow_report_add calls */
    uint64_t by_class[SY_SHADOW_NCLASSES];
    uint64_t overflow;                     /* comparisons counted under "(other)" */
};

/* A fingerprint with REAL divergences in a window (sy_shadow_report_real_since). */
struct sy_shadow_real {
    uint64_t fp_hash;
    const char *fingerprint; /* the entry's text: valid until reset or destroy */
    uint64_t last_us;        /* the latest REAL divergence */
    uint32_t count;          /* REAL divergences at or after the window's start, counted among
                                the last SY_SHADOW_REAL_RING */
    int at_least;            /* 1 when all of those are in the window: there may be more */
};

struct sy_shadow_report;

/*
 * Creates an empty report keeping up to max_fingerprints fingerprints (0 means
 * SY_SHADOW_FP_DEFAULT, at most 2^24); further fingerprints are counted together under
 * "(other)". Memory: at most (max_fingerprints + 1) * (sizeof(struct sy_shadow_fp) + 6 *
 * sizeof(struct sy_shadow_example)) plus an index of at most 24 bytes per fingerprint: 5.5 KB
 * per fingerprint seen, 8.4 KB for one with an example of every divergence class, so at most
 * about 35 MB for 4096 fingerprints (malloc overhead aside). Returns NULL when memory runs out.
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
 * (the caller's clock, for sy_shadow_report_real_since). ex, when not NULL and the first of its
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
 * and the totals' counts move; a REAL one also leaves the ring of times that
 * sy_shadow_report_real_since reads (the time given as now_us to sy_shadow_report_add: at_us;
 * when the ring no longer holds it, only the counts move), and one moved to REAL enters it. ex,
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
 * For the cutover gate: fingerprints with at least one REAL divergence at or after since_us.
 * Fills out[0, min(result, cap)) in entry order and returns how many there are in all (which
 * may exceed cap; out may be NULL when cap is 0). Counts come from the times the ring holds, the
 * last SY_SHADOW_REAL_RING REAL divergences of each fingerprint (one fewer for each that
 * sy_shadow_report_reclass took out since the ring was last full): exact when the ring holds
 * every REAL divergence or some of its times are before since_us, else a lower bound
 * (at_least).
 */
size_t sy_shadow_report_real_since(const struct sy_shadow_report *rep, uint64_t since_us,
                                   struct sy_shadow_real *out, size_t cap);

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

#endif
