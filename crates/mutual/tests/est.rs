//! EST (RFC 7030) at `/.well-known/est/` (`ca serve --est`, docs/est.md), driven by the
//! independent clients a device would use: curl + `openssl base64 -d | openssl pkcs7
//! -print_certs` for every endpoint, Python's `cryptography` PKCS#7 loader, `openssl verify`
//! of the issued chain, and a fleet of Python devices (tests/est/fleet.py). The manufacturer
//! CA and factory certificates are made by `openssl`, not by us. Every refusal is asserted by
//! its exact reason label.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mutual_test::eventually;
use pki_common::*;

const IDENTITY: &str = "spiffe://fleet.example/device/{serial}";

/// The EST operations the tests POST a CSR to (RFC 7030 §3.2.2), under the default label.
const ENROLL: &str = "/.well-known/est/simpleenroll";
const REENROLL: &str = "/.well-known/est/simplereenroll";
const KEYGEN: &str = "/.well-known/est/serverkeygen";

/// `ca serve` flags that hold EST requests for an operator, polled every second.
const MANUAL: &[&str] = &["--est-approval", "manual", "--est-retry-after", "1"];

/// A manufacturer CA (openssl) that signs factory certificates with a subject serialNumber.
struct Factory {
    dir: PathBuf,
}

impl Factory {
    /// The curl arguments with which device `sn` posts a new CSR (files `name.*` under `dir`),
    /// authenticated by its factory certificate.
    fn request(&self, dir: &Path, sn: &str, name: &str) -> Vec<String> {
        let (cert, key) = self.device(sn);
        let (_, b64) = est_csr(dir, name, "");
        enroll_args(&b64, Some((&cert, &key)))
    }

    fn new(dir: &Path, name: &str) -> Factory {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        // `req -new -x509`: a self-signed certificate instead of a CSR.
        openssl_csr_with(
            &dir.join("mfg.key"),
            &dir.join("mfg.pem"),
            &format!("/O={name}/CN={name} Manufacturing CA"),
            &[
                "-x509",
                "-days",
                "3650",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        std::fs::write(
            dir.join("ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        Factory { dir }
    }

    fn pem(&self) -> PathBuf {
        self.dir.join("mfg.pem")
    }

    /// A factory certificate for device `serial`: (cert, key).
    fn device(&self, serial: &str) -> (PathBuf, PathBuf) {
        let key = self.dir.join(format!("{serial}.key"));
        let csr = self.dir.join(format!("{serial}.csr"));
        let cert = self.dir.join(format!("{serial}.pem"));
        openssl_csr(
            &key,
            &csr,
            &format!("/O=Devices/serialNumber={serial}/CN=sensor"),
            "",
        );
        openssl_ok(&[
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&self.pem()),
            "-CAkey",
            s(&self.dir.join("mfg.key")),
            "-CAcreateserial",
            "-days",
            "3650",
            "-extfile",
            s(&self.dir.join("ext")),
            "-out",
            s(&cert),
        ]);
        (cert, key)
    }
}

/// `curl` against the CA (trusting its root) with `args`; files under `dir`.
fn curl<S: AsRef<std::ffi::OsStr>>(ca: &CaServe, dir: &Path, path: &str, args: &[S]) -> Answer {
    curl_in(dir, ca.root(), &format!("{}{path}", ca.url()), args)
}

/// curl arguments that POST the file `b64` as `application/pkcs10`, with a client
/// certificate when given.
fn enroll_args(b64: &Path, cert: Option<(&Path, &Path)>) -> Vec<String> {
    let mut a: Vec<String> = ["-H", "Content-Type: application/pkcs10", "--data-binary"]
        .map(String::from)
        .to_vec();
    a.push(format!("@{}", s(b64)));
    if let Some((c, k)) = cert {
        a.extend(["--cert".into(), s(c).into(), "--key".into(), s(k).into()]);
    }
    a
}

/// `curl` POST of the CSR file `b64` to `path` ([`enroll_args`]).
fn post_csr(
    ca: &CaServe,
    dir: &Path,
    path: &str,
    b64: &Path,
    cert: Option<(&Path, &Path)>,
) -> Answer {
    curl(ca, dir, path, &enroll_args(b64, cert))
}

/// `curl` GET without further arguments.
fn get(ca: &CaServe, dir: &Path, path: &str) -> Answer {
    curl(ca, dir, path, &[] as &[&str])
}

/// A new P-256 key and the base64 DER of a CSR for it (the EST request body), with `sans`
/// (openssl syntax) unless empty; returns (key, b64 file).
fn est_csr(dir: &Path, name: &str, sans: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let der = dir.join(format!("{name}.der"));
    let b64 = dir.join(format!("{name}.b64"));
    openssl_csr(&key, &csr, "/CN=sensor", sans);
    openssl_ok(&["req", "-in", s(&csr), "-outform", "DER", "-out", s(&der)]);
    openssl_ok(&["base64", "-in", s(&der), "-out", s(&b64)]);
    (key, b64)
}

/// The certificates of a base64 certs-only answer, as `openssl pkcs7 -print_certs` prints them
/// (PEM), written to `out`.
fn print_certs(a: &Answer, out: &Path) -> String {
    assert_eq!(a.status, 200, "{}\n{}", a.headers, a.text());
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/pkcs7-mime; smime-type=certs-only"),
        "{}",
        a.headers
    );
    let b64 = out.with_extension("p7.b64");
    let der = out.with_extension("p7");
    std::fs::write(&b64, &a.body).unwrap();
    openssl_ok(&["base64", "-d", "-in", s(&b64), "-out", s(&der)]);
    openssl_ok(&[
        "pkcs7",
        "-inform",
        "DER",
        "-in",
        s(&der),
        "-print_certs",
        "-out",
        s(out),
    ]);
    std::fs::read_to_string(out).unwrap()
}

/// python3 with `cryptography`: the system's, or the venv .ci/run makes for the ACME tests.
fn python() -> PathBuf {
    let sys = Command::new("python3")
        .args([
            "-c",
            "import cryptography.hazmat.primitives.serialization.pkcs7",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if sys {
        return PathBuf::from("python3");
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/acme-venv/bin/python");
    if !venv.exists() {
        let v = venv.parent().unwrap().parent().unwrap();
        assert!(Command::new("python3")
            .args(["-m", "venv", s(v)])
            .status()
            .unwrap()
            .success());
        assert!(Command::new(v.join("bin/pip"))
            .args(["install", "-q", "cryptography"])
            .status()
            .unwrap()
            .success());
    }
    venv
}

/// Subjects of the certificates in a base64 PKCS#7 body, read by Python's `cryptography`.
fn python_pkcs7_subjects(body: &[u8]) -> Vec<String> {
    let o = mutual_test::output_with_stdin(
        Command::new(python()).args([
            "-c",
            "import sys, base64\n\
             from cryptography.hazmat.primitives.serialization import pkcs7\n\
             for c in pkcs7.load_der_pkcs7_certificates(base64.b64decode(sys.stdin.buffer.read())):\n\
             \x20   print(c.subject.rfc4514_string())",
        ]),
        body,
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `enroll --est URL ARGS... --out OUT`: the device side's arguments.
fn enroll_est<'a>(url: &'a str, args: &[&'a str], out: &'a Path) -> Vec<&'a str> {
    let mut a = vec!["enroll", "--est", url];
    a.extend_from_slice(args);
    a.extend(["--out", s(out)]);
    a
}

/// `ca serve --est` of a new "Fleet CA" in `tmp`, trusting the factory certificates of a new
/// "Acme" manufacturer CA, with `extra` flags: (manufacturer, server).
fn est_server(tmp: &Path, extra: &[&str]) -> (Factory, CaServe) {
    let factory = Factory::new(tmp, "Acme");
    let mfg = factory.pem();
    let mut args = vec![
        "--est",
        "--est-bootstrap-ca",
        s(&mfg),
        "--est-identity",
        IDENTITY,
        "--rate-limit",
        "off",
    ];
    args.extend_from_slice(extra);
    mutual(&[
        "ca",
        "init",
        "--dir",
        s(&tmp.join("ca")),
        "--name",
        "Fleet CA",
        "--trust-domain",
        "fleet.example",
    ])
    .ok();
    let ca = CaServe::start_new(&tmp.join("ca"), tmp.join("ca-serve.log"), &args);
    (factory, ca)
}

fn row<'a>(inv: &'a [serde_json::Value], serial: &str) -> &'a serde_json::Value {
    let serial = norm_serial(serial);
    inv.iter()
        .find(|r| norm_serial(r["serial"].as_str().unwrap()) == serial)
        .unwrap_or_else(|| panic!("no inventory row for {serial}"))
}

/// The serial after `prefix` in a row's `requested_by`, normalized.
fn by_serial(row: &serde_json::Value, prefix: &str) -> String {
    let by = row["requested_by"].as_str().unwrap();
    norm_serial(
        by.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{by} lacks {prefix}")),
    )
}

/// Checks the certificate `leaf` issued to the factory device `sn`: its URI SAN is the device's
/// SPIFFE ID, openssl verifies it for client auth, and the inventory records it as
/// enrolled with a factory certificate. Returns its serial.
fn assert_device_cert(ca: &CaServe, leaf: &Path, sn: &str) -> String {
    let san = x509(leaf, &["-ext", "subjectAltName"]);
    let id = format!("URI:spiffe://fleet.example/device/{sn}");
    assert!(san.contains(&id), "{san}");
    let v = ca.openssl_verify(leaf, "sslclient").ok();
    assert!(v.stdout.contains(": OK"), "{}", v.text());
    let serial = serial_of(leaf);
    let by = format!("est:bootstrap:{sn}");
    assert_eq!(row(&ca.inventory(), &serial)["requested_by"], by.as_str());
    serial
}

fn serial_of(pem: &Path) -> String {
    norm_serial(x509(pem, &["-serial"]).trim().split_once('=').unwrap().1)
}

#[test]
fn every_endpoint_with_curl_openssl_and_python() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (factory, ca) = est_server(t, &["--est-label", "line2=dns:{cn}-{serial}.line2.example"]);

    // cacerts: the root and the intermediate, for openssl and for Python.
    let a = get(&ca, t, "/.well-known/est/cacerts");
    let pem = print_certs(&a, &t.join("cacerts.pem"));
    assert!(
        pem.contains("subject=O = Fleet CA, CN = Fleet CA Root"),
        "{pem}"
    );
    assert!(pem.contains("CN = Fleet CA Intermediate"), "{pem}");
    let mut subjects = python_pkcs7_subjects(&a.body);
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "CN=Fleet CA Intermediate,O=Fleet CA",
            "CN=Fleet CA Root,O=Fleet CA"
        ]
    );

    // csrattrs: an EC P-256 key, ecdsa-with-SHA256, read by openssl asn1parse.
    let a = get(&ca, t, "/.well-known/est/csrattrs");
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/csrattrs")
    );
    std::fs::write(t.join("attrs.b64"), &a.body).unwrap();
    openssl_ok(&[
        "base64",
        "-d",
        "-in",
        s(&t.join("attrs.b64")),
        "-out",
        s(&t.join("attrs.der")),
    ]);
    let parsed = openssl_ok(&[
        "asn1parse",
        "-inform",
        "DER",
        "-in",
        s(&t.join("attrs.der")),
    ]);
    for oid in ["id-ecPublicKey", "prime256v1", "ecdsa-with-SHA256"] {
        assert!(parsed.contains(oid), "{parsed}");
    }

