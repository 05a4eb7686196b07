/*
 * The proxy core: the process-wide state (struct sy_proxy), client sessions and their two
 * connections, and the protocol plug-in interface that PostgreSQL (and later MySQL) implement.
 *
 * A session owns a client connection and, once it has logged in, one server connection to the
 * active database (session mode). The generic code here does the I/O: reading into a reused
 * per-connection buffer, forwarding with a write attempted before any queueing, back-pressure
 * (a source stops reading while its bytes are queued on the other side), timers and closing.
 * The protocol plug-in decides what the bytes mean.
 */
#ifndef SY_PROXY_H
#define SY_PROXY_H

#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "config/config.h"

struct sy_session;
struct sy_tls_conn;
struct sy_tls_ctx;
struct sy_proxy;

/* Where a connection's bytes stand. */
struct sy_conn {
    uv_tcp_t tcp;
    struct sy_session *sess;
    uint8_t *buf;   /* read buffer, allocated once per connection */
    size_t cap;     /* its size (io_buffer_size) */
    size_t len;     /* bytes held: [0, ready) may be forwarded, [ready, len) are not yet scanned */
    size_t ready;
    uint32_t inflight; /* this connection's bytes queued on the peer: reading is stopped meanwhile */
    uv_write_t wreq;   /* the queued write of those bytes, on the peer's stream */
    uint8_t wreq_queued; /* wreq is queued and its callback has not run: this connection (its
                            buffer, and it as the request's data) must outlive it */
    uint8_t handle_closed; /* the handle's close callback ran; freed once wreq_queued is 0 */
    uint32_t pending_writes; /* uv_write requests on this connection whose callbacks are due */
    uint8_t open;      /* the handle is initialised and not yet closing */
    uint8_t reading;   /* uv_read_start is in force */
    uint8_t is_server; /* 1: a server connection (the session's, or its standby) */
    uint8_t tls_handshaking; /* TLS started, handshake not yet done */
    uint8_t drain_resume;    /* the peer stopped reading until this connection's queue drains */
    uint8_t eof;             /* the peer ended its sending side: never read again */
    uint64_t bytes_in; /* bytes read from this connection (plaintext) */
    struct sy_tls_conn *tls; /* NULL while plaintext */
};

/* Session lifecycle, as shown by the admin socket. */
enum sy_sess_phase {
    SY_PHASE_LOGIN = 1,   /* startup, TLS negotiation or authentication in progress */
    SY_PHASE_READY = 2,   /* logged in; relaying */
    SY_PHASE_CLOSING = 3, /* closing both connections */
};

/* Transaction state, from the protocol's own signal (ReadyForQuery in PostgreSQL). */
enum sy_tx_state {
    SY_TX_IDLE = 1,   /* between transactions, nothing outstanding */
    SY_TX_ACTIVE = 2, /* a query or pipeline is running outside a transaction block */
    SY_TX_IN_TX = 3,  /* inside a transaction block */
    SY_TX_FAILED = 4, /* inside a failed transaction block */
};

/* The protocol plug-in. Every callback gets the session; per-session protocol state lives in
 * sess->proto_state (proto_state_size bytes, zeroed). Callbacks that can fail return 0 or -1; on
 * -1 they have already called sy_session_fail() or sy_session_close(). */
struct sy_protocol_ops {
    const char *name;
    size_t proto_state_size;
    /* A client connection was accepted; client reading starts after this returns 0. */
    int (*client_accepted)(struct sy_session *sess);
    /* New bytes in sess->client: scan them, set client.ready, act on what they say. */
    int (*client_data)(struct sy_session *sess);
    /* New bytes in a server connection: sess->server or sess->standby. */
    int (*server_data)(struct sy_session *sess, struct sy_conn *conn);
    /* A server connection (sess->server or sess->standby) is open. */
    int (*server_connected)(struct sy_session *sess, struct sy_conn *conn);
    /* The TLS handshake on conn (client or server connection) is done. */
    int (*tls_ready)(struct sy_session *sess, struct sy_conn *conn);
    /* Sends a fatal error to the client in the protocol's own form (no close). */
    void (*client_error)(struct sy_session *sess, const char *code, const char *message);
    /* Optional: the client's end of file arrived (before the session reacts to it); it may
     * close the session itself with a better reason. */
    void (*client_eof)(struct sy_session *sess);
    /* Frees protocol state (not the session). */
    void (*session_free)(struct sy_session *sess);

