//! mutual's private certificate authority: an offline root, an issuing intermediate, issuance
//! profiles, CSR signing, revocation and CRLs, password-protected CA keys, and certificate
//! inspection.
//!
//! The parse-don't-validate types that every command shares live here ([`KeyType`], [`San`],
//! [`Usage`], [`RevocationReason`], [`parse_duration`]); the CA itself is in [`ca`], inspection in
//! [`inspect`], SPIFFE ID rules in [`spiffe`], key generation/protection and careful file
//! writing in [`keys`].
#![forbid(unsafe_code)]

pub mod ca;
pub mod inspect;
pub mod keys;
pub mod spiffe;
#[doc(hidden)]
pub mod testing;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use mutual_store::{CertRecord, ListFilter, RevokeOutcome, Status, StoreError};
pub use spiffe::SpiffeId;

/// Everything the PKI can refuse or fail at. Messages name what is wrong and, where it helps,
/// what to do; none of them ever contains a password or key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// The I/O error is part of the message and deliberately not a `source`: anyhow's `{:#}`
    /// would print it a second time.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("a CA already exists in {dir} ({file} is present); refusing to overwrite it")]
    AlreadyInitialised { dir: PathBuf, file: String },
    #[error("no CA in {dir} ({file} is missing); run `mutual ca init --dir {dir}` first")]
    NotInitialised { dir: PathBuf, file: String },
    #[error("wrong CA password or corrupted key ({path})")]
    WrongPassword { path: PathBuf },
    #[error("the CA password must not be empty")]
    EmptyPassword,
    #[error("{path}: {detail}")]
    Config { path: PathBuf, detail: String },
    #[error("invalid SAN {input:?}: {detail}")]
    InvalidSan { input: String, detail: String },
    #[error("invalid SPIFFE ID {id:?}: {detail}")]
    InvalidSpiffeId { id: String, detail: String },
    #[error(
        "URI SAN {uri:?} is outside this CA's trust domain: only spiffe://{trust_domain}/... may be issued"
    )]
    OutsideTrustDomain { uri: String, trust_domain: String },
    #[error(
        "name {name:?} is not permitted by this CA's name constraints (permitted DNS: {permitted})"
    )]
    NotPermitted { name: String, permitted: String },
    /// A wildcard directly on a public suffix (`*.com`, `*.co.uk`): no CA may issue it.
    #[error(
        "name {name:?} is a wildcard directly on the public suffix {suffix:?}: it would cover every domain under it (CABF BR 3.2.2.6); name one, e.g. *.corp.{suffix}"
    )]
    PublicSuffixWildcard { name: String, suffix: String },
    #[error("a certificate may carry only one SPIFFE ID (got {count})")]
    MultipleSpiffeIds { count: usize },
    #[error(
        "a server certificate needs at least one dns: or ip: SAN, or a SPIFFE ID (add --san dns:NAME or --san uri:spiffe://DOMAIN/PATH)"
    )]
    ServerNeedsSan,
    #[error("invalid name {name:?}: {detail}")]
    InvalidName { name: String, detail: String },
    #[error(
        "requested TTL would end at {requested}, after the intermediate expires ({limit}); use a shorter --ttl"
    )]
    TtlBeyondIntermediate { requested: String, limit: String },
    #[error(
        "{what} would end at {requested}, after the intermediate expires ({limit}); use a shorter {what}"
    )]
    BeyondIntermediate {
        what: &'static str,
        requested: String,
        limit: String,
    },
    #[error("invalid duration {input:?}: {detail}")]
    InvalidDuration { input: String, detail: String },
    #[error("malformed CSR: {detail}")]
    MalformedCsr { detail: String },
    #[error(
        "the CSR's self-signature does not verify (the CSR was altered or not signed by its key)"
    )]
    CsrBadSignature,
    #[error("weak key: {detail}")]
    WeakKey { detail: String },
    #[error("unsupported key: {detail}")]
    UnsupportedKey { detail: String },
    #[error("malformed certificate input: {detail}")]
    Malformed { detail: String },
    #[error("invalid serial {input:?}: expected hexadecimal (colons optional)")]
    InvalidSerial { input: String },
    #[error("no certificate with serial {serial} in the inventory")]
    UnknownSerial { serial: String },
    #[error("certificate generation failed: {detail}")]
    Generate { detail: String },
    #[error("key protection failed: {detail}")]
    Key { detail: String },
    #[error("PKCS#12 export failed: {detail}")]
    P12 { detail: String },
    #[error("unknown {what} {input:?} (expected one of: {expected})")]
    UnknownValue {
        what: &'static str,
        input: String,
        expected: &'static str,
    },
    #[error("invalid CRL URL {url:?}: {why}")]
    InvalidCrlUrl { url: String, why: String },
    #[error("invalid OCSP URL {url:?}: {why}")]
    InvalidOcspUrl { url: String, why: String },
    #[error("invalid validity: {detail}")]
    InvalidValidity { detail: String },
    #[error(
        "the root key {path} is not here (moved offline?): bring it back for this command, or run it where the root key is kept"
    )]
    RootKeyOffline { path: PathBuf },
    #[error(
        "no active issuer {selector:?} in this CA (active: {active}); see `mutual ca issuers`"
    )]
    UnknownIssuer { selector: String, active: String },
    #[error("refused: {detail}")]
    RolloverRefused { detail: String },
    /// `cert issue --batch` resumed with another CA than the one that started the batch.
    #[error(
        "{} holds a batch of another CA (root SHA-256 {theirs}; this CA's is {ours})",
        dir.display()
    )]
    BatchOfAnotherCa {
        dir: PathBuf,
        theirs: String,
        ours: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key in a PKCS#11 token (the CA's, when `key_storage` is pkcs11).
    #[error(transparent)]
    Hsm(#[from] mutual_hsm::HsmError),
}

impl PkiError {
    /// The CA's refusal label (DESIGN.md's one vocabulary) and the sentence to send, for an
    /// error that refuses a request by its content; `None` for a store or internal failure,
    /// which each server answers its own way. The one mapping the native API and EST share.
    pub fn refusal(&self) -> Option<(&'static str, String)> {
        let label = match self {
            PkiError::MalformedCsr { .. }
            | PkiError::CsrBadSignature
            | PkiError::WeakKey { .. }
            | PkiError::UnsupportedKey { .. }
            | PkiError::Malformed { .. }
            | PkiError::ServerNeedsSan
            | PkiError::MultipleSpiffeIds { .. }
            | PkiError::InvalidName { .. }
            | PkiError::InvalidSan { .. }
            | PkiError::InvalidSpiffeId { .. }
            | PkiError::InvalidSerial { .. }
            | PkiError::TtlBeyondIntermediate { .. }
            | PkiError::UnknownValue { .. }
            | PkiError::InvalidDuration { .. } => "bad_request",
            PkiError::NotPermitted { .. }
            | PkiError::OutsideTrustDomain { .. }
            | PkiError::PublicSuffixWildcard { .. } => "name_not_allowed",
            PkiError::UnknownSerial { .. } => "not_found",
            PkiError::Store(StoreError::TokenUsed { .. }) => {
                return Some(("token_used", "this token was already used".into()))
            }
            _ => return None,
        };
        Some((label, self.to_string()))
    }
}

impl From<rcgen::Error> for PkiError {
    fn from(e: rcgen::Error) -> Self {
        PkiError::Generate {
            detail: e.to_string(),
        }
    }
}

/// Key algorithm for CA and leaf keys. ECDSA P-256 is the default: fast, small, and accepted by
/// every TLS stack we interoperate with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KeyType {
    #[default]
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    #[serde(rename = "ed25519")]
    Ed25519,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
}

