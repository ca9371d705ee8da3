//! `mutual agent` (docs/agent.md): the SPIFFE Workload API served to real clients: a Python
//! grpcio client built from the published workload.proto (tests/agent/workload_client.py),
//! py-spiffe (PyPI `spiffe`) and an Envoy SDS client on Envoy's published stubs (PyPI
//! `xds-protos`, tests/agent/sds_client.py), against a real `mutual ca serve`. SVIDs are checked with `openssl
//! verify` and `openssl x509`; refusals by their exact gRPC status, the CA's by its reason label
//! and log line. The Python packages live in the venv under target/acme-venv (`.ci/run` installs
//! them; this test does when they are missing).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use mutual_test::{eventually, ChildGuard};
use pki_common::*;

const TD: &str = "spiffe://agent.test";

fn venv_python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let v = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/acme-venv");
        let py = v.join("bin/python");
        let ready = |py: &Path| {
            Command::new(py)
                .args([
                    "-c",
                    "import grpc, grpc_tools, spiffe, cryptography, envoy.service.secret.v3",
                ])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ready(&py) {
            if !py.exists() {
                assert!(Command::new("python3")
                    .args(["-m", "venv", v.to_str().unwrap()])
                    .status()
                    .unwrap()
                    .success());
            }
            assert!(Command::new(v.join("bin/pip"))
                .args([
                    "install",
                    "-q",
                    "grpcio",
                    "grpcio-tools",
                    "spiffe",
                    "cryptography",
                    "xds-protos"
                ])
                .status()
                .unwrap()
                .success());
        }
        py
    })
    .clone()
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/agent")
        .join(name)
}

/// A CA serving on 127.0.0.1, a node certificate for `spiffe://agent.test/node/NODE`, and the
/// agent when started.
struct Node {
    ca: CaServe,
    tmp: tempfile::TempDir,
    node: String,
    agent: Option<ChildGuard>,
}

impl Node {
    fn new(node: &str) -> Node {
        Node::with_cert_args(node, &[])
    }

    /// A node whose certificate is issued with `extra` flags of `cert issue` (`--ttl`).
    fn with_cert_args(node: &str, extra: &[&str]) -> Node {
        let ca = CaServe::with_new_ca("Agent CA", &[], &[]);
        let tmp = tempfile::tempdir().unwrap();
        let id = format!("{TD}/node/{node}");
        mutual(
            &[
                "cert",
                "issue",
                node,
                "--dir",
                s(ca.d()),
                "--out",
                s(tmp.path()),
                "--san",
                &format!("uri:{id}"),
                "--client",
            ]
            .into_iter()
            .chain(extra.iter().copied())
            .collect::<Vec<_>>(),
        )
        .ok();
        Node {
            ca,
            tmp,
            node: id,
            agent: None,
        }
    }

    fn cert(&self) -> PathBuf {
        self.tmp
            .path()
            .join(format!("{}.pem", self.node.rsplit('/').next().unwrap()))
    }

    fn key(&self) -> PathBuf {
        self.cert().with_extension("key")
    }

    fn socket(&self) -> PathBuf {
        self.tmp.path().join("run/agent.sock")
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("agent.log")).unwrap_or_default()
    }

    /// `mutual agent entry create ... --json`; the entry's id.
    fn entry(&self, spiffe_id: &str, selectors: &[&str], node: &str, ttl: &str) -> String {
        let o = entry_create(
            s(self.ca.d()),
            spiffe_id,
            node,
            selectors,
            &["--ttl", ttl, "--json"],
        )
        .ok();
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    /// `mutual agent` on this node's socket with its node certificate, trusting `root`.
    fn agent_args(&self, root: &Path) -> Vec<String> {
        let mut a = vec!["agent".to_string(), "--ca-url".into(), self.ca.url()];
        for (flag, path) in [
            ("--socket", self.socket()),
            ("--cert", self.cert()),
            ("--key", self.key()),
            ("--ca", root.to_path_buf()),
        ] {
            a.extend([flag.to_string(), path.display().to_string()]);
        }
        a
    }

    fn start_agent(&mut self) {
        self.start_agent_with(&[]);
    }

    fn start_agent_with(&mut self, extra: &[&str]) {
        // A copy of the root: the agent's trust refresh may rewrite its --ca file.
        let root = self.tmp.path().join("root.pem");
        std::fs::copy(self.ca.root(), &root).unwrap();
        let log = std::fs::File::create(self.tmp.path().join("agent.log")).unwrap();
        let args = self.agent_args(&root);
        let mut c = mutual_cmd(None, &args.iter().map(String::as_str).collect::<Vec<_>>());
        c.args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut g = ChildGuard(c.spawn().unwrap());
        let up = eventually(Duration::from_secs(60), || {
            if let Ok(Some(st)) = g.0.try_wait() {
                panic!("mutual agent exited with {st}:\n{}", self.agent_log());
            }
            // Listening, not merely present: a killed agent leaves its socket file behind.
            std::os::unix::net::UnixStream::connect(self.socket())
                .is_ok()
                .then_some(())
        });
        assert!(
            up.is_some(),
            "the agent did not listen:\n{}",
            self.agent_log()
        );
        self.agent = Some(g);
    }

    /// Stops the agent with `signal` (`TERM` or `KILL`) and waits for it to exit; its exit status.
    fn stop_agent(&mut self, signal: &str) -> std::process::ExitStatus {
        let mut g = self.agent.take().expect("the agent runs");
        let pid = g.0.id().to_string();
        assert!(Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap()
            .success());
        g.0.wait().unwrap()
    }

    /// workload_client.py MODE ARGS: its JSON lines, and whether it succeeded.
    fn client(&self, mode: &str, args: &[&str]) -> (Vec<serde_json::Value>, bool) {
        let gen = self.tmp.path().join("gen");
        self.python(
            "workload_client.py",
            &[&[s(&self.socket()), s(&gen), mode], args].concat(),
        )
    }

    /// sds_client.py MODE ARGS: its JSON lines, and whether it succeeded.
    fn sds(&self, mode: &str, args: &[&str]) -> (Vec<serde_json::Value>, bool) {
        self.python(
            "sds_client.py",
            &[&[s(&self.socket()), mode], args].concat(),
        )
    }

    fn python(&self, name: &str, args: &[&str]) -> (Vec<serde_json::Value>, bool) {
        let out = run_within(
            {
                let mut c = Command::new(venv_python());
                c.arg(script(name)).args(args);
                c
            },
            Duration::from_secs(300),
        );
        let lines = out
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("{l}\n{}", out.text())))
            .collect();
        (lines, out.code == 0)
    }

    /// The one failure line of a call that must fail.
    fn refused(&self, mode: &str) -> serde_json::Value {
        let (lines, ok) = self.client(mode, &["1", s(self.tmp.path())]);
        assert!(!ok, "{mode} succeeded: {lines:?}\n{}", self.agent_log());
        assert_eq!(lines.len(), 1, "{lines:?}");
        lines[0].clone()
    }
}

