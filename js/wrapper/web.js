// zipllm for browsers, Web Workers and edge workers (ES module): call init() (or initSync())
// first. Built by scripts/build-wasm.sh from js/wrapper/web.js and js/wrapper/api.js.
import initGlue, * as glue from './zipllm_glue.js';

// @API@

let ready = false;
const api = makeApi(glue, () => ready);

/**
 * Loads the module: `init()` fetches zipllm_bg.wasm next to this file; `init({ module_or_path })`
 * takes a URL, a Response, bytes or a compiled WebAssembly.Module (workerd).
 */
export default async function init(moduleOrPath) {
  await initGlue(moduleOrPath);
  ready = true;
}

/** Loads the module synchronously from `{ module }`: bytes or a compiled WebAssembly.Module. */
export function initSync(module) {
  glue.initSync(module);
  ready = true;
}

export const {
  rebuild,
  verify,
  rebuildRange,
  rebuildRangeStream,
  describe,
  inspect,
  encode,
  encodeLevels,
  hashFile,
  hashTensors,
  fingerprint,
  fingerprintRemote,
  matchFamily,
  formatVersion,
  wasmMemoryBytes,
  __testPanic,
} = api;
