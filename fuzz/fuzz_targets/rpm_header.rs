//! An rpm header blob as the rpmdb holds it (any local package, or a
//! corrupt database): `rpm::package`.
#![no_main]

use deskpulse_agent::collect::packages::rpm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rpm::package(data);
});
