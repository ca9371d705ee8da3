//! The docs' commands run as written. Every ```sh block of the tour files below is either run,
//! in order, in a fresh directory with the real binary on PATH as `mutual`, or listed in
//! [`SKIPPED`] with the reason it cannot run here (an outside peer, a long-running server, the
//! build itself). A new block that is neither runnable nor listed fails this test, and so does a
//! listed block that no longer exists.
//!
//! Conventions the docs follow so that a block is checkable as written:
//! - a command that is meant to fail ends with a comment `# exit N: why`; it must exit N;
//! - every other command must exit 0 (the blocks run under `set -e -o pipefail`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The tour files: their blocks build on each other, top to bottom.
const FILES: &[&str] = &[
    "README.md",
    "docs/pki.md",
    "docs/migrate-nginx.md",
    "docs/probe.md",
];

/// Blocks that are not run, by file and first line, each with the reason.
const SKIPPED: &[(&str, &str, &str)] = &[
    (
        "README.md",
        "cargo run --release -p mutual -- demo   # the tour: CA, certificates, proxy, allowed and denied requests",
        "builds the workspace in release mode and runs the whole test suite: that is CI itself",
    ),
    (
        "README.md",
        "mutual serve --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 \\",
        "a long-running server on a public address in front of a backend; tests/proxy_*.rs run serve",
    ),
    (
        "README.md",
        "mutual serve --http --listen 0.0.0.0:8443 --backend 127.0.0.1:8080 \\",
        "a long-running server; tests/proxy_http.rs runs HTTP mode",
    ),
    (
        "README.md",
        "mutual connect --listen 127.0.0.1:7000 --remote api.internal:8443 \\",
        "needs an outside peer (api.internal) and runs until stopped; tests/proxy_connect.rs",
    ),
    (
        "README.md",
        "mutual config check mutual.toml    # every error as FILE:LINE:COL, exit 2; or a summary, exit 0",
        "needs the operator's mutual.toml and `run` serves until stopped; tests/proxy_config.rs",
    ),
    (
        "README.md",
        "mutual ca serve --dir /srv/ca --listen 0.0.0.0:9443 --san dns:ca.internal.example \\",
        "a long-running online CA in /srv/ca with a secrets file; tests/ca_server.rs",
    ),
    (
        "README.md",
        "mutual enroll --ca-url https://ca.internal:9443 --token \"$TOKEN\" \\",
        "needs an online CA at ca.internal and its root fingerprint; tests/enroll.rs",
    ),
    (
        "README.md",
        "mutual probe api.internal:8443 --ca ca/root.pem                                # required / optional / none?",
        "needs an outside endpoint (api.internal); tests/probe.rs probes real servers",
    ),
    (
        "docs/migrate-nginx.md",
        "# after (TCP proxying; add --http for the HTTP-aware mode and the forwarded client-cert header)",
        "a long-running server with files under /etc/mutual; tests/issue_features.rs runs serve with these CRLs",
    ),
    (
        "docs/probe.md",
        "mutual probe api.internal:8443 --ca ca/root.pem                                # required / optional / none?",
        "needs an outside endpoint (api.internal); tests/probe.rs probes real servers",
    ),
];

/// Text replaced before running, and why.
const SUBSTITUTIONS: &[(&str, &str)] = &[
    // The binary under test is on PATH already; `cargo run` would rebuild it in release mode.
    ("cargo run --release -p mutual -- ", "mutual "),
];

/// Setup a file's blocks assume and the file does not show (its reader has a CA already).
const PRELUDES: &[(&str, &str)] = &[(
    "docs/migrate-nginx.md",
    "export MUTUAL_HOME=$PWD/ca MUTUAL_CA_PASSWORD='change me'\nmutual ca init >/dev/null\n",
)];

