// A Rust panic (or any fault of the wasm instance) reaches callers as an Error with code
// INTERNAL and the panic's message, nothing escapes as an uncaught exception or an unhandled
// rejection, and the same imported module carries on with a fresh instance. The panics are made
// on purpose by the package's hidden test hook, `__testPanic`.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import * as zipllm from 'zipllm';
import { safetensorsHeader } from './fixtures.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const models = process.env.ZIPLLM_MODELS || path.join(root, '.cache/models');
const BASE = path.join(models, 'base/model.bf16.safetensors');
const DELTA = path.join(root, 'tests/fixtures/ft-a.bf16.zld');
const FT_A_SHA256 = 'f2f2f85cabf465c4a0adc9481a6b0b732bd5128a58f745ff5b04a6061192a5b3';

const escaped = [];
process.on('uncaughtException', (e) => escaped.push(['uncaughtException', e]));
process.on('unhandledRejection', (e) => escaped.push(['unhandledRejection', e]));
/** Lets late promise callbacks of the old instance run, then checks nothing escaped. */
async function nothingEscaped() {
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(escaped.map(([kind, e]) => `${kind}: ${e?.stack ?? e}`), []);
}
after(nothingEscaped);

const isInternal = (pattern) => (e) => {
  assert.ok(e instanceof Error, `not an Error: ${e}`);
  assert.equal(e.code, 'INTERNAL', e.message);
  assert.match(e.message, pattern);
  return true;
};

async function sha256Of(stream) {
  const sha = crypto.createHash('sha256');
  for await (const chunk of stream) sha.update(chunk);
  return sha.digest('hex');
}

async function rebuildFtA() {
  const base = await fs.openAsBlob(BASE);
  return sha256Of(zipllm.rebuild({ base, delta: (await fs.openAsBlob(DELTA)).stream() }));
}

/** A small pair encode() can work on. */
function smallPair() {
  const meta = { w: { dtype: 'BF16', shape: [2048], data_offsets: [0, 4096] } };
  const weights = crypto.randomBytes(4096);
  const tuned = Buffer.from(weights);
  for (let i = 0; i < tuned.length; i += 10) tuned[i] ^= 1;
  return [Buffer.concat([safetensorsHeader(meta), weights]), Buffer.concat([safetensorsHeader(meta), tuned])];
}

test('a panic in a synchronous call throws INTERNAL with the panic message; the module carries on', async () => {
  const [base, target] = smallPair();
  assert.throws(() => zipllm.__testPanic('now'), isInternal(/panicked at .*a panic on purpose \(now\)/s));
  assert.equal(zipllm.formatVersion(), 1);

  zipllm.__testPanic('encode');
  assert.throws(() => zipllm.encode(base, target), isInternal(/a panic on purpose \(Encode\)/));
  const delta = zipllm.encode(base, target);
  assert.ok(Buffer.from(await new Response(zipllm.rebuild({ base, delta })).arrayBuffer()).equals(target));

  // A trap that does not go through the panic hook (abort: `unreachable`) is a fault too.
  assert.throws(() => zipllm.__testPanic('abort'), (e) => isInternal(/RuntimeError: unreachable/)(e) && e.cause instanceof WebAssembly.RuntimeError);
  assert.ok(zipllm.encode(base, target).length > 0);
  await nothingEscaped();
});

test('a panic while a rebuild streams errors that stream with INTERNAL, and a rebuild of the old instance too', async () => {
  const base = await fs.openAsBlob(BASE);
  const running = zipllm.rebuild({ base, delta: (await fs.openAsBlob(DELTA)).stream() }).getReader();
  // Another rebuild in flight on the same instance: its state is lost with it.
  const other = zipllm.rebuild({ base, delta: (await fs.openAsBlob(DELTA)).stream() }).getReader();
  assert.ok((await running.read()).value.length > 0);
  assert.ok((await other.read()).value.length > 0);
  zipllm.__testPanic('rebuild'); // the next poll of a rebuild panics
  await assert.rejects(async () => {
    for (;;) if ((await running.read()).done) break;
  }, isInternal(/panicked at .*a panic on purpose \(Rebuild\)/s));
  await assert.rejects(other.read(), isInternal(/reinitialized after a fault in another call/));

  // The same through a promise.
  zipllm.__testPanic('rebuild');
  await assert.rejects(zipllm.verify({ base, delta: await fs.openAsBlob(DELTA) }), isInternal(/a panic on purpose/));
  await nothingEscaped();
});

test('a panic in a call made from a callback inside another call fails the outer call too', async () => {
  const base = await fs.openAsBlob(BASE);
  let calls = 0;
  const stream = zipllm.rebuild({
    base,
    delta: (await fs.openAsBlob(DELTA)).stream(),
    // The rebuild ignores what onProgress throws; the fault must still end it.
    onProgress: () => {
      if (++calls === 3) zipllm.__testPanic('now');
    },
  });
  await assert.rejects(sha256Of(stream), isInternal(/a panic on purpose \(now\)/));
  await nothingEscaped();
});

test('a rebuild cancelled while it waits for the delta ends quietly', async () => {
  const base = await fs.openAsBlob(BASE);
  const bytes = new Uint8Array(fs.readFileSync(DELTA));
  // The manifest arrives; the payload only once the rebuild is cancelled.
  const manifestEnd = 24 + Number(Buffer.from(bytes.buffer).readBigUInt64LE(16)) + 32;
  let release;
  const gate = new Promise((r) => (release = r));
  let sent = 0;
  const delta = new ReadableStream({
    async pull(controller) {
      if (sent >= manifestEnd) await gate;
      if (sent >= bytes.length) return controller.close();
      const end = sent < manifestEnd ? manifestEnd : bytes.length;
      controller.enqueue(bytes.slice(sent, end));
      sent = end;
    },
  });
  const reader = zipllm.rebuild({ base, delta }).getReader();
  let pending;
  while (!pending) {
    const read = reader.read();
    const r = await Promise.race([read, new Promise((resolve) => setTimeout(() => resolve('waiting'), 200))]);
    if (r === 'waiting') pending = read;
    else assert.equal(r.done, false);
  }
  await reader.cancel();
  release();
  assert.deepEqual(await pending, { done: true, value: undefined });
  await nothingEscaped();
});

test('after those panics, the same imported module rebuilds ft-a byte for byte', async () => {
  assert.equal(await rebuildFtA(), FT_A_SHA256);
  const summary = await zipllm.verify({ base: await fs.openAsBlob(BASE), delta: await fs.openAsBlob(DELTA) });
  assert.equal(summary.sha256, FT_A_SHA256);
  assert.equal(summary.fullHashChecked, true);
  await nothingEscaped();
});
