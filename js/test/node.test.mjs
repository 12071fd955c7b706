// The npm package as a Node user imports it: `import * as zipllm from "zipllm"` resolves to
// pkg/node through the package's conditional exports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import * as zipllm from 'zipllm';
import { safetensorsHeader } from './fixtures.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const models = process.env.ZIPLLM_MODELS || path.join(root, '.cache/models');
const BASE = path.join(models, 'base/model.bf16.safetensors');
const BASE_FP32 = path.join(models, 'base/model.safetensors');
const DELTA = path.join(root, 'tests/fixtures/ft-a.bf16.zld');
const FT_A_SHA256 = 'f2f2f85cabf465c4a0adc9481a6b0b732bd5128a58f745ff5b04a6061192a5b3';

async function drain(stream) {
  const sha = crypto.createHash('sha256');
  const parts = [];
  let size = 0;
  for await (const chunk of stream) {
    assert.ok(chunk instanceof Uint8Array);
    sha.update(chunk);
    parts.push(chunk);
    size += chunk.length;
  }
  return { size, sha256: sha.digest('hex'), bytes: Buffer.concat(parts) };
}

async function expectCode(promise, code) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof Error, `not an Error: ${e}`);
    assert.equal(e.code, code, e.message);
    return true;
  });
}

test('rebuilds ft-a from a file-backed Blob base and a streamed delta', async () => {
  const base = await fs.openAsBlob(BASE);
  const delta = (await fs.openAsBlob(DELTA)).stream();
  const seen = [];
  const out = await drain(zipllm.rebuild({ base, delta, onProgress: (p) => seen.push(p) }));
  assert.equal(out.sha256, FT_A_SHA256);
  const last = seen.at(-1);
  assert.equal(last.phase, 'done');
  assert.equal(last.sha256, FT_A_SHA256);
  assert.equal(last.outputBytes, out.size);
  assert.equal(last.totalBytes, out.size);
  assert.equal(last.deltaBytes, fs.statSync(DELTA).size);
  // Progress is monotone and arrives chunk by chunk.
  assert.ok(seen.length > 5);
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i].outputBytes >= seen[i - 1].outputBytes);
});

test('accepts bytes, an async reader and a fetch Response', async () => {
  const baseBytes = new Uint8Array(fs.readFileSync(BASE));
  const deltaBytes = new Uint8Array(fs.readFileSync(DELTA));
  const reader = async (offset, length) => baseBytes.subarray(offset, offset + length);
  const response = new Response(new Blob([deltaBytes]).stream());
  for (const [base, delta] of [[baseBytes, deltaBytes], [reader, response], [baseBytes.buffer, deltaBytes]]) {
    const out = await drain(zipllm.rebuild({ base, delta }));
    assert.equal(out.sha256, FT_A_SHA256);
  }
});

test('into: the output lands in the caller\'s memory, one buffer or one per chunk', async () => {
  const base = fs.readFileSync(BASE);
  const delta = fs.readFileSync(DELTA);
  const whole = new Uint8Array(45442040);
  const views = [];
  for await (const c of zipllm.rebuild({ base, delta, into: whole })) views.push(c);
  assert.ok(views.every((v) => v.buffer === whole.buffer), 'the chunks are views of `into`');
  assert.equal(crypto.createHash('sha256').update(whole).digest('hex'), FT_A_SHA256);

  // Two buffers taking turns, as a writer to disk would use them.
  const ring = [new Uint8Array(8 << 20), new Uint8Array(8 << 20)];
  let turn = 0;
  const sha = crypto.createHash('sha256');
  const asked = [];
  for await (const c of zipllm.rebuild({ base, delta, into: (offset, length) => (asked.push(offset), ring[turn++ % 2].subarray(0, length)) })) sha.update(c);
  assert.equal(sha.digest('hex'), FT_A_SHA256);
  assert.equal(asked[0], 0);

  await expectCode(drain(zipllm.rebuild({ base, delta, into: new Uint8Array(1000) })), 'INVALID_INPUT');
  await expectCode(drain(zipllm.rebuild({ base, delta, into: () => new Uint8Array(3) })), 'INVALID_INPUT');
  assert.throws(() => zipllm.rebuild({ base, delta, into: 'nope' }), (e) => e.code === 'INVALID_INPUT');
});

