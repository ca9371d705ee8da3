//! One TLS handshake against the endpoint, recorded rather than judged: the server's chain
//! (mutual-tls's `SignatureOnly` verifier accepts any certificate but still checks the handshake
//! signature, so a server cannot fake possession of its key), whether the server sent a CertificateRequest and
//! which CA names it advertised, and how the connection ended: in the handshake, after it (TLS 1.3
//! servers reject a client certificate only after the client's Finished), or not at all.
//!
//! Blocking sockets with explicit deadlines keep every step bounded: the probe must never hang.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mutual_tls::client::{ClientCert, ClientSpec, ServerCheck};
use mutual_tls::verifiers::SignatureOnly;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{
    AlertDescription, ClientConnection, NamedGroup, ProtocolVersion, SignatureScheme,
    SupportedProtocolVersion,
};

/// What the server revealed through the callbacks during one handshake.
#[derive(Debug, Default, Clone)]
pub struct Recorded {
    pub server_chain: Vec<CertificateDer<'static>>,
    pub cert_requested: bool,
    /// Advertised CA names, raw DER (SEQUENCE included).
    pub acceptable_cas: Vec<Vec<u8>>,
    pub cert_sent: bool,
    /// A client certificate was available but no signature scheme was shared with the server.
    pub no_common_sigscheme: bool,
}

type Shared = Arc<Mutex<Recorded>>;

fn lock(r: &Shared) -> std::sync::MutexGuard<'_, Recorded> {
    // A poisoned lock only means another callback panicked; the record is still plain data.
    r.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
struct RecordingResolver {
    key: Option<Arc<CertifiedKey>>,
    record: Shared,
}

impl ResolvesClientCert for RecordingResolver {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let mut r = lock(&self.record);
        r.cert_requested = true;
        r.acceptable_cas = root_hint_subjects.iter().map(|s| s.to_vec()).collect();
        let key = self.key.as_ref()?;
        if key.key.choose_scheme(sigschemes).is_none() {
            r.no_common_sigscheme = true;
            return None;
        }
        r.cert_sent = true;
        Some(Arc::clone(key))
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}

/// How an attempt failed before or during the handshake.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Nothing accepts connections there.
    Refused,
    /// The TCP connection itself did not complete in time.
    ConnectTimeout,
    /// Some other connect error (unreachable network, ...).
    Connect(String),
    /// The server stopped answering during the handshake.
    Timeout,
    /// The server reset the connection.
    Reset,
    /// The server closed the connection without an alert.
    Eof,
    /// The server answered with something that is not TLS; the first bytes, printable.
    NotTls(String),
    /// A TLS error: an alert the server sent, or what rustls found wrong.
    Tls(rustls::Error),
    /// Some other I/O error.
    Io(String),
}

/// What happened after a completed handshake.
#[derive(Debug, Clone)]
pub enum After {
    /// Nothing was checked (version-only attempts).
    Unchecked,
    /// The connection stayed open with no alert.
    Usable,
    /// The server sent a fatal alert after the handshake (TLS 1.3 client-cert rejection).
    Alert(AlertDescription),
    /// The server closed (close_notify or EOF) right after the handshake, without an alert.
    Closed,
    /// The server reset the connection right after the handshake.
    Reset,
    /// The server closed or reset the connection only after the probe wrote a byte (no alert).
    ClosedAfterWrite,
    /// An HTTP server answered our request (ALPN http/1.1 was negotiated).
    Http { status: u16, snippet: String },
}

/// The result of one handshake attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub failure: Option<Failure>,
    pub after: After,
    pub recorded: Recorded,
    pub version: Option<ProtocolVersion>,
    pub cipher: Option<String>,
    pub group: Option<NamedGroup>,
    pub alpn: Option<String>,
    /// The server chose this version (its ServerHello was accepted), even if the handshake later failed.
    pub server_hello_seen: bool,
}

impl Attempt {
    fn failed(f: Failure, recorded: Recorded) -> Attempt {
        Attempt {
            failure: Some(f),
            after: After::Unchecked,
            recorded,
            version: None,
            cipher: None,
            group: None,
            alpn: None,
            server_hello_seen: false,
        }
    }
}

