#!/usr/bin/env bash
# Runs the benchmark side by side with its peers in one sitting, interleaved so that a change in
# the machine's load touches every system alike, and prints every RESULT line, then the medians.
#
# Usage: bench/compare.sh [JOBS] [RUNS] [MODES] [SYSTEMS]
#   defaults: 20000 jobs, 3 runs, "bulk single", "jobq graphile-worker bullmq"
# With JOBQ_BASELINE_BIN set to a jobq-bench binary built from another commit, the system
# "jobq-baseline" runs it: an A/B of a change, interleaved with the rest.
# Needs Postgres and Redis (scripts/services.sh), Node 20 for the peers (npm ci in each
# bench/peers/* directory the first time). Run it on a quiet machine: a build beside it changes
# every figure.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JOBS="${1:-20000}"
RUNS="${2:-3}"
MODES="${3:-bulk single}"
SYSTEMS="${4:-jobq graphile-worker bullmq}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/jobq}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
# Every system connects to Postgres the same way. graphile-worker's node-postgres speaks plain TCP
# unless told otherwise, while jobq follows libpq's `sslmode=prefer` and so speaks TLS to a server
# with `ssl = on` (Debian's default). Unless DATABASE_URL names an sslmode, jobq is told `disable`.
JOBQ_DATABASE_URL="$DATABASE_URL"
if [[ "$DATABASE_URL" != *sslmode=* ]]; then
  JOBQ_DATABASE_URL="$DATABASE_URL$([[ "$DATABASE_URL" == *\?* ]] && echo '&' || echo '?')sslmode=disable"
fi
# graphile-worker's bench makes its databases from the server's `postgres` database, with the same
# query string.
DATABASE_BASE="${DATABASE_URL%%\?*}"
GRAPHILE_DATABASE_URL="${DATABASE_BASE%/*}/postgres${DATABASE_URL#"$DATABASE_BASE"}"
OUT="$(mktemp)"

cd "$REPO"
cargo build --release --locked -p jobq-bench >&2
for system in $SYSTEMS; do
  if [[ "$system" != jobq* && ! -d "bench/peers/$system/node_modules" ]]; then
    (cd "bench/peers/$system" && npm ci --silent) >&2
  fi
done

for run in $(seq "$RUNS"); do
  for mode in $MODES; do
    for system in $SYSTEMS; do
      echo "run $run/$RUNS: $system --mode $mode" >&2
      case "$system" in
        jobq) DATABASE_URL="$JOBQ_DATABASE_URL" target/release/jobq-bench --jobs "$JOBS" --mode "$mode" ;;
        jobq-baseline)
          DATABASE_URL="$JOBQ_DATABASE_URL" "${JOBQ_BASELINE_BIN:?set JOBQ_BASELINE_BIN to run jobq-baseline}" \
            --jobs "$JOBS" --mode "$mode" |
            sed 's/system=jobq /system=jobq-baseline /' ;;
        graphile-worker)
          (cd bench/peers/graphile-worker && DATABASE_URL="$GRAPHILE_DATABASE_URL" node bench.mjs --jobs "$JOBS" --mode "$mode") ;;
        bullmq)
          (cd bench/peers/bullmq && node bench.mjs --jobs "$JOBS" --mode "$mode" \
            $([[ "$mode" == single ]] && echo --concurrency 1000)) ;;
        *) echo "unknown system $system" >&2; exit 2 ;;
      esac | grep '^RESULT' | tee -a "$OUT"
    done
  done
done

echo
echo "medians of $RUNS runs, $JOBS jobs:"
python3 - "$OUT" <<'PY'
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    fields = dict(kv.split('=', 1) for kv in line.split()[1:])
    runs[(fields['system'], fields['mode'])].append(fields)
print(f"{'system':<16} {'mode':<7} {'enqueue/s':>10} {'drain/s':>10} {'p50 ms':>7} {'p95 ms':>7}  drain runs")
for (system, mode), rs in sorted(runs.items()):
    med = lambda k: statistics.median(float(r[k]) for r in rs)
    drains = ' / '.join(r['process_per_s'] for r in rs)
    print(f"{system:<16} {mode:<7} {med('enqueue_per_s'):>10.0f} {med('process_per_s'):>10.0f} "
          f"{med('latency_ms_p50'):>7.2f} {med('latency_ms_p95'):>7.2f}  {drains}")
PY
rm -f "$OUT"
