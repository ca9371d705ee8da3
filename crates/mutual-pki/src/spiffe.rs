//! SPIFFE IDs for the CA: the one parser lives in mutual-policy (the proxy matches identities
//! with the same rules the CA signs them by); this module only turns its errors into PkiError so
//! `cert issue` reports them like every other bad input.

use crate::PkiError;

pub use mutual_policy::SpiffeId;

fn to_pki(e: mutual_policy::PolicyError, input: &str) -> PkiError {
    match e {
        mutual_policy::PolicyError::InvalidSpiffeId { id, why } => {
            PkiError::InvalidSpiffeId { id, detail: why }
        }
        other => PkiError::InvalidSpiffeId {
            id: input.to_string(),
            detail: other.to_string(),
        },
    }
}

/// Parses and checks a SPIFFE ID (SPIFFE-ID.md §2).
pub fn parse(input: &str) -> Result<SpiffeId, PkiError> {
    SpiffeId::parse(input).map_err(|e| to_pki(e, input))
}

/// Checks a trust domain name given to `ca init --trust-domain`.
pub fn validate_trust_domain(td: &str) -> Result<(), PkiError> {
    let id = parse(&format!("spiffe://{td}"))?;
    if !id.path().is_empty() {
        return Err(PkiError::InvalidSpiffeId {
            id: td.to_string(),
            detail: "a trust domain has no path".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn errors_become_pki_errors() {
        assert!(parse("spiffe://example.org/ns/prod/sa/web").is_ok());
        let e = parse("spiffe://example.org/a?x=1").unwrap_err();
        assert!(matches!(e, PkiError::InvalidSpiffeId { .. }));
        assert!(e.to_string().contains("query"), "{e}");
        assert!(validate_trust_domain("example.org").is_ok());
        assert!(validate_trust_domain("example.org/x").is_err());
        assert!(validate_trust_domain("Example.org").is_err());
    }
}
