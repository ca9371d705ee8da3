//! rustls alone: what a stock rustls + webpki server spends on one TLS 1.3 mTLS handshake with the
//! bench's chain, in memory (no sockets, no proxy, no policy), timing only the server's calls.
//! It is the "no code of ours at all" reference for the handshake bounds (issue 20): besides the
//! crypto line's sign + 3 verifications + X25519 it includes what any TLS 1.3 server must also do
//! (the key schedule and transcript hash, the two session tickets, record protection) and the
//! rustls state machine. Same settings as the bench's `mutual serve`: TLS 1.3 only, the client
//! offers X25519 and rustls's default suites (it picks TLS13_AES_256_GCM_SHA384), the client sends
//! leaf + intermediate, the server trusts only the root, requires and verifies the client
//! certificate, and issues two stateless tickets per handshake.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};

use crate::tls::{Client, TlsArgs};

/// Server-side CPU microseconds per full and per resumed handshake, each measured for `secs`.
pub fn run(certs: &Path, secs: f64) -> anyhow::Result<(f64, f64)> {
    let server = Arc::new(server_config(certs)?);
    let full = Client::new(&TlsArgs {
        cert: Some(certs.join("client-chain.pem")),
        key: Some(certs.join("client.key")),
        ca: Some(certs.join("root.pem")),
        server_name: "localhost".into(),
        kx: "x25519".into(),
        no_verify_server: true,
        conn_timeout: 10.0,
    })?;
    let resuming = full.with_own_session_cache();
    let full_us = per_handshake(&full.config(), &server, secs, false)?;
    let resumed_us = per_handshake(&resuming.config(), &server, secs, true)?;
    Ok((full_us, resumed_us))
}

/// The bench's mTLS server as a stock rustls config: TLS 1.3, the root trusted for client
/// certificates (required), the server chain, stateless tickets (two per handshake).
pub(crate) fn server_config(certs: &Path) -> anyhow::Result<ServerConfig> {
    let read_chain = |name: &str| -> anyhow::Result<Vec<CertificateDer<'static>>> {
        let path = certs.join(name);
        CertificateDer::pem_file_iter(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing {}", path.display()))
    };
    let mut roots = RootCertStore::empty();
    for c in read_chain("root.pem")? {
        roots.add(c)?;
    }
    // The suites in mutual's order, chosen by the server (as mutual and the bench's peers do).
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    {
        use rustls::crypto::aws_lc_rs::cipher_suite as cs;
        provider.cipher_suites = vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ];
    }
    let provider = Arc::new(provider);
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()?;
    let key = PrivateKeyDer::from_pem_file(certs.join("server.key")).context("server.key")?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_chain("server-chain.pem")?, key)?;
    cfg.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    cfg.send_tls13_tickets = 2;
    cfg.ignore_client_order = true;
    Ok(cfg)
}

/// Handshakes for about `secs`; returns the server's mean time per handshake in µs. With
/// `resume`, every handshake after the first must resume (checked), else none may.
fn per_handshake(
    client: &Arc<ClientConfig>,
    server: &Arc<ServerConfig>,
    secs: f64,
    resume: bool,
) -> anyhow::Result<f64> {
    // Warm-up (and, when resuming, the first ticket).
    for _ in 0..10 {
        handshake(client, server)?;
    }
    let limit = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let (mut n, mut server_time) = (0u32, Duration::ZERO);
    while start.elapsed() < limit {
        let (t, resumed) = handshake(client, server)?;
        if resumed != resume {
            bail!("in-memory handshake: resumed = {resumed}, expected {resume}");
        }
        server_time += t;
        n += 1;
    }
    Ok(server_time.as_secs_f64() * 1e6 / f64::from(n.max(1)))
}

/// One handshake, both ends in this thread; returns the time spent in the server's calls and
/// whether the session was resumed.
fn handshake(
    client: &Arc<ClientConfig>,
    server: &Arc<ServerConfig>,
) -> anyhow::Result<(Duration, bool)> {
    let mut c = Connection::Client(ClientConnection::new(
        Arc::clone(client),
        ServerName::try_from("localhost")?,
    )?);
    let t = Instant::now();
    let mut s = Connection::Server(ServerConnection::new(Arc::clone(server))?);
    let mut server_time = t.elapsed();
    let mut buf = Vec::with_capacity(8192);
    loop {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf)?;
        }
        let sent = !buf.is_empty();
        let t = Instant::now();
        feed(&mut s, &buf)?;
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf)?;
        }
        server_time += t.elapsed();
        let answered = !buf.is_empty();
        feed(&mut c, &buf)?;
        if !sent && !answered {
            break;
        }
    }
    if c.is_handshaking() || s.is_handshaking() {
        bail!("in-memory handshake did not complete");
    }
    let resumed = match &s {
        Connection::Server(s) => s.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        Connection::Client(_) => false,
    };
    Ok((server_time, resumed))
}

fn feed(conn: &mut Connection, mut bytes: &[u8]) -> anyhow::Result<()> {
    while !bytes.is_empty() {
        conn.read_tls(&mut bytes)?;
        conn.process_new_packets()?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn in_memory_handshakes_complete_full_and_resumed() {
        let dir = std::env::temp_dir().join(format!("loadgen-alone-{}", std::process::id()));
        crate::certs::generate(&dir).unwrap();
        let (full, resumed) = super::run(&dir, 0.05).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        // `run` itself fails unless every full handshake was full and every timed resumed one resumed.
        assert!(full > 0.0 && resumed > 0.0, "{full} {resumed}");
    }
}
