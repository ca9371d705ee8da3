//! One-time enrollment tokens: a JWT (compact form, ES256) signed by the CA's provisioner key,
//! saying exactly which names may be issued, for how long, and for which usage.
//!
//! Why our own ~200 lines rather than a JWT library: we accept exactly one shape of token, that
//! we issue ourselves, and every knob a general library offers (algorithm lists, `none`,
//! key sets, `crit` headers) is something an attacker could try to turn. The rules here are
//! fixed: `alg` is ES256 and nothing else, `kid` must name our provisioner key, unknown header
//! fields are refused, `iss` and `aud` must be ours, `exp` is checked without leeway (the CA's
//! own clock signs and checks it), `nbf`/`iat` with at most 60 s (a token minted on a host whose
//! clock runs slightly ahead). Single use is enforced by the inventory, not here.
//!
//! The provisioner key (P-256) lives next to the CA keys as `provisioner.key`, encrypted with
//! the CA password the same way, or, in a CA whose intermediate key is in a PKCS#11 token, in
//! that token (`mutual-provisioner`, generated there at first use, sensitive), so that a CA
//! with every key in tokens needs no password (docs/keys.md). `provisioner.pub.pem` is its
//! public half for anyone who wants to check a token offline.

use std::path::Path;

use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mutual_pki::ca::KeyStorage;
use mutual_pki::{keys, PkiError, San, Usage};
use serde::{Deserialize, Serialize};

use crate::es256::Es256Key;

pub const ISSUER: &str = "mutual-ca";
pub const AUDIENCE: &str = "mutual-ca/sign";
pub const PROVISIONER_KEY: &str = mutual_pki::ca::PROVISIONER_KEY;
pub const PROVISIONER_PUB: &str = "provisioner.pub.pem";
/// How far in the future `nbf`/`iat` may be (clock skew between token minting and checking).
pub const NBF_LEEWAY_SECS: i64 = 60;
/// Longer than any token we mint (a few hundred bytes); refusing early bounds the work.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why a token was refused. Each maps to one reason label of the API contract.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Bad format, signature, algorithm, key id, issuer, audience or claims: `token_invalid`.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// `exp` has passed: `token_expired`.
    #[error(
        "the token expired at {} ({} s ago)",
        mutual_policy::human::rfc3339(*exp),
        now.saturating_sub(*exp)
    )]
    Expired { exp: i64, now: i64 },
}

impl TokenError {
    /// The API reason label.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Invalid(_) => "token_invalid",
            TokenError::Expired { .. } => "token_expired",
        }
    }
}

fn invalid(s: impl Into<String>) -> TokenError {
    TokenError::Invalid(s.into())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    kid: String,
}

/// The claims of an enrollment token (api-contract.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// 128-bit random, lowercase hex: the single-use key.
    pub jti: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// The first SAN.
    pub sub: String,
    /// `dns:x`, `ip:1.2.3.4`, `uri:spiffe://...`
    pub sans: Vec<String>,
    /// Certificate lifetime, seconds.
    pub ttl: u64,
    /// `server`, `client` or `both`.
    pub usage: String,
}

impl Claims {
    /// New claims for `sans` (at least one), valid from `now` for `expires_in` seconds.
    pub fn new(
        sans: &[San],
        cert_ttl_secs: u64,
        usage: Usage,
        now: i64,
        expires_in: i64,
    ) -> Result<Claims, TokenError> {
        let first = sans
            .first()
            .ok_or_else(|| invalid("a token needs at least one SAN"))?;
        if cert_ttl_secs == 0 || expires_in <= 0 {
            return Err(invalid(
                "the token and certificate lifetimes must be positive",
            ));
        }
        let jti: [u8; 16] = rand::random();
        Ok(Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            jti: hex::encode(jti),
            iat: now,
            nbf: now,
            exp: now.saturating_add(expires_in),
            sub: first.to_string(),
            sans: sans.iter().map(ToString::to_string).collect(),
            ttl: cert_ttl_secs,
            usage: usage.as_str().into(),
        })
    }

    /// The SANs, parsed (verification already checked that they parse).
    pub fn parsed_sans(&self) -> Result<Vec<San>, TokenError> {
        self.sans
            .iter()
            .map(|s| {
                s.parse::<San>()
                    .map_err(|e| invalid(format!("claim sans: {e}")))
            })
            .collect()
    }

    pub fn parsed_usage(&self) -> Result<Usage, TokenError> {
        parse_usage(&self.usage)
            .ok_or_else(|| invalid("claim usage must be server, client or both"))
    }

    /// Checks everything but the signature and single use, at `now`.
    fn check(&self, now: i64) -> Result<(), TokenError> {
        if self.iss != ISSUER {
            return Err(invalid("wrong issuer"));
        }
        if self.aud != AUDIENCE {
            return Err(invalid("wrong audience"));
        }
        if self.jti.len() != 32 || !self.jti.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("jti must be 128 bits of hex"));
        }
        if self.exp <= self.nbf || self.nbf < self.iat.saturating_sub(NBF_LEEWAY_SECS) {
            return Err(invalid("inconsistent iat/nbf/exp"));
        }
        if self.nbf > now.saturating_add(NBF_LEEWAY_SECS)
            || self.iat > now.saturating_add(NBF_LEEWAY_SECS)
        {
            return Err(invalid("the token is not valid yet (nbf in the future)"));
        }
        if now >= self.exp {
            return Err(TokenError::Expired { exp: self.exp, now });
        }
        if self.sans.is_empty() || self.sans.len() > 100 {
            return Err(invalid("sans must list 1 to 100 names"));
        }
        self.parsed_sans()?;
        if self.sub != self.sans[0] {
            return Err(invalid("sub must be the first SAN"));
        }
        if self.ttl == 0 {
            return Err(invalid("ttl must be positive"));
        }
        self.parsed_usage()?;
        Ok(())
    }
}

