//! The accept loop every listener kind shares (TCP and HTTP serve, connect): limits
//! (`--max-connections`: a connection over the limit is closed at once and counted), the
//! open-connections gauge, and graceful shutdown (stop accepting, drain up to a timeout).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::metrics::ListenerMetrics;
use crate::shutdown::{Shutdown, Tracker};

/// Connection limits and shutdown behaviour of one listener.
#[derive(Clone, Debug)]
pub struct Limits {
    /// At most this many connections open at once (None: unlimited).
    pub max_connections: Option<usize>,
    /// On shutdown, how long open connections may take to finish.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: None,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Keeps a connection counted (limit permit, drain tracker, active gauge) while alive.
pub struct ConnGuard {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    _tracked: crate::shutdown::Guard,
    active: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.active.dec();
    }
}

/// Sets TCP_NODELAY on the listening socket, which Linux copies into every socket it accepts:
/// one setsockopt per listener instead of one per connection (issue 20). Whether the accepted
/// sockets will have it (else each gets its own call).
fn nodelay_for_accepted(listener: &TcpListener) -> bool {
    cfg!(target_os = "linux")
        && socket2::SockRef::from(listener)
            .set_tcp_nodelay(true)
            .is_ok()
}

/// Accepts until `shutdown`, spawning `handle` per connection; then drains. At the drain timeout
/// `force_close` ends what is still open (it returns how many it signalled). Returns the number
/// of connections still open at the end (or handed over to a new generation).
pub async fn run<F, Fut>(
    listener: TcpListener,
    limits: &Limits,
    lm: &ListenerMetrics,
    mut shutdown: Shutdown,
    handle: F,
    force_close: impl FnOnce() -> usize,
) -> usize
where
    F: Fn(TcpStream, SocketAddr, ConnGuard) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tracker = Tracker::default();
    let limiter = limits.max_connections.map(|n| Arc::new(Semaphore::new(n)));
    let inherits_nodelay = nodelay_for_accepted(&listener);
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the listener stays up.
                    tracing::warn!(listener = %lm.name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let permit = match &limiter {
            None => None,
            Some(sem) => match Arc::clone(sem).try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    lm.rejected.inc();
                    tracing::debug!(listener = %lm.name, %peer, "connection limit reached; closed");
                    drop(tcp);
                    continue;
                }
            },
        };
        if !inherits_nodelay {
            let _ = tcp.set_nodelay(true);
        }
        lm.active.inc();
        let guard = ConnGuard {
            _permit: permit,
            _tracked: tracker.enter(),
            active: lm.active.clone(),
        };
        tokio::spawn(handle(tcp, peer, guard));
    }
    drop(listener);
    let open = tracker.open();
    if shutdown.is_hand_over() {
        // The next generation of this listener owns them now: nothing to drain or close here.
        if open > 0 {
            tracing::debug!(listener = %lm.name, "{open} open connection(s) handed to the new generation");
        }
        return open;
    }
    if open > 0 {
        tracing::info!(listener = %lm.name, "stopped accepting; draining {open} open connection(s)");
    }
    let left = tracker.wait_idle(limits.drain_timeout).await;
    if left > 0 {
        // End them ourselves (each writes its audit line as it goes) rather than leave them to
        // die unrecorded with the process.
        let ended = force_close();
        tracing::warn!(listener = %lm.name, "drain timeout: closing {left} connection(s)");
        if ended > 0 {
            return tracker.wait_idle(FORCE_GRACE).await;
        }
    }
    left
}

/// How long connections ended at the drain timeout get to close and write their audit lines.
const FORCE_GRACE: Duration = Duration::from_secs(2);

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The accepted socket has TCP_NODELAY without a call of its own (a listener inherited from
    /// systemd or a previous generation included: the option is set on whatever listens).
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        assert!(!listener_nodelay(&listener));
        assert!(nodelay_for_accepted(&listener));
        assert!(listener_nodelay(&listener));
        let addr = listener.local_addr().unwrap();
        let (_client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        assert!(accepted.unwrap().0.nodelay().unwrap());
    }

    fn listener_nodelay(l: &TcpListener) -> bool {
        socket2::SockRef::from(l).tcp_nodelay().unwrap()
    }
}
