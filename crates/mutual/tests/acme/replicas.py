"""An ACME client whose requests alternate between two `ca serve` replicas on one PostgreSQL
store (tests/acme.rs): every request goes to the other replica than the one before, with the
nonce that replica handed out, so accounts, orders, authorizations, validation results and
nonces must all be shared through the store. Also replays, at replica B, a nonce already spent at
replica A (badNonce). Prints one JSON object. Usage:
    replicas.py DIRECTORY_URL_A DIRECTORY_URL_B HTTP_PORT NAME
with REQUESTS_CA_BUNDLE pointing at the CA's root.
"""
import base64, hashlib, json, sys, threading, time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

DIRS, HTTP_PORT, NAME = sys.argv[1:3], int(sys.argv[3]), sys.argv[4]
S = requests.Session()
HOSTS = [urlsplit(d).netloc for d in DIRS]
D = S.get(DIRS[0]).json()
PREFIX = "urn:ietf:params:acme:error:"
key = ec.generate_private_key(ec.SECP256R1())
state = {"turn": 0, "nonce": None, "served": []}


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwk():
    n = key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": b64(n.x.to_bytes(32, "big")), "y": b64(n.y.to_bytes(32, "big"))}


def thumb():
    j = jwk()
    canon = json.dumps({k: j[k] for k in sorted(j)}, separators=(",", ":")).encode()
    return b64(hashlib.sha256(canon).digest())


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
    prot = {"alg": "ES256", "nonce": nonce or state["nonce"], "url": url}
    if kid:
        prot["kid"] = on(kid, i)
    else:
        prot["jwk"] = jwk()
    p = b64(json.dumps(prot).encode())
    pl = "" if payload is None else b64(json.dumps(payload).encode())
    r, s = decode_dss_signature(key.sign(f"{p}.{pl}".encode(), ec.ECDSA(hashes.SHA256())))
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    body = json.dumps({"protected": p, "payload": pl, "signature": b64(sig)})
    resp = S.post(url, data=body, headers={"Content-Type": "application/jose+json"})
    state["nonce"] = resp.headers.get("Replay-Nonce")
    state["served"].append(i)
    return resp, prot["nonce"]


TOKENS = {}


class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = TOKENS.get(self.path.rsplit("/", 1)[-1], "nothing here").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


srv = HTTPServer(("127.0.0.1", HTTP_PORT), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
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
TOKENS[ch["token"]] = ch["token"] + "." + thumb()
post(ch["url"], {}, kid)
for _ in range(100):
    o = post(order_url, None, kid)[0].json()
    if o["status"] in ("ready", "invalid"):
        break
    time.sleep(0.1)
out["order_ready"] = o["status"]
ckey = ec.generate_private_key(ec.SECP256R1())
csr = (
    x509.CertificateSigningRequestBuilder()
    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)]))
    .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
    .sign(ckey, hashes.SHA256())
)
r, _ = post(o["finalize"], {"csr": b64(csr.public_bytes(serialization.Encoding.DER))}, kid)
assert r.status_code == 200, r.text
for _ in range(100):
    o = post(order_url, None, kid)[0].json()
    if o["status"] in ("valid", "invalid"):
        break
    time.sleep(0.1)
out["order"] = o["status"]
pem = post(o["certificate"], None, kid)[0].text
out["chain_certificates"] = pem.count("BEGIN CERTIFICATE")
out["both_replicas_served"] = sorted(set(state["served"])) == [0, 1]
out["requests"] = len(state["served"])
print(json.dumps(out))
srv.shutdown()
