/*
 * PostgreSQL authentication in Switchyard: first the client proves who it is to Switchyard
 * (trust, cleartext password, md5, SCRAM-SHA-256 or a client certificate), then Switchyard logs
 * into the server itself, answering whatever the server asks with the secrets it has: a password
 * from the auth file or from the client, a stored md5 hash, or, for SCRAM, the ClientKey
 * recovered from the client's own proof when the server holds the same verifier.
 *
 * Failures look exactly like PostgreSQL's: an unknown user goes through a full mock exchange
 * (a salt derived from the user name and a per-process secret) and fails with 28P01, as a wrong
 * password does, so a client learns nothing about which users exist. No secret is ever logged.
 */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth_query.h"
#include "config/auth_file.h"
#include "log.h"
#include "pg_derive.h"
#include "pg_session.h"
#include "tls.h"

#define AUTH_OK 0
#define AUTH_CLEARTEXT 3
#define AUTH_MD5 5
#define AUTH_SASL 10
#define AUTH_SASL_CONTINUE 11
#define AUTH_SASL_FINAL 12

/* ---- small helpers ---- */

static void auth_failed(struct sy_session *sess, const char *why)
{
    char msg[160];
    sess->proxy->auth_failures++;
    /* The log says why; the client hears only what PostgreSQL would say. */
    sy_session_log(sess, SY_LOG_INFO, "authentication failed: %s", why);
    snprintf(msg, sizeof(msg), "password authentication failed for user \"%s\"", sess->user);
    pg_session_fail(sess, "28P01", msg);
}

/* Sends an Authentication request with a code and optional extra bytes. */
static int send_auth_request(struct sy_session *sess, uint32_t code, const void *extra, size_t n)
{
    uint8_t msg[64];
    if (n > sizeof(msg) - 9)
        return -1;
    msg[0] = PG_BE_AUTH;
    pg_put_u32(msg + 1, (uint32_t)(8 + n));
    pg_put_u32(msg + 5, code);
    if (n)
        memcpy(msg + 9, extra, n);
    return sy_conn_send(&sess->client, msg, 9 + n);
}

int pg_front_message(struct sy_conn *c, uint32_t max)
{
    struct pg_header h;
    int rc = pg_header_read(c->buf, c->len, max, &h, NULL);
    if (rc <= 0)
        return rc;
    size_t total = (size_t)h.len + 1;
    if (total > c->cap)
        return PG_E_TOO_LARGE;
    return c->len >= total ? (int)total : 0;
}

/* HMAC-SHA-256(mock_secret, user): the fake salt for a user with no secret. */
static void mock_salt(struct sy_session *sess, uint8_t out[PG_CRYPTO_KEY_LEN])
{
    pg_crypto_client_signature(sess->proxy->mock_secret, sess->user, strlen(sess->user), out);
}

/* ---- the client's secret ---- */

static void load_secret(struct sy_session *sess, struct pg_sess *ps)
{
    const struct sy_auth_file *af = sess->proxy->auth_file;
    const struct sy_auth_entry *e = af ? sy_auth_file_find(af, sess->user) : NULL;
    ps->user_known = 0;
    if (!e || e->kind == SY_SECRET_NONE || strlen(e->secret) >= sizeof(ps->secret))
        return;
    snprintf(ps->secret, sizeof(ps->secret), "%s", e->secret);
    ps->secret_kind = e->kind;
    ps->user_known = 1;
}

/* The session a derivation was for, if it is still open (closing sessions are unlinked). */
static struct sy_session *session_by_id(struct sy_proxy *p, uint64_t id)
{
    for (struct sy_session *s = p->sessions; s; s = s->next)
        if (s->id == id)
            return s->phase == SY_PHASE_CLOSING ? NULL : s;
    return NULL;
}

static void on_derived(void *ctx, uint64_t session_id, uint64_t token,
                       const struct pg_derive_keys *keys);

/* Starts a key derivation for the client's side of the login; the client is not read until it
 * is back (client_derived). Returns 0, or -1 when it could not be queued. */
static int client_derive(struct sy_session *sess, struct pg_sess *ps, enum pg_client_derive what,
                         const char *pw, size_t n, const struct pg_scram_verifier *v)
{
    ps->derive_token = pg_derive_submit(sess->proxy->loop, pw, n, v->salt, v->salt_len,
                                        v->iterations, on_derived, sess->proxy, sess->id);
    if (ps->derive_token == 0)
        return -1;
    ps->derive_for = (uint8_t)what;
    sy_conn_pause(&sess->client);
    return 0;
}

/* Fills ps->verifier: the stored one, a mock, or one derived from a plain password. Returns 0
 * when it is ready, 1 when its keys are being derived (see verifier_derived), -1 on failure. */
static int prepare_verifier(struct sy_session *sess, struct pg_sess *ps)
{
    uint8_t salt[PG_CRYPTO_KEY_LEN];
    if (ps->user_known && ps->secret_kind == SY_SECRET_SCRAM) {
        if (pg_scram_parse_verifier((const uint8_t *)ps->secret, strlen(ps->secret), &ps->verifier,
                                    NULL) > 0)
            return 0;
        sy_session_log(sess, SY_LOG_WARN, "the auth_file verifier for this user is malformed");
        ps->user_known = 0;
    }
    mock_salt(sess, salt);
    ps->verifier.iterations = PG_CRYPTO_SCRAM_ITERATIONS;
    ps->verifier.salt_len = PG_CRYPTO_SCRAM_SALT_LEN;
    memcpy(ps->verifier.salt, salt, PG_CRYPTO_SCRAM_SALT_LEN);
    if (ps->user_known && ps->secret_kind == SY_SECRET_PLAIN)
        return client_derive(sess, ps, PG_DERIVE_VERIFIER, ps->secret, strlen(ps->secret),
                             &ps->verifier) == 0 ? 1 : -1;
    /* A user whose secret cannot do SCRAM (none, or an md5 hash) gets keys nothing matches. */
    ps->user_known = 0;
    return pg_crypto_random(ps->verifier.stored_key, PG_CRYPTO_KEY_LEN) |
           pg_crypto_random(ps->verifier.server_key, PG_CRYPTO_KEY_LEN);
}

/* ---- after the client is authenticated ---- */

static int client_authenticated(struct sy_session *sess)
{
    struct pg_sess *ps = pg_sess_of(sess);
    sy_session_log(sess, SY_LOG_DEBUG, "client authenticated (%s); logging into the %s server",
                   sy_auth_type_name(ps->auth), sy_side_name(sess->side));
    ps->stage = PG_STAGE_SERVER_LOGIN;
    ps->sl.step = PG_SL_CONNECTING;
    ps->sl.scratch = ps->login;
    sy_conn_pause(&sess->client);
    if (sess->proxy->paused) {
        /* A cutover may be under way: log into whichever side is active when it ends. */
        sess->wait_server = 1;
        sy_session_hold(sess);
        return 0;
    }
    return sy_session_connect_server(sess);
}

