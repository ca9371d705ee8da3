#!/usr/bin/env bash
# bench/clients.sh: the same server, two clients (issue 25). Why does a peer's full handshake
# cost more under loadgen than under `openssl s_time`? Load-independent evidence only:
#
# 1. A packet capture (tcpdump on lo, one port) of one handshake from each client against the
#    same server config, decrypted with the clients' key logs (loadgen writes $SSLKEYLOGFILE;
#    `s_time` cannot, so `openssl s_client -keylogfile`, the same libssl with the same defaults,
#    stands in for the decrypted view, and s_time's own capture shows its cleartext part and its
#    close): ClientHello (suites, groups, key shares, signature algorithms, PSK modes), the
#    certificates the client sends, the tickets, the alerts and who closes how.
# 2. callgrind instruction counts of the server per accepted connection under each client
#    (repeatable on a busy machine, unlike time), plus the case that misled the first
#    cross-check: `s_time -cert leaf` with only the root in -CAfile sends no intermediate, the
#    server refuses the certificate (unknown_ca) after s_time has already counted the connection.
#
# Contenders: CONTENDERS="..." (default: haproxy nginx stunnel mutual), the same configs as
# bench/run.sh (one worker; nginx without its master process so that callgrind sees the worker).
# Environment: SKIP_BUILD=1, OUT=DIR (default bench/results/clients-<date>), SECS (load per
# client under callgrind, default 8), NATIVE_SECS (per client in part 3, default 5). Needs
# tcpdump, tshark, valgrind, openssl. Writes OUT/summary.txt, the top symbols per server and
# client, and OUT/raw/ (pcaps, key logs of these throwaway connections, callgrind dumps; not
# committed: bench/results/.gitignore).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SECS=${SECS:-8}
# The suites every server chooses from in its own order, as in bench/run.sh.
SUITES=${SUITES:-TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256}
CONTENDERS=${CONTENDERS:-"haproxy nginx stunnel mutual"}
OUT=${OUT:-$ROOT/bench/results/clients-$(date -u +%Y-%m-%d)}
WORK=$(mktemp -d /tmp/mutual-clients.XXXXXX)
for t in tcpdump tshark valgrind openssl; do
  command -v "$t" >/dev/null || { echo "$t is not installed (Debian: tcpdump tshark valgrind openssl)" >&2; exit 2; }
done
PATH=$PATH:/usr/sbin

MUTUAL=$TARGET/release/mutual
. "$ROOT/bench/release.sh"
. "$ROOT/bench/callgrind-common.sh"
RAW=$OUT/raw
mkdir -p "$RAW"
: >"$OUT/summary.txt"

# What OpenSSL needs to send leaf + intermediate: the intermediate in its verify store.
cat "$C/root.pem" "$C/intermediate.pem" >"$C/root+intermediate.pem"
# The client leaf alone (openssl -cert takes the first certificate of a file anyway).
awk '{print} /-----END CERTIFICATE-----/ {exit}' "$C/client-chain.pem" >"$C/client.pem"

# config NAME PORT: the server's config as bench/run.sh writes it (one worker, no master for
# nginx so that callgrind sees the process that does the work).
config() {
  local d=$WORK/$1; mkdir -p "$d"
  case $1 in
    haproxy) cat >"$d/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 10m
  timeout server 10m
frontend bench
  bind 127.0.0.1:$2 ssl crt $C/haproxy.pem ca-file $C/root.pem verify required ssl-min-ver TLSv1.3 ciphersuites $SUITES
  default_backend be
backend be
  server b1 127.0.0.1:$BPORT
EOF
      echo "haproxy -f $d/haproxy.cfg -db" ;;
    nginx) cat >"$d/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
master_process off;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4000; }
stream {
  upstream backend { server 127.0.0.1:$BPORT; }
  server {
    listen 127.0.0.1:$2 ssl;
    ssl_certificate $C/server-chain.pem;
    ssl_certificate_key $C/server.key;
    ssl_protocols TLSv1.3;
    ssl_prefer_server_ciphers on;
    ssl_conf_command Ciphersuites $SUITES;
    ssl_client_certificate $C/root.pem;
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_session_tickets on;
    proxy_pass backend;
  }
}
EOF
      echo "nginx -p $d -c $d/nginx.conf -e $d/error.log" ;;
    stunnel) cat >"$d/stunnel.conf" <<EOF
