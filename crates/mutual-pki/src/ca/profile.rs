//! The issuance profile: what a certificate may say. Names, usages, lifetime and extensions
//! come from [`IssueOptions`] and the CA's configuration (trust domain, permitted DNS names, the
//! intermediate's validity), never from the requester; [`Ca::check`] refuses what the CA must
//! not sign before anything is signed, and `leaf_params` builds the certificate.
use mutual_policy::{cn, suffixes};
use std::time::Duration;

use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyUsagePurpose,
    SerialNumber,
};
use time::OffsetDateTime;

use super::{later, now, random_serial, Ca, Issuer, BACKDATE};
use crate::keys::KeyKind;
use crate::spiffe;
use crate::{rfc3339, PkiError, San, Usage};

/// What to issue.
#[derive(Clone, Debug)]
pub struct IssueOptions {
    /// Subject CN and the inventory name.
    pub name: String,
    pub sans: Vec<San>,
    pub usage: Usage,
    pub ttl: Duration,
    /// Who asked (recorded in the inventory): a user, a token id, a peer identity.
    pub requested_by: Option<String>,
    /// CRL distribution point URLs (http:// or https://) to put in the certificate: where
    /// relying parties (`mutual serve --crl-from-cdp`) fetch the intermediate's CRL.
    pub crl_urls: Vec<String>,
    /// OCSP responder URLs for the Authority Information Access extension (id-ad-ocsp): where
    /// relying parties ask `mutual ca serve`'s /ocsp. Empty: the CA's `ocsp_url`, if any.
    pub ocsp_urls: Vec<String>,
    /// A delegated OCSP responder certificate (EKU OCSPSigning only, id-pkix-ocsp-nocheck):
    /// only the CA server asks for one, for itself (crates/mutual-ca-server/src/ocsp.rs).
    pub ocsp_signing: bool,
    /// Subject O; `None` leaves it out.
    pub org: Option<String>,
    /// Subject OU (what `serve --allow-ou` matches). One: rcgen's subject holds one value per
    /// attribute type.
    pub ou: Option<String>,
    /// Absolute start of validity; `None`: now minus a small backdate.
    pub not_before: Option<OffsetDateTime>,
    /// Absolute end of validity; `None`: the start (or now) plus `ttl`.
    pub not_after: Option<OffsetDateTime>,
    /// Which active intermediate signs: `None` the CA's default, an issuer id (`int-2`) or a
    /// key type (`ecdsa-p384`) (see [`super::IssuerSet::select`]).
    pub issuer: Option<String>,
}

impl Default for IssueOptions {
    fn default() -> Self {
        IssueOptions {
            name: String::new(),
            sans: Vec::new(),
            usage: Usage::Client,
            ttl: Duration::from_secs(86_400),
            requested_by: None,
            crl_urls: Vec::new(),
            ocsp_urls: Vec::new(),
            ocsp_signing: false,
            org: None,
            ou: None,
            not_before: None,
            not_after: None,
            issuer: None,
        }
    }
}

impl IssueOptions {
    /// The subject as the inventory records it and x509-parser prints it (`O=.., OU=.., CN=..`,
    /// the order of the RDNs in the certificate).
    pub fn subject(&self) -> String {
        let mut parts = Vec::new();
        if let Some(o) = &self.org {
            parts.push(format!("O={}", o.trim()));
        }
        if let Some(ou) = &self.ou {
            parts.push(format!("OU={}", ou.trim()));
        }
        parts.push(format!("CN={}", self.name.trim()));
        parts.join(", ")
    }
}

/// A subject attribute (O, OU) a person typed: 1 to 64 printable characters (X.520's upper
/// bound), no control characters.
fn check_attr(what: &str, v: &str) -> Result<(), PkiError> {
    let t = v.trim();
    if t.is_empty() || t.chars().count() > 64 || t.chars().any(char::is_control) {
        return Err(PkiError::InvalidName {
            name: v.to_string(),
            detail: format!("{what} must be 1 to 64 printable characters"),
        });
    }
    Ok(())
}

/// Whether `name` is inside the permitted subtree `c` (RFC 5280 dNSName semantics, with the
/// common leading-dot form meaning "subdomains only").
fn dns_permitted(name: &str, c: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let c = c.to_ascii_lowercase();
    if c.starts_with('.') {
        name.ends_with(&c)
    } else {
        name == c || name.ends_with(&format!(".{c}"))
    }
}

