//! The readable report: sections a person scans top to bottom, aligned labels, and one verdict
//! line at the end that says pass or fail and why.

use std::fmt::Write;

use crate::certinfo::CertSummary;
use crate::{PairReport, Report};

const W: usize = 20;

fn row(out: &mut String, label: &str, value: &str) {
    let _ = writeln!(out, "  {label:<W$}{value}");
}

fn cert_rows(out: &mut String, i: usize, c: &CertSummary) {
    let _ = writeln!(out, "  [{i}] {}", c.subject);
    let sub = |out: &mut String, l: &str, v: &str| {
        let _ = writeln!(out, "      {l:<16}{v}");
    };
    sub(out, "issuer", &c.issuer);
    if !c.sans.is_empty() {
        sub(out, "SANs", &c.sans.join(", "));
    }
    if let Some(s) = &c.spiffe_id {
        sub(out, "SPIFFE ID", s);
    }
    let left = mutual_policy_human_time_left(c.seconds_left);
    sub(
        out,
        "valid",
        &format!("{} .. {} ({left})", c.not_before, c.not_after),
    );
    sub(
        out,
        "key",
        &format!("{} (signed {})", c.key, c.signature_algorithm),
    );
    if !c.eku.is_empty() {
        sub(out, "usage", &c.eku.join(", "));
    }
    sub(out, "sha256", &c.sha256);
}

/// Where a private key lives, in one line: the file, or the token, its URI and its protection.
fn key_where(k: &mutual_tls::load::KeyLocation) -> String {
    match &k.token {
        None => format!("file {}", k.location),
        Some(t) => {
            let flag = |v: Option<bool>, yes: &'static str, no: &'static str| match v {
                Some(true) => yes,
                Some(false) => no,
                None => "unknown",
            };
            format!(
                "PKCS#11 token {:?} ({}) {} {}, {}, {}",
                t.token,
                t.module,
                t.uri,
                t.kind,
                flag(t.sensitive, "sensitive", "not sensitive"),
                flag(t.extractable, "extractable", "never extractable")
            )
        }
    }
}

fn mutual_policy_human_time_left(secs: i64) -> String {
    mutual_tls::human::time_left(secs)
}

