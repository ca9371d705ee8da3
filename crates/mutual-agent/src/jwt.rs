//! JWT-SVIDs on the agent (docs/agent.md): tokens asked of the CA (`/v1/agent/jwt`) and kept
//! per (entry, audience set) until half their lifetime, the CA's JWK set (`/v1/jwks`) fetched at
//! first use and then polled (a change is pushed to every FetchJWTBundles stream), and the
//! validation ValidateJWTSVID does against it.
//!
//! Checked with aws-lc-rs directly rather than a JWT library: one algorithm (ES256, what the CA
//! signs with), one key type, and the SPIFFE rules (sub in the trust domain, aud containing the
//! caller's audience) are a few lines; a general library's algorithm lists are what we would
//! have to switch off.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mutual_enroll::EnrollError;
use serde_json::Value;
use tokio::sync::watch;

use crate::ca::{CaClient, Entry};

/// How often the JWK set is asked of the CA again once something used it.
const JWKS_POLL: Duration = Duration::from_secs(10);
/// Clock skew allowed on `exp` when validating (the CA's clock signed it).
pub const EXP_LEEWAY_SECS: i64 = 30;
/// Longer than any JWT-SVID the CA signs; refusing early bounds the work.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The CA's JWK set: as served (what workloads get) and its P-256 keys by `kid`.
#[derive(Debug, PartialEq, Eq)]
pub struct Jwks {
    pub raw: Vec<u8>,
    keys: HashMap<String, Vec<u8>>,
}

impl Jwks {
    /// Parses a JWK set; keys other than EC P-256 with a `kid` are ignored (none can verify an
    /// ES256 JWT-SVID).
    pub fn parse(raw: Vec<u8>) -> Result<Jwks, String> {
        let v: Value =
            serde_json::from_slice(&raw).map_err(|e| format!("the JWK set is not JSON: {e}"))?;
        let list = v["keys"]
            .as_array()
            .ok_or("the JWK set has no \"keys\" array")?;
        let mut keys = HashMap::new();
        for k in list {
            let field = |n: &str| k[n].as_str();
            if field("kty") != Some("EC") || field("crv") != Some("P-256") {
                continue;
            }
            let (Some(kid), Some(x), Some(y)) = (field("kid"), field("x"), field("y")) else {
                continue;
            };
            let (Ok(x), Ok(y)) = (URL_SAFE_NO_PAD.decode(x), URL_SAFE_NO_PAD.decode(y)) else {
                continue;
            };
            if x.len() != 32 || y.len() != 32 {
                continue;
            }
            let mut point = vec![4u8];
            point.extend(x);
            point.extend(y);
            keys.insert(kid.to_string(), point);
        }
        Ok(Jwks { raw, keys })
    }
}

/// What a valid JWT-SVID says.
#[derive(Debug)]
pub struct Valid {
    pub spiffe_id: String,
    pub claims: serde_json::Map<String, Value>,
}

/// Checks `token` for `audience` in `trust_domain` (`spiffe://example.org`) against `jwks` at
/// `now`: ES256 signature by a key of the set, `exp` (with [`EXP_LEEWAY_SECS`]), `aud` holding
/// `audience`, `sub` a SPIFFE ID of the trust domain. The error is for the caller to read.
pub fn validate(
    token: &str,
    audience: &str,
    trust_domain: &str,
    jwks: &Jwks,
    now: i64,
) -> Result<Valid, String> {
    if token.len() > MAX_TOKEN_LEN {
        return Err("the token is too long to be a JWT-SVID".into());
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(c64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the token is not a compact JWS (three dot-separated parts)".into());
    };
    let json = |part: &str, what: &str| -> Result<serde_json::Map<String, Value>, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| format!("the token's {what} is not base64url"))?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(format!("the token's {what} is not a JSON object")),
        }
    };
    let header = json(h64, "header")?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    if alg != "ES256" {
        return Err(format!(
            "the token's algorithm {alg:?} is not accepted (this trust domain signs ES256)"
        ));
    }
    if let Some(typ) = header.get("typ") {
        if typ != "JWT" && typ != "JOSE" {
            return Err(format!("the token's typ {typ} is not JWT or JOSE"));
        }
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or("the token's header has no kid")?;
    let key = jwks.keys.get(kid).ok_or_else(|| {
        format!("the token's key id {kid} is not in the JWT bundle of {trust_domain}")
    })?;
    let sig = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| "the token's signature is not base64url".to_string())?;
    let signed = &token.as_bytes()[..h64.len() + 1 + c64.len()];
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
        .verify(signed, &sig)
        .map_err(|_| "the token's signature does not verify".to_string())?;
    let claims = json(c64, "claims")?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or("the token has no numeric exp claim")?;
    if now > exp.saturating_add(EXP_LEEWAY_SECS) {
        return Err(format!("the token expired at {exp} (now {now})"));
    }
    let aud: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(l)) => l.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !aud.contains(&audience) {
        return Err(format!(
            "the token's audience {aud:?} does not contain {audience:?}"
        ));
    }
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    let in_domain = mutual_policy::SpiffeId::parse(sub)
        .is_ok_and(|id| format!("spiffe://{}", id.trust_domain()) == trust_domain);
    if !in_domain {
        return Err(format!(
            "the token's subject {sub:?} is not a SPIFFE ID of {trust_domain}"
        ));
    }
    Ok(Valid {
        spiffe_id: sub.to_string(),
        claims,
    })
}

