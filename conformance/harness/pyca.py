#!/usr/bin/env python3
"""Run x509-limbo through pyca/cryptography's X.509 path validator (cryptography.x509.verification).

Written for mutual's conformance page: the suite's published per-harness results were not reachable
from our machines, so we run the other verifiers ourselves on the same suite copy as ours.
Usage: pyca.py limbo.json results.json
Cases the verifier has no knob for (CRLs, key_usage, signature_algorithms, an EKU other than the one the
validation kind implies, RFC822 names) are SKIPPED, as our own harness does.
"""
import datetime
import ipaddress
import json
import subprocess
import sys

import cryptography
from cryptography import x509
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.verification import PolicyBuilder, Store

SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"


def pems(text):
    if not text:
        return []
    if isinstance(text, list):
        text = "".join(text)
    return x509.load_pem_x509_certificates(text.encode())


def run(case):
    kind = case["validation_kind"]
    implied = SERVER_AUTH if kind == "SERVER" else CLIENT_AUTH
    if case.get("crls"):
        return "SKIPPED", "CRLs not supported by this verifier"
    if case.get("key_usage") or case.get("signature_algorithms"):
        return "SKIPPED", "key_usage/signature_algorithms not configurable"
    ekus = case.get("extended_key_usage") or []
    if any(e not in ("serverAuth", "clientAuth", implied) for e in ekus):
        return "SKIPPED", "EKU other than the validation kind's"
    name = case.get("expected_peer_name")
    if name and name["kind"] == "RFC822":
        return "SKIPPED", "RFC822 peer name"
    try:
        roots = pems(case["trusted_certs"])
        inter = pems(case["untrusted_intermediates"])
        leaf = x509.load_pem_x509_certificate(case["peer_certificate"].encode())
    except Exception as e:  # unparseable input is a rejection
        return "FAILURE", f"parse: {e}"
    b = PolicyBuilder().store(Store(roots))
    t = case.get("validation_time")
    b = b.time(datetime.datetime.fromisoformat(t) if t else datetime.datetime.now(datetime.timezone.utc))
    if case.get("max_chain_depth") is not None:
        b = b.max_chain_depth(case["max_chain_depth"])
    try:
        if kind == "SERVER":
            if not name:
                return "SKIPPED", "server case without a peer name"
            subject = DNSName(name["value"]) if name["kind"] == "DNS" else IPAddress(ipaddress.ip_address(name["value"]))
            b.build_server_verifier(subject).verify(leaf, inter)
        else:
            b.build_client_verifier().verify(leaf, inter)
        return "SUCCESS", ""
    except Exception as e:
        return "FAILURE", str(e)[:200]


TIMEOUT = 60


def run_isolated(case):
    """pathological:: cases probe chain-building blow-ups; a verifier may not come back (pyca 48 did not
    on pathological-chain-same-subject-same-key within minutes), so each runs in a child with a bound."""
    code = "import json,sys; sys.path.insert(0, %r); import pyca; print(json.dumps(pyca.run(json.load(sys.stdin))))"
    try:
        p = subprocess.run([sys.executable, "-c", code % sys.path[0]], input=json.dumps(case),
                           capture_output=True, text=True, timeout=TIMEOUT)
        return tuple(json.loads(p.stdout))
    except subprocess.TimeoutExpired:
        return "FAILURE", f"no verdict within {TIMEOUT} s (counted as a rejection)"


def main():
    suite = json.load(open(sys.argv[1]))
    results = []
    for case in suite["testcases"]:
        actual, ctx = run_isolated(case) if case["id"].startswith("pathological::") else run(case)
        results.append({"id": case["id"], "actual_result": actual, "context": ctx})
    out = {"version": 1, "harness": f"pyca-cryptography-{cryptography.__version__}", "results": results}
    json.dump(out, open(sys.argv[2], "w"), indent=0)


if __name__ == "__main__":
    main()
