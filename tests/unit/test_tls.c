/*
 * Unit tests for the TLS engine (proxy/tls.c).
 *
 * Everything runs in one process: a server engine and a client engine (or a raw OpenSSL peer,
 * for behaviour our engine never shows, such as offering no ALPN or asking for a KeyUpdate)
 * hand each other their ciphertext through memory, whole or one byte at a time.
 *
 * Usage: test_tls MAKE_CERTS_SCRIPT (or SY_MAKE_CERTS in the environment). The group setup runs
 * tests/support/make_certs.sh into a fresh temporary directory and the teardown removes it.
 */
#define _GNU_SOURCE /* nftw */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "proxy/tls.h"

static const char *g_script;
static char g_dir[256];

/* Path of a file in the certificate directory (a small ring of buffers, so several fit in one
 * call). */
static const char *P(const char *name)
{
    static char ring[8][512];
    static int i;
    char *b = ring[i++ % 8];
    snprintf(b, sizeof(ring[0]), "%s/%s", g_dir, name);
    return b;
}

#define assert_contains(hay, needle)                                                             \
    do {                                                                                         \
        const char *h_ = (hay), *n_ = (needle);                                                  \
        if (!h_ || !strstr(h_, n_))                                                              \
            fail_msg("'%s' does not contain '%s'", h_ ? h_ : "(null)", n_);                      \
    } while (0)

/* ---- endpoints ---- */

/* One side of an in-memory connection: our engine, or a raw OpenSSL SSL over memory BIOs. */
struct end {
    struct sy_tls_conn *tls;
    SSL *raw;
    BIO *rin, *rout;
    int copy_out; /* engine: move output with sy_tls_take_out instead of peek/consume */
    int in_space; /* engine: receive through sy_tls_in_space/commit instead of sy_tls_feed */
    int rc;       /* the last handshake result */
    char err[256];
};

static void end_engine(struct end *e, struct sy_tls_ctx *ctx, const char *host)
{
    memset(e, 0, sizeof(*e));
    char err[256] = "";
    e->tls = sy_tls_conn_new(ctx, host, err, sizeof(err));
    if (!e->tls)
        fail_msg("sy_tls_conn_new: %s", err);
}

static void end_raw(struct end *e, SSL_CTX *rctx, int server)
{
    memset(e, 0, sizeof(*e));
    e->raw = SSL_new(rctx);
    e->rin = BIO_new(BIO_s_mem());
    e->rout = BIO_new(BIO_s_mem());
    assert_non_null(e->raw);
    BIO_set_mem_eof_return(e->rin, -1);
    SSL_set_bio(e->raw, e->rin, e->rout);
    if (server)
        SSL_set_accept_state(e->raw);
    else
        SSL_set_connect_state(e->raw);
}

static void end_free(struct end *e)
{
    sy_tls_conn_free(e->tls);
    SSL_free(e->raw);
    memset(e, 0, sizeof(*e));
}

static void raw_error(struct end *e)
{
    unsigned long x = ERR_get_error();
    const char *r = x ? ERR_reason_error_string(x) : NULL;
    snprintf(e->err, sizeof(e->err), "%s", r ? r : "(no reason)");
    ERR_clear_error();
}

static int end_handshake(struct end *e)
{
    if (e->tls) {
        e->rc = sy_tls_handshake(e->tls);
        if (e->rc < 0)
            snprintf(e->err, sizeof(e->err), "%s", sy_tls_conn_error(e->tls));
        return e->rc;
    }
    int r = SSL_do_handshake(e->raw);
    if (r == 1)
        return e->rc = SY_TLS_DONE;
    int x = SSL_get_error(e->raw, r);
    if (x == SSL_ERROR_WANT_READ || x == SSL_ERROR_WANT_WRITE)
        return e->rc = SY_TLS_WANT_MORE;
    raw_error(e);
    return e->rc = SY_TLS_E_FAILED;
}

static void end_feed(struct end *e, const uint8_t *p, size_t n)
{
    if (e->raw) {
        assert_int_equal(BIO_write(e->rin, p, (int)n), (int)n);
    } else if (e->in_space) {
        size_t cap = 0;
        uint8_t *room = sy_tls_in_space(e->tls, n, &cap);
        assert_non_null(room);
        assert_true(cap >= n);
        memcpy(room, p, n);
        sy_tls_in_commit(e->tls, n);
    } else {
        assert_int_equal(sy_tls_feed(e->tls, p, n), 0);
    }
}

/* Moves up to limit bytes (0: all) of from's ciphertext into to. Returns the count. */
static size_t shuttle(struct end *from, struct end *to, size_t limit)
{
    size_t moved = 0;
    if (limit == 0)
        limit = SIZE_MAX;
    while (moved < limit) {
        uint8_t buf[4096];
        const uint8_t *p = buf;
        size_t want = limit - moved, n;
        if (from->tls && !from->copy_out) {
            /* Zero-copy: feed straight from the engine's output chunk. */
            n = sy_tls_out_peek(from->tls, &p);
            if (n > want)
                n = want;
            if (n == 0)
                break;
            end_feed(to, p, n);
            sy_tls_out_consume(from->tls, n);
        } else {
            if (want > sizeof(buf))
                want = sizeof(buf);
            if (from->tls) {
                n = sy_tls_take_out(from->tls, buf, want);
            } else {
                int r = BIO_read(from->rout, buf, (int)want);
                n = r > 0 ? (size_t)r : 0;
            }
            if (n == 0)
                break;
            end_feed(to, buf, n);
        }
        moved += n;
    }
    return moved;
}

/* Runs the handshake between c and s, moving chunk bytes at a time each way (0: all), until
 * nothing moves any more. The results are in c->rc and s->rc. */
static void run_handshake(struct end *c, struct end *s, size_t chunk)
{
    c->rc = s->rc = SY_TLS_WANT_MORE;
    for (int i = 0; i < 1000000; i++) {
        if (c->rc == SY_TLS_WANT_MORE)
            end_handshake(c);
        if (s->rc == SY_TLS_WANT_MORE)
            end_handshake(s);
        size_t moved = shuttle(c, s, chunk) + shuttle(s, c, chunk);
        if (moved == 0)
            return;
    }
    fail_msg("handshake did not settle");
}

static ssize_t end_write(struct end *e, const uint8_t *p, size_t n)
{
    if (e->tls)
        return sy_tls_write(e->tls, p, n);
    size_t w = 0;
    return SSL_write_ex(e->raw, p, n, &w) == 1 ? (ssize_t)w : -1;
}

static ssize_t end_read(struct end *e, uint8_t *out, size_t cap)
{
    if (e->tls)
        return sy_tls_read(e->tls, out, cap);
    size_t n = 0;
    if (SSL_read_ex(e->raw, out, cap, &n) == 1)
        return (ssize_t)n;
    int x = SSL_get_error(e->raw, 0);
    if (x == SSL_ERROR_WANT_READ)
        return 0;
    if (x == SSL_ERROR_ZERO_RETURN)
        return SY_TLS_E_CLOSED;
    raw_error(e);
    return SY_TLS_E_FAILED;
}

static void fill_pattern(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (uint8_t)x;
    }
}

