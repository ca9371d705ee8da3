#!/usr/bin/env bash
# bench/est.sh: a fleet of devices enrolling over EST (issue 17). N simulated devices (default
# 10,000) with factory certificates from an openssl-made manufacturer CA enroll at
# /.well-known/est/simpleenroll, then re-enroll at simplereenroll with what they got, CONCURRENCY
# at a time (default 16), against `mutual ca serve --est` on 127.0.0.1 (SQLite inventory). The
# client is crates/mutual/tests/est/fleet.py (Python ssl + cryptography: one TLS 1.3 handshake,
# one P-256 key and one CSR per request, as a device does), so the figure includes the client's
# work on the same 2 cores: it is a lower bound of the server's rate, not a server-only figure.
#
# Reported: enrollments/s and re-enrollments/s, failures (must be 0), distinct serials (must be
# 2N), inventory rows by requested_by. Environment: N, CONCURRENCY, SKIP_BUILD=1,
# OUT=FILE (default bench/results/est-<date>.txt).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
N=${N:-10000}
CONCURRENCY=${CONCURRENCY:-16}
OUT=${OUT:-$ROOT/bench/results/est-$(date -u +%Y-%m-%d).txt}
WORK=$(mktemp -d /tmp/mutual-est.XXXXXX)
trap 'kill "${CA_PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

[ "${SKIP_BUILD:-}" = 1 ] || (cd "$ROOT" && cargo build --release -p mutual)
M=$TARGET/release/mutual
[ -x "$M" ] || M=$TARGET/debug/mutual
PY=python3
$PY -c 'import cryptography.hazmat.primitives.serialization.pkcs7' 2>/dev/null || PY=$ROOT/target/acme-venv/bin/python

export MUTUAL_CA_PASSWORD=bench-est-password
"$M" ca init --dir "$WORK/ca" --name "Fleet CA" >/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/mfg.key" \
  -out "$WORK/mfg.pem" -subj "/O=Acme/CN=Acme Manufacturing CA" -days 3650 \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$M" ca serve --dir "$WORK/ca" --listen "127.0.0.1:$PORT" --rate-limit off --est \
  --est-bootstrap-ca "$WORK/mfg.pem" --est-identity 'spiffe://fleet.example/device/{serial}' \
  2>"$WORK/ca.log" &
CA_PID=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done

$PY "$ROOT/crates/mutual/tests/est/fleet.py" "https://127.0.0.1:$PORT" "$WORK/ca/root.pem" \
  "$WORK/mfg.pem" "$WORK/mfg.key" "$N" "$CONCURRENCY" "$WORK/fleet.json"
"$M" cert list --dir "$WORK/ca" --json > "$WORK/inventory.json"

mkdir -p "$(dirname "$OUT")"
{ echo "server: $M"; $PY - "$WORK/fleet.json" "$WORK/inventory.json" "$N" "$CONCURRENCY" <<'PY'; } | tee "$OUT"
import json, sys, collections, platform, os
r = json.load(open(sys.argv[1])); inv = json.load(open(sys.argv[2])); n = int(sys.argv[3])
serials = r["enrolled"] + r["reenrolled"]
by = collections.Counter((x.get("requested_by") or "-").split(":")[0] + ":" + (x.get("requested_by") or "-").split(":")[1] if ":" in (x.get("requested_by") or "") else "-" for x in inv)
print(f"EST fleet: {n} devices, concurrency {sys.argv[4]}, {os.cpu_count()} cores, {platform.python_version()}")
print(f"enroll:   {len(r['enrolled'])} in {r['enroll_seconds']:.1f} s = {len(r['enrolled'])/r['enroll_seconds']:.0f}/s")
print(f"reenroll: {len(r['reenrolled'])} in {r['reenroll_seconds']:.1f} s = {len(r['reenrolled'])/r['reenroll_seconds']:.0f}/s")
print(f"failures: {len(r['failures'])}  distinct serials: {len(set(serials))} of {2*n}")
print("inventory rows by requested_by:", dict(by))
PY
