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
const ALERT_CERTIFICATE_REQUIRED: u8 = 116;
const ALERT_HANDSHAKE_FAILURE: u8 = 40;

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

/// Walks the TLS records we write, one byte at a time (records may be split across writes).
#[derive(Clone, Copy, Debug, Default)]
struct RecordWalker {
    header: [u8; 5],
    have: usize,
    /// Bytes of the current record's body still to come.
    left: usize,
    /// The current record is a plaintext alert (type 21, two-byte body).
    plain_alert: bool,
    /// Position within the current record's body.
    pos: usize,
}

impl RecordWalker {
    /// Advances over `b`, rewriting it when it is the description byte of a plaintext
    /// `certificate_required` alert.
    fn step(&mut self, b: &mut u8) {
        if self.left == 0 {
            self.header[self.have] = *b;
            self.have += 1;
            if self.have == self.header.len() {
                self.have = 0;
                self.left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                // Encrypted alerts carry a tag and are longer than two bytes.
                self.plain_alert = self.header[0] == CONTENT_ALERT && self.left == 2;
                self.pos = 0;
            }
            return;
        }
        if self.plain_alert && self.pos == 1 && *b == ALERT_CERTIFICATE_REQUIRED {
            *b = ALERT_HANDSHAKE_FAILURE;
        }
        self.pos += 1;
        self.left -= 1;
    }
}

/// The socket under a server-side handshake: see the module doc. After the handshake it only
/// passes bytes through ([`HandshakeIo::handshake_done`]).
#[derive(Debug)]
pub struct HandshakeIo<S> {
    inner: S,
    first_byte: Option<u8>,
    out: RecordWalker,
    done: bool,
    /// The plaintext handshake bytes we sent (ServerHello and, in TLS 1.2, the rest of our
    /// first flight), capped: a handshake refused inside the verifier leaves no rustls state to
    /// ask, and the audit line still names the version, cipher and group.
    sent: Vec<u8>,
}

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
        }
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
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HandshakeIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut me.inner).poll_read(cx, buf);
        if me.first_byte.is_none() {
            me.first_byte = buf.filled().get(before).copied();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HandshakeIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if me.done {
            return Pin::new(&mut me.inner).poll_write(cx, buf);
        }
        let mut out = buf.to_vec();
        let mut walker = me.out;
        for b in &mut out {
            walker.step(b);
        }
        let r = Pin::new(&mut me.inner).poll_write(cx, &out);
        if let Poll::Ready(Ok(n)) = &r {
            // Only what was written counts; the rest is offered again by the caller.
            let mut scratch = buf.get(..*n).unwrap_or(buf).to_vec();
            for b in &mut scratch {
                me.out.step(b);
            }
            let room = SENT_CAP.saturating_sub(me.sent.len());
            me.sent
                .extend_from_slice(scratch.get(..room.min(scratch.len())).unwrap_or_default());
        }
        r
    }

    /// rustls hands its pending records over as several buffers (ServerHello, the
    /// ChangeCipherSpec, the encrypted flight): written in one system call and one TCP segment
    /// instead of one each, which the default (first buffer only) would do (issue 20). During
    /// the handshake the buffers are joined, so the record walker sees them in order.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if me.done {
            return Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
        }
        match bufs.iter().filter(|b| !b.is_empty()).count() {
            0 => Poll::Ready(Ok(0)),
            1 => {
                let one = bufs
                    .iter()
                    .find(|b| !b.is_empty())
                    .map_or(&[][..], |b| &b[..]);
                Pin::new(me).poll_write(cx, one)
            }
            _ => {
                let mut joined = Vec::with_capacity(bufs.iter().map(|b| b.len()).sum());
                for b in bufs {
                    joined.extend_from_slice(b);
                }
                Pin::new(me).poll_write(cx, &joined)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        // Before `handshake_done` vectored writes are joined here (see above); after it they
        // go to the socket as they are.
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
            for &b in *c {
                let mut b = b;
                w.step(&mut b);
                out.push(b);
            }
        }
        out
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
        assert_eq!(io.sent.len(), hello.len() + flight.len());
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
        assert_eq!(io.sent.len(), n);
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
        // An encrypted alert (longer body) is left alone.
        let enc = [21u8, 3, 3, 0, 3, 2, 116, 0];
        assert_eq!(walk(&[&enc]), enc);
        // Other alerts are left alone.
        let unknown_ca = [21u8, 3, 3, 0, 2, 2, 48];
        assert_eq!(walk(&[&unknown_ca]), unknown_ca);
    }
}