impl KeyType {
    pub const ALL: [KeyType; 4] = [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Ed25519,
        KeyType::Rsa3072,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa3072 => "rsa-3072",
        }
    }

    /// The signature algorithm a key of this type signs with.
    pub fn signature_algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
            KeyType::Rsa3072 => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ecdsa-p256" | "p256" | "ec" => Ok(KeyType::EcdsaP256),
            "ecdsa-p384" | "p384" => Ok(KeyType::EcdsaP384),
            "ed25519" => Ok(KeyType::Ed25519),
            "rsa-3072" | "rsa" => Ok(KeyType::Rsa3072),
            _ => Err(PkiError::UnknownValue {
                what: "key type",
                input: s.to_string(),
                expected: "ecdsa-p256, ecdsa-p384, ed25519, rsa-3072",
            }),
        }
    }
}

/// A subject alternative name, parsed from the CLI form `dns:x`, `ip:1.2.3.4`, `uri:...`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum San {
    /// Lowercased; may start with `*.` (a wildcard label).
    Dns(String),
    Ip(IpAddr),
    /// Any absolute URI; `spiffe://` URIs are validated as SPIFFE IDs when parsed.
    Uri(String),
    /// An email address (rfc822Name), `local@domain`; the domain is lowercased.
    Email(String),
}

