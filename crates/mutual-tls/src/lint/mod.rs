//! Profile checks (a "linter") for certificates, chains and CRLs: the RFC 5280 and
//! CA/Browser-Forum rules that rustls-webpki does not enforce because they do not change who
//! signed what (AKI/SKI presence, serial size, the CA extensions of a trust anchor, CN versus
//! SAN, EKU pedantry, CRL numbers, ...). Two users:
//!
//! - `mutual cert lint` and our own CA (`ca init`, `cert issue` lint what they make), to know
//!   whether a certificate is well-formed before anyone trusts it, as pkilint and zlint do for
//!   the web PKI;
//! - the `strict` verification profile ([`Profile::Strict`]): webpki builds the path, then every
//!   certificate and CRL of that path must lint without an error (`malformed` otherwise), as
//!   pyca/cryptography's verifier does.
//!
//! It lives in mutual-tls (not its own crate) because the verifier needs it and x509-parser is
//! already here; nothing in it does I/O. Each rule has an id, a severity, the section it comes
//! from and a sentence ([`RULES`]); a [`Finding`] names the rule, the certificate and the fact.

use mutual_policy::cn::CnVsSans;
use mutual_policy::suffixes;

use std::net::IpAddr;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

/// Which verification rules apply on top of webpki's path building. With the `clap` feature,
/// its variants (lowercase) are the values of `--profile` and of the `profile` config key (the
/// one spelling list).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// webpki's checks (and mutual's own: key strength, trust domain, CDP). The default.
    #[default]
    Compatible,
    /// Compatible, then every [`Severity::Error`] rule of this module on every certificate of
    /// the built path (trust anchor included) and on every CRL issued by one of them.
    Strict,
}

impl Profile {
    pub fn label(self) -> &'static str {
        match self {
            Profile::Compatible => "compatible",
            Profile::Strict => "strict",
        }
    }
}

/// An error makes a certificate unfit for the strict profile (and `cert lint` exit 1); a
/// warning is reported only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One rule of the profile.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Rule {
    pub id: &'static str,
    pub severity: Severity,
    /// Where the rule comes from (`RFC 5280 4.2.1.1`, `CABF BR 7.1.2.7.10`).
    pub section: &'static str,
    /// What the rule requires, in one sentence.
    pub requires: &'static str,
}

macro_rules! rules {
    ($($id:literal $sev:ident $sec:literal $req:literal;)*) => {
        /// Every rule, in the order they are checked.
        pub const RULES: &[Rule] = &[$(Rule { id: $id, severity: Severity::$sev, section: $sec, requires: $req }),*];
    };
}

