//! The backend every contender forwards to, so differences in the figures come from the proxies.
//!
//! HTTP/1.1 keep-alive over plain TCP: `GET /down/N` sources N bytes, a request with a body (e.g.
//! `POST /up`) has the body sunk, anything else gets "ok".

use std::io;
use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::http;

pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("backend listening on {}", listener.local_addr()?);
    serve(listener).await
}

/// Serves connections from `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) -> anyhow::Result<()> {
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
        tokio::spawn(async move {
            // A proxy closing mid-request is normal at the end of a timed run.
            let _ = serve_conn(sock).await;
        });
    }
}

async fn serve_conn(mut sock: TcpStream) -> io::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let Some(end) = http::read_head(&mut sock, &mut buf).await? else {
            return Ok(());
        };
        let req = http::parse_request_head(&buf[..end])?;
        http::discard_body(&mut sock, &mut buf, end, req.content_length).await?;
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

    /// The modes against the backend over plain TCP: the smoke test of the harness without peers.
    #[tokio::test]
    async fn modes_against_the_backend() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = tokio::spawn(serve(listener));
        let server = Server {
            pids: vec![std::process::id()],
            ticks: 100.0,
        };

        let r = modes::requests(
            None,
            addr,
            2,
            Duration::from_millis(200),
            modes::Budget::new(None),
            &server,
        )
        .await;
        assert_eq!(r["failed"], 0, "{r}");
        assert!(r["ok"].as_u64().unwrap() > 0, "{r}");
        assert!(r["latency"]["p99_us"].as_u64().unwrap() > 0, "{r}");
        assert!(r.get("server_cpu_s").is_some(), "{r}");

        // --count: exactly that many requests over both connections, well before the deadline.
        let r = modes::requests(
            None,
            addr,
            2,
            Duration::from_secs(60),
            modes::Budget::new(Some(7)),
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
}
