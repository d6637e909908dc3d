#!/usr/bin/env bash
# What a queue's concurrency limit costs the drain: jobq's benchmark without a limit, with a limit
# equal to the worker's slots (the limit's bookkeeping only: it never binds) and with a small
# limit (it binds), interleaved in one sitting so that a change in the machine's load touches
# every variant alike. Prints every RESULT line, then the medians of each variant.
#
# Usage: bench/limits.sh [JOBS] [RUNS] [CONCURRENCY] [SMALL] [MODE]
#   defaults: 20000 jobs, 3 runs, 1000 worker slots, a small limit of 50, bulk mode
# Needs Postgres and Redis (scripts/services.sh). Run it on a quiet machine: a build beside it
# changes every figure.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JOBS="${1:-20000}"
RUNS="${2:-3}"
CONCURRENCY="${3:-1000}"
SMALL="${4:-50}"
MODE="${5:-bulk}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/jobq}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT

cd "$REPO"
cargo build --release --locked -p jobq-bench >&2

for run in $(seq "$RUNS"); do
  for variant in none slots small; do
    case "$variant" in
      none) limit=() ;;
      slots) limit=(--limit "$CONCURRENCY") ;;
      small) limit=(--limit "$SMALL") ;;
    esac
    echo "run $run/$RUNS: $variant ${limit[*]:-}" >&2
    target/release/jobq-bench --jobs "$JOBS" --mode "$MODE" --concurrency "$CONCURRENCY" "${limit[@]}" |
      grep '^RESULT' | sed "s/\$/ variant=$variant/" | tee -a "$OUT"
  done
done

echo
echo "medians of $RUNS runs, $JOBS jobs, $MODE mode, $CONCURRENCY slots:"
python3 - "$OUT" <<'PY'
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    fields = dict(kv.split('=', 1) for kv in line.split()[1:])
    runs[fields['variant']].append(fields)
print(f"{'variant':<8} {'limit':>7} {'drain/s':>10} {'vs none':>8} {'p50 ms':>7} {'p95 ms':>7}  drain runs")
med = lambda rs, k: statistics.median(float(r[k]) for r in rs)
base = med(runs['none'], 'process_per_s') if 'none' in runs else None
for variant in ('none', 'slots', 'small'):
    rs = runs.get(variant)
    if not rs:
        continue
    drain = med(rs, 'process_per_s')
    ratio = f"{drain / base:.2f}x" if base else '-'
    drains = ' / '.join(r['process_per_s'] for r in rs)
    print(f"{variant:<8} {rs[0]['limit']:>7} {drain:>10.0f} {ratio:>8} "
          f"{med(rs, 'latency_ms_p50'):>7.2f} {med(rs, 'latency_ms_p95'):>7.2f}  {drains}")
PY
