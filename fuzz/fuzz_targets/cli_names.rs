//! Names typed on the command line: `--san kind:value`, SPIFFE IDs, TTLs and serials. Each
//! parser must answer with a value or an error for any string.
#![no_main]
use std::str::FromStr;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = mutual_pki::San::from_str(s);
    let _ = mutual_policy::SpiffeId::parse(s);
    let _ = mutual_pki::parse_duration(s);
    let _ = mutual_pki::normalize_serial(s);
});
