// The built package in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core):
// a page importing zipllm/web without a bundler, and a Web Worker; a panic there; the bundler
// entry as a browser runs it unbundled.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../www/server.mjs';
import { launch } from '../../www/e2e.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const models = process.env.ZIPLLM_MODELS || path.join(root, '.cache/models');
const FT_A_SHA256 = 'f2f2f85cabf465c4a0adc9481a6b0b732bd5128a58f745ff5b04a6061192a5b3';

let browser;
let page;
let site;

before(async () => {
  site = await startServer({ root, mounts: { '/models/': models } });
  browser = await launch();
  page = await browser.newPage();
  page.on('pageerror', (e) => console.error('page error:', e));
  await page.goto(`${site.url}/js/test/browser/page.html`);
  await page.waitForFunction(() => window.ready === true);
});

after(async () => {
  await browser?.close();
  site?.server.close();
});

const BASE = '/models/base/model.bf16.safetensors';
const DELTA = '/tests/fixtures/ft-a.bf16.zld';

test('a page rebuilds ft-a with zipllm/web', async () => {
  const r = await page.evaluate(([b, d]) => window.zipllmTest.rebuildHere(b, d), [BASE, DELTA]);
  assert.equal(r.sha256, FT_A_SHA256);
  assert.equal(r.phase, 'done');
  assert.equal(r.size, 45442040);
  console.log(`chromium page: ${r.mbPerS.toFixed(0)} MB/s`);
});

test('a Web Worker rebuilds ft-a', async () => {
  const r = await page.evaluate(([b, d]) => window.zipllmTest.inWorker(b, d), [BASE, DELTA]);
  assert.equal(r.sha256, FT_A_SHA256);
  console.log(`chromium worker: ${r.mbPerS.toFixed(0)} MB/s`);
});

test('a corrupt delta errors with CORRUPT_DELTA in the browser', async () => {
  const code = await page.evaluate(([b, d]) => window.zipllmTest.corrupt(b, d), [BASE, DELTA]);
  assert.equal(code, 'CORRUPT_DELTA');
});

test('a panic mid-rebuild in the page errors the stream with INTERNAL; then the module rebuilds ft-a', async () => {
  const r = await page.evaluate(([b, d]) => window.zipllmTest.panicThenRebuild(b, d), [BASE, DELTA]);
  assert.equal(r.code, 'INTERNAL', r.message);
  assert.match(r.message, /a panic on purpose/);
  assert.equal(r.sha256, FT_A_SHA256);
  assert.deepEqual(r.escaped, []);
});

test('the bundler entry loads the wasm itself (top-level await) and rebuilds ft-a', async () => {
  const r = await page.evaluate(([b, d]) => window.zipllmTest.bundlerEntry(b, d), [BASE, DELTA]);
  assert.equal(r.sha256, FT_A_SHA256);
  assert.equal(r.levels, 22);
  assert.equal(r.init, false, 'no init to call');
});
