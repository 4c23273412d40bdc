// The in-process OpenFeature provider (src/openfeature.js, issue 13) against a real
// `rollout serve`: through `@openfeature/server-sdk` it decides what the server decides (the
// server's own `/route` answers are the oracle), follows a percentage change and a policy swap
// pushed while it evaluates, serves its last good snapshot (STALE) while the server is down and
// is READY again after a restart on the same port and database. A last test drives the sync
// protocol from a small fake server to show a refused component: STALE, the reason in
// `lastError`, the last good policy deciding.
//
// The server is `../target/debug/rollout` (`cargo build -p rollout`; override with
// ROLLOUT_BIN), the swapped-in policy `../target/wasm/size_aware_policy.wasm` (`make
// examples`). Without them the tests are skipped loudly — and fail under CI=true. Polls wait up
// to 30 s (the machine is shared); nothing here asserts a duration.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { OpenFeature, ProviderEvents, ProviderStatus } from '@openfeature/server-sdk';

import { loadPolicy } from '../src/index.js';
import { RolloutProvider } from '../src/openfeature.js';
import { BIN, prerequisites, startServer as startRollout } from './server.js';

const FEATURE = 'hybrid_progressive_capture';
const PROCESSOR = `${FEATURE}/processor`;
const TOKEN = 'inproc-test-token-0123456789';
const EXAMPLE = fileURLToPath(new URL('../../target/wasm/size_aware_policy.wasm', import.meta.url));
const REFERENCE = fileURLToPath(new URL('../../target/wasm/rollout_policy.wasm', import.meta.url));
const available = prerequisites('the in-process provider tests', [
  [BIN, 'cargo build -p rollout (or set ROLLOUT_BIN)'],
  [EXAMPLE, 'make examples'],
  [REFERENCE, 'make policy'],
]);
const startServer = (dir, port = 0) => startRollout(dir, TOKEN, port);

function stopServer(server) {
  if (!server || server.child.exitCode !== null || server.child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    server.child.once('exit', resolve);
    server.child.kill('SIGKILL');
  });
}

