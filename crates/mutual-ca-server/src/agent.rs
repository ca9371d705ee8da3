//! The online CA's side of `mutual agent` (docs/agent.md): an agent, authenticated by its node
//! certificate over mTLS, lists the registration entries assigned to its node and asks for
//! SVIDs for them. A node can only get the SPIFFE IDs an entry gives it: a request for any other
//! is refused with `entry_not_assigned` and the request line names the node, so an operator sees
//! which node tried. Issuance goes through the one transaction, [`Ca::issue`], with
//! `requested_by = agent:<node>:<entry>`.
//!
//! JWT-SVIDs (`POST /v1/agent/jwt`) follow the same rule: only for an entry of the node, signed
//! with the CA's JWT-SVID key (crate::jwt), short-lived (`ca serve --jwt-svid-ttl`, never longer
//! than the entry's TTL). A JWT-SVID is not a certificate: it is not in the inventory, and its
//! issuance is the request line plus a `JWT-SVID issued` line naming node, entry and audience.
//! The JWK set that checks them is public (`GET /v1/jwks`), as the roots are.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use mutual_pki::ca::{Ca, Csr, IssueOptions, IssueRequest, KeySource};
use mutual_pki::{PkiError, San, Usage};
use mutual_policy::Identity;
use mutual_store::{EntryStore, RegistrationEntry};
use serde::Deserialize;

use crate::jwt::JwtKeys;
use crate::problem::Problem;
use crate::reply::{self, Outcome};

/// The paths this module answers.
pub const ENTRIES: &str = "/v1/agent/entries";
pub const SVID: &str = "/v1/agent/svid";
pub const JWT: &str = "/v1/agent/jwt";
/// Public (no client certificate), routed by the API itself.
pub const JWKS: &str = "/v1/jwks";
/// Bounds on a JWT-SVID request's audience list (it is copied into the token).
const MAX_AUDIENCES: usize = 16;
const MAX_AUDIENCE_LEN: usize = 256;

pub(crate) fn is_agent_path(path: &str) -> bool {
    path == ENTRIES || path == SVID || path == JWT
}

/// What these endpoints need of the server they are mounted in (the CA, and who the peer of a
/// connection is), so that this module does not reach into `api::State` (no file loop), as
/// `ocsp::Host`.
pub(crate) trait Host: Sync {
    /// What the TLS layer learned about the peer of one connection.
    type Peer: Sync;
    fn ca(&self) -> &Ca;
    /// The identity of the peer's client certificate once checked against the inventory: this
    /// CA's, neither revoked nor expired.
    fn peer_identity(
        &self,
        peer: &Self::Peer,
        identity: Option<&Identity>,
    ) -> impl std::future::Future<Output = Result<Identity, Problem>> + Send;
    /// The JWT-SVID keys (`None`: this server signs no JWT-SVIDs).
    fn jwt(&self) -> Option<&JwtKeys>;
    /// The lifetime of a JWT-SVID (`--jwt-svid-ttl`).
    fn jwt_svid_ttl(&self) -> Duration;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtBody {
    spiffe_id: String,
    #[serde(default)]
    audience: Vec<String>,
    #[serde(default)]
    entry_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SvidBody {
    spiffe_id: String,
    csr: String,
    /// Which of the node's entries for `spiffe_id` (the agent knows it from the entry list);
    /// absent: the first one.
    #[serde(default)]
    entry_id: Option<String>,
}

/// Routes `/v1/agent/*` (already rate limited by the caller).
pub(crate) async fn route<H: Host>(
    state: &H,
    peer: &H::Peer,
    identity: Option<&Identity>,
    req: Request<Incoming>,
    method: &Method,
    path: &str,
) -> Outcome {
    let node = match node_of(state, peer, identity).await {
        Ok(n) => n,
        Err(p) => return p.into(),
    };
    match (path, method) {
        (ENTRIES, &Method::GET) => entries(state, &node).await,
        (SVID, &Method::POST) => match reply::read_json::<SvidBody>(req).await {
            Ok(b) => svid(state, &node, b).await,
            Err(p) => p.into(),
        },
        (JWT, &Method::POST) => match reply::read_json::<JwtBody>(req).await {
            Ok(b) => jwt(state, &node, b).await,
            Err(p) => p.into(),
        },
        _ => reply::method_not_allowed(),
    }
}

/// The node's SPIFFE ID, from a client certificate of this CA's inventory that is neither
/// revoked nor expired.
async fn node_of<H: Host>(
    state: &H,
    peer: &H::Peer,
    identity: Option<&Identity>,
) -> Result<String, Problem> {
    let me = state.peer_identity(peer, identity).await?;
    me.spiffe.ok_or_else(|| {
        Problem::new(
            "forbidden",
            "an agent's node certificate must carry one SPIFFE ID (URI SAN spiffe://...)",
        )
    })
}

async fn entries<H: Host>(state: &H, node: &str) -> Outcome {
    match state.ca().store().entry_list(Some(node)).await {
        Ok(list) => reply::ok(reply::json(
            StatusCode::OK,
            &serde_json::json!({ "node": node, "entries": list }),
        )),
        Err(e) => Problem::store(&e).into(),
    }
}

/// The entry of `node` that gives `spiffe_id` (the one named `entry_id`, when given).
fn assigned<'a>(
    list: &'a [RegistrationEntry],
    spiffe_id: &str,
    entry_id: Option<&str>,
) -> Option<&'a RegistrationEntry> {
    list.iter()
        .find(|e| e.spiffe_id == spiffe_id && entry_id.is_none_or(|id| e.id == id))
}

