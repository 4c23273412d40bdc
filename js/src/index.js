// @rollout/policy: an idiomatic JavaScript API over the rollout policy component.
//
// The component (wit/policy.wit, built by `make policy`) is transpiled by jco into
// dist/generated/ (`npm run build`). This module is the hand-written layer over those
// bindings: camelCase plain objects in and out, SPEC's snake_case names for every enum
// value ('github_actions', 'repository_size', 'in_percentage', …), repository ids
// canonicalised exactly as the Rust host does, and every bad input thrown as a
// `PolicyError` that names the field.

/** Enum values as SPEC and the case files spell them, in WIT declaration order. */
export const STRATEGIES = Object.freeze(['percentage', 'whitelist', 'repository_size']);
export const CATEGORIES = Object.freeze(['test', 'small', 'medium', 'large', 'enterprise']);
export const TRIGGER_SOURCES = Object.freeze(['manual', 'scheduled', 'automatic']);
export const PROCESSORS = Object.freeze(['inngest', 'github_actions']);

/** The seed's configuration (SPEC §3): what every omitted config field takes. */
export const DEFAULT_CONFIG = Object.freeze({
  featureName: 'hybrid_progressive_capture',
  rolloutPercentage: 0,
  isActive: false,
  targetRepositories: Object.freeze([]),
  excludedRepositories: Object.freeze([]),
  rolloutStrategy: 'percentage',
  maxErrorRate: 5,
  monitoringWindowHours: 24,
  autoRollbackEnabled: true,
  emergencyStop: false,
  minJobsForRollback: 10,
});

const CONFIG_FIELDS = Object.freeze(Object.keys(DEFAULT_CONFIG));
const REPOSITORY_FIELDS = Object.freeze(['id', 'category']);
const JOB_FIELDS = Object.freeze(['jobType', 'timeRangeDays', 'prNumbers', 'triggerSource', 'maxItems']);
const ROUTE_REQUEST_FIELDS = Object.freeze(['repository', 'job']);
const STATS_FIELDS = Object.freeze(['starCount', 'contributorCount', 'prCount']);
const WINDOW_FIELDS = Object.freeze(['processorType', 'successCount', 'errorCount', 'totalJobs', 'averageProcessingTime']);

/** Input name (snake_case) → jco's name (kebab-case), and back. */
function inMap(names) {
  const m = Object.create(null);
  for (const n of names) m[n] = n.replaceAll('_', '-');
  return m;
}
function outMap(names) {
  const m = Object.create(null);
  for (const n of names) m[n.replaceAll('_', '-')] = n;
  return m;
}
const STRATEGY_IN = inMap(STRATEGIES);
const CATEGORY_IN = inMap(CATEGORIES);
const TRIGGER_IN = inMap(TRIGGER_SOURCES);
const PROCESSOR_IN = inMap(PROCESSORS);
/** jco's category / trigger name → the code of the batch columns (0 is `none`; wit/policy.wit). */
const CATEGORY_CODE = Object.freeze({ test: 1, small: 2, medium: 3, large: 4, enterprise: 5 });
const TRIGGER_CODE = Object.freeze({ manual: 1, scheduled: 2, automatic: 3 });
const CATEGORY_OUT = outMap(CATEGORIES);
const PROCESSOR_OUT = outMap(PROCESSORS);
/** The WIT enums' cases in order: a batch answer's codes are positions in these. */
const REASONS = Object.freeze([
  'emergency_stop', 'inactive', 'excluded', 'targeted', 'not_targeted', 'in_percentage',
  'outside_percentage', 'uncategorized', 'category_included', 'category_excluded',
]);
const RULES = Object.freeze([
  'not_eligible', 'recent_data', 'small_pr_batch', 'manual_small_batch', 'historical_range',
  'large_batch', 'scheduled_bulk', 'default',
]);
/**
 * The codes of the batch columns, for tests that check them against `wit/policy.wit`:
 * categories and trigger sources are 1 + their WIT position (0 is none); a batch answer's
 * reasons and rules are their WIT positions.
 */
export const BATCH_CODES = Object.freeze({
  category: CATEGORY_CODE,
  triggerSource: TRIGGER_CODE,
  eligibilityReason: REASONS,
  routeRule: RULES,
});
const REASON_OUT = outMap(REASONS);
const RULE_OUT = outMap(RULES);
const LEVEL_OUT = outMap(['ok', 'warning', 'critical']);
const ACTION_OUT = outMap(['none', 'rollback']);
const SECTION_OUT = outMap(['eligibility', 'routing', 'categorization', 'health_level', 'health_action']);

