//! The CA's issuing key, wherever it lives: an encrypted PKCS#8 file decrypted into memory, or
//! a key inside a PKCS#11 token that only ever signs. Everything that signs as the CA (leaves,
//! CSRs, CRLs, the online CA's own certificate) holds a [`CaKey`] through rcgen's
//! `SigningKey`, so no other code knows or cares where the key is (DESIGN.md "one signing
//! interface"). Which one a CA uses is recorded in `mutual-ca.toml` as [`KeyStorage`].
use std::path::Path;
use std::sync::Arc;

use mutual_hsm::{KeyKind, KeyRef, TokenKey};
use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm, SigningKey};

use crate::keys;
use crate::{KeyType, PkiError};

/// Where the CA's intermediate key is kept (`key_storage` in `mutual-ca.toml`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", try_from = "RawKeyStorage")]
pub enum KeyStorage {
    /// `intermediate.key`, password-encrypted PKCS#8 (the default, and what a config without
    /// `key_storage` means).
    #[default]
    File,
    /// A key in a PKCS#11 token.
    Pkcs11(KeyRef),
}

/// A `[key_storage]` table as written: serde's internally tagged `File` would take any other
/// key beside `kind = "file"` and drop it, so a PKCS#11 setting under the wrong kind would
/// leave the key in a file without a word.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyStorage {
    kind: String,
    module: Option<std::path::PathBuf>,
    uri: Option<String>,
    pin_file: Option<std::path::PathBuf>,
}

impl TryFrom<RawKeyStorage> for KeyStorage {
    type Error = String;

    fn try_from(r: RawKeyStorage) -> Result<Self, String> {
        match (r.kind.as_str(), r.module, r.uri) {
            ("file", None, None) if r.pin_file.is_none() => Ok(KeyStorage::File),
            ("file", ..) => Err(
                "kind = \"file\" takes no module, uri or pin_file (those are \
                                 for kind = \"pkcs11\")"
                    .into(),
            ),
            ("pkcs11", Some(module), Some(uri)) => Ok(KeyStorage::Pkcs11(KeyRef {
                module,
                uri,
                pin_file: r.pin_file,
            })),
            ("pkcs11", ..) => Err("kind = \"pkcs11\" needs module and uri".into()),
            (other, ..) => Err(format!(
                "unknown kind {other:?}: expected \"file\" or \"pkcs11\""
            )),
        }
    }
}

impl KeyStorage {
    /// Whether the key is in a file (what a config without the field means).
    pub fn is_file(&self) -> bool {
        *self == KeyStorage::File
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            KeyStorage::File => "file",
            KeyStorage::Pkcs11(_) => "pkcs11",
        }
    }
}

/// The CA's signing key.
pub enum CaKey {
    File(KeyPair),
    Token(Arc<TokenKey>),
}

impl std::fmt::Debug for CaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaKey::File(_) => f.write_str("CaKey::File"),
            CaKey::Token(k) => write!(f, "CaKey::Token({})", k.uri()),
        }
    }
}

pub fn token_kind(kt: KeyType) -> Result<KeyKind, PkiError> {
    match kt {
        KeyType::EcdsaP256 => Ok(KeyKind::EcdsaP256),
        KeyType::EcdsaP384 => Ok(KeyKind::EcdsaP384),
        KeyType::Rsa3072 => Ok(KeyKind::Rsa(3072)),
        KeyType::Ed25519 => Err(PkiError::UnsupportedKey {
            detail: "ed25519 keys are not supported in PKCS#11 tokens here; use ecdsa-p256, \
                     ecdsa-p384 or rsa-3072"
                .into(),
        }),
    }
}

/// The key type a token key is, in the CA's vocabulary.
pub(crate) fn key_type_of(k: &TokenKey) -> Result<KeyType, PkiError> {
    match k.kind() {
        KeyKind::EcdsaP256 => Ok(KeyType::EcdsaP256),
        KeyKind::EcdsaP384 => Ok(KeyType::EcdsaP384),
        KeyKind::Rsa(3072) => Ok(KeyType::Rsa3072),
        other => Err(PkiError::UnsupportedKey {
            detail: format!(
                "the token key is {other}; a CA key is ecdsa-p256, ecdsa-p384 or rsa-3072"
            ),
        }),
    }
}

impl CaKey {
    /// A new key for `init`: in memory for file storage; for a token, the key the URI names if
    /// it exists (moving an existing key in), else a new one generated inside the token.
    pub(crate) fn create(storage: &KeyStorage, kt: KeyType) -> Result<CaKey, PkiError> {
        match storage {
            KeyStorage::File => Ok(CaKey::File(keys::generate(kt)?)),
            KeyStorage::Pkcs11(r) => Ok(CaKey::Token(r.open_or_generate(token_kind(kt)?)?.0)),
        }
    }

    /// The key of an existing CA: decrypts `intermediate.key` with `password`, or opens the
    /// token key the config names.
    pub(crate) fn load(
        storage: &KeyStorage,
        key_path: &Path,
        kt: KeyType,
        password: &[u8],
    ) -> Result<CaKey, PkiError> {
        match storage {
            KeyStorage::File => {
                let key_pem = pkcs8::der::zeroize::Zeroizing::new(
                    std::fs::read_to_string(key_path).map_err(super::io(key_path))?,
                );
                let plain = keys::decrypt_pkcs8_pem(&key_pem, password, key_path)?;
                Ok(CaKey::File(keys::load_pkcs8(plain.as_bytes(), kt)?))
            }
            KeyStorage::Pkcs11(r) => Ok(CaKey::Token(r.open()?)),
        }
    }

    /// The PKCS#8 DER of a file key (to encrypt at `init`); `None` for a token key.
    pub(crate) fn file_der(&self) -> Option<&[u8]> {
        match self {
            CaKey::File(k) => Some(k.serialized_der()),
            CaKey::Token(_) => None,
        }
    }

    /// The token key, when the key is in a token.
    pub fn token_key(&self) -> Option<&Arc<TokenKey>> {
        match self {
            CaKey::File(_) => None,
            CaKey::Token(k) => Some(k),
        }
    }
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            CaKey::File(k) => k.der_bytes(),
            CaKey::Token(k) => k.der_bytes(),
        }
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self {
            CaKey::File(k) => PublicKeyData::algorithm(k),
            CaKey::Token(k) => PublicKeyData::algorithm(k.as_ref()),
        }
    }

    fn subject_public_key_info(&self) -> Vec<u8> {
        match self {
            CaKey::File(k) => k.subject_public_key_info(),
            CaKey::Token(k) => k.subject_public_key_info(),
        }
    }
}

impl SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            CaKey::File(k) => k.sign(msg),
            CaKey::Token(k) => SigningKey::sign(k.as_ref(), msg),
        }
    }
}

/// A certificate request for `cn`, signed by a token key: how a key that cannot leave its token
/// asks the CA for a certificate (the CA checks the request's signature, so a token that signs
/// with the wrong key or not at all is caught before anything is issued). `ca serve
/// --server-key pkcs11:...` gets its rotating server certificate this way.
pub fn token_csr(key: &TokenKey, cn: &str) -> Result<super::Csr, PkiError> {
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let req = params.serialize_request(key)?;
    super::Csr::parse(req.der())
}
