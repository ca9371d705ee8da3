//! The SPIFFE Workload API service (proto/workload.proto) over the agent's state: the security
//! header check, attestation of the caller by its socket credentials, selection of the entries
//! whose selectors all match it, and the streams. Each stream message is the caller's full
//! current state (every SVID with its key, the bundle), sent again whenever it changes.
//! JWT-SVIDs come from the CA through [`crate::jwt`], cached per entry and audience set; the
//! JWT bundle is the CA's JWK set, pushed when it changes; validation is against that set.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::ca::Entry;
use crate::jwt::Jwt;
use crate::proto::spiffe_workload_api_server::SpiffeWorkloadApi;
use crate::proto::{
    JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
    ValidateJwtsvidRequest, ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse,
    X509svid, X509svidRequest, X509svidResponse,
};
use crate::selector::Caller;
use crate::svids::{Slot, Svids};

/// The header every Workload API call must carry (the spec's guard against SSRF: a browser or
/// a proxied request cannot set it).
pub const SECURITY_HEADER: &str = "workload.spiffe.io";
/// What a call without it gets, with `InvalidArgument` (the words SPIRE uses).
pub const MISSING_HEADER: &str = "security header missing from request";
/// What a caller no entry matches gets, with `PermissionDenied` (SPIRE's words).
pub const NO_IDENTITY: &str = "no identity issued";
/// What a JWT call without an audience gets, with `InvalidArgument` (SPIRE's words).
pub const NO_AUDIENCE: &str = "audience must be specified";
/// What ValidateJWTSVID without a token gets, with `InvalidArgument` (SPIRE's words).
pub const NO_SVID: &str = "svid must be specified";
/// How long a call waits for a first SVID from the CA.
const FIRST_ISSUE: Duration = Duration::from_secs(60);

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub struct Workload {
    pub svids: Arc<Svids>,
    /// The node's trust domain (`spiffe://example.org`), the key of the bundle maps.
    pub trust_domain: String,
    pub jwt: Arc<Jwt>,
}

fn ca_unavailable(call: &str, e: &mutual_enroll::EnrollError) -> Status {
    tracing::warn!(call, error = %e, "the CA did not answer");
    Status::unavailable(format!("the agent cannot reach the CA: {e}"))
}

fn check_header<T>(req: &Request<T>) -> Result<(), Status> {
    match req.metadata().get(SECURITY_HEADER).map(|v| v.to_str()) {
        Some(Ok("true")) => Ok(()),
        _ => Err(Status::invalid_argument(MISSING_HEADER)),
    }
}

/// The caller, from the credentials the kernel attached to its connection.
fn caller_of<T>(req: &Request<T>) -> Result<Caller, Status> {
    let cred = req
        .extensions()
        .get::<crate::authority::PeerInfo>()
        .and_then(|i| i.cred)
        .ok_or_else(|| Status::permission_denied("the caller's credentials cannot be read"))?;
    Ok(crate::attest::caller(cred.pid(), cred.uid(), cred.gid()))
}

fn describe(c: &Caller) -> String {
    format!(
        "pid={} uid={} gid={} exe={} sha256={}",
        c.pid.map_or_else(|| "-".into(), |p| p.to_string()),
        c.uid,
        c.gid,
        c.exe
            .as_ref()
            .map_or_else(|| "-".into(), |p| p.display().to_string()),
        c.sha256.map_or_else(|| "-".into(), hex::encode)
    )
}

