/*
 * Generic connection machinery: listeners, accepting clients, the relay's read and write path,
 * timers and closing. Protocol meaning lives in the protocol plug-in (pg_session.c).
 *
 * The relay path is the hot path. Each connection reads into its own buffer, allocated once.
 * Forwarding first tries a direct write (uv_try_write); only what the kernel did not take is
 * queued, pointing into the same buffer, and the source stops reading until that write is done,
 * so a slow reader pushes back on a fast writer instead of growing memory.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "log.h"
#include "proxy.h"
#include "switch.h"
#include "tls.h"

#define CLOSE_LINGER_MS 5000 /* how long a closing client may take to read its last bytes */
#define TLS_READ_CHUNK 16640  /* room offered to a socket read on a TLS connection: a record */
#define QUEUE_HIGH_WATER(c) (4 * (c)->cap) /* copied bytes queued on a connection before its
                                                 peer stops reading */

struct send_req {
    uv_write_t req;
    size_t len;
    uint8_t data[];
};

static void session_maybe_free(struct sy_session *sess);
static int conn_tls_flush(struct sy_conn *c);
static struct sy_conn *conn_peer(struct sy_conn *c);

/* ---- logging ---- */

void sy_session_log(struct sy_session *sess, enum sy_log_level level, const char *fmt, ...)
{
    if (!sy_log_enabled(level))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sy_log(level, "session %llu (%s%s%s): %s", (unsigned long long)sess->id, sess->client_addr,
           sess->user[0] ? " user=" : "", sess->user, msg);
}

const char *sy_session_state_name(const struct sy_session *sess)
{
    if (sess->phase == SY_PHASE_LOGIN)
        return "login";
    switch (sess->tx) {
    case SY_TX_IDLE: return "idle";
    case SY_TX_ACTIVE: return "active";
    case SY_TX_IN_TX: return "idle_in_transaction";
    case SY_TX_FAILED: return "failed_transaction";
    }
    return "unknown";
}

/* ---- closing ---- */

static void on_handle_closed(uv_handle_t *h)
{
    struct sy_session *sess = h->data;
    sess->handles_open--;
    session_maybe_free(sess);
}

/*
 * The ownership rule (docs/architecture.md): a connection's memory is released only when its
 * handle has closed AND no write of its bytes is still queued on its peer's stream. A forward
 * queues the source connection's own buffer on the other connection's stream, with the source as
 * the request's data, so that request refers to the source until its callback has run, which can
 * be long after the source's own handle closed (a client that does not read a large result). Each
 * connection holds one count of its session's handles_open until it is released, so the session
 * (and an embedded client connection) outlives every request that refers to any of its parts.
 */
static void conn_release(struct sy_conn *c)
{
    if (!c->handle_closed || c->wreq_queued)
        return;
    struct sy_session *sess = c->sess;
    if (c->is_server) {
        if (sess && sess->server == c)
            sess->server = NULL;
        if (sess && sess->standby == c)
            sess->standby = NULL;
        sy_tls_conn_free(c->tls);
        free(c->buf);
        free(c);
    }
    if (sess) {
        sess->handles_open--;
        session_maybe_free(sess);
    }
}

/* A connection's handle is closed: its memory goes once nothing else refers to it. */
static void on_conn_closed(uv_handle_t *h)
{
    struct sy_conn *c = (struct sy_conn *)h; /* tcp is the first member */
    c->handle_closed = 1;
    conn_release(c);
}

static void session_maybe_free(struct sy_session *sess)
{
    if (sess->handles_open > 0)
        return;
    if (sess->proxy->ops->session_free)
        sess->proxy->ops->session_free(sess);
    free(sess->proto_state);
    sy_tls_conn_free(sess->client.tls);
    free(sess->client.buf);
    free(sess);
}