    // simpleenroll with a factory certificate: the name comes from its serialNumber.
    let (fcert, fkey) = factory.device("SN0001");
    let (key, b64) = est_csr(t, "dev1", "");
    let a = post_csr(&ca, t, ENROLL, &b64, Some((&fcert, &fkey)));
    let leaf = t.join("dev1.pem");
    let pem = print_certs(&a, &leaf);
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 1, "{pem}");
    assert_eq!(python_pkcs7_subjects(&a.body), ["CN=SN0001"]);
    let serial1 = assert_device_cert(&ca, &leaf, "SN0001");

    // simplereenroll with the issued certificate (leaf + intermediate) and a new key.
    let chain = t.join("dev1-chain.pem");
    with_intermediate(&ca, &pem, &chain);
    let (key2, b64_2) = est_csr(t, "dev1b", "URI:spiffe://fleet.example/device/SN0001");
    let a = post_csr(&ca, t, REENROLL, &b64_2, Some((&chain, &key)));
    let leaf2 = t.join("dev1-2.pem");
    print_certs(&a, &leaf2);
    let serial2 = serial_of(&leaf2);
    assert_ne!(serial1, serial2);
    let inv = ca.inventory();
    // The inventory writes the serial with its leading zero nibble (one time in 16), openssl
    // and serial_of without it: compare the serials, not the spellings.
    let by = row(&inv, &serial2)["requested_by"]
        .as_str()
        .unwrap()
        .to_string();
    let renewed_from = by
        .strip_prefix("est:reenroll:")
        .unwrap_or_else(|| panic!("requested_by {by:?}"));
    assert_eq!(norm_serial(renewed_from), serial1, "{by}");
    // The new certificate is for the new key.
    assert_eq!(pubkey_of_cert(&leaf2), pubkey_of_key(&key2));

    // A label with its own rule.
    let (fcert2, fkey2) = factory.device("SN0002");
    let (_, b64) = est_csr(t, "dev2", "");
    let a = post_csr(
        &ca,
        t,
        "/.well-known/est/line2/simpleenroll",
        &b64,
        Some((&fcert2, &fkey2)),
    );
    let leaf = t.join("dev2.pem");
    print_certs(&a, &leaf);
    let san = x509(&leaf, &["-ext", "subjectAltName"]);
    assert!(san.contains("DNS:sensor-sn0002.line2.example"), "{san}");
    get(&ca, t, "/.well-known/est/nope/cacerts").refused(404, "not_found");
    get(&ca, t, KEYGEN).refused(405, "method_not_allowed");

    // A one-time token as the HTTP Basic password (a device with no factory certificate).
    let token = ca.token(&["uri:spiffe://fleet.example/device/T1"], "1h", "client");
    let (_, b64) = est_csr(t, "tok", "");
    let user = format!("device:{token}");
    let mut args = enroll_args(&b64, None);
    args.extend(["-u".to_string(), user]);
    let a = curl(&ca, t, ENROLL, &args);
    let leaf = t.join("tok.pem");
    print_certs(&a, &leaf);
    let serial = serial_of(&leaf);
    let by = row(&ca.inventory(), &serial)["requested_by"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(by.starts_with("est:token:"), "{by}");
    // Spent: the same token again.
    curl(&ca, t, ENROLL, &args).refused(401, "token_used");

    // The log names no token.
    assert!(!ca.log_text().contains(&token));
    // Counted as EST issuances.
    let m = get(&ca, t, "/metrics").text();
    assert!(
        m.contains(r#"mutual_ca_issued_total{method="est",result="ok"} 4"#),
        "{m}"
    );
}

/// The two parts of a `serverkeygen` answer, split by Python's `email` module (a MIME parser
/// that is not ours) into `stem.key.der` (application/pkcs8) and `stem.p7` (PKCS#7); returns the
/// content types of the parts in order.
fn python_split_multipart(a: &Answer, stem: &Path) -> Vec<String> {
    let ct = a.header("content-type").unwrap();
    let o = mutual_test::output_with_stdin(
        Command::new("python3").args([
            "-c",
            "import sys, email, email.policy\n\
             ct, key_out, p7_out = sys.argv[1:4]\n\
             raw = b'Content-Type: ' + ct.encode() + b'\\r\\n\\r\\n' + sys.stdin.buffer.read()\n\
             msg = email.message_from_bytes(raw, policy=email.policy.HTTP)\n\
             assert msg.is_multipart(), 'not multipart'\n\
             for part in msg.iter_parts():\n\
             \x20   t = part.get_content_type()\n\
             \x20   print(t)\n\
             \x20   data = part.get_payload(decode=True)\n\
             \x20   out = key_out if t == 'application/pkcs8' else p7_out\n\
             \x20   open(out, 'wb').write(data)",
            &ct,
            s(&stem.with_extension("key.der")),
            s(&stem.with_extension("p7")),
        ]),
        &a.body,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A `serverkeygen` answer (200, multipart) split into its key (`stem.key.der`, PKCS#8 DER) and
/// its certificate (`stem.pem`, printed from the PKCS#7 part by openssl), checked to match:
/// (key, certificate).
fn serverkeygen_parts(a: &Answer, stem: &Path) -> (PathBuf, PathBuf) {
    assert_eq!(a.status, 200, "{}\n{}", a.headers, a.text());
    assert_eq!(
        python_split_multipart(a, stem),
        [
            "application/pkcs8",
            "application/pkcs7-mime" // smime-type is a parameter
        ]
    );
    let key_der = stem.with_extension("key.der");
    let leaf = stem.with_extension("pem");
    openssl_ok(&[
        "pkcs7",
        "-inform",
        "DER",
        "-in",
        s(&stem.with_extension("p7")),
        "-print_certs",
        "-out",
        s(&leaf),
    ]);
    assert_eq!(pubkey_of_cert(&leaf), pubkey_of_key(&key_der));
    (key_der, leaf)
}

/// Every file under `dir` (the CA's directory: inventory, WAL, log files).
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn serverkeygen_sends_the_key_and_keeps_none() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (factory, ca) = est_server(t, &[]);
    let (fcert, fkey) = factory.device("SN0700");
    // The CSR carries the request; its key is a throwaway the CA ignores (RFC 7030 §4.4.1).
    let (csr_key, b64) = est_csr(t, "kg", "");
    let a = post_csr(&ca, t, KEYGEN, &b64, Some((&fcert, &fkey)));
    assert_eq!(a.status, 200, "{}\n{}", a.headers, a.text());
    assert!(
        a.header("content-type")
            .unwrap()
            .starts_with("multipart/mixed; boundary="),
        "{}",
        a.headers
    );
    let (key_der, leaf) = serverkeygen_parts(&a, &t.join("kg"));
    // The key openssl reads from the answer is the certificate's, not the CSR's.
    assert_ne!(pubkey_of_cert(&leaf), pubkey_of_key(&csr_key));
    assert_device_cert(&ca, &leaf, "SN0700");

    // The same identity rules as simpleenroll: a name the device may not have.
    let (_, other) = est_csr(t, "kg-other", "URI:spiffe://fleet.example/device/SN9999");
    post_csr(&ca, t, KEYGEN, &other, Some((&fcert, &fkey))).refused(403, "name_not_allowed");
    // No credentials at all.
    post_csr(&ca, t, KEYGEN, &b64, None).refused(401, "no_client_cert");
    // A token pays for one generated key, once.
    let token = ca.token(&["uri:spiffe://fleet.example/device/T7"], "1h", "client");
    let mut args = enroll_args(&b64, None);
    args.extend(["-u".to_string(), format!("device:{token}")]);
    let a = curl(&ca, t, KEYGEN, &args);
    let (key_der2, _) = serverkeygen_parts(&a, &t.join("kg-token"));
    curl(&ca, t, KEYGEN, &args).refused(401, "token_used");

    // The mutual client: --server-keygen writes the CA's key, which matches its certificate.
    let (fcert2, fkey2) = factory.device("SN0701");
    let dir = t.join("dev");
    let o = mutual(&enroll_est(
        &ca.url(),
        &[
            "--server-keygen",
            "--bootstrap-cert",
            s(&fcert2),
            "--bootstrap-key",
            s(&fkey2),
            "--est-ca",
            s(&ca.root()),
        ],
        &dir,
    ))
    .ok();
    assert!(o.stdout.contains("key generated by the CA"), "{}", o.text());
    assert_eq!(
        pubkey_of_cert(&dir.join("cert.pem")),
        pubkey_of_key(&dir.join("key.pem"))
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // Never logged, never stored: neither the PKCS#8 (DER or base64) nor the private scalar
    // of any generated key is in the CA's log or anywhere in its directory (inventory, WAL).
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for k in [key_der, key_der2] {
        let der = std::fs::read(&k).unwrap();
        let text = openssl_ok(&["pkey", "-inform", "DER", "-in", s(&k), "-text", "-noout"]);
        // "priv:" then hex bytes "aa:bb:..." over several lines until "pub:".
        let hex: String = text
            .split("priv:")
            .nth(1)
            .unwrap()
            .split("pub:")
            .next()
            .unwrap()
            .chars()
            .filter(char::is_ascii_hexdigit)
            .collect();
        let mut scalar = hex::decode(&hex).unwrap();
        while scalar.len() > 32 && scalar[0] == 0 {
            scalar.remove(0);
        }
        assert_eq!(scalar.len(), 32, "{text}");
        secrets.push(base64_of(&der).replace('\n', "").into_bytes());
        secrets.push(der);
        secrets.push(hex.into_bytes());
        secrets.push(scalar);
    }
    let pem_body: String = std::fs::read_to_string(dir.join("key.pem"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    secrets.push(pem_body.into_bytes());
    let log = ca.log_text();
    let mut places = all_files(ca.d());
    places.push(t.join("ca-serve.log"));
    for p in &places {
        let bytes = std::fs::read(p).unwrap();
        for secret in &secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_slice()),
                "a generated key is in {}",
                p.display()
            );
        }
    }
    assert!(!log.is_empty());
}

/// `--est-deny-serial`: a listed factory serial is refused (`device_denied`) on simpleenroll
/// and serverkeygen; adding a serial to the file takes effect without a restart.
#[test]
fn a_denied_factory_serial_enrolls_no_more() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let deny = t.join("deny.txt");
    std::fs::write(&deny, "# retired devices\nSN0901  # stolen\n").unwrap();
    let (factory, ca) = est_server(t, &["--est-deny-serial", s(&deny)]);
    let (ok_cert, ok_key) = factory.device("SN0900");
    let (bad_cert, bad_key) = factory.device("SN0901");
    let (_, b64) = est_csr(t, "deny", "");
    let a = post_csr(&ca, t, ENROLL, &b64, Some((&ok_cert, &ok_key)));
    print_certs(&a, &t.join("ok.pem"));
    for op in ["simpleenroll", "serverkeygen"] {
        let v = post_csr(
            &ca,
            t,
            &format!("/.well-known/est/{op}"),
            &b64,
            Some((&bad_cert, &bad_key)),
        )
        .refused(403, "device_denied");
        assert!(v["detail"].as_str().unwrap().contains("SN0901"), "{v}");
    }
    // Listed later: refused from the next request on (the file is re-read when it changes).
    std::fs::write(&deny, "SN0901\nSN0900\n").unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&deny)
        .unwrap()
        .set_modified(later)
        .unwrap();
    post_csr(&ca, t, ENROLL, &b64, Some((&ok_cert, &ok_key))).refused(403, "device_denied");
    // One issuance in all.
    assert_eq!(ca.inventory().len(), 1 + ca_own_rows(&ca));
}

/// `cert pending --json`: the held EST requests.
fn pending(ca: &CaServe) -> Vec<serde_json::Value> {
    let list = mutual(&["cert", "pending", "--dir", s(ca.d()), "--json"]).ok();
    serde_json::from_str(&list.stdout).unwrap()
}

/// The id of the held request whose `cert pending` line mentions `needle`.
fn pending_id(ca: &CaServe, needle: &str) -> Option<String> {
    let o = mutual(&["cert", "pending", "--dir", s(ca.d())]);
    o.stdout
        .lines()
        .find(|l| l.contains(needle))
        .and_then(|l| l.split_whitespace().next())
        .map(str::to_string)
}

/// How many inventory rows were requested by exactly `by`.
fn issued_to(ca: &CaServe, by: &str) -> usize {
    ca.inventory()
        .iter()
        .filter(|r| r["requested_by"] == by)
        .count()
}

/// Writes `leaf_pem` followed by the CA's intermediate to `chain` (what a device presents).
fn with_intermediate(ca: &CaServe, leaf_pem: &str, chain: &Path) {
    let int = std::fs::read_to_string(ca.d().join("intermediate.pem")).unwrap();
    std::fs::write(chain, format!("{leaf_pem}{int}")).unwrap();
}

/// Rows the CA server itself has in the inventory (its own TLS certificate).
fn ca_own_rows(ca: &CaServe) -> usize {
    ca.inventory()
        .iter()
        .filter(|r| {
            !r["requested_by"]
                .as_str()
                .unwrap_or_default()
                .starts_with("est:")
        })
        .count()
}

/// Manual approval and serverkeygen: held like simpleenroll, answered with a key once; a later
/// poll gets `410 key_not_kept` (the CA kept no key to send again), and one certificate exists.
#[test]
fn serverkeygen_under_manual_approval_answers_once() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (factory, ca) = est_server(t, MANUAL);
    let args = factory.request(t, "SN0800", "kgheld");
    curl(&ca, t, KEYGEN, &args).refused(202, "pending");
    let list = pending(&ca);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["requested_by"], "est:bootstrap:SN0800");
    let id = list[0]["id"].as_str().unwrap().to_string();
    mutual(&["cert", "approve", &id, "--dir", s(ca.d())]).ok();
    serverkeygen_parts(&curl(&ca, t, KEYGEN, &args), &t.join("kgheld"));
    curl(&ca, t, KEYGEN, &args).refused(410, "key_not_kept");
    assert_eq!(issued_to(&ca, "est:bootstrap:SN0800"), 1);
}

