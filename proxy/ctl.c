/*
 * switchyardctl: the admin client. Sends one command line to the admin socket and prints the
 * JSON reply, either as it came (--json) or as a readable table.
 *
 * Exit status: 0 success; 1 the command failed or could not be carried (an error reply, an
 * aborted switch, no daemon, the connection closed early, a reply that is not JSON); 2 a usage
 * error, found here before anything is sent (the same parser as the daemon's, admin_parse.c)
 * or by the daemon (an error reply with "kind": "usage").
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "admin_parse.h"
#include "sy_version.h"

#define DEFAULT_SOCKET "/tmp/switchyard.sock"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: switchyardctl [-s SOCKET] [--json] COMMAND [ARGS]\n"
            "\n"
            "Commands:\n"
            "  status    the proxy, blue and green, session counts and totals\n"
            "  clients   one row per client session\n"
            "  servers   one row per server connection\n"
            "  pause [--timeout MS]  hold new transactions and logins at the proxy; with a\n"
            "            timeout, resume by itself after MS milliseconds\n"
            "  resume    release everything a pause holds\n"
            "  cutover [--timeout MS] [--dry-run] [--force]\n"
            "            move every session to the standby side: guardrails, warm connections,\n"
            "            pause, drain (up to MS; --force ends what is still open), fence, catch\n"
            "            up, move, resume. Shows progress; the last line is the JSON report.\n"
            "            Exits 0 only when the switch happened (or --dry-run passed).\n"
            "  rollback [--timeout MS] [--dry-run] [--force]\n"
            "            within the rollback window, the same steps back to the old side\n"
            "  commit    close the rollback window (removes the reverse replication)\n"
            "  shadow [on [reads|all] | off | sample FRACTION]\n"
            "            mirror live traffic to the standby side and compare its answers\n"
            "  shadow report [--reset]\n"
            "            per query fingerprint: matches, divergences by class, latency on both\n"
            "            sides, the first example of each divergence (a table; --json: data)\n"
            "  shadow reset  zero the shadow report\n"
            "  shadow accept FINGERPRINT [--column NAME] [--class CLASS]\n"
            "            count a divergence the migration intends as accepted (not gated);\n"
            "            FINGERPRINT as the report shows it (quote it) or its 16-hex-digit hash\n"
            "  shadow unaccept FINGERPRINT [--column NAME] [--class CLASS]\n"
            "  shadow accepts  the accepted divergences\n"
            "  help      the commands the running switchyard knows\n"
            "\n"
            "Options:\n"
            "  -s, --socket PATH   admin socket (default $SWITCHYARD_SOCKET or " DEFAULT_SOCKET ")\n"
            "  -j, --json          print the reply as JSON (one object per line)\n"
            "  -h, --help          show this help\n"
            "  -V, --version       show the version\n"
            "\n"
            "Numbers are checked before anything is sent: --timeout takes whole milliseconds\n"
            "from 1 to 86400000 (a day), shadow sample a fraction from 0 to 1 (like 0.25).\n"
            "\n"
            "Exit status: 0 success; 1 the command failed (an error reply, an aborted switch,\n"
            "no daemon on the socket, the daemon closed the connection); 2 a usage error (a bad\n"
            "option, command or argument, whether found here or refused by the daemon).\n");
}

static int admin_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "switchyardctl: socket path too long: %s\n", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        int e = errno;
        fprintf(stderr, "switchyardctl: cannot connect to %s: %s\n", path, strerror(e));
        if (e == ENOENT || e == ECONNREFUSED)
            fprintf(stderr, "  is switchyard running? Use -s with the admin_socket from its config.\n");
        else if (e == EACCES)
            fprintf(stderr, "  run as the user switchyard runs as, or as root.\n");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static const char *jstr(struct json_object *o, const char *k)
{
    struct json_object *v;
    const char *r = json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : "";
    return r ? r : ""; /* a JSON null ("fenced" of a side that did not answer) */
}

static int read_errno; /* why read_line last returned NULL: 0 at the end of the stream */

/* Reads one reply line (any length); bytes after it are kept for the next call. Returns a
 * malloc'd string, or NULL at the end of the stream or on an error (read_errno says which). */
static char *read_line(int fd)
{
    read_errno = 0;
    static char *buf;
    static size_t cap, len;
    for (;;) {
        char *nl = buf ? memchr(buf, '\n', len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - buf);
            char *line = malloc(n + 1);
            if (!line)
                return NULL;
            memcpy(line, buf, n);
            line[n] = 0;
            memmove(buf, nl + 1, len - n - 1);
            len -= n + 1;
            return line;
        }
        if (len + 4096 > cap) {
            size_t ncap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, ncap);
            if (!nb)
                return NULL;
            buf = nb;
            cap = ncap;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            read_errno = errno;
        if (n <= 0)
            return NULL;
        len += (size_t)n;
    }
}

