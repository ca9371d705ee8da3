//! The CA's own ES256 (ECDSA P-256, fixed-size signatures) keys that are not certificate keys:
//! the provisioner key (signs enrollment tokens, crate::token) and the JWT-SVID key (crate::jwt).
//! One storage rule for both: in a PKCS#11 token (generated there at first use, sensitive, never
//! extractable) when the CA's configuration puts it there, else a file beside the CA keys,
//! encrypted with the CA password (created at first use), so that a CA with every key in tokens
//! needs no password (docs/keys.md).

use std::path::Path;

use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use mutual_pki::ca::KeyStorage;
use mutual_pki::{keys, KeyType, PkiError};

/// DER prefix of a P-256 SubjectPublicKeyInfo (algorithm id-ecPublicKey + prime256v1, then the
/// BIT STRING header) before the 65-byte uncompressed point.
pub(crate) const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Where the key signs.
enum Inner {
    File(EcdsaKeyPair),
    Token(std::sync::Arc<mutual_hsm::TokenKey>),
}

/// An ES256 signing key and its public half.
pub(crate) struct Es256Key {
    inner: Inner,
    spki_der: Vec<u8>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        error: source,
    }
}

impl Es256Key {
    /// The key `storage` names: in its token, or `DIR/FILE` (decrypted with `password`). Either
    /// is generated when absent. `what` names the key in errors ("the provisioner key").
    pub(crate) fn load_or_create(
        dir: &Path,
        file: &str,
        storage: KeyStorage,
        password: &[u8],
        what: &str,
    ) -> Result<Es256Key, PkiError> {
        match storage {
            KeyStorage::File => Self::file_key(&dir.join(file), password),
            KeyStorage::Pkcs11(r) => Self::token_key(&r, what),
        }
    }

    fn token_key(r: &mutual_hsm::KeyRef, what: &str) -> Result<Es256Key, PkiError> {
        let key = match r.open_or_generate(mutual_hsm::KeyKind::EcdsaP256) {
            Ok((k, _)) => k,
            // Another process (a replica starting at the same time) generated it first.
            Err(mutual_hsm::HsmError::KeyExists { .. }) => r.open()?,
            Err(e) => return Err(e.into()),
        };
        let spki = key.spki();
        if key.kind() != mutual_hsm::KeyKind::EcdsaP256
            || !spki.starts_with(&P256_SPKI_PREFIX)
            || spki.len() != P256_SPKI_PREFIX.len() + 65
        {
            return Err(PkiError::Key {
                detail: format!(
                    "{what} {} is {}; it must be ECDSA P-256 (ES256)",
                    r.uri,
                    key.kind()
                ),
            });
        }
        let spki_der = spki.to_vec();
        Ok(Es256Key {
            inner: Inner::Token(key),
            spki_der,
        })
    }

    fn file_key(key_path: &Path, password: &[u8]) -> Result<Es256Key, PkiError> {
        if !key_path.exists() {
            let fresh = keys::generate(KeyType::EcdsaP256)?;
            let pem = keys::encrypt_pkcs8_pem(fresh.serialized_der(), password)?;
            match keys::write_atomic(key_path, pem.as_bytes(), 0o600, false) {
                Ok(()) => {}
                // Another process created it first: use theirs.
                Err(PkiError::Io { error: source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        // The file is the encrypted form: nothing secret until decrypted (SecretDocument
        // zeroizes the plaintext on drop).
        let pem = std::fs::read_to_string(key_path).map_err(io_err(key_path))?;
        let plain = keys::decrypt_pkcs8_pem(&pem, password, key_path)?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, plain.as_bytes())
            .map_err(|_| PkiError::Key {
                detail: format!("{} is not an ECDSA P-256 key", key_path.display()),
            })?;
        let mut spki_der = P256_SPKI_PREFIX.to_vec();
        spki_der.extend_from_slice(key.public_key().as_ref());
        Ok(Es256Key {
            inner: Inner::File(key),
            spki_der,
        })
    }

    /// The SubjectPublicKeyInfo (DER).
    pub(crate) fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The uncompressed public point (0x04 || X || Y, 65 bytes).
    pub(crate) fn public_point(&self) -> &[u8] {
        &self.spki_der[P256_SPKI_PREFIX.len()..]
    }

    /// The fixed-size (R || S, 64 bytes) signature of `input`, as JWS ES256 wants it.
    pub(crate) fn sign(&self, input: &[u8]) -> Result<Vec<u8>, String> {
        match &self.inner {
            Inner::File(k) => k
                .sign(&aws_lc_rs::rand::SystemRandom::new(), input)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "signing failed".to_string()),
            Inner::Token(k) => k
                .sign_ecdsa_fixed(input)
                .map_err(|e| format!("signing failed: {e}")),
        }
    }
}
