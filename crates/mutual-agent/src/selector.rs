//! Workload selectors (docs/agent.md): what a registration entry requires of the process that
//! calls the Workload API, as SPIRE's `unix` workload attestor names them. Parsed once when an
//! entry is created (`mutual agent entry create --selector`) and again when the agent reads the
//! entries, so the CA stores only well-formed ones and the agent refuses nothing by accident.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// One requirement on the caller. An entry matches when every one of its selectors does.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Selector {
    /// `unix:uid:N`: the caller's user id.
    Uid(u32),
    /// `unix:gid:N`: the caller's (primary) group id.
    Gid(u32),
    /// `unix:path:/abs/path`: the caller's executable, as the kernel names it.
    Path(PathBuf),
    /// `unix:sha256:HEX`: SHA-256 of the caller's executable.
    Sha256([u8; 32]),
}

/// A selector that does not parse, with the sentence a person needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {input:?}: {why}")]
pub struct SelectorError {
    pub input: String,
    pub why: &'static str,
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Selector, SelectorError> {
        let err = |why| SelectorError {
            input: s.to_string(),
            why,
        };
        let rest = s
            .strip_prefix("unix:")
            .ok_or_else(|| err("only unix selectors are known: unix:uid:N, unix:gid:N, unix:path:/abs/path, unix:sha256:HEX"))?;
        let (kind, value) = rest
            .split_once(':')
            .ok_or_else(|| err("expected unix:KIND:VALUE"))?;
        match kind {
            "uid" => value
                .parse()
                .map(Selector::Uid)
                .map_err(|_| err("a uid is a number")),
            "gid" => value
                .parse()
                .map(Selector::Gid)
                .map_err(|_| err("a gid is a number")),
            "path" if value.starts_with('/') => Ok(Selector::Path(PathBuf::from(value))),
            "path" => Err(err("the path must be absolute")),
            "sha256" => {
                let mut h = [0u8; 32];
                hex::decode_to_slice(value.to_ascii_lowercase(), &mut h)
                    .map_err(|_| err("a sha256 is 64 hex digits"))?;
                Ok(Selector::Sha256(h))
            }
            _ => Err(err("the kind is one of uid, gid, path, sha256")),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Uid(u) => write!(f, "unix:uid:{u}"),
            Selector::Gid(g) => write!(f, "unix:gid:{g}"),
            Selector::Path(p) => write!(f, "unix:path:{}", p.display()),
            Selector::Sha256(h) => write!(f, "unix:sha256:{}", hex::encode(h)),
        }
    }
}

/// What the agent learned about a caller from its socket (see [`crate::attest`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
    /// The executable (`/proc/PID/exe`); `None` when it could not be read.
    pub exe: Option<PathBuf>,
    /// SHA-256 of the executable; `None` when it could not be read.
    pub sha256: Option<[u8; 32]>,
}

impl Selector {
    pub fn matches(&self, c: &Caller) -> bool {
        match self {
            Selector::Uid(u) => c.uid == *u,
            Selector::Gid(g) => c.gid == *g,
            Selector::Path(p) => c.exe.as_ref() == Some(p),
            Selector::Sha256(h) => c.sha256.as_ref() == Some(h),
        }
    }
}

/// Parses every selector and returns them sorted and without duplicates (the stored form).
pub fn parse_all<S: AsRef<str>>(inputs: &[S]) -> Result<Vec<Selector>, SelectorError> {
    let mut v = inputs
        .iter()
        .map(|s| s.as_ref().parse())
        .collect::<Result<Vec<Selector>, _>>()?;
    v.sort();
    v.dedup();
    Ok(v)
}

/// True when every selector matches; an entry without selectors matches nothing (it would hand
/// its identity to every process on the node).
pub fn all_match(selectors: &[Selector], c: &Caller) -> bool {
    !selectors.is_empty() && selectors.iter().all(|s| s.matches(c))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn caller() -> Caller {
        Caller {
            pid: Some(42),
            uid: 1000,
            gid: 100,
            exe: Some(PathBuf::from("/usr/bin/web")),
            sha256: Some([0xab; 32]),
        }
    }

    #[test]
    fn selectors_round_trip_and_match() {
        let hash = "ab".repeat(32);
        for s in [
            "unix:uid:1000".to_string(),
            "unix:gid:100".into(),
            "unix:path:/usr/bin/web".into(),
            format!("unix:sha256:{hash}"),
        ] {
            let sel: Selector = s.parse().unwrap();
            assert_eq!(sel.to_string(), s);
            assert!(sel.matches(&caller()), "{s}");
        }
        // Upper-case hex is read, written lower-case.
        let up: Selector = format!("unix:sha256:{}", hash.to_uppercase())
            .parse()
            .unwrap();
        assert_eq!(up.to_string(), format!("unix:sha256:{hash}"));
    }

    #[test]
    fn every_selector_must_match() {
        let c = caller();
        let ok = parse_all(&["unix:uid:1000", "unix:gid:100"]).unwrap();
        assert!(all_match(&ok, &c));
        let wrong_hash = parse_all(&[
            "unix:uid:1000".to_string(),
            format!("unix:sha256:{}", "00".repeat(32)),
        ])
        .unwrap();
        assert!(!all_match(&wrong_hash, &c));
        assert!(!all_match(&parse_all(&["unix:uid:0"]).unwrap(), &c));
        assert!(!all_match(&[], &c));
        // An unreadable executable matches no path or hash selector.
        let blind = Caller {
            exe: None,
            sha256: None,
            ..c
        };
        assert!(!all_match(
            &parse_all(&["unix:path:/usr/bin/web"]).unwrap(),
            &blind
        ));
    }

    #[test]
    fn bad_selectors_say_why() {
        for (s, why) in [
            ("uid:1000", "only unix selectors are known: unix:uid:N, unix:gid:N, unix:path:/abs/path, unix:sha256:HEX"),
            ("unix:uid", "expected unix:KIND:VALUE"),
            ("unix:uid:me", "a uid is a number"),
            ("unix:gid:-1", "a gid is a number"),
            ("unix:path:bin/web", "the path must be absolute"),
            ("unix:sha256:abc", "a sha256 is 64 hex digits"),
            ("unix:pid:1", "the kind is one of uid, gid, path, sha256"),
        ] {
            assert_eq!(s.parse::<Selector>().unwrap_err().why, why, "{s}");
        }
        // Sorted and deduplicated.
        let v = parse_all(&["unix:uid:2", "unix:uid:1", "unix:uid:2"]).unwrap();
        assert_eq!(v, vec![Selector::Uid(1), Selector::Uid(2)]);
    }
}
