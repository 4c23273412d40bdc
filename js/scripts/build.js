// Transpile the policy component into ES module bindings: dist/generated/.
//
//   npm run build                      # ../target/wasm/rollout_policy.wasm (built by `make policy`)
//   ROLLOUT_POLICY_WASM=x.wasm npm run build
//
// The component imports no function, so no WASI shim is needed; the build fails if that
// ever changes, because the bindings would then need imports this package does not provide.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = resolve(here, '..');
const wasm = resolve(process.env.ROLLOUT_POLICY_WASM ?? join(pkg, '..', 'target', 'wasm', 'rollout_policy.wasm'));
const out = join(pkg, 'dist', 'generated');

if (!existsSync(wasm)) {
  console.error(
    `error: the policy component ${relative(process.cwd(), wasm)} does not exist.\n` +
      'Build it first: run `make policy` at the repository root (or set ROLLOUT_POLICY_WASM to a component file).',
  );
  process.exit(1);
}

const { transpile } = await import('@bytecodealliance/jco');
const { files, imports } = await transpile(readFileSync(wasm), {
  name: 'rollout_policy',
  wasiShim: false,
  quiet: true,
});
if (imports.length > 0) {
  console.error(`error: ${wasm} imports ${imports.join(', ')}; the policy component must import no function.`);
  process.exit(1);
}

rmSync(out, { recursive: true, force: true });
for (const [name, bytes] of Object.entries(files)) {
  const file = join(out, name);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, bytes);
}
console.log(`transpiled ${relative(process.cwd(), wasm)} -> ${relative(process.cwd(), out)}/ (${Object.keys(files).length} files)`);