impl crate::ca::CaConfig {
    /// The CA's rules on the names a certificate may carry, without the rest of a request:
    /// [`Ca::check`] applies them to every issuance, `mutual token create` to a token's SANs
    /// (a token the CA would refuse to honour is refused when made). One SPIFFE ID at most,
    /// inside the trust domain; DNS names inside the name constraints; no wildcard directly on
    /// a public suffix (what the lint calls an error: cmd_lint's check_own would say "bug").
    pub fn check_sans(&self, sans: &[San]) -> Result<(), PkiError> {
        // Every front end refuses a repeated SAN with its own words (`--san X --san X`, a batch
        // row and its template); this is the rule for any other way in.
        let repeated = (0..sans.len()).find_map(|i| sans[..i].contains(&sans[i]).then(|| &sans[i]));
        if let Some(s) = repeated {
            return Err(PkiError::InvalidSan {
                input: s.to_string(),
                detail: "it is given twice (a certificate names each SAN once)".into(),
            });
        }
        for s in sans {
            let Some(base) = (match s {
                San::Dns(d) => d.strip_prefix("*."),
                _ => None,
            }) else {
                continue;
            };
            if suffixes::classify(base) == Some(suffixes::Kind::Icann) {
                return Err(PkiError::PublicSuffixWildcard {
                    name: format!("*.{base}"),
                    suffix: base.to_string(),
                });
            }
        }
        let spiffe: Vec<&str> = sans.iter().filter_map(San::spiffe_id).collect();
        if spiffe.len() > 1 {
            return Err(PkiError::MultipleSpiffeIds {
                count: spiffe.len(),
            });
        }
        // X509-SVID 3.1: the trust domain's own ID names signing certificates (the
        // intermediate carries it); SPIFFE validators refuse a leaf that carries it.
        if let Some(id) = spiffe
            .iter()
            .find(|id| spiffe::SpiffeId::is_trust_domain_id(id))
        {
            return Err(PkiError::InvalidSpiffeId {
                id: (*id).to_string(),
                detail: format!(
                    "it names the trust domain itself, which only a CA certificate carries; a \
                     certificate's SPIFFE ID has a path, e.g. {id}/web (X509-SVID 3.1)"
                ),
            });
        }
        if let Some(td) = &self.trust_domain {
            for s in sans {
                if let San::Uri(u) = s {
                    let inside = spiffe::parse(u).is_ok_and(|id| id.trust_domain() == td);
                    if !inside {
                        return Err(PkiError::OutsideTrustDomain {
                            uri: u.clone(),
                            trust_domain: td.clone(),
                        });
                    }
                }
            }
        }
        for s in sans {
            if let San::Dns(n) = s {
                self.check_permitted_dns(n)?;
            }
        }
        Ok(())
    }

    /// Whether some DNS name equal to `suffix` or under it is inside the name constraints
    /// (none: every name is): `ca serve --acme-allow-dns` refuses a suffix ACME could never
    /// issue for.
    pub fn permits_some_dns_under(&self, suffix: &str) -> bool {
        let suffix = suffix.trim_start_matches('.').to_ascii_lowercase();
        self.permitted_dns.is_empty()
            || self.permitted_dns.iter().any(|c| {
                let base = c.trim_start_matches('.').to_ascii_lowercase();
                // The suffix inside the constraint, or the constraint's names under the suffix.
                dns_permitted(&suffix, c) || dns_permitted(&base, &suffix)
            })
    }

    /// A DNS name inside the name constraints (`permitted_dns`; none: every name).
    fn check_permitted_dns(&self, name: &str) -> Result<(), PkiError> {
        let permitted = &self.permitted_dns;
        if permitted.is_empty() || permitted.iter().any(|c| dns_permitted(name, c)) {
            return Ok(());
        }
        Err(PkiError::NotPermitted {
            name: name.to_string(),
            permitted: permitted.join(", "),
        })
    }
}

