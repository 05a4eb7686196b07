/*
 * PostgreSQL side of server connection reuse (pool.c has the generic part).
 *
 * Park: the client left (Terminate, or end of file) with its server connection idle, outside
 * any transaction, with no COPY or extended-query batch open and no switch touching it.
 * Switchyard sends DISCARD ALL (which drops temporary tables, prepared statements, cursors,
 * LISTEN registrations, advisory locks and cached plans, and resets every setting to the
 * connection's startup values) and keeps:
 *   - key: the client's exact StartupMessage, so only a client with the same user, database and
 *     startup parameters (application_name, options, GUCs) gets the connection; that client has
 *     authenticated to Switchyard as that user like any other;
 *   - record: the greeting to replay: a ParameterStatus per reported parameter and the server's
 *     BackendKeyData (the new client gets a key of Switchyard's own, as always).
 *
 * Reuse: the next owner reads the reset's answer first: any ParameterStatus it carries (the
 * values DISCARD ALL restored) is added to the greeting; anything but CommandComplete
 * "DISCARD ALL" then ReadyForQuery 'I' with nothing after it means the connection is not clean:
 * it is closed and a new one opened, the client none the wiser. On success the client gets
 * AuthenticationOk and the greeting, which runs through the relay exactly as a server's own
 * greeting does (the cancel key is swapped there, the parameters recorded).
 */
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pg_session.h"

/* A growable byte string. */
struct bytes {
    uint8_t *p;
    size_t len, cap;
};

