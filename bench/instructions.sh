#!/usr/bin/env bash
# bench/instructions.sh: instructions executed by `mutual serve` per full mTLS handshake, per
# resumed handshake and per kept-alive request (issue 20), from callgrind.
#
# Wall-clock figures mean little on a shared 2-core machine; instruction counts of the server
# process are repeatable under any load, so this is the regression figure every change is
# compared with (docs/PERFORMANCE.md, "Instructions per handshake"). Same server config as
# bench/profile.sh (release build, `--threads 1`, ECDSA P-256 root -> intermediate -> leaf,
# the client offering X25519 and sending leaf + intermediate, `--allow-any`).
#
# Each case runs its own `mutual serve` under callgrind: warm-up, `callgrind_control -z`, an
# idle period (its instructions per second are the baseline subtracted from the load), then a
# fixed amount of work (`loadgen --count N`, one connection at a time) and `-d`:
#   full      N new connections, each a full handshake + one small request:
#             (Ir - idle) / N
#   resumed   N connections with a TLS 1.3 ticket (the first is full):
#             (Ir - idle - full x ok-resumed) / resumed
#   request   one kept-alive connection, N then 2N small requests (each run opens one
#             connection): (Ir(2N) - Ir(N)) / N, so the handshake cancels out
#
# Environment: SKIP_BUILD=1, N (connections per handshake case, default 200), REQUESTS (default
# 2000), IDLE_SECS (default 5), LABEL (what this run measures, e.g. "main" or "lever A"),
# RESULTS (markdown file to append to, default bench/results/instructions-<date>.md), MUTUAL (a
# binary to measure instead of the release build, e.g. a copy built from another commit; then
# say which in COMMIT), AUDIT=1 (production settings: `--audit-log FILE --metrics ADDR` on every
# serve, so the audit line and the counters are in the figures; the table says so).
# Bounded: every load stops after at most 300 s. Needs valgrind (Debian: valgrind).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
N=${N:-200}
REQUESTS=${REQUESTS:-2000}
IDLE_SECS=${IDLE_SECS:-5}
LABEL=${LABEL:-}
RESULTS=${RESULTS:-$ROOT/bench/results/instructions-$(date -u +%Y-%m-%d).md}
MAX_SECS=300
WORK=$(mktemp -d /tmp/mutual-instructions.XXXXXX)
for t in valgrind callgrind_control; do
  command -v "$t" >/dev/null || { echo "$t is not installed (apt-get install valgrind)" >&2; exit 2; }
done

MUTUAL=${MUTUAL:-$TARGET/release/mutual}

. "$ROOT/bench/release.sh"
. "$ROOT/bench/callgrind-common.sh"

now() { date +%s.%N; }
# ir FILE: total instructions of one callgrind dump.
ir() { grep -m1 '^summary:' "$1" | awk '{print $2}'; }
# field JSON NAME: a number from loadgen's one-line JSON.
field() { grep -oE "\"$2\":[0-9]+" "$1" | head -n 1 | cut -d: -f2; }

# A serve under callgrind, warmed up and zeroed, then idle for IDLE_SECS and dumped: sets
# VPID, PORT, DUMP (the callgrind output prefix), NDUMP (dumps so far) and IDLE_RATE (Ir/s).
start_serve() {
  local name=$1
  PORT=$("$LOADGEN" free-port)
  DUMP=$WORK/callgrind.$name
  local extra=()
  [ "${AUDIT:-0}" = 1 ] && extra=(--audit-log "$WORK/$name.audit.log" --metrics "127.0.0.1:$("$LOADGEN" free-port)")
  RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$DUMP.%p" --dump-instr=no \
    "$MUTUAL" serve --listen "127.0.0.1:$PORT" "${SERVE_ARGS[@]}" "${extra[@]}" \
    2>"$WORK/$name.vg.log" &
  VPID=$!
  PIDS+=("$VPID")
  NDUMP=0
  wait_port "$PORT" 600 || { echo "$name: serve did not start under valgrind" >&2; exit 1; }
  # Warm-up: lazy initialisation, allocator arenas, the first tickets.
  "$LOADGEN" --threads 1 handshakes --addr "127.0.0.1:$PORT" "${TLS[@]}" --concurrency 1 \
    --count 20 --duration "${MAX_SECS}s" --json >"$WORK/$name.warm.json" 2>&1
  callgrind_control -z "$VPID" >/dev/null 2>&1 || { echo "$name: callgrind_control -z failed" >&2; exit 1; }
  sleep "$IDLE_SECS"
  dump
  IDLE_RATE=$(awk -v i="$DUMP_IR" -v s="$IDLE_SECS" 'BEGIN { printf "%.0f", i / s }')
}

# dump: asks for a dump and sets DUMP_IR to its instruction count (the counters restart at each
# dump). Not called in $(...): NDUMP must survive it.
dump() {
  callgrind_control -d "$VPID" >/dev/null 2>&1 || { echo "callgrind_control -d failed" >&2; exit 1; }
  NDUMP=$((NDUMP + 1))
  local f=$DUMP.$VPID.$NDUMP i
  for i in $(seq 1 300); do
    [ -s "$f" ] && grep -q '^summary:' "$f" && break
    sleep 0.1
  done
  DUMP_IR=$(ir "$f")
  [ -n "$DUMP_IR" ] || { echo "no callgrind dump in $f" >&2; exit 1; }
}

