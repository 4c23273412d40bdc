// OpenFeature over OFREP against a real `rollout serve` (issue 13): the published
// `@openfeature/ofrep-provider` with `@openfeature/server-sdk` evaluates a feature's two flags
// (`F`: eligible; `F/processor`: where the job runs), and every answer equals what the same
// component decides in-process through this package (jco) for the configuration the server
// reports. Also: OFREP's error codes, a percentage change seen by the next evaluation, and the
// bulk endpoint's ETag / 304.
//
// The server is `../target/debug/rollout` (built by `cargo test` in `make test`; override with
// ROLLOUT_BIN). Without it the test is skipped loudly — and fails under CI=true.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { OFREPProvider } from '@openfeature/ofrep-provider';
import { OpenFeature } from '@openfeature/server-sdk';

import { loadPolicy } from '../src/index.js';
import { BIN, prerequisites, startServer as startRollout } from './server.js';

const FEATURE = 'hybrid_progressive_capture';
const TOKEN = 'ofrep-test-token-0123456789';
const available = prerequisites('the OFREP tests', [[BIN, 'cargo build -p rollout (or set ROLLOUT_BIN)']]);
const startServer = (dir) => startRollout(dir, TOKEN);

describe('OFREP with the published OpenFeature provider', { skip: !available }, () => {
  let dir;
  let server;
  let client;
  let policy;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rollout-ofrep-'));
    server = await startServer(dir);
    policy = await loadPolicy();
    await OpenFeature.setProviderAndWait(new OFREPProvider({ baseUrl: server.url }));
    client = OpenFeature.getClient();
  });

  after(async () => {
    await OpenFeature.close();
    server?.child.kill();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function put(path, body) {
    const r = await fetch(`${server.url}${path}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
      body: JSON.stringify(body),
    });
    assert.equal(r.status, 200, await r.text());
  }

  /** The configuration the server decides with, as this package's Policy takes it. */
  async function serverConfig() {
    const r = await fetch(`${server.url}/v1/features/${FEATURE}`);
    const c = (await r.json()).config;
    const v = (x) => (x !== null && typeof x === 'object' && 'value' in x ? x.value : x);
    return {
      featureName: c.feature_name,
      rolloutPercentage: v(c.rollout_percentage),
      isActive: c.is_active,
      targetRepositories: c.target_repositories,
      excludedRepositories: c.excluded_repositories,
      rolloutStrategy: v(c.rollout_strategy),
      maxErrorRate: v(c.max_error_rate),
      monitoringWindowHours: c.monitoring_window_hours,
      autoRollbackEnabled: v(c.auto_rollback_enabled),
      emergencyStop: v(c.emergency_stop),
      minJobsForRollback: c.min_jobs_for_rollback,
    };
  }

  const ids = Array.from({ length: 200 }, (_, i) => `6f1c9a3e-0c4b-4f5e-9d41-${i.toString(16).padStart(12, '0')}`);
  const SPLIT_REASONS = new Set(['in_percentage', 'outside_percentage']);

  test('eligibility and routing equal the component in-process, with OpenFeature reasons', async () => {
    await put(`/v1/features/${FEATURE}/percentage`, { percentage: 30, reason: 'ofrep test' });
    const evaluator = policy.evaluator(await serverConfig());
    let eligible = 0;
    for (const [i, id] of ids.entries()) {
      const expected = evaluator.isEligible({ id });
      const got = await client.getBooleanDetails(FEATURE, !expected.eligible, { targetingKey: id });
      assert.equal(got.value, expected.eligible, id);
      assert.equal(got.flagMetadata.reason_code, expected.reason, id);
      assert.equal(got.flagMetadata.bucket, expected.bucket, id);
      assert.equal(got.reason, SPLIT_REASONS.has(expected.reason) ? 'SPLIT' : 'TARGETING_MATCH', id);
      assert.match(String(got.flagMetadata.decision_id), /^[0-9a-f-]{36}$/);
      eligible += expected.eligible ? 1 : 0;

      const job = { max_items: (i * 7) % 120, time_range_days: i % 3, trigger_source: i % 2 ? 'scheduled' : 'manual' };
      const route = evaluator.route({ id }, { maxItems: job.max_items, timeRangeDays: job.time_range_days, triggerSource: job.trigger_source });
      const r = await client.getStringDetails(`${FEATURE}/processor`, 'nowhere', { targetingKey: id, ...job });
      assert.equal(r.value, route.processor, `${id} ${JSON.stringify(job)}`);
      assert.equal(r.flagMetadata.rule, route.rule, id);
      assert.equal(r.variant, route.processor);
    }
    assert.ok(eligible > 20 && eligible < 120, `about 30 % of 200 eligible: ${eligible}`);
  });

  test('a percentage change is seen by the next evaluation', async () => {
    await put(`/v1/features/${FEATURE}/percentage`, { percentage: 100, reason: 'ofrep test' });
    for (const id of ids.slice(0, 20)) {
      const got = await client.getBooleanDetails(FEATURE, false, { targetingKey: id });
      assert.equal(got.value, true, id);
    }
    await put(`/v1/features/${FEATURE}/percentage`, { percentage: 0, reason: 'ofrep test' });
    const got = await client.getBooleanDetails(FEATURE, true, { targetingKey: ids[0] });
    assert.deepEqual([got.value, got.reason, got.flagMetadata.reason_code], [false, 'SPLIT', 'outside_percentage']);
  });

  test('errors have OFREP codes and the code default is used', async () => {
    const unknown = await client.getBooleanDetails('no_such_feature', true, { targetingKey: ids[0] });
    assert.deepEqual([unknown.value, unknown.reason, unknown.errorCode], [true, 'ERROR', 'FLAG_NOT_FOUND']);
    const missing = await client.getBooleanDetails(FEATURE, true, {});
    assert.deepEqual([missing.value, missing.errorCode], [true, 'TARGETING_KEY_MISSING']);
    const bad = await client.getStringDetails(`${FEATURE}/processor`, 'inngest', { targetingKey: ids[0], trigger_source: 'cron' });
    assert.equal(bad.errorCode, 'INVALID_CONTEXT');
    assert.match(bad.errorMessage ?? '', /trigger source/);
  });

  test('bulk evaluation has an ETag and answers 304 until something changes', async () => {
    const bulk = (etag) =>
      fetch(`${server.url}/ofrep/v1/evaluate/flags`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(etag ? { 'if-none-match': etag } : {}) },
        body: JSON.stringify({ context: { targetingKey: ids[3], max_items: 80 } }),
      });
    const first = await bulk();
    assert.equal(first.status, 200);
    const etag = first.headers.get('etag');
    assert.ok(etag, 'an ETag');
    const { flags } = await first.json();
    assert.deepEqual(flags.map((f) => f.key).sort(), [FEATURE, `${FEATURE}/processor`]);
    assert.equal((await bulk(etag)).status, 304);
    await put(`/v1/features/${FEATURE}/percentage`, { percentage: 100, reason: 'ofrep test' });
    const changed = await bulk(etag);
    assert.equal(changed.status, 200, 'a percentage change changes the answers');
    assert.notEqual(changed.headers.get('etag'), etag);
  });
});