rules! {
    "serial-zero" Error "RFC 5280 4.1.2.2" "The serial number must be a positive integer, not zero.";
    "serial-zero-anchor" Warning "RFC 5280 4.1.2.2" "A trust anchor's serial number should be positive (some long-lived public roots use zero; RFC 5280 asks relying parties to handle it gracefully).";
    "serial-negative" Error "RFC 5280 4.1.2.2" "The serial number must be a positive integer.";
    "serial-too-long" Error "RFC 5280 4.1.2.2" "The serial number must not be longer than 20 octets.";
    "version-not-v3" Error "RFC 5280 4.1.2.1" "A certificate with extensions must be version 3.";
    "extension-malformed" Error "RFC 5280 4.2" "Every extension value must be well-formed DER of its ASN.1 type.";
    "extension-duplicate" Error "RFC 5280 4.2" "A certificate must not include more than one instance of an extension.";
    "unknown-critical-extension" Error "RFC 5280 4.2" "A certificate must not carry a critical extension the verifier does not recognize.";
    "ca-subject-empty" Error "RFC 5280 4.1.2.6" "A CA certificate must have a non-empty subject distinguished name.";
    "subject-empty-without-san" Error "RFC 5280 4.1.2.6" "A certificate with an empty subject must carry a subjectAltName.";
    "san-not-critical-with-empty-subject" Error "RFC 5280 4.2.1.6" "When the subject is empty, the subjectAltName extension must be critical.";
    "san-critical-with-subject" Error "CABF BR 7.1.2.7.12" "When the subject is not empty, the subjectAltName extension must not be critical.";
    "san-empty" Error "RFC 5280 4.2.1.6" "A subjectAltName extension must contain at least one name.";
    "san-dns-invalid" Error "RFC 5280 4.2.1.6" "A dNSName must use the preferred name syntax (letters, digits, hyphens; a wildcard only as the whole leftmost label).";
    "san-wildcard-public-suffix" Error "CABF BR 3.2.2.6" "A wildcard must not sit directly on a public (ICANN) suffix such as *.com or *.co.uk.";
    "san-wildcard-private-suffix" Warning "CABF BR 3.2.2.6" "A wildcard on a privately registered public suffix (*.s3.amazonaws.com) is valid only for the owner of that namespace.";
    "name-matched-by-suffix-wildcard" Error "CABF BR 3.2.2.6 (strict profile)" "The expected name must not be matched only through a wildcard over a public suffix.";
    "svid-leaf-root-path" Error "SPIFFE X509-SVID 3.1" "A leaf certificate's SPIFFE ID must have a path: the trust domain's own ID (spiffe://example.org) belongs to signing certificates.";
    "cn-not-in-san" Warning "CABF BR 7.1.4.3" "An end entity's commonName should be one of its subjectAltName values.";
    "cn-san-not-verbatim" Error "CABF BR 7.1.4.3" "A commonName naming one of the subjectAltName values must repeat it character for character (a domain in its ASCII dNSName form, an IP address in its RFC 3986/5952 form).";
    "aki-missing" Error "RFC 5280 4.2.1.1" "A certificate that is not self-issued must carry an authorityKeyIdentifier.";
    "aki-critical" Error "RFC 5280 4.2.1.1" "The authorityKeyIdentifier extension must not be critical.";
    "aki-no-key-identifier" Error "RFC 5280 4.2.1.1; CABF BR 7.1.2.1.3" "The authorityKeyIdentifier must contain the keyIdentifier field.";
    "aki-issuer-and-serial" Error "CABF BR 7.1.2.1.3, 7.1.2.11.1" "The authorityKeyIdentifier must not contain authorityCertIssuer or authorityCertSerialNumber.";
    "aki-ski-mismatch" Error "CABF BR 7.1.2.1.3" "A self-signed certificate's authorityKeyIdentifier must equal its own subjectKeyIdentifier.";
    "ski-missing-ca" Error "RFC 5280 4.2.1.2" "A CA certificate must carry a subjectKeyIdentifier.";
    "ski-missing-ee" Warning "RFC 5280 4.2.1.2" "An end-entity certificate should carry a subjectKeyIdentifier.";
    "ski-critical" Error "RFC 5280 4.2.1.2" "The subjectKeyIdentifier extension must not be critical.";
    "ca-basic-constraints-missing" Error "RFC 5280 4.2.1.9" "A CA certificate must carry basicConstraints with cA asserted.";
    "ca-basic-constraints-not-critical" Error "RFC 5280 4.2.1.9" "A CA certificate's basicConstraints extension must be critical.";
    "ca-key-usage-missing" Warning "RFC 5280 4.2.1.3" "A CA certificate must carry a keyUsage extension.";
    "ca-without-keycertsign" Error "RFC 5280 4.2.1.3, 4.2.1.9" "A certificate with cA asserted must assert keyCertSign in its keyUsage.";
    "keycertsign-without-ca" Error "RFC 5280 4.2.1.3, 4.2.1.9" "keyCertSign must not be asserted unless basicConstraints asserts cA.";
    "pathlen-without-ca" Error "RFC 5280 4.2.1.9" "pathLenConstraint must not be present unless cA is asserted.";
    "name-constraints-in-ee" Error "RFC 5280 4.2.1.10" "nameConstraints must be used only in a CA certificate.";
    "name-constraints-not-critical" Error "RFC 5280 4.2.1.10" "The nameConstraints extension must be critical.";
    "name-constraints-empty" Error "RFC 5280 4.2.1.10; CABF BR 7.1.2.5.2" "nameConstraints must contain a non-empty permittedSubtrees or excludedSubtrees.";
    "name-constraints-dns-invalid" Error "RFC 5280 4.2.1.10" "A dNSName constraint must be a domain name in preferred name syntax (no leading period).";
    "policy-constraints-not-critical" Error "RFC 5280 4.2.1.11" "The policyConstraints extension must be critical.";
    "ee-eku-missing" Error "CABF BR 7.1.2.7.10" "An end-entity certificate must carry an extendedKeyUsage extension.";
    "ee-eku-any" Error "CABF BR 7.1.2.7.10" "An end-entity certificate's extendedKeyUsage must not contain anyExtendedKeyUsage.";
    "ee-eku-critical" Error "CABF BR 7.1.2.7.6" "An end-entity certificate's extendedKeyUsage extension must not be critical.";
    "root-eku-present" Error "CABF BR 7.1.2.1.2" "A root CA certificate must not carry an extendedKeyUsage extension.";
    "aia-malformed" Error "RFC 5280 4.2.2.1; CABF BR 7.1.2.7.7" "authorityInfoAccess must contain one or more well-formed AccessDescriptions.";
    "aia-critical" Error "RFC 5280 4.2.2.1" "The authorityInfoAccess extension must not be critical.";
    "rsa-modulus-size" Error "CABF BR 6.1.5" "An RSA modulus must be at least 2048 bits and a multiple of 8 bits.";
    "validity-anchor" Error "RFC 5280 4.1.2.5 (strict profile)" "Every certificate of the path, the trust anchor included, must be valid at the validation time.";
    "crl-number-missing" Error "RFC 5280 5.2.3" "A CRL must carry the cRLNumber extension.";
    "crl-number-critical" Error "RFC 5280 5.2.3" "The cRLNumber extension must not be critical.";
    "crl-aki-missing" Error "RFC 5280 5.2.1" "A CRL must carry an authorityKeyIdentifier with a keyIdentifier.";
    "crl-next-update-missing" Error "RFC 5280 5.1.2.5" "A CRL must carry a nextUpdate time.";
    "crl-issuer-without-crlsign" Error "RFC 5280 4.2.1.3" "A CRL issuer with a keyUsage extension must assert cRLSign.";
}

