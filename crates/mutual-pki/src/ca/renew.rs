//! Whether a certificate may renew itself (the key holder asking for its successor): the one
//! rule every renewal front door applies (`/v1/renew`, EST `simplereenroll`), so that the
//! grace window for devices that were offline when their certificate expired
//! (`ca serve --renew-grace`) means the same everywhere. Revoked never renews; expired renews
//! only within the grace, which is off by default and bounded by [`MAX_RENEW_GRACE`].
use std::time::Duration;

use crate::{CertRecord, Status};

/// The longest grace `--renew-grace` accepts: past this, a device re-enrolls from its factory
/// certificate or a token, as a new one would.
pub const MAX_RENEW_GRACE: Duration = Duration::from_secs(30 * 86_400);

/// How a certificate may renew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Not expired: an ordinary renewal.
    Valid,
    /// Expired `ago` seconds ago, within the grace: renewed, and recorded as such
    /// (`requested_by` says `...-grace:SERIAL`, the CA logs it).
    InGrace { ago: i64 },
}

/// Why a certificate may not renew; each maps to the CA's refusal label ([`RenewRefusal::reason`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenewRefusal {
    #[error("certificate {serial} is revoked")]
    Revoked { serial: String },
    #[error("certificate {serial} expired at {not_after}{grace}; enroll again")]
    Expired {
        serial: String,
        not_after: String,
        /// `""` without a grace, else `, beyond the renewal grace of 7d`.
        grace: String,
    },
}

impl RenewRefusal {
    /// `revoked` or `expired`: the CA's words.
    pub fn reason(&self) -> &'static str {
        match self {
            RenewRefusal::Revoked { .. } => "revoked",
            RenewRefusal::Expired { .. } => "expired",
        }
    }
}

/// The grace as given, refused beyond [`MAX_RENEW_GRACE`].
pub fn check_renew_grace(grace: Duration) -> Result<Duration, String> {
    if grace > MAX_RENEW_GRACE {
        return Err(format!(
            "--renew-grace {} is longer than the limit of {}",
            mutual_policy::human::duration(grace.as_secs()),
            mutual_policy::human::duration(MAX_RENEW_GRACE.as_secs())
        ));
    }
    Ok(grace)
}

/// May the certificate of `record` (whose holder just proved its key) renew at `now` with this
/// `grace` after expiry? `not_after` is the presented certificate's (the same as the record's
/// for our own certificates).
pub fn renewable(
    record: &CertRecord,
    not_after: i64,
    now: i64,
    grace: Duration,
) -> Result<Renewal, RenewRefusal> {
    if record.status == Status::Revoked {
        return Err(RenewRefusal::Revoked {
            serial: record.serial.clone(),
        });
    }
    let not_after = not_after.min(record.not_after);
    if not_after > now {
        return Ok(Renewal::Valid);
    }
    let ago = now - not_after;
    let grace_s = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    if grace_s > 0 && ago <= grace_s {
        return Ok(Renewal::InGrace { ago });
    }
    Err(RenewRefusal::Expired {
        serial: record.serial.clone(),
        not_after: mutual_policy::human::rfc3339(not_after),
        grace: if grace_s > 0 {
            format!(
                ", beyond the renewal grace of {}",
                mutual_policy::human::duration(grace.as_secs())
            )
        } else {
            String::new()
        },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn rec(status: Status, not_after: i64) -> CertRecord {
        CertRecord {
            serial: "ab".into(),
            name: "d".into(),
            subject: "CN=d".into(),
            sans: vec![],
            usage: "client".into(),
            not_before: 0,
            not_after,
            status,
            revoked_at: None,
            reason: None,
            requested_by: None,
            sha256: String::new(),
            created_at: 0,
            revoked_by: None,
            issuer: "int-1".into(),
            key_type: None,
        }
    }

    #[test]
    fn grace_rules() {
        let day = Duration::from_secs(86_400);
        assert_eq!(
            renewable(&rec(Status::Valid, 100), 100, 50, Duration::ZERO),
            Ok(Renewal::Valid)
        );
        // Expired, no grace: refused.
        let e = renewable(&rec(Status::Expired, 100), 100, 101, Duration::ZERO).unwrap_err();
        assert_eq!(e.reason(), "expired");
        // Within the grace.
        assert_eq!(
            renewable(&rec(Status::Expired, 100), 100, 100 + 3600, day),
            Ok(Renewal::InGrace { ago: 3600 })
        );
        // Past the grace.
        let e = renewable(&rec(Status::Expired, 100), 100, 100 + 86_401, day).unwrap_err();
        assert!(e.to_string().contains("beyond the renewal grace"), "{e}");
        // Revoked never renews, grace or not.
        let e = renewable(&rec(Status::Revoked, 100), 100, 50, day).unwrap_err();
        assert_eq!(e.reason(), "revoked");
        assert!(check_renew_grace(MAX_RENEW_GRACE + day).is_err());
        assert!(check_renew_grace(day).is_ok());
    }
}