static void conn_close(struct sy_conn *c)
{
    if (!c || !c->open)
        return;
    c->open = 0;
    c->reading = 0;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

void sy_conn_close(struct sy_conn *c) { conn_close(c); }

int sy_conn_quiet(struct sy_conn *c)
{
    uv_os_fd_t fd;
    uint8_t b;
    if (!c->open || uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
        return 0;
    if (c->tls && sy_tls_has_buffered(c->tls))
        return 0;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static void on_client_shutdown(uv_shutdown_t *req, int status)
{
    struct sy_session *sess = req->data;
    free(req);
    conn_close(&sess->client);
    if (sess->timer_open) {
        sess->timer_open = 0;
        uv_close((uv_handle_t *)&sess->timer, on_handle_closed);
    }
}

static void on_linger_timeout(uv_timer_t *t)
{
    struct sy_session *sess = t->data;
    conn_close(&sess->client);
    if (sess->timer_open) {
        sess->timer_open = 0;
        uv_close((uv_handle_t *)&sess->timer, on_handle_closed);
    }
}

static void session_unlink(struct sy_session *sess)
{
    struct sy_proxy *p = sess->proxy;
    if (sess->prev)
        sess->prev->next = sess->next;
    else
        p->sessions = sess->next;
    if (sess->next)
        sess->next->prev = sess->prev;
    sess->prev = sess->next = NULL;
    p->nsessions--;
}

void sy_session_close(struct sy_session *sess, const char *reason)
{
    if (sess->phase == SY_PHASE_CLOSING)
        return;
    sy_session_log(sess, SY_LOG_INFO, "closing: %s", reason);
    if (sess->phase == SY_PHASE_LOGIN)
        sess->proxy->nlogin--;
    sess->phase = SY_PHASE_CLOSING;
    session_unlink(sess);
    sy_switch_session_closed(sess);
    if (sess->server_counted) {
        sess->proxy->side[sess->side].server_conns--;
        sess->server_counted = 0;
    }
    conn_close(sess->server);
    /* The protocol may keep the standby open a while to finish its work there (a shadow
     * still owed answers by green); it closes it itself. */
    const struct sy_protocol_ops *ops = sess->proxy->ops;
    if (!sess->standby || !ops->standby_linger || ops->standby_linger(sess) != 1)
        sy_session_close_standby(sess);
    if (sess->timer_open)
        uv_timer_stop(&sess->timer);
    /* Let the client read what is queued to it (an error message, the server's last words),
     * but no longer than CLOSE_LINGER_MS. */
    if (sess->client.open && !sess->no_linger) {
        uv_read_stop((uv_stream_t *)&sess->client.tcp);
        sess->client.reading = 0;
        if (sess->client.tls && !sess->client.tls_handshaking &&
            sy_tls_shutdown(sess->client.tls) == 0)
            conn_tls_flush(&sess->client);
        uv_shutdown_t *req = malloc(sizeof(*req));
        if (req) {
            req->data = sess;
            if (uv_shutdown(req, (uv_stream_t *)&sess->client.tcp, on_client_shutdown) == 0) {
                if (sess->timer_open)
                    uv_timer_start(&sess->timer, on_linger_timeout, CLOSE_LINGER_MS, 0);
                return;
            }
            free(req);
        }
    }
    conn_close(&sess->client);
    if (sess->timer_open) {
        sess->timer_open = 0;
        uv_close((uv_handle_t *)&sess->timer, on_handle_closed);
    }
}

void sy_session_fail(struct sy_session *sess, const char *code, const char *message)
{
    if (sess->phase == SY_PHASE_CLOSING)
        return;
    /* Before the client's TLS handshake is done nothing can be sent to it; trying would close
     * the session as "TLS encryption failed" and lose the real reason. */
    if (!(sess->client.tls && sess->client.tls_handshaking))
        sess->proxy->ops->client_error(sess, code, message);
    if (sess->phase != SY_PHASE_CLOSING)
        sy_session_close(sess, message);
}

void sy_session_logged_in(struct sy_session *sess)
{
    if (sess->phase != SY_PHASE_LOGIN)
        return;
    sess->phase = SY_PHASE_READY;
    sess->proxy->nlogin--;
}

/* ---- timers ---- */

/* Whether the server socket's connect has completed, whatever libuv has reported yet. */
static int server_socket_connected(struct sy_session *sess)
{
    uv_os_fd_t fd;
    struct sockaddr_storage ss;
    int len = sizeof(ss), err = 0;
    socklen_t el = sizeof(err);
    return sess->server && uv_fileno((uv_handle_t *)&sess->server->tcp, &fd) == 0 &&
           getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0 &&
           uv_tcp_getpeername(&sess->server->tcp, (struct sockaddr *)&ss, &len) == 0;
}

static void on_session_timeout(uv_timer_t *t)
{
    struct sy_session *sess = t->data;
    /* libuv runs timers before it polls for I/O: after a long loop iteration a connect that
     * finished in time can look late. Only a connect that really is unfinished times out. */
    if (sess->connecting && server_socket_connected(sess)) {
        uv_timer_start(&sess->timer, on_session_timeout, 1000, 0);
        return;
    }
    sy_session_fail(sess, sess->timeout_code, sess->timeout_message);
}

void sy_session_set_timeout(struct sy_session *sess, uint64_t ms, const char *code,
                            const char *message)
{
    if (!sess->timer_open)
        return;
    sess->timeout_code = code;
    sess->timeout_message = message;
    uv_timer_start(&sess->timer, on_session_timeout, ms, 0);
}

void sy_session_clear_timeout(struct sy_session *sess)
{
    if (sess->timer_open)
        uv_timer_stop(&sess->timer);
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    struct sy_conn *c = (struct sy_conn *)h; /* tcp is the first member */
    if (c->tls) {
        /* Ciphertext goes straight into the engine's input buffer. */
        size_t cap = 0;
        uint8_t *room = sy_tls_in_space(c->tls, TLS_READ_CHUNK, &cap);
        out->base = (char *)room;
        out->len = room ? cap : 0;
        return;
    }
    out->base = (char *)c->buf + c->len;
    out->len = c->cap - c->len;
}

static void dispatch(struct sy_conn *c)
{
    struct sy_session *sess = c->sess;
    if (c->is_server)
        sess->proxy->ops->server_data(sess, c);
    else
        sess->proxy->ops->client_data(sess);
}

static void tls_fail(struct sy_conn *c, const char *what)
{
    char msg[300];
    snprintf(msg, sizeof(msg), "TLS %s %s failed: %s", what,
             c->is_server ? "with the server" : "with the client", sy_tls_conn_error(c->tls));
    conn_tls_flush(c); /* an alert may tell the peer why */
    if (c->sess->standby == c)
        sy_conn_failed(c, msg);
    else if (c->is_server)
        sy_session_fail(c->sess, "08P01", msg);
    else
        sy_session_close(c->sess, msg); /* the client's TLS is broken: nothing more reaches it */
}

/* Whether nothing more is to be read from c: it is closed, or its session is closing (except a
 * standby connection that the protocol keeps open a while after its session closed: a shadow
 * finishing the comparison of what green still owes, see standby_linger). */
static int conn_gone(const struct sy_conn *c)
{
    return !c->open || (c->sess->phase == SY_PHASE_CLOSING && c != c->sess->standby);
}

int sy_conn_gone(const struct sy_conn *c) { return conn_gone(c); }

/* Runs the handshake and decrypts what the engine holds into the plaintext buffer, handing
 * each batch to the protocol. Stops when the session closes or the connection is paused. */
static void conn_tls_input(struct sy_conn *c)
{
    struct sy_session *sess = c->sess;
    if (c->tls_handshaking) {
        int rc = sy_tls_handshake(c->tls);
        conn_tls_flush(c);
        if (conn_gone(c))
            return;
        if (rc < 0) {
            tls_fail(c, "handshake");
            return;
        }
        if (rc != SY_TLS_DONE)
            return;
        c->tls_handshaking = 0;
        char desc[96];
        sy_tls_describe(c->tls, desc, sizeof(desc));
        sy_session_log(sess, SY_LOG_DEBUG, "TLS with the %s: %s", c->is_server ? "server" : "client",
                       desc);
        if (sess->proxy->ops->tls_ready(sess, c) != 0 || conn_gone(c))
            return;
    }
    for (;;) {
        size_t before = c->len;
        while (c->len < c->cap) {
            ssize_t r = sy_tls_read(c->tls, c->buf + c->len, c->cap - c->len);
            if (r > 0) {
                c->len += (size_t)r;
                c->bytes_in += (uint64_t)r;
                continue;
            }
            conn_tls_flush(c);
            if (r == SY_TLS_E_CLOSED) {
                /* The records before close_notify are the peer's last words (a server's FATAL
                 * "role is not permitted to log in", a client's Terminate): pass them on
                 * before closing, as a plaintext connection's bytes before EOF are. */
                if (c->len > before)
                    dispatch(c);
                if (!conn_gone(c) && !c->is_server && sess->proxy->ops->client_eof)
                    sess->proxy->ops->client_eof(sess);
                if (!conn_gone(c))
                    sy_conn_failed(c, c->is_server ? "server closed TLS" : "client closed TLS");
                return;
            }
            if (r < 0) {
                tls_fail(c, "read");
                return;
            }
            break;
        }
        if (conn_gone(c))
            return;
        int got = c->len > before;
        if (!got && c->len == c->ready)
            return; /* nothing to hand over */
        dispatch(c);
        if (conn_gone(c) || !c->reading || c->inflight)
            return; /* resumed later with sy_conn_pump */
        /* Go round again only while records keep yielding plaintext: a partial record waits
         * for the socket. */
        if (!got || !sy_tls_has_buffered(c->tls))
            return;
    }
}

void sy_conn_pump(struct sy_conn *c)
{
    if (conn_gone(c))
        return;
    if (c->tls)
        conn_tls_input(c);
    else if (c->len > c->ready)
        dispatch(c);
}

static void on_server_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    free(req);
}

/* The client ended its sending side (a half-close). With nothing in flight the session ends as
 * at any clean exit. With a query in flight the server must still answer it, as it does when
 * the client is connected directly: the end of file is passed on to the server once the
 * client's bytes are written (uv_shutdown waits for them), and the server's answer keeps flowing
 * to the client until the server, having seen the end of file, closes. Returns 0 when the
 * session goes on half-closed, -1 when it should end now. */
static int client_half_close(struct sy_session *sess)
{
    struct sy_conn *c = &sess->client, *s = sess->server;
    c->eof = 1;
    if (sess->phase != SY_PHASE_READY || !s || !s->open || s->tls_handshaking ||
        sess->server_reused || sess->connecting)
        return -1;
    if (sess->tx == SY_TX_IDLE && c->len == 0 && !c->wreq_queued)
        return -1;
    sy_conn_pause(c);
    /* Bytes of an unfinished message go to the server as they are: it sees what it would
     * have seen from the client directly, then the end of file. */
    if (c->len > c->ready)
        c->ready = c->len;
    if (!c->wreq_queued && sy_conn_forward(c) != 0)
        return 0; /* the session closed */
    if (s->tls && sy_tls_shutdown(s->tls) == 0 && conn_tls_flush(s) != 0)
        return 0;
    uv_shutdown_t *req = malloc(sizeof(*req));
    if (!req || uv_shutdown(req, (uv_stream_t *)&s->tcp, on_server_shutdown) != 0) {
        free(req);
        return -1;
    }
    sy_session_log(sess, SY_LOG_DEBUG, "the client half-closed with a query in flight; the "
                   "server gets the end of file and its answer still reaches the client");
    return 0;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *unused)
{
    struct sy_conn *c = (struct sy_conn *)stream;
    struct sy_session *sess = c->sess;
    if (nread > 0) {
        if (c->tls) {
            sy_tls_in_commit(c->tls, (size_t)nread);
            conn_tls_input(c);
            return;
        }
        c->len += (size_t)nread;
        c->bytes_in += (uint64_t)nread;
        dispatch(c);
        return;
    }
    if (nread == 0)
        return;
    if (sess->standby == c || (c == sess->server && sess->server_reused)) {
        sy_conn_failed(c, nread == UV_EOF ? "server closed the connection" : "server read error");
        return;
    }
    if (nread == UV_ENOBUFS) {
        /* The protocol left a full buffer unscanned: it can never make progress. */
        sess->proxy->protocol_errors++;
        sy_session_fail(sess, "08P01", c->is_server ? "server message does not fit the buffer"
                                                    : "client message does not fit the buffer");
        return;
    }
    if (nread == UV_EOF && !c->is_server) {
        if (sess->proxy->ops->client_eof)
            sess->proxy->ops->client_eof(sess);
        if (client_half_close(sess) == 0)
            return;
        sy_session_client_gone(sess, "client closed the connection");
    }
    else if (nread == UV_EOF)
        sy_session_close(sess, "server closed the connection");
    else {
        char why[128];
        snprintf(why, sizeof(why), "%s read error: %s", c->is_server ? "server" : "client",
                 uv_strerror((int)nread));
        /* The session is gone after this; the literal reason is logged first. */
        sy_session_log(sess, SY_LOG_INFO, "%s", why);
        sy_session_close(sess, c->is_server ? "server read error" : "client read error");
    }
}

void sy_conn_pause(struct sy_conn *c)
{
    if (c->open && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

void sy_conn_resume(struct sy_conn *c)
{
    if (!c->reading && c->inflight == 0 && !c->eof && !conn_gone(c)) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = 1;
    }
}

/* ---- writing ---- */

void sy_conn_consume(struct sy_conn *c, size_t n)
{
    if (n >= c->len) {
        c->len = c->ready = 0;
        return;
    }
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
    c->ready = c->ready > n ? c->ready - n : 0;
}

static struct sy_conn *conn_peer(struct sy_conn *c)
{
    return c->is_server ? &c->sess->client : c->sess->server;
}

static void on_forward_written(uv_write_t *req, int status)
{
    struct sy_conn *c = req->data;
    struct sy_conn *target = (struct sy_conn *)req->handle; /* tcp is the first member */
    size_t n = c->inflight;
    c->inflight = 0;
    c->wreq_queued = 0;
    target->pending_writes--;
    if (c->handle_closed) {
        conn_release(c); /* its handle closed while this write was queued: nothing to resume */
        return;
    }
    struct sy_session *sess = c->sess;
    if (status < 0) {
        if (status != UV_ECANCELED)
            sy_session_close(sess, c->is_server ? "write to client failed" : "write to server failed");
        return;
    }
    sy_conn_consume(c, n);
    sy_conn_resume(c);
    sy_conn_pump(c);
}

int sy_conn_forward(struct sy_conn *c)
{
    size_t n = c->ready;
    if (n == 0)
        return 0;
    struct sy_conn *peer = conn_peer(c);
    struct sy_proxy *p = c->sess->proxy;
    if (c->is_server)
        p->bytes_server_to_client += n;
    else
        p->bytes_client_to_server += n;
    if (!peer || !peer->open) {
        sy_conn_consume(c, n);
        return 0;
    }
    if (peer->tls) {
        /* Encrypting copies the bytes: the buffer is free again at once. */
        if (sy_tls_write(peer->tls, c->buf, n) < 0) {
            sy_session_close(c->sess, "TLS encryption failed");
            return -1;
        }
        sy_conn_consume(c, n);
        if (conn_tls_flush(peer) != 0)
            return -1;
        if (uv_stream_get_write_queue_size((uv_stream_t *)&peer->tcp) > QUEUE_HIGH_WATER(peer)) {
            sy_conn_pause(c);
            peer->drain_resume = 1;
        }
        return 0;
    }
    uv_buf_t b = uv_buf_init((char *)c->buf, (unsigned)n);
    int w = uv_try_write((uv_stream_t *)&peer->tcp, &b, 1);
    if (w == (int)n) {
        sy_conn_consume(c, n);
        return 0;
    }
    if (w < 0 && w != UV_EAGAIN) {
        sy_session_close(c->sess, c->is_server ? "write to client failed" : "write to server failed");
        return -1;
    }
    size_t done = w > 0 ? (size_t)w : 0;
    /* Queue the rest straight from this buffer; stop reading into it until it is written. */
    sy_conn_consume(c, done);
    b = uv_buf_init((char *)c->buf, (unsigned)(n - done));
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&peer->tcp, &b, 1, on_forward_written) != 0) {
        sy_session_close(c->sess, c->is_server ? "write to client failed" : "write to server failed");
        return -1;
    }
    peer->pending_writes++;
    c->inflight = (uint32_t)(n - done);
    c->wreq_queued = 1;
    sy_conn_pause(c);
    return 0;
}

static void on_send_written(uv_write_t *req, int status)
{
    struct sy_conn *c = req->data;
    free((struct send_req *)req); /* req is its first member */
    c->pending_writes--;
    if (!c->sess)
        return; /* a detached connection: nobody to tell */
    if (status < 0) {
        if (status != UV_ECANCELED && c->open)
            sy_conn_failed(c, c->is_server ? "write to server failed" : "write to client failed");
        return;
    }
    if (c->drain_resume &&
        uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) <= QUEUE_HIGH_WATER(c) / 2) {
        struct sy_conn *src = conn_peer(c);
        c->drain_resume = 0;
        if (src) { /* a closing session's server may be gone */
            sy_conn_resume(src);
            sy_conn_pump(src);
        }
    }
}

