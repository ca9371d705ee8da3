//! A small built-in list of public suffixes: the lint's `san-wildcard-public-suffix` rule
//! (mutual-tls), and the CA's refusal to issue such a wildcard in the first place (mutual-pki).
//!
//! Not the Public Suffix List (about 10,000 entries that change weekly): mutual is a private
//! PKI tool and carries no data file it would have to keep current. These are the generic and
//! country-code top-level domains a wildcard is most often mistakenly issued under, the common
//! second-level registries (`co.uk`, `com.au`, ...) and the best-known PRIVATE-section entries
//! (cloud and hosting suffixes). Any single label (`*.com`, `*.internal`) also counts: a
//! wildcard over a whole top-level domain is never right. docs/lint.md lists the entries.

/// Multi-label ICANN suffixes (second-level registries).
pub const MULTI_LABEL: &[&str] = &[
    "co.uk", "org.uk", "ac.uk", "gov.uk", "me.uk", "ltd.uk", "plc.uk", "net.uk", "com.au",
    "net.au", "org.au", "edu.au", "gov.au", "co.nz", "org.nz", "net.nz", "co.jp", "ne.jp", "or.jp",
    "ac.jp", "go.jp", "co.kr", "or.kr", "com.br", "net.br", "org.br", "com.cn", "net.cn", "org.cn",
    "gov.cn", "com.mx", "com.ar", "com.tr", "co.in", "net.in", "org.in", "co.za", "org.za",
    "com.sg", "com.hk", "com.tw", "co.il", "com.pl", "co.id", "com.my", "com.ph", "com.vn",
    "com.ua", "com.ru",
];

/// PRIVATE-section entries of the Public Suffix List (namespaces owned by one company).
pub const PRIVATE: &[&str] = &[
    "s3.amazonaws.com",
    "compute.amazonaws.com",
    "elasticbeanstalk.com",
    "cloudfront.net",
    "herokuapp.com",
    "appspot.com",
    "azurewebsites.net",
    "cloudapp.net",
    "blob.core.windows.net",
    "github.io",
    "gitlab.io",
    "netlify.app",
    "vercel.app",
    "pages.dev",
    "workers.dev",
    "firebaseapp.com",
    "web.app",
    "fly.dev",
    "onrender.com",
    "ngrok.io",
    "blogspot.com",
    "dyndns.org",
    "no-ip.org",
];

/// Which part of the list a suffix is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A top-level domain (any single label) or an ICANN second-level registry.
    Icann,
    /// A PRIVATE-section entry: its owner may hold a wildcard over it (CABF BR 3.2.2.6).
    Private,
}

/// Whether `name` (what follows `*.`) is a public suffix by this list (ASCII
/// case-insensitive), and of which kind.
pub fn classify(name: &str) -> Option<Kind> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if !name.contains('.') || MULTI_LABEL.contains(&name.as_str()) {
        Some(Kind::Icann)
    } else if PRIVATE.contains(&name.as_str()) {
        Some(Kind::Private)
    } else {
        None
    }
}
