//! The console's pages (GET) and actions (POST). Every action writes one audit line to the
//! CA's log (`console action`: who, what, on which serial, the outcome, when), the same place
//! the API's request lines go; a token is never logged, only its id.

use std::fmt::Write;

use hyper::{header, StatusCode};
use mutual_pki::{RevocationReason, RevokeOutcome, San, StoreError, Usage};
use mutual_policy::human::rfc3339;
use mutual_store::{CertRecord, Inventory, Page, Status};

use crate::auth::{Admin, Session};
use crate::html::{csrf_field, esc, page, url_part};
use crate::search::{candidates, Key, Query};
use crate::{base, finish, form_value, refusal, unix_now, Authority, Resp, TokenRequest};

fn html_ok(title: &str, admin: &Admin, body: &str) -> Resp {
    finish(
        base(StatusCode::OK).header("content-type", "text/html; charset=utf-8"),
        page(title, &admin.principal, body),
    )
}

fn store_failed(admin: &Admin, e: &StoreError) -> Resp {
    tracing::warn!(error = %e, "console: inventory query failed");
    refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the inventory did not answer; try again",
        &admin.principal,
    )
}

fn not_found(admin: &Admin, what: &str) -> Resp {
    refusal(StatusCode::NOT_FOUND, "not_found", what, &admin.principal)
}

/// One audit line for a console action.
fn audit(admin: &Admin, action: &str, serial: &str, result: &str, detail: &str) {
    tracing::info!(
        ts = %rfc3339(unix_now()),
        identity = %admin.principal,
        action,
        serial,
        result,
        detail,
        "console action"
    );
}

/// The audit line of a POST refused before it was read (CSRF).
pub(crate) fn audit_refusal(admin: &Admin, path: &str, reason: &str) {
    audit(admin, path, "-", reason, "refused");
}

pub(crate) async fn get(
    auth: &dyn Authority,
    admin: &Admin,
    session: &Session,
    path: &str,
    query: &str,
) -> Resp {
    match path {
        "/ui" | "/ui/" => Box::pin(inventory(auth, admin, query)).await,
        "/ui/chain.pem" => ca_chain(auth, admin, query),
        "/ui/tokens/new" => token_form(admin, session, None),
        "/ui/crl" => crl(auth, admin).await,
        "/ui/enrollments" => Box::pin(enrollments(auth, admin, session, None)).await,
        _ => {
            let Some(rest) = path.strip_prefix("/ui/cert/") else {
                return not_found(admin, "no such console page");
            };
            match rest.split_once('/') {
                None => Box::pin(certificate(auth, admin, session, rest, None)).await,
                Some((serial, "cert.pem")) => {
                    Box::pin(certificate_pem(auth, admin, serial, false)).await
                }
                Some((serial, "fullchain.pem")) => {
                    Box::pin(certificate_pem(auth, admin, serial, true)).await
                }
                Some(_) => not_found(admin, "no such console page"),
            }
        }
    }
}

pub(crate) async fn post(
    auth: &dyn Authority,
    admin: &Admin,
    session: &Session,
    path: &str,
    form: &[(String, String)],
    ca_url: &str,
) -> Resp {
    if path == "/ui/tokens" {
        return create_token(auth, admin, session, form, ca_url);
    }
    if let Some(serial) = path
        .strip_prefix("/ui/cert/")
        .and_then(|r| r.strip_suffix("/revoke"))
    {
        // Boxed: each page's future lives on the heap, so that the connection task's future
        // (and the worker's stack in debug builds) does not grow with every page.
        return Box::pin(revoke(auth, admin, session, serial, form)).await;
    }
    if let Some(rest) = path.strip_prefix("/ui/enrollments/") {
        let (id, approve) = match rest.rsplit_once('/') {
            Some((id, "approve")) => (id, true),
            Some((id, "reject")) => (id, false),
            _ => return not_found(admin, "no such console action"),
        };
        return Box::pin(decide(auth, admin, session, id, approve)).await;
    }
    not_found(admin, "no such console action")
}

fn status_cell(r: &CertRecord) -> String {
    let s = r.status.as_str();
    format!("<span class=\"{s}\">{s}</span>")
}

fn cert_link(serial: &str) -> String {
    format!("/ui/cert/{}", url_part(serial))
}

