#!/usr/bin/env bash
# Coverage-guided fuzzing of request parsing (fuzz/: cargo-fuzz over libFuzzer): every target in
# turn, each for an equal share of SECONDS (default 60 in all), starting from its committed corpus
# under fuzz/corpus/<target>/. A crash (a panic, a failed assertion, a hang past 10 s) fails the
# run and prints the input that caused it (kept under fuzz/artifacts/<target>/) and how to replay it.
#
# Usage: scripts/fuzz.sh [seconds] [--dev]
#
# --dev builds the targets without optimizations (cargo fuzz --dev): about half the cold build
# time, far fewer inputs a second. The test command's short run uses it; a long hunt should not.
#
# cargo-fuzz is installed, pinned, into .venv-tools/bin (next to the tools of scripts/tools.sh).
# It needs nightly-only compiler flags; on the stable toolchain RUSTC_BOOTSTRAP=1 allows them, for
# these builds only. The targets are built without a sanitizer: the code under test forbids
# `unsafe`, so AddressSanitizer would only slow each run, while panics, failed assertions and
# integer overflows (debug assertions are on) are caught as they are.
set -euo pipefail
cd "$(dirname "$0")/.."

TOTAL="${1:-60}"
PROFILE=()
[[ "${2:-}" == --dev ]] && PROFILE=(--dev)
CARGO_FUZZ_VERSION=0.13.2
TOOLS="$PWD/.venv-tools"

if [[ "$("$TOOLS/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS/bin" >&2
  cargo install --quiet --locked --root "$TOOLS" --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi
export PATH="$TOOLS/bin:$PATH"
export RUSTC_BOOTSTRAP=1
FLAGS=(--sanitizer none "${PROFILE[@]}")

mapfile -t TARGETS < <(cargo fuzz list)
PER=$((TOTAL / ${#TARGETS[@]}))
((PER >= 1)) || PER=1

cargo fuzz build "${FLAGS[@]}"

# New inputs the fuzzer finds go to a scratch corpus; the committed one is only read.
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
FAILED=()
for target in "${TARGETS[@]}"; do
  mkdir -p "$WORK/$target"
  printf '\n==> fuzz %s for %ss (corpus: %s inputs)\n' "$target" "$PER" "$(ls "fuzz/corpus/$target" | wc -l)"
  if cargo fuzz run "${FLAGS[@]}" "$target" "$WORK/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$PER" -timeout=10 -print_final_stats=1 >"$WORK/$target.log" 2>&1; then
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$WORK/$target.log")"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$WORK/$target.log")"
    cov="$(grep -o 'cov: [0-9]*' "$WORK/$target.log" | tail -n1)"
    echo "fuzz: $target ok: ${execs:-?} execs, ${rate:-?} execs/s, ${cov:-cov: ?}, $(ls "$WORK/$target" | wc -l) new inputs"
  else
    tail -n 40 "$WORK/$target.log"
    input="$(grep -o 'fuzz/artifacts/[^ ]*' "$WORK/$target.log" | tail -n1 || true)"
    echo "fuzz: $target FAILED on ${input:-an input (see the log above)}" >&2
    [[ -n "$input" ]] && echo "fuzz: replay with RUSTC_BOOTSTRAP=1 cargo fuzz run ${FLAGS[*]} $target $input" >&2
    FAILED+=("$target")
  fi
done

if ((${#FAILED[@]})); then
  echo "fuzz: crashes in ${FAILED[*]}" >&2
  exit 1
fi