static int auth_challenge(struct sy_session *sess);

int pg_auth_client_begin(struct sy_session *sess)
{
    struct pg_sess *ps = pg_sess_of(sess);
    const struct sy_config *cfg = &sess->proxy->cfg;
    ps->auth = sy_config_user_auth(cfg, sess->user);
    ps->stage = PG_STAGE_CLIENT_AUTH;
    ps->login = calloc(1, sizeof(*ps->login));
    if (!ps->login) {
        pg_session_fail(sess, "53200", "switchyard is out of memory");
        return -1;
    }
    load_secret(sess, ps);
    if (!ps->user_known && cfg->auth_user[0] &&
        (ps->auth == SY_AUTH_SCRAM || ps->auth == SY_AUTH_MD5 || ps->auth == SY_AUTH_PASSWORD)) {
        /* Not in the auth file: ask the active database, and hold the client meanwhile. */
        if (sy_auth_query_submit(sess) != 0) {
            pg_session_fail(sess, "53200", "switchyard is out of memory");
            return -1;
        }
        ps->waiting_query = 1;
        sy_conn_pause(&sess->client);
        return 0;
    }
    return auth_challenge(sess);
}

/* What kind of secret a string is, the way PostgreSQL tells them apart. */
static int secret_kind_of(const char *s)
{
    size_t n = strlen(s);
    if (strncmp(s, "SCRAM-SHA-256$", 14) == 0)
        return SY_SECRET_SCRAM;
    if (n == 35 && strncmp(s, "md5", 3) == 0 && strspn(s + 3, "0123456789abcdef") == 32)
        return SY_SECRET_MD5;
    return n ? SY_SECRET_PLAIN : SY_SECRET_NONE;
}

void pg_auth_query_done(struct sy_session *sess, enum sy_aq_result result, const char *secret)
{
    struct pg_sess *ps = pg_sess_of(sess);
    if (!ps->waiting_query || sess->phase == SY_PHASE_CLOSING)
        return;
    ps->waiting_query = 0;
    if (result == SY_AQ_ERROR) {
        pg_session_fail(sess, "08006",
                        "switchyard could not look up the user with auth_query; see its log");
        return;
    }
    if (result == SY_AQ_FOUND && strlen(secret) < sizeof(ps->secret)) {
        snprintf(ps->secret, sizeof(ps->secret), "%s", secret);
        ps->secret_kind = secret_kind_of(secret);
        ps->user_known = ps->secret_kind != SY_SECRET_NONE;
    }
    sy_conn_resume(&sess->client);
    if (auth_challenge(sess) == 0 && sess->phase != SY_PHASE_CLOSING)
        sy_conn_pump(&sess->client);
}

/* AuthenticationSASL: the verifier is ready, the client may start its SCRAM exchange. */
static int offer_scram(struct sy_session *sess, struct pg_sess *ps)
{
    uint8_t msg[64];
    /* On TLS, SCRAM-SHA-256-PLUS too, bound to Switchyard's own certificate (as PostgreSQL
     * offers it whenever the connection is TLS). */
    int h = sess->client.tls ? sy_tls_cert_endpoint_hash(sess->client.tls, ps->login->cbind_data)
                             : -1;
    ps->login->plus_offered = h > 0;
    ps->login->cbind_len = h > 0 ? (size_t)h : 0;
    int n = pg_scram_be_write_auth_sasl(msg, sizeof(msg), ps->login->plus_offered);
    ps->ca_step = PG_CA_SASL_INITIAL;
    return n > 0 ? sy_conn_send(&sess->client, msg, (size_t)n) : -1;
}

/* Asks the client to prove who it is, by the method configured for its user. */
static int auth_challenge(struct sy_session *sess)
{
    struct pg_sess *ps = pg_sess_of(sess);
    const struct sy_config *cfg = &sess->proxy->cfg;
    switch (ps->auth) {
    case SY_AUTH_TRUST:
        return client_authenticated(sess);
    case SY_AUTH_CERT: {
        char subject[256], want[128];
        snprintf(want, sizeof(want), "CN=%s", sess->user);
        if (!sess->client.tls || !sy_tls_peer_verified(sess->client.tls) ||
            sy_tls_peer_cert_subject(sess->client.tls, subject, sizeof(subject)) != 0 ||
            (strcmp(subject, want) != 0 && !strstr(subject, want))) {
            char msg[160];
            sess->proxy->auth_failures++;
            snprintf(msg, sizeof(msg), "certificate authentication failed for user \"%s\"",
                     sess->user);
            pg_session_fail(sess, "28000", msg);
            return -1;
        }
        return client_authenticated(sess);
    }
    case SY_AUTH_PASSWORD:
        if (!sess->client.tls && !cfg->auth_cleartext_without_tls) {
            pg_session_fail(sess, "28000",
                            "switchyard refuses cleartext passwords without TLS: connect with "
                            "sslmode=require, or set auth_allow_cleartext_without_tls = on");
            return -1;
        }
        ps->ca_step = PG_CA_PASSWORD;
        return send_auth_request(sess, AUTH_CLEARTEXT, NULL, 0);
    case SY_AUTH_MD5:
        /* As in PostgreSQL: a user whose secret is a SCRAM verifier is asked for SCRAM. */
        if (!(ps->user_known && ps->secret_kind == SY_SECRET_SCRAM)) {
            ps->ca_step = PG_CA_MD5;
            pg_crypto_random(ps->login->md5_salt, sizeof(ps->login->md5_salt));
            return send_auth_request(sess, AUTH_MD5, ps->login->md5_salt, sizeof(ps->login->md5_salt));
        }
        /* fall through */
    case SY_AUTH_SCRAM: {
        int rc = prepare_verifier(sess, ps);
        if (rc < 0) {
            pg_session_fail(sess, "XX000", "switchyard could not prepare a SCRAM exchange");
            return -1;
        }
        return rc == 0 ? offer_scram(sess, ps) : 0;
    }
    }
    return -1;
}

/* ---- the client's answers ---- */

static int check_password(struct sy_session *sess, struct pg_sess *ps, const char *pw, size_t n)
{
    if (!ps->user_known)
        return -1;
    switch (ps->secret_kind) {
    case SY_SECRET_PLAIN:
        return strlen(ps->secret) == n && CRYPTO_memcmp(ps->secret, pw, n) == 0 ? 0 : -1;
    case SY_SECRET_MD5: {
        char stored[PG_CRYPTO_MD5_LEN + 1];
        if (pg_crypto_md5_stored(pw, sess->user, stored) < 0)
            return -1;
        return CRYPTO_memcmp(stored, ps->secret, PG_CRYPTO_MD5_LEN + 1) == 0 ? 0 : -1;
    }
    }
    return -1;
}

