//! Revocation lists, one per issuing intermediate (ca/issuers.rs). Each CRL is signed once per change and stored in the
//! inventory ([`Ca::publish_crl`]); every `ca serve` replica serves the stored one and checks
//! with one cheap query whether it is still current ([`Ca::refresh_crl`]), so replicas agree on
//! one CRL and CRL numbers (from the database) only increase. The root's CRL (`ca crl --root`)
//! needs the root key and is signed on demand.
use std::time::Duration;

use mutual_store::{Inventory, StoredCrl};
use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use super::{later, now, Ca, Issuer, ROOT_CRL_COUNTER};
use crate::{rfc3339, PkiError, RevocationReason};

impl Ca {
    /// A CRL (DER) signed by the root, for the certificates the root issued: the intermediate.
    /// Relying parties that check every certificate in the chain (nginx's `ssl_crl`, `serve
    /// --crl` without `--crl-leaf-only`) need it beside the intermediate's CRL. No command
    /// revokes an intermediate (a compromised one means a new CA), so the list is empty; what
    /// matters is a current CRL from the root. Needs the root key: it is decrypted with
    /// `password` for this call only, and its absence (moved offline, as advised) is
    /// [`PkiError::RootKeyOffline`].
    pub async fn root_crl(
        &self,
        password: &[u8],
        next_update: Duration,
    ) -> Result<Vec<u8>, PkiError> {
        let root_key = super::issuers::root_key(&self.dir, &self.config, &self.root_der, password)?;
        let issuer = rcgen::Issuer::from_ca_cert_der(
            &CertificateDer::from(self.root_der.as_slice()),
            &root_key,
        )?;
        let number = self.store.next_counter(ROOT_CRL_COUNTER).await?;
        Ok(sign_crl(&issuer, &self.root_der, Vec::new(), number, next_update)?.der)
    }

    /// A CRL (DER) signed by the default intermediate, listing every revoked certificate it
    /// signed with its reason, with a CRL number one higher than any issued before; it becomes
    /// the stored current CRL that every `ca serve` replica serves ([`Ca::publish_crl`]).
    pub async fn crl(&self, next_update: Duration) -> Result<Vec<u8>, PkiError> {
        Ok(self.publish_crl(next_update).await?.der.to_vec())
    }

    /// [`Ca::crl`] for the issuer `id` (each intermediate signs the CRL of its own
    /// certificates, a retiring one until its last certificate expires).
    pub async fn crl_for(&self, id: &str, next_update: Duration) -> Result<Vec<u8>, PkiError> {
        Ok(self.publish_crl_for(id, next_update).await?.der.to_vec())
    }

    /// [`Ca::publish_crl_for`] the default issuer.
    pub async fn publish_crl(&self, next_update: Duration) -> Result<CurrentCrl, PkiError> {
        let id = self.issuers().default_issuer().id.clone();
        self.publish_crl_for(&id, next_update).await
    }

