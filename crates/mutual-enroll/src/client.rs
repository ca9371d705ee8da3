//! One HTTPS request to the CA at a time, over a TLS configuration the caller chooses: the
//! trust-on-first-use configuration that only fetches `/v1/roots` so the pin can be checked, the
//! pinned configuration that carries the token, and the mTLS configuration that renews.
//!
//! hyper's HTTP/1.1 client connection over tokio-rustls rather than a full HTTP client: each
//! request needs its own trust anchors and client certificate, there is no connection to reuse
//! between renewals hours apart, and this keeps the TLS setup (TLS 1.3, aws-lc-rs) the same as
//! the proxy's.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::ClientConfig;
use serde::Deserialize;

use crate::EnrollError;

/// The request methods [`request`] takes (hyper's), for callers without hyper.
pub use hyper::Method;

/// How long one request (connect, handshake, answer) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read from the CA (a chain of a few certificates is a few KiB).
const MAX_BODY: usize = 1024 * 1024;

/// The CA's base URL, `https://host[:port]`, checked once.
#[derive(Clone, Debug)]
pub struct CaUrl {
    url: String,
    host: String,
    port: u16,
    authority: String,
    server_name: ServerName<'static>,
}

/// `input` for a message, with any user information (`user:password@`) masked: a password
/// pasted into a URL must not reach an error or a log line.
fn without_userinfo(input: &str) -> String {
    let start = input.find("://").map_or(0, |i| i + 3);
    let end = input[start..]
        .find(['/', '?', '#'])
        .map_or(input.len(), |i| start + i);
    match input[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &input[..start], &input[start + at..]),
        None => input.to_string(),
    }
}

