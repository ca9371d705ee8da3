//! Private keys that live in a PKCS#11 token (an HSM, SoftHSM2, a TPM through tpm2-pkcs11) and
//! never leave it: mutual asks the token to sign and gets a signature back.
//!
//! # The FFI boundary
//! This crate is mutual's one boundary with C code that is not a crypto library: PKCS#11 modules
//! are loaded with `dlopen` and called through function pointers. All of that unsafe work lives
//! in the `cryptoki` crate (Parsec project); this crate uses only its safe API, so
//! `forbid(unsafe_code)` holds here as everywhere else. What cryptoki cannot protect against is
//! the module itself: a library named by `--pkcs11-module` runs its own initialisers when loaded,
//! so only trusted paths belong there (docs/keys.md).
//!
//! # Shape
//! - [`Pkcs11Uri`] (`uri.rs`): RFC 7512 URIs, parsed once.
//! - `module.rs`: each module is loaded and `C_Initialize`d once per process.
//! - [`Token`] (`token.rs`): a logged-in token with a session pool; a session that a token reset
//!   invalidated is replaced and the login redone, once, before an operation fails.
//! - [`TokenKey`] (`key.rs`): a private key in a token; signs for rcgen (certificates, CRLs) and,
//!   through [`TlsSigningKey`] (`tls.rs`), for rustls (TLS handshakes).
//! - [`KeyRef`]: where a key is (module, URI, PIN source), as commands take it.
#![forbid(unsafe_code)]

mod der;
mod key;
mod module;
mod tls;
mod token;
mod uri;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use key::{key_status, recheck_keys, KeyInfo, KeyKind, KeyStatus, TokenKey};
pub use tls::TlsSigningKey;
pub use token::Token;
pub use uri::Pkcs11Uri;

/// The environment variable holding the token PIN (when no PIN file is given).
pub const PIN_ENV: &str = "MUTUAL_PKCS11_PIN";
/// The environment variable naming the PKCS#11 module (when neither a flag nor the URI does).
pub const MODULE_ENV: &str = "MUTUAL_PKCS11_MODULE";

/// Everything that can go wrong with a token key, each with what a person needs to act. No
/// variant ever carries a PIN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    #[error("invalid PKCS#11 URI {uri}: {detail}")]
    BadUri { uri: String, detail: String },
    #[error("no PKCS#11 module given for {uri}: pass --pkcs11-module PATH, add ?module-path=PATH to the URI or set $MUTUAL_PKCS11_MODULE")]
    NoModule { uri: String },
    #[error("PKCS#11 module {path}: {detail}")]
    ModuleMissing { path: PathBuf, detail: String },
    #[error("{path} is not a PKCS#11 module: {detail}")]
    NotAModule { path: PathBuf, detail: String },
    #[error("no token matches {uri} in {module} (tokens present: {present})")]
    TokenNotFound {
        uri: String,
        module: PathBuf,
        present: String,
    },
    #[error("no PIN for token {token:?}: use --pkcs11-pin-file FILE, ?pin-source=FILE in the URI, or $MUTUAL_PKCS11_PIN")]
    NoPin { token: String },
    #[error("cannot read the PIN file {path}: {detail}")]
    PinFile { path: PathBuf, detail: String },
    #[error("wrong PIN for token {token:?} (the token counts failed logins and may lock)")]
    WrongPin { token: String },
    #[error("the user PIN of token {token:?} is locked: unlock it with the SO PIN")]
    PinLocked { token: String },
    #[error("no private key matches {uri} in token {token:?}")]
    ObjectNotFound { uri: String, token: String },
    #[error("{count} private keys match {uri} in token {token:?}: add id= or a distinct object=")]
    Ambiguous {
        uri: String,
        token: String,
        count: usize,
    },
    #[error("a key named by {uri} already exists in token {token:?}; refusing to create another")]
    KeyExists { uri: String, token: String },
    #[error("the key {uri} cannot be used: {detail}")]
    UnsupportedKey { uri: String, detail: String },
    #[error("the token for {uri} is not available: {detail}")]
    TokenUnavailable { uri: String, detail: String },
    #[error("PKCS#11 {op} failed: {detail}")]
    Pkcs11 { op: &'static str, detail: String },
}

impl HsmError {
    /// A short label for metrics and JSON output.
    pub fn label(&self) -> &'static str {
        match self {
            HsmError::BadUri { .. } => "bad_uri",
            HsmError::NoModule { .. } | HsmError::ModuleMissing { .. } => "module_missing",
            HsmError::NotAModule { .. } => "not_a_module",
            HsmError::TokenNotFound { .. } => "token_not_found",
            HsmError::NoPin { .. } | HsmError::PinFile { .. } => "no_pin",
            HsmError::WrongPin { .. } => "wrong_pin",
            HsmError::PinLocked { .. } => "pin_locked",
            HsmError::ObjectNotFound { .. } => "object_not_found",
            HsmError::Ambiguous { .. } => "ambiguous_object",
            HsmError::KeyExists { .. } => "key_exists",
            HsmError::UnsupportedKey { .. } => "unsupported_key",
            HsmError::TokenUnavailable { .. } => "token_unavailable",
            HsmError::Pkcs11 { .. } => "pkcs11_error",
        }
    }
}

