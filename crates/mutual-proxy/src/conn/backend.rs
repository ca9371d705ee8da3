//! Where `serve` forwards to (and `connect` dials): a TCP `host:port` (resolved at each dial, so
//! DNS changes are followed) or a Unix socket (`unix:/path`).

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::ProxyError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Tcp(String),
    Unix(PathBuf),
}

impl FromStr for Backend {
    type Err = ProxyError;
    fn from_str(s: &str) -> Result<Backend, ProxyError> {
        let bad = |why: &str| ProxyError::InvalidBackend {
            spec: s.to_string(),
            why: why.to_string(),
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("unix: needs a socket path"));
            }
            return Ok(Backend::Unix(PathBuf::from(path)));
        }
        check_tcp(s, "expected HOST:PORT or unix:/path").map_err(bad)?;
        Ok(Backend::Tcp(s.to_string()))
    }
}

/// Why `s` is not HOST:PORT (a host, a port 1-65535); `no_port` is what a string without a
/// colon is told.
fn check_tcp<'a>(s: &str, no_port: &'a str) -> Result<(), &'a str> {
    let (host, port) = s.rsplit_once(':').ok_or(no_port)?;
    if host.is_empty() {
        return Err("missing host");
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err("the port must be a number 1-65535"),
    }
}

impl Backend {
    /// `connect`'s remote: an mTLS server, HOST:PORT only (no Unix socket), its errors named
    /// as the remote's.
    pub fn remote(s: &str) -> Result<Backend, ProxyError> {
        let bad = |why: &str| ProxyError::InvalidRemote {
            spec: s.to_string(),
            why: why.to_string(),
        };
        if s.starts_with("unix:") {
            return Err(bad("the remote is an mTLS server, HOST:PORT"));
        }
        check_tcp(s, "expected HOST:PORT").map_err(bad)?;
        Ok(Backend::Tcp(s.to_string()))
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Tcp(a) => f.write_str(a),
            Backend::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Backend {
    /// Connects, giving up after `timeout`.
    pub async fn dial(&self, timeout: Duration) -> io::Result<BackendStream> {
        let fut = async {
            match self {
                Backend::Tcp(addr) => {
                    let s = TcpStream::connect(addr.as_str()).await?;
                    // Proxied traffic is request/response: never wait to coalesce small writes.
                    s.set_nodelay(true)?;
                    Ok(BackendStream::Tcp(s))
                }
                Backend::Unix(p) => Ok(BackendStream::Unix(UnixStream::connect(p).await?)),
            }
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {self} timed out"),
            )),
        }
    }
}

impl Backend {
    /// Connects to a TCP address (`connect`'s remote, where TLS is originated); a Unix socket
    /// is an error here, never a silent skip.
    pub async fn dial_tcp(&self, timeout: Duration) -> io::Result<TcpStream> {
        match self.dial(timeout).await? {
            BackendStream::Tcp(t) => Ok(t),
            BackendStream::Unix(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{self} is not a TCP address"),
            )),
        }
    }
}

/// A connected backend, TCP or Unix.
pub enum BackendStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            BackendStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            BackendStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            BackendStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            BackendStream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendStream::Tcp(s) => s.is_write_vectored(),
            BackendStream::Unix(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_tcp_and_unix() {
        assert_eq!(
            "127.0.0.1:8080".parse::<Backend>().unwrap(),
            Backend::Tcp("127.0.0.1:8080".into())
        );
        assert_eq!(
            "[::1]:80".parse::<Backend>().unwrap(),
            Backend::Tcp("[::1]:80".into())
        );
        assert_eq!(
            "unix:/run/app.sock".parse::<Backend>().unwrap(),
            Backend::Unix("/run/app.sock".into())
        );
        for bad in ["localhost", "host:http", ":80", "unix:", "h:70000"] {
            assert!(bad.parse::<Backend>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn dial_failure_is_an_error_not_a_hang() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let b: Backend = addr.to_string().parse().unwrap();
        assert!(b.dial(Duration::from_secs(2)).await.is_err());
    }
}
