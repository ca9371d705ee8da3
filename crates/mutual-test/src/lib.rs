//! Test support: throwaway PKIs built with rcgen (so tests of one crate do not depend on the
//! CA code they may be testing), free ports, and waiting for a process to listen.
//!
//! Everything here is for tests only (`publish = false`); panics are the error handling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use time::OffsetDateTime;

/// What a leaf is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Server,
    Client,
    Both,
    /// No EKU extension at all.
    None,
}

/// Options for a leaf certificate.
#[derive(Clone, Debug)]
pub struct LeafOpts {
    pub cn: String,
    /// `dns:x`, `ip:1.2.3.4`, `uri:spiffe://...`
    pub sans: Vec<String>,
    pub purpose: Purpose,
    /// Validity relative to now, in seconds (negative = in the past).
    pub not_before_secs: i64,
    pub not_after_secs: i64,
    pub ou: Option<String>,
    /// Use RSA 2048 instead of ECDSA P-256.
    pub rsa: bool,
}

impl LeafOpts {
    pub fn new(cn: &str) -> Self {
        LeafOpts {
            cn: cn.to_string(),
            sans: Vec::new(),
            purpose: Purpose::Client,
            not_before_secs: -3600,
            not_after_secs: 24 * 3600,
            ou: None,
            rsa: false,
        }
    }
    pub fn san(mut self, s: &str) -> Self {
        self.sans.push(s.to_string());
        self
    }
    pub fn purpose(mut self, p: Purpose) -> Self {
        self.purpose = p;
        self
    }
    pub fn server(self) -> Self {
        self.purpose(Purpose::Server)
    }
    /// The server leaf most tests present: CN `localhost`, SANs `dns:localhost` and
    /// `ip:127.0.0.1`, serverAuth only.
    pub fn localhost_server() -> Self {
        LeafOpts::new("localhost")
            .san("dns:localhost")
            .san("ip:127.0.0.1")
            .server()
    }
    pub fn expired(mut self) -> Self {
        self.not_before_secs = -48 * 3600;
        self.not_after_secs = -24 * 3600;
        self
    }
    pub fn not_yet_valid(mut self) -> Self {
        self.not_before_secs = 24 * 3600;
        self.not_after_secs = 48 * 3600;
        self
    }
    pub fn valid_for(mut self, secs: i64) -> Self {
        self.not_after_secs = secs;
        self
    }
    pub fn ou(mut self, ou: &str) -> Self {
        self.ou = Some(ou.to_string());
        self
    }
    pub fn rsa(mut self) -> Self {
        self.rsa = true;
        self
    }
}

/// A leaf written to disk: `<name>.pem` (leaf + intermediate) and `<name>.key`.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Leaf alone, PEM.
    pub leaf_pem: String,
    pub der: Vec<u8>,
    /// Serial as lowercase hex without colons.
    pub serial_hex: String,
}

/// A throwaway root + intermediate, with files in a temp dir.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub name: String,
    root_params: CertificateParams,
    root_key: KeyPair,
    int_params: CertificateParams,
    int_key: KeyPair,
    pub root_pem: String,
    pub int_pem: String,
    /// `root.pem` path (the trust bundle to give a verifier).
    pub root: PathBuf,
    /// `intermediate.pem` path.
    pub intermediate: PathBuf,
    revoked: std::sync::Mutex<Vec<Vec<u8>>>,
}

