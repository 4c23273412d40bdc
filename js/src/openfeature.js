// @rollout/policy/openfeature: an OpenFeature (`@openfeature/server-sdk`) provider that decides
// in-process with the policy component (the jco build this package ships), fed and kept in step
// by a `rollout serve`'s sync endpoint (issue 13). The Rust twin is the crate
// rollout-openfeature (openfeature/src/lib.rs); flags, reasons and metadata are the server's
// OFREP endpoint's (host/src/http/ofrep.rs).
//
// - Flags: a feature `F` is the boolean flag `F` (the repository takes part) and the string
//   flag `F/processor` (where the job runs). The targeting key is the repository id (a UUID);
//   `category` and the job's fields (`job_type`, `time_range_days`, `pr_numbers`,
//   `trigger_source`, `max_items`) are context attributes.
// - Sync: `initialize()` reads `GET /v1/sync/{F}`, loads the policy it names, then follows
//   `GET /v1/sync/{F}/events` (server-sent events). Every snapshot replaces the configuration
//   (PROVIDER_CONFIGURATION_CHANGED when it changed anything); a new policy sha is fetched,
//   transpiled by jco in memory, imported and swapped in when it speaks the same WIT. A policy
//   that cannot be loaded leaves the last good one deciding, the provider STALE, the reason in
//   `syncStatus().lastError`.
// - Status: READY while the stream is up; STALE while the server is unreachable (still deciding
//   with the last good snapshot; reconnecting after 1 s, backing off to 5 s); READY again once
//   a snapshot arrives.
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

import {
  FlagNotFoundError,
  GeneralError,
  InvalidContextError,
  OpenFeatureEventEmitter,
  ProviderEvents,
  ProviderNotReadyError,
  ProviderStatus,
  StandardResolutionReasons,
  TargetingKeyMissingError,
  TypeMismatchError,
} from '@openfeature/server-sdk';

import { CATEGORIES, Policy, PolicyError, configFromRow, loadPolicy } from './index.js';

/** The suffix of a feature's routing flag. */
export const PROCESSOR_SUFFIX = '/processor';

const FALLBACK = 'the policy gave no answer (it trapped, ran past its deadline, or none is loaded): use the code default';

/** The OpenFeature reason of an eligibility reason (host/src/http/ofrep.rs `openfeature_reason`). */
export function openfeatureReason(reason) {
  switch (reason) {
    case 'emergency_stop':
    case 'inactive':
      return StandardResolutionReasons.DISABLED;
    case 'in_percentage':
    case 'outside_percentage':
      return StandardResolutionReasons.SPLIT;
    default:
      return StandardResolutionReasons.TARGETING_MATCH;
  }
}

/** The OpenFeature reason of the routing rule that placed an eligible repository's job (`openfeature_rule_reason`). */
export function openfeatureRuleReason(rule) {
  return rule === 'default' ? StandardResolutionReasons.DEFAULT : StandardResolutionReasons.TARGETING_MATCH;
}

/** 1 for the char codes of hex digits. */
const HEX = new Uint8Array(128);
for (const c of '0123456789abcdefABCDEF') HEX[c.charCodeAt(0)] = 1;

/**
 * Whether `s` is a UUID as the server's `RepositoryUuid` takes it (after trimming): hyphenated
 * or 32 hex digits, either one braced (char codes and a table, no regular expression).
 */
function isUuid(s) {
  let o = 0;
  let n = s.length;
  if (n >= 2 && s.charCodeAt(0) === 0x7b) {
    if (s.charCodeAt(n - 1) !== 0x7d) return false;
    o = 1;
    n -= 2;
  }
  if (n === 36) {
    for (let i = 0; i < 36; i++) {
      const c = s.charCodeAt(o + i);
      if (i === 8 || i === 13 || i === 18 || i === 23) {
        if (c !== 0x2d) return false;
      } else if (c > 127 || HEX[c] === 0) {
        return false;
      }
    }
    return true;
  }
  if (n !== 32) return false;
  for (let i = 0; i < 32; i++) {
    const c = s.charCodeAt(o + i);
    if (c > 127 || HEX[c] === 0) return false;
  }
  return true;
}

