//! `GET /v1/roots`: the trust bundle with its version (docs/lifecycle.md). PEM by default (what
//! it always served, whatever the Accept header: enroll clients send `Accept: application/json`
//! and read PEM), JSON with `?format=json`; the version is in the `Mutual-Trust-Bundle-Version`
//! header of both, so a client can compare before parsing.
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};

use crate::problem::Problem;

/// The header that carries the bundle's version.
pub const VERSION_HEADER: &str = "mutual-trust-bundle-version";

pub(crate) fn roots(
    ca_dir: &std::path::Path,
    query: Option<&str>,
) -> Result<Response<Full<Bytes>>, Problem> {
    let b = mutual_pki::ca::trust_bundle(ca_dir).map_err(Problem::internal)?;
    let wants_json = query.is_some_and(|q| q.split('&').any(|kv| kv == "format=json"));
    let (ctype, body) = if wants_json {
        let v = serde_json::json!({
            "version": b.version,
            "roots_pem": b.pem,
            "sha256": b.sha256,
        });
        (
            "application/json",
            serde_json::to_vec(&v).unwrap_or_default(),
        )
    } else {
        ("application/x-pem-file", b.pem.into_bytes())
    };
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", ctype)
        .header("cache-control", "no-store")
        .header(VERSION_HEADER, b.version.to_string())
        .header("etag", format!("\"roots-{}\"", b.version))
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
    Ok(resp)
}
