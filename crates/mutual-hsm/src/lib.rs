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

/// Whether a `--key` value is a PKCS#11 URI rather than a path.
pub fn is_pkcs11(key: &Path) -> bool {
    key.to_str().is_some_and(Pkcs11Uri::is_pkcs11)
}
