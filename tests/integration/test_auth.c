/*
 * Authentication through a real switchyard: for each password method the servers ask for
 * (SCRAM-SHA-256, md5, cleartext password; tests/support/pg_cluster.sh picks it from the role's
 * name) and each case (right password, wrong password, unknown user, expired password, NOLOGIN
 * role), a libpq client logs in directly to blue and through switchyard, and both must end the
 * same way: the same status, SQLSTATE and message. Raw sockets check the SQLSTATEs on the wire
 * for md5 and cleartext. Then: a SCRAM session works and is the right role, startup parameters
 * reach the server, the admin socket shows TLS per leg, cleartext is refused without TLS unless
 * allowed, a trusted user the proxy has no secret for fails clearly, and no secret ever reaches
 * the log.
 *
 * The auth file is built from pg_authid on blue twice: once with every test role (NOLOGIN ones
 * too, so the server's own refusal is what such a client meets), once with the query
 * docs/auth.md gives operators, word for word; both must behave like the server. A third run
 * knows only scram_user from its file and looks every other role up with auth_query.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/support/harness.h"

#define WRONG_PASSWORD "Wr0ng-pass-Q7"

enum method {
    M_SCRAM = 0, /* pg_hba: scram-sha-256 (every role not named md5_* or pw_*) */
    M_MD5 = 1,   /* pg_hba: md5 for md5_* */
    M_PW = 2,    /* pg_hba: password for pw_* */
};

static const char *const method_name[] = {"scram-sha-256", "md5", "password"};
static const char *const method_prefix[] = {"scram", "md5", "pw"};

/* The roles made on blue. Every password is distinct, so the log check can look for each. */
struct role {
    const char *name;
    enum method method;
    const char *password;
    const char *attrs; /* CREATE ROLE options besides PASSWORD */
};

static const struct role roles[] = {
    {"scram_user", M_SCRAM, "Scr-user-pass-1a", "LOGIN"},
    {"scram_expired", M_SCRAM, "Scr-expired-pass-2b", "LOGIN VALID UNTIL '2000-01-01'"},
    {"scram_nologin", M_SCRAM, "Scr-nologin-pass-3c", "NOLOGIN"},
    {"scram_other", M_SCRAM, "Scr-other-pass-4d", "LOGIN"},
    {"md5_user", M_MD5, "Md5-user-pass-5e", "LOGIN"},
    {"md5_expired", M_MD5, "Md5-expired-pass-6f", "LOGIN VALID UNTIL '2000-01-01'"},
    {"md5_nologin", M_MD5, "Md5-nologin-pass-7g", "NOLOGIN"},
    {"pw_user", M_PW, "Pw-user-pass-8h", "LOGIN"},
    {"pw_expired", M_PW, "Pw-expired-pass-9i", "LOGIN VALID UNTIL '2000-01-01'"},
    {"pw_nologin", M_PW, "Pw-nologin-pass-0j", "NOLOGIN"},
};
#define NROLES (sizeof(roles) / sizeof(roles[0]))

/* What a server stores (rolpassword) for each role, read back after creating them. */
static char stored[NROLES][512];

static struct h_env env;
static struct h_proxy proxy;      /* auth_file from pg_authid, cleartext allowed without TLS */
static struct h_proxy docs_proxy; /* the same, with the auth file exactly as docs/auth.md builds it */
static struct h_proxy tls_proxy;  /* client_tls = allow, cleartext only over TLS */
static struct h_proxy trust_proxy; /* trusted users the auth file does not know */
static struct h_proxy aq_proxy;    /* a small auth file, everyone else through auth_query */
static int tls_proxy_started, trust_proxy_started, docs_proxy_started, aq_proxy_started;
static char auth_path[300];
static char auth_path_docs[300];
static char auth_path_small[300];

/* ---- helpers ---- */

static const struct role *role_named(const char *name)
{
    for (size_t i = 0; i < NROLES; i++)
        if (strcmp(roles[i].name, name) == 0)
            return &roles[i];
    return NULL;
}

static PGconn *connect_direct_admin(void)
{
    char ci[512];
    h_conninfo(ci, sizeof(ci), env.blue_port, env.pguser, NULL);
    PGconn *c = PQconnectdb(ci);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "direct connect as %s failed: %s", env.pguser, PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

static int exec_cmd(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "'%s' failed: %s", sql, PQerrorMessage(c));
    PQclear(r);
    return ok ? 0 : -1;
}

/* How one login attempt ended. */
struct outcome {
    int ok;              /* CONNECTION_OK */
    char sqlstate[8];    /* from the FATAL line ("" when libpq itself failed) */
    char message[512];   /* the primary message after the SQLSTATE */
    char raw[1024];      /* PQerrorMessage, for failure reports */
};

/* Pulls "FATAL:  28P01: message" (verbose errors) apart. */
static void parse_error(const char *err, struct outcome *o)
{
    snprintf(o->raw, sizeof(o->raw), "%s", err);
    const char *f = strstr(err, "FATAL:  ");
    if (!f)
        return;
    f += strlen("FATAL:  ");
    if (strlen(f) > 7 && f[5] == ':' && f[6] == ' ') {
        snprintf(o->sqlstate, sizeof(o->sqlstate), "%.5s", f);
        f += 7;
    }
    size_t n = strcspn(f, "\n");
    snprintf(o->message, sizeof(o->message), "%.*s", (int)n, f);
}

