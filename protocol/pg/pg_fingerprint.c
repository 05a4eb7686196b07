/* SQL fingerprints and the volatility heuristic. See pg_fingerprint.h for the contracts. */
#include "pg_fingerprint.h"

#include <string.h>

#define FNV_BASIS 14695981039346656037ull
#define FNV_PRIME 1099511628211ull

/* ---- The lexer: PostgreSQL's token rules, reduced to what a fingerprint needs ---- */

enum fp_kind {
    FP_END = 0,    /* no more tokens */
    FP_WORD = 1,   /* keyword or unquoted identifier */
    FP_QIDENT = 2, /* "quoted identifier" (or U&"...") */
    FP_LITERAL = 3, /* string, bit string, dollar-quoted or numeric literal */
    FP_PARAM = 4,  /* $1 */
    FP_OP = 5,     /* operator */
    FP_LPAREN = 6, /* ( */
    FP_RPAREN = 7, /* ) */
    FP_LBRACK = 8, /* [ */
    FP_RBRACK = 9, /* ] */
    FP_COMMA = 10, /* , */
    FP_SEMI = 11,  /* ; */
    FP_OTHER = 12, /* anything else: . :: : a lone $ */
};

struct fp_tok {
    enum fp_kind kind;
    size_t start;
    size_t len;
    int ws; /* whitespace or a comment came before it */
};

/* A position in the text plus what the previous token was (for unary signs). A plain value:
   copying it is how the normalizer looks ahead. */
struct fp_lex {
    const char *s;
    size_t n;
    size_t pos;
    enum fp_kind prev;
    int prev_sign_kw; /* the previous token is a keyword after which + or - is unary */
};

/* NUL counts as whitespace: it cannot be part of a statement, and the output is a C string. */
static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == 0;
}
static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_hex(unsigned char c) { return is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }
/* Bytes >= 0x80 are identifier characters in PostgreSQL (multibyte encodings). */
static int is_ident_start(unsigned char c) { return is_alpha(c) || c == '_' || c >= 0x80; }
static int is_ident_cont(unsigned char c) { return is_ident_start(c) || is_digit(c) || c == '$'; }
static int is_op_char(unsigned char c) { return c != 0 && strchr("+-*/<>=~!@#%^&|`?", c) != NULL; }
static unsigned char lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? (unsigned char)(c | 0x20) : c; }

static int starts_comment(const char *s, size_t n, size_t p)
{
    return p + 1 < n && ((s[p] == '-' && s[p + 1] == '-') || (s[p] == '/' && s[p + 1] == '*'));
}

/* p is at a slash-star. Returns the position after the matching star-slash (comments nest), or
   n when the comment never ends. */
static size_t skip_block_comment(const char *s, size_t n, size_t p)
{
    size_t depth = 0;
    while (p < n) {
        if (s[p] == '/' && p + 1 < n && s[p + 1] == '*') {
            depth++;
            p += 2;
        } else if (s[p] == '*' && p + 1 < n && s[p + 1] == '/') {
            p += 2;
            if (--depth == 0)
                return p;
        } else {
            p++;
        }
    }
    return n;
}

/* Skips whitespace and comments; returns 1 when it skipped anything. */
static int skip_blank(struct fp_lex *lx)
{
    const char *s = lx->s;
    size_t n = lx->n, p = lx->pos;
    int ws = 0;
    while (p < n) {
        if (is_space((unsigned char)s[p])) {
            p++;
        } else if (s[p] == '-' && p + 1 < n && s[p + 1] == '-') {
            const char *nl = memchr(s + p, '\n', n - p);
            p = nl ? (size_t)(nl - s) : n;
        } else if (s[p] == '/' && p + 1 < n && s[p + 1] == '*') {
            p = skip_block_comment(s, n, p);
        } else {
            break;
        }
        ws = 1;
    }
    lx->pos = p;
    return ws;
}

/* p is just past an opening quote q. Returns the position after the closing quote (a doubled
   quote is an escaped one; with backslash, so is \q), or n when the literal never ends. */
static size_t skip_quoted(const char *s, size_t n, size_t p, char q, int backslash)
{
    while (p < n) {
        char c = s[p];
        if (backslash && c == '\\') {
            p += 2;
            continue;
        }
        p++;
        if (c == q) {
            if (p < n && s[p] == q) {
                p++;
                continue;
            }
            return p;
        }
    }
    return n;
}

