// An edge worker (Cloudflare Workers module syntax) that serves fine-tuned models rebuilt on the
// fly from a base and a delta: `GET /<model>/<file>` answers with the file, streamed, byte for
// byte what the hub holds, with its sha256 as ETag and HTTP Range support. Memory stays bounded
// by a few 4 MiB chunks whatever the model's size.
//
// Bindings (wrangler.toml):
//   MODELS   an R2 bucket holding the hub's files and catalog.json (www/hub.mjs's layout), or
//   ORIGIN   a URL (string) or a Fetcher (service binding) serving the same layout over HTTP
//   CATALOG  optional KV namespace with the catalog under the key "catalog.json"
//
// Errors are JSON bodies { error, message }: 404 for an unknown file, 416 for a range outside
// it, 500 when the delta or the base is wrong (WRONG_BASE, CORRUPT_DELTA, ...) and 502 when the
// store fails. Those found before the first byte is sent (the base's identity, the first chunk)
// get their status; one found later aborts the response, which carries a Content-Length, so a
// client never takes a truncated body for a complete file.
import init, { describe, rebuild, rebuildRangeStream, wasmMemoryBytes } from '../../pkg/web/zipllm.js';
import wasm from '../../pkg/web/zipllm_bg.wasm';

let ready;
let catalogCache;
let catalogAt = 0;
const CATALOG_TTL_MS = 60_000;

/** Reads through an R2 bucket: `open(key, offset, length)` → { body, size } or null. */
function r2Store(bucket) {
  return {
    async open(key, offset = 0, length) {
      const range = length === undefined ? (offset ? { offset } : undefined) : { offset, length };
      const o = await bucket.get(key, range ? { range } : {});
      return o && { body: o.body, size: o.size };
    },
  };
}

/** Reads through HTTP: a base URL or a service binding's Fetcher. */
function originStore(origin) {
  const get = typeof origin === 'string' ? (url, init) => fetch(url, init) : (url, init) => origin.fetch(url, init);
  const base = typeof origin === 'string' ? origin.replace(/\/?$/, '/') : 'https://origin/';
  return {
    async open(key, offset = 0, length) {
      const headers = {};
      if (offset || length !== undefined) headers.Range = `bytes=${offset}-${length === undefined ? '' : offset + length - 1}`;
      const r = await get(base + key.split('/').map(encodeURIComponent).join('/'), { headers });
      if (r.status === 404) return null;
      if (!r.ok) throw storeError(`${key}: the origin answered ${r.status}`);
      if (headers.Range && r.status !== 206) throw storeError(`${key}: the origin ignored a Range request`);
      const total = r.headers.get('content-range')?.split('/')[1] ?? r.headers.get('content-length');
      return { body: r.body, size: Number(total) };
    },
  };
}

function storeError(message) {
  return Object.assign(new Error(message), { code: 'STORE' });
}

async function bytesOf(body) {
  return new Uint8Array(await new Response(body).arrayBuffer());
}

/**
 * A ByteSource over a stored object that serves increasing reads from one open stream, so a
 * rebuild costs a handful of subrequests instead of one per chunk; a backward or far jump
 * reopens it at the new offset.
 */
function sequentialReader(store, key) {
  let reader = null;
  let at = 0; // offset of the next byte `reader` yields
  let left = null; // bytes read past the last request
  const reopen = async (offset) => {
    await reader?.cancel().catch(() => {});
    const o = await store.open(key, offset);
    if (!o) throw storeError(`${key} vanished from the store`);
    reader = o.body.getReader();
    at = offset;
    left = null;
  };
  const SKIP = 8 << 20;
  return async (offset, length) => {
    if (!reader || offset < at - (left?.length ?? 0) || offset > at + SKIP) await reopen(offset);
    // Drop what lies before `offset`.
    let pos = at - (left?.length ?? 0);
    if (left && offset > pos) {
      left = left.subarray(Math.min(left.length, offset - pos));
      pos = offset;
    }
    const out = new Uint8Array(length);
    let filled = 0;
    while (filled < length) {
      let chunk = left;
      left = null;
      if (!chunk || chunk.length === 0) {
        const { done, value } = await reader.read();
        if (done) throw storeError(`${key} ended at byte ${at}, before ${offset + length}`);
        chunk = value;
        pos = at;
        at += value.length;
      }
      if (pos < offset) {
        const skip = Math.min(chunk.length, offset - pos);
        chunk = chunk.subarray(skip);
        pos += skip;
        if (chunk.length === 0) continue;
      }
      const take = Math.min(chunk.length, length - filled);
      out.set(chunk.subarray(0, take), filled);
      filled += take;
      pos += take;
      if (take < chunk.length) left = chunk.subarray(take);
    }
    return out;
  };
}

/** A ByteSource reading each range with its own request (for the few reads of a manifest). */
const rangedReader = (store, key) => async (offset, length) => {
  const o = await store.open(key, offset, length);
  if (!o) throw storeError(`${key} vanished from the store`);
  return bytesOf(o.body);
};

async function loadCatalog(env, store) {
  if (catalogCache && Date.now() - catalogAt < CATALOG_TTL_MS) return catalogCache;
  let text;
  if (env.CATALOG) text = await env.CATALOG.get('catalog.json');
  if (!text) {
    const o = await store.open('catalog.json');
    if (!o) throw storeError('catalog.json is missing from the store');
    text = new TextDecoder().decode(await bytesOf(o.body));
  }
  catalogCache = JSON.parse(text);
  catalogAt = Date.now();
  return catalogCache;
}

