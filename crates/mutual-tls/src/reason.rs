//! The one vocabulary of handshake and decision outcomes (DESIGN.md): metrics labels, audit log
//! lines, probe output and `cert verify` all speak these exact words, so an operator can grep one
//! word from a dashboard to a log line to a probe report.

use std::fmt;

/// Why a handshake or an authorization decision ended the way it did.
///
/// `#[non_exhaustive]`: a reason added later (ACME, EST, the Workload API) must not break a
/// `match` in another crate; such matches keep a `_` arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Reason {
    Ok,
    NoClientCert,
    UnknownCa,
    Expired,
    NotYetValid,
    Revoked,
    RevocationUnknown,
    BadSignature,
    WrongPurpose,
    NameMismatch,
    WeakKey,
    PolicyDenied,
    ProtocolVersion,
    NoSharedCipher,
    HandshakeTimeout,
    Malformed,
    BackendUnavailable,
    Other,
}

impl Reason {
    /// Every reason, in DESIGN.md order (used to pre-register metric series and in docs).
    pub const ALL: [Reason; 18] = [
        Reason::Ok,
        Reason::NoClientCert,
        Reason::UnknownCa,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::Revoked,
        Reason::RevocationUnknown,
        Reason::BadSignature,
        Reason::WrongPurpose,
        Reason::NameMismatch,
        Reason::WeakKey,
        Reason::PolicyDenied,
        Reason::ProtocolVersion,
        Reason::NoSharedCipher,
        Reason::HandshakeTimeout,
        Reason::Malformed,
        Reason::BackendUnavailable,
        Reason::Other,
    ];

    /// The label, exactly as DESIGN.md spells it.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::NoClientCert => "no_client_cert",
            Reason::UnknownCa => "unknown_ca",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Revoked => "revoked",
            Reason::RevocationUnknown => "revocation_unknown",
            Reason::BadSignature => "bad_signature",
            Reason::WrongPurpose => "wrong_purpose",
            Reason::NameMismatch => "name_mismatch",
            Reason::WeakKey => "weak_key",
            Reason::PolicyDenied => "policy_denied",
            Reason::ProtocolVersion => "protocol_version",
            Reason::NoSharedCipher => "no_shared_cipher",
            Reason::HandshakeTimeout => "handshake_timeout",
            Reason::Malformed => "malformed",
            Reason::BackendUnavailable => "backend_unavailable",
            Reason::Other => "other",
        }
    }

    /// Parses a label back (for tests, config and the probe's JSON).
    pub fn from_label(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.label() == s)
    }

    /// One sentence saying what happened.
    pub fn explanation(self) -> &'static str {
        match self {
            Reason::Ok => "The certificate was verified and the peer is allowed.",
            Reason::NoClientCert => "The client presented no certificate, but one is required.",
            Reason::UnknownCa => {
                "The certificate does not chain to any trusted root (unknown or missing issuer)."
            }
            Reason::Expired => "The certificate (or one in its chain) has expired.",
            Reason::NotYetValid => "The certificate (or one in its chain) is not valid yet.",
            Reason::Revoked => {
                "The certificate has been revoked by its issuer (listed in a CRL, or so answered by \
                 its OCSP responder)."
            }
            Reason::RevocationUnknown => {
                "The revocation status could not be determined (no CRL from this issuer, or no \
                 current OCSP answer)."
            }
            Reason::BadSignature => "A signature in the chain does not verify.",
            Reason::WrongPurpose => {
                "The certificate is not valid for this purpose (extended key usage)."
            }
            Reason::NameMismatch => {
                "The certificate does not carry the expected name or SPIFFE ID."
            }
            Reason::WeakKey => {
                "The certificate uses a weak key or a forbidden signature algorithm."
            }
            Reason::PolicyDenied => "The peer's identity is valid but no policy rule allows it.",
            Reason::ProtocolVersion => "The peers share no acceptable TLS protocol version.",
            Reason::NoSharedCipher => "The peers share no cipher suite or key-exchange group.",
            Reason::HandshakeTimeout => "The handshake did not complete in time.",
            Reason::Malformed => {
                "The peer sent data that is not valid TLS or a malformed certificate."
            }
            Reason::BackendUnavailable => "The backend could not be reached.",
            Reason::Other => "The handshake failed for another reason.",
        }
    }

    /// One line a person can act on.
    pub fn hint(self) -> &'static str {
        match self {
            Reason::Ok => "Nothing to do.",
            Reason::NoClientCert => {
                "Configure the client with a certificate and key (curl --cert/--key, mutual connect --cert/--key)."
            }
            Reason::UnknownCa => {
                "Issue the certificate from the CA the server trusts, or add its root to the trust bundle (--ca); include intermediates in the chain file."
            }
            Reason::Expired => "Renew the certificate (mutual cert issue / mutual renew) and check the clock.",
            Reason::NotYetValid => "Check the clock on both machines, or wait until notBefore.",
            Reason::Revoked => "Issue a new certificate; the revoked one cannot be used again.",
            Reason::RevocationUnknown => {
                "Provide a current CRL for the issuer (--crl), or refresh the CRL before its \
                 nextUpdate; with OCSP, make the responder in the certificate's AIA reachable (the \
                 log names it), or retry: a first-seen certificate is asked about at once."
            }
            Reason::BadSignature => {
                "The chain was altered or mixes certificates from different CAs; rebuild the chain file."
            }
            Reason::WrongPurpose => {
                "Issue a certificate with the right usage (mutual cert issue --client, --server or --both)."
            }
            Reason::NameMismatch => {
                "Connect with the name the certificate carries (--server-name), or reissue it with the right SAN."
            }
            Reason::WeakKey => "Reissue with ECDSA P-256/P-384, Ed25519 or RSA >= 2048 and SHA-256 or better.",
            Reason::PolicyDenied => {
                "Add an [[allow]] rule for this identity to the policy, if it should be allowed."
            }
            Reason::ProtocolVersion => "Enable TLS 1.3 on the peer, or allow TLS 1.2 here with --min-tls 1.2.",
            Reason::NoSharedCipher => "Enable a modern AEAD suite and X25519 or P-256 on the peer.",
            Reason::HandshakeTimeout => {
                "Check that the client speaks TLS to this port and that nothing stalls in between."
            }
            Reason::Malformed => "Make sure the client speaks TLS to this port (not plain HTTP).",
            Reason::BackendUnavailable => "Check that the backend is running and reachable from the proxy.",
            Reason::Other => "Look at the detail in the log line for more.",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.label()));
            assert_eq!(Reason::from_label(r.label()), Some(r));
            assert!(!r.explanation().is_empty() && !r.hint().is_empty());
        }
        assert_eq!(Reason::from_label("nope"), None);
    }
}
