#!/usr/bin/env bash
# A TLS key inside a TPM 2.0, end to end, on a software TPM (issue 18; docs/keys.md "TPM"):
# swtpm (the TPM) + tpm2-abrmd (its resource manager, on a private D-Bus session bus) +
# tpm2-pkcs11 (the PKCS#11 module mutual loads). Makes a token with tpm2_ptool, has `mutual cert
# issue --key-storage pkcs11` generate a key in the TPM and certify it, checks it with `cert
# inspect --key`, then runs `mutual serve` with `--key pkcs11:...` and fetches through it with
# curl and openssl s_client. Prints PASS or the first failure (exit 1); exit 2 if a tool is
# missing. Everything lives in a temp directory and every process it starts is stopped.
#
# Needs (Debian): swtpm swtpm-tools tpm2-tools tpm2-abrmd libtss2-tcti-tabrmd0
# libtpm2-pkcs11-1 libtpm2-pkcs11-tools dbus opensc curl openssl python3.
# Knobs: MUTUAL (default target/debug/mutual, built if missing), KEEP=1 keeps the directory.
set -euo pipefail
cd "$(dirname "$0")/.."

MUTUAL=${MUTUAL:-$PWD/target/debug/mutual}
MODULE=${MODULE:-/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so}
[ -x "$MUTUAL" ] || cargo build -p mutual
for t in swtpm tpm2-abrmd tpm2_ptool dbus-daemon curl openssl python3; do
    command -v "$t" >/dev/null || { echo "tpm.sh: $t is needed (see the header)" >&2; exit 2; }
done
[ -f "$MODULE" ] || { echo "tpm.sh: no tpm2-pkcs11 module at $MODULE" >&2; exit 2; }

work=$(mktemp -d /tmp/mutual-tpm.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$work/swtpm.pid" ] && kill "$(cat "$work/swtpm.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    [ "${KEEP:-}" = 1 ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
    fail "nothing listens on $1"
}

# The TPM, its resource manager on a private bus, and the module's settings.
mkdir -p state store
tpm_port=$(free_port)
swtpm socket --tpm2 --tpmstate dir="$work/state" --server type=tcp,port="$tpm_port" \
    --ctrl type=tcp,port=$((tpm_port + 1)) --flags not-need-init,startup-clear \
    --daemon --pid file="$work/swtpm.pid"
dbus-daemon --session --fork --print-address=3 --print-pid=4 3>"$work/dbus.addr" 4>"$work/dbus.pid"
pids+=("$(cat "$work/dbus.pid")")
export DBUS_SESSION_BUS_ADDRESS=$(cat "$work/dbus.addr")
tpm2-abrmd --session --allow-root --tcti="swtpm:host=127.0.0.1,port=$tpm_port" >abrmd.log 2>&1 &
pids+=($!)
export TPM2TOOLS_TCTI="tabrmd:bus_type=session" TPM2_PKCS11_TCTI="tabrmd:bus_type=session"
export TPM2_PKCS11_STORE=$work/store
for _ in $(seq 1 50); do tpm2_getcap properties-fixed >/dev/null 2>&1 && break; sleep 0.1; done
tpm2_ptool init >/dev/null
tpm2_ptool addtoken --pid=1 --label=device --userpin=20261205 --sopin=87654321 >/dev/null
printf '20261205\n' >pin && chmod 600 pin

# A CA (file keys), the device's key generated in the TPM and certified, a client.
export MUTUAL_CA_PASSWORD=tpm-check
"$MUTUAL" ca init --dir ca >/dev/null
"$MUTUAL" cert issue device --dir ca --server --san dns:localhost --out out \
    --key-storage pkcs11 --pkcs11-module "$MODULE" --pkcs11-uri 'pkcs11:token=device;object=tls' \
    --pkcs11-pin-file pin >/dev/null || fail "cert issue with the key in the TPM"
[ ! -e out/device.key ] || fail "a key file was written"
"$MUTUAL" cert issue client --dir ca --client --san dns:client.test --out out >/dev/null
key="pkcs11:token=device;object=tls?module-path=$MODULE&pin-source=$work/pin"
"$MUTUAL" cert inspect out/device.pem --key "$key" --json >inspect.json
python3 - <<'PY' || fail "cert inspect --key: $(cat inspect.json)"
import json
k = json.load(open("inspect.json"))["key"]
assert k["matches_certificate"] is True
assert k["location"]["storage"] == "pkcs11" and k["location"]["token"]["token"] == "device"
assert k["location"]["token"]["extractable"] is False
PY

# serve with the TPM key; curl and openssl s_client through it.
bport=$(free_port); port=$(free_port)
python3 -m http.server "$bport" --bind 127.0.0.1 >/dev/null 2>&1 &
pids+=($!)
wait_port "$bport"
"$MUTUAL" serve --listen "127.0.0.1:$port" --backend "127.0.0.1:$bport" --cert out/device.pem \
    --key "$key" --ca ca/root.pem --allow-any >serve.log 2>&1 &
pids+=($!)
wait_port "$port"
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert ca/root.pem --cert out/client.pem \
    --key out/client.key --resolve "localhost:$port:127.0.0.1" "https://localhost:$port/" || true)
[ "$code" = 200 ] || fail "curl got $code: $(cat serve.log)"
printf 'GET / HTTP/1.0\r\n\r\n' | timeout 30 openssl s_client -connect "127.0.0.1:$port" \
    -servername localhost -CAfile ca/root.pem -cert out/client.pem -cert_chain out/client.pem \
    -key out/client.key -verify_return_error -ign_eof >s_client.out 2>&1 \
    || fail "openssl s_client: $(tail -5 s_client.out)"
grep -q "Verification: OK" s_client.out || fail "openssl did not verify the TPM-signed handshake"
grep -q "200 OK" s_client.out || fail "no answer through serve"
echo "PASS: key generated in the (software) TPM, certified, inspected; serve answered curl and openssl s_client"
