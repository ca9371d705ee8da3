//! The TLS 1.3 session tickets a client keeps (issue 20, the client side).
//!
//! A TLS 1.3 ticket is used once: every resumed connection takes one from the store and the
//! server sends one or two new ones after the handshake. rustls's `ClientSessionMemoryCache`
//! keeps at most 8 per server, which is plenty for a client that opens one connection at a time
//! and too few for `mutual connect`, which opens as many upstream connections at once as its own
//! clients open to it: with 16 at once a sixth of them found the store empty and made a full
//! handshake (two signatures, two verifications more on each side), with 32 at once nearly half
//! (counted from the ServerHellos on loopback). This store keeps up to [`TICKETS_PER_SERVER`]
//! per server for up to [`SERVERS`] servers; the rest (the key-exchange hint, TLS 1.2 sessions)
//! is rustls's cache as before.
//!
//! Tickets are taken newest first, as rustls does: an old ticket is the one to fall off the
//! front, and one past its lifetime is refused by rustls when taken (a full handshake follows).
//! A ticket holds its session secret and the ticket bytes (a few hundred bytes; the server's
//! chain is shared with the connection it came from).

use std::collections::VecDeque;
use std::sync::Mutex;

use rustls::client::Tls13ClientSessionValue;
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue};
use rustls::pki_types::ServerName;
use rustls::NamedGroup;

/// Tickets kept per server: more than the connections a proxy opens to one upstream at once.
pub const TICKETS_PER_SERVER: usize = 256;
/// Servers whose tickets are kept (the least recently given a ticket is forgotten first).
pub const SERVERS: usize = 32;

/// See the module doc.
pub struct TicketStore {
    rest: ClientSessionMemoryCache,
    /// Per server, oldest first; the server given a ticket most recently last.
    tls13: Mutex<Vec<(ServerName<'static>, VecDeque<Tls13ClientSessionValue>)>>,
}

impl TicketStore {
    pub fn new() -> TicketStore {
        TicketStore {
            // rustls sizes it in tickets, 8 per server: room for the same SERVERS.
            rest: ClientSessionMemoryCache::new(SERVERS * 8),
            tls13: Mutex::new(Vec::new()),
        }
    }
}

impl Default for TicketStore {
    fn default() -> Self {
        TicketStore::new()
    }
}

impl std::fmt::Debug for TicketStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketStore").finish_non_exhaustive()
    }
}

impl ClientSessionStore for TicketStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.rest.set_kx_hint(server_name, group)
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.rest.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.rest.set_tls12_session(server_name, value)
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.rest.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.rest.remove_tls12_session(server_name)
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        // A poisoned lock (a panic while holding it) only loses tickets: full handshakes follow.
        let Ok(mut servers) = self.tls13.lock() else {
            return;
        };
        // Taken out and put back last: the server given a ticket most recently is the last
        // one forgotten.
        let mut tickets = match servers.iter().position(|(name, _)| *name == server_name) {
            Some(at) => servers.remove(at).1,
            None => {
                if servers.len() >= SERVERS {
                    servers.remove(0);
                }
                VecDeque::new()
            }
        };
        if tickets.len() >= TICKETS_PER_SERVER {
            tickets.pop_front();
        }
        tickets.push_back(value);
        servers.push((server_name, tickets));
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        let mut servers = self.tls13.lock().ok()?;
        let (_, tickets) = servers.iter_mut().find(|(name, _)| name == server_name)?;
        tickets.pop_back()
    }
}