/*
 * Sends len bytes from a to b: a writes wpiece bytes per step (0: all at once), ciphertext
 * crosses chunk bytes per step (0: all), b reads at most readcap per call. Checks that exactly
 * the bytes sent arrive.
 */
static void transfer(struct end *a, struct end *b, size_t len, size_t wpiece, size_t chunk,
                     size_t readcap, uint32_t seed)
{
    uint8_t *src = malloc(len), *dst = malloc(len);
    assert_non_null(src);
    assert_non_null(dst);
    fill_pattern(src, len, seed);
    size_t sent = 0, got = 0;
    while (got < len) {
        size_t progress = 0;
        if (sent < len) {
            size_t k = wpiece && wpiece < len - sent ? wpiece : len - sent;
            assert_int_equal(end_write(a, src + sent, k), (ssize_t)k);
            sent += k;
            progress += k;
        }
        progress += shuttle(a, b, chunk);
        for (;;) {
            size_t cap = len - got < readcap ? len - got : readcap;
            if (cap == 0)
                break;
            ssize_t r = end_read(b, dst + got, cap);
            if (r == 0)
                break;
            if (r < 0)
                fail_msg("read failed: %zd %s", r, b->tls ? sy_tls_conn_error(b->tls) : b->err);
            got += (size_t)r;
            progress += (size_t)r;
        }
        progress += shuttle(b, a, 0); /* anything b answers (KeyUpdate) */
        if (progress == 0)
            fail_msg("transfer stuck at %zu of %zu bytes", got, len);
    }
    assert_int_equal(got, len);
    assert_memory_equal(src, dst, len);
    free(src);
    free(dst);
}

/* ---- contexts used by many tests ---- */

static struct sy_tls_ctx *server_ctx(const char *cert, const char *key, const char *ca,
                                     int require, enum sy_tls_alpn alpn)
{
    char err[512] = "";
    struct sy_tls_ctx *ctx = sy_tls_ctx_new_server(cert, key, ca, require, alpn, err, sizeof(err));
    if (!ctx)
        fail_msg("server context: %s", err);
    return ctx;
}

static struct sy_tls_ctx *client_ctx(const char *ca, enum sy_tls_mode mode)
{
    char err[512] = "";
    struct sy_tls_ctx *ctx = sy_tls_ctx_new_client(ca, mode, err, sizeof(err));
    if (!ctx)
        fail_msg("client context: %s", err);
    return ctx;
}

static struct sy_tls_ctx *default_server(void)
{
    return server_ctx(P("server.crt"), P("server.key"), NULL, 0, SY_TLS_ALPN_STRICT);
}

/* A raw OpenSSL client: alpn in wire form (NULL: none), optional client certificate, and the
 * highest protocol version (0: any). */
static SSL_CTX *raw_client_ctx(const unsigned char *alpn, size_t alpn_len, const char *cert,
                               const char *key, int max_version)
{
    SSL_CTX *s = SSL_CTX_new(TLS_client_method());
    assert_non_null(s);
    SSL_CTX_set_verify(s, SSL_VERIFY_NONE, NULL);
    if (alpn)
        assert_int_equal(SSL_CTX_set_alpn_protos(s, alpn, (unsigned)alpn_len), 0);
    if (cert) {
        assert_int_equal(SSL_CTX_use_certificate_file(s, cert, SSL_FILETYPE_PEM), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey_file(s, key, SSL_FILETYPE_PEM), 1);
    }
    if (max_version) {
        SSL_CTX_set_security_level(s, 0);
        SSL_CTX_set_min_proto_version(s, 0);
        SSL_CTX_set_max_proto_version(s, max_version);
    }
    return s;
}

/* A raw OpenSSL server with the test server certificate and no ALPN callback. */
static SSL_CTX *raw_server_ctx(void)
{
    SSL_CTX *s = SSL_CTX_new(TLS_server_method());
    assert_non_null(s);
    assert_int_equal(SSL_CTX_use_certificate_file(s, P("server.crt"), SSL_FILETYPE_PEM), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(s, P("server.key"), SSL_FILETYPE_PEM), 1);
    SSL_CTX_set_num_tickets(s, 0);
    return s;
}

/* Connects an engine client (mode, CA, host) to an engine server on sctx; expects both sides
 * to finish. chunk as in run_handshake. */
static void connect_ok(struct end *c, struct end *s, struct sy_tls_ctx *sctx, const char *ca,
                       enum sy_tls_mode mode, const char *host, size_t chunk)
{
    struct sy_tls_ctx *cctx = client_ctx(ca, mode);
    end_engine(c, cctx, host);
    end_engine(s, sctx, NULL);
    sy_tls_ctx_free(cctx);
    run_handshake(c, s, chunk);
    if (c->rc != SY_TLS_DONE || s->rc != SY_TLS_DONE)
        fail_msg("handshake: client rc=%d '%s', server rc=%d '%s'", c->rc, c->err, s->rc, s->err);
}

/* Connects an engine client to an engine server and expects the client to fail with a
 * message containing want. */
static void connect_fails(struct sy_tls_ctx *sctx, const char *ca, enum sy_tls_mode mode,
                          const char *host, const char *want, const char *want_server)
{
    struct end c, s;
    struct sy_tls_ctx *cctx = client_ctx(ca, mode);
    end_engine(&c, cctx, host);
    end_engine(&s, sctx, NULL);
    sy_tls_ctx_free(cctx);
    run_handshake(&c, &s, 0);
    assert_int_equal(c.rc, SY_TLS_E_FAILED);
    assert_contains(c.err, want);
    if (want_server) {
        /* The client's alert reached the server and failed it with a reason. */
        assert_int_equal(s.rc, SY_TLS_E_FAILED);
        assert_contains(s.err, want_server);
    }
    assert_int_equal(ERR_peek_error(), 0);
    end_free(&c);
    end_free(&s);
}

/* ---- handshakes ---- */

static void check_session(struct end *c, struct end *s, enum sy_tls_mode mode)
{
    char d[128], subj[256];
    sy_tls_describe(c->tls, d, sizeof(d));
    assert_contains(d, "TLSv1.3 TLS_");
    sy_tls_describe(s->tls, d, sizeof(d));
    assert_contains(d, "TLSv1.3 TLS_");
    assert_true(sy_tls_alpn_ok(c->tls));
    assert_true(sy_tls_alpn_ok(s->tls));
    assert_true(sy_tls_alpn_offered(s->tls));
    assert_int_equal(sy_tls_peer_cert_subject(c->tls, subj, sizeof(subj)), 0);
    assert_string_equal(subj, "CN=localhost");
    assert_int_equal(sy_tls_peer_cert_subject(s->tls, subj, sizeof(subj)), -1);
    assert_string_equal(subj, "");
    assert_int_equal(sy_tls_peer_verified(c->tls), mode >= SY_TLS_VERIFY_CA);
    assert_int_equal(sy_tls_peer_verified(s->tls), 0);
    transfer(c, s, 5, 0, 0, 100, 1);
    transfer(s, c, 5, 0, 0, 100, 2);
}

