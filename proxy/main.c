/*
 * switchyard: the daemon. Parses the command line and config, starts the listeners and the admin
 * socket, and handles signals: SIGHUP reloads the config, SIGTERM/SIGINT stop accepting and let
 * sessions finish for up to shutdown_grace (a second signal stops at once).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "auth_query.h"
#include "switch.h"
#include "config/auth_file.h"
#include "log.h"
#include "pg_crypto.h"
#include "pg_session.h"
#include "proxy.h"
#include "shadow_recheck.h"
#include "sy_version.h"
#include "tls.h"

#define HEALTH_INTERVAL_MS 5000
#define SHUTDOWN_POLL_MS 100

static struct sy_proxy proxy;
static uv_signal_t sig_term, sig_int, sig_hup;
static uv_timer_t health_timer, shutdown_timer;
static uint64_t shutdown_started_ms;

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: switchyard -c FILE [--check]\n"
            "\n"
            "Blue-green switchover proxy for PostgreSQL. Clients connect to switchyard; it relays\n"
            "each session to the active database (blue or green).\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE   the INI config file (see docs/config.md)\n"
            "      --check         validate the config file and exit (0 when valid)\n"
            "  -h, --help          show this help and exit\n"
            "  -V, --version       show the version and exit\n"
            "\n"
            "Signals: SIGHUP reloads the config; SIGTERM or SIGINT stops accepting clients and\n"
            "waits up to shutdown_grace for sessions to end (a second signal stops at once).\n"
            "Admin: switchyardctl -s ADMIN_SOCKET status\n");
}

/* ---- health probes: a TCP connect to each side on an interval ---- */

struct probe {
    uv_tcp_t tcp;
    uv_connect_t req;
    enum sy_side side;
};

static void on_probe_closed(uv_handle_t *h) { free(h->data); }

static void on_probe(uv_connect_t *req, int status)
{
    struct probe *pr = req->data;
    struct sy_side_stats *st = &proxy.side[pr->side];
    if (status != UV_ECANCELED) {
        int up = status == 0;
        if (st->healthy != up)
            sy_log(up ? SY_LOG_INFO : SY_LOG_WARN, "%s server %s:%d is %s%s%s", sy_side_name(pr->side),
                                     proxy.cfg.server[pr->side].host,
                                     proxy.cfg.server[pr->side].port, up ? "up" : "down",
                                     up ? "" : ": ", up ? "" : uv_strerror(status));
        st->healthy = up;
        if (!up)
            snprintf(st->last_error, sizeof(st->last_error), "connect: %s", uv_strerror(status));
        else
            st->last_error[0] = 0;
    }
    uv_close((uv_handle_t *)&pr->tcp, on_probe_closed);
}

static void on_health_timer(uv_timer_t *t)
{
    for (int s = 0; s < 2; s++) {
        struct probe *pr = calloc(1, sizeof(*pr));
        if (!pr)
            return;
        pr->side = (enum sy_side)s;
        uv_tcp_init(proxy.loop, &pr->tcp);
        pr->tcp.data = pr;
        pr->req.data = pr;
        if (uv_tcp_connect(&pr->req, &pr->tcp, (struct sockaddr *)&proxy.server_addr[s], on_probe))
            uv_close((uv_handle_t *)&pr->tcp, on_probe_closed);
    }
}

/* ---- secrets and TLS contexts, built at start and again on reload ---- */

struct runtime {
    struct sy_tls_ctx *client_ctx;
    struct sy_tls_ctx *server_ctx[2];
    struct sy_auth_file *auth_file;
};

static void runtime_free(struct runtime *rt)
{
    sy_tls_ctx_free(rt->client_ctx);
    sy_tls_ctx_free(rt->server_ctx[0]);
    sy_tls_ctx_free(rt->server_ctx[1]);
    if (rt->auth_file) {
        sy_auth_file_free(rt->auth_file);
        free(rt->auth_file);
    }
    memset(rt, 0, sizeof(*rt));
}

static void warn_if_readable(const char *what, const char *path)
{
    if (path[0] && sy_auth_file_readable_by_others(path) == 1)
        sy_warn("%s %s can be read by other users; chmod 600 it", what, path);
}

/* Loads the auth file and makes the TLS contexts the config asks for. Returns 0, or -1 after
 * logging what is wrong (nothing is changed then). */
