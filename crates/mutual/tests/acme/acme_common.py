"""What the independent ACME clients in this folder (lifecycle.py, negative.py, replicas.py) share:
base64url, account keys (ES256, ES384, EdDSA) with their JWK, thumbprint and JWS signature, the
flattened JWS of RFC 8555 §6.2, a CSR for one DNS name, and the http-01 responder. One copy, so a
fix to the JWS or the challenge answer reaches every client. Python `cryptography` only.
"""
import base64, hashlib, json, threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

PREFIX = "urn:ietf:params:acme:error:"
# One HTTP session per client (REQUESTS_CA_BUNDLE names the CA's root).
S = requests.Session()


def new_nonce(directory):
    return S.head(directory["newNonce"]).headers["Replay-Nonce"]


def send(url, body):
    """POSTs a JWS (JSON text) with the JOSE content type."""
    return S.post(url, data=body, headers={"Content-Type": "application/jose+json"})


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def unb64(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Key:
    """An account (or certificate) key: ES256, ES384 or EdDSA."""

    def __init__(self, kind):
        self.kind = kind
        if kind == "ES256":
            self.k = ec.generate_private_key(ec.SECP256R1())
        elif kind == "ES384":
            self.k = ec.generate_private_key(ec.SECP384R1())
        else:
            self.k = ed25519.Ed25519PrivateKey.generate()

    @staticmethod
    def of(private, kind):
        k = Key.__new__(Key)
        k.kind, k.k = kind, private
        return k

    def jwk(self):
        if self.kind == "EdDSA":
            raw = self.k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
        n = self.k.public_key().public_numbers()
        size, crv = (32, "P-256") if self.kind == "ES256" else (48, "P-384")
        return {"kty": "EC", "crv": crv, "x": b64(n.x.to_bytes(size, "big")), "y": b64(n.y.to_bytes(size, "big"))}

    def thumb(self):
        j = self.jwk()
        canon = json.dumps({k: j[k] for k in sorted(j)}, separators=(",", ":")).encode()
        return b64(hashlib.sha256(canon).digest())

    def sign(self, msg):
        if self.kind == "EdDSA":
            return self.k.sign(msg)
        size, h = (32, hashes.SHA256()) if self.kind == "ES256" else (48, hashes.SHA384())
        r, s = decode_dss_signature(self.k.sign(msg, ec.ECDSA(h)))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def jws(key, url, payload, nonce=None, kid=None):
    """The flattened JWS object: `kid` when given, else the key's `jwk`; no `nonce` header when
    nonce is None (the inner JWS of keyChange); payload None is POST-as-GET."""
    prot = {"alg": key.kind, "url": url}
    if nonce is not None:
        prot["nonce"] = nonce
    if kid:
        prot["kid"] = kid
    else:
        prot["jwk"] = key.jwk()
    p = b64(json.dumps(prot).encode())
    pl = "" if payload is None else b64(json.dumps(payload).encode())
    return {"protected": p, "payload": pl, "signature": b64(key.sign(f"{p}.{pl}".encode()))}


def csr_b64(name):
    """A CSR for `name` (CN and DNS SAN) with a new P-256 key: (base64url DER, the key)."""
    ckey = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ckey, hashes.SHA256())
    )
    return b64(csr.public_bytes(serialization.Encoding.DER)), ckey


# http-01: token -> the key authorization the responder serves at /.well-known/acme-challenge/TOKEN.
TOKENS = {}


class _Http01(BaseHTTPRequestHandler):
    def do_GET(self):
        body = TOKENS.get(self.path.rsplit("/", 1)[-1], "nothing here").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def serve_http01(port):
    """Answers http-01 challenges from TOKENS on 127.0.0.1:port (a daemon thread); returns the server."""
    srv = HTTPServer(("127.0.0.1", port), _Http01)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv
