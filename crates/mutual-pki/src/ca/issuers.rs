//! The CA's issuing intermediates. A CA outlives any one intermediate key (compromise, an
//! algorithm change, plain expiry), so the CA holds a set of them: `ca init` makes the first
//! (`int-1`, in `intermediate.pem` / `intermediate.key`), `mutual ca rotate-intermediate` adds
//! more under the same root (`issuers/int-N.pem` / `.key`). `issuers.toml` in the CA directory
//! says which one issues by default and the state of each:
//!
//! - `active`: signs new certificates (the default one, or when a profile selects it by id or
//!   key type) and its CRL;
//! - `retiring`: signs no new certificate, only its CRL, until its last certificate expires.
//!
//! No `issuers.toml` means the CA as `ca init` left it: `int-1` alone, active and default.
//! Replicas share the CA directory: each one re-reads the manifest before it picks an issuer
//! ([`super::Ca::issuers`]), so a rotation made anywhere is used everywhere at the next request.
//!
//! Everything that signs goes through one [`Issuer`] (certificate, key, validity), so the key's
//! type can change (file or PKCS#11) without touching the rest.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, GeneralSubtree, IsCa, KeyUsagePurpose, NameConstraints,
    PublicKeyData, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use super::key::{CaKey, KeyStorage};
use super::{
    first_cert_der, io, later, now, random_serial, validity, CaConfig, INTERMEDIATE_CERT,
    INTERMEDIATE_KEY, ROOT_CERT, ROOT_KEY,
};
use crate::keys::{self, StagedFile};
use crate::{rfc3339, KeyType, PkiError};

/// The manifest of the issuer set, in the CA directory.
pub const ISSUERS_FILE: &str = "issuers.toml";
/// Where intermediates after the first live (certificate and encrypted key).
pub const ISSUERS_DIR: &str = "issuers";
/// The id of the intermediate `ca init` made.
pub const FIRST_ISSUER: &str = mutual_store::FIRST_ISSUER;

/// What an issuer may still do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IssuerState {
    /// Signs new certificates and its CRL.
    Active,
    /// Signs only its CRL, until the last certificate it signed expires.
    Retiring,
}

impl IssuerState {
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerState::Active => "active",
            IssuerState::Retiring => "retiring",
        }
    }
}

/// One line of `issuers.toml`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct IssuerEntry {
    pub id: String,
    pub key_type: KeyType,
    pub state: IssuerState,
    /// The root that signed it, when not `root.pem`'s: a new root during a rollover
    /// (`roots/ID.pem`, docs/lifecycle.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Where its key is, when in a PKCS#11 token (`rotate-intermediate --key-storage pkcs11`);
    /// absent: `issuers/ID.key` (the first issuer: `key_storage` in mutual-ca.toml).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<mutual_hsm::KeyRef>,
}

/// `issuers.toml`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Manifest {
    /// The issuer new certificates come from unless their profile selects another.
    default: String,
    #[serde(rename = "issuer")]
    pub(super) issuers: Vec<IssuerEntry>,
}