foreground = yes
pid =
output = $d/stunnel.log
debug = 3
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[bench]
accept = 127.0.0.1:$2
connect = 127.0.0.1:$BPORT
cert = $C/server-chain.pem
key = $C/server.key
CAfile = $C/root.pem
verifyChain = yes
requireCert = yes
sslVersionMin = TLSv1.3
ciphersuites = $SUITES
options = CIPHER_SERVER_PREFERENCE
EOF
      echo "$(command -v stunnel4 || command -v stunnel) $d/stunnel.conf" ;;
    mutual) echo "$MUTUAL serve --listen 127.0.0.1:$2 --backend 127.0.0.1:$BPORT --threads 1 \
      --cert $C/server-chain.pem --key $C/server.key --ca $C/root.pem --allow-any" ;;
  esac
}

# summarize PCAP KEYLOG SERVER_PORT: the ClientHello and the messages of the first TCP stream.
summarize() {
  local pcap=$1 keylog=$2
  local o=(-r "$pcap" -o "tls.keylog_file:$keylog")
  echo "  ClientHello:"
  tshark "${o[@]}" -Y 'tls.handshake.type==1 && tcp.stream==0' -T fields -E separator=' ' \
    -e tls.handshake.ciphersuite -e tls.handshake.extensions_supported_group \
    -e tls.handshake.extensions_key_share_group -e tls.handshake.sig_hash_alg \
    -e tls.extension.psk_ke_mode -e tls.handshake.extension.type -e frame.len 2>/dev/null |
    awk '{printf "    cipher suites %s\n    supported groups %s\n    key shares (group ids) %s\n    signature algorithms %s\n    psk_ke_modes %s\n    extension types %s\n    frame bytes %s\n", $1, $2, $3, $4, $5, $6, $7}'
  echo "  Messages in the first connection (decrypted where the key log allows):"
  tshark "${o[@]}" -Y 'tcp.stream==0' -T fields -E separator='|' \
    -e frame.number -e tcp.srcport -e tcp.flags.str -e tcp.len -e _ws.col.Info 2>/dev/null |
    awk -F'|' -v sp="$3" '{dir = ($2 == sp) ? "server" : "client"; printf "    %-3s %-6s %-12s len %-5s %s\n", $1, dir, $3, $4, $5}'
  echo "  Certificates sent by the client: $(tshark "${o[@]}" -Y 'tcp.stream==0 && tls.handshake.type==11' -T fields -e tcp.srcport -e tls.handshake.certificate_length 2>/dev/null | awk -v sp="$3" '$1 != sp {print $2}')"
  echo "  Certificates sent by the server: $(tshark "${o[@]}" -Y 'tcp.stream==0 && tls.handshake.type==11' -T fields -e tcp.srcport -e tls.handshake.certificate_length 2>/dev/null | awk -v sp="$3" '$1 == sp {print $2}')"
  echo "  NewSessionTicket messages: $(tshark "${o[@]}" -Y 'tcp.stream==0 && tls.handshake.type==4' -T fields -e tls.handshake.type 2>/dev/null | tr ',' '\n' | grep -c 4)"
}

capture() {
  local who=$1 port=$2 name=$3; shift 3
  local pcap=$RAW/$who.$name.pcap
  : >"$WORK/tcpdump.err"
  timeout 20 tcpdump -Z root --immediate-mode -i lo -U -s 0 -w "$pcap" "tcp port $port" 2>"$WORK/tcpdump.err" &
  local tp=$! i
  for i in $(seq 1 50); do grep -q listening "$WORK/tcpdump.err" && break; sleep 0.1; done
  sleep 0.3
  "$@" >/dev/null 2>&1
  sleep 1
  kill "$tp" 2>/dev/null; wait "$tp" 2>/dev/null
}

