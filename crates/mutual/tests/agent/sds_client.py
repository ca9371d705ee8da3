"""An independent Envoy SDS client: Python grpcio with the stubs Envoy publishes (PyPI
`xds-protos`: envoy.service.secret.v3), no mutual code. Used by crates/mutual/tests/agent.rs.

    sds_client.py SOCKET stream OUT_DIR NAME...   two StreamSecrets responses: the first is
                                                  answered by a stale request (an old nonce,
                                                  other names) and a NACK, the second ACKed,
                                                  then the stream ends
    sds_client.py SOCKET watch N OUT_DIR NAME...  N StreamSecrets responses, each ACKed
    sds_client.py SOCKET fetch OUT_DIR NAME...    one FetchSecrets response
    sds_client.py SOCKET delta                    DeltaSecrets (expected to be refused)

Each response is printed as one JSON line {"version", "nonce", "secrets": [...]}; each secret's
PEM is written under OUT_DIR (response i, secret NAME: i-N.chain.pem, i-N.key.pem,
i-N.ca.pem) and the key is checked against the leaf. A failed call prints {"code", "details"}
and exits 3.
"""
import json
import os
import queue
import sys

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.rpc import status_pb2

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
NODE = base_pb2.Node(id="sidecar-1", cluster="web")


def spki(k):
    return k.public_bytes(serialization.Encoding.DER,
                          serialization.PublicFormat.SubjectPublicKeyInfo)


def describe(i, resp, out_dir):
    secrets = []
    for any_ in resp.resources:
        assert any_.type_url == SECRET_TYPE, any_.type_url
        s = secret_pb2.Secret()
        any_.Unpack(s)
        base = os.path.join(out_dir, "%d-%d" % (i, len(secrets)))
        kind = s.WhichOneof("type")
        d = {"name": s.name, "kind": kind}
        if kind == "tls_certificate":
            chain_pem = s.tls_certificate.certificate_chain.inline_bytes
            key_pem = s.tls_certificate.private_key.inline_bytes
            chain = x509.load_pem_x509_certificates(chain_pem)
            key = serialization.load_pem_private_key(key_pem, None)
            with open(base + ".chain.pem", "wb") as f:
                f.write(chain_pem)
            fd = os.open(base + ".key.pem", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key_pem)
            d.update({
                "chain": base + ".chain.pem",
                "certs": len(chain),
                "serial": format(chain[0].serial_number, "x"),
                "key_matches": spki(key.public_key()) == spki(chain[0].public_key()),
            })
        elif kind == "validation_context":
            ca_pem = s.validation_context.trusted_ca.inline_bytes
            with open(base + ".ca.pem", "wb") as f:
                f.write(ca_pem)
            d.update({"trusted_ca": base + ".ca.pem",
                      "certs": len(x509.load_pem_x509_certificates(ca_pem))})
        secrets.append(d)
    print(json.dumps({"version": resp.version_info, "nonce": resp.nonce,
                      "type_url": resp.type_url, "secrets": secrets}), flush=True)


def stream(stub, out_dir, names, count=2, nack_first=True):
    q = queue.Queue()
    q.put(discovery_pb2.DiscoveryRequest(node=NODE, resource_names=names, type_url=SECRET_TYPE))

    def requests():
        while True:
            r = q.get()
            if r is None:
                return
            yield r

    for i, resp in enumerate(stub.StreamSecrets(requests(), timeout=60)):
        describe(i, resp, out_dir)
        if i == 0 and nack_first:
            # Stale (not the last nonce): to be ignored, other names and all.
            q.put(discovery_pb2.DiscoveryRequest(
                resource_names=names[:1], type_url=SECRET_TYPE, response_nonce="stale"))
            # NACK: the version applied stays empty, the nonce is the response's.
            q.put(discovery_pb2.DiscoveryRequest(
                resource_names=names, type_url=SECRET_TYPE, response_nonce=resp.nonce,
                error_detail=status_pb2.Status(code=3, message="test client refuses this one")))
        else:
            q.put(discovery_pb2.DiscoveryRequest(
                version_info=resp.version_info, resource_names=names, type_url=SECRET_TYPE,
                response_nonce=resp.nonce))
        if i + 1 == count:
            # Half-close: the agent reads the ACK, then ends the stream.
            q.put(None)


def main():
    sock, mode = sys.argv[1], sys.argv[2]
    stub = sds_pb2_grpc.SecretDiscoveryServiceStub(grpc.insecure_channel("unix:" + sock))
    try:
        if mode == "stream":
            stream(stub, sys.argv[3], sys.argv[4:])
        elif mode == "watch":
            stream(stub, sys.argv[4], sys.argv[5:], count=int(sys.argv[3]), nack_first=False)
        elif mode == "fetch":
            describe(0, stub.FetchSecrets(discovery_pb2.DiscoveryRequest(
                node=NODE, resource_names=sys.argv[4:], type_url=SECRET_TYPE), timeout=60),
                sys.argv[3])
        elif mode == "delta":
            for _ in stub.DeltaSecrets(iter([discovery_pb2.DeltaDiscoveryRequest(
                    node=NODE, type_url=SECRET_TYPE)]), timeout=60):
                print(json.dumps({"unexpected": "a message"}), flush=True)
                return
        else:
            sys.exit("unknown mode " + mode)
    except grpc.RpcError as e:
        print(json.dumps({"code": e.code().name, "details": e.details()}), flush=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