/// `server`, `client`, `both`.
pub fn parse_usage(s: &str) -> Option<Usage> {
    match s {
        "server" => Some(Usage::Server),
        "client" => Some(Usage::Client),
        "both" => Some(Usage::Both),
        _ => None,
    }
}

/// The provisioner key: signs tokens (`mutual token create`) and checks them (`ca serve`).
pub struct Provisioner {
    key: Es256Key,
    kid: String,
}

impl std::fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Provisioner {
    /// The CA's provisioner key, where [`mutual_pki::ca::provisioner_storage`] says: in its
    /// token (generated there when absent), or `DIR/provisioner.key` (decrypted with the CA
    /// password, created first when absent). Writes `provisioner.pub.pem` when it differs.
    pub fn load_or_create(dir: &Path, password: &[u8]) -> Result<Provisioner, PkiError> {
        let storage = if dir.join(mutual_pki::ca::CONFIG).exists() {
            mutual_pki::ca::provisioner_storage(dir, &mutual_pki::ca::read_config(dir)?)
        } else {
            KeyStorage::File
        };
        let key = Es256Key::load_or_create(
            dir,
            PROVISIONER_KEY,
            storage,
            password,
            "the provisioner key",
        )?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.spki_der());
        let kid = hex::encode(&digest.as_ref()[..16]);
        let p = Provisioner { key, kid };
        let pub_path = dir.join(PROVISIONER_PUB);
        let pub_pem = mutual_pki::pem_encode("PUBLIC KEY", p.key.spki_der())?;
        let current = std::fs::read_to_string(&pub_path).unwrap_or_default();
        if current != pub_pem {
            keys::write_atomic(&pub_path, pub_pem.as_bytes(), 0o644, true)?;
        }
        Ok(p)
    }

    /// The key id put in every token header: the first 128 bits of SHA-256(SPKI), hex.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs `claims` into a compact JWT.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let header = Header {
            alg: "ES256".into(),
            typ: Some("JWT".into()),
            kid: self.kid.clone(),
        };
        let enc = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        let h = serde_json::to_vec(&header).map_err(|e| invalid(e.to_string()))?;
        let c = serde_json::to_vec(claims).map_err(|e| invalid(e.to_string()))?;
        let input = format!("{}.{}", enc(&h), enc(&c));
        let sig = self.key.sign(input.as_bytes()).map_err(invalid)?;
        Ok(format!("{input}.{}", enc(&sig)))
    }

    /// Verifies a token's form, header, signature and claims at `now` (Unix seconds). Single
    /// use is the caller's business (the inventory records spent jtis).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid("too long"));
        }
        let mut parts = token.split('.');
        let (Some(h64), Some(c64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a compact JWT (three dot-separated parts)"));
        };
        let dec = |part: &str, what: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| invalid(format!("{what} is not base64url")))
        };
        let header: Header = serde_json::from_slice(&dec(h64, "header")?)
            .map_err(|_| invalid("malformed header"))?;
        if header.alg != "ES256" {
            return Err(invalid(format!(
                "algorithm {:?} refused (only ES256)",
                header.alg
            )));
        }
        if header.typ.as_deref().is_some_and(|t| t != "JWT") {
            return Err(invalid("typ must be JWT"));
        }
        if header.kid != self.kid {
            return Err(invalid("unknown key id (not this CA's provisioner)"));
        }
        let sig = dec(s64, "signature")?;
        let signed_len = h64.len() + 1 + c64.len();
        let input = &token.as_bytes()[..signed_len];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_point())
            .verify(input, &sig)
            .map_err(|_| invalid("bad signature"))?;
        decode_claims(&dec(c64, "claims")?, now)
    }
}

