//! `loadgen`: the load generator, backend and report writer behind `bench/run.sh`, which puts
//! `mutual serve` side by side with nginx, HAProxy and stunnel (issue 7).
//!
//! Every measurement prints one JSON object per line (`--json`), tagged with the contender and
//! the case, so the harness only has to append them to a file and call `loadgen report`.
#![forbid(unsafe_code)]

mod alone;
mod backend;
mod ca;
mod certs;
mod crypto;
mod http;
mod http2;
mod modes;
mod report;
mod stats;
mod stime;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(
    about = "Load generator for the side-by-side mTLS proxy benchmarks",
    version
)]
struct Cli {
    /// Runtime worker threads (default: the CPUs this process may run on).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Tags and server-side readings common to every measurement.
#[derive(clap::Args, Debug, Clone)]
struct Common {
    /// Print one JSON object on one line (for the harness) instead of indented JSON.
    #[arg(long)]
    json: bool,
    /// Name of the server being measured, copied into the output.
    #[arg(long, default_value = "")]
    contender: String,
    /// Name of this measurement, copied into the output.
    #[arg(long, default_value = "")]
    case: String,
    /// Pid of the server (its child processes are included): reports its CPU time and RSS.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Pid of the server behind a client-side proxy (`mutual connect`, nginx proxy_ssl, ...):
    /// reports its CPU time per connection (`upstream_cpu_us_per_conn`: lower when resumed).
    #[arg(long = "upstream-pid")]
    upstream_pids: Vec<u32>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// New TCP + mTLS 1.3 connection for every request: full (or resumed) handshakes per second.
    Handshakes {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// How long to run: 10s, 500ms, 1m or plain seconds.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Resume with TLS 1.3 session tickets: each of the concurrent clients keeps its own
        /// session cache and reconnects with a ticket from its previous connection.
        #[arg(long)]
        resume: bool,
        /// Plain TCP, no TLS: new connections to `mutual connect` (or a peer's client-side
        /// proxy), which makes the mTLS handshake itself.
        #[arg(long, conflicts_with = "resume")]
        plain: bool,
        /// HTTP/2 (ALPN h2, which the server must select) instead of HTTP/1.1: for proxies in
        /// HTTP mode.
        #[arg(long, conflicts_with = "plain")]
        h2: bool,
        /// Stop after this many connections in all (or at --duration, whichever is first):
        /// a fixed amount of work, for instruction counts (bench/instructions.sh).
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        tls: tls::TlsArgs,
        #[command(flatten)]
        common: Common,
    },
    /// The same handshakes made by `openssl s_time` (one connection at a time, `-new` or
    /// `-reuse`, `GET /` each): the independent client. Counts only connections whose response
    /// came back (s_time itself also counts handshakes the server then refused).
    STime {
        #[arg(long)]
        addr: SocketAddr,
        /// Whole seconds (`s_time -time`).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Resume one session over and over (`s_time -reuse`) instead of full handshakes.
        #[arg(long)]
        reuse: bool,
        /// The openssl binary.
        #[arg(long, default_value = "openssl")]
        openssl: PathBuf,
        /// Bytes of the backend's answer to `GET / HTTP/1.0`: one per accepted connection.
        #[arg(long, default_value_t = http::OK_SMALL.len() as u64)]
        response_bytes: u64,
        /// Where to write the scratch CA file (roots + intermediates of --cert).
        #[arg(long, default_value = "/tmp")]
        scratch: PathBuf,
        /// Send the leaf alone (no intermediate): every server refuses it, s_time counts it
        /// anyway. Shows what an s_time run with `-cert chain.pem -CAfile root.pem` measures.
        #[arg(long)]
        leaf_only: bool,
        #[command(flatten)]
        tls: tls::TlsArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Small HTTP/1.1 GETs over kept-alive connections: requests per second and latency.
    Requests {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Plain TCP, no TLS (the backend-direct baseline).
        #[arg(long)]
        plain: bool,
        /// HTTP/2 over each connection (ALPN h2, which the server must select) instead of
        /// HTTP/1.1: for proxies in HTTP mode.
        #[arg(long, conflicts_with_all = ["plain", "post"])]
        h2: bool,
        /// Stop after this many requests in all (or at --duration, whichever is first).
        #[arg(long)]
        count: Option<u64>,
        /// Open loop: send this many requests per second in all, at evenly spaced times dealt
        /// to the connections in turn, whether or not earlier responses are back (as wrk2
        /// does); each latency counts from when its request was due. Without it, each
        /// connection sends its next request when the last response is in (closed loop: the
        /// latency is then mostly queueing, concurrency / requests per second).
        #[arg(long, conflicts_with = "count", value_parser = parse_rate)]
        rate: Option<f64>,
        /// Send `POST PATH` with --body instead of `GET /` (e.g. the online CA's /v1/renew: one
        /// certificate issued per request); any 2xx counts as a success.
        #[arg(long, value_name = "PATH")]
        post: Option<String>,
        /// JSON body for --post.
        #[arg(long, default_value = "{}", requires = "post")]
        body: String,
        #[command(flatten)]
        tls: tls::TlsArgs,
        #[command(flatten)]
        common: Common,
    },
    /// One large transfer through the proxy: MB/s (10^6 bytes per second).
    Bulk {
        #[arg(long)]
        addr: SocketAddr,
        /// Size: 1GiB, 256MiB, 100MB or plain bytes.
        #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
        bytes: u64,
        #[arg(long, value_enum)]
        direction: modes::Direction,
        /// Stop after this long even if not done (the output says it was truncated).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        max_time: Duration,
        #[arg(long)]
        plain: bool,
        #[command(flatten)]
        tls: tls::TlsArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Opens COUNT mTLS connections, holds them, and reports the server's RSS per connection.
    Idle {
        /// Where to connect; repeat for several listeners (connections go round-robin).
        #[arg(long, required = true)]
        addr: Vec<SocketAddr>,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Handshakes in flight while opening.
        #[arg(long, default_value_t = 64)]
        parallel: usize,
        /// Stop opening after this long and report what is held.
        #[arg(long, default_value = "90s", value_parser = parse_duration)]
        max_time: Duration,
        /// Keep the connections this long after reporting (for outside inspection).
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        hold: Duration,
        #[command(flatten)]
        tls: tls::TlsArgs,
        #[command(flatten)]
        common: Common,
    },
    /// The machine's limit: aws-lc-rs sign/verify/key exchange per second, AES-128-GCM MB/s.
    Crypto {
        /// Seconds spent on each operation.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// The bench's certificates (`gen-certs --out DIR`): also time a stock rustls server's
        /// side of full and resumed mTLS handshakes in memory ("rustls alone").
        #[arg(long)]
        certs: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// The CA: certificates issued per second into the SQLite inventory (in process, TASKS
    /// concurrent issuers), then `list` and CRL time with the inventory filled to FILL rows
    /// (synthetic rows inserted with SQL, REVOKED_PER_MILLE of them revoked).
    Ca {
        /// A new (or empty) directory for the throwaway CA.
        #[arg(long)]
        dir: PathBuf,
        /// Concurrent issuers (bench/run.sh's CA_TASKS): enough that the core keeps signing
        /// while a group's commit waits for its fsync.
        #[arg(long, default_value_t = 256)]
        tasks: usize,
        /// How long to issue for.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        duration: Duration,
        #[arg(long, default_value_t = 100_000)]
        fill: u64,
        #[arg(long, default_value_t = 100)]
        revoked_per_mille: u64,
        /// Also time `mutual cert list` and `mutual ca crl` with this binary.
        #[arg(long)]
        mutual: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// The backend every contender forwards to (HTTP/1.1 keep-alive; /down/N sources N bytes,
    /// request bodies are sunk).
    Backend {
        #[arg(long)]
        listen: SocketAddr,
        /// Answer 403 to a request without this header (the client identity a proxy in HTTP
        /// mode forwards, e.g. X-Forwarded-Client-Cert): such a request then counts as failed.
        #[arg(long, value_name = "NAME")]
        require_header: Option<String>,
        /// Text the --require-header value must contain (e.g. `Hash=` for XFCC).
        #[arg(
            long,
            value_name = "TEXT",
            default_value = "",
            requires = "require_header"
        )]
        require_contains: String,
    },
    /// Writes one ECDSA P-256 chain (root, intermediate, server and client leaves) into DIR.
    GenCerts {
        #[arg(long)]
        out: PathBuf,
    },
    /// Renders a results file (JSON lines) as the markdown table.
    Report {
        #[arg(long = "in")]
        input: PathBuf,
    },
    /// Prints a contender status line (`ok` or why it did not run) for the results file.
    Status {
        #[arg(long)]
        contender: String,
        #[arg(long)]
        text: String,
    },
    /// Prints a TCP port that was free on 127.0.0.1 a moment ago.
    FreePort,
}

/// Parses 10s, 500ms, 2m, 1.5 (seconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?}"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// Parses a request rate per second: a positive number, at most 1,000,000 (one request a
/// microsecond is already beyond any server here, and the pacing thread's resolution).
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e6 => Ok(v),
        _ => Err(format!(
            "bad rate {s:?}: requests per second, more than 0 and at most 1000000"
        )),
    }
}

/// Parses 1GiB, 64MiB, 4KiB, 100MB, 1GB, 12345.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let units: [(&str, u64); 7] = [
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("kB", 1_000),
        ("B", 1),
    ];
    let (num, mult) = units
        .iter()
        .find_map(|(u, m)| s.strip_suffix(u).map(|n| (n, *m)))
        .unwrap_or((s, 1));
    let v: u64 = num.trim().parse().map_err(|_| format!("bad size {s:?}"))?;
    v.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} too large"))
}

