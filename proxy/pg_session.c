/*
 * The PostgreSQL protocol plug-in: startup-phase handling (SSLRequest, GSSENCRequest,
 * CancelRequest, StartupMessage), then a protocol-aware relay that frames every message in both
 * directions and tracks what later stages need: transaction state from ReadyForQuery, ParameterStatus
 * values, BackendKeyData (replaced by a key the proxy issues, so cancel keeps working when a
 * session moves), COPY and extended-query pipelines in progress.
 *
 * Only headers and a few small messages are read; every other byte is forwarded as it came.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "log.h"
#include "pg_derive.h"
#include "pg_session.h"
#include "switch.h"
#include "tls.h"

static struct pg_sess *pg(struct sy_session *sess) { return sess->proto_state; }

/* ---- errors to the client ---- */

static void pg_client_error(struct sy_session *sess, const char *code, const char *message)
{
    struct pg_sess *ps = pg(sess);
    /* Before the startup packet is understood PostgreSQL answers nothing but what
     * ProcessStartupPacket itself sends (startup_fatal below): a client that times out there or
     * meets a shutdown is closed without a word. A refusal at accept (no_linger) still speaks. */
    if (ps->stage == PG_STAGE_STARTUP && !ps->understood && !sess->no_linger)
        return;
    /* Only between server messages; otherwise the error would land inside one and corrupt it. */
    if (!pg_scan_at_boundary(&ps->be))
        return;
    uint8_t buf[512];
    int n = pg_be_write_error(buf, sizeof(buf), "FATAL", code, message);
    if (n > 0)
        sy_conn_send(&sess->client, buf, (size_t)n);
}

void pg_session_fail(struct sy_session *sess, const char *sqlstate, const char *message)
{
    sy_session_fail(sess, sqlstate, message);
}

static void protocol_error(struct sy_session *sess, int from_server, int err, uint8_t type)
{
    char msg[200];
    sess->proxy->protocol_errors++;
    if (err == PG_E_UNKNOWN_TYPE)
        snprintf(msg, sizeof(msg), "%s sent an invalid message type 0x%02x",
                 from_server ? "the server" : "the client", type);
    else
        snprintf(msg, sizeof(msg), "%s sent an invalid message: %s",
                 from_server ? "the server" : "the client", pg_strerror(err));
    sy_session_fail(sess, "08P01", msg);
}

/* ---- startup phase ---- */

/*
 * Until its StartupMessage is understood, a client meets what PostgreSQL's ProcessStartupPacket
 * (src/backend/postmaster/postmaster.c, 15) would do with the same bytes. What the server only
 * logs (COMMERROR: a length under 8 or over the limit, a packet cut short, a CancelRequest of
 * the wrong size) gets no byte here either: the connection just closes. What it answers FATAL
 * (an unsupported protocol, a broken parameter list, no user, bytes sent before an encryption
 * answer, a second SSLRequest) gets the same SQLSTATE and text. Drivers test these edges, and a
 * driver that sees an error where the server sends nothing reports a failure the application
 * never saw directly (a Terminate written before the StartupMessage, for one).
 */

/* Refusals before the startup packet are logged at most one line a second, summed, naming the
 * last client (a port scanner or a flood of garbage must not flood the log), as refused
 * connections are (session.c). The state belongs to the one loop thread. */
static struct {
    struct sy_proxy *proxy;
    uint64_t unlogged;
    uint64_t logged_ms;
    char last[300];
    uv_timer_t timer;
    int timer_open;
} startup_refusals;

static void startup_refusals_log(void)
{
    struct sy_proxy *p = startup_refusals.proxy;
    sy_warn("refused %llu client connection%s before the startup packet; last: %s",
            (unsigned long long)startup_refusals.unlogged,
            startup_refusals.unlogged == 1 ? "" : "s", startup_refusals.last);
    startup_refusals.unlogged = 0;
    startup_refusals.logged_ms = uv_now(p->loop);
}

static void on_startup_refusals_timer(uv_timer_t *t)
{
    (void)t;
    if (startup_refusals.unlogged)
        startup_refusals_log();
}

/* Counts a refusal before the startup packet and logs it (rate-limited) with the client's
 * address. */