const json = (status, body, headers = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers } });

const fail = (status, error, message, headers = {}) => json(status, { error, message }, headers);

/** Parses a single `bytes=` range against `size`: null (none or several), 'invalid', or [start, end). */
function parseRange(header, size) {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return header.includes(',') ? null : 'invalid';
  if (m[1] === '') {
    const n = Number(m[2]);
    return n > 0 && m[2] !== '' ? [Math.max(0, size - n), size] : 'invalid';
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size : Math.min(Number(m[2]) + 1, size);
  return start < size && start < end ? [start, end] : 'invalid';
}

/**
 * Pulls the first part of `stream` before answering (that is where a wrong base or a corrupt
 * delta shows first), then streams the rest through a FixedLengthStream so the response has a
 * Content-Length and a later error aborts it visibly. Returns the body, or throws the first
 * error.
 */
async function checkedBody(stream, length) {
  const reader = stream.getReader();
  const first = await reader.read();
  const { readable, writable } = new FixedLengthStream(length);
  (async () => {
    const writer = writable.getWriter();
    try {
      if (!first.done) await writer.write(first.value);
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        await writer.write(value);
      }
      await writer.close();
    } catch (e) {
      console.error(`rebuild failed mid-response: ${e.code || ''} ${e.message}`);
      await writer.abort(e).catch(() => {});
      await reader.cancel(e).catch(() => {});
    }
  })();
  return readable;
}

async function serve(request, env) {
  const store = env.MODELS ? r2Store(env.MODELS) : env.ORIGIN ? originStore(env.ORIGIN) : null;
  if (!store) return fail(500, 'CONFIG', 'bind an R2 bucket as MODELS or an origin as ORIGIN');
  const url = new URL(request.url);
  const key = decodeURIComponent(url.pathname.replace(/^\/+/, ''));
  // Linear memory only grows, so this is also the peak (for tests and dashboards).
  if (url.pathname === '/__stats' && env.STATS === 'on') return json(200, { wasmMemoryBytes: ready ? wasmMemoryBytes() : 0 });
  if (request.method !== 'GET' && request.method !== 'HEAD') return fail(405, 'METHOD', 'only GET and HEAD', { allow: 'GET, HEAD' });
  const catalog = await loadCatalog(env, store);
  const entry = catalog.files[key];
  if (!entry) return fail(404, 'NOT_FOUND', `no file ${key} in this hub`);

  const [baseKey, delta] = Object.entries(entry.deltas ?? {})[0] ?? [];
  if (!delta) {
    // A base: served as stored.
    const range = parseRange(request.headers.get('range'), entry.size);
    if (range === 'invalid') return fail(416, 'RANGE', `the file has ${entry.size} bytes`, { 'content-range': `bytes */${entry.size}` });
    const o = await store.open(key, range?.[0] ?? 0, range ? range[1] - range[0] : undefined);
    if (!o) return fail(502, 'STORE', `${key} is listed but not stored`);
    const headers = { 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes', etag: `"${entry.sha256}"` };
    if (range) return new Response(o.body, { status: 206, headers: { ...headers, 'content-length': String(range[1] - range[0]), 'content-range': `bytes ${range[0]}-${range[1] - 1}/${entry.size}` } });
    return new Response(o.body, { headers: { ...headers, 'content-length': String(entry.size) } });
  }

  ready ??= init({ module_or_path: wasm });
  await ready;
  const deltaBytes = rangedReader(store, delta.path);
  const info = await describe(deltaBytes);
  const size = info.targetSize;
  const etag = `"${info.targetSha256}"`;
  const headers = {
    'content-type': 'application/octet-stream',
    'accept-ranges': 'bytes',
    etag,
    'cache-control': 'public, max-age=31536000, immutable',
    'x-zipllm-delta-bytes': String(info.deltaSize),
  };
  const inm = request.headers.get('if-none-match');
  if (inm && inm.split(',').some((t) => t.trim().replace(/^W\//, '') === etag)) return new Response(null, { status: 304, headers: { etag } });

  let range = parseRange(request.headers.get('range'), size);
  const ifRange = request.headers.get('if-range');
  if (range && ifRange && ifRange !== etag) range = null;
  if (range === 'invalid') return fail(416, 'RANGE', `the file has ${size} bytes`, { 'content-range': `bytes */${size}` });
  const [start, end] = range ?? [0, size];
  const status = range ? 206 : 200;
  const out = { ...headers, 'content-length': String(end - start) };
  if (range) out['content-range'] = `bytes ${start}-${end - 1}/${size}`;
  if (request.method === 'HEAD') return new Response(null, { status, headers: out });

  // Every 4 MiB chunk is checked against its blake3 in the delta's manifest before it is sent.
  const base = sequentialReader(store, baseKey);
  const stream = range
    ? await rebuildRangeStream({ base, baseSize: info.baseSize, delta: sequentialReader(store, delta.path), start, end })
    : rebuild({ base, baseSize: info.baseSize, delta: (await store.open(delta.path)).body, fullHash: false });
  return new Response(await checkedBody(stream, end - start), { status, headers: out });
}

export default {
  async fetch(request, env) {
    try {
      return await serve(request, env);
    } catch (e) {
      const status = e.code === 'STORE' || e.code === 'IO' ? 502 : 500;
      return fail(status, e.code || 'INTERNAL', e.message || String(e));
    }
  },
};