/* p is at '$'. Returns the end of a $tag$...$tag$ literal (n when it never closes), or 0 when
   p does not start one. Tags follow identifier rules without '$' and cannot start with a digit. */
static size_t skip_dollar_quote(const char *s, size_t n, size_t p)
{
    size_t t = p + 1;
    if (t < n && s[t] != '$') {
        if (!is_ident_start((unsigned char)s[t]))
            return 0;
        while (t < n && (is_ident_start((unsigned char)s[t]) || is_digit((unsigned char)s[t])))
            t++;
    }
    if (t >= n || s[t] != '$')
        return 0;
    size_t tag_len = t + 1 - p;
    for (size_t q = t + 1; q < n;) {
        const char *d = memchr(s + q, '$', n - q);
        if (!d)
            break;
        q = (size_t)(d - s);
        if (n - q >= tag_len && memcmp(s + q, s + p, tag_len) == 0)
            return q + tag_len;
        q++;
    }
    return n;
}

static size_t skip_digits(const char *s, size_t n, size_t p, int hex)
{
    while (p < n && (is_digit((unsigned char)s[p]) || s[p] == '_' || (hex && is_hex((unsigned char)s[p]))))
        p++;
    return p;
}

/* p is at a digit, or at '.' before a digit. Returns the end of the numeric literal. */
static size_t skip_number(const char *s, size_t n, size_t p)
{
    if (s[p] == '0' && p + 2 < n && s[p + 1] != 0 && strchr("xXoObB", s[p + 1]) &&
        is_hex((unsigned char)s[p + 2]))
        return skip_digits(s, n, p + 2, 1);
    p = skip_digits(s, n, p, 0);
    if (p < n && s[p] == '.' && !(p + 1 < n && s[p + 1] == '.'))
        p = skip_digits(s, n, p + 1, 0);
    if (p < n && (s[p] | 0x20) == 'e') {
        size_t q = p + 1;
        if (q < n && (s[q] == '+' || s[q] == '-'))
            q++;
        if (q < n && is_digit((unsigned char)s[q]))
            p = skip_digits(s, n, q, 0);
    }
    return p;
}

/* p is at an operator character. PostgreSQL's rule: a multi-character operator cannot end in +
   or - unless it contains one of ~ ! @ # % ^ & | ` ?, so "*-1" is "*", "-", "1". */
static size_t skip_operator(const char *s, size_t n, size_t p)
{
    size_t e = p + 1;
    int special = strchr("~!@#%^&|`?", s[p]) != NULL;
    while (e < n && is_op_char((unsigned char)s[e]) && !starts_comment(s, n, e)) {
        special |= strchr("~!@#%^&|`?", s[e]) != NULL;
        e++;
    }
    while (!special && e - p > 1 && (s[e - 1] == '+' || s[e - 1] == '-'))
        e--;
    return e;
}

/* p is at an identifier's first character: a word, or a prefixed literal (E'..', B'..', X'..',
   N'..', U&'..') or U&"quoted identifier". */
static enum fp_kind lex_word(const char *s, size_t n, size_t p, size_t *end)
{
    unsigned char c = (unsigned char)s[p];
    if (p + 1 < n && s[p + 1] == '\'' && strchr("eEbBxXnN", c)) {
        *end = skip_quoted(s, n, p + 2, '\'', (c | 0x20) == 'e');
        return FP_LITERAL;
    }
    if ((c | 0x20) == 'u' && p + 2 < n && s[p + 1] == '&' && (s[p + 2] == '\'' || s[p + 2] == '"')) {
        *end = skip_quoted(s, n, p + 3, s[p + 2], 0);
        return s[p + 2] == '"' ? FP_QIDENT : FP_LITERAL;
    }
    size_t e = p + 1;
    while (e < n && is_ident_cont((unsigned char)s[e]))
        e++;
    *end = e;
    return FP_WORD;
}

/* p is at '$': a parameter, a dollar-quoted literal, or a lone '$'. */
static enum fp_kind lex_dollar(const char *s, size_t n, size_t p, size_t *end)
{
    if (p + 1 < n && is_digit((unsigned char)s[p + 1])) {
        size_t e = p + 1;
        while (e < n && is_digit((unsigned char)s[e]))
            e++;
        *end = e;
        return FP_PARAM;
    }
    size_t e = skip_dollar_quote(s, n, p);
    *end = e ? e : p + 1;
    return e ? FP_LITERAL : FP_OTHER;
}