/// `/ui/`: search, filters, one page of rows, the link to the next.
async fn inventory(auth: &dyn Authority, admin: &Admin, qs: &str) -> Resp {
    let q = Query::parse(qs);
    let store = auth.ca().store();
    let now = unix_now();
    let cands = candidates(&q.q, q.by.as_deref());
    let mut chosen: Option<Key> = None;
    let mut page = Page {
        rows: Vec::new(),
        next: None,
    };
    if q.q.trim().is_empty() {
        match store
            .list_page(&q.filter(None), now, q.after.as_ref(), q.limit)
            .await
        {
            Ok(p) => page = p,
            Err(e) => return store_failed(admin, &e),
        }
    } else {
        for (i, k) in cands.iter().enumerate() {
            let last = i + 1 == cands.len();
            let p = match k {
                Key::Serial(s) => match store.get(s, now).await {
                    Ok(r) => Page {
                        rows: r.into_iter().collect(),
                        next: None,
                    },
                    Err(e) => return store_failed(admin, &e),
                },
                _ => match store
                    .list_page(&q.filter(Some(k)), now, q.after.as_ref(), q.limit)
                    .await
                {
                    Ok(p) => p,
                    Err(e) => return store_failed(admin, &e),
                },
            };
            if !p.rows.is_empty() || last {
                chosen = Some(k.clone());
                page = p;
                break;
            }
        }
    }
    let total = store.count().await.unwrap_or(-1);
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>Inventory</h1><p>{} certificates in the inventory.</p>",
        if total < 0 {
            "?".into()
        } else {
            total.to_string()
        }
    );
    for e in &q.errors {
        let _ = write!(b, "<div class=\"err\">{}</div>", esc(e));
    }
    // The search and filter form (GET: nothing changes, so no CSRF token).
    let sel = |v: &str| {
        if q.status.map(|s| s.as_str()) == Some(v) {
            " selected"
        } else {
            ""
        }
    };
    let _ = write!(
        b,
        "<form method=\"get\" action=\"/ui/\" id=\"search\"><fieldset>\
         <input type=\"search\" name=\"q\" id=\"q\" size=\"48\" value=\"{}\" \
         placeholder=\"name, SPIFFE ID, DNS name, IP, serial or SHA-256\">\
         <label>Status <select name=\"status\" id=\"status\"><option value=\"\">all</option>\
         <option{}>valid</option><option{}>revoked</option><option{}>expired</option></select></label>\
         <label>Expiring within <input name=\"expiring\" id=\"expiring\" size=\"5\" value=\"{}\" placeholder=\"7d\"></label>\
         <label>Requested by <input name=\"requester\" id=\"requester\" size=\"14\" value=\"{}\" placeholder=\"token:\"></label>\
         <label>Issuer <select name=\"issuer\" id=\"issuer\"><option value=\"\">all</option>{}</select></label>\
         <label>Key type <select name=\"key_type\" id=\"key-type\"><option value=\"\">all</option>{}</select></label>\
         <button type=\"submit\" id=\"go\">Search</button> <a href=\"/ui/\">clear</a></fieldset></form>",
        esc(&q.q),
        sel("valid"),
        sel("revoked"),
        sel("expired"),
        esc(q.expiring.as_ref().map(|(s, _)| s.as_str()).unwrap_or("")),
        esc(&q.requester),
        issuer_options(auth, q.issuer.as_deref()),
        key_type_options(q.key_type.as_deref()),
    );
    if let Some(k) = &chosen {
        let _ = write!(
            b,
            "<p id=\"matched\">Matching <b>{}</b> as a {}.</p>",
            esc(&q.q),
            esc(&k.describe())
        );
    }
    b.push_str(
        "<table id=\"certs\"><thead><tr><th>Name</th><th>Names (SANs)</th><th>Serial</th>\
         <th>Status</th><th>Not after</th><th>Usage</th><th>Key type</th><th>Issuer</th><th>Requested by</th></tr></thead><tbody>",
    );
    for r in &page.rows {
        let _ =
            write!(
            b,
            "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td class=\"mono\">{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&cert_link(&r.serial)),
            esc(&r.name),
            esc(&r.sans.join(", ")),
            esc(&r.serial),
            status_cell(r),
            esc(&rfc3339(r.not_after)),
            esc(&r.usage),
            esc(r.key_type.as_deref().unwrap_or(mutual_store::KEY_TYPE_UNKNOWN)),
            esc(&r.issuer),
            esc(r.requested_by.as_deref().unwrap_or("-")),
        );
    }
    b.push_str("</tbody></table>");
    if page.rows.is_empty() {
        b.push_str("<p id=\"empty\">No certificate matches.</p>");
    }
    b.push_str("<p class=\"pager\">");
    if q.after.is_some() {
        let _ = write!(
            b,
            "<a href=\"/ui/?{}\">first page</a>",
            esc(&q.link(chosen.as_ref().map(Key::by), None))
        );
    }
    if let Some(c) = &page.next {
        let _ = write!(
            b,
            "<a id=\"next\" href=\"/ui/?{}\">next page</a>",
            esc(&q.link(chosen.as_ref().map(Key::by), Some(c)))
        );
    }
    b.push_str("</p>");
    html_ok("Inventory", admin, &b)
}

