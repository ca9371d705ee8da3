//! The second client: `openssl s_time` against the same server, with the same certificates, so
//! that every handshake figure is also measured by a client we did not write (issue 25).
//!
//! Why a wrapper and not `openssl s_time` straight from the harness:
//! - `s_time` counts a connection as made as soon as its side of the handshake is done. In TLS 1.3
//!   the client finishes before the server has checked the client certificate, so a server that
//!   *rejects* every client certificate still gets counted, at a third of the CPU cost (no chain
//!   verification, no backend connection). That is how an earlier cross-check found HAProxy
//!   "2.5x cheaper" under `s_time`: its `-cert` loads only the leaf, the intermediate was never
//!   sent, and every handshake ended in `unknown_ca`. Here a connection counts only when the
//!   backend's response came back: `s_time -www /` reads it and prints the total bytes read, and
//!   each accepted connection reads exactly one response.
//! - `s_time -cert` takes one certificate; OpenSSL sends intermediates only when it can build the
//!   chain from its verify store. We write a CA file with the roots *and* the intermediates of
//!   `--cert`, so the client sends leaf + intermediate like loadgen does.
//! - The server's CPU time is read around the run, as for loadgen's own modes.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::modes::Server;
use crate::stats::{self, round2};

/// What `s_time` printed, parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct Printed {
    /// Connections `s_time` counted (accepted or not).
    pub connections: u64,
    /// Total application bytes read over all connections.
    pub bytes_read: u64,
    /// Connections `s_time` marked as resumed ('r' in its progress line).
    pub reused: u64,
}

/// The characters `s_time` prints per connection: `r` reused, `t` TLS 1.0, `3` SSL 3, `*` any
/// other version (TLS 1.3 here).
const PROGRESS: &str = "rt3*";

/// Parses `s_time`'s output: the progress characters (one per connection, `r` when the session
/// was reused) and the summary line `N connections in Ts; X connections/user sec, bytes read B`.
pub fn parse(stdout: &str) -> Option<Printed> {
    let mut out = None;
    let mut reused = 0;
    for line in stdout.lines() {
        if let Some((n, rest)) = line.split_once(" connections in ") {
            let Some((_, bytes)) = rest.split_once("bytes read ") else {
                continue;
            };
            // The second summary line ("... real seconds, B bytes read per connection") does
            // not match: its "bytes read" is followed by " per connection".
            if let (Ok(connections), Ok(bytes_read)) =
                (n.trim().parse::<u64>(), bytes.trim().parse::<u64>())
            {
                out = Some((connections, bytes_read));
            }
        } else if !line.is_empty() && line.chars().all(|c| PROGRESS.contains(c)) {
            // Not "starting", which -reuse prints first.
            reused += line.chars().filter(|&c| c == 'r').count() as u64;
        }
    }
    let (connections, bytes_read) = out?;
    Some(Printed {
        connections,
        bytes_read,
        reused,
    })
}

/// Options for one `s_time` run.
pub struct Opts {
    pub openssl: PathBuf,
    pub addr: SocketAddr,
    pub seconds: u64,
    pub reuse: bool,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// Bytes of one response to `GET / HTTP/1.0` (what proves one accepted connection).
    pub response_bytes: u64,
    /// Where to write the CA file with roots + intermediates (a scratch directory).
    pub scratch: PathBuf,
    /// Leave the intermediates out of the CA file, so OpenSSL sends the leaf alone and every
    /// server refuses it (unknown_ca): reproduces the misleading cross-check. The figure to
    /// read is then `per_server_cpu_s_as_counted_by_s_time`.
    pub leaf_only: bool,
}

/// Writes `ca` followed by every certificate of `chain` after the first (the intermediates),
/// or `ca` alone when `chain` is `None`.
fn write_store(ca: &Path, chain: Option<&Path>, out: &Path) -> anyhow::Result<()> {
    let roots = std::fs::read_to_string(ca).with_context(|| format!("reading {}", ca.display()))?;
    let chain_text = match chain {
        Some(c) => {
            std::fs::read_to_string(c).with_context(|| format!("reading {}", c.display()))?
        }
        None => String::new(),
    };
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    let intermediates: Vec<&str> = chain_text.split(BEGIN).skip(2).collect();
    let mut f = std::fs::File::create(out).with_context(|| format!("writing {}", out.display()))?;
    f.write_all(roots.as_bytes())?;
    for c in intermediates {
        f.write_all(b"\n")?;
        f.write_all(BEGIN.as_bytes())?;
        f.write_all(c.as_bytes())?;
    }
    Ok(())
}

