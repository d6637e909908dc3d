#!/usr/bin/env bash
# Checks everything deployment-related without touching AWS or needing credentials: the SAM template
# (sam validate --lint, which runs cfn-lint's rules, and cfn-lint itself), the compose file, and a full `sam build` of the Lambda functions (release builds through
# cargo-lambda, no Docker). Stops at the first failing check.
#
# Usage: scripts/check-deploy.sh
#   JOBQ_SKIP_SAM_BUILD=1   skip the (slow) sam build
#   CARGO_TARGET_DIR        defaults to <repo>/target, shared with the other builds
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

step() { echo "==> check-deploy: $*" >&2; }
fail() { echo "check-deploy: FAILED: $*" >&2; exit 1; }

step "tools"
BIN="$(scripts/tools.sh | tail -n1)" || fail "scripts/tools.sh could not install the tools"
export PATH="$BIN:$PATH"
export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"

# Every function of the template, read from it, so that a new one cannot be forgotten here.
FUNCTIONS=$(awk '/^  [A-Za-z0-9]+:$/ { name = $1; sub(":", "", name) }
                 /^    Type: AWS::Serverless::Function$/ { print name }' template.yaml)
[[ -n "$FUNCTIONS" ]] || fail "no AWS::Serverless::Function found in template.yaml"
step "functions in template.yaml: $(echo $FUNCTIONS)"

step "sam validate --lint --region us-east-1"
# No credentials are needed; make sure none are picked up either.
env -u AWS_PROFILE -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN \
  sam validate --lint --region us-east-1 --template-file template.yaml || fail "sam validate --lint (template.yaml)"

step "cfn-lint template.yaml"
cfn-lint template.yaml || fail "cfn-lint template.yaml"

step "docker-compose -f docker-compose.yml config -q"
if ! command -v docker-compose >/dev/null 2>&1; then
  # The Compose v1 package parses and validates a compose file without a Docker engine.
  SUDO=()
  [[ "$(id -u)" == 0 ]] || SUDO=(sudo)
  command -v apt-get >/dev/null 2>&1 || fail "docker-compose is missing and apt-get is not available to install it"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || fail "apt-get update"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >&2 || fail "apt-get install docker-compose"
fi
docker-compose -f docker-compose.yml config -q || fail "docker-compose.yml does not validate"

if [[ "${JOBQ_SKIP_SAM_BUILD:-0}" == 1 ]]; then
  step "sam build skipped (JOBQ_SKIP_SAM_BUILD=1)"
else
  step "sam build (cargo lambda build --release per function; CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  sam build --template-file template.yaml --build-dir "$REPO/.aws-sam/build" || fail "sam build"
  for fn in $FUNCTIONS; do
    [[ -x "$REPO/.aws-sam/build/$fn/bootstrap" ]] || fail "sam build produced no $fn/bootstrap"
  done
fi

echo "check-deploy: all checks passed"
