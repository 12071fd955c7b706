// Rebuild speed of the npm package next to the native CLI, measured in one run:
// native (1 thread) vs wasm in Node and in headless Chromium (1 thread), with and without the
// whole-file sha256, and Web Workers rebuilding parts of the file in parallel (rebuild({ part })).
// Native runs twice: dropping the verified chunks, and pinned to one core leaving the whole
// file in one buffer, which is what the wasm "into" figures do (the reference for their ratios).
//
//   node js/bench/bench.mjs [SHARED_DATA_DIR]
//
// Pairs: ft-a bf16 (from the committed delta) always; ft-a fp32 too when ../shared/data is
// there (its unpack.py materializes the files).
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as zipllm from 'zipllm';
import { startServer } from '../../www/server.mjs';
import { launch } from '../../www/e2e.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const models = process.env.ZIPLLM_MODELS || path.join(root, '.cache/models');
const work = path.join(root, '.cache/bench');
fs.mkdirSync(work, { recursive: true });
const zipllmCli = path.join(root, 'target/release/zipllm');
const decodeLoop = path.join(root, 'target/release/examples/decode_loop');
// One core for "one thread": the native rebuild hands chunks to a writer thread.
const pin = ['/usr/bin/taskset', '/bin/taskset'].find((t) => fs.existsSync(t));
execFileSync('cargo', ['build', '--quiet', '--release', '--example', 'decode_loop'], { cwd: root, stdio: 'inherit' });

const pairs = [{ name: 'bf16', base: path.join(models, 'base/model.bf16.safetensors'), delta: path.join(root, 'tests/fixtures/ft-a.bf16.zld') }];
const shared = process.argv[2] || path.join(root, '../shared/data');
if (fs.existsSync(path.join(shared, 'unpack.py'))) {
  const out = path.join(work, 'shared');
  execFileSync('python3', [path.join(shared, 'unpack.py'), out], { stdio: 'ignore' });
  const delta = path.join(work, 'ft-a.fp32.zld');
  if (!fs.existsSync(delta)) execFileSync(zipllmCli, ['encode', '--base', path.join(out, 'base/model.safetensors'), '--target', path.join(out, 'ft-a/model.safetensors'), '-o', delta], { stdio: 'ignore' });
  pairs.push({ name: 'fp32', base: path.join(out, 'base/model.safetensors'), delta });
}

async function nodeRebuild(base, delta, fullHash, into, runs = 5) {
  let best = Infinity;
  let size = 0;
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    size = 0;
    for await (const c of zipllm.rebuild({ base, delta, fullHash, into })) size += c.length;
    best = Math.min(best, performance.now() - t);
  }
  return size / 1e3 / best;
}

// The repository at /, any absolute path under /abs/ (the bench's files live outside it).
const site = await startServer({ root, mounts: { '/abs/': '/' } });
const browser = await launch();
const rows = [];
try {
  const page = await browser.newPage();
  await page.goto(`${site.url}/js/bench/page.html`);
  await page.waitForFunction(() => window.ready === true);
  for (const p of pairs) {
    // Best of 10, as the wasm figures are bests.
    const best = (cmd, args) => Number(/best ([\d.]+) MB\/s/.exec(execFileSync(cmd, args).toString())[1]);
    const native = best(decodeLoop, [p.base, p.delta, '10']);
    const intoArgs = [p.base, p.delta, '10', '--into'];
    const nativeInto = pin ? best(pin, ['-c', '0', decodeLoop, ...intoArgs]) : best(decodeLoop, intoArgs);
    const base = new Uint8Array(fs.readFileSync(p.base));
    const delta = new Uint8Array(fs.readFileSync(p.delta));
    const nodeFast = await nodeRebuild(base, delta, false);
    const nodeFull = await nodeRebuild(base, delta, true);
    const nodeInto = await nodeRebuild(base, delta, false, new Uint8Array((await zipllm.describe(delta)).targetSize));
    const args = [`/abs${p.base}`, `/abs${p.delta}`];
    const chromeFast = await page.evaluate(([b, d]) => window.bench.single(b, d, false, 5), args);
    const chromeFull = await page.evaluate(([b, d]) => window.bench.single(b, d, true, 5), args);
    const chromeWorker = await page.evaluate(([b, d]) => window.bench.singleWorker(b, d, false, 5), args);
    const chromeInto = await page.evaluate(([b, d]) => window.bench.singleWorker(b, d, false, 5, true), args);
    const workers1 = await page.evaluate(([b, d]) => window.bench.parallel(b, d, 1, 5), args);
    const workers2 = await page.evaluate(([b, d]) => window.bench.parallel(b, d, 2, 5), args);
    rows.push({ pair: p.name, native, nativeInto, nodeFast, nodeFull, nodeInto, chromeFast, chromeFull, chromeWorker, chromeInto, workers1, workers2 });
  }
} finally {
  await browser.close();
  site.server.close();
}

const f = (x) => x.toFixed(0).padStart(8);
console.log('MB/s of rebuilt file, one thread unless said, best of 5; wasm: C zstd (clang) + SIMD128');
console.log('chrome = page main thread, -w = one Web Worker streaming the whole file; +sha = whole-file hashes too;');
console.log('into = output into the caller\'s buffer (rebuild({ into })) instead of a new Uint8Array per chunk');
console.log(`native-into = native leaving the file in one buffer, ${pin ? 'pinned to one core' : 'unpinned (no taskset)'}; the into ratios are to it, the others to native`);
console.log('pair    native native-into |     node node+sha node-into |   chrome chrome+sha chrome-w c-w-into | ratios: node node-into chrome-w c-w-into | parts (rebuild({ part }), into): 1 worker 2 workers speed-up');
const x = (a, b) => (a / b).toFixed(2).padStart(6);
for (const r of rows) {
  console.log(
    `${r.pair.padEnd(5)} ${f(r.native)} ${f(r.nativeInto).padStart(11)} | ${f(r.nodeFast)} ${f(r.nodeFull)} ${f(r.nodeInto)} | ${f(r.chromeFast)} ${f(r.chromeFull)} ${f(r.chromeWorker)} ${f(r.chromeInto)} | ` +
      `${x(r.nodeFast, r.native)} ${x(r.nodeInto, r.nativeInto)} ${x(r.chromeWorker, r.native)} ${x(r.chromeInto, r.nativeInto)} | ` +
      `${f(r.workers1)} ${f(r.workers2)} ${(r.workers2 / r.workers1).toFixed(2).padStart(6)}x`,
  );
}
if (process.env.BENCH_JSON) fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify(rows, null, 2));