/// The key-type filter's options, the chosen one selected.
fn key_type_options(chosen: Option<&str>) -> String {
    let mut o = String::new();
    for k in mutual_pki::keys::KEY_TYPE_FILTERS {
        let sel = if Some(k) == chosen { " selected" } else { "" };
        let _ = write!(o, "<option{sel}>{k}</option>");
    }
    if let Some(c) = chosen.filter(|c| !mutual_pki::keys::KEY_TYPE_FILTERS.contains(c)) {
        let _ = write!(o, "<option selected>{}</option>", esc(c));
    }
    o
}

/// The issuer filter's options: every intermediate in issuers.toml, the chosen one selected.
fn issuer_options(auth: &dyn Authority, chosen: Option<&str>) -> String {
    let mut o = String::new();
    let set = auth.ca().issuers();
    let mut ids: Vec<String> = set.all().iter().map(|i| i.id.clone()).collect();
    if let Some(c) = chosen.filter(|c| !ids.iter().any(|i| i == c)) {
        ids.push(c.to_string());
    }
    for id in ids {
        let sel = if Some(id.as_str()) == chosen {
            " selected"
        } else {
            ""
        };
        let _ = write!(o, "<option{sel}>{}</option>", esc(&id));
    }
    o
}

/// The intermediate `issuer` names and the PEM of the root it chains to (during a root
/// rollover an intermediate may chain to a new root, `roots/ID.pem`); `None` when the issuer is
/// not in issuers.toml any more.
fn issuer_and_root(
    auth: &dyn Authority,
    issuer: &str,
) -> Option<(std::sync::Arc<mutual_pki::ca::Issuer>, String)> {
    let int = auth.ca().issuers().get(issuer)?.clone();
    let root = match &int.root {
        Some(id) => {
            let (pem, _) = mutual_pki::ca::issuers::root_files(auth.ca().dir(), id);
            std::fs::read_to_string(pem).unwrap_or_default()
        }
        None => auth.ca().root_pem().to_string(),
    };
    Some((int, root))
}

/// `/ui/chain.pem[?issuer=ID]`: the CA chain (intermediate, then its root) of one issuer, the
/// default one without `issuer=`: a certificate's page links to its own issuer's.
fn ca_chain(auth: &dyn Authority, admin: &Admin, query: &str) -> Resp {
    let asked = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "issuer")
        .map(|(_, v)| v.into_owned());
    let id = asked.unwrap_or_else(|| auth.ca().issuers().default_issuer().id.clone());
    let Some((int, root)) = issuer_and_root(auth, &id) else {
        return not_found(admin, "no such issuer in this CA's issuers.toml");
    };
    // The id comes from issuers.toml; only filename-safe characters reach the header.
    let safe: String = int
        .id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    pem_download(
        &format!("ca-chain-{safe}.pem"),
        format!("{}{root}", int.pem()),
    )
}

/// A PEM file the browser saves rather than shows.
fn pem_download(filename: &str, body: String) -> Resp {
    finish(
        base(StatusCode::OK)
            .header("content-type", "application/x-pem-file")
            .header(
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        body,
    )
}

/// `/ui/cert/SERIAL/cert.pem` (the leaf) and `/ui/cert/SERIAL/fullchain.pem` (the leaf and its
/// issuer's chain, byte for byte the file `cert issue` wrote): from the DER the inventory kept
/// (migration 0010); a row from before it has none.
async fn certificate_pem(
    auth: &dyn Authority,
    admin: &Admin,
    serial: &str,
    with_chain: bool,
) -> Resp {
    let Ok(serial) = mutual_pki::normalize_serial(serial) else {
        return not_found(admin, "that is not a serial number");
    };
    let store = auth.ca().store();
    let r = match store.get(&serial, unix_now()).await {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(admin, "no certificate with that serial in the inventory"),
        Err(e) => return store_failed(admin, &e),
    };
    let der = match store.certificate_der(&serial).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return refusal(
                StatusCode::NOT_FOUND,
                "not_stored",
                NOT_STORED,
                &admin.principal,
            )
        }
        Err(e) => return store_failed(admin, &e),
    };
    let Ok(leaf) = mutual_pki::pem_encode("CERTIFICATE", &der) else {
        return store_failed(
            admin,
            &StoreError::Corrupt {
                serial,
                detail: "the stored certificate cannot be PEM-encoded".into(),
            },
        );
    };
    if !with_chain {
        return pem_download(&format!("{serial}.pem"), leaf);
    }
    match auth.ca().issuers().get(&r.issuer) {
        Some(int) => pem_download(
            &format!("{serial}-fullchain.pem"),
            format!("{leaf}{}", int.chain_pem()),
        ),
        None => not_found(
            admin,
            "its issuer is not in this CA's issuers.toml any more",
        ),
    }
}

