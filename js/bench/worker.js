// Benchmark worker: holds the base and delta, rebuilds the byte ranges it is asked for.
import init, { rebuildRange } from '/pkg/web/zipllm.js';

let base;
let delta;
self.onmessage = async ({ data }) => {
  try {
    await init();
    if (data.base) {
      base = data.base;
      delta = data.delta;
      return self.postMessage({ ok: true });
    }
    const bytes = await rebuildRange({ base, delta, start: data.start, end: data.end });
    self.postMessage({ length: bytes.length });
  } catch (e) {
    self.postMessage({ error: `${e.code}: ${e.message}` });
  }
};