fn concat(certs: &[rustls_pki_types::CertificateDer<'static>]) -> Vec<u8> {
    certs
        .iter()
        .flat_map(|c| c.as_ref().iter().copied())
        .collect()
}

impl Workload {
    /// Header check, attestation, and the entries that match the caller (none: refused).
    async fn entries_for<T>(&self, req: &Request<T>, call: &str) -> Result<Vec<Entry>, Status> {
        check_header(req)?;
        Ok(self.attested(req, call).await?.1)
    }

    /// Attestation, and the entries that match the caller (none: refused). Without the header
    /// check: Envoy's SDS calls (crate::sds) do not carry it.
    pub(crate) async fn attested<T>(
        &self,
        req: &Request<T>,
        call: &str,
    ) -> Result<(Caller, Vec<Entry>), Status> {
        let caller = caller_of(req)?;
        let all = self.svids.entries().await.map_err(|e| {
            tracing::warn!(call, error = %e, "cannot list this node's entries");
            Status::unavailable(format!("the agent cannot reach the CA: {e}"))
        })?;
        let mine = crate::svids::matching(&all, &caller);
        if mine.is_empty() {
            tracing::warn!(call, caller = %describe(&caller), result = "denied", "no entry matches the caller");
            return Err(Status::permission_denied(NO_IDENTITY));
        }
        tracing::info!(call, caller = %describe(&caller), result = "allowed",
            spiffe_ids = %mine.iter().map(|e| e.spiffe_id.as_str()).collect::<Vec<_>>().join(","),
            "workload attested");
        Ok((caller, mine))
    }

    /// The CA's JWK set (fetched at the first call).
    async fn jwks(&self, call: &str) -> Result<Arc<crate::jwt::Jwks>, Status> {
        self.jwt
            .bundle()
            .await
            .map_err(|e| ca_unavailable(call, &e))
    }

    /// Every entry's SVID once its first issuance is over; refuses when none could be issued.
    pub(crate) async fn first_svids(
        &self,
        entries: &[Entry],
    ) -> Result<Vec<tokio::sync::watch::Receiver<Slot>>, Status> {
        let mut rxs = Vec::with_capacity(entries.len());
        for e in entries {
            let mut rx = self.svids.slot(e);
            let settled =
                tokio::time::timeout(FIRST_ISSUE, rx.wait_for(|s| !matches!(s, Slot::Pending)))
                    .await
                    .is_ok();
            if !settled {
                return Err(Status::unavailable("the CA did not issue the SVID in time"));
            }
            rxs.push(rx);
        }
        let ready = rxs.iter().any(|r| matches!(&*r.borrow(), Slot::Ready(_)));
        if !ready {
            let why = rxs
                .iter()
                .find_map(|r| match &*r.borrow() {
                    Slot::Failed(e) => Some(e.to_string()),
                    _ => None,
                })
                .unwrap_or_default();
            return Err(Status::unavailable(format!(
                "no SVID could be issued: {why}"
            )));
        }
        Ok(rxs)
    }
}

/// The current X.509 state of a stream, and what identifies it (serials and bundle).
fn x509_state(
    rxs: &[tokio::sync::watch::Receiver<Slot>],
    bundle: &[u8],
) -> (X509svidResponse, Vec<String>) {
    let mut svids = Vec::new();
    let mut serials = Vec::new();
    for rx in rxs {
        if let Slot::Ready(s) = &*rx.borrow() {
            serials.push(s.serial.clone());
            svids.push(X509svid {
                spiffe_id: s.spiffe_id.clone(),
                x509_svid: concat(&s.chain),
                x509_svid_key: s.key.to_vec(),
                bundle: bundle.to_vec(),
                hint: String::new(),
            });
        }
    }
    serials.push(hex::encode(bundle));
    (
        X509svidResponse {
            svids,
            crl: Vec::new(),
            federated_bundles: HashMap::new(),
        },
        serials,
    )
}

/// Sends `state()` now and again whenever `gen` (the agent's generation, the JWK set) moves and
/// the state differs, until the client goes away.
fn push<T, G, F>(gen: tokio::sync::watch::Receiver<G>, mut state: F) -> Stream_<T>
where
    T: Send + 'static,
    G: Send + Sync + 'static,
    F: FnMut() -> (T, Vec<String>) + Send + 'static,
{
    push_or_end(gen, move || Ok(Some(state())))
}

/// [`push`] for a state that may have nothing to send yet (`Ok(None)`) or end the stream with
/// a status (`Err`).
fn push_or_end<T, G, F>(mut gen: tokio::sync::watch::Receiver<G>, mut state: F) -> Stream_<T>
where
    T: Send + 'static,
    G: Send + Sync + 'static,
    F: FnMut() -> Result<Option<(T, Vec<String>)>, Status> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut last: Option<Vec<String>> = None;
        loop {
            gen.borrow_and_update();
            match state() {
                Ok(Some((msg, key))) if last.as_ref() != Some(&key) => {
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                    last = Some(key);
                }
                Ok(_) => {}
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            }
            tokio::select! {
                changed = gen.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for Workload {
    type FetchX509SVIDStream = Stream_<X509svidResponse>;
    type FetchX509BundlesStream = Stream_<X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream_<JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        check_header(&req)?;
        let (caller, entries) = self.attested(&req, "FetchX509SVID").await?;
        self.first_svids(&entries).await?;
        let svids = self.svids.clone();
        let gen = svids.subscribe();
        // The caller is matched again at every change: an entry created for it at the CA adds
        // an SVID to the open stream, a deleted one drops its SVID, the last one ends the
        // stream with PermissionDenied (as SPIRE's agent does).
        Ok(Response::new(push_or_end(gen, move || {
            let rxs = svids.slots_for(&caller);
            if rxs.is_empty() {
                return Err(Status::permission_denied(NO_IDENTITY));
            }
            let (msg, key) = x509_state(&rxs, &concat(&svids.bundle()));
            // A new entry's first SVID still pending: its issuance bumps again.
            Ok((!msg.svids.is_empty()).then_some((msg, key)))
        })))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        // Bundles are public, but the spec asks for attestation here too: an unknown caller
        // learns nothing about this node.
        self.entries_for(&req, "FetchX509Bundles").await?;
        let svids = self.svids.clone();
        let td = self.trust_domain.clone();
        Ok(Response::new(push(svids.subscribe(), move || {
            let b = concat(&svids.bundle());
            let key = vec![hex::encode(&b)];
            (
                X509BundlesResponse {
                    crl: Vec::new(),
                    bundles: HashMap::from([(td.clone(), b)]),
                },
                key,
            )
        })))
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        check_header(&req)?;
        let audience = req.get_ref().audience.clone();
        if audience.is_empty() || audience.iter().any(String::is_empty) {
            return Err(Status::invalid_argument(NO_AUDIENCE));
        }
        let entries = self.entries_for(&req, "FetchJWTSVID").await?;
        let wanted = req.get_ref().spiffe_id.as_str();
        let mut chosen: Vec<&Entry> = Vec::new();
        for e in &entries {
            let want = wanted.is_empty() || e.spiffe_id == wanted;
            if want && chosen.iter().all(|c| c.spiffe_id != e.spiffe_id) {
                chosen.push(e);
            }
        }
        if chosen.is_empty() {
            tracing::warn!(
                call = "FetchJWTSVID",
                spiffe_id = wanted,
                result = "denied",
                "the caller asked for an identity none of its entries gives"
            );
            return Err(Status::permission_denied(NO_IDENTITY));
        }
        let mut svids = Vec::with_capacity(chosen.len());
        for e in chosen {
            let token = self
                .jwt
                .svid(e, &audience)
                .await
                .map_err(|err| ca_unavailable("FetchJWTSVID", &err))?;
            svids.push(Jwtsvid {
                spiffe_id: e.spiffe_id.clone(),
                svid: token,
                hint: String::new(),
            });
        }
        Ok(Response::new(JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        req: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        self.entries_for(&req, "FetchJWTBundles").await?;
        let first = self.jwks("FetchJWTBundles").await?;
        let rx = self.jwt.subscribe();
        let current = rx.clone();
        let td = self.trust_domain.clone();
        Ok(Response::new(push(rx, move || {
            let raw = current
                .borrow()
                .as_ref()
                .map_or_else(|| first.raw.clone(), |j| j.raw.clone());
            let key = vec![hex::encode(&raw)];
            (
                JwtBundlesResponse {
                    bundles: HashMap::from([(td.clone(), raw)]),
                },
                key,
            )
        })))
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        check_header(&req)?;
        let r = req.get_ref();
        if r.audience.is_empty() {
            return Err(Status::invalid_argument(NO_AUDIENCE));
        }
        if r.svid.is_empty() {
            return Err(Status::invalid_argument(NO_SVID));
        }
        self.entries_for(&req, "ValidateJWTSVID").await?;
        let jwks = self.jwks("ValidateJWTSVID").await?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        match crate::jwt::validate(&r.svid, &r.audience, &self.trust_domain, &jwks, now) {
            Ok(v) => Ok(Response::new(ValidateJwtsvidResponse {
                spiffe_id: v.spiffe_id,
                claims: Some(crate::jwt::to_struct(&v.claims)),
            })),
            Err(why) => {
                tracing::info!(call = "ValidateJWTSVID", audience = %r.audience, result = "invalid", reason = %why,
                    "JWT-SVID refused");
                Err(Status::invalid_argument(why))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_security_header_must_be_true() {
        let mut r = Request::new(());
        assert_eq!(
            check_header(&r).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        r.metadata_mut()
            .insert(SECURITY_HEADER, "false".parse().unwrap());
        assert_eq!(check_header(&r).unwrap_err().message(), MISSING_HEADER);
        r.metadata_mut()
            .insert(SECURITY_HEADER, "true".parse().unwrap());
        assert!(check_header(&r).is_ok());
    }
}
