//! `mutual ca ...`: create the CA (`init`), publish its revocation list (`crl`), move its
//! inventory (`migrate`); `ca serve` is in cmd_ca_serve.rs, the rotations in cmd_ca_rotate.rs, the shared `--dir` and password
//! arguments in ca_args.rs.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use mutual_pki::ca::{Ca, InitOptions, KeysUsed};
use mutual_pki::KeyType;

use crate::ca_args::{parse_duration, parse_key_type, DirArg, KeyStorageArgs, PasswordArg};
use crate::runtime::runtime;

#[derive(clap::Subcommand, Debug)]
pub enum CaCommand {
    /// Create a new root and issuing intermediate (pathlen 0), encrypted keys, an inventory and
    /// a config file in --dir. Refuses if a CA is already there.
    ///
    /// The root key is only used here: afterwards the intermediate signs certificates and CRLs,
    /// so root.key can be moved offline.
    Init(Box<InitArgs>),
    /// Write a CRL signed by the default intermediate (or --issuer ID), listing every revoked
    /// certificate it signed with its reason; each run gets a higher CRL number. With --root, the root's CRL instead (for
    /// relying parties that check the whole chain, e.g. nginx's ssl_crl).
    Crl(CrlArgs),
    /// Run the CA online over HTTPS: enrollment with one-time tokens, renewal and revocation
    /// over mTLS, roots and CRL (docs/ca-server.md).
    Serve(Box<crate::cmd_ca_serve::ServeArgs>),
    /// Copy the CA's SQLite inventory (certificates, revocations, CRL number, spent tokens,
    /// current CRL) into an empty PostgreSQL database, verify the row counts, then record the
    /// new store in mutual-ca.toml. The SQLite file is opened read-only and left as it was.
    /// Stop every process using the CA first (docs/ha.md).
    Migrate(MigrateArgs),
    /// Make a new issuing intermediate under the same root (needs root.key): new certificates
    /// come from it at once, on every replica; the old one becomes `retiring` and signs only its
    /// CRL until its last certificate expires. With --add, both stay active (docs/lifecycle.md).
    RotateIntermediate(Box<crate::cmd_ca_rotate::RotateIntermediateArgs>),
    /// List the CA's issuing intermediates: id, key type, state (active, retiring, retired),
    /// which one is the default, and when the last certificate each signed expires.
    Issuers(crate::cmd_ca_rotate::IssuersArgs),
    /// Start a root rollover (needs the root key): a new root cross-signed both ways and a trust
    /// bundle with both roots under a new version; with --activate (after --min-overlap),
    /// issue from the new root. Then `ca retire-root` (docs/lifecycle.md).
    RotateRoot(Box<crate::cmd_ca_rotate::RotateRootArgs>),
    /// End a root rollover: the new root becomes root.pem and the bundle's only root. Refused
    /// while a certificate from the old root's intermediates is still valid.
    RetireRoot(crate::cmd_ca_rotate::RetireRootArgs),
}

