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
    /// an interactive prompt.
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
    /// The CA password. `confirm` asks twice when prompting (init).
    pub fn get(&self, confirm: bool) -> anyhow::Result<String> {
        let pw = if let Some(f) = &self.password_file {
            read_secret_file(f, "password")?
        } else if let Ok(v) = std::env::var("MUTUAL_CA_PASSWORD") {
            v
        } else {
            let first = rpassword::prompt_password("CA password: ").context(
                "no terminal to ask for the CA password: use --password-file FILE or set MUTUAL_CA_PASSWORD",
            )?;
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

pub fn parse_key_type(s: &str) -> Result<KeyType, String> {
    s.parse().map_err(|e: mutual_pki::PkiError| e.to_string())
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    mutual_pki::parse_duration(s).map_err(|e| e.to_string())
}
