//! Refusing a peer so that it learns why. Two things stand between the alert `serve` writes and
//! the client reading it:
//!
//! - Closing a socket whose receive buffer still holds bytes (the client's Finished, its first
//!   request: they were in flight while we decided) makes the kernel answer with a RST, and a
//!   RST discards whatever the client had not read yet, the alert included. [`linger`] shuts the
//!   write side down (FIN after the alert) and reads what is still arriving, briefly and up to a
//!   byte cap, before the socket is dropped.
//! - rustls answers a missing client certificate with `certificate_required`, an alert TLS 1.3
//!   defined; a TLS 1.2 client has no such alert and reports an unknown one.
//!   [`HandshakeIo`] rewrites that one plaintext alert record into `handshake_failure`, what
//!   TLS 1.2 servers send (RFC 5246 section 7.4.6). In TLS 1.3 the alert is encrypted and
//!   never seen here, so only the TLS 1.2 case changes.
//!
//! [`HandshakeIo`] also remembers the first byte the client sent: a record type of 21 (alert)
//! before any ClientHello means the client never tried a handshake, which no cipher choice of
//! ours could have caused.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// How long [`linger`] keeps reading after our FIN, and how much it reads at most.
const LINGER_TIME: Duration = Duration::from_millis(300);
const LINGER_BYTES: usize = 64 * 1024;

/// TLS record content type of an alert.
pub const CONTENT_ALERT: u8 = 21;
/// TLS record content type of a handshake message.
const CONTENT_HANDSHAKE: u8 = 22;
const ALERT_CERTIFICATE_REQUIRED: u8 = 116;
const ALERT_HANDSHAKE_FAILURE: u8 = 40;
/// The version our ServerHello names for TLS 1.3 (supported_versions).
const TLS13: u16 = 0x0304;

/// A socket that can be told more bytes follow (Linux `MSG_MORE`): what it is given waits in
/// the kernel and leaves with the next write, in the same segment. Anything else writes as
/// usual (the default).
pub trait SendMore: AsyncWrite + Unpin {
    fn poll_write_more(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, bufs)
    }
}

