#!/usr/bin/env bash
# Runs the whole system locally:
#   - Postgres and Redis (scripts/services.sh: reuse, docker compose, or Debian packages),
#   - the tools (scripts/tools.sh: cargo-lambda in .venv-tools),
#   - one `cargo build --workspace`, so that the emulator starts the functions at once,
#   - the promoter (applies the migrations, then promotes, reaps, repairs and runs jobs),
#   - the HTTP functions and the worker function under `cargo lambda watch`, on the real API paths.
#
# Usage:
#   scripts/dev.sh            run in the foreground; Ctrl-C stops everything it started
#   scripts/dev.sh --detach   start, wait until the API answers, print, and return (PIDs in <run dir>/pids)
#   scripts/dev.sh --stop     stop what a detached run started
#
# Environment (all optional):
#   JOBQ_PORT                   emulator port (default 9000)
#   DATABASE_URL, REDIS_URL     default to the local services (see scripts/services.sh)
#   JOBQ_NAMESPACE              Redis key prefix (default jobq)
#   JOBQ_WORKER_CONCURRENCY     promoter job slots (default 4 here; 0 = maintenance only)
#   JOBQ_METRICS_ADDR           the promoter's /metrics (default 127.0.0.1:9464; off for none)
#   JOBQ_RUN_DIR                logs and PIDs (default <repo>/.jobq-run)
#   JOBQ_READY_TIMEOUT          seconds to wait for the API (default 300)
#   JOBQ_DASHBOARD_TOKEN        the dashboard's token (default: a new random one, printed at start)
#   CARGO_TARGET_DIR            default <repo>/target
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

usage() { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

MODE=run
case "${1:-}" in
  "") ;;
  --detach | -d) MODE=detach ;;
  --stop) MODE=stop ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
esac

RUN_DIR="${JOBQ_RUN_DIR:-$REPO/.jobq-run}"
PIDS="$RUN_DIR/pids"
PORT="${JOBQ_PORT:-9000}"
BASE="http://127.0.0.1:$PORT"

log() { echo "dev: $*" >&2; }
die() { echo "dev: error: $*" >&2; exit 1; }

alive() { kill -0 "$1" 2>/dev/null; }

