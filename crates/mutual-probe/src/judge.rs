//! Turning what was recorded into reason labels: the server's chain judged against the trust
//! roots (separately from the handshake, so an invalid chain is still shown), alerts the server
//! sent mapped with the context only the probe has (was a certificate sent?), and a local check
//! of `--cert` that explains the generic alerts (bad_certificate, handshake_failure) servers send.

use std::sync::Arc;

use mutual_tls::Reason;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, RootCertStore};
use serde::Serialize;

use crate::certinfo::{now_unix, CertSummary};

/// Whether the server's chain is trusted for the name, judged apart from the handshake.
#[derive(Clone, Debug, Serialize)]
pub struct ServerVerification {
    /// `null` when the server sent no chain (the handshake failed before it).
    pub valid: Option<bool>,
    pub reason: Option<Reason>,
    pub detail: String,
    /// Which roots were used ("--ca FILE" or the system store).
    pub trust: String,
}

/// The reason label for a certificate error rustls reports.
pub fn certificate_error_reason(e: &CertificateError) -> Reason {
    use CertificateError as C;
    #[allow(deprecated)]
    match e {
        C::Expired | C::ExpiredContext { .. } => Reason::Expired,
        C::NotValidYet | C::NotValidYetContext { .. } => Reason::NotYetValid,
        C::Revoked => Reason::Revoked,
        C::UnknownIssuer => Reason::UnknownCa,
        C::UnknownRevocationStatus
        | C::ExpiredRevocationList
        | C::ExpiredRevocationListContext { .. } => Reason::RevocationUnknown,
        C::BadSignature => Reason::BadSignature,
        C::UnsupportedSignatureAlgorithm
        | C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => Reason::WeakKey,
        C::NotValidForName | C::NotValidForNameContext { .. } => Reason::NameMismatch,
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => Reason::WrongPurpose,
        C::BadEncoding | C::UnhandledCriticalExtension => Reason::Malformed,
        _ => Reason::Other,
    }
}

/// The reason label for an error on our side of the handshake (what rustls found wrong).
pub fn rustls_error_reason(e: &rustls::Error, cert_sent: bool) -> Reason {
    use rustls::Error as E;
    match e {
        E::AlertReceived(a) => alert_reason(*a, cert_sent).0,
        E::InvalidCertificate(c) => certificate_error_reason(c),
        E::PeerIncompatible(p) => {
            if format!("{p:?}").contains("Version") {
                Reason::ProtocolVersion
            } else {
                Reason::NoSharedCipher
            }
        }
        E::InvalidMessage(_) | E::PeerMisbehaved(_) | E::InappropriateMessage { .. } => {
            Reason::Malformed
        }
        E::InappropriateHandshakeMessage { .. } | E::DecryptError => Reason::Malformed,
        _ => Reason::Other,
    }
}

/// snake_case alert name as the RFCs spell it.
pub fn alert_name(a: AlertDescription) -> String {
    use AlertDescription as A;
    let s = match a {
        A::CloseNotify => "close_notify",
        A::UnexpectedMessage => "unexpected_message",
        A::BadRecordMac => "bad_record_mac",
        A::RecordOverflow => "record_overflow",
        A::HandshakeFailure => "handshake_failure",
        A::BadCertificate => "bad_certificate",
        A::UnsupportedCertificate => "unsupported_certificate",
        A::CertificateRevoked => "certificate_revoked",
        A::CertificateExpired => "certificate_expired",
        A::CertificateUnknown => "certificate_unknown",
        A::IllegalParameter => "illegal_parameter",
        A::UnknownCA => "unknown_ca",
        A::AccessDenied => "access_denied",
        A::DecodeError => "decode_error",
        A::DecryptError => "decrypt_error",
        A::ProtocolVersion => "protocol_version",
        A::InsufficientSecurity => "insufficient_security",
        A::InternalError => "internal_error",
        A::InappropriateFallback => "inappropriate_fallback",
        A::UserCanceled => "user_canceled",
        A::NoRenegotiation => "no_renegotiation",
        A::MissingExtension => "missing_extension",
        A::UnsupportedExtension => "unsupported_extension",
        A::UnrecognisedName => "unrecognized_name",
        A::BadCertificateStatusResponse => "bad_certificate_status_response",
        A::UnknownPSKIdentity => "unknown_psk_identity",
        A::CertificateRequired => "certificate_required",
        A::NoApplicationProtocol => "no_application_protocol",
        other => return format!("{other:?}").to_lowercase(),
    };
    s.to_string()
}