/*
 * Logs in with libpq as user/password to port; extra_keys/extra_vals (NULL-terminated, may be
 * NULL) add connection options. Verbose errors make libpq print the SQLSTATE of the server's
 * FATAL. When keep is not NULL and the login worked, the connection is handed back there.
 */
static void login_ex(int port, const char *user, const char *password, const char *sslmode,
                     const char *const *extra_keys, const char *const *extra_vals,
                     struct outcome *o, PGconn **keep)
{
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    const char *keys[24] = {"host", "port", "user", "password", "dbname", "sslmode",
                            "connect_timeout"};
    const char *vals[24] = {"127.0.0.1", portstr, user, password, "app", sslmode, "10"};
    size_t n = 7;
    for (size_t i = 0; extra_keys && extra_keys[i] && n < 23; i++, n++) {
        keys[n] = extra_keys[i];
        vals[n] = extra_vals[i];
    }
    keys[n] = vals[n] = NULL;
    memset(o, 0, sizeof(*o));
    if (keep)
        *keep = NULL;
    PGconn *c = PQconnectStartParams(keys, vals, 0);
    assert_non_null(c);
    PQsetErrorVerbosity(c, PQERRORS_VERBOSE);
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    if (PQstatus(c) == CONNECTION_BAD)
        st = PGRES_POLLING_FAILED;
    while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
        struct pollfd pfd = {.fd = PQsocket(c),
                             .events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT};
        if (poll(&pfd, 1, 15000) <= 0) {
            PQfinish(c);
            fail_msg("login as %s to port %d: no progress in 15 s", user, port);
        }
        st = PQconnectPoll(c);
    }
    o->ok = PQstatus(c) == CONNECTION_OK;
    if (!o->ok)
        parse_error(PQerrorMessage(c), o);
    if (o->ok && keep)
        *keep = c;
    else
        PQfinish(c);
}

static void login(int port, const char *user, const char *password, struct outcome *o)
{
    login_ex(port, user, password, "disable", NULL, NULL, o, NULL);
}

static PGconn *login_ok(int port, const char *user, const char *password, const char *sslmode,
                        const char *const *keys, const char *const *vals)
{
    struct outcome o;
    PGconn *c = NULL;
    login_ex(port, user, password, sslmode, keys, vals, &o, &c);
    if (!o.ok)
        fail_msg("login as %s to port %d failed: %s", user, port, o.raw);
    return c;
}

static char *query_value(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1)
        fail_msg("'%s' failed: %s", sql, PQerrorMessage(c));
    char *v = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

/* The auth file query for the roles where selects: one "user" "secret" line per role, the
 * secret copied from pg_authid. */
static void auth_query_for(char *sql, size_t cap, const char *where)
{
    snprintf(sql, cap,
             "SELECT '\"' || rolname || '\" \"' || coalesce(rolpassword, '') || '\"' "
             "FROM pg_authid WHERE %s ORDER BY rolname",
             where);
}

/* The query docs/auth.md ("Building the auth file") gives operators, word for word. */
static const char DOCS_AUTH_QUERY[] =
    "SELECT '\"' || replace(rolname, '\"', '\"\"') || '\" \"' || coalesce(rolpassword, '') || '\"'\n"
    "  FROM pg_catalog.pg_authid\n"
    "  WHERE rolname NOT LIKE 'pg\\_%'";

/* Writes the rows of sql (one line each) to path with mode 0600, as an operator would with
 * psql -Atc and chmod 600. Returns 0, or -1 (also when there are no rows). */
static int write_auth_file(PGconn *c, const char *path, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "auth file query failed: %s", PQerrorMessage(c));
        PQclear(r);
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        PQclear(r);
        return -1;
    }
    for (int i = 0; i < PQntuples(r); i++)
        fprintf(f, "%s\n", PQgetvalue(r, i, 0));
    fclose(f);
    int rows = PQntuples(r);
    PQclear(r);
    return rows > 0 ? 0 : -1;
}

/* ---- group setup ---- */

/* Drops a role and its privileges (GRANT CONNECT ON DATABASE app) if it exists. */
static int drop_role(PGconn *c, const char *name)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%s') THEN "
             "EXECUTE 'DROP OWNED BY %s'; EXECUTE 'DROP ROLE %s'; END IF; END $$",
             name, name, name);
    return exec_cmd(c, sql);
}

