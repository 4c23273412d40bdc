// The wrapper's fast paths against the jco bindings' typed `evaluator` resource, on
// randomised ids, categories, configurations and jobs: the single calls (through the
// component's scalar `packed` interface when it has one, through a stand-in written from the
// WIT's documented bit layout, and through the typed resource), and the batches (ids parsed
// straight into the `uuids` column). The reference side parses ids with regular expressions
// and calls jco directly; nothing of it goes through src/index.js.
import assert from 'node:assert/strict';
import { describe, mock, test } from 'node:test';

import * as generated from '../dist/generated/rollout_policy.js';
import { CATEGORIES, Evaluator, Policy, PolicyError, canonicalRepositoryId, loadPolicy, repositoryIdToWire } from '../src/index.js';
import { decisionOf, eligibilityOf, referenceWire, witEnum, wireConfig, wireJob, wireRepository } from './reference.js';

const policy = await loadPolicy();
const { rules } = generated;

const SEED = Number(process.env.FAST_PATH_SEED ?? 20261202);
/** A seeded generator (so a failure names a reproducible seed): `rand(n)` is 0 … n-1. */
function generator(seed) {
  let s = seed >>> 0;
  const rand = (n) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return Math.floor((s / 2 ** 32) * n);
  };
  const pick = (xs) => xs[rand(xs.length)];
  return { rand, pick };
}

const hex = (g, n) => Array.from({ length: n }, () => g.rand(16).toString(16)).join('');
const randomUuid = (g) => `${hex(g, 8)}-${hex(g, 4)}-${hex(g, 4)}-${hex(g, 4)}-${hex(g, 12)}`;

/** Code units that are no hex digit, some with a hex digit's low byte (U+0130 → 0x30, U+0141 → 0x41, U+FF46 → 0x46). */
const NOT_HEX = ['g', 'G', '-', '{', '}', ' ', 'x', '/', '\u00e9', '\u0130', '\u0141', '\u0161', '\uff10', '\uff46', '\u0661', '\ud83d'];

/** Every form of `uuid` the wrapper accepts as a UUID. */
function uuidForm(g, uuid) {
  let id = g.pick([uuid, uuid.toUpperCase(), [...uuid].map((c) => (g.rand(2) ? c.toUpperCase() : c)).join('')]);
  if (g.rand(3) === 0) id = id.replaceAll('-', '');
  if (g.rand(3) === 0) id = `{${id}}`;
  return id;
}

/** A UUID in any accepted form, a near-miss, or text. */
function randomId(g, pool) {
  switch (g.rand(6)) {
    case 0:
    case 1:
      return uuidForm(g, randomUuid(g));
    case 2:
      return uuidForm(g, g.pick(pool)); // often a target or an excluded id, in another form
    case 3: {
      const id = uuidForm(g, randomUuid(g));
      const at = g.rand(id.length);
      const op = g.rand(3);
      const ch = g.pick(NOT_HEX);
      return op === 0 ? id.slice(0, at) + ch + id.slice(at + 1) : op === 1 ? id.slice(0, at) + ch + id.slice(at) : id.slice(0, at) + id.slice(at + 1);
    }
    case 4:
      return g.pick(['owner/name', 'owner/excluded', '', '{}', 'repo-\u00e9', `${randomUuid(g)} `, `{${randomUuid(g)}`]);
    default:
      return `owner/repo-${g.rand(1000)}`;
  }
}

function randomRepository(g, pool) {
  const id = randomId(g, pool);
  switch (g.rand(4)) {
    case 0:
      return id;
    case 1:
      return { id };
    case 2:
      return { id, category: null };
    default:
      return { id, category: g.pick(CATEGORIES) };
  }
}

function randomJob(g) {
  if (g.rand(6) === 0) return g.pick([undefined, null, {}]);
  const job = {};
  if (g.rand(2)) job.triggerSource = g.pick(['manual', 'scheduled', 'automatic', null]);
  if (g.rand(2)) job.timeRangeDays = g.pick([0, 1, 7, 8, 30, 31, 365, 2 ** 32 - 1]);
  if (g.rand(2)) job.maxItems = g.pick([0, 1, 50, 51, 100, 500, 501, 2 ** 32 - 1]);
  if (g.rand(4) === 0) job.prNumbers = Array.from({ length: g.pick([0, 1, 2, 10, 11, 12]) }, (_, k) => k + 1);
  if (g.rand(5) === 0) job.jobType = g.pick(['', 'capture', 'backfill']);
  return job;
}