#[test]
fn refusals_carry_the_exact_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let evil = Factory::new(t, "Evil");
    let (factory, ca) = est_server(t, &[]);
    let (fcert, fkey) = factory.device("SN0100");
    let (_, b64) = est_csr(t, "ok", "");

    // A factory certificate from a manufacturer the CA does not trust: the handshake fails
    // with the TLS alert unknown_ca (the listener only accepts our root and --est-bootstrap-ca).
    let (ecert, ekey) = evil.device("SN0100");
    let a = post_csr(&ca, t, ENROLL, &b64, Some((&ecert, &ekey)));
    assert_ne!(a.curl_code, 0);
    assert!(a.stderr.contains("unknown ca"), "{}", a.stderr);
    // The CA writes its handshake-failure line after the alert is on the wire: wait for it.
    assert!(
        eventually(Duration::from_secs(10), || ca
            .log_text()
            .contains("UnknownIssuer")
            .then_some(()))
        .is_some(),
        "{}",
        ca.log_text()
    );

    // A CSR asking for another device's name.
    let (_, other) = est_csr(t, "other", "URI:spiffe://fleet.example/device/SN9999");
    let v =
        post_csr(&ca, t, ENROLL, &other, Some((&fcert, &fkey))).refused(403, "name_not_allowed");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("may have uri:spiffe://fleet.example/device/SN0100 only"),
        "{v}"
    );

    // Malformed bodies: not base64; base64 of something that is not a PKCS#10.
    let bad = t.join("bad.b64");
    std::fs::write(&bad, "this is not base64!").unwrap();
    let v = post_csr(&ca, t, ENROLL, &bad, Some((&fcert, &fkey))).refused(400, "bad_request");
    assert!(v["detail"].as_str().unwrap().contains("not base64"), "{v}");
    std::fs::write(&bad, "MIIBADCBpwIBADAP\n").unwrap();
    let v = post_csr(&ca, t, ENROLL, &bad, Some((&fcert, &fkey))).refused(400, "bad_request");
    assert!(
        v["detail"].as_str().unwrap().contains("malformed CSR"),
        "{v}"
    );
    // A CSR whose signature does not verify (one byte of the signature flipped).
    let (_, good) = est_csr(t, "flip", "");
    let mut der = openssl_decode(&good);
    let n = der.len();
    der[n - 3] ^= 0x01;
    std::fs::write(&bad, base64_of(&der)).unwrap();
    post_csr(&ca, t, ENROLL, &bad, Some((&fcert, &fkey))).refused(400, "bad_request");

    // Wrong content type; no credentials at all.
    let a = curl(
        &ca,
        t,
        ENROLL,
        &[
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            "x",
            "--cert",
            s(&fcert),
            "--key",
            s(&fkey),
        ],
    );
    a.refused(415, "unsupported_media_type");
    let a = post_csr(&ca, t, ENROLL, &b64, None);
    a.refused(401, "no_client_cert");
    assert_eq!(
        a.header("www-authenticate").as_deref(),
        Some("Basic realm=\"mutual EST\"")
    );

    // A token that is not ours.
    let mut args = enroll_args(&b64, None);
    args.extend(["-u".into(), "device:eyJhbGciOiJFUzI1NiJ9.e30.AAAA".into()]);
    curl(&ca, t, ENROLL, &args).refused(401, "token_invalid");

    // Enroll, then: our own certificate is not a factory certificate; a factory certificate
    // cannot re-enroll; the revoked device cannot re-enroll.
    let a = post_csr(&ca, t, ENROLL, &b64, Some((&fcert, &fkey)));
    let leaf = t.join("dev.pem");
    let pem = print_certs(&a, &leaf);
    let chain = t.join("chain.pem");
    with_intermediate(&ca, &pem, &chain);
    let key = t.join("ok.key");
    let (_, b64b) = est_csr(t, "next", "");
    post_csr(&ca, t, ENROLL, &b64b, Some((&chain, &key))).refused(403, "unknown_ca");
    post_csr(&ca, t, REENROLL, &b64b, Some((&fcert, &fkey))).refused(403, "unknown_ca");
    post_csr(&ca, t, REENROLL, &b64b, None).refused(401, "no_client_cert");
    // Re-enrollment may not add a name.
    let (_, more) = est_csr(
        t,
        "more",
        "URI:spiffe://fleet.example/device/SN0100,DNS:extra.example",
    );
    post_csr(&ca, t, REENROLL, &more, Some((&chain, &key))).refused(403, "name_not_allowed");
    let serial = serial_of(&leaf);
    mutual(&["cert", "revoke", &serial, "--dir", s(ca.d())]).ok();
    let v = post_csr(&ca, t, REENROLL, &b64b, Some((&chain, &key))).refused(403, "revoked");
    assert!(v["detail"].as_str().unwrap().contains(&serial), "{v}");
}

