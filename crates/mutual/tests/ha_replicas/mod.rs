//! The CA as several `ca serve` replicas on one PostgreSQL, with the real binary on both sides:
//! a token sent 50 times at once over two replicas is spent once; `serve`/`connect` with
//! 60-second certificates keep renewing through a list of replica URLs while one replica is
//! killed (SIGKILL) and restarted; and a database outage (a TCP relay between the CA and
//! PostgreSQL, cut and restored) makes the CA answer 503 `store_unavailable` while the proxies
//! keep serving, and everything recovers when the relay returns.
//!
//! Each test gets its own database on 127.0.0.1:5432 (dropped at the end); without a server and
//! without `$MUTUAL_REQUIRE_POSTGRES` the tests print "skipped" and pass.
//!
//! A module of the `enroll` test binary, like [`crate::ca_rollover`]: the failover test waits on
//! 60-second certificates, and there cargo runs it beside the other tests that do
//! (ARCHITECTURE.md, "How the integration tests are built").
use crate::pki_common::{self, fingerprint_of, norm_serial, s, Out};
use crate::proxy_common::*;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mutual_store::testing::PgTestDb;

const PW: &str = "ha replicas test password";

/// `mutual ARGS` with this file's CA password (pki_common runs the binary, hermetic env).
fn run(args: &[&str]) -> Out {
    pki_common::mutual_pw(Some(PW), args)
}

fn ok(args: &[&str]) -> Out {
    run(args).ok()
}

/// A CA initialised on PostgreSQL (`store`), with its directory copied once per replica (the
/// same contents on each "host"), and the replicas' `ca serve` processes.
struct Cluster {
    tmp: tempfile::TempDir,
    replicas: Vec<Replica>,
}

struct Replica {
    dir: PathBuf,
    port: u16,
    log: PathBuf,
    server: Option<ChildGuard>,
}

impl Replica {
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BIN)
            .args(["ca", "serve", "--dir", s(&self.dir)])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--rate-limit", "off"])
            .env("MUTUAL_CA_PASSWORD", PW)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut g = ChildGuard(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let up = eventually(Duration::from_secs(60), || {
            if let Ok(Some(st)) = g.0.try_wait() {
                panic!("ca serve exited with {st}:\n{}", self.log_text());
            }
            TcpStream::connect(addr).ok().map(|_| ())
        });
        assert!(
            up.is_some(),
            "ca serve did not listen:\n{}",
            self.log_text()
        );
        self.server = Some(g);
    }

    /// SIGKILL: no drain, no goodbye, as a crashed host.
    fn kill(&mut self) {
        if let Some(mut g) = self.server.take() {
            signal(g.0.id(), "KILL");
            let _ = g.0.wait();
        }
    }
}

impl Cluster {
    /// `ca init --store STORE`, one token minted (so the provisioner key exists before the
    /// copies), then `n` copies of the directory, each served by its own `ca serve`.
    fn new(store: &str, n: usize) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("ca");
        ok(&[
            "ca",
            "init",
            "--dir",
            s(&d),
            "--name",
            "HA Test CA",
            "--store",
            store,
        ]);
        ok(&[
            "token",
            "create",
            "--dir",
            s(&d),
            "--san",
            "dns:warmup.internal",
        ]);
        let mut replicas = Vec::new();
        for i in 0..n {
            let dir = tmp.path().join(format!("replica{i}"));
            let st = Command::new("cp")
                .args(["-a", s(&d), s(&dir)])
                .status()
                .unwrap();
            assert!(st.success());
            let mut r = Replica {
                dir,
                port: free_port(),
                log: tmp.path().join(format!("replica{i}.log")),
                server: None,
            };
            r.start();
            replicas.push(r);
        }
        Cluster { tmp, replicas }
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path().join("ca")
    }

    fn root(&self) -> PathBuf {
        self.dir().join("root.pem")
    }

    fn token(&self, sans: &[&str], ttl_cert: &str, usage: &str) -> String {
        let d = self.dir();
        let mut a = vec!["token", "create", "--dir", s(&d), "--ttl-cert", ttl_cert];
        a.extend(["--usage", usage]);
        for san in sans {
            a.extend(["--san", san]);
        }
        ok(&a).stdout.trim().to_string()
    }

    fn inventory(&self) -> Vec<serde_json::Value> {
        let o = ok(&["cert", "list", "--dir", s(&self.dir()), "--json"]);
        serde_json::from_str(&o.stdout).unwrap()
    }

    fn logs(&self) -> String {
        self.replicas
            .iter()
            .map(|r| format!("--- {}\n{}", r.url(), r.log_text()))
            .collect()
    }
}

