#!/usr/bin/env bash
# bench/run.sh: mutual serve side by side with nginx, HAProxy and stunnel (issue 7), each
# handshake case measured by two clients: loadgen and openssl s_time (issue 25).
#
# Same machine, same ECDSA P-256 chain (root, intermediate, leaves; client certificates required
# and verified by every contender), same backend, same number of server cores, TLS 1.3 only,
# one run. Writes bench/results/<date>[-quick].md. See bench/README.md.
#
# Environment:
#   QUICK=1          about a minute: short runs, small transfers, few idle connections
#   THREADS=N        worker threads/processes for every contender, and the number of cores the
#                    server is pinned to (default 1: figures are per core)
#   CONTENDERS="..." subset/order of: mutual nginx haproxy stunnel (default: all four)
#   KX=x25519|mlkem|auto  key exchange the load generator offers (default x25519: all support it)
#   OUT=FILE         where to write the markdown (default bench/results/<date>[-quick].md)
#   NOTE="..."       a caveat printed at the top of the results (e.g. "noisy: other builds ran")
#   KEEP=1           keep the work directory (configs, server logs) and print where it is
#   SKIP_BUILD=1     use the release binaries already in $CARGO_TARGET_DIR (or target/)
#
# Not `set -e`: one contender failing must not stop the others; each failure is reported.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=${QUICK:-0}
THREADS=${THREADS:-1}
CONTENDERS=${CONTENDERS:-"mutual nginx haproxy stunnel"}
KX=${KX:-x25519}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
DATE=$(date -u +%Y-%m-%d)
SUFFIX=""
[ "$QUICK" = 1 ] && SUFFIX="-quick"
OUT=${OUT:-$ROOT/bench/results/$DATE$SUFFIX.md}
NOTE=${NOTE:-}
WORK=$(mktemp -d /tmp/mutual-bench.XXXXXX)
RES=$WORK/results.jsonl
STARTED=$(date +%s)

log() { printf '[%3ss] %s\n' "$(( $(date +%s) - STARTED ))" "$*" >&2; }

# Every process this script starts is remembered and stopped by pid on exit.
STARTED_PIDS=()
cleanup() {
  for p in "${STARTED_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${STARTED_PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- sizes and durations
if [ "$QUICK" = 1 ]; then
  D=2s; BULK=256MiB; BULK_MAX=15s; IDLE_WANT=500; IDLE_MAX=20s; CRYPTO_SECS=0.3; CA_D=2s
else
  D=10s; BULK=1GiB; BULK_MAX=60s; IDLE_WANT=10000; IDLE_MAX=60s; CRYPTO_SECS=1; CA_D=5s
fi
# The CA figures always use a 100,000-row inventory (filling it takes seconds).
CA_FILL=${CA_FILL:-100000}
# Concurrent issuances: tasks in process, kept-alive connections through the API. The CA records
# concurrent issuances in one transaction (a group commit), so its rate grows with concurrency
# until signing is the bound (issue 20; 4 and 4 before).
CA_TASKS=${CA_TASKS:-32}
CA_API_CONC=${CA_API_CONC:-16}
# Idle connections need a descriptor on each side of the proxy; stay under the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)
IDLE=$(( (NOFILE - 200) / 2 ))
[ "$IDLE" -gt "$IDLE_WANT" ] && IDLE=$IDLE_WANT
MAXCONN=$(( NOFILE / 2 - 50 ))

# ---------------------------------------------------------------- peers, installed if missing
APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] || return 1
  if [ "$APT_UPDATED" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}
NGINX_STREAM=/usr/lib/nginx/modules/ngx_stream_module.so
case " $CONTENDERS " in *" nginx "*)
  command -v nginx >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
  command -v nginx >/dev/null 2>&1 || apt_install nginx-light || apt_install nginx
  # Debian builds the stream (TCP) module as a separate package.
  [ -e "$NGINX_STREAM" ] || apt_install libnginx-mod-stream ;;
esac
case " $CONTENDERS " in *" haproxy "*)
  command -v haproxy >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
  command -v haproxy >/dev/null 2>&1 || apt_install haproxy ;;
esac
case " $CONTENDERS " in *" stunnel "*)
  command -v stunnel >/dev/null 2>&1 || command -v stunnel4 >/dev/null 2>&1 || apt_install stunnel4 ;;
