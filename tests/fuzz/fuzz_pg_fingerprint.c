/*
 * libFuzzer target for the SQL fingerprint and the volatility heuristic
 * (protocol/pg/pg_fingerprint.c), on arbitrary bytes.
 *
 * Checks: the input is read from an exact-size copy (ASan catches a read past len); the
 * returned length does not depend on cap; the output is NUL-terminated inside cap, holds no NUL
 * byte before its end, and is a prefix of the whole form cut at most 3 bytes (one UTF-8
 * sequence) short of cap - 1; output buffers are exact-size too; pg_fingerprint_full's hash is
 * the hash of the whole form; the form is at most twice the input plus a few bytes;
 * pg_sql_is_volatile answers 0 or 1, and the same for the form as for the text (where the form
 * cannot have lost or re-quoted anything). Seeds: tests/fuzz/corpus/pg_fingerprint.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/pg/pg_fingerprint.h"
#include "fuzz_common.h"

/* Normalizes into an exact-size buffer of cap bytes and checks it against the whole form. */
static void check_cap(const char *sql, size_t size, const char *full, size_t n, size_t cap)
{
    char *out = malloc(cap);
    CHECK(out != NULL);
    CHECK(pg_fingerprint(sql, size, out, cap) == n);
    size_t k = strlen(out);
    CHECK(k < cap);
    CHECK(memcmp(out, full, k) == 0);
    if (n >= cap)
        CHECK(k + 3 >= cap - 1);
    else
        CHECK(k == n);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *sql = fuzz_exact_copy(data, size);
    size_t n = pg_fingerprint(sql, size, NULL, 0);
    CHECK(n <= 2 * size + 8);

    char *full = malloc(n + 1);
    CHECK(full != NULL);
    uint64_t hash = 0;
    CHECK(pg_fingerprint_full(sql, size, full, n + 1, &hash) == n);
    CHECK(strlen(full) == n);
    CHECK(hash == pg_fingerprint_hash(full, n));

    const size_t caps[] = {1, 2, 3, 7, n / 2 + 1, n, n + 1};
    for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++)
        if (caps[i] > 0)
            check_cap(sql, size, full, n, caps[i]);

    int v = pg_sql_is_volatile(sql, size);
    CHECK(v == 0 || v == 1);
    /* Literals and comments never hold volatility, so the form agrees with the text, unless
       VALUES tuples were folded away or quoting could re-read differently. */
    if (!strstr(full, "...") && !strchr(full, '"') && !strchr(full, '$'))
        CHECK(pg_sql_is_volatile(full, n) == v);
    free(full);
    free(sql);
    return 0;
}