/// What to try in one attempt.
pub struct Spec<'a> {
    pub provider: &'a Arc<CryptoProvider>,
    pub versions: &'a [&'static SupportedProtocolVersion],
    pub client_cert: Option<Arc<CertifiedKey>>,
    /// Offer ALPN http/1.1 and, when chosen, send one GET to see an HTTP-level rejection (nginx).
    pub http: bool,
    /// Watch the connection after the handshake for a late alert.
    pub after_check: bool,
    pub server_name: &'a ServerName<'static>,
    pub host_header: &'a str,
    pub timeout: Duration,
}

/// Keeps the first bytes the server sent, to tell a plain-HTTP (or other non-TLS) answer apart.
struct Sniff<'a> {
    sock: &'a TcpStream,
    first: Vec<u8>,
}

impl Read for Sniff<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (&mut &*self.sock).read(buf)?;
        if self.first.len() < 32 {
            let take = n.min(32 - self.first.len());
            self.first.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }
}

fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, Failure> {
    let mut last = Failure::Connect("no address to connect to".into());
    for a in addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => {
                last = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => Failure::Refused,
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                        Failure::ConnectTimeout
                    }
                    _ => Failure::Connect(e.to_string()),
                }
            }
        }
    }
    Err(last)
}

fn io_failure(e: &std::io::Error) -> Failure {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::WouldBlock | K::TimedOut => Failure::Timeout,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => Failure::Reset,
        K::UnexpectedEof => Failure::Eof,
        _ => Failure::Io(e.to_string()),
    }
}

fn printable(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '.'
            }
        })
        .collect()
}

fn remaining(deadline: Instant) -> Option<Duration> {
    let r = deadline.saturating_duration_since(Instant::now());
    (r > Duration::from_millis(1)).then_some(r)
}

/// Runs one handshake to completion or failure, then (optionally) watches for a late rejection.
/// The IANA name of a cipher suite (rustls' `as_str`, which is its IANA name).
fn suite_name(s: rustls::CipherSuite) -> String {
    s.as_str().map_or_else(|| format!("{s:?}"), str::to_string)
}

