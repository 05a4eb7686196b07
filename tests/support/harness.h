/*
 * Integration-test harness: reads the fixture's env file (blue and green servers started by
 * tests/support/pg_cluster.sh), starts and stops switchyard processes with generated configs,
 * and gives raw-socket helpers for sending bad input.
 */
#ifndef SY_TEST_HARNESS_H
#define SY_TEST_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct h_env {
    char blue_host[64];
    int blue_port;
    char green_host[64];
    int green_port;
    char pguser[64];
    char pg_bin[256];
    char bin_dir[512]; /* where switchyard and switchyardctl are */
    char cert_dir[512]; /* the fixture's test certificates (CERT_DIR; "" if the env has none) */
};

struct h_proxy {
    pid_t pid;
    int port;
    char dir[256];        /* temp dir with config, log and admin socket */
    char config[300];
    char log[300];
    char admin_socket[300];
    int exited;      /* the process was reaped */
    int exit_status; /* its exit code, or 128 + signal */
};

/* Loads SY_TEST_ENV and SY_BIN_DIR; exits the test with a clear message when they are missing. */
void h_env_load(struct h_env *env);

/* Returns a loopback TCP port that is free right now. */
int h_free_port(void);

/* Starts switchyard in front of blue_port/green_port with extra lines appended to [switchyard].
 * Waits until it accepts connections. Returns 0 or -1. */
int h_proxy_start(struct h_proxy *p, const struct h_env *env, int blue_port, int green_port,
                  const char *extra_switchyard_lines);
/* What h_proxy_start_opts writes into the config besides listen, admin socket and servers.
 * Each field is a block of lines (NULL for none). */
struct h_proxy_opts {
    const char *switchyard_lines; /* appended to [switchyard]; "auth_type = trust" is added
                                     unless these set auth_type */
    const char *blue_lines;       /* appended to [blue] (server_tls = ..., ...) */
    const char *green_lines;      /* appended to [green] */
    const char *trailing;         /* after [green]: further sections, such as [users] */
};

/* h_proxy_start with every part of the config open to the caller. Returns 0 or -1. */
int h_proxy_start_opts(struct h_proxy *p, const struct h_env *env, int blue_port, int green_port,
                       const struct h_proxy_opts *opts);
/* Sends SIGTERM and waits (up to timeout_ms) for exit; returns the exit status or -1. */
int h_proxy_stop(struct h_proxy *p, int timeout_ms);
/* Whether the process is still running. */
int h_proxy_alive(struct h_proxy *p);
/* Runs switchyardctl --json CMD; returns malloc'd stdout (caller frees) or NULL. */
char *h_ctl(const struct h_proxy *p, const char *cmd);
/* Extracts an integer field "key":N from a flat-ish JSON text (first occurrence); -1 if absent. */
long h_json_int(const char *json, const char *key);
/* Whether the proxy's log contains a substring. */
int h_log_contains(const struct h_proxy *p, const char *needle);

/* libpq connection string for the proxy or a direct server. */
void h_conninfo(char *out, size_t cap, int port, const char *user, const char *extra);

/* ---- raw sockets ---- */
int h_tcp_connect(int port);
int h_send_all(int fd, const void *buf, size_t len);
/* Reads until the peer closes or timeout_ms passes; returns bytes read (up to cap). */
ssize_t h_read_until_close(int fd, uint8_t *buf, size_t cap, int timeout_ms, int *closed);
/* Finds an ErrorResponse in buf and copies its SQLSTATE (empty when none). */
void h_find_sqlstate(const uint8_t *buf, size_t len, char *sqlstate, size_t cap);
/* Builds a StartupMessage for user/database into out; returns its length. */
size_t h_startup(uint8_t *out, size_t cap, const char *user, const char *database);
/* Reads messages until ReadyForQuery; returns 0 when it arrived. */
int h_read_until_ready(int fd, int timeout_ms);

#endif
