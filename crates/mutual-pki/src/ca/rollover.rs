//! Root rollover (docs/lifecycle.md), three steps, each one command, the phase kept in
//! `trust.toml` so that an unsafe step is refused:
//!
//! 1. `ca rotate-root` (phase `published`): a new root, cross-signed both ways (the new root by
//!    the old, the old by the new), and a trust bundle with both roots under a new version.
//!    Nothing is issued from the new root yet: every party must fetch the bundle first.
//! 2. `ca rotate-root --activate` (phase `active`), refused until the bundle has been published
//!    for `--min-overlap`: a new default intermediate under the new root, signed by the old root
//!    too; chains carry both, so parties still trusting only the old root verify.
//! 3. `ca retire-root` (phase `retired`), refused while a certificate from an intermediate of the
//!    old root is still valid: the bundle holds the new root only, `root.pem` / `root.key`
//!    become the new root's (the old ones are kept in `roots/`), chains stop carrying the old
//!    root's signature.
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyUsagePurpose, SerialNumber};
use rustls_pki_types::CertificateDer;

use super::issuers::{self, root_files, IssuerSet, RotateOptions, Rotated, ROOTS_DIR};
use super::key::{CaKey, KeyStorage};
use super::trust::{read_state, write_state, TrustState, TRUST_BUNDLE};
use super::{first_cert_der, io, later, now, random_serial, read_config, ROOT_CERT, ROOT_KEY};
use crate::keys::{self, StagedFile};
use crate::{rfc3339, PkiError};

fn rfc3339_unix(t: i64) -> String {
    rfc3339(time::OffsetDateTime::from_unix_timestamp(t).unwrap_or_else(|_| now()))
}

fn refused(detail: String) -> PkiError {
    PkiError::RolloverRefused { detail }
}

/// What `ca rotate-root` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RootRotated {
    pub new_root: String,
    pub certificate: PathBuf,
    pub sha256: String,
    pub bundle_version: u64,
    /// When `--activate` will be accepted (RFC 3339).
    pub activate_after: String,
}

