//! A private key inside a token. The key's public half is read once (from the token's public
//! key object or the private key's RSA attributes) so that certificates can name it; every
//! signature goes to the token. ECDSA is signed as CKM_ECDSA over a digest hashed here (SoftHSM
//! 2.6 has no CKM_ECDSA_SHA256) and the token's r||s is turned into DER.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cryptoki::error::Error;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::der;
use crate::token::{SessionError, Token};
use crate::uri::Pkcs11Uri;
use crate::HsmError;

/// The kinds of token key mutual signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    /// RSA with this many modulus bits (at least 2048).
    Rsa(u32),
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyKind::EcdsaP384 => f.write_str("ECDSA P-384"),
            KeyKind::Rsa(bits) => write!(f, "RSA {bits}"),
        }
    }
}

/// How a signature is to be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SigKind {
    /// ECDSA with the curve's hash (SHA-256 for P-256, SHA-384 for P-384), DER output.
    Ecdsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (X.509 signatures).
    RsaPkcs1Sha256,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256, salt 32 (TLS 1.3).
    RsaPssSha256,
}

/// What can be said about a token key without using it: where it is and how it is protected.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KeyInfo {
    pub storage: &'static str,
    pub module: String,
    pub token: String,
    pub uri: String,
    pub kind: String,
    pub sensitive: Option<bool>,
    pub extractable: Option<bool>,
}

/// A private key in a token.
pub struct TokenKey {
    token: Arc<Token>,
    uri: Pkcs11Uri,
    kind: KeyKind,
    /// The raw public key as rcgen wants it: the EC point, or PKCS#1 RSAPublicKey.
    public: Vec<u8>,
    spki: Vec<u8>,
    handle: Mutex<ObjectHandle>,
    signatures: AtomicU64,
    failures: AtomicU64,
    /// The last signature's failure, cleared by the next success (readiness and metrics).
    last_error: Mutex<Option<String>>,
}

/// A token key's health as the last signature left it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KeyStatus {
    pub uri: String,
    pub token: String,
    /// Whether the last signature succeeded (true before the first).
    pub up: bool,
    pub signatures: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// Every token key this process has opened (keys live as long as the process uses them; a
/// reload that opens the same key again gets a new entry, so entries are weak).
static KEYS: Mutex<Vec<std::sync::Weak<TokenKey>>> = Mutex::new(Vec::new());

fn register(k: &Arc<TokenKey>) {
    let mut keys = KEYS.lock().unwrap_or_else(|p| p.into_inner());
    keys.retain(|w| w.strong_count() > 0);
    keys.push(Arc::downgrade(k));
}

fn live_keys() -> Vec<Arc<TokenKey>> {
    let keys = KEYS.lock().unwrap_or_else(|p| p.into_inner());
    keys.iter().filter_map(std::sync::Weak::upgrade).collect()
}

/// The health of every token key in use, one entry per URI (the newest key of a URI wins).
pub fn key_status() -> Vec<KeyStatus> {
    let mut out: Vec<KeyStatus> = Vec::new();
    for k in live_keys() {
        let st = k.status();
        match out.iter_mut().find(|o| o.uri == st.uri) {
            Some(o) => *o = st,
            None => out.push(st),
        }
    }
    out
}

