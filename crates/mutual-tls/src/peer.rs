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
