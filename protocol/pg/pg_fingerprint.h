/*
 * SQL statement fingerprints and a volatility heuristic, for the shadow comparison.
 *
 * Pure code: libc only, no allocation, no globals. Both functions read SQL text with a small
 * lexer that follows PostgreSQL's own token rules closely enough to tell literals, comments,
 * quoted identifiers and dollar-quoted bodies apart; they never read past len and accept any
 * bytes (an unterminated literal or comment simply runs to the end of the text).
 *
 * The normalized form (what pg_fingerprint writes):
 *   - string literals ('..' with '' escapes; E'..' with backslash escapes; B'..', X'..', N'..',
 *     U&'..'; $tag$..$tag$ dollar quotes) and numeric literals (integers, decimals, exponents,
 *     0x/0o/0b, digits with '_'; a leading sign where it can only be unary) become "?";
 *     TRUE, FALSE and NULL are keywords and stay;
 *   - $1-style parameters stay as they are; digits inside identifiers (t1) are identifier text;
 *   - -- and nested slash-star comments are removed (a comment separates tokens like a space);
 *   - outside quoted identifiers, ASCII letters are lower-cased; "Quoted" identifiers stay as
 *     written;
 *   - whitespace runs (NUL bytes count as whitespace) become one space; there is no space after "(" or "[" nor before ")", "]",
 *     "," or ";", and always one after ","; trailing semicolons are dropped;
 *   - a list of placeholders after IN or ARRAY becomes its first item: IN (?, ?, ?) and
 *     IN (?) share "in (?)", ARRAY[$1, $2] becomes "array[$1]";
 *   - a VALUES list of several tuples keeps its first tuple and one ", ..." marker:
 *     VALUES (1, 'a'), (2, 'b') becomes "values (?, ?), ...".
 * Strings are assumed to follow standard_conforming_strings = on (the default since 9.1). The
 * output never holds a NUL byte (one inside a quoted identifier becomes '?').
 */
#ifndef SY_PG_FINGERPRINT_H
#define SY_PG_FINGERPRINT_H

#include <stddef.h>
#include <stdint.h>

/*
 * Writes the normalized form of sql[0, len) into out (cap bytes). When cap > 0 the output is
 * always NUL-terminated; when the form does not fit it is cut at cap - 1 bytes or earlier, never
 * inside a UTF-8 sequence. Returns the length of the whole normalized form (without the NUL),
 * which may exceed cap - 1: the output was truncated exactly when the return value >= cap.
 * out may be NULL when cap is 0 (to measure).
 */
size_t pg_fingerprint(const char *sql, size_t len, char *out, size_t cap);

/*
 * Like pg_fingerprint, and also stores in *hash (when not NULL) pg_fingerprint_hash of the whole
 * normalized form, even when out holds only part of it: two long statements that share their
 * first cap - 1 normalized bytes still get different hashes.
 */
size_t pg_fingerprint_full(const char *sql, size_t len, char *out, size_t cap, uint64_t *hash);

/*
 * FNV-1a, 64 bits (offset basis 14695981039346656037, prime 1099511628211), over fp[0, len).
 * Byte-wise, so equal on every platform and in every release: fit for reports and for keys that
 * outlive the process. Returns the hash.
 */
uint64_t pg_fingerprint_hash(const char *fp, size_t len);

/*
 * Whether a statement's result may legitimately differ between two runs: returns 1 when, outside
 * literals, comments and quoted identifiers, sql[0, len) calls (name followed by "(", case-
 * insensitive, whole words, schema-qualified or not) one of now, clock_timestamp,
 * statement_timestamp, transaction_timestamp, timeofday, random, random_normal, setseed,
 * gen_random_uuid, uuidv4, uuidv7, uuid_generate_v1, uuid_generate_v1mc, uuid_generate_v4,
 * nextval, currval, lastval, pg_backend_pid, txid_current, txid_current_if_assigned,
 * pg_current_xact_id, pg_current_xact_id_if_assigned, inet_server_addr, inet_server_port,
 * inet_client_addr, inet_client_port, pg_postmaster_start_time, pg_conf_load_time; or uses one
 * of the keywords current_timestamp, current_time, current_date, localtime, localtimestamp or
 * tablesample. Returns 0 otherwise.
 *
 * A heuristic, used only to classify a divergence as "nondeterministic" rather than "real" in
 * the shadow report. It never decides routing, never guards safety, and misses volatility hidden
 * in views, defaults, triggers or user functions.
 */
int pg_sql_is_volatile(const char *sql, size_t len);

#endif