/// The TLS client of a request mode (none with --plain), speaking HTTP/2 with --h2.
fn client_for(plain: bool, h2: bool, tls: &tls::TlsArgs) -> anyhow::Result<Option<tls::Client>> {
    if plain {
        return Ok(None);
    }
    let client = tls::Client::new(tls)?;
    Ok(Some(if h2 { client.h2() } else { client }))
}

fn server_of(common: &Common) -> modes::Server {
    modes::Server {
        pids: common.server_pids.clone(),
        upstream: common.upstream_pids.clone(),
        ticks: stats::clock_ticks(),
    }
}

/// Prints a result tagged with contender and case; exit 1 when nothing succeeded.
fn emit(common: &Common, addr: Option<SocketAddr>, mut v: Value) -> ExitCode {
    v["contender"] = json!(common.contender);
    v["case"] = json!(common.case);
    if let Some(a) = addr {
        v["addr"] = json!(a.to_string());
    }
    let text = if common.json {
        v.to_string()
    } else {
        serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
    };
    println!("{text}");
    match v.get("ok").and_then(Value::as_u64) {
        Some(0) => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    }
}

fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        b.worker_threads(n.max(1));
    }
    Ok(b.enable_all().build()?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let rt = || runtime(cli.threads);
    Ok(match cli.cmd {
        Cmd::Handshakes {
            addr,
            concurrency,
            duration,
            resume,
            plain,
            h2,
            count,
            tls,
            common,
        } => {
            if concurrency == 0 {
                bail!("--concurrency must be at least 1");
            }
            let client = client_for(plain, h2, &tls)?;
            let v = rt()?.block_on(modes::handshakes(
                client,
                addr,
                concurrency,
                duration,
                resume,
                modes::Budget::new(count),
                &server_of(&common),
            ));
            emit(&common, Some(addr), v)
        }
        Cmd::STime {
            addr,
            seconds,
            reuse,
            openssl,
            response_bytes,
            scratch,
            leaf_only,
            tls,
            common,
        } => {
            let (Some(cert), Some(key), Some(ca)) = (tls.cert, tls.key, tls.ca) else {
                bail!("--cert, --key and --ca are required");
            };
            if seconds == 0 {
                bail!("--seconds must be at least 1");
            }
            let v = stime::run(
                &stime::Opts {
                    openssl,
                    addr,
                    seconds,
                    reuse,
                    cert,
                    key,
                    ca,
                    response_bytes,
                    scratch,
                    leaf_only,
                },
                &server_of(&common),
            )?;
            emit(&common, Some(addr), v)
        }
        Cmd::Requests {
            addr,
            concurrency,
            duration,
            plain,
            h2,
            count,
            rate,
            post,
            body,
            tls,
            common,
        } => {
            if concurrency == 0 {
                bail!("--concurrency must be at least 1");
            }
            if let Some(path) = &post {
                http::set_post(path, &body);
            }
            let client = client_for(plain, h2, &tls)?;
            let v = rt()?.block_on(modes::requests(
                client,
                addr,
                concurrency,
                duration,
                rate.map_or(modes::Pace::Closed, modes::Pace::Rate),
                modes::Budget::new(count),
                &server_of(&common),
            ));
            emit(&common, Some(addr), v)
        }
        Cmd::Bulk {
            addr,
            bytes,
            direction,
            max_time,
            plain,
            tls,
            common,
        } => {
            let client = if plain {
                None
            } else {
                Some(tls::Client::new(&tls)?)
            };
            let v = rt()?.block_on(modes::bulk(
                client,
                addr,
                bytes,
                direction,
                max_time,
                &server_of(&common),
            ));
            emit(&common, Some(addr), v)
        }
        Cmd::Idle {
            addr,
            count,
            parallel,
            max_time,
            hold,
            tls,
            common,
        } => {
            let client = tls::Client::new(&tls)?;
            let v = rt()?.block_on(modes::idle(
                client,
                &addr,
                count,
                parallel,
                max_time,
                hold,
                &server_of(&common),
            ));
            let code = emit(&common, addr.first().copied(), v.clone());
            if v.get("ready").and_then(Value::as_u64) == Some(0) {
                ExitCode::from(1)
            } else {
                code
            }
        }
        Cmd::Ca {
            dir,
            tasks,
            duration,
            fill,
            revoked_per_mille,
            mutual,
            common,
        } => {
            if revoked_per_mille > 1000 {
                bail!("--revoked-per-mille is at most 1000");
            }
            let v = rt()?.block_on(ca::run(ca::Opts {
                dir,
                tasks,
                duration,
                fill,
                revoked_per_mille,
                mutual,
            }))?;
            emit(&common, None, v)
        }
        Cmd::Crypto {
            seconds,
            certs,
            common,
        } => {
            let mut v = crypto::run(seconds)?;
            if let Some(dir) = certs {
                let (full_us, resumed_us) = alone::run(&dir, seconds)?;
                v["rustls_server_full_us"] = json!(stats::round2(full_us));
                v["rustls_server_resumed_us"] = json!(stats::round2(resumed_us));
            }
            emit(&common, None, v)
        }
        Cmd::Backend {
            listen,
            require_header,
            require_contains,
        } => {
            let identity = require_header.map(|header| backend::Identity {
                header,
                contains: require_contains,
            });
            rt()?.block_on(backend::run(listen, identity))?;
            ExitCode::SUCCESS
        }
        Cmd::GenCerts { out } => {
            certs::generate(&out)?;
            println!("certificates written to {}", out.display());
            ExitCode::SUCCESS
        }
        Cmd::Report { input } => {
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("reading {}", input.display()))?;
            print!("{}", report::render(&text));
            ExitCode::SUCCESS
        }
        Cmd::Status { contender, text } => {
            println!("{}", json!({"contender": contender, "status": text}));
            ExitCode::SUCCESS
        }
        Cmd::FreePort => {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", l.local_addr()?.port());
            ExitCode::SUCCESS
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("100MB").unwrap(), 100_000_000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999999GiB").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
