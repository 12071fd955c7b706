// Benchmark worker: holds the base and delta; rebuilds the whole file through the streaming
// rebuild, or part k of n of it (every n-th chunk), into a buffer of its own.
import init, { describe, rebuild } from '/pkg/web/zipllm.js';

let base;
let delta;
let out;
self.onmessage = async ({ data }) => {
  try {
    await init();
    if (data.base) {
      base = data.base;
      delta = data.delta;
      return self.postMessage({ ok: true });
    }
    if (data.stream) {
      // The whole file through the streaming rebuild, on this one thread, best of `runs`.
      let best = Infinity;
      let size = 0;
      const into = data.into ? new Uint8Array((await describe(delta)).targetSize) : undefined;
      for (let i = 0; i < data.runs; i++) {
        const t = performance.now();
        size = 0;
        for await (const c of rebuild({ base, delta, fullHash: data.fullHash, into })) size += c.length;
        best = Math.min(best, performance.now() - t);
      }
      return self.postMessage({ mbPerS: size / 1e3 / best });
    }
    out ??= new Uint8Array((await describe(delta)).targetSize);
    let length = 0;
    for await (const c of rebuild({ base, delta, fullHash: false, into: out, part: data.part })) length += c.length;
    self.postMessage({ length });
  } catch (e) {
    self.postMessage({ error: `${e.code}: ${e.message}` });
  }
};
