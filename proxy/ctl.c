/*
 * switchyardctl: the admin client. Sends one command line to the admin socket and prints the
 * JSON reply, either as it came (--json) or as a readable table.
 */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

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
            "  help      the commands the running switchyard knows\n"
            "\n"
            "Options:\n"
            "  -s, --socket PATH   admin socket (default $SWITCHYARD_SOCKET or " DEFAULT_SOCKET ")\n"
            "  -j, --json          print the reply as JSON (one object per line)\n"
            "  -h, --help          show this help\n"
            "  -V, --version       show the version\n");
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
    return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : "";
}

/* Reads one reply line (any length); bytes after it are kept for the next call. Returns a
 * malloc'd string or NULL at the end of the stream. */
static char *read_line(int fd)
{
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
        if (n <= 0)
            return NULL;
        len += (size_t)n;
    }
}

/* A long command (cutover, rollback): progress lines until the report, which has "result".
 * Progress is printed readably (or as JSON with --json); the report is always printed as its
 * JSON line, last. Exit 0 only when the switch happened (or a dry run passed). */
static int stream_switch(int fd, int json)
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
        if (json_object_object_get_ex(o, "error", &v))
            fprintf(stderr, "switchyardctl: %s\n", json_object_get_string(v));
        else if (json_object_object_get_ex(o, "result", &v)) {
            const char *r = json_object_get_string(v);
            rc = strcmp(r, "done") == 0 || strcmp(r, "ok") == 0 ? 0 : 1;
            if (!json && json_object_object_get_ex(o, "reason", &v))
                fprintf(stderr, "switchyardctl: aborted: %s\n", json_object_get_string(v));
        }
        printf("%s\n", line);
        json_object_put(o);
        free(line);
        return rc;
    }
    fprintf(stderr, "switchyardctl: the connection closed before the report\n");
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
        printf("switch: %s%s%s%s\n", jstr(swo, "state"),
               strcmp(jstr(swo, "rollback_window_open"), "true") == 0 ? ", rollback window open for "
                                                                      : "",
               jstr(swo, "rollback_window_left_s"),
               strcmp(jstr(swo, "rollback_window_open"), "true") == 0 ? " s" : "");
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
    line[len++] = '\n';
    int fd = admin_connect(path);
    if (fd < 0)
        return 1;
    if (write(fd, line, len) != (ssize_t)len) {
        fprintf(stderr, "switchyardctl: write to %s failed: %s\n", path, strerror(errno));
        return 1;
    }
    if (strcmp(argv[optind], "cutover") == 0 || strcmp(argv[optind], "rollback") == 0) {
        int rc = stream_switch(fd, json);
        close(fd);
        return rc;
    }
    char *reply = read_line(fd);
    close(fd);
    if (!reply) {
        fprintf(stderr, "switchyardctl: no reply from %s\n", path);
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
    json_object_put(o);
    free(reply);
    return failed ? 1 : 0;
}