test('part: two rebuilds of half the chunks each make the file together', async () => {
  const base = fs.readFileSync(BASE);
  const delta = fs.readFileSync(DELTA);
  const halves = [0, 1].map(async (k) => {
    const into = new Uint8Array(45442040);
    const ranges = [];
    for await (const c of zipllm.rebuild({ base, delta: (await fs.openAsBlob(DELTA)).stream(), into, part: [k, 2], fullHash: false })) {
      assert.equal(c.buffer, into.buffer);
      ranges.push([c.byteOffset, c.byteOffset + c.length]);
    }
    return { into, ranges };
  });
  const [a, b] = await Promise.all(halves);
  assert.ok(a.ranges.length > 1 && b.ranges.length > 1);
  assert.equal(a.ranges[0][0], 0, 'part 0 has the header');
  for (const [s, e] of b.ranges) a.into.set(b.into.subarray(s, e), s);
  const covered = [...a.ranges, ...b.ranges].reduce((n, [s, e]) => n + e - s, 0);
  assert.equal(covered, 45442040);
  assert.equal(crypto.createHash('sha256').update(a.into).digest('hex'), FT_A_SHA256);
  assert.throws(() => zipllm.rebuild({ base, delta, part: [0, 2] }), (e) => e.code === 'INVALID_INPUT', 'a part cannot check the whole file');
  assert.throws(() => zipllm.rebuild({ base, delta, part: [2, 2], fullHash: false }), (e) => e.code === 'INVALID_INPUT');
  assert.throws(() => zipllm.rebuild({ base, delta, part: 'half', fullHash: false }), (e) => e.code === 'INVALID_INPUT');
});

test('output flows while the delta is still arriving', async () => {
  const baseBytes = new Uint8Array(fs.readFileSync(BASE));
  const deltaBytes = new Uint8Array(fs.readFileSync(DELTA));
  let sent = 0;
  let firstOutputAt = -1;
  const delta = new ReadableStream({
    async pull(controller) {
      if (sent >= deltaBytes.length) return controller.close();
      const n = Math.min(256 * 1024, deltaBytes.length - sent);
      controller.enqueue(deltaBytes.slice(sent, sent + n));
      sent += n;
      await new Promise((r) => setTimeout(r, 1));
    },
  });
  for await (const chunk of zipllm.rebuild({ base: baseBytes, delta })) {
    if (firstOutputAt < 0) firstOutputAt = sent;
    assert.ok(chunk.length > 0);
  }
  assert.ok(firstOutputAt > 0 && firstOutputAt < deltaBytes.length / 2, `first output after ${firstOutputAt} delta bytes`);
});

test('a wrong base, a corrupt or a truncated delta error the stream with a code', async () => {
  const baseBytes = new Uint8Array(fs.readFileSync(BASE));
  const deltaBytes = new Uint8Array(fs.readFileSync(DELTA));
  await expectCode(drain(zipllm.rebuild({ base: await fs.openAsBlob(BASE_FP32), delta: deltaBytes })), 'WRONG_BASE');
  const tampered = baseBytes.slice();
  tampered[tampered.length - 5000] ^= 0x40;
  await expectCode(drain(zipllm.rebuild({ base: tampered, delta: deltaBytes })), 'WRONG_BASE');
  const corrupt = deltaBytes.slice();
  corrupt[corrupt.length - 3000] ^= 0x10;
  let good = 0;
  await expectCode(
    (async () => {
      for await (const c of zipllm.rebuild({ base: baseBytes, delta: corrupt })) good += c.length;
    })(),
    'CORRUPT_DELTA',
  );
  assert.ok(good < baseBytes.length, 'the corrupt chunk was not handed out');
  await expectCode(drain(zipllm.rebuild({ base: baseBytes, delta: deltaBytes.slice(0, -100) })), 'TRUNCATED_DELTA');
  await expectCode(drain(zipllm.rebuild({ base: baseBytes, delta: new Uint8Array([1, 2, 3]) })), 'CORRUPT_DELTA');
  assert.throws(() => zipllm.rebuild({ base: 42, delta: deltaBytes }), (e) => e.code === 'INVALID_INPUT');
});

test('rebuildRange returns exactly the bytes of the full rebuild', async () => {
  const base = await fs.openAsBlob(BASE);
  const delta = await fs.openAsBlob(DELTA);
  const full = (await drain(zipllm.rebuild({ base, delta: delta.stream() }))).bytes;
  const n = full.length;
  for (const [start, end] of [[0, 100], [11000, 13000], [4194000, 8388800], [n - 10, n], [20_000_000, 20_000_000]]) {
    const got = await zipllm.rebuildRange({ base, delta, start, end });
    assert.deepEqual(Buffer.from(got), full.subarray(start, end), `${start}..${end}`);
  }
  await expectCode(zipllm.rebuildRange({ base, delta, start: 0, end: n + 1 }), 'INVALID_INPUT');
});