fn dn(cn: &str) -> rcgen::DistinguishedName {
    let mut d = rcgen::DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    d
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn random_serial() -> Vec<u8> {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7f;
    b[0] |= 0x01;
    b.to_vec()
}

impl TestPki {
    /// A new root "`name` Root" and intermediate "`name` Intermediate" (ECDSA P-256).
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut rp = CertificateParams::default();
        rp.distinguished_name = dn(&format!("{name} Root"));
        rp.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        rp.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        rp.not_before = now() - time::Duration::days(1);
        rp.not_after = now() + time::Duration::days(3650);
        rp.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        let root = rp.self_signed(&root_key).unwrap();

        let int_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ip = CertificateParams::default();
        ip.distinguished_name = dn(&format!("{name} Intermediate"));
        ip.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ip.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ip.not_before = now() - time::Duration::days(1);
        ip.not_after = now() + time::Duration::days(1825);
        ip.use_authority_key_identifier_extension = true;
        ip.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        let root_issuer = Issuer::from_params(&rp, &root_key);
        let int = ip.signed_by(&int_key, &root_issuer).unwrap();

        let root_path = dir.path().join("root.pem");
        let int_path = dir.path().join("intermediate.pem");
        std::fs::write(&root_path, root.pem()).unwrap();
        std::fs::write(&int_path, int.pem()).unwrap();
        // Key ids must be stable between issuances: pin them.
        rp.key_identifier_method = KeyIdMethod::PreSpecified(rp.key_identifier(&root_key));
        ip.key_identifier_method = KeyIdMethod::PreSpecified(ip.key_identifier(&int_key));
        TestPki {
            dir,
            name: name.to_string(),
            root_pem: root.pem(),
            int_pem: int.pem(),
            root_params: rp,
            root_key,
            int_params: ip,
            int_key,
            root: root_path,
            intermediate: int_path,
            revoked: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Issues a leaf signed by the intermediate and writes `<file_stem>.pem` (leaf + intermediate)
    /// and `<file_stem>.key` into the PKI's dir.
    pub fn leaf(&self, file_stem: &str, opts: LeafOpts) -> Leaf {
        let key = if opts.rsa {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap()
        } else {
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
        };
        let mut p = CertificateParams::default();
        let mut d = dn(&opts.cn);
        if let Some(ou) = &opts.ou {
            d.push(DnType::OrganizationalUnitName, ou.as_str());
        }
        p.distinguished_name = d;
        p.subject_alt_names = opts.sans.iter().map(|s| parse_san(s)).collect();
        p.not_before = now() + time::Duration::seconds(opts.not_before_secs);
        p.not_after = now() + time::Duration::seconds(opts.not_after_secs);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = match opts.purpose {
            Purpose::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Purpose::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Purpose::Both => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Purpose::None => vec![],
        };
        p.use_authority_key_identifier_extension = true;
        let serial = random_serial();
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        let issuer = Issuer::from_params(&self.int_params, &self.int_key);
        let cert = p.signed_by(&key, &issuer).unwrap();
        let cert_path = self.path(&format!("{file_stem}.pem"));
        let key_path = self.path(&format!("{file_stem}.key"));
        std::fs::write(&cert_path, format!("{}{}", cert.pem(), self.int_pem)).unwrap();
        write_secret(&key_path, key.serialize_pem().as_bytes());
        Leaf {
            cert: cert_path,
            key: key_path,
            leaf_pem: cert.pem(),
            der: cert.der().to_vec(),
            serial_hex: hex_lower(&serial),
        }
    }

    /// Marks a leaf revoked; the next `crl()` lists it.
    pub fn revoke(&self, leaf: &Leaf) {
        let serial = hex_decode(&leaf.serial_hex);
        self.revoked.lock().unwrap().push(serial);
    }

    /// Writes a CRL (PEM) signed by the intermediate, listing every revoked leaf, to `file` in
    /// the PKI dir, and returns its path.
    pub fn crl(&self, file: &str) -> PathBuf {
        let revoked = self
            .revoked
            .lock()
            .unwrap()
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from_slice(s),
                revocation_time: now() - time::Duration::minutes(5),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now() - time::Duration::minutes(10),
            next_update: now() + time::Duration::days(1),
            crl_number: SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: self.int_params.key_identifier_method.clone(),
        };
        let issuer = Issuer::from_params(&self.int_params, &self.int_key);
        let crl = params.signed_by(&issuer).unwrap();
        let path = self.path(file);
        std::fs::write(&path, crl.pem().unwrap()).unwrap();
        path
    }

    /// Writes a CRL (PEM) signed by the root to `file` in the PKI dir and returns its path:
    /// empty, or listing the intermediate when `revoke_intermediate`.
    pub fn root_crl(&self, file: &str, revoke_intermediate: bool) -> PathBuf {
        let revoked = revoke_intermediate
            .then(|| RevokedCertParams {
                serial_number: self.int_params.serial_number.clone().unwrap(),
                revocation_time: now() - time::Duration::minutes(5),
                reason_code: Some(RevocationReason::CaCompromise),
                invalidity_date: None,
            })
            .into_iter()
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now() - time::Duration::minutes(10),
            next_update: now() + time::Duration::days(1),
            crl_number: SerialNumber::from_slice(&[u8::from(revoke_intermediate) + 1]),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: self.root_params.key_identifier_method.clone(),
        };
        let crl = params.signed_by(&self.root_issuer()).unwrap();
        let path = self.path(file);
        // Written beside and renamed into place, so a watcher never reads half a file.
        let tmp = self.path(&format!(".{file}.tmp"));
        std::fs::write(&tmp, crl.pem().unwrap()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// Root and intermediate keys, for tests that need to sign odd things.
    pub fn root_issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.root_params, &self.root_key)
    }
}

