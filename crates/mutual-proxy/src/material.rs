//! What a serve listener's handshakes use, replaced as a whole on reload: the TLS server
//! material and the policy, and the [`Mode`] they were built for.

use std::sync::Arc;

use mutual_policy::Policy;

use crate::authz::Mode;

/// The material a handshake uses; replaced as a whole on reload.
pub struct Material {
    pub server: mutual_tls::ServerMaterial,
    pub policy: Arc<Policy>,
    /// TCP mode authorizes connections inside the handshake; HTTP mode per request.
    pub mode: Mode,
}
