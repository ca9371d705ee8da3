//! What a serve listener's handshakes use, replaced as a whole on reload: the TLS server
//! material and the policy, and the [`Mode`] they were built for (which also says where the
//! connection is authorized: inside the handshake, or per request).

use std::sync::Arc;

use mutual_policy::Policy;

/// The material a handshake uses; replaced as a whole on reload.
pub struct Material {
    pub server: mutual_tls::ServerMaterial,
    pub policy: Arc<Policy>,
    /// TCP mode authorizes connections inside the handshake; HTTP mode per request.
    pub mode: Mode,
}

/// How a serve listener treats a connection once the client is verified (`mode = "tcp" |
/// "http"`; the flag is `--http`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Copy bytes both ways (any protocol); authorized once per connection.
    #[default]
    Tcp,
    /// Terminate HTTP/1.1 and HTTP/2, authorize and forward each request.
    Http,
}
