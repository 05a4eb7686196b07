/*
 * libFuzzer target for the shadow result summary and comparison (switchover/shadow.c), and the
 * report renderings (switchover/shadow_json.c).
 *
 * The input is a stream of records: a type byte, a 2-byte big-endian length, then that many
 * payload bytes (the last record takes what is left). Each payload is fed from an exact-size
 * copy (ASan catches a read past len) to two results, which must then compare as MATCH under
 * every hint but shadow_failed; a third result misses the last record and is compared both
 * ways. Checks: feed answers 0, PG_E_MALFORMED or PG_E_TOO_LARGE; every kept string is
 * terminated inside its array; the bounded detail stays within its bounds; examples are
 * terminated; the report's JSON re-parses. Seeds: tests/fuzz/corpus/shadow_result.
 */
#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/pg/pg_proto.h"
#include "switchover/shadow.h"
#include "fuzz_common.h"

static void check_result(const struct sy_shadow_result *r)
{
    CHECK(memchr(r->sqlstate, 0, sizeof(r->sqlstate)) != NULL);
    CHECK(memchr(r->message, 0, sizeof(r->message)) != NULL);
    CHECK(memchr(r->tag, 0, sizeof(r->tag)) != NULL);
    for (uint32_t i = 0; i < r->ncols && i < SY_SHADOW_COLS_MAX; i++)
        CHECK(memchr(r->cols[i].name, 0, sizeof(r->cols[i].name)) != NULL);
    CHECK(r->row_hash_len <= r->nrows && r->row_hash_len <= SY_SHADOW_ROW_HASHES);
    CHECK(r->sample_rows <= SY_SHADOW_SAMPLE_ROWS && r->sample_rows <= r->nrows);
    CHECK(r->arena_used <= SY_SHADOW_SAMPLE_BYTES && r->arena_used <= r->arena_cap);
    CHECK(r->ncells <= r->cells_cap);
    CHECK(sy_shadow_result_heap_bytes(r) <= SY_SHADOW_RESULT_HEAP_MAX);
    for (uint32_t i = 0; i < r->ncells; i++) {
        const struct sy_shadow_cell *c = &r->cells[i];
        CHECK(c->kept <= SY_SHADOW_VALUE_KEEP);
        CHECK((uint32_t)c->off + c->kept <= r->arena_used);
        CHECK(c->len >= -1 && (c->len < 0 ? c->kept == 0 : c->kept <= (uint32_t)c->len));
    }
}

static void check_example(const struct sy_shadow_example *ex)
{
    CHECK(memchr(ex->what, 0, sizeof(ex->what)) != NULL);
    CHECK(memchr(ex->column, 0, sizeof(ex->column)) != NULL);
    CHECK(memchr(ex->blue, 0, sizeof(ex->blue)) != NULL);
    CHECK(memchr(ex->green, 0, sizeof(ex->green)) != NULL);
    CHECK(ex->row >= -1);
}

/* Feeds the stream's records to r; stops before the record at index stop (SIZE_MAX: none). */
static size_t feed_stream(struct sy_shadow_result *r, const uint8_t *data, size_t size, size_t stop)
{
    size_t pos = 0, n = 0;
    while (pos < size && n != stop) {
        uint8_t type = data[pos++];
        size_t len = 0;
        if (size - pos >= 2)
            len = (size_t)data[pos] << 8 | data[pos + 1];
        pos += size - pos >= 2 ? 2 : size - pos;
        if (len > size - pos)
            len = size - pos;
        uint8_t *payload = fuzz_exact_copy(data + pos, len);
        int rc = sy_shadow_result_feed(r, type, payload, len);
        CHECK(rc == 0 || rc == PG_E_MALFORMED || rc == PG_E_TOO_LARGE);
        free(payload);
        pos += len;
        n++;
    }
    return n;
}

static void check_report(const struct sy_shadow_example *ex, enum sy_shadow_class cls)
{
    struct sy_shadow_report *rep = sy_shadow_report_new(2);
    CHECK(rep != NULL);
    CHECK(sy_shadow_report_add(rep, ex->blue, 1, cls, 10, 20, ex, 1) == 0);
    CHECK(sy_shadow_report_add(rep, ex->green, 2, SY_SHADOW_REAL, 10, -1, ex, 2) == 0);
    CHECK(sy_shadow_report_add(rep, "x", 3, SY_SHADOW_MATCH, 10, 20, ex, 3) == 1);
    json_object *j = sy_shadow_report_json(rep);
    CHECK(j != NULL);
    json_object *back = json_tokener_parse(json_object_to_json_string(j));
    CHECK(back != NULL);
    json_object_put(back);
    json_object_put(j);
    free(sy_shadow_report_table(rep));
    sy_shadow_report_destroy(rep);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sy_shadow_result a, b, c;
    sy_shadow_result_init(&a);
    sy_shadow_result_init(&b);
    sy_shadow_result_init(&c);
    size_t n = feed_stream(&a, data, size, SIZE_MAX);
    feed_stream(&b, data, size, SIZE_MAX);
    check_result(&a);

    struct sy_shadow_example ex;
    const struct sy_shadow_hints hints[] = {
        {0}, {.volatile_stmt = 1}, {.lag_suspected = 1}, {.read_only_shadow = 1},
        {.redact_values = 1},
    };
    for (size_t i = 0; i < sizeof(hints) / sizeof(hints[0]); i++) {
        CHECK(sy_shadow_compare(&a, &b, &hints[i], &ex) == SY_SHADOW_MATCH);
        CHECK(ex.what[0] == 0);
    }
    struct sy_shadow_hints failed = {.shadow_failed = 1};
    CHECK(sy_shadow_compare(&a, &b, &failed, &ex) == SY_SHADOW_SHADOW_ERROR);
    check_example(&ex);

    /* One record fewer on one side: any class, but a well-formed example. */
    if (n > 0) {
        feed_stream(&c, data, size, n - 1);
        check_result(&c);
        enum sy_shadow_class cls = sy_shadow_compare(&a, &c, NULL, &ex);
        CHECK(cls < SY_SHADOW_NCLASSES);
        check_example(&ex);
        check_report(&ex, cls);
        cls = sy_shadow_compare(&c, &a, &hints[4], &ex);
        CHECK(cls < SY_SHADOW_NCLASSES);
        check_example(&ex);
    }
    sy_shadow_result_free(&a);
    sy_shadow_result_free(&b);
    sy_shadow_result_free(&c);
    return 0;
}
