"""bench/acme.sh's client: WORKERS threads, each with its own ES256 account, complete ACME orders
(newOrder, authorization, http-01 answered by one local responder, finalize, certificate) against
`ca serve --acme` for SECONDS; prints {"orders", "seconds", "orders_per_second", "workers"}.
Usage: acme_orders.py DIRECTORY_URL HTTP_PORT NAME WORKERS SECONDS (REQUESTS_CA_BUNDLE = root)."""
import base64, hashlib, json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

DIRECTORY, HTTP_PORT, NAME = sys.argv[1], int(sys.argv[2]), sys.argv[3]
WORKERS, SECONDS = int(sys.argv[4]), float(sys.argv[5])
D = requests.get(DIRECTORY).json()
TOKENS = {}


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = TOKENS.get(self.path.rsplit("/", 1)[-1], "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class Client:
    def __init__(self):
        self.s = requests.Session()
        self.key = ec.generate_private_key(ec.SECP256R1())
        n = self.key.public_key().public_numbers()
        self.jwk = {"kty": "EC", "crv": "P-256", "x": b64(n.x.to_bytes(32, "big")), "y": b64(n.y.to_bytes(32, "big"))}
        canon = json.dumps({k: self.jwk[k] for k in sorted(self.jwk)}, separators=(",", ":")).encode()
        self.thumb = b64(hashlib.sha256(canon).digest())
        self.nonce = self.s.head(D["newNonce"]).headers["Replay-Nonce"]
        self.kid = None
        r = self.post(D["newAccount"], {"termsOfServiceAgreed": True})
        self.kid = r.headers["Location"]

    def post(self, url, payload):
        prot = {"alg": "ES256", "nonce": self.nonce, "url": url}
        prot.update({"kid": self.kid} if self.kid else {"jwk": self.jwk})
        p = b64(json.dumps(prot).encode())
        pl = "" if payload is None else b64(json.dumps(payload).encode())
        r, s = decode_dss_signature(self.key.sign(f"{p}.{pl}".encode(), ec.ECDSA(hashes.SHA256())))
        body = json.dumps({"protected": p, "payload": pl, "signature": b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))})
        resp = self.s.post(url, data=body, headers={"Content-Type": "application/jose+json"})
        self.nonce = resp.headers["Replay-Nonce"]
        return resp

    def poll(self, url, until):
        while True:
            v = self.post(url, None).json()
            if v["status"] in until:
                return v
            time.sleep(0.02)

    def order(self):
        r = self.post(D["newOrder"], {"identifiers": [{"type": "dns", "value": NAME}]})
        url, o = r.headers["Location"], r.json()
        a = self.post(o["authorizations"][0], None).json()
        ch = [c for c in a["challenges"] if c["type"] == "http-01"][0]
        TOKENS[ch["token"]] = ch["token"] + "." + self.thumb
        self.post(ch["url"], {})
        o = self.poll(url, ("ready", "invalid"))
        assert o["status"] == "ready", o
        k = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
               .sign(k, hashes.SHA256()))
        self.post(o["finalize"], {"csr": b64(csr.public_bytes(serialization.Encoding.DER))})
        o = self.poll(url, ("valid", "invalid"))
        assert o["status"] == "valid", o
        assert "BEGIN CERTIFICATE" in self.post(o["certificate"], None).text


srv = ThreadingHTTPServer(("127.0.0.1", HTTP_PORT), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
clients = [Client() for _ in range(WORKERS)]
done = [0] * WORKERS
end = time.monotonic() + SECONDS


def work(i):
    while time.monotonic() < end:
        clients[i].order()
        done[i] += 1


start = time.monotonic()
threads = [threading.Thread(target=work, args=(i,)) for i in range(WORKERS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.monotonic() - start
print(json.dumps({"orders": sum(done), "seconds": round(elapsed, 2),
                  "orders_per_second": round(sum(done) / elapsed, 2), "workers": WORKERS}))
srv.shutdown()