static void test_each_mode_succeeds(void **state)
{
    struct sy_tls_ctx *sctx = default_server();
    enum sy_tls_mode modes[] = {SY_TLS_PREFER, SY_TLS_REQUIRE, SY_TLS_VERIFY_CA, SY_TLS_VERIFY_FULL};
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        for (size_t chunk = 0; chunk <= 1; chunk++) { /* whole flights, then one byte at a time */
            struct end c, s;
            connect_ok(&c, &s, sctx, P("ca.crt"), modes[i], "localhost", chunk);
            check_session(&c, &s, modes[i]);
            end_free(&c);
            end_free(&s);
        }
    }
    sy_tls_ctx_free(sctx);
}

static void test_byte_at_a_time_with_buffer_variants(void **state)
{
    /* Copying output and zero-copy input on one side, the opposite on the other. */
    struct sy_tls_ctx *sctx = default_server();
    struct sy_tls_ctx *cctx = client_ctx(P("ca.crt"), SY_TLS_VERIFY_FULL);
    struct end c, s;
    end_engine(&c, cctx, "localhost");
    end_engine(&s, sctx, NULL);
    c.copy_out = 1;
    s.in_space = 1;
    run_handshake(&c, &s, 1);
    assert_int_equal(c.rc, SY_TLS_DONE);
    assert_int_equal(s.rc, SY_TLS_DONE);
    transfer(&c, &s, 40000, 0, 1, 333, 3);
    transfer(&s, &c, 40000, 1000, 1, 40000, 4);
    end_free(&c);
    end_free(&s);
    sy_tls_ctx_free(cctx);
    sy_tls_ctx_free(sctx);
}

static void test_verify_ca_wrong_ca_fails(void **state)
{
    struct sy_tls_ctx *sctx = default_server();
    /* The client trusts an unrelated CA. */
    connect_fails(sctx, P("wrong-ca.crt"), SY_TLS_VERIFY_CA, "localhost",
                  "certificate verify failed: unable to get local issuer certificate",
                  "tlsv1 alert unknown ca");
    connect_fails(sctx, P("wrong-ca.crt"), SY_TLS_VERIFY_FULL, "localhost",
                  "certificate verify failed: unable to get local issuer certificate", NULL);
    /* Without verification the same pairing works. */
    for (enum sy_tls_mode m = SY_TLS_PREFER; m <= SY_TLS_REQUIRE; m++) {
        struct end c, s;
        connect_ok(&c, &s, sctx, P("wrong-ca.crt"), m, "db.example.com", 0);
        assert_int_equal(sy_tls_peer_verified(c.tls), 0);
        end_free(&c);
        end_free(&s);
    }
    sy_tls_ctx_free(sctx);
    /* The server presents a certificate from the wrong CA. */
    sctx = server_ctx(P("wrong-server.crt"), P("wrong-server.key"), NULL, 0, SY_TLS_ALPN_STRICT);
    connect_fails(sctx, P("ca.crt"), SY_TLS_VERIFY_CA, "localhost",
                  "certificate verify failed: unable to get local issuer certificate",
                  "unknown ca");
    sy_tls_ctx_free(sctx);
}

static void test_expired_certificate_fails(void **state)
{
    struct sy_tls_ctx *sctx = server_ctx(P("expired.crt"), P("expired.key"), NULL, 0,
                                         SY_TLS_ALPN_STRICT);
    connect_fails(sctx, P("ca.crt"), SY_TLS_VERIFY_CA, "localhost",
                  "certificate verify failed: certificate has expired", "certificate expired");
    struct end c, s;
    connect_ok(&c, &s, sctx, P("ca.crt"), SY_TLS_REQUIRE, "localhost", 0);
    end_free(&c);
    end_free(&s);
    sy_tls_ctx_free(sctx);
}

static void test_verify_full_host_mismatch_fails(void **state)
{
    struct sy_tls_ctx *sctx = default_server();
    connect_fails(sctx, P("ca.crt"), SY_TLS_VERIFY_FULL, "db.example.com",
                  "certificate verify failed: hostname mismatch (the server certificate is not "
                  "for \"db.example.com\")",
                  "bad certificate");
    connect_fails(sctx, P("ca.crt"), SY_TLS_VERIFY_FULL, "127.0.0.2",
                  "certificate verify failed: IP address mismatch", NULL);
    connect_fails(sctx, P("ca.crt"), SY_TLS_VERIFY_FULL, "::1",
                  "certificate verify failed: IP address mismatch", NULL);
    /* A partial label is not a wildcard, and "localhost.evil" is another name. */
    connect_fails(sctx, P("ca.crt"), SY_TLS_VERIFY_FULL, "localhost.evil", "hostname mismatch",
                  NULL);
    /* verify-ca checks the chain only. */
    struct end c, s;
    connect_ok(&c, &s, sctx, P("ca.crt"), SY_TLS_VERIFY_CA, "db.example.com", 0);
    assert_int_equal(sy_tls_peer_verified(c.tls), 1);
    end_free(&c);
    end_free(&s);
    /* verify-full without a host is refused up front. */
    struct sy_tls_ctx *cctx = client_ctx(P("ca.crt"), SY_TLS_VERIFY_FULL);
    char err[256] = "";
    assert_null(sy_tls_conn_new(cctx, NULL, err, sizeof(err)));
    assert_string_equal(err, "TLS mode verify-full needs the server's host name");
    assert_null(sy_tls_conn_new(cctx, "", err, sizeof(err)));
    sy_tls_ctx_free(cctx);
    sy_tls_ctx_free(sctx);
}

static void test_verify_full_ip_and_name_succeed(void **state)
{
    struct sy_tls_ctx *sctx = default_server();
    const char *hosts[] = {"localhost", "127.0.0.1", "LocalHost"};
    for (size_t i = 0; i < 3; i++) {
        struct end c, s;
        connect_ok(&c, &s, sctx, P("ca.crt"), SY_TLS_VERIFY_FULL, hosts[i], i == 1);
        assert_int_equal(sy_tls_peer_verified(c.tls), 1);
        end_free(&c);
        end_free(&s);
    }
    sy_tls_ctx_free(sctx);
}

/* ---- ALPN ---- */

static void raw_client_vs_server(const unsigned char *alpn, size_t alpn_len,
                                 enum sy_tls_alpn mode, struct end *c, struct end *s)
{
    SSL_CTX *rc = raw_client_ctx(alpn, alpn_len, NULL, NULL, 0);
    struct sy_tls_ctx *sctx = server_ctx(P("server.crt"), P("server.key"), NULL, 0, mode);
    end_raw(c, rc, 0);
    end_engine(s, sctx, NULL);
    SSL_CTX_free(rc);
    sy_tls_ctx_free(sctx);
    run_handshake(c, s, 0);
}

