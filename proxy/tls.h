/*
 * A TLS engine that does no I/O: OpenSSL over in-memory buffers, for a libuv event loop.
 *
 * The caller moves bytes, the engine transforms them. Ciphertext read from a socket goes in
 * (sy_tls_feed, or straight into the engine's input buffer with sy_tls_in_space and
 * sy_tls_in_commit); plaintext comes out (sy_tls_read). Plaintext to send goes in
 * (sy_tls_write); ciphertext to write to the socket comes out (sy_tls_out_peek and
 * sy_tls_out_consume without a copy, or sy_tls_take_out with one).
 *
 * Any call may produce ciphertext to send, not only sy_tls_write: handshake flights, an alert
 * after a failure (also from sy_tls_read), a no_renegotiation warning, close_notify. After
 * every call, write out whatever sy_tls_pending_out() reports.
 *
 * Renegotiation is refused (SSL_OP_NO_RENEGOTIATION, as PostgreSQL and libpq do). A TLS 1.3
 * KeyUpdate from the peer is taken in by sy_tls_read; OpenSSL sends the answering KeyUpdate
 * ahead of the next sy_tls_write (RFC 8446 asks no sooner). Nothing a peer sends can make the engine abort:
 * bad input is an error return with a message. Each call starts and ends with an empty OpenSSL
 * error queue, so one connection's errors never show up on another.
 *
 * Single-threaded: one connection must not be used from two threads at once.
 */
#ifndef SY_TLS_H
#define SY_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A configured certificate/key/CA set (an SSL_CTX). Opaque. */
struct sy_tls_ctx;
/* One TLS connection (an SSL and its buffers). Opaque. */
struct sy_tls_conn;

/* Handshake progress (sy_tls_handshake). */
enum sy_tls_status {
    SY_TLS_WANT_MORE = 0, /* flush the output, then feed more ciphertext and call again */
    SY_TLS_DONE = 1,      /* the handshake is complete */
};

/* Errors. Negative, from one list; sy_tls_strerror() names them, sy_tls_conn_error() gives the
 * connection's own message (the OpenSSL reason). */
enum sy_tls_error {
    SY_TLS_E_FAILED = -1, /* TLS failed: bad input, a verify failure, an alert from the peer */
    SY_TLS_E_CLOSED = -2, /* the peer sent close_notify: the orderly end of its stream */
    SY_TLS_E_NOMEM = -3,  /* out of memory */
    SY_TLS_E_STATE = -4,  /* the call does not fit the state (write before the handshake, ...) */
};

/* How a client checks the server (libpq's sslmode names). */
enum sy_tls_mode {
    SY_TLS_PREFER = 1,      /* encrypt, verify nothing */
    SY_TLS_REQUIRE = 2,     /* encrypt, verify nothing (the caller refuses plaintext) */
    SY_TLS_VERIFY_CA = 3,   /* verify the chain against the CA file */
    SY_TLS_VERIFY_FULL = 4, /* verify the chain and that the certificate names the host */
};

/* What a server does with the client's ALPN offer. "postgresql" is always accepted. */
enum sy_tls_alpn {
    SY_TLS_ALPN_LENIENT = 1, /* other offers: answer without ALPN and carry on */
    SY_TLS_ALPN_STRICT = 2,  /* other offers: refuse with no_application_protocol, as
                                PostgreSQL 17 does. A client offering no ALPN at all is let
                                through either way: see sy_tls_alpn_offered(). */
};

/* Names an error code for logs ("TLS peer closed the connection", ...). Never NULL. */
const char *sy_tls_strerror(int err);

/* ---- contexts ---- */

/*
 * A server context: the certificate chain (PEM, leaf first) and its private key; with ca_file,
 * client certificates are requested and verified against it, and with require_client_cert a
 * client without one is refused. TLS 1.2 minimum, no session tickets or cache.
 * Returns the context, or NULL with a message in err naming the file and the OpenSSL reason
 * ("cannot load certificate /x/server.crt: no such file",
 * "private key /x/server.key does not match certificate /x/server.crt").
 */
