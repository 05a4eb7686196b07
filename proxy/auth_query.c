/* auth_query worker. See auth_query.h. */
#include "auth_query.h"

#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct aq_req {
    struct aq_req *next;
    uint64_t session_id;
    char conninfo[1400];
    char query[1024];
    char user[64];
    enum sy_aq_result result;
    char secret[1100];
    char error[256];
};

static struct {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct aq_req *todo, *todo_tail; /* for the worker */
    struct aq_req *done;             /* for the loop */
    int stopping, started;
    uv_async_t async;
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

static void worker_run(struct aq_req *r)
{
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

static void *worker_main(void *arg)
{
    pthread_mutex_lock(&aq.lock);
    for (;;) {
        while (!aq.todo && !aq.stopping)
            pthread_cond_wait(&aq.cond, &aq.lock);
        if (aq.stopping)
            break;
        struct aq_req *r = aq.todo;
        aq.todo = r->next;
        if (!aq.todo)
            aq.todo_tail = NULL;
        pthread_mutex_unlock(&aq.lock);
        worker_run(r);
        pthread_mutex_lock(&aq.lock);
        r->next = aq.done;
        aq.done = r;
        uv_async_send(&aq.async);
    }
    pthread_mutex_unlock(&aq.lock);
    if (worker_conn)
        PQfinish(worker_conn);
    return NULL;
}

/* ---- loop thread ---- */

static struct sy_session *find_session(uint64_t id)
{
    for (struct sy_session *s = aq.proxy->sessions; s; s = s->next)
        if (s->id == id)
            return s;
    return NULL;
}

static void on_async(uv_async_t *h)
{
    pthread_mutex_lock(&aq.lock);
    struct aq_req *list = aq.done;
    aq.done = NULL;
    pthread_mutex_unlock(&aq.lock);
    while (list) {
        struct aq_req *r = list;
        list = r->next;
        struct sy_session *s = find_session(r->session_id);
        if (r->result == SY_AQ_ERROR)
            sy_error("auth_query for user %s: %s", r->user, r->error);
        if (s)
            aq.done_fn(s, r->result, r->result == SY_AQ_FOUND ? r->secret : NULL);
        OPENSSL_cleanse(r, sizeof(*r));
        free(r);
    }
}

int sy_auth_query_start(struct sy_proxy *p, sy_aq_done_fn done)
{
    aq.proxy = p;
    aq.done_fn = done;
    pthread_mutex_init(&aq.lock, NULL);
    pthread_cond_init(&aq.cond, NULL);
    if (uv_async_init(p->loop, &aq.async, on_async) != 0)
        return -1;
    if (pthread_create(&aq.thread, NULL, worker_main, NULL) != 0) {
        sy_error("cannot start the auth_query thread");
        uv_close((uv_handle_t *)&aq.async, NULL);
        return -1;
    }
    aq.started = 1;
    return 0;
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
    if (!r || !aq.started) {
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
    pthread_mutex_lock(&aq.lock);
    if (aq.todo_tail)
        aq.todo_tail->next = r;
    else
        aq.todo = r;
    aq.todo_tail = r;
    pthread_cond_signal(&aq.cond);
    pthread_mutex_unlock(&aq.lock);
    return 0;
}

void sy_auth_query_stop(void)
{
    if (!aq.started)
        return;
    pthread_mutex_lock(&aq.lock);
    aq.stopping = 1;
    pthread_cond_signal(&aq.cond);
    pthread_mutex_unlock(&aq.lock);
    pthread_join(aq.thread, NULL);
    aq.started = 0;
    while (aq.todo) {
        struct aq_req *r = aq.todo;
        aq.todo = r->next;
        free(r);
    }
    while (aq.done) {
        struct aq_req *r = aq.done;
        aq.done = r->next;
        OPENSSL_cleanse(r, sizeof(*r));
        free(r);
    }
    uv_close((uv_handle_t *)&aq.async, NULL);
}