/* A cleartext password against the user's SCRAM verifier: its keys are derived on a worker
 * (password_checked has the answer). The password waits in ps->password when it fits, to log
 * into the server with later. Returns 0, or -1 when the session was failed. */
static int check_scram_password(struct sy_session *sess, struct pg_sess *ps, const char *pw,
                                size_t n)
{
    struct pg_scram_verifier v;
    if (pg_scram_parse_verifier((const uint8_t *)ps->secret, strlen(ps->secret), &v, NULL) <= 0) {
        auth_failed(sess, "the user's SCRAM verifier is malformed");
        return -1;
    }
    if (n < sizeof(ps->password)) {
        memcpy(ps->password, pw, n);
        ps->password[n] = 0;
        ps->login->password_kept = 1;
    }
    int rc = client_derive(sess, ps, PG_DERIVE_PASSWORD, pw, n, &v);
    OPENSSL_cleanse(&v, sizeof(v));
    if (rc != 0) {
        pg_session_fail(sess, "53200", "switchyard is out of memory");
        return -1;
    }
    return 0;
}

static int on_password(struct sy_session *sess, struct pg_sess *ps, const uint8_t *body, size_t n)
{
    const uint8_t *nul = memchr(body, 0, n);
    if (!nul || (size_t)(nul - body) + 1 != n) {
        pg_session_fail(sess, "08P01", "invalid password packet");
        return -1;
    }
    size_t pl = (size_t)(nul - body);
    if (ps->ca_step == PG_CA_MD5) {
        char stored[PG_CRYPTO_MD5_LEN + 1];
        const char *s = NULL;
        if (ps->user_known && ps->secret_kind == SY_SECRET_MD5)
            s = ps->secret;
        else if (ps->user_known && ps->secret_kind == SY_SECRET_PLAIN &&
                 pg_crypto_md5_stored(ps->secret, sess->user, stored) > 0)
            s = stored;
        if (!s || pg_crypto_md5_verify(s, ps->login->md5_salt, (const char *)body, pl) != 0) {
            auth_failed(sess, s ? "wrong md5 password" : "no usable secret for md5");
            return -1;
        }
        return client_authenticated(sess);
    }
    if (ps->user_known && ps->secret_kind == SY_SECRET_SCRAM)
        return check_scram_password(sess, ps, (const char *)body, pl);
    if (check_password(sess, ps, (const char *)body, pl) != 0) {
        auth_failed(sess, ps->user_known ? "wrong password" : "unknown user");
        return -1;
    }
    if (pl < sizeof(ps->password)) {
        memcpy(ps->password, body, pl + 1);
        ps->have_password = 1;
    }
    return client_authenticated(sess);
}

/* The keys of the user's plain secret are back: the verifier is ready, offer SCRAM. */
static int verifier_derived(struct sy_session *sess, struct pg_sess *ps,
                            const struct pg_derive_keys *keys)
{
    if (keys->rc != 0) {
        sy_session_log(sess, SY_LOG_ERROR, "deriving the SCRAM verifier failed: %s",
                       pg_crypto_strerror(keys->rc));
        pg_session_fail(sess, "XX000", "switchyard could not prepare a SCRAM exchange");
        return -1;
    }
    memcpy(ps->verifier.stored_key, keys->stored_key, PG_CRYPTO_KEY_LEN);
    memcpy(ps->verifier.server_key, keys->server_key, PG_CRYPTO_KEY_LEN);
    return offer_scram(sess, ps);
}

/* The keys of a cleartext password are back: they must be the user's verifier's. */
static int password_checked(struct sy_session *sess, struct pg_sess *ps,
                            const struct pg_derive_keys *keys)
{
    struct pg_scram_verifier v;
    int ok = keys->rc == 0 &&
             pg_scram_parse_verifier((const uint8_t *)ps->secret, strlen(ps->secret), &v,
                                     NULL) > 0 &&
             CRYPTO_memcmp(keys->stored_key, v.stored_key, PG_CRYPTO_KEY_LEN) == 0 &&
             CRYPTO_memcmp(keys->server_key, v.server_key, PG_CRYPTO_KEY_LEN) == 0;
    OPENSSL_cleanse(&v, sizeof(v));
    if (!ok) {
        OPENSSL_cleanse(ps->password, sizeof(ps->password));
        auth_failed(sess, keys->rc != 0 ? pg_crypto_strerror(keys->rc) : "wrong password");
        return -1;
    }
    ps->have_password = ps->login->password_kept;
    return client_authenticated(sess);
}

/* A client-side derivation is back (the session is open and still waiting for it). */
static void client_derived(struct sy_session *sess, struct pg_sess *ps,
                           const struct pg_derive_keys *keys)
{
    uint8_t what = ps->derive_for;
    ps->derive_for = 0;
    int rc = what == PG_DERIVE_VERIFIER ? verifier_derived(sess, ps, keys)
                                        : password_checked(sess, ps, keys);
    if (sess->phase == SY_PHASE_CLOSING)
        return;
    if (rc != 0) {
        pg_session_fail(sess, "XX000", "switchyard failed during authentication");
        return;
    }
    if (ps->stage == PG_STAGE_CLIENT_AUTH && !ps->derive_token) {
        /* A message the client pipelined meanwhile is handled now. */
        sy_conn_resume(&sess->client);
        sy_conn_pump(&sess->client);
    }
}

