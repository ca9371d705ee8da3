//! Challenge validation by the CA (RFC 8555 §8.3 http-01, RFC 8737 tls-alpn-01).
//!
//! Why it connects to the identifier's own address: the proof is that whoever controls the name
//! serves the key authorization; connecting back to the requester's address would let anyone
//! claim any name. Ports, timeouts, the redirect limit and name overrides (`--acme-resolve`,
//! like curl's `--resolve`) are configurable so that tests run on 127.0.0.1 with ephemeral
//! ports; the defaults are the standard ports and the system resolver.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::problem::AcmeError;

/// How the CA reaches the identifiers it validates.
#[derive(Clone, Debug)]
pub struct ValidationConfig {
    pub http_port: u16,
    pub tls_port: u16,
    /// Names resolved to these addresses instead of through DNS.
    pub resolve: HashMap<String, IpAddr>,
    /// Per connection and per request.
    pub timeout: Duration,
    pub max_redirects: usize,
    /// Attempts before a challenge is invalid (a name that is briefly unreachable gets another).
    pub attempts: u32,
    pub retry_delay: Duration,
    /// The resolver dns-01 asks (`--acme-dns-resolver`); `None`: the first nameserver of
    /// /etc/resolv.conf.
    pub dns_resolver: Option<SocketAddr>,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            http_port: 80,
            tls_port: 443,
            resolve: HashMap::new(),
            timeout: Duration::from_secs(10),
            max_redirects: 10,
            attempts: 3,
            retry_delay: Duration::from_secs(1),
            dns_resolver: None,
        }
    }
}

/// The identifier to validate (`dns` name or `ip` address).
#[derive(Clone, Debug)]
pub struct Target {
    pub kind: String,
    pub value: String,
}

impl ValidationConfig {
    async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, AcmeError> {
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        if let Some(ip) = self.resolve.get(&host.to_ascii_lowercase()) {
            return Ok(vec![SocketAddr::new(*ip, port)]);
        }
        let found = tokio::time::timeout(self.timeout, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| AcmeError::new("dns", format!("resolving {host} timed out")))?
            .map_err(|e| AcmeError::new("dns", format!("cannot resolve {host}: {e}")))?;
        let v: Vec<SocketAddr> = found.collect();
        if v.is_empty() {
            return Err(AcmeError::new("dns", format!("{host} has no address")));
        }
        Ok(v)
    }

