//! The CA: a self-signed root that signs one issuing intermediate (pathlen 0) at `init`, after
//! which only the intermediate is used, for leaves, CSRs and CRLs. The root key can therefore
//! live offline; nothing after `init` reads it.
//!
//! Issuance is split into `prepare_*` (build and sign, nothing persisted) and [`Ca::record`]
//! (inventory row) so that a caller writing files can stage them first and record only a
//! certificate that is really delivered ([`Ca::issue`] and [`Ca::sign_csr`] do both).
//!
//! The profile is the CA's, never the requester's: a CSR contributes only its public key; names,
//! usages, lifetime and extensions come from [`IssueOptions`] and the CA configuration, and are
//! checked against the trust domain and the permitted DNS names before anything is signed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    NameConstraints, PublicKeyData, RevokedCertParams, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

use mutual_store::{Inventory, ListFilter, NewCert, RevokeOutcome, Store, StoreUrl};

mod store_cfg;
pub use store_cfg::{
    open_url, read_config, record_store, store_password, store_url, STORE_PASSWORD_ENV,
};

use crate::keys::{self, StagedFile};
use crate::spiffe::{self, validate_trust_domain};
use crate::{
    normalize_serial, serial_hex, CertRecord, KeyType, PkiError, RevocationReason, San, Usage,
};

pub const ROOT_CERT: &str = "root.pem";
pub const ROOT_KEY: &str = "root.key";
pub const INTERMEDIATE_CERT: &str = "intermediate.pem";
pub const INTERMEDIATE_KEY: &str = "intermediate.key";
pub const INVENTORY: &str = "inventory.db";
pub const CONFIG: &str = "mutual-ca.toml";
/// The CRL number counter of root-signed CRLs (apart from the intermediate's: each issuer
/// numbers its own CRLs).
const ROOT_CRL_COUNTER: &str = "root_crl_number";

/// Leaves are backdated by this much so that peers with a slightly slow clock accept them.
const BACKDATE: time::Duration = time::Duration::minutes(5);
const CRL_COUNTER: &str = "crl_number";

/// What `mutual ca init` takes.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub name: String,
    pub key_type: KeyType,
    /// DNS name constraints written into the intermediate and checked at issue time.
    /// `example.com` permits it and its subdomains; `.example.com` only subdomains.
    pub permitted_dns: Vec<String>,
    /// When set, URI SANs must be SPIFFE IDs in this trust domain.
    pub trust_domain: Option<String>,
    pub root_validity: Duration,
    pub intermediate_validity: Duration,
    /// Default leaf lifetime recorded in the config (used by `cert issue` without `--ttl`).
    pub default_ttl: Duration,
    /// Where the inventory lives; `None`: `inventory.db` in the CA directory.
    pub store: Option<StoreUrl>,
    /// A file holding the PostgreSQL password, recorded in the config (the password is not).
    pub store_password_file: Option<PathBuf>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            name: "Mutual Internal CA".into(),
            key_type: KeyType::EcdsaP256,
            permitted_dns: Vec::new(),
            trust_domain: None,
            root_validity: Duration::from_secs(3650 * 86_400),
            intermediate_validity: Duration::from_secs(1825 * 86_400),
            default_ttl: Duration::from_secs(86_400),
            store: None,
            store_password_file: None,
        }
    }
}

/// `mutual-ca.toml`: what the CA is and how it issues by default.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CaConfig {
    pub name: String,
    pub key_type: KeyType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    #[serde(default)]
    pub permitted_dns: Vec<String>,
    pub defaults: Defaults,
    /// The inventory: `sqlite:PATH` or `postgres://user@host:port/db` (never with a password).
    /// Absent: `inventory.db` in the CA directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreUrl>,
    /// A file whose first line is the PostgreSQL password (`$MUTUAL_STORE_PASSWORD` wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_password_file: Option<PathBuf>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Defaults {
    /// Leaf lifetime, e.g. "24h".
    pub ttl: String,
    pub key_type: KeyType,
}

/// What to issue.
#[derive(Clone, Debug)]
pub struct IssueOptions {
    /// Subject CN and the inventory name.
    pub name: String,
    pub sans: Vec<San>,
    pub usage: Usage,
    pub ttl: Duration,
    /// Key type for a generated key (ignored when signing a CSR).
    pub key_type: KeyType,
    /// Who asked (recorded in the inventory): a user, a token id, a peer identity.
    pub requested_by: Option<String>,
    /// CRL distribution point URLs (http:// or https://) to put in the certificate: where
    /// relying parties (`mutual serve --crl-from-cdp`) fetch the intermediate's CRL.
    pub crl_urls: Vec<String>,
    /// Subject O; `None` leaves it out.
    pub org: Option<String>,
    /// Subject OU (what `serve --allow-ou` matches). One: rcgen's subject holds one value per
    /// attribute type.
    pub ou: Option<String>,
    /// Absolute start of validity; `None`: now minus a small backdate.
    pub not_before: Option<OffsetDateTime>,
    /// Absolute end of validity; `None`: the start (or now) plus `ttl`.
    pub not_after: Option<OffsetDateTime>,
}

impl Default for IssueOptions {
    fn default() -> Self {
        IssueOptions {
            name: String::new(),
            sans: Vec::new(),
            usage: Usage::Client,
            ttl: Duration::from_secs(86_400),
            key_type: KeyType::EcdsaP256,
            requested_by: None,
            crl_urls: Vec::new(),
            org: None,
            ou: None,
            not_before: None,
            not_after: None,
        }
    }
}

impl IssueOptions {
    /// The subject as the inventory records it and x509-parser prints it (`O=.., OU=.., CN=..`,
    /// the order of the RDNs in the certificate).
    pub fn subject(&self) -> String {
        let mut parts = Vec::new();
        if let Some(o) = &self.org {
            parts.push(format!("O={}", o.trim()));
        }
        if let Some(ou) = &self.ou {
            parts.push(format!("OU={}", ou.trim()));
        }
        parts.push(format!("CN={}", self.name.trim()));
        parts.join(", ")
    }
}

