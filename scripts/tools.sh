#!/usr/bin/env bash
# Creates (or reuses) the Python virtualenv `.venv-tools` at the repository root with the command-line
# tools the project uses: cargo-lambda (local Lambda emulator and builds), the SAM CLI, cfn-lint,
# moto's server with boto3 (a local Secrets Manager), and Selenium (the dashboard's browser test,
# which drives Debian's chromium through its chromedriver). A stamp file records what was installed, so a
# re-run with unchanged requirements skips pip entirely.
#
# Usage: scripts/tools.sh            (prints the bin directory on its last line)
#        export PATH="$REPO/.venv-tools/bin:$PATH"
# zig (pulled in by cargo-lambda) is only found while that bin directory is on PATH.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv-tools"
STAMP="$VENV/.jobq-tools-stamp"
PYTHON="${PYTHON:-python3}"

# Ranges rather than exact pins: the SAM CLI pins its own boto3/botocore, and exact pins here would
# fight it. Bump the lower bounds when a newer feature is needed.
REQUIREMENTS=(
  "cargo-lambda>=1.9,<2"
  "aws-sam-cli>=1.140,<2"
  "cfn-lint>=1.30,<2"
  "moto[server]>=5.1,<6"
  "boto3>=1.35,<2"
  "selenium>=4.20,<5"
)
WANT="$(printf '%s\n' "${REQUIREMENTS[@]}")"

have_all_tools() {
  local bin
  for bin in cargo-lambda sam cfn-lint moto_server; do
    [[ -x "$VENV/bin/$bin" ]] || return 1
  done
  "$VENV/bin/python" -c 'import boto3, selenium' >/dev/null 2>&1
}

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "tools: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] && have_all_tools; then
  echo "tools: reusing $VENV" >&2
else
  echo "tools: installing into $VENV: ${REQUIREMENTS[*]}" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQUIREMENTS[@]}"
  have_all_tools || { echo "tools: install finished but a tool is missing from $VENV/bin" >&2; exit 1; }
  printf '%s' "$WANT" >"$STAMP"
fi

echo "$VENV/bin"
