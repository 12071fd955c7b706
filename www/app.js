// The demo page: lists the hub's bases and fine-tunes, keeps the default base in the Cache API,
// and has rebuild-worker.js get a fine-tune as a delta. State the tests read is mirrored in
// data-* attributes (data-state on #result, data-cached on list items).
const HUB = new URL('hub/', location.href).href;
const $ = (id) => document.getElementById(id);

/** A Web Worker running rebuild-worker.js; `call(op, args, onProgress)` runs an op there and
 *  resolves to its result; `call.lastId` is the id of the op just sent (for abort). */
function spawn() {
  const worker = new Worker(new URL('rebuild-worker.js', import.meta.url), { type: 'module' });
  let nextId = 0;
  const pending = new Map();
  worker.onmessage = ({ data }) => {
    const p = pending.get(data.id);
    if (!p) return;
    if (data.progress) return p.muted || p.onProgress?.(data.progress);
    pending.delete(data.id);
    if (data.error) p.reject(Object.assign(new Error(data.error.message), { code: data.error.code }));
    else p.resolve(data.result);
  };
  const call = (op, args = {}, onProgress, transfer = []) =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      call.lastId = id;
      pending.set(id, { resolve, reject, onProgress });
      worker.postMessage({ id, op, args }, transfer);
    });
  /** Stops op `id` (a rebuild): its progress is ignored from now on, its promise rejects. */
  call.abort = async (id) => {
    const p = pending.get(id);
    if (p) p.muted = true;
    await call('abort', { target: id });
  };
  return call;
}
// Two workers: one rebuilds while the other identifies the base, so neither waits on the other;
// a third only downloads deltas for the first (see net-worker.js).
const call = spawn();
const identify = spawn();
const net = new Worker(new URL('net-worker.js', import.meta.url));
let downloads = 0;
const downloaded = new Map();
net.onmessage = ({ data }) => downloaded.get(data.id)?.();
// For tests and the console.
window.zipllmDemo = { call, identify, rebuildModel: (...args) => rebuildModel(...args) };

/**
 * Gets fine-tune `path` as its delta against the cached base `base`: the network worker
 * downloads the delta and hands it straight to the rebuild worker (a MessageChannel between
 * them), which rebuilds the file and checks the hub's sha256 (both as `hub` lists them).
 * Returns { result: Promise, downloaded: Promise (the whole delta has arrived), abort() }.
 */
function rebuildModel(path, base, onProgress, hub = catalog) {
  const { port1, port2 } = new MessageChannel();
  const download = downloads++;
  const arrived = new Promise((resolve) => downloaded.set(download, resolve));
  net.postMessage({ id: download, url: HUB + hub.files[path].deltas[base].path, port: port1 }, [port1]);
  const result = call('rebuild', { hub: HUB, path, base, catalog: hub, delta: port2 }, onProgress, [port2]);
  const id = call.lastId;
  result.finally(() => downloaded.delete(download)).catch(() => {});
  return { result, downloaded: arrived, abort: () => call.abort(id) };
}

/** How long a guessed delta has the link and the cores to itself before the fine-tune is
 *  identified (unless it has fully arrived sooner): identification running alongside slowed
 *  the rebuild by about 50 ms on two cores, and a long download of a wrong guess must still be
 *  caught early. */
const GUESS_HEAD_START_MS = 250;

const mb = (n) => `${(n / 1e6).toFixed(n < 1e7 ? 2 : 1)} MB`;
const ms = (t) => (t < 1000 ? `${t.toFixed(0)} ms` : `${(t / 1000).toFixed(2)} s`);

let catalog;
const state = { busy: false, last: null };

function el(tag, props = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  for (const c of children) e.append(c);
  return e;
}

function step(text) {
  const li = el('li', { textContent: text });
  $('steps').append(li);
  return (more, cls = 'ok') => {
    if (more) li.textContent = `${text} — ${more}`;
    li.className = cls;
  };
}