#[cfg(target_os = "linux")]
impl SendMore for tokio::net::TcpStream {
    fn poll_write_more(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let tcp: &tokio::net::TcpStream = self.get_mut();
        loop {
            std::task::ready!(tcp.poll_write_ready(cx))?;
            let sent = tcp.try_io(tokio::io::Interest::WRITABLE, || {
                socket2::SockRef::from(tcp).send_vectored_with_flags(bufs, libc::MSG_MORE)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
impl SendMore for tokio::net::TcpStream {}

impl SendMore for tokio::io::DuplexStream {}

/// Shuts the write side down and drains the read side (bounded) so that what we wrote last
/// (an alert, a close_notify) reaches the peer instead of being destroyed by a RST.
pub async fn linger<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) {
    let _ = tokio::time::timeout(LINGER_TIME, io.shutdown()).await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        while total < LINGER_BYTES {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

/// Walks the TLS records we write (records may be split across writes): a record's header
/// byte by byte, its body a run at a time, so a handshake flight of several KiB (certificates,
/// session tickets) costs a few steps per record, not one per byte (issue 20).
#[derive(Clone, Copy, Debug, Default)]
struct RecordWalker {
    header: [u8; 5],
    have: usize,
    /// Bytes of the current record's body still to come.
    left: usize,
    /// The current record is a plaintext alert (type 21, two-byte body).
    plain_alert: bool,
    /// The current record is a plaintext handshake record (type 22): kept for [`Negotiated`].
    handshake: bool,
    /// Position within the current record's body.
    pos: usize,
}

impl RecordWalker {
    /// Advances over `buf`: see [`Walked`]. Appends the plaintext handshake records to `keep`
    /// (up to [`SENT_CAP`] bytes in all).
    fn advance(&mut self, buf: &[u8], mut keep: Option<&mut Vec<u8>>) -> Walked {
        let mut walked = Walked::default();
        let mut i = 0;
        while i < buf.len() {
            if self.left == 0 {
                self.header[self.have] = buf[i];
                self.have += 1;
                i += 1;
                if self.have == self.header.len() {
                    self.have = 0;
                    self.left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                    // Encrypted alerts carry a tag and are longer than two bytes.
                    self.plain_alert = self.header[0] == CONTENT_ALERT && self.left == 2;
                    self.handshake = self.header[0] == CONTENT_HANDSHAKE;
                    walked.handshake |= self.handshake;
                    self.pos = 0;
                    if self.handshake {
                        if let Some(k) = keep.as_deref_mut() {
                            capped(k, &self.header);
                        }
                    }
                }
                continue;
            }
            let run = self.left.min(buf.len() - i);
            if self.plain_alert && self.pos <= 1 && self.pos + run > 1 {
                let at = i + 1 - self.pos;
                if buf[at] == ALERT_CERTIFICATE_REQUIRED {
                    walked.rewrite.push(at);
                }
            }
            walked.handshake |= self.handshake;
            if self.handshake {
                if let Some(k) = keep.as_deref_mut() {
                    capped(k, &buf[i..i + run]);
                }
            }
            self.pos += run;
            self.left -= run;
            i += run;
        }
        walked
    }
}

/// What [`RecordWalker::advance`] saw in the bytes it walked.
#[derive(Debug, Default)]
struct Walked {
    /// Offsets of the bytes to rewrite: the description byte of a plaintext
    /// `certificate_required` alert, rewritten to `handshake_failure`.
    rewrite: Vec<usize>,
    /// Some of the bytes belong to a plaintext handshake record (a ServerHello, TLS 1.2's
    /// flights).
    handshake: bool,
}

/// Appends `bytes` to `to`, up to [`SENT_CAP`] bytes in all.
fn capped(to: &mut Vec<u8>, bytes: &[u8]) {
    let room = SENT_CAP.saturating_sub(to.len());
    to.extend_from_slice(&bytes[..room.min(bytes.len())]);
}

/// The socket under a server-side handshake: see the module doc. After the handshake it only
/// passes bytes through ([`HandshakeIo::handshake_done`]).
#[derive(Debug)]
pub struct HandshakeIo<S> {
    inner: S,
    first_byte: Option<u8>,
    out: RecordWalker,
    done: bool,
    /// The plaintext handshake records we sent (ServerHello and, in TLS 1.2, the rest of our
    /// first flight; not the encrypted records), capped: a handshake refused inside the
    /// verifier leaves no rustls state to ask, and the audit line still names the version,
    /// cipher and group.
    sent: Vec<u8>,
    /// Our ServerHello said TLS 1.3.
    tls13: bool,
    /// The last write not held back ([`SendMore`]) went out whole.
    flight_out: bool,
    /// The client sent bytes since then.
    heard: bool,
    /// Bytes read ahead of rustls ([`HandshakeIo::read_client_hello`]), served to it first.
    ahead: Vec<u8>,
    ahead_pos: usize,
    /// What the ClientHello read ahead says.
    hello: mutual_tls::HelloFacts,
}
/// The longest first record read ahead: a record body is at most 2^14 bytes (plus expansion).
const AHEAD_MAX: usize = 5 + (1 << 14) + 256;

/// Enough for a ServerHello and a TLS 1.2 ServerKeyExchange (certificates may be cut off).
const SENT_CAP: usize = 16 * 1024;

/// What our ServerHello (and TLS 1.2 ServerKeyExchange) said: version, cipher suite, group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Negotiated {
    pub version: u16,
    pub cipher: u16,
    pub group: Option<u16>,
}

impl<S> HandshakeIo<S> {
    pub fn new(inner: S) -> HandshakeIo<S> {
        HandshakeIo {
            inner,
            first_byte: None,
            out: RecordWalker::default(),
            done: false,
            sent: Vec::new(),
            tls13: false,
            flight_out: false,
            heard: false,
            ahead: Vec::new(),
            ahead_pos: 0,
            hello: mutual_tls::HelloFacts::default(),
        }
    }

    /// What the ClientHello read by [`HandshakeIo::read_client_hello`] says (a session to
    /// resume, ChaCha20 first), for `ServerMaterial::config_for`.
    pub fn hello(&self) -> mutual_tls::HelloFacts {
        self.hello
    }

    /// Parses the handshake records we wrote (see [`Negotiated`]); None before a ServerHello.
    pub fn negotiated(&self) -> Option<Negotiated> {
        // Handshake messages from plaintext handshake records (type 22), concatenated.
        let mut hs = Vec::new();
        let mut rest = self.sent.as_slice();
        while rest.len() >= 5 {
            let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            let body = rest.get(5..5 + len).unwrap_or(&rest[5..]);
            if rest[0] == 22 {
                hs.extend_from_slice(body);
            }
            rest = rest.get(5 + len..).unwrap_or_default();
        }
        let mut found: Option<Negotiated> = None;
        let mut msgs = hs.as_slice();
        while msgs.len() >= 4 {
            let len = usize::from(msgs[1]) << 16 | usize::from(msgs[2]) << 8 | usize::from(msgs[3]);
            let Some(body) = msgs.get(4..4 + len) else {
                break;
            };
            match msgs[0] {
                2 => found = parse_server_hello(body).or(found),
                // TLS 1.2 ServerKeyExchange, ECDHE: curve_type 3 (named_curve), then the group.
                12 => {
                    if let (Some(n), [3, a, b, ..]) = (found.as_mut(), body) {
                        n.group = Some(u16::from_be_bytes([*a, *b]));
                    }
                }
                _ => {}
            }
            msgs = &msgs[4 + len..];
        }
        found
    }

    /// The first byte the peer sent (its first record's content type), if any arrived.
    pub fn first_byte(&self) -> Option<u8> {
        self.first_byte
    }

    /// Stops looking at the bytes: application data passes untouched. The copy of what we
    /// sent (ServerHello, our encrypted flight, the session tickets: several KiB) is only read
    /// for a refused handshake, so it is freed here rather than held for the connection's life.
    pub fn handshake_done(&mut self) {
        self.done = true;
        self.sent = Vec::new();
        self.ahead = Vec::new();
        self.ahead_pos = 0;
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> HandshakeIo<S> {
    /// Reads the client's first record (its ClientHello) before rustls is given the connection,
    /// so that the configuration can depend on it ([`HandshakeIo::hello`]); rustls
    /// then reads those bytes from here. The same reads the handshake would make, no peek.
    /// Stops early at the end of the stream or at a first record that is no handshake record
    /// (rustls reports either as before).
    pub async fn read_client_hello(&mut self) -> io::Result<()> {
        let mut ahead = Vec::with_capacity(2048);
        loop {
            let need = match ahead.as_slice() {
                [CONTENT_HANDSHAKE, _, _, a, b, ..] => {
                    5 + usize::from(u16::from_be_bytes([*a, *b]))
                }
                [_, _, _, _, _, ..] => break,
                _ => 5,
            };
            if ahead.len() >= need.min(AHEAD_MAX) {
                break;
            }
            ahead.reserve(need.min(AHEAD_MAX) - ahead.len());
            if self.inner.read_buf(&mut ahead).await? == 0 {
                break;
            }
        }
        self.first_byte = ahead.first().copied();
        self.hello = mutual_tls::HelloFacts::of_record(&ahead);
        self.ahead = ahead;
        self.ahead_pos = 0;
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HandshakeIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.ahead_pos < me.ahead.len() {
            let n = buf.remaining().min(me.ahead.len() - me.ahead_pos);
            buf.put_slice(&me.ahead[me.ahead_pos..me.ahead_pos + n]);
            me.ahead_pos += n;
            if me.ahead_pos == me.ahead.len() {
                me.ahead = Vec::new();
                me.ahead_pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut me.inner).poll_read(cx, buf);
        if me.first_byte.is_none() {
            me.first_byte = buf.filled().get(before).copied();
        }
        if me.flight_out && buf.filled().len() > before {
            me.heard = true;
        }
        r
    }
}

impl<S: SendMore> HandshakeIo<S> {
    /// A write before [`HandshakeIo::handshake_done`]: walked (rewritten when it must be),
    /// remembered ([`Negotiated`]), and held back when it is TLS 1.3's session tickets.
    ///
    /// In TLS 1.3 the server writes nothing between its flight and the client's Finished but
    /// alerts, and after the Finished only its session tickets (or an alert). So a write that
    /// comes once our whole flight went out and the client answered, and holds no plaintext
    /// handshake record, is the tickets: it is sent with `MSG_MORE` ([`SendMore`]) and leaves
    /// with the first response instead of in a segment of its own, which saves a segment, a
    /// wake-up of the client and, on loopback, the kernel's delivery of it (issue 20). A
    /// refusal's alert held this way leaves with the FIN [`linger`] sends; any segment from the
    /// client also lets held bytes go (Linux pushes pending data when it processes an
    /// incoming segment, TCP_NODELAY being set).
    fn poll_handshake_write(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut dry = self.out;
        let mut walked = Walked::default();
        let mut base = 0;
        for b in bufs {
            let w = dry.advance(b, None);
            walked
                .rewrite
                .extend(w.rewrite.into_iter().map(|at| base + at));
            walked.handshake |= w.handshake;
            base += b.len();
        }
        let several = bufs.iter().filter(|b| !b.is_empty()).count() > 1;
        let held = self.tls13 && self.flight_out && self.heard && !walked.handshake;
        let r = if !walked.rewrite.is_empty() || (several && !self.inner.is_write_vectored()) {
            // A rewrite, or a socket that takes one buffer per call: joined, so the bytes go
            // out in one call.
            let mut joined = Vec::with_capacity(total);
            for b in bufs {
                joined.extend_from_slice(b);
            }
            for at in walked.rewrite {
                joined[at] = ALERT_HANDSHAKE_FAILURE;
            }
            Pin::new(&mut self.inner).poll_write(cx, &joined)
        } else if held {
            Pin::new(&mut self.inner).poll_write_more(cx, bufs)
        } else {
            Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
        };
        if let Poll::Ready(Ok(n)) = &r {
            // The walker advances over what the socket took; the rest is offered again.
            let mut left = *n;
            for b in bufs {
                let take = left.min(b.len());
                self.out.advance(&b[..take], Some(&mut self.sent));
                left -= take;
            }
            if !held {
                self.flight_out = *n == total;
                self.heard = false;
                if walked.handshake {
                    self.tls13 = self.negotiated().is_some_and(|n| n.version == TLS13);
                }
            }
        }
        r
    }
}

impl<S: SendMore> AsyncWrite for HandshakeIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if me.done {
            return Pin::new(&mut me.inner).poll_write(cx, buf);
        }
        me.poll_handshake_write(cx, &[io::IoSlice::new(buf)])
    }

    /// rustls hands its pending records over as several buffers (ServerHello, the
    /// ChangeCipherSpec, the encrypted flight): written in one system call and one TCP segment
    /// instead of one each, which the default (first buffer only) would do (issue 20). They go to
    /// the socket as they are unless a byte must be rewritten (or the socket writes one buffer
    /// per call): then they are joined.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if me.done {
            return Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
        }
        me.poll_handshake_write(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        // Before `handshake_done` a socket without vectored writes gets the buffers joined
        // (see above); after it they go to the socket as they are.
        !self.done || self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// ServerHello body: legacy_version, random, session id, cipher suite, compression,
/// extensions (supported_versions 43 names TLS 1.3; key_share 51 starts with the group).
fn parse_server_hello(b: &[u8]) -> Option<Negotiated> {
    let legacy = u16::from_be_bytes([*b.first()?, *b.get(1)?]);
    let sid_len = usize::from(*b.get(34)?);
    let mut at = 35 + sid_len;
    let cipher = u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]);
    at += 3;
    let mut n = Negotiated {
        version: legacy,
        cipher,
        group: None,
    };
    let ext_len = usize::from(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]));
    let mut ext = b.get(at + 2..at + 2 + ext_len)?;
    while ext.len() >= 4 {
        let ty = u16::from_be_bytes([ext[0], ext[1]]);
        let len = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        let data = ext.get(4..4 + len)?;
        match (ty, data) {
            (43, [a, b2, ..]) => n.version = u16::from_be_bytes([*a, *b2]),
            (51, [a, b2, ..]) => n.group = Some(u16::from_be_bytes([*a, *b2])),
            _ => {}
        }
        ext = &ext[4 + len..];
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn walk(chunks: &[&[u8]]) -> Vec<u8> {
        let mut w = RecordWalker::default();
        let mut out = Vec::new();
        for c in chunks {
            let mut c = c.to_vec();
            for at in w.advance(&c, None).rewrite {
                c[at] = ALERT_HANDSHAKE_FAILURE;
            }
            out.extend_from_slice(&c);
        }
        out
    }

    /// The ClientHello is read ahead whole (here in 7-byte pieces), handed to rustls unchanged,
    /// and says whether it offers a session: a real rustls client's first hello does not; its
    /// hello after a handshake with tickets does; a truncated or non-handshake record does not.
    #[tokio::test]
    async fn the_client_hello_read_ahead_tells_a_resuming_client() {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der.clone()).unwrap();
        let client = std::sync::Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let server = std::sync::Arc::new(
            rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(
                    vec![der],
                    PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
                )
                .unwrap(),
        );
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let hello_of = |c: &mut rustls::ClientConnection| {
            let mut hello = Vec::new();
            c.write_tls(&mut hello).unwrap();
            hello
        };
        // A full handshake in memory, so that the client holds tickets.
        let mut c = rustls::ClientConnection::new(client.clone(), name.clone()).unwrap();
        let mut s = rustls::ServerConnection::new(server).unwrap();
        let first = hello_of(&mut c);
        s.read_tls(&mut first.as_slice()).unwrap();
        s.process_new_packets().unwrap();
        while c.is_handshaking() || s.wants_write() {
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets().unwrap();
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            if !buf.is_empty() {
                s.read_tls(&mut buf.as_slice()).unwrap();
                s.process_new_packets().unwrap();
            }
        }
        let again = hello_of(&mut rustls::ClientConnection::new(client, name).unwrap());
        // (bytes, offers a session, a whole first record)
        let cases: [(&[u8], bool, bool); 4] = [
            (&first, false, true),
            (&again, true, true),
            (&again[..again.len() - 40], false, false),
            (&[21, 3, 3, 0, 2, 2, 40], false, true),
        ];
        for (hello, offers, whole) in cases {
            let (ours, mut theirs) = tokio::io::duplex(1 << 16);
            let mut io = HandshakeIo::new(ours);
            let mut sent = hello.to_vec();
            sent.extend_from_slice(b"after");
            let writer = tokio::spawn(async move {
                for piece in sent.chunks(7) {
                    theirs.write_all(piece).await.unwrap();
                    tokio::task::yield_now().await;
                }
                theirs
            });
            if !whole {
                // Truncated: the read ahead waits for the rest, which never comes.
                let _theirs = writer.await.unwrap();
                let r =
                    tokio::time::timeout(Duration::from_millis(50), io.read_client_hello()).await;
                assert!(r.is_err(), "waits for the whole record");
                continue;
            }
            io.read_client_hello().await.unwrap();
            assert_eq!(io.hello().offers_session, offers);
            assert_eq!(io.first_byte(), Some(hello[0]));
            drop(writer.await.unwrap());
            let mut read = Vec::new();
            io.read_to_end(&mut read).await.unwrap();
            assert_eq!(&read[..hello.len()], hello, "rustls reads the same bytes");
            assert_eq!(&read[hello.len()..], b"after");
        }
        let cut = mutual_tls::HelloFacts::of_record(&again[..again.len() - 40]);
        assert_eq!(cut, mutual_tls::HelloFacts::default());
    }

    /// The copy of our handshake bytes serves a refused handshake only: an established
    /// connection holds none of it (issue 20: memory per idle connection).
    #[tokio::test]
    async fn the_handshake_copy_is_freed_once_the_handshake_is_done() {
        use tokio::io::AsyncWriteExt;
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let mut io = HandshakeIo::new(ours);
        let hello = [22u8, 3, 3, 0, 3, 21, 2, 116];
        let flight = vec![23u8; 4000];
        io.write_all(&hello).await.unwrap();
        io.write_all(&flight).await.unwrap();
        // Only the plaintext handshake record is kept, not the encrypted flight.
        assert_eq!(io.sent, hello);
        io.handshake_done();
        assert_eq!((io.sent.len(), io.sent.capacity()), (0, 0));
        io.write_all(b"application data").await.unwrap();
        assert_eq!(
            io.sent.capacity(),
            0,
            "nothing is copied after the handshake"
        );
        drop(io);
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut theirs, &mut got)
            .await
            .unwrap();
        assert_eq!(got.len(), hello.len() + flight.len() + 16);
    }

    /// rustls' pending records, handed over as several buffers, go out in one write (one
    /// segment), rewritten and recorded in order (issue 20: three sendto per first flight).
    #[tokio::test]
    async fn a_vectored_handshake_write_is_one_write_in_order() {
        use std::io::IoSlice;
        use tokio::io::AsyncWriteExt;
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let mut io = HandshakeIo::new(ours);
        assert!(io.is_write_vectored());
        let hello = [22u8, 3, 3, 0, 3, 21, 2, 116];
        let alert = [21u8, 3, 3, 0, 2, 2, 116];
        let bufs = [
            IoSlice::new(&hello),
            IoSlice::new(&[]),
            IoSlice::new(&alert[..3]),
            IoSlice::new(&alert[3..]),
        ];
        let n = io.write_vectored(&bufs).await.unwrap();
        assert_eq!(n, hello.len() + alert.len(), "everything in one call");
        assert_eq!(
            io.sent, hello,
            "the handshake record is kept, the alert is not"
        );
        io.handshake_done();
        let n = io
            .write_vectored(&[IoSlice::new(b"ab"), IoSlice::new(b"cd")])
            .await
            .unwrap();
        assert!(n >= 2, "{n}");
        io.write_all(&b"abcd"[n..]).await.unwrap();
        drop(io);
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut theirs, &mut got)
            .await
            .unwrap();
        let mut want = hello.to_vec();
        want.extend_from_slice(&[21, 3, 3, 0, 2, 2, 40]);
        want.extend_from_slice(b"abcd");
        assert_eq!(got, want);
    }

    /// On a socket with vectored writes (TCP), a flight with nothing to rewrite goes out as
    /// rustls handed it over (no joined copy), the walker keeps up with it, and an alert after
    /// it is still rewritten.
    #[tokio::test]
    async fn a_tcp_vectored_flight_passes_as_it_is_and_the_walker_keeps_up() {
        use std::io::IoSlice;
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tcp, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (mut theirs, _) = accepted.unwrap();
        let mut io = HandshakeIo::new(tcp.unwrap());
        assert!(io.get_mut().is_write_vectored());
        let hello = [22u8, 3, 3, 0, 3, 21, 2, 116];
        let enc = [23u8, 3, 3, 0, 4, 9, 9, 9, 9];
        let bufs = [
            IoSlice::new(&hello[..6]),
            IoSlice::new(&hello[6..]),
            IoSlice::new(&enc),
        ];
        let all = [hello.as_slice(), enc.as_slice()].concat();
        let n = io.write_vectored(&bufs).await.unwrap();
        io.write_all(&all[n..]).await.unwrap();
        io.write_all(&[21u8, 3, 3, 0, 2, 2, 116]).await.unwrap();
        assert_eq!(
            io.sent, hello,
            "only the plaintext handshake record is kept"
        );
        drop(io);
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut theirs, &mut got)
            .await
            .unwrap();
        let mut want = all;
        want.extend_from_slice(&[21, 3, 3, 0, 2, 2, 40]);
        assert_eq!(got, want);
    }

