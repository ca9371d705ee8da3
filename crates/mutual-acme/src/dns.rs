//! dns-01 (RFC 8555 §8.4): the CA asks a resolver for the TXT records of
//! `_acme-challenge.NAME` and looks for base64url(SHA-256(key authorization)).
//!
//! Why by hand and not a resolver crate: the CA needs exactly one question (TXT, recursion
//! desired) to one configured resolver (`--acme-dns-resolver HOST:PORT`, else the first
//! `nameserver` of /etc/resolv.conf), and the answer parser must be small enough to fuzz and read.
//! Over UDP, with the query id and question checked; a truncated answer is retried over TCP.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::problem::AcmeError;

const TXT: u16 = 16;

/// The first `nameserver` of resolv.conf-formatted `text`, on port 53.
pub fn system_resolver(text: &str) -> Option<SocketAddr> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        if w.next() != Some("nameserver") {
            return None;
        }
        let ip: std::net::IpAddr = w.next()?.split('%').next()?.parse().ok()?;
        Some(SocketAddr::new(ip, 53))
    })
}

/// A DNS query for `name`'s TXT records with id `id`, recursion desired.
pub fn query(name: &str, id: u16) -> Result<Vec<u8>, AcmeError> {
    let mut q = Vec::with_capacity(name.len() + 18);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(AcmeError::new("dns", format!("{name} is not a DNS name")));
        }
        q.push(label.len() as u8); // at most 63, checked above
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&TXT.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    Ok(q)
}

fn short() -> AcmeError {
    AcmeError::new("dns", "the resolver's answer is malformed")
}

fn u16_at(b: &[u8], i: usize) -> Result<u16, AcmeError> {
    let s = b.get(i..i + 2).ok_or_else(short)?;
    Ok(u16::from_be_bytes([s[0], s[1]]))
}

/// Skips a (possibly compressed) name starting at `i`; returns the index after it.
fn skip_name(b: &[u8], mut i: usize) -> Result<usize, AcmeError> {
    loop {
        let len = *b.get(i).ok_or_else(short)?;
        match len {
            0 => return Ok(i + 1),
            l if l & 0xc0 == 0xc0 => return Ok(i + 2),
            l if l & 0xc0 == 0 => i += 1 + usize::from(l),
            _ => return Err(short()),
        }
    }
}

/// What an answer says: the TXT strings (each record's character-strings joined), or that the
/// answer was truncated (retry over TCP).
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Txt(Vec<Vec<u8>>),
    Truncated,
}

/// Parses the answer to [`query`] with id `id`. NXDOMAIN and NODATA are an empty list.
pub fn parse(b: &[u8], id: u16) -> Result<Answer, AcmeError> {
    if u16_at(b, 0)? != id {
        return Err(AcmeError::new("dns", "the resolver answered another query"));
    }
    let flags = u16_at(b, 2)?;
    if flags & 0x8000 == 0 {
        return Err(short());
    }
    if flags & 0x0200 != 0 {
        return Ok(Answer::Truncated);
    }
    match flags & 0x000f {
        0 | 3 => {}
        rcode => {
            return Err(AcmeError::new(
                "dns",
                format!("the resolver failed the TXT query (rcode {rcode})"),
            ))
        }
    }
    let (qd, an) = (u16_at(b, 4)?, u16_at(b, 6)?);
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(b, i)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        i = skip_name(b, i)?;
        let kind = u16_at(b, i)?;
        let rdlen = usize::from(u16_at(b, i + 8)?);
        let rdata = b.get(i + 10..i + 10 + rdlen).ok_or_else(short)?;
        i += 10 + rdlen;
        if kind != TXT {
            continue; // a CNAME the resolver followed, for example
        }
        let mut txt = Vec::new();
        let mut j = 0;
        while j < rdata.len() {
            let l = usize::from(rdata[j]);
            txt.extend_from_slice(rdata.get(j + 1..j + 1 + l).ok_or_else(short)?);
            j += 1 + l;
        }
        out.push(txt);
    }
    Ok(Answer::Txt(out))
}