static int create_roles(PGconn *c)
{
    char sql[512];
    for (size_t i = 0; i < NROLES; i++)
        if (drop_role(c, roles[i].name) != 0)
            return -1;
    for (size_t i = 0; i < NROLES; i++) {
        /* md5 roles store an md5 hash; every other role a SCRAM verifier (pw_* too: the server
         * asks those for cleartext and checks it against the verifier). */
        snprintf(sql, sizeof(sql), "SET password_encryption = '%s'",
                 roles[i].method == M_MD5 ? "md5" : "scram-sha-256");
        if (exec_cmd(c, sql) != 0)
            return -1;
        snprintf(sql, sizeof(sql), "CREATE ROLE %s %s PASSWORD '%s'", roles[i].name,
                 roles[i].attrs, roles[i].password);
        if (exec_cmd(c, sql) != 0)
            return -1;
        snprintf(sql, sizeof(sql), "GRANT CONNECT ON DATABASE app TO %s", roles[i].name);
        if (exec_cmd(c, sql) != 0)
            return -1;
        snprintf(sql, sizeof(sql), "SELECT rolpassword FROM pg_authid WHERE rolname = '%s'",
                 roles[i].name);
        PGresult *r = PQexec(c, sql);
        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
            PQclear(r);
            return -1;
        }
        snprintf(stored[i], sizeof(stored[i]), "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
        const char *want = roles[i].method == M_MD5 ? "md5" : "SCRAM-SHA-256$";
        if (strncmp(stored[i], want, strlen(want)) != 0) {
            fprintf(stderr, "role %s stores '%.14s...', not a %s secret\n", roles[i].name,
                    stored[i], want);
            return -1;
        }
    }
    return exec_cmd(c, "RESET password_encryption");
}

/* [users]: the methods the proxy asks each role for, the same as pg_hba.conf asks. */
static const char USERS_SECTION[] =
    "[users]\n"
    "md5_user = md5\nmd5_expired = md5\nmd5_nologin = md5\nmd5_ghost = md5\n"
    "pw_user = password\npw_expired = password\npw_nologin = password\npw_ghost = password\n";

static int setup(void **state)
{
    h_env_load(&env);
    PGconn *c = connect_direct_admin();
    if (!c)
        return -1;
    int rc = create_roles(c);
    snprintf(auth_path, sizeof(auth_path), "/tmp/sy-auth-%d.txt", (int)getpid());
    snprintf(auth_path_small, sizeof(auth_path_small), "/tmp/sy-auth-small-%d.txt", (int)getpid());
    snprintf(auth_path_docs, sizeof(auth_path_docs), "/tmp/sy-auth-docs-%d.txt", (int)getpid());
    char sql[512];
    /* Every test role, NOLOGIN ones included, so that the server's own refusal is what a
     * NOLOGIN client meets. */
    auth_query_for(sql, sizeof(sql),
                   "rolname LIKE 'scram\\_%' OR rolname LIKE 'md5\\_%' OR rolname LIKE 'pw\\_%'");
    if (rc == 0)
        rc = write_auth_file(c, auth_path, sql);
    auth_query_for(sql, sizeof(sql), "rolname = 'scram_user'");
    if (rc == 0)
        rc = write_auth_file(c, auth_path_small, sql);
    if (rc == 0)
        rc = write_auth_file(c, auth_path_docs, DOCS_AUTH_QUERY);
    PQfinish(c);
    if (rc != 0)
        return -1;
    char lines[1024];
    snprintf(lines, sizeof(lines),
             "auth_type = scram-sha-256\nauth_file = %s\nauth_allow_cleartext_without_tls = on\n",
             auth_path);
    struct h_proxy_opts o = {.switchyard_lines = lines, .trailing = USERS_SECTION};
    return h_proxy_start_opts(&proxy, &env, env.blue_port, env.green_port, &o);
}

static int teardown(void **state)
{
    int rc = h_proxy_stop(&proxy, 10000);
    if (tls_proxy_started && !tls_proxy.exited)
        h_proxy_stop(&tls_proxy, 10000);
    if (trust_proxy_started && !trust_proxy.exited)
        h_proxy_stop(&trust_proxy, 10000);
    if (docs_proxy_started && !docs_proxy.exited)
        h_proxy_stop(&docs_proxy, 10000);
    if (aq_proxy_started && !aq_proxy.exited)
        h_proxy_stop(&aq_proxy, 10000);
    unlink(auth_path);
    unlink(auth_path_small);
    unlink(auth_path_docs);
    PGconn *c = connect_direct_admin();
    if (c) {
        for (size_t i = 0; i < NROLES; i++)
            drop_role(c, roles[i].name);
        PQfinish(c);
    }
    return rc == 0 ? 0 : -1;
}

/* ---- direct and through switchyard: the same ending ---- */

struct auth_case {
    const char *suffix;   /* role name after "<method>_" */
    int right_password;   /* the role's own password, or WRONG_PASSWORD */
    int want_ok;
    const char *want_sqlstate;
};

static const struct auth_case cases[] = {
    {"user", 1, 1, ""},
    {"user", 0, 0, "28P01"},
    {"ghost", 1, 0, "28P01"},   /* no such role */
    {"expired", 1, 0, "28P01"}, /* VALID UNTIL 2000: PostgreSQL says the password is wrong */
    {"expired", 0, 0, "28P01"},
    {"nologin", 1, 0, "28000"}, /* authenticated, then not permitted to log in */
    {"nologin", 0, 0, "28P01"},
};

/* Runs every case for method m directly and through the switchyard on port; appends each
 * mismatch to report (rl bytes used so far) and returns how many there were. */
