#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time (default 20 s each), as CI does.
# Longer runs: FUZZ_SECONDS=3600 tools/fuzz.sh [target...]   (docs/FUZZING.md)
#
# Needs the nightly toolchain (`cargo +nightly`, never the default toolchain). Without it the
# run is skipped with a message, except in CI (CI=... set), where that is an error.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-20}"
# Fuzz builds are instrumented, so they cannot share the main build's artefacts: their own
# target dir, kept between runs like the main one.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/rampart/fuzz}"
export CARGO_TERM_COLOR=never

if ! cargo +nightly --version >/dev/null 2>&1; then
  if [ -n "${CI:-}" ]; then
    echo "fuzz: the nightly toolchain is required in CI (rustup toolchain install nightly)" >&2
    exit 1
  fi
  echo "fuzz: skipped: no nightly toolchain (rustup toolchain install nightly)"
  exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

# RocksDB is linked, never called, by the targets: reuse the static library the main build
# (CARGO_TARGET_DIR of .ci/run) already compiled instead of compiling its C++ a second time.
main_target="${MAIN_TARGET_DIR:-$HOME/.cache/rampart/target}"
rocksdb_lib="$(ls -t "$main_target"/x86_64-unknown-linux-gnu/*/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -n 1 || true)"
if [ -n "$rocksdb_lib" ]; then
  export ROCKSDB_LIB_DIR="$(dirname "$rocksdb_lib")" ROCKSDB_STATIC=1
  echo "fuzz: linking RocksDB from $ROCKSDB_LIB_DIR"
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi

# No sanitizer: the code is safe Rust, and libFuzzer still catches panics, aborts, stack
# overflows, timeouts and memory blow-ups; the build and the runs are much quicker.
flags=(--sanitizer none)
started=$(date +%s)
(cd fuzz && cargo +nightly fuzz build "${flags[@]}")
echo "fuzz: built ${#targets[@]} targets in $(( $(date +%s) - started )) s"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "fuzz/corpus/$t"
  echo "== fuzz $t (${seconds} s)"
  # New inputs go to the scratch dir (first), the kept seeds and regressions are read only.
  if ! (cd fuzz && cargo +nightly fuzz run "${flags[@]}" "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t-"); then
    failed+=("$t")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (crashing inputs in fuzz/artifacts/; keep each as a" \
       "regression: a file in fuzz/corpus/<target>/ and a unit test)" >&2
  exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran ${seconds} s each without a failure"
