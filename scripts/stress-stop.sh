#!/usr/bin/env bash
# Runs the run_command test (make run's script: start everything, stream, Ctrl-C,
# everything stopped) RUNS times (default 20) while stress-ng keeps every core busy,
# and prints each run's result and how long the stop took. Exits non-zero if any run
# failed. Needs stress-ng (Debian package; installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-20}
command -v stress-ng >/dev/null 2>&1 || {
  echo "stress-stop: installing stress-ng"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stress-ng
}
bin=$(cargo test -p crm-events-tests --test run_command --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "stress-stop: could not build the run_command test" >&2; exit 1; }
out=$(mktemp -d)
stress-ng --cpu "$(nproc)" --cpu-load 100 --quiet &
stress=$!
trap 'kill $stress 2>/dev/null; rm -rf "$out"' EXIT
failed=0
for i in $(seq 1 "$runs"); do
  if (cd tests && "$bin" --nocapture > "$out/$i.log" 2>&1); then result=ok; else result=FAILED; failed=$((failed + 1)); fi
  stop=$(sed -n 's/^run.sh stopped in \([0-9]*\) ms$/\1/p' "$out/$i.log")
  echo "run $i: $result, stopped in ${stop:-?} ms"
  [ "$result" = ok ] || tail -20 "$out/$i.log"
done
echo "stress-stop: $((runs - failed))/$runs passed under stress-ng --cpu $(nproc)"
[ "$failed" -eq 0 ]
