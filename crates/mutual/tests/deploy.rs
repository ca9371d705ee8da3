//! What an operator installs and looks at (issue 21), checked with the real tools: the alert
//! rules with `promtool test rules` (every alert fires in a unit test); every metric the rules
//! and the Grafana dashboard name is exported by a running `serve` and `ca serve`; the systemd
//! units pass `systemd-analyze verify` and score "OK" (exposure <= 2.0) in `systemd-analyze
//! security`; the Debian package builds from the test binary, installs with `dpkg -i`, gives
//! `mutual --version` and `man mutual`, and removes and purges cleanly; the Kubernetes manifests
//! parse. The one test that touches dpkg is the only one here that changes the machine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;
mod proxy_common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use pki_common::{s, CaServe};
use proxy_common::BIN;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (out.status.success(), mutual_test::output_text(&out))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The values of `key: VALUE` lines (YAML written one key a line, as the rule files are).
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}:");
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start().trim_start_matches("- ");
            l.strip_prefix(&prefix).map(|v| v.trim().to_string())
        })
        .collect()
}

#[test]
fn promtool_unit_tests_fire_every_alert() {
    let dir = deploy("prometheus");
    let (ok, out) = run(Command::new("promtool")
        .args(["check", "rules", "mutual-alerts.yml"])
        .current_dir(&dir));
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = run(Command::new("promtool")
        .args(["test", "rules", "mutual-alerts.test.yml"])
        .current_dir(&dir));
    assert!(ok, "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");

    // Every alert has a unit test in which it fires (an `alertname:` whose `exp_alerts` is not
    // the empty list).
    let rules = read(&dir.join("mutual-alerts.yml"));
    let alerts: BTreeSet<String> = yaml_values(&rules, "alert").into_iter().collect();
    assert!(alerts.len() >= 15, "{alerts:?}");
    let tests = read(&dir.join("mutual-alerts.test.yml"));
    let mut fired = BTreeSet::new();
    let mut current = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().to_string());
        } else if line.starts_with("exp_alerts:") && line != "exp_alerts: []" {
            fired.extend(current.take());
        }
    }
    let untested: Vec<_> = alerts.difference(&fired).collect();
    assert!(
        untested.is_empty(),
        "alerts never fired in a unit test: {untested:?}"
    );
}

/// Every `mutual_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(off) = text[i..].find("mutual_") {
        let start = i + off;
        let boundary =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'_')
        {
            end += 1;
        }
        if boundary {
            names.insert(text[start..end].trim_end_matches('_').to_string());
        }
        i = end.max(start + 1);
    }
    names
}

/// The names of `used` that no `# TYPE` line of the expositions declares (a counter's samples
/// carry `_total`, a histogram's `_bucket`/`_count`/`_sum`; the TYPE line names the family).
fn missing_from(used: &BTreeSet<String>, expositions: &[&str]) -> Vec<String> {
    let declared: BTreeSet<&str> = expositions
        .iter()
        .flat_map(|t| t.lines())
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    used.iter()
        .filter(|n| {
            let family = ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suf| n.strip_suffix(suf))
                .unwrap_or(n);
            !declared.contains(family) && !declared.contains(n.as_str())
        })
        .cloned()
        .collect()
}

fn https_get(root: &Path, url: &str) -> String {
    let (ok, out) = run(Command::new("curl").args(["-sS", "--fail", "--cacert", s(root), url]));
    assert!(ok, "curl {url}:\n{out}");
    out
}

/// `python3 -m http.server` on `dir` (a CRL distribution point), on 127.0.0.1.
fn http_server(dir: &Path) -> (mutual_test::ChildGuard, u16) {
    let port = mutual_test::free_port();
    let mut c = Command::new("python3");
    c.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .arg("--directory")
    .arg(dir);
    (mutual_test::spawn_listening(&mut c, port), port)
}