static void test_alpn(void **state)
{
    struct end c, s;
    /* No ALPN at all: the handshake completes and the caller sees that none was offered. */
    raw_client_vs_server(NULL, 0, SY_TLS_ALPN_STRICT, &c, &s);
    assert_int_equal(s.rc, SY_TLS_DONE);
    assert_int_equal(sy_tls_alpn_offered(s.tls), 0);
    assert_int_equal(sy_tls_alpn_ok(s.tls), 0);
    end_free(&c);
    end_free(&s);

    /* Another protocol only: strict refuses, lenient carries on without ALPN. */
    static const unsigned char http[] = "\x08http/1.1";
    raw_client_vs_server(http, sizeof(http) - 1, SY_TLS_ALPN_STRICT, &c, &s);
    assert_int_equal(s.rc, SY_TLS_E_FAILED);
    assert_string_equal(s.err, "no application protocol");
    assert_int_equal(c.rc, SY_TLS_E_FAILED);
    assert_string_equal(c.err, "tlsv1 alert no application protocol");
    end_free(&c);
    end_free(&s);
    raw_client_vs_server(http, sizeof(http) - 1, SY_TLS_ALPN_LENIENT, &c, &s);
    assert_int_equal(s.rc, SY_TLS_DONE);
    assert_int_equal(sy_tls_alpn_offered(s.tls), 1);
    assert_int_equal(sy_tls_alpn_ok(s.tls), 0);
    end_free(&c);
    end_free(&s);

    /* "postgresql" among others is picked. */
    static const unsigned char both[] = "\x08http/1.1\x0apostgresql";
    raw_client_vs_server(both, sizeof(both) - 1, SY_TLS_ALPN_STRICT, &c, &s);
    assert_int_equal(s.rc, SY_TLS_DONE);
    assert_int_equal(sy_tls_alpn_ok(s.tls), 1);
    const unsigned char *sel = NULL;
    unsigned int sellen = 0;
    SSL_get0_alpn_selected(c.raw, &sel, &sellen);
    assert_int_equal(sellen, 10);
    assert_memory_equal(sel, "postgresql", 10);
    end_free(&c);
    end_free(&s);

    /* Our client offers it; a server that ignores ALPN leaves alpn_ok at 0. */
    SSL_CTX *rs = raw_server_ctx();
    struct sy_tls_ctx *cctx = client_ctx(NULL, SY_TLS_REQUIRE);
    end_engine(&c, cctx, "localhost");
    end_raw(&s, rs, 1);
    run_handshake(&c, &s, 0);
    assert_int_equal(c.rc, SY_TLS_DONE);
    assert_int_equal(s.rc, SY_TLS_DONE);
    assert_int_equal(sy_tls_alpn_ok(c.tls), 0);
    /* SNI went out for a host name. */
    assert_string_equal(SSL_get_servername(s.raw, TLSEXT_NAMETYPE_host_name), "localhost");
    end_free(&c);
    end_free(&s);
    /* ... but not for an address. */
    end_engine(&c, cctx, "127.0.0.1");
    end_raw(&s, rs, 1);
    run_handshake(&c, &s, 0);
    assert_int_equal(c.rc, SY_TLS_DONE);
    assert_null(SSL_get_servername(s.raw, TLSEXT_NAMETYPE_host_name));
    end_free(&c);
    end_free(&s);
    sy_tls_ctx_free(cctx);
    SSL_CTX_free(rs);
}

/* ---- client certificates ---- */

static void raw_cert_client(struct sy_tls_ctx *sctx, const char *cert, const char *key,
                            struct end *c, struct end *s)
{
    static const unsigned char pg[] = "\x0apostgresql";
    SSL_CTX *rc = raw_client_ctx(pg, sizeof(pg) - 1, cert, key, 0);
    end_raw(c, rc, 0);
    end_engine(s, sctx, NULL);
    SSL_CTX_free(rc);
    run_handshake(c, s, 0);
    /* TLS 1.3: the client finishes before the server has judged its certificate, so the
     * server's verdict (an alert) arrives on the client's first read. */
    uint8_t b[16];
    end_read(c, b, sizeof(b));
    shuttle(c, s, 0);
}

static void test_client_certificates(void **state)
{
    struct end c, s;
    char subj[256];
    struct sy_tls_ctx *req = server_ctx(P("server.crt"), P("server.key"), P("ca.crt"), 1,
                                        SY_TLS_ALPN_STRICT);
    raw_cert_client(req, P("client.crt"), P("client.key"), &c, &s);
    assert_int_equal(s.rc, SY_TLS_DONE);
    assert_int_equal(sy_tls_peer_cert_subject(s.tls, subj, sizeof(subj)), 0);
    assert_string_equal(subj, "CN=postgres");
    assert_int_equal(sy_tls_peer_verified(s.tls), 1);
    end_free(&c);
    end_free(&s);

    raw_cert_client(req, NULL, NULL, &c, &s);
    assert_int_equal(s.rc, SY_TLS_E_FAILED);
    assert_string_equal(s.err, "peer did not return a certificate");
    end_free(&c);
    end_free(&s);

    raw_cert_client(req, P("wrong-server.crt"), P("wrong-server.key"), &c, &s);
    assert_int_equal(s.rc, SY_TLS_E_FAILED);
    assert_string_equal(s.err, "certificate verify failed: unable to get local issuer certificate");
    end_free(&c);
    end_free(&s);
    sy_tls_ctx_free(req);

    /* With a CA but not required, a client without a certificate gets in unverified. */
    struct sy_tls_ctx *opt = server_ctx(P("server.crt"), P("server.key"), P("ca.crt"), 0,
                                        SY_TLS_ALPN_STRICT);
    raw_cert_client(opt, NULL, NULL, &c, &s);
    assert_int_equal(s.rc, SY_TLS_DONE);
    assert_int_equal(sy_tls_peer_cert_subject(s.tls, subj, sizeof(subj)), -1);
    assert_int_equal(sy_tls_peer_verified(s.tls), 0);
    end_free(&c);
    end_free(&s);
    sy_tls_ctx_free(opt);
}

/* ---- data ---- */

static void test_one_mib_each_way(void **state)
{
    struct sy_tls_ctx *sctx = default_server();
    struct end c, s;
    connect_ok(&c, &s, sctx, P("ca.crt"), SY_TLS_VERIFY_FULL, "localhost", 0);
    const size_t mib = 1024 * 1024;
    /* One 1 MiB write; ciphertext crosses 3000 bytes at a time (a socket taking part of a
     * write); small reads split records. */
    s.in_space = 1;
    transfer(&c, &s, mib, 0, 3000, 777, 5);
    /* The other way: many odd-sized writes, copied output, reads larger than a record. */
    c.copy_out = 1;
    transfer(&s, &c, mib, 12345, 0, 65536, 6);
    /* Both at once: each side writes before either reads. */
    uint8_t *a = malloc(mib), *b = malloc(mib), *got = malloc(mib);
    fill_pattern(a, mib, 7);
    fill_pattern(b, mib, 8);
    assert_int_equal(sy_tls_write(c.tls, a, mib), (ssize_t)mib);
    assert_int_equal(sy_tls_write(s.tls, b, mib), (ssize_t)mib);
    assert_true(sy_tls_pending_out(c.tls) > mib);
    shuttle(&c, &s, 0);
    shuttle(&s, &c, 0);
    size_t n = 0;
    ssize_t r;
    while (n < mib && (r = sy_tls_read(s.tls, got + n, mib - n)) > 0)
        n += (size_t)r;
    assert_int_equal(n, mib);
    assert_memory_equal(got, a, mib);
    n = 0;
    while (n < mib && (r = sy_tls_read(c.tls, got + n, mib - n)) > 0)
        n += (size_t)r;
    assert_int_equal(n, mib);
    assert_memory_equal(got, b, mib);
    free(a);
    free(b);
    free(got);
    end_free(&c);
    end_free(&s);
    sy_tls_ctx_free(sctx);
}

