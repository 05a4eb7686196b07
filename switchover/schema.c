/*
 * Schema compatibility of a logical replication (see schema.h).
 */
#include "schema.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- types ---- */

/* A format_type string taken apart: "timestamp(3) without time zone" is key "timestamp
 * without time zone" with modifiers {3}; "numeric(10,2)" is "numeric" with {10, 2}. */
struct type_view {
    char key[128];
    int nmod;
    long mod[2];
    int dims; /* array dimensions ("[]" at the end) */
};

static void type_parse(const char *s, struct type_view *v)
{
    memset(v, 0, sizeof(*v));
    size_t len = strlen(s);
    while (len >= 2 && s[len - 2] == '[' && s[len - 1] == ']') {
        v->dims++;
        len -= 2;
    }
    size_t k = 0;
    for (size_t i = 0; i < len && k + 1 < sizeof(v->key); i++) {
        if (s[i] == '(') {
            char *end;
            const char *p = s + i + 1;
            while (v->nmod < 2) {
                long m = strtol(p, &end, 10);
                if (end == p)
                    break;
                v->mod[v->nmod++] = m;
                p = *end == ',' ? end + 1 : end;
            }
            while (i < len && s[i] != ')')
                i++;
            continue;
        }
        v->key[k++] = s[i];
    }
    v->key[k] = '\0';
}

static int integer_rank(const char *key)
{
    return strcmp(key, "smallint") == 0 ? 1 : strcmp(key, "integer") == 0 ? 2
           : strcmp(key, "bigint") == 0 ? 3 : 0;
}

/* Decimal digits the largest value of an integer type needs. */
static long integer_digits(int rank) { return rank == 1 ? 5 : rank == 2 ? 10 : 19; }

static int is_key(const struct type_view *v, const char *key) { return strcmp(v->key, key) == 0; }

/* character varying(n), character(n), text: the longest value in characters (-1: no limit). */
static int char_limit(const struct type_view *v, long *limit)
{
    if (is_key(v, "text") || ((is_key(v, "character varying")) && v->nmod == 0)) {
        *limit = -1;
        return 1;
    }
    if ((is_key(v, "character varying") || is_key(v, "character")) && v->nmod == 1) {
        *limit = v->mod[0];
        return 1;
    }
    return 0;
}

static int precision_type(const struct type_view *v)
{
    return is_key(v, "timestamp without time zone") || is_key(v, "timestamp with time zone") ||
           is_key(v, "time without time zone") || is_key(v, "time with time zone");
}

static int accepts(const struct type_view *f, const struct type_view *t)
{
    int fi = integer_rank(f->key), ti = integer_rank(t->key);
    if (fi && ti)
        return fi <= ti;
    if ((fi || is_key(f, "numeric")) && is_key(t, "numeric")) {
        if (t->nmod == 0)
            return 1; /* numeric without a modifier takes any number */
        long t_scale = t->nmod > 1 ? t->mod[1] : 0, t_int = t->mod[0] - t_scale;
        if (fi)
            return t_int >= integer_digits(fi);
        if (f->nmod == 0)
            return 0;
        long f_scale = f->nmod > 1 ? f->mod[1] : 0, f_int = f->mod[0] - f_scale;
        return t_scale >= f_scale && t_int >= f_int;
    }
    if (is_key(f, "real") && is_key(t, "double precision"))
        return 1;
    long fl, tl;
    if (char_limit(f, &fl) && char_limit(t, &tl)) {
        if (is_key(t, "character") && (is_key(f, "text") || is_key(f, "character varying")))
            return 0; /* char(m) would pad, and refuses values over m */
        if (is_key(f, "text") || (is_key(f, "character varying") && fl < 0))
            return tl < 0;
        return tl < 0 || tl >= fl;
    }
    if (precision_type(f) && is_key(f, t->key)) {
        long fp = f->nmod ? f->mod[0] : 6, tp = t->nmod ? t->mod[0] : 6;
        return tp >= fp;
    }
    return 0;
}

int sy_schema_type_accepts(const char *from, const char *to)
{
    if (strcmp(from, to) == 0)
        return 1;
    struct type_view f, t;
    type_parse(from, &f);
    type_parse(to, &t);
    if (f.dims != t.dims)
        return 0;
    return accepts(&f, &t);
}

/* ---- comparison ---- */

static int col_cmp(const void *a, const void *b)
{
    const struct sy_schema_col *x = a, *y = b;
    int c = strcmp(x->schema, y->schema);
    if (c == 0)
        c = strcmp(x->table, y->table);
    return c ? c : strcmp(x->column, y->column);
}

static int table_cmp(const struct sy_schema_col *x, const struct sy_schema_col *y)
{
    int c = strcmp(x->schema, y->schema);
    return c ? c : strcmp(x->table, y->table);
}

