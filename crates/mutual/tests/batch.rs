//! `mutual cert issue --batch` through the real binary: a directory of 1,000 CSRs made by
//! `openssl req` issued in chunks and checked by `openssl verify` and the inventory; a CSV
//! whose bad rows are refused one by one with their line and exact reason while the others are
//! issued (on SQLite and on PostgreSQL); and a run killed with SIGKILL part-way that a re-run
//! finishes with exactly one certificate per row.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mutual_store::testing::PgTestDb;
use mutual_test::eventually;
use pki_common::*;

fn json(out: &Out) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.text()))
}

fn batch_args<'a>(ca: &'a TestCa, input: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "cert",
        "issue",
        "--batch",
        input,
        "--dir",
        ca.d(),
        "--out",
        ca.o(),
        "--json",
    ];
    a.extend_from_slice(extra);
    a
}

/// `openssl verify` of every `NAME.pem` in `out` in one call (each file's leaf, with the
/// intermediate it carries as untrusted); the number of files verified OK.
fn verify_all(ca: &TestCa, out: &Path) -> usize {
    let mut files: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pem"))
        .map(|p| s(&p).to_string())
        .collect();
    files.sort();
    let root = ca.root();
    let int = ca.intermediate();
    let mut args = vec!["verify", "-CAfile", &root, "-untrusted", &int];
    args.extend(files.iter().map(String::as_str));
    let o = openssl(&args);
    assert_eq!(o.code, 0, "{}", o.text());
    o.stdout.lines().filter(|l| l.ends_with(": OK")).count()
}