/// Looks a rule up by id.
pub fn rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

/// One violation: which rule, on which certificate or CRL, and the fact.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: Severity,
    pub section: &'static str,
    /// The object: `leaf`, `intermediate`, `root` or `crl`, then its subject/issuer DN.
    pub role: &'static str,
    pub subject: String,
    /// What is wrong with this object, in one sentence.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} [{}] {} {:?}: {}",
            self.severity.label(),
            self.rule,
            self.section,
            self.role,
            self.subject,
            self.message
        )
    }
}

/// The place of a certificate in a path (rules differ for CAs, anchors and end entities).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leaf,
    Intermediate,
    /// The trust anchor (or a self-issued CA certificate met alone).
    Root,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Leaf => "leaf",
            Role::Intermediate => "intermediate",
            Role::Root => "root",
        }
    }
    fn is_ca(self) -> bool {
        self != Role::Leaf
    }
}

struct Out<'a> {
    role: &'static str,
    subject: String,
    v: &'a mut Vec<Finding>,
}

impl Out<'_> {
    fn hit(&mut self, id: &'static str, message: String) {
        // Invariant: every id used below is in RULES (the test `every_rule_is_used_and_every_used_rule_exists` checks
        // both directions), so the fallback is never taken.
        let (severity, section) =
            rule(id).map_or((Severity::Error, "?"), |r| (r.severity, r.section));
        self.v.push(Finding {
            rule: id,
            severity,
            section,
            role: self.role,
            subject: self.subject.clone(),
            message,
        });
    }
}

