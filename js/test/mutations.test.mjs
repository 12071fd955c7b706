// Thousands of mutated real deltas through the package's streaming rebuild: every one must end
// as an Error with a documented code (never INTERNAL: that is a bug, and the case is printed to
// replay it) or as output whose sha256 is the original target's, within a deadline, with the
// wasm memory bounded.
//
// Two deltas: the committed sample (tests/fixtures/sample-v1: 3 chunks, every tensor kind, an
// empty tensor, stored and zstd streams) and one made here by encode() from real tensors of
// ft-a and its base (zstd streams of real weights, a standalone and a duplicate tensor).
// Mutations: bit flips, byte sets, truncations, insertions and deletions anywhere; bit flips
// inside the manifest and edits of its numeric fields, with the manifest's blake3 recomputed
// so that they reach the decoder (docs/FORMAT.md: preamble | manifest | blake3(manifest) |
// payload). The delta arrives whole or in pieces of random sizes.
//
// ZIPLLM_MUTATION_SEED picks another sequence of mutations (default 1).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import * as zipllm from 'zipllm';
import { safetensorsHeader } from './fixtures.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const models = process.env.ZIPLLM_MODELS || path.join(root, '.cache/models');
const SEED = Number(process.env.ZIPLLM_MUTATION_SEED || 1);
const CASES_PER_DELTA = 4000;
const DEADLINE_MS = 10_000;
const MEMORY_LIMIT = 32 * 2 ** 20;
const CODES = new Set(['BAD_SAFETENSORS', 'CORRUPT_DELTA', 'TRUNCATED_DELTA', 'UNSUPPORTED_VERSION', 'WRONG_BASE', 'INVALID_INPUT', 'IO', 'UNEXPECTED_TARGET']);

/** A small deterministic PRNG (mulberry32). */
function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  next.int = (n) => Math.floor(next() * n);
  next.pick = (xs) => xs[next.int(xs.length)];
  return next;
}

const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');

function tensorsOf(file) {
  const n = Number(Buffer.from(file.buffer, file.byteOffset, 8).readBigUInt64LE(0));
  const header = JSON.parse(Buffer.from(file.subarray(8, 8 + n)).toString());
  delete header.__metadata__;
  const bytes = (name) => {
    const [a, b] = header[name].data_offsets;
    return file.subarray(8 + n + a, 8 + n + b);
  };
  return { header, bytes };
}

/** A safetensors file of the named tensors, each `[name, { dtype, shape }, bytes]`. */
function safetensors(tensors) {
  const meta = {};
  let at = 0;
  for (const [name, info, bytes] of tensors) {
    meta[name] = { dtype: info.dtype, shape: info.shape, data_offsets: [at, at + bytes.length] };
    at += bytes.length;
  }
  return Buffer.concat([safetensorsHeader(meta), ...tensors.map(([, , b]) => b)]);
}

/** ft-a's delta made here from real tensors of ft-a and its base. */
async function realCut() {
  const baseFile = new Uint8Array(fs.readFileSync(path.join(models, 'base/model.bf16.safetensors')));
  const ftFile = new Uint8Array(await new Response(zipllm.rebuild({ base: baseFile, delta: fs.readFileSync(path.join(root, 'tests/fixtures/ft-a.bf16.zld')) })).arrayBuffer());
  const b = tensorsOf(baseFile);
  const t = tensorsOf(ftFile);
  const shared = [
    'embeddings.position_ids',
    'embeddings.LayerNorm.weight',
    'embeddings.LayerNorm.bias',
    'embeddings.token_type_embeddings.weight',
    'encoder.layer.0.attention.self.query.weight',
    'encoder.layer.0.attention.self.query.bias',
    'encoder.layer.0.attention.self.key.weight',
    'encoder.layer.0.attention.self.value.weight',
    'encoder.layer.0.attention.output.LayerNorm.weight',
  ];
  const base = safetensors(shared.map((n) => [n, b.header[n], b.bytes(n)]));
  const target = safetensors([
    ...shared.map((n) => [n, t.header[n], t.bytes(n)]),
    ['pooler.dense.weight', t.header['pooler.dense.weight'], t.bytes('pooler.dense.weight')], // standalone
    ['copy.key.weight', t.header['encoder.layer.0.attention.self.key.weight'], t.bytes('encoder.layer.0.attention.self.key.weight')], // duplicate
  ]);
  return { name: 'real cut of ft-a', base, target, delta: zipllm.encode(base, target) };
}

function sample() {
  const dir = path.join(root, 'tests/fixtures/sample-v1');
  const read = (f) => new Uint8Array(fs.readFileSync(path.join(dir, f)));
  return { name: 'sample-v1', base: read('base.safetensors'), target: read('target.safetensors'), delta: read('delta.zld') };
}