/// A `/v1/sign` body for `token`: a fresh key's CSR asking for nothing (the token's SANs).
fn sign_body(token: &str) -> Vec<u8> {
    let kp = mutual_pki::keys::generate(mutual_pki::KeyType::EcdsaP256).unwrap();
    let csr = mutual_enroll::enroll::build_csr(&kp, &[], None).unwrap();
    serde_json::to_vec(&serde_json::json!({ "csr": csr, "token": token })).unwrap()
}

/// The same token sent 50 times at once, spread over two replicas on one PostgreSQL: exactly one
/// certificate, 49 `token_used` refusals, one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_spent_once_across_replicas() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    let url = pg.url.clone();
    let cluster = tokio::task::spawn_blocking(move || Cluster::new(&url, 2))
        .await
        .unwrap();
    let token = cluster.token(&["dns:once.internal"], "1h", "server");
    let roots = mutual_tls::load::load_certs(&cluster.root()).unwrap();
    let tls = mutual_enroll::client::pinned_config(&roots, None).unwrap();
    let body = sign_body(&token);
    let urls: Vec<mutual_enroll::CaUrl> = cluster
        .replicas
        .iter()
        .map(|r| mutual_enroll::CaUrl::parse(&r.url()).unwrap())
        .collect();
    // All 50 tasks start together.
    let start = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (url, tls, body, start) = (
            urls[i % 2].clone(),
            tls.clone(),
            body.clone(),
            Arc::clone(&start),
        );
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let resp = mutual_enroll::client::request(
                &url,
                tls,
                mutual_enroll::client::Method::POST,
                "/v1/sign",
                Some(body),
            )
            .await?;
            mutual_enroll::client::issued(resp)
        }));
    }
    let (mut issued, mut used, mut other) = (Vec::new(), 0, Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            Ok(i) => issued.push(i.serial),
            Err(mutual_enroll::EnrollError::Refused { status, reason, .. })
                if status == 401 && reason == "token_used" =>
            {
                used += 1
            }
            Err(e) => other.push(e.to_string()),
        }
    }
    assert!(
        other.is_empty(),
        "unexpected answers: {other:?}\n{}",
        cluster.logs()
    );
    assert_eq!(issued.len(), 1, "issued {issued:?}");
    assert_eq!(used, 49);

    let inv = tokio::task::spawn_blocking({
        let d = cluster.dir();
        move || {
            let o = ok(&["cert", "list", "--dir", s(&d), "--json"]);
            serde_json::from_str::<Vec<serde_json::Value>>(&o.stdout).unwrap()
        }
    })
    .await
    .unwrap();
    let from_tokens: Vec<&serde_json::Value> = inv
        .iter()
        .filter(|r| {
            r["requested_by"]
                .as_str()
                .is_some_and(|b| b.starts_with("token:"))
        })
        .collect();
    assert_eq!(from_tokens.len(), 1, "{inv:?}");
    assert_eq!(
        norm_serial(from_tokens[0]["serial"].as_str().unwrap()),
        norm_serial(&issued[0])
    );
    drop(cluster);
    pg.drop_db().await;
}

/// `serve` and `connect` enrolled from a list of two replicas, with 60-second certificates.
struct Pair {
    serve: Proxy,
    connect: Proxy,
    sdir: PathBuf,
    _work: tempfile::TempDir,
    _be: HttpBackend,
}

fn proxies(cluster: &Cluster, ttl: &str) -> Pair {
    let fp = fingerprint_of(&cluster.root());
    let work = tempfile::tempdir().unwrap();
    let be = http_backend();
    let urls: Vec<String> = cluster.replicas.iter().map(|r| r.url()).collect();
    let args = |dir: &Path, token: &str, ca_url: &[String], extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--cert",
            s(&dir.join("cert.pem")),
            "--key",
            s(&dir.join("key.pem")),
            "--ca",
            s(&dir.join("root.pem")),
            "--token",
            token,
            "--root-sha256",
            &fp,
        ]
        .map(String::from)
        .to_vec();
        for u in ca_url {
            a.extend(["--ca-url".to_string(), u.clone()]);
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let sdir = work.path().join("serve");
    let cdir = work.path().join("connect");
    let st = cluster.token(&["dns:localhost", "ip:127.0.0.1"], ttl, "both");
    // serve gets the list comma-separated, connect as a repeated flag.
    let serve = spawn_proxy(
        "serve",
        "--backend",
        &be.addr.to_string(),
        &args(&sdir, &st, &[urls.join(",")], &["--allow-spiffe", OK_ID]),
    );
    let ct = cluster.token(&[&format!("uri:{OK_ID}")], ttl, "client");
    let connect = spawn_proxy(
        "connect",
        "--remote",
        &serve.addr().to_string(),
        &args(&cdir, &ct, &urls, &[]),
    );
    Pair {
        serve,
        connect,
        sdir,
        _work: work,
        _be: be,
    }
}