/// Why a row has no certificate bytes.
const NOT_STORED: &str = "The inventory has no copy of this certificate: it was recorded before \
     mutual kept certificates (migration 0010), with only its fingerprint. Its PEM is with its \
     holder (mutual cert inspect FILE reads it).";

/// Subject, notAfter and SHA-256 of each CA certificate above a leaf signed by `issuer` (its
/// own intermediate, not the default one: after `ca rotate-intermediate` they differ).
fn chain_rows(auth: &dyn Authority, issuer: &str) -> String {
    let mut o = String::new();
    let Some((int, root)) = issuer_and_root(auth, issuer) else {
        let _ = write!(
            o,
            "<tr><td>intermediate</td><td colspan=\"3\" id=\"issuer-missing\">{} is not in this \
             CA's issuers.toml any more</td></tr>",
            esc(issuer)
        );
        return o;
    };
    for (role, pem) in [
        (format!("intermediate {}", int.id), int.pem().to_string()),
        ("root".to_string(), root),
    ] {
        let Ok((_, p)) = x509_parser::pem::parse_x509_pem(pem.as_bytes()) else {
            continue;
        };
        let sha = hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &p.contents,
        ));
        let (subject, not_after) = match p.parse_x509() {
            Ok(c) => (
                c.subject().to_string(),
                rfc3339(c.validity().not_after.timestamp()),
            ),
            Err(_) => ("(unreadable)".into(), "-".into()),
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
            esc(&role),
            esc(&subject),
            esc(&not_after),
            esc(&sha)
        );
    }
    o
}

/// "ECDSA P-256, 256 bits": the key of a stored certificate as a person names it.
fn key_of(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer;
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let (kind, bits) = mutual_pki::inspect::describe_key(c.public_key());
    Some(format!("{kind}, {bits} bits"))
}

/// The extensions table of a stored certificate (every value escaped).
fn extension_rows(der: &[u8]) -> String {
    let exts = match mutual_pki::inspect::extensions(der) {
        Ok(e) => e,
        Err(e) => {
            return format!(
                "<p id=\"extensions-error\">The stored certificate cannot be read: {}</p>",
                esc(&e.to_string())
            )
        }
    };
    let mut o = String::from(
        "<table id=\"extensions\"><tr><th>Extension</th><th>Critical</th><th>Values</th></tr>",
    );
    for e in &exts {
        let _ = write!(
            o,
            "<tr><td title=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.oid),
            esc(&e.name),
            if e.critical { "critical" } else { "-" },
            e.values
                .iter()
                .map(|v| esc(v))
                .collect::<Vec<_>>()
                .join("<br>")
        );
    }
    o.push_str("</table>");
    o
}

fn eku(usage: &str) -> &'static str {
    match usage {
        "server" => "serverAuth",
        "client" => "clientAuth",
        "both" => "serverAuth, clientAuth",
        _ => "-",
    }
}

