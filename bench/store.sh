#!/usr/bin/env bash
# The CA's store under load (issue 15), SQLite beside PostgreSQL in one run:
#   1. issuance per second through the HTTPS API (`POST /v1/renew` over mTLS, kept-alive
#      connections, one certificate and one inventory row per request): SQLite with one
#      `ca serve`, PostgreSQL with one and with two replicas (each replica gets half the clients);
#   2. `cert list --expiring-within 7d`, `cert list --json` (every row), `cert list --identity`
#      (one SPIFFE ID among ROWS, through the certificate_sans index) and `ca crl` with ROWS
#      synthetic rows (REVOKED of them revoked) on both backends: wall time and peak RSS
#      (/usr/bin/time -v).
# Needs PostgreSQL on 127.0.0.1:5432 with trust authentication for PGUSER (a database per run is
# created and dropped), sqlite3, psql. Writes a markdown table to OUT.
#
# Knobs: MUTUAL, LOADGEN (binaries; default target/debug, built if missing), ROWS (1000000),
# REVOKED (100000), DURATION (10s), CONCURRENCY (16), PGUSER (postgres), OUT
# (bench/results/<date>-store.md), KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."

MUTUAL=${MUTUAL:-target/debug/mutual}
LOADGEN=${LOADGEN:-target/debug/loadgen}
ROWS=${ROWS:-1000000}
REVOKED=${REVOKED:-100000}
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-16}
PGUSER=${PGUSER:-postgres}
OUT=${OUT:-bench/results/$(date -u +%Y-%m-%d)-store.md}
[ -x "$MUTUAL" ] || cargo build -p mutual
[ -x "$LOADGEN" ] || cargo build -p loadgen
for t in sqlite3 psql /usr/bin/time; do
    command -v "$t" >/dev/null || { echo "store.sh: $t is needed" >&2; exit 2; }
done

work=$(mktemp -d /tmp/mutual-store-bench.XXXXXX)
db="mutual_bench_$$"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql -q -h 127.0.0.1 -U "$PGUSER" -d postgres -c "DROP DATABASE IF EXISTS ${db}_1 WITH (FORCE)" \
        -c "DROP DATABASE IF EXISTS ${db}_2 WITH (FORCE)" -c "DROP DATABASE IF EXISTS ${db}_3 WITH (FORCE)" \
        >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
export MUTUAL_CA_PASSWORD=bench-only-password
RUST_LOG=${RUST_LOG:-warn}
export RUST_LOG

pg_url() { echo "postgres://$PGUSER@127.0.0.1:5432/$1"; }
new_db() { psql -q -h 127.0.0.1 -U "$PGUSER" -d postgres -c "CREATE DATABASE $1" >/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    return 1
}
json_field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read())$1)"; }

# A CA with a client certificate to renew with; $2 = store URL or empty for SQLite.
make_ca() {
    local dir=$1 store=$2
    if [ -n "$store" ]; then
        "$MUTUAL" ca init --dir "$dir" --name "Bench CA" --store "$store" >/dev/null
    else
        "$MUTUAL" ca init --dir "$dir" --name "Bench CA" >/dev/null
    fi
    "$MUTUAL" token create --dir "$dir" --san dns:warmup >/dev/null   # the provisioner key, before copies
    "$MUTUAL" cert issue bench-client --dir "$dir" --out "$dir.client" --san dns:bench.client \
        --ttl 24h >/dev/null
}

serve() { # dir port -> pid in $! (appended to pids)
    "$MUTUAL" ca serve --dir "$1" --listen "127.0.0.1:$2" --rate-limit off \
        2>>"$work/serve-$2.log" >/dev/null &
    pids+=($!)
    wait_port "$2"
}

