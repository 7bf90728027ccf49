#!/usr/bin/env bash
# Fuzz smoke test: builds every cargo-fuzz target in fuzz/ and runs each one
# for a short, bounded time, seeded from fuzz/seeds/<target>/. Exits non-zero
# if a target crashes (panic, failed assertion, sanitizer report, timeout or
# out-of-memory); the crashing input is left in fuzz/artifacts/<target>/.
#
# Works on a stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc accept the
# nightly-only flags cargo-fuzz passes (-Zsanitizer=address, ...).
#
# Environment (all optional):
#   FUZZ_SECONDS      seconds of fuzzing per target (default 30)
#   FUZZ_TARGETS      space-separated targets (default: every target)
#   FUZZ_SANITIZER    address | none (default address)
#   CARGO_BUILD_JOBS  parallel rustc jobs for the build (cargo's own variable)
#
# Usage: scripts/fuzz-smoke.sh            (from anywhere; no stdin needed)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

seconds="${FUZZ_SECONDS:-30}"
sanitizer="${FUZZ_SANITIZER:-address}"
targets="${FUZZ_TARGETS:-bencode metainfo wire tracker_response tracker_server krpc magnet extension mse}"
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_PROGRESS_WHEN=never

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked </dev/null
fi
cargo fuzz --version

work="$(mktemp -d "${TMPDIR:-/tmp}/xorrent-fuzz-smoke.XXXXXX")"
trap 'rm -rf "$work"' EXIT

start=$SECONDS
echo "fuzz-smoke: building targets (sanitizer: $sanitizer)"
cargo fuzz build --sanitizer "$sanitizer" </dev/null
echo "fuzz-smoke: build took $((SECONDS - start))s"

failed=()
for t in $targets; do
    corpus="$work/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    if [ -d "fuzz/seeds/$t" ]; then
        find "fuzz/seeds/$t" -maxdepth 1 -type f ! -name '*.md' -exec cp {} "$corpus/" \;
    fi
    echo "fuzz-smoke: $t for ${seconds}s ($(ls "$corpus" | wc -l) seeds)"
    log="$work/$t.log"
    # -timeout: one input running 10 s counts as a hang (a failure).
    if cargo fuzz run --sanitizer "$sanitizer" "$t" "$corpus" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 </dev/null >"$log" 2>&1; then
        grep -E '^(Done|stat::(number_of_executed_units|average_exec_per_sec|new_units_added))' "$log" | sed "s/^/  $t: /"
    else
        echo "fuzz-smoke: $t FAILED; log follows" >&2
        # The report, without libFuzzer's recommended-dictionary noise.
        sed '/Recommended dictionary/,/End of recommended dictionary/d' "$log" | tail -n 80 >&2
        ls -l "fuzz/artifacts/$t" >&2 || true
        failed+=("$t")
    fi
done

echo "fuzz-smoke: total $((SECONDS - start))s"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz-smoke: failed: ${failed[*]} (crashing inputs, if any, are in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz-smoke: no crashes"