/// The inventory rows of a batch: (name, serial), checked to be one per name and serial.
fn batch_rows(ca: &TestCa) -> Vec<(String, String)> {
    let inv = ca.inventory();
    let rows: Vec<(String, String)> = inv
        .iter()
        .filter(|r| {
            r["requested_by"]
                .as_str()
                .unwrap_or("")
                .starts_with("batch:")
        })
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["serial"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let names: HashSet<_> = rows.iter().map(|r| &r.0).collect();
    let serials: HashSet<_> = rows.iter().map(|r| &r.1).collect();
    assert_eq!(names.len(), rows.len(), "a name issued twice");
    assert_eq!(serials.len(), rows.len(), "a serial twice");
    rows
}

/// `count` CSRs `dev-N.csr` made by `openssl req` (two shells in parallel, every other one
/// DER), each with its own P-256 key.
fn openssl_csrs(dir: &Path, count: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let script = r#"i=$1; while [ $i -le $2 ]; do
        if [ $((i % 2)) -eq 0 ]; then form=DER; else form=PEM; fi
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
          -subj "/CN=dev-$i" -outform $form -out "$3/dev-$i.csr" 2>/dev/null || exit 1
        i=$((i + 1)); done"#;
    let half = count / 2;
    let mut kids: Vec<_> = [(1, half), (half + 1, count)]
        .into_iter()
        .map(|(a, b)| {
            std::process::Command::new("sh")
                .args(["-c", script, "sh", &a.to_string(), &b.to_string(), s(dir)])
                .spawn()
                .unwrap()
        })
        .collect();
    for k in &mut kids {
        assert!(k.wait().unwrap().success(), "openssl req failed");
    }
}

#[test]
fn a_directory_of_1000_openssl_csrs_in_chunks() {
    let ca = TestCa::new(&[]);
    let csrs = ca.tmp.path().join("csrs");
    openssl_csrs(&csrs, 1000);
    let o = mutual(&batch_args(
        &ca,
        s(&csrs),
        &[
            "--chunk",
            "128",
            "--san-template",
            "dns:{name}.devices.example",
        ],
    ));
    assert_eq!(o.code, 0, "{}", o.text());
    let v = json(&o);
    assert_eq!(
        (v["issued"].as_u64(), v["failed"].as_u64()),
        (Some(1000), Some(0))
    );
    let id = v["batch_id"].as_str().unwrap().to_string();
    assert_eq!(verify_all(&ca, &ca.out), 1000);
    let rows = batch_rows(&ca);
    assert_eq!(rows.len(), 1000);
    // Every row has a CSR, so no key is made here: a --key-type would be ignored. Refused
    // before anything is issued.
    let o = mutual(&batch_args(&ca, s(&csrs), &["--key-type", "ed25519"]));
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(
        o.text()
            .contains("--key-type is the type of the keys made for rows without a CSR"),
        "{}",
        o.text()
    );
    assert_eq!(batch_rows(&ca).len(), 1000);
    assert_eq!(ca.inventory().len(), 1000);
    let inv = ca.inventory();
    let dev7 = inv.iter().find(|r| r["name"] == "dev-7").unwrap();
    assert_eq!(dev7["requested_by"], format!("batch:{id}:dev-7"));
    assert_eq!(
        dev7["sans"],
        serde_json::json!(["dns:dev-7.devices.example"])
    );
    assert_eq!(dev7["usage"], "client");
    // The certificate carries the CSR's key (dev-8's CSR is DER), no key file was written.
    let pubkey = |args: &[&str]| openssl_ok(args);
    assert_eq!(
        pubkey(&[
            "x509",
            "-in",
            s(&ca.out.join("dev-8.pem")),
            "-noout",
            "-pubkey"
        ]),
        pubkey(&[
            "req",
            "-in",
            s(&csrs.join("dev-8.csr")),
            "-inform",
            "DER",
            "-noout",
            "-pubkey"
        ])
    );
    assert!(!ca.out.join("dev-8.key").exists());
    // The done-log names every row with the serial the inventory has.
    let done = std::fs::read_to_string(ca.out.join(".mutual-batch.done")).unwrap();
    let logged: HashSet<(String, String)> = done
        .lines()
        .map(|l| {
            let (n, s) = l.split_once('\t').unwrap();
            (n.to_string(), s.to_string())
        })
        .collect();
    assert_eq!(logged, rows.into_iter().collect::<HashSet<_>>());
    // Running it again issues nothing.
    let again = mutual(&batch_args(&ca, s(&csrs), &["--chunk", "128"]));
    assert_eq!(again.code, 0, "{}", again.text());
    let v = json(&again);
    assert_eq!(
        (v["issued"].as_u64(), v["skipped"].as_u64()),
        (Some(0), Some(1000))
    );
    assert_eq!(ca.inventory().len(), 1000);
}

/// A CSV with good rows (a CSR, generated keys) and bad ones; returns the batch's JSON summary.
fn csv_with_bad_rows(ca: &TestCa) -> (serde_json::Value, PathBuf) {
    let dir = ca.tmp.path().join("line");
    std::fs::create_dir(&dir).unwrap();
    openssl_csr(
        &dir.join("good.key"),
        &dir.join("good.csr"),
        "/CN=whatever",
        "",
    );
    std::fs::write(
        dir.join("broken.csr"),
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    )
    .unwrap();
    let csv = dir.join("rows.csv");
    std::fs::write(
        &csv,
        "name,csr,san,usage,ttl\n\
         good-csr,good.csr,dns:good.example.org,server,7d\n\
         broken,broken.csr,,,\n\
         outsider,,uri:spiffe://other.org/device/x,,\n\
         gen-1,,uri:spiffe://example.org/device/gen-1,,\n\
         sideways,,,sideways,\n\
         gen-1,,,,\n\
         gen-2,,\"dns:gen-2.example.org;ip:10.0.0.2\",both,\n\
         twice,,\"dns:twice.example.org;dns:TWICE.example.org\",,\n\
         long,,,,100y\n",
    )
    .unwrap();
    let o = mutual(&batch_args(ca, s(&csv), &["--chunk", "2"]));
    assert_eq!(o.code, 1, "{}", o.text());
    (json(&o), csv)
}

/// When the CA's default intermediate ends, as `ca issuers --json` says (RFC 3339).
fn intermediate_ends(ca: &TestCa) -> String {
    let o = mutual(&["ca", "issuers", "--dir", ca.d(), "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    v[0]["not_after"].as_str().unwrap().to_string()
}

fn check_csv_outcome(ca: &TestCa, v: &serde_json::Value, csv: &Path) {
    assert_eq!(
        (v["issued"].as_u64(), v["failed"].as_u64()),
        (Some(3), Some(6))
    );
    let failures: Vec<(String, String, String)> = v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["source"].as_str().unwrap().to_string(),
                f["reason"].as_str().unwrap().to_string(),
                f["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let at = |line: u32| format!("{}:{line}", csv.display());
    let broken = ca.tmp.path().join("line/broken.csr");
    let mut expected = vec![
        (at(7), "usage".to_string(), "duplicate name \"gen-1\" (first at ".to_string() + &at(5) + ")"),
        (at(6), "usage".into(), "usage \"sideways\" is not client, server or both".into()),
        // Written into the certificate twice before; `cert issue --san X --san X` is refused.
        (
            at(9),
            "usage".into(),
            "dns:twice.example.org is given twice by the row's san column".into(),
        ),
        (
            at(10),
            "usage".into(),
            format!(
                "ttl 100 y: a certificate cannot outlive the intermediate that issues it (it \
                 ends {})",
                intermediate_ends(ca)
            ),
        ),
        (
            at(3),
            "malformed".into(),
            format!(
                "{}: malformed CSR: not a valid PKCS#10 certificate request (truncated, or not a CSR)",
                broken.display()
            ),
        ),
        (
            at(4),
            "name_not_allowed".into(),
            "URI SAN \"spiffe://other.org/device/x\" is outside this CA's trust domain: only \
             spiffe://example.org/... may be issued"
                .into(),
        ),
    ];
    let mut got = failures.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    let inv = ca.inventory();
    let names: HashSet<&str> = inv.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, HashSet::from(["good-csr", "gen-1", "gen-2"]));
    let gen2 = inv.iter().find(|r| r["name"] == "gen-2").unwrap();
    assert_eq!(gen2["usage"], "both");
    assert_eq!(
        gen2["sans"],
        serde_json::json!(["dns:gen-2.example.org", "ip:10.0.0.2"])
    );
    let good = inv.iter().find(|r| r["name"] == "good-csr").unwrap();
    let life = good["not_after_unix"].as_i64().unwrap() - good["created_at_unix"].as_i64().unwrap();
    assert!(
        (7 * 86_400 - 60..=7 * 86_400 + 60).contains(&life),
        "{good}"
    );
    // A generated key: 0600, and the certificate's.
    use std::os::unix::fs::PermissionsExt;
    let key = ca.out.join("gen-1.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        openssl_ok(&[
            "x509",
            "-in",
            s(&ca.out.join("gen-1.pem")),
            "-noout",
            "-pubkey"
        ]),
        openssl_ok(&["pkey", "-in", s(&key), "-pubout"])
    );
    assert_eq!(verify_all(ca, &ca.out), 3);
}

/// `cert issue --batch INPUT` with text output.
fn text_batch(ca: &TestCa, input: &str) -> Out {
    let mut a = batch_args(ca, input, &[]);
    a.retain(|x| *x != "--json");
    mutual(&a)
}

#[test]
fn a_csv_with_bad_rows_issues_the_others() {
    let ca = TestCa::new(&["--trust-domain", "example.org"]);
    let (v, csv) = csv_with_bad_rows(&ca);
    check_csv_outcome(&ca, &v, &csv);
    // A bad file as a whole is a usage error (exit 2) that issues nothing.
    let bad = ca.tmp.path().join("bad.csv");
    std::fs::write(&bad, "name,profile\nx,y\n").unwrap();
    text_batch(&ca, s(&bad)).fails_with(&format!(
        "error: --batch {}: unknown column \"profile\"",
        bad.display()
    ));
    // Text mode names each failed row with its line on stderr.
    let o = text_batch(&ca, s(&csv));
    assert_eq!(o.code, 1, "{}", o.text());
    let line6 = format!("error: {}:6: sideways: usage \"sideways\"", csv.display());
    assert!(o.stderr.contains(&line6), "{}", o.text());
    assert!(o.stdout.contains("issued 0, skipped 3"), "{}", o.text());
    assert_eq!(ca.inventory().len(), 3);
    // A row naming what the template already names: refused with both sources, the other
    // row issued.
    let both = ca.tmp.path().join("both.csv");
    std::fs::write(
        &both,
        "name,san\nt-1,dns:t-1.example.org\nt-2,dns:other.example.org\n",
    )
    .unwrap();
    let out2 = ca.tmp.path().join("out2");
    let mut a = batch_args(&ca, s(&both), &["--san-template", "dns:{name}.example.org"]);
    let at_out = a.iter().position(|x| *x == "--out").unwrap() + 1;
    a[at_out] = s(&out2);
    let o = mutual(&a);
    assert_eq!(o.code, 1, "{}", o.text());
    let v = json(&o);
    assert_eq!(
        (v["issued"].as_u64(), v["failed"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(v["failures"][0]["reason"], "usage");
    assert_eq!(
        v["failures"][0]["message"],
        "dns:t-1.example.org is given by --san-template \"dns:{name}.example.org\" and by the \
         row's san column"
    );
    // A --ttl no row could get stops the batch before the password (a row's own ttl fails
    // that row: csv_with_bad_rows's `long`).
    let mut a = batch_args(&ca, s(&both), &["--ttl", "3650d"]);
    a[at_out] = s(&out2);
    let o = mutual_pw(None, &a);
    assert_eq!(o.code, 2, "{}", o.text());
    let v = json(&o);
    assert_eq!(v["error"]["reason"], "usage", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("--ttl 10 y: a certificate cannot outlive the intermediate"),
        "{v}"
    );
    let t2 = ca
        .inventory()
        .into_iter()
        .find(|r| r["name"] == "t-2")
        .unwrap();
    assert_eq!(
        t2["sans"],
        serde_json::json!(["dns:t-2.example.org", "dns:other.example.org"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_with_bad_rows_on_postgres() {
    let Some(pg) = PgTestDb::create().await else {
        return;
    };
    let url = pg.url.clone();
    let res = tokio::task::spawn_blocking(move || {
        let ca = TestCa::new(&["--trust-domain", "example.org", "--store", &url]);
        let (v, csv) = csv_with_bad_rows(&ca);
        check_csv_outcome(&ca, &v, &csv);
    })
    .await;
    pg.drop_db().await;
    if let Err(e) = res {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Rows in the done-log (distinct names: a line written twice must not count as progress).
fn done_lines(out: &Path) -> usize {
    std::fs::read_to_string(out.join(".mutual-batch.done"))
        .map(|t| {
            t.lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(name, _)| name.to_string())
                .collect::<HashSet<_>>()
                .len()
        })
        .unwrap_or(0)
}

#[test]
fn a_batch_killed_part_way_is_finished_by_a_rerun() {
    const ROWS: usize = 3000;
    let ca = TestCa::new(&[]);
    let csv = ca.tmp.path().join("rows.csv");
    let mut text = String::from("name\n");
    for i in 0..ROWS {
        text.push_str(&format!("dev-{i}\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let args = batch_args(&ca, s(&csv), &["--chunk", "50"]);
    // Killed twice, each time once at least one more chunk is committed.
    let mut before = 0;
    for _ in 0..2 {
        let mut child = mutual_cmd(Some(PW), &args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let seen = eventually(Duration::from_secs(120), || {
            (done_lines(&ca.out) >= before + 50).then_some(())
        });
        assert!(seen.is_some(), "no chunk committed");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the batch ended before the kill"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        before = done_lines(&ca.out);
        assert!(before < ROWS, "the kill came after the last chunk");
    }
    let o = mutual(&args);
    assert_eq!(o.code, 0, "{}", o.text());
    let v = json(&o);
    let (issued, skipped) = (
        v["issued"].as_u64().unwrap(),
        v["skipped"].as_u64().unwrap(),
    );
    assert_eq!(issued + skipped, ROWS as u64, "{v}");
    assert!(skipped as usize >= before, "{v}");
    assert!(issued > 0, "{v}");
    let rows = batch_rows(&ca);
    assert_eq!(rows.len(), ROWS);
    assert_eq!(ca.inventory().len(), ROWS);
    // Every row has its certificate and key, nothing half-written or staged is left.
    for i in 0..ROWS {
        assert!(ca.out.join(format!("dev-{i}.pem")).exists(), "dev-{i}.pem");
        assert!(ca.out.join(format!("dev-{i}.key")).exists(), "dev-{i}.key");
    }
    let leftovers: Vec<String> = std::fs::read_dir(&ca.out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".mutual-tmp-") || n == ".mutual-batch.pending")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let log = std::fs::read_to_string(ca.out.join(".mutual-batch.done")).unwrap();
    assert_eq!(log.lines().count(), ROWS, "a row logged twice");
    assert_eq!(done_lines(&ca.out), ROWS);
    assert_eq!(verify_all(&ca, &ca.out), ROWS);
}
