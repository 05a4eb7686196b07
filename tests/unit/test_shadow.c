/*
 * Unit tests for the shadow comparison's pure core: SQL fingerprints and the volatility
 * heuristic (protocol/pg/pg_fingerprint.c), result summaries, the comparison and its classes,
 * and the report with its JSON and table (switchover/shadow.c, switchover/shadow_json.c).
 *
 * Every message body and every SQL text is placed so that its last byte sits right before a
 * PROT_NONE page (tests/support/guard.h): a read past len crashes the test.
 *
 * `test_shadow --write-corpus DIR` writes seed files for the fuzz targets into
 * DIR/pg_fingerprint and DIR/shadow_result (tests/fuzz/corpus in the source tree).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "protocol/pg/pg_fingerprint.h"
#include "protocol/pg/pg_proto.h"
#include "switchover/shadow.h"
#include "tests/support/guard.h"

/* ---- Fingerprints ---- */

/* Normalizes sql (placed at the guard page) and checks the result and its length. */
static void check_fp(const char *sql, const char *want)
{
    size_t len = strlen(sql);
    char out[1024];
    size_t n = pg_fingerprint((const char *)guard_at(sql, len), len, out, sizeof(out));
    if (strcmp(out, want) != 0 || n != strlen(want))
        fail_msg("fingerprint of [%s]\n  got  [%s] (%zu)\n  want [%s]", sql, out, n, want);
}

static void test_fp_literals(void **state)
{
    (void)state;
    check_fp("SELECT * FROM t WHERE a = 1 AND b = 'x''y'", "select * from t where a = ? and b = ?");
    check_fp("SELECT E'it\\'s', e'a''b', 'a\\', 1", "select ?, ?, ?, ?");
    check_fp("SELECT B'0101', X'1F', N'x', U&'d\\0061t', b'1'", "select ?, ?, ?, ?, ?");
    check_fp("SELECT $$a'b$$, $tag$ it's $ not $x$ $tag$, $a$x$b$y$a$", "select ?, ?, ?");
    check_fp("SELECT 42, 3.14, .5, 1e10, 2.5E-3, 0x1F, 1_000, 5.", "select ?, ?, ?, ?, ?, ?, ?, ?");
    check_fp("SELECT t1.c2, $1, $23 FROM t1", "select t1.c2, $1, $23 from t1");
    check_fp("SELECT a-1, a - 1, -1, x * -2, (-3), a+-1, - 4", "select a-?, a - ?, ?, x * ?, (?), a+?, ?");
    check_fp("SELECT TRUE, false, NULL, 'a'::text", "select true, false, null, ?::text");
    check_fp("SELECT 1e, 2e+", "select ?e, ?e+");
    check_fp("SELECT x FROM t WHERE y = -0.5 OR z BETWEEN -1 AND +2",
             "select x from t where y = ? or z between ? and ?");
}

static void test_fp_comments_space_case(void **state)
{
    (void)state;
    check_fp("SELECT /* c1 /* nested */ still */ a -- trailing\nFROM t", "select a from t");
    check_fp("SELECT a/**/FROM t", "select a from t");
    check_fp("SELECT 1 -- only a comment", "select ?");
    check_fp("  SELECT\t\tA ,\n B  FROM   \"MyTable\"   WHERE \"Col\" = 1 ;  ;",
             "select a, b from \"MyTable\" where \"Col\" = ?");
    check_fp("SELECT \"a\"\"b\", U&\"X\" FROM T", "select \"a\"\"b\", U&\"X\" from t");
    check_fp("select 1; SELECT 2;", "select ?; select ?");
    check_fp("SELECT f( a,b ) , g [1]", "select f(a, b), g [?]");
    check_fp("SELECT a=--x\n1", "select a= ?");
    check_fp("", "");
    check_fp(" \n\t-- nothing\n", "");
}

static void test_fp_lists(void **state)
{
    (void)state;
    const char *in[] = {
        "SELECT * FROM t WHERE id IN (1, 2, 3)", "select * from t where id in(7)",
        "SELECT * FROM t WHERE id IN ('a','b')", "SELECT * FROM t WHERE id IN (-1, 2.5)",
    };
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
        check_fp(in[i], "select * from t where id in (?)");
    check_fp("SELECT * FROM t WHERE id IN ($1, $2)", "select * from t where id in ($1)");
    check_fp("SELECT * FROM t WHERE x = ANY(ARRAY[1,2,3])", "select * from t where x = any(array[?])");
    check_fp("SELECT * FROM t WHERE id IN (SELECT id FROM u)",
             "select * from t where id in (select id from u)");
    check_fp("SELECT * FROM t WHERE id IN (1, a)", "select * from t where id in (?, a)");
    check_fp("INSERT INTO t (a, b) VALUES (1, 'x')", "insert into t (a, b) values (?, ?)");
    check_fp("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z')",
             "insert into t (a, b) values (?, ?), ...");
    check_fp("INSERT INTO t (a,b) VALUES(1,'x'),(2,'y')", "insert into t (a, b) values (?, ?), ...");
    check_fp("VALUES (1, (2)), (3, (4))", "values (?, (?)), ...");
    check_fp("INSERT INTO t VALUES (1),(2) ON CONFLICT DO NOTHING",
             "insert into t values (?), ... on conflict do nothing");
    check_fp("INSERT INTO t VALUES ($1, $2), ($3, $4) RETURNING id",
             "insert into t values ($1, $2), ... returning id");
    check_fp("SELECT * FROM (VALUES (1), (2)) v(x) WHERE x IN (1,2)",
             "select * from (values (?), ...) v(x) where x in (?)");
}

static void test_fp_unterminated(void **state)
{
    (void)state;
    check_fp("SELECT 'abc", "select ?");
    check_fp("SELECT E'abc\\", "select ?");
    check_fp("SELECT E'abc\\'", "select ?");
    check_fp("SELECT $x$ abc $x", "select ?");
    check_fp("SELECT /* abc /* def */", "select");
    check_fp("SELECT \"abc", "select \"abc");
    check_fp("SELECT $", "select $");
    check_fp("SELECT a IN (1, 2", "select a in (?, ?");
    check_fp("INSERT INTO t VALUES (1), (2", "insert into t values (?), ...");
    check_fp("SELECT 0x", "select ?x");

    /* Every prefix of some nasty text, at the guard page: no read past len, always terminated. */
    const char *nasty = "SELECT E'\\'' || $a$b$a$ || U&\"x\"\"\" /* /* */ -- \n IN (1,$2,'3') "
                        "VALUES (1),(2 ARRAY[1, ";
    char out[256];
    for (size_t k = 0; k <= strlen(nasty); k++) {
        memset(out, 'Z', sizeof(out));
        size_t n = pg_fingerprint((const char *)guard_at(nasty, k), k, out, sizeof(out));
        assert_true(n < sizeof(out));
        assert_int_equal(strlen(out), n);
        pg_sql_is_volatile((const char *)guard_at(nasty, k), k);
    }
}

static void test_fp_truncation(void **state)
{
    (void)state;
    const char *sql = "SELECT abcdef FROM t";
    size_t len = strlen(sql);
    char out[64];
    assert_int_equal(pg_fingerprint(sql, len, NULL, 0), 20);
    memset(out, 'Z', sizeof(out));
    assert_int_equal(pg_fingerprint(sql, len, out, 1), 20);
    assert_string_equal(out, "");
    assert_int_equal(out[1], 'Z');
    memset(out, 'Z', sizeof(out));
    assert_int_equal(pg_fingerprint(sql, len, out, 8), 20);
    assert_string_equal(out, "select ");
    assert_int_equal(out[8], 'Z');
    assert_int_equal(pg_fingerprint(sql, len, out, 20), 20);
    assert_string_equal(out, "select abcdef from ");
    assert_int_equal(pg_fingerprint(sql, len, out, 21), 20);
    assert_string_equal(out, "select abcdef from t");

    /* An output buffer at the guard page: the writer stays inside cap. */
    for (size_t cap = 1; cap <= 22; cap++) {
        char *o = (char *)guard_out(cap);
        assert_int_equal(pg_fingerprint(sql, len, o, cap), 20);
        assert_int_equal(strlen(o), cap - 1 < 20 ? cap - 1 : 20);
    }

    /* Not cut inside a UTF-8 sequence: select ? as "<c3 a9>" is 16 bytes. */
    const char *u = "SELECT 'x' AS \"\xc3\xa9\"";
    assert_int_equal(pg_fingerprint(u, strlen(u), out, sizeof(out)), 16);
    assert_int_equal(pg_fingerprint(u, strlen(u), out, 15), 16);
    assert_int_equal(strlen(out), 13);
    assert_int_equal(pg_fingerprint(u, strlen(u), out, 16), 16);
    assert_int_equal(strlen(out), 15);

    /* The full hash covers what did not fit. */
    uint64_t h1, h2;
    const char *a = "SELECT aaaaaaaaaaaaaaaaaaaa, b FROM t", *b = "SELECT aaaaaaaaaaaaaaaaaaaa, c FROM t";
    pg_fingerprint_full(a, strlen(a), out, 10, &h1);
    pg_fingerprint_full(b, strlen(b), out, 10, &h2);
    assert_true(h1 != h2);
    size_t n = pg_fingerprint_full(a, strlen(a), out, sizeof(out), &h2);
    assert_true(h1 == pg_fingerprint_hash(out, n));
}

static void test_fp_hash_and_idempotence(void **state)
{
    (void)state;
    /* FNV-1a 64 reference values. */
    assert_true(pg_fingerprint_hash("", 0) == 0xcbf29ce484222325ull);
    assert_true(pg_fingerprint_hash("a", 1) == 0xaf63dc4c8601ec8cull);
    assert_true(pg_fingerprint_hash("foobar", 6) == 0x85944171f73967e8ull);

    const char *sqls[] = {
        "SELECT * FROM t WHERE id IN (1, 2, 3) AND x = 'y'",
        "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
        "UPDATE \"T\" SET a = a + 1, b = -2.5 WHERE c = $1",
    };
    for (size_t i = 0; i < sizeof(sqls) / sizeof(sqls[0]); i++) {
        char once[256], twice[256];
        size_t n = pg_fingerprint(sqls[i], strlen(sqls[i]), once, sizeof(once));
        pg_fingerprint(once, n, twice, sizeof(twice));
        assert_string_equal(once, twice);
    }
}

static int volatile_at_guard(const char *sql)
{
    return pg_sql_is_volatile((const char *)guard_at(sql, strlen(sql)), strlen(sql));
}

static void test_volatile(void **state)
{
    (void)state;
    const char *yes[] = {
        "SELECT now()", "select NOW ( )", "SELECT pg_catalog.now()",
        "INSERT INTO t VALUES (nextval('s'))", "SELECT currval('s')", "SELECT CURRENT_TIMESTAMP",
        "select current_date", "SELECT localtime", "SELECT localtimestamp(3)",
        "SELECT current_time", "SELECT gen_random_uuid()", "SELECT uuid_generate_v4()",
        "SELECT uuid_generate_v1()", "SELECT * FROM t TABLESAMPLE BERNOULLI (10)",
        "SELECT 1 FROM t ORDER BY random()", "SELECT clock_timestamp()", "select txid_current()",
        "select pg_current_xact_id()", "select pg_backend_pid()", "select inet_server_port()",
        "select inet_server_addr()", "select pg_postmaster_start_time()",
        "select statement_timestamp()", "select transaction_timestamp()", "select timeofday()",
        "SELECT 'x', /* c */ now() -- c",
    };
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        if (volatile_at_guard(yes[i]) != 1)
            fail_msg("[%s] should be volatile", yes[i]);
    const char *no[] = {
        "SELECT 'now()'", "SELECT now_ts FROM t", "SELECT now FROM t", "SELECT a -- now()\nFROM t",
        "SELECT /* random() */ 1", "SELECT \"now\"()", "SELECT $$ now() $$", "SELECT my_now()",
        "SELECT randomize(1)", "SELECT current_timestamp_col FROM t", "SELECT E'\\' now()'",
        "SELECT 'current_date'", "", "SELECT 1",
    };
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        if (volatile_at_guard(no[i]) != 0)
            fail_msg("[%s] should not be volatile", no[i]);
}

/* ---- Backend message fixtures ---- */

struct msg {
    uint8_t type;
    size_t len;
    uint8_t body[8192];
};

static void put16(struct msg *m, uint16_t v)
{
    assert_true(m->len + 2 <= sizeof(m->body));
    m->body[m->len++] = (uint8_t)(v >> 8);
    m->body[m->len++] = (uint8_t)v;
}

static void put32(struct msg *m, uint32_t v)
{
    assert_true(m->len + 4 <= sizeof(m->body));
    pg_put_u32(m->body + m->len, v);
    m->len += 4;
}

static void put_bytes(struct msg *m, const void *p, size_t n)
{
    assert_true(m->len + n <= sizeof(m->body));
    memcpy(m->body + m->len, p, n);
    m->len += n;
}

