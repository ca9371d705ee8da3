#!/usr/bin/env bash
# bench/memory.sh: memory per idle established connection of `mutual serve` (issue 20), and
# where those bytes are allocated.
#
# Memory does not depend on CPU contention, so this figure is repeatable on a busy machine.
# Two methods, same server config as bench/run.sh's mutual contender (release build,
# `--threads 1`, ECDSA P-256 root -> intermediate -> leaf, `--allow-any`, TCP mode):
#   rss      the bench's own `idle` case: a native serve is warmed up (WARM full handshakes,
#            c16), then `loadgen idle` opens N mTLS connections (each proven with one request,
#            so the backend connection exists too), holds them, and reports the server's RSS
#            growth / N. Repeated REPS times, each with a fresh serve.
#   massif   (MASSIF=1) the same under `valgrind --tool=massif` with MASSIF_N connections:
#            heap bytes per connection at the peak (all connections held, minus the heap
#            before they were opened) and the allocation sites of the peak snapshot
#            (ms_print's tree, kept in bench/results/memory-<date>-massif.txt).
#
# Environment: SKIP_BUILD=1, N (default 5000, capped by the open-files limit), REPS (default 3),
# WARM (default 500), MASSIF=1, MASSIF_N (default 1000), LABEL (what this run measures),
# RESULTS (markdown file to append to, default bench/results/memory-<date>.md), MUTUAL (a
# binary to measure instead of the release build; then say which in COMMIT).
# Bounded: opening stops after 120 s (300 s under massif).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
N=${N:-5000}
REPS=${REPS:-3}
WARM=${WARM:-500}
MASSIF=${MASSIF:-0}
MASSIF_N=${MASSIF_N:-1000}
LABEL=${LABEL:-}
DAY=$(date -u +%Y-%m-%d)
RESULTS=${RESULTS:-$ROOT/bench/results/memory-$DAY.md}
WORK=$(mktemp -d /tmp/mutual-memory.XXXXXX)

MUTUAL=${MUTUAL:-$TARGET/release/mutual}
. "$ROOT/bench/release.sh"
. "$ROOT/bench/callgrind-common.sh"

ulimit -n "$(ulimit -Hn)" 2>/dev/null
MAXN=$(( ($(ulimit -n) - 200) / 2 ))
[ "$N" -gt "$MAXN" ] && N=$MAXN
[ "$MASSIF_N" -gt "$MAXN" ] && MASSIF_N=$MAXN

num() { grep -oE "\"$2\":[0-9.]+" "$1" | head -n 1 | cut -d: -f2; }

# serve [PREFIX...]: starts `mutual serve` (under PREFIX, e.g. valgrind) on a fresh PORT; SPID.
serve() {
  PORT=$("$LOADGEN" free-port)
  RUST_LOG=warn "$@" "$MUTUAL" serve --listen "127.0.0.1:$PORT" "${SERVE_ARGS[@]}" \
    2>>"$WORK/serve.log" &
  SPID=$!
  PIDS+=("$SPID")
  wait_port "$PORT" 600 || { echo "serve did not start" >&2; exit 1; }
}

warm() {
  "$LOADGEN" --threads 1 handshakes --addr "127.0.0.1:$PORT" "${TLS[@]}" --concurrency 16 \
    --count "$1" --duration 300s --json >"$WORK/warm.json" 2>/dev/null
}

