/* Shadow traffic comparison: results, comparison, report. See shadow.h for the contracts. */
#include "shadow.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/pg/pg_proto.h"

/* PostgreSQL's FirstNormalObjectId: OIDs below it are built in and equal on every cluster. */
#define PG_FIRST_NORMAL_OID 16384u
#define SQLSTATE_READ_ONLY "25006"
/* reads mode runs each request in a READ ONLY transaction that took its snapshot: asking for
 * read-write (BEGIN READ WRITE, SET TRANSACTION READ WRITE) or running what cannot run in a
 * transaction block (VACUUM, CREATE INDEX CONCURRENTLY) is refused with this one */
#define SQLSTATE_IN_TRANSACTION "25001"

/* ---- Hashing ---- */

#define K1 0x9e3779b97f4a7c15ull
#define K2 0xc2b2ae3d27d4eb4full
#define K3 0x165667b19e3779f9ull

/* A bijective 64-bit mixer (xor-shift-multiply). */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

/* Hashes n bytes, 8 at a time, into seed. Native byte order: hashes never leave the process. */
static uint64_t hash_bytes(const uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t h = seed ^ ((uint64_t)n * K1);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = rotl64(h ^ (w * K2), 29) * K1;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)p[i] << (8 * i);
    h = rotl64(h ^ (w * K2), 29) * K1;
    return mix64(h);
}

/* A value's hash: its length (-1 for NULL) and bytes. */
static uint64_t hash_value(const struct pg_value *v)
{
    if (v->len < 0)
        return mix64(K3);
    return hash_bytes(v->data, (size_t)v->len, K2);
}

static uint64_t chain(uint64_t h, uint64_t x) { return mix64(h * K3 + x); }

static uint64_t hash_str(const char *s) { return hash_bytes((const uint8_t *)s, strlen(s), K3); }

/* ---- Bounded text ---- */

/* Copies src into dst (cap > 0 bytes), cut before a UTF-8 sequence that would not fit. */
static void copy_text(char *dst, size_t cap, const char *src, size_t n)
{
    if (n >= cap) {
        n = cap - 1;
        size_t lead = n;
        while (lead > 0 && n - lead < 4 && ((unsigned char)src[lead - 1] & 0xc0) == 0x80)
            lead--;
        if (lead > 0) {
            unsigned char c = (unsigned char)src[lead - 1];
            size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
            if (c >= 0xc0 && lead - 1 + need > n)
                n = lead - 1;
        }
    }
    memcpy(dst, src, n);
    dst[n] = 0;
}

static void copy_cstr(char *dst, size_t cap, const char *src) { copy_text(dst, cap, src, strlen(src)); }

/* ---- Results ---- */

void sy_shadow_result_init(struct sy_shadow_result *r) { memset(r, 0, sizeof(*r)); }

void sy_shadow_result_reset(struct sy_shadow_result *r)
{
    uint64_t *row_hash = r->row_hash;
    uint32_t row_hash_cap = r->row_hash_cap, cells_cap = r->cells_cap, arena_cap = r->arena_cap;
    struct sy_shadow_cell *cells = r->cells;
    uint8_t *arena = r->arena;
    memset(r, 0, sizeof(*r));
    r->row_hash = row_hash;
    r->row_hash_cap = row_hash_cap;
    r->cells = cells;
    r->cells_cap = cells_cap;
    r->arena = arena;
    r->arena_cap = arena_cap;
}

void sy_shadow_result_free(struct sy_shadow_result *r)
{
    free(r->row_hash);
    free(r->cells);
    free(r->arena);
    memset(r, 0, sizeof(*r));
}

size_t sy_shadow_result_heap_bytes(const struct sy_shadow_result *r)
{
    return r->row_hash_cap * sizeof(uint64_t) + r->cells_cap * sizeof(struct sy_shadow_cell) +
           r->arena_cap;
}

/*
 * Makes room for need elements of size sz in *block (capacity *cap, at most max): doubles from
 * 16. Returns 0, or -1 when the limit or memory is reached (the block is left as it was).
 */
static int grow(void **block, uint32_t *cap, uint32_t need, uint32_t max, size_t sz)
{
    if (need <= *cap && *block)
        return 0;
    if (need > max)
        return -1;
    uint32_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    if (n > max)
        n = max;
    void *p = realloc(*block, (size_t)n * sz);
    if (!p)
        return -1;
    *block = p;
    *cap = n;
    return 0;
}

/* How a column's values are read by meaning (struct sy_shadow_result's canon_* sums). Only
 * forms where two values of one type and modifier that differ as bytes also differ by meaning
 * are read so: then comparing by meaning hides nothing in a column whose type did not change. */
enum canon_kind {
    CANON_BYTES = 0,       /* as its bytes */
    CANON_BINARY_INT = 1,  /* int2, int4, int8 in binary format: the number, as decimal text */
    CANON_NUMERIC = 2,     /* numeric(p,s) in text format: without its fraction's trailing zeros
                              (every value has s digits after the point, so this is one-to-one) */
};

#define OID_INT8 20u
#define OID_INT2 21u
#define OID_INT4 23u
#define OID_NUMERIC 1700u

static enum canon_kind canon_kind_of(uint32_t type_oid, int32_t type_mod, uint16_t format)
{
    if (format == 1 && (type_oid == OID_INT2 || type_oid == OID_INT4 || type_oid == OID_INT8))
        return CANON_BINARY_INT;
    if (format == 0 && type_oid == OID_NUMERIC && type_mod >= 0)
        return CANON_NUMERIC;
    return CANON_BYTES;
}

/* A value's canonical text for kind, in out (at least 24 bytes): returns its length, or -1 when
   it is read as its bytes (another kind, a length that is no integer's, not a plain number). */
static long canon_text(enum canon_kind kind, const uint8_t *v, size_t len, char *out)
{
    if (kind == CANON_BINARY_INT) {
        if (len != 2 && len != 4 && len != 8)
            return -1;
        uint64_t u = 0;
        for (size_t i = 0; i < len; i++)
            u = u << 8 | v[i];
        int64_t x = len == 2 ? (int16_t)u : len == 4 ? (int32_t)u : (int64_t)u;
        return snprintf(out, 24, "%lld", (long long)x);
    }
    if (kind != CANON_NUMERIC)
        return -1;
    /* The stripped form is a prefix of the value: the caller hashes v[0, result). */
    size_t dot = len, end = len;
    for (size_t i = 0; i < len; i++) {
        if (v[i] == '.' && dot == len)
            dot = i;
        else if (!(v[i] >= '0' && v[i] <= '9') && !(i == 0 && v[i] == '-'))
            return -1;
    }
    if (dot == len)
        return -1;
    while (end > dot + 1 && v[end - 1] == '0')
        end--;
    if (end == dot + 1)
        end = dot;
    return (long)end;
}

/* The hash of a value read by meaning: equal to hash_value's when its canonical text is its
   bytes, so a value that needs no change hashes as itself. */
static uint64_t hash_canon(enum canon_kind kind, const struct pg_value *v)
{
    char buf[24];
    if (v->len < 0 || kind == CANON_BYTES)
        return hash_value(v);
    long n = canon_text(kind, v->data, (size_t)v->len, buf);
    if (n < 0)
        return hash_value(v);
    if (kind == CANON_NUMERIC)
        return hash_bytes(v->data, (size_t)n, K2);
    return hash_bytes((const uint8_t *)buf, (size_t)n, K2);
}