/* RowDescription: names with type OIDs (text, 25, when oids is NULL); column i is in binary
   format when bit i of binary is set. */
static struct msg m_row_desc(size_t n, const char *const *names, const uint32_t *oids,
                             unsigned binary)
{
    struct msg m = {'T', 0, {0}};
    put16(&m, (uint16_t)n);
    for (size_t i = 0; i < n; i++) {
        put_bytes(&m, names[i], strlen(names[i]) + 1);
        put32(&m, 16400);               /* table OID */
        put16(&m, (uint16_t)(i + 1));   /* attnum */
        put32(&m, oids ? oids[i] : 25); /* type OID (text) */
        put16(&m, 0xffff);              /* typlen -1 */
        put32(&m, 0xffffffffu);         /* typmod */
        put16(&m, i < 32 && (binary >> i) & 1 ? 1 : 0);
    }
    return m;
}

/* DataRow of text values; a NULL pointer is SQL NULL. */
static struct msg m_data_row(size_t n, const char *const *vals)
{
    struct msg m = {'D', 0, {0}};
    put16(&m, (uint16_t)n);
    for (size_t i = 0; i < n; i++) {
        if (!vals[i]) {
            put32(&m, 0xffffffffu);
            continue;
        }
        put32(&m, (uint32_t)strlen(vals[i]));
        put_bytes(&m, vals[i], strlen(vals[i]));
    }
    return m;
}

static struct msg m_complete(const char *tag)
{
    struct msg m = {'C', 0, {0}};
    put_bytes(&m, tag, strlen(tag) + 1);
    return m;
}

/* ErrorResponse from the codec's encoder, without its header. */
static struct msg m_error(const char *sqlstate, const char *message)
{
    uint8_t whole[1024];
    int n = pg_be_write_error(whole, sizeof(whole), "ERROR", sqlstate, message);
    assert_true(n > PG_HEADER_LEN);
    struct msg m = {'E', 0, {0}};
    put_bytes(&m, whole + PG_HEADER_LEN, (size_t)n - PG_HEADER_LEN);
    return m;
}

/* Feeds a message from the guard page. */
static int feed(struct sy_shadow_result *r, const struct msg *m)
{
    return sy_shadow_result_feed(r, m->type, guard_at(m->body, m->len), m->len);
}

static void feed_ok(struct sy_shadow_result *r, struct msg m)
{
    int rc = feed(r, &m);
    if (rc != 0)
        fail_msg("feeding '%c' (%zu bytes) returned %d", m.type, m.len, rc);
}

/* A whole SELECT: description, rows (nrows * ncols values, NULL for SQL NULL), "SELECT n". */
static void feed_select(struct sy_shadow_result *r, size_t ncols, const char *const *names,
                        size_t nrows, const char *const *cells)
{
    feed_ok(r, m_row_desc(ncols, names, NULL, 0));
    for (size_t i = 0; i < nrows; i++)
        feed_ok(r, m_data_row(ncols, cells + i * ncols));
    char tag[32];
    snprintf(tag, sizeof(tag), "SELECT %zu", nrows);
    feed_ok(r, m_complete(tag));
}

/* What PostgreSQL 16 sends for SELECT 1 AS a, 'x'::text AS b (then ReadyForQuery, ignored). */
static const uint8_t fx_T[] = "\x00\x02"
                              "a\0" "\x00\x00\x00\x00" "\x00\x00" "\x00\x00\x00\x17" "\x00\x04"
                              "\xff\xff\xff\xff" "\x00\x00"
                              "b\0" "\x00\x00\x00\x00" "\x00\x00" "\x00\x00\x00\x19" "\xff\xff"
                              "\xff\xff\xff\xff" "\x00\x00";
static const uint8_t fx_D[] = "\x00\x02" "\x00\x00\x00\x01" "1" "\x00\x00\x00\x01" "x";
static const uint8_t fx_C[] = "SELECT 1";
static const uint8_t fx_Z[] = "I";

static void feed_fixture(struct sy_shadow_result *r)
{
    assert_int_equal(sy_shadow_result_feed(r, 'T', guard_at(fx_T, sizeof(fx_T) - 1), sizeof(fx_T) - 1), 0);
    assert_int_equal(sy_shadow_result_feed(r, 'D', guard_at(fx_D, sizeof(fx_D) - 1), sizeof(fx_D) - 1), 0);
    assert_int_equal(sy_shadow_result_feed(r, 'C', guard_at(fx_C, sizeof(fx_C)), sizeof(fx_C)), 0);
    assert_int_equal(sy_shadow_result_feed(r, 'Z', guard_at(fx_Z, 1), 1), 0);
}

/* ---- The codec's body decoders (protocol/pg/pg_proto.h) on the fixture ---- */

static void test_pg_body_decoders(void **state)
{
    (void)state;
    struct pg_body_cursor c;
    struct pg_field f;
    const uint8_t *t = guard_at(fx_T, sizeof(fx_T) - 1);
    assert_int_equal(pg_be_row_desc_begin(&c, t, sizeof(fx_T) - 1), 2);
    assert_int_equal(pg_be_row_desc_next(&c, &f), 1);
    assert_string_equal(f.name, "a");
    assert_int_equal(f.table_oid, 0);
    assert_int_equal(f.column, 0);
    assert_int_equal(f.type_oid, 23);
    assert_int_equal(f.type_len, 4);
    assert_int_equal(f.type_mod, -1);
    assert_int_equal(f.format, 0);
    assert_int_equal(pg_be_row_desc_next(&c, &f), 1);
    assert_string_equal(f.name, "b");
    assert_int_equal(f.type_oid, 25);
    assert_int_equal(f.type_len, -1);
    assert_int_equal(pg_be_row_desc_next(&c, &f), 0);
    assert_int_equal(pg_be_row_desc_next(&c, &f), 0);

    struct pg_value v;
    const uint8_t row[] = "\x00\x03" "\x00\x00\x00\x01" "1" "\xff\xff\xff\xff" "\x00\x00\x00\x00";
    const uint8_t *d = guard_at(row, sizeof(row) - 1);
    assert_int_equal(pg_be_data_row_begin(&c, d, sizeof(row) - 1), 3);
    assert_int_equal(pg_be_data_row_next(&c, &v), 1);
    assert_int_equal(v.len, 1);
    assert_ptr_equal(v.data, d + 6);
    assert_int_equal(pg_be_data_row_next(&c, &v), 1);
    assert_int_equal(v.len, -1);
    assert_null(v.data);
    assert_int_equal(pg_be_data_row_next(&c, &v), 1);
    assert_int_equal(v.len, 0);
    assert_int_equal(pg_be_data_row_next(&c, &v), 0);
    /* Every proper prefix fails at begin or at some next, never reading past it. */
    for (size_t k = 0; k < sizeof(row) - 1; k++) {
        int rc = pg_be_data_row_begin(&c, guard_at(row, k), k);
        while (rc > 0)
            rc = pg_be_data_row_next(&c, &v);
        assert_int_equal(rc, PG_E_MALFORMED);
    }

    const char *tag = NULL;
    assert_int_equal(pg_be_body_command_complete(guard_at("UPDATE 3", 9), 9, &tag), 9);
    assert_string_equal(tag, "UPDATE 3");
    assert_int_equal(pg_be_body_command_complete(guard_at("UPDATE 3", 8), 8, &tag), PG_E_MALFORMED);
    struct pg_error_fields e;
    const char err[] = "SERROR\0C42P01\0Mmissing\0Dmore\0";
    assert_int_equal(pg_be_body_error(guard_at(err, sizeof(err)), sizeof(err), &e), (int)sizeof(err));
    assert_string_equal(e.severity, "ERROR");
    assert_string_equal(e.sqlstate, "42P01");
    assert_string_equal(e.message, "missing");
    assert_string_equal(e.detail, "more");
    assert_int_equal(pg_be_body_error(guard_at(err, sizeof(err) - 1), sizeof(err) - 1, &e), PG_E_MALFORMED);
}

/* ---- Results ---- */

static void test_result_fixture(void **state)
{
    (void)state;
    struct sy_shadow_result r;
    sy_shadow_result_init(&r);
    feed_fixture(&r);
    assert_int_equal(r.status, SY_SHADOW_ST_OK);
    assert_false(r.malformed);
    assert_int_equal(r.ncols, 2);
    assert_string_equal(r.cols[0].name, "a");
    assert_int_equal(r.cols[0].type_oid, 23);
    assert_string_equal(r.cols[1].name, "b");
    assert_int_equal(r.cols[1].type_oid, 25);
    assert_int_equal(r.nrows, 1);
    assert_string_equal(r.tag, "SELECT");
    assert_true(r.has_rows_affected);
    assert_int_equal(r.rows_affected, 1);
    assert_int_equal(r.sample_rows, 1);
    assert_int_equal(r.cells[0].len, 1);
    assert_memory_equal(r.arena + r.cells[1].off, "x", 1);

    /* Ignored types change nothing. */
    struct sy_shadow_result before = r;
    const uint8_t ps[] = "server_version\0" "16.2";
    assert_int_equal(sy_shadow_result_feed(&r, '1', NULL, 0), 0);
    assert_int_equal(sy_shadow_result_feed(&r, '2', NULL, 0), 0);
    assert_int_equal(sy_shadow_result_feed(&r, 'n', NULL, 0), 0);
    assert_int_equal(sy_shadow_result_feed(&r, 'S', guard_at(ps, sizeof(ps)), sizeof(ps)), 0);
    assert_int_equal(sy_shadow_result_feed(&r, 'N', guard_at("garbage", 7), 7), 0);
    assert_int_equal(sy_shadow_result_feed(&r, 's', NULL, 0), 0);
    assert_memory_equal(&before, &r, offsetof(struct sy_shadow_result, row_hash));
    sy_shadow_result_free(&r);
}

