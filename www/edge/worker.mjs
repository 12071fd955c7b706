// An edge worker (Cloudflare Workers module syntax) that serves fine-tuned models rebuilt on the
// fly from a base and a delta: `GET /<model>/<file>` answers with the file, streamed, byte for
// byte what the hub holds, with its sha256 as ETag and HTTP Range support. Memory stays bounded
// by a few 4 MiB chunks whatever the model's size.
//
// Bindings (wrangler.toml):
//   MODELS   an R2 bucket holding the hub's files and catalog.json (www/hub.mjs's layout), or
//   ORIGIN   a URL (string) or a Fetcher (service binding) serving the same layout over HTTP
//   CATALOG  optional KV namespace with the catalog under the key "catalog.json"
//   STATS    "on" adds /__stats (wasm memory in use)
//
// Errors are JSON bodies { error, message }: 400 for a malformed path, 404 for an unknown file,
// 416 for a range outside it, 500 when the delta or the base is wrong (WRONG_BASE,
// CORRUPT_DELTA, ...) and 502 when the store fails. Those found before the first byte is sent
// (the base's identity, the first chunk) get their status; one found later aborts the
// response, which carries a Content-Length, so a client never takes a truncated body for a
// complete file.
import init, { describe, rebuild, rebuildRangeStream, wasmMemoryBytes } from '../../pkg/web/zipllm.js';
import wasm from '../../pkg/web/zipllm_bg.wasm';
import { parseRange } from '../range.mjs';

let ready;
let catalogCache;
let catalogAt = 0;
const CATALOG_TTL_MS = 60_000;
/** Forward jumps up to this are read through rather than reopened. */
const SKIP = 8 << 20;

function storeError(message) {
  return Object.assign(new Error(message), { code: 'STORE' });
}

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
      const fail = (message) => {
        r.body?.cancel().catch(() => {});
        throw storeError(message);
      };
      if (r.status === 404) {
        r.body?.cancel().catch(() => {});
        return null;
      }
      if (!r.ok) fail(`${key}: the origin answered ${r.status}`);
      if (headers.Range && r.status !== 206) fail(`${key}: the origin ignored a Range request`);
      const total = r.headers.get('content-range')?.split('/')[1] ?? r.headers.get('content-length');
      return { body: r.body, size: Number(total) };
    },
  };
}

async function bytesOf(body) {
  return new Uint8Array(await new Response(body).arrayBuffer());
}

/**
 * A ByteSource over a stored object that serves increasing reads from one open stream, so a
 * rebuild costs a handful of subrequests instead of one per chunk; a backward or far jump
 * reopens it at the new offset. The first bytes read (a delta's manifest) are kept, since a
 * delta is opened twice (describe, then the rebuild). `close()` releases the stream.
 */