/** The numeric fields of a delta's preamble and manifest, per docs/FORMAT.md. */
function fields(delta) {
  const v = new DataView(delta.buffer, delta.byteOffset, delta.byteLength);
  const out = [
    { name: 'version', at: 8, width: 4, preamble: true },
    { name: 'flags', at: 12, width: 4, preamble: true },
    { name: 'manifest_len', at: 16, width: 8, preamble: true },
  ];
  let at = 24;
  const f = (name, width) => {
    out.push({ name, at, width });
    const value = width === 1 ? v.getUint8(at) : width === 4 ? v.getUint32(at, true) : Number(v.getBigUint64(at, true));
    at += width;
    return value;
  };
  f('target_size', 8);
  at += 64;
  f('base_size', 8);
  f('base_header_len', 8);
  at += 32;
  const headerLen = f('header_len', 8);
  at += headerLen;
  const tensors = f('tensor_count', 4);
  for (let i = 0; i < tensors; i++) {
    const nameLen = f(`tensor[${i}].name_len`, 4);
    at += nameLen;
    for (const [k, w] of [['dtype', 1], ['kind', 1], ['out_start', 8], ['out_end', 8], ['reference', 8]]) f(`tensor[${i}].${k}`, w);
  }
  const blobs = f('blob_count', 4);
  for (let i = 0; i < blobs; i++) for (const k of ['offset', 'len']) f(`blob[${i}].${k}`, 8);
  const pieces = f('piece_count', 4);
  for (let i = 0; i < pieces; i++) for (const [k, w] of [['kind', 1], ['out_start', 8], ['len', 8], ['base_start', 8], ['blob', 4]]) f(`piece[${i}].${k}`, w);
  const chunks = f('chunk_count', 4);
  for (let i = 0; i < chunks; i++) {
    for (const [k, w] of [['out_start', 8], ['out_len', 8], ['first_piece', 4], ['piece_count', 4]]) f(`chunk[${i}].${k}`, w);
    at += 64;
  }
  f('payload_len', 8);
  assert.equal(at, 24 + Number(v.getBigUint64(16, true)), 'the manifest parses to its recorded length');
  return out;
}

/** Recomputes the manifest checksum of `delta` in place, with the package's own blake3. */
async function reseal(delta) {
  const len = Number(new DataView(delta.buffer, delta.byteOffset).getBigUint64(16, true));
  if (24 + len + 32 > delta.length) return;
  const { blake3 } = await zipllm.hashFile(delta.slice(24, 24 + len));
  delta.set(Buffer.from(blake3, 'hex'), 24 + len);
}

function writeField(delta, { at, width }, value) {
  const v = new DataView(delta.buffer, delta.byteOffset);
  const x = BigInt.asUintN(width * 8, value);
  if (width === 1) v.setUint8(at, Number(x));
  else if (width === 4) v.setUint32(at, Number(x), true);
  else v.setBigUint64(at, x, true);
}

function readField(delta, { at, width }) {
  const v = new DataView(delta.buffer, delta.byteOffset);
  return width === 1 ? BigInt(v.getUint8(at)) : width === 4 ? BigInt(v.getUint32(at, true)) : v.getBigUint64(at, true);
}

/** A new value for a field: boundaries, neighbours, scalings and other fields' values. */
function fieldValue(r, delta, all, field) {
  const v = readField(delta, field);
  const max = (1n << BigInt(field.width * 8)) - 1n;
  return r.pick([
    () => 0n,
    () => 1n,
    () => v - 1n,
    () => v + 1n,
    () => v + 8n,
    () => v - 8n,
    () => v * 2n,
    () => v / 2n,
    () => max,
    () => max - 1n,
    () => 1n << 31n,
    () => 1n << 32n,
    () => (1n << 32n) - 1n,
    () => 1n << 53n,
    () => 1n << 63n,
    () => BigInt(r.int(2 ** 32)),
    () => readField(delta, r.pick(all)),
  ])();
}

