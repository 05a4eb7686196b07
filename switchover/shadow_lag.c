/* The shadow's lag check, its pure part. See shadow_lag.h. */
#include "shadow_lag.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/pg/pg_proto.h"

const char *sy_lag_verdict_name(enum sy_lag_verdict v)
{
    switch (v) {
    case SY_LAG_RETRY: return "retry";
    case SY_LAG_LAG: return "replication_lag";
    case SY_LAG_REAL: return "real";
    case SY_LAG_NONDETERMINISTIC: return "nondeterministic";
    case SY_LAG_INCONCLUSIVE: return "inconclusive";
    default: return "unknown";
    }
}

enum sy_lag_verdict sy_lag_decide(const struct sy_lag_round *r)
{
    if (!r->b2_ok || !r->g2_ok || !r->b3_ok)
        return SY_LAG_INCONCLUSIVE;
    /* Blue differing from itself within one snapshot: no write explains it, so no lag either. */
    if (r->b2_twice && !r->b2_self_eq)
        return SY_LAG_NONDETERMINISTIC;
    /* Green, past L, gave an answer blue gave: green is right once it has blue's data. */
    if (r->g2_eq_b2 || r->g2_eq_b3)
        return SY_LAG_LAG;
    /* Blue's answer was the same before L and after G2, and green had everything up to L: green
     * answered from a state between the two, where blue's answer was that same one. */
    if (r->b2_eq_b3)
        return SY_LAG_REAL;
    return SY_LAG_RETRY;
}

int sy_lag_candidate(const char *what)
{
    return strcmp(what, "rows_affected") == 0 || strcmp(what, "row_count") == 0 ||
           strcmp(what, "row_data") == 0;
}

enum sy_shadow_class sy_lag_class(enum sy_lag_verdict v)
{
    switch (v) {
    case SY_LAG_LAG: return SY_SHADOW_REPLICATION_LAG;
    case SY_LAG_REAL: return SY_SHADOW_REAL;
    case SY_LAG_NONDETERMINISTIC: return SY_SHADOW_NONDETERMINISTIC;
    default: return SY_SHADOW_INCONCLUSIVE;
    }
}

int sy_lag_same(const struct sy_shadow_result *a, const struct sy_shadow_result *b,
                const struct sy_shadow_hints *h)
{
    enum sy_shadow_class c = sy_shadow_compare(a, b, h, NULL);
    return c == SY_SHADOW_MATCH || c == SY_SHADOW_ORDER_ONLY || c == SY_SHADOW_ACCEPTED;
}

/* ---- answers read through libpq, fed as backend messages ---- */

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* Feeds the n bytes at b as a message of type t, and frees b when it is not stack. */
static int feed(struct sy_shadow_result *r, uint8_t t, uint8_t *b, size_t n, uint8_t *stack)
{
    int rc = sy_shadow_result_feed(r, t, b, n);
    if (b != stack)
        free(b);
    return rc;
}

#define STACK_MSG 1024

int sy_lag_feed_columns(struct sy_shadow_result *r, int ncols, const char *const *names,
                        const uint32_t *types, const int32_t *mods)
{
    if (ncols < 0 || ncols > UINT16_MAX)
        return PG_E_TOO_LARGE;
    size_t n = 2;
    for (int i = 0; i < ncols; i++)
        n += strlen(names[i]) + 1 + 18;
    uint8_t stack[STACK_MSG], *b = n <= sizeof(stack) ? stack : malloc(n);
    if (!b)
        return PG_E_TOO_LARGE;
    size_t o = 2;
    put_u16(b, (uint16_t)ncols);
    for (int i = 0; i < ncols; i++) {
        size_t l = strlen(names[i]) + 1;
        memcpy(b + o, names[i], l);
        o += l;
        pg_put_u32(b + o, 0);          /* table OID */
        put_u16(b + o + 4, 0);         /* attribute number */
        pg_put_u32(b + o + 6, types[i]);
        put_u16(b + o + 10, 0xffff);   /* type length: not compared */
        pg_put_u32(b + o + 12, (uint32_t)mods[i]);
        put_u16(b + o + 16, 0);        /* text */
        o += 18;
    }
    return feed(r, PG_BE_ROW_DESCRIPTION, b, o, stack);
}

int sy_lag_feed_row(struct sy_shadow_result *r, int ncols, const char *const *vals,
                    const int *lens)
{
    if (ncols < 0 || ncols > UINT16_MAX)
        return PG_E_TOO_LARGE;
    size_t n = 2;
    for (int i = 0; i < ncols; i++)
        n += 4 + (vals[i] && lens[i] > 0 ? (size_t)lens[i] : 0);
    uint8_t stack[STACK_MSG], *b = n <= sizeof(stack) ? stack : malloc(n);
    if (!b)
        return PG_E_TOO_LARGE;
    size_t o = 2;
    put_u16(b, (uint16_t)ncols);
    for (int i = 0; i < ncols; i++) {
        size_t l = vals[i] && lens[i] > 0 ? (size_t)lens[i] : 0;
        pg_put_u32(b + o, vals[i] ? (uint32_t)l : 0xffffffffu);
        if (l)
            memcpy(b + o + 4, vals[i], l);
        o += 4 + l;
    }
    return feed(r, PG_BE_DATA_ROW, b, o, stack);
}

int sy_lag_feed_complete(struct sy_shadow_result *r, const char *tag)
{
    uint8_t b[256];
    size_t l = strnlen(tag, sizeof(b) - 1);
    memcpy(b, tag, l);
    b[l] = 0;
    return sy_shadow_result_feed(r, PG_BE_COMMAND_COMPLETE, b, l + 1);
}

int sy_lag_feed_error(struct sy_shadow_result *r, const char *sqlstate, const char *message)
{
    uint8_t b[512];
    size_t o = 0;
    b[o++] = 'S';
    memcpy(b + o, "ERROR", 6);
    o += 6;
    b[o++] = 'C';
    size_t sl = strnlen(sqlstate, 5);
    memcpy(b + o, sqlstate, sl);
    o += sl;
    b[o++] = 0;
    b[o++] = 'M';
    size_t ml = strnlen(message, sizeof(b) - o - 2);
    memcpy(b + o, message, ml);
    o += ml;
    b[o++] = 0;
    b[o++] = 0;
    return sy_shadow_result_feed(r, PG_BE_ERROR, b, o);
}
