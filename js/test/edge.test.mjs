// The edge worker (www/edge/worker.mjs) in Cloudflare's workerd through miniflare, with the
// hub in a local R2 bucket: full GET byte-exact, Range GETs, ETag, and errors — a wrong base and
// a corrupt delta give a 5xx with a JSON body or an aborted response, never a complete-looking
// 200. A panic in the module is a JSON 500 with code INTERNAL, and the next request is served by
// the same cached module. A model larger than an isolate's 128 MB is served from an HTTP origin
// binding with bounded memory.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Miniflare } from 'miniflare';
import { buildHub } from '../../www/hub.mjs';
import { startServer } from '../../www/server.mjs';
import { corruptLastChunk, safetensorsHeader, syntheticPair } from './fixtures.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FT = 'ft-a/model.bf16.safetensors';
const BASE = 'all-MiniLM-L6-v2/model.bf16.safetensors';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'zipllm-edge-'));
const hubDir = path.join(tmp, 'hub');
let catalog;
let mf;
let ft;

const workerOptions = (bindings, script = 'www/edge/worker.mjs') => ({
  modules: true,
  scriptPath: path.join(root, script),
  modulesRoot: root,
  modulesRules: [
    { type: 'ESModule', include: ['**/*.js', '**/*.mjs'] },
    { type: 'CompiledWasm', include: ['**/*.wasm'] },
  ],
  compatibilityDate: '2025-01-01',
  ...bindings,
});

before(async () => {
  catalog = await buildHub({ hubDir });
  ft = fs.readFileSync(path.join(hubDir, FT));
  // Two broken entries: ft-a's delta listed against the fp32 base, and a corrupted copy of it.
  const delta = fs.readFileSync(path.join(hubDir, catalog.files[FT].deltas[BASE].path));
  const bad = corruptLastChunk(delta);
  // A wrong base: a small model that is not ft-a's base.
  const tiny = Buffer.concat([safetensorsHeader({ w: { dtype: 'BF16', shape: [8], data_offsets: [0, 16] } }), Buffer.alloc(16, 1)]);
  catalog.files['other/base.safetensors'] = { kind: 'base', size: tiny.length, sha256: sha256(tiny) };
  catalog.files['wrong-base/model.bf16.safetensors'] = { ...catalog.files[FT], deltas: { 'other/base.safetensors': catalog.files[FT].deltas[BASE] } };
  catalog.files['corrupt/model.bf16.safetensors'] = { ...catalog.files[FT], deltas: { [BASE]: { path: 'corrupt/model.bf16.safetensors.zld', size: bad.length } } };

  // The worker behind a shell that can arm the package's test hook (a request header).
  mf = new Miniflare(workerOptions({ r2Buckets: ['MODELS'], bindings: { STATS: 'on' } }, 'js/test/edge/panic-worker.mjs'));
  const bucket = await mf.getR2Bucket('MODELS');
  const objects = {
    'catalog.json': Buffer.from(JSON.stringify(catalog)),
    [BASE]: fs.readFileSync(path.join(hubDir, BASE)),
    [catalog.files[FT].deltas[BASE].path]: fs.readFileSync(path.join(hubDir, catalog.files[FT].deltas[BASE].path)),
    'corrupt/model.bf16.safetensors.zld': bad,
    'other/base.safetensors': tiny,
  };
  // miniflare's R2 proxy has dropped a large upload under load; the upload is not under test.
  for (const [key, bytes] of Object.entries(objects)) {
    for (let attempt = 1; ; attempt++) {
      try {
        await bucket.put(key, plain(bytes));
        break;
      } catch (e) {
        if (attempt === 3) throw e;
        console.log(`R2 put of ${key} failed (${e.message}), again`);
      }
    }
  }
});

after(async () => {
  await mf?.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** An ArrayBuffer with the bytes of `b` (miniflare's R2 proxy takes no Node Buffers). */
const plain = (b) => b.buffer.slice(b.byteOffset, b.byteOffset + b.length);
/** PIDs of running workerd processes. */
const workerdPids = () =>
  fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p) && (() => {
    try {
      return fs.readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'workerd';
    } catch {
      return false;
    }
  })());
const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');

test('GET rebuilds the file byte for byte, with its sha256 as ETag and a Content-Length', async () => {
  const r = await mf.dispatchFetch(`http://edge/${FT}`);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('etag'), `"${catalog.files[FT].sha256}"`);
  assert.equal(r.headers.get('content-length'), String(ft.length));
  assert.equal(r.headers.get('accept-ranges'), 'bytes');
  const body = Buffer.from(await r.arrayBuffer());
  assert.equal(body.length, ft.length);
  assert.equal(sha256(body), catalog.files[FT].sha256);

  const again = await mf.dispatchFetch(`http://edge/${FT}`, { headers: { 'If-None-Match': r.headers.get('etag') } });
  assert.equal(again.status, 304);
  const head = await mf.dispatchFetch(`http://edge/${FT}`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get('content-length'), String(ft.length));
  assert.equal((await head.arrayBuffer()).byteLength, 0);
});