static int runtime_build(const struct sy_config *cfg, struct runtime *rt)
{
    char err[512];
    memset(rt, 0, sizeof(*rt));
    if (cfg->auth_file[0]) {
        rt->auth_file = calloc(1, sizeof(*rt->auth_file));
        if (!rt->auth_file || sy_auth_file_load(cfg->auth_file, rt->auth_file, err, sizeof(err)) != 0) {
            sy_error("auth_file: %s", rt->auth_file ? err : "out of memory");
            free(rt->auth_file);
            rt->auth_file = NULL;
            return -1;
        }
        warn_if_readable("auth_file", cfg->auth_file);
    }
    if (cfg->client_tls != SY_CLIENT_TLS_DISABLE) {
        rt->client_ctx = sy_tls_ctx_new_server(cfg->client_tls_cert, cfg->client_tls_key,
                                               cfg->client_tls_ca[0] ? cfg->client_tls_ca : NULL,
                                               0, SY_TLS_ALPN_STRICT, err, sizeof(err));
        if (!rt->client_ctx) {
            sy_error("client TLS: %s", err);
            runtime_free(rt);
            return -1;
        }
        warn_if_readable("client_tls_key", cfg->client_tls_key);
    }
    for (int s = 0; s < 2; s++) {
        const struct sy_server_config *sc = &cfg->server[s];
        if (sc->tls == SY_SERVER_TLS_DISABLE)
            continue;
        static const enum sy_tls_mode modes[] = {
            [SY_SERVER_TLS_PREFER] = SY_TLS_PREFER, [SY_SERVER_TLS_REQUIRE] = SY_TLS_REQUIRE,
            [SY_SERVER_TLS_VERIFY_CA] = SY_TLS_VERIFY_CA,
            [SY_SERVER_TLS_VERIFY_FULL] = SY_TLS_VERIFY_FULL};
        rt->server_ctx[s] = sy_tls_ctx_new_client(sc->tls_ca[0] ? sc->tls_ca : NULL, modes[sc->tls],
                                                  err, sizeof(err));
        if (!rt->server_ctx[s]) {
            sy_error("server_tls for [%s]: %s", sy_side_name((enum sy_side)s), err);
            runtime_free(rt);
            return -1;
        }
    }
    return 0;
}

static void runtime_install(struct runtime *rt)
{
    struct runtime old = {proxy.client_tls_ctx, {proxy.server_tls_ctx[0], proxy.server_tls_ctx[1]},
                          proxy.auth_file};
    /* Sessions in the middle of a login copied what they need; connections hold their own
     * reference to their TLS context. */
    proxy.client_tls_ctx = rt->client_ctx;
    proxy.server_tls_ctx[0] = rt->server_ctx[0];
    proxy.server_tls_ctx[1] = rt->server_ctx[1];
    proxy.auth_file = rt->auth_file;
    runtime_free(&old);
}

/* ---- one daemon per admin socket and state file ---- */

/*
 * Takes an exclusive lock on lock_path (created 0600 if absent) and writes this process's pid
 * into it; the lock lasts as long as the process (the descriptor is never closed). what names
 * the thing guarded ("admin_socket /tmp/x.sock"). Returns 0, or -1 after logging which daemon
 * holds it (its pid, read from the file) or why the file cannot be locked.
 */
static int lock_take(const char *what, const char *lock_path)
{
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        sy_error("cannot open the lock file %s for %s: %s; check that its directory exists "
                 "and is writable by this user", lock_path, what, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char pid[24] = "";
        ssize_t n = e == EWOULDBLOCK ? pread(fd, pid, sizeof(pid) - 1, 0) : -1;
        close(fd);
        if (e != EWOULDBLOCK) {
            sy_error("cannot lock %s for %s: %s", lock_path, what, strerror(e));
            return -1;
        }
        pid[n > 0 ? strspn(pid, "0123456789") : 0] = 0;
        sy_error("%s is in use by another switchyard (pid %s, holding %s); stop that one "
                 "first, or give this one its own admin_socket and state_file", what,
                 pid[0] ? pid : "unknown", lock_path);
        return -1;
    }
    char pid[24];
    int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n)
        sy_warn("cannot write the pid into the lock file %s: %s", lock_path, strerror(errno));
    return 0; /* fd stays open: closing it would drop the lock */
}

/*
 * Locks <admin_socket>.lock, and <state_file>.lock when state_file is set (by default the
 * state file is <admin_socket>.state, which the first lock covers). Before either path is
 * touched: a second daemon on the same socket would unlink the running one's, and two daemons
 * writing one state file would each undo the other's record of the active side. Returns 0 or
 * -1 (logged).
 */
