#define _GNU_SOURCE
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "harness: %s\n", what);
    exit(1);
}

void h_env_load(struct h_env *env)
{
    memset(env, 0, sizeof(*env));
    const char *path = getenv("SY_TEST_ENV");
    const char *bin = getenv("SY_BIN_DIR");
    if (!path || !bin)
        die("SY_TEST_ENV and SY_BIN_DIR must be set (run through ctest)");
    snprintf(env->bin_dir, sizeof(env->bin_dir), "%s", bin);
    FILE *f = fopen(path, "r");
    if (!f)
        die("cannot open SY_TEST_ENV file; did the pg_servers_start fixture run?");
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = 0;
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = 0;
        const char *v = eq + 1;
        if (!strcmp(line, "BLUE_HOST"))
            snprintf(env->blue_host, sizeof(env->blue_host), "%s", v);
        else if (!strcmp(line, "BLUE_PORT"))
            env->blue_port = atoi(v);
        else if (!strcmp(line, "GREEN_HOST"))
            snprintf(env->green_host, sizeof(env->green_host), "%s", v);
        else if (!strcmp(line, "GREEN_PORT"))
            env->green_port = atoi(v);
        else if (!strcmp(line, "PGUSER"))
            snprintf(env->pguser, sizeof(env->pguser), "%s", v);
        else if (!strcmp(line, "PG_BIN"))
            snprintf(env->pg_bin, sizeof(env->pg_bin), "%s", v);
        else if (!strcmp(line, "CERT_DIR"))
            snprintf(env->cert_dir, sizeof(env->cert_dir), "%s", v);
    }
    fclose(f);
    if (!env->blue_port || !env->green_port)
        die("env file has no BLUE_PORT/GREEN_PORT");
}

int h_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &l) != 0)
        die("cannot find a free port");
    int port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int h_tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Proxies still running when the test process exits (a failed assertion skips their stop) are
 * killed, so a failing test leaves nothing behind. */
static pid_t started[64];
static int nstarted;

static void kill_leftovers(void)
{
    for (int i = 0; i < nstarted; i++)
        if (started[i] > 0 && kill(started[i], 0) == 0 && waitpid(started[i], NULL, WNOHANG) == 0)
            kill(started[i], SIGKILL);
}

static void remember(pid_t pid)
{
    if (nstarted == 0)
        atexit(kill_leftovers);
    if (nstarted < 64)
        started[nstarted++] = pid;
}

int h_proxy_start(struct h_proxy *p, const struct h_env *env, int blue_port, int green_port,
                  const char *extra)
{
    struct h_proxy_opts o = {.switchyard_lines = extra};
    return h_proxy_start_opts(p, env, blue_port, green_port, &o);
}

int h_proxy_start_opts(struct h_proxy *p, const struct h_env *env, int blue_port, int green_port,
                       const struct h_proxy_opts *opts)
{
    const char *extra = opts ? opts->switchyard_lines : NULL;
    const char *blue = opts && opts->blue_lines ? opts->blue_lines : "";
    const char *green = opts && opts->green_lines ? opts->green_lines : "";
    const char *trailing = opts && opts->trailing ? opts->trailing : "";
    memset(p, 0, sizeof(*p));
    snprintf(p->dir, sizeof(p->dir), "/tmp/sy-test-XXXXXX");
    if (!mkdtemp(p->dir))
        return -1;
    p->port = h_free_port();
    snprintf(p->config, sizeof(p->config), "%s/switchyard.ini", p->dir);
    snprintf(p->log, sizeof(p->log), "%s/switchyard.log", p->dir);
    snprintf(p->admin_socket, sizeof(p->admin_socket), "%s/admin.sock", p->dir);
    FILE *f = fopen(p->config, "w");
    if (!f)
        return -1;
    fprintf(f,
            "[switchyard]\nprotocol = postgres\nlisten = 127.0.0.1:%d\nadmin_socket = %s\n"
            "log_level = debug\n%s%s\n[blue]\nhost = 127.0.0.1\nport = %d\n%s\n[green]\n"
            "host = 127.0.0.1\nport = %d\n%s\n%s\n",
            p->port, p->admin_socket,
            extra && strstr(extra, "auth_type") ? "" : "auth_type = trust\n", extra ? extra : "",
            blue_port, blue, green_port, green, trailing);
    fclose(f);
    char bin[600];
    snprintf(bin, sizeof(bin), "%s/switchyard", env->bin_dir);
    p->pid = fork();
    if (p->pid < 0)
        return -1;
    if (p->pid == 0) {
        int fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        execl(bin, "switchyard", "-c", p->config, (char *)NULL);
        _exit(127);
    }
    remember(p->pid);
    long deadline = now_ms() + 10000;
    while (now_ms() < deadline) {
        int fd = h_tcp_connect(p->port);
        if (fd >= 0) {
            close(fd);
            struct stat st;
            if (stat(p->admin_socket, &st) == 0)
                return 0;
        }
        if (!h_proxy_alive(p))
            break;
        usleep(20000);
    }
    fprintf(stderr, "harness: switchyard did not start; see %s\n", p->log);
    return -1;
}