    async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, AcmeError> {
        let mut last = String::new();
        for a in self.addresses(host, port).await? {
            match tokio::time::timeout(self.timeout, TcpStream::connect(a)).await {
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(e)) => last = format!("{a}: {e}"),
                Err(_) => last = format!("{a}: connection timed out"),
            }
        }
        Err(AcmeError::new(
            "connection",
            format!("cannot connect to {host}: {last}"),
        ))
    }

    /// Runs one challenge with the bounded retries; the error is what the challenge records.
    pub async fn validate(
        &self,
        challenge: &str,
        target: &Target,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), AcmeError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = match challenge {
                "http-01" => self.http01(target, token, key_authorization).await,
                "tls-alpn-01" => self.tls_alpn01(target, key_authorization).await,
                "dns-01" => self.dns01(target, key_authorization).await,
                other => Err(AcmeError::malformed(format!("unknown challenge {other}"))),
            };
            match r {
                Ok(()) => return Ok(()),
                // A wrong answer is final; an unreachable host may come up.
                Err(e) if e.kind == "incorrectResponse" || attempt >= self.attempts => {
                    return Err(e)
                }
                Err(e) => {
                    tracing::info!(challenge, identifier = %target.value, attempt, error = %e.detail, "ACME validation attempt failed");
                    tokio::time::sleep(self.retry_delay).await;
                }
            }
        }
    }

    /// dns-01: a TXT record at `_acme-challenge.NAME` holding base64url(SHA-256(key
    /// authorization)). No record yet is retried (propagation); other records are final.
    async fn dns01(&self, t: &Target, key_authorization: &str) -> Result<(), AcmeError> {
        if t.kind != "dns" {
            return Err(AcmeError::malformed("dns-01 validates DNS names only"));
        }
        let resolver = match self.dns_resolver {
            Some(r) => r,
            None => std::fs::read_to_string("/etc/resolv.conf")
                .ok()
                .and_then(|t| crate::dns::system_resolver(&t))
                .ok_or_else(|| {
                    AcmeError::new("dns", "no resolver: /etc/resolv.conf names no nameserver")
                })?,
        };
        let name = format!("_acme-challenge.{}", t.value);
        let want = crate::jws::b64(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_authorization.as_bytes())
                .as_ref(),
        );
        let records = crate::dns::txt(resolver, &name, self.timeout).await?;
        if records.iter().any(|r| r == want.as_bytes()) {
            return Ok(());
        }
        if records.is_empty() {
            return Err(AcmeError::new(
                "dns",
                format!("no TXT record at {name} (asked {resolver})"),
            ));
        }
        Err(AcmeError::new(
            "incorrectResponse",
            format!(
                "the {} TXT record(s) at {name} do not hold the key authorization's digest",
                records.len()
            ),
        ))
    }

    /// http-01: GET http://NAME/.well-known/acme-challenge/TOKEN, following at most
    /// `max_redirects` redirects to other http URLs (on the configured port).
    async fn http01(&self, t: &Target, token: &str, expected: &str) -> Result<(), AcmeError> {
        let mut host = t.value.clone();
        let mut path = format!("/.well-known/acme-challenge/{token}");
        for _ in 0..=self.max_redirects {
            let tcp = self.connect(&host, self.http_port).await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| AcmeError::new("connection", format!("HTTP to {host}: {e}")))?;
            tokio::spawn(conn);
            let host_header = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            let req = hyper::Request::get(&path)
                .header("host", host_header)
                .header("user-agent", "mutual-acme-validator")
                .body(Empty::<Bytes>::new())
                .map_err(|e| AcmeError::malformed(format!("bad challenge URL: {e}")))?;
            let resp = tokio::time::timeout(self.timeout, sender.send_request(req))
                .await
                .map_err(|_| AcmeError::new("connection", format!("HTTP to {host} timed out")))?
                .map_err(|e| AcmeError::new("connection", format!("HTTP to {host}: {e}")))?;
            let status = resp.status();
            if status.is_redirection() {
                let loc = resp
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let Some(rest) = loc.strip_prefix("http://") else {
                    return Err(AcmeError::new(
                        "connection",
                        format!("redirect to {loc:?}: only http:// redirects are followed"),
                    ));
                };
                let (h, p) = rest.split_once('/').unwrap_or((rest, ""));
                host = h.rsplit_once(':').map_or(h, |(n, _)| n).to_string();
                path = format!("/{p}");
                continue;
            }
            if !status.is_success() {
                return Err(AcmeError::new(
                    "unauthorized",
                    format!("http://{host}{path} answered {status}"),
                ));
            }
            let body =
                tokio::time::timeout(self.timeout, Limited::new(resp.into_body(), 4096).collect())
                    .await
                    .map_err(|_| AcmeError::new("connection", "reading the response timed out"))?
                    .map_err(|e| {
                        AcmeError::new("connection", format!("reading the response: {e}"))
                    })?
                    .to_bytes();
            let got = String::from_utf8_lossy(&body);
            let got = got.trim_end();
            if got != expected {
                return Err(AcmeError::new(
                    "incorrectResponse",
                    format!(
                        "the key authorization at http://{host}{path} does not match this \
                         challenge (expected {expected:?}, got {:?})",
                        got.chars().take(128).collect::<String>()
                    ),
                ));
            }
            return Ok(());
        }
        Err(AcmeError::new(
            "connection",
            format!("more than {} redirects", self.max_redirects),
        ))
    }

    /// tls-alpn-01 (RFC 8737): a TLS handshake with ALPN `acme-tls/1` and SNI the name; the
    /// certificate must name exactly that name and carry the critical acmeIdentifier extension
    /// with SHA-256 of the key authorization.
    async fn tls_alpn01(&self, t: &Target, key_authorization: &str) -> Result<(), AcmeError> {
        if t.kind != "dns" {
            return Err(AcmeError::malformed(
                "tls-alpn-01 is offered for DNS identifiers only",
            ));
        }
        let cfg = mutual_tls::client::tls_alpn_01().map_err(AcmeError::internal)?;
        let name = ServerName::try_from(t.value.clone())
            .map_err(|_| AcmeError::malformed("the identifier is not a valid server name"))?;
        let tcp = self.connect(&t.value, self.tls_port).await?;
        let tls = tokio::time::timeout(
            self.timeout,
            tokio_rustls::TlsConnector::from(cfg).connect(name, tcp),
        )
        .await
        .map_err(|_| AcmeError::new("tls", "the TLS handshake timed out"))?
        .map_err(|e| AcmeError::new("tls", format!("TLS handshake with {}: {e}", t.value)))?;
        let conn = tls.get_ref().1;
        if conn.alpn_protocol() != Some(b"acme-tls/1") {
            return Err(AcmeError::new(
                "tls",
                "the server did not negotiate ALPN acme-tls/1",
            ));
        }
        let leaf = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| AcmeError::new("tls", "no certificate presented"))?;
        check_alpn_cert(leaf.as_ref(), &t.value, key_authorization)
    }
}