    /* ---- moving a session to the other side (cutover and rollback; see switch.c) ---- */
    /* Opens and logs into a standby connection to side for the session, in the background.
     * Reports sy_switch_standby_ready or sy_switch_standby_failed. Returns 0 or -1. */
    int (*standby_open)(struct sy_session *sess, enum sy_side side);
    /* The standby connection failed or closed (already closed; sess->standby is NULL). */
    void (*standby_failed)(struct sy_session *sess, const char *reason);
    /* The session is held at a transaction boundary: read its state on sess->server and replay
     * it on sess->standby. Reports sy_switch_move_prepared (with unmovable state noted) or
     * sy_switch_standby_failed. Returns 0 or -1. */
    int (*move_prepare)(struct sy_session *sess);
    /* The session is idle: run the same state read on sess->server and drop its answer. It
     * fills the server process's catalog caches, so that the read inside the pause costs a
     * quarter as much. The client's next request waits for it. Reports
     * sy_switch_warm_read_done or sy_switch_standby_failed. Returns 0 or -1. */
    int (*move_warm_read)(struct sy_session *sess);
    /* Makes the standby the session's server (sy_session_swap_server) and tells the client
     * what changed (ParameterStatus). Returns 0, or -1 when the session was closed. */
    int (*move_commit)(struct sy_session *sess);
    /* Closes the standby connection and forgets its state (an abort). */
    void (*standby_drop)(struct sy_session *sess);
    /* The session is closing (already unlinked, its server connection closed): returns 1 to
     * keep sess->standby open and reading for a while (it then closes it with
     * sy_session_close_standby, and the session is freed after that), 0 to let it close now.
     * Optional. */
    int (*standby_linger)(struct sy_session *sess);

    /* ---- server connection reuse (pool.c; optional) ---- */
    /* The client is leaving cleanly and sess->server is idle: start its reset and describe it:
     * *key (who may reuse it) and *blob (what to replay to the next client), both malloc'd.
     * Returns 0, or -1 when the connection is not fit for reuse (nothing was sent). */
    int (*server_park)(struct sy_session *sess, uint8_t **key, size_t *key_len, uint8_t **blob,
                       size_t *blob_len);
    /* The reuse key of a session about to log into a server (pointing into its state).
     * Returns 0, or -1 when it may not reuse a connection. */
    int (*pool_key)(struct sy_session *sess, const uint8_t **key, size_t *key_len);
    /* sess->server is a kept connection (sess->server_reused): check the reset's answer, then
     * greet the client from blob; sy_session_server_reuse_failed if the answer is wrong.
     * Returns 0, or -1 when the session was closed. */
    int (*server_reused)(struct sy_session *sess, const uint8_t *blob, size_t blob_len);
};

/* An idle server connection kept for reuse (pool.c). */
struct sy_pooled {
    struct sy_pooled *next;
    struct sy_conn *conn; /* detached: conn->sess is NULL and it is not read */
    enum sy_side side;
    uint64_t parked_ms;   /* uv_now when it was kept */
    uint8_t *blob;        /* the protocol's record (its greeting) */
    size_t blob_len;
    size_t key_len;
    uint8_t key[];        /* the protocol's reuse key */
};

