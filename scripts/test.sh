#!/usr/bin/env bash
# Runs every test of the project (what CI runs):
#   formatting and lints; the whole workspace's tests against real Postgres and Redis (reused if
#   they answer, started otherwise: scripts/services.sh); the end-to-end test of the running system
#   over HTTP (scripts/e2e.py); schemathesis against the running API and openapi.yaml
#   (scripts/api-fuzz.sh); and the deployment checks: sam validate, cfn-lint, the compose file and a
#   full sam build (scripts/check-deploy.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/jobq}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"

step() { printf '\n==> %s\n' "$*"; }

step "services"
bash scripts/services.sh

step "tools (cargo-lambda, sam, cfn-lint, moto in .venv-tools)"
PATH="$(bash scripts/tools.sh | tail -n1):$PATH"
export PATH

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "end-to-end"
python3 scripts/e2e.py

step "schemathesis against the running API"
bash scripts/api-fuzz.sh

step "deployment checks"
bash scripts/check-deploy.sh
