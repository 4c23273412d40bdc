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
// behind the same client (a minimal provider around FlagdCore). The issue's goal compares
// `inproc_js_eval` with flagd-core's own evaluation (`flagd_single`); the same path on both
// sides is `inproc_js_eval ÷ flagd_openfeature` (each round times the two one after the other,
// alternating which goes first).
//
// Where the client's own time goes (`openfeature_noop`, a provider that answers at once):
// the SDK is published built for ES2015 (esbuild --target=es2015), so each of its async
// methods is a generator run by a helper (`__async(this, arguments, function* () {…})`) and
// every evaluation creates and first-calls five new generator functions (getBooleanValue,
// evaluate, beforeHooks, afterHooks, finallyHooks). `openfeature_noop_native` is the
// same provider behind the same build with only those methods turned back into native async
// functions (rewritten in memory at start), `…_assign` with also its `__spreadProps` helper
// (Object.defineProperties of Object.getOwnPropertyDescriptors, once per evaluation) as
// Object.assign. Neither is in the summary; both are skipped, saying so, if the SDK's text
// is not the shape the rewrite expects.
import { readFile } from 'node:fs/promises';
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

/**
 * This SDK's ESM build with its down-levelled async methods native again (and, with `assign`,
 * `__spreadProps` as Object.assign), as a second, separate API instance with the noop provider:
 * `{client}`, or `{why}` when the text is not the shape expected or the copy does not work.
 */