    #[test]
    fn rewrites_only_a_plaintext_certificate_required_alert() {
        let hello = [22u8, 3, 3, 0, 3, 21, 2, 116];
        // A handshake record whose body happens to hold alert-like bytes is left alone.
        assert_eq!(walk(&[&hello]), hello);
        let alert = [21u8, 3, 3, 0, 2, 2, 116];
        assert_eq!(
            walk(&[&hello, &alert[..3], &alert[3..]]).get(8..),
            Some(&[21u8, 3, 3, 0, 2, 2, 40][..])
        );
        // Split anywhere, one byte per write included, the same rewrite.
        for cut in 1..alert.len() {
            assert_eq!(
                walk(&[&hello, &alert[..cut], &alert[cut..]]).get(8..),
                Some(&[21u8, 3, 3, 0, 2, 2, 40][..]),
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = alert.chunks(1).collect();
        assert_eq!(walk(&bytes), [21u8, 3, 3, 0, 2, 2, 40]);
        // An encrypted alert (longer body) is left alone.
        let enc = [21u8, 3, 3, 0, 3, 2, 116, 0];
        assert_eq!(walk(&[&enc]), enc);
        // Other alerts are left alone.
        let unknown_ca = [21u8, 3, 3, 0, 2, 2, 48];
        assert_eq!(walk(&[&unknown_ca]), unknown_ca);
    }
}
