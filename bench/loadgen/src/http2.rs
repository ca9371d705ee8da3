//! The HTTP/2 client of the HTTP-mode cases (`--h2`): the same small `GET /` as HTTP/1.1, over
//! one h2 connection (ALPN `h2`), one request in flight per connection. The `h2` crate (what
//! hyper uses) rather than h2load, which cannot present a client certificate.

use std::io;

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::io::{AsyncRead, AsyncWrite};

fn err(e: h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io()
            .unwrap_or_else(|| io::Error::other("h2 I/O error"))
    } else {
        io::Error::other(format!("h2: {e}"))
    }
}

/// The h2 preface and SETTINGS exchange over an established TLS stream; the connection is
/// driven by a task of its own until the returned handle (and its clones) are dropped.
pub async fn handshake<S>(s: S) -> io::Result<SendRequest<Bytes>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = h2::client::handshake(s).await.map_err(err)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// One `GET /` and its whole response; an error unless the status is 2xx.
pub async fn get_small(send: &SendRequest<Bytes>) -> io::Result<()> {
    let mut ready = send.clone().ready().await.map_err(err)?;
    let req = ::http::Request::get("https://bench/")
        .body(())
        .map_err(io::Error::other)?;
    let (resp, _) = ready.send_request(req, true).map_err(err)?;
    let resp = resp.await.map_err(err)?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(err)?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("status {status}"),
        ))
    }
}
