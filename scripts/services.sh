#!/usr/bin/env bash
# Makes Postgres and Redis available at DATABASE_URL and REDIS_URL, then makes sure the application
# database (the dbname in DATABASE_URL) exists. Idempotent: run it as often as you like.
#
# For each service, in order:
#   1. something already answers at the URL's host and port: reuse it;
#   2. a Docker engine is reachable: `docker compose up -d <service>` from docker-compose.yml
#      (published on the URL's port);
#   3. otherwise (local host only): install Debian's package if missing and start it
#      (pg_ctlcluster for Postgres, a daemonised redis-server on the URL's port for Redis).
# Then it waits (JOBQ_SERVICES_TIMEOUT seconds, default 60) for the service to answer.
# Prints one line per service on stdout; progress and errors go to stderr; exits non-zero on failure.
#
# Usage: scripts/services.sh          or   source scripts/services.sh
# Sourcing also exports DATABASE_URL and REDIS_URL (with their defaults) into the calling shell.
# DB_SECRET_ARN is not consulted: local work always goes through DATABASE_URL.

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
  # Sourced: run the real work in a child bash so that `set -e` and `exit` stay out of the caller.
  export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/jobq}"
  export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
  bash "${BASH_SOURCE[0]}" "$@"
  return $?
fi

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="$REPO/.jobq-run"
DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/jobq}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
TIMEOUT="${JOBQ_SERVICES_TIMEOUT:-60}"

log() { echo "services: $*" >&2; }
die() { echo "services: error: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------------
# URLs

url_decode() { local s="${1//+/ }"; printf '%b' "${s//%/\\x}"; }

pg_re='^postgres(ql)?://(([^:@/]*)(:([^@/]*))?@)?([^:/?]*)(:([0-9]+))?(/([^?]*))?(\?.*)?$'
[[ "$DATABASE_URL" =~ $pg_re ]] || die "cannot parse DATABASE_URL (expected postgres://user:password@host:port/dbname)"
PG_USER="$(url_decode "${BASH_REMATCH[3]:-postgres}")"
PG_PASS="$(url_decode "${BASH_REMATCH[5]:-}")"
PG_HOST="${BASH_REMATCH[6]:-127.0.0.1}"
PG_PORT="${BASH_REMATCH[8]:-5432}"
PG_DB="$(url_decode "${BASH_REMATCH[10]:-}")"
PG_DB="${PG_DB:-$PG_USER}"
PG_QUERY="${BASH_REMATCH[11]:-}"
PG_USERINFO="${BASH_REMATCH[2]:-}"
# The same server, but the maintenance database: where CREATE DATABASE runs.
PG_ADMIN_URL="postgres://${PG_USERINFO}${PG_HOST}:${PG_PORT}/postgres${PG_QUERY}"
[[ "$PG_DB" =~ ^[A-Za-z0-9_-]+$ ]] || die "DATABASE_URL: database name '$PG_DB' has characters this script does not quote"

redis_re='^rediss?://(([^:@/]*)(:([^@/]*))?@)?([^:/?]*)(:([0-9]+))?(/([0-9]*))?(\?.*)?$'
[[ "$REDIS_URL" =~ $redis_re ]] || die "cannot parse REDIS_URL (expected redis://host:port)"
REDIS_PASS="$(url_decode "${BASH_REMATCH[4]:-}")"
REDIS_HOST="${BASH_REMATCH[5]:-127.0.0.1}"
REDIS_PORT="${BASH_REMATCH[7]:-6379}"

is_local() { [[ -z "$1" || "$1" == localhost || "$1" == 127.* || "$1" == "::1" || "$1" == "[::1]" ]]; }
tcp_host() { if [[ -z "$1" || "$1" == localhost ]]; then echo 127.0.0.1; else echo "$1"; fi; }

# ---------------------------------------------------------------------------------------------------
# Probes

# shellcheck disable=SC2016 # expanded by the inner bash
tcp_open() { timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$(tcp_host "$1")" "$2" 2>/dev/null; }

pg_answers() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h "$(tcp_host "$PG_HOST")" -p "$PG_PORT" -t 3
  else
    tcp_open "$PG_HOST" "$PG_PORT"
  fi
}

redis_answers() {
  if command -v redis-cli >/dev/null 2>&1; then
    local out
    local auth=()
    [[ -n "$REDIS_PASS" ]] && auth=(env REDISCLI_AUTH="$REDIS_PASS")
    out="$("${auth[@]}" timeout 5 redis-cli -h "$(tcp_host "$REDIS_HOST")" -p "$REDIS_PORT" ping 2>&1 || true)"
    [[ "$out" == PONG* || "$out" == *NOAUTH* ]]
  else
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 3 bash -c '
      exec 3<>"/dev/tcp/$0/$1" || exit 1
      printf "PING\r\n" >&3
      IFS= read -r line <&3 || exit 1
      [[ "$line" == +PONG* || "$line" == -NOAUTH* ]]' "$(tcp_host "$REDIS_HOST")" "$REDIS_PORT" 2>/dev/null
  fi
}

wait_until() { # name probe
  local name="$1" probe="$2" deadline=$((SECONDS + TIMEOUT))
  until "$probe"; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
  log "$name answers"
}

# ---------------------------------------------------------------------------------------------------
# Installing and starting

SUDO=()
if [[ "$(id -u)" != 0 ]]; then
  command -v sudo >/dev/null 2>&1 || die "not root and sudo is missing: cannot install or start services"
  SUDO=(sudo)
fi

as_postgres() { # run a command as the postgres OS user
  if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

APT_UPDATED=0
apt_install() { # packages...
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand, or start Docker"
  if ((APT_UPDATED == 0)); then
    log "apt-get update"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
  fi
  log "apt-get install -y $*"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 || die "apt-get install $* failed"
}

COMPOSE=()
docker_usable() {
  command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1 || return 1
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose -f "$REPO/docker-compose.yml")
  elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose -f "$REPO/docker-compose.yml")
  else
    return 1
  fi
}