# Issuance through the API: one loadgen per replica, the clients split between them.
issue_run() { # label dir replicas
    local label=$1 dir=$2 n=$3 ports=() spids=() i per total=0 failed=0 rss=""
    for i in $(seq 1 "$n"); do
        local d=$dir
        if [ "$i" -gt 1 ]; then d="$dir.r$i"; cp -a "$dir" "$d"; fi
        local p; p=$(free_port)
        serve "$d" "$p"
        ports+=("$p"); spids+=("${pids[-1]}")
    done
    per=$(( CONCURRENCY / n ))
    local outs=()
    for i in $(seq 0 $((n - 1))); do
        "$LOADGEN" requests --addr "127.0.0.1:${ports[$i]}" --concurrency "$per" \
            --duration "$DURATION" --post /v1/renew --body '{}' \
            --cert "$dir.client/bench-client.pem" --key "$dir.client/bench-client.key" \
            --ca "$dir/root.pem" --no-verify-server --server-pid "${spids[$i]}" --json \
            >"$work/issue-$label-$i.json" &
        outs+=($!)
    done
    for o in "${outs[@]}"; do wait "$o"; done
    local rate_sum=0
    for i in $(seq 0 $((n - 1))); do
        local f="$work/issue-$label-$i.json"
        rate_sum=$(python3 -c "import json; v=json.load(open('$f')); print(round($rate_sum + v['rate'], 1))")
        failed=$(python3 -c "import json; v=json.load(open('$f')); print($failed + v['failed'])")
    done
    for p in "${spids[@]}"; do
        rss="$rss$(awk '/VmHWM/ {print $2}' "/proc/$p/status") "
        kill "$p" 2>/dev/null || true
    done
    echo "| $label | $n | $CONCURRENCY | $rate_sum | $failed | $rss |" >>"$work/issue.md"
    echo "issuance $label: $rate_sum certificates/s ($failed failed)" >&2
}

# ROWS synthetic rows: notAfter spread over the next 30 days, every (ROWS/REVOKED)-th revoked.
fill_sql() { # dialect: sqlite | postgres
    local now; now=$(date +%s)
    local every=$(( ROWS / REVOKED ))
    if [ "$1" = sqlite ]; then
        cat <<SQL
PRAGMA journal_mode=WAL;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $ROWS - 1)
INSERT INTO certificates (serial, name, subject, sans, usage, not_before, not_after, status,
    revoked_at, reason, requested_by, sha256, created_at)
SELECT printf('7e%030x', i), 'synthetic-' || i, 'CN=synthetic-' || i,
    '["uri:spiffe://bench.example/synthetic/' || i || '"]', 'client', $now - 3600,
    $now + 60 + (i * 2591 % 2592000),
    CASE WHEN i % $every = 0 THEN 'revoked' ELSE 'valid' END,
    CASE WHEN i % $every = 0 THEN $now - (i % 3600) END,
    CASE WHEN i % $every = 0 THEN 'key-compromise' END,
    NULL, printf('%064x', i), $now
FROM n;
INSERT INTO certificate_sans (serial, kind, value)
SELECT serial, 'uri', substr(json_extract(sans, '\$[0]'), 5) FROM certificates
WHERE name LIKE 'synthetic-%';
COMMIT;
ANALYZE;
SQL
    else
        cat <<SQL
INSERT INTO certificates (serial, name, subject, sans, usage, not_before, not_after, status,
    revoked_at, reason, requested_by, sha256, created_at)
SELECT '7e' || lpad(to_hex(i), 30, '0'), 'synthetic-' || i, 'CN=synthetic-' || i,
    '["uri:spiffe://bench.example/synthetic/' || i || '"]', 'client', $now - 3600,
    $now + 60 + (i::bigint * 2591 % 2592000),
    CASE WHEN i % $every = 0 THEN 'revoked' ELSE 'valid' END,
    CASE WHEN i % $every = 0 THEN $now - (i % 3600) END,
    CASE WHEN i % $every = 0 THEN 'key-compromise' END,
    NULL, lpad(to_hex(i), 64, '0'), $now
FROM generate_series(0, $ROWS - 1) AS i;
INSERT INTO certificate_sans (serial, kind, value)
SELECT serial, 'uri', substr(sans::json->>0, 5) FROM certificates WHERE name LIKE 'synthetic-%';
ANALYZE certificates;
ANALYZE certificate_sans;
SQL
    fi
}