/**
 * Bad input: an unknown field, a value of the wrong type or out of range, an unknown enum
 * value, or a configuration the policy refuses. `field` is the offending field's name as the
 * caller spells it (camelCase), `path` where it is (`job.triggerSource`,
 * `requests[3].repository.category`), `allowed` the allowed values or fields when there is
 * such a list, `index` the position in a batch.
 */
export class PolicyError extends Error {
  constructor(field, message, { path = field, allowed, index } = {}) {
    super(message);
    this.name = 'PolicyError';
    this.field = field;
    this.path = path;
    if (allowed !== undefined) this.allowed = allowed;
    if (index !== undefined) this.index = index;
  }
}

// ---- validation helpers (`base` is the path of the enclosing object, `index` its batch slot)

function join(base, index, field) {
  const at = index === undefined ? base : base.replace('#', String(index));
  return at ? `${at}.${field}` : field;
}

function fail(field, detail, base, index, allowed) {
  const path = join(base, index, field);
  throw new PolicyError(field, `invalid ${path}: ${detail}`, { path, allowed, index });
}

function show(v) {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'bigint') return `${v}n`;
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

function checkObject(value, what, base, index) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    const path = index === undefined ? base : base.replace('#', String(index));
    throw new PolicyError(what, `invalid ${path || what}: expected an object, got ${show(value)}`, { path: path || what, index });
  }
}

function unknownField(key, allowed, base, index) {
  const path = join(base, index, key);
  throw new PolicyError(key, `unknown field ${path}; allowed fields are ${allowed.join(', ')}`, {
    path,
    allowed,
    index,
  });
}

function enumIn(map, names, value, field, base, index) {
  const wire = typeof value === 'string' ? map[value] : undefined;
  if (wire === undefined) fail(field, `unknown value ${show(value)}; allowed values are ${names.join(', ')}`, base, index, names);
  return wire;
}

function intIn(value, max, field, base, index) {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
    fail(field, `expected an integer from 0 to ${max}, got ${show(value)}`, base, index);
  }
  return value;
}

const U32_MAX = 0xffff_ffff;
const U64_MAX = 0xffff_ffff_ffff_ffffn;

function u64In(value, field, base, index) {
  if (typeof value === 'bigint') {
    if (value >= 0n && value <= U64_MAX) return value;
  } else if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) {
    return BigInt(value);
  }
  return fail(field, `expected a non-negative integer (a number up to 2^53-1 or a bigint up to 2^64-1), got ${show(value)}`, base, index);
}

function boolIn(value, field, base) {
  if (typeof value !== 'boolean') fail(field, `expected true or false, got ${show(value)}`, base);
  return value;
}

function stringIn(value, field, base, index) {
  if (typeof value !== 'string') fail(field, `expected a string, got ${show(value)}`, base, index);
  return value;
}

function stringListIn(value, field, base) {
  if (value == null) return [];
  if (!Array.isArray(value)) fail(field, `expected an array of id strings, got ${show(value)}`, base);
  for (let i = 0; i < value.length; i++) {
    if (typeof value[i] !== 'string') fail(field, `expected an array of id strings; item ${i} is ${show(value[i])}`, base);
  }
  return Object.freeze([...value]);
}

// ---- repository ids (the Rust host's RepoId::parse, exactly)

const HEX_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 10; i++) HEX_VALUE[48 + i] = i;
for (let i = 0; i < 6; i++) HEX_VALUE[65 + i] = HEX_VALUE[97 + i] = 10 + i;
/** Scratch space to join four 32-bit words into two u64 bigints (big-endian). */
const WORDS = new DataView(new ArrayBuffer(16));

/**
 * The wire form of a repository id: a UUID in hyphenated (any case), `{braced}` or 32-hex
 * form becomes `{tag: 'uuid', val: [hi, lo]}` (two u64 bigints, most significant first);
 * anything else is `{tag: 'text', val: id}`, used as given.
 */