struct Block {
    file: &'static str,
    /// 1-based line of the first command line.
    line: usize,
    lines: Vec<String>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn blocks(file: &'static str) -> Vec<Block> {
    let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
    let mut out = Vec::new();
    let mut cur: Option<Block> = None;
    for (i, l) in text.lines().enumerate() {
        match &mut cur {
            None if l.trim_end() == "```sh" => {
                cur = Some(Block {
                    file,
                    line: i + 2,
                    lines: Vec::new(),
                })
            }
            None => {}
            Some(_) if l.trim_end() == "```" => out.push(cur.take().unwrap()),
            Some(b) => b.lines.push(l.to_string()),
        }
    }
    assert!(cur.is_none(), "{file}: unterminated ```sh block");
    out
}

fn first_line(b: &Block) -> &str {
    b.lines
        .iter()
        .find(|l| !l.trim().is_empty())
        .map(String::as_str)
        .unwrap_or("")
}

fn skip_reason(b: &Block) -> Option<&'static str> {
    SKIPPED
        .iter()
        .find(|(f, first, _)| *f == b.file && *first == first_line(b))
        .map(|(_, _, why)| *why)
}

/// `CMD   # exit N: why` -> (CMD, N).
fn expected_exit(cmd: &str) -> (String, Option<i32>) {
    if let Some(i) = cmd.rfind("# exit ") {
        let n: String = cmd[i + 7..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(n) = n.parse() {
            return (cmd[..i].trim_end().to_string(), Some(n));
        }
    }
    (cmd.to_string(), None)
}

/// The block as bash: continuation lines joined, each command that must fail wrapped so that it
/// must fail with exactly its documented code.
fn script(b: &Block) -> String {
    let mut s = format!("echo '>>> {}:{}' >&2\n", b.file, b.line);
    let mut logical = String::new();
    let mut start = b.line;
    for (k, l) in b.lines.iter().enumerate() {
        if logical.is_empty() {
            start = b.line + k;
        }
        let mut l = l.clone();
        for (from, to) in SUBSTITUTIONS {
            l = l.replace(from, to);
        }
        if let Some(cont) = l.strip_suffix('\\') {
            logical.push_str(cont);
            continue;
        }
        logical.push_str(&l);
        let (cmd, exit) = expected_exit(&logical);
        match exit {
            Some(n) => s.push_str(&format!(
                "if {cmd}; then __rc=0; else __rc=$?; fi\n\
                 [ \"$__rc\" = {n} ] || {{ echo '{f}:{start}: expected exit {n}, got '\"$__rc\" >&2; exit 99; }}\n",
                f = b.file
            )),
            None => {
                s.push_str(&cmd);
                s.push('\n');
            }
        }
        logical.clear();
    }
    s
}

#[test]
fn every_block_is_run_or_listed_with_a_reason() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_mutual"));
    let bin_dir = bin.parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut listed_seen = vec![false; SKIPPED.len()];
    let mut ran = 0;
    for file in FILES {
        let mut body = String::from("set -e -o pipefail\n");
        if let Some((_, p)) = PRELUDES.iter().find(|(f, _)| f == file) {
            body.push_str(p);
        }
        let mut any = false;
        for b in blocks(file) {
            if let Some(i) = SKIPPED
                .iter()
                .position(|(f, first, _)| *f == b.file && *first == first_line(&b))
            {
                listed_seen[i] = true;
                println!(
                    "skipped {}:{}: {}",
                    b.file,
                    b.line,
                    skip_reason(&b).unwrap()
                );
                continue;
            }
            body.push_str(&script(&b));
            any = true;
            ran += 1;
        }
        if !any {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("timeout")
            .args(["300", "bash", "-c", &body])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env_remove("MUTUAL_HOME")
            .env_remove("MUTUAL_CA_PASSWORD")
            .env_remove("MUTUAL_P12_PASSWORD")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last_block = stderr
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(">>> "))
            .unwrap_or("?");
        assert!(
            out.status.success(),
            "{file}: the block at {last_block} failed as written (exit {:?}); if it cannot run \
             here, list it in SKIPPED with the reason.\n--- script\n{body}\n--- stdout\n{}\n--- stderr\n{stderr}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
        );
    }
    for (i, seen) in listed_seen.iter().enumerate() {
        assert!(
            seen,
            "SKIPPED lists a block that no longer exists: {:?}",
            SKIPPED[i]
        );
    }
    assert!(ran >= 6, "only {ran} blocks ran: the extraction is broken");
}

#[test]
fn expected_exit_comments_are_parsed() {
    assert_eq!(
        expected_exit("mutual x --at 2099   # exit 1: expired then"),
        ("mutual x --at 2099".to_string(), Some(1))
    );
    assert_eq!(
        expected_exit("mutual x   # not revoked"),
        ("mutual x   # not revoked".to_string(), None)
    );
}
