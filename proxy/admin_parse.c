/* The admin request parser; see admin_parse.h for the contracts and docs/admin.md. */
#include "admin_parse.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "config/config.h"

#define SHOW_MAX 40 /* bytes of a caller's word quoted back in a message, "..." included */

static const char *const cmd_names[] = {
    [SY_ADMIN_NONE] = "",          [SY_ADMIN_STATUS] = "status",   [SY_ADMIN_CLIENTS] = "clients",
    [SY_ADMIN_SERVERS] = "servers", [SY_ADMIN_PAUSE] = "pause",     [SY_ADMIN_RESUME] = "resume",
    [SY_ADMIN_CUTOVER] = "cutover", [SY_ADMIN_ROLLBACK] = "rollback", [SY_ADMIN_COMMIT] = "commit",
    [SY_ADMIN_SHADOW] = "shadow",   [SY_ADMIN_HELP] = "help",
};

#define NCMDS (sizeof(cmd_names) / sizeof(cmd_names[0]))

const char *sy_admin_cmd_name(enum sy_admin_cmd cmd)
{
    return (unsigned)cmd < NCMDS ? cmd_names[cmd] : "";
}

/* Writes the message into err (always NUL-terminated when errlen > 0). Returns -1. */
__attribute__((format(printf, 3, 4)))
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* A caller's word made safe to quote: printable ASCII only (others as '?'), cut with "...". */
static const char *shown(const char *s, char out[SHOW_MAX])
{
    size_t i = 0;
    for (; s[i] != '\0' && i < SHOW_MAX - 4; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (s[i] != '\0') {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
    return out;
}

int sy_admin_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (s == NULL || *s == '\0')
        return -1;
    for (const char *c = s; *c; c++) {
        if (*c < '0' || *c > '9')
            return -1;
        unsigned digit = (unsigned)(*c - '0');
        if (v > (UINT64_MAX - digit) / 10)
            return -1;
        v = v * 10 + digit;
    }
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Reads the value of --timeout at argv[*i + 1] for cmd into *ms. Returns 0 or -1. */
static int timeout_arg(const char *cmd, int argc, char **argv, int *i, int *seen, uint64_t *ms,
                       char *err, size_t errlen)
{
    char show[SHOW_MAX];
    if (*seen)
        return fail(err, errlen, "%s: --timeout is given twice; give it once", cmd);
    if (*i + 1 >= argc)
        return fail(err, errlen, "%s: --timeout needs a value: milliseconds from 1 to %llu "
                    "(a day), like --timeout 5000", cmd, SY_ADMIN_TIMEOUT_MAX_MS);
    const char *v = argv[++*i];
    if (sy_admin_parse_uint(v, 1, SY_ADMIN_TIMEOUT_MAX_MS, ms) != 0)
        return fail(err, errlen, "%s: --timeout takes a whole number of milliseconds from 1 to "
                    "%llu (a day), not '%s'", cmd, SY_ADMIN_TIMEOUT_MAX_MS, shown(v, show));
    *seen = 1;
    return 0;
}

int sy_admin_pause_args(int argc, char **argv, uint64_t *timeout_ms, char *err, size_t errlen)
{
    char show[SHOW_MAX];
    int seen = 0;
    uint64_t ms = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--timeout") != 0)
            return fail(err, errlen, "pause: unknown argument '%s'; usage: pause [--timeout MS]",
                        shown(argv[i], show));
        if (timeout_arg("pause", argc, argv, &i, &seen, &ms, err, errlen) != 0)
            return -1;
    }
    *timeout_ms = ms;
    return 0;
}

int sy_admin_switch_args(int argc, char **argv, struct sy_admin_switch_args *out, char *err,
                         size_t errlen)
{
    char show[SHOW_MAX];
    const char *cmd = argc > 0 ? argv[0] : "cutover";
    struct sy_admin_switch_args a = {0};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--timeout") == 0) {
            if (timeout_arg(cmd, argc, argv, &i, &a.has_timeout, &a.timeout_ms, err, errlen) != 0)
                return -1;
        } else if (strcmp(argv[i], "--dry-run") == 0) {
            a.dry_run = 1;
        } else if (strcmp(argv[i], "--force") == 0) {
            a.force = 1;
        } else {
            return fail(err, errlen, "%s: unknown argument '%s'; usage: %s [--timeout MS] "
                        "[--dry-run] [--force]", cmd, shown(argv[i], show), cmd);
        }
    }
    *out = a;
    return 0;
}

