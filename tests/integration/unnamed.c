/*
 * A client of the unnamed prepared statement across requests, for the shadow tests: runs
 * "select 1" WARMUP times (a pause between them, so that the session reaches idle points and
 * its shadow starts), then prepares the unnamed statement "select $1::int + 1" in one request
 * and executes it N times in as many requests, checking each answer. Exit status 0 when every
 * answer was right.
 *
 *   unnamed CONNINFO WARMUP N
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: unnamed CONNINFO WARMUP N\n");
        return 2;
    }
    PGconn *c = PQconnectdb(argv[1]);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "unnamed: connect: %s", PQerrorMessage(c));
        return 1;
    }
    int warmup = atoi(argv[2]), n = atoi(argv[3]), bad = 0;
    for (int i = 0; i < warmup; i++) {
        PQclear(PQexec(c, "select 1"));
        usleep(100000);
    }
    PGresult *r = PQprepare(c, "", "select $1::int + 1", 1, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "unnamed: prepare: %s", PQerrorMessage(c));
        return 1;
    }
    PQclear(r);
    for (int i = 0; i < n; i++) {
        char v[16], want[16];
        snprintf(v, sizeof(v), "%d", i);
        snprintf(want, sizeof(want), "%d", i + 1);
        const char *params[1] = {v};
        r = PQexecPrepared(c, "", 1, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK || strcmp(PQgetvalue(r, 0, 0), want) != 0) {
            fprintf(stderr, "unnamed: execution %d: %s", i, PQerrorMessage(c));
            bad++;
        }
        PQclear(r);
    }
    PQfinish(c);
    return bad ? 1 : 0;
}
