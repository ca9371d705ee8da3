//! What every connection of every listener kind goes through: [`accept`] (limits, drain),
//! [`refuse`] (reading the handshake, closing politely), [`backend`] (dialling), [`proxy_protocol`]
//! (the header to the backend), [`io`] and [`lifetime`] (the byte pump, idle and lifetime
//! limits), [`live`] (re-authorization of open connections on reload) and [`record`] (the
//! connection's one counter increment, log line and audit line).

pub mod accept;
pub mod backend;
pub mod io;
pub mod lifetime;
pub mod live;
pub mod proxy_protocol;
pub mod record;
pub mod refuse;