static void test_out_peek_is_stable(void **state)
{
    struct sy_tls_ctx *sctx = default_server();
    struct end c, s;
    connect_ok(&c, &s, sctx, P("ca.crt"), SY_TLS_REQUIRE, "localhost", 0);
    uint8_t *data = malloc(300000);
    fill_pattern(data, 300000, 9);
    assert_int_equal(sy_tls_write(c.tls, data, 10000), 10000);
    const uint8_t *p1, *p2;
    size_t n1 = sy_tls_out_peek(c.tls, &p1);
    assert_true(n1 > 10000);
    uint8_t *copy = malloc(n1);
    memcpy(copy, p1, n1);
    /* Like a queued uv_write: more output arrives while the first run is outstanding. */
    sy_tls_out_consume(c.tls, 100);
    assert_int_equal(sy_tls_write(c.tls, data + 10000, 290000), 290000);
    size_t n2 = sy_tls_out_peek(c.tls, &p2);
    assert_ptr_equal(p2, p1 + 100);
    assert_true(n2 >= n1 - 100);
    assert_memory_equal(p1, copy, n1); /* untouched */
    /* Hand the ciphertext over in its original order and check the plaintext. */
    end_feed(&s, copy, n1);
    sy_tls_out_consume(c.tls, n1 - 100);
    shuttle(&c, &s, 0);
    assert_int_equal(sy_tls_pending_out(c.tls), 0);
    assert_int_equal(sy_tls_out_peek(c.tls, &p2), 0);
    assert_null(p2);
    uint8_t *got = malloc(300000);
    size_t n = 0;
    ssize_t r;
    while (n < 300000 && (r = sy_tls_read(s.tls, got + n, 300000 - n)) > 0)
        n += (size_t)r;
    assert_int_equal(n, 300000);
    assert_memory_equal(got, data, 300000);
    free(got);
    free(copy);
    free(data);
    end_free(&c);
    end_free(&s);
    sy_tls_ctx_free(sctx);
}

static void test_has_buffered(void **state)
{
    struct sy_tls_ctx *sctx = default_server();
    struct end c, s;
    connect_ok(&c, &s, sctx, P("ca.crt"), SY_TLS_REQUIRE, "localhost", 0);
    assert_int_equal(sy_tls_has_buffered(s.tls), 0);
    uint8_t data[16000], got[16000];
    fill_pattern(data, sizeof(data), 10);
    assert_int_equal(sy_tls_write(c.tls, data, sizeof(data)), (ssize_t)sizeof(data));
    shuttle(&c, &s, 0);
    assert_int_equal(sy_tls_has_buffered(s.tls), 1); /* ciphertext not yet read */
    assert_int_equal(sy_tls_read(s.tls, got, 100), 100);
    assert_int_equal(sy_tls_has_buffered(s.tls), 1); /* decrypted, not yet taken */
    size_t n = 100;
    ssize_t r;
    while ((r = sy_tls_read(s.tls, got + n, sizeof(got) - n)) > 0)
        n += (size_t)r;
    assert_int_equal(r, 0);
    assert_int_equal(n, sizeof(data));
    assert_memory_equal(got, data, sizeof(data));
    assert_int_equal(sy_tls_has_buffered(s.tls), 0);
    end_free(&c);
    end_free(&s);
    sy_tls_ctx_free(sctx);
}

/* ---- bad input ---- */

static void expect_failed_everywhere(struct sy_tls_conn *t)
{
    uint8_t b[64];
    assert_int_equal(sy_tls_handshake(t), SY_TLS_E_FAILED);
    assert_int_equal(sy_tls_read(t, b, sizeof(b)), SY_TLS_E_FAILED);
    assert_int_equal(sy_tls_write(t, b, sizeof(b)), SY_TLS_E_FAILED);
    assert_int_equal(sy_tls_shutdown(t), SY_TLS_E_FAILED);
    assert_true(sy_tls_conn_error(t)[0] != '\0');
}

static void test_garbage_to_server(void **state)
{
    static const struct {
        const char *what;
        const char *bytes;
        size_t len;
        const char *want; /* expected reason, NULL: any */
    } cases[] = {
        {"http", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27, "http request"},
        {"pg SSLRequest", "\x00\x00\x00\x08\x04\xd2\x16\x2f", 8, "wrong version number"},
        {"pg startup", "\x00\x00\x00\x17\x00\x03\x00\x00user\x00postgres\x00\x00", 23,
         "wrong version number"},
        {"zeros", "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 10, "wrong version number"},
        {"huge record", "\x16\x03\x01\xff\xff", 5, "packet length too long"},
        {"bogus client hello", "\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00", 13, NULL},
        {"application data first", "\x17\x03\x03\x00\x05hello", 10, NULL},
        {"alert first", "\x15\x03\x03\x00\x02\x02\x28", 7, "unexpected message"},
    };
    struct sy_tls_ctx *sctx = default_server();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (int bytewise = 0; bytewise <= 1; bytewise++) {
            char err[256];
            struct sy_tls_conn *t = sy_tls_conn_new(sctx, NULL, err, sizeof(err));
            assert_non_null(t);
            int rc = SY_TLS_WANT_MORE;
            if (bytewise) {
                for (size_t k = 0; k < cases[i].len && rc == SY_TLS_WANT_MORE; k++) {
                    assert_int_equal(sy_tls_feed(t, (const uint8_t *)cases[i].bytes + k, 1), 0);
                    rc = sy_tls_handshake(t);
                }
            } else {
                assert_int_equal(
                    sy_tls_feed(t, (const uint8_t *)cases[i].bytes, cases[i].len), 0);
                rc = sy_tls_handshake(t);
            }
            if (rc != SY_TLS_E_FAILED)
                fail_msg("%s: rc=%d", cases[i].what, rc);
            if (cases[i].want && strcmp(sy_tls_conn_error(t), cases[i].want) != 0)
                fail_msg("%s: '%s', wanted '%s'", cases[i].what, sy_tls_conn_error(t),
                         cases[i].want);
            assert_int_equal(ERR_peek_error(), 0);
            expect_failed_everywhere(t);
            sy_tls_conn_free(t);
        }
    }
    sy_tls_ctx_free(sctx);
}

/* Feeds mutated copies of real handshake flights and records to fresh engines: every answer
 * must be an error or a request for more, never a crash (ASan watches the rest). */
