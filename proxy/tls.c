/*
 * The TLS engine: OpenSSL driven entirely through one custom BIO per connection, so that the
 * engine never touches a socket.
 *
 * Why a custom BIO rather than a pair of memory BIOs: a memory BIO moves its unread bytes to
 * the front of its buffer on every write (and may realloc), so a pointer into it is stale as
 * soon as OpenSSL writes again, for instance an alert or the next record while a uv_write of
 * earlier ciphertext is still queued. Here ciphertext goes into a chain of fixed chunks that are never
 * moved or grown: a run handed out by sy_tls_out_peek stays put until it is consumed. Incoming
 * ciphertext lives in a plain buffer that is compacted only when the caller asks for room,
 * which is the one moment nobody holds a pointer into it, and freed whenever it is drained so
 * idle connections hold no buffers.
 */
#include <arpa/inet.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "proxy/tls.h"

/* ALPN protocol list in wire form: a length byte, then the name. */
static const unsigned char ALPN_PG[] = "\x0apostgresql";
#define ALPN_PG_LEN (sizeof(ALPN_PG) - 1)

/* Output chunk size. A full TLS record is about 16.4 KB, so a chunk holds a few; a record that
 * does not fit is split across chunks (the socket does not care). */
#define OUT_CHUNK_SIZE (64 * 1024 - 64)

struct sy_tls_ctx {
    SSL_CTX *ssl_ctx;
    uint8_t is_server;
    uint8_t has_ca;        /* a server that verifies client certificates */
    enum sy_tls_mode mode; /* client only */
};

/* A piece of waiting ciphertext: the unsent bytes are data[off, len). Never resized. */
struct out_chunk {
    struct out_chunk *next;
    size_t off, len, cap;
    uint8_t data[];
};

struct sy_tls_conn {
    SSL *ssl;
    uint8_t is_server;
    uint8_t verifies;     /* this side checks the peer's certificate against a CA */
    uint8_t alpn_offered; /* server: the client sent an ALPN extension */
    uint8_t failed;       /* a fatal TLS error happened; every later call returns it */
    uint8_t closed;       /* close_notify received */
    uint8_t oom;          /* a buffer allocation failed inside an OpenSSL call */
    /* Incoming ciphertext not yet read by OpenSSL: in[in_off, in_len). */
    uint8_t *in;
    size_t in_off, in_len, in_cap;
    /* Outgoing ciphertext, oldest first. */
    struct out_chunk *out_head, *out_tail;
    size_t out_pending;
    char *host; /* client: the host checked under verify-full, for messages */
    char err[256];
};

const char *sy_tls_strerror(int err)
{
    switch (err) {
    case SY_TLS_E_FAILED: return "TLS error";
    case SY_TLS_E_CLOSED: return "TLS peer closed the connection";
    case SY_TLS_E_NOMEM: return "out of memory";
    case SY_TLS_E_STATE: return "TLS call out of order";
    }
    return "unknown TLS error";
}

/* ---- error messages ---- */

/*
 * Writes the reason of the oldest error in OpenSSL's queue into out ("no such file",
 * "wrong version number") and empties the queue. Returns that error's code (0 if none).
 */
static unsigned long queue_reason(char *out, size_t cap)
{
    unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (e == 0) {
        snprintf(out, cap, "unknown reason");
        return 0;
    }
    if (ERR_SYSTEM_ERROR(e)) {
        /* OpenSSL gives no string for system errors (errno values). */
        snprintf(out, cap, "%s", strerror(ERR_GET_REASON(e)));
        return e;
    }
    const char *r = ERR_reason_error_string(e);
    if (r)
        snprintf(out, cap, "%s", r);
    else
        ERR_error_string_n(e, out, cap);
    return e;
}