/// Step 1: a new root, both cross certificates, and the bundle with both roots. The new root's
/// key is made where `key_storage` says: `roots/ID.key` encrypted with `password`, or in a
/// PKCS#11 token (an existing key the URI names, else a new one), recorded in `trust.toml`.
pub fn rotate_root(
    dir: &Path,
    password: &[u8],
    min_overlap: Duration,
    key_storage: &KeyStorage,
) -> Result<RootRotated, PkiError> {
    let config = read_config(dir)?;
    let mut state = read_state(dir)?;
    if let Some(p) = state.phase.as_deref().filter(|p| *p != "retired") {
        return Err(refused(format!(
            "a root rollover is under way (phase {p}): finish it with `mutual ca rotate-root \
             --activate` then `mutual ca retire-root` first"
        )));
    }
    let old_path = dir.join(ROOT_CERT);
    let old_pem = std::fs::read_to_string(&old_path).map_err(io(&old_path))?;
    let old_der = first_cert_der(&old_pem, &old_path)?;
    let old_key = issuers::root_key(dir, &config, &old_der, password)?;
    let old_issuer =
        rcgen::Issuer::from_ca_cert_der(&CertificateDer::from(old_der.as_slice()), &old_key)?;

    let n = (2..)
        .find(|n| !root_files(dir, &format!("root-{n}")).0.exists())
        .unwrap_or(2);
    let id = format!("root-{n}");
    let t0 = now();
    let new_key = CaKey::create(key_storage, config.key_type)?;
    // A token URI may name a key that exists: never the current root's own.
    {
        use rcgen::PublicKeyData;
        if new_key.subject_public_key_info() == old_key.subject_public_key_info() {
            return Err(refused(
                "the key named for the new root is the current root's key: a rollover needs a \
                 new key (name another object in --pkcs11-uri)"
                    .into(),
            ));
        }
    }
    let mut rp = CertificateParams::default();
    rp.distinguished_name = super::dn(&format!("{} Root {n}", config.name), &config.name);
    // pathlen 2: room for the old root cross-signed by this one above an old intermediate.
    rp.is_ca = IsCa::Ca(BasicConstraints::Constrained(2));
    rp.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    rp.not_before = t0 - time::Duration::hours(1);
    rp.not_after = later(t0, Duration::from_secs(3650 * 86_400), "root validity")?;
    rp.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    let new_root = rp.self_signed(&new_key)?;
    // The new root vouched for by the old one: a certificate for a party that wants to check
    // the new root against the one it trusts. It cannot sit in a chain (the old root's pathlen
    // 1 leaves no room); chains carry the new intermediate signed by the old root instead.
    let (_, old_not_after) = super::validity(&old_der, &old_path)?;
    let mut cp = rp.clone();
    cp.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    cp.not_after = cp.not_after.min(old_not_after);
    cp.use_authority_key_identifier_extension = true;
    let new_by_old = cp.signed_by(&new_key, &old_issuer)?;
    // And the old root vouched for by the new one: in a chain above an old intermediate, it
    // lets parties that keep only the new root verify certificates from before the rollover.
    let new_issuer = rcgen::Issuer::from_params(&rp, &new_key);
    let (_, old_cert) =
        x509_parser::parse_x509_certificate(&old_der).map_err(|_| PkiError::Config {
            path: old_path.clone(),
            detail: "not a valid X.509 certificate".into(),
        })?;
    let attr = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let old_cn = attr(&mut old_cert.subject().iter_common_name());
    let old_o = attr(&mut old_cert.subject().iter_organization());
    let mut op = CertificateParams::default();
    op.distinguished_name = super::dn(&old_cn, &old_o);
    op.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    op.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    op.not_before = t0 - time::Duration::hours(1);
    op.not_after = old_not_after.min(rp.not_after);
    op.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    op.use_authority_key_identifier_extension = true;
    let old_by_new = op.signed_by(&old_key, &new_issuer)?;

    let rdir = dir.join(ROOTS_DIR);
    if !rdir.exists() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&rdir).map_err(io(&rdir))?;
        std::fs::set_permissions(&rdir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&rdir))?;
    }
    let (cert_path, key_path) = root_files(dir, &id);
    let mut files = Vec::new();
    if let Some(der) = new_key.file_der() {
        let key_pem = keys::encrypt_pkcs8_pem(der, password)?;
        files.push((key_path.clone(), key_pem.as_bytes().to_vec(), 0o600));
    }
    files.extend([
        (cert_path.clone(), new_root.pem().into_bytes(), 0o644),
        (
            rdir.join(format!("{id}-by-old-root.pem")),
            new_by_old.pem().into_bytes(),
            0o644,
        ),
        (
            rdir.join(format!("root-1-by-{id}.pem")),
            old_by_new.pem().into_bytes(),
            0o644,
        ),
    ]);
    let mut written = Vec::new();
    for (p, data, mode) in &files {
        if let Err(e) = StagedFile::write(p, data, *mode).and_then(|s| s.commit(false)) {
            for w in &written {
                let _ = std::fs::remove_file(w);
            }
            return Err(e);
        }
        written.push(p.clone());
    }
    let bundle = format!(
        "{}{}",
        old_pem.trim_end_matches('\n').to_string() + "\n",
        new_root.pem()
    );
    keys::write_atomic(&dir.join(TRUST_BUNDLE), bundle.as_bytes(), 0o644, true)?;
    state.version = state.version.max(1) + 1;
    state.published_at = t0.unix_timestamp();
    state.phase = Some("published".into());
    state.new_root = Some(id.clone());
    state.new_root_key = match key_storage {
        KeyStorage::Pkcs11(r) => Some(r.clone()),
        KeyStorage::File => None,
    };
    state.min_overlap_secs = min_overlap.as_secs();
    write_state(dir, &state)?;
    Ok(RootRotated {
        new_root: id,
        certificate: cert_path,
        sha256: super::sha256_hex(new_root.der()),
        bundle_version: state.version,
        activate_after: rfc3339(
            t0 + time::Duration::seconds(
                i64::try_from(min_overlap.as_secs()).unwrap_or(i64::MAX / 2),
            ),
        ),
    })
}

/// Step 2: issue from the new root, once its bundle has been out for the minimum overlap. The
/// new intermediate's key is made where `key_storage` says (as `rotate-intermediate`).
pub fn activate_root(
    dir: &Path,
    password: &[u8],
    key_storage: &KeyStorage,
) -> Result<Rotated, PkiError> {
    let mut state = read_state(dir)?;
    let id = match (state.phase.as_deref(), &state.new_root) {
        (Some("published"), Some(id)) => id.clone(),
        (p, _) => {
            return Err(refused(format!(
                "no root rollover to activate (phase {}): start one with `mutual ca rotate-root`",
                p.unwrap_or("none")
            )))
        }
    };
    let out = i64::try_from(state.min_overlap_secs).unwrap_or(i64::MAX / 2);
    let since = now().unix_timestamp() - state.published_at;
    if since < out {
        return Err(refused(format!(
            "the trust bundle with {id} (version {}) was published {since} s ago and --min-overlap \
             is {out} s: parties that have not fetched it yet would refuse certificates from the \
             new root; try again after {}",
            state.version,
            rfc3339_unix(state.published_at + out)
        )));
    }
    let r = issuers::rotate_intermediate(
        dir,
        password,
        &RotateOptions {
            root: Some(id),
            key_storage: key_storage.clone(),
            ..Default::default()
        },
    )?;
    state.phase = Some("active".into());
    write_state(dir, &state)?;
    Ok(r)
}

/// What `ca retire-root` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RootRetired {
    pub root: String,
    pub bundle_version: u64,
    /// Intermediates of the old root dropped from `issuers.toml`.
    pub dropped_issuers: Vec<String>,
}

/// Step 3: the new root becomes the only one.
pub async fn retire_root(
    dir: &Path,
    password: &[u8],
    store: &mutual_store::Store,
) -> Result<RootRetired, PkiError> {
    let mut state = read_state(dir)?;
    let id = match (state.phase.as_deref(), &state.new_root) {
        (Some("active"), Some(id)) => id.clone(),
        (p, _) => {
            return Err(refused(format!(
                "the old root can be retired only after `mutual ca rotate-root --activate` \
                 (phase now: {})",
                p.unwrap_or("none")
            )))
        }
    };
    let config = read_config(dir)?;
    let set = IssuerSet::load(dir, &config, password)?;
    let t = now().unix_timestamp();
    let mut dropped = Vec::new();
    for i in set.all() {
        if i.root.as_deref() == Some(id.as_str()) {
            continue;
        }
        if let Some(last) = store.issuer_last_expiry(&i.id).await? {
            if last > t {
                return Err(refused(format!(
                    "{} (under the old root) signed certificates valid until {}: parties that \
                     drop the old root would refuse them; retire it after that",
                    i.id,
                    rfc3339_unix(last)
                )));
            }
        }
        dropped.push(i.id.clone());
    }
    // Keep the old root's files, then make the new root the CA's root.
    let (new_cert, new_key) = root_files(dir, &id);
    let v = state.version;
    for (from, to) in [
        (
            dir.join(ROOT_CERT),
            dir.join(ROOTS_DIR).join(format!("retired-v{v}.pem")),
        ),
        (
            dir.join(ROOT_KEY),
            dir.join(ROOTS_DIR).join(format!("retired-v{v}.key")),
        ),
    ] {
        if from.exists() {
            std::fs::copy(&from, &to).map_err(io(&to))?;
        }
    }
    let pem = std::fs::read(&new_cert).map_err(io(&new_cert))?;
    let new_storage = match &state.new_root_key {
        Some(r) => KeyStorage::Pkcs11(r.clone()),
        None => KeyStorage::File,
    };
    if new_storage.is_file() {
        let key = std::fs::read(&new_key).map_err(io(&new_key))?;
        keys::write_atomic(&dir.join(ROOT_KEY), &key, 0o600, true)?;
    } else {
        // The old root's key file (kept in roots/ above) must not pass for the new root's.
        match std::fs::remove_file(dir.join(ROOT_KEY)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io(&dir.join(ROOT_KEY))(e))
            }
            _ => {}
        }
    }
    keys::write_atomic(&dir.join(ROOT_CERT), &pem, 0o644, true)?;
    if new_storage != config.root_key_storage {
        super::store_cfg::record_root_key_storage(dir, &new_storage)?;
    }
    keys::write_atomic(&dir.join(TRUST_BUNDLE), &pem, 0o644, true)?;
    // Chains stop carrying the old root's signatures on the new intermediates.
    for i in set.all() {
        let cross = issuers::cross_file(dir, &i.id);
        if cross.exists() {
            let to = cross.with_extension("pem.retired");
            std::fs::rename(&cross, &to).map_err(io(&cross))?;
        }
    }
    issuers::drop_issuers(dir, &config, password, &dropped)?;
    state = TrustState {
        version: state.version + 1,
        published_at: t,
        phase: Some("retired".into()),
        new_root: Some(id.clone()),
        new_root_key: state.new_root_key.clone(),
        min_overlap_secs: state.min_overlap_secs,
    };
    write_state(dir, &state)?;
    Ok(RootRetired {
        root: id,
        bundle_version: state.version,
        dropped_issuers: dropped,
    })
}
