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

/** A hex digit's value by char code; 16 (a bit no digit's value has) for any other code unit. */
const HEX_VALUE = new Uint8Array(0x10000).fill(16);
for (let i = 0; i < 10; i++) HEX_VALUE[48 + i] = i;
for (let i = 0; i < 6; i++) HEX_VALUE[65 + i] = HEX_VALUE[97 + i] = 10 + i;

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
/** Where a u64's more and less significant 32-bit halves sit in a Uint32Array view of it. */
const HIGH_WORD = LITTLE_ENDIAN ? 1 : 0;
const LOW_WORD = 1 - HIGH_WORD;

/** Where the 8 groups of 4 hex digits of a UUID start, hyphenated and as 32 digits. */
const GROUPS_HYPHENATED = new Uint8Array([0, 4, 9, 14, 19, 24, 28, 32]);
const GROUPS_PLAIN = new Uint8Array([0, 4, 8, 12, 16, 20, 24, 28]);

/**
 * Parse `id` as a UUID (hyphenated in any case, `{braced}`, or 32 hex digits) into
 * `words[at .. at + 4]`: a Uint32Array view of two u64s, the halves most significant first,
 * as the component's `uuids` column holds them. Returns false, writing nothing, when `id`
 * is not a UUID. Char codes and int32 arithmetic only: no allocation, no BigInt.
 */
function uuidInto(id, words, at) {
  let o = 0;
  let n = id.length;
  if (n >= 2 && id.charCodeAt(0) === 0x7b && id.charCodeAt(n - 1) === 0x7d) {
    o = 1;
    n -= 2;
  }
  let groups;
  if (n === 36) {
    if (id.charCodeAt(o + 8) !== 0x2d || id.charCodeAt(o + 13) !== 0x2d || id.charCodeAt(o + 18) !== 0x2d || id.charCodeAt(o + 23) !== 0x2d) {
      return false;
    }
    groups = GROUPS_HYPHENATED;
  } else if (n === 32) {
    groups = GROUPS_PLAIN;
  } else {
    return false;
  }
  // Every digit's value is or-ed into `bad`: its bit 4 ends up set iff a code unit is not a hex digit.
  const t = HEX_VALUE;
  let bad = 0;
  let v;
  let w = 0;
  let w0 = 0;
  let w1 = 0;
  let w2 = 0;
  for (let k = 0; k < 8; k++) {
    const i = o + groups[k];
    v = t[id.charCodeAt(i)];
    bad |= v;
    w = (w << 4) | v;
    v = t[id.charCodeAt(i + 1)];
    bad |= v;
    w = (w << 4) | v;
    v = t[id.charCodeAt(i + 2)];
    bad |= v;
    w = (w << 4) | v;
    v = t[id.charCodeAt(i + 3)];
    bad |= v;
    w = (w << 4) | v;
    if (k === 1) {
      w0 = w;
      w = 0;
    } else if (k === 3) {
      w1 = w;
      w = 0;
    } else if (k === 5) {
      w2 = w;
      w = 0;
    }
  }
  if ((bad & 16) !== 0) return false;
  words[at + HIGH_WORD] = w0;
  words[at + LOW_WORD] = w1;
  words[at + 2 + HIGH_WORD] = w2;
  words[at + 2 + LOW_WORD] = w;
  return true;
}

/** Scratch for one id: `UUID_WORDS` and `UUID_HALVES` view the same 16 bytes. */
const UUID_HALVES = new BigUint64Array(2);
const UUID_WORDS = new Uint32Array(UUID_HALVES.buffer);

/**
 * The wire form of a repository id: a UUID in hyphenated (any case), `{braced}` or 32-hex
 * form becomes `{tag: 'uuid', val: [hi, lo]}` (two u64 bigints, most significant first);
 * anything else is `{tag: 'text', val: id}`, used as given.
 */
