//! The CA: a self-signed root that signs an issuing intermediate (pathlen 0) at `init`, after
//! which only intermediates are used, for leaves, CSRs and CRLs (`issuers.rs`: several of them
//! over the CA's life, one default). The root key can therefore live offline; only `init`,
//! `ca crl --root` and the rotations (`issuers.rs`, `rollover.rs`) read it.
//!
//! Every certificate goes through one transaction, [`Ca::issue`] (in `issue.rs`): check the
//! request against the profile, sign, record the inventory row (spending the request's one-time
//! token in the same database transaction), then write the files if asked, removing the row and
//! the files again if any step fails. `cert issue`, `demo`, the online CA's `/v1/sign` and
//! `/v1/renew` and its own server certificate all call it.
//!
//! The profile is the CA's, never the requester's: a CSR contributes only its public key; names,
//! usages, lifetime and extensions come from [`IssueOptions`] and the CA configuration, and are
//! checked against the trust domain and the permitted DNS names before anything is signed.
//!
//! The parts, by job: `init.rs` creates a CA, `profile.rs` decides what may be issued,
//! `csr.rs` reads certificate requests, `issue.rs` is the transaction, `crl.rs` signs and stores
//! CRLs, `issuers.rs` holds the intermediates, `trust.rs` the published trust bundle,
//! `rollover.rs` the root rollover, `store_cfg.rs` finds the inventory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::{Arc, RwLock};

use pkcs8::der::zeroize::Zeroizing;
use time::OffsetDateTime;

use mutual_store::{Inventory, ListFilter, RevokeOutcome, Store, StoreUrl};

mod batch;
mod crl;
mod csr;
mod init;
mod issue;
pub mod issuers;
mod key;
pub mod ocsp;
mod profile;
mod renew;
pub mod rollover;
mod store_cfg;
pub mod trust;
mod unlock;

pub use batch::{BatchDir, BatchRow, Resumed};
pub use crl::CurrentCrl;
pub use csr::{csr_sans, Csr};
pub use init::InitOptions;
pub use issue::{recover_interrupted, IssueRequest, Issued, KeySource, OutputFiles, Recovery};
pub use key::{token_csr, token_kind, CaKey, KeyStorage};

/// A handle on one issuer's key that outlives a rotation re-read of the issuer set.
pub struct CaKeyRef(Arc<Issuer>);

impl std::ops::Deref for CaKeyRef {
    type Target = CaKey;
    fn deref(&self) -> &CaKey {
        self.0.key()
    }
}
pub use issuers::{Issuer, IssuerSet, IssuerState, RotateOptions, Rotated};
pub use profile::IssueOptions;
pub use renew::{check_renew_grace, renewable, RenewRefusal, Renewal, MAX_RENEW_GRACE};
pub use store_cfg::{
    open_url, read_config, record_store, store_password, store_url, STORE_PASSWORD_ENV,
};
pub use trust::{trust_bundle, TrustBundle};
pub use unlock::{
    jwt_svid_storage, needs_password, provisioner_storage, KeysUsed, JWT_SVID_KEY, JWT_SVID_OBJECT,
    PROVISIONER_KEY, PROVISIONER_OBJECT,
};

use crate::{normalize_serial, CertRecord, KeyType, PkiError, RevocationReason};

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

