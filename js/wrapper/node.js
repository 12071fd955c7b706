// zipllm for Node (CommonJS; `import` works too). Built by scripts/build-wasm.sh from
// js/wrapper/node.js and js/wrapper/api.js.
'use strict';
const glue = require('./zipllm_glue.js');

// @API@

const api = makeApi(glue);
// One assignment per name, so that Node's ESM loader sees them as named exports.
exports.rebuild = api.rebuild;
exports.verify = api.verify;
exports.rebuildRange = api.rebuildRange;
exports.rebuildRangeStream = api.rebuildRangeStream;
exports.describe = api.describe;
exports.inspect = api.inspect;
exports.encode = api.encode;
exports.encodeLevels = api.encodeLevels;
exports.hashFile = api.hashFile;
exports.hashTensors = api.hashTensors;
exports.fingerprint = api.fingerprint;
exports.fingerprintRemote = api.fingerprintRemote;
exports.matchFamily = api.matchFamily;
exports.formatVersion = api.formatVersion;
exports.wasmMemoryBytes = api.wasmMemoryBytes;
exports.__testPanic = api.__testPanic;
