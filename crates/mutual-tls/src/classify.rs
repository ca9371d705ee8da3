//! Every way a handshake can fail, mapped onto the one reason vocabulary (`Reason`) plus one
//! sentence of detail: this is what turns "handshake failed" into something an operator can fix.
//!
//! Both sides are covered: errors our own verifiers raise (the certificate we were shown is
//! bad), and TLS alerts the peer sent us (the certificate we showed was refused).
//!
//! An I/O error that carries no TLS error is classified by its kind: `TimedOut` is
//! `handshake_timeout`; an EOF or reset before the handshake finished (the peer hung up without
//! an alert: a port scanner, a health check, a client that gave up) is `other`, because nothing
//! malformed was received; anything else is `other` too.

use std::io;

use rustls::{AlertDescription, CertificateError, Error, PeerIncompatible};
use rustls_pki_types::UnixTime;

use crate::{Reason, TlsError};
use mutual_policy::human::rfc3339;

fn ts(t: &UnixTime) -> String {
    rfc3339(i64::try_from(t.as_secs()).unwrap_or(i64::MAX))
}

/// `then` relative to `now` in the one human form (`3 s ago`, `in 4 min`), as every command
/// prints durations ([`mutual_policy::human`]).
fn since(then: &UnixTime, now: &UnixTime) -> String {
    let (a, b) = (then.as_secs(), now.as_secs());
    if b >= a {
        format!("{} ago", mutual_policy::human::duration(b - a))
    } else {
        format!("in {}", mutual_policy::human::duration(a - b))
    }
}

/// The reason label for a rustls error.
pub fn classify_rustls_error(e: &Error) -> Reason {
    match e {
        Error::NoCertificatesPresented => Reason::NoClientCert,
        Error::InvalidCertificate(c) => classify_certificate_error(c),
        Error::InvalidCertRevocationList(_) => Reason::RevocationUnknown,
        Error::InvalidMessage(_)
        | Error::PeerMisbehaved(_)
        | Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. }
        | Error::PeerSentOversizedRecord
        | Error::DecryptError => Reason::Malformed,
        Error::PeerIncompatible(p) => classify_incompatible(p),
        Error::AlertReceived(a) => classify_alert(*a),
        _ => Reason::Other,
    }
}

#[allow(deprecated)]
fn classify_certificate_error(c: &CertificateError) -> Reason {
    use CertificateError as C;
    match c {
        C::Expired | C::ExpiredContext { .. } => Reason::Expired,
        C::NotValidYet | C::NotValidYetContext { .. } => Reason::NotYetValid,
        C::UnknownIssuer => Reason::UnknownCa,
        C::Revoked => Reason::Revoked,
        C::UnknownRevocationStatus
        | C::ExpiredRevocationList
        | C::ExpiredRevocationListContext { .. } => Reason::RevocationUnknown,
        C::BadSignature => Reason::BadSignature,
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => Reason::WrongPurpose,
        C::NotValidForName | C::NotValidForNameContext { .. } => Reason::NameMismatch,
        C::UnsupportedSignatureAlgorithm | C::UnsupportedSignatureAlgorithmContext { .. } => {
            Reason::WeakKey
        }
        // The algorithm named does not fit the key (an ECDSA CertificateVerify whose scheme
        // names another curve, an RSA signature from an EC issuer): the signature is wrong,
        // the key is not weak, and reissuing it would not help.
        C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => Reason::BadSignature,
        C::BadEncoding | C::UnhandledCriticalExtension => Reason::Malformed,
        C::ApplicationVerificationFailure => Reason::PolicyDenied,
        C::Other(o) => {
            if let Some(t) = o.0.downcast_ref::<TlsError>() {
                return match t {
                    TlsError::WeakKey { .. } => Reason::WeakKey,
                    TlsError::UriMismatch { .. }
                    | TlsError::OutsideTrustDomain { .. }
                    | TlsError::SpiffeIdWithoutPath { .. } => Reason::NameMismatch,
                    TlsError::ProfileViolation { .. } => Reason::Malformed,
                    _ => Reason::Other,
                };
            }
            if let Some(w) = o.0.downcast_ref::<webpki::Error>() {
                return classify_webpki(w);
            }
            Reason::Other
        }
        _ => Reason::Other,
    }
}

