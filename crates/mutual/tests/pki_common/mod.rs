//! Shared helpers for the tests that run the real `mutual` binary and the real `openssl`
//! (pki_*.rs, ca_server.rs, enroll.rs, defects_*.rs, probe.rs, ...): one way to run a command
//! and read its result, a throwaway CA read back through `cert list --json`, `mutual ca serve`
//! on an ephemeral port, and the openssl invocations several files need (CSR, fingerprint).
//! One copy of each, so that a change of the CLI is fixed in one place.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mutual_test::{eventually, free_port, ChildGuard};

pub const PW: &str = "correct horse battery staple";

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Exit code, stdout and stderr, for assertion messages.
    pub fn text(&self) -> String {
        format!(
            "exit {}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        )
    }

    /// Asserts exit 0.
    pub fn ok(self) -> Out {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
    /// Asserts exit 2 and that stderr contains `needle`.
    pub fn fails_with(self, needle: &str) -> Out {
        self.fails_code(2, needle)
    }

    /// Asserts exit `code` and that stderr contains `needle` (and not the CA password).
    pub fn fails_code(self, code: i32, needle: &str) -> Out {
        assert_eq!(
            self.code, code,
            "expected exit {code}; stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {}",
            self.stderr
        );
        assert!(!self.stderr.contains(PW), "the password leaked into stderr");
        self
    }
}

pub fn collect(mut c: Command) -> Out {
    let o = c.stdin(Stdio::null()).output().expect("spawn");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Runs `c` (stdin closed), killing it and failing the test if it runs longer than `limit`:
/// a hang is a defect, not a slow test.
pub fn run_within(mut c: Command, limit: Duration) -> Out {
    let what = format!("{c:?}");
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes on threads so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        code: status.code().unwrap_or(-1),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// `mutual ARGS` (hermetic environment, no CA password) that must end within `limit`.
pub fn mutual_within(args: &[&str], limit: Duration) -> Out {
    run_within(mutual_cmd(None, args), limit)
}

pub fn mutual_cmd(pw: Option<&str>, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mutual"));
    c.args(args)
        .env_remove("MUTUAL_HOME")
        .env_remove("MUTUAL_TOKEN")
        .env_remove("MUTUAL_CA_PASSWORD")
        .env_remove("MUTUAL_P12_PASSWORD");
    if let Some(pw) = pw {
        c.env("MUTUAL_CA_PASSWORD", pw);
    }
    c
}

/// Runs `mutual` with the test CA password in the environment.
pub fn mutual(args: &[&str]) -> Out {
    collect(mutual_cmd(Some(PW), args))
}

pub fn mutual_pw(pw: Option<&str>, args: &[&str]) -> Out {
    collect(mutual_cmd(pw, args))
}

pub fn openssl(args: &[&str]) -> Out {
    let mut c = Command::new("openssl");
    c.args(args);
    collect(c)
}

/// `openssl x509 -in CERT -noout ARGS...` that must succeed; its stdout.
pub fn x509(cert: &Path, args: &[&str]) -> String {
    let mut a = vec!["x509", "-in", s(cert), "-noout"];
    a.extend_from_slice(args);
    openssl_ok(&a)
}

/// `openssl ARGS` that must succeed; its stdout.
pub fn openssl_ok(args: &[&str]) -> String {
    let o = openssl(args);
    assert_eq!(o.code, 0, "openssl {args:?}\n{}", o.text());
    o.stdout
}

/// A fresh P-256 key at `key` and a CSR for it at `csr`, made by `openssl req` with subject
/// `subj` and, unless empty, `subjectAltName=SANS` (openssl syntax); returns the CSR PEM.
pub fn openssl_csr(key: &Path, csr: &Path, subj: &str, sans: &str) -> String {
    let ext = format!("subjectAltName={sans}");
    let extra: &[&str] = if sans.is_empty() {
        &[]
    } else {
        &["-addext", &ext]
    };
    openssl_csr_with(key, csr, subj, extra)
}

/// Like `openssl_csr`, with any further `openssl req` arguments (`-addext ...`).
pub fn openssl_csr_with(key: &Path, csr: &Path, subj: &str, extra: &[&str]) -> String {
    let mut a = vec![
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        s(key),
        "-out",
        s(csr),
        "-subj",
        subj,
    ];
    a.extend_from_slice(extra);
    openssl(&a).ok();
    std::fs::read_to_string(csr).unwrap()
}

/// The issuer CN of the first certificate of a PEM file.
pub fn issuer_cn(pem: &Path) -> String {
    let o = openssl(&[
        "x509",
        "-in",
        s(pem),
        "-noout",
        "-issuer",
        "-nameopt",
        "multiline",
    ]);
    o.stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("commonName")
                .map(|v| v.trim_start_matches([' ', '=']).to_string())
        })
        .unwrap()
}

/// The public key (PEM) of the first certificate of a PEM file.
pub fn pubkey_of_cert(cert: &Path) -> String {
    x509(cert, &["-pubkey"])
}

/// The public key (PEM) of a private key file, PEM or DER (openssl tells them apart).
pub fn pubkey_of_key(key: &Path) -> String {
    openssl_ok(&["pkey", "-in", s(key), "-pubout"])
}

/// The SHA-256 fingerprint of a PEM certificate as openssl prints it (upper case with colons),
/// the form an operator hands out for `--root-sha256`.
pub fn fingerprint_of(pem: &Path) -> String {
    let o = openssl(&["x509", "-noout", "-fingerprint", "-sha256", "-in", s(pem)]).ok();
    o.stdout.trim().split_once('=').unwrap().1.to_string()
}

/// curl arguments that POST `body` as `application/json` (written to a fresh file in `dir`,
/// which curl reads with `@`), followed by `args`.
pub fn json_post_args(dir: &Path, body: &serde_json::Value, args: &[&str]) -> Vec<String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let f = dir.join(format!("body-{}.json", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&f, serde_json::to_vec(body).unwrap()).unwrap();
    let mut a: Vec<String> = ["-X", "POST", "-H", "content-type: application/json"]
        .map(String::from)
        .to_vec();
    a.extend(["--data-binary".to_string(), format!("@{}", s(&f))]);
    a.extend(args.iter().map(|s| s.to_string()));
    a
}

/// A serial as `cert list` and the audit log print it: lowercase hex without colons or
/// leading zeros (openssl prints `0A:1B...`).
pub fn norm_serial(s: &str) -> String {
    let s = s.replace(':', "").to_ascii_lowercase();
    let t = s.trim_start_matches('0');
    if t.is_empty() {
        "0".into()
    } else {
        t.to_string()
    }
}

/// The `role` of each certificate in a `cert verify --json` report's `chain`, leaf first.
pub fn chain_roles(report: &serde_json::Value) -> Vec<String> {
    let chain = report["chain"].as_array().unwrap();
    chain
        .iter()
        .map(|c| c["role"].as_str().unwrap().to_string())
        .collect()
}

/// One curl answer: the status (0 when none came), the response headers as received, the body
/// as bytes, curl's exit code and its stderr.
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
    pub curl_code: i32,
    pub stderr: String,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    /// The value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// A refusal: `status`, problem+json, and the problem's reason label; the problem.
    pub fn refused(&self, status: u16, reason: &str) -> serde_json::Value {
        assert_eq!(self.status, status, "{}\n{}", self.headers, self.text());
        assert!(
            self.headers
                .to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{}",
            self.headers
        );
        let v = self.json();
        assert_eq!(v["reason"], reason, "{v}");
        v
    }
}

