// The jobq benchmark's three measurements, for BullMQ, on the same Redis:
//   enqueue (bulk: addBulk in batches; single: one add per job from concurrent callers),
//   process (one Worker drains the pre-enqueued no-op jobs),
//   latency (idle queue: add() returning -> processor starting).
// Usage: node bench.mjs [--jobs N] [--mode bulk|single] [--concurrency N] [--batch N] [--callers N] [--samples N]
// Prints: RESULT system=bullmq mode=... n=... enqueue_per_s=... process_per_s=... latency_ms_p50=... latency_ms_p95=...
import { Queue, Worker } from 'bullmq';
import { performance } from 'node:perf_hooks';

const args = { jobs: 20000, mode: 'bulk', concurrency: 256, batch: 1000, callers: 32, samples: 200 };
for (let i = 2; i < process.argv.length; i += 2) {
  const key = process.argv[i].replace(/^--/, '');
  if (!(key in args)) throw new Error(`unknown flag ${process.argv[i]}`);
  args[key] = key === 'mode' ? process.argv[i + 1] : Number(process.argv[i + 1]);
}
const url = new URL(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
const connection = { host: url.hostname, port: Number(url.port || 6379), maxRetriesPerRequest: null };
const prefix = `bullbench-${process.pid}-${Date.now()}`;

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.round((sorted.length - 1) * p))];
}

async function enqueue(queue) {
  const started = performance.now();
  if (args.mode === 'bulk') {
    for (let done = 0; done < args.jobs; done += args.batch) {
      const size = Math.min(args.batch, args.jobs - done);
      await queue.addBulk(Array.from({ length: size }, () => ({ name: 'noop', data: {} })));
    }
  } else {
    let next = 0;
    await Promise.all(Array.from({ length: args.callers }, async () => {
      while (next++ < args.jobs) await queue.add('noop', {});
    }));
  }
  return args.jobs / ((performance.now() - started) / 1000);
}

async function drain(name) {
  let completed = 0;
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  const started = performance.now();
  const worker = new Worker(name, async () => {}, { connection, prefix, concurrency: args.concurrency });
  worker.on('completed', () => { if (++completed === args.jobs) finish(); });
  await finished;
  const elapsed = (performance.now() - started) / 1000;
  await worker.close();
  return args.jobs / elapsed;
}

async function latency() {
  const name = 'latency';
  const queue = new Queue(name, { connection, prefix });
  let started;
  const worker = new Worker(name, async () => { started(performance.now()); }, { connection, prefix, concurrency: 1 });
  await worker.waitUntilReady();
  await new Promise((r) => setTimeout(r, 300));
  const samples = [];
  for (let i = 0; i < args.samples; i++) {
    const began = new Promise((resolve) => { started = resolve; });
    await queue.add('probe', {});
    const returned = performance.now();
    const at = await began;
    samples.push(Math.max(0, at - returned));
    await new Promise((r) => setTimeout(r, 5));
  }
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  return [percentile(samples, 0.5), percentile(samples, 0.95)];
}

const name = 'drain';
const queue = new Queue(name, { connection, prefix });
const enqueuePerS = await enqueue(queue);
const processPerS = await drain(name);
await queue.obliterate({ force: true });
await queue.close();
const [p50, p95] = args.samples > 0 ? await latency() : [NaN, NaN];
console.log(`RESULT system=bullmq mode=${args.mode} n=${args.jobs} enqueue_per_s=${enqueuePerS.toFixed(0)} ` +
  `process_per_s=${processPerS.toFixed(0)} latency_ms_p50=${p50.toFixed(2)} latency_ms_p95=${p95.toFixed(2)} ` +
  `concurrency=${args.concurrency} batch=${args.batch} callers=${args.callers}`);
process.exit(0);