fn openssl_decode(b64: &Path) -> Vec<u8> {
    let der = b64.with_extension("decoded");
    openssl_ok(&["base64", "-d", "-in", s(b64), "-out", s(&der)]);
    std::fs::read(der).unwrap()
}

fn base64_of(der: &[u8]) -> String {
    let o = mutual_test::output_with_stdin(Command::new("openssl").arg("base64"), der);
    String::from_utf8(o.stdout).unwrap()
}

/// `--renew-grace`: an expired certificate re-enrolls (EST) and renews (`/v1/renew`) within the
/// grace, recorded as such; not without a grace, not beyond it.
#[test]
fn renewal_grace_after_expiry() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dir = t.join("ca");
    mutual(&["ca", "init", "--dir", s(&dir), "--name", "Fleet CA"]).ok();
    let out = t.join("out");
    std::fs::create_dir(&out).unwrap();
    for name in ["a", "b", "c"] {
        mutual(&[
            "cert",
            "issue",
            name,
            "--dir",
            s(&dir),
            "--out",
            s(&out),
            "--client",
            "--san",
            &format!("uri:spiffe://fleet.example/device/{name}"),
            "--ttl",
            "1s",
        ])
        .ok();
    }
    let expired = |p: &Path| openssl(&["x509", "-in", s(p), "-noout", "-checkend", "0"]).code == 1;
    // Wait (an event, not a timed assertion) until all three have expired.
    assert!(eventually(Duration::from_secs(30), || {
        ["a", "b", "c"]
            .iter()
            .all(|n| expired(&out.join(format!("{n}.pem"))))
            .then_some(())
    })
    .is_some());
    let cert = |n: &str| out.join(format!("{n}.pem"));
    let key = |n: &str| out.join(format!("{n}.key"));
    let (_, b64) = est_csr(t, "csr", "");

    // No grace (the default): refused as expired, on both doors.
    let strict = CaServe::start_new(
        &dir,
        t.join("strict.log"),
        &["--est", "--rate-limit", "off"],
    );
    let v =
        post_csr(&strict, t, REENROLL, &b64, Some((&cert("a"), &key("a")))).refused(403, "expired");
    assert!(!v["detail"].as_str().unwrap().contains("grace"), "{v}");
    let renew = |ca: &CaServe, n: &str| {
        curl(
            ca,
            t,
            "/v1/renew",
            &["-X", "POST", "--cert", s(&cert(n)), "--key", s(&key(n))],
        )
    };
    renew(&strict, "a").refused(403, "expired");
    drop(strict);

    // Within a one-hour grace: both doors renew, and the inventory says so.
    let lenient = CaServe::start_new(
        &dir,
        t.join("lenient.log"),
        &["--est", "--rate-limit", "off", "--renew-grace", "1h"],
    );
    let a = post_csr(&lenient, t, REENROLL, &b64, Some((&cert("a"), &key("a"))));
    let new_a = t.join("a2.pem");
    print_certs(&a, &new_a);
    let a_serial = serial_of(&cert("a"));
    let b_serial = serial_of(&cert("b"));
    let r = renew(&lenient, "b");
    assert_eq!(r.status, 201, "{}", r.text());
    let renewed: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let inv = lenient.inventory();
    assert_eq!(
        by_serial(row(&inv, &serial_of(&new_a)), "est:reenroll-grace:"),
        a_serial
    );
    assert_eq!(
        by_serial(
            row(&inv, renewed["serial"].as_str().unwrap()),
            "renew-grace:"
        ),
        b_serial
    );
    // `mutual renew` (the native client) too: it sends the expired certificate, the CA renews.
    let o = renew_at(
        &lenient.url(),
        &cert("a"),
        &key("a"),
        &["--ca", s(&lenient.root())],
    )
    .ok();
    assert!(o.stdout.contains("renewed"), "{}", o.text());
    assert_eq!(
        by_serial(
            row(&lenient.inventory(), &serial_of(&cert("a"))),
            "renew-grace:"
        ),
        a_serial
    );
    // A recorded name the CA has since stopped issuing (an address as a dNSName, as an older
    // version issued it: the row rewritten here) is name_not_allowed, not 500 internal.
    let c_serial = serial_of(&cert("c"));
    let sql = r#"UPDATE certificates SET sans='["dns:10.0.0.1"]'
                 WHERE ltrim(serial, '0') = ltrim(?, '0')"#;
    update_inventory_row(&dir, sql, &[&c_serial]);
    let v = post_csr(&lenient, t, REENROLL, &b64, Some((&cert("c"), &key("c"))))
        .refused(403, "name_not_allowed");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("names dns:10.0.0.1, which this CA no longer issues"),
        "{v}"
    );
    // Never after revocation, grace or not.
    mutual(&["cert", "revoke", &c_serial, "--dir", s(&dir)]).ok();
    post_csr(&lenient, t, REENROLL, &b64, Some((&cert("c"), &key("c")))).refused(403, "revoked");
    drop(lenient);

    // Beyond a one-second grace: refused, and the refusal names the grace.
    let short = CaServe::start_new(
        &dir,
        t.join("short.log"),
        &["--est", "--rate-limit", "off", "--renew-grace", "1s"],
    );
    let not_after = |p: &Path| {
        let d = x509(p, &["-enddate"]);
        let o = Command::new("date")
            .args(["-u", "+%s", "-d", d.trim().split_once('=').unwrap().1])
            .output()
            .unwrap();
        String::from_utf8(o.stdout)
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    let a_end = not_after(&cert("a"));
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    assert!(eventually(Duration::from_secs(30), || (now() > a_end + 2)
        .then_some(()))
    .is_some());
    let v =
        post_csr(&short, t, REENROLL, &b64, Some((&cert("a"), &key("a")))).refused(403, "expired");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("beyond the renewal grace of 1 s"),
        "{v}"
    );
    renew(&short, "a").refused(403, "expired");
}

