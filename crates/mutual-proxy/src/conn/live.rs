//! Live re-authorization: the registry of a serve listener's established connections (who the
//! peer is, its verified chain, and a way to end the connection), so that a reload that changes
//! the policy or the CRLs (policy file, CRL file, config edit) re-checks every open connection
//! and closes exactly those whose peer is no longer allowed. Without it a revoked client keeps
//! its connection for as long as it likes (ghostunnel's behaviour); Linkerd re-checks too.
//!
//! The registry is touched once when a connection starts proxying and once when it ends (one
//! mutex, a map insert/remove). A re-check takes a snapshot under the lock and verifies outside
//! it, so opening and closing connections never waits for chain validation.
//!
//! Each entry is one small [`Signal`] shared by the registry and the connection's task (a
//! `tokio::sync::watch` channel was ~360 bytes per connection, most of it eight `Notify`s that
//! spread many receivers: here there are one or two; issue 20, memory per idle connection).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use mutual_policy::Identity;
use mutual_tls::{Reason, VerifiedPeer};
use tokio::sync::Notify;

use crate::material::Material;
use crate::metrics::ListenerMetrics;

/// Why an established connection is being ended from outside its task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Termination {
    /// The peer is no longer allowed (`policy_denied`) or no longer valid (`revoked`,
    /// `expired`, `unknown_ca` after a CA change...): close now, audit as denied.
    Unauthorized { reason: Reason, detail: String },
    /// The listener was removed or moved and its drain timeout ran out.
    Drained,
}

/// How one connection is told to end: set at most once, by the registry.
#[derive(Default)]
pub(crate) struct Signal {
    termination: Mutex<Option<Termination>>,
    set: Notify,
}

impl Signal {
    /// Sets the termination unless one is set already; whether it did.
    pub(crate) fn send(&self, t: Termination) -> bool {
        let Ok(mut slot) = self.termination.lock() else {
            return false;
        };
        if slot.is_some() {
            return false;
        }
        *slot = Some(t);
        drop(slot);
        self.set.notify_waiters();
        true
    }

    fn get(&self) -> Option<Termination> {
        self.termination.lock().ok().and_then(|v| v.clone())
    }

    fn is_set(&self) -> bool {
        self.termination.lock().map_or(true, |v| v.is_some())
    }
}

/// A handle a connection task waits on; resolves when the connection must end.
#[derive(Clone)]
pub struct Ended(Arc<Signal>);