/// The node's entry that gives `spiffe_id` (the one named `entry_id`, when given), read from
/// the store; refused `entry_not_assigned` when there is none.
async fn entry_of<H: Host>(
    state: &H,
    node: &str,
    spiffe_id: &str,
    entry_id: Option<&str>,
) -> Result<RegistrationEntry, Problem> {
    let list = state
        .ca()
        .store()
        .entry_list(Some(node))
        .await
        .map_err(|e| Problem::store(&e))?;
    assigned(&list, spiffe_id, entry_id)
        .cloned()
        .ok_or_else(|| {
            Problem::new(
                "entry_not_assigned",
                format!("no registration entry gives {spiffe_id} to node {node}"),
            )
        })
}

async fn svid<H: Host>(state: &H, node: &str, b: SvidBody) -> Outcome {
    let entry = match entry_of(state, node, &b.spiffe_id, b.entry_id.as_deref()).await {
        Ok(e) => e,
        Err(p) => return p.into(),
    };
    let csr = match Csr::parse(b.csr.as_bytes()) {
        Ok(c) => c,
        Err(e) => return reply::pki_problem(e).into(),
    };
    // The CSR gives the key only; the names are the entry's. A CSR asking for another name is
    // refused rather than silently narrowed, so a confused agent is noticed.
    let want = San::Uri(entry.spiffe_id.clone());
    match csr.sans() {
        Ok(r) if r.iter().all(|s| *s == want) => {}
        Ok(r) => {
            let extra = r.iter().find(|s| **s != want).map(ToString::to_string);
            return Problem::new(
                "name_not_allowed",
                format!(
                    "the CSR asks for {}, which entry {} does not give",
                    extra.unwrap_or_default(),
                    entry.id
                ),
            )
            .into();
        }
        Err(e @ PkiError::InvalidSan { .. }) => {
            return Problem::new("name_not_allowed", e.to_string()).into()
        }
        Err(e) => return reply::pki_problem(e).into(),
    }
    let ttl = u64::try_from(entry.ttl_secs).unwrap_or(1).max(1);
    let o = IssueOptions {
        name: reply::name_for(std::slice::from_ref(&want)),
        sans: vec![want],
        usage: Usage::Both,
        ttl: state.ca().ttl_within_intermediate(Duration::from_secs(ttl)),
        requested_by: Some(format!("agent:{node}:{}", entry.id)),
        ..Default::default()
    };
    let req = IssueRequest {
        profile: o,
        key: KeySource::Csr(csr),
        token: None,
        output: None,
    };
    match state.ca().issue(req).await {
        Ok(issued) => reply::created(&issued),
        Err(e) => reply::pki_problem(e).into(),
    }
}