/// A subject attribute (O, OU) a person typed: 1 to 64 printable characters (X.520's upper
/// bound), no control characters.
fn check_attr(what: &str, v: &str) -> Result<(), PkiError> {
    let t = v.trim();
    if t.is_empty() || t.chars().count() > 64 || t.chars().any(char::is_control) {
        return Err(PkiError::InvalidName {
            name: v.to_string(),
            detail: format!("{what} must be 1 to 64 printable characters"),
        });
    }
    Ok(())
}

/// An issued certificate.
#[derive(Clone, Debug)]
pub struct Issued {
    /// Leaf then intermediate, PEM.
    pub chain_pem: String,
    /// PKCS#8 PEM of the generated key; `None` when a CSR was signed.
    pub key_pem: Option<String>,
    /// Lowercase hex, no colons.
    pub serial_hex: String,
    pub not_before: i64,
    pub not_after: i64,
    /// The leaf alone, DER.
    pub leaf_der: Vec<u8>,
    /// Lowercase hex SHA-256 of the leaf DER.
    pub sha256: String,
}

/// A signed certificate not yet in the inventory (see [`Ca::record`]).
#[derive(Clone, Debug)]
pub struct Pending {
    pub issued: Issued,
    /// The generated key as PKCS#8 DER (for PKCS#12 export); `None` for CSRs.
    pub key_der: Option<Vec<u8>>,
    record: NewCert,
}

/// An unlocked CA: the intermediate's key is in memory.
pub struct Ca {
    dir: PathBuf,
    config: CaConfig,
    root_pem: String,
    root_der: Vec<u8>,
    int_pem: String,
    int_der: Vec<u8>,
    int_key: KeyPair,
    int_not_before: OffsetDateTime,
    int_not_after: OffsetDateTime,
    store: Store,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        error: source,
    }
}

fn to_time(d: Duration, what: &str) -> Result<time::Duration, PkiError> {
    time::Duration::try_from(d).map_err(|_| PkiError::InvalidDuration {
        input: format!("{d:?}"),
        detail: format!("{what} is too large"),
    })
}

/// `t + d`, refused rather than panicking when the date would leave `time`'s range (durations
/// are bounded at parse time, but a library caller may pass anything).
fn later(t: OffsetDateTime, d: Duration, what: &str) -> Result<OffsetDateTime, PkiError> {
    t.checked_add(to_time(d, what)?)
        .ok_or_else(|| PkiError::InvalidDuration {
            input: format!("{}s", d.as_secs()),
            detail: format!("{what} is too large"),
        })
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// 128 random bits, positive, first byte non-zero so the hex form has no leading zero byte and
/// matches how openssl prints it.
fn random_serial() -> Vec<u8> {
    let mut b: [u8; 16] = rand::random();
    if b[0] == 0 {
        b[0] = 1;
    }
    b.to_vec()
}

fn dn(cn: &str, org: &str) -> rcgen::DistinguishedName {
    let mut d = rcgen::DistinguishedName::new();
    d.push(DnType::OrganizationName, org);
    d.push(DnType::CommonName, cn);
    d
}

/// Whether `name` is inside the permitted subtree `c` (RFC 5280 dNSName semantics, with the
/// common leading-dot form meaning "subdomains only").
fn dns_permitted(name: &str, c: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let c = c.to_ascii_lowercase();
    if c.starts_with('.') {
        name.ends_with(&c)
    } else {
        name == c || name.ends_with(&format!(".{c}"))
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
}

/// Parses a certificate PEM file's first certificate into DER.
fn first_cert_der(pem: &str, path: &Path) -> Result<Vec<u8>, PkiError> {
    let bad = |detail: String| PkiError::Config {
        path: path.to_path_buf(),
        detail,
    };
    for p in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let p = p.map_err(|e| bad(format!("not PEM: {e}")))?;
        if p.label == "CERTIFICATE" {
            return Ok(p.contents);
        }
    }
    Err(bad("no CERTIFICATE in file".into()))
}

fn validity(der: &[u8], path: &Path) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
    let (_, c) = x509_parser::parse_x509_certificate(der).map_err(|_| PkiError::Config {
        path: path.to_path_buf(),
        detail: "not a valid X.509 certificate (truncated or corrupted)".into(),
    })?;
    Ok((
        c.validity().not_before.to_datetime(),
        c.validity().not_after.to_datetime(),
    ))
}

/// Opens the inventory of the CA in `dir` without unlocking any key (listing and revoking need
/// no key; only signing does).
pub async fn open_store(dir: &Path) -> Result<Store, PkiError> {
    if !dir.join(CONFIG).exists() {
        // No config: only the default inventory can be there.
        let db = dir.join(INVENTORY);
        if !db.exists() {
            return Err(PkiError::NotInitialised {
                dir: dir.to_path_buf(),
                file: INVENTORY.into(),
            });
        }
        return Ok(Store::open_sqlite(&db, false).await?);
    }
    store_cfg::open_configured(dir, &read_config(dir)?).await
}

/// Revokes a certificate in `store` by serial (any of the forms [`normalize_serial`] accepts).
pub async fn revoke_in(
    store: &Store,
    serial: &str,
    reason: RevocationReason,
) -> Result<RevokeOutcome, PkiError> {
    let s = normalize_serial(serial)?;
    match store
        .revoke(&s, reason.as_str(), now().unix_timestamp())
        .await
    {
        Err(mutual_store::StoreError::NotFound { serial }) => {
            Err(PkiError::UnknownSerial { serial })
        }
        other => Ok(other?),
    }
}