/// A JSON object as a `google.protobuf.Struct` (ValidateJWTSVIDResponse.claims).
pub fn to_struct(m: &serde_json::Map<String, Value>) -> prost_types::Struct {
    fn value(v: &Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match v {
            Value::Null => Kind::NullValue(0),
            Value::Bool(b) => Kind::BoolValue(*b),
            Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
            Value::String(s) => Kind::StringValue(s.clone()),
            Value::Array(l) => Kind::ListValue(prost_types::ListValue {
                values: l.iter().map(value).collect(),
            }),
            Value::Object(o) => Kind::StructValue(to_struct(o)),
        };
        prost_types::Value { kind: Some(kind) }
    }
    prost_types::Struct {
        fields: m
            .iter()
            .map(|(k, v)| (k.clone(), value(v)))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// One cached token and when to ask for a new one (half its lifetime).
struct Cached {
    token: String,
    refresh_at: i64,
    expires_at: i64,
}

/// The agent's JWT state.
pub struct Jwt {
    ca: CaClient,
    /// By (entry id, sorted audience set).
    cache: Mutex<HashMap<(String, Vec<String>), Cached>>,
    jwks: watch::Sender<Option<Arc<Jwks>>>,
    /// The poller is started by the first use of the JWK set.
    polling: std::sync::Once,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Jwt {
    pub fn new(ca: CaClient) -> Arc<Jwt> {
        Arc::new(Jwt {
            ca,
            cache: Mutex::default(),
            jwks: watch::channel(None).0,
            polling: std::sync::Once::new(),
        })
    }

    /// A JWT-SVID for `entry` and `audience`: the cached one until half its lifetime, then a
    /// new one from the CA.
    pub async fn svid(&self, entry: &Entry, audience: &[String]) -> Result<String, EnrollError> {
        let mut set = audience.to_vec();
        set.sort();
        set.dedup();
        let key = (entry.id.clone(), set);
        let now = unix_now();
        if let Some(c) = lock(&self.cache).get(&key).filter(|c| now < c.refresh_at) {
            return Ok(c.token.clone());
        }
        let issued = self.ca.jwt(entry, &key.1).await?;
        let half = (issued.expires_at - now) / 2;
        tracing::info!(entry = %entry.id, spiffe_id = %issued.spiffe_id, audience = %key.1.join(","),
            expires_at = issued.expires_at, "JWT-SVID issued");
        let token = issued.token.clone();
        let mut cache = lock(&self.cache);
        cache.retain(|_, c| c.expires_at > now);
        cache.insert(
            key,
            Cached {
                token: issued.token,
                refresh_at: now + half.max(0),
                expires_at: issued.expires_at,
            },
        );
        Ok(token)
    }

    /// The current JWK set: fetched now when there is none yet; the poller keeps it fresh.
    pub async fn bundle(self: &Arc<Self>) -> Result<Arc<Jwks>, EnrollError> {
        self.polling.call_once(|| {
            tokio::spawn(poll(Arc::downgrade(self)));
        });
        if let Some(j) = self.jwks.borrow().clone() {
            return Ok(j);
        }
        let j = Arc::new(self.fetch().await?);
        // Unless another call (or the poller) got there first.
        self.jwks.send_if_modified(|cur| {
            let first = cur.is_none();
            if first {
                *cur = Some(j.clone());
            }
            first
        });
        Ok(self.jwks.borrow().clone().unwrap_or(j))
    }

    async fn fetch(&self) -> Result<Jwks, EnrollError> {
        let raw = self.ca.jwks().await?;
        Jwks::parse(raw).map_err(|detail| EnrollError::BadResponse {
            status: 200,
            detail,
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Jwks>>> {
        self.jwks.subscribe()
    }
}

/// Asks the CA for its JWK set every [`JWKS_POLL`]; a different set goes to every stream.
async fn poll(jwt: std::sync::Weak<Jwt>) {
    loop {
        tokio::time::sleep(JWKS_POLL).await;
        let Some(j) = jwt.upgrade() else { return };
        match j.fetch().await {
            Ok(new) => {
                let new = Arc::new(new);
                let changed = j.jwks.send_if_modified(|cur| {
                    if cur.as_deref() == Some(&*new) {
                        return false;
                    }
                    *cur = Some(new.clone());
                    true
                });
                if changed {
                    tracing::info!(keys = new.keys.len(), "JWT bundle changed");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the JWT bundle; keeping the last one")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};

    const TD: &str = "spiffe://td";

    fn key() -> EcdsaKeyPair {
        let kp = mutual_pki::keys::generate(mutual_pki::KeyType::EcdsaP256).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, kp.serialized_der()).unwrap()
    }

    fn jwks(k: &EcdsaKeyPair, kid: &str) -> Jwks {
        let p = k.public_key().as_ref();
        let jwk = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-256", "kid": kid, "use": "jwt-svid",
             "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..])},
        ]});
        Jwks::parse(serde_json::to_vec(&jwk).unwrap()).unwrap()
    }

    fn sign(k: &EcdsaKeyPair, header: &Value, claims: &Value) -> String {
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        let input = format!("{}.{}", enc(header), enc(claims));
        let sig = k
            .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    #[test]
    fn a_token_is_valid_only_for_its_audience_key_domain_and_lifetime() {
        let k = key();
        let set = jwks(&k, "k1");
        let h = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "k1"});
        let c = serde_json::json!({"sub": "spiffe://td/web", "aud": ["db", "cache"], "iat": 1000, "exp": 1300});
        let t = sign(&k, &h, &c);
        let v = validate(&t, "cache", TD, &set, 1100).unwrap();
        assert_eq!(v.spiffe_id, "spiffe://td/web");
        assert_eq!(to_struct(&v.claims).fields.len(), 4);
        let err = |t: &str, aud: &str, now: i64| validate(t, aud, TD, &set, now).unwrap_err();
        assert_eq!(
            err(&t, "web", 1100),
            r#"the token's audience ["db", "cache"] does not contain "web""#
        );
        // exp with its leeway.
        assert!(validate(&t, "db", TD, &set, 1300 + EXP_LEEWAY_SECS).is_ok());
        assert_eq!(err(&t, "db", 1331), "the token expired at 1300 (now 1331)");
        // Another trust domain's subject, even signed by our key.
        let other = sign(
            &k,
            &h,
            &serde_json::json!({"sub": "spiffe://evil/web", "aud": "db", "exp": 1300}),
        );
        assert_eq!(
            err(&other, "db", 1100),
            r#"the token's subject "spiffe://evil/web" is not a SPIFFE ID of spiffe://td"#
        );
        // Tampered claims, another key, an unknown kid, another algorithm.
        let parts: Vec<&str> = t.split('.').collect();
        let c2 = serde_json::json!({"sub": "spiffe://td/admin", "aud": ["db"], "exp": 1300});
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c2).unwrap()),
            parts[2]
        );
        assert_eq!(
            err(&forged, "db", 1100),
            "the token's signature does not verify"
        );
        assert_eq!(
            err(&sign(&key(), &h, &c), "db", 1100),
            "the token's signature does not verify"
        );
        let h2 = serde_json::json!({"alg": "ES256", "kid": "k2"});
        assert_eq!(
            err(&sign(&k, &h2, &c), "db", 1100),
            "the token's key id k2 is not in the JWT bundle of spiffe://td"
        );
        let none = serde_json::json!({"alg": "none", "kid": "k1"});
        assert!(err(&sign(&k, &none, &c), "db", 1100).contains("algorithm \"none\""));
        assert!(err("a.b", "db", 1100).contains("three dot-separated parts"));
    }
}
