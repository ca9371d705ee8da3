//! Who a peer is (from its verified certificate) and whether it may connect: pure data, no I/O,
//! no tokio. The proxy asks `Policy::authorize` once per connection (and per request in HTTP mode).
//!
//! Rules (docs/policy.md): a policy is a list of `[[allow]]` rules, ORed; inside a rule every
//! identity key given must match (AND), and a key given a list matches when any entry does.
//! Nothing matches an empty policy: deny is the default.
#![forbid(unsafe_code)]

pub mod cn;
pub mod dn;
pub mod facts;
pub mod human;
mod identity;
pub mod pattern;
pub mod spiffe;
pub mod suffixes;

use serde::Deserialize;

pub use dn::{cert_names, CertNames};
pub use facts::CertFacts;
pub use identity::{serial_hex, Identity};
pub use pattern::{DnsPattern, IpPattern, PathPattern, SpiffePattern};
pub use spiffe::SpiffeId;

/// Errors parsing identities and policies; each says where and what.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("invalid SPIFFE ID {id:?}: {why}")]
    InvalidSpiffeId { id: String, why: String },
    #[error("invalid pattern {pattern:?}: {why}")]
    InvalidPattern { pattern: String, why: String },
    #[error("policy file: {0}")]
    Parse(String),
    #[error("certificate: {0}")]
    Certificate(String),
    /// A problem inside one rule of a policy file, with the rule's position.
    #[error("policy file line {line} (rule {rule}): {source}")]
    InRule {
        /// 1-based line of the rule's `[[allow]]` header.
        line: usize,
        /// 0-based rule index (as reported in `Decision::rule`).
        rule: usize,
        source: Box<PolicyError>,
    },
}

/// An HTTP request's facts, for rules with `methods`/`paths` (HTTP mode).
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
}

/// One allow rule. Identity keys that are empty are not checked; `allow_any` stands for "every
/// authenticated peer" and is never implied by an empty rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub spiffe: Vec<SpiffePattern>,
    pub dns: Vec<DnsPattern>,
    pub ip: Vec<IpPattern>,
    /// Exact, case-sensitive subject CN values.
    pub cn: Vec<String>,
    /// Exact, case-sensitive subject OU values.
    pub ou: Vec<String>,
    pub allow_any: bool,
    /// Uppercase HTTP methods; empty: any method.
    pub methods: Vec<String>,
    /// Empty: any path.
    pub paths: Vec<PathPattern>,
}

impl Rule {
    /// Whether the identity satisfies every identity key of this rule.
    pub fn matches_identity(&self, id: &Identity) -> bool {
        if self.allow_any {
            return true;
        }
        let spiffe = id.spiffe_id();
        let ok_spiffe = self.spiffe.is_empty()
            || spiffe
                .as_ref()
                .is_some_and(|s| self.spiffe.iter().any(|p| p.matches(s)));
        let ok_dns =
            self.dns.is_empty() || id.dns.iter().any(|d| self.dns.iter().any(|p| p.matches(d)));
        let ok_ip =
            self.ip.is_empty() || id.ip.iter().any(|a| self.ip.iter().any(|p| p.matches(a)));
        let ok_cn = self.cn.is_empty() || id.cn.as_ref().is_some_and(|c| self.cn.contains(c));
        let ok_ou = self.ou.is_empty() || id.ou.iter().any(|o| self.ou.contains(o));
        ok_spiffe && ok_dns && ok_ip && ok_cn && ok_ou
    }

    /// Whether an HTTP request satisfies the rule's `methods` and `paths` (true when it has none).
    pub fn matches_request(&self, req: &Request<'_>) -> bool {
        let ok_method = self.methods.is_empty()
            || self
                .methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(req.method));
        let ok_path = self.paths.is_empty() || self.paths.iter().any(|p| p.matches(req.path));
        ok_method && ok_path
    }

    /// Whether the rule restricts HTTP requests (so it cannot allow raw TCP traffic by itself).
    pub fn is_http_only(&self) -> bool {
        !self.methods.is_empty() || !self.paths.is_empty()
    }

    fn has_identity_key(&self) -> bool {
        !(self.spiffe.is_empty()
            && self.dns.is_empty()
            && self.ip.is_empty()
            && self.cn.is_empty()
            && self.ou.is_empty())
    }
}

/// A parsed, checked policy: a list of allow rules; deny unless one matches.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// The outcome of `Policy::authorize`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Index of the matching rule, when allowed.
    pub rule: Option<usize>,
}

/// A string or a list of strings in TOML.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    allow: Vec<toml::Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    spiffe: Option<OneOrMany>,
    dns: Option<OneOrMany>,
    ip: Option<OneOrMany>,
    cn: Option<OneOrMany>,
    ou: Option<OneOrMany>,
    #[serde(default)]
    allow_any: bool,
    methods: Option<Vec<String>>,
    paths: Option<Vec<String>>,
}

fn list<T>(
    key: &str,
    v: Option<OneOrMany>,
    parse: impl Fn(&str) -> Result<T, PolicyError>,
) -> Result<Vec<T>, PolicyError> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let v = v.into_vec();
    if v.is_empty() {
        return Err(PolicyError::Parse(format!(
            "`{key}` is an empty list (leave the key out instead)"
        )));
    }
    v.iter().map(|s| parse(s)).collect()
}

fn exact(key: &'static str) -> impl Fn(&str) -> Result<String, PolicyError> {
    move |s: &str| {
        if s.is_empty() {
            Err(PolicyError::InvalidPattern {
                pattern: s.to_string(),
                why: format!("an empty {key} value matches nothing"),
            })
        } else {
            Ok(s.to_string())
        }
    }
}

