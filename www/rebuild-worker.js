// The demo's Web Worker: everything that moves or crunches model bytes runs here, so the page
// stays responsive. The page sends { id, op, ...args }; the worker answers with
// { id, progress } messages and one { id, result } or { id, error }.
import init, * as zipllm from '/pkg/zipllm.js';

const BASES = 'zipllm-bases';
const MODELS = 'zipllm-models';
const ready = init();

const post = (id, msg, transfer = []) => self.postMessage({ id, ...msg }, transfer);

/** Progress reports at most every 50 ms (and always the last one). */
function throttled(id) {
  let last = 0;
  return (p, force = false) => {
    const now = performance.now();
    if (!force && now - last < 50) return;
    last = now;
    post(id, { progress: p });
  };
}

/** Reads a response body to the end, counting bytes; returns them in one buffer. */
async function readAll(response, size, onBytes) {
  const out = new Uint8Array(size);
  let at = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (at + value.length > size) throw new Error(`${response.url} is longer than the catalog's ${size} bytes`);
    out.set(value, at);
    at += value.length;
    onBytes(at);
  }
  if (at !== size) throw new Error(`${response.url} ended after ${at} of ${size} bytes`);
  return out;
}

async function fetchOk(url, init) {
  const r = await fetch(url, init);
  if (!r.ok) throw Object.assign(new Error(`${url}: HTTP ${r.status}`), { code: 'IO' });
  return r;
}