static void test_result_tags(void **state)
{
    (void)state;
    struct {
        const char *tag, *verb;
        int has;
        uint64_t count;
    } cases[] = {
        {"INSERT 0 5", "INSERT", 1, 5}, {"UPDATE 3", "UPDATE", 1, 3}, {"DELETE 0", "DELETE", 1, 0},
        {"SELECT 12", "SELECT", 1, 12}, {"MERGE 2", "MERGE", 1, 2}, {"COPY 10", "COPY", 1, 10},
        {"CREATE TABLE", "CREATE TABLE", 0, 0}, {"BEGIN", "BEGIN", 0, 0}, {"", "", 0, 0},
        {"FETCH 18446744073709551615", "FETCH", 1, UINT64_MAX},
        {"FETCH 99999999999999999999999", "FETCH", 1, UINT64_MAX}, {"X 1 2", "X 1", 1, 2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sy_shadow_result r;
        sy_shadow_result_init(&r);
        feed_ok(&r, m_complete(cases[i].tag));
        assert_string_equal(r.tag, cases[i].verb);
        assert_int_equal(r.has_rows_affected, cases[i].has);
        assert_true(r.rows_affected == cases[i].count);
        assert_int_equal(r.status, SY_SHADOW_ST_OK);
        sy_shadow_result_free(&r);
    }
}

static void test_result_errors(void **state)
{
    (void)state;
    struct sy_shadow_result r;
    sy_shadow_result_init(&r);
    feed_ok(&r, m_error("42P01", "relation \"t\" does not exist"));
    assert_int_equal(r.status, SY_SHADOW_ST_ERROR);
    assert_string_equal(r.sqlstate, "42P01");
    assert_string_equal(r.message, "relation \"t\" does not exist");
    /* A second error keeps the first one's fields. */
    feed_ok(&r, m_error("57014", "canceled"));
    assert_string_equal(r.sqlstate, "42P01");
    assert_false(r.malformed);

    /* No SQLSTATE: status ERROR, empty sqlstate, malformed. */
    sy_shadow_result_reset(&r);
    struct msg m = {'E', 0, {0}};
    put_bytes(&m, "SERROR\0MNo state\0\0", 18);
    assert_int_equal(feed(&r, &m), PG_E_MALFORMED);
    assert_int_equal(r.status, SY_SHADOW_ST_ERROR);
    assert_string_equal(r.sqlstate, "");
    assert_string_equal(r.message, "No state");
    assert_true(r.malformed);

    /* A long message is cut to the bound. */
    char longmsg[600];
    memset(longmsg, 'm', sizeof(longmsg) - 1);
    longmsg[sizeof(longmsg) - 1] = 0;
    sy_shadow_result_reset(&r);
    feed_ok(&r, m_error("22000", longmsg));
    assert_int_equal(strlen(r.message), SY_SHADOW_MSG_MAX - 1);

    /* EmptyQueryResponse completes a statement. */
    sy_shadow_result_reset(&r);
    assert_int_equal(sy_shadow_result_feed(&r, 'I', NULL, 0), 0);
    assert_int_equal(r.status, SY_SHADOW_ST_OK);
    assert_true(r.empty_query);
    sy_shadow_result_free(&r);
}

/* Each malformed body must fail, mark the result, and change no count; so must every prefix of
   a good body (fed one byte longer each time, at the guard page). */
static void test_result_malformed(void **state)
{
    (void)state;
    struct {
        uint8_t type;
        const char *bytes;
        size_t len;
    } bad[] = {
        {'D', "\x00\x01" "\x00\x00\x00\x05" "abc", 9},     /* value past the end */
        {'D', "\x00\x01" "\xff\xff\xff\xfe", 6},          /* length -2 */
        {'D', "\x00\x02" "\x00\x00\x00\x01" "a", 7},      /* one value short */
        {'D', "\x00\x01" "\x00\x00\x00\x01" "ab", 8},     /* a byte after the last value */
        {'D', "\x00", 1},                                 /* no count */
        {'T', "\x00\x01" "a\0" "\x00\x00\x00\x00", 8},    /* field cut short */
        {'T', "\x00\x01" "abc", 5},                       /* name not terminated */
        {'C', "SELECT 1", 8},                             /* no NUL */
        {'C', "SELECT 1\0x", 10},                         /* bytes after the NUL */
        {'E', "CXX000\0", 7},                             /* no terminating zero */
        {'E', "", 0},                                     /* empty */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct sy_shadow_result r;
        sy_shadow_result_init(&r);
        int rc = sy_shadow_result_feed(&r, bad[i].type, guard_at(bad[i].bytes, bad[i].len), bad[i].len);
        if (rc != PG_E_MALFORMED)
            fail_msg("bad fixture %zu ('%c'): rc %d, want %d", i, bad[i].type, rc, PG_E_MALFORMED);
        assert_true(r.malformed);
        assert_int_equal(r.nrows, 0);
        assert_int_equal(r.nsets, 0);
        assert_int_equal(r.ncompletes, 0);
        sy_shadow_result_free(&r);
    }
    struct msg good[] = {
        m_row_desc(2, (const char *const[]){"id", "name"}, NULL, 0),
        m_data_row(3, (const char *const[]){"1", NULL, "abc"}),
        m_complete("UPDATE 7"),
        m_error("42P01", "nope"),
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        for (size_t k = 0; k < good[i].len; k++) {
            struct sy_shadow_result r;
            sy_shadow_result_init(&r);
            int rc = sy_shadow_result_feed(&r, good[i].type, guard_at(good[i].body, k), k);
            if (rc != PG_E_MALFORMED)
                fail_msg("'%c' cut to %zu bytes: rc %d", good[i].type, k, rc);
            sy_shadow_result_free(&r);
        }
        struct sy_shadow_result r;
        sy_shadow_result_init(&r);
        assert_int_equal(feed(&r, &good[i]), 0);
        sy_shadow_result_free(&r);
    }
    /* A NULL payload with a length is refused, not read. */
    struct sy_shadow_result r;
    sy_shadow_result_init(&r);
    assert_int_equal(sy_shadow_result_feed(&r, 'D', NULL, 5), PG_E_MALFORMED);
    sy_shadow_result_free(&r);
}

static void test_result_multi_statement(void **state)
{
    (void)state;
    struct sy_shadow_result r;
    sy_shadow_result_init(&r);
    feed_ok(&r, m_complete("BEGIN"));
    feed_ok(&r, m_complete("UPDATE 4"));
    feed_select(&r, 1, (const char *const[]){"x"}, 2, (const char *const[]){"a", "b"});
    feed_select(&r, 2, (const char *const[]){"y", "z"}, 1, (const char *const[]){"c", "d"});
    feed_ok(&r, m_complete("COMMIT"));
    assert_int_equal(r.status, SY_SHADOW_ST_OK);
    assert_int_equal(r.ncompletes, 5);
    assert_string_equal(r.tag, "COMMIT");
    assert_false(r.has_rows_affected);
    assert_int_equal(r.nsets, 2);
    assert_int_equal(r.ncols, 1); /* the first description's */
    assert_string_equal(r.cols[0].name, "x");
    assert_int_equal(r.nrows, 3);
    assert_int_equal(r.sample_rows, 3);
    assert_int_equal(r.sample_set[2], 1);
    assert_int_equal(r.sample_ncols[2], 2);
    sy_shadow_result_free(&r);
}

/* ---- Comparison ---- */

static const char *const COLS3[] = {"id", "name", "note"};

/* A 3-column SELECT whose rows are given as rows x 3 values. */
static void make_select(struct sy_shadow_result *r, size_t nrows, const char *const *cells)
{
    sy_shadow_result_init(r);
    feed_select(r, 3, COLS3, nrows, cells);
}

static void assert_class(enum sy_shadow_class got, enum sy_shadow_class want)
{
    if (got != want)
        fail_msg("class %s, want %s", sy_shadow_class_name(got), sy_shadow_class_name(want));
}

static void test_compare_match_and_status(void **state)
{
    (void)state;
    struct sy_shadow_result b, g;
    struct sy_shadow_example ex;
    const char *rows[] = {"1", "a", NULL, "2", "b", ""};
    make_select(&b, 2, rows);
    make_select(&g, 2, rows);
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_MATCH);
    assert_string_equal(ex.what, "");
    assert_int_equal(ex.row, -1);
    assert_class(sy_shadow_compare(&b, &g, NULL, NULL), SY_SHADOW_MATCH);

    /* Success against an error. */
    sy_shadow_result_reset(&g);
    feed_ok(&g, m_error("42P01", "relation \"t\" does not exist"));
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    assert_string_equal(ex.what, "sqlstate");
    assert_string_equal(ex.blue, "ok SELECT");
    assert_string_equal(ex.green, "error 42P01: relation \"t\" does not exist");

    /* Two errors: the same SQLSTATE matches (messages may name OIDs), another does not. */
    sy_shadow_result_reset(&b);
    feed_ok(&b, m_error("42P01", "relation \"t\" does not exist (other words)"));
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_MATCH);
    sy_shadow_result_reset(&b);
    feed_ok(&b, m_error("23505", "duplicate key"));
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    assert_string_equal(ex.what, "sqlstate");
    assert_string_equal(ex.blue, "error 23505: duplicate key");
    sy_shadow_result_free(&b);
    sy_shadow_result_free(&g);
}

static void test_compare_tags_and_counts(void **state)
{
    (void)state;
    struct sy_shadow_result b, g;
    struct sy_shadow_example ex;
    sy_shadow_result_init(&b);
    sy_shadow_result_init(&g);
    feed_ok(&b, m_complete("UPDATE 3"));
    feed_ok(&g, m_complete("UPDATE 2"));
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    assert_string_equal(ex.what, "rows_affected");
    assert_string_equal(ex.blue, "UPDATE 3");
    assert_string_equal(ex.green, "UPDATE 2");

    sy_shadow_result_reset(&g);
    feed_ok(&g, m_complete("DELETE 3"));
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    assert_string_equal(ex.what, "command_tag");
    assert_string_equal(ex.blue, "ok UPDATE");
    assert_string_equal(ex.green, "ok DELETE");

    /* An earlier statement's count differs even though the last tags agree. */
    sy_shadow_result_reset(&b);
    sy_shadow_result_reset(&g);
    feed_ok(&b, m_complete("UPDATE 1"));
    feed_ok(&b, m_complete("COMMIT"));
    feed_ok(&g, m_complete("UPDATE 0"));
    feed_ok(&g, m_complete("COMMIT"));
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    assert_string_equal(ex.what, "rows_affected");

    /* Lag explains a count; it does not explain a tag. */
    struct sy_shadow_hints lag = {.lag_suspected = 1};
    assert_class(sy_shadow_compare(&b, &g, &lag, &ex), SY_SHADOW_REPLICATION_LAG);
    sy_shadow_result_reset(&g);
    feed_ok(&g, m_complete("DELETE 1"));
    feed_ok(&g, m_complete("COMMIT"));
    assert_class(sy_shadow_compare(&b, &g, &lag, &ex), SY_SHADOW_REAL);
    sy_shadow_result_free(&b);
    sy_shadow_result_free(&g);
}

static void test_compare_columns(void **state)
{
    (void)state;
    struct sy_shadow_result b, g;
    struct sy_shadow_example ex;
    const char *names[] = {"id", "amount"};
    sy_shadow_result_init(&b);
    sy_shadow_result_init(&g);
    feed_ok(&b, m_row_desc(2, names, (const uint32_t[]){23, 1700}, 0));
    feed_ok(&g, m_row_desc(2, names, (const uint32_t[]){23, 701}, 0));
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    assert_string_equal(ex.what, "columns");
    assert_string_equal(ex.column, "amount");
    assert_string_equal(ex.blue, "amount type 1700 format 0");
    assert_string_equal(ex.green, "amount type 701 format 0");

    /* User-defined types get other OIDs on another cluster: not a difference. */
    sy_shadow_result_reset(&b);
    sy_shadow_result_reset(&g);
    feed_ok(&b, m_row_desc(2, names, (const uint32_t[]){23, 16385}, 0));
    feed_ok(&g, m_row_desc(2, names, (const uint32_t[]){23, 91234}, 0));
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_MATCH);

    /* A renamed column, and a missing one. */
    sy_shadow_result_reset(&g);
    feed_ok(&g, m_row_desc(2, (const char *const[]){"id", "amt"}, (const uint32_t[]){23, 16385}, 0));
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    assert_string_equal(ex.column, "amount");
    sy_shadow_result_reset(&g);
    feed_ok(&g, m_row_desc(1, names, (const uint32_t[]){23}, 0));
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    assert_string_equal(ex.what, "columns");
    assert_string_equal(ex.blue, "1 result sets, 2 columns");
    assert_string_equal(ex.green, "1 result sets, 1 columns");
    sy_shadow_result_free(&b);
    sy_shadow_result_free(&g);
}

static void test_compare_row_count_and_value(void **state)
{
    (void)state;
    struct sy_shadow_result b, g;
    struct sy_shadow_example ex;
    const char *rows_b[] = {"1", "a", "n1", "2", "b", "n2", "3", "c", "n3", "4", "x", "n4"};
    const char *rows_g[] = {"1", "a", "n1", "2", "b", "n2", "3", "c", "n3", "4", "y", "n4"};
    make_select(&b, 4, rows_b);
    make_select(&g, 3, rows_g);
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    assert_string_equal(ex.what, "row_count");
    assert_int_equal(ex.row, 3);
    assert_string_equal(ex.blue, "4 rows");
    assert_string_equal(ex.green, "3 rows");

    sy_shadow_result_free(&g);
    make_select(&g, 4, rows_g);
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    assert_string_equal(ex.what, "row_data");
    assert_string_equal(ex.column, "name");
    assert_int_equal(ex.row, 3);
    assert_string_equal(ex.blue, "'x'");
    assert_string_equal(ex.green, "'y'");

    /* Redacted: the place stays, the values go. */
    struct sy_shadow_hints redact = {.redact_values = 1};
    assert_class(sy_shadow_compare(&b, &g, &redact, &ex), SY_SHADOW_REAL);
    assert_string_equal(ex.column, "name");
    assert_int_equal(ex.row, 3);
    assert_string_equal(ex.blue, "<redacted>");
    assert_string_equal(ex.green, "<redacted>");
    sy_shadow_result_free(&b);
    sy_shadow_result_free(&g);

    /* NULL is not the empty string. */
    make_select(&b, 1, (const char *const[]){"1", NULL, "z"});
    make_select(&g, 1, (const char *const[]){"1", "", "z"});
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    assert_string_equal(ex.column, "name");
    assert_string_equal(ex.blue, "NULL");
    assert_string_equal(ex.green, "''");
    /* Nor is the text 'NULL'; and ('ab','c') is not ('a','bc'). */
    sy_shadow_result_free(&g);
    make_select(&g, 1, (const char *const[]){"1", "NULL", "z"});
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    assert_string_equal(ex.green, "'NULL'");
    sy_shadow_result_free(&b);
    sy_shadow_result_free(&g);
    make_select(&b, 1, (const char *const[]){"ab", "c", ""});
    make_select(&g, 1, (const char *const[]){"a", "bc", ""});
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    assert_string_equal(ex.column, "id");
    sy_shadow_result_free(&b);
    sy_shadow_result_free(&g);
}

