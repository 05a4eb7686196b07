#define _GNU_SOURCE /* struct ucred */
/*
 * The admin socket: a Unix socket (owner-only by default) speaking a line protocol. Each request
 * is one line of words; each reply is one line holding one JSON object. See docs/admin.md.
 *
 * Every connection's caller is checked with SO_PEERCRED before any command runs: only root and
 * the user switchyard runs as may use it, whatever the socket's file mode says.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "admin_parse.h"
#include "log.h"
#include "proxy.h"
#include "switch.h"
#include "sy_version.h"
#include "tls.h"

#define ADMIN_LINE_MAX SY_ADMIN_LINE_MAX

struct admin_conn {
    uv_pipe_t pipe;
    int closing;
    struct sy_proxy *proxy;
    size_t len;
    char buf[ADMIN_LINE_MAX];
    uid_t uid;
    pid_t pid;
};

struct admin_write {
    uv_write_t req;
    char *text;
};

static uv_pipe_t admin_server;
static int admin_open;

/* ---- replies ---- */

static void on_admin_closed(uv_handle_t *h) { free(h->data); }

static void admin_close(struct admin_conn *a)
{
    if (a->closing)
        return;
    a->closing = 1;
    sy_switch_forget_admin(a->proxy, (struct sy_admin_conn *)a);
    uv_close((uv_handle_t *)&a->pipe, on_admin_closed);
}

static void on_reply_written(uv_write_t *req, int status)
{
    struct admin_write *w = (struct admin_write *)req;
    free(w->text);
    free(w);
}

static void admin_reply(struct admin_conn *a, struct json_object *obj)
{
    const char *s = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN);
    size_t n = strlen(s);
    struct admin_write *w = malloc(sizeof(*w));
    char *text = malloc(n + 2);
    if (!w || !text) {
        free(w);
        free(text);
        json_object_put(obj);
        return;
    }
    memcpy(text, s, n);
    text[n] = '\n';
    w->text = text;
    json_object_put(obj);
    uv_buf_t b = uv_buf_init(text, (unsigned)(n + 1));
    if (uv_write(&w->req, (uv_stream_t *)&a->pipe, &b, 1, on_reply_written) != 0) {
        free(text);
        free(w);
    }
}

void sy_admin_send(struct sy_admin_conn *c, struct json_object *o)
{
    struct admin_conn *a = (struct admin_conn *)c;
    if (a->closing) {
        json_object_put(o);
        return;
    }
    admin_reply(a, o);
}

static struct json_object *error_reply(const char *msg)
{
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "error", json_object_new_string(msg));
    return o;
}

/* A request refused for its words alone (unknown command, bad argument): "kind": "usage" lets
 * switchyardctl exit 2 for it, as for a usage error it finds itself. */
static struct json_object *usage_reply(const char *msg)
{
    struct json_object *o = error_reply(msg);
    json_object_object_add(o, "kind", json_object_new_string("usage"));
    return o;
}

/* ---- commands ---- */

static void add_str(struct json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, json_object_new_string(v));
}

static void add_int(struct json_object *o, const char *k, int64_t v)
{
    json_object_object_add(o, k, json_object_new_int64(v));
}

static void pause_counts(struct sy_proxy *p, int64_t *held, int64_t *busy);

static struct json_object *side_json(struct sy_proxy *p, enum sy_side s)
{
    struct json_object *o = json_object_new_object();
    const struct sy_side_stats *st = &p->side[s];
    add_str(o, "host", p->cfg.server[s].host);
    add_int(o, "port", p->cfg.server[s].port);
    add_str(o, "role", p->active == s ? "active" : "standby");
    add_str(o, "health", st->healthy < 0 ? "unknown" : st->healthy ? "up" : "down");
    add_int(o, "server_connections", st->server_conns);
    int64_t kept = 0;
    for (const struct sy_pooled *e = p->pool; e; e = e->next)
        kept += e->side == s;
    add_int(o, "server_connections_kept", kept);
    if (st->last_error[0])
        add_str(o, "last_error", st->last_error);
    return o;
}

