#define _GNU_SOURCE
/*
 * SCRAM-SHA-256-PLUS (tls-server-end-point) on both legs. libpq with channel_binding=require
 * logs in through Switchyard when the client leg is TLS, and fails, as it fails against the
 * server, on a plaintext leg. Raw clients over TLS try what a man in the middle or a broken
 * client would (the "y" downgrade, binding data for another certificate, PLUS on a plaintext
 * leg); each gets from Switchyard what it gets from the blue server. Towards the server,
 * Switchyard (server_tls = require) logs in with SCRAM-SHA-256-PLUS: the server checks the
 * binding itself, so a login that works proves it right, and Switchyard's log names the
 * mechanism.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <libpq-fe.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/support/harness.h"

#define ROLE "cb_user"
#define PASSWORD "Cb-user-pass-1k"

static struct h_env env;
static struct h_proxy proxy;
static SSL_CTX *tls_ctx;
static char auth_path[300];

/* ---- libpq ---- */

/* Connects with extra conninfo; returns the connection (caller finishes it). */
static PGconn *connect_with(int port, const char *extra)
{
    char ci[1024];
    snprintf(ci, sizeof(ci), "host=127.0.0.1 port=%d user=" ROLE " password=" PASSWORD
             " dbname=app connect_timeout=10 %s", port, extra);
    return PQconnectdb(ci);
}

/* libpq's error without "connection to server at ... failed: " (the port differs). */
static const char *error_text(PGconn *c)
{
    const char *e = PQerrorMessage(c);
    const char *f = strstr(e, "failed: ");
    return f ? f + strlen("failed: ") : e;
}

static int setup(void **state)
{
    (void)state;
    h_env_load(&env);
    if (!env.cert_dir[0])
        return -1;
    char ci[512];
    h_conninfo(ci, sizeof(ci), env.blue_port, env.pguser, NULL);
    PGconn *admin = PQconnectdb(ci);
    if (PQstatus(admin) != CONNECTION_OK)
        return -1;
    PQclear(PQexec(admin, "DROP ROLE IF EXISTS " ROLE));
    PQclear(PQexec(admin, "SET password_encryption = 'scram-sha-256'"));
    PGresult *r = PQexec(admin, "CREATE ROLE " ROLE " LOGIN PASSWORD '" PASSWORD "'");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    r = PQexec(admin, "SELECT rolpassword FROM pg_authid WHERE rolname = '" ROLE "'");
    ok = ok && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    snprintf(auth_path, sizeof(auth_path), "/tmp/sy-cb-users-%d.txt", (int)getpid());
    FILE *f = ok ? fopen(auth_path, "w") : NULL;
    if (f) {
        fprintf(f, "\"" ROLE "\" \"%s\"\n", PQgetvalue(r, 0, 0));
        fclose(f);
    }
    PQclear(r);
    PQfinish(admin);
    if (!f)
        return -1;
    char lines[2048];
    snprintf(lines, sizeof(lines),
             "auth_type = scram-sha-256\nauth_file = %s\nclient_tls = allow\n"
             "client_tls_cert = %s/server.crt\nclient_tls_key = %s/server.key\n",
             auth_path, env.cert_dir, env.cert_dir);
    struct h_proxy_opts o = {.switchyard_lines = lines,
                             .blue_lines = "server_tls = require\n",
                             .green_lines = "server_tls = require\n"};
    if (h_proxy_start_opts(&proxy, &env, env.blue_port, env.green_port, &o) != 0)
        return -1;
    tls_ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    SSL_CTX_free(tls_ctx);
    unlink(auth_path);
    return h_proxy_stop(&proxy, 10000) == 0 ? 0 : -1;
}

