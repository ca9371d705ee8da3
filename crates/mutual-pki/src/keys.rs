//! Key generation, password protection of CA keys, and the careful file writing every secret
//! needs.
//!
//! CA keys are stored as PKCS#8 `ENCRYPTED PRIVATE KEY` (PBES2: scrypt N=2^14, r=8, p=1 with
//! AES-256-CBC), which `openssl pkey -passin` reads. pkcs8's default scrypt cost (N=2^17,
//! 128 MiB) exceeds OpenSSL's scrypt memory limit, hence the explicit parameters; see
//! docs/pki.md for the measured cost and why scrypt rather than PBKDF2.
//!
//! Files are written to a temporary file in the target directory with their final mode (0600
//! for keys), fsynced, then renamed (or hard-linked when the target must not already exist), so a
//! crash or a full disk never leaves a half-written key under the real name.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pkcs8::der::zeroize::Zeroizing;
use pkcs8::{EncryptedPrivateKeyInfo, LineEnding, PrivateKeyInfo, SecretDocument};
use rcgen::KeyPair;

use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::{KeyType, PkiError};

/// The kind of a public key someone presents (a CSR's, a certificate's): what the CA accepts
/// is decided on this enum, what a person reads is its `Display`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    EcdsaP256,
    EcdsaP384,
    EcdsaP521,
    /// An ECDSA key on another curve (its OID), or with no curve named.
    EcdsaOther(Option<String>),
    Ed25519,
    Ed448,
    /// An RSA key whose modulus cannot be read.
    RsaUnparsable,
    /// Any other algorithm (its OID).
    Other(String),
}

impl KeyKind {
    /// The kind and size in bits of a SubjectPublicKeyInfo.
    pub fn of(spki: &SubjectPublicKeyInfo<'_>) -> (KeyKind, usize) {
        let oid = spki.algorithm.algorithm.to_id_string();
        match oid.as_str() {
            "1.3.101.112" => (KeyKind::Ed25519, 256),
            "1.3.101.113" => (KeyKind::Ed448, 456),
            "1.2.840.10045.2.1" => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string());
                let bits = match spki.parsed() {
                    Ok(PublicKey::EC(ec)) => ec.key_size(),
                    _ => 0,
                };
                let kind = match curve.as_deref() {
                    Some("1.2.840.10045.3.1.7") => KeyKind::EcdsaP256,
                    Some("1.3.132.0.34") => KeyKind::EcdsaP384,
                    Some("1.3.132.0.35") => KeyKind::EcdsaP521,
                    other => KeyKind::EcdsaOther(other.map(str::to_string)),
                };
                (kind, bits)
            }
            "1.2.840.113549.1.1.1" => match spki.parsed() {
                Ok(PublicKey::RSA(r)) => (KeyKind::Rsa, mutual_policy::facts::rsa_bits(r.modulus)),
                _ => (KeyKind::RsaUnparsable, 0),
            },
            _ => (KeyKind::Other(oid), 0),
        }
    }

    /// The inventory's word for a key of this kind and size (`key_type`, `cert list
    /// --key-type`): the `--key-type` vocabulary, with RSA's size (`rsa-2048`, `rsa-4096`), and
    /// the kind's own name for keys the CA does not issue for (`ecdsa-p521`, `ed448`, `other`).
    pub fn label(&self, bits: usize) -> String {
        match self {
            KeyKind::Rsa => format!("rsa-{bits}"),
            KeyKind::EcdsaP256 => "ecdsa-p256".into(),
            KeyKind::EcdsaP384 => "ecdsa-p384".into(),
            KeyKind::EcdsaP521 => "ecdsa-p521".into(),
            KeyKind::EcdsaOther(_) => "ecdsa-other".into(),
            KeyKind::Ed25519 => "ed25519".into(),
            KeyKind::Ed448 => "ed448".into(),
            KeyKind::RsaUnparsable => "rsa-unknown".into(),
            KeyKind::Other(_) => "other".into(),
        }
    }

    /// Whether the CA signs certificates for a key of this kind and size: ECDSA P-256/P-384,
    /// Ed25519, RSA of 2048 to 8192 bits in whole bytes. `what` names the key in the message ("the CSR's key").
    pub fn check_issuable(&self, bits: usize, what: &str) -> Result<(), PkiError> {
        use mutual_policy::facts::RsaSizeProblem;
        match (self, RsaSizeProblem::of(bits)) {
            // What the lint's rsa-modulus-size calls an error (CABF BR 6.1.5).
            (KeyKind::Rsa, Some(p)) => {
                let detail = format!("{what} is RSA-{bits}; {}", p.why());
                Err(match p {
                    RsaSizeProblem::TooSmall => PkiError::WeakKey { detail },
                    RsaSizeProblem::NotWholeBytes => PkiError::UnsupportedKey { detail },
                })
            }
            // aws-lc-rs (and so rustls and webpki) verifies RSA signatures up to 8192 bits: a
            // larger key's CSR "does not verify", and no TLS peer of ours could check its
            // handshake signature.
            (KeyKind::Rsa, None) if bits > 8192 => Err(PkiError::UnsupportedKey {
                detail: format!(
                    "{what} is RSA-{bits}; at most 8192 bits, the largest RSA key rustls, \
                     webpki and aws-lc verify"
                ),
            }),
            (KeyKind::Rsa | KeyKind::EcdsaP256 | KeyKind::EcdsaP384 | KeyKind::Ed25519, _) => {
                Ok(())
            }
            (other, _) => Err(PkiError::UnsupportedKey {
                detail: format!("{what} is {other}; use ECDSA P-256/P-384, Ed25519 or RSA >= 2048"),
            }),
        }
    }
}

