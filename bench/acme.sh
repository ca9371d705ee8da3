#!/usr/bin/env bash
# bench/acme.sh: ACME orders completed per second (issue 16). One `ca serve --acme` (SQLite
# store) and bench/acme_orders.py: WORKERS threads, each its own account, each looping over a
# whole order (newOrder, authorization, http-01 validated by the CA against a local responder,
# finalize with a fresh P-256 CSR, certificate download) for DURATION seconds. The client is Python
# (`cryptography` + `requests`, the acme venv of the tests), so the figure is a floor for the
# server: the client spends CPU on the same 2 cores.
#
# Knobs: MUTUAL (binary; default target/release/mutual, else target/debug/mutual), WORKERS (4),
# DURATION (seconds, 20), VENV (target/acme-venv), OUT (bench/results/<date>-acme.md).
set -euo pipefail
cd "$(dirname "$0")/.."

MUTUAL=${MUTUAL:-$( [ -x target/release/mutual ] && echo target/release/mutual || echo target/debug/mutual )}
WORKERS=${WORKERS:-4}
DURATION=${DURATION:-20}
VENV=${VENV:-target/acme-venv}
OUT=${OUT:-bench/results/$(date -u +%Y-%m-%d)-acme.md}
[ -x "$MUTUAL" ] || cargo build -p mutual
[ -x "$VENV/bin/python" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q cryptography requests; }

work=$(mktemp -d /tmp/mutual-acme-bench.XXXXXX)
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export MUTUAL_CA_PASSWORD=bench-password
"$MUTUAL" ca init --dir "$work/ca" --name "ACME bench CA" >/dev/null
port=$(free_port); http_port=$(free_port)
"$MUTUAL" ca serve --dir "$work/ca" --listen "127.0.0.1:$port" --rate-limit off \
    --acme --acme-allow-dns example.test --acme-http-port "$http_port" \
    --acme-resolve bench.example.test=127.0.0.1 --acme-orders-per-hour 0 \
    2>"$work/serve.log" &
pid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

result=$(REQUESTS_CA_BUNDLE="$work/ca/root.pem" "$VENV/bin/python" bench/acme_orders.py \
    "https://127.0.0.1:$port/acme/directory" "$http_port" bench.example.test "$WORKERS" "$DURATION")
echo "$result"
mkdir -p "$(dirname "$OUT")"
{
    echo "# ACME orders per second ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo "\`$MUTUAL\`, SQLite store, $WORKERS workers for ${DURATION}s, nproc=$(nproc); client: bench/acme_orders.py"
    echo
    echo '```json'
    echo "$result"
    echo '```'
} >"$OUT"
echo "written to $OUT"
