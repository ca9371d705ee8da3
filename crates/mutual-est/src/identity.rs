//! The rule that turns a factory (bootstrap, IDevID-style) certificate into the one name the
//! CA may issue to its device: `--est-identity 'spiffe://fleet.example/device/{serial}'`.
//! `{serial}` is the subject's serialNumber attribute (X.520, OID 2.5.4.5, where
//! manufacturers put the device serial), `{cn}` its common name. Pure, so it is unit-tested and
//! fuzzed with the rest of the request parsing.
use mutual_pki::San;

use crate::EstError;

/// A parsed `--est-identity` template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityTemplate {
    /// The SAN form (`uri:...`, `dns:...`) with placeholders.
    text: String,
}

/// What a factory certificate says about its device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    /// The subject's serialNumber attribute.
    pub serial: Option<String>,
    pub cn: Option<String>,
}

impl IdentityTemplate {
    /// `spiffe://...` (taken as a URI SAN) or a SAN in the CLI form (`dns:{serial}.dev.example`),
    /// with at least one `{serial}` or `{cn}` and no other placeholder.
    pub fn parse(s: &str) -> Result<IdentityTemplate, String> {
        let text = if s.starts_with("spiffe://") {
            format!("uri:{s}")
        } else {
            s.to_string()
        };
        let mut rest = text.as_str();
        let mut used = 0;
        while let Some(i) = rest.find('{') {
            let after = &rest[i + 1..];
            let Some(j) = after.find('}') else {
                return Err(format!("{s:?}: unclosed '{{'"));
            };
            match &after[..j] {
                "serial" | "cn" => used += 1,
                other => {
                    return Err(format!(
                        "{s:?}: unknown placeholder {{{other}}} (use {{serial}} or {{cn}})"
                    ))
                }
            }
            rest = &after[j + 1..];
        }
        if used == 0 {
            return Err(format!(
                "{s:?} has no {{serial}} or {{cn}}: every device would get the same name"
            ));
        }
        // The template with a sample value must be a SAN the CA can issue.
        let sample = text.replace("{serial}", "SN1").replace("{cn}", "cn1");
        sample
            .parse::<San>()
            .map_err(|e| format!("{s:?} does not make a valid name: {e}"))?;
        Ok(IdentityTemplate { text })
    }

    /// Whether the CA could issue any name this template makes: `Err` (why) when its fixed
    /// part already puts every name outside the trust domain (`spiffe://other.td/{serial}`) or
    /// the name constraints (`dns:{serial}.other.example`), so every enrollment would be
    /// refused. A placeholder in the part that decides is given the benefit of the doubt.
    pub fn check_against(&self, ca: &mutual_pki::ca::CaConfig) -> Result<(), String> {
        if let Some(rest) = self.text.strip_prefix("uri:spiffe://") {
            let authority = rest.split('/').next().unwrap_or_default();
            match &ca.trust_domain {
                Some(td) if !authority.contains('{') && !authority.eq_ignore_ascii_case(td) => {
                    return Err(format!(
                        "{}: its SPIFFE IDs are in {authority}, outside this CA's trust domain {td}",
                        self.shown()
                    ));
                }
                _ => {}
            }
        }
        if let Some(name) = self.text.strip_prefix("dns:") {
            // The text after the last placeholder: every name ends with it.
            let tail = name.rsplit('}').next().unwrap_or_default();
            if let Some(suffix) = tail.strip_prefix('.').filter(|s| !s.is_empty()) {
                if !ca.permits_some_dns_under(suffix) {
                    return Err(format!(
                        "{}: its names end in .{suffix}, outside this CA's name constraints \
                         (permitted_dns: {})",
                        self.shown(),
                        ca.permitted_dns.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }

    /// The template as the operator wrote it (a SPIFFE ID without the `uri:` this keeps).
    fn shown(&self) -> &str {
        self.text
            .strip_prefix("uri:")
            .filter(|t| t.starts_with("spiffe://"))
            .unwrap_or(&self.text)
    }

    /// The SAN for a device, or `name_not_allowed` when its certificate lacks the attribute the
    /// template needs or its value cannot be part of a name.
    pub fn render(&self, facts: &DeviceFacts) -> Result<San, EstError> {
        let mut out = self.text.clone();
        for (ph, v, attr) in [
            ("{serial}", &facts.serial, "subject serialNumber"),
            ("{cn}", &facts.cn, "subject CN"),
        ] {
            if !out.contains(ph) {
                continue;
            }
            let Some(v) = v else {
                return Err(EstError::new(
                    "name_not_allowed",
                    format!("the factory certificate has no {attr}, which --est-identity needs"),
                ));
            };
            if v.is_empty()
                || v.len() > 64
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
                || v.starts_with('.')
            {
                return Err(EstError::new(
                    "name_not_allowed",
                    format!(
                        "the factory certificate's {attr} {v:?} cannot be part of a name \
                         (letters, digits, '-', '_', '.' only)"
                    ),
                ));
            }
            out = out.replace(ph, v);
        }
        out.parse::<San>()
            .map_err(|e| EstError::new("name_not_allowed", e.to_string()))
    }
}

impl DeviceFacts {
    /// Reads the subject of a certificate (DER).
    pub fn of(cert_der: &[u8]) -> Result<DeviceFacts, EstError> {
        let (_, c) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|_| EstError::new("malformed", "the client certificate does not parse"))?;
        let mut facts = DeviceFacts::default();
        for attr in c.subject().iter_attributes() {
            let v = attr.as_str().ok().map(str::to_string);
            if attr.attr_type() == &x509_parser::oid_registry::OID_X509_SERIALNUMBER {
                facts.serial = v;
            } else if attr.attr_type() == &x509_parser::oid_registry::OID_X509_COMMON_NAME {
                facts.cn = v;
            }
        }
        Ok(facts)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn templates() {
        let t = IdentityTemplate::parse("spiffe://fleet.example/device/{serial}").unwrap();
        let facts = DeviceFacts {
            serial: Some("SN-0042".into()),
            cn: Some("sensor".into()),
        };
        assert_eq!(
            t.render(&facts).unwrap().to_string(),
            "uri:spiffe://fleet.example/device/SN-0042"
        );
        let e = t
            .render(&DeviceFacts {
                serial: Some("../x".into()),
                cn: None,
            })
            .unwrap_err();
        assert_eq!(e.reason, "name_not_allowed");
        let e = t.render(&DeviceFacts::default()).unwrap_err();
        assert!(e.detail.contains("no subject serialNumber"), "{}", e.detail);
        let d = IdentityTemplate::parse("dns:{cn}.devices.example").unwrap();
        assert_eq!(
            d.render(&facts).unwrap().to_string(),
            "dns:sensor.devices.example"
        );
        assert!(IdentityTemplate::parse("spiffe://fleet.example/device").is_err());
        assert!(IdentityTemplate::parse("spiffe://fleet.example/{mac}").is_err());
        assert!(IdentityTemplate::parse("spiffe://fleet.example/{serial").is_err());
    }
}
