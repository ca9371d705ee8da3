//! Envoy's Secret Discovery Service (`envoy.service.secret.v3.SecretDiscoveryService`) on the
//! agent's socket, next to the Workload API, so an Envoy sidecar gets its certificate and
//! validation context from the agent as it would from SPIRE's (docs/agent.md, "Envoy SDS").
//!
//! Callers are attested exactly as Workload API callers are ([`Workload::attested`]); Envoy
//! sends no `workload.spiffe.io` header, and SPIRE asks none for SDS. Resource names follow
//! SPIRE's agent: a SPIFFE ID names that SVID as a `tls_certificate`; `ROOTCA` and the trust
//! domain (`spiffe://TD`) name the bundle as a `validation_context`; `default` names the
//! caller's first SVID; no names at all asks for everything (every SVID, and `ROOTCA`). A name
//! the caller is not entitled to is left out of the response and logged.
//!
//! StreamSecrets follows the xDS state-of-the-world protocol: a response goes out for each new
//! subscription (a request whose names differ from the last one) and on each change of what it
//! names (a rotation, a new bundle, an entry created or deleted at the CA); `version_info` names
//! the content (it changes with every rotation) and `nonce` is fresh on every response. A
//! request carrying the last nonce and the same names is an ACK, or a NACK when it has
//! `error_detail`: a NACK is logged and not answered (the same content would be refused
//! again; the next change is sent as usual). A request with an older nonce is stale and
//! ignored. DeltaSecrets answers `Unimplemented` (Envoy uses StreamSecrets unless told
//! `api_type: DELTA_GRPC`).

use std::pin::Pin;
use std::sync::Arc;

use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use zeroize::Zeroizing;

use crate::selector::Caller;
use crate::svids::{Slot, Svids};
use crate::workload::Workload;

use crate::proto::envoy::config::core::v3::{data_source, DataSource};
use crate::proto::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, Secret, TlsCertificate,
};
use crate::proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
pub use crate::proto::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};

/// The type URL of every resource this service sends (and the one requests name).
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// The bundle's resource name (SPIRE's `default_bundle_name`).
pub const ROOTCA: &str = "ROOTCA";
/// The caller's first SVID's resource name (SPIRE's `default_svid_name`).
pub const DEFAULT_SVID: &str = "default";

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub struct Sds {
    pub workload: Arc<Workload>,
}

fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    // Encoding DER we hold as PEM cannot fail (the label is ours).
    mutual_pki::pem_encode(label, der)
        .map(String::into_bytes)
        .unwrap_or_default()
}

fn inline(bytes: Vec<u8>) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes)),
    })
}

/// What one response holds: the resources, the names nobody gave the caller, and its version.
struct Answer {
    resources: Vec<prost_types::Any>,
    missing: Vec<String>,
    version: String,
}

/// The resources `names` ask for, from the caller's SVIDs (`ready`, in entry order) and the
/// bundle.
fn answer(
    names: &[String],
    trust_domain: &str,
    ready: &[Arc<crate::ca::Svid>],
    bundle: &[rustls_pki_types::CertificateDer<'static>],
) -> Answer {
    let all = names.is_empty();
    let mut secrets = Vec::new();
    let mut missing = Vec::new();
    // What the version is made of: resource names, serials, the bundle; never a key.
    let mut version = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let bundle_pem: Vec<u8> = bundle
        .iter()
        .flat_map(|c| pem("CERTIFICATE", c.as_ref()))
        .collect();
    let validation = |name: &str| Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: inline(bundle_pem.clone()),
            },
        )),
    };
    let certificate = |name: &str, s: &crate::ca::Svid| {
        let key = Zeroizing::new(pem("PRIVATE KEY", &s.key));
        Secret {
            name: name.to_string(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: inline(
                    s.chain
                        .iter()
                        .flat_map(|c| pem("CERTIFICATE", c.as_ref()))
                        .collect(),
                ),
                private_key: inline(key.to_vec()),
            })),
        }
    };
    let wanted: Vec<&str> = if all {
        std::iter::once(ROOTCA)
            .chain(ready.iter().map(|s| s.spiffe_id.as_str()))
            .collect()
    } else {
        names.iter().map(String::as_str).collect()
    };
    for name in wanted {
        let found = if name == ROOTCA || name == trust_domain {
            version.update(bundle_pem.as_slice());
            Some(validation(name))
        } else {
            let svid = if name == DEFAULT_SVID {
                ready.first()
            } else {
                ready.iter().find(|s| s.spiffe_id == name)
            };
            svid.map(|s| {
                version.update(s.serial.as_bytes());
                certificate(name, s)
            })
        };
        version.update(name.as_bytes());
        version.update(&[0]);
        match found {
            Some(secret) => secrets.push(prost_types::Any {
                type_url: SECRET_TYPE.to_string(),
                value: secret.encode_to_vec(),
            }),
            None => missing.push(name.to_string()),
        }
    }
    Answer {
        resources: secrets,
        missing,
        version: hex::encode(&version.finish().as_ref()[..8]),
    }
}

