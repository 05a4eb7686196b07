/*
 * Schema compatibility of a logical replication, as pure logic (no I/O): whether every table and
 * column one side sends exists on the side that applies it, with a type that accepts every
 * value, and whether the applying side has columns it cannot fill. switchover/pgctl.c reads the
 * two catalogs and calls this; tests/unit/test_schema.c drives it directly.
 *
 * Logical replication (pgoutput, text mode) sends each value as its type's text output and the
 * applying side parses it with its own column's input function, matching tables by schema and
 * name and columns by name. So a value is applied when the receiving type's input accepts the
 * sending type's output. A column the receiver lacks stops the apply at the table's first change
 * ("missing replicated column"); a receiving column that is NOT NULL without a default, and that
 * the sender does not send, fails every insert.
 */
#ifndef SY_SCHEMA_H
#define SY_SCHEMA_H

#include <stddef.h>

/* One column of one table, as a side's catalog describes it. */
struct sy_schema_col {
    char schema[64];
    char table[64];
    char column[64];
    char type[128];  /* format_type(atttypid, atttypmod): "integer", "numeric(10,2)", ... */
    int not_null;    /* attnotnull */
    int has_default; /* a default, an identity or a generated column: an insert may leave it out */
};

/*
 * Whether a column of type `to` accepts every value of a column of type `from` (both as
 * format_type writes them). Accepted: the same type; integer widening (smallint -> integer ->
 * bigint, and any of them to numeric with room for its digits); numeric(p,s) to numeric, or to
 * numeric(p2,s2) with s2 >= s and p2 - s2 >= p - s; real to double precision; character
 * varying(n) and character(n) to text, to character varying without a limit or with one >= n,
 * character(n) to character(m >= n); text to character varying without a limit; timestamp,
 * timestamptz, time and timetz to the same type with an equal or larger precision; arrays of
 * types that accept each other, with the same dimensions. Anything else is refused (a type
 * named the same on both sides, user-defined ones included, is accepted). Returns 1 or 0.
 */
int sy_schema_type_accepts(const char *from, const char *to);

/*
 * Compares what `snd` sends (the published columns of each published table) with what `rcv`
 * has (every column of every table on the receiving side). Writes the problems found into out
 * (cap bytes, "; " between them, each naming the table, column and the fix; as many as fit),
 * with snd_side and rcv_side ("green", "blue") naming the sides. The arrays are sorted in place.
 * Returns the number of problems (0: compatible).
 */
int sy_schema_compare(struct sy_schema_col *snd, size_t nsnd, struct sy_schema_col *rcv,
                      size_t nrcv, const char *snd_side, const char *rcv_side, char *out,
                      size_t cap);

#endif
