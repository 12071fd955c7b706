#!/usr/bin/env bash
# Recreates vendor/zstd-sys: zstd-sys 2.1.3+zstd.1.5.7 from crates.io, trimmed to what our
# features build (no legacy formats, dictionary builder, seekable format or cmake files), with
# vendor/zstd-sys-wasm32.patch applied. Run it to check the committed copy (git diff shows
# nothing) or after changing the patch.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=2.1.3+zstd.1.5.7
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -sSfL "https://static.crates.io/crates/zstd-sys/zstd-sys-${VERSION/+/%2B}.crate" | tar -xz -C "$tmp"
src="$tmp/zstd-sys-$VERSION"
out=vendor/zstd-sys
rm -rf "$out"
mkdir -p "$out/zstd/lib"
cp -r "$src"/{Cargo.toml,build.rs,src,wasm-shim,zstd.h,zdict.h,zstd_seekable.h,LICENSE,LICENSE.BSD-2-Clause,LICENSE.BSD-3-Clause,Readme.md} "$out/"
cp "$src"/zstd/{LICENSE,COPYING} "$out/zstd/"
cp -r "$src"/zstd/lib/{common,compress,decompress,zstd.h,zdict.h,zstd_errors.h} "$out/zstd/lib/"
patch -s -p1 -d "$out" < vendor/zstd-sys-wasm32.patch
echo "== $out: zstd-sys $VERSION with vendor/zstd-sys-wasm32.patch"
