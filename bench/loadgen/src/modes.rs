//! The measurements: new-connection handshakes, kept-alive requests, bulk transfer and idle
//! connections. Each is bounded in time and returns one JSON object for the harness.
//!
//! A handshake counts only when a request through it got its response: in TLS 1.3 the client
//! finishes before the server has checked the client certificate, so only data coming back proves
//! the server accepted us (and that the proxy reached the backend, as a real client needs).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http;
use crate::http2;
use crate::stats::{self, round2};
use crate::tls::{negotiated, Client};

/// The server being measured: its pids (each with its children) for CPU time and RSS.
#[derive(Clone)]
pub struct Server {
    pub pids: Vec<u32>,
    /// The server behind a client-side proxy (`--upstream-pid`): its CPU per connection shows
    /// whether the proxy resumed its sessions (a resumed handshake costs the server less).
    pub upstream: Vec<u32>,
    pub ticks: f64,
}

/// CPU times at the start of a timed window.
pub struct Snap {
    /// The server's (user, system) CPU seconds.
    server: Option<(f64, f64)>,
    upstream: Option<f64>,
    client: f64,
}

impl Server {
    pub fn cpu(&self) -> Option<f64> {
        self.cpu_split().map(|(u, s)| u + s)
    }

    /// The server's CPU seconds so far: (user, system).
    pub fn cpu_split(&self) -> Option<(f64, f64)> {
        (!self.pids.is_empty()).then(|| stats::tree_cpu_split(&self.pids, self.ticks))
    }

    fn upstream_cpu(&self) -> Option<f64> {
        (!self.upstream.is_empty()).then(|| stats::tree_cpu_seconds(&self.upstream, self.ticks))
    }

    pub fn snap(&self) -> Snap {
        Snap {
            server: self.cpu_split(),
            upstream: self.upstream_cpu(),
            client: stats::self_cpu_seconds(self.ticks),
        }
    }
}

/// Adds server and client CPU figures to `out`: `per_server_cpu_s` is the figure that stays
/// comparable between contenders when the machine, not the server, limited the rate.
fn add_cpu(out: &mut Value, server: &Server, before: &Snap, elapsed: f64, ok: u64) {
    let client = stats::self_cpu_seconds(server.ticks) - before.client;
    out["client_cpu_s"] = json!(round2(client));
    if let (Some((bu, bs)), Some((au, as_))) = (before.server, server.cpu_split()) {
        let (user, sys) = (au - bu, as_ - bs);
        let used = user + sys;
        out["server_cpu_s"] = json!(round2(used));
        // User space (TLS, the proxy's own code) and kernel (TCP, syscalls) apart: what a
        // plain TCP proxy pays too shows in the system part (bench/run.sh, the floor case).
        out["server_user_s"] = json!(round2(user));
        out["server_sys_s"] = json!(round2(sys));
        out["server_cpu_util"] = json!(round2(used / elapsed));
        if used > 0.0 {
            out["per_server_cpu_s"] = json!(round2(ok as f64 / used));
        }
        if ok > 0 {
            out["server_user_us_per_unit"] = json!(round2(user * 1e6 / ok as f64));
            out["server_sys_us_per_unit"] = json!(round2(sys * 1e6 / ok as f64));
        }
    }
    if let (Some(b), Some(a)) = (before.upstream, server.upstream_cpu()) {
        let used = a - b;
        out["upstream_cpu_s"] = json!(round2(used));
        if ok > 0 {
            out["upstream_cpu_us_per_conn"] = json!(round2(used * 1e6 / ok as f64));
        }
    }
}

/// How many units (connections, requests) a run may still start, shared by its tasks: with
/// `--count N` a run does exactly N attempts (the instruction counts of bench/instructions.sh
/// divide by it), without it only the deadline stops the run.
#[derive(Clone)]
pub struct Budget(Option<Arc<AtomicU64>>);

impl Budget {
    pub fn new(count: Option<u64>) -> Budget {
        Budget(count.map(|n| Arc::new(AtomicU64::new(n))))
    }