/* Formats a context error into err and returns NULL, freeing s. */
static struct sy_tls_ctx *ctx_error(SSL_CTX *s, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static struct sy_tls_ctx *ctx_error(SSL_CTX *s, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    SSL_CTX_free(s);
    ERR_clear_error();
    return NULL;
}

static void conn_set_error(struct sy_tls_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void conn_set_error(struct sy_tls_conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof(c->err), fmt, ap);
    va_end(ap);
}

/*
 * Records why the last OpenSSL call on c failed (SSL_get_error gave ssl_error), marks c failed
 * and returns the error code. A failed certificate check names the check that failed, which
 * the error queue alone does not say.
 */
static int conn_fail(struct sy_tls_conn *c, int ssl_error)
{
    c->failed = 1;
    if (c->oom) {
        ERR_clear_error();
        conn_set_error(c, "out of memory");
        return SY_TLS_E_NOMEM;
    }
    char reason[160];
    unsigned long e = queue_reason(reason, sizeof(reason));
    if (e == 0) {
        conn_set_error(c, "TLS failed without a reason (SSL error %d)", ssl_error);
        return SY_TLS_E_FAILED;
    }
    if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        long v = SSL_get_verify_result(c->ssl);
        const char *vs = X509_verify_cert_error_string(v);
        if ((v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH) && c->host)
            conn_set_error(c, "%s: %s (the server certificate is not for \"%s\")", reason, vs,
                           c->host);
        else
            conn_set_error(c, "%s: %s", reason, vs);
        return SY_TLS_E_FAILED;
    }
    conn_set_error(c, "%s", reason);
    return SY_TLS_E_FAILED;
}

/* ---- buffers ---- */

static int out_append(struct sy_tls_conn *c, const uint8_t *p, size_t n)
{
    while (n > 0) {
        struct out_chunk *t = c->out_tail;
        if (!t || t->len == t->cap) {
            t = malloc(sizeof(*t) + OUT_CHUNK_SIZE);
            if (!t)
                return -1;
            t->next = NULL;
            t->off = t->len = 0;
            t->cap = OUT_CHUNK_SIZE;
            if (c->out_tail)
                c->out_tail->next = t;
            else
                c->out_head = t;
            c->out_tail = t;
        }
        size_t k = t->cap - t->len < n ? t->cap - t->len : n;
        memcpy(t->data + t->len, p, k);
        t->len += k;
        c->out_pending += k;
        p += k;
        n -= k;
    }
    return 0;
}

size_t sy_tls_pending_out(const struct sy_tls_conn *c)
{
    return c->out_pending;
}

size_t sy_tls_out_peek(const struct sy_tls_conn *c, const uint8_t **data)
{
    const struct out_chunk *h = c->out_head;
    if (!h) {
        *data = NULL;
        return 0;
    }
    *data = h->data + h->off;
    return h->len - h->off;
}

void sy_tls_out_consume(struct sy_tls_conn *c, size_t n)
{
    while (n > 0 && c->out_head) {
        struct out_chunk *h = c->out_head;
        size_t k = h->len - h->off < n ? h->len - h->off : n;
        h->off += k;
        c->out_pending -= k;
        n -= k;
        if (h->off == h->len) {
            /* Drained: nobody can hold a pointer into it any more. */
            c->out_head = h->next;
            if (!c->out_head)
                c->out_tail = NULL;
            free(h);
        }
    }
}

size_t sy_tls_take_out(struct sy_tls_conn *c, uint8_t *out, size_t cap)
{
    size_t done = 0;
    while (done < cap) {
        const uint8_t *p;
        size_t n = sy_tls_out_peek(c, &p);
        if (n == 0)
            break;
        if (n > cap - done)
            n = cap - done;
        memcpy(out + done, p, n);
        sy_tls_out_consume(c, n);
        done += n;
    }
    return done;
}

