//! The pattern language of policy rules (DESIGN.md): exact values, or `*` standing for one whole
//! SPIFFE path segment / DNS label / HTTP path segment, and a trailing `/*` standing for "one or
//! more further segments". Patterns are checked when the policy is parsed, never at match time.

use std::net::IpAddr;

use crate::spiffe::{check_segment, check_trust_domain};
use crate::{PolicyError, SpiffeId};

fn invalid(pattern: &str, why: impl Into<String>) -> PolicyError {
    PolicyError::InvalidPattern {
        pattern: pattern.to_string(),
        why: why.into(),
    }
}

/// One segment of a path pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Exact(String),
    /// `*` in an inner position: exactly one segment.
    One,
}

/// Segments plus whether the pattern ends in `/*` (one or more further segments).
#[derive(Clone, Debug, PartialEq, Eq)]
struct SegPattern {
    segs: Vec<Seg>,
    rest: bool,
}

impl SegPattern {
    fn matches<'a>(&self, mut value: impl Iterator<Item = &'a str>) -> bool {
        for seg in &self.segs {
            match (seg, value.next()) {
                (_, None) => return false,
                (Seg::One, Some(_)) => {}
                (Seg::Exact(e), Some(v)) => {
                    if e != v {
                        return false;
                    }
                }
            }
        }
        if self.rest {
            value.next().is_some()
        } else {
            value.next().is_none()
        }
    }

    fn from_segments(segs: Vec<&str>) -> SegPattern {
        let mut out = Vec::with_capacity(segs.len());
        let mut rest = false;
        let n = segs.len();
        for (i, s) in segs.into_iter().enumerate() {
            if s == "*" {
                if i + 1 == n {
                    rest = true;
                } else {
                    out.push(Seg::One);
                }
            } else {
                out.push(Seg::Exact(s.to_string()));
            }
        }
        SegPattern { segs: out, rest }
    }
}

/// A SPIFFE ID pattern: exact trust domain, path segments exact or `*`, optional trailing `/*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpiffePattern {
    text: String,
    trust_domain: String,
    path: SegPattern,
}

impl SpiffePattern {
    pub fn parse(p: &str) -> Result<SpiffePattern, PolicyError> {
        let rest = p
            .strip_prefix("spiffe://")
            .ok_or_else(|| invalid(p, "a SPIFFE pattern starts with spiffe://"))?;
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        if td.contains('*') {
            return Err(invalid(p, "the trust domain of a pattern is never a glob"));
        }
        check_trust_domain(td).map_err(|why| invalid(p, why))?;
        let segs: Vec<&str> = if rest.contains('/') {
            path.split('/').collect()
        } else {
            Vec::new()
        };
        for s in &segs {
            if *s == "*" {
                continue;
            }
            if s.contains('*') {
                return Err(invalid(
                    p,
                    format!("`*` must be a whole path segment, not part of {s:?}"),
                ));
            }
            check_segment(s).map_err(|why| invalid(p, why))?;
        }
        Ok(SpiffePattern {
            text: p.to_string(),
            trust_domain: td.to_string(),
            path: SegPattern::from_segments(segs),
        })
    }

    pub fn matches(&self, id: &SpiffeId) -> bool {
        id.trust_domain() == self.trust_domain && self.path.matches(id.segments())
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The trust domain every ID this pattern matches is in (never a glob).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }
}

/// A DNS name pattern: labels exact (case-insensitive) or `*` for one whole label, except the
/// rightmost label which is always exact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsPattern {
    text: String,
    /// Lowercased labels; `None` is `*`.
    labels: Vec<Option<String>>,
}

impl DnsPattern {
    pub fn parse(p: &str) -> Result<DnsPattern, PolicyError> {
        if p.is_empty() {
            return Err(invalid(p, "empty DNS pattern"));
        }
        if p.len() > 253 {
            return Err(invalid(p, "a DNS name is at most 253 characters"));
        }
        let lower = p.to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('.').collect();
        let n = parts.len();
        let mut labels = Vec::with_capacity(n);
        for (i, l) in parts.iter().enumerate() {
            if *l == "*" {
                if i + 1 == n {
                    return Err(invalid(p, "the rightmost DNS label cannot be `*`"));
                }
                labels.push(None);
                continue;
            }
            if l.is_empty() {
                return Err(invalid(
                    p,
                    "empty DNS label (`..`, or a leading/trailing dot)",
                ));
            }
            if l.contains('*') {
                return Err(invalid(
                    p,
                    format!("`*` must be a whole DNS label, not part of {l:?}"),
                ));
            }
            if l.len() > 63 {
                return Err(invalid(p, "a DNS label is at most 63 characters"));
            }
            if let Some(c) = l
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                return Err(invalid(
                    p,
                    format!("character {c:?} is not allowed in a DNS name"),
                ));
            }
            labels.push(Some((*l).to_string()));
        }
        Ok(DnsPattern {
            text: p.to_string(),
            labels,
        })
    }

    /// Case-insensitive; one trailing dot on the value (a rooted name) is ignored.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        let parts: Vec<&str> = name.split('.').collect();
        parts.len() == self.labels.len()
            && parts.iter().zip(&self.labels).all(|(v, p)| match p {
                None => !v.is_empty(),
                Some(e) => v.eq_ignore_ascii_case(e),
            })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// An IP pattern: one address, or a CIDR block (`10.0.0.0/8`, `fd00::/8`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpPattern {
    text: String,
    net: IpAddr,
    prefix: u8,
}

