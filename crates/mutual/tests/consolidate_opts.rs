//! Issue 12, the options part: the defects of the listener options and the expiry gauge, each
//! against the real binary. `mutual run` takes the enrollment keys (`ca_url`, `token_file`,
//! `root_sha256`) as `serve --ca-url` takes the flags; a connect listener refuses
//! `forward_client_cert_details` with a clear error; under `mutual run` every listener has its
//! own `mutual_cert_expiry_timestamp_seconds{listener, role}` series; durations follow the one
//! grammar in flags and config files alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;
mod proxy_common;
use pki_common::{mutual, CaServe, Out};
use proxy_common::*;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

/// A `mutual run --config` child with its metrics port and stderr file.
struct Run {
    child: ChildGuard,
    metrics_port: u16,
    stderr: std::path::PathBuf,
}

impl Run {
    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        http_get(
            SocketAddr::from(([127, 0, 0, 1], self.metrics_port)),
            "/metrics",
        )
        .1
    }
}

/// Writes `listeners` (TOML) after a `metrics` line to DIR/mutual.toml and starts `mutual run`,
/// waiting until its metrics endpoint answers (the listeners are bound by then).
fn start_run(dir: &Path, listeners: &str) -> Run {
    let metrics_port = free_port();
    let path = dir.join("mutual.toml");
    std::fs::write(
        &path,
        format!("metrics = \"127.0.0.1:{metrics_port}\"\nthreads = 2\n\n{listeners}"),
    )
    .unwrap();
    let stderr = dir.join("stderr.log");
    let child = Command::new(BIN)
        .args(["run", "--config", path.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut r = Run {
        child: ChildGuard(child),
        metrics_port,
        stderr,
    };
    let up = eventually(EVENT_TIMEOUT, || {
        if let Ok(Some(st)) = r.child.0.try_wait() {
            panic!("mutual run exited with {st}:\n{}", r.stderr_text());
        }
        try_http_get(SocketAddr::from(([127, 0, 0, 1], metrics_port)), "/healthz")
            .filter(|(s, _)| *s == 200)
            .map(|_| ())
    });
    assert!(
        up.is_some(),
        "mutual run did not come up:\n{}",
        r.stderr_text()
    );
    r
}

fn serve_block(fx: &Fixture, name: &str, port: u16, backend: SocketAddr, extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"{name}\"\nkind = \"serve\"\nlisten = \"127.0.0.1:{port}\"\n\
         backend = \"{backend}\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n\
         allow_spiffe = [\"{OK_ID}\"]\n{extra}\n",
        fx.server.cert.display(),
        fx.server.key.display(),
        fx.pki.root.display()
    )
}

fn config_check(dir: &Path, text: &str) -> (Option<i32>, String) {
    let path = dir.join("check.toml");
    std::fs::write(&path, text).unwrap();
    let o = mutual(&["config", "check", path.to_str().unwrap()]);
    (Some(o.code), format!("{}{}", o.stdout, o.stderr))
}

/// `mutual serve` with placeholder files and `--allow-any`, plus `extra` (refused before any
/// file is read, which is what the callers check).
fn serve_flags(backend: &str, extra: &[&str]) -> Out {
    let mut a = vec!["serve", "--listen", "127.0.0.1:1", "--backend", backend];
    a.extend(["--cert", "c", "--key", "k", "--ca", "r", "--allow-any"]);
    a.extend_from_slice(extra);
    mutual(&a)
}

/// Two serve listeners in one process: each has its own expiry series (before, the second
/// overwrote the first's `{role="server"}`).
#[test]
fn expiry_gauge_has_one_series_per_listener_under_run() {
    let fx = fixture();
    let be = http_backend();
    let dir = tempfile::tempdir().unwrap();
    let blocks = format!(
        "{}{}",
        serve_block(&fx, "api", free_port(), be.addr, ""),
        serve_block(&fx, "admin", free_port(), be.addr, "")
    );
    let r = start_run(dir.path(), &blocks);
    let m = r.metrics();
    for l in ["api", "admin"] {
        let series =
            format!("mutual_cert_expiry_timestamp_seconds{{listener=\"{l}\",role=\"server\"}}");
        let v = metric_value(&m, &series).unwrap_or_else(|| panic!("no {series} in\n{m}"));
        assert!(v > 1.0e9, "{series} = {v}");
    }
    assert!(
        !m.contains("mutual_cert_expiry_timestamp_seconds{role="),
        "a series without the listener label:\n{m}"
    );
}

/// A reload that removes a listener removes its expiry series too (it used to stay in /metrics
/// with the removed listener's certificate, so an expiry alert would keep firing for it); the
/// listener that stays keeps its series.
#[test]
fn a_removed_listeners_expiry_series_leaves_metrics() {
    let fx = fixture();
    let be = http_backend();
    let dir = tempfile::tempdir().unwrap();
    let api = serve_block(&fx, "api", free_port(), be.addr, "");
    let admin = serve_block(&fx, "admin", free_port(), be.addr, "");
    let r = start_run(dir.path(), &format!("{api}{admin}"));
    let series = |l: &str| {
        format!("mutual_cert_expiry_timestamp_seconds{{listener=\"{l}\",role=\"server\"}}")
    };
    let m = r.metrics();
    assert!(
        metric_value(&m, &series("admin")).is_some(),
        "no admin series before the reload:\n{m}"
    );
    let ok = "mutual_config_reloads_total{result=\"success\"}";
    let before = metric_value(&m, ok).unwrap_or(0.0);
    // The same file without the `admin` block; SIGHUP as well as the file watch.
    let path = dir.path().join("mutual.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace(&admin, "")).unwrap();
    signal(r.child.0.id(), "HUP");
    let reloaded = eventually(EVENT_TIMEOUT, || {
        let m = r.metrics();
        (metric_value(&m, ok).unwrap_or(0.0) > before
            && metric_value(&m, &series("admin")).is_none())
        .then_some(m)
    });
    let m = reloaded.unwrap_or_else(|| {
        panic!(
            "the admin series is still there after the reload:\n{}\nstderr:\n{}",
            r.metrics(),
            r.stderr_text()
        )
    });
    let v = metric_value(&m, &series("api")).unwrap_or_else(|| panic!("api lost its series:\n{m}"));
    assert!(v > 1.0e9, "api = {v}");
}

/// `forward_client_cert_details` on a connect listener is an error naming the key and the kind
/// (it used to be accepted and ignored).
#[test]
fn connect_listener_refuses_forward_client_cert_details() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[listener]]\nname = \"out\"\nkind = \"connect\"\nlisten = \"127.0.0.1:{}\"\n\
         remote = \"127.0.0.1:1\"\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n\
         forward_client_cert_details = [\"cert\"]\n",
        free_port(),
        fx.ok.cert.display(),
        fx.ok.key.display(),
        fx.pki.root.display()
    );
    let (code, out) = config_check(dir.path(), &text);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(
            "check.toml:1:1: `forward_client_cert_details` applies to kind = \"serve\" listeners only (this one is \"connect\")"
        ),
        "{out}"
    );
    // Without it the same block is fine.
    let fine = text.replace("forward_client_cert_details = [\"cert\"]\n", "");
    let (code, out) = config_check(dir.path(), &fine);
    assert_eq!(code, Some(0), "{out}");
}

