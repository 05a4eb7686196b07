/*
 * Switchyard configuration parser. See config.h for the contracts and docs/config.md for keys.
 *
 * The parser works on (pointer, length) spans of the caller's text and never reads past len:
 * the text need not be NUL-terminated. A line is copied only once it is known to be a value,
 * into a bounded buffer, so the value setters can use ordinary C strings.
 *
 * sy_config_parse fills a private struct and copies it to the caller's only on success, so a
 * failed reload leaves the running config untouched.
 */
#include "config.h"
#include "readfile.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFG_VALUE_MAX 4096          /* longest value plus its NUL; a long listen list fits */
#define CFG_FILE_MAX (1024 * 1024)  /* sy_config_load refuses larger files */
#define CFG_NAME_MAX 32             /* names longer than this get no "did you mean" */
#define CFG_SHOW_MAX 48             /* bytes of user text quoted in a message */
#define CFG_CLIENT_CONN_MAX 1000000 /* far above any file descriptor limit; catches typos */
#define CFG_SCRAM_ITER_MAX 100000000 /* 10^8: PBKDF2 at that count takes a core for a minute or more */
#define CFG_KB 1024ull
#define CFG_MB (1024ull * 1024)
#define CFG_GB (1024ull * 1024 * 1024)

enum cfg_section {
    CFG_SEC_NONE = 0,       /* before the first section header */
    CFG_SEC_SWITCHYARD = 1, /* [switchyard]: the proxy itself */
    CFG_SEC_BLUE = 2,       /* [blue]: the database live at the start */
    CFG_SEC_GREEN = 3,      /* [green]: the database switched to */
    CFG_SEC_USERS = 4,      /* [users]: optional per-user auth_type */
    CFG_SEC_COUNT = 5,
};

/* Indices into cfg_side_keys; the completeness check looks these up. */
enum cfg_side_key {
    CFG_SIDE_HOST = 0, /* host = ADDRESS */
    CFG_SIDE_PORT = 1, /* port = NUMBER */
    CFG_SIDE_TLS = 2,  /* server_tls = MODE */
    CFG_SIDE_TLS_CA = 3, /* server_tls_ca = PATH */
    CFG_SIDE_CONTROL_USER = 4, /* control_user = NAME */
    CFG_SIDE_CONTROL_PASSWORD = 5, /* control_password = SECRET */
    CFG_SIDE_CONTROL_DATABASE = 6, /* control_database = NAME */
    CFG_SIDE_KEYS = 7,
};

#define CFG_KEYS_MAX 64 /* at least the number of keys in the largest section */

struct cfg_parser {
    const char *name;         /* file name used in messages */
    struct sy_config *cfg;    /* the config being filled */
    char *err;                /* caller's message buffer, may be NULL */
    size_t errlen;
    size_t line;              /* current line, counted from 1 */
    enum cfg_section section; /* section of the current line */
    const char *key;          /* name of the key being set, for messages */
    int secret;               /* 1 while its value must never be quoted (cfg_show_value) */
    size_t section_line[CFG_SEC_COUNT];          /* header line of each section; 0 if absent */
    size_t key_line[CFG_SEC_COUNT][CFG_KEYS_MAX]; /* line a key was first set; 0 if never */
    char val[CFG_VALUE_MAX];  /* the current value: unquoted, trimmed, NUL-terminated */
};

struct cfg_key {
    const char *name;
    int (*set)(struct cfg_parser *p, const char *val); /* 0, or -1 after writing the error */
    int repeatable;                                     /* 1 if the key may appear again */
};

static const char *const cfg_section_names[CFG_SEC_COUNT] = {
    [CFG_SEC_NONE] = "", [CFG_SEC_SWITCHYARD] = "switchyard",
    [CFG_SEC_BLUE] = "blue", [CFG_SEC_GREEN] = "green", [CFG_SEC_USERS] = "users",
};

/* ---- small helpers ---- */

static int cfg_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static char cfg_lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

/* Narrows the span *s, *n to drop leading and trailing white space. */
static void cfg_trim(const char **s, size_t *n)
{
    while (*n > 0 && cfg_is_space(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && cfg_is_space((*s)[*n - 1]))
        (*n)--;
}

/* 1 if the span is only white space, optionally followed by a ';' or '#' comment. */
static int cfg_is_blank_or_comment(const char *s, size_t n)
{
    cfg_trim(&s, &n);
    return n == 0 || s[0] == ';' || s[0] == '#';
}

/* 1 if the span equals the C string word exactly. */
static int cfg_span_eq(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && memcmp(s, word, n) == 0;
}

/* 1 if the C strings are equal ignoring ASCII case. Independent of the locale. */
static int cfg_ascii_ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (cfg_lower(*a) != cfg_lower(*b))
            return 0;
    return *a == *b;
}

/*
 * Copies user text into out for a message: at most CFG_SHOW_MAX - 4 bytes, control bytes as
 * '?', "..." when cut. Returns out.
 */
static const char *cfg_show(const char *s, size_t n, char out[CFG_SHOW_MAX])
{
    size_t keep = n < CFG_SHOW_MAX - 4 ? n : CFG_SHOW_MAX - 4;
    for (size_t i = 0; i < keep; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (keep < n) {
        memcpy(out + keep, "...", 3);
        keep += 3;
    }
    out[keep] = '\0';
    return out;
}

/*
 * 1 when the span is a plain name (letters, digits, '_', '-', '.'; at most CFG_SHOW_MAX - 4
 * bytes) that a message may quote. Anything else on a line that failed to parse may be part of
 * a secret written wrongly, so it is described, never quoted.
 */
static int cfg_is_name(const char *s, size_t n)
{
    if (n == 0 || n > CFG_SHOW_MAX - 4)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = cfg_lower(s[i]);
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              c == '.'))
            return 0;
    }
    return 1;
}

/* 1 when the key's value may be a secret (a password or secret key): it is never quoted. */
static int cfg_key_is_secret(const char *k, size_t kn)
{
    static const char *const words[] = {"password", "secret", "passwd", "token"};
    for (size_t w = 0; w < sizeof words / sizeof words[0]; w++) {
        size_t wn = strlen(words[w]);
        for (size_t i = 0; i + wn <= kn; i++) {
            size_t j = 0;
            while (j < wn && cfg_lower(k[i + j]) == words[w][j])
                j++;
            if (j == wn)
                return 1;
        }
    }
    return 0;
}

/* The value v of the key being set, for a message: cfg_show, or "(not shown)" for a secret. */
static const char *cfg_show_value(const struct cfg_parser *p, const char *v,
                                  char out[CFG_SHOW_MAX])
{
    if (p->secret) {
        snprintf(out, CFG_SHOW_MAX, "%s", "(not shown)");
        return out;
    }
    return cfg_show(v, strlen(v), out);
}

/* Writes "NAME:LINE: message" (or "NAME: message" when line is 0) into p->err. Returns -1. */
static int cfg_vfail(struct cfg_parser *p, size_t line, const char *fmt, va_list ap)
{
    if (p->err == NULL || p->errlen == 0)
        return -1;
    int n = line ? snprintf(p->err, p->errlen, "%s:%zu: ", p->name, line)
                 : snprintf(p->err, p->errlen, "%s: ", p->name);
    if (n >= 0 && (size_t)n < p->errlen)
        vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
    return -1;
}

__attribute__((format(printf, 2, 3)))
static int cfg_fail(struct cfg_parser *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cfg_vfail(p, p->line, fmt, ap);
    va_end(ap);
    return -1;
}

__attribute__((format(printf, 3, 4)))
static int cfg_fail_at(struct cfg_parser *p, size_t line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cfg_vfail(p, line, fmt, ap);
    va_end(ap);
    return -1;
}

static unsigned cfg_min(unsigned a, unsigned b) { return a < b ? a : b; }

/*
 * Edit distance between the span a and the string b, counting a swap of two neighbours as one
 * edit (optimal string alignment). Returns CFG_NAME_MAX + 1 when either is too long to matter.
 */
static size_t cfg_distance(const char *a, size_t an, const char *b)
{
    size_t bn = strlen(b);
    unsigned char d[CFG_NAME_MAX + 1][CFG_NAME_MAX + 1]; /* distances never exceed 32 */
    if (an > CFG_NAME_MAX || bn > CFG_NAME_MAX)
        return CFG_NAME_MAX + 1;
    for (size_t i = 0; i <= an; i++)
        d[i][0] = (unsigned char)i;
    for (size_t j = 0; j <= bn; j++)
        d[0][j] = (unsigned char)j;
    for (size_t i = 1; i <= an; i++) {
        for (size_t j = 1; j <= bn; j++) {
            unsigned best = d[i - 1][j - 1] + (unsigned)(a[i - 1] != b[j - 1]);
            best = cfg_min(best, d[i - 1][j] + 1u);
            best = cfg_min(best, d[i][j - 1] + 1u);
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
                best = cfg_min(best, d[i - 2][j - 2] + 1u);
            d[i][j] = (unsigned char)best;
        }
    }
    return d[an][bn];
}

/* ---- numbers and units (shared with the command line through sy_parse_*) ---- */