impl CaUrl {
    pub fn parse(input: &str) -> Result<CaUrl, EnrollError> {
        let bad = |detail: &str| EnrollError::BadUrl {
            url: without_userinfo(input),
            detail: detail.to_string(),
        };
        let uri: Uri = input
            .trim_end_matches('/')
            .parse()
            .map_err(|_| bad("not a URL (expected https://HOST[:PORT])"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("the CA is only spoken to over https://"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad(
                "give the CA's base URL without a path (e.g. https://ca.internal:9443)",
            ));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("user information in the URL is not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(443);
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| bad("the host is neither a DNS name nor an IP address"))?;
        Ok(CaUrl {
            url: format!("https://{}", authority.as_str()),
            host,
            port,
            authority: authority.as_str().to_string(),
            server_name,
        })
    }

    /// `https://host:port` as given, for messages.
    pub fn as_str(&self) -> &str {
        &self.url
    }
}

impl std::fmt::Display for CaUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// The configuration for fetching the roots before the pin is checked: any server certificate
/// (its handshake signature still checked); see [`mutual_tls::client::first_contact`].
pub fn first_contact_config() -> Result<Arc<ClientConfig>, EnrollError> {
    Ok(mutual_tls::client::first_contact()?)
}

/// A configuration that trusts only `roots` and checks the CA's name; with `client`, presents
/// that chain and key (renewal over mTLS).
pub fn pinned_config(
    roots: &[CertificateDer<'static>],
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ClientConfig>, EnrollError> {
    use mutual_tls::client::PinnedError;
    mutual_tls::client::pinned(roots, client).map_err(|e| match e {
        PinnedError::Tls(e) => EnrollError::from(e),
        other => EnrollError::BadCertificate {
            detail: other.to_string(),
        },
    })
}

/// What came back: status, the headers we use, the body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<u64>,
    /// The Content-Type header (EST's serverkeygen answer is multipart: its boundary is here).
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// Sends one request (`json` = body for POST) and reads the whole answer, within
/// [`REQUEST_TIMEOUT`].
pub async fn request(
    url: &CaUrl,
    tls: Arc<ClientConfig>,
    method: Method,
    path: &str,
    json: Option<Vec<u8>>,
) -> Result<Response, EnrollError> {
    let body = json.map(|j| Body {
        content_type: "application/json",
        data: j,
    });
    request_with(url, tls, method, path, body, "application/json", None).await
}

/// A request body and its content type (EST sends `application/pkcs10`).
pub struct Body {
    pub content_type: &'static str,
    pub data: Vec<u8>,
}

/// [`request`] with any body type, `Accept` value and an `Authorization` header (EST's HTTP
/// Basic token; never logged).
pub async fn request_with(
    url: &CaUrl,
    tls: Arc<ClientConfig>,
    method: Method,
    path: &str,
    body: Option<Body>,
    accept: &str,
    authorization: Option<String>,
) -> Result<Response, EnrollError> {
    let exchange = async {
        let unreachable = |detail: String| EnrollError::Unreachable {
            url: url.url.clone(),
            detail,
        };
        let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(url.server_name.clone(), tcp)
            .await
            .map_err(|e| {
                if mutual_tls::classify::rustls_error_of(&e).is_some() {
                    EnrollError::Handshake {
                        url: url.url.clone(),
                        reason: mutual_tls::classify_io_error(&e).label(),
                        detail: mutual_tls::describe_io(&e),
                    }
                } else {
                    // Reset or EOF mid-handshake: the CA is going away or restarting.
                    unreachable(format!(
                        "the connection broke during the TLS handshake: {e}"
                    ))
                }
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(format!("HTTP: {e}")))?;
        let conn_task = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, url.authority.as_str())
            .header(
                hyper::header::USER_AGENT,
                concat!("mutual/", env!("CARGO_PKG_VERSION")),
            )
            .header(hyper::header::ACCEPT, accept);
        if let Some(b) = &body {
            req = req.header(hyper::header::CONTENT_TYPE, b.content_type);
        }
        if let Some(a) = &authorization {
            req = req.header(hyper::header::AUTHORIZATION, a.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(
                body.map(|b| b.data).unwrap_or_default(),
            )))
            .map_err(|e| unreachable(format!("cannot build the request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| http_error(url, &e))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let content_type = resp
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| EnrollError::BadResponse {
                status,
                detail: format!("cannot read the answer: {e}"),
            })?
            .to_bytes();
        drop(sender);
        conn_task.abort();
        Ok::<_, EnrollError>(Response {
            status,
            retry_after,
            content_type,
            body,
        })
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
        Ok(r) => r,
        Err(_) => Err(EnrollError::Timeout {
            url: url.url.clone(),
            secs: REQUEST_TIMEOUT.as_secs(),
        }),
    }
}

/// A failed exchange. With TLS 1.3 the CA judges our client certificate after our side of the
/// handshake is done, so its verdict (an alert such as unknown_ca or certificate_expired)
/// arrives while the request is in flight: report that as the handshake failure it is.
fn http_error(url: &CaUrl, e: &hyper::Error) -> EnrollError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if mutual_tls::classify::rustls_error_of(io).is_some() {
                return EnrollError::Handshake {
                    url: url.url.clone(),
                    reason: mutual_tls::classify_io_error(io).label(),
                    detail: mutual_tls::describe_io(io),
                };
            }
        }
        src = s.source();
    }
    EnrollError::Unreachable {
        url: url.url.clone(),
        detail: format!("HTTP: {e}"),
    }
}

/// The answer to `/v1/sign` and `/v1/renew`.
#[derive(Debug, Deserialize)]
pub struct Issued {
    pub certificate_chain: String,
    pub serial: String,
    pub not_after: String,
    #[serde(default)]
    pub not_before: String,
}

/// RFC 9457 problem details, as the CA sends them.
#[derive(Debug, Deserialize, Default)]
struct Problem {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

/// Turns an answer into the issued certificate, or the CA's refusal with its reason label.
pub fn issued(resp: Response) -> Result<Issued, EnrollError> {
    if resp.status == 201 || resp.status == 200 {
        return serde_json::from_slice(&resp.body).map_err(|e| EnrollError::BadResponse {
            status: resp.status,
            detail: format!("not the expected JSON: {e}"),
        });
    }
    Err(refusal(resp))
}

/// GETs `path` (JSON accepted); any answer but 200 is the CA's refusal ([`refusal`]).
pub async fn get(url: &CaUrl, tls: Arc<ClientConfig>, path: &str) -> Result<Response, EnrollError> {
    ok(request(url, tls, Method::GET, path, None).await?)
}

/// `resp` if it is a 200, else the CA's refusal ([`refusal`]).
pub fn ok(resp: Response) -> Result<Response, EnrollError> {
    if resp.status == 200 {
        Ok(resp)
    } else {
        Err(refusal(resp))
    }
}

/// The error for a non-success answer.
pub fn refusal(resp: Response) -> EnrollError {
    match serde_json::from_slice::<Problem>(&resp.body) {
        Ok(p) if p.reason.is_some() => EnrollError::Refused {
            status: resp.status,
            reason: p.reason.unwrap_or_default(),
            detail: p.detail.or(p.title).unwrap_or_default(),
            retry_after: resp.retry_after,
        },
        _ if resp.status == 429 || resp.status >= 500 => EnrollError::Refused {
            status: resp.status,
            reason: if resp.status == 429 {
                "rate_limited".into()
            } else {
                "internal".into()
            },
            detail: String::from_utf8_lossy(&resp.body)
                .chars()
                .take(200)
                .collect(),
            retry_after: resp.retry_after,
        },
        _ => EnrollError::BadResponse {
            status: resp.status,
            detail: String::from_utf8_lossy(&resp.body)
                .chars()
                .take(200)
                .collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn urls() {
        let u = CaUrl::parse("https://ca.internal:9443/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("ca.internal", 9443));
        assert_eq!(u.as_str(), "https://ca.internal:9443");
        let u = CaUrl::parse("https://127.0.0.1").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 443));
        let u = CaUrl::parse("https://[::1]:9443").unwrap();
        assert_eq!(u.host, "::1");
        for bad in [
            "http://ca:9443",
            "ca:9443",
            "https://ca:9443/v1/sign",
            "https://u:p@ca:9443",
            "",
        ] {
            assert!(
                matches!(CaUrl::parse(bad), Err(EnrollError::BadUrl { .. })),
                "{bad}"
            );
        }
        // A password in a URL never reaches the message.
        for (input, shown) in [
            ("https://admin:s3cret@ca:9443", "https://***@ca:9443"),
            ("https://s3cret@ca:9443/x?y", "https://***@ca:9443/x?y"),
            ("http://a:b:s3cret@ca", "http://***@ca"),
        ] {
            let e = CaUrl::parse(input).unwrap_err().to_string();
            assert!(e.contains(shown) && !e.contains("s3cret"), "{e}");
        }
        assert_eq!(without_userinfo("https://ca/a@b"), "https://ca/a@b");
    }

    #[test]
    fn problems_become_refusals_with_their_label() {
        let r = Response {
            status: 401,
            retry_after: None,
            content_type: None,
            body: Bytes::from_static(
                br#"{"type":"https://mutual.dev/problems/token_used","title":"t","status":401,"detail":"d","reason":"token_used"}"#,
            ),
        };
        match issued(r).unwrap_err() {
            EnrollError::Refused { status, reason, .. } => {
                assert_eq!((status, reason.as_str()), (401, "token_used"))
            }
            e => panic!("{e}"),
        }
        let r = Response {
            status: 429,
            retry_after: Some(3),
            content_type: None,
            body: Bytes::from_static(br#"{"reason":"rate_limited"}"#),
        };
        let e = issued(r).unwrap_err();
        assert!(e.is_transient());
        let r = Response {
            status: 502,
            retry_after: None,
            content_type: None,
            body: Bytes::from_static(b"<html>bad gateway</html>"),
        };
        assert!(issued(r).unwrap_err().is_transient());
    }
}