impl Ca {
    /// Creates a root and an intermediate in `dir`, both keys encrypted with `password`, plus the
    /// inventory and the config file. Refuses (changing nothing) if any CA file already exists.
    pub async fn init(dir: &Path, opts: &InitOptions, password: &[u8]) -> Result<Ca, PkiError> {
        if password.is_empty() {
            return Err(PkiError::EmptyPassword);
        }
        for f in [
            ROOT_CERT,
            ROOT_KEY,
            INTERMEDIATE_CERT,
            INTERMEDIATE_KEY,
            INVENTORY,
            CONFIG,
        ] {
            if dir.join(f).exists() {
                return Err(PkiError::AlreadyInitialised {
                    dir: dir.to_path_buf(),
                    file: f.into(),
                });
            }
        }
        let name = opts.name.trim();
        if name.is_empty() || name.len() > 50 || name.chars().any(char::is_control) {
            return Err(PkiError::InvalidName {
                name: opts.name.clone(),
                detail: "the CA name must be 1 to 50 printable characters".into(),
            });
        }
        if let Some(td) = &opts.trust_domain {
            validate_trust_domain(td)?;
        }
        // A default no leaf could ever get would make every plain `cert issue` fail later.
        let int_life = opts.intermediate_validity.min(opts.root_validity);
        if opts.default_ttl > int_life {
            return Err(PkiError::BeyondIntermediate {
                what: "--default-ttl",
                requested: format!("{}s", opts.default_ttl.as_secs()),
                limit: format!("{}s (the intermediate's lifetime)", int_life.as_secs()),
            });
        }
        let mut permitted = Vec::new();
        for p in &opts.permitted_dns {
            let p = p.trim().to_ascii_lowercase();
            crate::validate_dns_name(p.strip_prefix('.').unwrap_or(&p)).map_err(|detail| {
                PkiError::InvalidName {
                    name: p.clone(),
                    detail: format!("--permitted-dns: {detail}"),
                }
            })?;
            permitted.push(p);
        }

        let t0 = now();
        let root_key = keys::generate(opts.key_type)?;
        let mut rp = CertificateParams::default();
        rp.distinguished_name = dn(&format!("{name} Root"), name);
        rp.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        rp.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        rp.not_before = t0 - time::Duration::hours(1);
        rp.not_after = later(t0, opts.root_validity, "root validity")?;
        rp.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        let root = rp.self_signed(&root_key)?;

        let int_key = keys::generate(opts.key_type)?;
        let mut ip = CertificateParams::default();
        ip.distinguished_name = dn(&format!("{name} Intermediate"), name);
        ip.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ip.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ip.not_before = t0 - time::Duration::hours(1);
        ip.not_after =
            later(t0, opts.intermediate_validity, "intermediate validity")?.min(rp.not_after);
        ip.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        ip.use_authority_key_identifier_extension = true;
        if let Some(td) = &opts.trust_domain {
            // The intermediate's own SPIFFE ID is its trust domain (SPIFFE X509-SVID §3): mutual's
            // path validation (mutual_tls Trust::check) then refuses any leaf under it naming
            // another trust domain. Not a URI name constraint: rustls-webpki fails closed on
            // those, which would make every SVID from this CA unusable with rustls peers.
            ip.subject_alt_names = vec![rcgen::SanType::URI(
                format!("spiffe://{td}")
                    .try_into()
                    .map_err(|e: rcgen::Error| PkiError::InvalidSpiffeId {
                        id: td.clone(),
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
        let root_issuer = Issuer::from_params(&rp, &root_key);
        let int = ip.signed_by(&int_key, &root_issuer)?;

        let config = CaConfig {
            name: name.to_string(),
            key_type: opts.key_type,
            trust_domain: opts.trust_domain.clone(),
            permitted_dns: permitted,
            defaults: Defaults {
                ttl: format!("{}s", opts.default_ttl.as_secs()),
                key_type: KeyType::EcdsaP256,
            },
            store: opts.store.clone(),
            store_password_file: opts.store_password_file.clone(),
        };
        // A store other than the default file is reached (and checked empty) before any file is
        // written, so a wrong URL or password leaves the directory untouched.
        let early_store = match &opts.store {
            Some(url) => {
                let s = open_url(
                    &url.clone().relative_to(dir),
                    opts.store_password_file.as_deref(),
                    true,
                )
                .await?;
                if let Err(e) = s.ensure_empty().await {
                    s.close().await;
                    return Err(e.into());
                }
                Some(s)
            }
            None => None,
        };
        let config_text = toml::to_string(&config).map_err(|e| PkiError::Config {
            path: dir.join(CONFIG),
            detail: e.to_string(),
        })?;

        let root_key_pem = keys::encrypt_pkcs8_pem(root_key.serialized_der(), password)?;
        let int_key_pem = keys::encrypt_pkcs8_pem(int_key.serialized_der(), password)?;

        {
            use std::os::unix::fs::PermissionsExt;
            if dir.exists() {
                // An existing directory open to group/other would let them replace root.pem or
                // the inventory: tighten it (the CLI says so), as for a new one.
                let mode = std::fs::metadata(dir)
                    .map_err(io(dir))?
                    .permissions()
                    .mode();
                if mode & 0o1000 != 0 {
                    return Err(PkiError::Config {
                        path: dir.to_path_buf(),
                        detail: "a shared (sticky) directory such as /tmp cannot hold a CA; \
                                 use a directory of its own"
                            .into(),
                    });
                }
                if mode & 0o077 != 0 {
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                        .map_err(io(dir))?;
                }
            } else {
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io(dir))?;
            }
        }
        let staged = vec![
            StagedFile::write(&dir.join(ROOT_KEY), root_key_pem.as_bytes(), 0o600)?,
            StagedFile::write(&dir.join(INTERMEDIATE_KEY), int_key_pem.as_bytes(), 0o600)?,
            StagedFile::write(&dir.join(ROOT_CERT), root.pem().as_bytes(), 0o644)?,
            StagedFile::write(&dir.join(INTERMEDIATE_CERT), int.pem().as_bytes(), 0o644)?,
            StagedFile::write(&dir.join(CONFIG), config_text.as_bytes(), 0o644)?,
        ];
        // Commit without clobbering; on any failure remove what this call created so that a
        // failed init leaves the directory as it found it.
        let mut committed: Vec<PathBuf> = Vec::new();
        let rollback = |committed: &[PathBuf]| {
            for p in committed {
                let _ = std::fs::remove_file(p);
            }
        };
        for s in staged {
            let target = s.target().to_path_buf();
            if let Err(e) = s.commit(false) {
                rollback(&committed);
                return Err(match e {
                    PkiError::Io { error: source, .. }
                        if source.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        PkiError::AlreadyInitialised {
                            dir: dir.to_path_buf(),
                            file: target
                                .file_name()
                                .map(|f| f.to_string_lossy().into_owned())
                                .unwrap_or_default(),
                        }
                    }
                    other => other,
                });
            }
            committed.push(target);
        }
        let db = dir.join(INVENTORY);
        let opened = match early_store {
            Some(s) => Ok(s),
            None => Store::open_sqlite(&db, true).await,
        };
        let store = match opened {
            Ok(s) => s,
            Err(e) => {
                rollback(&committed);
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
                }
                return Err(e.into());
            }
        };
        let int_der = int.der().to_vec();
        Ok(Ca {
            dir: dir.to_path_buf(),
            config,
            root_pem: root.pem(),
            root_der: root.der().to_vec(),
            int_pem: int.pem(),
            int_der,
            int_key,
            int_not_before: ip.not_before,
            int_not_after: ip.not_after,
            store,
        })
    }

    /// Unlocks the CA in `dir`: decrypts the intermediate key (the root key is not needed and
    /// may be absent) and opens the inventory.
    pub async fn open(dir: &Path, password: &[u8]) -> Result<Ca, PkiError> {
        let need = |f: &str| -> Result<PathBuf, PkiError> {
            let p = dir.join(f);
            if p.exists() {
                Ok(p)
            } else {
                Err(PkiError::NotInitialised {
                    dir: dir.to_path_buf(),
                    file: f.into(),
                })
            }
        };
        need(CONFIG)?;
        let root_path = need(ROOT_CERT)?;
        let int_path = need(INTERMEDIATE_CERT)?;
        let key_path = need(INTERMEDIATE_KEY)?;
        let config = read_config(dir)?;
        let root_pem = std::fs::read_to_string(&root_path).map_err(io(&root_path))?;
        let int_pem = std::fs::read_to_string(&int_path).map_err(io(&int_path))?;
        let root_der = first_cert_der(&root_pem, &root_path)?;
        let int_der = first_cert_der(&int_pem, &int_path)?;
        let key_pem = pkcs8::der::zeroize::Zeroizing::new(
            std::fs::read_to_string(&key_path).map_err(io(&key_path))?,
        );
        let plain = keys::decrypt_pkcs8_pem(&key_pem, password, &key_path)?;
        let int_key = keys::load_pkcs8(plain.as_bytes(), config.key_type)?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&int_der).map_err(|_| PkiError::Config {
                path: int_path.clone(),
                detail: "not a valid X.509 certificate (truncated or corrupted)".into(),
            })?;
        if cert.public_key().raw != int_key.subject_public_key_info().as_slice() {
            return Err(PkiError::Config {
                path: key_path,
                detail: format!("this key does not belong to {}", int_path.display()),
            });
        }
        let (int_not_before, int_not_after) = validity(&int_der, &int_path)?;
        let store = store_cfg::open_configured(dir, &config).await?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            config,
            root_pem,
            root_der,
            int_pem,
            int_der,
            int_key,
            int_not_before,
            int_not_after,
            store,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn intermediate_pem(&self) -> &str {
        &self.int_pem
    }

    /// SHA-256 of the root certificate's DER, `AB:CD:...` (as `openssl x509 -fingerprint
    /// -sha256` prints it); pin this when bootstrapping trust.
    pub fn root_fingerprint_sha256(&self) -> String {
        crate::colon_hex(&sha256_hex(&self.root_der))
    }

    /// The intermediate's notAfter, Unix seconds (no leaf may outlive it).
    pub fn intermediate_not_after(&self) -> i64 {
        self.int_not_after.unix_timestamp()
    }

    /// The default leaf TTL from the config.
    pub fn default_ttl(&self) -> Duration {
        crate::parse_duration(&self.config.defaults.ttl).unwrap_or(Duration::from_secs(86_400))
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, PkiError> {
        Ok(Issuer::from_ca_cert_der(
            &CertificateDer::from(self.int_der.as_slice()),
            &self.int_key,
        )?)
    }

    /// Checks a request against the CA's rules; returns (not_before, not_after).
    fn check(&self, o: &IssueOptions) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
        let name = o.name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(PkiError::InvalidName {
                name: o.name.clone(),
                detail: "NAME must be 1 to 64 printable characters (it becomes the subject CN)"
                    .into(),
            });
        }
        if matches!(o.usage, Usage::Server | Usage::Both) && !o.sans.iter().any(San::names_a_server)
        {
            return Err(PkiError::ServerNeedsSan);
        }
        let spiffe: Vec<&str> = o.sans.iter().filter_map(San::spiffe_id).collect();
        if spiffe.len() > 1 {
            return Err(PkiError::MultipleSpiffeIds {
                count: spiffe.len(),
            });
        }
        if let Some(td) = &self.config.trust_domain {
            for s in &o.sans {
                if let San::Uri(u) = s {
                    let inside = spiffe::parse(u).is_ok_and(|id| id.trust_domain() == td);
                    if !inside {
                        return Err(PkiError::OutsideTrustDomain {
                            uri: u.clone(),
                            trust_domain: td.clone(),
                        });
                    }
                }
            }
        }
        let permitted = &self.config.permitted_dns;
        if !permitted.is_empty() {
            let mut names: Vec<&str> = o
                .sans
                .iter()
                .filter_map(|s| match s {
                    San::Dns(d) => Some(d.as_str()),
                    _ => None,
                })
                .collect();
            // OpenSSL applies DNS constraints to a hostname-like CN too; refuse what it would.
            if name.contains('.') && crate::validate_dns_name(&name.to_ascii_lowercase()).is_ok() {
                names.push(name);
            }
            for n in names {
                if !permitted.iter().any(|c| dns_permitted(n, c)) {
                    return Err(PkiError::NotPermitted {
                        name: n.to_string(),
                        permitted: permitted.join(", "),
                    });
                }
            }
        }
        if let Some(org) = &o.org {
            check_attr("the organization (O)", org)?;
        }
        if let Some(ou) = &o.ou {
            check_attr("the organizational unit (OU)", ou)?;
        }
        if o.ttl.is_zero() {
            return Err(PkiError::InvalidDuration {
                input: "0s".into(),
                detail: "TTL must be greater than zero".into(),
            });
        }
        let t0 = now();
        if o.not_before.is_none() && o.not_after.is_none() {
            let not_after = later(t0, o.ttl, "TTL")?;
            if not_after > self.int_not_after {
                return Err(PkiError::TtlBeyondIntermediate {
                    requested: rfc3339(not_after),
                    limit: rfc3339(self.int_not_after),
                });
            }
            let not_before = (t0 - BACKDATE).max(self.int_not_before);
            return Ok((not_before, not_after));
        }
        self.check_validity(o, t0)
    }

    /// An absolute validity window: inside the intermediate's, ending after it starts and in
    /// the future (an already expired certificate is never what anyone meant).
    fn check_validity(
        &self,
        o: &IssueOptions,
        t0: OffsetDateTime,
    ) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
        let bad = |detail: String| Err(PkiError::InvalidValidity { detail });
        // Certificates carry whole seconds; dropping the fraction here keeps what is checked
        // equal to what is signed.
        let secs = |t: OffsetDateTime| t.replace_nanosecond(0).unwrap_or(t);
        let not_before = match o.not_before {
            Some(t) => secs(t),
            None => (t0 - BACKDATE).max(self.int_not_before),
        };
        let not_after = match o.not_after {
            Some(t) => secs(t),
            None => later(not_before, o.ttl, "TTL")?,
        };
        if not_before < self.int_not_before {
            return bad(format!(
                "--not-before {} is before the intermediate's own start ({}); use a later time",
                rfc3339(not_before),
                rfc3339(self.int_not_before)
            ));
        }
        if not_after > self.int_not_after {
            return bad(format!(
                "--not-after {} is after the intermediate expires ({}); use an earlier time",
                rfc3339(not_after),
                rfc3339(self.int_not_after)
            ));
        }
        if not_after <= t0 {
            return bad(format!(
                "--not-after {} is in the past: the certificate would be expired when issued",
                rfc3339(not_after)
            ));
        }
        if not_after <= not_before {
            return bad(format!(
                "--not-after {} must be later than --not-before {}",
                rfc3339(not_after),
                rfc3339(not_before)
            ));
        }
        Ok((not_before, not_after))
    }

