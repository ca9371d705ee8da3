//! Makes the agent's socket speak to the gRPC clients that exist. gRPC C-core (Python, Ruby,
//! PHP) and grpc-java send the socket path as the HTTP/2 `:authority` of a request on a Unix
//! socket (`/run/mutual/agent.sock`); the Rust HTTP/2 server (h2, under tonic) resets any
//! stream whose authority is not an RFC 3986 authority, so py-spiffe and java-spiffe would fail
//! with `RST_STREAM PROTOCOL_ERROR` (hyperium/h2 PR 487, still open). go-spiffe sends
//! `localhost`.
//!
//! [`AuthorityFix`] sits on the bytes from the client: it passes every frame through untouched
//! except HEADERS (with their CONTINUATIONs), whose header block it decodes (HPACK, the client's
//! dynamic table kept in step), and when `:authority` is not a valid authority re-encodes the
//! block with `:authority: localhost`. Every block goes out re-encoded as literals that touch
//! no dynamic table (the server's stays empty), so no block can refer to an entry the server
//! never saw. [`FixedIo`] wraps the accepted socket with it
//! and carries the peer credentials to the service.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The smallest SETTINGS_MAX_FRAME_SIZE a server may have: re-encoded blocks are cut to it.
const MAX_FRAME: usize = 16_384;

/// The frame filter (client-to-server direction).
pub struct AuthorityFix {
    input: Vec<u8>,
    output: Vec<u8>,
    preface_seen: bool,
    /// A header block being collected: its stream, END_STREAM, fragments, and the raw frames
    /// (passed on unchanged if the block cannot be decoded: the server then judges it).
    block: Option<Block>,
    decoder: hpack::Decoder<'static>,
}

struct Block {
    stream: u32,
    end_stream: bool,
    fragments: Vec<u8>,
    raw: Vec<u8>,
}

impl Default for AuthorityFix {
    fn default() -> Self {
        AuthorityFix {
            input: Vec::new(),
            output: Vec::new(),
            preface_seen: false,
            block: None,
            decoder: hpack::Decoder::new(),
        }
    }
}

fn put_int(out: &mut Vec<u8>, first: u8, prefix_bits: u32, mut v: usize) {
    let max = (1usize << prefix_bits) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literals without indexing, new names, no Huffman (RFC 7541 6.2.2).
fn encode(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in headers {
        out.push(0x00);
        put_int(&mut out, 0, 7, n.len());
        out.extend_from_slice(n);
        put_int(&mut out, 0, 7, v.len());
        out.extend_from_slice(v);
    }
    out
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

impl AuthorityFix {
    /// Takes bytes read from the client.
    pub fn feed(&mut self, data: &[u8]) {
        self.input.extend_from_slice(data);
        loop {
            if !self.preface_seen {
                if self.input.len() < PREFACE.len() {
                    return;
                }
                self.output.extend(self.input.drain(..PREFACE.len()));
                self.preface_seen = true;
                continue;
            }
            if self.input.len() < 9 {
                return;
            }
            let len = u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]]) as usize;
            if self.input.len() < 9 + len {
                return;
            }
            let frame: Vec<u8> = self.input.drain(..9 + len).collect();
            self.frame(frame);
        }
    }

    /// Bytes ready for the server.
    pub fn take(&mut self, max: usize) -> Vec<u8> {
        let n = max.min(self.output.len());
        self.output.drain(..n).collect()
    }

    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    fn frame(&mut self, frame: Vec<u8>) {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        match (kind, self.block.as_mut()) {
            (HEADERS, None) => {
                let mut p = &frame[9..];
                if flags & PADDED != 0 {
                    let Some((&pad, rest)) = p.split_first() else {
                        return self.output.extend(frame);
                    };
                    if rest.len() < pad as usize {
                        return self.output.extend(frame);
                    }
                    p = &rest[..rest.len() - pad as usize];
                }
                if flags & PRIORITY != 0 {
                    if p.len() < 5 {
                        return self.output.extend(frame);
                    }
                    p = &p[5..];
                }
                let block = Block {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    fragments: p.to_vec(),
                    raw: frame.clone(),
                };
                self.block = Some(block);
                if flags & END_HEADERS != 0 {
                    self.finish();
                }
            }
            (CONTINUATION, Some(b)) if b.stream == stream => {
                b.fragments.extend_from_slice(&frame[9..]);
                b.raw.extend_from_slice(&frame);
                if flags & END_HEADERS != 0 {
                    self.finish();
                }
            }
            // Anything else passes; a broken sequence is the server's to refuse.
            _ => {
                if let Some(b) = self.block.take() {
                    self.output.extend(b.raw);
                }
                self.output.extend(frame);
            }
        }
    }

    fn finish(&mut self) {
        let Some(b) = self.block.take() else { return };
        let mut headers = match self.decoder.decode(&b.fragments) {
            Ok(h) => h,
            Err(_) => return self.output.extend(b.raw),
        };
        for (n, v) in &mut headers {
            if n.as_slice() == b":authority"
                && http::uri::Authority::try_from(v.as_slice()).is_err()
            {
                *v = b"localhost".to_vec();
            }
        }
        // Every block is re-encoded, changed or not: a raw block could refer to dynamic-table
        // entries of an earlier block that the server never saw as such.
        let block = encode(&headers);
        let chunks: Vec<&[u8]> = block.chunks(MAX_FRAME).collect();
        for (i, c) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let (kind, mut flags) = if i == 0 {
                (HEADERS, 0)
            } else {
                (CONTINUATION, 0)
            };
            if i == 0 && b.end_stream {
                flags |= END_STREAM;
            }
            if last {
                flags |= END_HEADERS;
            }
            frame_header(&mut self.output, c.len(), kind, flags, b.stream);
            self.output.extend_from_slice(c);
        }
    }
}

