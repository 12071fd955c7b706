// A Web Worker rebuilding with the package: what a page does to keep its main thread free.
import init, * as zipllm from '/pkg/web/zipllm.js';

self.onmessage = async ({ data: { baseUrl, deltaUrl } }) => {
  try {
    await init();
    const base = await (await fetch(baseUrl)).blob();
    const started = performance.now();
    let last;
    let size = 0;
    for await (const chunk of zipllm.rebuild({ base, delta: await fetch(deltaUrl), onProgress: (p) => (last = p) })) {
      size += chunk.length;
    }
    const seconds = (performance.now() - started) / 1000;
    self.postMessage({ size, sha256: last.sha256, mbPerS: size / 1e6 / seconds });
  } catch (e) {
    self.postMessage({ error: `${e.code}: ${e.message}` });
  }
};
