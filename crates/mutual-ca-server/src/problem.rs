//! RFC 7807 problem documents: every refusal of the online CA is one JSON object with the
//! contract's reason label, so a client (and a person reading logs) acts on one word.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};

/// A refusal: HTTP status, reason label, and a sentence for a person. The detail never holds a
/// token, key or password.
#[derive(Clone, Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub reason: &'static str,
    pub detail: String,
    /// Seconds, for `Retry-After` (429).
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status: status_of(reason),
            reason,
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub fn internal(detail: impl std::fmt::Display) -> Problem {
        // The cause goes to the log (by the caller); the client learns only that it failed.
        tracing::error!(error = %detail, "internal error");
        Problem::new(
            "internal",
            "the CA could not complete the request; see its log",
        )
    }

    /// A store failure: 503 `store_unavailable` when the database cannot be reached (a client
    /// with several replicas moves on; nothing was issued), else `internal`.
    pub fn store(e: &mutual_store::StoreError) -> Problem {
        if e.is_unavailable() {
            tracing::error!(error = %e, "the store is unavailable");
            return Problem::new(
                "store_unavailable",
                "the CA's database cannot be reached; nothing was issued, try again or another replica",
            );
        }
        Problem::internal(e)
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body = serde_json::json!({
            "type": format!("https://mutual.dev/problems/{}", self.reason),
            "title": title_of(self.reason),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "reason": self.reason,
        });
        let mut b = Response::builder()
            .status(self.status)
            .header("content-type", "application/problem+json")
            .header("cache-control", "no-store");
        if let Some(s) = self.retry_after {
            b = b.header("retry-after", s.to_string());
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        b.body(Full::new(Bytes::from(bytes)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }
}

/// The status each reason label always has (api-contract.md).
pub fn status_of(reason: &str) -> StatusCode {
    match reason {
        "bad_request" => StatusCode::BAD_REQUEST,
        "token_invalid" | "token_expired" | "token_used" | "no_client_cert" => {
            StatusCode::UNAUTHORIZED
        }
        "name_not_allowed" | "revoked" | "expired" | "unknown_ca" | "forbidden"
        | "entry_not_assigned" => StatusCode::FORBIDDEN,
        "not_found" => StatusCode::NOT_FOUND,
        "method_not_allowed" => StatusCode::METHOD_NOT_ALLOWED,
        "body_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "unsupported_media_type" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "rate_limited" => StatusCode::TOO_MANY_REQUESTS,
        "store_unavailable" | "key_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn title_of(reason: &str) -> &'static str {
    match reason {
        "bad_request" => "The request is malformed",
        "token_invalid" => "The token is not valid",
        "token_expired" => "The token has expired",
        "token_used" => "The token was already used",
        "name_not_allowed" => "A requested name is not allowed",
        "no_client_cert" => "A client certificate is required",
        "revoked" => "The certificate is revoked",
        "expired" => "The certificate has expired",
        "unknown_ca" => "The certificate is not from this CA",
        "forbidden" => "Not allowed for this identity",
        "entry_not_assigned" => "No registration entry gives this SPIFFE ID to this node",
        "not_found" => "Not found",
        "method_not_allowed" => "Method not allowed",
        "unsupported_media_type" => "The request body must be application/json",
        "body_too_large" => "The request body is too large",
        "rate_limited" => "Too many requests",
        "store_unavailable" => "The CA's database is unavailable",
        "key_unavailable" => "A CA key in a PKCS#11 token cannot sign",
        _ => "Internal error",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn statuses_follow_the_contract() {
        for (r, s) in [
            ("bad_request", 400),
            ("token_invalid", 401),
            ("token_expired", 401),
            ("token_used", 401),
            ("name_not_allowed", 403),
            ("no_client_cert", 401),
            ("revoked", 403),
            ("expired", 403),
            ("unknown_ca", 403),
            ("forbidden", 403),
            ("entry_not_assigned", 403),
            ("not_found", 404),
            ("body_too_large", 413),
            ("rate_limited", 429),
            ("internal", 500),
            ("store_unavailable", 503),
        ] {
            assert_eq!(status_of(r).as_u16(), s, "{r}");
            assert_eq!(Problem::new(r, "x").status.as_u16(), s);
        }
    }
}