compose_up() { # service
  # docker-compose.yml publishes on these ports (bound to 127.0.0.1).
  JOBQ_PG_PORT="$PG_PORT" JOBQ_REDIS_PORT="$REDIS_PORT" "${COMPOSE[@]}" up -d "$1" >&2
}

USED_DOCKER_PG=0

start_postgres() { # sets PG_WHAT
  if docker_usable; then
    log "starting postgres with ${COMPOSE[*]}"
    compose_up postgres || die "docker compose up postgres failed"
    USED_DOCKER_PG=1
    PG_WHAT="started with docker compose"
    return
  fi
  is_local "$PG_HOST" || die "nothing answers at $PG_HOST:$PG_PORT and it is not a local address: start Postgres there, or fix DATABASE_URL"
  local how="started"
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    apt_install postgresql
    how="installed and started"
    # The package's post-install may already have started its default cluster.
    if pg_answers; then PG_WHAT="$how (Debian package)"; return; fi
  fi
  local version name
  read -r version name < <(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }') || true
  if [[ -z "${version:-}" ]]; then
    # shellcheck disable=SC2012 # version directories only
    version="$(ls /usr/lib/postgresql | sort -V | tail -n1)"
    [[ -n "$version" ]] || die "no PostgreSQL server version found under /usr/lib/postgresql"
    if pg_lsclusters -h 2>/dev/null | awk '$2 == "main" { f = 1 } END { exit !f }'; then
      name="jobq$PG_PORT"
    else
      name="main"
    fi
    log "creating cluster $version/$name on port $PG_PORT"
    "${SUDO[@]}" pg_createcluster "$version" "$name" -p "$PG_PORT" >&2 || die "pg_createcluster $version $name failed"
  fi
  log "pg_ctlcluster $version $name start"
  "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start >&2 ||
    pg_answers || die "pg_ctlcluster $version $name start failed (see /var/log/postgresql/)"
  PG_WHAT="$how (cluster $version/$name)"
}

start_redis() { # sets REDIS_WHAT
  if docker_usable; then
    log "starting redis with ${COMPOSE[*]}"
    compose_up redis || die "docker compose up redis failed"
    REDIS_WHAT="started with docker compose"
    return
  fi
  is_local "$REDIS_HOST" || die "nothing answers at $REDIS_HOST:$REDIS_PORT and it is not a local address: start Redis there, or fix REDIS_URL"
  local how="started"
  if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
    how="installed and started"
    # The package may have started its own instance on the default port.
    if redis_answers; then REDIS_WHAT="$how (Debian package)"; return; fi
  fi
  mkdir -p "$RUN_DIR"
  local bind="$REDIS_HOST" args=()
  [[ -z "$bind" || "$bind" == localhost ]] && bind="127.0.0.1"
  bind="${bind#[}"; bind="${bind%]}"
  [[ -n "$REDIS_PASS" ]] && args+=(--requirepass "$REDIS_PASS")
  log "redis-server --daemonize yes --bind $bind --port $REDIS_PORT"
  redis-server --daemonize yes --bind "$bind" --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$RUN_DIR" --pidfile "$RUN_DIR/redis-$REDIS_PORT.pid" --logfile "$RUN_DIR/redis-$REDIS_PORT.log" \
    "${args[@]}" >&2 || die "redis-server failed to start (see $RUN_DIR/redis-$REDIS_PORT.log)"
  REDIS_WHAT="$how (redis-server, pid file $RUN_DIR/redis-$REDIS_PORT.pid)"
}