/*
 * Reads decimal digits from the span into *out, refusing values over max. Returns 0, or -1 if
 * the span is empty, holds anything but digits, or is over max.
 */
static int cfg_parse_uint(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned digit = (unsigned)(s[i] - '0');
        if (v > (max - digit) / 10)
            return -1;
        v = v * 10 + digit;
    }
    *out = v;
    return 0;
}

/*
 * Splits "NUMBER[ ]UNIT": reads the number into *num and points *unit at the unit (possibly "").
 * Spaces and tabs may separate the two, but nothing may follow a bare number. Returns 0, or -1
 * on no digits, overflow or a sign.
 */
static int cfg_split_number(const char *s, uint64_t *num, const char **unit)
{
    size_t digits = 0;
    if (s == NULL)
        return -1;
    while (s[digits] >= '0' && s[digits] <= '9')
        digits++;
    if (cfg_parse_uint(s, digits, UINT64_MAX, num) != 0)
        return -1;
    const char *u = s + digits;
    while (*u == ' ' || *u == '\t')
        u++;
    if (*u == '\0' && u != s + digits)
        return -1; /* trailing white space with no unit is junk, like any other */
    *unit = u;
    return 0;
}

/* Multiplies num by mult into *out. Returns 0, or -1 on overflow. */
static int cfg_scale(uint64_t num, uint64_t mult, uint64_t *out)
{
    if (mult != 0 && num > UINT64_MAX / mult)
        return -1;
    *out = num * mult;
    return 0;
}

int sy_parse_duration_ms(const char *s, uint64_t *out)
{
    static const struct { const char *unit; uint64_t ms; } units[] = {
        {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000},
    };
    uint64_t num;
    const char *unit;
    if (out == NULL || cfg_split_number(s, &num, &unit) != 0)
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (cfg_ascii_ieq(unit, units[i].unit))
            return cfg_scale(num, units[i].ms, out);
    return -1;
}

int sy_parse_size(const char *s, uint64_t *out)
{
    static const struct { const char *unit; uint64_t bytes; } units[] = {
        {"", 1}, {"b", 1}, {"kb", CFG_KB}, {"mb", CFG_MB}, {"gb", CFG_GB},
    };
    uint64_t num;
    const char *unit;
    if (out == NULL || cfg_split_number(s, &num, &unit) != 0)
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (cfg_ascii_ieq(unit, units[i].unit))
            return cfg_scale(num, units[i].bytes, out);
    return -1;
}

/* Writes a size the way an operator would: "1GB", "64KB", "10000 bytes". Returns out. */
static const char *cfg_size_text(uint64_t v, char out[32])
{
    if (v != 0 && v % CFG_GB == 0)
        snprintf(out, 32, "%lluGB", (unsigned long long)(v / CFG_GB));
    else if (v != 0 && v % CFG_MB == 0)
        snprintf(out, 32, "%lluMB", (unsigned long long)(v / CFG_MB));
    else if (v != 0 && v % CFG_KB == 0)
        snprintf(out, 32, "%lluKB", (unsigned long long)(v / CFG_KB));
    else
        snprintf(out, 32, "%llu bytes", (unsigned long long)v);
    return out;
}

/* ---- value setters: each checks p->val for the key p->key ---- */

/* Parses a size for p->key within [min, max] into *out. Returns 0 or -1 with the error. */
static int cfg_value_size(struct cfg_parser *p, const char *v, uint64_t min, uint64_t max,
                          uint32_t *out)
{
    char show[CFG_SHOW_MAX], lim[32];
    uint64_t n;
    if (sy_parse_size(v, &n) != 0)
        return cfg_fail(p, "bad size '%s' for %s; use a number with B, KB, MB or GB, like 64KB",
                        cfg_show_value(p, v, show), p->key);
    if (n < min)
        return cfg_fail(p, "%s = %s is too small; use at least %s", p->key,
                        cfg_show_value(p, v, show), cfg_size_text(min, lim));
    if (n > max)
        return cfg_fail(p, "%s = %s is too large; use at most %s", p->key,
                        cfg_show_value(p, v, show), cfg_size_text(max, lim));
    *out = (uint32_t)n;
    return 0;
}

/* Parses a duration for p->key into *out; 0 is refused unless allow_zero. */
static int cfg_value_duration(struct cfg_parser *p, const char *v, int allow_zero, uint64_t *out)
{
    char show[CFG_SHOW_MAX];
    uint64_t ms;
    if (sy_parse_duration_ms(v, &ms) != 0)
        return cfg_fail(p, "bad duration '%s' for %s; use a whole number with ms, s, m or h, "
                        "like 15s", cfg_show_value(p, v, show), p->key);
    if (ms == 0 && !allow_zero)
        return cfg_fail(p, "%s must be more than 0; use a duration like 15s", p->key);
    *out = ms;
    return 0;
}

/* Parses a TCP port (1-65535) from the span into *out. Returns 0 or -1 (no message). */
static int cfg_parse_port(const char *s, size_t n, int *out)
{
    uint64_t v;
    if (cfg_parse_uint(s, n, 65535, &v) != 0 || v == 0)
        return -1;
    *out = (int)v;
    return 0;
}

/* Finds v (ASCII case ignored) in words[0..n) and stores its index. Returns 0 or -1. */
static int cfg_value_word(const char *v, const char *const *words, size_t n, int *index)
{
    for (size_t i = 0; i < n; i++) {
        if (cfg_ascii_ieq(v, words[i])) {
            *index = (int)i;
            return 0;
        }
    }
    return -1;
}

static int cfg_set_protocol(struct cfg_parser *p, const char *v)
{
    char show[CFG_SHOW_MAX];
    if (cfg_ascii_ieq(v, "postgres")) {
        p->cfg->protocol = SY_PROTO_POSTGRES;
        return 0;
    }
    if (cfg_ascii_ieq(v, "mysql"))
        return cfg_fail(p, "protocol 'mysql' is not supported yet; use protocol = postgres");
    return cfg_fail(p, "unknown protocol '%s'; use protocol = postgres",
                    cfg_show_value(p, v, show));
}

/* 1 if the span is a numeric address of family af, as inet_pton reads it. */
static int cfg_is_numeric_addr(int af, const char *s, size_t n)
{
    char buf[64];
    unsigned char bin[16];
    if (n == 0 || n >= sizeof buf)
        return 0;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return inet_pton(af, buf, bin) == 1;
}

/*
 * Splits one listen item "ADDR:PORT" or "[IPV6]:PORT" (already trimmed, non-empty) into *a.
 * Returns 0 or -1 with the error.
 */
static int cfg_listen_split(struct cfg_parser *p, const char *s, size_t n,
                            struct sy_listen_addr *a)
{
    char show[CFG_SHOW_MAX];
    const char *host, *colon;
    size_t hn;
    cfg_show(s, n, show);
    if (s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (close == NULL)
            return cfg_fail(p, "listen '%s': missing ']' after the IPv6 address; write it "
                            "like [::1]:6432", show);
        host = s + 1;
        hn = (size_t)(close - host);
        colon = close + 1 < s + n && close[1] == ':' ? close + 1 : NULL;
        if (colon == NULL && close + 1 < s + n)
            return cfg_fail(p, "listen '%s': expected ':PORT' after ']', like [::1]:6432", show);
        if (colon != NULL && !cfg_is_numeric_addr(AF_INET6, host, hn))
            return cfg_fail(p, "listen '%s': not a numeric IPv6 address inside [ ]", show);
    } else {
        colon = NULL;
        for (size_t i = n; i > 0 && colon == NULL; i--)
            colon = s[i - 1] == ':' ? s + i - 1 : NULL;
        host = s;
        hn = colon ? (size_t)(colon - s) : n;
        if (colon != NULL && memchr(host, ':', hn) != NULL)
            return cfg_fail(p, "listen '%s': put an IPv6 address in brackets, like [::1]:6432",
                            show);
        if (colon != NULL && hn == 0)
            return cfg_fail(p, "listen '%s' has no address; use 0.0.0.0%s to listen on every "
                            "IPv4 address", show, show);
        if (colon != NULL && !cfg_span_eq(host, hn, "localhost") &&
            !cfg_is_numeric_addr(AF_INET, host, hn))
            return cfg_fail(p, "listen '%s': the address must be a numeric IPv4 address, an "
                            "IPv6 address in [ ], or localhost", show);
    }
    if (colon == NULL)
        return cfg_fail(p, "listen '%s' has no port; write ADDR:PORT, like 127.0.0.1:6432", show);
    if (cfg_parse_port(colon + 1, (size_t)(s + n - colon - 1), &a->port) != 0)
        return cfg_fail(p, "listen '%s': bad port; use a number from 1 to 65535", show);
    memcpy(a->host, host, hn); /* hn < 64: inet_pton or "localhost" accepted it */
    a->host[hn] = '\0';
    return 0;
}

