// Benchmark runner: @parse/node-apn (npm), one Node process.
//
//     node bench/apns/node/runner.js PLAN.json
//
// Run by bench/apns/bench.py; prints one JSON line, like the Python runners (workload.py): a
// warm-up, then `pushes` sends with `concurrency` in flight, CPU time from process.cpuUsage()
// (the whole process, every thread) across the measured phase only, latency per push.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const apn = require('@parse/node-apn');

async function drive(send, total, concurrency) {
  const latencies = new Float64Array(total);
  let next = 0;
  let failures = 0;
  async function worker() {
    while (next < total) {
      const i = next++;
      const started = process.hrtime.bigint();
      const ok = await send(i);
      latencies[i] = Number(process.hrtime.bigint() - started);
      if (!ok) failures++;
    }
  }
  const cpuBefore = process.cpuUsage();
  const wallBefore = process.hrtime.bigint();
  const workers = [];
  for (let w = 0; w < concurrency; w++) workers.push(worker());
  await Promise.all(workers);
  const wall = Number(process.hrtime.bigint() - wallBefore) / 1e9;
  const cpu = process.cpuUsage(cpuBefore);
  return {
    pushes: total,
    failures,
    wall_s: wall,
    cpu_user_s: cpu.user / 1e6,
    cpu_sys_s: cpu.system / 1e6,
    latencies,
  };
}

function percentile(ordered, pct) {
  if (ordered.length === 0) return 0;
  const rank = Math.max(1, Math.ceil((ordered.length * pct) / 100));
  return ordered[rank - 1];
}

async function main() {
  const plan = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const provider = new apn.Provider({
    token: { key: plan.key_file, keyId: plan.key_id, teamId: plan.team_id },
    address: plan.host,
    port: plan.port,
    ca: fs.readFileSync(plan.ca_file, 'utf8'),
    production: false,
  });
  let firstFailure = null;
  async function send() {
    const note = new apn.Notification();
    note.rawPayload = plan.payload;
    note.topic = plan.topic;
    note.pushType = 'alert';
    note.priority = 10;
    note.collapseId = plan.collapse_id;
    note.id = crypto.randomUUID();
    const result = await provider.send(note, plan.device_token);
    if (result.failed.length > 0 && firstFailure === null) {
      firstFailure = JSON.stringify(result.failed[0]);
    }
    return result.sent.length === 1;
  }
  await drive(send, plan.warmup, plan.concurrency);
  const result = await drive(send, plan.pushes, plan.concurrency);
  const ordered = Array.from(result.latencies).sort((a, b) => a - b);
  delete result.latencies;
  result.latency_ms = {
    p50: percentile(ordered, 50) / 1e6,
    p99: percentile(ordered, 99) / 1e6,
    max: ordered.length ? ordered[ordered.length - 1] / 1e6 : 0,
  };
  result.client = 'node-apn';
  if (firstFailure !== null) result.first_failure = firstFailure;
  provider.shutdown();
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch(err => {
  console.error(err);
  process.exit(1);
});