/// `mutual-ca.toml`: what the CA is and how it issues by default. Operators edit it (docs:
/// `ocsp_url`, `[key_storage]`, `[acme]`), so an unknown key is an error rather than a setting
/// silently not applied (a misspelt `permitted_dns` would otherwise issue any name).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// OCSP responder URL put in every certificate's AIA unless the request names its own
    /// (`ca init --ocsp-url`, docs/ocsp.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocsp_url: Option<String>,
    /// Where the intermediate key is: `intermediate.key` (absent or `kind = "file"`) or a
    /// PKCS#11 token (`kind = "pkcs11"`, `module`, `uri`, `pin_file`).
    #[serde(default)]
    pub key_storage: KeyStorage,
    /// Where the root key is: `root.key` (absent) or a PKCS#11 token (`ca init
    /// --pkcs11-root-uri`), used by `ca crl --root`, `rotate-intermediate` and `rotate-root`.
    #[serde(default, skip_serializing_if = "KeyStorage::is_file")]
    pub root_key_storage: KeyStorage,
    /// Where the provisioner key (it signs enrollment tokens) is made and kept when
    /// `provisioner.key` does not exist: `ca init` puts it in the intermediate's token when
    /// that key is in one, so that a CA with every key in tokens needs no password.
    #[serde(default, skip_serializing_if = "KeyStorage::is_file")]
    pub provisioner_key_storage: KeyStorage,
    /// The `[acme]` section: read and checked by `ca serve` (the binary's cmd_acme, with the
    /// `--acme-*` flags it mirrors), carried here only so that it is a known key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<toml::Table>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Leaf lifetime, e.g. "24h".
    pub ttl: String,
    pub key_type: KeyType,
}

