//! ACME problem documents (RFC 8555 §6.7): every refusal is `application/problem+json` with a
//! `urn:ietf:params:acme:error:*` type, which clients such as certbot and lego act on (a
//! `badNonce` is retried with the fresh nonce, the others are shown to the user).

use hyper::StatusCode;

/// One ACME error: its type (the part after `urn:ietf:params:acme:error:`), the HTTP status and
/// a sentence for a person (never a key or a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeError {
    pub kind: &'static str,
    pub status: StatusCode,
    pub detail: String,
    /// A `Location` to send with the problem (keyChange's 409 names the account holding the key).
    pub location: Option<String>,
    /// Seconds for a `Retry-After` header (`rateLimited`).
    pub retry_after: Option<i64>,
}

impl AcmeError {
    pub fn new(kind: &'static str, detail: impl Into<String>) -> AcmeError {
        AcmeError {
            kind,
            status: status_of(kind),
            detail: detail.into(),
            location: None,
            retry_after: None,
        }
    }

    pub fn malformed(detail: impl Into<String>) -> AcmeError {
        AcmeError::new("malformed", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> AcmeError {
        AcmeError::new("unauthorized", detail)
    }

    /// An internal failure: the cause goes to the log, the client learns only that it failed.
    pub fn internal(cause: impl std::fmt::Display) -> AcmeError {
        tracing::error!(error = %cause, "ACME internal error");
        AcmeError::new(
            "serverInternal",
            "the CA could not complete the request; see its log",
        )
    }

    pub fn urn(&self) -> String {
        format!("urn:ietf:params:acme:error:{}", self.kind)
    }

    /// The problem document (also the `error` of a failed challenge or order).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "type": self.urn(),
            "detail": self.detail,
            "status": self.status.as_u16(),
        })
    }
}

impl From<mutual_store::StoreError> for AcmeError {
    fn from(e: mutual_store::StoreError) -> AcmeError {
        AcmeError::internal(e)
    }
}

/// The HTTP status of each error type (as boulder and pebble answer them).
pub fn status_of(kind: &str) -> StatusCode {
    match kind {
        "unauthorized" | "orderNotReady" | "incorrectResponse" | "rejectedIdentifier" => {
            StatusCode::FORBIDDEN
        }
        "serverInternal" => StatusCode::INTERNAL_SERVER_ERROR,
        "rateLimited" => StatusCode::TOO_MANY_REQUESTS,
        "alreadyReplaced" => StatusCode::CONFLICT,
        "accountDoesNotExist"
        | "badNonce"
        | "malformed"
        | "badCSR"
        | "badSignatureAlgorithm"
        | "unsupportedIdentifier"
        | "alreadyRevoked"
        | "badRevocationReason"
        | "invalidContact"
        | "unsupportedContact"
        | "externalAccountRequired"
        | "connection"
        | "tls"
        | "dns" => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_REQUEST,
    }
}
