/*
 * The shadow report rendered for people and programs: JSON (json-c) and a fixed-width text
 * table. Only reads the report through shadow.h. See shadow.h for the contracts.
 */
#include "shadow.h"

#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Order ---- */

static uint64_t divergences(const struct sy_shadow_fp *e)
{
    return e->count - e->by_class[SY_SHADOW_MATCH];
}

static int cmp_entries(const void *a, const void *b)
{
    const struct sy_shadow_fp *x = *(const struct sy_shadow_fp *const *)a;
    const struct sy_shadow_fp *y = *(const struct sy_shadow_fp *const *)b;
    uint64_t rx = x->by_class[SY_SHADOW_REAL], ry = y->by_class[SY_SHADOW_REAL];
    if (rx != ry)
        return rx > ry ? -1 : 1;
    if (divergences(x) != divergences(y))
        return divergences(x) > divergences(y) ? -1 : 1;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return strcmp(x->text, y->text);
}

/* The report's entries, sorted: real divergences, all divergences, count, text. NULL (with *n
   set) when memory ran out; a non-NULL pointer to free otherwise. */
static const struct sy_shadow_fp **sorted_entries(const struct sy_shadow_report *rep, size_t *n)
{
    *n = sy_shadow_report_size(rep);
    const struct sy_shadow_fp **v = malloc((*n ? *n : 1) * sizeof(*v));
    if (!v)
        return NULL;
    for (size_t i = 0; i < *n; i++)
        v[i] = sy_shadow_report_entry(rep, i);
    qsort(v, *n, sizeof(*v), cmp_entries);
    return v;
}

/* ---- JSON ---- */

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    size_t k = s[0] >= 0xc2 && s[0] <= 0xdf ? 2 : s[0] >= 0xe0 && s[0] <= 0xef ? 3
             : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : 0;
    if (k == 0 || k > n)
        return 0;
    for (size_t i = 1; i < k; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    /* Overlong 3- and 4-byte forms, surrogates, and code points past U+10FFFF. */
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] >= 0xa0) ||
        (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] >= 0x90))
        return 0;
    return k;
}

/* A JSON string of s with every byte that is not valid UTF-8 replaced by '?'. */
static json_object *json_text(const char *s)
{
    size_t n = strlen(s);
    char *clean = malloc(n + 1);
    if (!clean)
        return NULL;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(u + i, n - i);
        if (k == 0) {
            clean[i++] = '?';
        } else {
            memcpy(clean + i, u + i, k);
            i += k;
        }
    }
    clean[n] = 0;
    json_object *o = json_object_new_string(clean);
    free(clean);
    return o;
}

/* json_object_object_add that tolerates a NULL value (memory ran out): adds JSON null. */
static void put(json_object *obj, const char *key, json_object *val)
{
    json_object_object_add(obj, key, val);
}

static json_object *json_hist(const struct sy_shadow_hist *h)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    put(o, "count", json_object_new_int64((int64_t)h->count));
    if (h->count == 0) {
        put(o, "p50", NULL);
        put(o, "p99", NULL);
        put(o, "max", NULL);
        return o;
    }
    put(o, "p50", json_object_new_int64((int64_t)sy_shadow_hist_quantile(h, 0.50)));
    put(o, "p99", json_object_new_int64((int64_t)sy_shadow_hist_quantile(h, 0.99)));
    put(o, "max", json_object_new_int64((int64_t)h->max));
    return o;
}

static json_object *json_example(const struct sy_shadow_example *ex)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    put(o, "what", json_text(ex->what));
    put(o, "column", ex->column[0] ? json_text(ex->column) : NULL);
    put(o, "row", ex->row >= 0 ? json_object_new_int64(ex->row) : NULL);
    put(o, "blue", json_text(ex->blue));
    put(o, "green", json_text(ex->green));
    return o;
}

/* {"real": N, "order_only": N, ...}: every class but match. */
static json_object *json_classes(const uint64_t *by_class)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    for (int c = SY_SHADOW_REAL; c < SY_SHADOW_NCLASSES; c++)
        put(o, sy_shadow_class_name((enum sy_shadow_class)c),
            json_object_new_int64((int64_t)by_class[c]));
    return o;
}