static enum fp_kind lex_punct(unsigned char c)
{
    switch (c) {
    case '(': return FP_LPAREN;
    case ')': return FP_RPAREN;
    case '[': return FP_LBRACK;
    case ']': return FP_RBRACK;
    case ',': return FP_COMMA;
    case ';': return FP_SEMI;
    default: return FP_OTHER;
    }
}

/* Reads the next token as PostgreSQL would, without sign folding. */
static void lex_raw(struct fp_lex *lx, struct fp_tok *t)
{
    t->ws = skip_blank(lx);
    const char *s = lx->s;
    size_t n = lx->n, p = lx->pos, e = p + 1;
    t->start = p;
    t->len = 0;
    t->kind = FP_END;
    if (p >= n)
        return;
    unsigned char c = (unsigned char)s[p];
    if (is_ident_start(c)) {
        t->kind = lex_word(s, n, p, &e);
    } else if (is_digit(c) || (c == '.' && p + 1 < n && is_digit((unsigned char)s[p + 1]))) {
        t->kind = FP_LITERAL;
        e = skip_number(s, n, p);
    } else if (c == '\'' || c == '"') {
        t->kind = c == '"' ? FP_QIDENT : FP_LITERAL;
        e = skip_quoted(s, n, p + 1, (char)c, 0);
    } else if (c == '$') {
        t->kind = lex_dollar(s, n, p, &e);
    } else if (c == ':') {
        t->kind = FP_OTHER;
        e = p + 1 < n && s[p + 1] == ':' ? p + 2 : p + 1;
    } else if (is_op_char(c)) {
        t->kind = FP_OP;
        e = skip_operator(s, n, p);
    } else {
        t->kind = lex_punct(c);
    }
    lx->pos = e;
    t->len = e - p;
}

/* Case-insensitive comparison of a word with a lower-case name. */
static int word_is(const char *s, const struct fp_tok *t, const char *name)
{
    size_t k = strlen(name);
    if (t->len != k)
        return 0;
    for (size_t i = 0; i < k; i++)
        if (lower((unsigned char)s[t->start + i]) != (unsigned char)name[i])
            return 0;
    return 1;
}

static int word_in(const char *s, const struct fp_tok *t, const char *const *names)
{
    for (size_t i = 0; names[i]; i++)
        if (word_is(s, t, names[i]))
            return 1;
    return 0;
}

/* Keywords after which + or - can only be a sign. */
static const char *const sign_keywords[] = {
    "select", "where", "and", "or", "not", "when", "then", "else", "case", "between", "limit",
    "offset", "return", "having", "on", "distinct", "all", NULL,
};

static int sign_is_unary(const struct fp_lex *lx)
{
    switch (lx->prev) {
    case FP_END: case FP_OP: case FP_LPAREN: case FP_LBRACK: case FP_COMMA: case FP_SEMI:
        return 1;
    case FP_WORD:
        return lx->prev_sign_kw;
    default:
        return 0;
    }
}

/* Reads the next token, folding a unary sign into the number that follows it. */
static void lex_next(struct fp_lex *lx, struct fp_tok *t)
{
    lex_raw(lx, t);
    const char *s = lx->s;
    if (t->kind == FP_OP && t->len == 1 && (s[t->start] == '-' || s[t->start] == '+') &&
        sign_is_unary(lx)) {
        struct fp_lex peek = *lx;
        struct fp_tok num;
        lex_raw(&peek, &num);
        unsigned char c = num.len ? (unsigned char)s[num.start] : 0;
        if (num.kind == FP_LITERAL && (is_digit(c) || c == '.')) {
            t->kind = FP_LITERAL;
            t->len = num.start + num.len - t->start;
            *lx = peek;
        }
    }
    lx->prev = t->kind;
    lx->prev_sign_kw = t->kind == FP_WORD && word_in(s, t, sign_keywords);
}

/* ---- The normalizer ---- */

enum fp_kw { KW_NONE = 0, KW_IN = 1, KW_VALUES = 2, KW_ARRAY = 3 };

struct fp_out {
    char *buf;
    size_t cap;
    size_t n;      /* bytes of the whole form so far, written or not */
    uint64_t hash; /* FNV-1a of the whole form so far */
    enum fp_kind prev;
    enum fp_kw prev_kw;
};

struct fp_state {
    size_t depth;         /* parentheses open */
    long values_depth;    /* depth at which the first VALUES tuple opened, or -1 */
    int values_pending;   /* the last word was VALUES: the next "(" opens its first tuple */
    size_t semis_checked; /* text up to here is known to hold more than semicolons */
};

