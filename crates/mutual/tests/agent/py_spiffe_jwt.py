"""JWT-SVIDs through `mutual agent`, checked three ways: py-spiffe (PyPI `spiffe`) fetches,
validates through the agent and fetches the JWT bundles; py-spiffe checks the token offline
against that bundle; and, independently of both mutual and py-spiffe, Python `cryptography`
verifies the ES256 signature with the key the CA publishes at /v1/jwks.
The refusals are read with the raw gRPC stubs py-spiffe ships (exact code and details).

    py_spiffe_jwt.py CA_URL ROOT_PEM      (SPIFFE_ENDPOINT_SOCKET names the agent)

Prints one JSON object. Used by crates/mutual/tests/agent.rs.
"""
import base64
import json
import os
import ssl
import sys
import urllib.request

import grpc
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from spiffe import JwtSvid, TrustDomain, WorkloadApiClient
from spiffe._proto import workload_pb2, workload_pb2_grpc

ca_url, root = sys.argv[1], sys.argv[2]
socket = os.environ["SPIFFE_ENDPOINT_SOCKET"]


def b64(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def raw(call, req):
    """A call with the raw stub: 'OK' or 'CODE: details'."""
    with grpc.insecure_channel("unix:" + socket.removeprefix("unix://")) as ch:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(ch)
        try:
            getattr(stub, call)(req, metadata=[("workload.spiffe.io", "true")], timeout=60)
            return "OK"
        except grpc.RpcError as e:
            return f"{e.code().name}: {e.details()}"


client = WorkloadApiClient()
try:
    svid = client.fetch_jwt_svid(audience={"db", "cache"}, timeout=60)
    again = client.fetch_jwt_svid(audience={"cache", "db"}, timeout=60)
    token = svid.token
    validated = client.validate_jwt_svid(token, "db", timeout=60)
    bundles = client.fetch_jwt_bundles(timeout=60)
    td = TrustDomain("agent.test")
    bundle = bundles.get_bundle_for_trust_domain(td)
    offline = JwtSvid.parse_and_validate(token, bundle, {"cache"})

    # The independent check: the CA's published JWK set and `cryptography` only.
    ctx = ssl.create_default_context(cafile=root)
    with urllib.request.urlopen(ca_url + "/v1/jwks", context=ctx, timeout=60) as r:
        jwks = json.load(r)
    h64, c64, s64 = token.split(".")
    header, claims = json.loads(b64(h64)), json.loads(b64(c64))
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    pub = ec.EllipticCurvePublicNumbers(
        int.from_bytes(b64(jwk["x"]), "big"), int.from_bytes(b64(jwk["y"]), "big"), ec.SECP256R1()
    ).public_key()
    sig = b64(s64)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub.verify(der, f"{h64}.{c64}".encode(), ec.ECDSA(hashes.SHA256()))
    # The same bytes with one claim changed no longer verify (the check can fail).
    forged_claims = dict(claims, sub="spiffe://agent.test/admin")
    forged_c64 = base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).rstrip(b"=").decode()
    try:
        pub.verify(der, f"{h64}.{forged_c64}".encode(), ec.ECDSA(hashes.SHA256()))
        forged_verifies = True
    except Exception:
        forged_verifies = False

    # A signature with one byte changed, and a token for another audience.
    bad_sig = bytes([sig[0] ^ 1]) + sig[1:]
    tampered = f"{h64}.{c64}." + base64.urlsafe_b64encode(bad_sig).rstrip(b"=").decode()
    try:
        client.validate_jwt_svid(token, "web", timeout=60)
        pyspiffe_wrong_audience = "accepted"
    except Exception as e:
        pyspiffe_wrong_audience = type(e).__name__
    V = workload_pb2.ValidateJWTSVIDRequest
    print(json.dumps({
        "spiffe_id": str(svid.spiffe_id),
        "cached": again.token == token,
        "validated_spiffe_id": str(validated.spiffe_id),
        "offline_spiffe_id": str(offline.spiffe_id),
        "bundle_kids": sorted(bundle.jwt_authorities.keys()),
        "jwks_kids": sorted(k["kid"] for k in jwks["keys"]),
        "jwks_use": sorted({k.get("use") for k in jwks["keys"]}),
        "header": header,
        "claims": claims,
        "forged_verifies": forged_verifies,
        "pyspiffe_wrong_audience": pyspiffe_wrong_audience,
        "wrong_audience": raw("ValidateJWTSVID", V(audience="web", svid=token)),
        "tampered": raw("ValidateJWTSVID", V(audience="db", svid=tampered)),
        "no_audience": raw("FetchJWTSVID", workload_pb2.JWTSVIDRequest(audience=[])),
        "other_identity": raw("FetchJWTSVID", workload_pb2.JWTSVIDRequest(
            audience=["db"], spiffe_id="spiffe://agent.test/admin")),
        "valid_raw": raw("ValidateJWTSVID", V(audience="cache", svid=token)),
    }), flush=True)
finally:
    client.close()