impl Ca {
    /// Checks a request against the CA's rules; returns (not_before, not_after).
    pub(super) fn check(
        &self,
        o: &IssueOptions,
        issuer: &Issuer,
    ) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
        let name = o.name.trim();
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(PkiError::InvalidName {
                name: o.name.clone(),
                detail: "NAME must be 1 to 64 printable characters (it becomes the subject CN)"
                    .into(),
            });
        }
        if matches!(o.usage, Usage::Server | Usage::Both) && !o.sans.iter().any(San::names_a_server)
        {
            return Err(PkiError::ServerNeedsSan);
        }
        self.config.check_sans(&o.sans)?;
        // NAME becomes the CN: one that names a SAN must repeat it as the SAN is written.
        if !o.sans.is_empty() {
            let texts: Vec<String> = o.sans.iter().map(San::value).collect();
            let detail = match cn::against_sans(name, &texts) {
                cn::CnVsSans::OtherForm(same) => Some(format!(
                    "the certificate's name (its CN) names the SAN {same:?} in another form; \
                     write it as the SAN is written, {same} (CABF BR 7.1.4.3)"
                )),
                cn::CnVsSans::Idn => Some(
                    "the certificate's name (its CN) is an internationalized domain name; write \
                     it in its ASCII form (A-labels, xn--...), as a dns: SAN is (CABF BR 7.1.4.3)"
                        .to_string(),
                ),
                cn::CnVsSans::Verbatim | cn::CnVsSans::NotASan => None,
            };
            if let Some(detail) = detail {
                return Err(PkiError::InvalidName {
                    name: name.to_string(),
                    detail,
                });
            }
        }
        // OpenSSL applies DNS constraints to a hostname-like CN too; refuse what it would.
        if name.contains('.') && crate::validate_dns_name(&name.to_ascii_lowercase()).is_ok() {
            self.config.check_permitted_dns(name)?;
        }
        if let Some(org) = &o.org {
            check_attr("the organization (O)", org)?;
        }
        if let Some(ou) = &o.ou {
            check_attr("the organizational unit (OU)", ou)?;
        }
        if o.ttl.is_zero() {
            return Err(PkiError::InvalidDuration {
                input: "0s".into(),
                detail: "TTL must be greater than zero".into(),
            });
        }
        let t0 = now();
        if o.not_before.is_none() && o.not_after.is_none() {
            // Whole seconds, as the certificate carries it.
            let not_after = later(t0, o.ttl, "TTL")?;
            let not_after = not_after.replace_nanosecond(0).unwrap_or(not_after);
            if not_after > issuer.not_after() {
                return Err(PkiError::TtlBeyondIntermediate {
                    requested: rfc3339(not_after),
                    limit: rfc3339(issuer.not_after()),
                });
            }
            let not_before = (t0 - BACKDATE).max(issuer.not_before());
            return Ok((not_before, not_after));
        }
        check_validity(o, t0, issuer)
    }
}

/// An absolute validity window: inside the intermediate's, ending after it starts and in the
/// future (an already expired certificate is never what anyone meant).
fn check_validity(
    o: &IssueOptions,
    t0: OffsetDateTime,
    issuer: &Issuer,
) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
    let bad = |detail: String| Err(PkiError::InvalidValidity { detail });
    // Certificates carry whole seconds; dropping the fraction here keeps what is checked
    // equal to what is signed.
    let secs = |t: OffsetDateTime| t.replace_nanosecond(0).unwrap_or(t);
    let not_before = match o.not_before {
        Some(t) => secs(t),
        None => (t0 - BACKDATE).max(issuer.not_before()),
    };
    let not_after = match o.not_after {
        Some(t) => secs(t),
        None => later(not_before, o.ttl, "TTL")?,
    };
    if not_before < issuer.not_before() {
        return bad(format!(
            "--not-before {} is before the intermediate's own start ({}); use a later time",
            rfc3339(not_before),
            rfc3339(issuer.not_before())
        ));
    }
    if not_after > issuer.not_after() {
        return bad(format!(
            "--not-after {} is after the intermediate expires ({}); use an earlier time",
            rfc3339(not_after),
            rfc3339(issuer.not_after())
        ));
    }
    if not_after <= t0 {
        return bad(format!(
            "--not-after {} is in the past: the certificate would be expired when issued",
            rfc3339(not_after)
        ));
    }
    if not_after <= not_before {
        return bad(format!(
            "--not-after {} must be later than --not-before {}",
            rfc3339(not_after),
            rfc3339(not_before)
        ));
    }
    Ok((not_before, not_after))
}