static void startup_note(struct sy_session *sess, const char *reason)
{
    struct sy_proxy *p = sess->proxy;
    p->protocol_errors++;
    startup_refusals.proxy = p;
    startup_refusals.unlogged++;
    snprintf(startup_refusals.last, sizeof(startup_refusals.last), "%s from %s", reason,
             sess->client_addr);
    uint64_t now = uv_now(p->loop);
    if (!startup_refusals.logged_ms || now - startup_refusals.logged_ms >= 1000) {
        startup_refusals_log();
        return;
    }
    if (!startup_refusals.timer_open) {
        if (uv_timer_init(p->loop, &startup_refusals.timer) != 0)
            return;
        startup_refusals.timer_open = 1;
        uv_unref((uv_handle_t *)&startup_refusals.timer); /* never keeps the loop alive */
    }
    if (!uv_is_active((uv_handle_t *)&startup_refusals.timer))
        uv_timer_start(&startup_refusals.timer, on_startup_refusals_timer,
                       1000 - (now - startup_refusals.logged_ms), 0);
}

/* What PostgreSQL does with a COMMERROR here: log the reason, close, send nothing. Returns -1. */
static int startup_close_silently(struct sy_session *sess, const char *reason)
{
    startup_note(sess, reason);
    sy_session_close(sess, reason);
    return -1;
}

/* What PostgreSQL does with a FATAL here: an ErrorResponse, then close; in the old unframed form
 * for a client that asked for protocol 1.x or 2.x (v2). Returns -1. */
static int startup_fatal_as(struct sy_session *sess, const char *sqlstate, const char *message,
                            int v2)
{
    uint8_t buf[512];
    startup_note(sess, message);
    int n = v2 ? pg_be_write_error_v2(buf, sizeof(buf), "FATAL", message)
               : pg_be_write_error(buf, sizeof(buf), "FATAL", sqlstate, message);
    if (n > 0 && sy_conn_send(&sess->client, buf, (size_t)n) != 0)
        return -1; /* the write failed and closed the session */
    sy_session_close(sess, message);
    return -1;
}

static int startup_fatal(struct sy_session *sess, const char *sqlstate, const char *message)
{
    return startup_fatal_as(sess, sqlstate, message, 0);
}

static void random_bytes(void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r <= 0)
            continue;
        p += r;
        n -= (size_t)r;
    }
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

/* Protocol 3.x with x > 0, or _pq_ options: Switchyard speaks 3.0 and says so, as a server
 * would (NegotiateProtocolVersion), before anything else. */
static int negotiate_version(struct sy_session *sess, const struct pg_startup *st)
{
    uint8_t msg[1024];
    size_t n = 13, unsupported = 0;
    for (size_t i = 0; i < st->nparams; i++) {
        if (strncmp(st->params[i].name, "_pq_.", 5) != 0)
            continue;
        size_t l = strlen(st->params[i].name) + 1;
        if (n + l > sizeof(msg))
            break;
        memcpy(msg + n, st->params[i].name, l);
        n += l;
        unsupported++;
    }
    if ((st->version & 0xffff) == 0 && unsupported == 0)
        return 0;
    msg[0] = PG_BE_NEGOTIATE_VERSION;
    pg_put_u32(msg + 1, (uint32_t)(n - 1));
    pg_put_u32(msg + 5, PG_PROTO_V3);
    pg_put_u32(msg + 9, (uint32_t)unsupported);
    return sy_conn_send(&sess->client, msg, n);
}

static int startup_message(struct sy_session *sess, const struct pg_startup *st, size_t len)
{
    struct pg_sess *ps = pg(sess);
    struct sy_conn *c = &sess->client;
    /* The server's order: NegotiateProtocolVersion, then the user check, then the rest. */
    if (negotiate_version(sess, st) != 0)
        return -1;
    if (!st->user || !st->user[0])
        return startup_fatal(sess, "28000", "no PostgreSQL user name specified in startup packet");
    copy_str(sess->user, sizeof(sess->user), st->user);
    copy_str(sess->database, sizeof(sess->database),
             st->database && st->database[0] ? st->database : st->user);
    if (sess->proxy->cfg.client_tls == SY_CLIENT_TLS_REQUIRE && !c->tls) {
        pg_session_fail(sess, "28000",
                        "switchyard requires TLS (client_tls = require); connect with "
                        "sslmode=require");
        return -1;
    }
    ps->startup = malloc(len);
    if (!ps->startup) {
        pg_session_fail(sess, "53200", "switchyard is out of memory");
        return -1;
    }
    memcpy(ps->startup, c->buf, len);
    ps->startup_len = len;
    sy_conn_consume(c, len);
    sy_session_log(sess, SY_LOG_DEBUG, "startup for database %s", sess->database);
    if (pg_auth_client_begin(sess) != 0)
        return -1;
    /* A client may pipeline its first answer behind the StartupMessage. */
    if (ps->stage == PG_STAGE_CLIENT_AUTH && c->len > 0)
        return pg_auth_client_data(sess);
    return 0;
}