async function refreshLists() {
  const urls = Object.keys(catalog.files).map((p) => HUB + p);
  const status = await call('status', { urls });
  $('bases').replaceChildren();
  $('finetunes').replaceChildren();
  for (const [path, f] of Object.entries(catalog.files)) {
    const s = status[HUB + path];
    if (f.kind === 'base') {
      const li = el('li', {}, el('span', { className: 'title', textContent: f.title }), el('span', { className: 'meta', textContent: `${path} · ${mb(f.size)}` }));
      li.dataset.path = path;
      li.dataset.cached = s.base;
      const badge = el('span', { className: s.base ? 'badge ok' : 'badge', textContent: s.base ? 'cached' : 'not here' });
      li.append(badge);
      if (!s.base) {
        const b = el('button', { className: 'quiet', textContent: 'Download' });
        b.onclick = () => downloadBase(path);
        li.append(b);
      }
      $('bases').append(li);
    } else {
      const best = Math.min(...Object.values(f.deltas).map((d) => d.size));
      const li = el('li', {}, el('span', { className: 'title', textContent: f.title }), el('span', { className: 'meta', textContent: `${path} · ${mb(f.size)} · delta ${mb(best)}` }));
      li.dataset.path = path;
      li.dataset.cached = s.model;
      if (s.model) li.append(el('span', { className: 'badge ok', textContent: 'rebuilt earlier' }));
      const b = el('button', { textContent: s.model ? 'Rebuild again' : 'Get it' });
      b.className = 'get';
      b.onclick = () => getModel(path);
      li.append(b);
      $('finetunes').append(li);
    }
  }
}

async function downloadBase(path) {
  const f = catalog.files[path];
  const li = document.querySelector(`#bases li[data-path="${path}"]`);
  const bar = el('progress', { max: f.size, value: 0 });
  li?.append(bar);
  await call('ensureBase', { url: HUB + path, size: f.size, sha256: f.sha256 }, (p) => (bar.value = p.bytes));
  await refreshLists();
}

function chart(target, title, rows) {
  const max = Math.max(...rows.map((r) => r.value));
  target.replaceChildren(el('h4', { textContent: title }));
  for (const r of rows) {
    const bar = el('div', { className: `fill ${r.cls}` });
    bar.style.width = `${Math.max(0.5, (100 * r.value) / max)}%`;
    target.append(el('div', { className: 'row' }, el('span', { className: 'label', textContent: r.label }), el('div', { className: 'track' }, bar), el('span', { className: 'value', textContent: r.text })));
  }
}

function showSavings() {
  const r = state.last;
  const f = catalog.files[r.path];
  $('saved').hidden = false;
  chart($('chart-bytes'), 'Bytes over the network', [
    { label: 'full download', value: f.size, text: mb(f.size), cls: 'full' },
    { label: 'zipllm delta', value: r.deltaBytes + r.fingerprintBytes, text: `${mb(r.deltaBytes + r.fingerprintBytes)} (${((100 * (r.deltaBytes + r.fingerprintBytes)) / f.size).toFixed(1)}%)`, cls: 'delta' },
  ]);
  const rows = [{ label: 'zipllm delta', value: r.timeToModel, text: ms(r.timeToModel), cls: 'delta' }];
  if (r.fullMs) rows.unshift({ label: 'full download', value: r.fullMs, text: ms(r.fullMs), cls: 'full' });
  chart($('chart-time'), r.fullMs ? `Time to model (delta path ${(r.timeToModel / r.fullMs).toFixed(2)} × the full download)` : 'Time to model', rows);
  $('chart-time').dataset.ratio = r.fullMs ? (r.timeToModel / r.fullMs).toFixed(3) : '';
  $('chart-time').dataset.fullMs = r.fullMs ? r.fullMs.toFixed(1) : '';
}

