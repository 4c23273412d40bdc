// Independent references for the tests (not a test file itself): the WIT enums read from
// `wit/policy.wit`, a regex UUID parser, and decisions straight from the jco bindings'
// typed `evaluator` resource — none of it goes through src/index.js.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

const WIT = readFileSync(new URL('../../wit/policy.wit', import.meta.url), 'utf8');

/** The cases of `enum <name> { … }` in `wit/policy.wit`, in order, kebab-case turned to snake_case. */
export function witEnum(name) {
  const start = WIT.indexOf(`enum ${name} {`);
  assert.notEqual(start, -1, `wit/policy.wit has no enum \`${name}\``);
  const body = WIT.slice(WIT.indexOf('{', start) + 1, WIT.indexOf('}', start));
  return body
    .split('\n')
    .map((line) => line.split('//')[0].trim().replace(/,$/, ''))
    .filter((line) => line.length > 0)
    .map((c) => c.replace(/^%/, '').replaceAll('-', '_'));
}

/** The wire form of an id by regular expressions: `{tag: 'uuid', val: [hi, lo]}` or `{tag: 'text', val: id}`. */
export function referenceWire(id) {
  const inner = /^\{.*\}$/s.test(id) ? id.slice(1, -1) : id;
  const m =
    /^([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{4})-([0-9a-f]{12})$/i.exec(inner) ?? /^([0-9a-f]{32})$/i.exec(inner);
  if (!m) return { tag: 'text', val: id };
  const h = m.slice(1).join('');
  return { tag: 'uuid', val: [BigInt(`0x${h.slice(0, 16)}`), BigInt(`0x${h.slice(16)}`)] };
}

const kebab = (s) => s.replaceAll('_', '-');
const snake = (s) => s.replaceAll('-', '_');

/** A fully specified camelCase config as jco's `config` record. */
export function wireConfig(config) {
  return { ...config, rolloutStrategy: kebab(config.rolloutStrategy) };
}

/** jco's `repository` record of a wrapper repository (`{id, category?}` or an id string). */
export function wireRepository(repo) {
  const { id, category } = typeof repo === 'string' ? { id: repo } : repo;
  return { id: referenceWire(id), category: category ?? undefined };
}

/** jco's `job` record of a wrapper job (numbers only; an empty `prNumbers` is none). */
export function wireJob(job = {}) {
  const prs = job.prNumbers ?? [];
  return {
    jobType: job.jobType ?? undefined,
    timeRangeDays: job.timeRangeDays ?? undefined,
    prNumbers: prs.length === 0 ? undefined : BigUint64Array.from(prs, BigInt),
    triggerSource: job.triggerSource ?? undefined,
    maxItems: job.maxItems ?? undefined,
  };
}

/** A jco eligibility as the wrapper spells it. */
export function eligibilityOf(e) {
  return { eligible: e.eligible, reason: snake(e.reason), bucket: e.bucket };
}

/** A jco route decision as the wrapper spells it. */
export function decisionOf(d) {
  const e = eligibilityOf(d.eligibility);
  return { processor: snake(d.processor), rule: snake(d.rule), ...e };
}
