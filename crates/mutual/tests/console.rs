//! The web console (`/ui/`, crates/mutual-console) against real clients: curl for the access
//! rules, CSRF, escaping, paging and the loopback listener; a real headless Chromium driven over
//! WebDriver (tests/console/console_browser.py) for what a person does: load it with an admin
//! client certificate from an NSS db, search, filter, open a certificate, revoke it (then
//! `/v1/crl` lists it, read with `openssl crl`), create a token (then `mutual enroll` spends it);
//! a non-admin certificate and no certificate are refused; a POST without the CSRF token is
//! refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use mutual_test::{free_port, have};
use pki_common::*;

const ADMIN: &str = "spiffe://example.org/ops/alice";
const P12_PASS: &str = "console-test";

/// A CA with an admin, a non-admin, a server certificate `web`, a 1-hour `soon` and one whose
/// subject holds markup, served with `--admin spiffe://example.org/ops/*` and `--ui-listen`.
struct Console {
    ca: TestCa,
    srv: CaServe,
    ui_port: u16,
}

impl Console {
    fn start() -> Console {
        let ca = TestCa::new(&["--trust-domain", "example.org"]);
        ca.issue("admin", &["--san", &format!("uri:{ADMIN}")]).ok();
        ca.issue("user", &["--san", "uri:spiffe://example.org/dev/bob"])
            .ok();
        ca.issue("web", &["--server", "--san", "dns:web.internal"])
            .ok();
        ca.issue("soon", &["--san", "dns:soon.internal", "--ttl", "1h"])
            .ok();
        ca.issue(
            "xss",
            &[
                "--san",
                "dns:xss.internal",
                "--org",
                "<script>alert(1)</script>",
            ],
        )
        .ok();
        let ui_port = free_port();
        let ui = format!("127.0.0.1:{ui_port}");
        let srv = CaServe::start_new(
            &ca.dir,
            ca.tmp.path().join("server.log"),
            &[
                "--admin",
                "spiffe://example.org/ops/*",
                "--ui-listen",
                &ui,
                "--rate-limit",
                "off",
                "--est",
                "--est-approval",
                "manual",
                "--est-retry-after",
                "1",
            ],
        );
        Console { ca, srv, ui_port }
    }

    fn serial(&self, name: &str) -> String {
        self.ca.serial(name)
    }

    fn pem(&self, name: &str) -> (String, String) {
        let o = &self.ca.out;
        (
            s(&o.join(format!("{name}.pem"))).to_string(),
            s(&o.join(format!("{name}.key"))).to_string(),
        )
    }

    /// curl against the TLS listener as `who` (a certificate name, or None), extra args first.
    /// Returns (status, x-mutual-reason, body).
    fn curl(&self, who: Option<&str>, path: &str, extra: &[&str]) -> (u16, String, String) {
        let mut c = Command::new("curl");
        c.args(["-sS", "--cacert", &self.ca.root(), "-D", "-"]);
        if let Some(w) = who {
            let (cert, key) = self.pem(w);
            c.args(["--cert", &cert, "--key", &key]);
        }
        c.args(extra).arg(format!("{}{path}", self.srv.url()));
        parse_http(&c.output().unwrap().stdout)
    }
}