static void test_mutated_input(void **state)
{
    struct sy_tls_ctx *sctx = default_server();
    struct sy_tls_ctx *cctx = client_ctx(P("ca.crt"), SY_TLS_VERIFY_FULL);
    /* A real ClientHello and a real server flight. */
    struct end c, s;
    end_engine(&c, cctx, "localhost");
    end_engine(&s, sctx, NULL);
    assert_int_equal(sy_tls_handshake(c.tls), SY_TLS_WANT_MORE);
    uint8_t hello[4096], flight[8192];
    size_t hello_len = sy_tls_take_out(c.tls, hello, sizeof(hello));
    assert_true(hello_len > 100 && hello_len < sizeof(hello));
    end_feed(&s, hello, hello_len);
    assert_int_equal(sy_tls_handshake(s.tls), SY_TLS_WANT_MORE);
    size_t flight_len = sy_tls_take_out(s.tls, flight, sizeof(flight));
    assert_true(flight_len > 100 && flight_len < sizeof(flight));
    end_free(&c);
    end_free(&s);

    srand(12345);
    uint8_t m[8192];
    for (int i = 0; i < 600; i++) {
        int to_server = i % 2 == 0;
        const uint8_t *src = to_server ? hello : flight;
        size_t len = to_server ? hello_len : flight_len;
        memcpy(m, src, len);
        int flips = 1 + rand() % 8;
        for (int k = 0; k < flips; k++)
            m[(size_t)rand() % len] ^= (uint8_t)(1 + rand() % 255);
        if (rand() % 4 == 0)
            len = 1 + (size_t)rand() % len; /* truncated too */
        char err[256];
        struct sy_tls_conn *t = sy_tls_conn_new(to_server ? sctx : cctx,
                                                to_server ? NULL : "localhost", err, sizeof(err));
        assert_non_null(t);
        if (!to_server)
            sy_tls_handshake(t); /* sends its own ClientHello first */
        assert_int_equal(sy_tls_feed(t, m, len), 0);
        int rc = sy_tls_handshake(t);
        if (rc != SY_TLS_WANT_MORE && rc != SY_TLS_E_FAILED)
            fail_msg("mutation %d: rc=%d '%s'", i, rc, sy_tls_conn_error(t));
        if (rc == SY_TLS_E_FAILED)
            assert_true(sy_tls_conn_error(t)[0] != '\0');
        assert_int_equal(ERR_peek_error(), 0);
        sy_tls_conn_free(t);
    }

    /* A corrupted record after the handshake is an error, not a close. */
    connect_ok(&c, &s, sctx, P("ca.crt"), SY_TLS_VERIFY_FULL, "localhost", 0);
    assert_int_equal(sy_tls_write(c.tls, (const uint8_t *)"hello", 5), 5);
    size_t n = sy_tls_take_out(c.tls, m, sizeof(m));
    m[n - 3] ^= 0x40;
    end_feed(&s, m, n);
    uint8_t b[64];
    assert_int_equal(sy_tls_read(s.tls, b, sizeof(b)), SY_TLS_E_FAILED);
    assert_string_equal(sy_tls_conn_error(s.tls), "decryption failed or bad record mac");
    assert_true(sy_tls_pending_out(s.tls) > 0); /* the bad_record_mac alert for the peer */
    expect_failed_everywhere(s.tls);
    end_free(&c);
    end_free(&s);
    sy_tls_ctx_free(cctx);
    sy_tls_ctx_free(sctx);
}

/* ---- closing ---- */

static void test_close_notify(void **state)
{
    struct sy_tls_ctx *sctx = default_server();
    struct end c, s;
    connect_ok(&c, &s, sctx, P("ca.crt"), SY_TLS_VERIFY_FULL, "localhost", 0);
    /* Data sent before close_notify arrives first. */
    assert_int_equal(sy_tls_write(c.tls, (const uint8_t *)"bye", 3), 3);
    assert_int_equal(sy_tls_shutdown(c.tls), 0);
    assert_int_equal(sy_tls_write(c.tls, (const uint8_t *)"x", 1), SY_TLS_E_STATE);
    /* One byte at a time: nothing until the data record is whole, then the data, then
     * nothing until the close_notify record is whole, exactly at the last byte. */
    uint8_t b[64];
    size_t left = sy_tls_pending_out(c.tls);
    int got_data = 0;
    while (shuttle(&c, &s, 1) == 1) {
        left--;
        ssize_t r = sy_tls_read(s.tls, b, sizeof(b));
        if (r == 3 && !got_data) {
            assert_memory_equal(b, "bye", 3);
            got_data = 1;
            r = sy_tls_read(s.tls, b, sizeof(b));
        }
        assert_int_equal(r, left == 0 ? SY_TLS_E_CLOSED : 0);
    }
    assert_int_equal(got_data, 1);
    assert_string_equal(sy_tls_conn_error(s.tls),
                        "the peer closed the TLS connection (close_notify)");
    assert_int_equal(sy_tls_read(s.tls, b, sizeof(b)), SY_TLS_E_CLOSED);
    /* The server may still answer, then close its side too. */
    assert_int_equal(sy_tls_write(s.tls, (const uint8_t *)"ok", 2), 2);
    assert_int_equal(sy_tls_shutdown(s.tls), 0);
    shuttle(&s, &c, 0);
    assert_int_equal(sy_tls_read(c.tls, b, sizeof(b)), 2);
    assert_int_equal(sy_tls_read(c.tls, b, sizeof(b)), SY_TLS_E_CLOSED);
    end_free(&c);
    end_free(&s);
    sy_tls_ctx_free(sctx);
}

/* ---- post-handshake messages ---- */

static void test_key_update_is_answered(void **state)
{
    /* A raw server asks our client to update its keys. */
    SSL_CTX *rs = raw_server_ctx();
    struct sy_tls_ctx *cctx = client_ctx(P("ca.crt"), SY_TLS_VERIFY_FULL);
    struct end c, s;
    end_engine(&c, cctx, "localhost");
    end_raw(&s, rs, 1);
    run_handshake(&c, &s, 0);
    assert_int_equal(c.rc, SY_TLS_DONE);
    assert_int_equal(s.rc, SY_TLS_DONE);
    assert_int_equal(SSL_key_update(s.raw, SSL_KEY_UPDATE_REQUESTED), 1);
    assert_int_equal(end_write(&s, (const uint8_t *)"ping", 4), 4);
    shuttle(&s, &c, 0);
    uint8_t b[64];
    assert_int_equal(sy_tls_read(c.tls, b, sizeof(b)), 4);
    assert_memory_equal(b, "ping", 4);
    /* OpenSSL 3.0 sends its own KeyUpdate with the next write, not from the read (RFC 8446
     * only asks for it before the next application data). */
    assert_int_equal(sy_tls_pending_out(c.tls), 0);
    assert_int_equal(sy_tls_write(c.tls, (const uint8_t *)"pong", 4), 4);
    size_t with_update = sy_tls_pending_out(c.tls);
    shuttle(&c, &s, 0);
    assert_int_equal(end_read(&s, b, sizeof(b)), 4);
    assert_memory_equal(b, "pong", 4);
    assert_int_equal(sy_tls_write(c.tls, (const uint8_t *)"pong", 4), 4);
    assert_true(with_update > sy_tls_pending_out(c.tls)); /* the first carried the KeyUpdate */
    shuttle(&c, &s, 0);
    assert_int_equal(end_read(&s, b, sizeof(b)), 4);
    transfer(&c, &s, 100000, 7000, 0, 4096, 11);
    transfer(&s, &c, 100000, 7000, 0, 4096, 12);
    end_free(&c);
    end_free(&s);
    sy_tls_ctx_free(cctx);
    SSL_CTX_free(rs);
}

