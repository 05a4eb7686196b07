#define _GNU_SOURCE
/*
 * Bad input from either side, sent with raw sockets: each case must get a clear error on that one
 * connection, which is closed, while the proxy keeps running and a bystander session (inside an
 * open transaction the whole time) notices nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/support/harness.h"

static struct h_env env;
static struct h_proxy proxy;
static PGconn *bystander;

static int setup(void **state)
{
    h_env_load(&env);
    if (h_proxy_start(&proxy, &env, env.blue_port, env.green_port,
                      "client_login_timeout = 1s\nmax_message_size = 1MB") != 0)
        return -1;
    char ci[512];
    h_conninfo(ci, sizeof(ci), proxy.port, env.pguser, NULL);
    bystander = PQconnectdb(ci);
    if (PQstatus(bystander) != CONNECTION_OK)
        return -1;
    PQclear(PQexec(bystander, "create table if not exists sy_bystander (n int)"));
    PQclear(PQexec(bystander, "begin"));
    PGresult *r = PQexec(bystander, "insert into sy_bystander values (1)");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok ? 0 : -1;
}

static int teardown(void **state)
{
    PQfinish(bystander);
    return h_proxy_stop(&proxy, 10000) == 0 ? 0 : -1;
}

/* Sends bytes on a fresh connection and expects an ErrorResponse with sqlstate, then close. */
static void expect_error_and_close(int fd, const void *bytes, size_t len, const char *sqlstate)
{
    if (len)
        assert_int_equal(h_send_all(fd, bytes, len), 0);
    uint8_t buf[4096];
    int closed = 0;
    ssize_t n = h_read_until_close(fd, buf, sizeof(buf), 5000, &closed);
    char got[16];
    h_find_sqlstate(buf, (size_t)(n > 0 ? n : 0), got, sizeof(got));
    assert_string_equal(got, sqlstate);
    assert_int_equal(closed, 1);
    close(fd);
}

/* Sends bytes on a fresh connection and expects what PostgreSQL does with a startup packet it
 * cannot read: not one byte back, the connection closed, and the reason in the log. */