static int on_sasl_initial(struct sy_session *sess, struct pg_sess *ps, const uint8_t *body,
                           size_t n)
{
    struct pg_scram_sasl_initial init;
    struct pg_scram_client_first cf;
    if (pg_scram_fe_parse_sasl_initial(body, n, &init, NULL) < 0 || !init.has_data) {
        pg_session_fail(sess, "08P01", "malformed SASLInitialResponse");
        return -1;
    }
    if (strcmp(init.mechanism, PG_SCRAM_MECHANISM) != 0 &&
        !(ps->login->plus_offered && strcmp(init.mechanism, PG_SCRAM_MECHANISM_PLUS) == 0)) {
        pg_session_fail(sess, "08P01", "client selected an invalid SASL authentication mechanism");
        return -1;
    }
    if (pg_scram_fe_parse_client_first(init.data, init.data_len, &cf, NULL) < 0) {
        pg_session_fail(sess, "08P01", "malformed SCRAM client-first-message");
        return -1;
    }
    enum pg_scram_cbind_verdict v =
        pg_scram_be_cbind_verdict(ps->login->plus_offered, init.mechanism, &cf);
    if (v != PG_SCRAM_CB_OK) {
        char msg[200];
        if (v == PG_SCRAM_CB_BAD_TYPE)
            snprintf(msg, sizeof(msg), "%s \"%.*s\"", pg_scram_cbind_verdict_message(v),
                     (int)cf.cbind_name.len, cf.cbind_name.ptr); /* the parser checked it: short, printable */
        else
            snprintf(msg, sizeof(msg), "%s", pg_scram_cbind_verdict_message(v));
        if (v == PG_SCRAM_CB_DOWNGRADE)
            sy_session_log(sess, SY_LOG_WARN, "the client supports SCRAM channel binding but was "
                           "told switchyard does not: refused (a downgrade, possibly by someone "
                           "in the middle)");
        pg_session_fail(sess, pg_scram_cbind_verdict_sqlstate(v), msg);
        return -1;
    }
    ps->login->plus_chosen = cf.cbind_flag == PG_SCRAM_CBIND_P;
    if (cf.bare.len >= sizeof(ps->login->client_first_bare) || cf.gs2_header.len >= sizeof(ps->login->gs2_header) ||
        cf.nonce.len + PG_CRYPTO_NONCE_LEN >= sizeof(ps->login->nonce)) {
        pg_session_fail(sess, "08P01", "SCRAM client-first-message too long");
        return -1;
    }
    memcpy(ps->login->client_first_bare, cf.bare.ptr, cf.bare.len);
    ps->login->client_first_bare_len = cf.bare.len;
    memcpy(ps->login->gs2_header, cf.gs2_header.ptr, cf.gs2_header.len);
    ps->login->gs2_header[cf.gs2_header.len] = 0;
    memcpy(ps->login->nonce, cf.nonce.ptr, cf.nonce.len);
    ps->login->client_nonce_len = cf.nonce.len;
    char server_nonce[PG_CRYPTO_NONCE_LEN + 1];
    if (pg_crypto_scram_nonce(server_nonce) != 0)
        return -1;
    memcpy(ps->login->nonce + cf.nonce.len, server_nonce, PG_CRYPTO_NONCE_LEN + 1);
    int w = pg_scram_be_write_server_first(ps->login->server_first, sizeof(ps->login->server_first),
                                           cf.nonce.ptr, cf.nonce.len, server_nonce,
                                           PG_CRYPTO_NONCE_LEN, ps->verifier.salt,
                                           ps->verifier.salt_len, ps->verifier.iterations);
    if (w < 0)
        return -1;
    ps->login->server_first_len = (size_t)w;
    uint8_t msg[PG_SCRAM_MSG_MAX + 16];
    int m = pg_scram_be_write_auth_sasl_continue(msg, sizeof(msg), ps->login->server_first, (size_t)w);
    ps->ca_step = PG_CA_SASL_FINAL;
    return m > 0 ? sy_conn_send(&sess->client, msg, (size_t)m) : -1;
}

static int on_sasl_final(struct sy_session *sess, struct pg_sess *ps, const uint8_t *body,
                         size_t n)
{
    struct pg_scram_client_final fin;
    char auth_msg[3 * PG_SCRAM_MSG_MAX];
    size_t nl = strlen(ps->login->nonce);
    if (pg_scram_fe_parse_client_final(body, n, ps->login->nonce, nl, &fin, NULL) < 0) {
        pg_session_fail(sess, "08P01", "malformed SCRAM client-final-message");
        return -1;
    }
    /* c= must be the gs2 header again, followed, when bound, by the hash of the certificate
     * Switchyard presented: a client that talks to someone in the middle sees another. */
    size_t h = strlen(ps->login->gs2_header);
    size_t extra = ps->login->plus_chosen ? ps->login->cbind_len : 0;
    if (fin.cbind_len != h + extra || memcmp(fin.cbind, ps->login->gs2_header, h) != 0 ||
        (extra && memcmp(fin.cbind + h, ps->login->cbind_data, extra) != 0)) {
        if (ps->login->plus_chosen)
            sy_session_log(sess, SY_LOG_WARN, "SCRAM channel binding check failed: the client "
                           "saw another server certificate (someone in the middle?)");
        pg_session_fail(sess, ps->login->plus_chosen ? "28000" : "08P01",
                        ps->login->plus_chosen
                            ? "SCRAM channel binding check failed"
                            : "unexpected SCRAM channel-binding attribute in client-final-message");
        return -1;
    }
    struct pg_scram_view bare = {ps->login->client_first_bare, ps->login->client_first_bare_len};
    struct pg_scram_view sfirst = {ps->login->server_first, ps->login->server_first_len};
    int am = pg_scram_write_auth_message(auth_msg, sizeof(auth_msg), bare, sfirst,
                                         fin.without_proof);
    if (am < 0 || !ps->user_known ||
        pg_crypto_verify_client_proof(ps->verifier.stored_key, auth_msg, (size_t)am, fin.proof,
                                      ps->client_key) != 0) {
        auth_failed(sess, ps->user_known ? "wrong SCRAM proof" : "unknown user");
        return -1;
    }
    ps->have_client_key = 1;
    uint8_t sig[PG_CRYPTO_KEY_LEN];
    char final[64];
    uint8_t msg[128];
    if (pg_crypto_server_signature(ps->verifier.server_key, auth_msg, (size_t)am, sig) != 0)
        return -1;
    int f = pg_scram_be_write_server_final(final, sizeof(final), sig);
    int m = f > 0 ? pg_scram_be_write_auth_sasl_final(msg, sizeof(msg), final, (size_t)f) : -1;
    if (m < 0 || sy_conn_send(&sess->client, msg, (size_t)m) != 0)
        return -1;
    return client_authenticated(sess);
}

int pg_auth_client_data(struct sy_session *sess)
{
    struct pg_sess *ps = pg_sess_of(sess);
    struct sy_conn *c = &sess->client;
    /* While a lookup or a derivation is out, the next message waits in the buffer. */
    while (ps->stage == PG_STAGE_CLIENT_AUTH && !ps->waiting_query && !ps->derive_token &&
           c->len > 0) {
        int total = pg_front_message(c, 65536);
        if (total == 0)
            return 0;
        if (total < 0 || (c->buf[0] != PG_FE_PASSWORD && c->buf[0] != PG_FE_TERMINATE)) {
            sess->proxy->protocol_errors++;
            pg_session_fail(sess, "08P01", "expected a password response from the client");
            return -1;
        }
        if (c->buf[0] == PG_FE_TERMINATE) {
            sy_session_close(sess, "client gave up during authentication");
            return -1;
        }
        const uint8_t *body = c->buf + PG_HEADER_LEN;
        size_t n = (size_t)total - PG_HEADER_LEN;
        int rc;
        switch (ps->ca_step) {
        case PG_CA_PASSWORD:
        case PG_CA_MD5: rc = on_password(sess, ps, body, n); break;
        case PG_CA_SASL_INITIAL: rc = on_sasl_initial(sess, ps, body, n); break;
        case PG_CA_SASL_FINAL: rc = on_sasl_final(sess, ps, body, n); break;
        default: rc = -1; break;
        }
        if (sess->phase == SY_PHASE_CLOSING)
            return -1;
        sy_conn_consume(c, (size_t)total);
        if (rc != 0) {
            pg_session_fail(sess, "XX000", "switchyard failed during authentication");
            return -1;
        }
    }
    return 0;
}

