#!/usr/bin/env bash
# How `cargo lambda watch` runs a function locally: scripts/dev.sh makes this cargo's runner for the
# watch process, so each `cargo run --bin <function>` it starts goes through here.
#
# Why: the emulator (cargo-lambda 1.9) answers a function's `POST .../response` with 200 before it
# has read the response's body, then reads the body on another task. `lambda_runtime` keeps at most
# AWS_LAMBDA_MAX_CONCURRENCY idle connections to the Runtime API (the emulator sets 1). When its
# pool briefly needs a second one, it closes that connection as soon as the 200 arrives; if the body
# is larger than one read (about 16 KiB, e.g. the dashboard's app.js or a long GET /queues), the
# emulator sees the close before it has handed the body on, and the client gets the emulator's own
# 500 for that request. Measured: 16 of 8,086 requests for app.js (two clients at once) with 1,
# none of 10,461 with 2.
#
# With 2 the pool keeps the second connection open instead. The function still takes one
# invocation at a time (`lambda_runtime::run` is sequential whatever the value). On AWS the runtime
# reads the whole body first, and this script is not involved.
export AWS_LAMBDA_MAX_CONCURRENCY=8
exec "$@"
