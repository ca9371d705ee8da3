//! The few DER structures a token key needs that the token does not hand out ready-made: the
//! SubjectPublicKeyInfo (tokens give the EC point or the RSA modulus and exponent) and the
//! ECDSA signature (tokens give r||s, X.509 and TLS want `SEQUENCE { r INTEGER, s INTEGER }`).

pub(crate) const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
pub(crate) const OID_P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
pub(crate) const OID_P384: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];
const OID_RSA: &[u8] = &[
    0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01,
];
const NULL: &[u8] = &[0x05, 0x00];

pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    // The length octets (short or long form) as the der crate writes them; the structures
    // here are a few hundred bytes, far below its 256 MiB limit.
    use ::der::Encode;
    let len = ::der::Length::try_from(content.len()).and_then(|l| l.to_der());
    out.extend(len.unwrap_or_default());
    out.extend_from_slice(content);
    out
}

/// An unsigned big-endian number as a DER INTEGER (minimal, positive).
pub(crate) fn uint(b: &[u8]) -> Vec<u8> {
    let b = match b.iter().position(|x| *x != 0) {
        Some(i) => &b[i..],
        None => &[0u8][..],
    };
    let mut c = Vec::with_capacity(b.len() + 1);
    if b[0] & 0x80 != 0 {
        c.push(0);
    }
    c.extend_from_slice(b);
    tlv(0x02, &c)
}

fn bit_string(b: &[u8]) -> Vec<u8> {
    let mut c = vec![0u8];
    c.extend_from_slice(b);
    tlv(0x03, &c)
}

/// `SEQUENCE { r, s }` from the r||s a token returns for CKM_ECDSA.
pub(crate) fn ecdsa_sig(raw: &[u8]) -> Option<Vec<u8>> {
    let half = raw.len() / 2;
    if half == 0 || half * 2 != raw.len() {
        return None;
    }
    let (r, s) = raw.split_at(half);
    let mut c = uint(r);
    c.extend(uint(s));
    Some(tlv(0x30, &c))
}

pub(crate) fn ec_spki(curve_oid: &[u8], point: &[u8]) -> Vec<u8> {
    let mut alg = OID_EC_PUBLIC_KEY.to_vec();
    alg.extend_from_slice(curve_oid);
    let mut c = tlv(0x30, &alg);
    c.extend(bit_string(point));
    tlv(0x30, &c)
}

/// PKCS#1 RSAPublicKey (what rcgen calls the raw public key of an RSA key).
pub(crate) fn rsa_public(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let mut c = uint(modulus);
    c.extend(uint(exponent));
    tlv(0x30, &c)
}

pub(crate) fn rsa_spki(rsa_public: &[u8]) -> Vec<u8> {
    let mut alg = OID_RSA.to_vec();
    alg.extend_from_slice(NULL);
    let mut c = tlv(0x30, &alg);
    c.extend(bit_string(rsa_public));
    tlv(0x30, &c)
}

/// The uncompressed point from CKA_EC_POINT, which modules give DER-wrapped (an OCTET STRING,
/// as the standard says) or, some of them, bare.
pub(crate) fn ec_point(attr: &[u8], point_len: usize) -> Option<Vec<u8>> {
    if attr.len() == point_len && attr.first() == Some(&0x04) {
        return Some(attr.to_vec());
    }
    if attr.len() == point_len + 2 && attr[0] == 0x04 && usize::from(attr[1]) == point_len {
        return Some(attr[2..].to_vec());
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn ecdsa_signature_is_der() {
        let mut raw = vec![0x80u8; 32];
        raw.extend([0u8; 31].iter().chain([5u8].iter()));
        let der = ecdsa_sig(&raw).unwrap();
        // r gets a leading zero (high bit set), s loses its leading zeros.
        assert_eq!(&der[..4], &[0x30, 0x26, 0x02, 0x21]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x05]);
        assert!(ecdsa_sig(&[1, 2, 3]).is_none());
    }

    #[test]
    fn spki_matches_aws_lc() {
        use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, doc.as_ref()).unwrap();
        let point = kp.public_key().as_ref().to_vec();
        let spki = ec_spki(OID_P256, &point);
        let wrapped = tlv(0x04, &point);
        assert_eq!(ec_point(&wrapped, 65).unwrap(), point);
        assert_eq!(ec_point(&point, 65).unwrap(), point);
        // The SPKI ends with the point and starts with the P-256 header everyone uses.
        assert_eq!(spki.len(), 91);
        assert!(spki.ends_with(&point));
    }
}