export function repositoryIdToWire(id) {
  let o = 0;
  let n = id.length;
  if (n >= 2 && id.charCodeAt(0) === 0x7b && id.charCodeAt(n - 1) === 0x7d) {
    o = 1;
    n -= 2;
  }
  // Four 32-bit words of the UUID, most significant first; -1 marks a non-hex digit.
  let w0, w1, w2, w3;
  if (n === 36) {
    const h = 0x2d; // '-'
    if (id.charCodeAt(o + 8) !== h || id.charCodeAt(o + 13) !== h || id.charCodeAt(o + 18) !== h || id.charCodeAt(o + 23) !== h) {
      return { tag: 'text', val: id };
    }
    w0 = hex(id, o, 8);
    const a = hex(id, o + 9, 4);
    const b = hex(id, o + 14, 4);
    const c = hex(id, o + 19, 4);
    const d = hex(id, o + 24, 4);
    w3 = hex(id, o + 28, 8);
    if (w0 < 0 || a < 0 || b < 0 || c < 0 || d < 0 || w3 < 0) return { tag: 'text', val: id };
    w1 = a * 0x10000 + b;
    w2 = c * 0x10000 + d;
  } else if (n === 32) {
    w0 = hex(id, o, 8);
    w1 = hex(id, o + 8, 8);
    w2 = hex(id, o + 16, 8);
    w3 = hex(id, o + 24, 8);
    if (w0 < 0 || w1 < 0 || w2 < 0 || w3 < 0) return { tag: 'text', val: id };
  } else {
    return { tag: 'text', val: id };
  }
  const dv = WORDS;
  dv.setUint32(0, w0);
  dv.setUint32(4, w1);
  dv.setUint32(8, w2);
  dv.setUint32(12, w3);
  return { tag: 'uuid', val: [dv.getBigUint64(0), dv.getBigUint64(8)] };
}

/** The value of `n` (at most 8) hex digits of `s` from `i`, or -1 if one is not a hex digit. */
function hex(s, i, n) {
  let w = 0;
  for (let k = 0; k < n; k++) {
    const c = s.charCodeAt(i + k);
    const v = c < 128 ? HEX_VALUE[c] : -1;
    if (v < 0) return -1;
    w = w * 16 + v;
  }
  return w;
}

