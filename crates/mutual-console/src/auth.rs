//! Who may use the console, and the CSRF defence of its forms.
//!
//! Two ways in (docs/console.md): on the CA's TLS listener, a client certificate from this CA
//! whose identity matches an `--admin` pattern and whose inventory row is valid (not revoked,
//! not expired, the same fingerprint); or the `--ui-listen` loopback listener, where being on
//! the machine is the credential and the Host header must name a loopback address (so that a
//! web page rebinding its DNS name to 127.0.0.1 cannot read the console).
//!
//! CSRF: a random per-browser session value in a `SameSite=Strict; HttpOnly` cookie, and the
//! same value in every form (double submit); a POST whose field does not match, or whose
//! `Origin` / `Sec-Fetch-Site` says another site sent it, is refused as `csrf_failed`.

use std::net::SocketAddr;

use hyper::header::HeaderValue;
use hyper::{HeaderMap, StatusCode};
use mutual_policy::Identity;
use mutual_store::{Inventory, Status};

use crate::{refusal, unix_now, Authority, Resp};

/// How the request reached the console.
#[derive(Clone, Copy, Debug)]
pub enum Viewer<'a> {
    /// On the CA's TLS listener: the verified client certificate, if one was sent.
    Mtls(Option<&'a Identity>),
    /// On the `--ui-listen` loopback listener, from this address.
    Loopback(SocketAddr),
}

/// A person the console admitted.
#[derive(Clone, Debug)]
pub struct Admin {
    /// Who, for the audit line and the page header: the certificate's principal, or
    /// `loopback:ADDR`.
    pub principal: String,
    /// Came over TLS (the cookie gets `Secure`).
    pub tls: bool,
}

const COOKIE: &str = "mutual_csrf";

/// Lets `viewer` in or says why not (`no_client_cert`, `forbidden`, `revoked`, `expired`,
/// `unknown_ca`, `bad_host`).
pub async fn admit(
    auth: &dyn Authority,
    viewer: &Viewer<'_>,
    headers: &HeaderMap,
) -> Result<Admin, Resp> {
    match viewer {
        Viewer::Loopback(addr) => {
            let host = headers
                .get(hyper::header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !loopback_host(host) {
                return Err(refusal(
                    StatusCode::FORBIDDEN,
                    "bad_host",
                    "the loopback console answers only to Host 127.0.0.1, [::1] or localhost",
                    "-",
                ));
            }
            Ok(Admin {
                principal: format!("loopback:{addr}"),
                tls: false,
            })
        }
        Viewer::Mtls(None) => Err(refusal(
            StatusCode::FORBIDDEN,
            "no_client_cert",
            "the console needs a client certificate from this CA whose identity matches an \
             --admin pattern (or use the --ui-listen loopback listener)",
            "-",
        )),
        Viewer::Mtls(Some(id)) => {
            let who = id.principal();
            if !auth.is_admin(id) {
                tracing::info!(identity = %who, "console refused: not an admin");
                return Err(refusal(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    &format!("{who} is not an admin identity (ca serve --admin PATTERN)"),
                    &who,
                ));
            }
            let now = unix_now();
            let record = match auth.ca().store().get(&id.serial, now).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "console: inventory lookup failed");
                    return Err(refusal(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store_unavailable",
                        "the inventory did not answer; try again",
                        &who,
                    ));
                }
            };
            let refused = match record {
                None => Some((
                    "unknown_ca",
                    "the certificate is not in this CA's inventory",
                )),
                Some(r) if r.sha256 != id.sha256 => Some((
                    "unknown_ca",
                    "the certificate does not match this CA's record of its serial",
                )),
                Some(r) if r.status == Status::Revoked => {
                    Some(("revoked", "the admin certificate is revoked"))
                }
                Some(r) if r.status == Status::Expired || id.not_after <= now => {
                    Some(("expired", "the admin certificate has expired"))
                }
                Some(_) => None,
            };
            if let Some((reason, detail)) = refused {
                return Err(refusal(StatusCode::FORBIDDEN, reason, detail, &who));
            }
            Ok(Admin {
                principal: who,
                tls: true,
            })
        }
    }
}