impl Ended {
    /// Resolves with the termination once one is signalled; never resolves otherwise (also
    /// after the registry entry is gone), so it can sit in a `select!` next to the pump.
    pub async fn wait(&mut self) -> Termination {
        loop {
            // Registered before looking, so a termination set in between still wakes us.
            let notified = self.0.set.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(t) = self.0.get() {
                return t;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
impl Ended {
    /// A handle not in any registry, and the signal that ends it.
    pub(crate) fn for_test() -> (Arc<Signal>, Ended) {
        let s = Arc::new(Signal::default());
        (Arc::clone(&s), Ended(s))
    }
}

/// Waits on an optional handle: a connection that is not registered (it was never allowed) is
/// never ended from outside, so this stays pending, ready for a `select!` arm.
pub async fn wait_opt(ended: Option<&mut Ended>) -> Termination {
    match ended {
        Some(e) => e.wait().await,
        None => std::future::pending().await,
    }
}

/// Resolves at `not_after` (Unix seconds; at once when already past); pending for `None`.
/// The `--end-on-peer-expiry` timer: with it a connection ends when its peer's certificate
/// does, whatever reloads happen meanwhile.
pub async fn peer_expiry(not_after: Option<i64>) {
    let Some(t) = not_after else {
        return std::future::pending().await;
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let left = u64::try_from(t.saturating_sub(now)).unwrap_or(0);
    tokio::time::sleep(std::time::Duration::from_secs(left)).await;
}

struct Entry {
    peer: Arc<VerifiedPeer>,
    tx: Arc<Signal>,
}

/// The open connections of one listener (shared by the generations of a listener whose config
/// block changed but whose address did not, so a config edit re-checks them too).
pub struct Registry {
    conns: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
    /// The material connections must satisfy now; a connection registered after a publish is
    /// checked against it (closes the gap between its own decision and the sweep).
    latest: ArcSwapOption<Material>,
    lm: ListenerMetrics,
}

/// Keeps a connection in the registry while alive; dropping it removes the entry.
pub struct Registration {
    reg: Arc<Registry>,
    key: u64,
    pub ended: Ended,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut m) = self.reg.conns.lock() {
            m.remove(&self.key);
        }
    }
}

/// Whether a peer passes `m` ([`crate::authz::recheck`]); `None`: still allowed.
pub fn verdict(m: &Material, peer: &VerifiedPeer) -> Option<Termination> {
    crate::authz::recheck(m, peer)
        .err()
        .map(|(reason, detail)| Termination::Unauthorized { reason, detail })
}

impl Registry {
    pub fn new(lm: ListenerMetrics) -> Arc<Registry> {
        Arc::new(Registry {
            conns: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            latest: ArcSwapOption::empty(),
            lm,
        })
    }

    /// Number of connections registered now.
    pub fn len(&self) -> usize {
        self.conns.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds an allowed connection (decided with `used`). If newer material was published since,
    /// the connection is checked against it at once.
    pub fn register(
        self: &Arc<Self>,
        peer: &Arc<VerifiedPeer>,
        used: &Arc<Material>,
    ) -> Registration {
        let tx = Arc::new(Signal::default());
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.conns.lock() {
            m.insert(
                key,
                Entry {
                    peer: Arc::clone(peer),
                    tx: Arc::clone(&tx),
                },
            );
        }
        if let Some(latest) = self.latest.load_full() {
            if !Arc::ptr_eq(&latest, used) {
                if let Some(t) = verdict(&latest, peer) {
                    self.terminate(&tx, &peer.id, t);
                }
            }
        }
        Registration {
            reg: Arc::clone(self),
            key,
            ended: Ended(tx),
        }
    }

    /// Records the material new connections are decided with, without re-checking anyone.
    pub fn set_latest(&self, m: Arc<Material>) {
        self.latest.store(Some(m));
    }

    /// Publishes new material and re-checks every open connection against it; returns how many
    /// were told to close. Blocking work (chain validation): call it off the async workers.
    pub fn publish(&self, m: Arc<Material>) -> usize {
        self.latest.store(Some(Arc::clone(&m)));
        let snapshot: Vec<_> = match self.conns.lock() {
            Ok(map) => map
                .values()
                .filter(|e| !e.tx.is_set())
                .map(|e| (Arc::clone(&e.peer), Arc::clone(&e.tx)))
                .collect(),
            Err(_) => return 0,
        };
        let mut closed = 0;
        for (peer, tx) in snapshot {
            if let Some(t) = verdict(&m, &peer) {
                if self.terminate(&tx, &peer.id, t) {
                    closed += 1;
                }
            }
        }
        closed
    }

    /// Ends every open connection (drain timeout of a removed or moved listener).
    pub fn drain_all(&self) -> usize {
        let txs: Vec<_> = match self.conns.lock() {
            Ok(map) => map.values().map(|e| Arc::clone(&e.tx)).collect(),
            Err(_) => return 0,
        };
        txs.iter()
            .filter(|tx| tx.send(Termination::Drained))
            .count()
    }

    /// Signals one connection (once) and counts it.
    fn terminate(&self, tx: &Signal, id: &Identity, t: Termination) -> bool {
        let Termination::Unauthorized { reason, detail } = &t else {
            return false;
        };
        let (reason, detail) = (*reason, detail.clone());
        let sent = tx.send(t);
        if sent {
            self.lm.authz_terminated(reason);
            tracing::info!(
                listener = %self.lm.name,
                identity = %id.principal(),
                reason = reason.label(),
                "closing an established connection: its peer is no longer allowed. {detail}"
            );
        }
        sent
    }
}