/// A device's EST simpleenroll (curl, a one-time token as the HTTP Basic password) with the CSR
/// of key `name` (made on first use, the same CSR on every poll): (status, body).
fn est_enroll(c: &Console, name: &str, token: &str) -> (u16, String) {
    let dir = c.ca.tmp.path().join("est");
    std::fs::create_dir_all(&dir).unwrap();
    let b64 = dir.join(format!("{name}.b64"));
    if !b64.exists() {
        let key = dir.join(format!("{name}.key"));
        let csr = dir.join(format!("{name}.csr"));
        let der = dir.join(format!("{name}.der"));
        openssl_csr(&key, &csr, "/CN=sensor", "");
        openssl_ok(&["req", "-in", s(&csr), "-outform", "DER", "-out", s(&der)]);
        openssl_ok(&["base64", "-in", s(&der), "-out", s(&b64)]);
    }
    let o = Command::new("curl")
        .args(["-sS", "--cacert", &c.ca.root(), "-w", "\n%{http_code}"])
        .args(["-H", "Content-Type: application/pkcs10", "--data-binary"])
        .arg(format!("@{}", s(&b64)))
        .args(["-u", &format!("device:{token}")])
        .arg(format!("{}/.well-known/est/simpleenroll", c.srv.url()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

/// `mutual cert pending --all --json`, by `requested_by`.
fn held(c: &Console) -> Vec<serde_json::Value> {
    let o = mutual(&["cert", "pending", "--all", "--json", "--dir", c.ca.d()]).ok();
    serde_json::from_str(&o.stdout).unwrap()
}

/// (status, x-mutual-reason, body) of `curl -D -` output.
fn parse_http(raw: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let reason = head
        .lines()
        .find_map(|l| l.strip_prefix("x-mutual-reason: "))
        .unwrap_or("")
        .trim()
        .to_string();
    (status, reason, body.to_string())
}

/// The value of the hidden CSRF field in a page.
fn csrf_of(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").unwrap() + 19;
    body[at..at + 64].to_string()
}

#[test]
fn console_access_csrf_escaping_and_audit() {
    if mutual_test::skip_without("curl") {
        return;
    }
    let c = Console::start();
    // No certificate, a non-admin certificate: refused with their reasons.
    let (st, reason, _) = c.curl(None, "/ui/", &[]);
    assert_eq!((st, reason.as_str()), (403, "no_client_cert"));
    let (st, reason, body) = c.curl(Some("user"), "/ui/", &[]);
    assert_eq!((st, reason.as_str()), (403, "forbidden"));
    assert!(body.contains("spiffe://example.org/dev/bob is not an admin"));
    // The admin gets the inventory and a CSRF cookie.
    let jar = c.ca.tmp.path().join("jar");
    let jar = s(&jar);
    let (st, _, body) = c.curl(Some("admin"), "/ui/", &["-c", jar]);
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("<span class=\"who\" id=\"who\">spiffe://example.org/ops/alice</span>"));
    // Markup in a subject is escaped on the certificate page.
    let xss = c.serial("xss");
    let (st, _, body) = c.curl(Some("admin"), &format!("/ui/cert/{xss}"), &[]);
    assert_eq!(st, 200);
    assert!(
        body.contains("O=&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{body}"
    );
    assert!(!body.contains("<script>"), "{body}");
    // The certificate page carries the form's token; without it, or with another, refused.
    let web = c.serial("web");
    let (_, _, page) = c.curl(Some("admin"), &format!("/ui/cert/{web}"), &["-b", jar]);
    let token = csrf_of(&page);
    let revoke = format!("/ui/cert/{web}/revoke");
    for (form, origin, why) in [
        ("reason=key-compromise".to_string(), None, "no csrf field"),
        (
            format!("reason=key-compromise&csrf={}", "0".repeat(64)),
            None,
            "wrong csrf",
        ),
        (
            format!("reason=key-compromise&csrf={token}"),
            Some("Origin: https://evil.example"),
            "cross-site origin",
        ),
    ] {
        let mut args = vec!["-b", jar, "--data", form.as_str()];
        if let Some(o) = origin {
            args.extend(["-H", o]);
        }
        let (st, reason, _) = c.curl(Some("admin"), &revoke, &args);
        assert_eq!((st, reason.as_str()), (403, "csrf_failed"), "{why}");
    }
    // The form offers no certificate-hold (a revocation is never lifted); posted, refused.
    assert!(page.contains("<option>key-compromise</option>"), "{page}");
    assert!(!page.contains("certificate-hold"), "{page}");
    let form = format!("reason=certificate-hold&csrf={token}");
    let (st, reason, _) = c.curl(Some("admin"), &revoke, &["-b", jar, "--data", &form]);
    assert_eq!((st, reason.as_str()), (400, "bad_request"));
    // Without the cookie, even the right value is refused (double submit).
    let form = format!("reason=key-compromise&csrf={token}");
    let (st, reason, _) = c.curl(Some("admin"), &revoke, &["--data", &form]);
    assert_eq!((st, reason.as_str()), (403, "csrf_failed"));
    assert_eq!(
        c.ca.inventory()
            .iter()
            .find(|r| r["name"] == "web")
            .unwrap()["status"],
        "valid"
    );
    // With both: revoked, audited with who, what and when, and in /v1/crl at once.
    let (st, _, body) = c.curl(Some("admin"), &revoke, &["-b", jar, "--data", &form]);
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("Revoked (key-compromise)"), "{body}");
    let row =
        c.ca.inventory()
            .into_iter()
            .find(|r| r["name"] == "web")
            .unwrap();
    assert_eq!(row["status"], "revoked");
    assert_eq!(row["reason"], "key-compromise");
    let log = c.srv.log_text();
    let audit = log
        .lines()
        .find(|l| {
            l.contains("console action")
                && l.contains("action=\"revoke\"")
                && l.contains("result=\"ok\"")
        })
        .unwrap_or_else(|| panic!("no audit line:\n{log}"));
    for needle in [ADMIN, "ts="] {
        assert!(audit.contains(needle), "{needle} in {audit}");
    }
    for refused in [
        "result=\"csrf_failed\"",
        "result=\"bad_request\" detail=\"reason refused\"",
    ] {
        assert!(log.contains(refused), "refusals are audited:\n{log}");
    }
    assert!(crl_lists(&c, &web), "the CRL lists {web}");
    // A token minted in the console is shown once and never logged.
    let (_, _, page) = c.curl(Some("admin"), "/ui/tokens/new", &["-b", jar]);
    let form = format!(
        "csrf={}&sans=dns%3Anew.internal&usage=server&ttl_cert=1h&expires=5m",
        csrf_of(&page)
    );
    let (st, _, body) = c.curl(Some("admin"), "/ui/tokens", &["-b", jar, "--data", &form]);
    assert_eq!(st, 200, "{body}");
    let jwt = body
        .split("id=\"token\" rows=\"5\" cols=\"80\">")
        .nth(1)
        .unwrap();
    let jwt = &jwt[..jwt.find('<').unwrap()];
    assert_eq!(jwt.split('.').count(), 3, "{jwt}");
    assert!(!c.srv.log_text().contains(jwt), "the token reached the log");
    let out = c.ca.tmp.path().join("enrolled");
    c.srv.enroll(jwt, &out).ok();
    // A token the CA would refuse to honour is refused on the form, as `token create` refuses
    // it: nothing is minted.
    for (sans, ttl, why) in [
        (
            "uri%3Aspiffe%3A%2F%2Fother.org%2Fx",
            "1h",
            "outside this CA&#39;s trust domain",
        ),
        (
            "dns%3A*.com",
            "1h",
            "a wildcard directly on the public suffix",
        ),
        (
            "dns%3Aold.internal",
            "100y",
            "a certificate cannot outlive the intermediate that issues it",
        ),
    ] {
        let (_, _, page) = c.curl(Some("admin"), "/ui/tokens/new", &["-b", jar]);
        let form = format!(
            "csrf={}&sans={sans}&usage=both&ttl_cert={ttl}&expires=5m",
            csrf_of(&page)
        );
        let (_, _, body) = c.curl(Some("admin"), "/ui/tokens", &["-b", jar, "--data", &form]);
        assert!(body.contains("id=\"error\""), "{body}");
        assert!(body.contains(why), "{why}: {body}");
        assert!(!body.contains("id=\"token\" rows"), "{body}");
    }
    // GET-only pages and methods.
    let (st, reason, _) = c.curl(Some("admin"), "/ui/", &["-X", "DELETE"]);
    assert_eq!((st, reason.as_str()), (405, "method_not_allowed"));
    let (st, reason, _) = c.curl(Some("admin"), "/ui/nope", &[]);
    assert_eq!((st, reason.as_str()), (404, "not_found"));
}

/// `openssl crl` reads the DER from /v1/crl and lists `serial`.
/// The inventory page of the loopback console at `ui` with the query `params` (`key=value`,
/// URL-encoded by curl): (rows listed, HTML).
fn inventory_page(ui: &str, params: &[&str]) -> (usize, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-G"]);
    for p in params {
        cmd.args(["--data-urlencode", p]);
    }
    let raw = cmd.arg(format!("{ui}/ui/")).output().unwrap();
    let body = String::from_utf8_lossy(&raw.stdout).into_owned();
    (body.matches("<td class=\"mono\">").count(), body)
}

fn crl_lists(c: &Console, serial: &str) -> bool {
    let der = c.ca.tmp.path().join("crl.der");
    let st = Command::new("curl")
        .args(["-sSf", "--cacert", &c.ca.root(), "-o", s(&der)])
        .arg(format!("{}/v1/crl", c.srv.url()))
        .status()
        .unwrap();
    assert!(st.success());
    let text = openssl_ok(&["crl", "-inform", "DER", "-in", s(&der), "-noout", "-text"]);
    text.to_ascii_lowercase()
        .replace(':', "")
        .contains(&serial.to_ascii_lowercase())
}

#[test]
fn console_pages_follow_the_keyset_and_the_loopback_listener() {
    if mutual_test::skip_without("curl") {
        return;
    }
    let c = Console::start();
    let all: Vec<String> =
        c.ca.inventory()
            .iter()
            .map(|r| r["serial"].as_str().unwrap().to_string())
            .collect();
    // The loopback listener: no certificate needed, every page of 2 rows in turn.
    let ui = format!("http://127.0.0.1:{}", c.ui_port);
    let (seen, pages) = serials_on_every_page(&c, "/ui/?limit=2");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "a row on two pages: {seen:?}");
    let mut want = all.clone();
    want.sort();
    assert_eq!(sorted, want, "every row once");
    assert!(pages >= 3);
    // A Host that is not loopback (DNS rebinding) is refused; the listener serves /ui/ only.
    let raw = Command::new("curl")
        .args(["-sS", "-D", "-", "-H", "Host: evil.example"])
        .arg(format!("{ui}/ui/"))
        .output()
        .unwrap();
    assert_eq!(parse_http(&raw.stdout).1, "bad_host");
    let raw = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{ui}/v1/roots"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&raw.stdout), "404");
    // Search by serial, by fingerprint, and a filter by requester.
    let web = c.serial("web");
    let sha =
        c.ca.inventory()
            .into_iter()
            .find(|r| r["name"] == "web")
            .unwrap()["sha256"]
            .as_str()
            .unwrap()
            .to_string();
    for q in [web.clone(), sha, "web.internal".into(), "name:web".into()] {
        let (rows, body) = inventory_page(&ui, &[&format!("q={q}")]);
        assert_eq!(rows, 1, "{q}: {body}");
        assert!(body.contains(&web), "{q}");
    }
    let (rows, body) = inventory_page(&ui, &["requester=ca-serve"]);
    assert_eq!(rows, 1, "{body}");
    assert!(body.contains("mutual-ca-server"));
    // The issuer filter: every row is int-1's (one intermediate), none is int-2's.
    for (issuer, want) in [("int-1", all.len()), ("int-2", 0)] {
        let (rows, body) = inventory_page(&ui, &[&format!("issuer={issuer}"), "limit=500"]);
        assert_eq!(rows, want, "{issuer}: {body}");
    }
    // After a rotation, a certificate's page shows the chain of its own intermediate: int-2's
    // for one it signed, still int-1's for the ones before.
    mutual(&["ca", "rotate-intermediate", "--dir", c.ca.d()]).ok();
    c.ca.issue("rotated", &["--san", "dns:rotated.internal"])
        .ok();
    let page = |name: &str| {
        let raw = Command::new("curl")
            .args(["-sS", &format!("{ui}/ui/cert/{}", c.serial(name))])
            .output()
            .unwrap();
        String::from_utf8_lossy(&raw.stdout).into_owned()
    };
    let hex = |pem: &Path| fingerprint_of(pem).replace(':', "").to_ascii_lowercase();
    let int2 = hex(&c.ca.dir.join("issuers/int-2.pem"));
    let int1 = hex(&c.ca.dir.join("intermediate.pem"));
    let body = page("rotated");
    assert!(body.contains("<td>intermediate int-2</td>"), "{body}");
    assert!(body.contains(&int2) && !body.contains(&int1), "{body}");
    let body = page("web");
    assert!(body.contains("<td>intermediate int-1</td>"), "{body}");
    assert!(body.contains(&int1) && !body.contains(&int2), "{body}");
    let (rows, body) = inventory_page(&ui, &["issuer=int-2"]);
    assert_eq!(rows, 1, "{body}");
    assert!(body.contains("rotated.internal"), "{body}");
}

/// GET `path` on the loopback console listener: (status, response head, body).
fn loopback_get(c: &Console, path: &str) -> (u16, String, String) {
    let raw = Command::new("curl")
        .args(["-sS", "-D", "-"])
        .arg(format!("http://127.0.0.1:{}{path}", c.ui_port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&raw.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        parse_http(&raw.stdout).0,
        head.to_string(),
        body.to_string(),
    )
}

/// The serials of the inventory pages from `first` on, following every "next page" link (keyset
/// paging), and how many pages there were.
fn serials_on_every_page(c: &Console, first: &str) -> (Vec<String>, usize) {
    let mut seen = Vec::new();
    let mut next = Some(first.to_string());
    let mut pages = 0;
    while let Some(path) = next.take() {
        let (st, _, body) = loopback_get(c, &path.replace("&amp;", "&"));
        assert_eq!(st, 200, "{body}");
        for cell in body.split("<td class=\"mono\">").skip(1) {
            seen.push(cell[..cell.find('<').unwrap()].to_string());
        }
        next = body
            .split("<a id=\"next\" href=\"")
            .nth(1)
            .map(|r| r[..r.find('"').unwrap()].to_string());
        pages += 1;
        assert!(pages < 20, "paging does not end");
    }
    (seen, pages)
}

/// A certificate's page shows the extensions of the certificate the inventory kept (issued here
/// with known SANs, EKU and CRL distribution point) and its key type; its PEM downloads are the
/// issued files byte for byte; the CA-chain link is its own issuer's; the inventory filters by
/// key type across keyset pages; a row from before migration 0010 says it has no copy.
#[test]
fn certificate_page_extensions_pem_and_key_type() {
    if mutual_test::skip_without("curl") {
        return;
    }
    let c = Console::start();
    c.ca.issue(
        "api",
        &[
            "--both",
            "--san",
            "dns:api.internal",
            "--san",
            "ip:10.1.2.3",
            "--san",
            "uri:spiffe://example.org/ns/prod/sa/api",
            "--crl-url",
            "http://ca.example/v1/crl/{issuer}",
        ],
    )
    .ok();
    c.ca.issue(
        "rsa",
        &[
            "--server",
            "--san",
            "dns:rsa.internal",
            "--key-type",
            "rsa-3072",
        ],
    )
    .ok();
    let api = c.serial("api");
    let (st, _, body) = loopback_get(&c, &format!("/ui/cert/{api}"));
    assert_eq!(st, 200, "{body}");
    let ext = &body[body
        .find("<table id=\"extensions\">")
        .expect("extensions table")..];
    let ext = &ext[..ext.find("</table>").unwrap()];
    let int_ski = x509(
        &c.ca.dir.join("intermediate.pem"),
        &["-ext", "subjectKeyIdentifier"],
    );
    let int_ski = int_ski.lines().nth(1).unwrap().trim();
    for row in [
        "<td title=\"2.5.29.17\">subjectAltName</td><td>-</td><td>dns:api.internal<br>ip:10.1.2.3<br>\
         uri:spiffe://example.org/ns/prod/sa/api</td>"
            .to_string(),
        "<td title=\"2.5.29.37\">extKeyUsage</td><td>-</td><td>serverAuth<br>clientAuth</td>".into(),
        "<td title=\"2.5.29.15\">keyUsage</td><td>critical</td><td>digitalSignature</td>".into(),
        "<td title=\"2.5.29.19\">basicConstraints</td><td>critical</td><td>CA:false</td>".into(),
        "<td title=\"2.5.29.31\">cRLDistributionPoints</td><td>-</td>\
         <td>uri:http://ca.example/v1/crl/int-1</td>"
            .into(),
        format!("<td title=\"2.5.29.35\">authorityKeyIdentifier</td><td>-</td><td>keyid:{int_ski}</td>"),
    ] {
        assert!(ext.contains(&row), "{row}\nnot in\n{ext}");
    }
    assert!(
        body.contains(
            "<span id=\"key-type\"><code>ecdsa-p256</code> (ECDSA P-256, 256 bits)</span>"
        ),
        "{body}"
    );
    // The downloads: the leaf as openssl writes it from the issued file, and leaf + chain
    // exactly the file `cert issue` wrote.
    let issued = c.ca.out.join("api.pem");
    for (file, want) in [
        ("cert.pem", openssl_ok(&["x509", "-in", s(&issued)])),
        ("fullchain.pem", std::fs::read_to_string(&issued).unwrap()),
    ] {
        assert!(
            body.contains(&format!("href=\"/ui/cert/{api}/{file}\"")),
            "{body}"
        );
        let (st, head, pem) = loopback_get(&c, &format!("/ui/cert/{api}/{file}"));
        assert_eq!(st, 200, "{head}");
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains("content-type: application/x-pem-file"),
            "{head}"
        );
        assert!(
            head.contains("content-disposition: attachment; filename="),
            "{head}"
        );
        assert_eq!(pem, want, "{file}");
    }
    // The RSA certificate's key type; the filter finds it alone, and every ECDSA one across
    // pages of 2 rows; no row is of an unknown type yet.
    let rsa = c.serial("rsa");
    let (_, _, body) = loopback_get(&c, &format!("/ui/cert/{rsa}"));
    assert!(
        body.contains("<code>rsa-3072</code> (RSA, 3072 bits)"),
        "{body}"
    );
    let inventory = c.ca.inventory();
    let mut ecdsa: Vec<String> = inventory
        .iter()
        .filter(|r| r["key_type"] == "ecdsa-p256")
        .map(|r| r["serial"].as_str().unwrap().to_string())
        .collect();
    ecdsa.sort();
    assert_eq!(ecdsa.len(), inventory.len() - 1);
    assert_eq!(
        serials_on_every_page(&c, "/ui/?key_type=rsa-3072").0,
        std::slice::from_ref(&rsa)
    );
    let (mut got, pages) = serials_on_every_page(&c, "/ui/?key_type=ecdsa-p256&limit=2");
    got.sort();
    assert_eq!(got, ecdsa);
    assert!(pages >= 3, "{pages}");
    assert!(serials_on_every_page(&c, "/ui/?key_type=unknown")
        .0
        .is_empty());
    let (_, _, body) = loopback_get(&c, "/ui/?key_type=dsa");
    assert!(body.contains("unknown key type &quot;dsa&quot;"), "{body}");
    // After a rotation, the CA-chain link of a certificate is its own issuer's chain.
    mutual(&["ca", "rotate-intermediate", "--dir", c.ca.d()]).ok();
    c.ca.issue("rotated", &["--san", "dns:rotated.internal"])
        .ok();
    for (name, issuer, int) in [
        ("rotated", "int-2", c.ca.dir.join("issuers/int-2.pem")),
        ("api", "int-1", c.ca.dir.join("intermediate.pem")),
    ] {
        let (_, _, body) = loopback_get(&c, &format!("/ui/cert/{}", c.serial(name)));
        let link = format!("/ui/chain.pem?issuer={issuer}");
        assert!(
            body.contains(&format!("href=\"{link}\" id=\"chain-pem\"")),
            "{body}"
        );
        let (st, _, chain) = loopback_get(&c, &link);
        assert_eq!(st, 200);
        let want = format!(
            "{}{}",
            std::fs::read_to_string(&int).unwrap(),
            std::fs::read_to_string(c.ca.root()).unwrap()
        );
        assert_eq!(chain, want, "{name}");
    }
    // A row recorded before the inventory kept certificates: the page says so, no download,
    // and the "unknown" filter finds it.
    let web = c.serial("web");
    forget_certificate(&c.ca.dir, &web);
    let (_, _, body) = loopback_get(&c, &format!("/ui/cert/{web}"));
    assert!(
        body.contains("<p id=\"not-stored\">The inventory has no copy"),
        "{body}"
    );
    assert!(!body.contains("id=\"cert-pem\""), "{body}");
    assert!(
        body.contains("unknown (recorded before the inventory kept key types)"),
        "{body}"
    );
    let (st, head, _) = loopback_get(&c, &format!("/ui/cert/{web}/cert.pem"));
    assert_eq!(st, 404);
    assert!(head.contains("x-mutual-reason: not_stored"), "{head}");
    assert_eq!(serials_on_every_page(&c, "/ui/?key_type=unknown").0, [web]);
}

#[test]
fn ui_listen_must_be_loopback() {
    let ca = TestCa::new(&[]);
    let o = mutual(&["ca", "serve", "--dir", ca.d(), "--ui-listen", "0.0.0.0:1"]);
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(
        o.text()
            .contains("is not a loopback address: the console without client certificates listens on 127.0.0.1"),
        "{}",
        o.text()
    );
    // An admin identity outside the CA's trust domain can never match: refused.
    let td = TestCa::new(&["--trust-domain", "example.org"]);
    let o = mutual(&[
        "ca",
        "serve",
        "--dir",
        td.d(),
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "spiffe://other.org/ops/*",
    ]);
    assert_eq!(o.code, 2, "{}", o.text());
    assert!(
        o.text()
            .contains("--admin spiffe://other.org/ops/* can never match"),
        "{}",
        o.text()
    );
    // A DNS admin pattern outside the name constraints can never match either.
    let narrow = TestCa::new(&["--permitted-dns", "internal.example"]);
    for admin in ["dns:*.ops.other.example", "ops.other.example"] {
        let args = ["ca", "serve", "--dir", narrow.d(), "--admin", admin];
        mutual_pw(None, &args).fails_with(&format!(
            "--admin {admin} can never match: its names are outside this CA's name constraints \
             (permitted_dns: internal.example)"
        ));
    }
    // The server's own listeners on one port: said so, not "another process listens there".
    for (flag, addr) in [
        ("--ui-listen", "127.0.0.1:7443"),
        ("--ocsp-listen", "127.0.0.1:7443"),
    ] {
        let o = mutual(&[
            "ca",
            "serve",
            "--dir",
            ca.d(),
            "--listen",
            "0.0.0.0:7443",
            flag,
            addr,
        ]);
        assert_eq!(o.code, 2, "{}", o.text());
        assert!(
            o.text().contains(&format!(
                "--listen 0.0.0.0:7443 and {flag} {addr} are the same port"
            )),
            "{}",
            o.text()
        );
    }
    // Lifetimes the intermediate cannot cover, named by their own flag, before the password.
    for (extra, thing) in [
        (&["--server-cert-ttl", "100y"][..], "certificate"),
        (&["--est", "--est-ttl", "100y"][..], "certificate"),
        (
            &["--ocsp", "--ocsp-responder-ttl", "100y"][..],
            "certificate",
        ),
        (&["--crl-next-update", "100y"][..], "CRL"),
    ] {
        let mut args = vec!["ca", "serve", "--dir", ca.d(), "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        mutual_pw(None, &args).fails_with(&format!(
            "{} 100 y: a {thing} cannot outlive the intermediate that issues it",
            extra[extra.len() - 2],
        ));
    }
    let ocsp = [
        "--ocsp",
        "--ocsp-next-update",
        "2d",
        "--ocsp-responder-ttl",
        "1d",
    ];
    let mut args = vec!["ca", "serve", "--dir", ca.d(), "--listen", "127.0.0.1:0"];
    args.extend_from_slice(&ocsp);
    mutual_pw(None, &args).fails_with(
        "--ocsp-next-update 2 d is longer than --ocsp-responder-ttl 1 d: a response never \
         outlives the responder certificate that signs it",
    );
}