static int feed_row_desc(struct sy_shadow_result *r, const uint8_t *body, size_t len)
{
    struct pg_body_cursor c;
    int n = pg_be_row_desc_begin(&c, body, len);
    if (n < 0)
        return n;
    /* Read it whole first: a malformed description must not change anything. */
    struct pg_field f;
    int rc;
    uint64_t h = (uint64_t)n;
    while ((rc = pg_be_row_desc_next(&c, &f)) == 1) {
        uint32_t type = f.type_oid < PG_FIRST_NORMAL_OID ? f.type_oid : PG_FIRST_NORMAL_OID;
        h = chain(h, hash_str(f.name) ^ ((uint64_t)type << 16 | f.format));
    }
    if (rc < 0)
        return rc;
    pg_be_row_desc_begin(&c, body, len);
    r->cur_ncols = (uint32_t)n;
    r->cur_any_canon = 0;
    for (uint32_t i = 0; pg_be_row_desc_next(&c, &f) == 1; i++) {
        if (i < SY_SHADOW_COLS_MAX) {
            r->cur_binary[i] = f.format != 0;
            r->cur_canon[i] = (uint8_t)canon_kind_of(f.type_oid, f.type_mod, f.format);
            r->cur_any_canon |= r->cur_canon[i] != CANON_BYTES;
        }
        if (r->nsets == 0 && i < SY_SHADOW_COLS_MAX) {
            copy_cstr(r->cols[i].name, SY_SHADOW_NAME_MAX, f.name);
            r->cols[i].type_oid = f.type_oid;
            r->cols[i].type_mod = f.type_mod;
            r->cols[i].format = f.format;
        }
    }
    if (r->nsets == 0)
        r->ncols = (uint32_t)n;
    r->nsets++;
    r->cols_hash = chain(r->cols_hash, h);
    return 0;
}

/* Keeps the value's first bytes in the arena, as many as the limits allow. */
static void sample_value(struct sy_shadow_result *r, struct sy_shadow_cell *cell,
                         const struct pg_value *v)
{
    cell->off = (uint16_t)r->arena_used;
    cell->kept = 0;
    if (v->len <= 0)
        return;
    uint32_t want = (uint32_t)v->len < SY_SHADOW_VALUE_KEEP ? (uint32_t)v->len : SY_SHADOW_VALUE_KEEP;
    uint32_t room = SY_SHADOW_SAMPLE_BYTES - r->arena_used;
    if (want > room)
        want = room;
    void *arena = r->arena;
    if (want == 0 || grow(&arena, &r->arena_cap, r->arena_used + want, SY_SHADOW_SAMPLE_BYTES, 1) < 0)
        return;
    r->arena = arena;
    memcpy(r->arena + r->arena_used, v->data, want);
    cell->kept = (uint16_t)want;
    r->arena_used += want;
}

/* Starts sampling a row: returns its first cell's index, or -1 when it is not sampled. */
static long sample_begin(struct sy_shadow_result *r, uint32_t ncols)
{
    if (r->sample_rows >= SY_SHADOW_SAMPLE_ROWS || r->detail_lost)
        return -1;
    uint32_t keep = ncols < SY_SHADOW_COLS_MAX ? ncols : SY_SHADOW_COLS_MAX;
    void *cells = r->cells;
    if (grow(&cells, &r->cells_cap, r->ncells + keep, SY_SHADOW_SAMPLE_ROWS * SY_SHADOW_COLS_MAX,
             sizeof(struct sy_shadow_cell)) < 0) {
        r->detail_lost = 1;
        return -1;
    }
    r->cells = cells;
    uint32_t i = r->sample_rows++;
    r->sample_ncols[i] = ncols;
    r->sample_set[i] = r->nsets ? r->nsets - 1 : 0;
    r->sample_cell0[i] = (uint16_t)r->ncells;
    r->sample_ncells[i] = (uint16_t)keep;
    long first = (long)r->ncells;
    r->ncells += keep;
    return first;
}

/* Folds one row's hash (h; ch read by meaning) into the sums and keeps h among the leading
   row hashes. */
static void add_row(struct sy_shadow_result *r, uint64_t h, uint64_t ch)
{
    if (!r->canon_used && ch != h) {
        /* The first row that reads otherwise by meaning: the rows before read as themselves. */
        r->canon_used = 1;
        r->canon_ordered = r->hash_ordered;
        r->canon_sum = r->hash_sum;
        r->canon_sum_mixed = r->hash_sum_mixed;
    }
    if (r->canon_used) {
        r->canon_ordered = chain(r->canon_ordered, ch);
        r->canon_sum += ch;
        r->canon_sum_mixed += mix64(ch ^ K2);
    }
    if (r->nrows < SY_SHADOW_ROW_HASHES && !r->detail_lost) {
        void *hashes = r->row_hash;
        if (grow(&hashes, &r->row_hash_cap, r->row_hash_len + 1, SY_SHADOW_ROW_HASHES,
                 sizeof(uint64_t)) == 0) {
            r->row_hash = hashes;
            r->row_hash[r->row_hash_len++] = h;
        } else {
            r->detail_lost = 1;
        }
    }
    r->nrows++;
    r->hash_ordered = chain(r->hash_ordered, h);
    r->hash_sum += h;
    r->hash_sum_mixed += mix64(h ^ K2);
}

static int feed_data_row(struct sy_shadow_result *r, const uint8_t *body, size_t len)
{
    struct pg_body_cursor c;
    int n = pg_be_data_row_begin(&c, body, len);
    if (n < 0)
        return n;
    struct pg_value v;
    int rc;
    while ((rc = pg_be_data_row_next(&c, &v)) == 1)
        ;
    if (rc < 0)
        return rc;
    long cell = sample_begin(r, (uint32_t)n);
    uint64_t h = mix64((uint64_t)n), ch = h;
    pg_be_data_row_begin(&c, body, len);
    for (uint32_t i = 0; pg_be_data_row_next(&c, &v) == 1; i++) {
        uint64_t vh = hash_value(&v);
        h = chain(h, vh);
        if (r->cur_any_canon) {
            enum canon_kind k = i < r->cur_ncols && i < SY_SHADOW_COLS_MAX
                                    ? (enum canon_kind)r->cur_canon[i] : CANON_BYTES;
            ch = chain(ch, k == CANON_BYTES ? vh : hash_canon(k, &v));
        }
        if (cell >= 0 && i < SY_SHADOW_COLS_MAX) {
            struct sy_shadow_cell *sc = &r->cells[cell + i];
            sc->len = v.len;
            sc->hash = (uint32_t)(vh ^ (vh >> 32));
            sc->binary = i < r->cur_ncols && i < SY_SHADOW_COLS_MAX ? r->cur_binary[i] : 0;
            sample_value(r, sc, &v);
        }
    }
    add_row(r, h, r->cur_any_canon ? ch : h);
    return 0;
}

/* COPY OUT data: one row of one text value. */
static void feed_copy_data(struct sy_shadow_result *r, const uint8_t *body, size_t len)
{
    struct pg_value v = {body, (int32_t)len};
    uint64_t vh = hash_value(&v);
    long cell = sample_begin(r, 1);
    if (cell >= 0) {
        struct sy_shadow_cell *sc = &r->cells[cell];
        sc->len = v.len;
        sc->hash = (uint32_t)(vh ^ (vh >> 32));
        sc->binary = 0;
        sample_value(r, sc, &v);
    }
    uint64_t h = chain(mix64(1), vh);
    add_row(r, h, h);
}

/* Splits "INSERT 0 5" into the verb "INSERT" and the count 5; a tag without a trailing number
   ("CREATE TABLE") has no count. */
static void split_tag(const char *tag, size_t *verb_len, int *has_count, uint64_t *count)
{
    size_t n = strlen(tag);
    *has_count = 0;
    *count = 0;
    for (int token = 0; token < 2; token++) {
        size_t sp = n;
        while (sp > 0 && tag[sp - 1] >= '0' && tag[sp - 1] <= '9')
            sp--;
        if (sp == n || sp == 0 || tag[sp - 1] != ' ')
            break;
        if (token == 0) {
            uint64_t v = 0;
            for (size_t i = sp; i < n; i++)
                v = v > (UINT64_MAX - 9) / 10 ? UINT64_MAX : v * 10 + (uint64_t)(tag[i] - '0');
            *count = v;
            *has_count = 1;
        }
        n = sp - 1; /* INSERT's tag also carries an OID before the count: strip it too */
        if (token == 0 && !(n > 7 && memcmp(tag, "INSERT ", 7) == 0))
            break;
    }
    *verb_len = n;
}

static void add_completion(struct sy_shadow_result *r, const char *verb, size_t verb_len,
                           int has_count, uint64_t count)
{
    copy_text(r->tag, sizeof(r->tag), verb, verb_len);
    r->has_rows_affected = has_count;
    r->rows_affected = count;
    r->ncompletes++;
    r->tags_hash = chain(r->tags_hash, hash_bytes((const uint8_t *)verb, verb_len, K3));
    r->counts_hash = chain(r->counts_hash, has_count ? count + 1 : 0);
    if (r->status != SY_SHADOW_ST_ERROR)
        r->status = SY_SHADOW_ST_OK;
}