/* Adds one comma-separated listen item. Returns 0 or -1 with the error. */
static int cfg_listen_add(struct cfg_parser *p, const char *s, size_t n)
{
    struct sy_config *cfg = p->cfg;
    struct sy_listen_addr a;
    memset(&a, 0, sizeof(a)); /* compared whole on reload (main.c): no stray bytes */
    cfg_trim(&s, &n);
    if (n == 0)
        return cfg_fail(p, "empty address in listen; separate addresses with one comma, like "
                        "listen = 127.0.0.1:6432, [::1]:6432");
    if (cfg_listen_split(p, s, n, &a) != 0)
        return -1;
    for (size_t i = 0; i < cfg->nlisten; i++) {
        if (cfg->listen[i].port == a.port && strcmp(cfg->listen[i].host, a.host) == 0) {
            char show[CFG_SHOW_MAX];
            return cfg_fail(p, "listen address '%s' is given twice; remove one",
                            cfg_show(s, n, show));
        }
    }
    if (cfg->nlisten == SY_LISTEN_MAX)
        return cfg_fail(p, "too many listen addresses; the limit is %d", SY_LISTEN_MAX);
    cfg->listen[cfg->nlisten++] = a;
    return 0;
}

static int cfg_set_listen(struct cfg_parser *p, const char *v)
{
    for (;;) {
        const char *comma = strchr(v, ',');
        size_t n = comma ? (size_t)(comma - v) : strlen(v);
        if (cfg_listen_add(p, v, n) != 0)
            return -1;
        if (comma == NULL)
            return 0;
        v = comma + 1;
    }
}

static int cfg_set_admin_socket(struct cfg_parser *p, const char *v)
{
    size_t n = strlen(v);
    if (n == 0)
        return cfg_fail(p, "admin_socket is empty; give a path like /tmp/switchyard.sock");
    if (n >= sizeof p->cfg->admin_socket)
        return cfg_fail(p, "admin_socket is %zu characters; a Unix socket path may have at most "
                        "%zu", n, sizeof p->cfg->admin_socket - 1);
    memcpy(p->cfg->admin_socket, v, n + 1);
    return 0;
}

static int cfg_set_admin_socket_mode(struct cfg_parser *p, const char *v)
{
    char show[CFG_SHOW_MAX];
    unsigned mode = 0;
    size_t n = strlen(v);
    cfg_show_value(p, v, show);
    if (n == 0)
        return cfg_fail(p, "admin_socket_mode is empty; write it in octal, like 0600");
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '7')
            return cfg_fail(p, "admin_socket_mode '%s' is not octal; write it like 0600 or 0660",
                            show);
        mode = mode * 8 + (unsigned)(v[i] - '0');
        if (mode > 0777)
            return cfg_fail(p, "admin_socket_mode %s is over 0777; give permission bits only, "
                            "like 0660", show);
    }
    p->cfg->admin_socket_mode = mode;
    return 0;
}

static int cfg_set_active(struct cfg_parser *p, const char *v)
{
    static const char *const words[] = {[SY_BLUE] = "blue", [SY_GREEN] = "green"};
    char show[CFG_SHOW_MAX];
    int i = 0;
    if (cfg_value_word(v, words, 2, &i) != 0)
        return cfg_fail(p, "active must be blue or green, not '%s'", cfg_show_value(p, v, show));
    p->cfg->active = (enum sy_side)i;
    return 0;
}

static int cfg_set_log_level(struct cfg_parser *p, const char *v)
{
    static const char *const words[] = {
        [SY_LOG_ERROR] = "error", [SY_LOG_WARN] = "warn",
        [SY_LOG_INFO] = "info", [SY_LOG_DEBUG] = "debug",
    };
    char show[CFG_SHOW_MAX];
    int i = 0;
    if (cfg_value_word(v, words, 4, &i) != 0)
        return cfg_fail(p, "log_level must be error, warn, info or debug, not '%s'",
                        cfg_show_value(p, v, show));
    p->cfg->log_level = (enum sy_log_level)i;
    return 0;
}

static int cfg_set_max_message_size(struct cfg_parser *p, const char *v)
{
    return cfg_value_size(p, v, CFG_KB, CFG_GB, &p->cfg->max_message_size);
}

static int cfg_set_max_startup_packet(struct cfg_parser *p, const char *v)
{
    return cfg_value_size(p, v, 64, CFG_MB, &p->cfg->max_startup_packet);
}

static int cfg_set_io_buffer_size(struct cfg_parser *p, const char *v)
{
    return cfg_value_size(p, v, 4 * CFG_KB, 16 * CFG_MB, &p->cfg->io_buffer_size);
}

static int cfg_set_max_client_conn(struct cfg_parser *p, const char *v)
{
    char show[CFG_SHOW_MAX];
    size_t n = strlen(v);
    uint64_t conns;
    cfg_show_value(p, v, show);
    if (strspn(v, "0123456789") != n)
        return cfg_fail(p, "max_client_conn '%s' is not a whole number; write it like 10000",
                        show);
    if (cfg_parse_uint(v, n, CFG_CLIENT_CONN_MAX, &conns) != 0 || conns < 1)
        return cfg_fail(p, "max_client_conn %s is out of range; use 1 to %d", show,
                        CFG_CLIENT_CONN_MAX);
    p->cfg->max_client_conn = (uint32_t)conns;
    return 0;
}

static int cfg_set_server_pool_size(struct cfg_parser *p, const char *v)
{
    char show[CFG_SHOW_MAX];
    size_t n = strlen(v);
    uint64_t conns;
    cfg_show_value(p, v, show);
    if (strspn(v, "0123456789") != n || n == 0)
        return cfg_fail(p, "server_pool_size '%s' is not a whole number; write it like 32 "
                        "(0 turns server connection reuse off)", show);
    if (cfg_parse_uint(v, n, CFG_CLIENT_CONN_MAX, &conns) != 0)
        return cfg_fail(p, "server_pool_size %s is out of range; use 0 to %d", show,
                        CFG_CLIENT_CONN_MAX);
    p->cfg->server_pool_size = (uint32_t)conns;
    return 0;
}

static int cfg_set_server_scram_max_iterations(struct cfg_parser *p, const char *v)
{
    char show[CFG_SHOW_MAX];
    size_t n = strlen(v);
    uint64_t iters;
    cfg_show_value(p, v, show);
    if (strspn(v, "0123456789") != n || n == 0)
        return cfg_fail(p, "server_scram_max_iterations '%s' is not a whole number; write it "
                        "like 1000000", show);
    if (cfg_parse_uint(v, n, CFG_SCRAM_ITER_MAX, &iters) != 0 || iters < 4096)
        return cfg_fail(p, "server_scram_max_iterations %s is out of range; use 4096 to %d",
                        show, CFG_SCRAM_ITER_MAX);
    p->cfg->server_scram_max_iterations = (uint32_t)iters;
    return 0;
}

static int cfg_set_server_idle_timeout(struct cfg_parser *p, const char *v)
{
    return cfg_value_duration(p, v, 0, &p->cfg->server_idle_timeout_ms);
}

static int cfg_set_client_login_timeout(struct cfg_parser *p, const char *v)
{
    return cfg_value_duration(p, v, 0, &p->cfg->client_login_timeout_ms);
}

static int cfg_set_server_connect_timeout(struct cfg_parser *p, const char *v)
{
    return cfg_value_duration(p, v, 0, &p->cfg->server_connect_timeout_ms);
}

static int cfg_set_shutdown_grace(struct cfg_parser *p, const char *v)
{
    return cfg_value_duration(p, v, 1, &p->cfg->shutdown_grace_ms);
}

static const char *const cfg_auth_words[] = {
    [SY_AUTH_SCRAM] = "scram-sha-256", [SY_AUTH_MD5] = "md5", [SY_AUTH_PASSWORD] = "password",
    [SY_AUTH_TRUST] = "trust", [SY_AUTH_CERT] = "cert",
};

static int cfg_auth_word(struct cfg_parser *p, const char *v, enum sy_auth_type *out)
{
    char show[CFG_SHOW_MAX];
    int i = 0;
    if (cfg_value_word(v, cfg_auth_words + 1, 5, &i) != 0 && p->section == CFG_SEC_USERS)
        return cfg_fail(p, "%s must be scram-sha-256, md5, password, trust or cert (the value "
                        "is not shown: [users] maps a user to an auth_type; passwords go in "
                        "auth_file)", p->key);
    if (cfg_value_word(v, cfg_auth_words + 1, 5, &i) != 0)
        return cfg_fail(p, "%s must be scram-sha-256, md5, password, trust or cert, not '%s'",
                        p->key, cfg_show_value(p, v, show));
    *out = (enum sy_auth_type)(i + 1);
    return 0;
}

static int cfg_set_auth_type(struct cfg_parser *p, const char *v)
{
    return cfg_auth_word(p, v, &p->cfg->auth_type);
}

/* Copies a string value into a fixed field, or fails naming the limit. */
static int cfg_copy(struct cfg_parser *p, const char *v, char *dst, size_t cap)
{
    size_t n = strlen(v);
    if (n >= cap)
        return cfg_fail(p, "%s is %zu characters; the limit is %zu", p->key, n, cap - 1);
    memcpy(dst, v, n + 1);
    return 0;
}

static int cfg_set_auth_file(struct cfg_parser *p, const char *v)
{
    return cfg_copy(p, v, p->cfg->auth_file, sizeof p->cfg->auth_file);
}