static struct json_object *cmd_status(struct sy_proxy *p, struct admin_conn *a, int argc, char **argv)
{
    struct json_object *o = json_object_new_object();
    add_str(o, "version", SY_VERSION);
    add_int(o, "uptime_s", (int64_t)((uv_now(p->loop) - p->started_ms) / 1000));
    add_str(o, "protocol", p->ops->name);
    add_str(o, "active", sy_side_name(p->active));
    add_int(o, "sessions", p->nsessions);
    add_str(o, "state", p->shutting_down ? "shutting_down" : "running");
    int64_t held, busy;
    pause_counts(p, &held, &busy);
    json_object_object_add(o, "paused", json_object_new_boolean(p->paused));
    add_int(o, "held", held);
    static const char *const states[] = {"login", "idle", "active", "idle_in_transaction",
                                         "failed_transaction"};
    int64_t counts[5] = {0};
    for (struct sy_session *s = p->sessions; s; s = s->next)
        for (int i = 0; i < 5; i++)
            if (strcmp(sy_session_state_name(s), states[i]) == 0)
                counts[i]++;
    struct json_object *by = json_object_new_object();
    for (int i = 0; i < 5; i++)
        add_int(by, states[i], counts[i]);
    json_object_object_add(o, "sessions_by_state", by);
    struct json_object *sides = json_object_new_object();
    json_object_object_add(sides, "blue", side_json(p, SY_BLUE));
    json_object_object_add(sides, "green", side_json(p, SY_GREEN));
    json_object_object_add(o, "sides", sides);
    struct json_object *t = json_object_new_object();
    add_int(t, "sessions", (int64_t)p->total_sessions);
    add_int(t, "queries", (int64_t)p->total_queries);
    add_int(t, "bytes_client_to_server", (int64_t)p->bytes_client_to_server);
    add_int(t, "bytes_server_to_client", (int64_t)p->bytes_server_to_client);
    add_int(t, "protocol_errors", (int64_t)p->protocol_errors);
    add_int(t, "refused_sessions", (int64_t)p->refused_sessions);
    add_int(t, "auth_failures", (int64_t)p->auth_failures);
    add_int(t, "server_connections_kept", (int64_t)p->servers_parked);
    add_int(t, "server_connections_reused", (int64_t)p->servers_reused);
    json_object_object_add(o, "totals", t);
    sy_switch_status(p, o);
    return o;
}

static struct json_object *cmd_clients(struct sy_proxy *p, struct admin_conn *a, int argc, char **argv)
{
    struct json_object *arr = json_object_new_array();
    uint64_t now = uv_now(p->loop);
    for (struct sy_session *s = p->sessions; s; s = s->next) {
        struct json_object *o = json_object_new_object();
        add_int(o, "id", (int64_t)s->id);
        add_str(o, "client", s->client_addr);
        add_str(o, "user", s->user);
        add_str(o, "database", s->database);
        add_str(o, "application", s->application);
        add_str(o, "state", s->held ? "held" : sy_session_state_name(s));
        add_str(o, "side", sy_side_name(s->side));
        add_int(o, "server_pid", (int64_t)s->server_pid);
        add_int(o, "age_s", (int64_t)((now - s->started_ms) / 1000));
        /* How long its transaction (or the request running outside one) has been open. */
        add_int(o, "transaction_age_ms",
                s->tx != SY_TX_IDLE && s->tx_started_ms ? (int64_t)(now - s->tx_started_ms) : 0);
        add_int(o, "queries", (int64_t)s->queries);
        add_int(o, "bytes_in", (int64_t)s->client.bytes_in);
        add_int(o, "bytes_out", (int64_t)(s->server ? s->server->bytes_in : 0));
        char tls[96] = "none";
        if (s->client.tls)
            sy_tls_describe(s->client.tls, tls, sizeof(tls));
        add_str(o, "client_tls", tls);
        snprintf(tls, sizeof(tls), "none");
        if (s->server && s->server->tls)
            sy_tls_describe(s->server->tls, tls, sizeof(tls));
        add_str(o, "server_tls", tls);
        json_object_array_add(arr, o);
    }
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "clients", arr);
    return o;
}

static struct json_object *cmd_servers(struct sy_proxy *p, struct admin_conn *a, int argc, char **argv)
{
    struct json_object *arr = json_object_new_array();
    for (struct sy_session *s = p->sessions; s; s = s->next) {
        if (!s->server_counted)
            continue;
        struct json_object *o = json_object_new_object();
        add_int(o, "session", (int64_t)s->id);
        add_str(o, "side", sy_side_name(s->side));
        add_str(o, "address", s->proxy->cfg.server[s->side].host);
        add_int(o, "port", s->proxy->cfg.server[s->side].port);
        add_str(o, "user", s->user);
        add_str(o, "database", s->database);
        add_str(o, "state", sy_session_state_name(s));
        json_object_array_add(arr, o);
    }
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "servers", arr);
    return o;
}

