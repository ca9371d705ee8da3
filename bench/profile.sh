#!/usr/bin/env bash
# bench/profile.sh: callgrind profiles of `mutual serve` under loadgen (issue 7).
#
# Instruction counts are repeatable on a busy machine, unlike wall-clock profiles, so this is
# what docs/PERFORMANCE.md's "Profiles" section quotes. Three cases, each in its own serve
# process under callgrind: full mTLS handshakes, resumed handshakes (TLS 1.3 tickets), and small
# requests over kept-alive connections. Counters are zeroed after start-up and a warm-up, so the
# figures are per unit of work: instructions per handshake / per request.
#
# Environment: SKIP_BUILD=1, OUT=DIR (default bench/results/profile-<date>), SECS (load per case,
# default 20: callgrind runs the server ~50x slower), TOP (symbols listed per case, default 25).
# Needs valgrind (Debian: valgrind).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SECS=${SECS:-20}
TOP=${TOP:-25}
OUT=${OUT:-$ROOT/bench/results/profile-$(date -u +%Y-%m-%d)}
WORK=$(mktemp -d /tmp/mutual-profile.XXXXXX)
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }

MUTUAL=$TARGET/release/mutual

. "$ROOT/bench/release.sh"
. "$ROOT/bench/callgrind-common.sh"
mkdir -p "$OUT"

# profile NAME LOADGEN-ARGS...: one serve under callgrind, warm-up, zero, load, dump.
profile() {
  local name=$1; shift
  local port out=$OUT/callgrind.$name
  port=$("$LOADGEN" free-port)
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out.%p" --dump-instr=no \
    "$MUTUAL" serve --listen "127.0.0.1:$port" "${SERVE_ARGS[@]}" 2>"$WORK/$name.vg.log" &
  local vpid=$!
  PIDS+=("$vpid")
  wait_port "$port" || { echo "$name: serve did not start under valgrind" >&2; return 1; }
  "$LOADGEN" --threads 1 "$@" --addr "127.0.0.1:$port" "${TLS[@]}" --duration 3s --json >/dev/null 2>&1
  callgrind_control -z "$vpid" >/dev/null 2>&1
  "$LOADGEN" --threads 1 "$@" --addr "127.0.0.1:$port" "${TLS[@]}" --duration "${SECS}s" --json \
    >"$OUT/$name.json" 2>/dev/null
  callgrind_control -d "$vpid" >/dev/null 2>&1
  kill -INT "$vpid"; wait "$vpid" 2>/dev/null
  # The dump taken right after the load is the one with the counters of the load alone.
  local f
  f=$(ls -1 "$out".*.1 2>/dev/null | head -n 1)
  [ -n "$f" ] || { echo "$name: no callgrind dump" >&2; return 1; }
  local ir ok
  ir=$(grep -m1 '^summary:' "$f" | awk '{print $2}')
  ok=$(grep -oE '"ok":[0-9]+' "$OUT/$name.json" | cut -d: -f2)
  echo "$name: $ok units, $ir instructions, $(( ir / (ok > 0 ? ok : 1) )) per unit" | tee -a "$OUT/summary.txt"
  callgrind_annotate --threshold=100 --inclusive=no "$f" 2>/dev/null | head -n $((TOP + 25)) >"$OUT/$name.self.txt"
  callgrind_annotate --threshold=100 --inclusive=yes "$f" 2>/dev/null | head -n $((TOP + 25)) >"$OUT/$name.inclusive.txt"
}

: >"$OUT/summary.txt"
profile full handshakes --concurrency 4
profile resumed handshakes --resume --concurrency 4
profile requests requests --concurrency 4
echo "wrote $OUT (summary.txt, <case>.self.txt, <case>.inclusive.txt, raw callgrind files)"
