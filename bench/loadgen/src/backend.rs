//! The backend every contender forwards to, so differences in the figures come from the proxies.
//!
//! HTTP/1.1 keep-alive over plain TCP: `GET /down/N` sources N bytes, a request with a body (e.g.
//! `POST /up`) has the body sunk, anything else gets "ok".
//!
//! For the HTTP-mode cases the backend also checks that the proxy forwarded the client's identity
//! ([`Identity`]): a request without it gets a 403, which the load generator counts as a failure,
//! so a request counts only when the identity header came with it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::http;

/// The header a proxy in HTTP mode must add (`X-Forwarded-Client-Cert`, nginx's
/// `$ssl_client_escaped_cert`, HAProxy's `ssl_c_der,base64`), and text its value must contain.
#[derive(Debug, Clone)]
pub struct Identity {
    pub header: String,
    pub contains: String,
}

impl Identity {
    fn seen(&self, head: &[u8]) -> bool {
        http::header(head, &self.header).is_some_and(|v| v.contains(&self.contains))
    }
}

pub async fn run(listen: SocketAddr, identity: Option<Identity>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    match &identity {
        Some(id) => eprintln!(
            "backend listening on {}, requiring header {} containing {:?}",
            listener.local_addr()?,
            id.header,
            id.contains
        ),
        None => eprintln!("backend listening on {}", listener.local_addr()?),
    }
    serve_with(listener, identity).await
}

/// Serves connections from `listener` until the task is dropped.
#[cfg(test)]
pub async fn serve(listener: TcpListener) -> anyhow::Result<()> {
    serve_with(listener, None).await
}

