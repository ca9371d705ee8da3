//! External Account Binding (RFC 8555 §7.3.4): a new ACME account proves that its owner holds
//! a key the operator handed out (`mutual acme eab create`), so `ca serve --acme-require-eab`
//! admits only accounts the operator knows about.
//!
//! The binding is a JWS inside newAccount's payload: protected header `alg` HS256/HS384/HS512,
//! `kid` the key id, `url` the newAccount URL, no nonce; payload the account's public JWK; MAC'd
//! with the HMAC key. Pure (no I/O): the caller looks the key up in the store.

use aws_lc_rs::hmac;
use serde_json::Value;

use crate::jws::{b64, unb64, Jwk};
use crate::problem::AcmeError;

/// A parsed, not yet verified, binding.
#[derive(Clone, Debug)]
pub struct Binding {
    pub kid: String,
    alg: hmac::Algorithm,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
    payload: Vec<u8>,
}

impl Binding {
    /// Checks the shape; `url` is the newAccount URL the outer JWS was sent to.
    pub fn parse(v: &Value, url: &str) -> Result<Binding, AcmeError> {
        let bad = |d: &str| AcmeError::malformed(format!("externalAccountBinding: {d}"));
        let o = v.as_object().ok_or_else(|| bad("not a JWS object"))?;
        let field = |k: &str| {
            o.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(&format!("no {k}")))
        };
        let (p, pl, sig) = (field("protected")?, field("payload")?, field("signature")?);
        let header: Value = serde_json::from_slice(&unb64(p, "the binding's protected header")?)
            .map_err(|_| bad("the protected header is not JSON"))?;
        let alg = match header.get("alg").and_then(Value::as_str) {
            Some("HS256") => hmac::HMAC_SHA256,
            Some("HS384") => hmac::HMAC_SHA384,
            Some("HS512") => hmac::HMAC_SHA512,
            other => {
                return Err(AcmeError::new(
                    "badSignatureAlgorithm",
                    format!("externalAccountBinding alg {other:?}: use HS256, HS384 or HS512"),
                ))
            }
        };
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no kid"))?;
        if header.get("nonce").is_some() {
            return Err(bad("the binding must not carry a nonce"));
        }
        if header.get("url").and_then(Value::as_str) != Some(url) {
            return Err(bad("its url must be the newAccount URL"));
        }
        Ok(Binding {
            kid: kid.to_string(),
            alg,
            signing_input: format!("{p}.{pl}").into_bytes(),
            signature: unb64(sig, "the binding's signature")?,
            payload: unb64(pl, "the binding's payload")?,
        })
    }

    /// Checks the MAC with the stored key (base64url) and that the payload is the account key.
    pub fn verify(&self, hmac_key: &str, account_key: &Jwk) -> Result<(), AcmeError> {
        let key =
            unb64(hmac_key, "the stored EAB key").map_err(|e| AcmeError::internal(e.detail))?;
        hmac::verify(
            &hmac::Key::new(self.alg, &key),
            &self.signing_input,
            &self.signature,
        )
        .map_err(|_| {
            AcmeError::unauthorized("externalAccountBinding: the MAC does not verify with the key")
        })?;
        let bound: Value = serde_json::from_slice(&self.payload).map_err(|_| {
            AcmeError::malformed("externalAccountBinding: the payload is not a JWK")
        })?;
        if Jwk::from_json(&bound)?.thumbprint() != account_key.thumbprint() {
            return Err(AcmeError::unauthorized(
                "externalAccountBinding: it binds another key than the account's",
            ));
        }
        Ok(())
    }
}

/// A fresh key id and HMAC key (256 bits, base64url), as `mutual acme eab create` prints them.
pub fn new_key() -> (String, String) {
    // base64url may begin with '-', which an ACME client's command line takes for an option
    // (`certbot --eab-kid -x...`: "expected one argument"): draw again until neither does.
    let draw = |n: usize| loop {
        let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
        let s = b64(&bytes);
        if !s.starts_with('-') {
            return s;
        }
    };
    (draw(12), draw(32))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn new_keys_never_start_with_a_dash() {
        for _ in 0..2000 {
            let (kid, key) = new_key();
            assert!(
                !kid.starts_with('-') && !key.starts_with('-'),
                "{kid} {key}"
            );
            assert_eq!((kid.len(), key.len()), (16, 43));
        }
    }

    fn binding(key: &[u8], header: &Value, payload: &Value) -> Value {
        let p = b64(&serde_json::to_vec(header).unwrap());
        let pl = b64(&serde_json::to_vec(payload).unwrap());
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, key),
            format!("{p}.{pl}").as_bytes(),
        );
        json!({"protected": p, "payload": pl, "signature": b64(tag.as_ref())})
    }

    #[test]
    fn mac_url_and_key_are_checked() {
        let jwk = Jwk::Okp { x: b64(&[7u8; 32]) };
        let other = Jwk::Okp { x: b64(&[8u8; 32]) };
        let url = "https://ca/acme/new-account";
        let key = [1u8; 32];
        let h = json!({"alg": "HS256", "kid": "k1", "url": url});
        let b = binding(&key, &h, &jwk.to_json());
        let parsed = Binding::parse(&b, url).unwrap();
        assert_eq!(parsed.kid, "k1");
        parsed.verify(&b64(&key), &jwk).unwrap();
        assert_eq!(
            parsed.verify(&b64(&[2u8; 32]), &jwk).unwrap_err().kind,
            "unauthorized"
        );
        assert_eq!(
            parsed.verify(&b64(&key), &other).unwrap_err().kind,
            "unauthorized"
        );
        assert_eq!(
            Binding::parse(&b, "https://ca/acme/other")
                .unwrap_err()
                .kind,
            "malformed"
        );
        let h = json!({"alg": "HS256", "kid": "k1", "url": url, "nonce": "n"});
        assert_eq!(
            Binding::parse(&binding(&key, &h, &jwk.to_json()), url)
                .unwrap_err()
                .kind,
            "malformed"
        );
        let h = json!({"alg": "none", "kid": "k1", "url": url});
        assert_eq!(
            Binding::parse(&binding(&key, &h, &jwk.to_json()), url)
                .unwrap_err()
                .kind,
            "badSignatureAlgorithm"
        );
        let (kid, k) = new_key();
        assert_eq!((kid.len(), unb64(&k, "k").unwrap().len()), (16, 32));
    }
}