impl San {
    /// The SANs an inventory record holds, as a renewal re-issues them. A name issuance has
    /// since stopped accepting (an address written as a dNSName, a '_') is the certificate's
    /// problem, not the server's: the message says to issue a new one (`name_not_allowed` at
    /// `/v1/renew` and EST re-enrollment, which answered 500 internal).
    pub fn recorded(sans: &[String]) -> Result<Vec<San>, String> {
        sans.iter()
            .map(|s| {
                s.parse::<San>().map_err(|e| {
                    format!(
                        "the certificate names {s}, which this CA no longer issues ({e}): it \
                         cannot be renewed; issue a new certificate with a valid name"
                    )
                })
            })
            .collect()
    }

    /// Whether a server (or server+client) certificate may carry this name as its identity: a
    /// DNS name or IP address for host-name checks, or a SPIFFE ID, which X509-SVIDs carry alone
    /// (peers match them by ID, not by host name).
    pub fn names_a_server(&self) -> bool {
        matches!(self, San::Dns(_) | San::Ip(_)) || self.spiffe_id().is_some()
    }

    /// The value as it is written in the certificate, without the `dns:`/`ip:` prefix (an IP
    /// address in its canonical form): what a CN naming this SAN must repeat verbatim.
    pub fn value(&self) -> String {
        match self {
            San::Dns(v) | San::Uri(v) | San::Email(v) => v.clone(),
            San::Ip(ip) => ip.to_string(),
        }
    }

    /// The SPIFFE ID in this SAN, if it is one.
    pub fn spiffe_id(&self) -> Option<&str> {
        match self {
            San::Uri(u) if u.starts_with("spiffe://") => Some(u),
            _ => None,
        }
    }

    pub(crate) fn to_rcgen(&self) -> Result<rcgen::SanType, PkiError> {
        let bad = |e: rcgen::Error| PkiError::InvalidSan {
            input: self.to_string(),
            detail: e.to_string(),
        };
        Ok(match self {
            San::Dns(d) => rcgen::SanType::DnsName(d.clone().try_into().map_err(bad)?),
            San::Ip(ip) => rcgen::SanType::IpAddress(*ip),
            San::Uri(u) => rcgen::SanType::URI(u.clone().try_into().map_err(bad)?),
            San::Email(e) => rcgen::SanType::Rfc822Name(e.clone().try_into().map_err(bad)?),
        })
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(d) => write!(f, "dns:{d}"),
            San::Ip(ip) => write!(f, "ip:{ip}"),
            San::Uri(u) => write!(f, "uri:{u}"),
            San::Email(e) => write!(f, "email:{e}"),
        }
    }
}

