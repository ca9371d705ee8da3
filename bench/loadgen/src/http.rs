//! The smallest HTTP/1.1 that the benchmark needs, on both sides.
//!
//! The contenders proxy bytes (layer 4), so the load generator and the backend only need to agree
//! with each other: one request line, `Content-Length` bodies, keep-alive. Hand-rolled so that
//! neither side adds a framework's cost to the figures; every proxy sees the same bytes.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Heads larger than this are refused, so a confused peer cannot make us buffer forever.
const MAX_HEAD: usize = 16 * 1024;
/// Chunk size for bulk bodies: large enough that syscalls and TLS records are not the cost.
pub const CHUNK: usize = 64 * 1024;

/// The small request every mode sends.
pub const GET_SMALL: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
/// The small response the backend sends to it.
pub const OK_SMALL: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Index just past the blank line that ends a head, if the buffer holds one.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// What the backend needs from a request head.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub content_length: u64,
    pub close: bool,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

fn headers(head: &str) -> impl Iterator<Item = (String, &str)> {
    head.split("\r\n").skip(1).filter_map(|l| {
        let (k, v) = l.split_once(':')?;
        Some((k.trim().to_ascii_lowercase(), v.trim()))
    })
}

fn content_length(head: &str) -> io::Result<u64> {
    match headers(head).find(|(k, _)| k == "content-length") {
        Some((_, v)) => v.parse().map_err(|_| bad("bad content-length")),
        None => Ok(0),
    }
}

pub fn parse_request_head(head: &[u8]) -> io::Result<RequestHead> {
    let text = std::str::from_utf8(head).map_err(|_| bad("request head is not UTF-8"))?;
    let line = text.split("\r\n").next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("bad request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(bad("not HTTP/1.x"));
    }
    let close = headers(text).any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close"))
        || version == "HTTP/1.0";
    Ok(RequestHead {
        method: method.to_string(),
        path: path.to_string(),
        content_length: content_length(text)?,
        close,
    })
}

/// The first value of header `name` (any letter case) in a head, if present.
pub fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(head).ok()?;
    let name = name.to_ascii_lowercase();
    headers(text).find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// The answer of a backend that requires the client's identity and did not get it.
pub const MISSING_IDENTITY: &[u8] =
    b"HTTP/1.1 403 Forbidden\r\nContent-Length: 16\r\n\r\nno identity seen";

/// (status, content length) of a response head.
pub fn parse_response_head(head: &[u8]) -> io::Result<(u16, u64)> {
    let text = std::str::from_utf8(head).map_err(|_| bad("response head is not UTF-8"))?;
    let line = text.split("\r\n").next().unwrap_or_default();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    Ok((status, content_length(text)?))
}

/// Reads until `buf` holds a whole head; returns its length, or `None` on a clean EOF before any
/// byte of a new head.
pub async fn read_head<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> io::Result<Option<usize>> {
    let mut scratch = [0u8; 4096];
    loop {
        if let Some(end) = head_end(buf) {
            return Ok(Some(end));
        }
        if buf.len() > MAX_HEAD {
            return Err(bad("head too large"));
        }
        let n = s.read(&mut scratch).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside a head",
                ))
            };
        }
        buf.extend_from_slice(&scratch[..n]);
    }
}

/// Reads and discards `len` body bytes, of which the first ones may already be in `buf` after
/// `start`; leaves in `buf` only what follows the body.
pub async fn discard_body<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    start: usize,
    len: u64,
) -> io::Result<()> {
    let have = (buf.len() - start) as u64;
    if have >= len {
        // `len <= have`, which is a usize, so the cast cannot truncate.
        buf.drain(..start + len as usize);
        return Ok(());
    }
    buf.clear();
    let mut left = len - have;
    let mut scratch = vec![0u8; CHUNK];
    while left > 0 {
        let want = scratch
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = s.read(&mut scratch[..want]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "EOF inside a body",
            ));
        }
        left -= n as u64;
    }
    Ok(())
}

/// Reads one whole response (head and body) and returns its status.
pub async fn read_response<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> io::Result<u16> {
    let end = read_head(s, buf).await?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        )
    })?;
    let (status, len) = parse_response_head(&buf[..end])?;
    discard_body(s, buf, end, len).await?;
    Ok(status)
}

/// The request `get_small` sends instead of `GET /` when `loadgen requests --post` set one (the
/// online CA's `POST /v1/renew`, say). Set once at start.
static CUSTOM_REQUEST: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// Makes every `get_small` send `POST path` with a JSON `body` (first call wins).
pub fn set_post(path: &str, body: &str) {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = CUSTOM_REQUEST.set(req.into_bytes());
}

/// One small request (GET /, or the `--post` one) and its response; an error unless the status
/// is 2xx.
pub async fn get_small<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    let req = CUSTOM_REQUEST.get().map_or(GET_SMALL, Vec::as_slice);
    s.write_all(req).await?;
    s.flush().await?;
    match read_response(s, buf).await? {
        200..=299 => Ok(()),
        other => Err(bad(&format!("status {other}"))),
    }
}

/// Writes `len` zero bytes in large chunks, stopping early (returning the bytes written) when
/// `keep_going` says so.
pub async fn write_zeros<S: AsyncWrite + Unpin>(
    s: &mut S,
    len: u64,
    mut keep_going: impl FnMut() -> bool,
) -> io::Result<u64> {
    let chunk = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < len {
        if !keep_going() {
            break;
        }
        let n = chunk
            .len()
            .min(usize::try_from(len - done).unwrap_or(usize::MAX));
        s.write_all(&chunk[..n]).await?;
        done += n as u64;
    }
    s.flush().await?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn request_heads() {
        let h = b"POST /up HTTP/1.1\r\nHost: b\r\ncontent-length: 1048576\r\n\r\n";
        assert_eq!(head_end(h), Some(h.len()));
        let r = parse_request_head(h).unwrap();
        assert_eq!(
            r,
            RequestHead {
                method: "POST".into(),
                path: "/up".into(),
                content_length: 1 << 20,
                close: false
            }
        );
        let c = parse_request_head(b"GET /down/5 HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        assert!(c.close);
        assert!(parse_request_head(b"GARBAGE\r\n\r\n").is_err());
        assert!(parse_request_head(b"GET / SPDY/3\r\n\r\n").is_err());
    }

    #[test]
    fn header_lookup() {
        let h = b"GET / HTTP/1.1\r\nX-Client-Cert: -----BEGIN%20CERT\r\nHost: b\r\n\r\n";
        assert_eq!(header(h, "x-client-cert"), Some("-----BEGIN%20CERT"));
        assert_eq!(header(h, "X-Forwarded-Client-Cert"), None);
        assert_eq!(parse_response_head(MISSING_IDENTITY).unwrap(), (403, 16));
    }

    #[test]
    fn response_heads() {
        assert_eq!(parse_response_head(OK_SMALL).unwrap(), (200, 2));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n"), None);
        assert!(parse_response_head(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn small_exchange_over_a_pipe() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut buf = Vec::new();
            let end = read_head(&mut b, &mut buf).await.unwrap().unwrap();
            let req = parse_request_head(&buf[..end]).unwrap();
            assert_eq!(req.path, "/");
            b.write_all(OK_SMALL).await.unwrap();
        });
        let mut buf = Vec::new();
        get_small(&mut a, &mut buf).await.unwrap();
        assert!(buf.is_empty());
        server.await.unwrap();
    }
}