static int start_client_tls(struct sy_session *sess, const uint8_t *initial, size_t n)
{
    return sy_conn_start_tls(&sess->client, sess->proxy->client_tls_ctx, NULL, initial, n);
}

/* PostgreSQL's ssl_done and gss_done: whether an SSLRequest (a GSSENCRequest) was answered
 * already, or the connection is encrypted (then neither may come). */
static int ssl_done(const struct pg_sess *ps, const struct sy_conn *c)
{
    return ps->ssl_seen || c->tls != NULL;
}

static int gss_done(const struct pg_sess *ps, const struct sy_conn *c)
{
    return ps->gss_seen || c->tls != NULL;
}

/* A packet PostgreSQL refuses with a length or version error; each as the server words it. */
static int startup_bad_packet(struct sy_session *sess, int rc, uint32_t max)
{
    struct sy_conn *c = &sess->client;
    char msg[200];
    if (rc == PG_E_TOO_LARGE) {
        uint32_t plen = pg_get_u32(c->buf);
        if (max == sess->proxy->cfg.max_startup_packet + 4u)
            snprintf(msg, sizeof(msg), "invalid length of startup packet (%u bytes, over "
                     "max_startup_packet %u and the length field)", plen, max - 4);
        else
            snprintf(msg, sizeof(msg), "invalid length of startup packet (%u bytes, over "
                     "io_buffer_size %u)", plen, max);
        return startup_close_silently(sess, msg);
    }
    if (rc == PG_E_LENGTH) {
        snprintf(msg, sizeof(msg), "invalid length of startup packet (%u bytes)",
                 pg_get_u32(c->buf));
        return startup_close_silently(sess, msg);
    }
    if (rc == PG_E_VERSION) {
        uint32_t v = pg_get_u32(c->buf + 4);
        snprintf(msg, sizeof(msg), "unsupported frontend protocol %u.%u: server supports 3.0 to 3.0",
                 v >> 16, v & 0xffff);
        /* The server answers a 1.x or 2.x client in that protocol's error form; 0.0 is "not
         * known yet" to it, and gets the 3.0 form. */
        return startup_fatal_as(sess, "0A000", msg, v != 0 && (v >> 16) < 3);
    }
    if (rc == PG_E_LIMIT) {
        snprintf(msg, sizeof(msg), "too many startup parameters: switchyard accepts %d",
                 PG_STARTUP_PARAMS_MAX);
        return startup_fatal(sess, "08P01", msg);
    }
    return startup_fatal(sess, "08P01",
                         "invalid startup packet layout: expected terminator as last byte");
}

/* SSLRequest or GSSENCRequest, not answered before on this connection. */
static int startup_encryption_request(struct sy_session *sess, const struct pg_startup *st,
                                      int rc)
{
    struct pg_sess *ps = pg(sess);
    struct sy_conn *c = &sess->client;
    struct sy_proxy *p = sess->proxy;
    int is_ssl = st->kind == PG_STARTUP_SSL;
    int tls = is_ssl && p->client_tls_ctx != NULL;
    int pipelined = c->len > (size_t)rc;
    if (is_ssl)
        ps->ssl_seen = 1;
    else
        ps->gss_seen = 1;
    sy_conn_consume(c, (size_t)rc);
    if (sy_conn_send_raw(c, tls ? "S" : "N", 1) != 0)
        return -1;
    if (pipelined) {
        /* The client must wait for the answer; bytes sent before it could have been injected
         * by someone in the middle (the CVE-2021-23214 class). The server answers, then fails
         * the connection; after 'S' it waits for a handshake these bytes are not, and closes
         * at authentication_timeout without a word: Switchyard closes at once. */
        const char *msg = is_ssl ? "received unencrypted data after SSL request"
                                 : "received unencrypted data after GSSAPI encryption request";
        if (tls)
            return startup_close_silently(sess, msg);
        return startup_fatal(sess, "08P01", msg);
    }
    return tls ? start_client_tls(sess, NULL, 0) : 0;
}