static json_object *json_entry(const struct sy_shadow_fp *e)
{
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    char hash[17];
    snprintf(hash, sizeof(hash), "%016llx", (unsigned long long)e->hash);
    put(o, "fingerprint", json_text(e->text));
    put(o, "hash", json_object_new_string(hash));
    put(o, "count", json_object_new_int64((int64_t)e->count));
    put(o, "matches", json_object_new_int64((int64_t)e->by_class[SY_SHADOW_MATCH]));
    put(o, "divergences", json_classes(e->by_class));
    json_object *lat = json_object_new_object();
    if (lat) {
        put(lat, "blue", json_hist(&e->blue));
        put(lat, "green", json_hist(&e->green));
    }
    put(o, "latency_us", lat);
    put(o, "last_real_us", e->last_real_us ? json_object_new_int64((int64_t)e->last_real_us) : NULL);
    json_object *ex = json_object_new_object();
    for (int c = SY_SHADOW_REAL; ex && c < SY_SHADOW_NCLASSES; c++)
        if (e->examples[c])
            put(ex, sy_shadow_class_name((enum sy_shadow_class)c), json_example(e->examples[c]));
    put(o, "examples", ex);
    return o;
}

static json_object *json_totals(const struct sy_shadow_report *rep)
{
    const struct sy_shadow_totals *t = sy_shadow_report_totals(rep);
    json_object *o = json_object_new_object();
    if (!o)
        return NULL;
    put(o, "sessions_shadowed", json_object_new_int64((int64_t)t->counters[SY_SHADOW_CTR_SESSIONS]));
    put(o, "statements_mirrored", json_object_new_int64((int64_t)t->counters[SY_SHADOW_CTR_MIRRORED]));
    put(o, "suspended", json_object_new_int64((int64_t)t->counters[SY_SHADOW_CTR_SUSPENDED]));
    put(o, "skipped", json_object_new_int64((int64_t)t->counters[SY_SHADOW_CTR_SKIPPED]));
    put(o, "compared", json_object_new_int64((int64_t)t->compared));
    put(o, "matches", json_object_new_int64((int64_t)t->by_class[SY_SHADOW_MATCH]));
    put(o, "divergences", json_classes(t->by_class));
    put(o, "fingerprints", json_object_new_int64((int64_t)sy_shadow_report_size(rep)));
    put(o, "fingerprint_overflow", json_object_new_int64((int64_t)t->overflow));
    json_object *rc = json_object_new_object();
    if (rc) {
        put(rc, "run", json_object_new_int64((int64_t)t->counters[SY_SHADOW_CTR_RECHECKS]));
        put(rc, "nondeterministic",
            json_object_new_int64((int64_t)t->counters[SY_SHADOW_CTR_RECHECK_NONDET]));
        put(rc, "inconclusive",
            json_object_new_int64((int64_t)t->counters[SY_SHADOW_CTR_RECHECK_INCONCLUSIVE]));
        put(rc, "dropped",
            json_object_new_int64((int64_t)t->counters[SY_SHADOW_CTR_RECHECK_DROPPED]));
    }
    put(o, "rechecks", rc);
    json_object *lc = json_object_new_object();
    if (lc) {
        put(lc, "run", json_object_new_int64((int64_t)t->counters[SY_SHADOW_CTR_LAG_CHECKS]));
        put(lc, "inconclusive",
            json_object_new_int64((int64_t)t->counters[SY_SHADOW_CTR_LAG_INCONCLUSIVE]));
        put(lc, "dropped",
            json_object_new_int64((int64_t)t->counters[SY_SHADOW_CTR_LAG_DROPPED]));
        put(lc, "uncheckable",
            json_object_new_int64((int64_t)t->counters[SY_SHADOW_CTR_LAG_UNCHECKABLE]));
    }
    put(o, "lag_checks", lc);
    json_object *cv = json_object_new_object();
    if (cv) {
        static const struct { const char *name; enum sy_shadow_counter c; } cov[] = {
            {"seen", SY_SHADOW_CTR_SEEN},
            {"mirrored", SY_SHADOW_CTR_MIRRORED},
            {"not_sampled", SY_SHADOW_CTR_NOT_SAMPLED},
            {"not_running", SY_SHADOW_CTR_NOT_RUNNING},
            {"suspended", SY_SHADOW_CTR_SUSPENDED},
            {"too_large", SY_SHADOW_CTR_TOO_LARGE},
        };
        for (size_t i = 0; i < sizeof(cov) / sizeof(cov[0]); i++)
            put(cv, cov[i].name, json_object_new_int64((int64_t)t->counters[cov[i].c]));
        put(cv, "compared", json_object_new_int64((int64_t)t->compared));
    }
    put(o, "coverage", cv);
    return o;
}