struct sy_session {
    struct sy_proxy *proxy;
    struct sy_session *prev, *next; /* in proxy->sessions */
    uint64_t id;
    enum sy_sess_phase phase;
    enum sy_tx_state tx;
    enum sy_side side;     /* which database the server connection goes to */
    struct sy_conn client;
    struct sy_conn *server; /* NULL until a server connection is started; its own allocation, so
                               a warm one can take its place */
    struct sy_conn *standby; /* a warm connection to the other side during a switch, or NULL */
    enum sy_side standby_side;
    uv_timer_t timer;      /* login timeout, server connect timeout, close linger */
    uint8_t timer_open;
    uint8_t server_counted; /* counted in proxy->side[side].server_conns */
    uint8_t connecting;     /* the server TCP connect is in progress */
    uint8_t held;           /* paused at a transaction boundary by a proxy-wide pause */
    uint8_t wait_server;    /* held after client authentication, before the server login */
    uint8_t standby_counted; /* standby counted in proxy->side[standby_side].server_conns */
    uint8_t move_state;     /* the switch driver's per-session state (switch.c) */
    uint8_t warm_read;      /* the switch wants a warm-up state read at its next idle point
                               (1), or had it (2) */
    uint8_t unmovable;      /* holds state that cannot move (temporary tables, ...) */
    uint8_t server_reused;  /* the server connection came from the pool; its reset is unchecked */
    uint8_t no_linger;      /* closes without waiting for the client to read its last bytes */
    uint8_t pause_exempt;   /* runs on through a pause (a switch waits for it to let go of
                               state that cannot move) */
    uint64_t unmovable_at_queries; /* its query count when that state was last seen (0: never) */
    uint32_t server_pid;    /* the server backend's process id (0 unknown) */
    uint64_t held_at_ms;    /* uv_now when the session was held */
    const char *timeout_code;    /* what the session fails with when the timer fires */
    const char *timeout_message;
    uv_connect_t connect_req;
    int handles_open;      /* handles whose close callback has not yet run */
    uint64_t started_ms;   /* uv_now at accept */
    uint64_t login_from_ms; /* client_login_timeout counts from here: accept, moved on by the
                               time a pause held the login */
    char client_addr[64];  /* "ip:port" of the client */
    char user[64];         /* login user, for the admin socket and logs */
    char database[64];
    char application[64];  /* the server's application_name for the session ("" unknown) */
    uint64_t tx_started_ms; /* uv_now when its current transaction (or request) began: the
                               session left SY_TX_IDLE */
    uint64_t queries;      /* queries (simple Query and Execute) sent by the client */
    void *proto_state;
};

struct sy_side_stats {
    uint32_t server_conns; /* open server connections to this side */
    int healthy;           /* -1 unknown, 0 down, 1 up (from the last connect or probe) */
    char last_error[128];
};

struct sy_proxy {
    uv_loop_t *loop;
    struct sy_config cfg;          /* current config; replaced whole on reload */
    const struct sy_protocol_ops *ops;
    enum sy_side active;
    uv_tcp_t listeners[SY_LISTEN_MAX];
    size_t nlisteners;
    struct sockaddr_storage server_addr[2]; /* resolved [blue] and [green] */
    struct sy_side_stats side[2];
    struct sy_session *sessions;   /* doubly linked list of every session */
    uint32_t nsessions;
    uint32_t nlogin;               /* sessions in SY_PHASE_LOGIN (each may still open a server
                                      connection) */
    uint64_t next_session_id;
    uint64_t started_ms;
    int shutting_down;
    /* Pause: new transactions (and new logins) wait at the proxy until resume. */
    int paused;
    uint64_t paused_at_ms;
    uv_timer_t pause_timer;   /* resumes by itself when the pause's timeout runs out */
    /* Pauses the last resume released, per held session (for the cutover report). */
    uint32_t *pause_ms;
    uint32_t npause, pause_cap;
    struct sy_switch *sw;     /* the cutover / rollback driver (switch.c) */
    /* Not "": logins are refused with this message (57P03) instead of being routed: the start
     * could not confirm with the databases which side is live (switch.c, docs/runbook.md). */
    char route_hold[512];
    /* Shadow traffic (pg_shadow.c): the mode and sample in force (the config's, or set with
     * switchyardctl shadow), the report, and when blue last acknowledged a write. */
    enum sy_shadow_mode shadow_mode;
    uint32_t shadow_sample_ppm;
    struct sy_shadow_report *shadow_report;
    uint64_t shadow_last_write_us;
    /* Accepted divergences (shadow accept; shadow_accept in the config, taken again on
     * reload): SY_SHADOW_ACCEPT_MAX slots allocated at first use, the config's first. */
    struct sy_shadow_accept *shadow_accepts;
    size_t shadow_naccepts;
    /* Idle server connections kept for reuse (pool.c), newest first. */
    struct sy_pooled *pool;
    uint32_t npooled;
    uv_timer_t pool_timer;
    uint8_t pool_timer_open;
    uint64_t servers_parked, servers_reused;
    /* Totals since start. */
    uint64_t total_sessions;
    uint64_t total_queries;
    uint64_t bytes_client_to_server;
    uint64_t bytes_server_to_client;
    uint64_t protocol_errors;
    uint64_t refused_sessions;
    uint64_t refused_unlogged;   /* refusals since the last log line about them */
    uint64_t refused_logged_ms;  /* uv_now of that line (0: none yet) */
    const char *refused_why;     /* the last refusal's reason */
    uv_timer_t refused_timer;    /* logs the refusals of the rest of a second */
    uint8_t refused_timer_open;
    uint64_t nofile_limit;       /* RLIMIT_NOFILE's soft limit at start (0: unlimited) */
    uint64_t auth_failures;
    /* TLS contexts, rebuilt on reload (connections keep their own reference). */
    struct sy_tls_ctx *client_tls_ctx;       /* NULL when client_tls = disable */
    struct sy_tls_ctx *server_tls_ctx[2];    /* NULL when that side's server_tls = disable */
    struct sy_auth_file *auth_file;          /* NULL without auth_file */
    uint8_t mock_secret[32];                 /* salts for unknown users' mock SCRAM exchanges */
};

