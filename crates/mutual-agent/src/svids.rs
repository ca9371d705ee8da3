//! The agent's state between the CA and the workloads: the node's entries (asked of the CA at
//! every Workload API call and every `--entries-poll` interval, the last answer kept for when
//! the CA is away), one SVID per entry that some workload asked for, each renewed by its own
//! task at half its lifetime, and the trust bundle. Any change (a rotation, a new bundle, an
//! entry created or deleted at the CA) bumps one generation counter that every open stream
//! watches, so a stream re-sends its full state (the Workload API's and SDS's push).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mutual_enroll::EnrollError;
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;

use crate::ca::{CaClient, Entry, Svid};
use crate::selector::{self, Caller};

/// The SVID of one entry, as its task last left it.
#[derive(Clone, Debug)]
pub enum Slot {
    /// The first issuance is under way.
    Pending,
    Ready(Arc<Svid>),
    /// The first issuance failed; a later success replaces it. Once an SVID exists, a failed
    /// renewal keeps it (it is still valid) and is only logged.
    Failed(Arc<EnrollError>),
}

/// Retry delay after a failed issuance: short, so a workload waiting for a first SVID is not
/// held long, and bounded, so a CA outage is not hammered.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How often the bundle file is re-read (the node's renewer refreshes it from the CA).
const BUNDLE_POLL: Duration = Duration::from_secs(5);

pub struct Svids {
    ca: CaClient,
    entries: Mutex<Option<Vec<Entry>>>,
    slots: Mutex<HashMap<String, watch::Receiver<Slot>>>,
    generation: watch::Sender<u64>,
    bundle: watch::Sender<Arc<Vec<CertificateDer<'static>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Svids {
    /// Reads the bundle once (a missing or bad `--ca` is a configuration error) and starts
    /// watching it.
    pub fn new(ca: CaClient) -> Result<Arc<Svids>, EnrollError> {
        let roots = ca.roots()?;
        let s = Arc::new(Svids {
            ca,
            entries: Mutex::new(None),
            slots: Mutex::default(),
            generation: watch::channel(0).0,
            bundle: watch::channel(Arc::new(roots)).0,
        });
        tokio::spawn(watch_bundle(Arc::downgrade(&s)));
        Ok(s)
    }

    /// Tells every open stream that something changed.
    fn bump(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub fn bundle(&self) -> Arc<Vec<CertificateDer<'static>>> {
        self.bundle.borrow().clone()
    }