static void test_compare_order_and_duplicates(void **state)
{
    (void)state;
    struct sy_shadow_result b, g;
    struct sy_shadow_example ex;
    const char *a = "a", *bb = "b", *c = "c";
    /* {a, a, b} against {a, b, a}: the same multiset, another order. */
    make_select(&b, 3, (const char *const[]){"1", a, "", "1", a, "", "2", bb, ""});
    make_select(&g, 3, (const char *const[]){"1", a, "", "2", bb, "", "1", a, ""});
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_ORDER_ONLY);
    assert_string_equal(ex.what, "row_order");
    assert_int_equal(ex.row, 1);
    assert_string_equal(ex.column, "id");
    assert_string_equal(ex.blue, "'1'");
    assert_string_equal(ex.green, "'2'");
    /* Volatile explains any difference, order included. */
    struct sy_shadow_hints vol = {.volatile_stmt = 1};
    assert_class(sy_shadow_compare(&b, &g, &vol, &ex), SY_SHADOW_NONDETERMINISTIC);
    assert_string_equal(ex.what, "row_order");
    sy_shadow_result_free(&g);

    /* {a, a, b} against {a, b, b}: duplicates count. The row shown is the unmatched copy. */
    make_select(&g, 3, (const char *const[]){"1", a, "", "2", bb, "", "2", bb, ""});
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    assert_string_equal(ex.what, "row_data");
    assert_int_equal(ex.row, 1);
    assert_string_equal(ex.blue, "'1'");
    assert_string_equal(ex.green, "'2'");
    sy_shadow_result_free(&b);
    sy_shadow_result_free(&g);

    /* {a, a} against {c, c}: an xor of row hashes would call these equal. */
    make_select(&b, 2, (const char *const[]){"1", a, "", "1", a, ""});
    make_select(&g, 2, (const char *const[]){"1", c, "", "1", c, ""});
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    assert_int_equal(ex.row, 0);
    sy_shadow_result_free(&b);
    sy_shadow_result_free(&g);
}

static void test_compare_hints(void **state)
{
    (void)state;
    struct sy_shadow_result b, g;
    struct sy_shadow_example ex;
    const char *rows[] = {"1", "a", "", "2", "b", ""};
    make_select(&b, 2, rows);
    make_select(&g, 1, rows);

    struct sy_shadow_hints h = {.lag_suspected = 1};
    assert_class(sy_shadow_compare(&b, &g, &h, &ex), SY_SHADOW_REPLICATION_LAG);
    assert_string_equal(ex.what, "row_count");
    h = (struct sy_shadow_hints){.volatile_stmt = 1, .lag_suspected = 1};
    assert_class(sy_shadow_compare(&b, &g, &h, &ex), SY_SHADOW_NONDETERMINISTIC);
    h = (struct sy_shadow_hints){.shadow_failed = 1};
    assert_class(sy_shadow_compare(&b, &b, &h, &ex), SY_SHADOW_SHADOW_ERROR);
    assert_string_equal(ex.what, "shadow");
    assert_string_equal(ex.green, "shadow connection failed or timed out");

    /* A read-only shadow refusing a write. */
    sy_shadow_result_reset(&b);
    sy_shadow_result_reset(&g);
    feed_ok(&b, m_complete("INSERT 0 1"));
    feed_ok(&g, m_error("25006", "cannot execute INSERT in a read-only transaction"));
    h = (struct sy_shadow_hints){.read_only_shadow = 1};
    assert_class(sy_shadow_compare(&b, &g, &h, &ex), SY_SHADOW_SKIPPED_WRITE);
    assert_string_equal(ex.what, "sqlstate");
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    /* Redaction drops error messages too (they can quote values). */
    h = (struct sy_shadow_hints){.redact_values = 1};
    sy_shadow_compare(&b, &g, &h, &ex);
    assert_string_equal(ex.green, "error 25006");
    /* Another error under a read-only shadow is still real. */
    sy_shadow_result_reset(&g);
    feed_ok(&g, m_error("23505", "duplicate key"));
    h = (struct sy_shadow_hints){.read_only_shadow = 1};
    assert_class(sy_shadow_compare(&b, &g, &h, &ex), SY_SHADOW_REAL);

    /* An undecodable answer is the shadow's problem, not a divergence. */
    sy_shadow_result_reset(&g);
    feed_ok(&g, m_complete("INSERT 0 1"));
    assert_int_equal(sy_shadow_result_feed(&g, 'D', guard_at("\x00", 1), 1), PG_E_MALFORMED);
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_SHADOW_ERROR);
    assert_string_equal(ex.what, "malformed");
    /* ...but a malformed answer that matches still matches. */
    assert_class(sy_shadow_compare(&g, &g, NULL, &ex), SY_SHADOW_MATCH);
    sy_shadow_result_free(&b);
    sy_shadow_result_free(&g);
}

static void test_compare_values_rendering(void **state)
{
    (void)state;
    struct sy_shadow_result b, g;
    struct sy_shadow_example ex;
    /* A long value that differs only at its end: detected (whole-value hash), shown cut. */
    static char long_b[1001], long_g[1001];
    memset(long_b, 'v', 1000);
    memset(long_g, 'v', 1000);
    long_g[999] = 'w';
    const char *names[] = {"doc"};
    sy_shadow_result_init(&b);
    sy_shadow_result_init(&g);
    feed_select(&b, 1, names, 1, (const char *const[]){long_b});
    feed_select(&g, 1, names, 1, (const char *const[]){long_g});
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    assert_string_equal(ex.column, "doc");
    assert_true(strlen(ex.blue) > 100 && strlen(ex.blue) < SY_SHADOW_TEXT_MAX);
    assert_int_equal(ex.blue[0], '\'');
    assert_string_equal(ex.blue + strlen(ex.blue) - 3, "...");
    sy_shadow_result_free(&b);
    sy_shadow_result_free(&g);

    /* Binary values as hex, control characters escaped. */
    sy_shadow_result_init(&b);
    sy_shadow_result_init(&g);
    const char *names2[] = {"t", "bin"};
    const uint32_t oids[] = {25, 17};
    feed_ok(&b, m_row_desc(2, names2, oids, 2));
    feed_ok(&g, m_row_desc(2, names2, oids, 2));
    assert_int_equal(b.cols[1].format, 1);
    feed_ok(&b, m_data_row(2, (const char *const[]){"a\nb", "\x01\x02"}));
    feed_ok(&g, m_data_row(2, (const char *const[]){"a\nc", "\x01\x02"}));
    feed_ok(&b, m_data_row(2, (const char *const[]){"same", "\x01\x02"}));
    feed_ok(&g, m_data_row(2, (const char *const[]){"same", "\x01\x03"}));
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    assert_string_equal(ex.column, "t");
    assert_int_equal(ex.row, 0);
    assert_string_equal(ex.blue, "'a\\x0ab'");
    assert_string_equal(ex.green, "'a\\x0ac'");
    /* Only the binary column of the second row differs. */
    sy_shadow_result_reset(&g);
    feed_ok(&g, m_row_desc(2, names2, oids, 2));
    feed_ok(&g, m_data_row(2, (const char *const[]){"a\nb", "\x01\x02"}));
    feed_ok(&g, m_data_row(2, (const char *const[]){"same", "\x01\x03"}));
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    assert_string_equal(ex.column, "bin");
    assert_int_equal(ex.row, 1);
    assert_string_equal(ex.blue, "\\x0102");
    assert_string_equal(ex.green, "\\x0103");
    sy_shadow_result_free(&b);
    sy_shadow_result_free(&g);
}

/* ---- Accepted differences ---- */

/* RowDescription with type OIDs and modifiers (all text format unless bit i of binary). */
static struct msg m_row_desc_mod(size_t n, const char *const *names, const uint32_t *oids,
                                 const int32_t *mods, unsigned binary)
{
    struct msg m = {'T', 0, {0}};
    put16(&m, (uint16_t)n);
    for (size_t i = 0; i < n; i++) {
        put_bytes(&m, names[i], strlen(names[i]) + 1);
        put32(&m, 16400);
        put16(&m, (uint16_t)(i + 1));
        put32(&m, oids[i]);
        put16(&m, 0xffff);
        put32(&m, (uint32_t)mods[i]);
        put16(&m, i < 32 && (binary >> i) & 1 ? 1 : 0);
    }
    return m;
}

/* A SELECT with typed columns: nrows rows of ncols text values. */
static void make_typed(struct sy_shadow_result *r, size_t ncols, const char *const *names,
                       const uint32_t *oids, const int32_t *mods, size_t nrows,
                       const char *const *cells)
{
    sy_shadow_result_init(r);
    feed_ok(r, m_row_desc_mod(ncols, names, oids, mods, 0));
    for (size_t i = 0; i < nrows; i++)
        feed_ok(r, m_data_row(ncols, cells + i * ncols));
    char tag[32];
    snprintf(tag, sizeof(tag), "SELECT %zu", nrows);
    feed_ok(r, m_complete(tag));
}

static struct sy_shadow_accept accept_col(const char *column)
{
    struct sy_shadow_accept a;
    memset(&a, 0, sizeof(a));
    a.fp_hash = 42;
    snprintf(a.column, sizeof(a.column), "%s", column);
    a.cls = SY_SHADOW_REAL;
    return a;
}

/* Compares with the accepts given and checks the class and, when want_what is not NULL, the
   example's what and column. */
static void check_accepting(const struct sy_shadow_result *b, const struct sy_shadow_result *g,
                            const struct sy_shadow_accept *acc, size_t n, enum sy_shadow_class want,
                            const char *want_what, const char *want_col, struct sy_shadow_example *ex)
{
    struct sy_shadow_hints h = {.accepts = acc, .naccepts = n};
    assert_class(sy_shadow_compare(b, g, &h, ex), want);
    if (want_what && strcmp(ex->what, want_what) != 0)
        fail_msg("what '%s', want '%s' (blue %s | green %s)", ex->what, want_what, ex->blue,
                 ex->green);
    if (want_col && strcmp(ex->column, want_col) != 0)
        fail_msg("column '%s', want '%s'", ex->column, want_col);
}

#define OID_TEXT 25u
#define OID_VARCHAR 1043u

/* int4 widened to int8: the accepted type change alone is ACCEPTED; a changed value in the
 * same column, another column's value, another column's type and a row count stay REAL. */
static void test_accept_widened_int(void **state)
{
    (void)state;
    static const char *const names[] = {"id", "name"};
    static const uint32_t b_oids[] = {23, OID_TEXT}, g_oids[] = {20, OID_TEXT};
    static const uint32_t g2_oids[] = {20, OID_VARCHAR};
    static const int32_t mods[] = {-1, -1}, g2_mods[] = {-1, 24};
    static const char *const rows[] = {"1", "a", "2", "b", "3", "c"};
    static const char *const rows_id[] = {"1", "a", "20", "b", "3", "c"};
    static const char *const rows_name[] = {"1", "a", "2", "B", "3", "c"};
    struct sy_shadow_result b, g;
    struct sy_shadow_example ex;
    struct sy_shadow_accept acc[2] = {accept_col("id")};
    make_typed(&b, 2, names, b_oids, mods, 3, rows);

    make_typed(&g, 2, names, g_oids, mods, 3, rows);
    check_accepting(&b, &g, NULL, 0, SY_SHADOW_REAL, "columns", "id", &ex);
    check_accepting(&b, &g, acc, 1, SY_SHADOW_ACCEPTED, "columns", "id", &ex);
    assert_string_equal(ex.blue, "id type 23 format 0");
    assert_string_equal(ex.green, "id type 20 format 0");
    /* An accept of another column, or of another class, accepts nothing here. */
    struct sy_shadow_accept other = accept_col("name");
    check_accepting(&b, &g, &other, 1, SY_SHADOW_REAL, "columns", "id", &ex);
    struct sy_shadow_accept order = accept_col("");
    order.cls = SY_SHADOW_ORDER_ONLY;
    check_accepting(&b, &g, &order, 1, SY_SHADOW_REAL, "columns", "id", &ex);
    sy_shadow_result_free(&g);

    /* The same column, one value changed: REAL, and the example shows the value, not the type. */
    make_typed(&g, 2, names, g_oids, mods, 3, rows_id);
    check_accepting(&b, &g, acc, 1, SY_SHADOW_REAL, "row_data", "id", &ex);
    assert_int_equal(ex.row, 1);
    assert_string_equal(ex.blue, "'2'");
    assert_string_equal(ex.green, "'20'");
    /* ... REPLICATION_LAG when lag is suspected: what is left is classified as usual. */
    struct sy_shadow_hints lag = {.lag_suspected = 1, .accepts = acc, .naccepts = 1};
    assert_class(sy_shadow_compare(&b, &g, &lag, &ex), SY_SHADOW_REPLICATION_LAG);
    sy_shadow_result_free(&g);

    /* Another column's value changed. */
    make_typed(&g, 2, names, g_oids, mods, 3, rows_name);
    check_accepting(&b, &g, acc, 1, SY_SHADOW_REAL, "row_data", "name", &ex);
    assert_string_equal(ex.blue, "'b'");
    assert_string_equal(ex.green, "'B'");
    sy_shadow_result_free(&g);

    /* Another column's type changed too (text to varchar(20)): REAL, naming that column. */
    make_typed(&g, 2, names, g2_oids, g2_mods, 3, rows);
    check_accepting(&b, &g, acc, 1, SY_SHADOW_REAL, "columns", "name", &ex);
    acc[1] = accept_col("name");
    check_accepting(&b, &g, acc, 2, SY_SHADOW_ACCEPTED, "columns", "id", &ex);
    sy_shadow_result_free(&g);

    /* A row fewer. */
    make_typed(&g, 2, names, g_oids, mods, 2, rows);
    check_accepting(&b, &g, acc, 1, SY_SHADOW_REAL, NULL, NULL, &ex);
    assert_true(strcmp(ex.what, "row_count") == 0 || strcmp(ex.what, "command_tag") == 0);
    sy_shadow_result_free(&g);
    sy_shadow_result_free(&b);
}

