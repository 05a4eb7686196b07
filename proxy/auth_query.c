/* auth_query worker. See auth_query.h. */
#include "auth_query.h"

#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "worker.h"

struct aq_req {
    struct sy_work work; /* first */
    uint64_t session_id;
    char conninfo[1400];
    char query[1024];
    char user[64];
    enum sy_aq_result result;
    char secret[1100];
    char error[256];
};

static struct {
    struct sy_worker w;
    struct sy_proxy *proxy;
    sy_aq_done_fn done_fn;
} aq;

/* ---- worker thread ---- */

static PGconn *worker_conn;
static char worker_conninfo[1400];

static PGconn *worker_connect(struct aq_req *r)
{
    if (worker_conn && PQstatus(worker_conn) == CONNECTION_OK &&
        strcmp(worker_conninfo, r->conninfo) == 0)
        return worker_conn;
    if (worker_conn)
        PQfinish(worker_conn);
    worker_conn = PQconnectdb(r->conninfo);
    snprintf(worker_conninfo, sizeof(worker_conninfo), "%s", r->conninfo);
    if (PQstatus(worker_conn) != CONNECTION_OK) {
        snprintf(r->error, sizeof(r->error), "cannot connect as auth_user: %s",
                 PQerrorMessage(worker_conn));
        PQfinish(worker_conn);
        worker_conn = NULL;
    }
    return worker_conn;
}

static void worker_run(struct sy_worker *w, struct sy_work *item)
{
    (void)w;
    struct aq_req *r = (struct aq_req *)item;
    PGconn *c = worker_connect(r);
    r->result = SY_AQ_ERROR;
    if (!c)
        return;
    const char *params[1] = {r->user};
    PGresult *res = PQexecParams(c, r->query, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(r->error, sizeof(r->error), "auth_query failed: %s", PQerrorMessage(c));
    } else if (PQnfields(res) < 2) {
        snprintf(r->error, sizeof(r->error), "auth_query must return two columns (name, secret)");
    } else if (PQntuples(res) == 0 || PQgetisnull(res, 0, 1) ||
               strlen(PQgetvalue(res, 0, 1)) >= sizeof(r->secret)) {
        r->result = SY_AQ_NO_SECRET;
    } else {
        snprintf(r->secret, sizeof(r->secret), "%s", PQgetvalue(res, 0, 1));
        r->result = SY_AQ_FOUND;
    }
    PQclear(res);
}

static void worker_exit(struct sy_worker *w)
{
    (void)w;
    if (worker_conn)
        PQfinish(worker_conn);
    worker_conn = NULL;
}

static void req_free(struct sy_work *item)
{
    OPENSSL_cleanse(item, sizeof(struct aq_req));
    free(item);
}

/* ---- loop thread ---- */

static struct sy_session *find_session(uint64_t id)
{
    for (struct sy_session *s = aq.proxy->sessions; s; s = s->next)
        if (s->id == id)
            return s;
    return NULL;
}

static void req_done(struct sy_worker *w, struct sy_work *item)
{
    (void)w;
    struct aq_req *r = (struct aq_req *)item;
    struct sy_session *s = find_session(r->session_id);
    if (r->result == SY_AQ_ERROR)
        sy_error("auth_query for user %s: %s", r->user, r->error);
    if (s)
        aq.done_fn(s, r->result, r->result == SY_AQ_FOUND ? r->secret : NULL);
    req_free(item);
}

int sy_auth_query_start(struct sy_proxy *p, sy_aq_done_fn done)
{
    aq.proxy = p;
    aq.done_fn = done;
    aq.w.run = worker_run;
    aq.w.done = req_done;
    aq.w.drop = req_free;
    aq.w.exit = worker_exit;
    return sy_worker_start(&aq.w, p->loop, "auth_query");
}

/* Appends key='value' to a conninfo string, quoting as libpq wants. */
static void conninfo_add(char *out, size_t cap, const char *key, const char *value)
{
    size_t n = strlen(out);
    if (n + strlen(key) + 4 >= cap)
        return;
    n += (size_t)snprintf(out + n, cap - n, "%s%s='", n ? " " : "", key);
    for (const char *v = value; *v && n + 3 < cap; v++) {
        if (*v == '\'' || *v == '\\')
            out[n++] = '\\';
        out[n++] = *v;
    }
    if (n + 2 <= cap) {
        out[n++] = '\'';
        out[n] = 0;
    }
}

int sy_auth_query_submit(struct sy_session *sess)
{
    const struct sy_config *cfg = &sess->proxy->cfg;
    const struct sy_server_config *sc = &cfg->server[sess->side];
    struct aq_req *r = calloc(1, sizeof(*r));
    if (!r || !aq.w.started) {
        free(r);
        return -1;
    }
    static const char *const sslmodes[] = {"disable", "prefer", "require", "verify-ca",
                                           "verify-full"};
    char port[16];
    snprintf(port, sizeof(port), "%d", sc->port);
    conninfo_add(r->conninfo, sizeof(r->conninfo), "host", sc->host);
    conninfo_add(r->conninfo, sizeof(r->conninfo), "port", port);
    conninfo_add(r->conninfo, sizeof(r->conninfo), "user", cfg->auth_user);
    conninfo_add(r->conninfo, sizeof(r->conninfo), "dbname", cfg->auth_dbname);
    if (cfg->auth_password[0])
        conninfo_add(r->conninfo, sizeof(r->conninfo), "password", cfg->auth_password);
    conninfo_add(r->conninfo, sizeof(r->conninfo), "sslmode", sslmodes[sc->tls]);
    if (sc->tls_ca[0])
        conninfo_add(r->conninfo, sizeof(r->conninfo), "sslrootcert", sc->tls_ca);
    conninfo_add(r->conninfo, sizeof(r->conninfo), "application_name", "switchyard auth_query");
    conninfo_add(r->conninfo, sizeof(r->conninfo), "connect_timeout", "5");
    snprintf(r->query, sizeof(r->query), "%s", cfg->auth_query);
    snprintf(r->user, sizeof(r->user), "%s", sess->user);
    r->session_id = sess->id;
    sy_worker_submit(&aq.w, &r->work);
    return 0;
}

void sy_auth_query_stop(void) { sy_worker_stop(&aq.w); }
