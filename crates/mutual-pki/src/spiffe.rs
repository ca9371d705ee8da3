//! SPIFFE IDs (`spiffe://trust-domain/path`), checked once against the SPIFFE ID specification
//! so that the CA never signs an ID that a SPIFFE-aware peer would reject or misread.
//!
//! Rules enforced (SPIFFE-ID.md §2): scheme `spiffe`, a trust domain of lowercase letters,
//! digits, `.`, `-` and `_` only (so no userinfo, no port, no uppercase), a path of segments made
//! of `[A-Za-z0-9._-]`, no empty, `.` or `..` segment, no trailing `/`, no query or fragment, at
//! most 2048 bytes.

use std::fmt;

use crate::PkiError;

/// A validated SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    /// Empty, or starting with `/`.
    path: String,
}

const MAX_LEN: usize = 2048;

impl SpiffeId {
    pub fn parse(input: &str) -> Result<SpiffeId, PkiError> {
        let bad = |detail: &str| PkiError::InvalidSpiffeId {
            id: input.to_string(),
            detail: detail.to_string(),
        };
        if input.len() > MAX_LEN {
            return Err(bad("longer than 2048 bytes"));
        }
        let Some(rest) = input.strip_prefix("spiffe://") else {
            return Err(bad("must start with spiffe:// (lowercase scheme)"));
        };
        if rest.contains('?') {
            return Err(bad("a query (?...) is not allowed"));
        }
        if rest.contains('#') {
            return Err(bad("a fragment (#...) is not allowed"));
        }
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if td.is_empty() {
            return Err(bad("the trust domain is empty"));
        }
        if td.contains('@') {
            return Err(bad("userinfo (user@) is not allowed"));
        }
        if td.contains(':') {
            return Err(bad("a port is not allowed in the trust domain"));
        }
        if let Some(c) = td
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(*c)))
        {
            return Err(bad(&format!(
                "trust domain character {c:?} is not allowed (only lowercase a-z, 0-9, '.', '-', '_')"
            )));
        }
        if !path.is_empty() {
            if path == "/" || path.ends_with('/') {
                return Err(bad("the path must not end with '/'"));
            }
            for seg in path[1..].split('/') {
                if seg.is_empty() {
                    return Err(bad("empty path segment (//)"));
                }
                if seg == "." || seg == ".." {
                    return Err(bad("'.' and '..' path segments are not allowed"));
                }
                if let Some(c) = seg
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || ".-_".contains(*c)))
                {
                    return Err(bad(&format!(
                        "path character {c:?} is not allowed (only A-Z, a-z, 0-9, '.', '-', '_')"
                    )));
                }
            }
        }
        Ok(SpiffeId {
            trust_domain: td.to_string(),
            path: path.to_string(),
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}{}", self.trust_domain, self.path)
    }
}

/// Checks a trust domain name given to `ca init --trust-domain`.
pub fn validate_trust_domain(td: &str) -> Result<(), PkiError> {
    let id = SpiffeId::parse(&format!("spiffe://{td}"))?;
    if !id.path.is_empty() {
        return Err(PkiError::InvalidSpiffeId {
            id: td.to_string(),
            detail: "a trust domain has no path".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn accepts_valid() {
        for ok in [
            "spiffe://example.org",
            "spiffe://example.org/ns/prod/sa/web",
            "spiffe://a-b_c.1/A.b-c_D",
        ] {
            let id = SpiffeId::parse(ok).unwrap();
            assert_eq!(id.to_string(), ok);
        }
        assert_eq!(
            SpiffeId::parse("spiffe://example.org/x")
                .unwrap()
                .trust_domain(),
            "example.org"
        );
    }

    #[test]
    fn rejects_invalid() {
        for (bad, why) in [
            ("http://example.org/x", "spiffe://"),
            ("SPIFFE://example.org/x", "spiffe://"),
            ("spiffe://Example.org/x", "trust domain character"),
            ("spiffe:///x", "empty"),
            ("spiffe://user@example.org/x", "userinfo"),
            ("spiffe://example.org:8443/x", "port"),
            ("spiffe://example.org/x?y=1", "query"),
            ("spiffe://example.org/x#f", "fragment"),
            ("spiffe://example.org/a//b", "empty path segment"),
            ("spiffe://example.org/a/../b", "'..'"),
            ("spiffe://example.org/a/./b", "'.'"),
            ("spiffe://example.org/a/", "end with"),
            ("spiffe://example.org/a%20b", "path character"),
        ] {
            let e = SpiffeId::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(2100));
        assert!(SpiffeId::parse(&long).is_err());
        assert!(validate_trust_domain("example.org").is_ok());
        assert!(validate_trust_domain("example.org/x").is_err());
    }
}