/* ---- session.c: the generic connection machinery ---- */

/* Starts listening on every configured address. Returns 0, or -1 after logging why. */
int sy_proxy_listen(struct sy_proxy *p);
/* Stops accepting new clients (graceful shutdown). */
void sy_proxy_stop_listening(struct sy_proxy *p);
/* Resolves cfg.server[] into server_addr[]. Returns 0, or -1 after logging which side failed. */
int sy_proxy_resolve_servers(struct sy_proxy *p, const struct sy_config *cfg,
                             struct sockaddr_storage out[2]);

/* Gets the session a server connection to the active side (sess->side is set to it): a kept
 * one with the same key when the pool has it (ops->server_reused follows), else a new one
 * (sy_session_connect_fresh). Returns 0, or -1 when the session was closed. */
int sy_session_connect_server(struct sy_session *sess);
/* Opens a new server connection to sess->side; calls ops->server_connected when open, or fails
 * the session with a connection error. Returns 0, or -1 when it could not start. */
int sy_session_connect_fresh(struct sy_session *sess);
/* Whether nothing more has arrived on conn's socket (no bytes waiting, no end of file): a kept
 * connection about to be handed over must be quiet after its reset's answer. */
int sy_conn_quiet(struct sy_conn *c);
/* Whether nothing more is to be read or done on c: it is closed, or its session is closing and
 * c is not a standby the protocol kept open after it (standby_linger). */
int sy_conn_gone(const struct sy_conn *c);
/* Closes a handle-owning connection (its close callback frees a server connection). */
void sy_conn_close(struct sy_conn *c);
/* Opens sess->standby to side; calls ops->server_connected(sess, standby) when open, or
 * ops->standby_failed. Returns 0, or -1 (standby_failed was not called). */
int sy_session_connect_standby(struct sy_session *sess, enum sy_side side);
/* Closes sess->standby, if any (no callback). */
void sy_session_close_standby(struct sy_session *sess);
/* The standby becomes the session's server; the old server connection is closed. The old one
 * must have nothing queued to the client (server->inflight == 0). */
void sy_session_swap_server(struct sy_session *sess);
/* A failure on conn: a standby connection is closed and ops->standby_failed is told; any other
 * failure closes the session. */
void sy_conn_failed(struct sy_conn *conn, const char *reason);
/* Forwards conn->ready bytes of conn to the other connection of its session, then moves the
 * rest of the buffer to its front. Returns 0, or -1 when the session was closed. */
int sy_conn_forward(struct sy_conn *conn);
/* Drops n bytes from the front of conn's buffer without forwarding them (n <= ready). */
void sy_conn_consume(struct sy_conn *conn, size_t n);
/* Sends bytes the proxy made (copied; encrypted first on a TLS connection). Returns 0, or -1
 * when the session was closed. */
int sy_conn_send(struct sy_conn *conn, const void *data, size_t len);
/* Sends bytes as they are, bypassing TLS (the 'S'/'N' answer, an SSLRequest). */
int sy_conn_send_raw(struct sy_conn *conn, const void *data, size_t len);
/* Starts TLS on conn with ctx (server or client as the context is); initial holds ciphertext
 * already read (direct TLS), host names the server for a client. The handshake runs as bytes
 * arrive; ops->tls_ready is called when it is done. Returns 0, or -1 when the session was
 * closed. */
int sy_conn_start_tls(struct sy_conn *conn, struct sy_tls_ctx *ctx, const char *host,
                      const uint8_t *initial, size_t n);
/* Processes bytes already held (plaintext in the buffer, or TLS records the engine kept) after
 * a connection was resumed: no socket event will come for them. */
