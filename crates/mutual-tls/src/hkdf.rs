//! TLS 1.3's key schedule on a keyed HMAC (issue 20).
//!
//! rustls's aws-lc-rs provider runs HKDF through `aws_lc_rs::hkdf`, whose `Salt::extract` keeps
//! the salt and the secret and runs the whole HKDF (extract, then expand, each keying a fresh
//! HMAC) again for every label expanded from that secret. A handshake expands a dozen labels, so
//! a `perf` profile of a resumed handshake showed SHA-256 compressions at 8% of the proxy's CPU.
//! rustls's own [`HkdfUsingHmac`] (what its ring provider and its HPKE use) extracts once and
//! keys the HMAC once per secret; each label then costs the message and the outer hash. The
//! HMAC is aws-lc-rs's (`hmac::Key` keeps the keyed state; every tag starts from a copy of it),
//! so no primitive is written here: only the suites are the provider's with this HKDF.
//!
//! Outputs are the same bytes (RFC 5869 either way): the tests compare both with each other
//! and with RFC 5869's vectors, and every handshake test of the project runs through it.

use std::sync::LazyLock;

use aws_lc_rs::hmac;
use rustls::crypto::hmac::{Hmac, Key, Tag};
use rustls::crypto::tls13::HkdfUsingHmac;
use rustls::{SupportedCipherSuite, Tls13CipherSuite};

/// aws-lc-rs's HMAC behind rustls's [`Hmac`] trait.
struct AwsLcHmac(hmac::Algorithm);

struct AwsLcHmacKey(hmac::Key);

impl Hmac for AwsLcHmac {
    fn with_key(&self, key: &[u8]) -> Box<dyn Key> {
        Box::new(AwsLcHmacKey(hmac::Key::new(self.0, key)))
    }

    fn hash_output_len(&self) -> usize {
        self.0.digest_algorithm().output_len
    }
}

impl Key for AwsLcHmacKey {
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(first);
        for m in middle {
            ctx.update(m);
        }
        ctx.update(last);
        Tag::new(ctx.sign().as_ref())
    }

    fn tag_len(&self) -> usize {
        self.0.algorithm().digest_algorithm().output_len
    }
}

static HMAC_SHA256: AwsLcHmac = AwsLcHmac(hmac::HMAC_SHA256);
static HMAC_SHA384: AwsLcHmac = AwsLcHmac(hmac::HMAC_SHA384);
static HKDF_SHA256: HkdfUsingHmac<'static> = HkdfUsingHmac(&HMAC_SHA256);
static HKDF_SHA384: HkdfUsingHmac<'static> = HkdfUsingHmac(&HMAC_SHA384);

/// The provider's TLS 1.3 suite with the HKDF above; anything else unchanged.
fn keyed(base: SupportedCipherSuite) -> Tls13CipherSuite {
    let SupportedCipherSuite::Tls13(s) = base else {
        unreachable!("only TLS 1.3 suites are rebuilt");
    };
    let hkdf_provider: &'static dyn rustls::crypto::tls13::Hkdf =
        match s.common.hash_provider.output_len() {
            48 => &HKDF_SHA384,
            _ => &HKDF_SHA256,
        };
    Tls13CipherSuite {
        common: rustls::CipherSuiteCommon {
            suite: s.common.suite,
            hash_provider: s.common.hash_provider,
            confidentiality_limit: s.common.confidentiality_limit,
        },
        hkdf_provider,
        aead_alg: s.aead_alg,
        quic: s.quic,
    }
}

static AES_128: LazyLock<Tls13CipherSuite> =
    LazyLock::new(|| keyed(rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256));
static AES_256: LazyLock<Tls13CipherSuite> =
    LazyLock::new(|| keyed(rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384));
static CHACHA: LazyLock<Tls13CipherSuite> = LazyLock::new(|| {
    keyed(rustls::crypto::aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256)
});

/// TLS 1.3's three suites in mutual's order (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305),
/// each aws-lc-rs's with the keyed-HMAC HKDF.
pub(crate) fn tls13_suites() -> [SupportedCipherSuite; 3] {
    [
        SupportedCipherSuite::Tls13(&AES_128),
        SupportedCipherSuite::Tls13(&AES_256),
        SupportedCipherSuite::Tls13(&CHACHA),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rustls::crypto::tls13::Hkdf;

    fn provider_hkdf(base: SupportedCipherSuite) -> &'static dyn Hkdf {
        match base {
            SupportedCipherSuite::Tls13(s) => s.hkdf_provider,
            _ => unreachable!(),
        }
    }

    /// RFC 5869 test case 1 (SHA-256): extract, then expand to 42 bytes.
    #[test]
    fn rfc5869_case_1() {
        let ikm = hex::decode("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b").unwrap();
        let salt = hex::decode("000102030405060708090a0b0c").unwrap();
        let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let okm = hex::decode(
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        )
        .unwrap();
        let e = HKDF_SHA256.extract_from_secret(Some(&salt), &ikm);
        let mut out = [0u8; 42];
        e.expand_slice(&[&info], &mut out).unwrap();
        assert_eq!(out.to_vec(), okm);
    }

    /// The same bytes as the provider's HKDF, for every suite, every entry point rustls uses,
    /// several secrets, salts, infos and lengths.
    #[test]
    fn same_output_as_the_providers_hkdf() {
        use rustls::crypto::aws_lc_rs::cipher_suite as cs;
        let pairs = [
            (cs::TLS13_AES_128_GCM_SHA256, tls13_suites()[0]),
            (cs::TLS13_AES_256_GCM_SHA384, tls13_suites()[1]),
            (cs::TLS13_CHACHA20_POLY1305_SHA256, tls13_suites()[2]),
        ];
        for (theirs, ours) in pairs {
            assert_eq!(theirs.suite(), ours.suite());
            let (a, b) = (provider_hkdf(theirs), provider_hkdf(ours));
            for secret_len in [0usize, 1, 32, 48, 100] {
                let secret: Vec<u8> = (0..secret_len).map(|i| i as u8 ^ 0x5a).collect();
                for salt in [None, Some(&b"salt"[..]), Some(&[7u8; 80][..])] {
                    let (ea, eb) = (
                        a.extract_from_secret(salt, &secret),
                        b.extract_from_secret(salt, &secret),
                    );
                    let (za, zb) = (a.extract_from_zero_ikm(salt), b.extract_from_zero_ikm(salt));
                    for info in [&[][..], &[&b"tls13 "[..], b"c hs traffic"][..]] {
                        assert_eq!(
                            ea.expand_block(info).as_ref(),
                            eb.expand_block(info).as_ref()
                        );
                        assert_eq!(
                            za.expand_block(info).as_ref(),
                            zb.expand_block(info).as_ref()
                        );
                        for len in [1usize, 12, 16, 32, 33, 100] {
                            let (mut oa, mut ob) = (vec![0u8; len], vec![0u8; len]);
                            ea.expand_slice(info, &mut oa).unwrap();
                            eb.expand_slice(info, &mut ob).unwrap();
                            assert_eq!(oa, ob, "{:?} len {len}", ours.suite());
                        }
                    }
                    let okm = ea.expand_block(&[b"x"]);
                    let (fa, fb) = (a.expander_for_okm(&okm), b.expander_for_okm(&okm));
                    assert_eq!(
                        fa.expand_block(&[b"y"]).as_ref(),
                        fb.expand_block(&[b"y"]).as_ref()
                    );
                    assert_eq!(
                        a.hmac_sign(&okm, b"transcript").as_ref(),
                        b.hmac_sign(&okm, b"transcript").as_ref()
                    );
                }
            }
        }
    }
}