/// Maps an alert the server sent to a reason. The bool says the alert is generic (servers send it
/// for many causes), so a local check of the certificate should refine it.
pub fn alert_reason(a: AlertDescription, cert_sent: bool) -> (Reason, bool) {
    use AlertDescription as A;
    match a {
        A::CertificateRequired => (Reason::NoClientCert, false),
        A::HandshakeFailure | A::BadCertificate | A::CertificateUnknown if !cert_sent => {
            (Reason::NoClientCert, false)
        }
        A::HandshakeFailure | A::BadCertificate | A::CertificateUnknown => (Reason::Other, true),
        A::UnknownCA => (Reason::UnknownCa, false),
        A::CertificateExpired => (Reason::Expired, true),
        A::CertificateRevoked => (Reason::Revoked, false),
        A::UnsupportedCertificate => (Reason::WrongPurpose, false),
        A::AccessDenied => (Reason::PolicyDenied, false),
        A::DecryptError => (Reason::BadSignature, false),
        A::BadCertificateStatusResponse => (Reason::RevocationUnknown, false),
        A::ProtocolVersion => (Reason::ProtocolVersion, false),
        A::InsufficientSecurity => (Reason::NoSharedCipher, false),
        A::IllegalParameter | A::DecodeError | A::UnexpectedMessage | A::RecordOverflow => {
            (Reason::Malformed, false)
        }
        _ => (Reason::Other, true),
    }
}

