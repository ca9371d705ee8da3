//! The online CA's request bodies (`/v1/sign`, `/v1/renew`, `/v1/revoke`) are JSON from anyone
//! who can reach the port: parsing them and the first fields a handler reads must not panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mutual_ca_server::api::parse_bodies_for_fuzzing(data);
});