/// The role a certificate has when met alone: a CA (cA asserted or keyCertSign) is a root when
/// self-issued, an intermediate otherwise; anything else is a leaf.
pub fn guess_role(der: &[u8]) -> Role {
    let Ok((_, c)) = X509Certificate::from_der(der) else {
        return Role::Leaf;
    };
    let ca = matches!(c.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
        || matches!(c.key_usage(), Ok(Some(ku)) if ku.value.key_cert_sign());
    match (ca, c.subject().as_raw() == c.issuer().as_raw()) {
        (false, _) => Role::Leaf,
        (true, true) => Role::Root,
        (true, false) => Role::Intermediate,
    }
}

const OID_NC: &str = "2.5.29.30";
const OID_AIA: &str = "1.3.6.1.5.5.7.1.1";
const OID_CRL_NUMBER: &str = "2.5.29.20";

/// Lints one certificate in the given role. A certificate x509-parser cannot read at all gives
/// no finding here: every caller has refused it as unparsable before (webpki, `cert lint`).
pub fn lint_cert(der: &[u8], role: Role) -> Vec<Finding> {
    let mut v = Vec::new();
    let Ok((_, c)) = X509Certificate::from_der(der) else {
        return v;
    };
    let mut o = Out {
        role: role.label(),
        subject: c.subject().to_string(),
        v: &mut v,
    };
    let self_issued = c.subject().as_raw() == c.issuer().as_raw();

    // Serial number (the raw two's-complement content octets).
    let serial = c.raw_serial();
    if serial.first().is_some_and(|b| b & 0x80 != 0) {
        o.hit("serial-negative", "the serial number is negative".into());
    } else if serial.iter().all(|b| *b == 0) {
        if role == Role::Root {
            o.hit("serial-zero-anchor", "the serial number is zero".into());
        } else {
            o.hit("serial-zero", "the serial number is zero".into());
        }
    }
    if serial.len() > 20 {
        o.hit(
            "serial-too-long",
            format!("the serial number is {} octets long", serial.len()),
        );
    }

    let exts = c.extensions();
    if !exts.is_empty() && c.version().0 != 2 {
        o.hit(
            "version-not-v3",
            format!(
                "the certificate is version {} but has extensions",
                c.version().0 + 1
            ),
        );
    }

    let mut seen: Vec<String> = Vec::new();
    let (mut aki, mut ski, mut ku, mut bc, mut eku, mut san) = (None, None, None, None, None, None);
    let mut san_critical = false;
    for e in exts {
        let oid = e.oid.to_id_string();
        if seen.contains(&oid) {
            o.hit(
                "extension-duplicate",
                format!("the extension {oid} appears more than once"),
            );
        }
        seen.push(oid.clone());
        match e.parsed_extension() {
            ParsedExtension::ParseError { error } => {
                if oid == OID_AIA {
                    o.hit(
                        "aia-malformed",
                        format!("the authorityInfoAccess extension does not parse ({error})"),
                    );
                } else if oid == OID_NC {
                    o.hit(
                        "name-constraints-empty",
                        format!("the nameConstraints extension does not parse ({error})"),
                    );
                } else {
                    o.hit(
                        "extension-malformed",
                        format!("the extension {oid} does not parse ({error})"),
                    );
                }
            }
            ParsedExtension::UnsupportedExtension { .. } if e.critical => o.hit(
                "unknown-critical-extension",
                format!("the critical extension {oid} is not recognized"),
            ),
            ParsedExtension::AuthorityKeyIdentifier(a) => aki = Some((a, e.critical)),
            ParsedExtension::SubjectKeyIdentifier(k) => ski = Some((k, e.critical)),
            ParsedExtension::KeyUsage(k) => ku = Some(k),
            ParsedExtension::BasicConstraints(b) => bc = Some((b, e.critical)),
            ParsedExtension::ExtendedKeyUsage(x) => eku = Some((x, e.critical)),
            ParsedExtension::SubjectAlternativeName(s) => {
                san = Some(s);
                san_critical = e.critical;
            }
            ParsedExtension::NameConstraints(nc) => {
                if !role.is_ca() {
                    o.hit(
                        "name-constraints-in-ee",
                        "the end-entity certificate carries nameConstraints".into(),
                    );
                }
                if !e.critical {
                    o.hit(
                        "name-constraints-not-critical",
                        "the nameConstraints extension is not critical".into(),
                    );
                }
                let p = nc.permitted_subtrees.as_ref().map_or(0, Vec::len);
                let x = nc.excluded_subtrees.as_ref().map_or(0, Vec::len);
                if p == 0 && x == 0 {
                    o.hit(
                        "name-constraints-empty",
                        "nameConstraints has neither permitted nor excluded subtrees".into(),
                    );
                } else if (nc.permitted_subtrees.is_some() && p == 0)
                    || (nc.excluded_subtrees.is_some() && x == 0)
                {
                    o.hit(
                        "name-constraints-empty",
                        "nameConstraints has an empty list of subtrees".into(),
                    );
                }
                let all = nc
                    .permitted_subtrees
                    .iter()
                    .chain(nc.excluded_subtrees.iter());
                for t in all.flatten() {
                    if let GeneralName::DNSName(d) = &t.base {
                        if !d.is_empty() && !dns_syntax_ok(d, false) {
                            o.hit(
                                "name-constraints-dns-invalid",
                                format!("the dNSName constraint {d:?} is not a valid domain name"),
                            );
                        }
                    }
                }
            }
            ParsedExtension::PolicyConstraints(_) if !e.critical => o.hit(
                "policy-constraints-not-critical",
                "the policyConstraints extension is not critical".into(),
            ),
            ParsedExtension::AuthorityInfoAccess(a) => {
                if a.accessdescs.is_empty() {
                    o.hit(
                        "aia-malformed",
                        "the authorityInfoAccess extension has no AccessDescription".into(),
                    );
                }
                if e.critical {
                    o.hit(
                        "aia-critical",
                        "the authorityInfoAccess extension is critical".into(),
                    );
                }
            }
            _ => {}
        }
    }

    // Subject and SAN.
    let subject_empty = c.subject().iter().next().is_none();
    if subject_empty && role.is_ca() {
        o.hit(
            "ca-subject-empty",
            "the CA certificate's subject is empty".into(),
        );
    }
    match (&san, subject_empty) {
        (None, true) => o.hit(
            "subject-empty-without-san",
            "the subject is empty and there is no subjectAltName".into(),
        ),
        (Some(_), true) if !san_critical => o.hit(
            "san-not-critical-with-empty-subject",
            "the subject is empty but the subjectAltName extension is not critical".into(),
        ),
        (Some(_), false) if san_critical => o.hit(
            "san-critical-with-subject",
            "the subjectAltName extension is critical although the subject is not empty".into(),
        ),
        _ => {}
    }
    if let Some(s) = &san {
        if s.general_names.is_empty() {
            o.hit("san-empty", "the subjectAltName extension is empty".into());
        }
        for n in &s.general_names {
            if let GeneralName::DNSName(d) = n {
                if !dns_syntax_ok(d, true) {
                    o.hit(
                        "san-dns-invalid",
                        format!("the dNSName {d:?} is not in preferred name syntax"),
                    );
                } else if let Some(rest) = d.strip_prefix("*.") {
                    match suffixes::classify(rest) {
                        Some(suffixes::Kind::Icann) => o.hit(
                            "san-wildcard-public-suffix",
                            format!("the wildcard {d:?} covers the public suffix {rest:?}"),
                        ),
                        Some(suffixes::Kind::Private) => o.hit(
                            "san-wildcard-private-suffix",
                            format!("the wildcard {d:?} covers the private public suffix {rest:?}"),
                        ),
                        None => {}
                    }
                }
            }
        }
    }
    if role == Role::Leaf {
        for n in san.iter().flat_map(|s| s.general_names.iter()) {
            if let GeneralName::URI(u) = n {
                if mutual_policy::SpiffeId::is_trust_domain_id(u) {
                    o.hit(
                        "svid-leaf-root-path",
                        format!("the leaf's SPIFFE ID {u:?} is the trust domain's own ID"),
                    );
                }
            }
        }
        let cns: Vec<String> = c
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().map(str::to_string).unwrap_or_default())
            .collect();
        let names: Vec<String> = san
            .iter()
            .flat_map(|s| s.general_names.iter())
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some((*d).to_string()),
                GeneralName::URI(u) => Some((*u).to_string()),
                GeneralName::RFC822Name(m) => Some((*m).to_string()),
                GeneralName::IPAddress(b) => ip_text(b),
                _ => None,
            })
            .collect();
        if san.is_some() {
            for cn in &cns {
                match mutual_policy::cn::against_sans(cn, &names) {
                    CnVsSans::Verbatim => {}
                    CnVsSans::OtherForm(same) => o.hit(
                        "cn-san-not-verbatim",
                        format!("the commonName {cn:?} names the subjectAltName value {same:?} in another form"),
                    ),
                    CnVsSans::Idn => o.hit(
                        "cn-san-not-verbatim",
                        format!("the commonName {cn:?} is an internationalized domain name; a dNSName is ASCII (A-labels)"),
                    ),
                    CnVsSans::NotASan => o.hit(
                        "cn-not-in-san",
                        format!("the commonName {cn:?} is not one of the subjectAltName values {names:?}"),
                    ),
                }
            }
        }
    }

    // Key identifiers.
    match &aki {
        None if !self_issued => o.hit(
            "aki-missing",
            "the certificate is not self-issued and has no authorityKeyIdentifier".into(),
        ),
        None => {}
        Some((a, critical)) => {
            if *critical {
                o.hit(
                    "aki-critical",
                    "the authorityKeyIdentifier extension is critical".into(),
                );
            }
            if a.key_identifier.is_none() {
                o.hit(
                    "aki-no-key-identifier",
                    "the authorityKeyIdentifier has no keyIdentifier".into(),
                );
            }
            if a.authority_cert_issuer.is_some() || a.authority_cert_serial.is_some() {
                o.hit(
                    "aki-issuer-and-serial",
                    "the authorityKeyIdentifier names the issuer's issuer and serial".into(),
                );
            }
            if self_issued && role == Role::Root {
                if let (Some(k), Some((s, _))) = (&a.key_identifier, &ski) {
                    if k.0 != s.0 {
                        o.hit(
                            "aki-ski-mismatch",
                            format!(
                                "authorityKeyIdentifier {} differs from subjectKeyIdentifier {}",
                                hex::encode(k.0),
                                hex::encode(s.0)
                            ),
                        );
                    }
                }
            }
        }
    }
    match &ski {
        None if role.is_ca() => o.hit(
            "ski-missing-ca",
            "the CA certificate has no subjectKeyIdentifier".into(),
        ),
        None => o.hit(
            "ski-missing-ee",
            "the end-entity certificate has no subjectKeyIdentifier".into(),
        ),
        Some((_, true)) => o.hit(
            "ski-critical",
            "the subjectKeyIdentifier extension is critical".into(),
        ),
        Some(_) => {}
    }

    // CA-ness: basicConstraints and keyUsage agree.
    let ca_asserted = bc.as_ref().is_some_and(|(b, _)| b.ca);
    if role.is_ca() {
        match &bc {
            None => o.hit(
                "ca-basic-constraints-missing",
                "the CA certificate has no basicConstraints extension".into(),
            ),
            Some((b, _)) if !b.ca => o.hit(
                "ca-basic-constraints-missing",
                "the CA certificate's basicConstraints does not assert cA".into(),
            ),
            Some((_, false)) => o.hit(
                "ca-basic-constraints-not-critical",
                "the CA certificate's basicConstraints extension is not critical".into(),
            ),
            Some(_) => {}
        }
        if ku.is_none() {
            o.hit(
                "ca-key-usage-missing",
                "the CA certificate has no keyUsage extension".into(),
            );
        }
    }
    if let Some(k) = &ku {
        if ca_asserted && !k.key_cert_sign() {
            o.hit(
                "ca-without-keycertsign",
                "basicConstraints asserts cA but keyUsage lacks keyCertSign".into(),
            );
        }
        if !ca_asserted && k.key_cert_sign() {
            o.hit(
                "keycertsign-without-ca",
                "keyUsage asserts keyCertSign but basicConstraints does not assert cA".into(),
            );
        }
    }
    if let Some((b, _)) = &bc {
        if !b.ca && b.path_len_constraint.is_some() {
            o.hit(
                "pathlen-without-ca",
                "pathLenConstraint is present but cA is not asserted".into(),
            );
        }
    }

    // Extended key usage.
    match (role, &eku) {
        (Role::Leaf, None) => o.hit(
            "ee-eku-missing",
            "the end-entity certificate has no extendedKeyUsage".into(),
        ),
        (Role::Leaf, Some((x, critical))) => {
            if x.any {
                o.hit(
                    "ee-eku-any",
                    "the extendedKeyUsage contains anyExtendedKeyUsage".into(),
                );
            }
            if *critical {
                o.hit(
                    "ee-eku-critical",
                    "the extendedKeyUsage extension is critical".into(),
                );
            }
        }
        (Role::Root, Some(_)) if self_issued => o.hit(
            "root-eku-present",
            "the root CA certificate carries an extendedKeyUsage".into(),
        ),
        _ => {}
    }

    // Key size.
    if let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = c.public_key().parsed() {
        let bits = mutual_policy::facts::rsa_bits(rsa.modulus);
        if mutual_policy::facts::RsaSizeProblem::of(bits).is_some() {
            o.hit(
                "rsa-modulus-size",
                format!("the RSA modulus is {bits} bits"),
            );
        }
    }
    v
}

