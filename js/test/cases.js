// Runs SPEC §5 case files through the JavaScript wrapper (not a test file itself).
//
// Case semantics: omitted config fields take the seed's defaults except `is_active`, which
// defaults to true; unknown fields are an error; an empty `expect` is an error;
// `expect: {"error": "<substring>"}` (project extension) means evaluation must throw a
// PolicyError whose message contains the substring. Case files name fields in snake_case
// and the wrapper in camelCase, so the substring matches either spelling
// (`trigger_source` or `triggerSource`).
import { PolicyError } from '../src/index.js';

const CASE_FIELDS = new Set(['name', 'op', 'config', 'repository', 'job', 'stats', 'windows', 'expect']);

/** Inputs each op reads (`true`: required) and the `expect` fields it can check. */
const OPS = {
  is_eligible: {
    inputs: { config: false, repository: true },
    expect: ['eligible', 'reason', 'bucket'],
  },
  route: {
    inputs: { config: false, repository: true, job: false },
    expect: ['processor', 'rule', 'eligible', 'reason', 'bucket'],
  },
  categorize: {
    inputs: { stats: true },
    expect: ['category', 'priority_level', 'is_test_repository', 'monthly_activity_score'],
  },
  evaluate_health: {
    inputs: { config: false, windows: true },
    expect: ['level', 'action', 'error_rate', 'total_jobs', 'reason'],
  },
};

/** A malformed case file or case (as opposed to a failing one). */
export class CaseFileError extends Error {}

export const camel = (s) => s.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
const snake = (s) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** snake_case keys → camelCase keys, values untouched (the wrapper judges unknown fields). */
function camelKeys(obj) {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return obj;
  const out = {};
  for (const [k, v] of Object.entries(obj)) out[camel(k)] = v;
  return out;
}

function snakeKeys(obj) {
  const out = {};
  for (const [k, v] of Object.entries(obj)) out[snake(k)] = v;
  return out;
}

/** Check a case's shape; throws CaseFileError naming what is wrong. */
export function checkCase(c, where) {
  if (c === null || typeof c !== 'object' || Array.isArray(c)) throw new CaseFileError(`${where}: a case must be an object`);
  for (const k of Object.keys(c)) if (!CASE_FIELDS.has(k)) throw new CaseFileError(`${where}: unknown case field \`${k}\``);
  if (typeof c.name !== 'string' || c.name === '') throw new CaseFileError(`${where}: missing \`name\``);
  const op = OPS[c.op];
  if (!op) throw new CaseFileError(`${where}: unknown op ${JSON.stringify(c.op)}; allowed: ${Object.keys(OPS).join(', ')}`);
  for (const input of ['config', 'repository', 'job', 'stats', 'windows']) {
    if (!(input in op.inputs) && input in c) throw new CaseFileError(`${where}: op ${c.op} takes no \`${input}\``);
    if (op.inputs[input] && !(input in c)) throw new CaseFileError(`${where}: op ${c.op} needs \`${input}\``);
  }
  const e = c.expect;
  if (e === null || typeof e !== 'object' || Array.isArray(e)) throw new CaseFileError(`${where}: \`expect\` must be an object`);
  const keys = Object.keys(e);
  if (keys.length === 0) throw new CaseFileError(`${where}: \`expect\` is empty`);
  if ('error' in e) {
    if (keys.length !== 1 || typeof e.error !== 'string' || e.error === '') {
      throw new CaseFileError(`${where}: \`expect.error\` must be a non-empty string and the only expected field`);
    }
  } else {
    for (const k of keys) {
      if (!op.expect.includes(k)) throw new CaseFileError(`${where}: op ${c.op} has no output \`${k}\`; allowed: ${op.expect.join(', ')}`);
    }
  }
}

function caseConfig(c) {
  const config = camelKeys(c.config ?? {});
  if (config !== null && typeof config === 'object' && !Array.isArray(config) && !('isActive' in config)) {
    config.isActive = true;
  }
  return config;
}

/**
 * Evaluate a case with the wrapper; returns the output with snake_case field names.
 * `batch`: use the batch entry points (isEligibleBatch, routeBatch) with one item.
 */
export function evaluateCase(policy, c, { batch = false } = {}) {
  switch (c.op) {
    case 'is_eligible':
    case 'route': {
      const ev = policy.evaluator(caseConfig(c));
      try {
        const repository = camelKeys(c.repository);
        if (c.op === 'is_eligible') {
          return batch ? snakeKeys(ev.isEligibleBatch([repository])[0]) : snakeKeys(ev.isEligible(repository));
        }
        const job = camelKeys(c.job ?? {});
        return batch ? snakeKeys(ev.routeBatch([{ repository, job }])[0]) : snakeKeys(ev.route(repository, job));
      } finally {
        ev.dispose();
      }
    }
    case 'categorize':
      return snakeKeys(policy.categorize(camelKeys(c.stats)));
    case 'evaluate_health': {
      const windows = Array.isArray(c.windows) ? c.windows.map(camelKeys) : c.windows;
      return snakeKeys(policy.evaluateHealth(caseConfig(c), windows));
    }
    default:
      throw new CaseFileError(`unknown op ${c.op}`);
  }
}

/** Run one case; returns a list of failure descriptions (empty: passed). */
export function runCase(policy, c, options) {
  const expect = c.expect;
  if ('error' in expect) {
    const want = expect.error;
    try {
      const got = evaluateCase(policy, c, options);
      return [`expected an error containing ${JSON.stringify(want)}, got ${JSON.stringify(got)}`];
    } catch (e) {
      if (e instanceof CaseFileError) throw e;
      if (!(e instanceof PolicyError)) return [`expected a PolicyError containing ${JSON.stringify(want)}, got ${e}`];
      const msg = String(e.message);
      if (msg.includes(want) || msg.includes(camel(want))) return [];
      return [`expected an error containing ${JSON.stringify(want)}, got ${JSON.stringify(msg)}`];
    }
  }
  let got;
  try {
    got = evaluateCase(policy, c, options);
  } catch (e) {
    if (e instanceof CaseFileError) throw e;
    return [`unexpected error: ${e?.stack ?? e}`];
  }
  const failures = [];
  for (const [k, want] of Object.entries(expect)) {
    const have = got[k];
    const ok =
      k === 'error_rate'
        ? typeof want === 'number' && typeof have === 'number' && Math.abs(have - want) <= 1e-9
        : have === want;
    if (!ok) failures.push(`${k}: expected ${JSON.stringify(want)}, got ${JSON.stringify(have)}`);
  }
  return failures;
}
