"""A small independent ACME client for the negative cases of tests/acme.rs.

Speaks RFC 8555 with Python `cryptography` + `requests` (ES256 account keys) against
`mutual ca serve --acme` and prints one JSON object: case -> the ACME error type the server
answered (the part after urn:ietf:params:acme:error:). Usage:
    negative.py DIRECTORY_URL HTTP_PORT [INVENTORY_DB]
with REQUESTS_CA_BUNDLE pointing at the CA's root. With the CA's SQLite inventory, also the
orders a crash left pending (read and finalized: no error, the order settled).
"""
import json, sys, time

from acme_common import PREFIX, S, TOKENS, Key, csr_b64, jws as jws_obj, new_nonce, send, serve_http01

DIRECTORY, HTTP_PORT = sys.argv[1], int(sys.argv[2])
D = S.get(DIRECTORY).json()


def jws(key, url, payload, kid=None):
    return json.dumps(jws_obj(key, url, payload, new_nonce(D), kid)).encode()


def post(body, url):
    return send(url, body)


def err(resp):
    t = resp.json().get("type", "")
    assert resp.headers.get("Replay-Nonce"), "no Replay-Nonce on an error"
    return t[len(PREFIX):] if t.startswith(PREFIX) else t


srv = serve_http01(HTTP_PORT)

out = {}
key = Key("ES256")
other = Key("ES256")

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

# Inside the ACME policy but outside the CA's name constraints: refused at newOrder too (not at
# finalize, after the client had proved control of the name).
bad = {"identifiers": [{"type": "dns", "value": "h.example.test"}]}
r = post(jws(key, D["newOrder"], bad, kid=kid), D["newOrder"])
assert "h.example.test" in r.json().get("detail", "") and "permitted" in r.json()["detail"], r.text
out["outside_ca_rules"] = err(r)

# An order asking for its own validity: refused, not issued with another (RFC 8555 §7.4).
timed = {"identifiers": [{"type": "dns", "value": "b.example.test"}], "notAfter": "2099-01-01T00:00:00Z"}
r = post(jws(key, D["newOrder"], timed, kid=kid), D["newOrder"])
assert "notBefore and notAfter are not supported" in r.json().get("detail", ""), r.text
out["validity_asked"] = err(r)


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

# A ready order finalized with a CSR for another name: badCSR. Finalized as soon as the
# authorization is valid, without polling the order, as lego does: the order must be ready by
# then (the server records the authorization first, then the order, and settles a pending order
# from its authorizations when it is read or finalized).
def validated_order(name):
    """A new order for `name` whose http-01 challenge is answered rightly, once its authorization
    is done (the order itself is not polled): (order URL, order)."""
    order_url, o, authz_url, ch = new_order(name)
    TOKENS[ch["token"]] = ch["token"] + "." + key.thumb()
    post(jws(key, ch["url"], {}, kid=kid), ch["url"])
    poll(authz_url, ("valid", "invalid"))
    return order_url, o


_, o = validated_order("c.example.test")
fin = {"csr": csr_b64("d.example.test")[0]}
out["csr_names_differ"] = err(post(jws(key, o["finalize"], fin, kid=kid), o["finalize"]))

# Finalizing before the order is ready: orderNotReady.
_, o2, _, _ = new_order("e.example.test")
out["finalize_not_ready"] = err(post(jws(key, o2["finalize"], fin, kid=kid), o2["finalize"]))

# A crash between a validation's two writes (the server records the authorization valid, then
# the order ready) leaves a pending order whose authorizations are all valid. With the CA's
# SQLite inventory given, put ready orders back to pending as such a crash would leave them:
# reading one, or finalizing one, must settle it first.
if len(sys.argv) > 3:
    import sqlite3

    def left_pending(name):
        order_url, o = validated_order(name)
        poll(order_url, ("ready",))
        db = sqlite3.connect(sys.argv[3], timeout=10)
        n = db.execute(
            "UPDATE acme_orders SET status = 'pending' WHERE id = ? AND status = 'ready'",
            (order_url.rsplit("/", 1)[-1],),
        ).rowcount
        db.commit()
        db.close()
        assert n == 1, f"{order_url} was not put back to pending"
        return order_url, o

    order_url, _ = left_pending("f.example.test")
    out["pending_order_read"] = post(jws(key, order_url, None, kid=kid), order_url).json()["status"]
    _, o = left_pending("g.example.test")
    r = post(jws(key, o["finalize"], {"csr": csr_b64("g.example.test")[0]}, kid=kid), o["finalize"])
    out["pending_order_finalized"] = r.json()["status"] if r.status_code == 200 else err(r)

print(json.dumps(out))
srv.shutdown()