uint8_t *sy_tls_in_space(struct sy_tls_conn *c, size_t want, size_t *cap)
{
    if (want == 0)
        want = 1;
    if (c->in_cap - c->in_len < want) {
        size_t used = c->in_len - c->in_off;
        if (c->in_off > 0) {
            memmove(c->in, c->in + c->in_off, used);
            c->in_off = 0;
            c->in_len = used;
        }
        if (c->in_cap - c->in_len < want) {
            if (want > SIZE_MAX - used)
                return NULL;
            uint8_t *n = realloc(c->in, used + want);
            if (!n)
                return NULL;
            c->in = n;
            c->in_cap = used + want;
        }
    }
    *cap = c->in_cap - c->in_len;
    return c->in + c->in_len;
}

void sy_tls_in_commit(struct sy_tls_conn *c, size_t n)
{
    if (n > c->in_cap - c->in_len)
        n = c->in_cap - c->in_len;
    c->in_len += n;
}

int sy_tls_feed(struct sy_tls_conn *c, const uint8_t *cipher, size_t len)
{
    if (len == 0)
        return 0;
    size_t cap;
    uint8_t *p = sy_tls_in_space(c, len, &cap);
    if (!p)
        return SY_TLS_E_NOMEM;
    memcpy(p, cipher, len);
    sy_tls_in_commit(c, len);
    return 0;
}

int sy_tls_has_buffered(const struct sy_tls_conn *c)
{
    return c->in_len > c->in_off || SSL_has_pending(c->ssl);
}

/* ---- the BIO ---- */

static int bio_read(BIO *b, char *out, size_t outl, size_t *readbytes)
{
    struct sy_tls_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    size_t avail = c->in_len - c->in_off;
    if (avail == 0) {
        /* Not the end of the stream, just nothing yet: OpenSSL reports WANT_READ. */
        BIO_set_retry_read(b);
        *readbytes = 0;
        return 0;
    }
    size_t n = avail < outl ? avail : outl;
    memcpy(out, c->in + c->in_off, n);
    c->in_off += n;
    if (c->in_off == c->in_len) {
        free(c->in);
        c->in = NULL;
        c->in_off = c->in_len = c->in_cap = 0;
    }
    *readbytes = n;
    return 1;
}

static int bio_write(BIO *b, const char *data, size_t dlen, size_t *written)
{
    struct sy_tls_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (out_append(c, (const uint8_t *)data, dlen) != 0) {
        c->oom = 1;
        *written = 0;
        return 0;
    }
    *written = dlen;
    return 1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    struct sy_tls_conn *c = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1; /* the caller flushes; OpenSSL must not see a failure here */
    case BIO_CTRL_PENDING:
        return c ? (long)(c->in_len - c->in_off) : 0;
    case BIO_CTRL_WPENDING:
        return c ? (long)c->out_pending : 0;
    default:
        return 0;
    }
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static int bio_destroy(BIO *b)
{
    return 1; /* the connection owns the buffers */
}

static BIO_METHOD *bio_method;
static CRYPTO_ONCE bio_method_once = CRYPTO_ONCE_STATIC_INIT;

static void bio_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "switchyard tls");
    if (!m)
        return;
    BIO_meth_set_read_ex(m, bio_read);
    BIO_meth_set_write_ex(m, bio_write);
    BIO_meth_set_ctrl(m, bio_ctrl);
    BIO_meth_set_create(m, bio_create);
    BIO_meth_set_destroy(m, bio_destroy);
    bio_method = m;
}

/* ---- contexts ---- */

/* Never prompts for a key's passphrase on the terminal: an encrypted key fails to load. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

/* Settings shared by both sides. */
static void ctx_common(SSL_CTX *s)
{
    SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION);
    SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
    /* Idle connections give their record buffers back (about 34 KB each). */
    SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_default_passwd_cb(s, no_passphrase);
}

