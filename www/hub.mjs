// Builds the demo's model hub from www/hub.json: a folder laid out like a model hub (base
// files, fine-tunes, deltas) plus catalog.json, which the page and the edge worker read.
// Base files and deltas are linked, not copied; each fine-tune's full file is rebuilt once
// from its first delta with the zipllm package and checked against the delta's sha256.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import * as zipllm from 'zipllm';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..');

async function sha256(file) {
  const h = crypto.createHash('sha256');
  for await (const c of fs.createReadStream(file, { highWaterMark: 1 << 20 })) h.update(c);
  return h.digest('hex');
}

function link(from, to) {
  fs.mkdirSync(path.dirname(to), { recursive: true });
  try {
    if (fs.realpathSync(to) === fs.realpathSync(from)) return;
  } catch {
    // not there yet, or a dangling link
  }
  fs.rmSync(to, { force: true });
  fs.symlinkSync(path.resolve(from), to);
}

/** Rebuilds `out` from `base` and `delta`, atomically: a failed rebuild leaves nothing. */
async function rebuildTo(base, delta, out) {
  const tmp = `${out}.partial`;
  const file = await fs.promises.open(tmp, 'w');
  let summary;
  try {
    const stream = zipllm.rebuild({
      base: await fs.promises.readFile(base),
      delta: await fs.promises.readFile(delta),
      onProgress: (p) => (summary = p),
    });
    for await (const chunk of stream) await file.write(chunk);
    await file.close();
    fs.renameSync(tmp, out);
    return summary;
  } catch (e) {
    await file.close().catch(() => {});
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/**
 * Lays out the hub in `hubDir` and writes its catalog.json; returns the catalog. Files are
 * looked up in `models` (the folder scripts/setup.sh fills) and the repository.
 */
export async function buildHub({ hubDir, models = process.env.ZIPLLM_MODELS || path.join(repoRoot, '.cache/models'), spec = path.join(here, 'hub.json'), log = () => {} }) {
  const { bases, fineTunes } = JSON.parse(fs.readFileSync(spec, 'utf8'));
  const source = (from) => {
    const [kind, rel] = from.split(/:(.*)/s);
    const file = path.resolve(kind === 'models' ? models : repoRoot, rel);
    if (!fs.existsSync(file)) throw new Error(`${from}: ${file} is missing (run scripts/setup.sh)`);
    return file;
  };
  const files = {};
  for (const b of bases) {
    const to = path.join(hubDir, b.path);
    link(source(b.from), to);
    files[b.path] = { kind: 'base', title: b.title, default: !!b.default, size: fs.statSync(to).size, sha256: await sha256(to) };
  }
  for (const ft of fineTunes) {
    const deltas = {};
    for (const d of ft.deltas) {
      const to = path.join(hubDir, d.path);
      link(source(d.from), to);
      const info = await zipllm.describe(await fs.promises.readFile(to));
      deltas[d.base] = { path: d.path, size: info.deltaSize, sha256: info.targetSha256 };
    }
    const first = ft.deltas[0];
    const { sha256: want } = deltas[first.base];
    const out = path.join(hubDir, ft.path);
    if (!fs.existsSync(out) || (await sha256(out)) !== want) {
      log(`rebuilding ${ft.path} for the hub from ${first.path}`);
      const done = await rebuildTo(path.join(hubDir, first.base), path.join(hubDir, first.path), out);
      if (done.sha256 !== want) throw new Error(`${ft.path}: rebuilt sha256 ${done.sha256}, the delta says ${want}`);
    }
    for (const [base, d] of Object.entries(deltas)) {
      if (d.sha256 !== want) throw new Error(`${d.path} (against ${base}) rebuilds a different file than ${first.path}`);
      delete d.sha256;
    }
    files[ft.path] = { kind: 'fine-tune', title: ft.title, size: fs.statSync(out).size, sha256: want, deltas };
  }
  const catalog = { version: 1, files };
  fs.writeFileSync(path.join(hubDir, 'catalog.json'), `${JSON.stringify(catalog, null, 2)}\n`);
  return catalog;
}