const mutations = {
  async flip(r, d) {
    const at = r.int(d.length);
    d[at] ^= 1 << r.int(8);
    return `flip bit of byte ${at}`;
  },
  async set(r, d) {
    const at = r.int(d.length);
    d[at] = r.pick([0, 0xff, r.int(256)]);
    return `set byte ${at} to ${d[at]}`;
  },
  async truncate(r, d) {
    const len = r() < 0.3 ? r.int(Math.min(d.length, 400)) : r.int(d.length);
    return [`truncate to ${len}`, d.subarray(0, len)];
  },
  async insert(r, d) {
    const at = r.int(d.length + 1);
    const extra = Uint8Array.from({ length: 1 + r.int(16) }, () => r.int(256));
    return [`insert ${extra.length} bytes at ${at}`, Buffer.concat([d.subarray(0, at), extra, d.subarray(at)])];
  },
  async remove(r, d) {
    const at = r.int(d.length);
    const n = 1 + r.int(16);
    return [`remove ${n} bytes at ${at}`, Buffer.concat([d.subarray(0, at), d.subarray(at + n)])];
  },
  async flipManifest(r, d, all) {
    const len = Number(readField(d, all[2]));
    const notes = [];
    for (let i = 0, n = 1 + r.int(3); i < n; i++) {
      const at = 24 + r.int(len);
      d[at] ^= 1 << r.int(8);
      notes.push(at);
    }
    await reseal(d);
    return `flip manifest bits at ${notes.join(', ')}, resealed`;
  },
  async field(r, d, all) {
    const notes = [];
    for (let i = 0, n = r() < 0.8 ? 1 : 2; i < n; i++) {
      const f = r.pick(all);
      const value = fieldValue(r, d, all, f);
      writeField(d, f, value);
      notes.push(`${f.name} = ${BigInt.asUintN(f.width * 8, value)}`);
    }
    await reseal(d);
    return `${notes.join(', ')}, resealed`;
  },
};
const PLAN = [['flip', 0.16], ['set', 0.08], ['truncate', 0.08], ['insert', 0.06], ['remove', 0.05], ['flipManifest', 0.17], ['field', 0.4]];

/** The delta as a stream: whole, or in pieces of random sizes. */
function streamOf(r, delta) {
  const piece = r.pick([delta.length || 1, 1 + r.int(4096), 1 + r.int(65536)]);
  let at = 0;
  return new ReadableStream({
    pull(controller) {
      if (at >= delta.length) return controller.close();
      controller.enqueue(delta.slice(at, at + piece));
      at += piece;
    },
  });
}

async function rebuildOnce(base, delta, r) {
  const reader = zipllm.rebuild({ base, delta: streamOf(r, delta) }).getReader();
  const sha = crypto.createHash('sha256');
  let timer;
  const work = (async () => {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return { sha256: sha.digest('hex') };
      sha.update(value);
    }
  })().catch((error) => ({ error }));
  const out = await Promise.race([work, new Promise((resolve) => (timer = setTimeout(() => resolve({ hang: true }), DEADLINE_MS)))]);
  clearTimeout(timer);
  if (out.hang) reader.cancel().catch(() => {});
  return out;
}

test('mutated deltas end as a coded error or the right file, never INTERNAL, a hang or unbounded memory', { timeout: 10 * 60_000 }, async () => {
  const seeds = [sample(), await realCut()];
  // Start from a fresh instance (the test hook's panic makes one), so that the peak memory is
  // the mutations' own, not that of making the real delta.
  assert.throws(() => zipllm.__testPanic('now'), (e) => e.code === 'INTERNAL');
  const fresh = zipllm.wasmMemoryBytes();
  const started = performance.now();
  const tally = {};
  const bad = [];
  let peak = fresh;
  let cases = 0;
  for (const [k, seed] of seeds.entries()) {
    const want = sha256(seed.target);
    const all = fields(seed.delta);
    const clean = await rebuildOnce(seed.base, seed.delta, rng(0));
    assert.equal(clean.sha256, want, `${seed.name} rebuilds`);
    const r = rng(SEED * 1000 + k);
    for (let i = 0; i < CASES_PER_DELTA; i++) {
      let x = r();
      const [kind] = PLAN.find(([, p]) => (x -= p) < 0) ?? PLAN.at(-1);
      let delta = new Uint8Array(seed.delta);
      let note = await mutations[kind](r, delta, all);
      if (Array.isArray(note)) [note, delta] = [note[0], new Uint8Array(note[1])];
      const out = await rebuildOnce(seed.base, delta, r);
      cases++;
      peak = Math.max(peak, zipllm.wasmMemoryBytes());
      const outcome = out.hang ? 'HANG' : out.error ? (out.error.code ?? `uncoded ${out.error.name}`) : out.sha256 === want ? 'same file' : 'OTHER FILE';
      tally[outcome] = (tally[outcome] ?? 0) + 1;
      if (!(outcome === 'same file' || CODES.has(outcome))) {
        bad.push(`${seed.name} case ${i} (ZIPLLM_MUTATION_SEED=${SEED}) ${kind}: ${note} -> ${outcome}${out.error ? `: ${out.error.message}` : ''}`);
      }
    }
  }
  const seconds = (performance.now() - started) / 1000;
  console.log(`mutations: ${cases} cases in ${seconds.toFixed(1)} s; ${JSON.stringify(tally)}; peak wasm memory ${(peak / 2 ** 20).toFixed(1)} MiB (a fresh instance: ${(fresh / 2 ** 20).toFixed(1)} MiB)`);
  for (const b of bad) console.log(`  ${b}`);
  assert.deepEqual(bad, []);
  assert.ok(peak <= MEMORY_LIMIT, `wasm memory reached ${peak} bytes`);
  // The module still works after all that.
  const s = sample();
  assert.equal((await rebuildOnce(s.base, s.delta, rng(0))).sha256, sha256(s.target));
});
