# bench/callgrind-common.sh: what the scripts that measure one `mutual serve` (profile.sh,
# clients.sh, instructions.sh, memory.sh, allocs.sh) share, sourced after they set LOADGEN and
# WORK (bench/release.sh sets LOADGEN): children killed and WORK removed on exit, a port wait,
# the ECDSA P-256 chain in $C with loadgen's client arguments in TLS, the shared backend on
# BPORT, and SERVE_ARGS, the serve settings those scripts measure. Exits 2 when a piece cannot
# start.

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$WORK"; }
trap cleanup EXIT

# wait_port PORT [TENTHS]: until 127.0.0.1:PORT accepts (default 30 s; callgrind starts slowly).
wait_port() {
  local i
  for i in $(seq 1 "${2:-300}"); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

"$LOADGEN" gen-certs --out "$WORK/certs" >/dev/null || exit 2
C=$WORK/certs
TLS=(--cert "$C/client-chain.pem" --key "$C/client.key" --ca "$C/root.pem" --server-name localhost
     --no-verify-server --kx x25519)
BPORT=$("$LOADGEN" free-port)
"$LOADGEN" --threads 1 backend --listen "127.0.0.1:$BPORT" 2>/dev/null &
PIDS+=($!)
wait_port "$BPORT" || { echo "backend did not start" >&2; exit 2; }
# `mutual serve` as every script measures it (add --listen and any extras): one thread, the
# chain above, the backend, any verified client allowed.
SERVE_ARGS=(--backend "127.0.0.1:$BPORT" --threads 1 --cert "$C/server-chain.pem"
            --key "$C/server.key" --ca "$C/root.pem" --allow-any)
