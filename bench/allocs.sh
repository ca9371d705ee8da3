#!/usr/bin/env bash
# bench/allocs.sh: heap allocations made by `mutual serve` per full mTLS handshake, per resumed
# handshake and per kept-alive request (issue 20), from valgrind's DHAT.
#
# Counts, like bench/instructions.sh's, do not depend on the machine's load. Each case runs
# `mutual serve` under DHAT twice, with N and then 6N units of work (one connection at a time,
# `loadgen --count`), and divides the difference by 5N, so start-up, the warm-up and the first
# (full) handshake of the resumed case cancel out:
#   full      new connections, each a full handshake + one small request
#   resumed   connections with a TLS 1.3 ticket (the first of each run is full)
#   request   small requests on one kept-alive connection (each run opens one connection)
# For each case: allocations and bytes per unit, and the sites that allocate most, each named by
# the first frame that is not the allocator (rustls, aws-lc, tokio or mutual's own).
#
# Environment: SKIP_BUILD=1, N (default 100), TOP (sites listed per case, default 12), LABEL,
# RESULTS (markdown file to append to, default bench/results/allocs-<date>.md), MUTUAL (a binary
# to measure instead of the release build). Needs valgrind (Debian: valgrind) and python3.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
N=${N:-100}
TOP=${TOP:-12}
LABEL=${LABEL:-}
RESULTS=${RESULTS:-$ROOT/bench/results/allocs-$(date -u +%Y-%m-%d).md}
WORK=$(mktemp -d /tmp/mutual-allocs.XXXXXX)
for t in valgrind python3; do
  command -v "$t" >/dev/null || { echo "$t is not installed" >&2; exit 2; }
done

MUTUAL=${MUTUAL:-$TARGET/release/mutual}

. "$ROOT/bench/release.sh"
. "$ROOT/bench/callgrind-common.sh"

# run CASE COUNT LOADGEN-ARGS...: one serve under DHAT, COUNT units of work, its profile in
# $WORK/CASE.COUNT.json.
run() {
  local case=$1 count=$2; shift 2
  local port out=$WORK/$case.$count.json
  port=$("$LOADGEN" free-port)
  RUST_LOG=warn valgrind --tool=dhat --dhat-out-file="$out" \
    "$MUTUAL" serve --listen "127.0.0.1:$port" "${SERVE_ARGS[@]}" 2>"$WORK/$case.$count.log" &
  local vpid=$!
  PIDS+=("$vpid")
  wait_port "$port" || { echo "$case: serve did not start under valgrind" >&2; return 1; }
  local ok
  ok=$("$LOADGEN" --threads 1 "$@" --count "$count" --addr "127.0.0.1:$port" "${TLS[@]}" \
         --duration 300s --json 2>/dev/null | grep -oE '"ok":[0-9]+' | cut -d: -f2)
  kill -INT "$vpid"; wait "$vpid" 2>/dev/null
  [ "$ok" = "$count" ] || { echo "$case: $ok of $count units succeeded" >&2; return 1; }
  [ -s "$out" ] || { echo "$case: no DHAT output" >&2; return 1; }
}

SUMMARY=$WORK/summary.md
{
  echo
  echo "## $(date -u +%Y-%m-%dT%H:%MZ) ${LABEL:+($LABEL) }git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
  echo
  echo "\`bench/allocs.sh\`, N=$N and $((6 * N)) per case, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); binary: $MUTUAL"
} >"$SUMMARY"
for spec in "full:handshakes --concurrency 1" "resumed:handshakes --resume --concurrency 1" \
            "request:requests --concurrency 1"; do
  case=${spec%%:*}; args=${spec#*:}
  # shellcheck disable=SC2086 # args is a word list
  run "$case" "$N" $args && run "$case" "$((6 * N))" $args || continue
  python3 - "$WORK/$case.$N.json" "$WORK/$case.$((6 * N)).json" "$((5 * N))" "$case" "$TOP" \
    >>"$SUMMARY" <<'EOF'
import json, re, sys, collections
small, large, units, case, top = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
ALLOC = re.compile(r'alloc::|__rust|malloc|realloc|calloc|memalign|RawVec|raw_vec|exchange_malloc|'
                   r'finish_grow|grow_one|grow_amortized|reserve|Vec<T|to_vec|clone|bytes::')
SITE = re.compile(r'(mutual_\w+::[\w:]+|rustls::[\w:]+|tokio_rustls::\w+|tokio::\w+|aws_lc_rs::[\w:]+|'
                  r'aws_lc_0_\d+_0_\w+|x509_parser::[\w:]+|asn1_rs::\w+|core::fmt|std::\w+)')
def sites(path):
    d = json.load(open(path))
    ft, out, total = d['ftbl'], collections.defaultdict(lambda: [0, 0]), [0, 0]
    for pp in d['pps']:
        name = 'other'
        for i in pp['fs']:
            f = ft[i]
            if ALLOC.search(f):
                continue
            m = SITE.search(f)
            name = m.group(1) if m else re.sub(r'^0x[0-9A-Fa-f]+: | \(in [^)]*\)', '', f)[:60]
            break
        out[name][0] += pp['tbk']; out[name][1] += pp['tb']
        total[0] += pp['tbk']; total[1] += pp['tb']
    return out, total
a, ta = sites(small)
b, tb = sites(large)
print(f"\n### {case}: {(tb[0] - ta[0]) / units:.1f} allocations, {(tb[1] - ta[1]) / units:,.0f} bytes per unit\n")
print("| site (first frame outside the allocator) | allocations per unit | bytes per unit |")
print("|---|---:|---:|")
rows = sorted(((v[0] - a.get(k, [0, 0])[0]) / units, (v[1] - a.get(k, [0, 0])[1]) / units, k)
              for k, v in b.items())
for n, by, k in [r for r in reversed(rows) if r[0] >= 0.05][:top]:
    print(f"| `{k}` | {n:.1f} | {by:,.0f} |")
EOF
done
cat "$SUMMARY"
mkdir -p "$(dirname "$RESULTS")"
cat "$SUMMARY" >>"$RESULTS"
echo "appended to $RESULTS" >&2