/// A fresh response nonce: 64 random bits in hex.
fn nonce() -> Result<String, Status> {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| Status::internal("the random source failed"))?;
    Ok(hex::encode(b))
}

/// The caller's current SVIDs (those issued; a new entry's first one may still be pending).
fn ready(svids: &Arc<Svids>, caller: &Caller) -> Vec<Arc<crate::ca::Svid>> {
    svids
        .slots_for(caller)
        .iter()
        .filter_map(|rx| match &*rx.borrow() {
            Slot::Ready(s) => Some(Arc::clone(s)),
            _ => None,
        })
        .collect()
}

/// One SDS stream's protocol state.
struct StreamState {
    svids: Arc<Svids>,
    trust_domain: String,
    caller: Caller,
    sub: Subscription,
}

/// The xDS side of one stream: what the client asked for and what it was last sent.
#[derive(Default)]
struct Subscription {
    /// Envoy's node id, for the log lines.
    node: String,
    /// The names of the current subscription; `None` before the first request.
    names: Option<Vec<String>>,
    /// The version and nonce of the last response sent.
    version: Option<String>,
    nonce: Option<String>,
}

impl StreamState {
    /// What to send now: `None` without a subscription, or when nothing changed since the
    /// last response (unless `force`, a new subscription).
    fn response(&mut self, force: bool) -> Result<Option<DiscoveryResponse>, Status> {
        let sub = &mut self.sub;
        let Some(names) = &sub.names else {
            return Ok(None);
        };
        let a = answer(
            names,
            &self.trust_domain,
            &ready(&self.svids, &self.caller),
            &self.svids.bundle(),
        );
        if !force && sub.version.as_deref() == Some(a.version.as_str()) {
            return Ok(None);
        }
        if force && !a.missing.is_empty() {
            tracing::warn!(call = "StreamSecrets", envoy_node = %sub.node, missing = %a.missing.join(","),
                "SDS resources the caller is not entitled to (or not issued yet) are left out");
        }
        let n = nonce()?;
        tracing::info!(call = "StreamSecrets", envoy_node = %sub.node, version = %a.version, nonce = %n,
            resources = a.resources.len(), "SDS update sent");
        sub.version = Some(a.version.clone());
        sub.nonce = Some(n.clone());
        Ok(Some(DiscoveryResponse {
            version_info: a.version,
            resources: a.resources,
            canary: false,
            type_url: SECRET_TYPE.to_string(),
            nonce: n,
        }))
    }
}