    /// Takes one unit; false when none is left.
    fn take(&self) -> bool {
        self.0.as_ref().is_none_or(|left| {
            left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        })
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    resumed: u64,
    /// Open loop: requests that were due but not made (still waiting DRAIN after the window).
    unmade: u64,
    latencies: Vec<u64>,
    first_error: Option<String>,
    suite: String,
    group: String,
}

impl Tally {
    fn fail(&mut self, e: impl std::fmt::Display) {
        self.failed += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    fn merge(&mut self, o: Tally) {
        self.ok += o.ok;
        self.failed += o.failed;
        self.resumed += o.resumed;
        self.unmade += o.unmade;
        self.latencies.extend(o.latencies);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        if self.suite.is_empty() {
            self.suite = o.suite;
            self.group = o.group;
        }
    }

    fn into_json(self, elapsed: f64) -> Value {
        let mut v = json!({
            "ok": self.ok,
            "failed": self.failed,
            "rate": round2(self.ok as f64 / elapsed),
            "elapsed_s": round2(elapsed),
            "suite": self.suite,
            "group": self.group,
        });
        if let Some(s) = stats::summarize(self.latencies) {
            v["latency"] = s.to_json();
        }
        if let Some(e) = self.first_error {
            v["first_error"] = json!(e);
        }
        v
    }
}

async fn timed<T>(
    limit: Duration,
    f: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")))
}

/// After a failure, wait a little so a dead server does not turn the run into a busy loop.
async fn backoff() {
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// New TCP + mTLS connection, one small request, close; repeated by `concurrency` tasks. Without
/// a TLS client (`None`), plain TCP connections to a client-side proxy that does the handshake.
pub async fn handshakes(
    client: Option<Client>,
    addr: SocketAddr,
    concurrency: usize,
    duration: Duration,
    resume: bool,
    budget: Budget,
    server: &Server,
) -> Value {
    let proto = Proto::of(client.as_ref());
    let cpu0 = server.snap();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let client = match &client {
            Some(c) if resume => Some(c.with_own_session_cache()),
            other => other.clone(),
        };
        let budget = budget.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            let mut buf = Vec::with_capacity(256);
            while Instant::now() < deadline && budget.take() {
                let t0 = Instant::now();
                let limit = client
                    .as_ref()
                    .map_or(Duration::from_secs(10), |c| c.timeout);
                let r = timed(limit, async {
                    let Some(client) = &client else {
                        let mut s = TcpStream::connect(addr).await?;
                        s.set_nodelay(true)?;
                        buf.clear();
                        http::get_small(&mut s, &mut buf).await?;
                        return Ok((false, None));
                    };
                    let mut s = client.connect(addr).await?;
                    buf.clear();
                    if proto == Proto::H2 {
                        let conn = s.get_ref().1;
                        let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                        let names = t.suite.is_empty().then(|| negotiated(conn));
                        // Dropping the handle ends the connection task, which closes it.
                        http2::get_small(&start_h2(s).await?).await?;
                        return Ok((resumed, names));
                    }
                    http::get_small(&mut s, &mut buf).await?;
                    let conn = s.get_ref().1;
                    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                    let names = if t.suite.is_empty() {
                        Some(negotiated(conn))
                    } else {
                        None
                    };
                    // close_notify then FIN; the server's reply to it is not waited for.
                    let _ = s.shutdown().await;
                    Ok((resumed, names))
                })
                .await;
                match r {
                    Ok((resumed, names)) => {
                        t.ok += 1;
                        t.resumed += u64::from(resumed);
                        t.latencies.push(t0.elapsed().as_micros() as u64);
                        if let Some((suite, group)) = names {
                            (t.suite, t.group) = (suite, group);
                        }
                    }
                    Err(e) => {
                        t.fail(e);
                        backoff().await;
                    }
                }
            }
            t
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        match task.await {
            Ok(t) => all.merge(t),
            Err(e) => all.fail(e),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (ok, resumed) = (all.ok, all.resumed);
    let mut out = all.into_json(elapsed);
    out["mode"] = json!(if resume { "resume" } else { "handshakes" });
    out["http"] = json!(proto.name());
    out["concurrency"] = json!(concurrency);
    out["resumed"] = json!(resumed);
    if resume && ok > 0 {
        out["resumed_fraction"] = json!(round2(resumed as f64 / ok as f64));
    }
    add_cpu(&mut out, server, &cpu0, elapsed, ok);
    out
}

/// The HTTP version spoken over a TLS connection: HTTP/1.1 (no ALPN) or HTTP/2 (ALPN `h2`,
/// which the server must select).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

impl Proto {
    /// What a client (none: plain TCP) speaks.
    fn of(client: Option<&Client>) -> Proto {
        if client.is_some_and(Client::is_h2) {
            Proto::H2
        } else {
            Proto::H1
        }
    }

    fn name(self) -> &'static str {
        match self {
            Proto::H1 => "http/1.1",
            Proto::H2 => "h2",
        }
    }
}

/// An open connection that small requests go over, HTTP/1.1 or HTTP/2.
enum Session {
    H1(Box<dyn Stream>),
    H2(h2::client::SendRequest<bytes::Bytes>),
}

impl Session {
    async fn get_small(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        match self {
            Session::H1(s) => http::get_small(s, buf).await,
            Session::H2(send) => http2::get_small(send).await,
        }
    }
}

/// Starts HTTP/2 on an established TLS connection, or says why it cannot.
async fn start_h2(
    s: tokio_rustls::client::TlsStream<TcpStream>,
) -> io::Result<h2::client::SendRequest<bytes::Bytes>> {
    if s.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(io::Error::other("the server did not select h2 (ALPN)"));
    }
    http2::handshake(s).await
}

/// A byte stream of either kind, so plain (backend-direct) and TLS runs share one code path.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Opens a connection (TLS when `client` is given) and proves it with one small request.
async fn open(
    client: Option<&Client>,
    addr: SocketAddr,
    buf: &mut Vec<u8>,
) -> io::Result<(Box<dyn Stream>, (String, String))> {
    let limit = client.map_or(Duration::from_secs(10), |c| c.timeout);
    timed(limit, async {
        let (mut s, names): (Box<dyn Stream>, _) = match client {
            Some(c) => {
                let s = c.connect(addr).await?;
                let names = negotiated(s.get_ref().1);
                (Box::new(s), names)
            }
            None => {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                (Box::new(s), (String::new(), String::new()))
            }
        };
        http::get_small(&mut s, buf).await?;
        Ok((s, names))
    })
    .await
}

/// [`open`] for the request modes: a session of protocol `proto` (HTTP/2 needs TLS).
async fn open_session(
    client: Option<&Client>,
    addr: SocketAddr,
    proto: Proto,
    buf: &mut Vec<u8>,
) -> io::Result<(Session, (String, String))> {
    let (Proto::H2, Some(c)) = (proto, client) else {
        let (s, names) = open(client, addr, buf).await?;
        return Ok((Session::H1(s), names));
    };
    timed(c.timeout, async {
        let s = c.connect(addr).await?;
        let names = negotiated(s.get_ref().1);
        let mut session = Session::H2(start_h2(s).await?);
        session.get_small(buf).await?;
        Ok((session, names))
    })
    .await
}

/// When requests are sent: as fast as the responses come back (closed loop), or at a fixed rate.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Each connection sends its next request as soon as the previous response is in: the
    /// throughput a server sustains, and latency that is mostly queueing (with `concurrency`
    /// requests always in flight, p50 is about concurrency / rate, Little's law).
    Closed,
    /// `rate` requests per second in all, dealt in turn to the connections at evenly spaced
    /// times whether or not earlier responses have come back (open loop, as wrk2 does): the
    /// latency a request meets at that load. Each latency runs from the moment its request was
    /// due, so a request held up behind a slow one on its connection is charged for the wait
    /// (no coordinated omission).
    Rate(f64),
}

/// How long an open-loop connection goes on making the requests that were due in the window
/// after it closes (a server behind by more than this has them counted as `unmade`).
const DRAIN: Duration = Duration::from_secs(2);

/// Deals out request times for [`Pace::Rate`]: from `start` until `end`, one every 1/`rate`
/// seconds, to the connections in turn. A thread of its own sleeping to each due time (tokio's
/// timers tick in milliseconds, 16 times coarser than 16,000 requests a second need). What it
/// sends is the time it woke: a late wake-up shifts when a request is made, never its latency.
fn deal(
    queues: Vec<tokio::sync::mpsc::UnboundedSender<Instant>>,
    rate: f64,
    start: Instant,
    end: Instant,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let step = 1.0 / rate;
        for k in 0u64.. {
            let due = start + Duration::from_secs_f64(step * k as f64);
            if due >= end {
                break;
            }
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let i = usize::try_from(k).unwrap_or(0) % queues.len();
            // A connection that failed has dropped its queue; the others go on.
            let _ = queues[i].send(Instant::now());
        }
    })
}