/// An unlocked CA: the intermediates' keys are in memory ([`IssuerSet`]).
pub struct Ca {
    dir: PathBuf,
    config: CaConfig,
    root_pem: String,
    root_der: Vec<u8>,
    /// The issuing intermediates, re-read when `issuers.toml` changes (another replica rotated).
    issuers: RwLock<Arc<IssuerSet>>,
    /// Kept to unlock an intermediate another replica added; never logged.
    password: Zeroizing<Vec<u8>>,
    /// An `issuers.toml` text that failed to load, not retried until it changes (each try
    /// decrypts keys: a bad file must not cost that on every request).
    bad_manifest: std::sync::Mutex<Option<Option<String>>>,
    store: Store,
    /// Records issuance rows in shared transactions (one commit for concurrent issuances);
    /// started on the first issuance, in that runtime.
    group: std::sync::OnceLock<mutual_store::GroupCommit>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

fn dn(cn: &str, org: &str) -> rcgen::DistinguishedName {
    let mut d = rcgen::DistinguishedName::new();
    d.push(rcgen::DnType::OrganizationName, org);
    d.push(rcgen::DnType::CommonName, cn);
    d
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

/// `ttl`, cut so that a certificate issued now ends no later than `not_after` (Unix
/// seconds, its issuer's end); at least one second. One second is kept in hand for the
/// moments between this and the issuance's own check (which counts whole seconds).
fn ttl_until(ttl: Duration, not_after: i64) -> Duration {
    let left = not_after - now().unix_timestamp() - 1;
    ttl.min(Duration::from_secs(u64::try_from(left).unwrap_or(0).max(1)))
}

/// Why a lifetime `ttl`, given by `what` (`--ttl-cert`, "certificate lifetime") for `thing`
/// made now ("a certificate", "a CRL"), cannot be: it would outlive the intermediate that ends
/// at `ends` (Unix seconds). `None` when it fits. The one sentence of the commands and the
/// console that refuse such a setting where it is given.
pub fn outliving(ttl: Duration, ends: i64, what: &str, thing: &str) -> Option<String> {
    let left = ends.saturating_sub(now().unix_timestamp());
    if i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX) <= left {
        return None;
    }
    Some(format!(
        "{what} {}: {thing} cannot outlive the intermediate that issues it (it ends {})",
        mutual_policy::human::duration(ttl.as_secs()),
        mutual_policy::human::rfc3339(ends)
    ))
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

/// 128 random bits, positive, first byte non-zero so the hex form has no leading zero byte and
/// matches how openssl prints it.
fn random_serial() -> Vec<u8> {
    let mut b: [u8; 16] = rand::random();
    if b[0] == 0 {
        b[0] = 1;
    }
    b.to_vec()
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
        need(INTERMEDIATE_CERT)?;
        let config = read_config(dir)?;
        // The intermediate keys (intermediate.key unless it is in a token): IssuerSet::load.
        let root_pem = std::fs::read_to_string(&root_path).map_err(io(&root_path))?;
        let root_der = first_cert_der(&root_pem, &root_path)?;
        let issuers = IssuerSet::load(dir, &config, password)?;
        let store = store_cfg::open_configured(dir, &config).await?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            config,
            root_pem,
            root_der,
            issuers: RwLock::new(Arc::new(issuers)),
            password: Zeroizing::new(password.to_vec()),
            bad_manifest: std::sync::Mutex::new(None),
            store,
            group: std::sync::OnceLock::new(),
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

    /// The group committer that records issuances (mutual_store's group.rs), started on the
    /// current tokio runtime at the first call.
    pub fn group_commit(&self) -> &mutual_store::GroupCommit {
        self.group
            .get_or_init(|| mutual_store::GroupCommit::start(self.store.clone()))
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The default issuer's certificate, PEM.
    pub fn intermediate_pem(&self) -> String {
        self.issuers().default_issuer().pem().to_string()
    }

    /// The default issuer's signing key (a file key in memory, or a token key).
    pub fn intermediate_key(&self) -> CaKeyRef {
        CaKeyRef(self.issuers().default_issuer().clone())
    }

    /// The issuing intermediates as they are now: re-read from the CA directory when
    /// `issuers.toml` changed since they were loaded (a rotation by `mutual ca
    /// rotate-intermediate` or another replica). A manifest that cannot be loaded keeps the
    /// set in use, and is not tried again until it changes: issuing goes on.
    pub fn issuers(&self) -> Arc<IssuerSet> {
        let cur = self
            .issuers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Ok(text) = issuers::read_manifest(&self.dir) else {
            return cur;
        };
        if text.as_deref() == cur.manifest() {
            return cur;
        }
        let mut bad = self.bad_manifest.lock().unwrap_or_else(|p| p.into_inner());
        if bad.as_ref() == Some(&text) {
            return cur;
        }
        match IssuerSet::load(&self.dir, &self.config, &self.password) {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                *self.issuers.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
                *bad = None;
                fresh
            }
            Err(_) => {
                *bad = Some(text);
                cur
            }
        }
    }

    /// SHA-256 of the root certificate's DER, `AB:CD:...` (as `openssl x509 -fingerprint
    /// -sha256` prints it); pin this when bootstrapping trust.
    pub fn root_fingerprint_sha256(&self) -> String {
        crate::colon_hex(&sha256_hex(&self.root_der))
    }

    /// The default intermediate's notAfter, Unix seconds (no leaf may outlive it).
    pub fn intermediate_not_after(&self) -> i64 {
        self.issuers().default_issuer().not_after_unix()
    }

    /// `ttl`, cut so that a certificate issued now ends no later than the default
    /// intermediate (at least one second). For the lifetimes the CA honours later, after they
    /// were set (a token's, an agent entry's, ACME's and EST's, a renewal's, its own server
    /// certificates): the intermediate's last days still issue, shorter. A lifetime given on
    /// the command line of `cert issue` is refused instead ([`PkiError::TtlBeyondIntermediate`]).
    pub fn ttl_within_intermediate(&self, ttl: Duration) -> Duration {
        ttl_until(ttl, self.intermediate_not_after())
    }

    /// [`Ca::ttl_within_intermediate`] for intermediate `id` (active or retiring; an unknown
    /// id leaves `d` as it is): what `ca serve` asks of a CRL's nextUpdate, so that an
    /// intermediate's last day still publishes its revocations.
    pub fn within_issuer(&self, id: &str, d: Duration) -> Duration {
        match self.issuers().get(id) {
            Some(i) => ttl_until(d, i.not_after_unix()),
            None => d,
        }
    }

    /// The default leaf TTL from the config.
    pub fn default_ttl(&self) -> Duration {
        crate::parse_duration(&self.config.defaults.ttl).unwrap_or(Duration::from_secs(86_400))
    }

    /// Revokes a certificate by serial (any of the forms [`normalize_serial`] accepts).
    pub async fn revoke(
        &self,
        serial: &str,
        reason: RevocationReason,
    ) -> Result<RevokeOutcome, PkiError> {
        revoke_in(&self.store, serial, reason).await
    }

    /// The inventory rows `filter` selects, soonest expiry first.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<CertRecord>, PkiError> {
        list_in(&self.store, filter).await
    }
}

/// [`Ca::list`] for a store opened without unlocking the CA ([`open_store`]).
pub async fn list_in(store: &Store, filter: &ListFilter) -> Result<Vec<CertRecord>, PkiError> {
    Ok(store.list(filter, now().unix_timestamp()).await?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::Usage;
    use rcgen::CertificateParams;
    use x509_parser::prelude::FromDer;

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
        for (suffix, some) in [
            ("internal.example", true),
            ("example", true),
            ("a.internal.example", true),
            (".a.internal.example", true),
            ("other.example", false),
            ("evilinternal.example", false),
        ] {
            assert_eq!(ca.config().permits_some_dns_under(suffix), some, "{suffix}");
        }
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
        let k = rcgen::KeyPair::generate().unwrap();
        let csr = CertificateParams::new(vec!["evil.example".to_string()])
            .unwrap()
            .serialize_request(&k)
            .unwrap();
        let csr_req = |der: &[u8]| IssueRequest {
            profile: o.clone(),
            key: KeySource::Csr(Csr::parse(der).unwrap()),
            token: None,
            output: None,
        };
        let signed = ca.issue(csr_req(csr.der())).await.unwrap();
        assert!(signed.key_pem.is_none());
        let (_, c) = x509_parser::parse_x509_certificate(&signed.leaf_der).unwrap();
        let sans = c.subject_alternative_name().unwrap().unwrap();
        assert!(!format!("{:?}", sans.value).contains("evil"));
        let mut tampered = csr.der().to_vec();
        let n = tampered.len();
        tampered[n - 5] ^= 0x55;
        assert!(matches!(
            ca.issue(csr_req(&tampered)).await,
            Err(PkiError::CsrBadSignature)
        ));
        let before = ca.list(&ListFilter::default()).await.unwrap().len();
        // A token pays once: the replay records nothing.
        let mut paid = csr_req(csr.der());
        paid.token = Some("jti-1".into());
        ca.issue(paid.clone()).await.unwrap();
        assert!(matches!(
            ca.issue(paid).await,
            Err(PkiError::Store(mutual_store::StoreError::TokenUsed { .. }))
        ));
        assert_eq!(
            ca.list(&ListFilter::default()).await.unwrap().len(),
            before + 1
        );

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
        // The last one signed is the stored current CRL, and it is current.
        let current = ca.store().current_crl().await.unwrap().unwrap();
        assert_eq!(current.der, crl2);
        let served = ca
            .refresh_crl(None, Duration::from_secs(3600))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&*served.der, crl2.as_slice());
        assert!(ca
            .refresh_crl(Some(&served), Duration::from_secs(3600))
            .await
            .unwrap()
            .is_none());
        // A revocation elsewhere (no CRL signed) makes it stale: the next refresh publishes.
        mutual_store::Inventory::revoke(ca.store(), &signed.serial_hex, "superseded", 1)
            .await
            .unwrap();
        let next = ca
            .refresh_crl(Some(&served), Duration::from_secs(3600))
            .await
            .unwrap()
            .unwrap();
        assert!(next.number > served.number);
        assert_eq!(next.entries, 2);
        let (_, c1) = x509_parser::parse_x509_crl(&crl1).unwrap();
        let (_, c2) = x509_parser::parse_x509_crl(&crl2).unwrap();
        assert!(c2.crl_number().unwrap() > c1.crl_number().unwrap());
        assert_eq!(c1.iter_revoked_certificates().count(), 1);
        assert_eq!(ca.list(&ListFilter::default()).await.unwrap().len(), 3);
    }
}
