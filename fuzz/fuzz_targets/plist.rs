//! Property lists the macOS collectors read: an app bundle's Info.plist
//! (any app a user drops in /Applications), an installer receipt, and
//! `ioreg`'s battery plist. The same bytes go to all three.
#![no_main]

use deskpulse_agent::collect::macos;
use deskpulse_agent::collect::packages::macos as packages;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = packages::app_bundle(data);
    let _ = packages::receipt(data);
    let _ = macos::batteries(data);
});
