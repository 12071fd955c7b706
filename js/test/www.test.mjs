// The demo page end to end in Debian's Chromium: first visit caches the base, a fine-tune is
// fetched as a delta and rebuilt in a Web Worker, its sha256 checked, a screenshot saved; the
// second visit uses the cached base (the server sees no base download). Prints the time to
// model over a simulated 100 MB/s link next to the full download (www/measure.mjs gives medians).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serveDemo } from '../../www/serve.mjs';
import { launch, visit, getModel, timeFullDownload } from '../../www/e2e.mjs';
import { corruptLastChunk } from './fixtures.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FT = 'ft-a/model.bf16.safetensors';
const BASE = 'all-MiniLM-L6-v2/model.bf16.safetensors';
const SHOTS = path.join(root, 'target/www');

let site;
let browser;
let context;

before(async () => {
  site = await serveDemo({ mbps: 100 });
  browser = await launch();
  context = await browser.newContext({ viewport: { width: 1100, height: 1000 } });
});

after(async () => {
  await browser?.close();
  site?.server.close();
});

const served = (p) => site.stats.byPath[`/hub/${p}`] || 0;

test('first visit: the base is cached, ft-a arrives as a delta, rebuilt and verified', { timeout: 300_000 }, async () => {
  const page = await visit(context, `${site.url}/`);
  assert.equal(served(BASE), site.catalog.files[BASE].size, 'the first visit downloads the default base once');
  assert.equal(await page.getAttribute(`#bases li[data-path="${BASE}"]`, 'data-cached'), 'true');

  const r = await getModel(page, FT);
  assert.equal(r.state, 'done', r.verdict);
  assert.equal(r.shaExpected, site.catalog.files[FT].sha256);
  assert.equal(r.shaGot, r.shaExpected);
  assert.equal(r.downloaded, 1, 'the delta progress bar reached 100%');
  assert.equal(r.rebuilt, 1, 'the rebuild progress bar reached 100%');
  assert.equal(served(FT + '.zld'), site.catalog.files[FT].deltas[BASE].size);
  assert.ok(served(FT) < site.catalog.files[FT].size / 100, `${served(FT)} bytes of the full fine-tune read to fingerprint it`);
  assert.match(r.steps.join('\n'), /related/);

  const full = await timeFullDownload(page);
  console.log(`time to model over 100 MB/s: delta path ${r.timeToModel.toFixed(0)} ms, full download ${full.fullMs.toFixed(0)} ms (${full.ratio.toFixed(2)} ×)`);
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, 'demo.png'), fullPage: true });

  // The rebuilt file is offered for download and kept in the cache.
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
  assert.equal(fs.statSync(await download.path()).size, site.catalog.files[FT].size);
  await page.waitForSelector(`#finetunes li[data-path="${FT}"][data-cached="true"]`);
  await page.close();
});

test('second visit: the cached base is used, nothing of it is downloaded again', { timeout: 300_000 }, async () => {
  const before = served(BASE);
  const page = await visit(context, `${site.url}/`);
  assert.equal(await page.getAttribute(`#finetunes li[data-path="${FT}"]`, 'data-cached'), 'true');
  const r = await getModel(page, FT);
  assert.equal(r.state, 'done', r.verdict);
  assert.equal(r.shaGot, site.catalog.files[FT].sha256);
  assert.equal(served(BASE) - before, 0, 'no base bytes were served on the second visit');
  await page.close();
});

test('a fresh profile with no base falls back to the hub: it matches remotely and downloads the base', { timeout: 300_000 }, async () => {
  const fresh = await browser.newContext();
  const page = await fresh.newPage();
  // A device without the base: let the first visit finish, then forget everything it cached.
  await page.goto(`${site.url}/`);
  await page.waitForFunction(() => document.body.dataset.ready === 'true');
  await page.click('#clear');
  await page.waitForSelector(`#bases li[data-path="${BASE}"][data-cached="false"]`);
  const before = served(BASE);
  const r = await getModel(page, FT);
  assert.equal(r.state, 'done', r.verdict);
  assert.equal(r.shaGot, site.catalog.files[FT].sha256);
  const size = site.catalog.files[BASE].size;
  const got = served(BASE) - before;
  // The whole base once, plus the blocks the remote match sampled from it.
  assert.ok(got >= size && got < size * 1.01, `${got} bytes of the base served`);
  assert.match(r.steps.join('\n'), /downloading the base/);
  await fresh.close();
});

test('a corrupt delta, a wrong base and a missing delta surface as coded errors in the page, and nothing is kept', { timeout: 300_000 }, async () => {
  const fresh = await browser.newContext();
  const page = await visit(fresh, `${site.url}/`);
  const good = site.catalog.files[FT].deltas[BASE];
  const bad = corruptLastChunk(fs.readFileSync(path.join(site.hubDir, good.path)));
  fs.writeFileSync(path.join(site.hubDir, 'ft-a/corrupt.zld'), bad);
  const FP32 = 'all-MiniLM-L6-v2/model.safetensors';
  const codes = await page.evaluate(
    async ([ft, base, fp32, goodPath, size]) => {
      const hub = new URL('hub/', location.href).href;
      const catalog = await (await fetch(`${hub}catalog.json`)).json();
      const { call, rebuildModel } = window.zipllmDemo;
      const codeOf = (p) => p.then(() => 'no error', (e) => e.code);
      const corrupt = structuredClone(catalog);
      corrupt.files[ft].deltas[base] = { path: 'ft-a/corrupt.zld', size };
      const missing = structuredClone(catalog);
      missing.files[ft].deltas[base] = { path: 'ft-a/no-such.zld', size };
      const wrong = structuredClone(catalog);
      wrong.files[ft].deltas[fp32] = { path: goodPath, size };
      await call('ensureBase', { url: hub + fp32, size: catalog.files[fp32].size, sha256: catalog.files[fp32].sha256 });
      return {
        corrupt: await codeOf(rebuildModel(ft, base, null, corrupt).result),
        wrongBase: await codeOf(rebuildModel(ft, fp32, null, wrong).result),
        missing: await codeOf(rebuildModel(ft, base, null, missing).result),
        kept: !!(await (await caches.open('zipllm-models')).match(hub + ft)),
      };
    },
    [FT, BASE, FP32, good.path, bad.length],
  );
  assert.deepEqual(codes, { corrupt: 'CORRUPT_DELTA', wrongBase: 'WRONG_BASE', missing: 'IO', kept: false });
  fs.rmSync(path.join(site.hubDir, 'ft-a/corrupt.zld'));
  await fresh.close();
});