function sequentialReader(store, key) {
  let reader = null;
  let at = 0; // offset of the next byte `reader` yields
  let left = null; // bytes read past the last request, ending at `at`
  let head = null; // a copy of the object's first bytes, once read
  const close = () => {
    reader?.cancel().catch(() => {});
    reader = null;
    left = null;
  };
  const reopen = async (offset) => {
    close();
    const o = await store.open(key, offset);
    if (!o) throw storeError(`${key} vanished from the store`);
    reader = o.body.getReader();
    at = offset;
  };
  const read = async (offset, length) => {
    if (head && offset + length <= head.length) return head.slice(offset, offset + length);
    const from = at - (left?.length ?? 0);
    if (!reader || offset < from || offset > at + SKIP) await reopen(offset);
    let pos = at - (left?.length ?? 0);
    const out = new Uint8Array(length);
    let filled = 0;
    while (filled < length) {
      let chunk = left;
      left = null;
      if (!chunk || chunk.length === 0) {
        let next;
        try {
          next = await reader.read();
        } catch (e) {
          throw storeError(`${key}: ${e.message}`);
        }
        if (next.done) throw storeError(`${key} ended at byte ${at}, before ${offset + length}`);
        chunk = next.value;
        pos = at;
        at += chunk.length;
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
    if (offset === 0 && length <= 1 << 20) head = out.slice();
    return out;
  };
  read.close = close;
  return read;
}

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

/**
 * Pulls the first part of `stream` before answering (that is where a wrong base or a corrupt
 * delta shows first), then streams the rest through a FixedLengthStream so the response has a
 * Content-Length and a later error aborts it visibly. Returns the body, or throws the first
 * error. `done` runs when the body ends either way.
 */
async function checkedBody(stream, length, done) {
  const reader = stream.getReader();
  let first;
  try {
    first = await reader.read();
  } catch (e) {
    done();
    throw e;
  }
  const { readable, writable } = new FixedLengthStream(length);
  (async () => {
    const writer = writable.getWriter();
    try {
      if (!first.done) await writer.write(first.value);
      for (;;) {
        const { done: end, value } = await reader.read();
        if (end) break;
        await writer.write(value);
      }
      await writer.close();
    } catch (e) {
      console.error(`rebuild failed mid-response: ${e.code || ''} ${e.message}`);
      await writer.abort(e).catch(() => {});
      await reader.cancel(e).catch(() => {});
    } finally {
      done();
    }
  })();
  return readable;
}

/**
 * The HTTP semantics shared by every file: HEAD, If-None-Match (304), Range with If-Range
 * (206/416). Returns a finished Response, or { start, end, status, headers } to send.
 */
function negotiate(request, size, sha256) {
  const etag = `"${sha256}"`;
  const headers = {
    'content-type': 'application/octet-stream',
    'accept-ranges': 'bytes',
    etag,
    'cache-control': 'public, max-age=31536000, immutable',
  };
  const inm = request.headers.get('if-none-match');
  if (inm && (inm.trim() === '*' || inm.split(',').some((t) => t.trim().replace(/^W\//, '') === etag))) {
    return new Response(null, { status: 304, headers: { etag, 'cache-control': headers['cache-control'] } });
  }
  let range = parseRange(request.headers.get('range'), size);
  const ifRange = request.headers.get('if-range');
  if (range && ifRange && ifRange !== etag) range = null;
  if (range === 'invalid') return fail(416, 'RANGE', `the file has ${size} bytes`, { 'content-range': `bytes */${size}` });
  const [start, end] = range ? [range.start, range.end + 1] : [0, size];
  const out = { ...headers, 'content-length': String(end - start) };
  if (range) out['content-range'] = `bytes ${start}-${end - 1}/${size}`;
  const status = range ? 206 : 200;
  if (request.method === 'HEAD') return new Response(null, { status, headers: out });
  return { start, end, status, headers: out, ranged: !!range };
}

async function serve(request, env) {
  const store = env.MODELS ? r2Store(env.MODELS) : env.ORIGIN ? originStore(env.ORIGIN) : null;
  if (!store) return fail(500, 'CONFIG', 'bind an R2 bucket as MODELS or an origin as ORIGIN');
  const url = new URL(request.url);
  if (url.pathname === '/__stats' && env.STATS === 'on') return json(200, { wasmMemoryBytes: ready ? wasmMemoryBytes() : 0 });
  if (request.method !== 'GET' && request.method !== 'HEAD') return fail(405, 'METHOD', 'only GET and HEAD', { allow: 'GET, HEAD' });
  let key;
  try {
    key = decodeURIComponent(url.pathname.replace(/^\/+/, ''));
  } catch {
    return fail(400, 'BAD_PATH', `${url.pathname} is not a valid path`);
  }
  const catalog = await loadCatalog(env, store);
  const entry = Object.hasOwn(catalog.files, key) ? catalog.files[key] : null;
  if (!entry) return fail(404, 'NOT_FOUND', `no file ${key} in this hub`);

  const [baseKey, delta] = Object.entries(entry.deltas ?? {})[0] ?? [];
  if (!delta) {
    // A base: served as stored.
    const n = negotiate(request, entry.size, entry.sha256);
    if (n instanceof Response) return n;
    const o = await store.open(key, n.start, n.ranged ? n.end - n.start : undefined);
    if (!o) return fail(502, 'STORE', `${key} is listed but not stored`);
    return new Response(o.body, { status: n.status, headers: n.headers });
  }

  ready ??= init({ module_or_path: wasm }).catch((e) => {
    ready = undefined;
    throw e;
  });
  await ready;
  const deltaReader = sequentialReader(store, delta.path);
  const base = sequentialReader(store, baseKey);
  const release = () => {
    deltaReader.close();
    base.close();
  };
  try {
    const info = await describe(deltaReader);
    if (!Object.hasOwn(catalog.files, baseKey)) {
      throw Object.assign(new Error(`the catalog lists ${delta.path} against ${baseKey} but not ${baseKey} itself`), { code: 'CONFIG' });
    }
    const baseSize = catalog.files[baseKey].size;
    if (baseSize !== info.baseSize) {
      throw Object.assign(new Error(`${delta.path} was made against a base of ${info.baseSize} bytes; ${baseKey} has ${baseSize}`), { code: 'WRONG_BASE' });
    }
    const n = negotiate(request, info.targetSize, info.targetSha256);
    if (n instanceof Response) {
      release();
      return n;
    }
    n.headers['x-zipllm-delta-bytes'] = String(info.deltaSize);
    // Every 4 MiB chunk is checked against its blake3 in the delta's manifest before it is sent.
    let stream;
    if (n.ranged) {
      stream = await rebuildRangeStream({ base, baseSize: info.baseSize, delta: deltaReader, start: n.start, end: n.end });
    } else {
      deltaReader.close();
      const whole = await store.open(delta.path);
      if (!whole) throw storeError(`${delta.path} vanished from the store`);
      stream = rebuild({ base, baseSize: info.baseSize, delta: whole.body, fullHash: false });
    }
    return new Response(await checkedBody(stream, n.end - n.start, release), { status: n.status, headers: n.headers });
  } catch (e) {
    release();
    throw e;
  }
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
