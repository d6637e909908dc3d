#!/usr/bin/env python3
"""End-to-end test of the running system, over real HTTP.

Starts `scripts/dev.sh --detach` (Postgres, Redis, the promoter, the functions under
`cargo lambda watch`) on a free port, with its own database (jobq_e2e_<random>, dropped at the end)
and its own Redis key namespace (deleted at the end), then drives the seed's flows:
create -> COMPLETED; FAIL_TIMES=2 -> COMPLETED after 3 attempts; FAIL_ALWAYS -> FAILED and in the
DLQ; requeue -> runs again and dies again; bad input -> 4xx with a JSON body; and a direct invoke of
the worker function. Prints `N passed, M failed` and exits non-zero on any failure.

Python 3 standard library only. Usage: python3 scripts/e2e.py
Environment: DATABASE_URL (any database on the server to use; default the local jobq one),
REDIS_URL, JOBQ_E2E_TIMEOUT (seconds per wait, default 30), JOBQ_E2E_KEEP=1 (keep the run
directory and do not drop the database, for debugging).
"""

import datetime
import gzip as gzip_module
import json
import os
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATABASE_URL = "postgres://postgres:postgres@127.0.0.1:5432/jobq"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
WAIT = float(os.environ.get("JOBQ_E2E_TIMEOUT", "30"))


# --------------------------------------------------------------------------------------------------
# Results


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   - {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL - {name}" + (f": {detail}" if detail else ""), flush=True)
        return ok


def log(msg):
    print(f"e2e: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Postgres (through psql) and Redis (a few RESP commands over a socket)


def with_database(url, dbname):
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + dbname))


def psql(url, sql):
    out = subprocess.run(
        ["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-Atc", sql],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"psql: {out.stderr.strip()}")
    return out.stdout.strip()


