// The batch codes and enum orders of the JavaScript wrapper against `wit/policy.wit` itself:
// the canonical ABI lowers an enum to its case index and the batch columns reuse those
// indices, so a case reordered or inserted in the WIT but not here would silently swap
// decisions. (`policy/tests/wit_order.rs` checks the Rust side the same way.)
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { BATCH_CODES, CATEGORIES, PROCESSORS, STRATEGIES, TRIGGER_SOURCES } from '../src/index.js';
import { witEnum } from './reference.js';

test('the exported enum lists follow the WIT order', () => {
  assert.deepEqual([...STRATEGIES], witEnum('strategy'));
  assert.deepEqual([...CATEGORIES], witEnum('category'));
  assert.deepEqual([...TRIGGER_SOURCES], witEnum('trigger-source'));
  assert.deepEqual([...PROCESSORS], witEnum('processor'));
});

test('the batch answer codes are positions in the WIT enums', () => {
  assert.deepEqual([...BATCH_CODES.eligibilityReason], witEnum('eligibility-reason'));
  assert.deepEqual([...BATCH_CODES.routeRule], witEnum('route-rule'));
});

test('categories and trigger sources are encoded as 1 + their WIT position', () => {
  const categories = witEnum('category');
  assert.deepEqual(Object.keys(BATCH_CODES.category).sort(), [...categories].sort());
  categories.forEach((c, i) => assert.equal(BATCH_CODES.category[c], i + 1, c));
  const triggers = witEnum('trigger-source');
  assert.deepEqual(Object.keys(BATCH_CODES.triggerSource).sort(), [...triggers].sort());
  triggers.forEach((t, i) => assert.equal(BATCH_CODES.triggerSource[t], i + 1, t));
});