/// The key types a filter offers (`cert list --key-type`, the console's select): what the CA
/// issues for, the usual RSA sizes, and `unknown` for rows recorded before the inventory kept
/// key types (migration 0010).
pub const KEY_TYPE_FILTERS: [&str; 7] = [
    "ecdsa-p256",
    "ecdsa-p384",
    "ed25519",
    "rsa-2048",
    "rsa-3072",
    "rsa-4096",
    mutual_store::KEY_TYPE_UNKNOWN,
];

/// A key-type filter as a person typed it: one of [`KeyKind::label`]'s words (any RSA size) or
/// `unknown`, in any case.
pub fn parse_key_type_filter(s: &str) -> Result<String, String> {
    let v = s.trim().to_ascii_lowercase();
    let rsa_size = v
        .strip_prefix("rsa-")
        .is_some_and(|n| !n.is_empty() && n.len() <= 5 && n.bytes().all(|b| b.is_ascii_digit()));
    let known = [
        "ecdsa-p256",
        "ecdsa-p384",
        "ecdsa-p521",
        "ecdsa-other",
        "ed25519",
        "ed448",
        "rsa-unknown",
        "other",
        mutual_store::KEY_TYPE_UNKNOWN,
    ];
    if rsa_size || known.contains(&v.as_str()) {
        Ok(v)
    } else {
        Err(format!(
            "unknown key type {s:?} (expected {}, rsa-BITS or unknown)",
            KEY_TYPE_FILTERS[..KEY_TYPE_FILTERS.len() - 1].join(", ")
        ))
    }
}

impl KeyKind {
    /// The key type a new key of this kind is made as (an RSA key of any size: rsa-3072, the
    /// one RSA size mutual generates); `None` for kinds mutual does not generate.
    pub fn key_type(&self) -> Option<KeyType> {
        match self {
            KeyKind::EcdsaP256 => Some(KeyType::EcdsaP256),
            KeyKind::EcdsaP384 => Some(KeyType::EcdsaP384),
            KeyKind::Ed25519 => Some(KeyType::Ed25519),
            KeyKind::Rsa => Some(KeyType::Rsa3072),
            _ => None,
        }
    }
}

