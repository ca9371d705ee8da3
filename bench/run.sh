#!/usr/bin/env bash
# bench/run.sh: mutual serve side by side with nginx, HAProxy and stunnel (issue 7), each
# handshake case measured by two clients: loadgen and openssl s_time (issue 25).
#
# Same machine, same ECDSA P-256 chain (root, intermediate, leaves; client certificates required
# and verified by every contender), same backend, same number of server cores, TLS 1.3 only,
# one run. Writes bench/results/<date>[-quick].md. See bench/README.md. The floor of issue 20 (a
# plain TCP proxy on the same cases) gives the crypto + floor bounds the report derives.
#
# Environment:
#   QUICK=1          about a minute: short runs, small transfers, few idle connections
#   THREADS=N        worker threads/processes for every contender, and the number of cores the
#                    server is pinned to (default 1: figures are per core)
#   CONTENDERS="..." subset/order of: mutual nginx haproxy stunnel (default: all four)
#   KX=x25519|mlkem|auto  key exchange the load generator offers (default x25519: all support it)
#   OPEN_RATE=N      requests per second of the open-loop latency case req_c16_open (default
#                    16000 over 16 kept-alive connections: a moderate load for every contender)
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
OPEN_RATE=${OPEN_RATE:-16000}
# The TLS 1.3 suites every server chooses from, in its own order (not the client's): mutual's
# default (AES-128-GCM-SHA256 first, as Go and BoringSSL servers do), given to nginx, HAProxy and
# stunnel too so that every contender negotiates the same suite (the report lists them).
SUITES=${SUITES:-TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256}
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
# D2: the cases measured since issue 20 (HTTP mode, client side, threads), kept short so the
# full run stays under 15 minutes.
if [ "$QUICK" = 1 ]; then
  D=2s; D2=1s; BULK=256MiB; BULK_MAX=15s; IDLE_WANT=500; IDLE_MAX=20s; CRYPTO_SECS=0.3; CA_D=2s
else
  D=10s; D2=5s; BULK=1GiB; BULK_MAX=60s; IDLE_WANT=10000; IDLE_MAX=60s; CRYPTO_SECS=1; CA_D=5s
fi
# The CA figures always use a 100,000-row inventory (filling it takes seconds).
CA_FILL=${CA_FILL:-100000}
# Concurrent issuances: tasks in process, kept-alive connections through the API. The CA records
# concurrent issuances in one transaction (a group commit), so its rate grows with concurrency
# until signing is the bound. A fleet's CA sees 64 and more requests at once (issue 20, session
# 9: 64 and 64; 32 and 16 before, 4 and 4 before that). 256 tasks in process (issue 20, helper
# "ca"): with 64, half the tasks waited for the other half's fsync and the core idled (0.79 used).
CA_TASKS=${CA_TASKS:-256}
CA_API_CONC=${CA_API_CONC:-64}
# Idle connections need a descriptor on each side of the proxy; stay under the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)
IDLE=$(( (NOFILE - 200) / 2 ))
IDLE_LIMITED=""
if [ "$IDLE" -gt "$IDLE_WANT" ]; then
  IDLE=$IDLE_WANT
else
  # Raising the hard limit needs CAP_SYS_RESOURCE (not in every container): say so in the report.
  IDLE_LIMITED="this machine cannot hold $IDLE_WANT idle connections through a proxy: the open-files hard limit is $(ulimit -Hn) per process and a proxy needs two descriptors per connection, so $IDLE were opened"
fi
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
# The client's TLS settings without the key exchange (TLS adds KX's; the client side's references
# add X25519MLKEM768).
TLS_BASE=(--cert "$CERTS/client-chain.pem" --key "$CERTS/client.key" --ca "$CERTS/root.pem"
          --server-name localhost --no-verify-server)
TLS=("${TLS_BASE[@]}" --kx "$KX")

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
# The lines every nginx config here starts with (DIR; "stream" also loads the stream module).
nginx_globals() {
  [ "${2:-}" = stream ] && echo "load_module $NGINX_STREAM;"
  cat <<EOF
worker_processes $THREADS;
worker_rlimit_nofile $NOFILE;
pid $1/nginx.pid;
error_log $1/error.log warn;
daemon off;
events { worker_connections $MAXCONN; }
EOF
}

# The server side of every nginx mTLS server block: TLS 1.3, the client certificate required,
# the suite chosen in $SUITES order as mutual chooses it.
nginx_mtls() {
  cat <<EOF
    ssl_certificate $CERTS/server-chain.pem;
    ssl_certificate_key $CERTS/server.key;
    ssl_protocols TLSv1.3;
    ssl_prefer_server_ciphers on;
    ssl_conf_command Ciphersuites $SUITES;
    ssl_client_certificate $CERTS/root.pem;
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_session_tickets on;
EOF
}

# HAProxy's global and defaults sections (MODE: tcp or http).
haproxy_globals() {
  cat <<EOF
global
  nbthread $THREADS
  maxconn $MAXCONN
defaults
  mode $1
  timeout connect 5s
  timeout client 10m
  timeout server 10m
EOF
}

