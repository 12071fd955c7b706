#!/usr/bin/env bash
# Sets up and runs the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ZIPLLM_MODELS=${ZIPLLM_MODELS:-$PWD/.cache/models}
echo "== moto (a real S3 API, offline) for the store's tests"
bash scripts/setup-moto.sh
export ZIPLLM_MOTO_PYTHON=$PWD/.cache/venv/bin/python
echo "== cargo test (release: the real-model tests decode 45-90 MB files)"
cargo test --release --locked

echo "== the library and CLI type-check for Windows and macOS (scripts/check-targets.sh)"
bash scripts/check-targets.sh

echo "== the fuzz targets replay their committed corpus (x86_64 and i686, AddressSanitizer;"
echo "   a replay, not a campaign: fuzz/README.md)"
bash scripts/fuzz.sh replay

echo "== the npm package: build (wasm-pack), then its tests as users import it: Node, headless"
echo "   Chromium (page and Web Worker), and a 5 GiB bounded-memory rebuild"
bash scripts/setup-system.sh
bash scripts/build-wasm.sh
echo "== the core compiled to wasm32, in headless Chromium (wasm-bindgen-test): with the"
echo "   pure-Rust zstd, then with the npm package's C zstd (patched for wasm32, vendor/README.md)"
# The runner's default limit is 20 s for the whole file; the zstd stress test alone takes about
# that long in a debug build.
for features in wasm wasm,zstd-c; do
  WASM_BINDGEN_TEST_TIMEOUT=300 PATH="$PWD/node_modules/.bin:$PATH" RUSTFLAGS="-C target-feature=+simd128" \
    CC_wasm32_unknown_unknown=clang AR_wasm32_unknown_unknown=llvm-ar \
    wasm-pack test --mode no-install --headless --chrome --chromedriver /usr/bin/chromedriver \
    --no-default-features --features "$features" --test wasm --test hostile_deltas
done
node --test --test-timeout=900000 js/test/*.test.mjs
