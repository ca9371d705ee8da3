//! The one JSON vocabulary every `--json` output uses (docs/json.md): instants as RFC 3339 UTC
//! strings with `_unix` integer companions, fingerprints and serials as lowercase hex without
//! colons or a leading `00`, the same field names for the same facts in every command.

#[cfg(test)]
use mutual_store::CertRecord;
use mutual_store::{EabKey, EstRequest, RegistrationEntry};
use serde_json::{json, Value};

pub use mutual_policy::human::rfc3339;

/// A fingerprint in the JSON form: lowercase hex, no colons (human output may keep colons).
pub fn fingerprint(s: &str) -> String {
    s.chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// A request held for manual approval (`cert pending --json`, `cert approve|reject --json`):
/// `names` as an array, the instants in both forms. The store keeps `names` as JSON text.
pub fn est_request(r: &EstRequest) -> Value {
    let names: Vec<String> = serde_json::from_str(&r.names).unwrap_or_default();
    json!({
        "id": r.id,
        "label": r.label,
        "status": r.status,
        "names": names,
        "requested_by": r.requested_by,
        "created_at": rfc3339(r.created_at),
        "created_at_unix": r.created_at,
        "decided_at": r.decided_at.map(rfc3339),
        "decided_at_unix": r.decided_at,
        "decided_by": r.decided_by,
        "serial": r.serial,
    })
}

/// A registration entry (`agent entry create|list --json`): `ttl` in seconds, as `token create
/// --json` says it; the instant in both forms.
pub fn entry(e: &RegistrationEntry) -> Value {
    json!({
        "id": e.id,
        "spiffe_id": e.spiffe_id,
        "selectors": e.selectors,
        "node": e.node,
        "ttl": e.ttl_secs,
        "created_at": rfc3339(e.created_at),
        "created_at_unix": e.created_at,
        "created_by": e.created_by,
    })
}

/// An External Account Binding key (`acme eab list --json`): never its HMAC key.
pub fn eab_key(k: &EabKey) -> Value {
    json!({
        "kid": k.kid,
        "label": k.label,
        "created_at": rfc3339(k.created_at),
        "created_at_unix": k.created_at,
        "account": k.account_id,
        "bound_at": k.bound_at.map(rfc3339),
        "bound_at_unix": k.bound_at,
    })
}

/// One inventory row, as `cert list --json` printed it before it streamed: the reference shape
/// that cmd_cert.rs's `ListRow` is tested against.
#[cfg(test)]
pub fn record(r: &CertRecord) -> Value {
    let mut v = json!({
        "serial": r.serial,
        "name": r.name,
        "subject": r.subject,
        "sans": r.sans,
        "usage": r.usage,
        "status": r.status.as_str(),
        "not_before": rfc3339(r.not_before),
        "not_before_unix": r.not_before,
        "not_after": rfc3339(r.not_after),
        "not_after_unix": r.not_after,
        "revoked_at": r.revoked_at.map(rfc3339),
        "revoked_at_unix": r.revoked_at,
        "reason": r.reason,
        "requested_by": r.requested_by,
        "sha256": fingerprint(&r.sha256),
        "created_at": rfc3339(r.created_at),
        "created_at_unix": r.created_at,
        "issuer": r.issuer,
        "key_type": r.key_type,
    });
    if let (Some(by), Some(obj)) = (&r.revoked_by, v.as_object_mut()) {
        obj.insert("revoked_by".into(), json!(by));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(fingerprint("AB:cd:01"), "abcd01");
    }
}
