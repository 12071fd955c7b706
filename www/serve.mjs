#!/usr/bin/env node
// Serves the demo: the page (www/), the package (pkg/web at /pkg/) and a model hub
// (.cache/hub at /hub/, built from www/hub.json), over a simulated link.
//
//   node www/serve.mjs [--port 8080] [--mbps 100] [--host 127.0.0.1] [--hub DIR]
//
// --mbps 0 serves at full local speed; the page can change the link while it runs.
import path from 'node:path';
import { parseArgs } from 'node:util';
import { buildHub, repoRoot } from './hub.mjs';
import { startServer } from './server.mjs';

/** Builds the hub and starts serving the demo; returns the server (see server.mjs). */
export async function serveDemo({ port = 0, mbps = 100, host = '127.0.0.1', hubDir = path.join(repoRoot, '.cache/hub'), log = () => {} } = {}) {
  const catalog = await buildHub({ hubDir, log });
  const site = await startServer({
    root: path.join(repoRoot, 'www'),
    mounts: { '/pkg/': path.join(repoRoot, 'pkg/web'), '/hub/': hubDir },
    mbps,
    port,
    host,
  });
  return { ...site, catalog, hubDir };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '8080' },
      mbps: { type: 'string', default: '100' },
      host: { type: 'string', default: '127.0.0.1' },
      hub: { type: 'string' },
    },
  });
  const site = await serveDemo({
    port: Number(values.port),
    mbps: Number(values.mbps),
    host: values.host,
    hubDir: values.hub ? path.resolve(values.hub) : undefined,
    log: (m) => console.log(`== ${m}`),
  });
  const link = site.link.mbps ? `a simulated ${site.link.mbps} MB/s link` : 'full local speed';
  console.log(`== zipllm demo: ${Object.keys(site.catalog.files).length} files in the hub, served over ${link}`);
  console.log(`\n   open ${site.url}/\n`);
  console.log('   (Ctrl-C stops the server)');
}
