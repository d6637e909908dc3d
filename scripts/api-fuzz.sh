#!/usr/bin/env bash
# Fuzzes the running HTTP API against openapi.yaml with schemathesis.
#
# Starts `scripts/dev.sh --detach` on a free port with its own database (jobq_fuzz_<random>, created
# here and dropped at the end) and its own Redis namespace (its keys deleted at the end with SCAN +
# DEL; never FLUSHDB), runs `schemathesis run` over every operation of openapi.yaml, stops the
# system, cleans up, and exits non-zero when schemathesis reports a failure.
#
# Usage: scripts/api-fuzz.sh
# Environment (all optional):
#   DATABASE_URL, REDIS_URL      the servers (default the local ones; any database on the server)
#   JOBQ_FUZZ_MAX_EXAMPLES       test cases per operation and phase (default 50)
#   JOBQ_FUZZ_MAX_TIME           time budget of the schemathesis run, in seconds (default 150)
#   JOBQ_FUZZ_SEED               the seed (default fixed, so CI runs the same cases); strings are
#                                generated as UTF-8: `cargo lambda watch` answers non-UTF-8 bodies
#                                with its own 500 before the function sees them
#   JOBQ_FUZZ_MODE               positive (default), negative or all: what schemathesis generates
#   JOBQ_FUZZ_KEEP=1             keep the run directory (logs, report) and the database
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

log() { echo "api-fuzz: $*" >&2; }

BASE_DB_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/jobq}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
MAX_EXAMPLES="${JOBQ_FUZZ_MAX_EXAMPLES:-50}"
MAX_TIME="${JOBQ_FUZZ_MAX_TIME:-150}"
# Valid requests only by default: with invalid bytes in a body, `cargo lambda watch` itself breaks
# (it answers 500 in text/plain and hands the function an invocation without a request id, which
# crashes the Lambda runtime before any handler runs, then 408s while it restarts). Invalid input is
# covered in-process, against the real handlers, by functions/tests/properties.rs.
MODE="${JOBQ_FUZZ_MODE:-positive}"
TAG="$(tr -dc 'a-z0-9' </dev/urandom | head -c 8 || true)"
DBNAME="jobq_fuzz_$TAG"
NAMESPACE="jobq_fuzz_$TAG"
RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/jobq-fuzz-XXXXXX")"

# `url` with its database replaced (query string kept).
with_database() {
  python3 - "$1" "$2" <<'PY'
import sys, urllib.parse
parts = urllib.parse.urlsplit(sys.argv[1])
print(urllib.parse.urlunsplit(parts._replace(path="/" + sys.argv[2])))
PY
}
ADMIN_URL="$(with_database "$BASE_DB_URL" postgres)"
TEST_URL="$(with_database "$BASE_DB_URL" "$DBNAME")"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
PORT="$(free_port)"

# --- tools -----------------------------------------------------------------------------------------
bash "$REPO/scripts/tools.sh" >/dev/null
VENV_BIN="$REPO/.venv-tools/bin"
if [[ ! -x "$VENV_BIN/schemathesis" ]]; then
  log "installing schemathesis into .venv-tools"
  "$VENV_BIN/pip" install --quiet --disable-pip-version-check "schemathesis==4.32.5"
fi
log "$("$VENV_BIN/schemathesis" --version)"