/** Context attribute (snake_case) → the job field this package takes (camelCase). */
const JOB_ATTRIBUTES = Object.freeze({
  job_type: 'jobType',
  time_range_days: 'timeRangeDays',
  pr_numbers: 'prNumbers',
  trigger_source: 'triggerSource',
  max_items: 'maxItems',
});
const JOB_ATTRIBUTE_OF = Object.freeze(Object.fromEntries(Object.entries(JOB_ATTRIBUTES).map(([a, f]) => [f, a])));

/** A PolicyError about a job field, as an INVALID_CONTEXT naming the context attribute. */
function invalidJob(e) {
  const attribute = JOB_ATTRIBUTE_OF[e.field] ?? e.field;
  const detail = String(e.message).replace(/^invalid job\.[A-Za-z]+: /, '');
  return new InvalidContextError(`${attribute}: ${detail}`);
}

const message = (e) => (e instanceof Error ? e.message : String(e));

const TRANSPILE_OPTIONS = Object.freeze({ name: 'rollout_policy', wasiShim: false, quiet: true });

// This module is also the entry point of the worker thread that runs jco: `transpile()` works
// synchronously inside jco's own wasm for 0.2–3 s, which on the main thread would stall every
// evaluation of the process for as long.
if (!isMainThread && workerData?.rolloutTranspile === true) {
  try {
    const { transpile } = await import('@bytecodealliance/jco');
    const t0 = performance.now();
    const { files, imports, exports } = await transpile(workerData.bytes, TRANSPILE_OPTIONS);
    parentPort.postMessage({ ok: true, files, imports, exports, ms: performance.now() - t0 });
  } catch (e) {
    parentPort.postMessage({ ok: false, message: message(e), missing: e?.code === 'ERR_MODULE_NOT_FOUND' });
  }
}

/** jco's `transpile(bytes)` in a worker thread: `{files, imports, exports, ms}`. */
function transpileInWorker(bytes) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: { rolloutTranspile: true, bytes } });
    worker.once('message', (m) => {
      worker.terminate();
      if (m.ok) resolve(m);
      else if (m.missing) reject(new Error(`following a policy swap needs @bytecodealliance/jco (an optional peer dependency): ${m.message}`));
      else reject(new Error(`jco could not transpile the component: ${m.message}`));
    });
    worker.once('error', (e) => reject(new Error(`the transpile worker failed: ${message(e)}`)));
    worker.once('exit', (code) => reject(new Error(`the transpile worker exited with code ${code}`)));
  });
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });

/** The bundled core module's bytes (dist/generated/), read once: a component that embeds them is the bundled policy. */
let bundledCore = null;
function bundledCoreBytes() {
  bundledCore ??= readFile(new URL('../dist/generated/rollout_policy.core.wasm', import.meta.url)).catch(() => null);
  return bundledCore;
}

/** The versioned interface names (`rollout:policy/rules@0.1.1`, …) a generated module exports, by short name. */
function interfaceNames(names) {
  const out = Object.create(null);
  for (const n of names) {
    const m = /^rollout:policy\/([a-z-]+)@/.exec(n);
    if (m) out[m[1]] = n;
  }
  return out;
}

/**
 * Turn a policy component's bytes into a `Policy`: jco transpiles it in memory (in a worker
 * thread, so evaluations go on meanwhile), the bindings
 * are written to a temporary directory and imported (the core module is compiled and the
 * instance created on import; the directory is removed after), and the `Policy` is built over
 * the `rules`, `explain` and `packed` interfaces when they are those the bundled bindings
 * speak (the same versioned WIT names). Throws, saying why, when the component imports
 * functions, lacks `rules`, speaks another version of the WIT, or fails to instantiate.
 * Returns `{policy, transpileMs, jcoMs, importMs}` (`transpileMs` with the worker's start,
 * `jcoMs` the `transpile()` call alone).
 */
