//! When an established connection ends besides its own close: `--idle-timeout`,
//! `--max-connection-lifetime` (closed after a fixed time however busy, so that long-lived
//! connections pick up rotated certificates, new CRLs and policy changes, which apply only to
//! new handshakes, and load rebalances), `--end-on-peer-expiry`, and live re-authorization
//! ([`crate::live::Ended`]). [`pump_until`] runs the copy ([`crate::io`]) under all of them with
//! one timer, set to whichever deadline comes first: an idle connection's task holds one
//! `tokio::time::Sleep`, not one per limit (issue 20, memory per idle connection). On the
//! lifetime both sides are shut down politely (the TLS side sends close_notify); in every case
//! the caller writes the usual audit line with the bytes.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::io::{Activity, Bidi, CopyEnd};
use crate::live::Termination;

/// The limits of one established connection.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// No bytes in either direction for this long ends it (`--idle-timeout`).
    pub idle: Duration,
    /// Ends it this long after the copy starts, however busy (None: no limit).
    pub lifetime: Option<Duration>,
    /// Ends it at this time, Unix seconds: the peer certificate's notAfter under
    /// `--end-on-peer-expiry` (None: never; already past: at once).
    pub peer_expiry: Option<i64>,
}

/// How a connection under [`Limits`] ended.
#[derive(Debug)]
pub enum Ended {
    /// The copy ended on its own (closed, idle, error).
    Pump(CopyEnd),
    /// The lifetime ran out; both sides were shut down.
    Lifetime,
    /// The peer's certificate expired (`--end-on-peer-expiry`); nothing was shut down yet.
    PeerExpired,
    /// Ended from outside (live re-authorization, drain); nothing was shut down yet.
    Terminated(Termination),
}

/// How long each side gets to take its shutdown (close_notify, FIN) before we let go.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The limit whose deadline comes first, and when (the peer's expiry first on a tie, then the
/// lifetime, then idleness).
fn first_deadline(
    idle_at: Instant,
    lifetime_at: Option<Instant>,
    expiry_at: Option<Instant>,
) -> (Instant, Ended) {
    let mut first = (idle_at, Ended::Pump(CopyEnd::Idle));
    if let Some(at) = lifetime_at.filter(|at| *at <= first.0) {
        first = (at, Ended::Lifetime);
    }
    if let Some(at) = expiry_at.filter(|at| *at <= first.0) {
        first = (at, Ended::PeerExpired);
    }
    first
}

/// When `not_after` (Unix seconds) comes on the monotonic clock (now when already past; None
/// beyond what an `Instant` holds).
fn instant_of(not_after: i64) -> Option<Instant> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let left = u64::try_from(not_after.saturating_sub(now)).unwrap_or(0);
    Instant::now().checked_add(Duration::from_secs(left))
}

/// Copies both ways ([`crate::io`]: half-close passed on, bytes counted by the `Metered`
/// sides) until both sides are closed, an error, a limit, or `ended` (None: never ended from
/// outside) resolves.
pub async fn pump_until<A, B>(
    a: &mut A,
    b: &mut B,
    activity: &Activity,
    limits: Limits,
    mut ended: Option<&mut crate::live::Ended>,
) -> Ended
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    activity.touch();
    let lifetime_at = limits.lifetime.and_then(|l| Instant::now().checked_add(l));
    let expiry_at = limits.peer_expiry.and_then(instant_of);
    let end = {
        let mut copy = Bidi::new(&mut *a, &mut *b);
        // The one timer: re-armed for the first deadline each time it fires (traffic since
        // then moves the idle deadline on).
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        loop {
            let idle_at = activity.last() + limits.idle;
            let (at, why) = first_deadline(idle_at, lifetime_at, expiry_at);
            if Instant::now() >= at {
                break why;
            }
            timer.as_mut().reset(at.into());
            tokio::select! {
                biased;
                t = crate::live::wait_opt(ended.as_deref_mut()) => break Ended::Terminated(t),
                r = &mut copy => break Ended::Pump(match r {
                    Ok(()) => CopyEnd::Closed,
                    Err(e) => CopyEnd::Error(e),
                }),
                () = &mut timer => {}
            }
        }
    };
    if let Ended::Lifetime = end {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, a.shutdown()).await;
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, b.shutdown()).await;
    }
    end
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_busy_connection_is_closed_at_its_lifetime() {
        let (mut client, mut pa) = tokio::io::duplex(1024);
        let (mut pb, mut backend) = tokio::io::duplex(1024);
        // Keep traffic flowing so the idle timeout never fires.
        let chatter = tokio::spawn(async move {
            loop {
                if client.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let drain = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while matches!(backend.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        let act = Activity::default();
        let t = std::time::Instant::now();
        let limits = Limits {
            idle: Duration::from_secs(5),
            lifetime: Some(Duration::from_millis(200)),
            peer_expiry: None,
        };
        let end = pump_until(&mut pa, &mut pb, &act, limits, None).await;
        assert!(matches!(end, Ended::Lifetime));
        // Only "ended by the lifetime, not by the 5 s idle timeout or never": loaded machines are late.
        assert!(t.elapsed() < Duration::from_secs(5));
        drop((pa, pb));
        drain.await.unwrap();
        chatter.abort();
    }

    /// The one timer serves every limit: idleness ends an idle connection when the other
    /// deadlines are far, a peer certificate already expired ends it at once, and a signal from
    /// the registry ends it before any deadline.
    #[tokio::test]
    async fn one_timer_serves_idleness_expiry_and_termination() {
        let far = Limits {
            idle: Duration::from_millis(50),
            lifetime: Some(Duration::from_secs(3600)),
            peer_expiry: Some(time::OffsetDateTime::now_utc().unix_timestamp() + 3600),
        };
        let (_c, mut pa) = tokio::io::duplex(64);
        let (mut pb, _b) = tokio::io::duplex(64);
        let act = Activity::default();
        let end = pump_until(&mut pa, &mut pb, &act, far, None).await;
        assert!(matches!(end, Ended::Pump(CopyEnd::Idle)), "{end:?}");

        let expired = Limits {
            idle: Duration::from_secs(3600),
            lifetime: None,
            peer_expiry: Some(time::OffsetDateTime::now_utc().unix_timestamp() - 1),
        };
        let end = pump_until(&mut pa, &mut pb, &act, expired, None).await;
        assert!(matches!(end, Ended::PeerExpired), "{end:?}");

        let open = Limits {
            idle: Duration::from_secs(3600),
            lifetime: None,
            peer_expiry: None,
        };
        let (tx, mut ended) = crate::live::Ended::for_test();
        assert!(tx.send(Termination::Drained));
        let end = pump_until(&mut pa, &mut pb, &act, open, Some(&mut ended)).await;
        assert!(
            matches!(end, Ended::Terminated(Termination::Drained)),
            "{end:?}"
        );
    }

    /// A peer closing both directions ends the copy as closed, before any limit.
    #[tokio::test]
    async fn a_closed_connection_ends_as_closed() {
        let (client, mut pa) = tokio::io::duplex(64);
        let (mut pb, backend) = tokio::io::duplex(64);
        drop((client, backend));
        let act = Activity::default();
        let limits = Limits {
            idle: Duration::from_secs(3600),
            lifetime: Some(Duration::from_secs(3600)),
            peer_expiry: None,
        };
        let end = pump_until(&mut pa, &mut pb, &act, limits, None).await;
        assert!(matches!(end, Ended::Pump(CopyEnd::Closed)), "{end:?}");
    }
}