impl FromStr for San {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |detail: &str| PkiError::InvalidSan {
            input: s.to_string(),
            detail: detail.to_string(),
        };
        let Some((kind, value)) = s.split_once(':') else {
            return Err(bad(
                "expected TYPE:VALUE with TYPE one of dns, ip, uri, email (e.g. dns:web.internal)",
            ));
        };
        if value.is_empty() {
            return Err(bad("empty value"));
        }
        match kind.to_ascii_lowercase().as_str() {
            "dns" => {
                if value.parse::<IpAddr>().is_ok() {
                    return Err(bad(&format!(
                        "an IP address goes in an ip: SAN (a dNSName never matches an \
                         address): write ip:{value}"
                    )));
                }
                let d = value.to_ascii_lowercase();
                validate_dns_name(&d).map_err(|e| bad(&e))?;
                Ok(San::Dns(d))
            }
            "ip" => {
                let ip: IpAddr = value
                    .parse()
                    .map_err(|_| bad("not an IPv4 or IPv6 address"))?;
                // What a server listens on, or a group: never the address a client connects
                // to, so no verifier would ever match it (0.0.0.0 is the common slip).
                if ip.is_unspecified() {
                    return Err(bad(&format!(
                        "{ip} is the unspecified address a server listens on, never one a \
                         client connects to: name the address clients use (e.g. ip:10.0.0.5), \
                         or a DNS name"
                    )));
                }
                if ip.is_multicast() || ip == IpAddr::V4(std::net::Ipv4Addr::BROADCAST) {
                    return Err(bad(&format!(
                        "{ip} is a broadcast or multicast address, never a TLS peer: name the \
                         host's own address"
                    )));
                }
                Ok(San::Ip(ip))
            }
            "uri" => {
                if value.starts_with("spiffe:") || value.starts_with("SPIFFE:") {
                    let id = spiffe::parse(value)?;
                    return Ok(San::Uri(id.to_string()));
                }
                let scheme_ok = value.split_once(':').is_some_and(|(scheme, rest)| {
                    !rest.is_empty()
                        && scheme
                            .chars()
                            .next()
                            .is_some_and(|c| c.is_ascii_alphabetic())
                        && scheme
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                });
                if !scheme_ok || !value.is_ascii() || value.contains(char::is_whitespace) {
                    return Err(bad("not an absolute URI (scheme:...)"));
                }
                Ok(San::Uri(value.to_string()))
            }
            "email" => {
                let Some((local, domain)) = value.rsplit_once('@') else {
                    return Err(bad(
                        "an email address needs a '@' (e.g. email:ops@example.org)",
                    ));
                };
                if local.is_empty()
                    || local.len() > 64
                    || !local
                        .chars()
                        .all(|c| c.is_ascii_graphic() && !"@<>()[]\\,;:\"".contains(c))
                {
                    return Err(bad(
                        "the part before '@' must be 1 to 64 printable ASCII characters without spaces or <>()[],;:\"",
                    ));
                }
                let domain = domain.to_ascii_lowercase();
                if domain.starts_with("*.") {
                    return Err(bad("an email domain cannot be a wildcard"));
                }
                validate_dns_name(&domain).map_err(|e| bad(&format!("domain: {e}")))?;
                Ok(San::Email(format!("{local}@{domain}")))
            }
            other => Err(bad(&format!(
                "unknown SAN type {other:?} (expected dns:, ip:, uri: or email:)"
            ))),
        }
    }
}

/// Checks a DNS name for a SAN: LDH labels of at most 63 bytes, at most 253 bytes, an optional
/// leading `*.` wildcard label.
pub(crate) fn validate_dns_name(d: &str) -> Result<(), String> {
    let body = d.strip_prefix("*.").unwrap_or(d);
    if body.is_empty() || d.len() > 253 {
        return Err("DNS name must be 1 to 253 characters".into());
    }
    for label in body.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("every DNS label must be 1 to 63 characters (no empty labels)".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
        // RFC 5280 4.2.1.6's preferred name syntax, as the lint's san-dns-invalid rule reads
        // it: an underscore (which webpki tolerates in a peer) is not issued.
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!(
                "label {label:?} has characters other than letters, digits and '-' (a dNSName \
                 is in RFC 5280's preferred name syntax: no '_')"
            ));
        }
    }
    // RFC 1123 2.1: a top-level label is never all digits, so "10.0.0.1" is an address; as a
    // dNSName no verifier matches it against https://10.0.0.1 (that needs an iPAddress SAN).
    if let Some(last) = body
        .rsplit('.')
        .next()
        .filter(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "the last label {last:?} is all digits, which no DNS name has (RFC 1123 2.1): an IP \
             address is not a DNS name"
        ));
    }
    Ok(())
}

/// What a leaf certificate may be used for (its extended key usages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Usage {
    Server,
    #[default]
    Client,
    Both,
}