/// webpki errors that rustls has no variant for.
fn classify_webpki(e: &webpki::Error) -> Reason {
    use webpki::Error as W;
    match e {
        W::CaUsedAsEndEntity => Reason::WrongPurpose,
        W::EmptyEkuExtension => Reason::WrongPurpose,
        W::NameConstraintViolation => Reason::NameMismatch,
        W::EndEntityUsedAsCa
        | W::PathLenConstraintViolated
        | W::MaximumPathDepthExceeded
        | W::CertDistrusted => Reason::UnknownCa,
        W::SignatureAlgorithmMismatch => Reason::BadSignature,
        W::UnsupportedCertVersion
        | W::MalformedExtensions
        | W::ExtensionValueInvalid
        | W::InvalidSerialNumber
        | W::MalformedDnsIdentifier
        | W::MalformedNameConstraint
        | W::InvalidNetworkMaskConstraint
        | W::UnsupportedCriticalExtension
        | W::UnsupportedNameType => Reason::Malformed,
        W::InvalidCrlNumber
        | W::UnsupportedCrlIssuingDistributionPoint
        | W::UnsupportedCrlVersion
        | W::UnsupportedDeltaCrl
        | W::UnsupportedIndirectCrl
        | W::UnsupportedRevocationReason
        | W::UnsupportedRevocationReasonsPartitioning => Reason::RevocationUnknown,
        _ => Reason::Other,
    }
}

fn classify_incompatible(p: &PeerIncompatible) -> Reason {
    use PeerIncompatible as P;
    match p {
        P::NoCipherSuitesInCommon
        | P::NoKxGroupsInCommon
        | P::NoSignatureSchemesInCommon
        | P::NoEcPointFormatsInCommon
        | P::NoCertificateRequestSignatureSchemesInCommon => Reason::NoSharedCipher,
        P::ServerDoesNotSupportTls12Or13
        | P::ServerTlsVersionIsDisabledByOurConfig
        | P::SupportedVersionsExtensionRequired
        | P::Tls12NotOffered
        | P::Tls12NotOfferedOrEnabled
        | P::Tls13RequiredForQuic
        | P::ExtendedMasterSecretExtensionRequired
        | P::KeyShareExtensionRequired
        | P::SignatureAlgorithmsExtensionRequired
        | P::NamedGroupsExtensionRequired
        | P::EcPointsExtensionRequired => Reason::ProtocolVersion,
        _ => Reason::Other,
    }
}

/// An alert the peer sent: what it says about the certificate or parameters we offered.
fn classify_alert(a: AlertDescription) -> Reason {
    use AlertDescription as A;
    match a {
        A::CertificateRequired => Reason::NoClientCert,
        A::UnknownCA => Reason::UnknownCa,
        A::CertificateExpired => Reason::Expired,
        A::CertificateRevoked => Reason::Revoked,
        A::UnsupportedCertificate => Reason::WrongPurpose,
        A::ProtocolVersion | A::InappropriateFallback => Reason::ProtocolVersion,
        A::HandshakeFailure | A::InsufficientSecurity => Reason::NoSharedCipher,
        A::AccessDenied => Reason::PolicyDenied,
        A::DecodeError | A::UnexpectedMessage | A::IllegalParameter | A::RecordOverflow => {
            Reason::Malformed
        }
        A::DecryptError => Reason::BadSignature,
        A::UnrecognisedName => Reason::NameMismatch,
        _ => Reason::Other,
    }
}

/// The rustls error inside an I/O error (tokio-rustls wraps them as `InvalidData`).
pub fn rustls_error_of(e: &io::Error) -> Option<&Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<Error>())
}

/// The reason label for a failed TLS accept/connect (tokio-rustls wraps rustls::Error in
/// io::Error). See the module doc for I/O errors without a TLS error inside.
pub fn classify_io_error(e: &io::Error) -> Reason {
    if let Some(r) = rustls_error_of(e) {
        return classify_rustls_error(r);
    }
    match e.kind() {
        io::ErrorKind::TimedOut => Reason::HandshakeTimeout,
        io::ErrorKind::InvalidData => Reason::Malformed,
        _ => Reason::Other,
    }
}

