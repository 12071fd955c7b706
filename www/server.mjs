// A small static file server for the demo and the browser tests: correct MIME types, HTTP
// Range, and an optional simulated link — one shared bandwidth budget for every response, as a
// real connection has, so parallel requests do not each get the full rate.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { parseRange } from './range.mjs';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.css': 'text/css; charset=utf-8',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
};

const CHUNK = 64 * 1024;

/**
 * Serves `root`, with `mounts` mapping URL prefixes to other folders. `mbps` (MB/s, 0 for
 * unlimited) simulates the link; it can be changed at run time with `PUT /__link?mbps=N` and
 * read with `GET /__link`. Returns { server, url, stats, link }.
 */
export async function startServer({ root, mounts = {}, mbps = 0, port = 0, host = '127.0.0.1' }) {
  const stats = { bytes: 0, requests: 0, byPath: {} };
  const link = { mbps, freeAt: 0 };
  const dirs = [root, ...Object.values(mounts)].map((d) => path.resolve(d));
  const resolveFile = (urlPath) => {
    for (const [prefix, dir] of Object.entries(mounts)) {
      if (urlPath.startsWith(prefix)) return path.resolve(dir, `.${urlPath.slice(prefix.length - 1)}`);
    }
    return path.resolve(root, `.${urlPath}`);
  };
  // How long to wait until the shared link has carried `n` more bytes. Timers fire late, so a
  // sender that fell behind may catch up by up to BURST_MS: the average rate stays exact.
  const BURST_MS = 5;
  const reserve = (n) => {
    if (!link.mbps) return 0;
    const now = performance.now();
    link.freeAt = Math.max(link.freeAt, now - BURST_MS) + (n / (link.mbps * 1e6)) * 1000;
    return link.freeAt - now;
  };

  // Copies `stream` to `res` no faster than the link allows (pipe() would resume the stream
  // on every drain, defeating the throttle) and stops when the client goes away.
  const send = async (stream, res, urlPath) => {
    let closed = false;
    res.on('close', () => {
      closed = true;
      stream.destroy();
    });
    for await (const chunk of stream) {
      if (closed) return;
      stats.bytes += chunk.length;
      stats.byPath[urlPath] = (stats.byPath[urlPath] || 0) + chunk.length;
      const wait = reserve(chunk.length);
      const drained = res.write(chunk)
        ? null
        : new Promise((resolve) => {
            const go = () => {
              res.off('drain', go);
              res.off('close', go);
              resolve();
            };
            res.on('drain', go);
            res.on('close', go);
          });
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      if (drained) await drained;
    }
    res.end();
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    let urlPath;
    try {
      urlPath = decodeURIComponent(url.pathname);
    } catch {
      return res.writeHead(400).end();
    }
    if (urlPath.includes('\0')) return res.writeHead(400).end();
    if (urlPath === '/__link') {
      if (req.method === 'PUT') link.mbps = Math.max(0, Number(url.searchParams.get('mbps')) || 0);
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      return res.end(JSON.stringify({ mbps: link.mbps }));
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return res.writeHead(405, { allow: 'GET, HEAD' }).end();
    let file = resolveFile(urlPath);
    if (urlPath.endsWith('/')) file = path.join(file, 'index.html');
    const inside = (d) => {
      const rel = path.relative(d, file);
      return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
    };
    if (!dirs.some(inside)) return res.writeHead(403).end();
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) return res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      stats.requests++;
      const headers = {
        'content-type': TYPES[path.extname(file)] || 'application/octet-stream',
        'accept-ranges': 'bytes',
        'cache-control': 'no-cache',
        'last-modified': st.mtime.toUTCString(),
      };
      const range = parseRange(req.headers.range, st.size);
      if (range === 'invalid') return res.writeHead(416, { ...headers, 'content-range': `bytes */${st.size}` }).end();
      const { start, end } = range || { start: 0, end: st.size - 1 };
      if (range) res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${st.size}`, 'content-length': end - start + 1 });
      else res.writeHead(200, { ...headers, 'content-length': st.size });
      if (req.method === 'HEAD' || st.size === 0) return res.end();
      send(fs.createReadStream(file, { start, end, highWaterMark: CHUNK }), res, urlPath).catch(() => res.destroy());
    });
  });
  await new Promise((r) => server.listen(port, host, r));
  return { server, url: `http://${host}:${server.address().port}`, stats, link };
}