export async function policyFromComponent(bytes) {
  const bundled = interfaceNames(Object.keys(await import('../dist/generated/rollout_policy.js')));
  const t0 = performance.now();
  const out = await transpileInWorker(bytes);
  const t1 = performance.now();
  if (out.imports.length > 0) throw new Error(`the component imports ${out.imports.join(', ')}; a policy component must import no function`);
  const offered = interfaceNames(out.exports.map(([name]) => name));
  if (offered.rules !== bundled.rules) {
    throw new Error(
      offered.rules === undefined
        ? `the component does not export ${bundled.rules} (it exports ${out.exports.map(([n]) => n).join(', ') || 'nothing'})`
        : `the component speaks ${offered.rules}, this package ${bundled.rules}: a different WIT`,
    );
  }
  const dir = await mkdtemp(join(tmpdir(), 'rollout-policy-'));
  let m;
  try {
    for (const [name, content] of Object.entries(out.files)) {
      const file = join(dir, name);
      await mkdir(dirname(file), { recursive: true });
      await writeFile(file, content);
    }
    m = await import(pathToFileURL(join(dir, 'rollout_policy.js')).href);
  } catch (e) {
    throw new Error(`the transpiled component could not be instantiated: ${message(e)}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const t2 = performance.now();
  const same = (short) => (offered[short] !== undefined && offered[short] === bundled[short] ? m[short] : null);
  let policy;
  try {
    policy = new Policy(m.rules, same('explain'), same('packed'));
    policy.info();
    const probe = policy.evaluator({ rolloutPercentage: 50, isActive: true });
    probe.isEligible({ id: '6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11', category: 'medium' });
    probe.route('owner/name', { jobType: 'probe', prNumbers: [1, 2], triggerSource: 'scheduled', timeRangeDays: 3, maxItems: 40 });
    probe.dispose();
  } catch (e) {
    throw new Error(`the component does not answer as the WIT says: ${message(e)}`);
  }
  return { policy, transpileMs: t1 - t0, jcoMs: out.ms, importMs: t2 - t1 };
}

/**
 * The in-process provider: `new RolloutProvider({ baseUrl, feature })`, then
 * `await OpenFeature.setProviderAndWait(provider)`.
 */
export class RolloutProvider {
  runsOn = 'server';
  metadata = Object.freeze({ name: 'rollout in-process' });
  events = new OpenFeatureEventEmitter();
  hooks = [];

  #base;
  #feature;
  #processorFlag;
  #idleTimeoutMs;
  #status = ProviderStatus.NOT_READY;
  /** What decides now: `{evaluator, version, sha256, data}`; replaced whole by each snapshot. */
  #state = null;
  #policy = null;
  #policySha = null;
  /** sha256 → Promise of `{policy}` or of a refusal (an Error): each component is fetched and transpiled once. */
  #policies = new Map();
  #connected = false;
  #applied = 0;
  #lastError = null;
  #lastSwap = null;
  #abort = new AbortController();
  #running = null;

  /**
   * @param {{baseUrl: string, feature?: string, idleTimeoutMs?: number}} options
   *   `baseUrl` of a `rollout serve`; `feature` (default `hybrid_progressive_capture`);
   *   `idleTimeoutMs`: reconnect when the stream has been silent this long (default 45 s; the
   *   server sends a keep-alive every 15 s).
   */
  constructor({ baseUrl, feature = 'hybrid_progressive_capture', idleTimeoutMs = 45_000 } = {}) {
    if (typeof baseUrl !== 'string' || baseUrl === '') throw new TypeError('RolloutProvider: `baseUrl` (the rollout server) is required');
    this.#base = baseUrl.replace(/\/+$/, '');
    this.#feature = feature;
    this.#processorFlag = `${feature}${PROCESSOR_SUFFIX}`;
    this.#idleTimeoutMs = idleTimeoutMs;
  }

  /** READY, STALE (serving the last good snapshot), NOT_READY before `initialize()`, ERROR if it failed. */
  get status() {
    return this.#status;
  }

  /** The sync's state now. */
  syncStatus() {
    return {
      status: this.#status,
      connected: this.#connected,
      configVersion: this.#state?.version ?? 0,
      policySha256: this.#policySha,
      snapshotsApplied: this.#applied,
      lastError: this.#lastError,
      lastSwap: this.#lastSwap,
    };
  }

  /** Read the snapshot, load its policy, and start following the event stream. */
  async initialize() {
    if (this.#running) return;
    try {
      const r = await this.#get(`/v1/sync/${encodeURIComponent(this.#feature)}`, this.#abort.signal);
      const data = await r.text();
      await this.#apply(JSON.parse(data), data, { initial: true });
    } catch (e) {
      this.#status = ProviderStatus.ERROR;
      this.#lastError = message(e);
      throw e;
    }
    if (this.#status === ProviderStatus.NOT_READY) this.#status = ProviderStatus.READY;
    this.#running = this.#run();
  }

  /** Stop following the server (the last snapshot keeps deciding). */
  async onClose() {
    this.#abort.abort();
    this.#connected = false;
    await this.#running;
  }

  // ---- evaluation

  // The OpenFeature resolvers answer promises (the server-sdk's Provider interface);
  // `booleanDetails` / `stringDetails` are the same decisions synchronously, for callers
  // that use the provider without the SDK (they throw the SDK's error classes). Through the
  // SDK's client an evaluation costs 30–50× the provider's own: server-sdk 1.23 is built for
  // ES2015 and makes five new generator functions per evaluation (js/README.md, bench.js).

  resolveBooleanEvaluation(flagKey, _defaultValue, context) {
    try {
      return Promise.resolve(this.booleanDetails(flagKey, context));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  resolveStringEvaluation(flagKey, _defaultValue, context) {
    try {
      return Promise.resolve(this.stringDetails(flagKey, context));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Flag `F` for `context`: `{value, variant, reason, flagMetadata}`, or throws an OpenFeature error. */
  booleanDetails(flagKey, context = {}) {
    if (flagKey !== this.#feature) {
      if (flagKey === this.#processorFlag) throw new TypeMismatchError(`\`${flagKey}\` is a string flag`);
      throw this.#notFound(flagKey);
    }
    const state = this.#ready();
    const repository = repositoryOf(context);
    if (hasJob(context)) jobOf(context); // the server reads (and checks) the job for every flag
    let e;
    try {
      e = state.evaluator.isEligible(repository);
    } catch (err) {
      throw fallback(err);
    }
    return {
      value: e.eligible,
      variant: e.eligible ? 'eligible' : 'not_eligible',
      reason: openfeatureReason(e.reason),
      flagMetadata: { reason_code: e.reason, bucket: e.bucket, config_version: state.version, policy_sha256: state.sha256 },
    };
  }

  /** Flag `F/processor` for `context`: `{value, variant, reason, flagMetadata}`, or throws an OpenFeature error. */
  stringDetails(flagKey, context = {}) {
    if (flagKey !== this.#processorFlag) {
      if (flagKey === this.#feature) throw new TypeMismatchError(`\`${flagKey}\` is a boolean flag`);
      throw this.#notFound(flagKey);
    }
    const state = this.#ready();
    const repository = repositoryOf(context);
    const job = hasJob(context) ? jobOf(context) : undefined;
    let r;
    try {
      r = state.evaluator.route(repository, job);
    } catch (err) {
      if (err instanceof PolicyError) throw invalidJob(err);
      throw fallback(err);
    }
    return {
      value: r.processor,
      variant: r.processor,
      reason: r.eligible ? openfeatureRuleReason(r.rule) : openfeatureReason(r.reason),
      flagMetadata: { reason_code: r.reason, rule: r.rule, bucket: r.bucket, config_version: state.version, policy_sha256: state.sha256 },
    };
  }

  async resolveNumberEvaluation(flagKey) {
    this.#known(flagKey);
    throw new TypeMismatchError(`\`${flagKey}\` is not a number flag`);
  }

  async resolveObjectEvaluation(flagKey) {
    this.#known(flagKey);
    throw new TypeMismatchError(`\`${flagKey}\` is not an object flag`);
  }

  #known(flagKey) {
    if (flagKey !== this.#feature && flagKey !== this.#processorFlag) throw this.#notFound(flagKey);
  }

  #notFound(flagKey) {
    return new FlagNotFoundError(
      `flag \`${flagKey}\` was not found: this provider serves \`${this.#feature}\` and \`${this.#processorFlag}\``,
    );
  }

  #ready() {
    const s = this.#state;
    if (s === null) throw new ProviderNotReadyError('no snapshot yet');
    return s;
  }

  // ---- sync

  #fail(reason) {
    this.#lastError = reason;
  }

  #setStale(reason) {
    this.#fail(reason);
    if (this.#status !== ProviderStatus.STALE) {
      this.#status = ProviderStatus.STALE;
      this.events.emit(ProviderEvents.Stale, { message: reason });
    }
  }

  #setReady() {
    if (this.#status !== ProviderStatus.READY) {
      this.#status = ProviderStatus.READY;
      this.events.emit(ProviderEvents.Ready, { message: `following ${this.#base}` });
    }
  }

  async #get(path, signal) {
    const url = `${this.#base}${path}`;
    let r;
    try {
      r = await fetch(url, { signal });
    } catch (e) {
      throw new Error(`cannot read ${url}: ${message(e.cause ?? e)}`);
    }
    if (!r.ok) throw new Error(`cannot read ${url}: ${r.status} ${(await r.text().catch(() => '')).slice(0, 300)}`);
    return r;
  }

  /** The policy of sha `sha`: the bundled one, one loaded before, or the component fetched and transpiled. */
  #policyOf(sha) {
    let p = this.#policies.get(sha);
    if (p === undefined) {
      p = this.#loadPolicy(sha).catch((e) => {
        if (e.transient) this.#policies.delete(sha); // a failed download is tried again with the next snapshot
        return e;
      });
      this.#policies.set(sha, p);
    }
    return p;
  }

  async #loadPolicy(sha) {
    const t0 = performance.now();
    let bytes;
    try {
      const r = await this.#get(`/v1/policies/${sha}/component`, this.#abort.signal);
      bytes = new Uint8Array(await r.arrayBuffer());
    } catch (e) {
      throw Object.assign(new Error(message(e)), { transient: true });
    }
    const got = createHash('sha256').update(bytes).digest('hex');
    if (got !== sha) throw new Error(`the component served for ${sha} has sha256 ${got}`);
    const fetchMs = performance.now() - t0;
    const core = await bundledCoreBytes();
    if (core !== null && Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).indexOf(core) >= 0) {
      // the component wraps the core module this package ships: the bundled policy
      return { policy: await loadPolicy(), swap: { sha256: sha, bundled: true, fetchMs } };
    }
    const { policy, transpileMs, jcoMs, importMs } = await policyFromComponent(bytes);
    return { policy, swap: { sha256: sha, bundled: false, fetchMs, transpileMs, jcoMs, importMs } };
  }

  /**
   * Apply one snapshot: its policy (loaded when its sha is new), then its configuration. A
   * policy that cannot be loaded leaves the last good one deciding (STALE, `lastError` says
   * why), and the configuration is still applied with it: an emergency stop or a percentage
   * change must not wait for a component this process cannot run. Throws only when nothing
   * can decide (at initialization) or the snapshot is not understood. Returns whether the
   * provider is in step with the server (READY) after it.
   */
  async #apply(snapshot, data, { initial = false } = {}) {
    if (snapshot === null || typeof snapshot !== 'object' || typeof snapshot.config !== 'object' || !Number.isInteger(snapshot.config_version)) {
      throw new Error(`the snapshot of \`${this.#feature}\` is not understood (no config or config_version)`);
    }
    if (this.#state !== null && data === this.#state.data) return true; // nothing changed (a reconnect's first snapshot)
    let refused = null;
    let policy = this.#policy;
    let sha = this.#policySha;
    const wanted = snapshot.policy?.sha256;
    if (typeof wanted === 'string' && wanted !== sha) {
      const loaded = await this.#policyOf(wanted);
      if (loaded instanceof Error) {
        refused = `the policy component ${wanted} was refused, the last good one (${sha ?? 'none'}) keeps deciding: ${loaded.message}`;
        if (initial) throw new Error(refused);
      } else {
        policy = loaded.policy;
        sha = wanted;
        this.#lastSwap = loaded.swap;
      }
    }
    policy ??= await loadPolicy(); // a server serving no policy: the bundled one (the server itself falls back)
    let evaluator;
    try {
      evaluator = policy.evaluator(configFromRow(snapshot.config));
    } catch (e) {
      const reason = `the configuration version ${snapshot.config_version} was refused by the policy: ${message(e)}`;
      if (initial) throw new Error(reason);
      this.#setStale(reason);
      return false;
    }
    const old = this.#state;
    this.#state = { evaluator, version: snapshot.config_version, sha256: sha, data: refused === null ? data : null };
    this.#policy = policy;
    this.#policySha = sha;
    this.#applied += 1;
    old?.evaluator.dispose();
    if (refused !== null) this.#setStale(refused);
    if (!initial) {
      this.events.emit(ProviderEvents.ConfigurationChanged, {
        flagsChanged: [this.#feature, this.#processorFlag],
        metadata: { config_version: snapshot.config_version, policy_sha256: sha ?? '' },
      });
    }
    return refused === null;
  }

  /** Follow the event stream forever: reconnect after 1 s, backing off to 5 s, STALE meanwhile. */
  async #run() {
    const signal = this.#abort.signal;
    let wait = 1000;
    while (!signal.aborted) {
      let snapshots = 0;
      try {
        await this.#follow(() => snapshots++);
        if (signal.aborted) break;
        this.#connected = false;
        this.#setStale('the sync stream ended');
      } catch (e) {
        this.#connected = false;
        if (signal.aborted) break;
        this.#setStale(message(e));
      }
      wait = snapshots > 0 ? 1000 : wait;
      await sleep(wait, signal);
      wait = Math.min(wait * 2, 5000);
    }
    this.#connected = false;
  }

  /** One connection to the event stream, until it ends or fails; `onSnapshot` per snapshot received. */
  async #follow(onSnapshot) {
    const connection = new AbortController();
    const stop = () => connection.abort();
    this.#abort.signal.addEventListener('abort', stop, { once: true });
    let idle = null;
    const touch = () => {
      clearTimeout(idle);
      idle = setTimeout(() => connection.abort(new Error(`the sync stream was silent for ${this.#idleTimeoutMs} ms`)), this.#idleTimeoutMs);
    };
    try {
      touch();
      const r = await this.#get(`/v1/sync/${encodeURIComponent(this.#feature)}/events`, connection.signal);
      this.#connected = true;
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (e) {
          throw new Error(`the sync stream broke: ${message(connection.signal.reason ?? e.cause ?? e)}`);
        }
        if (chunk.done) return;
        touch();
        buffer += decoder.decode(chunk.value, { stream: true });
        let end;
        while ((end = blockEnd(buffer)) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end).replace(/^(?:\r?\n){1,2}/, '');
          const event = parseEvent(block);
          if (event === null || event.event !== 'snapshot') continue;
          onSnapshot();
          try {
            if (await this.#apply(JSON.parse(event.data), event.data)) this.#setReady();
          } catch (e) {
            this.#setStale(message(e));
          }
        }
      }
    } finally {
      clearTimeout(idle);
      this.#abort.signal.removeEventListener('abort', stop);
      connection.abort();
    }
  }
}