/* ---- Switchyard logging into the server ---- */

/* A login failed: the client hears it, or, for a standby login, the switch does (the client
 * never notices). */
static void login_fail(struct sy_session *sess, struct pg_server_login *L, const char *sqlstate,
                       const char *msg)
{
    if (L->standby)
        sy_conn_failed(L->conn, msg);
    else
        pg_session_fail(sess, sqlstate, msg);
}

static void server_login_failed(struct sy_session *sess, struct pg_server_login *L,
                                const char *sqlstate, const char *fmt, const char *detail)
{
    char msg[400];
    snprintf(msg, sizeof(msg), fmt, sy_side_name(L->side), sess->user, detail ? detail : "");
    login_fail(sess, L, sqlstate, msg);
}

/* The StartupMessage for the server: the client's parameters, protocol 3.0, and no protocol
 * extensions (_pq_.*), which Switchyard answered for the client itself. */
static int send_startup(struct sy_session *sess, struct pg_sess *ps, struct pg_server_login *L)
{
    struct pg_startup st;
    if (pg_fe_parse_startup(ps->startup, ps->startup_len, (uint32_t)ps->startup_len, &st, NULL) <= 0)
        return -1;
    struct pg_param params[PG_STARTUP_PARAMS_MAX];
    size_t n = 0;
    for (size_t i = 0; i < st.nparams; i++)
        if (strncmp(st.params[i].name, "_pq_.", 5) != 0)
            params[n++] = st.params[i];
    if (L->read_only && n < PG_STARTUP_PARAMS_MAX) {
        /* Last, so it wins over a value of the client's own. */
        params[n].name = "default_transaction_read_only";
        params[n++].value = "on";
    }
    size_t cap = ps->startup_len + 64; /* room for the read-only parameter */
    uint8_t *pkt = malloc(cap);
    int len = pkt ? pg_fe_write_startup(pkt, cap, PG_PROTO_V3, params, n) : -1;
    if (len <= 0) {
        free(pkt);
        login_fail(sess, L, "53200", "switchyard could not build the startup packet");
        return -1;
    }
    int rc = sy_conn_send(L->conn, pkt, (size_t)len);
    free(pkt);
    L->step = PG_SL_AUTH;
    return rc;
}

int pg_auth_server_connected(struct sy_session *sess, struct pg_server_login *L)
{
    struct pg_sess *ps = pg_sess_of(sess);
    const struct sy_server_config *sc = &sess->proxy->cfg.server[L->side];
    if (sc->tls != SY_SERVER_TLS_DISABLE && sess->proxy->server_tls_ctx[L->side]) {
        uint8_t req[8];
        pg_put_u32(req, 8);
        pg_put_u32(req + 4, PG_CODE_SSL);
        L->step = PG_SL_TLS_ANSWER;
        return sy_conn_send_raw(L->conn, req, sizeof(req));
    }
    return send_startup(sess, ps, L);
}

int pg_auth_server_tls_ready(struct sy_session *sess, struct pg_server_login *L)
{
    return send_startup(sess, pg_sess_of(sess), L);
}

static int tls_answer(struct sy_session *sess, struct pg_sess *ps, struct pg_server_login *L)
{
    struct sy_conn *c = L->conn;
    const struct sy_server_config *sc = &sess->proxy->cfg.server[L->side];
    uint8_t answer = c->buf[0];
    if (answer == 'S') {
        if (c->len > 1) {
            /* Bytes before the handshake could only have been injected (CVE-2021-23214). */
            sess->proxy->protocol_errors++;
            login_fail(sess, L, "08P01", "the server sent unexpected data after its TLS answer");
            return -1;
        }
        sy_conn_consume(c, 1);
        L->step = PG_SL_TLS;
        return sy_conn_start_tls(c, sess->proxy->server_tls_ctx[L->side], sc->host, NULL, 0);
    }
    if (answer == 'N') {
        sy_conn_consume(c, 1);
        if (sc->tls != SY_SERVER_TLS_PREFER) {
            server_login_failed(sess, L, "08006",
                                "the %s server refused TLS (server_tls = require or verify-*); "
                                "user %s not logged in%s", NULL);
            return -1;
        }
        return send_startup(sess, ps, L);
    }
    sess->proxy->protocol_errors++;
    login_fail(sess, L, "08P01", "the server sent an invalid answer to SSLRequest");
    return -1;
}

/* Whether the client authenticated to Switchyard with a password-based method: then a server
 * that refuses the login must be allowed to say so itself (see sasl_continue). */
static int client_proved_password(const struct pg_sess *ps)
{
    return ps->auth == SY_AUTH_SCRAM || ps->auth == SY_AUTH_MD5 || ps->auth == SY_AUTH_PASSWORD;
}