fn or_dash(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// Renders a probe report.
pub fn report(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mutual probe {} (server name {})",
        r.target, r.server_name
    );
    if let Some(e) = &r.error {
        let _ = writeln!(out, "\nError\n  {}", e.message);
        if let Some(a) = &r.alert {
            row(&mut out, "alert", a);
        }
    }

    if r.tls_version.is_some() || !r.versions.supported.is_empty() {
        let _ = writeln!(out, "\nConnection");
        row(&mut out, "TLS version", or_dash(&r.tls_version));
        let mut v = format!("offered {}", r.versions.offered.join(", "));
        if !r.versions.supported.is_empty() {
            let _ = write!(v, "; server accepts {}", r.versions.supported.join(", "));
        }
        if !r.versions.refused.is_empty() {
            let _ = write!(v, "; refuses {}", r.versions.refused.join(", "));
        }
        row(&mut out, "versions", &v);
        row(&mut out, "cipher suite", or_dash(&r.cipher));
        let g = match &r.group {
            Some(g) if r.post_quantum => format!("{g} (post-quantum hybrid)"),
            Some(g) => format!("{g} (classical, not post-quantum)"),
            None => "-".into(),
        };
        row(&mut out, "key exchange", &g);
        if let Some(a) = &r.alpn {
            row(&mut out, "ALPN", a);
        }
    }

    if !r.server_chain.is_empty() {
        let _ = writeln!(out, "\nServer certificate chain");
        for (i, c) in r.server_chain.iter().enumerate() {
            cert_rows(&mut out, i, c);
        }
        for p in &r.server_chain_problems {
            row(&mut out, "chain problem", p);
        }
    }
    let sv = &r.server_verification;
    if sv.valid.is_some() {
        let _ = writeln!(out, "\nServer verification");
        row(&mut out, "trust", &sv.trust);
        let status = match (sv.valid, sv.reason) {
            (Some(true), _) => format!("ok: {}", sv.detail),
            (_, Some(reason)) => format!("{reason}: {}", sv.detail),
            _ => sv.detail.clone(),
        };
        row(&mut out, "result", &status);
        if sv.valid == Some(false) {
            if let Some(reason) = sv.reason {
                row(&mut out, "fix", reason.hint());
            }
        }
    }

    if let Some(mode) = r.client_auth {
        let _ = writeln!(out, "\nClient authentication");
        let mode_text = match mode {
            crate::ClientAuth::NotEnforced => {
                "not enforced (a certificate from an unknown CA got through)"
            }
            m => m.as_str(),
        };
        row(&mut out, "mode", mode_text);
        row(&mut out, "how we know", &r.client_auth_detail);
        if let Some(u) = &r.untrusted_cert {
            let what = match u.accepted {
                Some(true) => "ACCEPTED",
                Some(false) => "refused",
                None => "unknown",
            };
            row(
                &mut out,
                "unknown-CA cert",
                &format!("{what}: {}", u.detail),
            );
        }
        let enforced = match r.enforced {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "could not tell",
        };
        row(&mut out, "mTLS enforced", enforced);
        if let Some(a) = &r.anonymous_alert {
            row(&mut out, "alert (no cert)", a);
        }
        if r.certificate_requested == Some(true) {
            let cas = if r.acceptable_cas.is_empty() {
                "(none advertised: any CA the server trusts)".to_string()
            } else {
                r.acceptable_cas.join(&format!("\n  {}", " ".repeat(W)))
            };
            row(&mut out, "acceptable CAs", &cas);
        }
    }

    if let Some(c) = &r.client_cert {
        let _ = writeln!(out, "\nClient certificate ({})", c.file);
        for (i, s) in c.chain.iter().enumerate() {
            cert_rows(&mut out, i, s);
        }
        if let Some(k) = &c.key {
            row(&mut out, "private key", &key_where(k));
        }
        row(&mut out, "sent", if c.sent { "yes" } else { "no" });
        if let Some(a) = &r.alert {
            row(&mut out, "alert received", a);
        }
        let acc = match r.accepted {
            Some(true) => "yes".to_string(),
            Some(false) => format!("no ({})", r.reason),
            None => "not tested".to_string(),
        };
        row(&mut out, "accepted", &acc);
        if let Some(d) = &r.accepted_detail {
            row(&mut out, "detail", d);
        }
        for f in &c.findings {
            row(
                &mut out,
                "local check",
                &format!("{}: {}", f.reason, f.detail),
            );
        }
    }

    let _ = writeln!(out, "\nResult");
    for n in &r.notes {
        row(&mut out, "note", n);
    }
    row(
        &mut out,
        "reason",
        &format!("{} - {}", r.reason, r.explanation),
    );
    row(&mut out, "hint", &r.hint);
    let _ = writeln!(out, "\n{}", r.verdict);
    out
}

/// Renders a `--pair` report.
pub fn pair(r: &PairReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "mutual probe --pair {} {}\n", r.cert_file, r.key_file);
    row(
        &mut out,
        "key matches cert",
        match (r.key_matches, r.key_matches_later) {
            (true, _) => "yes",
            (false, true) => "NO (it matches a later certificate: wrong order)",
            (false, false) => "NO",
        },
    );
    row(
        &mut out,
        "chain order",
        if r.chain_ordered {
            "ok (each certificate is signed by the next)"
        } else {
            "BROKEN"
        },
    );
    for p in &r.chain_problems {
        row(&mut out, "problem", p);
    }
    if let Some(i) = &r.intermediate_missing {
        row(
            &mut out,
            "no intermediate",
            &format!("{i} (add it after the leaf)"),
        );
    }
    match (&r.root_needed, r.root_included) {
        (Some(root), _) => row(
            &mut out,
            "root needed",
            &format!("{root} (not in the file)"),
        ),
        (None, true) => row(&mut out, "root", "included (self-signed, last in the file)"),
        _ => {}
    }
    row(
        &mut out,
        "leaf valid now",
        if r.leaf_valid { "yes" } else { "NO" },
    );
    if let Some(ok) = r.chains_to_ca {
        row(
            &mut out,
            "chains to --ca",
            &format!(
                "{} ({})",
                if ok { "yes" } else { "NO" },
                r.ca_detail.as_deref().unwrap_or("")
            ),
        );
    }
    let _ = writeln!(out, "\nChain");
    for (i, c) in r.chain.iter().enumerate() {
        cert_rows(&mut out, i, c);
    }
    let _ = writeln!(out, "\nResult");
    row(&mut out, "reason", &r.reason.to_string());
    row(&mut out, "hint", &r.hint);
    let _ = writeln!(out, "\n{}", r.verdict);
    out
}
