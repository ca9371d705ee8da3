//! Shared helpers for the PKI integration tests (pki_*.rs): run the real `mutual` binary and the
//! real `openssl`, and read the inventory through `cert list --json`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const PW: &str = "correct horse battery staple";

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
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
        assert_eq!(
            self.code, 2,
            "expected exit 2; stdout: {}\nstderr: {}",
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

fn collect(mut c: Command) -> Out {
    let o = c.stdin(Stdio::null()).output().expect("spawn");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
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

    /// The inventory as JSON objects.
    pub fn inventory(&self) -> Vec<serde_json::Value> {
        let o = mutual(&["cert", "list", "--dir", self.d(), "--json"]).ok();
        serde_json::from_str::<Vec<serde_json::Value>>(&o.stdout).unwrap()
    }

    /// `openssl verify` of `cert` against root + intermediate, with a purpose.
    pub fn openssl_verify(&self, cert: &Path, purpose: &str) -> Out {
        let root = self.root();
        let int = self.intermediate();
        openssl(&[
            "verify",
            "-CAfile",
            &root,
            "-untrusted",
            &int,
            "-purpose",
            purpose,
            s(cert),
        ])
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