/* Writes out all ciphertext the TLS engine holds. Returns 0, or -1 when the session closed. */
static int conn_tls_flush(struct sy_conn *c)
{
    uint8_t tmp[16384];
    size_t n;
    while (c->tls && (n = sy_tls_take_out(c->tls, tmp, sizeof(tmp))) > 0)
        if (sy_conn_send_raw(c, tmp, n) != 0)
            return -1;
    return 0;
}

int sy_conn_send(struct sy_conn *c, const void *data, size_t len)
{
    if (c->tls && c->open && len > 0) {
        if (sy_tls_write(c->tls, data, len) < 0) {
            sy_conn_failed(c, "TLS encryption failed");
            return -1;
        }
        return conn_tls_flush(c);
    }
    return sy_conn_send_raw(c, data, len);
}

int sy_conn_send_raw(struct sy_conn *c, const void *data, size_t len)
{
    if (!c->open || len == 0)
        return 0;
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int w = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (w == (int)len)
        return 0;
    if (w < 0 && w != UV_EAGAIN) {
        sy_conn_failed(c, c->is_server ? "write to server failed" : "write to client failed");
        return -1;
    }
    size_t done = w > 0 ? (size_t)w : 0;
    struct send_req *r = malloc(sizeof(*r) + len - done);
    if (!r) {
        sy_conn_failed(c, "out of memory");
        return -1;
    }
    r->len = len - done;
    memcpy(r->data, (const uint8_t *)data + done, r->len);
    r->req.data = c;
    b = uv_buf_init((char *)r->data, (unsigned)r->len);
    if (uv_write(&r->req, (uv_stream_t *)&c->tcp, &b, 1, on_send_written) != 0) {
        free(r);
        sy_conn_failed(c, c->is_server ? "write to server failed" : "write to client failed");
        return -1;
    }
    c->pending_writes++;
    return 0;
}