/* Says that the daemon closed the connection (or reset it) before its reply ended. */
static void report_closed(const char *path, const char *when, int e)
{
    fprintf(stderr, "switchyardctl: the daemon closed the connection %s%s%s; see its log "
            "(is %s the admin_socket of a running switchyard?)\n", when, e ? ": " : "",
            e ? strerror(e) : "", path);
}

/* Writes all of buf, without SIGPIPE. Returns 0, or -1 with errno set. */
static int send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* 2 for an error reply the daemon marks "kind": "usage" (bad words), else 1. */
static int error_exit(struct json_object *o)
{
    struct json_object *k;
    return json_object_object_get_ex(o, "kind", &k) &&
                   strcmp(json_object_get_string(k), "usage") == 0
               ? 2
               : 1;
}

/* A long command (cutover, rollback): progress lines until the report, which has "result".
 * Progress is printed readably (or as JSON with --json); the report is always printed as its
 * JSON line, last. Exit 0 only when the switch happened (or a dry run passed). */
static int stream_switch(int fd, int json, const char *path)
{
    char *line;
    while ((line = read_line(fd)) != NULL) {
        struct json_object *o = json_tokener_parse(line), *v;
        if (!o) {
            fprintf(stderr, "switchyardctl: reply is not JSON: %.200s\n", line);
            free(line);
            return 1;
        }
        if (json_object_object_get_ex(o, "progress", &v)) {
            if (json)
                printf("%s\n", line);
            else {
                struct json_object *d;
                printf("[%6s ms] %-9s %s\n", jstr(o, "elapsed_ms"), json_object_get_string(v),
                       json_object_object_get_ex(o, "detail", &d) ? json_object_get_string(d) : "");
            }
            fflush(stdout);
            json_object_put(o);
            free(line);
            continue;
        }
        int rc = 1;
        if (json_object_object_get_ex(o, "error", &v)) {
            fprintf(stderr, "switchyardctl: %s\n", json_object_get_string(v));
            rc = error_exit(o);
        }
        else if (json_object_object_get_ex(o, "result", &v)) {
            const char *r = json_object_get_string(v);
            rc = strcmp(r, "done") == 0 || strcmp(r, "ok") == 0 ? 0 : 1;
            if (!json && json_object_object_get_ex(o, "reason", &v))
                fprintf(stderr, "switchyardctl: aborted: %s\n", json_object_get_string(v));
            /* The one-line summary for people; the JSON report stays the last line. */
            if (!json && json_object_object_get_ex(o, "summary", &v))
                printf("%s\n", json_object_get_string(v));
        }
        printf("%s\n", line);
        json_object_put(o);
        free(line);
        return rc;
    }
    report_closed(path, "before the report", read_errno);
    return 1;
}

static void print_status(struct json_object *o)
{
    printf("switchyard %s, up %ss, protocol %s, %s\n", jstr(o, "version"), jstr(o, "uptime_s"),
           jstr(o, "protocol"), jstr(o, "state"));
    printf("active: %s%s\n", jstr(o, "active"),
           strcmp(jstr(o, "paused"), "true") == 0 ? "  (PAUSED: new transactions wait)" : "");
    struct json_object *sides, *by, *tot;
    if (json_object_object_get_ex(o, "sides", &sides)) {
        json_object_object_foreach(sides, name, s) {
            printf("  %-5s %s:%s  %-7s health=%s  server=%s%s  server_connections=%s%s%s\n",
                   name, jstr(s, "host"), jstr(s, "port"), jstr(s, "role"), jstr(s, "health"),
                   jstr(s, "server_role"), strcmp(jstr(s, "fenced"), "true") == 0 ? " FENCED" : "",
                   jstr(s, "server_connections"), *jstr(s, "last_error") ? "  " : "",
                   jstr(s, "last_error"));
            if (*jstr(s, "fence_mismatch"))
                printf("        FENCE MISMATCH: %s\n", jstr(s, "fence_mismatch"));
        }
    }
    static const char *const repls[] = {"replication", "reverse_replication"};
    for (int i = 0; i < 2; i++) {
        struct json_object *r;
        if (!json_object_object_get_ex(o, repls[i], &r))
            continue;
        printf("%s: %s %s -> %s, lag %s bytes / %s s%s%s%s\n", repls[i], jstr(r, "mode"),
               jstr(r, "from"), jstr(r, "to"), jstr(r, "lag_bytes"), jstr(r, "lag_seconds"),
               strcmp(jstr(r, "streaming"), "true") == 0 ? ", streaming" : ", NOT streaming",
               *jstr(r, "problem") ? ": " : "", jstr(r, "problem"));
    }
    struct json_object *swo;
    if (json_object_object_get_ex(o, "switch", &swo))
        printf("switch: %s%s%s%s%s%s\n", jstr(swo, "state"),
               strcmp(jstr(swo, "rollback_window_open"), "true") == 0 ? ", rollback window open for "
                                                                      : "",
               jstr(swo, "rollback_window_left_s"),
               strcmp(jstr(swo, "rollback_window_open"), "true") == 0 ? " s, until " : "",
               jstr(swo, "rollback_window_until"),
               strcmp(jstr(swo, "rollback_possible"), "false") == 0 ? " (ROLLBACK NOT POSSIBLE)"
                                                                    : "");
    printf("sessions: %s", jstr(o, "sessions"));
    if (json_object_object_get_ex(o, "sessions_by_state", &by)) {
        json_object_object_foreach(by, st, n) printf("  %s=%s", st, json_object_get_string(n));
    }
    printf("\n");
    if (json_object_object_get_ex(o, "totals", &tot)) {
        printf("totals:");
        json_object_object_foreach(tot, k, v) printf("  %s=%s", k, json_object_get_string(v));
        printf("\n");
    }
}