/* The first column of x's table in the sorted array v (n entries), or NULL. */
static const struct sy_schema_col *table_find(const struct sy_schema_col *v, size_t n,
                                              const struct sy_schema_col *x)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (table_cmp(&v[mid], x) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && table_cmp(&v[lo], x) == 0 ? &v[lo] : NULL;
}

static const struct sy_schema_col *col_find(const struct sy_schema_col *v, size_t n,
                                            const struct sy_schema_col *x)
{
    return bsearch(x, v, n, sizeof(*v), col_cmp);
}

struct problems {
    char *out;
    size_t cap, len;
    int n;
};

static void add(struct problems *p, const char *fmt, ...)
{
    p->n++;
    if (!p->out || p->cap == 0 || p->len + 1 >= p->cap)
        return;
    size_t at = p->len;
    if (at > 0) {
        if (at + 3 >= p->cap)
            return;
        memcpy(p->out + at, "; ", 3);
        at += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(p->out + at, p->cap - at, fmt, ap);
    va_end(ap);
    if (w < 0 || (size_t)w >= p->cap - at) {
        p->out[p->len] = '\0'; /* a problem that does not fit whole is left out */
        return;
    }
    p->len = at + (size_t)w;
}

/* The receiver's columns of one table, from its first one f to the end of that table. */
static void check_receiver_only(const struct sy_schema_col *snd, size_t nsnd,
                                const struct sy_schema_col *f, const struct sy_schema_col *end,
                                const char *snd_side, const char *rcv_side, struct problems *p)
{
    for (const struct sy_schema_col *r = f; r < end && table_cmp(r, f) == 0; r++) {
        if (!r->not_null || r->has_default || col_find(snd, nsnd, r))
            continue;
        add(p, "column %s.%s.%s is NOT NULL without a default on %s, and %s does not send it: "
            "every replicated insert into %s.%s would fail; give it a default on %s (ALTER "
            "TABLE %s.%s ALTER COLUMN %s SET DEFAULT ...) or add the column on %s first",
            r->schema, r->table, r->column, rcv_side, snd_side, r->schema, r->table, rcv_side,
            r->schema, r->table, r->column, snd_side);
    }
}

static void check_column(const struct sy_schema_col *s, const struct sy_schema_col *r,
                         const char *snd_side, const char *rcv_side, struct problems *p)
{
    if (!r) {
        add(p, "column %s.%s.%s (%s) is on %s but not on %s: the replication would stop at the "
            "table's first change (\"missing replicated column\"); add it on %s (ALTER TABLE "
            "%s.%s ADD COLUMN %s %s) before it is replicated",
            s->schema, s->table, s->column, s->type, snd_side, rcv_side, rcv_side, s->schema,
            s->table, s->column, s->type);
        return;
    }
    if (!sy_schema_type_accepts(s->type, r->type))
        add(p, "column %s.%s.%s is %s on %s but %s on %s, which does not accept every value: "
            "make it %s (or a type that accepts it) on %s",
            s->schema, s->table, s->column, s->type, snd_side, r->type, rcv_side, s->type,
            rcv_side);
    else if (r->not_null && !s->not_null)
        add(p, "column %s.%s.%s is NOT NULL on %s but may be NULL on %s: a NULL written on %s "
            "would stop the replication; make it NOT NULL on %s too, or drop NOT NULL on %s",
            s->schema, s->table, s->column, rcv_side, snd_side, snd_side, snd_side, rcv_side);
}

int sy_schema_compare(struct sy_schema_col *snd, size_t nsnd, struct sy_schema_col *rcv,
                      size_t nrcv, const char *snd_side, const char *rcv_side, char *out,
                      size_t cap)
{
    struct problems p = {.out = out, .cap = cap};
    if (out && cap)
        out[0] = '\0';
    if (nsnd)
        qsort(snd, nsnd, sizeof(*snd), col_cmp);
    if (nrcv)
        qsort(rcv, nrcv, sizeof(*rcv), col_cmp);
    for (size_t i = 0; i < nsnd; i++) {
        const struct sy_schema_col *s = &snd[i];
        int first = i == 0 || table_cmp(&snd[i - 1], s) != 0;
        const struct sy_schema_col *rt = table_find(rcv, nrcv, s);
        if (!rt) {
            if (first)
                add(&p, "table %s.%s is on %s but not on %s: the replication would stop at its "
                    "first change; create it on %s (pg_dump --schema-only -t %s.%s from %s)",
                    s->schema, s->table, snd_side, rcv_side, rcv_side, s->schema, s->table,
                    snd_side);
            continue;
        }
        if (first)
            check_receiver_only(snd, nsnd, rt, rcv + nrcv, snd_side, rcv_side, &p);
        check_column(s, col_find(rcv, nrcv, s), snd_side, rcv_side, &p);
    }
    return p.n;
}
