//! What a finished handshake established, in the words the audit log and metrics use: the
//! peer's identity and the negotiated version, suite and group.

use mutual_policy::{Identity, PolicyError};

/// Negotiated parameters, as strings for the audit log's `tls` object.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TlsFacts {
    /// `TLSv1_3` / `TLSv1_2`.
    pub version: String,
    /// e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: String,
    /// e.g. `X25519MLKEM768`.
    pub group: String,
    /// The session was resumed (no certificate verification ran in this handshake).
    pub resumed: bool,
}

impl TlsFacts {
    pub fn of(conn: &rustls::CommonState) -> TlsFacts {
        TlsFacts {
            version: conn
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
            cipher: conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default(),
            group: conn
                .negotiated_key_exchange_group()
                .map(|g| format!("{:?}", g.name()))
                .unwrap_or_default(),
            resumed: matches!(conn.handshake_kind(), Some(rustls::HandshakeKind::Resumed)),
        }
    }
}

/// The verified peer's identity after a successful handshake (server or client side; with
/// tokio-rustls: `stream.get_ref().1`). `Ok(None)` when the peer presented no certificate.
pub fn peer_identity(conn: &rustls::CommonState) -> Result<Option<Identity>, PolicyError> {
    match conn.peer_certificates().and_then(|c| c.first()) {
        Some(leaf) => Identity::from_der(leaf.as_ref()).map(Some),
        None => Ok(None),
    }
}

/// Names for the PROXY protocol's SSL sub-TLVs (and logs) from a leaf certificate's DER:
/// algorithms in the words haproxy/OpenSSL use (`ecdsa-with-SHA256`, `EC256`, `RSA2048`).
pub fn cert_algorithms(leaf: &[u8]) -> (String, String) {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Ok((_, c)) = X509Certificate::from_der(leaf) else {
        return (String::new(), String::new());
    };
    let sig = match c.signature_algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256".to_string(),
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384".to_string(),
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512".to_string(),
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption".to_string(),
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption".to_string(),
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption".to_string(),
        "1.2.840.113549.1.1.10" => "rsassaPss".to_string(),
        "1.3.101.112" => "ED25519".to_string(),
        other => other.to_string(),
    };
    let key = match c.public_key().parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(r)) => format!("RSA{}", r.key_size()),
        Ok(x509_parser::public_key::PublicKey::EC(p)) => format!("EC{}", p.key_size()),
        _ => match c.public_key().algorithm.algorithm.to_id_string().as_str() {
            "1.3.101.112" => "ED25519".to_string(),
            other => other.to_string(),
        },
    };
    (sig, key)
}
