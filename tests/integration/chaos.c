/*
 * Chaos clients for issue 11 ("one client must never take the proxy down"): many concurrent
 * clients against a real server through Switchyard, each picking actions at random, well
 * behaved ones whose answers are checked and abusive ones that give up on a session in every
 * way a client can while a result is still on its way.
 *
 *   chaos [--seed N] [--clients N] [--seconds N] [--host H] [--port P] [--user U]
 *         [--dbname D] [--copy-table T]
 *
 * Well-behaved (checked row by row, every message in order):
 *   query           libpq: SELECT n, repeat(chr(97 + n % 26), w), 'tag' over generate_series
 *   slow_read       raw socket with a small receive buffer: a result of ~0.5-3 MB read a few KB
 *                   at a time with sleeps in between
 *   half_close      raw: a Query, then shutdown(SHUT_WR) at once; the whole result must still
 *                   arrive, then the end of file
 *   pipeline        raw: 5-60 Queries (one of them may divide by zero) in one write; every
 *                   answer in order, the error for the bad one and the rest unaffected
 *   cancel          libpq: pg_sleep(2) cancelled with PQcancel (resent until the answer comes);
 *                   57014 or, if every cancel came too late, the finished sleep; the session
 *                   must then answer a query. At least one cancel must land in a run.
 *   copy_out        libpq: COPY (...) TO STDOUT, every line checked
 *   copy_in_fail    libpq: COPY T(id) FROM STDIN, some rows, then PQputCopyEnd with an error:
 *                   57014 and a usable session (nothing is written)
 * Abusive (only the login is checked; the proxy must survive them):
 *   abandon_terminate / abandon_close / abandon_rst / abandon_garbage / abandon_halfclose
 *                   raw: a 20 MB result, a little of it read, then Terminate, close(), an RST
 *                   (SO_LINGER 0), garbage bytes, or shutdown(SHUT_WR) and close
 *   abandon_libpq   PQsendQuery of a 20 MB result, then PQfinish (what applications do)
 *   copy_out_abandon  raw: COPY ... TO STDOUT of 20 MB, abandoned one of the ways above
 *   copy_in_abandon   raw: COPY T(id) FROM STDIN, some CopyData, then abandoned likewise
 *   login_abandon   raw: half a StartupMessage, or a whole one and close before the answer
 *
 * Each client thread has its own random stream derived from the seed, so a replay with the same
 * --seed and --clients runs the same sequence of actions on each thread (the timing differs).
 * The last line is "chaos: N passed, M failed"; the exit status is 1 when a check failed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <libpq-fe.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BIG_ROWS 20000 /* x 1000 bytes: 20 MB, far more than the kernel buffers hold */
#define IO_TIMEOUT_MS 30000 /* a pause (5 s) or a cutover's drain may hold any step */

enum action {
    A_QUERY,
    A_SLOW_READ,
    A_HALF_CLOSE,
    A_PIPELINE,
    A_CANCEL,
    A_COPY_OUT,
    A_COPY_IN_FAIL,
    A_ABANDON_TERMINATE,
    A_ABANDON_CLOSE,
    A_ABANDON_RST,
    A_ABANDON_GARBAGE,
    A_ABANDON_HALFCLOSE,
    A_ABANDON_LIBPQ,
    A_COPY_OUT_ABANDON,
    A_COPY_IN_ABANDON,
    A_LOGIN_ABANDON,
    A_COUNT
};

static const struct {
    const char *name;
    int weight;
} actions[A_COUNT] = {
    [A_QUERY] = {"query", 12},
    [A_SLOW_READ] = {"slow_read", 5},
    [A_HALF_CLOSE] = {"half_close", 6},
    [A_PIPELINE] = {"pipeline", 8},
    [A_CANCEL] = {"cancel", 4},
    [A_COPY_OUT] = {"copy_out", 4},
    [A_COPY_IN_FAIL] = {"copy_in_fail", 4},
    [A_ABANDON_TERMINATE] = {"abandon_terminate", 6},
    [A_ABANDON_CLOSE] = {"abandon_close", 5},
    [A_ABANDON_RST] = {"abandon_rst", 5},
    [A_ABANDON_GARBAGE] = {"abandon_garbage", 5},
    [A_ABANDON_HALFCLOSE] = {"abandon_halfclose", 4},
    [A_ABANDON_LIBPQ] = {"abandon_libpq", 4},
    [A_COPY_OUT_ABANDON] = {"copy_out_abandon", 5},
    [A_COPY_IN_ABANDON] = {"copy_in_abandon", 5},
    [A_LOGIN_ABANDON] = {"login_abandon", 3},
};

static struct {
    const char *host, *port, *user, *dbname, *copy_table;
    uint64_t seed;
    int clients, seconds;
    char conninfo[1024];
    struct sockaddr_storage addr;
    socklen_t addrlen;
} opt = {.host = "127.0.0.1", .port = "6432", .user = "postgres", .dbname = "postgres",
         .copy_table = "acks", .clients = 40, .seconds = 40};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long runs[A_COUNT], fails[A_COUNT];
static long cancels_landed, cancels_late;
static long printed_fails;
static double max_ms[A_COUNT];
static struct {
    double ms, at;
    int client;
    long seq;
    enum action a;
} slowest;
static volatile int stop_now;
static struct timespec t_start;

static double elapsed_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t_start.tv_sec) + (double)(t.tv_nsec - t_start.tv_nsec) / 1e9;
}

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- per-thread state: its random stream and the current action's failure text ---- */

