#!/usr/bin/env bash
# Fuzzing of everything that reads untrusted bytes (deltas, safetensors, fingerprints, zstd
# frames) with cargo-fuzz / libFuzzer. Targets and layouts: fuzz/README.md.
#
#   bash scripts/fuzz.sh setup              install what is missing (nightly, cargo-fuzz, the
#                                           i686 target, clang, multilib, clang's i386 ASan)
#   bash scripts/fuzz.sh build              build every target for every arch
#   bash scripts/fuzz.sh replay             every target over its committed corpus only (CI)
#   bash scripts/fuzz.sh campaign SECONDS   every target for SECONDS each; prints executions
#   bash scripts/fuzz.sh repro              run every saved crash (fuzz/artifacts) once: which
#                                           still crash
#   bash scripts/fuzz.sh tmin ARCH TARGET FILE   minimize a crash (cargo fuzz tmin)
#
# Environment:
#   FUZZ_ARCHS     archs to build/run, default "x86_64 i686" (i686: 32-bit usize like wasm32,
#                  and C zstd built with -D__wasm32__ so its wasm32-only patched path runs)
#   FUZZ_TARGETS   default: all six
#   FUZZ_I686_PATCHED=0   i686 without -D__wasm32__ (upstream 32-bit zstd path; separate
#                  target dir fuzz/target-unpatched)
#   FUZZ_KEEP_GOING=1     campaign continues past crashes (libFuzzer -fork=1 -ignore_*)
#   FUZZ_FLAGS     extra libFuzzer flags
#
# Exits non-zero if any target crashed, leaked, timed out or ran out of memory.
set -euo pipefail
cd "$(dirname "$0")/.."

NIGHTLY=${FUZZ_TOOLCHAIN:-nightly}
CARGO_FUZZ_VERSION=0.13.2
ALL_TARGETS="manifest blob rebuild safetensors fingerprint zstd_diff"
TARGETS=${FUZZ_TARGETS:-$ALL_TARGETS}
ARCHS=${FUZZ_ARCHS:-x86_64 i686}
PATCHED=${FUZZ_I686_PATCHED:-1}

# Per-target malloc limit (MiB). Outputs of blob/zstd_diff are at most 1 MiB and the other
# inputs are at most -max_len bytes, so 64 MiB flags any allocation sized by a field rather
# than by the data; rebuild legitimately holds a chunk (≤ 256 MiB) and its output.
malloc_limit() {
  case $1 in
    rebuild) echo 2048 ;;
    *) echo 64 ;;
  esac
}
COMMON_FLAGS="-max_len=65536 -rss_limit_mb=2048 -timeout=10"

triple() { echo "$1-unknown-linux-gnu"; }

setup() {
  if ! rustup toolchain list | grep -q "^$NIGHTLY"; then
    rustup toolchain install "$NIGHTLY" --profile minimal
  fi
  if ! rustup target list --installed --toolchain "$NIGHTLY" | grep -q '^i686-unknown-linux-gnu$'; then
    rustup target add i686-unknown-linux-gnu --toolchain "$NIGHTLY"
  fi
  if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
    cargo install --locked --version "$CARGO_FUZZ_VERSION" cargo-fuzz
  fi
  local want=(clang llvm gcc-multilib g++-multilib) missing=() p
  for p in "${want[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
  fi
  # clang's compiler-rt: the i386 AddressSanitizer runtime (nightly ships none for i686).
  local rt="libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev"
  if ! dpkg -s "$rt" >/dev/null 2>&1; then
    apt-get install -y -qq "$rt" || { apt-get update -qq && apt-get install -y -qq "$rt"; }
  fi
}

# Environment for building one arch: C (zstd, blake3's C) with clang, AddressSanitizer and
# libFuzzer's coverage, so the fuzzer sees and checks C zstd too.
arch_env() {
  case $1 in
    x86_64)
      export CC_x86_64_unknown_linux_gnu=clang
      export CFLAGS_x86_64_unknown_linux_gnu="-fsanitize=address -fsanitize=fuzzer-no-link -g"
      unset RUSTFLAGS
      CF_DIR=()
      ;;
    i686)
      export CC_i686_unknown_linux_gnu=clang
      local define="-D__wasm32__"
      CF_DIR=()
      if [ "$PATCHED" = 0 ]; then define=""; CF_DIR=(--target-dir fuzz/target-unpatched); fi
      export CFLAGS_i686_unknown_linux_gnu="-fsanitize=address -fsanitize=fuzzer-no-link -g $define"
      # Rust nightly has no i686 ASan runtime: link clang's (the clang driver picks it).
      export CARGO_TARGET_I686_UNKNOWN_LINUX_GNU_LINKER=clang
      export RUSTFLAGS="-Zexternal-clangrt -Clink-arg=-fsanitize=address"
      ;;
    *) echo "unknown arch $1" >&2; exit 2 ;;
  esac
}

fuzz() { cargo "+$NIGHTLY" fuzz "$@"; }

build() {
  local arch
  for arch in $ARCHS; do
    (arch_env "$arch"; fuzz build "${CF_DIR[@]}" --target "$(triple "$arch")")
  done
}