/// What the service learns about the peer of a connection: the kernel's credentials.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub cred: Option<tokio::net::unix::UCred>,
}

/// An accepted Unix connection, its client bytes through [`AuthorityFix`].
pub struct FixedIo {
    inner: UnixStream,
    fix: AuthorityFix,
}

impl FixedIo {
    pub fn new(inner: UnixStream) -> FixedIo {
        FixedIo {
            inner,
            fix: AuthorityFix::default(),
        }
    }
}

impl tonic::transport::server::Connected for FixedIo {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        PeerInfo {
            cred: self.inner.peer_cred().ok(),
        }
    }
}

impl AsyncRead for FixedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.fix.has_output() {
                let out = self.fix.take(buf.remaining());
                buf.put_slice(&out);
                return Poll::Ready(Ok(()));
            }
            let mut tmp = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut tmp);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    let filled = rb.filled().to_vec();
                    self.fix.feed(&filled);
                }
                other => return other,
            }
        }
    }
}

impl AsyncWrite for FixedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers_frame(block: &[u8], flags: u8, stream: u32) -> Vec<u8> {
        let mut f = Vec::new();
        frame_header(&mut f, block.len(), HEADERS, flags, stream);
        f.extend_from_slice(block);
        f
    }

    fn decode_all(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut d = hpack::Decoder::new();
        let mut at = PREFACE.len();
        let mut out = Vec::new();
        while at < bytes.len() {
            let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
            if bytes[at + 3] == HEADERS {
                out.push(d.decode(&bytes[at + 9..at + 9 + len]).unwrap());
            }
            at += 9 + len;
        }
        out
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost_and_the_rest_is_kept() {
        // Two requests from a client whose encoder indexes (the second refers to the first's
        // dynamic entries), fed one byte at a time, with a SETTINGS frame between them.
        let mut enc = hpack::Encoder::new();
        let h = |auth: &'static [u8]| -> Vec<(&'static [u8], &'static [u8])> {
            vec![
                (b":method", b"POST"),
                (b":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
                (b":authority", auth),
                (b"workload.spiffe.io", b"true"),
            ]
        };
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(
            &enc.encode(h(b"/run/agent.sock")),
            END_HEADERS,
            1,
        ));
        let settings = [0u8, 0, 0, 4, 0, 0, 0, 0, 0];
        input.extend_from_slice(&settings);
        input.extend(headers_frame(
            &enc.encode(h(b"localhost:1")),
            END_HEADERS | END_STREAM,
            3,
        ));
        let mut f = AuthorityFix::default();
        for b in &input {
            f.feed(std::slice::from_ref(b));
        }
        let out = f.take(usize::MAX);
        assert!(out.starts_with(PREFACE));
        let blocks = decode_all(&out);
        assert_eq!(blocks.len(), 2);
        let auth = |b: &Vec<(Vec<u8>, Vec<u8>)>| {
            b.iter()
                .find(|(n, _)| n == b":authority")
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(auth(&blocks[0]), b"localhost");
        assert_eq!(
            auth(&blocks[1]),
            b"localhost:1",
            "a valid authority is untouched"
        );
        assert!(blocks[0]
            .iter()
            .any(|(n, v)| n == b"workload.spiffe.io" && v == b"true"));
        // The SETTINGS frame passed through as it was.
        assert!(out.windows(settings.len()).any(|w| w == settings));
    }
}