/* numeric(10,2) to numeric(10,4): values equal as numbers are accepted, a changed one is not;
 * a numeric without a type modifier is compared as text. */
static void test_accept_numeric_scale(void **state)
{
    (void)state;
    static const char *const names[] = {"id", "amount"};
    static const uint32_t oids[] = {23, 1700};
    static const int32_t b_mods[] = {-1, (10 << 16 | 2) + 4}, g_mods[] = {-1, (10 << 16 | 4) + 4};
    static const int32_t no_mods[] = {-1, -1};
    static const char *const b_rows[] = {"1", "43.29", "2", "1.00", "3", "-0.50", "4", "NaN"};
    static const char *const g_rows[] = {"1", "43.2900", "2", "1.0000", "3", "-0.5000", "4", "NaN"};
    static const char *const g_changed[] = {"1", "43.2900", "2", "1.0001", "3", "-0.5000", "4",
                                            "NaN"};
    struct sy_shadow_result b, g;
    struct sy_shadow_example ex;
    struct sy_shadow_accept acc = accept_col("amount");
    make_typed(&b, 2, names, oids, b_mods, 4, b_rows);

    make_typed(&g, 2, names, oids, g_mods, 4, g_rows);
    check_accepting(&b, &g, NULL, 0, SY_SHADOW_REAL, "row_data", "amount", &ex);
    assert_string_equal(ex.blue, "'43.29'");
    assert_string_equal(ex.green, "'43.2900'");
    check_accepting(&b, &g, &acc, 1, SY_SHADOW_ACCEPTED, "row_data", "amount", &ex);
    /* Accepting another column does not read this one by meaning: its modifier changed and
     * nobody accepted that. */
    struct sy_shadow_accept id = accept_col("id");
    check_accepting(&b, &g, &id, 1, SY_SHADOW_REAL, "row_data", "amount", &ex);
    sy_shadow_result_free(&g);

    /* The modifier shows in a columns example when the type changed too (int to numeric). */
    static const uint32_t g_oids[] = {1700, 1700};
    static const int32_t g_mods2[] = {(12 << 16) + 4, (10 << 16 | 4) + 4};
    make_typed(&g, 2, names, g_oids, g_mods2, 4, g_rows);
    check_accepting(&b, &g, &acc, 1, SY_SHADOW_REAL, "columns", "id", &ex);
    assert_string_equal(ex.green, "id type 1700(12,0) format 0");
    struct sy_shadow_accept both[2] = {acc, id};
    check_accepting(&b, &g, both, 2, SY_SHADOW_ACCEPTED, "columns", "id", &ex);
    sy_shadow_result_free(&g);

    make_typed(&g, 2, names, oids, g_mods, 4, g_changed);
    check_accepting(&b, &g, &acc, 1, SY_SHADOW_REAL, "row_data", "amount", &ex);
    assert_int_equal(ex.row, 1); /* row 0 is equal as a number: not the example */
    assert_string_equal(ex.blue, "'1.00'");
    assert_string_equal(ex.green, "'1.0001'");
    sy_shadow_result_free(&g);
    sy_shadow_result_free(&b);

    /* Without a modifier on either side the display scale is the value's own: text. */
    make_typed(&b, 2, names, oids, no_mods, 4, b_rows);
    make_typed(&g, 2, names, oids, no_mods, 4, g_rows);
    check_accepting(&b, &g, &acc, 1, SY_SHADOW_REAL, "row_data", "amount", &ex);
    sy_shadow_result_free(&g);
    sy_shadow_result_free(&b);
}

/* A renamed column (the same type and values) is accepted by its old or its new name. */
static void test_accept_renamed_column(void **state)
{
    (void)state;
    static const char *const b_names[] = {"id", "email"}, *const g_names[] = {"id", "mail"};
    static const uint32_t oids[] = {23, OID_TEXT};
    static const int32_t mods[] = {-1, -1};
    static const char *const rows[] = {"1", "ann@example.com", "2", "bob@example.com"};
    static const char *const changed[] = {"1", "ann@example.com", "2", "bob@example.org"};
    struct sy_shadow_result b, g;
    struct sy_shadow_example ex;
    make_typed(&b, 2, b_names, oids, mods, 2, rows);
    make_typed(&g, 2, g_names, oids, mods, 2, rows);
    struct sy_shadow_accept old_name = accept_col("email"), new_name = accept_col("mail");
    check_accepting(&b, &g, NULL, 0, SY_SHADOW_REAL, "columns", "email", &ex);
    check_accepting(&b, &g, &old_name, 1, SY_SHADOW_ACCEPTED, "columns", "email", &ex);
    check_accepting(&b, &g, &new_name, 1, SY_SHADOW_ACCEPTED, "columns", "email", &ex);
    struct sy_shadow_accept id = accept_col("id");
    check_accepting(&b, &g, &id, 1, SY_SHADOW_REAL, "columns", "email", &ex);
    sy_shadow_result_free(&g);
    make_typed(&g, 2, g_names, oids, mods, 2, changed);
    check_accepting(&b, &g, &old_name, 1, SY_SHADOW_REAL, "row_data", "email", &ex);
    sy_shadow_result_free(&g);
    sy_shadow_result_free(&b);
}

/* Binary format: an int4 widened to int8 is decoded; equal numbers are accepted. */
static void test_accept_binary_int(void **state)
{
    (void)state;
    static const char *const names[] = {"id"};
    static const uint32_t b_oid[] = {23}, g_oid[] = {20};
    static const int32_t mods[] = {-1};
    struct sy_shadow_result b, g, g2;
    sy_shadow_result_init(&b);
    sy_shadow_result_init(&g);
    sy_shadow_result_init(&g2);
    feed_ok(&b, m_row_desc_mod(1, names, b_oid, mods, 1));
    feed_ok(&g, m_row_desc_mod(1, names, g_oid, mods, 1));
    feed_ok(&g2, m_row_desc_mod(1, names, g_oid, mods, 1));
    static const int32_t vals[] = {5, -7, 2147483647};
    for (int i = 0; i < 3; i++) {
        struct msg mb = {'D', 0, {0}}, mg = {'D', 0, {0}}, mg2 = {'D', 0, {0}};
        put16(&mb, 1);
        put32(&mb, 4);
        put32(&mb, (uint32_t)vals[i]);
        int64_t v8 = vals[i], v8b = i == 1 ? 7 : vals[i];
        put16(&mg, 1);
        put32(&mg, 8);
        put32(&mg, (uint32_t)((uint64_t)v8 >> 32));
        put32(&mg, (uint32_t)v8);
        put16(&mg2, 1);
        put32(&mg2, 8);
        put32(&mg2, (uint32_t)((uint64_t)v8b >> 32));
        put32(&mg2, (uint32_t)v8b);
        feed_ok(&b, mb);
        feed_ok(&g, mg);
        feed_ok(&g2, mg2);
    }
    feed_ok(&b, m_complete("SELECT 3"));
    feed_ok(&g, m_complete("SELECT 3"));
    feed_ok(&g2, m_complete("SELECT 3"));
    struct sy_shadow_example ex;
    struct sy_shadow_accept acc = accept_col("id");
    check_accepting(&b, &g, NULL, 0, SY_SHADOW_REAL, "columns", "id", &ex);
    check_accepting(&b, &g, &acc, 1, SY_SHADOW_ACCEPTED, "columns", "id", &ex);
    check_accepting(&b, &g2, &acc, 1, SY_SHADOW_REAL, "row_data", "id", &ex);
    assert_int_equal(ex.row, 1);
    assert_string_equal(ex.blue, "\\xfffffff9");
    assert_string_equal(ex.green, "\\x0000000000000007");
    sy_shadow_result_free(&b);
    sy_shadow_result_free(&g);
    sy_shadow_result_free(&g2);
}

/* Whole-statement accepts of a class, and matching an accept to a fingerprint. */
static void test_accept_whole_statement(void **state)
{
    (void)state;
    static const char *const r1[] = {"1", "a", "x", "2", "b", "y"};
    static const char *const r2[] = {"1", "a", "x", "2", "b", "Y"};
    static const char *const r3[] = {"2", "b", "y", "1", "a", "x"};
    struct sy_shadow_result b, g_val, g_order;
    make_select(&b, 2, r1);
    make_select(&g_val, 2, r2);
    make_select(&g_order, 2, r3);
    struct sy_shadow_example ex;
    struct sy_shadow_accept real = accept_col(""), order = accept_col("");
    order.cls = SY_SHADOW_ORDER_ONLY;
    check_accepting(&b, &g_val, &real, 1, SY_SHADOW_ACCEPTED, "row_data", "note", &ex);
    check_accepting(&b, &g_val, &order, 1, SY_SHADOW_REAL, "row_data", "note", &ex);
    check_accepting(&b, &g_order, &order, 1, SY_SHADOW_ACCEPTED, "row_order", NULL, &ex);
    check_accepting(&b, &b, &real, 1, SY_SHADOW_MATCH, "", NULL, &ex);
    /* Nondeterministic and skipped writes are not REAL: a REAL accept leaves them. */
    struct sy_shadow_hints vol = {.volatile_stmt = 1, .accepts = &real, .naccepts = 1};
    assert_class(sy_shadow_compare(&b, &g_val, &vol, &ex), SY_SHADOW_NONDETERMINISTIC);
    assert_class(sy_shadow_accept_class(&real, 1, SY_SHADOW_INCONCLUSIVE), SY_SHADOW_INCONCLUSIVE);
    struct sy_shadow_accept inc = accept_col("");
    inc.cls = SY_SHADOW_INCONCLUSIVE;
    assert_class(sy_shadow_accept_class(&inc, 1, SY_SHADOW_INCONCLUSIVE), SY_SHADOW_ACCEPTED);
    assert_class(sy_shadow_accept_class(&inc, 1, SY_SHADOW_MATCH), SY_SHADOW_MATCH);

    /* Matching: by hash, or by the text as given. */
    struct sy_shadow_accept m = accept_col("");
    m.fp_hash = 42;
    assert_int_equal(sy_shadow_accept_matches(&m, "select ?", 42), 1);
    assert_int_equal(sy_shadow_accept_matches(&m, "select ?", 43), 0);
    snprintf(m.fingerprint, sizeof(m.fingerprint), "select ?");
    assert_int_equal(sy_shadow_accept_matches(&m, "select ?", 43), 1);
    assert_int_equal(sy_shadow_accept_matches(&m, NULL, 43), 0);
    assert_int_equal(sy_shadow_accept_matches(&m, "select ?, ?", 43), 0);
    /* A fingerprint's text fingerprints to itself, so its hash is the report's. */
    static const char *const sqls[] = {
        "SELECT id, amount FROM prices WHERE id IN (1, 2, 3) AND note = 'x'",
        "insert into t (a, b) values (1, 'a'), (2, 'b')",
        "SELECT * FROM \"My Table\" WHERE x = $1 -- c",
    };
    for (size_t i = 0; i < sizeof(sqls) / sizeof(sqls[0]); i++) {
        char fp[512], fp2[512];
        uint64_t h1, h2;
        pg_fingerprint_full(sqls[i], strlen(sqls[i]), fp, sizeof(fp), &h1);
        pg_fingerprint_full(fp, strlen(fp), fp2, sizeof(fp2), &h2);
        if (strcmp(fp, fp2) != 0 || h1 != h2)
            fail_msg("[%s] fingerprints to [%s], which fingerprints to [%s]", sqls[i], fp, fp2);
    }
    sy_shadow_result_free(&b);
    sy_shadow_result_free(&g_val);
    sy_shadow_result_free(&g_order);
}

/* Feeds rows like "row <i>" with a 100-byte pad; swap exchanges rows swap and swap + 1, change
   alters row change (SIZE_MAX for none). */
static void feed_big(struct sy_shadow_result *r, size_t nrows, size_t swap, size_t change)
{
    const char *names[] = {"id", "pad", "n"};
    char pad[101];
    memset(pad, 'p', 100);
    pad[100] = 0;
    feed_ok(r, m_row_desc(3, names, NULL, 0));
    for (size_t i = 0; i < nrows; i++) {
        size_t k = i == swap ? i + 1 : i == swap + 1 ? i - 1 : i;
        char id[32], n[32];
        snprintf(id, sizeof(id), "%zu", k);
        snprintf(n, sizeof(n), "%zu", k == change ? k + 7 : k * 3);
        feed_ok(r, m_data_row(3, (const char *const[]){id, pad, n}));
    }
    feed_ok(r, m_complete("SELECT 100000"));
}