/*
 * Server ALPN: select "postgresql" when offered. arg carries the enum sy_tls_alpn. The
 * callback runs only when the client sent the extension, so it also records that.
 */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    struct sy_tls_conn *c = SSL_get_app_data(ssl);
    if (c)
        c->alpn_offered = 1;
    unsigned char *sel = NULL;
    unsigned char sellen = 0;
    if (SSL_select_next_proto(&sel, &sellen, ALPN_PG, ALPN_PG_LEN, in, inlen) ==
            OPENSSL_NPN_NEGOTIATED &&
        sel != NULL) {
        *out = sel;
        *outlen = sellen;
        return SSL_TLSEXT_ERR_OK;
    }
    /* RFC 7301: a server that supports none of the offered protocols sends
     * no_application_protocol; the lenient mode just leaves ALPN out. */
    return (enum sy_tls_alpn)(uintptr_t)arg == SY_TLS_ALPN_STRICT ? SSL_TLSEXT_ERR_ALERT_FATAL
                                                                  : SSL_TLSEXT_ERR_NOACK;
}

/* Loads the server's certificate chain and key into s. Returns 0, or -1 with err set. */
static int ctx_load_identity(SSL_CTX *s, const char *cert_file, const char *key_file, char *err,
                             size_t errlen)
{
    char reason[160];
    if (SSL_CTX_use_certificate_chain_file(s, cert_file) != 1) {
        queue_reason(reason, sizeof(reason));
        snprintf(err, errlen, "cannot load certificate %s: %s", cert_file, reason);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(s, key_file, SSL_FILETYPE_PEM) != 1) {
        unsigned long e = queue_reason(reason, sizeof(reason));
        if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
            snprintf(err, errlen, "private key %s does not match certificate %s", key_file,
                     cert_file);
        else
            snprintf(err, errlen, "cannot load private key %s: %s", key_file, reason);
        return -1;
    }
    if (SSL_CTX_check_private_key(s) != 1) {
        snprintf(err, errlen, "private key %s does not match certificate %s", key_file, cert_file);
        return -1;
    }
    return 0;
}

struct sy_tls_ctx *sy_tls_ctx_new_server(const char *cert_file, const char *key_file,
                                         const char *ca_file, int require_client_cert,
                                         enum sy_tls_alpn alpn, char *err, size_t errlen)
{
    ERR_clear_error();
    if (!cert_file || !*cert_file || !key_file || !*key_file)
        return ctx_error(NULL, err, errlen, "a TLS server needs a certificate file and a key file");
    if (require_client_cert && (!ca_file || !*ca_file))
        return ctx_error(NULL, err, errlen,
                         "requiring client certificates needs a CA file to verify them against");
    if (alpn != SY_TLS_ALPN_LENIENT && alpn != SY_TLS_ALPN_STRICT)
        return ctx_error(NULL, err, errlen, "invalid ALPN mode %d", (int)alpn);
    SSL_CTX *s = SSL_CTX_new(TLS_server_method());
    if (!s)
        return ctx_error(NULL, err, errlen, "cannot create a TLS context: out of memory");
    ctx_common(s);
    SSL_CTX_set_num_tickets(s, 0);
    SSL_CTX_set_options(s, SSL_OP_CIPHER_SERVER_PREFERENCE);
    char e[512];
    if (ctx_load_identity(s, cert_file, key_file, e, sizeof(e)) != 0)
        return ctx_error(s, err, errlen, "%s", e);
    if (ca_file && *ca_file) {
        char reason[160];
        if (SSL_CTX_load_verify_locations(s, ca_file, NULL) != 1) {
            queue_reason(reason, sizeof(reason));
            return ctx_error(s, err, errlen, "cannot load CA file %s: %s", ca_file, reason);
        }
        /* The CA names go into the CertificateRequest so clients pick the right certificate. */
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca_file);
        if (!names) {
            queue_reason(reason, sizeof(reason));
            return ctx_error(s, err, errlen, "cannot read CA names from %s: %s", ca_file, reason);
        }
        SSL_CTX_set_client_CA_list(s, names);
        int flags = SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE;
        if (require_client_cert)
            flags |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(s, flags, NULL);
    }
    SSL_CTX_set_alpn_select_cb(s, alpn_select, (void *)(uintptr_t)alpn);
    struct sy_tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return ctx_error(s, err, errlen, "out of memory");
    ctx->ssl_ctx = s;
    ctx->is_server = 1;
    ctx->has_ca = ca_file && *ca_file;
    ERR_clear_error();
    return ctx;
}