struct client {
    int id;
    long seq; /* actions run so far on this thread */
    uint64_t rng;
    char tag[48]; /* unique per action: reaches the server and must come back */
    char err[512];
};

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A whole number in [lo, hi]. */
static int rnd(struct client *c, int lo, int hi)
{
    return lo + (int)(splitmix(&c->rng) % (uint64_t)(hi - lo + 1));
}

static int fail(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct client *c, const char *fmt, ...)
{
    if (c->err[0])
        return -1; /* keep the first failure */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
    return -1;
}

/* Puts what was being done in front of the failure already recorded. */
static int context(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int context(struct client *c, const char *fmt, ...)
{
    char pre[160], e[sizeof(c->err)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof(pre), fmt, ap);
    va_end(ap);
    snprintf(e, sizeof(e), "%.150s: %.350s", pre, c->err[0] ? c->err : "failed");
    memcpy(c->err, e, sizeof(e));
    return -1;
}

/* ---- raw PostgreSQL v3 protocol ---- */

struct raw {
    int fd;
    uint8_t *buf;
    size_t cap, start, end;
    size_t chunk;  /* most bytes per recv (slow readers) */
    int pause_us;  /* sleep after each recv (slow readers)... */
    long sleep_budget_us; /* ...until this much sleep was spent */
    int64_t deadline;
};

static void put32(uint8_t *p, uint32_t v)
{
    v = htonl(v);
    memcpy(p, &v, 4);
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return ntohl(v);
}

static uint16_t get16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return ntohs(v);
}