stop() { kill -INT "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; }

ROWS=""
for r in $(seq 1 "$REPS"); do
  serve
  warm "$WARM"
  "$LOADGEN" --threads 1 idle --addr "127.0.0.1:$PORT" "${TLS[@]}" --count "$N" \
    --max-time 120s --server-pid "$SPID" --json >"$WORK/idle.$r.json" 2>/dev/null
  stop
  ready=$(num "$WORK/idle.$r.json" ready)
  per=$(num "$WORK/idle.$r.json" rss_per_conn_kib)
  echo "rss run $r: ${ready:-0} connections held, ${per:-?} KiB each" >&2
  [ -n "$per" ] || { echo "no RSS figure: $(cat "$WORK/idle.$r.json")" >&2; exit 1; }
  ROWS+="| RSS growth / connections (\`loadgen idle\`, run $r) | $ready | $per |"$'\n'
done

MASSIF_NOTE=""
if [ "$MASSIF" = 1 ]; then
  command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }
  echo "massif: $MASSIF_N idle connections under valgrind..." >&2
  MOUT=$WORK/massif.out
  T0=$(date +%s%N)
  serve valgrind --tool=massif --massif-out-file="$MOUT" --threshold=0.5 --max-snapshots=200 \
    --time-unit=ms --detailed-freq=1000000
  warm 100
  sleep 1
  T1=$(date +%s%N)
  "$LOADGEN" --threads 1 idle --addr "127.0.0.1:$PORT" "${TLS[@]}" --count "$MASSIF_N" \
    --parallel 16 --max-time 300s --hold 2s --json >"$WORK/massif-idle.json" 2>/dev/null
  stop
  held=$(num "$WORK/massif-idle.json" ready)
  # Heap (mem_heap_B + mem_heap_extra_B, the allocator's own overhead) at the last snapshot
  # before the first idle connection (massif's time is ms since start) and at the peak.
  read -r base peak < <(awk -F= -v t1="$(( (T1 - T0) / 1000000 ))" '
    /^time=/ { t = $2 } /^mem_heap_B=/ { h = $2 }
    /^mem_heap_extra_B=/ { v = h + $2; if (t <= t1) b = v; if (v > m) m = v }
    END { print b + 0, m + 0 }' "$MOUT")
  per_heap=$(awk -v b="$base" -v p="$peak" -v n="$held" 'BEGIN { printf "%.2f", (p - b) / n / 1024 }')
  # Only the header and the peak snapshot's tree: the whole ms_print output is megabytes.
  ms_print "$MOUT" 2>/dev/null | awk '
    NR == 1, /Detailed snapshots/ {
      print
      if ($0 ~ /Detailed snapshots/) { s = $0; sub(/ \(peak\).*/, "", s); n = split(s, a, /[^0-9]+/); peak = a[n] }
      next
    }
    peak != "" && !inpeak && $1 == peak && $2 ~ /^[0-9,]+$/ { inpeak = 1 }
    inpeak && /^-----/ && seen { exit }
    inpeak { print; if ($0 ~ /->/) seen = 1 }' >"$ROOT/bench/results/memory-$DAY-massif.txt"
  ROWS+="| heap at the peak minus before, incl. allocator overhead (massif) | $held | $per_heap |"$'\n'
  MASSIF_NOTE=" Allocation sites of the massif peak: \`bench/results/memory-$DAY-massif.txt\`."
fi

if [ -z "${COMMIT:-}" ]; then
  COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
  git -C "$ROOT" diff --quiet HEAD -- crates bench/loadgen 2>/dev/null || COMMIT="$COMMIT+changes"
fi
TABLE="| method | connections held | KiB per connection |
|---|---:|---:|
${ROWS%$'\n'}"
echo "$TABLE"
[ -f "$RESULTS" ] || cat >"$RESULTS" <<EOF
# Memory per idle established connection, \`mutual serve\` ($DAY)

Written by \`bench/memory.sh\` (see its header and docs/PERFORMANCE.md, "Memory per idle
connection"). Each section is one run; compare runs by their commit.
EOF
cat >>"$RESULTS" <<EOF

## $(date -u +%H:%M) UTC, commit $COMMIT${LABEL:+: $LABEL}

N=$N, REPS=$REPS, WARM=$WARM full handshakes first; TCP mode, \`--threads 1\`, no audit log or
metrics endpoint.$MASSIF_NOTE

$TABLE
EOF
echo "appended to $RESULTS" >&2
