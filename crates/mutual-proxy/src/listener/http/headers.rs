//! The header work of HTTP mode, kept apart from the I/O so each rule can be tested alone:
//! removing identity headers a client tried to supply, removing hop-by-hop fields (RFC 9110
//! section 7.6.1), and writing the verified identity in Envoy's `X-Forwarded-Client-Cert` format
//! and as RFC 9440 `Client-Cert`/`Client-Cert-Chain` structured-field byte sequences.

use base64::Engine;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION};
use mutual_policy::{CertNames, Identity};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Headers that carry a client identity. Whatever the client sent under these names is removed
/// before forwarding, in every `--forward-client-cert` mode (`none` too): a backend must never
/// mistake a header a client wrote for one the proxy vouches for. Names are case-insensitive;
/// `HeaderMap` stores them lowercased, and `remove` drops every copy.
pub const IDENTITY_HEADERS: [&str; 3] = [
    "x-forwarded-client-cert",
    "client-cert",
    "client-cert-chain",
];

/// Connection-specific fields (RFC 9110 section 7.6.1, plus the non-standard
/// `proxy-connection`): they describe one hop and are never forwarded.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// Which identity headers the backend receives (`--forward-client-cert` / `forward_client_cert`:
/// the variants' names, lowercase, are the values).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForwardClientCert {
    /// `X-Forwarded-Client-Cert` (Envoy's format).
    #[default]
    Xfcc,
    /// `Client-Cert` and `Client-Cert-Chain` (RFC 9440).
    Rfc9440,
    Both,
    /// No identity header (client-sent copies are still removed).
    None,
}

impl ForwardClientCert {
    pub fn xfcc(self) -> bool {
        matches!(self, ForwardClientCert::Xfcc | ForwardClientCert::Both)
    }
    pub fn rfc9440(self) -> bool {
        matches!(self, ForwardClientCert::Rfc9440 | ForwardClientCert::Both)
    }
}

/// Optional, larger XFCC elements (Envoy's `set_current_client_cert_details` `cert`/`chain`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XfccDetails {
    /// `Cert="<URL-encoded PEM of the client's certificate>"`.
    pub cert: bool,
    /// `Chain="<URL-encoded PEM of the chain the client sent, its certificate first>"`.
    pub chain: bool,
}

impl std::str::FromStr for XfccDetails {
    type Err = String;
    /// A comma-separated list of `cert`, `chain` (empty: neither).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut d = XfccDetails::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item {
                "cert" => d.cert = true,
                "chain" => d.chain = true,
                other => {
                    return Err(format!(
                        "unknown client certificate detail {other:?}: expected cert or chain"
                    ))
                }
            }
        }
        Ok(d)
    }
}

/// Headers the proxy sets itself (besides the identity headers): a spelling of one of these
/// with `_` instead of `-` is stripped too, since CGI/WSGI backends would read it as the real one.
const SET_BY_PROXY: [&str; 2] = ["x-forwarded-for", "x-forwarded-proto"];