/// Small GETs over `concurrency` kept-alive connections, one request in flight on each, paced
/// by `pace`.
pub async fn requests(
    client: Option<Client>,
    addr: SocketAddr,
    concurrency: usize,
    duration: Duration,
    pace: Pace,
    budget: Budget,
    server: &Server,
) -> Value {
    let proto = Proto::of(client.as_ref());
    let barrier = Arc::new(tokio::sync::Barrier::new(concurrency + 1));
    let mut tasks = Vec::with_capacity(concurrency);
    let mut queues = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let barrier = barrier.clone();
        let budget = budget.clone();
        let mut due = match pace {
            Pace::Closed => None,
            Pace::Rate(_) => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
                queues.push(tx);
                Some(rx)
            }
        };
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            let mut buf = Vec::with_capacity(256);
            let opened = open_session(client.as_ref(), addr, proto, &mut buf).await;
            // Every task waits here, failed or not, so the timed window starts with all
            // connections established.
            barrier.wait().await;
            let mut s = match opened {
                Ok((s, (suite, group))) => {
                    (t.suite, t.group) = (suite, group);
                    s
                }
                Err(e) => {
                    t.fail(format!("connect: {e}"));
                    return t;
                }
            };
            let deadline = Instant::now() + duration;
            // Open loop: every request dealt in the window is made, the last ones up to DRAIN
            // after it (a server that fell behind shows it in its latencies); what is still
            // waiting then is counted as not made.
            let give_up = deadline + DRAIN;
            loop {
                let t0 = match due.as_mut() {
                    None if Instant::now() < deadline && budget.take() => Instant::now(),
                    None => break,
                    Some(rx) => match rx.recv().await {
                        Some(at) if Instant::now() < give_up => at,
                        Some(_) => {
                            rx.close();
                            t.unmade += 1;
                            while rx.try_recv().is_ok() {
                                t.unmade += 1;
                            }
                            break;
                        }
                        None => break,
                    },
                };
                match timed(Duration::from_secs(10), s.get_small(&mut buf)).await {
                    Ok(()) => {
                        t.ok += 1;
                        t.latencies.push(t0.elapsed().as_micros() as u64);
                    }
                    Err(e) => {
                        // The connection is in an unknown state; stop using it.
                        t.fail(e);
                        break;
                    }
                }
            }
            t
        }));
    }
    barrier.wait().await;
    let cpu0 = server.snap();
    let start = Instant::now();
    let dealer = match pace {
        Pace::Rate(rate) => Some(deal(queues, rate, start, start + duration)),
        Pace::Closed => None,
    };
    let mut all = Tally::default();
    for task in tasks {
        match task.await {
            Ok(t) => all.merge(t),
            Err(e) => all.fail(e),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(d) = dealer {
        // Every queue is closed once the tasks are done, so the thread has stopped or stops now.
        let _ = d.join();
    }
    let (ok, unmade) = (all.ok, all.unmade);
    let mut out = all.into_json(elapsed);
    out["mode"] = json!("requests");
    out["http"] = json!(proto.name());
    out["concurrency"] = json!(concurrency);
    out["plain"] = json!(client.is_none());
    if let Pace::Rate(rate) = pace {
        out["pace"] = json!("open");
        out["target_rate"] = json!(rate);
        out["unmade"] = json!(unmade);
    } else {
        out["pace"] = json!("closed");
    }
    add_cpu(&mut out, server, &cpu0, elapsed, ok);
    out
}

/// Direction of a bulk transfer, seen from the client.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Direction {
    Up,
    Down,
}