#[test]
fn flags_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    mutual(&["ca", "init", "--dir", s(&dir), "--name", "Fleet CA"]).ok();
    let f = Factory::new(tmp.path(), "Acme");
    let run = |extra: &[&str]| {
        let mut a = vec!["ca", "serve", "--dir", s(&dir), "--listen", "127.0.0.1:0"];
        a.extend_from_slice(extra);
        mutual_within(&a, Duration::from_secs(20))
    };
    run(&["--renew-grace", "31d"]).fails_with("longer than the limit of 30 d");
    run(&["--est", "--est-bootstrap-ca", s(&f.pem())])
        .fails_with("--est-bootstrap-ca needs --est-identity");
    run(&[
        "--est",
        "--est-deny-serial",
        s(&tmp.path().join("no-such-file")),
    ])
    .fails_with("--est-deny-serial")
    .fails_with("no-such-file");
    run(&["--est", "--est-identity", "spiffe://fleet.example/device"])
        .fails_with("has no {serial} or {cn}");
    // Templates whose every name the CA would refuse: at start, not at each enrollment.
    let strict = tmp.path().join("strict");
    mutual(&[
        "ca",
        "init",
        "--dir",
        s(&strict),
        "--name",
        "Strict CA",
        "--trust-domain",
        "fleet.example",
        "--permitted-dns",
        "devices.example",
    ])
    .ok();
    let on_strict = |extra: &[&str]| {
        let mut a = vec![
            "ca",
            "serve",
            "--dir",
            s(&strict),
            "--listen",
            "127.0.0.1:0",
            "--est",
        ];
        a.extend_from_slice(extra);
        mutual_within(&a, Duration::from_secs(20))
    };
    on_strict(&["--est-identity", "spiffe://other.example/device/{serial}"]).fails_with(
        "--est-identity spiffe://other.example/device/{serial}: its SPIFFE IDs are in \
         other.example, outside this CA's trust domain fleet.example",
    );
    on_strict(&["--est-label", "line=dns:{serial}.line.example"]).fails_with(
        "--est-label dns:{serial}.line.example: its names end in .line.example, outside this \
         CA's name constraints (permitted_dns: devices.example)",
    );
    // A setting of a front door that is off would set nothing: refused, not ignored.
    run(&["--est-ttl", "1h"]).fails_with("required arguments were not provided:\n  --est");
    run(&["--est", "--est-retry-after", "5"])
        .fails_with("required arguments were not provided:\n  --est-approval");
    run(&["--est", "--est-approval", "auto", "--est-retry-after", "5"])
        .fails_with("--est-retry-after is what a device held for approval is told");
    for flag in ["--ocsp-next-update", "--ocsp-responder-ttl"] {
        run(&[flag, "2h"]).fails_with("not provided:\n  <--ocsp|--ocsp-listen <ADDR:PORT>>");
    }
    // The client's EST flags beside --ca-url (the other protocol) are refused, not ignored:
    // clap waives `requires = "est"` when --est conflicts with a present --ca-url (clap#4520).
    let fp = "00".repeat(32);
    let enroll = |flag: &[&str]| {
        let mut a = vec!["enroll", "--ca-url", "https://127.0.0.1:1", "--token", "t"];
        a.extend(["--root-sha256", &fp, "--out", s(tmp.path())]);
        a.extend_from_slice(flag);
        mutual_within(&a, Duration::from_secs(20))
    };
    enroll(&["--est-ca", s(&f.pem())]).fails_with("cannot be used with '--est-ca <FILE>'");
    enroll(&["--est-label", "line"]).fails_with("cannot be used with '--est-label <LABEL>'");
    enroll(&["--server-keygen"]).fails_with("cannot be used with '--server-keygen'");
    enroll(&["--est-wait", "1m"]).fails_with("cannot be used with '--est-wait <DURATION>'");
    // The CA generates a --server-keygen key of its own default type: --key-type would be
    // ignored.
    let est_url = "https://127.0.0.1:1";
    let keygen = [
        "enroll",
        "--est",
        est_url,
        "--server-keygen",
        "--token",
        "t",
    ];
    let o = mutual_within(
        &[
            &keygen[..],
            &["--est-ca", s(&f.pem()), "--out", s(tmp.path())],
        ]
        .concat(),
        Duration::from_secs(20),
    );
    assert_eq!(o.code, 1, "without --key-type it gets as far as the CA");
    mutual_within(
        &[
            &keygen[..],
            &["--key-type", "ed25519", "--out", s(tmp.path())],
        ]
        .concat(),
        Duration::from_secs(20),
    )
    .fails_with("'--server-keygen' cannot be used with '--key-type <TYPE>'");
    let pem = f.pem();
    let renew = [
        "renew",
        "--ca-url",
        "https://127.0.0.1:1",
        "--cert",
        s(&pem),
        "--key",
        "k",
    ];
    mutual_within(
        &[&renew[..], &["--est-label", "line"]].concat(),
        Duration::from_secs(20),
    )
    .fails_with("cannot be used with '--est-label <LABEL>'");
}