    fn leaf_params(
        &self,
        o: &IssueOptions,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        rsa: bool,
    ) -> Result<(CertificateParams, Vec<u8>), PkiError> {
        let mut p = CertificateParams::default();
        let mut d = rcgen::DistinguishedName::new();
        if let Some(org) = &o.org {
            d.push(DnType::OrganizationName, org.trim());
        }
        if let Some(ou) = &o.ou {
            d.push(DnType::OrganizationalUnitName, ou.trim());
        }
        d.push(DnType::CommonName, o.name.trim());
        p.distinguished_name = d;
        p.subject_alt_names = o
            .sans
            .iter()
            .map(San::to_rcgen)
            .collect::<Result<Vec<_>, _>>()?;
        p.not_before = not_before;
        p.not_after = not_after;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = if rsa {
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ]
        } else {
            vec![KeyUsagePurpose::DigitalSignature]
        };
        p.extended_key_usages = match o.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Both => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        p.use_authority_key_identifier_extension = true;
        p.key_identifier_method = KeyIdMethod::Sha256;
        if !o.crl_urls.is_empty() {
            for u in &o.crl_urls {
                let why = if !(u.starts_with("http://") || u.starts_with("https://")) {
                    Some("it must be an http:// or https:// URL".to_string())
                } else if u.contains(char::is_whitespace) {
                    Some("it contains a space; write spaces as %20".to_string())
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(PkiError::InvalidCrlUrl {
                        url: u.clone(),
                        why,
                    });
                }
            }
            p.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: o.crl_urls.clone(),
            }];
        }
        let serial = random_serial();
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        Ok((p, serial))
    }

    fn finish(
        &self,
        o: &IssueOptions,
        cert: rcgen::Certificate,
        serial: &[u8],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        key: Option<&KeyPair>,
    ) -> Result<Pending, PkiError> {
        let leaf_der = cert.der().to_vec();
        let sha256 = sha256_hex(&leaf_der);
        let serial_hex = serial_hex(serial);
        let issued = Issued {
            chain_pem: format!("{}{}", cert.pem(), self.int_pem),
            key_pem: match key {
                Some(k) => Some(keys::pkcs8_pem(k)?.to_string()),
                None => None,
            },
            serial_hex: serial_hex.clone(),
            not_before: not_before.unix_timestamp(),
            not_after: not_after.unix_timestamp(),
            leaf_der,
            sha256: sha256.clone(),
        };
        let record = NewCert {
            serial: serial_hex,
            name: o.name.trim().to_string(),
            subject: o.subject(),
            sans: o.sans.iter().map(ToString::to_string).collect(),
            usage: o.usage.as_str().to_string(),
            not_before: issued.not_before,
            not_after: issued.not_after,
            requested_by: o.requested_by.clone(),
            sha256,
        };
        Ok(Pending {
            issued,
            key_der: match key {
                Some(k) => Some(keys::pkcs8_v1_der(k.serialized_der())?.to_vec()),
                None => None,
            },
            record,
        })
    }

    /// Generates a key and signs a leaf for it; nothing is recorded yet.
    pub fn prepare_issue(&self, o: &IssueOptions) -> Result<Pending, PkiError> {
        let (nb, na) = self.check(o)?;
        let key = keys::generate(o.key_type)?;
        let (params, serial) = self.leaf_params(o, nb, na, o.key_type == KeyType::Rsa3072)?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        self.finish(o, cert, &serial, nb, na, Some(&key))
    }

    /// Verifies a CSR (PEM or DER) and signs its public key with the CA's profile; nothing is
    /// recorded yet. Only the CSR's key is used: its subject and requested extensions are
    /// ignored, so a requester cannot widen its own names or usages.
    pub fn prepare_csr(&self, csr: &[u8], o: &IssueOptions) -> Result<Pending, PkiError> {
        let der = csr_der(csr)?;
        let (rest, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der)
                // x509-parser's error text is nom/DER internals (`Der(UnexpectedTag { .. })`).
                .map_err(|_| PkiError::MalformedCsr {
                    detail: "not a valid PKCS#10 certificate request (truncated, or not a CSR)"
                        .into(),
                })?;
        if !rest.is_empty() {
            return Err(PkiError::MalformedCsr {
                detail: "trailing bytes after the CSR".into(),
            });
        }
        let spki = &req.certification_request_info.subject_pki;
        let (kind, bits) = crate::inspect::describe_key(spki);
        match kind.as_str() {
            "RSA" if bits < 2048 => {
                return Err(PkiError::WeakKey {
                    detail: format!("the CSR has an RSA-{bits} key; at least 2048 bits required"),
                })
            }
            "RSA" | "ECDSA P-256" | "ECDSA P-384" | "Ed25519" => {}
            other => {
                return Err(PkiError::UnsupportedKey {
                    detail: format!(
                        "the CSR's key is {other}; use ECDSA P-256/P-384, Ed25519 or RSA >= 2048"
                    ),
                })
            }
        }
        req.verify_signature()
            .map_err(|_| PkiError::CsrBadSignature)?;
        self.sign_spki(spki.raw, kind == "RSA", o)
    }

    /// Signs a leaf for a public key given as SubjectPublicKeyInfo DER, with no proof of
    /// possession: only for a key already proven, e.g. the key of a certificate that was just
    /// used in an mTLS handshake (the online CA's renewal without a CSR). Nothing is recorded.
    pub fn prepare_spki(&self, spki_der: &[u8], o: &IssueOptions) -> Result<Pending, PkiError> {
        let (rest, spki) =
            x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der).map_err(|_| {
                PkiError::Malformed {
                    detail: "not a valid SubjectPublicKeyInfo (DER public key)".into(),
                }
            })?;
        if !rest.is_empty() {
            return Err(PkiError::Malformed {
                detail: "trailing bytes after the public key".into(),
            });
        }
        let (kind, bits) = crate::inspect::describe_key(&spki);
        match kind.as_str() {
            "RSA" if bits < 2048 => {
                return Err(PkiError::WeakKey {
                    detail: format!("RSA-{bits} key; at least 2048 bits required"),
                })
            }
            "RSA" | "ECDSA P-256" | "ECDSA P-384" | "Ed25519" => {}
            other => {
                return Err(PkiError::UnsupportedKey {
                    detail: format!("{other}; use ECDSA P-256/P-384, Ed25519 or RSA >= 2048"),
                })
            }
        }
        self.sign_spki(spki_der, kind == "RSA", o)
    }

    fn sign_spki(&self, spki_der: &[u8], rsa: bool, o: &IssueOptions) -> Result<Pending, PkiError> {
        let pubkey = rcgen::SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| {
            PkiError::UnsupportedKey {
                detail: format!("cannot use the public key: {e}"),
            }
        })?;
        let (nb, na) = self.check(o)?;
        let (params, serial) = self.leaf_params(o, nb, na, rsa)?;
        let cert = params.signed_by(&pubkey, &self.issuer()?)?;
        self.finish(o, cert, &serial, nb, na, None)
    }

    /// Records a prepared certificate and spends the one-time token `jti` that paid for it, in
    /// one transaction (a replayed token is [`StoreError::TokenUsed`] and records nothing).
    ///
    /// [`StoreError::TokenUsed`]: mutual_store::StoreError::TokenUsed
    pub async fn record_with_token(&self, p: &Pending, jti: &str) -> Result<(), PkiError> {
        Ok(self
            .store
            .insert_with_token(&p.record, jti, now().unix_timestamp())
            .await?)
    }

    /// Records a prepared certificate in the inventory.
    pub async fn record(&self, p: &Pending) -> Result<(), PkiError> {
        Ok(self.store.insert(&p.record).await?)
    }

    /// Removes the row of a prepared certificate that could not be delivered after all.
    pub async fn forget(&self, serial_hex: &str) -> Result<(), PkiError> {
        Ok(self.store.delete(serial_hex).await?)
    }

    /// Issues a certificate with a new key and records it.
    pub async fn issue(&self, o: &IssueOptions) -> Result<Issued, PkiError> {
        let p = self.prepare_issue(o)?;
        self.record(&p).await?;
        Ok(p.issued)
    }

    /// Signs a CSR (PEM or DER) with the CA's profile and records it.
    pub async fn sign_csr(&self, csr: &[u8], o: &IssueOptions) -> Result<Issued, PkiError> {
        let p = self.prepare_csr(csr, o)?;
        self.record(&p).await?;
        Ok(p.issued)
    }

    pub async fn revoke(
        &self,
        serial: &str,
        reason: RevocationReason,
    ) -> Result<RevokeOutcome, PkiError> {
        revoke_in(&self.store, serial, reason).await
    }

    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<CertRecord>, PkiError> {
        Ok(self.store.list(filter, now().unix_timestamp()).await?)
    }

    /// A CRL (DER) signed by the root, for the certificates the root issued: the intermediate.
    /// Relying parties that check every certificate in the chain (nginx's `ssl_crl`, `serve
    /// --crl` without `--crl-leaf-only`) need it beside the intermediate's CRL. No command
    /// revokes an intermediate (a compromised one means a new CA), so the list is empty; what
    /// matters is a current CRL from the root. Needs the root key: it is decrypted with
    /// `password` for this call only, and its absence (moved offline, as advised) is
    /// [`PkiError::RootKeyOffline`].
    pub async fn root_crl(
        &self,
        password: &[u8],
        next_update: Duration,
    ) -> Result<Vec<u8>, PkiError> {
        let key_path = self.dir.join(ROOT_KEY);
        let key_pem = match std::fs::read_to_string(&key_path) {
            Ok(k) => pkcs8::der::zeroize::Zeroizing::new(k),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PkiError::RootKeyOffline { path: key_path })
            }
            Err(e) => return Err(io(&key_path)(e)),
        };
        let plain = keys::decrypt_pkcs8_pem(&key_pem, password, &key_path)?;
        let root_key = keys::load_pkcs8(plain.as_bytes(), self.config.key_type)?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&self.root_der).map_err(|e| PkiError::Config {
                path: self.dir.join(ROOT_CERT),
                detail: format!("not a certificate: {e}"),
            })?;
        if cert.public_key().raw != root_key.subject_public_key_info().as_slice() {
            return Err(PkiError::Config {
                path: key_path,
                detail: format!(
                    "this key does not belong to {}",
                    self.dir.join(ROOT_CERT).display()
                ),
            });
        }
        let issuer =
            Issuer::from_ca_cert_der(&CertificateDer::from(self.root_der.as_slice()), &root_key)?;
        let number = self.store.next_counter(ROOT_CRL_COUNTER).await?;
        sign_crl(&issuer, &self.root_der, Vec::new(), number, next_update)
    }

    /// A CRL (DER) signed by the intermediate, listing every revoked certificate with its
    /// reason, with a CRL number one higher than any issued before.
    pub async fn crl(&self, next_update: Duration) -> Result<Vec<u8>, PkiError> {
        let revoked = self.store.revoked().await?;
        let mut entries = Vec::with_capacity(revoked.len());
        for r in revoked {
            let serial = hex::decode(&r.serial).map_err(|_| PkiError::InvalidSerial {
                input: r.serial.clone(),
            })?;
            let reason = r
                .reason
                .as_deref()
                .and_then(|s| s.parse::<RevocationReason>().ok())
                .unwrap_or_default();
            entries.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: OffsetDateTime::from_unix_timestamp(r.revoked_at)
                    .unwrap_or_else(|_| now()),
                reason_code: reason.to_rcgen(),
                invalidity_date: None,
            });
        }
        // Checked before a CRL number is taken: a refused request must not use one up.
        let t0 = now();
        let next = later(t0, next_update, "--next-update")?;
        if next > self.int_not_after {
            return Err(PkiError::BeyondIntermediate {
                what: "--next-update",
                requested: rfc3339(next),
                limit: rfc3339(self.int_not_after),
            });
        }
        let number = self.store.next_counter(CRL_COUNTER).await?;
        sign_crl(&self.issuer()?, &self.int_der, entries, number, next_update)
    }
}