/// Requests through connect -> serve -> backend, one every 50 ms, counting failures, and the
/// serials serve presents (probed every 2 s).
struct Traffic {
    flow: Flow,
    served: BTreeSet<String>,
    last_probe: Instant,
    probe_cfg: Arc<rustls::ClientConfig>,
}

impl Traffic {
    fn new(p: &Pair) -> Traffic {
        Traffic {
            flow: Flow::begin(),
            served: BTreeSet::new(),
            last_probe: Instant::now() - Duration::from_secs(10),
            probe_cfg: rustls_config(&p.sdir.join("root.pem"), None),
        }
    }

    /// Keeps the traffic going until `done` holds (checked every 500 ms), at most `limit`.
    fn until(
        &mut self,
        p: &Pair,
        limit: Duration,
        what: &str,
        mut done: impl FnMut(usize) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        let mut last_check = Instant::now();
        loop {
            self.flow.send(&p.connect, "");
            if self.last_probe.elapsed() >= Duration::from_secs(2) {
                self.last_probe = Instant::now();
                if let Ok(s) = tls_connect(p.serve.addr(), &self.probe_cfg) {
                    let der = s.conn.peer_certificates().unwrap()[0].as_ref().to_vec();
                    self.served.insert(norm_serial(
                        &mutual_enroll::CertSummary::of(&der).unwrap().serial,
                    ));
                }
            }
            if last_check.elapsed() >= Duration::from_millis(500) {
                last_check = Instant::now();
                if done(self.flow.good) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {what}\nserve:\n{}\nconnect:\n{}",
                    p.serve.stderr_text(),
                    p.connect.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The "certificate renewed" log lines of a proxy.
fn renewed_lines(p: &Proxy) -> Vec<String> {
    p.stderr_text()
        .lines()
        .filter(|l| l.contains("certificate renewed"))
        .map(str::to_string)
        .collect()
}

/// The value of `key=value` in a human log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split_whitespace().next()
}

/// The failover check: two replicas behind one list of URLs; `serve` and `connect` with
/// 60-second certificates renew while the first replica is killed (SIGKILL), and renew again
/// from it after it was restarted and the other one killed. Zero failed requests through the
/// proxies, no duplicate serial, every certificate they used has its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_renew_through_a_replica_killed_and_restarted() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    let url = pg.url.clone();
    tokio::task::spawn_blocking(move || {
        let mut cluster = Cluster::new(&url, 2);
        let p = proxies(&cluster, "60s");
        let (a, b) = (cluster.replicas[0].url(), cluster.replicas[1].url());
        let mut t = Traffic::new(&p);
        // Both enrolled from the first replica; kill it.
        cluster.replicas[0].kill();
        t.until(&p, Duration::from_secs(75), "the first renewals", |_| {
            !renewed_lines(&p.serve).is_empty() && !renewed_lines(&p.connect).is_empty()
        });
        for px in [&p.serve, &p.connect] {
            let l = &renewed_lines(px)[0];
            assert_eq!(field(l, "ca_url"), Some(b.as_str()), "{l}");
            let log = px.stderr_text();
            assert!(
                log.contains("trying the next") && log.contains(&a),
                "no failover logged:\n{log}"
            );
        }
        // The first replica comes back; the second dies.
        cluster.replicas[0].start();
        cluster.replicas[1].kill();
        t.until(&p, Duration::from_secs(75), "the second renewals", |_| {
            renewed_lines(&p.serve).len() >= 2 && renewed_lines(&p.connect).len() >= 2
        });
        for px in [&p.serve, &p.connect] {
            let l = &renewed_lines(px)[1];
            assert_eq!(field(l, "ca_url"), Some(a.as_str()), "{l}");
        }
        t.flow.assert_none_failed(&p.serve, &p.connect);
        eprintln!(
            "{} requests through connect -> serve -> backend, none failed",
            t.flow.good
        );

        // Rows: every serial unique, every certificate the proxies held is in the store.
        let inv = cluster.inventory();
        let serials: Vec<String> = inv
            .iter()
            .map(|r| norm_serial(r["serial"].as_str().unwrap()))
            .collect();
        let unique: BTreeSet<&String> = serials.iter().collect();
        assert_eq!(unique.len(), serials.len(), "duplicate serial: {serials:?}");
        let mut used: BTreeSet<String> = t.served.clone();
        used.extend(
            p.serve
                .audit_lines()
                .iter()
                .filter(|l| l["result"] == "allowed")
                .filter_map(|l| l["identity"]["serial"].as_str().map(norm_serial)),
        );
        for px in [&p.serve, &p.connect] {
            for l in renewed_lines(px) {
                used.insert(norm_serial(field(&l, "serial").unwrap()));
            }
        }
        assert!(used.len() >= 6, "{used:?}");
        for s in &used {
            assert!(
                unique.contains(s),
                "{s} has no row in the store: {serials:?}"
            );
        }
        drop(p);
        drop(cluster);
    })
    .await
    .unwrap();
    pg.drop_db().await;
}

/// Runs `mutual renew` once against `url`.
fn renew_once(url: &str, dir: &Path) -> Out {
    run(&[
        "renew",
        "--ca-url",
        url,
        "--cert",
        s(&dir.join("cert.pem")),
        "--key",
        s(&dir.join("key.pem")),
    ])
}

/// The outage check: the database goes away during traffic (the relay is cut): the CA
/// answers 503 `store_unavailable` to enrollment and renewal and issues nothing, the proxies keep
/// serving with their current certificates, and everything works again once it returns (the
/// token refused during the outage was not spent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_503_and_recovers() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    // The CA reaches the database only through the relay.
    let (relay, store) = mutual_test::CutRelay::in_front_of(&pg.url, "127.0.0.1:5432");
    tokio::task::spawn_blocking(move || {
        let cluster = Cluster::new(&store, 1);
        let ca = cluster.replicas[0].url();
        let fp = fingerprint_of(&cluster.root());
        let p = proxies(&cluster, "1h");
        let mut t = Traffic::new(&p);
        t.until(&p, Duration::from_secs(20), "traffic", |g| g >= 10);
        let rows_before = cluster.inventory().len();

        relay.cut();
        // Enrollment: 503 store_unavailable (exit 1 with the label), the token not spent.
        let token = cluster.token(&["dns:late.internal"], "1h", "server");
        let out = cluster.tmp.path().join("late");
        let enroll = |out: &Path| {
            run(&[
                "enroll",
                "--ca-url",
                &ca,
                "--token",
                &token,
                "--root-sha256",
                &fp,
                "--out",
                s(out),
            ])
        };
        let mut refused = None;
        t.until(&p, Duration::from_secs(30), "a 503 for enrollment", |_| {
            let o = enroll(&out);
            assert_ne!(
                o.code, 0,
                "enrolled while the database is gone: {}",
                o.stdout
            );
            let seen = o.stderr.contains("store_unavailable") && o.stderr.contains("HTTP 503");
            if seen {
                refused = Some(o.stderr);
            }
            seen
        });
        eprintln!("enroll during the outage: {}", refused.unwrap().trim());
        // Renewal (mTLS, serve's certificate): 503 too, the old files untouched.
        let sdir = p.sdir.clone();
        let before = std::fs::read(sdir.join("cert.pem")).unwrap();
        let r = renew_once(&ca, &sdir);
        assert_eq!(r.code, 1, "{} {}", r.stdout, r.stderr);
        assert!(
            r.stderr.contains("store_unavailable") && r.stderr.contains("HTTP 503"),
            "{}",
            r.stderr
        );
        assert_eq!(std::fs::read(sdir.join("cert.pem")).unwrap(), before);
        // The proxies keep serving meanwhile.
        let good = t.flow.good;
        t.until(
            &p,
            Duration::from_secs(10),
            "traffic during the outage",
            |g| g >= good + 20,
        );

        relay.restore();
        // Everything recovers by itself: the same token now enrolls, renewal works.
        t.until(&p, Duration::from_secs(30), "recovery", |_| {
            enroll(&out).code == 0
        });
        let r = renew_once(&ca, &sdir);
        assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
        t.flow.assert_none_failed(&p.serve, &p.connect);
        // Nothing was issued without its row: exactly the two issued after the outage were added.
        let inv = cluster.inventory();
        assert_eq!(inv.len(), rows_before + 2, "{inv:?}");
        let late = mutual_tls::load::load_certs(&out.join("cert.pem")).unwrap();
        let serial = norm_serial(
            &mutual_enroll::CertSummary::of(late[0].as_ref())
                .unwrap()
                .serial,
        );
        assert!(inv
            .iter()
            .any(|r| norm_serial(r["serial"].as_str().unwrap()) == serial));
        drop(p);
        drop(cluster);
    })
    .await
    .unwrap();
    pg.drop_db().await;
}
