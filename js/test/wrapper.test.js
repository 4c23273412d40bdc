// Tests of the JavaScript layer itself: id canonicalisation, error fields, camelCase
// plain objects, defaults, batches, disposal, and the case runner's own strictness.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';

import {
  CATEGORIES,
  DEFAULT_CONFIG,
  Evaluator,
  PROCESSORS,
  Policy,
  PolicyError,
  STRATEGIES,
  TRIGGER_SOURCES,
  canonicalRepositoryId,
  configFromRow,
  loadPolicy,
  repositoryIdToWire,
} from '../src/index.js';
import { CaseFileError, checkCase, runCase } from './cases.js';
import { referenceWire } from './reference.js';

const policy = await loadPolicy();
const UUID = '6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11';

/** Assert `f` throws a PolicyError for `field` whose message names the field (and `also`). */
function throwsField(f, field, ...also) {
  assert.throws(f, (e) => {
    assert.ok(e instanceof PolicyError, `expected a PolicyError, got ${e}`);
    assert.equal(e.name, 'PolicyError');
    assert.equal(e.field, field);
    assert.ok(e.message.includes(field), e.message);
    for (const s of also) assert.ok(e.message.includes(s), `${JSON.stringify(e.message)} lacks ${JSON.stringify(s)}`);
    return true;
  });
}