/** A fully specified configuration: every strategy, percentage edges, targets and exclusions in mixed forms. */
function randomConfig(g, pool) {
  const ids = () => Array.from({ length: g.rand(4) }, () => (g.rand(4) === 0 ? 'owner/excluded' : uuidForm(g, g.pick(pool))));
  return {
    featureName: g.pick(['hybrid_progressive_capture', 'other_feature']),
    rolloutPercentage: g.pick([0, 1, 25, 37, 50, 99, 100]),
    isActive: g.rand(8) !== 0,
    targetRepositories: ids(),
    excludedRepositories: ids(),
    rolloutStrategy: g.pick(['percentage', 'whitelist', 'repository_size']),
    maxErrorRate: 5,
    monitoringWindowHours: 24,
    autoRollbackEnabled: true,
    emergencyStop: g.rand(10) === 0,
    minJobsForRollback: 10,
  };
}

const REASONS = witEnum('eligibility-reason');
const RULES = witEnum('route-rule');
const WIT_CATEGORIES = witEnum('category').map((c) => c.replaceAll('_', '-'));
const WIT_TRIGGERS = witEnum('trigger-source').map((c) => c.replaceAll('_', '-'));

/**
 * The `packed` interface as wit/policy.wit documents it, over the typed resource: category
 * and trigger codes 0 = none then 1 + WIT position; an option as 0 or 2^32 + v; an answer
 * with bits 0–7 bucket, 8–11 reason, 12 eligible, 16–19 rule, 20 processor. Counts calls.
 */
function standInPacked() {
  const table = [];
  const calls = { open: 0, close: [], isEligible: 0, route: 0 };
  const u64 = (v, what) => {
    assert.equal(typeof v, 'bigint', `${what} must be a bigint`);
    assert.ok(v >= 0n && v < 2n ** 64n, `${what} out of range`);
    return v;
  };
  const code = (c, names, what) => {
    assert.ok(Number.isInteger(c) && c >= 0 && c <= names.length, `${what} code ${c}`);
    return c === 0 ? undefined : names[c - 1];
  };
  const option = (v, what) => {
    u64(v, what);
    if (v === 0n) return undefined;
    assert.equal(v >> 32n, 1n, `${what} option ${v}`);
    return Number(v & 0xffff_ffffn);
  };
  const repository = (hi, lo, category) => ({
    id: { tag: 'uuid', val: [u64(hi, 'hi'), u64(lo, 'lo')] },
    category: code(category, WIT_CATEGORIES, 'category'),
  });
  const eligibility = (e) => e.bucket | (REASONS.indexOf(e.reason.replaceAll('-', '_')) << 8) | (e.eligible ? 1 << 12 : 0);
  const evaluator = (handle) => {
    const e = table[handle];
    assert.ok(e, `unknown handle ${handle}`);
    return e;
  };
  return {
    calls,
    open(config) {
      calls.open++;
      table.push(rules.Evaluator.create(config));
      return table.length - 1;
    },
    close(handle) {
      calls.close.push(handle);
      table[handle] = undefined;
    },
    isEligible(handle, hi, lo, category) {
      calls.isEligible++;
      return eligibility(evaluator(handle).isEligible(repository(hi, lo, category)));
    },
    route(handle, hi, lo, category, trigger, days, items) {
      calls.route++;
      const job = {
        triggerSource: code(trigger, WIT_TRIGGERS, 'trigger source'),
        timeRangeDays: option(days, 'time-range-days'),
        maxItems: option(items, 'max-items'),
      };
      const d = evaluator(handle).route(repository(hi, lo, category), job);
      return (
        eligibility(d.eligibility) |
        (RULES.indexOf(d.rule.replaceAll('-', '_')) << 16) |
        (d.processor === 'github-actions' ? 1 << 20 : 0)
      );
    },
  };
}

const isUuid = (repo) => referenceWire(typeof repo === 'string' ? repo : repo.id).tag === 'uuid';
/** Whether a route may take the scalar path: a UUID id and a job without job type or PR numbers. */
const scalarRoute = (repo, job) => isUuid(repo) && job?.jobType == null && (job?.prNumbers ?? []).length === 0;