static int startup_packet(struct sy_session *sess)
{
    struct pg_sess *ps = pg(sess);
    struct sy_conn *c = &sess->client;
    struct sy_proxy *p = sess->proxy;
    /* PostgreSQL's MAX_STARTUP_PACKET_LENGTH (10000) does not count the 4-byte length field;
     * nor does max_startup_packet. The buffer must hold the whole packet. */
    uint32_t max = p->cfg.max_startup_packet + 4u;
    if (max > c->cap)
        max = (uint32_t)c->cap;
    /* PostgreSQL 17's direct TLS: a TLS ClientHello where the first packet would be. */
    if (!c->tls && !ps->ssl_seen && !ps->gss_seen && c->len > 0 && c->buf[0] == 0x16) {
        if (!p->client_tls_ctx) /* to PostgreSQL 15 these bytes are a length over its limit */
            return startup_close_silently(sess, "direct TLS from a client, but client_tls = "
                                                "disable (invalid length of startup packet)");
        ps->direct_tls = 1;
        size_t n = c->len;
        c->len = c->ready = 0;
        return start_client_tls(sess, c->buf, n);
    }
    struct pg_startup st;
    int rc = pg_fe_parse_startup(c->buf, c->len, max, &st, NULL);
    if (rc == PG_NEED_MORE)
        return 0;
    if (rc < 0)
        return startup_bad_packet(sess, rc, max);
    switch (st.kind) {
    case PG_STARTUP_SSL:
    case PG_STARTUP_GSSENC:
        if (st.kind == PG_STARTUP_SSL ? !ssl_done(ps, c) : !gss_done(ps, c))
            return startup_encryption_request(sess, &st, rc);
        /* A second request is no request code the server knows at this point: it takes the
         * code for a protocol version. */
        return startup_bad_packet(sess, PG_E_VERSION, max);
    case PG_STARTUP_CANCEL:
        if (rc != 16) /* PostgreSQL before 18: a 4-byte key, and Switchyard issues no other */
            return startup_close_silently(sess, "invalid length of startup packet (a "
                                                "CancelRequest not of 16 bytes)");
        sy_pg_cancel(p, st.cancel_pid, st.cancel_key, st.cancel_key_len);
        sy_session_close(sess, "cancel request handled");
        return -1;
    case PG_STARTUP_MESSAGE:
        ps->understood = 1;
        if (p->paused && !sess->pause_exempt) {
            /* A new login waits for the pause to end, here, once its first packets were read:
             * so a CancelRequest (or TLS negotiation) is still answered during a pause, and the
             * drain of a switch can see the query its client is cancelling end. */
            sy_session_hold(sess);
            return 0;
        }
        return startup_message(sess, &st, (size_t)rc);
    }
    return 0;
}

/* The client closed before its startup packet was whole. PostgreSQL logs "incomplete startup
 * packet" when some of it came (not for a partial length word once encryption was negotiated),
 * and nothing for a connection that sent nothing (monitoring probes do that). */
static void pg_client_eof(struct sy_session *sess)
{
    struct pg_sess *ps = pg(sess);
    struct sy_conn *c = &sess->client;
    if (ps->stage != PG_STAGE_STARTUP || ps->understood || c->len == 0 ||
        sess->phase == SY_PHASE_CLOSING)
        return;
    if (c->len < 4 && (ssl_done(ps, c) || gss_done(ps, c))) {
        sy_session_close(sess, "client closed the connection");
        return;
    }
    startup_close_silently(sess, "incomplete startup packet");
}

static int pg_server_connected(struct sy_session *sess, struct sy_conn *conn)
{
    struct pg_sess *ps = pg(sess);
    if (conn != sess->server)
        return pg_auth_server_connected(sess, pg_move_login(ps));
    ps->sl.conn = conn;
    ps->sl.side = sess->side;
    return pg_auth_server_connected(sess, &ps->sl);
}

