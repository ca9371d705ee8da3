//! The listener kinds: [`serve`] terminates mutual TLS (TCP mode, or [`http`] mode per request),
//! [`connect`] originates it. Each owns its accept loop's `handle`; the steps of a connection
//! come from [`crate::conn`], [`crate::authz`] and [`crate::material`].

pub mod connect;
pub mod http;
pub mod serve;
