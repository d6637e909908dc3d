// The jobq benchmark's three measurements, for graphile-worker, on Postgres:
//   enqueue (bulk: many jobs per statement in batches; single: one addJob per job from concurrent callers),
//   process (one in-process run() drains the pre-enqueued no-op jobs),
//   latency (idle queue, concurrency-1 worker waiting: addJob() returning -> task function starting).
// graphile-worker version: 0.18.0 (package.json pins ~0.18.0; the version actually loaded is checked at start).
// Usage: node bench.mjs [--jobs N] [--mode bulk|single] [--concurrency N] [--batch N] [--callers N] [--samples N]
//                       [--batched 1|0]
// Env: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres). Each run creates its own database
//      graphile_bench_<pid>_<ms> from that connection and drops it at the end (also on error / SIGINT / SIGTERM).
// Prints: RESULT system=graphile-worker mode=... n=... enqueue_per_s=... process_per_s=... latency_ms_p50=...
//         latency_ms_p95=... concurrency=... batch=... callers=... batched=...
//
// Bulk enqueue: WorkerUtils.addJobs where the library has it (0.17+); 0.16.x has no JS bulk API, so it calls the
// SQL function graphile_worker.add_jobs(job_spec[]) that 0.16 ships (one statement per batch) through the
// WorkerUtils pool.
// Concurrency default 24 with a pool of concurrency+1 connections: the per-process setting of graphile-worker's own
// perfTest (perfTest/graphile.config.js, 0.17+: concurrentJobs 24, maxPoolSize 25; the 0.16.6 perfTest ran
// -j 10 -m 11 per process). The perfTest runs 4 worker processes; this bench runs one, in-process.
// Batching (--batched 1) is the perfTest's 0.17+ preset: localQueue { size: 500, refetchDelay: { durationMs: 10 } },
// completeJobBatchDelay 0, failJobBatchDelay 0. --batched 0 is localQueue size -1 and both delays -1 (off, the
// library defaults). graphile-worker 0.16.x has none of these options (they arrived in 0.17.0): with 0.16.x the
// default is --batched 0, and --batched 1 is refused rather than silently ignored.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { run, makeWorkerUtils, Logger } from 'graphile-worker';

// Newer releases do not export ./package.json, so walk up from the resolved entry point to find it.
function installedVersion() {
  for (let dir = dirname(createRequire(import.meta.url).resolve('graphile-worker')); dir !== dirname(dir); dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
      if (pkg.name === 'graphile-worker') return pkg.version;
    } catch {}
  }
  throw new Error('cannot find the installed graphile-worker version');
}
const version = installedVersion();
const [major, minor] = version.split('.').map(Number);
const canBatch = major > 0 || minor >= 17;

const args = { jobs: 20000, mode: 'bulk', concurrency: 24, batch: 1000, callers: 32, samples: 200, batched: canBatch ? 1 : 0 };
for (let i = 2; i < process.argv.length; i += 2) {
  const key = process.argv[i].replace(/^--/, '');
  if (!(key in args)) throw new Error(`unknown flag ${process.argv[i]}`);
  args[key] = key === 'mode' ? process.argv[i + 1] : Number(process.argv[i + 1]);
}
if (!['bulk', 'single'].includes(args.mode)) throw new Error(`--mode must be bulk or single, not ${args.mode}`);
if (![0, 1].includes(args.batched)) throw new Error('--batched must be 1 or 0');
if (args.batched && !canBatch) {
  throw new Error(`--batched 1 needs graphile-worker >= 0.17 (localQueue, completeJobBatchDelay, failJobBatchDelay); ` +
    `installed is ${version}`);
}

const baseUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const dbName = `graphile_bench_${process.pid}_${Date.now()}`;
const benchUrl = new URL(baseUrl);
benchUrl.pathname = `/${dbName}`;
const connectionString = benchUrl.toString();
const logger = new Logger(() => () => {});
const preset = !canBatch ? undefined : {
  worker: args.batched
    ? { localQueue: { size: 500, refetchDelay: { durationMs: 10 } }, completeJobBatchDelay: 0, failJobBatchDelay: 0 }
    : { localQueue: { size: -1 }, completeJobBatchDelay: -1, failJobBatchDelay: -1 },
};
// Each runner gets a pool of its own, ended once the runner has stopped: the database is then
// dropped with no connection of the worker's still open (a pool graphile-worker makes from a
// connection string outlives `stop()`, and FORCE then cut its idle clients).
const workerOptions = (concurrency, pgPool) => ({
  pgPool, concurrency, logger, noHandleSignals: true,
  ...(preset ? { preset } : {}),
});
const workerPool = (concurrency) => newPool(concurrency + 1);
// A pool of the run's database whose idle clients' errors are printed rather than thrown.
function newPool(max) {
  const pool = new pg.Pool({ connectionString, max });
  pool.on('error', (e) => console.error(e));
  pool.on('connect', (client) => client.on('error', (e) => console.error(e)));
  return pool;
}

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.round((sorted.length - 1) * p))];
}

