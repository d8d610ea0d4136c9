//! The fleet policy and rules TOML an admin uploads (`deskpulse policy
//! set`, `rules set`): `policy::parse_policy` and `policy::parse_rules`.
#![no_main]

use deskpulse_collector::rules::policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = policy::parse_policy(text);
    let _ = policy::parse_rules(text);
});
