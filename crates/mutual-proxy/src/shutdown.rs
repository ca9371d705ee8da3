//! Graceful shutdown: a signal every listener watches (stop accepting), and a tracker of open
//! connections so the process can wait for them to finish, up to the drain timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

/// What a fired trigger asks for.
const RUNNING: u8 = 0;
/// Stop accepting and drain: open connections finish (HTTP closes idle keep-alives), up to
/// the drain timeout.
const DRAIN: u8 = 1;
/// Stop accepting; the open connections belong to the next generation of the same listener
/// (`mutual run` after an edit of its block) and carry on untouched.
const HAND_OVER: u8 = 2;

/// Tells listeners to stop accepting. Dropping it also triggers shutdown.
pub struct Trigger(watch::Sender<u8>);

impl Trigger {
    /// Stop accepting and drain the open connections.
    pub fn fire(&self) {
        self.0.send_replace(DRAIN);
    }

    /// Stop accepting, leave the open connections to the next generation (see [`HAND_OVER`]).
    /// A later [`Trigger::fire`] still drains them.
    pub fn hand_over(&self) {
        self.0.send_if_modified(|v| {
            if *v == RUNNING {
                *v = HAND_OVER;
                true
            } else {
                false
            }
        });
    }
}

/// The receiving side; cheap to clone, one per task that must stop.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<u8>);

impl Shutdown {
    /// Resolves once shutdown was requested, drain or hand-over (or the trigger dropped).
    pub async fn wait(&mut self) {
        // An Err means the trigger is gone: treat as shutdown too.
        let _ = self.0.wait_for(|v| *v != RUNNING).await;
    }

    /// Resolves once the open connections must drain: not on a hand-over.
    pub async fn wait_drain(&mut self) {
        let _ = self.0.wait_for(|v| *v == DRAIN).await;
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow() != RUNNING
    }

    /// The listener stopped accepting because a new generation took its connections over.
    pub fn is_hand_over(&self) -> bool {
        *self.0.borrow() == HAND_OVER
    }
}

pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(RUNNING);
    (Trigger(tx), Shutdown(rx))
}

/// Resolves at the first SIGTERM or SIGINT (handlers installed on the first poll: prefer
/// [`TerminationSignals::install`] before the process looks ready).
pub async fn termination_signal() -> std::io::Result<&'static str> {
    Ok(TerminationSignals::install()?.recv().await)
}

/// SIGTERM and SIGINT handlers, installed when this is made. Make it before the process looks
/// ready (its listener or metrics endpoint answers): until a handler is installed, SIGTERM has
/// its default action and kills the process at once, without draining. (A supervisor that
/// stops a proxy right after its readiness probe passed would otherwise lose open connections.)
pub struct TerminationSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl TerminationSignals {
    /// Installs both handlers; needs a Tokio runtime with signals enabled.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(TerminationSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves at the next SIGTERM or SIGINT (one received before this call counts).
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Counts open connections; `wait_idle` lets shutdown wait for them.
#[derive(Clone, Default)]
pub struct Tracker(Arc<TrackerInner>);

#[derive(Default)]
struct TrackerInner {
    open: AtomicUsize,
    idle: Notify,
}

/// Held by a connection task; dropping it marks the connection closed.
pub struct Guard(Arc<TrackerInner>);

impl Tracker {
    pub fn enter(&self) -> Guard {
        self.0.open.fetch_add(1, Ordering::SeqCst);
        Guard(Arc::clone(&self.0))
    }

    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::SeqCst)
    }

    /// Waits until no connection is open, or `timeout`; returns how many were still open.
    pub async fn wait_idle(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.0.idle.notified();
            tokio::pin!(notified);
            // Register interest before checking, so a close in between is not missed.
            notified.as_mut().enable();
            let open = self.open();
            if open == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.open();
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_idle_returns_when_last_guard_drops() {
        let t = Tracker::default();
        let g1 = t.enter();
        let g2 = t.enter();
        let t2 = t.clone();
        let h = tokio::spawn(async move { t2.wait_idle(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(g1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!h.is_finished());
        drop(g2);
        assert_eq!(h.await.ok(), Some(0));
    }

    #[tokio::test]
    async fn wait_idle_times_out_with_the_count() {
        let t = Tracker::default();
        let _g = t.enter();
        assert_eq!(t.wait_idle(Duration::from_millis(30)).await, 1);
    }

    #[tokio::test]
    async fn shutdown_wakes_waiters() {
        let (trig, mut s) = channel();
        let h = tokio::spawn(async move { s.wait().await });
        trig.fire();
        assert!(h.await.is_ok());
    }
}
