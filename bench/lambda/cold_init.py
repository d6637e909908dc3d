#!/usr/bin/env python3
"""Measures a Lambda function binary's cold init: from process start until it asks the runtime API
for its first event (clients built, Postgres and Redis connections opened).

A stub of the Lambda runtime API on a local port answers nothing but records when the function first
asks for work. Usage:
    python3 bench/lambda/cold_init.py target/lambda/create-job/bootstrap [runs]
DATABASE_URL and REDIS_URL are passed through (defaults: the local services). Prints one line per run
and the median.
"""
import http.server
import os
import statistics
import subprocess
import sys
import threading
import time

binary = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
first_ask = threading.Event()
asked_at = [0.0]


class Runtime(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if not first_ask.is_set():
            asked_at[0] = time.perf_counter()
            first_ask.set()
        # Hold the long poll open; the process is killed once the time is taken.
        time.sleep(5)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Runtime)
threading.Thread(target=server.serve_forever, daemon=True).start()
env = dict(os.environ)
env.update({
    "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}",
    "AWS_LAMBDA_FUNCTION_NAME": "cold-init-probe",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_LOG_STREAM_NAME": "probe",
    "AWS_LAMBDA_LOG_GROUP_NAME": "probe",
    "DATABASE_URL": os.environ.get("DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/jobq"),
    "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"),
    "RUST_LOG": "warn",
})
times = []
for _ in range(runs):
    first_ask.clear()
    started = time.perf_counter()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not first_ask.wait(10):
        proc.kill()
        sys.exit("the function never asked for an event")
    ms = (asked_at[0] - started) * 1000
    times.append(ms)
    print(f"cold_init_ms={ms:.1f}")
    proc.kill()
    proc.wait()
print(f"RESULT binary={os.path.basename(os.path.dirname(binary)) or binary} size_bytes={os.path.getsize(binary)} "
      f"cold_init_ms_median={statistics.median(times):.1f} runs={runs}")
server.shutdown()