/// `mutual run` takes `ca_url`/`token_file`/`root_sha256` (they were refused as "not supported
/// by this build"): with usable files it starts and runs the renewer (its metric is there from
/// the start); without them it enrolls, with the token read from `token_file`, before anything
/// loads the files (here the CA cannot be reached, and the error says so).
#[test]
fn run_accepts_the_enrollment_keys() {
    let fx = fixture();
    let be = http_backend();
    let dir = tempfile::tempdir().unwrap();
    let pin = "AB".repeat(32);
    std::fs::write(dir.path().join("token"), "not-a-real-token\n").unwrap();
    let enroll = format!(
        "ca_url = [\"https://127.0.0.1:1\", \"https://127.0.0.1:2\"]\n\
         token_file = \"token\"\nroot_sha256 = \"{pin}\""
    );
    let port = free_port();
    let block = serve_block(&fx, "api", port, be.addr, &enroll);
    let (code, out) = config_check(dir.path(), &block);
    assert_eq!(code, Some(0), "{out}");

    let r = start_run(dir.path(), &block);
    let m = r.metrics();
    assert_eq!(
        metric_value(&m, "mutual_renewal_failures_total{listener=\"api\"}"),
        Some(0.0),
        "{m}"
    );
    // The listener serves.
    let (ok, body, _) = curl(port, &fx.pki.root, Some(&fx.ok));
    assert!(ok, "{body}");
    drop(r);

    // Files that do not exist yet: `config check` accepts the block (enrollment writes them),
    // `mutual run` tries to enroll with the token file's token.
    let missing = block
        .replace(&fx.server.cert.display().to_string(), "new/cert.pem")
        .replace(&fx.server.key.display().to_string(), "new/key.pem");
    let (code, out) = config_check(dir.path(), &missing);
    assert_eq!(code, Some(0), "{out}");
    let path = dir.path().join("enroll.toml");
    std::fs::write(&path, &missing).unwrap();
    let o = mutual(&["run", "--config", path.to_str().unwrap()]);
    let err = &o.stderr;
    assert_ne!(o.code, 0, "{err}");
    assert!(
        err.contains("listener \"api\"") && err.contains("cannot enroll with https://127.0.0.1:1"),
        "{err}"
    );

    // The keys are checked like the flags.
    let bad = block.replace("https://127.0.0.1:1", "http://127.0.0.1:1");
    let (code, out) = config_check(dir.path(), &bad);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("ca_url \"http://127.0.0.1:1\""), "{out}");
    let orphan = block.replace(
        "ca_url = [\"https://127.0.0.1:1\", \"https://127.0.0.1:2\"]\n",
        "",
    );
    let (code, out) = config_check(dir.path(), &orphan);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("token_file needs ca_url"), "{out}");
}