static void expect_silent_close(int fd, const void *bytes, size_t len, const char *logged)
{
    if (len)
        assert_int_equal(h_send_all(fd, bytes, len), 0);
    uint8_t buf[4096];
    int closed = 0;
    ssize_t n = h_read_until_close(fd, buf, sizeof(buf), 5000, &closed);
    assert_int_equal(n, 0);
    assert_int_equal(closed, 1);
    close(fd);
    for (int i = 0; i < 50 && !h_log_contains(&proxy, logged); i++)
        usleep(20000);
    assert_true(h_log_contains(&proxy, logged));
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static void test_startup_oversize(void **state)
{
    uint8_t pkt[8];
    put32(pkt, 20000);
    put32(pkt + 4, 196608);
    expect_silent_close(h_tcp_connect(proxy.port), pkt, sizeof(pkt),
                        "invalid length of startup packet (20000 bytes");
}

static void test_startup_negative_length(void **state)
{
    uint8_t pkt[8];
    put32(pkt, 0xFFFFFFF0u);
    put32(pkt + 4, 196608);
    expect_silent_close(h_tcp_connect(proxy.port), pkt, sizeof(pkt),
                        "invalid length of startup packet (4294967280 bytes)");
}

static void test_startup_too_short(void **state)
{
    uint8_t pkt[8];
    put32(pkt, 4);
    put32(pkt + 4, 196608);
    expect_silent_close(h_tcp_connect(proxy.port), pkt, sizeof(pkt),
                        "invalid length of startup packet (4 bytes)");
}

static void test_startup_unknown_version(void **state)
{
    uint8_t pkt[64];
    size_t n = h_startup(pkt, sizeof(pkt), "postgres", "app");
    put32(pkt + 4, 0x00020000); /* protocol 2.0: the server's old unframed error, no SQLSTATE */
    int fd = h_tcp_connect(proxy.port);
    assert_int_equal(h_send_all(fd, pkt, n), 0);
    uint8_t buf[512];
    int closed = 0;
    ssize_t got = h_read_until_close(fd, buf, sizeof(buf), 5000, &closed);
    static const char v2[] = "EFATAL:  unsupported frontend protocol 2.0: server supports 3.0 to 3.0\n";
    assert_int_equal(got, sizeof(v2));
    assert_memory_equal(buf, v2, sizeof(v2));
    assert_int_equal(closed, 1);
    close(fd);
    n = h_startup(pkt, sizeof(pkt), "postgres", "app");
    put32(pkt + 4, 0x00040000); /* protocol 4.0 */
    expect_error_and_close(h_tcp_connect(proxy.port), pkt, n, "0A000");
}

static void test_startup_malformed_params(void **state)
{
    uint8_t pkt[32] = {0};
    memcpy(pkt + 8, "user\0postgres\0database", 22); /* name without a value */
    put32(pkt, 31);
    put32(pkt + 4, 196608);
    expect_error_and_close(h_tcp_connect(proxy.port), pkt, 31, "08P01");
}

static void test_truncated_startup_then_close(void **state)
{
    int fd = h_tcp_connect(proxy.port);
    uint8_t pkt[64];
    size_t n = h_startup(pkt, sizeof(pkt), "postgres", "app");
    assert_int_equal(h_send_all(fd, pkt, n / 2), 0);
    close(fd);
    usleep(100000);
    assert_true(h_proxy_alive(&proxy));
}

static void test_login_timeout(void **state)
{
    int fd = h_tcp_connect(proxy.port);
    /* Sends nothing: the proxy gives up after client_login_timeout (1s), and, as PostgreSQL
     * at authentication_timeout before a startup packet, says nothing. */
    expect_silent_close(fd, NULL, 0, "client_login_timeout");
}

static void test_bytes_after_ssl_request(void **state)
{
    uint8_t pkt[128];
    put32(pkt, 8);
    put32(pkt + 4, 80877103);
    size_t n = h_startup(pkt + 8, sizeof(pkt) - 8, "postgres", "app");
    /* As PostgreSQL: the answer ('N': no client_tls here), then FATAL 08P01. */
    int fd = h_tcp_connect(proxy.port);
    assert_int_equal(h_send_all(fd, pkt, 8 + n), 0);
    uint8_t answer = 0;
    assert_int_equal(recv(fd, &answer, 1, 0), 1);
    assert_int_equal(answer, 'N');
    expect_error_and_close(fd, NULL, 0, "08P01");
    assert_true(h_log_contains(&proxy, "received unencrypted data after SSL request"));
}

static void test_double_ssl_request(void **state)
{
    int fd = h_tcp_connect(proxy.port);
    uint8_t pkt[8];
    put32(pkt, 8);
    put32(pkt + 4, 80877103);
    assert_int_equal(h_send_all(fd, pkt, 8), 0);
    uint8_t answer = 0;
    assert_int_equal(recv(fd, &answer, 1, 0), 1);
    assert_int_equal(answer, 'N');
    /* The server takes a second SSLRequest's code for a protocol version (1234.5679). */
    expect_error_and_close(fd, pkt, 8, "0A000");
}

static void test_gssenc_refused_then_login(void **state)
{
    int fd = h_tcp_connect(proxy.port);
    uint8_t pkt[64];
    put32(pkt, 8);
    put32(pkt + 4, 80877104);
    assert_int_equal(h_send_all(fd, pkt, 8), 0);
    uint8_t answer = 0;
    assert_int_equal(recv(fd, &answer, 1, 0), 1);
    assert_int_equal(answer, 'N');
    size_t n = h_startup(pkt, sizeof(pkt), "postgres", "app");
    assert_int_equal(h_send_all(fd, pkt, n), 0);
    assert_int_equal(h_read_until_ready(fd, 5000), 0);
    close(fd);
}

/* Logs in with a raw socket (trust auth) and returns the connection. */
static int raw_login(void)
{
    int fd = h_tcp_connect(proxy.port);
    uint8_t pkt[64];
    size_t n = h_startup(pkt, sizeof(pkt), "postgres", "app");
    assert_int_equal(h_send_all(fd, pkt, n), 0);
    assert_int_equal(h_read_until_ready(fd, 5000), 0);
    return fd;
}

static void test_unknown_message_type(void **state)
{
    uint8_t msg[5] = {'z', 0, 0, 0, 4};
    expect_error_and_close(raw_login(), msg, 5, "08P01");
    assert_true(h_log_contains(&proxy, "invalid message type 0x7a"));
}

static void test_negative_message_length(void **state)
{
    uint8_t msg[5] = {'Q', 0xff, 0xff, 0xff, 0xf0};
    expect_error_and_close(raw_login(), msg, 5, "08P01");
}

static void test_message_length_below_four(void **state)
{
    uint8_t msg[5] = {'Q', 0, 0, 0, 2};
    expect_error_and_close(raw_login(), msg, 5, "08P01");
}

static void test_oversize_message(void **state)
{
    uint8_t msg[5] = {'Q', 0, 0x20, 0, 0}; /* 2 MiB > max_message_size 1MB */
    expect_error_and_close(raw_login(), msg, 5, "08P01");
    assert_true(h_log_contains(&proxy, "over the configured limit"));
}

static void test_truncated_message_then_close(void **state)
{
    int fd = raw_login();
    uint8_t msg[8] = {'Q', 0, 0, 0, 100, 's', 'e', 'l'};
    assert_int_equal(h_send_all(fd, msg, sizeof(msg)), 0);
    close(fd);
    usleep(100000);
    assert_true(h_proxy_alive(&proxy));
}

/* ---- a hostile server ---- */

struct fake_server {
    int listen_fd;
    int port;
    const uint8_t *reply;
    size_t reply_len;
    int raw; /* answer the very first packet (the SSLRequest) with reply */
};

static void *fake_server_main(void *arg)
{
    struct fake_server *fs = arg;
    if (fs->raw) {
        /* The first packet is an SSLRequest from the session and from Switchyard's control
         * connections alike: every connection in the next few seconds gets the reply. */
        struct pollfd lp = {.fd = fs->listen_fd, .events = POLLIN};
        uint8_t b[64];
        for (int i = 0; i < 4 && poll(&lp, 1, 3000) == 1; i++) {
            int c = accept(fs->listen_fd, NULL, NULL);
            if (c < 0)
                break;
            if (recv(c, b, sizeof(b), 0) > 0)
                h_send_all(c, fs->reply, fs->reply_len);
            struct pollfd cp = {.fd = c, .events = POLLIN};
            poll(&cp, 1, 1000);
            close(c);
        }
        return NULL;
    }
    /* The proxy's health probes connect and close without a word, and its control connections
     * log in as switchyard-control: skip those. */
    int fd = -1;
    uint8_t buf[1024];
    for (int tries = 0; tries < 20; tries++) {
        fd = accept(fs->listen_fd, NULL, NULL);
        if (fd < 0)
            return NULL;
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n == 8 && buf[4] == 0x04 && buf[5] == 0xd2 && !fs->raw) {
            /* SSLRequest (server_tls = prefer): no TLS here, then the startup packet. */
            h_send_all(fd, "N", 1);
            n = recv(fd, buf, sizeof(buf), 0);
        }
        /* Switchyard's own control connections (its start-up check of which side is live)
         * are not the session's: refused by closing them. */
        if (n > 0 && !memmem(buf, (size_t)n, "switchyard-control", 18))
            break;
        close(fd);
        fd = -1;
    }
    if (fd < 0)
        return NULL;
    h_send_all(fd, fs->reply, fs->reply_len);
    /* Keep the connection open: the proxy must close it on its own. */
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    poll(&pfd, 1, 5000);
    close(fd);
    return NULL;
}

