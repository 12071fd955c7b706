// A small static file server for the browser tests (and the demo): serves the repository's
// files with correct MIME types, HTTP Range support, and optional bandwidth throttling.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.css': 'text/css',
};

/** Serves `root`, `mounts` mapping URL prefixes to other folders. Returns { server, url, stats }. */
export async function startServer({ root, mounts = {}, bytesPerSecond = 0, port = 0 }) {
  const stats = { bytes: 0, requests: 0, byPath: {} };
  const resolveFile = (urlPath) => {
    for (const [prefix, dir] of Object.entries(mounts)) {
      if (urlPath.startsWith(prefix)) return path.join(dir, urlPath.slice(prefix.length));
    }
    return path.join(root, urlPath);
  };
  const server = http.createServer((req, res) => {
    const urlPath = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    let file = resolveFile(urlPath);
    if (urlPath.endsWith('/')) file = path.join(file, 'index.html');
    if (!file.startsWith(root) && !Object.values(mounts).some((d) => file.startsWith(d))) return res.writeHead(403).end();
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) return res.writeHead(404).end();
      stats.requests++;
      const headers = { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream', 'accept-ranges': 'bytes', 'cache-control': 'no-cache' };
      let start = 0;
      let end = st.size - 1;
      const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range || '');
      if (m) {
        start = Number(m[1]);
        end = m[2] ? Math.min(Number(m[2]), st.size - 1) : st.size - 1;
        res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${st.size}`, 'content-length': end - start + 1 });
      } else {
        res.writeHead(200, { ...headers, 'content-length': st.size });
      }
      if (req.method === 'HEAD' || st.size === 0) return res.end();
      const stream = fs.createReadStream(file, { start, end, highWaterMark: 256 * 1024 });
      let sentAt = Date.now();
      let budget = 0;
      stream.on('data', (chunk) => {
        stats.bytes += chunk.length;
        stats.byPath[urlPath] = (stats.byPath[urlPath] || 0) + chunk.length;
        if (!bytesPerSecond) return;
        // Token bucket: pause until the link would have carried this chunk.
        budget += chunk.length;
        const due = sentAt + (budget / bytesPerSecond) * 1000;
        const wait = due - Date.now();
        if (wait > 0) {
          stream.pause();
          setTimeout(() => stream.resume(), wait);
        }
      });
      stream.pipe(res);
      res.on('close', () => stream.destroy());
      sentAt = Date.now();
    });
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${server.address().port}`, stats };
}