static void test_result_bounded(void **state)
{
    (void)state;
    struct sy_shadow_result b, g;
    struct sy_shadow_example ex;
    sy_shadow_result_init(&b);
    sy_shadow_result_init(&g);
    feed_big(&b, 100000, SIZE_MAX - 1, SIZE_MAX);
    feed_big(&g, 100000, SIZE_MAX - 1, SIZE_MAX);
    assert_int_equal(b.nrows, 100000);
    assert_int_equal(b.row_hash_len, SY_SHADOW_ROW_HASHES);
    assert_int_equal(b.sample_rows, SY_SHADOW_SAMPLE_ROWS);
    assert_true(b.arena_used <= SY_SHADOW_SAMPLE_BYTES);
    assert_true(sy_shadow_result_heap_bytes(&b) <= SY_SHADOW_RESULT_HEAP_MAX);
    assert_true(SY_SHADOW_RESULT_HEAP_MAX <= 32 * 1024);
    assert_false(b.detail_lost);
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_MATCH);

    /* A change past the kept rows is found, but cannot be located. */
    sy_shadow_result_reset(&g);
    feed_big(&g, 100000, SIZE_MAX - 1, 99999);
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_REAL);
    assert_string_equal(ex.what, "row_data");
    assert_int_equal(ex.row, -1);
    assert_string_equal(ex.blue, "100000 rows, differs past the first kept rows");

    /* Two rows swapped far down: order only. Near the top: located. */
    sy_shadow_result_reset(&g);
    feed_big(&g, 100000, 50000, SIZE_MAX);
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_ORDER_ONLY);
    assert_int_equal(ex.row, -1);
    sy_shadow_result_reset(&g);
    feed_big(&g, 100000, 500, SIZE_MAX);
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_ORDER_ONLY);
    assert_int_equal(ex.row, 500);
    assert_string_equal(ex.blue, "100000 rows, row not sampled");
    sy_shadow_result_reset(&g);
    feed_big(&g, 100000, 5, SIZE_MAX);
    assert_class(sy_shadow_compare(&b, &g, NULL, &ex), SY_SHADOW_ORDER_ONLY);
    assert_int_equal(ex.row, 5);
    assert_string_equal(ex.column, "id");
    assert_string_equal(ex.blue, "'5'");
    assert_string_equal(ex.green, "'6'");
    assert_true(sy_shadow_result_heap_bytes(&g) <= SY_SHADOW_RESULT_HEAP_MAX);

    /* A wide row: the count is exact, 64 columns are kept. */
    sy_shadow_result_reset(&b);
    const char *names[100], *vals[100];
    char buf[100][8];
    for (int i = 0; i < 100; i++) {
        snprintf(buf[i], sizeof(buf[i]), "c%d", i);
        names[i] = vals[i] = buf[i];
    }
    feed_ok(&b, m_row_desc(100, names, NULL, 0));
    feed_ok(&b, m_data_row(100, vals));
    assert_int_equal(b.ncols, 100);
    assert_string_equal(b.cols[63].name, "c63");
    assert_int_equal(b.sample_ncols[0], 100);
    assert_int_equal(b.sample_ncells[0], SY_SHADOW_COLS_MAX);
    sy_shadow_result_free(&b);
    sy_shadow_result_free(&g);
}

/* ---- Report ---- */

static struct sy_shadow_example example(const char *what, const char *blue)
{
    struct sy_shadow_example ex;
    memset(&ex, 0, sizeof(ex));
    snprintf(ex.what, sizeof(ex.what), "%s", what);
    snprintf(ex.column, sizeof(ex.column), "col");
    ex.row = 7;
    snprintf(ex.blue, sizeof(ex.blue), "%s", blue);
    snprintf(ex.green, sizeof(ex.green), "'g'");
    return ex;
}

static void test_report_aggregate(void **state)
{
    (void)state;
    struct sy_shadow_report *rep = sy_shadow_report_new(0);
    assert_non_null(rep);
    struct sy_shadow_example e1 = example("row_data", "'first'"), e2 = example("row_data", "'second'");
    assert_int_equal(sy_shadow_report_add(rep, "select ?", 11, SY_SHADOW_MATCH, 100, 120, NULL, 1), 0);
    assert_int_equal(sy_shadow_report_add(rep, "select ?", 11, SY_SHADOW_REAL, 100, 130, &e1, 2), 0);
    assert_int_equal(sy_shadow_report_add(rep, "select ?", 11, SY_SHADOW_REAL, 100, -1, &e2, 3), 0);
    assert_int_equal(sy_shadow_report_add(rep, "update t", 22, SY_SHADOW_SKIPPED_WRITE, 50, 60, &e2, 4), 0);
    assert_int_equal(sy_shadow_report_add(rep, "update t", 22, 99, 50, 60, NULL, 5), -1);
    sy_shadow_report_bump(rep, SY_SHADOW_CTR_SESSIONS, 2);
    sy_shadow_report_bump(rep, SY_SHADOW_CTR_MIRRORED, 4);
    sy_shadow_report_bump(rep, SY_SHADOW_CTR_SUSPENDED, 1);
    sy_shadow_report_bump(rep, SY_SHADOW_CTR_SKIPPED, 3);
    sy_shadow_report_bump(rep, 42, 3);

    assert_int_equal(sy_shadow_report_size(rep), 2);
    const struct sy_shadow_fp *s = sy_shadow_report_entry(rep, 0);
    assert_string_equal(s->text, "select ?");
    assert_int_equal(s->count, 3);
    assert_int_equal(s->by_class[SY_SHADOW_MATCH], 1);
    assert_int_equal(s->by_class[SY_SHADOW_REAL], 2);
    assert_int_equal(s->blue.count, 3);
    assert_int_equal(s->green.count, 2); /* -1 is unknown */
    assert_int_equal(s->last_real_us, 3);
    assert_non_null(s->examples[SY_SHADOW_REAL]);
    assert_string_equal(s->examples[SY_SHADOW_REAL]->blue, "'first'"); /* the first is kept */
    assert_null(s->examples[SY_SHADOW_MATCH]);
    assert_null(sy_shadow_report_entry(rep, 2));

    const struct sy_shadow_totals *t = sy_shadow_report_totals(rep);
    assert_int_equal(t->compared, 4);
    assert_int_equal(t->by_class[SY_SHADOW_REAL], 2);
    assert_int_equal(t->by_class[SY_SHADOW_SKIPPED_WRITE], 1);
    assert_int_equal(t->counters[SY_SHADOW_CTR_SESSIONS], 2);
    assert_int_equal(t->counters[SY_SHADOW_CTR_SKIPPED], 3);

    sy_shadow_report_reset(rep);
    assert_int_equal(sy_shadow_report_size(rep), 0);
    assert_int_equal(t->compared, 0);
    assert_int_equal(t->counters[SY_SHADOW_CTR_SESSIONS], 0);
    assert_int_equal(sy_shadow_report_gate(rep, 0, 1u << SY_SHADOW_REAL, NULL, 0, NULL), 0);
    assert_int_equal(sy_shadow_report_add(rep, "select ?", 11, SY_SHADOW_MATCH, 1, 1, NULL, 9), 0);
    assert_int_equal(sy_shadow_report_entry(rep, 0)->count, 1);
    sy_shadow_report_destroy(rep);
    sy_shadow_report_destroy(NULL);
}

static void assert_near(uint64_t got, double want, double tolerance)
{
    double err = ((double)got - want) / want;
    if (err < -tolerance || err > tolerance)
        fail_msg("%llu is not within %.1f%% of %.1f", (unsigned long long)got, tolerance * 100, want);
}

static void test_report_percentiles(void **state)
{
    (void)state;
    struct sy_shadow_hist h;
    memset(&h, 0, sizeof(h));
    assert_int_equal(sy_shadow_hist_quantile(&h, 0.5), 0);

    struct sy_shadow_report *rep = sy_shadow_report_new(0);
    assert_non_null(rep);
    /* Uniform 1..100000 us on blue, 10x on green. */
    for (int64_t v = 1; v <= 100000; v++)
        sy_shadow_report_add(rep, "q", 1, SY_SHADOW_MATCH, v, v * 10, NULL, 0);
    const struct sy_shadow_fp *e = sy_shadow_report_entry(rep, 0);
    assert_near(sy_shadow_hist_quantile(&e->blue, 0.50), 50000, 0.05);
    assert_near(sy_shadow_hist_quantile(&e->blue, 0.99), 99000, 0.05);
    assert_near(sy_shadow_hist_quantile(&e->green, 0.50), 500000, 0.05);
    assert_near(sy_shadow_hist_quantile(&e->green, 0.99), 990000, 0.05);
    assert_int_equal(sy_shadow_hist_quantile(&e->blue, 0), 1);
    assert_int_equal(sy_shadow_hist_quantile(&e->blue, 1), 100000);
    assert_int_equal(e->blue.max, 100000);

    /* Small values are exact; a huge one is clamped to the exact max. */
    sy_shadow_report_reset(rep);
    for (int i = 0; i < 99; i++)
        sy_shadow_report_add(rep, "q", 1, SY_SHADOW_MATCH, 7, -1, NULL, 0);
    sy_shadow_report_add(rep, "q", 1, SY_SHADOW_MATCH, INT64_MAX, -1, NULL, 0);
    e = sy_shadow_report_entry(rep, 0);
    assert_int_equal(sy_shadow_hist_quantile(&e->blue, 0.5), 7);
    assert_int_equal(sy_shadow_hist_quantile(&e->blue, 0.99), 7);
    assert_true(sy_shadow_hist_quantile(&e->blue, 1.0) == (uint64_t)INT64_MAX);
    assert_int_equal(e->green.count, 0);

    /* Every bucket midpoint is within 3.2% of any value in the bucket. */
    for (uint64_t v = 1; v < 5000000; v = v + 1 + v / 97) {
        struct sy_shadow_report *one = sy_shadow_report_new(1);
        assert_non_null(one);
        /* The middle of three, so that neither exact extreme answers. */
        sy_shadow_report_add(one, "v", 1, SY_SHADOW_MATCH, 0, -1, NULL, 0);
        sy_shadow_report_add(one, "v", 1, SY_SHADOW_MATCH, (int64_t)v, -1, NULL, 0);
        sy_shadow_report_add(one, "v", 1, SY_SHADOW_MATCH, (int64_t)v * 2 + 1000, -1, NULL, 0);
        assert_near(sy_shadow_hist_quantile(&sy_shadow_report_entry(one, 0)->blue, 0.5), (double)v, 0.032);
        sy_shadow_report_destroy(one);
    }
    sy_shadow_report_destroy(rep);
}