/** The canonical text of a repository id: lowercase hyphenated for a UUID, else as given. */
export function canonicalRepositoryId(id) {
  if (typeof id !== 'string') throw new PolicyError('id', `invalid id: expected a string, got ${show(id)}`);
  const wire = repositoryIdToWire(id);
  if (wire.tag === 'text') return id;
  const h = wire.val[0].toString(16).padStart(16, '0') + wire.val[1].toString(16).padStart(16, '0');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// ---- inputs: caller's objects → jco's objects

function configIn(config) {
  if (config == null) config = {};
  checkObject(config, 'config', 'config');
  for (const k in config) if (!CONFIG_FIELDS.includes(k)) unknownField(k, CONFIG_FIELDS, 'config');
  const d = DEFAULT_CONFIG;
  const v = (k) => (config[k] == null ? d[k] : config[k]);
  const c = {
    featureName: stringIn(v('featureName'), 'featureName', 'config'),
    rolloutPercentage: intIn(v('rolloutPercentage'), 100, 'rolloutPercentage', 'config'),
    isActive: boolIn(v('isActive'), 'isActive', 'config'),
    targetRepositories: stringListIn(v('targetRepositories'), 'targetRepositories', 'config'),
    excludedRepositories: stringListIn(v('excludedRepositories'), 'excludedRepositories', 'config'),
    rolloutStrategy: v('rolloutStrategy'),
    maxErrorRate: v('maxErrorRate'),
    monitoringWindowHours: intIn(v('monitoringWindowHours'), U32_MAX, 'monitoringWindowHours', 'config'),
    autoRollbackEnabled: boolIn(v('autoRollbackEnabled'), 'autoRollbackEnabled', 'config'),
    emergencyStop: boolIn(v('emergencyStop'), 'emergencyStop', 'config'),
    minJobsForRollback: intIn(v('minJobsForRollback'), U32_MAX, 'minJobsForRollback', 'config'),
  };
  const strategy = enumIn(STRATEGY_IN, STRATEGIES, c.rolloutStrategy, 'rolloutStrategy', 'config');
  if (typeof c.maxErrorRate !== 'number' || !Number.isFinite(c.maxErrorRate)) {
    fail('maxErrorRate', `expected a finite number (a percentage), got ${show(c.maxErrorRate)}`, 'config');
  }
  return { config: Object.freeze(c), wire: { ...c, rolloutStrategy: strategy } };
}

function repositoryIn(repo, base, index) {
  if (typeof repo === 'string') return { id: repositoryIdToWire(repo), category: undefined };
  checkObject(repo, 'repository', base, index);
  for (const k in repo) if (k !== 'id' && k !== 'category') unknownField(k, REPOSITORY_FIELDS, base, index);
  const id = repo.id;
  if (typeof id !== 'string') fail('id', `expected a repository id string, got ${show(id)}`, base, index);
  const category = repo.category;
  return {
    id: repositoryIdToWire(id),
    category: category == null ? undefined : enumIn(CATEGORY_IN, CATEGORIES, category, 'category', base, index),
  };
}

const EMPTY_JOB = Object.freeze({});

// `undefined` (WIT `none`) for no pull requests: the component takes `option<list<u64>>`.
function prNumbersIn(value, base, index) {
  if (value == null) return undefined;
  if (value instanceof BigUint64Array) return value.length === 0 ? undefined : value;
  if (!Array.isArray(value)) fail('prNumbers', `expected an array of pull request numbers, got ${show(value)}`, base, index);
  if (value.length === 0) return undefined;
  const out = new BigUint64Array(value.length);
  for (let i = 0; i < value.length; i++) out[i] = u64In(value[i], 'prNumbers', base, index);
  return out;
}

function jobIn(job, base, index) {
  if (job == null) return EMPTY_JOB;
  checkObject(job, 'job', base, index);
  for (const k in job) if (!JOB_FIELDS.includes(k)) unknownField(k, JOB_FIELDS, base, index);
  const { jobType, timeRangeDays, prNumbers, triggerSource, maxItems } = job;
  return {
    jobType: jobType == null ? undefined : stringIn(jobType, 'jobType', base, index),
    timeRangeDays: timeRangeDays == null ? undefined : intIn(timeRangeDays, U32_MAX, 'timeRangeDays', base, index),
    prNumbers: prNumbersIn(prNumbers, base, index),
    triggerSource:
      triggerSource == null ? undefined : enumIn(TRIGGER_IN, TRIGGER_SOURCES, triggerSource, 'triggerSource', base, index),
    maxItems: maxItems == null ? undefined : intIn(maxItems, U32_MAX, 'maxItems', base, index),
  };
}

// ---- batches: the component takes columns (`repository-columns`, `job-columns` in
// wit/policy.wit): typed arrays cross into wasm memory as one copy each.

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function repositoryColumns(wires) {
  const n = wires.length;
  const uuids = new BigUint64Array(2 * n);
  const categories = new Uint8Array(n);
  const textIds = [];
  for (let i = 0; i < n; i++) {
    const { id, category } = wires[i];
    if (id.tag === 'uuid') {
      uuids[2 * i] = id.val[0];
      uuids[2 * i + 1] = id.val[1];
    } else {
      textIds.push([i, id.val]);
    }
    categories[i] = category === undefined ? 0 : CATEGORY_CODE[category];
  }
  return { uuids, textIds, categories };
}

/** A column of `option<u32>` as u64: 0 when absent, 2^32 + the value when present. */
function optionColumn(n, value) {
  const out = new BigUint64Array(n);
  if (LITTLE_ENDIAN) {
    const words = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) {
      const v = value(i);
      if (v !== undefined) {
        words[2 * i] = v;
        words[2 * i + 1] = 1;
      }
    }
  } else {
    for (let i = 0; i < n; i++) {
      const v = value(i);
      if (v !== undefined) out[i] = (1n << 32n) | BigInt(v);
    }
  }
  return out;
}

function jobColumns(wires) {
  const n = wires.length;
  const triggerSources = new Uint8Array(n);
  const prCounts = new Uint32Array(n);
  const jobTypes = [];
  let prTotal = 0;
  for (let i = 0; i < n; i++) {
    const j = wires[i];
    if (j.triggerSource !== undefined) triggerSources[i] = TRIGGER_CODE[j.triggerSource];
    if (j.prNumbers !== undefined) prTotal += prCounts[i] = j.prNumbers.length;
    if (j.jobType !== undefined) jobTypes.push([i, j.jobType]);
  }
  const prNumbers = new BigUint64Array(prTotal);
  for (let i = 0, at = 0; i < n; i++) {
    const prs = wires[i].prNumbers;
    if (prs !== undefined) {
      prNumbers.set(prs, at);
      at += prs.length;
    }
  }
  return {
    timeRangeDays: optionColumn(n, (i) => wires[i].timeRangeDays),
    maxItems: optionColumn(n, (i) => wires[i].maxItems),
    triggerSources,
    prCounts,
    prNumbers,
    jobTypes,
  };
}