/// One transfer of `bytes` through the proxy, stopped (and marked truncated) at `max`.
pub async fn bulk(
    client: Option<Client>,
    addr: SocketAddr,
    bytes: u64,
    dir: Direction,
    max: Duration,
    server: &Server,
) -> Value {
    let mut out = json!({"mode": "bulk", "direction": format!("{dir:?}").to_lowercase(), "bytes": bytes, "plain": client.is_none()});
    let mut buf = Vec::with_capacity(256);
    let (mut s, (suite, group)) = match open(client.as_ref(), addr, &mut buf).await {
        Ok(x) => x,
        Err(e) => {
            out["ok"] = json!(0);
            out["failed"] = json!(1);
            out["first_error"] = json!(format!("connect: {e}"));
            return out;
        }
    };
    out["suite"] = json!(suite);
    out["group"] = json!(group);
    let cpu0 = server.snap();
    let start = Instant::now();
    let deadline = start + max;
    let r = match dir {
        Direction::Down => bulk_down(&mut s, &mut buf, bytes, deadline).await,
        Direction::Up => bulk_up(&mut s, &mut buf, bytes, deadline).await,
    };
    let elapsed = start.elapsed().as_secs_f64();
    match r {
        Ok(done) => {
            out["ok"] = json!(1);
            out["failed"] = json!(0);
            out["transferred"] = json!(done);
            out["truncated"] = json!(done < bytes);
            out["elapsed_s"] = json!(round2(elapsed));
            out["mb_per_s"] = json!(round2(done as f64 / 1e6 / elapsed));
        }
        Err(e) => {
            out["ok"] = json!(0);
            out["failed"] = json!(1);
            out["first_error"] = json!(e.to_string());
        }
    }
    add_cpu(&mut out, server, &cpu0, elapsed, 0);
    out.as_object_mut().map(|o| o.remove("per_server_cpu_s"));
    out
}