static void test_libpq_requires_binding_over_tls(void **state)
{
    (void)state;
    int ports[2] = {env.blue_port, proxy.port};
    for (int i = 0; i < 2; i++) {
        PGconn *c = connect_with(ports[i], "sslmode=require channel_binding=require");
        if (PQstatus(c) != CONNECTION_OK)
            fail_msg("%s: channel_binding=require over TLS failed: %s",
                     i ? "switchyard" : "the server", PQerrorMessage(c));
        PGresult *r = PQexec(c, "SELECT current_user, ssl FROM pg_stat_ssl "
                                "WHERE pid = pg_backend_pid()");
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        assert_string_equal(PQgetvalue(r, 0, 0), ROLE);
        /* Through Switchyard the server leg is TLS too (server_tls = require). */
        assert_string_equal(PQgetvalue(r, 0, 1), "t");
        PQclear(r);
        PQfinish(c);
    }
    /* Switchyard's own login into blue was bound to blue's certificate: blue checked it. */
    for (int i = 0; i < 100 && !h_log_contains(&proxy, "with SCRAM-SHA-256-PLUS"); i++)
        usleep(20000);
    assert_true(h_log_contains(&proxy, "logging into the blue server with SCRAM-SHA-256-PLUS "
                                       "(channel binding tls-server-end-point)"));
}

static void test_libpq_binding_on_plaintext_fails_as_on_the_server(void **state)
{
    (void)state;
    PGconn *direct = connect_with(env.blue_port, "sslmode=disable channel_binding=require");
    PGconn *via = connect_with(proxy.port, "sslmode=disable channel_binding=require");
    fprintf(stderr, "server:     %s\nswitchyard: %s\n", error_text(direct), error_text(via));
    assert_int_not_equal(PQstatus(direct), CONNECTION_OK);
    assert_int_not_equal(PQstatus(via), CONNECTION_OK);
    assert_non_null(strstr(error_text(direct), "channel binding"));
    assert_string_equal(error_text(via), error_text(direct));
    PQfinish(direct);
    PQfinish(via);
    /* Without a requirement, a plaintext leg logs in (SCRAM-SHA-256 only was offered). */
    PGconn *c = connect_with(proxy.port, "sslmode=disable channel_binding=prefer");
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQfinish(c);
}

/* ---- raw SCRAM over TLS ---- */

struct raw {
    int fd;
    SSL *ssl;
};

static int raw_send(struct raw *r, const void *b, size_t n)
{
    if (r->ssl)
        return SSL_write(r->ssl, b, (int)n) == (int)n ? 0 : -1;
    return h_send_all(r->fd, b, n);
}