/// `GET /v1/jwks`: the JWK set JWT-SVIDs are checked with (public, like the roots).
pub(crate) fn jwks<H: Host>(state: &H) -> Outcome {
    match state.jwt() {
        Some(k) => reply::ok(reply::respond(
            StatusCode::OK,
            "application/jwk-set+json",
            k.jwks().to_vec(),
        )),
        None => no_jwt_key(),
    }
}

fn no_jwt_key() -> Outcome {
    Problem::new(
        "key_unavailable",
        "this CA server has no JWT-SVID key (mutual ca serve loads it at start)",
    )
    .into()
}

/// Why an audience list is refused, if it is.
fn audience_problem(audience: &[String]) -> Option<String> {
    if audience.is_empty() {
        return Some("a JWT-SVID needs at least one audience (\"audience\": [\"...\"])".into());
    }
    if audience.len() > MAX_AUDIENCES {
        return Some(format!("at most {MAX_AUDIENCES} audiences"));
    }
    audience
        .iter()
        .find(|a| a.is_empty() || a.len() > MAX_AUDIENCE_LEN)
        .map(|_| format!("an audience is empty or longer than {MAX_AUDIENCE_LEN} bytes"))
}

async fn jwt<H: Host>(state: &H, node: &str, b: JwtBody) -> Outcome {
    if let Some(why) = audience_problem(&b.audience) {
        return Problem::new("bad_request", why).into();
    }
    let Some(keys) = state.jwt() else {
        return no_jwt_key();
    };
    let entry = match entry_of(state, node, &b.spiffe_id, b.entry_id.as_deref()).await {
        Ok(e) => e,
        Err(p) => return p.into(),
    };
    let ttl = i64::try_from(state.jwt_svid_ttl().as_secs())
        .unwrap_or(i64::MAX)
        .min(entry.ttl_secs)
        .max(1);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let token = match keys.sign(&entry.spiffe_id, &b.audience, now, ttl) {
        Ok(t) => t,
        Err(e) => return Problem::new("key_unavailable", e).into(),
    };
    let expires_at = now.saturating_add(ttl);
    tracing::info!(node, entry = %entry.id, spiffe_id = %entry.spiffe_id,
        audience = %b.audience.join(","), kid = %keys.kid(), expires_at, "JWT-SVID issued");
    reply::ok(reply::json(
        StatusCode::OK,
        &serde_json::json!({
            "spiffe_id": entry.spiffe_id,
            "token": token,
            "expires_at": expires_at,
            "kid": keys.kid(),
        }),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(id: &str, spiffe_id: &str) -> RegistrationEntry {
        RegistrationEntry {
            id: id.into(),
            spiffe_id: spiffe_id.into(),
            selectors: vec!["unix:uid:0".into()],
            node: "spiffe://td/node/n1".into(),
            ttl_secs: 60,
            created_at: 0,
            created_by: "cli:test".into(),
        }
    }

    #[test]
    fn only_an_assigned_identity_is_found() {
        let list = [
            entry("e1", "spiffe://td/web"),
            entry("e2", "spiffe://td/db"),
        ];
        assert_eq!(
            assigned(&list, "spiffe://td/db", None).map(|e| e.id.as_str()),
            Some("e2")
        );
        assert_eq!(
            assigned(&list, "spiffe://td/db", Some("e2")).map(|e| e.id.as_str()),
            Some("e2")
        );
        // The entry id must give that SPIFFE ID too.
        assert!(assigned(&list, "spiffe://td/db", Some("e1")).is_none());
        assert!(assigned(&list, "spiffe://td/admin", None).is_none());
    }

    #[test]
    fn a_jwt_svid_needs_a_bounded_audience() {
        assert!(audience_problem(&[])
            .unwrap()
            .contains("at least one audience"));
        assert!(audience_problem(&["".into()]).unwrap().contains("empty"));
        assert!(audience_problem(&vec!["a".into(); MAX_AUDIENCES + 1]).is_some());
        assert!(audience_problem(&["db".into(), "x".repeat(MAX_AUDIENCE_LEN)]).is_none());
    }
}