/// An unlocked intermediate: its certificate and key.
pub struct Issuer {
    pub id: String,
    pub key_type: KeyType,
    pub state: IssuerState,
    pem: String,
    der: Vec<u8>,
    key: Arc<CaKey>,
    /// What rcgen reads from the intermediate's certificate to sign with it (its subject, key
    /// identifier method and usages), read once here rather than parsed again per certificate.
    signer: rcgen::Issuer<'static, SharedKey>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    subject: String,
    /// The root it chains to, when not `root.pem`'s.
    pub root: Option<String>,
    /// Its token key's reference, for a rotated issuer whose key is in a token (kept in
    /// `issuers.toml` when the manifest is rewritten).
    pkcs11: Option<mutual_hsm::KeyRef>,
    /// What follows it in issued chains: during a root rollover, the new root cross-signed by
    /// the old one, so that parties that trust only the old root still verify.
    chain_extra: String,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("id", &self.id)
            .field("key_type", &self.key_type)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Loads an intermediate from its files, checking that the key belongs to the certificate.
    /// The first issuer's key is where `ca init` put it (`storage`: a file or a PKCS#11 token);
    /// intermediates made by `ca rotate-intermediate` have file keys unless their entry names a
    /// token key.
    fn load(
        dir: &Path,
        e: &IssuerEntry,
        storage: &KeyStorage,
        password: &[u8],
    ) -> Result<Issuer, PkiError> {
        let (cert_path, key_path) = files(dir, &e.id);
        let storage = match &e.pkcs11 {
            _ if e.id == FIRST_ISSUER => storage.clone(),
            Some(r) => KeyStorage::Pkcs11(r.clone()),
            None => KeyStorage::File,
        };
        for p in [&cert_path, &key_path] {
            if p == &key_path && storage != KeyStorage::File {
                continue; // the key is in the token
            }
            if !p.exists() {
                return Err(PkiError::NotInitialised {
                    dir: dir.to_path_buf(),
                    file: p.strip_prefix(dir).unwrap_or(p).display().to_string(),
                });
            }
        }
        let pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let der = first_cert_der(&pem, &cert_path)?;
        let key = CaKey::load(&storage, &key_path, e.key_type, password)?;
        let mut i = Issuer::new(
            e.id.clone(),
            e.key_type,
            e.state,
            pem,
            der,
            key,
            &cert_path,
            &key_path,
        )?;
        if let Some(r) = &e.root {
            let cross = cross_file(dir, &e.id);
            match std::fs::read_to_string(&cross) {
                Ok(t) => i.chain_extra = t,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(io(&cross)(err)),
            }
            i.root = Some(r.clone());
        }
        i.pkcs11 = e.pkcs11.clone();
        Ok(i)
    }

    /// An issuer from a certificate and its key (checked to match).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        id: String,
        key_type: KeyType,
        state: IssuerState,
        pem: String,
        der: Vec<u8>,
        key: CaKey,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<Issuer, PkiError> {
        let (_, cert) =
            x509_parser::parse_x509_certificate(&der).map_err(|_| PkiError::Config {
                path: cert_path.to_path_buf(),
                detail: "not a valid X.509 certificate (truncated or corrupted)".into(),
            })?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(PkiError::Config {
                path: key_path.to_path_buf(),
                detail: format!("this key does not belong to {}", cert_path.display()),
            });
        }
        let subject = cert.subject().to_string();
        let (not_before, not_after) = validity(&der, cert_path)?;
        let key = Arc::new(key);
        let signer = rcgen::Issuer::from_ca_cert_der(
            &CertificateDer::from(der.as_slice()),
            SharedKey(key.clone()),
        )?;
        Ok(Issuer {
            id,
            key_type,
            state,
            pem,
            der,
            key,
            signer,
            not_before,
            not_after,
            subject,
            root: None,
            pkcs11: None,
            chain_extra: String::new(),
        })
    }

    /// The intermediate's certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// What an issued chain carries after the leaf: this intermediate, and during a root
    /// rollover the new root cross-signed by the old one.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.pem, self.chain_extra)
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The intermediate's subject, as `cert inspect` prints a leaf's issuer.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub(super) fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    pub(super) fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// notAfter, Unix seconds (no leaf it signs may outlive it).
    pub fn not_after_unix(&self) -> i64 {
        self.not_after.unix_timestamp()
    }

    /// The signer rcgen needs (read from the certificate when the issuer was loaded).
    pub(super) fn signer(&self) -> Result<&rcgen::Issuer<'static, SharedKey>, PkiError> {
        Ok(&self.signer)
    }

    /// The issuer's signing key (a file key in memory, or a token key).
    pub fn key(&self) -> &CaKey {
        &self.key
    }

    /// The name of this issuer's CRL counter (the first keeps the name it always had).
    pub(super) fn crl_counter(&self) -> String {
        if self.id == FIRST_ISSUER {
            super::CRL_COUNTER.to_string()
        } else {
            format!("{}:{}", super::CRL_COUNTER, self.id)
        }
    }
}

/// An issuer's key shared between the [`Issuer`] and the rcgen signer it keeps.
pub(super) struct SharedKey(Arc<CaKey>);

impl PublicKeyData for SharedKey {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        PublicKeyData::algorithm(self.0.as_ref())
    }

    fn subject_public_key_info(&self) -> Vec<u8> {
        self.0.subject_public_key_info()
    }
}