static const char *mode_name(enum sy_tls_mode m)
{
    switch (m) {
    case SY_TLS_PREFER: return "prefer";
    case SY_TLS_REQUIRE: return "require";
    case SY_TLS_VERIFY_CA: return "verify-ca";
    case SY_TLS_VERIFY_FULL: return "verify-full";
    }
    return "?";
}

struct sy_tls_ctx *sy_tls_ctx_new_client(const char *ca_file, enum sy_tls_mode mode, char *err,
                                         size_t errlen)
{
    ERR_clear_error();
    if (mode < SY_TLS_PREFER || mode > SY_TLS_VERIFY_FULL)
        return ctx_error(NULL, err, errlen, "invalid TLS client mode %d", (int)mode);
    int verify = mode == SY_TLS_VERIFY_CA || mode == SY_TLS_VERIFY_FULL;
    if (verify && (!ca_file || !*ca_file))
        return ctx_error(NULL, err, errlen,
                         "TLS mode %s needs a CA file to verify the server certificate against",
                         mode_name(mode));
    SSL_CTX *s = SSL_CTX_new(TLS_client_method());
    if (!s)
        return ctx_error(NULL, err, errlen, "cannot create a TLS context: out of memory");
    ctx_common(s);
    /* Returns 0 on success, unlike the rest of OpenSSL. */
    if (SSL_CTX_set_alpn_protos(s, ALPN_PG, ALPN_PG_LEN) != 0)
        return ctx_error(s, err, errlen, "cannot set ALPN: out of memory");
    if (verify) {
        char reason[160];
        if (SSL_CTX_load_verify_locations(s, ca_file, NULL) != 1) {
            queue_reason(reason, sizeof(reason));
            return ctx_error(s, err, errlen, "cannot load CA file %s: %s", ca_file, reason);
        }
        SSL_CTX_set_verify(s, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(s, SSL_VERIFY_NONE, NULL);
    }
    struct sy_tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return ctx_error(s, err, errlen, "out of memory");
    ctx->ssl_ctx = s;
    ctx->mode = mode;
    ERR_clear_error();
    return ctx;
}

void sy_tls_ctx_free(struct sy_tls_ctx *ctx)
{
    if (!ctx)
        return;
    SSL_CTX_free(ctx->ssl_ctx); /* connections hold their own references */
    free(ctx);
}

/* ---- connections ---- */

static int host_is_numeric(const char *host)
{
    unsigned char addr[16];
    return inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
}

/* Sets SNI and, under verify-full, the name or address the certificate must carry. */
static int conn_set_host(struct sy_tls_conn *c, const char *host, enum sy_tls_mode mode,
                         char *err, size_t errlen)
{
    int full = mode == SY_TLS_VERIFY_FULL;
    if (!host || !*host) {
        if (full) {
            snprintf(err, errlen, "TLS mode verify-full needs the server's host name");
            return -1;
        }
        return 0;
    }
    c->host = strdup(host);
    if (!c->host) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (host_is_numeric(host)) {
        /* RFC 6066: no SNI for address literals. */
        if (full && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) != 1) {
            snprintf(err, errlen, "cannot check the server certificate for address %s", host);
            return -1;
        }
        return 0;
    }
    if (SSL_set_tlsext_host_name(c->ssl, host) != 1) {
        snprintf(err, errlen, "invalid server host name \"%s\" for TLS", host);
        return -1;
    }
    if (full) {
        SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (SSL_set1_host(c->ssl, host) != 1) {
            snprintf(err, errlen, "cannot check the server certificate for host \"%s\"", host);
            return -1;
        }
    }
    return 0;
}