/** Where the first blank line (the end of an event) starts in `s`; -1 when there is none yet. */
function blockEnd(s) {
  const m = /\r?\n\r?\n/.exec(s);
  return m === null ? -1 : m.index + (m[0].length === 2 ? 1 : m[0].indexOf('\n') + 1);
}

/** One server-sent event block: `{event, data, id}`; null for a comment-only block. */
function parseEvent(block) {
  let event = 'message';
  let id;
  const data = [];
  let any = false;
  for (const line of block.split(/\r?\n/)) {
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    any = true;
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
    else if (field === 'id') id = value;
  }
  return any ? { event, data: data.join('\n'), id } : null;
}

// ---- contexts

/** Scratch repository for decisions with a category (the evaluator reads it before returning). */
const REPO = { id: '', category: undefined };

/** The repository a context asks about: the id string, or `{id, category}` in a scratch object. */
function repositoryOf(context) {
  let key = context.targetingKey;
  if (key === undefined || key === null || key === '') {
    throw new TargetingKeyMissingError('the targeting key is the repository id (a UUID)');
  }
  if (typeof key !== 'string') throw new InvalidContextError('targetingKey: must be a string: the repository id');
  if (!isUuid(key)) {
    const trimmed = key.trim();
    if (trimmed === key || !isUuid(trimmed)) {
      throw new InvalidContextError(
        `targetingKey: \`${key.slice(0, 100)}\` is not a UUID: expected the repository's id, e.g. 6f1c9a3e-0c4b-4f5e-9d41-2b7a8e6f0c11`,
      );
    }
    key = trimmed;
  }
  const category = context.category;
  if (category === undefined || category === null) return key;
  if (typeof category !== 'string' || !CATEGORIES.includes(category)) {
    throw new InvalidContextError(`category: \`${String(category).slice(0, 100)}\` is not a category: allowed values are ${CATEGORIES.join(', ')}`);
  }
  REPO.id = key;
  REPO.category = category;
  return REPO;
}

