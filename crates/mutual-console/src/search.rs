//! The inventory page's query: what a person typed in the search box and the filters, turned
//! into store lookups that stay index scans at a million rows (docs/console.md, "Scale").
//!
//! The search box takes a name, a SPIFFE ID, a DNS name, an IP, a serial or a SHA-256
//! fingerprint without saying which: [`candidates`] lists the readings in order, and the first
//! one with a match wins on the first page. The links to the next pages carry the reading that
//! won (`by=`), so paging never switches meaning half way.

use std::time::Duration;

use mutual_pki::San;
use mutual_store::{Cursor, ListFilter, SanMatch, Status};

/// One reading of the search box.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// A SAN through the `certificate_sans (kind, value)` index.
    San(SanMatch),
    /// A serial: one row by its primary key.
    Serial(String),
    /// A SHA-256 fingerprint of the certificate (lowercase hex).
    Sha256(String),
    /// The NAME given at issuance (the `certificates_name` index).
    Name(String),
}

impl Key {
    /// The `by=` value naming this reading in links.
    pub fn by(&self) -> &'static str {
        match self {
            Key::San(_) => "san",
            Key::Serial(_) => "serial",
            Key::Sha256(_) => "sha256",
            Key::Name(_) => "name",
        }
    }

    /// Words for the page ("SPIFFE ID", "DNS name", ...).
    pub fn describe(&self) -> String {
        match self {
            Key::San(m) => match (m.kind.as_str(), m.value.starts_with("spiffe://")) {
                ("uri", true) => "SPIFFE ID".into(),
                ("dns", _) => "DNS name".into(),
                ("ip", _) => "IP address".into(),
                (k, _) => format!("{k} SAN"),
            },
            Key::Serial(_) => "serial".into(),
            Key::Sha256(_) => "SHA-256 fingerprint".into(),
            Key::Name(_) => "name".into(),
        }
    }
}

fn san_key(s: &str) -> Option<Key> {
    let san: San = s.parse().ok()?;
    SanMatch::from_stored(&san.to_string()).map(Key::San)
}

/// The readings of `q`, most specific first; `by` (from a link) keeps only that one.
pub fn candidates(q: &str, by: Option<&str>) -> Vec<Key> {
    let q = q.trim();
    if q.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let lower = q.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("serial:") {
        out.extend(mutual_pki::normalize_serial(rest).ok().map(Key::Serial));
    } else if let Some(rest) = lower.strip_prefix("sha256:") {
        out.extend(fingerprint(rest).map(Key::Sha256));
    } else if let Some(rest) = q.strip_prefix("name:") {
        out.push(Key::Name(rest.trim().to_string()));
    } else if lower.starts_with("spiffe://") {
        out.extend(san_key(&format!("uri:{q}")));
    } else if ["dns:", "ip:", "uri:", "email:"]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        out.extend(san_key(q));
    } else {
        if let Some(h) = fingerprint(q) {
            out.push(Key::Sha256(h));
        }
        let hexish = q.chars().all(|c| c.is_ascii_hexdigit() || c == ':');
        if hexish && q.chars().filter(char::is_ascii_hexdigit).count() <= 40 {
            out.extend(mutual_pki::normalize_serial(q).ok().map(Key::Serial));
        }
        if let Ok(ip) = q.parse::<std::net::IpAddr>() {
            out.extend(san_key(&format!("ip:{ip}")));
        } else if q.contains('.') && !q.contains(char::is_whitespace) {
            out.extend(san_key(&format!("dns:{q}")));
        }
        out.push(Key::Name(q.to_string()));
    }
    if let Some(by) = by {
        out.retain(|k| k.by() == by);
    }
    out
}

/// 64 hex digits, colons allowed (as `openssl x509 -fingerprint -sha256` prints it).
fn fingerprint(s: &str) -> Option<String> {
    let h: String = s
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).then_some(h)
}

/// The inventory page's query string, parsed once.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub q: String,
    pub by: Option<String>,
    /// `valid`, `revoked`, `expired` or none (all).
    pub status: Option<Status>,
    /// Still-valid certificates whose notAfter is within this (typed as `7d`, `12h`).
    pub expiring: Option<(String, Duration)>,
    /// `requested_by` prefix (`token:`, `acme:`, `renew:`, `console:`, a person's name).
    pub requester: String,
    /// Only certificates signed by this intermediate (`int-2`).
    pub issuer: Option<String>,
    /// Only certificates with this key type (`ecdsa-p256`, `rsa-2048`, `unknown`...).
    pub key_type: Option<String>,
    pub after: Option<Cursor>,
    pub limit: u32,
    /// What was wrong with the query (shown above the table; the rest still applies).
    pub errors: Vec<String>,
}

/// Rows per page unless `limit=` says otherwise (at most [`MAX_LIMIT`]).
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