/** The name at position `columns[i]` of `names`; a column too short or a code out of range is the component's bug. */
function codeAt(names, column, i, field) {
  const name = i < column.length ? names[column[i]] : undefined;
  if (name === undefined) throw new Error(`the component answered an invalid batch: \`${field}\` entry ${i} is ${column[i]}`);
  return name;
}

function eligibilityAt(columns, i) {
  return {
    eligible: columns.eligible[i] === 1,
    reason: codeAt(REASONS, columns.reasons, i, 'reasons'),
    bucket: columns.buckets[i],
  };
}

/** A batch call; the component's `batch-error` (a bug in this encoding) as a PolicyError. */
function batchCall(call) {
  try {
    return call();
  } catch (e) {
    const p = e?.payload;
    if (p && typeof p.field === 'string') throw new PolicyError(p.field, `the component refused the batch: ${p.message}`);
    throw e;
  }
}

function statsIn(stats) {
  checkObject(stats, 'stats', 'stats');
  for (const k in stats) if (!STATS_FIELDS.includes(k)) unknownField(k, STATS_FIELDS, 'stats');
  return {
    starCount: intIn(stats.starCount, U32_MAX, 'starCount', 'stats'),
    contributorCount: intIn(stats.contributorCount, U32_MAX, 'contributorCount', 'stats'),
    prCount: intIn(stats.prCount, U32_MAX, 'prCount', 'stats'),
  };
}

function windowIn(w, index) {
  const base = 'windows[#]';
  checkObject(w, 'windows', base, index);
  for (const k in w) if (!WINDOW_FIELDS.includes(k)) unknownField(k, WINDOW_FIELDS, base, index);
  const avg = w.averageProcessingTime;
  if (avg != null && (typeof avg !== 'number' || !Number.isFinite(avg))) {
    fail('averageProcessingTime', `expected a finite number of milliseconds, got ${show(avg)}`, base, index);
  }
  return {
    processor: enumIn(PROCESSOR_IN, PROCESSORS, w.processorType, 'processorType', base, index),
    successCount: u64In(w.successCount, 'successCount', base, index),
    errorCount: u64In(w.errorCount, 'errorCount', base, index),
    totalJobs: u64In(w.totalJobs, 'totalJobs', base, index),
    averageProcessingTime: avg == null ? undefined : avg,
  };
}

// ---- outputs: jco's objects → plain camelCase objects with snake_case enum values

function eligibilityOut(e) {
  return { eligible: e.eligible, reason: REASON_OUT[e.reason], bucket: e.bucket };
}

function categorizationOut(c) {
  return {
    category: CATEGORY_OUT[c.category],
    priorityLevel: c.priorityLevel,
    isTestRepository: c.isTestRepository,
    monthlyActivityScore: c.monthlyActivityScore,
  };
}

function healthOut(h) {
  return {
    level: LEVEL_OUT[h.level],
    action: ACTION_OUT[h.action],
    errorRate: h.errorRate,
    totalJobs: Number(h.totalJobs),
    reason: h.reason,
  };
}

/** An explanation: the decision, and the checks in order (`section` in snake_case). */
function explainedOut([decision, checks], out) {
  return {
    decision: out(decision),
    checks: checks.map((c) => ({
      section: SECTION_OUT[c.section],
      rule: c.rule,
      condition: c.condition,
      values: c.values,
      held: c.held,
    })),
  };
}

function decisionOut(d) {
  const e = d.eligibility;
  return {
    processor: PROCESSOR_OUT[d.processor],
    rule: RULE_OUT[d.rule],
    eligible: e.eligible,
    reason: REASON_OUT[e.reason],
    bucket: e.bucket,
  };
}

// ---- the API

const JCO_DISPOSE = Symbol.dispose || Symbol.for('dispose');
const DISPOSE = Symbol.dispose;

/** A call taking a config; the policy's `config-error` as a PolicyError naming the camelCase field. */
function configCall(call) {
  try {
    return call();
  } catch (e) {
    const p = e?.payload;
    if (p && typeof p.field === 'string') {
      const field = p.field.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
      throw new PolicyError(field, `invalid config.${field}: ${p.message}`, { path: `config.${field}` });
    }
    throw e;
  }
}

