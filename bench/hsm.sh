#!/usr/bin/env bash
# Keys in a PKCS#11 token beside keys in files, same run, same machine (issue 18):
#   1. certificates issued per second by `ca serve` (POST /v1/renew over kept-alive mTLS
#      connections, one certificate + one inventory row per request) with the intermediate key
#      in intermediate.key, then in a SoftHSM2 token;
#   2. full mTLS 1.3 handshakes per second through `mutual serve` with its TLS key in a file,
#      then in the token (loadgen handshakes, X25519, new TCP connection each).
# A throwaway SoftHSM2 token directory is made per run (SOFTHSM2_CONF points at it). Writes a
# markdown table to OUT and prints it.
#
# Knobs: MUTUAL, LOADGEN (binaries; default target/debug, built if missing), DURATION (10s),
# CONCURRENCY (16), MODULE (/usr/lib/softhsm/libsofthsm2.so), OUT
# (bench/results/<date>-hsm.md), KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."

MUTUAL=${MUTUAL:-target/debug/mutual}
LOADGEN=${LOADGEN:-target/debug/loadgen}
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-16}
MODULE=${MODULE:-/usr/lib/softhsm/libsofthsm2.so}
OUT=${OUT:-bench/results/$(date -u +%Y-%m-%d)-hsm.md}
[ -x "$MUTUAL" ] || cargo build -p mutual
[ -x "$LOADGEN" ] || cargo build -p loadgen
for t in softhsm2-util python3; do
    command -v "$t" >/dev/null || { echo "hsm.sh: $t is needed (apt-get install softhsm2)" >&2; exit 2; }
done
[ -f "$MODULE" ] || { echo "hsm.sh: no PKCS#11 module at $MODULE" >&2; exit 2; }

work=$(mktemp -d /tmp/mutual-hsm-bench.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ "${KEEP:-}" = 1 ] && echo "work directory kept: $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

export MUTUAL_CA_PASSWORD=bench-password
export SOFTHSM2_CONF=$work/softhsm2.conf
mkdir -p "$work/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
    "$work/tokens" >"$SOFTHSM2_CONF"
PIN=20261205
echo "$PIN" >"$work/pin"
softhsm2-util --init-token --free --label bench --pin "$PIN" --so-pin 87654321 >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "hsm.sh: nothing listens on $1" >&2; exit 1
}
field() { python3 -c "import json,sys; v=json.load(open('$1')); print(v$2)"; }

echo "| what | key | rate (/s) | failed | server CPU s | per server CPU-second |" >"$work/table.md"
echo "|---|---|---|---|---|---|" >>"$work/table.md"
row() { # what key json
    local rate failed cpu per
    rate=$(field "$3" "['rate']")
    failed=$(field "$3" "['failed']")
    cpu=$(field "$3" ".get('server_cpu_s', '')")
    per=$(field "$3" ".get('per_server_cpu_s', '')")
    echo "| $1 | $2 | $rate | $failed | $cpu | $per |" >>"$work/table.md"
    echo "$1, key in $2: $rate/s ($failed failed)" >&2
}

# 1. Issuance: the same CA shape, intermediate key in a file, then in the token.
make_ca() { # dir [init flags...]
    local dir=$1; shift
    "$MUTUAL" ca init --dir "$dir" --name "Bench CA" "$@" >/dev/null
    "$MUTUAL" cert issue bench-client --dir "$dir" --out "$dir.client" --san dns:bench.client \
        --ttl 24h >/dev/null
}
issue_run() { # label dir
    local p; p=$(free_port)
    "$MUTUAL" ca serve --dir "$2" --listen "127.0.0.1:$p" --rate-limit off \
        2>>"$work/ca-serve-$1.log" >/dev/null &
    pids+=($!); local spid=$!
    wait_port "$p"
    "$LOADGEN" requests --addr "127.0.0.1:$p" --concurrency "$CONCURRENCY" \
        --duration "$DURATION" --post /v1/renew --body '{}' \
        --cert "$2.client/bench-client.pem" --key "$2.client/bench-client.key" \
        --ca "$2/root.pem" --no-verify-server --server-pid "$spid" --json >"$work/issue-$1.json"
    kill "$spid" 2>/dev/null || true
    row "certificates issued (ca serve, /v1/renew)" "$1" "$work/issue-$1.json"
}
make_ca "$work/ca-file"
make_ca "$work/ca-token" --pkcs11-module "$MODULE" \
    --pkcs11-uri "pkcs11:token=bench;object=intermediate" --pkcs11-pin-file "$work/pin"
issue_run file "$work/ca-file"
issue_run pkcs11 "$work/ca-token"

# 2. Handshakes through serve: the same CA and client, the server key in a file, then in the token.
"$MUTUAL" cert issue server-file --dir "$work/ca-file" --out "$work/leaves" --server \
    --san dns:localhost >/dev/null
"$MUTUAL" cert issue server-token --dir "$work/ca-file" --out "$work/leaves" --server \
    --san dns:localhost --pkcs11-module "$MODULE" --pkcs11-uri "pkcs11:token=bench;object=tls" \
    --pkcs11-pin-file "$work/pin" >/dev/null
bport=$(free_port)
"$LOADGEN" --threads 1 backend --listen "127.0.0.1:$bport" 2>"$work/backend.log" &
pids+=($!)
wait_port "$bport"
hs_run() { # label key
    local p; p=$(free_port)
    "$MUTUAL" serve --listen "127.0.0.1:$p" --backend "127.0.0.1:$bport" \
        --cert "$work/leaves/server-$1.pem" --key "$2" --ca "$work/ca-file/root.pem" --allow-any \
        2>>"$work/serve-$1.log" >/dev/null &
    pids+=($!); local spid=$!
    wait_port "$p"
    "$LOADGEN" handshakes --addr "127.0.0.1:$p" --concurrency "$CONCURRENCY" \
        --duration "$DURATION" --cert "$work/ca-file.client/bench-client.pem" \
        --key "$work/ca-file.client/bench-client.key" --ca "$work/ca-file/root.pem" \
        --server-pid "$spid" --json >"$work/hs-$1.json"
    kill "$spid" 2>/dev/null || true
    row "full mTLS 1.3 handshakes (serve)" "$1" "$work/hs-$1.json"
}
hs_run file "$work/leaves/server-file.key"
hs_run token "pkcs11:token=bench;object=tls?module-path=$MODULE&pin-source=$work/pin"

mkdir -p "$(dirname "$OUT")"
{
    echo "# Keys in SoftHSM2 beside keys in files ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "$(nproc) CPUs, $(softhsm2-util --version 2>/dev/null | head -1 | sed 's/^/SoftHSM /'), duration $DURATION, concurrency $CONCURRENCY, binaries $MUTUAL."
    echo
    cat "$work/table.md"
} >"$OUT"
cat "$OUT"