# ---------------------------------------------------------------------------------------------------
# The application database

pg_sql() { # sql: run on the maintenance database as the URL's user, print tuples only
  if command -v psql >/dev/null 2>&1; then
    PGCONNECT_TIMEOUT=5 psql "$PG_ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -Atc "$1"
  else
    "${COMPOSE[@]}" exec -T postgres psql -U "$PG_USER" -d postgres -X -q -v ON_ERROR_STOP=1 -Atc "$1"
  fi
}

sql_literal() { printf "'%s'" "${1//\'/\'\'}"; }

# A freshly installed Debian cluster asks for a password on TCP connections, and its roles have none:
# give the URL's role the URL's password through the local socket, as the postgres OS user.
fix_pg_login() {
  is_local "$PG_HOST" && command -v psql >/dev/null 2>&1 && id postgres >/dev/null 2>&1 || return 1
  local pass="${PG_PASS:-postgres}"
  log "setting the password of role $PG_USER through the local socket"
  as_postgres psql -X -q -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 -c "DO \$\$ BEGIN
      IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $(sql_literal "$PG_USER")) THEN
        EXECUTE format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $(sql_literal "$PG_USER"), $(sql_literal "$pass"));
      ELSE
        EXECUTE format('CREATE ROLE %I WITH LOGIN CREATEDB PASSWORD %L', $(sql_literal "$PG_USER"), $(sql_literal "$pass"));
      END IF;
    END \$\$;" >&2
}

ensure_database() { # sets DB_WHAT
  local exists err
  if ! command -v psql >/dev/null 2>&1 && ((USED_DOCKER_PG == 0)); then
    apt_install postgresql-client
  fi
  if ! err="$(pg_sql "SELECT 1" 2>&1)"; then
    if [[ "$err" == *"password authentication failed"* || "$err" == *"no password supplied"* || "$err" == *"does not exist"* ]] && fix_pg_login; then
      err="$(pg_sql "SELECT 1" 2>&1)" || die "cannot log in to Postgres with DATABASE_URL: $err"
    else
      die "cannot log in to Postgres with DATABASE_URL: $err"
    fi
  fi
  exists="$(pg_sql "SELECT 1 FROM pg_database WHERE datname = $(sql_literal "$PG_DB")")"
  if [[ "$exists" == 1 ]]; then
    DB_WHAT="database $PG_DB exists"
    return
  fi
  # A concurrent run may win the race: "already exists" is fine.
  if err="$(pg_sql "CREATE DATABASE \"$PG_DB\"" 2>&1)" || [[ "$err" == *"already exists"* ]]; then
    DB_WHAT="database $PG_DB created"
  else
    die "cannot create database $PG_DB: $err"
  fi
}

# ---------------------------------------------------------------------------------------------------

PG_WHAT="reused"
if ! pg_answers; then
  log "nothing answers at $PG_HOST:$PG_PORT"
  start_postgres
  wait_until postgres pg_answers || die "postgres did not answer at $PG_HOST:$PG_PORT within ${TIMEOUT}s"
fi
DB_WHAT=""
ensure_database
echo "postgres: $PG_WHAT at $PG_HOST:$PG_PORT; $DB_WHAT"

REDIS_WHAT="reused"
if ! redis_answers; then
  log "nothing answers at $REDIS_HOST:$REDIS_PORT"
  start_redis
  wait_until redis redis_answers ||
    die "redis did not answer at $REDIS_HOST:$REDIS_PORT within ${TIMEOUT}s (log: $RUN_DIR/redis-$REDIS_PORT.log, if started here)"
fi
echo "redis: $REDIS_WHAT at $REDIS_HOST:$REDIS_PORT"
