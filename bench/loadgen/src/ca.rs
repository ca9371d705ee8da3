//! The CA's figures (issue 7): certificates issued per second into the SQLite inventory, in
//! process through `mutual_pki::ca::Ca::issue` with N concurrent tasks, and how long listing the
//! inventory and building the CRL take with 100,000 certificates in it.
//!
//! The 100,000 rows are synthetic and inserted with plain SQL in one transaction (issuing them
//! one by one would take minutes and measure issuance again); their shape matches what `issue`
//! records. A fraction of them is marked revoked so the CRL has entries to sign. The `cert list`
//! and `ca crl` commands of the real binary are timed too (with `--mutual`), since their output
//! formatting is part of what a user waits for.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mutual_pki::ca::{Ca, InitOptions, IssueOptions};
use mutual_pki::ListFilter;
use serde_json::{json, Value};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::stats::round2;

/// The password of the throwaway CA (it only lives in a temporary directory).
const PASSWORD: &str = "bench-only-password";

pub struct Opts {
    pub dir: PathBuf,
    pub tasks: usize,
    pub duration: Duration,
    pub fill: u64,
    pub revoked_per_mille: u64,
    pub mutual: Option<PathBuf>,
}

pub async fn run(o: Opts) -> anyhow::Result<Value> {
    if o.dir.exists() && std::fs::read_dir(&o.dir)?.next().is_some() {
        bail!("{} is not empty: give a new directory", o.dir.display());
    }
    std::fs::create_dir_all(&o.dir)?;
    let t0 = Instant::now();
    let ca = Arc::new(Ca::init(&o.dir, &InitOptions::default(), PASSWORD.as_bytes()).await?);
    let init_s = t0.elapsed().as_secs_f64();

    // Issuance: each task issues one certificate after another (key generation, signing, one
    // inventory row each) until the time is up.
    let issued = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    // CPU of this process (every thread: the runtime's and SQLite's) while issuing: the figure
    // that survives a busy machine better than the rate.
    let ticks = crate::stats::clock_ticks();
    let me = [std::process::id()];
    let cpu0 = crate::stats::tree_cpu_seconds(&me, ticks);
    let start = Instant::now();
    let deadline = start + o.duration;
    let mut tasks = Vec::new();
    for t in 0..o.tasks.max(1) {
        let (ca, issued, failed) = (Arc::clone(&ca), Arc::clone(&issued), Arc::clone(&failed));
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            let mut first_error = None;
            while Instant::now() < deadline {
                let opts = IssueOptions {
                    name: format!("bench-{t}-{i}"),
                    sans: vec![mutual_pki::San::Uri(format!(
                        "spiffe://bench.example/task/{t}/n/{i}"
                    ))],
                    ..IssueOptions::default()
                };
                match ca.issue(&opts).await {
                    Ok(_) => issued.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        first_error.get_or_insert_with(|| e.to_string());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                i += 1;
            }
            first_error
        }));
    }
    let mut first_error = None;
    for t in tasks {
        if let Ok(Some(e)) = t.await {
            first_error.get_or_insert(e);
        }
    }
    let issue_s = start.elapsed().as_secs_f64();
    let issue_cpu_s = crate::stats::tree_cpu_seconds(&me, ticks) - cpu0;
    let n_issued = issued.load(Ordering::Relaxed);
    // How the rows were committed: transactions (group commits) and rows per transaction.
    let groups = ca.group_commit().stats();

    // Fill the inventory up to `fill` rows with synthetic ones.
    let db = o.dir.join("inventory.db");
    let t1 = Instant::now();
    let (inserted, revoked) = fill(&db, o.fill.saturating_sub(n_issued), o.revoked_per_mille)
        .await
        .context("filling the inventory")?;
    let fill_s = t1.elapsed().as_secs_f64();

    // In-process: the library calls the commands are built on.
    let t2 = Instant::now();
    let listed = ca.list(&ListFilter::default()).await?.len();
    let list_s = t2.elapsed().as_secs_f64();
    let t3 = Instant::now();
    let crl = ca.crl(Duration::from_secs(7 * 86_400)).await?;
    let crl_s = t3.elapsed().as_secs_f64();
    ca.store().close().await;

    let mut out = json!({
        "mode": "ca",
        "ok": n_issued,
        "failed": failed.load(Ordering::Relaxed),
        "init_s": round2(init_s),
        "issue_tasks": o.tasks,
        // The runtime's worker threads (SQLite's own thread is extra): with `issue_cpu_s`, how
        // much of the machine the rate took.
        "threads": tokio::runtime::Handle::current().metrics().num_workers(),
        "issue_s": round2(issue_s),
        "issued_per_s": round2(n_issued as f64 / issue_s),
        "issue_cpu_s": round2(issue_cpu_s),
        "cpu_s_per_1000": round3(issue_cpu_s * 1000.0 / (n_issued.max(1) as f64)),
        "commit_groups": groups.groups,
        "rows_per_group": round2(groups.rows as f64 / (groups.groups.max(1) as f64)),
        "largest_group": groups.largest,
        "inventory_rows": listed,
        "synthetic_rows": inserted,
        "revoked_rows": revoked,
        "fill_s": round2(fill_s),
        "list_s": round3(list_s),
        "crl_s": round3(crl_s),
        "crl_bytes": crl.len(),
    });
    if let Some(e) = first_error {
        out["first_error"] = json!(e);
    }
    if let Some(bin) = &o.mutual {
        out["cli_cert_list_s"] = json!(round3(time_cli(bin, &o.dir, &["cert", "list"])?));
        out["cli_cert_list_json_s"] =
            json!(round3(time_cli(bin, &o.dir, &["cert", "list", "--json"])?));
        out["cli_ca_crl_s"] = json!(round3(time_cli(bin, &o.dir, &["ca", "crl"])?));
    }
    Ok(out)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Runs `mutual ARGS --dir DIR` with the output discarded; returns its wall time.
