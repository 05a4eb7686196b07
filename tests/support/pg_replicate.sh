#!/usr/bin/env bash
# Integration-test fixture: replication between the servers that `pg_cluster.sh start DIR` made.
#
#   pg_replicate.sh logical DIR DB   database DB on blue and green, role sy_app (password
#                                    app-secret, the same SCRAM verifier on both), pgbench tables
#                                    and acks/ack_seq on blue, the schema copied to green,
#                                    publication sy_pub on blue and subscription sy_sub on green;
#                                    waits until every table is copied; appends REPL_DB, APP_USER
#                                    and APP_PASSWORD to DIR/env
#   pg_replicate.sh physical DIR     a streaming standby of blue in DIR/standby (pg_basebackup -R,
#                                    physical slot sy_standby) on a free port; appends
#                                    STANDBY_HOST, STANDBY_PORT, STANDBY_DATA, STANDBY_LOG and
#                                    STANDBY_SOCKET_DIR to DIR/env
#
# `pg_cluster.sh stop DIR` stops the standby too. Environment: PG_BIN, as for pg_cluster.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/support/pglib.sh
. "$here/pglib.sh"

APP_USER=sy_app
APP_PASSWORD=app-secret

usage() {
    echo "usage: $(basename "$0") logical DIR DB | physical DIR" >&2
    exit 2
}

# env_get DIR KEY: prints KEY's value from DIR/env (the last line wins).
env_get() {
    local v
    v=$(sed -n "s/^$2=//p" "$1/env" | tail -n 1)
    [ -n "$v" ] || pglib_die "$1/env has no $2; was it made by pg_cluster.sh start?"
    echo "$v"
}

# wait_for PORT DB SQL TIMEOUT_S WHAT: polls until SQL (as postgres) prints t.
wait_for() {
    local port=$1 db=$2 sql=$3 timeout=$4 what=$5 i out
    for ((i = 0; i < timeout * 10; i++)); do
        out=$(pglib_psql "$port" "$db" "$sql" 2>/dev/null || true)
        [ "$out" = t ] && return 0
        sleep 0.1
    done
    pglib_log "timed out after ${timeout} s waiting for $what"
    return 1
}

# psql_vars PORT DB NAME=VALUE... < SQL: runs SQL from stdin with psql variables, so that values
# reach the SQL as :'NAME' literals quoted by psql, never pasted into the text.
psql_vars() {
    local port=$1 db=$2 args=() kv
    shift 2
    for kv in "$@"; do
        args+=(-v "$kv")
    done
    PGCONNECT_TIMEOUT=10 "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" \
        -U postgres -d "$db" "${args[@]}"
}

cmd_logical() {
    local dir=$1 db=$2 blue green verifier out t0
    t0=$EPOCHREALTIME
    [[ "$db" =~ ^[a-z_][a-z0-9_]*$ ]] || pglib_die "database name '$db' must be a plain lower-case identifier"
    blue=$(env_get "$dir" BLUE_PORT)
    green=$(env_get "$dir" GREEN_PORT)

    pglib_createdb "$blue" "$db" || pglib_die "could not create database $db on blue"
    pglib_createdb "$green" "$db" || pglib_die "could not create database $db on green"

    # The application role: scram on blue, then the very same verifier on green (PostgreSQL stores
    # a password given in SCRAM verifier form as it is), so one client proof fits both servers.
    psql_vars "$blue" postgres "user=$APP_USER" "pw=$APP_PASSWORD" <<'SQL' || pglib_die "could not create role $APP_USER on blue"
SET password_encryption = 'scram-sha-256';
CREATE ROLE :"user" LOGIN PASSWORD :'pw';
SQL
    verifier=$(psql_vars "$blue" postgres "user=$APP_USER" <<'SQL'
SELECT rolpassword FROM pg_authid WHERE rolname = :'user';
SQL
    ) || pglib_die "could not read the verifier of $APP_USER on blue"
    [[ "$verifier" == SCRAM-SHA-256\$* ]] || pglib_die "blue did not store a SCRAM verifier for $APP_USER"
    psql_vars "$green" postgres "user=$APP_USER" "pw=$verifier" <<'SQL' || pglib_die "could not create role $APP_USER on green"
CREATE ROLE :"user" LOGIN PASSWORD :'pw';
SQL

    # The application's tables on blue. pgbench_history has no key: REPLICA IDENTITY FULL lets
    # an UPDATE or DELETE on it replicate instead of failing on blue.
    out=$("$PG_BIN/pgbench" -i -s 2 -q -h 127.0.0.1 -p "$blue" -U postgres "$db" 2>&1) || {
        echo "$out" >&2
        pglib_die "pgbench -i failed on blue"
    }
    psql_vars "$blue" "$db" "user=$APP_USER" <<'SQL' || pglib_die "could not create acks on blue"
CREATE SEQUENCE ack_seq;
CREATE TABLE acks (id bigint PRIMARY KEY DEFAULT nextval('ack_seq'), at timestamptz DEFAULT now());
ALTER SEQUENCE ack_seq OWNED BY acks.id;
ALTER TABLE pgbench_history REPLICA IDENTITY FULL;
GRANT ALL ON ALL TABLES IN SCHEMA public TO :"user";
GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO :"user";
SQL

    # The schema (with the grants: the role exists on green) to green.
    "$PG_BIN/pg_dump" -s -h 127.0.0.1 -p "$blue" -U postgres "$db" |
        PGCONNECT_TIMEOUT=10 "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$green" \
            -U postgres -d "$db" >/dev/null || pglib_die "could not copy the schema of $db from blue to green"

    # Blue's postgres is trusted on 127.0.0.1, so the subscription needs no password.
    pglib_psql "$blue" "$db" "CREATE PUBLICATION sy_pub FOR ALL TABLES" ||
        pglib_die "could not create publication sy_pub on blue"
    psql_vars "$green" "$db" "conn=host=127.0.0.1 port=$blue user=postgres dbname=$db" <<'SQL' || pglib_die "could not create subscription sy_sub on green"
CREATE SUBSCRIPTION sy_sub CONNECTION :'conn' PUBLICATION sy_pub;
SQL
    wait_for "$green" "$db" "SELECT count(*) > 0 AND bool_and(srsubstate = 'r') FROM pg_subscription_rel" 120 \
        "green's subscription sy_sub to copy every table" || {
        pglib_tail "$(env_get "$dir" GREEN_LOG)"
        pglib_die "the initial copy to green did not finish"
    }

    {
        echo "REPL_DB=$db"
        echo "APP_USER=$APP_USER"
        echo "APP_PASSWORD=$APP_PASSWORD"
    } >>"$dir/env"
    printf '%s: %s replicated from blue to green (publication sy_pub, subscription sy_sub; %.1f s)\n' \
        "$(basename "$0")" "$db" "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')"
}