pub fn run(o: &Opts, server: &Server) -> anyhow::Result<Value> {
    std::fs::create_dir_all(&o.scratch)?;
    let store = o
        .scratch
        .join(format!("s_time-ca-{}.pem", std::process::id()));
    write_store(&o.ca, (!o.leaf_only).then_some(o.cert.as_path()), &store)?;
    let cpu0 = server.cpu();
    let client0 = stats::children_cpu_seconds(server.ticks);
    let start = Instant::now();
    let output = Command::new(&o.openssl)
        .arg("s_time")
        .args(["-connect", &o.addr.to_string()])
        .arg(if o.reuse { "-reuse" } else { "-new" })
        .args(["-www", "/"])
        .arg("-cert")
        .arg(&o.cert)
        .arg("-key")
        .arg(&o.key)
        .arg("-CAfile")
        .arg(&store)
        .args(["-time", &o.seconds.to_string()])
        .output();
    let elapsed = start.elapsed().as_secs_f64();
    let cpu1 = server.cpu();
    let _ = std::fs::remove_file(&store);
    let output = output.with_context(|| format!("running {} s_time", o.openssl.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(p) = parse(&stdout) else {
        let err = String::from_utf8_lossy(&output.stderr);
        bail!(
            "openssl s_time printed no summary (exit {:?}): {}",
            output.status.code(),
            err.lines().take(3).collect::<Vec<_>>().join(" | ")
        );
    };
    let ok = p
        .bytes_read
        .checked_div(o.response_bytes)
        .unwrap_or(0)
        .min(p.connections);
    let failed = p.connections - ok;
    let mut v = json!({
        "mode": "s_time",
        "client": format!("openssl s_time {}", if o.reuse { "-reuse" } else { "-new" }),
        "connections_counted_by_s_time": p.connections,
        "ok": ok,
        "failed": failed,
        "rate": round2(ok as f64 / elapsed),
        "elapsed_s": round2(elapsed),
        "client_cpu_s": round2(stats::children_cpu_seconds(server.ticks) - client0),
    });
    if o.leaf_only {
        v["leaf_only"] = json!(true);
    }
    if o.reuse && p.connections > 0 {
        v["resumed_fraction"] = json!(round2(p.reused as f64 / p.connections as f64));
    }
    if failed > 0 {
        v["first_error"] = json!(format!(
            "{failed} of the {} connections s_time counted got no response (the server refused the handshake or the backend)",
            p.connections
        ));
    }
    if let (Some(b), Some(a)) = (cpu0, cpu1) {
        let used = a - b;
        v["server_cpu_s"] = json!(round2(used));
        v["server_cpu_util"] = json!(round2(used / elapsed));
        if used > 0.0 {
            v["per_server_cpu_s"] = json!(round2(ok as f64 / used));
            v["per_server_cpu_s_as_counted_by_s_time"] = json!(round2(p.connections as f64 / used));
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_new_and_reuse_output() {
        let new = "Collecting connection statistics for 2 seconds\n\
                   *********************\n\n\
                   1323 connections in 1.04s; 1272.12 connections/user sec, bytes read 52920\n\
                   1323 connections in 3 real seconds, 40 bytes read per connection\n";
        assert_eq!(
            parse(new),
            Some(Printed {
                connections: 1323,
                bytes_read: 52920,
                reused: 0
            })
        );
        let reuse = "starting\nrrrrrrrr\nrrr\n\n\
                     11 connections in 0.01s; 1100.00 connections/user sec, bytes read 0\n\
                     11 connections in 2 real seconds, 0 bytes read per connection\n";
        assert_eq!(
            parse(reuse),
            Some(Printed {
                connections: 11,
                bytes_read: 0,
                reused: 11
            })
        );
        assert_eq!(parse("s_time: cannot connect\n"), None);
    }

    #[test]
    fn store_holds_roots_then_intermediates() {
        let dir = std::env::temp_dir().join(format!("loadgen-stime-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, chain, out) = (dir.join("ca"), dir.join("chain"), dir.join("out"));
        let pem =
            |b: &str| format!("-----BEGIN CERTIFICATE-----\n{b}\n-----END CERTIFICATE-----\n");
        std::fs::write(&ca, pem("ROOT")).unwrap();
        std::fs::write(&chain, format!("{}{}", pem("LEAF"), pem("INT"))).unwrap();
        write_store(&ca, Some(&chain), &out).unwrap();
        let s = std::fs::read_to_string(&out).unwrap();
        assert!(
            s.contains("ROOT") && s.contains("INT") && !s.contains("LEAF"),
            "{s}"
        );
        assert_eq!(s.matches("-----BEGIN CERTIFICATE-----").count(), 2, "{s}");
        write_store(&ca, None, &out).unwrap();
        let s = std::fs::read_to_string(&out).unwrap();
        assert!(s.contains("ROOT") && !s.contains("INT"), "{s}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