/// The strict profile's check on the name a peer was verified for: a DNS name the leaf
/// matches only through wildcards over a public suffix (ICANN or private) is refused, as
/// browsers refuse `*.co.uk` and `*.s3.amazonaws.com` for `example.co.uk`.
pub fn lint_name_match(leaf: &[u8], name: &str) -> Option<Finding> {
    let (_, c) = X509Certificate::from_der(leaf).ok()?;
    let san = c.subject_alternative_name().ok()??;
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let mut via_suffix_wildcard = None;
    for n in &san.value.general_names {
        let GeneralName::DNSName(d) = n else { continue };
        let d = d.strip_suffix('.').unwrap_or(d).to_ascii_lowercase();
        if d == name {
            return None;
        }
        if let Some(base) = d.strip_prefix("*.") {
            let matches = name.split_once('.').is_some_and(|(_, rest)| rest == base);
            if matches {
                if suffixes::classify(base).is_some() {
                    via_suffix_wildcard = Some(d.clone());
                } else {
                    return None;
                }
            }
        }
    }
    let w = via_suffix_wildcard?;
    let mut v = Vec::new();
    let mut o = Out {
        role: "leaf",
        subject: c.subject().to_string(),
        v: &mut v,
    };
    o.hit(
        "name-matched-by-suffix-wildcard",
        format!("{name:?} is matched only by the wildcard {w:?}, which covers a public suffix"),
    );
    v.pop()
}

