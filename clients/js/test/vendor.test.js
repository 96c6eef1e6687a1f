// vendor/socket.io-client.node.js: Node's `#socket.io-client` (package.json "imports"), the
// locked socket.io-client with its dependencies in one file, so that a linked install
// (`npm install <path>`, which installs no dependencies) runs. The same flows through it
// against a real server are in the other test files; the install itself in
// tests/test_client_packages.py.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { test } from 'node:test';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as esbuild from 'esbuild';

import { BUNDLE, OPTIONAL, build } from '../scripts/vendor.mjs';

test('the committed vendor files are what `npm run vendor` builds from package-lock.json', async () => {
  const built = await build();
  for (const [path, text] of Object.entries(built)) {
    assert.ok(readFileSync(path, 'utf8') === text, `${path} is stale: run npm run vendor`);
  }
});

test('in Node, #socket.io-client is the vendored build', () => {
  assert.equal(fileURLToPath(import.meta.resolve('#socket.io-client')), BUNDLE);
});

test('the vendored build loads nothing but Node builtins (and optional add-ons)', async () => {
  const text = readFileSync(BUNDLE, 'utf8');
  const loaded = [...text.matchAll(/(?:\bfrom\s*|__require\()\s*["']([^"']+)["']/g)].map((m) => m[1]);
  assert.ok(loaded.length > 0);
  assert.deepEqual(loaded.filter((name) => !isBuiltin(name) && !OPTIONAL.includes(name)), []);
  const { io, Manager, Socket } = await import('#socket.io-client');
  assert.equal(typeof io, 'function');
  assert.equal(typeof Manager, 'function');
  assert.equal(typeof Socket, 'function');
});

test('a bundler for browsers takes the socket.io-client dependency, not the Node build', async () => {
  const { metafile } = await esbuild.build({
    stdin: { contents: "export { io } from '#socket.io-client';", resolveDir: dirname(BUNDLE) },
    absWorkingDir: dirname(dirname(BUNDLE)), // input paths relative to clients/js
    bundle: true, platform: 'browser', format: 'esm', write: false, metafile: true, logLevel: 'silent',
  });
  const inputs = Object.keys(metafile.inputs);
  assert.ok(inputs.includes('node_modules/socket.io-client/build/esm/index.js'), inputs.join('\n'));
  assert.ok(!inputs.some((input) => input.includes('vendor/')), inputs.join('\n'));
});