/// Parses `dns:x`, `ip:a.b.c.d`, `uri:...` (tests only).
pub fn parse_san(s: &str) -> SanType {
    let (kind, v) = s.split_once(':').expect("san needs kind:value");
    match kind {
        "dns" => SanType::DnsName(v.try_into().unwrap()),
        "ip" => SanType::IpAddress(v.parse().unwrap()),
        "uri" => SanType::URI(v.try_into().unwrap()),
        other => panic!("unknown san kind {other}"),
    }
}

/// Writes a file with mode 0600.
pub fn write_secret(path: &Path, data: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(data).unwrap();
}

pub fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A port on 127.0.0.1 that was free a moment ago, for a child process to listen on.
///
/// Chosen at random *below* the kernel's ephemeral range (`ip_local_port_range`), not with
/// `bind(0)`: between this check and the child's own bind, any outgoing connection on the machine
/// (the tests make thousands) may take an ephemeral port as its source port, and the child's bind
/// would then fail with "address in use". Below the range only another explicit bind can take
/// it, and the random pick makes two such binds on one port unlikely.
///
/// A port is handed out at most once per test process: the tests of one binary run in parallel,
/// and two of them drawing the same still-unbound port would race for it (seen under load as
/// "address already in use" from a child's --metrics listener).
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let lo = ephemeral_range_start();
    if lo > FIXED_PORTS_FLOOR + 1000 {
        for _ in 0..500 {
            let p = rand::random_range(FIXED_PORTS_FLOOR..lo);
            if !handed.contains(&p) && TcpListener::bind(("127.0.0.1", p)).is_ok() {
                handed.insert(p);
                return p;
            }
        }
    }
    loop {
        let p = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if handed.insert(p) {
            return p;
        }
    }
}

/// Ports below this are left to services a developer may run (databases, dev servers).
const FIXED_PORTS_FLOOR: u16 = 12000;

/// The first port of the kernel's ephemeral range (Linux default 32768).
fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// Waits until something accepts TCP connections on `addr`, up to `timeout`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// A child process killed when dropped (so a failing test leaves nothing running).
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `openssl s_server` on an ephemeral 127.0.0.1 port presenting `server` (chain completed with
/// `pki`'s intermediate) and trusting `pki`'s root for client certificates; `extra` picks the
/// client-auth mode (`-verify 1`, `-Verify 1`, `-verify_return_error`, ...). Its stdin stays
/// open: s_server drops the connection on stdin EOF. Returns once it listens.
pub fn openssl_s_server(pki: &TestPki, server: &Leaf, extra: &[&str]) -> (ChildGuard, u16) {
    openssl_s_server_files(
        [&server.cert, &server.key, &pki.intermediate, &pki.root],
        extra,
    )
}

/// `openssl_s_server` from files: `[cert, key, cert_chain, CAfile]`.
pub fn openssl_s_server_files(files: [&Path; 4], extra: &[&str]) -> (ChildGuard, u16) {
    let [cert, key, chain, ca] = files;
    let mut args = Vec::new();
    for (flag, file) in [
        ("-cert", cert),
        ("-key", key),
        ("-cert_chain", chain),
        ("-CAfile", ca),
    ] {
        args.push(std::ffi::OsString::from(flag));
        args.push(file.as_os_str().to_owned());
    }
    args.extend(extra.iter().map(std::ffi::OsString::from));
    openssl_s_server_args(&args)
}

/// `openssl s_server -quiet ARGS` on an ephemeral 127.0.0.1 port, once it accepts connections.
pub fn openssl_s_server_args<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (ChildGuard, u16) {
    for _ in 0..3 {
        let port = free_port();
        let child = std::process::Command::new("openssl")
            .args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
            .arg("-quiet")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let guard = ChildGuard(child);
        if wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(60),
        ) {
            return (guard, port);
        }
    }
    panic!("openssl s_server did not start");
}

/// A TCP server on an ephemeral 127.0.0.1 port that runs `handle` on every accepted
/// connection, each in its own thread, for the rest of the test process. Returns its address.
pub fn tcp_server(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let handle = std::sync::Arc::new(handle);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let handle = std::sync::Arc::clone(&handle);
            std::thread::spawn(move || handle(s));
        }
    });
    addr
}