static void run_hostile(const uint8_t *reply, size_t len, const char *log_needle, int raw)
{
    struct fake_server fs = {.reply = reply, .reply_len = len, .raw = raw};
    fs.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    assert_int_equal(bind(fs.listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fs.listen_fd, (struct sockaddr *)&a, &l), 0);
    assert_int_equal(listen(fs.listen_fd, 4), 0);
    fs.port = ntohs(a.sin_port);
    struct h_proxy p2;
    /* No control connection: the fake server answers one connection, the session's. */
    assert_int_equal(h_proxy_start(&p2, &env, fs.port, env.green_port, "health_interval = 0\n"), 0);
    pthread_t th;
    pthread_create(&th, NULL, fake_server_main, &fs);
    uint8_t pkt[64];
    size_t n = h_startup(pkt, sizeof(pkt), "postgres", "app");
    expect_error_and_close(h_tcp_connect(p2.port), pkt, n, "08P01");
    pthread_join(th, NULL);
    close(fs.listen_fd);
    assert_true(h_proxy_alive(&p2));
    assert_true(h_log_contains(&p2, log_needle));
    assert_int_equal(h_proxy_stop(&p2, 10000), 0);
}

/* AuthenticationOk and ReadyForQuery: a login the proxy accepts, before the bad bytes. */
#define LOGIN_OK "R\0\0\0\x08\0\0\0\0" "Z\0\0\0\x05I"
#define LOGIN_OK_LEN 15