# stunnel's global options (DIR for its log).
stunnel_globals() {
  cat <<EOF
foreground = yes
pid =
output = $1/stunnel.log
debug = 3
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
EOF
}

# Each start_X writes its config into $WORK/X, starts the server pinned to the server cores in
# the foreground of a background job, and sets SPID. Output goes to $WORK/X/out.log.
start_nginx() {
  [ -e "$NGINX_STREAM" ] || { WHY="nginx stream module missing (apt package libnginx-mod-stream)"; return 1; }
  command -v nginx >/dev/null 2>&1 || { WHY="nginx not installed"; return 1; }
  local d=$WORK/nginx; mkdir -p "$d"
  cat >"$d/nginx.conf" <<EOF
$(nginx_globals "$d" stream)
stream {
  upstream backend { server 127.0.0.1:$BPORT; }
  server {
    listen 127.0.0.1:$PORT ssl backlog=4096;
$(nginx_mtls)
    proxy_pass backend;
    proxy_timeout 10m;
  }
}
EOF
  "${SRV[@]}" nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" >"$d/out.log" 2>&1 &
  SPID=$!
}

# HAProxy in `mode tcp` forwarding to the backend, in $WORK/$1, with $2 after the bind address
# (the TLS settings; empty for the floor's plain TCP proxy).
start_haproxy_tcp() {
  command -v haproxy >/dev/null 2>&1 || { WHY="haproxy not installed"; return 1; }
  local d=$WORK/$1; mkdir -p "$d"
  cat >"$d/haproxy.cfg" <<EOF
$(haproxy_globals tcp)
frontend bench
  bind 127.0.0.1:$PORT$2
  default_backend be
backend be
  server b1 127.0.0.1:$BPORT
EOF
  "${SRV[@]}" haproxy -f "$d/haproxy.cfg" -db >"$d/out.log" 2>&1 &
  SPID=$!
}

start_haproxy() {
  start_haproxy_tcp haproxy " ssl crt $CERTS/haproxy.pem ca-file $CERTS/root.pem verify required ssl-min-ver TLSv1.3 ciphersuites $SUITES"
}

start_stunnel() {
  [ -n "$STUNNEL" ] || { WHY="stunnel not installed"; return 1; }
  local d=$WORK/stunnel; mkdir -p "$d"
  # stunnel has no worker count: it runs a thread per connection. Pinning it to the same
  # cores is what makes it comparable.
  cat >"$d/stunnel.conf" <<EOF
$(stunnel_globals "$d")
[bench]
accept = 127.0.0.1:$PORT
connect = 127.0.0.1:$BPORT
cert = $CERTS/server-chain.pem
key = $CERTS/server.key
CAfile = $CERTS/root.pem
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
ciphersuites = $SUITES
options = CIPHER_SERVER_PREFERENCE
TIMEOUTidle = 600
EOF
  "${SRV[@]}" "$STUNNEL" "$d/stunnel.conf" >"$d/out.log" 2>&1 &
  SPID=$!
}

# Callers may set (as locals, which bash passes down) MUTUAL_DIR (work subdirectory),
# MUTUAL_THREADS (instead of THREADS) and MUTUAL_EXTRA (more flags: --http, --audit-log, ...).
start_mutual() {
  [ -z "$MUTUAL_BUILD_ERR" ] || { WHY=$MUTUAL_BUILD_ERR; return 1; }
  [ -x "$MUTUAL" ] || { WHY="no release binary at $MUTUAL"; return 1; }
  local d=$WORK/${MUTUAL_DIR:-mutual}; mkdir -p "$d"
  local help
  help=$("$MUTUAL" serve --help 2>&1)
  if ! grep -q -- "--listen" <<<"$help"; then
    WHY="mutual serve is not implemented in this build (no --listen in 'mutual serve --help')"
    return 1
  fi
  local args=(serve --listen "127.0.0.1:$PORT" --backend "127.0.0.1:$BPORT"
              --cert "$CERTS/server-chain.pem" --key "$CERTS/server.key" --ca "$CERTS/root.pem" --allow-any)
  if grep -q -- "--threads" <<<"$help"; then
    args+=(--threads "${MUTUAL_THREADS:-$THREADS}")
  else
    MUTUAL_NOTE="mutual serve has no --threads yet: it ran with its default worker count, pinned to $THREADS core(s)"
  fi
  grep -q -- "--max-connections" <<<"$help" && args+=(--max-connections "$MAXCONN")
  args+=("${MUTUAL_EXTRA[@]}")
  # Logs at warn, like the peers here (nginx error_log warn, stunnel debug = 3, HAProxy no log).
  RUST_LOG=warn "${SRV[@]}" "$MUTUAL" "${args[@]}" >"$d/out.log" 2>&1 &
  SPID=$!
}

