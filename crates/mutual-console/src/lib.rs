//! The CA's web console, served by `mutual ca serve` at `/ui/` (docs/console.md): the inventory
//! with search, filters and keyset paging, a certificate's page, revocation with a reason, a new
//! enrollment token (shown once), the CRL's status, and EST enrollments waiting for an
//! operator's approval or rejection.
//!
//! Why a crate of its own: the console is one more front door of the CA (DESIGN.md, "one CA,
//! many front doors") with its own way of authenticating a person (an admin client certificate
//! or the loopback listener), its own CSRF defence and its own attack surface (HTML). It never
//! builds a certificate or signs anything: it reads the inventory through mutual-store and asks
//! the CA server, through the narrow [`Authority`] trait, to revoke's CRL, to mint a token and to
//! tell an admin.
//!
//! HTML is rendered on the server as plain strings ([`html`]), with no script at all and a
//! Content-Security-Policy that forbids any: nothing is downloaded at build or install time.
#![forbid(unsafe_code)]

pub mod auth;
pub mod html;
mod pages;
pub mod search;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes};
use hyper::{Method, Request, Response, StatusCode};
use mutual_pki::ca::Ca;
use mutual_pki::{San, Usage};
use mutual_policy::Identity;

pub use auth::Viewer;

/// The response type of every console handler.
pub type Resp = Response<Full<Bytes>>;
/// A boxed future, so that [`Authority`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A form body larger than this is refused (413): the largest form is the token's SAN list.
pub const MAX_FORM: usize = 16 * 1024;

/// What the console asks of the CA server: the seam between this crate and mutual-ca-server,
/// which implements it on its shared state.
pub trait Authority: Send + Sync {
    /// The CA (its inventory, root and intermediate).
    fn ca(&self) -> &Ca;
    /// Whether `id` matches one of the `--admin` patterns.
    fn is_admin(&self, id: &Identity) -> bool;
    /// Signs and stores the CRL of intermediate `issuer` after a revocation of one of its
    /// certificates, so that its CRL (`/v1/crl` for the default issuer) lists it at once.
    fn publish_crl<'a>(&'a self, issuer: &'a str) -> BoxFuture<'a, Result<(), String>>;
    /// Mints a one-time enrollment token with the CA server's provisioner key.
    fn mint_token(&self, req: &TokenRequest) -> Result<MintedToken, String>;
    /// EST enrollments waiting for an operator's approval (`ca serve --est-approval manual`),
    /// oldest first: the same list as `mutual cert pending`.
    fn pending_enrollments(&self) -> BoxFuture<'_, Result<Vec<PendingEnrollment>, String>> {
        Box::pin(async move {
            use mutual_store::EstStore;
            let list = self
                .ca()
                .store()
                .est_request_list(Some("pending"))
                .await
                .map_err(|e| e.to_string())?;
            Ok(list
                .into_iter()
                .map(|r| PendingEnrollment {
                    sans: serde_json::from_str(&r.names).unwrap_or_default(),
                    id: r.id,
                    label: r.label,
                    requested_by: r.requested_by,
                    received_at: r.created_at,
                })
                .collect())
        })
    }
    /// Approves or rejects a pending EST enrollment as `by`, with the same effect as
    /// `mutual cert approve|reject ID`: one conditional update, so a request is decided once.
    fn decide_enrollment<'a>(
        &'a self,
        id: &'a str,
        approve: bool,
        by: &'a str,
    ) -> BoxFuture<'a, Result<Decided, String>> {
        Box::pin(async move {
            use mutual_store::EstStore;
            let store = self.ca().store();
            let to = if approve { "approved" } else { "rejected" };
            let moved = store
                .est_request_move(&mutual_store::EstMove::decide(id, to, by, unix_now()))
                .await
                .map_err(|e| e.to_string())?;
            if moved {
                return Ok(Decided::Done);
            }
            Ok(
                match store.est_request_get(id).await.map_err(|e| e.to_string())? {
                    Some(r) => Decided::NotPending(r.status),
                    None => Decided::Unknown,
                },
            )
        })
    }
}

/// What became of an approve/reject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decided {
    Done,
    /// Decided already (by someone else, or a second click): its status now.
    NotPending(String),
    /// No such request.
    Unknown,
}

/// A token an admin asks for in the console.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub sans: Vec<San>,
    pub cert_ttl: Duration,
    pub usage: Usage,
    /// How long the token may be used.
    pub expires: Duration,
}