static int cfg_set_auth_query(struct cfg_parser *p, const char *v)
{
    if (strstr(v, "$1") == NULL)
        return cfg_fail(p, "auth_query must use $1 for the user name");
    return cfg_copy(p, v, p->cfg->auth_query, sizeof p->cfg->auth_query);
}

static int cfg_set_auth_user(struct cfg_parser *p, const char *v)
{
    return cfg_copy(p, v, p->cfg->auth_user, sizeof p->cfg->auth_user);
}

static int cfg_set_auth_password(struct cfg_parser *p, const char *v)
{
    return cfg_copy(p, v, p->cfg->auth_password, sizeof p->cfg->auth_password);
}

static int cfg_set_auth_dbname(struct cfg_parser *p, const char *v)
{
    return cfg_copy(p, v, p->cfg->auth_dbname, sizeof p->cfg->auth_dbname);
}

static int cfg_set_auth_cleartext(struct cfg_parser *p, const char *v)
{
    static const char *const words[] = {"off", "on"};
    char show[CFG_SHOW_MAX];
    int i = 0;
    if (cfg_value_word(v, words, 2, &i) != 0)
        return cfg_fail(p, "%s must be on or off, not '%s'", p->key,
                        cfg_show_value(p, v, show));
    p->cfg->auth_cleartext_without_tls = i;
    return 0;
}

static int cfg_set_client_tls(struct cfg_parser *p, const char *v)
{
    static const char *const words[] = {[SY_CLIENT_TLS_DISABLE] = "disable",
                                        [SY_CLIENT_TLS_ALLOW] = "allow",
                                        [SY_CLIENT_TLS_REQUIRE] = "require"};
    char show[CFG_SHOW_MAX];
    int i = 0;
    if (cfg_value_word(v, words, 3, &i) != 0)
        return cfg_fail(p, "client_tls must be disable, allow or require, not '%s'",
                        cfg_show_value(p, v, show));
    p->cfg->client_tls = (enum sy_client_tls)i;
    return 0;
}

static int cfg_set_client_tls_cert(struct cfg_parser *p, const char *v)
{
    return cfg_copy(p, v, p->cfg->client_tls_cert, sizeof p->cfg->client_tls_cert);
}

static int cfg_set_client_tls_key(struct cfg_parser *p, const char *v)
{
    return cfg_copy(p, v, p->cfg->client_tls_key, sizeof p->cfg->client_tls_key);
}

static int cfg_set_client_tls_ca(struct cfg_parser *p, const char *v)
{
    return cfg_copy(p, v, p->cfg->client_tls_ca, sizeof p->cfg->client_tls_ca);
}

/* The side being filled: only called while the section is [blue] or [green]. */
static struct sy_server_config *cfg_side(struct cfg_parser *p)
{
    return &p->cfg->server[p->section == CFG_SEC_GREEN ? SY_GREEN : SY_BLUE];
}

static int cfg_set_host(struct cfg_parser *p, const char *v)
{
    const char *sec = cfg_section_names[p->section];
    size_t n = strlen(v);
    if (n == 0)
        return cfg_fail(p, "host in [%s] is empty; give a host name or address", sec);
    if (n >= sizeof cfg_side(p)->host)
        return cfg_fail(p, "host in [%s] is %zu characters; the limit is %zu", sec, n,
                        sizeof cfg_side(p)->host - 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c <= ' ' || c == 0x7f)
            return cfg_fail(p, "host in [%s] contains a space or control character", sec);
    }
    memcpy(cfg_side(p)->host, v, n + 1);
    return 0;
}

static int cfg_set_port(struct cfg_parser *p, const char *v)
{
    char show[CFG_SHOW_MAX];
    if (cfg_parse_port(v, strlen(v), &cfg_side(p)->port) != 0)
        return cfg_fail(p, "bad port '%s' in [%s]; use a number from 1 to 65535",
                        cfg_show_value(p, v, show), cfg_section_names[p->section]);
    return 0;
}

static const char *const cfg_server_tls_words[] = {
    [SY_SERVER_TLS_DISABLE] = "disable", [SY_SERVER_TLS_PREFER] = "prefer",
    [SY_SERVER_TLS_REQUIRE] = "require", [SY_SERVER_TLS_VERIFY_CA] = "verify-ca",
    [SY_SERVER_TLS_VERIFY_FULL] = "verify-full",
};

static int cfg_set_server_tls(struct cfg_parser *p, const char *v)
{
    char show[CFG_SHOW_MAX];
    int i = 0;
    if (cfg_value_word(v, cfg_server_tls_words, 5, &i) != 0)
        return cfg_fail(p, "server_tls in [%s] must be disable, prefer, require, verify-ca or "
                        "verify-full, not '%s'", cfg_section_names[p->section],
                        cfg_show_value(p, v, show));
    cfg_side(p)->tls = (enum sy_server_tls)i;
    return 0;
}

static int cfg_set_server_tls_ca(struct cfg_parser *p, const char *v)
{
    return cfg_copy(p, v, cfg_side(p)->tls_ca, sizeof cfg_side(p)->tls_ca);
}

static int cfg_set_control_user(struct cfg_parser *p, const char *v)
{
    return cfg_copy(p, v, cfg_side(p)->control_user, sizeof cfg_side(p)->control_user);
}

static int cfg_set_control_password(struct cfg_parser *p, const char *v)
{
    return cfg_copy(p, v, cfg_side(p)->control_password, sizeof cfg_side(p)->control_password);
}

static int cfg_set_control_database(struct cfg_parser *p, const char *v)
{
    return cfg_copy(p, v, cfg_side(p)->control_database, sizeof cfg_side(p)->control_database);
}

static int cfg_set_state_file(struct cfg_parser *p, const char *v)
{
    return cfg_copy(p, v, p->cfg->state_file, sizeof p->cfg->state_file);
}

static int cfg_set_health_interval(struct cfg_parser *p, const char *v)
{
    return cfg_value_duration(p, v, 1, &p->cfg->health_interval_ms);
}

static int cfg_set_drain_timeout(struct cfg_parser *p, const char *v)
{
    return cfg_value_duration(p, v, 0, &p->cfg->drain_timeout_ms);
}

static int cfg_set_catchup_timeout(struct cfg_parser *p, const char *v)
{
    return cfg_value_duration(p, v, 0, &p->cfg->catchup_timeout_ms);
}

static int cfg_set_step_timeout(struct cfg_parser *p, const char *v)
{
    return cfg_value_duration(p, v, 0, &p->cfg->step_timeout_ms);
}

static int cfg_set_max_transaction_age(struct cfg_parser *p, const char *v)
{
    return cfg_value_duration(p, v, 0, &p->cfg->max_transaction_age_ms);
}

static int cfg_set_rollback_window(struct cfg_parser *p, const char *v)
{
    return cfg_value_duration(p, v, 1, &p->cfg->rollback_window_ms);
}

static int cfg_set_max_lag(struct cfg_parser *p, const char *v)
{
    uint32_t mb = 0;
    /* Sizes are parsed into 32 bits; a lag limit above 4 GB is given in whole MB. */
    uint64_t n;
    if (sy_parse_size(v, &n) == 0 && n > UINT32_MAX) {
        p->cfg->max_lag_bytes = n;
        return 0;
    }
    if (cfg_value_size(p, v, 0, UINT32_MAX, &mb) != 0)
        return -1;
    p->cfg->max_lag_bytes = mb;
    return 0;
}

/* Sets *out to the index of v in words[0..n) or fails naming the choices (a "|" list). */
static int cfg_choice(struct cfg_parser *p, const char *v, const char *const *words, size_t n,
                      const char *choices, int *out)
{
    char show[CFG_SHOW_MAX];
    if (cfg_value_word(v, words, n, out) != 0)
        return cfg_fail(p, "%s must be %s, not '%s'", p->key, choices,
                        cfg_show_value(p, v, show));
    return 0;
}

static int cfg_set_reverse_replication(struct cfg_parser *p, const char *v)
{
    static const char *const w[] = {"off", "auto", "manual"};
    int i = 0;
    if (cfg_choice(p, v, w, 3, "auto, manual or off", &i) != 0)
        return -1;
    p->cfg->reverse_replication = (enum sy_reverse_repl)i;
    return 0;
}

static int cfg_set_unmovable_sessions(struct cfg_parser *p, const char *v)
{
    static const char *const w[] = {"abort", "close", "wait"};
    int i = 0;
    if (cfg_choice(p, v, w, 3, "abort, close or wait", &i) != 0)
        return -1;
    p->cfg->unmovable_sessions = (enum sy_unmovable)i;
    return 0;
}

static int cfg_set_window_expiry(struct cfg_parser *p, const char *v)
{
    static const char *const w[] = {"commit", "keep"};
    int i = 0;
    if (cfg_choice(p, v, w, 2, "commit or keep", &i) != 0)
        return -1;
    p->cfg->window_expiry = (enum sy_window_expiry)i;
    return 0;
}

static int cfg_set_shadow(struct cfg_parser *p, const char *v)
{
    static const char *const w[] = {"off", "reads", "all"};
    int i = 0;
    if (cfg_choice(p, v, w, 3, "off, reads or all", &i) != 0)
        return -1;
    p->cfg->shadow = (enum sy_shadow_mode)i;
    return 0;
}