describe('loading', () => {
  test('loadPolicy returns one shared policy', async () => {
    assert.equal(await loadPolicy(), policy);
  });

  test('info is a plain {name, version}', () => {
    const info = policy.info();
    assert.deepEqual(Object.keys(info), ['name', 'version']);
    assert.equal(info.name, 'rollout-reference');
    assert.match(info.version, /^\d+\.\d+\.\d+/);
  });

  test('every runtime export is declared in index.d.ts', async () => {
    const dts = readFileSync(new URL('../src/index.d.ts', import.meta.url), 'utf8');
    const declared = new Set([...dts.matchAll(/^export declare (?:const|function|class) (\w+)/gm)].map((m) => m[1]));
    const exported = Object.keys(await import('../src/index.js')).sort();
    assert.deepEqual(exported, [...declared].sort());
  });

  test('every public member of Policy and Evaluator is declared in index.d.ts', () => {
    const dts = readFileSync(new URL('../src/index.d.ts', import.meta.url), 'utf8');
    for (const cls of [Policy, Evaluator]) {
      const start = dts.indexOf(`export declare class ${cls.name} {`);
      assert.notEqual(start, -1, `index.d.ts declares no class ${cls.name}`);
      const body = dts.slice(start, dts.indexOf('\n}', start));
      const declared = new Set([...body.matchAll(/^ {2}(?:readonly )?(\w+)[(:?]/gm)].map((m) => m[1]));
      const members = Object.getOwnPropertyNames(cls.prototype).filter((n) => n !== 'constructor');
      assert.ok(members.length > 3, `${cls.name} has members`);
      for (const m of members) assert.ok(declared.has(m), `${cls.name}.${m} is not declared in index.d.ts`);
    }
  });
});

describe('repository ids are canonicalised like the Rust host', () => {
  const hi = 0x6f1c9a3e0c4b4f5en;
  const lo = 0x9d412b7a8e6f0c11n;

  test('hyphenated (any case), braced and 32-hex UUIDs become two u64 halves', () => {
    for (const form of [
      UUID,
      UUID.toUpperCase(),
      '6f1C9a3E-0c4B-4f5e-9D41-2b7a8e6f0c11',
      `{${UUID}}`,
      `{${UUID.toUpperCase()}}`,
      UUID.replaceAll('-', ''),
      UUID.replaceAll('-', '').toUpperCase(),
      `{${UUID.replaceAll('-', '')}}`,
    ]) {
      assert.deepEqual(repositoryIdToWire(form), { tag: 'uuid', val: [hi, lo] }, form);
      assert.equal(canonicalRepositoryId(form), UUID, form);
    }
  });

  test('the halves are most significant first, full 64-bit range', () => {
    assert.deepEqual(repositoryIdToWire('ffffffff-ffff-ffff-0000-000000000001').val, [0xffffffffffffffffn, 1n]);
    assert.deepEqual(repositoryIdToWire('00000000000000000000000000000000').val, [0n, 0n]);
  });

  test('anything else is text, used as given', () => {
    for (const form of [
      'owner/name',
      '',
      '{}',
      UUID.slice(0, -1),
      `${UUID}0`,
      UUID.replace('-', '_'),
      `g${UUID.slice(1)}`,
      ` ${UUID}`,
      `{${UUID}`,
      `${UUID}}`,
      `{{${UUID}}}`,
      UUID.replaceAll('-', '').slice(0, 31),
      '6f1c9a3e0c4b-4f5e-9d41-2b7a8e6f0c11-',
      `${UUID.slice(0, 8)}--0c4b4f5e-9d41-2b7a8e6f0c11`,
      '6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c1\u00e9',
    ]) {
      assert.deepEqual(repositoryIdToWire(form), { tag: 'text', val: form }, JSON.stringify(form));
      assert.equal(canonicalRepositoryId(form), form);
    }
  });

  test('agrees with a regex reference on random and mutated ids', () => {
    let seed = 12345;
    const rand = (n) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const alphabet = '0123456789abcdefABCDEFgG-{} /\u00e9';
    for (let i = 0; i < 5000; i++) {
      const bytes = Array.from({ length: 16 }, () => rand(256).toString(16).padStart(2, '0')).join('');
      let id = `${bytes.slice(0, 8)}-${bytes.slice(8, 12)}-${bytes.slice(12, 16)}-${bytes.slice(16, 20)}-${bytes.slice(20)}`;
      if (rand(2)) id = id.toUpperCase();
      if (rand(4) === 0) id = id.replaceAll('-', '');
      if (rand(4) === 0) id = `{${id}}`;
      if (rand(3) === 0) {
        const at = rand(id.length + 1);
        const op = rand(3);
        const ch = alphabet[rand(alphabet.length)];
        id = op === 0 ? id.slice(0, at) + ch + id.slice(at + 1) : op === 1 ? id.slice(0, at) + ch + id.slice(at) : id.slice(0, at) + id.slice(at + 1);
      }
      assert.deepEqual(repositoryIdToWire(id), referenceWire(id), JSON.stringify(id));
    }
  });

  test('every form of a UUID gets the same bucket, and matches target lists in any form', () => {
    const ev = policy.evaluator({ rolloutPercentage: 50, isActive: true });
    const b = ev.isEligible(UUID).bucket;
    assert.equal(b, 59); // SPEC §5's example
    for (const form of [UUID.toUpperCase(), `{${UUID}}`, UUID.replaceAll('-', '')]) {
      assert.equal(ev.isEligible({ id: form }).bucket, b);
    }
    const targeted = policy.evaluator({ isActive: true, targetRepositories: [`{${UUID.toUpperCase()}}`] });
    assert.equal(targeted.isEligible(UUID.replaceAll('-', '')).reason, 'targeted');
  });
});

describe('errors are PolicyErrors naming the field and the allowed values', () => {
  const ev = policy.evaluator({ rolloutPercentage: 100, isActive: true });

  test('unknown enum values list the allowed values', () => {
    throwsField(() => ev.route(UUID, { triggerSource: 'cron' }), 'triggerSource', 'manual, scheduled, automatic');
    throwsField(() => ev.route(UUID, { triggerSource: 'MANUAL' }), 'triggerSource');
    throwsField(() => policy.evaluator({ rolloutStrategy: 'canary' }), 'rolloutStrategy', 'percentage, whitelist, repository_size');
    throwsField(() => policy.evaluator({ rolloutStrategy: 'repository-size' }), 'rolloutStrategy');
    throwsField(() => ev.isEligible({ id: UUID, category: 'huge' }), 'category', 'test, small, medium, large, enterprise');
    throwsField(
      () => policy.evaluateHealth({}, [{ processorType: 'lambda', successCount: 1, errorCount: 0, totalJobs: 1 }]),
      'processorType',
      'inngest, github_actions',
    );
    try {
      ev.route(UUID, { triggerSource: 'cron' });
    } catch (e) {
      assert.deepEqual(e.allowed, TRIGGER_SOURCES);
      assert.equal(e.path, 'job.triggerSource');
    }
  });

  test('numbers out of range or of the wrong type', () => {
    throwsField(() => policy.evaluator({ rolloutPercentage: 101 }), 'rolloutPercentage');
    throwsField(() => policy.evaluator({ rolloutPercentage: -1 }), 'rolloutPercentage');
    throwsField(() => policy.evaluator({ rolloutPercentage: 256 }), 'rolloutPercentage');
    throwsField(() => policy.evaluator({ rolloutPercentage: 12.5 }), 'rolloutPercentage');
    throwsField(() => policy.evaluator({ rolloutPercentage: '50' }), 'rolloutPercentage');
    throwsField(() => policy.evaluator({ maxErrorRate: Number.NaN }), 'maxErrorRate');
    throwsField(() => policy.evaluator({ minJobsForRollback: 2 ** 32 }), 'minJobsForRollback');
    throwsField(() => ev.route(UUID, { timeRangeDays: -1 }), 'timeRangeDays');
    throwsField(() => ev.route(UUID, { maxItems: 2 ** 32 }), 'maxItems');
    throwsField(() => ev.route(UUID, { prNumbers: [1, -2] }), 'prNumbers');
    throwsField(() => ev.route(UUID, { prNumbers: 7 }), 'prNumbers');
    throwsField(() => policy.categorize({ starCount: 1, contributorCount: 1 }), 'prCount');
    throwsField(() => policy.evaluator({ isActive: 'yes' }), 'isActive');
    throwsField(() => policy.evaluator({ targetRepositories: [UUID, 7] }), 'targetRepositories');
    throwsField(() => ev.isEligible({ id: 42 }), 'id');
  });

  test('what the policy itself refuses comes back with the camelCase field', () => {
    throwsField(() => policy.evaluator({ maxErrorRate: 101 }), 'maxErrorRate', 'out of range');
    throwsField(() => policy.evaluator({ featureName: '' }), 'featureName', 'must not be empty');
    throwsField(() => policy.evaluateHealth({ rolloutPercentage: 101 }, []), 'rolloutPercentage');
  });

  test('unknown fields are refused everywhere, naming them and the allowed fields', () => {
    throwsField(() => policy.evaluator({ rolloutPercent: 50 }), 'rolloutPercent', 'rolloutPercentage');
    throwsField(() => policy.evaluator({ rollout_percentage: 50 }), 'rollout_percentage');
    throwsField(() => ev.isEligible({ id: UUID, name: 'x' }), 'name', 'id, category');
    throwsField(() => ev.route(UUID, { trigger: 'manual' }), 'trigger', 'triggerSource');
    throwsField(() => policy.categorize({ stars: 1, starCount: 1, contributorCount: 1, prCount: 1 }), 'stars');
    throwsField(
      () => policy.evaluateHealth({}, [{ processor: 'inngest', successCount: 1, errorCount: 0, totalJobs: 1 }]),
      'processor',
      'processorType',
    );
    throwsField(() => ev.routeBatch([{ repository: UUID, jobs: {} }]), 'jobs');
  });

  test('batch errors carry the index and the path', () => {
    assert.throws(
      () => ev.routeBatch([{ repository: UUID }, { repository: { id: UUID }, job: { maxItems: -5 } }]),
      (e) => e instanceof PolicyError && e.field === 'maxItems' && e.index === 1 && e.path === 'requests[1].job.maxItems',
    );
    assert.throws(
      () => ev.isEligibleBatch([UUID, UUID, { id: UUID, category: 'tiny' }]),
      (e) => e instanceof PolicyError && e.field === 'category' && e.index === 2 && e.message.includes('repositories[2].category'),
    );
    throwsField(() => ev.routeBatch('nope'), 'requests');
  });
});

describe('plain camelCase objects with SPEC enum spellings', () => {
  test('config defaults are the seed row', () => {
    const ev = policy.evaluator();
    assert.deepEqual(ev.config, DEFAULT_CONFIG);
    assert.ok(Object.isFrozen(ev.config));
    assert.deepEqual(ev.isEligible(UUID), { eligible: false, reason: 'inactive', bucket: 59 });
    assert.deepEqual(policy.evaluator({ rolloutPercentage: null, isActive: true }).config.rolloutPercentage, 0);
    assert.deepEqual(DEFAULT_CONFIG, {
      featureName: 'hybrid_progressive_capture',
      rolloutPercentage: 0,
      isActive: false,
      targetRepositories: [],
      excludedRepositories: [],
      rolloutStrategy: 'percentage',
      maxErrorRate: 5,
      monitoringWindowHours: 24,
      autoRollbackEnabled: true,
      emergencyStop: false,
      minJobsForRollback: 10,
    });
  });

  test('route returns a flat {processor, rule, eligible, reason, bucket}', () => {
    const ev = policy.evaluator({ rolloutPercentage: 100, isActive: true });
    assert.deepEqual(ev.route(UUID, { triggerSource: 'scheduled' }), {
      processor: 'github_actions',
      rule: 'scheduled_bulk',
      eligible: true,
      reason: 'in_percentage',
      bucket: 59,
    });
    assert.deepEqual(ev.route(UUID), { processor: 'inngest', rule: 'default', eligible: true, reason: 'in_percentage', bucket: 59 });
    assert.equal(ev.route(UUID, { prNumbers: [1n, 2, 3] }).rule, 'small_pr_batch');
    assert.equal(ev.route(UUID, { prNumbers: new BigUint64Array([1n]) }).rule, 'small_pr_batch');
    assert.equal(ev.route(UUID, { prNumbers: [] }).rule, 'default');
    assert.equal(ev.route(UUID, { timeRangeDays: 0 }).rule, 'recent_data');
    assert.equal(ev.route(UUID, { maxItems: 51, jobType: 'capture', triggerSource: null }).rule, 'large_batch');
    assert.equal(policy.evaluator({ isActive: true }).route(UUID).rule, 'not_eligible');
  });

  test('repository_size strategy and category spellings', () => {
    const ev = policy.evaluator({ rolloutPercentage: 25, isActive: true, rolloutStrategy: 'repository_size' });
    assert.equal(ev.config.rolloutStrategy, 'repository_size');
    assert.equal(ev.isEligible({ id: UUID, category: 'small' }).reason, 'category_included');
    assert.equal(ev.isEligible({ id: UUID, category: 'medium' }).reason, 'category_excluded');
    assert.equal(ev.isEligible({ id: UUID, category: null }).reason, 'uncategorized');
  });

  test('categorize and evaluateHealth', () => {
    assert.deepEqual(policy.categorize({ starCount: 40, contributorCount: 5, prCount: 99 }), {
      category: 'small',
      priorityLevel: 80,
      isTestRepository: false,
      monthlyActivityScore: 54,
    });
    const h = policy.evaluateHealth({ rolloutPercentage: 25 }, [
      { processorType: 'github_actions', successCount: 8, errorCount: 2n, totalJobs: 10, averageProcessingTime: 1200 },
      { processorType: 'inngest', successCount: 10, errorCount: 0, totalJobs: 10n },
    ]);
    assert.deepEqual(Object.keys(h), ['level', 'action', 'errorRate', 'totalJobs', 'reason']);
    assert.equal(h.level, 'warning');
    assert.equal(h.action, 'rollback');
    assert.equal(h.errorRate, 10);
    assert.equal(h.totalJobs, 20);
    assert.equal(typeof h.reason, 'string');
    assert.deepEqual(policy.evaluateHealth(undefined, []), {
      level: 'ok',
      action: 'none',
      errorRate: 0,
      totalJobs: 0,
      reason: 'the rollout is already at 0%',
    });
  });

  test('the exported enum lists', () => {
    assert.deepEqual(STRATEGIES, ['percentage', 'whitelist', 'repository_size']);
    assert.deepEqual(CATEGORIES, ['test', 'small', 'medium', 'large', 'enterprise']);
    assert.deepEqual(PROCESSORS, ['inngest', 'github_actions']);
  });
});

describe('batches', () => {
  const ev = policy.evaluator({ rolloutPercentage: 40, isActive: true, excludedRepositories: ['owner/excluded'] });
  const ids = Array.from({ length: 300 }, (_, i) => (i % 7 === 0 ? `owner/repo-${i}` : `${String(i).padStart(8, '0')}-0c4b-4f5e-9d41-2b7a8e6f0c11`));
  ids.push('owner/excluded');
  // Every column of the batch encoding: zeros that are values, job types, PR lists of
  // several lengths (11 numbers is over the small-batch limit: a misaligned concatenation
  // changes the rule), categories.
  const jobs = [
    {}, { triggerSource: 'scheduled' }, { timeRangeDays: 30 }, { prNumbers: [5] }, { triggerSource: 'manual', maxItems: 500 },
    { timeRangeDays: 0, maxItems: 0, jobType: 'capture' }, { prNumbers: Array.from({ length: 11 }, (_, k) => k + 1), timeRangeDays: 30 },
    { prNumbers: [1, 2], triggerSource: 'automatic', jobType: '' },
  ];
  const categories = [undefined, 'test', 'small', 'medium', 'large', 'enterprise'];

  test('isEligibleBatch equals isEligible one by one, in order', () => {
    assert.deepEqual(ev.isEligibleBatch(ids), ids.map((id) => ev.isEligible(id)));
    assert.deepEqual(ev.isEligibleBatch([]), []);
  });

  test('routeBatch equals route one by one, in order', () => {
    const requests = ids.map((id, i) => ({ repository: { id, category: categories[i % categories.length] }, job: jobs[i % jobs.length] }));
    const batch = ev.routeBatch(requests);
    assert.deepEqual(batch, requests.map((r) => ev.route(r.repository, r.job)));
    assert.ok(batch.some((d) => d.processor === 'github_actions') && batch.some((d) => d.rule === 'not_eligible'));
    assert.equal(batch.at(-1).reason, 'excluded');
  });
});

describe('disposal', () => {
  test('dispose frees the evaluator; later calls fail clearly; disposing twice is harmless', () => {
    const ev = policy.evaluator({ isActive: true });
    assert.ok(ev instanceof Evaluator);
    ev.dispose();
    ev.dispose();
    assert.throws(() => ev.route(UUID), /disposed/);
  });

  test('Symbol.dispose is the same', () => {
    const ev = policy.evaluator({ isActive: true });
    ev[Symbol.dispose]();
    assert.throws(() => ev.isEligible(UUID), /disposed/);
  });

  test('many evaluators created and disposed leave the policy working', () => {
    for (let i = 0; i < 2000; i++) policy.evaluator({ rolloutPercentage: i % 101, targetRepositories: [UUID] }).dispose();
    assert.equal(policy.evaluator({ rolloutPercentage: 100, isActive: true }).isEligible(UUID).eligible, true);
  });
});

describe('explanations', () => {
  const config = { rolloutPercentage: 100, isActive: true };
  /** The rule of the last check of `section` that held: the one that decided. */
  const decided = (checks, section) => checks.filter((c) => c.section === section && c.held).at(-1)?.rule;

  test('explainRoute: the decision of route, eligibility checks then routing checks', () => {
    const ev = policy.evaluator(config);
    for (const job of [{}, { timeRangeDays: 1 }, { prNumbers: [1, 2] }, { triggerSource: 'scheduled' }, { maxItems: 51 }]) {
      const { decision, checks } = policy.explainRoute(config, { id: UUID, category: 'large' }, job);
      assert.deepEqual(decision, ev.route({ id: UUID, category: 'large' }, job));
      assert.equal(decided(checks, 'eligibility'), decision.reason);
      assert.equal(decided(checks, 'routing'), decision.rule);
      assert.deepEqual([...new Set(checks.map((c) => c.section))], ['eligibility', 'routing']);
      for (const c of checks) {
        assert.deepEqual(Object.keys(c), ['section', 'rule', 'condition', 'values', 'held']);
      }
    }
    const { checks } = policy.explainRoute(config, UUID, { timeRangeDays: 1 });
    assert.deepEqual(checks.at(-1), {
      section: 'routing',
      rule: 'recent_data',
      condition: 'time_range_days present and ≤ 1',
      values: 'time_range_days = 1',
      held: true,
    });
    ev.dispose();
  });

  test('explainEligibility, explainCategorize, explainHealth', () => {
    const e = policy.explainEligibility({ ...config, emergencyStop: true }, UUID);
    assert.equal(e.decision.reason, 'emergency_stop');
    assert.deepEqual(e.checks.map((c) => [c.rule, c.held]), [['emergency_stop', true]]);
    const stats = { starCount: 60, contributorCount: 3, prCount: 20 };
    const c = policy.explainCategorize(stats);
    assert.deepEqual(c.decision, policy.categorize(stats));
    assert.deepEqual(c.checks.map((x) => x.rule), ['test', 'small', 'medium']);
    const windows = [{ processorType: 'inngest', successCount: 80, errorCount: 20, totalJobs: 100 }];
    const h = policy.explainHealth(config, windows);
    assert.deepEqual(h.decision, policy.evaluateHealth(config, windows));
    assert.equal(decided(h.checks, 'health_level'), 'critical');
    assert.equal(decided(h.checks, 'health_action'), 'rollback');
  });

  test('a configuration the policy refuses is a PolicyError, as for evaluator()', () => {
    throwsField(() => policy.explainRoute({ maxErrorRate: 101 }, UUID), 'maxErrorRate', 'out of range');
    throwsField(() => policy.explainEligibility({ featureName: '' }, UUID), 'featureName');
    throwsField(() => policy.explainHealth({ rolloutPercentage: 101 }, []), 'rolloutPercentage');
    throwsField(() => policy.explainRoute(config, UUID, { trigger: 'manual' }), 'trigger');
  });
});

describe('configFromRow', () => {
  test('maps columns, ignores the others, takes defaults for NULLs, parses DECIMAL strings', () => {
    const config = configFromRow({
      id: '2d1f0c8e-0000-4000-8000-000000000000',
      feature_name: 'hybrid_progressive_capture',
      rollout_percentage: 25,
      is_active: true,
      target_repositories: [UUID],
      excluded_repositories: [],
      rollout_strategy: 'repository_size',
      max_error_rate: '7.50',
      monitoring_window_hours: 24,
      auto_rollback_enabled: true,
      emergency_stop: false,
      min_jobs_for_rollback: null,
      metadata: { cost_per_job: {} },
      created_at: new Date(0),
    });
    assert.equal(config.maxErrorRate, 7.5);
    assert.equal('minJobsForRollback' in config, false);
    assert.equal('id' in config, false);
    const ev = policy.evaluator(config);
    assert.equal(ev.config.minJobsForRollback, 10);
    assert.equal(ev.isEligible(UUID).reason, 'targeted');
  });
});

describe('the case runner', () => {
  const base = {
    name: 'x',
    op: 'is_eligible',
    config: { rollout_percentage: 50 },
    repository: { id: UUID },
    expect: { eligible: false, reason: 'outside_percentage', bucket: 59 },
  };

  test('passes a right case, defaulting is_active to true', () => {
    assert.deepEqual(runCase(policy, base), []);
    assert.deepEqual(runCase(policy, { ...base, config: { rollout_percentage: 60 }, expect: { eligible: true } }), []);
  });

  test('fails a wrong expectation', () => {
    assert.equal(runCase(policy, { ...base, expect: { bucket: 58 } }).length, 1);
    assert.equal(runCase(policy, { ...base, config: { rollout_percentage: 50, is_active: false }, expect: { reason: 'outside_percentage' } }).length, 1);
  });

  test('fails an error case that evaluates, or fails with another message', () => {
    assert.equal(runCase(policy, { ...base, expect: { error: 'rollout_percentage' } }).length, 1);
    assert.equal(runCase(policy, { ...base, config: { rollout_percentage: 101 }, expect: { error: 'trigger_source' } }).length, 1);
    assert.deepEqual(runCase(policy, { ...base, config: { rollout_percentage: 101 }, expect: { error: 'rollout_percentage' } }), []);
  });

  test('compares error_rate within 1e-9', () => {
    const c = {
      name: 'h',
      op: 'evaluate_health',
      windows: [{ processor_type: 'inngest', success_count: 2, error_count: 1, total_jobs: 3 }],
      expect: { error_rate: 33.3333333333 },
    };
    assert.deepEqual(runCase(policy, c), []);
    assert.equal(runCase(policy, { ...c, expect: { error_rate: 33.33333 } }).length, 1);
  });

  test('refuses malformed cases', () => {
    assert.throws(() => checkCase({ ...base, expect: {} }, 'c'), CaseFileError);
    assert.throws(() => checkCase({ ...base, comment: 'x' }, 'c'), CaseFileError);
    assert.throws(() => checkCase({ ...base, op: 'route_all' }, 'c'), CaseFileError);
    assert.throws(() => checkCase({ ...base, expect: { processor: 'inngest' } }, 'c'), CaseFileError);
    assert.throws(() => checkCase({ ...base, stats: {} }, 'c'), CaseFileError);
    assert.throws(() => checkCase({ ...base, expect: { error: 'x', bucket: 1 } }, 'c'), CaseFileError);
    assert.throws(() => checkCase({ name: 'c', op: 'categorize', expect: { category: 'test' } }, 'c'), CaseFileError);
    checkCase(base, 'c');
  });
});
