#!/usr/bin/env bash
# Integration-test fixture: two throwaway PostgreSQL servers, "blue" and "green" (15, or green on
# another major version: GREEN_PG_BIN).
#
#   pg_cluster.sh start DIR   creates DIR/blue and DIR/green (initdb, trust auth, superuser
#                             postgres, database app), starts both on free ports on 127.0.0.1
#                             and writes DIR/env
#   pg_cluster.sh stop DIR    stops both servers and removes DIR
#
# DIR/env holds plain KEY=VALUE lines (no quotes, no export) that a shell can source and C code
# can parse: BLUE_HOST, BLUE_PORT, GREEN_HOST, GREEN_PORT, PGUSER, PG_BIN, TEST_DIR, plus
# BLUE_DATA/GREEN_DATA, BLUE_LOG/GREEN_LOG, BLUE_SOCKET_DIR/GREEN_SOCKET_DIR and GREEN_PG_BIN.
#
# As root the servers run as the postgres system user (PostgreSQL refuses root) and DIR is
# handed to it. Environment: PG_BIN (default /usr/lib/postgresql/15/bin): blue's server binaries
# and every client tool; GREEN_PG_BIN (default PG_BIN): green's server binaries (initdb, pg_ctl,
# postgres), e.g. PostgreSQL 17 from tests/support/pg17.sh. Client tools stay PG_BIN's.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/support/pglib.sh
. "$here/pglib.sh"

SIDES=(blue green)
# Every server this script stops: a standby of blue that pg_replicate.sh physical may have added
# goes first.
SERVERS=(standby blue green)

# side_bin SIDE: the directory of SIDE's server binaries (green's may be another version; a
# standby is a copy of blue).
side_bin() {
    if [ "$1" = green ]; then
        echo "${GREEN_PG_BIN:-$PG_BIN}"
    else
        echo "$PG_BIN"
    fi
}

# green_bin_from_env DIR: GREEN_PG_BIN as DIR/env recorded it, unless the environment sets it
# (stop must use the binaries the servers were started with).
green_bin_from_env() {
    if [ -z "${GREEN_PG_BIN:-}" ] && [ -f "$1/env" ]; then
        GREEN_PG_BIN=$(sed -n 's/^GREEN_PG_BIN=//p' "$1/env" | tail -n 1)
    fi
}

usage() {
    echo "usage: $(basename "$0") start|stop DIR" >&2
    exit 2
}

# Absolute, normalised DIR; refuses paths a plain KEY=VALUE env file could not carry.
resolve_dir() {
    local dir
    dir=$(realpath -m -- "$1")
    case "$dir" in
    / | /tmp | /root | /home | /usr | /var | /etc)
        pglib_die "refusing to use $dir as a test directory"
        ;;
    esac
    if ! [[ "$dir" =~ ^[A-Za-z0-9_./+-]+$ ]]; then
        pglib_die "test directory '$dir' may only contain letters, digits and _ . / + - (it is written unquoted into DIR/env)"
    fi
    echo "$dir"
}