function createRaw(rules, wire) {
  return configCall(() => rules.Evaluator.create(wire));
}

function disposeRaw(raw) {
  const d = raw[JCO_DISPOSE];
  if (typeof d === 'function') d.call(raw);
}

/** A configuration checked once by the policy, then used for many decisions. */
export class Evaluator {
  #raw;

  /** @internal Use `policy.evaluator(config)`. */
  constructor(raw, config) {
    this.#raw = raw;
    /** The effective configuration (defaults filled in), frozen. */
    this.config = config;
  }

  #live() {
    const raw = this.#raw;
    if (raw === null) throw new Error('this Evaluator has been disposed');
    return raw;
  }

  /** Whether a repository (`{id, category?}` or an id string) takes part in the rollout. */
  isEligible(repository) {
    const raw = this.#live();
    return eligibilityOut(raw.isEligible(repositoryIn(repository, 'repository')));
  }

  /** Eligibility of many repositories, in order. */
  isEligibleBatch(repositories) {
    const raw = this.#live();
    if (!Array.isArray(repositories)) fail('repositories', `expected an array, got ${show(repositories)}`, '');
    const wire = new Array(repositories.length);
    for (let i = 0; i < repositories.length; i++) wire[i] = repositoryIn(repositories[i], 'repositories[#]', i);
    const columns = batchCall(() => raw.isEligibleBatch(repositoryColumns(wire)));
    const out = new Array(wire.length);
    for (let i = 0; i < out.length; i++) out[i] = eligibilityAt(columns, i);
    return out;
  }

  /** Where a job runs: `{processor, rule, eligible, reason, bucket}`. */
  route(repository, job) {
    const raw = this.#live();
    return decisionOut(raw.route(repositoryIn(repository, 'repository'), jobIn(job, 'job')));
  }

  /** Where many jobs run (`[{repository, job?}]`), in order. */
  routeBatch(requests) {
    const raw = this.#live();
    if (!Array.isArray(requests)) fail('requests', `expected an array, got ${show(requests)}`, '');
    const repos = new Array(requests.length);
    const jobs = new Array(requests.length);
    for (let i = 0; i < requests.length; i++) {
      const r = requests[i];
      checkObject(r, 'requests', 'requests[#]', i);
      for (const k in r) if (k !== 'repository' && k !== 'job') unknownField(k, ROUTE_REQUEST_FIELDS, 'requests[#]', i);
      repos[i] = repositoryIn(r.repository, 'requests[#].repository', i);
      jobs[i] = jobIn(r.job, 'requests[#].job', i);
    }
    const columns = batchCall(() => raw.routeBatch(repositoryColumns(repos), jobColumns(jobs)));
    const out = new Array(repos.length);
    for (let i = 0; i < out.length; i++) {
      const e = eligibilityAt(columns.eligibility, i);
      out[i] = {
        processor: codeAt(PROCESSORS, columns.processors, i, 'processors'),
        rule: codeAt(RULES, columns.rules, i, 'rules'),
        eligible: e.eligible,
        reason: e.reason,
        bucket: e.bucket,
      };
    }
    return out;
  }

  /** Free the evaluator inside the component now (otherwise the garbage collector does). */
  dispose() {
    const raw = this.#raw;
    if (raw === null) return;
    this.#raw = null;
    disposeRaw(raw);
  }

  /** `using ev = policy.evaluator(config)` disposes at the end of the scope. */
  [DISPOSE ?? Symbol.for('dispose')]() {
    this.dispose();
  }
}

/** The loaded policy component. */
export class Policy {
  #rules;
  #explain;

  /** @internal Use `loadPolicy()`. */
  constructor(rules, explain) {
    this.#rules = rules;
    this.#explain = explain;
  }