static int feed_complete(struct sy_shadow_result *r, const uint8_t *body, size_t len)
{
    const char *tag;
    int rc = pg_be_body_command_complete(body, len, &tag);
    if (rc < 0)
        return rc;
    size_t verb_len;
    int has_count;
    uint64_t count;
    split_tag(tag, &verb_len, &has_count, &count);
    add_completion(r, tag, verb_len, has_count, count);
    return 0;
}

static int feed_error(struct sy_shadow_result *r, const uint8_t *body, size_t len)
{
    struct pg_error_fields f;
    int rc = pg_be_body_error(body, len, &f);
    if (rc < 0)
        return rc;
    int first = r->status != SY_SHADOW_ST_ERROR;
    r->status = SY_SHADOW_ST_ERROR;
    if (first) {
        copy_cstr(r->sqlstate, sizeof(r->sqlstate), f.sqlstate ? f.sqlstate : "");
        copy_cstr(r->message, sizeof(r->message), f.message ? f.message : "");
    }
    if (!f.sqlstate || strlen(f.sqlstate) != 5)
        return PG_E_MALFORMED;
    return 0;
}

int sy_shadow_result_feed(struct sy_shadow_result *r, uint8_t type, const uint8_t *payload,
                          size_t len)
{
    static const uint8_t none[1] = {0};
    if (!payload) {
        if (len != 0) {
            r->malformed = 1;
            return PG_E_MALFORMED;
        }
        payload = none;
    }
    int rc = 0;
    switch (type) {
    case PG_BE_ROW_DESCRIPTION: rc = feed_row_desc(r, payload, len); break;
    case PG_BE_DATA_ROW: rc = feed_data_row(r, payload, len); break;
    case PG_BE_COMMAND_COMPLETE: rc = feed_complete(r, payload, len); break;
    case PG_BE_ERROR: rc = feed_error(r, payload, len); break;
    case PG_BE_EMPTY_QUERY:
        r->empty_query = 1;
        add_completion(r, "", 0, 0, 0);
        break;
    case PG_BE_COPY_DATA:
        if (len > INT32_MAX)
            rc = PG_E_TOO_LARGE;
        else
            feed_copy_data(r, payload, len);
        break;
    default: break;
    }
    if (rc < 0)
        r->malformed = 1;
    return rc;
}

/* ---- Comparison ---- */

const char *sy_shadow_class_name(enum sy_shadow_class cls)
{
    switch (cls) {
    case SY_SHADOW_MATCH: return "match";
    case SY_SHADOW_REAL: return "real";
    case SY_SHADOW_ORDER_ONLY: return "order_only";
    case SY_SHADOW_NONDETERMINISTIC: return "nondeterministic";
    case SY_SHADOW_REPLICATION_LAG: return "replication_lag";
    case SY_SHADOW_SKIPPED_WRITE: return "skipped_write";
    case SY_SHADOW_SHADOW_ERROR: return "shadow_error";
    case SY_SHADOW_ACCEPTED: return "accepted";
    case SY_SHADOW_INCONCLUSIVE: return "inconclusive";
    case SY_SHADOW_SCHEMA_CHANGE: return "schema_change";
    default: return "unknown";
    }
}

enum diff {
    D_NONE = 0,          /* nothing differs */
    D_SQLSTATE = 1,      /* success against error, or two SQLSTATEs */
    D_TAG = 2,           /* command tags */
    D_ROWS_AFFECTED = 3, /* counts in the tags */
    D_COLUMNS = 4,       /* row descriptions */
    D_ROW_COUNT = 5,     /* numbers of rows */
    D_ROW_DATA = 6,      /* rows, as multisets */
    D_ROW_ORDER = 7,     /* the same rows in another order */
    D_MALFORMED = 8,     /* one side had a message that could not be decoded, the other not */
};

static const char *const diff_names[] = {
    "", "sqlstate", "command_tag", "rows_affected", "columns", "row_count", "row_data", "row_order",
    "malformed",
};

static enum diff find_diff(const struct sy_shadow_result *b, const struct sy_shadow_result *g)
{
    if (b->malformed != g->malformed)
        return D_MALFORMED;
    if (b->status != g->status || strcmp(b->sqlstate, g->sqlstate) != 0)
        return D_SQLSTATE;
    if (b->tags_hash != g->tags_hash || b->ncompletes != g->ncompletes)
        return D_TAG;
    int rows_returned = b->nsets > 0 || g->nsets > 0 || b->nrows > 0 || g->nrows > 0;
    if (!rows_returned && b->counts_hash != g->counts_hash)
        return D_ROWS_AFFECTED;
    if (b->nsets != g->nsets || b->ncols != g->ncols || b->cols_hash != g->cols_hash)
        return D_COLUMNS;
    if (b->nrows != g->nrows)
        return D_ROW_COUNT;
    if (b->hash_sum != g->hash_sum || b->hash_sum_mixed != g->hash_sum_mixed)
        return D_ROW_DATA;
    if (b->hash_ordered != g->hash_ordered)
        return D_ROW_ORDER;
    if (b->counts_hash != g->counts_hash)
        return D_ROWS_AFFECTED;
    return D_NONE;
}

static enum sy_shadow_class classify(const struct sy_shadow_result *b,
                                     const struct sy_shadow_result *g,
                                     const struct sy_shadow_hints *h, enum diff d)
{
    if (h->shadow_failed)
        return SY_SHADOW_SHADOW_ERROR;
    if (d == D_NONE)
        return SY_SHADOW_MATCH;
    if (h->read_only_shadow && b->status == SY_SHADOW_ST_OK && g->status == SY_SHADOW_ST_ERROR &&
        (strcmp(g->sqlstate, SQLSTATE_READ_ONLY) == 0 ||
         strcmp(g->sqlstate, SQLSTATE_IN_TRANSACTION) == 0))
        return SY_SHADOW_SKIPPED_WRITE;
    if (b->malformed || g->malformed)
        return SY_SHADOW_SHADOW_ERROR;
    if (h->volatile_stmt)
        return SY_SHADOW_NONDETERMINISTIC;
    if (h->lag_suspected && (d == D_ROWS_AFFECTED || d == D_ROW_COUNT || d == D_ROW_DATA))
        return SY_SHADOW_REPLICATION_LAG;
    if (d == D_ROW_ORDER)
        return SY_SHADOW_ORDER_ONLY;
    return SY_SHADOW_REAL;
}

/* ---- Accepted differences ---- */

int sy_shadow_accept_matches(const struct sy_shadow_accept *a, const char *fp, uint64_t fp_hash)
{
    return a->fp_hash == fp_hash || (a->fingerprint[0] && fp && strcmp(a->fingerprint, fp) == 0);
}

/* Whether a column accept names the column (by blue's or green's name). */
static int column_accepted(const struct sy_shadow_hints *h, const char *blue_name,
                           const char *green_name)
{
    for (size_t i = 0; i < h->naccepts; i++) {
        const struct sy_shadow_accept *a = &h->accepts[i];
        if (a->column[0] && a->cls == SY_SHADOW_REAL &&
            (strcmp(a->column, blue_name) == 0 || strcmp(a->column, green_name) == 0))
            return 1;
    }
    return 0;
}

static int have_column_accepts(const struct sy_shadow_hints *h)
{
    for (size_t i = 0; i < h->naccepts; i++)
        if (h->accepts[i].column[0] && h->accepts[i].cls == SY_SHADOW_REAL)
            return 1;
    return 0;
}

/* Two columns' descriptions agree as the comparison sees them: name, format, and type (user
   types, whose OIDs differ between clusters, all agree); with with_mod, the type modifier too.
   (Without it, a modifier change shows in the values it changes: '1.234' against '1.2'.) */
static int column_same(const struct sy_shadow_column *cb, const struct sy_shadow_column *cg,
                       int with_mod)
{
    return strcmp(cb->name, cg->name) == 0 && cb->format == cg->format &&
           (!with_mod || cb->type_mod == cg->type_mod) &&
           (cb->type_oid == cg->type_oid ||
            (cb->type_oid >= PG_FIRST_NORMAL_OID && cg->type_oid >= PG_FIRST_NORMAL_OID));
}

