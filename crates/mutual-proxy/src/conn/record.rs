//! The connection record: the one place a connection (TCP serve, connect) or an HTTP-mode
//! request is counted in `mutual_handshakes_total` / `mutual_http_requests_total`, logged when it
//! did not go through, and written to the audit log. A record collects what becomes known as
//! the connection goes (TLS facts, the peer, bytes) and writes exactly one audit line: when it
//! is ended, or, if a path forgets to end it (an early return, a dropped task), when it is
//! dropped, as `failed`/`other`. No connection leaves without its audit line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mutual_policy::Identity;
use mutual_tls::{Reason, TlsFacts, VerifiedPeer};
use time::OffsetDateTime;

use crate::audit::{rfc3339_ms, Audit, AuditIdentity, AuditRecord, HttpFields, Outcome};
use crate::metrics::ListenerMetrics;

/// What the records of one listener share (one per listener, not per connection).
pub struct Recorder {
    pub lm: ListenerMetrics,
    audit: Arc<Audit>,
    /// Where the listener dials, for `connect`'s log lines.
    remote: Option<String>,
}

impl Recorder {
    /// A serve listener's recorder.
    pub fn serve(lm: ListenerMetrics, audit: Arc<Audit>) -> Arc<Recorder> {
        Arc::new(Recorder {
            lm,
            audit,
            remote: None,
        })
    }

    /// A connect listener's recorder: failures are warnings that name the remote and a hint
    /// (the operator of the local client has no other way to learn why).
    pub fn connect(lm: ListenerMetrics, audit: Arc<Audit>, remote: String) -> Arc<Recorder> {
        Arc::new(Recorder {
            lm,
            audit,
            remote: Some(remote),
        })
    }

    /// Starts the record of a connection accepted now from `peer`.
    pub fn start(self: &Arc<Self>, peer: SocketAddr) -> ConnRecord {
        ConnRecord {
            rec: Arc::clone(self),
            peer,
            ts: OffsetDateTime::now_utc(),
            start: Instant::now(),
            who: None,
            tls: None,
            bytes: (0, 0),
            http: None,
            written: false,
        }
    }
}

/// Who the peer is, as far as known.
enum Who {
    Peer(Arc<VerifiedPeer>),
    Id(Box<Identity>),
}

impl Who {
    fn id(&self) -> &Identity {
        match self {
            Who::Peer(p) => &p.id,
            Who::Id(id) => id,
        }
    }
}

/// One connection's (or one HTTP request's) record; see the module documentation.
pub struct ConnRecord {
    rec: Arc<Recorder>,
    peer: SocketAddr,
    ts: OffsetDateTime,
    start: Instant,
    who: Option<Who>,
    tls: Option<TlsFacts>,
    bytes: (u64, u64),
    http: Option<HttpFields>,
    written: bool,
}