impl rcgen::SigningKey for SharedKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        rcgen::SigningKey::sign(self.0.as_ref(), msg)
    }
}

/// Issuer `id` signed by the old root during a root rollover (carried in chains until
/// `ca retire-root`).
pub fn cross_file(dir: &Path, id: &str) -> PathBuf {
    dir.join(ISSUERS_DIR).join(format!("{id}.cross.pem"))
}

/// The certificate and key files of issuer `id`.
pub fn files(dir: &Path, id: &str) -> (PathBuf, PathBuf) {
    if id == FIRST_ISSUER {
        (dir.join(INTERMEDIATE_CERT), dir.join(INTERMEDIATE_KEY))
    } else {
        let d = dir.join(ISSUERS_DIR);
        (d.join(format!("{id}.pem")), d.join(format!("{id}.key")))
    }
}

/// Every unlocked issuer of a CA, and which one is the default.
#[derive(Debug)]
pub struct IssuerSet {
    /// The manifest text this set was read from (`None`: no manifest), to notice a change.
    manifest: Option<String>,
    default: String,
    issuers: Vec<Arc<Issuer>>,
}

/// Reads `issuers.toml`; `None` when there is none.
pub(super) fn read_manifest(dir: &Path) -> Result<Option<String>, PkiError> {
    let p = dir.join(ISSUERS_FILE);
    match std::fs::read_to_string(&p) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&p)(e)),
    }
}

pub(super) fn parse_manifest(
    dir: &Path,
    text: Option<&str>,
    config: &CaConfig,
) -> Result<Manifest, PkiError> {
    let Some(text) = text else {
        return Ok(Manifest {
            default: FIRST_ISSUER.into(),
            issuers: vec![IssuerEntry {
                id: FIRST_ISSUER.into(),
                key_type: config.key_type,
                state: IssuerState::Active,
                root: None,
                pkcs11: None,
            }],
        });
    };
    let bad = |detail: String| PkiError::Config {
        path: dir.join(ISSUERS_FILE),
        detail,
    };
    let m: Manifest = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    match m.issuers.iter().find(|e| e.id == m.default) {
        Some(e) if e.state == IssuerState::Active => {}
        Some(_) => {
            return Err(bad(format!(
                "the default issuer {} is not active",
                m.default
            )))
        }
        None => {
            return Err(bad(format!(
                "the default issuer {} is not listed",
                m.default
            )))
        }
    }
    for e in &m.issuers {
        if !valid_id(&e.id) {
            return Err(bad(format!("invalid issuer id {:?}", e.id)));
        }
    }
    Ok(m)
}