/// The key type of the certificate `der`'s key, to make its successor's key alike (`renew
/// --new-key`, EST re-enrollment); `None` when it cannot be read or mutual makes no such key.
pub fn key_type_of_certificate(der: &[u8]) -> Option<KeyType> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    KeyKind::of(cert.public_key()).0.key_type()
}

/// The kind of a key the CA generates.
impl From<KeyType> for KeyKind {
    fn from(kt: KeyType) -> KeyKind {
        match kt {
            KeyType::EcdsaP256 => KeyKind::EcdsaP256,
            KeyType::EcdsaP384 => KeyKind::EcdsaP384,
            KeyType::Ed25519 => KeyKind::Ed25519,
            KeyType::Rsa3072 => KeyKind::Rsa,
        }
    }
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::Rsa => f.write_str("RSA"),
            KeyKind::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyKind::EcdsaP384 => f.write_str("ECDSA P-384"),
            KeyKind::EcdsaP521 => f.write_str("ECDSA P-521"),
            KeyKind::EcdsaOther(Some(c)) => write!(f, "ECDSA (curve {c})"),
            KeyKind::EcdsaOther(None) => f.write_str("ECDSA (unknown curve)"),
            KeyKind::Ed25519 => f.write_str("Ed25519"),
            KeyKind::Ed448 => f.write_str("Ed448"),
            KeyKind::RsaUnparsable => f.write_str("RSA (unparsable)"),
            KeyKind::Other(oid) => write!(f, "unknown key algorithm {oid}"),
        }
    }
}

/// scrypt cost: log2(N) = 14, r = 8, p = 1 (16 MiB, OpenSSL's default limit is 32 MiB).
const SCRYPT_LOG_N: u8 = 14;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;

/// Generates a fresh key of the given type.
pub fn generate(kt: KeyType) -> Result<KeyPair, PkiError> {
    let r = match kt {
        KeyType::Rsa3072 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)
        }
        other => KeyPair::generate_for(other.signature_algorithm()),
    };
    r.map_err(|e| PkiError::Key {
        detail: format!("cannot generate a {kt} key: {e}"),
    })
}

/// A key the CA generates for a certificate it issues and hands out: its PKCS#8 v1 DER (the
/// form [`pkcs8_pem`] writes) and its public half, nothing more. The CA never signs with it, so
/// an ECDSA key is not loaded back into a signing key pair (rcgen's `KeyPair::generate_for`
/// re-parses the PKCS#8 it just made and checks the key, one more scalar multiplication).
pub struct LeafKey {
    pkcs8: Zeroizing<Vec<u8>>,
    public: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
    bits: usize,
}

impl LeafKey {
    /// A new key of `kt`.
    pub fn generate(kt: KeyType) -> Result<LeafKey, PkiError> {
        use aws_lc_rs::signature::{self as sig, KeyPair as _};
        // The curve's OID (DER content octets): prime256v1, secp384r1.
        let ec: Option<(_, usize, &[u8])> = match kt {
            KeyType::EcdsaP256 => Some((
                &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
                256,
                &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            )),
            KeyType::EcdsaP384 => Some((
                &sig::ECDSA_P384_SHA384_ASN1_SIGNING,
                384,
                &[0x2b, 0x81, 0x04, 0x00, 0x22],
            )),
            KeyType::Ed25519 | KeyType::Rsa3072 => None,
        };
        let Some((ec_alg, bits, curve)) = ec else {
            let k = generate(kt)?;
            return Ok(LeafKey {
                pkcs8: pkcs8_v1_der(k.serialized_der())?,
                public: rcgen::PublicKeyData::der_bytes(&k).to_vec(),
                alg: kt.signature_algorithm(),
                bits: if kt == KeyType::Rsa3072 { 3072 } else { 256 },
            });
        };
        let fail = |e: aws_lc_rs::error::Unspecified| PkiError::Key {
            detail: format!("cannot generate a {kt} key: {e}"),
        };
        let k = sig::EcdsaKeyPair::generate(ec_alg).map_err(fail)?;
        let public = k.public_key().as_ref().to_vec();
        // The same PKCS#8 v1 document `EcdsaKeyPair::to_pkcs8v1` returns (unit-tested), put
        // together from the parts: aws-lc's encoder converts the public point to affine
        // coordinates again, a field inversion (~20,000 instructions per certificate).
        let scalar =
            aws_lc_rs::encoding::AsBigEndian::as_be_bytes(&k.private_key()).map_err(fail)?;
        let pkcs8 = ec_pkcs8_v1(curve, scalar.as_ref(), &public);
        Ok(LeafKey {
            pkcs8,
            public,
            alg: kt.signature_algorithm(),
            bits,
        })
    }

