//! `mutual ca init`: a new root and issuing intermediate, their encrypted keys, the config and
//! the inventory, written so that a failure leaves the directory as it was.
use std::path::{Path, PathBuf};
use std::time::Duration;

use mutual_store::{Store, StoreUrl};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyUsagePurpose, SerialNumber};

use super::issuers::{intermediate_params, Issuer, IssuerSet, IssuerState, FIRST_ISSUER};
use super::key::{key_type_of, CaKey, KeyStorage};
use super::{
    io, later, now, open_url, random_serial, Ca, CaConfig, Defaults, CONFIG, INTERMEDIATE_CERT,
    INTERMEDIATE_KEY, INVENTORY, ROOT_CERT, ROOT_KEY,
};
use crate::keys::{self, StagedFile};
use crate::spiffe::validate_trust_domain;
use crate::{KeyType, PkiError};

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
    /// OCSP responder URL for the AIA of every certificate (recorded in the config).
    pub ocsp_url: Option<String>,
    /// Where the intermediate key is made and kept: a file, or a PKCS#11 token (an existing
    /// key the URI names is used; otherwise one is generated inside the token).
    pub key_storage: KeyStorage,
    /// Where the root key is made and kept: `root.key` encrypted with the CA password, or a
    /// PKCS#11 token (`ca init --pkcs11-root-uri`).
    pub root_key_storage: KeyStorage,
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
            ocsp_url: None,
            key_storage: KeyStorage::File,
            root_key_storage: KeyStorage::File,
        }
    }
}

impl Ca {
    /// Creates a root and an intermediate in `dir`, their keys encrypted with `password` (or in
    /// PKCS#11 tokens), plus the inventory and the config file. With both keys in tokens no
    /// password is used and `password` may be empty: the provisioner key then goes into the
    /// intermediate's token too. Refuses (changing nothing) if any CA file already exists.
    pub async fn init(dir: &Path, opts: &InitOptions, password: &[u8]) -> Result<Ca, PkiError> {
        if password.is_empty() && (opts.key_storage.is_file() || opts.root_key_storage.is_file()) {
            return Err(PkiError::EmptyPassword);
        }
        if let Some(u) = &opts.ocsp_url {
            super::ocsp::check_url(u)?;
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
            check_permitted_dns_entry(&p).map_err(|detail| PkiError::InvalidName {
                name: p.clone(),
                detail: format!("--permitted-dns: {detail}"),
            })?;
            permitted.push(p);
        }

        let t0 = now();
        let root_key = CaKey::create(&opts.root_key_storage, opts.key_type)?;
        let mut rp = CertificateParams::default();
        rp.distinguished_name = super::dn(&format!("{name} Root"), name);
        rp.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        rp.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        rp.not_before = t0 - time::Duration::hours(1);
        rp.not_after = later(t0, opts.root_validity, "root validity")?;
        rp.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        let root = rp.self_signed(&root_key)?;

        let int_key = CaKey::create(&opts.key_storage, opts.key_type)?;
        // An existing token key decides the type (it is what will sign).
        let key_type = match int_key.token_key() {
            Some(k) => key_type_of(k)?,
            None => opts.key_type,
        };
        let ip = intermediate_params(
            format!("{name} Intermediate"),
            name,
            opts.trust_domain.as_deref(),
            &permitted,
            t0 - time::Duration::hours(1),
            later(t0, opts.intermediate_validity, "intermediate validity")?.min(rp.not_after),
        )?;
        let root_issuer = rcgen::Issuer::from_params(&rp, &root_key);
        let int = ip.signed_by(&int_key, &root_issuer)?;

        let config = CaConfig {
            name: name.to_string(),
            key_type,
            trust_domain: opts.trust_domain.clone(),
            permitted_dns: permitted,
            defaults: Defaults {
                ttl: format!("{}s", opts.default_ttl.as_secs()),
                key_type: KeyType::EcdsaP256,
            },
            store: opts.store.clone(),
            store_password_file: opts.store_password_file.clone(),
            ocsp_url: opts.ocsp_url.clone(),
            key_storage: opts.key_storage.clone(),
            root_key_storage: opts.root_key_storage.clone(),
            // Beside the intermediate, which every online CA uses anyway: a CA that keeps that
            // key in a token keeps its token-signing key there too (made at first use).
            provisioner_key_storage: match &opts.key_storage {
                KeyStorage::File => KeyStorage::File,
                KeyStorage::Pkcs11(r) => KeyStorage::Pkcs11(r.sibling(super::PROVISIONER_OBJECT)?),
            },
            acme: None,
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

        let root_key_pem = match root_key.file_der() {
            Some(der) => Some(keys::encrypt_pkcs8_pem(der, password)?),
            None => None,
        };
        let int_key_pem = match int_key.file_der() {
            Some(der) => Some(keys::encrypt_pkcs8_pem(der, password)?),
            None => None,
        };

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
        let mut staged = Vec::new();
        if let Some(pem) = &root_key_pem {
            staged.push(StagedFile::write(
                &dir.join(ROOT_KEY),
                pem.as_bytes(),
                0o600,
            )?);
        }
        if let Some(pem) = &int_key_pem {
            staged.push(StagedFile::write(
                &dir.join(INTERMEDIATE_KEY),
                pem.as_bytes(),
                0o600,
            )?);
        }
        staged.extend([
            StagedFile::write(&dir.join(ROOT_CERT), root.pem().as_bytes(), 0o644)?,
            StagedFile::write(&dir.join(INTERMEDIATE_CERT), int.pem().as_bytes(), 0o644)?,
            StagedFile::write(&dir.join(CONFIG), config_text.as_bytes(), 0o644)?,
        ]);
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
        let first = Issuer::new(
            FIRST_ISSUER.to_string(),
            key_type,
            IssuerState::Active,
            int.pem(),
            int.der().to_vec(),
            int_key,
            &dir.join(INTERMEDIATE_CERT),
            &dir.join(INTERMEDIATE_KEY),
        )?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            config,
            root_pem: root.pem(),
            root_der: root.der().to_vec(),
            issuers: std::sync::RwLock::new(std::sync::Arc::new(IssuerSet::single(first))),
            password: pkcs8::der::zeroize::Zeroizing::new(password.to_vec()),
            bad_manifest: std::sync::Mutex::new(None),
            store,
            group: std::sync::OnceLock::new(),
        })
    }
}

/// One `permitted_dns` name constraint (`ca init --permitted-dns`, or as written in
/// mutual-ca.toml): a DNS subtree, with the leading-dot form for "subdomains only".
pub(crate) fn check_permitted_dns_entry(p: &str) -> Result<(), String> {
    // A constraint is a subtree, not a pattern (RFC 5280 4.2.1.10): the lint would call the
    // intermediate a bug after the CA had been made.
    if p.contains('*') {
        return Err(
            "a name constraint has no wildcard: `.example.com` permits the names under \
                    example.com, `example.com` also example.com itself"
                .into(),
        );
    }
    crate::validate_dns_name(p.strip_prefix('.').unwrap_or(p))
}