/* Reads one whole message into buf; returns its length, or -1. */
static ssize_t raw_message(struct raw *r, uint8_t *buf, size_t cap)
{
    size_t len = 0, want = 5;
    while (len < want) {
        struct pollfd p = {.fd = r->fd, .events = POLLIN};
        if (!(r->ssl && SSL_pending(r->ssl) > 0) && poll(&p, 1, 5000) <= 0)
            return -1;
        int n = r->ssl ? SSL_read(r->ssl, buf + len, (int)(want - len))
                       : (int)recv(r->fd, buf + len, want - len, 0);
        if (n <= 0) {
            if (r->ssl && SSL_get_error(r->ssl, n) == SSL_ERROR_WANT_READ)
                continue;
            return -1;
        }
        len += (size_t)n;
        if (len == 5) {
            want = 1 + ((size_t)buf[1] << 24 | (size_t)buf[2] << 16 | (size_t)buf[3] << 8 | buf[4]);
            if (want > cap)
                return -1;
        }
    }
    return (ssize_t)len;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* Connects (TLS when tls), sends the StartupMessage and reads AuthenticationSASL into
 * mechs ("A,B"). Returns 0. */
static int raw_begin(struct raw *r, int port, int tls, char *mechs, size_t cap)
{
    r->ssl = NULL;
    r->fd = h_tcp_connect(port);
    if (tls) {
        uint8_t req[8], ans = 0;
        put32(req, 8);
        put32(req + 4, 80877103);
        if (h_send_all(r->fd, req, 8) != 0 || recv(r->fd, &ans, 1, 0) != 1 || ans != 'S')
            return -1;
        r->ssl = SSL_new(tls_ctx);
        SSL_set_fd(r->ssl, r->fd);
        if (SSL_connect(r->ssl) != 1)
            return -1;
    }
    uint8_t pkt[128];
    size_t n = h_startup(pkt, sizeof(pkt), ROLE, "app");
    uint8_t msg[1024];
    if (raw_send(r, pkt, n) != 0)
        return -1;
    ssize_t m = raw_message(r, msg, sizeof(msg));
    if (m < 9 || msg[0] != 'R' || msg[8] != 10)
        return -1;
    mechs[0] = 0;
    for (size_t p = 9; p < (size_t)m && msg[p]; p += strlen((char *)msg + p) + 1)
        snprintf(mechs + strlen(mechs), cap - strlen(mechs), "%s%s", mechs[0] ? "," : "",
                 (char *)msg + p);
    return 0;
}

/* Sends SASLInitialResponse(mech, data) and returns a summary of the answer: "E <code> <msg>",
 * or "R<code>" for an authentication request (server-first in *sfirst when given). */
static void raw_initial(struct raw *r, const char *mech, const char *data, char *out, size_t cap,
                        char *sfirst, size_t sf_cap)
{
    uint8_t msg[1024];
    size_t ml = strlen(mech) + 1, dl = strlen(data);
    size_t total = 5 + ml + 4 + dl;
    msg[0] = 'p';
    put32(msg + 1, (uint32_t)(total - 1));
    memcpy(msg + 5, mech, ml);
    put32(msg + 5 + ml, (uint32_t)dl);
    memcpy(msg + 9 + ml, data, dl);
    snprintf(out, cap, "(nothing)");
    if (raw_send(r, msg, total) != 0)
        return;
    ssize_t m = raw_message(r, msg, sizeof(msg));
    if (m < 5)
        return;
    if (msg[0] == 'R' && m >= 9) {
        snprintf(out, cap, "R%d", msg[8]);
        if (sfirst)
            snprintf(sfirst, sf_cap, "%.*s", (int)(m - 9), (char *)msg + 9);
        return;
    }
    char code[8] = "", text[400] = "";
    for (size_t f = 5; f < (size_t)m && msg[f];) {
        char t = (char)msg[f++];
        const char *v = (const char *)msg + f;
        if (t == 'C')
            snprintf(code, sizeof(code), "%s", v);
        else if (t == 'M')
            snprintf(text, sizeof(text), "%s", v);
        f += strlen(v) + 1;
    }
    snprintf(out, cap, "%c %s %s", msg[0], code, text);
}

static void raw_end(struct raw *r)
{
    if (r->ssl)
        SSL_free(r->ssl);
    close(r->fd);
}

/* One exchange against blue and against Switchyard: the mechanisms offered and the answer to
 * the initial response must be the same. */
static void compare_initial(const char *name, int tls, const char *mech, const char *data,
                            const char *want_mechs, const char *want)
{
    int ports[2] = {env.blue_port, proxy.port};
    for (int i = 0; i < 2; i++) {
        struct raw r;
        char mechs[200], got[500];
        assert_int_equal(raw_begin(&r, ports[i], tls, mechs, sizeof(mechs)), 0);
        raw_initial(&r, mech, data, got, sizeof(got), NULL, 0);
        raw_end(&r);
        fprintf(stderr, "%-28s %-10s offered %s; answered %s\n", name,
                i ? "switchyard" : "server", mechs, got);
        if (strcmp(mechs, want_mechs) != 0)
            fail_msg("%s (%s): offered %s, expected %s", name, i ? "switchyard" : "server", mechs,
                     want_mechs);
        if (strcmp(got, want) != 0)
            fail_msg("%s (%s): answered \"%s\", expected \"%s\"", name,
                     i ? "switchyard" : "server", got, want);
    }
}

static void test_raw_negotiation(void **state)
{
    (void)state;
    const char *both = "SCRAM-SHA-256-PLUS,SCRAM-SHA-256";
    /* The downgrade: a client able to bind was told the server cannot (y), over TLS. */
    compare_initial("y on TLS (downgrade)", 1, "SCRAM-SHA-256", "y,,n=,r=abcdefgh", both,
                    "E 28000 SCRAM channel binding negotiation error");
    compare_initial("PLUS with flag n", 1, "SCRAM-SHA-256-PLUS", "n,,n=,r=abcdefgh", both,
                    "E 08P01 malformed SCRAM message");
    compare_initial("plain with flag p", 1, "SCRAM-SHA-256",
                    "p=tls-server-end-point,,n=,r=abcdefgh", both,
                    "E 08P01 malformed SCRAM message");
    compare_initial("PLUS with tls-unique", 1, "SCRAM-SHA-256-PLUS",
                    "p=tls-unique,,n=,r=abcdefgh", both,
                    "E 08P01 unsupported SCRAM channel-binding type \"tls-unique\"");
    /* Plaintext: only SCRAM-SHA-256 is offered; PLUS is then no mechanism at all, and y is
     * fine (the server really cannot bind here). */
    compare_initial("PLUS on plaintext", 0, "SCRAM-SHA-256-PLUS",
                    "p=tls-server-end-point,,n=,r=abcdefgh", "SCRAM-SHA-256",
                    "E 08P01 client selected an invalid SASL authentication mechanism");
    compare_initial("y on plaintext", 0, "SCRAM-SHA-256", "y,,n=,r=abcdefgh", "SCRAM-SHA-256",
                    "R11");
}

/* Binding data for another certificate (what a client behind a man in the middle sends):
 * refused before the proof is looked at. */
static void test_raw_wrong_binding(void **state)
{
    (void)state;
    int ports[2] = {env.blue_port, proxy.port};
    char answers[2][500];
    for (int i = 0; i < 2; i++) {
        struct raw r;
        char mechs[200], got[500], sfirst[600];
        assert_int_equal(raw_begin(&r, ports[i], 1, mechs, sizeof(mechs)), 0);
        raw_initial(&r, "SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=,r=abcdefgh", got,
                    sizeof(got), sfirst, sizeof(sfirst));
        assert_string_equal(got, "R11");
        /* r= is the first attribute of server-first: echo the whole nonce. */
        char nonce[300];
        assert_int_equal(strncmp(sfirst, "r=", 2), 0);
        snprintf(nonce, sizeof(nonce), "%.*s", (int)strcspn(sfirst + 2, ","), sfirst + 2);
        /* c= is base64("p=tls-server-end-point,," + 32 zero bytes); the proof is zeros too. */
        char final[800];
        snprintf(final, sizeof(final),
                 "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCwsAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
                 ",r=%s,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                 nonce);
        uint8_t msg[1024];
        size_t fl = strlen(final);
        msg[0] = 'p';
        put32(msg + 1, (uint32_t)(4 + fl));
        memcpy(msg + 5, final, fl);
        assert_int_equal(raw_send(&r, msg, 5 + fl), 0);
        ssize_t m = raw_message(&r, msg, sizeof(msg));
        char code[8] = "", text[400] = "";
        for (size_t f = 5; m > 5 && f < (size_t)m && msg[f];) {
            char t = (char)msg[f++];
            const char *v = (const char *)msg + f;
            if (t == 'C')
                snprintf(code, sizeof(code), "%s", v);
            else if (t == 'M')
                snprintf(text, sizeof(text), "%s", v);
            f += strlen(v) + 1;
        }
        snprintf(answers[i], sizeof(answers[i]), "%c %s %s", m > 0 ? msg[0] : '-', code, text);
        fprintf(stderr, "wrong binding data %-10s answered %s\n", i ? "switchyard" : "server",
                answers[i]);
        raw_end(&r);
    }
    assert_string_equal(answers[0], "E 28000 SCRAM channel binding check failed");
    assert_string_equal(answers[1], answers[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_libpq_requires_binding_over_tls),
        cmocka_unit_test(test_libpq_binding_on_plaintext_fails_as_on_the_server),
        cmocka_unit_test(test_raw_negotiation),
        cmocka_unit_test(test_raw_wrong_binding),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