static int pg_tls_ready(struct sy_session *sess, struct sy_conn *conn)
{
    struct pg_sess *ps = pg(sess);
    if (conn->is_server)
        return pg_auth_server_tls_ready(sess, conn == sess->server ? &ps->sl : pg_move_login(ps));
    if (ps->direct_tls && !sy_tls_alpn_ok(conn->tls)) {
        sess->proxy->protocol_errors++;
        sy_session_close(sess, "direct TLS without ALPN \"postgresql\"");
        return -1;
    }
    return 0; /* the startup phase goes on, now encrypted */
}

int pg_session_start_relay(struct sy_session *sess)
{
    struct pg_sess *ps = pg(sess);
    ps->stage = PG_STAGE_RELAY;
    pg_auth_login_done(ps);
    sy_conn_resume(&sess->client);
    /* What the server sent after AuthenticationOk (ParameterStatus, BackendKeyData,
     * ReadyForQuery) goes through the relay like everything after it. */
    if (sess->server && sess->server->len > 0 &&
        sess->proxy->ops->server_data(sess, sess->server) != 0)
        return -1;
    sy_conn_pump(&sess->client);
    return 0;
}

/* ---- relay: client to server ---- */

static void note_client_message(struct sy_session *sess, struct pg_sess *ps, uint8_t type)
{
    switch (type) {
    case PG_FE_QUERY:
    case PG_FE_FUNCTION_CALL:
        if (type == PG_FE_QUERY) {
            sess->queries++;
            sess->proxy->total_queries++;
        }
        ps->pending_ready++;
        break;
    case PG_FE_SYNC:
        ps->pending_ready++;
        ps->ext_open = 0;
        return;
    case PG_FE_EXECUTE:
        sess->queries++;
        sess->proxy->total_queries++;
        ps->ext_open = 1;
        break;
    case PG_FE_PARSE:
    case PG_FE_BIND:
    case PG_FE_DESCRIBE:
    case PG_FE_CLOSE:
        ps->ext_open = 1;
        break;
    case PG_FE_TERMINATE:
        ps->terminating = 1;
        return;
    default:
        return;
    }
    if (sess->tx == SY_TX_IDLE) {
        sess->tx = SY_TX_ACTIVE;
        sess->tx_started_ms = uv_now(sess->proxy->loop);
    }
}

/* What the relay does at each message start: 0 goes on, 1 stops the relay before this message
 * (it stays unforwarded), a negative return is a protocol error. */
typedef int (*relay_msg_fn)(struct sy_session *sess, struct pg_sess *ps,
                            const struct pg_scan_item *item, uint8_t *msg, size_t len);

/*
 * The relay for one direction: scans what arrived since the last call, lets fn look at each
 * message start, then forwards every whole or partial message scanned. Malformed input fails the
 * session after forwarding what came before it. Returns 0, or -1 when the session closed.
 */
static int relay_scan(struct sy_session *sess, struct sy_conn *c, struct pg_scan *scan,
                      relay_msg_fn fn)
{
    size_t pos = c->ready;
    struct pg_scan_item item;
    if (!c->is_server)
        pg(sess)->shadow_from = c->ready; /* the shadow's guard may mirror part earlier */
    while (pos < c->len) {
        int rc = pg_scan_next(scan, c->buf + pos, c->len - pos, &item, NULL);
        if (rc == PG_NEED_MORE)
            break;
        int f = rc > 0 && item.start ? fn(sess, pg(sess), &item, c->buf + pos, (size_t)rc) : 0;
        if (f < 0)
            rc = PG_E_MALFORMED;
        if (f == 1)
            break; /* fn keeps this message and what follows from being forwarded */
        if (rc < 0) {
            uint8_t bad = c->buf[pos];
            c->ready = pos;
            sy_conn_forward(c); /* what came before the bad message is delivered */
            protocol_error(sess, c->is_server, rc, bad);
            return -1;
        }
        pos += (size_t)rc;
    }
    c->ready = pos;
    if (!c->is_server && pg(sess)->shadow && pos > pg(sess)->shadow_from)
        pg_shadow_mirror(sess, c->buf + pg(sess)->shadow_from, pos - pg(sess)->shadow_from);
    return sy_conn_forward(c);
}