static int sasl_start(struct sy_session *sess, struct pg_sess *ps, struct pg_server_login *L,
                      const struct pg_scram_auth_sasl *a)
{
    if (!a->offers_scram) {
        server_login_failed(sess, L, "28000", "the %s server offers no SCRAM-SHA-256 for user %s%s",
                            NULL);
        return -1;
    }
    if (!ps->have_password && !ps->have_client_key &&
        !(ps->user_known && ps->secret_kind == SY_SECRET_PLAIN) && !client_proved_password(ps)) {
        server_login_failed(sess, L, "28000",
                            "switchyard cannot log into the %s server as %s: it asks for SCRAM "
                            "and switchyard has neither the password nor the client's SCRAM "
                            "keys%s (put the password in auth_file, or have clients use SCRAM)",
                            NULL);
        return -1;
    }
    char first[PG_SCRAM_MSG_MAX];
    size_t bare_off = 0;
    struct pg_login *x = L->scratch;
    if (pg_crypto_scram_nonce(x->sl_nonce) != 0)
        return -1;
    /* As libpq: over TLS, bind to the certificate the server presented when it offers
     * SCRAM-SHA-256-PLUS; otherwise say "y" (able to bind, not offered), so that a server that
     * can bind refuses a list someone stripped. Without TLS, "n". */
    enum pg_scram_cbind_flag flag = PG_SCRAM_CBIND_N;
    int h = L->conn->tls ? sy_tls_cert_endpoint_hash(L->conn->tls, x->sl_cbind) : -1;
    if (h > 0 && a->offers_scram_plus)
        flag = PG_SCRAM_CBIND_P;
    else if (h > 0)
        flag = PG_SCRAM_CBIND_Y;
    x->sl_cbind_len = flag == PG_SCRAM_CBIND_P ? (size_t)h : 0;
    int n = pg_scram_fe_write_client_first(first, sizeof(first), flag,
                                           PG_SCRAM_CBIND_TLS_SERVER_END_POINT, x->sl_nonce,
                                           PG_CRYPTO_NONCE_LEN, &bare_off);
    if (n < 0 || bare_off >= sizeof(x->sl_gs2))
        return -1;
    memcpy(x->sl_gs2, first, bare_off);
    x->sl_gs2[bare_off] = 0;
    x->sl_client_first_bare_len = (size_t)n - bare_off;
    memcpy(x->sl_client_first_bare, first + bare_off, x->sl_client_first_bare_len);
    const char *mech = flag == PG_SCRAM_CBIND_P ? PG_SCRAM_MECHANISM_PLUS : PG_SCRAM_MECHANISM;
    sy_session_log(sess, SY_LOG_DEBUG, "logging into the %s server with %s%s",
                   sy_side_name(L->side), mech,
                   flag == PG_SCRAM_CBIND_P ? " (channel binding tls-server-end-point)" : "");
    uint8_t msg[PG_SCRAM_MSG_MAX + 64];
    int m = pg_scram_fe_write_sasl_initial(msg, sizeof(msg), mech, first, (size_t)n);
    return m > 0 ? sy_conn_send(L->conn, msg, (size_t)m) : -1;
}

/* The cleartext password Switchyard has for the user: the client's, or auth_file's; or NULL. */
static const char *login_password(const struct pg_sess *ps)
{
    if (ps->have_password)
        return ps->password;
    return ps->user_known && ps->secret_kind == SY_SECRET_PLAIN ? ps->secret : NULL;
}

/* Pass-through: the keys recovered from the client's own SCRAM exchange, usable only when the
 * server holds the same verifier the client was checked against. Returns 0 or -1. */
static int passthrough_keys(struct pg_sess *ps, const uint8_t *salt, size_t salt_len,
                            uint32_t iter, uint8_t ck[PG_CRYPTO_KEY_LEN],
                            uint8_t sk[PG_CRYPTO_KEY_LEN], uint8_t svk[PG_CRYPTO_KEY_LEN])
{
    if (!ps->have_client_key || ps->verifier.salt_len != salt_len ||
        memcmp(ps->verifier.salt, salt, salt_len) != 0 || ps->verifier.iterations != iter)
        return -1;
    memcpy(ck, ps->client_key, PG_CRYPTO_KEY_LEN);
    memcpy(sk, ps->verifier.stored_key, PG_CRYPTO_KEY_LEN);
    memcpy(svk, ps->verifier.server_key, PG_CRYPTO_KEY_LEN);
    return 0;
}

/* The server's challenge names the cost of answering it: refuse a count over the limit before
 * any work is done (a hostile server, or anyone in the middle of an unverified connection,
 * could otherwise make each login cost minutes of CPU). Returns 0, or -1 when L failed. */
static int check_iterations(struct sy_session *sess, struct pg_server_login *L, uint32_t iter)
{
    uint32_t max = sess->proxy->cfg.server_scram_max_iterations;
    char msg[400];
    if (iter < 1) {
        sess->proxy->protocol_errors++;
        login_fail(sess, L, "08P01", "the server sent a SCRAM challenge with no iterations");
        return -1;
    }
    if (iter <= max)
        return 0;
    snprintf(msg, sizeof(msg),
             "the %s server asked for %u SCRAM iterations to log in user %s, more than "
             "server_scram_max_iterations (%u); raise server_scram_max_iterations if the "
             "server really uses that many",
             sy_side_name(L->side), iter, sess->user, max);
    login_fail(sess, L, "08006", msg);
    return -1;
}

/* AuthMessage and client-final-message-without-proof into the scratch, from the server's
 * first message (a) and its nonce. They do not depend on the keys. Returns 0 or -1. */
static int sasl_auth_message(struct pg_server_login *L, const struct pg_scram_auth_sasl *a,
                             const struct pg_scram_server_first *sf)
{
    struct pg_login *x = L->scratch;
    int w = pg_scram_fe_write_client_final_without_proof(
        x->sl_without_proof, sizeof(x->sl_without_proof), x->sl_gs2, strlen(x->sl_gs2),
        x->sl_cbind_len ? x->sl_cbind : NULL, x->sl_cbind_len, (const char *)sf->nonce.ptr,
        sf->nonce.len);
    if (w <= 0)
        return -1;
    x->sl_without_proof_len = (size_t)w;
    struct pg_scram_view bare = {x->sl_client_first_bare, x->sl_client_first_bare_len};
    struct pg_scram_view sfirst = {(const char *)a->data, a->data_len};
    struct pg_scram_view wp = {x->sl_without_proof, x->sl_without_proof_len};
    int am = pg_scram_write_auth_message(x->sl_auth_message, sizeof(x->sl_auth_message), bare,
                                         sfirst, wp);
    if (am <= 0)
        return -1;
    x->sl_auth_message_len = (size_t)am;
    return 0;
}

/* The client-final-message with its proof from ClientKey and StoredKey. Returns 0, or -1
 * (the session may have been closed). */
static int sasl_send_proof(struct pg_server_login *L, const uint8_t ck[PG_CRYPTO_KEY_LEN],
                           const uint8_t sk[PG_CRYPTO_KEY_LEN])
{
    struct pg_login *x = L->scratch;
    uint8_t proof[PG_CRYPTO_KEY_LEN];
    char final[PG_SCRAM_MSG_MAX];
    uint8_t msg[PG_SCRAM_MSG_MAX + 16];
    if (pg_crypto_client_proof(ck, sk, x->sl_auth_message, x->sl_auth_message_len, proof) != 0)
        return -1;
    int f = pg_scram_fe_write_client_final(final, sizeof(final), x->sl_without_proof,
                                           x->sl_without_proof_len, proof);
    int m = f > 0 ? pg_scram_fe_write_sasl_response(msg, sizeof(msg), final, (size_t)f) : -1;
    OPENSSL_cleanse(proof, sizeof(proof));
    OPENSSL_cleanse(final, sizeof(final));
    int rc = m > 0 ? sy_conn_send(L->conn, msg, (size_t)m) : -1;
    OPENSSL_cleanse(msg, sizeof(msg));
    return rc;
}

