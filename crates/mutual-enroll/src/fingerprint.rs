//! The root fingerprint an operator pins on first contact (`--root-sha256`): SHA-256 of the root
//! certificate's DER, as printed by `mutual ca init` or `openssl x509 -fingerprint -sha256`.
//! Parsed once into a type so a malformed pin fails at the command line, not mid-enrollment.

use std::fmt;
use std::str::FromStr;

use crate::EnrollError;

/// A SHA-256 certificate fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a certificate's DER bytes.
    pub fn of(der: &[u8]) -> Fingerprint {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Fingerprint(out)
    }

    /// Whether `der` is the pinned certificate. Fingerprints are public, so a plain comparison
    /// is fine.
    pub fn matches(&self, der: &[u8]) -> bool {
        Fingerprint::of(der) == *self
    }
}

impl FromStr for Fingerprint {
    type Err = EnrollError;
    /// Accepts `ab12...`, `AB:12:...`, with or without the `sha256:`/`SHA256 Fingerprint=`
    /// prefixes people paste from `step` and `openssl`.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad = || EnrollError::BadFingerprint {
            input: input.to_string(),
        };
        let mut s = input.trim();
        for prefix in ["sha256 fingerprint=", "sha256:", "sha256="] {
            if s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
                s = &s[prefix.len()..];
            }
        }
        let hex_digits: String = s.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(hex_digits.to_ascii_lowercase()).map_err(|_| bad())?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Ok(Fingerprint(arr))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_any_case_with_or_without_colons() {
        let fp = Fingerprint::of(b"root");
        let plain = fp.to_string();
        let colons = plain
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap().to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        for s in [
            plain.clone(),
            colons.clone(),
            format!("sha256:{plain}"),
            format!("SHA256 Fingerprint={colons}"),
            format!("  {plain}\n"),
        ] {
            assert_eq!(s.parse::<Fingerprint>().unwrap(), fp, "{s}");
        }
        assert!(fp.matches(b"root"));
        assert!(!fp.matches(b"other"));
    }

    #[test]
    fn rejects_wrong_length_or_non_hex() {
        for s in [
            "",
            "abcd",
            &"g".repeat(64),
            &"a".repeat(66),
            &"a".repeat(62),
        ] {
            let e = s.parse::<Fingerprint>().unwrap_err();
            assert!(matches!(e, EnrollError::BadFingerprint { .. }), "{s}: {e}");
        }
    }
}
