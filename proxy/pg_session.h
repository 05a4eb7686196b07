/*
 * Per-session state of the PostgreSQL plug-in, shared by pg_session.c (startup phase and relay)
 * and pg_auth.c (authenticating the client, then logging into the server). Private to proxy/.
 */
#ifndef SY_PG_SESSION_H
#define SY_PG_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "pg_crypto.h"
#include "protocol/pg/pg_proto.h"
#include "protocol/pg/pg_scram.h"
#include "proxy.h"

#define PG_PARAMS_MAX 32

enum pg_sess_stage {
    PG_STAGE_STARTUP = 0,      /* reading startup-phase packets from the client */
    PG_STAGE_CLIENT_AUTH = 1,  /* Switchyard authenticating the client */
    PG_STAGE_SERVER_LOGIN = 2, /* client held; Switchyard logging into the server */
    PG_STAGE_RELAY = 3,        /* framing typed messages both ways */
};

/* What the client is expected to send next while it authenticates. */
enum pg_client_auth_step {
    PG_CA_PASSWORD = 1,     /* a cleartext PasswordMessage */
    PG_CA_MD5 = 2,          /* an md5 PasswordMessage */
    PG_CA_SASL_INITIAL = 3, /* SASLInitialResponse with the client-first-message */
    PG_CA_SASL_FINAL = 4,   /* SASLResponse with the client-final-message */
};

/* What a key derivation on the client's side of the login is for. */
enum pg_client_derive {
    PG_DERIVE_VERIFIER = 1, /* a SCRAM verifier from the user's plain secret */
    PG_DERIVE_PASSWORD = 2, /* a cleartext password checked against a SCRAM verifier */
};

/* Where Switchyard's own login into the server stands. */
enum pg_server_login_step {
    PG_SL_CONNECTING = 1, /* TCP connect in progress */
    PG_SL_TLS_ANSWER = 2, /* SSLRequest sent, waiting for 'S' or 'N' */
    PG_SL_TLS = 3,        /* TLS handshake with the server */
    PG_SL_AUTH = 4,       /* StartupMessage sent, answering the server's requests */
    PG_SL_DONE = 5,       /* AuthenticationOk received */
    PG_SL_REUSE = 6,      /* a kept connection: reading its reset's answer (pg_pool.c) */
};

/* What the two SCRAM exchanges need while a login is in progress; freed (wiped) once the
 * session is logged in, so an idle session carries none of it. */
struct pg_login {
    uint8_t md5_salt[4];
    char nonce[PG_SCRAM_NONCE_MAX + 1]; /* client nonce + server nonce */
    size_t client_nonce_len;
    char client_first_bare[PG_SCRAM_MSG_MAX];
    size_t client_first_bare_len;
    char server_first[PG_SCRAM_MSG_MAX];
    size_t server_first_len;
    char gs2_header[64];
    /* Channel binding with the client: offered (TLS, and Switchyard's certificate hash known)
     * and, when the client chose it, the tls-server-end-point data it must send back. */
    uint8_t plus_offered, plus_chosen;
    uint8_t cbind_data[64];
    size_t cbind_len;
    char sl_nonce[PG_CRYPTO_NONCE_LEN + 1];
    /* Channel binding with the server: the gs2 header sent ("n,,", "y,," or
     * "p=tls-server-end-point,,") and the server certificate's hash when bound. */
    char sl_gs2[32];
    uint8_t sl_cbind[64];
    size_t sl_cbind_len;
    char sl_client_first_bare[PG_SCRAM_MSG_MAX];
    size_t sl_client_first_bare_len;
    uint8_t sl_server_key[PG_CRYPTO_KEY_LEN];
    char sl_auth_message[3 * PG_SCRAM_MSG_MAX];
    size_t sl_auth_message_len;
    char sl_without_proof[PG_SCRAM_MSG_MAX]; /* client-final-message-without-proof */
    size_t sl_without_proof_len;
    uint8_t password_kept; /* a cleartext password being checked is in ps->password */
};

/* One login of Switchyard into a server: the session's own, or a standby's for a move. */
struct pg_server_login {
    struct sy_conn *conn;
    enum sy_side side;
    enum pg_server_login_step step;
    struct pg_login *scratch; /* the SCRAM exchange's state */
    uint8_t standby;          /* failures go to the switch, not to the client */
    uint8_t read_only;        /* add default_transaction_read_only = on (a shadow in reads mode) */
    uint64_t derive_token;    /* keys for the server's SCRAM challenge are being derived on a
                                 worker (pg_derive.h); the connection is not read meanwhile */
};