status() { "$LOADGEN" status --contender "$1" --text "$2" >>"$RES"; }
# More flags for every `measure` (e.g. --upstream-pid); callers set it as a local.
MUTUAL_EXTRA=(); MEASURE_EXTRA=()

# A case that could not run for a contender: a failed line, shown as "failed" with the reason.
case_failed() {
  local who=$1 why=${3//[\"\\]/}
  echo "{\"contender\":\"$who\",\"case\":\"$2\",\"ok\":0,\"failed\":1,\"first_error\":\"$why\"}" >>"$RES"
  log "$who $2: $why"
}

# Adds "key":number to the last results line (a check made after the measurement).
amend_last() { sed -i "\$ s/}\$/,\"$1\":$2}/" "$RES"; }

# One short run proves a set-up (certificate accepted, backend reached, identity forwarded):
# prints the first error, or nothing when all COUNT connections got their response.
prove() {
  local count=$1; shift
  local out
  out=$(timeout 20 "${CLI[@]}" "$LOADGEN" --threads 1 handshakes --addr "127.0.0.1:$PORT" \
          --concurrency 1 --count "$count" --duration 10s "${TLS[@]}" --json "$@" 2>&1)
  grep -qE "\"ok\":$count[,}]" <<<"$out" && grep -qE '"failed":0[,}]' <<<"$out" && return 0
  echo "sanity run failed: $(grep -oE '"first_error":"[^"]*"' <<<"$out" | cut -d'"' -f4)$(grep -v '^{' <<<"$out" | head -n 1)"
  return 1
}

# Runs one measurement against the current contender and appends its JSON line; bounded in time.
measure() {
  local who=$1 case=$2 limit=$3; shift 3
  local line
  line=$(timeout --kill-after=5 "$limit" "${CLI[@]}" "$LOADGEN" --threads "$CLIENT_THREADS" "$@" \
           --addr "127.0.0.1:$PORT" "${TLS[@]}" --json --contender "$who" --case "$case" \
           --server-pid "$SPID" "${MEASURE_EXTRA[@]}" 2>>"$WORK/loadgen.err")
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
DL2=$(secs "$D2")

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
  measure "$who" req_c16_open "$DL" requests --concurrency 16 --rate "$OPEN_RATE" --duration "$D"
  measure "$who" bulk_up "$(secs "$BULK_MAX")" bulk --bytes "$BULK" --direction up --max-time "$BULK_MAX"
  measure "$who" bulk_down "$(secs "$BULK_MAX")" bulk --bytes "$BULK" --direction down --max-time "$BULK_MAX"
  measure "$who" idle "$(secs "$IDLE_MAX")" idle --count "$IDLE" --max-time "$IDLE_MAX"
  stop_server
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
# How an idle CPU waits (a guest's cpuidle driver, and how long it polls before halting): on a VM
# a halted virtual CPU is woken through the host, which every request crossing cores pays at low
# load (docs/PERFORMANCE.md, "Latency: closed and open loop").
IDLE_STATE="cpuidle driver $(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo unknown)"
if [ -r /sys/module/haltpoll/parameters/guest_halt_poll_ns ]; then
  IDLE_STATE="$IDLE_STATE, guest_halt_poll_ns $(cat /sys/module/haltpoll/parameters/guest_halt_poll_ns) (0: halts at once, no polling)"
fi
# CPU time the hypervisor gave to other guests (/proc/stat's steal column) over the run: a host
# busy with its other tenants slows every contender unevenly, and nothing else in the report shows it.
cpu_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $9 }' /proc/stat; }
TICKS_BEFORE=$(cpu_ticks)
log "crypto limit"
"${SRV[@]}" "$LOADGEN" crypto --seconds "$CRYPTO_SECS" --certs "$CERTS" --json >>"$RES" 2>>"$WORK/loadgen.err"

# The floor: the same requests straight to the backend, no TLS, no proxy.
log "direct: backend without TLS"
status direct ok
PORT=$BPORT; SPID=$BACKEND_PID
# req_c16 (closed loop), then the same requests at a fixed rate (req_c16_open, `--rate`): the
# latency a request meets at a moderate load, where the closed loop measures throughput.
for case in req_c16 req_c16_open; do
  pace=(); [ "$case" = req_c16_open ] && pace=(--rate "$OPEN_RATE")
  line=$(timeout "$DL" "${CLI[@]}" "$LOADGEN" --threads "$CLIENT_THREADS" requests --plain --concurrency 16 \
           "${pace[@]}" --duration "$D" --addr "127.0.0.1:$BPORT" --json --contender direct --case "$case" \
           2>>"$WORK/loadgen.err")
  [ -n "$line" ] && echo "$line" >>"$RES"
done

# ---------------------------------------------------------------- HTTP mode (issue 20)
# Each contender terminates mTLS, speaks HTTP itself and forwards the client's identity in a
# header to a backend that answers 403 without it (`loadgen backend --require-header`), so a
# request counts only when the identity came with it. ALPN h2 + http/1.1 on every contender.
# Forwarded header, and text its value must contain, per contender.
http_identity() {
  case $1 in
    mutual) echo "X-Forwarded-Client-Cert Hash=" ;;          # Envoy's XFCC, docs/http.md
    nginx) echo "X-Client-Cert BEGIN%20CERTIFICATE" ;;       # $ssl_client_escaped_cert: URL-encoded PEM
    haproxy) echo "X-SSL-Client-Cert MII" ;;                 # %[ssl_c_der,base64]: base64 DER
  esac
}