/** Poll `check` (sync or async) every 20 ms for up to 30 s. */
async function eventually(what, check) {
  const start = Date.now();
  for (;;) {
    if (await check()) return;
    assert.ok(Date.now() - start < 30_000, `not within 30 s: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const ids = Array.from({ length: 200 }, (_, i) => `6f1c9a3e-0c4b-4f5e-9d41-${i.toString(16).padStart(12, '0')}`);
const job = (i) => ({ max_items: (i * 7) % 120, time_range_days: i % 3, trigger_source: i % 2 ? 'scheduled' : 'manual' });
const OF_REASON = { emergency_stop: 'DISABLED', inactive: 'DISABLED', in_percentage: 'SPLIT', outside_percentage: 'SPLIT' };

describe('the in-process OpenFeature provider against a real rollout serve', { skip: !available }, () => {
  let dir;
  let server;
  let provider;
  let client;
  const changes = [];
  const stales = [];
  const readies = [];

  async function call(method, path, body, { status = 200, headers = {} } = {}) {
    const r = await fetch(`${server.url}${path}`, {
      method,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}`, ...headers },
      body: body === undefined || body instanceof Uint8Array ? body : JSON.stringify(body),
    });
    const text = await r.text();
    assert.equal(r.status, status, `${method} ${path}: ${text}`);
    return text ? JSON.parse(text) : null;
  }
  const setPercentage = (percentage) => call('PUT', `/v1/features/${FEATURE}/percentage`, { percentage, reason: 'inproc test' });

  /** Every id's two flags through the OpenFeature client equal the server's own `/route` answer. */
  async function agreesWithServer(n, sha) {
    let eligible = 0;
    for (const [i, id] of ids.slice(0, n).entries()) {
      const served = await call('POST', `/v1/features/${FEATURE}/route`, { repository_id: id, job: job(i) });
      const e = await client.getBooleanDetails(FEATURE, !served.eligible, { targetingKey: id, ...job(i) });
      assert.equal(e.errorCode, undefined, `${id}: ${e.errorMessage}`);
      assert.equal(e.value, served.eligible, id);
      assert.equal(e.flagMetadata.reason_code, served.reason, id);
      assert.equal(e.flagMetadata.bucket, served.bucket, id);
      assert.equal(e.reason, OF_REASON[served.reason] ?? 'TARGETING_MATCH', id);
      assert.equal(e.variant, served.eligible ? 'eligible' : 'not_eligible');
      assert.equal(e.flagMetadata.policy_sha256, sha ?? served.policy_version.sha256, id);
      const r = await client.getStringDetails(PROCESSOR, 'nowhere', { targetingKey: id, ...job(i) });
      assert.equal(r.errorCode, undefined, `${id}: ${r.errorMessage}`);
      assert.equal(r.value, served.processor, `${id} ${JSON.stringify(job(i))}`);
      assert.equal(r.flagMetadata.rule, served.rule, id);
      assert.equal(r.flagMetadata.reason_code, served.reason, id);
      assert.equal(r.variant, served.processor);
      const why = served.eligible ? (served.rule === 'default' ? 'DEFAULT' : 'TARGETING_MATCH') : (OF_REASON[served.reason] ?? 'TARGETING_MATCH');
      assert.equal(r.reason, why, id);
      eligible += served.eligible ? 1 : 0;
    }
    return eligible;
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rollout-inproc-'));
    server = await startServer(dir);
    await setPercentage(30);
    OpenFeature.addHandler(ProviderEvents.ConfigurationChanged, (d) => changes.push(d));
    OpenFeature.addHandler(ProviderEvents.Stale, (d) => stales.push(d));
    OpenFeature.addHandler(ProviderEvents.Ready, (d) => readies.push(d));
    provider = new RolloutProvider({ baseUrl: server.url, feature: FEATURE });
    await OpenFeature.setProviderAndWait(provider);
    client = OpenFeature.getClient();
  });

  after(async () => {
    await OpenFeature.close();
    await stopServer(server);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('200 ids: both flags equal the server’s /route answers, with OpenFeature reasons and metadata', async () => {
    assert.equal(client.providerStatus, ProviderStatus.READY);
    await eventually('the event stream is up', () => provider.syncStatus().connected);
    const sync = provider.syncStatus();
    assert.equal(sync.snapshotsApplied, 1, 'the stream’s first snapshot equals the one read at start: nothing applied again');
    assert.match(sync.policySha256, /^[0-9a-f]{64}$/);
    const eligible = await agreesWithServer(200);
    assert.ok(eligible > 20 && eligible < 120, `about 30 % of 200 eligible: ${eligible}`);
  });

  test('errors: the SDK returns the code default with the error code', async () => {
    const unknown = await client.getBooleanDetails('no_such_feature', true, { targetingKey: ids[0] });
    assert.deepEqual([unknown.value, unknown.reason, unknown.errorCode], [true, 'ERROR', 'FLAG_NOT_FOUND']);
    const missingKey = await client.getBooleanDetails(FEATURE, true, {});
    assert.deepEqual([missingKey.value, missingKey.errorCode], [true, 'TARGETING_KEY_MISSING']);
    const notUuid = await client.getBooleanDetails(FEATURE, true, { targetingKey: 'owner/name' });
    assert.deepEqual([notUuid.value, notUuid.errorCode], [true, 'INVALID_CONTEXT']);
    const bad = await client.getStringDetails(PROCESSOR, 'inngest', { targetingKey: ids[0], trigger_source: 'cron' });
    assert.deepEqual([bad.value, bad.errorCode], ['inngest', 'INVALID_CONTEXT']);
    assert.match(bad.errorMessage ?? '', /trigger_source/);
    const huge = await client.getStringDetails(PROCESSOR, 'inngest', { targetingKey: ids[0], category: 'huge' });
    assert.equal(huge.errorCode, 'INVALID_CONTEXT');
    const negative = await client.getStringDetails(PROCESSOR, 'inngest', { targetingKey: ids[0], max_items: -1 });
    assert.equal(negative.errorCode, 'INVALID_CONTEXT');
    const mismatch = await client.getNumberDetails(FEATURE, 7, { targetingKey: ids[0] });
    assert.deepEqual([mismatch.value, mismatch.errorCode], [7, 'TYPE_MISMATCH']);
    // the same context errors from the server's OFREP endpoint
    const ofrep = await fetch(`${server.url}/ofrep/v1/evaluate/flags/${PROCESSOR}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ context: { targetingKey: ids[0], trigger_source: 'cron' } }),
    });
    assert.equal((await ofrep.json()).errorCode, 'INVALID_CONTEXT');
  });

  test('a percentage change made through the server arrives while the client evaluates', async () => {
    const before = provider.syncStatus();
    const changesBefore = changes.length;
    const probe = ids.findIndex((id, i) => !provider.booleanDetails(FEATURE, { targetingKey: id, ...job(i) }).value);
    assert.ok(probe >= 0, 'an id outside 30 %');
    let evaluating = true;
    let evaluations = 0;
    const loop = (async () => {
      while (evaluating) {
        for (let i = 0; i < 50; i++) {
          const d = await client.getBooleanDetails(FEATURE, false, { targetingKey: ids[(evaluations + i) % 200] });
          assert.equal(d.errorCode, undefined, d.errorMessage);
        }
        evaluations += 50;
        await new Promise((r) => setImmediate(r));
      }
    })();
    await setPercentage(100);
    await eventually('the client sees 100 %', async () => (await client.getBooleanValue(FEATURE, false, { targetingKey: ids[probe] })) === true);
    evaluating = false;
    await loop;
    assert.ok(evaluations > 0, 'the loop evaluated while the change arrived');
    const after = provider.syncStatus();
    assert.ok(after.configVersion > before.configVersion, `${after.configVersion} > ${before.configVersion}`);
    assert.ok(after.snapshotsApplied > before.snapshotsApplied);
    assert.ok(changes.length > changesBefore, 'PROVIDER_CONFIGURATION_CHANGED was emitted');
    const last = changes.at(-1);
    assert.deepEqual(last.flagsChanged, [FEATURE, PROCESSOR]);
    assert.equal(last.metadata.config_version, after.configVersion);
    const d = await client.getBooleanDetails(FEATURE, false, { targetingKey: ids[probe] });
    assert.equal(d.flagMetadata.config_version, after.configVersion);
    await setPercentage(40);
    await eventually('the provider follows 40 %', () => provider.syncStatus().configVersion > after.configVersion);
    await agreesWithServer(100);
  });

  test('a policy swap is followed without a restart: transpiled in memory, decisions equal the server’s', async (t) => {
    const bundledSha = provider.syncStatus().policySha256;
    const uploaded = await fetch(`${server.url}/v1/policies`, {
      method: 'POST',
      headers: { 'content-type': 'application/wasm', authorization: `Bearer ${TOKEN}` },
      body: readFileSync(EXAMPLE),
    });
    const body = await uploaded.json();
    assert.equal(uploaded.status, 201, JSON.stringify(body));
    const sha = body.policy.sha256;
    assert.notEqual(sha, bundledSha);
    const changesBefore = changes.length;
    let evaluating = true;
    let evaluations = 0;
    const loop = (async () => {
      while (evaluating) {
        const d = await client.getStringDetails(PROCESSOR, 'inngest', { targetingKey: ids[evaluations % 200], category: 'large', trigger_source: 'scheduled', time_range_days: 1 });
        assert.equal(d.errorCode, undefined, d.errorMessage);
        evaluations += 1;
        if (evaluations % 20 === 0) await new Promise((r) => setImmediate(r));
      }
    })();
    await call('POST', `/v1/policies/${sha}/activate`, { reason: 'inproc test' });
    await eventually('the provider swaps the policy', () => provider.syncStatus().policySha256 === sha);
    evaluating = false;
    await loop;
    const sync = provider.syncStatus();
    assert.equal(sync.status, ProviderStatus.READY, sync.lastError ?? '');
    assert.equal(client.providerStatus, ProviderStatus.READY);
    assert.equal(sync.lastSwap.sha256, sha);
    assert.equal(sync.lastSwap.bundled, false);
    assert.ok(evaluations > 0, 'the client evaluated while the component was transpiled');
    t.diagnostic(`policy swap: fetch ${sync.lastSwap.fetchMs.toFixed(0)} ms, jco transpile in a worker ${sync.lastSwap.transpileMs.toFixed(0)} ms (transpile() ${sync.lastSwap.jcoMs.toFixed(0)}), import+instantiate ${sync.lastSwap.importMs.toFixed(0)} ms`);
    assert.ok(changes.length > changesBefore, 'PROVIDER_CONFIGURATION_CHANGED for the swap');
    assert.equal(changes.at(-1).metadata.policy_sha256, sha);
    await agreesWithServer(200, sha);

    // the new policy really decides: a scheduled job of an eligible large repository over recent
    // data goes to GitHub Actions (`scheduled_bulk`); the bundled policy keeps it on Inngest.
    // The server's OFREP endpoint (which takes `category` from the context) is the oracle.
    const target = ids.find((id) => provider.booleanDetails(FEATURE, { targetingKey: id }).value);
    const context = { targetingKey: target, category: 'large', trigger_source: 'scheduled', time_range_days: 1 };
    const ours = await client.getStringDetails(PROCESSOR, 'inngest', context);
    const r = await fetch(`${server.url}/ofrep/v1/evaluate/flags/${PROCESSOR}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ context }),
    });
    const served = await r.json();
    assert.deepEqual([ours.value, ours.flagMetadata.rule, ours.reason], [served.value, served.metadata.rule, served.reason]);
    assert.deepEqual([ours.value, ours.flagMetadata.rule, ours.flagMetadata.policy_sha256], ['github_actions', 'scheduled_bulk', sha]);
    const bundled = (await loadPolicy()).evaluator({ rolloutPercentage: 40, isActive: true }).route({ id: target, category: 'large' }, { triggerSource: 'scheduled', timeRangeDays: 1 });
    assert.equal(bundled.rule, 'recent_data');
  });

  test('a server restart: STALE and still deciding while it is down, READY after, following changes', async () => {
    const port = server.port;
    const staleBefore = stales.length;
    const readyBefore = readies.length;
    const before = provider.syncStatus();
    const probe = ids.findIndex((id) => provider.booleanDetails(FEATURE, { targetingKey: id }).value);
    await stopServer(server);
    await eventually('the provider notices the server is gone', () => client.providerStatus === ProviderStatus.STALE);
    assert.equal(provider.status, ProviderStatus.STALE);
    assert.equal(provider.syncStatus().connected, false);
    assert.ok(provider.syncStatus().lastError, 'lastError says why');
    assert.ok(stales.length > staleBefore, 'PROVIDER_STALE was emitted');
    const d = await client.getBooleanDetails(FEATURE, false, { targetingKey: ids[probe] });
    assert.deepEqual([d.value, d.errorCode, d.flagMetadata.config_version], [true, undefined, before.configVersion], 'the last good snapshot decides');

    server = await startServer(dir, port);
    await eventually('the provider reconnects', () => client.providerStatus === ProviderStatus.READY);
    assert.ok(readies.length > readyBefore, 'PROVIDER_READY was emitted');
    assert.equal(provider.syncStatus().connected, true);
    assert.equal(provider.syncStatus().policySha256, before.policySha256, 'the restarted server serves the activated policy');
    const version = provider.syncStatus().configVersion;
    await setPercentage(0);
    await eventually('the provider follows a change after the restart', () => provider.syncStatus().configVersion > version);
    await eventually('the client sees 0 %', async () => (await client.getBooleanValue(FEATURE, true, { targetingKey: ids[probe] })) === false);
    await agreesWithServer(50, before.policySha256);
  });
});