static void test_renegotiation_refused(void **state)
{
    /* TLS 1.2 allows renegotiation; the engine refuses it and the connection carries on. */
    static const unsigned char pg[] = "\x0apostgresql";
    SSL_CTX *rc = raw_client_ctx(pg, sizeof(pg) - 1, NULL, NULL, TLS1_2_VERSION);
    struct sy_tls_ctx *sctx = default_server();
    struct end c, s;
    end_raw(&c, rc, 0);
    end_engine(&s, sctx, NULL);
    run_handshake(&c, &s, 0);
    assert_int_equal(c.rc, SY_TLS_DONE);
    assert_int_equal(s.rc, SY_TLS_DONE);
    char d[128];
    sy_tls_describe(s.tls, d, sizeof(d));
    assert_contains(d, "TLSv1.2 ECDHE-ECDSA-");
    assert_int_equal(SSL_renegotiate(c.raw), 1);
    assert_int_equal(SSL_do_handshake(c.raw), -1); /* ClientHello sent, waiting */
    shuttle(&c, &s, 0);
    uint8_t b[64];
    assert_int_equal(sy_tls_read(s.tls, b, sizeof(b)), 0);
    assert_true(sy_tls_pending_out(s.tls) > 0); /* the no_renegotiation warning */
    shuttle(&s, &c, 0);
    /* The client gives up on renegotiating (OpenSSL treats the refusal as fatal). OpenSSL 3
     * servers refuse client-initiated renegotiation by default anyway; the option matters
     * for the other direction, below. */
    assert_int_equal(end_handshake(&c), SY_TLS_E_FAILED);
    assert_string_equal(c.err, "no renegotiation");
    end_free(&c);
    end_free(&s);
    SSL_CTX_free(rc);
    sy_tls_ctx_free(sctx);

    /* A TLS 1.2 server asks our client to renegotiate (HelloRequest): the client answers
     * with a no_renegotiation alert, not a new ClientHello. */
    SSL_CTX *rs = raw_server_ctx();
    SSL_CTX_set_max_proto_version(rs, TLS1_2_VERSION);
    struct sy_tls_ctx *cctx = client_ctx(P("ca.crt"), SY_TLS_VERIFY_FULL);
    end_engine(&c, cctx, "localhost");
    end_raw(&s, rs, 1);
    run_handshake(&c, &s, 0);
    assert_int_equal(c.rc, SY_TLS_DONE);
    assert_int_equal(s.rc, SY_TLS_DONE);
    assert_int_equal(SSL_renegotiate(s.raw), 1);
    SSL_do_handshake(s.raw); /* writes the HelloRequest */
    assert_true(shuttle(&s, &c, 0) > 0);
    assert_int_equal(sy_tls_read(c.tls, b, sizeof(b)), 0);
    const uint8_t *p;
    assert_true(sy_tls_out_peek(c.tls, &p) > 0);
    assert_int_equal(p[0], 21); /* record type alert; a renegotiation would be 22 */
    shuttle(&c, &s, 0);
    assert_int_equal(end_read(&s, b, sizeof(b)), SY_TLS_E_FAILED);
    assert_string_equal(s.err, "no renegotiation");
    end_free(&c);
    end_free(&s);
    SSL_CTX_free(rs);
    sy_tls_ctx_free(cctx);
}

static void test_tls12_minimum(void **state)
{
    struct sy_tls_ctx *sctx = default_server();
    SSL_CTX *rc = raw_client_ctx(NULL, 0, NULL, NULL, TLS1_1_VERSION);
    struct end c, s;
    end_raw(&c, rc, 0);
    end_engine(&s, sctx, NULL);
    run_handshake(&c, &s, 0);
    assert_int_equal(s.rc, SY_TLS_E_FAILED);
    assert_string_equal(s.err, "unsupported protocol");
    assert_int_equal(c.rc, SY_TLS_E_FAILED);
    end_free(&c);
    end_free(&s);
    SSL_CTX_free(rc);
    sy_tls_ctx_free(sctx);
}

/* ---- contexts, state and error queue ---- */

static void test_context_errors(void **state)
{
    char err[512];
    char want[1024];
#define SERVER_FAILS(cert, key, ca, req)                                                         \
    do {                                                                                         \
        err[0] = '\0';                                                                           \
        assert_null(                                                                             \
            sy_tls_ctx_new_server(cert, key, ca, req, SY_TLS_ALPN_STRICT, err, sizeof(err)));    \
    } while (0)

    SERVER_FAILS(P("nope.crt"), P("server.key"), NULL, 0);
    snprintf(want, sizeof(want), "cannot load certificate %s: ", P("nope.crt"));
    assert_contains(err, want);
    assert_contains(err, "No such file or directory");

    SERVER_FAILS(P("server.crt"), P("nope.key"), NULL, 0);
    snprintf(want, sizeof(want), "cannot load private key %s: ", P("nope.key"));
    assert_contains(err, want);

    SERVER_FAILS(P("server.crt"), P("client.key"), NULL, 0);
    snprintf(want, sizeof(want), "private key %s does not match certificate %s",
             P("client.key"), P("server.crt"));
    assert_string_equal(err, want);

    SERVER_FAILS(P("server.key"), P("server.key"), NULL, 0); /* a key is not a certificate */
    snprintf(want, sizeof(want), "cannot load certificate %s: ", P("server.key"));
    assert_contains(err, want);

    SERVER_FAILS(P("server.crt"), P("server.key"), P("nope-ca.crt"), 0);
    snprintf(want, sizeof(want), "cannot load CA file %s: ", P("nope-ca.crt"));
    assert_contains(err, want);

    SERVER_FAILS(P("server.crt"), P("server.key"), NULL, 1);
    assert_string_equal(err,
                        "requiring client certificates needs a CA file to verify them against");
    SERVER_FAILS(NULL, P("server.key"), NULL, 0);
    assert_string_equal(err, "a TLS server needs a certificate file and a key file");

    assert_null(sy_tls_ctx_new_client(NULL, SY_TLS_VERIFY_CA, err, sizeof(err)));
    assert_string_equal(err, "TLS mode verify-ca needs a CA file to verify the server "
                             "certificate against");
    assert_null(sy_tls_ctx_new_client(P("nope-ca.crt"), SY_TLS_VERIFY_FULL, err, sizeof(err)));
    snprintf(want, sizeof(want), "cannot load CA file %s: ", P("nope-ca.crt"));
    assert_contains(err, want);
    assert_null(sy_tls_ctx_new_client(NULL, (enum sy_tls_mode)9, err, sizeof(err)));
    assert_string_equal(err, "invalid TLS client mode 9");
    assert_int_equal(ERR_peek_error(), 0);
#undef SERVER_FAILS
}

