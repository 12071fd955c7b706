#!/usr/bin/env bash
# Developer tool: remakes tests/fixtures from the real fine-tunes in ../shared/data. Tests never
# read ../shared; they use what this script committed.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/data}
WORK=.cache/shared
bash scripts/setup.sh
python3 "$SHARED/unpack.py" "$WORK" >/dev/null
MODELS=${ZIPLLM_MODELS:-.cache/models}
./target/release/zipllm encode --base "$MODELS/base/model.bf16.safetensors" \
  --target "$WORK/ft-a/model.bf16.safetensors" -o tests/fixtures/ft-a.bf16.zld
# The fp32 fine-tune's delta is too large to commit; its 1% fingerprint stands in for the
# family-matching tests.
./target/release/zipllm fingerprint "$WORK/ft-a/model.safetensors" -o tests/fixtures/ft-a.fp32.fingerprint
cargo test --release --test format -- --ignored regenerate_sample