/*
 * Only digits and one point, so that a sign, an exponent, hex, "nan" or "inf" (all of which
 * strtod takes) are refused: a fraction is written like 0.25. Digits after the sixth decimal
 * round to the nearest part per million.
 */
int sy_parse_fraction_ppm(const char *v, uint32_t *ppm)
{
    uint64_t whole = 0, frac = 0;
    size_t i = 0, digits = 0, decimals = 0;
    int round_up = 0;
    if (v == NULL || ppm == NULL)
        return -1;
    for (; v[i] >= '0' && v[i] <= '9'; i++, digits++)
        whole = whole > 1 ? 2 : whole * 10 + (uint64_t)(v[i] - '0');
    if (v[i] == '.')
        for (i++; v[i] >= '0' && v[i] <= '9'; i++, digits++, decimals++) {
            if (decimals < 6)
                frac = frac * 10 + (uint64_t)(v[i] - '0');
            else if (decimals == 6)
                round_up = v[i] >= '5';
            if (whole == 1 && v[i] != '0')
                return -1; /* more than 1 */
        }
    if (v[i] != '\0' || digits == 0 || whole > 1)
        return -1;
    for (; decimals < 6; decimals++)
        frac *= 10;
    *ppm = (uint32_t)(whole * 1000000 + frac + (uint64_t)round_up);
    return 0;
}

static int cfg_set_shadow_sample(struct cfg_parser *p, const char *v)
{
    char show[CFG_SHOW_MAX];
    if (sy_parse_fraction_ppm(v, &p->cfg->shadow_sample_ppm) != 0)
        return cfg_fail(p, "shadow_sample '%s' must be a fraction from 0 to 1, like 0.25",
                        cfg_show_value(p, v, show));
    return 0;
}

static int cfg_set_shadow_queue(struct cfg_parser *p, const char *v)
{
    return cfg_value_size(p, v, 4 * CFG_KB, CFG_GB, &p->cfg->shadow_queue);
}

static int cfg_set_shadow_timeout(struct cfg_parser *p, const char *v)
{
    return cfg_value_duration(p, v, 0, &p->cfg->shadow_timeout_ms);
}

static int cfg_set_shadow_resume(struct cfg_parser *p, const char *v)
{
    return cfg_value_duration(p, v, 0, &p->cfg->shadow_resume_ms);
}

/* Deprecated: no time window decides a class any more (the lag check does, bounded by
 * shadow_lag_check_timeout). Still parsed, so that a config holding it keeps loading; the proxy
 * logs that it has no effect (shadow_lag_window_ms is then not 0). */
static int cfg_set_shadow_lag_window(struct cfg_parser *p, const char *v)
{
    return cfg_value_duration(p, v, 1, &p->cfg->shadow_lag_window_ms);
}

/* A lag check holds a snapshot open on blue and waits for green: up to a minute. */
#define CFG_LAG_CHECK_TIMEOUT_MAX_MS 60000u

static int cfg_set_shadow_lag_check_timeout(struct cfg_parser *p, const char *v)
{
    if (cfg_value_duration(p, v, 0, &p->cfg->shadow_lag_check_timeout_ms) != 0)
        return -1;
    char show[CFG_SHOW_MAX];
    if (p->cfg->shadow_lag_check_timeout_ms == 0 ||
        p->cfg->shadow_lag_check_timeout_ms > CFG_LAG_CHECK_TIMEOUT_MAX_MS)
        return cfg_fail(p, "shadow_lag_check_timeout = %s is out of range; use 1ms to 60s",
                        cfg_show_value(p, v, show));
    return 0;
}

static int cfg_on_off(struct cfg_parser *p, const char *v, int *out)
{
    static const char *const words[] = {"off", "on"};
    char show[CFG_SHOW_MAX];
    if (cfg_value_word(v, words, 2, out) != 0)
        return cfg_fail(p, "%s must be on or off, not '%s'", p->key,
                        cfg_show_value(p, v, show));
    return 0;
}

static int cfg_set_shadow_redact(struct cfg_parser *p, const char *v)
{
    return cfg_on_off(p, v, &p->cfg->shadow_redact);
}

static int cfg_set_shadow_gate(struct cfg_parser *p, const char *v)
{
    return cfg_on_off(p, v, &p->cfg->cutover_requires_clean_shadow);
}

static int cfg_set_shadow_gate_window(struct cfg_parser *p, const char *v)
{
    return cfg_value_duration(p, v, 0, &p->cfg->shadow_gate_window_ms);
}

static int cfg_set_shadow_gate_max(struct cfg_parser *p, const char *v)
{
    char show[CFG_SHOW_MAX];
    size_t n = strlen(v);
    uint64_t x;
    if (n == 0 || strspn(v, "0123456789") != n || cfg_parse_uint(v, n, 1000000000, &x) != 0)
        return cfg_fail(p, "shadow_gate_max '%s' must be a whole number, like 0",
                        cfg_show_value(p, v, show));
    p->cfg->shadow_gate_max = (uint32_t)x;
    return 0;
}

static int cfg_set_shadow_gate_inconclusive(struct cfg_parser *p, const char *v)
{
    static const char *const words[] = {"allow", "block"};
    char show[CFG_SHOW_MAX];
    if (cfg_value_word(v, words, 2, &p->cfg->shadow_gate_inconclusive_blocks) != 0)
        return cfg_fail(p, "shadow_gate_inconclusive must be block or allow, not '%s'",
                        cfg_show_value(p, v, show));
    return 0;
}