/// A fleet of devices (Python, bounded concurrency) enrolls with factory certificates and then
/// re-enrolls: every device ends with a certificate for its own name, the inventory has one row
/// per issuance, no serial twice. bench/est.sh runs the same script with 10,000 devices and
/// reports the rate; here only the outcome is asserted.
#[test]
fn a_fleet_enrolls_and_reenrolls() {
    let n: usize = std::env::var("MUTUAL_EST_FLEET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (factory, ca) = est_server(t, &[]);
    let out = t.join("fleet.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/est/fleet.py");
    let o = Command::new(python())
        .arg(&script)
        .args([
            &ca.url(),
            s(&ca.root()),
            s(&factory.pem()),
            s(&factory.dir.join("mfg.key")),
            &n.to_string(),
            "8",
            s(&out),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", mutual_test::output_text(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(
        r["failures"].as_array().unwrap().len(),
        0,
        "{}",
        r["failures"]
    );
    let enrolled: Vec<String> = r["enrolled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| norm_serial(v.as_str().unwrap()))
        .collect();
    let reenrolled: Vec<String> = r["reenrolled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| norm_serial(v.as_str().unwrap()))
        .collect();
    assert_eq!((enrolled.len(), reenrolled.len()), (n, n));
    let mut all: Vec<&String> = enrolled.iter().chain(&reenrolled).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 2 * n, "a serial was issued twice");
    // Each device's name is its own.
    for (sn, names) in r["names"].as_object().unwrap() {
        assert_eq!(
            names[0],
            format!("spiffe://fleet.example/device/{sn}").as_str()
        );
    }
    // The inventory: one row per issuance, each recorded with who asked.
    let inv = ca.inventory();
    let by = |prefix: &str| {
        inv.iter()
            .filter(|r| {
                r["requested_by"]
                    .as_str()
                    .is_some_and(|b| b.starts_with(prefix))
            })
            .map(|r| norm_serial(r["serial"].as_str().unwrap()))
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(by("est:bootstrap:"), enrolled.iter().cloned().collect());
    assert_eq!(by("est:reenroll:"), reenrolled.iter().cloned().collect());
}

/// The device side in the binary: `mutual enroll --est` with a factory certificate (root pinned
/// against cacerts) or a token, `mutual renew --est`, `--daemon` re-enrolling before expiry, and
/// its refusals (wrong pin, untrusted manufacturer, revoked).
#[test]
fn enroll_and_renew_with_the_est_client() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let evil = Factory::new(t, "Evil");
    let (factory, ca) = est_server(t, &["--est-ttl", "9s"]);
    let url = ca.url();
    let fp = ca.fingerprint();
    let (fcert, fkey) = factory.device("SN0500");
    let dir = t.join("dev");
    let o = mutual(&enroll_est(
        &url,
        &[
            "--bootstrap-cert",
            s(&fcert),
            "--bootstrap-key",
            s(&fkey),
            "--root-sha256",
            &fp,
            "--key-type",
            "ecdsa-p384",
        ],
        &dir,
    ))
    .ok();
    assert!(
        o.stdout
            .contains("uri:spiffe://fleet.example/device/SN0500"),
        "{}",
        o.text()
    );
    let cert = dir.join("cert.pem");
    let v = openssl(&[
        "verify",
        "-CAfile",
        s(&dir.join("root.pem")),
        "-untrusted",
        s(&cert),
        s(&cert),
    ]);
    assert!(v.stdout.contains(": OK"), "{}", v.text());
    let first = serial_of(&cert);
    assert_eq!(
        row(&ca.inventory(), &first)["requested_by"],
        "est:bootstrap:SN0500"
    );

    // renew --est: a new key and certificate, recorded as a re-enrollment of the first.
    let key = dir.join("key.pem");
    let key_before = std::fs::read(&key).unwrap();
    // --exec runs after an EST re-enrollment as after a native renewal (it was ignored).
    let hooks = t.join("hooks.log");
    let hook = format!("echo \"$MUTUAL_SERIAL\" >> {}", s(&hooks));
    let renew = ["renew", "--est", &url, "--cert", s(&cert), "--key", s(&key)];
    let o = mutual(&[&renew[..], &["--exec", &hook]].concat()).ok();
    assert!(o.stdout.contains("new key"), "{}", o.text());
    assert!(o.stdout.contains("exec  exit status 0"), "{}", o.text());
    let second = serial_of(&cert);
    let hooked = || std::fs::read_to_string(&hooks).unwrap_or_default();
    assert_eq!(hooked().trim(), second);
    assert_ne!(first, second);
    assert_ne!(std::fs::read(&key).unwrap(), key_before);
    // The new key is of the current one's kind (P-384 here; it used to be P-256 always).
    let text = x509(&cert, &["-text"]);
    assert!(text.contains("(384 bit)"), "{text}");
    assert_eq!(
        by_serial(row(&ca.inventory(), &second), "est:reenroll:"),
        first
    );

    // --daemon re-enrolls at two-thirds of the 9 s lifetime: wait for the file to change.
    let mut daemon = mutual_test::ChildGuard(
        mutual_cmd(
            None,
            &[
                "renew",
                "--est",
                &url,
                "--cert",
                s(&cert),
                "--key",
                s(&key),
                "--daemon",
                "--exec",
                &hook,
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap(),
    );
    let third = eventually(Duration::from_secs(60), || {
        if let Ok(Some(st)) = daemon.0.try_wait() {
            panic!("renew --daemon exited: {st}");
        }
        let s3 = std::fs::read_to_string(&cert)
            .ok()
            .filter(|p| p.contains("END CERTIFICATE"))
            .map(|_| serial_of(&cert))?;
        (s3 != second).then_some(s3)
    })
    .expect("the daemon did not re-enroll");
    // The hook runs after the new files are in place: wait for its line.
    eventually(Duration::from_secs(10), || {
        hooked()
            .lines()
            .any(|l| norm_serial(l) == third)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no --exec line for {third}: {}", hooked()));
    drop(daemon);
    assert_eq!(
        by_serial(row(&ca.inventory(), &third), "est:reenroll:"),
        second
    );

    // A token instead of a factory certificate, the root from a file.
    let token = ca.token(&["uri:spiffe://fleet.example/device/T9"], "1h", "client");
    let tdir = t.join("tok");
    let o = mutual(&enroll_est(
        &url,
        &["--token", &token, "--est-ca", s(&ca.root()), "--json"],
        &tdir,
    ))
    .ok();
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        v["sans"],
        serde_json::json!(["uri:spiffe://fleet.example/device/T9"])
    );
    // json.md's form keeps whole bytes (a leading 0 digit); serial_of strips it.
    assert_eq!(
        norm_serial(v["serial"].as_str().unwrap()),
        serial_of(&tdir.join("cert.pem"))
    );
    assert_eq!(
        (v["protocol"].as_str(), v["key_generated_by"].as_str()),
        (Some("est"), Some("here"))
    );
    assert_eq!(v["ca_url"], url.as_str());
    let o = mutual(&enroll_est(
        &url,
        &["--token", &token, "--est-ca", s(&ca.root())],
        &t.join("tok2"),
    ))
    .fails_code(1, "token_used");
    assert!(!o.stderr.contains(&token));

    // Refusals: a pin that is not the CA's root (nothing sent), an untrusted manufacturer, a
    // revoked device re-enrolling.
    let wrong = "00".repeat(32);
    mutual(&enroll_est(
        &url,
        &[
            "--bootstrap-cert",
            s(&fcert),
            "--bootstrap-key",
            s(&fkey),
            "--root-sha256",
            &wrong,
        ],
        &t.join("x"),
    ))
    .fails_code(1, "does not serve a root with SHA-256 fingerprint");
    let (ecert, ekey) = evil.device("SN0500");
    mutual(&enroll_est(
        &url,
        &[
            "--bootstrap-cert",
            s(&ecert),
            "--bootstrap-key",
            s(&ekey),
            "--root-sha256",
            &fp,
        ],
        &t.join("y"),
    ))
    .fails_code(1, "(unknown_ca)");
    mutual(&["cert", "revoke", &serial_of(&cert), "--dir", s(ca.d())]).ok();
    mutual(&["renew", "--est", &url, "--cert", s(&cert), "--key", s(&key)])
        .fails_code(1, "revoked (HTTP 403)");
    // Usage: --est without a way to trust the CA.
    mutual(&enroll_est(
        &url,
        &["--bootstrap-cert", s(&fcert), "--bootstrap-key", s(&fkey)],
        &t.join("z"),
    ))
    .fails_with("--root-sha256 FINGERPRINT or --est-ca");
    // A CA that is not there: the hint names the flag that named it (--est, not --ca-url).
    let gone = format!("https://127.0.0.1:{}", mutual_test::free_port());
    let o = mutual(&enroll_est(
        &gone,
        &["--token", &token, "--est-ca", s(&ca.root()), "--json"],
        &t.join("gone"),
    ))
    .fails_code(1, "");
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["error"]["reason"], "unreachable", "{v}");
    assert!(
        v["error"]["hint"]
            .as_str()
            .unwrap()
            .starts_with("check --est "),
        "{v}"
    );
}

/// `--est-approval manual`: a request waits in the store (202 + Retry-After) until
/// `mutual cert approve`; the device polls with the same CSR and gets its certificate, and the
/// same one again on a later poll; a rejected request is refused; a decision is made once.
#[test]
fn manual_approval_holds_requests_until_an_operator_decides() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (factory, ca) = est_server(t, MANUAL);
    let args = factory.request(t, "SN0700", "held");
    let a = curl(&ca, t, ENROLL, &args);
    let v = a.refused(202, "pending");
    assert_eq!(a.header("retry-after").as_deref(), Some("1"));
    assert!(
        v["detail"].as_str().unwrap().contains("waits for approval"),
        "{v}"
    );
    // Polling with the same CSR finds the same request.
    curl(&ca, t, ENROLL, &args).refused(202, "pending");
    let list = pending(&ca);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["requested_by"], "est:bootstrap:SN0700");
    // docs/json.md's forms: names as an array, instants in RFC 3339 and Unix seconds.
    assert_eq!(
        list[0]["names"],
        serde_json::json!(["uri:spiffe://fleet.example/device/SN0700"])
    );
    assert_eq!(
        list[0]["created_at"],
        mutual_policy::human::rfc3339(list[0]["created_at_unix"].as_i64().unwrap()).as_str()
    );
    assert_eq!(
        (&list[0]["status"], &list[0]["decided_at"]),
        (&serde_json::json!("pending"), &serde_json::Value::Null)
    );
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(issued_to(&ca, "est:bootstrap:SN0700"), 0);

    let o = mutual(&["cert", "approve", &id, "--dir", s(ca.d()), "--json"]).ok();
    let decided: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        (&decided["id"], &decided["status"]),
        (&serde_json::json!(id), &serde_json::json!("approved")),
        "{decided}"
    );
    assert!(decided["decided_at_unix"].is_i64(), "{decided}");
    assert!(
        decided["decided_by"].as_str().unwrap().starts_with("cli"),
        "{decided}"
    );
    let leaf = t.join("held.pem");
    print_certs(&curl(&ca, t, ENROLL, &args), &leaf);
    let serial = serial_of(&leaf);
    // A later poll: the same certificate, nothing issued twice.
    let again = t.join("again.pem");
    print_certs(&curl(&ca, t, ENROLL, &args), &again);
    assert_eq!(serial_of(&again), serial);
    assert_eq!(issued_to(&ca, "est:bootstrap:SN0700"), 1);
    // Decided once: approving or rejecting it again fails (exit 1, as text or as JSON).
    mutual(&["cert", "reject", &id, "--dir", s(ca.d())]).fails_code(1, "is issued, not pending");
    let o = mutual(&["cert", "reject", &id, "--dir", s(ca.d()), "--json"]).fails_code(1, "");
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["error"]["reason"], "not_pending", "{v}");
    let all = mutual(&["cert", "pending", "--all", "--dir", s(ca.d()), "--json"]).ok();
    let all: Vec<serde_json::Value> = serde_json::from_str(&all.stdout).unwrap();
    // The inventory's form (json.md: no leading 00 byte; a leading 0 digit stays): compared
    // with openssl's serial the same way.
    assert_eq!(
        norm_serial(all[0]["serial"].as_str().unwrap()),
        serial,
        "{all:?}"
    );

    // Rejected: the next poll is refused.
    let args = factory.request(t, "SN0701", "held2");
    curl(&ca, t, ENROLL, &args).refused(202, "pending");
    let id2 = pending_id(&ca, "SN0701").unwrap();
    mutual(&["cert", "reject", &id2, "--dir", s(ca.d())]).ok();
    curl(&ca, t, ENROLL, &args).refused(403, "rejected");
    let o = mutual(&["cert", "approve", &id2, "--dir", s(ca.d())]);
    assert_eq!(o.code, 1, "{}", o.text());
    mutual(&["cert", "approve", "0000000000000000", "--dir", s(ca.d())])
        .fails_code(1, "no EST request");
    let o = mutual(&[
        "cert",
        "approve",
        "0000000000000000",
        "--dir",
        s(ca.d()),
        "--json",
    ])
    .fails_code(1, "");
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["error"]["reason"], "not_found", "{v}");

    // The binary's client polls with the same CSR until the operator approves.
    let (fcert3, fkey3) = factory.device("SN0702");
    let dir = t.join("dev702");
    let root = ca.root();
    let mut child = mutual_test::ChildGuard(
        mutual_cmd(
            None,
            &enroll_est(
                &ca.url(),
                &[
                    "--bootstrap-cert",
                    s(&fcert3),
                    "--bootstrap-key",
                    s(&fkey3),
                    "--est-ca",
                    s(&root),
                    "--est-wait",
                    "5m",
                ],
                &dir,
            ),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap(),
    );
    let id3 = eventually(Duration::from_secs(60), || pending_id(&ca, "SN0702"))
        .expect("the client's request never arrived");
    mutual(&["cert", "approve", &id3, "--dir", s(ca.d())]).ok();
    let st = eventually(Duration::from_secs(120), || child.0.try_wait().unwrap())
        .expect("enroll --est-wait did not finish after the approval");
    assert!(st.success(), "{st}");
    let san = x509(&dir.join("cert.pem"), &["-ext", "subjectAltName"]);
    assert!(
        san.contains("spiffe://fleet.example/device/SN0702"),
        "{san}"
    );
}

/// `mutual agent --est` (issue 22, node enrollment): a node with only its factory certificate
/// enrolls over EST at its first start (the CA's --est-identity names it), writes its node
/// certificate, key and root where --cert/--key/--ca say, and serves the Workload API with
/// that identity.
#[test]
fn an_agent_enrolls_its_node_over_est_with_a_factory_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (factory, ca) = est_server(t, &[]);
    let (fcert, fkey) = factory.device("SN0900");
    let node = t.join("node");
    let (sock, cert, key) = (
        node.join("run/agent.sock"),
        node.join("n.pem"),
        node.join("n.key"),
    );
    let url = ca.url();
    let root = ca.root();
    let mut c = mutual_cmd(
        None,
        &[
            "agent",
            "--est",
            &url,
            "--bootstrap-cert",
            s(&fcert),
            "--bootstrap-key",
            s(&fkey),
            "--est-ca",
            s(&root),
            "--socket",
            s(&sock),
            "--cert",
            s(&cert),
            "--key",
            s(&key),
            "--ca",
            s(&node.join("root.pem")),
        ],
    );
    let log = t.join("agent.log");
    let _agent = mutual_test::spawn_logged(&mut c, &log);
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let up = eventually(Duration::from_secs(60), || {
        std::os::unix::net::UnixStream::connect(&sock)
            .is_ok()
            .then_some(())
    });
    assert!(up.is_some(), "the agent did not listen:\n{}", text());
    assert!(
        text().contains("node enrolled over EST: serial "),
        "{}",
        text()
    );
    assert!(
        text().contains("serving the SPIFFE Workload API")
            && text().contains("node=spiffe://fleet.example/device/SN0900"),
        "{}",
        text()
    );
    assert_eq!(issued_to(&ca, "est:bootstrap:SN0900"), 1);
    assert_eq!(pubkey_of_cert(&cert), pubkey_of_key(&key));
    assert!(std::fs::read_dir(&node).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".est-enroll")));

    // A node without a factory certificate: a one-time token over EST, the root pinned by its
    // fingerprint (nothing to trust yet on the node); the root is written to --ca.
    let node2 = t.join("node2");
    let token = ca.token(&["uri:spiffe://fleet.example/node/T1"], "1h", "client");
    let mut c = mutual_cmd(
        None,
        &[
            "agent",
            "--est",
            &url,
            "--token",
            &token,
            "--root-sha256",
            &ca.fingerprint(),
            "--socket",
            s(&node2.join("agent.sock")),
            "--cert",
            s(&node2.join("n.pem")),
            "--key",
            s(&node2.join("n.key")),
            "--ca",
            s(&node2.join("root.pem")),
        ],
    );
    let log2 = t.join("agent2.log");
    let _agent2 = mutual_test::spawn_logged(&mut c, &log2);
    let text2 = || std::fs::read_to_string(&log2).unwrap_or_default();
    let up = eventually(Duration::from_secs(60), || {
        std::os::unix::net::UnixStream::connect(node2.join("agent.sock"))
            .is_ok()
            .then_some(())
    });
    assert!(up.is_some(), "the agent did not listen:\n{}", text2());
    assert!(
        text2().contains("node=spiffe://fleet.example/node/T1"),
        "{}",
        text2()
    );
    assert!(!text2().contains(&token), "the token leaked into the log");
    assert_eq!(
        std::fs::read(node2.join("root.pem")).unwrap(),
        std::fs::read(&root).unwrap()
    );
    // Neither a factory certificate nor a token: said, exit 2.
    let o = mutual(&[
        "agent",
        "--est",
        &url,
        "--est-ca",
        s(&root),
        "--socket",
        s(&t.join("n3.sock")),
        "--cert",
        s(&t.join("n3.pem")),
        "--key",
        s(&t.join("n3.key")),
        "--ca",
        s(&root),
    ]);
    o.fails_with(
        "a factory certificate (--bootstrap-cert and --bootstrap-key) or a token (--token)",
    );
}
