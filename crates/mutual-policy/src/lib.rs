//! Who a peer is (from its verified certificate) and whether it may connect: pure data, no I/O,
//! no tokio. The proxy asks `Policy::authorize` once per connection (and per request in HTTP mode).
//!
//! INTERFACE STUB: the signatures below are the contract other crates build against; bodies are
//! being written. Keep the signatures; add fields/functions freely.
#![forbid(unsafe_code)]

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
}

/// The identity a verified certificate carries (DESIGN.md order: SPIFFE, DNS, IP, CN/OU).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    pub spiffe: Option<String>,
    pub dns: Vec<String>,
    pub ip: Vec<String>,
    pub cn: Option<String>,
    pub ou: Vec<String>,
    /// Serial, lowercase hex, no colons.
    pub serial: String,
    /// SHA-256 of the certificate DER, lowercase hex.
    pub sha256: String,
    /// Issuer DN as a string.
    pub issuer: String,
    /// Subject DN as a string.
    pub subject: String,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

impl Identity {
    /// Extracts the identity from a leaf certificate's DER (already verified by the TLS layer).
    pub fn from_der(der: &[u8]) -> Result<Identity, PolicyError> {
        let _ = der;
        unimplemented!("mutual-policy: Identity::from_der is being written")
    }

    /// The single most specific name, for logs and metric labels: SPIFFE ID, else first DNS
    /// SAN, else first IP SAN, else CN, else the serial.
    pub fn principal(&self) -> String {
        unimplemented!("mutual-policy: Identity::principal is being written")
    }
}

/// An HTTP request's facts, for rules with `methods`/`paths` (HTTP mode).
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
}

/// A parsed, checked policy: a list of allow rules; deny unless one matches.
#[derive(Clone, Debug, Default)]
pub struct Policy {}

/// The outcome of `Policy::authorize`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Index of the matching rule, when allowed.
    pub rule: Option<usize>,
}

impl Policy {
    /// Parses a TOML policy file's contents (`[[allow]]` rules, see DESIGN.md).
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let _ = text;
        unimplemented!("mutual-policy: Policy::from_toml is being written")
    }

    /// Builds a policy from command-line flags (`--allow-spiffe` etc.); `allow_any` allows every
    /// authenticated peer.
    pub fn from_flags(
        spiffe: &[String],
        dns: &[String],
        cn: &[String],
        ou: &[String],
        allow_any: bool,
    ) -> Result<Policy, PolicyError> {
        let _ = (spiffe, dns, cn, ou, allow_any);
        unimplemented!("mutual-policy: Policy::from_flags is being written")
    }

    /// Rules of `other` appended (flags + file).
    pub fn merged(self, other: Policy) -> Policy {
        let _ = other;
        self
    }

    /// True when there are no rules (so everything is denied).
    pub fn is_empty(&self) -> bool {
        unimplemented!("mutual-policy: Policy::is_empty is being written")
    }

    /// Decides for a connection (`req` = None) or an HTTP request.
    pub fn authorize(&self, id: &Identity, req: Option<&Request<'_>>) -> Decision {
        let _ = (id, req);
        unimplemented!("mutual-policy: Policy::authorize is being written")
    }
}