/// `/ui/cert/SERIAL`: the inventory's record, the chain above it, who asked, the revoke form.
async fn certificate(
    auth: &dyn Authority,
    admin: &Admin,
    session: &Session,
    serial: &str,
    message: Option<&str>,
) -> Resp {
    let Ok(serial) = mutual_pki::normalize_serial(serial) else {
        return not_found(admin, "that is not a serial number");
    };
    let r = match auth.ca().store().get(&serial, unix_now()).await {
        Ok(Some(r)) => r,
        Ok(None) => return not_found(admin, "no certificate with that serial in the inventory"),
        Err(e) => return store_failed(admin, &e),
    };
    let der = match auth.ca().store().certificate_der(&serial).await {
        Ok(d) => d,
        Err(e) => return store_failed(admin, &e),
    };
    let mut b = String::new();
    if let Some(m) = message {
        let _ = write!(b, "<div class=\"msg\" id=\"message\">{}</div>", esc(m));
    }
    let _ = write!(
        b,
        "<h1 id=\"cert-name\">{}</h1><table id=\"fields\">",
        esc(&r.name)
    );
    let mut row = |k: &str, v: String| {
        let _ = write!(b, "<tr><th>{k}</th><td>{v}</td></tr>");
    };
    row(
        "Status",
        format!("<span id=\"status\">{}</span>", status_cell(&r)),
    );
    row("Serial", format!("<code>{}</code>", esc(&r.serial)));
    row("Subject", esc(&r.subject));
    row(
        "Subject alternative names",
        r.sans
            .iter()
            .map(|s| esc(s))
            .collect::<Vec<_>>()
            .join("<br>"),
    );
    if der.is_none() {
        // Without the certificate, what the recorded usage implies (the extensions table
        // shows the real ones when the inventory kept it).
        row(
            "Key usage / extended key usage",
            format!(
                "digitalSignature / {} (from the recorded usage)",
                eku(&r.usage)
            ),
        );
    }
    let key = match (&r.key_type, der.as_deref().and_then(key_of)) {
        (Some(t), Some(k)) => format!("<code>{}</code> ({})", esc(t), esc(&k)),
        (Some(t), None) => format!("<code>{}</code>", esc(t)),
        (None, _) => "unknown (recorded before the inventory kept key types)".to_string(),
    };
    row("Key type", format!("<span id=\"key-type\">{key}</span>"));
    row(
        "Issuer",
        format!("<code id=\"issuer\">{}</code>", esc(&r.issuer)),
    );
    row("Not before", esc(&rfc3339(r.not_before)));
    row("Not after", esc(&rfc3339(r.not_after)));
    row(
        "SHA-256 fingerprint",
        format!("<code>{}</code>", esc(&r.sha256)),
    );
    row(
        "Requested by",
        format!(
            "<span id=\"requested-by\">{}</span> at {}",
            esc(r
                .requested_by
                .as_deref()
                .unwrap_or("mutual cert issue (CLI)")),
            esc(&rfc3339(r.created_at))
        ),
    );
    if r.status == Status::Revoked {
        row(
            "Revoked",
            format!(
                "{} ({}) by {}",
                esc(&r.revoked_at.map(rfc3339).unwrap_or_default()),
                esc(r.reason.as_deref().unwrap_or("unspecified")),
                esc(r
                    .revoked_by
                    .as_deref()
                    .unwrap_or("mutual cert revoke (CLI)"))
            ),
        );
    }
    b.push_str("</table>");
    let _ = write!(
        b,
        "<h2>Chain</h2><table id=\"chain\"><tr><th>Role</th><th>Subject</th><th>Not after</th>\
         <th>SHA-256</th></tr><tr><td>leaf</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td></tr>{}</table>",
        esc(&r.subject),
        esc(&rfc3339(r.not_after)),
        esc(&r.sha256),
        chain_rows(auth, &r.issuer)
    );
    let link = esc(&cert_link(&r.serial));
    b.push_str("<p id=\"downloads\">");
    if der.is_some() {
        let _ = write!(
            b,
            "<a href=\"{link}/cert.pem\" id=\"cert-pem\">Download certificate (PEM)</a> · \
             <a href=\"{link}/fullchain.pem\" id=\"fullchain-pem\">leaf + chain (PEM)</a> · "
        );
    }
    let _ = write!(
        b,
        "<a href=\"/ui/chain.pem?issuer={}\" id=\"chain-pem\">Download the CA chain (PEM)</a> \
         of its issuer, {}.</p>",
        esc(&url_part(&r.issuer)),
        esc(&r.issuer)
    );
    b.push_str("<h2>Extensions</h2>");
    match &der {
        Some(d) => b.push_str(&extension_rows(d)),
        None => {
            let _ = write!(b, "<p id=\"not-stored\">{}</p>", esc(NOT_STORED));
        }
    }
    if r.status != Status::Revoked {
        let mut opts = String::new();
        for reason in RevocationReason::GIVEN {
            let _ = write!(opts, "<option>{}</option>", reason.as_str());
        }
        let _ = write!(
            b,
            "<h2>Revoke</h2><form method=\"post\" action=\"{}/revoke\" id=\"revoke\"><fieldset>{}\
             <label>Reason <select name=\"reason\" id=\"reason-select\">{opts}</select></label>\
             <button type=\"submit\" id=\"revoke-button\">Revoke this certificate</button>\
             </fieldset></form>",
            esc(&cert_link(&r.serial)),
            csrf_field(session.token())
        );
    }
    html_ok(&r.name, admin, &b)
}