esac
STUNNEL=$(command -v stunnel || command -v stunnel4 || true)
# The second client of the handshake cases (`openssl s_time`, issue 25).
command -v openssl >/dev/null 2>&1 || apt_install openssl

# ---------------------------------------------------------------- build
cd "$ROOT" || exit 2
MUTUAL_BUILD_ERR=""
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building loadgen (release)"
  cargo build --release -q -p loadgen || { echo "loadgen does not build" >&2; exit 2; }
  case " $CONTENDERS " in *" mutual "*)
    log "building mutual (release)"
    if ! cargo build --release -q -p mutual 2>"$WORK/mutual-build.log"; then
      MUTUAL_BUILD_ERR="does not build: $(grep -m1 -E '^error' -A1 "$WORK/mutual-build.log" | tr '\n`"\\' '    ' | cut -c1-200)"
    fi ;;
  esac
fi
LOADGEN=$TARGET/release/loadgen
MUTUAL=$TARGET/release/mutual
[ -x "$LOADGEN" ] || { echo "no $LOADGEN: build it or unset SKIP_BUILD" >&2; exit 2; }

# ---------------------------------------------------------------- cores
NCPU=$(nproc)
if [ "$NCPU" -gt "$THREADS" ] && command -v taskset >/dev/null 2>&1; then
  range() { if [ "$1" = "$2" ]; then echo "$1"; else echo "$1-$2"; fi; }
  SERVER_CPUS=$(range $((NCPU - THREADS)) $((NCPU - 1)))
  CLIENT_CPUS=$(range 0 $((NCPU - THREADS - 1)))
  SRV=(taskset -c "$SERVER_CPUS")
  CLI=(taskset -c "$CLIENT_CPUS")
  CLIENT_THREADS=$((NCPU - THREADS))
  PINNING="server on CPU $SERVER_CPUS, load generator and backend on CPU $CLIENT_CPUS (taskset)"
else
  SRV=(); CLI=(); CLIENT_THREADS=$NCPU
  PINNING="not pinned (need more CPUs than THREADS=$THREADS, and taskset)"
fi

# ---------------------------------------------------------------- certificates and backend
CERTS=$WORK/certs
"$LOADGEN" gen-certs --out "$CERTS" >/dev/null || exit 2
TLS=(--cert "$CERTS/client-chain.pem" --key "$CERTS/client.key" --ca "$CERTS/root.pem"
     --server-name localhost --no-verify-server --kx "$KX")