static int send_all(int fd, const void *b, size_t n)
{
    const uint8_t *p = b;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            if (poll(&pfd, 1, IO_TIMEOUT_MS) != 1)
                return -1;
            continue;
        }
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Connects (rcvbuf > 0: a small receive buffer, so what the client leaves unread piles up in
 * the proxy's write queue rather than in the kernel). */
static int raw_connect(struct client *c, struct raw *r, int rcvbuf)
{
    memset(r, 0, sizeof(*r));
    r->fd = socket(opt.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (r->fd < 0)
        return fail(c, "socket: %s", strerror(errno));
    if (rcvbuf > 0)
        setsockopt(r->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    if (connect(r->fd, (struct sockaddr *)&opt.addr, opt.addrlen) != 0) {
        fail(c, "connect: %s", strerror(errno));
        close(r->fd);
        r->fd = -1;
        return -1;
    }
    r->cap = 65536;
    r->buf = malloc(r->cap);
    r->chunk = r->cap;
    r->deadline = now_ms() + IO_TIMEOUT_MS;
    return 0;
}

static void raw_close(struct raw *r)
{
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    free(r->buf);
    r->buf = NULL;
}

static void raw_rst(struct raw *r)
{
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    setsockopt(r->fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    raw_close(r);
}

/* Reads more bytes: 1 some arrived, 0 end of file, -1 error or the deadline passed. */
static int raw_fill(struct client *c, struct raw *r)
{
    if (r->start > 0 && r->start == r->end)
        r->start = r->end = 0;
    if (r->end == r->cap) {
        if (r->start > 0) {
            memmove(r->buf, r->buf + r->start, r->end - r->start);
            r->end -= r->start;
            r->start = 0;
        } else {
            r->cap *= 2;
            r->buf = realloc(r->buf, r->cap);
        }
    }
    for (;;) {
        int64_t left = r->deadline - now_ms();
        if (left <= 0)
            return fail(c, "no answer within %d ms", IO_TIMEOUT_MS);
        struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
        int pr = poll(&pfd, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr == 0)
            continue;
        size_t want = r->cap - r->end;
        if (want > r->chunk)
            want = r->chunk;
        ssize_t n = recv(r->fd, r->buf + r->end, want, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return fail(c, "recv: %s", strerror(errno));
        if (n == 0)
            return 0;
        r->end += (size_t)n;
        if (r->pause_us > 0 && r->sleep_budget_us > 0) {
            usleep((useconds_t)r->pause_us);
            r->sleep_budget_us -= r->pause_us;
        }
        return 1;
    }
}

/* The next message: 1 (type, body, len set), 0 end of file between messages, -1 otherwise. */
static int raw_msg(struct client *c, struct raw *r, char *type, const uint8_t **body,
                   uint32_t *len)
{
    for (;;) {
        size_t have = r->end - r->start;
        if (have >= 5) {
            uint32_t l = get32(r->buf + r->start + 1);
            if (l < 4 || l > (64u << 20))
                return fail(c, "message '%c' with a bad length %u", r->buf[r->start], l);
            if (have >= 1 + (size_t)l) {
                *type = (char)r->buf[r->start];
                *body = r->buf + r->start + 5;
                *len = l - 4;
                r->start += 1 + l;
                return 1;
            }
        }
        int f = raw_fill(c, r);
        if (f < 0)
            return -1;
        if (f == 0) {
            if (r->end > r->start)
                return fail(c, "end of file inside a message (%zu bytes of it)", r->end - r->start);
            return 0;
        }
    }
}

/* Copies an ErrorResponse's field (C: SQLSTATE, M: message) into out. */
static void err_field(const uint8_t *b, uint32_t len, char f, char *out, size_t cap)
{
    out[0] = 0;
    uint32_t i = 0;
    while (i < len && b[i]) {
        char code = (char)b[i++];
        const uint8_t *s = b + i;
        size_t sl = strnlen((const char *)s, len - i);
        if (code == f) {
            snprintf(out, cap, "%.*s", (int)sl, (const char *)s);
            return;
        }
        i += (uint32_t)sl + 1;
    }
}

/* Reads a message of the given type, failing on anything else (an ErrorResponse's text is
 * quoted). Skips NoticeResponse and ParameterStatus, which may come at any time. */
static int expect(struct client *c, struct raw *r, char want, const uint8_t **body, uint32_t *len,
                  const char *what)
{
    char t;
    for (;;) {
        int m = raw_msg(c, r, &t, body, len);
        if (m < 0)
            return context(c, "%s", what);
        if (m == 0)
            return fail(c, "%s: end of file while waiting for '%c'", what, want);
        if (t == 'N' || t == 'S')
            continue;
        if (t == want)
            return 0;
        if (t == 'E') {
            char st[8], msg[200];
            err_field(*body, *len, 'C', st, sizeof(st));
            err_field(*body, *len, 'M', msg, sizeof(msg));
            return fail(c, "%s: error %s (%s) while waiting for '%c'", what, st, msg, want);
        }
        return fail(c, "%s: message '%c' while waiting for '%c'", what, t, want);
    }
}

static int send_query(struct raw *r, const char *sql)
{
    size_t l = strlen(sql) + 1;
    uint8_t *m = malloc(5 + l);
    m[0] = 'Q';
    put32(m + 1, (uint32_t)(4 + l));
    memcpy(m + 5, sql, l);
    int rc = send_all(r->fd, m, 5 + l);
    free(m);
    return rc;
}

static const uint8_t terminate_msg[5] = {'X', 0, 0, 0, 4};

static size_t startup_packet(uint8_t *out)
{
    size_t n = 8;
    const char *kv[] = {"user", opt.user, "database", opt.dbname, "application_name", "chaos"};
    for (size_t i = 0; i < 6; i++) {
        size_t l = strlen(kv[i]) + 1;
        memcpy(out + n, kv[i], l);
        n += l;
    }
    out[n++] = 0;
    put32(out, (uint32_t)n);
    put32(out + 4, 196608); /* 3.0 */
    return n;
}

/* Connects and logs in (the test's switchyard trusts its user): up to ReadyForQuery. */
static int raw_login(struct client *c, struct raw *r, int rcvbuf)
{
    if (raw_connect(c, r, rcvbuf) != 0)
        return -1;
    uint8_t pkt[512];
    size_t n = startup_packet(pkt);
    if (send_all(r->fd, pkt, n) != 0)
        return fail(c, "login: sending the startup packet: %s", strerror(errno));
    const uint8_t *b;
    uint32_t l;
    if (expect(c, r, 'R', &b, &l, "login") != 0)
        return -1;
    if (l < 4 || get32(b) != 0)
        return fail(c, "login: authentication request %u; the test expects trust",
                    l >= 4 ? get32(b) : 99);
    char t;
    for (;;) {
        int m = raw_msg(c, r, &t, &b, &l);
        if (m <= 0)
            return m == 0 ? fail(c, "login: end of file before ReadyForQuery") : context(c, "login");
        if (t == 'Z')
            return 0;
        if (t == 'E') {
            char st[8], msg[200];
            err_field(b, l, 'C', st, sizeof(st));
            err_field(b, l, 'M', msg, sizeof(msg));
            return fail(c, "login: error %s (%s)", st, msg);
        }
        if (t != 'S' && t != 'K' && t != 'N')
            return fail(c, "login: unexpected message '%c'", t);
    }
}

/* ---- the checked result: SELECT n, repeat(chr(97 + n % 26), w), 'tag' ---- */

static void result_sql(char *out, size_t cap, const char *tag, int first, int last, int width)
{
    snprintf(out, cap,
             "SELECT n, repeat(chr(97 + n %% 26), %d), '%s' FROM generate_series(%d, %d) n", width,
             tag, first, last);
}

static int check_row(struct client *c, int expect_n, const char *v0, size_t l0, const char *v1,
                     size_t l1, int width, const char *v2, size_t l2, const char *tag)
{
    char num[24];
    snprintf(num, sizeof(num), "%d", expect_n);
    if (l0 != strlen(num) || memcmp(v0, num, l0) != 0)
        return fail(c, "row %d: first column '%.*s'", expect_n, (int)(l0 > 20 ? 20 : l0), v0);
    if (l1 != (size_t)width)
        return fail(c, "row %d: second column %zu bytes, not %d", expect_n, l1, width);
    char ch = (char)(97 + expect_n % 26);
    for (size_t i = 0; i < l1; i++)
        if (v1[i] != ch)
            return fail(c, "row %d: byte %zu of the second column is 0x%02x, not '%c'", expect_n,
                        i, (unsigned char)v1[i], ch);
    if (l2 != strlen(tag) || memcmp(v2, tag, l2) != 0)
        return fail(c, "row %d: tag '%.*s', not '%s' (another session's answer?)", expect_n,
                    (int)(l2 > 40 ? 40 : l2), v2, tag);
    return 0;
}

/* Reads the whole answer to result_sql: RowDescription, the rows, CommandComplete and
 * ReadyForQuery. */
static int raw_check_result(struct client *c, struct raw *r, const char *tag, int first, int last,
                            int width)
{
    const uint8_t *b;
    uint32_t l;
    if (expect(c, r, 'T', &b, &l, "result") != 0)
        return -1;
    if (l < 2 || get16(b) != 3)
        return fail(c, "RowDescription with %d columns, not 3", l >= 2 ? get16(b) : -1);
    for (int n = first; n <= last; n++) {
        if (expect(c, r, 'D', &b, &l, "row") != 0)
            return context(c, "row %d of %d..%d", n, first, last);
        const char *v[3];
        size_t vl[3];
        uint32_t off = 2;
        if (l < 2 || get16(b) != 3)
            return fail(c, "row %d: DataRow with %d columns", n, l >= 2 ? get16(b) : -1);
        for (int i = 0; i < 3; i++) {
            if (off + 4 > l)
                return fail(c, "row %d: DataRow cut short", n);
            uint32_t cl = get32(b + off);
            off += 4;
            if (cl == 0xffffffffu || off + cl > l)
                return fail(c, "row %d: column %d has a bad length", n, i);
            v[i] = (const char *)b + off;
            vl[i] = cl;
            off += cl;
        }
        if (check_row(c, n, v[0], vl[0], v[1], vl[1], width, v[2], vl[2], tag) != 0)
            return -1;
    }
    if (expect(c, r, 'C', &b, &l, "CommandComplete") != 0)
        return -1;
    char want[32];
    snprintf(want, sizeof(want), "SELECT %d", last - first + 1);
    if (strnlen((const char *)b, l) != strlen(want) || memcmp(b, want, strlen(want)) != 0)
        return fail(c, "CommandComplete '%.*s', not '%s'", (int)strnlen((const char *)b, l), b,
                    want);
    return expect(c, r, 'Z', &b, &l, "ReadyForQuery");
}

/* Reads roughly n bytes of whatever comes, so a result is known to be flowing. */
static int read_some(struct client *c, struct raw *r, size_t n)
{
    size_t got = 0;
    while (got < n) {
        size_t before = r->end - r->start;
        int f = raw_fill(c, r);
        if (f <= 0)
            return f == 0 ? fail(c, "end of file with the result still flowing") : -1;
        got += (r->end - r->start) - before;
        r->start = r->end; /* drop it */
    }
    return 0;
}

/* One of the ways to give up on a session that has bytes on the way. */
static void give_up(struct client *c, struct raw *r, int how)
{
    static const uint8_t garbage_msg[] = {'z', 0, 0, 0, 4};
    uint8_t junk[64];
    switch (how) {
    case 0: /* Terminate, unread bytes left behind */
        send_all(r->fd, terminate_msg, sizeof(terminate_msg));
        usleep((useconds_t)rnd(c, 0, 20000));
        raw_close(r);
        break;
    case 1: /* close() with unread bytes: the kernel sends an RST */
        raw_close(r);
        break;
    case 2: /* RST */
        raw_rst(r);
        break;
    case 3: /* garbage: an unknown message type, or random bytes with any length */
        if (rnd(c, 0, 1)) {
            send_all(r->fd, garbage_msg, sizeof(garbage_msg));
        } else {
            for (size_t i = 0; i < sizeof(junk); i++)
                junk[i] = (uint8_t)rnd(c, 0, 255);
            send_all(r->fd, junk, (size_t)rnd(c, 1, (int)sizeof(junk)));
        }
        usleep((useconds_t)rnd(c, 0, 50000));
        raw_close(r);
        break;
    default: /* half-close, then close later */
        shutdown(r->fd, SHUT_WR);
        usleep((useconds_t)rnd(c, 0, 50000));
        raw_close(r);
        break;
    }
}

/* ---- the actions ---- */

static int act_query(struct client *c)
{
    PGconn *pg = PQconnectdb(opt.conninfo);
    int rc = 0;
    if (PQstatus(pg) != CONNECTION_OK) {
        rc = fail(c, "connect: %s", PQerrorMessage(pg));
        goto out;
    }
    int queries = rnd(c, 1, 5);
    for (int q = 0; q < queries && rc == 0; q++) {
        int first = rnd(c, 1, 1000), last = first + rnd(c, 0, 2000), width = rnd(c, 0, 300);
        char sql[256];
        result_sql(sql, sizeof(sql), c->tag, first, last, width);
        PGresult *res = PQexec(pg, sql);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            rc = fail(c, "query %d: %s %s", q, PQresStatus(PQresultStatus(res)),
                      PQerrorMessage(pg));
        } else if (PQntuples(res) != last - first + 1 || PQnfields(res) != 3) {
            rc = fail(c, "query %d: %d rows of %d columns, not %d of 3", q, PQntuples(res),
                      PQnfields(res), last - first + 1);
        } else {
            for (int i = 0; i < PQntuples(res) && rc == 0; i++)
                rc = check_row(c, first + i, PQgetvalue(res, i, 0),
                               (size_t)PQgetlength(res, i, 0), PQgetvalue(res, i, 1),
                               (size_t)PQgetlength(res, i, 1), width, PQgetvalue(res, i, 2),
                               (size_t)PQgetlength(res, i, 2), c->tag);
        }
        PQclear(res);
    }
out:
    PQfinish(pg);
    return rc;
}

static int act_slow_read(struct client *c)
{
    struct raw r;
    int rc = raw_login(c, &r, rnd(c, 2048, 16384));
    if (rc == 0) {
        int rows = rnd(c, 500, 3000), width = 1000;
        char sql[256];
        result_sql(sql, sizeof(sql), c->tag, 1, rows, width);
        r.chunk = (size_t)rnd(c, 1024, 32768);
        r.pause_us = rnd(c, 1000, 20000);
        r.sleep_budget_us = 2000000; /* two seconds of sleeping at most, then read on */
        if (send_query(&r, sql) != 0)
            rc = fail(c, "send: %s", strerror(errno));
        else
            rc = raw_check_result(c, &r, c->tag, 1, rows, width);
        if (rc == 0)
            send_all(r.fd, terminate_msg, sizeof(terminate_msg));
    }
    raw_close(&r);
    return rc;
}

static int act_half_close(struct client *c)
{
    struct raw r;
    int rc = raw_login(c, &r, rnd(c, 0, 1) ? rnd(c, 2048, 16384) : 0);
    if (rc == 0) {
        int rows = rnd(c, 1, 6000), width = rnd(c, 0, 1000);
        char sql[256];
        result_sql(sql, sizeof(sql), c->tag, 1, rows, width);
        if (send_query(&r, sql) != 0)
            rc = fail(c, "send: %s", strerror(errno));
        else if (shutdown(r.fd, SHUT_WR) != 0)
            rc = fail(c, "shutdown: %s", strerror(errno));
        else if (raw_check_result(c, &r, c->tag, 1, rows, width) != 0)
            rc = context(c, "after a half-close");
        else {
            char t;
            const uint8_t *b;
            uint32_t l;
            int m = raw_msg(c, &r, &t, &b, &l);
            if (m > 0)
                rc = fail(c, "after the result of a half-closed session: message '%c', not the "
                             "end of file", t);
            else if (m < 0)
                rc = context(c, "after the result of a half-closed session");
        }
    }
    raw_close(&r);
    return rc;
}

static int act_pipeline(struct client *c)
{
    struct raw r;
    int rc = raw_login(c, &r, rnd(c, 0, 2) == 0 ? rnd(c, 2048, 16384) : 0);
    if (rc != 0) {
        raw_close(&r);
        return rc;
    }
    int nq = rnd(c, 5, 60);
    int bad = rnd(c, 0, 1) ? rnd(c, 0, nq - 1) : -1; /* one Query that fails, or none */
    int first[60], last[60], width[60];
    char tags[60][64];
    size_t cap = 1024, len = 0;
    uint8_t *burst = malloc(cap);
    for (int i = 0; i < nq; i++) {
        char sql[256];
        first[i] = rnd(c, 1, 100);
        last[i] = first[i] + rnd(c, 0, 200);
        width[i] = rnd(c, 0, 200);
        snprintf(tags[i], sizeof(tags[i]), "%s.%d", c->tag, i);
        if (i == bad)
            snprintf(sql, sizeof(sql), "SELECT 1 / 0, '%s'", tags[i]);
        else
            result_sql(sql, sizeof(sql), tags[i], first[i], last[i], width[i]);
        size_t l = strlen(sql) + 1;
        if (len + 5 + l > cap) {
            cap = (len + 5 + l) * 2;
            burst = realloc(burst, cap);
        }
        burst[len] = 'Q';
        put32(burst + len + 1, (uint32_t)(4 + l));
        memcpy(burst + len + 5, sql, l);
        len += 5 + l;
    }
    if (send_all(r.fd, burst, len) != 0)
        rc = fail(c, "send: %s", strerror(errno));
    free(burst);
    for (int i = 0; i < nq && rc == 0; i++) {
        if (i == bad) {
            const uint8_t *b;
            uint32_t l;
            char st[8];
            if (expect(c, &r, 'E', &b, &l, "the division by zero") != 0) {
                rc = context(c, "pipelined query %d of %d", i, nq);
                break;
            }
            err_field(b, l, 'C', st, sizeof(st));
            if (strcmp(st, "22012") != 0)
                rc = fail(c, "query %d of %d: SQLSTATE %s, not 22012", i, nq, st);
            else if (expect(c, &r, 'Z', &b, &l, "ReadyForQuery after the error") != 0)
                rc = -1;
        } else if (raw_check_result(c, &r, tags[i], first[i], last[i], width[i]) != 0) {
            rc = context(c, "pipelined query %d of %d", i, nq);
        }
    }
    if (rc == 0)
        send_all(r.fd, terminate_msg, sizeof(terminate_msg));
    raw_close(&r);
    return rc;
}

/* Waits until the connection has a whole result or ms pass: 1 ready, 0 not yet, -1 error. */
static int pq_wait(PGconn *pg, int ms)
{
    int64_t until = now_ms() + ms;
    for (;;) {
        if (!PQconsumeInput(pg))
            return -1;
        if (!PQisBusy(pg))
            return 1;
        int64_t left = until - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd pfd = {.fd = PQsocket(pg), .events = POLLIN};
        poll(&pfd, 1, (int)left);
    }
}

static int act_cancel(struct client *c)
{
    PGconn *pg = PQconnectdb(opt.conninfo);
    int rc = 0;
    if (PQstatus(pg) != CONNECTION_OK) {
        rc = fail(c, "connect: %s", PQerrorMessage(pg));
        goto out;
    }
    if (!PQsendQuery(pg, "SELECT pg_sleep(2)")) {
        rc = fail(c, "send: %s", PQerrorMessage(pg));
        goto out;
    }
    usleep((useconds_t)rnd(c, 10000, 300000));
    PGcancel *cn = PQgetCancel(pg);
    int64_t until = now_ms() + IO_TIMEOUT_MS;
    int ready = 0;
    while (!ready && now_ms() < until) {
        char eb[256];
        if (!PQcancel(cn, eb, sizeof(eb))) {
            rc = fail(c, "PQcancel: %s", eb);
            break;
        }
        ready = pq_wait(pg, 300);
        if (ready < 0)
            rc = fail(c, "waiting for the cancelled query: %s", PQerrorMessage(pg));
        if (ready != 0)
            break;
    }
    PQfreeCancel(cn);
    if (rc != 0)
        goto out;
    if (!ready) {
        rc = fail(c, "no answer to the cancelled query within %d ms", IO_TIMEOUT_MS);
        goto out;
    }
    PGresult *res = PQgetResult(pg);
    const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    int landed = 0;
    if (PQresultStatus(res) == PGRES_FATAL_ERROR && st && strcmp(st, "57014") == 0)
        landed = 1;
    else if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        landed = 0; /* every cancel came after the sleep ended (a pause may hold them) */
    else
        rc = fail(c, "cancelled query: %s SQLSTATE %s %s", PQresStatus(PQresultStatus(res)),
                  st ? st : "-", PQerrorMessage(pg));
    PQclear(res);
    while ((res = PQgetResult(pg)) != NULL)
        PQclear(res);
    if (rc == 0) {
        pthread_mutex_lock(&lock);
        if (landed)
            cancels_landed++;
        else
            cancels_late++;
        pthread_mutex_unlock(&lock);
        char sql[160];
        snprintf(sql, sizeof(sql), "SELECT 42, '%s'", c->tag);
        res = PQexec(pg, sql);
        if (PQresultStatus(res) != PGRES_TUPLES_OK || strcmp(PQgetvalue(res, 0, 0), "42") != 0 ||
            strcmp(PQgetvalue(res, 0, 1), c->tag) != 0)
            rc = fail(c, "the query after the cancel: %s %s", PQresStatus(PQresultStatus(res)),
                      PQerrorMessage(pg));
        PQclear(res);
    }
out:
    PQfinish(pg);
    return rc;
}

static int act_copy_out(struct client *c)
{
    PGconn *pg = PQconnectdb(opt.conninfo);
    int rc = 0;
    if (PQstatus(pg) != CONNECTION_OK) {
        rc = fail(c, "connect: %s", PQerrorMessage(pg));
        goto out;
    }
    int rows = rnd(c, 1, 5000), width = rnd(c, 0, 500);
    char sql[300], inner[256];
    result_sql(inner, sizeof(inner), c->tag, 1, rows, width);
    snprintf(sql, sizeof(sql), "COPY (%s) TO STDOUT", inner);
    PGresult *res = PQexec(pg, sql);
    if (PQresultStatus(res) != PGRES_COPY_OUT) {
        rc = fail(c, "COPY TO STDOUT: %s %s", PQresStatus(PQresultStatus(res)), PQerrorMessage(pg));
        PQclear(res);
        goto out;
    }
    PQclear(res);
    int n = 0;
    char *line;
    int got;
    while ((got = PQgetCopyData(pg, &line, 0)) > 0) {
        n++;
        char *t1 = memchr(line, '\t', (size_t)got);
        char *t2 = t1 ? memchr(t1 + 1, '\t', (size_t)(got - (t1 + 1 - line))) : NULL;
        if (rc == 0 && (!t1 || !t2 || line[got - 1] != '\n'))
            rc = fail(c, "COPY line %d is not three tab-separated columns", n);
        else if (rc == 0)
            rc = check_row(c, n, line, (size_t)(t1 - line), t1 + 1, (size_t)(t2 - t1 - 1), width,
                           t2 + 1, (size_t)(line + got - 1 - (t2 + 1)), c->tag);
        PQfreemem(line);
    }
    if (got == -2)
        rc = fail(c, "COPY data: %s", PQerrorMessage(pg));
    res = PQgetResult(pg);
    if (rc == 0 && PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = fail(c, "end of COPY: %s %s", PQresStatus(PQresultStatus(res)), PQerrorMessage(pg));
    PQclear(res);
    if (rc == 0 && n != rows)
        rc = fail(c, "COPY gave %d lines, not %d", n, rows);
out:
    PQfinish(pg);
    return rc;
}

static int act_copy_in_fail(struct client *c)
{
    PGconn *pg = PQconnectdb(opt.conninfo);
    int rc = 0;
    if (PQstatus(pg) != CONNECTION_OK) {
        rc = fail(c, "connect: %s", PQerrorMessage(pg));
        goto out;
    }
    char sql[200];
    snprintf(sql, sizeof(sql), "COPY %s(id) FROM STDIN", opt.copy_table);
    PGresult *res = PQexec(pg, sql);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        rc = fail(c, "COPY FROM STDIN: %s %s", PQresStatus(PQresultStatus(res)),
                  PQerrorMessage(pg));
        PQclear(res);
        goto out;
    }
    PQclear(res);
    int rows = rnd(c, 0, 20000);
    for (int i = 0; i < rows && rc == 0; i++) {
        char row[32];
        int l = snprintf(row, sizeof(row), "%d\n", -1000000 - c->id * 100000 - i);
        if (PQputCopyData(pg, row, l) != 1)
            rc = fail(c, "PQputCopyData: %s", PQerrorMessage(pg));
    }
    if (rc == 0 && PQputCopyEnd(pg, "chaos gives up") != 1)
        rc = fail(c, "PQputCopyEnd: %s", PQerrorMessage(pg));
    if (rc != 0)
        goto out;
    res = PQgetResult(pg);
    const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (PQresultStatus(res) != PGRES_FATAL_ERROR || !st || strcmp(st, "57014") != 0)
        rc = fail(c, "COPY ended with CopyFail: %s SQLSTATE %s, not 57014",
                  PQresStatus(PQresultStatus(res)), st ? st : "-");
    PQclear(res);
    while ((res = PQgetResult(pg)) != NULL)
        PQclear(res);
    if (rc == 0) {
        res = PQexec(pg, "SELECT 1");
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            rc = fail(c, "after CopyFail: %s", PQerrorMessage(pg));
        PQclear(res);
    }
out:
    PQfinish(pg);
    return rc;
}

/* A 20 MB result (or COPY), a little of it read, then given up in one of five ways. */
static int act_abandon(struct client *c, int how, int copy)
{
    struct raw r;
    int rc = raw_login(c, &r, rnd(c, 2048, 16384));
    if (rc == 0) {
        char sql[256];
        if (copy)
            snprintf(sql, sizeof(sql),
                     "COPY (SELECT n, repeat('x', 1000) FROM generate_series(1, %d) n) TO STDOUT",
                     BIG_ROWS);
        else
            snprintf(sql, sizeof(sql), "SELECT repeat('x', 1000), '%s' FROM generate_series(1, %d)",
                     c->tag, BIG_ROWS);
        if (send_query(&r, sql) != 0)
            rc = fail(c, "send: %s", strerror(errno));
        else if (rnd(c, 0, 3) != 0)
            rc = read_some(c, &r, (size_t)rnd(c, 1, 200000));
        if (rc == 0)
            usleep((useconds_t)rnd(c, 0, 100000)); /* let the proxy's queue fill */
    }
    if (r.fd >= 0)
        give_up(c, &r, how);
    raw_close(&r);
    return rc;
}

static int act_copy_in_abandon(struct client *c)
{
    struct raw r;
    int rc = raw_login(c, &r, 0);
    if (rc == 0) {
        char sql[200];
        snprintf(sql, sizeof(sql), "COPY %s(id) FROM STDIN", opt.copy_table);
        const uint8_t *b;
        uint32_t l;
        if (send_query(&r, sql) != 0)
            rc = fail(c, "send: %s", strerror(errno));
        else
            rc = expect(c, &r, 'G', &b, &l, "CopyInResponse");
        int rows = rnd(c, 0, 5000);
        uint8_t m[32];
        for (int i = 0; i < rows && rc == 0; i++) {
            int n = snprintf((char *)m + 5, sizeof(m) - 5, "%d\n", -2000000 - c->id * 100000 - i);
            m[0] = 'd';
            put32(m + 1, (uint32_t)(4 + n));
            if (send_all(r.fd, m, 5 + (size_t)n) != 0)
                rc = fail(c, "CopyData: %s", strerror(errno));
        }
        if (rc == 0 && rnd(c, 0, 1)) { /* half a CopyData message */
            m[0] = 'd';
            put32(m + 1, 1000);
            send_all(r.fd, m, 7);
        }
    }
    if (r.fd >= 0)
        give_up(c, &r, rnd(c, 0, 4));
    raw_close(&r);
    return rc;
}

static int act_abandon_libpq(struct client *c)
{
    PGconn *pg = PQconnectdb(opt.conninfo);
    int rc = 0;
    if (PQstatus(pg) != CONNECTION_OK) {
        rc = fail(c, "connect: %s", PQerrorMessage(pg));
    } else {
        char sql[200];
        snprintf(sql, sizeof(sql), "SELECT repeat('x', 1000), '%s' FROM generate_series(1, %d)",
                 c->tag, BIG_ROWS);
        if (!PQsendQuery(pg, sql))
            rc = fail(c, "send: %s", PQerrorMessage(pg));
        else
            usleep((useconds_t)rnd(c, 0, 200000));
    }
    PQfinish(pg);
    return rc;
}

static int act_login_abandon(struct client *c)
{
    struct raw r;
    if (raw_connect(c, &r, 0) != 0)
        return -1;
    uint8_t pkt[512];
    size_t n = startup_packet(pkt);
    send_all(r.fd, pkt, rnd(c, 0, 1) ? (size_t)rnd(c, 1, (int)n - 1) : n);
    usleep((useconds_t)rnd(c, 0, 50000));
    if (rnd(c, 0, 1))
        raw_rst(&r);
    raw_close(&r);
    return 0;
}

static int run_action(struct client *c, enum action a)
{
    switch (a) {
    case A_QUERY: return act_query(c);
    case A_SLOW_READ: return act_slow_read(c);
    case A_HALF_CLOSE: return act_half_close(c);
    case A_PIPELINE: return act_pipeline(c);
    case A_CANCEL: return act_cancel(c);
    case A_COPY_OUT: return act_copy_out(c);
    case A_COPY_IN_FAIL: return act_copy_in_fail(c);
    case A_ABANDON_TERMINATE: return act_abandon(c, 0, 0);
    case A_ABANDON_CLOSE: return act_abandon(c, 1, 0);
    case A_ABANDON_RST: return act_abandon(c, 2, 0);
    case A_ABANDON_GARBAGE: return act_abandon(c, 3, 0);
    case A_ABANDON_HALFCLOSE: return act_abandon(c, 4, 0);
    case A_ABANDON_LIBPQ: return act_abandon_libpq(c);
    case A_COPY_OUT_ABANDON: return act_abandon(c, rnd(c, 0, 4), 1);
    case A_COPY_IN_ABANDON: return act_copy_in_abandon(c);
    case A_LOGIN_ABANDON: return act_login_abandon(c);
    default: return -1;
    }
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    int total = 0;
    for (int a = 0; a < A_COUNT; a++)
        total += actions[a].weight;
    while (!stop_now && elapsed_s() < opt.seconds) {
        int pick = rnd(c, 0, total - 1);
        enum action a = 0;
        while (pick >= actions[a].weight)
            pick -= actions[a++].weight;
        c->seq++;
        snprintf(c->tag, sizeof(c->tag), "c%d.%ld", c->id, c->seq);
        c->err[0] = 0;
        double t0 = elapsed_s();
        int rc = run_action(c, a);
        double ms = (elapsed_s() - t0) * 1000;
        pthread_mutex_lock(&lock);
        runs[a]++;
        if (ms > max_ms[a])
            max_ms[a] = ms;
        if (ms > slowest.ms) {
            slowest.ms = ms;
            slowest.at = t0;
            slowest.client = c->id;
            slowest.seq = c->seq;
            slowest.a = a;
        }
        if (rc != 0 && ++printed_fails > 50) {
            fails[a]++;
            if (printed_fails == 51)
                printf("chaos: (further failures are counted, not shown)\n");
        } else if (rc != 0) {
            fails[a]++;
            printf("chaos: FAIL client %d action %ld %s (at %.1f s, %.0f ms): %s\n", c->id, c->seq,
                   actions[a].name, t0, ms, c->err);
            fflush(stdout);
        }
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: chaos [--seed N] [--clients N] [--seconds N] [--host H] [--port P]\n"
                    "             [--user U] [--dbname D] [--copy-table T]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int have_seed = 0;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        char *end;
        if (strcmp(k, "--seed") == 0) {
            errno = 0;
            opt.seed = strtoull(v, &end, 10);
            if (errno || *end || !*v)
                usage();
            have_seed = 1;
        } else if (strcmp(k, "--clients") == 0) {
            opt.clients = (int)strtol(v, &end, 10);
            if (*end || opt.clients < 1 || opt.clients > 1000)
                usage();
        } else if (strcmp(k, "--seconds") == 0) {
            opt.seconds = (int)strtol(v, &end, 10);
            if (*end || opt.seconds < 1)
                usage();
        } else if (strcmp(k, "--host") == 0)
            opt.host = v;
        else if (strcmp(k, "--port") == 0)
            opt.port = v;
        else if (strcmp(k, "--user") == 0)
            opt.user = v;
        else if (strcmp(k, "--dbname") == 0)
            opt.dbname = v;
        else if (strcmp(k, "--copy-table") == 0)
            opt.copy_table = v;
        else
            usage();
    }
    if (!have_seed) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        opt.seed = ((uint64_t)t.tv_sec * 1000003u + (uint64_t)t.tv_nsec / 1000) ^
                   ((uint64_t)getpid() << 20);
        opt.seed %= 1000000000000ULL; /* short enough to type */
    }
    printf("chaos: seed %llu\n", (unsigned long long)opt.seed);
    printf("chaos: %d clients for %d s against %s:%s as %s/%s (replay: --seed %llu --clients "
           "%d)\n",
           opt.clients, opt.seconds, opt.host, opt.port, opt.user, opt.dbname,
           (unsigned long long)opt.seed, opt.clients);
    fflush(stdout);
    signal(SIGPIPE, SIG_IGN);

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    int gai = getaddrinfo(opt.host, opt.port, &hints, &ai);
    if (gai != 0) {
        fprintf(stderr, "chaos: %s:%s: %s\n", opt.host, opt.port, gai_strerror(gai));
        return 2;
    }
    memcpy(&opt.addr, ai->ai_addr, ai->ai_addrlen);
    opt.addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    snprintf(opt.conninfo, sizeof(opt.conninfo),
             "host=%s port=%s user=%s dbname=%s application_name=chaos connect_timeout=30",
             opt.host, opt.port, opt.user, opt.dbname);

    clock_gettime(CLOCK_MONOTONIC, &t_start);
    struct client *cl = calloc((size_t)opt.clients, sizeof(*cl));
    pthread_t *th = calloc((size_t)opt.clients, sizeof(*th));
    for (int i = 0; i < opt.clients; i++) {
        cl[i].id = i;
        cl[i].rng = opt.seed * 0x100000001b3ULL + (uint64_t)i;
        splitmix(&cl[i].rng);
        if (pthread_create(&th[i], NULL, client_main, &cl[i]) != 0) {
            fprintf(stderr, "chaos: pthread_create failed\n");
            return 2;
        }
    }
    for (int i = 0; i < opt.clients; i++)
        pthread_join(th[i], NULL);

    long passed = 0, failed = 0, checked_ok = 0;
    for (int a = 0; a < A_COUNT; a++) {
        printf("chaos: %-18s %5ld runs, %ld failed, slowest %.0f ms\n", actions[a].name, runs[a],
               fails[a], max_ms[a]);
        passed += runs[a] - fails[a];
        failed += fails[a];
        if (a <= A_COPY_IN_FAIL)
            checked_ok += runs[a] - fails[a];
    }
    if (slowest.ms > 0)
        printf("chaos: slowest action: client %d action %ld %s, started at %.1f s, %.0f ms\n",
               slowest.client, slowest.seq, actions[slowest.a].name, slowest.at, slowest.ms);
    printf("chaos: cancels: %ld landed (57014), %ld after the sleep had ended\n", cancels_landed,
           cancels_late);
    if (runs[A_CANCEL] >= 5 && cancels_landed == 0) {
        printf("chaos: FAIL not one of %ld cancels landed\n", runs[A_CANCEL]);
        failed++;
    }
    printf("chaos: %.1f s, %ld well-behaved actions checked\n", elapsed_s(), checked_ok);
    printf("chaos: %ld passed, %ld failed\n", passed, failed);
    if (failed)
        printf("chaos: replay with --seed %llu --clients %d\n", (unsigned long long)opt.seed,
               opt.clients);
    free(cl);
    free(th);
    return failed ? 1 : 0;
}
