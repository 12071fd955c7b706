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

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const models = process.env.ZIPLLM_MODELS || path.join(root, '.cache/models');
const BASE_BF16 = path.join(models, 'base/model.bf16.safetensors');
const BASE_FP32 = path.join(models, 'base/model.safetensors');
const DELTA = path.join(root, 'tests/fixtures/ft-a.bf16.zld');

let server;
let url;
let served = 0;
let requests = 0;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zipllm-family-'));
const FT_A = path.join(tmp, 'ft-a.bf16.safetensors');

/** A static file server with single-range support, counting body bytes sent. */
function serve(files) {
  return http.createServer((req, res) => {
    const file = files[req.url];
    if (!file) return res.writeHead(404).end();
    const size = fs.statSync(file).size;
    const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range || '');
    requests++;
    if (!m) {
      res.writeHead(200, { 'content-length': size });
      const s = fs.createReadStream(file);
      s.on('data', (c) => (served += c.length));
      return s.pipe(res);
    }
    const start = Number(m[1]);
    const end = Math.min(Number(m[2]), size - 1);
    res.writeHead(206, { 'content-range': `bytes ${start}-${end}/${size}`, 'content-length': end - start + 1 });
    const s = fs.createReadStream(file, { start, end });
    s.on('data', (c) => (served += c.length));
    s.pipe(res);
  });
}

before(async () => {
  // ft-a (bf16), rebuilt from the committed delta.
  const out = fs.createWriteStream(FT_A);
  const base = await fs.openAsBlob(BASE_BF16);
  for await (const c of zipllm.rebuild({ base, delta: (await fs.openAsBlob(DELTA)).stream() })) out.write(c);
  await new Promise((r) => out.end(r));
  server = serve({ '/ft-a/model.bf16.safetensors': FT_A, '/base/model.safetensors': BASE_FP32 });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${server.address().port}`;
});

after(() => {
  server?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

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
  served = 0;
  requests = 0;
  const size = fs.statSync(FT_A).size;
  const fp = await zipllm.fingerprintRemote(`${url}/ft-a/model.bf16.safetensors`);
  assert.ok(served <= size / 100, `served ${served} of ${size}`);
  assert.ok(served <= 2 * 1024 * 1024);
  assert.equal(served, fp.bytes_read);
  assert.ok(requests < 150, `${requests} requests`);
  console.log(`fingerprintRemote: ${served} bytes in ${requests} requests`);
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
  assert.ok(verdicts[0].normalized_distance < 0.1);
  assert.ok(verdicts[1].normalized_distance > 0.3);
  assert.match(verdicts[2].reason, /dtype mismatch/);
  // A fingerprint survives structured cloning (to a worker, IndexedDB).
  const again = await zipllm.matchFamily(structuredClone(fp), [bf16]);
  assert.equal(again[0].verdict, 'related');
});

test('fingerprintRemote with a smaller budget reads less, in fewer requests, and still matches', async () => {
  served = 0;
  requests = 0;
  const fp = await zipllm.fingerprintRemote(`${url}/ft-a/model.bf16.safetensors`, { maxBytes: 64 * 1024, concurrency: 4 });
  assert.ok(served <= 64 * 1024, `served ${served}`);
  assert.equal(served, fp.bytes_read);
  assert.ok(requests <= 16, `${requests} requests`);
  const [best] = await zipllm.matchFamily(fp, [{ name: 'minilm-bf16', source: await fs.openAsBlob(BASE_BF16) }, { name: 'random-init', source: randomInit(fs.readFileSync(BASE_BF16)) }]);
  assert.equal(best.candidate, 'minilm-bf16');
  assert.equal(best.verdict, 'related');
  await assert.rejects(zipllm.fingerprintRemote(`${url}/ft-a/model.bf16.safetensors`, { maxBytes: -1 }), (e) => e.code === 'INVALID_INPUT');
});

test('fingerprintRemote refuses a server without Range support', async () => {
  const plain = http.createServer((req, res) => res.writeHead(200, { 'content-length': 10 }).end('0123456789'));
  await new Promise((r) => plain.listen(0, '127.0.0.1', r));
  await assert.rejects(zipllm.fingerprintRemote(`http://127.0.0.1:${plain.address().port}/x`), (e) => e.code === 'IO');
  plain.close();
});

test('local fingerprint matches the remote one', async () => {
  const local = await zipllm.fingerprint(await fs.openAsBlob(FT_A));
  const remote = await zipllm.fingerprintRemote(`${url}/ft-a/model.bf16.safetensors`);
  assert.equal(local.arch, remote.arch);
  const v = await zipllm.matchFamily(local, [await fs.openAsBlob(BASE_BF16)]);
  assert.equal(v[0].verdict, 'related');
});
