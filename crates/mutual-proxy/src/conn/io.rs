//! Moving bytes between the two sides of a proxied connection: both directions at once, half-close
//! propagated (EOF on one side shuts down the write side of the other, so a client that finishes
//! its request still receives the whole response), byte counts kept live for metrics and the
//! audit line, and the connection closed after `idle` without traffic in either direction.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
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
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// How long since the last read or counted write on either side.
    pub fn idle_for(&self) -> Duration {
        self.last().elapsed()
    }
}

/// Wraps one side of a connection: counts the bytes read from it (into a Prometheus counter and a
/// local total), marks activity, and optionally treats a TLS peer's missing close_notify as a
/// plain EOF (most clients just close the socket; that must read as a half-close, not an error).
/// A TCP-mode pump wraps both sides, so counting reads counts both directions; HTTP mode wraps
/// only the client side and also counts what is written to it ([`Metered::count_writes`]).
pub struct Metered<S> {
    inner: S,
    counter: Counter,
    /// Bytes written to this side, when counted.
    written: Option<Counter>,
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
            written: None,
            total: Arc::new(AtomicU64::new(0)),
            activity,
            lenient_eof: false,
            read_error: Arc::new(Mutex::new(None)),
        }
    }

    /// Also counts the bytes written to this side into `counter` (and marks activity).
    pub fn count_writes(mut self, counter: Counter) -> Self {
        self.written = Some(counter);
        self
    }

    /// A write of `r` bytes, counted when asked.
    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        if let (Some(c), Poll::Ready(Ok(n))) = (&self.written, r) {
            if *n > 0 {
                c.inc_by(*n as u64);
                self.activity.touch();
            }
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

    /// Bytes read from this side so far, as a number.
    pub fn total_now(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
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
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&r);
        r
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
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&r);
        r
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

/// Size of a copy buffer. One TLS record carries at most 16 KiB of plaintext, so one read from the
/// TLS side fills at most one buffer and a write into it becomes at most one full record.
const BUF_SIZE: usize = 16 * 1024;

/// Buffers kept per worker thread for reuse. A buffer is only borrowed while bytes are in flight,
/// so a few per thread serve every connection of that thread in the steady state; any beyond this
/// are freed rather than hoarded after a burst.
const POOL_MAX: usize = 32;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// Buffers taken and not yet given back on this thread (tests run on one thread).
    static LENT: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
}

/// A buffer from this thread's pool, or a new one when the pool is empty (only at start-up or
/// under a burst wider than the pool): the steady state allocates nothing per read.
fn take_buf() -> Box<[u8]> {
    #[cfg(test)]
    LENT.with(|l| l.set(l.get() + 1));
    POOL.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice())
}

/// Gives a buffer back (the task may have moved threads since it took it; that is fine, it just
/// joins this thread's pool).
fn give_buf(b: Box<[u8]>) {
    #[cfg(test)]
    LENT.with(|l| l.set(l.get() - 1));
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(b);
        }
    });
}

/// One direction of the copy. It holds a buffer only while bytes read from one side have not yet
/// all been written to the other: an idle connection holds none (`tokio::io::copy_bidirectional`
/// keeps two 8 KiB buffers for the connection's whole life, which was most of the proxy's memory
/// per idle connection).
#[derive(Default)]
struct Half {
    buf: Option<Box<[u8]>>,
    pos: usize,
    end: usize,
    read_done: bool,
    need_flush: bool,
    done: bool,
}

