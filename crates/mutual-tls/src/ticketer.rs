//! Session tickets sealed with one AEAD pass (AES-256-GCM), for the proxy's listeners (issue
//! 20; the CA server keeps rustls's session cache).
//!
//! rustls's aws-lc-rs `Ticketer` uses RFC 5077's recommended construction: AES-256-CBC, then
//! HMAC-SHA256 over the ciphertext, with the HMAC key set up again for every ticket. A TLS 1.3
//! ticket of an mTLS session carries the client's certificate chain (about 1.3 KiB with the
//! bench's P-256 chain), so each ticket costs a CBC pass and some twenty SHA-256 blocks: in the
//! callgrind profile of a resumed handshake the two tickets sealed and the one opened were 10%
//! of all instructions. AES-256-GCM (the construction rustls's ring provider uses with
//! ChaCha20-Poly1305) does the same job in one pass.
//!
//! The design is rustls's `AeadTicketer` on aws-lc-rs: a ticket is `key_name (16) || nonce (12)
//! || ciphertext || tag (16)`, the key name is authenticated as associated data, the nonce is
//! random (a counter would let an observer of ClientHellos, where tickets travel in clear, link
//! and count them), over-long tickets are refused before any decryption, and a
//! [`rustls::TicketRotator`] replaces the key every six hours (a ticket is accepted for at most
//! twice that), as rustls's own `Ticketer::new` does. Random 96-bit nonces stay far from a
//! collision: a key seals at most six hours of tickets (at 10,000 per second, 2^28 of them).

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// How long one key seals new tickets (seconds); it opens them for as long again.
pub const KEY_LIFETIME_SECS: u32 = 6 * 60 * 60;

const KEY_NAME_LEN: usize = 16;

/// A fresh ticketer (new keys): what every server config gets, so a rebuilt config (a reload)
/// refuses the tickets of the one before it.
pub fn new() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    Ok(Arc::new(rustls::TicketRotator::new(
        KEY_LIFETIME_SECS,
        AeadTicketer::boxed,
    )?))
}

/// One key's tickets (see the module doc).
struct AeadTicketer {
    key: LessSafeKey,
    key_name: [u8; KEY_NAME_LEN],
    /// The longest ticket sealed so far: a longer one is refused without opening it.
    longest: AtomicUsize,
}

impl AeadTicketer {
    fn boxed() -> Result<Box<dyn ProducesTickets>, rustls::crypto::GetRandomFailed> {
        let rng = SystemRandom::new();
        let mut key = [0u8; 32];
        let mut key_name = [0u8; KEY_NAME_LEN];
        rng.fill(&mut key)
            .and_then(|()| rng.fill(&mut key_name))
            .map_err(|_| rustls::crypto::GetRandomFailed)?;
        let key = UnboundKey::new(&aead::AES_256_GCM, &key)
            .map_err(|_| rustls::crypto::GetRandomFailed)?;
        Ok(Box::new(AeadTicketer {
            key: LessSafeKey::new(key),
            key_name,
            longest: AtomicUsize::new(0),
        }))
    }
}

impl ProducesTickets for AeadTicketer {
    fn enabled(&self) -> bool {
        true
    }

    /// What clients are told (the rotator's own answer wins): a key opens tickets for twice
    /// the time it seals them.
    fn lifetime(&self) -> u32 {
        2 * KEY_LIFETIME_SECS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let tag_len = self.key.algorithm().tag_len();
        let mut ticket = Vec::with_capacity(KEY_NAME_LEN + NONCE_LEN + plain.len() + tag_len);
        ticket.extend_from_slice(&self.key_name);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.key_name),
                &mut ticket[KEY_NAME_LEN + NONCE_LEN..],
            )
            .ok()?;
        ticket.extend_from_slice(tag.as_ref());
        self.longest.fetch_max(ticket.len(), Ordering::Relaxed);
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        // Refused unopened: longer than any we sealed (a partitioning oracle wants long ones).
        if ticket.len() > self.longest.load(Ordering::Relaxed) {
            return None;
        }
        let (name, rest) = ticket.split_at_checked(KEY_NAME_LEN)?;
        let (nonce, sealed) = rest.split_at_checked(NONCE_LEN)?;
        // Another key's ticket (the rotator tries the previous key next). Checked in constant
        // time, and authenticated again as associated data when opening.
        aws_lc_rs::constant_time::verify_slices_are_equal(name, &self.key_name).ok()?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut out = sealed.to_vec();
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(self.key_name), &mut out)
            .ok()?
            .len();
        out.truncate(plain_len);
        Some(out)
    }
}

impl fmt::Debug for AeadTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("AeadTicketer")
            .field("alg", &"AES-256-GCM")
            .field("key_lifetime", &KEY_LIFETIME_SECS)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn one() -> Box<dyn ProducesTickets> {
        AeadTicketer::boxed().unwrap()
    }

    #[test]
    fn a_ticket_opens_with_its_own_key_only() {
        let (t, other) = (one(), one());
        let plain = vec![7u8; 1300];
        let ticket = t.encrypt(&plain).unwrap();
        assert_eq!(ticket.len(), KEY_NAME_LEN + NONCE_LEN + plain.len() + 16);
        assert_ne!(
            &ticket[KEY_NAME_LEN + NONCE_LEN..][..16],
            &plain[..16],
            "sealed"
        );
        assert_eq!(t.decrypt(&ticket).unwrap(), plain);
        // Another ticketer (a reload's): refused.
        other.encrypt(&plain).unwrap();
        assert_eq!(other.decrypt(&ticket), None);
    }

    #[test]
    fn nonces_differ_and_tampering_is_refused() {
        let t = one();
        let a = t.encrypt(b"session").unwrap();
        let b = t.encrypt(b"session").unwrap();
        assert_ne!(a, b, "a fresh random nonce per ticket");
        for at in [0, KEY_NAME_LEN, KEY_NAME_LEN + NONCE_LEN, a.len() - 1] {
            let mut bad = a.clone();
            bad[at] ^= 1;
            assert_eq!(t.decrypt(&bad), None, "flipped byte {at}");
        }
        // Truncated anywhere, or longer than any sealed ticket: refused, no panic.
        for n in 0..a.len() {
            assert_eq!(t.decrypt(&a[..n]), None, "truncated to {n}");
        }
        let mut long = a.clone();
        long.push(0);
        assert_eq!(t.decrypt(&long), None);
    }

    #[test]
    fn the_rotator_it_comes_in_seals_and_opens() {
        let t = new().unwrap();
        assert!(t.enabled());
        // Clients are told twelve hours: a key seals for six and opens for twelve.
        assert_eq!(t.lifetime(), 2 * KEY_LIFETIME_SECS);
        let ticket = t.encrypt(b"x").unwrap();
        assert_eq!(t.decrypt(&ticket).unwrap(), b"x");
        assert_eq!(new().unwrap().decrypt(&ticket), None);
        assert!(!format!("{:?}", one()).contains("key:"));
    }
}