int sy_conn_start_tls(struct sy_conn *c, struct sy_tls_ctx *ctx, const char *host,
                      const uint8_t *initial, size_t n)
{
    char err[256];
    c->tls = sy_tls_conn_new(ctx, host, err, sizeof(err));
    if (!c->tls) {
        char msg[320];
        snprintf(msg, sizeof(msg), "cannot start TLS with the %s: %s",
                 c->is_server ? "server" : "client", err);
        if (c->sess->standby == c)
            sy_conn_failed(c, msg);
        else
            sy_session_fail(c->sess, "08006", msg);
        return -1;
    }
    c->tls_handshaking = 1;
    if (n > 0 && sy_tls_feed(c->tls, initial, n) != 0) {
        sy_session_fail(c->sess, "53200", "switchyard is out of memory");
        return -1;
    }
    conn_tls_input(c);
    return conn_gone(c) ? -1 : 0;
}

/* ---- the server connection ---- */

static int conn_init(struct sy_session *sess, struct sy_conn *c, int is_server)
{
    struct sy_proxy *p = sess->proxy;
    c->sess = sess;
    c->is_server = (uint8_t)is_server;
    c->cap = p->cfg.io_buffer_size;
    c->buf = malloc(c->cap);
    if (!c->buf)
        return -1;
    if (uv_tcp_init(p->loop, &c->tcp) != 0) {
        free(c->buf);
        c->buf = NULL;
        return -1;
    }
    c->tcp.data = sess;
    c->open = 1;
    sess->handles_open++;
    return 0;
}