impl Half {
    /// Copies from `r` to `w` until `r` reaches EOF, then flushes and shuts down `w`'s write side
    /// (the half-close), like tokio's copy but returning its buffer whenever a read would block.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        loop {
            if self.pos == self.end && !self.read_done {
                let mut b = self.buf.take().unwrap_or_else(take_buf);
                let mut rb = ReadBuf::new(&mut b);
                match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                    Poll::Pending => {
                        // Nothing in flight: the buffer goes back until the next readiness.
                        give_buf(b);
                        // Bytes handed to a buffering writer (the TLS side encrypts into its
                        // own queue) must reach the socket before this direction goes quiet.
                        if self.need_flush {
                            ready!(Pin::new(&mut *w).poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => {
                        give_buf(b);
                        return Poll::Ready(Err(e));
                    }
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            self.read_done = true;
                            give_buf(b);
                        } else {
                            self.pos = 0;
                            self.end = n;
                            self.buf = Some(b);
                        }
                    }
                }
            }
            while self.pos < self.end {
                let Some(b) = self.buf.as_deref() else {
                    // pos < end only ever holds while `buf` is Some (set together above).
                    return Poll::Ready(Err(io::Error::other("copy buffer missing")));
                };
                let n = ready!(Pin::new(&mut *w).poll_write(cx, &b[self.pos..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.need_flush = true;
            }
            if self.read_done {
                // Everything read has been written: pass the EOF on as a half-close.
                ready!(Pin::new(&mut *w).poll_flush(cx))?;
                self.need_flush = false;
                ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Both directions of one connection, polled from one task (no extra task or lock per
/// connection). Resolves once both directions are closed (each half-close passed on) or at the
/// first error; dropping it stops the copy and gives back any buffer it holds.
pub(crate) struct Bidi<'a, A: ?Sized, B: ?Sized> {
    a: &'a mut A,
    b: &'a mut B,
    a_to_b: Half,
    b_to_a: Half,
}

impl<'a, A: ?Sized, B: ?Sized> Bidi<'a, A, B> {
    pub(crate) fn new(a: &'a mut A, b: &'a mut B) -> Self {
        Bidi {
            a,
            b,
            a_to_b: Half::default(),
            b_to_a: Half::default(),
        }
    }
}

impl<A, B> Future for Bidi<'_, A, B>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        if !me.a_to_b.done {
            if let Poll::Ready(r) = me.a_to_b.poll_copy(cx, &mut *me.a, &mut *me.b) {
                r?;
                me.a_to_b.done = true;
            }
        }
        if !me.b_to_a.done {
            if let Poll::Ready(r) = me.b_to_a.poll_copy(cx, &mut *me.b, &mut *me.a) {
                r?;
                me.b_to_a.done = true;
            }
        }
        if me.a_to_b.done && me.b_to_a.done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

impl<A: ?Sized, B: ?Sized> Drop for Bidi<'_, A, B> {
    fn drop(&mut self) {
        // A connection cut short (idle timeout, error) returns what it was holding.
        for h in [&mut self.a_to_b, &mut self.b_to_a] {
            if let Some(b) = h.buf.take() {
                give_buf(b);
            }
        }
    }
}

/// Copies both ways until both sides are closed, an error, or `idle` without traffic.
pub async fn pump<A, B>(a: &mut A, b: &mut B, activity: &Activity, idle: Duration) -> CopyEnd
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    activity.touch();
    let copy = Bidi::new(a, b);
    tokio::select! {
        r = copy => match r {
            Ok(()) => CopyEnd::Closed,
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

    fn lent() -> isize {
        LENT.with(|l| l.get())
    }

    /// An idle connection holds no copy buffer, a busy one at most one per direction, and the
    /// buffers are reused (the pool) rather than allocated per read.
    #[tokio::test]
    async fn idle_connection_holds_no_buffer() {
        let (mut client, proxy_a) = tokio::io::duplex(1 << 20);
        let (proxy_b, mut backend) = tokio::io::duplex(1 << 20);
        let act = Arc::new(Activity::default());
        let mut a = Metered::new(proxy_a, Counter::default(), Arc::clone(&act));
        let mut b = Metered::new(proxy_b, Counter::default(), Arc::clone(&act));
        let act_p = Arc::clone(&act);
        let base = lent();
        let p = tokio::spawn(async move {
            pump(&mut a, &mut b, &act_p, Duration::from_secs(5)).await;
        });
        let mut got = [0u8; 5];
        for _ in 0..100 {
            client.write_all(b"hello").await.unwrap();
            backend.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"hello");
            backend.write_all(b"world").await.unwrap();
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"world");
            // Both directions went quiet: every buffer is back in the pool.
            tokio::task::yield_now().await;
            assert_eq!(lent(), base, "an idle connection holds a copy buffer");
        }
        let pooled = POOL.with(|p| p.borrow().len());
        assert!(
            (1..=2).contains(&pooled),
            "200 reads must reuse one or two buffers, pool has {pooled}"
        );
        p.abort();
    }

    /// A writer that takes one byte per call and a reader that hands out odd-sized pieces: the
    /// copy must still deliver every byte in order and propagate EOF.
    #[tokio::test]
    async fn tiny_writes_and_odd_reads_deliver_everything() {
        let (mut client, proxy_a) = tokio::io::duplex(7);
        let (proxy_b, mut backend) = tokio::io::duplex(1);
        let act = Arc::new(Activity::default());
        let mut a = Metered::new(proxy_a, Counter::default(), Arc::clone(&act));
        let mut b = Metered::new(proxy_b, Counter::default(), Arc::clone(&act));
        let act_p = Arc::clone(&act);
        let p = tokio::spawn(async move {
            matches!(
                pump(&mut a, &mut b, &act_p, Duration::from_secs(5)).await,
                CopyEnd::Closed
            )
        });
        let up: Vec<u8> = (0..200_003u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..150_001u32).map(|i| (i % 241) as u8).collect();
        let (up2, down2) = (up.clone(), down.clone());
        let be = tokio::spawn(async move {
            let mut req = Vec::new();
            backend.read_to_end(&mut req).await.unwrap();
            for c in down2.chunks(13) {
                backend.write_all(c).await.unwrap();
            }
            backend.shutdown().await.unwrap();
            req
        });
        for c in up2.chunks(3) {
            client.write_all(c).await.unwrap();
        }
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(be.await.unwrap(), up);
        assert!(
            got == down,
            "response differs ({} of {} bytes)",
            got.len(),
            down.len()
        );
        assert!(p.await.unwrap());
    }

    /// HTTP mode's client side: reads count in, writes count out (only when asked).
    #[tokio::test]
    async fn count_writes_counts_both_directions() {
        use tokio::io::AsyncWriteExt;
        let (mut peer, side) = tokio::io::duplex(64);
        let (cin, cout) = (Counter::default(), Counter::default());
        let act = Arc::new(Activity::default());
        let mut m = Metered::new(side, cin.clone(), Arc::clone(&act)).count_writes(cout.clone());
        m.write_all(b"hello").await.unwrap();
        peer.write_all(b"abc").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(m.read(&mut buf).await.unwrap(), 3);
        assert_eq!((cin.get(), cout.get()), (3, 5));
        let mut plain = Metered::new(peer, Counter::default(), act);
        plain.write_all(b"x").await.unwrap();
        assert!(plain.written.is_none());
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