static int sasl_continue(struct sy_session *sess, struct pg_sess *ps, struct pg_server_login *L,
                         const struct pg_scram_auth_sasl *a)
{
    uint8_t salt[PG_SCRAM_SALT_MAX];
    struct pg_scram_server_first sf;
    if (pg_scram_be_parse_server_first(a->data, a->data_len, L->scratch->sl_nonce, PG_CRYPTO_NONCE_LEN,
                                       salt, sizeof(salt), &sf, NULL) < 0) {
        sess->proxy->protocol_errors++;
        login_fail(sess, L, "08P01", "the server sent a malformed SCRAM server-first-message");
        return -1;
    }
    if (check_iterations(sess, L, sf.iterations) != 0)
        return -1;
    if (sasl_auth_message(L, a, &sf) != 0)
        return -1;
    const char *pw = login_password(ps);
    if (pw) {
        /* PBKDF2 runs on a worker; the server connection is not read until the keys are back
         * (server_derived), and the login's deadline (client_login_timeout) still runs. */
        L->derive_token = pg_derive_submit(sess->proxy->loop, pw, strlen(pw), salt, sf.salt_len,
                                           sf.iterations, on_derived, sess->proxy, sess->id);
        if (L->derive_token == 0) {
            login_fail(sess, L, "53200", "switchyard is out of memory");
            return -1;
        }
        sy_session_log(sess, SY_LOG_DEBUG, "deriving keys for the %s server's SCRAM challenge "
                       "(%u iterations) on a worker thread", sy_side_name(L->side), sf.iterations);
        sy_conn_pause(L->conn);
        return 0;
    }
    uint8_t ck[PG_CRYPTO_KEY_LEN], sk[PG_CRYPTO_KEY_LEN];
    if (passthrough_keys(ps, salt, sf.salt_len, sf.iterations, ck, sk,
                         L->scratch->sl_server_key) != 0) {
        if (!client_proved_password(ps)) {
            server_login_failed(sess, L, "28000",
                                "switchyard cannot log into the %s server as %s: the server's "
                                "SCRAM verifier differs from auth_file's%s (copy the verifier "
                                "from the server, or store the password)", NULL);
            return -1;
        }
        /* The client proved a password to us, but the server challenges with another salt:
         * a stale auth_file entry, or PostgreSQL's mock exchange for a role whose password has
         * expired. Answer with keys that cannot match, so the server refuses in its own words
         * (28P01) as it would a direct client, and say why here. */
        sy_session_log(sess, SY_LOG_WARN, "the %s server's SCRAM salt or iteration count differs "
                       "from auth_file's verifier (expired password, or a stale entry); the "
                       "server will refuse this login", sy_side_name(L->side));
        if (pg_crypto_random(ck, sizeof(ck)) != 0 || pg_crypto_random(sk, sizeof(sk)) != 0 ||
            pg_crypto_random(L->scratch->sl_server_key, sizeof(L->scratch->sl_server_key)) != 0)
            return -1;
    }
    int rc = sasl_send_proof(L, ck, sk);
    OPENSSL_cleanse(ck, sizeof(ck));
    OPENSSL_cleanse(sk, sizeof(sk));
    return rc;
}

/* The keys for the server's challenge are back: answer it and read the server again. */
static void server_derived(struct sy_session *sess, struct pg_server_login *L,
                           const struct pg_derive_keys *keys)
{
    if (keys->rc != 0) {
        sy_session_log(sess, SY_LOG_ERROR, "deriving keys for the %s server's SCRAM challenge "
                       "failed: %s", sy_side_name(L->side), pg_crypto_strerror(keys->rc));
        login_fail(sess, L, "XX000", "switchyard could not answer the server's SCRAM challenge");
        return;
    }
    memcpy(L->scratch->sl_server_key, keys->server_key, PG_CRYPTO_KEY_LEN);
    struct sy_conn *c = L->conn;
    if (sasl_send_proof(L, keys->client_key, keys->stored_key) != 0) {
        if (!sy_conn_gone(c))
            login_fail(sess, L, "XX000", "switchyard could not answer the server's SCRAM challenge");
        return;
    }
    if (sy_conn_gone(c)) /* a standby may go on after its session closed (standby_linger) */
        return;
    /* What the server sent meanwhile (it should wait for our answer) is read now. */
    sy_conn_resume(c);
    sy_conn_pump(c);
}

static int sasl_final(struct sy_session *sess, struct pg_sess *ps, struct pg_server_login *L,
                      const struct pg_scram_auth_sasl *a)
{
    struct pg_scram_server_final sf;
    if (pg_scram_be_parse_server_final(a->data, a->data_len, &sf, NULL) < 0 || sf.is_error ||
        pg_crypto_verify_server_signature(L->scratch->sl_server_key, L->scratch->sl_auth_message,
                                          L->scratch->sl_auth_message_len, sf.signature) != 0) {
        server_login_failed(sess, L, "08006",
                            "the %s server's SCRAM signature is wrong for user %s%s: "
                            "not the server switchyard is configured for?", NULL);
        return -1;
    }
    return 0;
}

static int answer_password(struct pg_server_login *L, const char *pw)
{
    size_t n = strlen(pw);
    uint8_t *msg = malloc(n + 6);
    if (!msg)
        return -1;
    msg[0] = PG_FE_PASSWORD;
    pg_put_u32(msg + 1, (uint32_t)(n + 5));
    memcpy(msg + 5, pw, n + 1);
    int rc = sy_conn_send(L->conn, msg, n + 6);
    OPENSSL_cleanse(msg, n + 6);
    free(msg);
    return rc;
}