/// The TXT records of `name` from `resolver`, within `timeout` per exchange.
pub async fn txt(
    resolver: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<Vec<Vec<u8>>, AcmeError> {
    let id: u16 = rand::random();
    let q = query(name, id)?;
    let io = |e: std::io::Error| AcmeError::new("dns", format!("DNS to {resolver}: {e}"));
    let late = |_| AcmeError::new("dns", format!("{resolver} did not answer in time"));
    let bind: SocketAddr = if resolver.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await.map_err(io)?;
    sock.connect(resolver).await.map_err(io)?;
    sock.send(&q).await.map_err(io)?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(timeout, sock.recv(&mut buf))
        .await
        .map_err(late)?
        .map_err(io)?;
    match parse(&buf[..n], id)? {
        Answer::Txt(v) => Ok(v),
        Answer::Truncated => {
            let exchange = async {
                let mut tcp = TcpStream::connect(resolver).await.map_err(io)?;
                let len = u16::try_from(q.len()).map_err(|_| short())?;
                tcp.write_all(&len.to_be_bytes()).await.map_err(io)?;
                tcp.write_all(&q).await.map_err(io)?;
                let len = usize::from(tcp.read_u16().await.map_err(io)?);
                let mut b = vec![0u8; len];
                tcp.read_exact(&mut b).await.map_err(io)?;
                Ok::<_, AcmeError>(b)
            };
            let b = tokio::time::timeout(timeout, exchange)
                .await
                .map_err(late)??;
            match parse(&b, id)? {
                Answer::Txt(v) => Ok(v),
                Answer::Truncated => Err(short()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn query_and_answer_with_compression() {
        let q = query("_acme-challenge.a.example.test", 0x1234).unwrap();
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        // The answer: header (QR, RD, RA, one question, two answers), the question, a TXT
        // record of two character-strings and a CNAME, names compressed to offset 12.
        let mut a = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        a.extend_from_slice(&q[12..]);
        a.extend_from_slice(&[
            0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 60, 0, 6, 2, b'a', b'b', 2, b'c', b'd',
        ]);
        a.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12]);
        assert_eq!(
            parse(&a, 0x1234).unwrap(),
            Answer::Txt(vec![b"abcd".to_vec()])
        );
        assert_eq!(parse(&a, 0x9999).unwrap_err().kind, "dns");
        let mut nx = a[..12].to_vec();
        nx[3] = 0x83;
        nx[7] = 0;
        nx.extend_from_slice(&q[12..]);
        assert_eq!(parse(&nx, 0x1234).unwrap(), Answer::Txt(vec![]));
        let mut tc = a.clone();
        tc[2] |= 0x02;
        assert_eq!(parse(&tc, 0x1234).unwrap(), Answer::Truncated);
        for n in 0..a.len() - 1 {
            let _ = parse(&a[..n], 0x1234);
        }
        assert!(query("a..b", 1).is_err());
    }

    /// What fuzz/fuzz_targets/acme_inputs.rs does, over every one-byte change of a real answer
    /// and every truncation: refusals, never a panic.
    #[test]
    fn mutated_answers_are_refused_not_panicked_on() {
        let q = query("_acme-challenge.a.example.test", 7).unwrap();
        let mut a = vec![0, 7, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        a.extend_from_slice(&q[12..]);
        a.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 60, 0, 3, 2, b'o', b'k']);
        assert_eq!(parse(&a, 7).unwrap(), Answer::Txt(vec![b"ok".to_vec()]));
        for i in 0..a.len() {
            for v in [0u8, 1, 0x3f, 0x40, 0xc0, 0xff] {
                let mut m = a.clone();
                m[i] = v;
                let _ = parse(&m, 7);
            }
            let _ = parse(&a[..i], 7);
        }
        let _ = crate::ari::CertId::parse("\u{0}.\u{ff}");
        let v = serde_json::json!({"protected": "e30", "payload": "", "signature": ""});
        assert!(crate::eab::Binding::parse(&v, "https://ca.test/acme/new-account").is_err());
    }

    #[test]
    fn resolv_conf() {
        let t = "# x\nsearch example\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n";
        assert_eq!(system_resolver(t), Some("10.0.0.2:53".parse().unwrap()));
        assert_eq!(
            system_resolver("nameserver fe80::1%eth0"),
            Some("[fe80::1]:53".parse().unwrap())
        );
        assert_eq!(system_resolver(""), None);
    }
}