/* A new server connection for sess, its own allocation (see on_conn_closed). */
static struct sy_conn *server_conn_new(struct sy_session *sess)
{
    struct sy_conn *c = calloc(1, sizeof(*c));
    if (c && conn_init(sess, c, 1) != 0) {
        free(c);
        c = NULL;
    }
    return c;
}

/* What is left of client_login_timeout for a session logging in (at least 1 ms). The time
 * it was held by a pause does not count (login_from_ms moves on at resume). */
static uint64_t login_time_left(struct sy_session *sess)
{
    uint64_t spent = uv_now(sess->proxy->loop) - sess->login_from_ms;
    uint64_t limit = sess->proxy->cfg.client_login_timeout_ms;
    return spent < limit ? limit - spent : 1;
}

static void on_server_connect(uv_connect_t *req, int status)
{
    struct sy_session *sess = req->data;
    struct sy_proxy *p = sess->proxy;
    if (status == UV_ECANCELED || sess->phase == SY_PHASE_CLOSING)
        return;
    sess->connecting = 0;
    sy_session_clear_timeout(sess);
    if (sess->phase == SY_PHASE_LOGIN) {
        /* The rest of the login (TLS, authentication) stays within client_login_timeout. */
        sy_session_set_timeout(sess, login_time_left(sess), "08006",
                               "the database server did not complete the login in time "
                               "(client_login_timeout)");
    }
    if (status < 0) {
        struct sy_side_stats *st = &p->side[sess->side];
        st->healthy = 0;
        snprintf(st->last_error, sizeof(st->last_error), "connect: %s", uv_strerror(status));
        char msg[512];
        snprintf(msg, sizeof(msg), "switchyard could not connect to the %s server %s:%d: %s",
                 sy_side_name(sess->side), p->cfg.server[sess->side].host,
                 p->cfg.server[sess->side].port, uv_strerror(status));
        sy_session_fail(sess, "08006", msg);
        return;
    }
    p->side[sess->side].healthy = 1;
    p->side[sess->side].server_conns++;
    sess->server_counted = 1;
    uv_tcp_nodelay(&sess->server->tcp, 1);
    uv_tcp_keepalive(&sess->server->tcp, 1, 60);
    sy_conn_resume(sess->server);
    p->ops->server_connected(sess, sess->server);
}

int sy_session_connect_server(struct sy_session *sess)
{
    struct sy_proxy *p = sess->proxy;
    if (p->route_hold[0]) {
        sy_session_fail(sess, "57P03", p->route_hold);
        return -1;
    }
    sess->side = p->active;
    struct sy_pooled *e = sy_pool_take(sess);
    if (!e)
        return sy_session_connect_fresh(sess);
    sy_session_log(sess, SY_LOG_DEBUG, "reusing a kept server connection to %s",
                   sy_side_name(sess->side));
    int rc = p->ops->server_reused(sess, e->blob, e->blob_len);
    sy_pool_entry_free(e);
    return rc;
}

int sy_session_connect_fresh(struct sy_session *sess)
{
    struct sy_proxy *p = sess->proxy;
    sess->server = server_conn_new(sess);
    if (!sess->server) {
        sy_session_fail(sess, "53200", "switchyard is out of memory");
        return -1;
    }
    sess->connect_req.data = sess;
    int rc = uv_tcp_connect(&sess->connect_req, &sess->server->tcp,
                            (const struct sockaddr *)&p->server_addr[sess->side], on_server_connect);
    if (rc != 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "switchyard could not connect to the %s server: %s",
                 sy_side_name(sess->side), uv_strerror(rc));
        sy_session_fail(sess, "08006", msg);
        return -1;
    }
    sess->connecting = 1;
    /* A login's connect also stays within what is left of client_login_timeout. */
    uint64_t left = sess->phase == SY_PHASE_LOGIN ? login_time_left(sess) : UINT64_MAX;
    if (left < p->cfg.server_connect_timeout_ms)
        sy_session_set_timeout(sess, left, "08006",
                               "the database server did not complete the login in time "
                               "(client_login_timeout)");
    else
        sy_session_set_timeout(sess, p->cfg.server_connect_timeout_ms, "08006",
                               "switchyard timed out connecting to the database server");
    return 0;
}

/* ---- the standby connection (a warm connection to the other side) ---- */