static int server_auth_request(struct sy_session *sess, struct pg_sess *ps,
                               struct pg_server_login *L, const uint8_t *msg, size_t len)
{
    uint32_t code;
    if (pg_be_parse_auth(msg, len, &code) < 0)
        return PG_E_MALFORMED;
    const char *plain = login_password(ps);
    switch (code) {
    case AUTH_OK:
        return 1;
    case AUTH_CLEARTEXT:
        if (!plain) {
            server_login_failed(sess, L, "28000",
                                "switchyard cannot log into the %s server as %s: it asks for a "
                                "cleartext password and switchyard has none%s (put it in auth_file)",
                                NULL);
            return -1;
        }
        return answer_password(L, plain);
    case AUTH_MD5: {
        char resp[PG_CRYPTO_MD5_LEN + 1];
        int rc = -1;
        if (len < 13)
            return PG_E_MALFORMED;
        if (plain)
            rc = pg_crypto_md5_response_from_password(plain, sess->user, msg + 9, resp);
        else if (ps->user_known && ps->secret_kind == SY_SECRET_MD5)
            rc = pg_crypto_md5_response(ps->secret, msg + 9, resp);
        if (rc < 0) {
            server_login_failed(sess, L, "28000",
                                "switchyard cannot log into the %s server as %s: it asks for md5 "
                                "and switchyard has neither the password nor its md5 hash%s "
                                "(put either in auth_file)",
                                NULL);
            return -1;
        }
        return answer_password(L, resp);
    }
    case AUTH_SASL:
    case AUTH_SASL_CONTINUE:
    case AUTH_SASL_FINAL: {
        struct pg_scram_auth_sasl a;
        if (pg_scram_be_parse_auth_sasl(msg, len, &a, NULL) < 0)
            return PG_E_MALFORMED;
        if (code == AUTH_SASL)
            return sasl_start(sess, ps, L, &a);
        return code == AUTH_SASL_CONTINUE ? sasl_continue(sess, ps, L, &a)
                                          : sasl_final(sess, ps, L, &a);
    }
    default: {
        char detail[64];
        snprintf(detail, sizeof(detail), " (authentication request %u is not supported)", code);
        server_login_failed(sess, L, "28000", "switchyard cannot log into the %s server as %s%s",
                            detail);
        return -1;
    }
    }
}

int pg_auth_server_data(struct sy_session *sess, struct pg_server_login *L)
{
    struct pg_sess *ps = pg_sess_of(sess);
    struct sy_conn *c = L->conn;
    if (L->step == PG_SL_TLS_ANSWER)
        return c->len > 0 ? tls_answer(sess, ps, L) : 0;
    /* While keys are being derived the next message waits (server_derived pumps it). */
    while (L->step != PG_SL_DONE && !L->derive_token && c->open && c->len > 0) {
        int total = pg_front_message(c, 65536);
        if (total == 0)
            return 0;
        uint8_t type = c->buf[0];
        if (total < 0 || (type != PG_BE_AUTH && type != PG_BE_ERROR && type != PG_BE_NOTICE)) {
            sess->proxy->protocol_errors++;
            login_fail(sess, L, "08P01", "the server sent an unexpected message during login");
            return -1;
        }
        if (type == PG_BE_ERROR && L->standby) {
            struct pg_error_fields f;
            char msg[400];
            int ok = pg_be_parse_error(c->buf, (size_t)total, &f) > 0;
            snprintf(msg, sizeof(msg), "the %s server refused the login of user %s: %s %s",
                     sy_side_name(L->side), sess->user, ok && f.sqlstate ? f.sqlstate : "",
                     ok && f.message ? f.message : "");
            sy_conn_failed(c, msg);
            return -1;
        }
        if (type == PG_BE_ERROR) {
            /* The server refused the login (no such database, NOLOGIN role, expired password
             * ...): the client hears exactly what the server said. */
            struct pg_error_fields f;
            if (pg_be_parse_error(c->buf, (size_t)total, &f) > 0)
                sy_session_log(sess, SY_LOG_INFO, "server refused login: %s %s",
                               f.sqlstate ? f.sqlstate : "(no SQLSTATE)", f.message ? f.message : "");
            sy_conn_send(&sess->client, c->buf, (size_t)total);
            sy_session_close(sess, "server refused login");
            return -1;
        }
        if (type == PG_BE_NOTICE) {
            if (!L->standby)
                sy_conn_send(&sess->client, c->buf, (size_t)total);
            sy_conn_consume(c, (size_t)total);
            continue;
        }
        int rc = server_auth_request(sess, ps, L, c->buf, (size_t)total);
        if (sy_conn_gone(c))
            return -1;
        if (rc < 0) {
            sess->proxy->protocol_errors++;
            login_fail(sess, L, "08P01", "the server sent a malformed authentication request");
            return -1;
        }
        if (rc == 1 && L->standby) {
            sy_conn_consume(c, (size_t)total);
            L->step = PG_SL_DONE;
            return pg_move_standby_logged_in(sess);
        }
        if (rc == 1) {
            L->step = PG_SL_DONE;
            /* AuthenticationOk: the client gets the server's own, then everything after it. */
            if (sy_conn_send(&sess->client, c->buf, (size_t)total) != 0)
                return -1;
            sy_conn_consume(c, (size_t)total);
            return pg_session_start_relay(sess);
        }
        sy_conn_consume(c, (size_t)total);
    }
    return 0;
}

/* The server login whose derivation token this is, if it still waits for it on an open
 * connection (a standby's login may have been dropped and another begun since). */
static struct pg_server_login *login_of_token(struct sy_session *sess, struct pg_sess *ps,
                                              uint64_t token)
{
    if (ps->sl.derive_token == token)
        return ps->sl.conn && ps->sl.conn == sess->server && sess->server->open ? &ps->sl : NULL;
    if (!ps->move)
        return NULL;
    struct pg_server_login *L = pg_move_login(ps);
    if (L->derive_token != token)
        return NULL;
    return L->conn && L->conn == sess->standby && sess->standby->open ? L : NULL;
}

/* A derivation is back, on the loop. The session is found again by its id: if it closed (a
 * login timeout, the client gone) or no longer waits for this token, the keys are dropped. */
static void on_derived(void *ctx, uint64_t session_id, uint64_t token,
                       const struct pg_derive_keys *keys)
{
    struct sy_session *sess = session_by_id(ctx, session_id);
    if (!sess) {
        sy_debug("session %llu: SCRAM keys derived after the session closed; dropped",
                 (unsigned long long)session_id);
        return;
    }
    struct pg_sess *ps = pg_sess_of(sess);
    if (ps->derive_token == token) {
        ps->derive_token = 0;
        client_derived(sess, ps, keys);
        return;
    }
    struct pg_server_login *L = login_of_token(sess, ps, token);
    if (!L)
        return;
    L->derive_token = 0;
    server_derived(sess, L, keys);
}

void pg_auth_login_done(struct pg_sess *ps)
{
    if (ps->login) {
        OPENSSL_cleanse(ps->login, sizeof(*ps->login));
        free(ps->login);
        ps->login = NULL;
    }
}

void pg_auth_free(struct pg_sess *ps)
{
    pg_derive_cancel(ps->derive_token);
    pg_derive_cancel(ps->sl.derive_token);
    ps->derive_token = ps->sl.derive_token = 0;
    pg_auth_login_done(ps);
    OPENSSL_cleanse(ps->secret, sizeof(ps->secret));
    OPENSSL_cleanse(ps->password, sizeof(ps->password));
    OPENSSL_cleanse(ps->client_key, sizeof(ps->client_key));
    OPENSSL_cleanse(&ps->verifier, sizeof(ps->verifier));
}