test('rebuildRangeStream streams a range (the whole file by default) in verified parts', async () => {
  const base = await fs.openAsBlob(BASE);
  const delta = await fs.openAsBlob(DELTA);
  const whole = await drain(await zipllm.rebuildRangeStream({ base, delta }));
  assert.equal(whole.sha256, FT_A_SHA256);
  const n = whole.size;
  for (const [start, end] of [[0, 11512], [100, 9_000_100], [n - 5000, n]]) {
    const part = await drain(await zipllm.rebuildRangeStream({ base, delta, start, end }));
    assert.ok(part.bytes.equals(whole.bytes.subarray(start, end)), `${start}..${end}`);
  }
  // The base is checked when the stream opens; a chunk that does not decode errors the stream.
  await expectCode(zipllm.rebuildRangeStream({ base: await fs.openAsBlob(BASE_FP32), delta }), 'WRONG_BASE');
  const bad = new Uint8Array(await delta.arrayBuffer());
  bad[bad.length - 300_000] ^= 0xff;
  await expectCode(drain(await zipllm.rebuildRangeStream({ base, delta: bad })), 'CORRUPT_DELTA');
});

test('describe reads what a delta rebuilds from its manifest alone', async () => {
  const reads = [];
  const bytes = fs.readFileSync(DELTA);
  const info = await zipllm.describe(async (offset, length) => {
    reads.push(length);
    return bytes.subarray(offset, offset + length);
  });
  assert.equal(info.targetSha256, FT_A_SHA256);
  assert.equal(info.targetSize, 45442040);
  assert.equal(info.deltaSize, bytes.length);
  assert.equal(info.baseSize, fs.statSync(BASE).size);
  assert.ok(info.chunks > 1);
  assert.equal(reads.length, 2, 'the preamble, then the manifest');
  assert.ok(reads[1] < bytes.length / 10);
  await expectCode(zipllm.describe(bytes.subarray(0, 100)), 'TRUNCATED_DELTA');
});

test('verify, inspect, hashFile and hashTensors', async () => {
  const base = await fs.openAsBlob(BASE);
  const delta = await fs.openAsBlob(DELTA);
  const summary = await zipllm.verify({ base, delta: delta.stream() });
  assert.equal(summary.sha256, FT_A_SHA256);
  const report = await zipllm.inspect(delta);
  assert.equal(report.targetSha256, FT_A_SHA256);
  assert.equal(report.tensors, 104);
  assert.ok(report.byMethod['diff+sparse-planes'].count > 0);
  const file = await zipllm.hashFile(base.stream());
  assert.equal(file.sha256, crypto.createHash('sha256').update(fs.readFileSync(BASE)).digest('hex'));
  const tensors = await zipllm.hashTensors(base);
  assert.equal(tensors.sha256, file.sha256);
  assert.equal(tensors.tensors.length, 104);
  const headerLen = 8 + Number(fs.readFileSync(BASE).readBigUInt64LE(0));
  assert.equal(tensors.tensors.reduce((a, t) => a + t.bytes, 0) + headerLen, tensors.size);
  await expectCode(zipllm.hashTensors(new Uint8Array([1, 2, 3])), 'BAD_SAFETENSORS');
});

test('every word size and layout round-trips through the wasm kernels (SIMD and tails)', async () => {
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  for (const [dtype, Array_, scale] of [['BF16', Uint16Array, 1], ['F16', Uint16Array, 1], ['F32', Float32Array, 1], ['F64', Float64Array, 1]]) {
    // An odd element count leaves a tail the SIMD groups of 8 do not cover.
    const n = 12_347;
    const w = new Array_(n);
    const t = new Array_(n);
    for (let i = 0; i < n; i++) {
      if (Array_ === Uint16Array) {
        w[i] = (rand() < 0.5 ? 0x8000 : 0) | (0x3c00 + Math.floor(rand() * 0x7f));
        const r = rand();
        t[i] = r < 0.35 ? w[i] : r < 0.6 ? w[i] + 1 : r < 0.8 ? w[i] - 1 : w[i] ^ 0x8000; // same, ±1 ulp, sign flip
      } else {
        w[i] = (rand() - 0.5) * 0.04 * scale;
        const r = rand();
        t[i] = r < 0.35 ? w[i] : r < 0.9 ? w[i] * (1 + (rand() - 0.5) * 1e-3) : -w[i];
      }
    }
    const bytes = n * Array_.BYTES_PER_ELEMENT;
    const meta = { w: { dtype, shape: [n], data_offsets: [0, bytes] } };
    const base = Buffer.concat([safetensorsHeader(meta), Buffer.from(w.buffer)]);
    const target = Buffer.concat([safetensorsHeader(meta), Buffer.from(t.buffer)]);
    for (const strategy of ['auto', 'bitx', 'bitx-fields', 'best']) {
      const delta = zipllm.encode(base, target, { strategy });
      const out = await drain(zipllm.rebuild({ base, delta }));
      assert.ok(out.bytes.equals(target), `${dtype} ${strategy}`);
    }
  }
});