/* A word quoted back in a message: printable ASCII only, at most 40 bytes with "...". */
static const char *accept_shown(const char *w, char out[44])
{
    size_t i = 0;
    for (; w[i] && i < 37; i++)
        out[i] = w[i] >= 0x20 && w[i] < 0x7f ? w[i] : '?';
    if (w[i]) {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = 0;
    return out;
}

static int accept_fail(char *err, size_t errlen, const char *msg, const char *word)
{
    char show[44];
    if (err && errlen)
        snprintf(err, errlen, msg, word ? accept_shown(word, show) : "");
    return -1;
}

int sy_parse_shadow_accept(int n, char *const *words, struct sy_shadow_accept_spec *out,
                           char *err, size_t errlen)
{
    static const char *const classes[] = {"real", "order_only", "inconclusive"};
    struct sy_shadow_accept_spec a;
    memset(&a, 0, sizeof(a));
    int i = 0, has_class = 0;
    size_t len = 0;
    for (; i < n && strncmp(words[i], "--", 2) != 0; i++) {
        size_t w = strlen(words[i]);
        if (len + (len ? 1 : 0) + w >= sizeof(a.fingerprint))
            return accept_fail(err, errlen, "the fingerprint is longer than 511 bytes; give its "
                               "16-hex-digit hash from switchyardctl --json shadow report%s",
                               NULL);
        if (len)
            a.fingerprint[len++] = ' ';
        memcpy(a.fingerprint + len, words[i], w);
        len += w;
    }
    if (i == 0)
        return accept_fail(err, errlen, "an accept needs a fingerprint (as shadow report shows "
                           "it, or its 16-hex-digit hash) before its options%s", NULL);
    if (i == 1 && len == 16 && strspn(a.fingerprint, "0123456789abcdefABCDEF") == 16) {
        a.hash = strtoull(a.fingerprint, NULL, 16);
        a.has_hash = 1;
        a.fingerprint[0] = 0;
    }
    snprintf(a.cls, sizeof(a.cls), "real");
    for (; i < n; i++) {
        int is_col = strcmp(words[i], "--column") == 0, is_cls = strcmp(words[i], "--class") == 0;
        if (!is_col && !is_cls)
            return accept_fail(err, errlen, "unexpected word '%s' in an accept; usage: "
                               "FINGERPRINT [--column NAME] [--class real|order_only|"
                               "inconclusive]", words[i]);
        if ((is_col && a.column[0]) || (is_cls && has_class))
            return accept_fail(err, errlen, "%s is given twice in an accept; give it once",
                               words[i]);
        if (i + 1 >= n || strncmp(words[i + 1], "--", 2) == 0)
            return accept_fail(err, errlen, is_col ? "%s needs a column name, like --column id"
                               : "%s needs a class: real, order_only or inconclusive", words[i]);
        const char *v = words[++i];
        if (is_col) {
            if (strlen(v) >= sizeof(a.column))
                return accept_fail(err, errlen, "--column '%s' is longer than 63 bytes, the "
                                   "longest PostgreSQL name", v);
            snprintf(a.column, sizeof(a.column), "%s", v);
            continue;
        }
        int k = -1;
        for (int c = 0; c < 3; c++)
            if (strcmp(v, classes[c]) == 0)
                k = c;
        if (k < 0)
            return accept_fail(err, errlen, "--class takes real, order_only or inconclusive, "
                               "not '%s'", v);
        snprintf(a.cls, sizeof(a.cls), "%s", classes[k]);
        has_class = 1;
    }
    if (a.column[0] && strcmp(a.cls, "real") != 0)
        return accept_fail(err, errlen, "--column applies to class real only (a column's "
                           "name, type and values), not to %s", a.cls);
    *out = a;
    return 0;
}

/* shadow_accept = FINGERPRINT [--column NAME] [--class CLASS]; the key may repeat. */
static int cfg_set_shadow_accept(struct cfg_parser *p, const char *v)
{
    struct sy_config *c = p->cfg;
    if (c->nshadow_accept == SY_SHADOW_ACCEPT_CFG_MAX)
        return cfg_fail(p, "more than %d shadow_accept lines; accept fewer fingerprints",
                        SY_SHADOW_ACCEPT_CFG_MAX);
    char buf[CFG_VALUE_MAX];
    char *words[CFG_VALUE_MAX / 2];
    int n = 0;
    snprintf(buf, sizeof(buf), "%s", v);
    for (char *s = buf; *s;) {
        while (*s == ' ' || *s == '\t')
            *s++ = 0;
        if (*s)
            words[n++] = s;
        while (*s && *s != ' ' && *s != '\t')
            s++;
    }
    char why[256];
    if (sy_parse_shadow_accept(n, words, &c->shadow_accept[c->nshadow_accept], why,
                               sizeof(why)) != 0)
        return cfg_fail(p, "shadow_accept: %s", why);
    c->nshadow_accept++;
    return 0;
}

static int cfg_set_shadow_recheck(struct cfg_parser *p, const char *v)
{
    return cfg_on_off(p, v, &p->cfg->shadow_recheck);
}

/* A recheck holds a snapshot open on blue for this long at most: up to a minute. */
#define CFG_RECHECK_TIMEOUT_MAX_MS 60000u

static int cfg_set_shadow_recheck_timeout(struct cfg_parser *p, const char *v)
{
    if (cfg_value_duration(p, v, 0, &p->cfg->shadow_recheck_timeout_ms) != 0)
        return -1;
    char show[CFG_SHOW_MAX];
    if (p->cfg->shadow_recheck_timeout_ms > CFG_RECHECK_TIMEOUT_MAX_MS)
        return cfg_fail(p, "shadow_recheck_timeout = %s is too long; use at most 60s",
                        cfg_show_value(p, v, show));
    return 0;
}

/* A [users] line: NAME = AUTH_TYPE. */
static int cfg_set_user_auth(struct cfg_parser *p, const char *name, size_t nn, const char *v)
{
    struct sy_config *c = p->cfg;
    if (nn >= sizeof c->user_auth[0].user)
        return cfg_fail(p, "user name in [users] is %zu characters; the limit is %zu", nn,
                        sizeof c->user_auth[0].user - 1);
    for (size_t i = 0; i < c->nuser_auth; i++)
        if (cfg_span_eq(name, nn, c->user_auth[i].user))
            return cfg_fail(p, "user '%s' appears twice in [users]; keep only one",
                            c->user_auth[i].user);
    if (c->nuser_auth == SY_USER_AUTH_MAX)
        return cfg_fail(p, "more than %d users in [users]", SY_USER_AUTH_MAX);
    struct sy_user_auth *u = &c->user_auth[c->nuser_auth];
    memcpy(u->user, name, nn);
    u->user[nn] = 0;
    if (cfg_auth_word(p, v, &u->type) != 0)
        return -1;
    c->nuser_auth++;
    return 0;
}

static const struct cfg_key cfg_switchyard_keys[] = {
    {"protocol", cfg_set_protocol, 0},
    {"listen", cfg_set_listen, 1},
    {"admin_socket", cfg_set_admin_socket, 0},
    {"admin_socket_mode", cfg_set_admin_socket_mode, 0},
    {"active", cfg_set_active, 0},
    {"log_level", cfg_set_log_level, 0},
    {"max_message_size", cfg_set_max_message_size, 0},
    {"max_startup_packet", cfg_set_max_startup_packet, 0},
    {"max_client_conn", cfg_set_max_client_conn, 0},
    {"io_buffer_size", cfg_set_io_buffer_size, 0},
    {"client_login_timeout", cfg_set_client_login_timeout, 0},
    {"server_connect_timeout", cfg_set_server_connect_timeout, 0},
    {"shutdown_grace", cfg_set_shutdown_grace, 0},
    {"server_pool_size", cfg_set_server_pool_size, 0},
    {"server_idle_timeout", cfg_set_server_idle_timeout, 0},
    {"server_scram_max_iterations", cfg_set_server_scram_max_iterations, 0},
    {"auth_type", cfg_set_auth_type, 0},
    {"auth_file", cfg_set_auth_file, 0},
    {"auth_query", cfg_set_auth_query, 0},
    {"auth_user", cfg_set_auth_user, 0},
    {"auth_password", cfg_set_auth_password, 0},
    {"auth_dbname", cfg_set_auth_dbname, 0},
    {"auth_allow_cleartext_without_tls", cfg_set_auth_cleartext, 0},
    {"client_tls", cfg_set_client_tls, 0},
    {"client_tls_cert", cfg_set_client_tls_cert, 0},
    {"client_tls_key", cfg_set_client_tls_key, 0},
    {"client_tls_ca", cfg_set_client_tls_ca, 0},
    {"state_file", cfg_set_state_file, 0},
    {"health_interval", cfg_set_health_interval, 0},
    {"drain_timeout", cfg_set_drain_timeout, 0},
    {"catchup_timeout", cfg_set_catchup_timeout, 0},
    {"step_timeout", cfg_set_step_timeout, 0},
    {"max_lag", cfg_set_max_lag, 0},
    {"max_transaction_age", cfg_set_max_transaction_age, 0},
    {"unmovable_sessions", cfg_set_unmovable_sessions, 0},
    {"rollback_window", cfg_set_rollback_window, 0},
    {"reverse_replication", cfg_set_reverse_replication, 0},
    {"rollback_window_expiry", cfg_set_window_expiry, 0},
    {"shadow", cfg_set_shadow, 0},
    {"shadow_sample", cfg_set_shadow_sample, 0},
    {"shadow_queue", cfg_set_shadow_queue, 0},
    {"shadow_timeout", cfg_set_shadow_timeout, 0},
    {"shadow_resume", cfg_set_shadow_resume, 0},
    {"shadow_lag_window", cfg_set_shadow_lag_window, 0},
    {"shadow_lag_check_timeout", cfg_set_shadow_lag_check_timeout, 0},
    {"shadow_redact", cfg_set_shadow_redact, 0},
    {"cutover_requires_clean_shadow", cfg_set_shadow_gate, 0},
    {"shadow_gate_window", cfg_set_shadow_gate_window, 0},
    {"shadow_gate_max", cfg_set_shadow_gate_max, 0},
    {"shadow_gate_inconclusive", cfg_set_shadow_gate_inconclusive, 0},
    {"shadow_accept", cfg_set_shadow_accept, 1},
    {"shadow_recheck", cfg_set_shadow_recheck, 0},
    {"shadow_recheck_timeout", cfg_set_shadow_recheck_timeout, 0},
};

static const struct cfg_key cfg_side_keys[CFG_SIDE_KEYS] = {
    [CFG_SIDE_HOST] = {"host", cfg_set_host, 0},
    [CFG_SIDE_PORT] = {"port", cfg_set_port, 0},
    [CFG_SIDE_TLS] = {"server_tls", cfg_set_server_tls, 0},
    [CFG_SIDE_TLS_CA] = {"server_tls_ca", cfg_set_server_tls_ca, 0},
    [CFG_SIDE_CONTROL_USER] = {"control_user", cfg_set_control_user, 0},
    [CFG_SIDE_CONTROL_PASSWORD] = {"control_password", cfg_set_control_password, 0},
    [CFG_SIDE_CONTROL_DATABASE] = {"control_database", cfg_set_control_database, 0},
};

#define CFG_NKEYS(a) (sizeof(a) / sizeof((a)[0]))
_Static_assert(CFG_NKEYS(cfg_switchyard_keys) <= CFG_KEYS_MAX, "raise CFG_KEYS_MAX");

/* ---- lines ---- */

/* The key table of a section; *n is 0 for CFG_SEC_NONE. */
static const struct cfg_key *cfg_section_keys(enum cfg_section sec, size_t *n)
{
    if (sec == CFG_SEC_SWITCHYARD) {
        *n = CFG_NKEYS(cfg_switchyard_keys);
        return cfg_switchyard_keys;
    }
    *n = sec == CFG_SEC_NONE ? 0 : CFG_NKEYS(cfg_side_keys);
    return cfg_side_keys;
}

/* Index of the key named by the span in keys[0..n), or n if absent. */
static size_t cfg_key_find(const struct cfg_key *keys, size_t n, const char *k, size_t kn)
{
    size_t i = 0;
    while (i < n && !cfg_span_eq(k, kn, keys[i].name))
        i++;
    return i;
}

/* The key in keys[0..n) closest to the span within 2 edits, or NULL. */
static const char *cfg_key_suggest(const struct cfg_key *keys, size_t n, const char *k, size_t kn)
{
    const char *best = NULL;
    size_t best_d = 3;
    for (size_t i = 0; i < n; i++) {
        size_t d = cfg_distance(k, kn, keys[i].name);
        if (d < best_d) {
            best_d = d;
            best = keys[i].name;
        }
    }
    return best;
}

/* Reports a key not known in the current section, pointing to where it belongs if anywhere. */
static int cfg_fail_unknown_key(struct cfg_parser *p, const char *k, size_t kn)
{
    char show[CFG_SHOW_MAX];
    const char *sec = cfg_section_names[p->section];
    size_t nsw = CFG_NKEYS(cfg_switchyard_keys);
    int in_sw = cfg_key_find(cfg_switchyard_keys, nsw, k, kn) < nsw;
    int in_side = cfg_key_find(cfg_side_keys, CFG_SIDE_KEYS, k, kn) < CFG_SIDE_KEYS;
    if (!cfg_is_name(k, kn))
        return cfg_fail(p, "the text before '=' is not a key name (letters, digits and _; the "
                        "line is not shown, it may hold a secret); write key = value");
    cfg_show(k, kn, show);
    if (p->section == CFG_SEC_NONE && (in_sw || in_side))
        return cfg_fail(p, "key '%s' is outside any section; put it under %s", show,
                        in_sw ? "[switchyard]" : "[blue] or [green]");
    if (p->section == CFG_SEC_NONE)
        return cfg_fail(p, "key '%s' is outside any section; keys go under [switchyard], "
                        "[blue] or [green]", show);
    if (in_sw || in_side)
        return cfg_fail(p, "key '%s' does not belong in [%s]; put it under %s", show, sec,
                        in_sw ? "[switchyard]" : "[blue] or [green]");
    size_t n;
    const struct cfg_key *keys = cfg_section_keys(p->section, &n);
    const char *guess = cfg_key_suggest(keys, n, k, kn);
    if (guess != NULL)
        return cfg_fail(p, "unknown key '%s' in [%s]; did you mean '%s'?", show, sec, guess);
    return cfg_fail(p, "unknown key '%s' in [%s]; see docs/config.md for the keys", show, sec);
}

/*
 * Copies the value part of a "key = value" line (the span after '=') into p->val: a quoted
 * value keeps everything between the quotes; an unquoted one ends at a ';' or '#' that starts
 * the value or follows white space. Returns 0 or -1 with the error.
 */
static int cfg_value_extract(struct cfg_parser *p, const char *v, size_t n)
{
    cfg_trim(&v, &n);
    if (n > 0 && v[0] == '"') {
        const char *close = memchr(v + 1, '"', n - 1);
        if (close == NULL)
            return cfg_fail(p, "the value of '%s' has no closing '\"'", p->key);
        if (!cfg_is_blank_or_comment(close + 1, (size_t)(v + n - close - 1)))
            return cfg_fail(p, "unexpected text after the closing '\"' of '%s'; start a comment "
                            "with ';' or '#'", p->key);
        n = (size_t)(close - v - 1);
        v++;
    } else {
        for (size_t i = 0; i < n; i++) {
            if ((v[i] == ';' || v[i] == '#') && (i == 0 || cfg_is_space(v[i - 1]))) {
                n = i;
                break;
            }
        }
        cfg_trim(&v, &n);
        if (n == 0)
            return cfg_fail(p, "missing value for '%s'; write %s = VALUE", p->key, p->key);
    }
    if (n >= sizeof p->val)
        return cfg_fail(p, "the value of '%s' is %zu bytes; the limit is %zu", p->key, n,
                        sizeof p->val - 1);
    memcpy(p->val, v, n);
    p->val[n] = '\0';
    return 0;
}

/*
 * Reports a line that is no "key = value" without quoting it: "auth_password: Secret" would
 * print the secret. When the line starts with a key name this section knows, the message names
 * it and shows the fix.
 */
static int cfg_fail_no_equals(struct cfg_parser *p, const char *s, size_t n)
{
    static const char expected[] = "expected 'key = value', a [section] header or a comment";
    size_t kn = 0, nkeys;
    while (kn < n && ((cfg_lower(s[kn]) >= 'a' && cfg_lower(s[kn]) <= 'z') || s[kn] == '_'))
        kn++;
    const struct cfg_key *keys = cfg_section_keys(p->section, &nkeys);
    if (p->section == CFG_SEC_USERS)
        nkeys = 0; /* [users] has user names, not keys */
    size_t i = kn > 0 ? cfg_key_find(keys, nkeys, s, kn) : nkeys;
    if (i < nkeys)
        return cfg_fail(p, "%s; the line starts with the key '%s' but has no '=': write %s = "
                        "VALUE (the rest of the line is not shown, it may hold a secret)",
                        expected, keys[i].name, keys[i].name);
    return cfg_fail(p, "%s (the line is not shown, it may hold a secret)", expected);
}

/* Handles a trimmed "key = value" line. Returns 0 or -1 with the error. */
static int cfg_parse_pair(struct cfg_parser *p, const char *s, size_t n)
{
    const char *eq = memchr(s, '=', n);
    if (eq == NULL)
        return cfg_fail_no_equals(p, s, n);
    const char *k = s;
    size_t kn = (size_t)(eq - s);
    cfg_trim(&k, &kn);
    if (kn == 0)
        return cfg_fail(p, "missing key before '='; write key = value");
    p->secret = cfg_key_is_secret(k, kn);
    if (p->section == CFG_SEC_USERS) {
        /* A password written here by mistake (the auth file's job) must not be echoed. */
        p->secret = 1;
        p->key = "the auth_type in [users]";
        if (cfg_value_extract(p, eq + 1, (size_t)(s + n - eq - 1)) != 0)
            return -1;
        return cfg_set_user_auth(p, k, kn, p->val);
    }
    size_t nkeys;
    const struct cfg_key *keys = cfg_section_keys(p->section, &nkeys);
    size_t i = cfg_key_find(keys, nkeys, k, kn);
    if (i == nkeys)
        return cfg_fail_unknown_key(p, k, kn);
    size_t *first = &p->key_line[p->section][i];
    if (*first != 0 && !keys[i].repeatable)
        return cfg_fail(p, "duplicate key '%s' in [%s] (first set on line %zu); keep only one",
                        keys[i].name, cfg_section_names[p->section], *first);
    if (*first == 0)
        *first = p->line;
    p->key = keys[i].name;
    if (cfg_value_extract(p, eq + 1, (size_t)(s + n - eq - 1)) != 0)
        return -1;
    return keys[i].set(p, p->val);
}

/* The section named by the span, or CFG_SEC_NONE. */
static enum cfg_section cfg_section_find(const char *s, size_t n)
{
    for (int sec = CFG_SEC_SWITCHYARD; sec < CFG_SEC_COUNT; sec++)
        if (cfg_span_eq(s, n, cfg_section_names[sec]))
            return (enum cfg_section)sec;
    return CFG_SEC_NONE;
}

/* Reports an unknown section name, with the closest known one within 2 edits. */
static int cfg_fail_unknown_section(struct cfg_parser *p, const char *s, size_t n)
{
    char show[CFG_SHOW_MAX];
    const char *best = NULL;
    size_t best_d = 3;
    for (int sec = CFG_SEC_SWITCHYARD; sec < CFG_SEC_COUNT; sec++) {
        size_t d = cfg_distance(s, n, cfg_section_names[sec]);
        if (d < best_d) {
            best_d = d;
            best = cfg_section_names[sec];
        }
    }
    if (!cfg_is_name(s, n))
        return cfg_fail(p, "the section header holds no section name; the sections are "
                        "[switchyard], [blue], [green] and [users]");
    cfg_show(s, n, show);
    if (best != NULL)
        return cfg_fail(p, "unknown section [%s]; did you mean [%s]?", show, best);
    return cfg_fail(p, "unknown section [%s]; the sections are [switchyard], [blue] and [green]",
                    show);
}

/* Handles a trimmed line starting with '['. Returns 0 or -1 with the error. */
static int cfg_parse_section(struct cfg_parser *p, const char *s, size_t n)
{
    const char *close = memchr(s, ']', n);
    if (close == NULL)
        return cfg_fail(p, "section header has no closing ']'; write it like [switchyard]");
    if (!cfg_is_blank_or_comment(close + 1, (size_t)(s + n - close - 1)))
        return cfg_fail(p, "unexpected text after the section header; start a comment with ';' "
                        "or '#'");
    const char *name = s + 1;
    size_t nn = (size_t)(close - name);
    cfg_trim(&name, &nn);
    enum cfg_section sec = cfg_section_find(name, nn);
    if (sec == CFG_SEC_NONE)
        return cfg_fail_unknown_section(p, name, nn);
    if (p->section_line[sec] != 0)
        return cfg_fail(p, "section [%s] appears twice (first on line %zu); merge the two",
                        cfg_section_names[sec], p->section_line[sec]);
    p->section_line[sec] = p->line;
    p->section = sec;
    return 0;
}

/* Handles one line without its '\n'. Returns 0 or -1 with the error. */
static int cfg_parse_line(struct cfg_parser *p, const char *s, size_t n)
{
    if (memchr(s, '\0', n) != NULL)
        return cfg_fail(p, "the line contains a NUL byte; save the file as plain text");
    cfg_trim(&s, &n);
    if (n == 0 || s[0] == ';' || s[0] == '#')
        return 0;
    if (s[0] == '[')
        return cfg_parse_section(p, s, n);
    return cfg_parse_pair(p, s, n);
}

/* Checks that the auth and client TLS keys fit together. Returns 0 or -1 with the error. */
static int cfg_check_auth(struct cfg_parser *p)
{
    const struct sy_config *c = p->cfg;
    size_t at = p->section_line[CFG_SEC_SWITCHYARD];
    int uses_cert = c->auth_type == SY_AUTH_CERT;
    for (size_t i = 0; i < c->nuser_auth; i++)
        uses_cert |= c->user_auth[i].type == SY_AUTH_CERT;
    if (c->client_tls != SY_CLIENT_TLS_DISABLE && (!c->client_tls_cert[0] || !c->client_tls_key[0]))
        return cfg_fail_at(p, at, "client_tls is on but client_tls_cert and client_tls_key are "
                           "not both set; give the server certificate and key files");
    if (uses_cert && (c->client_tls == SY_CLIENT_TLS_DISABLE || !c->client_tls_ca[0]))
        return cfg_fail_at(p, at, "auth_type cert needs client_tls (allow or require) and "
                           "client_tls_ca (the CA that signs client certificates)");
    if (c->auth_user[0] && !c->auth_query[0])
        return cfg_fail_at(p, at, "auth_user is set but auth_query is empty");
    return 0;
}

/* Checks that every required section and key was given. Returns 0 or -1 with the error. */
static int cfg_check_complete(struct cfg_parser *p)
{
    static const char *const hint[CFG_SEC_COUNT] = {
        [CFG_SEC_SWITCHYARD] = "at least one listen address", [CFG_SEC_BLUE] = "host and port",
        [CFG_SEC_GREEN] = "host and port",
    };
    for (int sec = CFG_SEC_SWITCHYARD; sec <= CFG_SEC_GREEN; sec++)
        if (p->section_line[sec] == 0)
            return cfg_fail_at(p, 0, "missing section [%s]; add it with %s",
                               cfg_section_names[sec], hint[sec]);
    if (p->cfg->nlisten == 0)
        return cfg_fail_at(p, p->section_line[CFG_SEC_SWITCHYARD], "[switchyard] has no listen "
                           "address; add one, like listen = 127.0.0.1:6432");
    for (int sec = CFG_SEC_BLUE; sec <= CFG_SEC_GREEN; sec++) {
        if (p->key_line[sec][CFG_SIDE_HOST] == 0)
            return cfg_fail_at(p, p->section_line[sec], "[%s] has no host; add host = ADDRESS",
                               cfg_section_names[sec]);
        if (p->key_line[sec][CFG_SIDE_PORT] == 0)
            return cfg_fail_at(p, p->section_line[sec], "[%s] has no port; add port = 5432",
                               cfg_section_names[sec]);
        const struct sy_server_config *sv = &p->cfg->server[sec == CFG_SEC_BLUE ? SY_BLUE : SY_GREEN];
        if (sv->tls >= SY_SERVER_TLS_VERIFY_CA && sv->tls_ca[0] == 0)
            return cfg_fail_at(p, p->key_line[sec][CFG_SIDE_TLS], "server_tls = %s in [%s] needs "
                               "server_tls_ca = PATH (the CA that signed the server's certificate)",
                               cfg_server_tls_words[sv->tls], cfg_section_names[sec]);
    }
    return cfg_check_auth(p);
}

/* Splits the text into lines and parses each; a UTF-8 byte order mark at the start is skipped. */
static int cfg_parse_text(struct cfg_parser *p, const char *text, size_t len)
{
    size_t pos = 0;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
        pos = 3;
    while (pos < len) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl != NULL);
        p->line++;
        if (cfg_parse_line(p, s, n) != 0)
            return -1;
    }
    return cfg_check_complete(p);
}

