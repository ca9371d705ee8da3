//! Group commit of issuance rows: concurrent issuances are recorded in one transaction, so
//! they share one commit (one fsync of the SQLite WAL with `synchronous=FULL`, one WAL flush on
//! PostgreSQL) instead of paying one each.
//!
//! The design is a database's WAL group commit: one writer task per store, fed by a bounded
//! queue. Each caller queues its row and waits; the writer takes whatever is queued when it is
//! free (up to [`MAX_GROUP`] rows), writes the rows in one transaction and answers every waiter
//! after the commit returned. There is no timer: at concurrency 1 a row is written as soon as
//! it is queued (one extra task hop), and under load the group is whatever arrived while the
//! previous commit was in flight.
//!
//! What a waiter is told:
//! - `Ok(())` only after the transaction holding its row committed (durable);
//! - its own refusal when only its row is refused: a token already spent
//!   ([`StoreError::TokenUsed`], the token insert writes nothing, the group goes on) or a serial
//!   already recorded ([`StoreError::DuplicateSerial`]: the transaction is rolled back and
//!   written again without that row);
//! - when the transaction itself fails (a statement error other than those, the connection
//!   lost, the commit refused), every waiter of that group gets the error
//!   ([`StoreError::GroupCommit`] when there were several) and none of its rows exists.
//!
//! A caller that stopped waiting before its group was written (a cancelled request) is
//! skipped: its certificate was never handed out. When the writer is gone (its runtime shut
//! down), a caller records its row directly, one transaction of its own.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::backend::db;
use crate::{Inventory, NewCert, PgStore, SqliteStore, Store, StoreError};

/// Issuances that may wait for the writer; more wait to be queued (back-pressure).
pub const QUEUE_CAPACITY: usize = 4096;
/// The most rows one transaction records.
pub const MAX_GROUP: usize = 512;

/// One row to record, and the one-time token that paid for it (spent in the same transaction):
/// `(jti, now)`.
#[derive(Clone, Debug)]
pub struct GroupItem {
    pub cert: NewCert,
    pub token: Option<(String, i64)>,
}

struct Job {
    item: GroupItem,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The group committer of one store (see the module doc). Cloning shares the writer.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Job>,
    store: Store,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Shared {
    groups: AtomicU64,
    rows: AtomicU64,
    failed_groups: AtomicU64,
    largest: AtomicU64,
    gate: Mutex<Option<Arc<CommitGate>>>,
}

/// What the writer did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Transactions committed.
    pub groups: u64,
    /// Rows they recorded.
    pub rows: u64,
    /// Transactions that failed (every waiter of each failed).
    pub failed_groups: u64,
    /// The most rows one committed transaction recorded.
    pub largest: u64,
}

impl GroupCommit {
    /// Starts the writer task on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(store: Store) -> GroupCommit {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let shared = Arc::new(Shared::default());
        tokio::spawn(writer(store.clone(), rx, shared.clone()));
        GroupCommit {
            queue,
            store,
            shared,
        }
    }

    /// Records `item`, returning once its transaction committed (or failed).
    pub async fn record(&self, item: GroupItem) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        match self.queue.send(Job { item, done }).await {
            Ok(()) => answer.await.unwrap_or_else(|_| {
                Err(StoreError::GroupCommit {
                    rows: 1,
                    detail: "the commit writer stopped before it answered".into(),
                    unavailable: true,
                })
            }),
            // No writer any more (its runtime is gone): a transaction of our own.
            Err(mpsc::error::SendError(job)) => record_alone(&self.store, &job.item).await,
        }
    }

    /// Counts so far.
    pub fn stats(&self) -> GroupStats {
        let s = &self.shared;
        GroupStats {
            groups: s.groups.load(Ordering::Relaxed),
            rows: s.rows.load(Ordering::Relaxed),
            failed_groups: s.failed_groups.load(Ordering::Relaxed),
            largest: s.largest.load(Ordering::Relaxed),
        }
    }

    /// Rows queued and not yet taken by the writer.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Tests only: from now on every group stops just before its commit until the returned
    /// gate lets it pass (see [`CommitGate`]).
    #[doc(hidden)]
    pub fn gate(&self) -> Arc<CommitGate> {
        let g = Arc::new(CommitGate::default());
        *self.shared.gate.lock().unwrap_or_else(|p| p.into_inner()) = Some(g.clone());
        g
    }
}

