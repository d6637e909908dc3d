#!/usr/bin/env bash
# Runs the project's tests, in two tiers (CI runs both, fast first):
#
#   fast   formatting, lints, and every cargo test but the slow ones below: unit tests, the
#          lifecycle against real Postgres and Redis, the Lambda handlers in-process, the function
#          binaries against a misbehaving Runtime API, the local API server; then the library's
#          queue tests again on a Redis Cluster of three masters (scripts/redis-cluster.sh). A few
#          minutes warm.
#   slow   the cargo tests that break servers or run for long (SLOW_TESTS below: fault tests on
#          private servers, the soak, the chaos soak, the 100,000-job backlog, Lambda deadlines,
#          the promoter as a process, the property tests), the end-to-end test of the run command
#          over HTTP (scripts/e2e.py, with an idle minute, hostile requests and the dashboard in a
#          headless Chromium), schemathesis on the
#          local API server and on the emulator (scripts/api-fuzz.sh), and the deployment checks
#          (scripts/check-deploy.sh), then a short run of coverage-guided fuzzing of request parsing
#          (scripts/fuzz.sh --dev) for JOBQ_FUZZ_SECONDS (default 60; 0 skips it).
#
# Usage: scripts/test.sh [fast|slow|all]   (default all: what CI runs)
#
# Postgres and Redis are reused if they answer, started otherwise (scripts/services.sh). A failing
# step prints what explains it (server logs, seeds) or the path where it kept them.
set -euo pipefail
cd "$(dirname "$0")/.."

TIER="${1:-all}"
case "$TIER" in
  fast | slow | all) ;;
  -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: scripts/test.sh [fast|slow|all]" >&2; exit 2 ;;
esac

export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/jobq}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"

# Integration test targets (file names under */tests/) that belong to the slow tier. Every other
# test target is in the fast tier, so a new test file is fast unless it is listed here.
SLOW_TESTS=(faults soak chaos backlog deadline process properties cron)
# Test targets that the fast tier runs a second time against a Redis Cluster (in every crate that
# has one of the name: functions' bulk and dependencies, the promoter's limits, too).
CLUSTER_TESTS=(lifecycle routing maintenance schedule pause limits dependencies bulk)

step() { printf '\n==> %s\n' "$*"; }

is_slow() {
  local name="$1" slow
  for slow in "${SLOW_TESTS[@]}"; do [[ "$name" == "$slow" ]] && return 0; done
  return 1
}

test_targets() { # fast|slow: prints --test NAME for each integration test target of that tier
  local file name
  for file in */tests/*.rs; do
    name="$(basename "$file" .rs)"
    if is_slow "$name"; then
      [[ "$1" == slow ]] && printf -- '--test\n%s\n' "$name"
    else
      [[ "$1" == fast ]] && printf -- '--test\n%s\n' "$name"
    fi
  done
}

step "services"
bash scripts/services.sh
# The TLS tests make their certificates with the openssl command.
if ! command -v openssl >/dev/null 2>&1; then
  echo "test: installing openssl (the TLS tests make certificates with it)" >&2
  SUDO=()
  [[ "$(id -u)" == 0 ]] || SUDO=(sudo)
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >&2
fi

# The end-to-end test drives the dashboard in Debian's chromium, through its chromedriver.
if [[ "$TIER" != fast ]] && { [[ ! -x /usr/bin/chromium ]] || [[ ! -x /usr/bin/chromedriver ]]; }; then
  echo "test: installing chromium and chromium-driver (the dashboard's browser test)" >&2
  SUDO=()
  [[ "$(id -u)" == 0 ]] || SUDO=(sudo)
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >&2
fi

step "tools (cargo-lambda, sam, cfn-lint, moto, selenium in .venv-tools)"
PATH="$(bash scripts/tools.sh | tail -n1):$PATH"
export PATH

if [[ "$TIER" != slow ]]; then
  step "fast: cargo fmt --check"
  cargo fmt --all -- --check

  step "fast: cargo clippy"
  cargo clippy --workspace --all-targets --locked -- -D warnings

  mapfile -t FAST < <(test_targets fast)
  step "fast: cargo test (unit and $((${#FAST[@]} / 2)) integration targets; not the slow ${SLOW_TESTS[*]})"
  cargo test --workspace --locked --lib --bins "${FAST[@]}"

  # The library's Redis-facing tests again, on a Redis Cluster of three masters (the binaries are
  # built: only the environment changes). promoter/tests/cluster.rs, above, adds what only a
  # cluster has: queues on several shards, and a slot that moves.
  step "fast: the library's queue tests on a Redis Cluster (${CLUSTER_TESTS[*]})"
  CLUSTER_DIR="$(mktemp -d)"
  trap 'bash scripts/redis-cluster.sh stop "$CLUSTER_DIR"' EXIT
  CLUSTER_URL="$(bash scripts/redis-cluster.sh start "$CLUSTER_DIR")"
  CLUSTER_ARGS=()
  for name in "${CLUSTER_TESTS[@]}"; do CLUSTER_ARGS+=(--test "$name"); done
  REDIS_URL="$CLUSTER_URL" REDIS_CLUSTER=true cargo test --workspace --locked "${CLUSTER_ARGS[@]}"
  bash scripts/redis-cluster.sh stop "$CLUSTER_DIR"
  trap - EXIT
fi

if [[ "$TIER" != fast ]]; then
  mapfile -t SLOW < <(test_targets slow)
  step "slow: cargo test ${SLOW_TESTS[*]}"
  cargo test --workspace --locked "${SLOW[@]}"

  step "slow: end-to-end"
  python3 scripts/e2e.py

  step "slow: schemathesis on the local API server and on the running API"
  bash scripts/api-fuzz.sh

  step "slow: deployment checks"
  bash scripts/check-deploy.sh

  FUZZ_SECONDS="${JOBQ_FUZZ_SECONDS:-60}"
  if ((FUZZ_SECONDS > 0)); then
    step "slow: fuzzing request parsing (cargo fuzz --dev, ${FUZZ_SECONDS} s over the targets in fuzz/)"
    bash scripts/fuzz.sh "$FUZZ_SECONDS" --dev
  fi
fi