wait_port() {
  local i
  for i in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

BPORT=$("$LOADGEN" free-port)
"${CLI[@]}" "$LOADGEN" --threads 1 backend --listen "127.0.0.1:$BPORT" 2>"$WORK/backend.log" &
BACKEND_PID=$!
STARTED_PIDS+=("$BACKEND_PID")
wait_port "$BPORT" || { echo "backend did not start" >&2; exit 2; }

# ---------------------------------------------------------------- contenders
# Each start_X writes its config into $WORK/X, starts the server pinned to the server cores in
# the foreground of a background job, and sets SPID. Output goes to $WORK/X/out.log.
start_nginx() {
  [ -e "$NGINX_STREAM" ] || { WHY="nginx stream module missing (apt package libnginx-mod-stream)"; return 1; }
  command -v nginx >/dev/null 2>&1 || { WHY="nginx not installed"; return 1; }
  local d=$WORK/nginx; mkdir -p "$d"
  cat >"$d/nginx.conf" <<EOF
load_module $NGINX_STREAM;
worker_processes $THREADS;
worker_rlimit_nofile $NOFILE;
pid $d/nginx.pid;
error_log $d/error.log warn;
daemon off;
events { worker_connections $MAXCONN; }
stream {
  upstream backend { server 127.0.0.1:$BPORT; }
  server {
    listen 127.0.0.1:$PORT ssl backlog=4096;
    ssl_certificate $CERTS/server-chain.pem;
    ssl_certificate_key $CERTS/server.key;
    ssl_protocols TLSv1.3;
    ssl_client_certificate $CERTS/root.pem;
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_session_tickets on;
    proxy_pass backend;
    proxy_timeout 10m;
  }
}
EOF
  "${SRV[@]}" nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" >"$d/out.log" 2>&1 &
  SPID=$!
}

start_haproxy() {
  command -v haproxy >/dev/null 2>&1 || { WHY="haproxy not installed"; return 1; }
  local d=$WORK/haproxy; mkdir -p "$d"
  cat >"$d/haproxy.cfg" <<EOF
global
  nbthread $THREADS
  maxconn $MAXCONN
defaults
  mode tcp
  timeout connect 5s
  timeout client 10m
  timeout server 10m
frontend bench
  bind 127.0.0.1:$PORT ssl crt $CERTS/haproxy.pem ca-file $CERTS/root.pem verify required ssl-min-ver TLSv1.3
  default_backend be
backend be
  server b1 127.0.0.1:$BPORT
EOF
  "${SRV[@]}" haproxy -f "$d/haproxy.cfg" -db >"$d/out.log" 2>&1 &
  SPID=$!
}

start_stunnel() {
  [ -n "$STUNNEL" ] || { WHY="stunnel not installed"; return 1; }
  local d=$WORK/stunnel; mkdir -p "$d"
  # stunnel has no worker count: it runs a thread per connection. Pinning it to the same
  # cores is what makes it comparable.
  cat >"$d/stunnel.conf" <<EOF
foreground = yes
pid =
output = $d/stunnel.log
debug = 3
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[bench]
accept = 127.0.0.1:$PORT
connect = 127.0.0.1:$BPORT
cert = $CERTS/server-chain.pem
key = $CERTS/server.key
CAfile = $CERTS/root.pem
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
TIMEOUTidle = 600
EOF
  "${SRV[@]}" "$STUNNEL" "$d/stunnel.conf" >"$d/out.log" 2>&1 &
  SPID=$!
}

start_mutual() {
  [ -z "$MUTUAL_BUILD_ERR" ] || { WHY=$MUTUAL_BUILD_ERR; return 1; }
  [ -x "$MUTUAL" ] || { WHY="no release binary at $MUTUAL"; return 1; }
  local d=$WORK/mutual; mkdir -p "$d"
  local help
  help=$("$MUTUAL" serve --help 2>&1)
  if ! grep -q -- "--listen" <<<"$help"; then
    WHY="mutual serve is not implemented in this build (no --listen in 'mutual serve --help')"
    return 1
  fi
  local args=(serve --listen "127.0.0.1:$PORT" --backend "127.0.0.1:$BPORT"
              --cert "$CERTS/server-chain.pem" --key "$CERTS/server.key" --ca "$CERTS/root.pem" --allow-any)
  if grep -q -- "--threads" <<<"$help"; then
    args+=(--threads "$THREADS")
  else
    MUTUAL_NOTE="mutual serve has no --threads yet: it ran with its default worker count, pinned to $THREADS core(s)"
  fi
  grep -q -- "--max-connections" <<<"$help" && args+=(--max-connections "$MAXCONN")
  # Logs at warn, like the peers here (nginx error_log warn, stunnel debug = 3, HAProxy no log).
  RUST_LOG=warn "${SRV[@]}" "$MUTUAL" "${args[@]}" >"$d/out.log" 2>&1 &
  SPID=$!
}

status() { "$LOADGEN" status --contender "$1" --text "$2" >>"$RES"; }

# Runs one measurement against the current contender and appends its JSON line; bounded in time.
measure() {
  local who=$1 case=$2 limit=$3; shift 3
  local line
  line=$(timeout --kill-after=5 "$limit" "${CLI[@]}" "$LOADGEN" --threads "$CLIENT_THREADS" "$@" \
           --addr "127.0.0.1:$PORT" "${TLS[@]}" --json --contender "$who" --case "$case" \
           --server-pid "$SPID" 2>>"$WORK/loadgen.err")
  if [ -n "$line" ]; then
    echo "$line" >>"$RES"
    log "$who $case: $(grep -oE '"(rate|mb_per_s|rss_per_conn_kib|failed|per_server_cpu_s)":[0-9.]+' <<<"$line" | tr '\n' ' ')"
  else
    echo "{\"contender\":\"$who\",\"case\":\"$case\",\"ok\":0,\"failed\":1,\"first_error\":\"no result within $limit\"}" >>"$RES"
    log "$who $case: no result within $limit"
  fi
}

stop_server() {
  kill "$SPID" 2>/dev/null
  local i
  for i in $(seq 1 50); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$SPID" 2>/dev/null
  wait "$SPID" 2>/dev/null
  sleep 0.5
}

secs() { local v=${1%s}; echo $(( ${v%.*} + 20 ))s; }
DL=$(secs "$D")

run_contender() {
  local who=$1
  WHY=""; SPID=""
  PORT=$("$LOADGEN" free-port)
  log "$who: starting on 127.0.0.1:$PORT"
  if ! "start_$who"; then
    status "$who" "not available: $WHY"; log "$who: not available: $WHY"; return
  fi
  STARTED_PIDS+=("$SPID")
  if ! wait_port "$PORT"; then
    WHY="did not listen within 10 s: $(tail -n 3 "$WORK/$who/out.log" 2>/dev/null | tr '\n' ' ' | tr -d '"\\')"
    status "$who" "not available: $WHY"; log "$who: not available: $WHY"; stop_server; return
  fi
  # One short run proves the set-up (client cert accepted, backend reached) before measuring.
  local sanity
  sanity=$(timeout 15 "${CLI[@]}" "$LOADGEN" --threads 1 handshakes --addr "127.0.0.1:$PORT" \
             --concurrency 1 --duration 1s "${TLS[@]}" --json 2>/dev/null)
  if ! grep -qE '"ok":[1-9]' <<<"$sanity"; then
    WHY="sanity handshake failed: $(grep -oE '"first_error":"[^"]*"' <<<"$sanity" | cut -d'"' -f4)"
    status "$who" "not available: $WHY"; log "$who: not available: $WHY"; stop_server; return
  fi
  status "$who" ok
  measure "$who" hs_c1 "$DL" handshakes --concurrency 1 --duration "$D"
  measure "$who" hs_c16 "$DL" handshakes --concurrency 16 --duration "$D"
  measure "$who" hs_c256 "$DL" handshakes --concurrency 256 --duration "$D"
  measure "$who" resume_c16 "$DL" handshakes --resume --concurrency 16 --duration "$D"
  # The independent client (issue 25): openssl s_time, one connection at a time, same certs
  # (leaf + intermediate sent), counted only when the backend's response came back.
  measure "$who" hs_c1_openssl "$DL" s-time --seconds "${D%s}" --scratch "$WORK"
  measure "$who" resume_c1_openssl "$DL" s-time --reuse --seconds "${D%s}" --scratch "$WORK"
  measure "$who" req_c16 "$DL" requests --concurrency 16 --duration "$D"
  measure "$who" bulk_up "$(secs "$BULK_MAX")" bulk --bytes "$BULK" --direction up --max-time "$BULK_MAX"
  measure "$who" bulk_down "$(secs "$BULK_MAX")" bulk --bytes "$BULK" --direction down --max-time "$BULK_MAX"
  measure "$who" idle "$(secs "$IDLE_MAX")" idle --count "$IDLE" --max-time "$IDLE_MAX"
  stop_server
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "crypto limit"
"${SRV[@]}" "$LOADGEN" crypto --seconds "$CRYPTO_SECS" --json >>"$RES" 2>>"$WORK/loadgen.err"

# The floor: the same requests straight to the backend, no TLS, no proxy.
log "direct: backend without TLS"
status direct ok
PORT=$BPORT; SPID=$BACKEND_PID
line=$(timeout "$DL" "${CLI[@]}" "$LOADGEN" --threads "$CLIENT_THREADS" requests --plain --concurrency 16 \
         --duration "$D" --addr "127.0.0.1:$BPORT" --json --contender direct --case req_c16 2>>"$WORK/loadgen.err")
[ -n "$line" ] && echo "$line" >>"$RES"

# The client side: plaintext in, mTLS out. `mutual connect` (pinned to the server cores) in
# front of `mutual serve` (pinned there too): new local connections, each one a new mTLS
# connection from connect to serve (resumed with a ticket when connect has one, as it would in
# production), and kept-alive requests through both proxies. Peers' client-side modes are not
# measured yet.
run_connect() {
  WHY=""; SPID=""
  PORT=$("$LOADGEN" free-port)
  log "mutual connect -> mutual serve: starting"
  if ! start_mutual; then log "connect: not available: $WHY"; return; fi
  local serve_pid=$SPID serve_port=$PORT
  STARTED_PIDS+=("$serve_pid")
  wait_port "$serve_port" || { log "connect: serve did not listen"; SPID=$serve_pid; stop_server; return; }
  local cport d=$WORK/connect
  cport=$("$LOADGEN" free-port); mkdir -p "$d"
  local args=(connect --listen "127.0.0.1:$cport" --remote "localhost:$serve_port"
              --cert "$CERTS/client-chain.pem" --key "$CERTS/client.key" --ca "$CERTS/root.pem")
  grep -q -- "--threads" <<<"$("$MUTUAL" connect --help 2>&1)" && args+=(--threads "$THREADS")
  RUST_LOG=warn "${SRV[@]}" "$MUTUAL" "${args[@]}" >"$d/out.log" 2>&1 &
  local cpid=$!
  STARTED_PIDS+=("$cpid")
  if ! wait_port "$cport"; then
    log "connect: did not listen: $(tail -n 2 "$d/out.log" | tr '\n' ' ')"
    kill "$cpid" 2>/dev/null; SPID=$serve_pid; stop_server; return
  fi
  PORT=$cport; SPID=$cpid
  measure mutual connect_hs_c16 "$DL" handshakes --plain --concurrency 16 --duration "$D"
  measure mutual connect_req_c16 "$DL" requests --plain --concurrency 16 --duration "$D"
  stop_server
  SPID=$serve_pid; stop_server
}

# The online CA: certificates issued per second through its API. `POST /v1/renew` over
# CA_API_CONC kept-alive mTLS connections (one new certificate and one inventory row per request), the rate
# limit off; the CA server runs pinned like the proxies.
run_ca_api() {
  local d=$WORK/ca-api port pid line
  mkdir -p "$d"
  export MUTUAL_CA_PASSWORD=bench-only-password
  if ! "$MUTUAL" ca init --dir "$d/ca" >"$d/init.log" 2>&1 ||
     ! "$MUTUAL" cert issue bench-client --dir "$d/ca" --client --san dns:bench-client.local \
         --out "$d" >>"$d/init.log" 2>&1; then
    log "CA API: cannot set up a CA: $(tail -n 1 "$d/init.log")"; unset MUTUAL_CA_PASSWORD; return
  fi
  port=$("$LOADGEN" free-port)
  RUST_LOG=warn "${SRV[@]}" "$MUTUAL" ca serve --dir "$d/ca" --listen "127.0.0.1:$port" \
    --rate-limit off >"$d/serve.log" 2>&1 &
  pid=$!
  STARTED_PIDS+=("$pid")
  unset MUTUAL_CA_PASSWORD
  if ! wait_port "$port"; then
    log "CA API: ca serve did not listen: $(tail -n 2 "$d/serve.log" | tr '\n' ' ')"
    SPID=$pid; stop_server; return
  fi
  line=$(timeout 60 "${CLI[@]}" "$LOADGEN" --threads "$CLIENT_THREADS" requests \
           --addr "127.0.0.1:$port" --post /v1/renew --body '{}' --concurrency "$CA_API_CONC" --duration "$CA_D" \
           --cert "$d/bench-client.pem" --key "$d/bench-client.key" --ca "$d/ca/root.pem" --no-verify-server \
           --json --contender mutual --case ca_api_renew --server-pid "$pid" 2>>"$WORK/loadgen.err")
  if [ -n "$line" ]; then
    echo "$line" >>"$RES"
    log "CA API: $(grep -oE '"(rate|failed|per_server_cpu_s)":[0-9.]+' <<<"$line" | tr '\n' ' ')"
  else
    log "CA API: no result (see $WORK/loadgen.err with KEEP=1)"
  fi
  SPID=$pid; stop_server
}

MUTUAL_NOTE=""
for c in $CONTENDERS; do run_contender "$c"; done
case " $CONTENDERS " in *" mutual "*)
  [ -z "$MUTUAL_BUILD_ERR" ] && [ -x "$MUTUAL" ] && run_connect
  # The CA: issuance into the SQLite inventory, then list and CRL times with CA_FILL rows.
  log "CA: issuing for $CA_D, then list and CRL with $CA_FILL certificates"
  if [ -z "$MUTUAL_BUILD_ERR" ] && [ -x "$MUTUAL" ]; then
    line=$(timeout 300 "${SRV[@]}" "$LOADGEN" --threads "$THREADS" ca --dir "$WORK/ca" --tasks "$CA_TASKS" \
             --duration "$CA_D" --fill "$CA_FILL" --mutual "$MUTUAL" --json --contender mutual --case ca \
             2>>"$WORK/loadgen.err")
    if [ -n "$line" ]; then
      echo "$line" >>"$RES"
      log "CA: $(grep -oE '"(issued_per_s|cpu_s_per_1000|rows_per_group|list_s|crl_s|cli_cert_list_s|cli_ca_crl_s)":[0-9.]+' <<<"$line" | tr '\n' ' ')"
    else
      log "CA: no result (see $WORK/loadgen.err with KEEP=1)"
    fi
    run_ca_api
  fi ;;
esac
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
ver() { "$@" 2>&1 | head -n 1; }
mkdir -p "$(dirname "$OUT")"
{
  echo "# mutual vs nginx, HAProxy, stunnel: $DATE$([ "$QUICK" = 1 ] && echo ' (QUICK=1)')"
  echo
  [ -n "$NOTE" ] && { echo "> **$NOTE**"; echo; }
  echo "Written by \`bench/run.sh\` in $(( $(date +%s) - STARTED )) s. What each figure means: docs/PERFORMANCE.md."
  echo
  echo "## Machine"
  echo
  echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), nproc $NCPU"
  echo "- kernel: $(uname -sr); open files limit $NOFILE"
  echo "- load average (1, 5, 15 min): $LOAD_BEFORE at start, $LOAD_AFTER at end"
  echo
  echo "## Settings"
  echo
  echo "- THREADS=$THREADS worker(s) per contender; $PINNING"
  echo "- each timed run: $D; bulk: $BULK per direction (stopped at $BULK_MAX); idle: $IDLE connections (stopped at $IDLE_MAX)"
  echo "- TLS 1.3 only, key exchange offered by the client: $KX; ECDSA P-256 root -> intermediate -> leaf,"
  echo "  client sends leaf + intermediate, every server trusts only the root and requires and verifies the client cert"
  echo "- the load generator does not verify the server (keeps its CPU off the critical path); the servers do all their work"
  echo "- two clients for the handshake cases: loadgen (rustls, X25519 only) and \`openssl s_time\` ($(openssl version 2>/dev/null | cut -d' ' -f1-2),"
  echo "  its default ClientHello: X25519 key share, leaf + intermediate sent), one connection at a time (\`-new\`: full,"
  echo "  \`-reuse\`: resumed), each counted only when the backend's response came back; h2load is not used: it has no"
  echo "  client-certificate option and every contender requires one"
  echo "- every contender forwards TCP to the same backend (\`loadgen backend\`); nginx uses its stream module, HAProxy mode tcp"
  [ -n "$MUTUAL_NOTE" ] && echo "- $MUTUAL_NOTE"
  echo
  echo "## Versions"
  echo
  echo "- $(ver rustc -V)"
  DIRTY=""
  git -C "$ROOT" diff --quiet HEAD -- crates Cargo.toml 2>/dev/null || DIRTY=", with uncommitted changes under crates/"
  [ -x "$MUTUAL" ] && echo "- mutual: $(ver "$MUTUAL" --version) (built from the working tree at git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$DIRTY)"
  command -v nginx >/dev/null 2>&1 && echo "- $(ver nginx -v)"
  command -v haproxy >/dev/null 2>&1 && echo "- $(ver haproxy -v)"
  [ -n "$STUNNEL" ] && echo "- $("$STUNNEL" -version 2>&1 | grep -m1 '^stunnel')"
  echo "- $(ver openssl version)"
  echo
  echo "## Results"
  echo
  "$LOADGEN" report --in "$RES"
  echo
  echo "Ratios are mutual/peer on the same row; for latency and memory rows lower is better, so a ratio"
  echo "below 1 is a win there. \"per server CPU-second\" divides the successes by the CPU time the server"
  echo "process tree used (/proc/PID/stat), so it stays comparable when the load generator was the limit."
} >"$OUT"
cp "$RES" "${OUT%.md}.jsonl"
log "wrote $OUT (raw lines: ${OUT%.md}.jsonl)"
# KEEP=1 keeps configs and logs of the contenders for a look after the run.
if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