static int locks_take(const struct sy_config *cfg)
{
    char path[SY_PATH_MAX + 16], what[SY_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s.lock", cfg->admin_socket);
    snprintf(what, sizeof(what), "admin_socket %s", cfg->admin_socket);
    if (lock_take(what, path) != 0)
        return -1;
    char state[SY_PATH_MAX + 8];
    if (cfg->state_file[0])
        snprintf(state, sizeof(state), "%s", cfg->state_file);
    else if (sy_switch_default_state_path(cfg->admin_socket, state, sizeof(state)) != 0)
        return 0; /* falls back to <admin_socket>.state, covered by the socket's lock */
    if (strlen(state) + sizeof(".lock") > sizeof(path)) {
        sy_error("state_file %s is too long to put a .lock beside it; use a shorter path", state);
        return -1;
    }
    snprintf(path, sizeof(path), "%s.lock", state);
    snprintf(what, sizeof(what), "state_file %s", state);
    return lock_take(what, path);
}

/* ---- reload ---- */

static void reload(void)
{
    struct sy_config *cfg = malloc(sizeof(*cfg));
    char err[512];
    struct sockaddr_storage addr[2];
    if (!cfg)
        return;
    if (sy_config_load(proxy.cfg.path, cfg, err, sizeof(err)) != 0) {
        sy_error("reload failed, keeping the running config: %s", err);
        free(cfg);
        return;
    }
    struct runtime rt;
    if (sy_proxy_resolve_servers(&proxy, cfg, addr) != 0 || runtime_build(cfg, &rt) != 0) {
        sy_error("reload failed, keeping the running config");
        free(cfg);
        return;
    }
    runtime_install(&rt);
    if (cfg->nlisten != proxy.cfg.nlisten ||
        memcmp(cfg->listen, proxy.cfg.listen, sizeof(cfg->listen[0]) * cfg->nlisten) != 0)
        sy_warn("reload: listen addresses changed; that takes effect at the next restart");
    if (strcmp(cfg->admin_socket, proxy.cfg.admin_socket) != 0 ||
        cfg->admin_socket_mode != proxy.cfg.admin_socket_mode)
        sy_warn("reload: admin_socket changes take effect at the next restart");
    if (cfg->protocol != proxy.cfg.protocol)
        sy_warn("reload: protocol changes take effect at the next restart");
    /* Keep what only a restart can change, take everything else. */
    memcpy(cfg->listen, proxy.cfg.listen, sizeof(cfg->listen));
    cfg->nlisten = proxy.cfg.nlisten;
    memcpy(cfg->admin_socket, proxy.cfg.admin_socket, sizeof(cfg->admin_socket));
    cfg->admin_socket_mode = proxy.cfg.admin_socket_mode;
    cfg->protocol = proxy.cfg.protocol;
    /* Shadow settings the config changed take over from those set at run time. */
    if (cfg->shadow != proxy.cfg.shadow) {
        /* Sessions shadowed in the old mode start again in the new one (a reads-mode shadow
         * must be a read-only connection). */
        proxy.shadow_mode = cfg->shadow;
        sy_shadow_stop_all(&proxy, "the config changed the shadow mode");
    }
    if (cfg->shadow_sample_ppm != proxy.cfg.shadow_sample_ppm)
        proxy.shadow_sample_ppm = cfg->shadow_sample_ppm;
    proxy.cfg = *cfg;
    sy_shadow_config_changed(&proxy); /* its shadow_accept list and gate window */
    memcpy(proxy.server_addr, addr, sizeof(addr));
    free(cfg);
    sy_log_set_level(proxy.cfg.log_level);
    /* Kept server connections were made under the old settings (addresses, TLS, users). */
    sy_pool_flush(&proxy, -1, "config reloaded");
    sy_info("config reloaded from %s", proxy.cfg.path);
}

/* ---- shutdown ---- */

static void close_if_open(uv_handle_t *h)
{
    if (h->loop && !uv_is_closing(h))
        uv_close(h, NULL);
}

static void finish(void)
{
    sy_admin_stop(&proxy);
    close_if_open((uv_handle_t *)&sig_term);
    close_if_open((uv_handle_t *)&sig_int);
    close_if_open((uv_handle_t *)&sig_hup);
    close_if_open((uv_handle_t *)&health_timer);
    close_if_open((uv_handle_t *)&shutdown_timer);
    close_if_open((uv_handle_t *)&proxy.pause_timer);
    struct runtime none = {0};
    runtime_install(&none);
    sy_auth_query_stop();
    sy_recheck_stop();
    sy_switch_stop(&proxy);
    sy_pool_stop(&proxy);
    sy_shadow_close(&proxy);
    sy_info("stopped");
}

static void close_all_sessions(void)
{
    while (proxy.sessions)
        sy_session_fail(proxy.sessions, "57P01", "switchyard is shutting down");
}

static void on_shutdown_poll(uv_timer_t *t)
{
    if (proxy.nsessions == 0) {
        finish();
        return;
    }
    if (uv_now(proxy.loop) - shutdown_started_ms >= proxy.cfg.shutdown_grace_ms) {
        sy_warn("shutdown_grace ended with %u sessions open; closing them", proxy.nsessions);
        close_all_sessions();
        finish();
    }
}

static void begin_shutdown(int signum)
{
    if (proxy.shutting_down) {
        sy_warn("second stop signal: closing %u sessions now", proxy.nsessions);
        close_all_sessions();
        finish();
        return;
    }
    proxy.shutting_down = 1;
    shutdown_started_ms = uv_now(proxy.loop);
    sy_pool_flush(&proxy, -1, "shutting down");
    sy_proxy_resume(&proxy, "shutting down"); /* held sessions finish their work */
    sy_info("%s: no longer accepting clients; waiting up to %llu ms for %u sessions to end",
            signum == SIGINT ? "SIGINT" : "SIGTERM", (unsigned long long)proxy.cfg.shutdown_grace_ms,
            proxy.nsessions);
    sy_proxy_stop_listening(&proxy);
    uv_timer_start(&shutdown_timer, on_shutdown_poll, 0, SHUTDOWN_POLL_MS);
}

static void on_signal(uv_signal_t *h, int signum)
{
    if (signum == SIGHUP)
        reload();
    else
        begin_shutdown(signum);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"check", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0}};
    const char *config_path = NULL;
    int check_only = 0, c;
    while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_path = optarg; break;
        case 'k': check_only = 1; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("switchyard %s\n", SY_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!config_path || optind != argc) {
        fprintf(stderr, "switchyard: %s\n", config_path ? "unexpected argument" : "no config file: use -c FILE");
        usage(stderr);
        return 2;
    }
    char err[512];
    if (sy_config_load(config_path, &proxy.cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "switchyard: %s\n", err);
        return 1;
    }
    if (check_only) {
        /* What the start reads besides the config: the auth file and the TLS files. */
        struct runtime crt;
        if (runtime_build(&proxy.cfg, &crt) != 0)
            return 1;
        runtime_free(&crt);
        printf("%s: ok\n", config_path);
        return 0;
    }
    sy_log_set_level(proxy.cfg.log_level);
    signal(SIGPIPE, SIG_IGN);
    proxy.loop = uv_default_loop();
    proxy.ops = &sy_pg_ops;
    proxy.active = proxy.cfg.active;
    if (locks_take(&proxy.cfg) != 0)
        return 1;
    if (sy_switch_load_state(&proxy) != 0)
        return 1;
    proxy.started_ms = uv_now(proxy.loop);
    proxy.side[0].healthy = proxy.side[1].healthy = -1;
    struct runtime rt;
    if (sy_proxy_resolve_servers(&proxy, &proxy.cfg, proxy.server_addr) != 0 ||
        runtime_build(&proxy.cfg, &rt) != 0)
        return 1;
    runtime_install(&rt);
    if (pg_crypto_random(proxy.mock_secret, sizeof(proxy.mock_secret)) != 0) {
        sy_error("no random numbers from OpenSSL");
        return 1;
    }
    if (sy_proxy_listen(&proxy) != 0 || sy_admin_start(&proxy) != 0)
        return 1;
    /* Before the switch starts: with no state file it holds logins until its check is done. */
    uv_timer_init(proxy.loop, &proxy.pause_timer);
    proxy.pause_timer.data = &proxy;
    if (sy_auth_query_start(&proxy, pg_auth_query_done) != 0 || sy_switch_start(&proxy) != 0 ||
        sy_pool_start(&proxy) != 0 || sy_shadow_init(&proxy) != 0)
        return 1;
    uv_signal_init(proxy.loop, &sig_term);
    uv_signal_init(proxy.loop, &sig_int);
    uv_signal_init(proxy.loop, &sig_hup);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_hup, on_signal, SIGHUP);
    uv_timer_init(proxy.loop, &health_timer);
    uv_timer_init(proxy.loop, &shutdown_timer);
    uv_timer_start(&health_timer, on_health_timer, 0, HEALTH_INTERVAL_MS);
    sy_info("switchyard %s started: protocol %s, active side %s (%s:%d)", SY_VERSION,
            proxy.ops->name, sy_side_name(proxy.active), proxy.cfg.server[proxy.active].host,
            proxy.cfg.server[proxy.active].port);
    uv_run(proxy.loop, UV_RUN_DEFAULT);
    uv_loop_close(proxy.loop);
    return 0;
}