/// POST `/ui/cert/SERIAL/revoke`: revoke with the form's reason, publish a CRL, show the page.
async fn revoke(
    auth: &dyn Authority,
    admin: &Admin,
    session: &Session,
    serial: &str,
    form: &[(String, String)],
) -> Resp {
    let Ok(serial) = mutual_pki::normalize_serial(serial) else {
        return not_found(admin, "that is not a serial number");
    };
    let reason =
        match RevocationReason::for_revocation(form_value(form, "reason").unwrap_or("unspecified"))
        {
            Ok(r) => r,
            Err(e) => {
                audit(admin, "revoke", &serial, "bad_request", "reason refused");
                return refusal(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &e.to_string(),
                    &admin.principal,
                );
            }
        };
    let by = format!("console:{}", admin.principal);
    let out = auth
        .ca()
        .store()
        .revoke_as(&serial, reason.as_str(), unix_now(), Some(&by))
        .await;
    let msg = match out {
        Ok(RevokeOutcome::Revoked(rec)) => {
            if let Err(e) = auth.publish_crl(&rec.issuer).await {
                // The row is revoked; the next --crl-refresh signs the CRL that lists it.
                tracing::warn!(error = %e, "console: CRL publication after a revocation failed");
            }
            audit(admin, "revoke", &serial, "ok", reason.as_str());
            format!(
                "Revoked ({}). The CRL at /v1/crl lists it.",
                reason.as_str()
            )
        }
        Ok(RevokeOutcome::AlreadyRevoked(_)) => {
            audit(admin, "revoke", &serial, "already_revoked", reason.as_str());
            "It was already revoked; nothing changed.".to_string()
        }
        Err(StoreError::NotFound { .. }) => {
            audit(admin, "revoke", &serial, "not_found", reason.as_str());
            return not_found(admin, "no certificate with that serial in the inventory");
        }
        Err(e) => {
            audit(
                admin,
                "revoke",
                &serial,
                "store_unavailable",
                reason.as_str(),
            );
            return store_failed(admin, &e);
        }
    };
    Box::pin(certificate(auth, admin, session, &serial, Some(&msg))).await
}

fn token_form(admin: &Admin, session: &Session, error: Option<&str>) -> Resp {
    let mut b = String::from("<h1>New enrollment token</h1>");
    if let Some(e) = error {
        let _ = write!(b, "<div class=\"err\" id=\"error\">{}</div>", esc(e));
    }
    let _ = write!(
        b,
        "<p>A one-time token for <code>mutual enroll</code> or <code>POST /v1/sign</code>. It is \
         shown once, after you create it, and is spent by its first use.</p>\
         <form method=\"post\" action=\"/ui/tokens\" id=\"token-form\"><fieldset>{}\
         <p><label>Names, one per line (dns:NAME, ip:ADDR, uri:spiffe://TD/PATH)<br>\
         <textarea name=\"sans\" id=\"sans\" rows=\"3\" cols=\"60\"></textarea></label></p>\
         <p><label>Usage <select name=\"usage\" id=\"usage\"><option>both</option><option>server</option>\
         <option>client</option></select></label>\
         <label>Certificate lifetime <input name=\"ttl_cert\" id=\"ttl_cert\" value=\"24h\" size=\"6\"></label>\
         <label>Token valid for <input name=\"expires\" id=\"expires\" value=\"10m\" size=\"6\"></label></p>\
         <button type=\"submit\" id=\"create-token\">Create token</button></fieldset></form>",
        csrf_field(session.token())
    );
    html_ok("New token", admin, &b)
}

/// The token request in a form, checked as `mutual token create` checks its flags.
fn token_request(form: &[(String, String)]) -> Result<TokenRequest, String> {
    let mut sans: Vec<San> = Vec::new();
    for s in form_value(form, "sans")
        .unwrap_or("")
        .split(|c: char| c == '\n' || c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let san: San = s.parse().map_err(|e: mutual_pki::PkiError| e.to_string())?;
        if sans.contains(&san) {
            return Err(format!("{san} is given twice"));
        }
        sans.push(san);
    }
    if sans.is_empty() {
        return Err("a token needs at least one name".into());
    }
    let usage = match form_value(form, "usage").unwrap_or("both") {
        "server" => Usage::Server,
        "client" => Usage::Client,
        "both" => Usage::Both,
        other => return Err(format!("unknown usage {other:?} (server, client or both)")),
    };
    if matches!(usage, Usage::Server | Usage::Both) && !sans.iter().any(San::names_a_server) {
        return Err(format!(
            "a {usage} certificate needs a dns: or ip: name, or a SPIFFE ID; add one, or choose client"
        ));
    }
    let dur = |k: &str, d: &str| {
        mutual_pki::parse_duration(form_value(form, k).unwrap_or(d)).map_err(|e| e.to_string())
    };
    let cert_ttl = dur("ttl_cert", "24h")?;
    let expires = dur("expires", "10m")?;
    if expires > std::time::Duration::from_secs(30 * 86_400) {
        return Err("a token is valid for at most 30d: it is a bearer credential".into());
    }
    Ok(TokenRequest {
        sans,
        cert_ttl,
        usage,
        expires,
    })
}