/// One sentence naming what went wrong and the values involved (times, names, purposes).
pub fn describe(e: &Error) -> String {
    match e {
        Error::NoCertificatesPresented => "the client sent no certificate".into(),
        Error::InvalidCertificate(c) => describe_certificate_error(c),
        Error::InvalidCertRevocationList(c) => {
            format!(
                "a CRL could not be used: {}",
                debug_words(&format!("{c:?}"))
            )
        }
        Error::AlertReceived(a) => format!(
            "the peer refused the handshake with TLS alert {}",
            alert_name(*a)
        ),
        Error::PeerIncompatible(p) => format!(
            "the peer is incompatible: {}",
            debug_words(&format!("{p:?}"))
        ),
        Error::InvalidMessage(m) => format!(
            "the peer sent an invalid TLS message: {}",
            debug_words(&format!("{m:?}"))
        ),
        other => other.to_string(),
    }
}

fn alert_name(a: AlertDescription) -> String {
    // AlertDescription's Debug is the CamelCase name; print the RFC's snake_case word.
    let camel = format!("{a:?}");
    let mut out = String::with_capacity(camel.len() + 4);
    let mut prev_upper = true;
    for ch in camel.chars() {
        if ch.is_ascii_uppercase() {
            if !prev_upper {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
        prev_upper = ch.is_ascii_uppercase();
    }
    out
}

#[allow(deprecated)]
fn describe_certificate_error(c: &CertificateError) -> String {
    use CertificateError as C;
    match c {
        C::ExpiredContext { time, not_after } => format!(
            "certificate expired at {}, now {} ({})",
            ts(not_after),
            ts(time),
            since(not_after, time)
        ),
        C::Expired => "a certificate in the chain has expired (or its validity is inverted)".into(),
        C::NotValidYetContext { time, not_before } => format!(
            "certificate not valid before {}, now {} (it starts {})",
            ts(not_before),
            ts(time),
            since(not_before, time)
        ),
        C::NotValidYet => "a certificate in the chain is not valid yet".into(),
        C::UnknownIssuer => {
            "no path from the certificate to a trusted root (issuer unknown or intermediate missing)"
                .into()
        }
        C::Revoked => {
            "a certificate in the chain is revoked (listed in a CRL, or so answered by OCSP)".into()
        }
        C::UnknownRevocationStatus => {
            "no CRL for an issuer in the chain, or no current OCSP answer, so revocation status is \
             unknown"
                .into()
        }
        C::ExpiredRevocationListContext { time, next_update } => format!(
            "the CRL expired (nextUpdate {}, now {})",
            ts(next_update),
            ts(time)
        ),
        C::ExpiredRevocationList => "the CRL is past its nextUpdate".into(),
        C::BadSignature => "a signature in the chain does not verify".into(),
        C::InvalidPurposeContext {
            required,
            presented,
        } => format!(
            "the certificate's extended key usage does not include {required}; it has [{}]",
            presented
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        C::InvalidPurpose => "the certificate is not valid for this purpose (EKU)".into(),
        C::NotValidForNameContext {
            expected,
            presented,
        } => {
            let names: Vec<String> = presented.iter().map(|p| presented_name(p)).collect();
            let expected = expected.to_str();
            // The common mistake behind an address that "is" in the certificate: written as a
            // dNSName, which no verifier matches against an address.
            let as_dns = format!("dns:{expected}");
            let why = if expected.parse::<std::net::IpAddr>().is_ok() && names.contains(&as_dns)
            {
                format!(
                    " (it names {expected} as a DNS name; an address matches only an IP SAN, \
                     ip:{expected})"
                )
            } else {
                String::new()
            };
            format!(
                "the certificate is not valid for {expected:?}; it carries [{}]{why}",
                names.join(", ")
            )
        }
        C::NotValidForName => "the certificate is not valid for the expected name".into(),
        C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "a signature names an algorithm that does not fit the key it is checked with (say, \
             an ECDSA scheme for another curve)"
                .into()
        }
        C::UnsupportedSignatureAlgorithmContext { .. } | C::UnsupportedSignatureAlgorithm => {
            "a signature in the chain uses a forbidden algorithm or key (SHA-1, RSA < 2048, ...)"
                .into()
        }
        C::BadEncoding => "a certificate is not valid DER".into(),
        C::UnhandledCriticalExtension => {
            "a certificate has a critical extension that is not understood".into()
        }
        C::Other(o) => {
            if let Some(t) = o.0.downcast_ref::<TlsError>() {
                return t.to_string();
            }
            if let Some(w) = o.0.downcast_ref::<webpki::Error>() {
                return describe_webpki(w);
            }
            o.to_string()
        }
        other => other.to_string(),
    }
}

/// One sentence for a webpki error (its `Display` is its `Debug`, e.g. `CaUsedAsEndEntity`,
/// which must not reach a user or a log line).
pub fn describe_webpki(e: &webpki::Error) -> String {
    use webpki::Error as W;
    match e {
        W::CaUsedAsEndEntity => {
            "a CA certificate was presented as the end-entity certificate".into()
        }
        W::EndEntityUsedAsCa => "an end-entity certificate was used as an issuer".into(),
        W::NameConstraintViolation => {
            "a name in the certificate violates an issuer's name constraints".into()
        }
        W::PathLenConstraintViolated => {
            "the chain is longer than an issuer's pathLenConstraint allows".into()
        }
        W::MaximumPathDepthExceeded => "the chain has more intermediates than allowed".into(),
        W::EmptyEkuExtension => "the certificate has an empty extended key usage extension".into(),
        W::BadDer | W::BadDerTime => "the certificate is not valid DER".into(),
        W::TrailingData(_) => {
            "there are extra bytes after the certificate (not one DER certificate)".into()
        }
        W::UnsupportedCertVersion => "the certificate is not X.509 v3".into(),
        W::CertExpired { .. } => "the certificate has expired".into(),
        W::CertNotValidYet { .. } => "the certificate is not valid yet".into(),
        W::UnknownIssuer => "no path from the certificate to a trusted root".into(),
        other => format!(
            "the certificate was rejected: {}",
            debug_words(&format!("{other:?}"))
        ),
    }
}

/// A name as rustls-webpki lists it in a name mismatch (`DnsName("srv.test")`, its `Debug`),
/// in the `dns:`/`ip:`/`uri:` form every command prints.
pub fn presented_name(s: &str) -> String {
    let inner = |prefix: &str| {
        s.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(')'))
            .map(|r| r.trim_matches('"').to_string())
    };
    if let Some(d) = inner("DnsName(") {
        return format!("dns:{d}");
    }
    if let Some(ip) = inner("IpAddress(") {
        return format!("ip:{ip}");
    }
    if let Some(u) = inner("UniformResourceIdentifier(") {
        return format!("uri:{u}");
    }
    debug_words(s)
}

/// Words for a library enum whose only text is its `Debug` (`MissingSectionEnd { .. }`,
/// `NomError(Eof)`): the variant name split into lowercase words, its payload dropped.
pub fn debug_words(debug: &str) -> String {
    let name = debug.split(['(', '{', ' ']).next().unwrap_or(debug).trim();
    let mut out = String::with_capacity(name.len() + 8);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push(' ');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// One sentence for a PEM parsing error (its `Debug` shows byte arrays).
pub fn describe_pem(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as P;
    match e {
        P::MissingSectionEnd { .. } => {
            "a PEM block has no matching -----END line (is the file truncated?)".into()
        }
        P::IllegalSectionStart { .. } => "a PEM -----BEGIN line is malformed".into(),
        P::Base64Decode(_) => "a PEM block's base64 content does not decode".into(),
        P::NoItemsFound => "no PEM block found".into(),
        P::Io(e) => e.to_string(),
        other => debug_words(&format!("{other:?}")),
    }
}

/// `describe` for an I/O error from a TLS accept/connect.
pub fn describe_io(e: &io::Error) -> String {
    if let Some(r) = rustls_error_of(e) {
        return describe(r);
    }
    match e.kind() {
        io::ErrorKind::TimedOut => "the handshake did not complete in time".into(),
        io::ErrorKind::UnexpectedEof => {
            "the peer closed the connection before the handshake completed (no TLS alert)".into()
        }
        _ => e.to_string(),
    }
}
