#!/usr/bin/env python3
"""A fleet of simulated devices enrolling over EST (RFC 7030) with factory certificates, then
re-enrolling with the certificates they got: an independent EST client (Python's ssl +
http.client, `cryptography` for keys, CSRs and the PKCS#7 answers), used by
crates/mutual/tests/est.rs (a few hundred devices) and bench/est.sh (10,000).

usage: fleet.py URL CA_ROOT MFG_CERT MFG_KEY N CONCURRENCY OUT_JSON

Prints nothing on success; writes {"enrolled": [...serials], "reenrolled": [...], "failures": [...],
"enroll_seconds": s, "reenroll_seconds": s} to OUT_JSON.
"""
import base64
import datetime
import http.client
import json
import ssl
import sys
import tempfile
import threading
import time
import os
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID


def pem_key(k):
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


def factory_cert(mfg_cert, mfg_key, serial):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Devices"),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, serial),
                x509.NameAttribute(NameOID.COMMON_NAME, "sensor")]))
            .issuer_name(mfg_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(mfg_key, hashes.SHA256()))
    return key, cert


def csr_b64(key):
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sensor")]))
           .sign(key, hashes.SHA256()))
    return base64.encodebytes(csr.public_bytes(serialization.Encoding.DER))


class Est:
    def __init__(self, url, root):
        u = urlparse(url)
        self.host, self.port = u.hostname, u.port
        self.root = root

    def post(self, op, cert_pem_chain, key_pem, body):
        ctx = ssl.create_default_context(cafile=self.root)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        with tempfile.TemporaryDirectory() as d:
            c, k = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
            open(c, "wb").write(cert_pem_chain)
            open(k, "wb").write(key_pem)
            ctx.load_cert_chain(c, k)
        conn = http.client.HTTPSConnection(self.host, self.port, context=ctx, timeout=60)
        try:
            conn.request("POST", "/.well-known/est/" + op, body=body,
                         headers={"Content-Type": "application/pkcs10"})
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        if r.status != 200:
            raise RuntimeError(f"{op}: HTTP {r.status}: {data[:300]!r}")
        ctype = r.getheader("content-type", "")
        if not ctype.startswith("application/pkcs7-mime"):
            raise RuntimeError(f"{op}: content-type {ctype}")
        certs = pkcs7.load_der_pkcs7_certificates(base64.b64decode(data))
        return certs[0]


def main():
    url, root, mfg_cert_p, mfg_key_p, n, conc, out = sys.argv[1:8]
    n, conc = int(n), int(conc)
    mfg_cert = x509.load_pem_x509_certificate(open(mfg_cert_p, "rb").read())
    mfg_key = serialization.load_pem_private_key(open(mfg_key_p, "rb").read(), None)
    intermediate = None
    est = Est(url, root)
    # cacerts once: the intermediate each device appends to its chain for re-enrollment.
    ctx = ssl.create_default_context(cafile=root)
    u = urlparse(url)
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx)
    conn.request("GET", "/.well-known/est/cacerts")
    ca_certs = pkcs7.load_der_pkcs7_certificates(base64.b64decode(conn.getresponse().read()))
    conn.close()
    for c in ca_certs:
        bc = c.extensions.get_extension_for_class(x509.BasicConstraints).value
        if c.issuer != c.subject and bc.ca:
            intermediate = c.public_bytes(serialization.Encoding.PEM)
    assert intermediate, "cacerts has no intermediate"

    devices = []
    for i in range(n):
        fk, fc = factory_cert(mfg_cert, mfg_key, "SN%06d" % i)
        devices.append({"serial": "SN%06d" % i, "fkey": fk, "fcert": fc})
    failures, lock = [], threading.Lock()

    def enroll(d):
        try:
            key = ec.generate_private_key(ec.SECP256R1())
            cert = est.post("simpleenroll", d["fcert"].public_bytes(serialization.Encoding.PEM),
                            pem_key(d["fkey"]), csr_b64(key))
            d["key"], d["cert"] = key, cert
        except Exception as e:  # noqa: BLE001 - reported, counted
            with lock:
                failures.append(f"enroll {d['serial']}: {e}")

    def reenroll(d):
        if "cert" not in d:
            return
        try:
            key = ec.generate_private_key(ec.SECP256R1())
            chain = d["cert"].public_bytes(serialization.Encoding.PEM) + intermediate
            cert = est.post("simplereenroll", chain, pem_key(d["key"]), csr_b64(key))
            d["cert2"] = cert
        except Exception as e:  # noqa: BLE001
            with lock:
                failures.append(f"reenroll {d['serial']}: {e}")

    t0 = time.monotonic()
    with ThreadPoolExecutor(conc) as ex:
        list(ex.map(enroll, devices))
    t1 = time.monotonic()
    with ThreadPoolExecutor(conc) as ex:
        list(ex.map(reenroll, devices))
    t2 = time.monotonic()

    def san(c):
        return c.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)

    result = {
        "enrolled": ["%x" % d["cert"].serial_number for d in devices if "cert" in d],
        "reenrolled": ["%x" % d["cert2"].serial_number for d in devices if "cert2" in d],
        "names": {d["serial"]: san(d["cert2"]) for d in devices if "cert2" in d},
        "failures": failures,
        "enroll_seconds": t1 - t0,
        "reenroll_seconds": t2 - t1,
    }
    json.dump(result, open(out, "w"))


if __name__ == "__main__":
    main()