/* Sessions held by a pause, and sessions still inside a transaction or a running query. */
static void pause_counts(struct sy_proxy *p, int64_t *held, int64_t *busy)
{
    *held = *busy = 0;
    for (struct sy_session *s = p->sessions; s; s = s->next) {
        if (s->held)
            (*held)++;
        else if (s->phase == SY_PHASE_READY && s->tx != SY_TX_IDLE)
            (*busy)++;
    }
}

static struct json_object *cmd_pause(struct sy_proxy *p, struct admin_conn *a, int argc, char **argv)
{
    uint64_t timeout = 0;
    char err[256];
    if (sy_admin_pause_args(argc, argv, &timeout, err, sizeof(err)) != 0)
        return usage_reply(err);
    if (p->shutting_down)
        return error_reply("switchyard is shutting down");
    sy_proxy_pause(p, timeout);
    int64_t held, busy;
    pause_counts(p, &held, &busy);
    struct json_object *o = json_object_new_object();
    add_str(o, "result", "paused");
    add_int(o, "timeout_ms", (int64_t)timeout);
    add_int(o, "held", held);
    add_int(o, "in_transaction", busy);
    return o;
}

static struct json_object *cmd_resume(struct sy_proxy *p, struct admin_conn *a, int argc, char **argv)
{
    int64_t held, busy;
    pause_counts(p, &held, &busy);
    int was = p->paused;
    sy_proxy_resume(p, "resume command");
    struct json_object *o = json_object_new_object();
    add_str(o, "result", was ? "resumed" : "not_paused");
    add_int(o, "released", was ? held : 0);
    return o;
}

static struct json_object *cmd_cutover(struct sy_proxy *p, struct admin_conn *a, int argc, char **argv)
{
    return sy_switch_cmd_cutover(p, (struct sy_admin_conn *)a, argc, argv, 0);
}

static struct json_object *cmd_rollback(struct sy_proxy *p, struct admin_conn *a, int argc, char **argv)
{
    return sy_switch_cmd_cutover(p, (struct sy_admin_conn *)a, argc, argv, 1);
}

static struct json_object *cmd_commit(struct sy_proxy *p, struct admin_conn *a, int argc, char **argv)
{
    return sy_switch_cmd_commit(p, argc, argv);
}

static struct json_object *cmd_shadow(struct sy_proxy *p, struct admin_conn *a, int argc, char **argv)
{
    return sy_shadow_cmd(p, argc, argv);
}

static struct json_object *cmd_help(struct sy_proxy *p, struct admin_conn *a, int argc, char **argv);

static const struct {
    const char *name;
    struct json_object *(*fn)(struct sy_proxy *p, struct admin_conn *a, int argc, char **argv);
    const char *help;
} commands[] = {
    {"status", cmd_status, "the proxy, both sides and totals"},
    {"clients", cmd_clients, "one row per client session"},
    {"servers", cmd_servers, "one row per server connection"},
    {"pause", cmd_pause, "hold new transactions and logins at the proxy [--timeout MS] (MS: 1 "
                         "to 86400000)"},
    {"resume", cmd_resume, "release everything a pause holds"},
    {"cutover", cmd_cutover, "move every session to the standby side [--timeout MS] [--dry-run] "
                             "[--force]; streams progress, ends with the report"},
    {"rollback", cmd_rollback, "within the rollback window, move back the same way "
                               "[--timeout MS] [--dry-run] [--force]"},
    {"commit", cmd_commit, "close the rollback window and remove the reverse replication"},
    {"shadow", cmd_shadow, "shadow traffic: status | on [reads|all] | off | sample FRACTION (0 "
                           "to 1) | report [--reset] | reset | accept FINGERPRINT [--column "
                           "NAME] [--class real|order_only|inconclusive] | unaccept ... | "
                           "accepts"},
    {"help", cmd_help, "the commands"},
};

static struct json_object *cmd_help(struct sy_proxy *p, struct admin_conn *a, int argc, char **argv)
{
    struct json_object *o = json_object_new_object();
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        add_str(o, commands[i].name, commands[i].help);
    struct json_object *r = json_object_new_object();
    json_object_object_add(r, "commands", o);
    return r;
}

