// Every case of every file listed in tests/vectors/index.json, through the JS wrapper
// (and, for eligibility and routing, once more through the batch entry points).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';

import { loadPolicy } from '../src/index.js';
import { checkCase, runCase } from './cases.js';

const VECTORS = new URL('../../tests/vectors/', import.meta.url);

const index = JSON.parse(readFileSync(new URL('index.json', VECTORS), 'utf8'));
const files = index?.files;
assert.ok(Array.isArray(files) && files.length > 0, 'tests/vectors/index.json lists no files');

const corpus = files.map((file) => {
  assert.equal(typeof file, 'string', `index.json: a file entry must be a string, got ${JSON.stringify(file)}`);
  const doc = JSON.parse(readFileSync(new URL(file, VECTORS), 'utf8'));
  const extra = Object.keys(doc).filter((k) => k !== 'description' && k !== 'cases');
  assert.deepEqual(extra, [], `${file}: unknown top-level fields`);
  assert.ok(Array.isArray(doc.cases), `${file}: \`cases\` must be an array`);
  doc.cases.forEach((c, i) => checkCase(c, `${file} case ${i} (${c?.name ?? 'unnamed'})`));
  return { file, cases: doc.cases };
});

const policy = await loadPolicy();
const total = corpus.reduce((n, f) => n + f.cases.length, 0);

test('the index lists cases', () => {
  assert.ok(total > 0, 'tests/vectors/index.json lists no cases');
});

for (const { file, cases } of corpus) {
  describe(file, () => {
    for (const c of cases) {
      test(c.name, () => {
        const failures = runCase(policy, c);
        if (c.op === 'is_eligible' || c.op === 'route') {
          for (const f of runCase(policy, c, { batch: true })) failures.push(`(batch) ${f}`);
        }
        assert.deepEqual(failures, [], `${file}: ${c.name}\n  ${failures.join('\n  ')}`);
      });
    }
  });
}