json_object *sy_shadow_report_json(const struct sy_shadow_report *rep)
{
    size_t n;
    const struct sy_shadow_fp **v = sorted_entries(rep, &n);
    json_object *root = json_object_new_object();
    json_object *arr = json_object_new_array();
    if (!v || !root || !arr) {
        free(v);
        json_object_put(root);
        json_object_put(arr);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        json_object_array_add(arr, json_entry(v[i]));
    free(v);
    put(root, "fingerprints", arr);
    put(root, "totals", json_totals(rep));
    return root;
}

/* ---- Text table ---- */

struct sbuf {
    char *p;
    size_t n, cap;
    int failed;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)k;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* A latency column: the quantile in microseconds, or "-" when nothing was measured. */
static void sb_latency(struct sbuf *b, const struct sy_shadow_hist *h, double q)
{
    if (h->count == 0)
        sb_printf(b, " %10s", "-");
    else
        sb_printf(b, " %10llu", (unsigned long long)sy_shadow_hist_quantile(h, q));
}

static void sb_entry(struct sbuf *b, const struct sy_shadow_fp *e)
{
    for (int c = SY_SHADOW_REAL; c < SY_SHADOW_NCLASSES; c++)
        sb_printf(b, "%7llu", (unsigned long long)e->by_class[c]);
    sb_printf(b, " %9llu %9llu", (unsigned long long)e->count,
              (unsigned long long)e->by_class[SY_SHADOW_MATCH]);
    sb_latency(b, &e->blue, 0.50);
    sb_latency(b, &e->blue, 0.99);
    sb_latency(b, &e->green, 0.50);
    sb_latency(b, &e->green, 0.99);
    sb_printf(b, "  %s\n", e->text);
    for (int c = SY_SHADOW_REAL; c < SY_SHADOW_NCLASSES; c++) {
        const struct sy_shadow_example *ex = e->examples[c];
        if (!ex)
            continue;
        sb_printf(b, "        %s: %s", sy_shadow_class_name((enum sy_shadow_class)c), ex->what);
        if (ex->column[0])
            sb_printf(b, " column \"%s\"", ex->column);
        if (ex->row >= 0)
            sb_printf(b, " row %lld", (long long)ex->row);
        sb_printf(b, ": blue %s | green %s\n", ex->blue, ex->green);
    }
}

char *sy_shadow_report_table(const struct sy_shadow_report *rep)
{
    struct sbuf b = {malloc(1024), 0, 1024, 0};
    size_t n;
    const struct sy_shadow_fp **v = sorted_entries(rep, &n);
    if (!b.p || !v) {
        free(b.p);
        free(v);
        return NULL;
    }
    b.p[0] = 0;
    /* One heading per class from REAL on, in the enum's order (sb_entry prints them so). */
    _Static_assert(SY_SHADOW_NCLASSES == 10, "a class was added: give it a heading here");
    sb_printf(&b, "%7s%7s%7s%7s%7s%7s%7s%7s%7s %9s %9s %10s %10s %10s %10s  %s\n", "REAL",
              "ORDER", "NONDET", "LAG", "SKIP", "SHDERR", "ACCEPT", "INCONC", "SCHEMA", "COUNT",
              "MATCHES", "BLUE_P50", "BLUE_P99", "GREEN_P50", "GREEN_P99", "FINGERPRINT");
    for (size_t i = 0; i < n; i++)
        sb_entry(&b, v[i]);
    free(v);
    const struct sy_shadow_totals *t = sy_shadow_report_totals(rep);
    sb_printf(&b, "sessions %llu, mirrored %llu, suspended %llu, skipped %llu, compared %llu, "
                  "matches %llu, fingerprints %zu, overflow %llu\n",
              (unsigned long long)t->counters[SY_SHADOW_CTR_SESSIONS],
              (unsigned long long)t->counters[SY_SHADOW_CTR_MIRRORED],
              (unsigned long long)t->counters[SY_SHADOW_CTR_SUSPENDED],
              (unsigned long long)t->counters[SY_SHADOW_CTR_SKIPPED],
              (unsigned long long)t->compared, (unsigned long long)t->by_class[SY_SHADOW_MATCH],
              sy_shadow_report_size(rep), (unsigned long long)t->overflow);
    sb_printf(&b, "coverage: seen %llu, mirrored %llu, compared %llu; not mirrored: not sampled "
                  "%llu, shadow not running %llu; mirrored, not compared: suspended %llu, too "
                  "large %llu\n",
              (unsigned long long)t->counters[SY_SHADOW_CTR_SEEN],
              (unsigned long long)t->counters[SY_SHADOW_CTR_MIRRORED],
              (unsigned long long)t->compared,
              (unsigned long long)t->counters[SY_SHADOW_CTR_NOT_SAMPLED],
              (unsigned long long)t->counters[SY_SHADOW_CTR_NOT_RUNNING],
              (unsigned long long)t->counters[SY_SHADOW_CTR_SUSPENDED],
              (unsigned long long)t->counters[SY_SHADOW_CTR_TOO_LARGE]);
    sb_printf(&b, "rechecks on blue: run %llu, nondeterministic %llu, inconclusive %llu, "
                  "dropped %llu\n",
              (unsigned long long)t->counters[SY_SHADOW_CTR_RECHECKS],
              (unsigned long long)t->counters[SY_SHADOW_CTR_RECHECK_NONDET],
              (unsigned long long)t->counters[SY_SHADOW_CTR_RECHECK_INCONCLUSIVE],
              (unsigned long long)t->counters[SY_SHADOW_CTR_RECHECK_DROPPED]);
    sb_printf(&b, "lag checks: run %llu, inconclusive %llu, dropped %llu, uncheckable %llu\n",
              (unsigned long long)t->counters[SY_SHADOW_CTR_LAG_CHECKS],
              (unsigned long long)t->counters[SY_SHADOW_CTR_LAG_INCONCLUSIVE],
              (unsigned long long)t->counters[SY_SHADOW_CTR_LAG_DROPPED],
              (unsigned long long)t->counters[SY_SHADOW_CTR_LAG_UNCHECKABLE]);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* ---- The accept list ---- */

json_object *sy_shadow_accepts_json(const struct sy_shadow_accept *a, size_t n)
{
    json_object *arr = json_object_new_array();
    if (!arr)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        json_object *o = json_object_new_object();
        if (!o)
            continue;
        char hex[17];
        snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)a[i].fp_hash);
        put(o, "fingerprint", a[i].fingerprint[0] ? json_text(a[i].fingerprint) : NULL);
        put(o, "hash", json_object_new_string(hex));
        put(o, "column", a[i].column[0] ? json_text(a[i].column) : NULL);
        put(o, "class", json_object_new_string(sy_shadow_class_name(a[i].cls)));
        put(o, "source", json_object_new_string(a[i].from_config ? "config" : "admin"));
        json_object_array_add(arr, o);
    }
    return arr;
}

char *sy_shadow_accepts_table(const struct sy_shadow_accept *a, size_t n)
{
    struct sbuf b = {malloc(256), 0, 256, 0};
    if (!b.p)
        return NULL;
    b.p[0] = 0;
    if (n == 0)
        sb_printf(&b, "accepted: none\n");
    for (size_t i = 0; i < n; i++) {
        sb_printf(&b, "accepted: %016llx class %s", (unsigned long long)a[i].fp_hash,
                  sy_shadow_class_name(a[i].cls));
        if (a[i].column[0])
            sb_printf(&b, " column \"%s\"", a[i].column);
        sb_printf(&b, " (%s)%s%s\n", a[i].from_config ? "config" : "admin",
                  a[i].fingerprint[0] ? ": " : "", a[i].fingerprint);
    }
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