/// An IP SAN in its canonical text (RFC 3986 dotted quad; RFC 5952 for IPv6, which is what
/// Rust's `Display` writes).
fn ip_text(b: &[u8]) -> Option<String> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b)
            .ok()
            .map(|a| IpAddr::from(a).to_string()),
        16 => <[u8; 16]>::try_from(b)
            .ok()
            .map(|a| IpAddr::from(a).to_string()),
        _ => None,
    }
}

/// RFC 1034 preferred name syntax (as RFC 5280 4.2.1.6 requires), letters, digits and hyphens
/// per label, no empty label; a `*` allowed only as the whole leftmost label when `wildcard`.
fn dns_syntax_ok(name: &str, wildcard: bool) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    for (i, label) in name.split('.').enumerate() {
        if i == 0 && wildcard && label == "*" {
            continue;
        }
        if label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return false;
        }
    }
    true
}

/// Lints a verified path, leaf first and trust anchor last: every certificate in its role, the
/// anchor's validity at `at` (Unix seconds; `None` skips it), and each CRL issued by a CA of
/// the path (its own rules and its issuer's cRLSign).
pub fn lint_path(path: &[&[u8]], at: Option<i64>, crls: &[&[u8]]) -> Vec<Finding> {
    let mut v = Vec::new();
    let n = path.len();
    for (i, der) in path.iter().enumerate() {
        let role = match i {
            0 => Role::Leaf,
            i if i + 1 == n => Role::Root,
            _ => Role::Intermediate,
        };
        v.extend(lint_cert(der, role));
        if let (Some(t), Ok((_, c))) = (at, X509Certificate::from_der(der)) {
            let nb = c.validity().not_before.timestamp();
            let na = c.validity().not_after.timestamp();
            if t < nb || t > na {
                let mut o = Out {
                    role: role.label(),
                    subject: c.subject().to_string(),
                    v: &mut v,
                };
                o.hit(
                    "validity-anchor",
                    format!(
                        "the certificate is valid from {} to {}, not at {}",
                        mutual_policy::human::rfc3339(nb),
                        mutual_policy::human::rfc3339(na),
                        mutual_policy::human::rfc3339(t)
                    ),
                );
            }
        }
    }
    for crl in crls {
        let Ok((_, parsed)) = CertificateRevocationList::from_der(crl) else {
            continue;
        };
        // The CA of this path that issued the CRL (by name), if any; CRLs of other CAs are
        // not part of this path's check.
        let issuer = path.iter().skip(1).find_map(|der| {
            X509Certificate::from_der(der)
                .ok()
                .filter(|(_, c)| c.subject().as_raw() == parsed.issuer().as_raw())
                .map(|(_, c)| c)
        });
        let Some(issuer) = issuer else { continue };
        v.extend(lint_crl(crl));
        if let Ok(Some(ku)) = issuer.key_usage() {
            if !ku.value.crl_sign() {
                let mut o = Out {
                    role: "crl",
                    subject: parsed.issuer().to_string(),
                    v: &mut v,
                };
                o.hit(
                    "crl-issuer-without-crlsign",
                    "the CRL's issuer has a keyUsage without cRLSign".into(),
                );
            }
        }
    }
    v
}

