/*
 * Schema compatibility (switchover/schema.c): which type changes a replicated column may make,
 * and what the comparison of two catalogs refuses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "switchover/schema.h"

struct pair {
    const char *from, *to;
    int want;
};

static void test_type_accepts(void **state)
{
    (void)state;
    static const struct pair cases[] = {
        {"integer", "integer", 1},
        {"smallint", "integer", 1},
        {"integer", "bigint", 1},
        {"smallint", "bigint", 1},
        {"bigint", "integer", 0},
        {"integer", "smallint", 0},
        {"integer", "numeric", 1},
        {"bigint", "numeric(19,0)", 1},
        {"bigint", "numeric(18,0)", 0},
        {"integer", "numeric(12,2)", 1},
        {"integer", "numeric(11,2)", 0},
        {"numeric", "integer", 0},
        {"numeric(10,2)", "numeric", 1},
        {"numeric(10,2)", "numeric(12,2)", 1},
        {"numeric(10,2)", "numeric(11,3)", 1},
        {"numeric(10,2)", "numeric(10,3)", 0}, /* 8 integer digits, not 7 */
        {"numeric(10,2)", "numeric(10,1)", 0}, /* a scale that rounds */
        {"numeric", "numeric(30,10)", 0},
        {"real", "double precision", 1},
        {"double precision", "real", 0},
        {"character varying(20)", "character varying(40)", 1},
        {"character varying(20)", "character varying(10)", 0},
        {"character varying(20)", "text", 1},
        {"character varying(20)", "character varying", 1},
        {"text", "character varying", 1},
        {"text", "character varying(100)", 0},
        {"character varying", "character varying(100)", 0},
        {"character(5)", "character(8)", 1},
        {"character(5)", "text", 1},
        {"text", "character(10)", 0},
        {"character varying(5)", "character(8)", 0},
        {"timestamp(3) without time zone", "timestamp without time zone", 1},
        {"timestamp without time zone", "timestamp(3) without time zone", 0},
        {"timestamp without time zone", "timestamp with time zone", 0},
        {"time(2) with time zone", "time(4) with time zone", 1},
        {"integer[]", "bigint[]", 1},
        {"bigint[]", "integer[]", 0},
        {"integer[]", "integer", 0},
        {"integer", "text", 0}, /* accepted by text's input, but the column's meaning changed */
        {"jsonb", "json", 0},
        {"json", "jsonb", 0}, /* jsonb refuses \u0000 */
        {"mood", "mood", 1},
        {"uuid", "text", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = sy_schema_type_accepts(cases[i].from, cases[i].to);
        if (got != cases[i].want)
            fail_msg("%s -> %s: got %d, want %d", cases[i].from, cases[i].to, got, cases[i].want);
    }
}

static struct sy_schema_col col(const char *table, const char *column, const char *type,
                                int not_null, int has_default)
{
    struct sy_schema_col c = {.not_null = not_null, .has_default = has_default};
    snprintf(c.schema, sizeof(c.schema), "public");
    snprintf(c.table, sizeof(c.table), "%s", table);
    snprintf(c.column, sizeof(c.column), "%s", column);
    snprintf(c.type, sizeof(c.type), "%s", type);
    return c;
}

static void test_compare_same(void **state)
{
    (void)state;
    struct sy_schema_col s[] = {col("t", "id", "integer", 1, 0), col("t", "v", "text", 0, 0)};
    struct sy_schema_col r[] = {col("t", "v", "text", 0, 0), col("t", "id", "bigint", 1, 0),
                                col("u", "x", "integer", 1, 0)};
    char out[512] = "unchanged";
    int n = sy_schema_compare(s, 2, r, 3, "blue", "green", out, sizeof(out));
    assert_int_equal(n, 0);
    assert_string_equal(out, "");
}

/* Green's migration added a NOT NULL column: the reverse replication (green -> blue) stops at
 * its first row on blue; the forward one (blue -> green) fails every insert on green unless the
 * column has a default. */
static void test_compare_added_not_null(void **state)
{
    (void)state;
    struct sy_schema_col blue[] = {col("acks", "id", "bigint", 1, 1), col("acks", "at", "timestamp with time zone", 0, 1)};
    struct sy_schema_col green[] = {col("acks", "id", "bigint", 1, 1), col("acks", "at", "timestamp with time zone", 0, 1),
                                    col("acks", "extra", "integer", 1, 0)};
    char out[1024];
    int n = sy_schema_compare(green, 3, blue, 2, "green", "blue", out, sizeof(out));
    assert_int_equal(n, 1);
    if (!strstr(out, "column public.acks.extra (integer) is on green but not on blue") ||
        !strstr(out, "ALTER TABLE public.acks ADD COLUMN extra integer"))
        fail_msg("reverse: %s", out);
    n = sy_schema_compare(blue, 2, green, 3, "blue", "green", out, sizeof(out));
    assert_int_equal(n, 1);
    if (!strstr(out, "column public.acks.extra is NOT NULL without a default on green, and blue "
                     "does not send it"))
        fail_msg("forward: %s", out);
    /* With a default on green, the forward direction is fine (the arrays are sorted now). */
    for (int i = 0; i < 3; i++)
        green[i].has_default |= strcmp(green[i].column, "extra") == 0;
    assert_int_equal(sy_schema_compare(blue, 2, green, 3, "blue", "green", out, sizeof(out)), 0);
}

static void test_compare_problems(void **state)
{
    (void)state;
    struct sy_schema_col snd[] = {
        col("orders", "id", "bigint", 1, 0),         col("orders", "total", "numeric(12,2)", 0, 0),
        col("orders", "note", "text", 0, 0),         col("new_table", "a", "integer", 0, 0),
        col("new_table", "b", "integer", 0, 0),
    };
    struct sy_schema_col rcv[] = {
        col("orders", "id", "integer", 1, 0),        col("orders", "total", "numeric(12,2)", 1, 0),
        col("orders", "note", "text", 0, 0),
    };
    char out[2048];
    int n = sy_schema_compare(snd, 5, rcv, 3, "green", "blue", out, sizeof(out));
    assert_int_equal(n, 3);
    if (!strstr(out, "table public.new_table is on green but not on blue") ||
        !strstr(out, "column public.orders.id is bigint on green but integer on blue") ||
        !strstr(out, "column public.orders.total is NOT NULL on blue but may be NULL on green"))
        fail_msg("%s", out);
    /* A small buffer holds whole problems only, and the count is still all of them. */
    char small[200];
    n = sy_schema_compare(snd, 5, rcv, 3, "green", "blue", small, sizeof(small));
    assert_int_equal(n, 3);
    size_t k = strlen(small);
    assert_true(k > 0 && k < sizeof(small));
    assert_int_equal(strncmp(out, small, k), 0);
    assert_true(out[k] == ';'); /* it ends where a problem ends */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_accepts),
        cmocka_unit_test(test_compare_same),
        cmocka_unit_test(test_compare_added_not_null),
        cmocka_unit_test(test_compare_problems),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