async fn bulk_down(
    s: &mut Box<dyn Stream>,
    buf: &mut Vec<u8>,
    bytes: u64,
    deadline: Instant,
) -> io::Result<u64> {
    let req = format!("GET /down/{bytes} HTTP/1.1\r\nHost: bench\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    s.flush().await?;
    buf.clear();
    let end = http::read_head(s, buf).await?.ok_or_else(|| {
        io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the response")
    })?;
    let (status, len) = http::parse_response_head(&buf[..end])?;
    if status != 200 || len != bytes {
        return Err(io::Error::other(format!("status {status}, length {len}")));
    }
    let mut got = (buf.len() - end) as u64;
    let mut chunk = vec![0u8; http::CHUNK];
    while got < bytes && Instant::now() < deadline {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("EOF after {got} bytes"),
            ));
        }
        got += n as u64;
    }
    Ok(got.min(bytes))
}

async fn bulk_up(
    s: &mut Box<dyn Stream>,
    buf: &mut Vec<u8>,
    bytes: u64,
    deadline: Instant,
) -> io::Result<u64> {
    let head = format!("POST /up HTTP/1.1\r\nHost: bench\r\nContent-Length: {bytes}\r\n\r\n");
    s.write_all(head.as_bytes()).await?;
    let done = http::write_zeros(s, bytes, || Instant::now() < deadline).await?;
    if done == bytes {
        // The backend answers only once it has sunk every byte: the clock stops here.
        buf.clear();
        let status = http::read_response(s, buf).await?;
        if status != 200 {
            return Err(io::Error::other(format!("status {status}")));
        }
    }
    Ok(done)
}

