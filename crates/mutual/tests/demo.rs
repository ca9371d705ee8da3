//! `mutual demo` (the README's first command) runs end to end and exits 0, printing the three
//! outcomes; with --keep the files it made stay for trying things by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mutual");

#[test]
fn demo_shows_allowed_denied_and_no_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("demo");
    let out = Command::new(BIN)
        .args(["demo", "--keep", keep.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "allowed (ok)  [ok",
        "denied (policy_denied)  [ok",
        "failed (no_client_cert)  [ok",
        "3/3 steps behaved as expected",
        "\"reason\":\"policy_denied\"",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in\n{stdout}");
    }
    for f in [
        "root.pem",
        "server.pem",
        "allowed.key",
        "denied.pem",
        "audit.log",
    ] {
        assert!(keep.join(f).exists(), "{f} not kept");
    }
    let audit = std::fs::read_to_string(keep.join("audit.log")).unwrap();
    assert!(audit.lines().count() >= 4, "{audit}");

    // --keep on a directory that holds anything (here the kept demo, whose CA is in ca/; an
    // operator's CA directory would have had its root.pem replaced) is refused, nothing changed.
    let before = std::fs::read(keep.join("root.pem")).unwrap();
    let again = Command::new(BIN)
        .args(["demo", "--keep", keep.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is not a new or empty directory; nothing was changed"),
        "{err}"
    );
    assert_eq!(std::fs::read(keep.join("root.pem")).unwrap(), before);
    assert!(!String::from_utf8_lossy(&again.stdout).contains("CA \"Mutual Demo CA\""));
}