for who in $CONTENDERS; do
  case $who in
    mutual) [ -x "$MUTUAL" ] || { echo "mutual: no $MUTUAL" | tee -a "$OUT/summary.txt"; continue; } ;;
    stunnel) command -v stunnel4 >/dev/null || command -v stunnel >/dev/null ||
               { echo "stunnel: not installed" | tee -a "$OUT/summary.txt"; continue; } ;;
    *) command -v "$who" >/dev/null || { echo "$who: not installed" | tee -a "$OUT/summary.txt"; continue; } ;;
  esac
  port=$("$LOADGEN" free-port)
  read -r -a cmd <<<"$(config "$who" "$port")"
  "${cmd[@]}" >"$WORK/$who.out" 2>&1 &
  spid=$!; PIDS+=("$spid")
  wait_port "$port" || { echo "$who did not start: $(tail -n 2 "$WORK/$who.out")" >&2; continue; }
  {
    echo "== $who: one connection from each client (pcap files next to this summary)"
    # loadgen: one connection; its key log decrypts the whole exchange.
    SSLKEYLOGFILE=$RAW/$who.loadgen.keys capture "$who" "$port" loadgen \
      "$LOADGEN" --threads 1 handshakes --concurrency 1 --duration 5ms --addr "127.0.0.1:$port" "${TLS[@]}"
    echo "-- loadgen (rustls)"; summarize "$RAW/$who.loadgen.pcap" "$RAW/$who.loadgen.keys" "$port"
    # s_time: the cleartext part and the close of its first connection (no key log in s_time).
    capture "$who" "$port" s_time timeout 3 openssl s_time -connect "127.0.0.1:$port" -new -www / \
      -cert "$C/client.pem" -key "$C/client.key" -CAfile "$C/root+intermediate.pem" -time 1
    echo "-- openssl s_time -new (intermediate in -CAfile, so it is sent)"; summarize "$RAW/$who.s_time.pcap" /dev/null "$port"
    # s_client with the same libssl defaults, decrypted: what s_time's encrypted records hold.
    capture "$who" "$port" s_client sh -c "printf 'GET / HTTP/1.0\r\n\r\n' | timeout 3 openssl s_client \
      -connect 127.0.0.1:$port -cert $C/client.pem -key $C/client.key -CAfile $C/root+intermediate.pem \
      -keylogfile $RAW/$who.s_client.keys -quiet"
    echo "-- openssl s_client (same libssl defaults as s_time; decrypted)"; summarize "$RAW/$who.s_client.pcap" "$RAW/$who.s_client.keys" "$port"
    capture "$who" "$port" s_time-leaf-only timeout 3 openssl s_time -connect "127.0.0.1:$port" -new -www / \
      -cert "$C/client.pem" -key "$C/client.key" -CAfile "$C/root.pem" -time 1
    capture "$who" "$port" s_client-leaf-only sh -c "printf 'GET / HTTP/1.0\r\n\r\n' | timeout 3 openssl s_client \
      -connect 127.0.0.1:$port -cert $C/client.pem -key $C/client.key -CAfile $C/root.pem \
      -keylogfile $RAW/$who.s_client-leaf-only.keys -quiet"
    echo "-- openssl s_client, only the root in -CAfile (decrypted): what 's_time -cert leaf -CAfile root' does"
    summarize "$RAW/$who.s_client-leaf-only.pcap" "$RAW/$who.s_client-leaf-only.keys" "$port"
  } >>"$OUT/summary.txt"
  kill "$spid"; wait "$spid" 2>/dev/null

  # callgrind: instructions of the server per accepted connection, one server per client.
  for client in loadgen s_time s_time-leaf-only; do
    port=$("$LOADGEN" free-port)
    read -r -a cmd <<<"$(config "$who" "$port")"
    out=$RAW/callgrind.$who.$client
    valgrind --tool=callgrind --callgrind-out-file="$out.%p" --dump-instr=no "${cmd[@]}" \
      >"$WORK/$who.vg.out" 2>&1 &
    vpid=$!; PIDS+=("$vpid")
    wait_port "$port" || { echo "$who under valgrind did not start" >&2; kill "$vpid"; continue; }
    run_client() {
      case $client in
        loadgen) "$LOADGEN" --threads 1 handshakes --concurrency 1 --duration "$1s" \
                   --addr "127.0.0.1:$port" "${TLS[@]}" --json ;;
        s_time) "$LOADGEN" s-time --seconds "$1" --addr "127.0.0.1:$port" "${TLS[@]}" --json ;;
        # Raw s_time, as the first cross-check ran it: count what s_time counts.
        s_time-leaf-only) openssl s_time -connect "127.0.0.1:$port" -new -www / -cert "$C/client.pem" \
                   -key "$C/client.key" -CAfile "$C/root.pem" -time "$1" 2>"$out.s_time.err" | tee "$out.s_time.out" |
                   awk '/bytes read [0-9]+$/ {printf "{\"ok\":%d,\"bytes_read\":%d,\"note\":\"connections s_time counted\"}\n", $1, $NF}' ;;
      esac
    }
    run_client 1 >/dev/null 2>&1
    callgrind_control -z "$vpid" >/dev/null 2>&1
    run_client "$SECS" >"$out.json" 2>/dev/null
    callgrind_control -d "$vpid" >/dev/null 2>&1
    kill -INT "$vpid" 2>/dev/null; sleep 1; kill "$vpid" 2>/dev/null; wait "$vpid" 2>/dev/null
    f=$(ls -1 "$out".*.1 2>/dev/null | head -n 1)
    [ -n "$f" ] || { echo "$who $client: no callgrind dump" | tee -a "$OUT/summary.txt"; continue; }
    ir=$(grep -m1 '^summary:' "$f" | awk '{print $2}')
    ok=$(grep -oE '"ok":[0-9]+' "$out.json" | head -n 1 | cut -d: -f2)
    echo "$who under $client: ${ok:-0} connections, $ir instructions, $(( ir / (${ok:-0} > 0 ? ${ok:-1} : 1) )) per connection" |
      tee -a "$OUT/summary.txt"
    callgrind_annotate --threshold=100 --inclusive=no "$f" 2>/dev/null | head -n 45 >"$OUT/$who.$client.self.txt"
    cp "$out.json" "$OUT/$who.$client.json"
  done