/// `mutual agent entry create --dir DIR --spiffe-id ID --node NODE --selector S... EXTRA...`
fn entry_create(dir: &str, spiffe_id: &str, node: &str, selectors: &[&str], extra: &[&str]) -> Out {
    let mut a = vec!["agent", "entry", "create", "--dir", dir];
    a.extend(["--spiffe-id", spiffe_id, "--node", node]);
    for sel in selectors {
        a.extend(["--selector", sel]);
    }
    a.extend_from_slice(extra);
    mutual(&a)
}

/// `curl -sS ARGS`: the body and the HTTP status.
fn curl<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (String, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "-w", "\n%{http_code}"]).args(args);
    let o = collect(c);
    let (body, code) = o.stdout.trim().rsplit_once('\n').unwrap();
    (body.to_string(), code.to_string())
}

/// The interpreter the Python client runs as: what /proc/PID/exe names.
fn python_binary() -> PathBuf {
    std::fs::canonicalize(venv_python()).unwrap()
}

/// [`verify_svid`], and the leaf carries `id` as its URI SAN.
fn verify_svid_for(root: &Path, pem: &Path, id: &str) {
    verify_svid(root, pem);
    let san = x509(pem, &["-noout", "-ext", "subjectAltName"]);
    assert!(san.contains(&format!("URI:{id}")), "{san}");
}

/// `openssl verify` of an SVID chain file as a client certificate against `root`.
fn verify_svid(root: &Path, pem: &Path) {
    let v = openssl(&[
        "verify",
        "-CAfile",
        s(root),
        "-untrusted",
        s(pem),
        "-purpose",
        "sslclient",
        s(pem),
    ]);
    assert_eq!(v.code, 0, "{}", v.text());
}

fn sha256_hex(path: &Path) -> String {
    let o = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(o.stdout).unwrap()[..64].to_string()
}

fn uid() -> String {
    let o = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

#[test]
fn a_workload_gets_rotating_svids_only_when_every_selector_matches() {
    let mut n = Node::new("n1");
    let me = format!("unix:uid:{}", uid());
    // Another uid's entry only: this caller matches nothing.
    n.entry(&format!("{TD}/other"), &["unix:uid:4242"], &n.node, "1h");
    n.start_agent();
    let denied = n.refused("x509");
    assert_eq!(denied["code"], "PERMISSION_DENIED", "{denied}");
    assert_eq!(denied["details"], "no identity issued");

    // The right uid but another binary's hash: still nothing, and nothing issued.
    let zeros = format!("unix:sha256:{}", "0".repeat(64));
    n.entry(&format!("{TD}/hashed"), &[&me, &zeros], &n.node, "1h");
    let denied = n.refused("x509");
    assert_eq!(denied["code"], "PERMISSION_DENIED", "{denied}");
    assert!(n
        .ca
        .inventory()
        .iter()
        .all(|c| !c.to_string().contains("hashed")));

    // Without the security header: InvalidArgument, before any attestation.
    let no_header = n.refused("x509-noheader");
    assert_eq!(no_header["code"], "INVALID_ARGUMENT", "{no_header}");
    assert_eq!(no_header["details"], "security header missing from request");

    // uid, binary path and binary hash all match: an SVID, renewed at half of its 20 s life
    // and pushed on the open stream.
    let py = python_binary();
    let web = format!("{TD}/web");
    let entry = n.entry(
        &web,
        &[
            &me,
            &format!("unix:path:{}", py.display()),
            &format!("unix:sha256:{}", sha256_hex(&py)),
        ],
        &n.node,
        "20s",
    );
    let (msgs, ok) = n.client("x509", &["2", s(n.tmp.path())]);
    assert!(ok, "{msgs:?}\n{}", n.agent_log());
    assert_eq!(msgs.len(), 2);
    let mut serials = Vec::new();
    for m in &msgs {
        let svids = m["svids"].as_array().unwrap();
        assert_eq!(svids.len(), 1, "only the matching entry: {m}");
        let sv = &svids[0];
        assert_eq!(sv["spiffe_id"], web.as_str());
        assert_eq!(sv["key_matches"], true);
        assert_eq!(sv["chain"], 2, "leaf and intermediate: {sv}");
        assert_eq!(sv["bundle"], 1);
        let pem = Path::new(sv["pem"].as_str().unwrap());
        verify_svid_for(&n.ca.root(), pem, &web);
        serials.push(sv["serial"].as_str().unwrap().to_string());
    }
    assert_ne!(
        serials[0], serials[1],
        "the second message carries the rotated SVID"
    );

    // The CA recorded who asked: the node and the entry.
    let inv = n.ca.inventory();
    let by = format!("agent:{}:{entry}", n.node);
    let issued: Vec<_> = inv
        .iter()
        .filter(|c| c["requested_by"].as_str() == Some(by.as_str()))
        .collect();
    assert!(issued.len() >= 2, "{inv:?}");

    // The bundle alone, keyed by trust domain.
    let (b, ok) = n.client("bundles", &[]);
    assert!(ok, "{b:?}");
    assert_eq!(b[0][TD], 1, "{b:?}");

    // A deleted entry is not renewed again: the agent drops it at its next look at the entries.
    mutual(&["agent", "entry", "delete", &entry, "--dir", s(n.ca.d())]).ok();
    let dropped = eventually(Duration::from_secs(120), || {
        n.agent_log()
            .contains("entry no longer assigned to this node")
            .then_some(())
    });
    assert!(dropped.is_some(), "{}", n.agent_log());
    let denied = n.refused("x509");
    assert_eq!(denied["code"], "PERMISSION_DENIED", "{denied}");

    // The agent's log names callers and identities, never a key.
    let log = n.agent_log();
    assert!(log.contains("no entry matches the caller"), "{log}");
    assert!(!log.contains("PRIVATE KEY"), "{log}");
}

#[test]
fn py_spiffe_fetches_an_svid_and_bundle() {
    let mut n = Node::new("n1");
    let web = format!("{TD}/py");
    n.entry(&web, &[&format!("unix:uid:{}", uid())], &n.node, "1h");
    n.start_agent();
    let out = run_within(
        {
            let mut c = Command::new(venv_python());
            c.arg(script("py_spiffe.py")).env(
                "SPIFFE_ENDPOINT_SOCKET",
                format!("unix://{}", n.socket().display()),
            );
            c
        },
        Duration::from_secs(300),
    );
    assert_eq!(out.code, 0, "{}\n{}", out.text(), n.agent_log());
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["client_spiffe_id"], web.as_str(), "{v}");
    assert_eq!(v["source_spiffe_id"], web.as_str(), "{v}");
    assert_eq!(v["trust_domains"], serde_json::json!(["agent.test"]), "{v}");
}