struct pg_move;   /* pg_move.c: a standby connection and a move in progress */
struct pg_shadow; /* pg_shadow.c: shadow traffic for the session */

struct pg_sess {
    enum pg_sess_stage stage;
    struct pg_scan fe; /* client to server (relay) */
    struct pg_scan be; /* server to client (relay) */
    uint8_t ssl_seen, gss_seen, terminating;
    uint8_t direct_tls;     /* the client opened with TLS, no SSLRequest (PostgreSQL 17) */
    uint8_t understood;     /* a well-formed StartupMessage was read: errors may be sent now */
    uint8_t in_copy;        /* a CopyIn/CopyOut/CopyBoth response was seen, until ReadyForQuery */
    uint8_t ext_open;       /* extended-query messages sent since the last Sync */
    uint32_t pending_ready; /* ReadyForQuery replies the client still waits for */
    uint32_t proxy_pid;     /* the BackendKeyData the client was given */
    uint8_t proxy_key[256];
    uint32_t server_pid;    /* the server's own BackendKeyData */
    uint8_t server_key[256];
    size_t key_len;         /* 0 until the server sent BackendKeyData */
    size_t nparams;
    char *params[PG_PARAMS_MAX]; /* "name\0value\0" from ParameterStatus */

    /* The client's StartupMessage, kept to log into servers on its behalf. */
    uint8_t *startup;
    size_t startup_len;

    /* Client authentication. */
    enum sy_auth_type auth;
    enum pg_client_auth_step ca_step;
    int user_known;         /* the user has a usable secret */
    int waiting_query;      /* an auth_query lookup is out for this session */
    uint64_t derive_token;  /* a client-side key derivation is out (pg_derive.h): the client is
                               not read until it is back */
    uint8_t derive_for;     /* what it is for: enum pg_client_derive */
    char secret[1100];      /* the user's secret (plain, md5 or SCRAM verifier); wiped on free */
    int secret_kind;        /* enum sy_secret_kind */
    struct pg_scram_verifier verifier;
    uint8_t client_key[PG_CRYPTO_KEY_LEN]; /* recovered from the client's SCRAM proof */
    int have_client_key;
    char password[1024];    /* a cleartext password the client gave; wiped on free */
    int have_password;

    /* Switchyard's login into the server. */
    struct pg_server_login sl;
    struct pg_login *login; /* exchange scratch, only while logging in */

    struct pg_move *move;   /* NULL unless a switch is preparing this session's move */
    struct pg_shadow *shadow; /* NULL until shadowing was considered for the session */
    uint8_t shadow_idle;      /* the server said idle: consider shadowing once it is forwarded */
    size_t shadow_from;       /* the client relay: offset in the client buffer mirrored up to */
    uint8_t switch_idle;      /* the same for a switch's warm-up read (sess->warm_read) */

    /* A kept server connection being taken over (pg_pool.c): the greeting to replay. */
    uint8_t *reuse_greeting;
    size_t reuse_len, reuse_cap;
    int reuse_reset_ok;     /* CommandComplete "DISCARD ALL" seen */
};

static inline struct pg_sess *pg_sess_of(struct sy_session *sess) { return sess->proto_state; }

/* pg_auth.c */
/* A whole message at the front of c's buffer: its length, 0 when more is needed, or < 0 when it
 * cannot be a message or does not fit the buffer. */
int pg_front_message(struct sy_conn *c, uint32_t max);
/* Starts authenticating the client after its StartupMessage. Returns 0 or -1 (closed). */
int pg_auth_client_begin(struct sy_session *sess);
/* Handles client bytes during PG_STAGE_CLIENT_AUTH. */
int pg_auth_client_data(struct sy_session *sess);
/* The server TCP connection is open: TLS negotiation or the StartupMessage. */
int pg_auth_server_connected(struct sy_session *sess, struct pg_server_login *L);
/* The TLS handshake with the server is done. */
int pg_auth_server_tls_ready(struct sy_session *sess, struct pg_server_login *L);
/* Handles server bytes while L logs in. */
int pg_auth_server_data(struct sy_session *sess, struct pg_server_login *L);
/* Frees the login scratch (the session is logged in). */
void pg_auth_login_done(struct pg_sess *ps);
/* Wipes secrets and cancels the session's key derivations. */
void pg_auth_free(struct pg_sess *ps);
/* An auth_query lookup came back (see auth_query.h). */
#include "auth_query.h"
void pg_auth_query_done(struct sy_session *sess, enum sy_aq_result result, const char *secret);