done
# 3. The same three clients natively, the server pinned to the last CPU and the client to the
# others, NATIVE_SECS each, against one server process: successes per server CPU-second. Time
# based, so noisy on a shared machine, but the three run back to back.
NATIVE_SECS=${NATIVE_SECS:-5}
SRV=(); CLI=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  SRV=(taskset -c "$(( $(nproc) - 1 ))"); CLI=(taskset -c "0-$(( $(nproc) - 2 ))")
fi
field() { grep -oE "\"$1\":[0-9.]+" | head -n 1 | cut -d: -f2; }
echo "== natively, ${NATIVE_SECS} s per client, load average $(cut -d' ' -f1-3 /proc/loadavg): per server CPU-second" >>"$OUT/summary.txt"
for who in $CONTENDERS; do
  port=$("$LOADGEN" free-port)
  read -r -a cmd <<<"$(config "$who" "$port")"
  "${SRV[@]}" "${cmd[@]}" >"$WORK/$who.native.out" 2>&1 &
  spid=$!; PIDS+=("$spid")
  wait_port "$port" || { echo "$who did not start natively" >&2; continue; }
  a=$("${CLI[@]}" "$LOADGEN" --threads 1 handshakes --concurrency 1 --duration "${NATIVE_SECS}s" \
        --addr "127.0.0.1:$port" "${TLS[@]}" --server-pid "$spid" --json 2>/dev/null)
  b=$("${CLI[@]}" "$LOADGEN" s-time --seconds "$NATIVE_SECS" --addr "127.0.0.1:$port" "${TLS[@]}" \
        --scratch "$WORK" --server-pid "$spid" --json 2>/dev/null)
  c=$("${CLI[@]}" "$LOADGEN" s-time --leaf-only --seconds "$NATIVE_SECS" --addr "127.0.0.1:$port" \
        "${TLS[@]}" --scratch "$WORK" --server-pid "$spid" --json 2>/dev/null)
  echo "$who: loadgen c=1 $(field per_server_cpu_s <<<"$a") | s_time -new $(field per_server_cpu_s <<<"$b") ($(field ok <<<"$b") accepted) | s_time leaf only, as s_time counts: $(field per_server_cpu_s_as_counted_by_s_time <<<"$c") ($(field connections_counted_by_s_time <<<"$c") counted, $(field ok <<<"$c") accepted)" |
    tee -a "$OUT/summary.txt"
  kill "$spid"; wait "$spid" 2>/dev/null
done
echo "wrote $OUT/summary.txt" >&2