async function getModel(path) {
  if (state.busy) return;
  state.busy = true;
  document.body.classList.add('busy');
  const f = catalog.files[path];
  $('run').hidden = false;
  $('saved').hidden = true;
  $('run-title').textContent = f.title;
  $('steps').replaceChildren();
  $('downloaded').value = 0;
  $('rebuilt').value = 0;
  $('downloaded-text').textContent = '';
  $('rebuilt-text').textContent = '';
  $('download').hidden = true;
  $('result').dataset.state = 'running';
  $('verdict').textContent = '';
  $('sha-expected').textContent = f.sha256;
  $('sha-got').textContent = '';
  const steps = {};
  const t0 = performance.now();
  const at = () => performance.now() - t0;
  const onProgress = (p) => {
    if (p.phase === 'base') steps.base ??= step('downloading the base it needs');
    if (p.phase !== 'rebuild') return;
    steps.rebuild ??= step('fetching the delta and rebuilding, chunk by chunk; then checking the sha256');
    $('downloaded').value = p.downloaded / p.deltaSize;
    $('rebuilt').value = p.rebuilt / p.size;
    $('downloaded-text').textContent = `${mb(p.downloaded)} of ${mb(p.deltaSize)}`;
    $('rebuilt-text').textContent = `${mb(p.rebuilt)} of ${mb(p.size)}`;
  };
  try {
    // A cached base with a delta for this fine-tune is the likely one: its delta is fetched and
    // rebuilt at once, the fingerprint taken once the delta is in (see GUESS_HEAD_START_MS),
    // and the rebuild kept only if the match confirms that base.
    const cachedBases = [...document.querySelectorAll('#bases li[data-cached="true"]')].map((li) => li.dataset.path);
    const guess = cachedBases.find((b) => f.deltas[b]);
    const t = {};
    let guessed = null;
    if (guess) {
      guessed = rebuildModel(path, guess, onProgress);
      guessed.result.then(() => (t.rebuild = at()), () => {});
    }
    steps.fp = step('fingerprinting the fine-tune on the hub and matching it against the bases');
    if (guessed) await Promise.race([guessed.downloaded, guessed.result.catch(() => {}), new Promise((r) => setTimeout(r, GUESS_HEAD_START_MS))]);
    const id = await identify('identify', { hub: HUB, path, catalog });
    t.identify = at();
    if (!id.best) {
      if (guessed) {
        await guessed.abort();
        await guessed.result.catch(() => {});
      }
      steps.fp(`no related base in the hub has a delta for it (${id.verdicts.map((v) => `${v.candidate}: ${v.verdict}`).join(', ')})`, 'bad');
      throw Object.assign(new Error('no base with a delta for this fine-tune'), { code: 'NO_BASE' });
    }
    let r;
    let baseDownloaded = 0;
    if (id.best === guess) {
      r = await guessed.result;
    } else {
      if (guessed) {
        await guessed.abort();
        await guessed.result.catch(() => {});
      }
      const b = catalog.files[id.best];
      baseDownloaded = (await call('ensureBase', { url: HUB + id.best, size: b.size, sha256: b.sha256 }, onProgress)).downloaded;
      t.base = at();
      r = await rebuildModel(path, id.best, onProgress).result;
      t.rebuild = at();
    }
    const timeToModel = at();
    const v = id.verdicts.find((x) => x.candidate === id.best);
    steps.fp(`${mb(id.fingerprintBytes)} read; ${id.best}: ${v.verdict}, bit distance ${v.normalizedDistance.toFixed(3)} (threshold ${v.threshold}); ${id.verdicts.length} compared; at ${ms(t.identify)}`);
    steps.base?.(`${mb(baseDownloaded)}, at ${ms(t.base)}`);
    const early = id.best === guess ? ' (started with the fingerprint, on the cached base the match then confirmed)' : '';
    steps.rebuild?.(`${mb(r.deltaBytes)} fetched, ${mb(r.size)} rebuilt, sha256 checked in ${ms(r.verifyMs)}, at ${ms(timeToModel)}${early}`);
    r = { ...r, ...id, base: id.best, timings: { ...t, deltaDone: r.deltaDoneMs, rebuildDone: r.rebuildMs, verified: timeToModel } };
    state.last = { path, ...r, timeToModel };
    $('sha-got').textContent = r.sha256;
    $('verdict').textContent = r.sha256 === f.sha256 ? `✓ Byte for byte the hub's file, in ${ms(timeToModel)}.` : '✗ sha256 mismatch';
    $('result').dataset.state = r.sha256 === f.sha256 ? 'done' : 'failed';
    $('result').dataset.timeToModel = timeToModel.toFixed(1);
    $('result').dataset.timings = JSON.stringify(r.timings);
    const a = $('download');
    const file = r.bytes instanceof Blob ? r.bytes : new Blob([r.bytes], { type: 'application/octet-stream' });
    a.href = URL.createObjectURL(file);
    a.download = path.split('/').pop();
    a.hidden = false;
    showSavings();
    // Keep it: the next visit finds it in the cache.
    const models = await caches.open('zipllm-models');
    await models.put(HUB + path, new Response(file, { headers: { 'content-type': 'application/octet-stream', 'x-sha256': r.sha256 } }));
    await refreshLists();
  } catch (e) {
    $('verdict').textContent = `✗ ${e.code ? `${e.code}: ` : ''}${e.message}`;
    $('result').dataset.state = 'failed';
  } finally {
    // The next rebuild's output buffer, made now rather than on its clock.
    await call('refill').catch(() => {});
    state.busy = false;
    document.body.classList.remove('busy');
  }
}

