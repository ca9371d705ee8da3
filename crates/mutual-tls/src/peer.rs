//! What a finished handshake established, in the words the audit log and metrics use: one
//! [`VerifiedPeer`] per connection (the chain the peer presented, its [`Identity`], the
//! negotiated [`TlsFacts`], and on request its names and key algorithms), built once right
//! after the handshake from one parse of the leaf, and passed to everything that asks about
//! the peer afterwards (authorization, live re-authorization, audit, HTTP headers, PROXY header).
//!
//! "One parse": the verifier parses the leaf once for its own checks (key strength, SAN
//! syntax, trust domain) and hands that parse to the listener's [`crate::PeerCheck`] as a
//! [`Leaf`]; the hook reads the [`LeafFacts`] the listener wants from it, and
//! [`VerifiedPeer::of`] takes them as known. Only a resumed session (no verifier ran) parses
//! the leaf here.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use mutual_policy::{CertNames, Identity, PolicyError};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Negotiated parameters, as the audit log's `tls` object spells them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct TlsFacts {
    /// `TLSv1.3` / `TLSv1.2`.
    pub version: String,
    /// IANA name, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: String,
    /// e.g. `X25519MLKEM768`, `X25519`, `secp256r1`.
    pub group: String,
    /// The session was resumed (no certificate verification ran in this handshake). Not in
    /// the audit line.
    #[serde(skip)]
    pub resumed: bool,
}

impl TlsFacts {
    /// Reads the negotiated parameters from a finished handshake (client or server side).
    pub fn of(conn: &rustls::CommonState) -> TlsFacts {
        TlsFacts {
            version: conn
                .protocol_version()
                .map(version_name)
                .unwrap_or_default(),
            cipher: conn
                .negotiated_cipher_suite()
                .map(|s| suite_name(s.suite()))
                .unwrap_or_default(),
            group: conn
                .negotiated_key_exchange_group()
                .map(|g| group_name(g.name()))
                .unwrap_or_default(),
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        }
    }

    /// From the wire codes of a ServerHello (a handshake refused before it finished).
    pub fn from_codes(version: u16, cipher: u16, group: Option<u16>) -> TlsFacts {
        TlsFacts {
            version: version_name(rustls::ProtocolVersion::from(version)),
            cipher: suite_name(rustls::CipherSuite::from(cipher)),
            group: group
                .map(|g| group_name(rustls::NamedGroup::from(g)))
                .unwrap_or_default(),
            resumed: false,
        }
    }
}

fn version_name(v: rustls::ProtocolVersion) -> String {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
        v => format!("{v:?}"),
    }
}

fn suite_name(s: rustls::CipherSuite) -> String {
    s.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{s:?}"))
}

fn group_name(g: rustls::NamedGroup) -> String {
    g.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("{g:?}"))
}

/// What a caller needs from the leaf beyond the identity (each costs work; ask only for it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// An owned copy of the presented chain ([`VerifiedPeer::chain`], for re-checks after the
    /// handshake); without it `chain` is empty.
    pub chain: bool,
    /// Subject DN and URI SANs ([`VerifiedPeer::names`], HTTP mode's identity headers).
    pub names: bool,
    /// Signature and key algorithm names ([`VerifiedPeer::algorithms`], the PROXY header).
    pub algorithms: bool,
}

/// The leaf as the verifier parsed it, for a [`crate::PeerCheck`].
#[derive(Clone, Copy)]
pub struct Leaf<'a> {
    /// Its DER (for the fingerprint).
    pub der: &'a [u8],
    /// x509-parser's reading (`None`: webpki accepted what x509-parser cannot read, so its
    /// names are unreadable and the connection ends as `malformed` after the handshake).
    pub cert: Option<&'a X509Certificate<'a>>,
}

impl Leaf<'_> {
    /// What `wanted` asks for, read from this parse (no second parse).
    pub fn facts(&self, wanted: Wanted) -> Result<LeafFacts, PolicyError> {
        let cert = self
            .cert
            .ok_or_else(|| PolicyError::Certificate("cannot parse certificate".into()))?;
        LeafFacts::read(cert, self.der, wanted)
    }
}

/// What a peer's leaf says: its identity and, as [`Wanted`], its names and algorithms.
#[derive(Clone, Debug)]
pub struct LeafFacts {
    pub id: Identity,
    pub names: Option<CertNames>,
    pub algorithms: Option<(String, String)>,
}

impl LeafFacts {
    /// Reads the facts `wanted` asks for from a parsed leaf (`der` is its encoding).
    pub fn read(
        cert: &X509Certificate<'_>,
        der: &[u8],
        wanted: Wanted,
    ) -> Result<LeafFacts, PolicyError> {
        Ok(LeafFacts {
            id: Identity::from_parsed(cert, der)?,
            names: if wanted.names {
                Some(mutual_policy::dn::names_of(cert)?)
            } else {
                None
            },
            algorithms: wanted.algorithms.then(|| algorithms_of(cert)),
        })
    }

    /// Whether these facts answer everything `wanted` asks.
    fn covers(&self, wanted: Wanted) -> bool {
        (!wanted.names || self.names.is_some()) && (!wanted.algorithms || self.algorithms.is_some())
    }
}

/// Why a finished handshake yields no [`VerifiedPeer`].
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer presented no certificate (`no_client_cert` on the server side).
    #[error("the peer presented no certificate")]
    NoCertificate,
    /// The leaf's names do not parse (`malformed`).
    #[error(transparent)]
    Malformed(#[from] PolicyError),
}

