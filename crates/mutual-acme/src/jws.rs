//! JWS as ACME uses it (RFC 8555 §6.2, RFC 7515 flattened JSON serialization): parsing,
//! signature verification with aws-lc-rs, and JWK thumbprints (RFC 7638).
//!
//! Why by hand: no JOSE crate we trust covers exactly ACME's rules (one signature, protected
//! header only, `jwk` xor `kid`, `nonce` and `url` required), and the four algorithms ACME
//! clients use map directly onto aws-lc-rs verification algorithms. Everything here is pure
//! (no I/O) so that it can be fuzzed (fuzz/fuzz_targets/acme_jws.rs).

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use crate::problem::AcmeError;

/// Base64url without padding, the only encoding JOSE and ACME use.
pub fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

pub fn unb64(s: &str, what: &str) -> Result<Vec<u8>, AcmeError> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| AcmeError::malformed(format!("{what} is not base64url without padding")))
}

/// How the request names its signing key.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyRef {
    /// The public key itself (newAccount, revokeCert with the certificate's key).
    Jwk(Jwk),
    /// An account URL.
    Kid(String),
}

/// The protected header, checked for shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Protected {
    pub alg: String,
    pub key: KeyRef,
    pub nonce: Option<String>,
    pub url: String,
}

/// A parsed (not yet verified) ACME request.
#[derive(Clone, Debug)]
pub struct Jws {
    pub protected: Protected,
    /// The decoded payload; empty for POST-as-GET.
    pub payload: Vec<u8>,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Flattened {
    protected: String,
    payload: String,
    signature: String,
}

/// The algorithms we accept (RFC 8555 §6.2: ES256 and EdDSA recommended, RS256 required by
/// the clients that still use RSA account keys).
pub const ALGORITHMS: [&str; 4] = ["ES256", "ES384", "RS256", "EdDSA"];

impl Jws {
    /// Parses a request body. Anything but one flattened JWS with a well-formed protected header
    /// is `malformed`; an algorithm we do not verify is `badSignatureAlgorithm`.
    pub fn parse(body: &[u8]) -> Result<Jws, AcmeError> {
        let f: Flattened = serde_json::from_slice(body).map_err(|e| {
            AcmeError::malformed(format!(
                "the body is not a flattened JWS (protected, payload, signature): {e}"
            ))
        })?;
        let header_bytes = unb64(&f.protected, "the protected header")?;
        let h: Value = serde_json::from_slice(&header_bytes)
            .map_err(|_| AcmeError::malformed("the protected header is not JSON"))?;
        let h = h
            .as_object()
            .ok_or_else(|| AcmeError::malformed("the protected header is not a JSON object"))?;
        let alg = h
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| AcmeError::malformed("the protected header has no alg"))?;
        if !ALGORITHMS.contains(&alg) {
            return Err(AcmeError::new(
                "badSignatureAlgorithm",
                format!("alg {alg:?} is not supported; use one of {ALGORITHMS:?}"),
            ));
        }
        let key = match (h.get("jwk"), h.get("kid")) {
            (Some(j), None) => KeyRef::Jwk(Jwk::from_json(j)?),
            (None, Some(Value::String(k))) => KeyRef::Kid(k.clone()),
            (None, Some(_)) => return Err(AcmeError::malformed("kid is not a string")),
            (Some(_), Some(_)) => {
                return Err(AcmeError::malformed(
                    "the protected header has both jwk and kid",
                ))
            }
            (None, None) => {
                return Err(AcmeError::malformed(
                    "the protected header has neither jwk nor kid",
                ))
            }
        };
        let nonce = match h.get("nonce") {
            None => None,
            Some(Value::String(n)) => Some(n.clone()),
            Some(_) => return Err(AcmeError::new("badNonce", "the nonce is not a string")),
        };
        let url = h
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| AcmeError::malformed("the protected header has no url"))?
            .to_string();
        let payload = unb64(&f.payload, "the payload")?;
        let signature = unb64(&f.signature, "the signature")?;
        let mut signing_input = f.protected.into_bytes();
        signing_input.push(b'.');
        signing_input.extend_from_slice(f.payload.as_bytes());
        Ok(Jws {
            protected: Protected {
                alg: alg.to_string(),
                key,
                nonce,
                url,
            },
            payload,
            signing_input,
            signature,
        })
    }

    /// Checks the signature with `key` (the header's `jwk`, or the account key `kid` names).
    /// A key that does not fit `alg` is `badSignatureAlgorithm`; a wrong signature
    /// `unauthorized`.
    pub fn verify(&self, key: &Jwk) -> Result<(), AcmeError> {
        key.verify(&self.protected.alg, &self.signing_input, &self.signature)
    }

    /// The payload as JSON (`{}`-like objects); POST-as-GET has none.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, AcmeError> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| AcmeError::malformed(format!("the payload is not what was expected: {e}")))
    }

    pub fn is_post_as_get(&self) -> bool {
        self.payload.is_empty()
    }
}

