//! What a listener reads in a client's ClientHello before it picks the rustls configuration for
//! the connection ([`crate::ServerMaterial::config_for`]): whether the client resumes a session
//! (then it gets one new ticket, not two) and whether its first choice of cipher suite is
//! ChaCha20-Poly1305 (then it gets it: a client that puts ChaCha20 first has no AES hardware, as
//! Go's and BoringSSL's servers read it, and AES in software is slow and, in some libraries,
//! not constant-time). The proxy reads the record ahead of rustls (mutual-proxy's
//! `HandshakeIo::read_client_hello`), so this costs no system call.

/// TLS extension type of `pre_shared_key` (RFC 8446 section 4.2.11).
const EXT_PRE_SHARED_KEY: u16 = 41;
/// TLS_CHACHA20_POLY1305_SHA256 and TLS 1.2's ECDHE_RSA / ECDHE_ECDSA with ChaCha20-Poly1305.
const CHACHA_SUITES: [u16; 3] = [0x1303, 0xcca8, 0xcca9];

/// See the module doc. `Default` (neither) is what a listener assumes of a ClientHello it could
/// not read to the end of its extensions (split over records, truncated, not one at all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HelloFacts {
    /// The ClientHello carries `pre_shared_key`: the client offers a session to resume.
    pub offers_session: bool,
    /// Its first cipher suite (GREASE values skipped) is a ChaCha20-Poly1305 one.
    pub prefers_chacha: bool,
}

impl HelloFacts {
    /// Reads the first TLS record a client sent (header included).
    pub fn of_record(record: &[u8]) -> HelloFacts {
        read(record).unwrap_or_default()
    }
}

fn read(record: &[u8]) -> Option<HelloFacts> {
    fn skip(b: &[u8], n: usize) -> Option<&[u8]> {
        b.get(n..)
    }
    fn vec8(b: &[u8]) -> Option<&[u8]> {
        skip(b, 1 + usize::from(*b.first()?))
    }
    fn vec16(b: &[u8]) -> Option<(&[u8], &[u8])> {
        let len = usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?]));
        Some((b.get(2..2 + len)?, b.get(2 + len..)?))
    }
    // A handshake record holding a ClientHello (type 1).
    if *record.first()? != 22 {
        return None;
    }
    let body = record.get(5..)?;
    if *body.first()? != 1 {
        return None;
    }
    // Message type, length (3), legacy_version (2), random (32), then the variable fields.
    let rest = vec8(skip(body, 4 + 2 + 32)?)?;
    let (suites, rest) = vec16(rest)?;
    let first = suites
        .chunks_exact(2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .find(|s| s & 0x0f0f != 0x0a0a)?;
    let rest = vec8(rest)?;
    let (mut exts, _) = vec16(rest)?;
    let mut facts = HelloFacts {
        offers_session: false,
        prefers_chacha: CHACHA_SUITES.contains(&first),
    };
    while exts.len() >= 4 {
        if u16::from_be_bytes([exts[0], exts[1]]) == EXT_PRE_SHARED_KEY {
            facts.offers_session = true;
        }
        exts = vec16(&exts[2..])?.1;
    }
    Some(facts)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rustls::crypto::aws_lc_rs::{cipher_suite as cs, default_provider};
    use std::sync::Arc;

    /// The first record a rustls client with these suites (in this order) sends.
    fn hello_of(suites: Vec<rustls::SupportedCipherSuite>) -> Vec<u8> {
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: suites,
            ..default_provider()
        };
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
        let mut out = Vec::new();
        c.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_the_clients_first_suite() {
        let aes_first = hello_of(vec![
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ]);
        assert_eq!(HelloFacts::of_record(&aes_first), HelloFacts::default());
        let chacha_first = hello_of(vec![
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_128_GCM_SHA256,
        ]);
        let facts = HelloFacts::of_record(&chacha_first);
        assert!(facts.prefers_chacha && !facts.offers_session, "{facts:?}");
    }

    /// A GREASE value (RFC 8701) in front is skipped; anything cut short reads as nothing.
    #[test]
    fn skips_grease_and_reads_nothing_from_a_cut_record() {
        let mut hello = hello_of(vec![
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_128_GCM_SHA256,
        ]);
        // Record (5) + handshake header (4) + version (2) + random (32), the session id's length
        // byte and the session id, then the suites' length: put 0x?A?A in front of the list.
        let at = 5 + 4 + 2 + 32;
        let suites_at = at + 1 + usize::from(hello[at]);
        let len = u16::from_be_bytes([hello[suites_at], hello[suites_at + 1]]) + 2;
        hello[suites_at..suites_at + 2].copy_from_slice(&len.to_be_bytes());
        hello.splice(suites_at + 2..suites_at + 2, [0x3a, 0x3a]);
        // The record and handshake lengths grow by two as well.
        let rec = u16::from_be_bytes([hello[3], hello[4]]) + 2;
        hello[3..5].copy_from_slice(&rec.to_be_bytes());
        let hs = u32::from_be_bytes([0, hello[6], hello[7], hello[8]]) + 2;
        hello[6..9].copy_from_slice(&hs.to_be_bytes()[1..]);
        assert!(HelloFacts::of_record(&hello).prefers_chacha);
        for cut in [0, 4, 5, 50, hello.len() - 3] {
            assert_eq!(
                HelloFacts::of_record(&hello[..cut]),
                HelloFacts::default(),
                "{cut}"
            );
        }
        assert_eq!(
            HelloFacts::of_record(&[21, 3, 3, 0, 2, 2, 40]),
            HelloFacts::default()
        );
    }
}
