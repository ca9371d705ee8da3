//! What the proxy shows about itself: the audit log ([`audit`], one JSON line per connection),
//! the Prometheus metrics and their HTTP endpoint ([`metrics`]) and the readiness conditions
//! behind `/readyz` ([`ready`]). Listeners and connections write here; nothing here reads back
//! from them, so the folder depends on no other part of the proxy but the shutdown signal.

pub mod audit;
pub mod metrics;
pub mod ready;