test('Range GETs answer 206 with the right bytes and Content-Range', async () => {
  for (const [spec, start, end] of [
    ['bytes=20000000-20000999', 20000000, 20001000], // inside one chunk
    ['bytes=100-9000099', 100, 9000100], // header, then across chunks
    ['bytes=-5000', ft.length - 5000, ft.length], // a suffix
  ]) {
    const r = await mf.dispatchFetch(`http://edge/${FT}`, { headers: { Range: spec } });
    assert.equal(r.status, 206, spec);
    assert.equal(r.headers.get('content-range'), `bytes ${start}-${end - 1}/${ft.length}`);
    assert.equal(r.headers.get('content-length'), String(end - start));
    assert.ok(Buffer.from(await r.arrayBuffer()).equals(ft.subarray(start, end)), spec);
  }
  const r = await mf.dispatchFetch(`http://edge/${FT}`, { headers: { Range: `bytes=${ft.length}-` } });
  assert.equal(r.status, 416);
  assert.equal(r.headers.get('content-range'), `bytes */${ft.length}`);
  await r.arrayBuffer();
  // A range from a stale copy (If-Range with another ETag) or an invalid Range header gets the
  // whole file, as RFC 9110 asks.
  for (const headers of [{ Range: 'bytes=0-99', 'If-Range': '"stale"' }, { Range: 'bytes=99-0' }]) {
    const whole = await mf.dispatchFetch(`http://edge/${FT}`, { headers });
    assert.equal(whole.status, 200, JSON.stringify(headers));
    assert.equal(sha256(Buffer.from(await whole.arrayBuffer())), catalog.files[FT].sha256);
  }
  const fresh = await mf.dispatchFetch(`http://edge/${FT}`, { headers: { Range: 'bytes=0-99', 'If-Range': `"${catalog.files[FT].sha256}"` } });
  assert.equal(fresh.status, 206);
  assert.ok(Buffer.from(await fresh.arrayBuffer()).equals(ft.subarray(0, 100)));
});

test('a base is served as stored, ranges too; unknown files and bad paths are JSON errors', async () => {
  const base = fs.readFileSync(path.join(hubDir, BASE));
  const r = await mf.dispatchFetch(`http://edge/${BASE}`, { headers: { Range: 'bytes=8-15' } });
  assert.equal(r.status, 206);
  assert.equal(r.headers.get('content-range'), `bytes 8-15/${base.length}`);
  assert.equal(r.headers.get('content-length'), '8');
  assert.ok(Buffer.from(await r.arrayBuffer()).equals(base.subarray(8, 16)));
  const etag = `"${catalog.files[BASE].sha256}"`;
  const cached = await mf.dispatchFetch(`http://edge/${BASE}`, { headers: { 'If-None-Match': etag } });
  assert.equal(cached.status, 304);
  const head = await mf.dispatchFetch(`http://edge/${BASE}`, { method: 'HEAD' });
  assert.equal(head.headers.get('content-length'), String(base.length));
  assert.equal(head.headers.get('etag'), etag);
  for (const [p, status, error] of [['nope/model.safetensors', 404, 'NOT_FOUND'], ['__proto__', 404, 'NOT_FOUND'], ['%E0%A4%A', 400, 'BAD_PATH']]) {
    const res = await mf.dispatchFetch(`http://edge/${p}`);
    assert.equal(res.status, status, p);
    assert.equal((await res.json()).error, error);
  }
});

test('a wrong base is a 500 with a JSON body, for a full GET and a Range GET', async () => {
  for (const headers of [{}, { Range: 'bytes=20000000-20000999' }]) {
    const r = await mf.dispatchFetch('http://edge/wrong-base/model.bf16.safetensors', { headers });
    assert.equal(r.status, 500);
    assert.match(r.headers.get('content-type'), /json/);
    const body = await r.json();
    assert.equal(body.error, 'WRONG_BASE');
    assert.ok(body.message.length > 10);
  }
});

test('a delta corrupted past the first chunk aborts the response: never a complete-looking 200', async () => {
  const r = await mf.dispatchFetch('http://edge/corrupt/model.bf16.safetensors');
  assert.equal(r.status, 200); // the first chunks were good and went out
  assert.equal(r.headers.get('content-length'), String(ft.length));
  let got = 0;
  await assert.rejects(async () => {
    for await (const c of r.body) got += c.length;
  });
  assert.ok(got < ft.length, `${got} bytes arrived`);
  // A range inside the damaged chunk is refused before anything is sent: probe back from the
  // end, 1 MB at a time, until one lands in it (ranges in good chunks still work).
  let refused = null;
  for (let at = ft.length - 1000; at > 0 && !refused; at -= 1_000_000) {
    const r = await mf.dispatchFetch('http://edge/corrupt/model.bf16.safetensors', { headers: { Range: `bytes=${at}-${at + 999}` } });
    if (r.status === 206) assert.ok(Buffer.from(await r.arrayBuffer()).equals(ft.subarray(at, at + 1000)));
    else refused = r;
  }
  assert.equal(refused?.status, 500);
  assert.equal((await refused.json()).error, 'CORRUPT_DELTA');
});