/// A listener that a reload adds with the enrollment keys enrolls with the online CA before
/// its files are loaded, serves with the certificate it got, and renews (before, the reload
/// failed: its files did not exist and nothing enrolled until a restart).
#[test]
fn a_listener_added_by_a_reload_enrolls() {
    let fx = fixture();
    let be = http_backend();
    let dir = tempfile::tempdir().unwrap();
    let ca = CaServe::with_new_ca("Reload CA", &[], &[]);
    let api = serve_block(&fx, "api", free_port(), be.addr, "");
    let r = start_run(dir.path(), &api);

    // A client of the online CA's, for the new listener (which trusts that CA's root).
    let client_dir = dir.path().join("client");
    let client_token = ca.token(&[&format!("uri:{OK_ID}")], "1h", "client");
    ca.enroll(&client_token, &client_dir).ok();
    let client = Leaf {
        cert: client_dir.join("cert.pem"),
        key: client_dir.join("key.pem"),
        leaf_pem: String::new(),
        der: Vec::new(),
        serial_hex: String::new(),
    };

    let token = ca.token(&["dns:localhost", "ip:127.0.0.1"], "1h", "server");
    std::fs::write(dir.path().join("edge.token"), format!("{token}\n")).unwrap();
    std::fs::create_dir(dir.path().join("edge")).unwrap();
    let port = free_port();
    let edge = format!(
        "[[listener]]\nname = \"edge\"\nkind = \"serve\"\nlisten = \"127.0.0.1:{port}\"\n\
         backend = \"{}\"\ncert = \"edge/cert.pem\"\nkey = \"edge/key.pem\"\nca = \"edge/root.pem\"\n\
         allow_spiffe = [\"{OK_ID}\"]\nca_url = \"{}\"\ntoken_file = \"edge.token\"\n\
         root_sha256 = \"{}\"\n",
        be.addr,
        ca.url(),
        ca.fingerprint()
    );
    let path = dir.path().join("mutual.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}{edge}")).unwrap();
    signal(r.child.0.id(), "HUP");

    let served = eventually(EVENT_TIMEOUT, || {
        let (ok, code, body) = curl(port, &ca.root(), Some(&client));
        (ok && code == "200").then_some(body)
    });
    assert!(
        served.is_some(),
        "the added listener does not serve:\n{}\nCA:\n{}",
        r.stderr_text(),
        ca.log_text()
    );
    assert_eq!(served.as_deref(), Some(BACKEND_BODY));
    // It got its certificate from the CA (one issuance for it, besides the client's), and its
    // renewer runs under its name.
    let issued = ca.inventory();
    assert!(
        issued.iter().any(|c| c.to_string().contains("localhost")),
        "{issued:?}"
    );
    let m = r.metrics();
    assert_eq!(
        metric_value(&m, "mutual_renewal_failures_total{listener=\"edge\"}"),
        Some(0.0),
        "{m}"
    );
    assert!(!r.stderr_text().contains(&token), "the token was logged");
}