/// A public key in JWK form, one of the kinds we verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Jwk {
    /// `crv` P-256 or P-384, with the uncompressed point `04 || x || y`.
    Ec {
        crv: String,
        x: String,
        y: String,
    },
    Rsa {
        n: String,
        e: String,
    },
    /// Ed25519.
    Okp {
        x: String,
    },
}

fn member<'a>(o: &'a serde_json::Map<String, Value>, k: &str) -> Result<&'a str, AcmeError> {
    o.get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| AcmeError::malformed(format!("the jwk has no {k}")))
}

impl Jwk {
    pub fn from_json(v: &Value) -> Result<Jwk, AcmeError> {
        let o = v
            .as_object()
            .ok_or_else(|| AcmeError::malformed("the jwk is not a JSON object"))?;
        if o.contains_key("d") || o.contains_key("p") {
            return Err(AcmeError::malformed(
                "the jwk holds private key members; send the public key only",
            ));
        }
        let jwk = match member(o, "kty")? {
            "EC" => {
                let crv = member(o, "crv")?;
                let len = match crv {
                    "P-256" => 32,
                    "P-384" => 48,
                    _ => {
                        return Err(AcmeError::new(
                            "badSignatureAlgorithm",
                            format!("EC curve {crv:?} is not supported (P-256, P-384)"),
                        ))
                    }
                };
                let (x, y) = (member(o, "x")?, member(o, "y")?);
                if unb64(x, "jwk x")?.len() != len || unb64(y, "jwk y")?.len() != len {
                    return Err(AcmeError::malformed(
                        "the jwk's coordinates have the wrong size",
                    ));
                }
                Jwk::Ec {
                    crv: crv.into(),
                    x: x.into(),
                    y: y.into(),
                }
            }
            "RSA" => {
                let (n, e) = (member(o, "n")?, member(o, "e")?);
                let bits = unb64(n, "jwk n")?.iter().skip_while(|b| **b == 0).count() * 8;
                unb64(e, "jwk e")?;
                if bits < 2048 {
                    return Err(AcmeError::new(
                        "badPublicKey",
                        "RSA account keys must have at least 2048 bits",
                    ));
                }
                Jwk::Rsa {
                    n: n.into(),
                    e: e.into(),
                }
            }
            "OKP" => {
                if member(o, "crv")? != "Ed25519" {
                    return Err(AcmeError::new(
                        "badSignatureAlgorithm",
                        "only the Ed25519 OKP curve is supported",
                    ));
                }
                let x = member(o, "x")?;
                if unb64(x, "jwk x")?.len() != 32 {
                    return Err(AcmeError::malformed("an Ed25519 key has 32 bytes"));
                }
                Jwk::Okp { x: x.into() }
            }
            other => {
                return Err(AcmeError::new(
                    "badSignatureAlgorithm",
                    format!("key type {other:?} is not supported (EC, RSA, OKP)"),
                ))
            }
        };
        Ok(jwk)
    }

    /// The JSON form (only the public members), as stored with the account.
    pub fn to_json(&self) -> Value {
        match self {
            Jwk::Ec { crv, x, y } => serde_json::json!({"kty": "EC", "crv": crv, "x": x, "y": y}),
            Jwk::Rsa { n, e } => serde_json::json!({"kty": "RSA", "n": n, "e": e}),
            Jwk::Okp { x } => serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
        }
    }

