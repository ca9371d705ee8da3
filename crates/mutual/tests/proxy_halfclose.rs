//! Half-close through the real proxies (issue 6): a client that finishes its request and shuts
//! its write side still receives the whole response, and a backend that finishes its response
//! first still receives the whole upload. Large transfers (checked byte for byte against a
//! generated pattern) with tiny and odd-sized writes at both ends, through `mutual serve` (a rustls
//! client sending TLS close_notify, and one that only shuts its TCP write side) and through
//! `mutual connect` -> `mutual serve` (a plain TCP client).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_common;
use proxy_common::*;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

/// Bytes each way in the big cases (64 MiB: large enough that each side's buffers and the
/// kernel's fill up many times over while the other side has already half-closed).
const BIG: usize = 64 << 20;
/// Bytes each way in the cases that vary the order of the half-closes (kept smaller so the file
/// stays fast; the big cases above cover volume).
const MID: usize = 16 << 20;

/// A reproducible byte stream (xorshift), so the receiver checks every byte without keeping a copy.
struct Pattern(u64);

impl Pattern {
    fn new(seed: u64) -> Self {
        Pattern(seed | 1)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
}

/// Write sizes cycling through 1-byte, odd and large writes: the first 64 KiB go out in
/// 1..=17-byte pieces, then odd sizes up to 65,521 bytes.
fn write_pattern(w: &mut impl Write, seed: u64, len: usize) -> std::io::Result<()> {
    const SMALL: [usize; 6] = [1, 1, 3, 7, 13, 17];
    const LARGE: [usize; 5] = [1, 4093, 16_385, 65_521, 31];
    let mut p = Pattern::new(seed);
    let mut buf = vec![0u8; 65_521];
    let (mut sent, mut i) = (0, 0);
    while sent < len {
        let want = if sent < 64 << 10 {
            SMALL[i % SMALL.len()]
        } else {
            LARGE[i % LARGE.len()]
        };
        let n = want.min(len - sent);
        p.fill(&mut buf[..n]);
        w.write_all(&buf[..n])?;
        sent += n;
        i += 1;
    }
    w.flush()
}

/// Reads until EOF with odd-sized reads and checks every byte against the pattern. Returns the
/// count read and whether it all matched.
fn read_pattern(r: &mut impl Read, seed: u64) -> (usize, bool) {
    let mut p = Pattern::new(seed);
    let mut buf = vec![0u8; 40_009];
    let mut want = vec![0u8; 40_009];
    let (mut got, mut same, mut i) = (0usize, true, 0usize);
    loop {
        let cap = [1, 5, 40_009, 333][i % 4];
        i += 1;
        let n = match r.read(&mut buf[..cap]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("read failed after {got} bytes: {e}"),
        };
        p.fill(&mut want[..n]);
        same &= buf[..n] == want[..n];
        got += n;
    }
    (got, same)
}

/// What the backend does on each connection.
#[derive(Clone, Copy)]
enum Script {
    /// Read the request to EOF (the client's half-close), then answer `down` bytes, then close.
    SinkThenAnswer { down: usize },
    /// Send `down` bytes and shut the write side first, then read the upload to EOF.
    AnswerThenSink { down: usize },
}

/// A TCP backend running `script` on each connection; reports (bytes received, all matched).
fn backend(
    script: Script,
    up_seed: u64,
    down_seed: u64,
) -> (SocketAddr, mpsc::Receiver<(usize, bool)>) {
    let (tx, rx) = mpsc::channel();
    let addr = tcp_server(move |mut s| {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        match script {
            Script::SinkThenAnswer { down } => {
                let r = read_pattern(&mut s, up_seed);
                let _ = tx.send(r);
                write_pattern(&mut s, down_seed, down).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
            }
            Script::AnswerThenSink { down } => {
                write_pattern(&mut s, down_seed, down).unwrap();
                s.shutdown(Shutdown::Write).unwrap();
                let r = read_pattern(&mut s, up_seed);
                let _ = tx.send(r);
            }
        }
    });
    (addr, rx)
}

/// A TLS connection to `serve` as `fx.ok`, reads bounded by a minute.
fn tls_as_ok(fx: &Fixture, serve: &Proxy) -> TlsStream {
    let cfg = rustls_config(&fx.pki.root, Some(&fx.ok));
    let s = tls_connect(serve.addr(), &cfg).unwrap();
    s.sock
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    s
}

/// Checks a finished exchange both ways: the backend got `up` intact bytes (as it reported on
/// `rx`), the client read `down` intact bytes (`client`, as the read_*pattern helpers return).
fn assert_both_ways(
    what: &str,
    rx: &mpsc::Receiver<(usize, bool)>,
    up: usize,
    client: (usize, bool),
    down: usize,
) {
    let (bgot, bsame) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(bgot, up, "{what}: backend received {bgot} of {up} bytes");
    assert!(bsame, "{what}: upload corrupted");
    let (got, same) = client;
    assert_eq!(
        got, down,
        "{what}: client received {got} of {down} bytes after its half-close"
    );
    assert!(same, "{what}: response corrupted");
}

/// How the TLS client ends its upload.
#[derive(Clone, Copy, Debug)]
enum ClientEnd {
    /// TLS close_notify (the honest TLS half-close), TCP stays open both ways.
    CloseNotify,
    /// Only `shutdown(SHUT_WR)` on the TCP socket, no close_notify (what many clients do).
    TcpShutdown,
}

fn tls_half_close(s: &mut TlsStream, how: ClientEnd) {
    match how {
        ClientEnd::CloseNotify => {
            s.conn.send_close_notify();
            while s.conn.wants_write() {
                s.conn.write_tls(&mut s.sock).unwrap();
            }
        }
        ClientEnd::TcpShutdown => s.sock.shutdown(Shutdown::Write).unwrap(),
    }
}

/// Reads the TLS response to its end; a proxy that closes without close_notify is a failure
/// here (the response would be indistinguishable from a truncated one).
fn read_tls_pattern(s: &mut TlsStream, seed: u64) -> (usize, bool) {
    read_pattern(s, seed)
}

fn serve_for(be: SocketAddr) -> (Fixture, Proxy) {
    let fx = fixture();
    let serve = start_serve(&fx, &be.to_string(), &[]);
    (fx, serve)
}

/// Client uploads `up` bytes, half-closes, then must get all `down` bytes the backend sends only
/// after seeing that EOF.
fn client_first_through_serve(how: ClientEnd, up: usize, down: usize) {
    let (be, rx) = backend(Script::SinkThenAnswer { down }, 11, 22);
    let (fx, serve) = serve_for(be);
    let mut s = tls_as_ok(&fx, &serve);
    write_pattern(&mut s, 11, up).unwrap();
    tls_half_close(&mut s, how);
    let client = read_tls_pattern(&mut s, 22);
    assert_both_ways(&format!("{how:?}"), &rx, up, client, down);
    let line = serve.wait_only_line();
    assert_eq!(line["result"], "allowed", "{line}");
    assert_eq!(line["bytes_in"].as_u64(), Some(up as u64), "{line}");
    assert_eq!(line["bytes_out"].as_u64(), Some(down as u64), "{line}");
}

#[test]
fn serve_client_close_notify_then_reads_whole_response() {
    client_first_through_serve(ClientEnd::CloseNotify, BIG, BIG);
}

#[test]
fn serve_client_tcp_shutdown_then_reads_whole_response() {
    client_first_through_serve(ClientEnd::TcpShutdown, 3 << 20, BIG / 4);
}

/// The backend answers and half-closes first; the client reads the whole answer (ending in
/// close_notify), then uploads and half-closes, and the backend still gets every byte.
#[test]
fn serve_backend_half_closes_first_client_still_uploads() {
    let (be, rx) = backend(Script::AnswerThenSink { down: MID }, 33, 44);
    let (fx, serve) = serve_for(be);
    let mut s = tls_as_ok(&fx, &serve);
    let (got, same) = read_tls_pattern(&mut s, 44);
    assert_eq!(got, MID, "client received {got} of {MID} bytes");
    assert!(same, "response corrupted");
    write_pattern(&mut s, 33, MID).unwrap();
    tls_half_close(&mut s, ClientEnd::CloseNotify);
    let (bgot, bsame) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(
        bgot, MID,
        "backend received {bgot} of {MID} bytes after its own half-close"
    );
    assert!(bsame, "upload corrupted");
    let line = serve.wait_only_line();
    assert_eq!(line["bytes_in"].as_u64(), Some(MID as u64), "{line}");
    assert_eq!(line["bytes_out"].as_u64(), Some(MID as u64), "{line}");
}

/// `mutual serve` in front of a backend running `script`, and `mutual connect` in front of it.
/// The fixture is returned so its files outlive the proxies (they watch them for reloads).
fn connect_chain(
    script: Script,
    up_seed: u64,
    down_seed: u64,
) -> (Fixture, Proxy, Proxy, mpsc::Receiver<(usize, bool)>) {
    let (be, rx) = backend(script, up_seed, down_seed);
    let (fx, serve) = serve_for(be);
    let args = tls_args(&fx.ok.cert, &fx.ok.key, &fx.pki.root, &[]);
    let conn = spawn_proxy(
        "connect",
        "--remote",
        &format!("localhost:{}", serve.port),
        &args,
    );
    (fx, serve, conn, rx)
}

/// Plain TCP client -> `mutual connect` -> mTLS -> `mutual serve` -> backend: the client's
/// `shutdown(SHUT_WR)` travels as close_notify and arrives as EOF, and the answer comes back whole.
#[test]
fn connect_to_serve_client_half_close_both_directions() {
    let (_fx, serve, conn, rx) = connect_chain(Script::SinkThenAnswer { down: BIG }, 55, 66);
    let mut s = TcpStream::connect(("127.0.0.1", conn.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write_pattern(&mut s, 55, BIG).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let client = read_pattern(&mut s, 66);
    assert_both_ways("through connect", &rx, BIG, client, BIG);
    let cl = conn.wait_only_line();
    assert_eq!(cl["bytes_in"].as_u64(), Some(BIG as u64), "{cl}");
    assert_eq!(cl["bytes_out"].as_u64(), Some(BIG as u64), "{cl}");
    let sl = serve.wait_only_line();
    assert_eq!(sl["result"], "allowed", "{sl}");
}

/// The backend finishes first; the half-close travels back through both proxies and the client,
/// having read everything, still uploads to the backend.
#[test]
fn connect_to_serve_backend_half_closes_first() {
    let (_fx, _serve, conn, rx) = connect_chain(Script::AnswerThenSink { down: BIG / 4 }, 77, 88);
    let mut s = TcpStream::connect(("127.0.0.1", conn.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let (got, same) = read_pattern(&mut s, 88);
    assert_eq!(got, BIG / 4, "client received {got} of {}", BIG / 4);
    assert!(same, "response corrupted");
    write_pattern(&mut s, 77, 5 << 20).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let (bgot, bsame) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(
        bgot,
        5 << 20,
        "backend received {bgot} after its own half-close"
    );
    assert!(bsame, "upload corrupted");
    // And the client sees the end of the connection once both halves are done.
    let mut rest = [0u8; 1];
    assert_eq!(s.read(&mut rest).unwrap(), 0);
    let cl = conn.wait_only_line();
    assert_eq!(cl["result"], "allowed", "{cl}");
}