start_http_mutual() {
  local MUTUAL_DIR=mutual-http MUTUAL_EXTRA=(--http)
  start_mutual
}

start_http_nginx() {
  command -v nginx >/dev/null 2>&1 || { WHY="nginx not installed"; return 1; }
  local d=$WORK/nginx-http; mkdir -p "$d"
  # keepalive_requests: nginx closes a client connection after 1000 requests by default (HTTP/1.1
  # and HTTP/2), which would end the kept-alive runs early.
  cat >"$d/nginx.conf" <<EOF
$(nginx_globals "$d")
http {
  access_log off;
  client_body_temp_path $d/body;
  proxy_temp_path $d/proxy;
  upstream backend { server 127.0.0.1:$BPORT; keepalive 64; }
  server {
    listen 127.0.0.1:$PORT ssl http2 backlog=4096;
$(nginx_mtls)
    keepalive_requests 100000000;
    keepalive_timeout 10m;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Client-Cert \$ssl_client_escaped_cert;
    }
  }
}
EOF
  "${SRV[@]}" nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" >"$d/out.log" 2>&1 &
  SPID=$!
}

start_http_haproxy() {
  command -v haproxy >/dev/null 2>&1 || { WHY="haproxy not installed"; return 1; }
  local d=$WORK/haproxy-http; mkdir -p "$d"
  cat >"$d/haproxy.cfg" <<EOF
$(haproxy_globals http)
  option http-keep-alive
  timeout http-keep-alive 10m
frontend bench
  bind 127.0.0.1:$PORT ssl crt $CERTS/haproxy.pem ca-file $CERTS/root.pem verify required ssl-min-ver TLSv1.3 ciphersuites $SUITES alpn h2,http/1.1
  http-request set-header X-SSL-Client-Cert %[ssl_c_der,base64]
  default_backend be
backend be
  http-reuse always
  server b1 127.0.0.1:$BPORT
EOF
  "${SRV[@]}" haproxy -f "$d/haproxy.cfg" -db >"$d/out.log" 2>&1 &
  SPID=$!
}

HTTP_CASES="http_hs_c16 http_req_c16 http2_hs_c16 http2_req_c16"
run_http() {
  local who=$1 why c header contains
  read -r header contains <<<"$(http_identity "$who")"
  WHY=""; SPID=""
  # A backend of its own that requires this contender's header (BPORT is local: the start_http_*
  # functions forward to it).
  local BPORT; BPORT=$("$LOADGEN" free-port)
  "${CLI[@]}" "$LOADGEN" --threads 1 backend --listen "127.0.0.1:$BPORT" --require-header "$header" \
    --require-contains "$contains" 2>"$WORK/backend-http-$who.log" &
  local idb=$!
  STARTED_PIDS+=("$idb")
  PORT=$("$LOADGEN" free-port)
  log "$who HTTP mode: starting on 127.0.0.1:$PORT (backend requires $header)"
  if ! wait_port "$BPORT"; then
    why="identity backend did not start"
  elif ! "start_http_$who"; then
    why="not available: $WHY"
  else
    STARTED_PIDS+=("$SPID")
    if ! wait_port "$PORT"; then
      why="did not listen: $(tail -n 2 "$WORK/$who-http/out.log" 2>/dev/null | tr '\n' ' ')"
    else
      # Both protocols must work, with the identity seen by the backend, before measuring.
      why=$(prove 3) && why=$(prove 3 --h2) && why=""
    fi
  fi
  if [ -n "$why" ]; then
    for c in $HTTP_CASES; do case_failed "$who" "$c" "$why"; done
  else
    measure "$who" http_hs_c16 "$DL2" handshakes --concurrency 16 --duration "$D2"
    measure "$who" http_req_c16 "$DL2" requests --concurrency 16 --duration "$D2"
    measure "$who" http2_hs_c16 "$DL2" handshakes --h2 --concurrency 16 --duration "$D2"
    measure "$who" http2_req_c16 "$DL2" requests --h2 --concurrency 16 --duration "$D2"
  fi
  [ -n "$SPID" ] && stop_server
  SPID=$idb; stop_server
}

# ---------------------------------------------------------------- the client side (issue 20)
# The server-side references with X25519MLKEM768.
measure_mlkem_refs() {
  local TLS=("${TLS_BASE[@]}" --kx mlkem)
  measure mutual connect_ref_full_mlkem "$DL2" handshakes --concurrency 16 --duration "$D2"
  measure mutual connect_ref_resumed_mlkem "$DL2" handshakes --resume --concurrency 16 --duration "$D2"
}

