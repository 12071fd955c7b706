// The edge worker (www/edge/worker.mjs) with the package's test hook reachable: a request with
// the header `x-zipllm-test-panic: <where>` first arms a panic (see `__testPanic`), then is served
// as usual by the same worker, on the same cached instance of the module.
import worker from '../../../www/edge/worker.mjs';
import init, { __testPanic } from '../../../pkg/web/zipllm.js';
import wasm from '../../../pkg/web/zipllm_bg.wasm';

export default {
  async fetch(request, env, ctx) {
    const at = request.headers.get('x-zipllm-test-panic');
    if (at) {
      await init({ module_or_path: wasm });
      __testPanic(at);
    }
    return worker.fetch(request, env, ctx);
  },
};