/// A token the CA would refuse to honour is refused when asked for, as `mutual token create`
/// refuses it: names outside the trust domain or the name constraints, a wildcard on a public
/// suffix, a certificate lifetime the intermediate cannot cover.
fn fits_the_ca(ca: &mutual_pki::ca::Ca, req: TokenRequest) -> Result<TokenRequest, String> {
    ca.config()
        .check_sans(&req.sans)
        .map_err(|e| e.to_string())?;
    let ends = ca.intermediate_not_after();
    match mutual_pki::ca::outliving(req.cert_ttl, ends, "certificate lifetime", "a certificate") {
        Some(why) => Err(format!("{why}; choose a shorter lifetime")),
        None => Ok(req),
    }
}

/// POST `/ui/tokens`: mint and show once.
fn create_token(
    auth: &dyn Authority,
    admin: &Admin,
    session: &Session,
    form: &[(String, String)],
    ca_url: &str,
) -> Resp {
    let req = match token_request(form).and_then(|r| fits_the_ca(auth.ca(), r)) {
        Ok(r) => r,
        Err(e) => {
            audit(admin, "token_create", "-", "bad_request", &e);
            return token_form(admin, session, Some(&e));
        }
    };
    let minted = match auth.mint_token(&req) {
        Ok(m) => m,
        Err(e) => {
            audit(admin, "token_create", "-", "internal", &e);
            return refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the token could not be signed (see the CA's log)",
                &admin.principal,
            );
        }
    };
    let names: Vec<String> = req.sans.iter().map(ToString::to_string).collect();
    audit(
        admin,
        "token_create",
        "-",
        "ok",
        &format!("jti={} sans={}", minted.jti, names.join(",")),
    );
    let mut b = String::from("<h1>Token created</h1>");
    let _ = write!(
        b,
        "<div class=\"secret\"><p>Copy it now: it is not shown again and not stored.</p>\
         <textarea readonly id=\"token\" rows=\"5\" cols=\"80\">{}</textarea></div>\
         <table><tr><th>Id (jti)</th><td class=\"mono\" id=\"jti\">{}</td></tr>\
         <tr><th>Names</th><td>{}</td></tr><tr><th>Usage</th><td>{}</td></tr>\
         <tr><th>Valid until</th><td>{}</td></tr></table>\
         <p>Use it: <code id=\"enroll-line\">mutual enroll --ca-url {} --root-sha256 {} --token TOKEN --out DIR</code></p>",
        esc(&minted.token),
        esc(&minted.jti),
        esc(&names.join(", ")),
        esc(req.usage.as_str()),
        esc(&rfc3339(minted.expires_at)),
        esc(ca_url),
        esc(&auth.ca().root_fingerprint_sha256()),
    );
    html_ok("Token created", admin, &b)
}

/// `/ui/crl`: the stored current CRL (the one every replica serves).
async fn crl(auth: &dyn Authority, admin: &Admin) -> Resp {
    let store = auth.ca().store();
    let (current, state) = match (store.current_crl().await, store.crl_state().await) {
        (Ok(c), Ok(s)) => (c, s),
        (Err(e), _) | (_, Err(e)) => return store_failed(admin, &e),
    };
    let mut b = String::from("<h1>CRL</h1>");
    match current {
        None => b.push_str("<p id=\"crl-none\">No CRL is stored yet.</p>"),
        Some(c) => {
            let now = unix_now();
            let _ = write!(
                b,
                "<table id=\"crl\"><tr><th>CRL number</th><td id=\"crl-number\">{}</td></tr>\
                 <tr><th>thisUpdate</th><td>{}</td></tr>\
                 <tr><th>nextUpdate</th><td id=\"next-update\">{}{}</td></tr>\
                 <tr><th>Revoked certificates in the inventory</th><td id=\"revoked-count\">{}</td></tr>\
                 </table>",
                c.number,
                esc(&rfc3339(c.this_update)),
                esc(&rfc3339(c.next_update)),
                if c.next_update <= now {
                    " <b class=\"revoked\">(past: relying parties will refuse it)</b>"
                } else {
                    ""
                },
                state.revoked
            );
        }
    }
    b.push_str("<p><a href=\"/v1/crl\">Download the CRL (DER)</a></p>");
    html_ok("CRL", admin, &b)
}