struct sy_tls_ctx *sy_tls_ctx_new_server(const char *cert_file, const char *key_file,
                                         const char *ca_file, int require_client_cert,
                                         enum sy_tls_alpn alpn, char *err, size_t errlen);

/*
 * A client context. Offers ALPN "postgresql". ca_file is needed for SY_TLS_VERIFY_CA and
 * SY_TLS_VERIFY_FULL (there is no silent fallback to the system store) and ignored otherwise.
 * Returns the context, or NULL with a message in err.
 */
struct sy_tls_ctx *sy_tls_ctx_new_client(const char *ca_file, enum sy_tls_mode mode, char *err,
                                         size_t errlen);

/*
 * Drops the caller's reference. Connections made from it keep the underlying SSL_CTX alive,
 * so reloading is: make a new context, use it for new connections, free the old one.
 * NULL is ignored.
 */
void sy_tls_ctx_free(struct sy_tls_ctx *ctx);

/* ---- connections ---- */

/*
 * A connection on ctx, server or client as the context is. For a client, host is the server's
 * name or numeric address: a name is sent as SNI, and under SY_TLS_VERIFY_FULL the certificate
 * must match it (DNS SAN, or CN without SANs; an IP SAN for a numeric host). A server ignores
 * host. Returns the connection, or NULL with a message in err (out of memory, or
 * SY_TLS_VERIFY_FULL without a host).
 */
struct sy_tls_conn *sy_tls_conn_new(struct sy_tls_ctx *ctx, const char *host, char *err,
                                    size_t errlen);
/* Frees the connection and its buffers. Sends nothing (see sy_tls_shutdown). NULL is ignored. */
void sy_tls_conn_free(struct sy_tls_conn *c);

/*
 * Appends len bytes of ciphertext received from the peer (copied).
 * Returns 0, or SY_TLS_E_NOMEM.
 */
int sy_tls_feed(struct sy_tls_conn *c, const uint8_t *cipher, size_t len);

/*
 * Zero-copy input: returns room for at least want bytes at the end of the input buffer, for a
 * socket read to fill (a libuv alloc callback), and its size in *cap; NULL when out of memory.
 * The room stays valid until the next call on c; sy_tls_in_commit(c, n) then adds the n bytes
 * read. Committing 0, or not committing at all, is fine.
 */
uint8_t *sy_tls_in_space(struct sy_tls_conn *c, size_t want, size_t *cap);
void sy_tls_in_commit(struct sy_tls_conn *c, size_t n);

/*
 * Advances the handshake with the ciphertext fed so far. Returns SY_TLS_DONE (also on every
 * call after that), SY_TLS_WANT_MORE, or a negative error with the reason in
 * sy_tls_conn_error() ("certificate verify failed: unable to get local issuer certificate",
 * "wrong version number", "tlsv1 alert no application protocol"). After an error, flush the
 * output once more: it may hold an alert telling the peer why.
 */
int sy_tls_handshake(struct sy_tls_conn *c);

/*
 * Decrypts up to cap bytes of plaintext into out. Returns the count (> 0); 0 when it needs
 * more ciphertext (this includes a record that carried no data, such as a KeyUpdate);
 * SY_TLS_E_CLOSED once the peer has sent close_notify; SY_TLS_E_FAILED on a TLS error
 * (reason in sy_tls_conn_error(); a TCP EOF without close_notify is the caller's to see).
 * Call it until it returns 0: one record may fill several calls.
 */
ssize_t sy_tls_read(struct sy_tls_conn *c, uint8_t *out, size_t cap);

/*
 * Whether plaintext or ciphertext is buffered in the engine, so that sy_tls_read could return
 * data without anything new from the socket. A caller that stopped calling sy_tls_read (its
 * plaintext buffer was full) must check this when it resumes: no socket event will come for
 * bytes already received.
 */