/// Lints a CRL on its own.
pub fn lint_crl(der: &[u8]) -> Vec<Finding> {
    let mut v = Vec::new();
    let Ok((_, crl)) = CertificateRevocationList::from_der(der) else {
        return v;
    };
    let mut o = Out {
        role: "crl",
        subject: crl.issuer().to_string(),
        v: &mut v,
    };
    let mut number = None;
    let mut aki_kid = false;
    for e in crl.extensions() {
        let oid = e.oid.to_id_string();
        if oid == OID_CRL_NUMBER {
            number = Some(e.critical);
        }
        if let ParsedExtension::AuthorityKeyIdentifier(a) = e.parsed_extension() {
            aki_kid = a.key_identifier.is_some();
        }
        if let ParsedExtension::ParseError { error } = e.parsed_extension() {
            o.hit(
                "extension-malformed",
                format!("the CRL extension {oid} does not parse ({error})"),
            );
        }
    }
    match number {
        None => o.hit("crl-number-missing", "the CRL has no cRLNumber".into()),
        Some(true) => o.hit(
            "crl-number-critical",
            "the cRLNumber extension is critical".into(),
        ),
        Some(false) => {}
    }
    if !aki_kid {
        o.hit(
            "crl-aki-missing",
            "the CRL has no authorityKeyIdentifier keyIdentifier".into(),
        );
    }
    if crl.next_update().is_none() {
        o.hit(
            "crl-next-update-missing",
            "the CRL has no nextUpdate".into(),
        );
    }
    v
}

