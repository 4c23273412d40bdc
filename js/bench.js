// Per-decision cost of @rollout/policy in Node, next to flagd-core (the OpenFeature flagd
// in-process evaluator) deciding the same thing: a 50 % rollout with an exclusion list.
//
//   npm run bench                  # 9 rounds
//   BENCH_ROUNDS=21 npm run bench
//
// Each round times every case once, alternating which of ours and flagd's single
// evaluation goes first; a case's figure is the median of its rounds, and the ratio is the
// median of the per-round ratios ours ÷ flagd (paired: same round, same machine load).
// The last lines are `SUMMARY name: value`, as `make bench` prints them.
//
// `inproc_js_eval` is one evaluation through the OpenFeature client (`@openfeature/server-sdk`,
// `await client.getBooleanValue(…)`) and the in-process provider (src/openfeature.js), fed by
// a sync endpoint served from this process; `flagd_openfeature` is flagd-core's evaluation
// behind the same client (a minimal provider around FlagdCore), for scale. The issue's goal
// compares `inproc_js_eval` with flagd-core's own evaluation (`flagd_single`).
import { createServer } from 'node:http';

import { FlagdCore } from '@openfeature/flagd-core';
import { OpenFeature } from '@openfeature/server-sdk';

import * as generated from './dist/generated/rollout_policy.js';
import { loadPolicy, repositoryIdToWire } from './src/index.js';
import { RolloutProvider } from './src/openfeature.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 9);
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error(`invalid BENCH_ROUNDS: expected a positive integer, got ${process.env.BENCH_ROUNDS}`);
const SINGLE = 50_000; // calls per round of a single-decision case
const BATCHES = 40; // batches of IDS.length per round of a batch case

const policy = await loadPolicy();
const FEATURE = 'hybrid_progressive_capture';
const ev = policy.evaluator({ featureName: FEATURE, rolloutPercentage: 50, isActive: true, excludedRepositories: ['owner/excluded'] });

// flagd: the same decision as a boolean flag — excluded ids off, then a 50/50 split on the
// targeting key (flagd hashes flag key + targeting key, as we hash feature + id).
const flagd = new FlagdCore();
flagd.setConfigurations(
  JSON.stringify({
    flags: {
      [FEATURE]: {
        state: 'ENABLED',
        variants: { on: true, off: false },
        defaultVariant: 'off',
        targeting: { if: [{ in: [{ var: 'targetingKey' }, ['owner/excluded']] }, 'off', { fractional: [['on', 50], ['off', 50]] }] },
      },
    },
  }),
);

/** 1,000 distinct repository ids as a database returns them (lowercase hyphenated UUIDs). */
const IDS = Array.from({ length: 1000 }, (_, i) => {
  const h = (i * 0x9e3779b1 + 0x7f4a7c15).toString(16).padStart(8, '0').slice(-8);
  return `${h}-0c4b-4f5e-${(0x8000 + i).toString(16)}-2b7a8e6f${(i * 40503).toString(16).padStart(4, '0').slice(-4)}`;
});
if (new Set(IDS).size !== IDS.length) throw new Error('bench ids are not distinct');
const JOB = { triggerSource: 'scheduled', maxItems: 100 };
const REQUESTS = IDS.map((id) => ({ repository: { id }, job: JOB }));

// Both evaluators really decide: about half of the ids in, on both sides.
const oursIn = IDS.filter((id) => ev.isEligible(id).eligible).length;
const flagdIn = IDS.filter((id) => flagd.resolveBooleanEvaluation(FEATURE, false, { targetingKey: id }).value).length;
for (const [who, n] of [['@rollout/policy', oursIn], ['flagd-core', flagdIn]]) {
  if (n < 400 || n > 600) throw new Error(`${who} admitted ${n} of ${IDS.length} ids at 50 %`);
}