impl IpPattern {
    pub fn parse(p: &str) -> Result<IpPattern, PolicyError> {
        let (addr, prefix) = match p.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (p, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| invalid(p, "not an IP address (or CIDR block)"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| invalid(p, format!("prefix length must be 0..={max}")))?,
        };
        Ok(IpPattern {
            text: p.to_string(),
            net,
            prefix,
        })
    }

    pub fn matches(&self, ip: &str) -> bool {
        let Ok(ip) = ip.parse::<IpAddr>() else {
            return false;
        };
        let (a, b, bits) = match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(v)) => (
                u128::from(u32::from(n)) << 96,
                u128::from(u32::from(v)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(n), IpAddr::V6(v)) => (u128::from(n), u128::from(v), self.prefix),
            _ => return false,
        };
        let mask = if bits == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(bits))
        };
        a & mask == b & mask
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// An HTTP path pattern: starts with `/`; `*` is one whole segment, a trailing `/*` is one or
/// more further segments. Matching never succeeds on a request path with `.`/`..`/empty
/// segments or encoded separators, so a backend's normalisation cannot widen a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    path: SegPattern,
}

impl PathPattern {
    pub fn parse(p: &str) -> Result<PathPattern, PolicyError> {
        let Some(rest) = p.strip_prefix('/') else {
            return Err(invalid(p, "an HTTP path pattern starts with /"));
        };
        if p.contains(['?', '#']) {
            return Err(invalid(p, "a path pattern has no query or fragment"));
        }
        let segs: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        for s in &segs {
            if s.is_empty() {
                return Err(invalid(p, "empty path segment (// or a trailing /)"));
            }
            if *s != "*" && s.contains('*') {
                return Err(invalid(
                    p,
                    format!("`*` must be a whole path segment, not part of {s:?}"),
                ));
            }
            if *s == "." || *s == ".." {
                return Err(invalid(p, "`.` and `..` segments are not allowed"));
            }
        }
        Ok(PathPattern {
            text: p.to_string(),
            path: SegPattern::from_segments(segs),
        })
    }

    /// `path` is the request target's path (a query string, if any, is ignored).
    pub fn matches(&self, path: &str) -> bool {
        let path = path.split(['?', '#']).next().unwrap_or("");
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let lower = rest.to_ascii_lowercase();
        if lower.contains("%2f")
            || lower.contains("%2e")
            || lower.contains("%5c")
            || rest.contains('\\')
        {
            return false;
        }
        if rest.is_empty() {
            return self.path.segs.is_empty() && !self.path.rest;
        }
        let segs: Vec<&str> = rest.split('/').collect();
        if segs.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
            return false;
        }
        self.path.matches(segs.into_iter())
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn spiffe_patterns() {
        let exact = SpiffePattern::parse("spiffe://example.org/ns/prod/sa/web").unwrap();
        assert!(exact.matches(&id("spiffe://example.org/ns/prod/sa/web")));
        assert!(!exact.matches(&id("spiffe://example.org/ns/prod/sa/web/x")));
        assert!(!exact.matches(&id("spiffe://example.org/ns/prod/sa")));
        assert!(!exact.matches(&id("spiffe://evil.org/ns/prod/sa/web")));

        let inner = SpiffePattern::parse("spiffe://example.org/ns/*/sa/web").unwrap();
        assert!(inner.matches(&id("spiffe://example.org/ns/prod/sa/web")));
        assert!(inner.matches(&id("spiffe://example.org/ns/dev/sa/web")));
        assert!(!inner.matches(&id("spiffe://example.org/ns/a/b/sa/web")));
        assert!(!inner.matches(&id("spiffe://example.org/ns/prod/sa/db")));

        let tail = SpiffePattern::parse("spiffe://example.org/ns/prod/*").unwrap();
        assert!(tail.matches(&id("spiffe://example.org/ns/prod/sa/web")));
        assert!(tail.matches(&id("spiffe://example.org/ns/prod/x")));
        assert!(!tail.matches(&id("spiffe://example.org/ns/prod")));
        assert!(!tail.matches(&id("spiffe://example.org/ns/dev/x")));
        assert!(!tail.matches(&id("spiffe://example.org.evil/ns/prod/x")));

        let td = SpiffePattern::parse("spiffe://example.org").unwrap();
        assert!(td.matches(&id("spiffe://example.org")));
        assert!(!td.matches(&id("spiffe://example.org/x")));
        let any = SpiffePattern::parse("spiffe://example.org/*").unwrap();
        assert!(any.matches(&id("spiffe://example.org/x/y")));
        assert!(!any.matches(&id("spiffe://example.org")));
    }

