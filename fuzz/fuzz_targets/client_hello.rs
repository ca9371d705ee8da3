//! The first bytes a listener reads come from anyone on the network: feed them to the same
//! ServerConfig `mutual serve` builds, and classify whatever error comes out.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;

fn config() -> Arc<rustls::ServerConfig> {
    static CFG: OnceLock<(mutual_test::TestPki, Arc<rustls::ServerConfig>)> = OnceLock::new();
    CFG.get_or_init(|| {
        let pki = mutual_test::TestPki::new("Fuzz");
        let leaf = pki.leaf(
            "server",
            mutual_test::LeafOpts::new("localhost").san("dns:localhost").server(),
        );
        let m = mutual_tls::build_server_config(&mutual_tls::ServerSettings {
            cert: leaf.cert.clone(),
            key: leaf.key.clone(),
            ca: pki.root.clone(),
            ..Default::default()
        })
        .expect("server config");
        (pki, m.config)
    })
    .1
    .clone()
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut conn) = rustls::ServerConnection::new(config()) else { return };
    let mut rd = data;
    while !rd.is_empty() {
        match conn.read_tls(&mut rd) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if let Err(e) = conn.process_new_packets() {
            let _ = mutual_tls::classify_rustls_error(&e);
            break;
        }
    }
});