static void run_hostile_server(const uint8_t *reply, size_t len, const char *log_needle)
{
    run_hostile(reply, len, log_needle, 0);
}

static void run_hostile_server_raw(const uint8_t *reply, size_t len, const char *log_needle)
{
    run_hostile(reply, len, log_needle, 1);
}

static void test_server_sends_garbage_during_login(void **state)
{
    static const uint8_t garbage[] = "<html>not a database</html>";
    run_hostile_server(garbage, sizeof(garbage) - 1, "unexpected message during login");
}

static void test_server_sends_garbage(void **state)
{
    static const uint8_t msg[] = LOGIN_OK "<html>not a database</html>";
    run_hostile_server(msg, sizeof(msg) - 1, "the server sent an invalid message type 0x3c");
}

static void test_server_sends_oversize_length(void **state)
{
    static const uint8_t msg[] = LOGIN_OK "D\x7f\xff\xff\xff";
    run_hostile_server(msg, LOGIN_OK_LEN + 5, "the server sent an invalid message");
}

static void test_server_sends_bad_ready_for_query(void **state)
{
    static const uint8_t msg[] = LOGIN_OK "Z\0\0\0\x05Q";
    run_hostile_server(msg, LOGIN_OK_LEN + 6, "the server sent an invalid message");
}

static void test_server_sends_bad_tls_answer(void **state)
{
    /* Raw: answered straight after the SSLRequest, before any startup packet. */
    static const uint8_t msg[] = "X";
    run_hostile_server_raw(msg, 1, "invalid answer to SSLRequest");
}

static void test_bystander_unharmed(void **state)
{
    PGresult *r = PQexec(bystander, "insert into sy_bystander values (2)");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    r = PQexec(bystander, "commit");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    r = PQexec(bystander, "select count(*) from sy_bystander where n in (1, 2)");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_true(atoi(PQgetvalue(r, 0, 0)) >= 2);
    PQclear(r);
    char *j = h_ctl(&proxy, "status");
    assert_non_null(j);
    assert_true(h_json_int(j, "protocol_errors") >= 10);
    free(j);
    PQclear(PQexec(bystander, "drop table sy_bystander"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_startup_oversize),
        cmocka_unit_test(test_startup_negative_length),
        cmocka_unit_test(test_startup_too_short),
        cmocka_unit_test(test_startup_unknown_version),
        cmocka_unit_test(test_startup_malformed_params),
        cmocka_unit_test(test_truncated_startup_then_close),
        cmocka_unit_test(test_login_timeout),
        cmocka_unit_test(test_bytes_after_ssl_request),
        cmocka_unit_test(test_double_ssl_request),
        cmocka_unit_test(test_gssenc_refused_then_login),
        cmocka_unit_test(test_unknown_message_type),
        cmocka_unit_test(test_negative_message_length),
        cmocka_unit_test(test_message_length_below_four),
        cmocka_unit_test(test_oversize_message),
        cmocka_unit_test(test_truncated_message_then_close),
        cmocka_unit_test(test_server_sends_garbage_during_login),
        cmocka_unit_test(test_server_sends_garbage),
        cmocka_unit_test(test_server_sends_bad_tls_answer),
        cmocka_unit_test(test_server_sends_oversize_length),
        cmocka_unit_test(test_server_sends_bad_ready_for_query),
        cmocka_unit_test(test_bystander_unharmed),
    };
    return cmocka_run_group_tests_name("bad_input", tests, setup, teardown);
}