    /// RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order, no
    /// whitespace; base64url. Keys an account and makes the key authorization.
    pub fn thumbprint(&self) -> String {
        // serde_json::to_string of a str cannot fail; the values are base64url/ASCII anyway.
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let canon = match self {
            Jwk::Ec { crv, x, y } => format!(
                r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
                q(crv),
                q(x),
                q(y)
            ),
            Jwk::Rsa { n, e } => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, q(e), q(n)),
            Jwk::Okp { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":{}}}"#, q(x)),
        };
        b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canon.as_bytes()).as_ref())
    }

    /// The raw public key as it appears in a certificate's subjectPublicKey BIT STRING (EC
    /// point, Ed25519 key) or, for RSA, `(n, e)` without leading zeros: to compare an account
    /// or request key with a certificate's key (revokeCert signed by the certificate key).
    pub fn raw(&self) -> Result<Vec<u8>, AcmeError> {
        Ok(match self {
            Jwk::Ec { x, y, .. } => {
                let mut p = vec![4u8];
                p.extend(unb64(x, "jwk x")?);
                p.extend(unb64(y, "jwk y")?);
                p
            }
            Jwk::Okp { x } => unb64(x, "jwk x")?,
            Jwk::Rsa { n, e } => {
                let mut v: Vec<u8> = unb64(n, "jwk n")?
                    .into_iter()
                    .skip_while(|b| *b == 0)
                    .collect();
                v.push(b'|');
                v.extend(unb64(e, "jwk e")?.into_iter().skip_while(|b| *b == 0));
                v
            }
        })
    }

    fn verify(&self, alg: &str, msg: &[u8], sig: &[u8]) -> Result<(), AcmeError> {
        let mismatch = || {
            AcmeError::new(
                "badSignatureAlgorithm",
                format!("alg {alg} does not fit the key"),
            )
        };
        let bad = |_| AcmeError::unauthorized("the JWS signature does not verify with the key");
        match (self, alg) {
            (Jwk::Ec { crv, .. }, "ES256") if crv == "P-256" => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, self.raw()?)
                    .verify(msg, sig)
                    .map_err(bad)
            }
            (Jwk::Ec { crv, .. }, "ES384") if crv == "P-384" => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, self.raw()?)
                    .verify(msg, sig)
                    .map_err(bad)
            }
            (Jwk::Okp { .. }, "EdDSA") => UnparsedPublicKey::new(&signature::ED25519, self.raw()?)
                .verify(msg, sig)
                .map_err(bad),
            (Jwk::Rsa { n, e }, "RS256") => signature::RsaPublicKeyComponents {
                n: unb64(n, "jwk n")?,
                e: unb64(e, "jwk e")?,
            }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
            .map_err(bad),
            _ => Err(mismatch()),
        }
    }
}

/// The key authorization of a challenge token for an account key (RFC 8555 §8.1).
pub fn key_authorization(token: &str, account_key: &Jwk) -> String {
    format!("{token}.{}", account_key.thumbprint())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    pub(crate) fn es256_key() -> (EcdsaKeyPair, Jwk) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let kp =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let p = kp.public_key().as_ref().to_vec();
        let jwk = Jwk::Ec {
            crv: "P-256".into(),
            x: b64(&p[1..33]),
            y: b64(&p[33..65]),
        };
        (kp, jwk)
    }

    fn sign(kp: &EcdsaKeyPair, header: &Value, payload: &[u8]) -> Vec<u8> {
        let p = b64(&serde_json::to_vec(header).unwrap());
        let pl = b64(payload);
        let sig = kp
            .sign(&SystemRandom::new(), format!("{p}.{pl}").as_bytes())
            .unwrap();
        serde_json::to_vec(
            &serde_json::json!({"protected": p, "payload": pl, "signature": b64(sig.as_ref())}),
        )
        .unwrap()
    }

    #[test]
    fn es256_round_trip_and_wrong_key() {
        let (kp, jwk) = es256_key();
        let (_, other) = es256_key();
        let h = serde_json::json!({"alg": "ES256", "jwk": jwk.to_json(), "nonce": "n", "url": "https://x/acme/new-account"});
        let body = sign(&kp, &h, b"{}");
        let j = Jws::parse(&body).unwrap();
        assert_eq!(j.protected.key, KeyRef::Jwk(jwk.clone()));
        j.verify(&jwk).unwrap();
        assert_eq!(j.verify(&other).unwrap_err().kind, "unauthorized");
        let h = serde_json::json!({"alg": "RS256", "jwk": jwk.to_json(), "nonce": "n", "url": "u"});
        let j = Jws::parse(&sign(&kp, &h, b"")).unwrap();
        assert!(j.is_post_as_get());
        assert_eq!(j.verify(&jwk).unwrap_err().kind, "badSignatureAlgorithm");
    }

    #[test]
    fn malformed_bodies() {
        for body in [
            &b"not json"[..],
            br#"{"protected":"e30","payload":""}"#,
            br#"{"protected":"!!","payload":"","signature":""}"#,
            br#"{"protected":"e30","payload":"","signature":""}"#,
        ] {
            assert_eq!(Jws::parse(body).unwrap_err().kind, "malformed", "{body:?}");
        }
        let h = b64(br#"{"alg":"HS256","kid":"k","nonce":"n","url":"u"}"#);
        let body = format!(r#"{{"protected":"{h}","payload":"","signature":""}}"#);
        assert_eq!(
            Jws::parse(body.as_bytes()).unwrap_err().kind,
            "badSignatureAlgorithm"
        );
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 §3.1.
        let jwk = Jwk::Rsa {
            n: "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into(),
            e: "AQAB".into(),
        };
        assert_eq!(
            jwk.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
}