/// Signs a CRL for `issuer` (whose certificate is `issuer_der`), keyed to the issuer's subject
/// key identifier so that relying parties find the right key.
fn sign_crl(
    issuer: &Issuer<'_, &KeyPair>,
    issuer_der: &[u8],
    entries: Vec<RevokedCertParams>,
    number: i64,
    next_update: Duration,
) -> Result<Vec<u8>, PkiError> {
    {
        let number_bytes = number.to_be_bytes();
        let first = number_bytes.iter().position(|b| *b != 0).unwrap_or(7);
        let t0 = now();
        let next = later(t0, next_update, "--next-update")?;
        let ski = match x509_parser::parse_x509_certificate(issuer_der) {
            Ok((_, c)) => c
                .extensions()
                .iter()
                .find_map(|e| match e.parsed_extension() {
                    x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                        Some(k.0.to_vec())
                    }
                    _ => None,
                }),
            Err(_) => None,
        };
        let params = CertificateRevocationListParams {
            this_update: t0 - time::Duration::minutes(1),
            next_update: next,
            crl_number: SerialNumber::from_slice(&number_bytes[first..]),
            issuing_distribution_point: None,
            revoked_certs: entries,
            key_identifier_method: match ski {
                Some(k) => KeyIdMethod::PreSpecified(k),
                None => KeyIdMethod::Sha256,
            },
        };
        Ok(params.signed_by(issuer)?.der().to_vec())
    }
}

