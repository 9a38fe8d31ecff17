#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time (default 60 s each) with
# libFuzzer and AddressSanitizer (cargo fuzz), on the machine's stable toolchain
# (RUSTC_BOOTSTRAP lets it take the -Z sanitizer flags), and prints one line of
# figures per target: runs, executions per second, coverage, corpus size.
# A crash stops the run with the target's name; its input is in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
targets=(stream_request token_claims publish_body sse_framing)
export RUSTC_BOOTSTRAP=1
cargo fuzz build --fuzz-dir fuzz -O
mkdir -p target/fuzz
printf '%-16s %12s %10s %8s %8s\n' target runs execs/s cov corpus > target/fuzz/summary.txt
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  log="target/fuzz/$t.log"
  echo "fuzz: $t for ${seconds}s"
  if ! cargo fuzz run --fuzz-dir fuzz -O "$t" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $t FAILED (input in fuzz/artifacts/$t/)"
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  printf '%-16s %12s %10s %8s %8s\n' "$t" "$runs" "$rate" "${cov:-?}" "$corpus" >> target/fuzz/summary.txt
done
cat target/fuzz/summary.txt
