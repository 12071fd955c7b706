#!/usr/bin/env bash
# Sets up and runs the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ZIPLLM_MODELS=${ZIPLLM_MODELS:-$PWD/.cache/models}
echo "== cargo test (release: the real-model tests decode 45-90 MB files)"
cargo test --release --locked

echo "== the npm package: build (wasm-pack) and Node tests of pkg/ as users import it"
bash scripts/build-wasm.sh
node --test js/test/