static int run_matrix(enum method m, int port, char *report, size_t cap, size_t *rl)
{
    int bad = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct auth_case *k = &cases[i];
        char user[64];
        snprintf(user, sizeof(user), "%s_%s", method_prefix[m], k->suffix);
        const struct role *r = role_named(user);
        const char *pw = k->right_password && r ? r->password : WRONG_PASSWORD;
        if (!r && strcmp(k->suffix, "ghost") != 0)
            fail_msg("no role %s in the test's table", user);
        struct outcome direct, via;
        login(env.blue_port, user, pw, &direct);
        login(port, user, pw, &via);
        char what[160];
        snprintf(what, sizeof(what), "%s as %s with the %s password", method_name[m], user,
                 k->right_password ? "right" : "wrong");
        /* The expectation itself first: a direct login that does not end as PostgreSQL should
         * means the fixture is not what this test thinks. */
        if (direct.ok != k->want_ok || strcmp(direct.sqlstate, k->want_sqlstate) != 0) {
            bad++;
            *rl += (size_t)snprintf(report + *rl, cap - *rl,
                                   "  %s: DIRECT expected %s %s, got %s %s (%s)\n", what,
                                   k->want_ok ? "OK" : "BAD", k->want_sqlstate,
                                   direct.ok ? "OK" : "BAD", direct.sqlstate, direct.raw);
        }
        if (via.ok != direct.ok || strcmp(via.sqlstate, direct.sqlstate) != 0 ||
            strcmp(via.message, direct.message) != 0) {
            bad++;
            *rl += (size_t)snprintf(report + *rl, cap - *rl,
                                   "  %s:\n    direct:     %s %s \"%s\"\n"
                                   "    switchyard: %s %s \"%s\"\n",
                                   what, direct.ok ? "OK" : "BAD", direct.sqlstate,
                                   direct.message, via.ok ? "OK" : "BAD", via.sqlstate,
                                   via.ok ? "" : via.message[0] ? via.message : via.raw);
        }
        if (*rl >= cap)
            *rl = cap - 1;
    }
    return bad;
}

static void matrix_on_main(enum method m)
{
    char report[8192] = "";
    size_t rl = 0;
    int bad = run_matrix(m, proxy.port, report, sizeof(report), &rl);
    if (bad) {
        fprintf(stderr, "%s", report); /* whole: cmocka cuts long messages */
        fail_msg("%d mismatch(es) for %s, listed above", bad, method_name[m]);
    }
}

static void test_scram_matrix(void **state) { matrix_on_main(M_SCRAM); }
static void test_md5_matrix(void **state) { matrix_on_main(M_MD5); }
static void test_password_matrix(void **state) { matrix_on_main(M_PW); }

static void check_log_clean(const struct h_proxy *p, const char *which);

/* Every method's cases against a second proxy started with lines (and the [users] section),
 * which must end as they do directly; source names where its secrets come from. */
static void matrix_on_proxy(struct h_proxy *px, int *started, const char *lines,
                            const char *source, int check_log)
{
    struct h_proxy_opts o = {.switchyard_lines = lines, .trailing = USERS_SECTION};
    assert_int_equal(h_proxy_start_opts(px, &env, env.blue_port, env.green_port, &o), 0);
    *started = 1;
    char report[16384] = "";
    size_t rl = 0;
    int bad = 0;
    for (int m = M_SCRAM; m <= M_PW; m++)
        bad += run_matrix((enum method)m, px->port, report, sizeof(report), &rl);
    if (check_log)
        check_log_clean(px, source);
    assert_int_equal(h_proxy_stop(px, 10000), 0);
    if (bad) {
        fprintf(stderr, "%s", report);
        fail_msg("%d mismatch(es) with %s, listed above", bad, source);
    }
}

/* The same cases against an auth file built exactly as docs/auth.md tells operators to. */
static void test_matrix_with_documented_auth_file(void **state)
{
    char lines[1024];
    snprintf(lines, sizeof(lines),
             "auth_type = scram-sha-256\nauth_file = %s\nauth_allow_cleartext_without_tls = on\n",
             auth_path_docs);
    matrix_on_proxy(&docs_proxy, &docs_proxy_started, lines,
                    "the auth file built as docs/auth.md says", 0);
}

/* auth_query: the auth file knows only scram_user; every other role's secret is looked up on
 * the server by the default auth_query, run as auth_user on Switchyard's own connection. Every
 * case of every method must still end as it does directly (NOLOGIN, expired, unknown and wrong
 * password included). */
static void test_matrix_with_auth_query(void **state)
{
    char lines[1024];
    snprintf(lines, sizeof(lines),
             "auth_type = scram-sha-256\nauth_file = %s\nauth_allow_cleartext_without_tls = on\n"
             "auth_user = %s\nauth_dbname = postgres\n",
             auth_path_small, env.pguser);
    matrix_on_proxy(&aq_proxy, &aq_proxy_started, lines, "secrets from auth_query", 1);
}

/* ---- raw sockets: SQLSTATEs on the wire ---- */