    /// The node's entries, fresh from the CA, or the last list when the CA cannot answer. A
    /// list that differs from the last one drops the SVIDs of the entries gone and bumps the
    /// streams, which then re-match their caller against it.
    pub async fn entries(&self) -> Result<Vec<Entry>, Arc<EnrollError>> {
        match self.ca.entries().await {
            Ok(list) => {
                let old = lock(&self.entries).replace(list.clone());
                if let Some(old) = old.filter(|o| *o != list) {
                    let mut slots = lock(&self.slots);
                    for gone in old.iter().filter(|o| !list.iter().any(|e| e.id == o.id)) {
                        if slots.remove(&gone.id).is_some() {
                            tracing::info!(entry = %gone.id, spiffe_id = %gone.spiffe_id, "entry no longer assigned to this node; its SVID is dropped");
                        }
                    }
                    drop(slots);
                    tracing::info!(
                        entries = list.len(),
                        "this node's registration entries changed"
                    );
                    self.bump();
                }
                Ok(list)
            }
            Err(e) => {
                let e = Arc::new(e);
                match lock(&self.entries).clone() {
                    Some(list) => {
                        tracing::warn!(error = %e, "the CA did not list this node's entries; using the last list");
                        Ok(list)
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// Asks the CA for the node's entries every `every`, so that an entry created or deleted
    /// there reaches open streams without waiting for a call or a renewal.
    pub fn poll_entries(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(s) = weak.upgrade() else { return };
                if let Err(e) = s.entries().await {
                    tracing::warn!(error = %e, "cannot list this node's entries");
                }
            }
        });
    }

    /// The entries of the last list whose selectors all match `caller`.
    pub fn matching(&self, caller: &Caller) -> Vec<Entry> {
        matching(lock(&self.entries).as_deref().unwrap_or_default(), caller)
    }

    /// The slots of the entries that match `caller` now (starting the task of a new one): what
    /// an open stream sends after each bump.
    pub fn slots_for(self: &Arc<Self>, caller: &Caller) -> Vec<watch::Receiver<Slot>> {
        self.matching(caller).iter().map(|e| self.slot(e)).collect()
    }

    fn still_assigned(&self, id: &str) -> bool {
        lock(&self.entries)
            .as_ref()
            .is_none_or(|l| l.iter().any(|e| e.id == id))
    }

    /// The slot of `entry`, starting its task on first use.
    pub fn slot(self: &Arc<Self>, entry: &Entry) -> watch::Receiver<Slot> {
        let mut slots = lock(&self.slots);
        if let Some(rx) = slots.get(&entry.id) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(Slot::Pending);
        slots.insert(entry.id.clone(), rx.clone());
        tokio::spawn(keep_fresh(Arc::downgrade(self), entry.clone(), tx));
        rx
    }
}

/// The entries of `list` whose selectors all match `caller`.
pub fn matching(list: &[Entry], caller: &Caller) -> Vec<Entry> {
    list.iter()
        .filter(|e| {
            e.parsed_selectors()
                .is_some_and(|s| selector::all_match(&s, caller))
        })
        .cloned()
        .collect()
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Issues the SVID of `entry` and renews it at half of each lifetime, until the entry is no
/// longer assigned to this node or the agent goes away.
async fn keep_fresh(svids: std::sync::Weak<Svids>, entry: Entry, tx: watch::Sender<Slot>) {
    let mut failures: u32 = 0;
    let mut first = true;
    loop {
        let Some(s) = svids.upgrade() else { return };
        if !first {
            // Re-read the node's entries: one deleted since is not renewed again.
            let _ = s.entries().await;
        }
        first = false;
        if !s.still_assigned(&entry.id) {
            // Said and bumped by entries() when it removed the slot already.
            if lock(&s.slots).remove(&entry.id).is_some() {
                tracing::info!(entry = %entry.id, spiffe_id = %entry.spiffe_id, "entry no longer assigned to this node; its SVID is dropped");
                s.bump();
            }
            return;
        }
        let wait = match s.ca.svid(&entry).await {
            Ok(svid) => {
                failures = 0;
                let now = unix_now();
                let half = ((svid.not_after - now) / 2).max(1);
                tracing::info!(entry = %entry.id, spiffe_id = %svid.spiffe_id, serial = %svid.serial,
                    not_after = svid.not_after, renew_in_secs = half, "SVID issued");
                tx.send_replace(Slot::Ready(Arc::new(svid)));
                s.bump();
                Duration::from_secs(half as u64)
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = RETRY_MIN
                    .saturating_mul(1 << failures.min(5))
                    .min(RETRY_MAX);
                tracing::warn!(entry = %entry.id, spiffe_id = %entry.spiffe_id, error = %e,
                    retry_in_secs = wait.as_secs(), "SVID issuance failed");
                if !matches!(&*tx.borrow(), Slot::Ready(_)) {
                    tx.send_replace(Slot::Failed(Arc::new(e)));
                    s.bump();
                }
                wait
            }
        };
        drop(s);
        tokio::time::sleep(wait).await;
    }
}

/// Re-reads the bundle file every few seconds; a new root set is pushed to every stream.
async fn watch_bundle(svids: std::sync::Weak<Svids>) {
    loop {
        tokio::time::sleep(BUNDLE_POLL).await;
        let Some(s) = svids.upgrade() else { return };
        match s.ca.roots() {
            Ok(roots) if roots != **s.bundle.borrow() => {
                tracing::info!(roots = roots.len(), "trust bundle changed");
                s.bundle.send_replace(Arc::new(roots));
                s.bump();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-read the trust bundle; keeping the last one")
            }
        }
    }
}