/*
 * Whether the row descriptions agree once the accepted columns' names, types and modifiers are
 * left out (formats must still agree). *by_meaning is set when rows may then be compared by
 * meaning: every column that is not accepted was checked to have the same type, modifier and
 * format on both sides (reading by meaning is one-to-one for one type and modifier, so it hides
 * nothing there). Only one result set of at most SY_SHADOW_COLS_MAX columns can be checked
 * column by column: otherwise the descriptions agree only when their hashes do, and rows are
 * compared as bytes.
 */
static int columns_agree_accepting(const struct sy_shadow_result *b,
                                   const struct sy_shadow_result *g,
                                   const struct sy_shadow_hints *h, int *by_meaning)
{
    *by_meaning = 0;
    if (b->nsets != g->nsets || b->ncols != g->ncols)
        return 0;
    if (b->nsets != 1 || b->ncols > SY_SHADOW_COLS_MAX)
        return b->cols_hash == g->cols_hash;
    int accepted = 0, mod_only = 0;
    for (uint32_t i = 0; i < b->ncols; i++) {
        const struct sy_shadow_column *cb = &b->cols[i], *cg = &g->cols[i];
        if (column_same(cb, cg, 1))
            continue;
        if (cb->format == cg->format && column_accepted(h, cb->name, cg->name)) {
            accepted = 1;
            continue;
        }
        if (!column_same(cb, cg, 0))
            return 0;
        mod_only = 1; /* not accepted, and not a difference by itself: rows as bytes */
    }
    *by_meaning = !mod_only;
    /* Hashes that differ for a reason the kept columns do not show: no. */
    return accepted || b->cols_hash == g->cols_hash;
}

/* Sums of rows read by meaning (the exact ones when no row needed another reading). */
static uint64_t canon_sum(const struct sy_shadow_result *r)
{
    return r->canon_used ? r->canon_sum : r->hash_sum;
}
static uint64_t canon_sum_mixed(const struct sy_shadow_result *r)
{
    return r->canon_used ? r->canon_sum_mixed : r->hash_sum_mixed;
}
static uint64_t canon_ordered(const struct sy_shadow_result *r)
{
    return r->canon_used ? r->canon_ordered : r->hash_ordered;
}

/*
 * The difference left once the column accepts are applied: find_diff's order, with the row
 * descriptions compared by columns_agree_accepting and the rows by meaning. Reading by meaning
 * hides nothing in a column whose type, modifier and format agree (the readings are one-to-one
 * per type), so only the accepted columns' values may differ as bytes and still agree.
 */
static enum diff find_diff_accepting(const struct sy_shadow_result *b,
                                     const struct sy_shadow_result *g,
                                     const struct sy_shadow_hints *h, int *by_meaning)
{
    *by_meaning = 0;
    if (b->malformed != g->malformed)
        return D_MALFORMED;
    if (b->status != g->status || strcmp(b->sqlstate, g->sqlstate) != 0)
        return D_SQLSTATE;
    if (b->tags_hash != g->tags_hash || b->ncompletes != g->ncompletes)
        return D_TAG;
    int rows_returned = b->nsets > 0 || g->nsets > 0 || b->nrows > 0 || g->nrows > 0;
    if (!rows_returned && b->counts_hash != g->counts_hash)
        return D_ROWS_AFFECTED;
    if (!columns_agree_accepting(b, g, h, by_meaning))
        return D_COLUMNS;
    if (b->nrows != g->nrows)
        return D_ROW_COUNT;
    if (!*by_meaning) {
        if (b->hash_sum != g->hash_sum || b->hash_sum_mixed != g->hash_sum_mixed)
            return D_ROW_DATA;
        if (b->hash_ordered != g->hash_ordered)
            return D_ROW_ORDER;
    }
    if (canon_sum(b) != canon_sum(g) || canon_sum_mixed(b) != canon_sum_mixed(g))
        return D_ROW_DATA;
    if (canon_ordered(b) != canon_ordered(g))
        return D_ROW_ORDER;
    if (b->counts_hash != g->counts_hash)
        return D_ROWS_AFFECTED;
    return D_NONE;
}

enum sy_shadow_class sy_shadow_accept_class(const struct sy_shadow_accept *a, size_t n,
                                            enum sy_shadow_class cls)
{
    for (size_t i = 0; i < n; i++)
        if (!a[i].column[0] && a[i].cls == cls && cls != SY_SHADOW_MATCH)
            return SY_SHADOW_ACCEPTED;
    return cls;
}

/* ---- Examples ---- */

/* A bounded text writer: appends while there is room, always NUL-terminated. */
struct text {
    char *p;
    size_t cap, n;
};

static void text_put(struct text *t, const char *s, size_t k)
{
    for (size_t i = 0; i < k && t->n + 1 < t->cap; i++)
        t->p[t->n++] = s[i];
    t->p[t->n] = 0;
}