/* Reads one whole message (type, length, body) into buf; returns its total length or -1. */
static ssize_t read_message(int fd, uint8_t *buf, size_t cap, int timeout_ms)
{
    size_t len = 0, want = 5;
    while (len < want) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, timeout_ms) <= 0)
            return -1;
        ssize_t n = recv(fd, buf + len, want - len, 0);
        if (n <= 0)
            return -1;
        len += (size_t)n;
        if (len == 5) {
            uint32_t l = ((uint32_t)buf[1] << 24) | ((uint32_t)buf[2] << 16) |
                         ((uint32_t)buf[3] << 8) | buf[4];
            if (l < 4 || l + 1 > cap)
                return -1;
            want = l + 1;
        }
    }
    return (ssize_t)len;
}

static void hex(const uint8_t *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", in[i]);
}

/* PostgreSQL's md5 answer: "md5" || md5hex(md5hex(password || user) || salt). */
static void md5_answer(const char *user, const char *password, const uint8_t salt[4],
                       char out[36])
{
    uint8_t d[16];
    char inner[33], buf[256];
    unsigned int dl = 0;
    int n = snprintf(buf, sizeof(buf), "%s%s", password, user);
    assert_int_equal(EVP_Digest(buf, (size_t)n, d, &dl, EVP_md5(), NULL), 1);
    hex(d, 16, inner);
    memcpy(buf, inner, 32);
    memcpy(buf + 32, salt, 4);
    assert_int_equal(EVP_Digest(buf, 36, d, &dl, EVP_md5(), NULL), 1);
    memcpy(out, "md5", 3);
    hex(d, 16, out + 3);
}

static void send_password(int fd, const char *pw)
{
    uint8_t msg[256];
    size_t n = strlen(pw) + 1;
    assert_true(n + 5 <= sizeof(msg));
    msg[0] = 'p';
    uint32_t l = (uint32_t)(n + 4);
    msg[1] = (uint8_t)(l >> 24); msg[2] = (uint8_t)(l >> 16); msg[3] = (uint8_t)(l >> 8); msg[4] = (uint8_t)l;
    memcpy(msg + 5, pw, n);
    assert_int_equal(h_send_all(fd, msg, n + 5), 0);
}

/*
 * Logs in over a raw socket answering an md5 (code 5) or cleartext (code 3) request, whichever
 * want_code says must come. Returns the SQLSTATE of the ErrorResponse that follows in sqlstate,
 * or "" when the login reached ReadyForQuery.
 */
static void raw_login(int port, const char *user, const char *password, uint32_t want_code,
                      char sqlstate[16])
{
    int fd = h_tcp_connect(port);
    assert_true(fd >= 0);
    uint8_t pkt[256];
    size_t n = h_startup(pkt, sizeof(pkt), user, "app");
    assert_int_equal(h_send_all(fd, pkt, n), 0);
    uint8_t msg[512];
    ssize_t ml = read_message(fd, msg, sizeof(msg), 5000);
    if (ml < 9 || msg[0] != 'R')
        fail_msg("raw login as %s to port %d: expected an authentication request, got %zd bytes "
                 "starting with 0x%02x", user, port, ml, ml > 0 ? msg[0] : 0);
    uint32_t code = ((uint32_t)msg[5] << 24) | ((uint32_t)msg[6] << 16) |
                    ((uint32_t)msg[7] << 8) | msg[8];
    if (code != want_code)
        fail_msg("raw login as %s to port %d: asked with authentication code %u, expected %u",
                 user, port, code, want_code);
    if (code == 5) {
        assert_int_equal(ml, 13);
        char ans[36];
        md5_answer(user, password, msg + 9, ans);
        char z[36];
        memcpy(z, ans, 35);
        z[35] = 0;
        send_password(fd, z);
    } else {
        send_password(fd, password);
    }
    uint8_t buf[4096];
    size_t len = 0;
    sqlstate[0] = 0;
    /* Either an ErrorResponse and a close, or AuthenticationOk ... ReadyForQuery. */
    for (;;) {
        ml = read_message(fd, buf + len, sizeof(buf) - len, 5000);
        if (ml < 0)
            fail_msg("raw login as %s to port %d: the connection ended with neither an error "
                     "nor ReadyForQuery", user, port);
        if (buf[len] == 'E') {
            h_find_sqlstate(buf + len, (size_t)ml, sqlstate, 16);
            int closed = 0;
            uint8_t rest[256];
            h_read_until_close(fd, rest, sizeof(rest), 5000, &closed);
            assert_int_equal(closed, 1);
            break;
        }
        if (buf[len] == 'Z')
            break;
        len = 0; /* AuthenticationOk, ParameterStatus, BackendKeyData: not kept */
    }
    close(fd);
}

/* The authentication request code blue sends user first (10 SASL, 5 md5, 3 cleartext). */
static uint32_t first_auth_code(int port, const char *user)
{
    int fd = h_tcp_connect(port);
    assert_true(fd >= 0);
    uint8_t pkt[256], msg[512];
    size_t n = h_startup(pkt, sizeof(pkt), user, "app");
    assert_int_equal(h_send_all(fd, pkt, n), 0);
    ssize_t ml = read_message(fd, msg, sizeof(msg), 5000);
    close(fd);
    if (ml < 9 || msg[0] != 'R')
        return 0;
    return ((uint32_t)msg[5] << 24) | ((uint32_t)msg[6] << 16) | ((uint32_t)msg[7] << 8) | msg[8];
}