pub fn attempt(addrs: &[SocketAddr], spec: &Spec<'_>) -> Attempt {
    let record: Shared = Arc::new(Mutex::new(Recorded::default()));
    let snapshot = |r: &Shared| lock(r).clone();
    let started = Instant::now();
    let deadline = started + spec.timeout;

    // The chain is judged later, separately, so the report can show it even when it is invalid.
    let sink = Arc::clone(&record);
    let verifier = SignatureOnly::new(Arc::clone(spec.provider)).recording(Arc::new(
        move |leaf: &CertificateDer<'_>, rest: &[CertificateDer<'_>]| {
            lock(&sink).server_chain = std::iter::once(leaf)
                .chain(rest)
                .map(|c| c.clone().into_owned())
                .collect();
        },
    ));
    let config = mutual_tls::client::build(ClientSpec {
        provider: Arc::clone(spec.provider),
        versions: spec.versions,
        server: ServerCheck::Verifier(Arc::new(verifier)),
        cert: ClientCert::Resolver(Arc::new(RecordingResolver {
            key: spec.client_cert.clone(),
            record: Arc::clone(&record),
        })),
        alpn: if spec.http {
            vec![b"http/1.1".to_vec()]
        } else {
            Vec::new()
        },
        resumption: false,
    });
    let config = match config {
        Ok(c) => c,
        Err(e) => return Attempt::failed(Failure::Tls(e), Recorded::default()),
    };
    let mut conn = match ClientConnection::new(Arc::new(config), spec.server_name.clone()) {
        Ok(c) => c,
        Err(e) => return Attempt::failed(Failure::Tls(e), Recorded::default()),
    };

    let sock = match connect(addrs, spec.timeout) {
        Ok(s) => s,
        Err(f) => return Attempt::failed(f, Recorded::default()),
    };
    let _ = sock.set_nodelay(true);
    let mut sniff = Sniff {
        sock: &sock,
        first: Vec::new(),
    };

    let fail = |f: Failure, conn: &ClientConnection, record: &Shared| {
        let mut a = Attempt::failed(f, snapshot(record));
        a.version = conn.protocol_version();
        a.server_hello_seen = conn.protocol_version().is_some();
        // Known from the ServerHello (and, in TLS 1.2, its key exchange) even when the server
        // then refuses us: a TLS 1.2 server rejects before our handshake completes.
        a.cipher = conn
            .negotiated_cipher_suite()
            .map(|s| suite_name(s.suite()));
        a.group = conn.negotiated_key_exchange_group().map(|g| g.name());
        a
    };

    while conn.is_handshaking() {
        while conn.wants_write() {
            let _ = sock.set_write_timeout(remaining(deadline));
            if let Err(e) = conn.write_tls(&mut &sock) {
                return fail(io_failure(&e), &conn, &record);
            }
        }
        if !conn.is_handshaking() {
            break;
        }
        let Some(left) = remaining(deadline) else {
            return fail(Failure::Timeout, &conn, &record);
        };
        let _ = sock.set_read_timeout(Some(left));
        match conn.read_tls(&mut sniff) {
            Ok(0) => return fail(Failure::Eof, &conn, &record),
            Ok(_) => {}
            Err(e) => return fail(io_failure(&e), &conn, &record),
        }
        if let Err(e) = conn.process_new_packets() {
            // Tell the server why we stop (best effort: it may already be gone).
            let _ = conn.write_tls(&mut &sock);
            let looks_tls = sniff
                .first
                .first()
                .is_some_and(|b| (0x14..=0x18).contains(b));
            if !looks_tls {
                return fail(Failure::NotTls(printable(&sniff.first)), &conn, &record);
            }
            return fail(Failure::Tls(e), &conn, &record);
        }
    }
    // Flush the client's last flight (Certificate/Finished); a TLS 1.3 server judges it now.
    while conn.wants_write() {
        let _ = sock.set_write_timeout(remaining(deadline));
        if conn.write_tls(&mut &sock).is_err() {
            break;
        }
    }
    let handshake_time = started.elapsed();

    let alpn = conn
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let after = if spec.after_check {
        watch_after(
            &mut conn,
            &sock,
            spec,
            alpn.as_deref(),
            handshake_time,
            deadline,
        )
    } else {
        After::Unchecked
    };
    let _ = sock.shutdown(std::net::Shutdown::Both);

    Attempt {
        failure: None,
        after,
        recorded: snapshot(&record),
        version: conn.protocol_version(),
        cipher: conn
            .negotiated_cipher_suite()
            .map(|s| suite_name(s.suite())),
        group: conn.negotiated_key_exchange_group().map(|g| g.name()),
        alpn,
        server_hello_seen: true,
    }
}

enum Read1 {
    Alert(AlertDescription),
    Closed,
    Reset,
    Data,
    Quiet,
}

/// Reads until `until`, collecting plaintext into `plain`; stops at the first meaningful event.
fn read_some(
    conn: &mut ClientConnection,
    sock: &TcpStream,
    until: Instant,
    plain: &mut Vec<u8>,
    want_eof: bool,
) -> Read1 {
    loop {
        let Some(left) = remaining(until) else {
            return Read1::Quiet;
        };
        let _ = sock.set_read_timeout(Some(left));
        match conn.read_tls(&mut &*sock) {
            Ok(0) => return Read1::Closed,
            Ok(_) => {}
            Err(e) => {
                return match io_failure(&e) {
                    Failure::Timeout => Read1::Quiet,
                    Failure::Eof => Read1::Closed,
                    _ => Read1::Reset,
                }
            }
        }
        match conn.process_new_packets() {
            Err(rustls::Error::AlertReceived(a)) => return Read1::Alert(a),
            Err(_) => return Read1::Reset,
            Ok(st) => {
                let n = st.plaintext_bytes_to_read();
                if n > 0 {
                    let mut buf = vec![0u8; n];
                    if let Ok(k) = conn.reader().read(&mut buf) {
                        plain.extend_from_slice(&buf[..k]);
                    }
                    if !want_eof || plain.len() > 16 * 1024 {
                        return Read1::Data;
                    }
                }
                if st.peer_has_closed() {
                    return if plain.is_empty() {
                        Read1::Closed
                    } else {
                        Read1::Data
                    };
                }
            }
        }
    }
}