/// A CA online (`ca serve`) and a proxy (`serve --http --crl-from-cdp --ca-url`) with one of
/// each event the rules and the dashboard watch: an allowed HTTP request, a CRL fetched from
/// its distribution point, a renewal from the CA, a refused token. Then every `mutual_*` name
/// used under deploy/ must be declared by one of the two scrapes.
#[test]
fn every_metric_of_the_rules_and_the_dashboard_is_exported() {
    if mutual_test::skip_without("python3") || mutual_test::skip_without("curl") {
        return;
    }
    let rules = read(&deploy("prometheus/mutual-alerts.yml"));
    let dashboard = read(&deploy("grafana/mutual-dashboard.json"));
    let dash: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    let exprs: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    let mut used = metric_names(&rules);
    used.extend(exprs.iter().flat_map(|e| metric_names(e)));
    // Both halves are there: the proxy's families and the CA's.
    assert!(used.contains("mutual_handshakes_total"), "{used:?}");
    assert!(
        used.contains("mutual_ca_store_duration_seconds_bucket"),
        "{used:?}"
    );

    let ca = CaServe::with_new_ca("Deploy Test CA", &[], &[]);
    let tmp = tempfile::tempdir().unwrap();
    let (www, certs) = (tmp.path().join("www"), tmp.path().join("certs"));
    std::fs::create_dir_all(&www).unwrap();
    let crl = www.join("ca.crl");
    pki_common::mutual(&["ca", "crl", "--dir", s(ca.d()), "--out", s(&crl)]).ok();
    let (_cdp, cdp_port) = http_server(&www);
    let cdp = format!("http://127.0.0.1:{cdp_port}/ca.crl");
    // The server's certificate renews over mTLS (so --both) at two-thirds of 30 s.
    let issue = |name: &str, usage: &str, ttl: &str, san: &str| {
        pki_common::mutual(&[
            "cert",
            "issue",
            name,
            usage,
            "--ttl",
            ttl,
            "--san",
            san,
            "--crl-url",
            &cdp,
            "--dir",
            s(ca.d()),
            "--out",
            s(&certs),
        ])
        .ok();
    };
    issue("server", "--both", "30s", "ip:127.0.0.1");
    issue(
        "client",
        "--client",
        "24h",
        "uri:spiffe://deploy.test/client",
    );
    std::fs::copy(ca.root(), certs.join("root.pem")).unwrap();
    let backend = proxy_common::http_backend();
    let cache = tmp.path().join("crl-cache");
    let url = ca.url();
    let args = proxy_common::tls_args(
        &certs.join("server.pem"),
        &certs.join("server.key"),
        &certs.join("root.pem"),
        &[
            "--allow-any",
            "--http",
            "--crl-from-cdp",
            "--crl-cache-dir",
            s(&cache),
            "--ca-url",
            &url,
        ],
    );
    let proxy = proxy_common::spawn_proxy("serve", "--backend", &backend.addr.to_string(), &args);
    proxy.wait_metric(r#"mutual_crl_fetch_total{result="success"}"#, |v| v >= 1.0);
    let (ok, out) = run(Command::new("curl").args([
        "-sS",
        "--fail",
        "--cacert",
        s(&certs.join("root.pem")),
        "--cert",
        s(&certs.join("client.pem")),
        "--key",
        s(&certs.join("client.key")),
        &format!("https://127.0.0.1:{}/", proxy.port),
    ]));
    assert!(
        ok && out.contains(proxy_common::BACKEND_BODY),
        "{out}\n{}",
        proxy.stderr_text()
    );
    proxy.wait_metric(
        r#"mutual_renewal_last_success_timestamp_seconds{listener="serve"}"#,
        |v| v > 0.0,
    );

    // A refused token at the CA (a well-formed CSR, a token that is not one).
    let key = tmp.path().join("t.key");
    let csr = tmp.path().join("t.csr");
    pki_common::openssl_csr(&key, &csr, "/CN=x", "");
    let body = serde_json::json!({"csr": read(&csr), "token": "e30.e30.AAAA"}).to_string();
    let (_, out) = run(Command::new("curl").args([
        "-sS",
        "--cacert",
        s(&ca.root()),
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "--data-binary",
        &body,
        &format!("{url}/v1/sign"),
    ]));
    assert!(out.contains("token_"), "{out}");

    let proxy_text = proxy.metrics();
    let ca_text = https_get(&ca.root(), &format!("{url}/metrics"));
    // A family that exists only when a key lives in a PKCS#11 token; tests/hsm.rs scrapes it
    // from a real `serve` and `ca serve` with SoftHSM2 keys (and checks its values).
    const TOKEN_ONLY: &[&str] = &["mutual_pkcs11_key_up"];
    let hsm_tests = read(&repo().join("crates/mutual/tests/hsm.rs"));
    let mut missing = missing_from(&used, &[&proxy_text, &ca_text]);
    missing.retain(|m| !(TOKEN_ONLY.contains(&m.as_str()) && hsm_tests.contains(m.as_str())));
    assert!(
        missing.is_empty(),
        "used by deploy/ but not exported: {missing:?}\n--- serve:\n{proxy_text}\n--- ca serve:\n{ca_text}"
    );
    // The check itself can fail: a name nobody exports is reported.
    let fake: BTreeSet<String> = ["mutual_ca_nonexistent_total".to_string()].into();
    assert_eq!(
        missing_from(&fake, &[&proxy_text, &ca_text]),
        vec!["mutual_ca_nonexistent_total"]
    );

    // The gauges the expiry and CRL alerts divide by carry values from the start.
    for series in [
        r#"mutual_ca_cert_expiry_timestamp_seconds{role="root"}"#,
        r#"mutual_ca_cert_not_before_timestamp_seconds{role="intermediate"}"#,
        r#"mutual_ca_cert_expiry_timestamp_seconds{role="server"}"#,
        "mutual_ca_crl_number ",
        "mutual_ca_crl_next_update_timestamp_seconds ",
        // Renewal went through the CA: counted as a renew issuance, and the store was timed.
        r#"mutual_ca_issued_total{method="renew",result="ok"} "#,
        r#"mutual_ca_store_duration_seconds_count{op="crl_state_for"}"#,
    ] {
        assert!(
            ca_text.lines().any(|l| l.starts_with(series)),
            "{series} missing:\n{ca_text}"
        );
    }
    for series in [
        r#"mutual_cert_expiry_timestamp_seconds{listener="serve",role="server"}"#,
        r#"mutual_cert_not_before_timestamp_seconds{listener="serve",role="server"}"#,
    ] {
        assert!(
            proxy_text.contains(series),
            "{series} missing:\n{proxy_text}"
        );
    }
}

const UNITS: [&str; 4] = [
    "mutual-ca.service",
    "mutual-serve@.service",
    "mutual-renew@.service",
    "mutual-renew@.timer",
];

/// The units in a temp dir with instances `web` of the templates and `/usr/bin/mutual` replaced
/// by `bin`, as `systemd-analyze verify` wants an executable and a name for an instance.
fn staged_units(bin: &str) -> (tempfile::TempDir, Vec<PathBuf>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for u in UNITS {
        let text = read(&deploy("systemd").join(u)).replace("/usr/bin/mutual", bin);
        let name = u.replace("@.", "@web.");
        let p = tmp.path().join(&name);
        std::fs::write(&p, text).unwrap();
        paths.push(p);
    }
    (tmp, paths)
}

#[test]
fn systemd_units_verify_and_score_ok() {
    let (_tmp, paths) = staged_units(BIN);
    let mut c = Command::new("systemd-analyze");
    c.args(["verify", "--man=no"]).args(&paths);
    let (ok, out) = run(&mut c);
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify:\n{out}"
    );

    for p in paths.iter().filter(|p| s(p).ends_with(".service")) {
        let (ok, out) = run(Command::new("systemd-analyze").args([
            "security",
            "--offline=true",
            "--no-pager",
            s(p),
        ]));
        assert!(ok, "{out}");
        let overall = out
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no overall score:\n{out}"));
        let score: f64 = overall
            .split(':')
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("cannot read {overall:?}"));
        assert!(
            score <= 2.0,
            "{}: exposure {score} > 2.0\n{out}",
            p.display()
        );
        assert!(overall.contains(" OK"), "{overall}");
    }

    // verify does fail on a broken unit (a typo in a directive), so the check above means something.
    let (_t, bad) = staged_units(BIN);
    let text = read(&bad[0]).replace("NoNewPrivileges=yes", "NoNewPrivilege=yes");
    std::fs::write(&bad[0], text).unwrap();
    let (_, out) = run(Command::new("systemd-analyze").args(["verify", "--man=no", s(&bad[0])]));
    assert!(out.contains("Unknown key 'NoNewPrivilege'"), "{out}");
}