# --- cleanup, whatever happens -----------------------------------------------------------------------
CREATED_DB=0
STARTED=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if ((STARTED)); then
    log "scripts/dev.sh --stop"
    JOBQ_RUN_DIR="$RUN_DIR" JOBQ_PORT="$PORT" bash "$REPO/scripts/dev.sh" --stop >&2 || true
  fi
  # Our namespace's keys only: every key carries the hash tag {namespace}.
  local cursor=0 deleted=0 keys
  while :; do
    # Piped, redis-cli prints the next cursor on the first line, then one key per line.
    mapfile -t keys < <(redis-cli -u "$REDIS_URL" SCAN "$cursor" MATCH "{$NAMESPACE}:*" COUNT 1000 2>/dev/null)
    ((${#keys[@]})) || break
    cursor="${keys[0]}"
    if ((${#keys[@]} > 1)); then
      redis-cli -u "$REDIS_URL" DEL "${keys[@]:1}" >/dev/null 2>&1 && deleted=$((deleted + ${#keys[@]} - 1))
    fi
    [[ "$cursor" == 0 ]] && break
  done
  log "deleted $deleted Redis keys of namespace $NAMESPACE"
  if ((CREATED_DB)) && [[ "${JOBQ_FUZZ_KEEP:-}" != 1 ]]; then
    psql "$ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS \"$DBNAME\" WITH (FORCE)" >/dev/null &&
      log "dropped database $DBNAME"
  fi
  if [[ "${JOBQ_FUZZ_KEEP:-}" == 1 ]]; then
    log "kept $RUN_DIR and database $DBNAME"
  else
    rm -rf "$RUN_DIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the system --------------------------------------------------------------------------------------
DATABASE_URL="$BASE_DB_URL" REDIS_URL="$REDIS_URL" bash "$REPO/scripts/services.sh" >&2
log "creating database $DBNAME"
psql "$ADMIN_URL" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$DBNAME\"" >/dev/null
CREATED_DB=1

log "scripts/dev.sh --detach on port $PORT, namespace $NAMESPACE, run dir $RUN_DIR"
STARTED=1
if ! JOBQ_PORT="$PORT" JOBQ_RUN_DIR="$RUN_DIR" DATABASE_URL="$TEST_URL" REDIS_URL="$REDIS_URL" \
  JOBQ_NAMESPACE="$NAMESPACE" bash "$REPO/scripts/dev.sh" --detach >"$RUN_DIR/dev.out" 2>&1; then
  tail -n 40 "$RUN_DIR/dev.out" >&2
  log "scripts/dev.sh --detach failed"
  echo "0 passed, 1 failed"
  exit 1
fi

# Warm every function once: the emulator starts a function on its first request.
for path in "GET /jobs/00000000-0000-0000-0000-000000000000" "GET /dlq" \
  "POST /dlq/00000000-0000-0000-0000-000000000000/requeue" "POST /jobs/batch"; do
  curl -s -o /dev/null --max-time 60 -X "${path%% *}" -H 'Content-Type: application/json' --data '{' \
    "http://127.0.0.1:$PORT${path#* }" || true
done

# --- schemathesis ------------------------------------------------------------------------------------
# The checks this version offers, out of the four the fuzzing is about.
WANTED=(not_a_server_error status_code_conformance content_type_conformance response_schema_conformance)
HELP="$("$VENV_BIN/schemathesis" run --help)"
CHECKS=()
for check in "${WANTED[@]}"; do
  grep -q "$check" <<<"$HELP" && CHECKS+=("$check")
done
CHECKS_CSV="$(IFS=,; echo "${CHECKS[*]}")"
if grep -q -- '--max-examples' <<<"$HELP"; then
  EXAMPLES=(--max-examples "$MAX_EXAMPLES")
else
  EXAMPLES=(--hypothesis-max-examples "$MAX_EXAMPLES")
fi
TIME_LIMIT=()
grep -q -- '--max-time' <<<"$HELP" && TIME_LIMIT=(--max-time "$MAX_TIME")
# A fixed seed by default, so that CI runs the same cases every time; set JOBQ_FUZZ_SEED to explore.
SEED=(--seed "${JOBQ_FUZZ_SEED:-20261123}")
AUTH=()
[[ -n "${JOBQ_API_TOKEN:-}" ]] && AUTH=(-H "Authorization: Bearer $JOBQ_API_TOKEN")

log "schemathesis run openapi.yaml --url http://127.0.0.1:$PORT --checks $CHECKS_CSV ${EXAMPLES[*]} ${TIME_LIMIT[*]}"
set +e
# From the run directory, so that its cache (.schemathesis/) does not land in the repository.
(cd "$RUN_DIR" && NO_COLOR=1 timeout --signal=INT $((MAX_TIME + 120)) "$VENV_BIN/schemathesis" run "$REPO/openapi.yaml" \
  --url "http://127.0.0.1:$PORT" \
  --checks "$CHECKS_CSV" \
  "${EXAMPLES[@]}" "${TIME_LIMIT[@]}" "${SEED[@]}" "${AUTH[@]+"${AUTH[@]}"}" \
  --workers 1 \
  --mode "$MODE" \
  --generation-codec utf-8 \
  --request-timeout 40 \
  --suppress-health-check all \
  --report junit --report-junit-path "$RUN_DIR/junit.xml" \
  2>&1) | tee "$RUN_DIR/schemathesis.out"
RC=${PIPESTATUS[0]}
set -e

# `N passed, M failed`, counted over the operations (from the JUnit report).
SUMMARY="$(python3 - "$RUN_DIR/junit.xml" <<'PY' || true
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    sys.exit(1)
cases = root.iter("testcase")
passed = failed = 0
for case in cases:
    if case.find("failure") is not None or case.find("error") is not None:
        failed += 1
    elif case.find("skipped") is None:
        passed += 1
print(f"{passed} passed, {failed} failed")
PY
)"
if ((RC != 0)); then
  log "schemathesis reported failures (exit $RC); server logs: $RUN_DIR/watch.log (set JOBQ_FUZZ_KEEP=1 to keep them)"
fi
echo "${SUMMARY:-$([[ $RC == 0 ]] && echo "schemathesis: passed" || echo "schemathesis: failed (exit $RC)")}"
exit "$RC"
