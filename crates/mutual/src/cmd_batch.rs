//! `mutual cert issue --batch PATH`: device certificates by the thousand for a manufacturing
//! line (docs/est.md, "Manufacturing line: batch issuance").
//!
//! This module reads the rows (a directory of CSRs or a CSV file), decides what each row asks
//! for from the same flags as a single `cert issue`, and reports; the chunk transaction, the
//! journal and the resume after a kill are the library's (`mutual_pki::ca::BatchDir`,
//! `Ca::issue_chunk`, crates/mutual-pki/src/ca/batch.rs), so certificates come out of the CA's
//! one signer. A bad row is reported with its file and line and does not stop the others.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use mutual_pki::ca::{BatchDir, BatchRow, Ca, Csr, IssueOptions, IssueRequest, KeySource};
use mutual_pki::{San, Usage};

use crate::cmd_cert::IssueArgs;
use crate::errors::user;
use crate::runtime::runtime;

/// CSV columns, in the words of the single `cert issue` flags.
const COLUMNS: [&str; 5] = ["name", "csr", "san", "usage", "ttl"];

/// One row as read: where it came from and what it asks for.
struct Row {
    /// `FILE:LINE` of a CSV row, the CSR's path for a directory.
    source: String,
    name: String,
    csr: Option<PathBuf>,
    /// The row's own SANs (CSV `san`), before the --san-template ones.
    sans: Vec<San>,
    usage: Option<Usage>,
    ttl: Option<Duration>,
}

/// A row that was not issued, and why.
#[derive(serde::Serialize)]
struct Failure {
    source: String,
    name: String,
    reason: std::borrow::Cow<'static, str>,
    message: String,
}

impl Failure {
    fn of(row: &Row, e: anyhow::Error) -> Failure {
        Failure::at(&row.source, &row.name, e)
    }

    fn at(source: &str, name: &str, e: anyhow::Error) -> Failure {
        let r = crate::errors::report(&e, "cert issue");
        Failure {
            source: source.to_string(),
            name: name.to_string(),
            reason: r.reason,
            message: r.message,
        }
    }
}

#[derive(serde::Serialize)]
struct Summary {
    batch_id: String,
    out: PathBuf,
    issued: usize,
    skipped: usize,
    failed: usize,
    seconds: f64,
    per_second: f64,
    resumed: mutual_pki::ca::Resumed,
    failures: Vec<Failure>,
}