/// The managed policy that makes Chromium present the NSS db's certificate to 127.0.0.1
/// without a prompt (the test's HOMEs each hold one certificate).
const POLICY_DIR: &str = "/etc/chromium/policies/managed";
const POLICY: &str =
    r#"{"AutoSelectCertificateForUrls": ["{\"pattern\":\"https://127.0.0.1:*\",\"filter\":{}}"]}"#;

fn browser_ready() -> Result<(), String> {
    for p in [
        "chromium",
        "chromedriver",
        "certutil",
        "pk12util",
        "python3",
    ] {
        if !have(p) {
            return Err(format!(
                "{p} not installed (Debian: chromium chromium-driver libnss3-tools)"
            ));
        }
    }
    let file = Path::new(POLICY_DIR).join("mutual-console-test.json");
    if std::fs::read_to_string(&file).ok().as_deref() != Some(POLICY) {
        std::fs::create_dir_all(POLICY_DIR)
            .and_then(|_| std::fs::write(&file, POLICY))
            .map_err(|e| format!("cannot write the Chromium policy {}: {e}", file.display()))?;
    }
    Ok(())
}

fn p12(c: &Console, name: &str) -> PathBuf {
    let (cert, key) = c.pem(name);
    let out = c.ca.tmp.path().join(format!("{name}.p12"));
    openssl_ok(&[
        "pkcs12",
        "-export",
        "-in",
        &cert,
        "-inkey",
        &key,
        "-out",
        s(&out),
        "-passout",
        &format!("pass:{P12_PASS}"),
        "-name",
        name,
    ]);
    out
}

