/*
 * Server connection reuse (server_pool_size, server_idle_timeout).
 *
 * When a client leaves cleanly and its server connection is idle, the protocol plug-in resets
 * the connection (PostgreSQL: DISCARD ALL, sent now, its answer read by the next owner) and
 * describes it: a key (who may reuse it: PostgreSQL's is the exact startup packet, so user,
 * database and every startup parameter match) and a record (the greeting to replay). The
 * connection is then detached from its session: conn->sess is NULL and it is not read, so no
 * callback can reach a session that is gone. The next session to log in with the same key and
 * side adopts it; the plug-in reads the reset's answer and, only if it is exactly a success,
 * replays the greeting to the client. A connection that fails that check is closed and a new
 * one opened (sy_session_server_reuse_failed), so a client never sees a stale connection.
 *
 * The pool is emptied when a switch starts (its connections would meet the fence) and on
 * reload; connections idle longer than server_idle_timeout are closed by a timer.
 */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proxy.h"
#include "switch.h"

#define POOL_SWEEP_MS 1000

static void pooled_free(struct sy_proxy *p, struct sy_pooled *e, const char *why)
{
    struct sy_conn *c = e->conn;
    sy_log(SY_LOG_DEBUG, "server connection to %s closed: %s", sy_side_name(e->side), why);
    if (p->side[e->side].server_conns > 0)
        p->side[e->side].server_conns--;
    p->npooled--;
    free(e->blob);
    free(e);
    sy_conn_close(c); /* detached: on_conn_closed frees it and tells no session */
}

/* Unlinks *link and frees it. */
static void pool_remove(struct sy_proxy *p, struct sy_pooled **link, const char *why)
{
    struct sy_pooled *e = *link;
    *link = e->next;
    pooled_free(p, e, why);
}

void sy_pool_flush(struct sy_proxy *p, int side, const char *why)
{
    for (struct sy_pooled **l = &p->pool; *l;) {
        if (side < 0 || (*l)->side == (enum sy_side)side)
            pool_remove(p, l, why);
        else
            l = &(*l)->next;
    }
}

static void on_pool_sweep(uv_timer_t *t)
{
    struct sy_proxy *p = t->data;
    uint64_t now = uv_now(p->loop);
    for (struct sy_pooled **l = &p->pool; *l;) {
        if (now - (*l)->parked_ms >= p->cfg.server_idle_timeout_ms)
            pool_remove(p, l, "idle longer than server_idle_timeout");
        else
            l = &(*l)->next;
    }
}

int sy_pool_start(struct sy_proxy *p)
{
    if (uv_timer_init(p->loop, &p->pool_timer) != 0)
        return -1;
    p->pool_timer.data = p;
    p->pool_timer_open = 1;
    uv_timer_start(&p->pool_timer, on_pool_sweep, POOL_SWEEP_MS, POOL_SWEEP_MS);
    uv_unref((uv_handle_t *)&p->pool_timer);
    return 0;
}

void sy_pool_stop(struct sy_proxy *p)
{
    sy_pool_flush(p, -1, "shutting down");
    if (p->pool_timer_open) {
        p->pool_timer_open = 0;
        uv_close((uv_handle_t *)&p->pool_timer, NULL);
    }
}

/* Whether sess's server connection could serve another client as it stands. */
static int parkable(struct sy_session *sess)
{
    struct sy_proxy *p = sess->proxy;
    struct sy_conn *c = sess->server;
    return p->cfg.server_pool_size > 0 && p->npooled < p->cfg.server_pool_size &&
           p->ops->server_park && !p->shutting_down && !p->paused && !sy_switch_running(p) &&
           sess->phase == SY_PHASE_READY && sess->tx == SY_TX_IDLE && sess->side == p->active &&
           !sess->move_state && !sess->server_reused && sess->server_counted &&
           c && c->open && !c->tls_handshaking && c->len == 0 && c->inflight == 0 &&
           c->pending_writes == 0 && p->side[sess->side].healthy > 0;
}

int sy_session_park(struct sy_session *sess)
{
    struct sy_proxy *p = sess->proxy;
    /* A standby no switch is using (a shadow connection) stays with the session: its close
     * lets it finish what green still owes (standby_linger) or closes it. */
    if (!parkable(sess))
        return 0;
    uint8_t *key = NULL, *blob = NULL;
    size_t key_len = 0, blob_len = 0;
    if (p->ops->server_park(sess, &key, &key_len, &blob, &blob_len) != 0)
        return 0;
    struct sy_pooled *e = malloc(sizeof(*e) + key_len);
    struct sy_conn *c = sess->server;
    /* The reset was written (or queued, which would keep a write callback pending). */
    if (!e || !c->open || c->pending_writes > 0) {
        free(e);
        free(key);
        free(blob);
        return 0;
    }
    memcpy(e->key, key, key_len);
    e->key_len = key_len;
    free(key);
    e->blob = blob;
    e->blob_len = blob_len;
    e->conn = c;
    e->side = sess->side;
    e->parked_ms = uv_now(p->loop);
    sy_conn_pause(c);
    c->sess = NULL;
    sess->server = NULL;
    sess->server_counted = 0; /* the pool counts it in side[].server_conns now */
    sess->handles_open--;     /* the client connection keeps the session alive */
    e->next = p->pool;
    p->pool = e;
    p->npooled++;
    p->servers_parked++;
    sy_session_log(sess, SY_LOG_DEBUG, "server connection kept for reuse (%u idle)", p->npooled);
    return 1;
}

void sy_session_client_gone(struct sy_session *sess, const char *reason)
{
    if (sess->phase == SY_PHASE_CLOSING)
        return;
    sy_session_park(sess);
    sy_session_close(sess, reason);
}

struct sy_pooled *sy_pool_take(struct sy_session *sess)
{
    struct sy_proxy *p = sess->proxy;
    const uint8_t *key;
    size_t key_len;
    if (!p->pool || !p->ops->pool_key || p->ops->pool_key(sess, &key, &key_len) != 0)
        return NULL;
    for (struct sy_pooled **l = &p->pool; *l; l = &(*l)->next) {
        struct sy_pooled *e = *l;
        if (e->side != sess->side || e->key_len != key_len || memcmp(e->key, key, key_len) != 0)
            continue;
        *l = e->next;
        p->npooled--;
        struct sy_conn *c = e->conn;
        c->sess = sess;
        sess->server = c;
        sess->server_counted = 1;
        sess->server_reused = 1;
        sess->handles_open++;
        p->servers_reused++;
        sy_conn_resume(c); /* the reset's answer is waiting */
        return e;
    }
    return NULL;
}

void sy_pool_entry_free(struct sy_pooled *e)
{
    if (e) {
        free(e->blob);
        free(e);
    }
}

int sy_session_server_reuse_failed(struct sy_session *sess, const char *why)
{
    struct sy_proxy *p = sess->proxy;
    sy_session_log(sess, SY_LOG_INFO, "a kept server connection could not be reused (%s); "
                   "opening a new one", why);
    sess->server_reused = 0;
    if (sess->server_counted && p->side[sess->side].server_conns > 0)
        p->side[sess->side].server_conns--;
    sess->server_counted = 0;
    struct sy_conn *c = sess->server;
    sess->server = NULL;
    c->sess = NULL; /* its close must not reach the session: handles_open is settled here */
    sess->handles_open--;
    sy_conn_close(c);
    return sy_session_connect_fresh(sess);
}
