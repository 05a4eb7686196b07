/*
 * auth_query: looks up a user's secret on the active database when the auth file does not have
 * it, through a dedicated control user (auth_user). libpq is blocking, so the queries run on one
 * worker thread that keeps its own connection; answers come back to the event loop through a
 * uv_async handle, matched to the waiting session by its id (the session may be gone by then).
 *
 * Nothing the client sent before login reaches that connection: it is opened with Switchyard's
 * own parameters only, and the query gets the user name as a bound parameter ($1).
 */
#ifndef SY_AUTH_QUERY_H
#define SY_AUTH_QUERY_H

#include <stdint.h>

#include "proxy.h"

/* The outcome of a lookup. */
enum sy_aq_result {
    SY_AQ_FOUND = 1,    /* a row with a secret */
    SY_AQ_NO_SECRET = 2,/* no such role, or a NULL secret (none set, or expired) */
    SY_AQ_ERROR = 3,    /* the query could not run (connection, permission, bad query) */
};

/* Called on the loop thread with the session the lookup was for (still open), the result and
 * the secret (FOUND only; wiped after the call). */
typedef void (*sy_aq_done_fn)(struct sy_session *sess, enum sy_aq_result result,
                              const char *secret);

/* Starts the worker. Returns 0, or -1 after logging why. */
int sy_auth_query_start(struct sy_proxy *p, sy_aq_done_fn done);
/* Queues a lookup of sess->user on sess->side's server. Returns 0, or -1 (out of memory). */
int sy_auth_query_submit(struct sy_session *sess);
/* Stops the worker and closes its handle (the loop can then end). */
void sy_auth_query_stop(void);

#endif