fn sh(script: &str) -> (bool, String) {
    run(Command::new("sh").args(["-c", script]))
}

#[test]
fn deb_package_installs_works_and_removes_cleanly() {
    if !nix_is_root() {
        eprintln!("SKIPPED: dpkg -i needs root (CI runs as root)");
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let (ok, out) = run(Command::new("bash")
        .arg(repo().join("packaging/deb.sh"))
        .args(["--bin", BIN, "--out", s(out_dir.path()), "--fast"]));
    assert!(ok, "deb.sh:\n{out}");
    let deb = out.lines().last().unwrap().trim().to_string();
    assert!(deb.ends_with(".deb") && Path::new(&deb).exists(), "{out}");

    let (ok, out) = sh(&format!("dpkg-deb --contents {deb}"));
    assert!(ok, "{out}");
    for f in [
        "./usr/bin/mutual",
        "./usr/share/man/man1/mutual.1.gz",
        "./usr/share/man/man1/mutual-ca-serve.1.gz",
        "./usr/share/bash-completion/completions/mutual",
        "./usr/share/zsh/vendor-completions/_mutual",
        "./usr/share/fish/vendor_completions.d/mutual.fish",
        "./lib/systemd/system/mutual-ca.service",
        "./lib/systemd/system/mutual-serve@.service",
        "./lib/systemd/system/mutual-renew@.service",
        "./lib/systemd/system/mutual-renew@.timer",
        "./etc/default/mutual-ca",
    ] {
        assert!(
            out.lines().any(|l| l.ends_with(f)),
            "{f} not in the package:\n{out}"
        );
    }

    let (ok, out) = dpkg(&["-i", &deb]);
    let _purge = PurgeOnPanic;
    assert!(ok, "dpkg -i:\n{out}");
    let version = format!("mutual {}", env!("CARGO_PKG_VERSION"));
    let (ok, out) = run(Command::new("/usr/bin/mutual").arg("--version"));
    assert!(ok && out.trim() == version, "{out}");
    let (ok, out) = sh("MANPAGER=cat man mutual 2>&1");
    assert!(
        ok && out.contains("mutual") && out.contains("SYNOPSIS"),
        "man mutual:\n{out}"
    );
    let (ok, out) = sh("stat -c '%n %U:%G %a' /etc/mutual /var/lib/mutual");
    assert!(ok, "{out}");
    assert!(out.contains("/etc/mutual root:mutual 750"), "{out}");
    assert!(out.contains("/var/lib/mutual mutual:mutual 750"), "{out}");
    // The installed units, against the installed binary and man pages.
    let (ok, out) = sh(
        "cd /lib/systemd/system && systemd-analyze verify mutual-ca.service \
         mutual-serve@web.service mutual-renew@web.service mutual-renew@web.timer 2>&1",
    );
    assert!(ok && out.trim().is_empty(), "installed units:\n{out}");

    let (ok, out) = dpkg(&["-r", "mutual"]);
    assert!(ok, "dpkg -r:\n{out}");
    assert!(!Path::new("/usr/bin/mutual").exists());
    assert!(!Path::new("/lib/systemd/system/mutual-ca.service").exists());
    let (ok, out) = dpkg(&["-P", "mutual"]);
    assert!(ok, "dpkg -P:\n{out}");
    for gone in ["/etc/mutual", "/var/lib/mutual", "/etc/default/mutual-ca"] {
        assert!(!Path::new(gone).exists(), "{gone} left after purge");
    }
    let (still, _) = sh("getent passwd mutual");
    assert!(!still, "the mutual user is left after purge");
    let (known, out) = sh("dpkg -s mutual 2>&1");
    assert!(!known, "dpkg still knows mutual:\n{out}");
}

/// Leaves no package behind when an assertion fails halfway.
struct PurgeOnPanic;

impl Drop for PurgeOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = dpkg(&["-P", "mutual"]);
        }
    }
}