/**
 * Random configurations × repositories × jobs through `p` (single calls, then batches)
 * against the typed resource; returns how many single `isEligible` and `route` calls could
 * take the scalar path.
 */
function agreeWithTyped(p, seed) {
  const g = generator(seed);
  const pool = Array.from({ length: 8 }, () => randomUuid(g));
  const scalars = { isEligible: 0, route: 0 };
  for (let c = 0; c < 40; c++) {
    const config = randomConfig(g, pool);
    const ev = p.evaluator(config);
    const typed = rules.Evaluator.create(wireConfig(config));
    const repos = Array.from({ length: 60 }, () => randomRepository(g, pool));
    const jobs = repos.map(() => randomJob(g));
    const expectedEligibility = repos.map((r) => eligibilityOf(typed.isEligible(wireRepository(r))));
    const expectedRoutes = repos.map((r, i) => decisionOf(typed.route(wireRepository(r), wireJob(jobs[i] ?? {}))));
    repos.forEach((r, i) => {
      const what = `seed ${seed}, config ${JSON.stringify(config)}, repository ${JSON.stringify(r)}, job ${JSON.stringify(jobs[i])}`;
      assert.deepEqual(ev.isEligible(r), expectedEligibility[i], `isEligible: ${what}`);
      assert.deepEqual(ev.route(r, jobs[i]), expectedRoutes[i], `route: ${what}`);
      if (isUuid(r)) scalars.isEligible++;
      if (scalarRoute(r, jobs[i])) scalars.route++;
    });
    assert.deepEqual(ev.isEligibleBatch(repos), expectedEligibility, `isEligibleBatch: seed ${seed}, config ${c}`);
    const requests = repos.map((repository, i) => (jobs[i] === undefined ? { repository } : { repository, job: jobs[i] }));
    assert.deepEqual(ev.routeBatch(requests), expectedRoutes, `routeBatch: seed ${seed}, config ${c}`);
    ev.dispose();
    typed[Symbol.dispose]();
  }
  return scalars;
}

describe('ids are parsed without allocation, exactly as the regex reference', () => {
  test('random UUID forms, near-misses (incl. code units whose low byte is a hex digit) and text', () => {
    const g = generator(SEED);
    const pool = [randomUuid(g)];
    let uuids = 0;
    for (let i = 0; i < 20_000; i++) {
      const id = randomId(g, pool);
      const expected = referenceWire(id);
      assert.deepEqual(repositoryIdToWire(id), expected, `seed ${SEED}: ${JSON.stringify(id)}`);
      if (expected.tag === 'uuid') {
        uuids++;
        const h = expected.val.map((v) => v.toString(16).padStart(16, '0')).join('');
        const canonical = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
        assert.equal(canonicalRepositoryId(id), canonical);
      } else {
        assert.equal(canonicalRepositoryId(id), id);
      }
    }
    assert.ok(uuids > 5000 && uuids < 15_000, `${uuids} of 20000 random ids were UUIDs: the generator lost a class`);
    for (const c of ['\u0130', '\u0141', '\uff46', '\u0661']) {
      const id = `6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c1${c}`;
      assert.deepEqual(repositoryIdToWire(id), { tag: 'text', val: id }, JSON.stringify(id));
    }
  });

  test('the id must be a string', () => {
    for (const f of [repositoryIdToWire, canonicalRepositoryId]) {
      assert.throws(() => f(42), (e) => e instanceof PolicyError && e.field === 'id' && e.message.includes('42'));
    }
  });
});