/// What a file held and what the lint found in it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FileReport {
    /// How many certificates and CRLs were read.
    pub certificates: usize,
    pub crls: usize,
    pub findings: Vec<Finding>,
}

/// Lints the contents of a file: PEM (any number of CERTIFICATE and X509 CRL blocks) or one
/// DER certificate or CRL. Several certificates are a chain, leaf first: the first is linted
/// as the leaf, the last as a root when self-issued, the others as intermediates; a single
/// certificate's role comes from its own extensions ([`guess_role`]). `Err` says why the
/// input is not a certificate or CRL at all.
pub fn lint_bytes(bytes: &[u8]) -> Result<FileReport, String> {
    use rustls_pki_types::pem::{PemObject, SectionKind};
    let mut certs: Vec<Vec<u8>> = Vec::new();
    let mut crls: Vec<Vec<u8>> = Vec::new();
    let looks_pem = bytes.windows(11).any(|w| w == b"-----BEGIN ");
    if looks_pem {
        for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
            match item {
                Ok((SectionKind::Certificate, der)) => certs.push(der),
                Ok((SectionKind::Crl, der)) => crls.push(der),
                Ok(_) => {}
                Err(e) => return Err(format!("the PEM does not parse ({e:?})")),
            }
        }
        if certs.is_empty() && crls.is_empty() {
            return Err("no CERTIFICATE or X509 CRL block in the PEM".into());
        }
    } else if X509Certificate::from_der(bytes).is_ok() {
        certs.push(bytes.to_vec());
    } else if CertificateRevocationList::from_der(bytes).is_ok() {
        crls.push(bytes.to_vec());
    } else {
        return Err("neither a PEM file nor a DER certificate or CRL".into());
    }
    for (i, c) in certs.iter().enumerate() {
        if let Err(e) = X509Certificate::from_der(c) {
            return Err(format!("certificate #{} does not parse ({e})", i + 1));
        }
    }
    for (i, c) in crls.iter().enumerate() {
        if let Err(e) = CertificateRevocationList::from_der(c) {
            return Err(format!("CRL #{} does not parse ({e})", i + 1));
        }
    }
    let mut findings = Vec::new();
    let n = certs.len();
    for (i, der) in certs.iter().enumerate() {
        let role = match (n, i) {
            (1, _) => guess_role(der),
            (_, 0) => Role::Leaf,
            (_, i) if i + 1 == n && guess_role(der) == Role::Root => Role::Root,
            _ => Role::Intermediate,
        };
        findings.extend(lint_cert(der, role));
    }
    for der in &crls {
        findings.extend(lint_crl(der));
    }
    Ok(FileReport {
        certificates: certs.len(),
        crls: crls.len(),
        findings,
    })
}

/// Whether the findings contain an error.
pub fn has_error(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}

#[cfg(test)]
mod tests;
