// The package in Cloudflare's workerd (through miniflare), initialised by module import.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Miniflare } from 'miniflare';
import { startServer } from './static-server.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const models = process.env.ZIPLLM_MODELS || path.join(root, '.cache/models');
const FT_A_SHA256 = 'f2f2f85cabf465c4a0adc9481a6b0b732bd5128a58f745ff5b04a6061192a5b3';

let mf;
let store;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zipllm-workerd-'));

before(async () => {
  for (const f of ['zipllm.js', 'zipllm_bg.wasm']) fs.copyFileSync(path.join(root, 'pkg/web', f), path.join(dir, f));
  fs.copyFileSync(path.join(root, 'js/test/workerd/worker.mjs'), path.join(dir, 'worker.mjs'));
  store = await startServer({ root, mounts: { '/models/': models } });
  mf = new Miniflare({
    modules: true,
    scriptPath: path.join(dir, 'worker.mjs'),
    modulesRoot: dir,
    modulesRules: [{ type: 'ESModule', include: ['**/*.js', '**/*.mjs'] }, { type: 'CompiledWasm', include: ['**/*.wasm'] }],
    bindings: { STORE_URL: store.url },
    compatibilityDate: '2025-01-01',
  });
});

after(async () => {
  await mf?.dispose();
  store?.server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const Q = '?base=/models/base/model.bf16.safetensors&delta=/tests/fixtures/ft-a.bf16.zld';

test('workerd rebuilds ft-a, streaming', async () => {
  const r = await mf.dispatchFetch(`http://worker/${Q}`);
  assert.equal(r.status, 200);
  const sha = crypto.createHash('sha256');
  for await (const chunk of r.body) sha.update(chunk);
  assert.equal(sha.digest('hex'), FT_A_SHA256);
});

test('workerd serves a byte range', async () => {
  const r = await mf.dispatchFetch(`http://worker/${Q}`, { headers: { Range: 'bytes=20000000-20000999' } });
  assert.equal(r.status, 206);
  const got = Buffer.from(await r.arrayBuffer());
  assert.equal(got.length, 1000);
});

test('workerd reports a wrong base as a coded error', async () => {
  const r = await mf.dispatchFetch('http://worker/?base=/models/base/model.safetensors&delta=/tests/fixtures/ft-a.bf16.zld', {
    headers: { Range: 'bytes=0-99' },
  });
  assert.equal(r.status, 500);
  assert.equal((await r.json()).error, 'WRONG_BASE');
});