# Stops whatever servers an earlier run left in DIR and removes it. Refuses to delete a
# non-empty directory that does not look like ours.
clear_dir() {
    local dir=$1 side entry ok=0
    [ -e "$dir" ] || return 0
    [ -d "$dir" ] || pglib_die "$dir exists and is not a directory"
    green_bin_from_env "$dir"
    for entry in "$dir"/* "$dir"/.[!.]*; do
        [ -e "$entry" ] || continue
        case "$(basename "$entry")" in
        blue | green | standby | blue.* | green.* | standby.* | env | env.tmp | .socket_dirs) ;;
        *) pglib_die "$dir holds $(basename "$entry"), which this script did not create; remove $dir or choose another directory" ;;
        esac
    done
    for side in "${SERVERS[@]}"; do
        if [ -d "$dir/$side" ] && pglib_pg_running "$dir/$side"; then
            pglib_log "stopping the $side server left running in $dir/$side by an earlier run"
            PG_BIN=$(side_bin "$side") pglib_pg_stop "$dir/$side" "$dir/$side.log" immediate || ok=1
        fi
    done
    [ "$ok" -eq 0 ] || pglib_die "could not stop the servers left in $dir"
    remove_socket_dirs "$dir"
    rm -rf -- "$dir"
}

# Removes the short /tmp socket directories recorded in DIR/.socket_dirs.
remove_socket_dirs() {
    local dir=$1 s
    [ -f "$dir/.socket_dirs" ] || return 0
    while IFS= read -r s; do
        case "$s" in
        /tmp/sypg.*) rm -rf -- "$s" ;;
        esac
    done <"$dir/.socket_dirs"
}

# init_side DIR SIDE PORT: initdb and configuration for one side (runs in the background).
# Both servers take TLS (the test CA's localhost certificate, from DIR/certs) and ask each test
# role for the password method its name says (listed by name: PostgreSQL 15's pg_hba has no
# regular expressions); postgres itself is trusted, as the other tests expect.
init_side() {
    local dir=$1 side=$2 port=$3 sockdir data bin
    bin=$(side_bin "$side")
    local PG_BIN=$bin
    data=$dir/$side
    pglib_initdb "$data" || return 1
    sockdir=$(cat "$dir/$side.socket_dir")
    pglib_configure "$data" "$port" "$sockdir" "ssl = on" "ssl_cert_file = 'server.crt'" \
        "ssl_key_file = 'server.key'" "password_encryption = 'scram-sha-256'" || return 1
    cp "$dir/certs/server.crt" "$dir/certs/server.key" "$data/"
    chmod 0600 "$data/server.key"
    cat >"$data/pg_hba.conf" <<'HBA'
local all all trust
host all postgres 127.0.0.1/32 trust
host all md5_user,md5_expired,md5_nologin,md5_ghost 127.0.0.1/32 md5
host all pw_user,pw_expired,pw_nologin,pw_ghost 127.0.0.1/32 password
host all all 127.0.0.1/32 scram-sha-256
HBA
    pglib_own "$data/server.crt" "$data/server.key" "$data/pg_hba.conf"
}

cmd_start() {
    local dir=$1 side t0 pids=() ports=() port sockdir failed=0 i
    t0=$EPOCHREALTIME
    pglib_check_tools || exit 1
    if [ -n "${GREEN_PG_BIN:-}" ] && [ "$GREEN_PG_BIN" != "$PG_BIN" ]; then
        PG_BIN=$GREEN_PG_BIN pglib_check_tools 2>/dev/null ||
            pglib_die "GREEN_PG_BIN=$GREEN_PG_BIN has no initdb, pg_ctl and postgres (for PostgreSQL 17: GREEN_PG_BIN=\$(tests/support/pg17.sh))"
    fi
    clear_dir "$dir"
    mkdir -p -- "$dir"
    chmod 0755 "$dir"
    pglib_own "$dir"
    pglib_owner_can_use "$dir" || pglib_die "cannot set up $dir for PostgreSQL"

    # Free ports, distinct for blue and green; socket directories that fit in sun_path.
    for side in "${SIDES[@]}"; do
        port=$(pglib_free_port "${ports[@]}") || pglib_die "no free port for the $side server"
        ports+=("$port")
        sockdir=$(pglib_socket_dir "$dir/$side") || pglib_die "cannot create a socket directory for $side"
        if [ "$sockdir" != "$dir/$side" ]; then
            echo "$sockdir" >>"$dir/.socket_dirs"
        fi
        echo "$sockdir" >"$dir/$side.socket_dir"
    done

    # The test CA and certificates, shared by both servers and the TLS tests.
    "$(dirname "${BASH_SOURCE[0]}")/make_certs.sh" "$dir/certs" >/dev/null ||
        pglib_die "could not make test certificates"
    chmod 0755 "$dir/certs"
    chmod 0644 "$dir/certs/"*.crt

    # initdb both at once: it is most of the start-up time.
    for i in "${!SIDES[@]}"; do
        init_side "$dir" "${SIDES[$i]}" "${ports[$i]}" &
        pids+=($!)
    done
    for i in "${!SIDES[@]}"; do
        wait "${pids[$i]}" || failed=1
    done
    [ "$failed" -eq 0 ] || pglib_die "initdb failed (see above)"

    # Start both; pglib_pg_start prints the final port (it moves if a port was taken meanwhile).
    for i in "${!SIDES[@]}"; do
        side=${SIDES[$i]}
        port=$(PG_BIN=$(side_bin "$side") pglib_pg_start "$dir/$side" "$dir/$side.log") || {
            cmd_stop_quiet "$dir"
            pglib_die "the $side server did not start (log: $dir/$side.log)"
        }
        ports[i]=$port
    done
    if [ "${ports[0]}" = "${ports[1]}" ]; then
        cmd_stop_quiet "$dir"
        pglib_die "blue and green ended up on the same port ${ports[0]}"
    fi

    for i in "${!SIDES[@]}"; do
        side=${SIDES[$i]}
        pglib_createdb "${ports[$i]}" app >/dev/null || {
            pglib_tail "$dir/$side.log"
            cmd_stop_quiet "$dir"
            pglib_die "could not create database app on the $side server"
        }
    done

    {
        echo "BLUE_HOST=127.0.0.1"
        echo "BLUE_PORT=${ports[0]}"
        echo "GREEN_HOST=127.0.0.1"
        echo "GREEN_PORT=${ports[1]}"
        echo "PGUSER=postgres"
        echo "PG_BIN=$PG_BIN"
        echo "TEST_DIR=$dir"
        echo "CERT_DIR=$dir/certs"
        echo "BLUE_DATA=$dir/blue"
        echo "GREEN_DATA=$dir/green"
        echo "BLUE_LOG=$dir/blue.log"
        echo "GREEN_LOG=$dir/green.log"
        echo "BLUE_SOCKET_DIR=$(cat "$dir/blue.socket_dir")"
        echo "GREEN_SOCKET_DIR=$(cat "$dir/green.socket_dir")"
        echo "GREEN_PG_BIN=$(side_bin green)"
    } >"$dir/env.tmp"
    mv -f -- "$dir/env.tmp" "$dir/env"

    printf '%s: blue on 127.0.0.1:%s, green on 127.0.0.1:%s (%.1f s); env in %s/env\n' \
        "$(basename "$0")" "${ports[0]}" "${ports[1]}" \
        "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')" "$dir"
}

# Best-effort stop after a failed start (the directory is kept for its logs).
cmd_stop_quiet() {
    local dir=$1 side
    for side in "${SERVERS[@]}"; do
        if [ -d "$dir/$side" ]; then
            PG_BIN=$(side_bin "$side") pglib_pg_stop "$dir/$side" "$dir/$side.log" immediate >/dev/null 2>&1 || true
        fi
    done
}

cmd_stop() {
    local dir=$1 side failed=0
    if [ ! -d "$dir" ]; then
        pglib_log "$dir does not exist; nothing to stop"
        return 0
    fi
    green_bin_from_env "$dir"
    for side in "${SERVERS[@]}"; do
        if [ -d "$dir/$side" ]; then
            PG_BIN=$(side_bin "$side") pglib_pg_stop "$dir/$side" "$dir/$side.log" fast || failed=1
        fi
    done
    if [ "$failed" -ne 0 ]; then
        pglib_die "could not stop the servers in $dir (left in place for inspection)"
    fi
    remove_socket_dirs "$dir"
    rm -rf -- "$dir"
    pglib_log "stopped the servers; removed $dir"
}

[ $# -eq 2 ] || usage
action=$1
dir=$(resolve_dir "$2")
case "$action" in
start) cmd_start "$dir" ;;
stop) cmd_stop "$dir" ;;
*) usage ;;
esac