#[test]
fn console_in_a_real_browser() {
    if let Err(why) = browser_ready() {
        if std::env::var_os("MUTUAL_REQUIRE_BROWSER").is_some() {
            panic!("MUTUAL_REQUIRE_BROWSER is set but the browser test cannot run: {why}");
        }
        eprintln!("SKIPPED: console browser test: {why}");
        return;
    }
    let c = Console::start();
    // Two devices ask over EST; the CA holds both for an operator (202 pending).
    let mut ids = Vec::new();
    for dev in ["dev-ok", "dev-no"] {
        let t = c.srv.token(
            &[&format!("uri:spiffe://example.org/device/{dev}")],
            "1h",
            "client",
        );
        let (st, body) = est_enroll(&c, dev, &t);
        assert_eq!(st, 202, "{body}");
        assert!(body.contains("\"pending\""), "{body}");
        let by = held(&c)
            .into_iter()
            .find(|r| r["names"].to_string().contains(dev))
            .unwrap();
        ids.push((by["id"].as_str().unwrap().to_string(), t));
    }
    let work = c.ca.tmp.path().join("browser");
    std::fs::create_dir_all(&work).unwrap();
    let shots = std::env::var("MUTUAL_CONSOLE_SCREENSHOTS").ok();
    let cfg = serde_json::json!({
        "work": s(&work),
        "url": c.srv.url(),
        "root": c.ca.root(),
        "admin_id": ADMIN,
        "admin_p12": s(&p12(&c, "admin")),
        "user_p12": s(&p12(&c, "user")),
        "p12_pass": P12_PASS,
        "web_serial": c.serial("web"),
        "xss_serial": c.serial("xss"),
        "approve_id": ids[0].0,
        "reject_id": ids[1].0,
        "shots": shots,
    });
    let cfg_file = work.join("config.json");
    std::fs::write(&cfg_file, cfg.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/console_browser.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&cfg_file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "browser test failed:\n{text}\n--- server ---\n{}",
        c.srv.log_text()
    );
    let res: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    // What the browser did is real: the revocation is in /v1/crl, the token enrolls.
    let web = res["revoked_serial"].as_str().unwrap();
    assert!(crl_lists(&c, web), "the CRL lists {web}");
    assert!(res["crl_number"].as_i64().unwrap() >= 2);
    let enrolled = c.ca.tmp.path().join("enrolled");
    c.srv.enroll(res["token"].as_str().unwrap(), &enrolled).ok();
    let row =
        c.ca.inventory()
            .into_iter()
            .find(|r| r["name"] == "new.internal")
            .unwrap();
    assert!(row["requested_by"].as_str().unwrap().starts_with("token:"));
    let log = c.srv.log_text();
    assert!(
        log.contains("console action") && log.contains("action=\"token_create\""),
        "{log}"
    );
    assert!(log.contains("result=\"csrf_failed\""), "{log}");

    // The approval in the browser is the CLI's: the device's next poll gets its certificate,
    // the rejected one is refused; both are recorded as the console's admin and audited.
    let (st, body) = est_enroll(&c, "dev-ok", &ids[0].1);
    assert_eq!(st, 200, "{body}");
    let p7 = c.ca.tmp.path().join("est/dev-ok.p7");
    std::fs::write(p7.with_extension("b64"), &body).unwrap();
    openssl_ok(&[
        "base64",
        "-d",
        "-in",
        s(&p7.with_extension("b64")),
        "-out",
        s(&p7),
    ]);
    let certs = openssl_ok(&["pkcs7", "-inform", "DER", "-in", s(&p7), "-print_certs"]);
    assert!(certs.contains("BEGIN CERTIFICATE"), "{certs}");
    let (st, body) = est_enroll(&c, "dev-no", &ids[1].1);
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("\"rejected\""), "{body}");
    for r in held(&c) {
        assert_eq!(r["decided_by"], format!("console:{ADMIN}"), "{r}");
    }
    for (action, id) in [
        ("enrollment_approve", &ids[0].0),
        ("enrollment_reject", &ids[1].0),
    ] {
        assert!(
            log.lines().any(|l| l.contains("console action")
                && l.contains(&format!("action=\"{action}\""))
                && l.contains("result=\"ok\"")
                && l.contains(id.as_str())),
            "{action} audited:\n{log}"
        );
    }
    // Decided once: approving the rejected one again is refused, and nothing changes.
    let jar = c.ca.tmp.path().join("jar2");
    let (_, _, page) = c.curl(Some("admin"), "/ui/tokens/new", &["-c", s(&jar)]);
    let form = format!("csrf={}", csrf_of(&page));
    let (st, reason, _) = c.curl(
        Some("admin"),
        &format!("/ui/enrollments/{}/approve", ids[1].0),
        &["-b", s(&jar), "--data", &form],
    );
    assert_eq!((st, reason.as_str()), (409, "not_pending"));
    let (st, reason, _) = c.curl(
        Some("admin"),
        "/ui/enrollments/00000000000000ff/reject",
        &["-b", s(&jar), "--data", &form],
    );
    assert_eq!((st, reason.as_str()), (404, "not_found"));
}
