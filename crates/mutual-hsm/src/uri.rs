//! RFC 7512 `pkcs11:` URIs: which token and which object a key is, parsed once into a
//! [`Pkcs11Uri`]. Only the attributes that select a private key are kept; a `pin-value` is
//! refused, because a URI ends up in argv, shell history and logs (the PIN comes from a file or
//! `$MUTUAL_PKCS11_PIN`).
use std::fmt;
use std::path::PathBuf;

use percent_encoding::percent_decode_str;

use crate::HsmError;

/// A parsed `pkcs11:` URI.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    /// `token=`: the token label.
    pub token: Option<String>,
    /// `serial=`: the token serial number.
    pub serial: Option<String>,
    /// `manufacturer=` of the token.
    pub manufacturer: Option<String>,
    /// `model=` of the token.
    pub model: Option<String>,
    /// `slot-id=`: a slot number.
    pub slot_id: Option<u64>,
    /// `object=`: the key's label (CKA_LABEL).
    pub object: Option<String>,
    /// `id=`: the key's CKA_ID, bytes.
    pub id: Option<Vec<u8>>,
    /// `?module-path=`: the PKCS#11 library.
    pub module_path: Option<PathBuf>,
    /// `?pin-source=`: a file whose first line is the PIN.
    pub pin_source: Option<PathBuf>,
    text: String,
}

impl Pkcs11Uri {
    /// Whether a `--key` value names a token key rather than a file.
    pub fn is_pkcs11(s: &str) -> bool {
        s.len() >= 7 && s[..7].eq_ignore_ascii_case("pkcs11:")
    }

    /// The URI as given (it holds no secret: `pin-value` is refused).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the URI names a key at all (`object=` or `id=`).
    pub fn names_object(&self) -> bool {
        self.object.is_some() || self.id.is_some()
    }
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn bad(uri: &str, detail: impl Into<String>) -> HsmError {
    HsmError::BadUri {
        uri: redact(uri),
        detail: detail.into(),
    }
}

/// The URI with any `pin-value` hidden, for error messages.
fn redact(uri: &str) -> String {
    match uri.to_ascii_lowercase().find("pin-value=") {
        Some(i) => format!("{}pin-value=<hidden>", &uri[..i]),
        None => uri.to_string(),
    }
}

fn decode(uri: &str, v: &str) -> Result<Vec<u8>, HsmError> {
    // RFC 7512 §2.3: values are percent-encoded; a bare '%' not followed by two hex digits is
    // malformed rather than literal.
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok =
                b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(bad(uri, format!("bad percent-encoding in {v:?}")));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(percent_decode_str(v).collect())
}

fn text(uri: &str, k: &str, v: &str) -> Result<String, HsmError> {
    String::from_utf8(decode(uri, v)?).map_err(|_| bad(uri, format!("{k} is not UTF-8")))
}

impl std::str::FromStr for Pkcs11Uri {
    type Err = HsmError;

    fn from_str(uri: &str) -> Result<Self, HsmError> {
        if !Self::is_pkcs11(uri) {
            return Err(bad(uri, "a PKCS#11 URI starts with \"pkcs11:\" (RFC 7512)"));
        }
        let rest = &uri[7..];
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut out = Pkcs11Uri {
            text: redact(uri),
            ..Default::default()
        };
        let mut seen = std::collections::BTreeSet::new();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| bad(uri, format!("attribute {attr:?} has no '='")))?;
            let k = k.to_ascii_lowercase();
            if !seen.insert(k.clone()) {
                return Err(bad(uri, format!("attribute {k} given twice")));
            }
            match k.as_str() {
                "token" => out.token = Some(text(uri, &k, v)?),
                "serial" => out.serial = Some(text(uri, &k, v)?),
                "manufacturer" => out.manufacturer = Some(text(uri, &k, v)?),
                "model" => out.model = Some(text(uri, &k, v)?),
                "object" => out.object = Some(text(uri, &k, v)?),
                "id" => out.id = Some(decode(uri, v)?),
                "slot-id" => {
                    out.slot_id = Some(
                        text(uri, &k, v)?
                            .parse()
                            .map_err(|_| bad(uri, "slot-id must be a number"))?,
                    )
                }
                "type" => {
                    let t = text(uri, &k, v)?;
                    if t != "private" && t != "public" {
                        return Err(bad(
                            uri,
                            format!("type={t}: a key URI names type=private (or public)"),
                        ));
                    }
                }
                // Library selectors are matched by the module itself, not here.
                "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-manufacturer"
                | "slot-description" => {}
                other => return Err(bad(uri, format!("unknown attribute {other}"))),
            }
        }
        for attr in query.unwrap_or("").split('&').filter(|a| !a.is_empty()) {
            let (k, v) = attr
                .split_once('=')
                .ok_or_else(|| bad(uri, format!("query attribute {attr:?} has no '='")))?;
            match k.to_ascii_lowercase().as_str() {
                "pin-value" => {
                    return Err(bad(
                        uri,
                        "pin-value would put the PIN on the command line; use --pkcs11-pin-file, \
                         ?pin-source=FILE or $MUTUAL_PKCS11_PIN",
                    ))
                }
                "pin-source" => {
                    let p = text(uri, k, v)?;
                    let p = p.strip_prefix("file:").unwrap_or(&p).to_string();
                    out.pin_source = Some(PathBuf::from(p));
                }
                "module-path" => out.module_path = Some(PathBuf::from(text(uri, k, v)?)),
                "module-name" => {}
                other => return Err(bad(uri, format!("unknown query attribute {other}"))),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_rfc7512_examples() {
        let u: Pkcs11Uri = "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;object=my-key;id=%01%02;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/run/pin"
            .parse()
            .unwrap();
        assert_eq!(u.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(u.object.as_deref(), Some("my-key"));
        assert_eq!(u.id.as_deref(), Some(&[1u8, 2][..]));
        assert_eq!(
            u.module_path.as_deref(),
            Some(std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert_eq!(
            u.pin_source.as_deref(),
            Some(std::path::Path::new("/run/pin"))
        );
        assert!(u.names_object());
        let u: Pkcs11Uri = "PKCS11:slot-id=3".parse().unwrap();
        assert_eq!(u.slot_id, Some(3));
        assert!(!u.names_object());
    }

    #[test]
    fn refuses_pin_value_without_echoing_it() {
        let e = "pkcs11:token=a;object=b?pin-value=123456"
            .parse::<Pkcs11Uri>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("pin-value"), "{e}");
        assert!(!e.contains("123456"), "{e}");
    }

    #[test]
    fn refuses_malformed() {
        for (s, want) in [
            ("token=a", "starts with"),
            ("pkcs11:token", "no '='"),
            ("pkcs11:token=a;token=b", "twice"),
            ("pkcs11:color=red", "unknown attribute color"),
            ("pkcs11:object=%zz", "percent"),
            ("pkcs11:slot-id=x", "number"),
            ("pkcs11:type=cert", "type=cert"),
        ] {
            let e = s.parse::<Pkcs11Uri>().unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
    }
}