  #explained() {
    if (this.#explain == null) {
      throw new Error('this policy component does not export rollout:policy/explain (it was built for world `policy`)');
    }
    return this.#explain;
  }

  /** Name and version of the policy: `{name, version}`. */
  info() {
    const i = this.#rules.info();
    return { name: i.name, version: i.version };
  }

  /** Check a configuration (camelCase, omitted fields take the seed's defaults) and build an evaluator. */
  evaluator(config) {
    const { config: effective, wire } = configIn(config);
    return new Evaluator(createRaw(this.#rules, wire), effective);
  }

  /** Category of a repository from `{starCount, contributorCount, prCount}`. */
  categorize(stats) {
    return categorizationOut(this.#rules.categorize(statsIn(stats)));
  }

  /**
   * Health of the rollout over the evaluation window, from per-processor counts
   * `[{processorType, successCount, errorCount, totalJobs, averageProcessingTime?}]`.
   * The configuration is checked by the policy exactly as for `evaluator()`.
   */
  evaluateHealth(config, windows) {
    const { wire } = configIn(config);
    disposeRaw(createRaw(this.#rules, wire));
    if (!Array.isArray(windows)) fail('windows', `expected an array, got ${show(windows)}`, '');
    return healthOut(this.#rules.evaluateHealth(wire, windows.map((w, i) => windowIn(w, i))));
  }

  // Explanations (interface `explain`): `{decision, checks}`, the decision exactly what the
  // function of the same name returns, the checks in evaluation order as
  // `{section, rule, condition, values, held}`; within a section the last held check decided.

  /** `evaluator(config).isEligible(repository)`, explained. */
  explainEligibility(config, repository) {
    const { wire } = configIn(config);
    const repo = repositoryIn(repository, 'repository');
    return explainedOut(configCall(() => this.#explained().explainEligibility(wire, repo)), eligibilityOut);
  }

  /** `evaluator(config).route(repository, job)`, explained: eligibility's checks, then routing's. */
  explainRoute(config, repository, job) {
    const { wire } = configIn(config);
    const repo = repositoryIn(repository, 'repository');
    const j = jobIn(job, 'job');
    return explainedOut(configCall(() => this.#explained().explainRoute(wire, repo, j)), decisionOut);
  }

  /** `categorize(stats)`, explained. */
  explainCategorize(stats) {
    return explainedOut(this.#explained().explainCategorize(statsIn(stats)), categorizationOut);
  }

  /** `evaluateHealth(config, windows)`, explained: the level's checks, then the action's. */
  explainHealth(config, windows) {
    const { wire } = configIn(config);
    disposeRaw(createRaw(this.#rules, wire));
    if (!Array.isArray(windows)) fail('windows', `expected an array, got ${show(windows)}`, '');
    const w = windows.map((x, i) => windowIn(x, i));
    return explainedOut(this.#explained().explainHealth(wire, w), healthOut);
  }
}

const ROW_COLUMNS = Object.freeze({
  feature_name: 'featureName',
  rollout_percentage: 'rolloutPercentage',
  is_active: 'isActive',
  target_repositories: 'targetRepositories',
  excluded_repositories: 'excludedRepositories',
  rollout_strategy: 'rolloutStrategy',
  max_error_rate: 'maxErrorRate',
  monitoring_window_hours: 'monitoringWindowHours',
  auto_rollback_enabled: 'autoRollbackEnabled',
  emergency_stop: 'emergencyStop',
  min_jobs_for_rollback: 'minJobsForRollback',
});

/**
 * A config from a `rollout_configuration` row as a database client returns it (snake_case
 * columns). Other columns (`id`, `metadata`, timestamps) are ignored, NULLs take the
 * defaults, and a DECIMAL returned as a string (node-postgres does) becomes a number.
 */
export function configFromRow(row) {
  checkObject(row, 'row', 'row');
  const config = {};
  for (const [column, key] of Object.entries(ROW_COLUMNS)) {
    let v = row[column];
    if (v == null) continue;
    if ((key === 'maxErrorRate' || key === 'rolloutPercentage') && typeof v === 'string' && v.trim() !== '') {
      const n = Number(v);
      if (Number.isFinite(n)) v = n;
    }
    config[key] = v;
  }
  return config;
}

let loading = null;

/**
 * Load the transpiled policy component (once; later calls return the same promise).
 * Fails with instructions when `npm run build` has not been run.
 */
export function loadPolicy() {
  loading ??= import('../dist/generated/rollout_policy.js').then(
    (m) => new Policy(m.rules, m.explain),
    (e) => {
      loading = null;
      if (e?.code === 'ERR_MODULE_NOT_FOUND' && String(e.message).includes('rollout_policy.js')) {
        throw new Error(
          '@rollout/policy: the generated bindings (dist/generated/) are missing; run `npm run build` in js/ ' +
            '(after `make policy` at the repository root)',
          { cause: e },
        );
      }
      throw e;
    },
  );
  return loading;
}