void sy_conn_failed(struct sy_conn *c, const char *reason)
{
    struct sy_session *sess = c->sess;
    if (!sess)
        return;
    if (sess->phase == SY_PHASE_CLOSING) {
        /* A standby kept open after its session closed (standby_linger) failed: it goes. */
        if (sess->standby == c) {
            sy_session_close_standby(sess);
            if (sess->proxy->ops->standby_failed)
                sess->proxy->ops->standby_failed(sess, reason);
        }
        return;
    }
    if (c == sess->server && sess->server_reused) {
        sy_session_server_reuse_failed(sess, reason);
        return;
    }
    if (sess->standby == c) {
        sy_session_log(sess, SY_LOG_INFO, "standby connection to %s: %s",
                       sy_side_name(sess->standby_side), reason);
        sy_session_close_standby(sess);
        if (sess->proxy->ops->standby_failed)
            sess->proxy->ops->standby_failed(sess, reason);
        return;
    }
    sy_session_close(sess, reason);
}

void sy_session_close_standby(struct sy_session *sess)
{
    struct sy_conn *c = sess->standby;
    if (!c)
        return;
    if (sess->standby_counted) {
        sess->proxy->side[sess->standby_side].server_conns--;
        sess->standby_counted = 0;
    }
    sess->standby = NULL;
    conn_close(c);
}

static void on_standby_connect(uv_connect_t *req, int status)
{
    struct sy_conn *c = req->data;
    free(req);
    if (status == UV_ECANCELED || !c->open)
        return;
    struct sy_session *sess = c->sess;
    struct sy_proxy *p = sess->proxy;
    if (status < 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "could not connect to the %s server: %s",
                 sy_side_name(sess->standby_side), uv_strerror(status));
        sy_conn_failed(c, msg);
        return;
    }
    p->side[sess->standby_side].server_conns++;
    sess->standby_counted = 1;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, 60);
    sy_conn_resume(c);
    p->ops->server_connected(sess, c);
}

int sy_session_connect_standby(struct sy_session *sess, enum sy_side side)
{
    struct sy_proxy *p = sess->proxy;
    if (sess->standby || sess->phase == SY_PHASE_CLOSING)
        return -1;
    uv_connect_t *req = malloc(sizeof(*req));
    struct sy_conn *c = req ? server_conn_new(sess) : NULL;
    if (!c) {
        free(req);
        return -1;
    }
    sess->standby = c;
    sess->standby_side = side;
    req->data = c;
    if (uv_tcp_connect(req, &c->tcp, (const struct sockaddr *)&p->server_addr[side],
                       on_standby_connect) != 0) {
        free(req);
        sess->standby = NULL;
        conn_close(c);
        return -1;
    }
    return 0;
}

void sy_session_swap_server(struct sy_session *sess)
{
    struct sy_conn *old = sess->server;
    struct sy_proxy *p = sess->proxy;
    if (!sess->standby)
        return;
    if (sess->server_counted)
        p->side[sess->side].server_conns--;
    sess->server = sess->standby;
    sess->server_counted = sess->standby_counted;
    sess->side = sess->standby_side;
    sess->standby = NULL;
    sess->standby_counted = 0;
    if (old) {
        /* Its handle closes; on_conn_closed frees it (it is no longer sess->server). */
        conn_close(old);
    }
}

/* ---- accepting clients ---- */

static void format_peer(uv_tcp_t *tcp, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            uv_ip4_name(a, host, sizeof(host));
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, host, sizeof(host));
            port = ntohs(a->sin6_port);
        }
    }
    snprintf(out, cap, "%s:%d", host, port);
}

/* Descriptors kept free for what is not a client session: server connections of the sessions
 * already open, the admin socket, control connections, health probes, the state file. */
static uint64_t fd_reserve(uint64_t limit)
{
    uint64_t r = limit / 100;
    return r < 16 ? 16 : r;
}

static void log_refused(struct sy_proxy *p)
{
    sy_warn("refused %llu client connection%s: %s", (unsigned long long)p->refused_unlogged,
            p->refused_unlogged == 1 ? "" : "s", p->refused_why);
    p->refused_unlogged = 0;
    p->refused_logged_ms = uv_now(p->loop);
}

static void on_refused_timer(uv_timer_t *t)
{
    struct sy_proxy *p = t->data;
    if (p->refused_unlogged)
        log_refused(p);
}

/* Counts a refused client and logs it, at most one line a second (a flood of refusals must not
 * flood the log): refusals inside that second are summed into one line at its end, with the
 * last reason. */
static void note_refused(struct sy_proxy *p, const char *why)
{
    p->refused_sessions++;
    p->refused_unlogged++;
    p->refused_why = why;
    uint64_t now = uv_now(p->loop);
    if (!p->refused_logged_ms || now - p->refused_logged_ms >= 1000) {
        log_refused(p);
        return;
    }
    if (!p->refused_timer_open) {
        if (uv_timer_init(p->loop, &p->refused_timer) != 0)
            return;
        p->refused_timer.data = p;
        p->refused_timer_open = 1;
        uv_unref((uv_handle_t *)&p->refused_timer); /* never keeps the loop alive */
    }
    if (!uv_is_active((uv_handle_t *)&p->refused_timer))
        uv_timer_start(&p->refused_timer, on_refused_timer, 1000 - (now - p->refused_logged_ms),
                       0);
}

/* Refuses a client that was just accepted: the error goes into the socket's empty send buffer
 * and the connection closes at once, without the usual linger, so that a flood of refused
 * clients holds no descriptors. */
static void refuse(struct sy_session *sess, const char *code, const char *message,
                   const char *why)
{
    note_refused(sess->proxy, why);
    sess->no_linger = 1;
    sy_session_fail(sess, code, message);
}