/// The SANs a CSR asks for (its extensionRequest's subjectAltName), in the CLI form. The CSR's
/// signature is not checked here ([`Ca::prepare_csr`] does that before anything is signed).
/// A name type the CA never issues (email, directory name, ...) is an error rather than
/// silently dropped, so the caller can refuse the request.
pub fn csr_sans(csr: &[u8]) -> Result<Vec<San>, PkiError> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let der = csr_der(csr)?;
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        // x509-parser's error text is nom/DER internals (`Der(UnexpectedTag { .. })`).
        .map_err(|_| PkiError::MalformedCsr {
            detail: "not a valid PKCS#10 certificate request (truncated, or not a CSR)".into(),
        })?;
    let mut out = Vec::new();
    let Some(exts) = req.requested_extensions() else {
        return Ok(out);
    };
    for ext in exts {
        let ParsedExtension::SubjectAlternativeName(san) = ext else {
            continue;
        };
        for name in &san.general_names {
            let text = match name {
                GeneralName::DNSName(d) => format!("dns:{d}"),
                GeneralName::URI(u) => format!("uri:{u}"),
                GeneralName::RFC822Name(e) => format!("email:{e}"),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => {
                        let a: [u8; 4] = [b[0], b[1], b[2], b[3]];
                        format!("ip:{}", std::net::IpAddr::from(a))
                    }
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(b);
                        format!("ip:{}", std::net::IpAddr::from(a))
                    }
                    _ => {
                        return Err(PkiError::MalformedCsr {
                            detail: "an IP address SAN of the wrong length".into(),
                        })
                    }
                },
                other => {
                    return Err(PkiError::InvalidSan {
                        input: format!("{other:?}"),
                        detail: "only dns:, ip:, uri: and email: names can be issued".into(),
                    })
                }
            };
            out.push(text.parse::<San>()?);
        }
    }
    Ok(out)
}