impl Usage {
    pub fn as_str(self) -> &'static str {
        match self {
            Usage::Server => "server",
            Usage::Client => "client",
            Usage::Both => "both",
        }
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 5280 revocation reasons, spelled as on the CLI (`key-compromise`, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RevocationReason {
    #[default]
    Unspecified,
    KeyCompromise,
    CaCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    CertificateHold,
    PrivilegeWithdrawn,
}

impl RevocationReason {
    /// The reasons a new revocation may give (the CLI, the console, `POST /v1/revoke`): all
    /// but certificate-hold ([`RevocationReason::for_revocation`]).
    pub const GIVEN: [RevocationReason; 7] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn,
    ];

    /// A reason for a new revocation. certificate-hold is refused: it says the revocation is a
    /// suspension a later CRL may lift, and this CA never lifts one (the CA/B Forum Baseline
    /// Requirements, 7.2.2, forbid it for TLS certificates; ACME refuses its code 6 too). Rows
    /// an older version revoked with it keep it.
    pub fn for_revocation(s: &str) -> Result<Self, PkiError> {
        let r: RevocationReason = s.parse()?;
        if r == RevocationReason::CertificateHold {
            return Err(PkiError::UnknownValue {
                what: "revocation reason",
                input: s.to_string(),
                expected: "unspecified, key-compromise, ca-compromise, affiliation-changed, \
                           superseded, cessation-of-operation, privilege-withdrawn; \
                           certificate-hold is a suspension, and a revocation here is never \
                           lifted",
            });
        }
        Ok(r)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "key-compromise",
            RevocationReason::CaCompromise => "ca-compromise",
            RevocationReason::AffiliationChanged => "affiliation-changed",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessation-of-operation",
            RevocationReason::CertificateHold => "certificate-hold",
            RevocationReason::PrivilegeWithdrawn => "privilege-withdrawn",
        }
    }

    /// The CRL entry reason code; `unspecified` is omitted as RFC 5280 §5.3.1 asks.
    pub(crate) fn to_rcgen(self) -> Option<rcgen::RevocationReason> {
        use rcgen::RevocationReason as R;
        match self {
            RevocationReason::Unspecified => None,
            RevocationReason::KeyCompromise => Some(R::KeyCompromise),
            RevocationReason::CaCompromise => Some(R::CaCompromise),
            RevocationReason::AffiliationChanged => Some(R::AffiliationChanged),
            RevocationReason::Superseded => Some(R::Superseded),
            RevocationReason::CessationOfOperation => Some(R::CessationOfOperation),
            RevocationReason::CertificateHold => Some(R::CertificateHold),
            RevocationReason::PrivilegeWithdrawn => Some(R::PrivilegeWithdrawn),
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RevocationReason {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.to_ascii_lowercase().replace('_', "-");
        Ok(match norm.as_str() {
            "unspecified" => RevocationReason::Unspecified,
            "key-compromise" => RevocationReason::KeyCompromise,
            "ca-compromise" => RevocationReason::CaCompromise,
            "affiliation-changed" => RevocationReason::AffiliationChanged,
            "superseded" => RevocationReason::Superseded,
            "cessation-of-operation" => RevocationReason::CessationOfOperation,
            "certificate-hold" => RevocationReason::CertificateHold,
            "privilege-withdrawn" => RevocationReason::PrivilegeWithdrawn,
            _ => {
                return Err(PkiError::UnknownValue {
                    what: "revocation reason",
                    input: s.to_string(),
                    expected: "unspecified, key-compromise, ca-compromise, affiliation-changed, \
                               superseded, cessation-of-operation, certificate-hold, privilege-withdrawn",
                })
            }
        })
    }
}

/// The longest duration any PKI flag takes (100 years of 365 days): the bound of the one
/// duration grammar, [`mutual_policy::human::MAX_DURATION`].
pub const MAX_DURATION: Duration = mutual_policy::human::MAX_DURATION;

/// Parses a CA duration such as `90s`, `15m`, `24h`, `7d`, `2w` or a sum like `1h30m`: the
/// binary's one grammar ([`mutual_policy::human::HumanDuration`]) with the CA's rules: a bare
/// number is refused (a unit-less TTL is a mistake waiting to happen), so is zero, and anything
/// above [`MAX_DURATION`] is refused at parse time, so no later date arithmetic can overflow.
pub fn parse_duration(input: &str) -> Result<Duration, PkiError> {
    mutual_policy::human::HumanDuration::parse_ttl(input)
        .map(|d| d.get())
        .map_err(|e| PkiError::InvalidDuration {
            input: e.input,
            detail: e.detail,
        })
}

/// Formats seconds as a short human duration (`3 d 4 h`, `45 min`, `12 s`; `-` before a past
/// one): [`mutual_policy::human::duration`], the one every command uses.
pub fn human_duration(secs: i64) -> String {
    let body = mutual_policy::human::duration(secs.unsigned_abs());
    if secs < 0 {
        format!("-{body}")
    } else {
        body
    }
}

/// Normalises a serial typed by a person (`0A:1b:...`, `0a1b...`, with or without a leading
/// zero byte as openssl may print it) to the inventory form: lowercase hex, no colons, no
/// leading zero bytes.
pub fn normalize_serial(input: &str) -> Result<String, PkiError> {
    let mut s: String = input
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PkiError::InvalidSerial {
            input: input.to_string(),
        });
    }
    s = s.trim_start_matches('0').to_string();
    if s.is_empty() {
        s.push('0');
    }
    if s.len() % 2 == 1 {
        s.insert(0, '0');
    }
    Ok(s)
}

