// A module worker using the package as Cloudflare Workers load it: the wasm is imported as a
// module and passed to init(). It rebuilds the file from a base and a delta fetched from
// STORE_URL (a stand-in for R2 / KV / origin bindings), streaming, and serves byte ranges.
import init, { rebuild, rebuildRange } from './zipllm.js';
import wasm from './zipllm_bg.wasm';

let ready;

export default {
  async fetch(request, env) {
    ready ??= init({ module_or_path: wasm });
    await ready;
    const store = env.STORE_URL;
    const url = new URL(request.url);
    const baseUrl = `${store}${url.searchParams.get('base')}`;
    const deltaUrl = `${store}${url.searchParams.get('delta')}`;
    // Random access to the base through HTTP Range: nothing is held whole in the isolate.
    const ranged = (u) => async (offset, length) => {
      const r = await fetch(u, { headers: { Range: `bytes=${offset}-${offset + length - 1}` } });
      return new Uint8Array(await r.arrayBuffer());
    };
    try {
      const range = /^bytes=(\d+)-(\d+)$/.exec(request.headers.get('range') || '');
      if (range) {
        const [start, end] = [Number(range[1]), Number(range[2]) + 1];
        const bytes = await rebuildRange({ base: ranged(baseUrl), delta: ranged(deltaUrl), start, end });
        return new Response(bytes, { status: 206 });
      }
      const delta = await fetch(deltaUrl);
      return new Response(rebuild({ base: ranged(baseUrl), delta }));
    } catch (e) {
      return Response.json({ error: e.code, message: e.message }, { status: 500 });
    }
  },
};
