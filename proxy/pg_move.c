/*
 * Moving a PostgreSQL session to the other side (cutover and rollback).
 *
 * 1. standby_open: a standby connection to the other side is opened and Switchyard logs into it
 *    with the session's own startup parameters and credentials (pg_auth.c), then reads the
 *    server's greeting (ParameterStatus, BackendKeyData, ReadyForQuery) without telling the
 *    client anything. The session keeps running on its server meanwhile.
 * 2. move_prepare: once the session is held at a transaction boundary, its state is read exactly
 *    on its own server connection (one query: settings whose source is 'session', prepared
 *    statements, LISTEN channels, and what cannot move: temporary tables, advisory locks, WITH
 *    HOLD cursors), then replayed on the standby: set_config for each setting, PREPARE for SQL
 *    prepared statements, Parse for protocol-level ones (type OIDs of user-defined types resolved
 *    by name on the standby), LISTEN for each channel.
 * 3. move_commit: the standby becomes the session's server, the client's cancel key stays the
 *    one the proxy issued, and the client hears a ParameterStatus for every reported parameter
 *    whose value differs on the new side (server_version after an upgrade, for instance).
 *
 * Nothing here is guessed from SQL text the client sent.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pg_session.h"
#include "switch.h"

#define FIRST_USER_OID 16384u /* OIDs below are built in: equal on every server */

enum move_step {
    MV_LOGIN = 1,    /* the standby is connecting and logging in */
    MV_GREETING = 2, /* AuthenticationOk seen; reading up to ReadyForQuery */
    MV_WARM = 3,     /* the standby is logged in and idle */
    MV_READ = 4,     /* reading the session's state on its server connection */
    MV_TYPES = 5,    /* resolving user-defined parameter types on the standby */
    MV_REPLAY = 6,   /* replaying the state on the standby */
    MV_READY = 7,    /* the standby holds the session's state */
    MV_DISCARD = 8,  /* dropped while reading: the rest of that answer is read and thrown away */
    MV_SHADOW = 9,   /* a shadow connection with the state replayed: mirroring (pg_shadow.c) */
};

/* Rows of an internal query: text cells (NULL for SQL NULL), the last row description's width. */
struct iq_rows {
    int ncols;
    size_t nrows, cap;
    char **cells; /* nrows * ncols */
};

struct pg_move {
    enum move_step step;
    struct pg_server_login sl;
    uint32_t server_pid;
    uint8_t server_key[256];
    size_t key_len;
    size_t nparams;
    char *params[PG_PARAMS_MAX];
    int pending_ready;  /* ReadyForQuery replies the internal query still waits for */
    char error[300];    /* the first ErrorResponse of the internal query */
    struct iq_rows rows;
    char *parse_msgs;   /* protocol-level statements to Parse on the standby (after MV_TYPES) */
    size_t parse_len;
    char unmovable[160]; /* what cannot move ("" when all can) */
    uint8_t shadow;      /* opened for shadow traffic, not for a move: reports go to pg_shadow.c */
    uint8_t warm_read;   /* the read in flight is a warm-up: its answer is dropped */
    uint8_t read_retried; /* the state read was cancelled once and run again */
};

static struct pg_sess *pg(struct sy_session *sess) { return sess->proto_state; }

/* ---- small helpers ---- */

static void rows_clear(struct iq_rows *r)
{
    for (size_t i = 0; i < r->nrows * (size_t)r->ncols; i++)
        free(r->cells[i]);
    free(r->cells);
    memset(r, 0, sizeof(*r));
}

static void move_free(struct pg_move *mv)
{
    if (!mv)
        return;
    if (mv->sl.scratch) {
        memset(mv->sl.scratch, 0, sizeof(*mv->sl.scratch));
        free(mv->sl.scratch);
    }
    for (size_t i = 0; i < mv->nparams; i++)
        free(mv->params[i]);
    rows_clear(&mv->rows);
    free(mv->parse_msgs);
    free(mv);
}

/* Growable string. */
struct sbuf {
    char *p;
    size_t len, cap;
    int failed;
};