let created = false;
async function admin(sql) {
  const client = new pg.Client({ connectionString: baseUrl });
  await client.connect();
  try { await client.query(sql); } finally { await client.end(); }
}
async function dropDatabase() {
  if (!created) return;
  created = false;
  // Only ever the database this run created; FORCE ends any connection still open to it.
  await admin(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`);
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => { dropDatabase().finally(() => process.exit(130)); });
}

async function enqueue(utils) {
  const started = performance.now();
  if (args.mode === 'bulk') {
    for (let done = 0; done < args.jobs; done += args.batch) {
      const specs = Array.from({ length: Math.min(args.batch, args.jobs - done) }, () => ({ identifier: 'noop', payload: {} }));
      if (typeof utils.addJobs === 'function') {
        await utils.addJobs(specs);
      } else {
        await utils.withPgClient((client) => client.query(
          'select count(*) from graphile_worker.add_jobs(' +
          'array(select json_populate_recordset(null::graphile_worker.job_spec, $1::json)))',
          [JSON.stringify(specs)]));
      }
    }
  } else {
    let next = 0;
    await Promise.all(Array.from({ length: args.callers }, async () => {
      while (next++ < args.jobs) await utils.addJob('noop', {});
    }));
  }
  return args.jobs / ((performance.now() - started) / 1000);
}

// Completion: the task function counts its calls; once the N-th call has happened, poll
// `select count(*) from graphile_worker.jobs` (completed jobs are deleted, with or without batched completion)
// every ~1 ms until it is 0, i.e. every completion is committed. Nothing is polled before the N-th call.
async function drain() {
  const probe = new pg.Client({ connectionString });
  await probe.connect();
  let called = 0;
  let allCalled;
  const calledAll = new Promise((resolve) => { allCalled = resolve; });
  const started = performance.now();
  const pool = workerPool(args.concurrency);
  const runner = await run({
    ...workerOptions(args.concurrency, pool),
    taskList: { noop: async () => { if (++called === args.jobs) allCalled(); } },
  });
  await calledAll;
  while (Number((await probe.query('select count(*) as n from graphile_worker.jobs')).rows[0].n) > 0) {
    await new Promise((r) => setTimeout(r, 1));
  }
  const elapsed = (performance.now() - started) / 1000;
  await runner.stop();
  await pool.end();
  await probe.end();
  return args.jobs / elapsed;
}

async function latency(utils) {
  let started;
  const events = new EventEmitter();
  const listening = new Promise((resolve) => events.once('pool:listen:success', resolve));
  const pool = workerPool(1);
  const runner = await run({
    ...workerOptions(1, pool),
    events,
    taskList: { probe: async () => { started(performance.now()); } },
  });
  await listening;
  await new Promise((r) => setTimeout(r, 300));
  const samples = [];
  for (let i = 0; i < args.samples; i++) {
    const began = new Promise((resolve) => { started = resolve; });
    await utils.addJob('probe', {});
    const returned = performance.now();
    const at = await began;
    samples.push(Math.max(0, at - returned));
    await new Promise((r) => setTimeout(r, 5));
  }
  await runner.stop();
  await pool.end();
  return [percentile(samples, 0.5), percentile(samples, 0.95)];
}

let utils;
try {
  await admin(`CREATE DATABASE "${dbName}"`);
  created = true;
  const pgPool = newPool(Math.max(args.callers, 2));
  utils = await makeWorkerUtils({ pgPool, logger });
  await utils.migrate();
  const enqueuePerS = await enqueue(utils);
  const processPerS = await drain();
  const [p50, p95] = args.samples > 0 ? await latency(utils) : [NaN, NaN];
  await utils.release();
  await pgPool.end();
  utils = undefined;
  await dropDatabase();
  console.log(`RESULT system=graphile-worker mode=${args.mode} n=${args.jobs} enqueue_per_s=${enqueuePerS.toFixed(0)} ` +
    `process_per_s=${processPerS.toFixed(0)} latency_ms_p50=${p50.toFixed(2)} latency_ms_p95=${p95.toFixed(2)} ` +
    `concurrency=${args.concurrency} batch=${args.batch} callers=${args.callers} batched=${args.batched}`);
  process.exit(0);
} catch (err) {
  console.error(err);
  await dropDatabase().catch((e) => console.error(e));
  process.exit(1);
}