stop_serve() { kill -INT "$VPID" 2>/dev/null; wait "$VPID" 2>/dev/null; }

# load OUT.json LOADGEN-ARGS...: runs loadgen against the serve, sets LOAD_SECS and LOAD_IR
# (the dump's instructions minus the idle baseline over the same time).
load() {
  local json=$1; shift
  local t0 t1
  t0=$(now)
  "$LOADGEN" --threads 1 "$@" --addr "127.0.0.1:$PORT" "${TLS[@]}" --concurrency 1 \
    --duration "${MAX_SECS}s" --json >"$json" 2>/dev/null
  t1=$(now)
  dump
  LOAD_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  LOAD_IR=$(awk -v r="$DUMP_IR" -v rate="$IDLE_RATE" -v s="$LOAD_SECS" 'BEGIN { printf "%.0f", r - rate * s }')
}

expect_ok() {
  local json=$1 want=$2 ok
  ok=$(field "$json" ok)
  [ "${ok:-0}" = "$want" ] || { echo "expected $want successes, got ${ok:-none}: $(cat "$json")" >&2; exit 1; }
}

echo "full handshakes: $N connections under callgrind..." >&2
start_serve full
load "$WORK/full.json" handshakes --count "$N"
expect_ok "$WORK/full.json" "$N"
FULL=$(awk -v i="$LOAD_IR" -v n="$N" 'BEGIN { printf "%.0f", i / n }')
FULL_IDLE=$IDLE_RATE
stop_serve
AUDIT_NOTE=""
if [ "${AUDIT:-0}" = 1 ]; then
  # Proof the audit log was on: one line per connection (warm-up included).
  AUDIT_NOTE="; audit log (a file) + metrics on (AUDIT=1): $(wc -l <"$WORK/full.audit.log" 2>/dev/null || echo 0) audit lines for $N + 20 warm-up connections"
fi

echo "resumed handshakes: $N connections under callgrind..." >&2
start_serve resumed
load "$WORK/resumed.json" handshakes --resume --count "$N"
expect_ok "$WORK/resumed.json" "$N"
RESUMED_N=$(field "$WORK/resumed.json" resumed)
[ "${RESUMED_N:-0}" -gt 0 ] || { echo "no handshake was resumed: $(cat "$WORK/resumed.json")" >&2; exit 1; }
RESUMED=$(awk -v i="$LOAD_IR" -v n="$N" -v r="$RESUMED_N" -v f="$FULL" \
  'BEGIN { printf "%.0f", (i - (n - r) * f) / r }')
RESUMED_IDLE=$IDLE_RATE
stop_serve

echo "kept-alive requests: $REQUESTS and $((2 * REQUESTS)) requests under callgrind..." >&2
start_serve requests
load "$WORK/req1.json" requests --count "$REQUESTS"
expect_ok "$WORK/req1.json" "$REQUESTS"
R1=$LOAD_IR
load "$WORK/req2.json" requests --count "$((2 * REQUESTS))"
expect_ok "$WORK/req2.json" "$((2 * REQUESTS))"
REQUEST=$(awk -v a="$R1" -v b="$LOAD_IR" -v n="$REQUESTS" 'BEGIN { printf "%.0f", (b - a) / n }')
REQ_IDLE=$IDLE_RATE
stop_serve

if [ -z "${COMMIT:-}" ]; then
  COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$ROOT" diff --quiet HEAD -- crates bench/loadgen 2>/dev/null || COMMIT="$COMMIT+changes"
fi
SUITE=$(grep -oE '"suite":"[^"]*"' "$WORK/full.json" | cut -d'"' -f4)
mega() { awk -v x="$1" 'BEGIN { printf "%.3f M", x / 1e6 }'; }
kilo() { awk -v x="$1" 'BEGIN { printf "%.1f k", x / 1e3 }'; }
TABLE=$(cat <<EOF
| per unit (server process, instructions) | value | units measured | idle baseline (Ir/s) |
|---|---:|---:|---:|
| full mTLS handshake + 1 small request | $(mega "$FULL") | $N | $FULL_IDLE |
| resumed handshake + 1 small request | $(mega "$RESUMED") | $RESUMED_N of $N resumed | $RESUMED_IDLE |
| small request, kept-alive connection | $(kilo "$REQUEST") | $REQUESTS | $REQ_IDLE |
EOF
)
echo "$TABLE"

[ -f "$RESULTS" ] || cat >"$RESULTS" <<EOF
# Instructions per unit of work, \`mutual serve\` under callgrind ($(date -u +%Y-%m-%d))

Written by \`bench/instructions.sh\` (see its header and docs/PERFORMANCE.md, "Instructions per
handshake (callgrind)"). Each section is one run; compare runs by their commit.
EOF
cat >>"$RESULTS" <<EOF

## $(date -u +%H:%M) UTC, commit $COMMIT${LABEL:+: $LABEL}

N=$N, REQUESTS=$REQUESTS, IDLE_SECS=$IDLE_SECS; suite ${SUITE:-?}, X25519; $(valgrind --version)$AUDIT_NOTE;
load average at the end: $(cut -d' ' -f1-3 /proc/loadavg).

$TABLE
EOF
echo "appended to $RESULTS" >&2
