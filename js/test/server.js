// A real `rollout serve` for the JS tests that talk to one (OFREP, the in-process provider):
// the binary is ../target/debug/rollout (built by `cargo test` in `make test`; override with
// ROLLOUT_BIN), on a SQLite database in a directory of the caller's.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BIN = process.env.ROLLOUT_BIN ?? fileURLToPath(new URL('../../target/debug/rollout', import.meta.url));

/**
 * Whether `files` (`[path, how to build it]`) exist. When one is missing, say so loudly
 * (naming `what`) and return false — or throw under CI=true, where a skip is a failure.
 */
export function prerequisites(what, files) {
  const missing = files.filter(([f]) => !existsSync(f));
  if (missing.length === 0) return true;
  const message = `${what} need ${missing.map(([f, how]) => `${f} (${how})`).join(' and ')}`;
  if (process.env.CI === 'true') throw new Error(message);
  console.error(`\n*** SKIPPED ${message} ***\n`);
  return false;
}

/** Start `rollout serve` on the SQLite database in `dir` (port 0: any) with the service token `token`; resolves with `{child, url, port}`. */
export function startServer(dir, token, port = 0) {
  const child = spawn(
    BIN,
    ['--database-url', `sqlite://${join(dir, 'rollout.db')}`, 'serve', '--listen', `127.0.0.1:${port}`, '--health-interval', '3600'],
    { env: { ...process.env, ROLLOUT_SERVICE_TOKEN: token, RUST_LOG: 'warn' }, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`rollout serve did not start: ${out}`)), 60_000);
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const m = out.match(/listening on (http:\/\/[^\s]+)/);
      if (m) {
        clearTimeout(timer);
        const url = m[1].replace(/\/$/, '');
        resolve({ child, url, port: Number(new URL(url).port) });
      }
    });
    child.on('exit', (code) => reject(new Error(`rollout serve exited with ${code}: ${out}`)));
  });
}