fn watch_after(
    conn: &mut ClientConnection,
    sock: &TcpStream,
    spec: &Spec<'_>,
    alpn: Option<&str>,
    handshake_time: Duration,
    deadline: Instant,
) -> After {
    // Long enough for the server to read our Finished, judge the certificate and authorize the
    // peer (a refusal then is an alert or a close), short enough to keep probes quick. Writing
    // before a refusal arrives would make the server's kernel answer with a reset that can
    // destroy the alert unread, so the wait errs on the long side.
    let settle = (handshake_time * 2 + Duration::from_millis(500)).min(Duration::from_secs(2));
    let until = (Instant::now() + settle).min(deadline);
    let mut plain = Vec::new();
    match read_some(conn, sock, until, &mut plain, false) {
        Read1::Alert(a) => return After::Alert(a),
        Read1::Closed => return After::Closed,
        Read1::Reset => return After::Reset,
        Read1::Data | Read1::Quiet => {}
    }
    if alpn == Some("http/1.1") && spec.http {
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nUser-Agent: mutual-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            spec.host_header
        );
        if conn.writer().write_all(req.as_bytes()).is_err() {
            return After::Usable;
        }
        while conn.wants_write() {
            let _ = sock.set_write_timeout(remaining(deadline));
            if conn.write_tls(&mut &*sock).is_err() {
                return After::Reset;
            }
        }
        plain.clear();
        let until = (Instant::now() + settle * 4).min(deadline);
        return match read_some(conn, sock, until, &mut plain, true) {
            Read1::Alert(a) => After::Alert(a),
            Read1::Reset if plain.is_empty() => After::Reset,
            Read1::Closed if plain.is_empty() => After::Closed,
            _ => parse_http(&plain).unwrap_or(After::Usable),
        };
    }
    if plain.is_empty() {
        // Some servers only notice a rejected client when the client writes: send one byte.
        let _ = conn.writer().write_all(b"\n");
        while conn.wants_write() {
            let _ = sock.set_write_timeout(remaining(deadline));
            if conn.write_tls(&mut &*sock).is_err() {
                return After::ClosedAfterWrite;
            }
        }
        let until = (Instant::now() + settle / 2).min(deadline);
        match read_some(conn, sock, until, &mut plain, false) {
            Read1::Alert(a) => return After::Alert(a),
            // Without an alert, a close here says more about the byte than about the certificate.
            Read1::Closed | Read1::Reset => return After::ClosedAfterWrite,
            Read1::Data | Read1::Quiet => {}
        }
    }
    After::Usable
}

fn parse_http(body: &[u8]) -> Option<After> {
    let text = String::from_utf8_lossy(body);
    let mut words = text.lines().next()?.split_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    let status: u16 = words.next()?.parse().ok()?;
    // The part of the body that names the problem (nginx puts it in <center>/<title>; mutual
    // serve in HTTP mode answers 403 with a problem+json body naming `policy_denied`).
    let compact: String = text.split_whitespace().collect();
    let snippet = if status == 403 && compact.contains("\"reason\":\"policy_denied\"") {
        "policy_denied".to_string()
    } else {
        [
            "No required SSL certificate was sent",
            "The SSL certificate error",
        ]
        .iter()
        .find(|s| text.contains(**s))
        .map(|s| s.to_string())
        .unwrap_or_default()
    };
    Some(After::Http { status, snippet })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_no_cert_page_is_recognised() {
        let body = b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n<html><center>No required SSL certificate was sent</center></html>";
        match parse_http(body) {
            Some(After::Http { status, snippet }) => {
                assert_eq!(status, 400);
                assert_eq!(snippet, "No required SSL certificate was sent");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(parse_http(b"\x16\x03\x01").is_none());
        let denied = b"HTTP/1.1 403 Forbidden\r\ncontent-type: application/problem+json\r\n\r\n{\"status\":403,\"reason\": \"policy_denied\"}";
        match parse_http(denied) {
            Some(After::Http { status, snippet }) => {
                assert_eq!(status, 403);
                assert_eq!(snippet, "policy_denied");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
