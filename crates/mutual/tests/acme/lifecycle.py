"""An independent ACME client (Python `cryptography` + `requests`) for the account lifecycle of
tests/acme.rs: ES384 and EdDSA account keys end to end, contact update, the orders list,
keyChange (RFC 8555 §7.3.5), revokeCert signed by the certificate's key, ARI renewalInfo
(RFC 9773) before and after a revocation, `replaces` by a foreign account, account deactivation,
and External Account Binding (RFC 8555 §7.3.4). Prints one JSON object, case -> outcome (the
ACME error type without urn:ietf:params:acme:error:, or a short word). Usage:
    lifecycle.py DIRECTORY_URL HTTP_PORT NAME1 NAME2                 (an open CA)
    lifecycle.py DIRECTORY_URL HTTP_PORT --eab KID HMAC_KEY          (--acme-require-eab)
    lifecycle.py DIRECTORY_URL HTTP_PORT --rate N NAME               (--acme-orders-per-hour N)
with REQUESTS_CA_BUNDLE pointing at the CA's root.
"""
import datetime, hashlib, hmac, json, sys, time

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

from acme_common import PREFIX, S, TOKENS, Key, b64, csr_b64, jws, new_nonce, send, serve_http01, unb64

DIRECTORY, HTTP_PORT = sys.argv[1], int(sys.argv[2])
D = S.get(DIRECTORY).json()


def jws_obj(key, url, payload, kid=None, with_nonce=True):
    return jws(key, url, payload, new_nonce(D) if with_nonce else None, kid)


def post(key, url, payload, kid=None):
    body = json.dumps(jws_obj(key, url, payload, kid)).encode()
    return send(url, body)


def err(resp):
    assert resp.headers.get("Replay-Nonce"), "no Replay-Nonce on an error"
    t = resp.json().get("type", "")
    return t[len(PREFIX):] if t.startswith(PREFIX) else f"{resp.status_code}:{resp.text}"


srv = serve_http01(HTTP_PORT)


def account(key, extra=None):
    payload = {"termsOfServiceAgreed": True, "contact": ["mailto:ops@example.test"]}
    payload.update(extra or {})
    r = post(key, D["newAccount"], payload)
    return r


def poll(key, kid, url, until):
    for _ in range(100):
        v = post(key, url, None, kid).json()
        if v.get("status") in until:
            return v
        time.sleep(0.1)
    raise SystemExit(f"{url} stuck: {v}")


def obtain(key, kid, name, replaces=None):
    """newOrder, http-01, finalize; returns (certificate PEM chain, certificate key, order URL)."""
    order = {"identifiers": [{"type": "dns", "value": name}]}
    if replaces:
        order["replaces"] = replaces
    r = post(key, D["newOrder"], order, kid)
    assert r.status_code == 201, r.text
    order_url, o = r.headers["Location"], r.json()
    a = post(key, o["authorizations"][0], None, kid).json()
    ch = [c for c in a["challenges"] if c["type"] == "http-01"][0]
    TOKENS[ch["token"]] = ch["token"] + "." + key.thumb()
    post(key, ch["url"], {}, kid)
    o = poll(key, kid, order_url, ("ready", "invalid"))
    assert o["status"] == "ready", o
    csr, ckey = csr_b64(name)
    r = post(key, o["finalize"], {"csr": csr}, kid)
    assert r.status_code == 200, r.text
    o = poll(key, kid, order_url, ("valid", "invalid"))
    assert o["status"] == "valid", o
    pem = post(key, o["certificate"], None, kid).text
    return pem, ckey, order_url