/// `int-N`: ids become file names and URL path segments.
fn valid_id(id: &str) -> bool {
    id.strip_prefix("int-")
        .is_some_and(|n| !n.is_empty() && n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// When the issuer new certificates come from ends (Unix seconds), read without any key: what
/// a lifetime asked for ahead of issuance (`agent entry create --ttl`) is held against.
pub fn default_issuer_not_after(dir: &Path, config: &CaConfig) -> Result<i64, PkiError> {
    let m = parse_manifest(dir, read_manifest(dir)?.as_deref(), config)?;
    let (path, _) = files(dir, &m.default);
    let pem = std::fs::read_to_string(&path).map_err(io(&path))?;
    let der = first_cert_der(&pem, &path)?;
    Ok(validity(&der, &path)?.1.unix_timestamp())
}

/// What `mutual ca issuers` shows of one intermediate: read from `issuers.toml` and the
/// certificates, without any key (listing needs no password, as `cert list` does not).
#[derive(Clone, Debug)]
pub struct IssuerView {
    pub id: String,
    pub key_type: KeyType,
    pub state: IssuerState,
    /// New certificates come from it unless a profile selects another.
    pub default: bool,
    pub subject: String,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    pub certificate: PathBuf,
}

/// Every intermediate of the CA in `dir`, as the manifest lists them, read without any key.
pub fn view(dir: &Path, config: &CaConfig) -> Result<Vec<IssuerView>, PkiError> {
    let m = parse_manifest(dir, read_manifest(dir)?.as_deref(), config)?;
    m.issuers
        .iter()
        .map(|e| {
            let (path, _) = files(dir, &e.id);
            if !path.exists() {
                return Err(PkiError::NotInitialised {
                    dir: dir.to_path_buf(),
                    file: path
                        .strip_prefix(dir)
                        .unwrap_or(&path)
                        .display()
                        .to_string(),
                });
            }
            let pem = std::fs::read_to_string(&path).map_err(io(&path))?;
            let der = first_cert_der(&pem, &path)?;
            let (_, cert) =
                x509_parser::parse_x509_certificate(&der).map_err(|_| PkiError::Config {
                    path: path.clone(),
                    detail: "not a valid X.509 certificate (truncated or corrupted)".into(),
                })?;
            Ok(IssuerView {
                id: e.id.clone(),
                key_type: e.key_type,
                state: e.state,
                default: e.id == m.default,
                subject: cert.subject().to_string(),
                not_after: validity(&der, &path)?.1.unix_timestamp(),
                certificate: path,
            })
        })
        .collect()
}

impl IssuerSet {
    /// Loads every issuer of the CA in `dir`, decrypting each key with `password`.
    pub fn load(dir: &Path, config: &CaConfig, password: &[u8]) -> Result<IssuerSet, PkiError> {
        let manifest = read_manifest(dir)?;
        let m = parse_manifest(dir, manifest.as_deref(), config)?;
        let mut issuers = Vec::with_capacity(m.issuers.len());
        for e in &m.issuers {
            issuers.push(Arc::new(Issuer::load(
                dir,
                e,
                &config.key_storage,
                password,
            )?));
        }
        Ok(IssuerSet {
            manifest,
            default: m.default,
            issuers,
        })
    }

    /// The set of a CA just made by `ca init`: its one intermediate.
    pub(super) fn single(first: Issuer) -> IssuerSet {
        IssuerSet {
            manifest: None,
            default: first.id.clone(),
            issuers: vec![Arc::new(first)],
        }
    }

    /// The `issuers.toml` text this set was loaded from (`None`: there was none).
    pub(super) fn manifest(&self) -> Option<&str> {
        self.manifest.as_deref()
    }

    /// The issuer new certificates come from by default.
    pub fn default_issuer(&self) -> &Arc<Issuer> {
        // Invariant: parse_manifest checked that the default is listed (and `single` lists it).
        self.issuers
            .iter()
            .find(|i| i.id == self.default)
            .unwrap_or(&self.issuers[0])
    }

    /// Every issuer, active and retiring, oldest first.
    pub fn all(&self) -> &[Arc<Issuer>] {
        &self.issuers
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Issuer>> {
        self.issuers.iter().find(|i| i.id == id)
    }

    /// The issuer a profile asks for: `None` the default; an id (`int-2`); or a key type
    /// (`ecdsa-p384`): the newest active issuer with that key type. Only active issuers sign
    /// new certificates.
    pub fn select(&self, selector: Option<&str>) -> Result<Arc<Issuer>, PkiError> {
        let Some(sel) = selector.map(str::trim).filter(|s| !s.is_empty()) else {
            return Ok(self.default_issuer().clone());
        };
        let active = || {
            self.issuers
                .iter()
                .filter(|i| i.state == IssuerState::Active)
        };
        let found = match sel.parse::<KeyType>() {
            Ok(kt) if self.default_issuer().key_type == kt => Some(self.default_issuer()),
            Ok(kt) => active().rev().find(|i| i.key_type == kt),
            Err(_) => active().find(|i| i.id == sel),
        };
        found.cloned().ok_or_else(|| PkiError::UnknownIssuer {
            selector: sel.to_string(),
            active: active()
                .map(|i| format!("{} ({})", i.id, i.key_type.as_str()))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// What `ca rotate-intermediate` takes.
#[derive(Clone, Debug)]
pub struct RotateOptions {
    /// The new intermediate's key type; `None`: the current default's.
    pub key_type: Option<KeyType>,
    /// Keep the current issuers active and add this one beside them (selected by id or key
    /// type), instead of making it the default and retiring the others.
    pub add: bool,
    pub validity: Duration,
    /// Sign it with this root of `roots/` instead of `root.pem`'s (a root rollover's new root).
    pub root: Option<String>,
    /// Where the new intermediate's key is made: `issuers/ID.key` encrypted with the CA
    /// password, or in a PKCS#11 token (an existing key the URI names, else a new one).
    pub key_storage: KeyStorage,
}

impl Default for RotateOptions {
    fn default() -> Self {
        RotateOptions {
            key_type: None,
            add: false,
            validity: Duration::from_secs(1825 * 86_400),
            root: None,
            key_storage: KeyStorage::File,
        }
    }
}

/// What a rotation did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Rotated {
    pub id: String,
    pub key_type: KeyType,
    pub subject: String,
    pub certificate: PathBuf,
    pub not_after: String,
    /// The new default issuer.
    pub default: String,
    /// Issuers this rotation moved to `retiring`.
    pub retired: Vec<String>,
}

/// The root's key for one command: decrypted from `root.key` (it may be offline:
/// [`PkiError::RootKeyOffline`]), or opened in its token when `root_key_storage` says so.
pub(super) fn root_key(
    dir: &Path,
    config: &CaConfig,
    root_der: &[u8],
    password: &[u8],
) -> Result<CaKey, PkiError> {
    root_key_at(
        &dir.join(ROOT_KEY),
        &dir.join(ROOT_CERT),
        &config.root_key_storage,
        config.key_type,
        root_der,
        password,
    )
}

/// [`root_key`] of a root whose files are `key_path` and `cert_path` and whose key is where
/// `storage` says (a rollover's new roots, `roots/ID.key`, are files).
pub(super) fn root_key_at(
    key_path: &Path,
    cert_path: &Path,
    storage: &KeyStorage,
    key_type: KeyType,
    root_der: &[u8],
    password: &[u8],
) -> Result<CaKey, PkiError> {
    let key_path = key_path.to_path_buf();
    if storage.is_file() && !key_path.exists() {
        return Err(PkiError::RootKeyOffline { path: key_path });
    }
    let root_key = CaKey::load(storage, &key_path, key_type, password)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(root_der).map_err(|e| PkiError::Config {
            path: cert_path.to_path_buf(),
            detail: format!("not a certificate: {e}"),
        })?;
    if cert.public_key().raw != root_key.subject_public_key_info().as_slice() {
        return Err(PkiError::Config {
            path: key_path,
            detail: format!("this key does not belong to {}", cert_path.display()),
        });
    }
    Ok(root_key)
}

/// The parameters of an issuing intermediate under the CA's root: pathlen 0, the CA's trust
/// domain as its SPIFFE ID, its permitted DNS names as name constraints. `ca init` and every
/// rotation make intermediates the same way.
pub(super) fn intermediate_params(
    cn: String,
    org: &str,
    trust_domain: Option<&str>,
    permitted: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, PkiError> {
    let mut ip = CertificateParams::default();
    ip.distinguished_name = super::dn(&cn, org);
    ip.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ip.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ip.not_before = not_before;
    ip.not_after = not_after;
    ip.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    ip.use_authority_key_identifier_extension = true;
    if let Some(td) = trust_domain {
        // The intermediate's own SPIFFE ID is its trust domain (SPIFFE X509-SVID §3): mutual's
        // path validation (mutual_tls Trust::check) then refuses any leaf under it naming
        // another trust domain. Not a URI name constraint: rustls-webpki fails closed on
        // those, which would make every SVID from this CA unusable with rustls peers.
        ip.subject_alt_names = vec![rcgen::SanType::URI(
            format!("spiffe://{td}")
                .try_into()
                .map_err(|e: rcgen::Error| PkiError::InvalidSpiffeId {
                    id: td.to_string(),
                    detail: e.to_string(),
                })?,
        )];
    }
    if !permitted.is_empty() {
        ip.name_constraints = Some(NameConstraints {
            permitted_subtrees: permitted
                .iter()
                .map(|p| GeneralSubtree::DnsName(p.clone()))
                .collect(),
            excluded_subtrees: Vec::new(),
        });
    }
    Ok(ip)
}

/// Removes the issuers `ids` from `issuers.toml` (a retired root's intermediates, whose
/// certificates have all expired); their files stay.
pub(super) fn drop_issuers(
    dir: &Path,
    config: &CaConfig,
    password: &[u8],
    ids: &[String],
) -> Result<(), PkiError> {
    if ids.is_empty() {
        return Ok(());
    }
    let current = IssuerSet::load(dir, config, password)?;
    let entries: Vec<IssuerEntry> = current
        .issuers
        .iter()
        .filter(|i| !ids.contains(&i.id))
        .map(|i| IssuerEntry {
            id: i.id.clone(),
            key_type: i.key_type,
            state: i.state,
            root: i.root.clone(),
            pkcs11: i.pkcs11.clone(),
        })
        .collect();
    if !entries.iter().any(|e| e.id == current.default) {
        return Err(PkiError::RolloverRefused {
            detail: format!("the default issuer {} would be dropped", current.default),
        });
    }
    write_manifest(
        dir,
        &Manifest {
            default: current.default.clone(),
            issuers: entries,
        },
    )
}

fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), PkiError> {
    let text = format!(
        "# The CA's issuing intermediates (mutual ca rotate-intermediate; docs/lifecycle.md).\n{}",
        toml::to_string(m).map_err(|e| PkiError::Config {
            path: dir.join(ISSUERS_FILE),
            detail: e.to_string(),
        })?
    );
    keys::write_atomic(&dir.join(ISSUERS_FILE), text.as_bytes(), 0o644, true)
}

/// `mutual ca rotate-intermediate`: a new intermediate under the same root (the root key is
/// needed for this one command), written beside the others, then published by replacing
/// `issuers.toml` atomically: the manifest is the commit point, so a failure before it leaves
/// the CA as it was, and every replica picks the new set up at its next request. The key is
/// encrypted with the CA password.
pub fn rotate_intermediate(
    dir: &Path,
    password: &[u8],
    opts: &RotateOptions,
) -> Result<Rotated, PkiError> {
    let config = super::read_config(dir)?;
    let current = IssuerSet::load(dir, &config, password)?;
    let (root_path, root_key_path, root_storage) = match &opts.root {
        Some(r) => {
            let (c, k) = root_files(dir, r);
            // A rollover's new root: its key is in the token `trust.toml` names, if any.
            let state = super::trust::read_state(dir)?;
            let storage = match state.new_root_key {
                Some(key) if state.new_root.as_deref() == Some(r.as_str()) => {
                    KeyStorage::Pkcs11(key)
                }
                _ => KeyStorage::File,
            };
            (c, k, storage)
        }
        None => (
            dir.join(ROOT_CERT),
            dir.join(ROOT_KEY),
            config.root_key_storage.clone(),
        ),
    };
    let root_pem = std::fs::read_to_string(&root_path).map_err(io(&root_path))?;
    let root_der = first_cert_der(&root_pem, &root_path)?;
    let rkey = root_key_at(
        &root_key_path,
        &root_path,
        &root_storage,
        config.key_type,
        &root_der,
        password,
    )?;
    let root_issuer =
        rcgen::Issuer::from_ca_cert_der(&CertificateDer::from(root_der.as_slice()), &rkey)?;
    let (_, root_not_after) = validity(&root_der, &root_path)?;

    let n = current
        .issuers
        .iter()
        .filter_map(|i| i.id.strip_prefix("int-")?.parse::<u32>().ok())
        .max()
        .unwrap_or(1)
        + 1;
    let id = format!("int-{n}");
    let key_type = opts.key_type.unwrap_or(current.default_issuer().key_type);
    let t0 = now();
    let asked = later(t0, opts.validity, "--validity")?;
    if asked <= t0 + time::Duration::days(1) {
        return Err(PkiError::InvalidValidity {
            detail: format!(
                "--validity must be more than a day (an intermediate signs certificates for \
                 its whole life; 1825d by default), not {}",
                mutual_policy::human::duration(opts.validity.as_secs())
            ),
        });
    }
    let not_after = asked.min(root_not_after);
    if not_after <= t0 + time::Duration::days(1) {
        return Err(PkiError::InvalidValidity {
            detail: format!(
                "the new intermediate would end at {} (the root expires {}): roll the root over first",
                rfc3339(not_after),
                rfc3339(root_not_after)
            ),
        });
    }
    let key = CaKey::create(&opts.key_storage, key_type)?;
    let params = intermediate_params(
        format!("{} Intermediate {n}", config.name),
        &config.name,
        config.trust_domain.as_deref(),
        &config.permitted_dns,
        t0 - time::Duration::hours(1),
        not_after,
    )?;
    let cert = params.signed_by(&key, &root_issuer)?;
    // Under a rollover's new root: the same intermediate (name and key) signed by the current
    // root too, carried in issued chains, so that parties still trusting only the old root
    // verify. A cross-signed *root* would not do: roots from `ca init` have pathlen 1, which
    // leaves no room for a second CA certificate between them and a leaf.
    let cross = match &opts.root {
        Some(_) => {
            let cur_path = dir.join(ROOT_CERT);
            let cur_pem = std::fs::read_to_string(&cur_path).map_err(io(&cur_path))?;
            let cur_der = first_cert_der(&cur_pem, &cur_path)?;
            let cur_key = root_key(dir, &config, &cur_der, password)?;
            let cur_issuer = rcgen::Issuer::from_ca_cert_der(
                &CertificateDer::from(cur_der.as_slice()),
                &cur_key,
            )?;
            let (_, cur_not_after) = validity(&cur_der, &cur_path)?;
            let mut cp = params.clone();
            cp.serial_number = Some(SerialNumber::from_slice(&random_serial()));
            cp.not_after = cp.not_after.min(cur_not_after);
            Some(cp.signed_by(&key, &cur_issuer)?.pem())
        }
        None => None,
    };
    let key_pem = match key.file_der() {
        Some(der) => Some(keys::encrypt_pkcs8_pem(der, password)?),
        None => None,
    };

    let (cert_path, key_path) = files(dir, &id);
    let idir = dir.join(ISSUERS_DIR);
    if !idir.exists() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&idir).map_err(io(&idir))?;
        std::fs::set_permissions(&idir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&idir))?;
    }
    // Never over an existing file: two rotations at once must not share an id.
    if let Some(pem) = &key_pem {
        StagedFile::write(&key_path, pem.as_bytes(), 0o600)?.commit(false)?;
    }
    if let Err(e) =
        StagedFile::write(&cert_path, cert.pem().as_bytes(), 0o644).and_then(|s| s.commit(false))
    {
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
    if let Some(c) = &cross {
        if let Err(e) = keys::write_atomic(&cross_file(dir, &id), c.as_bytes(), 0o644, true) {
            let _ = std::fs::remove_file(&key_path);
            let _ = std::fs::remove_file(&cert_path);
            return Err(e);
        }
    }

    let mut retired = Vec::new();
    let mut entries: Vec<IssuerEntry> = current
        .issuers
        .iter()
        .map(|i| {
            let state = if opts.add || i.state == IssuerState::Retiring {
                i.state
            } else {
                retired.push(i.id.clone());
                IssuerState::Retiring
            };
            IssuerEntry {
                id: i.id.clone(),
                key_type: i.key_type,
                state,
                root: i.root.clone(),
                pkcs11: i.pkcs11.clone(),
            }
        })
        .collect();
    entries.push(IssuerEntry {
        id: id.clone(),
        key_type,
        state: IssuerState::Active,
        root: opts.root.clone(),
        pkcs11: match &opts.key_storage {
            KeyStorage::Pkcs11(r) => Some(r.clone()),
            KeyStorage::File => None,
        },
    });
    let default = if opts.add {
        current.default.clone()
    } else {
        id.clone()
    };
    let manifest = Manifest {
        default: default.clone(),
        issuers: entries,
    };
    if let Err(e) = write_manifest(dir, &manifest) {
        let _ = std::fs::remove_file(&key_path);
        let _ = std::fs::remove_file(&cert_path);
        return Err(e);
    }
    Ok(Rotated {
        id,
        key_type,
        subject: format!("{} Intermediate {n}", config.name),
        certificate: cert_path,
        not_after: rfc3339(not_after),
        default,
        retired,
    })
}

/// Where the roots of a rollover live.
pub const ROOTS_DIR: &str = "roots";

/// The certificate and key of root `id`.
pub fn root_files(dir: &Path, id: &str) -> (PathBuf, PathBuf) {
    let d = dir.join(ROOTS_DIR);
    (d.join(format!("{id}.pem")), d.join(format!("{id}.key")))
}