/* The fixture's promise this file rests on: pg_hba.conf asks md5_* roles for md5, pw_* roles
 * for a cleartext password and every other role for SCRAM. */
static void test_fixture_asks_each_method(void **state)
{
    static const struct {
        const char *user;
        uint32_t code;
    } want[] = {{"scram_user", 10}, {"md5_user", 5}, {"pw_user", 3},
                {"pw_ghost", 3}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        uint32_t got = first_auth_code(env.blue_port, want[i].user);
        if (got != want[i].code)
            fail_msg("blue asks %s with authentication request %u, not %u: the fixture's "
                     "pg_hba.conf does not pick the method by role name (PostgreSQL 15 reads "
                     "'/^md5_' as a literal user name; regular expressions there need 16)",
                     want[i].user, got, want[i].code);
    }
}

static void expect_same_raw(const char *user, const char *password, uint32_t code,
                            const char *want)
{
    char direct[16], via[16];
    raw_login(env.blue_port, user, password, code, direct);
    raw_login(proxy.port, user, password, code, via);
    if (strcmp(direct, want) != 0 || strcmp(via, want) != 0)
        fail_msg("raw login as %s: expected SQLSTATE '%s' both ways; direct '%s', switchyard '%s'",
                 user, want, direct, via);
}

static void test_raw_sqlstates(void **state)
{
    /* md5: right, wrong, NOLOGIN. */
    expect_same_raw("md5_user", role_named("md5_user")->password, 5, "");
    expect_same_raw("md5_user", WRONG_PASSWORD, 5, "28P01");
    expect_same_raw("md5_nologin", role_named("md5_nologin")->password, 5, "28000");
    /* cleartext: right, wrong, unknown user, expired. */
    expect_same_raw("pw_user", role_named("pw_user")->password, 3, "");
    expect_same_raw("pw_user", WRONG_PASSWORD, 3, "28P01");
    expect_same_raw("pw_ghost", WRONG_PASSWORD, 3, "28P01");
    expect_same_raw("pw_expired", role_named("pw_expired")->password, 3, "28P01");
    /* An unknown md5 user through switchyard: asked for md5 like anyone, and refused with the
     * same SQLSTATE as a wrong password (a server whose password_encryption is scram-sha-256
     * asks an unknown user for SCRAM instead, which this raw client does not speak). */
    char via[16];
    raw_login(proxy.port, "md5_ghost", WRONG_PASSWORD, 5, via);
    assert_string_equal(via, "28P01");
}

/* ---- logged-in sessions ---- */

static void test_scram_session_runs_queries(void **state)
{
    static const char *const users[] = {"scram_user", "md5_user", "pw_user"};
    for (size_t i = 0; i < 3; i++) {
        PGconn *c = login_ok(proxy.port, users[i], role_named(users[i])->password, "disable",
                             NULL, NULL);
        char *v = query_value(c, "select current_user");
        assert_string_equal(v, users[i]);
        free(v);
        v = query_value(c, "select session_user");
        assert_string_equal(v, users[i]);
        free(v);
        v = query_value(c, "select sum(g) from generate_series(1, 1000) g");
        assert_string_equal(v, "500500");
        free(v);
        PGresult *r = PQexec(c, "select 1/0");
        assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
        assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "22012");
        PQclear(r);
        v = query_value(c, "select 'still usable'");
        assert_string_equal(v, "still usable");
        free(v);
        PQfinish(c);
    }
}

static void test_startup_parameters_pass_through(void **state)
{
    static const char *const keys[] = {"options", "application_name", NULL};
    static const char *const vals[] = {"-c work_mem=7MB", "authtest", NULL};
    PGconn *c = login_ok(proxy.port, "scram_user", role_named("scram_user")->password, "disable",
                         keys, vals);
    char *v = query_value(c, "show work_mem");
    assert_string_equal(v, "7MB");
    free(v);
    v = query_value(c, "select current_setting('application_name')");
    assert_string_equal(v, "authtest");
    free(v);
    assert_string_equal(PQparameterStatus(c, "application_name"), "authtest");
    v = query_value(c, "select application_name from pg_stat_activity where pid = pg_backend_pid()");
    assert_string_equal(v, "authtest");
    free(v);
    PQfinish(c);
}

/* The object for user in `switchyardctl --json clients`, copied into out. */
static int client_entry(const char *json, const char *user, char *out, size_t cap)
{
    char pat[96];
    snprintf(pat, sizeof(pat), "\"user\":\"%s\"", user);
    const char *at = json ? strstr(json, pat) : NULL;
    if (!at)
        return -1;
    const char *start = at, *end = strchr(at, '}');
    while (start > json && *start != '{')
        start--;
    if (!end)
        return -1;
    snprintf(out, cap, "%.*s", (int)(end - start + 1), start);
    return 0;
}

