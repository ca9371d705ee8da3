//! Fixtures for the tests of this crate and of the crates above it (mutual-tls's peer OCSP
//! tests): one way to make a throwaway CA and its certificates. Not for production use.
#![allow(clippy::expect_used)]

use std::path::Path;

use crate::ca::{Ca, InitOptions, IssueOptions, Issued};

/// A new CA with the default options in `dir/name` (password `pw`).
pub async fn new_ca(dir: &Path, name: &str) -> Ca {
    Ca::init(&dir.join(name), &InitOptions::default(), b"pw")
        .await
        .expect("a test CA")
}

/// `ca` issues a certificate named `name` with `opts` (the name set here).
pub async fn issue(ca: &Ca, name: &str, opts: IssueOptions) -> Issued {
    ca.issue(&IssueOptions {
        name: name.into(),
        ..opts
    })
    .await
    .expect("a test certificate")
}