static int on_client_message(struct sy_session *sess, struct pg_sess *ps,
                             const struct pg_scan_item *item, uint8_t *msg, size_t len)
{
    note_client_message(sess, ps, item->type);
    if (ps->shadow)
        pg_shadow_client_message(sess, item->type, msg, len, item->whole);
    /* Terminate stops the relay: it is not forwarded (the connection may be kept). */
    return item->type == PG_FE_TERMINATE ? 1 : 0;
}

static int pg_client_data(struct sy_session *sess)
{
    struct pg_sess *ps = pg(sess);
    struct sy_conn *c = &sess->client;
    if (ps->stage == PG_STAGE_STARTUP) {
        /* Several startup packets may arrive together (GSSENCRequest refused, then ...). */
        while (ps->stage == PG_STAGE_STARTUP && c->len > 0 && !c->tls_handshaking) {
            size_t before = c->len;
            if (startup_packet(sess) != 0)
                return -1;
            if (c->len == before)
                break;
        }
        return 0;
    }
    if (ps->stage == PG_STAGE_CLIENT_AUTH)
        return ps->waiting_query ? 0 : pg_auth_client_data(sess);
    if (ps->stage != PG_STAGE_RELAY)
        return 0;
    if (pg_move_owns_server(ps)) {
        /* Switchyard's own query runs on the server: the client's next request waits, held
         * like any other during the switch's pause (released when it ends). */
        if (sess->proxy->paused)
            sy_session_hold(sess);
        else
            sy_conn_pause(c);
        return 0;
    }
    if (sess->proxy->paused && !sess->pause_exempt && c->len > c->ready &&
        sess->tx == SY_TX_IDLE && !ps->in_copy && pg_scan_at_boundary(&ps->fe)) {
        /* The start of a new transaction: it waits here until the pause ends. */
        sy_session_hold(sess);
        return 0;
    }
    if (relay_scan(sess, c, &ps->fe, on_client_message) != 0)
        return -1;
    if (ps->terminating) {
        /* The server connection may serve another client (pool.c); if not, the server hears
         * the Terminate the relay held back. */
        static const uint8_t terminate[5] = {PG_FE_TERMINATE, 0, 0, 0, 4};
        if (!sy_session_park(sess) && sess->server)
            sy_conn_send(sess->server, terminate, sizeof(terminate));
        sy_session_close(sess, "client sent Terminate");
        return -1;
    }
    return 0;
}

/* ---- relay: server to client ---- */

void pg_params_store(char **params, size_t *nparams, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    char *s = malloc(nl + vl + 2);
    if (!s)
        return;
    memcpy(s, name, nl + 1);
    memcpy(s + nl + 1, value, vl + 1);
    for (size_t i = 0; i < *nparams; i++) {
        if (strcmp(params[i], name) == 0) {
            free(params[i]);
            params[i] = s;
            return;
        }
    }
    if (*nparams < PG_PARAMS_MAX)
        params[(*nparams)++] = s;
    else
        free(s);
}

static int ready_for_query(struct sy_session *sess, struct pg_sess *ps, uint8_t status)
{
    if (ps->pending_ready > 0)
        ps->pending_ready--;
    ps->in_copy = 0;
    if (status == 'T')
        sess->tx = SY_TX_IN_TX;
    else if (status == 'E')
        sess->tx = SY_TX_FAILED;
    else
        sess->tx = ps->pending_ready > 0 || ps->ext_open ? SY_TX_ACTIVE : SY_TX_IDLE;
    int answers_client = sess->phase != SY_PHASE_LOGIN; /* not the login's own */
    if (sess->phase == SY_PHASE_LOGIN) {
        sy_session_logged_in(sess);
        sy_session_clear_timeout(sess);
        sy_session_log(sess, SY_LOG_INFO, "logged in to %s, database %s", sy_side_name(sess->side),
                       sess->database);
        if (sess->proxy->shadow_mode != SY_SHADOW_OFF)
            pg_shadow_login(sess);
    }
    if (ps->shadow || sess->proxy->shadow_mode != SY_SHADOW_OFF)
        pg_shadow_blue_ready(sess, sess->tx == SY_TX_IDLE && status == 'I', answers_client);
    if (sess->warm_read == 1 && sess->tx == SY_TX_IDLE && status == 'I')
        ps->switch_idle = 1;
    return 0;
}

