// Remote fingerprinting against a local HTTP server that counts the bytes it serves, and
// matching the fingerprint against locally held bases.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import * as zipllm from 'zipllm';
import { buildHub } from '../../www/hub.mjs';
import { startServer } from '../../www/server.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const models = process.env.ZIPLLM_MODELS || path.join(root, '.cache/models');
const BASE_BF16 = path.join(models, 'base/model.bf16.safetensors');
const BASE_FP32 = path.join(models, 'base/model.safetensors');

let site;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zipllm-family-'));
const FT_A = path.join(tmp, 'ft-a/model.bf16.safetensors');

before(async () => {
  // A hub with ft-a (bf16), rebuilt from the committed delta, on a server counting what it sends.
  await buildHub({ hubDir: tmp, models });
  site = await startServer({ root: tmp });
});

after(() => {
  site?.server.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Starts counting the bytes and requests the server answers; returns the counters. */
function count() {
  site.stats.bytes = 0;
  site.stats.requests = 0;
  return site.stats;
}

function randomInit(baseBytes) {
  // Same header, weights ~ N(0, 0.02) in bf16: an unrelated model of the same architecture.
  const out = Buffer.from(baseBytes);
  const n = Number(out.readBigUInt64LE(0));
  const header = JSON.parse(out.subarray(8, 8 + n).toString());
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__' || t.dtype !== 'BF16') continue;
    const [a, b] = t.data_offsets;
    for (let i = 8 + n + a; i < 8 + n + b; i += 2) {
      f[0] = Math.sqrt(-2 * Math.log(Math.random() || 1e-12)) * Math.cos(2 * Math.PI * Math.random()) * 0.02;
      const bits = (u[0] + 0x7fff + ((u[0] >>> 16) & 1)) >>> 16;
      out.writeUInt16LE(bits & 0xffff, i);
    }
  }
  return out;
}

test('fingerprintRemote reads at most 1% and 2 MiB, and matchFamily picks the base', async () => {
  const stats = count();
  const size = fs.statSync(FT_A).size;
  const fp = await zipllm.fingerprintRemote(`${site.url}/ft-a/model.bf16.safetensors`);
  assert.ok(stats.bytes <= size / 100, `served ${stats.bytes} of ${size}`);
  assert.ok(stats.bytes <= 2 * 1024 * 1024);
  assert.equal(stats.bytes, fp.bytesRead);
  assert.ok(stats.requests < 150, `${stats.requests} requests`);
  console.log(`fingerprintRemote: ${stats.bytes} bytes in ${stats.requests} requests`);
  assert.equal(fp.tensors.length, 104);
  assert.ok(fp.samples[0].bytes instanceof Uint8Array);

  const bf16 = await fs.openAsBlob(BASE_BF16);
  const random = randomInit(fs.readFileSync(BASE_BF16));
  const verdicts = await zipllm.matchFamily(fp, [
    { name: 'minilm-fp32', source: await fs.openAsBlob(BASE_FP32) },
    { name: 'random-init', source: random },
    { name: 'minilm-bf16', source: bf16 },
  ]);
  assert.deepEqual(verdicts.map((v) => [v.candidate, v.verdict]), [
    ['minilm-bf16', 'related'],
    ['random-init', 'unrelated'],
    ['minilm-fp32', 'incompatible'],
  ]);
  assert.ok(verdicts[0].normalizedDistance < 0.1);
  assert.ok(verdicts[1].normalizedDistance > 0.3);
  assert.match(verdicts[2].reason, /dtype mismatch/);
  // A fingerprint survives structured cloning (to a worker, IndexedDB).
  const again = await zipllm.matchFamily(structuredClone(fp), [bf16]);
  assert.equal(again[0].verdict, 'related');
});

test('fingerprintRemote with a smaller budget reads less, in fewer requests, and still matches', async () => {
  const stats = count();
  const fp = await zipllm.fingerprintRemote(new URL(`${site.url}/ft-a/model.bf16.safetensors`), { maxBytes: 64 * 1024, concurrency: 4 });
  assert.ok(stats.bytes <= 64 * 1024, `served ${stats.bytes}`);
  assert.equal(stats.bytes, fp.bytesRead);
  assert.ok(stats.requests <= 16, `${stats.requests} requests`);
  const [best] = await zipllm.matchFamily(fp, [{ name: 'minilm-bf16', source: await fs.openAsBlob(BASE_BF16) }, { name: 'random-init', source: randomInit(fs.readFileSync(BASE_BF16)) }]);
  assert.equal(best.candidate, 'minilm-bf16');
  assert.equal(best.verdict, 'related');
  await assert.rejects(zipllm.fingerprintRemote(`${site.url}/ft-a/model.bf16.safetensors`, { maxBytes: -1 }), (e) => e.code === 'INVALID_INPUT');
});

test('fingerprintRemote refuses a server without Range support', async () => {
  const plain = http.createServer((req, res) => res.writeHead(200, { 'content-length': 10 }).end('0123456789'));
  await new Promise((r) => plain.listen(0, '127.0.0.1', r));
  await assert.rejects(zipllm.fingerprintRemote(`http://127.0.0.1:${plain.address().port}/x`), (e) => e.code === 'IO');
  plain.close();
});

test('local fingerprint matches the remote one', async () => {
  const local = await zipllm.fingerprint(await fs.openAsBlob(FT_A));
  const remote = await zipllm.fingerprintRemote(`${site.url}/ft-a/model.bf16.safetensors`);
  assert.equal(local.arch, remote.arch);
  const v = await zipllm.matchFamily(local, [await fs.openAsBlob(BASE_BF16)]);
  assert.equal(v[0].verdict, 'related');
});

test('matchFamily takes a fingerprint stored with the snake_case names of older versions', async () => {
  const fp = await zipllm.fingerprint(await fs.openAsBlob(FT_A));
  assert.deepEqual(Object.keys(fp).sort(), ['arch', 'bytesRead', 'fileLen', 'headerLen', 'samples', 'tensors', 'version']);
  const snake = (v) =>
    Array.isArray(v) ? v.map(snake)
    : v && typeof v === 'object' && !ArrayBuffer.isView(v) ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), snake(x)]))
    : v;
  const old = structuredClone(snake(fp));
  assert.equal(old.file_len, fp.fileLen);
  const bf16 = await fs.openAsBlob(BASE_BF16);
  const [now] = await zipllm.matchFamily(fp, [bf16]);
  const [then] = await zipllm.matchFamily(old, [bf16]);
  assert.equal(then.verdict, 'related');
  assert.deepEqual(then, now);
  assert.deepEqual(Object.keys(now).sort(), ['bitDistance', 'candidate', 'confidence', 'elements', 'errorBound', 'normalizedDistance', 'overlap', 'perDtype', 'reason', 'threshold', 'verdict']);
  assert.deepEqual(Object.keys(now.perDtype), ['BF16'], 'dtype names stay as they are');
  assert.deepEqual(Object.keys(now.perDtype.BF16).sort(), ['bitDistance', 'elements']);
});