fn method(m: &str) -> Result<String, PolicyError> {
    if m.is_empty() || !m.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
        return Err(PolicyError::InvalidPattern {
            pattern: m.to_string(),
            why: "an HTTP method is a word such as GET or POST".into(),
        });
    }
    Ok(m.to_ascii_uppercase())
}

impl RawRule {
    fn into_rule(self) -> Result<Rule, PolicyError> {
        let rule = Rule {
            spiffe: list("spiffe", self.spiffe, SpiffePattern::parse)?,
            dns: list("dns", self.dns, DnsPattern::parse)?,
            ip: list("ip", self.ip, IpPattern::parse)?,
            cn: list("cn", self.cn, exact("cn"))?,
            ou: list("ou", self.ou, exact("ou"))?,
            allow_any: self.allow_any,
            methods: list("methods", self.methods.map(OneOrMany::Many), method)?,
            paths: list("paths", self.paths.map(OneOrMany::Many), PathPattern::parse)?,
        };
        match (rule.allow_any, rule.has_identity_key()) {
            (true, true) => Err(PolicyError::Parse(
                "`allow_any = true` cannot be combined with identity keys (spiffe, dns, ip, cn, ou)"
                    .into(),
            )),
            (false, false) => Err(PolicyError::Parse(
                "the rule names no identity (spiffe, dns, ip, cn or ou); write `allow_any = true` to allow every authenticated peer"
                    .into(),
            )),
            _ => Ok(rule),
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |t| t.bytes().filter(|b| *b == b'\n').count())
        + 1
}

impl Policy {
    /// Parses a TOML policy file's contents (`[[allow]]` rules, see docs/policy.md).
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().to_string();
            match e.span() {
                Some(span) => {
                    let line = line_of(text, span.start);
                    let col = text
                        .get(..span.start)
                        .map_or(0, |t| t.len() - t.rfind('\n').map_or(0, |i| i + 1))
                        + 1;
                    PolicyError::Parse(format!("line {line}, column {col}: {msg}"))
                }
                None => PolicyError::Parse(msg),
            }
        })?;
        let mut rules = Vec::with_capacity(raw.allow.len());
        for (i, spanned) in raw.allow.into_iter().enumerate() {
            let line = line_of(text, spanned.span().start);
            let rule = spanned
                .into_inner()
                .into_rule()
                .map_err(|e| PolicyError::InRule {
                    line,
                    rule: i,
                    source: Box::new(e),
                })?;
            rules.push(rule);
        }
        Ok(Policy { rules })
    }

    /// Builds a policy from command-line flags (`--allow-spiffe` etc.): one rule per value;
    /// `allow_any` adds a rule allowing every authenticated peer.
    pub fn from_flags(
        spiffe: &[String],
        dns: &[String],
        cn: &[String],
        ou: &[String],
        allow_any: bool,
    ) -> Result<Policy, PolicyError> {
        let mut rules = Vec::new();
        for s in spiffe {
            rules.push(Rule {
                spiffe: vec![SpiffePattern::parse(s)?],
                ..Rule::default()
            });
        }
        for d in dns {
            rules.push(Rule {
                dns: vec![DnsPattern::parse(d)?],
                ..Rule::default()
            });
        }
        for c in cn {
            rules.push(Rule {
                cn: vec![exact("cn")(c)?],
                ..Rule::default()
            });
        }
        for o in ou {
            rules.push(Rule {
                ou: vec![exact("ou")(o)?],
                ..Rule::default()
            });
        }
        if allow_any {
            rules.push(Rule {
                allow_any: true,
                ..Rule::default()
            });
        }
        Ok(Policy { rules })
    }

    /// A policy from rules built in code.
    pub fn from_rules(rules: Vec<Rule>) -> Policy {
        Policy { rules }
    }

    /// Rules of `other` appended (flags + file); indices of `self`'s rules do not change.
    pub fn merged(mut self, other: Policy) -> Policy {
        self.rules.extend(other.rules);
        self
    }

    /// True when there are no rules (so everything is denied).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Decides for an HTTP connection (`req` = None: does any rule name this identity?) or an
    /// HTTP request.
    ///
    /// For a connection, a rule matches on identity alone even when it lists `methods`/`paths`:
    /// the HTTP layer calls again per request with `Some(req)`, and only then are methods and
    /// paths checked. A TCP-mode proxy must therefore not accept rules with `methods`/`paths`
    /// as connection grants; it uses [`Policy::authorize_tcp`] (mutual-proxy's `authz` module
    /// picks the entry point).
    pub fn authorize(&self, id: &Identity, req: Option<&Request<'_>>) -> Decision {
        self.find(|r| r.matches_identity(id) && req.is_none_or(|q| r.matches_request(q)))
    }

    /// Decides for a raw TCP connection (no HTTP layer to check per request): rules with
    /// `methods`/`paths` never match.
    pub fn authorize_tcp(&self, id: &Identity) -> Decision {
        self.find(|r| !r.is_http_only() && r.matches_identity(id))
    }

    /// Whether any rule restricts methods/paths (a TCP listener should refuse such a policy or
    /// warn that those rules never allow anything there).
    pub fn has_http_rules(&self) -> bool {
        self.rules.iter().any(Rule::is_http_only)
    }

    fn find(&self, f: impl Fn(&Rule) -> bool) -> Decision {
        match self.rules.iter().position(f) {
            Some(i) => Decision {
                allowed: true,
                rule: Some(i),
            },
            None => Decision {
                allowed: false,
                rule: None,
            },
        }
    }
}

#[cfg(test)]
mod tests;
