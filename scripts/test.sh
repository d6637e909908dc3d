#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, and the whole workspace's tests against real
# Postgres and Redis (reused if they answer, started otherwise; see scripts/services.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/jobq}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"

step() { printf '\n==> %s\n' "$*"; }

step "services"
bash scripts/services.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked
