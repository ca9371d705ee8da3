//! `mutual ca rotate-intermediate` and `mutual ca issuers`: the CA's issuing intermediates over
//! its life (docs/lifecycle.md). The work is mutual_pki::ca::issuers; this is arguments and
//! printing.
use std::process::ExitCode;

use mutual_pki::ca::{issuers, IssuerState, KeysUsed, RotateOptions};
use mutual_pki::KeyType;

use crate::ca_args::{parse_duration, parse_key_type, DirArg, PasswordArg};
use crate::runtime::{runtime, with_store};

#[derive(clap::Args, Debug)]
pub struct RotateIntermediateArgs {
    #[command(flatten)]
    pub dir: DirArg,
    #[command(flatten)]
    pub password: PasswordArg,
    /// Key type of the new intermediate: ecdsa-p256, ecdsa-p384, ed25519, rsa-3072.
    /// [default: the current default issuer's]
    #[arg(long, value_parser = parse_key_type)]
    pub key_type: Option<KeyType>,
    /// Add the new intermediate beside the active ones instead of replacing them: the default
    /// stays, and a profile selects the new one with `cert issue --issuer ID|KEY-TYPE`.
    #[arg(long)]
    pub add: bool,
    /// Lifetime of the new intermediate (never past the root's).
    #[arg(long, default_value = "1825d", value_parser = parse_duration)]
    pub validity: std::time::Duration,
    /// Where the new intermediate's key goes: `--key-storage pkcs11 --pkcs11-uri ...` makes
    /// (or takes) it in a token and records the URI in issuers.toml; file (the default):
    /// issuers/ID.key encrypted with the CA password (docs/keys.md).
    #[command(flatten)]
    pub key_storage: crate::ca_args::KeyStorageArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct IssuersArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// Accepted for scripts written when the listing unlocked the CA; not read (no key is).
    #[arg(long, value_name = "FILE", hide = true)]
    pub password_file: Option<std::path::PathBuf>,
    /// Print the issuers as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn rotate_intermediate(a: RotateIntermediateArgs) -> anyhow::Result<ExitCode> {
    let dir = a.dir.resolve()?;
    let key_storage = a.key_storage.resolve()?;
    let password = a.password.get_for(
        &dir,
        KeysUsed {
            issuers: true,
            root: true,
            new_file_key: key_storage.is_file(),
            ..Default::default()
        },
    )?;
    let opts = RotateOptions {
        key_type: a.key_type,
        add: a.add,
        validity: a.validity,
        root: None,
        key_storage,
    };
    let r = issuers::rotate_intermediate(&dir, password.as_bytes(), &opts)?;
    let config = mutual_pki::ca::read_config(&dir)?;
    crate::cmd_lint::check_own_intermediate(&r.certificate, &config)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "New intermediate {} ({}, {}) under the same root, until {}",
        r.id,
        r.key_type.as_str(),
        r.subject,
        r.not_after
    );
    println!("  certificate: {}", r.certificate.display());
    if r.default == r.id {
        println!(
            "  new certificates come from {} now (every replica, at its next request)",
            r.id
        );
    } else {
        println!(
            "  the default stays {}; select {} with `cert issue --issuer {}`",
            r.default, r.id, r.id
        );
    }
    for old in &r.retired {
        println!("  {old} is retiring: it signs only its CRL (/v1/crl/{old}) until its last certificate expires");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list(a: IssuersArgs) -> anyhow::Result<ExitCode> {
    let dir = a.dir.resolve()?;
    // A listing: no key is unlocked (nor a password asked for), as for `cert list`.
    let config = mutual_pki::ca::read_config(&dir)?;
    let issuers = issuers::view(&dir, &config)?;
    let rt = runtime()?;
    let rows = rt.block_on(async {
        let store = mutual_pki::ca::open_store(&dir).await?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut rows = Vec::new();
        for i in &issuers {
            let last = store.issuer_last_expiry(&i.id).await?;
            // A retiring issuer whose last certificate expired has nothing left to sign for.
            let state = match (i.state, last) {
                (IssuerState::Retiring, Some(t)) if t <= now => "retired",
                (IssuerState::Retiring, None) => "retired",
                (s, _) => s.as_str(),
            };
            rows.push(serde_json::json!({
                "id": i.id,
                "key_type": i.key_type.as_str(),
                "state": state,
                "default": i.default,
                "subject": i.subject,
                "not_after": crate::json::rfc3339(i.not_after),
                "last_certificate_expires": last.map(crate::json::rfc3339),
                "certificate": i.certificate,
            }));
        }
        store.close().await;
        Ok::<_, anyhow::Error>(rows)
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<8}  {:<10}  {:<8}  {:<7}  {:<20}  {:<20}  SUBJECT",
        "ID", "KEY", "STATE", "DEFAULT", "NOT AFTER", "LAST CERT EXPIRES"
    );
    for r in &rows {
        let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
        println!(
            "{:<8}  {:<10}  {:<8}  {:<7}  {:<20}  {:<20}  {}",
            s("id"),
            s("key_type"),
            s("state"),
            if r["default"].as_bool() == Some(true) {
                "yes"
            } else {
                ""
            },
            s("not_after"),
            s("last_certificate_expires"),
            s("subject")
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct RotateRootArgs {
    #[command(flatten)]
    pub dir: DirArg,
    #[command(flatten)]
    pub password: PasswordArg,
    /// How long the bundle with both roots must be published (GET /v1/roots) before
    /// --activate may issue from the new root: longer than the slowest party's refresh
    /// (renewal tasks check every 5 min and before each renewal).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub min_overlap: std::time::Duration,
    /// Step 2: issue from the new root (a new default intermediate under it; chains carry the
    /// new root cross-signed by the old). Refused before --min-overlap has passed.
    #[arg(long)]
    pub activate: bool,
    /// Where the new key goes: the new root's (step 1) or, with --activate, the new
    /// intermediate's. `--key-storage pkcs11 --pkcs11-uri 'pkcs11:token=LABEL;object=root-2'`
    /// makes (or takes) it in a token, recorded in trust.toml (root) or issuers.toml
    /// (intermediate); file (the default): roots/ID.key or issuers/ID.key, encrypted with the
    /// CA password (docs/keys.md).
    #[command(flatten)]
    pub key_storage: crate::ca_args::KeyStorageArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct RetireRootArgs {
    #[command(flatten)]
    pub dir: DirArg,
    #[command(flatten)]
    pub password: PasswordArg,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn rotate_root(a: RotateRootArgs) -> anyhow::Result<ExitCode> {
    use mutual_pki::ca::rollover;
    let dir = a.dir.resolve()?;
    let key_storage = a.key_storage.resolve()?;
    // Step 1 signs with the current root; step 2 with both roots, and opens the issuers.
    let password = a.password.get_for(
        &dir,
        KeysUsed {
            issuers: a.activate,
            root: true,
            new_root: a.activate,
            new_file_key: key_storage.is_file(),
            ..Default::default()
        },
    )?;
    if a.activate {
        let r = rollover::activate_root(&dir, password.as_bytes(), &key_storage)?;
        let config = mutual_pki::ca::read_config(&dir)?;
        crate::cmd_lint::check_own_intermediate(&r.certificate, &config)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            println!(
                "Issuing from the new root: intermediate {} ({}), until {}",
                r.id, r.subject, r.not_after
            );
            println!(
                "  chains also carry {} signed by the old root until `mutual ca retire-root`",
                r.id
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let r = rollover::rotate_root(&dir, password.as_bytes(), a.min_overlap, &key_storage)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "New root {} (sha256 {}), cross-signed both ways: {}",
        r.new_root,
        r.sha256,
        r.certificate.display()
    );
    println!(
        "  trust bundle version {} (both roots) is published at /v1/roots now",
        r.bundle_version
    );
    println!(
        "  next: `mutual ca rotate-root --activate`, accepted after {}",
        r.activate_after
    );
    Ok(ExitCode::SUCCESS)
}

pub fn retire_root(a: RetireRootArgs) -> anyhow::Result<ExitCode> {
    let dir = a.dir.resolve()?;
    let password = a
        .password
        .get_for(&dir, mutual_pki::ca::KeysUsed::ISSUERS)?;
    let r = with_store(&dir, async |store| {
        Ok(mutual_pki::ca::rollover::retire_root(&dir, password.as_bytes(), store).await?)
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Retired the old root: {} is root.pem now; trust bundle version {} holds it alone",
        r.root, r.bundle_version
    );
    if !r.dropped_issuers.is_empty() {
        println!(
            "  intermediates of the old root dropped: {}",
            r.dropped_issuers.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
