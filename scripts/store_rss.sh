#!/usr/bin/env bash
# Peak RSS of the store on a big synthetic model: an 8 GiB bf16 base of four 2 GiB tensors and a
# fine-tune of it, ingested (the fine-tune as a delta) and restored, each command under
# /usr/bin/time. Needs ~40 GB of free disk in WORK (default: a folder in /tmp), removed after.
# Usage: bash scripts/store_rss.sh [GIB] [TENSOR_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=${1:-8}
TENSOR_MIB=${2:-2048}
WORK=${WORK:-$(mktemp -d /tmp/zipllm-rss.XXXXXX)}
trap 'rm -rf "$WORK"' EXIT
cargo build --release --quiet --example synth_model
cargo build --release --quiet
Z=$PWD/target/release/zipllm
mkdir -p "$WORK/base" "$WORK/ft"
./target/release/examples/synth_model "$WORK/base/model.safetensors" "$WORK/ft/model.safetensors" "$GIB" "$TENSOR_MIB"
peak() { # command... → prints "peak RSS MB, seconds"
  /usr/bin/time -f "%M %e" -o "$WORK/time" "$@" > /dev/null
  read -r kb secs < "$WORK/time"
  echo "$((kb / 1024)) MiB peak RSS, ${secs} s"
}
size=$(stat -c %s "$WORK/base/model.safetensors")
echo "model: $size bytes per file, tensors of $TENSOR_MIB MiB"
echo "ingest base:        $(peak "$Z" store ingest "$WORK/store" acme/base "$WORK/base" --threads 2)"
echo "ingest fine-tune:   $(peak "$Z" store ingest "$WORK/store" acme/ft "$WORK/ft" --threads 2)"
"$Z" store show "$WORK/store" acme/ft
echo "restore fine-tune:  $(peak "$Z" store restore "$WORK/store" acme/ft "$WORK/out" --threads 2)"
cmp "$WORK/ft/model.safetensors" "$WORK/out/model.safetensors" && echo "restored byte for byte"
echo "range of 1 MiB:     $(peak "$Z" store cat "$WORK/store" acme/ft model.safetensors --range 4294967296-4295315456 -o "$WORK/range.bin" --json)"
du -sh "$WORK/store"
