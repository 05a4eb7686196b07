/*
 * One long client session for the cross-version test: reads requests from stdin, one a line,
 * and answers each on stdout followed by the parameters the server reported to this client
 * (libpq's view: the last ParameterStatus of each), so a test can see what a session that moved
 * between major versions was told. Requests:
 *
 *   sql TEXT            PQexec(TEXT): each row as its cells joined by '|', or "ERROR: ..."
 *   prepare NAME TEXT   PQprepare (a protocol-level prepared statement, no parameter types)
 *   exec NAME ARG       PQexecPrepared(NAME) with one text parameter
 *
 * After each answer: "params server_version=V scram_iterations=V" ("-" for a parameter the
 * server never reported), then "__END__". Exits 0 at the end of stdin, 1 if the connection
 * fails.
 *
 *   param_session CONNINFO
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_result(PGconn *c, PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK) {
        for (int i = 0; i < PQntuples(r); i++)
            for (int j = 0; j < PQnfields(r); j++)
                printf("%s%s", PQgetvalue(r, i, j), j + 1 < PQnfields(r) ? "|" : "\n");
    } else if (st != PGRES_COMMAND_OK) {
        printf("ERROR: %s", PQerrorMessage(c));
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: param_session CONNINFO\n");
        return 2;
    }
    PGconn *c = PQconnectdb(argv[1]);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "param_session: connect: %s", PQerrorMessage(c));
        return 1;
    }
    char line[4096];
    while (fgets(line, sizeof(line), stdin)) {
        line[strcspn(line, "\n")] = '\0';
        char *arg = strchr(line, ' ');
        if (arg)
            *arg++ = '\0';
        PGresult *r = NULL;
        if (strcmp(line, "sql") == 0 && arg) {
            r = PQexec(c, arg);
        } else if (strcmp(line, "prepare") == 0 && arg && strchr(arg, ' ')) {
            char *text = strchr(arg, ' ');
            *text++ = '\0';
            r = PQprepare(c, arg, text, 0, NULL);
        } else if (strcmp(line, "exec") == 0 && arg && strchr(arg, ' ')) {
            char *value = strchr(arg, ' ');
            *value++ = '\0';
            const char *params[1] = {value};
            r = PQexecPrepared(c, arg, 1, params, NULL, NULL, 0);
        } else {
            printf("ERROR: bad request '%s'\n", line);
        }
        if (r)
            print_result(c, r);
        PQclear(r);
        const char *v = PQparameterStatus(c, "server_version");
        const char *s = PQparameterStatus(c, "scram_iterations");
        printf("params server_version=%s scram_iterations=%s\n__END__\n", v ? v : "-", s ? s : "-");
        fflush(stdout);
        if (PQstatus(c) != CONNECTION_OK) {
            fprintf(stderr, "param_session: connection lost: %s", PQerrorMessage(c));
            return 1;
        }
    }
    PQfinish(c);
    return 0;
}