// The in-process provider, fed by a sync endpoint of this process (the snapshot names no
// policy: the bundled one decides), behind the OpenFeature client; flagd-core behind the same
// client in another domain.
const ROW = {
  feature_name: FEATURE, rollout_percentage: 50, is_active: true, target_repositories: [], excluded_repositories: ['owner/excluded'],
  rollout_strategy: 'percentage', max_error_rate: 5, monitoring_window_hours: 24, auto_rollback_enabled: true, emergency_stop: false,
  min_jobs_for_rollback: 10, metadata: {},
};
const SNAPSHOT = JSON.stringify({ feature: FEATURE, config_version: 1, config: ROW, policy: null, etag: '"1-none"' });
const sync = createServer((req, res) => {
  if (req.url === `/v1/sync/${FEATURE}`) return res.writeHead(200, { 'content-type': 'application/json' }).end(SNAPSHOT);
  if (req.url === `/v1/sync/${FEATURE}/events`) return res.writeHead(200, { 'content-type': 'text/event-stream' }).write(`event: snapshot\ndata: ${SNAPSHOT}\n\n`);
  res.writeHead(404).end();
});
await new Promise((resolve) => sync.listen(0, '127.0.0.1', resolve));
const inproc = new RolloutProvider({ baseUrl: `http://127.0.0.1:${sync.address().port}`, feature: FEATURE });
await OpenFeature.setProviderAndWait('inproc', inproc);
const inprocClient = OpenFeature.getClient('inproc');
await OpenFeature.setProviderAndWait('flagd', {
  metadata: { name: 'flagd-core' },
  runsOn: 'server',
  resolveBooleanEvaluation: async (key, def, context, logger) => flagd.resolveBooleanEvaluation(key, def, context, logger),
  resolveStringEvaluation: async (key, def, context, logger) => flagd.resolveStringEvaluation(key, def, context, logger),
  resolveNumberEvaluation: async (key, def, context, logger) => flagd.resolveNumberEvaluation(key, def, context, logger),
  resolveObjectEvaluation: async (key, def, context, logger) => flagd.resolveObjectEvaluation(key, def, context, logger),
});
const flagdClient = OpenFeature.getClient('flagd');
// The client's own cost: a provider that answers at once.
const NOOP_ANSWER = Object.freeze({ value: true });
await OpenFeature.setProviderAndWait('noop', {
  metadata: { name: 'noop' },
  runsOn: 'server',
  resolveBooleanEvaluation: () => Promise.resolve(NOOP_ANSWER),
  resolveStringEvaluation: () => Promise.resolve(NOOP_ANSWER),
  resolveNumberEvaluation: () => Promise.resolve(NOOP_ANSWER),
  resolveObjectEvaluation: () => Promise.resolve(NOOP_ANSWER),
});
const noopClient = OpenFeature.getClient('noop');
for (const [i, id] of IDS.entries()) {
  const a = ev.isEligible(id).eligible;
  const b = await inprocClient.getBooleanValue(FEATURE, !a, { targetingKey: id });
  if (a !== b) throw new Error(`the in-process provider answers ${b} for ${id} (#${i}), the evaluator ${a}`);
}

// The component alone, through the jco bindings with inputs prepared outside the timing:
// the floor under the wrapper's figures.
const WIRE_CONFIG = {
  featureName: FEATURE, rolloutPercentage: 50, isActive: true, targetRepositories: [], excludedRepositories: ['owner/excluded'],
  rolloutStrategy: 'percentage', maxErrorRate: 5, monitoringWindowHours: 24, autoRollbackEnabled: true, emergencyStop: false, minJobsForRollback: 10,
};
const rawEvaluator = generated.rules.Evaluator.create(WIRE_CONFIG);
const HALVES = IDS.map((id) => repositoryIdToWire(id).val);
const COLUMNS = { uuids: BigUint64Array.from(HALVES.flat()), textIds: [], categories: new Uint8Array(IDS.length) };
const packed = generated.packed;
const handle = packed?.open(WIRE_CONFIG);

let sink = 0;
const CASES = {
  eligible_single: () => {
    for (let i = 0; i < SINGLE; i++) sink ^= ev.isEligible(IDS[i % 1000]).bucket;
    return SINGLE;
  },
  flagd_single: () => {
    for (let i = 0; i < SINGLE; i++) sink ^= flagd.resolveBooleanEvaluation(FEATURE, false, { targetingKey: IDS[i % 1000] }).value ? 1 : 0;
    return SINGLE;
  },
  route_single: () => {
    for (let i = 0; i < SINGLE; i++) sink ^= ev.route(IDS[i % 1000], JOB).bucket;
    return SINGLE;
  },
  eligible_batch: () => {
    for (let b = 0; b < BATCHES; b++) sink ^= ev.isEligibleBatch(IDS)[b].bucket;
    return BATCHES * IDS.length;
  },
  route_batch: () => {
    for (let b = 0; b < BATCHES; b++) sink ^= ev.routeBatch(REQUESTS)[b].bucket;
    return BATCHES * REQUESTS.length;
  },
  // Where the time goes (not in the summary): the component alone, given ready inputs; a
  // text id (the typed path, never the scalar one); `info`, the cheapest call with a result.
  raw_eligible_batch: () => {
    for (let b = 0; b < BATCHES; b++) sink ^= generated.rules.Evaluator.prototype.isEligibleBatch.call(rawEvaluator, COLUMNS).buckets[b];
    return BATCHES * IDS.length;
  },
  ...(packed && {
    raw_eligible_single_scalar: () => {
      for (let i = 0; i < SINGLE; i++) {
        const [hi, lo] = HALVES[i % 1000];
        sink ^= packed.isEligible(handle, hi, lo, 0);
      }
      return SINGLE;
    },
  }),
  inproc_js_eval: async () => {
    for (let i = 0; i < SINGLE; i++) sink ^= (await inprocClient.getBooleanValue(FEATURE, false, { targetingKey: IDS[i % 1000] })) ? 1 : 0;
    return SINGLE;
  },
  flagd_openfeature: async () => {
    for (let i = 0; i < SINGLE; i++) sink ^= (await flagdClient.getBooleanValue(FEATURE, false, { targetingKey: IDS[i % 1000] })) ? 1 : 0;
    return SINGLE;
  },
  openfeature_noop: async () => {
    for (let i = 0; i < SINGLE; i++) sink ^= (await noopClient.getBooleanValue(FEATURE, false, { targetingKey: IDS[i % 1000] })) ? 1 : 0;
    return SINGLE;
  },
  inproc_direct: () => {
    for (let i = 0; i < SINGLE; i++) sink ^= inproc.booleanDetails(FEATURE, { targetingKey: IDS[i % 1000] }).flagMetadata.bucket;
    return SINGLE;
  },
  eligible_single_text_id: () => {
    for (let i = 0; i < SINGLE; i++) sink ^= ev.isEligible('owner/name').bucket;
    return SINGLE;
  },
  info: () => {
    for (let i = 0; i < SINGLE; i++) sink ^= policy.info().name.length;
    return SINGLE;
  },
};