static int decode_status(int status)
{
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int h_proxy_alive(struct h_proxy *p)
{
    int status;
    if (p->exited || p->pid <= 0)
        return 0;
    pid_t r = waitpid(p->pid, &status, WNOHANG);
    if (r == p->pid) {
        p->exited = 1;
        p->exit_status = decode_status(status);
        return 0;
    }
    return r == 0;
}

int h_proxy_stop(struct h_proxy *p, int timeout_ms)
{
    if (p->exited)
        return p->exit_status;
    if (p->pid <= 0)
        return -1;
    kill(p->pid, SIGTERM);
    long deadline = now_ms() + timeout_ms;
    int status;
    while (now_ms() < deadline) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid) {
            p->exited = 1;
            p->exit_status = decode_status(status);
            return p->exit_status;
        }
        usleep(10000);
    }
    kill(p->pid, SIGKILL);
    waitpid(p->pid, &status, 0);
    p->exited = 1;
    p->exit_status = -1;
    return -1;
}

char *h_ctl(const struct h_proxy *p, const char *cmd)
{
    char line[1024];
    snprintf(line, sizeof(line), "%s/switchyardctl -s %s --json %s",
             getenv("SY_BIN_DIR"), p->admin_socket, cmd);
    FILE *f = popen(line, "r");
    if (!f)
        return NULL;
    size_t cap = 1 << 20, len = 0;
    char *out = malloc(cap);
    size_t n;
    while (out && (n = fread(out + len, 1, cap - len - 1, f)) > 0)
        len += n;
    pclose(f);
    if (out)
        out[len] = 0;
    return out;
}

long h_json_int(const char *json, const char *key)
{
    char pat[128];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *at = json ? strstr(json, pat) : NULL;
    if (!at)
        return -1;
    return strtol(at + strlen(pat), NULL, 10);
}

int h_log_contains(const struct h_proxy *p, const char *needle)
{
    FILE *f = fopen(p->log, "r");
    if (!f)
        return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

void h_conninfo(char *out, size_t cap, int port, const char *user, const char *extra)
{
    snprintf(out, cap, "host=127.0.0.1 port=%d user=%s dbname=app sslmode=disable %s", port, user,
             extra ? extra : "");
}

int h_send_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

ssize_t h_read_until_close(int fd, uint8_t *buf, size_t cap, int timeout_ms, int *closed)
{
    size_t len = 0;
    long deadline = now_ms() + timeout_ms;
    *closed = 0;
    while (len < cap) {
        long left = deadline - now_ms();
        if (left <= 0)
            break;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)left) <= 0)
            break;
        ssize_t n = recv(fd, buf + len, cap - len, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET)) {
            *closed = 1;
            break;
        }
        if (n < 0)
            break;
        len += (size_t)n;
    }
    return (ssize_t)len;
}

void h_find_sqlstate(const uint8_t *buf, size_t len, char *sqlstate, size_t cap)
{
    sqlstate[0] = 0;
    size_t pos = 0;
    while (pos + 5 <= len) {
        uint32_t l = ((uint32_t)buf[pos + 1] << 24) | ((uint32_t)buf[pos + 2] << 16) |
                     ((uint32_t)buf[pos + 3] << 8) | buf[pos + 4];
        if (buf[pos] == 'E' && pos + 1 + l <= len) {
            size_t f = pos + 5;
            while (f < pos + 1 + l && buf[f]) {
                char code = (char)buf[f++];
                const char *v = (const char *)buf + f;
                size_t vl = strnlen(v, pos + 1 + l - f);
                if (code == 'C') {
                    snprintf(sqlstate, cap, "%.*s", (int)vl, v);
                    return;
                }
                f += vl + 1;
            }
        }
        if (l < 4)
            return;
        pos += 1 + l;
    }
}

size_t h_startup(uint8_t *out, size_t cap, const char *user, const char *database)
{
    size_t p = 8;
    const char *kv[] = {"user", user, "database", database};
    for (int i = 0; i < 4; i++) {
        size_t l = strlen(kv[i]) + 1;
        if (p + l + 1 > cap)
            return 0;
        memcpy(out + p, kv[i], l);
        p += l;
    }
    out[p++] = 0;
    uint32_t v = 196608;
    out[0] = (uint8_t)(p >> 24); out[1] = (uint8_t)(p >> 16); out[2] = (uint8_t)(p >> 8); out[3] = (uint8_t)p;
    out[4] = (uint8_t)(v >> 24); out[5] = (uint8_t)(v >> 16); out[6] = (uint8_t)(v >> 8); out[7] = (uint8_t)v;
    return p;
}

int h_read_until_ready(int fd, int timeout_ms)
{
    uint8_t buf[65536];
    size_t len = 0;
    long deadline = now_ms() + timeout_ms;
    while (now_ms() < deadline) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t n = recv(fd, buf + len, sizeof(buf) - len, 0);
        if (n <= 0)
            return -1;
        len += (size_t)n;
        size_t pos = 0;
        while (pos + 5 <= len) {
            uint32_t l = ((uint32_t)buf[pos + 1] << 24) | ((uint32_t)buf[pos + 2] << 16) |
                         ((uint32_t)buf[pos + 3] << 8) | buf[pos + 4];
            if (pos + 1 + l > len)
                break;
            if (buf[pos] == 'Z')
                return 0;
            pos += 1 + l;
        }
        memmove(buf, buf + pos, len - pos);
        len -= pos;
    }
    return -1;
}