describe('the fast paths decide exactly as the typed resource', () => {
  test('policy.fastPath tells whether the component exports `packed`', () => {
    assert.equal(policy.fastPath, generated.packed !== undefined);
  });

  test('through the loaded component: single calls and batches on random inputs', () => {
    const scalars = agreeWithTyped(policy, SEED + 1);
    assert.ok(scalars.route > 300, `only ${scalars.route} routes could take the scalar path: the generator lost a class`);
    assert.ok(scalars.isEligible < 2000, `${scalars.isEligible} of 2400 ids were UUIDs: the generator lost a class`);
  });

  test('through a stand-in `packed` built from the WIT bit layout: the wrapper encodes and decodes it', () => {
    const packed = standInPacked();
    const p = new Policy(rules, generated.explain, packed);
    assert.equal(p.fastPath, true, 'the stand-in passes the load-time probe');
    assert.ok(packed.calls.isEligible > 0 && packed.calls.route > 0, 'the probe asked the scalar calls');
    assert.equal(packed.calls.close.length, packed.calls.open, 'the probe closed what it opened');
    Object.assign(packed.calls, { open: 0, close: [], isEligible: 0, route: 0 });
    const scalars = agreeWithTyped(p, SEED + 2);
    // Every single call that could be scalar was (`isEligible` with a UUID; `route` with a
    // UUID and a job without job type or PR numbers), and none other.
    assert.equal(packed.calls.isEligible, scalars.isEligible);
    assert.equal(packed.calls.route, scalars.route);
    assert.equal(packed.calls.open, 40);
    assert.equal(packed.calls.close.length, 40, 'dispose closes the scalar handle');
  });

  test('the real `packed` export is used for exactly the scalar-shaped calls', { skip: generated.packed === undefined && 'the component has no `packed` export' }, () => {
    const real = generated.packed;
    const counts = { isEligible: 0, route: 0 };
    const saved = { isEligible: real.isEligible, route: real.route };
    real.isEligible = (...a) => (counts.isEligible++, saved.isEligible(...a));
    real.route = (...a) => (counts.route++, saved.route(...a));
    try {
      const ev = policy.evaluator({ rolloutPercentage: 50, isActive: true });
      const uuid = '6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11';
      ev.isEligible(uuid);
      ev.isEligible({ id: uuid.toUpperCase(), category: 'small' });
      ev.route(uuid, { triggerSource: 'manual', maxItems: 3 });
      assert.deepEqual(counts, { isEligible: 2, route: 1 });
      ev.isEligible('owner/name');
      ev.route(uuid, { prNumbers: [1] });
      ev.route(uuid, { jobType: 'capture' });
      ev.route('owner/name');
      assert.deepEqual(counts, { isEligible: 2, route: 1 });
      ev.dispose();
    } finally {
      Object.assign(real, saved);
    }
  });
});

describe('scalar answers are checked, never guessed', () => {
  const uuid = '6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11';
  /** An evaluator whose scalar calls answer `isEligible` and `route` (after the load-time probe, which they pass). */
  const answering = (isEligible, route) => {
    const packed = standInPacked();
    const p = new Policy(rules, generated.explain, packed);
    assert.equal(p.fastPath, true);
    Object.assign(packed, { isEligible: () => isEligible, route: () => route });
    return p.evaluator({ isActive: true });
  };

  test('a refused call (bit 31) is an error naming the call', () => {
    const ev = answering(0x8000_0000, 0x8000_0000 | 0x1234);
    assert.throws(() => ev.isEligible(uuid), /refused the scalar is-eligible call/);
    assert.throws(() => ev.route(uuid), /refused the scalar route call/);
  });

  test('a reason or rule code outside the WIT enum is an error naming it', () => {
    const ev = answering(REASONS.length << 8, (RULES.length << 16) | (5 << 8));
    assert.throws(() => ev.isEligible(uuid), /invalid reason code 10/);
    assert.throws(() => ev.route(uuid), /invalid rule code 8/);
  });

  test('an answer with bits outside the documented layout is an error', () => {
    const ev = answering(1 << 13, 1 << 21);
    assert.throws(() => ev.isEligible(uuid), /is-eligible call with bits outside its layout/);
    assert.throws(() => ev.route(uuid), /route call with bits outside its layout/);
    // The route bits are allowed in a route answer only.
    const ok = answering((7 << 16) | 0x1000, (7 << 16) | (1 << 20) | 0x1000 | 42);
    assert.throws(() => ok.isEligible(uuid), /outside its layout/);
    assert.deepEqual(ok.route(uuid), { processor: 'github_actions', rule: RULES[7], eligible: true, reason: REASONS[0], bucket: 42 });
  });

  test('a config the scalar `open` refuses is a PolicyError, and the typed evaluator is freed', () => {
    const created = [];
    const counting = { ...rules, Evaluator: { create: (c) => created[created.push(rules.Evaluator.create(c)) - 1] } };
    const packed = standInPacked();
    const refusing = {
      ...packed,
      open() {
        throw Object.assign(new Error('refused'), { payload: { field: 'rollout_percentage', message: 'no' } });
      },
    };
    assert.throws(
      () => new Policy(counting, generated.explain, refusing).evaluator({ isActive: true }),
      (e) => e instanceof PolicyError && e.field === 'rolloutPercentage' && e.path === 'config.rolloutPercentage',
    );
    assert.equal(created.length, 1);
    assert.throws(() => created[0].isEligible(wireRepository(uuid)), /not a valid "Evaluator" resource/i);
  });
});