/* Replaces the server's BackendKeyData in place with the key this proxy issued the client. */
static int backend_key(struct sy_session *sess, struct pg_sess *ps, uint8_t *msg, size_t len)
{
    uint32_t pid;
    const uint8_t *key;
    size_t key_len;
    if (pg_be_parse_backend_key(msg, len, &pid, &key, &key_len) < 0)
        return PG_E_MALFORMED;
    ps->server_pid = pid;
    sess->server_pid = pid;
    memcpy(ps->server_key, key, key_len);
    ps->key_len = key_len;
    ps->proxy_pid = (uint32_t)(sess->id & 0x7fffffff);
    random_bytes(ps->proxy_key, key_len);
    pg_put_u32(msg + 5, ps->proxy_pid);
    memcpy(msg + 9, ps->proxy_key, key_len);
    return 0;
}

static int server_message(struct sy_session *sess, struct pg_sess *ps, uint8_t *msg, size_t len)
{
    switch (msg[0]) {
    case PG_BE_READY_FOR_QUERY: {
        uint8_t status;
        if (pg_be_parse_ready(msg, len, &status) < 0)
            return PG_E_MALFORMED;
        return ready_for_query(sess, ps, status);
    }
    case PG_BE_BACKEND_KEY_DATA:
        return backend_key(sess, ps, msg, len);
    case PG_BE_PARAMETER_STATUS: {
        const char *name, *value;
        if (pg_be_parse_parameter_status(msg, len, &name, &value) < 0)
            return PG_E_MALFORMED;
        pg_params_store(ps->params, &ps->nparams, name, value);
        if (strcmp(name, "application_name") == 0)
            snprintf(sess->application, sizeof(sess->application), "%s", value);
        return 0;
    }
    }
    return 0;
}

static int on_server_message(struct sy_session *sess, struct pg_sess *ps,
                             const struct pg_scan_item *item, uint8_t *msg, size_t len)
{
    if (sess->proxy->shadow_mode != SY_SHADOW_OFF)
        pg_shadow_server_message(sess, item->type, msg, len, item->whole);
    if (item->whole && (ps->be.want[item->type >> 3] & (1u << (item->type & 7))))
        return server_message(sess, ps, msg, len);
    if (item->type == PG_BE_COPY_IN || item->type == PG_BE_COPY_OUT ||
        item->type == PG_BE_COPY_BOTH)
        ps->in_copy = 1;
    return 0;
}

static int pg_server_data(struct sy_session *sess, struct sy_conn *c)
{
    struct pg_sess *ps = pg(sess);
    if (c != sess->server)
        return pg_move_standby_data(sess);
    if (ps->stage == PG_STAGE_SERVER_LOGIN && ps->sl.step == PG_SL_REUSE)
        return pg_pool_server_data(sess);
    if (ps->stage == PG_STAGE_SERVER_LOGIN)
        return pg_auth_server_data(sess, &ps->sl);
    if (ps->stage != PG_STAGE_RELAY)
        return 0;
    if (pg_move_owns_server(ps))
        return pg_move_server_data(sess);
    int rc = relay_scan(sess, c, &ps->be, on_server_message);
    if (rc == 0 && ps->shadow_idle && c->len == 0 && !c->inflight)
        pg_shadow_idle(sess);
    if (rc == 0 && ps->switch_idle && c->len == 0 && !c->inflight && !pg_move_owns_server(ps)) {
        ps->switch_idle = 0;
        sy_switch_idle_point(sess);
    }
    return rc;
}

/* ---- lifecycle ---- */

static int pg_client_accepted(struct sy_session *sess)
{
    struct pg_sess *ps = pg(sess);
    uint32_t max = sess->proxy->cfg.max_message_size;
    uint32_t inspect = (uint32_t)sess->proxy->cfg.io_buffer_size;
    pg_scan_init(&ps->fe, 0, max, inspect);
    pg_scan_init(&ps->be, 1, max, inspect);
    static const uint8_t be_wanted[] = {PG_BE_READY_FOR_QUERY, PG_BE_BACKEND_KEY_DATA,
                                        PG_BE_PARAMETER_STATUS};
    for (size_t i = 0; i < sizeof(be_wanted); i++)
        pg_scan_want(&ps->be, be_wanted[i], 1);
    return 0;
}