def cert_id(pem):
    c = x509.load_pem_x509_certificates(pem.encode())[0]
    aki = c.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value.key_identifier
    sn = c.serial_number
    raw = sn.to_bytes((sn.bit_length() + 8) // 8, "big")  # DER INTEGER content: a 0 byte if the top bit is set
    return c, f"{b64(aki)}.{b64(raw)}"


def renewal_info(pem):
    c, cid = cert_id(pem)
    r = S.get(f"{D['renewalInfo']}/{cid}")
    assert r.status_code == 200, r.text
    assert int(r.headers["Retry-After"]) > 0
    w = r.json()["suggestedWindow"]
    p = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return c, p(w["start"]), p(w["end"])


out = {}

if sys.argv[3] == "--eab":
    eab_kid, eab_key = sys.argv[4], sys.argv[5]
    out["directory_says_required"] = D["meta"]["externalAccountRequired"]

    def binding(account_key, kid, mac_key):
        prot = b64(json.dumps({"alg": "HS256", "kid": kid, "url": D["newAccount"]}).encode())
        pl = b64(json.dumps(account_key.jwk()).encode())
        mac = hmac.new(unb64(mac_key), f"{prot}.{pl}".encode(), hashlib.sha256).digest()
        return {"protected": prot, "payload": pl, "signature": b64(mac)}

    k = Key("ES256")
    out["no_binding"] = err(account(k))
    out["wrong_mac"] = err(account(k, {"externalAccountBinding": binding(k, eab_kid, b64(b"x" * 32))}))
    out["unknown_kid"] = err(account(k, {"externalAccountBinding": binding(k, "nope", eab_key)}))
    other = Key("ES256")
    out["binding_of_another_key"] = err(account(k, {"externalAccountBinding": binding(other, eab_kid, eab_key)}))
    r = account(k, {"externalAccountBinding": binding(k, eab_kid, eab_key)})
    out["bound"] = r.status_code
    out["kid_used_twice"] = err(account(other, {"externalAccountBinding": binding(other, eab_kid, eab_key)}))
    # The bound account exists: asking again with its key needs no binding.
    out["existing_account"] = account(k).status_code
    print(json.dumps(out))
    srv.shutdown()
    sys.exit(0)

if sys.argv[3] == "--rate":
    limit, name = int(sys.argv[4]), sys.argv[5]
    order = {"identifiers": [{"type": "dns", "value": name}]}
    k, k2 = Key("ES256"), Key("ES256")
    kid, kid2 = account(k).headers["Location"], account(k2).headers["Location"]
    out["within_limit"] = [post(k, D["newOrder"], order, kid).status_code for _ in range(limit)]
    r = post(k, D["newOrder"], order, kid)
    out["beyond_limit"] = err(r)
    out["status"] = r.status_code
    out["retry_after_within_the_hour"] = 0 < int(r.headers["Retry-After"]) <= 3600
    # The limit is per account: another account still orders.
    out["other_account"] = post(k2, D["newOrder"], order, kid2).status_code
    print(json.dumps(out))
    srv.shutdown()
    sys.exit(0)

NAME1, NAME2 = sys.argv[3], sys.argv[4]

# ES384 and EdDSA account keys, end to end.
k384, ked = Key("ES384"), Key("EdDSA")
r = account(k384)
assert r.status_code == 201, r.text
kid384 = r.headers["Location"]
pem384, _, order384 = obtain(k384, kid384, NAME1)
out["es384"] = "valid"
r = account(ked)
assert r.status_code == 201, r.text
kided = r.headers["Location"]
pemed, certkey, _ = obtain(ked, kided, NAME2)
out["eddsa"] = "valid"

# Contact update; a contact that is not mailto: is unsupportedContact.
r = post(k384, kid384, {"contact": ["mailto:new@example.test"]}, kid384)
out["contact_update"] = r.json()["contact"]
out["contact_tel"] = err(post(k384, kid384, {"contact": ["tel:+1555"]}, kid384))

# The orders list names the order.
orders_url = post(k384, kid384, None, kid384).json()["orders"]
out["orders_list"] = post(k384, orders_url, None, kid384).json()["orders"] == [order384]
out["orders_of_another"] = err(post(ked, orders_url, None, kided))

# ARI: the window of a fresh certificate lies within its life, from two-thirds on.
c, start, end = renewal_info(pem384)
nb, na = c.not_valid_before_utc, c.not_valid_after_utc
out["ari_window"] = nb + (na - nb) * 0.6 < start < end < na
_, cid_unknown = cert_id(pem384)
cid_unknown = cid_unknown.split(".")[0] + "." + b64(b"\x01\x02\x03")
r = S.get(f"{D['renewalInfo']}/{cid_unknown}")
out["ari_unknown"] = f"{r.status_code}:{err(r)}"
r = S.get(f"{D['renewalInfo']}/not-a-cert-id")
out["ari_malformed"] = err(r)

# `replaces` naming another account's certificate: unauthorized.
_, cid384 = cert_id(pem384)
body = {"identifiers": [{"type": "dns", "value": NAME2}], "replaces": cid384}
out["replaces_foreign"] = err(post(ked, D["newOrder"], body, kided))
r = post(k384, D["newOrder"], {"identifiers": [{"type": "dns", "value": NAME1}], "replaces": cid384}, kid384)
out["replaces_own"] = r.json().get("replaces") == cid384
# Once an order replacing it is valid, the certificate cannot be replaced again.
obtain(k384, kid384, NAME1, replaces=cid384)
r = post(k384, D["newOrder"], {"identifiers": [{"type": "dns", "value": NAME1}], "replaces": cid384}, kid384)
out["replaced_twice"] = f"{r.status_code}:{err(r)}"

# A certID naming our serial under another issuing key (an intermediate the CA no longer uses,
# as after a rotation): the window is in the past.
r = S.get(f"{D['renewalInfo']}/{b64(bytes(20))}.{cid384.split('.')[1]}")
w = r.json()["suggestedWindow"]
end = datetime.datetime.fromisoformat(w["end"].replace("Z", "+00:00"))
out["ari_other_issuer"] = end < datetime.datetime.now(datetime.timezone.utc)

# keyChange: the ES384 account rolls over to a new ES384 key (the old one then fails to verify).
def key_change(old, kid, new, url_account=None, old_jwk=None):
    inner = jws_obj(new, D["keyChange"], {"account": url_account or kid, "oldKey": old_jwk or old.jwk()}, with_nonce=False)
    return post(old, D["keyChange"], inner, kid)

out["key_change_in_use"] = err(key_change(k384, kid384, ked))
r = key_change(k384, kid384, ked)
out["key_change_in_use_location"] = r.status_code == 409 and r.headers.get("Location") == kided
knew = Key("ES384")
out["key_change_wrong_old_key"] = err(key_change(k384, kid384, knew, old_jwk=knew.jwk()))
r = key_change(k384, kid384, knew)
out["key_change"] = r.status_code
out["old_key_after_change"] = err(post(k384, kid384, None, kid384))
out["new_key_after_change"] = post(knew, kid384, None, kid384).json()["status"]
# newAccount with onlyReturnExisting finds the account by its new key.
r = post(knew, D["newAccount"], {"onlyReturnExisting": True})
out["lookup_by_new_key"] = r.headers.get("Location") == kid384

# revokeCert signed by the certificate's own key (jwk), not by an account.
cert_der = x509.load_pem_x509_certificates(pemed.encode())[0].public_bytes(serialization.Encoding.DER)
rev = {"certificate": b64(cert_der), "reason": 1}
out["revoke_by_other_key"] = err(post(Key("ES256"), D["revokeCert"], rev))
r = post(Key.of(certkey, "ES256"), D["revokeCert"], rev)
out["revoke_by_cert_key"] = r.status_code
out["revoke_again"] = err(post(Key.of(certkey, "ES256"), D["revokeCert"], rev))

# ARI after the revocation: the window lies in the past, the client renews at once.
_, start, end = renewal_info(pemed)
now = datetime.datetime.now(datetime.timezone.utc)
out["ari_after_revoke"] = start < end < now

# Deactivation: the account can do nothing afterwards.
r = post(ked, kided, {"status": "deactivated"}, kided)
out["deactivate"] = r.json()["status"]
out["after_deactivation"] = err(post(ked, D["newOrder"], {"identifiers": [{"type": "dns", "value": NAME2}]}, kided))

print(json.dumps(out))
srv.shutdown()
