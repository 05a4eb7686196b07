/*
 * A writer for the cutover tests: inserts ids start, start+1, ... into acks(id) through a
 * connection string, one autocommit INSERT each, and prints every id whose INSERT was
 * acknowledged (one per line, flushed) to stdout. Runs until the file STOPFILE exists. Errors go
 * to stderr; the exit status is the number of failed INSERTs (capped at 100), so a clean run
 * through any number of switches exits 0.
 *
 *   writer CONNINFO START STOPFILE
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: writer CONNINFO START STOPFILE\n");
        return 100;
    }
    PGconn *c = PQconnectdb(argv[1]);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "writer: connect: %s", PQerrorMessage(c));
        return 100;
    }
    long id = atol(argv[2]);
    int failed = 0;
    while (access(argv[3], F_OK) != 0) {
        char v[32];
        snprintf(v, sizeof(v), "%ld", id);
        const char *params[1] = {v};
        PGresult *r = PQexecParams(c, "insert into acks(id) values ($1::bigint)", 1, NULL, params,
                                   NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_COMMAND_OK) {
            printf("%ld\n", id);
            fflush(stdout);
        } else {
            failed++;
            fprintf(stderr, "writer: id %ld: %s", id, PQerrorMessage(c));
            if (PQstatus(c) != CONNECTION_OK) {
                PQclear(r);
                break;
            }
        }
        PQclear(r);
        id++;
        usleep(2000);
    }
    PQfinish(c);
    return failed > 100 ? 100 : failed;
}
