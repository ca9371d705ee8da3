//! `mutual_ca_store_errors_total{op,kind}` on the online CA's `/metrics`, with the real binary,
//! real curl and a real PostgreSQL reached through a TCP relay that the test cuts and restores
//! (the machine's shared server cannot be stopped): no series while the database answers; while
//! it is gone, `/v1/sign` answers 503 `store_unavailable`, `/health` 503, and the failed store
//! calls are counted under their operation with kind `unavailable`; after the relay returns the
//! same token enrolls. Without a PostgreSQL server and without `$MUTUAL_REQUIRE_POSTGRES` the
//! test prints "skipped" and passes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use mutual_store::testing::PgTestDb;
use mutual_test::{eventually, free_port, wait_for_port, ChildGuard};
use pki_common::*;

/// curl against the CA: (status, body).
fn curl(ca: &TestCa, url: &str, args: &[&str]) -> (u16, String) {
    let a = curl_in(ca.tmp.path(), ca.root(), url, args);
    (a.status, a.text())
}

fn sign(ca: &TestCa, base: &str, token: &str, name: &str) -> (u16, String) {
    let key = ca.tmp.path().join(format!("{name}.key"));
    let csr = ca.tmp.path().join(format!("{name}.csr"));
    openssl_csr(&key, &csr, "/CN=ignored", "");
    let body = serde_json::json!({"csr": std::fs::read_to_string(&csr).unwrap(), "token": token});
    let args = json_post_args(ca.tmp.path(), &body, &[]);
    let a = curl_in(ca.tmp.path(), ca.root(), &format!("{base}/v1/sign"), &args);
    (a.status, a.text())
}

/// The `mutual_ca_store_errors_total` samples: (labels, value).
fn store_errors(ca: &TestCa, base: &str) -> Vec<(String, f64)> {
    let (status, text) = curl(ca, &format!("{base}/metrics"), &[]);
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("# TYPE mutual_ca_store_errors counter"),
        "{text}"
    );
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("mutual_ca_store_errors_total")?;
            let (labels, v) = rest.rsplit_once(' ')?;
            Some((labels.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_errors_are_counted_while_the_database_is_gone() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    // The CA reaches the database only through the relay.
    let (relay, store) = mutual_test::CutRelay::in_front_of(&pg.url, "127.0.0.1:5432");
    let r = tokio::task::spawn_blocking(move || {
        let ca = TestCa::new(&["--store", &store]);
        let first = ca.token("first.internal");
        let late = ca.token("late.internal");
        let port = free_port();
        let log: PathBuf = ca.tmp.path().join("serve.log");
        let listen = format!("127.0.0.1:{port}");
        let mut c = mutual_cmd(
            Some(PW),
            &["ca", "serve", "--listen", &listen, "--dir", ca.d()],
        );
        c.args(["--rate-limit", "off", "--crl-refresh", "1s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let _server = ChildGuard(c.spawn().unwrap());
        let addr: SocketAddr = listen.parse().unwrap();
        let logs = || std::fs::read_to_string(&log).unwrap_or_default();
        assert!(wait_for_port(addr, Duration::from_secs(60)), "{}", logs());
        let base = format!("https://localhost:{port}");

        let (st, body) = sign(&ca, &base, &first, "first");
        assert_eq!(st, 201, "{body}");
        assert_eq!(store_errors(&ca, &base), [], "no failure yet");

        relay.cut();
        let (st, body) = sign(&ca, &base, &late, "late");
        assert_eq!(st, 503, "{body}\n{}", logs());
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["reason"], "store_unavailable", "{body}");
        let (st, body) = curl(&ca, &format!("{base}/health"), &[]);
        assert_eq!(st, 503, "{body}");
        let errors = store_errors(&ca, &base);
        let get = |series: &str| {
            errors
                .iter()
                .find(|(l, _)| l == series)
                .map(|(_, v)| *v)
                .unwrap_or(0.0)
        };
        // The refused enrollment's first store call (is the token spent?) and the health check.
        assert!(
            get(r#"{op="token_used",kind="unavailable"}"#) >= 1.0,
            "{errors:?}\n{}",
            logs()
        );
        assert!(
            get(r#"{op="ping",kind="unavailable"}"#) >= 1.0,
            "{errors:?}\n{}",
            logs()
        );
        assert!(
            errors
                .iter()
                .all(|(l, _)| l.ends_with(r#"kind="unavailable"}"#)),
            "{errors:?}"
        );

        relay.restore();
        // Recovers by itself: the refused token was not spent and now enrolls.
        let healthy = eventually(Duration::from_secs(60), || {
            (curl(&ca, &format!("{base}/health"), &[]).0 == 200).then_some(())
        });
        assert!(healthy.is_some(), "{}", logs());
        let (st, body) = sign(&ca, &base, &late, "late2");
        assert_eq!(st, 201, "{body}");
    })
    .await;
    pg.drop_db().await;
    if let Err(e) = r {
        std::panic::resume_unwind(e.into_panic());
    }
}