# Plaintext in, mTLS out, every client proxy in front of the SAME mTLS server (`mutual serve`,
# TCP mode), each resuming sessions as it does by default: mutual connect (its ticket store),
# nginx stream `proxy_ssl_session_reuse on`, HAProxy `server ... ssl` (reuse is its default),
# stunnel `client = yes` (its session cache). The client proxy and the server both run on the
# server cores; figures are per client-proxy CPU-second, and the server's CPU per connection
# (`--upstream-pid`) shows who resumed: a resumed handshake costs the server less.
start_client_mutual() {
  [ -z "$MUTUAL_BUILD_ERR" ] || { WHY=$MUTUAL_BUILD_ERR; return 1; }
  local d=$WORK/mutual-client; mkdir -p "$d"
  local args=(connect --listen "127.0.0.1:$PORT" --remote "localhost:$1"
              --cert "$CERTS/client-chain.pem" --key "$CERTS/client.key" --ca "$CERTS/root.pem")
  grep -q -- "--threads" <<<"$("$MUTUAL" connect --help 2>&1)" && args+=(--threads "$THREADS")
  RUST_LOG=warn "${SRV[@]}" "$MUTUAL" "${args[@]}" >"$d/out.log" 2>&1 &
  SPID=$!
}

start_client_nginx() {
  [ -e "$NGINX_STREAM" ] || { WHY="nginx stream module missing (apt package libnginx-mod-stream)"; return 1; }
  command -v nginx >/dev/null 2>&1 || { WHY="nginx not installed"; return 1; }
  local d=$WORK/nginx-client; mkdir -p "$d"
  cat >"$d/nginx.conf" <<EOF
$(nginx_globals "$d" stream)
stream {
  server {
    listen 127.0.0.1:$PORT backlog=4096;
    proxy_pass 127.0.0.1:$1;
    proxy_ssl on;
    proxy_ssl_protocols TLSv1.3;
    proxy_ssl_certificate $CERTS/client-chain.pem;
    proxy_ssl_certificate_key $CERTS/client.key;
    proxy_ssl_trusted_certificate $CERTS/root.pem;
    proxy_ssl_verify on;
    proxy_ssl_verify_depth 2;
    proxy_ssl_name localhost;
    proxy_ssl_server_name on;
    proxy_ssl_session_reuse on;
    proxy_timeout 10m;
  }
}
EOF
  "${SRV[@]}" nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" >"$d/out.log" 2>&1 &
  SPID=$!
}

start_client_haproxy() {
  command -v haproxy >/dev/null 2>&1 || { WHY="haproxy not installed"; return 1; }
  local d=$WORK/haproxy-client; mkdir -p "$d"
  # HAProxy wants the client certificate chain and its key in one file.
  cat "$CERTS/client-chain.pem" "$CERTS/client.key" >"$d/client.pem"
  cat >"$d/haproxy.cfg" <<EOF
$(haproxy_globals tcp)
frontend local
  bind 127.0.0.1:$PORT
  default_backend remote
backend remote
  server s1 127.0.0.1:$1 ssl crt $d/client.pem verify required ca-file $CERTS/root.pem verifyhost localhost sni str(localhost) ssl-min-ver TLSv1.3
EOF
  "${SRV[@]}" haproxy -f "$d/haproxy.cfg" -db >"$d/out.log" 2>&1 &
  SPID=$!
}

start_client_stunnel() {
  [ -n "$STUNNEL" ] || { WHY="stunnel not installed"; return 1; }
  local d=$WORK/stunnel-client; mkdir -p "$d"
  cat >"$d/stunnel.conf" <<EOF
$(stunnel_globals "$d")
[remote]
client = yes
accept = 127.0.0.1:$PORT
connect = 127.0.0.1:$1
cert = $CERTS/client-chain.pem
key = $CERTS/client.key
CAfile = $CERTS/root.pem
verifyChain = yes
checkHost = localhost
sni = localhost
sslVersionMin = TLSv1.3
TIMEOUTidle = 600
EOF
  "${SRV[@]}" "$STUNNEL" "$d/stunnel.conf" >"$d/out.log" 2>&1 &
  SPID=$!
}