/// [`serve`], answering 403 to every request without the `identity` header (when given).
pub async fn serve_with(listener: TcpListener, identity: Option<Identity>) -> anyhow::Result<()> {
    let identity = identity.map(Arc::new);
    let missing = Arc::new(std::sync::atomic::AtomicU64::new(0));
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(x) => x,
            // Out of file descriptors or similar: keep serving the connections we have.
            Err(e) => {
                eprintln!("backend accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let (identity, missing) = (identity.clone(), missing.clone());
        tokio::spawn(async move {
            // A proxy closing mid-request is normal at the end of a timed run.
            let _ = serve_conn(sock, identity.as_deref(), &missing).await;
        });
    }
}

async fn serve_conn(
    mut sock: TcpStream,
    identity: Option<&Identity>,
    missing: &std::sync::atomic::AtomicU64,
) -> io::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let Some(end) = http::read_head(&mut sock, &mut buf).await? else {
            return Ok(());
        };
        let req = http::parse_request_head(&buf[..end])?;
        let refused = identity.is_some_and(|id| !id.seen(&buf[..end]));
        http::discard_body(&mut sock, &mut buf, end, req.content_length).await?;
        if refused {
            // Said once, so a misconfigured proxy shows in the backend's log.
            if missing.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                eprintln!("backend: a request came without the identity header");
            }
            sock.write_all(http::MISSING_IDENTITY).await?;
            continue;
        }
        match req
            .path
            .strip_prefix("/down/")
            .and_then(|n| n.parse::<u64>().ok())
        {
            Some(len) if req.method == "GET" => {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                sock.write_all(head.as_bytes()).await?;
                http::write_zeros(&mut sock, len, || true).await?;
            }
            _ => sock.write_all(http::OK_SMALL).await?,
        }
        if req.close {
            sock.shutdown().await?;
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::modes::{self, Direction, Server};
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    /// No server process to read CPU time from (the backend runs in this test's process).
    fn unmeasured() -> Server {
        Server {
            pids: vec![],
            upstream: vec![],
            ticks: 100.0,
        }
    }

    /// Plain-TCP kept-alive requests to `addr` from `conns` connections.
    async fn plain_requests(
        addr: SocketAddr,
        conns: usize,
        duration: Duration,
        pace: modes::Pace,
        count: Option<u64>,
        server: &Server,
    ) -> serde_json::Value {
        modes::requests(
            None,
            addr,
            conns,
            duration,
            pace,
            modes::Budget::new(count),
            server,
        )
        .await
    }

    /// The modes against the backend over plain TCP: the smoke test of the harness without peers.
    #[tokio::test]
    async fn modes_against_the_backend() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = tokio::spawn(serve(listener));
        let server = Server {
            pids: vec![std::process::id()],
            upstream: vec![],
            ticks: 100.0,
        };

        let r = plain_requests(
            addr,
            2,
            Duration::from_millis(200),
            modes::Pace::Closed,
            None,
            &server,
        )
        .await;
        assert_eq!(r["failed"], 0, "{r}");
        assert!(r["ok"].as_u64().unwrap() > 0, "{r}");
        assert!(r["latency"]["p99_us"].as_u64().unwrap() > 0, "{r}");
        assert!(r.get("server_cpu_s").is_some(), "{r}");

        // --count: exactly that many requests over both connections, well before the deadline.
        let r = plain_requests(
            addr,
            2,
            Duration::from_secs(60),
            modes::Pace::Closed,
            Some(7),
            &server,
        )
        .await;
        assert_eq!(
            (r["ok"].as_u64(), r["failed"].as_u64()),
            (Some(7), Some(0)),
            "{r}"
        );

        for dir in [Direction::Up, Direction::Down] {
            let b = modes::bulk(None, addr, 3 << 20, dir, Duration::from_secs(10), &server).await;
            assert_eq!(b["ok"], 1, "{b}");
            assert_eq!(b["transferred"], 3 << 20, "{b}");
            assert_eq!(b["truncated"], false, "{b}");
        }
        backend.abort();
    }

    /// `--rate`: the requests dealt in the window are made (no more), and a request waiting
    /// behind a slow one is charged from when it was due: against a server answering in 20 ms,
    /// one connection asked for a request every 5 ms sees latencies growing far past 20 ms,
    /// where the closed loop sees about 20 ms (what coordinated omission would hide).
    #[tokio::test]
    async fn an_open_loop_keeps_its_rate_and_charges_the_wait() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = tokio::spawn(serve(listener));
        let server = unmeasured();
        let r = plain_requests(
            addr,
            4,
            Duration::from_millis(500),
            modes::Pace::Rate(2000.0),
            None,
            &server,
        )
        .await;
        assert_eq!(
            (r["failed"].as_u64(), r["pace"].as_str()),
            (Some(0), Some("open")),
            "{r}"
        );
        // 2,000/s for 0.5 s: exactly 1,000 due, every one made (late ones within the drain).
        assert_eq!(
            (r["ok"].as_u64(), r["unmade"].as_u64()),
            (Some(1000), Some(0)),
            "{r}"
        );
        backend.abort();

        // A backend that takes 20 ms per request.
        let slow = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let slow_addr = slow.local_addr().unwrap();
        let slow_backend = tokio::spawn(async move {
            loop {
                let (mut sock, _) = slow.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        let n = sock.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = http::head_end(&buf) {
                            buf.drain(..end);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            if sock.write_all(http::OK_SMALL).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        let server = &server;
        let p99 = |pace| async move {
            let r =
                plain_requests(slow_addr, 1, Duration::from_millis(400), pace, None, server).await;
            assert_eq!(r["failed"], 0, "{r}");
            r["latency"]["p99_us"].as_u64().unwrap()
        };
        let closed = p99(modes::Pace::Closed).await;
        let open = p99(modes::Pace::Rate(200.0)).await;
        // Closed: each request waits for its own 20 ms. Open: 80 due in 0.4 s, served one per
        // 20 ms, so the last waited about 1.2 s.
        assert!(
            (20_000..100_000).contains(&closed),
            "closed loop p99 {closed} µs"
        );
        assert!(
            open > 500_000,
            "open loop p99 {open} µs: the queued wait was not counted"
        );
        slow_backend.abort();
    }

    /// With an identity required, a request without the header is refused (and counted as a
    /// failure by the load generator); one with it is served.
    #[tokio::test]
    async fn identity_header_is_required() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let id = Identity {
            header: "X-Client-Cert".into(),
            contains: "BEGIN".into(),
        };
        let backend = tokio::spawn(serve_with(listener, Some(id)));
        let server = unmeasured();
        let r = plain_requests(
            addr,
            1,
            Duration::from_secs(10),
            modes::Pace::Closed,
            Some(2),
            &server,
        )
        .await;
        assert_eq!(r["ok"], 0, "{r}");
        assert_eq!(r["first_error"], "connect: status 403", "{r}");

        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        for (value, status) in [("-----BEGIN%20CERT", 200), ("MIIB", 403)] {
            let req = format!("GET / HTTP/1.1\r\nHost: b\r\nx-client-cert: {value}\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            buf.clear();
            assert_eq!(http::read_response(&mut s, &mut buf).await.unwrap(), status);
        }
        backend.abort();
    }
}