/**
 * A fake sync server: `/v1/sync/{F}` answers `current`, `/v1/sync/{F}/events` sends it at once
 * and each later `push`, `/v1/policies/{sha}/component` the bytes registered for `sha`.
 */
function fakeSyncServer() {
  const components = new Map();
  const streams = new Set();
  let current = null;
  const http = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === `/v1/sync/${FEATURE}`) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(current));
    } else if (url.pathname === `/v1/sync/${FEATURE}/events`) {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`: hello\n\nevent: snapshot\nid: ${current.etag}\ndata: ${JSON.stringify(current)}\n\n`);
      streams.add(res);
      req.on('close', () => streams.delete(res));
    } else if (url.pathname.startsWith('/v1/policies/') && components.has(url.pathname.split('/')[3])) {
      res.writeHead(200, { 'content-type': 'application/wasm' }).end(components.get(url.pathname.split('/')[3]));
    } else {
      res.writeHead(404).end('{}');
    }
  });
  return {
    http,
    component(bytes) {
      const sha = createHash('sha256').update(bytes).digest('hex');
      components.set(sha, bytes);
      return sha;
    },
    set(snapshot) {
      current = snapshot;
    },
    push(snapshot) {
      current = snapshot;
      for (const s of streams) s.write(`event: snapshot\nid: ${snapshot.etag}\ndata: ${JSON.stringify(snapshot)}\n\n`);
    },
    listen: () => new Promise((resolve) => http.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${http.address().port}`))),
    close() {
      for (const s of streams) s.destroy();
      return new Promise((resolve) => http.close(resolve));
    },
  };
}

function snapshot(version, sha, percentage) {
  return {
    feature: FEATURE,
    config_version: version,
    config: {
      feature_name: FEATURE, rollout_percentage: percentage, is_active: true, target_repositories: [], excluded_repositories: [],
      rollout_strategy: 'percentage', max_error_rate: 5.0, monitoring_window_hours: 24, auto_rollback_enabled: true,
      emergency_stop: false, min_jobs_for_rollback: 10, metadata: {}, id: '88ab3184-c123-4cb3-8867-44d4b565637e',
      config_version: version, rolled_back: false, state_changed_at: '2026-12-03T08:59:49.641000Z',
      created_at: '2026-12-03T08:59:49.641000Z', updated_at: '2026-12-03T08:59:49.641000Z',
    },
    policy: { sha256: sha, name: 'p', version: '0', contract: '0.1.1', component: `/v1/policies/${sha}/component` },
    etag: `"${version}-${sha.slice(0, 16)}"`,
  };
}

describe('a policy the provider cannot load (a fake sync server)', { skip: !existsSync(REFERENCE) }, () => {
  test('STALE with the reason; the last good policy keeps deciding with the new configuration; READY after a good one', async () => {
    const fake = fakeSyncServer();
    const good = fake.component(readFileSync(REFERENCE));
    const bad = fake.component(new TextEncoder().encode('not a component'));
    fake.set(snapshot(1, good, 0));
    const url = await fake.listen();
    const provider = new RolloutProvider({ baseUrl: url, feature: FEATURE });
    await OpenFeature.setProviderAndWait('refusal', provider);
    const client = OpenFeature.getClient('refusal');
    try {
      assert.equal(provider.syncStatus().policySha256, good);
      assert.equal(provider.syncStatus().lastSwap.bundled, true, 'the reference component is recognised as the bundled policy');
      await eventually('the stream is up', () => provider.syncStatus().connected);
      const id = ids[5];
      assert.equal(await client.getBooleanValue(FEATURE, true, { targetingKey: id }), false);

      fake.push(snapshot(2, bad, 100));
      await eventually('the provider reports the refusal', () => client.providerStatus === ProviderStatus.STALE);
      const s = provider.syncStatus();
      assert.equal(s.policySha256, good, 'the last good policy stays');
      assert.equal(s.configVersion, 2, 'the configuration is applied with it');
      assert.equal(s.connected, true);
      assert.match(s.lastError, new RegExp(`${bad} was refused`));
      assert.match(s.lastError, /transpile/);
      const d = await client.getBooleanDetails(FEATURE, false, { targetingKey: id });
      assert.deepEqual([d.value, d.errorCode, d.flagMetadata.policy_sha256], [true, undefined, good]);

      fake.push(snapshot(3, good, 0));
      await eventually('READY with a good policy again', () => client.providerStatus === ProviderStatus.READY);
      assert.equal(provider.syncStatus().configVersion, 3);
      assert.equal(await client.getBooleanValue(FEATURE, true, { targetingKey: id }), false);
    } finally {
      await OpenFeature.clearProviders();
      await fake.close();
    }
  });
});