fn time_cli(bin: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<f64> {
    let t = Instant::now();
    let st = Command::new(bin)
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env("MUTUAL_CA_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let secs = t.elapsed().as_secs_f64();
    if !st.status.success() {
        bail!(
            "mutual {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&st.stderr).trim()
        );
    }
    Ok(secs)
}

/// Inserts `n` synthetic rows in one transaction, `per_mille` of them revoked. Returns
/// (inserted, revoked).
async fn fill(db: &Path, n: u64, per_mille: u64) -> anyhow::Result<(u64, u64)> {
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .busy_timeout(Duration::from_secs(30))
        .connect()
        .await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut tx = conn.begin().await?;
    let mut revoked = 0u64;
    for i in 0..n {
        // A distinct 128-bit serial per row, like the CA's random ones.
        let serial = format!(
            "7e{:030x}",
            u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        );
        // Spread evenly: exactly floor(n * per_mille / 1000) rows end up revoked.
        let is_revoked = (i + 1) * per_mille / 1000 > i * per_mille / 1000;
        revoked += u64::from(is_revoked);
        let nb = now - 3600 - (i % 86_400) as i64;
        sqlx::query(
            "INSERT INTO certificates (serial, name, subject, sans, usage, not_before, \
             not_after, status, revoked_at, reason, requested_by, sha256, created_at) \
             VALUES (?, ?, ?, ?, 'client', ?, ?, ?, ?, ?, NULL, ?, ?)",
        )
        .bind(&serial)
        .bind(format!("synthetic-{i}"))
        .bind(format!("CN=synthetic-{i}"))
        .bind(format!("[\"uri:spiffe://bench.example/synthetic/{i}\"]"))
        .bind(nb)
        .bind(nb + 86_400 * 30)
        .bind(if is_revoked { "revoked" } else { "valid" })
        .bind(is_revoked.then_some(now - (i % 3600) as i64))
        .bind(is_revoked.then_some("key-compromise"))
        .bind(format!("{:064x}", u128::from(i)))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    conn.close().await?;
    Ok((n, revoked))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The smoke run: a few issuances, a small synthetic fill, list and CRL agree with it.
    #[tokio::test]
    async fn issues_fills_lists_and_signs_a_crl() {
        let dir = std::env::temp_dir().join(format!("loadgen-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let v = run(Opts {
            dir: dir.clone(),
            tasks: 2,
            duration: Duration::from_millis(300),
            fill: 500,
            revoked_per_mille: 100,
            mutual: None,
        })
        .await
        .unwrap();
        let issued = v["ok"].as_u64().unwrap();
        assert!(issued > 0, "{v}");
        assert_eq!(v["failed"], 0, "{v}");
        let rows = v["inventory_rows"].as_u64().unwrap();
        assert_eq!(rows, issued.max(500), "{v}");
        let synthetic = v["synthetic_rows"].as_u64().unwrap();
        assert_eq!(synthetic, 500u64.saturating_sub(issued), "{v}");
        let revoked = v["revoked_rows"].as_u64().unwrap();
        assert_eq!(revoked, synthetic / 10, "{v}");
        // Each CRL entry is at least a serial and a date.
        assert!(v["crl_bytes"].as_u64().unwrap() > revoked * 20, "{v}");
        // A second run refuses to reuse the directory.
        let again = run(Opts {
            dir: dir.clone(),
            tasks: 1,
            duration: Duration::ZERO,
            fill: 0,
            revoked_per_mille: 0,
            mutual: None,
        })
        .await;
        assert!(again.unwrap_err().to_string().contains("not empty"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
