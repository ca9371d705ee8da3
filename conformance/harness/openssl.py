#!/usr/bin/env python3
"""Run x509-limbo through OpenSSL's chain validator (`openssl verify -x509_strict`), for mutual's
conformance page: the suite's published per-harness results were not reachable from our machines, so we
run the other verifiers ourselves on the same suite copy as ours.

Usage: openssl.py limbo.json results.json     (OPENSSL=path picks the binary; 2 cases run at a time)
SERVER cases: -purpose sslserver and -verify_hostname / -verify_ip; CLIENT cases: -purpose sslclient.
CRLs: -crl_check_all with every CRL of the case. max_chain_depth: -verify_depth (intermediates).
Skipped, as in our own harness: key_usage, signature_algorithms, another EKU, RFC822 names.
"""
import concurrent.futures
import datetime
import json
import os
import subprocess
import sys
import tempfile

OPENSSL = os.environ.get("OPENSSL", "openssl")


def run(case):
    if case.get("key_usage") or case.get("signature_algorithms"):
        return "SKIPPED", "key_usage/signature_algorithms not configurable"
    implied = "serverAuth" if case["validation_kind"] == "SERVER" else "clientAuth"
    if any(e != implied for e in case.get("extended_key_usage") or []):
        return "SKIPPED", "EKU other than the validation kind's"
    name = case.get("expected_peer_name")
    if name and name["kind"] == "RFC822":
        return "SKIPPED", "RFC822 peer name"
    with tempfile.TemporaryDirectory() as d:
        def write(fname, items):
            p = os.path.join(d, fname)
            with open(p, "w") as f:
                f.write("\n".join(items if isinstance(items, list) else [items]))
            return p

        args = [OPENSSL, "verify", "-x509_strict", "-CAfile", write("roots.pem", case["trusted_certs"])]
        if case["untrusted_intermediates"]:
            args += ["-untrusted", write("inter.pem", case["untrusted_intermediates"])]
        if case.get("crls"):
            args += ["-crl_check_all", "-CRLfile", write("crls.pem", case["crls"])]
        t = case.get("validation_time")
        if t:
            args += ["-attime", str(int(datetime.datetime.fromisoformat(t).timestamp()))]
        if case.get("max_chain_depth") is not None:
            args += ["-verify_depth", str(case["max_chain_depth"])]
        if case["validation_kind"] == "SERVER":
            args += ["-purpose", "sslserver"]
            if name:
                args += ["-verify_ip" if name["kind"] == "IP" else "-verify_hostname", name["value"]]
        else:
            args += ["-purpose", "sslclient"]
        args.append(write("leaf.pem", case["peer_certificate"]))
        p = subprocess.run(args, capture_output=True, text=True)
        if p.returncode == 0:
            return "SUCCESS", ""
        lines = [l for l in (p.stdout + p.stderr).splitlines() if l.startswith("error ") and "verification failed" not in l]
        return "FAILURE", (lines[0].split(": ", 1)[-1] if lines else f"exit {p.returncode}")[:200]


def main():
    suite = json.load(open(sys.argv[1]))
    version = subprocess.run([OPENSSL, "version"], capture_output=True, text=True).stdout.split()[1]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(run, suite["testcases"]))
    results = [{"id": c["id"], "actual_result": a, "context": ctx} for c, (a, ctx) in zip(suite["testcases"], outcomes)]
    json.dump({"version": 1, "harness": f"openssl-{version}", "results": results}, open(sys.argv[2], "w"), indent=0)


if __name__ == "__main__":
    main()