static void pg_session_free(struct sy_session *sess)
{
    struct pg_sess *ps = pg(sess);
    if (!ps)
        return;
    for (size_t i = 0; i < ps->nparams; i++)
        free(ps->params[i]);
    if (ps->move)
        pg_derive_cancel(pg_move_login(ps)->derive_token); /* a standby's login, if deriving */
    pg_move_drop(sess);
    pg_auth_free(ps);
    free(ps->startup);
    free(ps->reuse_greeting);
    pg_shadow_free(ps);
}

const struct sy_protocol_ops sy_pg_ops = {
    .name = "postgres",
    .proto_state_size = sizeof(struct pg_sess),
    .client_accepted = pg_client_accepted,
    .client_data = pg_client_data,
    .server_data = pg_server_data,
    .server_connected = pg_server_connected,
    .tls_ready = pg_tls_ready,
    .client_error = pg_client_error,
    .client_eof = pg_client_eof,
    .session_free = pg_session_free,
    .standby_open = pg_move_standby_open,
    .standby_failed = pg_move_standby_failed,
    .move_prepare = pg_move_prepare,
    .move_warm_read = pg_move_warm_read,
    .move_commit = pg_move_commit,
    .standby_drop = pg_move_drop,
    .standby_linger = pg_shadow_linger,
    .server_park = pg_pool_park,
    .pool_key = pg_pool_key,
    .server_reused = pg_pool_reused,
};

/* ---- cancel ---- */

struct cancel_req {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    size_t len;
    uint8_t pkt[12 + 256];
};

static void on_cancel_closed(uv_handle_t *h) { free(h->data); }

static void on_cancel_written(uv_write_t *w, int status)
{
    struct cancel_req *r = w->data;
    uv_close((uv_handle_t *)&r->tcp, on_cancel_closed);
}

static void on_cancel_connected(uv_connect_t *req, int status)
{
    struct cancel_req *r = req->data;
    if (status < 0) {
        sy_warn("cancel: could not connect to the server: %s", uv_strerror(status));
        uv_close((uv_handle_t *)&r->tcp, on_cancel_closed);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)r->pkt, (unsigned)r->len);
    r->write.data = r;
    if (uv_write(&r->write, (uv_stream_t *)&r->tcp, &b, 1, on_cancel_written) != 0)
        uv_close((uv_handle_t *)&r->tcp, on_cancel_closed);
}

/* Compares secrets in time that does not depend on where they differ. */
static int key_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++)
        d |= a[i] ^ b[i];
    return d == 0;
}

int sy_pg_cancel(struct sy_proxy *p, uint32_t pid, const uint8_t *key, size_t key_len)
{
    for (struct sy_session *s = p->sessions; s; s = s->next) {
        struct pg_sess *ps = pg(s);
        if (ps->key_len == 0 || ps->proxy_pid != pid || ps->key_len != key_len ||
            !key_equal(ps->proxy_key, key, key_len))
            continue;
        if (!s->server || !s->server->open)
            return 1;
        if (pg_move_owns_server(ps) || (ps->pending_ready == 0 && !ps->ext_open && !ps->in_copy)) {
            /* Nothing of the client's runs: its query ended before the cancel came (the server
             * would ignore it), or the client's next request waits while Switchyard's own
             * query runs on the server, which must not be cancelled in its place. */
            sy_session_log(s, SY_LOG_INFO, "cancel request ignored: nothing of the client's "
                           "runs on the server");
            return 1;
        }
        struct cancel_req *r = calloc(1, sizeof(*r));
        if (!r)
            return 1;
        int n = pg_fe_write_cancel(r->pkt, sizeof(r->pkt), ps->server_pid, ps->server_key,
                                   ps->key_len);
        r->len = n > 0 ? (size_t)n : 0;
        uv_tcp_init(p->loop, &r->tcp);
        r->tcp.data = r;
        r->connect.data = r;
        if (uv_tcp_connect(&r->connect, &r->tcp, (const struct sockaddr *)&p->server_addr[s->side],
                           on_cancel_connected) != 0)
            uv_close((uv_handle_t *)&r->tcp, on_cancel_closed);
        sy_session_log(s, SY_LOG_INFO, "cancel request forwarded to the %s server",
                       sy_side_name(s->side));
        return 1;
    }
    sy_info("cancel request matched no session; ignored");
    return 0;
}