/* ---- public ---- */

void sy_config_defaults(struct sy_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->protocol = SY_PROTO_POSTGRES;
    snprintf(cfg->admin_socket, sizeof cfg->admin_socket, "%s", "/tmp/switchyard.sock");
    cfg->admin_socket_mode = 0600;
    cfg->active = SY_BLUE;
    cfg->log_level = SY_LOG_INFO;
    cfg->max_message_size = (uint32_t)CFG_GB;
    cfg->max_startup_packet = 10000;
    cfg->max_client_conn = 10000;
    cfg->io_buffer_size = (uint32_t)(64 * CFG_KB);
    cfg->client_login_timeout_ms = 15000;
    cfg->server_connect_timeout_ms = 5000;
    cfg->shutdown_grace_ms = 30000;
    cfg->server_pool_size = 32;
    cfg->server_scram_max_iterations = 1000000;
    cfg->shadow_sample_ppm = 1000000;
    cfg->shadow_queue = (uint32_t)CFG_MB;
    cfg->shadow_timeout_ms = 5000;
    cfg->shadow_resume_ms = 10000;
    cfg->shadow_lag_window_ms = 0; /* deprecated: not set */
    cfg->shadow_lag_check_timeout_ms = 5000;
    cfg->shadow_gate_window_ms = 600000;
    cfg->shadow_gate_inconclusive_blocks = 1;
    cfg->shadow_recheck = 1;
    cfg->shadow_recheck_timeout_ms = 2000;
    cfg->server_idle_timeout_ms = 60000;
    cfg->auth_type = SY_AUTH_SCRAM;
    snprintf(cfg->auth_query, sizeof cfg->auth_query, "%s",
             "SELECT rolname, CASE WHEN rolvaliduntil < pg_catalog.now() THEN NULL "
             "ELSE rolpassword END FROM pg_catalog.pg_authid WHERE rolname = $1");
    snprintf(cfg->auth_dbname, sizeof cfg->auth_dbname, "%s", "postgres");
    cfg->server[SY_BLUE].tls = cfg->server[SY_GREEN].tls = SY_SERVER_TLS_PREFER;
    for (int s = 0; s < 2; s++) {
        snprintf(cfg->server[s].control_user, sizeof cfg->server[s].control_user, "postgres");
        snprintf(cfg->server[s].control_database, sizeof cfg->server[s].control_database,
                 "postgres");
    }
    cfg->health_interval_ms = 5000;
    cfg->drain_timeout_ms = 10000;
    cfg->catchup_timeout_ms = 10000;
    cfg->step_timeout_ms = 10000;
    cfg->max_lag_bytes = 16 * CFG_MB;
    cfg->max_transaction_age_ms = 30000;
    cfg->rollback_window_ms = 3600000;
    cfg->reverse_replication = SY_REVERSE_AUTO;
}