/// `curl ARGS URL` trusting only `root`, under a 60 s limit, keeping headers and body in
/// fresh files under `dir`.
pub fn curl_in<S: AsRef<std::ffi::OsStr>>(
    dir: &Path,
    root: impl AsRef<Path>,
    url: &str,
    args: &[S],
) -> Answer {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let body = dir.join(format!("answer-{n}.body"));
    let headers = dir.join(format!("answer-{n}.headers"));
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "60", "--cacert", s(root.as_ref())])
        .args(["-D", s(&headers), "-o", s(&body), "-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Answer {
        status: String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read(&body).unwrap_or_default(),
        curl_code: o.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `cert issue` flags of a server certificate for `localhost` and 127.0.0.1.
pub const LOCALHOST_SERVER: &[&str] = &[
    "--server",
    "--san",
    "dns:localhost",
    "--san",
    "ip:127.0.0.1",
];

/// `mutual cert revoke --dir DIR --cert CERT --reason REASON`, which must succeed.
pub fn revoke_in(dir: &str, cert: &Path, reason: &str) {
    let args = ["cert", "revoke", "--dir", dir, "--cert", s(cert)];
    mutual(&[&args[..], &["--reason", reason][..]].concat()).ok();
}

/// `mutual renew --ca-url URL --cert CERT --key KEY EXTRA...`: one renewal over the native API.
pub fn renew_at(url: &str, cert: &Path, key: &Path, extra: &[&str]) -> Out {
    let mut a = vec!["renew", "--ca-url", url, "--cert", s(cert), "--key", s(key)];
    a.extend_from_slice(extra);
    mutual(&a)
}

/// `openssl verify` of `cert` against the root and the (first) intermediate of the CA in `dir`,
/// with a purpose (`sslclient`, `sslserver`).
pub fn openssl_verify_in(dir: &Path, cert: &Path, purpose: &str) -> Out {
    openssl(&[
        "verify",
        "-CAfile",
        s(&dir.join("root.pem")),
        "-untrusted",
        s(&dir.join("intermediate.pem")),
        "-purpose",
        purpose,
        s(cert),
    ])
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A CA in a fresh temp dir, initialised with `extra` init flags.
pub struct TestCa {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub out: PathBuf,
}

impl TestCa {
    pub fn new(extra: &[&str]) -> TestCa {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let mut args = vec!["ca", "init", "--dir", s(&dir), "--name", "Test CA"];
        args.extend_from_slice(extra);
        mutual(&args).ok();
        TestCa { tmp, dir, out }
    }

    pub fn d(&self) -> &str {
        s(&self.dir)
    }

    pub fn o(&self) -> &str {
        s(&self.out)
    }

    pub fn root(&self) -> String {
        self.dir.join("root.pem").to_string_lossy().into_owned()
    }

    pub fn intermediate(&self) -> String {
        self.dir
            .join("intermediate.pem")
            .to_string_lossy()
            .into_owned()
    }

    /// `cert issue NAME --dir D --out O ARGS...`
    pub fn issue(&self, name: &str, args: &[&str]) -> Out {
        let mut a = vec!["cert", "issue", name, "--dir", self.d(), "--out", self.o()];
        a.extend_from_slice(args);
        mutual(&a)
    }

    /// A one-time enrollment token for `dns:NAME` (`token create`).
    pub fn token(&self, name: &str) -> String {
        let san = format!("dns:{name}");
        let o = mutual(&[
            "token",
            "create",
            "--dir",
            self.d(),
            "--san",
            &san,
            "--json",
        ])
        .ok();
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    /// The inventory as JSON objects.
    pub fn inventory(&self) -> Vec<serde_json::Value> {
        let o = mutual(&["cert", "list", "--dir", self.d(), "--json"]).ok();
        serde_json::from_str::<Vec<serde_json::Value>>(&o.stdout).unwrap()
    }

    /// The serial of the certificate issued as `name` (from the inventory).
    pub fn serial(&self, name: &str) -> String {
        self.inventory()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no certificate {name} in the inventory"))["serial"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// `openssl verify` of `cert` against root + intermediate, with a purpose.
    pub fn openssl_verify(&self, cert: &Path, purpose: &str) -> Out {
        openssl_verify_in(&self.dir, cert, purpose)
    }

    /// Bytes of every file in the CA dir (to prove a refused command changed nothing).
    pub fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .filter(|(n, _)| !n.starts_with("inventory.db"))
            .collect();
        v.sort();
        v
    }
}

/// `mutual ca serve --dir DIR --listen 127.0.0.1:PORT EXTRA...` on a fixed ephemeral port, its
/// stderr appended to `log`; `stop` and `start` again simulate an outage on the same address.
pub struct CaServe {
    pub dir: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    pub extra: Vec<String>,
    /// The CA password in the server's environment (`None`: no password source at all, for a
    /// CA whose keys are all in tokens).
    pub password: Option<String>,
    child: Option<ChildGuard>,
    /// The temp dir holding `dir` and `log` when `with_new_ca` made them.
    tmp: Option<tempfile::TempDir>,
}

impl CaServe {
    /// `ca init --name NAME INIT_EXTRA...` in a fresh temp dir, then `start_new` on it.
    pub fn with_new_ca(name: &str, init_extra: &[&str], serve_extra: &[&str]) -> CaServe {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        let mut a = vec!["ca", "init", "--dir", s(&dir), "--name", name];
        a.extend_from_slice(init_extra);
        mutual(&a).ok();
        let mut c = CaServe::start_new(&dir, tmp.path().join("ca-serve.log"), serve_extra);
        c.tmp = Some(tmp);
        c
    }

    /// The CA directory.
    pub fn d(&self) -> &Path {
        &self.dir
    }

    /// Starts serving the CA in `dir` (password `PW`, `RUST_LOG=info`) and waits until it listens.
    pub fn start_new(dir: &Path, log: PathBuf, extra: &[&str]) -> CaServe {
        CaServe::start_with_password(dir, log, extra, Some(PW))
    }

    /// `start_new` with `password` (or none at all) in the server's environment.
    pub fn start_with_password(
        dir: &Path,
        log: PathBuf,
        extra: &[&str],
        password: Option<&str>,
    ) -> CaServe {
        let mut c = CaServe {
            dir: dir.to_path_buf(),
            port: free_port(),
            log,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            password: password.map(str::to_string),
            child: None,
            tmp: None,
        };
        c.start();
        c
    }

    /// Spawns the server and waits until it accepts TCP connections (fails fast if it exits).
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let listen = format!("127.0.0.1:{}", self.port);
        let mut c = mutual_cmd(
            self.password.as_deref(),
            &["ca", "serve", "--dir", s(&self.dir)],
        );
        c.args(["--listen", &listen])
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut g = ChildGuard(c.spawn().unwrap());
        let addr = self.addr();
        let up = eventually(Duration::from_secs(60), || {
            if let Ok(Some(st)) = g.0.try_wait() {
                panic!("ca serve exited with {st}:\n{}", self.log_text());
            }
            std::net::TcpStream::connect(addr).ok().map(|_| ())
        });
        assert!(
            up.is_some(),
            "ca serve did not listen:\n{}",
            self.log_text()
        );
        self.child = Some(g);
    }

    /// Kills the server (SIGKILL through the guard).
    pub fn stop(&mut self) {
        self.child = None;
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut g = self.child.take().unwrap();
        let pid = g.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        g.0.wait().unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// curl GET `path` on this server (its root as the only trust anchor, no client
    /// certificate): the HTTP status and the body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let o = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert", s(&self.root())])
            .args(["-w", "\n%{http_code}"])
            .arg(format!("{}{path}", self.url()))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// `https://127.0.0.1:PORT`, the `--ca-url` clients use.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("root.pem")
    }

    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.root())
    }

    /// `openssl verify` of `cert` against this CA's root + intermediate, with a purpose.
    pub fn openssl_verify(&self, cert: &Path, purpose: &str) -> Out {
        openssl_verify_in(&self.dir, cert, purpose)
    }

    /// The inventory as JSON objects.
    pub fn inventory(&self) -> Vec<serde_json::Value> {
        let o = mutual(&["cert", "list", "--dir", s(&self.dir), "--json"]).ok();
        serde_json::from_str(&o.stdout).unwrap()
    }

    /// `mutual enroll` against this server with `token`, pinning its root, writing into `out`.
    pub fn enroll(&self, token: &str, out: &Path) -> Out {
        self.enroll_pinned(token, &self.fingerprint(), out)
    }

    /// `mutual enroll` against this server with `token`, pinning the root to `pin`.
    pub fn enroll_pinned(&self, token: &str, pin: &str, out: &Path) -> Out {
        let url = self.url();
        mutual(&[
            "enroll",
            "--ca-url",
            &url,
            "--token",
            token,
            "--root-sha256",
            pin,
            "--out",
            s(out),
        ])
    }

    /// `mutual token create` for `sans`, certificates living `ttl_cert`, for `usage`; the JWT.
    pub fn token(&self, sans: &[&str], ttl_cert: &str, usage: &str) -> String {
        let mut a = vec!["token", "create", "--dir", s(&self.dir)];
        a.extend(["--ttl-cert", ttl_cert, "--usage", usage]);
        for san in sans {
            a.extend(["--san", san]);
        }
        let t = mutual(&a).ok().stdout.trim().to_string();
        assert_eq!(t.split('.').count(), 3, "not a JWT: {t}");
        t
    }
}

/// Makes the SQLite inventory row of `serial` look like one recorded before migration 0010:
/// no certificate bytes, no key type (python3's sqlite3, as an operator's old database).
pub fn forget_certificate(ca_dir: &Path, serial: &str) {
    let sql = "UPDATE certificates SET der=NULL, key_type=NULL WHERE serial=?";
    update_inventory_row(ca_dir, sql, &[serial]);
}

/// Runs one SQL `UPDATE` (`?` placeholders bound to `args`) on the SQLite inventory of the CA
/// in `ca_dir` with Python's sqlite3, asserting it changed exactly one row: how a test makes a
/// row as an older version wrote it.
pub fn update_inventory_row(ca_dir: &Path, sql: &str, args: &[&str]) {
    let db = ca_dir.join("inventory.db");
    let o = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys\n\
             c=sqlite3.connect(sys.argv[1], timeout=30)\n\
             n=c.execute(sys.argv[2], sys.argv[3:]).rowcount\n\
             c.commit()\n\
             assert n==1, n",
            s(&db),
            sql,
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