void sy_conn_pump(struct sy_conn *conn);
/* Stops or resumes reading a connection. */
void sy_conn_pause(struct sy_conn *conn);
void sy_conn_resume(struct sy_conn *conn);
/* (Re)arms the session timer; when it fires, the session fails with code/message. */
void sy_session_set_timeout(struct sy_session *sess, uint64_t ms, const char *code,
                            const char *message);
void sy_session_clear_timeout(struct sy_session *sess);
/* Sends the client an error in the protocol's form (when its stream is at a message boundary),
 * logs the reason and closes the session. */
void sy_session_fail(struct sy_session *sess, const char *code, const char *message);
/* The session's login is done: SY_PHASE_LOGIN becomes SY_PHASE_READY. */
void sy_session_logged_in(struct sy_session *sess);
/* Closes both connections after the bytes already queued to the client are sent. */
void sy_session_close(struct sy_session *sess, const char *reason);
/* Logs a line that names the session. */
void sy_session_log(struct sy_session *sess, enum sy_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Holds a session at a transaction boundary while the proxy is paused: its client is not read
 * (its next request waits in the socket or the buffer). */
void sy_session_hold(struct sy_session *sess);
/* Lets one held session run on although the proxy is paused (pause_exempt set). */
void sy_session_release(struct sy_session *sess);
/* Pauses the proxy: sessions are held as they reach a transaction boundary, new clients wait
 * before login. timeout_ms > 0 resumes by itself after that long. */
void sy_proxy_pause(struct sy_proxy *p, uint64_t timeout_ms);
/* Resumes every held session and waiting client. */
void sy_proxy_resume(struct sy_proxy *p, const char *why);

/* Counts of sessions by admin state. */
const char *sy_session_state_name(const struct sy_session *sess);

/* ---- pool.c: server connection reuse ---- */
int sy_pool_start(struct sy_proxy *p);
void sy_pool_stop(struct sy_proxy *p);
/* Closes the kept connections to side (-1: both). */
void sy_pool_flush(struct sy_proxy *p, int side, const char *why);
/* Keeps sess's server connection for another client when it can serve one (ops->server_park
 * resets it). Returns 1 when it was kept (it is no longer sess->server), 0 otherwise. */
int sy_session_park(struct sy_session *sess);
/* The client left cleanly: keep the server connection for reuse when it can be, then close. */
void sy_session_client_gone(struct sy_session *sess, const char *reason);
/* Takes a kept connection matching sess (side and key) and makes it sess->server (reading,
 * server_reused set). Returns the pool record (free with sy_pool_entry_free), or NULL. */
struct sy_pooled *sy_pool_take(struct sy_session *sess);
void sy_pool_entry_free(struct sy_pooled *e);
/* A kept connection failed its check: it is closed and a new one opened. Returns 0, or -1 when
 * the session was closed. */
int sy_session_server_reuse_failed(struct sy_session *sess, const char *why);

/* ---- pg_shadow.c: shadow traffic ---- */
struct json_object;
int sy_shadow_init(struct sy_proxy *p);
void sy_shadow_free_all(struct sy_proxy *p);
/* At shutdown, on the loop: closes its timer. */
void sy_shadow_close(struct sy_proxy *p);
/* Stops shadowing every session (a switch starts, shadowing turned off). */
void sy_shadow_stop_all(struct sy_proxy *p, const char *why);
/* The admin command: shadow [status | on [reads|all] | off | sample X | report [--reset] |
 * reset]. */
struct json_object *sy_shadow_cmd(struct sy_proxy *p, int argc, char **argv);
/* The cutover gate (cutover_requires_clean_shadow): 0 to go on, or -1 with why filled. */
int sy_shadow_gate(struct sy_proxy *p, char *why, size_t cap);
/* The config was reloaded: takes its shadow_accept list and gate window. */
void sy_shadow_config_changed(struct sy_proxy *p);

/* ---- pg_session.c ---- */
extern const struct sy_protocol_ops sy_pg_ops;
/* Sends a cancel to the server of the session whose proxy-issued key this is. Returns 1 when a
 * session matched. */
int sy_pg_cancel(struct sy_proxy *p, uint32_t pid, const uint8_t *key, size_t key_len);

/* ---- admin.c ---- */
int sy_admin_start(struct sy_proxy *p);
void sy_admin_stop(struct sy_proxy *p);

#endif
