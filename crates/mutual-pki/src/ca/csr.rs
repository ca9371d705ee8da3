//! Certificate requests (PKCS#10), read once: [`Csr::parse`] decodes the request, notes its
//! public key, the names it asks for and whether its self-signature verifies. The CA uses only
//! the key ([`super::KeySource::Csr`]); the names are for a front door to compare with what the
//! requester may have (the online CA's token), never copied into the certificate as they are.
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::keys::KeyKind;
use crate::{PkiError, San};

/// A parsed certificate request.
#[derive(Clone, Debug)]
pub struct Csr {
    /// The SubjectPublicKeyInfo, DER.
    spki: Vec<u8>,
    kind: KeyKind,
    bits: usize,
    /// The SANs of its extensionRequest, or why they cannot be issued.
    sans: Result<Vec<San>, SanRefusal>,
    signature_ok: bool,
}

impl Csr {
    /// Decodes a CSR given as PEM (`CERTIFICATE REQUEST` / `NEW CERTIFICATE REQUEST`) or DER.
    /// Only a structurally broken request is an error here; a weak key or a bad signature is
    /// refused when the CA is asked to sign it ([`Csr::check`]), a name the CA never issues when
    /// its names are read ([`Csr::sans`]).
    pub fn parse(input: &[u8]) -> Result<Csr, PkiError> {
        let der = csr_der(input)?;
        let (rest, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der)
                // x509-parser's error text is nom/DER internals (`Der(UnexpectedTag { .. })`).
                .map_err(|_| PkiError::MalformedCsr {
                    detail: "not a valid PKCS#10 certificate request (truncated, or not a CSR)"
                        .into(),
                })?;
        if !rest.is_empty() {
            return Err(PkiError::MalformedCsr {
                detail: "trailing bytes after the CSR".into(),
            });
        }
        let spki = &req.certification_request_info.subject_pki;
        let (kind, bits) = KeyKind::of(spki);
        Ok(Csr {
            spki: spki.raw.to_vec(),
            kind,
            bits,
            sans: requested_sans(&req),
            signature_ok: req.verify_signature().is_ok(),
        })
    }

    /// The names the CSR asks for, in the CLI form; a name type the CA never issues (directory
    /// name, ...) is [`PkiError::InvalidSan`] so that the caller can refuse the request.
    pub fn sans(&self) -> Result<&[San], PkiError> {
        match &self.sans {
            Ok(s) => Ok(s),
            Err(SanRefusal::Malformed(detail)) => Err(PkiError::MalformedCsr {
                detail: detail.clone(),
            }),
            Err(SanRefusal::Invalid { input, detail }) => Err(PkiError::InvalidSan {
                input: input.clone(),
                detail: detail.clone(),
            }),
        }
    }

    /// The public key, SubjectPublicKeyInfo DER.
    pub fn public_key(&self) -> &[u8] {
        &self.spki
    }

    pub fn key_kind(&self) -> &KeyKind {
        &self.kind
    }

    /// The key's size in bits (RSA modulus, EC field).
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// Whether the CA may sign this request's key: strong enough, of a kind it issues for, and
    /// proven by the request's own signature.
    pub fn check(&self) -> Result<(), PkiError> {
        self.kind.check_issuable(self.bits, "the CSR's key")?;
        if !self.signature_ok {
            return Err(PkiError::CsrBadSignature);
        }
        Ok(())
    }
}

/// Why a CSR's names cannot be issued (kept apart from [`PkiError`], which is not `Clone`).
#[derive(Clone, Debug)]
enum SanRefusal {
    Malformed(String),
    Invalid { input: String, detail: String },
}

fn requested_sans(
    req: &x509_parser::certification_request::X509CertificationRequest<'_>,
) -> Result<Vec<San>, SanRefusal> {
    let mut out = Vec::new();
    let Some(exts) = req.requested_extensions() else {
        return Ok(out);
    };
    for ext in exts {
        let ParsedExtension::SubjectAlternativeName(san) = ext else {
            continue;
        };
        for name in &san.general_names {
            let text = match name {
                GeneralName::DNSName(d) => format!("dns:{d}"),
                GeneralName::URI(u) => format!("uri:{u}"),
                GeneralName::RFC822Name(e) => format!("email:{e}"),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => {
                        let a: [u8; 4] = [b[0], b[1], b[2], b[3]];
                        format!("ip:{}", std::net::IpAddr::from(a))
                    }
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(b);
                        format!("ip:{}", std::net::IpAddr::from(a))
                    }
                    _ => {
                        return Err(SanRefusal::Malformed(
                            "an IP address SAN of the wrong length".into(),
                        ))
                    }
                },
                other => {
                    return Err(SanRefusal::Invalid {
                        input: format!("{other:?}"),
                        detail: "only dns:, ip:, uri: and email: names can be issued".into(),
                    })
                }
            };
            match text.parse::<San>() {
                Ok(s) => out.push(s),
                Err(PkiError::InvalidSan { input, detail }) => {
                    return Err(SanRefusal::Invalid { input, detail })
                }
                Err(e) => {
                    return Err(SanRefusal::Invalid {
                        input: text,
                        detail: e.to_string(),
                    })
                }
            }
        }
    }
    Ok(out)
}

/// The SANs a CSR asks for (its extensionRequest's subjectAltName), in the CLI form: the
/// [`Csr::parse`] and [`Csr::sans`] steps together (the fuzzer's entry point). The CSR's
/// signature is not checked here.
pub fn csr_sans(csr: &[u8]) -> Result<Vec<San>, PkiError> {
    Ok(Csr::parse(csr)?.sans()?.to_vec())
}

/// Accepts a CSR as PEM (`CERTIFICATE REQUEST` / `NEW CERTIFICATE REQUEST`) or DER.
fn csr_der(input: &[u8]) -> Result<Vec<u8>, PkiError> {
    if input.windows(10).any(|w| w == b"-----BEGIN") {
        for p in x509_parser::pem::Pem::iter_from_buffer(input) {
            let p = p.map_err(|e| PkiError::MalformedCsr {
                detail: format!("bad PEM: {e}"),
            })?;
            if p.label == "CERTIFICATE REQUEST" || p.label == "NEW CERTIFICATE REQUEST" {
                return Ok(p.contents);
            }
        }
        return Err(PkiError::MalformedCsr {
            detail: "no CERTIFICATE REQUEST block found".into(),
        });
    }
    if input.first() != Some(&0x30) {
        return Err(PkiError::MalformedCsr {
            detail: "neither a PEM CERTIFICATE REQUEST nor DER".into(),
        });
    }
    Ok(input.to_vec())
}
