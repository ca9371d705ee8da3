//! The pieces every CA-using command shares (`ca`, `ca serve`, `cert`, `token`): where the CA
//! lives (`--dir`) and how its password is obtained (file, environment, prompt) without ever
//! echoing or logging it, plus the value parsers of their common flags.
use std::path::{Path, PathBuf};

use anyhow::Context;
use mutual_pki::KeyType;

/// Where the CA lives.
#[derive(clap::Args, Debug, Clone)]
pub struct DirArg {
    /// CA directory [default: $MUTUAL_HOME, else ~/.mutual].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl DirArg {
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.dir {
            return Ok(d.clone());
        }
        if let Some(h) = std::env::var_os("MUTUAL_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(h));
        }
        let home = std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .context("cannot find the CA directory: pass --dir, or set MUTUAL_HOME or HOME")?;
        Ok(Path::new(&home).join(".mutual"))
    }
}

/// How to get the CA password.
#[derive(clap::Args, Debug, Clone)]
pub struct PasswordArg {
    /// Read the CA password from this file (first line). Otherwise $MUTUAL_CA_PASSWORD, else
    /// an interactive prompt. Not asked for (nor read) when every key the command uses is in a
    /// PKCS#11 token (docs/keys.md).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// Reads a secret from a file: the first line, without its line ending.
pub fn read_secret_file(path: &Path, what: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

impl PasswordArg {
    /// The CA password when a command on the CA in `dir` needs it: some key it uses (`keys`)
    /// is a file, as the CA's own files say (read before anything is asked). Otherwise empty.
    pub fn get_for(&self, dir: &Path, keys: mutual_pki::ca::KeysUsed) -> anyhow::Result<String> {
        self.get_if(mutual_pki::ca::needs_password(dir, keys)?, false)
    }

    /// The CA password if `needed`; otherwise empty, nothing read or asked, and a note when
    /// --password-file was given (an explicit flag that does nothing should say so; a
    /// $MUTUAL_CA_PASSWORD set for other CAs is left alone silently).
    pub fn get_if(&self, needed: bool, confirm: bool) -> anyhow::Result<String> {
        if needed {
            return self.get(confirm);
        }
        if let Some(f) = &self.password_file {
            eprintln!(
                "note: --password-file {} not read: every key this command uses is in a PKCS#11 \
                 token",
                f.display()
            );
        }
        Ok(String::new())
    }

    /// The CA password. `confirm` asks twice when prompting (init).
    fn get(&self, confirm: bool) -> anyhow::Result<String> {
        let pw = if let Some(f) = &self.password_file {
            read_secret_file(f, "password")?
        } else if let Ok(v) = std::env::var("MUTUAL_CA_PASSWORD") {
            v
        } else {
            let first = rpassword::prompt_password("CA password: ").map_err(|_| {
                crate::errors::user(
                    "password",
                    "no terminal to ask for the CA password (a key this command uses is in a file)",
                    "use --password-file FILE or set MUTUAL_CA_PASSWORD",
                )
            })?;
            if confirm {
                let again = rpassword::prompt_password("CA password (again): ")
                    .context("cannot read the CA password confirmation")?;
                if again != first {
                    anyhow::bail!("the two passwords differ; nothing was created");
                }
            }
            first
        };
        if pw.is_empty() {
            anyhow::bail!("the CA password must not be empty");
        }
        Ok(pw)
    }
}

/// `--key-type` of `enroll` and `renew` (and their `--est` forms), read when used.
/// `--san` given twice is a slip (`cert issue` wrote it into the certificate twice): refused
/// by every command that takes SANs.
pub fn refuse_repeated_sans(sans: &[mutual_pki::San]) -> anyhow::Result<()> {
    for (i, san) in sans.iter().enumerate() {
        if sans[..i].contains(san) {
            anyhow::bail!("--san {san} is given twice");
        }
    }
    Ok(())
}

/// When the CA's default intermediate ends (Unix seconds), read without any key, for
/// [`refuse_outliving`]. `None` when the issuers cannot be read now (a half-edited issuers.toml,
/// which a running CA rides out): the CA still checks at issuance, so nothing is refused early.
pub fn intermediate_ends(dir: &Path, config: &mutual_pki::ca::CaConfig) -> Option<i64> {
    mutual_pki::ca::issuers::default_issuer_not_after(dir, config).ok()
}

/// Refuses a lifetime `ttl` (set by `what`, e.g. `--ttl-cert`) that `thing` ("a certificate",
/// "a CRL") made now could not have: longer than the intermediate has left (`ends`, from
/// [`intermediate_ends`]). Every issuance with it would be refused, so the setting is refused
/// where it is given. No password needed.
pub fn refuse_outliving(
    ends: Option<i64>,
    ttl: std::time::Duration,
    what: &str,
    thing: &str,
) -> anyhow::Result<()> {
    match ends.and_then(|ends| mutual_pki::ca::outliving(ttl, ends, what, thing)) {
        None => Ok(()),
        Some(why) => Err(crate::errors::user(
            "usage",
            why,
            format!("give a shorter {what}"),
        )),
    }
}

/// [`refuse_outliving`] for a command that checks one lifetime.
pub fn refuse_outliving_intermediate(
    dir: &Path,
    config: &mutual_pki::ca::CaConfig,
    ttl: std::time::Duration,
    what: &str,
    thing: &str,
) -> anyhow::Result<()> {
    refuse_outliving(intermediate_ends(dir, config), ttl, what, thing)
}

pub fn key_type(s: &str) -> anyhow::Result<KeyType> {
    s.parse::<KeyType>().context("--key-type")
}

pub fn parse_key_type(s: &str) -> Result<KeyType, String> {
    s.parse().map_err(|e: mutual_pki::PkiError| e.to_string())
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    mutual_pki::parse_duration(s).map_err(|e| e.to_string())
}

/// Where a key is made and kept.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    /// A file (for the CA: password-encrypted PKCS#8).
    File,
    /// A PKCS#11 token (HSM, SoftHSM2, TPM via tpm2-pkcs11): the key never leaves it.
    Pkcs11,
}

/// `--key-storage` and the PKCS#11 flags (`ca init`, docs/keys.md). The PIN is never a flag
/// value: it comes from --pkcs11-pin-file or $MUTUAL_PKCS11_PIN.
#[derive(clap::Args, Debug, Clone)]
pub struct KeyStorageArgs {
    /// Where the key is made and kept: file, or pkcs11 (inside the token --pkcs11-uri names;
    /// generated there, sensitive and non-extractable, unless the URI names an existing key).
    /// For `ca init` the intermediate key (file: intermediate.key, encrypted with the CA
    /// password; recorded in mutual-ca.toml), for `ca rotate-intermediate` the new
    /// intermediate's (issuers/ID.key), for `ca rotate-root` the new root's (roots/ID.key; with
    /// --activate the new intermediate's), for `cert issue` the leaf key (file: NAME.key).
    /// [default: pkcs11 when --pkcs11-uri is given, else file]
    #[arg(long, value_enum, value_name = "KIND")]
    pub key_storage: Option<StorageKind>,
    /// The PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so. Otherwise the URI's
    /// module-path, else $MUTUAL_PKCS11_MODULE.
    #[arg(long, value_name = "PATH")]
    pub pkcs11_module: Option<PathBuf>,
    /// The key in the token, an RFC 7512 URI: 'pkcs11:token=LABEL;object=KEYLABEL'.
    #[arg(long, value_name = "URI")]
    pub pkcs11_uri: Option<String>,
    /// File whose first line is the token's user PIN (`ca init` records it in mutual-ca.toml by
    /// name). Otherwise the URI's pin-source, else $MUTUAL_PKCS11_PIN.
    #[arg(long, value_name = "FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
}

impl KeyStorageArgs {
    /// The storage these flags ask for; an inconsistent combination is a usage error.
    pub fn resolve(&self) -> anyhow::Result<mutual_pki::ca::KeyStorage> {
        use mutual_pki::ca::KeyStorage;
        let kind = self.key_storage.unwrap_or(if self.pkcs11_uri.is_some() {
            StorageKind::Pkcs11
        } else {
            StorageKind::File
        });
        match kind {
            StorageKind::File => {
                if self.pkcs11_uri.is_some()
                    || self.pkcs11_module.is_some()
                    || self.pkcs11_pin_file.is_some()
                {
                    anyhow::bail!(
                        "--pkcs11-* flags need --key-storage pkcs11 (the key goes to a file otherwise)"
                    );
                }
                Ok(KeyStorage::File)
            }
            StorageKind::Pkcs11 => {
                let Some(uri) = &self.pkcs11_uri else {
                    anyhow::bail!(
                        "--key-storage pkcs11 needs --pkcs11-uri 'pkcs11:token=LABEL;object=KEYLABEL'"
                    );
                };
                let abs = |p: &Option<PathBuf>, flag: &str| -> anyhow::Result<Option<PathBuf>> {
                    p.as_ref()
                        .map(|p| {
                            std::path::absolute(p)
                                .with_context(|| format!("cannot resolve {flag} {}", p.display()))
                        })
                        .transpose()
                };
                let module = abs(&self.pkcs11_module, "--pkcs11-module")?;
                let pin = abs(&self.pkcs11_pin_file, "--pkcs11-pin-file")?;
                Ok(KeyStorage::Pkcs11(mutual_hsm::KeyRef::new(
                    uri,
                    module.as_deref(),
                    pin.as_deref(),
                )?))
            }
        }
    }
}