/// Judges the server's chain with rustls's own WebPKI verifier (the one a real client uses).
pub fn verify_server_chain(
    chain: &[CertificateDer<'static>],
    roots: &Arc<RootCertStore>,
    trust: &str,
    name: &ServerName<'static>,
    provider: &Arc<CryptoProvider>,
) -> ServerVerification {
    let mk = |valid, reason, detail: String| ServerVerification {
        valid,
        reason,
        detail,
        trust: trust.to_string(),
    };
    let Some((leaf, intermediates)) = chain.split_first() else {
        return mk(None, None, "the server sent no certificate".into());
    };
    let verifier =
        match mutual_tls::client::webpki_verifier(Arc::clone(roots), Arc::clone(provider)) {
            Ok(v) => v,
            Err(e) => {
                return mk(
                    Some(false),
                    Some(Reason::UnknownCa),
                    format!("no usable trust roots ({e})"),
                )
            }
        };
    match verifier.verify_server_cert(leaf, intermediates, name, &[], UnixTime::now()) {
        Ok(_) => mk(
            Some(true),
            Some(Reason::Ok),
            format!(
                "chains to a trusted root and is valid for {:?}",
                name.to_str()
            ),
        ),
        Err(e) => {
            let reason = match &e {
                rustls::Error::InvalidCertificate(c) => certificate_error_reason(c),
                other => rustls_error_reason(other, false),
            };
            // rustls' own text lists names as `DnsName("...")`: use the one description.
            mk(Some(false), Some(reason), mutual_tls::describe(&e))
        }
    }
}

/// `--profile strict`: a chain webpki accepted must also pass the lint's error rules on every
/// certificate of its path (mutual_tls's strict profile, the same as `cert verify`); a
/// violation turns the verdict into `malformed` with the rule in the detail.
pub fn apply_strict_profile(
    v: &mut ServerVerification,
    chain: &[CertificateDer<'static>],
    ca: Option<&std::path::Path>,
    name: &ServerName<'static>,
) {
    if v.valid != Some(true) {
        return;
    }
    let Some((leaf, intermediates)) = chain.split_first() else {
        return;
    };
    let roots = match ca {
        Some(p) => mutual_tls::load::load_certs(p).unwrap_or_default(),
        None => rustls_native_certs::load_native_certs().certs,
    };
    let trust = match mutual_tls::Trust::new(roots, Vec::new(), Default::default()) {
        Ok(t) => t.with_profile(mutual_tls::Profile::Strict),
        Err(e) => {
            v.valid = Some(false);
            v.reason = Some(Reason::Malformed);
            v.detail = e.to_string();
            return;
        }
    };
    let peer = mutual_tls::PeerName::Server(name.clone());
    if let Err(e) = trust.check(
        leaf,
        intermediates,
        UnixTime::now(),
        &mutual_tls::Purpose::Server,
        Some(&peer),
        None,
    ) {
        v.valid = Some(false);
        v.reason = Some(mutual_tls::classify_rustls_error(&e));
        v.detail = mutual_tls::describe(&e);
    }
}

/// Something wrong with `--cert` found without the network.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub reason: Reason,
    pub detail: String,
}

/// Checks the client chain against its own validity, purpose, key strength and the CA names the
/// server advertised. The first finding is the most likely cause of a rejection.
pub fn check_client_chain(chain: &[CertSummary], advertised: &[String]) -> Vec<Finding> {
    let mut out = Vec::new();
    let now = now_unix();
    for (i, c) in chain.iter().enumerate() {
        let which = if i == 0 {
            "the client certificate".to_string()
        } else {
            format!("chain certificate [{i}] ({})", c.subject)
        };
        if now > c.not_after_unix {
            out.push(Finding {
                reason: Reason::Expired,
                detail: format!(
                    "{which} expired on {} ({})",
                    c.not_after,
                    mutual_tls::human::relative(c.not_after_unix - now)
                ),
            });
        } else if now < c.not_before_unix {
            out.push(Finding {
                reason: Reason::NotYetValid,
                detail: format!("{which} is not valid before {}", c.not_before),
            });
        }
    }
    if let Some(leaf) = chain.first() {
        if leaf.eku_present && !leaf.eku_client_auth {
            out.push(Finding {
                reason: Reason::WrongPurpose,
                detail: format!(
                    "the client certificate's extended key usage ({}) lacks clientAuth",
                    leaf.eku.join(", ")
                ),
            });
        }
        // The verifier's rule (a 2052-bit key is refused as weak_key too).
        if let Some(p) = leaf.rsa_bits.and_then(mutual_tls::RsaSizeProblem::of) {
            out.push(Finding {
                reason: Reason::WeakKey,
                detail: format!(
                    "the client certificate has a weak key ({}: {})",
                    leaf.key,
                    p.why()
                ),
            });
        }
    }
    if !advertised.is_empty() && !chain.is_empty() {
        let names: Vec<&str> = chain
            .iter()
            .flat_map(|c| [c.subject.as_str(), c.issuer.as_str()])
            .collect();
        if !advertised.iter().any(|a| names.contains(&a.as_str())) {
            let top = chain.last().map(|c| c.issuer.clone()).unwrap_or_default();
            out.push(Finding {
                reason: Reason::UnknownCa,
                detail: format!(
                    "the server accepts certificates from {}; yours chains up to {top}",
                    advertised.join(" | ")
                ),
            });
        }
    }
    out
}

/// Decodes advertised CA names; the bool says some were sent without their outer SEQUENCE.
pub fn decode_cas(raw: &[Vec<u8>]) -> (Vec<String>, bool) {
    let mut repaired = false;
    let names = raw
        .iter()
        .map(|d| {
            let (s, r) = crate::certinfo::dn_decode(d);
            repaired |= r;
            s
        })
        .collect();
    (names, repaired)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn alerts_map_with_context() {
        use AlertDescription as A;
        for (alert, after_handshake, want) in [
            (A::CertificateRequired, false, Reason::NoClientCert),
            (A::BadCertificate, false, Reason::NoClientCert),
            (A::UnknownCA, true, Reason::UnknownCa),
            (A::AccessDenied, true, Reason::PolicyDenied),
        ] {
            assert_eq!(alert_reason(alert, after_handshake).0, want, "{alert:?}");
        }
        assert_eq!(
            alert_reason(AlertDescription::BadCertificate, true),
            (Reason::Other, true)
        );
        assert_eq!(alert_name(AlertDescription::UnknownCA), "unknown_ca");
    }

    /// A client certificate the proxy's verifier refuses for its RSA size is weak_key here
    /// too: 1024 bits, and 2052 (not whole bytes), which the probe used to pass.
    #[test]
    fn rsa_sizes_judged_as_the_verifier_judges_them() {
        let dir = std::env::temp_dir().join(format!("mutual-probe-rsa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (bits, weak) in [(1024, true), (2052, true), (2048, false)] {
            let (key, der) = (
                dir.join(format!("{bits}.key")),
                dir.join(format!("{bits}.der")),
            );
            let made = std::process::Command::new("openssl")
                .args(["req", "-x509", "-newkey", &format!("rsa:{bits}"), "-nodes"])
                .args([
                    "-subj",
                    "/CN=client",
                    "-days",
                    "1",
                    "-outform",
                    "DER",
                    "-keyout",
                ])
                .arg(&key)
                .arg("-out")
                .arg(&der)
                .stderr(std::process::Stdio::null())
                .status();
            if !made.is_ok_and(|s| s.success()) {
                eprintln!("openssl cannot make an RSA-{bits} certificate; skipping");
                continue;
            }
            let leaf = crate::certinfo::summarize(&std::fs::read(&der).unwrap()).unwrap();
            assert_eq!(leaf.rsa_bits, Some(bits));
            let found = check_client_chain(&[leaf], &[]);
            assert_eq!(
                found.iter().any(|f| f.reason == Reason::WeakKey),
                weak,
                "RSA-{bits}: {:?}",
                found.iter().map(|f| &f.detail).collect::<Vec<_>>()
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