/* Whether an accepted client would leave too few descriptors for the server connections of the
 * clients still logging in (this one among them: nlogin counts it) and for the proxy's own work.
 * Descriptors are handed out lowest first, so a client on descriptor k means 0..k-1 are all in
 * use. */
static int near_fd_limit(struct sy_proxy *p, struct sy_session *sess)
{
    uv_os_fd_t fd;
    if (p->nofile_limit == 0 || uv_fileno((uv_handle_t *)&sess->client.tcp, &fd) != 0)
        return 0;
    return (uint64_t)fd + p->nlogin + fd_reserve(p->nofile_limit) >= p->nofile_limit;
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct sy_proxy *p = listener->data;
    if (status < 0) {
        /* At the descriptor limit libuv accepts and closes the waiting connections itself (it
         * keeps one descriptor for that), so they cannot be answered; this counts one. */
        if (status == UV_EMFILE || status == UV_ENFILE)
            note_refused(p, "at the open file limit, the waiting connections were closed "
                            "unanswered; raise the file descriptor limit (ulimit -n, systemd "
                            "LimitNOFILE) or lower max_client_conn");
        else
            sy_warn("accept failed: %s", uv_strerror(status));
        return;
    }
    struct sy_session *sess = calloc(1, sizeof(*sess));
    if (!sess || (p->ops->proto_state_size &&
                  !(sess->proto_state = calloc(1, p->ops->proto_state_size)))) {
        free(sess);
        sy_error("out of memory accepting a client");
        return;
    }
    sess->proxy = p;
    sess->id = ++p->next_session_id;
    sess->phase = SY_PHASE_LOGIN;
    p->nlogin++;
    sess->tx = SY_TX_IDLE;
    sess->side = p->active;
    sess->started_ms = sess->login_from_ms = uv_now(p->loop);
    if (conn_init(sess, &sess->client, 0) != 0) {
        free(sess->proto_state);
        free(sess);
        sy_error("out of memory accepting a client");
        return;
    }
    if (uv_timer_init(p->loop, &sess->timer) == 0) {
        sess->timer.data = sess;
        sess->timer_open = 1;
        sess->handles_open++;
    }
    /* Linked before anything can close it, so close and unlink always pair. */
    sess->next = p->sessions;
    if (p->sessions)
        p->sessions->prev = sess;
    p->sessions = sess;
    p->nsessions++;
    p->total_sessions++;
    if (uv_accept(listener, (uv_stream_t *)&sess->client.tcp) != 0) {
        snprintf(sess->client_addr, sizeof(sess->client_addr), "?");
        sy_session_close(sess, "accept failed");
        return;
    }
    format_peer(&sess->client.tcp, sess->client_addr, sizeof(sess->client_addr));
    uv_tcp_nodelay(&sess->client.tcp, 1);
    uv_tcp_keepalive(&sess->client.tcp, 1, 60);
    if (p->shutting_down) {
        refuse(sess, "57P01", "switchyard is shutting down", "switchyard is shutting down");
        return;
    }
    if (p->nsessions > p->cfg.max_client_conn) {
        refuse(sess, "53300", "too many client connections to switchyard (max_client_conn)",
               "too many client connections (max_client_conn)");
        return;
    }
    if (near_fd_limit(p, sess)) {
        refuse(sess, "53300", "too many connections: switchyard is at its open file limit",
               "switchyard is near its file descriptor limit; raise it (ulimit -n, systemd "
               "LimitNOFILE) or lower max_client_conn");
        return;
    }
    sy_session_log(sess, SY_LOG_DEBUG, "accepted");
    sy_session_set_timeout(sess, p->cfg.client_login_timeout_ms, "08P01",
                           "client did not complete login in time (client_login_timeout)");
    if (p->ops->client_accepted(sess) != 0)
        return;
    /* During a pause the client is read all the same: the protocol holds a login once it has
     * read its startup packet (a cancel request is answered at once). */
    sy_conn_resume(&sess->client);
}

/* ---- pause and resume ---- */

void sy_session_hold(struct sy_session *sess)
{
    if (sess->held)
        return;
    sess->held = 1;
    sess->held_at_ms = uv_now(sess->proxy->loop);
    sy_conn_pause(&sess->client);
    if (sess->phase == SY_PHASE_LOGIN)
        sy_session_clear_timeout(sess); /* a pause is not the client's delay */
}

void sy_session_release(struct sy_session *sess)
{
    sess->pause_exempt = 1;
    if (!sess->held)
        return;
    sess->held = 0;
    sy_conn_resume(&sess->client);
    sy_conn_pump(&sess->client);
}

/* Records how long a released session waited (for the cutover report). */
static void note_pause(struct sy_proxy *p, uint64_t ms)
{
    if (p->npause == p->pause_cap) {
        uint32_t cap = p->pause_cap ? 2 * p->pause_cap : 64;
        uint32_t *a = realloc(p->pause_ms, cap * sizeof(*a));
        if (!a)
            return;
        p->pause_ms = a;
        p->pause_cap = cap;
    }
    p->pause_ms[p->npause++] = ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
}

static void on_pause_timeout(uv_timer_t *t)
{
    sy_proxy_resume(t->data, "the pause timed out");
}

void sy_proxy_pause(struct sy_proxy *p, uint64_t timeout_ms)
{
    if (!p->paused) {
        p->paused = 1;
        p->paused_at_ms = uv_now(p->loop);
        sy_info("paused: new transactions and logins wait at the proxy");
    }
    if (timeout_ms > 0)
        uv_timer_start(&p->pause_timer, on_pause_timeout, timeout_ms, 0);
    else
        uv_timer_stop(&p->pause_timer);
}