run_client_side() {
  local serve_pid serve_port who why
  WHY=""; SPID=""
  PORT=$("$LOADGEN" free-port)
  log "client side: the shared mTLS server (mutual serve) on 127.0.0.1:$PORT"
  local MUTUAL_DIR=client-side-server
  if ! start_mutual; then
    for who in $CONTENDERS; do
      case_failed "$who" connect_hs_c16 "the shared mTLS server: $WHY"
      case_failed "$who" connect_req_c16 "the shared mTLS server: $WHY"
    done
    return
  fi
  serve_pid=$SPID serve_port=$PORT
  STARTED_PIDS+=("$serve_pid")
  wait_port "$serve_port" || log "client side: the mTLS server did not listen"
  # The server's CPU per connection for a full and for a resumed handshake (loadgen straight to
  # it): the references that tell, below, which client proxies resumed.
  PORT=$serve_port; SPID=$serve_pid
  local MEASURE_EXTRA=(--upstream-pid "$serve_pid")
  measure mutual connect_ref_full "$DL2" handshakes --concurrency 16 --duration "$D2"
  measure mutual connect_ref_resumed "$DL2" handshakes --resume --concurrency 16 --duration "$D2"
  # `mutual connect` negotiates X25519MLKEM768 (rustls's preference), the OpenSSL 3.0 peers X25519:
  # mutual's row is read against references with its group.
  if [ "$KX" = x25519 ]; then measure_mlkem_refs; fi
  for who in $CONTENDERS; do
    WHY=""; SPID=""
    PORT=$("$LOADGEN" free-port)
    log "$who client side: starting on 127.0.0.1:$PORT"
    if ! "start_client_$who" "$serve_port"; then
      why="not available: $WHY"
    else
      STARTED_PIDS+=("$SPID")
      if ! wait_port "$PORT"; then
        why="did not listen: $(tail -n 2 "$WORK/$who-client/out.log" 2>/dev/null | tr '\n' ' ')"
      else
        # The server answered through the proxy: its handshake was accepted, not refused.
        why=$(prove 3 --plain) && why=""
      fi
    fi
    if [ -n "$why" ]; then
      case_failed "$who" connect_hs_c16 "$why"; case_failed "$who" connect_req_c16 "$why"
    else
      measure "$who" connect_hs_c16 "$DL2" handshakes --plain --concurrency 16 --duration "$D2"
      measure "$who" connect_req_c16 "$DL2" requests --plain --concurrency 16 --duration "$D2"
    fi
    [ -n "$SPID" ] && stop_server
  done
  SPID=$serve_pid; stop_server
}

# ---------------------------------------------------------------- the floor (issue 20)
# A plain TCP proxy (HAProxy `mode tcp`, no ssl) on the handshake case and the kept-alive case:
# what every proxy pays per connection besides TLS (accept, backend connect, one request and
# response relayed, two closes). Same peer, pinning and backend as the TLS contenders; reported
# in its own section with the crypto + floor bounds (`loadgen report`), not as a contender.
start_floor() {
  start_haproxy_tcp floor ""
}

run_floor() {
  local why
  WHY=""; SPID=""
  PORT=$("$LOADGEN" free-port)
  log "floor: plain TCP proxy (HAProxy mode tcp, no TLS) on 127.0.0.1:$PORT"
  if ! start_floor; then
    why="not available: $WHY"
  else
    STARTED_PIDS+=("$SPID")
    if ! wait_port "$PORT"; then
      why="did not listen: $(tail -n 2 "$WORK/floor/out.log" 2>/dev/null | tr '\n' ' ')"
    else
      why=$(prove 3 --plain) && why=""
    fi
  fi
  if [ -n "$why" ]; then
    case_failed floor floor_hs_c16 "$why"; case_failed floor floor_req_c16 "$why"
    case_failed floor floor_req_c16_open "$why"
  else
    measure floor floor_hs_c16 "$DL" handshakes --plain --concurrency 16 --duration "$D"
    measure floor floor_req_c16 "$DL" requests --plain --concurrency 16 --duration "$D"
    measure floor floor_req_c16_open "$DL" requests --plain --concurrency 16 --rate "$OPEN_RATE" \
      --duration "$D"
  fi
  [ -n "$SPID" ] && stop_server
}

# ---------------------------------------------------------------- mutual alone (issue 20)
# --threads 2 against --threads 1 on the full-handshake case: neither the server nor the load
# generator pinned (both compete for the 2 cores, as a server alone on the machine would not).
run_scaling() {
  local SRV=() CLI=() CLIENT_THREADS=$NCPU t
  for t in 1 2; do
    WHY=""; SPID=""
    PORT=$("$LOADGEN" free-port)
    log "mutual --threads $t, unpinned"
    local MUTUAL_DIR=mutual-t$t MUTUAL_THREADS=$t
    if ! start_mutual; then case_failed mutual "scale_t${t}_hs_c16" "$WHY"; continue; fi
    STARTED_PIDS+=("$SPID")
    if wait_port "$PORT"; then
      measure mutual "scale_t${t}_hs_c16" "$DL2" handshakes --concurrency 16 --duration "$D2"
    else
      case_failed mutual "scale_t${t}_hs_c16" "did not listen"
    fi
    stop_server
  done
}

