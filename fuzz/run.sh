#!/usr/bin/env bash
# Builds the fuzz targets and runs each for SECONDS (default 30) from its
# checked-in seed corpus, fuzz/corpus/<target>/. Exits non-zero if any
# target crashes, hangs or runs out of memory; the input is saved under
# fuzz/artifacts/<target>/ and the command to reproduce it printed.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Runs on a stable toolchain: cargo-fuzz needs nightly only for a
# sanitizer (-Zsanitizer), so the targets are built without one
# (--sanitizer none: libFuzzer's coverage instrumentation is all -C flags;
# Rust's own checks, debug assertions and overflow checks stay on; revocd
# has no `unsafe`). FUZZ_TOOLCHAIN=nightly FUZZ_SANITIZER=address runs
# under AddressSanitizer where a nightly toolchain is installed.
#
# New inputs libFuzzer finds go to a scratch directory, never into the
# checked-in corpus; FUZZ_KEEP_CORPUS=DIR keeps them in DIR/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
shift $(( $# > 0 ? 1 : 0 ))
case $seconds in
  '' | *[!0-9]*) echo "usage: fuzz/run.sh [SECONDS] [TARGET...]" >&2; exit 64 ;;
esac

# The version .ci/run was written against; any installed cargo-fuzz is used.
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi
cargo fuzz --version

fuzz=(cargo)
[ -z "${FUZZ_TOOLCHAIN:-}" ] || fuzz+=("+$FUZZ_TOOLCHAIN")
fuzz+=(fuzz)
sanitizer=${FUZZ_SANITIZER:-none}

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <("${fuzz[@]}" list)
fi

# One build of every target, so the timed runs below do not compile.
"${fuzz[@]}" build --sanitizer "$sanitizer"

scratch=${FUZZ_KEEP_CORPUS:-$(mktemp -d)}
failed=()
for target in "${targets[@]}"; do
  echo "=== fuzz $target for ${seconds}s"
  mkdir -p "$scratch/$target" "fuzz/corpus/$target"
  # The first directory receives new inputs; the seeds are only read.
  # -timeout: one input running 10 s is a hang; -rss_limit_mb is
  # libFuzzer's default, written down. fuzz/dict/<target>.dict holds the
  # target's keywords, where it has one.
  options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  [ ! -f "fuzz/dict/$target.dict" ] || options+=(-dict="fuzz/dict/$target.dict")
  if ! "${fuzz[@]}" run --sanitizer "$sanitizer" "$target" \
      "$scratch/$target" "fuzz/corpus/$target" -- "${options[@]}"; then
    failed+=("$target")
  fi
done
[ -n "${FUZZ_KEEP_CORPUS:-}" ] || rm -rf "$scratch"

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crash in ${failed[*]}; inputs under fuzz/artifacts/" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