    /// PKCS#8 v1 DER (what rustls and PKCS#12 take).
    pub fn pkcs8_v1_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// PKCS#8 v1 PEM (`PRIVATE KEY`), as [`pkcs8_pem`] writes it.
    pub fn pem(&self) -> Result<Zeroizing<String>, PkiError> {
        pkcs8::der::pem::encode_string("PRIVATE KEY", LineEnding::LF, &self.pkcs8)
            .map(Zeroizing::new)
            .map_err(|e| PkiError::Key {
                detail: format!("cannot encode PEM: {e}"),
            })
    }

    /// Its size in bits (the RSA modulus, the EC field).
    pub fn bits(&self) -> usize {
        self.bits
    }
}

/// PKCS#8 v1 of an EC key as aws-lc's `EVP_marshal_private_key` writes it: the curve in the
/// AlgorithmIdentifier, and in the RFC 5915 ECPrivateKey the scalar and the public point (no
/// parameters).
fn ec_pkcs8_v1(curve_oid: &[u8], scalar: &[u8], public: &[u8]) -> Zeroizing<Vec<u8>> {
    fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
        out.push(tag);
        // Lengths stay below 64 KiB here (an EC key of a few hundred bytes at most).
        match u16::try_from(content.len()).unwrap_or(u16::MAX) {
            n @ 0..=0x7f => out.push(n as u8),
            n @ 0x80..=0xff => out.extend_from_slice(&[0x81, n as u8]),
            n => {
                out.push(0x82);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        out.extend_from_slice(content);
    }
    // id-ecPublicKey (1.2.840.10045.2.1).
    const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let mut alg = Vec::with_capacity(32);
    tlv(&mut alg, 0x06, EC_PUBLIC_KEY);
    tlv(&mut alg, 0x06, curve_oid);
    let mut bits = Vec::with_capacity(public.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(public);
    let mut point = Vec::with_capacity(bits.len() + 3);
    tlv(&mut point, 0x03, &bits);
    let mut ec_key = Zeroizing::new(Vec::with_capacity(scalar.len() + point.len() + 16));
    tlv(&mut ec_key, 0x02, &[1]);
    tlv(&mut ec_key, 0x04, scalar);
    tlv(&mut ec_key, 0xa1, &point);
    let mut ec_seq = Zeroizing::new(Vec::with_capacity(ec_key.len() + 3));
    tlv(&mut ec_seq, 0x30, &ec_key);
    let mut body = Zeroizing::new(Vec::with_capacity(ec_seq.len() + alg.len() + 12));
    tlv(&mut body, 0x02, &[0]);
    tlv(&mut body, 0x30, &alg);
    tlv(&mut body, 0x04, &ec_seq);
    let mut out = Zeroizing::new(Vec::with_capacity(body.len() + 4));
    tlv(&mut out, 0x30, &body);
    out
}

impl rcgen::PublicKeyData for LeafKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

/// Loads a plaintext PKCS#8 DER key of a known type.
pub fn load_pkcs8(der: &[u8], kt: KeyType) -> Result<KeyPair, PkiError> {
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(der);
    KeyPair::from_pkcs8_der_and_sign_algo(&der, kt.signature_algorithm()).map_err(|e| {
        PkiError::Key {
            detail: format!("the key is not a valid {kt} PKCS#8 key: {e}"),
        }
    })
}

/// Encrypts a PKCS#8 DER private key with `password`, returning `ENCRYPTED PRIVATE KEY` PEM.
pub fn encrypt_pkcs8_pem(der: &[u8], password: &[u8]) -> Result<Zeroizing<String>, PkiError> {
    if password.is_empty() {
        return Err(PkiError::EmptyPassword);
    }
    let kerr = |what: &str| PkiError::Key {
        detail: what.to_string(),
    };
    let v1 = pkcs8_v1_der(der)?;
    let info = PrivateKeyInfo::try_from(v1.as_slice()).map_err(|_| kerr("not a PKCS#8 key"))?;
    let salt: [u8; 16] = rand::random();
    let iv: [u8; 16] = rand::random();
    let sp = pkcs8::pkcs5::scrypt::Params::new(SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P, 32)
        .map_err(|_| kerr("bad scrypt parameters"))?;
    let params = pkcs8::pkcs5::pbes2::Parameters::scrypt_aes256cbc(sp, &salt, &iv)
        .map_err(|_| kerr("bad PBES2 parameters"))?;
    let doc = info
        .encrypt_with_params(params, password)
        .map_err(|_| kerr("encryption failed"))?;
    doc.to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
        .map_err(|_| kerr("PEM encoding failed"))
}

/// Decrypts an `ENCRYPTED PRIVATE KEY` PEM. Any failure (bad padding, bad structure) is reported
/// as a wrong password: the two cannot be told apart reliably, and the message must not help
/// an attacker either way.
pub fn decrypt_pkcs8_pem(
    pem: &str,
    password: &[u8],
    path: &Path,
) -> Result<SecretDocument, PkiError> {
    let wrong = || PkiError::WrongPassword {
        path: path.to_path_buf(),
    };
    let (label, doc) = SecretDocument::from_pem(pem).map_err(|_| wrong())?;
    if label != "ENCRYPTED PRIVATE KEY" {
        return Err(PkiError::Key {
            detail: format!(
                "{}: expected an ENCRYPTED PRIVATE KEY, found {label}",
                path.display()
            ),
        });
    }
    let enc = EncryptedPrivateKeyInfo::try_from(doc.as_bytes()).map_err(|_| wrong())?;
    let plain = enc.decrypt(password).map_err(|_| wrong())?;
    // A wrong password occasionally yields valid padding; the PKCS#8 structure catches that.
    PrivateKeyInfo::try_from(plain.as_bytes()).map_err(|_| wrong())?;
    Ok(plain)
}

/// Re-encodes a PKCS#8 key as version 1 (no embedded public key). aws-lc writes Ed25519 keys
/// as PKCS#8 v2, which OpenSSL 3.0 cannot load; v1 is what every tool reads.
pub fn pkcs8_v1_der(der: &[u8]) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    use pkcs8::der::Encode;
    let mut info = PrivateKeyInfo::try_from(der).map_err(|_| PkiError::Key {
        detail: "not a PKCS#8 key".into(),
    })?;
    info.public_key = None;
    info.to_der()
        .map(Zeroizing::new)
        .map_err(|e| PkiError::Key {
            detail: format!("cannot encode PKCS#8: {e}"),
        })
}

/// Plaintext PKCS#8 v1 PEM (`PRIVATE KEY`) for leaf keys handed to services.
pub fn pkcs8_pem(key: &KeyPair) -> Result<Zeroizing<String>, PkiError> {
    let der = pkcs8_v1_der(key.serialized_der())?;
    pkcs8::der::pem::encode_string("PRIVATE KEY", LineEnding::LF, &der)
        .map(Zeroizing::new)
        .map_err(|e| PkiError::Key {
            detail: format!("cannot encode PEM: {e}"),
        })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        error: source,
    }
}