# What production runs: the audit log (a file) and the metrics endpoint on, beside hs_c16 and
# req_c16 measured without them. Checked: one audit line and one metric count per connection.
run_production() {
  WHY=""; SPID=""
  PORT=$("$LOADGEN" free-port)
  local mport d=$WORK/mutual-prod n m i want
  mport=$("$LOADGEN" free-port)
  log "mutual with --audit-log and --metrics on 127.0.0.1:$PORT"
  local MUTUAL_DIR=mutual-prod MUTUAL_EXTRA=(--audit-log "$d/audit.log" --metrics "127.0.0.1:$mport")
  if ! start_mutual; then
    case_failed mutual prod_hs_c16 "$WHY"; case_failed mutual prod_req_c16 "$WHY"; return
  fi
  STARTED_PIDS+=("$SPID")
  if ! wait_port "$PORT" || ! wait_port "$mport"; then
    case_failed mutual prod_hs_c16 "did not listen"; case_failed mutual prod_req_c16 "did not listen"
    stop_server; return
  fi
  measure mutual prod_hs_c16 "$DL" handshakes --concurrency 16 --duration "$D"
  # Allowed connections are written when they close: give the writer thread a moment.
  want=$(tail -n 1 "$RES" | grep -oE '"ok":[0-9]+' | cut -d: -f2); want=${want:-0}
  for i in $(seq 1 50); do
    n=$(grep -c '"result":"allowed"' "$d/audit.log" 2>/dev/null); n=${n:-0}
    [ "$n" -ge "$want" ] && break
    sleep 0.1
  done
  m=$(curl -s "http://127.0.0.1:$mport/metrics" | grep '^mutual_handshakes_total{' | grep 'result="allowed"' |
        awk '{ s += $NF } END { printf "%d", s }')
  amend_last audit_lines "${n:-0}"; amend_last metric_allowed "${m:-0}"
  log "mutual prod_hs_c16: $n audit lines, mutual_handshakes_total{result=\"allowed\"} = $m"
  measure mutual prod_req_c16 "$DL" requests --concurrency 16 --duration "$D"
  stop_server
}

# Memory with IDLE idle connections through `mutual run` and a config file of two listeners,
# the connections split between them; established sockets counted by `ss` while they are held.
run_two_listeners() {
  local d=$WORK/mutual-run p1 p2 out n i
  mkdir -p "$d"
  p1=$("$LOADGEN" free-port); p2=$("$LOADGEN" free-port)
  local l
  {
    echo "threads = $THREADS"
    for l in a:$p1 b:$p2; do
      cat <<EOF
[[listener]]
name = "${l%%:*}"
kind = "serve"
listen = "127.0.0.1:${l##*:}"
backend = "127.0.0.1:$BPORT"
cert = "$CERTS/server-chain.pem"
key = "$CERTS/server.key"
ca = "$CERTS/root.pem"
allow_any = true
EOF
    done
  } >"$d/mutual.toml"
  log "mutual run, two listeners (127.0.0.1:$p1, 127.0.0.1:$p2): $IDLE idle connections"
  RUST_LOG=warn "${SRV[@]}" "$MUTUAL" run --config "$d/mutual.toml" >"$d/out.log" 2>&1 &
  SPID=$!
  STARTED_PIDS+=("$SPID")
  if ! wait_port "$p1" || ! wait_port "$p2"; then
    case_failed mutual idle_run2 "mutual run did not listen: $(tail -n 2 "$d/out.log" | tr '\n' ' ')"
    stop_server; return
  fi
  # Held 3 s after the figure is taken, long enough for ss to count them.
  timeout --kill-after=5 "$(secs "$IDLE_MAX")" "${CLI[@]}" "$LOADGEN" --threads "$CLIENT_THREADS" idle \
    --addr "127.0.0.1:$p1" --addr "127.0.0.1:$p2" --count "$IDLE" --max-time "$IDLE_MAX" --hold 3s \
    "${TLS[@]}" --json --contender mutual --case idle_run2 --server-pid "$SPID" \
    >"$d/idle.json" 2>"$d/idle.err" &
  local lg=$!
  n=0
  for i in $(seq 1 $(( ${IDLE_MAX%s} * 10 + 100 ))); do
    grep -q "connections held" "$d/idle.err" 2>/dev/null && break
    kill -0 "$lg" 2>/dev/null || break
    sleep 0.1
  done
  if grep -q "connections held" "$d/idle.err" 2>/dev/null; then
    n=$(ss -Htn state established "( sport = :$p1 or sport = :$p2 )" 2>/dev/null | wc -l)
  fi
  wait "$lg"
  out=$(cat "$d/idle.json")
  if [ -n "$out" ]; then
    echo "$out" >>"$RES"
    amend_last established_ss "$n"
    log "mutual idle_run2: $(grep -oE '"(ready|rss_per_conn_kib|failed)":[0-9.]+' <<<"$out" | tr '\n' ' ')established (ss): $n"
  else
    case_failed mutual idle_run2 "no result: $(tail -n 1 "$d/idle.err")"
  fi
  stop_server
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
# The floor beside mutual's handshake cases (it needs HAProxy, whatever CONTENDERS says).
case " $CONTENDERS " in *" mutual "*) run_floor ;; esac
# HTTP mode: the contenders that have one (stunnel forwards bytes only).
for c in $CONTENDERS; do case $c in mutual|nginx|haproxy) run_http "$c" ;; esac; done
run_client_side
case " $CONTENDERS " in *" mutual "*)
  if [ -z "$MUTUAL_BUILD_ERR" ] && [ -x "$MUTUAL" ]; then
    run_scaling
    run_production
    run_two_listeners
  fi
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
    # The same issuance with both cores: the CA has no contender, so one core is a choice of
    # set-up, not a fairness rule. Nothing pinned, two runtime threads, no fill (the list and
    # CRL timings are the run above); reported with its CPU per certificate.
    line=$(timeout 120 "$LOADGEN" --threads 2 ca --dir "$WORK/ca2" --tasks "$CA_TASKS" \
             --duration "$CA_D" --fill 0 --json --contender mutual --case ca_2cpu \
             2>>"$WORK/loadgen.err")
    if [ -n "$line" ]; then
      echo "$line" >>"$RES"
      log "CA, both cores: $(grep -oE '"(issued_per_s|cpu_s_per_1000|rows_per_group)":[0-9.]+' <<<"$line" | tr '\n' ' ')"
    else
      log "CA, both cores: no result (see $WORK/loadgen.err with KEEP=1)"
    fi
    run_ca_api
  fi ;;