/* pg_move.c */
/* A standby login got AuthenticationOk: read the rest of its greeting. */
int pg_move_standby_logged_in(struct sy_session *sess);
/* Bytes on the standby connection, or on the server connection while a move reads the
 * session's state there (pg_move_owns_server). */
int pg_move_standby_data(struct sy_session *sess);
int pg_move_server_data(struct sy_session *sess);
int pg_move_owns_server(const struct pg_sess *ps);
/* The standby's login state, for pg_session.c's callbacks. */
struct pg_server_login *pg_move_login(struct pg_sess *ps);
int pg_move_standby_open(struct sy_session *sess, enum sy_side side);
void pg_move_standby_failed(struct sy_session *sess, const char *reason);
int pg_move_prepare(struct sy_session *sess);
int pg_move_warm_read(struct sy_session *sess);
int pg_move_commit(struct sy_session *sess);
void pg_move_drop(struct sy_session *sess);
/* Records a ParameterStatus value (name and value copied) in a "name\0value\0" list. */
void pg_params_store(char **params, size_t *n, const char *name, const char *value);

/* pg_move.c, for shadows: a standby connection opened for shadow traffic (reports go to
 * pg_shadow.c); read_only adds default_transaction_read_only = on to the startup parameters. */
int pg_move_shadow_open(struct sy_session *sess, enum sy_side side, int read_only);
/* The shadow connection opened at login is logged in: what follows on it answers mirrored
 * requests (no state to replay). */
void pg_move_shadow_live(struct sy_session *sess);

/* pg_shadow.c */
/* Each client message start (whole: the message is all in msg). */
void pg_shadow_client_message(struct sy_session *sess, uint8_t type, const uint8_t *msg,
                              size_t len, int whole);
/* Bytes the relay is forwarding to the session's server: written to the shadow too. */
void pg_shadow_mirror(struct sy_session *sess, const uint8_t *bytes, size_t n);
/* Each server message start on the session's server connection. */
void pg_shadow_server_message(struct sy_session *sess, uint8_t type, const uint8_t *msg,
                              size_t len, int whole);
/* The server sent ReadyForQuery; idle: the session is between requests, nothing pending;
 * answers_client: it answers a request of the client's (not the login). */
void pg_shadow_blue_ready(struct sy_session *sess, int idle, int answers_client);
/* After the relay forwarded an idle ReadyForQuery (shadow_idle): start shadowing if due. */
void pg_shadow_idle(struct sy_session *sess);
/* The session has just logged in (its first ReadyForQuery, not yet forwarded): a sampled
 * session is shadowed from its first statement on, while its shadow connection logs in. */
void pg_shadow_login(struct sy_session *sess);
/* The session is closing (ops->standby_linger): 1 keeps the shadow connection open until green
 * has answered every statement blue answered (at most shadow_timeout), 0 lets it close. */
int pg_shadow_linger(struct sy_session *sess);
/* Bytes on the shadow connection once mirroring runs. */
int pg_shadow_green_data(struct sy_session *sess);
/* Reports from pg_move.c: logged in; state read and mirroring started; failed or closed. */
void pg_shadow_ready(struct sy_session *sess);
void pg_shadow_mirroring(struct sy_session *sess);
void pg_shadow_failed(struct sy_session *sess, const char *reason);
/* A prepared statement the session had when its shadow started (name and text). */
void pg_shadow_statement(struct sy_session *sess, const char *name, const char *text);
void pg_shadow_free(struct pg_sess *ps);

/* pg_pool.c: server connection reuse (the ops of pool.c) */
int pg_pool_park(struct sy_session *sess, uint8_t **key, size_t *key_len, uint8_t **blob,
                 size_t *blob_len);
int pg_pool_key(struct sy_session *sess, const uint8_t **key, size_t *key_len);
int pg_pool_reused(struct sy_session *sess, const uint8_t *blob, size_t blob_len);
/* Bytes on a kept server connection while its reset's answer is read. */
int pg_pool_server_data(struct sy_session *sess);

/* pg_session.c */
/* Login is complete: relay from here on (called when the server sent AuthenticationOk). */
int pg_session_start_relay(struct sy_session *sess);
/* Sends the client an error in PostgreSQL's form (FATAL) and closes the session. */
void pg_session_fail(struct sy_session *sess, const char *sqlstate, const char *message);

#endif
