/*
 * A server's SCRAM challenge must never stall the proxy. Switchyard logs into a fake blue
 * server written here: for slow_user it answers the login with AuthenticationSASL and a
 * server-first-message naming an iteration count the test picks; every other user's connection
 * is piped to the real blue server, so a second session through the same switchyard runs real
 * queries. Checked:
 *   - a challenge of i=100000000, or of 2000000 with server_scram_max_iterations = 1000000, fails
 *     that login at once with an error naming the key, in the client's ErrorResponse and in the
 *     log, while the other session's queries keep answering in under 200 ms;
 *   - with the limit raised, a challenge of 3000000 is really answered (the fake server checks
 *     the proof, so the login succeeds), twice at once, while the keys are derived on workers:
 *     the other session's queries meanwhile stay under 200 ms;
 *   - a login waiting on a derivation still ends at client_login_timeout, and the late result
 *     is dropped: the proxy stays up and keeps serving.
 * Before keys were derived off the loop, each of these stalled every session for the length of
 * the derivation (114 s for i=100000000).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/harness.h"

#define SLOW_USER "slow_user"
#define SLOW_PASSWORD "Slow-user-pass-7k"
#define FAST_LIMIT_MS 200 /* a query on another session during a slow login */

static struct h_env env;
static char auth_path[300];

/* ---- the fake blue server ---- */

static const uint8_t fake_salt[16] = "fake-salt-16byte";