int sy_tls_has_buffered(const struct sy_tls_conn *c);

/*
 * Encrypts all len bytes (output grows as needed). Returns len, SY_TLS_E_STATE before the
 * handshake is done or after sy_tls_shutdown, SY_TLS_E_FAILED, or SY_TLS_E_NOMEM.
 */
ssize_t sy_tls_write(struct sy_tls_conn *c, const uint8_t *plain, size_t len);

/*
 * Queues close_notify (to flush, then close the socket). Returns 0, or a negative error when
 * the connection has already failed (nothing can be sent then).
 */
int sy_tls_shutdown(struct sy_tls_conn *c);

/* Bytes of ciphertext waiting to be written to the socket. */
size_t sy_tls_pending_out(const struct sy_tls_conn *c);

/*
 * Zero-copy output: sets *data to the oldest contiguous run of waiting ciphertext and returns
 * its length (0 and NULL when nothing waits; the run may be shorter than sy_tls_pending_out).
 * The bytes stay at that address, even while later calls add output, until
 * sy_tls_out_consume() passes them or the connection is freed, so they can back a queued
 * uv_write. sy_tls_out_consume drops n bytes (at most sy_tls_pending_out) from the front.
 */
size_t sy_tls_out_peek(const struct sy_tls_conn *c, const uint8_t **data);
void sy_tls_out_consume(struct sy_tls_conn *c, size_t n);

/* Copies up to cap bytes of waiting ciphertext into out and drops them. Returns the count. */
size_t sy_tls_take_out(struct sy_tls_conn *c, uint8_t *out, size_t cap);

/* ---- what was negotiated ---- */

/* The message for the last error on c ("" if none). Valid until the next call on c. */
const char *sy_tls_conn_error(const struct sy_tls_conn *c);

/* Whether ALPN "postgresql" was agreed. 0 before the handshake is done. */
int sy_tls_alpn_ok(const struct sy_tls_conn *c);
/* Server side: whether the client offered ALPN at all (any protocol). */
int sy_tls_alpn_offered(const struct sy_tls_conn *c);

/*
 * Writes "TLSv1.3 TLS_AES_256_GCM_SHA384" (version and cipher) into out, or "none" before the
 * handshake. Returns what snprintf would.
 */
int sy_tls_describe(const struct sy_tls_conn *c, char *out, size_t cap);

/*
 * Writes the peer certificate's subject in RFC 2253 form ("CN=postgres") into out. Returns 0,
 * or -1 (and "" in out) when the peer sent no certificate.
 */
int sy_tls_peer_cert_subject(const struct sy_tls_conn *c, char *out, size_t cap);

/*
 * Whether the peer's certificate was checked against a CA and passed: a server with a CA file
 * and a client certificate, or a client in SY_TLS_VERIFY_CA / SY_TLS_VERIFY_FULL.
 */
int sy_tls_peer_verified(const struct sy_tls_conn *c);

/* The largest tls-server-end-point hash (SHA-512). */
#define SY_TLS_CERT_HASH_MAX 64

/*
 * The tls-server-end-point channel-binding data (RFC 5929, section 4.1) of the server's
 * certificate on this connection: on a server connection Switchyard's own certificate, on a
 * client connection the one the server presented. The hash is the certificate's own signature
 * hash algorithm, or SHA-256 when that is MD5 or SHA-1, as PostgreSQL computes it
 * (be_tls_get_certificate_hash, pgtls_get_peer_certificate_hash). Writes it into out (at least
 * SY_TLS_CERT_HASH_MAX bytes) and returns its length, or -1 before the handshake, without a
 * certificate, or for a signature algorithm with no single hash (Ed25519, for one).
 */
int sy_tls_cert_endpoint_hash(const struct sy_tls_conn *c, uint8_t *out);

#endif