/// A file written and fsynced under a temporary name in its final directory, not yet visible
/// under its real name. Dropping it without [`StagedFile::commit`] removes it.
pub struct StagedFile {
    tmp: tempfile::NamedTempFile,
    target: PathBuf,
}

impl StagedFile {
    /// Writes `data` to a temporary file next to `target`, with `mode`, and fsyncs it.
    pub fn write(target: &Path, data: &[u8], mode: u32) -> Result<StagedFile, PkiError> {
        let staged = StagedFile::write_unsynced(target, data, mode)?;
        staged.sync()?;
        Ok(staged)
    }

    /// Makes the staged content durable.
    pub fn sync(&self) -> Result<(), PkiError> {
        self.tmp.as_file().sync_all().map_err(io(&self.target))
    }

    /// [`StagedFile::write`] without the fsync, for a caller that syncs many files at once
    /// ([`StagedFile::sync`] from several threads: the filesystem commits them together).
    pub fn write_unsynced(target: &Path, data: &[u8], mode: u32) -> Result<StagedFile, PkiError> {
        let dir = parent_dir(target);
        let prefix = tmp_prefix(target);
        let mut tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .permissions(std::fs::Permissions::from_mode(mode))
            .tempfile_in(&dir)
            .map_err(io(&dir))?;
        // The umask may have narrowed the mode further; make it exactly `mode`.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io(target))?;
        tmp.write_all(data).map_err(io(target))?;
        Ok(StagedFile {
            tmp,
            target: target.to_path_buf(),
        })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Keeps the file under its temporary name (no removal on drop) and returns that name: the
    /// caller's journal names it, and the caller renames or removes it (batch issuance, where a
    /// `kill -9` after the store commit must find the staged files to finish the job).
    pub fn keep(self) -> Result<PathBuf, PkiError> {
        let target = self.target;
        self.tmp
            .keep()
            .map(|(_, path)| path)
            .map_err(|e| PkiError::Io {
                path: target,
                error: e.error,
            })
    }

    /// Moves the file to its real name. With `overwrite == false` an existing file is an error
    /// (and is left untouched).
    pub fn commit(self, overwrite: bool) -> Result<(), PkiError> {
        let target = self.target;
        let res = if overwrite {
            self.tmp.persist(&target).map(|_| ())
        } else {
            self.tmp.persist_noclobber(&target).map(|_| ())
        };
        res.map_err(|e| PkiError::Io {
            path: target.clone(),
            error: e.error,
        })?;
        sync_dir(&parent_dir(&target));
        Ok(())
    }
}

/// The prefix of the temporary files staged for `target` (`.mutual-tmp-NAME-`), so that what a
/// killed writer left behind can be found by name and removed ([`remove_stale_staged`]).
fn tmp_prefix(target: &Path) -> String {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".mutual-tmp-{name}-")
}

