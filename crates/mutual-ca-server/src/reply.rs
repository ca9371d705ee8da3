//! The replies of the online CA's HTTP front doors and the JSON bodies they read: one
//! [`Outcome`] per request (the response and what its log line says), the body limits, and the
//! mapping of PKI refusals onto the contract's labels. A module of its own so that the handlers
//! living beside `api` (agent.rs) use the same replies without importing `api` (no file loop).

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use mutual_pki::ca::Issued;
use mutual_pki::{PkiError, San};
use mutual_policy::human::rfc3339;

use crate::problem::Problem;

/// Request bodies larger than this are refused with 413 (api-contract.md).
pub const MAX_BODY: usize = 64 * 1024;
/// An oversized body up to this size is read and discarded so the client gets its 413.
const MAX_DRAIN: usize = 1024 * 1024;

pub(crate) type Resp = Response<Full<Bytes>>;

pub(crate) fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .body(Full::new(body.into()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

pub(crate) fn json(status: StatusCode, v: &serde_json::Value) -> Resp {
    respond(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

/// The outcome of one request, for the log line.
pub(crate) struct Outcome {
    pub(crate) resp: Resp,
    pub(crate) reason: &'static str,
    /// Serial issued or revoked, if any.
    pub(crate) serial: Option<String>,
    /// Why it was refused (the problem's detail: never a secret).
    pub(crate) detail: Option<String>,
}

impl From<Problem> for Outcome {
    fn from(p: Problem) -> Outcome {
        let reason = p.reason;
        let detail = Some(p.detail.clone());
        Outcome {
            resp: p.into_response(),
            reason,
            serial: None,
            detail,
        }
    }
}

pub(crate) fn ok(resp: Resp) -> Outcome {
    Outcome {
        resp,
        reason: "ok",
        serial: None,
        detail: None,
    }
}

pub(crate) fn method_not_allowed() -> Outcome {
    Problem::new(
        "method_not_allowed",
        "this endpoint does not take that method",
    )
    .into()
}

/// Refuses (415) a request whose body is not declared `application/json` (parameters such as
/// `charset=utf-8` allowed). Only a request with no body at all may omit the header: a renewal
/// without a CSR sends nothing. Checked before the body is read and before any token is spent,
/// so a form post or a text/plain request from a browser cannot spend one.
fn json_content_type(req: &Request<Incoming>) -> Result<(), Problem> {
    let headers = req.headers();
    let declared_empty = headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0");
    let has_body = !declared_empty
        && (headers.contains_key(hyper::header::CONTENT_LENGTH)
            || headers.contains_key(hyper::header::TRANSFER_ENCODING));
    match headers.get(hyper::header::CONTENT_TYPE) {
        None if !has_body => Ok(()),
        None => Err(Problem::new(
            "unsupported_media_type",
            "send the body with Content-Type: application/json",
        )),
        Some(v) => {
            let essence = v
                .to_str()
                .ok()
                .and_then(|t| t.split(';').next())
                .map(|t| t.trim().to_ascii_lowercase());
            if essence.as_deref() == Some("application/json") {
                Ok(())
            } else {
                Err(Problem::new(
                    "unsupported_media_type",
                    format!(
                        "Content-Type {:?} is not accepted; send application/json",
                        String::from_utf8_lossy(v.as_bytes())
                    ),
                ))
            }
        }
    }
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes.
///
/// An oversized body announced by Content-Length up to [`MAX_DRAIN`] (and any oversized
/// chunked body) is read to its end and thrown away before the 413 goes out: a client still
/// sending when the server closes would see a broken pipe instead of the answer. Beyond
/// `MAX_DRAIN` the connection is simply closed after the 413.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Problem> {
    json_content_type(&req)?;
    let too_large = || {
        Problem::new(
            "body_too_large",
            format!("request bodies are limited to {MAX_BODY} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_DRAIN as u64) {
        return Err(too_large());
    }
    let mut body = req.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut seen: usize = 0;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|_| Problem::new("bad_request", "could not read the request body"))?;
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen > MAX_DRAIN {
                return Err(too_large());
            }
            if seen <= MAX_BODY {
                buf.extend_from_slice(&data);
            }
        }
    }
    if seen > MAX_BODY {
        return Err(too_large());
    }
    // An empty body reads as `{}` (a renewal without a CSR may send nothing at all).
    let text: &[u8] = if buf.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &buf
    };
    serde_json::from_slice(text)
        .map_err(|e| Problem::new("bad_request", format!("invalid JSON body: {e}")))
}

pub(crate) fn issued_body(i: &Issued) -> serde_json::Value {
    serde_json::json!({
        "certificate_chain": i.chain_pem,
        "serial": i.serial_hex,
        "issuer": i.issuer,
        "not_before": rfc3339(i.not_before),
        "not_after": rfc3339(i.not_after),
    })
}

pub(crate) fn created(i: &Issued) -> Outcome {
    Outcome {
        resp: json(StatusCode::CREATED, &issued_body(i)),
        reason: "ok",
        serial: Some(i.serial_hex.clone()),
        detail: None,
    }
}

/// Maps a PKI refusal of a request onto the contract's labels.
pub(crate) fn pki_problem(e: PkiError) -> Problem {
    if let Some((reason, detail)) = e.refusal() {
        return Problem::new(reason, detail);
    }
    match e {
        PkiError::Store(e) => Problem::store(&e),
        other => Problem::internal(other),
    }
}

/// The CN for a certificate issued from a token: the first SAN's value, or for a long URI its
/// last path segment (a CN is at most 64 characters).
pub(crate) fn name_for(sans: &[San]) -> String {
    let Some(first) = sans.first() else {
        return "mutual".into();
    };
    let v = first.value();
    if v.len() <= 64 {
        return v;
    }
    let tail = v.rsplit('/').find(|s| !s.is_empty()).unwrap_or("mutual");
    tail.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name_for(&["dns:a.internal".parse().unwrap()]), "a.internal");
        let long = format!("uri:spiffe://example.org/{}/web", "x".repeat(70));
        assert_eq!(name_for(&[long.parse().unwrap()]), "web");
    }
}
