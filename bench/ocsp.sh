#!/usr/bin/env bash
# OCSP figures (issue 19), with ROWS certificates in the inventory (REVOKED_PER_MILLE revoked):
#   1. responses per second for one certificate, cached (a GET without nonce: one store read by
#      serial, the pre-signed response reused), with wrk over kept-alive connections against
#      `ca serve --ocsp-listen`; and uncached (a POST with a fresh nonce per request from
#      `openssl ocsp`, signed each time), sequentially, as a per-response latency;
#   2. the cost of a status change: `mutual cert revoke` of one certificate, then the first
#      OCSP GET for it (which signs a new response) and the next one (cached again), beside what
#      a CRL user pays for the same change (`mutual ca crl`: re-signing the whole list).
# The inventory is filled by `loadgen ca` (synthetic rows inserted with SQL, as bench/README.md
# describes). Writes a markdown table to OUT.
#
# Knobs: MUTUAL, LOADGEN (binaries; default target/debug, built if missing), ROWS (100000),
# REVOKED_PER_MILLE (10), DURATION (10s), CONNECTIONS (16), THREADS (2), UNCACHED (200), CHANGES (15),
# OUT (bench/results/<date>-ocsp.md), KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."

MUTUAL=${MUTUAL:-target/debug/mutual}
LOADGEN=${LOADGEN:-target/debug/loadgen}
ROWS=${ROWS:-100000}
REVOKED_PER_MILLE=${REVOKED_PER_MILLE:-10}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-2}
UNCACHED=${UNCACHED:-200}
OUT=${OUT:-bench/results/$(date -u +%Y-%m-%d)-ocsp.md}
[ -x "$MUTUAL" ] || cargo build -p mutual
[ -x "$LOADGEN" ] || cargo build -p loadgen
for t in wrk curl openssl python3; do
    command -v "$t" >/dev/null || { echo "ocsp.sh: $t is needed (apt-get install $t)" >&2; exit 2; }
done
MUTUAL=$(realpath "$MUTUAL")
LOADGEN=$(realpath "$LOADGEN")

work=$(mktemp -d /tmp/mutual-ocsp-bench.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ "${KEEP:-}" = 1 ] && echo "work directory kept: $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ns() { date +%s%N; }
ms_since() { echo "scale=2; ($(now_ns) - $1) / 1000000" | bc; }

export MUTUAL_CA_PASSWORD=bench-only-password   # loadgen's throwaway CA password
ca=$work/ca
echo "filling a CA with $ROWS certificates..." >&2
"$LOADGEN" ca --dir "$ca" --tasks 1 --duration 1s --fill "$ROWS" \
    --revoked-per-mille "$REVOKED_PER_MILLE" >"$work/fill.json"