static void text_printf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_printf(struct text *t, const char *fmt, ...)
{
    char tmp[SY_SHADOW_TEXT_MAX + SY_SHADOW_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (k > 0)
        text_put(t, tmp, (size_t)k < sizeof(tmp) ? (size_t)k : sizeof(tmp) - 1);
}

/* One side's status as text: "ok UPDATE 3", "error 42P01: relation ... does not exist". */
static void describe_status(const struct sy_shadow_result *r, int redact, char *out, size_t cap)
{
    struct text t = {out, cap, 0};
    out[0] = 0;
    if (r->status == SY_SHADOW_ST_ERROR) {
        text_printf(&t, "error %s", r->sqlstate[0] ? r->sqlstate : "(no sqlstate)");
        if (!redact && r->message[0])
            text_printf(&t, ": %s", r->message);
    } else if (r->status == SY_SHADOW_ST_OK) {
        text_printf(&t, "ok %s", r->empty_query && !r->tag[0] ? "(empty query)" : r->tag);
    } else {
        text_printf(&t, "no answer");
    }
}

static void describe_count(const struct sy_shadow_result *r, char *out, size_t cap)
{
    if (r->has_rows_affected)
        snprintf(out, cap, "%s %llu", r->tag, (unsigned long long)r->rows_affected);
    else
        snprintf(out, cap, "%s (no count)", r->tag);
}

/* A sampled value as text: 'quoted' text, NULL, \x hex for binary, "..." when cut short. */
static void render_cell(const struct sy_shadow_result *r, const struct sy_shadow_cell *c,
                        int redact, char *out, size_t cap)
{
    struct text t = {out, cap, 0};
    out[0] = 0;
    if (c->len < 0) {
        text_put(&t, "NULL", 4);
        return;
    }
    if (redact) {
        text_put(&t, "<redacted>", 10);
        return;
    }
    if (c->kept == 0 && c->len > 0) {
        text_printf(&t, "(%ld bytes, not kept)", (long)c->len);
        return;
    }
    const uint8_t *v = r->arena + c->off;
    text_put(&t, c->binary ? "\\x" : "'", c->binary ? 2 : 1);
    size_t i = 0;
    for (; i < c->kept && t.n + 8 < cap; i++) {
        if (c->binary)
            text_printf(&t, "%02x", v[i]);
        else if (v[i] < 0x20 || v[i] == 0x7f)
            text_printf(&t, "\\x%02x", v[i]);
        else
            text_put(&t, (const char *)v + i, 1);
    }
    /* Cut short by the sample or by the text: no closing quote, and "..." says so. */
    if (c->kept < (uint32_t)c->len || i < c->kept)
        text_put(&t, "...", 3);
    else if (!c->binary)
        text_put(&t, "'", 1);
}

/* The name of column i of a sampled row (from the first result set's description). */
static void column_name(const struct sy_shadow_result *r, uint32_t row, uint32_t i, char *out,
                        size_t cap)
{
    if (r->sample_set[row] == 0 && r->nsets > 0 && i < r->ncols && i < SY_SHADOW_COLS_MAX)
        copy_cstr(out, cap, r->cols[i].name);
    else
        snprintf(out, cap, "#%u", i + 1);
}

/* The reading of column i of a sampled row (the first result set's description tells). */
static enum canon_kind cell_kind(const struct sy_shadow_result *r, uint32_t row, uint32_t i)
{
    if (r->sample_set[row] != 0 || r->nsets == 0 || i >= r->ncols || i >= SY_SHADOW_COLS_MAX)
        return CANON_BYTES;
    return canon_kind_of(r->cols[i].type_oid, r->cols[i].type_mod, r->cols[i].format);
}

/* Whether two sampled cells are equal: as bytes (their lengths and hashes), or with by_meaning
   read by meaning when both were kept whole. */
static int cells_equal(const struct sy_shadow_result *b, const struct sy_shadow_cell *cb,
                       enum canon_kind kb, const struct sy_shadow_result *g,
                       const struct sy_shadow_cell *cg, enum canon_kind kg, int by_meaning)
{
    if (cb->len == cg->len && cb->hash == cg->hash)
        return 1;
    if (!by_meaning || cb->len < 0 || cg->len < 0 || cb->kept != (uint32_t)cb->len ||
        cg->kept != (uint32_t)cg->len)
        return 0;
    struct pg_value vb = {b->arena + cb->off, cb->len}, vg = {g->arena + cg->off, cg->len};
    return hash_canon(kb, &vb) == hash_canon(kg, &vg);
}

/* Fills column, blue and green for row i when both sides sampled it. Returns 1 when done. */
static int example_values(const struct sy_shadow_result *b, const struct sy_shadow_result *g,
                          uint64_t row, int redact, int by_meaning, struct sy_shadow_example *ex)
{
    if (row >= b->sample_rows || row >= g->sample_rows)
        return 0;
    uint32_t i = (uint32_t)row;
    uint32_t nb = b->sample_ncells[i], ng = g->sample_ncells[i];
    const struct sy_shadow_cell *cb = b->cells + b->sample_cell0[i], *cg = g->cells + g->sample_cell0[i];
    if (b->sample_ncols[i] != g->sample_ncols[i]) {
        snprintf(ex->blue, sizeof(ex->blue), "%u columns", b->sample_ncols[i]);
        snprintf(ex->green, sizeof(ex->green), "%u columns", g->sample_ncols[i]);
        return 1;
    }
    for (uint32_t j = 0; j < nb && j < ng; j++) {
        if (cells_equal(b, &cb[j], cell_kind(b, i, j), g, &cg[j], cell_kind(g, i, j), by_meaning))
            continue;
        column_name(b, i, j, ex->column, sizeof(ex->column));
        render_cell(b, &cb[j], redact, ex->blue, sizeof(ex->blue));
        render_cell(g, &cg[j], redact, ex->green, sizeof(ex->green));
        return 1;
    }
    snprintf(ex->blue, sizeof(ex->blue), "differs after column %u (not sampled)", nb);
    snprintf(ex->green, sizeof(ex->green), "differs after column %u (not sampled)", ng);
    return 1;
}

struct hash_at {
    uint64_t h;
    uint32_t i;
};

static int cmp_hash_at(const void *a, const void *b)
{
    const struct hash_at *x = a, *y = b;
    if (x->h != y->h)
        return x->h < y->h ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * The first of a's kept rows that b's kept rows cannot match as a multiset (the k-th copy of a
 * row is unmatched when b has fewer than k copies), or -1. Only meaningful over the kept prefix.
 */
static long first_unmatched(const uint64_t *a, uint32_t na, const uint64_t *b, uint32_t nb)
{
    struct hash_at *sa = malloc((size_t)na * sizeof(*sa) + 1);
    uint64_t *sb = malloc((size_t)nb * sizeof(*sb) + 1);
    long best = -1;
    if (!sa || !sb)
        goto out;
    for (uint32_t i = 0; i < na; i++)
        sa[i] = (struct hash_at){a[i], i};
    memcpy(sb, b, (size_t)nb * sizeof(*sb));
    qsort(sa, na, sizeof(*sa), cmp_hash_at);
    qsort(sb, nb, sizeof(*sb), cmp_u64);
    uint32_t j = 0;
    for (uint32_t i = 0; i < na; i++) {
        while (j < nb && sb[j] < sa[i].h)
            j++;
        if (j < nb && sb[j] == sa[i].h)
            j++; /* matched by this copy */
        else if (best < 0 || sa[i].i < (uint32_t)best)
            best = (long)sa[i].i;
    }
out:
    free(sa);
    free(sb);
    return best;
}

/* The row to show for a difference in rows: for data, the first row one side cannot match,
   else the first position where the kept row hashes differ; -1 when past the kept rows. */
static long locate_row(const struct sy_shadow_result *b, const struct sy_shadow_result *g,
                       enum diff d)
{
    uint32_t n = b->row_hash_len < g->row_hash_len ? b->row_hash_len : g->row_hash_len;
    if (d == D_ROW_DATA && b->row_hash_len == b->nrows && g->row_hash_len == g->nrows) {
        long i = first_unmatched(b->row_hash, b->row_hash_len, g->row_hash, g->row_hash_len);
        if (i < 0)
            i = first_unmatched(g->row_hash, g->row_hash_len, b->row_hash, b->row_hash_len);
        if (i >= 0)
            return i;
    }
    for (uint32_t i = 0; i < n; i++)
        if (b->row_hash[i] != g->row_hash[i])
            return (long)i;
    if (d == D_ROW_COUNT && b->row_hash_len != g->row_hash_len && n == b->nrows && n < g->nrows)
        return (long)n;
    if (d == D_ROW_COUNT && b->row_hash_len != g->row_hash_len && n == g->nrows && n < b->nrows)
        return (long)n;
    return -1;
}

/* By meaning: the first sampled row (both sides, in order) with a cell that differs so, or -1. */
static long locate_row_by_meaning(const struct sy_shadow_result *b,
                                  const struct sy_shadow_result *g)
{
    for (uint32_t i = 0; i < b->sample_rows && i < g->sample_rows; i++) {
        uint32_t nb = b->sample_ncells[i], ng = g->sample_ncells[i];
        if (b->sample_ncols[i] != g->sample_ncols[i])
            return (long)i;
        const struct sy_shadow_cell *cb = b->cells + b->sample_cell0[i];
        const struct sy_shadow_cell *cg = g->cells + g->sample_cell0[i];
        for (uint32_t j = 0; j < nb && j < ng; j++)
            if (!cells_equal(b, &cb[j], cell_kind(b, i, j), g, &cg[j], cell_kind(g, i, j), 1))
                return (long)i;
    }
    return -1;
}

static void example_rows(const struct sy_shadow_result *b, const struct sy_shadow_result *g,
                         enum diff d, int redact, int by_meaning, struct sy_shadow_example *ex)
{
    long row = by_meaning && d != D_ROW_COUNT ? locate_row_by_meaning(b, g) : locate_row(b, g, d);
    ex->row = row;
    if (d == D_ROW_COUNT) {
        snprintf(ex->blue, sizeof(ex->blue), "%llu rows", (unsigned long long)b->nrows);
        snprintf(ex->green, sizeof(ex->green), "%llu rows", (unsigned long long)g->nrows);
        if (row >= 0 && (uint64_t)row < b->nrows && (uint64_t)row < g->nrows)
            example_values(b, g, (uint64_t)row, redact, by_meaning, ex);
        return;
    }
    if (row >= 0 && example_values(b, g, (uint64_t)row, redact, by_meaning, ex))
        return;
    const char *why = row >= 0 ? "row not sampled" : "differs past the first kept rows";
    snprintf(ex->blue, sizeof(ex->blue), "%llu rows, %s", (unsigned long long)b->nrows, why);
    snprintf(ex->green, sizeof(ex->green), "%llu rows, %s", (unsigned long long)g->nrows, why);
}

/* A type modifier as text: "(10,2)" for a numeric, "(24)" for others, "" for none. */
static const char *type_mod_text(const struct sy_shadow_column *c, char out[32])
{
    out[0] = 0;
    if (c->type_mod < 0)
        return out;
    if (c->type_oid == OID_NUMERIC && c->type_mod >= 4)
        snprintf(out, 32, "(%d,%d)", ((c->type_mod - 4) >> 16) & 0xffff, (c->type_mod - 4) & 0xffff);
    else
        snprintf(out, 32, "(mod %d)", c->type_mod);
    return out;
}

/* The first column whose description differs; with h's column accepts, the first one that
   differs and is not accepted when skip_accepted. */
static void example_columns(const struct sy_shadow_result *b, const struct sy_shadow_result *g,
                            const struct sy_shadow_hints *h, int skip_accepted,
                            struct sy_shadow_example *ex)
{
    uint32_t n = b->ncols < g->ncols ? b->ncols : g->ncols;
    char mb[32], mg[32];
    for (uint32_t i = 0; i < n && i < SY_SHADOW_COLS_MAX && b->nsets && g->nsets; i++) {
        const struct sy_shadow_column *cb = &b->cols[i], *cg = &g->cols[i];
        if (column_same(cb, cg, 0))
            continue;
        if (skip_accepted && cb->format == cg->format && column_accepted(h, cb->name, cg->name))
            continue;
        copy_cstr(ex->column, sizeof(ex->column), cb->name);
        snprintf(ex->blue, sizeof(ex->blue), "%s type %u%s format %u", cb->name, cb->type_oid,
                 type_mod_text(cb, mb), cb->format);
        snprintf(ex->green, sizeof(ex->green), "%s type %u%s format %u", cg->name, cg->type_oid,
                 type_mod_text(cg, mg), cg->format);
        return;
    }
    snprintf(ex->blue, sizeof(ex->blue), "%u result sets, %u columns", b->nsets, b->ncols);
    snprintf(ex->green, sizeof(ex->green), "%u result sets, %u columns", g->nsets, g->ncols);
}

/* Fills ex with difference d. residual: d is what is left once the column accepts are applied
   (a column other than the accepted ones); by_meaning: rows were compared by meaning. */
static void fill_example(const struct sy_shadow_result *b, const struct sy_shadow_result *g,
                         const struct sy_shadow_hints *h, enum diff d, enum sy_shadow_class cls,
                         int residual, int by_meaning, struct sy_shadow_example *ex)
{
    memset(ex, 0, sizeof(*ex));
    ex->row = -1;
    int redact = h->redact_values;
    if (h->shadow_failed) {
        copy_cstr(ex->what, sizeof(ex->what), "shadow");
        describe_status(b, redact, ex->blue, sizeof(ex->blue));
        copy_cstr(ex->green, sizeof(ex->green), "shadow connection failed or timed out");
        return;
    }
    if (cls == SY_SHADOW_SHADOW_ERROR) {
        copy_cstr(ex->what, sizeof(ex->what), "malformed");
        copy_cstr(ex->blue, sizeof(ex->blue), b->malformed ? "undecodable message" : "ok");
        copy_cstr(ex->green, sizeof(ex->green), g->malformed ? "undecodable message" : "ok");
        return;
    }
    copy_cstr(ex->what, sizeof(ex->what), diff_names[d]);
    switch (d) {
    case D_NONE:
    case D_MALFORMED: break;
    case D_SQLSTATE:
    case D_TAG:
        describe_status(b, redact, ex->blue, sizeof(ex->blue));
        describe_status(g, redact, ex->green, sizeof(ex->green));
        break;
    case D_ROWS_AFFECTED:
        describe_count(b, ex->blue, sizeof(ex->blue));
        describe_count(g, ex->green, sizeof(ex->green));
        break;
    case D_COLUMNS: example_columns(b, g, h, residual, ex); break;
    case D_ROW_COUNT:
    case D_ROW_DATA:
    case D_ROW_ORDER: example_rows(b, g, d, redact, by_meaning, ex); break;
    }
}

enum sy_shadow_class sy_shadow_compare(const struct sy_shadow_result *blue,
                                       const struct sy_shadow_result *green,
                                       const struct sy_shadow_hints *hints,
                                       struct sy_shadow_example *ex)
{
    static const struct sy_shadow_hints none;
    const struct sy_shadow_hints *h = hints ? hints : &none;
    enum diff d = find_diff(blue, green);
    int residual = 0, by_meaning = 0;
    if (d != D_NONE && !h->shadow_failed && !blue->malformed && !green->malformed &&
        have_column_accepts(h)) {
        enum diff left = find_diff_accepting(blue, green, h, &by_meaning);
        if (left == D_NONE) {
            /* Everything that differs is accepted: ex shows what was. */
            if (ex)
                fill_example(blue, green, h, d, SY_SHADOW_ACCEPTED, 0, 0, ex);
            return SY_SHADOW_ACCEPTED;
        }
        d = left;
        residual = 1;
    }
    enum sy_shadow_class cls = classify(blue, green, h, d);
    if (ex)
        fill_example(blue, green, h, d, cls, residual, by_meaning, ex);
    if (cls == SY_SHADOW_REAL || cls == SY_SHADOW_ORDER_ONLY)
        cls = sy_shadow_accept_class(h->accepts, h->naccepts, cls);
    return cls;
}

/* ---- Latency histograms ---- */

#define HIST_EXACT 32u    /* values below are their own bucket */
#define HIST_SUB_BITS 4u  /* 16 buckets per power of two */
#define HIST_TOP_EXP 40u  /* 2^40 us and more share the last bucket */

static uint32_t hist_index(uint64_t v)
{
    if (v < HIST_EXACT)
        return (uint32_t)v;
    uint32_t e = 0;
    for (uint64_t x = v; x > 1; x >>= 1)
        e++;
    if (e >= HIST_TOP_EXP)
        return SY_SHADOW_HIST_BUCKETS - 1;
    uint32_t sub = (uint32_t)(v >> (e - HIST_SUB_BITS)) & ((1u << HIST_SUB_BITS) - 1);
    return HIST_EXACT + (e - 5) * (1u << HIST_SUB_BITS) + sub;
}

/* The middle of bucket i's range. */
static uint64_t hist_mid(uint32_t i)
{
    if (i < HIST_EXACT)
        return i;
    uint32_t e = 5 + (i - HIST_EXACT) / (1u << HIST_SUB_BITS);
    uint32_t sub = (i - HIST_EXACT) % (1u << HIST_SUB_BITS);
    uint64_t width = (uint64_t)1 << (e - HIST_SUB_BITS);
    return ((uint64_t)((1u << HIST_SUB_BITS) + sub) << (e - HIST_SUB_BITS)) + (width - 1) / 2;
}

static void hist_add(struct sy_shadow_hist *h, uint64_t v)
{
    if (h->count == 0 || v < h->min)
        h->min = v;
    if (h->count == 0 || v > h->max)
        h->max = v;
    h->count++;
    uint32_t i = hist_index(v);
    if (h->bucket[i] == UINT32_MAX)
        for (uint32_t k = 0; k < SY_SHADOW_HIST_BUCKETS; k++)
            h->bucket[k] = (h->bucket[k] + 1) / 2;
    h->bucket[i]++;
}

uint64_t sy_shadow_hist_quantile(const struct sy_shadow_hist *h, double q)
{
    uint64_t total = 0;
    for (uint32_t k = 0; k < SY_SHADOW_HIST_BUCKETS; k++)
        total += h->bucket[k];
    if (total == 0)
        return 0;
    if (!(q > 0))
        q = 0;
    if (q > 1)
        q = 1;
    uint64_t rank = (uint64_t)(q * (double)total);
    if ((double)rank < q * (double)total)
        rank++;
    if (rank < 1)
        rank = 1;
    if (rank > total)
        rank = total;
    /* The extremes are known exactly. */
    if (rank == total)
        return h->max;
    if (rank == 1)
        return h->min;
    uint64_t seen = 0;
    uint32_t k = 0;
    for (; k < SY_SHADOW_HIST_BUCKETS - 1; k++) {
        seen += h->bucket[k];
        if (seen >= rank)
            break;
    }
    uint64_t v = hist_mid(k);
    return v < h->min ? h->min : v > h->max ? h->max : v;
}

/* ---- The report ---- */

#define FP_LIMIT (1u << 24) /* the most fingerprints a report keeps, whatever is asked */

struct sy_shadow_report {
    size_t max_fps;
    size_t nfps;
    struct sy_shadow_fp **fps;  /* max_fps slots, in the order first seen */
    uint32_t *index;            /* open addressing by hash: entry number + 1, 0 when empty */
    size_t index_mask;
    struct sy_shadow_fp *other; /* "(other)": fingerprints beyond max_fps */
    int other_used;
    struct sy_shadow_totals totals;
    uint64_t window_us;         /* the gate's window (sy_shadow_report_set_window) */
    uint64_t bucket_us;         /* the width of its buckets */
};

static void fp_clear(struct sy_shadow_fp *e)
{
    for (int c = 0; c < SY_SHADOW_NCLASSES; c++)
        free(e->examples[c]);
    free(e->gate);
    memset(e, 0, sizeof(*e));
}

/* The bucket width for a window: window / SY_SHADOW_GATE_BUCKETS rounded up to a second. */
static uint64_t gate_width(uint64_t window_us)
{
    uint64_t w = window_us / SY_SHADOW_GATE_BUCKETS;
    w = (w + 999999u) / 1000000u * 1000000u;
    return w < 1000000u ? 1000000u : w;
}

struct sy_shadow_report *sy_shadow_report_new(size_t max_fingerprints)
{
    size_t max = max_fingerprints ? max_fingerprints : SY_SHADOW_FP_DEFAULT;
    if (max > FP_LIMIT)
        max = FP_LIMIT;
    size_t slots = 16;
    while (slots < 2 * max)
        slots *= 2;
    struct sy_shadow_report *rep = calloc(1, sizeof(*rep));
    if (!rep)
        return NULL;
    rep->max_fps = max;
    rep->fps = calloc(max, sizeof(*rep->fps));
    rep->index = calloc(slots, sizeof(*rep->index));
    rep->index_mask = slots - 1;
    rep->other = calloc(1, sizeof(*rep->other));
    if (!rep->fps || !rep->index || !rep->other) {
        sy_shadow_report_destroy(rep);
        return NULL;
    }
    copy_cstr(rep->other->text, sizeof(rep->other->text), "(other)");
    rep->window_us = SY_SHADOW_GATE_WINDOW_DEFAULT_US;
    rep->bucket_us = gate_width(rep->window_us);
    return rep;
}

void sy_shadow_report_reset(struct sy_shadow_report *rep)
{
    for (size_t i = 0; i < rep->nfps; i++) {
        fp_clear(rep->fps[i]);
        free(rep->fps[i]);
        rep->fps[i] = NULL;
    }
    rep->nfps = 0;
    memset(rep->index, 0, (rep->index_mask + 1) * sizeof(*rep->index));
    fp_clear(rep->other);
    copy_cstr(rep->other->text, sizeof(rep->other->text), "(other)");
    rep->other_used = 0;
    memset(&rep->totals, 0, sizeof(rep->totals));
    rep->bucket_us = gate_width(rep->window_us);
}

void sy_shadow_report_destroy(struct sy_shadow_report *rep)
{
    if (!rep)
        return;
    if (rep->fps && rep->index && rep->other)
        sy_shadow_report_reset(rep);
    free(rep->fps);
    free(rep->index);
    free(rep->other);
    free(rep);
}

/* The entry for hash, or NULL; *slot receives its index slot, or the empty one ending the
   probe (where a new entry for hash goes). */
static struct sy_shadow_fp *fp_lookup(const struct sy_shadow_report *rep, uint64_t hash,
                                      size_t *slot)
{
    size_t i = (size_t)mix64(hash) & rep->index_mask;
    while (rep->index[i]) {
        struct sy_shadow_fp *e = rep->fps[rep->index[i] - 1];
        if (e->hash == hash) {
            *slot = i;
            return e;
        }
        i = (i + 1) & rep->index_mask;
    }
    *slot = i;
    return NULL;
}

/* The entry for hash, created when there is room; NULL when the table is full or memory ran
   out (the caller counts under "(other)"). */
static struct sy_shadow_fp *fp_find(struct sy_shadow_report *rep, const char *text, uint64_t hash)
{
    size_t i;
    struct sy_shadow_fp *found = fp_lookup(rep, hash, &i);
    if (found)
        return found;
    if (rep->nfps == rep->max_fps)
        return NULL;
    struct sy_shadow_fp *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->hash = hash;
    copy_cstr(e->text, sizeof(e->text), text ? text : "");
    rep->fps[rep->nfps++] = e;
    rep->index[i] = (uint32_t)rep->nfps;
    return e;
}

/* Keeps a copy of ex as the class's first example, with every string terminated. */
static void keep_example(struct sy_shadow_fp *e, enum sy_shadow_class cls,
                         const struct sy_shadow_example *ex)
{
    if (!ex || cls == SY_SHADOW_MATCH || e->examples[cls])
        return;
    struct sy_shadow_example *copy = malloc(sizeof(*copy));
    if (!copy)
        return;
    *copy = *ex;
    copy->what[sizeof(copy->what) - 1] = 0;
    copy->column[sizeof(copy->column) - 1] = 0;
    copy->blue[sizeof(copy->blue) - 1] = 0;
    copy->green[sizeof(copy->green) - 1] = 0;
    e->examples[cls] = copy;
}

/* The gate's index of a class (SY_SHADOW_GATE_*), or -1 for a class it never counts. */
static int gate_index(enum sy_shadow_class cls)
{
    return cls == SY_SHADOW_REAL ? SY_SHADOW_GATE_REAL
         : cls == SY_SHADOW_INCONCLUSIVE ? SY_SHADOW_GATE_INCONCLUSIVE : -1;
}

/* Drops the buckets that end before now_us - window: they can no longer be counted. */
static void gate_prune(const struct sy_shadow_report *rep, struct sy_shadow_fp *e, uint64_t now_us)
{
    uint64_t horizon = now_us > rep->window_us ? now_us - rep->window_us : 0;
    uint32_t k = 0;
    while (k < e->gate_len && e->gate[k].start_us + rep->bucket_us <= horizon)
        k++;
    if (k == 0)
        return;
    memmove(e->gate, e->gate + k, (size_t)(e->gate_len - k) * sizeof(*e->gate));
    e->gate_len -= k;
}

/* The bucket holding at_us, or NULL; with create, made (in time order) when missing, and NULL
   only when memory ran out. */
static struct sy_shadow_gate_bucket *gate_bucket(const struct sy_shadow_report *rep,
                                                 struct sy_shadow_fp *e, uint64_t at_us,
                                                 int create)
{
    uint64_t start = at_us - at_us % rep->bucket_us;
    uint32_t i = e->gate_len;
    while (i > 0 && e->gate[i - 1].start_us > start) /* times come in order: usually none */
        i--;
    if (i > 0 && e->gate[i - 1].start_us == start)
        return &e->gate[i - 1];
    if (!create)
        return NULL;
    void *block = e->gate;
    if (grow(&block, &e->gate_cap, e->gate_len + 1, UINT32_MAX / sizeof(*e->gate),
             sizeof(*e->gate)) < 0)
        return NULL;
    e->gate = block;
    memmove(e->gate + i + 1, e->gate + i, (size_t)(e->gate_len - i) * sizeof(*e->gate));
    e->gate_len++;
    memset(&e->gate[i], 0, sizeof(e->gate[i]));
    e->gate[i].start_us = start;
    return &e->gate[i];
}

/* Counts one divergence of cls at at_us in the gate's buckets (delta +1 or -1). A -1 whose
   bucket is gone or empty for cls changes nothing. */
static void gate_count(const struct sy_shadow_report *rep, struct sy_shadow_fp *e,
                       enum sy_shadow_class cls, uint64_t at_us, int delta)
{
    int gi = gate_index(cls);
    if (gi < 0)
        return;
    struct sy_shadow_gate_bucket *b = gate_bucket(rep, e, at_us, delta > 0);
    if (!b)
        return;
    if (delta > 0 && b->n[gi] < UINT32_MAX)
        b->n[gi]++;
    else if (delta < 0 && b->n[gi] > 0)
        b->n[gi]--;
}

int sy_shadow_report_add(struct sy_shadow_report *rep, const char *fp_text, uint64_t fp_hash,
                         enum sy_shadow_class cls, int64_t blue_us, int64_t green_us,
                         const struct sy_shadow_example *ex, uint64_t now_us)
{
    if ((unsigned)cls >= SY_SHADOW_NCLASSES)
        return -1;
    int rc = 0;
    struct sy_shadow_fp *e = fp_find(rep, fp_text, fp_hash);
    if (!e) {
        e = rep->other;
        rep->other_used = 1;
        rep->totals.overflow++;
        rc = 1;
    }
    e->count++;
    e->by_class[cls]++;
    if (blue_us >= 0)
        hist_add(&e->blue, (uint64_t)blue_us);
    if (green_us >= 0)
        hist_add(&e->green, (uint64_t)green_us);
    if (cls == SY_SHADOW_REAL && now_us > e->last_real_us)
        e->last_real_us = now_us;
    if (gate_index(cls) >= 0) {
        gate_prune(rep, e, now_us);
        gate_count(rep, e, cls, now_us, 1);
    }
    keep_example(e, cls, ex);
    rep->totals.compared++;
    rep->totals.by_class[cls]++;
    return rc;
}

int sy_shadow_report_reclass(struct sy_shadow_report *rep, uint64_t fp_hash,
                             enum sy_shadow_class from, enum sy_shadow_class to, uint64_t at_us,
                             const struct sy_shadow_example *ex)
{
    if ((unsigned)from >= SY_SHADOW_NCLASSES || (unsigned)to >= SY_SHADOW_NCLASSES ||
        from == SY_SHADOW_MATCH || to == SY_SHADOW_MATCH || from == to)
        return -1;
    size_t slot;
    struct sy_shadow_fp *e = fp_lookup(rep, fp_hash, &slot);
    if (!e || e->by_class[from] == 0)
        return -1;
    e->by_class[from]--;
    e->by_class[to]++;
    rep->totals.by_class[from]--;
    rep->totals.by_class[to]++;
    gate_count(rep, e, from, at_us, -1);
    gate_count(rep, e, to, at_us, 1);
    if (to == SY_SHADOW_REAL && at_us > e->last_real_us)
        e->last_real_us = at_us;
    if (from == SY_SHADOW_REAL && at_us >= e->last_real_us) {
        /* The latest one left: known to its bucket's start (0 when none is left). */
        uint32_t k = e->gate_len;
        while (k > 0 && e->gate[k - 1].n[SY_SHADOW_GATE_REAL] == 0)
            k--;
        if (e->by_class[SY_SHADOW_REAL] == 0)
            e->last_real_us = 0;
        else if (k > 0)
            e->last_real_us = e->gate[k - 1].start_us;
    }
    if (e->by_class[from] == 0) {
        free(e->examples[from]);
        e->examples[from] = NULL;
    }
    keep_example(e, to, ex);
    return 0;
}

void sy_shadow_report_bump(struct sy_shadow_report *rep, enum sy_shadow_counter c, uint64_t n)
{
    if ((unsigned)c < SY_SHADOW_NCOUNTERS)
        rep->totals.counters[c] += n;
}

const struct sy_shadow_totals *sy_shadow_report_totals(const struct sy_shadow_report *rep)
{
    return &rep->totals;
}

size_t sy_shadow_report_size(const struct sy_shadow_report *rep)
{
    return rep->nfps + (rep->other_used ? 1 : 0);
}

const struct sy_shadow_fp *sy_shadow_report_entry(const struct sy_shadow_report *rep, size_t i)
{
    if (i < rep->nfps)
        return rep->fps[i];
    if (i == rep->nfps && rep->other_used)
        return rep->other;
    return NULL;
}

/* Merges e's buckets into the report's (new, wider) width, keeping their order. */
static void gate_rebucket(const struct sy_shadow_report *rep, struct sy_shadow_fp *e)
{
    uint32_t out = 0;
    for (uint32_t i = 0; i < e->gate_len; i++) {
        uint64_t start = e->gate[i].start_us - e->gate[i].start_us % rep->bucket_us;
        if (out > 0 && e->gate[out - 1].start_us == start) {
            for (int c = 0; c < SY_SHADOW_GATE_NCLASSES; c++) {
                uint64_t n = (uint64_t)e->gate[out - 1].n[c] + e->gate[i].n[c];
                e->gate[out - 1].n[c] = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
            }
            continue;
        }
        e->gate[out] = e->gate[i];
        e->gate[out].start_us = start;
        out++;
    }
    e->gate_len = out;
}

int sy_shadow_report_set_window(struct sy_shadow_report *rep, uint64_t window_us)
{
    if (window_us == 0)
        window_us = SY_SHADOW_GATE_WINDOW_DEFAULT_US;
    if (window_us == rep->window_us)
        return 0;
    uint64_t width = gate_width(window_us);
    rep->window_us = window_us;
    if (width == rep->bucket_us)
        return 0;
    /* Buckets merge into wider ones; wide ones cannot be split, so a narrower width waits until
       no bucket is kept (a reset): meanwhile counts are exact to the wider width. */
    size_t n = sy_shadow_report_size(rep);
    if (width < rep->bucket_us) {
        for (size_t i = 0; i < n; i++)
            if (sy_shadow_report_entry(rep, i)->gate_len)
                return 0;
        rep->bucket_us = width;
        return 0;
    }
    rep->bucket_us = width;
    for (size_t i = 0; i < n; i++)
        gate_rebucket(rep, (struct sy_shadow_fp *)sy_shadow_report_entry(rep, i));
    return 0;
}

uint64_t sy_shadow_report_bucket_us(const struct sy_shadow_report *rep) { return rep->bucket_us; }

/* Whether x ranks before y in the gate's list: more counted, more REAL, then text. */
static int gate_before(const struct sy_shadow_gate_fp *x, const struct sy_shadow_gate_fp *y)
{
    if (x->count != y->count)
        return x->count > y->count;
    if (x->by_class[SY_SHADOW_GATE_REAL] != y->by_class[SY_SHADOW_GATE_REAL])
        return x->by_class[SY_SHADOW_GATE_REAL] > y->by_class[SY_SHADOW_GATE_REAL];
    return strcmp(x->fingerprint, y->fingerprint) < 0;
}

size_t sy_shadow_report_gate(const struct sy_shadow_report *rep, uint64_t since_us,
                             unsigned class_mask, struct sy_shadow_gate_fp *out, size_t cap,
                             uint64_t *total)
{
    int want[SY_SHADOW_GATE_NCLASSES] = {
        [SY_SHADOW_GATE_REAL] = (class_mask >> SY_SHADOW_REAL) & 1,
        [SY_SHADOW_GATE_INCONCLUSIVE] = (class_mask >> SY_SHADOW_INCONCLUSIVE) & 1,
    };
    size_t found = 0, filled = 0, n = sy_shadow_report_size(rep);
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        const struct sy_shadow_fp *e = sy_shadow_report_entry(rep, i);
        struct sy_shadow_gate_fp g = {.fp_hash = e->hash, .fingerprint = e->text,
                                      .last_real_us = e->last_real_us};
        for (uint32_t k = 0; k < e->gate_len; k++) {
            if (e->gate[k].start_us + rep->bucket_us <= since_us)
                continue;
            for (int c = 0; c < SY_SHADOW_GATE_NCLASSES; c++)
                if (want[c])
                    g.by_class[c] += e->gate[k].n[c];
        }
        g.count = g.by_class[SY_SHADOW_GATE_REAL] + g.by_class[SY_SHADOW_GATE_INCONCLUSIVE];
        if (g.count == 0)
            continue;
        g.example_class = g.by_class[SY_SHADOW_GATE_REAL] && e->examples[SY_SHADOW_REAL]
                              ? SY_SHADOW_REAL : SY_SHADOW_INCONCLUSIVE;
        if (!e->examples[g.example_class])
            g.example_class = SY_SHADOW_REAL;
        g.example = e->examples[g.example_class];
        found++;
        sum += g.count;
        if (!out || cap == 0)
            continue;
        /* Insertion into the top cap, best first. */
        size_t at = filled;
        while (at > 0 && gate_before(&g, &out[at - 1]))
            at--;
        if (at >= cap)
            continue;
        size_t last = filled < cap ? filled : cap - 1;
        memmove(out + at + 1, out + at, (last - at) * sizeof(*out));
        out[at] = g;
        if (filled < cap)
            filled++;
    }
    if (total)
        *total = sum;
    return found;
}