test('a panic in the module is a JSON 500 with code INTERNAL; the next request on the same instance succeeds', async () => {
  const r = await mf.dispatchFetch(`http://edge/${FT}`, { headers: { 'x-zipllm-test-panic': 'rebuild' } });
  assert.equal(r.status, 500);
  assert.match(r.headers.get('content-type'), /json/);
  const body = await r.json();
  assert.equal(body.error, 'INTERNAL');
  assert.match(body.message, /panicked at .*a panic on purpose/s);
  for (const headers of [{}, { Range: 'bytes=20000000-20000999' }]) {
    const ok = await mf.dispatchFetch(`http://edge/${FT}`, { headers });
    assert.equal(ok.status, headers.Range ? 206 : 200);
    const bytes = Buffer.from(await ok.arrayBuffer());
    if (headers.Range) assert.ok(bytes.equals(ft.subarray(20000000, 20001000)));
    else assert.equal(sha256(bytes), catalog.files[FT].sha256);
  }
});

test('a model larger than an isolate (512 MiB) streams through with bounded memory', { timeout: 10 * 60 * 1000 }, async () => {
  const files = syntheticPair(path.join(root, '.cache/big-edge'), 0.5, { keepTarget: true });
  const want = crypto.createHash('sha256');
  for await (const c of fs.createReadStream(files.target, { highWaterMark: 1 << 20 })) want.update(c);
  const size = fs.statSync(files.target).size;
  const bigHub = path.join(tmp, 'big');
  fs.mkdirSync(path.join(bigHub, 'synth'), { recursive: true });
  fs.symlinkSync(files.base, path.join(bigHub, 'synth/base.safetensors'));
  fs.symlinkSync(files.delta, path.join(bigHub, 'synth/ft.safetensors.zld'));
  fs.writeFileSync(
    path.join(bigHub, 'catalog.json'),
    JSON.stringify({
      version: 1,
      files: {
        'synth/base.safetensors': { kind: 'base', size: fs.statSync(files.base).size, sha256: 'not-checked-here' },
        'synth/ft.safetensors': { kind: 'fine-tune', size, sha256: want.digest('hex'), deltas: { 'synth/base.safetensors': { path: 'synth/ft.safetensors.zld', size: fs.statSync(files.delta).size } } },
      },
    }),
  );
  const origin = await startServer({ root: bigHub });
  const before = workerdPids();
  const edge = new Miniflare(workerOptions({ bindings: { ORIGIN: `${origin.url}/`, STATS: 'on' } }));
  try {
    await edge.ready;
    const [pid] = workerdPids().filter((p) => !before.includes(p));
    const rss = (field) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;
    const idle = rss('VmRSS');
    const r = await edge.dispatchFetch('http://edge/synth/ft.safetensors');
    assert.equal(r.status, 200);
    const sha = crypto.createHash('sha256');
    let got = 0;
    for await (const c of r.body) {
      sha.update(c);
      got += c.length;
    }
    assert.equal(got, size);
    assert.equal(`"${sha.digest('hex')}"`, r.headers.get('etag'));
    // A range across chunks from the origin binding too.
    const at = 300 * 2 ** 20 + 12345;
    const part = await edge.dispatchFetch('http://edge/synth/ft.safetensors', { headers: { Range: `bytes=${at}-${at + 9_999_999}` } });
    assert.equal(part.status, 206);
    const expected = Buffer.alloc(10_000_000);
    const fd = fs.openSync(files.target, 'r');
    fs.readSync(fd, expected, 0, expected.length, at);
    fs.closeSync(fd);
    assert.ok(Buffer.from(await part.arrayBuffer()).equals(expected));
    const { wasmMemoryBytes } = await (await edge.dispatchFetch('http://edge/__stats')).json();
    const mib = (n) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    console.log(`edge: ${mib(size)} served; peak wasm memory ${mib(wasmMemoryBytes)}; workerd (the whole runtime) RSS ${mib(idle)} idle, peak ${mib(rss('VmHWM'))}; ${origin.stats.requests} origin requests`);
    assert.ok(wasmMemoryBytes <= 64 * 2 ** 20, `${wasmMemoryBytes} bytes of wasm memory`);
    assert.ok(rss('VmHWM') - idle < 128 * 2 ** 20, 'the request grew workerd by more than an isolate may hold');
    assert.ok(origin.stats.requests < 20, `${origin.stats.requests} origin requests`);
  } finally {
    await edge.dispose();
    origin.server.close();
  }
});
