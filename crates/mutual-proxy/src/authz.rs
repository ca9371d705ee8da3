//! Authorization, in one place: whether a verified peer may have a connection (TCP mode: inside
//! the handshake, see [`handshake_check`]; HTTP mode: whether any rule names it, after it), whether an
//! HTTP request may pass, and whether an established connection still may live after a reload
//! ([`recheck`], live re-authorization). Every decision goes through [`mutual_policy::Policy`]'s
//! two entry points: `authorize_tcp` for a whole connection, `authorize` for HTTP.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use mutual_policy::{Identity, Policy};
use mutual_tls::{Leaf, LeafFacts, Reason, VerifiedPeer, Wanted};

use crate::material::{Material, Mode};

/// Whether `id` may have a connection in `mode`. TCP mode: a rule that lists methods or paths
/// never grants a byte pipe. HTTP mode: whether any rule names this identity (each request is
/// then decided by [`request`]; a peer no rule names still gets readable 403s).
pub fn connection(policy: &Policy, mode: Mode, id: &Identity) -> bool {
    match mode {
        Mode::Tcp => policy.authorize_tcp(id).allowed,
        Mode::Http => policy.authorize(id, None).allowed,
    }
}

/// Whether one HTTP request of `id` may pass.
pub fn request(policy: &Policy, id: &Identity, method: &str, path: &str) -> bool {
    policy
        .authorize(id, Some(&mutual_policy::Request { method, path }))
        .allowed
}

/// Whether an established connection's peer still passes `m` (a reload published it): the
/// chain against its trust (CRLs, CA) and the identity against its policy. `Ok`: still allowed.
///
/// Expiry after the handshake is not a reason here: whether a connection survives must not
/// depend on an unrelated reload. An expired chain is checked as of the second before the
/// leaf's notAfter (trust, revocation, policy still apply); ending connections at expiry is
/// `--end-on-peer-expiry`'s job, on a timer.
pub fn recheck(m: &Material, peer: &VerifiedPeer) -> Result<(), (Reason, String)> {
    let mut checked = m.server.recheck_peer(&peer.chain);
    if matches!(checked, Err((Reason::Expired, _))) {
        let before_expiry = u64::try_from(peer.id.not_after.saturating_sub(1)).unwrap_or(0);
        checked = m.server.recheck_peer_at(
            &peer.chain,
            rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                before_expiry,
            )),
        );
    }
    checked?;
    if !connection(&m.policy, m.mode, &peer.id) {
        return Err((
            Reason::PolicyDenied,
            "no rule of the new policy allows this peer".into(),
        ));
    }
    Ok(())
}

/// What the handshake's policy check read from the leaf (from the verifier's own parse of
/// it: identity, and names/algorithms as the listener wants them) and what it decided.
pub struct Checked {
    pub facts: LeafFacts,
    pub allowed: bool,
}

tokio::task_local! {
    static CHECKED: RefCell<Option<Checked>>;
}

/// Asked by the verifier inside the handshake, with its parse of the leaf: reads what the
/// listener `wanted` from it (so [`VerifiedPeer::of`] need not parse the leaf again) and, in
/// TCP mode, decides the connection there (so a denied peer gets an `access_denied` alert;
/// HTTP mode lets every verified peer finish the handshake and answers 403 per request).
/// Run the handshake inside [`with_handshake_check`] to learn what it read and decided.
pub fn handshake_check(policy: Arc<Policy>, mode: Mode, wanted: Wanted) -> mutual_tls::PeerCheck {
    mutual_tls::PeerCheck(Arc::new(move |leaf: &Leaf<'_>| {
        // A leaf whose names do not parse is refused after the handshake as `malformed`.
        let Ok(facts) = leaf.facts(wanted) else {
            return true;
        };
        let allowed = mode == Mode::Http || connection(&policy, Mode::Tcp, &facts.id);
        let _ = CHECKED.try_with(|slot| *slot.borrow_mut() = Some(Checked { facts, allowed }));
        allowed
    }))
}

/// Runs a handshake and returns what its [`handshake_check`] read and decided, if it ran (it
/// does not on a resumed session).
pub async fn with_handshake_check<F: Future>(hs: F) -> (F::Output, Option<Checked>) {
    CHECKED
        .scope(RefCell::new(None), async move {
            let out = hs.await;
            (out, CHECKED.with(|slot| slot.borrow_mut().take()))
        })
        .await
}