/* Checks that a shadow subcommand got at most max words after it. Returns 0 or -1. */
static int shadow_extra(int argc, char **argv, int max, const char *usage, char *err,
                        size_t errlen)
{
    char show[SHOW_MAX];
    if (argc > 2 + max)
        return fail(err, errlen, "shadow %s: unexpected argument '%s'; usage: %s", argv[1],
                    shown(argv[2 + max], show), usage);
    return 0;
}

int sy_admin_shadow_args(int argc, char **argv, struct sy_admin_shadow_args *out, char *err,
                         size_t errlen)
{
    static const char usage[] = "shadow [status | on [reads|all] | off | sample FRACTION | "
                                "report [--reset] | reset | accept FINGERPRINT [--column NAME] "
                                "[--class CLASS] | unaccept FINGERPRINT [...] | accepts]";
    char show[SHOW_MAX];
    struct sy_admin_shadow_args a = {.op = SY_ADMIN_SHADOW_STATUS};
    const char *sub = argc > 1 ? argv[1] : "status";
    if (strcmp(sub, "status") == 0) {
        if (argc > 1 && shadow_extra(argc, argv, 0, "shadow status", err, errlen) != 0)
            return -1;
    } else if (strcmp(sub, "on") == 0) {
        a.op = SY_ADMIN_SHADOW_ON;
        if (shadow_extra(argc, argv, 1, "shadow on [reads|all]", err, errlen) != 0)
            return -1;
        if (argc > 2 && strcmp(argv[2], "reads") == 0)
            a.mode = 1;
        else if (argc > 2 && strcmp(argv[2], "all") == 0)
            a.mode = 2;
        else if (argc > 2)
            return fail(err, errlen, "shadow on: the mode is reads or all, not '%s'",
                        shown(argv[2], show));
    } else if (strcmp(sub, "off") == 0) {
        a.op = SY_ADMIN_SHADOW_OFF;
        if (shadow_extra(argc, argv, 0, "shadow off", err, errlen) != 0)
            return -1;
    } else if (strcmp(sub, "sample") == 0) {
        a.op = SY_ADMIN_SHADOW_SAMPLE;
        if (argc < 3)
            return fail(err, errlen, "shadow sample needs a fraction from 0 to 1, like "
                        "shadow sample 0.25");
        if (shadow_extra(argc, argv, 1, "shadow sample FRACTION", err, errlen) != 0)
            return -1;
        if (sy_parse_fraction_ppm(argv[2], &a.sample_ppm) != 0)
            return fail(err, errlen, "shadow sample takes a fraction from 0 to 1 written with "
                        "digits and a point, like 0.25, not '%s'", shown(argv[2], show));
    } else if (strcmp(sub, "report") == 0) {
        a.op = SY_ADMIN_SHADOW_REPORT;
        if (shadow_extra(argc, argv, 1, "shadow report [--reset]", err, errlen) != 0)
            return -1;
        if (argc > 2 && strcmp(argv[2], "--reset") != 0)
            return fail(err, errlen, "shadow report: unknown argument '%s'; usage: shadow "
                        "report [--reset]", shown(argv[2], show));
        a.reset = argc > 2;
    } else if (strcmp(sub, "reset") == 0) {
        a.op = SY_ADMIN_SHADOW_RESET;
        if (shadow_extra(argc, argv, 0, "shadow reset", err, errlen) != 0)
            return -1;
    } else if (strcmp(sub, "accept") == 0 || strcmp(sub, "unaccept") == 0) {
        a.op = sub[0] == 'a' ? SY_ADMIN_SHADOW_ACCEPT : SY_ADMIN_SHADOW_UNACCEPT;
        char why[200];
        if (sy_parse_shadow_accept(argc - 2, argv + 2, &a.accept, why, sizeof(why)) != 0)
            return fail(err, errlen, "shadow %s: %s; usage: shadow %s FINGERPRINT [--column "
                        "NAME] [--class real|order_only|inconclusive]", sub, why, sub);
    } else if (strcmp(sub, "accepts") == 0) {
        a.op = SY_ADMIN_SHADOW_ACCEPTS;
        if (shadow_extra(argc, argv, 0, "shadow accepts", err, errlen) != 0)
            return -1;
    } else {
        return fail(err, errlen, "shadow: unknown subcommand '%s'; usage: %s", shown(sub, show),
                    usage);
    }
    *out = a;
    return 0;
}