impl Query {
    pub fn parse(qs: &str) -> Query {
        let mut q = Query {
            limit: DEFAULT_LIMIT,
            ..Default::default()
        };
        for (k, v) in url::form_urlencoded::parse(qs.as_bytes()) {
            let v = v.trim();
            match k.as_ref() {
                "q" => q.q = v.to_string(),
                "by" if !v.is_empty() => q.by = Some(v.to_string()),
                "status" if !v.is_empty() && v != "all" => match v.parse() {
                    Ok(s) => q.status = Some(s),
                    Err(e) => q.errors.push(e),
                },
                "expiring" if !v.is_empty() => match mutual_pki::parse_duration(v) {
                    Ok(d) => q.expiring = Some((v.to_string(), d)),
                    Err(e) => q.errors.push(format!("expiring within: {e}")),
                },
                "requester" => q.requester = v.to_string(),
                "issuer" if !v.is_empty() => q.issuer = Some(v.to_string()),
                "key_type" if !v.is_empty() => match mutual_pki::keys::parse_key_type_filter(v) {
                    Ok(k) => q.key_type = Some(k),
                    Err(e) => q.errors.push(e),
                },
                "after" if !v.is_empty() => match parse_cursor(v) {
                    Some(c) => q.after = Some(c),
                    None => q
                        .errors
                        .push("the page link is damaged; showing the first page".into()),
                },
                "limit" => {
                    q.limit = v
                        .parse::<u32>()
                        .map(|n| n.clamp(1, MAX_LIMIT))
                        .unwrap_or(DEFAULT_LIMIT)
                }
                _ => {}
            }
        }
        q
    }

    /// The store filter for one reading of the search box (`None`: no search).
    pub fn filter(&self, key: Option<&Key>) -> ListFilter {
        let mut f = ListFilter {
            status: self.status,
            expiring_within: self.expiring.as_ref().map(|(_, d)| *d),
            requested_by: (!self.requester.is_empty()).then(|| self.requester.clone()),
            issuer: self.issuer.clone(),
            key_type: self.key_type.clone(),
            ..Default::default()
        };
        match key {
            Some(Key::San(m)) => f.san = Some(m.clone()),
            Some(Key::Sha256(h)) => f.sha256 = Some(h.clone()),
            Some(Key::Name(n)) => f.name = Some(n.clone()),
            Some(Key::Serial(_)) | None => {}
        }
        f
    }

    /// The query string of this page's filters with `by` and a cursor (for the next-page link).
    pub fn link(&self, by: Option<&str>, after: Option<&Cursor>) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        if !self.q.is_empty() {
            s.append_pair("q", &self.q);
        }
        if let Some(by) = by {
            s.append_pair("by", by);
        }
        if let Some(st) = self.status {
            s.append_pair("status", st.as_str());
        }
        if let Some((e, _)) = &self.expiring {
            s.append_pair("expiring", e);
        }
        if !self.requester.is_empty() {
            s.append_pair("requester", &self.requester);
        }
        if let Some(i) = &self.issuer {
            s.append_pair("issuer", i);
        }
        if let Some(k) = &self.key_type {
            s.append_pair("key_type", k);
        }
        if self.limit != DEFAULT_LIMIT {
            s.append_pair("limit", &self.limit.to_string());
        }
        if let Some(c) = after {
            s.append_pair("after", &format!("{}.{}", c.not_after, c.serial));
        }
        s.finish()
    }
}

/// `NOTAFTER.SERIAL` (the keyset cursor: the last row of the previous page).
fn parse_cursor(v: &str) -> Option<Cursor> {
    let (t, serial) = v.split_once('.')?;
    let not_after = t.parse().ok()?;
    let serial = mutual_pki::normalize_serial(serial).ok()?;
    Some(Cursor { not_after, serial })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn kinds(q: &str) -> Vec<String> {
        candidates(q, None)
            .iter()
            .map(|k| match k {
                Key::San(m) => format!("{}:{}", m.kind, m.value),
                Key::Serial(s) => format!("serial:{s}"),
                Key::Sha256(h) => format!("sha256:{}", &h[..8]),
                Key::Name(n) => format!("name:{n}"),
            })
            .collect()
    }

    #[test]
    fn readings() {
        assert_eq!(
            kinds("spiffe://example.org/web"),
            ["uri:spiffe://example.org/web"]
        );
        assert_eq!(
            kinds("Web.Internal"),
            ["dns:web.internal", "name:Web.Internal"]
        );
        assert_eq!(kinds("10.0.0.1"), ["ip:10.0.0.1", "name:10.0.0.1"]);
        assert_eq!(kinds("0A:1b"), ["serial:0a1b", "name:0A:1b"]);
        let fp = "AB:".repeat(31) + "AB";
        assert_eq!(kinds(&fp)[0], "sha256:abababab");
        assert_eq!(kinds("billing"), ["name:billing"]);
        assert_eq!(kinds("name:cafe"), ["name:cafe"]);
        assert_eq!(kinds("   "), Vec::<String>::new());
        assert_eq!(
            candidates("web.internal", Some("name")),
            [Key::Name("web.internal".into())]
        );
    }

    #[test]
    fn query_round_trip() {
        let q = Query::parse(
            "q=a+b&status=revoked&expiring=7d&requester=token%3A&issuer=int-2&key_type=RSA-2048&limit=9999",
        );
        assert_eq!(q.q, "a b");
        assert_eq!(q.status, Some(Status::Revoked));
        assert_eq!(q.limit, MAX_LIMIT);
        let c = Cursor {
            not_after: 5,
            serial: "0a".into(),
        };
        let link = q.link(Some("name"), Some(&c));
        let back = Query::parse(&link);
        assert_eq!(back.after, Some(c));
        assert_eq!(back.by.as_deref(), Some("name"));
        assert_eq!(back.requester, "token:");
        assert_eq!(back.issuer.as_deref(), Some("int-2"));
        assert_eq!(back.key_type.as_deref(), Some("rsa-2048"));
        let bad = Query::parse("expiring=soon&status=weird&after=x&key_type=dsa");
        assert_eq!(bad.errors.len(), 4);
    }
}