/// Removes temporary files that a writer of `target` staged and never committed (it was killed
/// between writing and renaming). Only call it while no other process can be writing `target`
/// (the caller holds a lock); returns how many were removed.
pub fn remove_stale_staged(target: &Path) -> usize {
    let dir = parent_dir(target);
    let prefix = tmp_prefix(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        // tempfile appends 6 random characters to the prefix.
        if name.starts_with(&prefix)
            && name.len() == prefix.len() + 6
            && std::fs::remove_file(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(&dir);
    }
    removed
}

/// Removes every temporary file staged in `dir` ([`StagedFile`]'s `.mutual-tmp-` names) that
/// nothing committed. Only under the caller's lock on `dir`; returns how many were removed.
pub fn remove_all_stale_staged(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let removed = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".mutual-tmp-"))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count();
    if removed > 0 {
        sync_dir(dir);
    }
    removed
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes the rename durable. Best effort: some filesystems refuse fsync on directories.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `data` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32, overwrite: bool) -> Result<(), PkiError> {
    StagedFile::write(path, data, mode)?.commit(overwrite)
}

/// A PKCS#12 bundle of `key` (PKCS#8 DER) and `chain` (DER, leaf first), PBES2 AES-256 with
/// HMAC-SHA256 integrity, as `openssl pkcs12` (OpenSSL 3) reads by default.
pub fn pkcs12(
    friendly_name: &str,
    key_pkcs8_der: &[u8],
    chain_der: &[Vec<u8>],
    password: &str,
) -> Result<Vec<u8>, PkiError> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKeyChain};
    if password.is_empty() {
        return Err(PkiError::P12 {
            detail: "the PKCS#12 password must not be empty".into(),
        });
    }
    let perr = |e: p12_keystore::error::Error| PkiError::P12 {
        detail: e.to_string(),
    };
    let certs = chain_der
        .iter()
        .map(|d| Certificate::from_der(d).map_err(perr))
        .collect::<Result<Vec<_>, _>>()?;
    let local_key_id: [u8; 20] = rand::random();
    let chain = PrivateKeyChain::new(key_pkcs8_der, local_key_id, certs);
    let mut ks = KeyStore::new();
    ks.add_entry(friendly_name, KeyStoreEntry::PrivateKeyChain(chain));
    ks.writer(password)
        .encryption_iterations(100_000)
        .mac_iterations(100_000)
        .write()
        .map_err(perr)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use x509_parser::prelude::FromDer;

    // A generated leaf key is what rcgen's KeyPair would have handed out: PKCS#8 v1 that
    // re-encodes to itself, loads back as a key of its type with the same public half, and
    // the PEM `pkcs8_pem` writes for that key.
    #[test]
    fn rsa_sizes_the_ca_issues() {
        let weak = |b| {
            matches!(
                KeyKind::Rsa.check_issuable(b, "k"),
                Err(PkiError::WeakKey { .. })
            )
        };
        let unsupported = |b| {
            matches!(
                KeyKind::Rsa.check_issuable(b, "k"),
                Err(PkiError::UnsupportedKey { .. })
            )
        };
        assert!(weak(1024) && weak(2047));
        assert!(unsupported(2052) && unsupported(8200) && unsupported(16384));
        for ok in [2048, 3072, 4096, 8192] {
            assert!(KeyKind::Rsa.check_issuable(ok, "k").is_ok(), "{ok}");
        }
    }

    #[test]
    fn leaf_keys_are_the_pkcs8_a_key_pair_writes() {
        for kt in KeyType::ALL {
            if kt == KeyType::Rsa3072 {
                continue; // slow to generate; it takes rcgen's path unchanged
            }
            let k = LeafKey::generate(kt).unwrap();
            assert_eq!(
                pkcs8_v1_der(k.pkcs8_v1_der()).unwrap().as_slice(),
                k.pkcs8_v1_der()
            );
            // The hand-built EC PKCS#8 is byte for byte aws-lc's own encoding of that key.
            if let Some(alg) = match kt {
                KeyType::EcdsaP256 => Some(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING),
                KeyType::EcdsaP384 => Some(&aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1_SIGNING),
                _ => None,
            } {
                let pair =
                    aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(alg, k.pkcs8_v1_der()).unwrap();
                assert_eq!(pair.to_pkcs8v1().unwrap().as_ref(), k.pkcs8_v1_der());
            }
            let pair = load_pkcs8(k.pkcs8_v1_der(), kt).unwrap();
            assert_eq!(rcgen::PublicKeyData::der_bytes(&pair), k.public.as_slice());
            assert_eq!(
                rcgen::PublicKeyData::subject_public_key_info(&pair),
                rcgen::PublicKeyData::subject_public_key_info(&k)
            );
            assert_eq!(*pkcs8_pem(&pair).unwrap(), *k.pem().unwrap());
            let spki_der = rcgen::PublicKeyData::subject_public_key_info(&k);
            let (_, spki) = SubjectPublicKeyInfo::from_der(&spki_der).unwrap();
            let (kind, bits) = KeyKind::of(&spki);
            assert_eq!(kind.label(bits), KeyKind::from(kt).label(k.bits()));
        }
    }

    #[test]
    fn key_type_labels_and_filters() {
        assert_eq!(KeyKind::Rsa.label(2048), "rsa-2048");
        assert_eq!(KeyKind::EcdsaP384.label(384), "ecdsa-p384");
        assert_eq!(KeyKind::Ed25519.label(256), "ed25519");
        // The CA's own key types label as --key-type names them.
        for kt in KeyType::ALL {
            let bits = if kt == KeyType::Rsa3072 { 3072 } else { 0 };
            assert_eq!(KeyKind::from(kt).label(bits), kt.as_str());
        }
        assert_eq!(parse_key_type_filter(" RSA-4096 ").unwrap(), "rsa-4096");
        assert_eq!(parse_key_type_filter("unknown").unwrap(), "unknown");
        for bad in ["rsa-", "rsa-x", "dsa", "ecdsa", ""] {
            let e = parse_key_type_filter(bad).unwrap_err();
            assert!(e.starts_with("unknown key type"), "{bad}: {e}");
        }
    }

    #[test]
    fn encrypt_roundtrip_and_wrong_password() {
        let k = generate(KeyType::EcdsaP256).unwrap();
        let t = std::time::Instant::now();
        let pem = encrypt_pkcs8_pem(k.serialized_der(), b"correct horse").unwrap();
        let enc_cost = t.elapsed();
        let t = std::time::Instant::now();
        let plain = decrypt_pkcs8_pem(&pem, b"correct horse", Path::new("k")).unwrap();
        eprintln!("scrypt encrypt {enc_cost:?}, decrypt {:?}", t.elapsed());
        assert_eq!(plain.as_bytes(), k.serialized_der());
        let e = decrypt_pkcs8_pem(&pem, b"wrong", Path::new("k")).unwrap_err();
        assert!(matches!(e, PkiError::WrongPassword { .. }));
        assert!(encrypt_pkcs8_pem(k.serialized_der(), b"").is_err());
    }

    /// Prints the cost of one decryption with each KDF OpenSSL reads (docs/pki.md quotes it).
    /// `cargo test -p mutual-pki --release kdf_cost -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn kdf_cost() {
        let k = generate(KeyType::EcdsaP256).unwrap();
        let info = PrivateKeyInfo::try_from(k.serialized_der()).unwrap();
        let (salt, iv) = ([7u8; 16], [9u8; 16]);
        let pb =
            pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(600_000, &salt, &iv).unwrap();
        let doc = info.encrypt_with_params(pb, b"pw").unwrap();
        let t = std::time::Instant::now();
        EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
            .unwrap()
            .decrypt(b"pw")
            .unwrap();
        eprintln!("pbkdf2-sha256 600000: {:?}", t.elapsed());
        let pem = encrypt_pkcs8_pem(k.serialized_der(), b"pw").unwrap();
        let t = std::time::Instant::now();
        decrypt_pkcs8_pem(&pem, b"pw", Path::new("k")).unwrap();
        eprintln!("scrypt 2^14,8,1: {:?}", t.elapsed());
    }

    #[test]
    fn staged_file_is_removed_unless_committed() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("x.key");
        let s = StagedFile::write(&target, b"secret", 0o600).unwrap();
        drop(s);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        write_atomic(&target, b"one", 0o600, false).unwrap();
        assert!(write_atomic(&target, b"two", 0o600, false).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"one");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