static void test_admin_clients_show_tls(void **state)
{
    PGconn *c = login_ok(proxy.port, "scram_user", role_named("scram_user")->password, "disable",
                         NULL, NULL);
    char *server_ssl = query_value(c, "select ssl from pg_stat_ssl where pid = pg_backend_pid()");
    char *j = h_ctl(&proxy, "clients");
    char entry[2048];
    if (client_entry(j, "scram_user", entry, sizeof(entry)) != 0)
        fail_msg("no client scram_user in: %s", j ? j : "(no output)");
    /* The client leg is plaintext (sslmode=disable); the server leg took TLS (server_tls
     * defaults to prefer and the test servers have ssl = on). */
    if (!strstr(entry, "\"client_tls\":\"none\""))
        fail_msg("expected client_tls none: %s", entry);
    if (!strstr(entry, "\"server_tls\":\"TLSv1.3 "))
        fail_msg("expected server_tls TLSv1.3: %s", entry);
    assert_string_equal(server_ssl, "t");
    free(server_ssl);
    free(j);
    PQfinish(c);
}

/* A server's last words before it closes a TLS connection reach the client: here the FATAL of
 * pg_terminate_backend, sent just before close_notify (the NOLOGIN cases above are the same at
 * login). */
static void test_server_fatal_over_tls_reaches_client(void **state)
{
    PGconn *c = login_ok(proxy.port, "scram_user", role_named("scram_user")->password, "disable",
                         NULL, NULL);
    char *pid = query_value(c, "select pg_backend_pid()");
    char *ssl = query_value(c, "select ssl from pg_stat_ssl where pid = pg_backend_pid()");
    assert_string_equal(ssl, "t");
    free(ssl);
    PGconn *admin = connect_direct_admin();
    assert_non_null(admin);
    char sql[128];
    snprintf(sql, sizeof(sql), "select pg_terminate_backend(%s, 5000)", pid);
    char *v = query_value(admin, sql);
    assert_string_equal(v, "t");
    free(v);
    free(pid);
    PQfinish(admin);
    PGresult *r = PQexec(c, "select 1");
    assert_int_not_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    if (!strstr(PQerrorMessage(c), "terminating connection due to administrator command"))
        fail_msg("the client should see the server's FATAL, got: %s", PQerrorMessage(c));
    PQfinish(c);
}

/* ---- cleartext passwords and TLS ---- */

static void test_cleartext_needs_tls_unless_allowed(void **state)
{
    if (!env.cert_dir[0])
        fail_msg("the env file has no CERT_DIR; the fixture is too old");
    char lines[2048];
    snprintf(lines, sizeof(lines),
             "auth_type = scram-sha-256\nauth_file = %s\nclient_tls = allow\n"
             "client_tls_cert = %s/server.crt\nclient_tls_key = %s/server.key\n",
             auth_path, env.cert_dir, env.cert_dir);
    struct h_proxy_opts o = {.switchyard_lines = lines, .trailing = USERS_SECTION};
    assert_int_equal(h_proxy_start_opts(&tls_proxy, &env, env.blue_port, env.green_port, &o), 0);
    tls_proxy_started = 1;
    const char *pw = role_named("pw_user")->password;
    /* Without TLS: refused before any password is asked for. */
    struct outcome out;
    login_ex(tls_proxy.port, "pw_user", pw, "disable", NULL, NULL, &out, NULL);
    assert_false(out.ok);
    assert_string_equal(out.sqlstate, "28000");
    if (!strstr(out.message, "cleartext") || !strstr(out.message, "TLS"))
        fail_msg("the refusal should say cleartext needs TLS: %s", out.raw);
    /* With TLS: the right password works, a wrong one is 28P01 as on the server. */
    PGconn *c = login_ok(tls_proxy.port, "pw_user", pw, "require", NULL, NULL);
    char *v = query_value(c, "select current_user");
    assert_string_equal(v, "pw_user");
    free(v);
    char *j = h_ctl(&tls_proxy, "clients");
    char entry[2048];
    if (client_entry(j, "pw_user", entry, sizeof(entry)) != 0)
        fail_msg("no client pw_user in: %s", j ? j : "(no output)");
    if (!strstr(entry, "\"client_tls\":\"TLSv1.3 ") || !strstr(entry, "\"server_tls\":\"TLSv1.3 "))
        fail_msg("expected TLSv1.3 on both legs: %s", entry);
    free(j);
    PQfinish(c);
    login_ex(tls_proxy.port, "pw_user", WRONG_PASSWORD, "require", NULL, NULL, &out, NULL);
    assert_false(out.ok);
    assert_string_equal(out.sqlstate, "28P01");
    assert_string_equal(out.message, "password authentication failed for user \"pw_user\"");
    /* SCRAM users are unaffected by the rule, with or without TLS. */
    c = login_ok(tls_proxy.port, "scram_user", role_named("scram_user")->password, "disable",
                 NULL, NULL);
    PQfinish(c);
    c = login_ok(tls_proxy.port, "scram_user", role_named("scram_user")->password, "require",
                 NULL, NULL);
    PQfinish(c);
    assert_int_equal(h_proxy_stop(&tls_proxy, 10000), 0);
}