function hasJob(c) {
  return (
    c.job_type !== undefined || c.time_range_days !== undefined || c.pr_numbers !== undefined || c.trigger_source !== undefined || c.max_items !== undefined
  );
}

/** The job a context describes (checked here for the boolean flag, by the evaluator for routing). */
function jobOf(c) {
  const job = {
    jobType: c.job_type,
    timeRangeDays: c.time_range_days,
    prNumbers: c.pr_numbers,
    triggerSource: c.trigger_source,
    maxItems: c.max_items,
  };
  if (job.jobType != null && typeof job.jobType !== 'string') throw new InvalidContextError('job_type: expected a string');
  for (const a of ['time_range_days', 'max_items']) {
    const v = c[a];
    if (v != null && !(Number.isInteger(v) && v >= 0 && v <= 0xffff_ffff)) {
      throw new InvalidContextError(`${a}: expected an integer from 0 to 4294967295, got ${JSON.stringify(v)}`);
    }
  }
  if (job.triggerSource != null && !['manual', 'scheduled', 'automatic'].includes(job.triggerSource)) {
    throw new InvalidContextError(`trigger_source: unknown trigger source \`${String(job.triggerSource).slice(0, 100)}\`: allowed values are manual, scheduled, automatic`);
  }
  if (job.prNumbers != null) {
    if (!Array.isArray(job.prNumbers)) throw new InvalidContextError('pr_numbers: expected an array of pull request numbers');
    if (job.prNumbers.length > 10_000) throw new InvalidContextError(`pr_numbers: ${job.prNumbers.length} PR numbers: allowed at most 10000`);
    for (const n of job.prNumbers) {
      const ok = typeof n === 'bigint' ? n >= 0n && n <= 0xffff_ffff_ffff_ffffn : Number.isSafeInteger(n) && n >= 0;
      if (!ok) throw new InvalidContextError(`pr_numbers: expected pull request numbers (non-negative integers), got ${typeof n === 'bigint' ? `${n}n` : JSON.stringify(n)}`);
    }
  }
  return job;
}

/** An evaluation that threw something other than bad input: the fallback, GENERAL. */
function fallback(err) {
  if (err instanceof PolicyError) return new InvalidContextError(`${err.path}: ${err.message}`);
  return new GeneralError(`${FALLBACK} (${message(err)})`);
}
