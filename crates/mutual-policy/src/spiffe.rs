//! SPIFFE IDs as a type: parsed and checked once (SPIFFE ID spec, section 2), so the rest of
//! mutual can compare them as plain strings without re-checking the rules each time.

use std::fmt;

use crate::PolicyError;

/// The longest SPIFFE ID the spec allows, in bytes.
pub const MAX_LEN: usize = 2048;

/// A SPIFFE ID (`spiffe://trust-domain/path`), valid by construction.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    raw: String,
    /// Byte length of the trust domain, which starts right after `spiffe://`.
    td_len: usize,
}

const SCHEME: &str = "spiffe://";

fn err(id: &str, why: impl Into<String>) -> PolicyError {
    PolicyError::InvalidSpiffeId {
        id: id.to_string(),
        why: why.into(),
    }
}

/// Trust domain characters (spec 2.1): lowercase letters, digits, dot, dash, underscore.
pub(crate) fn is_td_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
}

/// Path segment characters (spec 2.2): letters, digits, dot, dash, underscore.
pub(crate) fn is_segment_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

/// Checks a trust domain name; returns why it is invalid.
pub(crate) fn check_trust_domain(td: &str) -> Result<(), String> {
    if td.is_empty() {
        return Err("the trust domain is empty".into());
    }
    if let Some(c) = td.chars().find(|c| !is_td_char(*c)) {
        return Err(match c {
            ':' => "a port is not allowed in the trust domain".into(),
            '@' => "userinfo is not allowed in the trust domain".into(),
            '?' => "a query is not allowed".into(),
            '#' => "a fragment is not allowed".into(),
            c if c.is_ascii_uppercase() => {
                "the trust domain must be lowercase (letters, digits, '.', '-', '_')".into()
            }
            c => format!("character {c:?} is not allowed in the trust domain"),
        });
    }
    Ok(())
}

/// Checks one path segment; returns why it is invalid.
pub(crate) fn check_segment(seg: &str) -> Result<(), String> {
    if seg.is_empty() {
        return Err("the path has an empty segment (// or a trailing /)".into());
    }
    if seg == "." || seg == ".." {
        return Err(format!("the path segment {seg:?} is not allowed"));
    }
    if let Some(c) = seg.chars().find(|c| !is_segment_char(*c)) {
        return Err(match c {
            '?' => "a query is not allowed".into(),
            '#' => "a fragment is not allowed".into(),
            '%' => "percent-encoding is not allowed in the path".into(),
            c => format!("character {c:?} is not allowed in a path segment"),
        });
    }
    Ok(())
}

impl SpiffeId {
    /// Parses and checks a SPIFFE ID.
    pub fn parse(s: &str) -> Result<SpiffeId, PolicyError> {
        if s.len() > MAX_LEN {
            return Err(err(s, format!("longer than {MAX_LEN} bytes")));
        }
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| err(s, "must start with spiffe:// (lowercase scheme)"))?;
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        check_trust_domain(td).map_err(|why| err(s, why))?;
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                check_segment(seg).map_err(|why| err(s, why))?;
            }
        }
        Ok(SpiffeId {
            raw: s.to_string(),
            td_len: td.len(),
        })
    }

    /// The trust domain, e.g. `example.org`.
    pub fn trust_domain(&self) -> &str {
        &self.raw[SCHEME.len()..SCHEME.len() + self.td_len]
    }

    /// The path including its leading `/`, or `""` for a trust domain's own ID.
    pub fn path(&self) -> &str {
        &self.raw[SCHEME.len() + self.td_len..]
    }

    /// Path segments (empty for a trust domain's own ID).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        let p = self.path();
        p.get(1..)
            .unwrap_or("")
            .split('/')
            .filter(|s| !s.is_empty())
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether `uri` is a trust domain's own SPIFFE ID (`spiffe://example.org`, no path): the
    /// name a signing certificate may carry, never a leaf (X509-SVID 3.1, 5.2). The one test
    /// the CA, the lint and the verifier apply.
    pub fn is_trust_domain_id(uri: &str) -> bool {
        SpiffeId::parse(uri).is_ok_and(|id| id.path().is_empty())
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(s)
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_valid_ids() {
        let id = SpiffeId::parse("spiffe://example.org/ns/prod/sa/web").unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        assert_eq!(id.path(), "/ns/prod/sa/web");
        assert_eq!(
            id.segments().collect::<Vec<_>>(),
            ["ns", "prod", "sa", "web"]
        );
        let td = SpiffeId::parse("spiffe://my_td-1.example").unwrap();
        assert_eq!(td.trust_domain(), "my_td-1.example");
        assert_eq!(td.path(), "");
        assert_eq!(td.segments().count(), 0);
        SpiffeId::parse("spiffe://example.org/A.b-C_d").unwrap();
    }

    #[test]
    fn rejects_invalid_ids() {
        for bad in [
            "",
            "spiffe://",
            "spiffe:///path",
            "SPIFFE://example.org/x",
            "https://example.org/x",
            "spiffe://Example.org/x",
            "spiffe://example.org:8080/x",
            "spiffe://user@example.org/x",
            "spiffe://example.org/",
            "spiffe://example.org//x",
            "spiffe://example.org/x/",
            "spiffe://example.org/./x",
            "spiffe://example.org/x/..",
            "spiffe://example.org/x?y=1",
            "spiffe://example.org/x#frag",
            "spiffe://example.org/x%20y",
            "spiffe://example.org/x y",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} should be rejected");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(2040));
        assert!(SpiffeId::parse(&long).is_err());
        let ok = format!("spiffe://example.org/{}", "a".repeat(2048 - 21));
        assert_eq!(ok.len(), 2048);
        assert!(SpiffeId::parse(&ok).is_ok());
    }

    #[test]
    fn errors_say_why() {
        let e = SpiffeId::parse("spiffe://example.org:443/x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("port"), "{e}");
    }
}
