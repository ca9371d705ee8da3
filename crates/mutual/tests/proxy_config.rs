//! `mutual run --config`: three listeners (two serve, one connect) in one real process, traffic
//! through each with real clients (rustls, curl, plain TCP through `connect`); live
//! re-authorization of established connections when a listener's inline policy (config edit),
//! its policy file, or its CRL changes (exactly the no-longer-allowed connection is closed,
//! counted and audited; every other connection keeps working); broken config edits change
//! nothing; and `mutual config check` reports every error with its line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod proxy_common;
use proxy_common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const B_ID: &str = "spiffe://test.mutual/client/b";

/// A backend that answers an HTTP GET with 200 (for curl) and echoes anything else, for as
/// long as the connection stays open (for long-lived connections).
fn echo_backend() -> SocketAddr {
    mutual_test::tcp_server(|mut s| {
        let mut buf = [0u8; 4096];
        let mut first = true;
        loop {
            let n = match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if first && buf[..n].starts_with(b"GET ") {
                let resp = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BACKEND_BODY}",
                    BACKEND_BODY.len()
                );
                let _ = s.write_all(resp.as_bytes());
                return;
            }
            first = false;
            if s.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    })
}

/// Sends a line and expects it back: the connection is open end to end.
fn echo<S: Read + Write + ?Sized>(s: &mut S, msg: &str) -> std::io::Result<()> {
    s.write_all(msg.as_bytes())?;
    s.flush()?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got)?;
    assert_eq!(String::from_utf8_lossy(&got), msg);
    Ok(())
}

