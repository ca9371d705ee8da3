//! Which of the CA's private keys a command uses, and so whether it needs the CA password: only
//! keys kept in files are encrypted with it. A CA whose keys all live in PKCS#11 tokens needs no
//! password at all (docs/keys.md), and each command learns that from the CA's own files
//! (`mutual-ca.toml`, `issuers.toml`, `trust.toml`) before anything asks for one.
use std::path::Path;

use super::issuers::{parse_manifest, read_manifest, FIRST_ISSUER};
use super::key::KeyStorage;
use super::trust::read_state;
use super::{read_config, CaConfig, CONFIG};
use crate::PkiError;

/// The file of the provisioner key (signs enrollment tokens) when it is not in a token.
pub const PROVISIONER_KEY: &str = "provisioner.key";
/// The label of the provisioner key when it lives in the intermediate's token.
pub const PROVISIONER_OBJECT: &str = "mutual-provisioner";
/// The file of the key that signs JWT-SVIDs (`ca serve`, docs/agent.md) when it is not in a token.
pub const JWT_SVID_KEY: &str = "jwt-svid.key";
/// The label of the JWT-SVID signing key when it lives in the provisioner key's token.
pub const JWT_SVID_OBJECT: &str = "mutual-jwt-svid";

/// The keys a command uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeysUsed {
    /// Every issuing intermediate's: anything that opens the CA ([`super::Ca::open`]).
    pub issuers: bool,
    /// The root's (`ca crl --root`, the rotations).
    pub root: bool,
    /// The new root's, during a root rollover (`rotate-root --activate`).
    pub new_root: bool,
    /// The provisioner key that signs enrollment tokens (`ca serve`, `token create`).
    pub provisioner: bool,
    /// The key that signs JWT-SVIDs for agents (`ca serve`).
    pub jwt_svid: bool,
    /// A key the command creates in a file (encrypted with the password).
    pub new_file_key: bool,
}

impl KeysUsed {
    /// Only the issuing intermediates: whatever opens the CA to sign with them.
    pub const ISSUERS: KeysUsed = KeysUsed {
        issuers: true,
        root: false,
        new_root: false,
        provisioner: false,
        jwt_svid: false,
        new_file_key: false,
    };
    /// Only the provisioner key (`token create`).
    pub const PROVISIONER: KeysUsed = KeysUsed {
        provisioner: true,
        issuers: false,
        ..KeysUsed::ISSUERS
    };
}

/// Where the provisioner key is: `provisioner.key` when that file exists (a CA that made it
/// before its keys moved into a token keeps it), else where `mutual-ca.toml` says (`ca init`
/// puts it in the intermediate's token when that key is in one).
pub fn provisioner_storage(dir: &Path, config: &CaConfig) -> KeyStorage {
    if dir.join(PROVISIONER_KEY).exists() {
        KeyStorage::File
    } else {
        config.provisioner_key_storage.clone()
    }
}

/// Where the JWT-SVID signing key is: `jwt-svid.key` when that file exists, else beside the
/// provisioner key (in its token as `mutual-jwt-svid`, made at first use, or a file).
pub fn jwt_svid_storage(dir: &Path, config: &CaConfig) -> Result<KeyStorage, PkiError> {
    if dir.join(JWT_SVID_KEY).exists() {
        return Ok(KeyStorage::File);
    }
    match provisioner_storage(dir, config) {
        KeyStorage::File => Ok(KeyStorage::File),
        KeyStorage::Pkcs11(r) => Ok(KeyStorage::Pkcs11(r.sibling(JWT_SVID_OBJECT)?)),
    }
}

