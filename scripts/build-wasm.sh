#!/usr/bin/env bash
# Builds the npm package `zipllm` into pkg/: one wasm build, bound for three targets
# (pkg/web: browsers and edge workers, ES module with init(); pkg/node: Node, CommonJS;
# pkg/bundler: bundlers, the web build initialized on import), each behind the wrapper in
# js/wrapper/, plus a package.json whose conditional exports pick the right one.
# Installs what it needs (wasm32 target, wasm-bindgen-cli at the pinned version, wasm-pack,
# npm dev packages) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

WASM_BINDGEN=$(sed -n 's/^wasm-bindgen = { version = "=\([0-9.]*\)".*/\1/p' Cargo.toml)
[ -n "$WASM_BINDGEN" ] || { echo "build-wasm: cannot find the pinned wasm-bindgen version" >&2; exit 1; }

rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN" ]; then
  echo "== installing wasm-bindgen-cli $WASM_BINDGEN (about 10 minutes on 2 cores)"
  # --locked is not used: the lockfile of 0.2.130 pins a webpki-roots release crates.io no longer serves.
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN" --quiet
fi
command -v wasm-pack >/dev/null || { echo "== installing wasm-pack"; cargo install wasm-pack --locked --quiet; }
[ -x node_modules/.bin/wasm-opt ] || npm ci --no-audit --no-fund --loglevel=error
export PATH="$PWD/node_modules/.bin:$PATH"

# SIMD128 for blake3 and the byte loops: every browser since 2021, Node >= 16.4, workerd.
export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+simd128"
# zstd: C zstd compiled to wasm32 with clang (about 2x faster decoding than ruzstd, and every
# encoder level) unless ZIPLLM_WASM_ZSTD=rust asks for the pure-Rust build.
# ZIPLLM_WASM_DECODER_ONLY=1 leaves `encode` out (the smallest module).
FEATURES=wasm
[ "${ZIPLLM_WASM_DECODER_ONLY:-0}" = 1 ] || FEATURES=wasm,wasm-encode
if [ "${ZIPLLM_WASM_ZSTD:-c}" = c ]; then
  command -v clang >/dev/null || { echo "build-wasm: clang is required (scripts/setup-system.sh), or set ZIPLLM_WASM_ZSTD=rust" >&2; exit 1; }
  export CC_wasm32_unknown_unknown=clang AR_wasm32_unknown_unknown=llvm-ar
  FEATURES=$FEATURES,zstd-c
fi
OUT=${ZIPLLM_PKG:-pkg}
rm -rf "$OUT/web" "$OUT/node" "$OUT/bundler"
# The bundler build is the web build loaded on import (top-level await), since wasm-bindgen's
# bundler glue cannot make a fresh instance after a panic: it has no WebAssembly.Module.
for target in web nodejs; do
  dir=${target/nodejs/node}
  wasm-pack --quiet build --mode no-install --release --target "$target" --out-dir "$OUT/$dir" \
    --out-name zipllm --no-pack . -- --no-default-features --features "$FEATURES"
  rm -f "$OUT/$dir/.gitignore"
  # Imports of anything but the bindings would be unresolved C symbols (a gcc-built zstd).
  node -e "const m=new WebAssembly.Module(require('fs').readFileSync('$OUT/$dir/zipllm_bg.wasm'));
    const bad=WebAssembly.Module.imports(m).filter(i=>!i.module.includes('zipllm_bg')&&i.module!=='__wbindgen_placeholder__'&&i.module!=='wbg');
    if(bad.length){console.error('unresolved wasm imports:',bad);process.exit(1)}"
  # The generated glue is internal: the wrapper (js/wrapper/api.js inlined into the target's
  # shell) gives the package its API, its error handling and its hand-written types.
  mv "$OUT/$dir/zipllm.js" "$OUT/$dir/zipllm_glue.js"
  rm -f "$OUT/$dir/zipllm.d.ts" "$OUT/$dir/zipllm_bg.wasm.d.ts"
  grep -q __wbg_reset_state "$OUT/$dir/zipllm_glue.js" \
    || { echo "build-wasm: the $dir glue has no reinit machinery (wasm_bindgen::handler::schedule_reinit)" >&2; exit 1; }
  sed -e '/^\/\/ @API@$/{' -e 'r js/wrapper/api.js' -e 'd' -e '}' "js/wrapper/$dir.js" > "$OUT/$dir/zipllm.js"
  cp js/wrapper/zipllm.d.ts "$OUT/$dir/zipllm.d.ts"
done
cat js/wrapper/init.d.ts >> "$OUT/web/zipllm.d.ts"
mkdir -p "$OUT/bundler"
cp js/wrapper/bundler.js "$OUT/bundler/zipllm.js"
cp js/wrapper/zipllm.d.ts "$OUT/bundler/zipllm.d.ts"
echo '{ "type": "commonjs" }' > "$OUT/node/package.json"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
sed "s/@VERSION@/$VERSION/" js/npm-package.json > "$OUT/package.json"
cp js/README.md "$OUT/README.md"
# Tests import the package by name, as users do.
[ "$OUT" != pkg ] || ln -sfn ../pkg node_modules/zipllm
echo "== $OUT/ ($FEATURES): $(du -sh "$OUT" | cut -f1); wasm $(stat -c %s "$OUT/web/zipllm_bg.wasm") bytes, $(gzip -9 -c "$OUT/web/zipllm_bg.wasm" | wc -c) gzipped"
