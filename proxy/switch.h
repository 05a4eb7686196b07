/*
 * The cutover and rollback driver: runs the state machine (switchover/cutover.h) against the
 * event loop (sessions, standby connections, the pause) and the control thread (every SQL
 * statement on blue and green, switchover/pgctl.h); keeps the control connections' health, the
 * replication state, the rollback window and the state file. See docs/runbook.md.
 */
#ifndef SY_SWITCH_H
#define SY_SWITCH_H

#include <json-c/json.h>

#include "proxy.h"
#include "switchover/pgctl.h"

struct sy_admin_conn; /* admin.c: a connection waiting for a long command's lines */

/* Starts the control thread and the health timer. Returns 0 or -1 after logging why. */
int sy_switch_start(struct sy_proxy *p);
/* Stops them (shutdown). */
void sy_switch_stop(struct sy_proxy *p);
/* Reads the state file (before listening): sets p->active to the side really active and
 * remembers fences and an interrupted switch. Returns 0, or -1 on a file that cannot be used. */
int sy_switch_load_state(struct sy_proxy *p);
/* The state file's path when state_file is not set: $STATE_DIRECTORY (systemd), else
 * /var/lib/switchyard (root, or writable), else $XDG_STATE_HOME/switchyard or
 * ~/.local/state/switchyard; the name is admin_socket's path with '/' as '-', plus ".state".
 * The directory is made when missing. Returns 0, or -1 when there is no such directory. */
int sy_switch_default_state_path(const char *admin_socket, char *out, size_t cap);

/* Admin commands. A long command (cutover, rollback) streams progress lines to a and ends with
 * its report; it returns NULL then. Otherwise the reply object is returned. */
struct json_object *sy_switch_cmd_cutover(struct sy_proxy *p, struct sy_admin_conn *a, int argc,
                                          char **argv, int rollback);
struct json_object *sy_switch_cmd_commit(struct sy_proxy *p, int argc, char **argv);
/* Adds the switch's part to status: per side health, role and lag; the switch and window. */
void sy_switch_status(struct sy_proxy *p, struct json_object *status);
/* Whether a cutover or rollback (or its dry run) is under way. */
int sy_switch_running(struct sy_proxy *p);
/* The admin connection went away: stop streaming to it (the switch goes on). */
void sy_switch_forget_admin(struct sy_proxy *p, struct sy_admin_conn *a);

/* Reports from the protocol plug-in about one session's move. */
void sy_switch_standby_ready(struct sy_session *sess);
void sy_switch_standby_failed(struct sy_session *sess, const char *reason);
/* unmovable: what the session holds that cannot move (NULL if nothing). */
void sy_switch_move_prepared(struct sy_session *sess, const char *unmovable);
/* The session's server said idle and the relay forwarded it (sess->warm_read == 1). */
void sy_switch_idle_point(struct sy_session *sess);
/* The warm-up read (move_warm_read) is over. */
void sy_switch_warm_read_done(struct sy_session *sess);
/* A session is closing (forget it in the counts). */
void sy_switch_session_closed(struct sy_session *sess);

/* admin.c: sends one JSON line (takes o) to a waiting connection; finish ends its command. */
void sy_admin_send(struct sy_admin_conn *a, struct json_object *o);

/* A side's control connection settings, copied out of the config: a thread uses them while a
 * reload may change the config. */
struct sy_ctl_target {
    char host[256], user[64], password[256], dbname[64], sslmode[16], ca[1024];
    int port;
};
void sy_ctl_target_fill(struct sy_ctl_target *t, const struct sy_config *cfg, enum sy_side s);
/* For sy_pgctl_connect; pointers into t. dbname NULL: t's (control_database). */
struct sy_pgctl_target sy_ctl_target_of(const struct sy_ctl_target *t, enum sy_side s,
                                        const char *dbname, int connect_timeout_s);

#endif