    #[test]
    fn bad_spiffe_patterns() {
        for bad in [
            "spiffe://*/ns/prod",
            "spiffe://*.example.org/x",
            "spiffe://example.org/ns/web-*",
            "spiffe://example.org/ns//x",
            "spiffe://example.org/ns/",
            "spiffe://Example.org/x",
            "https://example.org/x",
            "spiffe://example.org/../x",
        ] {
            assert!(
                matches!(
                    SpiffePattern::parse(bad),
                    Err(PolicyError::InvalidPattern { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn dns_patterns() {
        let p = DnsPattern::parse("*.internal.example").unwrap();
        assert!(p.matches("api.internal.example"));
        assert!(p.matches("API.Internal.Example"));
        assert!(p.matches("api.internal.example."));
        assert!(!p.matches("internal.example"));
        assert!(!p.matches("a.b.internal.example"));
        assert!(!p.matches("api.internal.example.evil"));
        let inner = DnsPattern::parse("web.*.example.org").unwrap();
        assert!(inner.matches("web.eu.example.org"));
        assert!(!inner.matches("web.example.org"));
        let exact = DnsPattern::parse("Api.Example.org").unwrap();
        assert!(exact.matches("api.example.org"));
        for bad in [
            "*",
            "example.*",
            "a*.example.org",
            "a..b",
            ".a.b",
            "a.b.",
            "",
            "a b.c",
        ] {
            assert!(DnsPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ip_patterns() {
        let one = IpPattern::parse("10.1.2.3").unwrap();
        assert!(one.matches("10.1.2.3"));
        assert!(!one.matches("10.1.2.4"));
        let net = IpPattern::parse("10.0.0.0/8").unwrap();
        assert!(net.matches("10.200.0.1"));
        assert!(!net.matches("11.0.0.1"));
        assert!(!net.matches("::1"));
        let v6 = IpPattern::parse("fd00::/8").unwrap();
        assert!(v6.matches("fd12::1"));
        assert!(!v6.matches("fe80::1"));
        assert!(IpPattern::parse("0.0.0.0/0").unwrap().matches("1.2.3.4"));
        for bad in ["10.0.0.0/33", "x", "10.0.0/8", "::/129"] {
            assert!(IpPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_patterns() {
        let admin = PathPattern::parse("/admin/*").unwrap();
        assert!(admin.matches("/admin/x"));
        assert!(admin.matches("/admin/x/y"));
        assert!(admin.matches("/admin/x?q=1"));
        assert!(!admin.matches("/admin"));
        assert!(!admin.matches("/admin/"));
        assert!(!admin.matches("/administrator/x"));
        assert!(!admin.matches("/admin/../secret"));
        assert!(!admin.matches("/admin/%2e%2e/secret"));
        assert!(!admin.matches("/admin//x"));
        let inner = PathPattern::parse("/api/*/status").unwrap();
        assert!(inner.matches("/api/v1/status"));
        assert!(!inner.matches("/api/v1/x/status"));
        assert!(!inner.matches("/api/v1/status/x"));
        let exact = PathPattern::parse("/healthz").unwrap();
        assert!(exact.matches("/healthz"));
        assert!(!exact.matches("/healthz/x"));
        let root = PathPattern::parse("/").unwrap();
        assert!(root.matches("/"));
        assert!(!root.matches("/x"));
        let all = PathPattern::parse("/*").unwrap();
        assert!(all.matches("/x/y"));
        assert!(!all.matches("/"));
        for bad in ["admin", "/a*", "/a//b", "/a/", "/a?x", "/../a"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