test('encode in wasm round-trips and is read by the same decoder', async () => {
  const meta = { w: { dtype: 'BF16', shape: [4096], data_offsets: [0, 8192] } };
  const weights = crypto.randomBytes(8192);
  const tuned = Buffer.from(weights);
  for (let i = 0; i < tuned.length; i += 6) tuned[i] ^= 1;
  const base = Buffer.concat([safetensorsHeader(meta), weights]);
  const target = Buffer.concat([safetensorsHeader(meta), tuned]);
  const levels = [...zipllm.encodeLevels()];
  assert.ok(levels[0] === 1 && (levels.length === 1 || levels.length === 22), `${levels}`);
  const delta = zipllm.encode(base, target, { strategy: 'auto' });
  assert.ok(delta.length < target.length);
  const out = await drain(zipllm.rebuild({ base, delta }));
  assert.deepEqual(out.bytes, target);
  assert.throws(() => zipllm.encode(base, new Uint8Array(4), {}), (e) => e.code === 'BAD_SAFETENSORS');
  assert.throws(() => zipllm.encode(base, target, { level: 99 }), (e) => e.code === 'INVALID_INPUT');
});

test('sizes, parts, ranges, budgets and levels must be whole numbers: anything else is INVALID_INPUT', async () => {
  const base = fs.readFileSync(BASE);
  const delta = fs.readFileSync(DELTA);
  const reader = async (offset, length) => base.subarray(offset, offset + length);
  const invalid = (e) => e.code === 'INVALID_INPUT';
  const [b, t] = [fs.readFileSync(path.join(root, 'tests/fixtures/sample-v1/base.safetensors')), fs.readFileSync(path.join(root, 'tests/fixtures/sample-v1/target.safetensors'))];
  for (const bad of [-1, NaN, 1.5, Infinity, -Infinity, '12', 2 ** 60]) {
    assert.throws(() => zipllm.rebuild({ base: reader, baseSize: bad, delta }), invalid, `baseSize ${bad}`);
    assert.throws(() => zipllm.rebuild({ base, delta, part: [bad, 2], fullHash: false }), invalid, `part [${bad}, 2]`);
    assert.throws(() => zipllm.rebuild({ base, delta, part: [0, bad], fullHash: false }), invalid, `part [0, ${bad}]`);
    await expectCode(zipllm.rebuildRange({ base, delta, start: bad, end: 100 }), 'INVALID_INPUT');
    await expectCode(zipllm.rebuildRange({ base, delta, start: 0, end: bad }), 'INVALID_INPUT');
    await expectCode(zipllm.rebuildRangeStream({ base: reader, baseSize: bad, delta }), 'INVALID_INPUT');
    await expectCode(zipllm.fingerprintRemote('http://127.0.0.1:9/x', { maxBytes: bad }), 'INVALID_INPUT');
    await expectCode(zipllm.fingerprintRemote('http://127.0.0.1:9/x', { concurrency: bad }), 'INVALID_INPUT');
    assert.throws(() => zipllm.encode(b, t, { level: bad }), invalid, `level ${bad}`);
  }
  await expectCode(zipllm.fingerprintRemote('http://127.0.0.1:9/x', { concurrency: 0 }), 'INVALID_INPUT');
  // The whole numbers still work, at the edges too.
  assert.equal((await zipllm.rebuildRange({ base: reader, baseSize: base.length, delta, start: 0, end: 0 })).length, 0);
});

test('a delta shorter than its manifest says is TRUNCATED_DELTA, not WRONG_BASE', async () => {
  const base = await fs.openAsBlob(BASE);
  const bytes = fs.readFileSync(DELTA);
  const short = bytes.subarray(0, bytes.length - 1000);
  const end = 45442040;
  for (const delta of [new Uint8Array(short), new Blob([short])]) {
    await expectCode(zipllm.rebuildRange({ base, delta, start: 0, end }), 'TRUNCATED_DELTA');
    await expectCode(drain(await zipllm.rebuildRangeStream({ base, delta })), 'TRUNCATED_DELTA');
    await expectCode(drain(zipllm.rebuild({ base, delta })), 'TRUNCATED_DELTA');
  }
  // A model file shorter than its header says is a bad file.
  const model = fs.readFileSync(BASE).subarray(0, 100_000);
  await expectCode(zipllm.fingerprint(new Uint8Array(model)), 'BAD_SAFETENSORS');
});