/* ---- trusted users switchyard has no secret for ---- */

static void test_trust_without_secret(void **state)
{
    char lines[1024];
    snprintf(lines, sizeof(lines), "auth_type = scram-sha-256\nauth_file = %s\n", auth_path_small);
    struct h_proxy_opts o = {
        .switchyard_lines = lines,
        .trailing = "[users]\npostgres = trust\nscram_other = trust\nmd5_user = trust\n"
                    "pw_user = trust\n"};
    assert_int_equal(h_proxy_start_opts(&trust_proxy, &env, env.blue_port, env.green_port, &o), 0);
    trust_proxy_started = 1;
    /* The server trusts postgres: nothing is needed. */
    PGconn *c = login_ok(trust_proxy.port, env.pguser, "", "disable", NULL, NULL);
    char *v = query_value(c, "select current_user");
    assert_string_equal(v, env.pguser);
    free(v);
    PQfinish(c);
    /* The user that is in the auth file still logs in with SCRAM. */
    c = login_ok(trust_proxy.port, "scram_user", role_named("scram_user")->password, "disable",
                 NULL, NULL);
    PQfinish(c);
    /* The server wants a password switchyard lacks, for each method: a clear 28000 that says
     * where the secret belongs. */
    static const char *const users[] = {"scram_other", "md5_user", "pw_user"};
    for (size_t i = 0; i < 3; i++) {
        struct outcome out;
        login(trust_proxy.port, users[i], role_named(users[i])->password, &out);
        if (out.ok || strcmp(out.sqlstate, "28000") != 0 || !strstr(out.message, "auth_file") ||
            !strstr(out.message, users[i]))
            fail_msg("%s (trusted, not in auth_file): expected 28000 naming the user and "
                     "auth_file, got %s %s: %s",
                     users[i], out.ok ? "OK" : "BAD", out.sqlstate, out.raw);
    }
    assert_int_equal(h_proxy_stop(&trust_proxy, 10000), 0);
}

/* ---- secrets never reach the log ---- */

static void check_log_clean(const struct h_proxy *p, const char *which)
{
    for (size_t i = 0; i < NROLES; i++) {
        if (h_log_contains(p, roles[i].password))
            fail_msg("the %s log %s holds the password of %s", which, p->log, roles[i].name);
        if (h_log_contains(p, stored[i]))
            fail_msg("the %s log %s holds the stored secret of %s", which, p->log,
                     roles[i].name);
        /* The keys of a verifier, each alone (the salt is no secret: every client sees it). */
        char part[sizeof(stored[0])];
        memcpy(part, stored[i], sizeof(part));
        for (char *t = strtok(part, "$:"); t; t = strtok(NULL, "$:"))
            if (strlen(t) >= 40 && h_log_contains(p, t)) /* StoredKey, ServerKey */
                fail_msg("the %s log %s holds part of %s's secret: %s", which, p->log,
                         roles[i].name, t);
    }
    if (h_log_contains(p, WRONG_PASSWORD))
        fail_msg("the %s log %s holds the wrong password a client tried", which, p->log);
    if (h_log_contains(p, "SCRAM-SHA-256$"))
        fail_msg("the %s log %s holds a SCRAM verifier", which, p->log);
    if (h_log_contains(p, "AddressSanitizer") || h_log_contains(p, "LeakSanitizer") ||
        h_log_contains(p, "runtime error:"))
        fail_msg("the %s log %s holds a sanitizer report", which, p->log);
    if (h_log_contains(p, "can be read by other users"))
        fail_msg("the %s log %s warns about the auth file's mode, which is 0600", which, p->log);
}

static void test_log_has_no_secrets(void **state)
{
    struct stat st;
    assert_int_equal(stat(auth_path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* The main proxy ran every test above at log_level = debug, and did see failures. */
    assert_true(h_log_contains(&proxy, "authentication failed"));
    check_log_clean(&proxy, "main");
    if (tls_proxy_started)
        check_log_clean(&tls_proxy, "client_tls");
    if (trust_proxy_started)
        check_log_clean(&trust_proxy, "trust");
    if (docs_proxy_started)
        check_log_clean(&docs_proxy, "docs");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_asks_each_method),
        cmocka_unit_test(test_scram_matrix),
        cmocka_unit_test(test_md5_matrix),
        cmocka_unit_test(test_password_matrix),
        cmocka_unit_test(test_matrix_with_documented_auth_file),
        cmocka_unit_test(test_matrix_with_auth_query),
        cmocka_unit_test(test_raw_sqlstates),
        cmocka_unit_test(test_scram_session_runs_queries),
        cmocka_unit_test(test_startup_parameters_pass_through),
        cmocka_unit_test(test_admin_clients_show_tls),
        cmocka_unit_test(test_server_fatal_over_tls_reaches_client),
        cmocka_unit_test(test_cleartext_needs_tls_unless_allowed),
        cmocka_unit_test(test_trust_without_secret),
        cmocka_unit_test(test_log_has_no_secrets),
    };
    return cmocka_run_group_tests_name("auth", tests, setup, teardown);
}
