// zipllm for bundlers (webpack 5, Vite, …): the web build, loaded on import. The bundler needs
// to handle `new URL('zipllm_bg.wasm', import.meta.url)` (an asset) and top-level await.
// Built by scripts/build-wasm.sh from js/wrapper/bundler.js.
import init from '../web/zipllm.js';

await init();

export {
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
} from '../web/zipllm.js';