static void out_put(struct fp_out *o, const char *p, size_t k, int lowercase)
{
    for (size_t i = 0; i < k; i++) {
        unsigned char c = lowercase ? lower((unsigned char)p[i]) : (unsigned char)p[i];
        if (c == 0)
            c = '?'; /* inside a quoted identifier: keep the output a C string */
        if (o->cap > 0 && o->n < o->cap - 1)
            o->buf[o->n] = (char)c;
        o->n++;
        o->hash = (o->hash ^ c) * FNV_PRIME;
    }
}

static int space_before(const struct fp_out *o, const struct fp_tok *t)
{
    if (o->n == 0 || o->prev == FP_LPAREN || o->prev == FP_LBRACK)
        return 0;
    if (t->kind == FP_RPAREN || t->kind == FP_RBRACK || t->kind == FP_COMMA || t->kind == FP_SEMI)
        return 0;
    if (o->prev == FP_COMMA)
        return 1;
    if (t->kind == FP_LPAREN && (o->prev_kw == KW_IN || o->prev_kw == KW_VALUES))
        return 1;
    return t->ws;
}

static void emit(struct fp_out *o, const char *s, const struct fp_tok *t)
{
    if (space_before(o, t))
        out_put(o, " ", 1, 0);
    if (t->kind == FP_LITERAL)
        out_put(o, "?", 1, 0);
    else
        out_put(o, s + t->start, t->len, t->kind == FP_WORD);
    o->prev = t->kind;
    o->prev_kw = KW_NONE;
    if (t->kind == FP_WORD)
        o->prev_kw = word_is(s, t, "in") ? KW_IN
                     : word_is(s, t, "values") ? KW_VALUES
                     : word_is(s, t, "array") ? KW_ARRAY : KW_NONE;
}

static int is_placeholder(const char *s, const struct fp_tok *t)
{
    return t->kind == FP_LITERAL || t->kind == FP_PARAM ||
           (t->kind == FP_OP && t->len == 1 && s[t->start] == '?');
}

/*
 * After IN or ARRAY: when the text ahead is "(" or "[" then placeholders separated by commas
 * then the closer, writes the opener, the first placeholder and the closer, moves lx past the
 * list and returns 1. Returns 0 (lx unmoved) otherwise.
 */
static int collapse_list(struct fp_out *o, struct fp_lex *lx, enum fp_kind open, enum fp_kind close)
{
    struct fp_lex peek = *lx;
    struct fp_tok t_open, first, t;
    lex_next(&peek, &t_open);
    if (t_open.kind != open)
        return 0;
    lex_next(&peek, &first);
    if (!is_placeholder(lx->s, &first))
        return 0;
    for (;;) {
        lex_next(&peek, &t);
        if (t.kind == close)
            break;
        if (t.kind != FP_COMMA)
            return 0;
        lex_next(&peek, &t);
        if (!is_placeholder(lx->s, &t))
            return 0;
    }
    emit(o, lx->s, &t_open);
    emit(o, lx->s, &first);
    emit(o, lx->s, &t);
    *lx = peek;
    return 1;
}

/* Skips to the ")" that closes an already opened "(" (or to the end). */
static void skip_balanced(struct fp_lex *lx)
{
    size_t depth = 1;
    struct fp_tok t;
    while (depth > 0) {
        lex_next(lx, &t);
        if (t.kind == FP_END)
            return;
        if (t.kind == FP_LPAREN)
            depth++;
        else if (t.kind == FP_RPAREN)
            depth--;
    }
}

/* After the first VALUES tuple: skips every further ", (...)" and writes one ", ..." for them. */
static void collapse_tuples(struct fp_out *o, struct fp_lex *lx)
{
    size_t skipped = 0;
    for (;;) {
        struct fp_lex peek = *lx;
        struct fp_tok comma, open;
        lex_next(&peek, &comma);
        if (comma.kind != FP_COMMA)
            break;
        lex_next(&peek, &open);
        if (open.kind != FP_LPAREN)
            break;
        skip_balanced(&peek);
        *lx = peek;
        skipped++;
    }
    if (skipped > 0) {
        struct fp_tok comma = {FP_COMMA, 0, 1, 0}, dots = {FP_OTHER, 0, 3, 1};
        emit(o, ",", &comma);
        emit(o, "...", &dots);
    }
}