/// Parses and checks a token's claims (JSON) at `now`. Only called on signed bytes by
/// [`Provisioner::verify`]; public so the fuzzer can reach the claims parser directly.
pub fn decode_claims(json: &[u8], now: i64) -> Result<Claims, TokenError> {
    let claims: Claims =
        serde_json::from_slice(json).map_err(|e| invalid(format!("malformed claims: {e}")))?;
    claims.check(now)?;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn prov() -> (tempfile::TempDir, Provisioner) {
        let d = tempfile::tempdir().unwrap();
        let p = Provisioner::load_or_create(d.path(), b"pw").unwrap();
        (d, p)
    }

    fn claims(now: i64) -> Claims {
        Claims::new(
            &["dns:svc-a.internal".parse().unwrap()],
            3600,
            Usage::Both,
            now,
            600,
        )
        .unwrap()
    }

    #[test]
    fn round_trip_and_reload() {
        let (d, p) = prov();
        let c = claims(1000);
        let t = p.sign(&c).unwrap();
        assert_eq!(p.verify(&t, 1001).unwrap(), c);
        // Reloading gives the same key; a wrong password is refused.
        let again = Provisioner::load_or_create(d.path(), b"pw").unwrap();
        assert_eq!(again.kid(), p.kid());
        assert!(again.verify(&t, 1001).is_ok());
        assert!(Provisioner::load_or_create(d.path(), b"nope").is_err());
        assert!(d.path().join(PROVISIONER_PUB).exists());
    }

    #[test]
    fn refusals() {
        let (_d, p) = prov();
        let (_d2, other) = prov();
        let c = claims(1000);
        let t = p.sign(&c).unwrap();
        // Expiry without leeway; nbf with 60 s.
        assert!(matches!(
            p.verify(&t, 1600),
            Err(TokenError::Expired { .. })
        ));
        assert!(p.verify(&t, 1000 - 59).is_ok());
        assert_eq!(
            p.verify(&t, 1000 - 61).unwrap_err().reason(),
            "token_invalid"
        );
        // Another key: unknown kid, and with our kid a bad signature.
        let forged = other.sign(&c).unwrap();
        assert!(p
            .verify(&forged, 1001)
            .unwrap_err()
            .to_string()
            .contains("key id"));
        let parts: Vec<&str> = forged.split('.').collect();
        let ours: Vec<&str> = t.split('.').collect();
        let swapped = format!("{}.{}.{}", ours[0], ours[1], parts[2]);
        assert!(p
            .verify(&swapped, 1001)
            .unwrap_err()
            .to_string()
            .contains("signature"));
        // Payload edited.
        let mut c2 = c.clone();
        c2.sans.push("dns:evil.internal".into());
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c2).unwrap());
        let edited = format!("{}.{}.{}", ours[0], body, ours[2]);
        assert!(p
            .verify(&edited, 1001)
            .unwrap_err()
            .to_string()
            .contains("signature"));
        // alg none / HS256.
        for alg in ["none", "HS256", "ES384"] {
            let h = URL_SAFE_NO_PAD.encode(format!(
                r#"{{"alg":"{alg}","typ":"JWT","kid":"{}"}}"#,
                p.kid()
            ));
            let bad = format!("{h}.{}.{}", ours[1], ours[2]);
            assert!(p
                .verify(&bad, 1001)
                .unwrap_err()
                .to_string()
                .contains("algorithm"));
            let bad = format!("{h}.{}.", ours[1]);
            assert_eq!(p.verify(&bad, 1001).unwrap_err().reason(), "token_invalid");
        }
        // crit or any unknown header field.
        let h = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"alg":"ES256","kid":"{}","crit":["x"]}}"#,
            p.kid()
        ));
        assert!(p
            .verify(&format!("{h}.{}.{}", ours[1], ours[2]), 1001)
            .is_err());
        assert!(p.verify("a.b", 1001).is_err());
        assert!(p.verify("", 1001).is_err());
        // Wrong audience, even when correctly signed.
        let mut c3 = c.clone();
        c3.aud = "someone-else".into();
        let t3 = p.sign(&c3).unwrap();
        assert!(p
            .verify(&t3, 1001)
            .unwrap_err()
            .to_string()
            .contains("audience"));
    }
}