/// The RFC 8737 §3 checks on the challenge certificate.
pub fn check_alpn_cert(der: &[u8], name: &str, key_authorization: &str) -> Result<(), AcmeError> {
    let incorrect = |d: String| AcmeError::new("incorrectResponse", d);
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|_| AcmeError::new("tls", "the challenge certificate does not parse"))?;
    let san = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .ok_or_else(|| incorrect("the challenge certificate has no subjectAltName".into()))?;
    let names: Vec<&GeneralName> = san.value.general_names.iter().collect();
    match names.as_slice() {
        [GeneralName::DNSName(d)] if d.eq_ignore_ascii_case(name) => {}
        _ => {
            return Err(incorrect(format!(
                "the challenge certificate must name exactly dNSName {name}"
            )))
        }
    }
    let oid = x509_parser::der_parser::oid!(1.3.6 .1 .5 .5 .7 .1 .31);
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid == oid)
        .ok_or_else(|| {
            incorrect("the challenge certificate has no acmeIdentifier extension".into())
        })?;
    if !ext.critical {
        return Err(incorrect(
            "the acmeIdentifier extension is not critical".into(),
        ));
    }
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_authorization.as_bytes());
    let mut expected = vec![0x04, 0x20];
    expected.extend_from_slice(digest.as_ref());
    if ext.value != expected.as_slice() {
        return Err(incorrect(
            "the acmeIdentifier extension does not hold this challenge's key authorization".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn alpn_cert(names: &[&str], key_authorization: &str, critical: bool) -> Vec<u8> {
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_authorization.as_bytes());
        let mut digest = [0u8; 32];
        digest.copy_from_slice(d.as_ref());
        let mut ext = rcgen::CustomExtension::new_acme_identifier(&digest);
        ext.set_criticality(critical);
        p.custom_extensions = vec![ext];
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn tls_alpn_certificate_checks() {
        let ka = "tok.thumb";
        check_alpn_cert(
            &alpn_cert(&["a.example.test"], ka, true),
            "a.example.test",
            ka,
        )
        .unwrap();
        for (der, why) in [
            (
                alpn_cert(&["a.example.test"], "other.thumb", true),
                "wrong key authorization",
            ),
            (alpn_cert(&["a.example.test"], ka, false), "not critical"),
            (
                alpn_cert(&["a.example.test", "b.example.test"], ka, true),
                "two names",
            ),
            (alpn_cert(&["b.example.test"], ka, true), "other name"),
        ] {
            let e = check_alpn_cert(&der, "a.example.test", ka).unwrap_err();
            assert_eq!(e.kind, "incorrectResponse", "{why}: {}", e.detail);
        }
    }
}
