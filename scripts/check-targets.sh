#!/usr/bin/env bash
# Type-checks the library and the CLI for Windows and macOS from a Debian x86_64 host
# (`cargo clippy --target T --lib --bins -- -D warnings`: cargo check plus lints, so code behind
# cfg(windows) / cfg(target_os = "macos") is compiled and linted too). Installs what is missing:
# the rustup targets, and MinGW-w64 gcc (apt) for the C in zstd-sys and blake3 on Windows.
# Idempotent; prints nothing on success.
#
# macOS: no SDK here, so the C parts (zstd-sys's vendored zstd, blake3's NEON/asm files) are
# compiled by clang for the Apple target against the host's glibc headers. `cargo check` links
# nothing, so those objects are never used: the build scripts just have to succeed. Everything
# in Rust (this crate, std, libc's Darwin bindings, memmap2, ...) is checked for real. What is
# not covered for macOS: the C code's own portability and linking.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(x86_64-pc-windows-gnu x86_64-apple-darwin aarch64-apple-darwin)

# Runs a command, showing its output only if it fails.
quietly() {
  local log
  log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "check-targets: failed: $*" >&2
    return 1
  fi
  rm -f "$log"
}

installed=$(rustup target list --installed)
for t in "${TARGETS[@]}"; do
  grep -qx "$t" <<<"$installed" || quietly rustup target add "$t"
done
rustup component list --installed | grep -q '^clippy' || quietly rustup component add clippy

need=()
command -v x86_64-w64-mingw32-gcc >/dev/null || need+=(gcc-mingw-w64-x86-64)
command -v clang >/dev/null || need+=(clang)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  quietly $SUDO apt-get update -qq
  quietly $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The host's glibc headers for the Apple targets' C: the multiarch folder holds bits/, sys/cdefs.h.
# clang predefines `__nonnull` as Apple's _Nonnull for Darwin targets, which breaks glibc's
# `__nonnull ((1, 2))`: undefined, glibc defines its own.
multiarch=$(gcc -print-multiarch 2>/dev/null || clang -print-multiarch)
apple_cflags="-U__nonnull -isystem /usr/include/$multiarch"

for t in "${TARGETS[@]}"; do
  case $t in
    *-apple-darwin)
      var=${t//-/_}
      export "CC_$var=clang" "CFLAGS_$var=$apple_cflags"
      ;;
  esac
  features=()
  case $t in
    # aws-lc (the S3 client's TLS) needs Apple's SDK headers to compile: the Apple targets are
    # checked without the `s3` feature (the S3 code is plain Rust over object_store).
    *-apple-darwin) features=(--no-default-features --features cli-core) ;;
  esac
  cargo clippy --quiet --locked --target "$t" "${features[@]}" --lib --bins -- -D warnings
done