/// Reads from `s` until the end of an HTTP request head (`\r\n\r\n`); false if the peer
/// closed or failed first.
pub fn read_request_head(s: &mut impl std::io::Read) -> bool {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// What a finished command printed: stdout then stderr, as text.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Spawns a long-running `cmd` (a server, a daemon) with `RUST_LOG=info`, stdin and stdout
/// closed and stderr written to `log`, guarded.
pub fn spawn_logged(cmd: &mut std::process::Command, log: &Path) -> ChildGuard {
    use std::process::Stdio;
    let child = cmd
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    ChildGuard(child)
}

/// Runs `cmd` to its end (stdin closed) and asserts it succeeded, with what it printed in the
/// failure message; returns its output.
pub fn output_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    // Program and arguments only: the environment may hold a password.
    let what: Vec<_> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .collect();
    assert!(
        out.status.success(),
        "{what:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` with `input` written to its stdin (then closed) and returns what it printed.
pub fn output_with_stdin(cmd: &mut std::process::Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(mut stdin) = child.stdin.take() {
        // A peer that exits before reading everything is judged by its output, not by EPIPE.
        let _ = stdin.write_all(input);
    }
    child.wait_with_output().unwrap()
}

/// Spawns `cmd` with stdin, stdout and stderr closed (`/dev/null`), guarded.
pub fn spawn_quiet(cmd: &mut std::process::Command) -> ChildGuard {
    use std::process::Stdio;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ChildGuard(child)
}

/// `spawn_quiet`, then waits (up to a minute) until the server listens on 127.0.0.1:`port`.
pub fn spawn_listening(cmd: &mut std::process::Command, port: u16) -> ChildGuard {
    let guard = spawn_quiet(cmd);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        wait_for_port(addr, Duration::from_secs(60)),
        "{:?} did not listen on {addr}",
        cmd.get_program()
    );
    guard
}

/// nginx in the foreground (one process, files in a fresh temp dir) serving HTTPS on an
/// ephemeral 127.0.0.1 port: `ssl` is the `server` block's TLS directives (certificate, key,
/// `ssl_verify_client`, `ssl_crl`, ...), every request is answered `200 ok`. Returns once it
/// listens, with its port and the temp dir (`error.log` is there).
pub fn nginx_tls(ssl: &str) -> (ChildGuard, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{}}\nhttp {{\n access_log off;\n client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n server {{\n  listen 127.0.0.1:{port} ssl;\n{ssl}\n\
         location / {{ return 200 \"ok\\n\"; }}\n }}\n}}\n",
        d = dir.path().display(),
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let guard = spawn_quiet(
        std::process::Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path),
    );
    assert!(
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(60)
        ),
        "nginx did not start: {}",
        std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
    );
    (guard, port, dir)
}

/// For a test that needs `program` as its peer: true (and a `SKIPPED` line naming it) when it
/// is not on PATH, so the test returns early. `.ci/run` installs every peer, so CI skips nothing.
pub fn skip_without(program: &str) -> bool {
    let missing = !have(program);
    if missing {
        eprintln!("SKIPPED: {program} not installed");
    }
    missing
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Polls `f` every 25 ms until it returns `Some`, up to `timeout`.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A TCP relay in front of `target` (e.g. PostgreSQL on 127.0.0.1:5432) that can be cut (every
/// open connection shut, new ones closed at once) and restored: an outage of a shared server
/// that a test cannot stop.
pub struct CutRelay {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl CutRelay {
    pub fn start(target: &str) -> CutRelay {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let open: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>> = Default::default();
        let (up2, open2) = (up.clone(), open.clone());
        let target = target.to_string();
        std::thread::spawn(move || {
            for c in listener.incoming() {
                let Ok(c) = c else { continue };
                if !up2.load(Ordering::SeqCst) {
                    drop(c);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let (Ok(c2), Ok(s2)) = (c.try_clone(), server.try_clone()) else {
                    continue;
                };
                if let (Ok(mut o), Ok(c3), Ok(s3)) =
                    (open2.lock(), c.try_clone(), server.try_clone())
                {
                    o.push(c3);
                    o.push(s3);
                }
                for (mut from, mut to) in [(c2, s2), (server, c)] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        CutRelay { port, up, open }
    }

    /// A relay in front of `target` and `url` rewritten to reach `target` through it (a
    /// database URL whose server the test will cut off).
    pub fn in_front_of(url: &str, target: &str) -> (CutRelay, String) {
        let relay = CutRelay::start(target);
        let url = url.replace(target, &format!("127.0.0.1:{}", relay.port));
        (relay, url)
    }

    /// The outage: open connections shut, new ones closed at once.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        if let Ok(mut o) = self.open.lock() {
            for s in o.drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// The server is reachable again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
