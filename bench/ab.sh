#!/usr/bin/env bash
# bench/ab.sh: two `mutual` binaries on the same host, alternated: full (hs_c16) and resumed
# (resume_c16) handshakes with the pinning of bench/run.sh (server on CPU 1, loadgen and backend
# on CPU 0), per server CPU-second and user/system µs per connection. For a change whose effect
# a full run cannot show because the host moved between runs (docs/PERFORMANCE.md, session 10).
#
# Usage: OLD=path/to/mutual NEW=path/to/mutual [ROUNDS=3] [SECS=8] bench/ab.sh
# (build the old one in a worktree: git worktree add --detach /tmp/old REV; cargo build --release
# -p mutual there). Needs the release loadgen (cargo build --release -p loadgen) and taskset.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
L=${CARGO_TARGET_DIR:-$ROOT/target}/release/loadgen
: "${OLD:?set OLD to the binary before}" "${NEW:?set NEW to the binary after}"
W=$(mktemp -d); "$L" gen-certs --out "$W/c" >/dev/null; C=$W/c
BP=$("$L" free-port); taskset -c 0 "$L" --threads 1 backend --listen "127.0.0.1:$BP" 2>/dev/null & BPID=$!
trap 'kill $BPID 2>/dev/null; rm -rf "$W"' EXIT
TLS=(--cert "$C/client-chain.pem" --key "$C/client.key" --ca "$C/root.pem" --server-name localhost --no-verify-server --kx x25519)
one() { # BINARY LABEL
  local P SP mode r
  P=$("$L" free-port)
  RUST_LOG=warn taskset -c 1 "$1" serve --listen "127.0.0.1:$P" --backend "127.0.0.1:$BP" --threads 1 \
    --cert "$C/server-chain.pem" --key "$C/server.key" --ca "$C/root.pem" --allow-any 2>/dev/null & SP=$!
  sleep 0.5
  for mode in "" "--resume"; do
    # Warm-up (and the first tickets), then the measured run.
    taskset -c 0 "$L" --threads 1 handshakes --addr "127.0.0.1:$P" "${TLS[@]}" --concurrency 16 --duration 2s $mode --server-pid "$SP" --json >/dev/null 2>&1
    r=$(taskset -c 0 "$L" --threads 1 handshakes --addr "127.0.0.1:$P" "${TLS[@]}" --concurrency 16 --duration "${SECS:-8}s" $mode --server-pid "$SP" --json 2>/dev/null)
    echo "$2 ${mode:-full} $(grep -oE '"(per_server_cpu_s|server_user_us_per_unit|server_sys_us_per_unit|resumed_fraction)":[0-9.]+' <<<"$r" | tr '\n' ' ')"
  done
  kill "$SP"; wait "$SP" 2>/dev/null
}
for _ in $(seq 1 "${ROUNDS:-3}"); do
  one "$OLD" old
  one "$NEW" new
done