#[test]
fn a_node_cannot_mint_an_identity_it_was_not_given() {
    let n = Node::new("n1");
    // The identity exists, but for another node.
    n.entry(
        &format!("{TD}/admin"),
        &["unix:uid:0"],
        &format!("{TD}/node/n2"),
        "1h",
    );
    let key = n.tmp.path().join("w.key");
    let csr = n.tmp.path().join("w.csr");
    openssl_ok(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        s(&key),
    ]);
    let pem = openssl_csr(&key, &csr, "/CN=admin", &format!("URI:{TD}/admin"));
    let body = serde_json::json!({ "spiffe_id": format!("{TD}/admin"), "csr": pem });
    let url = format!("{}/v1/agent/svid", n.ca.url());
    let (root, cert, key) = (n.ca.root(), n.cert(), n.key());
    let tls = ["--cacert", s(&root), "--cert", s(&cert), "--key", s(&key)];
    let mut args = json_post_args(n.tmp.path(), &body, &tls);
    args.push(url);
    let (body, code) = curl(&args);
    assert_eq!(code, "403", "{body}");
    let p: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(p["reason"], "entry_not_assigned", "{p}");
    // The refusal is in the CA's log with the node that asked.
    let line = eventually(Duration::from_secs(30), || {
        n.ca.log_text()
            .lines()
            .find(|l| l.contains("/v1/agent/svid") && l.contains("entry_not_assigned"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no refusal line:\n{}", n.ca.log_text()));
    assert!(line.contains(&format!("{TD}/node/n1")), "{line}");
    assert!(line.contains("status=403"), "{line}");
    assert!(n
        .ca
        .inventory()
        .iter()
        .all(|c| !c.to_string().contains("/admin")));

    // Without a client certificate the endpoint does nothing at all.
    let entries = format!("{}/v1/agent/entries", n.ca.url());
    let (body, code) = curl(&["--cacert", s(&root), &entries]);
    assert_eq!(code, "401", "{body}");
    assert!(body.contains("\"reason\":\"no_client_cert\""), "{body}");

    // The node's own list holds only its entries (none here).
    let mut args = tls.to_vec();
    args.push(&entries);
    let (body, code) = curl(&args);
    assert_eq!(code, "200", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["node"], format!("{TD}/node/n1"));
    assert_eq!(v["entries"], serde_json::json!([]), "{v}");
}

#[test]
fn entries_are_created_listed_and_deleted_with_clear_errors() {
    let ca = TestCa::new(&[]);
    let node = format!("{TD}/node/n1");
    let web = format!("{TD}/web");
    // A CA with a trust domain refuses an entry it could never serve an SVID for.
    let strict = TestCa::new(&["--trust-domain", "other.test"]);
    let o = entry_create(strict.d(), &web, &node, &["unix:uid:1000"], &[]);
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(
        o.stderr.contains("is outside this CA's trust domain"),
        "{}",
        o.text()
    );
    // SVIDs that would outlive the intermediate (every request would be refused).
    let o = entry_create(ca.d(), &web, &node, &["unix:uid:1000"], &["--ttl", "20y"]);
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(
        o.stderr
            .contains("a certificate cannot outlive the intermediate that issues it"),
        "{}",
        o.text()
    );
    let o = entry_create(ca.d(), &web, &node, &["unix:uid:me"], &[]);
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(
        o.stderr
            .contains("invalid selector \"unix:uid:me\": a uid is a number"),
        "{}",
        o.text()
    );
    let o = entry_create(
        ca.d(),
        "spiffe://other.test/web",
        &node,
        &["unix:uid:1000"],
        &[],
    );
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(o.stderr.contains("different trust domains"), "{}", o.text());

    let sels = ["unix:uid:1000", "unix:gid:100"];
    let o = entry_create(ca.d(), &web, &node, &sels, &["--json"]).ok();
    let e: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let id = e["id"].as_str().unwrap();
    // Stored sorted, as parsed.
    assert_eq!(
        e["selectors"],
        serde_json::json!(["unix:uid:1000", "unix:gid:100"])
    );
    assert_eq!(e["ttl"], 3600);
    assert_eq!(
        e["created_at"],
        mutual_policy::human::rfc3339(e["created_at_unix"].as_i64().unwrap()).as_str()
    );
    let l = mutual(&["agent", "entry", "list", "--dir", ca.d(), "--json"]).ok();
    let list: Vec<serde_json::Value> = serde_json::from_str(&l.stdout).unwrap();
    assert_eq!(list, vec![e.clone()]);
    let t = mutual(&["agent", "entry", "list", "--dir", ca.d()]).ok();
    assert!(
        t.stdout.contains(id) && t.stdout.contains("unix:uid:1000 unix:gid:100"),
        "{}",
        t.stdout
    );
    mutual(&["agent", "entry", "delete", id, "--dir", ca.d()]).ok();
    let again = mutual(&["agent", "entry", "delete", id, "--dir", ca.d()]);
    assert_eq!(again.code, 1, "{}", again.text());
    assert!(again
        .stderr
        .contains(&format!("no registration entry {id}")));
    let l = mutual(&["agent", "entry", "list", "--dir", ca.d()]).ok();
    assert_eq!(l.stdout.trim(), "no registration entries");
}

#[test]
fn the_agent_refuses_a_node_certificate_without_a_spiffe_id_and_a_path_that_is_not_a_socket() {
    let ca = TestCa::new(&[]);
    ca.issue("plain", &["--san", "dns:plain.test"]).ok();
    ca.issue("n1", &["--san", &format!("uri:{TD}/node/n1")])
        .ok();
    let out = Path::new(ca.o());
    let regular = out.join("not-a-socket");
    std::fs::write(&regular, "keep me").unwrap();
    let run = |name: &str, socket: &Path, extra: &[&str]| {
        let cert = out.join(format!("{name}.pem"));
        let key = out.join(format!("{name}.key"));
        let root = ca.root();
        mutual_within(
            &[
                "agent",
                "--ca-url",
                "https://127.0.0.1:1",
                "--socket",
                s(socket),
                "--cert",
                s(&cert),
                "--key",
                s(&key),
                "--ca",
                &root,
            ]
            .into_iter()
            .chain(extra.iter().copied())
            .collect::<Vec<_>>(),
            Duration::from_secs(60),
        )
    };
    let o = run("plain", &out.join("a.sock"), &[]);
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(o.stderr.contains("carries no SPIFFE ID"), "{}", o.text());
    assert!(!out.join("a.sock").exists());
    // An entries poll shorter than a second would hammer the CA: a usage error.
    run("n1", &out.join("a.sock"), &["--entries-poll", "500ms"])
        .fails_with("the entries poll interval must be at least 1s");
    assert!(!out.join("a.sock").exists());
    let o = run("n1", &regular, &[]);
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(
        o.stderr
            .contains("exists and is not a socket; not replacing it"),
        "{}",
        o.text()
    );
    assert_eq!(std::fs::read_to_string(&regular).unwrap(), "keep me");
}

/// The binary's longest test (a 45-second wait); its name sorts first so that libtest starts it
/// first and the others run beside it.
#[test]
fn a_node_certificate_is_renewed_while_the_agent_keeps_serving() {
    // A node certificate of 45 s: renewed at about two-thirds of it, like `renew --daemon`.
    let mut n = Node::with_cert_args("n1", &["--ttl", "45s"]);
    n.entry(
        &format!("{TD}/web"),
        &[&format!("unix:uid:{}", uid())],
        &n.node,
        "1h",
    );
    let before = x509(&n.cert(), &["-noout", "-serial"]);
    n.start_agent();
    let renewed = eventually(Duration::from_secs(180), || {
        let now = x509(&n.cert(), &["-noout", "-serial"]);
        (now != before).then_some(now)
    });
    assert!(renewed.is_some(), "not renewed:\n{}", n.agent_log());
    // The renewed certificate still authenticates the node to the CA.
    let (msgs, ok) = n.client("x509", &["1", s(n.tmp.path())]);
    assert!(ok, "{msgs:?}\n{}", n.agent_log());
    assert_eq!(msgs[0]["svids"][0]["spiffe_id"], format!("{TD}/web"));
}

#[test]
fn the_agent_enrolls_its_node_with_a_token() {
    let mut n = Node::new("n1");
    std::fs::remove_file(n.cert()).unwrap();
    std::fs::remove_file(n.key()).unwrap();
    n.entry(
        &format!("{TD}/web"),
        &[&format!("unix:uid:{}", uid())],
        &n.node,
        "1h",
    );
    let token = n.ca.token(&[&format!("uri:{}", n.node)], "1h", "client");
    let pin = n.ca.fingerprint();
    n.start_agent_with(&["--token", &token, "--root-sha256", &pin]);
    let san = x509(&n.cert(), &["-noout", "-ext", "subjectAltName"]);
    assert!(san.contains(&format!("URI:{}", n.node)), "{san}");
    let (msgs, ok) = n.client("x509", &["1", s(n.tmp.path())]);
    assert!(ok, "{msgs:?}\n{}", n.agent_log());
    assert_eq!(msgs[0]["svids"][0]["spiffe_id"], format!("{TD}/web"));
}

/// Issue 22: workloads keep what they were given when the agent restarts. An SVID is a
/// certificate the CA signed; it stays valid (and accepted by a peer) whether or not the agent
/// that fetched it runs, after a SIGTERM (socket removed) as after a SIGKILL (stale socket left
/// behind, which the next agent replaces; a live socket it refuses).
#[test]
fn workloads_keep_their_svids_across_agent_restarts() {
    let mut n = Node::new("n1");
    let web = format!("{TD}/web");
    n.entry(&web, &[&format!("unix:uid:{}", uid())], &n.node, "1h");
    // A server of the same CA that requires and verifies a client certificate: the real peer
    // the saved SVID is presented to.
    mutual(&[
        "cert",
        "issue",
        "srv",
        "--dir",
        s(n.ca.d()),
        "--out",
        s(n.tmp.path()),
        "--san",
        "dns:localhost",
        "--server",
    ])
    .ok();
    let srv = n.tmp.path().join("srv.pem");
    let root = n.ca.root();
    let (_peer, port) = mutual_test::openssl_s_server_files(
        [&srv, &srv.with_extension("key"), &srv, &root],
        &["-Verify", "1", "-verify_return_error", "-www"],
    );
    let accepted = |pem: &Path| {
        let mut c = Command::new("timeout");
        c.args(["60", "openssl", "s_client", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .args([
                "-servername",
                "localhost",
                "-verify_return_error",
                "-ign_eof",
            ])
            .args(["-CAfile", s(&root)])
            .args(["-cert", s(pem), "-key", s(&pem.with_extension("key"))])
            .args(["-cert_chain", s(pem)]);
        let out = mutual_test::output_with_stdin(&mut c, b"GET / HTTP/1.0\r\n\r\n");
        let text = mutual_test::output_text(&out);
        assert!(text.contains("HTTP/1.0 200 ok"), "not accepted:\n{text}");
    };
    let still_valid = |pem: &Path| {
        verify_svid(&root, pem);
        // Within its validity for at least a minute more (the entry's TTL is an hour).
        let e = openssl(&["x509", "-in", s(pem), "-noout", "-checkend", "60"]);
        assert_eq!(e.code, 0, "{}", e.text());
    };
    let fetch = |n: &Node, dir: &Path| {
        std::fs::create_dir_all(dir).unwrap();
        let (msgs, ok) = n.client("x509", &["1", s(dir)]);
        assert!(ok, "{msgs:?}\n{}", n.agent_log());
        let sv = msgs[0]["svids"][0].clone();
        assert_eq!(sv["spiffe_id"], web.as_str(), "{sv}");
        (
            PathBuf::from(sv["pem"].as_str().unwrap()),
            sv["serial"].as_str().unwrap().to_string(),
        )
    };

    n.start_agent();
    let (pem, serial) = fetch(&n, &n.tmp.path().join("first"));
    still_valid(&pem);
    accepted(&pem);

    // A second agent on the live socket is refused, and the first keeps serving.
    let second = n.agent_args(&root);
    let o = mutual_within(
        &second.iter().map(String::as_str).collect::<Vec<_>>(),
        Duration::from_secs(60),
    );
    o.fails_with("another process is listening on it; not replacing it");
    assert!(
        std::os::unix::net::UnixStream::connect(n.socket()).is_ok(),
        "the refused agent took the socket away:\n{}",
        n.agent_log()
    );
    let mut serials = vec![serial];
    for (round, signal) in ["TERM", "KILL"].into_iter().enumerate() {
        let st = n.stop_agent(signal);
        if signal == "TERM" {
            assert!(st.success(), "{st}\n{}", n.agent_log());
            assert!(!n.socket().exists(), "SIGTERM removes the socket");
        } else {
            assert!(n.socket().exists(), "SIGKILL leaves the socket behind");
        }
        // No agent at all: what the workload saved is still a good certificate.
        still_valid(&pem);
        accepted(&pem);
        // The same socket path, stale after SIGKILL: the new agent replaces it.
        n.start_agent();
        assert!(
            n.agent_log().contains("serving the SPIFFE Workload API"),
            "{}",
            n.agent_log()
        );
        // Workload keys live only in the agent's memory, so the restarted agent has none to
        // hand back: the workload gets a newly issued SVID (new key, new serial), and the one
        // it held before keeps working beside it.
        let (again, serial) = fetch(&n, &n.tmp.path().join(format!("after-{round}")));
        assert!(!serials.contains(&serial), "{serial} in {serials:?}");
        serials.push(serial);
        still_valid(&again);
        accepted(&again);
        still_valid(&pem);
        accepted(&pem);
    }
}

/// Issue 22: Envoy's SDS on the agent socket, asked by a client on Envoy's published stubs.
/// StreamSecrets answers the SVID as a tls_certificate and ROOTCA as a validation_context (the
/// certificate verifies against that bundle and carries the URI SAN, the key is its key),
/// leaves out a name the caller has no entry for, pushes the rotated SVID (10 s TTL, renewed at
/// 5 s) after a NACK that is not answered by a resend, and logs the NACK and the ACK.
#[test]
fn envoy_sds_serves_the_svid_and_bundle_and_pushes_rotations() {
    let mut n = Node::new("n1");
    n.start_agent();
    let out = n.tmp.path().join("sds");
    std::fs::create_dir_all(&out).unwrap();
    // No entry matches this caller yet: no secret at all.
    let (l, ok) = n.sds("fetch", &[s(&out), "ROOTCA"]);
    assert!(!ok, "{l:?}");
    assert_eq!(l[0]["code"], "PERMISSION_DENIED", "{l:?}");
    assert_eq!(l[0]["details"], "no identity issued");

    let web = format!("{TD}/web");
    let other = format!("{TD}/other");
    n.entry(&web, &[&format!("unix:uid:{}", uid())], &n.node, "10s");
    n.entry(&other, &["unix:uid:4242"], &n.node, "1h");
    let (msgs, ok) = n.sds("stream", &[s(&out), &web, "ROOTCA", &other]);
    assert!(ok, "{msgs:?}\n{}", n.agent_log());
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    let mut serials = Vec::new();
    for m in &msgs {
        assert_eq!(
            m["type_url"],
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
        );
        let secrets = m["secrets"].as_array().unwrap();
        let names: Vec<_> = secrets
            .iter()
            .map(|x| x["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["ROOTCA", web.as_str()],
            "{other} is not the caller's: {m}"
        );
        let (ca, cert) = (&secrets[0], &secrets[1]);
        assert_eq!(ca["kind"], "validation_context", "{m}");
        assert_eq!(ca["certs"], 1, "{m}");
        assert_eq!(cert["kind"], "tls_certificate", "{m}");
        assert_eq!(cert["certs"], 2, "leaf and intermediate: {m}");
        assert_eq!(cert["key_matches"], true, "{m}");
        let chain = Path::new(cert["chain"].as_str().unwrap());
        verify_svid_for(Path::new(ca["trusted_ca"].as_str().unwrap()), chain, &web);
        serials.push(cert["serial"].as_str().unwrap().to_string());
    }
    assert_ne!(
        serials[0], serials[1],
        "the second response is the rotated SVID"
    );
    let (v0, v1) = (
        msgs[0]["version"].as_str().unwrap(),
        msgs[1]["version"].as_str().unwrap(),
    );
    assert_ne!(
        v0, v1,
        "a rotation is a new version, not the NACKed one resent"
    );
    assert_ne!(msgs[0]["nonce"], msgs[1]["nonce"]);
    let log = n.agent_log();
    let line = |what: &str| {
        log.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} in\n{log}"))
    };
    let nack = line("SDS update rejected by the client (NACK); not resent");
    assert!(nack.contains(&format!("rejected_version={v0}")), "{nack}");
    assert!(
        nack.contains("error=test client refuses this one"),
        "{nack}"
    );
    let ack = line("SDS update acknowledged");
    assert!(ack.contains(&format!("version={v1}")), "{ack}");
    assert_eq!(
        log.matches("SDS update sent").count(),
        2,
        "no resend after the NACK: {log}"
    );
    assert!(
        line("not entitled to").contains(&format!("missing={other}")),
        "{log}"
    );
    assert!(!log.contains("PRIVATE KEY"), "{log}");

    // FetchSecrets with SPIRE's other names: `default` is the caller's first SVID, the trust
    // domain names the bundle.
    let (f, ok) = n.sds("fetch", &[s(&out), "default", TD]);
    assert!(ok, "{f:?}");
    let secrets = f[0]["secrets"].as_array().unwrap();
    let names: Vec<_> = secrets
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", TD], "{f:?}");
    let chain = Path::new(secrets[0]["chain"].as_str().unwrap());
    assert!(x509(chain, &["-noout", "-ext", "subjectAltName"]).contains(&format!("URI:{web}")));
    assert_eq!(secrets[1]["kind"], "validation_context");
    // No names: everything the caller may have (SPIRE's rule), the bundle as ROOTCA.
    let (f, ok) = n.sds("fetch", &[s(&out)]);
    assert!(ok, "{f:?}");
    let names: Vec<_> = f[0]["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ROOTCA", web.as_str()], "{f:?}");

    let (d, ok) = n.sds("delta", &[]);
    assert!(!ok, "{d:?}");
    assert_eq!(d[0]["code"], "UNIMPLEMENTED", "{d:?}");
}

/// Issue 22: an entry created or deleted at the CA reaches an open FetchX509SVID stream and an
/// open SDS stream without reconnecting (the agent polls the entries, here every second): the
/// next message carries the new SVID, then drops it, and deleting the last entry ends the
/// Workload API stream with PermissionDenied.
#[test]
fn entries_created_and_deleted_at_the_ca_reach_an_open_stream() {
    use std::io::BufRead;
    let mut n = Node::new("n1");
    let me = format!("unix:uid:{}", uid());
    let (a, b) = (format!("{TD}/a"), format!("{TD}/b"));
    let first = n.entry(&a, &[&me], &n.node, "1h");
    n.start_agent_with(&["--entries-poll", "1s"]);
    let mut c = Command::new(venv_python());
    c.arg(script("workload_client.py"))
        .args([s(&n.socket()), s(&n.tmp.path().join("gen")), "x509", "4"])
        .arg(n.tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut client = ChildGuard(c.spawn().unwrap());
    let mut lines = std::io::BufReader::new(client.0.stdout.take().unwrap()).lines();
    let mut next = || -> serde_json::Value {
        let l = lines.next().expect("the client ended early").unwrap();
        serde_json::from_str(&l).unwrap()
    };
    // An SDS stream asking for the bundle and b, which is nobody's yet.
    let sds_out = n.tmp.path().join("sds");
    std::fs::create_dir_all(&sds_out).unwrap();
    let mut c = Command::new(venv_python());
    c.arg(script("sds_client.py"))
        .args([s(&n.socket()), "watch", "3", s(&sds_out), "ROOTCA", &b])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut sds = ChildGuard(c.spawn().unwrap());
    let mut sds_lines = std::io::BufReader::new(sds.0.stdout.take().unwrap()).lines();
    let mut sds_names = || -> Vec<String> {
        let l = sds_lines
            .next()
            .expect("the SDS client ended early")
            .unwrap();
        let m: serde_json::Value = serde_json::from_str(&l).unwrap();
        m["secrets"]
            .as_array()
            .unwrap_or_else(|| panic!("{m}"))
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_string())
            .collect()
    };
    let ids = |m: &serde_json::Value| -> Vec<String> {
        let mut v: Vec<String> = m["svids"]
            .as_array()
            .unwrap_or_else(|| panic!("{m}"))
            .iter()
            .map(|x| x["spiffe_id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let m = next();
    assert_eq!(ids(&m), [a.as_str()]);
    assert_eq!(sds_names(), ["ROOTCA"]);
    let serial = m["svids"][0]["serial"].clone();
    let second = n.entry(&b, &[&me], &n.node, "1h");
    let m = next();
    assert_eq!(ids(&m), [a.as_str(), b.as_str()], "{}", n.agent_log());
    assert_eq!(sds_names(), ["ROOTCA", b.as_str()], "{}", n.agent_log());
    mutual(&["agent", "entry", "delete", &second, "--dir", s(n.ca.d())]).ok();
    let m = next();
    assert_eq!(ids(&m), [a.as_str()], "{}", n.agent_log());
    assert_eq!(sds_names(), ["ROOTCA"], "{}", n.agent_log());
    assert!(sds.0.wait().unwrap().success());
    assert_eq!(m["svids"][0]["serial"], serial, "a's SVID is the same one");
    mutual(&["agent", "entry", "delete", &first, "--dir", s(n.ca.d())]).ok();
    let m = next();
    assert_eq!(m["code"], "PERMISSION_DENIED", "{m}");
    assert_eq!(m["details"], "no identity issued");
    assert_eq!(client.0.wait().unwrap().code(), Some(3));
    let log = n.agent_log();
    assert!(
        log.contains("this node's registration entries changed"),
        "{log}"
    );
    assert!(
        log.contains(&format!("spiffe_id={b}")) && log.contains("its SVID is dropped"),
        "{log}"
    );
}

#[test]
fn jwt_svids_are_issued_validated_and_checked_independently() {
    let mut n = Node::new("n1");
    let web = format!("{TD}/jwt");
    n.entry(&web, &[&format!("unix:uid:{}", uid())], &n.node, "1h");
    // Another node's identity, which this node must not get a token for.
    n.entry(
        &format!("{TD}/admin"),
        &["unix:uid:0"],
        &format!("{TD}/node/n2"),
        "1h",
    );
    n.start_agent();
    let out = run_within(
        {
            let mut c = Command::new(venv_python());
            c.arg(script("py_spiffe_jwt.py"))
                .args([n.ca.url(), n.ca.root().display().to_string()])
                .env(
                    "SPIFFE_ENDPOINT_SOCKET",
                    format!("unix://{}", n.socket().display()),
                );
            c
        },
        Duration::from_secs(300),
    );
    assert_eq!(out.code, 0, "{}\n{}", out.text(), n.agent_log());
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    for k in ["spiffe_id", "validated_spiffe_id", "offline_spiffe_id"] {
        assert_eq!(v[k], web.as_str(), "{k}: {v}");
    }
    // One key, published by the CA and pushed by the agent alike, and it signed the token.
    let kid = &v["header"]["kid"];
    assert_eq!(v["jwks_kids"], serde_json::json!([kid]), "{v}");
    assert_eq!(v["bundle_kids"], v["jwks_kids"], "{v}");
    assert_eq!(v["jwks_use"], serde_json::json!(["jwt-svid"]), "{v}");
    assert_eq!(v["header"]["alg"], "ES256", "{v}");
    assert_eq!(v["header"]["typ"], "JWT", "{v}");
    let claims = &v["claims"];
    assert_eq!(claims["sub"], web.as_str(), "{v}");
    let mut aud: Vec<&str> = claims["aud"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    aud.sort_unstable();
    assert_eq!(aud, ["cache", "db"], "{v}");
    // The default --jwt-svid-ttl (5 min), shorter than the entry's hour.
    let ttl = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(ttl, 300, "{v}");
    assert_eq!(
        v["cached"], true,
        "the same audience set is served from the cache: {v}"
    );
    assert_eq!(v["forged_verifies"], false, "{v}");
    assert_eq!(v["valid_raw"], "OK", "{v}");
    // The refusals, word for word.
    assert_eq!(v["pyspiffe_wrong_audience"], "ValidateJwtSvidError", "{v}");
    assert_eq!(
        v["wrong_audience"],
        format!(
            r#"INVALID_ARGUMENT: the token's audience {:?} does not contain "web""#,
            claims_aud(claims)
        )
        .as_str(),
        "{v}"
    );
    assert_eq!(
        v["tampered"], "INVALID_ARGUMENT: the token's signature does not verify",
        "{v}"
    );
    assert_eq!(
        v["no_audience"], "INVALID_ARGUMENT: audience must be specified",
        "{v}"
    );
    assert_eq!(
        v["other_identity"], "PERMISSION_DENIED: no identity issued",
        "{v}"
    );

    // The CA side, asked directly with the node's certificate.
    let (root, cert, key) = (n.ca.root(), n.cert(), n.key());
    let tls = ["--cacert", s(&root), "--cert", s(&cert), "--key", s(&key)];
    let url = format!("{}/v1/agent/jwt", n.ca.url());
    let ask = |body: serde_json::Value| {
        let mut args = json_post_args(n.tmp.path(), &body, &tls);
        args.push(url.clone());
        let (body, code) = curl(&args);
        let p: serde_json::Value = serde_json::from_str(&body).unwrap();
        (code, p)
    };
    let (code, p) =
        ask(serde_json::json!({ "spiffe_id": format!("{TD}/admin"), "audience": ["db"] }));
    assert_eq!(
        (code.as_str(), &p["reason"]),
        ("403", &"entry_not_assigned".into()),
        "{p}"
    );
    let line = eventually(Duration::from_secs(30), || {
        n.ca.log_text()
            .lines()
            .find(|l| l.contains("/v1/agent/jwt") && l.contains("entry_not_assigned"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no refusal line:\n{}", n.ca.log_text()));
    assert!(line.contains(&format!("{TD}/node/n1")), "{line}");
    let (code, p) = ask(serde_json::json!({ "spiffe_id": web, "audience": [] }));
    assert_eq!(
        (code.as_str(), &p["reason"]),
        ("400", &"bad_request".into()),
        "{p}"
    );
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("at least one audience"),
        "{p}"
    );
    // The JWK set is public, as the roots are; no token ever reaches the CA's log.
    let (body, code) = curl(&["--cacert", s(&root), &format!("{}/v1/jwks", n.ca.url())]);
    assert_eq!(code, "200", "{body}");
    let jwks: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], *kid, "{jwks}");
    let log = n.ca.log_text() + &n.agent_log();
    assert!(log.contains("JWT-SVID issued"), "{log}");
    assert!(!log.contains("eyJ"), "a token reached a log:\n{log}");
    let (metrics, _) = curl(&["--cacert", s(&root), &format!("{}/metrics", n.ca.url())]);
    assert!(
        metrics.contains(r#"mutual_ca_issued_total{method="agent_jwt",result="ok"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"mutual_ca_issued_total{method="agent_jwt",result="entry_not_assigned"} 1"#
        ),
        "{metrics}"
    );
}

/// The `aud` claim as the agent words it in a refusal.
fn claims_aud(claims: &serde_json::Value) -> Vec<String> {
    claims["aud"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// `mutual serve` and `mutual connect` on the Workload API (ghostunnel's --use-workload-api):
/// each takes its SVID (picked by --workload-spiffe-id: the entries match both, same uid) and
/// bundle from the agent, and swaps in every rotation the agent pushes. SVIDs live 8 s and are
/// renewed at half of that; a client keeps traffic flowing through connect -> serve -> backend
/// across at least three rotations of each, with no failure at all.
#[test]
fn serve_and_connect_on_the_workload_api_carry_traffic_across_rotations() {
    use std::io::{BufRead, BufReader, Write};
    let mut n = Node::new("n1");
    let me = format!("unix:uid:{}", uid());
    let (server_id, client_id) = (format!("{TD}/api"), format!("{TD}/caller"));
    n.entry(&server_id, &[&me], &n.node, "8s");
    n.entry(&client_id, &[&me], &n.node, "8s");
    n.start_agent();
    let backend = mutual_test::tcp_server(|mut s| {
        let mut r = s.try_clone().unwrap();
        let _ = std::io::copy(&mut r, &mut s);
    });
    let api = format!("unix://{}", n.socket().display());
    let (sp, cp) = (mutual_test::free_port(), mutual_test::free_port());
    let audit = n.tmp.path().join("audit.log");
    let (serve_log, connect_log) = (
        n.tmp.path().join("serve.log"),
        n.tmp.path().join("connect.log"),
    );
    let sp_s = format!("127.0.0.1:{sp}");
    let _serve = mutual_test::spawn_logged(
        &mut mutual_cmd(
            None,
            &[
                "serve",
                "--listen",
                &sp_s,
                "--backend",
                &backend.to_string(),
                "--workload-api",
                &api,
                "--workload-spiffe-id",
                &server_id,
                "--allow-spiffe",
                &client_id,
                "--audit-log",
                s(&audit),
            ],
        ),
        &serve_log,
    );
    let _connect = mutual_test::spawn_logged(
        &mut mutual_cmd(
            None,
            &[
                "connect",
                "--listen",
                &format!("127.0.0.1:{cp}"),
                "--remote",
                &sp_s,
                "--workload-api",
                &api,
                "--workload-spiffe-id",
                &client_id,
                "--expect-spiffe",
                &server_id,
            ],
        ),
        &connect_log,
    );
    let logs = || {
        format!(
            "serve:\n{}\nconnect:\n{}\nagent:\n{}",
            std::fs::read_to_string(&serve_log).unwrap_or_default(),
            std::fs::read_to_string(&connect_log).unwrap_or_default(),
            n.agent_log()
        )
    };
    for p in [sp, cp] {
        let up = mutual_test::wait_for_port(([127, 0, 0, 1], p).into(), Duration::from_secs(60));
        assert!(up, "not listening on {p}:\n{}", logs());
    }
    // The serials each side put in use, from its reload log lines.
    let serials = |log: &Path, line: &str| -> std::collections::BTreeSet<String> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(line))
            .filter_map(|l| l.split("serial=").nth(1))
            .map(|s| s.split_whitespace().next().unwrap_or_default().to_string())
            .collect()
    };
    let (mut ok, mut failures) = (0u32, Vec::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let msg = format!("ping {ok}\n");
        let round = (|| -> std::io::Result<String> {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", cp))?;
            c.set_read_timeout(Some(Duration::from_secs(30)))?;
            c.write_all(msg.as_bytes())?;
            let mut line = String::new();
            BufReader::new(c).read_line(&mut line)?;
            Ok(line)
        })();
        match round {
            Ok(l) if l == msg => ok += 1,
            other => failures.push(format!("{other:?}")),
        }
        let served = serials(&serve_log, "new TLS configuration and policy in use");
        let presented = serials(&connect_log, "new TLS client configuration in use");
        if served.len() >= 3 && presented.len() >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than 3 rotations: {served:?} {presented:?}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        failures.is_empty(),
        "{} ok, failed: {failures:?}\n{}",
        ok,
        logs()
    );
    assert!(ok > 10, "{ok}");
    // Each reload came from a push of the agent, counted and logged as a file reload is.
    assert!(
        logs().contains("configuration reloaded listener=\"serve\" trigger=\"workload api\""),
        "{}",
        logs()
    );
    // One allowed line naming the client's SPIFFE ID per exchange (the last one is written
    // when serve sees that connection close).
    let allowed = || {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["result"] == "allowed" && v["identity"]["spiffe"] == client_id.as_str())
            .count()
    };
    let all = eventually(Duration::from_secs(30), || {
        (allowed() >= ok as usize).then_some(())
    });
    assert!(all.is_some(), "{} of {ok}:\n{}", allowed(), logs());
}

/// A Workload API nobody serves (a stale socket file) stops the start with exit 2 and says
/// why; --workload-api beside --cert is a usage error.
#[test]
fn serve_on_a_workload_api_without_agent_or_with_files_exits_2() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("agent.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let api = format!("unix://{}", sock.display());
    let base = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "127.0.0.1:1",
        "--allow-any",
        "--workload-api",
        &api,
    ];
    let o = mutual_within(&base, Duration::from_secs(60));
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(
        o.stderr.contains(&format!(
            "error: cannot reach the Workload API at {api}: Connection refused (os error 111)"
        )),
        "{}",
        o.text()
    );
    let mut mixed = base.to_vec();
    mixed.extend(["--cert", "c.pem"]);
    let o = mutual_within(&mixed, Duration::from_secs(60));
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(
        o.stderr.contains(
            "the argument '--workload-api <unix:///PATH>' cannot be used with '--cert <FILE>'"
        ),
        "{}",
        o.text()
    );
    // --workload-spiffe-id picks an SVID of the Workload API; beside files it would be ignored.
    let mut stray = base[..6].to_vec();
    stray.extend(["--cert", "c.pem", "--key", "k.pem", "--ca", "r.pem"]);
    stray.extend(["--workload-spiffe-id", "spiffe://t/api"]);
    let o = mutual_within(&stray, Duration::from_secs(60));
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(
        o.stderr.contains(
            "error: --workload-spiffe-id picks one of the Workload API's SVIDs: it needs \
             --workload-api / workload_api"
        ),
        "{}",
        o.text()
    );
}