fn nix_is_root() -> bool {
    sh("test \"$(id -u)\" = 0").0
}

/// dpkg, waiting for the lock when another installer holds it (an apt run elsewhere on the
/// machine) rather than failing on it.
fn dpkg(args: &[&str]) -> (bool, String) {
    let mut last = (false, String::new());
    for _ in 0..120 {
        last = run(Command::new("dpkg").args(args));
        if last.0 || !last.1.contains("lock") {
            return last;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    last
}

#[test]
fn kubernetes_manifests_parse() {
    if mutual_test::skip_without("python3") {
        return;
    }
    if !run(Command::new("python3").args(["-c", "import yaml"])).0 {
        eprintln!("SKIPPED: python3 has no yaml module (PyYAML)");
        return;
    }
    let script = r#"
import sys, yaml
kinds = []
for f in sys.argv[1:]:
    for d in yaml.safe_load_all(open(f)):
        if not d:
            continue
        kinds.append(d["kind"] + "/" + d["metadata"]["name"])
        spec = d.get("spec", {}).get("template", {}).get("spec")
        if spec:
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                sc = c.get("securityContext", {})
                assert sc.get("allowPrivilegeEscalation") is False, (f, c["name"])
                assert sc.get("capabilities", {}).get("drop") == ["ALL"], (f, c["name"])
print(" ".join(kinds))
"#;
    let (ok, out) = run(Command::new("python3")
        .args(["-c", script])
        .arg(deploy("kubernetes/ca.yaml"))
        .arg(deploy("kubernetes/sidecar.yaml")));
    assert!(ok, "{out}");
    for k in [
        "Deployment/mutual-ca",
        "Service/mutual-ca",
        "Deployment/web",
        "ConfigMap/web-mutual-policy",
    ] {
        assert!(out.contains(k), "{k} missing: {out}");
    }
}

/// The `args:` list of the container `name` in a manifest.
fn container_args(manifest: &str, name: &str) -> Vec<String> {
    let (_, rest) = manifest
        .split_once(&format!("- name: {name}\n"))
        .unwrap_or_else(|| panic!("no container {name}"));
    rest.lines()
        .skip_while(|l| !l.trim().starts_with("args:"))
        .skip(1)
        .take_while(|l| l.trim_start().starts_with("- "))
        .map(|l| l.trim_start().trim_start_matches("- ").to_string())
        .collect()
}

/// The manifests pass only flags the binary has: each `--flag` of the CA's and the sidecar's
/// container is in the `--help` of its subcommand.
#[test]
fn kubernetes_manifests_use_real_flags() {
    for (file, container, cmd) in [
        ("kubernetes/ca.yaml", "ca", &["ca", "serve"][..]),
        ("kubernetes/sidecar.yaml", "mutual", &["serve"][..]),
    ] {
        let args = container_args(&read(&deploy(file)), container);
        assert_eq!(&args[..cmd.len()], cmd, "{file}: {args:?}");
        let (ok, help) = run(Command::new(BIN).args(cmd).arg("--help"));
        assert!(ok, "{help}");
        let flags: Vec<&str> = args[cmd.len()..]
            .iter()
            .map(|a| a.split('=').next().unwrap_or(a))
            .collect();
        assert!(flags.len() >= 5, "{file}: {flags:?}");
        for f in flags {
            assert!(f.starts_with("--"), "{file}: {f} is not a flag");
            assert!(
                help.contains(&format!("{f} "))
                    || help.contains(&format!("{f}\n"))
                    || help.contains(&format!("{f} <")),
                "{file}: {f} is not a flag of mutual {}",
                cmd.join(" ")
            );
        }
    }
}
