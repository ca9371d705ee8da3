//! Moving bytes between the two sides of a proxied connection: both directions at once, half-close
//! propagated (EOF on one side shuts down the write side of the other, so a client that finishes
//! its request still receives the whole response), byte counts kept live for metrics and the
//! audit line, and the connection closed after `idle` without traffic in either direction.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mutual_tls::Reason;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shared between the two wrapped sides of one connection.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    /// Milliseconds since `base` of the last successful read on either side.
    last_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Wraps one side of a connection: counts the bytes read from it (into a Prometheus counter and a
/// local total), marks activity, and optionally treats a TLS peer's missing close_notify as a
/// plain EOF (most clients just close the socket; that must read as a half-close, not an error).
pub struct Metered<S> {
    inner: S,
    counter: Counter,
    total: Arc<AtomicU64>,
    activity: Arc<Activity>,
    lenient_eof: bool,
    /// The reason label of the first read error from this side (TLS alerts from the peer show
    /// up here, e.g. a server rejecting `connect`'s certificate after a TLS 1.3 handshake).
    read_error: Arc<Mutex<Option<Reason>>>,
}

impl<S> Metered<S> {
    pub fn new(inner: S, counter: Counter, activity: Arc<Activity>) -> Self {
        Metered {
            inner,
            counter,
            total: Arc::new(AtomicU64::new(0)),
            activity,
            lenient_eof: false,
            read_error: Arc::new(Mutex::new(None)),
        }
    }

    pub fn lenient_eof(mut self) -> Self {
        self.lenient_eof = true;
        self
    }

    /// Bytes read from this side so far (readable while the copy runs).
    pub fn total(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.total)
    }

    /// Where the reason of the first read error from this side is stored.
    pub fn read_error(&self) -> Arc<Mutex<Option<Reason>>> {
        Arc::clone(&self.read_error)
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let me = &mut *self;
        match Pin::new(&mut me.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                if n > 0 {
                    me.counter.inc_by(n);
                    me.total.fetch_add(n, Ordering::Relaxed);
                    me.activity.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) if me.lenient_eof && e.kind() == io::ErrorKind::UnexpectedEof => {
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                if let Ok(mut slot) = me.read_error.lock() {
                    if slot.is_none() {
                        *slot = Some(mutual_tls::classify_io_error(&e));
                    }
                }
                Poll::Ready(Err(e))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// How a proxied connection ended.
#[derive(Debug)]
pub enum CopyEnd {
    /// Both sides closed (after propagating each half-close).
    Closed,
    /// No bytes in either direction for the idle timeout.
    Idle,
    /// An I/O error on either side.
    Error(io::Error),
}

/// Copies both ways until both sides are closed, an error, or `idle` without traffic.
pub async fn pump<A, B>(a: &mut A, b: &mut B, activity: &Activity, idle: Duration) -> CopyEnd
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    activity.touch();
    tokio::select! {
        r = tokio::io::copy_bidirectional(a, b) => match r {
            Ok(_) => CopyEnd::Closed,
            Err(e) => CopyEnd::Error(e),
        },
        _ = idle_watch(activity, idle) => CopyEnd::Idle,
    }
}

async fn idle_watch(activity: &Activity, idle: Duration) {
    loop {
        let deadline = activity.last() + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_counts_and_propagates_half_close() {
        let (mut client, proxy_a) = tokio::io::duplex(64);
        let (proxy_b, mut backend) = tokio::io::duplex(64);
        let act = Arc::new(Activity::default());
        let cin = Counter::default();
        let cout = Counter::default();
        let mut a = Metered::new(proxy_a, cin.clone(), Arc::clone(&act));
        let mut b = Metered::new(proxy_b, cout.clone(), Arc::clone(&act));
        let (tin, tout) = (a.total(), b.total());
        let act_p = Arc::clone(&act);
        let p = tokio::spawn(async move {
            matches!(
                pump(&mut a, &mut b, &act_p, Duration::from_secs(5)).await,
                CopyEnd::Closed
            )
        });
        // The backend answers only after the client's half-close arrives (EOF), with a response
        // larger than the pipe buffers: the client must still get all of it.
        let be = tokio::spawn(async move {
            let mut req = Vec::new();
            backend.read_to_end(&mut req).await.unwrap();
            let resp = vec![7u8; 100_000];
            backend.write_all(&resp).await.unwrap();
            backend.shutdown().await.unwrap();
            req
        });
        client.write_all(b"hello").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 100_000);
        assert_eq!(be.await.unwrap(), b"hello");
        assert!(p.await.unwrap());
        assert_eq!(tin.load(Ordering::Relaxed), 5);
        assert_eq!(tout.load(Ordering::Relaxed), 100_000);
        assert_eq!(cin.get(), 5);
        assert_eq!(cout.get(), 100_000);
    }

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let (_client, proxy_a) = tokio::io::duplex(64);
        let (proxy_b, _backend) = tokio::io::duplex(64);
        let act = Arc::new(Activity::default());
        let mut a = Metered::new(proxy_a, Counter::default(), Arc::clone(&act));
        let mut b = Metered::new(proxy_b, Counter::default(), Arc::clone(&act));
        let end = pump(&mut a, &mut b, &act, Duration::from_millis(50)).await;
        assert!(matches!(end, CopyEnd::Idle));
    }

    #[tokio::test]
    async fn lenient_eof_turns_unexpected_eof_into_eof() {
        struct Eofer;
        impl AsyncRead for Eofer {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "no close_notify",
                )))
            }
        }
        let act = Arc::new(Activity::default());
        let mut m = Metered::new(Eofer, Counter::default(), Arc::clone(&act)).lenient_eof();
        let mut buf = [0u8; 4];
        assert_eq!(m.read(&mut buf).await.unwrap(), 0);
        let mut strict = Metered::new(Eofer, Counter::default(), act);
        assert!(strict.read(&mut buf).await.is_err());
    }
}
