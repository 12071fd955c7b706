#!/usr/bin/env bash
# Installs the Debian packages the wasm build and the browser tests need, if missing:
# clang and llvm-ar (C zstd compiled to wasm32), Chromium and ChromeDriver (browser tests).
# --build: only what the wasm build needs.
set -euo pipefail
need=()
command -v clang >/dev/null || need+=(clang)
command -v llvm-ar >/dev/null || need+=(llvm)
if [ "${1:-}" != --build ]; then
  [ -x /usr/bin/chromium ] || need+=(chromium)
  [ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
fi
[ ${#need[@]} -gt 0 ] || exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
echo "== installing ${need[*]} (apt)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