/// Where the inventory goes (`ca init`, `ca migrate`). Parsed here rather than by clap, whose
/// error message would echo the value, password included.
fn parse_store_url(s: &str, flag: &str) -> anyhow::Result<mutual_store::StoreUrl> {
    s.parse()
        .map_err(|e: mutual_store::StoreUrlError| anyhow::anyhow!("{flag}: {e}"))
}

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// The PostgreSQL database to copy into: postgres://user@host:port/db (no password in it).
    /// It must exist and hold no inventory.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// File whose first line is the database password (recorded in mutual-ca.toml by name).
    /// Otherwise $MUTUAL_STORE_PASSWORD, else libpq's PGPASSWORD / PGPASSFILE / ~/.pgpass.
    #[arg(long, value_name = "FILE")]
    pub store_password_file: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub dir: DirArg,
    #[command(flatten)]
    pub password: PasswordArg,
    /// Name of the CA (the root is "NAME Root", the intermediate "NAME Intermediate").
    #[arg(long, default_value = "Mutual Internal CA")]
    pub name: String,
    /// Key type for the root and intermediate: ecdsa-p256, ecdsa-p384, ed25519, rsa-3072.
    #[arg(long, default_value = "ecdsa-p256", value_parser = parse_key_type)]
    pub key_type: KeyType,
    /// Only allow these DNS names (name constraint in the intermediate, also checked at issue
    /// time). `example.com` allows it and its subdomains, `.example.com` only subdomains.
    /// Repeatable.
    #[arg(long, value_name = "DOMAIN")]
    pub permitted_dns: Vec<String>,
    /// SPIFFE trust domain: URI SANs must then be spiffe://DOMAIN/... IDs.
    #[arg(long, value_name = "DOMAIN")]
    pub trust_domain: Option<String>,
    /// OCSP responder URL written into every certificate's Authority Information Access
    /// (recorded in mutual-ca.toml as `ocsp_url`), e.g. http://ca.internal:8080/ocsp for
    /// `ca serve --ocsp-listen 0.0.0.0:8080` (docs/ocsp.md). `cert issue --ocsp-url` overrides it.
    #[arg(long, value_name = "URL")]
    pub ocsp_url: Option<String>,
    /// Default leaf lifetime recorded in mutual-ca.toml.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub default_ttl: std::time::Duration,
    /// Where the inventory lives: sqlite:PATH (or a path), or postgres://user@host:port/db for
    /// several `ca serve` replicas (docs/ha.md). Recorded in mutual-ca.toml; a password in it is
    /// refused. [default: inventory.db in --dir]
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// File whose first line is the database password (recorded in mutual-ca.toml by name).
    /// Otherwise $MUTUAL_STORE_PASSWORD, else libpq's PGPASSWORD / PGPASSFILE / ~/.pgpass.
    #[arg(long, value_name = "FILE")]
    pub store_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub key_storage: KeyStorageArgs,
    /// The root key in a PKCS#11 token too: an RFC 7512 URI ('pkcs11:token=LABEL;object=root'),
    /// with the module and PIN of --pkcs11-module / --pkcs11-pin-file (or the URI's, or the
    /// environment). Generated there unless the URI names an existing key; recorded in
    /// mutual-ca.toml as root_key_storage and used by `ca crl --root`, `rotate-intermediate` and
    /// `rotate-root`. No root.key is written. With both keys in tokens the CA has no key file
    /// and no command asks for the CA password (docs/keys.md).
    #[arg(long, value_name = "URI")]
    pub pkcs11_root_uri: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct CrlArgs {
    #[command(flatten)]
    pub dir: DirArg,
    #[command(flatten)]
    pub password: PasswordArg,
    /// Write the CRL here: PEM when the name ends in .pem, DER otherwise (an existing file is
    /// replaced only if it holds a CRL). Without --out, PEM goes to stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// How long relying parties may use this CRL (its nextUpdate).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub next_update: std::time::Duration,
    /// Print what was written as JSON (needs --out: stdout carries the JSON, not the CRL).
    #[arg(long, requires = "out")]
    pub json: bool,
    /// Sign with the root key (root.key in --dir, same password) a CRL of what the root issued:
    /// the intermediate. Needed beside the intermediate's CRL by checkers of every chain
    /// certificate (nginx ssl_crl, `serve --crl` without --crl-leaf-only).
    #[arg(long)]
    pub root: bool,
    /// The CRL of this issuing intermediate (an id from `mutual ca issuers`, e.g. int-1): each
    /// signs the CRL of its own certificates. [default: the default issuer]
    #[arg(long, value_name = "ID", conflicts_with = "root")]
    pub issuer: Option<String>,
}

pub fn run(cmd: CaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CaCommand::Init(a) => init(*a),
        CaCommand::Crl(a) => crl(a),
        CaCommand::Serve(a) => crate::cmd_ca_serve::run(*a),
        CaCommand::Migrate(a) => migrate(a),
        CaCommand::RotateIntermediate(a) => crate::cmd_ca_rotate::rotate_intermediate(*a),
        CaCommand::Issuers(a) => crate::cmd_ca_rotate::list(a),
        CaCommand::RotateRoot(a) => crate::cmd_ca_rotate::rotate_root(*a),
        CaCommand::RetireRoot(a) => crate::cmd_ca_rotate::retire_root(a),
    }
}