/// POST `/ui/enrollments/ID/approve|reject`: the decision `mutual cert approve|reject` makes,
/// recorded as `console:<who>`; the device gets its certificate (or its refusal) at its next poll.
async fn decide(
    auth: &dyn Authority,
    admin: &Admin,
    session: &Session,
    id: &str,
    approve: bool,
) -> Resp {
    let action = if approve {
        "enrollment_approve"
    } else {
        "enrollment_reject"
    };
    // Ids are 16 hex digits (from the CSR); anything else cannot be one.
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        audit(admin, action, "-", "not_found", "malformed id");
        return not_found(admin, "no such pending enrollment");
    }
    let by = format!("console:{}", admin.principal);
    match auth.decide_enrollment(id, approve, &by).await {
        Ok(crate::Decided::Done) => {
            audit(admin, action, "-", "ok", &format!("id={id}"));
            let msg = if approve {
                format!("Approved {id}: the device gets its certificate at its next poll.")
            } else {
                format!("Rejected {id}: the device's next poll is refused.")
            };
            Box::pin(enrollments(auth, admin, session, Some(&msg))).await
        }
        Ok(crate::Decided::NotPending(status)) => {
            audit(
                admin,
                action,
                "-",
                "not_pending",
                &format!("id={id} status={status}"),
            );
            refusal(
                StatusCode::CONFLICT,
                "not_pending",
                &format!("enrollment {id} is {status}, not pending: it was decided already"),
                &admin.principal,
            )
        }
        Ok(crate::Decided::Unknown) => {
            audit(admin, action, "-", "not_found", &format!("id={id}"));
            not_found(admin, "no such pending enrollment")
        }
        Err(e) => {
            audit(admin, action, "-", "store_unavailable", &format!("id={id}"));
            tracing::warn!(error = %e, "console: enrollment decision failed");
            refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store did not answer; try again",
                &admin.principal,
            )
        }
    }
}

/// `/ui/enrollments`: EST enrollments waiting for an operator (`--est-approval manual`).
async fn enrollments(
    auth: &dyn Authority,
    admin: &Admin,
    session: &Session,
    message: Option<&str>,
) -> Resp {
    let list = match auth.pending_enrollments().await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "console: pending enrollments unavailable");
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store did not answer; try again",
                &admin.principal,
            );
        }
    };
    let mut b = String::new();
    if let Some(m) = message {
        let _ = write!(b, "<div class=\"msg\" id=\"message\">{}</div>", esc(m));
    }
    b.push_str("<h1>Pending enrollments</h1>");
    if list.is_empty() {
        b.push_str(
            "<p id=\"none-pending\">No enrollment is waiting for approval. EST enrollments held for \
             an operator (<code>ca serve --est-approval manual</code>) are listed here, with approve \
             and reject.</p>",
        );
    } else {
        b.push_str("<table id=\"pending\"><tr><th>Id</th><th>Label</th><th>Names</th><th>Requested by</th><th>Received</th><th></th></tr>");
        for p in &list {
            let _ = write!(
                b,
                "<tr id=\"enr-{id}\"><td class=\"mono\">{id}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>\
                 <form class=\"inline\" method=\"post\" action=\"/ui/enrollments/{id}/approve\">{c}<button class=\"approve\">Approve</button></form>\
                 <form class=\"inline\" method=\"post\" action=\"/ui/enrollments/{id}/reject\">{c}<button class=\"reject\">Reject</button></form>\
                 </td></tr>",
                esc(if p.label.is_empty() { "-" } else { &p.label }),
                esc(&p.sans.join(", ")),
                esc(&p.requested_by),
                esc(&rfc3339(p.received_at)),
                id = esc(&url_part(&p.id)),
                c = csrf_field(session.token()),
            );
        }
        b.push_str("</table>");
    }
    html_ok("Pending enrollments", admin, &b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn token_forms() {
        let r = token_request(&form(&[
            ("sans", "dns:web.internal\nuri:spiffe://example.org/web"),
            ("usage", "server"),
            ("ttl_cert", "8h"),
            ("expires", "5m"),
        ]))
        .unwrap();
        assert_eq!(r.sans.len(), 2);
        assert_eq!(r.cert_ttl.as_secs(), 8 * 3600);
        for (f, needle) in [
            (form(&[("sans", "")]), "at least one"),
            (form(&[("sans", "dns:a dns:a")]), "twice"),
            (
                form(&[("sans", "email:a@b.c"), ("usage", "server")]),
                "needs a dns",
            ),
            (
                form(&[("sans", "dns:a"), ("expires", "31d")]),
                "at most 30d",
            ),
            (
                form(&[("sans", "dns:a"), ("usage", "root")]),
                "unknown usage",
            ),
        ] {
            let e = token_request(&f).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }
}
