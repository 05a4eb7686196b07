/* The auth file parser (PgBouncer userlist.txt format). See auth_file.h for the contracts. */
#include "auth_file.h"
#include "readfile.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct af_parser {
    const char *text;
    size_t len;
    size_t pos;
    size_t line;
    const char *name;
    char *err;
    size_t errlen;
    char *pool;         /* unescaped strings, each NUL-terminated */
    size_t pool_used;
    struct sy_auth_entry *entries;
    size_t n, cap;
};

/* Writes "NAME:LINE: message" (or "NAME: message" when line is 0) into p->err. Returns -1. */
__attribute__((format(printf, 3, 4)))
static int af_fail(struct af_parser *p, size_t line, const char *fmt, ...)
{
    if (p->err == NULL || p->errlen == 0)
        return -1;
    int n = line ? snprintf(p->err, p->errlen, "%s:%zu: ", p->name, line)
                 : snprintf(p->err, p->errlen, "%s: ", p->name);
    if (n >= 0 && (size_t)n < p->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* A user name made safe for a message: control bytes as '?', at most 63 bytes. */
static const char *af_shown(const char *user, char out[SY_AUTH_USER_MAX + 1])
{
    size_t i = 0;
    for (; user[i] != '\0' && i < SY_AUTH_USER_MAX; i++) {
        unsigned char c = (unsigned char)user[i];
        out[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    out[i] = '\0';
    return out;
}

static int af_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

static void af_skip_blanks(struct af_parser *p)
{
    while (p->pos < p->len && af_blank(p->text[p->pos]))
        p->pos++;
}

static int af_at_eol(const struct af_parser *p)
{
    return p->pos >= p->len || p->text[p->pos] == '\n';
}

/*
 * Reads a quoted string starting at the opening quote. When keep is set the unescaped bytes go
 * to the pool (NUL-terminated) and *out points at them; max bounds their length and what names
 * the field in a message. Returns 0, or -1 with a message.
 */
static int af_quoted(struct af_parser *p, int keep, size_t max, const char *what,
                     const char *user, char **out)
{
    char shown[SY_AUTH_USER_MAX + 1];
    char *dst = p->pool + p->pool_used;
    size_t n = 0;
    p->pos++; /* the opening quote */
    for (;;) {
        if (af_at_eol(p))
            return af_fail(p, p->line, "unterminated quoted string (a \" inside quotes is "
                                       "written \"\")");
        char c = p->text[p->pos];
        if (c == '\0')
            return af_fail(p, p->line, "NUL byte in the file");
        if (c == '"') {
            if (p->pos + 1 < p->len && p->text[p->pos + 1] == '"') {
                p->pos++; /* "" is one literal quote */
            } else {
                p->pos++;
                break;
            }
        }
        p->pos++;
        if (!keep)
            continue;
        if (n == max) {
            if (user != NULL)
                return af_fail(p, p->line, "the %s for user \"%s\" is longer than %zu bytes",
                               what, af_shown(user, shown), max);
            return af_fail(p, p->line, "the %s is longer than %zu bytes", what, max);
        }
        dst[n++] = c;
    }
    if (keep) {
        dst[n] = '\0';
        p->pool_used += n + 1;
        *out = dst;
    }
    return 0;
}

/* Whether s[0, n) is base64 shaped: a multiple of 4, alphabet, '=' only as 1-2 final chars. */
static int af_b64_shape(const char *s, size_t n)
{
    if (n == 0 || n % 4 != 0)
        return 0;
    size_t pad = s[n - 1] == '=' ? (s[n - 2] == '=' ? 2 : 1) : 0;
    for (size_t i = 0; i < n - pad; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/'))
            return 0;
    }
    return 1;
}

/* Structural check of "SCRAM-SHA-256$<digits>:<b64>$<b64 44>:<b64 44>". */
static int af_scram_shape(const char *s)
{
    const char *p = s + strlen("SCRAM-SHA-256$");
    size_t digits = strspn(p, "0123456789");
    if (digits == 0 || digits > 10 || p[digits] != ':')
        return 0;
    p += digits + 1;
    const char *dollar = strchr(p, '$');
    if (dollar == NULL || !af_b64_shape(p, (size_t)(dollar - p)))
        return 0;
    p = dollar + 1;
    const char *colon = strchr(p, ':');
    if (colon == NULL || colon - p != 44 || !af_b64_shape(p, 44))
        return 0;
    p = colon + 1;
    return strlen(p) == 44 && af_b64_shape(p, 44);
}

/* Whether s is "md5" followed by exactly 32 lowercase hex digits. */
static int af_md5_shape(const char *s)
{
    return strncmp(s, "md5", 3) == 0 && strlen(s) == 35 &&
           strspn(s + 3, "0123456789abcdef") == 32;
}

/* Judges the secret's kind; -1 with a message for a broken SCRAM verifier. */
static int af_kind(struct af_parser *p, const char *user, const char *secret,
                   enum sy_secret_kind *kind)
{
    char shown[SY_AUTH_USER_MAX + 1];
    if (secret[0] == '\0')
        *kind = SY_SECRET_NONE;
    else if (af_md5_shape(secret))
        *kind = SY_SECRET_MD5;
    else if (strncmp(secret, "SCRAM-SHA-256$", 14) == 0) {
        if (!af_scram_shape(secret))
            return af_fail(p, p->line,
                           "the secret for user \"%s\" starts with SCRAM-SHA-256$ but is not "
                           "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>",
                           af_shown(user, shown));
        *kind = SY_SECRET_SCRAM;
    } else
        *kind = SY_SECRET_PLAIN;
    return 0;
}

static int af_add(struct af_parser *p, const char *user, const char *secret,
                  enum sy_secret_kind kind)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        struct sy_auth_entry *e = realloc(p->entries, cap * sizeof *e);
        if (e == NULL)
            return af_fail(p, p->line, "out of memory");
        p->entries = e;
        p->cap = cap;
    }
    p->entries[p->n].user = user;
    p->entries[p->n].secret = secret;
    p->entries[p->n].kind = kind;
    p->entries[p->n].line = p->line;
    p->n++;
    return 0;
}

/* Parses one entry line, starting at its opening quote; stops at the end of the line. */
static int af_entry(struct af_parser *p)
{
    static const char expected[] = "expected \"user\" \"secret\"";
    char *user = NULL, *secret = NULL;
    char shown[SY_AUTH_USER_MAX + 1];
    if (af_quoted(p, 1, SY_AUTH_USER_MAX, "user name", NULL, &user) < 0)
        return -1;
    if (user[0] == '\0')
        return af_fail(p, p->line, "the user name is empty");
    size_t before = p->pos;
    af_skip_blanks(p);
    if (p->pos == before || af_at_eol(p) || p->text[p->pos] != '"')
        return af_fail(p, p->line, "%s", expected);
    if (af_quoted(p, 1, SY_AUTH_SECRET_MAX, "secret", user, &secret) < 0)
        return -1;
    enum sy_secret_kind kind;
    if (af_kind(p, user, secret, &kind) < 0)
        return -1;
    /* PgBouncer ignores the rest of the line; we accept only more quoted fields there. */
    for (;;) {
        before = p->pos;
        af_skip_blanks(p);
        if (af_at_eol(p))
            break;
        if (p->pos == before || p->text[p->pos] != '"')
            return af_fail(p, p->line, "unexpected text after the secret for user \"%s\"; %s",
                           af_shown(user, shown), expected);
        if (af_quoted(p, 0, 0, NULL, NULL, NULL) < 0)
            return -1;
    }
    return af_add(p, user, secret, kind);
}

static int af_parse_lines(struct af_parser *p)
{
    /* A UTF-8 byte order mark, as some editors write, is not part of the first line. */
    if (p->len >= 3 && memcmp(p->text, "\xef\xbb\xbf", 3) == 0)
        p->pos = 3;
    while (p->pos < p->len) {
        af_skip_blanks(p);
        if (af_at_eol(p)) {
            /* a blank line */
        } else if (p->text[p->pos] == ';' || p->text[p->pos] == '#') {
            const char *nl = memchr(p->text + p->pos, '\n', p->len - p->pos);
            const char *nul = memchr(p->text + p->pos, '\0',
                                     (nl ? (size_t)(nl - p->text) : p->len) - p->pos);
            if (nul != NULL)
                return af_fail(p, p->line, "NUL byte in the file");
            p->pos = nl ? (size_t)(nl - p->text) : p->len;
        } else if (p->text[p->pos] == '"') {
            if (af_entry(p) < 0)
                return -1;
        } else if (p->text[p->pos] == '\0') {
            return af_fail(p, p->line, "NUL byte in the file");
        } else {
            return af_fail(p, p->line, "expected \"user\" \"secret\"");
        }
        if (p->pos < p->len) { /* at a '\n' */
            p->pos++;
            p->line++;
        }
    }
    return 0;
}

static int af_cmp(const void *a, const void *b)
{
    const struct sy_auth_entry *x = a, *y = b;
    int c = strcmp(x->user, y->user);
    if (c != 0)
        return c;
    return x->line < y->line ? -1 : x->line > y->line;
}

/* Sorts by user and refuses duplicates, naming the earliest line that repeats a user. */
static int af_sort(struct af_parser *p)
{
    if (p->n > 1)
        qsort(p->entries, p->n, sizeof *p->entries, af_cmp);
    size_t dup = 0;
    for (size_t i = 1; i < p->n; i++) {
        if (strcmp(p->entries[i - 1].user, p->entries[i].user) == 0 &&
            (dup == 0 || p->entries[i].line < p->entries[dup].line))
            dup = i;
    }
    if (dup == 0)
        return 0;
    /* The sort puts the user's first line first among equals. */
    size_t first = dup;
    while (first > 0 && strcmp(p->entries[first - 1].user, p->entries[dup].user) == 0)
        first--;
    char shown[SY_AUTH_USER_MAX + 1];
    return af_fail(p, p->entries[dup].line, "user \"%s\" is listed twice (first on line %zu)",
                   af_shown(p->entries[dup].user, shown), p->entries[first].line);
}

static void af_wipe(void *ptr, size_t n)
{
    if (ptr != NULL && n > 0)
        explicit_bzero(ptr, n);
}

int sy_auth_file_parse(const char *text, size_t len, const char *name, struct sy_auth_file *af,
                       char *err, size_t errlen)
{
    struct af_parser p;
    memset(&p, 0, sizeof p);
    memset(af, 0, sizeof *af);
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    p.text = text;
    p.len = len;
    p.line = 1;
    p.name = name ? name : "auth file";
    p.err = err;
    p.errlen = errlen;
    if (text == NULL && len > 0)
        return af_fail(&p, 0, "no text to parse");
    if (len > SY_AUTH_FILE_MAX)
        return af_fail(&p, 0, "the file is over the 16 MiB limit; is it the right file?");
    /* Unescaped strings and their NULs never take more room than their quoted form. */
    p.pool = malloc(len + 1);
    if (p.pool == NULL)
        return af_fail(&p, 0, "out of memory");
    if (af_parse_lines(&p) < 0 || af_sort(&p) < 0) {
        af_wipe(p.pool, p.pool_used);
        free(p.pool);
        free(p.entries);
        return -1;
    }
    af->entries = p.entries;
    af->nentries = p.n;
    af->pool = p.pool;
    af->pool_len = p.pool_used;
    return 0;
}

int sy_auth_file_load(const char *path, struct sy_auth_file *af, char *err, size_t errlen)
{
    memset(af, 0, sizeof *af);
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (path == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "auth file path is missing");
        return -1;
    }
    size_t len = 0;
    char *text = sy_read_file(path, SY_AUTH_FILE_MAX, &len, err, errlen);
    if (text == NULL)
        return -1;
    int rc = sy_auth_file_parse(text, len, path, af, err, errlen);
    af_wipe(text, len);
    free(text);
    return rc;
}

static int af_find_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const struct sy_auth_entry *)elem)->user);
}

const struct sy_auth_entry *sy_auth_file_find(const struct sy_auth_file *af, const char *user)
{
    if (af == NULL || user == NULL || af->nentries == 0)
        return NULL;
    return bsearch(user, af->entries, af->nentries, sizeof *af->entries, af_find_cmp);
}

void sy_auth_file_free(struct sy_auth_file *af)
{
    if (af == NULL)
        return;
    af_wipe(af->pool, af->pool_len);
    free(af->pool);
    free(af->entries);
    memset(af, 0, sizeof *af);
}

const char *sy_auth_kind_name(enum sy_secret_kind kind)
{
    switch (kind) {
    case SY_SECRET_NONE: return "none";
    case SY_SECRET_PLAIN: return "plain";
    case SY_SECRET_MD5: return "md5";
    case SY_SECRET_SCRAM: return "scram-sha-256";
    default: return "unknown";
    }
}

int sy_auth_file_readable_by_others(const char *path)
{
    struct stat st;
    if (path == NULL) {
        errno = EINVAL;
        return -1;
    }
    if (stat(path, &st) != 0)
        return -1;
    return (st.st_mode & (S_IRGRP | S_IROTH)) != 0 ? 1 : 0;
}