impl Subscription {
    /// Takes one request; whether it opens a new subscription (to be answered now).
    fn request(&mut self, r: DiscoveryRequest) -> bool {
        if let Some(n) = &r.node {
            self.node = n.id.clone();
        }
        if !r.type_url.is_empty() && r.type_url != SECRET_TYPE {
            tracing::warn!(call = "StreamSecrets", envoy_node = %self.node, type_url = %r.type_url,
                "SDS request for another resource type ignored");
            return false;
        }
        if let Some(sent) = &self.nonce {
            if r.response_nonce != *sent {
                tracing::debug!(call = "StreamSecrets", envoy_node = %self.node, nonce = %r.response_nonce,
                    "stale SDS request (not the last nonce) ignored");
                return false;
            }
            if let Some(e) = &r.error_detail {
                tracing::warn!(call = "StreamSecrets", envoy_node = %self.node, nonce = %r.response_nonce,
                    rejected_version = %self.version.as_deref().unwrap_or(""), applied_version = %r.version_info,
                    code = e.code, error = %e.message, "SDS update rejected by the client (NACK); not resent");
            } else {
                tracing::info!(call = "StreamSecrets", envoy_node = %self.node, version = %r.version_info,
                    nonce = %r.response_nonce, "SDS update acknowledged");
            }
        }
        let mut names = r.resource_names;
        names.sort();
        names.dedup();
        if self.names.as_ref() == Some(&names) {
            return false;
        }
        self.names = Some(names);
        true
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type StreamSecretsStream = Stream_<DiscoveryResponse>;
    type DeltaSecretsStream = Stream_<DeltaDiscoveryResponse>;

    async fn stream_secrets(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let (caller, entries) = self.workload.attested(&req, "StreamSecrets").await?;
        self.workload.first_svids(&entries).await?;
        let svids = Arc::clone(&self.workload.svids);
        let mut gen: watch::Receiver<u64> = svids.subscribe();
        let mut st = StreamState {
            svids,
            trust_domain: self.workload.trust_domain.clone(),
            caller,
            sub: Subscription::default(),
        };
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let force = tokio::select! {
                    r = inbound.message() => match r {
                        Ok(Some(r)) => st.sub.request(r),
                        Ok(None) | Err(_) => return,
                    },
                    changed = gen.changed() => {
                        if changed.is_err() { return }
                        false
                    }
                    () = tx.closed() => return,
                };
                gen.borrow_and_update();
                let out = match st.response(force) {
                    Ok(None) => continue,
                    Ok(Some(m)) => Ok(m),
                    Err(e) => Err(e),
                };
                let end = out.is_err();
                if tx.send(out).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch_secrets(
        &self,
        req: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let (caller, entries) = self.workload.attested(&req, "FetchSecrets").await?;
        self.workload.first_svids(&entries).await?;
        let r = req.into_inner();
        let mut names = r.resource_names;
        names.sort();
        names.dedup();
        let svids = &self.workload.svids;
        let a = answer(
            &names,
            &self.workload.trust_domain,
            &ready(svids, &caller),
            &svids.bundle(),
        );
        let node = r.node.map(|n| n.id).unwrap_or_default();
        if !a.missing.is_empty() {
            tracing::warn!(call = "FetchSecrets", envoy_node = %node, missing = %a.missing.join(","),
                "SDS resources the caller is not entitled to (or not issued yet) are left out");
        }
        Ok(Response::new(DiscoveryResponse {
            version_info: a.version,
            resources: a.resources,
            canary: false,
            type_url: SECRET_TYPE.to_string(),
            nonce: nonce()?,
        }))
    }

    async fn delta_secrets(
        &self,
        _req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "DeltaSecrets is not served by this agent; use StreamSecrets (Envoy's default SDS api_type GRPC)",
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::proto::google::rpc::Status as RpcStatus;

    fn req(names: &[&str], nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            resource_names: names.iter().map(ToString::to_string).collect(),
            type_url: SECRET_TYPE.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    #[test]
    fn requests_are_subscriptions_acks_nacks_or_stale() {
        let mut sub = Subscription::default();
        // The first request subscribes (names in any order, repeated or not).
        assert!(sub.request(req(&["ROOTCA", "spiffe://td/a", "ROOTCA"], "")));
        assert_eq!(sub.names.as_deref().unwrap(), ["ROOTCA", "spiffe://td/a"]);
        sub.version = Some("v1".into());
        sub.nonce = Some("n1".into());
        // ACK: the last nonce, the same names.
        assert!(!sub.request(req(&["spiffe://td/a", "ROOTCA"], "n1")));
        // NACK: not answered either.
        let mut nack = req(&["ROOTCA", "spiffe://td/a"], "n1");
        nack.error_detail = Some(RpcStatus {
            code: 3,
            message: "bad".into(),
            details: vec![],
        });
        assert!(!sub.request(nack));
        // Stale: an older nonce, whatever it asks.
        assert!(!sub.request(req(&["default"], "n0")));
        assert_eq!(sub.names.as_deref().unwrap(), ["ROOTCA", "spiffe://td/a"]);
        // Another resource type: ignored.
        let mut other = req(&["x"], "n1");
        other.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster".into();
        assert!(!sub.request(other));
        // New names with the last nonce: a new subscription, answered now.
        assert!(sub.request(req(&["default"], "n1")));
        assert_eq!(sub.names.as_deref().unwrap(), ["default"]);
    }

    fn svid(id: &str, serial: &str) -> Arc<crate::ca::Svid> {
        Arc::new(crate::ca::Svid {
            entry_id: "e".into(),
            spiffe_id: id.into(),
            chain: vec![rustls_pki_types::CertificateDer::from(vec![0x30, 0])],
            key: Zeroizing::new(vec![1, 2, 3]),
            serial: serial.into(),
            not_after: 0,
        })
    }

    fn names(a: &Answer) -> Vec<String> {
        a.resources
            .iter()
            .map(|r| Secret::decode(r.value.as_slice()).unwrap().name)
            .collect()
    }

    #[test]
    fn names_resolve_as_spire_names_them() {
        let bundle = [rustls_pki_types::CertificateDer::from(vec![0x30, 0])];
        let ready = [svid("spiffe://td/a", "01"), svid("spiffe://td/b", "02")];
        let ask = |n: &[&str]| {
            let n: Vec<String> = n.iter().map(ToString::to_string).collect();
            answer(&n, "spiffe://td", &ready, &bundle)
        };
        let a = ask(&["spiffe://td/b", "spiffe://td", "default", "spiffe://td/c"]);
        assert_eq!(names(&a), ["spiffe://td/b", "spiffe://td", "default"]);
        assert_eq!(a.missing, ["spiffe://td/c"]);
        let default = Secret::decode(a.resources[2].value.as_slice()).unwrap();
        let Some(secret::Type::TlsCertificate(t)) = default.r#type else {
            panic!("default is a tls_certificate")
        };
        let Some(data_source::Specifier::InlineBytes(key)) = t.private_key.unwrap().specifier
        else {
            panic!("inline key")
        };
        assert!(String::from_utf8(key)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        // No names: ROOTCA and every SVID.
        assert_eq!(
            names(&ask(&[])),
            ["ROOTCA", "spiffe://td/a", "spiffe://td/b"]
        );
        // The version follows the serials: a rotation changes it, nothing else does.
        let v = ask(&["spiffe://td/a"]).version;
        assert_eq!(ask(&["spiffe://td/a"]).version, v);
        let rotated = [svid("spiffe://td/a", "03")];
        let n = vec!["spiffe://td/a".to_string()];
        assert_ne!(answer(&n, "spiffe://td", &rotated, &bundle).version, v);
    }
}