/// Accepts a CSR as PEM (`CERTIFICATE REQUEST` / `NEW CERTIFICATE REQUEST`) or DER.
fn csr_der(input: &[u8]) -> Result<Vec<u8>, PkiError> {
    if input.windows(10).any(|w| w == b"-----BEGIN") {
        for p in x509_parser::pem::Pem::iter_from_buffer(input) {
            let p = p.map_err(|e| PkiError::MalformedCsr {
                detail: format!("bad PEM: {e}"),
            })?;
            if p.label == "CERTIFICATE REQUEST" || p.label == "NEW CERTIFICATE REQUEST" {
                return Ok(p.contents);
            }
        }
        return Err(PkiError::MalformedCsr {
            detail: "no CERTIFICATE REQUEST block found".into(),
        });
    }
    if input.first() != Some(&0x30) {
        return Err(PkiError::MalformedCsr {
            detail: "neither a PEM CERTIFICATE REQUEST nor DER".into(),
        });
    }
    Ok(input.to_vec())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn dns_constraints() {
        assert!(dns_permitted("a.internal.example", ".internal.example"));
        assert!(!dns_permitted("internal.example", ".internal.example"));
        assert!(dns_permitted("internal.example", "internal.example"));
        assert!(dns_permitted("x.internal.example", "internal.example"));
        assert!(!dns_permitted("evilinternal.example", "internal.example"));
        assert!(!dns_permitted("a.other.example", ".internal.example"));
    }

    #[tokio::test]
    async fn subject_validity_and_root_crl() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("ca");
        let ca = Ca::init(&dir, &InitOptions::default(), b"pw")
            .await
            .unwrap();
        let t0 = now().replace_nanosecond(0).unwrap();
        let o = IssueOptions {
            name: "svc".into(),
            org: Some("Acme".into()),
            ou: Some("payments".into()),
            sans: vec!["email:ops@example.org".parse().unwrap()],
            not_after: Some(t0 + time::Duration::days(3)),
            ..Default::default()
        };
        assert_eq!(o.subject(), "O=Acme, OU=payments, CN=svc");
        let issued = ca.issue(&o).await.unwrap();
        assert_eq!(
            issued.not_after,
            (t0 + time::Duration::days(3)).unix_timestamp()
        );
        let (_, c) = x509_parser::parse_x509_certificate(&issued.leaf_der).unwrap();
        assert_eq!(c.subject().to_string(), "O=Acme, OU=payments, CN=svc");
        for (nb, na) in [
            (None, Some(t0 - time::Duration::hours(1))),
            (
                Some(t0 + time::Duration::days(2)),
                Some(t0 + time::Duration::days(1)),
            ),
            (None, Some(t0 + time::Duration::days(9000))),
            (Some(t0 - time::Duration::days(2)), None),
        ] {
            let bad = IssueOptions {
                not_before: nb,
                not_after: na,
                ..o.clone()
            };
            assert!(
                matches!(ca.issue(&bad).await, Err(PkiError::InvalidValidity { .. })),
                "{nb:?} {na:?}"
            );
        }
        let der = ca.root_crl(b"pw", Duration::from_secs(3600)).await.unwrap();
        let (_, crl) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
        let (_, root) = x509_parser::parse_x509_certificate(&ca.root_der).unwrap();
        crl.verify_signature(root.public_key()).unwrap();
        assert_eq!(crl.iter_revoked_certificates().count(), 0);
        assert!(matches!(
            ca.root_crl(b"wrong", Duration::from_secs(3600)).await,
            Err(PkiError::WrongPassword { .. })
        ));
        std::fs::remove_file(dir.join(ROOT_KEY)).unwrap();
        assert!(matches!(
            ca.root_crl(b"pw", Duration::from_secs(3600)).await,
            Err(PkiError::RootKeyOffline { .. })
        ));
    }

    #[tokio::test]
    async fn init_issue_csr_revoke_crl() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("ca");
        let opts = InitOptions {
            name: "Test CA".into(),
            permitted_dns: vec![".internal.example".into()],
            trust_domain: Some("example.org".into()),
            ..Default::default()
        };
        let ca = Ca::init(&dir, &opts, b"pw").await.unwrap();
        assert_eq!(ca.root_fingerprint_sha256().len(), 95);
        assert!(matches!(
            Ca::init(&dir, &opts, b"pw").await,
            Err(PkiError::AlreadyInitialised { .. })
        ));
        assert!(matches!(
            Ca::open(&dir, b"nope").await,
            Err(PkiError::WrongPassword { .. })
        ));
        let ca = Ca::open(&dir, b"pw").await.unwrap();
        let o = IssueOptions {
            name: "web".into(),
            sans: vec![
                "dns:web.internal.example".parse().unwrap(),
                "uri:spiffe://example.org/web".parse().unwrap(),
            ],
            usage: Usage::Both,
            ..Default::default()
        };
        let issued = ca.issue(&o).await.unwrap();
        assert_eq!(issued.serial_hex.len(), 32);
        let mut bad = o.clone();
        bad.sans = vec!["dns:web.other.example".parse().unwrap()];
        assert!(matches!(
            ca.issue(&bad).await,
            Err(PkiError::NotPermitted { .. })
        ));
        bad.sans = vec![
            "dns:web.internal.example".parse().unwrap(),
            "uri:spiffe://other.org/web".parse().unwrap(),
        ];
        assert!(matches!(
            ca.issue(&bad).await,
            Err(PkiError::OutsideTrustDomain { .. })
        ));
        let mut long = o.clone();
        long.ttl = Duration::from_secs(6 * 365 * 86_400);
        assert!(matches!(
            ca.issue(&long).await,
            Err(PkiError::TtlBeyondIntermediate { .. })
        ));
        // A CSR made by rcgen, requesting names the profile does not give.
        let k = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["evil.example".to_string()])
            .unwrap()
            .serialize_request(&k)
            .unwrap();
        let signed = ca.sign_csr(csr.der(), &o).await.unwrap();
        assert!(signed.key_pem.is_none());
        let (_, c) = x509_parser::parse_x509_certificate(&signed.leaf_der).unwrap();
        let sans = c.subject_alternative_name().unwrap().unwrap();
        assert!(!format!("{:?}", sans.value).contains("evil"));
        let mut tampered = csr.der().to_vec();
        let n = tampered.len();
        tampered[n - 5] ^= 0x55;
        assert!(ca.sign_csr(&tampered, &o).await.is_err());

        let out = ca
            .revoke(
                &issued.serial_hex.to_uppercase(),
                RevocationReason::KeyCompromise,
            )
            .await
            .unwrap();
        assert!(matches!(out, RevokeOutcome::Revoked(_)));
        let crl1 = ca.crl(Duration::from_secs(3600)).await.unwrap();
        let crl2 = ca.crl(Duration::from_secs(3600)).await.unwrap();
        let (_, c1) = x509_parser::parse_x509_crl(&crl1).unwrap();
        let (_, c2) = x509_parser::parse_x509_crl(&crl2).unwrap();
        assert!(c2.crl_number().unwrap() > c1.crl_number().unwrap());
        assert_eq!(c1.iter_revoked_certificates().count(), 1);
        assert_eq!(ca.list(&ListFilter::default()).await.unwrap().len(), 2);
    }
}
