#!/usr/bin/env bash
# Starts a private PostgreSQL server for the store tests: Debian packages,
# its own data directory, loopback only, trust authentication. Idempotent:
# installs only when missing, initialises only once, starts only when down,
# creates the database only when absent. Prints the connection URL last.
#
# Settings (environment): ROOMKIT_PG_PORT (54329), ROOMKIT_PG_DATA
# (/tmp/roomkit-pg-data), ROOMKIT_PG_DB (roomkit_test).
set -euo pipefail

PORT="${ROOMKIT_PG_PORT:-54329}"
DATA="${ROOMKIT_PG_DATA:-/tmp/roomkit-pg-data}"
DB="${ROOMKIT_PG_DB:-roomkit_test}"

# As root the server runs as the `postgres` user; otherwise as the caller,
# who then owns the data directory.
as_postgres() {
    if [ "$(id -u)" -ne 0 ]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        runuser -u postgres -- "$@"
    else
        su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
}

pg_bin() {
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    printf '%s' "$dir"
}

if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ]; then
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq postgresql >/dev/null
fi
BIN="$(pg_bin)"

if [ ! -s "$DATA/PG_VERSION" ]; then
    mkdir -p "$DATA"
    [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$DATA"
    chmod 700 "$DATA"
    as_postgres "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
fi

if ! as_postgres "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    as_postgres "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DATA -c max_connections=200 -c fsync=on" >/dev/null
fi

for _ in $(seq 1 60); do
    if "$BIN/pg_isready" -h 127.0.0.1 -p "$PORT" -q; then
        break
    fi
    sleep 0.5
done

if ! psql -h 127.0.0.1 -p "$PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
    psql -h 127.0.0.1 -p "$PORT" -U postgres -q -c "CREATE DATABASE \"$DB\""
fi

echo "postgres://postgres@127.0.0.1:$PORT/$DB"
