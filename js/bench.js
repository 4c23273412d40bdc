// Per-decision cost of the wrapper (and of the raw jco bindings under it), in ns.
//   npm run bench            # median of 9 runs each
//   BENCH_RUNS=21 npm run bench
import { loadPolicy } from './src/index.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 9);
const policy = await loadPolicy();
const { rules } = await import('./dist/generated/rollout_policy.js');

const config = { rolloutPercentage: 50, isActive: true, excludedRepositories: ['owner/excluded'] };
const ev = policy.evaluator(config);
const uuid = '6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11';
const job = { triggerSource: 'scheduled', maxItems: 100 };
const ids = Array.from({ length: 1000 }, (_, i) => `${(0x10000000 + i * 7919).toString(16)}-0c4b-4f5e-9d41-2b7a8e6f0c11`);
const requests = ids.map((id) => ({ repository: { id }, job }));

const raw = rules.Evaluator.create({
  featureName: 'hybrid_progressive_capture', rolloutPercentage: 50, isActive: true, targetRepositories: [],
  excludedRepositories: ['owner/excluded'], rolloutStrategy: 'percentage', maxErrorRate: 5, monitoringWindowHours: 24,
  autoRollbackEnabled: true, emergencyStop: false, minJobsForRollback: 10,
});
const rawRepo = { id: { tag: 'uuid', val: [0x6f1c9a3e0c4b4f5en, 0x9d412b7a8e6f0c11n] } };
const rawJob = { prNumbers: new BigUint64Array(0), triggerSource: 'scheduled', maxItems: 100 };
const rawRequests = requests.map(() => ({ repository: rawRepo, job: rawJob }));

/** Median ns per decision over RUNS runs of `iterations` calls of `f` (each making `per` decisions). */
function bench(name, iterations, f, per = 1) {
  for (let i = 0; i < Math.min(iterations, 2000); i++) f(); // warm up
  const runs = [];
  for (let r = 0; r < RUNS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) f();
    runs.push(Number(process.hrtime.bigint() - t0) / (iterations * per));
  }
  runs.sort((a, b) => a - b);
  const median = runs[Math.floor(runs.length / 2)];
  console.log(`${name}: ${median.toFixed(0)} ns/decision (min ${runs[0].toFixed(0)}, max ${runs.at(-1).toFixed(0)})`);
  return median;
}

console.log(`@rollout/policy bench: ${policy.info().name} ${policy.info().version}, node ${process.version}, ${RUNS} runs, median`);
bench('info (raw jco, trivial call)', 100_000, () => rules.info());
bench('categorize', 100_000, () => policy.categorize({ starCount: 40, contributorCount: 5, prCount: 99 }));
bench('isEligible uuid', 100_000, () => ev.isEligible(uuid));
bench('isEligible text id', 100_000, () => ev.isEligible('owner/name'));
bench('route uuid (raw jco)', 100_000, () => raw.route(rawRepo, rawJob));
bench('route uuid', 100_000, () => ev.route(uuid, job));
bench('route {id} + job', 100_000, () => ev.route({ id: uuid, category: 'small' }, job));
bench('routeBatch 1000 (raw jco)', 200, () => raw.routeBatch(rawRequests), 1000);
bench('routeBatch 1000', 200, () => ev.routeBatch(requests), 1000);
bench('isEligibleBatch 1000', 200, () => ev.isEligibleBatch(ids), 1000);