static struct {
    int listen_fd;
    int port;
    pthread_t thread;
    atomic_int stop;
    atomic_uint iterations;  /* what the challenge asks for */
    atomic_int challenged;   /* challenges sent */
    atomic_int answered;     /* client-final-messages received */
    atomic_int proofs_ok;    /* of which the proof was right */
    /* The keys for SLOW_PASSWORD at keys_iterations (computed once, before the timing). */
    uint32_t keys_iterations;
    uint8_t client_key[32], stored_key[32], server_key[32];
} fake;

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Reads exactly n bytes within timeout_ms. Returns 0 or -1. */
static int read_exact(int fd, void *buf, size_t n, int timeout_ms)
{
    uint8_t *p = buf;
    long deadline = now_ms() + timeout_ms;
    while (n > 0) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        long left = deadline - now_ms();
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            return -1;
        ssize_t r = recv(fd, p, n, 0);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* One typed message (type, then the body) into buf. Returns the body length or -1. */
static ssize_t read_typed(int fd, uint8_t *type, uint8_t *buf, size_t cap, int timeout_ms)
{
    uint8_t h[5];
    if (read_exact(fd, h, 5, timeout_ms) != 0)
        return -1;
    uint32_t len = get_u32(h + 1);
    if (len < 4 || len - 4 > cap)
        return -1;
    *type = h[0];
    return read_exact(fd, buf, len - 4, timeout_ms) == 0 ? (ssize_t)(len - 4) : -1;
}

/* An Authentication message with code and data. */
static int send_auth(int fd, uint32_t code, const void *data, size_t n)
{
    uint8_t msg[512];
    msg[0] = 'R';
    put_u32(msg + 1, (uint32_t)(8 + n));
    put_u32(msg + 5, code);
    memcpy(msg + 9, data, n);
    return h_send_all(fd, msg, 9 + n);
}

static void b64(const uint8_t *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

static void hmac(const uint8_t key[32], const void *data, size_t n, uint8_t out[32])
{
    size_t len = 0;
    EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, 32, data, n, out, 32, &len);
}

/* The SCRAM side of the fake: challenge with fake.iterations, then check the proof (when the
 * keys for that count are known) and log the client in. */
static void fake_scram(int fd)
{
    static const uint8_t mech[] = "SCRAM-SHA-256\0";
    uint8_t type, body[1024];
    char cfirst_bare[512], sfirst[512], final[1024], msg[2560];
    if (send_auth(fd, 10, mech, sizeof(mech)) != 0)
        return;
    ssize_t n = read_typed(fd, &type, body, sizeof(body) - 1, 10000);
    if (n < 0 || type != 'p')
        return;
    body[n] = 0;
    /* "SCRAM-SHA-256\0" int32 len, then "n,,n=,r=<nonce>" */
    size_t ml = strlen((char *)body) + 1;
    if (ml + 4 > (size_t)n)
        return;
    const char *cfirst = (const char *)body + ml + 4;
    const char *bare = strstr(cfirst, "n=");
    const char *r = strstr(cfirst, "r=");
    if (!bare || !r)
        return;
    snprintf(cfirst_bare, sizeof(cfirst_bare), "%s", bare);
    char salt64[64];
    b64(fake_salt, sizeof(fake_salt), salt64);
    uint32_t iter = atomic_load(&fake.iterations);
    int sl = snprintf(sfirst, sizeof(sfirst), "r=%sFakeServerNonce,s=%s,i=%u", r + 2, salt64, iter);
    if (send_auth(fd, 11, sfirst, (size_t)sl) != 0)
        return;
    atomic_fetch_add(&fake.challenged, 1);
    /* Switchyard derives the keys now; wait for its answer for as long as it takes. */
    n = read_typed(fd, &type, body, sizeof(body) - 1, 120000);
    if (n < 0 || type != 'p')
        return;
    body[n] = 0;
    atomic_fetch_add(&fake.answered, 1);
    snprintf(final, sizeof(final), "%s", (char *)body);
    char *p = strstr(final, ",p=");
    if (!p || iter != fake.keys_iterations)
        return;
    *p = 0;
    int am = snprintf(msg, sizeof(msg), "%s,%s,%s", cfirst_bare, sfirst, final);
    uint8_t sig[32], proof[32], ssig[32];
    char proof64[64], v[80];
    hmac(fake.stored_key, msg, (size_t)am, sig);
    for (int i = 0; i < 32; i++)
        proof[i] = fake.client_key[i] ^ sig[i];
    b64(proof, 32, proof64);
    if (strcmp(p + 3, proof64) != 0)
        return; /* a wrong proof: close, the login fails */
    atomic_fetch_add(&fake.proofs_ok, 1);
    hmac(fake.server_key, msg, (size_t)am, ssig);
    b64(ssig, 32, proof64);
    int vl = snprintf(v, sizeof(v), "v=%s", proof64);
    static const uint8_t ok_ready[] = {'R', 0, 0, 0, 8, 0, 0, 0, 0, 'Z', 0, 0, 0, 5, 'I'};
    if (send_auth(fd, 12, v, (size_t)vl) != 0 || h_send_all(fd, ok_ready, sizeof(ok_ready)) != 0)
        return;
    read_exact(fd, body, 1, 10000); /* until the client leaves */
}

/* Every other user: the connection is piped to the real blue server. */
static void fake_pipe(int fd, const uint8_t *startup, size_t len)
{
    int up = h_tcp_connect(env.blue_port);
    if (up < 0 || h_send_all(up, startup, len) != 0) {
        if (up >= 0)
            close(up);
        return;
    }
    uint8_t buf[65536];
    struct pollfd pfd[2] = {{.fd = fd, .events = POLLIN}, {.fd = up, .events = POLLIN}};
    while (!atomic_load(&fake.stop)) {
        if (poll(pfd, 2, 200) <= 0)
            continue;
        for (int i = 0; i < 2; i++) {
            if (!pfd[i].revents)
                continue;
            ssize_t r = recv(pfd[i].fd, buf, sizeof(buf), 0);
            if (r <= 0 || h_send_all(pfd[1 - i].fd, buf, (size_t)r) != 0) {
                close(up);
                return;
            }
        }
    }
    close(up);
}

static void *fake_serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    uint8_t pkt[4096];
    /* SSLRequest (server_tls = prefer): 'N', then the StartupMessage. Health probes close. */
    for (int tries = 0; tries < 2; tries++) {
        if (read_exact(fd, pkt, 8, 10000) != 0)
            break;
        uint32_t len = get_u32(pkt);
        if (len == 8 && get_u32(pkt + 4) == 80877103) {
            if (h_send_all(fd, "N", 1) != 0)
                break;
            continue;
        }
        if (len < 8 || len > sizeof(pkt) || read_exact(fd, pkt + 8, len - 8, 10000) != 0)
            break;
        /* "user\0<name>\0" among the parameters after the version. */
        int slow = 0;
        for (size_t i = 8; i + 5 < len; i += strnlen((char *)pkt + i, len - i) + 1)
            if (strcmp((char *)pkt + i, "user") == 0)
                slow = strcmp((char *)pkt + i + 5, SLOW_USER) == 0;
        if (slow)
            fake_scram(fd);
        else
            fake_pipe(fd, pkt, len);
        break;
    }
    close(fd);
    return NULL;
}