impl ConnRecord {
    /// The listener's metrics.
    pub fn metrics(&self) -> &ListenerMetrics {
        &self.rec.lm
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// When the connection was accepted (handshake duration, request duration).
    pub fn started(&self) -> Instant {
        self.start
    }

    /// The handshake finished: observed in `mutual_handshake_duration_seconds`.
    pub fn handshake_done(&self) {
        self.rec
            .lm
            .handshake_duration
            .observe(self.start.elapsed().as_secs_f64());
    }

    /// The verified peer (its negotiated TLS facts too, unless set otherwise).
    pub fn peer(&mut self, p: &Arc<VerifiedPeer>) {
        self.who = Some(Who::Peer(Arc::clone(p)));
    }

    /// A peer known only by its identity (a handshake refused by policy).
    pub fn identity(&mut self, id: Identity) {
        self.who = Some(Who::Id(Box::new(id)));
    }

    /// Shows the peer in the peer-certificate expiry gauge (once per connection).
    pub fn seen(&self) {
        if let Some(w) = &self.who {
            let id = w.id();
            self.rec
                .lm
                .observe_peer(&id.principal(), &id.serial, id.not_after);
        }
    }

    /// The connection is handed to a layer that records each of its requests (HTTP mode):
    /// this record writes no line of its own.
    pub fn hand_over(mut self) {
        self.written = true;
    }

    /// What the handshake negotiated.
    pub fn tls(&mut self, facts: TlsFacts) {
        self.tls = Some(facts);
    }

    /// Bytes from and to the client.
    pub fn bytes(&mut self, bytes_in: u64, bytes_out: u64) {
        self.bytes = (bytes_in, bytes_out);
    }

    /// Makes this the record of one HTTP request (its line carries method, path and status).
    pub fn request(&mut self, method: String, path: String) {
        self.http = Some(HttpFields {
            method,
            path,
            status: 0,
        });
    }

    /// The response status of an HTTP request.
    pub fn status(&mut self, status: u16) {
        if let Some(h) = &mut self.http {
            h.status = status;
        }
    }

    /// Counts an outcome now (an allowed connection is counted when proxying starts; its audit
    /// line follows when it ends). HTTP requests count per identity.
    pub fn count(&self, outcome: Outcome, reason: Reason) {
        match &self.http {
            Some(_) => {
                let who = self.who.as_ref().map(|w| w.id().principal());
                self.rec
                    .lm
                    .http_request(outcome, who.as_deref().unwrap_or_default());
            }
            None => self.rec.lm.outcome(outcome, reason),
        }
    }

    /// A connection that ends without going through (refused, failed) or a connect-side
    /// connection at its end: counted, logged unless allowed, audited.
    pub fn end(self, outcome: Outcome, reason: Reason, detail: &str) {
        self.count(outcome, reason);
        if outcome != Outcome::Allowed {
            self.log(outcome, reason, detail);
        }
        self.close(outcome, reason);
    }

    /// Writes the audit line of a connection already counted (see [`ConnRecord::count`]).
    pub fn close(mut self, outcome: Outcome, reason: Reason) {
        self.write(outcome, reason);
    }

    fn log(&self, outcome: Outcome, reason: Reason, detail: &str) {
        let who = self.who.as_ref().map(|w| w.id().principal());
        let who = who.as_deref().unwrap_or_default();
        let name = &self.rec.lm.name;
        let sep = if detail.is_empty() { "" } else { " " };
        if let Some(h) = &self.http {
            tracing::info!(listener = %name, peer = %self.peer, identity = %who,
                method = %h.method, path = %h.path, status = h.status,
                result = outcome.label(), reason = reason.label(), "{detail}");
        } else if let Some(remote) = &self.rec.remote {
            tracing::warn!(listener = %name, peer = %self.peer, remote = %remote,
                result = outcome.label(), reason = reason.label(),
                "{} {} Hint: {}", reason.explanation(), detail, reason.hint());
        } else {
            tracing::info!(listener = %name, peer = %self.peer, identity = %who,
                result = outcome.label(), reason = reason.label(),
                "{}{sep}{detail}", reason.explanation());
        }
    }

    fn write(&mut self, outcome: Outcome, reason: Reason) {
        self.written = true;
        if !self.rec.audit.is_enabled() {
            // No audit log: nothing to format (time stamp, address, identity copies) per
            // connection (issue 20).
            return;
        }
        let tls = self.tls.as_ref().or(match &self.who {
            Some(Who::Peer(p)) => Some(&p.tls),
            _ => None,
        });
        self.rec.audit.log(&AuditRecord {
            ts: rfc3339_ms(self.ts),
            listener: self.rec.lm.name.clone(),
            peer_addr: self.peer.to_string(),
            result: outcome,
            reason: reason.label(),
            identity: self.who.as_ref().map(|w| AuditIdentity::from(w.id())),
            tls,
            bytes_in: self.bytes.0,
            bytes_out: self.bytes.1,
            duration_ms: u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX),
            http: self.http.take(),
        });
    }
}

impl Drop for ConnRecord {
    /// A record nobody ended: the connection went away without an outcome (a request whose
    /// client left before any response, a path that returned early). `failed`/`other`, counted
    /// and audited, so the audit log still shows it.
    fn drop(&mut self) {
        if !self.written {
            let (outcome, reason) = match &self.http {
                // A request answered (status set) and then streamed: its outcome was counted
                // when the response started.
                Some(h) if h.status != 0 => (Outcome::Allowed, Reason::Ok),
                // A request dropped before any response (the client went away while the
                // backend was busy) is not counted, as before; a connection is.
                Some(_) => (Outcome::Failed, Reason::Other),
                None => {
                    self.count(Outcome::Failed, Reason::Other);
                    (Outcome::Failed, Reason::Other)
                }
            };
            self.write(outcome, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn recorder(dir: &std::path::Path) -> (Arc<Recorder>, Arc<crate::Metrics>, Arc<Audit>) {
        let metrics = Arc::new(crate::Metrics::new());
        let audit = Arc::new(Audit::open(dir.join("audit.log").to_str().unwrap()).unwrap());
        let lm = metrics.listener("l");
        (Recorder::serve(lm, Arc::clone(&audit)), metrics, audit)
    }

    fn lines(dir: &std::path::Path, audit: &Audit) -> Vec<serde_json::Value> {
        audit.flush(std::time::Duration::from_secs(5));
        std::fs::read_to_string(dir.join("audit.log"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_record_nobody_ends_is_audited_as_failed_other() {
        let dir = tempfile::tempdir().unwrap();
        let (rec, _m, audit) = recorder(dir.path());
        drop(rec.start("127.0.0.1:9".parse().unwrap()));
        let l = lines(dir.path(), &audit);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0]["result"], "failed");
        assert_eq!(l[0]["reason"], "other");
    }

    #[test]
    fn an_ended_record_writes_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let (rec, _m, audit) = recorder(dir.path());
        let mut r = rec.start("127.0.0.1:9".parse().unwrap());
        r.bytes(3, 4);
        r.end(Outcome::Failed, Reason::BackendUnavailable, "down");
        let l = lines(dir.path(), &audit);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0]["reason"], "backend_unavailable");
        assert_eq!(l[0]["bytes_in"], 3);
        assert_eq!(l[0]["bytes_out"], 4);
    }
}