    /// The issuer `id`, active or retiring.
    fn issuer_by_id(&self, id: &str) -> Result<std::sync::Arc<Issuer>, PkiError> {
        let set = self.issuers();
        set.get(id).cloned().ok_or_else(|| PkiError::UnknownIssuer {
            selector: id.to_string(),
            active: set
                .all()
                .iter()
                .map(|i| i.id.clone())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Signs a new CRL of every revoked certificate issuer `id` signed and stores it as its
    /// current one. When another replica stored a newer one meanwhile, that one is returned
    /// instead (both list the same revocations or more: the higher number wins, the store never
    /// goes back).
    pub async fn publish_crl_for(
        &self,
        id: &str,
        next_update: Duration,
    ) -> Result<CurrentCrl, PkiError> {
        let issuer = self.issuer_by_id(id)?;
        let revoked = self.store.revoked_for_issuer(id).await?;
        let mut entries = Vec::with_capacity(revoked.len());
        for r in revoked {
            let serial = hex::decode(&r.serial).map_err(|_| PkiError::InvalidSerial {
                input: r.serial.clone(),
            })?;
            let reason = r
                .reason
                .as_deref()
                .and_then(|s| s.parse::<RevocationReason>().ok())
                .unwrap_or_default();
            entries.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: OffsetDateTime::from_unix_timestamp(r.revoked_at)
                    .unwrap_or_else(|_| now()),
                reason_code: reason.to_rcgen(),
                invalidity_date: None,
            });
        }
        // Checked before a CRL number is taken: a refused request must not use one up.
        let t0 = now();
        let next = later(t0, next_update, "--next-update")?;
        if next > issuer.not_after() {
            return Err(PkiError::BeyondIntermediate {
                what: "--next-update",
                requested: rfc3339(next),
                limit: rfc3339(issuer.not_after()),
            });
        }
        let count = entries.len();
        let number = self.store.next_counter(&issuer.crl_counter()).await?;
        let signed = sign_crl(issuer.signer()?, issuer.der(), entries, number, next_update)?;
        let stored = StoredCrl {
            number,
            der: signed.der,
            this_update: signed.this_update,
            next_update: signed.next_update,
        };
        if self.store.store_issuer_crl(id, &stored).await? {
            return Ok(CurrentCrl::from_stored(id, stored, count));
        }
        // A newer one is stored (another replica, at the same moment): serve that one.
        match self.store.issuer_crl(id).await? {
            Some(newer) => CurrentCrl::parse(id, newer),
            None => Ok(CurrentCrl::from_stored(id, stored, count)),
        }
    }

    /// The CRL to serve: `cached` while it is still current, else the stored one if that is
    /// current, else a newly published one. Current means: it lists as many certificates as the
    /// inventory has revoked (a `cert revoke` elsewhere makes it stale), it is the stored one
    /// (or newer), and less than half of its validity has passed. One cheap query when nothing
    /// changed; `None` then (keep serving `cached`).
    pub async fn refresh_crl(
        &self,
        cached: Option<&CurrentCrl>,
        next_update: Duration,
    ) -> Result<Option<CurrentCrl>, PkiError> {
        let id = self.issuers().default_issuer().id.clone();
        self.refresh_crl_for(&id, cached, next_update).await
    }

    /// [`Ca::refresh_crl`] for the issuer `id`. A `cached` CRL of another issuer (the default
    /// changed since) counts as none.
    pub async fn refresh_crl_for(
        &self,
        id: &str,
        cached: Option<&CurrentCrl>,
        next_update: Duration,
    ) -> Result<Option<CurrentCrl>, PkiError> {
        let cached = cached.filter(|c| c.issuer == id);
        let state = self.store.crl_state_for(id).await?;
        let t = now().unix_timestamp();
        let half = i64::try_from(next_update.as_secs() / 2).unwrap_or(i64::MAX);
        let fresh = |c: &CurrentCrl| {
            i64::try_from(c.entries).unwrap_or(i64::MAX) == state.revoked
                && c.next_update.saturating_sub(t) > half
        };
        if let Some(c) = cached {
            if state.number.is_none_or(|n| n <= c.number) && fresh(c) {
                return Ok(None);
            }
        }
        if state
            .number
            .is_some_and(|n| cached.is_none_or(|c| n > c.number))
        {
            if let Some(stored) = self.store.issuer_crl(id).await? {
                let c = CurrentCrl::parse(id, stored)?;
                if fresh(&c) {
                    return Ok(Some(c));
                }
            }
        }
        self.publish_crl_for(id, next_update).await.map(Some)
    }
}

/// The CRL a replica serves, as stored for all of them.
#[derive(Clone, Debug)]
pub struct CurrentCrl {
    /// The intermediate that signed it.
    pub issuer: String,
    pub number: i64,
    pub der: std::sync::Arc<[u8]>,
    /// Unix seconds.
    pub this_update: i64,
    /// Unix seconds.
    pub next_update: i64,
    /// How many certificates it lists.
    pub entries: usize,
}

impl CurrentCrl {
    fn from_stored(issuer: &str, s: StoredCrl, entries: usize) -> CurrentCrl {
        CurrentCrl {
            issuer: issuer.to_string(),
            number: s.number,
            der: s.der.into(),
            this_update: s.this_update,
            next_update: s.next_update,
            entries,
        }
    }

    fn parse(issuer: &str, s: StoredCrl) -> Result<CurrentCrl, PkiError> {
        let (_, crl) = x509_parser::parse_x509_crl(&s.der).map_err(|_| PkiError::Malformed {
            detail: format!("the stored CRL number {} does not parse", s.number),
        })?;
        let entries = crl.iter_revoked_certificates().count();
        Ok(CurrentCrl::from_stored(issuer, s, entries))
    }
}

/// A signed CRL and its dates (Unix seconds).
struct SignedCrl {
    der: Vec<u8>,
    this_update: i64,
    next_update: i64,
}

/// Signs a CRL for `issuer` (whose certificate is `issuer_der`), keyed to the issuer's subject
/// key identifier so that relying parties find the right key.
fn sign_crl<S: rcgen::SigningKey>(
    issuer: &rcgen::Issuer<'_, S>,
    issuer_der: &[u8],
    entries: Vec<RevokedCertParams>,
    number: i64,
    next_update: Duration,
) -> Result<SignedCrl, PkiError> {
    let number_bytes = number.to_be_bytes();
    let first = number_bytes.iter().position(|b| *b != 0).unwrap_or(7);
    let t0 = now();
    let next = later(t0, next_update, "--next-update")?;
    let ski = match x509_parser::parse_x509_certificate(issuer_der) {
        Ok((_, c)) => c
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                    Some(k.0.to_vec())
                }
                _ => None,
            }),
        Err(_) => None,
    };
    // Whole seconds, so that what is stored equals what the CRL says.
    let this_update = (t0 - time::Duration::minutes(1))
        .replace_nanosecond(0)
        .unwrap_or(t0);
    let next = next.replace_nanosecond(0).unwrap_or(next);
    let params = CertificateRevocationListParams {
        this_update,
        next_update: next,
        crl_number: SerialNumber::from_slice(&number_bytes[first..]),
        issuing_distribution_point: None,
        revoked_certs: entries,
        key_identifier_method: match ski {
            Some(k) => KeyIdMethod::PreSpecified(k),
            None => KeyIdMethod::Sha256,
        },
    };
    Ok(SignedCrl {
        der: params.signed_by(issuer)?.der().to_vec(),
        this_update: this_update.unix_timestamp(),
        next_update: next.unix_timestamp(),
    })
}
