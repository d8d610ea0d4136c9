//! A Windows registry export (`.reg` text, UTF-16 or UTF-8) of Uninstall
//! keys, which any installer writes to: decoded, parsed and turned into
//! packages.
#![no_main]

use deskpulse_agent::collect::packages::windows;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = windows::decode(data);
    let keys = windows::parse_reg(&text);
    let _ = windows::uninstall_entries(&keys);
});