static int bytes_put(struct bytes *b, const void *s, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 512;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

/* Appends one backend message: type, length, body. */
static int put_message(struct bytes *b, uint8_t type, const void *body, size_t n)
{
    uint8_t h[5];
    h[0] = type;
    pg_put_u32(h + 1, (uint32_t)(n + 4));
    return bytes_put(b, h, 5) | bytes_put(b, body, n);
}

static const char RESET_SQL[] = "DISCARD ALL";

int pg_pool_park(struct sy_session *sess, uint8_t **key, size_t *key_len, uint8_t **blob,
                 size_t *blob_len)
{
    struct pg_sess *ps = pg_sess_of(sess);
    if (ps->stage != PG_STAGE_RELAY || ps->in_copy || ps->ext_open || ps->pending_ready ||
        ps->move || ps->key_len == 0 || ps->key_len > 250 || !ps->startup ||
        !pg_scan_at_boundary(&ps->be))
        return -1;
    struct bytes g = {0};
    int bad = 0;
    for (size_t i = 0; i < ps->nparams; i++) {
        const char *name = ps->params[i], *value = name + strlen(name) + 1;
        size_t nl = strlen(name) + 1, vl = strlen(value) + 1;
        uint8_t body[1024];
        if (nl + vl > sizeof(body))
            continue;
        memcpy(body, name, nl);
        memcpy(body + nl, value, vl);
        bad |= put_message(&g, PG_BE_PARAMETER_STATUS, body, nl + vl);
    }
    uint8_t kd[4 + 256];
    pg_put_u32(kd, ps->server_pid);
    memcpy(kd + 4, ps->server_key, ps->key_len);
    bad |= put_message(&g, PG_BE_BACKEND_KEY_DATA, kd, 4 + ps->key_len);
    uint8_t *k = malloc(ps->startup_len);
    struct bytes q = {0};
    bad |= put_message(&q, PG_FE_QUERY, RESET_SQL, sizeof(RESET_SQL));
    if (bad || !k || sy_conn_send(sess->server, q.p, q.len) != 0) {
        free(g.p);
        free(k);
        free(q.p);
        return -1;
    }
    free(q.p);
    memcpy(k, ps->startup, ps->startup_len);
    *key = k;
    *key_len = ps->startup_len;
    *blob = g.p;
    *blob_len = g.len;
    return 0;
}

int pg_pool_key(struct sy_session *sess, const uint8_t **key, size_t *key_len)
{
    struct pg_sess *ps = pg_sess_of(sess);
    if (!ps->startup)
        return -1;
    *key = ps->startup;
    *key_len = ps->startup_len;
    return 0;
}

int pg_pool_reused(struct sy_session *sess, const uint8_t *blob, size_t blob_len)
{
    struct pg_sess *ps = pg_sess_of(sess);
    free(ps->reuse_greeting);
    ps->reuse_greeting = malloc(blob_len + 64);
    if (!ps->reuse_greeting)
        return sy_session_server_reuse_failed(sess, "out of memory");
    memcpy(ps->reuse_greeting, blob, blob_len);
    ps->reuse_len = blob_len;
    ps->reuse_cap = blob_len + 64;
    ps->reuse_reset_ok = 0;
    ps->sl.conn = sess->server;
    ps->sl.side = sess->side;
    ps->sl.step = PG_SL_REUSE;
    return sess->server->len > 0 ? pg_pool_server_data(sess) : 0;
}

static int reuse_failed(struct sy_session *sess, struct pg_sess *ps, const char *why)
{
    free(ps->reuse_greeting);
    ps->reuse_greeting = NULL;
    ps->sl.step = PG_SL_CONNECTING;
    return sy_session_server_reuse_failed(sess, why);
}

/* Adds a ParameterStatus from the reset's answer to the greeting. */
static int greeting_add(struct pg_sess *ps, const uint8_t *msg, size_t len)
{
    struct bytes b = {ps->reuse_greeting, ps->reuse_len, ps->reuse_cap};
    if (bytes_put(&b, msg, len) != 0)
        return -1;
    ps->reuse_greeting = b.p;
    ps->reuse_len = b.len;
    ps->reuse_cap = b.cap;
    return 0;
}

/* The reset answered exactly as it should: greet the client and start relaying. */
static int reuse_done(struct sy_session *sess, struct pg_sess *ps)
{
    struct sy_conn *c = sess->server;
    uint8_t z[6];
    if (c->len > 0 || !sy_conn_quiet(c))
        return reuse_failed(sess, ps, "the server sent more than the reset's answer");
    if (pg_be_write_ready(z, sizeof(z), 'I') <= 0 || greeting_add(ps, z, sizeof(z)) != 0)
        return reuse_failed(sess, ps, "out of memory");
    if (ps->reuse_len > c->cap)
        return reuse_failed(sess, ps, "the greeting does not fit the I/O buffer");
    /* The greeting goes through the relay as the server's own would. */
    memcpy(c->buf, ps->reuse_greeting, ps->reuse_len);
    c->len = ps->reuse_len;
    c->ready = 0;
    free(ps->reuse_greeting);
    ps->reuse_greeting = NULL;
    ps->sl.step = PG_SL_DONE;
    sess->server_reused = 0;
    static const uint8_t auth_ok[9] = {PG_BE_AUTH, 0, 0, 0, 8, 0, 0, 0, 0};
    if (sy_conn_send(&sess->client, auth_ok, sizeof(auth_ok)) != 0)
        return -1;
    return pg_session_start_relay(sess);
}

int pg_pool_server_data(struct sy_session *sess)
{
    struct pg_sess *ps = pg_sess_of(sess);
    struct sy_conn *c = sess->server;
    while (c->len > 0) {
        int total = pg_front_message(c, 65536);
        if (total == 0)
            return 0;
        if (total < 0)
            return reuse_failed(sess, ps, "a malformed message after the reset");
        uint8_t type = c->buf[0];
        uint8_t status;
        switch (type) {
        case PG_BE_COMMAND_COMPLETE:
            if ((size_t)total != 5 + sizeof(RESET_SQL) ||
                memcmp(c->buf + 5, RESET_SQL, sizeof(RESET_SQL)) != 0)
                return reuse_failed(sess, ps, "the reset did not complete");
            ps->reuse_reset_ok = 1;
            break;
        case PG_BE_PARAMETER_STATUS:
            if (greeting_add(ps, c->buf, (size_t)total) != 0)
                return reuse_failed(sess, ps, "out of memory");
            break;
        case PG_BE_NOTICE:
            break;
        case PG_BE_READY_FOR_QUERY:
            if (pg_be_parse_ready(c->buf, (size_t)total, &status) <= 0 || status != 'I' ||
                !ps->reuse_reset_ok)
                return reuse_failed(sess, ps, "the reset did not end idle");
            sy_conn_consume(c, (size_t)total);
            return reuse_done(sess, ps);
        default:
            return reuse_failed(sess, ps, type == PG_BE_ERROR ? "the reset failed"
                                                               : "an unexpected message");
        }
        sy_conn_consume(c, (size_t)total);
    }
    return 0;
}