esac
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
STEAL=$(awk -v a="$TICKS_BEFORE" -v b="$(cpu_ticks)" 'BEGIN { split(a, x, " "); split(b, y, " ");
  t = y[1] - x[1]; if (t > 0) printf "%.1f%%", 100 * (y[2] - x[2]) / t; else print "unknown" }')

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
  echo "- idle CPUs: $IDLE_STATE"
  echo "- load average (1, 5, 15 min): $LOAD_BEFORE at start, $LOAD_AFTER at end"
  echo "- CPU time stolen by the hypervisor during the run (/proc/stat steal): $STEAL (above a few percent the host was busy with other guests: compare nothing across runs)"
  echo
  echo "## Settings"
  echo
  echo "- THREADS=$THREADS worker(s) per contender; $PINNING"
  echo "- each timed run: $D; bulk: $BULK per direction (stopped at $BULK_MAX); idle: $IDLE connections (stopped at $IDLE_MAX)"
  echo "- kept-alive requests two ways: closed loop (req_c16: each of 16 connections sends when its last response is in;"
  echo "  16 always in flight, so the latency is mostly queueing) and open loop (req_c16_open: $OPEN_RATE requests/s in all"
  echo "  at evenly spaced times, latency counted from when each was due, as wrk2 does: the latency at a moderate load)"
  echo "- TLS 1.3 only, key exchange offered by the client: $KX; ECDSA P-256 root -> intermediate -> leaf,"
  echo "  client sends leaf + intermediate, every server trusts only the root and requires and verifies the client cert"
  echo "- the load generator does not verify the server (keeps its CPU off the critical path); the servers do all their work"
  echo "- two clients for the handshake cases: loadgen (rustls, X25519 only) and \`openssl s_time\` ($(openssl version 2>/dev/null | cut -d' ' -f1-2),"
  echo "  its default ClientHello: X25519 key share, leaf + intermediate sent), one connection at a time (\`-new\`: full,"
  echo "  \`-reuse\`: resumed), each counted only when the backend's response came back; h2load is not used: it has no"
  echo "  client-certificate option and every contender requires one"
  echo "- every contender forwards TCP to the same backend (\`loadgen backend\`); nginx uses its stream module, HAProxy mode tcp"
  echo "- HTTP mode ($D2 per case): mutual \`serve --http\` (X-Forwarded-Client-Cert), nginx \`proxy_set_header X-Client-Cert \$ssl_client_escaped_cert\`,"
  echo "  HAProxy \`http-request set-header X-SSL-Client-Cert %[ssl_c_der,base64]\`, each to a backend that answers 403 without"
  echo "  that header: a request counts only when the identity came with it; HTTP/1.1 (no ALPN) and HTTP/2 (ALPN h2) clients"
  echo "- client side ($D2 per case): mutual connect, nginx stream \`proxy_ssl_certificate\` + \`proxy_ssl_session_reuse on\`,"
  echo "  HAProxy \`server ... ssl crt ... verify required\`, stunnel \`client = yes\`, all in front of the same \`mutual serve\`;"
  echo "  figures per client-proxy CPU-second; the server's CPU per connection shows whether the proxy resumed"
  echo "- the floor ($D per case): a plain TCP proxy, HAProxy \`mode tcp\` without ssl, same pinning and backend, on the"
  echo "  c=16 new-connection and kept-alive cases: the per-connection work any proxy pays besides TLS (section \"What bounds a handshake\")"
  echo "- mutual alone: \`--threads 2\` vs \`--threads 1\` unpinned ($D2 each); audit log (a file) + metrics on ($D each);"
  echo "  idle connections through \`mutual run\` with two listeners"
  [ -n "$IDLE_LIMITED" ] && echo "- $IDLE_LIMITED"
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
log "total time: $(( $(date +%s) - STARTED )) s"
# KEEP=1 keeps configs and logs of the contenders for a look after the run.
if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
