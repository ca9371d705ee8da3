"""A small independent ACME client for the negative cases of tests/acme.rs.

Speaks RFC 8555 with Python `cryptography` + `requests` (ES256 account keys) against
`mutual ca serve --acme` and prints one JSON object: case -> the ACME error type the server
answered (the part after urn:ietf:params:acme:error:). Usage:
    negative.py DIRECTORY_URL HTTP_PORT
with REQUESTS_CA_BUNDLE pointing at the CA's root.
"""
import base64, json, sys, threading, time
from http.server import BaseHTTPRequestHandler, HTTPServer

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

DIRECTORY, HTTP_PORT = sys.argv[1], int(sys.argv[2])
S = requests.Session()
D = S.get(DIRECTORY).json()
PREFIX = "urn:ietf:params:acme:error:"


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwk(key):
    n = key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": b64(n.x.to_bytes(32, "big")), "y": b64(n.y.to_bytes(32, "big"))}


def thumb(key):
    j = jwk(key)
    canon = json.dumps({k: j[k] for k in sorted(j)}, separators=(",", ":")).encode()
    h = hashes.Hash(hashes.SHA256())
    h.update(canon)
    return b64(h.finalize())


def nonce():
    return S.head(D["newNonce"]).headers["Replay-Nonce"]


def jws(key, url, payload, kid=None, nonce_value=None):
    prot = {"alg": "ES256", "nonce": nonce_value or nonce(), "url": url}
    if kid:
        prot["kid"] = kid
    else:
        prot["jwk"] = jwk(key)
    p = b64(json.dumps(prot).encode())
    pl = "" if payload is None else b64(json.dumps(payload).encode())
    der = key.sign(f"{p}.{pl}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return json.dumps({"protected": p, "payload": pl, "signature": b64(sig)}).encode()


def post(body, url):
    return S.post(url, data=body, headers={"Content-Type": "application/jose+json"})


def err(resp):
    t = resp.json().get("type", "")
    assert resp.headers.get("Replay-Nonce"), "no Replay-Nonce on an error"
    return t[len(PREFIX):] if t.startswith(PREFIX) else t


TOKENS = {}


class H(BaseHTTPRequestHandler):
    def do_GET(self):
        tok = self.path.rsplit("/", 1)[-1]
        body = TOKENS.get(tok, "nothing here").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


srv = HTTPServer(("127.0.0.1", HTTP_PORT), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()

out = {}
key = ec.generate_private_key(ec.SECP256R1())
other = ec.generate_private_key(ec.SECP256R1())

# malformed: not a JWS at all.
out["malformed"] = err(post(b'{"protected": 1}', D["newAccount"]))

# Account creation, then the same request replayed: badNonce.
body = jws(key, D["newAccount"], {"termsOfServiceAgreed": True})
r = post(body, D["newAccount"])
assert r.status_code == 201, r.text
kid = r.headers["Location"]
out["replayed_nonce"] = err(post(body, D["newAccount"]))

# kid of our account, signature by another key: unauthorized.
order = {"identifiers": [{"type": "dns", "value": "b.example.test"}]}
out["wrong_key"] = err(post(jws(other, D["newOrder"], order, kid=kid), D["newOrder"]))

# An identifier outside the policy: rejectedIdentifier.
bad = {"identifiers": [{"type": "dns", "value": "evil.other.test"}]}
out["outside_policy"] = err(post(jws(key, D["newOrder"], bad, kid=kid), D["newOrder"]))


def new_order(name):
    r = post(jws(key, D["newOrder"], {"identifiers": [{"type": "dns", "value": name}]}, kid=kid), D["newOrder"])
    assert r.status_code == 201, r.text
    o = r.json()
    authz_url = o["authorizations"][0]
    a = post(jws(key, authz_url, None, kid=kid), authz_url).json()
    ch = [c for c in a["challenges"] if c["type"] == "http-01"][0]
    return r.headers["Location"], o, authz_url, ch


def poll(url, until):
    for _ in range(100):
        v = post(jws(key, url, None, kid=kid), url).json()
        if v["status"] in until:
            return v
        time.sleep(0.1)
    raise SystemExit(f"{url} stuck: {v}")


# http-01 answered with a wrong key authorization: the challenge fails with incorrectResponse.
_, _, authz_url, ch = new_order("b.example.test")
TOKENS[ch["token"]] = ch["token"] + ".not-the-thumbprint"
post(jws(key, ch["url"], {}, kid=kid), ch["url"])
a = poll(authz_url, ("valid", "invalid"))
c = [c for c in a["challenges"] if c["type"] == "http-01"][0]
out["wrong_key_authorization"] = c.get("error", {}).get("type", a["status"])[len(PREFIX):]

# A ready order finalized with a CSR for another name: badCSR.
order_url, o, authz_url, ch = new_order("c.example.test")
TOKENS[ch["token"]] = ch["token"] + "." + thumb(key)
post(jws(key, ch["url"], {}, kid=kid), ch["url"])
poll(order_url, ("ready", "invalid"))
ckey = ec.generate_private_key(ec.SECP256R1())
csr = (
    x509.CertificateSigningRequestBuilder()
    .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "d.example.test")]))
    .add_extension(x509.SubjectAlternativeName([x509.DNSName("d.example.test")]), critical=False)
    .sign(ckey, hashes.SHA256())
)
fin = {"csr": b64(csr.public_bytes(serialization.Encoding.DER))}
out["csr_names_differ"] = err(post(jws(key, o["finalize"], fin, kid=kid), o["finalize"]))

# Finalizing before the order is ready: orderNotReady.
_, o2, _, _ = new_order("e.example.test")
out["finalize_not_ready"] = err(post(jws(key, o2["finalize"], fin, kid=kid), o2["finalize"]))

print(json.dumps(out))
srv.shutdown()