/// A row recorded in a transaction of its own (the path before group commit).
async fn record_alone(store: &Store, item: &GroupItem) -> Result<(), StoreError> {
    match &item.token {
        Some((jti, now)) => store.insert_with_token(&item.cert, jti, *now).await,
        None => store.insert(&item.cert).await,
    }
}

/// Tests only: holds every group between its last statement and its commit, so a test can
/// show that no waiter has its answer yet, and can make the commit fail.
#[doc(hidden)]
pub struct CommitGate {
    open: Semaphore,
    fail: AtomicBool,
    /// (groups that reached the gate so far, rows of the last one)
    held: watch::Sender<(u64, usize)>,
}

impl Default for CommitGate {
    fn default() -> CommitGate {
        CommitGate {
            open: Semaphore::new(0),
            fail: AtomicBool::new(false),
            held: watch::Sender::new((0, 0)),
        }
    }
}

impl CommitGate {
    /// Lets `groups` more groups reach their commit.
    pub fn pass(&self, groups: usize) {
        self.open.add_permits(groups);
    }

    /// The next group let through does not commit: it is rolled back and fails as a failed
    /// commit would.
    pub fn fail_next(&self) {
        self.fail.store(true, Ordering::SeqCst);
    }

    /// Waits until the `n`-th group (counting from 1) reached the gate; returns its rows.
    pub async fn arrival(&self, n: u64) -> usize {
        let mut rx = self.held.subscribe();
        // The sender is `self.held`: it outlives this wait, so the wait cannot fail.
        let Ok(seen) = rx.wait_for(|&(arrived, _)| arrived >= n).await.map(|v| *v) else {
            return 0;
        };
        assert_eq!(seen.0, n, "group {n} already passed the gate");
        seen.1
    }

    async fn wait(&self, rows: usize) -> Result<(), StoreError> {
        self.held.send_modify(|(arrived, r)| {
            *arrived += 1;
            *r = rows;
        });
        let permit = self
            .open
            .acquire()
            .await
            .map_err(|_| StoreError::GroupCommit {
                rows,
                detail: "the test gate was closed".into(),
                unavailable: false,
            })?;
        permit.forget();
        if self.fail.swap(false, Ordering::SeqCst) {
            return Err(StoreError::GroupCommit {
                rows,
                detail: "commit refused by the test gate".into(),
                unavailable: false,
            });
        }
        Ok(())
    }
}

/// Why a group's transaction did not commit.
enum Fail {
    /// Only the row at this index is refused: written again without it.
    One(usize, StoreError),
    /// The transaction failed: every waiter of the group fails.
    All(StoreError),
    /// A serial of the group is recorded already, and which one is not known (the rows were
    /// written together): written again row by row, which names it.
    Unbatch,
}

/// One transaction recording the rows of `jobs`; returns the indexes whose token was spent
/// already (their rows were not written).
trait WriteGroup {
    async fn write_group(
        &self,
        jobs: &[Job],
        gate: Option<&CommitGate>,
        batched: bool,
    ) -> Result<Vec<usize>, Fail>;
}

