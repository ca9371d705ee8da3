//! EST refusals in the CA's one vocabulary (DESIGN.md: `token_used`, `name_not_allowed`,
//! `revoked`, `expired`, `unknown_ca`, ...), sent as the same `application/problem+json` body
//! the native API sends, so a device's log and the CA's log say the same word.
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};

/// One refusal: reason label, a sentence for a person (never a token or key), and the HTTP
/// extras some refusals carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EstError {
    pub reason: &'static str,
    pub detail: String,
    /// Seconds for `Retry-After` (429, 202 pending).
    pub retry_after: Option<u64>,
}

impl EstError {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> EstError {
        EstError {
            reason,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// The cause goes to the log; the device learns only that the CA failed.
    pub fn internal(cause: impl std::fmt::Display) -> EstError {
        tracing::error!(error = %cause, "EST internal error");
        EstError::new(
            "internal",
            "the CA could not complete the request; see its log",
        )
    }

    /// A store failure: `store_unavailable` (503, nothing issued) or `internal`.
    pub fn store(e: &mutual_store::StoreError) -> EstError {
        if e.is_unavailable() {
            tracing::error!(error = %e, "the store is unavailable");
            return EstError::new(
                "store_unavailable",
                "the CA's database cannot be reached; nothing was issued, try again",
            );
        }
        EstError::internal(e)
    }

    /// The CA's refusal of an issuance, by type (as the native API maps it).
    pub fn from_pki(e: mutual_pki::PkiError) -> EstError {
        use mutual_pki::PkiError;
        // EST maps a device to the names it may have (docs/est.md): a SAN it cannot have is a
        // name refused, not a malformed request as on the native API.
        if let PkiError::InvalidSan { .. } = e {
            return EstError::new("name_not_allowed", e.to_string());
        }
        if let Some((reason, detail)) = e.refusal() {
            return EstError::new(reason, detail);
        }
        match e {
            PkiError::Store(e) => EstError::store(&e),
            other => EstError::internal(other),
        }
    }

    /// The HTTP status of each label (the native API's, docs/api-contract.md).
    pub fn status(&self) -> StatusCode {
        match self.reason {
            "bad_request" | "malformed" => StatusCode::BAD_REQUEST,
            "token_invalid" | "token_expired" | "token_used" | "no_client_cert" => {
                StatusCode::UNAUTHORIZED
            }
            "name_not_allowed" | "revoked" | "expired" | "not_yet_valid" | "unknown_ca"
            | "forbidden" | "rejected" | "device_denied" | "bad_signature" | "wrong_purpose"
            | "weak_key" => StatusCode::FORBIDDEN,
            "pending" => StatusCode::ACCEPTED,
            "key_not_kept" => StatusCode::GONE,
            "not_found" => StatusCode::NOT_FOUND,
            "method_not_allowed" => StatusCode::METHOD_NOT_ALLOWED,
            "body_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
            "unsupported_media_type" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "rate_limited" => StatusCode::TOO_MANY_REQUESTS,
            "not_implemented" => StatusCode::NOT_IMPLEMENTED,
            "store_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        let body = serde_json::json!({
            "type": format!("https://mutual.dev/problems/{}", self.reason),
            "title": self.reason,
            "status": status.as_u16(),
            "detail": self.detail,
            "reason": self.reason,
        });
        let mut b = Response::builder()
            .status(status)
            .header("content-type", "application/problem+json")
            .header("cache-control", "no-store");
        if let Some(s) = self.retry_after {
            b = b.header("retry-after", s.to_string());
        }
        if status == StatusCode::UNAUTHORIZED {
            // RFC 7030 §3.2.3: a device without a certificate may answer with HTTP Basic.
            b = b.header("www-authenticate", "Basic realm=\"mutual EST\"");
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        b.body(Full::new(Bytes::from(bytes)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }
}

impl std::fmt::Display for EstError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl std::error::Error for EstError {}