export function repositoryIdToWire(id) {
  if (typeof id !== 'string') throw new PolicyError('id', `invalid id: expected a string, got ${show(id)}`);
  if (!uuidInto(id, UUID_WORDS, 0)) return { tag: 'text', val: id };
  return { tag: 'uuid', val: [UUID_HALVES[0], UUID_HALVES[1]] };
}

/** The canonical text of a repository id: lowercase hyphenated for a UUID, else as given. */
export function canonicalRepositoryId(id) {
  if (typeof id !== 'string') throw new PolicyError('id', `invalid id: expected a string, got ${show(id)}`);
  if (!uuidInto(id, UUID_WORDS, 0)) return id;
  const h = UUID_HALVES[0].toString(16).padStart(16, '0') + UUID_HALVES[1].toString(16).padStart(16, '0');
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

/**
 * Check a repository (`{id, category?}` or an id string) into `out`: `out.id` the id text,
 * `out.category` its category code (0 for none; `CATEGORY_CODE`). `out` is a scratch
 * object, so a decision allocates nothing here.
 */
function repositoryInto(repo, base, index, out) {
  if (typeof repo === 'string') {
    out.id = repo;
    out.category = 0;
    return out;
  }
  checkObject(repo, 'repository', base, index);
  for (const k in repo) if (k !== 'id' && k !== 'category') unknownField(k, REPOSITORY_FIELDS, base, index);
  const id = repo.id;
  if (typeof id !== 'string') fail('id', `expected a repository id string, got ${show(id)}`, base, index);
  const category = repo.category;
  out.id = id;
  out.category = category == null ? 0 : CATEGORY_CODE[enumIn(CATEGORY_IN, CATEGORIES, category, 'category', base, index)];
  return out;
}

/** The repository as jco's `repository` record (a fresh object: for calls that keep it). */
function repositoryIn(repo, base, index) {
  const r = repositoryInto(repo, base, index, {});
  return { id: repositoryIdToWire(r.id), category: r.category === 0 ? undefined : CATEGORIES[r.category - 1] };
}

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

/** Whether `k` is one of `JOB_FIELDS` (a switch: several times faster than `includes` on the hot path). */
function isJobField(k) {
  switch (k) {
    case 'jobType':
    case 'timeRangeDays':
    case 'prNumbers':
    case 'triggerSource':
    case 'maxItems':
      return true;
    default:
      return false;
  }
}

/**
 * Check a job (all fields optional; null or undefined is no job) into `out`, shaped as
 * jco's `job` record: absent fields `undefined`, `triggerSource` jco's name.
 */
function jobInto(job, base, index, out) {
  if (job == null) {
    out.jobType = out.timeRangeDays = out.prNumbers = out.triggerSource = out.maxItems = undefined;
    return out;
  }
  checkObject(job, 'job', base, index);
  for (const k in job) if (!isJobField(k)) unknownField(k, JOB_FIELDS, base, index);
  const { jobType, timeRangeDays, prNumbers, triggerSource, maxItems } = job;
  out.jobType = jobType == null ? undefined : stringIn(jobType, 'jobType', base, index);
  out.timeRangeDays = timeRangeDays == null ? undefined : intIn(timeRangeDays, U32_MAX, 'timeRangeDays', base, index);
  out.prNumbers = prNumbersIn(prNumbers, base, index);
  out.triggerSource =
    triggerSource == null ? undefined : enumIn(TRIGGER_IN, TRIGGER_SOURCES, triggerSource, 'triggerSource', base, index);
  out.maxItems = maxItems == null ? undefined : intIn(maxItems, U32_MAX, 'maxItems', base, index);
  return out;
}

/** The job as jco's `job` record (a fresh object: for calls that keep it). */
function jobIn(job, base, index) {
  return jobInto(job, base, index, {});
}

// ---- scratch inputs of single decisions: filled, passed to jco (which reads them before it
// returns and keeps nothing), and refilled by the next call. Nothing here is reentrant, and
// nothing needs to be: the component imports no function, so no call can come back in.

const REPO = { id: '', category: 0 };
const JOB = { jobType: undefined, timeRangeDays: undefined, prNumbers: undefined, triggerSource: undefined, maxItems: undefined };
const WIRE_UUID = { tag: 'uuid', val: [0n, 0n] };
const WIRE_TEXT = { tag: 'text', val: '' };
const WIRE_REPO = { id: WIRE_UUID, category: undefined };

/** jco's `repository` record of `REPO` (its UUID halves already in `UUID_WORDS` when `uuid`). */
function wireRepository(uuid) {
  if (uuid) {
    WIRE_UUID.val[0] = UUID_HALVES[0];
    WIRE_UUID.val[1] = UUID_HALVES[1];
    WIRE_REPO.id = WIRE_UUID;
  } else {
    WIRE_TEXT.val = REPO.id;
    WIRE_REPO.id = WIRE_TEXT;
  }
  WIRE_REPO.category = REPO.category === 0 ? undefined : CATEGORIES[REPO.category - 1];
  return WIRE_REPO;
}

/** An `option<u32>` as the scalar calls and the batch columns take it: 0n, or 2^32 + v. */
const NONE_U64 = 0n;
function optionU64(v) {
  return v === undefined ? NONE_U64 : BigInt(0x1_0000_0000 + v);
}

// ---- answers of the scalar calls (interface `packed`): bits 0-7 bucket, 8-11 reason,
// 12 eligible; route adds 16-19 rule and 20 processor; bit 31 a refused call.

const PACKED_REFUSED = 0x8000_0000;
/** The bits an answer may set: an eligibility's (bucket, reason, eligible), a route's (also rule, processor). */
const PACKED_ELIGIBILITY = 0x1fff;
const PACKED_ROUTE = PACKED_ELIGIBILITY | (0xf << 16) | (1 << 20);

/** An answer of scalar call `what` (bit 31: refused; a bit outside `allowed`, or a code out of range: the component's bug). */
function packedCheck(answer, allowed, what) {
  if ((answer & PACKED_REFUSED) !== 0) throw new Error(`the component refused the scalar ${what} call (answer 0x${(answer >>> 0).toString(16)})`);
  if ((answer & ~allowed) !== 0) {
    throw new Error(`the component answered the scalar ${what} call with bits outside its layout (answer 0x${(answer >>> 0).toString(16)})`);
  }
}

function packedCode(names, code, what) {
  const name = names[code];
  if (name === undefined) throw new Error(`the component answered an invalid ${what} code ${code}`);
  return name;
}

function eligibilityPacked(a) {
  packedCheck(a, PACKED_ELIGIBILITY, 'is-eligible');
  return { eligible: (a & 0x1000) !== 0, reason: packedCode(REASONS, (a >>> 8) & 15, 'reason'), bucket: a & 0xff };
}

function decisionPacked(a) {
  packedCheck(a, PACKED_ROUTE, 'route');
  return {
    processor: PROCESSORS[(a >>> 20) & 1],
    rule: packedCode(RULES, (a >>> 16) & 15, 'rule'),
    eligible: (a & 0x1000) !== 0,
    reason: packedCode(REASONS, (a >>> 8) & 15, 'reason'),
    bucket: a & 0xff,
  };
}

// ---- batches: the component takes columns (`repository-columns`, `job-columns` in
// wit/policy.wit): typed arrays cross into wasm memory as one copy each. Ids are parsed
// straight into the `uuids` column; options are written as two u32 words each.

/** Empty repository columns for `n` repositories, and the u32 view of `uuids` to fill. */
function repositoryColumns(n) {
  const uuids = new BigUint64Array(2 * n);
  return { columns: { uuids, textIds: [], categories: new Uint8Array(n) }, words: new Uint32Array(uuids.buffer) };
}

/** Repository `i` (checked into `REPO`) into the columns. */
function putRepository(cols, words, i) {
  if (!uuidInto(REPO.id, words, 4 * i)) cols.textIds.push([i, REPO.id]);
  cols.categories[i] = REPO.category;
}

/** `option<u32>` `v` into slot `i` of a u64 column's u32 view: 0 when absent, 2^32 + v. */
function putOption(words, i, v) {
  if (v !== undefined) {
    words[2 * i + HIGH_WORD] = 1;
    words[2 * i + LOW_WORD] = v;
  }
}

/** An answer column of a batch must have one entry per input; another length is the component's bug. */
function checkColumns(n, columns) {
  for (const field in columns) {
    const length = columns[field].length;
    if (length !== n) throw new Error(`the component answered an invalid batch: \`${field}\` has ${length} entries for ${n} inputs`);
  }
}

/** `names[code]`, the name at entry `i` of answer column `field`; a code out of range is the component's bug. */
function nameAt(names, code, i, field) {
  const name = names[code];
  if (name === undefined) throw new Error(`the component answered an invalid batch: \`${field}\` entry ${i} is ${code}`);
  return name;
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

/** Closes the scalar handle of an Evaluator the garbage collector took without `dispose()`. */
const PACKED_HANDLES = new FinalizationRegistry(({ packed, handle }) => packed.close(handle));

/**
 * A configuration checked once by the policy, then used for many decisions.
 *
 * A single decision about a UUID repository, with a job that has neither `jobType` nor
 * `prNumbers`, goes through the component's scalar calls (interface `packed`) when it
 * exports them: the id parsed into two u64 halves, every argument and the answer a number,
 * nothing allocated in wasm memory. Any other single decision goes through the typed
 * `evaluator` resource; batches go through its columns. All give the same answers.
 */
export class Evaluator {
  #raw;
  #packed;
  #handle;

  /** @internal Use `policy.evaluator(config)`. */
  constructor(raw, config, packed = null, handle = -1) {
    this.#raw = raw;
    this.#packed = handle >= 0 ? packed : null;
    this.#handle = handle;
    /** The effective configuration (defaults filled in), frozen. */
    this.config = config;
    if (this.#packed !== null) PACKED_HANDLES.register(this, { packed, handle }, this);
  }

  #live() {
    const raw = this.#raw;
    if (raw === null) throw new Error('this Evaluator has been disposed');
    return raw;
  }

  /** Whether a repository (`{id, category?}` or an id string) takes part in the rollout. */
  isEligible(repository) {
    const raw = this.#live();
    repositoryInto(repository, 'repository', undefined, REPO);
    const uuid = uuidInto(REPO.id, UUID_WORDS, 0);
    if (uuid && this.#packed !== null) {
      return eligibilityPacked(this.#packed.isEligible(this.#handle, UUID_HALVES[0], UUID_HALVES[1], REPO.category));
    }
    return eligibilityOut(raw.isEligible(wireRepository(uuid)));
  }

  /** Eligibility of many repositories, in order. */
  isEligibleBatch(repositories) {
    const raw = this.#live();
    if (!Array.isArray(repositories)) fail('repositories', `expected an array, got ${show(repositories)}`, '');
    const n = repositories.length;
    const { columns, words } = repositoryColumns(n);
    for (let i = 0; i < n; i++) {
      repositoryInto(repositories[i], 'repositories[#]', i, REPO);
      putRepository(columns, words, i);
    }
    const { eligible, reasons, buckets } = batchCall(() => raw.isEligibleBatch(columns));
    checkColumns(n, { eligible, reasons, buckets });
    const out = new Array(n);
    for (let i = 0; i < n; i++) {
      out[i] = { eligible: eligible[i] === 1, reason: nameAt(REASONS, reasons[i], i, 'reasons'), bucket: buckets[i] };
    }
    return out;
  }

  /** Where a job runs: `{processor, rule, eligible, reason, bucket}`. */
  route(repository, job) {
    const raw = this.#live();
    repositoryInto(repository, 'repository', undefined, REPO);
    jobInto(job, 'job', undefined, JOB);
    const uuid = uuidInto(REPO.id, UUID_WORDS, 0);
    if (uuid && this.#packed !== null && JOB.jobType === undefined && JOB.prNumbers === undefined) {
      const trigger = JOB.triggerSource === undefined ? 0 : TRIGGER_CODE[JOB.triggerSource];
      return decisionPacked(
        this.#packed.route(this.#handle, UUID_HALVES[0], UUID_HALVES[1], REPO.category, trigger, optionU64(JOB.timeRangeDays), optionU64(JOB.maxItems)),
      );
    }
    return decisionOut(raw.route(wireRepository(uuid), JOB));
  }

  /** Where many jobs run (`[{repository, job?}]`), in order. */
  routeBatch(requests) {
    const raw = this.#live();
    if (!Array.isArray(requests)) fail('requests', `expected an array, got ${show(requests)}`, '');
    const n = requests.length;
    const { columns: repos, words } = repositoryColumns(n);
    const timeRangeDays = new BigUint64Array(n);
    const maxItems = new BigUint64Array(n);
    const days = new Uint32Array(timeRangeDays.buffer);
    const items = new Uint32Array(maxItems.buffer);
    const triggerSources = new Uint8Array(n);
    const prCounts = new Uint32Array(n);
    const prLists = [];
    const jobTypes = [];
    let prTotal = 0;
    for (let i = 0; i < n; i++) {
      const r = requests[i];
      checkObject(r, 'requests', 'requests[#]', i);
      for (const k in r) if (k !== 'repository' && k !== 'job') unknownField(k, ROUTE_REQUEST_FIELDS, 'requests[#]', i);
      repositoryInto(r.repository, 'requests[#].repository', i, REPO);
      putRepository(repos, words, i);
      const j = jobInto(r.job, 'requests[#].job', i, JOB);
      putOption(days, i, j.timeRangeDays);
      putOption(items, i, j.maxItems);
      if (j.triggerSource !== undefined) triggerSources[i] = TRIGGER_CODE[j.triggerSource];
      if (j.prNumbers !== undefined) {
        prTotal += prCounts[i] = j.prNumbers.length;
        prLists.push(j.prNumbers);
      }
      if (j.jobType !== undefined) jobTypes.push([i, j.jobType]);
    }
    const prNumbers = new BigUint64Array(prTotal);
    for (let k = 0, at = 0; k < prLists.length; k++) {
      prNumbers.set(prLists[k], at);
      at += prLists[k].length;
    }
    const jobs = { timeRangeDays, maxItems, triggerSources, prCounts, prNumbers, jobTypes };
    const { processors, rules, eligibility } = batchCall(() => raw.routeBatch(repos, jobs));
    const { eligible, reasons, buckets } = eligibility;
    checkColumns(n, { processors, rules, eligible, reasons, buckets });
    const out = new Array(n);
    for (let i = 0; i < n; i++) {
      out[i] = {
        processor: nameAt(PROCESSORS, processors[i], i, 'processors'),
        rule: nameAt(RULES, rules[i], i, 'rules'),
        eligible: eligible[i] === 1,
        reason: nameAt(REASONS, reasons[i], i, 'reasons'),
        bucket: buckets[i],
      };
    }
    return out;
  }

  /** Free the evaluator inside the component now (otherwise the garbage collector does). */
  dispose() {
    const raw = this.#raw;
    if (raw === null) return;
    this.#raw = null;
    if (this.#packed !== null) {
      PACKED_HANDLES.unregister(this);
      this.#packed.close(this.#handle);
      this.#packed = null;
    }
    disposeRaw(raw);
  }

  /** `using ev = policy.evaluator(config)` disposes at the end of the scope. */
  [DISPOSE ?? Symbol.for('dispose')]() {
    this.dispose();
  }
}

/** What the load-time probe asks both paths: every reason and rule within reach, every category. */
const PROBE_CONFIGS = Object.freeze([
  { rolloutPercentage: 50, isActive: true, targetRepositories: ['{6F1C9A3E-0C4B-4F5E-9D41-2B7A8E6F0C11}'], excludedRepositories: ['00000000000000000000000000000001'] },
  { rolloutPercentage: 25, isActive: true, rolloutStrategy: 'repository_size' },
  { isActive: true, rolloutStrategy: 'whitelist', targetRepositories: ['ffffffff-ffff-ffff-ffff-ffffffffffff'] },
  { rolloutPercentage: 100, isActive: true, emergencyStop: true },
  { rolloutPercentage: 100, isActive: false },
]);
const PROBE_IDS = Object.freeze([
  '6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11',
  '00000000-0000-0000-0000-000000000001',
  'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF',
  '{0123abcd-4567-89ef-0123-456789abcdef}',
  '841beb28-3999-4a5d-87ca-049b8d2d0ddf',
]);
const PROBE_JOBS = Object.freeze([
  undefined,
  { triggerSource: 'scheduled' },
  { triggerSource: 'manual', maxItems: 10 },
  { triggerSource: 'automatic', timeRangeDays: 3 },
  { timeRangeDays: 90, maxItems: 5000 },
  { maxItems: 0, timeRangeDays: 0 },
]);

/**
 * Where `fast` (scalar calls) and `typed` answer the probe differently, in words; null when
 * they agree on every probe decision.
 */
function packedDisagreement(fast, typed) {
  const differs = (what, a, b) =>
    a.bucket !== b.bucket || a.eligible !== b.eligible || a.reason !== b.reason || a.processor !== b.processor || a.rule !== b.rule
      ? `${what}: scalar ${JSON.stringify(a)}, typed ${JSON.stringify(b)}`
      : null;
  for (const config of PROBE_CONFIGS) {
    const f = fast.evaluator(config);
    const t = typed.evaluator(config);
    try {
      for (const id of PROBE_IDS) {
        for (const category of [undefined, ...CATEGORIES]) {
          const repo = { id, category };
          const what = `config ${JSON.stringify(config)}, repository ${JSON.stringify(repo)}`;
          const d = differs(`isEligible(${what})`, f.isEligible(repo), t.isEligible(repo));
          if (d !== null) return d;
          for (const job of category === undefined || category === 'medium' ? PROBE_JOBS : []) {
            const r = differs(`route(${what}, job ${JSON.stringify(job)})`, f.route(repo, job), t.route(repo, job));
            if (r !== null) return r;
          }
        }
      }
    } catch (e) {
      return `config ${JSON.stringify(config)}: ${e.message}`;
    } finally {
      f.dispose();
      t.dispose();
    }
  }
  return null;
}

/** The loaded policy component. */
export class Policy {
  #rules;
  #explain;
  #packed;

  /**
   * @internal Use `loadPolicy()`. A `packed` interface is used only if it answers a probe
   * of decisions exactly as the typed `rules` do; otherwise a warning says why, and every
   * decision takes the typed path.
   */
  constructor(rules, explain, packed) {
    this.#rules = rules;
    this.#explain = explain;
    this.#packed = null;
    if (packed == null) return;
    const fast = new Policy(rules, explain);
    fast.#packed = packed;
    const disagreement = packedDisagreement(fast, this);
    if (disagreement === null) {
      this.#packed = packed;
    } else {
      process.emitWarning(`@rollout/policy: the component's scalar calls (interface packed) are not used: ${disagreement}`, {
        code: 'ROLLOUT_PACKED_DISAGREES',
      });
    }
  }

  /**
   * Whether the component exports the scalar calls (interface `packed`), which single
   * decisions about UUID repositories then use; false for a component built without them.
   */
  get fastPath() {
    return this.#packed !== null;
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
    const raw = createRaw(this.#rules, wire);
    const packed = this.#packed;
    if (packed === null) return new Evaluator(raw, effective);
    let handle;
    try {
      handle = configCall(() => packed.open(wire));
    } catch (e) {
      disposeRaw(raw);
      throw e;
    }
    return new Evaluator(raw, effective, packed, handle);
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
    (m) => new Policy(m.rules, m.explain, m.packed),
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