class Redis:
    def __init__(self, url):
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=10)
        self.buf = b""
        if parts.password:
            user = urllib.parse.unquote(parts.username or "")
            password = urllib.parse.unquote(parts.password)
            self.command(*(["AUTH", user, password] if user else ["AUTH", password]))
        db = (parts.path or "/").lstrip("/")
        if db:
            self.command("SELECT", db)

    def command(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(65536)
            data, self.buf = self.buf[:n], self.buf[n + 2 :]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError(f"unexpected redis reply {line!r}")

    def delete_namespace(self, namespace):
        """Deletes this test's keys only: every key starts with `{namespace}` (a hash tag)."""
        deleted, cursor = 0, b"0"
        pattern = "{" + namespace + "}*"
        while True:
            cursor, keys = self.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            if keys:
                deleted += self.command("DEL", *keys)
            if cursor in (b"0", "0"):
                return deleted

    def close(self):
        self.sock.close()


# --------------------------------------------------------------------------------------------------
# HTTP


class Api:
    def __init__(self, base):
        self.base = base
        self.token = os.environ.get("JOBQ_API_TOKEN")

    # The largest body received, as sent (compressed or not), and the request that got it.
    largest = (0, "")

    def call(self, method, path, body=None, raw=None, timeout=40, gzip=True):
        """Returns (status, parsed JSON or None, text). Asks for gzip, as HTTP clients do."""
        status, text, _ = self.call_raw(method, path, body, raw, timeout, gzip)
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return status, parsed, text

    def call_raw(self, method, path, body=None, raw=None, timeout=40, gzip=True):
        """Returns (status, text, Content-Encoding)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Accept": "application/json"}
        if gzip:
            headers["Accept-Encoding"] = "gzip"
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, encoding, wire = resp.status, resp.headers.get("Content-Encoding"), resp.read()
        except urllib.error.HTTPError as err:
            status, encoding, wire = err.code, err.headers.get("Content-Encoding"), err.read()
        if len(wire) > Api.largest[0]:
            Api.largest = (len(wire), f"{method} {path} ({encoding or 'plain'})")
        if encoding == "gzip":
            wire = gzip_module.decompress(wire)
        return status, wire.decode("utf-8", "replace"), encoding

    def create(self, payload, job_type="TEST"):
        return self.call("POST", "/jobs", {"type": job_type, "payload": payload})

    def wait_for(self, job_id, want, timeout=WAIT, also=lambda job: True):
        """Polls GET /jobs/{id} until its status is `want` (and `also(job)`); returns the last job."""
        deadline, job = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            status, body, _ = self.call("GET", f"/jobs/{job_id}")
            if status == 200 and isinstance(body, dict):
                job = body
                if job.get("status") == want and also(job):
                    return job
            time.sleep(0.3)
        return job


def dlq_items(body):
    """The jobs in a GET /dlq answer, whatever the name of the list."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in ("items", "jobs", "data", "results"):
            if isinstance(body.get(key), list):
                return body[key]
    return []


def job_id_of(item):
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return item.get("jobId") or item.get("id")
    return None


def is_json_error(status, body, lo=400, hi=499):
    return lo <= status <= hi and isinstance(body, dict) and len(body) > 0


# --------------------------------------------------------------------------------------------------
# The scenarios


def run_checks(api, port, r):
    # 1. The seed's first call.
    status, body, text = api.create("hello")
    job_id = body.get("jobId") if isinstance(body, dict) else None
    r.check("POST /jobs returns 201 with a jobId", status == 201 and bool(job_id), f"{status} {text[:300]}")
    r.check(
        "a new job is PENDING",
        isinstance(body, dict) and body.get("status") == "PENDING",
        f"status {body.get('status') if isinstance(body, dict) else text[:200]}",
    )
    if job_id:
        job = api.wait_for(job_id, "COMPLETED")
        r.check("the job is COMPLETED by a worker", job is not None and job.get("status") == "COMPLETED", f"last seen {job}")
        r.check(
            "GET /jobs/{id} keeps type and payload",
            job is not None and job.get("type") == "TEST" and job.get("payload") == "hello",
            f"{job}",
        )

    # 2. Fails twice, then succeeds.
    status, body, text = api.create("FAIL_TIMES=2")
    flaky = body.get("jobId") if isinstance(body, dict) else None
    r.check("POST /jobs FAIL_TIMES=2 returns 201", status == 201 and bool(flaky), f"{status} {text[:300]}")
    if flaky:
        job = api.wait_for(flaky, "COMPLETED")
        r.check(
            "FAIL_TIMES=2 ends COMPLETED after 3 attempts",
            job is not None and job.get("status") == "COMPLETED" and job.get("attempts") == 3,
            f"last seen status={job and job.get('status')} attempts={job and job.get('attempts')}",
        )
        history = (job or {}).get("history")
        if isinstance(history, list):
            r.check("its history has the 2 failures and the success", len(history) == 3, f"{len(history)} attempts in history")

    # 3. Always fails: dead after the maximum attempts, then in the DLQ.
    status, body, text = api.create("FAIL_ALWAYS")
    dead = body.get("jobId") if isinstance(body, dict) else None
    r.check("POST /jobs FAIL_ALWAYS returns 201", status == 201 and bool(dead), f"{status} {text[:300]}")
    before_history = 0
    if dead:
        job = api.wait_for(dead, "FAILED")
        r.check(
            "FAIL_ALWAYS ends FAILED after 3 attempts",
            job is not None and job.get("status") == "FAILED" and job.get("attempts") == 3,
            f"last seen status={job and job.get('status')} attempts={job and job.get('attempts')}",
        )
        r.check("a dead job keeps its last error", bool((job or {}).get("lastError")), f"{job}")
        before_history = len((job or {}).get("history") or [])

        status, body, text = api.call("GET", "/dlq")
        ids = [job_id_of(item) for item in dlq_items(body)]
        r.check("GET /dlq returns 200 and lists the dead job", status == 200 and dead in ids, f"{status} {text[:300]}")

        status, body, text = api.call("POST", f"/dlq/{dead}/requeue")
        r.check("POST /dlq/{id}/requeue returns 200", status == 200, f"{status} {text[:300]}")

        def ran_again(j):
            history = j.get("history")
            if isinstance(history, list) and before_history:
                return len(history) > before_history
            return True

        job = api.wait_for(dead, "FAILED", also=ran_again)
        history = (job or {}).get("history") or []
        r.check(
            "the requeued job runs again (more attempts in its history) and dies again",
            job is not None and job.get("status") == "FAILED" and len(history) > before_history,
            f"status={job and job.get('status')} history {before_history} -> {len(history)}",
        )
        status, body, text = api.call("GET", "/dlq")
        r.check("it is back in the DLQ", status == 200 and dead in [job_id_of(i) for i in dlq_items(body)], text[:300])

        # 3a. Bulk: a dry run counts the dead jobs, a real requeue runs them all again, the audit
        #     log says who asked.
        before_history = len((job or {}).get("history") or [])
        status, body, text = api.call("POST", "/jobs/bulk", {"filter": {"status": "FAILED"}, "action": "requeue", "dryRun": True})
        r.check("POST /jobs/bulk dryRun answers 200 with the count of dead jobs",
                status == 200 and isinstance(body, dict) and body.get("count", 0) >= 1, f"{status} {text[:300]}")
        status, body, text = api.call("POST", "/jobs/bulk", {"filter": {"status": "FAILED"}, "action": "requeue"})
        operation = (body or {}).get("id") if isinstance(body, dict) else None
        r.check("POST /jobs/bulk requeue answers 202 with an operation", status == 202 and bool(operation), f"{status} {text[:300]}")
        if operation:
            deadline, op = time.monotonic() + WAIT, None
            while time.monotonic() < deadline:
                status, op, text = api.call("GET", f"/operations/{operation}")
                if isinstance(op, dict) and op.get("state") == "DONE":
                    break
                time.sleep(0.3)
            r.check("GET /operations/{id} shows it DONE with the dead job processed",
                    isinstance(op, dict) and op.get("state") == "DONE" and op.get("processed", 0) >= 1, f"{op}")
            job = api.wait_for(dead, "FAILED", also=lambda j: len(j.get("history") or []) > before_history)
            r.check("the bulk-requeued job runs again and dies again",
                    job is not None and len(job.get("history") or []) > before_history, f"{job and len(job.get('history') or [])} attempts")
            status, body, text = api.call("GET", "/audit?limit=5")
            entries = (body or {}).get("items") or [] if isinstance(body, dict) else []
            r.check("GET /audit lists the bulk requeue and the single one",
                    status == 200 and any(e.get("operationId") == operation and e.get("action") == "bulk.requeue" for e in entries)
                    and any(e.get("jobId") == dead and e.get("action") == "job.requeue" for e in entries), f"{status} {text[:400]}")

    # 3b. The batch route: every job created, one result each, and each one runs.
    status, body, text = api.call("POST", "/jobs/batch", {"jobs": [{"type": "TEST", "payload": i} for i in range(3)]})
    results = (body or {}).get("results") or []
    r.check(
        "POST /jobs/batch returns 200 with a 201 result per job",
        status == 200 and len(results) == 3 and all(x.get("status") == 201 for x in results),
        f"{status} {text[:300]}",
    )
    for result in results:
        batch_id = (result.get("job") or {}).get("jobId")
        job = api.wait_for(batch_id, "COMPLETED") if batch_id else None
        r.check("a batch-created job is COMPLETED", job is not None and job.get("status") == "COMPLETED", f"{job}")

    # 3b'. Dependencies: a batch where the last job waits on the first two; it runs after both.
    status, body, text = api.call("POST", "/jobs/batch", {"jobs": [
        {"type": "TEST", "payload": "SLEEP_MS=300"},
        {"type": "TEST", "payload": "SLEEP_MS=100"},
        {"type": "TEST", "payload": "after both", "dependsOn": [0, 1]},
    ]})
    results = (body or {}).get("results") or []
    r.check(
        "POST /jobs/batch with dependsOn: the last job is BLOCKED",
        status == 200 and len(results) == 3 and (results[2].get("job") or {}).get("status") == "BLOCKED",
        f"{status} {text[:400]}",
    )
    if len(results) == 3:
        ids = [(x.get("job") or {}).get("jobId") for x in results]
        jobs = [api.wait_for(i, "COMPLETED") if i else None for i in ids]
        r.check("the dependent job and its parents are COMPLETED", all(j and j.get("status") == "COMPLETED" for j in jobs), f"{jobs}")
        if all(jobs):
            def when(job, field):
                text = job.get(field) or "1970-01-01T00:00:00Z"
                return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
            parents_done = max(when(j, "completedAt") for j in jobs[:2])
            r.check(
                "the dependent job started after both parents completed",
                when(jobs[2], "startedAt") >= parents_done,
                f"started {jobs[2].get('startedAt')}, parents completed by {parents_done}",
            )

    # 3b''. Pausing a queue: its job waits, says why, and runs once the queue is resumed.
    status, body, text = api.call("PUT", "/queues/e2e-paused", {"paused": True})
    r.check("PUT /queues/{name} pauses a queue", status == 200 and (body or {}).get("paused") is True, f"{status} {text[:300]}")
    status, body, text = api.call("POST", "/jobs", {"type": "TEST", "payload": "paused", "queue": "e2e-paused"})
    held = (body or {}).get("jobId")
    time.sleep(2)
    _, job, _ = api.call("GET", f"/jobs/{held}") if held else (None, None, None)
    r.check(
        "a job of the paused queue is still PENDING after 2 s and says why",
        job is not None and job.get("status") == "PENDING" and "paused" in (job.get("heldBack") or ""),
        f"{job}",
    )
    status, body, text = api.call("PUT", "/queues/e2e-paused", {"paused": False})
    r.check("PUT /queues/{name} resumes it", status == 200 and (body or {}).get("paused") is False, f"{status} {text[:300]}")
    job = api.wait_for(held, "COMPLETED", timeout=10) if held else None
    r.check("the held job runs once the queue is resumed", job is not None and job.get("status") == "COMPLETED", f"{job}")

    # 3b'''. A concurrency limit of 1: the queue's jobs run one at a time, and a waiting one says why.
    status, body, text = api.call("PUT", "/queues/e2e-limited", {"concurrency": 1})
    r.check("PUT /queues/{name} sets a concurrency limit", status == 200 and (body or {}).get("concurrency") == 1, f"{status} {text[:300]}")
    limited = []
    for _ in range(4):
        status, body, text = api.call("POST", "/jobs", {"type": "TEST", "payload": "SLEEP_MS=400", "queue": "e2e-limited"})
        limited.append((body or {}).get("jobId"))
    said = None
    deadline = time.time() + 3
    while said is None and time.time() < deadline and all(limited):
        for job_id in limited:
            _, job, _ = api.call("GET", f"/jobs/{job_id}")
            if "concurrency limit" in ((job or {}).get("heldBack") or ""):
                said = job["heldBack"]
                break
        time.sleep(0.05)
    r.check("a job held back by the limit says why", said is not None and "(1 of 1 running)" in said, f"{said}")
    jobs = [api.wait_for(job_id, "COMPLETED", timeout=20) if job_id else None for job_id in limited]
    r.check("every job of the limited queue completes", all(j and j.get("status") == "COMPLETED" for j in jobs), f"{jobs}")
    def at(job, field):
        return datetime.datetime.fromisoformat((job.get(field) or "1970-01-01T00:00:00Z").replace("Z", "+00:00"))

    if all(j and j.get("status") == "COMPLETED" for j in jobs):
        spans = sorted((at(j, "startedAt"), at(j, "completedAt")) for j in jobs)
        took = (spans[-1][1] - spans[0][0]).total_seconds()
        r.check("4 jobs of 400 ms under a limit of 1 took 1.6 s or more, one after another", took >= 1.6, f"{took:.2f} s")
    status, body, text = api.call("PUT", "/queues/e2e-limited", {"concurrency": None})
    r.check("PUT /queues/{name} removes the limit", status == 200 and (body or {}).get("concurrency") is None, f"{status} {text[:300]}")
    status, body, text = api.call("PUT", "/queues/e2e-rate", {"rateLimit": {"limit": 2, "periodMs": 1000}})
    r.check("PUT /queues/{name} sets a rate limit", status == 200 and (body or {}).get("rateLimit") == {"limit": 2, "periodMs": 1000, "key": None}, f"{status} {text[:300]}")
    rated = [(api.call("POST", "/jobs", {"type": "TEST", "payload": "ok", "queue": "e2e-rate"})[1] or {}).get("jobId") for _ in range(4)]
    jobs = [api.wait_for(job_id, "COMPLETED", timeout=20) if job_id else None for job_id in rated]
    if all(j and j.get("status") == "COMPLETED" for j in jobs):
        began = sorted(at(j, "startedAt") for j in jobs)
        spread = (began[-1] - began[0]).total_seconds()
        r.check("4 jobs under a limit of 2 a second started over 0.9 s or more", spread >= 0.9, f"{spread:.2f} s")
    else:
        r.check("every job of the rate-limited queue completes", False, f"{jobs}")
    status, body, text = api.call("PUT", "/queues/e2e-limited", {"retention": {"completedMs": 0, "deadMs": 86400000}})
    want = {"completedMs": 0, "cancelledMs": None, "deadMs": 86400000}
    r.check("PUT /queues/{name} sets the queue's retention", status == 200 and (body or {}).get("retention") == want, f"{status} {text[:300]}")
    status, body, text = api.call("PUT", "/queues/e2e-limited", {"retention": None})
    want = {"completedMs": None, "cancelledMs": None, "deadMs": None}
    r.check("retention: null puts it back to the default", status == 200 and (body or {}).get("retention") == want, f"{status} {text[:300]}")

    # 3c. Finding jobs, ChronoQueue's calls, and cancelling.
    marker = f"e2e-find-{int(time.time() * 1000)}"
    status, body, text = api.call("POST", "/jobs", {"type": "TEST", "payload": {"marker": marker}, "delaySeconds": 3600})
    later = (body or {}).get("jobId")
    r.check("POST /jobs with delaySeconds returns 201", status == 201 and bool(later), f"{status} {text[:300]}")
    query = urllib.parse.urlencode({"payload": json.dumps({"marker": marker}), "status": "PENDING"})
    status, body, text = api.call("GET", f"/jobs?{query}")
    items = (body or {}).get("items") or []
    r.check(
        "GET /jobs?payload=&status= finds the job, in GET /jobs/{id}'s shape",
        status == 200 and [job_id_of(i) for i in items] == [later] and items[0].get("id") == later,
        f"{status} {text[:300]}",
    )
    status, body, text = api.call("GET", "/jobs?status=DONE")
    r.check("GET /jobs with an unknown status gets 400 with a JSON body", status == 400 and is_json_error(status, body), f"{status} {text[:300]}")
    status, body, text = api.call("POST", f"/jobs/{later}/cancel")
    r.check(
        "POST /jobs/{id}/cancel of a scheduled job returns 200, CANCELLED",
        status == 200 and (body or {}).get("status") == "CANCELLED",
        f"{status} {text[:300]}",
    )
    job = api.wait_for(later, "CANCELLED", timeout=5) if later else None
    r.check("GET /jobs/{id} shows it CANCELLED", job is not None and job.get("status") == "CANCELLED", f"{job}")
    status, body, text = api.call("POST", f"/jobs/{later}/cancel")
    r.check("cancelling it again gets 409 with a JSON body", status == 409 and is_json_error(status, body), f"{status} {text[:300]}")
    status, body, text = api.call("POST", f"/jobs/{NIL_ID}/cancel")
    r.check("cancelling an unknown id gets 404 with a JSON body", status == 404 and is_json_error(status, body), f"{status} {text[:300]}")
    chrono = {
        "queueType": "EMAIL", "taskType": "TEST", "payload": {"userId": 123, "marker": marker},
        "scheduledAt": "2025-10-24T18:00:00Z", "priority": 100, "maxAttempts": 5,
        "idempotencyKey": f"welcome-email-{marker}",
    }
    status, body, text = api.call("POST", "/api/jobs", chrono)
    chrono_id = (body or {}).get("id")
    r.check("POST /api/jobs (ChronoQueue's body) returns 201 with an id", status == 201 and bool(chrono_id), f"{status} {text[:300]}")
    status, body, text = api.call("GET", f"/api/jobs/{chrono_id}")
    r.check("GET /api/jobs/{id} returns the job with its id", status == 200 and (body or {}).get("id") == chrono_id, f"{status} {text[:300]}")
    status, body, text = api.call("GET", "/api/jobs?queue=EMAIL")
    r.check(
        "GET /api/jobs lists it",
        status == 200 and chrono_id in [job_id_of(i) for i in (body or {}).get("items") or []],
        f"{status} {text[:300]}",
    )

    # 4. Bad input: 4xx with a JSON body, nothing stored.
    status, body, text = api.call("POST", "/jobs", raw=b'{"type":"TEST","payload":')
    r.check("malformed JSON gets 400 with a JSON body", status == 400 and is_json_error(status, body), f"{status} {text[:300]}")
    status, body, text = api.call("POST", "/jobs", body={"payload": "no type"})
    r.check("a missing type gets 400 with a JSON body", status == 400 and is_json_error(status, body), f"{status} {text[:300]}")
    status, body, text = api.call("GET", "/jobs/00000000-0000-4000-8000-000000000000")
    r.check("an unknown id gets 404 with a JSON body", status == 404 and is_json_error(status, body), f"{status} {text[:300]}")
    status, body, text = api.call("GET", "/jobs/not-a-uuid")
    r.check("an invalid id gets 400 with a JSON body", status == 400 and is_json_error(status, body), f"{status} {text[:300]}")
    if job_id:
        status, body, text = api.call("POST", f"/dlq/{job_id}/requeue")
        r.check("requeue of a job that is not dead gets a 4xx JSON body", is_json_error(status, body), f"{status} {text[:300]}")

    # 5. The worker function, invoked directly.
    out = invoke_worker(port)
    summary = None
    try:
        summary = json.loads(out.stdout)
    except ValueError:
        pass
    r.check(
        "cargo lambda invoke worker {maxJobs: 5} returns a JSON summary with \"claimed\"",
        out.returncode == 0 and isinstance(summary, dict) and "claimed" in summary,
        f"rc={out.returncode} stdout={out.stdout.strip()[:300]} stderr={out.stderr.strip()[-300:]}",
    )


    # 6. The run command keeps serving: after every function has been idle for longer than any
    #    emulator timeout, and after requests that the emulator or the runtime cannot convert.
    idle = float(os.environ.get("JOBQ_E2E_IDLE", "65"))
    log(f"idle for {idle:.0f} s: no request to any function")
    time.sleep(idle)
    check_every_route(api, port, r, f"after {idle:.0f} s idle", job_id)

    hostile = [
        ("a body that is not UTF-8", {"Content-Type": "application/json"}, b'\xff\xfe{"type":"TEST"}'),
        ("a header value that is not UTF-8", {"X-Hostile": b"\xff\xfe".decode("latin-1")}, None),
        ("a 200 KiB header", {"X-Big": "a" * 200 * 1024}, None),
    ]
    for what, headers, raw in hostile:
        for method, path in ROUTES:
            status, _ = raw_call(port, method, path.replace("{id}", NIL_ID).replace("{name}", "default"), headers, raw)
            log(f"{method} {path} with {what}: {status}")
        check_every_route(api, port, r, f"after {what}", job_id)


NIL_ID = "00000000-0000-4000-8000-000000000000"
ROUTES = [
    ("POST", "/jobs"), ("POST", "/jobs/batch"), ("GET", "/jobs/{id}"), ("GET", "/jobs"), ("POST", "/jobs/{id}/cancel"),
    ("POST", "/api/jobs"), ("GET", "/api/jobs"), ("GET", "/api/jobs/{id}"), ("GET", "/dlq"), ("POST", "/dlq/{id}/requeue"),
    ("GET", "/queues"), ("GET", "/queues/{name}"), ("PUT", "/queues/{name}"), ("POST", "/jobs/bulk"), ("GET", "/operations/{id}"), ("GET", "/audit"),
    ("GET", "/schedules"), ("PUT", "/schedules/{name}"), ("GET", "/schedules/{name}"), ("DELETE", "/schedules/{name}"),
]


def raw_call(port, method, path, headers, body):
    """Sends bytes that urllib would refuse to build; returns (status or the error, body)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=40)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value.encode("latin-1") if isinstance(value, str) else value)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except Exception as err:  # the emulator may close the connection: that is an answer too
        return repr(err), b""
    finally:
        conn.close()


def check_every_route(api, port, r, when, job_id):
    """Each route answers with its function's own response (not the emulator's), within 40 s."""
    status, body, text = api.create(f"e2e {when}")
    new_id = body.get("jobId") if isinstance(body, dict) else None
    r.check(f"POST /jobs answers 201 {when}", status == 201 and bool(new_id), f"{status} {text[:300]}")
    status, body, text = api.call("POST", "/jobs/batch", {"jobs": [{"type": "TEST", "payload": when}]})
    r.check(f"POST /jobs/batch answers 200 {when}", status == 200 and bool((body or {}).get("results")), f"{status} {text[:300]}")
    status, body, text = api.call("GET", f"/jobs/{new_id or job_id or NIL_ID}")
    r.check(f"GET /jobs/{{id}} answers 200 {when}", status == 200 and isinstance(body, dict) and "jobId" in body, f"{status} {text[:300]}")
    status, body, text = api.call("GET", "/jobs?limit=1")
    r.check(f"GET /jobs answers 200 {when}", status == 200 and isinstance(body, dict) and "items" in body, f"{status} {text[:300]}")
    status, body, text = api.call("POST", f"/jobs/{NIL_ID}/cancel")
    r.check(f"POST /jobs/{{id}}/cancel answers its own 404 {when}", status == 404 and is_json_error(status, body), f"{status} {text[:300]}")
    status, body, text = api.call("GET", "/dlq")
    r.check(f"GET /dlq answers 200 {when}", status == 200 and isinstance(body, dict) and "items" in body, f"{status} {text[:300]}")
    status, body, text = api.call("POST", f"/dlq/{NIL_ID}/requeue")
    r.check(f"POST /dlq/{{id}}/requeue answers its own 404 {when}", status == 404 and is_json_error(status, body), f"{status} {text[:300]}")
    status, body, text = api.call("PUT", "/queues/e2e-every-route", {})
    r.check(f"PUT /queues/{{name}} answers 200 {when}", status == 200 and (body or {}).get("paused") is False, f"{status} {text[:300]}")
    status, body, text = api.call("GET", "/queues")
    r.check(f"GET /queues answers 200 {when}", status == 200 and isinstance((body or {}).get("queues"), list), f"{status} {text[:300]}")
    status, body, text = api.call("POST", "/jobs/bulk", {"filter": {"queue": "none"}, "action": "cancel", "dryRun": True})
    r.check(f"POST /jobs/bulk answers 200 {when}", status == 200 and (body or {}).get("count") == 0, f"{status} {text[:300]}")
    status, body, text = api.call("GET", f"/operations/{NIL_ID}")
    r.check(f"GET /operations/{{id}} answers its own 404 {when}", status == 404 and is_json_error(status, body), f"{status} {text[:300]}")
    status, body, text = api.call("GET", "/dashboard")
    r.check(f"GET /dashboard answers 200 {when}", status == 200 and "<title>jobq</title>" in text, f"{status} {text[:200]}")
    status, body, text = api.call("GET", "/audit?limit=1")
    r.check(f"GET /audit answers 200 {when}", status == 200 and isinstance((body or {}).get("items"), list), f"{status} {text[:300]}")
    status, body, text = api.call("GET", "/schedules?limit=1")
    r.check(f"GET /schedules answers 200 {when}", status == 200 and isinstance((body or {}).get("items"), list), f"{status} {text[:300]}")
    status, body, text = api.call("DELETE", "/schedules/e2e-nothing-here")
    r.check(f"DELETE /schedules/{{name}} answers its own 404 {when}", status == 404 and is_json_error(status, body), f"{status} {text[:300]}")
    if new_id:
        job = api.wait_for(new_id, "COMPLETED")
        r.check(f"a job created {when} is COMPLETED", job is not None and job.get("status") == "COMPLETED", f"{job}")
        status, body, text = api.call("GET", "/queues/default")
        done = isinstance(body, dict) and body.get("counts", {}).get("COMPLETED", 0) >= 1 \
            and body.get("throughput", {}).get("completed", 0) >= 1
        r.check(f"GET /queues/default counts the completed job {when}", status == 200 and done, f"{status} {text[:400]}")
    out = invoke_worker(port)
    r.check(
        f"cargo lambda invoke worker answers {when}",
        out.returncode == 0 and '"claimed"' in out.stdout,
        f"rc={out.returncode} stdout={out.stdout.strip()[:300]} stderr={out.stderr.strip()[-300:]}",
    )


def check_schedules(api, r):
    """A one-second schedule through the API: the promoter fires it every second, each job records
    its tick and runs; paused it fires nothing; deleted it is gone and its jobs stay."""
    name = "e2e-every-second"
    body = {"cron": "* * * * * *", "timezone": "Europe/Paris", "job": {"type": "TEST", "queue": "e2e-cron", "payload": "tick"}}
    status, created, text = api.call("PUT", f"/schedules/{name}", body)
    if not r.check("PUT /schedules/{name} answers 201 with the next tick", status == 201 and (created or {}).get("nextTick"), f"{status} {text[:300]}"):
        return
    time.sleep(4.5)
    status, shown, text = api.call("GET", f"/schedules/{name}")
    fired = (shown or {}).get("fired", 0)
    r.check("GET /schedules/{name}: the promoter fired about one tick a second", status == 200 and 3 <= fired <= 6, f"{status} {text[:400]}")
    lag = (shown or {}).get("lagMs")
    r.check("the last tick fired within a second of its time", isinstance(lag, int) and 0 <= lag < 1000, f"lagMs={lag}")
    last_job = (shown or {}).get("lastJobId")
    job = api.wait_for(last_job, "COMPLETED") if last_job else None
    r.check(
        "the last tick's job ran and records its schedule and tick",
        job is not None and job.get("status") == "COMPLETED" and (job.get("schedule") or {}).get("name") == name
        and (job.get("schedule") or {}).get("tick") is not None and job.get("queue") == "e2e-cron",
        f"{job}",
    )
    status, page, text = api.call("GET", "/jobs?queue=e2e-cron&limit=100")
    ticks = [(j.get("schedule") or {}).get("tick") for j in (page or {}).get("items", [])]
    r.check("each tick has one job", len(ticks) >= 3 and len(ticks) == len(set(ticks)), f"{ticks}")
    status, paused, text = api.call("PUT", f"/schedules/{name}", {**body, "paused": True})
    r.check("a paused schedule answers 200 with no next tick", status == 200 and (paused or {}).get("nextTick") is None, f"{status} {text[:300]}")
    _, before, _ = api.call("GET", f"/schedules/{name}")
    time.sleep(2.5)
    _, after, _ = api.call("GET", f"/schedules/{name}")
    r.check("a paused schedule fires nothing", (before or {}).get("fired") == (after or {}).get("fired"), f"{before} {after}")
    status, bad, text = api.call("PUT", f"/schedules/{name}", {**body, "cron": "61 * * * *"})
    r.check("a bad cron expression is a 400 naming the field", status == 400 and "cron" in text, f"{status} {text[:300]}")
    status, _, text = api.call("DELETE", f"/schedules/{name}")
    r.check("DELETE /schedules/{name} answers 204", status == 204, f"{status} {text[:300]}")
    status, _, text = api.call("GET", f"/schedules/{name}")
    r.check("a deleted schedule is a 404", status == 404, f"{status} {text[:300]}")


DASHBOARD_SCHEDULE = "e2e-dashboard-nightly"
DASHBOARD_TOKEN = "e2e-" + "".join(random.choices(string.ascii_lowercase + string.digits, k=24))
DASHBOARD_READONLY_TOKEN = "e2e-ro-" + "".join(random.choices(string.ascii_lowercase + string.digits, k=24))


def check_dashboard(api, port, r):
    """The dashboard in headless Chromium (scripts/dashboard_browser.py): a job created through the
    API is on its pages, and a DLQ requeue made by clicking changes the job."""
    status, body, text = api.call("POST", "/jobs", {"type": "TEST", "payload": {"hello": "dashboard"}})
    job_id = (body or {}).get("jobId") if isinstance(body, dict) else None
    dead = []
    for queue in ("default", "bulk-e2e"):
        status, body, text = api.call("POST", "/jobs", {"type": "TEST", "payload": "FAIL_ALWAYS", "maxAttempts": 1, "queue": queue})
        dead.append((body or {}).get("jobId") if isinstance(body, dict) else None)
    if not r.check("jobs for the dashboard are created", job_id and all(dead), text[:300]):
        return
    status, _, text = api.call("PUT", f"/schedules/{DASHBOARD_SCHEDULE}",
                               {"cron": "0 0 3 * * *", "timezone": "Europe/Paris", "job": {"type": "TEST", "queue": "reports"}})
    r.check("a schedule for the dashboard is created", status == 201, f"{status} {text[:300]}")
    done = api.wait_for(job_id, "COMPLETED")
    dying = [api.wait_for(d, "FAILED") for d in dead]
    if not r.check("they finish (one completed, two dead)", done is not None and all(j and j.get("status") == "FAILED" for j in dying)):
        return
    # The emulator starts a function at its first request; a page that asks for its script and
    # its style at once would find it starting. Start it first, as the API fuzzing does.
    for path in ("/dashboard", "/dashboard/app.js", "/dashboard/app.css"):
        status, text, encoding = api.call_raw("GET", path)
        r.check(f"GET {path} answers 200", status == 200, f"{status} {text[:200]}")
        if path.endswith(".js"):
            with open(os.path.join(REPO, "functions", "src", "dashboard", "app.js"), encoding="utf-8") as f:
                script = f.read()
            r.check(f"GET {path} comes gzip-compressed, and unpacks to the script", encoding == "gzip" and text == script,
                    f"Content-Encoding {encoding}, {len(text)} characters against {len(script)}")
    python = os.path.join(REPO, ".venv-tools", "bin", "python")
    for needed in ("/usr/bin/chromium", "/usr/bin/chromedriver", python):
        if not r.check(f"{needed} is installed", os.path.exists(needed), "scripts/test.sh installs it (apt-get install chromium chromium-driver; scripts/tools.sh)"):
            return
    args = [python, os.path.join(REPO, "scripts", "dashboard_browser.py"), f"http://127.0.0.1:{port}",
            DASHBOARD_TOKEN, DASHBOARD_READONLY_TOKEN, job_id, dead[0], dead[1]]
    if os.environ.get("JOBQ_DASHBOARD_SCREENSHOT"):
        args.append(os.environ["JOBQ_DASHBOARD_SCREENSHOT"])
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as err:
        r.check("the dashboard's browser test ends within 300 s", False, repr(err))
        return
    lines = [line for line in out.stdout.splitlines() if line.startswith(("ok   - ", "FAIL - "))]
    for line in lines:
        r.check(line[7:].split(": ", 1)[0] if line.startswith("FAIL") else line[7:], line.startswith("ok"),
                line[7:].split(": ", 1)[1] if line.startswith("FAIL") and ": " in line[7:] else "")
    r.check("the dashboard's browser test ran to the end", out.returncode == 0 or any(l.startswith("FAIL") for l in lines),
            f"exit {out.returncode}: {out.stderr.strip()[-800:]}")


def invoke_worker(port):
    return subprocess.run(
        [
            "cargo", "lambda", "invoke", "worker",
            "--data-file", os.path.join(REPO, "events", "max-jobs.json"),
            "--invoke-address", "127.0.0.1", "--invoke-port", str(port),
            "--output-format", "json",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


# --------------------------------------------------------------------------------------------------


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


def check_metrics(port, r):
    """The promoter's /metrics counts the runs the flows above made, and reads the DLQ's depth."""
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            status, kind, text = answer.status, answer.headers.get("Content-Type", ""), answer.read().decode()
    except Exception as err:  # refused, timed out, an HTTP error
        r.check(f"GET {url} answers", False, repr(err))
        return
    r.check(f"GET {url} answers 200 in OpenMetrics text", status == 200 and "openmetrics-text" in kind,
            f"{status} {kind}")
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    completed = samples.get('jobq_jobs_finished_total{queue="default",outcome="completed"}', 0)
    r.check("metrics count the completed runs", completed >= 1, f"completed={completed}")
    r.check("metrics read the DLQ's depth from Postgres", "jobq_dlq_jobs" in samples, text[-400:])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    tag = "".join(random.choices(string.ascii_lowercase + string.digits, k=8))
    dbname = f"jobq_e2e_{tag}"
    namespace = f"jobq_e2e_{tag}"
    port = free_port()
    metrics_port = free_port()
    base_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    redis_url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    admin_url = with_database(base_url, "postgres")
    test_url = with_database(base_url, dbname)
    run_dir = tempfile.mkdtemp(prefix="jobq-e2e-")
    keep = os.environ.get("JOBQ_E2E_KEEP") == "1"
    env = {
        **os.environ,
        "DATABASE_URL": test_url,
        "REDIS_URL": redis_url,
        "JOBQ_NAMESPACE": namespace,
        "JOBQ_PORT": str(port),
        "JOBQ_RUN_DIR": run_dir,
        "JOBQ_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
        "JOBQ_DASHBOARD_TOKEN": DASHBOARD_TOKEN,
        "JOBQ_DASHBOARD_READONLY_TOKEN": DASHBOARD_READONLY_TOKEN,
    }
    r = Results()
    created_db = started = False

    # SIGTERM (a CI timeout) unwinds through the finally below like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        log("services")
        subprocess.run(["bash", os.path.join(REPO, "scripts", "services.sh")], check=True,
                       env={**os.environ, "DATABASE_URL": base_url, "REDIS_URL": redis_url})
        log(f"creating database {dbname}")
        psql(admin_url, f'CREATE DATABASE "{dbname}"')
        created_db = True

        log(f"scripts/dev.sh --detach on port {port}, namespace {namespace}, run dir {run_dir}")
        started = True
        dev = subprocess.run(["bash", os.path.join(REPO, "scripts", "dev.sh"), "--detach"], env=env, cwd=REPO)
        if r.check("scripts/dev.sh --detach starts the system", dev.returncode == 0, f"exit {dev.returncode}"):
            os.environ["PATH"] = os.path.join(REPO, ".venv-tools", "bin") + os.pathsep + os.environ["PATH"]
            run_checks(Api(f"http://127.0.0.1:{port}"), port, r)
            check_schedules(Api(f"http://127.0.0.1:{port}"), r)
            check_dashboard(Api(f"http://127.0.0.1:{port}"), port, r)
            check_metrics(metrics_port, r)
    except KeyboardInterrupt:
        r.check("the run was not interrupted", False, "interrupted")
    except Exception as err:  # a broken step is a failure, and cleanup still runs
        r.check("the test harness ran to the end", False, repr(err))
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if started:
            log("scripts/dev.sh --stop")
            subprocess.run(["bash", os.path.join(REPO, "scripts", "dev.sh"), "--stop"], env=env, cwd=REPO)
        try:
            redis = Redis(redis_url)
            log(f"deleted {redis.delete_namespace(namespace)} Redis keys of namespace {namespace}")
            redis.close()
        except Exception as err:
            log(f"could not delete the Redis keys of {namespace}: {err!r}")
        if created_db and not keep:
            try:
                psql(admin_url, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
                log(f"dropped database {dbname}")
            except Exception as err:
                log(f"could not drop database {dbname}: {err!r}")
        if r.failed:
            # The logs that explain a failure: printed, and kept.
            logs = {}
            for name in sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else []:
                if name.endswith(".log"):
                    with open(os.path.join(run_dir, name), errors="replace") as f:
                        logs[name] = f.readlines()
            for name, lines in logs.items():
                log(f"--- last {min(len(lines), 120)} of {len(lines)} lines of {name}\n" + "".join(lines[-120:]))
            # Errors and panics of every log last, where a cut-short output still shows them.
            for name, lines in logs.items():
                bad = [line for line in lines if line.startswith("ERROR") or " ERROR " in line or "panicked" in line]
                if bad:
                    log(f"--- {len(bad)} error lines of {name} (the last 40)\n" + "".join(bad[-40:]))
            log(f"server logs kept in {run_dir}")
        elif keep:
            log(f"kept {run_dir} and database {dbname}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)

    # Cargo-lambda's Runtime API can lose a function's answer larger than about 16 KiB (README,
    # "Local emulator"); this says how close the run came.
    log(f"largest response body: {Api.largest[0]} bytes, for {Api.largest[1]}")
    print(f"{r.passed} passed, {r.failed} failed", flush=True)
    return 0 if r.failed == 0 and r.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