/// Whether a command using `keys` on the CA in `dir` needs the CA password: some key it uses
/// (or makes) is a file. No CA there yet: `true` (the command itself says what is missing).
pub fn needs_password(dir: &Path, keys: KeysUsed) -> Result<bool, PkiError> {
    if keys.new_file_key {
        return Ok(true);
    }
    if !dir.join(CONFIG).exists() {
        return Ok(true);
    }
    let config = read_config(dir)?;
    if keys.issuers {
        let m = parse_manifest(dir, read_manifest(dir)?.as_deref(), &config)?;
        let file = m.issuers.iter().any(|e| match &e.pkcs11 {
            _ if e.id == FIRST_ISSUER => config.key_storage.is_file(),
            Some(_) => false,
            None => true,
        });
        if file {
            return Ok(true);
        }
    }
    if keys.root && config.root_key_storage.is_file() {
        return Ok(true);
    }
    if keys.new_root && read_state(dir)?.new_root_key.is_none() {
        return Ok(true);
    }
    if keys.jwt_svid && jwt_svid_storage(dir, &config)?.is_file() {
        return Ok(true);
    }
    Ok(keys.provisioner && provisioner_storage(dir, &config).is_file())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn block(name: &str, object: &str) -> String {
        format!(
            "[{name}]\nkind = \"pkcs11\"\nmodule = \"/m.so\"\nuri = \"pkcs11:token=t;object={object}\"\n"
        )
    }

    /// A CA directory holding only a `mutual-ca.toml` with these storage blocks.
    fn ca(blocks: &[String]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = "name = \"T\"\nkey_type = \"ecdsa-p256\"\n[defaults]\nttl = \"86400s\"\n\
                       key_type = \"ecdsa-p256\"\n"
            .to_string();
        blocks.iter().for_each(|b| cfg.push_str(b));
        std::fs::write(d.path().join(CONFIG), cfg).unwrap();
        d
    }

    const ALL: KeysUsed = KeysUsed {
        issuers: true,
        root: true,
        new_root: false,
        provisioner: true,
        jwt_svid: true,
        new_file_key: false,
    };

    #[test]
    fn only_file_keys_need_the_password() {
        let all_token = ca(&[
            block("key_storage", "int"),
            block("root_key_storage", "root"),
            block("provisioner_key_storage", "mutual-provisioner"),
        ]);
        let d = all_token.path();
        assert!(!needs_password(d, ALL).unwrap());
        // A new file key, or a provisioner.key made before, needs it.
        let new_key = KeysUsed {
            new_file_key: true,
            ..KeysUsed::ISSUERS
        };
        assert!(needs_password(d, new_key).unwrap());
        // The JWT-SVID key sits in the provisioner's token; a jwt-svid.key file needs it.
        let jwt = KeysUsed {
            jwt_svid: true,
            ..KeysUsed::default()
        };
        assert!(!needs_password(d, jwt).unwrap());
        std::fs::write(d.join(JWT_SVID_KEY), "x").unwrap();
        assert!(needs_password(d, jwt).unwrap());
        std::fs::remove_file(d.join(JWT_SVID_KEY)).unwrap();
        std::fs::write(d.join(PROVISIONER_KEY), "x").unwrap();
        assert!(needs_password(d, KeysUsed::PROVISIONER).unwrap());
        assert!(!needs_password(d, KeysUsed::ISSUERS).unwrap());
        // A rotated file intermediate in issuers.toml needs it for anything opening the CA.
        std::fs::write(
            d.join("issuers.toml"),
            "default = \"int-2\"\n[[issuer]]\nid = \"int-1\"\nkey_type = \"ecdsa-p256\"\n\
             state = \"retiring\"\n[[issuer]]\nid = \"int-2\"\nkey_type = \"ecdsa-p256\"\n\
             state = \"active\"\n",
        )
        .unwrap();
        assert!(needs_password(d, KeysUsed::ISSUERS).unwrap());

        // A file root: only what uses the root needs it.
        let file_root = ca(&[
            block("key_storage", "int"),
            block("provisioner_key_storage", "mutual-provisioner"),
        ]);
        let d = file_root.path();
        assert!(!needs_password(d, KeysUsed::ISSUERS).unwrap());
        assert!(!needs_password(d, KeysUsed::PROVISIONER).unwrap());
        assert!(needs_password(d, ALL).unwrap());
        // No CA there: asked as before (the command then says what is missing).
        assert!(needs_password(&d.join("nothing"), KeysUsed::ISSUERS).unwrap());
    }
}