rows=$("$MUTUAL" cert list --dir "$ca" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')

ocsp_port=$(free_port)
api_port=$(free_port)
url=http://127.0.0.1:$ocsp_port/ocsp
"$MUTUAL" ca serve --dir "$ca" --listen 127.0.0.1:"$api_port" --ocsp-listen 127.0.0.1:"$ocsp_port" \
    --rate-limit off >"$work/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
    curl -s -o /dev/null "$url" && break
    sleep 0.1
done

out=$work/out
mkdir -p "$out"
"$MUTUAL" cert issue bench-ocsp --dir "$ca" --out "$out" --ocsp-url "$url" >/dev/null
"$MUTUAL" cert issue bench-change --dir "$ca" --out "$out" --ocsp-url "$url" >/dev/null
int=$ca/intermediate.pem

get_url() { # the RFC 6960 GET URL of a request without nonce for $1
    openssl ocsp -issuer "$int" -cert "$1" -no_nonce -reqout "$work/req.der" >/dev/null 2>&1
    echo "$url/$(base64 -w0 "$work/req.der" | sed 's/+/%2B/g; s/\//%2F/g; s/=/%3D/g')"
}

# 1. cached responses per second.
cached_url=$(get_url "$out/bench-ocsp.pem")
curl -s -o /dev/null "$cached_url" # sign once
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "$cached_url" >"$work/wrk.txt"
rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
lat=$(awk '/Latency/ {print $2; exit}' "$work/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt")

# 1b. uncached: each request carries its own nonce, so each response is signed for it.
t=$(now_ns)
for _ in $(seq 1 "$UNCACHED"); do
    openssl ocsp -issuer "$int" -cert "$out/bench-ocsp.pem" -url "$url" -CAfile "$ca/root.pem" \
        >/dev/null 2>&1
done
uncached_ms=$(echo "scale=2; $(ms_since "$t") / $UNCACHED" | bc)
t=$(now_ns)
for _ in $(seq 1 "$UNCACHED"); do
    openssl ocsp -issuer "$int" -cert "$out/bench-ocsp.pem" -url "$url" -CAfile "$ca/root.pem" \
        -no_nonce >/dev/null 2>&1
done
cached_openssl_ms=$(echo "scale=2; $(ms_since "$t") / $UNCACHED" | bc)

# 2. a status change with ROWS certificates in the inventory, CHANGES times (medians).
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: >"$work/before"; : >"$work/first"; : >"$work/second"; : >"$work/revoke"
for i in $(seq 1 "${CHANGES:-15}"); do
    "$MUTUAL" cert issue "change-$i" --dir "$ca" --out "$out" --ocsp-url "$url" >/dev/null
    change_url=$(get_url "$out/change-$i.pem")
    curl -s -o /dev/null "$change_url"
    curl -s -o /dev/null -w '%{time_total}\n' "$change_url" >>"$work/before"
    t=$(now_ns)
    "$MUTUAL" cert revoke --dir "$ca" --cert "$out/change-$i.pem" --reason key-compromise >/dev/null
    ms_since "$t" >>"$work/revoke"
    curl -s -o "$work/first.der" -w '%{time_total}\n' "$change_url" >>"$work/first"
    curl -s -o /dev/null -w '%{time_total}\n' "$change_url" >>"$work/second"
    openssl ocsp -respin "$work/first.der" -issuer "$int" -cert "$out/change-$i.pem" \
        -CAfile "$ca/root.pem" 2>&1 | grep -q "change-$i.pem: revoked" \
        || { echo "ocsp.sh: the first response after revocation $i does not say revoked" >&2; exit 1; }
done
revoke_ms=$(median <"$work/revoke")
before=$(median <"$work/before")
first=$(median <"$work/first")
second=$(median <"$work/second")
t=$(now_ns)
"$MUTUAL" ca crl --dir "$ca" --out "$work/crl.pem" >/dev/null
crl_ms=$(ms_since "$t")
crl_entries=$(openssl crl -in "$work/crl.pem" -noout -text | grep -c "Serial Number:" || true)
ms() { echo "scale=2; $1 * 1000 / 1" | bc; }

mkdir -p "$(dirname "$OUT")"
{
    echo "# OCSP responder ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "\`bench/ocsp.sh\` on $(nproc) CPUs, \`$(basename "$MUTUAL")\` from $(dirname "$MUTUAL" | sed "s|$PWD/||"), SQLite inventory with $rows certificates ($REVOKED_PER_MILLE per mille revoked)."
    echo
    echo "| measure | value |"
    echo "|---|---|"
    echo "| cached GET responses/s (wrk, $THREADS threads, $CONNECTIONS connections, $DURATION) | $rps |"
    echo "| cached GET mean latency (wrk) | $lat |"
    echo "| non-2xx responses during the run | ${non2xx:-0} |"
    echo "| \`openssl ocsp\` round trip, nonce (signed per request), mean of $UNCACHED | $uncached_ms ms |"
    echo "| \`openssl ocsp\` round trip, no nonce (cached), mean of $UNCACHED | $cached_openssl_ms ms |"
    echo "| status change: \`mutual cert revoke\` (process start to exit), median of ${CHANGES:-15} | $revoke_ms ms |"
    echo "| status change: curl GET before the revocation (cached), median | $(ms "$before") ms |"
    echo "| status change: first curl GET after it (reads the new status, signs), median | $(ms "$first") ms |"
    echo "| status change: next curl GET (cached again), median | $(ms "$second") ms |"
    echo "| the same change for CRL users: \`mutual ca crl\` ($crl_entries entries) | $crl_ms ms |"
    echo
    echo "A revocation costs an OCSP responder one signature for the next request about that"
    echo "certificate, whatever the inventory's size; a CRL is re-signed whole and every relying party"
    echo "downloads it again. The \`openssl ocsp\` rows include starting openssl (most of the time)."
    echo "The machine is shared (other builds ran beside it): compare rows of one run, not runs."
} >"$OUT"
cat "$OUT"
