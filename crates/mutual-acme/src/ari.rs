//! ACME Renewal Information (RFC 9773): the CA tells each client when to renew.
//!
//! Why: a client that renews at a fixed fraction of the lifetime cannot learn that its
//! certificate was revoked or that the CA rotated its intermediate; with ARI the CA moves the
//! suggested window into the past and the client renews at its next check. step-ca and Vault do
//! not offer it. Everything here is pure (certID parsing and the window), the lookup is in
//! `lib.rs`.

use crate::jws::{b64, unb64};
use crate::problem::AcmeError;

/// A parsed certID: `base64url(AKI keyIdentifier) "." base64url(serial DER content)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertId {
    pub aki: Vec<u8>,
    /// The serial as the inventory writes it: lowercase hex, no leading zero bytes.
    pub serial: String,
}

impl CertId {
    pub fn parse(s: &str) -> Result<CertId, AcmeError> {
        let (a, sn) = s.split_once('.').ok_or_else(|| {
            AcmeError::malformed(format!(
                "{s:?} is not a certID (base64url(AKI) \".\" base64url(serial))"
            ))
        })?;
        let aki = unb64(a, "the certID's key identifier")?;
        let serial = unb64(sn, "the certID's serial")?;
        if aki.is_empty() || serial.is_empty() || serial.len() > 21 {
            return Err(AcmeError::malformed(
                "the certID's key identifier or serial is empty or too long",
            ));
        }
        Ok(CertId {
            aki,
            serial: serial_hex(&serial),
        })
    }

    /// The certID of a certificate (for tests and for `replaces` checks).
    pub fn of(aki: &[u8], raw_serial: &[u8]) -> String {
        format!("{}.{}", b64(aki), b64(raw_serial))
    }
}

/// The inventory's form of a serial: hex without leading zero bytes.
pub fn serial_hex(raw: &[u8]) -> String {
    let s = hex::encode(raw);
    let t = s.trim_start_matches("00");
    if t.is_empty() {
        "0".into()
    } else {
        t.to_string()
    }
}

/// Why the window is where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The normal window: from two-thirds to five-sixths of the lifetime (DESIGN.md: leaves are
    /// renewed at two-thirds of their life; the end leaves a sixth for retries).
    Schedule,
    /// The certificate is revoked: renew now.
    Revoked,
    /// The certificate was signed by an intermediate the CA no longer issues with: renew now.
    Rotated,
}

/// The suggested renewal window (Unix seconds) and the Retry-After (seconds) for a certificate
/// valid from `not_before` to `not_after`, asked at `now`.
pub fn window(not_before: i64, not_after: i64, why: Why, now: i64) -> (i64, i64, i64) {
    let life = (not_after - not_before).max(1);
    // Clients poll again after Retry-After: six hours, shorter for short-lived certificates
    // (a tenth of the lifetime, at least a minute) so that a revocation is seen in time.
    let retry = (life / 10).clamp(60, 6 * 3600);
    match why {
        Why::Schedule => (not_before + life * 2 / 3, not_before + life * 5 / 6, retry),
        // A window wholly in the past: RFC 9773 §4.2 says a client renews at once then.
        Why::Revoked | Why::Rotated => (now - 2 * 3600, now - 3600, retry),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn cert_id_round_trip_and_refusals() {
        // RFC 9773 §4.1's example: AKI 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4,
        // serial 00:87:65:43:21.
        let id = CertId::parse("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE").unwrap();
        assert_eq!(id.serial, "87654321");
        assert_eq!(id.aki.len(), 20);
        assert_eq!(
            CertId::of(&id.aki, &[0, 0x87, 0x65, 0x43, 0x21]),
            "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
        );
        for bad in ["nodot", ".AIdl", "aYhb.", "a+b.AIdl", "aYhb.AIdl.x"] {
            assert_eq!(CertId::parse(bad).unwrap_err().kind, "malformed", "{bad}");
        }
    }

    #[test]
    fn window_is_two_thirds_to_five_sixths_or_in_the_past() {
        let (s, e, r) = window(0, 86_400, Why::Schedule, 10);
        assert_eq!((s, e, r), (57_600, 72_000, 8_640));
        let (s, e, _) = window(0, 86_400, Why::Revoked, 1_000_000);
        assert!(s < e && e < 1_000_000);
        let (_, _, r) = window(0, 90 * 86_400, Why::Rotated, 5);
        assert_eq!(r, 6 * 3600);
    }
}