/// Opens up to `count` mTLS connections (each proven with one request, so the proxy has dialled
/// the backend too), holds them, and reports the server's RSS growth per connection.
pub async fn idle(
    client: Client,
    addrs: &[SocketAddr],
    count: usize,
    parallel: usize,
    max: Duration,
    hold: Duration,
    server: &Server,
) -> Value {
    let rss0 = (!server.pids.is_empty()).then(|| stats::tree_rss_kib(&server.pids));
    let start = Instant::now();
    let deadline = start + max;
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<io::Result<Box<dyn Stream>>>();
    let spawner = {
        let client = client.clone();
        let addrs = addrs.to_vec();
        tokio::spawn(async move {
            for i in 0..count {
                let addr = addrs[i % addrs.len()];
                let Ok(permit) = sem.clone().acquire_owned().await else {
                    return;
                };
                if Instant::now() >= deadline {
                    return;
                }
                let client = client.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let r = open(Some(&client), addr, &mut buf).await.map(|(s, _)| s);
                    drop(permit);
                    let _ = tx.send(r);
                });
            }
        })
    };
    let mut held = Vec::with_capacity(count);
    let mut t = Tally::default();
    while held.len() + (t.failed as usize) < count {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(Ok(s))) => held.push(s),
            Ok(Some(Err(e))) => t.fail(e),
            Ok(None) | Err(_) => break,
        }
    }
    spawner.abort();
    let setup = start.elapsed().as_secs_f64();
    // Let the server finish the work it defers (tickets, buffers) before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut out = json!({
        "mode": "idle",
        "listeners": addrs.len(),
        "requested": count,
        "ready": held.len(),
        "failed": t.failed,
        "setup_s": round2(setup),
    });
    if let Some(e) = t.first_error {
        out["first_error"] = json!(e);
    }
    if let Some(r0) = rss0 {
        let r1 = stats::tree_rss_kib(&server.pids);
        out["server_rss_before_kib"] = json!(r0);
        out["server_rss_after_kib"] = json!(r1);
        if !held.is_empty() {
            out["rss_per_conn_kib"] =
                json!(round2(r1.saturating_sub(r0) as f64 / held.len() as f64));
        }
    }
    eprintln!("idle: {} connections held", held.len());
    tokio::time::sleep(hold).await;
    drop(held);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::tls::TlsArgs;
    use tokio::net::TcpListener;

    /// A minimal rustls mTLS terminator in front of the backend: enough to exercise the client
    /// side of every TLS mode without any external peer.
    async fn tls_proxy(dir: &std::path::Path, backend: SocketAddr) -> SocketAddr {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(dir)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(sock).await else {
                        return;
                    };
                    let Ok(mut up) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                });
            }
        });
        addr
    }

    /// An mTLS server speaking HTTP/2 only (ALPN h2): 200 "ok" to every request.
    async fn h2_server(dir: &std::path::Path) -> SocketAddr {
        let mut cfg = server_config(dir);
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(sock).await else {
                        return;
                    };
                    let Ok(mut conn) = h2::server::handshake(tls).await else {
                        return;
                    };
                    while let Some(Ok((_req, mut respond))) = conn.accept().await {
                        let resp = ::http::Response::builder().status(200).body(()).unwrap();
                        if let Ok(mut body) = respond.send_response(resp, false) {
                            let _ = body.send_data(bytes::Bytes::from_static(b"ok"), true);
                        }
                    }
                });
            }
        });
        addr
    }

    fn server_config(dir: &std::path::Path) -> rustls::ServerConfig {
        crate::alone::server_config(dir).unwrap()
    }

    fn args(dir: &std::path::Path, cert: &str) -> TlsArgs {
        TlsArgs {
            cert: Some(dir.join(cert)),
            key: Some(dir.join("client.key")),
            ca: Some(dir.join("root.pem")),
            server_name: "localhost".into(),
            kx: "x25519".into(),
            no_verify_server: false,
            conn_timeout: 5.0,
        }
    }

    #[tokio::test]
    async fn tls_modes_against_an_in_process_mtls_server() {
        let dir = std::env::temp_dir().join(format!("loadgen-modes-{}", std::process::id()));
        crate::certs::generate(&dir).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = listener.local_addr().unwrap();
        tokio::spawn(crate::backend::serve(listener));
        let addr = tls_proxy(&dir, backend).await;
        let server = Server {
            pids: vec![],
            upstream: vec![],
            ticks: 100.0,
        };
        let client = Client::new(&args(&dir, "client-chain.pem")).unwrap();
        let short = Duration::from_millis(300);

        let none = || Budget::new(None);
        let full = handshakes(Some(client.clone()), addr, 2, short, false, none(), &server).await;
        assert_eq!(full["failed"], 0, "{full}");
        assert!(full["ok"].as_u64().unwrap() > 0, "{full}");
        assert_eq!(full["resumed"], 0, "{full}");
        assert_eq!(full["group"], "X25519", "{full}");

        // Plain new connections (the `mutual connect` case), here straight to the backend.
        let plain = handshakes(None, backend, 2, short, false, none(), &server).await;
        assert_eq!(plain["failed"], 0, "{plain}");
        assert!(plain["ok"].as_u64().unwrap() > 0, "{plain}");

        // --count: exactly that many connections, long before the deadline.
        let resumed = handshakes(
            Some(client.clone()),
            addr,
            2,
            Duration::from_secs(60),
            true,
            Budget::new(Some(6)),
            &server,
        )
        .await;
        assert_eq!(resumed["ok"], 6, "{resumed}");
        assert!(resumed["resumed"].as_u64().unwrap() > 0, "{resumed}");

        let idle_run = idle(
            client.clone(),
            &[addr],
            5,
            2,
            Duration::from_secs(10),
            Duration::ZERO,
            &server,
        )
        .await;
        assert_eq!(idle_run["ready"], 5, "{idle_run}");

        // The server only accepts the chain (leaf + intermediate); a client sending the leaf alone
        // is refused, and that must show up as failures, not successes.
        let leaf_only = dir.join("client-leaf.pem");
        let pem = std::fs::read_to_string(dir.join("client-chain.pem")).unwrap();
        let end =
            pem.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----\n".len();
        std::fs::write(&leaf_only, &pem[..end]).unwrap();
        let bad = Client::new(&args(&dir, "client-leaf.pem")).unwrap();
        let refused = handshakes(
            Some(bad),
            addr,
            1,
            Duration::from_millis(100),
            false,
            none(),
            &server,
        )
        .await;
        assert_eq!(refused["ok"], 0, "{refused}");
        assert!(refused["failed"].as_u64().unwrap() > 0, "{refused}");

        // HTTP/2: kept-alive requests and new connections against an h2 server; against the
        // HTTP/1.1-only proxy (no ALPN) the h2 client fails with the reason, it never counts.
        let h2_addr = h2_server(&dir).await;
        let h2_client = client.h2();
        let reqs = requests(
            Some(h2_client.clone()),
            h2_addr,
            2,
            Duration::from_secs(60),
            Pace::Closed,
            Budget::new(Some(10)),
            &server,
        )
        .await;
        assert_eq!(
            (reqs["ok"].as_u64(), reqs["failed"].as_u64()),
            (Some(10), Some(0)),
            "{reqs}"
        );
        assert_eq!(reqs["http"], "h2", "{reqs}");
        let conns = handshakes(
            Some(h2_client.clone()),
            h2_addr,
            2,
            Duration::from_secs(60),
            false,
            Budget::new(Some(4)),
            &server,
        )
        .await;
        assert_eq!(
            (conns["ok"].as_u64(), conns["failed"].as_u64()),
            (Some(4), Some(0)),
            "{conns}"
        );
        let no_h2 = requests(
            Some(h2_client),
            addr,
            1,
            Duration::from_secs(10),
            Pace::Closed,
            Budget::new(Some(1)),
            &server,
        )
        .await;
        assert_eq!(no_h2["ok"], 0, "{no_h2}");
        assert_eq!(
            no_h2["first_error"], "connect: the server did not select h2 (ALPN)",
            "{no_h2}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