describe('the load-time probe', () => {
  /** A Policy over a stand-in `packed` changed by `change(standIn)`, and the warnings its construction emitted. */
  const load = (change) => {
    const packed = standInPacked();
    change(packed);
    const emitWarning = mock.method(process, 'emitWarning', () => {});
    try {
      const p = new Policy(rules, generated.explain, packed);
      return { p, warnings: emitWarning.mock.calls.map((c) => c.arguments) };
    } finally {
      emitWarning.mock.restore();
    }
  };

  test('scalar calls that disagree with the typed ones are not used, and a warning names the decision', () => {
    const { p, warnings } = load((packed) => {
      const route = packed.route;
      // Wrong only for a scheduled job of a medium repository: the probe must reach it.
      packed.route = (h, hi, lo, category, trigger, ...rest) => route(h, hi, lo, category, trigger, ...rest) ^ (category === 3 && trigger === 2 ? 1 << 20 : 0);
    });
    assert.equal(p.fastPath, false);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0][0], /scalar calls \(interface packed\) are not used: route\(.*"category":"medium".*"triggerSource":"scheduled"/);
    assert.equal(warnings[0][1].code, 'ROLLOUT_PACKED_DISAGREES');
    const uuid = '6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11';
    const ev = p.evaluator({ rolloutPercentage: 100, isActive: true });
    assert.equal(ev.route({ id: uuid, category: 'medium' }, { triggerSource: 'scheduled' }).processor, 'github_actions');
  });

  test('scalar calls that fail are not used either', () => {
    const { p, warnings } = load((packed) => {
      packed.isEligible = () => 0x8000_0000;
    });
    assert.equal(p.fastPath, false);
    assert.match(warnings[0][0], /refused the scalar is-eligible call/);
  });

  test('agreeing scalar calls are used without a warning', () => {
    const { p, warnings } = load(() => {});
    assert.equal(p.fastPath, true);
    assert.deepEqual(warnings, []);
  });
});

describe('batch answers are checked, never guessed', () => {
  const uuid = '6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11';
  /** An evaluator whose component answers every batch with `columns`. */
  const answering = (columns) => {
    const raw = { isEligibleBatch: () => columns, routeBatch: () => ({ processors: new Uint8Array(2), rules: new Uint8Array(2), eligibility: columns }) };
    return new Evaluator(raw, {});
  };
  const u8 = (...xs) => Uint8Array.from(xs);

  test('a column of another length than the input names the column', () => {
    const ev = answering({ eligible: u8(1, 0), reasons: u8(5), buckets: u8(3, 4) });
    assert.throws(() => ev.isEligibleBatch([uuid, 'owner/name']), /`reasons` has 1 entries for 2 inputs/);
    assert.throws(() => ev.routeBatch([{ repository: uuid }, { repository: uuid }]), /`reasons` has 1 entries for 2 inputs/);
  });

  test('a code outside the WIT enum names the column and the entry', () => {
    const ev = answering({ eligible: u8(1, 0), reasons: u8(5, REASONS.length), buckets: u8(3, 4) });
    assert.throws(() => ev.isEligibleBatch([uuid, uuid]), /`reasons` entry 1 is 10/);
    const good = answering({ eligible: u8(1, 0), reasons: u8(5, 6), buckets: u8(3, 4) });
    assert.deepEqual(good.isEligibleBatch([uuid, uuid]), [
      { eligible: true, reason: REASONS[5], bucket: 3 },
      { eligible: false, reason: REASONS[6], bucket: 4 },
    ]);
  });
});