/*
 * On failure *cfg is left as it was: the parse goes into a private copy. The parser state and
 * the copy come to about 11 KB, so they live on the heap rather than the caller's stack.
 */
int sy_config_parse(const char *text, size_t len, const char *name, struct sy_config *cfg,
                    char *err, size_t errlen)
{
    struct cfg_parser *p = calloc(1, sizeof *p);
    struct sy_config *out = malloc(sizeof *out);
    int rc = -1;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (p == NULL || out == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s: out of memory", name ? name : "config");
        goto done;
    }
    sy_config_defaults(out);
    p->name = name ? name : "config";
    p->cfg = out;
    p->err = err;
    p->errlen = errlen;
    if (text == NULL && len > 0)
        rc = cfg_fail_at(p, 0, "no text to parse");
    else
        rc = cfg_parse_text(p, text, len);
    if (rc == 0 && cfg != NULL)
        *cfg = *out;
done:
    free(out);
    free(p);
    return rc;
}

int sy_config_load(const char *path, struct sy_config *cfg, char *err, size_t errlen)
{
    struct sy_config tmp;
    size_t len = 0;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (path == NULL || strlen(path) >= sizeof tmp.path) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "config path is missing or longer than %zu characters",
                     sizeof tmp.path - 1);
        return -1;
    }
    char *text = sy_read_file(path, CFG_FILE_MAX, &len, err, errlen);
    if (text == NULL)
        return -1;
    int rc = sy_config_parse(text, len, path, &tmp, err, errlen);
    free(text);
    if (rc == 0) {
        snprintf(tmp.path, sizeof tmp.path, "%s", path);
        if (cfg != NULL)
            *cfg = tmp;
    }
    return rc;
}

const char *sy_side_name(enum sy_side side)
{
    switch (side) {
    case SY_BLUE: return "blue";
    case SY_GREEN: return "green";
    default: return "unknown";
    }
}

enum sy_auth_type sy_config_user_auth(const struct sy_config *cfg, const char *user)
{
    for (size_t i = 0; i < cfg->nuser_auth; i++)
        if (strcmp(cfg->user_auth[i].user, user) == 0)
            return cfg->user_auth[i].type;
    return cfg->auth_type;
}

const char *sy_auth_type_name(enum sy_auth_type t)
{
    return t >= SY_AUTH_SCRAM && t <= SY_AUTH_CERT ? cfg_auth_words[t] : "unknown";
}

const char *sy_server_tls_name(enum sy_server_tls t)
{
    return t <= SY_SERVER_TLS_VERIFY_FULL ? cfg_server_tls_words[t] : "unknown";
}
