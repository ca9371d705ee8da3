"""An ACME client whose requests alternate between two `ca serve` replicas on one PostgreSQL
store (tests/acme.rs): every request goes to the other replica than the one before, with the
nonce that replica handed out, so accounts, orders, authorizations, validation results and
nonces must all be shared through the store. Also replays, at replica B, a nonce already spent at
replica A (badNonce). Prints one JSON object. Usage:
    replicas.py DIRECTORY_URL_A DIRECTORY_URL_B HTTP_PORT NAME
with REQUESTS_CA_BUNDLE pointing at the CA's root.
"""
import json, sys, time
from urllib.parse import urlsplit

from acme_common import PREFIX, S, TOKENS, Key, csr_b64, jws, send, serve_http01

DIRS, HTTP_PORT, NAME = sys.argv[1:3], int(sys.argv[3]), sys.argv[4]
HOSTS = [urlsplit(d).netloc for d in DIRS]
D = S.get(DIRS[0]).json()
key = Key("ES256")
state = {"turn": 0, "nonce": None, "served": []}


def on(url, i):
    """`url` (of either replica) as served by replica i."""
    for h in HOSTS:
        url = url.replace(f"//{h}/", f"//{HOSTS[i]}/")
    return url


def post(url, payload, kid=None, nonce=None):
    """POST to the next replica in turn, signed with the nonce the previous response carried."""
    i = state["turn"]
    state["turn"] = 1 - i
    url = on(url, i)
    if state["nonce"] is None:
        state["nonce"] = S.head(on(D["newNonce"], 1 - i)).headers["Replay-Nonce"]
    nonce = nonce or state["nonce"]
    body = json.dumps(jws(key, url, payload, nonce, on(kid, i) if kid else None))
    resp = send(url, body)
    state["nonce"] = resp.headers.get("Replay-Nonce")
    state["served"].append(i)
    return resp, nonce


def poll_order(until):
    for _ in range(100):
        o = post(order_url, None, kid)[0].json()
        if o["status"] in until:
            return o
        time.sleep(0.1)
    raise SystemExit(f"{order_url} stuck: {o}")


srv = serve_http01(HTTP_PORT)
out = {}

r, spent = post(D["newAccount"], {"termsOfServiceAgreed": True})
assert r.status_code == 201, r.text
kid = r.headers["Location"]
# The nonce just spent at one replica, replayed at the other: badNonce.
r, _ = post(D["newAccount"], {"termsOfServiceAgreed": True}, nonce=spent)
out["nonce_replayed_at_the_other_replica"] = r.json()["type"][len(PREFIX):]

r, _ = post(D["newOrder"], {"identifiers": [{"type": "dns", "value": NAME}]}, kid)
assert r.status_code == 201, r.text
order_url, o = r.headers["Location"], r.json()
a = post(o["authorizations"][0], None, kid)[0].json()
ch = [c for c in a["challenges"] if c["type"] == "http-01"][0]
TOKENS[ch["token"]] = ch["token"] + "." + key.thumb()
post(ch["url"], {}, kid)
o = poll_order(("ready", "invalid"))
out["order_ready"] = o["status"]
r, _ = post(o["finalize"], {"csr": csr_b64(NAME)[0]}, kid)
assert r.status_code == 200, r.text
o = poll_order(("valid", "invalid"))
out["order"] = o["status"]
pem = post(o["certificate"], None, kid)[0].text
out["chain_certificates"] = pem.count("BEGIN CERTIFICATE")
out["both_replicas_served"] = sorted(set(state["served"])) == [0, 1]
out["requests"] = len(state["served"])
print(json.dumps(out))
srv.shutdown()