fn init(a: InitArgs) -> anyhow::Result<ExitCode> {
    let dir = a.dir.resolve()?;
    // Refuse before prompting for a password: nothing to do on an existing CA.
    if dir.join(mutual_pki::ca::CONFIG).exists() || dir.join(mutual_pki::ca::ROOT_CERT).exists() {
        anyhow::bail!(
            "a CA already exists in {}; refusing to overwrite it (nothing was changed)",
            dir.display()
        );
    }
    // A bad --store is refused before the password prompt.
    let store = absolute_store(
        a.store
            .as_deref()
            .map(|u| parse_store_url(u, "--store"))
            .transpose()?,
    )?;
    // A password file beside the default SQLite file would be recorded and never read.
    if a.store_password_file.is_some()
        && !matches!(store, Some(mutual_store::StoreUrl::Postgres(_)))
    {
        anyhow::bail!(
            "--store-password-file is the password of a PostgreSQL --store (postgres://...); \
             a SQLite inventory has none (nothing was changed)"
        );
    }
    let key_storage = a.key_storage.resolve()?;
    let root_key_storage = match &a.pkcs11_root_uri {
        None => mutual_pki::ca::KeyStorage::File,
        Some(uri) => {
            let abs = |p: &Option<PathBuf>| p.as_ref().map(std::path::absolute).transpose();
            let module = abs(&a.key_storage.pkcs11_module).context("--pkcs11-module")?;
            let pin = abs(&a.key_storage.pkcs11_pin_file).context("--pkcs11-pin-file")?;
            mutual_pki::ca::KeyStorage::Pkcs11(mutual_hsm::KeyRef::new(
                uri,
                module.as_deref(),
                pin.as_deref(),
            )?)
        }
    };
    // A CA with both keys in tokens has nothing to encrypt: no password (docs/keys.md).
    let password = a
        .password
        .get_if(key_storage.is_file() || root_key_storage.is_file(), true)?;
    let mode_before = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&dir)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    };
    let opts = InitOptions {
        name: a.name,
        key_type: a.key_type,
        permitted_dns: a.permitted_dns,
        trust_domain: a.trust_domain,
        default_ttl: a.default_ttl,
        ocsp_url: a.ocsp_url,
        store,
        store_password_file: match a.store_password_file {
            Some(p) => Some(std::path::absolute(&p).with_context(|| {
                format!("cannot resolve --store-password-file {}", p.display())
            })?),
            None => None,
        },
        key_storage,
        root_key_storage,
        ..Default::default()
    };
    let rt = runtime()?;
    let ca = rt.block_on(async {
        let ca = Ca::init(&dir, &opts, password.as_bytes()).await?;
        ca.store().close().await;
        Ok::<_, mutual_pki::PkiError>(ca)
    })?;
    if let Some(before) = mode_before.filter(|m| m & 0o077 != 0) {
        eprintln!(
            "note: {} was open to group/other (mode {before:04o}); tightened to 0700",
            dir.display()
        );
    }
    let cfg = ca.config();
    // What our CA makes must pass its own lint (a failure is a bug in mutual, said loudly).
    crate::cmd_lint::check_own(
        &dir.join(mutual_pki::ca::ROOT_CERT),
        "root certificate",
        &[],
        None,
    )?;
    crate::cmd_lint::check_own_intermediate(&dir.join(mutual_pki::ca::INTERMEDIATE_CERT), cfg)?;
    let fp = ca.root_fingerprint_sha256();
    if a.json {
        let v = serde_json::json!({
            "dir": dir,
            "name": cfg.name,
            "key_type": cfg.key_type.as_str(),
            "root": dir.join(mutual_pki::ca::ROOT_CERT),
            "intermediate": dir.join(mutual_pki::ca::INTERMEDIATE_CERT),
            "root_sha256": crate::json::fingerprint(&fp),
            "trust_domain": cfg.trust_domain,
            "permitted_dns": cfg.permitted_dns,
            "intermediate_not_after": crate::json::rfc3339(ca.intermediate_not_after()),
            "intermediate_not_after_unix": ca.intermediate_not_after(),
            "key_storage": cfg.key_storage.as_str(),
            "root_key_storage": cfg.root_key_storage.as_str(),
            "intermediate_key": key_location(&ca),
            "provisioner_key_storage": cfg.provisioner_key_storage.as_str(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Created CA {:?} ({}) in {}",
        cfg.name,
        cfg.key_type,
        dir.display()
    );
    println!("  root.pem          self-signed root, 10 years");
    println!("  intermediate.pem  issuing CA, pathlen 0, 5 years");
    match &cfg.root_key_storage {
        mutual_pki::ca::KeyStorage::Pkcs11(r) => {
            println!(
                "  root key          in the token {} (never leaves it)",
                r.uri
            )
        }
        mutual_pki::ca::KeyStorage::File => {
            println!("  root.key          encrypted PKCS#8 (scrypt + AES-256), mode 0600")
        }
    }
    match ca.intermediate_key().token_key() {
        None => {
            println!("  intermediate.key  encrypted PKCS#8 (scrypt + AES-256), mode 0600")
        }
        Some(k) => {
            println!(
                "  intermediate key  {} in token {:?} ({}), never leaves it",
                k.kind(),
                k.token().label(),
                k.uri()
            );
        }
    }
    if let mutual_pki::ca::KeyStorage::Pkcs11(r) = &cfg.provisioner_key_storage {
        println!(
            "  provisioner key   signs enrollment tokens, in the token {} (made at first use)",
            r.uri
        );
    }
    if !cfg.root_key_storage.is_file() && !cfg.key_storage.is_file() {
        println!("  no key file: no command on this CA needs the CA password");
    }
    match &cfg.store {
        None => println!("  inventory.db, mutual-ca.toml"),
        Some(u) => println!("  mutual-ca.toml; inventory in {u}"),
    }
    if let Some(td) = &cfg.trust_domain {
        println!("  trust domain: {td} (URI SANs must be spiffe://{td}/...)");
    }
    if !cfg.permitted_dns.is_empty() {
        println!("  permitted DNS: {}", cfg.permitted_dns.join(", "));
    }
    println!();
    println!("Root SHA-256 fingerprint:");
    println!("  {fp}");
    println!();
    println!("Pin it: distribute root.pem and have each party check its fingerprint, e.g.");
    println!(
        "  openssl x509 -in {} -noout -fingerprint -sha256",
        dir.join(mutual_pki::ca::ROOT_CERT).display()
    );
    if cfg.root_key_storage.is_file() {
        println!("root.key is not needed to issue or revoke: you may move it offline now.");
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the intermediate key lives, for JSON output: `intermediate.key` or the token key's
/// URI, module and protection.
fn key_location(ca: &Ca) -> serde_json::Value {
    match ca.intermediate_key().token_key() {
        None => serde_json::json!({
            "storage": "file",
            "path": ca.dir().join(mutual_pki::ca::INTERMEDIATE_KEY),
        }),
        Some(k) => serde_json::to_value(k.info()).unwrap_or_default(),
    }
}

/// A relative SQLite path on the command line is relative to the current directory; the
/// config records it absolute (relative paths in the file are relative to the CA directory).
pub fn absolute_store(
    u: Option<mutual_store::StoreUrl>,
) -> anyhow::Result<Option<mutual_store::StoreUrl>> {
    Ok(match u {
        Some(mutual_store::StoreUrl::Sqlite(p)) if p.is_relative() => {
            Some(mutual_store::StoreUrl::Sqlite(
                std::path::absolute(&p)
                    .with_context(|| format!("cannot resolve --store {}", p.display()))?,
            ))
        }
        other => other,
    })
}

/// `ca crl --out FILE` replaces a CRL (a cron job refreshing the file `serve --crl` reads), never
/// anything else: a slip such as `--out root.pem` would have put a CRL where the CA's root
/// certificate was. Checked before the CRL is signed, so nothing changes (not the CRL number).
fn refuse_replacing_a_non_crl(path: &std::path::Path) -> anyhow::Result<()> {
    let Ok(data) = std::fs::read(path) else {
        return Ok(()); // absent (or unreadable: the write says so)
    };
    let is_crl = data.is_empty()
        || String::from_utf8_lossy(&data).contains("-----BEGIN X509 CRL-----")
        || mutual_pki::inspect::crl_info(&data).is_ok();
    if is_crl {
        return Ok(());
    }
    Err(crate::errors::user(
        "exists",
        format!(
            "{} exists and does not hold a CRL; refusing to replace it (nothing was changed)",
            path.display()
        ),
        "give --out a new file, or the CRL file to refresh",
    ))
}

fn crl(a: CrlArgs) -> anyhow::Result<ExitCode> {
    let dir = a.dir.resolve()?;
    if let Some(out) = &a.out {
        refuse_replacing_a_non_crl(out)?;
    }
    let password = a.password.get_for(
        &dir,
        KeysUsed {
            issuers: true,
            root: a.root,
            ..Default::default()
        },
    )?;
    let rt = runtime()?;
    let der = rt.block_on(async {
        let ca = Ca::open(&dir, password.as_bytes()).await?;
        let der = if a.root {
            ca.root_crl(password.as_bytes(), a.next_update).await
        } else if let Some(id) = &a.issuer {
            ca.crl_for(id, a.next_update).await
        } else {
            ca.crl(a.next_update).await
        };
        ca.store().close().await;
        der
    })?;
    let pem = || mutual_pki::pem_encode("X509 CRL", &der);
    match &a.out {
        None => print!("{}", pem()?),
        Some(path) => {
            let name = path.to_string_lossy();
            let data = if name.ends_with(".pem") {
                pem()?.into_bytes()
            } else {
                der.clone()
            };
            mutual_pki::keys::write_atomic(path, &data, 0o644, true)?;
            if a.json {
                let info = mutual_pki::inspect::crl_info(&der)?;
                let mut v = serde_json::to_value(&info)?;
                if let Some(o) = v.as_object_mut() {
                    o.insert("out".into(), serde_json::json!(path));
                    o.insert(
                        "format".into(),
                        serde_json::json!(if name.ends_with(".pem") { "pem" } else { "der" }),
                    );
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ca migrate --to postgres://...`: SQLite inventory -> PostgreSQL, then the config.
fn migrate(a: MigrateArgs) -> anyhow::Result<ExitCode> {
    use mutual_store::StoreUrl;
    let dir = a.dir.resolve()?;
    let config = mutual_pki::ca::read_config(&dir)?;
    let src_path = match mutual_pki::ca::store_url(&dir, &config) {
        StoreUrl::Sqlite(p) => p,
        other => anyhow::bail!(
            "the CA in {} already uses {other}; `ca migrate` copies an SQLite inventory \
             (nothing was changed)",
            dir.display()
        ),
    };
    let to_url = parse_store_url(&a.to, "--to")?;
    let StoreUrl::Postgres(to) = &to_url else {
        anyhow::bail!("--to must be a postgres://user@host:port/db URL (nothing was changed)");
    };
    let password_file = match &a.store_password_file {
        Some(p) => Some(
            std::path::absolute(p)
                .with_context(|| format!("cannot resolve --store-password-file {}", p.display()))?,
        ),
        None => None,
    };
    let rt = runtime()?;
    let copied = rt.block_on(async {
        let src = mutual_store::SqliteStore::open_read_only(&src_path).await?;
        let password = mutual_pki::ca::store_password(password_file.as_deref())?;
        let dst = match mutual_store::PgStore::open(to, password.as_deref(), 4).await {
            Ok(d) => d,
            Err(e) => {
                src.close().await;
                return Err(mutual_pki::PkiError::from(e));
            }
        };
        let out = mutual_store::copy_sqlite_to_postgres(&src, &dst).await;
        src.close().await;
        dst.close().await;
        Ok(out)
    })?;
    let report = match copied {
        Ok(r) => r,
        Err(e @ mutual_store::StoreError::CopyMismatch { .. }) => {
            // The check failed (exit 1); the copy was rolled back and the config not touched.
            eprintln!(
                "error: {e}; mutual-ca.toml still points at {}",
                src_path.display()
            );
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    // Only now, with every count verified and committed, does the CA switch stores.
    let cfg_path = mutual_pki::ca::record_store(&dir, &to_url, password_file.as_deref())?;
    let r = &report.target;
    if a.json {
        let v = serde_json::json!({
            "from": StoreUrl::Sqlite(src_path.clone()).to_string(),
            "to": to_url.to_string(),
            "verified": true,
            "source": report.source,
            "target": report.target,
            "config": cfg_path,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "Copied {} certificates ({} revoked), {} spent tokens, {} counters, {} stored CRL \
             into {}; row counts verified.",
            r.certificates, r.revoked, r.tokens, r.counters, r.crls, to_url
        );
        println!(
            "{} now records store = {:?}; {} was left unchanged (keep it as a backup).",
            cfg_path.display(),
            to_url.to_string(),
            src_path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