/// Where a token key is: the module, the URI and where its PIN comes from. Cheap to clone; holds
/// no secret (the PIN is read when the token is opened).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    /// The PKCS#11 library.
    pub module: PathBuf,
    /// The `pkcs11:` URI of the key (text form, as the user gave it).
    pub uri: String,
    /// A file whose first line is the PIN; absent: the URI's pin-source, else $MUTUAL_PKCS11_PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_file: Option<PathBuf>,
}

impl KeyRef {
    /// Builds a reference from a URI and optional flags, resolving the module from the flag, the
    /// URI's `module-path` or `$MUTUAL_PKCS11_MODULE`, in that order.
    pub fn new(
        uri: &str,
        module: Option<&Path>,
        pin_file: Option<&Path>,
    ) -> Result<KeyRef, HsmError> {
        let parsed: Pkcs11Uri = uri.parse()?;
        if !parsed.names_object() {
            return Err(HsmError::BadUri {
                uri: parsed.to_string(),
                detail: "name the key with object=LABEL (or id=)".into(),
            });
        }
        let module = module
            .map(Path::to_path_buf)
            .or_else(|| parsed.module_path.clone())
            .or_else(|| {
                std::env::var_os(MODULE_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .ok_or_else(|| HsmError::NoModule {
                uri: parsed.to_string(),
            })?;
        Ok(KeyRef {
            module,
            uri: parsed.to_string(),
            pin_file: pin_file.map(Path::to_path_buf).or(parsed.pin_source),
        })
    }

    /// The parsed URI.
    pub fn parsed(&self) -> Result<Pkcs11Uri, HsmError> {
        self.uri.parse()
    }

    /// Another key in the same token (same module and PIN source), labelled `object`: where the
    /// CA keeps a key of its own beside the one the user named (the provisioner key that signs
    /// enrollment tokens, beside the intermediate). The token's selectors and the query are
    /// kept; the key's `object=`, `id=` and `type=` are replaced.
    pub fn sibling(&self, object: &str) -> Result<KeyRef, HsmError> {
        let rest = self.uri.get(7..).unwrap_or_default();
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut attrs: Vec<String> = path
            .split(';')
            .filter(|a| {
                let k = a.split('=').next().unwrap_or_default().to_ascii_lowercase();
                !a.is_empty() && !matches!(k.as_str(), "object" | "id" | "type")
            })
            .map(str::to_string)
            .collect();
        let label: String = url_escape(object);
        attrs.push(format!("object={label}"));
        let mut text = format!("pkcs11:{}", attrs.join(";"));
        if let Some(q) = query {
            text.push('?');
            text.push_str(q);
        }
        let parsed: Pkcs11Uri = text.parse()?;
        Ok(KeyRef {
            module: self.module.clone(),
            uri: parsed.to_string(),
            pin_file: self.pin_file.clone(),
        })
    }

    /// Opens the token (loading the module once per process, logging in once per token) and
    /// finds the key.
    pub fn open(&self) -> Result<Arc<TokenKey>, HsmError> {
        let uri = self.parsed()?;
        let token = Token::open(&self.module, &uri, self.pin_file.as_deref())?;
        TokenKey::find(token, uri)
    }

    /// Generates a new key pair in the token: private half sensitive and non-extractable,
    /// labelled and identified as the URI says. Refuses when the label is taken.
    pub fn generate(&self, kind: KeyKind) -> Result<Arc<TokenKey>, HsmError> {
        let uri = self.parsed()?;
        let token = Token::open(&self.module, &uri, self.pin_file.as_deref())?;
        TokenKey::generate(token, uri, kind)
    }

    /// The key the URI names if the token has it, else a new one of `kind` (`true` when made
    /// now): how `ca init` and `cert issue` take an existing key or create one.
    pub fn open_or_generate(&self, kind: KeyKind) -> Result<(Arc<TokenKey>, bool), HsmError> {
        match self.open() {
            Ok(k) => Ok((k, false)),
            Err(HsmError::ObjectNotFound { .. }) => Ok((self.generate(kind)?, true)),
            Err(e) => Err(e),
        }
    }
}

/// `v` percent-encoded where RFC 7512 needs it (anything but unreserved characters).
fn url_escape(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Whether a `--key` value is a PKCS#11 URI rather than a path.
pub fn is_pkcs11(key: &Path) -> bool {
    key.to_str().is_some_and(Pkcs11Uri::is_pkcs11)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_sibling_key_shares_the_token_module_and_pin() {
        let r = KeyRef::new(
            "pkcs11:token=ca%20hsm;object=intermediate;id=%01;type=private?module-path=/m.so",
            None,
            Some(Path::new("/run/pin")),
        )
        .unwrap();
        let p = r.sibling("mutual provisioner").unwrap();
        assert_eq!(
            p.uri,
            "pkcs11:token=ca%20hsm;object=mutual%20provisioner?module-path=/m.so"
        );
        let u = p.parsed().unwrap();
        assert_eq!(u.token.as_deref(), Some("ca hsm"));
        assert_eq!(u.object.as_deref(), Some("mutual provisioner"));
        assert_eq!(u.id, None);
        assert_eq!(p.module, Path::new("/m.so"));
        assert_eq!(p.pin_file.as_deref(), Some(Path::new("/run/pin")));
    }
}