# Every process is started as the leader of its own process group (setsid), so stopping the group
# also stops what it spawned (cargo's children, the emulator's function processes).
stop_all() {
  [[ -f "$PIDS" ]] || return 0
  local name pid live=()
  while read -r name pid; do
    [[ -n "${pid:-}" ]] || continue
    if alive "$pid"; then
      log "stopping $name (process group $pid)"
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      live+=("$pid")
    fi
  done <"$PIDS"
  local deadline=$((SECONDS + 15)) still
  while ((${#live[@]})); do
    still=()
    for pid in "${live[@]}"; do alive "$pid" && still+=("$pid"); done
    live=("${still[@]+"${still[@]}"}")
    ((${#live[@]})) || break
    if ((SECONDS >= deadline)); then
      for pid in "${live[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; done
      break
    fi
    sleep 0.2
  done
  rm -f "$PIDS"
}

if [[ "$MODE" == stop ]]; then
  if [[ -f "$PIDS" ]]; then
    stop_all
    echo "dev: stopped"
  else
    echo "dev: nothing to stop ($PIDS not found)"
  fi
  exit 0
fi

if [[ -f "$PIDS" ]]; then
  while read -r name pid; do
    if [[ -n "${pid:-}" ]] && alive "$pid"; then
      die "already running ($name, pid $pid; see $PIDS): run scripts/dev.sh --stop first, or set JOBQ_RUN_DIR"
    fi
  done <"$PIDS"
  rm -f "$PIDS"
fi

# shellcheck disable=SC2016 # expanded by the inner bash
port_busy() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null; }
port_busy "$PORT" && die "port $PORT is already in use: set JOBQ_PORT to a free port"

export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/jobq}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export JOBQ_NAMESPACE="${JOBQ_NAMESPACE:-jobq}"
export RUST_LOG="${RUST_LOG:-info}"
export JOBQ_LOG_FORMAT="${JOBQ_LOG_FORMAT:-text}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
# Local work reads the database from DATABASE_URL, never from Secrets Manager.
unset DB_SECRET_ARN
# The dashboard wants a token here too (it is never open): a new one each start unless given.
export JOBQ_DASHBOARD_TOKEN="${JOBQ_DASHBOARD_TOKEN:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}"

log "services"
bash "$REPO/scripts/services.sh" || die "Postgres/Redis are not available (see above)"

log "tools"
TOOLS_BIN="$(bash "$REPO/scripts/tools.sh" | tail -n1)" || die "scripts/tools.sh failed"
export PATH="$TOOLS_BIN:$PATH"

log "cargo build --workspace (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cargo build --workspace >&2 || die "cargo build --workspace failed"

mkdir -p "$RUN_DIR"
: >"$PIDS"
# Plain text in the log files.
export NO_COLOR=1

start_bg() { # name logfile command...
  local name="$1" logfile="$2"
  shift 2
  setsid "$@" >"$logfile" 2>&1 </dev/null &
  echo "$name $!" >>"$PIDS"
  log "started $name (pid $!, log $logfile)"
}

pid_of() { awk -v n="$1" '$1 == n { print $2 }' "$PIDS"; }

READY=0
# shellcheck disable=SC2317 # invoked by the trap
on_exit() {
  local rc=$?
  if [[ "$MODE" == run || "$READY" == 0 ]]; then
    stop_all
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- promoter: migrations first, then maintenance and job slots --------------------------------
JOBQ_WORKER_CONCURRENCY="${JOBQ_WORKER_CONCURRENCY:-4}" \
  start_bg promoter "$RUN_DIR/promoter.log" "$CARGO_TARGET_DIR/debug/jobq-promoter"

# The newest migration: the schema is complete once it is applied (they are applied one by one).
NEWEST_MIGRATION="$(ls migrations | sed -n 's/^V\([0-9]*\)__.*/\1/p' | sort -n | tail -n1)"
migrated() {
  grep -q "promoter started" "$RUN_DIR/promoter.log" 2>/dev/null && return 0
  command -v psql >/dev/null 2>&1 &&
    [[ "$(PGCONNECT_TIMEOUT=3 psql "$DATABASE_URL" -X -Atc \
      "SELECT EXISTS (SELECT FROM refinery_schema_history WHERE version = $NEWEST_MIGRATION)" 2>/dev/null)" == t ]]
}
deadline=$((SECONDS + 120))
until migrated; do
  alive "$(pid_of promoter)" || { tail -n 30 "$RUN_DIR/promoter.log" >&2; die "the promoter exited (log: $RUN_DIR/promoter.log)"; }
  ((SECONDS < deadline)) || die "the promoter did not apply the migrations within 120 s (log: $RUN_DIR/promoter.log)"
  sleep 0.5
done
log "migrations applied"

# --- functions under the emulator -------------------------------------------------------------
# The real API paths come from [workspace.metadata.lambda.watch.router] in Cargo.toml.
# No --timeout: cargo-lambda applies it to its Runtime API too, so it would answer every function's
# idle poll for the next event with an empty 408 after that many seconds (and could drop an
# invocation that arrives at that instant). The functions restart their runtime after such an
# answer (functions/src/runtime.rs), but without the timeout there is none to recover from.
start_bg watch "$RUN_DIR/watch.log" \
  cargo lambda watch --invoke-address 127.0.0.1 --invoke-port "$PORT"

http_status() { # method url body -> prints the HTTP status (000 when nothing answered)
  local auth=()
  [[ -n "${JOBQ_API_TOKEN:-}" ]] && auth=(-H "Authorization: Bearer $JOBQ_API_TOKEN")
  if command -v curl >/dev/null 2>&1; then
    curl -s -o /dev/null -w '%{http_code}' --max-time 60 -X "$1" -H 'Content-Type: application/json' \
      "${auth[@]+"${auth[@]}"}" --data "$3" "$2" 2>/dev/null || true
  else
    python3 - "$@" <<'PY'
import os, sys, urllib.error, urllib.request
method, url, body = sys.argv[1:4]
headers = {"Content-Type": "application/json"}
if os.environ.get("JOBQ_API_TOKEN"):
    headers["Authorization"] = "Bearer " + os.environ["JOBQ_API_TOKEN"]
try:
    with urllib.request.urlopen(urllib.request.Request(url, body.encode(), headers, method=method), timeout=60) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
PY
  fi
}

# A malformed body is refused with a 400 by the create-job function itself, and stores nothing:
# any answer from the function means the emulator, the router and the function all work.
log "waiting for POST $BASE/jobs (the first request starts the function)"
deadline=$((SECONDS + ${JOBQ_READY_TIMEOUT:-300}))
while :; do
  alive "$(pid_of watch)" || { tail -n 30 "$RUN_DIR/watch.log" >&2; die "cargo lambda watch exited (log: $RUN_DIR/watch.log)"; }
  alive "$(pid_of promoter)" || { tail -n 30 "$RUN_DIR/promoter.log" >&2; die "the promoter exited (log: $RUN_DIR/promoter.log)"; }
  status="$(http_status POST "$BASE/jobs" '{')"
  case "$status" in
    2?? | 400 | 401 | 403 | 413 | 415 | 422) break ;;
  esac
  if ((SECONDS >= deadline)); then
    tail -n 30 "$RUN_DIR/watch.log" >&2
    die "POST $BASE/jobs did not answer within ${JOBQ_READY_TIMEOUT:-300} s (last status $status; a 404 means no route or no such function binary: see the log above)"
  fi
  sleep 2
done
READY=1

cat <<EOF

jobq is running at $BASE   (namespace $JOBQ_NAMESPACE, promoter job slots ${JOBQ_WORKER_CONCURRENCY:-4})

  curl -s -X POST $BASE/jobs -H "Content-Type: application/json" -d '{"type":"TEST","payload":"hello"}' -w "\n"
  curl -s $BASE/jobs/<PASTE_JOBID_HERE> -w "\n"
  curl -s $BASE/dlq -w "\n"
  curl -s -X POST $BASE/jobs -H "Content-Type: application/json" -d '{"type":"TEST", "payload":"FAIL_TIMES=2"}' -w "\n"
  curl -s -X POST $BASE/jobs -H "Content-Type: application/json" -d '{"type":"TEST", "payload":"FAIL_ALWAYS"}' -w "\n"
  curl -s -X POST $BASE/dlq/<PASTE_JOBID_HERE>/requeue -w "\n"
  curl -s "$BASE/jobs?status=FAILED&limit=10" -w "\n"
  curl -s -X POST $BASE/jobs/<PASTE_JOBID_HERE>/cancel -w "\n"

  worker function:  PATH="$REPO/.venv-tools/bin:\$PATH" cargo lambda invoke worker --invoke-address 127.0.0.1 --invoke-port $PORT --data-file events/max-jobs.json
                    (cargo-lambda lives in .venv-tools/bin, not on your PATH)
  dashboard:        $BASE/dashboard   (token: $JOBQ_DASHBOARD_TOKEN)
  metrics:          curl -s http://${JOBQ_METRICS_ADDR:-127.0.0.1:9464}/metrics
  logs:             $RUN_DIR/promoter.log  $RUN_DIR/watch.log
EOF

if [[ "$MODE" == detach ]]; then
  echo "  stop:             scripts/dev.sh --stop   (PIDs in $PIDS)"
  trap - EXIT INT TERM
  exit 0
fi

echo "  stop:             Ctrl-C"
# Returns when either process exits (or on Ctrl-C/TERM, through the traps); then everything stops.
set +e
wait -n "$(pid_of promoter)" "$(pid_of watch)"
rc=$?
set -e
for name in promoter watch; do
  alive "$(pid_of "$name")" || log "$name exited (log: $RUN_DIR/$name.log)"
done
exit "$rc"