# One run of one target; the log goes to fuzz/logs/ARCH-TARGET.log. Returns libFuzzer's status.
run_one() {
  local arch=$1 t=$2; shift 2
  mkdir -p fuzz/logs "fuzz/artifacts/$t"
  local log="fuzz/logs/$arch-$t.log" tag=$arch
  [ "$arch" = i686 ] && [ "$PATCHED" = 0 ] && tag=i686-unpatched && log="fuzz/logs/$tag-$t.log"
  (
    arch_env "$arch"
    # shellcheck disable=SC2086
    fuzz run "${CF_DIR[@]}" --target "$(triple "$arch")" "$t" "$@" -- \
      $COMMON_FLAGS -malloc_limit_mb="$(malloc_limit "$t")" \
      -artifact_prefix="fuzz/artifacts/$t/$tag-" -print_final_stats=1 ${FUZZ_FLAGS:-} ${RUN_FLAGS:-}
  ) >"$log" 2>&1
}

replay() {
  local arch t failed=0
  for arch in $ARCHS; do
    for t in $TARGETS; do
      if RUN_FLAGS="-runs=0" run_one "$arch" "$t" "fuzz/corpus/$t"; then
        echo "ok      $arch $t ($(ls "fuzz/corpus/$t" | wc -l) inputs)"
      else
        echo "FAILED  $arch $t: see fuzz/logs/$arch-$t.log"; failed=1
        grep -m3 -E "panicked|ERROR: (AddressSanitizer|libFuzzer)|SUMMARY" "fuzz/logs/$arch-$t.log" || true
      fi
    done
  done
  return $failed
}

final_stat() { grep -a "^stat::$1:" "$2" | tail -1 | awk '{print $2}'; }

campaign() {
  local secs=$1 arch t failed=0 status start end execs corp
  local keep=()
  if [ "${FUZZ_KEEP_GOING:-0}" = 1 ]; then
    keep=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
  fi
  local rows=()
  for arch in $ARCHS; do
    for t in $TARGETS; do
      local work="fuzz/work/$arch/$t"
      [ "$arch" = i686 ] && [ "$PATCHED" = 0 ] && work="fuzz/work/i686-unpatched/$t"
      mkdir -p "$work"
      start=$(date +%s)
      status=ok
      RUN_FLAGS="-max_total_time=$secs ${keep[*]}" run_one "$arch" "$t" "$work" "fuzz/corpus/$t" \
        || { status=CRASH; failed=1; }
      end=$(date +%s)
      local log="fuzz/logs/$arch-$t.log"
      [ "$arch" = i686 ] && [ "$PATCHED" = 0 ] && log="fuzz/logs/i686-unpatched-$t.log"
      execs=$(final_stat number_of_executed_units "$log")
      if [ -z "$execs" ]; then # fork mode: the last "#N:" status line
        execs=$(grep -aoE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
      fi
      corp=$(grep -aoE 'corp: [0-9]+' "$log" | tail -1 | awk '{print $2}')
      local secs_run=$((end - start)); [ "$secs_run" -gt 0 ] || secs_run=1
      rows+=("$(printf '%-12s %-15s %6s %12s %8s %6s  %s' "$t" "$arch" "$secs_run" "${execs:-?}" \
        "$(( ${execs:-0} / secs_run ))" "${corp:-?}" "$status")")
      echo "${rows[-1]}"
      if [ "$status" = CRASH ]; then
        grep -a -m1 -E "panicked at|ERROR: (AddressSanitizer|libFuzzer)" "$log" || true
        grep -a -m1 "Test unit written to" "$log" || true
      fi
    done
  done
  echo
  printf '%-12s %-15s %6s %12s %8s %6s  %s\n' target arch secs execs exec/s corpus status
  printf '%s\n' "${rows[@]}"
  return $failed
}

repro() {
  local arch t f failed=0 bin tag
  for t in $TARGETS; do
    for f in fuzz/artifacts/"$t"/*; do
      [ -f "$f" ] || continue
      case $(basename "$f") in
        i686-unpatched-*) arch=i686; tag=i686-unpatched ;;
        i686-*) arch=i686; tag=i686 ;;
        *) arch=x86_64; tag=x86_64 ;;
      esac
      case " $ARCHS " in *" $arch "*) ;; *) continue ;; esac
      if [ "$tag" = i686-unpatched ]; then
        bin=fuzz/target-unpatched/$(triple i686)/release/$t
      else
        bin=fuzz/target/$(triple "$arch")/release/$t
      fi
      if "$bin" -rss_limit_mb=2048 -malloc_limit_mb="$(malloc_limit "$t")" -timeout=10 "$f" >/dev/null 2>&1; then
        echo "passes  $f"
      else
        echo "CRASHES $f"; failed=1
      fi
    done
  done
  return $failed
}

tmin() {
  local arch=$1 t=$2 f=$3
  (arch_env "$arch"; fuzz tmin "${CF_DIR[@]}" --target "$(triple "$arch")" -r 2000 "$t" "$f" -- \
    -rss_limit_mb=2048 -malloc_limit_mb="$(malloc_limit "$t")" -timeout=10)
}

case ${1:-} in
  setup) setup ;;
  build) setup; build ;;
  replay) setup; build; replay ;;
  campaign) [ -n "${2:-}" ] || { echo "usage: $0 campaign SECONDS" >&2; exit 2; }
    setup; build; campaign "$2" ;;
  repro) build; repro ;;
  tmin) [ $# -eq 4 ] || { echo "usage: $0 tmin ARCH TARGET FILE" >&2; exit 2; }; tmin "$2" "$3" "$4" ;;
  *) sed -n '2,25p' "$0"; exit 2 ;;
esac