/// Whether `name` names `folded_name` as CGI, WSGI, PHP and Rack see names: case folded and
/// `_` read as `-` (`X_Forwarded_Client_Cert` and `x-forwarded-client-cert` both become
/// `HTTP_X_FORWARDED_CLIENT_CERT`). `folded_name` is lowercase with `-`; compared byte by byte,
/// without building the folded spelling (this runs for every header of every request).
fn folds_to(name: &str, folded_name: &str) -> bool {
    name.len() == folded_name.len()
        && name
            .bytes()
            .zip(folded_name.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

/// Removes the identity headers a client sent (every copy, any case, any spelling that folds
/// to one of them once `_` is read as `-`), and underscore spellings of the other headers the
/// proxy sets. Strip rather than refuse: the request is served, and the backend sees only what
/// the proxy vouches for (nginx drops underscore headers the same way by default).
pub fn strip_identity_headers(h: &mut HeaderMap) {
    let doomed = |n: &HeaderName| {
        let n = n.as_str();
        IDENTITY_HEADERS.iter().any(|f| folds_to(n, f))
            || (n.contains('_') && SET_BY_PROXY.iter().any(|f| folds_to(n, f)))
    };
    // Nearly every request has none: look before collecting (no allocation then).
    if !h.keys().any(doomed) {
        return;
    }
    let names: Vec<HeaderName> = h.keys().filter(|n| doomed(n)).cloned().collect();
    for name in names {
        h.remove(name);
    }
}

/// Removes hop-by-hop fields, including every field the `Connection` header names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Runs on every request and response, and most carry none: one pass over the names present
    // is much cheaper than parsing and hashing each name of the list for a removal.
    if !h.keys().any(|k| HOP_BY_HOP.contains(&k.as_str())) {
        return;
    }
    let named: Vec<HeaderName> = h
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        // `Connection: host` must not make a request lose its Host.
        .filter(|n| n != hyper::header::HOST)
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}

/// Characters Envoy leaves unencoded in `Cert=`/`Chain=` (RFC 3986 unreserved).
const URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

/// A value as XFCC writes it: bare, or double-quoted with `"` and `\` escaped when it holds a
/// character that separates elements (`,`), pairs (`;`) or key from value (`=`).
fn xfcc_value(v: &str) -> String {
    if v.contains([',', ';', '=', '"', '\\']) {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        v.to_string()
    }
}

/// One XFCC element for the verified client, in Envoy's key order:
/// `Hash=<sha256 hex>[;Cert="<pem>"][;Chain="<pem>"];Subject="<RFC 4514>";URI=<uri>...;DNS=<dns>...`.
/// `Subject` is always quoted (its RFC 4514 escaping already protects `"`), `URI=` appears
/// (empty) even when the certificate has no URI SAN, as Envoy does.
pub fn xfcc(id: &Identity, names: &CertNames, chain: &[&[u8]], details: XfccDetails) -> String {
    let mut parts = vec![format!("Hash={}", id.sha256)];
    if details.cert {
        if let Some(leaf) = chain.first() {
            parts.push(format!(
                "Cert=\"{}\"",
                utf8_percent_encode(&pem(leaf), URL_ENCODE)
            ));
        }
    }
    if details.chain && !chain.is_empty() {
        let all: String = chain.iter().map(|c| pem(c)).collect();
        parts.push(format!(
            "Chain=\"{}\"",
            utf8_percent_encode(&all, URL_ENCODE)
        ));
    }
    parts.push(format!("Subject=\"{}\"", names.subject));
    if names.uris.is_empty() {
        parts.push("URI=".into());
    }
    for u in &names.uris {
        parts.push(format!("URI={}", xfcc_value(u)));
    }
    for d in &id.dns {
        parts.push(format!("DNS={}", xfcc_value(d)));
    }
    parts.join(";")
}

/// RFC 9440 `Client-Cert`: the certificate's DER as a structured-field byte sequence.
pub fn client_cert(leaf: &[u8]) -> String {
    format!(
        ":{}:",
        base64::engine::general_purpose::STANDARD.encode(leaf)
    )
}

/// RFC 9440 `Client-Cert-Chain`: the certificates the client sent after its own, as a list of
/// byte sequences; `None` when it sent none.
pub fn client_cert_chain(rest: &[&[u8]]) -> Option<String> {
    if rest.is_empty() {
        return None;
    }
    Some(
        rest.iter()
            .map(|c| client_cert(c))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// The identity header values of one connection, computed once after the handshake and added
/// to each of its requests.
#[derive(Clone, Debug, Default)]
pub struct IdentityHeaders {
    pub fields: Vec<(HeaderName, HeaderValue)>,
}

impl IdentityHeaders {
    /// `chain` is what the client presented, its own certificate first. Fails when a name in
    /// the certificate cannot be carried in a header (a control character in a URI SAN).
    pub fn build(
        mode: ForwardClientCert,
        details: XfccDetails,
        id: &Identity,
        names: &CertNames,
        chain: &[&[u8]],
    ) -> Result<IdentityHeaders, hyper::header::InvalidHeaderValue> {
        let mut fields = Vec::new();
        if mode.xfcc() {
            fields.push((
                HeaderName::from_static("x-forwarded-client-cert"),
                HeaderValue::from_str(&xfcc(id, names, chain, details))?,
            ));
        }
        if mode.rfc9440() {
            if let Some((leaf, rest)) = chain.split_first() {
                fields.push((
                    HeaderName::from_static("client-cert"),
                    HeaderValue::from_str(&client_cert(leaf))?,
                ));
                if let Some(v) = client_cert_chain(rest) {
                    fields.push((
                        HeaderName::from_static("client-cert-chain"),
                        HeaderValue::from_str(&v)?,
                    ));
                }
            }
        }
        Ok(IdentityHeaders { fields })
    }

    pub fn apply(&self, h: &mut HeaderMap) {
        for (n, v) in &self.fields {
            h.insert(n.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn id() -> Identity {
        Identity {
            spiffe: Some("spiffe://example.org/ns/a".into()),
            dns: vec!["a.example".into(), "b.example".into()],
            sha256: "ab12".into(),
            ..Identity::default()
        }
    }

    #[test]
    fn xfcc_matches_envoys_layout() {
        let names = CertNames {
            subject: r#"CN=svc \"x\",O=Acme\, Inc."#.into(),
            uris: vec!["spiffe://example.org/ns/a".into()],
        };
        assert_eq!(
            xfcc(&id(), &names, &[b"der"], XfccDetails::default()),
            r#"Hash=ab12;Subject="CN=svc \"x\",O=Acme\, Inc.";URI=spiffe://example.org/ns/a;DNS=a.example;DNS=b.example"#
        );
        let none = CertNames {
            subject: "CN=x".into(),
            uris: vec![],
        };
        let plain = Identity {
            sha256: "ff".into(),
            ..Identity::default()
        };
        assert_eq!(
            xfcc(&plain, &none, &[], XfccDetails::default()),
            r#"Hash=ff;Subject="CN=x";URI="#
        );
    }

    #[test]
    fn xfcc_quotes_values_with_separators_and_url_encodes_pem() {
        assert_eq!(xfcc_value("https://x/?a=b;c"), r#""https://x/?a=b;c""#);
        assert_eq!(xfcc_value(r#"a"b"#), r#""a\"b""#);
        let names = CertNames {
            subject: "CN=x".into(),
            uris: vec![],
        };
        let v = xfcc(
            &id(),
            &names,
            &[&[0xfb, 0xff], &[1]],
            XfccDetails {
                cert: true,
                chain: true,
            },
        );
        assert!(
            v.starts_with("Hash=ab12;Cert=\"-----BEGIN%20CERTIFICATE-----%0A%2B%2F8%3D%0A-----END%20CERTIFICATE-----%0A\";Chain=\"-----BEGIN"),
            "{v}"
        );
    }

    #[test]
    fn rfc9440_byte_sequences() {
        assert_eq!(client_cert(&[0xfb, 0xff]), ":+/8=:");
        assert_eq!(client_cert_chain(&[]), None);
        assert_eq!(
            client_cert_chain(&[&[1], &[2, 3]]).unwrap(),
            ":AQ==:, :AgM=:"
        );
    }

    #[test]
    fn strips_underscore_spellings_that_backends_fold_together() {
        let mut h = HeaderMap::new();
        for n in [
            "X_Forwarded_Client_Cert",
            "client_cert",
            "Client_Cert-Chain",
            "x_forwarded_proto",
            "X_Forwarded_For",
            "x-forwarded-for",
            "x_kept",
        ] {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                "v".parse().unwrap(),
            );
        }
        strip_identity_headers(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
        left.sort();
        assert_eq!(left, ["x-forwarded-for", "x_kept"]);
    }

    #[test]
    fn strips_spoofed_identity_and_hop_by_hop_fields() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("X-Forwarded-Client-Cert", "Hash=evil"),
            ("x-FORWARDED-client-cert", "Hash=evil2"),
            ("Client-Cert", ":ZXZpbA==:"),
            ("client-cert-chain", ":ZXZpbA==:"),
            ("connection", "keep-alive, X-Secret, host"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("host", "example"),
            ("x-kept", "yes"),
        ] {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        strip_identity_headers(&mut h);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
        left.sort();
        assert_eq!(left, ["host", "x-kept"]);
    }

    #[test]
    fn messages_without_such_fields_keep_every_field() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("host", "example"),
            ("x-forwarded-clients", "1"),
            ("client-certs", "2"),
            ("x_forwarded_forx", "3"),
            ("te-x", "4"),
        ] {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let before = h.clone();
        strip_identity_headers(&mut h);
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
        assert!(folds_to(
            "X_Forwarded_Client-CERT",
            "x-forwarded-client-cert"
        ));
        assert!(!folds_to(
            "x-forwarded-client_cer",
            "x-forwarded-client-cert"
        ));
    }

    #[test]
    fn modes_and_details_parse() {
        use clap::ValueEnum;
        assert_eq!(
            ForwardClientCert::from_str("both", false),
            Ok(ForwardClientCert::Both)
        );
        assert!(ForwardClientCert::from_str("XFCC", false).is_err());
        assert_eq!(
            "cert, chain".parse(),
            Ok(XfccDetails {
                cert: true,
                chain: true
            })
        );
        assert!("subject".parse::<XfccDetails>().is_err());
    }
}