/// Tries one signature with every key whose last signature failed, so that a token that came
/// back is seen without waiting for traffic (a not-ready proxy gets none). Returns the status.
pub fn recheck_keys() -> Vec<KeyStatus> {
    for k in live_keys() {
        if !k.status().up {
            let how = match k.kind {
                KeyKind::Rsa(_) => SigKind::RsaPkcs1Sha256,
                _ => SigKind::Ecdsa,
            };
            let _ = k.sign(b"mutual readiness check", how);
        }
    }
    key_status()
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("uri", &self.uri.to_string())
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

fn template(uri: &Pkcs11Uri, class: ObjectClass) -> Vec<Attribute> {
    let mut t = vec![Attribute::Class(class)];
    if let Some(l) = &uri.object {
        t.push(Attribute::Label(l.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        t.push(Attribute::Id(id.clone()));
    }
    t
}

fn find_private(s: &Session, uri: &Pkcs11Uri) -> Result<Vec<ObjectHandle>, Error> {
    s.find_objects(&template(uri, ObjectClass::PRIVATE_KEY))
}

fn op_err(token: &Token, op: &'static str, e: SessionError) -> HsmError {
    match e {
        SessionError::Hsm(h) => h,
        SessionError::Pkcs11(e) if crate::token::is_stale(&e) => token.unavailable(e),
        SessionError::Pkcs11(e) => HsmError::Pkcs11 {
            op,
            detail: e.to_string(),
        },
    }
}

impl TokenKey {
    /// Finds the private key `uri` names in `token` and reads its public half.
    pub(crate) fn find(token: Arc<Token>, uri: Pkcs11Uri) -> Result<Arc<TokenKey>, HsmError> {
        let found = token
            .with_session(false, |s, _| find_private(s, &uri))
            .map_err(|e| op_err(&token, "C_FindObjects", e))?;
        let handle = match found.as_slice() {
            [h] => *h,
            [] => {
                return Err(HsmError::ObjectNotFound {
                    uri: uri.to_string(),
                    token: token.label().to_string(),
                })
            }
            many => {
                return Err(HsmError::Ambiguous {
                    uri: uri.to_string(),
                    token: token.label().to_string(),
                    count: many.len(),
                })
            }
        };
        let (kind, public) = token
            .with_session(false, |s, _| read_public(s, &uri, handle))
            .map_err(|e| op_err(&token, "C_GetAttributeValue", e))?
            .map_err(|detail| HsmError::UnsupportedKey {
                uri: uri.to_string(),
                detail,
            })?;
        let spki = match kind {
            KeyKind::EcdsaP256 => der::ec_spki(der::OID_P256, &public),
            KeyKind::EcdsaP384 => der::ec_spki(der::OID_P384, &public),
            KeyKind::Rsa(_) => der::rsa_spki(&public),
        };
        let k = Arc::new(TokenKey {
            token,
            uri,
            kind,
            public,
            spki,
            handle: Mutex::new(handle),
            signatures: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
        });
        register(&k);
        Ok(k)
    }

    /// Generates a key pair in `token`, private half sensitive and never extractable, both
    /// halves labelled and identified as `uri` says (a random CKA_ID when it gives none).
    pub(crate) fn generate(
        token: Arc<Token>,
        uri: Pkcs11Uri,
        kind: KeyKind,
    ) -> Result<Arc<TokenKey>, HsmError> {
        let Some(label) = uri.object.clone() else {
            return Err(HsmError::BadUri {
                uri: uri.to_string(),
                detail: "a key to generate needs object=LABEL".into(),
            });
        };
        let existing = token
            .with_session(false, |s, _| {
                s.find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
            })
            .map_err(|e| op_err(&token, "C_FindObjects", e))?;
        if !existing.is_empty() {
            return Err(HsmError::KeyExists {
                uri: uri.to_string(),
                token: token.label().to_string(),
            });
        }
        let id = uri.id.clone().unwrap_or_else(|| rand_id().to_vec());
        let (mech, mut public) = match kind {
            KeyKind::EcdsaP256 | KeyKind::EcdsaP384 => (
                Mechanism::EccKeyPairGen,
                vec![Attribute::EcParams(
                    if kind == KeyKind::EcdsaP256 {
                        der::OID_P256
                    } else {
                        der::OID_P384
                    }
                    .to_vec(),
                )],
            ),
            KeyKind::Rsa(bits) => {
                if bits < 2048 {
                    return Err(HsmError::UnsupportedKey {
                        uri: uri.to_string(),
                        detail: format!("RSA {bits} is below the 2048-bit minimum"),
                    });
                }
                (
                    Mechanism::RsaPkcsKeyPairGen,
                    vec![
                        Attribute::ModulusBits(u64::from(bits).into()),
                        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                    ],
                )
            }
        };
        let key_type = match kind {
            KeyKind::Rsa(_) => KeyType::RSA,
            _ => KeyType::EC,
        };
        public.extend([
            // Some modules (tpm2-pkcs11) infer nothing from the mechanism: name the type.
            Attribute::KeyType(key_type),
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ]);
        let private = vec![
            Attribute::KeyType(key_type),
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            // A signing key only: no decryption or unwrapping oracle for whoever holds a session.
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ];
        token
            .with_session(true, |s, _| s.generate_key_pair(&mech, &public, &private))
            .map_err(|e| op_err(&token, "C_GenerateKeyPair", e))?;
        let mut uri = uri;
        if uri.id.is_none() {
            // Find exactly the pair just made, even if a key elsewhere shares the label later.
            uri.id = Some(id);
        }
        TokenKey::find(token, uri)
    }

    /// The key's kind.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The SubjectPublicKeyInfo, DER.
    pub fn spki(&self) -> &[u8] {
        &self.spki
    }

    /// The URI the key was found by (no PIN in it).
    pub fn uri(&self) -> &Pkcs11Uri {
        &self.uri
    }

    /// The token holding the key.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// Signatures made so far, and how many failed (for metrics and readiness).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.signatures.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    /// The key's health as its last signature left it.
    pub fn status(&self) -> KeyStatus {
        let (signatures, failures) = self.counts();
        let last_error = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        KeyStatus {
            uri: self.uri.to_string(),
            token: self.token.label().to_string(),
            up: last_error.is_none(),
            signatures,
            failures,
            last_error,
        }
    }

    /// Where the key lives and how the token protects it (CKA_SENSITIVE, CKA_EXTRACTABLE as the
    /// token reports them).
    pub fn info(&self) -> KeyInfo {
        let attrs = self
            .token
            .with_session(false, |s, retry| {
                let h = self.handle(s, retry)?;
                s.get_attributes(h, &[AttributeType::Sensitive, AttributeType::Extractable])
            })
            .ok();
        let mut sensitive = None;
        let mut extractable = None;
        for a in attrs.unwrap_or_default() {
            match a {
                Attribute::Sensitive(v) => sensitive = Some(v),
                Attribute::Extractable(v) => extractable = Some(v),
                _ => {}
            }
        }
        KeyInfo {
            storage: "pkcs11",
            module: self.token.module().display().to_string(),
            token: self.token.label().to_string(),
            uri: self.uri.to_string(),
            kind: self.kind.to_string(),
            sensitive,
            extractable,
        }
    }

    /// The cached handle, looked up again after a token reset.
    fn handle(&self, s: &Session, refresh: bool) -> Result<ObjectHandle, Error> {
        let mut h = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        if refresh {
            if let [found] = find_private(s, &self.uri)?.as_slice() {
                *h = *found;
            }
        }
        Ok(*h)
    }

    /// Signs `msg` (hashing it here where the mechanism needs a digest).
    pub(crate) fn sign(&self, msg: &[u8], how: SigKind) -> Result<Vec<u8>, HsmError> {
        use aws_lc_rs::digest;
        let (mech, data) = match (how, self.kind) {
            (SigKind::Ecdsa, KeyKind::EcdsaP256) => (
                Mechanism::Ecdsa,
                digest::digest(&digest::SHA256, msg).as_ref().to_vec(),
            ),
            (SigKind::Ecdsa, KeyKind::EcdsaP384) => (
                Mechanism::Ecdsa,
                digest::digest(&digest::SHA384, msg).as_ref().to_vec(),
            ),
            (SigKind::RsaPkcs1Sha256, KeyKind::Rsa(_)) => (Mechanism::Sha256RsaPkcs, msg.to_vec()),
            (SigKind::RsaPssSha256, KeyKind::Rsa(_)) => (
                Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
                    hash_alg: MechanismType::SHA256,
                    mgf: PkcsMgfType::MGF1_SHA256,
                    s_len: 32u64.into(),
                }),
                msg.to_vec(),
            ),
            (how, kind) => {
                return Err(HsmError::UnsupportedKey {
                    uri: self.uri.to_string(),
                    detail: format!("{kind} cannot make {how:?} signatures"),
                })
            }
        };
        let res = self
            .token
            .with_session(false, |s, retry| {
                let h = self.handle(s, retry)?;
                s.sign(&mech, h, &data)
            })
            .map_err(|e| op_err(&self.token, "C_Sign", e))
            .and_then(|sig| {
                if how == SigKind::Ecdsa {
                    der::ecdsa_sig(&sig).ok_or_else(|| HsmError::Pkcs11 {
                        op: "C_Sign",
                        detail: format!("the token returned a {}-byte ECDSA signature", sig.len()),
                    })
                } else {
                    Ok(sig)
                }
            });
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        match &res {
            Ok(_) => {
                self.signatures.fetch_add(1, Ordering::Relaxed);
                *last = None;
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                *last = Some(e.to_string());
            }
        }
        drop(last);
        res
    }
}

fn rand_id() -> [u8; 8] {
    let mut b = [0u8; 8];
    // The system RNG failing leaves a zero id, which is still a valid CKA_ID (the label is
    // what finds the key; the id only pairs the two halves).
    let _ = aws_lc_rs::rand::fill(&mut b);
    b
}

fn read_public(
    s: &Session,
    uri: &Pkcs11Uri,
    private: ObjectHandle,
) -> Result<Result<(KeyKind, Vec<u8>), String>, Error> {
    let attrs = s.get_attributes(private, &[AttributeType::KeyType])?;
    let key_type = attrs.iter().find_map(|a| match a {
        Attribute::KeyType(k) => Some(*k),
        _ => None,
    });
    match key_type {
        Some(KeyType::EC) => {
            let params = s
                .get_attributes(private, &[AttributeType::EcParams])?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcParams(p) => Some(p),
                    _ => None,
                });
            let (kind, point_len) = match params.as_deref() {
                Some(p) if p == der::OID_P256 => (KeyKind::EcdsaP256, 65),
                Some(p) if p == der::OID_P384 => (KeyKind::EcdsaP384, 97),
                _ => return Ok(Err("an EC key on a curve other than P-256 or P-384".into())),
            };
            // The public half is the public key object paired with this private key: same
            // label (when the URI names one) and the private key's own CKA_ID. Matching on the
            // label alone could pick a stale public object left beside a replaced key, and the
            // CA would then check the certificate against one key and sign with another.
            let mut t = template(uri, ObjectClass::PUBLIC_KEY);
            let own_id = s
                .get_attributes(private, &[AttributeType::Id])?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::Id(id) if !id.is_empty() => Some(id),
                    _ => None,
                });
            if uri.id.is_none() {
                if let Some(id) = own_id {
                    t.push(Attribute::Id(id));
                }
            }
            let pubs = s.find_objects(&t)?;
            let pub_h =
                match pubs.as_slice() {
                    [h] => h,
                    [] => return Ok(Err(
                        "the token has no public key object beside the private key (same label \
                         and CKA_ID), so its public half cannot be read"
                            .into(),
                    )),
                    many => {
                        return Ok(Err(format!(
                            "{} public key objects match the private key (same label and CKA_ID); \
                         delete the stale ones so its public half is unambiguous",
                            many.len()
                        )))
                    }
                };
            let point = s
                .get_attributes(*pub_h, &[AttributeType::EcPoint])?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcPoint(p) => Some(p),
                    _ => None,
                });
            match point.as_deref().and_then(|p| der::ec_point(p, point_len)) {
                Some(p) => Ok(Ok((kind, p))),
                None => Ok(Err("the public key's CKA_EC_POINT does not parse".into())),
            }
        }
        Some(KeyType::RSA) => {
            let mut modulus = None;
            let mut exponent = None;
            for a in s.get_attributes(
                private,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )? {
                match a {
                    Attribute::Modulus(m) => modulus = Some(m),
                    Attribute::PublicExponent(e) => exponent = Some(e),
                    _ => {}
                }
            }
            let (Some(m), Some(e)) = (modulus, exponent) else {
                return Ok(Err("the RSA key does not show its modulus".into()));
            };
            let bits = m.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return Ok(Err(format!("RSA {bits} is below the 2048-bit minimum")));
            }
            Ok(Ok((KeyKind::Rsa(bits as u32), der::rsa_public(&m, &e))))
        }
        other => Ok(Err(format!(
            "key type {} (mutual signs with ECDSA P-256/P-384 or RSA)",
            other.map_or("unknown".to_string(), |k| k.to_string())
        ))),
    }
}

impl rcgen::PublicKeyData for TokenKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self.kind {
            KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyKind::Rsa(_) => &rcgen::PKCS_RSA_SHA256,
        }
    }

    fn subject_public_key_info(&self) -> Vec<u8> {
        self.spki.clone()
    }
}

impl rcgen::SigningKey for TokenKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let how = match self.kind {
            KeyKind::EcdsaP256 | KeyKind::EcdsaP384 => SigKind::Ecdsa,
            KeyKind::Rsa(_) => SigKind::RsaPkcs1Sha256,
        };
        // rcgen's error has no room for a reason; the counters and the caller's own check of
        // the token (at start) say what went wrong.
        TokenKey::sign(self, msg, how).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}