test('expectSha256 pins the output; verify reports what it computed', async () => {
  const base = await fs.openAsBlob(BASE);
  const delta = await fs.openAsBlob(DELTA);
  const summary = await zipllm.verify({ base, delta, expectSha256: FT_A_SHA256.toUpperCase() });
  assert.deepEqual(Object.keys(summary).sort(), ['blake3', 'fullHashChecked', 'sha256', 'size']);
  assert.equal(summary.sha256, FT_A_SHA256);
  assert.equal(summary.fullHashChecked, true);
  const unchecked = await zipllm.verify({ base, delta, fullHash: false });
  assert.equal(unchecked.fullHashChecked, false);

  let chunks = 0;
  await expectCode(
    (async () => {
      for await (const _ of zipllm.rebuild({ base, delta, expectSha256: 'ab'.repeat(32) })) chunks++;
    })(),
    'UNEXPECTED_TARGET',
  );
  assert.equal(chunks, 0, 'nothing was handed out before the target was found to be another');
  await expectCode(zipllm.verify({ base, delta, expectSha256: '00'.repeat(32) }), 'UNEXPECTED_TARGET');
  for (const bad of ['xyz', FT_A_SHA256.slice(1), `${FT_A_SHA256.slice(0, 63)}g`, 42]) {
    assert.throws(() => zipllm.rebuild({ base, delta, expectSha256: bad }), (e) => e.code === 'INVALID_INPUT', String(bad));
  }
  assert.throws(() => zipllm.rebuild({ base, delta, expectSha256: FT_A_SHA256, fullHash: false }), (e) => e.code === 'INVALID_INPUT');
});

/** Field names (not the keys of the maps listed) with an underscore, anywhere in `v`. */
function snakeKeys(v, maps = ['byKind', 'byDtype', 'byMethod', 'perDtype'], at = '') {
  if (Array.isArray(v)) return v.flatMap((x, i) => snakeKeys(x, maps, `${at}[${i}]`));
  if (v === null || typeof v !== 'object' || ArrayBuffer.isView(v)) return [];
  return Object.entries(v).flatMap(([k, x]) => [
    ...(k.includes('_') ? [`${at}.${k}`] : []),
    ...(maps.includes(k) ? Object.entries(x).flatMap(([kk, xx]) => snakeKeys(xx, maps, `${at}.${k}.${kk}`)) : snakeKeys(x, maps, `${at}.${k}`)),
  ]);
}

test('every object the package returns uses camelCase field names', async () => {
  const base = await fs.openAsBlob(BASE);
  const delta = await fs.openAsBlob(DELTA);
  const report = await zipllm.inspect(delta);
  assert.equal(report.targetBytes, 45442040);
  assert.ok(report.byDtype.BF16.count > 0, 'map keys are kept as they are');
  const progress = [];
  const objects = {
    inspect: report,
    describe: await zipllm.describe(delta),
    verify: await zipllm.verify({ base, delta, onProgress: (p) => progress.push(p) }),
    progress,
    hashTensors: await zipllm.hashTensors(new Uint8Array(fs.readFileSync(path.join(root, 'tests/fixtures/sample-v1/base.safetensors')))),
    fingerprint: await zipllm.fingerprint(base),
  };
  assert.deepEqual(snakeKeys(objects), []);
});

test('require("zipllm") works from CommonJS, and each export condition has its own types', () => {
  const r = spawnSync(process.execPath, ['-e', 'const z = require("zipllm"); console.log(typeof z.rebuild, z.formatVersion(), typeof z.default)'], { cwd: root, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'function 1 undefined');
  const pkg = path.join(root, 'node_modules/zipllm');
  const manifest = JSON.parse(fs.readFileSync(path.join(pkg, 'package.json'), 'utf8'));
  for (const [condition, target] of Object.entries(manifest.exports['.'])) {
    assert.ok(fs.existsSync(path.join(pkg, target.types)), `${condition}: ${target.types}`);
    assert.ok(fs.existsSync(path.join(pkg, target.default)), `${condition}: ${target.default}`);
    const types = fs.readFileSync(path.join(pkg, target.types), 'utf8');
    assert.equal(/export default function init/.test(types), condition === 'workerd', `${condition}: init is for the web build alone`);
    assert.match(types, /export function rebuild\(options: RebuildOptions\): ReadableStream<Uint8Array>;/);
  }
});