# "seconds peakKiB" of one command (stdout discarded).
timed() {
    /usr/bin/time -v "$@" >/dev/null 2>"$work/time.txt" || { cat "$work/time.txt" >&2; return 1; }
    local wall rss
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.txt")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
    python3 -c "
w='$wall'.split(':'); s=sum(float(x)*60**i for i,x in enumerate(reversed(w)))
print(f'{s:.2f} s, {int($rss)/1024:.0f} MiB', end='')"
}

big_run() { # label dir
    local label=$1 dir=$2
    local t0 t1
    t0=$(date +%s.%N)
    if [ "$label" = sqlite ]; then
        fill_sql sqlite | sqlite3 "$dir/inventory.db" >/dev/null
    else
        fill_sql postgres | psql -q -h 127.0.0.1 -U "$PGUSER" -d "$3" >/dev/null
    fi
    t1=$(date +%s.%N)
    local fill_s; fill_s=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
    local soon all crl one
    soon=$(timed "$MUTUAL" cert list --dir "$dir" --expiring-within 7d)
    all=$(timed "$MUTUAL" cert list --dir "$dir" --json)
    local id="spiffe://bench.example/synthetic/$(( ROWS / 2 + 1 ))"
    one=$(timed "$MUTUAL" cert list --dir "$dir" --identity "$id" --json)
    local none; none=$("$MUTUAL" cert list --dir "$dir" --identity "$id" --json | grep -c '"serial"' || true)
    [ "$none" = 1 ] || { echo "store.sh: --identity $id found $none rows, expected 1" >&2; exit 1; }
    crl=$(timed "$MUTUAL" ca crl --dir "$dir" --out "$work/$label.crl")
    local nsoon; nsoon=$("$MUTUAL" cert list --dir "$dir" --expiring-within 7d | grep -c synthetic || true)
    local crl_bytes; crl_bytes=$(stat -c %s "$work/$label.crl")
    echo "| $label | $ROWS ($REVOKED revoked, fill ${fill_s} s) | $soon ($nsoon rows) | $all | $one | $crl ($crl_bytes bytes) |" >>"$work/big.md"
    echo "1M $label: list7d $soon; list-all $all; by identity $one; crl $crl" >&2
}

echo "| store | replicas | clients | certificates/s | failed | server peak RSS (KiB, each) |" >"$work/issue.md"
echo "|---|---|---|---|---|---|" >>"$work/issue.md"
make_ca "$work/sq" ""
issue_run sqlite "$work/sq" 1
new_db "${db}_1"; make_ca "$work/pg1" "$(pg_url "${db}_1")"
issue_run postgres "$work/pg1" 1
new_db "${db}_2"; make_ca "$work/pg2" "$(pg_url "${db}_2")"
issue_run postgres "$work/pg2" 2

echo "| store | rows | cert list --expiring-within 7d (wall, peak RSS) | cert list --json, every row | cert list --identity (1 row) | ca crl |" >"$work/big.md"
echo "|---|---|---|---|---|---|" >>"$work/big.md"
"$MUTUAL" ca init --dir "$work/big-sq" --name "Big CA" >/dev/null
big_run sqlite "$work/big-sq"
new_db "${db}_3"
"$MUTUAL" ca init --dir "$work/big-pg" --name "Big CA" --store "$(pg_url "${db}_3")" >/dev/null
big_run postgres "$work/big-pg" "${db}_3"

{
    echo "# The CA's store: SQLite and PostgreSQL ($(date -u +%Y-%m-%d), bench/store.sh)"
    echo
    echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), PostgreSQL $(psql -At -h 127.0.0.1 -U "$PGUSER" -d postgres -c 'show server_version'), binaries: $MUTUAL."
    echo
    echo "## Issuance through the API (POST /v1/renew over mTLS, $DURATION, kept-alive connections)"
    echo
    cat "$work/issue.md"
    echo
    echo "## $ROWS rows"
    echo
    cat "$work/big.md"
} >"$OUT"
cat "$OUT"