async function compareFull() {
  const r = state.last;
  const f = catalog.files[r.path];
  const b = $('compare');
  b.disabled = true;
  b.textContent = 'downloading the whole file…';
  const done = await call('fullDownload', { url: HUB + r.path, size: f.size, sha256: f.sha256 }, (p) => (b.textContent = `downloading the whole file… ${mb(p.bytes)}`));
  r.fullMs = done.ms;
  b.dataset.runs = Number(b.dataset.runs || 0) + 1;
  b.textContent = 'Time the full download again';
  b.disabled = false;
  showSavings();
}

async function main() {
  catalog = await (await fetch(`${HUB}catalog.json`, { cache: 'no-store' })).json();
  const link = await (await fetch('__link')).json().catch(() => ({ mbps: 0 }));
  const select = $('link');
  if (![...select.options].some((o) => Number(o.value) === link.mbps)) select.append(el('option', { value: link.mbps, textContent: `${link.mbps} MB/s` }));
  select.value = String(link.mbps);
  select.onchange = () => fetch(`__link?mbps=${select.value}`, { method: 'PUT' });
  $('compare').onclick = compareFull;
  $('clear').onclick = async () => {
    await call('clear');
    await refreshLists();
  };
  await refreshLists();
  // First visit: fetch the default base, so that fine-tunes come as deltas.
  for (const [path, f] of Object.entries(catalog.files)) {
    if (f.kind === 'base' && f.default && document.querySelector(`#bases li[data-path="${path}"]`).dataset.cached !== 'true') await downloadBase(path);
  }
  const cached = [...document.querySelectorAll('#bases li[data-cached="true"]')].map((li) => HUB + li.dataset.path);
  const outputSize = Math.max(0, ...Object.values(catalog.files).map((f) => (f.kind === 'fine-tune' ? f.size : 0)));
  await Promise.all([call('prepare', { bases: cached, outputSize }), identify('warmFamily', { url: cached[0] })]);
  document.body.dataset.ready = 'true';
}

main().catch((e) => {
  document.body.dataset.ready = 'failed';
  document.body.prepend(el('p', { className: 'error', textContent: `The demo could not start: ${e.message}` }));
});
