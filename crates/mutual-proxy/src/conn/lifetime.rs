//! `--max-connection-lifetime`: an allowed connection is closed after a fixed time however busy
//! it is, so that long-lived connections pick up rotated certificates, new CRLs and policy
//! changes (which apply only to new handshakes) and load rebalances. Kept apart from [`pump`]
//! so the lifetime is one small wrapper around it: on expiry both sides are shut down politely
//! (the TLS side sends close_notify) and the caller writes the usual audit line with the bytes.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::io::{pump, Activity, CopyEnd};

/// How a connection under a lifetime limit ended.
#[derive(Debug)]
pub enum Ended {
    /// The copy ended on its own (closed, idle, error).
    Pump(CopyEnd),
    /// The lifetime ran out; both sides were shut down.
    Lifetime,
}

/// How long each side gets to take its shutdown (close_notify, FIN) before we let go.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// [`pump`], closed after `lifetime` (None: no limit).
pub async fn pump_limited<A, B>(
    a: &mut A,
    b: &mut B,
    activity: &Activity,
    idle: Duration,
    lifetime: Option<Duration>,
) -> Ended
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let Some(limit) = lifetime else {
        return Ended::Pump(pump(a, b, activity, idle).await);
    };
    match tokio::time::timeout(limit, pump(a, b, activity, idle)).await {
        Ok(end) => Ended::Pump(end),
        Err(_) => {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, a.shutdown()).await;
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, b.shutdown()).await;
            Ended::Lifetime
        }
    }
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
        let end = pump_limited(
            &mut pa,
            &mut pb,
            &act,
            Duration::from_secs(5),
            Some(Duration::from_millis(200)),
        )
        .await;
        assert!(matches!(end, Ended::Lifetime));
        // Only "ended by the lifetime, not by the 5 s idle timeout or never": loaded machines are late.
        assert!(t.elapsed() < Duration::from_secs(5));
        drop((pa, pb));
        drain.await.unwrap();
        chatter.abort();
    }
}