void sy_proxy_resume(struct sy_proxy *p, const char *why)
{
    if (!p->paused)
        return;
    p->paused = 0;
    uv_timer_stop(&p->pause_timer);
    uint32_t n = 0;
    uint64_t now = uv_now(p->loop);
    p->npause = 0;
    /* Resuming a session can close it (and unlink it): walk a snapshot of the ids. */
    for (struct sy_session *s = p->sessions, *next; s; s = next) {
        next = s->next;
        if (!s->held)
            continue;
        s->held = 0;
        n++;
        note_pause(p, now - s->held_at_ms);
        if (s->phase == SY_PHASE_LOGIN)
            s->login_from_ms += now - s->held_at_ms; /* a pause is not the client's delay */
        if (s->wait_server) {
            /* Authenticated while paused: logs into the side that is active now. */
            s->wait_server = 0;
            sy_session_connect_server(s);
            continue;
        }
        if (s->phase == SY_PHASE_LOGIN)
            sy_session_set_timeout(s, login_time_left(s), "08P01",
                                   "client did not complete login in time (client_login_timeout)");
        sy_conn_resume(&s->client);
        sy_conn_pump(&s->client);
    }
    sy_info("resumed after %llu ms (%s): %u sessions released",
            (unsigned long long)(uv_now(p->loop) - p->paused_at_ms), why, n);
}

/* ---- listeners and addresses ---- */

static int parse_listen(const struct sy_listen_addr *l, struct sockaddr_storage *ss)
{
    const char *host = strcmp(l->host, "localhost") == 0 ? "127.0.0.1" : l->host;
    if (strchr(host, ':'))
        return uv_ip6_addr(host, l->port, (struct sockaddr_in6 *)ss);
    return uv_ip4_addr(host, l->port, (struct sockaddr_in *)ss);
}

/* Reads the descriptor limit the clients are refused at, and warns when max_client_conn cannot
 * be reached under it (each client may also hold a server connection). */
static void read_fd_limit(struct sy_proxy *p)
{
    struct rlimit rl;
    p->nofile_limit = 0;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return;
    uint64_t need = 2 * (uint64_t)p->cfg.max_client_conn + fd_reserve(rl.rlim_cur);
    /* Raise the soft limit towards the hard one, as far as max_client_conn needs: the soft
     * limit of 1024 that many systems start services with holds about 500 clients. */
    if (rl.rlim_cur < need && rl.rlim_cur < rl.rlim_max) {
        struct rlimit up = rl;
        up.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need ? rl.rlim_max : need;
        if (setrlimit(RLIMIT_NOFILE, &up) == 0) {
            sy_info("raised the open file limit from %llu to %llu for max_client_conn = %u",
                    (unsigned long long)rl.rlim_cur, (unsigned long long)up.rlim_cur,
                    p->cfg.max_client_conn);
            rl = up;
        }
    }
    p->nofile_limit = (uint64_t)rl.rlim_cur;
    need = 2 * (uint64_t)p->cfg.max_client_conn + fd_reserve(p->nofile_limit);
    if (need <= p->nofile_limit)
        return;
    /* A limit that holds nearly all of max_client_conn is worth a line, not a warning. */
    uint64_t fits = (p->nofile_limit - fd_reserve(p->nofile_limit)) / 2;
    enum sy_log_level lvl = fits * 10 >= (uint64_t)p->cfg.max_client_conn * 9 ? SY_LOG_INFO
                                                                                : SY_LOG_WARN;
    sy_log(lvl, "the open file limit (%llu) holds about %llu clients, fewer than max_client_conn "
           "= %u (each needs two descriptors); the rest would be refused. Raise the limit "
           "(ulimit -Hn, systemd LimitNOFILE=%llu) or lower max_client_conn",
           (unsigned long long)p->nofile_limit, (unsigned long long)fits,
           p->cfg.max_client_conn, (unsigned long long)need);
}

int sy_proxy_listen(struct sy_proxy *p)
{
    read_fd_limit(p);
    for (size_t i = 0; i < p->cfg.nlisten; i++) {
        const struct sy_listen_addr *l = &p->cfg.listen[i];
        struct sockaddr_storage ss;
        if (parse_listen(l, &ss) != 0) {
            sy_error("listen address %s:%d is not a numeric IP address; use e.g. 127.0.0.1 or [::1]",
                     l->host, l->port);
            return -1;
        }
        uv_tcp_t *t = &p->listeners[p->nlisteners];
        uv_tcp_init(p->loop, t);
        t->data = p;
        p->nlisteners++;
        int rc = uv_tcp_bind(t, (struct sockaddr *)&ss, 0);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)t, 1024, on_connection);
        if (rc != 0) {
            sy_error("cannot listen on %s:%d: %s (is another process using the port?)", l->host,
                     l->port, uv_strerror(rc));
            return -1;
        }
        sy_info("listening on %s:%d", l->host, l->port);
    }
    return 0;
}

void sy_proxy_stop_listening(struct sy_proxy *p)
{
    for (size_t i = 0; i < p->nlisteners; i++)
        if (!uv_is_closing((uv_handle_t *)&p->listeners[i]))
            uv_close((uv_handle_t *)&p->listeners[i], NULL);
}

int sy_proxy_resolve_servers(struct sy_proxy *p, const struct sy_config *cfg,
                             struct sockaddr_storage out[2])
{
    for (int s = 0; s < 2; s++) {
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        struct addrinfo *res = NULL;
        char port[16];
        snprintf(port, sizeof(port), "%d", cfg->server[s].port);
        int rc = getaddrinfo(cfg->server[s].host, port, &hints, &res);
        if (rc != 0 || !res) {
            sy_error("cannot resolve the %s server host '%s': %s", sy_side_name((enum sy_side)s),
                     cfg->server[s].host, gai_strerror(rc));
            return -1;
        }
        memset(&out[s], 0, sizeof(out[s]));
        memcpy(&out[s], res->ai_addr, res->ai_addrlen);
        freeaddrinfo(res);
    }
    return 0;
}
