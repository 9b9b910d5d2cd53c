#!/usr/bin/env bash
# A PostgreSQL server for the tests, on loopback, with trust auth and a database `test`.
#
#   scripts/postgres.sh start   install (Debian's postgresql, as root) and start it if needed
#   scripts/postgres.sh url     the running server's line
#   scripts/postgres.sh stop    stop it
#
# stdout carries one eval-able line: TEST_POSTGRES_URL=postgresql+psycopg://…/test; progress and
# errors go to stderr. `start` is idempotent: a running server gets the same line again.
#
# On Debian (as root) it keeps a cluster of its own, `expertbot` (pg_createcluster), so the
# machine's `main` cluster and its pg_hba.conf stay as they are; that cluster trusts loopback
# connections and runs without fsync (test data only). Elsewhere (a laptop without apt or
# root), name a server you have with TEST_POSTGRES_URL=postgresql+psycopg://user@host:port/db:
# `start` checks that it answers and prints it.
set -euo pipefail

CLUSTER="${EXPERTBOT_PG_CLUSTER:-expertbot}"
DB=test

say() { echo "postgres.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

cmd="${1:-}"
case "$cmd" in start | stop | url) ;; *) die "usage: scripts/postgres.sh start|stop|url" ;; esac

# The libpq form of an SQLAlchemy URL (postgresql+psycopg:// → postgresql://).
libpq_url() { echo "${1/postgresql+psycopg:\/\//postgresql://}"; }

answers() { pg_isready -q -d "$(libpq_url "$1")" -t 3 2>/dev/null; }

if [[ -n "${TEST_POSTGRES_URL:-}" ]]; then
  # A server the user named: never started or stopped here, only checked.
  [[ "$cmd" == stop ]] && exit 0
  if command -v pg_isready >/dev/null 2>&1 && ! answers "$TEST_POSTGRES_URL"; then
    die "TEST_POSTGRES_URL does not answer: $(libpq_url "$TEST_POSTGRES_URL" | sed -E 's#//([^:@/]*):[^@/]*@#//\1:***@#')"
  fi
  echo "TEST_POSTGRES_URL=$TEST_POSTGRES_URL"
  exit 0
fi

# The newest PostgreSQL whose server is installed (a client alone leaves /usr/lib/postgresql/N too).
newest_version() {
  local bin
  for bin in /usr/lib/postgresql/*/bin/postgres; do
    [[ -x "$bin" ]] && basename "$(dirname "$(dirname "$bin")")"
  done | sort -V | tail -n 1
}

install_postgres() {
  [[ -n "$(newest_version)" ]] && command -v pg_createcluster >/dev/null 2>&1 && return 0
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    die "no PostgreSQL server here and no way to install one (needs apt-get as root); start one and set TEST_POSTGRES_URL=postgresql+psycopg://user@host:port/db"
  fi
  say "installing Debian's postgresql…"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends postgresql >&2; then
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends postgresql >&2
  fi
  [[ -n "$(newest_version)" ]] || die "apt-get installed no PostgreSQL server"
}

cluster_field() {  # the field N (1-based) of our cluster's line in pg_lsclusters
  pg_lsclusters --no-header 2>/dev/null | awk -v c="$CLUSTER" -v f="$1" '$2 == c { print $f; exit }'
}

url_line() { echo "TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$(cluster_field 3)/$DB"; }

case "$cmd" in
  start)
    install_postgres
    if [[ -z "$(cluster_field 2)" ]]; then
      version="$(newest_version)"
      say "creating PostgreSQL $version cluster '$CLUSTER' (trust on loopback, no fsync: test data only)"
      pg_createcluster --start-conf=manual "$version" "$CLUSTER" -- \
        --auth-local=trust --auth-host=trust >&2
      cat >"/etc/postgresql/$version/$CLUSTER/conf.d/expertbot.conf" <<'CONF'
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
    fi
    version="$(cluster_field 1)"
    if [[ "$(cluster_field 4)" != online ]]; then
      say "starting PostgreSQL $version cluster '$CLUSTER' on 127.0.0.1:$(cluster_field 3)"
      pg_ctlcluster --skip-systemctl-redirect "$version" "$CLUSTER" start >&2
    fi
    port="$(cluster_field 3)"
    for _ in $(seq 1 100); do
      pg_isready -q -h 127.0.0.1 -p "$port" && break
      sleep 0.1
    done
    pg_isready -q -h 127.0.0.1 -p "$port" || die "PostgreSQL did not start (pg_lsclusters; its log is in /var/log/postgresql)"
    if [[ "$(psql -h 127.0.0.1 -p "$port" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]]; then
      psql -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE $DB" >&2
    fi
    url_line
    ;;
  url)
    [[ "$(cluster_field 4)" == online ]] || die "PostgreSQL cluster '$CLUSTER' is not running (scripts/postgres.sh start)"
    url_line
    ;;
  stop)
    if [[ "$(cluster_field 4)" == online ]]; then
      pg_ctlcluster --skip-systemctl-redirect "$(cluster_field 1)" "$CLUSTER" stop >&2
      say "stopped PostgreSQL cluster '$CLUSTER'"
    fi
    ;;
esac
