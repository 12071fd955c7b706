#!/usr/bin/env bash
# Builds the npm package `zipllm` into pkg/: one wasm build, bound for three targets
# (pkg/web: browsers and edge workers, ES module with init(); pkg/node: Node, CommonJS;
# pkg/bundler: bundlers), plus a package.json whose conditional exports pick the right one.
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
for target in web nodejs bundler; do
  dir=${target/nodejs/node}
  wasm-pack --quiet build --mode no-install --release --target "$target" --out-dir "pkg/$dir" \
    --out-name zipllm --no-pack . -- --no-default-features --features wasm
  rm -f "pkg/$dir/.gitignore"
done
echo '{ "type": "commonjs" }' > pkg/node/package.json
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
sed "s/@VERSION@/$VERSION/" js/npm-package.json > pkg/package.json
cp js/README.md pkg/README.md
# Tests import the package by name, as users do.
ln -sfn ../pkg node_modules/zipllm
echo "== pkg/: $(du -sh pkg | cut -f1); wasm $(stat -c %s pkg/web/zipllm_bg.wasm) bytes, $(gzip -9 -c pkg/web/zipllm_bg.wasm | wc -c) gzipped"