struct sy_tls_conn *sy_tls_conn_new(struct sy_tls_ctx *ctx, const char *host, char *err,
                                    size_t errlen)
{
    char e[256] = "out of memory";
    ERR_clear_error();
    CRYPTO_THREAD_run_once(&bio_method_once, bio_method_init);
    struct sy_tls_conn *c = calloc(1, sizeof(*c));
    BIO *b = NULL;
    if (!c || !bio_method || !(c->ssl = SSL_new(ctx->ssl_ctx)) || !(b = BIO_new(bio_method)))
        goto fail;
    BIO_set_data(b, c);
    SSL_set_bio(c->ssl, b, b); /* one reference serves as both */
    SSL_set_app_data(c->ssl, c);
    c->is_server = ctx->is_server;
    if (ctx->is_server) {
        c->verifies = ctx->has_ca;
        SSL_set_accept_state(c->ssl);
    } else {
        c->verifies = ctx->mode == SY_TLS_VERIFY_CA || ctx->mode == SY_TLS_VERIFY_FULL;
        SSL_set_connect_state(c->ssl);
        if (conn_set_host(c, host, ctx->mode, e, sizeof(e)) != 0)
            goto fail;
    }
    ERR_clear_error();
    return c;
fail:
    if (err && errlen)
        snprintf(err, errlen, "%s", e);
    if (c && c->ssl)
        SSL_free(c->ssl);
    else if (b)
        BIO_free(b);
    if (c)
        free(c->host);
    free(c);
    ERR_clear_error();
    return NULL;
}

void sy_tls_conn_free(struct sy_tls_conn *c)
{
    if (!c)
        return;
    SSL_free(c->ssl); /* frees the BIO */
    sy_tls_out_consume(c, c->out_pending);
    free(c->in);
    free(c->host);
    free(c);
}

int sy_tls_handshake(struct sy_tls_conn *c)
{
    if (c->failed)
        return SY_TLS_E_FAILED;
    if (c->closed)
        return SY_TLS_E_CLOSED;
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1)
        return SY_TLS_DONE;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        ERR_clear_error();
        return SY_TLS_WANT_MORE;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        c->closed = 1;
        conn_set_error(c, "the peer closed the connection during the TLS handshake");
        return SY_TLS_E_CLOSED;
    }
    return conn_fail(c, e);
}

ssize_t sy_tls_read(struct sy_tls_conn *c, uint8_t *out, size_t cap)
{
    if (c->failed)
        return SY_TLS_E_FAILED;
    if (c->closed)
        return SY_TLS_E_CLOSED;
    if (!SSL_is_init_finished(c->ssl)) {
        conn_set_error(c, "TLS read before the handshake is done");
        return SY_TLS_E_STATE;
    }
    if (cap == 0)
        return 0;
    ERR_clear_error();
    size_t n = 0;
    if (SSL_read_ex(c->ssl, out, cap, &n) == 1)
        return (ssize_t)n; /* at most one record, so it fits */
    int e = SSL_get_error(c->ssl, 0);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        ERR_clear_error();
        return 0;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        c->closed = 1;
        conn_set_error(c, "the peer closed the TLS connection (close_notify)");
        return SY_TLS_E_CLOSED;
    }
    return conn_fail(c, e);
}

ssize_t sy_tls_write(struct sy_tls_conn *c, const uint8_t *plain, size_t len)
{
    if (c->failed)
        return SY_TLS_E_FAILED;
    if (!SSL_is_init_finished(c->ssl) || (SSL_get_shutdown(c->ssl) & SSL_SENT_SHUTDOWN)) {
        conn_set_error(c, "TLS write before the handshake is done or after shutdown");
        return SY_TLS_E_STATE;
    }
    if (len > SSIZE_MAX)
        len = SSIZE_MAX; /* not reached in practice; keeps the return value honest */
    ERR_clear_error();
    size_t done = 0;
    while (done < len) {
        size_t w = 0;
        if (SSL_write_ex(c->ssl, plain + done, len - done, &w) == 1) {
            done += w;
            continue;
        }
        int e = SSL_get_error(c->ssl, 0);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            /* The output never blocks and renegotiation is off, so this means a broken state. */
            ERR_clear_error();
            c->failed = 1;
            conn_set_error(c, "TLS write could not complete (SSL error %d)", e);
            return SY_TLS_E_FAILED;
        }
        return conn_fail(c, e);
    }
    return (ssize_t)len;
}