/* Whether only semicolons (and blanks) follow; remembers where that was last found false. */
static int only_semis_left(struct fp_state *st, const struct fp_lex *lx)
{
    if (lx->pos < st->semis_checked)
        return 0;
    struct fp_lex peek = *lx;
    struct fp_tok t;
    do
        lex_raw(&peek, &t);
    while (t.kind == FP_SEMI);
    st->semis_checked = t.start;
    return t.kind == FP_END;
}

/* Paren depth and the VALUES tuple bookkeeping, after t was written. */
static void track(struct fp_out *o, struct fp_lex *lx, struct fp_state *st, const struct fp_tok *t)
{
    int pending = st->values_pending;
    st->values_pending = t->kind == FP_WORD && o->prev_kw == KW_VALUES;
    if (t->kind == FP_LPAREN) {
        if (pending && st->values_depth < 0)
            st->values_depth = (long)st->depth;
        st->depth++;
    } else if (t->kind == FP_RPAREN && st->depth > 0) {
        st->depth--;
        if (st->values_depth == (long)st->depth) {
            st->values_depth = -1;
            collapse_tuples(o, lx);
        }
    }
}

static void out_finish(struct fp_out *o)
{
    if (o->cap == 0)
        return;
    size_t end = o->n < o->cap ? o->n : o->cap - 1;
    if (o->n >= o->cap && end > 0) {
        /* Cut before a UTF-8 sequence the limit would split. */
        size_t lead = end;
        while (lead > 0 && end - lead < 4 && ((unsigned char)o->buf[lead - 1] & 0xc0) == 0x80)
            lead--;
        if (lead > 0) {
            unsigned char c = (unsigned char)o->buf[lead - 1];
            size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
            if (c >= 0xc0 && (lead - 1) + need > end)
                end = lead - 1;
        }
    }
    o->buf[end] = 0;
}

size_t pg_fingerprint_full(const char *sql, size_t len, char *out, size_t cap, uint64_t *hash)
{
    struct fp_out o = {out, out ? cap : 0, 0, FNV_BASIS, FP_END, KW_NONE};
    struct fp_lex lx = {sql, sql ? len : 0, 0, FP_END, 0};
    struct fp_state st = {0, -1, 0, 0};
    struct fp_tok t;
    for (;;) {
        int prev_kw = o.prev_kw;
        if ((prev_kw == KW_IN && collapse_list(&o, &lx, FP_LPAREN, FP_RPAREN)) ||
            (prev_kw == KW_ARRAY && collapse_list(&o, &lx, FP_LBRACK, FP_RBRACK))) {
            st.values_pending = 0;
            continue;
        }
        lex_next(&lx, &t);
        if (t.kind == FP_END || (t.kind == FP_SEMI && only_semis_left(&st, &lx)))
            break;
        emit(&o, sql, &t);
        track(&o, &lx, &st, &t);
    }
    out_finish(&o);
    if (hash)
        *hash = o.hash;
    return o.n;
}

size_t pg_fingerprint(const char *sql, size_t len, char *out, size_t cap)
{
    return pg_fingerprint_full(sql, len, out, cap, NULL);
}

uint64_t pg_fingerprint_hash(const char *fp, size_t len)
{
    uint64_t h = FNV_BASIS;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)fp[i]) * FNV_PRIME;
    return h;
}

/* ---- Volatility ---- */

static const char *const volatile_functions[] = {
    "now", "clock_timestamp", "statement_timestamp", "transaction_timestamp", "timeofday",
    "random", "random_normal", "setseed", "gen_random_uuid", "uuidv4", "uuidv7",
    "uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4", "nextval", "currval", "lastval",
    "pg_backend_pid", "txid_current", "txid_current_if_assigned", "pg_current_xact_id",
    "pg_current_xact_id_if_assigned", "inet_server_addr", "inet_server_port", "inet_client_addr",
    "inet_client_port", "pg_postmaster_start_time", "pg_conf_load_time", NULL,
};

static const char *const volatile_keywords[] = {
    "current_timestamp", "current_time", "current_date", "localtime", "localtimestamp",
    "tablesample", NULL,
};

int pg_sql_is_volatile(const char *sql, size_t len)
{
    struct fp_lex lx = {sql, sql ? len : 0, 0, FP_END, 0};
    struct fp_tok t, next;
    lex_raw(&lx, &t);
    while (t.kind != FP_END) {
        lex_raw(&lx, &next);
        if (t.kind == FP_WORD) {
            if (word_in(sql, &t, volatile_keywords))
                return 1;
            if (next.kind == FP_LPAREN && word_in(sql, &t, volatile_functions))
                return 1;
        }
        t = next;
    }
    return 0;
}