/// The one duration grammar: a config key and a flag take the same spellings (`1h30m`, `1.5s`,
/// a bare number) and refuse the same ones with the same message.
#[test]
fn durations_are_one_grammar_in_flags_and_config() {
    let fx = fixture();
    let be = http_backend();
    let dir = tempfile::tempdir().unwrap();
    for good in ["\"1h30m\"", "\"1.5s\"", "\"250ms\"", "60", "\"2d\""] {
        let block = serve_block(
            &fx,
            "api",
            free_port(),
            be.addr,
            &format!("idle_timeout = {good}"),
        );
        let (code, out) = config_check(dir.path(), &block);
        assert_eq!(code, Some(0), "{good}: {out}");
    }
    let block = serve_block(
        &fx,
        "api",
        free_port(),
        be.addr,
        "idle_timeout = \"5 parsecs\"",
    );
    let (code, out) = config_check(dir.path(), &block);
    assert_eq!(code, Some(2), "{out}");
    let want = "invalid duration \"5 parsecs\": unknown unit \"parsecs\"";
    assert!(out.contains(want), "{out}");
    serve_flags("127.0.0.1:2", &["--idle-timeout", "5 parsecs"]).fails_with(want);
    mutual(&["probe", "127.0.0.1:1", "--timeout", "2h"]).fails_with("must be between 1ms and 1h");
}

/// The listener options are one type for flags and keys, so a value out of range is refused
/// the same way by both: exit 2, the same words, named as a flag or as a key (at its line).
#[test]
fn listener_option_ranges_are_one_check_for_flags_and_keys() {
    let fx = fixture();
    let be = http_backend();
    let dir = tempfile::tempdir().unwrap();
    for (flag, key, value, why) in [
        (
            "--max-connections",
            "max_connections",
            "0",
            "must be at least 1",
        ),
        (
            "--max-connection-lifetime",
            "max_connection_lifetime",
            "\"0s\"",
            "must be more than 0 (leave it out: unlimited)",
        ),
        // At 0 every handshake, connection or backend dial would fail at once.
        (
            "--handshake-timeout",
            "handshake_timeout",
            "\"0s\"",
            "must be more than 0 (at 0 every connection would fail at once)",
        ),
        (
            "--idle-timeout",
            "idle_timeout",
            "\"0ms\"",
            "must be more than 0 (at 0 every connection would fail at once)",
        ),
        (
            "--connect-timeout",
            "connect_timeout",
            "0",
            "must be more than 0 (at 0 every connection would fail at once)",
        ),
    ] {
        let block = serve_block(
            &fx,
            "api",
            free_port(),
            be.addr,
            &format!("{key} = {value}"),
        );
        let line = block.lines().count();
        let (code, out) = config_check(dir.path(), &block);
        assert_eq!(code, Some(2), "{out}");
        assert!(
            out.contains(&format!(":{line}:")) && out.contains(&format!("{key} {why}")),
            "{key}: {out}"
        );
        serve_flags(&be.addr.to_string(), &[flag, value.trim_matches('"')])
            .fails_with(&format!("{flag} {why}"));
    }
}