int sy_tls_shutdown(struct sy_tls_conn *c)
{
    if (c->failed)
        return SY_TLS_E_FAILED;
    if (!SSL_is_init_finished(c->ssl)) {
        conn_set_error(c, "TLS shutdown before the handshake is done");
        return SY_TLS_E_STATE;
    }
    ERR_clear_error();
    int r = SSL_shutdown(c->ssl);
    if (r >= 0) {
        ERR_clear_error();
        return 0; /* 0: ours is queued; 1: both sides are done */
    }
    return conn_fail(c, SSL_get_error(c->ssl, r));
}

/* ---- what was negotiated ---- */

const char *sy_tls_conn_error(const struct sy_tls_conn *c)
{
    return c->err;
}

int sy_tls_alpn_ok(const struct sy_tls_conn *c)
{
    if (!SSL_is_init_finished(c->ssl))
        return 0;
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(c->ssl, &p, &n);
    return n == ALPN_PG_LEN - 1 && memcmp(p, ALPN_PG + 1, n) == 0;
}

int sy_tls_alpn_offered(const struct sy_tls_conn *c)
{
    return c->alpn_offered;
}

int sy_tls_describe(const struct sy_tls_conn *c, char *out, size_t cap)
{
    const SSL_CIPHER *ci = SSL_get_current_cipher(c->ssl);
    if (!SSL_is_init_finished(c->ssl) || !ci)
        return snprintf(out, cap, "none");
    return snprintf(out, cap, "%s %s", SSL_get_version(c->ssl), SSL_CIPHER_get_name(ci));
}

int sy_tls_peer_cert_subject(const struct sy_tls_conn *c, char *out, size_t cap)
{
    if (cap)
        out[0] = '\0';
    X509 *peer = SSL_get0_peer_certificate(c->ssl);
    if (!peer)
        return -1;
    BIO *m = BIO_new(BIO_s_mem());
    if (!m)
        return -1;
    int rc = -1;
    if (X509_NAME_print_ex(m, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253) >= 0) {
        char *p = NULL;
        long n = BIO_get_mem_data(m, &p);
        if (cap) {
            size_t k = n > 0 ? (size_t)n : 0;
            if (k >= cap)
                k = cap - 1;
            memcpy(out, p, k);
            out[k] = '\0';
        }
        rc = 0;
    }
    BIO_free(m);
    ERR_clear_error();
    return rc;
}

int sy_tls_peer_verified(const struct sy_tls_conn *c)
{
    if (!c->verifies || !SSL_is_init_finished(c->ssl) || !SSL_get0_peer_certificate(c->ssl))
        return 0;
    return SSL_get_verify_result(c->ssl) == X509_V_OK;
}

int sy_tls_cert_endpoint_hash(const struct sy_tls_conn *c, uint8_t *out)
{
    if (!c || !SSL_is_init_finished(c->ssl))
        return -1;
    X509 *cert = c->is_server ? SSL_get_certificate(c->ssl) : SSL_get0_peer_certificate(c->ssl);
    int md_nid = NID_undef;
    if (!cert || !OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, NULL))
        return -1;
    /* RFC 5929: MD5 and SHA-1 are replaced by SHA-256; any other hash is used as it is. */
    const EVP_MD *md = md_nid == NID_md5 || md_nid == NID_sha1 ? EVP_sha256()
                                                                 : EVP_get_digestbynid(md_nid);
    unsigned int n = 0;
    if (!md || EVP_MD_get_size(md) > SY_TLS_CERT_HASH_MAX || !X509_digest(cert, md, out, &n)) {
        ERR_clear_error();
        return -1;
    }
    return (int)n;
}