static void *fake_accept(void *arg)
{
    (void)arg;
    while (!atomic_load(&fake.stop)) {
        struct pollfd pfd = {.fd = fake.listen_fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        int fd = accept(fake.listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_t t;
        if (pthread_create(&t, NULL, fake_serve, (void *)(intptr_t)fd) == 0)
            pthread_detach(t);
        else
            close(fd);
    }
    return NULL;
}

static int fake_start(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int one = 1;
    fake.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(fake.listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fake.listen_fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        listen(fake.listen_fd, 64) != 0 ||
        getsockname(fake.listen_fd, (struct sockaddr *)&a, &al) != 0)
        return -1;
    fake.port = ntohs(a.sin_port);
    return pthread_create(&fake.thread, NULL, fake_accept, NULL);
}

/* ---- the test's clients ---- */

/* A switchyard whose blue is the fake, with extra [switchyard] lines. */
static void start_proxy(struct h_proxy *p, const char *extra)
{
    char lines[1024];
    snprintf(lines, sizeof(lines), "auth_file = %s\n%s", auth_path, extra);
    struct h_proxy_opts o = {.switchyard_lines = lines};
    assert_int_equal(h_proxy_start_opts(p, &env, fake.port, env.green_port, &o), 0);
}

/* The other session: a real one through the proxy and the fake's pipe to blue. */
static PGconn *fast_session(const struct h_proxy *p)
{
    char ci[512];
    h_conninfo(ci, sizeof(ci), p->port, env.pguser, "connect_timeout=5");
    PGconn *c = PQconnectdb(ci);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("the other session could not log in: %s", PQerrorMessage(c));
    return c;
}

/* Runs SELECT 1 with a deadline; returns how long it took in ms, or -1 (no answer in 5 s). */
static long timed_query(PGconn *c)
{
    long t0 = now_ms();
    if (!PQsendQuery(c, "SELECT 1"))
        return -1;
    int ok = 0;
    for (;;) {
        while (!PQisBusy(c)) {
            PGresult *r = PQgetResult(c);
            if (!r)
                return ok ? now_ms() - t0 : -1;
            ok = PQresultStatus(r) == PGRES_TUPLES_OK;
            PQclear(r);
        }
        struct pollfd pfd = {.fd = PQsocket(c), .events = POLLIN};
        long left = t0 + 5000 - now_ms();
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0 || !PQconsumeInput(c))
            return -1;
    }
}

/* Starts slow_user's login on a raw socket; returns the socket. */
static int slow_login_start(const struct h_proxy *p)
{
    uint8_t st[256];
    int fd = h_tcp_connect(p->port);
    assert_true(fd >= 0);
    size_t n = h_startup(st, sizeof(st), SLOW_USER, "postgres");
    assert_int_equal(h_send_all(fd, st, n), 0);
    return fd;
}

/* Waits up to timeout_ms for the fake's counter to reach want. Returns 0 or -1. */
static int wait_count(atomic_int *counter, int want, int timeout_ms)
{
    long deadline = now_ms() + timeout_ms;
    while (atomic_load(counter) < want) {
        if (now_ms() > deadline)
            return -1;
        usleep(2000);
    }
    return 0;
}

/* Reads the proxy's answer to a login until it closes; the text is NUL-terminated in buf. */
static size_t read_answer(int fd, char *buf, size_t cap, int timeout_ms)
{
    int closed = 0;
    ssize_t n = h_read_until_close(fd, (uint8_t *)buf, cap - 1, timeout_ms, &closed);
    n = n < 0 ? 0 : n;
    for (ssize_t i = 0; i < n; i++)
        if (buf[i] == 0)
            buf[i] = ' '; /* fields are NUL-separated: make it one searchable string */
    buf[n] = 0;
    return (size_t)n;
}

/* Queries the other session until stop() holds (or 20 s); each must take < FAST_LIMIT_MS.
 * Returns how many ran. */
static int query_while(PGconn *c, atomic_int *counter, int until)
{
    int runs = 0;
    long deadline = now_ms() + 20000;
    while (atomic_load(counter) < until && now_ms() < deadline) {
        long ms = timed_query(c);
        if (ms < 0 || ms >= FAST_LIMIT_MS)
            fail_msg("a query on another session took %ld ms during a slow SCRAM login "
                     "(limit %d ms; -1: no answer in 5 s): the login blocks the event loop",
                     ms, FAST_LIMIT_MS);
        runs++;
        usleep(20000);
    }
    return runs;
}

/* ---- tests ---- */

/* A challenge over server_scram_max_iterations fails that login at once, naming the key. */
static void over_limit(uint32_t iterations, const char *extra)
{
    struct h_proxy p;
    start_proxy(&p, extra);
    PGconn *c = fast_session(&p);
    assert_true(timed_query(c) >= 0);
    atomic_store(&fake.iterations, iterations);
    int before = atomic_load(&fake.challenged);
    long t0 = now_ms();
    int fd = slow_login_start(&p);
    assert_int_equal(wait_count(&fake.challenged, before + 1, 5000), 0);
    /* The other session answers while (and after) the challenge is refused. */
    for (int i = 0; i < 5; i++) {
        long ms = timed_query(c);
        if (ms < 0 || ms >= FAST_LIMIT_MS)
            fail_msg("a query on another session took %ld ms after a challenge of i=%u "
                     "(limit %d ms; -1: no answer in 5 s)", ms, iterations, FAST_LIMIT_MS);
    }
    char ans[4096];
    read_answer(fd, ans, sizeof(ans), 5000);
    long took = now_ms() - t0;
    close(fd);
    if (!strstr(ans, "server_scram_max_iterations") || !strstr(ans, "08006"))
        fail_msg("expected an 08006 error naming server_scram_max_iterations for i=%u, got "
                 "'%s'", iterations, ans);
    if (took > 2000)
        fail_msg("the refused login took %ld ms (i=%u)", took, iterations);
    assert_true(h_log_contains(&p, "server_scram_max_iterations"));
    assert_true(h_log_contains(&p, SLOW_USER));
    assert_true(timed_query(c) >= 0);
    PQfinish(c);
    assert_false(h_log_contains(&p, SLOW_PASSWORD));
    assert_int_equal(h_proxy_stop(&p, 10000), 0);
}

static void test_hundred_million_refused(void **state)
{
    over_limit(100000000, "");
}

static void test_over_configured_limit_refused(void **state)
{
    over_limit(2000000, "server_scram_max_iterations = 1000000\n");
}

/* With the limit raised, an expensive challenge is answered from worker threads, two at once,
 * and the proof is right; meanwhile the other session is never held up. */
static void test_derivation_runs_off_the_loop(void **state)
{
    struct h_proxy p;
    start_proxy(&p, "server_scram_max_iterations = 5000000\n");
    PGconn *c = fast_session(&p);
    assert_true(timed_query(c) >= 0);
    atomic_store(&fake.iterations, fake.keys_iterations);
    int ch = atomic_load(&fake.challenged), an = atomic_load(&fake.answered);
    int ok = atomic_load(&fake.proofs_ok);
    int fd1 = slow_login_start(&p), fd2 = slow_login_start(&p);
    assert_int_equal(wait_count(&fake.challenged, ch + 2, 5000), 0);
    long t0 = now_ms();
    int runs = query_while(c, &fake.answered, an + 2);
    long derive_ms = now_ms() - t0;
    assert_int_equal(wait_count(&fake.answered, an + 2, 30000), 0);
    /* The derivations really took a while (else the test proves nothing), and queries ran. */
    if (derive_ms < 300 || runs < 3)
        fail_msg("the derivations took %ld ms with %d queries meanwhile: too short to show the "
                 "loop is free", derive_ms, runs);
    assert_int_equal(h_read_until_ready(fd1, 10000), 0);
    assert_int_equal(h_read_until_ready(fd2, 10000), 0);
    assert_int_equal(atomic_load(&fake.proofs_ok), ok + 2);
    close(fd1);
    close(fd2);
    printf("# two derivations of %u iterations: %ld ms, %d queries meanwhile, each < %d ms\n",
           fake.keys_iterations, derive_ms, runs, FAST_LIMIT_MS);
    PQfinish(c);
    assert_false(h_log_contains(&p, SLOW_PASSWORD));
    assert_int_equal(h_proxy_stop(&p, 10000), 0);
}

/* A login waiting on a derivation still ends at client_login_timeout; the late keys are
 * dropped and the proxy goes on. */
static void test_login_deadline_covers_derivation(void **state)
{
    struct h_proxy p;
    start_proxy(&p, "server_scram_max_iterations = 100000000\nclient_login_timeout = 1s\n");
    PGconn *c = fast_session(&p);
    atomic_store(&fake.iterations, 2 * fake.keys_iterations);
    int ch = atomic_load(&fake.challenged);
    long t0 = now_ms();
    int fd = slow_login_start(&p);
    assert_int_equal(wait_count(&fake.challenged, ch + 1, 5000), 0);
    char ans[4096];
    read_answer(fd, ans, sizeof(ans), 5000);
    long took = now_ms() - t0;
    close(fd);
    if (!strstr(ans, "client_login_timeout") || took > 2500)
        fail_msg("expected the login to fail at client_login_timeout (1 s), got '%s' after "
                 "%ld ms", ans, took);
    /* The derivation is still running on its worker: the loop is free meanwhile. */
    for (int i = 0; i < 5; i++) {
        long ms = timed_query(c);
        assert_true(ms >= 0 && ms < FAST_LIMIT_MS);
    }
    /* The derivation runs on: the other session keeps answering until its result comes back
     * to a session that is gone, and is dropped. */
    int runs = 0;
    long until = now_ms() + 90000;
    while (!h_log_contains(&p, "SCRAM keys derived after the session closed; dropped")) {
        if (now_ms() > until)
            fail_msg("the timed-out login's derivation did not end within 90 s");
        long ms = timed_query(c);
        if (ms < 0 || ms >= FAST_LIMIT_MS)
            fail_msg("a query took %ld ms while a timed-out login's keys were derived", ms);
        runs++;
        usleep(50000);
    }
    assert_true(h_proxy_alive(&p));
    PGconn *c2 = fast_session(&p);
    assert_true(timed_query(c2) >= 0);
    PQfinish(c2);
    PQfinish(c);
    assert_true(runs > 3);
    assert_false(h_log_contains(&p, SLOW_PASSWORD));
    assert_int_equal(h_proxy_stop(&p, 20000), 0);
}

static int setup(void **state)
{
    h_env_load(&env);
    snprintf(auth_path, sizeof(auth_path), "/tmp/sy-scram-cost-%d.txt", (int)getpid());
    FILE *f = fopen(auth_path, "w");
    if (!f)
        return -1;
    fprintf(f, "\"%s\" \"%s\"\n", SLOW_USER, SLOW_PASSWORD);
    fclose(f);
    /* The keys the fake checks proofs against, computed before anything is timed. */
    uint8_t salted[32];
    unsigned int dl = 0;
    fake.keys_iterations = 3000000;
    if (PKCS5_PBKDF2_HMAC(SLOW_PASSWORD, (int)strlen(SLOW_PASSWORD), fake_salt,
                          (int)sizeof(fake_salt), (int)fake.keys_iterations, EVP_sha256(), 32,
                          salted) != 1)
        return -1;
    hmac(salted, "Client Key", 10, fake.client_key);
    hmac(salted, "Server Key", 10, fake.server_key);
    EVP_Digest(fake.client_key, 32, fake.stored_key, &dl, EVP_sha256(), NULL);
    OPENSSL_cleanse(salted, sizeof(salted));
    return fake_start();
}

static int teardown(void **state)
{
    atomic_store(&fake.stop, 1);
    pthread_join(fake.thread, NULL);
    close(fake.listen_fd);
    unlink(auth_path);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hundred_million_refused),
        cmocka_unit_test(test_over_configured_limit_refused),
        cmocka_unit_test(test_derivation_runs_off_the_loop),
        cmocka_unit_test(test_login_deadline_covers_derivation),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
