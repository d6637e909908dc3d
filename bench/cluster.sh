#!/usr/bin/env bash
# What a Redis Cluster changes, and how much Redis a job costs: jobq's benchmark against one Redis
# with one queue and with twelve, and against a Redis Cluster of three masters (started here, on
# this machine, in a temporary directory) with twelve queues, interleaved in one sitting. For each
# run it also reads the CPU time the Redis servers spent (utime + stime from /proc), so that
# `redis_cpu_us_per_job` says how many jobs a second one Redis core could carry.
# Prints every RESULT line, then the medians of each variant.
#
# Usage: bench/cluster.sh [JOBS] [RUNS] [MODE]
#   defaults: 20000 jobs, 3 runs, bulk mode
# Needs Postgres and Redis (scripts/services.sh), redis-server and redis-cli. Run it on a quiet
# machine: a build beside it changes every figure.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JOBS="${1:-20000}"
RUNS="${2:-3}"
MODE="${3:-bulk}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/jobq}"
SINGLE_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
SINGLE_PORT="${SINGLE_URL##*:}"
SINGLE_PORT="${SINGLE_PORT%%/*}"
DIR="$(mktemp -d)"
OUT="$DIR/results"
trap 'bash "$REPO/scripts/redis-cluster.sh" stop "$DIR/cluster"; rm -rf "$DIR"' EXIT
CLUSTER_URL="$(bash "$REPO/scripts/redis-cluster.sh" start "$DIR/cluster")"
mapfile -t PORTS < <(bash "$REPO/scripts/redis-cluster.sh" ports "$DIR/cluster")

# CPU seconds spent so far by the redis-servers on these ports.
cpu_seconds() {
  local total=0 port pid ticks
  for port in "$@"; do
    pid="$(redis-cli -p "$port" info server | tr -d '\r' | sed -n 's/^process_id://p')"
    ticks="$(awk '{print $14 + $15}' "/proc/$pid/stat")"
    total=$((total + ticks))
  done
  python3 -c "print($total / $(getconf CLK_TCK))"
}

cd "$REPO"
cargo build --release --locked -p jobq-bench >&2

for run in $(seq "$RUNS"); do
  for variant in single-1 single-12 cluster-12; do
    case "$variant" in
      single-1) url="$SINGLE_URL" cluster=false queues=1 ports=("$SINGLE_PORT") ;;
      single-12) url="$SINGLE_URL" cluster=false queues=12 ports=("$SINGLE_PORT") ;;
      cluster-12) url="$CLUSTER_URL" cluster=true queues=12 ports=("${PORTS[@]}") ;;
    esac
    echo "run $run/$RUNS: $variant" >&2
    before="$(cpu_seconds "${ports[@]}")"
    line="$(REDIS_URL="$url" REDIS_CLUSTER="$cluster" target/release/jobq-bench --jobs "$JOBS" \
      --mode "$MODE" --queues "$queues" | grep '^RESULT')"
    after="$(cpu_seconds "${ports[@]}")"
    cpu="$(python3 -c "print(f'{$after - $before:.2f}')")"
    echo "$line variant=$variant redis_cpu_s=$cpu" | tee -a "$OUT"
  done
done

echo
echo "medians of $RUNS runs, $JOBS jobs, $MODE mode (Redis CPU: enqueue, drain and 200 probes):"
python3 - "$OUT" "$JOBS" <<'PY'
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
jobs = int(sys.argv[2])
for line in open(sys.argv[1]):
    fields = dict(kv.split('=', 1) for kv in line.split()[1:])
    runs[fields['variant']].append(fields)
med = lambda rs, k: statistics.median(float(r[k]) for r in rs)
print(f"{'variant':<11} {'enqueue/s':>10} {'drain/s':>9} {'p50 ms':>7} {'p95 ms':>7} {'redis cpu s':>12} {'us/job':>7}  drain runs")
for variant in ('single-1', 'single-12', 'cluster-12'):
    rs = runs.get(variant)
    if not rs:
        continue
    cpu = med(rs, 'redis_cpu_s')
    drains = ' / '.join(r['process_per_s'] for r in rs)
    print(f"{variant:<11} {med(rs, 'enqueue_per_s'):>10.0f} {med(rs, 'process_per_s'):>9.0f} "
          f"{med(rs, 'latency_ms_p50'):>7.2f} {med(rs, 'latency_ms_p95'):>7.2f} {cpu:>12.2f} "
          f"{cpu * 1e6 / (jobs + 200):>7.1f}  {drains}")
PY