pub fn run(a: IssueArgs) -> anyhow::Result<ExitCode> {
    let Some(input) = a.batch.clone() else {
        anyhow::bail!("--batch PATH is required here");
    };
    let dir = a.dir.resolve()?;
    if !matches!(a.key_storage.resolve()?, mutual_pki::ca::KeyStorage::File) {
        return Err(user(
            "usage",
            "--batch generates keys into files; --key-storage pkcs11 holds one key per token object",
            "give the rows CSRs (made where the keys live), or drop --key-storage",
        ));
    }
    crate::cmd_cert::refuse_early(&dir, &a)?;
    let templates = a
        .san_template
        .iter()
        .map(|t| check_template(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (rows, mut failures) = read_rows(&input)?;
    if a.key_type.is_some() && rows.iter().all(|r| r.csr.is_some()) {
        return Err(user(
            "usage",
            format!(
                "--key-type is the type of the keys made for rows without a CSR: every row of \
                 {} has one, and its certificate is for the CSR's key",
                input.display()
            ),
            "drop --key-type (make the CSRs with the key type you want)",
        ));
    }
    let password = a
        .password
        .get_for(&dir, mutual_pki::ca::KeysUsed::ISSUERS)?;
    let _lock = crate::cmd_cert::lock_out_dir(&a.out)?;
    let started = Instant::now();
    let rt = runtime()?;
    let (batch_id, issued, skipped, resumed, first) = rt.block_on(async {
        let ca = Ca::open(&dir, password.as_bytes()).await?;
        let out = issue_rows(&ca, &a, &templates, rows, &mut failures).await;
        ca.store().close().await;
        out
    })?;
    // What our CA makes must pass its own lint (as `cert issue` checks its one leaf): the first
    // certificate of the run stands for the rest, which differ only in names and keys.
    if let Some(first) = &first {
        crate::cmd_lint::check_own(first, "certificate", &[], Some("leaf"))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let summary = Summary {
        batch_id,
        out: a.out.clone(),
        issued,
        skipped,
        failed: failures.len(),
        seconds,
        per_second: if seconds > 0.0 {
            issued as f64 / seconds
        } else {
            0.0
        },
        resumed,
        failures,
    };
    print_summary(&summary, a.json)?;
    Ok(if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Issues the rows not done yet, --chunk at a time. Returns the batch id, how many were issued
/// and skipped, what the resume found, and the first certificate file written.
async fn issue_rows(
    ca: &Ca,
    a: &IssueArgs,
    templates: &[String],
    rows: Vec<Row>,
    failures: &mut Vec<Failure>,
) -> anyhow::Result<(
    String,
    usize,
    usize,
    mutual_pki::ca::Resumed,
    Option<PathBuf>,
)> {
    let (mut batch, resumed) = BatchDir::open(&a.out, ca).await?;
    if resumed.rolled_forward + resumed.rolled_back > 0 && !a.json {
        eprintln!(
            "note: finished the chunk an interrupted run left: {} row(s) were committed and \
             their files are now in place, {} were not and are issued again",
            resumed.rolled_forward, resumed.rolled_back
        );
    }
    let (todo, skipped): (Vec<Row>, Vec<Row>) = rows
        .into_iter()
        .partition(|r| batch.done(&r.name).is_none());
    let total = todo.len();
    let (mut issued, mut first) = (0usize, None);
    for chunk in todo.chunks(a.chunk as usize) {
        let mut batch_rows = Vec::new();
        let mut sources = Vec::new();
        for row in chunk {
            match prepare(ca, a, templates, &batch, row) {
                Ok(r) => {
                    batch_rows.push(r);
                    sources.push(row);
                }
                Err(e) => failures.push(Failure::of(row, e)),
            }
        }
        let results = ca.issue_chunk(&mut batch, &batch_rows).await.context(
            "the batch stopped (rows committed so far are kept): re-run the same command to \
             issue the rest",
        )?;
        for (row, r) in sources.into_iter().zip(results) {
            match r {
                Ok(_) => {
                    issued += 1;
                    first.get_or_insert_with(|| batch.targets(&row.name).0);
                }
                Err(e) => failures.push(Failure::of(row, e.into())),
            }
        }
        if !a.json {
            eprintln!(
                "chunk of {}: {issued}/{total} issued, {} failed so far",
                chunk.len(),
                failures.len()
            );
        }
    }
    Ok((
        batch.id().to_string(),
        issued,
        skipped.len(),
        resumed,
        first,
    ))
}

/// One row's request: its names from the CSV and the templates, its key from its CSR or
/// generated; refused here when its files exist (the batch did not write them).
fn prepare(
    ca: &Ca,
    a: &IssueArgs,
    templates: &[String],
    batch: &BatchDir,
    row: &Row,
) -> anyhow::Result<BatchRow> {
    let (cert, key) = batch.targets(&row.name);
    if let Some(t) = [&cert, &key]
        .into_iter()
        .find(|t| t.exists() && (row.csr.is_none() || *t == &cert))
    {
        return Err(user(
            "exists",
            format!("{} already exists (not written by this batch)", t.display()),
            "remove it, rename the row, or use another --out DIR",
        ));
    }
    // Each SAN with where it came from, so that one given twice is named with both sources
    // (a single `cert issue --san X --san X` is refused the same way).
    let mut sans: Vec<(San, String)> = Vec::new();
    for t in templates {
        let text = t.replace("{name}", &row.name);
        let san = text
            .parse::<San>()
            .with_context(|| format!("--san-template {t:?} for this row"))?;
        sans.push((san, format!("--san-template {t:?}")));
    }
    sans.extend(
        row.sans
            .iter()
            .map(|s| (s.clone(), "the row's san column".to_string())),
    );
    for (i, (san, from)) in sans.iter().enumerate() {
        if let Some((_, first)) = sans[..i].iter().find(|(s, _)| s == san) {
            let by = if first == from {
                format!("twice by {from}")
            } else {
                format!("by {first} and by {from}")
            };
            return Err(user(
                "usage",
                format!("{san} is given {by}"),
                "name each SAN once: drop it from the row, or from the template",
            ));
        }
    }
    let sans = sans.into_iter().map(|(s, _)| s).collect();
    if let (Some(ttl), None) = (row.ttl, &a.issuer) {
        crate::ca_args::refuse_outliving(
            Some(ca.intermediate_not_after()),
            ttl,
            "ttl",
            "a certificate",
        )?;
    }
    let key_source = match &row.csr {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            KeySource::Csr(Csr::parse(&bytes).with_context(|| format!("{}", p.display()))?)
        }
        None => KeySource::Generate(a.key_type.unwrap_or(ca.config().defaults.key_type)),
    };
    Ok(BatchRow {
        key: row.name.clone(),
        request: IssueRequest {
            profile: IssueOptions {
                name: row.name.clone(),
                sans,
                usage: row.usage.unwrap_or_else(|| crate::cmd_cert::usage_of(a)),
                ttl: row.ttl.or(a.ttl).unwrap_or_else(|| ca.default_ttl()),
                // Set by the chunk: batch:<batch id>:<name>.
                requested_by: None,
                crl_urls: a.crl_urls.clone(),
                ocsp_urls: a.ocsp_urls.clone(),
                ocsp_signing: false,
                org: a.org.clone(),
                ou: a.ou.clone(),
                not_before: None,
                not_after: None,
                issuer: a.issuer.clone(),
            },
            key: key_source,
            token: None,
            output: None,
        },
    })
}

/// A --san-template must name the kind of SAN and, filled in with a plain name, parse as one.
fn check_template(t: &str) -> anyhow::Result<String> {
    t.replace("{name}", "device-1")
        .parse::<San>()
        .map_err(|e| user("usage", format!("--san-template {t:?}: {e}"), SAN_HINT))?;
    Ok(t.to_string())
}

const SAN_HINT: &str =
    "a SAN is dns:NAME, ip:ADDRESS, uri:spiffe://DOMAIN/PATH or email:USER@DOMAIN; {name} is \
     replaced by the row's name";

/// The rows of a directory of CSRs or of a CSV file, and the rows already refused while
/// reading them. A problem with the input as a whole (unreadable, no header, unknown column)
/// is a usage error: nothing is issued.
fn read_rows(input: &Path) -> anyhow::Result<(Vec<Row>, Vec<Failure>)> {
    let (rows, mut failures) = if input.is_dir() {
        (read_dir(input)?, Vec::new())
    } else {
        let text = std::fs::read_to_string(input)
            .with_context(|| format!("--batch {}: cannot read it", input.display()))?;
        read_csv(input, &text)?
    };
    // A name is a row's identity (its files, its done-log entry): the first one wins.
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut unique = Vec::new();
    for row in rows {
        if let Some(first) = seen.get(&row.name) {
            let e = user(
                "usage",
                format!("duplicate name {:?} (first at {first})", row.name),
                "give every row its own name",
            );
            failures.push(Failure::of(&row, e));
            continue;
        }
        seen.insert(row.name.clone(), row.source.clone());
        unique.push(row);
    }
    Ok((unique, failures))
}

fn read_dir(input: &Path) -> anyhow::Result<Vec<Row>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(input)
        .with_context(|| format!("--batch {}: cannot list it", input.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csr") && p.is_file())
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(user(
            "usage",
            format!("--batch {}: no *.csr file in it", input.display()),
            "give a directory of CSRs (NAME.csr, PEM or DER) or a CSV file",
        ));
    }
    Ok(paths
        .into_iter()
        .map(|p| Row {
            source: p.display().to_string(),
            name: p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            csr: Some(p),
            sans: Vec::new(),
            usage: None,
            ttl: None,
        })
        .collect())
}

fn read_csv(path: &Path, text: &str) -> anyhow::Result<(Vec<Row>, Vec<Failure>)> {
    let csv_usage = |msg: String| {
        user(
            "usage",
            format!("--batch {}: {msg}", path.display()),
            format!(
                "the first line names the columns: name (required), {} (docs/est.md)",
                COLUMNS[1..].join(", ")
            ),
        )
    };
    let mut records =
        parse_csv(text).map_err(|(line, e)| csv_usage(format!("line {line}: {e}")))?;
    if records.is_empty() {
        return Err(csv_usage("it is empty".into()));
    }
    let (_, header) = records.remove(0);
    let header: Vec<String> = header
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for h in &header {
        if !COLUMNS.contains(&h.as_str()) {
            return Err(csv_usage(format!("unknown column {h:?}")));
        }
    }
    let col = |name: &str| header.iter().position(|h| h == name);
    let Some(name_col) = col("name") else {
        return Err(csv_usage("no name column".into()));
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let (mut rows, mut failures) = (Vec::new(), Vec::new());
    for (line, fields) in records {
        let source = format!("{}:{line}", path.display());
        let get = |c: Option<usize>| {
            c.and_then(|i| fields.get(i))
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        let name = get(Some(name_col)).unwrap_or_default().to_string();
        let row = (|| {
            if fields.len() != header.len() {
                anyhow::bail!(
                    "{} fields where the header has {}",
                    fields.len(),
                    header.len()
                );
            }
            if name.is_empty() {
                anyhow::bail!("the name is empty");
            }
            let sans = get(col("san"))
                .map(|v| {
                    v.split(';')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| s.parse::<San>())
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?
                .unwrap_or_default();
            let usage = get(col("usage"))
                .map(|u| match u.to_ascii_lowercase().as_str() {
                    "client" => Ok(Usage::Client),
                    "server" => Ok(Usage::Server),
                    "both" => Ok(Usage::Both),
                    other => Err(anyhow::anyhow!(
                        "usage {other:?} is not client, server or both"
                    )),
                })
                .transpose()?;
            let ttl = get(col("ttl"))
                .map(mutual_pki::parse_duration)
                .transpose()?;
            Ok(Row {
                source: source.clone(),
                name: name.clone(),
                csr: get(col("csr")).map(|c| base.join(c)),
                sans,
                usage,
                ttl,
            })
        })();
        match row {
            Ok(r) => rows.push(r),
            Err(e) => failures.push(Failure::at(&source, &name, e)),
        }
    }
    Ok((rows, failures))
}

/// A CSV record: the line it starts on (1-based) and its fields.
type Record = (usize, Vec<String>);

/// RFC 4180 records; blank lines are skipped. Quoted fields may hold commas, doubled quotes and
/// newlines. An error names its line.
fn parse_csv(text: &str) -> Result<Vec<Record>, (usize, &'static str)> {
    let mut records = Vec::new();
    let (mut fields, mut field) = (Vec::new(), String::new());
    let (mut line, mut start) = (1usize, 1usize);
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            (false, '"') => return Err((line, "a quote inside an unquoted field")),
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                fields.push(std::mem::take(&mut field));
                if !(fields.len() == 1 && fields[0].trim().is_empty()) {
                    records.push((start, std::mem::take(&mut fields)));
                }
                fields.clear();
                line += 1;
                start = line;
            }
            (_, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
        }
    }
    if quoted {
        return Err((start, "a quoted field is not closed"));
    }
    if !field.is_empty() || !fields.is_empty() {
        fields.push(field);
        if !(fields.len() == 1 && fields[0].trim().is_empty()) {
            records.push((start, fields));
        }
    }
    Ok(records)
}

fn print_summary(s: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    for f in &s.failures {
        eprintln!("error: {}: {}: {}", f.source, f.name, f.message);
    }
    println!(
        "Batch {}: issued {}, skipped {} (done by an earlier run), failed {} in {:.1} s \
         ({:.0} certificates/s)",
        s.batch_id, s.issued, s.skipped, s.failed, s.seconds, s.per_second
    );
    println!(
        "  out: {} (NAME.pem leaf + intermediate; NAME.key 0600 for rows without a CSR; \
         serials in .mutual-batch.done)",
        s.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn csv_records_carry_their_line() {
        let text = "name,san\r\n\ndev-1,dns:a.example\n\"dev,2\",\"dns:b.example;\nip:10.0.0.1\"\ndev-3,\"say \"\"hi\"\"\"\n";
        let r = parse_csv(text).unwrap();
        assert_eq!(r[0], (1, vec!["name".to_string(), "san".to_string()]));
        assert_eq!(r[1], (3, vec!["dev-1".into(), "dns:a.example".into()]));
        assert_eq!(
            r[2],
            (
                4,
                vec!["dev,2".into(), "dns:b.example;\nip:10.0.0.1".into()]
            )
        );
        assert_eq!(r[3], (6, vec!["dev-3".into(), "say \"hi\"".into()]));
        assert_eq!(
            parse_csv("a,\"b\n").unwrap_err(),
            (1, "a quoted field is not closed")
        );
        assert_eq!(
            parse_csv("x\na\"b\n").unwrap_err(),
            (2, "a quote inside an unquoted field")
        );
    }
}
