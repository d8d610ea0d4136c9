//! An SMBIOS table as firmware (or a tampered dump) gives it:
//! `smbios::parse`.
#![no_main]

use deskpulse_agent::collect::hardware::smbios;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = smbios::parse(data);
});