/* Prints an array of flat objects as a table with the keys of the first row as columns. */
static void print_rows(struct json_object *arr)
{
    size_t n = json_object_array_length(arr);
    if (n == 0) {
        printf("(none)\n");
        return;
    }
    struct json_object *first = json_object_array_get_idx(arr, 0);
    json_object_object_foreach(first, k, v0) {
        (void)v0;
        printf("%-22s", k);
    }
    printf("\n");
    for (size_t i = 0; i < n; i++) {
        struct json_object *row = json_object_array_get_idx(arr, i);
        json_object_object_foreach(row, k2, v) {
            (void)k2;
            printf("%-22s", json_object_get_string(v));
        }
        printf("\n");
    }
}

static void print_human(const char *cmd, struct json_object *o)
{
    struct json_object *arr, *table;
    if (strcmp(cmd, "status") == 0)
        print_status(o);
    else if (json_object_object_get_ex(o, "table", &table))
        fputs(json_object_get_string(table), stdout); /* shadow report */
    else if (json_object_object_get_ex(o, "clients", &arr) ||
             json_object_object_get_ex(o, "servers", &arr))
        print_rows(arr);
    else
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"socket", required_argument, NULL, 's'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    const char *path = getenv("SWITCHYARD_SOCKET");
    int json = 0, c;
    if (!path || !*path)
        path = DEFAULT_SOCKET;
    while ((c = getopt_long(argc, argv, "+s:jhV", opts, NULL)) != -1) {
        switch (c) {
        case 's': path = optarg; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("switchyardctl %s\n", SY_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    char line[4096];
    size_t len = 0;
    for (int i = optind; i < argc; i++) {
        int w = snprintf(line + len, sizeof(line) - len, "%s%s", i > optind ? " " : "", argv[i]);
        if (w < 0 || (size_t)w >= sizeof(line) - len - 1) {
            fprintf(stderr, "switchyardctl: command too long\n");
            return 2;
        }
        len += (size_t)w;
    }
    /* The daemon parses the line the same way; a bad one is refused here, before connecting.
     * An unknown command goes through: the daemon may be newer than this switchyardctl. */
    struct sy_admin_request *req = malloc(sizeof(*req));
    char why[256];
    if (!req) {
        fprintf(stderr, "switchyardctl: out of memory\n");
        return 1;
    }
    int prc = sy_admin_request_parse(line, len, req, why, sizeof(why));
    free(req);
    if (prc == SY_ADMIN_PARSE_USAGE) {
        fprintf(stderr, "switchyardctl: %s\n", why);
        return 2;
    }
    line[len++] = '\n';
    /* A daemon that closes early must not kill us with SIGPIPE (send uses MSG_NOSIGNAL too). */
    signal(SIGPIPE, SIG_IGN);
    int fd = admin_connect(path);
    if (fd < 0)
        return 1;
    if (send_all(fd, line, len) != 0) {
        int e = errno;
        if (e == EPIPE || e == ECONNRESET)
            report_closed(path, "before it read the command", e);
        else
            fprintf(stderr, "switchyardctl: write to %s failed: %s\n", path, strerror(e));
        close(fd);
        return 1;
    }
    if (strcmp(argv[optind], "cutover") == 0 || strcmp(argv[optind], "rollback") == 0) {
        int rc = stream_switch(fd, json, path);
        close(fd);
        return rc;
    }
    char *reply = read_line(fd);
    close(fd);
    if (!reply) {
        report_closed(path, "before replying", read_errno);
        return 1;
    }
    struct json_object *o = json_tokener_parse(reply);
    if (!o) {
        fprintf(stderr, "switchyardctl: reply is not JSON: %.200s\n", reply);
        free(reply);
        return 1;
    }
    struct json_object *e;
    int failed = json_object_object_get_ex(o, "error", &e);
    if (json && json_object_object_get_ex(o, "table", &e)) {
        /* The readable table is for people; --json gets the data alone. */
        json_object_object_del(o, "table");
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    } else if (json)
        printf("%s\n", reply);
    else if (failed)
        fprintf(stderr, "switchyardctl: %s\n", json_object_get_string(e));
    else
        print_human(argv[optind], o);
    int rc = failed ? error_exit(o) : 0;
    json_object_put(o);
    free(reply);
    return rc;
}
