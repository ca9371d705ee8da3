#!/usr/bin/env bash
# Runs the whole test suite N times back to back, optionally with every core kept busy by CPU
# hogs, and reports every failing test by name. A flaky test fails one run in ten: one green
# run proves little, N green runs on a busy machine prove the suite waits for events, not luck.
#
#   tests/soak.sh [--runs N] [--busy] [--hogs K] [-- extra cargo test args]
#
#   --runs N   full runs (default 1)
#   --busy     keep every core busy with CPU hogs (`yes > /dev/null`, one per core) while testing
#   --hogs K   number of hogs with --busy (default: the number of cores)
#   -- ARGS    passed to cargo test instead of `--workspace` (e.g. `-- -p mutual --test proxy_edge`)
#
# Builds once first (`cargo test --no-run`), so the runs time the tests, not the compiler.
# Logs: target/soak/run-N.log. Exit 0 when every run passed, 1 when any test failed, 2 on bad usage.
set -uo pipefail
cd "$(dirname "$0")/.."

runs=1
busy=0
hogs=$(nproc 2>/dev/null || echo 2)
target=(--workspace)
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=${2:-}; shift 2 || { echo "--runs needs a number" >&2; exit 2; } ;;
    --busy) busy=1; shift ;;
    --hogs) hogs=${2:-}; shift 2 || { echo "--hogs needs a number" >&2; exit 2; } ;;
    --) shift; target=("$@"); break ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$runs" in ''|*[!0-9]*|0) echo "--runs must be a positive number" >&2; exit 2 ;; esac
case "$hogs" in ''|*[!0-9]*) echo "--hogs must be a number" >&2; exit 2 ;; esac

export CARGO_TERM_COLOR=never
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
# Same conformance data as .ci/run, when it is beside the repo.
if [ -z "${MUTUAL_LIMBO:-}" ] && [ -f ../shared/conformance/limbo.json ]; then
  export MUTUAL_LIMBO="$PWD/../shared/conformance/limbo.json"
  export MUTUAL_LIMBO_BASELINE="$PWD/../shared/conformance/limbo-rustls-webpki-baseline.json"
fi

logdir=target/soak
mkdir -p "$logdir"

hog_pids=()
stop_hogs() {
  for p in "${hog_pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${hog_pids[@]}"; do wait "$p" 2>/dev/null; done
  hog_pids=()
}
trap stop_hogs EXIT
trap 'stop_hogs; exit 130' INT TERM

echo "== building once: cargo test ${target[*]} --no-run"
if ! cargo test "${target[@]}" --no-run >"$logdir/build.log" 2>&1; then
  tail -n 40 "$logdir/build.log"
  echo "build failed (full log: $logdir/build.log)" >&2
  exit 2
fi

if [ "$busy" = 1 ]; then
  for _ in $(seq "$hogs"); do
    yes >/dev/null &
    hog_pids+=($!)
  done
  echo "== $hogs CPU hog(s) running (pids ${hog_pids[*]})"
fi

# Parses one `cargo test` log: prints "passed failed" on the first line, then each failing test
# as `binary::test` (or `binary (no test result)` when a binary died without naming a test).
parse_log() {
  awk '
    /^ *Running / {
      bin = $2
      if (match($0, /\(([^)]*)\)/)) {
        p = substr($0, RSTART + 1, RLENGTH - 2); n = split(p, parts, "/"); bin = parts[n]
        sub(/-[0-9a-f]+$/, "", bin)
      }
      open_bin = bin; seen_result = 0; next
    }
    /^ *Doc-tests / { open_bin = "doc:" $2; seen_result = 0; next }
    /^test .* \.\.\. FAILED$/ {
      t = $0; sub(/^test /, "", t); sub(/ \.\.\. FAILED$/, "", t)
      key = open_bin "::" t
      if (!(key in failed)) { failed[key] = 1; order[++nf] = key }
      next
    }
    /^test result: / {
      seen_result = 1
      for (i = 1; i <= NF; i++) {
        if ($(i + 1) ~ /^passed/) passed += $i
        if ($(i + 1) ~ /^failed/) nfail += $i
      }
      next
    }
    /^error: test failed, to rerun pass/ && !seen_result {
      key = open_bin " (died without a test result)"
      if (!(key in failed)) { failed[key] = 1; order[++nf] = key; nfail++ }
    }
    END {
      print passed + 0, nfail + 0
      for (i = 1; i <= nf; i++) print order[i]
    }
  ' "$1"
}

declare -a rows
any_fail=0
total_start=$(date +%s)
for run in $(seq "$runs"); do
  log="$logdir/run-$run.log"
  echo "== run $run/$runs: cargo test ${target[*]} --no-fail-fast (log: $log)"
  start=$(date +%s)
  cargo test "${target[@]}" --no-fail-fast >"$log" 2>&1
  rc=$?
  wall=$(( $(date +%s) - start ))
  parsed=$(parse_log "$log")
  read -r passed nfailed <<<"$(head -n 1 <<<"$parsed")"
  failing=$(tail -n +2 <<<"$parsed" | paste -sd ',' - | sed 's/,/, /g')
  if [ "$rc" -ne 0 ] && [ -z "$failing" ]; then
    failing="(cargo exited $rc: see $log)"
    nfailed=${nfailed:-0}
    [ "$nfailed" = 0 ] && nfailed=1
  fi
  [ "$rc" -ne 0 ] && any_fail=1
  while IFS= read -r t; do
    [ -n "$t" ] && echo "   FAILED: $t"
  done < <(tail -n +2 <<<"$parsed")
  printf -v row "%-4s %6ss %7s %7s  %s" "$run" "$wall" "$passed" "$nfailed" "${failing:--}"
  rows+=("$row")
  echo "   run $run: ${wall}s, $passed passed, $nfailed failed"
done
stop_hogs
total=$(( $(date +%s) - total_start ))

echo
echo "== soak summary: $runs run(s)$([ "$busy" = 1 ] && echo ", $hogs CPU hog(s) busy"), ${total}s in all"
printf "%-4s %7s %7s %7s  %s\n" "run" "wall" "passed" "failed" "failing tests"
for r in "${rows[@]}"; do echo "$r"; done
if [ "$any_fail" = 1 ]; then
  echo "FAIL: at least one run had failures (logs in $logdir/)"
  exit 1
fi
echo "OK: every run passed"