/// Waits for the peer to close: a read gives EOF (or a reset) within the timeout.
fn sees_eof<S: Read>(s: &mut S) -> bool {
    let mut b = [0u8; 16];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

struct Run {
    child: Option<ChildGuard>,
    dir: tempfile::TempDir,
    metrics_port: u16,
    ports: [u16; 3],
    stderr: std::path::PathBuf,
}

impl Run {
    fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports[i]))
    }
    fn path(&self, f: &str) -> std::path::PathBuf {
        self.dir.path().join(f)
    }
    fn metrics(&self) -> String {
        http_get(
            SocketAddr::from(([127, 0, 0, 1], self.metrics_port)),
            "/metrics",
        )
        .1
    }
    fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series).unwrap_or(0.0)
    }
    fn wait_metric(&self, series: &str, want: f64) {
        let ok = eventually(EVENT_TIMEOUT, || {
            (self.metric(series) >= want).then_some(())
        });
        assert!(
            ok.is_some(),
            "{series} = {} (want {want})\nstderr:\n{}",
            self.metric(series),
            self.stderr_text()
        );
    }
    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
    /// Waits until `cond` holds; fails with `what` and the stderr of `mutual run` if it never does.
    fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let ok = eventually(EVENT_TIMEOUT, || cond().then_some(()));
        assert!(ok.is_some(), "{what}:\n{}", self.stderr_text());
    }
    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
    /// Replaces a file atomically (write + rename, as editors and config managers do).
    fn write(&self, f: &str, text: &str) {
        let tmp = self.path(&format!(".{f}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.path(f)).unwrap();
    }
}

fn config_text(r: &Run, backend: SocketAddr, a_allow: &str, a_cert: &str) -> String {
    format!(
        r#"metrics = "127.0.0.1:{m}"
audit_log = "audit.log"
threads = 2

[[listener]]
name = "a"
kind = "serve"
listen = "127.0.0.1:{p0}"
backend = "{backend}"
cert = "{a_cert}"
key = "server.key"
ca = "root.pem"
allow_spiffe = [{a_allow}]

[[listener]]
name = "b"
kind = "serve"
listen = "127.0.0.1:{p1}"
backend = "{backend}"
cert = "server.pem"
key = "server.key"
ca = "root.pem"
crls = ["crl.pem"]
crl_leaf_only = true
policy = "policy.toml"

[[listener]]
name = "c"
kind = "connect"
listen = "127.0.0.1:{p2}"
remote = "127.0.0.1:{p0}"
server_name = "localhost"
cert = "client.pem"
key = "client.key"
ca = "root.pem"
"#,
        m = r.metrics_port,
        p0 = r.ports[0],
        p1 = r.ports[1],
        p2 = r.ports[2],
    )
}

fn policy_text(ids: &[&str]) -> String {
    ids.iter()
        .map(|id| format!("[[allow]]\nspiffe = \"{id}\"\n"))
        .collect()
}

fn quoted(ids: &[&str]) -> String {
    ids.iter()
        .map(|i| format!("{i:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn config_check(path: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["config", "check", path.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Copies the certificates into a config directory, writes the three-listener config and
/// starts `mutual run` on it; returns once its metrics endpoint answers.
fn start(fx: &Fixture, backend: SocketAddr) -> Run {
    let dir = tempfile::tempdir().unwrap();
    for (src, dst) in [
        (&fx.server.cert, "server.pem"),
        (&fx.server.key, "server.key"),
        (&fx.pki.root, "root.pem"),
        (&fx.crl, "crl.pem"),
        (&fx.ok.cert, "client.pem"),
        (&fx.ok.key, "client.key"),
    ] {
        std::fs::copy(src, dir.path().join(dst)).unwrap();
    }
    let stderr = dir.path().join("stderr.log");
    let mut r = Run {
        child: None,
        dir,
        metrics_port: free_port(),
        ports: [free_port(), free_port(), free_port()],
        stderr,
    };
    std::fs::write(r.path("policy.toml"), policy_text(&[OK_ID, B_ID])).unwrap();
    let cfg_path = r.path("mutual.toml");
    std::fs::write(
        &cfg_path,
        config_text(&r, backend, &quoted(&[OK_ID, B_ID]), "server.pem"),
    )
    .unwrap();
    let (code, out) = config_check(&cfg_path);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok, 3 listener(s)"), "{out}");

    let mut child = ChildGuard(
        Command::new(BIN)
            .args(["run", "--config", cfg_path.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&r.stderr).unwrap())
            .spawn()
            .unwrap(),
    );
    let up = eventually(EVENT_TIMEOUT, || {
        if let Ok(Some(st)) = child.0.try_wait() {
            panic!("mutual run exited with {st}:\n{}", r.stderr_text());
        }
        try_http_get(
            SocketAddr::from(([127, 0, 0, 1], r.metrics_port)),
            "/healthz",
        )
        .filter(|(s, _)| *s == 200)
    });
    r.child = Some(child);
    assert!(
        up.is_some(),
        "mutual run did not come up:\n{}",
        r.stderr_text()
    );
    r
}

#[test]
fn three_listeners_live_reauthorization_and_broken_edits() {
    let fx = fixture();
    let b_leaf = fx
        .pki
        .leaf("b", LeafOpts::new("b").san(&format!("uri:{B_ID}")));
    let doomed = fx.pki.leaf(
        "doomed",
        LeafOpts::new("doomed").san(&format!("uri:{OK_ID}")),
    );
    let backend = echo_backend();
    let r = start(&fx, backend);
    let cfg_path = r.path("mutual.toml");

    // Traffic through each listener: curl on both serve listeners, plain HTTP through connect.
    let traffic = |r: &Run| {
        for port in [r.ports[0], r.ports[1]] {
            let (ok, code, body) = curl(port, &fx.pki.root, Some(&fx.ok));
            assert!(
                ok && code == "200" && body == BACKEND_BODY,
                "port {port}: {code} {body}\n{}",
                r.stderr_text()
            );
        }
        assert_eq!(http_get(r.addr(2), "/"), (200, BACKEND_BODY.to_string()));
        // Python's ssl module on the second serve listener.
        assert_eq!(
            python(r.ports[1], &fx.pki.root, Some(&fx.ok)),
            "HTTP/1.0 200 OK"
        );
    };
    traffic(&r);

    // Long-lived connections: two on `a` (OK and B), three on `b` (OK, B, doomed), one via `c`.
    let ok_cfg = rustls_config(&fx.pki.root, Some(&fx.ok));
    let b_cfg = rustls_config(&fx.pki.root, Some(&b_leaf));
    let doomed_cfg = rustls_config(&fx.pki.root, Some(&doomed));
    let mut a_ok = tls_connect(r.addr(0), &ok_cfg).unwrap();
    let mut a_b = tls_connect(r.addr(0), &b_cfg).unwrap();
    let mut b_ok = tls_connect(r.addr(1), &ok_cfg).unwrap();
    let mut b_b = tls_connect(r.addr(1), &b_cfg).unwrap();
    let mut b_doomed = tls_connect(r.addr(1), &doomed_cfg).unwrap();
    let mut c_plain = TcpStream::connect(r.addr(2)).unwrap();
    c_plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    for (n, s) in [
        ("a_ok", &mut a_ok as &mut dyn RW),
        ("a_b", &mut a_b),
        ("b_ok", &mut b_ok),
        ("b_b", &mut b_b),
        ("b_doomed", &mut b_doomed),
        ("c", &mut c_plain),
    ] {
        echo(s, &format!("hello {n}\n")).unwrap();
    }
    let term = |l: &str, reason: &str| {
        format!("mutual_authz_terminated_total{{listener=\"{l}\",reason=\"{reason}\"}}")
    };
    assert_eq!(r.metric(&term("a", "policy_denied")), 0.0);

    // 1. Config edit: listener a's inline rule no longer allows B. Exactly a_b is closed.
    r.write(
        "mutual.toml",
        &config_text(&r, backend, &quoted(&[OK_ID]), "server.pem"),
    );
    r.wait_metric(&term("a", "policy_denied"), 1.0);
    assert!(sees_eof(&mut a_b), "a_b should have been closed");
    echo(&mut a_ok, "still here a\n").unwrap();
    echo(&mut b_b, "still here b\n").unwrap();
    echo(&mut c_plain, "still here c\n").unwrap();
    assert_eq!(r.metric(&term("a", "policy_denied")), 1.0);
    assert_eq!(r.metric(&term("b", "policy_denied")), 0.0);
    let line = eventually(EVENT_TIMEOUT, || {
        r.audit().into_iter().find(|l| {
            l["listener"] == "a" && l["result"] == "denied" && l["identity"]["spiffe"] == B_ID
        })
    })
    .unwrap_or_else(|| panic!("no audit line for a_b: {:?}", r.audit()));
    assert_eq!(line["reason"], "policy_denied", "{line}");
    // New connections follow the new rule too. (While the new generation of `a` takes over, the
    // old one may still accept this connection with the old rule; it is then ended at once when
    // it registers, and counted as a termination: either way B gets nothing.)
    assert!(rustls_get(r.addr(0), &b_cfg).is_err());

    // 2. Policy file edit on b: B no longer allowed. Exactly b_b is closed.
    r.write("policy.toml", &policy_text(&[OK_ID]));
    r.wait_metric(&term("b", "policy_denied"), 1.0);
    assert!(sees_eof(&mut b_b), "b_b should have been closed");
    echo(&mut b_ok, "still here b_ok\n").unwrap();
    echo(&mut b_doomed, "still here doomed\n").unwrap();
    echo(&mut a_ok, "still here a again\n").unwrap();

    // 3. CRL update on b revokes `doomed`: its connection is closed with reason revoked.
    fx.pki.revoke(&doomed);
    let crl = fx.pki.crl("crl2.pem");
    r.write("crl.pem", &std::fs::read_to_string(crl).unwrap());
    r.wait_metric(&term("b", "revoked"), 1.0);
    assert!(sees_eof(&mut b_doomed), "b_doomed should have been closed");
    echo(&mut b_ok, "still here after crl\n").unwrap();
    let line = eventually(EVENT_TIMEOUT, || {
        r.audit()
            .into_iter()
            .find(|l| l["listener"] == "b" && l["result"] == "denied" && l["reason"] == "revoked")
    })
    .unwrap_or_else(|| panic!("no audit line for the revoked connection: {:?}", r.audit()));
    assert_eq!(line["identity"]["serial"], doomed.serial_hex.as_str());

    // 4. Broken edits change nothing: a syntax error, then a missing certificate file.
    let terminated = || -> Vec<f64> {
        [
            ("a", "policy_denied"),
            ("b", "policy_denied"),
            ("b", "revoked"),
        ]
        .iter()
        .map(|(l, why)| r.metric(&term(l, why)))
        .collect()
    };
    let terminated_before = terminated();
    let failures = "mutual_config_reloads_total{result=\"failure\"}";
    let before = r.metric(failures);
    // A broken edit (the `n`th): the reload fails and is counted, traffic keeps flowing, and
    // `config check` refuses the file; the line holding `needle` and the check's output.
    let broken_edit = |text: &str, n: f64, needle: &str| -> (usize, String) {
        r.write("mutual.toml", text);
        r.wait_metric(failures, before + n);
        traffic(&r);
        let (code, out) = config_check(&cfg_path);
        assert_eq!(code, 2, "{out}");
        (
            text.lines().position(|l| l.contains(needle)).unwrap() + 1,
            out,
        )
    };
    let good = config_text(&r, backend, &quoted(&[OK_ID]), "server.pem");
    let broken = good.replace("name = \"b\"", "name = \"b");
    let (b_line, out) = broken_edit(&broken, 1.0, "name = \"b");
    echo(&mut a_ok, "after syntax error\n").unwrap();
    echo(&mut c_plain, "after syntax error c\n").unwrap();
    assert!(
        out.contains(&format!("mutual.toml:{b_line}:")),
        "config check should name line {b_line}:\n{out}"
    );
    // The failure is counted before it is logged: wait for the log line.
    r.wait_until("the log should name the line", || {
        r.stderr_text().contains(&format!("mutual.toml:{b_line}:"))
    });

    let missing = config_text(&r, backend, &quoted(&[OK_ID]), "nope.pem");
    let (cert_line, out) = broken_edit(&missing, 2.0, "nope.pem");
    echo(&mut a_ok, "after missing cert\n").unwrap();
    echo(&mut b_ok, "after missing cert b\n").unwrap();
    assert!(
        out.contains(&format!("mutual.toml:{cert_line}:8: ")) && out.contains("nope.pem"),
        "config check should name line {cert_line}:\n{out}"
    );
    // Nothing was terminated by the broken edits (compared with before them: see step 1 for why
    // `a` may count B's refused new connection too).
    assert_eq!(terminated(), terminated_before);
    assert_eq!(r.metric(&term("b", "policy_denied")), 1.0);
    assert_eq!(r.metric(&term("b", "revoked")), 1.0);
    if std::env::var_os("SHOW_STDERR").is_some() {
        eprintln!("{}", r.stderr_text());
    }
}

trait RW: Read + Write {}
impl<T: Read + Write> RW for T {}

#[test]
fn config_check_lists_every_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let fx = fixture();
    std::fs::copy(&fx.pki.root, dir.path().join("root.pem")).unwrap();
    let text = r#"metrics = "127.0.0.1:9"
log_format = "fancy"

[[listener]]
name = "api"
kind = "serve"
listen = "127.0.0.1:18443"
backend = "127.0.0.1:8080"
cert = "missing.pem"
key = "missing.key"
ca = "root.pem"
allow_spiffe = ["spiffe://bad domain/x"]
idle_timeout = "forever"

[[listener]]
name = "api"
kind = "serve"
listen = "127.0.0.1:18443"
backend = "127.0.0.1:8080"
cert = "root.pem"
key = "root.pem"
ca = "root.pem"
colour = "blue"

[[listener]]
name = "open"
kind = "serve"
listen = "127.0.0.1:18444"
backend = "127.0.0.1:8080"
cert = "root.pem"
key = "root.pem"
ca = "root.pem"
allow_any = true
allow_cn = ["ops"]

[[listener.allow]]
spiffe = ["spiffe://t.example/x"]

[[listener]]
name = "tcp"
kind = "serve"
listen = "127.0.0.1:18445"
backend = "127.0.0.1:8080"
cert = "root.pem"
key = "root.pem"
ca = "root.pem"
allow_any = true
crl_cache_dir = "cache"
forward_client_cert = "xfcc"
forward_client_cert_details = ["cert"]

[[listener]]
name = "pooled"
kind = "serve"
listen = "127.0.0.1:18446"
backend = "127.0.0.1:8080"
cert = "root.pem"
key = "root.pem"
ca = "root.pem"
allow_any = true
mode = "http"
proxy_protocol = "v2"
"#;
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let (code, out) = config_check(&path);
    assert_eq!(code, 2, "{out}");
    let file = path.display().to_string();
    for (line, needle) in [
        (2, "log_format must be"),
        (9, "missing.pem"),
        (10, "missing.key"),
        (12, "spiffe://bad domain/x"),
        (13, "forever"),
        (15, "allows no one"),
        (16, "duplicate listener name \"api\""),
        (18, "already used by the listener at line 4"),
        (23, "unknown key `colour`"),
        // allow_any beside a rule: the rule would restrict nothing (the same for the flags).
        (
            33,
            "allow_any allows every verified client, so --allow-cn / allow_cn beside it",
        ),
        (
            33,
            "so [[listener.allow]] rules beside it would restrict nothing",
        ),
        // Keys that would set nothing (the flags' `requires` refuses the same on the command
        // line; proxy_protocol in HTTP mode is refused there by the same check).
        (48, "crl_cache_dir needs crl_from_cdp = true"),
        (49, "forward_client_cert only applies with mode = \"http\""),
        (
            50,
            "forward_client_cert_details only applies with mode = \"http\"",
        ),
        (62, "proxy_protocol applies to TCP mode only"),
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{file}:{line}:")) && l.contains(needle)),
            "no error at line {line} with {needle:?} in:\n{out}"
        );
    }
    assert!(out.contains("15 error(s)"), "{out}");

    // --json gives the same errors, machine-readable.
    let o = Command::new(BIN)
        .args(["config", "check", "--json", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"].as_array().unwrap().len(), 15, "{v}");
    assert_eq!(v["errors"][0]["line"], 2);

    // `mutual run` refuses the same file with the same errors and exit 2.
    let o = Command::new(BIN)
        .args(["run", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("{file}:23:1: unknown key")));
}

#[test]
fn listeners_added_removed_and_moved_by_config_edits() {
    let fx = fixture();
    let backend = echo_backend();
    let mut r = start(&fx, backend);
    let ok_cfg = rustls_config(&fx.pki.root, Some(&fx.ok));
    // A connection on `b` that must survive every edit below (its block never changes).
    let mut b_ok = tls_connect(r.addr(1), &ok_cfg).unwrap();
    echo(&mut b_ok, "before\n").unwrap();
    let mut c_plain = TcpStream::connect(r.addr(2)).unwrap();
    c_plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    echo(&mut c_plain, "before c\n").unwrap();

    // Move `a` to a new port, remove `c`, add `d` (a copy of `a` on another port).
    let new_a = free_port();
    let d_port = free_port();
    let base = config_text(&r, backend, &quoted(&[OK_ID]), "server.pem");
    let c_start = base.find("[[listener]]\nname = \"c\"").unwrap();
    let a_block = {
        let start = base.find("[[listener]]\nname = \"a\"").unwrap();
        let end = base.find("[[listener]]\nname = \"b\"").unwrap();
        base[start..end].to_string()
    };
    let d_block = a_block.replace("name = \"a\"", "name = \"d\"").replace(
        &format!("127.0.0.1:{}\"\nbackend", r.ports[0]),
        &format!("127.0.0.1:{d_port}\"\nbackend"),
    );
    let edited = format!("{}{}", &base[..c_start], d_block).replace(
        &format!("listen = \"127.0.0.1:{}\"", r.ports[0]),
        &format!("listen = \"127.0.0.1:{new_a}\""),
    );
    r.write("mutual.toml", &edited);
    let new_a_addr = SocketAddr::from(([127, 0, 0, 1], new_a));
    let d_addr = SocketAddr::from(([127, 0, 0, 1], d_port));
    let serves =
        |addr| rustls_get(addr, &ok_cfg).is_ok_and(|got| got == (200, BACKEND_BODY.to_string()));
    r.wait_until("a did not move", || serves(new_a_addr));
    // `d` is started in the same pass as the move, but not necessarily before it: wait for it.
    r.wait_until("d did not start", || serves(d_addr));
    // The old address of `a` and the removed `c` no longer accept.
    r.wait_until("old listeners still accept", || {
        TcpStream::connect(r.addr(0)).is_err() && TcpStream::connect(r.addr(2)).is_err()
    });
    // `b` was not touched: its connection is still open, and it still serves.
    echo(&mut b_ok, "after\n").unwrap();
    let (ok, code, _) = curl(r.ports[1], &fx.pki.root, Some(&fx.ok));
    assert!(ok && code == "200");
    assert!(
        r.metric("mutual_connections_active{listener=\"d\"}") >= 0.0
            && r.metrics().contains("listener=\"d\""),
        "the new listener has its metrics"
    );

    // SIGHUP reloads the config file too (nothing changed: every listener keeps running).
    let pid = r.child.as_ref().unwrap().0.id();
    signal(pid, "HUP");
    r.wait_until("no SIGHUP reload of the config", || {
        r.stderr_text().lines().any(|l| {
            // (field names may carry colour codes: match the values)
            l.contains("configuration reloaded")
                && l.contains("\"config\"")
                && l.contains("\"SIGHUP\"")
        })
    });
    echo(&mut b_ok, "after hup\n").unwrap();

    // SIGTERM: stop accepting, drain, exit 0 once the open connections are closed.
    drop(b_ok);
    drop(c_plain);
    signal(pid, "TERM");
    let mut child = r.child.take().unwrap();
    let status = eventually(EVENT_TIMEOUT, || child.0.try_wait().unwrap());
    assert!(
        status.is_some_and(|s| s.success()),
        "mutual run did not exit 0 after SIGTERM: {status:?}\n{}",
        r.stderr_text()
    );
}

/// A backend that answers every HTTP request with the request head it received as the body.
fn head_echo_backend() -> SocketAddr {
    mutual_test::tcp_server(|mut s| {
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            req.len()
        );
        let _ = s.write_all(resp.as_bytes());
        let _ = s.write_all(&req);
    })
}

/// HTTP mode, identity headers and per-request rules come from the config file's keys (`mode`,
/// `forward_client_cert`, `[[listener.allow]]` with `paths`/`methods`), not only from flags.
#[test]
fn http_listener_from_the_config_file() {
    let fx = fixture();
    let backend = head_echo_backend();
    let dir = tempfile::tempdir().unwrap();
    let (port, mport) = (free_port(), free_port());
    let cfg = dir.path().join("mutual.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"metrics = "127.0.0.1:{mport}"
[[listener]]
name = "web"
kind = "serve"
mode = "http"
listen = "127.0.0.1:{port}"
backend = "{backend}"
cert = "{cert}"
key = "{key}"
ca = "{ca}"
forward_client_cert = "rfc9440"
[[listener.allow]]
spiffe = "{OK_ID}"
paths = ["/api/*"]
methods = ["GET"]
"#,
            cert = fx.server.cert.display(),
            key = fx.server.key.display(),
            ca = fx.pki.root.display(),
        ),
    )
    .unwrap();
    let (code, out) = config_check(&cfg);
    assert_eq!(code, 0, "{out}");
    let _child = ChildGuard(
        Command::new(BIN)
            .args(["run", "--config", cfg.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(mutual_test::wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], port)),
        EVENT_TIMEOUT
    ));
    let get = |method: &str, path: &str| -> (String, String) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-X", method, "--cacert"])
            .arg(&fx.pki.root)
            .arg("--cert")
            .arg(&fx.ok.cert)
            .arg("--key")
            .arg(&fx.ok.key)
            .args(["-H", "Client-Cert: :c3Bvb2Y=:", "-w", "\n%{http_code}"])
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .arg(format!("https://localhost:{port}{path}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.to_string(), body.to_string())
    };
    let (code, body) = get("GET", "/api/items");
    assert_eq!(code, "200", "{body}");
    let lower = body.to_ascii_lowercase();
    let client_cert: Vec<&str> = lower
        .lines()
        .filter(|l| l.starts_with("client-cert:"))
        .collect();
    assert_eq!(client_cert.len(), 1, "one Client-Cert header: {body}");
    assert!(
        !client_cert[0].contains("c3bvb2y"),
        "the client's spoofed Client-Cert reached the backend: {body}"
    );
    assert!(!lower.contains("x-forwarded-client-cert"), "{body}");
    let (code, body) = get("GET", "/admin");
    assert_eq!(code, "403", "{body}");
    assert!(
        body.contains("policy_denied") && body.contains(OK_ID),
        "{body}"
    );
    let (code, body) = get("POST", "/api/items");
    assert_eq!(code, "403", "{body}");
}