impl Ca {
    pub(super) fn leaf_params(
        &self,
        o: &IssueOptions,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        key: &KeyKind,
        issuer: &Issuer,
    ) -> Result<(CertificateParams, Vec<u8>), PkiError> {
        // RSA keys may also encipher (TLS 1.2 RSA key exchange); the others only sign.
        let rsa = *key == KeyKind::Rsa;
        let mut p = CertificateParams::default();
        let mut d = rcgen::DistinguishedName::new();
        if let Some(org) = &o.org {
            d.push(DnType::OrganizationName, org.trim());
        }
        if let Some(ou) = &o.ou {
            d.push(DnType::OrganizationalUnitName, ou.trim());
        }
        d.push(DnType::CommonName, o.name.trim());
        p.distinguished_name = d;
        p.subject_alt_names = o
            .sans
            .iter()
            .map(San::to_rcgen)
            .collect::<Result<Vec<_>, _>>()?;
        p.not_before = not_before;
        p.not_after = not_after;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = if rsa {
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ]
        } else {
            vec![KeyUsagePurpose::DigitalSignature]
        };
        p.extended_key_usages = match o.usage {
            _ if o.ocsp_signing => vec![ExtendedKeyUsagePurpose::OcspSigning],
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Both => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        if o.ocsp_signing {
            p.custom_extensions.push(super::ocsp::nocheck_extension());
        } else {
            let urls = if o.ocsp_urls.is_empty() {
                self.config.ocsp_url.iter().cloned().collect()
            } else {
                o.ocsp_urls.clone()
            };
            if !urls.is_empty() {
                p.custom_extensions.push(super::ocsp::aia_extension(&urls)?);
            }
        }
        p.use_authority_key_identifier_extension = true;
        p.key_identifier_method = KeyIdMethod::Sha256;
        if !o.crl_urls.is_empty() {
            for u in &o.crl_urls {
                let why = if !(u.starts_with("http://") || u.starts_with("https://")) {
                    Some("it must be an http:// or https:// URL".to_string())
                } else if u.contains(char::is_whitespace) {
                    Some("it contains a space; write spaces as %20".to_string())
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(PkiError::InvalidCrlUrl {
                        url: u.clone(),
                        why,
                    });
                }
            }
            // `{issuer}` becomes the signing intermediate's id, so that each certificate points
            // at its own issuer's CRL (`https://ca:8443/v1/crl/{issuer}`; docs/lifecycle.md).
            p.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: o
                    .crl_urls
                    .iter()
                    .map(|u| u.replace("{issuer}", &issuer.id))
                    .collect(),
            }];
        }
        let serial = random_serial();
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        Ok((p, serial))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dns_constraints() {
        assert!(dns_permitted("a.internal.example", ".internal.example"));
        assert!(!dns_permitted("internal.example", ".internal.example"));
        assert!(dns_permitted("internal.example", "internal.example"));
        assert!(dns_permitted("x.internal.example", "internal.example"));
        assert!(!dns_permitted("evilinternal.example", "internal.example"));
        assert!(!dns_permitted("a.other.example", ".internal.example"));
    }

    #[test]
    fn a_san_given_twice_is_refused_in_any_spelling() {
        let config: crate::ca::CaConfig = toml::from_str(
            "name = \"t\"\nkey_type = \"ecdsa-p256\"\n\
             [defaults]\nttl = \"24h\"\nkey_type = \"ecdsa-p256\"\n",
        )
        .unwrap();
        let sans = |v: &[&str]| -> Vec<San> { v.iter().map(|s| s.parse().unwrap()).collect() };
        assert!(config
            .check_sans(&sans(&["dns:a.example", "ip:10.0.0.1"]))
            .is_ok());
        for twice in [["dns:a.example", "dns:A.example"], ["ip:::1", "ip:0:0::1"]] {
            let e = config.check_sans(&sans(&twice)).unwrap_err();
            assert!(matches!(e, PkiError::InvalidSan { .. }), "{e}");
            assert!(e.to_string().contains("given twice"), "{e}");
        }
    }
}
