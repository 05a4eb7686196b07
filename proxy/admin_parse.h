/*
 * The admin request line, parsed without I/O: bytes in, a command and its checked arguments
 * out, or a message naming what is wrong and what is allowed. The daemon (proxy/admin.c, and
 * the argument parsing of proxy/switch.c and proxy/pg_shadow.c) and switchyardctl (which checks
 * a command before it sends it) share this one parser, and tests/fuzz/fuzz_admin_cmd.c calls
 * it directly. libc and config/ only.
 */
#ifndef SY_ADMIN_PARSE_H
#define SY_ADMIN_PARSE_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

#define SY_ADMIN_LINE_MAX 4096 /* longest request line, its '\n' included */
#define SY_ADMIN_ARGS_MAX 256  /* most words in one request, the command word included (a
                                  fingerprint given to shadow accept is several words) */
/* Longest --timeout of pause, cutover and rollback: a day. A pause or a drain longer than that
 * is a typo, and without --timeout a pause lasts until resume anyway. */
#define SY_ADMIN_TIMEOUT_MAX_MS 86400000ull

enum sy_admin_cmd {
    SY_ADMIN_NONE = 0,     /* a blank line: no reply */
    SY_ADMIN_STATUS = 1,   /* status */
    SY_ADMIN_CLIENTS = 2,  /* clients */
    SY_ADMIN_SERVERS = 3,  /* servers */
    SY_ADMIN_PAUSE = 4,    /* pause [--timeout MS] */
    SY_ADMIN_RESUME = 5,   /* resume */
    SY_ADMIN_CUTOVER = 6,  /* cutover [--timeout MS] [--dry-run] [--force] */
    SY_ADMIN_ROLLBACK = 7, /* rollback [--timeout MS] [--dry-run] [--force] */
    SY_ADMIN_COMMIT = 8,   /* commit */
    SY_ADMIN_SHADOW = 9,   /* shadow [status | on [reads|all] | off | sample F | report | reset |
                              accept ... | unaccept ... | accepts] */
    SY_ADMIN_HELP = 10,    /* help */
};

/* What a shadow command asks for. */
enum sy_admin_shadow_op {
    SY_ADMIN_SHADOW_STATUS = 1, /* shadow, shadow status */
    SY_ADMIN_SHADOW_ON = 2,     /* shadow on [reads|all] */
    SY_ADMIN_SHADOW_OFF = 3,    /* shadow off */
    SY_ADMIN_SHADOW_SAMPLE = 4, /* shadow sample FRACTION */
    SY_ADMIN_SHADOW_REPORT = 5, /* shadow report [--reset] */
    SY_ADMIN_SHADOW_RESET = 6,  /* shadow reset */
    SY_ADMIN_SHADOW_ACCEPT = 7,   /* shadow accept FINGERPRINT [--column NAME] [--class CLASS] */
    SY_ADMIN_SHADOW_UNACCEPT = 8, /* shadow unaccept FINGERPRINT [--column NAME] [--class CLASS] */
    SY_ADMIN_SHADOW_ACCEPTS = 9,  /* shadow accepts: the list */
};

/* Returns of sy_admin_request_parse. */
enum sy_admin_parse_rc {
    SY_ADMIN_PARSE_OK = 0,       /* *req is filled */
    SY_ADMIN_PARSE_USAGE = -1,   /* a known command with bad arguments, or a bad line */
    SY_ADMIN_PARSE_UNKNOWN = -2, /* the first word is no command */
};

/* The options of cutover and rollback. */
struct sy_admin_switch_args {
    int has_timeout;     /* 1 when --timeout was given */
    uint64_t timeout_ms; /* --timeout: 1 to SY_ADMIN_TIMEOUT_MAX_MS */
    int dry_run;         /* --dry-run */
    int force;           /* --force */
};

/* The arguments of shadow. */
struct sy_admin_shadow_args {
    enum sy_admin_shadow_op op;
    int mode;            /* on: 1 reads, 2 all, 0 when not given (the config's choice) */
    uint32_t sample_ppm; /* sample: 0 to 1000000 */
    int reset;           /* report --reset */
    struct sy_shadow_accept_spec accept; /* accept, unaccept (sy_parse_shadow_accept) */
};

/* One parsed request. argv points into buf, which holds the line's words NUL-separated. */
struct sy_admin_request {
    enum sy_admin_cmd cmd;
    int argc;                        /* 1 or more when cmd is not SY_ADMIN_NONE */
    char *argv[SY_ADMIN_ARGS_MAX];   /* argv[0] is the command word */
    uint64_t pause_timeout_ms;       /* pause --timeout; 0 when not given */
    struct sy_admin_switch_args sw;  /* cutover and rollback */
    struct sy_admin_shadow_args shadow;
    char buf[SY_ADMIN_LINE_MAX];
};

/*
 * Parses one request line of len bytes (no '\n'; need not be NUL-terminated; a trailing '\r'
 * is allowed). Words are separated by spaces and tabs. Returns SY_ADMIN_PARSE_OK with *req
 * filled (cmd SY_ADMIN_NONE for a blank line); SY_ADMIN_PARSE_USAGE with a message in err for a
 * line that is too long, holds a control byte (a NUL included) or too many words, or a known
 * command whose arguments are wrong (the message names the argument and what it allows);
 * SY_ADMIN_PARSE_UNKNOWN with a message for an unknown command word. err is always
 * NUL-terminated when errlen > 0.
 */
int sy_admin_request_parse(const char *line, size_t len, struct sy_admin_request *req, char *err,
                           size_t errlen);

/*
 * The arguments of one command, from words argv[0..argc) (argv[0] the command word). Each
 * returns 0 with *out filled, or -1 with a message in err. They are what
 * sy_admin_request_parse uses, and what proxy/switch.c and proxy/pg_shadow.c call on the words
 * they are handed.
 */
int sy_admin_pause_args(int argc, char **argv, uint64_t *timeout_ms, char *err, size_t errlen);
int sy_admin_switch_args(int argc, char **argv, struct sy_admin_switch_args *out, char *err,
                         size_t errlen);
int sy_admin_shadow_args(int argc, char **argv, struct sy_admin_shadow_args *out, char *err,
                         size_t errlen);

/*
 * Reads s as a whole decimal number from min to max into *out. Returns 0, or -1 (and *out
 * untouched) when s is NULL or empty, holds anything but the digits 0-9 (a sign, a space, a
 * unit, a decimal point, hex), or is outside [min, max], an overflow of 64 bits included.
 */
int sy_admin_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* The command's name ("pause"), or "" for SY_ADMIN_NONE and unknown values. */
const char *sy_admin_cmd_name(enum sy_admin_cmd cmd);

#endif