async function rewrittenSdk({ assign }) {
  const lines = (await readFile(new URL(import.meta.resolve('@openfeature/server-sdk')), 'utf8')).split('\n');
  let rewritten = 0;
  for (let i = 0; i < lines.length; i++) {
    const m = /^(\s*)(.*?)__async\(this, (null|arguments), function\* \((.*?)\) \{$/.exec(lines[i]);
    if (!m) continue;
    const [, indent, head, args, params] = m;
    lines[i] = `${indent}${head}(async (${params}) => {`;
    let j = i + 1;
    for (; j < lines.length; j++) {
      const end = /^\}\)([;,]?)$/.exec(lines[j].slice(indent.length));
      if (lines[j].startsWith(indent) && end) {
        lines[j] = `${indent}})(${args === 'arguments' ? '...arguments' : ''})${end[1]}`;
        break;
      }
      lines[j] = lines[j].replace(/\byield\b/g, 'await');
    }
    if (j === lines.length) return { why: `no end found for the async method at line ${i + 1}` };
    rewritten++;
  }
  let code = lines.join('\n').replace(/^\/\/# sourceMappingURL=.*$/m, '');
  if (rewritten < 5 || /__async\(|\byield\b/.test(code)) return { why: 'the SDK build is not the shape the rewrite expects' };
  if (assign) code = code.replace(/^var __spreadProps = .*$/m, 'var __spreadProps = (a, b) => Object.assign(a, b);');
  code = code.replaceAll('"@openfeature/core"', JSON.stringify(import.meta.resolve('@openfeature/core')));
  const key = Symbol.for('@openfeature/js-sdk/api'); // the SDK keeps its API instance there: hide ours while the copy makes its own
  const ours = globalThis[key];
  delete globalThis[key];
  try {
    const sdk = await import(`data:text/javascript;base64,${Buffer.from(code).toString('base64')}`);
    if (sdk.OpenFeature === OpenFeature) return { why: 'the copy shares the API instance' };
    await sdk.OpenFeature.setProviderAndWait('noop', { metadata: { name: 'noop' }, runsOn: 'server', resolveBooleanEvaluation: () => Promise.resolve(NOOP_ANSWER) });
    const client = sdk.OpenFeature.getClient('noop');
    if ((await client.getBooleanValue(FEATURE, false, { targetingKey: IDS[0] })) !== true) return { why: 'the copy does not answer' };
    return { client };
  } catch (e) {
    return { why: `the copy does not load: ${e.message}` };
  } finally {
    globalThis[key] = ours;
  }
}
const nativeAsync = await rewrittenSdk({ assign: false });
const nativeAsyncAssign = await rewrittenSdk({ assign: true });
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
  ...(nativeAsync.client && {
    openfeature_noop_native: async () => {
      const c = nativeAsync.client;
      for (let i = 0; i < SINGLE; i++) sink ^= (await c.getBooleanValue(FEATURE, false, { targetingKey: IDS[i % 1000] })) ? 1 : 0;
      return SINGLE;
    },
  }),
  ...(nativeAsyncAssign.client && {
    openfeature_noop_native_assign: async () => {
      const c = nativeAsyncAssign.client;
      for (let i = 0; i < SINGLE; i++) sink ^= (await c.getBooleanValue(FEATURE, false, { targetingKey: IDS[i % 1000] })) ? 1 : 0;
      return SINGLE;
    },
  }),
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
const clientRatios = [];
for (let r = 0; r < ROUNDS; r++) {
  // flagd's single evaluation beside ours and beside the provider's, and flagd behind the
  // client beside ours behind it, in alternating order
  const first = ['eligible_single', 'flagd_single', 'inproc_direct', 'inproc_js_eval', 'flagd_openfeature'];
  const pair = r % 2 === 0 ? first : [...first].reverse();
  const order = [...pair, ...Object.keys(CASES).filter((n) => !pair.includes(n))];
  const t = {};
  for (const name of order) runs[name].push((t[name] = await time(name)));
  ratios.push(t.eligible_single / t.flagd_single);
  inprocRatios.push(t.inproc_js_eval / t.flagd_single);
  directRatios.push(t.inproc_direct / t.flagd_single);
  clientRatios.push(t.inproc_js_eval / t.flagd_openfeature);
}

const info = policy.info();
console.log(`@rollout/policy ${info.name} ${info.version}, node ${process.version}, ${ROUNDS} rounds, scalar fast path: ${policy.fastPath ? 'yes' : 'no (the component has no `packed` export)'}`);
console.log('ns per decision: median (min … max) over the rounds');
const width = Math.max(24, ...Object.keys(runs).map((name) => name.length));
for (const [name, xs] of Object.entries(runs)) {
  console.log(`  ${name.padEnd(width)} ${median(xs).toFixed(0).padStart(6)}  (${Math.min(...xs).toFixed(0)} … ${Math.max(...xs).toFixed(0)})`);
}
console.log(`  ours ÷ flagd, per round: ${ratios.map((x) => x.toFixed(2)).join(' ')}`);
console.log(`  inproc_js_eval ÷ flagd_single, per round: ${inprocRatios.map((x) => x.toFixed(2)).join(' ')}`);
console.log(`  inproc_direct ÷ flagd_single, per round: ${directRatios.map((x) => x.toFixed(2)).join(' ')}`);
console.log(`  inproc_js_eval ÷ flagd_openfeature, per round: ${clientRatios.map((x) => x.toFixed(2)).join(' ')}`);
for (const [name, v] of [['openfeature_noop_native', nativeAsync], ['openfeature_noop_native_assign', nativeAsyncAssign]]) {
  if (!v.client) console.log(`  ${name}: skipped (${v.why})`);
}
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
console.log(`SUMMARY inproc_js_eval_openfeature_ratio: ${median(clientRatios).toFixed(2)}`);
console.log(`SUMMARY js_flagd_openfeature_ns: ${ns('flagd_openfeature')}`);
console.log(`SUMMARY js_openfeature_noop_ns: ${ns('openfeature_noop')}`);
console.log(`SUMMARY inproc_js_provider_ns: ${ns('inproc_direct')}`);
console.log(`SUMMARY inproc_js_provider_ratio: ${median(directRatios).toFixed(2)}`);

await OpenFeature.close();
sync.closeAllConnections?.();
sync.close();