async function sha256Hex(bytes) {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** A ByteSource reading a remote file with HTTP Range requests (nothing downloaded whole). */
const remote = (url) => async (offset, length) => {
  const r = await fetchOk(url, { headers: { Range: `bytes=${offset}-${offset + length - 1}` } });
  if (r.status !== 206) throw Object.assign(new Error(`${url} ignored a Range request`), { code: 'IO' });
  return new Uint8Array(await r.arrayBuffer());
};

/** How much of a fine-tune the fingerprint reads: a few dozen blocks from its largest tensors
 *  tell a related base (normalized bit distance ~0.05 for ft-a) from an unrelated one (>0.3)
 *  with a wide margin, and each Range request costs a round trip. */
const FINGERPRINT_BYTES = 64 * 1024;
/** Bases up to this size are held in memory by the worker once used (Blob slices from the
 *  Cache API cost more than the decoding itself). */
const IN_MEMORY = 256 * 1024 * 1024;
/** Outputs up to this size are assembled in memory and hashed with WebCrypto; larger ones are
 *  kept as Blob parts and hashed by zipllm as they stream. */
const ASSEMBLE = 1024 * 1024 * 1024;

/**
 * A Blob as a ByteSource that reads ahead: the rebuild asks for the base chunk by chunk, mostly
 * contiguously, so while one chunk decodes the bytes after it are already being read.
 */
function readAhead(blob) {
  let next = null; // { start, end, bytes: Promise<Uint8Array> }
  const read = (start, end) => blob.slice(start, end).arrayBuffer().then((b) => new Uint8Array(b));
  return async (offset, length) => {
    const end = offset + length;
    let bytes;
    if (next && next.start === offset && next.end >= end) {
      const got = await next.bytes;
      bytes = got.subarray(0, length);
    } else {
      bytes = await read(offset, end);
    }
    const ahead = Math.min(blob.size, end + Math.max(length, 4 << 20));
    next = end < ahead ? { start: end, end: ahead, bytes: read(end, ahead) } : null;
    return bytes;
  };
}

/** A small safetensors file of one bf16 tensor: random weights, or `from`'s weights with about
 *  a third of them nudged by one unit in the last place, as a fine-tune does. */
function syntheticModel(words, from) {
  let json = JSON.stringify({ w: { dtype: 'BF16', shape: [words], data_offsets: [0, 2 * words] } });
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const out = new Uint8Array(8 + json.length + 2 * words);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(new TextEncoder().encode(json), 8);
  const w = new Uint16Array(out.buffer, 8 + json.length, words);
  let x = 0x9e3779b9;
  for (let i = 0; i < words; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    if (from) w[i] = from[i] + ((x & 3) === 0 ? 1 : 0) - ((x & 3) === 1 ? 1 : 0);
    else w[i] = 0x3c00 | (x & 0x807f);
  }
  return { bytes: out, words: w };
}

/**
 * Warms the codec up: browsers first run wasm with a baseline compiler and optimize the hot
 * functions only after they have run a while, so a first rebuild would be about twice as slow
 * as the next. Rebuilding a small synthetic fine-tune at start-up (tens of milliseconds, while
 * the user looks at the page) gets that done before it matters.
 */
async function warmUp() {
  await ready;
  const base = syntheticModel(2 << 20);
  const target = syntheticModel(2 << 20, base.words);
  const delta = zipllm.encode(base.bytes, target.bytes);
  for (let i = 0; i < 3; i++) for await (const _ of zipllm.rebuild({ base: base.bytes, delta })) void _;
}

/** Bases held in memory, by URL. */
const inMemory = new Map();

/** The cached base at `url` as the rebuild reads it: in memory when small enough, else a Blob
 *  read ahead. */
async function baseSource(url) {
  if (inMemory.has(url)) return inMemory.get(url);
  const hit = await (await caches.open(BASES)).match(url);
  if (!hit) throw Object.assign(new Error(`${url} is not cached`), { code: 'INVALID_INPUT' });
  const blob = await hit.blob();
  if (blob.size > IN_MEMORY) return readAhead(blob);
  const bytes = new Uint8Array(await blob.arrayBuffer());
  inMemory.set(url, bytes);
  return bytes;
}

const running = new Map();

/** The delta the network worker is downloading, as a stream read over `port` (see
 *  net-worker.js): each read gets everything that arrived since the last one. */
function deltaFrom(port) {
  let answer = () => {};
  port.onmessage = ({ data }) => answer(data);
  return new ReadableStream(
    {
      async pull(c) {
        const data = await new Promise((resolve) => {
          answer = resolve;
          port.postMessage('pull');
        });
        if (data.bytes) return c.enqueue(data.bytes);
        port.close();
        if (data.end) c.close();
        else c.error(Object.assign(new Error(data.error.message), { code: data.error.code }));
      },
      cancel() {
        port.postMessage('cancel');
        port.close();
      },
    },
    { highWaterMark: 0 },
  );
}

/**
 * The output buffer of the next rebuild, written through once so that its pages are mapped:
 * a fresh 45 MB buffer costs a rebuild some 30 ms of page faults. A rebuild takes it (and
 * hands it to the page); the page has the next made (op `refill`) once it is done with the
 * file, while nothing waits.
 */
const spare = {
  size: 0,
  buffer: null,
  take(size) {
    const b = this.buffer?.length >= size ? this.buffer : null;
    this.buffer = null;
    return b ? b.subarray(0, size) : new Uint8Array(size);
  },
  refill() {
    if (!this.buffer && this.size) this.buffer = new Uint8Array(this.size).fill(0);
  },
};

const ops = {
  /** Which hub files are in the caches. */
  async status({ urls }) {
    const [bases, models] = await Promise.all([caches.open(BASES), caches.open(MODELS)]);
    const out = {};
    for (const u of urls) out[u] = { base: !!(await bases.match(u)), model: !!(await models.match(u)) };
    return out;
  },

  /** Downloads a base into the Cache API unless it is there already, checking its sha256. */
  async ensureBase({ url, size, sha256 }, progress) {
    const cache = await caches.open(BASES);
    if (await cache.match(url)) return { downloaded: 0 };
    const bytes = await readAll(await fetchOk(url, { cache: 'no-store' }), size, (n) => progress({ phase: 'base', bytes: n, total: size }));
    progress({ phase: 'base', bytes: size, total: size }, true);
    const got = await sha256Hex(bytes);
    if (got !== sha256) throw Object.assign(new Error(`base ${url}: sha256 ${got}, the hub says ${sha256}`), { code: 'IO' });
    await cache.put(url, new Response(bytes, { headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) } }));
    return { downloaded: size };
  },

  /**
   * Which base a fine-tune comes from: fingerprints it on the hub (a sample, by Range) and
   * matches it against the bases on this device, then — if none is related and has a delta —
   * against the hub's other bases, remotely. Returns the ranked verdicts and the pick.
   */
  async identify({ hub, path, catalog }) {
    await ready;
    const entry = catalog.files[path];
    const fp = await zipllm.fingerprintRemote(hub + path, { maxBytes: FINGERPRINT_BYTES });
    const cache = await caches.open(BASES);
    const local = [];
    const others = [];
    for (const [p, f] of Object.entries(catalog.files)) {
      if (f.kind !== 'base') continue;
      const hit = await cache.match(hub + p);
      if (hit) local.push({ name: p, source: await hit.blob() });
      else others.push({ name: p, source: remote(hub + p) });
    }
    const usable = (v) => v.verdict === 'related' && entry.deltas[v.candidate];
    let verdicts = local.length ? await zipllm.matchFamily(fp, local) : [];
    if (!verdicts.some(usable) && others.length) verdicts = [...verdicts, ...(await zipllm.matchFamily(fp, others))];
    return { verdicts, best: verdicts.find(usable)?.candidate ?? null, fingerprintBytes: fp.bytesRead };
  },

  /**
   * Rebuilds `path` from the cached base `base` and the delta the network worker downloads
   * (`delta`: the port to it), and checks its sha256 against the hub's; the page keeps it in
   * the cache. Every 4 MiB chunk is checked against its blake3 inside rebuild; the whole
   * file's sha256 is taken with WebCrypto (hardware SHA, faster than hashing in wasm) when the
   * file fits in memory, else by zipllm as it streams.
   */
  async rebuild({ hub, path, base, catalog, id, delta }, progress) {
    const abort = new AbortController();
    running.set(id, abort);
    const started = performance.now();
    const input = deltaFrom(delta);
    try {
      await ready;
      const entry = catalog.files[path];
      const deltaSize = entry.deltas[base].size;
      const source = await baseSource(hub + base);
      let downloaded = 0;
      let rebuilt = 0;
      let deltaDoneMs = 0;
      const report = (force) => progress({ phase: 'rebuild', downloaded, deltaSize, rebuilt, size: entry.size }, force);
      const counted = input.pipeThrough(
        new TransformStream({
          transform(chunk, c) {
            downloaded += chunk.length;
            report(false);
            c.enqueue(chunk);
          },
          flush() {
            deltaDoneMs = performance.now() - started;
          },
        }),
        { signal: abort.signal },
      );
      const assemble = entry.size <= ASSEMBLE;
      const parts = assemble ? spare.take(entry.size) : [];
      let last;
      // Assembled: rebuild writes straight into `parts` (a fresh buffer per chunk costs more
      // than a quarter of the rebuild in Chromium); a file longer than `parts` is an error.
      const stream = zipllm.rebuild({ base: source, baseSize: catalog.files[base].size, delta: counted, fullHash: !assemble, into: assemble ? parts : undefined, onProgress: (p) => (last = p) });
      for await (const chunk of stream) {
        abort.signal.throwIfAborted();
        if (!assemble) parts.push(chunk);
        rebuilt += chunk.length;
        report(false);
      }
      report(true);
      const rebuiltAt = performance.now();
      const sha256 = assemble ? await sha256Hex(parts) : last.sha256;
      const verifyMs = performance.now() - rebuiltAt;
      if (rebuilt !== entry.size || sha256 !== entry.sha256) {
        throw Object.assign(new Error(`rebuilt ${rebuilt} bytes with sha256 ${sha256}; the hub lists ${entry.size} bytes, ${entry.sha256}`), { code: 'CORRUPT_DELTA' });
      }
      // The bytes go to the page without a copy (transferred); it keeps them in the cache.
      return { size: rebuilt, sha256, deltaBytes: downloaded, deltaDoneMs, rebuildMs: rebuiltAt - started, verifyMs, bytes: assemble ? parts : new Blob(parts) };
    } finally {
      running.delete(id);
      abort.abort(); // stops reading the delta if it is still coming (an error, a discarded guess)
      input.cancel().catch(() => {}); // when the rebuild failed before reading it
    }
  },

  /** Gets ready to identify bases: runs the fingerprint and match code once on a cached base
   *  (`url`), so that the first real identification runs optimized code (see warmUp). */
  async warmFamily({ url }) {
    await ready;
    const hit = url && (await (await caches.open(BASES)).match(url));
    if (!hit) return {};
    const blob = await hit.blob();
    const fp = await zipllm.fingerprint(blob);
    for (let i = 0; i < 3; i++) await zipllm.matchFamily(fp, [blob]);
    return {};
  },

  /** Gets ready for a rebuild from `bases` (cached URLs) of files up to `outputSize` bytes:
   *  warms the codec, loads the bases, makes the first output buffer. */
  async prepare({ bases, outputSize }) {
    const t = performance.now();
    spare.size = Math.min(outputSize, ASSEMBLE);
    spare.refill();
    await warmUp();
    for (const url of bases) await baseSource(url);
    return { ms: performance.now() - t };
  },

  /** Makes the next rebuild's output buffer (see spare). */
  async refill() {
    spare.refill();
    return {};
  },

  /** Stops a running rebuild (a guess the match did not confirm). */
  async abort({ target }) {
    running.get(target)?.abort();
    return {};
  },

  /** Times the plain download of a whole file, checked against the hub's sha256 as the delta
   *  path is (not kept), for the comparison. */
  async fullDownload({ url, size, sha256 }, progress) {
    const t = performance.now();
    const bytes = await readAll(await fetchOk(url, { cache: 'no-store' }), size, (n) => progress({ phase: 'full', bytes: n, total: size }));
    progress({ phase: 'full', bytes: size, total: size }, true);
    const downloadMs = performance.now() - t;
    if ((await sha256Hex(bytes)) !== sha256) throw Object.assign(new Error(`${url} does not have the sha256 the hub lists`), { code: 'IO' });
    return { ms: performance.now() - t, downloadMs, bytes: size };
  },

  async clear() {
    await Promise.all([caches.delete(BASES), caches.delete(MODELS)]);
    inMemory.clear();
    return {};
  },
};

self.onmessage = async ({ data: { id, op, args } }) => {
  try {
    const result = await ops[op]({ id, ...args }, throttled(id));
    post(id, { result }, ArrayBuffer.isView(result?.bytes) ? [result.bytes.buffer] : []);
  } catch (e) {
    post(id, { error: { code: e.code || 'ERROR', message: e.message || String(e) } });
  }
};