cmd_physical() {
    local dir=$1 blue green blue_data data port sockdir t0 hba
    t0=$EPOCHREALTIME
    blue=$(env_get "$dir" BLUE_PORT)
    green=$(env_get "$dir" GREEN_PORT)
    blue_data=$(env_get "$dir" BLUE_DATA)
    data=$dir/standby
    [ ! -e "$data" ] || pglib_die "$data exists already"

    # pg_hba's "all" does not cover replication connections: let postgres stream from 127.0.0.1.
    hba=$blue_data/pg_hba.conf
    if ! grep -q '^host replication postgres 127.0.0.1/32 trust$' "$hba"; then
        echo "host replication postgres 127.0.0.1/32 trust" >>"$hba"
        pglib_psql "$blue" postgres "SELECT pg_reload_conf()" >/dev/null || pglib_die "could not reload blue's pg_hba.conf"
    fi

    pglib_as_owner "$PG_BIN/pg_basebackup" -D "$data" -R -X stream -C -S sy_standby \
        --checkpoint=fast -h 127.0.0.1 -p "$blue" -U postgres >"$dir/standby.basebackup.log" 2>&1 || {
        pglib_tail "$dir/standby.basebackup.log"
        pglib_die "pg_basebackup from blue failed"
    }

    # Its own port and socket directory (the copied postgresql.conf has blue's); last setting wins.
    port=$(pglib_free_port "$blue" "$green") || pglib_die "no free port for the standby"
    sockdir=$(pglib_socket_dir "$data") || pglib_die "cannot create a socket directory for the standby"
    if [ "$sockdir" != "$data" ]; then
        echo "$sockdir" >>"$dir/.socket_dirs"
    fi
    {
        echo "port = $port"
        echo "unix_socket_directories = '$sockdir'"
    } >>"$data/postgresql.conf"
    port=$(pglib_pg_start "$data" "$dir/standby.log") || pglib_die "the standby did not start (log: $dir/standby.log)"
    wait_for "$blue" postgres "SELECT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = 'sy_standby' AND active)" 60 \
        "the standby to stream from blue" || {
        pglib_tail "$dir/standby.log"
        pglib_die "the standby does not stream from blue"
    }

    {
        echo "STANDBY_HOST=127.0.0.1"
        echo "STANDBY_PORT=$port"
        echo "STANDBY_DATA=$data"
        echo "STANDBY_LOG=$dir/standby.log"
        echo "STANDBY_SOCKET_DIR=$sockdir"
    } >>"$dir/env"
    printf '%s: standby of blue on 127.0.0.1:%s (%.1f s)\n' "$(basename "$0")" "$port" \
        "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')"
}

[ $# -ge 2 ] || usage
action=$1
dir=$(realpath -m -- "$2")
[ -f "$dir/env" ] || pglib_die "$dir/env not found: run pg_cluster.sh start $dir first"
case "$action" in
logical)
    [ $# -eq 3 ] || usage
    cmd_logical "$dir" "$3"
    ;;
physical)
    [ $# -eq 2 ] || usage
    cmd_physical "$dir"
    ;;
*) usage ;;
esac
