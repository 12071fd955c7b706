#!/usr/bin/env node
// Time to model in Chromium over a simulated link: the demo page gets each fine-tune as a delta
// (fingerprint, match, delta, rebuild, sha256), then times the plain download of the same file,
// alternating, and prints the medians side by side.
//
//   node www/measure.mjs [--mbps 100] [--runs 5]
import { parseArgs } from 'node:util';
import { serveDemo } from './serve.mjs';
import { launch, visit, getModel, timeFullDownload } from './e2e.mjs';

const { values } = parseArgs({ options: { mbps: { type: 'string', default: '100' }, runs: { type: 'string', default: '5' } } });
const runs = Number(values.runs);
const site = await serveDemo({ mbps: Number(values.mbps) });
const browser = await launch();
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
try {
  const page = await visit(await browser.newContext(), `${site.url}/`);
  console.log(`link: ${site.link.mbps ? `${site.link.mbps} MB/s (shared by all requests)` : 'unlimited'}; ${runs} runs each, medians`);
  console.log('file                          size MB  delta MB  delta path ms  (milestones: base identified, rebuilt)  full download ms  ratio');
  for (const [path, f] of Object.entries(site.catalog.files)) {
    if (f.kind !== 'fine-tune') continue;
    const delta = [];
    const full = [];
    const parts = [];
    for (let i = 0; i < runs; i++) {
      const r = await getModel(page, path);
      if (r.state !== 'done' || r.shaGot !== f.sha256) throw new Error(`${path}: ${r.verdict}`);
      delta.push(r.timeToModel);
      if (process.env.VERBOSE) console.log(JSON.stringify(r.timings));
      parts.push(r.timings);
      full.push((await timeFullDownload(page)).fullMs);
    }
    const d = median(delta);
    const p = (k) => median(parts.map((t) => t[k])).toFixed(0);
    const deltaMb = Math.min(...Object.values(f.deltas).map((x) => x.size)) / 1e6;
    console.log(
      `${path.padEnd(30)}${(f.size / 1e6).toFixed(1).padStart(7)}${deltaMb.toFixed(2).padStart(10)}${d.toFixed(0).padStart(15)}  (${p('identify')}, ${p('rebuild')})`.padEnd(104) +
        `${median(full).toFixed(0).padStart(8)}  ${(d / median(full)).toFixed(2)}`,
    );
  }
} finally {
  await browser.close();
  site.server.close();
}