/// Lowercase hex of a big-endian serial, without leading zero bytes (as [`normalize_serial`]):
/// the one spelling every command and the proxy use.
pub use mutual_policy::serial_hex;

/// RFC 3339 in UTC to the second, as every command prints times.
pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    mutual_policy::human::rfc3339(t.unix_timestamp())
}

/// PEM-encodes DER with `label` (e.g. `X509 CRL`, `CERTIFICATE`).
pub fn pem_encode(label: &str, der: &[u8]) -> Result<String, PkiError> {
    pkcs8::der::pem::encode_string(label, pkcs8::LineEnding::LF, der).map_err(|e| {
        PkiError::Generate {
            detail: format!("PEM encoding: {e}"),
        }
    })
}

/// `AB:CD:...` form of a lowercase hex string (how openssl shows fingerprints).
pub fn colon_hex(hex_lower: &str) -> String {
    hex_lower
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("24h").unwrap().as_secs(), 86_400);
        assert_eq!(parse_duration("7d").unwrap().as_secs(), 7 * 86_400);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_duration("36500d").unwrap(), MAX_DURATION);
        for huge in [
            "36501d",
            "3000000d",
            "10000000d",
            "99999999999999d",
            "18446744073709551615s",
        ] {
            let e = parse_duration(huge).unwrap_err().to_string();
            assert!(e.contains("too large"), "{huge}: {e}");
        }
    }

    #[test]
    fn sans() {
        assert_eq!(
            "dns:Web.Internal".parse::<San>().unwrap(),
            San::Dns("web.internal".into())
        );
        assert!(matches!("ip:10.0.0.1".parse::<San>().unwrap(), San::Ip(_)));
        assert!(matches!("ip:::1".parse::<San>().unwrap(), San::Ip(_)));
        assert_eq!(
            "uri:spiffe://example.org/ns/a".parse::<San>().unwrap(),
            San::Uri("spiffe://example.org/ns/a".into())
        );
        let e = "mail:a@b".parse::<San>().unwrap_err().to_string();
        assert!(e.contains("unknown SAN type"), "{e}");
        assert_eq!(
            "email:Ops@Example.ORG".parse::<San>().unwrap(),
            San::Email("Ops@example.org".into())
        );
        assert!("email:nobody".parse::<San>().is_err());
        assert!("email:a b@example.org".parse::<San>().is_err());
        assert!("email:@example.org".parse::<San>().is_err());
        assert!("email:a@bad..domain".parse::<San>().is_err());
        assert!("dns:bad..name".parse::<San>().is_err());
        assert!("ip:300.1.1.1".parse::<San>().is_err());
        assert!("uri:spiffe://Example.org/x".parse::<San>().is_err());
        assert!("web".parse::<San>().is_err());
    }

    #[test]
    fn serials() {
        assert_eq!(normalize_serial("0A:1B:ff").unwrap(), "0a1bff");
        assert_eq!(normalize_serial("000a1bff").unwrap(), "0a1bff");
        assert_eq!(normalize_serial("AB").unwrap(), "ab");
        assert!(normalize_serial("xyz").is_err());
        assert_eq!(serial_hex(&[0, 0x0a, 0x1b]), "0a1b");
        assert_eq!(colon_hex("0a1b"), "0A:1B");
    }

    #[test]
    fn names() {
        for k in KeyType::ALL {
            assert_eq!(k.as_str().parse::<KeyType>().unwrap(), k);
        }
        assert!("dsa".parse::<KeyType>().is_err());
        assert_eq!(
            "key-compromise".parse::<RevocationReason>().unwrap(),
            RevocationReason::KeyCompromise
        );
    }
}
