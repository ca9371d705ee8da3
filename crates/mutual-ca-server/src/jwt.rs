//! JWT-SVIDs (the SPIFFE JWT-SVID standard): ES256 tokens the CA signs for agents
//! (`POST /v1/agent/jwt`, crate::agent) and the JWK set anyone checks them with (`GET /v1/jwks`).
//!
//! The signing key is kept the way the provisioner key is (crate::es256): `jwt-svid.key`
//! encrypted with the CA password, or `mutual-jwt-svid` in the provisioner key's PKCS#11 token,
//! made at first use. A separate key from the provisioner's, so that a JWT-SVID can never be
//! taken for an enrollment token or the other way round, and each can be rotated alone.
//! Its `kid` is the RFC 7638 thumbprint of its JWK. The JWK set is a list so that a rotation can
//! publish the next key before it signs and keep the last one until its tokens expire; today
//! there is one key, made when none exists (docs/agent.md).
//!
//! Signed with aws-lc-rs directly, as enrollment tokens are (crate::token): the CA writes one
//! fixed shape of token and needs no general JWT library.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mutual_pki::ca::KeyStorage;
use mutual_pki::PkiError;

use crate::es256::Es256Key;

/// The `use` of every key in the JWK set (the SPIFFE trust bundle format).
pub const JWK_USE: &str = "jwt-svid";

/// The CA's JWT-SVID keys: the one that signs, and the JWK set that publishes it.
pub struct JwtKeys {
    signer: Es256Key,
    kid: String,
    /// The JWK set, serialized once (`GET /v1/jwks`, FetchJWTBundles).
    jwks: Vec<u8>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The JWK (RFC 7517) of an uncompressed P-256 point, with its RFC 7638 thumbprint as `kid`.
pub fn jwk_of(point: &[u8]) -> Result<(serde_json::Value, String), PkiError> {
    if point.len() != 65 || point[0] != 4 {
        return Err(PkiError::Key {
            detail: "not an uncompressed P-256 public key".into(),
        });
    }
    let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
    let y = URL_SAFE_NO_PAD.encode(&point[33..]);
    // RFC 7638 §3.2: the required members only, in lexicographic order, no whitespace.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    let kid = URL_SAFE_NO_PAD.encode(digest.as_ref());
    let jwk = serde_json::json!({
        "kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": JWK_USE,
    });
    Ok((jwk, kid))
}

impl JwtKeys {
    /// The CA's JWT-SVID key, where [`mutual_pki::ca::jwt_svid_storage`] says, made when absent.
    pub fn load_or_create(dir: &Path, password: &[u8]) -> Result<JwtKeys, PkiError> {
        let storage = if dir.join(mutual_pki::ca::CONFIG).exists() {
            mutual_pki::ca::jwt_svid_storage(dir, &mutual_pki::ca::read_config(dir)?)?
        } else {
            KeyStorage::File
        };
        let signer = Es256Key::load_or_create(
            dir,
            mutual_pki::ca::JWT_SVID_KEY,
            storage,
            password,
            "the JWT-SVID key",
        )?;
        let (jwk, kid) = jwk_of(signer.public_point())?;
        let jwks = serde_json::to_vec(&serde_json::json!({ "keys": [jwk] })).map_err(|e| {
            PkiError::Key {
                detail: format!("cannot encode the JWK set: {e}"),
            }
        })?;
        Ok(JwtKeys { signer, kid, jwks })
    }

    /// The key id of the signing key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWK set (JSON).
    pub fn jwks(&self) -> &[u8] {
        &self.jwks
    }

    /// A JWT-SVID for `spiffe_id` and `audience`, issued at `now`, valid `ttl_secs`.
    pub fn sign(
        &self,
        spiffe_id: &str,
        audience: &[String],
        now: i64,
        ttl_secs: i64,
    ) -> Result<String, String> {
        let header = serde_json::json!({ "alg": "ES256", "typ": "JWT", "kid": self.kid });
        let claims = serde_json::json!({
            "sub": spiffe_id,
            "aud": audience,
            "iat": now,
            "exp": now.saturating_add(ttl_secs),
        });
        let enc = |v: &serde_json::Value| {
            serde_json::to_vec(v)
                .map(|b| URL_SAFE_NO_PAD.encode(b))
                .map_err(|e| e.to_string())
        };
        let input = format!("{}.{}", enc(&header)?, enc(&claims)?);
        let sig = self.signer.sign(input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    #[test]
    fn a_token_verifies_with_the_published_key_and_the_key_survives_a_reload() {
        let d = tempfile::tempdir().unwrap();
        let k = JwtKeys::load_or_create(d.path(), b"pw").unwrap();
        let t = k
            .sign("spiffe://td/web", &["db".into(), "cache".into()], 1000, 300)
            .unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        let dec = |p: &str| -> serde_json::Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
        };
        assert_eq!(
            dec(parts[0]),
            serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": k.kid()})
        );
        assert_eq!(
            dec(parts[1]),
            serde_json::json!({"sub": "spiffe://td/web", "aud": ["db", "cache"], "iat": 1000, "exp": 1300})
        );
        // The published x and y verify the signature; the kid is their thumbprint.
        let jwks: serde_json::Value = serde_json::from_slice(k.jwks()).unwrap();
        let jwk = &jwks["keys"][0];
        assert_eq!(jwk["use"], "jwt-svid");
        assert_eq!(jwk["kid"], k.kid());
        let mut point = vec![4u8];
        for c in ["x", "y"] {
            point.extend(URL_SAFE_NO_PAD.decode(jwk[c].as_str().unwrap()).unwrap());
        }
        assert_eq!(jwk_of(&point).unwrap().1, k.kid());
        let signed = format!("{}.{}", parts[0], parts[1]);
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
            .verify(signed.as_bytes(), &sig)
            .unwrap();
        // The file is encrypted: the same key comes back with the password, not without.
        assert!(d.path().join(mutual_pki::ca::JWT_SVID_KEY).exists());
        let again = JwtKeys::load_or_create(d.path(), b"pw").unwrap();
        assert_eq!(again.kid(), k.kid());
        assert!(JwtKeys::load_or_create(d.path(), b"nope").is_err());
        assert!(jwk_of(&point[1..]).is_err());
    }
}