/// `127.0.0.1[:port]`, `localhost[:port]`, `[::1][:port]`.
fn loopback_host(host: &str) -> bool {
    let h = host.trim().to_ascii_lowercase();
    let name = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        h.rsplit_once(':').map_or(h.as_str(), |(n, _)| n)
    };
    matches!(name, "localhost" | "::1")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether another site made this POST: `Sec-Fetch-Site` other than `same-origin`/`none`, or an
/// `Origin` whose host differs from `Host` (or is `null`). The CSRF token is the main check;
/// browsers that send these headers get a second one.
pub fn cross_site(headers: &HeaderMap) -> bool {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let bad_site = h("sec-fetch-site").is_some_and(|s| s != "same-origin" && s != "none");
    let bad_origin = match (h("origin"), h("host")) {
        (Some("null"), _) => true,
        (Some(o), Some(host)) => {
            let o = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .unwrap_or(o);
            !o.eq_ignore_ascii_case(host)
        }
        _ => false,
    };
    bad_site || bad_origin
}

/// The browser's CSRF session: the cookie it sent, or a new value to set.
pub struct Session {
    value: String,
    fresh: bool,
    secure: bool,
}

impl Session {
    pub fn from_headers(headers: &HeaderMap, secure: bool) -> Session {
        let sent = headers
            .get_all(hyper::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, v)| {
                *k == COOKIE && v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())
            })
            .map(|(_, v)| v.to_string());
        match sent {
            Some(value) => Session {
                value,
                fresh: false,
                secure,
            },
            None => Session {
                value: hex::encode(rand::random::<[u8; 32]>()),
                fresh: true,
                secure,
            },
        }
    }

    /// The value forms carry.
    pub fn token(&self) -> &str {
        &self.value
    }

    /// Whether a POST's field matches the cookie the browser sent (a fresh session, one the
    /// browser did not send, accepts nothing).
    pub fn accepts(&self, field: Option<&str>) -> bool {
        match field {
            Some(f) if !self.fresh => aws_lc_rs::constant_time::verify_slices_are_equal(
                f.as_bytes(),
                self.value.as_bytes(),
            )
            .is_ok(),
            _ => false,
        }
    }

    /// Adds `Set-Cookie` when the browser had no session yet.
    pub fn set_cookie(&self, mut resp: Resp) -> Resp {
        if self.fresh {
            let secure = if self.secure { "; Secure" } else { "" };
            let c = format!(
                "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict{secure}",
                self.value
            );
            if let Ok(v) = HeaderValue::from_str(&c) {
                resp.headers_mut().append(hyper::header::SET_COOKIE, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]:9",
            "127.1.2.3",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "10.0.0.1",
            "",
            "127.0.0.1.evil.example",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn csrf_session() {
        let fresh = Session::from_headers(&HeaderMap::new(), true);
        assert!(
            !fresh.accepts(Some(fresh.token())),
            "a new session accepts nothing"
        );
        let mut h = HeaderMap::new();
        let v = "ab".repeat(32);
        h.insert(
            hyper::header::COOKIE,
            format!("x=1; {COOKIE}={v}").parse().unwrap(),
        );
        let s = Session::from_headers(&h, true);
        assert!(s.accepts(Some(&v)));
        assert!(!s.accepts(Some(&"cd".repeat(32))));
        assert!(!s.accepts(None));
        let r = s.set_cookie(hyper::Response::new(http_body_util::Full::new(
            hyper::body::Bytes::new(),
        )));
        assert!(r.headers().get(hyper::header::SET_COOKIE).is_none());
    }

    #[test]
    fn cross_site_posts() {
        let mut h = HeaderMap::new();
        h.insert("host", "127.0.0.1:9443".parse().unwrap());
        h.insert("origin", "https://127.0.0.1:9443".parse().unwrap());
        h.insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert!(!cross_site(&h));
        h.insert("origin", "https://evil.example".parse().unwrap());
        assert!(cross_site(&h));
        h.insert("origin", "null".parse().unwrap());
        assert!(cross_site(&h));
        h.remove("origin");
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(cross_site(&h));
    }
}