/// A minted token: shown once, never logged (only its `jti` is).
pub struct MintedToken {
    pub token: String,
    pub jti: String,
    /// Unix seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for MintedToken {
    // By hand: the token is a bearer credential and must not reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("token", &"<redacted>")
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// An EST enrollment waiting for approval.
#[derive(Clone, Debug)]
pub struct PendingEnrollment {
    /// The id `mutual cert pending` shows (from the CSR).
    pub id: String,
    /// The EST label (`''`: /.well-known/est/).
    pub label: String,
    pub sans: Vec<String>,
    /// `est:bootstrap:SN`, `est:token:JTI`, `est:reenroll:SERIAL`.
    pub requested_by: String,
    /// Unix seconds.
    pub received_at: i64,
}

/// Whether `path` belongs to the console.
pub fn is_console_path(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The headers every console response carries: no caching (a page can hold a token), no
/// script of any kind, no framing, no referrer leaking a search to another site.
fn base(status: StatusCode) -> hyper::http::response::Builder {
    Response::builder()
        .status(status)
        .header("cache-control", "no-store")
        .header(
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        )
        .header("x-content-type-options", "nosniff")
        .header("x-frame-options", "DENY")
        // same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on its
        // own form posts, which the cross-site check must refuse.
        .header("referrer-policy", "same-origin")
}

fn finish(b: hyper::http::response::Builder, body: impl Into<Bytes>) -> Resp {
    b.body(Full::new(body.into()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// A refusal or error page: the status, the reason label (also in `x-mutual-reason`, for
/// scripts and tests) and one sentence a person can act on.
pub(crate) fn refusal(status: StatusCode, reason: &'static str, detail: &str, who: &str) -> Resp {
    let body = format!(
        "<h1>{}</h1><div class=\"err\"><p id=\"reason\"><code>{reason}</code></p>\
         <p id=\"detail\">{}</p></div>",
        status.as_u16(),
        html::esc(detail)
    );
    finish(
        base(status)
            .header("content-type", "text/html; charset=utf-8")
            .header("x-mutual-reason", reason),
        html::page(reason, who, &body),
    )
}

/// Serves one console request for `viewer`. Never panics on input; every refusal carries its
/// reason label. State-changing requests are POSTs with a CSRF token and are audited.
pub async fn handle<B>(auth: &dyn Authority, viewer: Viewer<'_>, req: Request<B>) -> Resp
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let admin = match auth::admit(auth, &viewer, req.headers()).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let session = auth::Session::from_headers(req.headers(), admin.tls);
    let req_host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let resp = if method == Method::POST {
        if auth::cross_site(req.headers()) {
            pages::audit_refusal(&admin, &path, "csrf_failed");
            return refusal(
                StatusCode::FORBIDDEN,
                "csrf_failed",
                "this form was sent from another site",
                &admin.principal,
            );
        }
        let form = match read_form(req).await {
            Ok(f) => f,
            Err(r) => return r,
        };
        if !session.accepts(form_value(&form, "csrf")) {
            pages::audit_refusal(&admin, &path, "csrf_failed");
            return refusal(
                StatusCode::FORBIDDEN,
                "csrf_failed",
                "the form's CSRF token is missing or does not match this browser's session: \
                 reload the page and submit the form again",
                &admin.principal,
            );
        }
        let ca_url = ca_url(admin.tls, req_host.as_deref());
        pages::post(auth, &admin, &session, &path, &form, &ca_url).await
    } else if method == Method::GET || method == Method::HEAD {
        pages::get(auth, &admin, &session, &path, &query).await
    } else {
        refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the console takes GET and POST only",
            &admin.principal,
        )
    };
    session.set_cookie(resp)
}

/// The CA's URL as the browser reached it (`https://` + the request's Host), for the `mutual
/// enroll --ca-url` line of a new token. On the loopback listener the Host is the console's own
/// port, not the API's, so the line keeps a placeholder. A Host with anything but host-name,
/// address and port characters is not repeated.
fn ca_url(tls: bool, host: Option<&str>) -> String {
    let ok = |h: &str| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
    };
    match host {
        Some(h) if tls && ok(h) => format!("https://{h}"),
        _ => "https://CA-HOST:PORT".to_string(),
    }
}

/// A `application/x-www-form-urlencoded` body of at most [`MAX_FORM`] bytes, as pairs.
async fn read_form<B>(req: Request<B>) -> Result<Vec<(String, String)>, Resp>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let ct_ok = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !ct_ok {
        return Err(refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "console forms are sent as application/x-www-form-urlencoded",
            "-",
        ));
    }
    let body = match Limited::new(req.into_body(), MAX_FORM).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Err(refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the form is larger than 16 KiB",
                "-",
            ))
        }
    };
    Ok(url::form_urlencoded::parse(&body).into_owned().collect())
}

pub(crate) fn form_value<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// What a request on the loopback listener (`--ui-listen`) may reach: the console only.
pub fn loopback_viewer(addr: SocketAddr) -> Viewer<'static> {
    Viewer::Loopback(addr)
}

#[cfg(test)]
mod tests {
    use super::ca_url;

    #[test]
    fn ca_urls() {
        assert_eq!(
            ca_url(true, Some("ca.example:9443")),
            "https://ca.example:9443"
        );
        assert_eq!(ca_url(true, Some("[::1]:9443")), "https://[::1]:9443");
        assert_eq!(
            ca_url(false, Some("127.0.0.1:9444")),
            "https://CA-HOST:PORT"
        );
        assert_eq!(ca_url(true, Some("a\"><b")), "https://CA-HOST:PORT");
        assert_eq!(ca_url(true, None), "https://CA-HOST:PORT");
    }
}
