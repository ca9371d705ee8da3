//! Material that arrives pushed instead of as files: a listener fed by the SPIFFE Workload API
//! (`serve --workload-api unix:///run/mutual/agent.sock`) names its certificate, key and CA
//! bundle with paths under a source (`workload-api:unix:///run/mutual/agent.sock#cert`), and the
//! loaders in [`crate::load`] read those from here instead of the disk. So the pushed material
//! goes through exactly what a file goes through (the same parse, key match and checks, the same
//! reload, metrics and log lines), and the key never touches a disk.
//!
//! [`publish`] replaces a source's three items at once and then bumps its generation;
//! [`subscribe`] gives the reload loop a receiver that wakes on each bump. A reload started after
//! the bump reads a consistent set; one racing a second publish fails its key match at worst and
//! the second bump's reload follows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Every memory path starts with this.
pub const PREFIX: &str = "workload-api:";

/// One source's current material.
struct Item {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    bundle: Vec<CertificateDer<'static>>,
}

#[derive(Default)]
struct Store {
    items: HashMap<String, Item>,
    generations: HashMap<String, tokio::sync::watch::Sender<u64>>,
}

static STORE: Mutex<Option<Store>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Store) -> R) -> R {
    let mut g = STORE.lock().unwrap_or_else(PoisonError::into_inner);
    f(g.get_or_insert_with(Store::default))
}

/// Which of a source's items a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Cert,
    Key,
    Ca,
}

impl Part {
    fn suffix(self) -> &'static str {
        match self {
            Part::Cert => "#cert",
            Part::Key => "#key",
            Part::Ca => "#ca",
        }
    }
}

/// The source a Workload API address (and the SPIFFE ID picked, if any) makes.
pub fn source(uri: &str, spiffe_id: Option<&str>) -> String {
    match spiffe_id {
        Some(id) => format!("{PREFIX}{uri}?{id}"),
        None => format!("{PREFIX}{uri}"),
    }
}

/// The Workload API address and SPIFFE ID a source was made from ([`source`]'s inverse).
pub fn parse_source(source: &str) -> Option<(String, Option<String>)> {
    let rest = source.strip_prefix(PREFIX)?;
    Some(match rest.split_once('?') {
        Some((uri, id)) => (uri.to_string(), Some(id.to_string())),
        None => (rest.to_string(), None),
    })
}

/// The path a listener's settings use for one item of `source`.
pub fn path(source: &str, part: Part) -> PathBuf {
    PathBuf::from(format!("{source}{}", part.suffix()))
}

/// Whether `path` names pushed material (no file to read or watch).
pub fn is_memory(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.starts_with(PREFIX))
}

/// The source and part a memory path names.
fn split(path: &Path) -> Option<(&str, Part)> {
    let p = path.to_str()?;
    [Part::Cert, Part::Key, Part::Ca]
        .into_iter()
        .find_map(|part| p.strip_suffix(part.suffix()).map(|s| (s, part)))
}

/// The source a memory path belongs to.
pub fn source_of(path: &Path) -> Option<String> {
    split(path).map(|(s, _)| s.to_string())
}

/// Replaces `source`'s material (chain leaf first, PKCS#8 key, trusted roots) and wakes its
/// subscribers.
pub fn publish(
    source: &str,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    bundle: Vec<CertificateDer<'static>>,
) {
    let tx = with(|s| {
        s.items.insert(
            source.to_string(),
            Item {
                chain,
                key: Arc::new(key),
                bundle,
            },
        );
        s.generations
            .entry(source.to_string())
            .or_insert_with(|| tokio::sync::watch::channel(0).0)
            .clone()
    });
    tx.send_modify(|g| *g += 1);
}

/// A receiver that changes on every [`publish`] to `source` after this call.
pub fn subscribe(source: &str) -> tokio::sync::watch::Receiver<u64> {
    with(|s| {
        s.generations
            .entry(source.to_string())
            .or_insert_with(|| tokio::sync::watch::channel(0).0)
            .subscribe()
    })
}

/// Whether `source` has material yet.
pub fn has(source: &str) -> bool {
    with(|s| s.items.contains_key(source))
}

fn missing(path: &Path) -> crate::TlsError {
    crate::TlsError::BadFile {
        path: path.to_path_buf(),
        detail: "no material received from the Workload API yet".into(),
    }
}

/// The certificates a memory path names (the chain for `#cert`, the bundle for `#ca`).
pub(crate) fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, crate::TlsError> {
    let (src, part) = split(path).ok_or_else(|| missing(path))?;
    with(|s| {
        let item = s.items.get(src)?;
        match part {
            Part::Cert => Some(item.chain.clone()),
            Part::Ca => Some(item.bundle.clone()),
            Part::Key => None,
        }
    })
    .ok_or_else(|| missing(path))
}

/// The key a memory path names.
pub(crate) fn key(path: &Path) -> Result<PrivateKeyDer<'static>, crate::TlsError> {
    let (src, part) = split(path).ok_or_else(|| missing(path))?;
    if part != Part::Key {
        return Err(missing(path));
    }
    with(|s| s.items.get(src).map(|i| i.key.clone_key())).ok_or_else(|| missing(path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn paths_name_their_source_and_part() {
        let src = source("unix:///run/a.sock", Some("spiffe://ex.org/web"));
        let p = path(&src, Part::Key);
        assert!(is_memory(&p));
        assert!(!is_memory(Path::new("/etc/key.pem")));
        assert_eq!(source_of(&p).as_deref(), Some(src.as_str()));
        assert_eq!(
            parse_source(&src),
            Some((
                "unix:///run/a.sock".to_string(),
                Some("spiffe://ex.org/web".to_string())
            ))
        );
        assert!(certs(&path(&src, Part::Cert)).is_err());
        let mut rx = subscribe(&src);
        publish(
            &src,
            vec![CertificateDer::from(vec![1u8])],
            PrivateKeyDer::Pkcs8(vec![2u8].into()),
            vec![CertificateDer::from(vec![3u8])],
        );
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        assert_eq!(certs(&path(&src, Part::Ca)).unwrap()[0].as_ref(), &[3u8]);
        assert_eq!(key(&p).unwrap().secret_der(), &[2u8]);
        assert!(key(&path(&src, Part::Cert)).is_err());
    }
}