static void test_report_overflow(void **state)
{
    (void)state;
    struct sy_shadow_report *rep = sy_shadow_report_new(4);
    assert_non_null(rep);
    for (uint64_t i = 0; i < 10; i++) {
        char text[16];
        snprintf(text, sizeof(text), "q%llu", (unsigned long long)i);
        int rc = sy_shadow_report_add(rep, text, i * 1000 + 1, SY_SHADOW_REAL, 5, 5, NULL, i);
        assert_int_equal(rc, i < 4 ? 0 : 1);
        /* A known fingerprint is still counted under itself. */
        assert_int_equal(sy_shadow_report_add(rep, "q0", 1, SY_SHADOW_MATCH, 5, 5, NULL, i), 0);
    }
    assert_int_equal(sy_shadow_report_size(rep), 5);
    const struct sy_shadow_fp *other = sy_shadow_report_entry(rep, 4);
    assert_string_equal(other->text, "(other)");
    assert_int_equal(other->count, 6);
    assert_int_equal(sy_shadow_report_totals(rep)->overflow, 6);
    assert_int_equal(sy_shadow_report_entry(rep, 0)->count, 11);

    /* A long fingerprint text is cut to the bound. */
    char big[2000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    sy_shadow_report_reset(rep);
    sy_shadow_report_add(rep, big, 77, SY_SHADOW_MATCH, 1, 1, NULL, 0);
    sy_shadow_report_add(rep, NULL, 78, SY_SHADOW_MATCH, 1, 1, NULL, 0);
    assert_int_equal(strlen(sy_shadow_report_entry(rep, 0)->text), SY_SHADOW_FP_TEXT - 1);
    assert_string_equal(sy_shadow_report_entry(rep, 1)->text, "");
    sy_shadow_report_destroy(rep);
}

#define SEC 1000000ull /* microseconds */

/* The gate's counts are exact per fingerprint over the window, to its bucket's width (1 s for
 * the default 10-minute window): 1,000 real divergences of one fingerprint count 1,000 and it
 * is named first; buckets older than the window stop counting and are dropped. */
static void test_report_gate_counts(void **state)
{
    (void)state;
    struct sy_shadow_report *rep = sy_shadow_report_new(0);
    assert_non_null(rep);
    assert_int_equal(sy_shadow_report_bucket_us(rep), SEC);
    struct sy_shadow_example ex = example("columns", "id type 23 format 0");
    uint64_t t0 = 1000 * SEC;
    for (uint64_t k = 0; k < 1000; k++) /* 1,000 in 100 s */
        sy_shadow_report_add(rep, "select id from t", 7, SY_SHADOW_REAL, 1, 1, k ? NULL : &ex,
                             t0 + k * (SEC / 10));
    for (uint64_t k = 0; k < 3; k++)
        sy_shadow_report_add(rep, "b", 8, SY_SHADOW_REAL, 1, 1, NULL, t0 + k * SEC);
    sy_shadow_report_add(rep, "c", 9, SY_SHADOW_INCONCLUSIVE, 1, 1, NULL, t0);
    sy_shadow_report_add(rep, "c", 9, SY_SHADOW_INCONCLUSIVE, 1, 1, NULL, t0 + SEC);
    sy_shadow_report_add(rep, "d", 10, SY_SHADOW_ORDER_ONLY, 1, 1, NULL, t0);
    sy_shadow_report_add(rep, "e", 11, SY_SHADOW_MATCH, 1, 1, NULL, t0);

    unsigned both = 1u << SY_SHADOW_REAL | 1u << SY_SHADOW_INCONCLUSIVE;
    struct sy_shadow_gate_fp out[4];
    uint64_t total = 0;
    assert_int_equal(sy_shadow_report_gate(rep, 0, both, out, 4, &total), 3);
    assert_int_equal(total, 1005);
    assert_int_equal(out[0].fp_hash, 7);
    assert_string_equal(out[0].fingerprint, "select id from t");
    assert_int_equal(out[0].count, 1000);
    assert_int_equal(out[0].by_class[SY_SHADOW_GATE_REAL], 1000);
    assert_int_equal(out[0].example_class, SY_SHADOW_REAL);
    assert_non_null(out[0].example);
    assert_string_equal(out[0].example->blue, "id type 23 format 0");
    assert_int_equal(out[0].last_real_us, t0 + 999 * (SEC / 10));
    assert_int_equal(out[1].fp_hash, 8);
    assert_int_equal(out[1].count, 3);
    assert_int_equal(out[2].fp_hash, 9);
    assert_int_equal(out[2].count, 2);
    assert_int_equal(out[2].by_class[SY_SHADOW_GATE_INCONCLUSIVE], 2);
    assert_null(out[2].example);
    /* Without inconclusive (shadow_gate_inconclusive = allow). */
    assert_int_equal(sy_shadow_report_gate(rep, 0, 1u << SY_SHADOW_REAL, out, 4, &total), 2);
    assert_int_equal(total, 1003);
    /* Only the top of the list is filled; the count and the total are of all. */
    assert_int_equal(sy_shadow_report_gate(rep, 0, both, out, 1, &total), 3);
    assert_int_equal(out[0].fp_hash, 7);
    assert_int_equal(total, 1005);
    assert_int_equal(sy_shadow_report_gate(rep, 0, both, NULL, 0, NULL), 3);

    /* A window starting at t0 + 50 s counts the buckets from there: 500 of the first. */
    assert_int_equal(sy_shadow_report_gate(rep, t0 + 50 * SEC, both, out, 4, &total), 1);
    assert_int_equal(out[0].count, 500);
    assert_int_equal(total, 500);
    /* A start inside a bucket counts that bucket whole (exact to the bucket's width). */
    assert_int_equal(sy_shadow_report_gate(rep, t0 + 50 * SEC + 1, both, out, 4, &total), 1);
    assert_int_equal(total, 500);
    assert_int_equal(sy_shadow_report_gate(rep, t0 + 51 * SEC, both, out, 4, &total), 1);
    assert_int_equal(total, 490);

    /* Ageing: a real divergence of "b" 11 minutes later drops its buckets older than the
     * 10-minute window; what is left is the new one. */
    const struct sy_shadow_fp *b = sy_shadow_report_entry(rep, 1);
    assert_int_equal(b->gate_len, 3);
    sy_shadow_report_add(rep, "b", 8, SY_SHADOW_REAL, 1, 1, NULL, t0 + 660 * SEC);
    assert_int_equal(b->gate_len, 1);
    assert_int_equal(b->by_class[SY_SHADOW_REAL], 4); /* the report still counts them all */
    uint64_t since = t0 + 60 * SEC;
    assert_int_equal(sy_shadow_report_gate(rep, since, both, out, 4, &total), 2);
    assert_int_equal(out[0].fp_hash, 7); /* 400 left in the window */
    assert_int_equal(out[0].count, 400);
    assert_int_equal(out[1].fp_hash, 8);
    assert_int_equal(out[1].count, 1);
    /* A fingerprint's buckets stay bounded however long it diverges: one per second. */
    for (uint64_t k = 0; k < 2000; k++)
        sy_shadow_report_add(rep, "b", 8, SY_SHADOW_REAL, 1, 1, NULL, t0 + 700 * SEC + k * SEC);
    assert_true(b->gate_len <= SY_SHADOW_GATE_BUCKETS + 2);
    assert_int_equal(sy_shadow_report_gate(rep, t0 + 2100 * SEC, 1u << SY_SHADOW_REAL, out, 4,
                                           &total), 1);
    assert_int_equal(total, 600);

    /* A longer window: buckets merge to its width (1 h: 6 s), counts unchanged. */
    sy_shadow_report_reset(rep);
    for (uint64_t k = 0; k < 60; k++) /* from 1,200 s: a multiple of 6 s */
        sy_shadow_report_add(rep, "a", 1, SY_SHADOW_REAL, 1, 1, NULL, 1200 * SEC + k * SEC);
    assert_int_equal(sy_shadow_report_set_window(rep, 3600 * SEC), 0);
    assert_int_equal(sy_shadow_report_bucket_us(rep), 6 * SEC);
    assert_int_equal(sy_shadow_report_entry(rep, 0)->gate_len, 10);
    assert_int_equal(sy_shadow_report_gate(rep, 0, both, out, 4, &total), 1);
    assert_int_equal(total, 60);
    /* A shorter one cannot split buckets: it waits for a reset. */
    assert_int_equal(sy_shadow_report_set_window(rep, 60 * SEC), 0);
    assert_int_equal(sy_shadow_report_bucket_us(rep), 6 * SEC);
    sy_shadow_report_reset(rep);
    assert_int_equal(sy_shadow_report_bucket_us(rep), SEC);
    assert_int_equal(sy_shadow_report_gate(rep, 0, both, out, 4, &total), 0);
    assert_int_equal(total, 0);
    sy_shadow_report_destroy(rep);
}

/* A recheck moves divergences from real to nondeterministic: the counts, the examples and the
 * gate's buckets stay consistent (each leaves the bucket it was added in). */
static void test_report_reclass(void **state)
{
    (void)state;
    struct sy_shadow_report *rep = sy_shadow_report_new(0);
    assert_non_null(rep);
    struct sy_shadow_example ex_real = example("row_data", "'1'");
    struct sy_shadow_example ex_nd = example("row_data", "'2'");
    for (uint64_t t = 100; t <= 300; t += 100)
        sy_shadow_report_add(rep, "a", 1, SY_SHADOW_REAL, 1, 1, t == 100 ? &ex_real : NULL,
                             t * SEC);
    sy_shadow_report_add(rep, "a", 1, SY_SHADOW_MATCH, 1, 1, NULL, 350 * SEC);
    const struct sy_shadow_fp *a = sy_shadow_report_entry(rep, 0);
    unsigned real = 1u << SY_SHADOW_REAL;

    /* The newest one: the latest real time falls back to the one before. */
    assert_int_equal(sy_shadow_report_reclass(rep, 1, SY_SHADOW_REAL, SY_SHADOW_NONDETERMINISTIC,
                                              300 * SEC, &ex_nd), 0);
    assert_int_equal(a->count, 4);
    assert_int_equal(a->by_class[SY_SHADOW_REAL], 2);
    assert_int_equal(a->by_class[SY_SHADOW_NONDETERMINISTIC], 1);
    assert_int_equal(a->by_class[SY_SHADOW_MATCH], 1);
    assert_int_equal(a->last_real_us, 200 * SEC);
    assert_non_null(a->examples[SY_SHADOW_NONDETERMINISTIC]);
    assert_string_equal(a->examples[SY_SHADOW_NONDETERMINISTIC]->blue, "'2'");
    assert_non_null(a->examples[SY_SHADOW_REAL]); /* real ones are left */
    const struct sy_shadow_totals *t = sy_shadow_report_totals(rep);
    assert_int_equal(t->by_class[SY_SHADOW_REAL], 2);
    assert_int_equal(t->by_class[SY_SHADOW_NONDETERMINISTIC], 1);
    assert_int_equal(t->compared, 4);
    struct sy_shadow_gate_fp out[2];
    uint64_t total;
    assert_int_equal(sy_shadow_report_gate(rep, 150 * SEC, real, out, 2, &total), 1);
    assert_int_equal(out[0].count, 1); /* 200 s; 300 s moved out of its bucket */
    assert_int_equal(out[0].last_real_us, 200 * SEC);

    /* The oldest, then the last: the real example goes with the last real one. */
    assert_int_equal(sy_shadow_report_reclass(rep, 1, SY_SHADOW_REAL, SY_SHADOW_NONDETERMINISTIC,
                                              100 * SEC, NULL), 0);
    assert_int_equal(sy_shadow_report_gate(rep, 0, real, out, 2, &total), 1);
    assert_int_equal(out[0].count, 1);
    assert_int_equal(sy_shadow_report_gate(rep, 150 * SEC, real, out, 2, &total), 1);
    assert_int_equal(out[0].count, 1); /* the one left is at 200 s: the right bucket lost one */
    assert_int_equal(out[0].last_real_us, 200 * SEC);
    assert_int_equal(sy_shadow_report_reclass(rep, 1, SY_SHADOW_REAL, SY_SHADOW_NONDETERMINISTIC,
                                              200 * SEC, NULL), 0);
    assert_int_equal(a->by_class[SY_SHADOW_REAL], 0);
    assert_int_equal(a->by_class[SY_SHADOW_NONDETERMINISTIC], 3);
    assert_null(a->examples[SY_SHADOW_REAL]);
    assert_string_equal(a->examples[SY_SHADOW_NONDETERMINISTIC]->blue, "'2'"); /* the first kept */
    assert_int_equal(a->last_real_us, 0);
    assert_int_equal(sy_shadow_report_gate(rep, 0, real, out, 2, &total), 0);
    assert_int_equal(total, 0);

    /* Nothing left to move, unknown fingerprints and bad classes move nothing. */
    assert_int_equal(sy_shadow_report_reclass(rep, 1, SY_SHADOW_REAL, SY_SHADOW_NONDETERMINISTIC,
                                              200 * SEC, NULL), -1);
    assert_int_equal(sy_shadow_report_reclass(rep, 99, SY_SHADOW_NONDETERMINISTIC,
                                              SY_SHADOW_REAL, 0, NULL), -1);
    assert_int_equal(sy_shadow_report_reclass(rep, 1, SY_SHADOW_NONDETERMINISTIC,
                                              SY_SHADOW_NONDETERMINISTIC, 0, NULL), -1);
    assert_int_equal(sy_shadow_report_reclass(rep, 1, SY_SHADOW_MATCH, SY_SHADOW_REAL, 0, NULL),
                     -1);
    assert_int_equal(sy_shadow_report_reclass(rep, 1, SY_SHADOW_NONDETERMINISTIC,
                                              (enum sy_shadow_class)SY_SHADOW_NCLASSES, 0, NULL),
                     -1);
    assert_int_equal(t->by_class[SY_SHADOW_NONDETERMINISTIC], 3);

    /* Order-only moves too; moving back to real enters the bucket of its time. */
    sy_shadow_report_add(rep, "b", 2, SY_SHADOW_ORDER_ONLY, 1, 1, NULL, 400 * SEC);
    assert_int_equal(sy_shadow_report_reclass(rep, 2, SY_SHADOW_ORDER_ONLY,
                                              SY_SHADOW_NONDETERMINISTIC, 400 * SEC, NULL), 0);
    assert_int_equal(sy_shadow_report_entry(rep, 1)->by_class[SY_SHADOW_ORDER_ONLY], 0);
    assert_int_equal(sy_shadow_report_reclass(rep, 2, SY_SHADOW_NONDETERMINISTIC, SY_SHADOW_REAL,
                                              450 * SEC, NULL), 0);
    assert_int_equal(sy_shadow_report_gate(rep, 0, real, out, 2, &total), 1);
    assert_int_equal(out[0].fp_hash, 2);
    assert_int_equal(out[0].last_real_us, 450 * SEC);
    assert_int_equal(sy_shadow_report_gate(rep, 451 * SEC, real, out, 2, &total), 0);

    /* Many in one fingerprint: 1,000 real ones over 1000 .. 1099 s, ten per second. Moving the
     * one at 1007.5 s out takes it from the 1007 s bucket only; the count stays exact however
     * many there are (no ring of recent times to fall out of). */
    for (uint64_t k = 0; k < 1000; k++)
        sy_shadow_report_add(rep, "c", 3, SY_SHADOW_REAL, 1, 1, NULL, 1000 * SEC + k * SEC / 10);
    assert_int_equal(sy_shadow_report_reclass(rep, 3, SY_SHADOW_REAL, SY_SHADOW_NONDETERMINISTIC,
                                              1007 * SEC + SEC / 2, NULL), 0);
    assert_int_equal(sy_shadow_report_gate(rep, 1000 * SEC, real, out, 2, &total), 1);
    assert_int_equal(out[0].fp_hash, 3);
    assert_int_equal(out[0].count, 999);
    assert_int_equal(sy_shadow_report_gate(rep, 1007 * SEC, real, out, 2, &total), 1);
    assert_int_equal(out[0].count, 929); /* 1007 s on: 930 added, one moved out */
    assert_int_equal(sy_shadow_report_gate(rep, 1008 * SEC, real, out, 2, &total), 1);
    assert_int_equal(out[0].count, 920); /* the 1008 s bucket and later: untouched */
    assert_int_equal(sy_shadow_report_entry(rep, 2)->by_class[SY_SHADOW_REAL], 999);
    /* To inconclusive: counted by a gate that counts inconclusive, not by one that does not. */
    assert_int_equal(sy_shadow_report_reclass(rep, 3, SY_SHADOW_REAL, SY_SHADOW_INCONCLUSIVE,
                                              1050 * SEC, NULL), 0);
    assert_int_equal(sy_shadow_report_gate(rep, 1000 * SEC, real, out, 2, &total), 1);
    assert_int_equal(total, 998);
    assert_int_equal(sy_shadow_report_gate(rep, 1000 * SEC, real | 1u << SY_SHADOW_INCONCLUSIVE,
                                           out, 2, &total), 1);
    assert_int_equal(total, 999);
    assert_int_equal(out[0].by_class[SY_SHADOW_GATE_INCONCLUSIVE], 1);
    /* A time whose bucket holds none of the class moves the counts only. */
    assert_int_equal(sy_shadow_report_reclass(rep, 3, SY_SHADOW_REAL, SY_SHADOW_NONDETERMINISTIC,
                                              5000 * SEC, NULL), 0);
    assert_int_equal(sy_shadow_report_gate(rep, 1000 * SEC, real, out, 2, &total), 1);
    assert_int_equal(total, 998);
    assert_int_equal(sy_shadow_report_entry(rep, 2)->by_class[SY_SHADOW_REAL], 997);

    /* A reset forgets the entries: nothing to move. */
    sy_shadow_report_reset(rep);
    assert_int_equal(sy_shadow_report_reclass(rep, 1, SY_SHADOW_NONDETERMINISTIC, SY_SHADOW_REAL,
                                              0, NULL), -1);
    sy_shadow_report_destroy(rep);
}

static json_object *get(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!json_object_object_get_ex(o, key, &v))
        fail_msg("no key \"%s\" in %s", key, json_object_to_json_string(o));
    return v;
}