static void sb_put(struct sbuf *b, const void *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->failed = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_str(struct sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* An escape string literal (E'...'): means the same whatever standard_conforming_strings is. */
static void sb_literal(struct sbuf *b, const char *s)
{
    sb_str(b, "E'");
    for (; *s; s++) {
        if (*s == '\'' || *s == '\\')
            sb_put(b, s, 1);
        sb_put(b, s, 1);
    }
    sb_str(b, "'");
}

static void sb_ident(struct sbuf *b, const char *s)
{
    sb_str(b, "\"");
    for (; *s; s++) {
        if (*s == '"')
            sb_put(b, s, 1);
        sb_put(b, s, 1);
    }
    sb_str(b, "\"");
}

static void sb_u32(struct sbuf *b, uint32_t v)
{
    uint8_t x[4];
    pg_put_u32(x, v);
    sb_put(b, x, 4);
}

static void sb_u16(struct sbuf *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    sb_put(b, x, 2);
}

/* Sends a simple Query (the text is NUL-terminated). */
static int send_query(struct sy_conn *c, const char *sql)
{
    size_t n = strlen(sql) + 1;
    uint8_t *msg = malloc(n + 5);
    if (!msg)
        return -1;
    msg[0] = PG_FE_QUERY;
    pg_put_u32(msg + 1, (uint32_t)(n + 4));
    memcpy(msg + 5, sql, n);
    int rc = sy_conn_send(c, msg, n + 5);
    free(msg);
    return rc;
}

/* ---- failure and success reports ---- */

static void move_failed(struct sy_session *sess, const char *fmt, const char *detail)
{
    char msg[400];
    int shadow = pg(sess)->move && pg(sess)->move->shadow;
    snprintf(msg, sizeof(msg), fmt, detail ? detail : "");
    if (!shadow)
        sy_session_log(sess, SY_LOG_WARN, "cannot move to the other side: %s", msg);
    pg_move_drop(sess);
    if (shadow)
        pg_shadow_failed(sess, msg);
    else
        sy_switch_standby_failed(sess, msg);
}

/* ---- reading messages of an internal query ---- */

/* One whole message at the front of c (pg_front_message, up to the buffer's size). */
static int whole_message(struct sy_conn *c) { return pg_front_message(c, (uint32_t)c->cap); }

static int data_row(struct iq_rows *r, const uint8_t *m, size_t len)
{
    if (len < 7)
        return -1;
    int n = (m[5] << 8) | m[6];
    if (n != r->ncols || n == 0)
        return 0; /* a row of another result (set_config's empty row): not ours */
    if ((r->nrows + 1) * (size_t)n > r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 64;
        while (cap < (r->nrows + 1) * (size_t)n)
            cap *= 2;
        char **q = realloc(r->cells, cap * sizeof(*q));
        if (!q)
            return -1;
        r->cells = q;
        r->cap = cap;
    }
    size_t off = 7;
    char **row = r->cells + r->nrows * (size_t)n;
    for (int i = 0; i < n; i++) {
        if (off + 4 > len)
            return -1;
        int32_t l = (int32_t)pg_get_u32(m + off);
        off += 4;
        row[i] = NULL;
        if (l < 0)
            continue;
        if ((size_t)l > len - off)
            return -1;
        row[i] = malloc((size_t)l + 1);
        if (!row[i])
            return -1;
        memcpy(row[i], m + off, (size_t)l);
        row[i][l] = 0;
        off += (size_t)l;
    }
    r->nrows++;
    return 0;
}

/*
 * Consumes the messages of an internal query on c. Returns 1 when its last ReadyForQuery came,
 * 0 when more is needed, -1 on a message that cannot belong to it. Notifications that arrive on
 * the session's own server meanwhile go to the client, as they would have.
 */
static int iq_read(struct sy_session *sess, struct pg_move *mv, struct sy_conn *c, int own_server)
{
    for (;;) {
        int total = whole_message(c);
        if (total <= 0)
            return total;
        const uint8_t *m = c->buf;
        switch (m[0]) {
        case PG_BE_ROW_DESCRIPTION:
            if (total < 7)
                return -1;
            if (mv->rows.nrows == 0)
                mv->rows.ncols = (m[5] << 8) | m[6];
            break;
        case PG_BE_DATA_ROW:
            if (data_row(&mv->rows, m, (size_t)total) != 0)
                return -1;
            break;
        case PG_BE_ERROR:
            if (!mv->error[0]) {
                struct pg_error_fields f;
                if (pg_be_parse_error(m, (size_t)total, &f) > 0)
                    snprintf(mv->error, sizeof(mv->error), "%s %s", f.sqlstate ? f.sqlstate : "",
                             f.message ? f.message : "");
                else
                    snprintf(mv->error, sizeof(mv->error), "an error");
            }
            break;
        case PG_BE_PARAMETER_STATUS:
            if (!own_server) {
                const char *name, *value;
                if (pg_be_parse_parameter_status(m, (size_t)total, &name, &value) > 0)
                    pg_params_store(mv->params, &mv->nparams, name, value);
            }
            break;
        case PG_BE_NOTIFICATION:
            if (own_server && sy_conn_send(&sess->client, m, (size_t)total) != 0)
                return -1;
            break;
        case PG_BE_READY_FOR_QUERY:
            mv->pending_ready--;
            break;
        case PG_BE_COPY_IN:
        case PG_BE_COPY_OUT:
        case PG_BE_COPY_BOTH:
            return -1;
        default:
            break; /* CommandComplete, ParseComplete, NoticeResponse, EmptyQueryResponse ... */
        }
        sy_conn_consume(c, (size_t)total);
        if (mv->pending_ready == 0)
            return 1;
    }
}

/* ---- step 1: the standby connection ---- */

struct pg_server_login *pg_move_login(struct pg_sess *ps) { return &ps->move->sl; }

static int standby_open(struct sy_session *sess, enum sy_side side, int shadow, int read_only);

int pg_move_standby_open(struct sy_session *sess, enum sy_side side)
{
    return standby_open(sess, side, 0, 0);
}

int pg_move_shadow_open(struct sy_session *sess, enum sy_side side, int read_only)
{
    return standby_open(sess, side, 1, read_only);
}

static int standby_open(struct sy_session *sess, enum sy_side side, int shadow, int read_only)
{
    struct pg_sess *ps = pg(sess);
    if (ps->move || ps->stage != PG_STAGE_RELAY || !ps->startup)
        return -1;
    struct pg_move *mv = calloc(1, sizeof(*mv));
    if (!mv || !(mv->sl.scratch = calloc(1, sizeof(*mv->sl.scratch)))) {
        free(mv);
        return -1;
    }
    mv->step = MV_LOGIN;
    mv->sl.side = side;
    mv->sl.step = PG_SL_CONNECTING;
    mv->sl.standby = 1;
    mv->sl.read_only = (uint8_t)read_only;
    mv->shadow = (uint8_t)shadow;
    ps->move = mv;
    if (sy_session_connect_standby(sess, side) != 0) {
        ps->move = NULL;
        move_free(mv);
        return -1;
    }
    mv->sl.conn = sess->standby;
    return 0;
}

void pg_move_standby_failed(struct sy_session *sess, const char *reason)
{
    struct pg_sess *ps = pg(sess);
    if (!ps->move)
        return;
    int shadow = ps->move->shadow;
    move_free(ps->move);
    ps->move = NULL;
    if (shadow)
        pg_shadow_failed(sess, reason);
    else
        sy_switch_standby_failed(sess, reason);
}

void pg_move_drop(struct sy_session *sess)
{
    struct pg_sess *ps = pg(sess);
    struct pg_move *mv = ps->move;
    if (!mv)
        return;
    if (mv->step == MV_READ && sess->phase != SY_PHASE_CLOSING) {
        /* The state query's answer is still coming on the session's own server: read it to
         * its end and drop it, and keep the client's next request until then. */
        mv->step = MV_DISCARD;
        sy_session_close_standby(sess); /* reports nothing */
        return;
    }
    if (mv->step == MV_DISCARD && sess->phase != SY_PHASE_CLOSING)
        return; /* finishes by itself */
    ps->move = NULL; /* first: closing the standby must not report a failure */
    sy_session_close_standby(sess);
    move_free(mv);
}

int pg_move_standby_logged_in(struct sy_session *sess)
{
    struct pg_move *mv = pg(sess)->move;
    mv->step = MV_GREETING;
    memset(mv->sl.scratch, 0, sizeof(*mv->sl.scratch));
    free(mv->sl.scratch);
    mv->sl.scratch = NULL;
    return pg_move_standby_data(sess);
}

/* The greeting after AuthenticationOk, up to ReadyForQuery. */
static int greeting(struct sy_session *sess, struct pg_move *mv, struct sy_conn *c)
{
    for (;;) {
        int total = whole_message(c);
        if (total < 0) {
            move_failed(sess, "the standby server sent an invalid message%s", NULL);
            return -1;
        }
        if (total == 0)
            return 0;
        const uint8_t *m = c->buf;
        if (m[0] == PG_BE_PARAMETER_STATUS) {
            const char *name, *value;
            if (pg_be_parse_parameter_status(m, (size_t)total, &name, &value) > 0)
                pg_params_store(mv->params, &mv->nparams, name, value);
        } else if (m[0] == PG_BE_BACKEND_KEY_DATA) {
            uint32_t pid;
            const uint8_t *key;
            size_t key_len;
            if (pg_be_parse_backend_key(m, (size_t)total, &pid, &key, &key_len) < 0) {
                move_failed(sess, "the standby server sent an invalid BackendKeyData%s", NULL);
                return -1;
            }
            mv->server_pid = pid;
            memcpy(mv->server_key, key, key_len);
            mv->key_len = key_len;
        } else if (m[0] == PG_BE_ERROR) {
            struct pg_error_fields f;
            char detail[256] = "";
            if (pg_be_parse_error(m, (size_t)total, &f) > 0)
                snprintf(detail, sizeof(detail), "%s", f.message ? f.message : "");
            move_failed(sess, "the standby server refused the session: %s", detail);
            return -1;
        } else if (m[0] == PG_BE_READY_FOR_QUERY) {
            sy_conn_consume(c, (size_t)total);
            mv->step = MV_WARM;
            if (mv->shadow)
                pg_shadow_ready(sess);
            else
                sy_switch_standby_ready(sess);
            return 0;
        }
        sy_conn_consume(c, (size_t)total);
    }
}

/* ---- step 2: read the session's state, replay it on the standby ---- */

/* Six statements in one Query, each a small plan: as one UNION ALL the planning alone cost
 * more than all of them (1.6 ms against 0.7 ms a read on PostgreSQL 15), and every session is
 * read inside the pause. All have the same six text columns. */
static const char STATE_SQL[] =
    "select 'set'::text, name, pg_catalog.current_setting(name), null::text, null::text, null::text"
    " from pg_catalog.pg_show_all_settings() where source = 'session';"
    "select 'prep'::text, name, statement, from_sql::text,"
    " parameter_types::pg_catalog.oid[]::text, parameter_types::text"
    " from pg_catalog.pg_prepared_statement();"
    "select 'listen'::text, c, null::text, null::text, null::text, null::text"
    " from pg_catalog.pg_listening_channels() c;"
    "select 'temp'::text, null::text, null::text, null::text, null::text, null::text"
    " where pg_catalog.pg_my_temp_schema() <> 0 and exists (select from pg_catalog.pg_class"
    " where relnamespace = pg_catalog.pg_my_temp_schema());"
    "select 'lock'::text, null::text, null::text, null::text, null::text, null::text"
    " where exists (select from pg_catalog.pg_lock_status() where locktype = 'advisory'"
    " and pid = pg_catalog.pg_backend_pid());"
    "select 'hold'::text, name, null::text, null::text, null::text, null::text"
    " from pg_catalog.pg_cursor() where is_holdable";

#define STATE_COLS 6

int pg_move_owns_server(const struct pg_sess *ps)
{
    return ps->move && (ps->move->step == MV_READ || ps->move->step == MV_DISCARD);
}

int pg_move_warm_read(struct sy_session *sess)
{
    struct pg_sess *ps = pg(sess);
    if (ps->ext_open || ps->pending_ready || ps->in_copy || sess->tx != SY_TX_IDLE ||
        pg_move_prepare(sess) != 0)
        return -1;
    ps->move->warm_read = 1;
    return 0;
}

int pg_move_prepare(struct sy_session *sess)
{
    struct pg_sess *ps = pg(sess);
    struct pg_move *mv = ps->move;
    if (!mv || mv->step != MV_WARM || !sess->server || !sess->server->open ||
        sess->server->len > 0)
        return -1;
    mv->step = MV_READ;
    mv->pending_ready = 1;
    mv->error[0] = 0;
    rows_clear(&mv->rows);
    return send_query(sess->server, STATE_SQL);
}

/* Parses "{23,25}" into oids; returns the count or -1. */
static int parse_oids(const char *s, uint32_t *out, int max)
{
    int n = 0;
    if (!s || *s != '{')
        return -1;
    s++;
    while (*s && *s != '}') {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s || n == max)
            return -1;
        out[n++] = (uint32_t)v;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

/* Appends a Parse message for a protocol-level prepared statement. */
static void add_parse(struct sbuf *b, const char *name, const char *stmt, const uint32_t *oids,
                      int n)
{
    size_t start = b->len;
    sb_put(b, "P\0\0\0\0", 5);
    sb_put(b, name, strlen(name) + 1);
    sb_put(b, stmt, strlen(stmt) + 1);
    sb_u16(b, (uint16_t)n);
    for (int i = 0; i < n; i++)
        sb_u32(b, oids[i]);
    if (!b->failed)
        pg_put_u32((uint8_t *)b->p + start + 1, (uint32_t)(b->len - start - 1));
}

/* Builds the replay from the rows read on the server: the simple-query part into q, the Parse
 * messages into parse. Notes what cannot move. Returns 1 when user-defined types must be
 * resolved on the standby first (their type names are queried in q), 0, or -1. */
static int build_replay(struct pg_move *mv, struct sbuf *q, struct sbuf *parse)
{
    struct iq_rows *r = &mv->rows;
    int nset = 0, user_types = 0;
    if (r->nrows > 0 && r->ncols != STATE_COLS)
        return -1;
    /* session_authorization before role, both before the rest. */
    static const char *const first[] = {"session_authorization", "role", NULL};
    for (int pass = 0; pass < 3; pass++) {
        for (size_t i = 0; i < r->nrows; i++) {
            char **row = r->cells + i * STATE_COLS;
            if (!row[0] || strcmp(row[0], "set") != 0 || !row[1] || !row[2])
                continue;
            int is_first = strcmp(row[1], first[0]) == 0 || strcmp(row[1], first[1]) == 0;
            if ((pass < 2 && strcmp(row[1], first[pass]) != 0) || (pass == 2 && is_first))
                continue;
            sb_str(q, nset++ ? ", " : "select from (select ");
            sb_str(q, "pg_catalog.set_config(");
            sb_literal(q, row[1]);
            sb_str(q, ", ");
            sb_literal(q, row[2]);
            sb_str(q, ", false)");
        }
    }
    if (nset)
        sb_str(q, ") s;");
    char what[160] = "";
    for (size_t i = 0; i < r->nrows; i++) {
        char **row = r->cells + i * STATE_COLS;
        if (!row[0])
            continue;
        if (strcmp(row[0], "listen") == 0 && row[1]) {
            sb_str(q, "listen ");
            sb_ident(q, row[1]);
            sb_str(q, ";");
        } else if (strcmp(row[0], "prep") == 0 && row[1] && row[2]) {
            if (row[3] && strcmp(row[3], "true") == 0) {
                sb_str(q, row[2]); /* the PREPARE statement itself, as the client wrote it */
                sb_str(q, ";");
                continue;
            }
            uint32_t oids[256];
            int n = parse_oids(row[4], oids, 256);
            if (n < 0)
                return -1;
            int has_user = 0;
            for (int k = 0; k < n; k++)
                has_user |= oids[k] >= FIRST_USER_OID;
            if (has_user) {
                /* Ask the standby for its OIDs of the same type names. */
                user_types = 1;
                sb_str(q, "select 'type'::text, ");
                sb_literal(q, row[1]);
                sb_str(q, ", (");
                sb_literal(q, row[5] ? row[5] : "{}");
                sb_str(q, "::pg_catalog.regtype[])::pg_catalog.oid[]::text, ");
                sb_literal(q, row[2]);
                sb_str(q, ", null::text, null::text;");
                continue; /* its Parse is built when the answer comes */
            }
            add_parse(parse, row[1], row[2], oids, n);
        } else if (strcmp(row[0], "temp") == 0 || strcmp(row[0], "lock") == 0 ||
                   strcmp(row[0], "hold") == 0) {
            const char *w = row[0][0] == 't' ? "temporary tables"
                            : row[0][0] == 'l' ? "advisory locks" : "WITH HOLD cursors";
            if (!strstr(what, w))
                snprintf(what + strlen(what), sizeof(what) - strlen(what), "%s%s",
                         what[0] ? ", " : "", w);
        }
    }
    snprintf(mv->unmovable, sizeof(mv->unmovable), "%s", what);
    return q->failed || parse->failed ? -1 : user_types;
}

static int send_replay(struct sy_session *sess, struct pg_move *mv, const char *sql,
                       const char *parse, size_t parse_len)
{
    struct sy_conn *c = sess->standby;
    mv->pending_ready = 0;
    mv->error[0] = 0;
    if (sql && sql[0]) {
        if (send_query(c, sql) != 0)
            return -1;
        mv->pending_ready++;
    }
    if (parse_len > 0) {
        static const uint8_t sync[5] = {PG_FE_SYNC, 0, 0, 0, 4};
        if (sy_conn_send(c, parse, parse_len) != 0 || sy_conn_send(c, sync, 5) != 0)
            return -1;
        mv->pending_ready++;
    }
    return 0;
}

static void move_ready(struct sy_session *sess, struct pg_move *mv)
{
    if (mv->shadow) {
        /* The replay is done: what follows on the connection answers mirrored requests. */
        mv->step = MV_SHADOW;
        if (sess->standby && sess->standby->len > 0)
            pg_shadow_green_data(sess);
        return;
    }
    mv->step = MV_READY;
    sy_switch_move_prepared(sess, mv->unmovable[0] ? mv->unmovable : NULL);
}

void pg_move_shadow_live(struct sy_session *sess)
{
    struct pg_move *mv = pg(sess)->move;
    if (mv && mv->shadow)
        mv->step = MV_SHADOW; /* nothing to replay: the shadow started at login */
}

/* For a shadow: the state came back from the session's server. Its replay goes first on the
 * shadow connection and mirroring starts at once (the mirrored requests follow the replay in
 * order); the client's requests waited for the state read only. */
static int shadow_state_read(struct sy_session *sess, struct pg_move *mv)
{
    struct sbuf q = {0}, parse = {0};
    int rc = mv->error[0] ? -1 : build_replay(mv, &q, &parse);
    /* The shadow names the session's prepared statements by their text. */
    for (size_t i = 0; rc == 0 && i < mv->rows.nrows; i++) {
        char **row = mv->rows.cells + i * STATE_COLS;
        if (row[0] && strcmp(row[0], "prep") == 0 && row[1] && row[2])
            pg_shadow_statement(sess, row[1], row[2]);
    }
    rows_clear(&mv->rows);
    mv->step = MV_REPLAY;
    if (rc == 0 && send_replay(sess, mv, q.len ? q.p : NULL, parse.p, parse.len) != 0)
        rc = -2; /* the shadow connection failed and reported it */
    free(q.p);
    free(parse.p);
    if (rc == 1 || rc == -1)
        move_failed(sess, rc == 1 ? "prepared statements with user-defined parameter types are "
                                    "not shadowed%s"
                                  : "the session's state could not be read for the shadow%s",
                    NULL);
    if (rc == 0) {
        pg_shadow_mirroring(sess);
        if (mv->pending_ready == 0)
            move_ready(sess, mv);
    }
    if (sess->phase != SY_PHASE_CLOSING) {
        sy_conn_resume(&sess->client);
        sy_conn_pump(&sess->client);
    }
    return 0;
}

/* The state came back from the session's server: replay it on the standby. */
static int state_read(struct sy_session *sess, struct pg_move *mv)
{
    if (mv->shadow)
        return shadow_state_read(sess, mv);
    mv->step = MV_WARM; /* the read is over: a failure below frees the move at once */
    if (mv->warm_read) {
        /* Only the server's caches were wanted; the client's next request goes on. */
        mv->warm_read = 0;
        rows_clear(&mv->rows);
        sy_switch_warm_read_done(sess);
        if (sess->phase != SY_PHASE_CLOSING) {
            sy_conn_resume(&sess->client);
            sy_conn_pump(&sess->client);
        }
        return 0;
    }
    if (mv->error[0] && strncmp(mv->error, "57014", 5) == 0 && !mv->read_retried &&
        sess->server && sess->server->open && sess->server->len == 0) {
        /* A cancel the client sent for its own query reached the server just after that query
         * ended, and cancelled our read instead (PostgreSQL cancels whatever runs when it
         * arrives): the state did not change, so the read runs once more. */
        mv->read_retried = 1;
        mv->step = MV_READ;
        mv->pending_ready = 1;
        mv->error[0] = 0;
        rows_clear(&mv->rows);
        sy_session_log(sess, SY_LOG_INFO, "the session's state read was cancelled by a late "
                       "cancel request of its client; reading it again");
        return send_query(sess->server, STATE_SQL);
    }
    if (mv->error[0]) {
        move_failed(sess, "reading the session's state failed: %s", mv->error);
        return -1;
    }
    struct sbuf q = {0}, parse = {0};
    int rc = build_replay(mv, &q, &parse);
    rows_clear(&mv->rows);
    if (rc < 0) {
        free(q.p);
        free(parse.p);
        move_failed(sess, "the session's state could not be read%s", NULL);
        return -1;
    }
    if (mv->unmovable[0]) {
        /* Nothing is replayed for a session that cannot move: the standby stays as it logged
         * in, so the state can be read again later (unmovable_sessions = wait). */
        free(q.p);
        free(parse.p);
        mv->step = MV_WARM;
        sy_switch_move_prepared(sess, mv->unmovable);
        return 0;
    }
    mv->parse_msgs = parse.p;
    mv->parse_len = parse.len;
    mv->step = rc == 1 ? MV_TYPES : MV_REPLAY;
    if (!q.len && !parse.len) {
        free(q.p);
        move_ready(sess, mv);
        return 0;
    }
    /* With user types to resolve, the Parse messages wait for the standby's OIDs. */
    rc = send_replay(sess, mv, q.p, mv->step == MV_TYPES ? NULL : parse.p,
                     mv->step == MV_TYPES ? 0 : parse.len);
    free(q.p);
    if (rc != 0)
        return -1;
    if (mv->step == MV_REPLAY) {
        free(mv->parse_msgs);
        mv->parse_msgs = NULL;
        mv->parse_len = 0;
    }
    return 0;
}

/* The standby answered the type-name query: the Parse messages for statements with user types
 * are built with the standby's OIDs and sent with the rest. */
static int types_resolved(struct sy_session *sess, struct pg_move *mv)
{
    struct sbuf parse = {0};
    struct iq_rows *r = &mv->rows;
    sb_put(&parse, mv->parse_msgs ? mv->parse_msgs : "", mv->parse_len);
    for (size_t i = 0; i < r->nrows && r->ncols == STATE_COLS; i++) {
        char **row = r->cells + i * STATE_COLS;
        if (!row[0] || strcmp(row[0], "type") != 0 || !row[1] || !row[2])
            continue;
        uint32_t oids[256];
        int n = parse_oids(row[2], oids, 256);
        const char *stmt = row[3];
        if (n < 0 || !stmt) {
            free(parse.p);
            move_failed(sess, "a parameter type of prepared statement %s is missing on the "
                        "standby", row[1]);
            return -1;
        }
        add_parse(&parse, row[1], stmt, oids, n);
    }
    rows_clear(r);
    free(mv->parse_msgs);
    mv->parse_msgs = NULL;
    mv->parse_len = 0;
    mv->step = MV_REPLAY;
    int rc = parse.failed ? -1 : send_replay(sess, mv, NULL, parse.p, parse.len);
    free(parse.p);
    if (rc == 0 && mv->pending_ready == 0)
        move_ready(sess, mv);
    return rc;
}

int pg_move_server_data(struct sy_session *sess)
{
    struct pg_move *mv = pg(sess)->move;
    int rc = iq_read(sess, mv, sess->server, 1);
    if (rc < 0) {
        sy_session_fail(sess, "08P01", "the server sent an unexpected answer while switchyard "
                                       "read the session's state");
        return -1;
    }
    if (rc == 0)
        return 0;
    if (mv->step == MV_DISCARD) {
        struct pg_sess *ps = pg(sess);
        ps->move = NULL;
        move_free(mv);
        sy_conn_resume(&sess->client);
        sy_conn_pump(&sess->client);
        if (sess->server && sess->server->len > 0 && sess->phase != SY_PHASE_CLOSING)
            return sess->proxy->ops->server_data(sess, sess->server);
        return 0;
    }
    return state_read(sess, mv);
}

int pg_move_standby_data(struct sy_session *sess)
{
    struct pg_sess *ps = pg(sess);
    struct pg_move *mv = ps->move;
    struct sy_conn *c = sess->standby;
    if (!mv || !c)
        return 0;
    switch (mv->step) {
    case MV_LOGIN:
        return pg_auth_server_data(sess, &mv->sl);
    case MV_GREETING:
        return greeting(sess, mv, c);
    case MV_SHADOW:
        return pg_shadow_green_data(sess);
    case MV_TYPES:
    case MV_REPLAY: {
        int rc = iq_read(sess, mv, c, 0);
        if (rc < 0) {
            move_failed(sess, "the standby server sent an unexpected message%s", NULL);
            return -1;
        }
        if (rc == 0)
            return 0;
        if (mv->error[0]) {
            move_failed(sess, "replaying the session's state on the standby failed: %s",
                        mv->error);
            return -1;
        }
        if (mv->step == MV_TYPES)
            return types_resolved(sess, mv);
        move_ready(sess, mv);
        return 0;
    }
    default: {
        /* Idle: a server may say something unprompted (a notice, a parameter, a FATAL). */
        int total;
        while ((total = whole_message(c)) > 0) {
            if (c->buf[0] == PG_BE_ERROR) {
                move_failed(sess, "the standby server ended the session%s", NULL);
                return -1;
            }
            if (c->buf[0] == PG_BE_PARAMETER_STATUS) {
                const char *name, *value;
                if (pg_be_parse_parameter_status(c->buf, (size_t)total, &name, &value) > 0)
                    pg_params_store(mv->params, &mv->nparams, name, value);
            }
            sy_conn_consume(c, (size_t)total);
        }
        if (total < 0) {
            move_failed(sess, "the standby server sent an invalid message%s", NULL);
            return -1;
        }
        return 0;
    }
    }
}

/* ---- step 3: the switch ---- */

static const char *param_value(char *const *params, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(params[i], name) == 0)
            return params[i] + strlen(params[i]) + 1;
    return NULL;
}

int pg_move_commit(struct sy_session *sess)
{
    struct pg_sess *ps = pg(sess);
    struct pg_move *mv = ps->move;
    if (!mv || mv->step != MV_READY || !sess->standby)
        return -1;
    ps->move = NULL;
    sy_session_swap_server(sess);
    if (mv->key_len > 0) {
        ps->server_pid = mv->server_pid;
        sess->server_pid = mv->server_pid;
        memcpy(ps->server_key, mv->server_key, mv->key_len);
        ps->key_len = mv->key_len;
    }
    /* The client keeps an accurate view of the reported parameters. */
    struct sbuf out = {0};
    for (size_t i = 0; i < mv->nparams; i++) {
        const char *name = mv->params[i], *value = name + strlen(name) + 1;
        const char *old = param_value(ps->params, ps->nparams, name);
        if (old && strcmp(old, value) == 0)
            continue;
        size_t len = 4 + strlen(name) + 1 + strlen(value) + 1;
        sb_put(&out, "S", 1);
        sb_u32(&out, (uint32_t)len);
        sb_put(&out, name, strlen(name) + 1);
        sb_put(&out, value, strlen(value) + 1);
        pg_params_store(ps->params, &ps->nparams, name, value);
    }
    move_free(mv);
    int rc = 0;
    if (out.failed)
        rc = -1;
    else if (out.len > 0)
        rc = sy_conn_send(&sess->client, out.p, out.len);
    free(out.p);
    return rc;
}
