//! Which inventory a CA uses and how to reach it: `mutual-ca.toml`'s `store` (absent: the
//! embedded `inventory.db` in the CA directory) and the PostgreSQL password, which is never in
//! the file: `$MUTUAL_STORE_PASSWORD`, else the file named by `store_password_file`, else libpq's
//! `PGPASSWORD`/`PGPASSFILE`/`~/.pgpass` (sqlx reads those when no password is given).
//!
//! Why apart from ca.rs: every command that opens the CA (issue, list, revoke, crl, serve, token)
//! goes through these few functions, so the recorded store is honoured everywhere.
use std::path::Path;

use mutual_store::{OpenOptions, Store, StoreUrl};

use super::{io, CaConfig, CONFIG, INVENTORY};
use crate::PkiError;

/// The environment variable holding the PostgreSQL password.
pub const STORE_PASSWORD_ENV: &str = "MUTUAL_STORE_PASSWORD";

/// Reads and parses `mutual-ca.toml` in `dir`.
pub fn read_config(dir: &Path) -> Result<CaConfig, PkiError> {
    let path = dir.join(CONFIG);
    if !path.exists() {
        return Err(PkiError::NotInitialised {
            dir: dir.to_path_buf(),
            file: CONFIG.into(),
        });
    }
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let config: CaConfig = toml::from_str(&text).map_err(|e| PkiError::Config {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    check_values(&config).map_err(|detail| PkiError::Config { path, detail })?;
    Ok(config)
}

/// The values `ca init` checks, checked again as an operator may have edited them: a value the
/// CA would misread is refused by every command that opens the CA rather than applied wrongly
/// (`trust_domain = "spiffe://x"` refused every SPIFFE ID as "outside spiffe://spiffe://x"; a
/// bad `[defaults] ttl` silently became 24 hours).
fn check_values(c: &CaConfig) -> Result<(), String> {
    if let Some(td) = &c.trust_domain {
        let bare = td.strip_prefix("spiffe://").unwrap_or(td);
        crate::spiffe::validate_trust_domain(td).map_err(|e| {
            let hint = if bare == td {
                String::new()
            } else {
                format!(" (write the domain alone: trust_domain = {bare:?})")
            };
            format!("trust_domain {td:?}: {e}{hint}")
        })?;
    }
    for p in &c.permitted_dns {
        super::init::check_permitted_dns_entry(&p.to_ascii_lowercase())
            .map_err(|e| format!("permitted_dns {p:?}: {e}"))?;
    }
    crate::parse_duration(&c.defaults.ttl)
        .map_err(|e| format!("[defaults] ttl {:?}: {e}", c.defaults.ttl))?;
    Ok(())
}

/// The store the CA in `dir` uses (a relative SQLite path is relative to `dir`).
pub fn store_url(dir: &Path, config: &CaConfig) -> StoreUrl {
    match &config.store {
        Some(u) => u.clone().relative_to(dir),
        None => StoreUrl::Sqlite(dir.join(INVENTORY)),
    }
}

/// The PostgreSQL password: `$MUTUAL_STORE_PASSWORD`, else the first line of
/// `password_file`, else `None` (libpq's own sources).
pub fn store_password(password_file: Option<&Path>) -> Result<Option<String>, PkiError> {
    if let Some(v) = std::env::var(STORE_PASSWORD_ENV)
        .ok()
        .filter(|v| !v.is_empty())
    {
        return Ok(Some(v));
    }
    match password_file {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(io(p))?;
            Ok(Some(text.lines().next().unwrap_or("").to_string()))
        }
        None => Ok(None),
    }
}

/// Opens the store at `url` with the password from [`store_password`].
pub async fn open_url(
    url: &StoreUrl,
    password_file: Option<&Path>,
    create: bool,
) -> Result<Store, PkiError> {
    let password = if url.is_postgres() {
        store_password(password_file)?
    } else {
        None
    };
    Ok(Store::open(
        url,
        &OpenOptions {
            create,
            password,
            ..Default::default()
        },
    )
    .await?)
}

/// Opens the store recorded in `config` for the CA in `dir`. The default SQLite file must exist
/// (a missing one means no CA here, not an empty inventory to create).
pub async fn open_configured(dir: &Path, config: &CaConfig) -> Result<Store, PkiError> {
    let url = store_url(dir, config);
    if config.store.is_none() && !dir.join(INVENTORY).exists() {
        return Err(PkiError::NotInitialised {
            dir: dir.to_path_buf(),
            file: INVENTORY.into(),
        });
    }
    open_url(&url, config.store_password_file.as_deref(), false).await
}

/// Records `url` (and the password file's name, or none) as the CA's store in `mutual-ca.toml`,
/// atomically. Returns the config's path.
pub fn record_store(
    dir: &Path,
    url: &StoreUrl,
    password_file: Option<&Path>,
) -> Result<std::path::PathBuf, PkiError> {
    edit_config(dir, |table| {
        table.insert("store".into(), toml::Value::String(url.to_string()));
        match password_file {
            Some(p) => {
                table.insert(
                    "store_password_file".into(),
                    toml::Value::String(p.display().to_string()),
                );
            }
            None => {
                table.remove("store_password_file");
            }
        }
        Ok(())
    })
}

/// Records where the root key is (`root_key_storage` in `mutual-ca.toml`), atomically: `ca
/// retire-root` when the new root's key is kept elsewhere than the old one's.
pub(super) fn record_root_key_storage(
    dir: &Path,
    storage: &super::KeyStorage,
) -> Result<(), PkiError> {
    edit_config(dir, |table| {
        if storage.is_file() {
            table.remove("root_key_storage");
        } else {
            let v = toml::Value::try_from(storage).map_err(|e| e.to_string())?;
            table.insert("root_key_storage".into(), v);
        }
        Ok(())
    })?;
    Ok(())
}

/// Rewrites `mutual-ca.toml` through `edit`, atomically. The file is edited as a table so that
/// keys this version does not know survive. Returns the config's path.
fn edit_config(
    dir: &Path,
    edit: impl FnOnce(&mut toml::Table) -> Result<(), String>,
) -> Result<std::path::PathBuf, PkiError> {
    let path = dir.join(CONFIG);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let config_err = |detail: String| PkiError::Config {
        path: path.clone(),
        detail,
    };
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| config_err(e.to_string()))?;
    edit(&mut table).map_err(config_err)?;
    let new_text = toml::to_string(&table).map_err(|e| config_err(e.to_string()))?;
    crate::keys::write_atomic(&path, new_text.as_bytes(), 0o644, true)?;
    Ok(path)
}