macro_rules! impl_write_group {
    ($store:ty) => {
        impl WriteGroup for $store {
            async fn write_group(
                &self,
                jobs: &[Job],
                gate: Option<&CommitGate>,
                batched: bool,
            ) -> Result<Vec<usize>, Fail> {
                let mut tx = self
                    .pool
                    .begin()
                    .await
                    .map_err(|e| Fail::All(db("begin transaction")(e)))?;
                let mut spent_already = Vec::new();
                // Batched: the tokens one by one (each spend is its own answer), then every
                // row whose token was spent in a few multi-row statements.
                let mut rows = Vec::with_capacity(if batched { jobs.len() } else { 0 });
                for (i, job) in jobs.iter().enumerate() {
                    let it = &job.item;
                    if let Some((jti, now)) = &it.token {
                        let spent = <$store>::spend_token(&mut tx, jti, *now, &it.cert.serial)
                            .await
                            .map_err(Fail::All)?;
                        if !spent {
                            spent_already.push(i);
                            continue;
                        }
                    }
                    if batched {
                        rows.push(&it.cert);
                        continue;
                    }
                    match <$store>::insert_cert(&mut tx, &it.cert).await {
                        Ok(()) => {}
                        Err(e @ StoreError::DuplicateSerial { .. }) => return Err(Fail::One(i, e)),
                        Err(e) => return Err(Fail::All(e)),
                    }
                }
                // Dropping `tx` on a duplicate rolls the group back.
                if !rows.is_empty()
                    && !<$store>::insert_certs(&mut tx, &rows)
                        .await
                        .map_err(Fail::All)?
                {
                    return Err(Fail::Unbatch);
                }
                if let Some(g) = gate {
                    // Dropping `tx` on failure rolls the group back.
                    g.wait(jobs.len() - spent_already.len())
                        .await
                        .map_err(Fail::All)?;
                }
                tx.commit()
                    .await
                    .map_err(|e| Fail::All(db("commit certificates")(e)))?;
                Ok(spent_already)
            }
        }
    };
}

impl_write_group!(SqliteStore);
impl_write_group!(PgStore);

async fn writer(store: Store, mut rx: mpsc::Receiver<Job>, shared: Arc<Shared>) {
    let mut taken = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut taken, MAX_GROUP).await > 0 {
        // A waiter that gave up was never handed its certificate: nothing to record.
        let jobs: Vec<Job> = taken.drain(..).filter(|j| !j.done.is_closed()).collect();
        commit_group(&store, &shared, jobs).await;
    }
}

async fn commit_group(store: &Store, shared: &Shared, mut jobs: Vec<Job>) {
    // Rows in multi-row statements, unless a duplicate serial is to be found.
    let mut batched = true;
    while !jobs.is_empty() {
        let gate = shared
            .gate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let started = Instant::now();
        let res = dispatch!(store, s => s.write_group(&jobs, gate.as_deref(), batched).await);
        store.errors().timed("insert_group", started);
        match res {
            Ok(spent_already) => {
                let rows = (jobs.len() - spent_already.len()) as u64;
                shared.groups.fetch_add(1, Ordering::Relaxed);
                shared.rows.fetch_add(rows, Ordering::Relaxed);
                shared.largest.fetch_max(rows, Ordering::Relaxed);
                for (i, job) in jobs.drain(..).enumerate() {
                    let answer = match (&job.item.token, spent_already.contains(&i)) {
                        (Some((jti, _)), true) => Err(StoreError::TokenUsed { jti: jti.clone() }),
                        _ => Ok(()),
                    };
                    let _ = job.done.send(answer);
                }
            }
            Err(Fail::Unbatch) => batched = false,
            Err(Fail::One(i, e)) => {
                let job = jobs.remove(i);
                let _ = job.done.send(Err(e));
            }
            Err(Fail::All(e)) => {
                store.errors().record("insert_group", &e);
                shared.failed_groups.fetch_add(1, Ordering::Relaxed);
                if jobs.len() == 1 {
                    let _ = jobs.remove(0).done.send(Err(e));
                    return;
                }
                let (rows, detail, unavailable) = (jobs.len(), e.to_string(), e.is_unavailable());
                for job in jobs.drain(..) {
                    let _ = job.done.send(Err(StoreError::GroupCommit {
                        rows,
                        detail: detail.clone(),
                        unavailable,
                    }));
                }
            }
        }
    }
}