/** ns per decision of one run of `CASES[name]`. */
async function time(name) {
  const t0 = process.hrtime.bigint();
  const n = await CASES[name]();
  return Number(process.hrtime.bigint() - t0) / n;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

for (const name of Object.keys(CASES)) await time(name); // warm up: every path compiled before the first round
const runs = Object.fromEntries(Object.keys(CASES).map((name) => [name, []]));
const ratios = [];
const inprocRatios = [];
const directRatios = [];
for (let r = 0; r < ROUNDS; r++) {
  // flagd's single evaluation beside ours and beside the provider's, in alternating order
  const first = ['eligible_single', 'flagd_single', 'inproc_direct', 'inproc_js_eval'];
  const pair = r % 2 === 0 ? first : [...first].reverse();
  const order = [...pair, ...Object.keys(CASES).filter((n) => !pair.includes(n))];
  const t = {};
  for (const name of order) runs[name].push((t[name] = await time(name)));
  ratios.push(t.eligible_single / t.flagd_single);
  inprocRatios.push(t.inproc_js_eval / t.flagd_single);
  directRatios.push(t.inproc_direct / t.flagd_single);
}

const info = policy.info();
console.log(`@rollout/policy ${info.name} ${info.version}, node ${process.version}, ${ROUNDS} rounds, scalar fast path: ${policy.fastPath ? 'yes' : 'no (the component has no `packed` export)'}`);
console.log('ns per decision: median (min … max) over the rounds');
for (const [name, xs] of Object.entries(runs)) {
  console.log(`  ${name.padEnd(24)} ${median(xs).toFixed(0).padStart(6)}  (${Math.min(...xs).toFixed(0)} … ${Math.max(...xs).toFixed(0)})`);
}
console.log(`  ours ÷ flagd, per round: ${ratios.map((x) => x.toFixed(2)).join(' ')}`);
console.log(`  inproc_js_eval ÷ flagd_single, per round: ${inprocRatios.map((x) => x.toFixed(2)).join(' ')}`);
console.log(`  inproc_direct ÷ flagd_single, per round: ${directRatios.map((x) => x.toFixed(2)).join(' ')}`);
if (sink === 0.5) console.log(''); // keep `sink` observable so no loop is optimised away

const ns = (name) => median(runs[name]).toFixed(0);
console.log(`SUMMARY js_eligible_single_ns: ${ns('eligible_single')}`);
console.log(`SUMMARY js_flagd_single_ns: ${ns('flagd_single')}`);
console.log(`SUMMARY js_eligible_single_ratio: ${median(ratios).toFixed(2)}`);
console.log(`SUMMARY js_eligible_batch_ns: ${ns('eligible_batch')}`);
console.log(`SUMMARY js_route_single_ns: ${ns('route_single')}`);
console.log(`SUMMARY js_route_batch_ns: ${ns('route_batch')}`);
console.log(`SUMMARY inproc_js_eval_ns: ${ns('inproc_js_eval')}`);
console.log(`SUMMARY inproc_js_eval_ratio: ${median(inprocRatios).toFixed(2)}`);
console.log(`SUMMARY js_flagd_openfeature_ns: ${ns('flagd_openfeature')}`);
console.log(`SUMMARY js_openfeature_noop_ns: ${ns('openfeature_noop')}`);
console.log(`SUMMARY inproc_js_provider_ns: ${ns('inproc_direct')}`);
console.log(`SUMMARY inproc_js_provider_ratio: ${median(directRatios).toFixed(2)}`);

await OpenFeature.close();
sync.closeAllConnections?.();
sync.close();