static void test_reload_keeps_connections(void **state)
{
    /* A connection outlives the context it was made from (the SSL_CTX reference count). */
    struct sy_tls_ctx *sctx = default_server();
    struct sy_tls_ctx *cctx = client_ctx(P("ca.crt"), SY_TLS_VERIFY_FULL);
    struct end c, s;
    end_engine(&c, cctx, "localhost");
    end_engine(&s, sctx, NULL);
    sy_tls_ctx_free(sctx);
    sy_tls_ctx_free(cctx);
    sctx = default_server(); /* the "reloaded" one */
    run_handshake(&c, &s, 0);
    assert_int_equal(c.rc, SY_TLS_DONE);
    assert_int_equal(s.rc, SY_TLS_DONE);
    transfer(&c, &s, 1000, 0, 0, 1000, 13);
    end_free(&c);
    end_free(&s);
    sy_tls_ctx_free(sctx);
}

static void test_calls_out_of_order(void **state)
{
    struct sy_tls_ctx *sctx = default_server();
    struct end s;
    end_engine(&s, sctx, NULL);
    uint8_t b[8];
    char d[32];
    assert_int_equal(sy_tls_write(s.tls, b, sizeof(b)), SY_TLS_E_STATE);
    assert_int_equal(sy_tls_read(s.tls, b, sizeof(b)), SY_TLS_E_STATE);
    assert_int_equal(sy_tls_shutdown(s.tls), SY_TLS_E_STATE);
    assert_int_equal(sy_tls_alpn_ok(s.tls), 0);
    assert_int_equal(sy_tls_peer_verified(s.tls), 0);
    sy_tls_describe(s.tls, d, sizeof(d));
    assert_string_equal(d, "none");
    assert_int_equal(sy_tls_handshake(s.tls), SY_TLS_WANT_MORE); /* nothing fed yet */
    assert_int_equal(sy_tls_pending_out(s.tls), 0);
    end_free(&s);
    sy_tls_ctx_free(sctx);
    assert_string_equal(sy_tls_strerror(SY_TLS_E_CLOSED), "TLS peer closed the connection");
    assert_string_equal(sy_tls_strerror(SY_TLS_E_FAILED), "TLS error");
    assert_string_equal(sy_tls_strerror(SY_TLS_E_NOMEM), "out of memory");
    assert_string_equal(sy_tls_strerror(SY_TLS_E_STATE), "TLS call out of order");
    assert_string_equal(sy_tls_strerror(42), "unknown TLS error");
}

static void test_error_queue_isolated(void **state)
{
    /* A stale error left by someone else does not fail a good handshake, and a failing
     * connection leaves nothing behind for the next one. */
    struct sy_tls_ctx *sctx = default_server();
    struct sy_tls_ctx *cctx = client_ctx(P("ca.crt"), SY_TLS_VERIFY_FULL);
    struct end c, s;
    end_engine(&c, cctx, "localhost");
    end_engine(&s, sctx, NULL);
    c.rc = s.rc = SY_TLS_WANT_MORE;
    while (c.rc == SY_TLS_WANT_MORE || s.rc == SY_TLS_WANT_MORE) {
        /* A stale error before every call: OpenSSL would read it as this call's failure. */
        ERR_raise(ERR_LIB_SSL, SSL_R_WRONG_VERSION_NUMBER);
        if (c.rc == SY_TLS_WANT_MORE)
            end_handshake(&c);
        ERR_raise(ERR_LIB_SSL, SSL_R_WRONG_VERSION_NUMBER);
        if (s.rc == SY_TLS_WANT_MORE)
            end_handshake(&s);
        if (c.rc < 0 || s.rc < 0)
            fail_msg("client rc=%d '%s', server rc=%d '%s'", c.rc, c.err, s.rc, s.err);
        assert_int_equal(ERR_peek_error(), 0);
        if (shuttle(&c, &s, 0) + shuttle(&s, &c, 0) == 0)
            break;
    }
    assert_int_equal(c.rc, SY_TLS_DONE);
    assert_int_equal(s.rc, SY_TLS_DONE);
    uint8_t b[8];
    ERR_raise(ERR_LIB_SSL, SSL_R_WRONG_VERSION_NUMBER);
    assert_int_equal(sy_tls_read(s.tls, b, sizeof(b)), 0);
    ERR_raise(ERR_LIB_SSL, SSL_R_WRONG_VERSION_NUMBER);
    assert_int_equal(sy_tls_write(c.tls, b, sizeof(b)), (ssize_t)sizeof(b));
    shuttle(&c, &s, 0);
    ERR_raise(ERR_LIB_SSL, SSL_R_WRONG_VERSION_NUMBER);
    assert_int_equal(sy_tls_read(s.tls, b, sizeof(b)), (ssize_t)sizeof(b));
    assert_int_equal(ERR_peek_error(), 0);
    sy_tls_ctx_free(cctx);
    struct end bad;
    end_engine(&bad, sctx, NULL);
    end_feed(&bad, (const uint8_t *)"\x00\x00\x00\x08\x04\xd2\x16\x2f", 8);
    assert_int_equal(end_handshake(&bad), SY_TLS_E_FAILED);
    assert_int_equal(ERR_peek_error(), 0);
    transfer(&c, &s, 20000, 0, 0, 20000, 14);
    end_free(&bad);
    end_free(&c);
    end_free(&s);
    sy_tls_ctx_free(sctx);
}

/* ---- setup ---- */

static int run_script(const char *script, const char *dir)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execlp("bash", "bash", script, dir, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int group_setup(void **state)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof(g_dir), "%s/sy-tls-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "cannot create a temporary directory %s\n", g_dir);
        return -1;
    }
    int rc = run_script(g_script, g_dir);
    if (rc != 0) {
        fprintf(stderr, "%s %s failed with status %d\n", g_script, g_dir, rc);
        return -1;
    }
    return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int group_teardown(void **state)
{
    if (g_dir[0])
        nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

int main(int argc, char **argv)
{
    g_script = argc > 1 ? argv[1] : getenv("SY_MAKE_CERTS");
    if (!g_script || !*g_script) {
        fprintf(stderr, "usage: %s tests/support/make_certs.sh (or set SY_MAKE_CERTS)\n", argv[0]);
        return 2;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_mode_succeeds),
        cmocka_unit_test(test_byte_at_a_time_with_buffer_variants),
        cmocka_unit_test(test_verify_ca_wrong_ca_fails),
        cmocka_unit_test(test_expired_certificate_fails),
        cmocka_unit_test(test_verify_full_host_mismatch_fails),
        cmocka_unit_test(test_verify_full_ip_and_name_succeed),
        cmocka_unit_test(test_alpn),
        cmocka_unit_test(test_client_certificates),
        cmocka_unit_test(test_one_mib_each_way),
        cmocka_unit_test(test_out_peek_is_stable),
        cmocka_unit_test(test_has_buffered),
        cmocka_unit_test(test_garbage_to_server),
        cmocka_unit_test(test_mutated_input),
        cmocka_unit_test(test_close_notify),
        cmocka_unit_test(test_key_update_is_answered),
        cmocka_unit_test(test_renegotiation_refused),
        cmocka_unit_test(test_tls12_minimum),
        cmocka_unit_test(test_context_errors),
        cmocka_unit_test(test_reload_keeps_connections),
        cmocka_unit_test(test_calls_out_of_order),
        cmocka_unit_test(test_error_queue_isolated),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