/* Copies the line into req->buf and splits it into words. Returns 0 or -1 with a message. */
static int split(const char *line, size_t len, struct sy_admin_request *req, char *err,
                 size_t errlen)
{
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len >= sizeof(req->buf))
        return fail(err, errlen, "the request line is %zu bytes; the limit is %zu", len,
                    sizeof(req->buf) - 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return fail(err, errlen, "the request holds a control byte (0x%02x) at byte %zu; "
                        "send one line of printable words", c, i + 1);
    }
    memcpy(req->buf, line, len);
    req->buf[len] = '\0';
    req->argc = 0;
    char *s = req->buf;
    for (;;) {
        while (*s == ' ' || *s == '\t')
            *s++ = '\0';
        if (*s == '\0')
            return 0;
        if (req->argc == SY_ADMIN_ARGS_MAX)
            return fail(err, errlen, "too many words in the request; a command takes at most "
                        "%d", SY_ADMIN_ARGS_MAX);
        req->argv[req->argc++] = s;
        while (*s != '\0' && *s != ' ' && *s != '\t')
            s++;
    }
}

int sy_admin_request_parse(const char *line, size_t len, struct sy_admin_request *req, char *err,
                           size_t errlen)
{
    char show[SHOW_MAX];
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    memset(req, 0, offsetof(struct sy_admin_request, buf));
    if (split(line, len, req, err, errlen) != 0)
        return SY_ADMIN_PARSE_USAGE;
    if (req->argc == 0)
        return SY_ADMIN_PARSE_OK;
    enum sy_admin_cmd cmd = SY_ADMIN_NONE;
    for (unsigned i = SY_ADMIN_STATUS; i < NCMDS && cmd == SY_ADMIN_NONE; i++)
        if (strcmp(req->argv[0], cmd_names[i]) == 0)
            cmd = (enum sy_admin_cmd)i;
    if (cmd == SY_ADMIN_NONE) {
        fail(err, errlen, "unknown command '%s'; 'help' lists the commands",
             shown(req->argv[0], show));
        return SY_ADMIN_PARSE_UNKNOWN;
    }
    int rc = 0;
    switch (cmd) {
    case SY_ADMIN_PAUSE:
        rc = sy_admin_pause_args(req->argc, req->argv, &req->pause_timeout_ms, err, errlen);
        break;
    case SY_ADMIN_CUTOVER:
    case SY_ADMIN_ROLLBACK:
        rc = sy_admin_switch_args(req->argc, req->argv, &req->sw, err, errlen);
        break;
    case SY_ADMIN_SHADOW:
        rc = sy_admin_shadow_args(req->argc, req->argv, &req->shadow, err, errlen);
        break;
    default:
        if (req->argc > 1)
            rc = fail(err, errlen, "%s takes no arguments, not '%s'", cmd_names[cmd],
                      shown(req->argv[1], show));
        break;
    }
    if (rc != 0)
        return SY_ADMIN_PARSE_USAGE;
    req->cmd = cmd;
    return SY_ADMIN_PARSE_OK;
}