static void test_report_json_and_table(void **state)
{
    (void)state;
    struct sy_shadow_report *rep = sy_shadow_report_new(0);
    assert_non_null(rep);
    struct sy_shadow_example ex = example("row_data", "'b\xff'");
    for (int i = 0; i < 10; i++)
        sy_shadow_report_add(rep, "select busy", 1, SY_SHADOW_MATCH, 100 + i, 200 + i, NULL, 0);
    sy_shadow_report_add(rep, "select real \xc3\xa9\xff", 2, SY_SHADOW_REAL, 10, 20, &ex, 5);
    sy_shadow_report_add(rep, "select real \xc3\xa9\xff", 2, SY_SHADOW_MATCH, 10, 20, NULL, 6);
    sy_shadow_report_add(rep, "select order", 3, SY_SHADOW_ORDER_ONLY, 10, -1, NULL, 7);
    sy_shadow_report_bump(rep, SY_SHADOW_CTR_MIRRORED, 13);
    sy_shadow_report_bump(rep, SY_SHADOW_CTR_RECHECKS, 3);
    sy_shadow_report_bump(rep, SY_SHADOW_CTR_RECHECK_NONDET, 2);
    sy_shadow_report_bump(rep, SY_SHADOW_CTR_RECHECK_INCONCLUSIVE, 1);
    sy_shadow_report_bump(rep, SY_SHADOW_CTR_RECHECK_DROPPED, 4);

    json_object *j = sy_shadow_report_json(rep);
    assert_non_null(j);
    /* Through text and back, as a consumer would see it. */
    const char *text = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN);
    json_object *back = json_tokener_parse(text);
    assert_non_null(back);
    json_object *fps = get(back, "fingerprints");
    assert_int_equal(json_object_array_length(fps), 3);
    json_object *first = json_object_array_get_idx(fps, 0);
    assert_string_equal(json_object_get_string(get(first, "fingerprint")), "select real \xc3\xa9?");
    assert_int_equal(json_object_get_int64(get(first, "count")), 2);
    assert_int_equal(json_object_get_int64(get(first, "matches")), 1);
    json_object *div = get(first, "divergences");
    for (int c = SY_SHADOW_REAL; c < SY_SHADOW_NCLASSES; c++)
        get(div, sy_shadow_class_name((enum sy_shadow_class)c));
    assert_int_equal(json_object_get_int64(get(div, "real")), 1);
    json_object *blue = get(get(first, "latency_us"), "blue");
    assert_int_equal(json_object_get_int64(get(blue, "p50")), 10);
    get(blue, "p99");
    get(get(get(first, "latency_us"), "green"), "p50");
    json_object *exj = get(get(first, "examples"), "real");
    assert_string_equal(json_object_get_string(get(exj, "what")), "row_data");
    assert_string_equal(json_object_get_string(get(exj, "column")), "col");
    assert_int_equal(json_object_get_int64(get(exj, "row")), 7);
    assert_string_equal(json_object_get_string(get(exj, "blue")), "'b?'");
    assert_string_equal(json_object_get_string(get(exj, "green")), "'g'");
    /* Then the other divergence, then the busy one; an unknown green latency is null. */
    json_object *second = json_object_array_get_idx(fps, 1);
    assert_string_equal(json_object_get_string(get(second, "fingerprint")), "select order");
    assert_null(get(get(get(second, "latency_us"), "green"), "p50"));
    json_object *third = json_object_array_get_idx(fps, 2);
    assert_int_equal(json_object_get_int64(get(third, "count")), 10);
    int64_t p50 = json_object_get_int64(get(get(get(third, "latency_us"), "blue"), "p50"));
    assert_in_range(p50, 101, 107); /* 104 within the histogram's 3.2% */

    json_object *totals = get(back, "totals");
    assert_int_equal(json_object_get_int64(get(totals, "statements_mirrored")), 13);
    assert_int_equal(json_object_get_int64(get(totals, "compared")), 13);
    assert_int_equal(json_object_get_int64(get(totals, "matches")), 11);
    assert_int_equal(json_object_get_int64(get(get(totals, "divergences"), "order_only")), 1);
    get(totals, "sessions_shadowed");
    get(totals, "suspended");
    get(totals, "skipped");
    get(totals, "fingerprints");
    get(totals, "fingerprint_overflow");
    json_object *rechecks = get(totals, "rechecks");
    assert_int_equal(json_object_get_int64(get(rechecks, "run")), 3);
    assert_int_equal(json_object_get_int64(get(rechecks, "nondeterministic")), 2);
    assert_int_equal(json_object_get_int64(get(rechecks, "inconclusive")), 1);
    assert_int_equal(json_object_get_int64(get(rechecks, "dropped")), 4);
    json_object_put(back);
    json_object_put(j);

    char *table = sy_shadow_report_table(rep);
    assert_non_null(table);
    assert_non_null(strstr(table, "FINGERPRINT"));
    assert_non_null(strstr(table, "select busy"));
    assert_non_null(strstr(table, "real: row_data column \"col\" row 7: blue 'b"));
    assert_true(strstr(table, "select real") < strstr(table, "select busy"));
    assert_non_null(strstr(table, "mirrored 13"));
    assert_non_null(strstr(table, "rechecks on blue: run 3, nondeterministic 2, inconclusive 1, "
                                  "dropped 4"));
    free(table);

    /* An empty report renders too. */
    sy_shadow_report_reset(rep);
    j = sy_shadow_report_json(rep);
    assert_int_equal(json_object_array_length(get(j, "fingerprints")), 0);
    json_object_put(j);
    table = sy_shadow_report_table(rep);
    assert_non_null(table);
    free(table);
    sy_shadow_report_destroy(rep);
}

/* ---- Seed corpus for the fuzz targets ---- */

static int write_file(const char *dir, const char *name, const void *bytes, size_t len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(bytes, 1, len, f) != len) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        if (f)
            fclose(f);
        return 1;
    }
    return fclose(f) != 0;
}

/* A fuzz_shadow_result record: type, 2-byte big-endian length, payload. */
static void record(uint8_t *out, size_t *n, const struct msg *m)
{
    out[(*n)++] = m->type;
    out[(*n)++] = (uint8_t)(m->len >> 8);
    out[(*n)++] = (uint8_t)m->len;
    memcpy(out + *n, m->body, m->len);
    *n += m->len;
}

static int write_corpus(const char *root)
{
    char dir[4096];
    int rc = 0;
    const char *sub[] = {"pg_fingerprint", "shadow_result"};
    for (int i = 0; i < 2; i++) {
        snprintf(dir, sizeof(dir), "%s/%s", root, sub[i]);
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            fprintf(stderr, "cannot create %s: %s\n", dir, strerror(errno));
            return 1;
        }
    }
    snprintf(dir, sizeof(dir), "%s/pg_fingerprint", root);
    const char *sqls[][2] = {
        {"literals", "SELECT E'it\\'s', $t$x$t$, B'01', 1.5e-3, -2 FROM t1 WHERE a IN (1, 2, 3)"},
        {"values", "INSERT INTO \"T\" (a, b) VALUES (1, 'x'), (2, 'y') RETURNING id; ;"},
        {"comments", "SELECT /* a /* nested */ */ now() -- c\n, ARRAY[$1, $2] FROM t TABLESAMPLE x"},
        {"unterminated", "SELECT 'abc /* $q$ \"id"},
    };
    for (size_t i = 0; i < sizeof(sqls) / sizeof(sqls[0]); i++)
        rc |= write_file(dir, sqls[i][0], sqls[i][1], strlen(sqls[i][1]));

    snprintf(dir, sizeof(dir), "%s/shadow_result", root);
    static uint8_t buf[8192];
    size_t n = 0;
    struct msg m = m_row_desc(2, COLS3, (const uint32_t[]){23, 25}, 0);
    record(buf, &n, &m);
    m = m_data_row(2, (const char *const[]){"1", NULL});
    record(buf, &n, &m);
    m = m_data_row(2, (const char *const[]){"2", "two"});
    record(buf, &n, &m);
    m = m_complete("SELECT 2");
    record(buf, &n, &m);
    rc |= write_file(dir, "select", buf, n);
    n = 0;
    m = m_complete("INSERT 0 3");
    record(buf, &n, &m);
    m = m_error("23505", "duplicate key value violates unique constraint");
    record(buf, &n, &m);
    rc |= write_file(dir, "insert_error", buf, n);
    n = 0;
    m = (struct msg){'I', 0, {0}};
    record(buf, &n, &m);
    m = (struct msg){'d', 6, "a\tb\tc\n"};
    record(buf, &n, &m);
    m = m_complete("COPY 1");
    record(buf, &n, &m);
    rc |= write_file(dir, "copy_empty", buf, n);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
        return write_corpus(argv[2]);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(guard_test_traps),
        cmocka_unit_test(test_fp_literals),
        cmocka_unit_test(test_fp_comments_space_case),
        cmocka_unit_test(test_fp_lists),
        cmocka_unit_test(test_fp_unterminated),
        cmocka_unit_test(test_fp_truncation),
        cmocka_unit_test(test_fp_hash_and_idempotence),
        cmocka_unit_test(test_volatile),
        cmocka_unit_test(test_pg_body_decoders),
        cmocka_unit_test(test_result_fixture),
        cmocka_unit_test(test_result_tags),
        cmocka_unit_test(test_result_errors),
        cmocka_unit_test(test_result_malformed),
        cmocka_unit_test(test_result_multi_statement),
        cmocka_unit_test(test_compare_match_and_status),
        cmocka_unit_test(test_compare_tags_and_counts),
        cmocka_unit_test(test_compare_columns),
        cmocka_unit_test(test_compare_row_count_and_value),
        cmocka_unit_test(test_compare_order_and_duplicates),
        cmocka_unit_test(test_compare_hints),
        cmocka_unit_test(test_compare_values_rendering),
        cmocka_unit_test(test_result_bounded),
        cmocka_unit_test(test_accept_widened_int),
        cmocka_unit_test(test_accept_numeric_scale),
        cmocka_unit_test(test_accept_renamed_column),
        cmocka_unit_test(test_accept_binary_int),
        cmocka_unit_test(test_accept_whole_statement),
        cmocka_unit_test(test_report_aggregate),
        cmocka_unit_test(test_report_percentiles),
        cmocka_unit_test(test_report_overflow),
        cmocka_unit_test(test_report_gate_counts),
        cmocka_unit_test(test_report_reclass),
        cmocka_unit_test(test_report_json_and_table),
    };
    return cmocka_run_group_tests(tests, guard_setup, guard_teardown);
}
