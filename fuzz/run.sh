#!/usr/bin/env bash
# Builds every fuzz target with libFuzzer instrumentation on the stable toolchain (no
# cargo-fuzz, no nightly) and runs each one for SECONDS (default 60).
#
#   fuzz/run.sh [SECONDS]
#
# Seeds from fuzz/seeds/<target>/ (committed), grows fuzz/corpus/<target>/ (gitignored, kept
# between runs), writes crashers to fuzz/artifacts/<target>/ and each run's log to
# fuzz/artifacts/<target>.log. Exits non-zero if any target crashed, leaked, timed out or ran
# out of memory. FUZZ_ASAN=1 adds AddressSanitizer (needs RUSTC_BOOTSTRAP=1, set here: see
# README.md). Extra libFuzzer flags may be passed in FUZZ_ARGS.
set -euo pipefail

secs="${1:-60}"
[[ "$secs" =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS]" >&2; exit 2; }
cd "$(dirname "$0")"

# Every [[bin]] of Cargo.toml: a new target is run without editing a list here.
mapfile -t targets < <(awk '/^\[\[bin\]\]/ { bin = 1; next }
  bin && $1 == "name" { gsub(/"/, "", $3); print $3; bin = 0 }' Cargo.toml)
((${#targets[@]})) || { echo "no [[bin]] in Cargo.toml" >&2; exit 2; }
host="$(rustc -vV | sed -n 's/^host: //p')"

# The instrumentation cargo-fuzz would pass (see README.md). Only stable `-C` options: no -Z.
flags=(
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cllvm-args=-sanitizer-coverage-stack-depth
  -Cllvm-args=-simplifycfg-branch-fold-threshold=0
  --cfg fuzzing
)
if [[ "${FUZZ_ASAN:-0}" == 1 ]]; then
  export RUSTC_BOOTSTRAP=1
  flags+=(-Zsanitizer=address)
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"
fi
export RUSTFLAGS="${flags[*]}"
# Apart from the plain build, so that switching modes does not rebuild everything.
default_dir="$PWD/target"
[[ "${FUZZ_ASAN:-0}" == 1 ]] && default_dir="$PWD/target/asan"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$default_dir}"

# --target: RUSTFLAGS then apply to the fuzz targets and their dependencies only, not to build
# scripts and proc macros (which would not link without libFuzzer).
cargo build --release --locked --target "$host" --bins
bin="$CARGO_TARGET_DIR/$host/release"

failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  dict=()
  # JSON in clear: the dictionary helps; in frames (sealed or raw) it does not.
  case "$t" in frame_view | tcp_conn) ;; *) dict=(-dict=dict/json.dict) ;; esac
  echo "== $t: ${secs}s"
  # The first corpus directory receives new inputs; the seeds are only read.
  # shellcheck disable=SC2086
  if "$bin/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="artifacts/$t/" "${dict[@]}" ${FUZZ_ARGS:-} \
      "corpus/$t" "seeds/$t" >"artifacts/$t.log" 2>&1; then
    grep -E '#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|new_units_added)' \
      "artifacts/$t.log" || true
  else
    echo "!! $t failed (exit $?): see fuzz/artifacts/$t.log" >&2
    tail -n 60 "artifacts/$t.log" >&2
    failed+=("$t")
  fi
done

if ((${#failed[@]})); then
  echo "crashes in: ${failed[*]}; crashers in fuzz/artifacts/<target>/ (see fuzz/README.md)" >&2
  exit 1
fi
echo "no crash"