/// A peer after a successful handshake: everything later steps ask about it, read once.
#[derive(Clone, Debug)]
pub struct VerifiedPeer {
    /// The certificates the peer presented, its own first (what the verifier checked; live
    /// re-authorization checks it again), when [`Wanted::chain`] (else empty). Shared, never
    /// copied again.
    pub chain: Arc<[CertificateDer<'static>]>,
    pub id: Identity,
    pub tls: TlsFacts,
    /// Subject DN and URI SANs, when [`Wanted::names`].
    pub names: Option<CertNames>,
    /// `(signature, key)` algorithm names in the words haproxy/OpenSSL use
    /// (`ecdsa-with-SHA256`, `EC256`), when [`Wanted::algorithms`].
    pub algorithms: Option<(String, String)>,
}

impl VerifiedPeer {
    /// Reads the peer of a finished handshake (server or client side; with tokio-rustls:
    /// `stream.get_ref().1`). `known` is what the handshake's [`crate::PeerCheck`] already read
    /// from the verifier's parse of this leaf, if anything: when it covers `wanted` the leaf is
    /// not parsed at all, else it is parsed once here.
    pub fn of(
        conn: &rustls::CommonState,
        wanted: Wanted,
        known: Option<LeafFacts>,
    ) -> Result<VerifiedPeer, PeerError> {
        let presented = conn.peer_certificates().unwrap_or_default();
        let Some(leaf) = presented.first() else {
            return Err(PeerError::NoCertificate);
        };
        let tls = TlsFacts::of(conn);
        let facts = match known {
            Some(f) if f.covers(wanted) => f,
            _ => {
                let (rest, cert) = X509Certificate::from_der(leaf.as_ref()).map_err(|e| {
                    PolicyError::Certificate(format!("cannot parse certificate: {e}"))
                })?;
                if !rest.is_empty() {
                    return Err(PolicyError::Certificate(
                        "trailing data after the certificate".into(),
                    )
                    .into());
                }
                LeafFacts::read(&cert, leaf.as_ref(), wanted)?
            }
        };
        let LeafFacts {
            id,
            names,
            algorithms,
        } = facts;
        let chain: Arc<[CertificateDer<'static>]> = if wanted.chain {
            presented.iter().map(|c| c.clone().into_owned()).collect()
        } else {
            Arc::new([])
        };
        Ok(VerifiedPeer {
            chain,
            id,
            tls,
            names,
            algorithms,
        })
    }
}

/// At most this many distinct peers remembered by a [`PeerCache`]; past it the cache starts
/// over (the next connection of each peer reads its leaf again).
const MAX_PEERS: usize = 4096;

/// The [`VerifiedPeer`]s of one listener, shared between its connections that present the same
/// chain with the same negotiated parameters (issue 20). A `VerifiedPeer` is a pure function of
/// the presented chain, the [`TlsFacts`] and the [`Wanted`] set, none of which depends on time
/// or trust (those are checked per connection, before and after, as without the cache), so a
/// peer with many connections (a pool, a client resuming) holds one copy of its chain and
/// identity instead of one per connection, and a resumed session (no verifier ran, so nothing
/// parsed the leaf) does not parse it again. Bounded.
#[derive(Debug, Default)]
pub struct PeerCache {
    peers: std::sync::Mutex<HashMap<u64, Arc<VerifiedPeer>>>,
}

impl PeerCache {
    /// [`VerifiedPeer::of`], answered from the cache when this chain with these parameters was
    /// seen before (compared byte for byte, not only by hash). Only with [`Wanted::chain`]
    /// (the chain is what is compared); without it this is `VerifiedPeer::of`.
    pub fn peer_of(
        &self,
        conn: &rustls::CommonState,
        wanted: Wanted,
        known: Option<LeafFacts>,
    ) -> Result<Arc<VerifiedPeer>, PeerError> {
        let presented = conn.peer_certificates().unwrap_or_default();
        if !wanted.chain || presented.is_empty() {
            return VerifiedPeer::of(conn, wanted, known).map(Arc::new);
        }
        let tls = TlsFacts::of(conn);
        let key = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (wanted.names, wanted.algorithms, &tls).hash(&mut h);
            for c in presented {
                c.as_ref().hash(&mut h);
            }
            h.finish()
        };
        let same = |p: &VerifiedPeer| {
            p.tls == tls
                && p.chain.len() == presented.len()
                && p.chain
                    .iter()
                    .zip(presented)
                    .all(|(a, b)| a.as_ref() == b.as_ref())
        };
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = peers.get(&key).filter(|p| same(p)) {
            return Ok(Arc::clone(p));
        }
        drop(peers);
        let p = Arc::new(VerifiedPeer::of(conn, wanted, known)?);
        peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if peers.len() >= MAX_PEERS {
            peers.clear();
        }
        peers.insert(key, Arc::clone(&p));
        Ok(p)
    }

    /// How many peers are remembered (tests).
    pub fn len(&self) -> usize {
        self.peers.lock().map_or(0, |p| p.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Names for the PROXY protocol's SSL sub-TLVs (and logs): algorithms in the words
/// haproxy/OpenSSL use (`ecdsa-with-SHA256`, `EC256`, `RSA2048`).
fn algorithms_of(c: &X509Certificate<'_>) -> (String, String) {
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
        Ok(x509_parser::public_key::PublicKey::RSA(r)) => {
            format!("RSA{}", mutual_policy::facts::rsa_bits(r.modulus))
        }
        Ok(x509_parser::public_key::PublicKey::EC(p)) => format!("EC{}", p.key_size()),
        _ => match c.public_key().algorithm.algorithm.to_id_string().as_str() {
            "1.3.101.112" => "ED25519".to_string(),
            other => other.to_string(),
        },
    };
    (sig, key)
}