/* Runs one request line of len bytes (its '\n' removed). */
static void admin_run_line(struct admin_conn *a, const char *line, size_t len)
{
    struct sy_admin_request *req = malloc(sizeof(*req));
    char err[256];
    if (!req) {
        admin_reply(a, error_reply("out of memory"));
        return;
    }
    int rc = sy_admin_request_parse(line, len, req, err, sizeof(err));
    if (rc != SY_ADMIN_PARSE_OK) {
        sy_debug("admin: uid %u sent a request refused: %s", (unsigned)a->uid, err);
        admin_reply(a, usage_reply(err));
    } else if (req->cmd != SY_ADMIN_NONE) {
        const char *name = sy_admin_cmd_name(req->cmd);
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
            if (strcmp(name, commands[i].name) != 0)
                continue;
            sy_debug("admin: uid %u ran '%s'", (unsigned)a->uid, name);
            struct json_object *r = commands[i].fn(a->proxy, a, req->argc, req->argv);
            if (r)
                admin_reply(a, r); /* NULL: a long command replies as it goes */
            break;
        }
    }
    free(req);
}

/* ---- connections ---- */

static void admin_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct admin_conn *a = h->data;
    b->base = a->buf + a->len;
    b->len = sizeof(a->buf) - a->len;
}

static void admin_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct admin_conn *a = s->data;
    if (nread < 0) {
        admin_close(a);
        return;
    }
    a->len += (size_t)nread;
    char *nl;
    while ((nl = memchr(a->buf, '\n', a->len)) != NULL) {
        size_t used = (size_t)(nl - a->buf) + 1;
        admin_run_line(a, a->buf, used - 1);
        memmove(a->buf, a->buf + used, a->len - used);
        a->len -= used;
    }
    if (a->len == sizeof(a->buf)) {
        char msg[96];
        snprintf(msg, sizeof(msg), "the request line is longer than %d bytes; the connection "
                 "is closed", ADMIN_LINE_MAX - 1);
        admin_reply(a, usage_reply(msg));
        uv_read_stop(s);
        admin_close(a); /* a switch this connection started must forget it */
    }
}

static void on_admin_connection(uv_stream_t *server, int status)
{
    struct sy_proxy *p = server->data;
    if (status < 0)
        return;
    struct admin_conn *a = calloc(1, sizeof(*a));
    if (!a)
        return;
    a->proxy = p;
    uv_pipe_init(p->loop, &a->pipe, 0);
    a->pipe.data = a;
    if (uv_accept(server, (uv_stream_t *)&a->pipe) != 0) {
        uv_close((uv_handle_t *)&a->pipe, on_admin_closed);
        return;
    }
    uv_os_fd_t fd;
    struct ucred cred;
    socklen_t cl = sizeof(cred);
    if (uv_fileno((uv_handle_t *)&a->pipe, &fd) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0) {
        sy_warn("admin: could not read the caller's credentials; connection refused");
        uv_close((uv_handle_t *)&a->pipe, on_admin_closed);
        return;
    }
    a->uid = cred.uid;
    a->pid = cred.pid;
    if (cred.uid != 0 && cred.uid != geteuid()) {
        sy_warn("admin: refused uid %u (pid %d): only root and uid %u may use the admin socket",
                (unsigned)cred.uid, (int)cred.pid, (unsigned)geteuid());
        admin_reply(a, error_reply("permission denied: the admin socket is for root and the "
                                   "user switchyard runs as"));
        uv_close((uv_handle_t *)&a->pipe, on_admin_closed);
        return;
    }
    uv_read_start((uv_stream_t *)&a->pipe, admin_alloc, admin_read);
}

int sy_admin_start(struct sy_proxy *p)
{
    const char *path = p->cfg.admin_socket;
    struct stat st;
    /* A socket left by a previous run is replaced; anything else at that path is not ours. */
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            sy_error("admin_socket %s exists and is not a socket; remove it or choose another path",
                     path);
            return -1;
        }
        unlink(path);
    }
    uv_pipe_init(p->loop, &admin_server, 0);
    admin_server.data = p;
    admin_open = 1;
    /* Created owner-only, then opened to the configured mode: never briefly wider. */
    mode_t old = umask(0177);
    int rc = uv_pipe_bind(&admin_server, path);
    umask(old);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&admin_server, 64, on_admin_connection);
    if (rc != 0) {
        sy_error("cannot open admin_socket %s: %s", path, uv_strerror(rc));
        return -1;
    }
    if (chmod(path, p->cfg.admin_socket_mode) != 0) {
        sy_error("cannot set mode %o on admin_socket %s: %s", p->cfg.admin_socket_mode, path,
                 strerror(errno));
        return -1;
    }
    sy_info("admin socket %s (mode %04o)", path, p->cfg.admin_socket_mode);
    return 0;
}

void sy_admin_stop(struct sy_proxy *p)
{
    if (!admin_open)
        return;
    admin_open = 0;
    uv_close((uv_handle_t *)&admin_server, NULL);
    unlink(p->cfg.admin_socket);
}
